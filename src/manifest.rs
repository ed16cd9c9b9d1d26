//! The snapshot manifest: one capture of one host's disks, as small JSON stored under
//! `snapshots/<host>/<id>.json`. It is written last, atomically, so it exists only when every
//! chunk and index it names is already in the store.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::boot::BootLoader;
use crate::chunk::ChunkId;
use crate::disk::Identity;
use crate::disk::layout::{PartitionInfo, TableInfo};
use crate::signing::{Trust, Verification};
use crate::store::Store;
use crate::store::backend::BackendError;

pub const FORMAT: &str = "restore-snapshot";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub chunk_size: u32,
    pub tool_version: String,
    pub disks: Vec<DiskRecord>,
    /// Boot####, BootOrder and Timeout, when the capture ran on a UEFI system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvram: Option<crate::boot::efivars::Nvram>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskRecord {
    /// How the disk was named at capture ("sda", "disk.img"): what `--map` refers to.
    pub name: String,
    pub source: String,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    #[serde(default)]
    pub identity: Identity,
    pub table: TableInfo,
    /// The raw sectors of the partition table, each stored as one object.
    pub table_sectors: Vec<TableSectorRecord>,
    pub boot_regions: Vec<RegionRecord>,
    pub partitions: Vec<PartitionRecord>,
    /// Boot loaders recognised at capture, with what each needs (core image sector list,
    /// ESP files and hashes, EXTLINUX hidden sectors).
    #[serde(default)]
    pub boot_loaders: Vec<BootLoader>,
    /// Whether the offline boot-chain check passed on the source disk at capture.
    #[serde(default)]
    pub boot_chain_whole: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableSectorRecord {
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub chunk: ChunkId,
}

/// Bytes outside partitions and the table: "boot-code" (LBA 0 up to the disk signature),
/// "post-table-gap" (up to the first partition) and "gap-<offset>" for other non-zero ranges.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegionRecord {
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub index: ChunkId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionRecord {
    #[serde(flatten)]
    pub info: PartitionInfo,
    pub index: ChunkId,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// For a filesystem captured without its free space: the object holding the used byte
    /// ranges (u64 start, u64 length pairs), its length, and how many chunks were all free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_map: Option<ChunkId>,
    #[serde(default)]
    pub used_map_len: u64,
    #[serde(default)]
    pub free_chunks: u64,
    /// How it was read: offline, read-only, frozen, snapshot, double-read, swap (contents
    /// skipped, header kept) or inconsistent. Absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// For a frozen filesystem: when the freeze began (seconds since 1970) and how long it
    /// lasted; for one read through an LVM snapshot: when the snapshot was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_seconds: Option<f64>,
}

/// How capture read a partition, so that a restore knows what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Not in use: read as it was.
    Offline,
    /// Mounted read-only: it could not change.
    ReadOnly,
    /// Mounted read-write, frozen (FIFREEZE) while its blocks were read.
    Frozen,
    /// Read from an LVM snapshot made for the capture.
    Snapshot,
    /// Could not be frozen; read until two consecutive reads were identical.
    DoubleRead,
    /// Swap: only its header is kept.
    Swap,
    /// Read while it could change (--consistency allow-inconsistent): may be torn.
    Inconsistent,
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Consistency::Offline => "offline",
            Consistency::ReadOnly => "read-only",
            Consistency::Frozen => "frozen",
            Consistency::Snapshot => "snapshot",
            Consistency::DoubleRead => "double-read",
            Consistency::Swap => "swap",
            Consistency::Inconsistent => "inconsistent",
        })
    }
}

impl PartitionRecord {
    /// The used-space map the chunks were masked with, if any.
    pub fn used_map(&self, store: &Store) -> Result<Option<crate::disk::extfs::UsedMap>> {
        let Some(id) = self.used_map else {
            return Ok(None);
        };
        let raw = store.get_chunk(&id, self.used_map_len as usize)?;
        let map = crate::disk::extfs::UsedMap::decode(&raw)
            .with_context(|| format!("used-space map of {} is corrupt", self.info.title()))?;
        Ok(Some(map))
    }
}

