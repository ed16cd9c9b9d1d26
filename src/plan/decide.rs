//! The deciding half of the planner: every verdict, in one place. From the findings of one
//! target (`read`) and the snapshot disk, it says per component keep / write / patch / full /
//! skip and why, builds each action's payload (chunk runs and patches, table sectors, ESP
//! files, the NVRAM load option), and tells a damaged copy of the snapshot's disk from another
//! system's disk. Pure: it reads nothing and writes nothing, so it is tested on plain values.

use std::collections::BTreeSet;

use super::read::{Comparison, Findings, RegionCheck, TableFinding};
use super::{
    Action, BootEntryWrite, ComponentId, DiskPlan, FileCopy, Foreign, ForeignPart, Settings,
    TableWrite, Totals, Verb,
};
use crate::boot::efivars::{self, LoadOption};
use crate::boot::esp::{self, EspFile};
use crate::disk::layout::{DiskLayout, TableInfo};
use crate::hex::Hex;
use crate::manifest::{DiskRecord, Manifest};
use crate::units;

pub fn decide(m: &Manifest, d: &DiskRecord, f: &Findings, s: &Settings) -> DiskPlan {
    let mut actions = Vec::new();
    let mut notes: Vec<String> = f.grown.iter().cloned().collect();
    if let Some(why) = &f.in_use {
        notes.push(format!("apply will refuse this target now: {why}"));
    }
    notes.extend(f.sampled.iter().cloned());
    if let Some(a) = table_action(d, &f.table) {
        actions.push(a);
    }
    // How the snapshot's partitions were read on the running server.
    for p in &d.partitions {
        use crate::manifest::Consistency as C;
        let what = match p.consistency {
            None | Some(C::Offline | C::ReadOnly) => continue,
            Some(C::Frozen | C::Snapshot | C::DoubleRead) => "consistent",
            Some(C::Swap) => "its contents were not stored; it comes back as empty swap",
            Some(C::Inconsistent) => {
                "read while it could change: its filesystem may need a check after the restore"
            }
        };
        notes.push(format!(
            "{} was captured {}{}: {what}",
            p.info.title(),
            p.consistency.map(|c| c.to_string()).unwrap_or_default(),
            p.freeze_seconds
                .map(|s| format!(" (frozen for {s:.2} s)"))
                .unwrap_or_default()
        ));
    }
    if f.target_size != d.size {
        notes.push(format!(
            "target is {} ({} bytes), the snapshot disk was {} ({} bytes){}",
            units::bytes(f.target_size),
            f.target_size,
            units::bytes(d.size),
            d.size,
            if matches!(d.table, TableInfo::Gpt { .. }) && !s.keep_table {
                "; the GPT backup goes to the end of the target"
            } else {
                ""
            }
        ));
    }
    for r in &f.regions {
        let mut a = Action::new(
            ComponentId::Region(r.name.clone()),
            &r.name,
            r.offset,
            r.length,
        );
        a.index = Some(r.index);
        match &r.check {
            RegionCheck::BeyondEnd | RegionCheck::OverlapsTable => {
                a.found = "not compared".into();
                a.action = Verb::Skip;
                a.reason = if matches!(r.check, RegionCheck::BeyondEnd) {
                    "lies beyond the end of the target".into()
                } else {
                    "overlaps where the GPT backup goes on this target".into()
                };
                notes.push(format!(
                    "boot region {} ({}) is not restored: {}",
                    r.name,
                    units::bytes(r.length),
                    a.reason
                ));
            }
            RegionCheck::Compared(c) => {
                fill_chunk_action(&mut a, c);
                if a.action == Verb::Full {
                    a.action = Verb::Write;
                }
                a.found = describe_differences(c);
                a.reason = match a.action {
                    Verb::Keep => "equal to the snapshot".into(),
                    _ => format!(
                        "{} of {} chunks differ from the snapshot",
                        c.differ.len(),
                        c.effective().chunks.len()
                    ),
                };
            }
        }
        actions.push(a);
    }
    for p in &f.partitions {
        let name = if p.number == 0 {
            "whole disk".to_string()
        } else {
            format!("partition {}", p.number)
        };
        let mut a = Action::new(ComponentId::Partition(p.number), &name, p.offset, p.size);
        a.index = Some(p.index);
        a.holds = Some(p.holds.clone());
        let c = &p.comparison;
        fill_chunk_action(&mut a, c);
        a.found = match &p.moved {
            Some(m) => format!("moved: {m}"),
            None => describe_differences(c),
        };
        a.reason = match (a.action, &p.moved) {
            (Verb::Keep, _) => "equal to the snapshot".into(),
            (_, Some(_)) => format!(
                "restored in full at the snapshot's offset {}",
                p.snapshot_offset
            ),
            (Verb::Full, None) => "no chunk matches the snapshot".into(),
            _ if !a.patches.is_empty() && p.offset != p.snapshot_offset => format!(
                "moved from byte {} to the target's partition at byte {}; boot-loader pointers patched",
                p.snapshot_offset, p.offset
            ),
            _ if c.differ.len() == 1 => "only the one chunk that differs is written".into(),
            _ => format!("only the {} chunks that differ are written", c.differ.len()),
        };
        actions.push(a);
    }
    if let Some(a) = boot_entry_action(m, d, f, s) {
        let no_entry = a.action == Verb::Skip;
        actions.push(a);
        if no_entry && let Some(fb) = fallback_action(d, f, &mut actions) {
            actions.push(fb);
        }
    }
    let foreign = foreign(d, f.current.as_ref(), s.keep_table);
    DiskPlan {
        source: d.name.clone(),
        target: std::path::PathBuf::new(),
        mapping: String::new(),
        target_size: f.target_size,
        target_sector_size: f.sector_size,
        snapshot_size: d.size,
        foreign,
        totals: Totals::of(&actions),
        actions,
        not_checked: f.not_checked.clone(),
        notes,
        fingerprint: f.fingerprint.clone(),
    }
}

