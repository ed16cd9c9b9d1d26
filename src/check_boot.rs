//! `restore check-boot`: the boot chain of a disk, offline, per firmware path. Without a
//! store it checks what the disk itself shows; with a snapshot it also compares every boot
//! byte the snapshot holds (boot regions, the BIOS boot partition, the ESP's files), so boot
//! bytes that differ from the snapshot are broken links even when no loader is recognised.

use anyhow::{Context, Result};

use crate::boot::{self, ChainReport, Firmware, Link, Reference};
use crate::disk::Disk;
use crate::manifest::DiskRecord;
use crate::store::Store;

/// Checks `disk` against snapshot disk `d` (when given, with the store it lives in).
pub fn check(
    disk: &Disk,
    snapshot: Option<(&Store, &DiskRecord)>,
    only: Option<Firmware>,
) -> Result<ChainReport> {
    let reference = match snapshot {
        Some((store, d)) => reference(store, d, disk)?,
        None => Reference::default(),
    };
    Ok(boot::check_disk(disk, &reference, only))
}

/// What the snapshot says about the disk's boot bytes, compared with what is on it now.
fn reference<'a>(store: &Store, d: &'a DiskRecord, disk: &Disk) -> Result<Reference<'a>> {
    let mut compared = Vec::new();
    let mut bios = d.partitions.iter().any(|p| p.info.role == "bios-boot");
    for r in &d.boot_regions {
        let index = store
            .get_index(&r.index, r.length)
            .with_context(|| format!("boot region {} of snapshot disk {}", r.name, d.name))?;
        if r.name == "boot-code" && index.chunks.iter().any(|c| !c.is_zero_marker()) {
            bios = true;
        }
        let name = format!("boot region {}", r.name);
        if r.offset.saturating_add(r.length) > disk.size {
            compared.push((
                Firmware::Bios,
                Link::new(&name, false, "lies beyond the end of this disk"),
            ));
            continue;
        }
        let differ = crate::plan::read::differing_chunks(disk, r.offset, &index)?;
        compared.push((
            Firmware::Bios,
            compared_link(&name, &differ, index.chunks.len()),
        ));
    }
    for p in d.partitions.iter().filter(|p| p.info.role == "bios-boot") {
        let name = format!("bios-boot partition {}", p.info.number);
        if p.info.end() > disk.size {
            compared.push((
                Firmware::Bios,
                Link::new(&name, false, "lies beyond the end of this disk"),
            ));
            continue;
        }
        let index = store
            .get_index(&p.index, p.info.size)
            .with_context(|| format!("{} of snapshot disk {}", p.info.title(), d.name))?;
        let differ = crate::plan::read::differing_chunks(disk, p.info.offset, &index)?;
        compared.push((
            Firmware::Bios,
            compared_link(&name, &differ, index.chunks.len()),
        ));
    }
    if let Some(u) = boot::uefi_of(&d.boot_loaders)
        && let Some(p) = d
            .partitions
            .iter()
            .find(|p| p.info.number == u.esp_partition)
    {
        let now = if p.info.end() <= disk.size {
            boot::esp::list_files(disk, p.info.offset, p.info.size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let bad: Vec<&str> = u
            .files
            .iter()
            .filter(|f| boot::esp::find(&now, &f.path).is_none_or(|n| n.hash != f.hash))
            .map(|f| f.path.as_str())
            .collect();
        let name = format!("uefi (ESP partition {}): files", u.esp_partition);
        compared.push((
            Firmware::Uefi,
            if bad.is_empty() {
                Link::new(
                    &name,
                    true,
                    &format!("all {} files of the snapshot, as captured", u.files.len()),
                )
            } else {
                let shown: Vec<&str> = bad.iter().take(5).copied().collect();
                Link::new(
                    &name,
                    false,
                    &format!(
                        "{} of {} files missing or different from the snapshot: {}{}",
                        bad.len(),
                        u.files.len(),
                        shown.join(", "),
                        if bad.len() > shown.len() { ", ..." } else { "" }
                    ),
                )
            },
        ));
    }
    Ok(Reference {
        loaders: Some(&d.boot_loaders),
        bios,
        compared,
    })
}

fn compared_link(name: &str, differ: &[u64], total: usize) -> Link {
    if differ.is_empty() {
        Link::new(name, true, "equal to the snapshot")
    } else {
        Link::new(
            name,
            false,
            &format!(
                "differs from the snapshot ({} of {total} chunks)",
                differ.len()
            ),
        )
    }
}
