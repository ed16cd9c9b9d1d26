//! Logical volumes read through an LVM snapshot made for the capture. A partition that is an
//! LVM physical volume holds the volume group's label and metadata and the extents of its
//! logical volumes. For each mounted read-write logical volume on it, a classic snapshot is
//! made (the volume group lends it copy-on-write space), the volume's extents are read from
//! the snapshot in place of the partition, and the snapshot is removed. The label and
//! metadata areas are read before the snapshot exists, so the stored volume group is the one
//! the server had, without the snapshot. A watchdog process removes the snapshot if this
//! process dies before it does.
//!
//! The volume group is driven with the `lvm` and `dmsetup` commands the server has (it runs
//! LVM, so it has them); their output is parsed with bounds. Without them, or without room in
//! the volume group, or for a volume that is not a plain linear one on this partition (thin,
//! RAID, striped, already an origin of snapshots, spread over other disks), the filesystem is
//! frozen instead (capture/live.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::live::{Watchdog, unix_now};

use anyhow::{Context, Result, bail};

/// The tag every snapshot this capture makes carries, so a later capture finds and removes
/// one that an earlier, killed capture left behind.
pub const TAG: &str = "restore-capture";
/// Output of `lvm` and `dmsetup` read at most (a report of thousands of volumes fits).
const MAX_OUTPUT: usize = 4 << 20;
/// Label and metadata areas kept in memory at most, per physical volume.
const MAX_METADATA: u64 = 256 << 20;

/// A device-mapper device stacked on a device that shows (part of) a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its device-mapper name ("vg-root").
    pub dm_name: String,
    /// Whether LVM made it (its dm UUID starts with "LVM-").
    pub lvm: bool,
    /// The device right under it, and where the device showing the partition starts on
    /// the disk.
    pub under: (u32, u32),
    pub under_start: u64,
    /// Stacked right on the partition's device (not on another stacked device).
    pub direct: bool,
}

/// One mounted logical volume to read through a snapshot.
#[derive(Clone, Debug)]
pub struct Volume {
    pub vg: String,
    pub lv: String,
    pub mount: PathBuf,
    pub fstype: String,
    pub size: u64,
    /// Copy-on-write space for the snapshot, in extents of the volume group.
    pub snap_extents: u64,
    pub extent_size: u64,
    /// Its pieces: (offset in the volume, length, offset in the partition).
    pub segments: Vec<(u64, u64, u64)>,
}

impl Volume {
    pub fn snapshot_name(&self) -> String {
        format!("{}-{TAG}", self.lv)
    }
    pub fn snapshot_path(&self) -> PathBuf {
        PathBuf::from("/dev/mapper").join(dm_name(&self.vg, &self.snapshot_name()))
    }
}

/// How a physical volume is read through snapshots of its mounted volumes.
#[derive(Clone, Debug)]
pub struct PvRead {
    pub volumes: Vec<Volume>,
    /// Ranges of the partition outside the volume group's extents (label, metadata areas),
    /// read before any snapshot is made.
    pub metadata: Vec<(u64, u64)>,
    /// Extents no volume uses (offset in the partition, length): nothing to store. The
    /// snapshots' copy-on-write space comes from them.
    pub free: Vec<(u64, u64)>,
}

