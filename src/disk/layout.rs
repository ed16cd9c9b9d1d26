//! A disk's layout as recorded in a snapshot: its partition table, the exact sectors that
//! hold the table, and its partitions. Reading a layout never writes.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::gpt::{self, GptHeader};
use super::{Disk, fs, mbr};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TableInfo {
    /// No partition table: the whole disk is one filesystem (or raw data).
    None,
    Gpt {
        disk_guid: String,
        first_usable_lba: u64,
        last_usable_lba: u64,
        entries_lba: u64,
        entry_count: u32,
        entry_size: u32,
        backup_header_lba: u64,
        backup_entries_lba: u64,
    },
    Mbr {
        disk_signature: String,
    },
}

impl TableInfo {
    pub fn kind(&self) -> &'static str {
        match self {
            TableInfo::None => "none",
            TableInfo::Gpt { .. } => "gpt",
            TableInfo::Mbr { .. } => "mbr",
        }
    }
}

/// A byte range of the disk that belongs to the partition table itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSector {
    /// "mbr", "gpt-primary-header", "gpt-primary-entries", "gpt-backup-entries",
    /// "gpt-backup-header", or "ebr-N" for the EBR in front of logical partition N.
    pub name: String,
    pub offset: u64,
    pub length: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// The number the OS and boot loaders know it by (sda1, hd0,gpt1); 0 for a whole disk.
    pub number: u32,
    pub offset: u64,
    pub size: u64,
    /// GPT type GUID, or MBR type as "0x83".
    pub type_id: String,
    /// esp, bios-boot, swap, lvm, raid, data or whole-disk.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// GPT attribute bits, or 0x80 for an active MBR partition.
    #[serde(default)]
    pub attributes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// The filesystem's own UUID and label: what tells one system's disk from another's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
}

impl PartitionInfo {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    pub fn title(&self) -> String {
        if self.number == 0 {
            return "whole disk".to_string();
        }
        let what = self.filesystem.clone().unwrap_or_else(|| self.role.clone());
        format!("partition {} ({what})", self.number)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    pub table: TableInfo,
    pub table_sectors: Vec<TableSector>,
    pub partitions: Vec<PartitionInfo>,
}

/// The state of one GPT copy (header + entry array) as found on a disk.
#[derive(Clone, Debug)]
pub struct GptCopy {
    pub lba: u64,
    pub header: Result<GptHeader, String>,
    pub entries_ok: bool,
    pub entries: Vec<u8>,
}

impl GptCopy {
    pub fn is_valid(&self) -> bool {
        self.header.is_ok() && self.entries_ok
    }

    pub fn problem(&self) -> Option<String> {
        match &self.header {
            Err(e) => Some(e.clone()),
            Ok(_) if !self.entries_ok => Some("entry array CRC mismatch".into()),
            Ok(_) => None,
        }
    }
}

pub fn read_gpt_copy(disk: &Disk, lba: u64) -> GptCopy {
    let ss = u64::from(disk.logical_sector_size);
    let sector = match lba.checked_mul(ss).filter(|o| o + ss <= disk.size) {
        Some(off) => disk.read_vec(off, ss),
        None => Err(anyhow::anyhow!("beyond the end of the disk")),
    };
    let header = sector
        .and_then(|s| GptHeader::parse(&s, lba))
        .map_err(|e| format!("{e:#}"));
    let (entries_ok, entries) = match &header {
        Ok(h) => {
            let off = h.entries_lba.saturating_mul(ss);
            let len = h.entries_sectors(ss) * ss;
            match off.checked_add(len).filter(|&end| end <= disk.size) {
                Some(_) => match disk.read_vec(off, len) {
                    Ok(e) => (h.entries_match(&e), e),
                    Err(_) => (false, Vec::new()),
                },
                None => (false, Vec::new()),
            }
        }
        Err(_) => (false, Vec::new()),
    };
    GptCopy {
        lba,
        header,
        entries_ok,
        entries,
    }
}

/// The primary copy at LBA 1 and the backup it points at (or the last LBA when it is unreadable).
pub fn read_gpt_copies(disk: &Disk) -> (GptCopy, GptCopy) {
    let ss = u64::from(disk.logical_sector_size);
    let last = (disk.size / ss).saturating_sub(1);
    let primary = read_gpt_copy(disk, 1);
    let backup_lba = match &primary.header {
        Ok(h) if h.alternate_lba > 1 && h.alternate_lba <= last => h.alternate_lba,
        _ => last,
    };
    (primary, read_gpt_copy(disk, backup_lba))
}

pub fn read_layout(disk: &Disk) -> Result<DiskLayout> {
    let ss = u64::from(disk.logical_sector_size);
    if disk.size < 2 * ss {
        return Ok(whole_disk(disk));
    }
    let lba0 = disk.read_vec(0, ss)?;
    let sectors = disk.size / ss;
    let lba1 = disk.read_vec(ss, ss)?;
    if mbr::has_protective_entry(&lba0) || &lba1[..8] == gpt::SIGNATURE {
        return read_gpt(disk);
    }
    if mbr::looks_like_mbr(&lba0, sectors) {
        return read_mbr(disk);
    }
    Ok(whole_disk(disk))
}

fn whole_disk(disk: &Disk) -> DiskLayout {
    DiskLayout {
        table: TableInfo::None,
        table_sectors: Vec::new(),
        partitions: vec![PartitionInfo {
            number: 0,
            offset: 0,
            size: disk.size,
            type_id: String::new(),
            role: "whole-disk".into(),
            guid: None,
            label: None,
            attributes: 0,
            ..with_fs(disk, 0, disk.size)
        }],
    }
}

/// The filesystem fields of a partition at `offset` (the rest default, for struct update).
fn with_fs(disk: &Disk, offset: u64, size: u64) -> PartitionInfo {
    let id = fs::identify(disk, offset, size);
    PartitionInfo {
        number: 0,
        offset,
        size,
        type_id: String::new(),
        role: String::new(),
        guid: None,
        label: None,
        attributes: 0,
        filesystem: id.kind,
        fs_uuid: id.uuid,
        fs_label: id.label,
    }
}

fn gpt_role(type_guid: &str) -> &'static str {
    match type_guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "esp",
        "21686148-6449-6E6F-744E-656564454649" => "bios-boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "lvm",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "raid",
        _ => "data",
    }
}