impl DiskRecord {
    /// The small objects a plan of this disk reads one by one: its table sectors, the
    /// indexes of its boot regions and partitions, its used-space maps.
    pub fn wanted(&self) -> Vec<crate::store::Wanted> {
        use crate::store::Wanted;
        let mut w: Vec<Wanted> = self
            .table_sectors
            .iter()
            .map(|t| Wanted::Chunk(t.chunk, t.length))
            .collect();
        w.extend(
            self.boot_regions
                .iter()
                .map(|r| Wanted::Index(r.index, r.length)),
        );
        for p in &self.partitions {
            w.push(Wanted::Index(p.index, p.info.size));
            if let Some(map) = p.used_map {
                w.push(Wanted::Chunk(map, p.used_map_len));
            }
        }
        w
    }

    pub fn sector_count(&self) -> u64 {
        self.size / u64::from(self.logical_sector_size)
    }
}

impl Manifest {
    pub fn key(host: &str, id: &str) -> String {
        format!("snapshots/{host}/{id}.json")
    }

    pub fn parse(raw: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(raw)
            .with_context(|| format!("manifest {what} is not a valid snapshot manifest"))?;
        ensure!(
            m.format == FORMAT,
            "manifest {what} is not a restore snapshot (format {:?})",
            m.format
        );
        ensure!(
            m.version == 1,
            "manifest {what} has version {} (1 supported)",
            m.version
        );
        m.check()
            .with_context(|| format!("manifest {what} is not a valid snapshot manifest"))?;
        Ok(m)
    }

    /// Every count, size and offset later code sizes a read, an allocation or a loop with is
    /// checked here, once: a damaged or hostile manifest gets one clear error.
    fn check(&self) -> Result<()> {
        valid_host(&self.host)?;
        valid_id(&self.id)?;
        ensure!(
            self.chunk_size.is_power_of_two()
                && (crate::store::MIN_CHUNK_SIZE..=crate::store::MAX_CHUNK_SIZE)
                    .contains(&self.chunk_size),
            "chunk size {} is not allowed",
            self.chunk_size
        );
        ensure!(
            !self.disks.is_empty() && self.disks.len() <= MAX_DISKS,
            "it records {} disks (1 to {MAX_DISKS} allowed)",
            self.disks.len()
        );
        let mut names = std::collections::BTreeSet::new();
        for d in &self.disks {
            ensure!(
                names.insert(d.name.as_str()) && !d.name.is_empty() && d.name.len() <= 255,
                "disk names must be unique and non-empty"
            );
            d.check().with_context(|| {
                format!("disk {:?}", d.name.chars().take(64).collect::<String>())
            })?;
        }
        if let Some(nv) = &self.nvram {
            ensure!(
                nv.variables.len() <= 4096
                    && nv
                        .variables
                        .iter()
                        .all(|(n, v)| n.len() <= 64 && v.len() <= 2 * 65536),
                "its NVRAM record is implausibly large"
            );
        }
        Ok(())
    }
}

const MAX_DISKS: usize = 64;
/// GPT entry arrays up to 4 MiB, plus one sector; an MBR sector or EBR is far smaller.
const MAX_TABLE_SECTOR: u64 = (4 << 20) + 4096;
/// Disks larger than this (16 EiB / 16) are not real.
const MAX_DISK: u64 = 1 << 60;

impl DiskRecord {
    fn check(&self) -> Result<()> {
        let within =
            |offset: u64, len: u64| offset.checked_add(len).is_some_and(|e| e <= self.size);
        ensure!(
            self.size > 0 && self.size <= MAX_DISK,
            "its size {} is not plausible",
            self.size
        );
        ensure!(
            matches!(self.logical_sector_size, 512 | 1024 | 2048 | 4096)
                && self.physical_sector_size >= self.logical_sector_size
                && self.physical_sector_size <= 65536
                && self.physical_sector_size.is_power_of_two(),
            "sector sizes {}/{} are not plausible",
            self.logical_sector_size,
            self.physical_sector_size
        );
        ensure!(
            self.table_sectors.len() <= 1024
                && self.boot_regions.len() <= 4096
                && self.partitions.len() <= 4096
                && self.boot_loaders.len() <= 64,
            "it records implausibly many table sectors, regions, partitions or boot loaders"
        );
        for t in &self.table_sectors {
            ensure!(
                t.length > 0 && t.length <= MAX_TABLE_SECTOR && within(t.offset, t.length),
                "table sector {:?} at byte {} with {} bytes lies outside the disk or is too large",
                t.name.chars().take(32).collect::<String>(),
                t.offset,
                t.length
            );
        }
        for r in &self.boot_regions {
            ensure!(
                r.length > 0 && within(r.offset, r.length) && valid_region_name(&r.name),
                "boot region {:?} at byte {} with {} bytes lies outside the disk or is misnamed",
                r.name.chars().take(32).collect::<String>(),
                r.offset,
                r.length
            );
        }
        let mut numbers = std::collections::BTreeSet::new();
        for p in &self.partitions {
            let i = &p.info;
            ensure!(
                i.size > 0 && within(i.offset, i.size) && numbers.insert(i.number),
                "partition {} at byte {} with {} bytes lies outside the disk or repeats a number",
                i.number,
                i.offset,
                i.size
            );
            ensure!(
                p.used_map_len <= crate::store::MAX_OBJECT
                    && p.used_map_len.is_multiple_of(16)
                    && (p.used_map.is_some() || p.used_map_len == 0),
                "partition {}: its used-space map of {} bytes is not plausible",
                i.number,
                p.used_map_len
            );
        }
        for l in &self.boot_loaders {
            match l {
                BootLoader::GrubBios(g) => ensure!(
                    g.sector_list.len() <= 64,
                    "its GRUB sector list is implausibly long"
                ),
                BootLoader::Uefi(u) => ensure!(
                    u.files.len() <= 100_000 && u.loaders.len() <= 16,
                    "its ESP file list is implausibly long"
                ),
                BootLoader::Extlinux(_) => {}
            }
        }
        Ok(())
    }
}

