//! The plan: the difference between a snapshot and the target disks, as a value. Making a
//! plan only reads; `apply` carries it out exactly. Per disk it says, for the partition
//! table, each boot region and each partition, what was found, what will be written and why.
//!
//! Two halves: `read` looks at a target and compares it with the snapshot (findings and the
//! fingerprint), `decide` turns findings into actions (every verdict lives there). `apply`
//! calls the same two to prove that a saved plan is still exactly what the target needs.

pub mod decide;
pub mod mapping;
pub mod read;
pub mod relocate;
pub mod render;
pub mod table;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunk::ChunkId;
use crate::disk::Disk;
use crate::hex::Hex;
use crate::manifest::{self, DiskRecord, Manifest};
use crate::progress::Progress;
use crate::store::{Location, Store};

pub use relocate::ChunkPatch;

/// The plan format this build writes and applies.
pub const VERSION: u32 = 2;
/// A plan file larger than this is not a plan (a 2 TB disk's worst plan is far smaller).
const MAX_PLAN_BYTES: u64 = 256 << 20;

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

/// Which component of a disk an action is about: the key apply and the proof compare by.
/// Display names ("partition 2") are for people and never compared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentId {
    Table,
    /// A boot region, by its name in the manifest ("boot-code", "post-table-gap", "gap-N").
    Region(String),
    /// A partition by number; 0 is a disk without a partition table.
    Partition(u32),
    BootEntry,
    /// The fallback loader files added to the ESP with this partition number.
    Fallback(u32),
}

impl ComponentId {
    pub fn component(&self) -> Component {
        match self {
            ComponentId::Table => Component::PartitionTable,
            ComponentId::Region(_) => Component::BootRegion,
            ComponentId::Partition(_) => Component::Partition,
            ComponentId::BootEntry => Component::BootEntry,
            ComponentId::Fallback(_) => Component::BootFallback,
        }
    }

    fn parse(s: &str) -> Result<ComponentId> {
        let number = |n: &str| {
            n.parse::<u32>()
                .with_context(|| format!("component id {s:?}: bad number"))
        };
        Ok(match s.split_once(':') {
            None if s == "table" => ComponentId::Table,
            None if s == "boot-entry" => ComponentId::BootEntry,
            Some(("region", name)) if !name.is_empty() && name.len() <= 64 => {
                ComponentId::Region(name.to_string())
            }
            Some(("partition", n)) => ComponentId::Partition(number(n)?),
            Some(("fallback", n)) => ComponentId::Fallback(number(n)?),
            _ => bail!("{s:?} is not a component id"),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentId::Table => f.write_str("table"),
            ComponentId::Region(n) => write!(f, "region:{n}"),
            ComponentId::Partition(n) => write!(f, "partition:{n}"),
            ComponentId::BootEntry => f.write_str("boot-entry"),
            ComponentId::Fallback(n) => write!(f, "fallback:{n}"),
        }
    }
}

impl Serialize for ComponentId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ComponentId::parse(&s).map_err(serde::de::Error::custom)
    }
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
    /// Where the snapshot is; a local directory is saved as an absolute path.
    pub store: Location,
    pub host: String,
    pub snapshot: String,
    /// The trusted key the snapshot's signature was verified with; None when no key was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    pub chunk_size: u32,
    pub mode: Mode,
    /// --grow-last: the last partition is extended to the end of a larger target.
    #[serde(default)]
    pub grow_last: bool,
    /// Whether the plan may create UEFI boot entries (false with --no-nvram).
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
    /// The target, as an absolute path.
    pub target: PathBuf,
    /// Why this target was paired with this snapshot disk.
    pub mapping: String,
    pub target_size: u64,
    pub target_sector_size: u32,
    pub snapshot_size: u64,
    /// Set when the target holds another system's data: apply refuses it without
    /// --overwrite-foreign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign: Option<Foreign>,
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

/// A target that is not the snapshot's disk, damaged or not, but another system's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Foreign {
    /// What tells it apart ("GPT disk GUID ..., the snapshot's disk has ...").
    pub why: String,
    /// What a restore destroys.
    pub destroys: Vec<ForeignPart>,
}

