//! `restore probe`: what is on a disk now, for the operator who wants to look before
//! planning. Read-only, and it never fails on a damaged disk: damage is what it reports.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::boot::{self, BootLoader};
use crate::disk::layout::{self, PartitionInfo, TableInfo};
use crate::disk::{Disk, Identity, guard};
use crate::units;

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub path: String,
    pub kind: &'static str,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub identity: Identity,
    pub table: TableInfo,
    /// What is wrong with the table, if anything ("GPT backup: header CRC mismatch").
    pub table_problems: Vec<String>,
    pub partitions: Vec<ProbedPartition>,
    pub boot_code: String,
    /// Boot loaders recognised, and problems met while reading them.
    pub boot_loaders: Vec<BootLoader>,
    pub boot_warnings: Vec<String>,
    /// Why apply would refuse this disk right now, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProbedPartition {
    #[serde(flatten)]
    pub info: PartitionInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_loader: Option<String>,
}

pub fn probe(path: &Path) -> Result<ProbeReport> {
    let disk = Disk::open_read(path)?;
    let ss = u64::from(disk.logical_sector_size);
    let lba0 = if disk.size >= ss {
        disk.read_vec(0, ss)?
    } else {
        Vec::new()
    };
    let mut problems = Vec::new();
    let (table, partitions, (boot_loaders, boot_warnings)) = match layout::read_layout(&disk) {
        Ok(l) => {
            let boot = boot::detect(&disk, &l);
            (l.table, l.partitions, boot)
        }
        Err(e) => {
            problems.push(format!("{e:#}"));
            (TableInfo::None, Vec::new(), (Vec::new(), Vec::new()))
        }
    };
    if matches!(table, TableInfo::Gpt { .. }) {
        let (p, b) = layout::read_gpt_copies(&disk);
        for (name, copy) in [("GPT primary", p), ("GPT backup", b)] {
            if let Some(problem) = copy.problem() {
                problems.push(format!("{name}: {problem}"));
            }
        }
    }
    let partitions = partitions
        .into_iter()
        .map(|info| {
            let vbr = disk
                .read_vec(info.offset, ss.min(info.size))
                .unwrap_or_default();
            let boot_loader = match info.role.as_str() {
                "esp" => Some("UEFI system partition".to_string()),
                "bios-boot" if vbr.iter().any(|&b| b != 0) => {
                    Some("BIOS boot partition (holds a core image)".to_string())
                }
                "bios-boot" => Some("BIOS boot partition (empty)".to_string()),
                _ => boot::extlinux::is_vbr(&vbr)
                    .then(|| "EXTLINUX/SYSLINUX volume boot record".to_string()),
            };
            ProbedPartition { info, boot_loader }
        })
        .collect();
    Ok(ProbeReport {
        path: path.display().to_string(),
        kind: if disk.is_block_device {
            "block device"
        } else {
            "image file"
        },
        size: disk.size,
        logical_sector_size: disk.logical_sector_size,
        physical_sector_size: disk.physical_sector_size,
        identity: disk.identity.clone(),
        table,
        table_problems: problems,
        partitions,
        boot_code: if lba0.len() >= 440 {
            boot::recognise_boot_code(&lba0)
        } else {
            "none".into()
        },
        boot_loaders,
        boot_warnings,
        in_use: guard::check_writable(&disk, None)
            .err()
            .map(|e| format!("{e:#}")),
    })
}

pub fn human(r: &ProbeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}): {} ({} bytes), {}-byte logical / {}-byte physical sectors",
        r.path,
        r.kind,
        units::bytes(r.size),
        r.size,
        r.logical_sector_size,
        r.physical_sector_size
    );
    let id = &r.identity;
    if id.model.is_some() || id.serial.is_some() || id.wwn.is_some() {
        let _ = writeln!(
            out,
            "  model {}, serial {}, WWN {}",
            id.model.as_deref().unwrap_or("-"),
            id.serial.as_deref().unwrap_or("-"),
            id.wwn.as_deref().unwrap_or("-")
        );
    }
    let table = match &r.table {
        TableInfo::None if r.partitions.iter().all(|p| p.info.filesystem.is_none()) => {
            "none (blank, or nothing recognised)".to_string()
        }
        TableInfo::None => "none (the whole disk is one filesystem)".to_string(),
        TableInfo::Gpt { disk_guid, .. } => format!("GPT, disk GUID {disk_guid}"),
        TableInfo::Mbr { disk_signature } => format!("MBR, disk signature {disk_signature}"),
    };
    let _ = writeln!(out, "  partition table: {table}");
    for p in &r.table_problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    let _ = writeln!(out, "  boot code: {}", r.boot_code);
    for b in &r.boot_loaders {
        let _ = writeln!(out, "  boot loader: {}", b.describe());
    }
    for w in &r.boot_warnings {
        let _ = writeln!(out, "  boot problem: {w}");
    }
    for p in &r.partitions {
        let i = &p.info;
        let _ = writeln!(
            out,
            "  {:<4} {:>12} {:>10}  {:<10} {:<6} {}{}",
            if i.number == 0 {
                "disk".to_string()
            } else {
                i.number.to_string()
            },
            i.offset,
            units::bytes(i.size),
            i.role,
            i.filesystem.as_deref().unwrap_or("-"),
            i.label
                .as_deref()
                .map(|l| format!("\"{l}\" "))
                .unwrap_or_default(),
            p.boot_loader.as_deref().unwrap_or("")
        );
    }
    if let Some(u) = &r.in_use {
        let _ = writeln!(out, "  in use: {u}");
    }
    out
}
