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

pub fn make(opts: &PlanOptions, progress: &dyn Progress) -> Result<Plan> {
    let store = Store::open(&opts.store)?;
    let m = manifest::resolve(&store, opts.host.as_deref(), &opts.snapshot)?;
    let mapping = mapping::pair(&m, &opts.targets, &opts.maps)?;
    let mut disks = Vec::new();
    let mut totals = Totals::default();
    let mut rate = None;
    for pair in mapping {
        let disk = Disk::open_read(&pair.target)?;
        let (mut dp, measured) = diagnose::diagnose(
            &store,
            &m.disks[pair.disk],
            &disk,
            &opts.settings(),
            progress,
        )?;
        dp.mapping = pair.why;
        if let Some(a) = boot_entry_action(&m, &m.disks[pair.disk], &disk, opts.nvram) {
            dp.actions.push(a);
            dp.totals = Totals::of(&dp.actions);
        }
        rate = rate.or(measured);
        totals.add(&dp.totals);
        disks.push(dp);
    }
    // Writes go at about the speed the target was read, when the plan measured it.
    let write_rate = rate.unwrap_or(200e6).clamp(20e6, 2e9);
    let estimated_seconds =
        totals.bytes_to_write as f64 / write_rate + totals.bytes_to_fetch as f64 / 1e9;
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
    Some(Action {
        component: Component::BootEntry,
        name: "uefi-boot-entry".into(),
        number: None,
        holds: None,
        found,
        action,
        reason,
        offset: 0,
        length: 0,
        bytes_to_write: 0,
        bytes_to_fetch: 0,
        chunks_to_write: 0,
        chunks_to_fetch: 0,
        chunks_total: 0,
        index: None,
        runs: Vec::new(),
        table_writes: Vec::new(),
        patches: Vec::new(),
    })
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
