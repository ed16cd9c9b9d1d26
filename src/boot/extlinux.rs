//! EXTLINUX/SYSLINUX: a volume boot record at the start of the boot partition whose
//! hidden-sectors field (0x1c) must hold the partition's start LBA, reached from MBR code
//! that boots the active partition.

use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::disk::layout::{DiskLayout, TableInfo};

use super::Link;

pub const HIDDEN_SECTORS: usize = 0x1c;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extlinux {
    pub partition: u32,
    pub hidden_sectors: u32,
}

pub fn is_vbr(sector: &[u8]) -> bool {
    sector.len() >= 512
        && sector[..512]
            .windows(8)
            .any(|w| w == b"SYSLINUX" || w == b"EXTLINUX")
}

pub fn read(disk: &Disk, layout: &DiskLayout) -> Vec<Extlinux> {
    let ss = u64::from(disk.logical_sector_size);
    layout
        .partitions
        .iter()
        .filter_map(|p| {
            let vbr = disk.read_vec(p.offset, ss.min(p.size)).ok()?;
            is_vbr(&vbr).then(|| Extlinux {
                partition: p.number,
                hidden_sectors: u32::from_le_bytes(
                    vbr[HIDDEN_SECTORS..HIDDEN_SECTORS + 4]
                        .try_into()
                        .expect("4 bytes"),
                ),
            })
        })
        .collect()
}

pub fn check(disk: &Disk, layout: &DiskLayout, captured: &Extlinux) -> Vec<Link> {
    let ss = u64::from(disk.logical_sector_size);
    let name = format!("extlinux (partition {})", captured.partition);
    let Some(p) = layout
        .partitions
        .iter()
        .find(|p| p.number == captured.partition)
    else {
        return vec![Link::new(
            &name,
            false,
            "the partition is gone from the table",
        )];
    };
    let lba0 = disk.read_vec(0, ss).unwrap_or_default();
    let code = lba0.len() >= 440 && lba0[..440].iter().any(|&b| b != 0);
    let mut links = vec![Link::new(
        &format!("{name}: MBR code"),
        code,
        if code {
            "LBA 0 holds boot code"
        } else {
            "LBA 0 holds no boot code"
        },
    )];
    if matches!(layout.table, TableInfo::Mbr { .. }) {
        let active = p.attributes & 0x80 != 0;
        links.push(Link::new(
            &format!("{name}: active flag"),
            active,
            if active {
                "the partition is marked active"
            } else {
                "the partition is not marked active"
            },
        ));
    }
    let vbr = disk.read_vec(p.offset, ss.min(p.size)).unwrap_or_default();
    if !is_vbr(&vbr) {
        links.push(Link::new(
            &format!("{name}: volume boot record"),
            false,
            "no EXTLINUX boot record at the partition start",
        ));
        return links;
    }
    let hidden = u64::from(u32::from_le_bytes(
        vbr[HIDDEN_SECTORS..HIDDEN_SECTORS + 4]
            .try_into()
            .expect("4 bytes"),
    ));
    let want = p.offset / ss;
    links.push(Link::new(
        &format!("{name}: hidden sectors"),
        hidden == want,
        &if hidden == want {
            format!("volume boot record says the partition starts at LBA {hidden}, as it does")
        } else {
            format!("volume boot record says LBA {hidden}, the partition starts at LBA {want}")
        },
    ));
    links
}