/// Region names as capture gives them: "boot-code", "post-table-gap", "gap-<offset>".
fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Snapshot ids as capture makes them ("20261129T124007Z-8a320d"): safe as a file name.
pub fn valid_id(id: &str) -> Result<()> {
    ensure!(
        !id.is_empty()
            && id.len() <= 64
            && id != "index"
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "snapshot id {id:?} is not allowed: letters, digits, '-', '_' and '.' only"
    );
    Ok(())
}

/// One line of `restore snapshots`.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    pub host: String,
    pub id: String,
    pub created: String,
    pub disks: usize,
    pub bytes: u64,
    /// With --trust: the key that signed it; None when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Why it cannot be used (not trusted, damaged), if so: never `latest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

pub fn valid_host(host: &str) -> Result<()> {
    ensure!(
        !host.is_empty()
            && host.len() <= 253
            && !host.starts_with('.')
            && !host.contains("..")
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "host name {host:?} is not allowed: use letters, digits, '-', '_' and '.'"
    );
    Ok(())
}

/// Manifests `list` loads at once.
const LIST_LOADS: usize = 4;

/// Every complete snapshot (manifests only appear once complete), optionally of one host,
/// oldest first. A snapshot that is damaged, or not signed by a trusted key (with `trust`),
/// is listed with the reason it is refused.
pub fn list(store: &Store, host: Option<&str>, trust: &Trust) -> Result<Vec<SnapshotSummary>> {
    let keys = store.snapshot_keys(host)?;
    let summarize = |host: &String, id: &String| -> SnapshotSummary {
        match load(store, host, id, trust) {
            Ok((m, v)) => SnapshotSummary {
                host: m.host.clone(),
                id: m.id.clone(),
                created: m.created.clone(),
                disks: m.disks.len(),
                bytes: m.disks.iter().map(|d| d.size).sum(),
                signed_by: match v {
                    Verification::SignedBy { key } => Some(key),
                    Verification::NotVerified => None,
                },
                refused: None,
            },
            Err(e) => SnapshotSummary {
                host: host.clone(),
                id: id.clone(),
                created: String::new(),
                disks: 0,
                bytes: 0,
                signed_by: None,
                refused: Some(format!("{e:#}")),
            },
        }
    };
    // A few manifests at once: on a far store each is a round trip, and a host's nightly
    // snapshots are many. Few, because each may be up to MAX_MANIFEST bytes.
    let slots: Vec<std::sync::Mutex<Option<SnapshotSummary>>> =
        keys.iter().map(|_| std::sync::Mutex::new(None)).collect();
    crate::parallel::for_each(&keys, LIST_LOADS, |i, (host, id)| {
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(summarize(host, id));
    });
    let mut out: Vec<SnapshotSummary> = slots
        .into_iter()
        .filter_map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    Ok(out)
}

