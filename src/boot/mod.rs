//! Boot loaders: recognising them at capture and in `probe`, recording what each needs in the
//! manifest, and checking offline that a disk's boot chain is whole (`check-boot`, and after
//! every apply). GRUB on BIOS, UEFI loaders on the ESP (GRUB, shim, systemd-boot, the
//! removable fallback path) and EXTLINUX.

pub mod efivars;
pub mod esp;
pub mod extlinux;
pub mod grub_bios;
pub mod relocate;

use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::disk::layout::DiskLayout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootLoader {
    GrubBios(grub_bios::GrubBios),
    Uefi(esp::Uefi),
    Extlinux(extlinux::Extlinux),
}

impl BootLoader {
    pub fn describe(&self) -> String {
        match self {
            BootLoader::GrubBios(g) => format!(
                "GRUB for BIOS: core image at LBA {} in the {} ({} sector-list entries)",
                g.core_lba,
                g.core_location,
                g.sector_list.len()
            ),
            BootLoader::Uefi(u) => format!(
                "UEFI on ESP partition {}: {} ({} files)",
                u.esp_partition,
                if u.loaders.is_empty() {
                    "no known loader".to_string()
                } else {
                    u.loaders.join(", ")
                },
                u.files.len()
            ),
            BootLoader::Extlinux(e) => format!(
                "EXTLINUX in partition {} (hidden sectors {})",
                e.partition, e.hidden_sectors
            ),
        }
    }
}

/// One link of a boot chain and whether it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub link: String,
    pub ok: bool,
    pub detail: String,
}

impl Link {
    pub fn new(link: &str, ok: bool, detail: &str) -> Link {
        Link {
            link: link.to_string(),
            ok,
            detail: detail.to_string(),
        }
    }
}

/// Every boot loader found on `disk`; problems reading one are reported as warnings.
pub fn detect(disk: &Disk, layout: &DiskLayout) -> (Vec<BootLoader>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    match grub_bios::read(disk, layout) {
        Some(Ok(g)) => found.push(BootLoader::GrubBios(g)),
        Some(Err(why)) => warnings.push(format!(
            "GRUB boot code found but its chain is broken: {why}"
        )),
        None => {}
    }
    for p in layout.partitions.iter().filter(|p| p.role == "esp") {
        match esp::list_files(disk, p.offset, p.size) {
            Ok(files) => found.push(BootLoader::Uefi(esp::Uefi {
                esp_partition: p.number,
                loaders: esp::loaders(&files),
                files,
            })),
            Err(e) => warnings.push(format!("ESP partition {}: {e:#}", p.number)),
        }
    }
    found.extend(
        extlinux::read(disk, layout)
            .into_iter()
            .map(BootLoader::Extlinux),
    );
    (found, warnings)
}

/// Checks the boot chain of `disk` offline. With the loaders recorded in a snapshot, each is
/// checked against what was captured; without, whatever is found on the disk is checked.
pub fn check(disk: &Disk, layout: &DiskLayout, captured: Option<&[BootLoader]>) -> Vec<Link> {
    let boot_sig = disk
        .read_vec(0, 512)
        .map(|s| s[510] == 0x55 && s[511] == 0xAA)
        .unwrap_or(false);
    let mut links = vec![Link::new(
        "boot signature",
        boot_sig,
        if boot_sig {
            "LBA 0 ends in 0x55AA"
        } else {
            "LBA 0 lacks the 0x55AA boot signature"
        },
    )];
    let detected;
    let loaders = match captured {
        Some(c) => c,
        None => {
            detected = detect(disk, layout).0;
            &detected[..]
        }
    };
    if loaders.is_empty() && captured.is_none() {
        match grub_bios::read(disk, layout) {
            Some(Err(why)) => links.push(Link::new("grub-bios: core image", false, &why)),
            _ => links.push(Link::new(
                "boot loader",
                false,
                "no boot loader recognised on this disk",
            )),
        }
    }
    for l in loaders {
        match l {
            BootLoader::GrubBios(g) => {
                links.extend(grub_bios::check(disk, layout, captured.map(|_| g)))
            }
            BootLoader::Extlinux(e) => links.extend(extlinux::check(disk, layout, e)),
            BootLoader::Uefi(u) => links.extend(check_uefi(disk, layout, u, captured.is_some())),
        }
    }
    links
}