fn table_action(d: &DiskRecord, t: &TableFinding) -> Option<Action> {
    let kind = d.table.kind();
    match t {
        TableFinding::None => None,
        TableFinding::Kept => {
            let mut a = Action::new(ComponentId::Table, kind, 0, 0);
            a.found = "the target's own table (--keep-table)".into();
            a.reason =
                "kept: each partition is restored into the target's partition of the same number"
                    .into();
            Some(a)
        }
        TableFinding::Compared {
            expected,
            differing,
            state,
        } => {
            let (first, last) = expected.iter().fold((u64::MAX, 0), |(s, e), t| {
                (s.min(t.offset), e.max(t.range().1))
            });
            let first = first.min(last);
            let mut a = Action::new(ComponentId::Table, kind, first, last - first);
            a.chunks_total = expected.len() as u64;
            a.found = state.clone();
            for &i in differing {
                let t = &expected[i];
                a.bytes_to_write += t.bytes.len() as u64;
                a.table_writes.push(TableWrite {
                    name: t.name.clone(),
                    offset: t.offset,
                    length: t.bytes.len() as u64,
                    hash: t.hash(),
                    data: Hex(t.bytes.clone()),
                });
            }
            if differing.is_empty() {
                a.reason = "intact and equal to the snapshot".into();
            } else {
                a.action = Verb::Write;
                let names: Vec<&str> = a.table_writes.iter().map(|w| w.name.as_str()).collect();
                a.reason = format!("rewrite {} from the snapshot", names.join(", "));
            }
            Some(a)
        }
    }
}

fn describe_differences(c: &Comparison) -> String {
    let n = c.effective().chunks.len() as u64;
    match c.differ.len() as u64 {
        0 => "equal".into(),
        d if d == n => "every chunk differs".into(),
        d => format!("{d} of {n} chunks differ"),
    }
}

/// Turns the differing chunks into runs and byte counts; zero chunks are written from
/// memory, not fetched. The component's boot-loader patches travel with it.
fn fill_chunk_action(a: &mut Action, c: &Comparison) {
    let index = c.effective();
    a.chunks_total = index.chunks.len() as u64;
    a.patches = c.patches.clone();
    for &i in &c.differ {
        let (_, len) = index.chunk_range(i);
        a.bytes_to_write += len;
        a.chunks_to_write += 1;
        if !c.stored.chunks[i as usize].is_zero_marker() {
            a.bytes_to_fetch += len;
            a.chunks_to_fetch += 1;
        }
        match a.runs.last_mut() {
            Some(run) if run[0] + run[1] == i => run[1] += 1,
            _ => a.runs.push([i, 1]),
        }
    }
    a.action = match c.differ.len() as u64 {
        0 => Verb::Keep,
        n if n == a.chunks_total => Verb::Full,
        _ => Verb::Patch,
    };
}

