//! Command-line parsing and output. Flags are parsed once into options for the core; clap
//! types never reach capture, plan or apply.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::apply::{self, ApplyOptions};
use crate::boot::Firmware;
use crate::capture::{self, CaptureOptions};
use crate::manifest;
use crate::plan::{self, Mode, Plan, PlanOptions};
use crate::progress::{self, ProgressMode};
use crate::store::{self, Location, Store};
use crate::units;

/// Everything a command prints on standard output goes through here. A closed pipe
/// (`restore plan | head -1`) ends the output quietly and the command exits with its normal
/// code; any other failure to write is reported once, at the end, as an error.
macro_rules! out {
    ($($arg:tt)*) => { crate::cli::write_stdout(format_args!($($arg)*)) };
}
macro_rules! outln {
    ($($arg:tt)*) => { crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDOUT_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

pub fn write_stdout(args: std::fmt::Arguments) {
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut slot = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(format!("writing to standard output: {e}"));
        }
    }
}

/// A failure to write standard output other than a closed pipe, if there was one.
pub fn stdout_error() -> Option<String> {
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Exit code of `plan --detailed-exitcode` when the plan has something to write.
pub const EXIT_CHANGES: i32 = 2;

/// `restore --version`: a test build says so, since only it honours the test hooks.
#[cfg(feature = "test-hooks")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test hooks)");
#[cfg(not(feature = "test-hooks"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(
    name = "restore",
    version = VERSION,
    about = "Bare-metal restore that repairs only what is broken"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// PEM file of CA certificates to trust for https:// stores and S3 endpoints (a private CA).
    #[arg(long, global = true, env = "RESTORE_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Capture disks (image files or block devices) into a store as a new snapshot.
    Capture(CaptureArgs),
    /// List the snapshots in a store.
    Snapshots(SnapshotsArgs),
    /// Show one snapshot: its disks, tables, boot regions and partitions.
    Show(ShowArgs),
    /// Compare target disks with a snapshot and say what a restore would write (read-only).
    Plan(PlanArgs),
    /// Write what a plan says: `apply PLAN`, or `apply --store S DISK...` to plan and apply.
    Apply(ApplyArgs),
    /// Show what is on a disk now: identity, sizes, table, partitions, filesystems, boot loader.
    Probe(ProbeArgs),
    /// Check a disk's boot chain offline; exit 0 when it is whole, 1 when a link is broken.
    CheckBoot(CheckBootArgs),
}

