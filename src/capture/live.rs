//! What of a source disk is live, and how each partition can be read consistently while the
//! server runs. A partition is found in use through the devices that show it: the disk's
//! own partition devices, loop devices over the same image at the partition's offset, and
//! anything stacked on those (device-mapper, LVM). Mounted read-write filesystems are frozen
//! (FIFREEZE) only while their own blocks are read, under a watchdog process that thaws them
//! at the deadline or when this process dies, whatever the way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::disk::Disk;
use crate::disk::blockdev::{self, DeviceInfo};
use crate::disk::extfs::UsedMap;
use crate::disk::layout::DiskLayout;

/// A filesystem mounted from a device that shows (part of) a partition.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The device it is mounted from ("/dev/loop3", "/dev/mapper/vg-root").
    pub device: String,
    pub at: PathBuf,
    pub rw: bool,
    pub fstype: String,
    /// Stacked on the partition (an LVM logical volume, a dm device), not the partition itself.
    pub stacked: bool,
    /// The device-mapper device it is mounted from, when stacked.
    pub holder: Option<super::lvm::Holder>,
}

/// How a partition is used right now.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub mounts: Vec<Mount>,
    pub swap: bool,
    /// Devices stacked on it that are not mounted (an open LUKS or MD member, say).
    pub holders: Vec<String>,
}

impl Usage {
    pub fn idle(&self) -> bool {
        self.mounts.is_empty() && !self.swap && self.holders.is_empty()
    }
    pub fn rw(&self) -> bool {
        self.mounts.iter().any(|m| m.rw)
    }
}

struct MountLine {
    dev: (u32, u32),
    at: PathBuf,
    rw: bool,
    fstype: String,
}

