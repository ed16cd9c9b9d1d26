//! The plan: the difference between a snapshot and the target disks, as a value. Making a
//! plan only reads; `apply` carries it out exactly. Per disk it says, for the partition
//! table, each boot region and each partition, what was found, what will be written and why.

pub mod diagnose;
pub mod mapping;
pub mod render;
pub mod table;

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::disk::Disk;
use crate::manifest::{self, Manifest};
use crate::progress::Progress;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Hash every chunk of the target.
    Deep,
    /// Check tables, boot regions and critical chunks only.
    Quick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    PartitionTable,
    BootRegion,
    Partition,
    /// The UEFI Boot#### entry for a restored ESP, in this machine's NVRAM.
    BootEntry,
    /// The removable fallback path \EFI\BOOT\BOOTX64.EFI added to the ESP.
    BootFallback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Already correct: nothing written.
    Keep,
    /// Written in full (a table, a boot region).
    Write,
    /// Some chunks of a partition or region written.
    Patch,
    /// Every chunk of a partition written.
    Full,
    /// Not restored (for example a region that does not fit on the target); the reason says why.
    Skip,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub created: String,
    pub store: String,
    pub host: String,
    pub snapshot: String,
    pub chunk_size: u32,
    pub mode: Mode,
    /// --grow-last: the last partition is extended to the end of a larger target.
    #[serde(default)]
    pub grow_last: bool,
    /// Whether the plan may create UEFI boot entries (false with --no-nvram).
    #[serde(default = "yes")]
    pub nvram: bool,
    /// --keep-table: the targets' own partition tables are kept.
    #[serde(default)]
    pub keep_table: bool,
    pub disks: Vec<DiskPlan>,
    pub totals: Totals,
    pub estimated_seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub bytes_to_write: u64,
    pub bytes_to_fetch: u64,
    pub chunks_to_write: u64,
    pub chunks_to_fetch: u64,
    /// Components whose action is not keep or skip.
    pub components_to_write: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskPlan {
    /// The disk's name in the snapshot.
    pub source: String,
    pub target: PathBuf,
    /// Why this target was paired with this snapshot disk.
    pub mapping: String,
    pub target_size: u64,
    pub target_sector_size: u32,
    pub snapshot_size: u64,
    pub actions: Vec<Action>,
    /// What a quick plan did not look at.
    #[serde(default)]
    pub not_checked: Vec<String>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// BLAKE3 over everything the plan read from the target; apply refuses when it changed.
    pub fingerprint: String,
    pub totals: Totals,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub component: Component,
    /// "gpt", "mbr", "boot-code", "post-table-gap", "partition 2", ...
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// What a partition holds: its filesystem or role ("ext4", "bios-boot").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<String>,
    /// What the plan found on the target.
    pub found: String,
    pub action: Verb,
    pub reason: String,
    pub offset: u64,
    pub length: u64,
    pub bytes_to_write: u64,
    pub bytes_to_fetch: u64,
    pub chunks_to_write: u64,
    pub chunks_to_fetch: u64,
    pub chunks_total: u64,
    /// Chunk index of the partition or region in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<ChunkId>,
    /// Chunks to write as [first, count] runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<[u64; 2]>,
    /// For the partition table: the exact sectors to write, in order, and their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_writes: Vec<TableWrite>,
    /// Bytes changed in fetched chunks so boot loaders find partitions that moved (--keep-table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<crate::boot::relocate::ChunkPatch>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableWrite {
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub hash: ChunkId,
}

impl Action {
    pub fn writes(&self) -> bool {
        !matches!(self.action, Verb::Keep | Verb::Skip)
    }
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.bytes_to_write += o.bytes_to_write;
        self.bytes_to_fetch += o.bytes_to_fetch;
        self.chunks_to_write += o.chunks_to_write;
        self.chunks_to_fetch += o.chunks_to_fetch;
        self.components_to_write += o.components_to_write;
    }

    fn of(actions: &[Action]) -> Totals {
        let mut t = Totals::default();
        for a in actions {
            t.bytes_to_write += a.bytes_to_write;
            t.bytes_to_fetch += a.bytes_to_fetch;
            t.chunks_to_write += a.chunks_to_write;
            t.chunks_to_fetch += a.chunks_to_fetch;
            t.components_to_write += u64::from(a.writes());
        }
        t
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.totals.components_to_write > 0
    }

    pub fn load(path: &std::path::Path) -> Result<Plan> {
        let raw =
            std::fs::read(path).with_context(|| format!("reading plan {}", path.display()))?;
        let plan: Plan = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "{} is not a restore plan (make one with `restore plan -o`)",
                path.display()
            )
        })?;
        ensure!(
            plan.format == "restore-plan",
            "{} is not a restore plan",
            path.display()
        );
        ensure!(
            plan.version == 1,
            "plan {} has version {} (1 supported)",
            path.display(),
            plan.version
        );
        Ok(plan)
    }
}