/// Loads snapshot `id` of `host`: the names are checked before they form a key (so nothing
/// outside `snapshots/` is ever opened), the signature with `trust`, and the manifest must say
/// it is that snapshot of that host (a manifest copied elsewhere is refused).
pub fn load(
    store: &Store,
    host: &str,
    id: &str,
    trust: &Trust,
) -> Result<(Manifest, Verification)> {
    valid_host(host)?;
    valid_id(id)?;
    let key = Manifest::key(host, id);
    let raw = store
        .get_manifest(&key, crate::store::MAX_MANIFEST)
        .map_err(|e| match e {
            BackendError::NotFound(_) => anyhow::anyhow!(
                "snapshot {id} of host {host} not found in store {}",
                store.describe()
            ),
            BackendError::Other(e) => e,
        })?;
    let signature = if trust.is_empty() {
        None
    } else {
        match store.get_object(&format!("{key}.minisig"), crate::signing::MAX_SIG) {
            Ok(sig) => Some(sig),
            Err(BackendError::NotFound(_)) => None,
            Err(BackendError::Other(e)) => return Err(e),
        }
    };
    let verification = trust.verify(&raw, signature.as_deref(), host, id)?;
    let m = Manifest::parse(&raw, &key)?;
    ensure!(
        m.host == host && m.id == id,
        "manifest {key} says it is snapshot {} of host {}: a manifest is bound to where it is stored; refused",
        m.id,
        m.host
    );
    ensure!(
        m.chunk_size == store.config.chunk_size,
        "manifest {key} uses {}-byte chunks but the store uses {}",
        m.chunk_size,
        store.config.chunk_size
    );
    Ok((m, verification))
}

/// Resolves `--snapshot ID|latest` and `--host`: an id is unique across hosts in practice,
/// but a host narrows the search; `latest` needs a host unless the store has only one, and is
/// the newest snapshot that loads (and, with trust, is verified), skipping any that claims to
/// come from more than a day in the future.
pub fn resolve(
    store: &Store,
    host: Option<&str>,
    snapshot: &str,
    trust: &Trust,
) -> Result<(Manifest, Verification)> {
    if snapshot != "latest" {
        valid_id(snapshot)?;
    }
    let all = list(store, host, trust)?;
    let hosts: std::collections::BTreeSet<&str> = all.iter().map(|s| s.host.as_str()).collect();
    let pick = if snapshot == "latest" {
        if hosts.len() > 1 {
            bail!(
                "store {} holds snapshots of several hosts ({}); say which with --host",
                store.describe(),
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let horizon = crate::clock::rfc3339_after_days(1);
        let usable: Vec<&SnapshotSummary> = all.iter().filter(|s| s.refused.is_none()).collect();
        for s in usable.iter().filter(|s| s.created > horizon) {
            eprintln!(
                "warning: snapshot {} of host {} claims to be from {}, in the future: it is not taken as latest",
                s.id, s.host, s.created
            );
        }
        match usable.into_iter().rev().find(|s| s.created <= horizon) {
            Some(s) => Some(s),
            None => {
                if let Some(bad) = all.last() {
                    // Say why the newest one cannot be used.
                    return load(store, &bad.host, &bad.id, trust);
                }
                None
            }
        }
    } else {
        all.iter().rev().find(|s| s.id == snapshot)
    };
    let Some(s) = pick else {
        let hint = format!(
            "list them with `restore snapshots --store {}`",
            store.describe()
        );
        if let Some(h) = host
            && all.is_empty()
        {
            // Perhaps a mistyped host: say which hosts the store has.
            let everyone = list(store, None, trust).unwrap_or_default();
            let known: std::collections::BTreeSet<&str> =
                everyone.iter().map(|s| s.host.as_str()).collect();
            bail!(
                "store {} has no snapshots of host {h}; {}",
                store.describe(),
                if known.is_empty() {
                    "it holds no snapshots at all".to_string()
                } else {
                    format!(
                        "hosts in it: {}",
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            );
        }
        let mut near: Vec<(usize, &str)> = all
            .iter()
            .map(|s| (edit_distance(&s.id, snapshot), s.id.as_str()))
            .filter(|(d, _)| *d <= (snapshot.len() / 3).max(3))
            .collect();
        near.sort();
        near.dedup();
        let suggestion = if near.is_empty() {
            String::new()
        } else {
            format!(
                "; did you mean {}?",
                near.iter()
                    .take(3)
                    .map(|(_, id)| *id)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        };
        match host {
            Some(h) => bail!(
                "no snapshot {snapshot} of host {h} in store {}{suggestion}; {hint}",
                store.describe()
            ),
            None => bail!(
                "no snapshot {snapshot} in store {}{suggestion}; {hint}",
                store.describe()
            ),
        }
    };
    load(store, &s.host, &s.id, trust)
}

/// Levenshtein distance, for "did you mean" (ids are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