fn mountinfo() -> Vec<MountLine> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\")
    };
    info.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some(MountLine {
                dev: blockdev::parse_dev(f.get(2)?)?,
                at: PathBuf::from(unescape(f.get(4)?)),
                rw: f.get(5)?.split(',').any(|o| o == "rw"),
                fstype: f.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

/// How deep, and how many, devices stacked on a partition are followed.
const MAX_DEPTH: usize = 8;
const MAX_STACKED: usize = 1024;

/// For each partition number of `layout` (0: the whole disk), how it is used now: also what
/// is mounted from devices stacked on it at any depth.
pub fn usage(disk: &Disk, layout: &DiskLayout) -> BTreeMap<u32, Usage> {
    let mounts = mountinfo();
    let swaps = blockdev::active_swaps();
    // Devices showing the disk: its own (with kernel partitions), and loop devices over the
    // same image file; each with where it starts on the disk and how long it is (0: to the end).
    let mut views: Vec<(DeviceInfo, u64, u64)> = Vec::new();
    let backing = if disk.is_block_device {
        let sysfs = disk.sysfs().unwrap_or_default();
        for d in blockdev::with_partitions(&sysfs) {
            let (start, len) = blockdev::geometry(&d.sysfs).unwrap_or((0, 0));
            views.push((d, start, len));
        }
        std::fs::read_to_string(sysfs.join("loop/backing_file"))
            .ok()
            .map(|b| PathBuf::from(b.trim()))
    } else {
        std::fs::canonicalize(&disk.path).ok()
    };
    if let Some(backing) = backing {
        for (d, file) in blockdev::loop_devices() {
            if file == backing && !views.iter().any(|(v, _, _)| v.dev == d.dev) {
                let (start, len) = blockdev::geometry(&d.sysfs).unwrap_or((0, 0));
                views.push((d, start, len));
            }
        }
    }
    let mut out: BTreeMap<u32, Usage> = BTreeMap::new();
    for p in &layout.partitions {
        let mut u = Usage::default();
        for (d, start, len) in &views {
            let len = if *len == 0 {
                disk.size.saturating_sub(*start)
            } else {
                *len
            };
            // A device showing this partition or part of it (a loop device whose size limit
            // was rounded down, say), or for a disk without a table, the disk.
            let inside = *start >= p.offset
                && start.saturating_add(len) <= p.offset.saturating_add(p.size)
                && len > 0;
            if !(inside || (p.number == 0 && *start == 0)) {
                continue;
            }
            let name = format!("/dev/{}", d.name);
            u.swap |= swaps.contains(&d.dev);
            for m in mounts.iter().filter(|m| m.dev == d.dev) {
                u.mounts.push(Mount {
                    device: name.clone(),
                    at: m.at.clone(),
                    rw: m.rw,
                    fstype: m.fstype.clone(),
                    stacked: false,
                    holder: None,
                });
            }
            // Everything stacked on it, however deep (a thin volume on its pool on the
            // partition, an encrypted volume on a logical volume), bounded.
            let mut stack: Vec<(String, (u32, u32), usize)> = blockdev::holders(&d.sysfs)
                .into_iter()
                .map(|h| (h, d.dev, 1))
                .collect();
            let mut seen = 0usize;
            while let Some((h, under, depth)) = stack.pop() {
                seen += 1;
                if seen > MAX_STACKED {
                    break;
                }
                let hs = PathBuf::from("/sys/block").join(&h);
                let dev = std::fs::read_to_string(hs.join("dev"))
                    .ok()
                    .and_then(|s| blockdev::parse_dev(&s));
                let dm = blockdev::dm_name(&hs);
                let hname = dm
                    .as_ref()
                    .map(|(n, _)| format!("/dev/mapper/{n}"))
                    .unwrap_or_else(|| format!("/dev/{h}"));
                let holder = dm.map(|(dm_name, uuid)| super::lvm::Holder {
                    dm_name,
                    lvm: uuid.starts_with("LVM-"),
                    under,
                    under_start: *start,
                    direct: depth == 1,
                });
                let held: Vec<&MountLine> = mounts.iter().filter(|m| Some(m.dev) == dev).collect();
                if held.is_empty() {
                    u.holders.push(hname.clone());
                }
                for m in held {
                    u.mounts.push(Mount {
                        device: hname.clone(),
                        at: m.at.clone(),
                        rw: m.rw,
                        fstype: m.fstype.clone(),
                        stacked: true,
                        holder: holder.clone(),
                    });
                }
                u.swap |= dev.is_some_and(|d| swaps.contains(&d));
                if let Some(dev) = dev
                    && depth < MAX_DEPTH
                {
                    stack.extend(
                        blockdev::holders(&hs)
                            .into_iter()
                            .map(|up| (up, dev, depth + 1)),
                    );
                }
            }
        }
        u.mounts.sort_by(|a, b| a.at.cmp(&b.at));
        u.mounts.dedup_by(|a, b| a.at == b.at);
        out.insert(p.number, u);
    }
    out
}

/// The filesystems capture must not freeze: the one holding a local store, the working
/// directory, and any file standard output or error is written to (a log).
pub fn needed_filesystems(store: Option<&Path>) -> Vec<((u32, u32), String)> {
    let dev = |m: &std::fs::Metadata| (rustix::fs::major(m.dev()), rustix::fs::minor(m.dev()));
    let mut out = Vec::new();
    if let Some(s) = store {
        // The store may not exist yet: its nearest existing ancestor holds it.
        let mut p = s.to_path_buf();
        while !p.exists() && p.pop() {}
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((dev(&m), format!("the store {}", s.display())));
        }
    }
    if let Ok(m) = std::env::current_dir().and_then(std::fs::metadata) {
        out.push((dev(&m), "the working directory".into()));
    }
    for fd in [1, 2] {
        if let Ok(m) = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            && m.is_file()
        {
            out.push((dev(&m), format!("the log this capture writes (fd {fd})")));
        }
    }
    out
}

/// Seconds since 1970, for the manifest.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The watchdog process (`restore thaw-watchdog`, this program) that undoes what capture did
/// to the running system, thawing `mounts` and removing the snapshots `remove_lvs`, when
/// capture goes away without releasing it (any way, SIGKILL too), and thaws at the deadline.
pub struct Watchdog(Option<Child>);

impl Watchdog {
    /// Starts it and waits until it has what it guards open; `undone` says what that means
    /// for the caller when it does not start.
    pub fn start(
        deadline: Duration,
        mounts: &[PathBuf],
        remove_lvs: &[String],
        undone: &str,
    ) -> Result<Watchdog> {
        let exe = std::env::current_exe().context("finding this program for the watchdog")?;
        let mut child = Command::new(exe)
            .arg("thaw-watchdog")
            .arg("--deadline-ms")
            .arg(deadline.as_millis().min(u128::from(u64::MAX)).to_string())
            .args(remove_lvs.iter().flat_map(|n| ["--remove-lv", n.as_str()]))
            .args(mounts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the watchdog")?;
        let mut ready = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut ready);
        }
        if ready.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the watchdog did not start; {undone}");
        }
        Ok(Watchdog(Some(child)))
    }

    /// Tells it everything is undone, and waits for it to end. (Dropped without this, it
    /// sees its input close and undoes what it guards itself.)
    pub fn release(&mut self) {
        if let Some(mut w) = self.0.take() {
            if let Some(mut stdin) = w.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = w.wait();
        }
    }
}