/// The device-mapper name LVM gives `vg/lv` (each '-' doubled).
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Runs `program args`, its output bounded; the error names the command and what it said.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().last().unwrap_or("").trim();
        bail!(
            "`{program} {}` failed ({}): {said}",
            args.join(" "),
            out.status
        );
    }
    if out.stdout.len() > MAX_OUTPUT {
        bail!("`{program} {}` printed more than 4 MiB", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rows of an `lvm ... --reportformat json` report, under `kind` ("lv", "pv", and
/// "pvseg" for `pvs --segments`).
fn report(text: &str, kind: &str) -> Result<Vec<Row>> {
    let v: serde_json::Value =
        serde_json::from_str(text).context("reading an LVM report (not JSON)")?;
    let mut rows = Vec::new();
    for r in v["report"].as_array().into_iter().flatten() {
        for row in r[kind].as_array().into_iter().flatten() {
            if let Some(o) = row.as_object() {
                rows.push(o.clone());
            }
        }
    }
    Ok(rows)
}

/// Rows of `lvm ARGS --reportformat json --units b --nosuffix` (sizes in bytes) under `kind`.
fn lvm_report(args: &[&str], kind: &str) -> std::result::Result<Vec<Row>, String> {
    let (cmd, rest) = args.split_first().ok_or("no lvm command")?;
    let mut all = vec![*cmd, "--reportformat", "json", "--units", "b", "--nosuffix"];
    all.extend_from_slice(rest);
    let text = run("lvm", &all).map_err(|e| e.to_string())?;
    report(&text, kind).map_err(|e| e.to_string())
}

type Row = serde_json::Map<String, serde_json::Value>;

fn field<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name).and_then(|v| v.as_str()).unwrap_or("").trim()
}

fn number(row: &Row, name: &str) -> Result<u64> {
    field(row, name)
        .parse()
        .with_context(|| format!("LVM report field {name} is not a number"))
}

/// One line of `dmsetup table`: (start, length, target, arguments), in sectors.
pub fn parse_table(text: &str) -> Vec<(u64, u64, String, Vec<String>)> {
    text.lines()
        .take(4096)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let start = f.next()?.parse().ok()?;
            let len = f.next()?.parse().ok()?;
            let target = f.next()?.to_string();
            Some((start, len, target, f.map(str::to_string).collect()))
        })
        .collect()
}

/// The pieces of a volume whose device-mapper table is `table`, as (offset in the volume,
/// length, offset in the partition) in bytes, when every piece is a linear mapping onto the
/// device `under` (which starts `under_in_part` bytes into the partition). Why not, else.
pub fn linear_segments(
    table: &str,
    under: (u32, u32),
    under_in_part: u64,
    part_size: u64,
) -> std::result::Result<Vec<(u64, u64, u64)>, String> {
    let lines = parse_table(table);
    if lines.is_empty() {
        return Err("its device-mapper table is empty".into());
    }
    let mut out = Vec::new();
    for (start, len, target, args) in lines {
        if target != "linear" {
            return Err(format!("it is a {target} volume, not a linear one"));
        }
        let dev = args
            .first()
            .and_then(|d| crate::disk::blockdev::parse_dev(d));
        let at: Option<u64> = args.get(1).and_then(|a| a.parse().ok());
        let (Some(dev), Some(at)) = (dev, at) else {
            return Err("its device-mapper table cannot be read".into());
        };
        if dev != under {
            return Err(format!(
                "it also lies on device {}:{}, not only on this partition",
                dev.0, dev.1
            ));
        }
        let (off, len, at) = (
            start.checked_mul(512),
            len.checked_mul(512),
            at.checked_mul(512)
                .and_then(|a| a.checked_add(under_in_part)),
        );
        let (Some(off), Some(len), Some(at)) = (off, len, at) else {
            return Err("its device-mapper table is out of range".into());
        };
        if at.checked_add(len).is_none_or(|e| e > part_size) {
            return Err("its device-mapper table reaches past the partition".into());
        }
        out.push((off, len, at));
    }
    Ok(out)
}