#[derive(Args)]
struct CheckBootArgs {
    /// Compare with the boot bytes and loaders recorded in a snapshot of this store.
    #[arg(long, env = "RESTORE_STORE")]
    store: Option<String>,
    /// Judge only the path of this firmware (the rescue system passes the one it booted by);
    /// without it, every path the disk is set up for must be whole.
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    #[arg(long)]
    host: Option<String>,
    /// Snapshot id, or "latest" (with --store).
    #[arg(long, default_value = "latest")]
    snapshot: String,
    /// Which disk of the snapshot to compare with (default: the only one, or the one of the same size).
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    json: bool,
    disk: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FirmwareArg {
    Bios,
    Uefi,
}

#[derive(Args)]
struct Common {
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Do not show progress.
    #[arg(long)]
    no_progress: bool,
}

impl Common {
    fn progress(&self) -> Box<dyn progress::Progress> {
        progress::for_mode(if self.no_progress {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        })
    }
}

#[derive(Args)]
struct CaptureArgs {
    /// Store: a directory or file:// URL (created on first capture), or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    /// Name of the host the disks belong to.
    #[arg(long)]
    host: String,
    /// Chunk size for a new store, in bytes (power of two, 256 KiB to 16 MiB).
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Keep every block, also the free space of ext2/3/4 filesystems (an exact image).
    #[arg(long)]
    all_blocks: bool,
    #[command(flatten)]
    common: Common,
    /// Disks to capture.
    #[arg(required = true)]
    disks: Vec<PathBuf>,
}

#[derive(Args)]
struct SnapshotsArgs {
    /// Store: a directory, file://, http(s)://HOST/PATH or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    /// Snapshot id, or "latest".
    snapshot: String,
    /// Store: a directory, file://, http(s)://HOST/PATH or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Selection {
    /// Store: a directory, file://, http(s)://HOST/PATH or s3://BUCKET/PREFIX (or set
    /// RESTORE_STORE). A saved plan carries its own.
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    host: Option<String>,
    /// Snapshot id, or "latest".
    #[arg(long, default_value = "latest")]
    snapshot: String,
    /// Check only tables, boot regions and critical chunks (well under a second).
    #[arg(long)]
    quick: bool,
    /// Pair a snapshot disk with a target explicitly: SOURCE is the disk's name in the
    /// snapshot (see `restore show`), TARGET a device or image. Repeatable.
    #[arg(long = "map", value_name = "SOURCE=TARGET")]
    maps: Vec<String>,
    /// On a larger target, extend the last partition to the end of the disk (its
    /// filesystem is not grown).
    #[arg(long)]
    grow_last: bool,
    /// Never create UEFI boot entries in this machine's NVRAM.
    #[arg(long)]
    no_nvram: bool,
    /// Keep the target's own partition table (a new layout) and restore each partition into
    /// the target partition of the same number; boot loaders are patched for moved partitions.
    #[arg(long, conflicts_with = "grow_last")]
    keep_table: bool,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    sel: Selection,
    /// Save the plan for `restore apply`.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Exit 0 when nothing needs doing and 2 when something does.
    #[arg(long)]
    detailed_exitcode: bool,
    #[command(flatten)]
    common: Common,
    /// Target disks (paired with snapshot disks by serial, then size; or --map).
    disks: Vec<PathBuf>,
}

#[derive(Args)]
struct ApplyArgs {
    #[command(flatten)]
    sel: Selection,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Re-read everything written and check its hash.
    #[arg(long)]
    verify: bool,
    /// Chunks fetched and written at once (memory use is about this many chunks).
    #[arg(long, default_value_t = 16)]
    jobs: usize,
    /// Write to a target that holds another system's data (the plan lists what it destroys).
    #[arg(long)]
    overwrite_foreign: bool,
    #[command(flatten)]
    common: Common,
    /// A saved plan, or with --store the target disks.
    targets: Vec<PathBuf>,
}

#[derive(Args)]
struct ProbeArgs {
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Disk (block device or image file) to look at.
    disk: PathBuf,
}

pub fn run(cli: Cli) -> Result<i32> {
    store::remote::set_options(store::remote::RemoteOptions {
        ca_cert: cli.ca_cert,
    });
    match cli.command {
        Command::Capture(a) => run_capture(a),
        Command::Snapshots(a) => run_snapshots(a),
        Command::Show(a) => run_show(a),
        Command::Plan(a) => run_plan(a),
        Command::Apply(a) => run_apply(a),
        Command::Probe(a) => run_probe(a),
        Command::CheckBoot(a) => run_check_boot(a),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    outln!("{text}");
    Ok(())
}

fn run_capture(a: CaptureArgs) -> Result<i32> {
    let opts = CaptureOptions {
        all_blocks: a.all_blocks,
        store: Location::parse(&a.store)?,
        host: a.host,
        disks: a.disks,
        chunk_size: a.chunk_size,
    };
    let progress = a.common.progress();
    let r = capture::capture(&opts, progress.as_ref())?;
    if a.common.json {
        let mut v = serde_json::to_value(&r)?;
        v["id"] = serde_json::Value::String(r.snapshot_id.clone());
        print_json(&v)?;
    } else {
        if r.store_created {
            eprintln!("created store {}", r.store);
        }
        eprintln!(
            "captured {} disk(s), {} in {:.1} s ({}/s): {} chunks, {} new ({} stored), {} all-zero, {} free space",
            r.disks,
            units::bytes(r.bytes_read),
            r.seconds,
            units::bytes((r.bytes_read as f64 / r.seconds.max(1e-3)) as u64),
            r.chunks,
            r.new_chunks,
            units::bytes(r.uploaded_bytes),
            r.zero_chunks,
            r.free_chunks
        );
        outln!("{}", r.snapshot_id);
    }
    Ok(0)
}

fn run_snapshots(a: SnapshotsArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let list = manifest::list(&store, a.host.as_deref())?;
    if a.json {
        print_json(&list)?;
    } else if list.is_empty() {
        outln!("no snapshots in {}", store.describe());
    } else {
        outln!(
            "{:<24} {:<24} {:<28} {:>5} {:>10}",
            "HOST",
            "SNAPSHOT",
            "CREATED",
            "DISKS",
            "SIZE"
        );
        for s in list {
            outln!(
                "{:<24} {:<24} {:<28} {:>5} {:>10}",
                s.host,
                s.id,
                s.created,
                s.disks,
                units::bytes(s.bytes)
            );
        }
    }
    Ok(0)
}

fn run_show(a: ShowArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let m = manifest::resolve(&store, a.host.as_deref(), &a.snapshot)?;
    if a.json {
        print_json(&m)?;
        return Ok(0);
    }
    outln!(
        "snapshot {} of host {}, created {}, chunk size {}",
        m.id,
        m.host,
        m.created,
        units::bytes(u64::from(m.chunk_size))
    );
    for d in &m.disks {
        outln!(
            "\ndisk {} ({}): {} ({} bytes), {}-byte sectors, table {}",
            d.name,
            d.source,
            units::bytes(d.size),
            d.size,
            d.logical_sector_size,
            d.table.kind()
        );
        let id = &d.identity;
        if id.model.is_some() || id.serial.is_some() || id.wwn.is_some() {
            outln!(
                "  model {} serial {} wwn {}",
                id.model.as_deref().unwrap_or("-"),
                id.serial.as_deref().unwrap_or("-"),
                id.wwn.as_deref().unwrap_or("-")
            );
        }
        for r in &d.boot_regions {
            outln!(
                "  boot region {:<16} at {:>12}  {:>10}",
                r.name,
                r.offset,
                units::bytes(r.length)
            );
        }
        for p in &d.partitions {
            let i = &p.info;
            outln!(
                "  {:<28} at {:>12}  {:>10}  {:<10} {:<5} {}{}",
                i.title(),
                i.offset,
                units::bytes(i.size),
                i.role,
                i.filesystem.as_deref().unwrap_or("-"),
                i.label
                    .as_deref()
                    .map(|l| format!("\"{l}\" "))
                    .unwrap_or_default(),
                format_args!("{} chunks ({} zero)", p.chunks, p.zero_chunks)
            );
        }
    }
    Ok(0)
}

/// The store from --store, else RESTORE_STORE.
fn store_arg(sel: &Selection) -> Option<String> {
    sel.store.clone().or_else(|| {
        std::env::var("RESTORE_STORE")
            .ok()
            .filter(|s| !s.is_empty())
    })
}

fn plan_options(sel: &Selection, disks: Vec<PathBuf>) -> Result<PlanOptions> {
    let Some(store) = store_arg(sel) else {
        bail!("no store given: pass --store or set RESTORE_STORE");
    };
    Ok(PlanOptions {
        store: Location::parse(&store)?,
        host: sel.host.clone(),
        snapshot: sel.snapshot.clone(),
        targets: disks,
        maps: sel
            .maps
            .iter()
            .map(|m| plan::mapping::parse_map(m))
            .collect::<Result<_>>()?,
        mode: if sel.quick { Mode::Quick } else { Mode::Deep },
        grow_last: sel.grow_last,
        nvram: !sel.no_nvram,
        keep_table: sel.keep_table,
    })
}

/// `plan -o FILE` may replace an older plan, never a target of the plan or any other file.
fn check_plan_output(path: &std::path::Path, opts: &PlanOptions) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let targets = opts.targets.iter().chain(opts.maps.iter().map(|(_, t)| t));
    for t in targets {
        let same = std::fs::metadata(t).is_ok_and(|m| {
            (m.dev() == meta.dev() && m.ino() == meta.ino())
                || (m.rdev() != 0 && m.rdev() == meta.rdev())
        });
        if same {
            bail!(
                "refusing to save the plan to \"{}\": that is target {} of this plan; choose another file with -o",
                path.display(),
                t.display()
            );
        }
    }
    if !Plan::is_plan_file(path) {
        bail!(
            "refusing to save the plan to \"{}\": it exists and is not a restore plan; choose another file with -o, or remove it",
            path.display()
        );
    }
    Ok(())
}

/// Saves a plan durably and privately: 0600, temp name, fsync, rename, fsync the directory.
fn save_plan(path: &std::path::Path, plan: &Plan) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("-o \"{}\" names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(plan)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("saving the plan to \"{}\"", path.display()))
}