/// Filesystems frozen for the time their blocks are read. Thawed by `thaw`, on drop, and by
/// the watchdog process at the deadline or if this process dies.
pub struct Frozen {
    dirs: Vec<(PathBuf, File)>,
    watchdog: Watchdog,
    pub started: Instant,
    pub deadline: Duration,
    /// Wall-clock time of the freeze (seconds since 1970), recorded in the manifest.
    pub at_unix: f64,
}

impl Frozen {
    /// Freezes every filesystem mounted at `mounts`, after starting the watchdog that will
    /// thaw them `max` from now (plus one second) whatever happens to this process.
    pub fn freeze(mounts: &[PathBuf], max: Duration) -> Result<Frozen> {
        let mut dirs = Vec::new();
        for m in mounts {
            let f = File::open(m).with_context(|| format!("opening {}", m.display()))?;
            dirs.push((m.clone(), f));
        }
        let deadline = max + Duration::from_secs(1);
        // It has its directories open before anything is frozen.
        let watchdog = Watchdog::start(deadline, mounts, &[], "nothing was frozen")?;
        let started = Instant::now();
        let at_unix = unix_now();
        let mut frozen = Frozen {
            dirs: Vec::new(),
            watchdog,
            started,
            deadline,
            at_unix,
        };
        for (m, f) in dirs {
            blockdev::freeze(&f).with_context(|| format!("freezing {}", m.display()))?;
            eprintln!("froze {} (for at most {} s)", m.display(), max.as_secs());
            frozen.dirs.push((m, f));
        }
        Ok(frozen)
    }

    /// True once the freeze has lasted its budget.
    pub fn expired(&self) -> bool {
        self.started.elapsed() >= self.deadline - Duration::from_secs(1)
    }

    /// Thaws; fails when a filesystem was no longer frozen (the watchdog thawed it at the
    /// deadline, so what was read may be torn). Returns how long it was frozen.
    pub fn thaw(mut self) -> Result<f64> {
        let secs = self.started.elapsed().as_secs_f64();
        let mut late = Vec::new();
        for (m, f) in self.dirs.drain(..) {
            if let Err(e) = blockdev::thaw(&f) {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    late.push(m.display().to_string());
                } else {
                    return Err(anyhow::Error::new(e).context(format!("thawing {}", m.display())));
                }
            }
        }
        self.watchdog.release();
        if !late.is_empty() {
            bail!(
                "{} was thawed by the watchdog after {secs:.1} s, before its blocks were all read: raise --max-freeze or capture at a quieter time",
                late.join(", ")
            );
        }
        Ok(secs)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for (_, f) in self.dirs.drain(..) {
            let _ = blockdev::thaw(&f);
        }
        self.watchdog.release();
    }
}