/// Whether `lvm` can be run here.
fn have_lvm() -> bool {
    Command::new("lvm")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How much copy-on-write space a snapshot of a `size`-byte volume gets: a fifth of it, at
/// least 256 MiB, at most the volume and what the volume group has free. None when the
/// volume group has less than a tenth of the volume (at least 64 MiB) free: no room.
pub fn snapshot_extents(size: u64, vg_free: u64, extent: u64) -> Option<u64> {
    let extent = extent.max(1);
    let want = (size / 5).max(256 << 20).min(size);
    let least = (size / 10).max(64 << 20).min(size);
    let have = vg_free.min(want);
    (have >= least).then(|| have.div_ceil(extent).min(vg_free / extent).max(1))
}

/// Plans reading the partition (`part_offset`, `part_size` on the disk) through snapshots of
/// the read-write mounts in `mounts` (mount point, filesystem type, holder), all of them
/// logical volumes on it. Err says why not (then the caller freezes instead).
pub fn plan(
    part_offset: u64,
    part_size: u64,
    mounts: &[(PathBuf, String, Holder)],
) -> std::result::Result<PvRead, String> {
    if mounts.is_empty() || mounts.iter().any(|(_, _, h)| !h.lvm) {
        return Err("not every read-write mount is an LVM logical volume".into());
    }
    if let Some((_, _, h)) = mounts.iter().find(|(_, _, h)| !h.direct) {
        return Err(format!(
            "{} is stacked on other devices (a thin pool, encryption, RAID), not directly on this partition",
            h.dm_name
        ));
    }
    if !have_lvm() {
        return Err("the lvm command is not installed".into());
    }
    let lvs = lvm_report(
        &[
            "lvs",
            "-o",
            "vg_name,lv_name,lv_attr,lv_size,vg_free,vg_extent_size,lv_kernel_major,lv_kernel_minor",
        ],
        "lv",
    )?;
    let mut volumes = Vec::new();
    let mut under = None;
    for (at, fstype, h) in mounts {
        let dev = crate::disk::blockdev::filesystem_device(at);
        let row = lvs
            .iter()
            .find(|r| {
                Some((
                    field(r, "lv_kernel_major").parse().unwrap_or(u32::MAX),
                    field(r, "lv_kernel_minor").parse().unwrap_or(u32::MAX),
                )) == dev
                    || dm_name(field(r, "vg_name"), field(r, "lv_name")) == h.dm_name
            })
            .ok_or_else(|| format!("LVM does not list {}", h.dm_name))?;
        let (vg, lv) = (field(row, "vg_name"), field(row, "lv_name"));
        let attr = field(row, "lv_attr");
        // A plain volume ('-') that is no origin of snapshots yet ('o'), no thin volume ('V').
        if !attr.starts_with('-') {
            return Err(format!(
                "{vg}/{lv} is not a plain logical volume (attributes {attr})"
            ));
        }
        let size = number(row, "lv_size").map_err(|e| e.to_string())?;
        let free = number(row, "vg_free").map_err(|e| e.to_string())?;
        let extent = number(row, "vg_extent_size").map_err(|e| e.to_string())?;
        // Every snapshot of this volume group shares its free space.
        let lent: u64 = volumes
            .iter()
            .filter(|v: &&Volume| v.vg == vg)
            .map(|v| v.snap_extents * v.extent_size)
            .sum();
        let snap_extents =
            snapshot_extents(size, free.saturating_sub(lent), extent).ok_or_else(|| {
                format!(
                    "volume group {vg} has {} free, too little for a snapshot of {lv} ({})",
                    crate::units::bytes(free.saturating_sub(lent)),
                    crate::units::bytes(size)
                )
            })?;
        let table = run("dmsetup", &["table", &h.dm_name]).map_err(|e| e.to_string())?;
        let in_part = h.under_start.checked_sub(part_offset).unwrap_or(u64::MAX);
        let segments = linear_segments(&table, h.under, in_part, part_size)
            .map_err(|e| format!("{vg}/{lv}: {e}"))?;
        under = Some((h.under, in_part));
        volumes.push(Volume {
            vg: vg.to_string(),
            lv: lv.to_string(),
            mount: at.clone(),
            fstype: fstype.clone(),
            size,
            snap_extents,
            extent_size: extent,
            segments,
        });
    }
    // The physical volume's data area, from its label: everything outside it is label and
    // metadata, read before the snapshots change the metadata.
    let (under, in_part) = under.ok_or("no volume")?;
    let pvs = lvm_report(
        &[
            "pvs",
            "-o",
            "pv_name,pe_start,pv_pe_count,vg_extent_size,dev_size",
        ],
        "pv",
    )?;
    let pv = pvs
        .iter()
        .find(|r| {
            crate::disk::blockdev::device_number(Path::new(field(r, "pv_name"))) == Some(under)
        })
        .ok_or("LVM lists no physical volume on this partition")?;
    let num = |n| number(pv, n).map_err(|e| e.to_string());
    let (pe_start, count, extent, dev_size) = (
        num("pe_start")?,
        num("pv_pe_count")?,
        num("vg_extent_size")?,
        num("dev_size")?,
    );
    let data_end = count
        .checked_mul(extent)
        .and_then(|d| d.checked_add(pe_start))
        .filter(|e| *e <= dev_size)
        .ok_or("the physical volume's extents reach past it")?;
    let metadata: Vec<(u64, u64)> = [(0, pe_start), (data_end, dev_size - data_end)]
        .into_iter()
        .filter(|(_, l)| *l > 0)
        .map(|(s, l)| (in_part + s, l.min(part_size.saturating_sub(in_part + s))))
        .filter(|(_, l)| *l > 0)
        .collect();
    if metadata.iter().map(|(_, l)| l).sum::<u64>() > MAX_METADATA {
        return Err("its metadata areas are larger than 256 MiB".into());
    }
    let pv_name = field(pv, "pv_name").to_string();
    let segs = lvm_report(
        &[
            "pvs",
            "--segments",
            "-o",
            "pv_name,pvseg_start,pvseg_size,lv_name",
            &pv_name,
        ],
        "pvseg",
    )?;
    if segs.is_empty() {
        return Err(format!("LVM lists no extents of {pv_name}"));
    }
    let free = free_extents(&segs, in_part, pe_start, extent, data_end)?;
    Ok(PvRead {
        volumes,
        metadata,
        free,
    })
}

/// The free extents of a physical volume (rows of `pvs --segments`: those naming no
/// volume), as (offset in the partition, length).
fn free_extents(
    segs: &[Row],
    in_part: u64,
    pe_start: u64,
    extent: u64,
    data_end: u64,
) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut free = Vec::new();
    for row in segs.iter().filter(|r| field(r, "lv_name").is_empty()) {
        let (start, count) = (
            number(row, "pvseg_start").map_err(|e| e.to_string())?,
            number(row, "pvseg_size").map_err(|e| e.to_string())?,
        );
        let at = start
            .checked_mul(extent)
            .and_then(|s| s.checked_add(pe_start));
        let len = count.checked_mul(extent);
        match (at, len) {
            (Some(at), Some(len)) if at.checked_add(len).is_some_and(|e| e <= data_end) => {
                free.push((in_part + at, len))
            }
            _ => return Err("LVM lists free extents beyond the physical volume".into()),
        }
    }
    Ok(free)
}