fn run_plan(a: PlanArgs) -> Result<i32> {
    let opts = plan_options(&a.sel, a.disks)?;
    if let Some(path) = &a.output {
        check_plan_output(path, &opts)?;
    }
    let progress = a.common.progress();
    let plan = plan::make(&Store::open(&opts.store)?, &opts, progress.as_ref())?;
    if let Some(path) = &a.output {
        check_plan_output(path, &opts)?;
        save_plan(path, &plan)?;
    }
    if a.common.json {
        print_json(&plan)?;
    } else {
        out!("{}", plan::render::human(&plan));
        if let Some(path) = &a.output {
            outln!(
                "Plan saved to {}; carry it out with: restore apply {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok(if a.detailed_exitcode && plan.has_changes() {
        EXIT_CHANGES
    } else {
        0
    })
}

fn confirm_on_terminal(yes: bool) -> impl Fn(&str) -> Result<bool> {
    move |summary: &str| {
        if yes {
            return Ok(true);
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "apply writes to disks and needs confirmation: pass --yes (standard input is not a terminal)"
            );
        }
        eprint!("About to write:\n{summary}Type yes to continue: ");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim() == "yes")
    }
}

fn run_apply(a: ApplyArgs) -> Result<i32> {
    let progress = a.common.progress();
    let saved = a.targets.len() == 1 && Plan::is_plan_file(&a.targets[0]);
    // The store is opened once: the plan made here is applied with the same store.
    let (plan, store) = if saved {
        let path = &a.targets[0];
        if a.sel.store.is_some() {
            bail!(
                "\"{}\" is a saved plan, which carries its own store; run `restore apply {}` without --store",
                path.display(),
                path.display()
            );
        }
        if !a.sel.maps.is_empty() {
            bail!("a saved plan already pairs its disks; --map applies to `apply --store` only");
        }
        let mut plan = Plan::load(path)?;
        let env = store_arg(&a.sel).and_then(|e| Location::parse(&e).ok());
        if let Some(env) = &env
            && !env.same_store(&plan.store)
        {
            eprintln!(
                "note: \"{}\" carries its own store {}; RESTORE_STORE ({env}) is not used",
                path.display(),
                plan.store
            );
        }
        // Credentials are never saved in a plan: they come from RESTORE_STORE again.
        let location = plan.store.with_credentials_from(env.as_ref())?;
        let store = Store::open(&location)?;
        plan.store = location;
        (plan, store)
    } else if store_arg(&a.sel).is_some() {
        let opts = plan_options(&a.sel, a.targets.clone())?;
        let store = Store::open(&opts.store)?;
        (plan::make(&store, &opts, progress.as_ref())?, store)
    } else {
        match a.targets.as_slice() {
            [one] if one.is_file() => bail!(
                "\"{}\" is not a restore plan (make one with `restore plan -o FILE`); to plan and apply in one go pass --store and the target disks",
                one.display()
            ),
            _ => bail!("apply takes one saved plan file, or --store with target disks (and --map)"),
        }
    };
    let opts = ApplyOptions {
        verify: a.verify,
        jobs: a.jobs.clamp(1, 256),
        prove: saved,
        overwrite_foreign: a.overwrite_foreign,
    };
    let prepared = apply::prepare(plan, &store, &opts, progress.as_ref())?;
    let plan = prepared.plan.clone();
    if !a.common.json {
        out!("{}", plan::render::human(&plan));
    }
    let report = apply::run(
        prepared,
        &opts,
        progress.as_ref(),
        &confirm_on_terminal(a.yes),
    )?;
    if a.common.json {
        print_json(&serde_json::json!({ "plan": plan, "result": report }))?;
    } else if plan.has_changes() {
        outln!(
            "Applied: wrote {} ({} chunks, {} table sectors) in {:.1} s{}.",
            units::bytes(report.bytes_written),
            report.chunks_written,
            report.table_sectors_written,
            report.seconds,
            if report.verified { ", verified" } else { "" }
        );
        if !report.fallback_loader.is_empty() {
            outln!(
                "Added the removable fallback loader to the ESP: {}.",
                report.fallback_loader.join(", ")
            );
        }
        for e in &report.boot_entries {
            outln!("Created UEFI boot entry {e}, first in BootOrder.");
        }
        for c in &report.boot_check {
            outln!(
                "Boot chain of {}: {} ({} links checked).",
                c.disk,
                if c.whole { "whole" } else { "BROKEN" },
                c.links.len()
            );
        }
    }
    Ok(0)
}