/// `restore thaw-watchdog`: holds the mounts open, says "ready", and thaws them when told
/// "done" (no: the parent thawed them), when its parent goes away (EOF without "done": the
/// capture died, also by SIGKILL), or at the deadline. Snapshots in `remove_lvs` (VG/LV) are
/// removed when the parent goes away without "done" (they hold nothing up: no deadline).
pub fn watchdog(deadline: Duration, mounts: &[PathBuf], remove_lvs: &[String]) -> Result<i32> {
    let started = Instant::now();
    let dirs: Vec<(PathBuf, File)> = mounts
        .iter()
        .filter_map(|m| File::open(m).ok().map(|f| (m.clone(), f)))
        .collect();
    println!("ready");
    std::io::stdout().flush()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let done = std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "done";
        let _ = tx.send(done);
    });
    let (why, parent_gone) = match rx.recv_timeout(deadline.saturating_sub(started.elapsed())) {
        Ok(true) => return Ok(0),
        Ok(false) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            ("the capture ended without thawing", true)
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            ("the freeze reached its deadline", false)
        }
    };
    for (m, f) in &dirs {
        if blockdev::thaw(f).is_ok() {
            eprintln!("thaw watchdog: thawed {} ({why})", m.display());
        }
    }
    if remove_lvs.is_empty() || (!parent_gone && rx.recv() == Ok(true)) {
        return Ok(0);
    }
    for lv in remove_lvs {
        match super::lvm::remove_lv(lv) {
            Ok(()) => {
                eprintln!("watchdog: removed snapshot {lv} (the capture ended without removing it)")
            }
            Err(e) => eprintln!("watchdog: {e:#}"),
        }
    }
    Ok(0)
}

/// The used bytes of the filesystem mounted at `at`, from the kernel's own space map
/// (FS_IOC_GETFSMAP): everything the map does not call free, relative to its device, for a
/// partition of `size` bytes. None when the kernel has no map for it, or the map's free space
/// does not agree with the filesystem's free count.
pub fn kernel_used_map(at: &Path, size: u64) -> Option<UsedMap> {
    let dir = File::open(at).ok()?;
    let extents = blockdev::fsmap(&dir, 4 << 20).ok()??;
    let st = rustix::fs::statvfs(at).ok()?;
    // The data device: the first device the map names (a separate log or realtime device
    // comes after it).
    let data = extents.first()?.device;
    let on_data: Vec<_> = extents.iter().filter(|e| e.device == data).collect();
    let free: u64 = on_data.iter().filter(|e| e.free).map(|e| e.length).sum();
    let statfs_free = st.f_bfree.saturating_mul(st.f_frsize);
    // XFS keeps a small reserve out of f_bfree; anything beyond 1% means the map is not this
    // filesystem's (or it changed under us).
    if free.abs_diff(statfs_free) > size / 100 + (64 << 20).min(size / 50) {
        return None;
    }
    // Everything the map does not call free is used: ext4 leaves some used extents out of
    // the map (it reports free space, metadata and only some of the rest), so the used
    // blocks are the complement of the free ones.
    let mut free_ranges: Vec<(u64, u64)> = on_data
        .iter()
        .filter(|e| e.free)
        .map(|e| (e.physical, e.physical.saturating_add(e.length).min(size)))
        .filter(|(s, e)| s < e)
        .collect();
    free_ranges.sort_unstable();
    let mut map = UsedMap::default();
    let mut pos = 0u64;
    for (s, e) in free_ranges {
        if s > pos {
            map.ranges.push((pos, s - pos));
        }
        pos = pos.max(e);
    }
    if pos < size {
        map.ranges.push((pos, size - pos));
    }
    Some(map)
}

/// How a partition is read.
#[derive(Clone, Debug)]
pub enum How {
    /// Not in use (or only by unmounted stacked devices).
    Offline,
    /// Mounted read-only everywhere.
    ReadOnly,
    /// Swap: only the header page is kept.
    Swap,
    /// Frozen while read; `kernel_map`: the used blocks come from the kernel's space map.
    Freeze {
        mounts: Vec<PathBuf>,
        kernel_map: bool,
    },
    /// Logical volumes mounted read-write, read through LVM snapshots made for the capture.
    Snapshot(super::lvm::PvRead),
    /// Read until two consecutive reads are identical (small, cannot be frozen).
    DoubleRead,
    /// Read as it is, every block (--consistency allow-inconsistent).
    Inconsistent,
}

/// What --consistency allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Consistent or refused (the default).
    Auto,
    /// Store what cannot be made consistent anyway, marked inconsistent.
    AllowInconsistent,
}