/// Removes snapshots that an earlier capture made and could not remove (it was killed):
/// those tagged restore-capture and not open.
pub fn remove_leftovers() {
    let tags = format!("lv_tags={TAG}");
    let Ok(rows) = lvm_report(&["lvs", "-o", "vg_name,lv_name,lv_attr", "-S", &tags], "lv") else {
        return;
    };
    for row in rows {
        let (vg, lv, attr) = (
            field(&row, "vg_name"),
            field(&row, "lv_name"),
            field(&row, "lv_attr"),
        );
        // Snapshots ('s'), not open (sixth attribute 'o'): an earlier capture's.
        if attr.starts_with('s') && attr.chars().nth(5) != Some('o') {
            match run("lvm", &["lvremove", "--yes", &format!("{vg}/{lv}")]) {
                Ok(_) => eprintln!("note: removed snapshot {vg}/{lv}, left by an earlier capture"),
                Err(e) => eprintln!("warning: snapshot {vg}/{lv} left by an earlier capture: {e}"),
            }
        }
    }
}

/// Snapshots made for a capture: removed by `remove`, on drop, and by the watchdog process
/// if this process dies first.
pub struct Snapshots {
    made: Vec<String>,
    watchdog: Watchdog,
    /// Wall-clock time they were made (seconds since 1970), recorded in the manifest.
    pub at_unix: f64,
}

impl Snapshots {
    /// Makes a snapshot of each volume, after starting the watchdog that removes them if this
    /// process dies.
    pub fn make(volumes: &[Volume]) -> Result<Snapshots> {
        remove_leftovers();
        let names: Vec<String> = volumes
            .iter()
            .map(|v| format!("{}/{}", v.vg, v.snapshot_name()))
            .collect();
        let watchdog = Watchdog::start(
            Duration::from_millis(u64::MAX),
            &[],
            &names,
            "no snapshot was made",
        )?;
        let mut snaps = Snapshots {
            made: Vec::new(),
            watchdog,
            at_unix: unix_now(),
        };
        for (v, name) in volumes.iter().zip(&names) {
            run(
                "lvm",
                &[
                    "lvcreate",
                    "--yes",
                    "--snapshot",
                    "--name",
                    &v.snapshot_name(),
                    "--extents",
                    &v.snap_extents.to_string(),
                    "--addtag",
                    TAG,
                    &format!("{}/{}", v.vg, v.lv),
                ],
            )
            .with_context(|| format!("making a snapshot of {}/{}", v.vg, v.lv))?;
            snaps.made.push(name.clone());
            eprintln!(
                "made snapshot {name} of {}/{} ({} of copy-on-write space)",
                v.vg,
                v.lv,
                crate::units::bytes(v.snap_extents * v.extent_size)
            );
        }
        Ok(snaps)
    }