fn read_gpt(disk: &Disk) -> Result<DiskLayout> {
    let ss = u64::from(disk.logical_sector_size);
    let (primary, backup) = read_gpt_copies(disk);
    let source = match (&primary, &backup) {
        (p, _) if p.is_valid() => p,
        (_, b) if b.is_valid() => b,
        (p, b) => bail!(
            "GPT of {} is damaged in both copies (primary: {}; backup: {}); capture a healthy disk",
            disk.path.display(),
            p.problem().unwrap_or_default(),
            b.problem().unwrap_or_default()
        ),
    };
    let h = source.header.as_ref().expect("valid copy has a header");
    // Cross-check with the gpt crate, which also gives the OS-level view of the entries.
    // It asserts a 128-byte entry size, so it only sees tables that satisfy that.
    if h.entry_size == 128 && primary.is_valid() {
        let lb = ::gpt::disk::LogicalBlockSize::try_from(ss)
            .with_context(|| format!("GPT of {} with {ss}-byte sectors", disk.path.display()))?;
        let mut file = disk.file();
        let crate_view = ::gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open_from_device(&mut file)
            .with_context(|| format!("reading GPT of {}", disk.path.display()))?;
        let ours = gpt::parse_entries(h, &source.entries);
        if crate_view.partitions().len() != ours.len() {
            bail!(
                "GPT of {}: the two GPT copies disagree on the partitions; repair the disk before capturing it",
                disk.path.display()
            );
        }
    }
    let mut partitions = Vec::new();
    for e in gpt::parse_entries(h, &source.entries) {
        let type_id = gpt::guid_to_string(&e.type_guid);
        let offset = e.first_lba.saturating_mul(ss);
        let size = (e.last_lba + 1)
            .saturating_sub(e.first_lba)
            .saturating_mul(ss);
        if e.last_lba < e.first_lba || offset.checked_add(size).is_none_or(|end| end > disk.size) {
            bail!(
                "GPT partition {} of {} lies outside the disk (LBA {}..{})",
                e.number,
                disk.path.display(),
                e.first_lba,
                e.last_lba
            );
        }
        partitions.push(PartitionInfo {
            number: e.number,
            offset,
            size,
            role: gpt_role(&type_id).into(),
            type_id,
            guid: Some(gpt::guid_to_string(&e.part_guid)),
            label: Some(e.name).filter(|n| !n.is_empty()),
            attributes: e.attributes,
            ..with_fs(disk, offset, size)
        });
    }
    let backup_h = backup.header.as_ref().ok().filter(|_| backup.is_valid());
    let entries_len = h.entries_sectors(ss) * ss;
    let backup_header_lba = backup_h.map(|b| b.my_lba).unwrap_or(h.alternate_lba);
    let backup_entries_lba = backup_h
        .map(|b| b.entries_lba)
        .unwrap_or(backup_header_lba.saturating_sub(h.entries_sectors(ss)));
    let mut table_sectors = vec![
        TableSector {
            name: "mbr".into(),
            offset: mbr::TABLE_START,
            length: mbr::TABLE_END - mbr::TABLE_START,
        },
        TableSector {
            name: "gpt-primary-header".into(),
            offset: ss,
            length: ss,
        },
        TableSector {
            name: "gpt-primary-entries".into(),
            offset: h.entries_lba * ss,
            length: entries_len,
        },
    ];
    if backup_h.is_some() {
        table_sectors.push(TableSector {
            name: "gpt-backup-entries".into(),
            offset: backup_entries_lba * ss,
            length: entries_len,
        });
        table_sectors.push(TableSector {
            name: "gpt-backup-header".into(),
            offset: backup_header_lba * ss,
            length: ss,
        });
    }
    Ok(DiskLayout {
        table: TableInfo::Gpt {
            disk_guid: gpt::guid_to_string(&h.disk_guid),
            first_usable_lba: h.first_usable_lba,
            last_usable_lba: h.last_usable_lba,
            entries_lba: h.entries_lba,
            entry_count: h.entry_count,
            entry_size: h.entry_size,
            backup_header_lba,
            backup_entries_lba,
        },
        table_sectors,
        partitions,
    })
}