pub struct PlanOptions {
    pub store: String,
    pub host: Option<String>,
    pub snapshot: String,
    pub targets: Vec<PathBuf>,
    /// Explicit pairs from --map SOURCE=TARGET.
    pub maps: Vec<(String, PathBuf)>,
    pub mode: Mode,
    pub grow_last: bool,
    pub nvram: bool,
    pub keep_table: bool,
}

/// How each disk is diagnosed; saved in the plan so apply re-checks it the same way.
pub struct Settings {
    pub mode: Mode,
    pub grow_last: bool,
    pub keep_table: bool,
}

fn yes() -> bool {
    true
}

/// Makes the plan against `store`, the store opened at `opts.store` (opened once by the
/// caller, which may go on to apply with it).
pub fn make(store: &Store, opts: &PlanOptions, progress: &dyn Progress) -> Result<Plan> {
    let m = manifest::resolve(store, opts.host.as_deref(), &opts.snapshot)?;
    let mapping = mapping::pair(&m, &opts.targets, &opts.maps)?;
    let mut disks = Vec::new();
    let mut totals = Totals::default();
    let mut rate = None;
    for pair in mapping {
        let disk = Disk::open_read(&pair.target)?;
        let (mut dp, measured) = diagnose::diagnose(
            store,
            &m.disks[pair.disk],
            &disk,
            &opts.settings(),
            progress,
        )?;
        dp.mapping = pair.why;
        if let Some(a) = boot_entry_action(&m, &m.disks[pair.disk], &disk, opts.nvram) {
            let no_entry = a.action == Verb::Skip;
            dp.actions.push(a);
            if no_entry
                && let Some(f) = fallback_action(&m.disks[pair.disk], &disk, &mut dp.actions)
            {
                dp.actions.push(f);
            }
            dp.totals = Totals::of(&dp.actions);
        }
        rate = rate.or(measured);
        totals.add(&dp.totals);
        disks.push(dp);
    }
    // Writes go at about the speed the target was read, when the plan measured it.
    // Reads of a blank or cached target are far faster than writes reaching a disk, so the
    // measured rate is capped; fetched chunks also cost decompression and hashing.
    let write_rate = rate.unwrap_or(200e6).clamp(20e6, 400e6);
    let estimated_seconds =
        totals.bytes_to_write as f64 / write_rate + totals.bytes_to_fetch as f64 / 500e6;
    Ok(Plan {
        format: "restore-plan".into(),
        version: 1,
        created: crate::clock::now().rfc3339,
        store: opts.store.clone(),
        host: m.host.clone(),
        snapshot: m.id.clone(),
        chunk_size: m.chunk_size,
        mode: opts.mode,
        grow_last: opts.grow_last,
        nvram: opts.nvram,
        keep_table: opts.keep_table,
        disks,
        totals,
        estimated_seconds,
    })
}