    /// Fails when a snapshot ran out of copy-on-write space (what was read from it is then
    /// not the volume as it was).
    pub fn check(&self) -> Result<()> {
        for name in &self.made {
            let (vg, lv) = name.split_once('/').unwrap_or(("", name));
            let status = run("dmsetup", &["status", &dm_name(vg, lv)])?;
            if status.contains("Invalid") || status.contains("Overflow") {
                bail!(
                    "snapshot {name} ran out of copy-on-write space while it was read (the volume changed faster than its free space allows): capture at a quieter time or free space in the volume group; no snapshot was written"
                );
            }
        }
        Ok(())
    }

    /// Removes the snapshots.
    pub fn remove(mut self) -> Result<()> {
        let r = self.remove_all();
        self.watchdog.release();
        r
    }

    fn remove_all(&mut self) -> Result<()> {
        let mut failed = None;
        for name in std::mem::take(&mut self.made) {
            if let Err(e) = remove_lv(&name) {
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let _ = self.remove_all();
        self.watchdog.release();
    }
}

/// `lvremove` of `vg/lv`, tried a few times (udev or a reader may hold it open a moment).
pub fn remove_lv(name: &str) -> Result<()> {
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        match run("lvm", &["lvremove", "--yes", name]) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("lvremove failed"))
        .context(format!(
            "removing snapshot {name}: remove it with `lvremove {name}`"
        )))
}