fn check_uefi(disk: &Disk, layout: &DiskLayout, want: &esp::Uefi, compare: bool) -> Vec<Link> {
    let name = format!("uefi (ESP partition {})", want.esp_partition);
    let Some(p) = layout
        .partitions
        .iter()
        .find(|p| p.number == want.esp_partition && p.role == "esp")
    else {
        return vec![Link::new(
            &name,
            false,
            "the ESP is gone from the partition table",
        )];
    };
    let files = match esp::list_files(disk, p.offset, p.size) {
        Ok(f) => f,
        Err(e) => {
            return vec![Link::new(
                &format!("{name}: FAT filesystem"),
                false,
                &format!("{e:#}"),
            )];
        }
    };
    let mut links = vec![Link::new(
        &format!("{name}: FAT filesystem"),
        true,
        &format!("{} files", files.len()),
    )];
    links.extend(check_nvram_entries(
        layout,
        &files,
        u64::from(disk.logical_sector_size),
    ));
    let fallback = esp::find(&files, esp::FALLBACK).is_some();
    links.push(Link::new(
        &format!("{name}: fallback loader"),
        fallback,
        if fallback {
            "\\EFI\\BOOT\\BOOTX64.EFI exists"
        } else {
            "\\EFI\\BOOT\\BOOTX64.EFI is missing"
        },
    ));
    if compare {
        for f in want
            .files
            .iter()
            .filter(|f| f.path.to_ascii_lowercase().ends_with(".efi"))
        {
            let ok = esp::find(&files, &f.path).is_some_and(|now| now.hash == f.hash);
            links.push(Link::new(
                &format!("{name}: {}", f.path),
                ok,
                if ok {
                    "hashes as captured"
                } else {
                    "missing or different from the snapshot"
                },
            ));
        }
    }
    links
}

