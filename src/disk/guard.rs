//! The checks that keep apply from overwriting the wrong disk: a target that is mounted (itself
//! or any partition, also through another loop device over the same image), used as swap, held
//! by device-mapper/MD/LVM, holding the running system or the store, or read-only is refused
//! before a single byte is written.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};

use super::Disk;
use super::blockdev::{self, DeviceInfo};

/// Everything that writing to `disk` would write through: the device, its partitions, and
/// every loop device (and its partitions) over the same image file.
fn family(disk: &Disk) -> Vec<(DeviceInfo, String)> {
    let mut out: Vec<(DeviceInfo, String)> = Vec::new();
    let backing = if disk.is_block_device {
        for d in blockdev::with_partitions(&disk.sysfs().unwrap_or_default()) {
            let why = if d.sysfs
                == std::fs::canonicalize(disk.sysfs().unwrap_or_default()).unwrap_or_default()
            {
                "the target".to_string()
            } else {
                format!("its partition {}", d.name)
            };
            out.push((d, why));
        }
        disk.sysfs()
            .and_then(|s| std::fs::read_to_string(s.join("loop/backing_file")).ok())
            .map(|b| std::path::PathBuf::from(b.trim()))
    } else {
        std::fs::canonicalize(&disk.path).ok()
    };
    if let Some(backing) = backing {
        for (d, file) in blockdev::loop_devices() {
            if file == backing && !out.iter().any(|(o, _)| o.dev == d.dev) {
                let why = format!(
                    "{} (a loop device over the same image {})",
                    d.name,
                    file.display()
                );
                out.push((d, why));
            }
        }
    }
    out
}

fn mounts() -> BTreeMap<(u32, u32), String> {
    let mut out = BTreeMap::new();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return out;
    };
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 4
            && let Some(dev) = blockdev::parse_dev(f[2])
        {
            out.entry(dev).or_insert_with(|| f[4].to_string());
        }
    }
    out
}

/// Refuses (with the reason and what to do) when writing to `disk` could hurt something live.
/// `store` is the local store directory, when the store is local.
pub fn check_writable(disk: &Disk, store: Option<&Path>) -> Result<()> {
    let target = disk.path.display();
    if disk.is_block_device && blockdev::is_read_only(disk.file()) {
        bail!("refusing to write to {target}: the device is read-only; nothing was written");
    }
    let mounted = mounts();
    let swap = blockdev::active_swaps();
    let root = blockdev::filesystem_device(Path::new("/"));
    let store_dev = store.and_then(blockdev::filesystem_device);
    for (d, why) in family(disk) {
        if let Some(at) = mounted.get(&d.dev) {
            bail!(
                "refusing to write to {target}: {why} is mounted at {at}; unmount it first; nothing was written"
            );
        }
        if swap.contains(&d.dev) {
            bail!(
                "refusing to write to {target}: {why} is in use as swap; run swapoff first; nothing was written"
            );
        }
        let holders = blockdev::holders(&d.sysfs);
        if !holders.is_empty() {
            bail!(
                "refusing to write to {target}: {why} is held by {} (device-mapper, MD or LVM); stop those first; nothing was written",
                holders.join(", ")
            );
        }
        if root == Some(d.dev) {
            bail!(
                "refusing to write to {target}: {why} holds the running system's root filesystem; nothing was written"
            );
        }
        if store_dev == Some(d.dev) {
            bail!(
                "refusing to write to {target}: {why} holds the store being restored from; nothing was written"
            );
        }
    }
    Ok(())
}