/// The most logical partitions (EBRs) followed. Linux names at most 255 partitions a disk.
const MAX_LOGICAL: usize = 256;

/// A view of the disk that refuses to read more than `budget` bytes: `mbrman` follows an EBR
/// chain for as long as it goes on, and a hostile chain names an EBR in every sector.
struct Budgeted<'a> {
    disk: &'a Disk,
    pos: u64,
    budget: u64,
}

impl std::io::Read for Budgeted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.disk.size.saturating_sub(self.pos)) as usize;
        if n as u64 > self.budget {
            self.budget = 0;
            return Err(std::io::Error::other("too many extended boot records"));
        }
        self.budget -= n as u64;
        self.disk
            .read_at(&mut buf[..n], self.pos)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Budgeted<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.disk.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

fn read_mbr(disk: &Disk) -> Result<DiskLayout> {
    let ss = u64::from(disk.logical_sector_size);
    let mut view = Budgeted {
        disk,
        pos: 0,
        budget: (MAX_LOGICAL as u64 + 1) * ss,
    };
    let table = match mbrman::MBR::read_from(&mut view, disk.logical_sector_size) {
        Ok(t) => t,
        Err(_) if view.budget < ss => bail!(
            "reading the MBR partition table of {}: its chain of extended boot records names more than {MAX_LOGICAL} logical partitions",
            disk.path.display()
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "reading the MBR partition table of {}",
                disk.path.display()
            )));
        }
    };
    let mut partitions = Vec::new();
    let mut table_sectors = vec![TableSector {
        name: "mbr".into(),
        offset: mbr::TABLE_START,
        length: mbr::TABLE_END - mbr::TABLE_START,
    }];
    for (number, e) in table.iter() {
        if e.is_unused() || mbr::is_extended(e.sys) {
            continue;
        }
        let offset = u64::from(e.starting_lba) * ss;
        let size = u64::from(e.sectors) * ss;
        if offset + size > disk.size {
            bail!(
                "MBR partition {number} of {} lies outside the disk (sectors {}+{})",
                disk.path.display(),
                e.starting_lba,
                e.sectors
            );
        }
        let role = match e.sys {
            0xEF => "esp",
            0x82 => "swap",
            0x8E => "lvm",
            0xFD => "raid",
            _ => "data",
        };
        partitions.push(PartitionInfo {
            number: number as u32,
            offset,
            size,
            type_id: format!("0x{:02x}", e.sys),
            role: role.into(),
            guid: None,
            label: None,
            attributes: u64::from(e.boot),
            ..with_fs(disk, offset, size)
        });
    }
    for (i, logical) in table.logical_partitions.iter().enumerate() {
        table_sectors.push(TableSector {
            name: format!("ebr-{}", i + 5),
            offset: u64::from(logical.absolute_ebr_lba) * ss,
            length: ss,
        });
    }
    let sig = table.header.disk_signature;
    Ok(DiskLayout {
        table: TableInfo::Mbr {
            disk_signature: format!("{:08x}", u32::from_le_bytes(sig)),
        },
        table_sectors,
        partitions,
    })
}

impl DiskLayout {
    /// Byte ranges that belong to neither a partition nor the table: where boot code, GRUB's
    /// core image in the post-MBR gap, and anything else worth keeping outside partitions live.
    pub fn unclaimed_ranges(&self, disk_size: u64) -> Vec<(u64, u64)> {
        if matches!(self.table, TableInfo::None) {
            return Vec::new();
        }
        let mut claimed: Vec<(u64, u64)> = self
            .partitions
            .iter()
            .map(|p| (p.offset, p.end()))
            .chain(
                self.table_sectors
                    .iter()
                    .map(|t| (t.offset, t.offset + t.length)),
            )
            .collect();
        claimed.sort_unstable();
        let mut out = Vec::new();
        let mut pos = 0;
        for (start, end) in claimed {
            if start > pos {
                out.push((pos, start.min(disk_size)));
            }
            pos = pos.max(end);
        }
        if pos < disk_size {
            out.push((pos, disk_size));
        }
        out.retain(|(s, e)| e > s);
        out
    }
}