fn run_probe(a: ProbeArgs) -> Result<i32> {
    let report = crate::probe::probe(&a.disk)?;
    if a.json {
        print_json(&report)?;
    } else {
        out!("{}", crate::probe::human(&report));
    }
    Ok(0)
}

fn run_check_boot(a: CheckBootArgs) -> Result<i32> {
    let disk = crate::disk::Disk::open_read(&a.disk)?;
    let only = a.firmware.map(|f| match f {
        FirmwareArg::Bios => Firmware::Bios,
        FirmwareArg::Uefi => Firmware::Uefi,
    });
    let report = match &a.store {
        Some(s) => {
            let store = Store::open(&Location::parse(s)?)?;
            let m = manifest::resolve(&store, a.host.as_deref(), &a.snapshot)?;
            let pick = match &a.source {
                Some(name) => m.disks.iter().find(|d| &d.name == name),
                None if m.disks.len() == 1 => m.disks.first(),
                None => m.disks.iter().find(|d| d.size == disk.size),
            };
            let Some(d) = pick else {
                bail!(
                    "cannot tell which disk of snapshot {} to compare \"{}\" with; say it with --source",
                    m.id,
                    a.disk.display()
                );
            };
            crate::check_boot::check(&disk, Some((&store, d)), only)?
        }
        None => crate::check_boot::check(&disk, None, only)?,
    };
    if a.json {
        print_json(&report)?;
    } else {
        for path in &report.paths {
            outln!("{} ({}):", path.firmware, path.because);
            for l in &path.links {
                outln!(
                    "  {} {}: {}",
                    if l.ok { "ok    " } else { "BROKEN" },
                    l.link,
                    l.detail
                );
            }
        }
        if report.paths.is_empty() {
            for l in &report.links {
                outln!("BROKEN {}: {}", l.link, l.detail);
            }
        }
        for path in &report.paths {
            outln!("{}", path.summary());
        }
        outln!(
            "{}",
            if report.whole {
                "boot chain whole"
            } else {
                "boot chain broken"
            }
        );
    }
    Ok(if report.whole { 0 } else { 1 })
}