/// The UEFI boot entry of a disk with an ESP: created in this machine's NVRAM when it runs on
/// UEFI and the target is one of its disks; otherwise the plan says why not.
pub fn boot_entry_action(
    m: &Manifest,
    d: &manifest::DiskRecord,
    disk: &Disk,
    allowed: bool,
) -> Option<Action> {
    use crate::boot::EntryDecision;
    let partitions: Vec<_> = d.partitions.iter().map(|p| p.info.clone()).collect();
    let decision = crate::boot::entry_decision(
        &d.boot_loaders,
        &partitions,
        u64::from(d.logical_sector_size),
        m.nvram.as_ref(),
        disk.is_block_device,
        allowed,
    );
    let (found, action, reason) = match decision {
        EntryDecision::NotUefi => return None,
        EntryDecision::Skip { reason } => ("not written".to_string(), Verb::Skip, reason),
        EntryDecision::Present { number, file } => (
            format!("Boot{number:04X} already starts {file}"),
            Verb::Keep,
            "NVRAM already has an entry for this ESP".to_string(),
        ),
        EntryDecision::Create { option, .. } => (
            "no entry for this ESP in NVRAM".to_string(),
            Verb::Write,
            format!(
                "create a Boot#### entry for {} on partition {} and put it first in BootOrder",
                option.file.as_deref().unwrap_or("?"),
                option.hard_drive.as_ref().map(|h| h.partition).unwrap_or(0)
            ),
        ),
    };
    let mut a = Action::new(Component::BootEntry, "uefi-boot-entry", None, 0, 0, None);
    (a.found, a.action, a.reason) = (found, action, reason);
    Some(a)
}

impl PlanOptions {
    pub fn settings(&self) -> Settings {
        Settings {
            mode: self.mode,
            grow_last: self.grow_last,
            keep_table: self.keep_table,
        }
    }
}

impl Plan {
    pub fn settings(&self) -> Settings {
        Settings {
            mode: self.mode,
            grow_last: self.grow_last,
            keep_table: self.keep_table,
        }
    }
}

/// Without an NVRAM entry, only the removable fallback path can boot the disk on firmware that
/// does not know it. When the snapshot's ESP lacks \EFI\BOOT\BOOTX64.EFI, apply adds it (shim,
/// its loader and fbx64.efi when the system uses shim, else a copy of the loader). An ESP that
/// already holds every snapshot file plus the fallback is not rewritten: that is the state a
/// previous apply left.
pub fn fallback_action(
    d: &manifest::DiskRecord,
    disk: &Disk,
    actions: &mut [Action],
) -> Option<Action> {
    use crate::boot::{BootLoader, esp};
    let uefi = d.boot_loaders.iter().find_map(|l| {
        if let BootLoader::Uefi(u) = l {
            Some(u)
        } else {
            None
        }
    })?;
    if esp::find(&uefi.files, esp::FALLBACK).is_some() {
        return None;
    }
    let copies = esp::fallback_copies(&uefi.files);
    let esp_action = actions
        .iter_mut()
        .find(|a| a.number == Some(uefi.esp_partition) && a.component == Component::Partition)?;
    let mut a = Action::new(
        Component::BootFallback,
        "uefi-fallback",
        Some(uefi.esp_partition),
        esp_action.offset,
        esp_action.length,
        None,
    );
    a.action = Verb::Write;
    if copies.is_empty() {
        a.action = Verb::Skip;
        a.found = "no \\EFI\\BOOT\\BOOTX64.EFI and no known loader to copy there".into();
        a.reason =
            "the ESP holds no shim, GRUB or systemd-boot to use as the fallback loader".into();
        return Some(a);
    }
    let now = esp::list_files(disk, esp_action.offset, esp_action.length).unwrap_or_default();
    let same = |path: &str, want: &str| {
        let src = esp::find(&uefi.files, path);
        esp::find(&now, want).is_some_and(|f| src.is_some_and(|s| s.hash == f.hash))
    };
    let snapshot_files_intact = uefi
        .files
        .iter()
        .all(|f| esp::find(&now, &f.path).is_some_and(|n| n.hash == f.hash));
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
            (esp_action.bytes_to_write, esp_action.bytes_to_fetch) = (0, 0);
            (esp_action.chunks_to_write, esp_action.chunks_to_fetch) = (0, 0);
            esp_action.found = "every file equal to the snapshot, plus the fallback loader".into();
            esp_action.reason = "differs from the snapshot only by the fallback loader added for firmware without an NVRAM entry".into();
        }
        a.action = Verb::Keep;
        a.found = "fallback loader present".into();
        a.reason = format!("already copied: {list}");
    } else {
        a.found = "\\EFI\\BOOT\\BOOTX64.EFI missing from the snapshot's ESP".into();
        a.reason = format!(
            "no NVRAM entry will be written, so the removable fallback path must boot this disk: copy {list}"
        );
        a.bytes_to_write = copies
            .iter()
            .filter_map(|(f, _)| esp::find(&uefi.files, f))
            .map(|f| f.size)
            .sum();
    }
    Some(a)
}