/// The used-space map of a partition read through snapshots of its volumes, given each
/// volume's own map (from its snapshot; None: every block of it is kept). Free extents are
/// left out; everything else (label, metadata, other volumes) is kept. None when there is
/// nothing to leave out.
pub fn used_map(
    part_size: u64,
    read: &PvRead,
    maps: &[Option<crate::disk::extfs::UsedMap>],
) -> Option<crate::disk::extfs::UsedMap> {
    let volumes = &read.volumes;
    if maps.iter().all(Option::is_none) && read.free.is_empty() {
        return None;
    }
    // Neither the volumes nor the free extents are kept whole.
    let mut segs: Vec<(u64, u64)> = volumes
        .iter()
        .flat_map(|v| v.segments.iter().map(|&(_, len, at)| (at, len)))
        .chain(read.free.iter().copied())
        .collect();
    segs.sort_unstable();
    let mut ranges = Vec::new();
    let mut pos = 0;
    for &(at, len) in &segs {
        if at > pos {
            ranges.push((pos, at - pos));
        }
        pos = pos.max(at + len);
    }
    if pos < part_size {
        ranges.push((pos, part_size - pos));
    }
    for (v, m) in volumes.iter().zip(maps) {
        for &(off, len, at) in &v.segments {
            match m {
                None => ranges.push((at, len)),
                Some(m) => {
                    for &(s, l) in &m.ranges {
                        let (lo, hi) = (s.max(off), (s + l).min(off + len));
                        if lo < hi {
                            ranges.push((at + (lo - off), hi - lo));
                        }
                    }
                }
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, l) in ranges {
        match merged.last_mut() {
            Some((ms, ml)) if s <= *ms + *ml => *ml = (*ml).max(s + l - *ms),
            _ => merged.push((s, l)),
        }
    }
    Some(crate::disk::extfs::UsedMap { ranges: merged })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_names_double_dashes() {
        assert_eq!(dm_name("vg", "root"), "vg-root");
        assert_eq!(dm_name("my-vg", "data-1"), "my--vg-data--1");
    }

    #[test]
    fn linear_tables_map_onto_the_partition() {
        let t = "0 204800 linear 254:17 2048\n204800 4096 linear 254:17 409600\n";
        assert_eq!(
            linear_segments(t, (254, 17), 0, 1 << 30).unwrap(),
            vec![
                (0, 204800 * 512, 2048 * 512),
                (204800 * 512, 4096 * 512, 409600 * 512)
            ]
        );
        // A loop device that starts 1 MiB into the partition.
        assert_eq!(
            linear_segments("0 8 linear 7:3 0", (7, 3), 1 << 20, 1 << 30).unwrap(),
            vec![(0, 4096, 1 << 20)]
        );
        for (table, why) in [
            ("0 8 striped 2 128 254:17 0 254:18 0", "striped"),
            ("0 8 linear 254:18 0", "also lies on"),
            ("0 8 thin 254:3 1", "thin"),
            ("", "empty"),
            ("0 8 linear 254:17 xyz", "cannot be read"),
            ("0 8 linear 254:17 2097152", "past the partition"),
            ("0 18446744073709551615 linear 254:17 0", "out of range"),
        ] {
            let e = linear_segments(table, (254, 17), 0, 1 << 30).unwrap_err();
            assert!(e.contains(why), "{table}: {e}");
        }
    }

    #[test]
    fn snapshot_space_is_bounded_by_the_volume_and_the_free_space() {
        const M: u64 = 1 << 20;
        // 10 GiB volume, plenty free: a fifth.
        assert_eq!(snapshot_extents(10240 * M, 100 << 30, 4 * M), Some(512));
        // Small volume: all of it.
        assert_eq!(snapshot_extents(96 * M, 1 << 30, 4 * M), Some(24));
        // Only a little free: what there is, if it is a tenth.
        assert_eq!(snapshot_extents(10240 * M, 1100 * M, 4 * M), Some(275));
        assert_eq!(snapshot_extents(10240 * M, 1000 * M, 4 * M), None);
        assert_eq!(snapshot_extents(96 * M, 0, 4 * M), None);
    }

    #[test]
    fn a_volume_map_is_placed_where_its_extents_lie() {
        use crate::disk::extfs::UsedMap;
        let v = |segments| Volume {
            vg: "vg".into(),
            lv: "data".into(),
            mount: "/mnt".into(),
            fstype: "ext4".into(),
            size: 0,
            snap_extents: 1,
            extent_size: 1,
            segments,
        };
        // A 1000-byte partition: label 0..100, the volume in two pieces (100..400 holds its
        // bytes 0..300, 600..800 its bytes 300..500), free extents elsewhere.
        let mut read = PvRead {
            volumes: vec![v(vec![(0, 300, 100), (300, 200, 600)])],
            metadata: vec![(0, 100)],
            free: vec![],
        };
        let map = UsedMap {
            ranges: vec![(0, 10), (250, 100)],
        };
        assert_eq!(
            used_map(1000, &read, &[Some(map.clone())]).unwrap().ranges,
            vec![(0, 110), (350, 300), (800, 200)]
        );
        assert_eq!(
            used_map(1000, &read, &[None]),
            None,
            "no map: every block, as without a mask"
        );
        // Free extents at 400..600 and 900..1000 are left out, with or without a map.
        read.free = vec![(400, 200), (900, 100)];
        assert_eq!(
            used_map(1000, &read, &[Some(map)]).unwrap().ranges,
            vec![(0, 110), (350, 50), (600, 50), (800, 100)]
        );
        assert_eq!(
            used_map(1000, &read, &[None]).unwrap().ranges,
            vec![(0, 400), (600, 300)]
        );
    }

    #[test]
    fn free_extents_come_from_segments_without_a_volume() {
        let text = r#"{"report":[{"pvseg":[
            {"pv_name":"/dev/vda1","pvseg_start":"0","pvseg_size":"24","lv_name":"data"},
            {"pv_name":"/dev/vda1","pvseg_start":"24","pvseg_size":"23","lv_name":""}]}]}"#;
        let rows = report(text, "pvseg").unwrap();
        const M: u64 = 1 << 20;
        assert_eq!(
            free_extents(&rows, 0, M, 4 * M, M + 47 * 4 * M).unwrap(),
            vec![(M + 24 * 4 * M, 23 * 4 * M)]
        );
        assert!(free_extents(&rows, 0, M, 4 * M, M + 40 * 4 * M).is_err());
    }

    #[test]
    fn reports_are_read_from_lvm_json() {
        let text =
            r#"{"report":[{"lv":[{"vg_name":"vg","lv_name":"data","lv_size":"100663296"}]}]}"#;
        let rows = report(text, "lv").unwrap();
        assert_eq!(field(&rows[0], "lv_name"), "data");
        assert_eq!(number(&rows[0], "lv_size").unwrap(), 100663296);
        assert!(number(&rows[0], "vg_free").is_err());
        assert!(report("not json", "lv").is_err());
        assert!(report("{}", "lv").unwrap().is_empty());
    }
}