/// Filesystems FIFREEZE works on.
const FREEZABLE: [&str; 5] = ["ext2", "ext3", "ext4", "xfs", "btrfs"];
/// Whether FIFREEZE works on `fstype`. Test builds can deny it with RESTORE_NOFREEZE=TYPE,...
/// (this host has no vfat to show the double read on).
fn freezable(fstype: &str) -> bool {
    #[cfg(feature = "test-hooks")]
    if std::env::var("RESTORE_NOFREEZE").is_ok_and(|v| v.split(',').any(|t| t == fstype)) {
        return false;
    }
    FREEZABLE.contains(&fstype)
}

/// Filesystems whose used blocks the kernel's space map (GETFSMAP) gives.
const KERNEL_MAP: [&str; 2] = ["ext4", "xfs"];
/// Larger filesystems that cannot be frozen are not read twice.
const DOUBLE_READ_LIMIT: u64 = 2 << 30;

/// Decides how each partition of `layout` is read, before anything is written anywhere:
/// consistent by default, or a clear refusal naming the partition and the choices.
#[allow(clippy::too_many_arguments)]
pub fn plan_reads(
    disk: &Disk,
    layout: &DiskLayout,
    policy: Policy,
    max_freeze: Duration,
    read_rate: f64,
    needed: &[((u32, u32), String)],
) -> Result<Vec<How>> {
    let usage = usage(disk, layout);
    let mut out = Vec::new();
    for p in &layout.partitions {
        let u = usage.get(&p.number).cloned().unwrap_or_default();
        let name = format!("{} of {}", p.title(), disk.path.display());
        let refuse = |why: String| -> Result<How> {
            match policy {
                Policy::AllowInconsistent => {
                    eprintln!(
                        "warning: {name} {why}; stored with every block and marked inconsistent (--consistency allow-inconsistent)"
                    );
                    Ok(How::Inconsistent)
                }
                Policy::Auto => bail!(
                    "{name} {why}; it cannot be captured consistently: unmount it or mount it read-only, or give --consistency allow-inconsistent to store it as it is (marked inconsistent); no snapshot was written"
                ),
            }
        };
        let how = if u.swap {
            How::Swap
        } else if u.idle() || (u.mounts.is_empty() && !u.holders.is_empty()) {
            How::Offline
        } else if !u.rw() {
            How::ReadOnly
        } else {
            let rw: Vec<&Mount> = u.mounts.iter().filter(|m| m.rw).collect();
            let places = rw
                .iter()
                .map(|m| format!("{} ({} on {})", m.at.display(), m.fstype, m.device))
                .collect::<Vec<_>>()
                .join(", ");
            // Logical volumes: through snapshots, when LVM can make them; else frozen.
            let lvs: Vec<(PathBuf, String, super::lvm::Holder)> = rw
                .iter()
                .filter_map(|m| Some((m.at.clone(), m.fstype.clone(), m.holder.clone()?)))
                .collect();
            let snapshot = if lvs.len() == rw.len() && lvs.iter().any(|(_, _, h)| h.lvm) {
                match super::lvm::plan(p.offset, p.size, &lvs) {
                    Ok(read) => Some(read),
                    Err(why) => {
                        eprintln!("note: {name}: not read through an LVM snapshot: {why}");
                        None
                    }
                }
            } else {
                None
            };
            let blocked = rw.iter().find_map(|m| {
                let dev = blockdev::filesystem_device(&m.at)?;
                needed
                    .iter()
                    .find(|(d, _)| *d == dev)
                    .map(|(_, what)| (m.at.clone(), what.clone()))
            });
            if let Some(read) = snapshot {
                How::Snapshot(read)
            } else if let Some((at, what)) = blocked {
                refuse(format!(
                    "is mounted read-write at {}, which holds {what}: freezing it would stop this capture",
                    at.display()
                ))?
            } else if rw.iter().all(|m| freezable(&m.fstype)) {
                // Frozen only if its blocks can be read within the budget at the rate seen.
                let used: u64 = rw
                    .iter()
                    .map(|m| {
                        rustix::fs::statvfs(&m.at)
                            .map(|s| (s.f_blocks - s.f_bfree).saturating_mul(s.f_frsize))
                            .unwrap_or(p.size)
                    })
                    .sum::<u64>()
                    .min(p.size);
                let kernel_map =
                    rw.len() == 1 && !rw[0].stacked && KERNEL_MAP.contains(&rw[0].fstype.as_str());
                let bytes = if kernel_map { used } else { p.size };
                let secs = bytes as f64 / read_rate.max(1.0);
                if secs > max_freeze.as_secs_f64() {
                    refuse(format!(
                        "is mounted read-write at {places}; reading its {} would take about {secs:.0} s at {}/s, more than --max-freeze {} s",
                        crate::units::bytes(bytes),
                        crate::units::bytes(read_rate as u64),
                        max_freeze.as_secs()
                    ))?
                } else {
                    How::Freeze {
                        mounts: rw.iter().map(|m| m.at.clone()).collect(),
                        kernel_map,
                    }
                }
            } else if p.size <= DOUBLE_READ_LIMIT {
                How::DoubleRead
            } else {
                refuse(format!(
                    "is mounted read-write at {places}, a filesystem that cannot be frozen and is too large to read twice"
                ))?
            }
        };
        out.push(how);
    }
    Ok(out)
}