impl Foreign {
    /// Each partition a restore destroys, in words ("partition 1 \"root\" (ext4 labelled
    /// \"db\", 10.0 GiB)").
    pub fn destroyed(&self) -> Vec<String> {
        self.destroys
            .iter()
            .map(|p| {
                let mut s = if p.number == 0 {
                    "the whole disk".to_string()
                } else {
                    format!("partition {}", p.number)
                };
                if let Some(l) = &p.label {
                    s.push_str(&format!(" \"{l}\""));
                }
                s.push_str(&format!(
                    " ({}{}, {})",
                    p.filesystem
                        .as_deref()
                        .unwrap_or("no filesystem recognised"),
                    p.fs_label
                        .as_deref()
                        .map(|l| format!(" labelled \"{l}\""))
                        .unwrap_or_default(),
                    crate::units::bytes(p.size)
                ));
                s
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignPart {
    /// Partition number; 0 for a filesystem on the whole disk.
    pub number: u32,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// The typed identity of the component ("table", "region:boot-code", "partition:2").
    pub id: ComponentId,
    pub component: Component,
    /// "gpt", "mbr", "boot-code", "post-table-gap", "partition 2", ... (for people)
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
    /// For the partition table: the exact sectors to write, in order, with their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_writes: Vec<TableWrite>,
    /// Bytes changed in fetched chunks so boot loaders find partitions that moved (--keep-table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<ChunkPatch>,
    /// For the fallback loader: the files copied within the ESP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileCopy>,
    /// For a UEFI boot entry: the variable to create and the stale ones to remove after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_entry: Option<BootEntryWrite>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableWrite {
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub hash: ChunkId,
    /// The sector bytes, as apply writes them.
    pub data: Hex,
}

/// One file of the ESP copied to another path on the same ESP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileCopy {
    pub from: String,
    pub to: String,
    pub size: u64,
    /// BLAKE3 of the file, as the snapshot recorded it: the copy must hash the same.
    pub hash: ChunkId,
}

/// A Boot#### variable to create (its EFI_LOAD_OPTION bytes), first in BootOrder; the stale
/// entries for the same partition are removed only after it exists.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootEntryWrite {
    pub number: u16,
    pub file: String,
    pub partition: u32,
    pub load_option: Hex,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<u16>,
}

impl Action {
    pub fn new(id: ComponentId, name: &str, offset: u64, length: u64) -> Action {
        Action {
            component: id.component(),
            number: match id {
                ComponentId::Partition(n) | ComponentId::Fallback(n) => Some(n),
                _ => None,
            },
            id,
            name: name.to_string(),
            holds: None,
            found: String::new(),
            action: Verb::Keep,
            reason: String::new(),
            offset,
            length,
            bytes_to_write: 0,
            bytes_to_fetch: 0,
            chunks_to_write: 0,
            chunks_to_fetch: 0,
            chunks_total: 0,
            index: None,
            runs: Vec::new(),
            table_writes: Vec::new(),
            patches: Vec::new(),
            files: Vec::new(),
            boot_entry: None,
        }
    }

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

    pub fn of(actions: &[Action]) -> Totals {
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

impl DiskPlan {
    pub fn has_changes(&self) -> bool {
        self.totals.components_to_write > 0
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.totals.components_to_write > 0
    }

    /// Loads a saved plan. Paths in it must still resolve; the error names the field.
    pub fn load(path: &Path) -> Result<Plan> {
        let raw = read_bounded(path)?;
        let plan: Plan = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "{} is not a valid restore plan (make one with `restore plan -o`)",
                path.display()
            )
        })?;
        ensure!(
            plan.format == "restore-plan",
            "{} is not a restore plan",
            path.display()
        );
        ensure!(
            plan.version == VERSION,
            "plan {} has version {}; this restore applies version {VERSION}: make a new plan",
            path.display(),
            plan.version
        );
        if let Location::Local(dir) = &plan.store
            && !dir.is_dir()
        {
            bail!(
                "plan {}: field \"store\": directory {} does not exist (anymore); make a new plan",
                path.display(),
                dir.display()
            );
        }
        for (i, d) in plan.disks.iter().enumerate() {
            if !d.target.exists() {
                bail!(
                    "plan {}: field \"disks[{i}].target\": {} does not exist (anymore); make a new plan",
                    path.display(),
                    d.target.display()
                );
            }
        }
        Ok(plan)
    }

    /// Whether `path` holds a restore plan (of any version): the test for whether `-o` may
    /// replace it, and for telling a plan file from a disk.
    pub fn is_plan_file(path: &Path) -> bool {
        #[derive(Deserialize)]
        struct Head {
            format: String,
        }
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_PLAN_BYTES)
            && read_bounded(path)
                .ok()
                .and_then(|raw| serde_json::from_slice::<Head>(&raw).ok())
                .is_some_and(|h| h.format == "restore-plan")
    }

