//! The snapshot manifest: one capture of one host's disks, as small JSON stored under
//! `snapshots/<host>/<id>.json`. It is written last, atomically, so it exists only when every
//! chunk and index it names is already in the store.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::boot::BootLoader;
use crate::chunk::ChunkId;
use crate::disk::Identity;
use crate::disk::layout::{PartitionInfo, TableInfo};
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
        Ok(m)
    }
}

/// One line of `restore snapshots`.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    pub host: String,
    pub id: String,
    pub created: String,
    pub disks: usize,
    pub bytes: u64,
}

pub fn valid_host(host: &str) -> Result<()> {
    ensure!(
        !host.is_empty()
            && host.len() <= 253
            && !host.starts_with('.')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "host name {host:?} is not allowed: use letters, digits, '-', '_' and '.'"
    );
    Ok(())
}

/// Every complete snapshot (manifests only appear once complete), optionally of one host,
/// oldest first.
pub fn list(store: &Store, host: Option<&str>) -> Result<Vec<SnapshotSummary>> {
    let prefix = match host {
        Some(h) => {
            valid_host(h)?;
            format!("snapshots/{h}/")
        }
        None => "snapshots/".to_string(),
    };
    let mut out = Vec::new();
    for key in store.list(&prefix)? {
        let Some(rest) = key.strip_prefix("snapshots/") else {
            continue;
        };
        let Some((host, file)) = rest.split_once('/') else {
            continue;
        };
        let Some(id) = file.strip_suffix(".json") else {
            continue;
        };
        let m = load(store, host, id)?;
        out.push(SnapshotSummary {
            host: m.host.clone(),
            id: m.id.clone(),
            created: m.created.clone(),
            disks: m.disks.len(),
            bytes: m.disks.iter().map(|d| d.size).sum(),
        });
    }
    out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    Ok(out)
}

pub fn load(store: &Store, host: &str, id: &str) -> Result<Manifest> {
    let key = Manifest::key(host, id);
    let raw = store.get_object(&key).map_err(|e| match e {
        BackendError::NotFound(_) => anyhow::anyhow!(
            "snapshot {id} of host {host} not found in store {}",
            store.describe()
        ),
        BackendError::Other(e) => e,
    })?;
    let m = Manifest::parse(&raw, &key)?;
    ensure!(
        m.chunk_size == store.config.chunk_size,
        "manifest {key} uses {}-byte chunks but the store uses {}",
        m.chunk_size,
        store.config.chunk_size
    );
    Ok(m)
}

/// Resolves `--snapshot ID|latest` and `--host`: an id is unique across hosts in practice,
/// but a host narrows the search; `latest` needs a host unless the store has only one.
pub fn resolve(store: &Store, host: Option<&str>, snapshot: &str) -> Result<Manifest> {
    let all = list(store, host)?;
    let pick = if snapshot == "latest" {
        let hosts: std::collections::BTreeSet<&str> = all.iter().map(|s| s.host.as_str()).collect();
        if hosts.len() > 1 {
            bail!(
                "store {} holds snapshots of several hosts ({}); say which with --host",
                store.describe(),
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        all.last()
    } else {
        all.iter().rev().find(|s| s.id == snapshot)
    };
    let Some(s) = pick else {
        match host {
            Some(h) => bail!(
                "no snapshot {snapshot} of host {h} in store {}",
                store.describe()
            ),
            None => bail!("no snapshot {snapshot} in store {}", store.describe()),
        }
    };
    load(store, &s.host, &s.id)
}