/// The read rate of `disk`, from up to 64 MiB read at `offset` (for the freeze budget).
pub fn sample_rate(disk: &Disk, offset: u64, len: u64) -> f64 {
    let n = len.min(64 << 20);
    let started = Instant::now();
    let mut buf = vec![0u8; (n as usize).min(8 << 20)];
    let mut done = 0u64;
    while done < n {
        let step = (n - done).min(buf.len() as u64);
        if disk
            .read_at(&mut buf[..step as usize], offset + done)
            .is_err()
        {
            break;
        }
        done += step;
    }
    let secs = started.elapsed().as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return 100e6;
    }
    // A sample from the page cache is far faster than the disk: count on at most 500 MB/s.
    (done as f64 / secs).min(500e6)
}

/// `capture --all`: every disk of this machine that holds a mounted filesystem (also through
/// LVM) or a boot loader, except the one that holds the store.
pub fn all_disks(store: Option<&Path>) -> Result<Vec<PathBuf>> {
    let store_dev = store.and_then(|s| {
        let mut p = s.to_path_buf();
        while !p.exists() && p.pop() {}
        blockdev::filesystem_device(&p)
    });
    let mut out = Vec::new();
    let entries = std::fs::read_dir("/sys/block").context("listing /sys/block")?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let path = PathBuf::from("/dev").join(&name);
        let Ok(disk) = Disk::open_read(&path) else {
            continue;
        };
        let Ok(layout) = crate::disk::layout::read_layout(&disk) else {
            continue;
        };
        let usage = usage(&disk, &layout);
        let holds_store = store_dev.is_some_and(|sd| {
            usage
                .values()
                .flat_map(|u| &u.mounts)
                .any(|m| blockdev::filesystem_device(&m.at) == Some(sd))
        });
        if holds_store {
            eprintln!(
                "note: {} holds the store; it is not captured",
                path.display()
            );
            continue;
        }
        let mounted = usage.values().any(|u| !u.mounts.is_empty() || u.swap);
        let boots = !crate::boot::detect(&disk, &layout).0.is_empty();
        if mounted || boots {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            How::Offline => f.write_str("offline (not in use)"),
            How::ReadOnly => f.write_str("read-only (mounted read-only)"),
            How::Swap => f.write_str("swap (only its header is kept)"),
            How::Freeze { mounts, kernel_map } => write!(
                f,
                "frozen while read ({}){}",
                mounts
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if *kernel_map {
                    "; used blocks from the kernel's space map"
                } else {
                    ""
                }
            ),
            How::Snapshot(read) => write!(
                f,
                "snapshot (through an LVM snapshot of {})",
                read.volumes
                    .iter()
                    .map(|v| format!("{}/{} at {}", v.vg, v.lv, v.mount.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            How::DoubleRead => f.write_str("double-read (read until two reads agree)"),
            How::Inconsistent => f.write_str("inconsistent (read as it is, every block)"),
        }
    }
}