    pub fn settings(&self) -> Settings {
        Settings {
            mode: self.mode,
            grow_last: self.grow_last,
            keep_table: self.keep_table,
            nvram: self.nvram,
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).with_context(|| format!("reading plan {}", path.display()))?;
    let mut raw = Vec::new();
    f.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading plan {}", path.display()))?;
    ensure!(
        raw.len() as u64 <= MAX_PLAN_BYTES,
        "{} is larger than any restore plan ({} MiB at most)",
        path.display(),
        MAX_PLAN_BYTES >> 20
    );
    Ok(raw)
}

pub struct PlanOptions {
    pub store: Location,
    /// Keys a snapshot must be signed by (none: not verified, and the plan says so).
    pub trust: crate::signing::Trust,
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

/// How each disk is diagnosed and decided; saved in the plan so apply re-checks it the same way.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub grow_last: bool,
    pub keep_table: bool,
    pub nvram: bool,
}

impl PlanOptions {
    pub fn settings(&self) -> Settings {
        Settings {
            mode: self.mode,
            grow_last: self.grow_last,
            keep_table: self.keep_table,
            nvram: self.nvram,
        }
    }
}

/// Makes the plan against `store`, the store opened at `opts.store` (opened once by the
/// caller, which may go on to apply with it).
pub fn make(store: &Store, opts: &PlanOptions, progress: &dyn Progress) -> Result<Plan> {
    let (m, verification) =
        manifest::resolve(store, opts.host.as_deref(), &opts.snapshot, &opts.trust)?;
    let mapping = mapping::pair(&m, &opts.targets, &opts.maps)?;
    let wanted: Vec<_> = mapping
        .iter()
        .flat_map(|pair| m.disks[pair.disk].wanted())
        .collect();
    store.warm(&wanted);
    let mut disks = Vec::new();
    let mut rate = None;
    for pair in mapping {
        let disk = Disk::open_read(&pair.target)?;
        let (mut dp, measured) = diagnose_disk(
            store,
            &m,
            &m.disks[pair.disk],
            &disk,
            &opts.settings(),
            progress,
        )?;
        dp.mapping = pair.why;
        dp.target = std::path::absolute(&pair.target).unwrap_or(pair.target);
        rate = rate.or(measured);
        disks.push(dp);
    }
    let totals = sum_totals(&disks);
    // Writes go at about the speed the target was read, when the plan measured it.
    // Reads of a blank or cached target are far faster than writes reaching a disk, so the
    // measured rate is capped; fetched chunks also cost decompression and hashing. Without a
    // measurement (a blank or sparse target reads as holes): 500 MB/s, between what full
    // restores of the 2 GiB bench image reach here onto a file (~900 MB/s since each chunk's
    // writeback starts as it is written) and onto a loop device (~400 MB/s), and about what
    // a SATA SSD writes (scripts/bench-eta.sh checks the first ETA against the real
    // duration; at 300 MB/s the file's ETA was 3x the real time).
    let write_rate = rate.unwrap_or(500e6).clamp(20e6, 600e6);
    // Fetching and writing overlap (a pipeline): the slower of the two sets the pace.
    let estimated_seconds =
        (totals.bytes_to_write as f64 / write_rate).max(totals.bytes_to_fetch as f64 / 500e6);
    Ok(Plan {
        format: "restore-plan".into(),
        version: VERSION,
        created: crate::clock::now().rfc3339,
        store: opts.store.absolute()?,
        host: m.host.clone(),
        snapshot: m.id.clone(),
        signed_by: match verification {
            crate::signing::Verification::SignedBy { key } => Some(key),
            crate::signing::Verification::NotVerified => None,
        },
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

pub fn sum_totals(disks: &[DiskPlan]) -> Totals {
    let mut totals = Totals::default();
    for d in disks {
        totals.add(&d.totals);
    }
    totals
}

/// Reads one target against one snapshot disk and decides what it needs: the planner's
/// whole judgement of one disk, used by `plan` and by apply's proof alike. Every chunk the
/// actions fetch is checked to exist in the store before this returns.
pub fn diagnose_disk(
    store: &Store,
    m: &Manifest,
    d: &DiskRecord,
    disk: &Disk,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<(DiskPlan, Option<f64>)> {
    let findings = read::read(store, d, disk, settings, progress)?;
    let dp = decide::decide(m, d, &findings, settings);
    read::check_chunks_present(store, d, &findings, &dp.actions)?;
    Ok((dp, findings.rate))
}

/// The proof apply runs before its first write: the plan it is given must be, component by
/// component, what a fresh diagnosis of the same target says now. Returns a message naming
/// the first difference.
pub fn compare(saved: &DiskPlan, fresh: &DiskPlan) -> Result<(), String> {
    if saved.source != fresh.source
        || saved.target_size != fresh.target_size
        || saved.target_sector_size != fresh.target_sector_size
        || saved.snapshot_size != fresh.snapshot_size
    {
        return Err("the disk's source, size or sector size differs".into());
    }
    if saved.foreign != fresh.foreign {
        return Err("its foreign-disk finding differs".into());
    }
    if saved.totals != fresh.totals {
        return Err("its totals differ".into());
    }
    let ids = |d: &DiskPlan| d.actions.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    if ids(saved) != ids(fresh) {
        return Err(format!(
            "it lists the components [{}], the target needs [{}]",
            ids(saved)
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            ids(fresh)
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (s, f) in saved.actions.iter().zip(&fresh.actions) {
        if s == f {
            continue;
        }
        let (sv, fv) = (
            serde_json::to_value(s).unwrap_or_default(),
            serde_json::to_value(f).unwrap_or_default(),
        );
        let field = match (sv.as_object(), fv.as_object()) {
            (Some(so), Some(fo)) => so
                .keys()
                .chain(fo.keys())
                .find(|k| so.get(*k) != fo.get(*k))
                .cloned()
                .unwrap_or_else(|| "a value".into()),
            _ => "a value".into(),
        };
        return Err(format!("{}: {field} differs", f.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids_round_trip() {
        for id in [
            ComponentId::Table,
            ComponentId::Region("post-table-gap".into()),
            ComponentId::Partition(5),
            ComponentId::BootEntry,
            ComponentId::Fallback(1),
        ] {
            assert_eq!(ComponentId::parse(&id.to_string()).unwrap(), id);
        }
        for bad in [
            "",
            "partition:",
            "partition:x",
            "region:",
            "disk:1",
            "table:1",
        ] {
            assert!(ComponentId::parse(bad).is_err(), "{bad}");
        }
    }

    fn action(id: ComponentId) -> Action {
        let mut a = Action::new(id, "x", 0, 4 << 20);
        a.action = Verb::Patch;
        a.runs = vec![[1, 2]];
        a
    }

    fn disk(actions: Vec<Action>) -> DiskPlan {
        DiskPlan {
            source: "sda".into(),
            target: "/dev/sda".into(),
            mapping: String::new(),
            target_size: 1 << 30,
            target_sector_size: 512,
            snapshot_size: 1 << 30,
            foreign: None,
            totals: Totals::of(&actions),
            actions,
            not_checked: Vec::new(),
            notes: Vec::new(),
            fingerprint: String::new(),
        }
    }

    #[test]
    fn compare_names_the_component_and_field_that_differ() {
        let fresh = disk(vec![
            action(ComponentId::Table),
            action(ComponentId::Partition(2)),
        ]);
        assert!(compare(&fresh.clone(), &fresh).is_ok());
        let mut edited = fresh.clone();
        edited.actions[1].offset = 10 << 30;
        assert_eq!(
            compare(&edited, &fresh).unwrap_err(),
            "partition:2: offset differs"
        );
        let mut widened = fresh.clone();
        widened.actions[1].runs = vec![[0, 4]];
        assert_eq!(
            compare(&widened, &fresh).unwrap_err(),
            "partition:2: runs differ".replace("differ", "differs")
        );
        let mut dropped = fresh.clone();
        dropped.actions.remove(0);
        dropped.totals = fresh.totals.clone();
        assert!(
            compare(&dropped, &fresh)
                .unwrap_err()
                .contains("components")
        );
        let mut totals = fresh.clone();
        totals.totals.bytes_to_write += 1;
        assert!(compare(&totals, &fresh).unwrap_err().contains("totals"));
    }
}