/// Names the boot code in the first 440 bytes of LBA 0.
pub fn recognise_boot_code(lba0: &[u8]) -> String {
    let code = &lba0[..lba0.len().min(440)];
    let contains = |needle: &[u8]| code.windows(needle.len()).any(|w| w == needle);
    if code.iter().all(|&b| b == 0) {
        "none (boot code is zero)".into()
    } else if grub_bios::is_grub_boot_code(lba0) {
        "GRUB (i386-pc boot.img)".into()
    } else if contains(b"Multiple active partitions") {
        "SYSLINUX MBR (boots the active partition)".into()
    } else {
        format!(
            "unrecognised boot code ({} non-zero bytes)",
            code.iter().filter(|&&b| b != 0).count()
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    pub disk: String,
    pub whole: bool,
    pub links: Vec<Link>,
}

/// Reads the disk's current layout and checks its chain; a table that cannot be read is a
/// broken link, not an error.
pub fn check_disk(disk: &Disk, captured: Option<&[BootLoader]>) -> ChainReport {
    let links = match crate::disk::layout::read_layout(disk) {
        Ok(layout) => check(disk, &layout, captured),
        Err(e) => vec![Link::new("partition table", false, &format!("{e:#}"))],
    };
    ChainReport {
        disk: disk.path.display().to_string(),
        whole: links.iter().all(|l| l.ok),
        links,
    }
}

/// What a restore should do about the UEFI boot entry of a disk's ESP.
pub enum EntryDecision {
    /// No UEFI loader on this disk.
    NotUefi,
    /// Nothing written to NVRAM, and why.
    Skip { reason: String },
    /// NVRAM already has a matching entry.
    Present { number: u16, file: String },
    /// Create this entry and put it first in BootOrder.
    Create {
        option: efivars::LoadOption,
        dir: std::path::PathBuf,
    },
}

/// The loader a boot entry should start: the captured NVRAM entry's file for this ESP when
/// known, else shim, else GRUB, else systemd-boot, in a vendor directory, else the fallback.
fn entry_file(uefi: &esp::Uefi, guid: &[u8; 16], nvram: Option<&efivars::Nvram>) -> String {
    if let Some(nv) = nvram {
        for (name, data) in &nv.variables {
            if !name.starts_with("Boot") || name == "BootOrder" {
                continue;
            }
            let bytes: Vec<u8> = (0..data.len() / 2)
                .filter_map(|i| u8::from_str_radix(&data[2 * i..2 * i + 2], 16).ok())
                .collect();
            if let Some(opt) = bytes
                .get(4..)
                .and_then(|d| efivars::LoadOption::parse(d).ok())
                && opt.hard_drive.as_ref().is_some_and(|h| &h.guid == guid)
                && let Some(f) = opt.file
            {
                return f;
            }
        }
    }
    let vendor = |name: &str| esp::vendor_file(&uefi.files, name);
    let pick = vendor("shimx64.efi")
        .or_else(|| vendor("grubx64.efi"))
        .or_else(|| vendor("systemd-bootx64.efi"));
    pick.map(|f| f.path.clone())
        .unwrap_or_else(|| esp::FALLBACK.to_string())
        .replace('/', "\\")
}

/// Decides about the NVRAM entry for a restored disk. `is_device`: only a real disk of this
/// machine gets an entry in this machine's NVRAM, never an image file.
pub fn entry_decision(
    loaders: &[BootLoader],
    partitions: &[crate::disk::layout::PartitionInfo],
    sector_size: u64,
    nvram: Option<&efivars::Nvram>,
    is_device: bool,
    allowed: bool,
) -> EntryDecision {
    let Some(uefi) = loaders.iter().find_map(|l| {
        if let BootLoader::Uefi(u) = l {
            Some(u)
        } else {
            None
        }
    }) else {
        return EntryDecision::NotUefi;
    };
    let fallback = esp::find(&uefi.files, esp::FALLBACK).is_some();
    let carry = if fallback {
        "the removable fallback path \\EFI\\BOOT\\BOOTX64.EFI on the ESP carries the boot"
    } else {
        "the ESP has no \\EFI\\BOOT\\BOOTX64.EFI either: firmware whose NVRAM does not know this disk will not boot it"
    };
    let skip = |why: &str| EntryDecision::Skip {
        reason: format!("no NVRAM entry written: {why}; {carry}"),
    };
    if !allowed {
        return skip("--no-nvram");
    }
    if !is_device {
        return skip("the target is an image file, not a disk of this machine");
    }
    let Some(dir) = efivars::efivars_dir() else {
        return skip("not running on UEFI (no efivarfs)");
    };
    let Some(p) = partitions.iter().find(|p| p.number == uefi.esp_partition) else {
        return skip("the ESP is not in the snapshot's table");
    };
    let Some(guid) = p
        .guid
        .as_deref()
        .and_then(crate::disk::gpt::guid_from_string)
    else {
        return skip("the ESP is not on a GPT disk");
    };
    let file = entry_file(uefi, &guid, nvram);
    let option = efivars::option_for(
        "restored",
        p.number,
        p.offset / sector_size,
        p.size / sector_size,
        guid,
        &file,
    );
    for (n, o) in efivars::boot_entries(&dir) {
        if o.hard_drive == option.hard_drive
            && o.file
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&file))
        {
            return EntryDecision::Present { number: n, file };
        }
    }
    EntryDecision::Create { option, dir }
}

/// On a UEFI system: every Boot#### entry that names a partition of this disk (by its GUID)
/// must point at that partition's number and start, and at a file that exists on the ESP.
fn check_nvram_entries(layout: &DiskLayout, files: &[esp::EspFile], sector_size: u64) -> Vec<Link> {
    let Some(dir) = efivars::efivars_dir() else {
        return Vec::new();
    };
    let mut links = Vec::new();
    for (n, opt) in efivars::boot_entries(&dir) {
        let Some(hd) = &opt.hard_drive else { continue };
        let Some(p) = layout.partitions.iter().find(|p| {
            p.guid
                .as_deref()
                .and_then(crate::disk::gpt::guid_from_string)
                == Some(hd.guid)
        }) else {
            continue;
        };
        let name = format!("nvram: Boot{n:04X} ({})", opt.description);
        let file = opt.file.clone().unwrap_or_default();
        let problem =
            if p.number != hd.partition || hd.start_lba.saturating_mul(sector_size) != p.offset {
                Some(format!(
                    "points at partition {} at LBA {}, but that partition is number {} at byte {}",
                    hd.partition, hd.start_lba, p.number, p.offset
                ))
            } else if esp::find(files, &file.replace('\\', "/")).is_none() {
                Some(format!("points at {file}, which does not exist on the ESP"))
            } else {
                None
            };
        links.push(match problem {
            Some(why) => Link::new(&name, false, &why),
            None => Link::new(
                &name,
                true,
                &format!("points at {file} on partition {}", p.number),
            ),
        });
    }
    links
}