/// The loader a boot entry should start: the captured NVRAM entry's file for this ESP when
/// known, else shim, else GRUB, else systemd-boot, in a vendor directory, else the fallback.
fn entry_file(uefi: &esp::Uefi, guid: &[u8; 16], m: &Manifest) -> String {
    if let Some(nv) = &m.nvram {
        for (name, data) in &nv.variables {
            if !name.starts_with("Boot") || name == "BootOrder" {
                continue;
            }
            let Ok(bytes) = crate::hex::decode(data) else {
                continue;
            };
            if let Some(opt) = bytes.get(4..).and_then(|d| LoadOption::parse(d).ok())
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

/// The UEFI boot entry of a disk with an ESP: created in this machine's NVRAM when it runs on
/// UEFI and the target is one of its disks (never an image file); otherwise the plan says why
/// not. The new entry goes first in BootOrder; older entries for the same partition GUID are
/// removed after it exists.
fn boot_entry_action(m: &Manifest, d: &DiskRecord, f: &Findings, s: &Settings) -> Option<Action> {
    let uefi = crate::boot::uefi_of(&d.boot_loaders)?;
    let mut a = Action::new(ComponentId::BootEntry, "uefi-boot-entry", 0, 0);
    let fallback = esp::find(&uefi.files, esp::FALLBACK).is_some();
    let carry = if fallback {
        "the removable fallback path \\EFI\\BOOT\\BOOTX64.EFI on the ESP carries the boot"
    } else {
        "the ESP has no \\EFI\\BOOT\\BOOTX64.EFI either: firmware whose NVRAM does not know this disk will not boot it"
    };
    let skip = |mut a: Action, why: &str| -> Option<Action> {
        a.found = "not written".into();
        a.action = Verb::Skip;
        a.reason = format!("no NVRAM entry written: {why}; {carry}");
        Some(a)
    };
    if !s.nvram {
        return skip(a, "--no-nvram");
    }
    if !f.is_block_device {
        return skip(a, "the target is an image file, not a disk of this machine");
    }
    let Some(nvram) = &f.nvram else {
        return skip(a, "not running on UEFI (no efivarfs)");
    };
    let Some(p) = d
        .partitions
        .iter()
        .find(|p| p.info.number == uefi.esp_partition)
    else {
        return skip(a, "the ESP is not in the snapshot's table");
    };
    let Some(guid) = p
        .info
        .guid
        .as_deref()
        .and_then(crate::disk::gpt::guid_from_string)
    else {
        return skip(a, "the ESP is not on a GPT disk");
    };
    let ss = u64::from(d.logical_sector_size);
    let file = entry_file(uefi, &guid, m);
    let option = efivars::option_for(
        "restored",
        p.info.number,
        p.info.offset / ss,
        p.info.size / ss,
        guid,
        &file,
    );
    let stale_except = |keep: Option<u16>| -> Vec<u16> {
        nvram
            .entries
            .iter()
            .filter(|(n, o)| {
                Some(*n) != keep && o.hard_drive.as_ref().is_some_and(|h| h.guid == guid)
            })
            .map(|(n, _)| *n)
            .collect()
    };
    let stale_words = |stale: &[u16]| {
        stale
            .iter()
            .map(|n| format!("Boot{n:04X}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let present = nvram.entries.iter().find(|(_, o)| {
        o.hard_drive == option.hard_drive
            && o.file
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&file))
    });
    if let Some((n, _)) = present {
        let stale = stale_except(Some(*n));
        a.found = format!("Boot{n:04X} already starts {file}");
        if stale.is_empty() {
            a.reason = "NVRAM already has an entry for this ESP".into();
            return Some(a);
        }
        // An earlier apply stopped between creating the entry and removing the old ones.
        a.action = Verb::Write;
        a.reason = format!(
            "keep Boot{n:04X} first in BootOrder and remove the stale {}",
            stale_words(&stale)
        );
        a.boot_entry = Some(BootEntryWrite {
            number: *n,
            file,
            partition: p.info.number,
            load_option: Hex(option.encode()),
            stale,
        });
        return Some(a);
    }
    let Some(number) = (0..=u16::MAX).find(|n| !nvram.used.contains(n)) else {
        return skip(a, "NVRAM has no free Boot#### number");
    };
    let stale = stale_except(None);
    a.found = "no entry for this ESP in NVRAM".into();
    a.action = Verb::Write;
    a.reason = format!(
        "create Boot{number:04X} for {file} on partition {} and put it first in BootOrder{}",
        p.info.number,
        if stale.is_empty() {
            String::new()
        } else {
            format!("; then remove the stale {}", stale_words(&stale))
        }
    );
    a.boot_entry = Some(BootEntryWrite {
        number,
        file,
        partition: p.info.number,
        load_option: Hex(option.encode()),
        stale,
    });
    Some(a)
}

/// Without an NVRAM entry, only the removable fallback path can boot the disk on firmware that
/// does not know it. When the snapshot's ESP lacks \EFI\BOOT\BOOTX64.EFI, apply adds it (shim,
/// its loader and fbx64.efi when the system uses shim, else a copy of the loader). An ESP that
/// already holds every snapshot file plus the fallback is not rewritten: that is the state a
/// previous apply left.
fn fallback_action(d: &DiskRecord, f: &Findings, actions: &mut [Action]) -> Option<Action> {
    let uefi = crate::boot::uefi_of(&d.boot_loaders)?;
    if esp::find(&uefi.files, esp::FALLBACK).is_some() {
        return None;
    }
    let copies = esp::fallback_copies(&uefi.files);
    let esp_action = actions
        .iter_mut()
        .find(|a| a.id == ComponentId::Partition(uefi.esp_partition))?;
    let mut a = Action::new(
        ComponentId::Fallback(uefi.esp_partition),
        "uefi-fallback",
        esp_action.offset,
        esp_action.length,
    );
    if copies.is_empty() {
        a.action = Verb::Skip;
        a.found = "no \\EFI\\BOOT\\BOOTX64.EFI and no known loader to copy there".into();
        a.reason =
            "the ESP holds no shim, GRUB or systemd-boot to use as the fallback loader".into();
        return Some(a);
    }
    let now: &[EspFile] = f.esp_files.as_deref().unwrap_or_default();
    let same = |path: &str, want: &str| {
        let src = esp::find(&uefi.files, path);
        esp::find(now, want).is_some_and(|f| src.is_some_and(|s| s.hash == f.hash))
    };
    let snapshot_files_intact = uefi
        .files
        .iter()
        .all(|f| esp::find(now, &f.path).is_some_and(|n| n.hash == f.hash));
    let fallback_present = copies.iter().all(|(from, to)| same(from, to));
    let list = copies
        .iter()
        .map(|(f, t)| format!("{f} -> {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    if snapshot_files_intact && fallback_present {
        if esp_action.writes() {
            // The differences are the fallback files a previous apply added: keep the ESP.
            esp_action.action = Verb::Keep;
            esp_action.runs.clear();
            esp_action.patches.clear();
            (esp_action.bytes_to_write, esp_action.bytes_to_fetch) = (0, 0);
            (esp_action.chunks_to_write, esp_action.chunks_to_fetch) = (0, 0);
            esp_action.found = "every file equal to the snapshot, plus the fallback loader".into();
            esp_action.reason = "differs from the snapshot only by the fallback loader added for firmware without an NVRAM entry".into();
        }
        a.found = "fallback loader present".into();
        a.reason = format!("already copied: {list}");
        return Some(a);
    }
    a.action = Verb::Write;
    a.found = "\\EFI\\BOOT\\BOOTX64.EFI missing from the snapshot's ESP".into();
    a.reason = format!(
        "no NVRAM entry will be written, so the removable fallback path must boot this disk: copy {list}"
    );
    for (from, to) in copies {
        let Some(src) = esp::find(&uefi.files, &from) else {
            continue;
        };
        a.bytes_to_write += src.size;
        a.files.push(FileCopy {
            from,
            to,
            size: src.size,
            hash: src.hash,
        });
    }
    Some(a)
}

/// Whether the target is another system's disk rather than the snapshot's (damaged or not):
/// it holds a readable partition table (or a filesystem on the whole disk) whose identity
/// differs from the snapshot's, and none of its partitions or filesystems is the snapshot's.
/// Blank disks, tables without partitions and damaged copies of the snapshot's own disk are
/// not foreign. With a kept table (--keep-table) only partitions holding a filesystem count:
/// a freshly partitioned disk is the operator's own preparation.
pub fn foreign(d: &DiskRecord, current: Option<&DiskLayout>, keep_table: bool) -> Option<Foreign> {
    let cur = current?;
    match (&d.table, &cur.table) {
        (TableInfo::Gpt { disk_guid: a, .. }, TableInfo::Gpt { disk_guid: b, .. })
            if a.eq_ignore_ascii_case(b) =>
        {
            return None;
        }
        (TableInfo::Mbr { disk_signature: a }, TableInfo::Mbr { disk_signature: b })
            if a == b && a != "00000000" =>
        {
            return None;
        }
        _ => {}
    }
    let ours: BTreeSet<String> = d
        .partitions
        .iter()
        .flat_map(|p| [p.info.guid.clone(), p.info.fs_uuid.clone()])
        .flatten()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let theirs = |p: &crate::disk::layout::PartitionInfo| {
        [p.guid.as_deref(), p.fs_uuid.as_deref()]
            .into_iter()
            .flatten()
            .any(|s| ours.contains(&s.to_ascii_lowercase()))
    };
    if cur.partitions.iter().any(theirs) {
        return None;
    }
    let destroys: Vec<ForeignPart> = cur
        .partitions
        .iter()
        .filter(|p| p.filesystem.is_some() || (!keep_table && p.number != 0))
        .map(|p| ForeignPart {
            number: p.number,
            size: p.size,
            label: p.label.clone(),
            filesystem: p.filesystem.clone(),
            fs_label: p.fs_label.clone(),
        })
        .collect();
    if destroys.is_empty() {
        return None;
    }
    let identity = |t: &TableInfo| match t {
        TableInfo::Gpt { disk_guid, .. } => format!("GPT disk GUID {disk_guid}"),
        TableInfo::Mbr { disk_signature } => format!("MBR disk signature {disk_signature}"),
        TableInfo::None => "no partition table".into(),
    };
    let why = match &cur.table {
        TableInfo::None => format!(
            "a filesystem on the whole disk that is not the snapshot's (the snapshot's disk has {})",
            identity(&d.table)
        ),
        t => format!(
            "its {} is not the snapshot's ({}), and none of its partitions or filesystems is the snapshot's",
            identity(t),
            identity(&d.table)
        ),
    };
    Some(Foreign { why, destroys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkId;
    use crate::disk::layout::PartitionInfo;
    use crate::plan::read::{PartitionFinding, RegionFinding};
    use crate::plan::{Mode, table};
    use crate::store::index::ChunkIndex;

    const MIB: u64 = 1 << 20;

    fn part(number: u32, guid: &str, fs_uuid: Option<&str>) -> PartitionInfo {
        PartitionInfo {
            number,
            offset: number as u64 * MIB,
            size: 4 * MIB,
            type_id: String::new(),
            role: "data".into(),
            guid: Some(guid.into()),
            label: Some(format!("p{number}")),
            attributes: 0,
            filesystem: fs_uuid.map(|_| "ext4".to_string()),
            fs_uuid: fs_uuid.map(str::to_string),
            fs_label: None,
        }
    }

    fn gpt(guid: &str) -> TableInfo {
        TableInfo::Gpt {
            disk_guid: guid.into(),
            first_usable_lba: 34,
            last_usable_lba: 2000,
            entries_lba: 2,
            entry_count: 128,
            entry_size: 128,
            backup_header_lba: 2047,
            backup_entries_lba: 2015,
        }
    }

    fn record(table: TableInfo, parts: Vec<PartitionInfo>) -> DiskRecord {
        serde_json::from_value(serde_json::json!({
            "name": "sda", "source": "/dev/sda", "size": 64 * MIB,
            "logical_sector_size": 512, "physical_sector_size": 512,
            "table": table, "table_sectors": [], "boot_regions": [],
            "partitions": parts.iter().map(|p| {
                let mut v = serde_json::to_value(p).unwrap();
                v["index"] = serde_json::json!(ChunkId::of(b"i").to_hex());
                v["chunks"] = 4.into();
                v["zero_chunks"] = 0.into();
                v
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn layout(table: TableInfo, partitions: Vec<PartitionInfo>) -> DiskLayout {
        DiskLayout {
            table,
            table_sectors: Vec::new(),
            partitions,
        }
    }

    #[test]
    fn another_systems_disk_is_foreign_a_damaged_copy_is_not() {
        let snap = record(gpt("AAAA"), vec![part(1, "P1", Some("fs-1"))]);
        // Same disk GUID: the snapshot's own disk, whatever happened to it.
        assert!(foreign(&snap, Some(&layout(gpt("aaaa"), vec![])), false).is_none());
        // Another GUID, but partition 1 is ours (the table was rewritten): not foreign.
        let rewritten = layout(gpt("BBBB"), vec![part(1, "P1", None)]);
        assert!(foreign(&snap, Some(&rewritten), false).is_none());
        // Our filesystem under a new partition GUID: not foreign.
        let moved = layout(gpt("BBBB"), vec![part(2, "Q", Some("FS-1"))]);
        assert!(foreign(&snap, Some(&moved), false).is_none());
        // Another system's disk: everything on it is listed.
        let other = layout(
            gpt("CCCC"),
            vec![part(1, "X1", Some("other-fs")), part(2, "X2", None)],
        );
        let f = foreign(&snap, Some(&other), false).expect("foreign");
        assert_eq!(f.destroys.len(), 2);
        assert!(
            f.why.contains("CCCC") && f.why.contains("AAAA"),
            "{}",
            f.why
        );
        // A kept table counts only partitions that hold a filesystem.
        let k = foreign(&snap, Some(&other), true).expect("foreign");
        assert_eq!(k.destroys.len(), 1);
        let fresh = layout(gpt("CCCC"), vec![part(1, "X1", None)]);
        assert!(foreign(&snap, Some(&fresh), true).is_none());
        // Blank disk and empty tables hold nothing.
        let blank = layout(
            TableInfo::None,
            vec![PartitionInfo {
                number: 0,
                guid: None,
                filesystem: None,
                fs_uuid: None,
                ..part(0, "", None)
            }],
        );
        assert!(foreign(&snap, Some(&blank), false).is_none());
        assert!(foreign(&snap, Some(&layout(gpt("CCCC"), vec![])), false).is_none());
        assert!(foreign(&snap, None, false).is_none());
        // A whole-disk filesystem that is not ours is foreign.
        let whole = layout(
            TableInfo::None,
            vec![PartitionInfo {
                guid: None,
                ..part(0, "", Some("zzz"))
            }],
        );
        assert!(foreign(&snap, Some(&whole), false).is_some());
        // MBR: the same signature is the same disk, unless it is zero.
        let mbr = |s: &str| TableInfo::Mbr {
            disk_signature: s.into(),
        };
        let snap_mbr = record(
            mbr("1234abcd"),
            vec![PartitionInfo {
                guid: None,
                ..part(1, "", Some("m1"))
            }],
        );
        let theirs = vec![PartitionInfo {
            guid: None,
            ..part(1, "", Some("m2"))
        }];
        assert!(
            foreign(
                &snap_mbr,
                Some(&layout(mbr("1234abcd"), theirs.clone())),
                false
            )
            .is_none()
        );
        assert!(foreign(&snap_mbr, Some(&layout(mbr("99999999"), theirs)), false).is_some());
    }

    fn index(n: usize) -> ChunkIndex {
        ChunkIndex {
            chunk_size: MIB as u32,
            length: n as u64 * MIB,
            chunks: (0..n)
                .map(|i| {
                    if i == 2 {
                        ChunkId::ZERO
                    } else {
                        ChunkId::of(&[i as u8])
                    }
                })
                .collect(),
        }
    }

    fn findings(table: TableFinding, differ: Vec<u64>) -> Findings {
        Findings {
            target_size: 64 * MIB,
            sector_size: 512,
            is_block_device: false,
            fingerprint: "fp".into(),
            rate: None,
            current: None,
            table,
            regions: vec![RegionFinding {
                name: "boot-code".into(),
                offset: 0,
                length: 440,
                index: ChunkId::of(b"r"),
                check: RegionCheck::BeyondEnd,
            }],
            partitions: vec![PartitionFinding {
                number: 1,
                snapshot_offset: MIB,
                offset: MIB,
                size: 6 * MIB,
                holds: "ext4".into(),
                index: ChunkId::of(b"i"),
                moved: None,
                comparison: Comparison {
                    stored: index(6),
                    patched: None,
                    patches: Vec::new(),
                    differ,
                },
            }],
            esp_files: None,
            nvram: None,
            grown: None,
            in_use: None,
            not_checked: Vec::new(),
            sampled: Vec::new(),
        }
    }

    fn manifest(d: &DiskRecord) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": "restore-snapshot", "version": 1, "id": "s", "host": "h",
            "created": "2026-01-01T00:00:00Z", "chunk_size": MIB, "tool_version": "0",
            "disks": [d],
        }))
        .unwrap()
    }

    fn settings() -> Settings {
        Settings {
            mode: Mode::Deep,
            grow_last: false,
            keep_table: false,
            nvram: true,
        }
    }

    #[test]
    fn nvram_hex_from_a_hostile_manifest_does_not_panic() {
        let mut d = record(
            gpt("AAAA"),
            vec![part(1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", None)],
        );
        d.boot_loaders = vec![crate::boot::BootLoader::Uefi(esp::Uefi {
            esp_partition: 1,
            loaders: vec!["grub".into()],
            files: vec![EspFile {
                path: "/EFI/debian/grubx64.efi".into(),
                size: 10,
                hash: ChunkId::of(b"g"),
            }],
        })];
        let mut m = manifest(&d);
        m.nvram = Some(efivars::Nvram {
            variables: vec![
                ("Boot0000".into(), "é1é1é1é1".into()),
                ("Boot0001".into(), "zz".into()),
                ("Boot0002".into(), "0".into()),
            ],
        });
        let mut f = findings(TableFinding::None, vec![]);
        f.is_block_device = true;
        f.nvram = Some(crate::plan::read::NvramFinding {
            entries: Vec::new(),
            used: vec![0, 1, 2],
        });
        let dp = decide(&m, &d, &f, &settings());
        let entry = dp
            .actions
            .iter()
            .find(|a| a.id == ComponentId::BootEntry)
            .unwrap();
        assert_eq!(entry.action, Verb::Write);
        let w = entry.boot_entry.as_ref().unwrap();
        assert_eq!(w.number, 3, "the first free number");
        assert_eq!(w.file, "\\EFI\\debian\\grubx64.efi");
    }

    #[test]
    fn verdicts_runs_and_table_payload() {
        let d = record(gpt("AAAA"), vec![part(1, "P1", Some("fs-1"))]);
        let m = manifest(&d);
        let sector = |name: &str, offset: u64, fill: u8| table::TableSectorBytes {
            name: name.into(),
            offset,
            bytes: vec![fill; 512],
        };
        let t = TableFinding::Compared {
            expected: vec![
                sector("gpt-backup-header", 63 * MIB, 1),
                sector("mbr", 0, 2),
            ],
            differing: vec![1],
            state: "protective MBR differs".into(),
        };
        let dp = decide(&m, &d, &findings(t, vec![0, 1, 2, 4]), &settings());
        let table = &dp.actions[0];
        assert_eq!(table.action, Verb::Write);
        assert_eq!(table.table_writes.len(), 1);
        assert_eq!(table.table_writes[0].data.0, vec![2u8; 512]);
        assert_eq!((table.offset, table.length), (0, 63 * MIB + 512));
        let region = &dp.actions[1];
        assert_eq!(region.action, Verb::Skip);
        assert!(dp.notes.iter().any(|n| n.contains("beyond the end")));
        let p = &dp.actions[2];
        assert_eq!(p.action, Verb::Patch);
        assert_eq!(p.runs, vec![[0, 3], [4, 1]]);
        assert_eq!(
            (p.chunks_to_write, p.chunks_to_fetch),
            (4, 3),
            "chunk 2 is zero"
        );
        assert_eq!(dp.totals.components_to_write, 2);
        assert_eq!(dp.totals.bytes_to_write, 512 + 4 * MIB);
        let all = decide(
            &m,
            &d,
            &findings(TableFinding::None, (0..6).collect()),
            &settings(),
        );
        assert_eq!(all.actions[1].action, Verb::Full);
        assert_eq!(all.actions[1].reason, "no chunk matches the snapshot");
        let none = decide(&m, &d, &findings(TableFinding::None, vec![]), &settings());
        assert_eq!(none.actions[1].action, Verb::Keep);
        assert_eq!(none.totals.components_to_write, 0);
    }
}
