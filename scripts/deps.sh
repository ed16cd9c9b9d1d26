#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, when a command is missing.
# Sourced by scripts/test.sh and scripts/demo.sh; usage: ensure_commands cmd:package ...
# (NO_RECOMMENDS=1 ensure_commands ... installs without the packages' recommends).
ensure_commands() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        case $cmd in
            /*) [ -e "$cmd" ] || missing+=("$pkg") ;;  # a file the package ships
            *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
        esac
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or install them with apt-get)" >&2
        return 1
    fi
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    local opts=()
    [ "${NO_RECOMMENDS:-0}" = 1 ] && opts=(--no-install-recommends)
    apt-get install -y -qq "${opts[@]}" -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    return 1
}

# rustfmt and clippy, which scripts/test.sh runs first.
ensure_rust_tools() {
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 && return 0
    command -v rustup >/dev/null 2>&1 || {
        echo "cargo fmt / cargo clippy are missing and rustup is not there to add them" >&2
        return 1
    }
    rustup component add rustfmt clippy
}

# The remote-store tests need python3 (http.server, tests/fault_proxy.py, tests/https_server.py)
# and moto_server, an S3-compatible server from PyPI (it brings `cryptography`, which
# tests/https_server.py uses to make a private CA).
ensure_python_servers() {
    ensure_commands python3:python3
    command -v moto_server >/dev/null 2>&1 && return 0
    if ! python3 -m pip --version >/dev/null 2>&1; then
        ensure_commands pip3:python3-pip
    fi
    echo "installing: moto[server] (PyPI)" >&2
    # Debian's python refuses pip installs outside a venv (PEP 668) unless told otherwise.
    python3 -m pip install -q 'moto[server]' 2>/dev/null ||
        python3 -m pip install -q --break-system-packages 'moto[server]'
    hash -r
    command -v moto_server >/dev/null 2>&1 || {
        echo "moto_server is not on PATH after pip install 'moto[server]'" >&2
        return 1
    }
}

# Commands the tests use, and the Debian package of each.
TEST_COMMANDS=(sgdisk:gdisk sfdisk:fdisk mkfs.ext4:e2fsprogs losetup:mount swapon:mount mkswap:util-linux
    cmp:diffutils python3:python3 minisign:minisign
    # Live capture: XFS beside ext4, fsfreeze to thaw what a failed test left frozen.
    mkfs.xfs:xfsprogs xfs_repair:xfsprogs fsfreeze:util-linux flock:util-linux ionice:util-linux systemd-analyze:systemd
    # Boot-loader tests: real loaders installed on test disks, booted under qemu.
    qemu-system-x86_64:qemu-system-x86 /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf
    grub-mkimage:grub-common /usr/lib/grub/i386-pc/boot.img:grub-pc-bin
    /usr/lib/grub/x86_64-efi/normal.mod:grub-efi-amd64-bin extlinux:extlinux
    /usr/lib/syslinux/mbr/mbr.bin:syslinux-common mcopy:mtools mkfs.vfat:dosfstools
    busybox:busybox-static cpio:cpio /usr/lib/shim/shimx64.efi:shim-signed timeout:coreutils
    # The rescue image: static build, ISO, PXE, modules; qemu's iPXE ROM for the PXE test.
    musl-gcc:musl-tools xorriso:xorriso depmod:kmod /usr/lib/PXELINUX/pxelinux.0:pxelinux
    /usr/lib/ipxe/qemu/pxe-e1000.rom:ipxe-qemu)

# A single-node Ceph cluster with a RADOS Gateway, for scripts/rgw.sh (the RGW tests and
# scripts/bench-remote.sh). Without recommends: the monitor, OSD and gateway need nothing more,
# and recommends would bring ceph-mgr, ceph-mds and their python stacks. curl signs the
# gateway's readiness check (SigV4).
ensure_ceph() {
    NO_RECOMMENDS=1 ensure_commands ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw \
        radosgw-admin:radosgw ceph:ceph-common monmaptool:ceph-base curl:curl python3:python3
}
