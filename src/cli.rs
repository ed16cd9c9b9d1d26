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

/// `restore --version`: the version, the commit and date it was built from, the stores it
/// reaches.
macro_rules! long_version {
    ($version:expr) => {
        concat!(
            $version,
            "\ncommit ",
            env!("RESTORE_COMMIT"),
            ", built ",
            env!("RESTORE_BUILD_DATE"),
            "\nstores: local directory and file://, http(s):// (read-only), s3:// (TLS by rustls)",
            "\nboot loaders: GRUB (BIOS, UEFI), systemd-boot, shim, EXTLINUX/SYSLINUX"
        )
    };
}
#[cfg(feature = "test-hooks")]
const LONG_VERSION: &str = long_version!(concat!(env!("CARGO_PKG_VERSION"), " (test hooks)"));
#[cfg(not(feature = "test-hooks"))]
const LONG_VERSION: &str = long_version!(env!("CARGO_PKG_VERSION"));

/// "0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-04)", for reports.
pub fn version_line() -> String {
    format!(
        "{VERSION} (commit {}, built {})",
        env!("RESTORE_COMMIT"),
        env!("RESTORE_BUILD_DATE")
    )
}

#[derive(Parser)]
#[command(
    name = "restore",
    version = VERSION,
    long_version = LONG_VERSION,
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
    #[command(
        after_help = "Examples:\n  restore capture --store /mnt/backup /dev/sda\n  restore capture --all --store s3://backups/fleet --sign-key /etc/restore/sign.key\n  restore capture --all --store /mnt/backup --dry-run"
    )]
    Capture(CaptureArgs),
    /// List the snapshots in a store.
    #[command(
        after_help = "Examples:\n  restore snapshots --store /mnt/backup\n  restore snapshots --store s3://backups/fleet --host web-3 --json"
    )]
    Snapshots(SnapshotsArgs),
    /// Show one snapshot: its disks, tables, boot regions and partitions.
    #[command(
        after_help = "Examples:\n  restore show latest --store /mnt/backup --host web-3\n  restore show 20261204T020000Z --store s3://backups/fleet --host web-3 --json"
    )]
    Show(ShowArgs),
    /// Compare target disks with a snapshot and say what a restore would write (read-only).
    #[command(
        after_help = "Examples:\n  restore plan --store /mnt/backup --host web-3 /dev/sda\n  restore plan --store /mnt/backup --host web-3 -o plan.json /dev/sda\n  restore plan --store s3://backups/fleet --host web-3 --quick /dev/sda"
    )]
    Plan(PlanArgs),
    /// Write what a plan says: `apply PLAN`, or `apply --store S DISK...` to plan and apply.
    #[command(
        after_help = "Examples:\n  restore apply plan.json\n  restore apply --store /mnt/backup --host web-3 /dev/sda\n  restore apply plan.json --verify --notify https://chat.example/hooks/T0K3N"
    )]
    Apply(ApplyArgs),
    /// Show what is on a disk now: identity, sizes, table, partitions, filesystems, boot loader.
    #[command(after_help = "Examples:\n  restore probe /dev/sda\n  restore probe --json disk.img")]
    Probe(ProbeArgs),
    /// Check a disk's boot chain offline; exit 0 when it is whole, 1 when a link is broken.
    #[command(
        after_help = "Examples:\n  restore check-boot /dev/sda\n  restore check-boot --firmware uefi --store /mnt/backup --host web-3 /dev/sda"
    )]
    CheckBoot(CheckBootArgs),
    /// Prove a store whole: every snapshot's manifest, index and chunk (exit 3 on damage).
    #[command(
        after_help = "Examples:\n  restore check --store /mnt/backup\n  restore check --store s3://backups/fleet --read-data"
    )]
    Check(CheckArgs),
    /// Forget snapshots by a retention policy (restic's semantics); chunks stay until prune.
    #[command(
        after_help = "Examples:\n  restore forget --store /mnt/backup --keep-daily 7 --keep-weekly 5 --dry-run\n  restore forget --store s3://backups/fleet --keep-daily 14 --keep-monthly 12 --prune"
    )]
    Forget(ForgetArgs),
    /// Delete the chunks and indexes no snapshot references.
    #[command(
        after_help = "Examples:\n  restore prune --store /mnt/backup --dry-run\n  restore prune --store s3://backups/fleet"
    )]
    Prune(PruneArgs),
    /// Signing keys for snapshots.
    #[command(
        after_help = "Examples:\n  restore key generate --secret /etc/restore/sign.key --public sign.pub"
    )]
    Key(KeyArgs),
    /// List this machine's disks: size, model, serial, what is on them, whether they are in use.
    #[command(after_help = "Examples:\n  restore disks\n  restore disks --json")]
    Disks {
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Also list loop devices.
        #[arg(long)]
        loops: bool,
    },
    /// Restore reports: what a restore found, wrote and took, for the incident's write-up.
    Report(ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  restore completions bash > /etc/bash_completion.d/restore\n  restore completions zsh > \"${fpath[1]}/_restore\""
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (restore.1 and one per command) into a directory.
    #[command(after_help = "Examples:\n  restore man /usr/local/share/man/man1 && mandb")]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// (internal) Thaws frozen filesystems if capture dies or overruns.
    #[command(hide = true)]
    ThawWatchdog {
        #[arg(long)]
        deadline_ms: u64,
        /// A snapshot (VG/LV) to remove if the capture dies first.
        #[arg(long = "remove-lv")]
        remove_lv: Vec<String>,
        mounts: Vec<PathBuf>,
    },
}

/// `--trust`: keys a snapshot must be signed by.
#[derive(Args)]
struct TrustArgs {
    /// Trust only snapshots signed by this minisign public key (repeatable; or RESTORE_TRUST,
    /// files separated by ':'). Without it, snapshots are not verified.
    #[arg(long = "trust", value_name = "PUBFILE")]
    trust: Vec<PathBuf>,
}

impl TrustArgs {
    fn load(&self) -> Result<crate::signing::Trust> {
        let paths: Vec<PathBuf> = if self.trust.is_empty() {
            std::env::var("RESTORE_TRUST")
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        } else {
            self.trust.clone()
        };
        crate::signing::Trust::load(&paths)
    }
}

#[derive(Args)]
struct CheckArgs {
    /// Store: a directory, file://, http(s)://HOST/PATH or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    /// Only this host's snapshots.
    #[arg(long)]
    host: Option<String>,
    /// Only this snapshot (an id, or "latest").
    #[arg(long)]
    snapshot: Option<String>,
    /// Read every referenced object once and check its hash (slow: reads the whole store).
    #[arg(long)]
    read_data: bool,
    /// Objects checked at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct ForgetArgs {
    /// Store: a directory, file:// or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    /// Only this host's snapshots (each host is judged on its own anyway).
    #[arg(long)]
    host: Option<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_hourly: u32,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_daily: u32,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_weekly: u32,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_monthly: u32,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_yearly: u32,
    /// Say what would be forgotten; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    prune: bool,
    /// How long prune waits for captures in progress, in seconds.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct PruneArgs {
    /// Store: a directory, file:// or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for captures in progress to end, in seconds.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a key pair: the secret key signs captures, the public key is given to --trust.
    Generate {
        /// Where the secret key goes (created 0600; never overwritten).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// Where the public key goes.
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
    },
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
    #[command(flatten)]
    trust: TrustArgs,
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
    /// Progress: a bar on a terminal, else one plain line every 5 s (auto); bar; lines;
    /// json (JSON lines on stderr: the events --notify sends); none.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    progress: ProgressArg,
    /// Do not show progress (the same as --progress none).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Lines,
    Json,
    None,
}

impl Common {
    fn mode(&self) -> ProgressMode {
        if self.no_progress {
            return ProgressMode::Off;
        }
        match self.progress {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Bar => ProgressMode::Bar,
            ProgressArg::Lines => ProgressMode::Lines,
            ProgressArg::Json => ProgressMode::Json,
            ProgressArg::None => ProgressMode::Off,
        }
    }

    fn progress(&self) -> Box<dyn progress::Progress> {
        progress::for_mode(self.mode())
    }

    /// Progress that also goes to the webhooks of `n` and, with --progress json, to stderr.
    fn tracker(&self, command: &str, n: &NotifyArgs) -> Result<progress::Tracker> {
        let events = crate::notify::Events::new(
            command,
            &n.notify,
            n.notify_message.clone(),
            self.mode() == ProgressMode::Json,
        )?;
        Ok(progress::Tracker::new(
            self.mode(),
            events,
            std::time::Duration::from_secs_f64(n.notify_every.max(0.1)),
        ))
    }
}

/// Telling the people who wait.
#[derive(Args)]
struct NotifyArgs {
    /// POST JSON events (plan, progress, done, failed) to this webhook; a Slack- or
    /// Mattermost-style incoming webhook posts their `text`. Repeatable; or RESTORE_NOTIFY
    /// (URLs separated by ',').
    #[arg(
        long,
        value_name = "URL",
        env = "RESTORE_NOTIFY",
        value_delimiter = ','
    )]
    notify: Vec<String>,
    /// The operator's own words, put in front of every event's text.
    #[arg(long, value_name = "TEXT", env = "RESTORE_NOTIFY_MESSAGE")]
    notify_message: Option<String>,
    /// Seconds between progress events to the webhooks.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    notify_every: f64,
}

#[derive(Args)]
struct CaptureArgs {
    /// Store: a directory or file:// URL (created on first capture), or s3://BUCKET/PREFIX.
    #[arg(long, env = "RESTORE_STORE")]
    store: String,
    /// Name of the host the disks belong to (default: this machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Capture every disk that holds a mounted filesystem or a boot loader.
    #[arg(long, conflicts_with = "disks")]
    all: bool,
    /// Say how each partition would be read (offline, frozen, ...) and stop.
    #[arg(long)]
    dry_run: bool,
    /// What cannot be read consistently (a filesystem mounted read-write that cannot be
    /// frozen): refuse it (auto), or store it with every block, marked inconsistent.
    #[arg(long, value_enum, default_value = "auto")]
    consistency: ConsistencyArg,
    /// The longest a filesystem stays frozen while its blocks are read, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    max_freeze: u64,
    /// I/O priority: idle (the default: the disk only when nobody else wants it, and a low CPU
    /// priority) or normal.
    #[arg(long, value_enum, default_value = "idle")]
    io_priority: IoPriorityArg,
    /// Read at most this many MiB per second.
    #[arg(long, value_name = "MIB_PER_S")]
    limit_read: Option<u64>,
    /// Chunk size for a new store, in bytes (power of two, 256 KiB to 16 MiB).
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Keep every block, also the free space of ext2/3/4 filesystems (an exact image).
    #[arg(long)]
    all_blocks: bool,
    /// Sign the snapshot with this minisign secret key (`restore key generate`).
    #[arg(long, env = "RESTORE_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Read and hash every chunk already in the store before reusing it (slower; finds
    /// damage a size check cannot).
    #[arg(long)]
    verify_existing: bool,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    notify: NotifyArgs,
    /// Disks to capture (or --all).
    #[arg(required_unless_present = "all")]
    disks: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConsistencyArg {
    Auto,
    AllowInconsistent,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum IoPriorityArg {
    Idle,
    Normal,
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
    #[command(flatten)]
    trust: TrustArgs,
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
    #[command(flatten)]
    trust: TrustArgs,
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
    #[command(flatten)]
    trust: TrustArgs,
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
    #[command(flatten)]
    notify: NotifyArgs,
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
    /// Chunks fetched at once (memory use is about this many chunks).
    #[arg(long, default_value_t = 16)]
    jobs: usize,
    /// Write to a target that holds another system's data (the plan lists what it destroys).
    #[arg(long)]
    overwrite_foreign: bool,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    notify: NotifyArgs,
    /// A saved plan, or with --store the target disks.
    targets: Vec<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Print a restore report: a file that apply saved, or the newest one in a store.
    #[command(
        after_help = "Examples:\n  restore report show restore-report-web-3-20261204T021500Z.json\n  restore report show --store s3://backups/fleet --host web-3\n  restore report show --store /mnt/backup --json"
    )]
    Show {
        /// The report file (default: the newest in --store).
        file: Option<PathBuf>,
        /// The store apply saved it in, under reports/HOST/.
        #[arg(long, env = "RESTORE_STORE")]
        store: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// Print the report's JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Check(a) => run_check(a),
        Command::Forget(a) => run_forget(a),
        Command::Prune(a) => run_prune(a),
        Command::Key(a) => run_key(a),
        Command::Disks { json, loops } => {
            let disks = crate::disks::list(loops)?;
            if json {
                print_json(&disks)?;
            } else {
                out!("{}", crate::disks::human(&disks));
            }
            Ok(0)
        }
        Command::Report(ReportArgs {
            command:
                ReportCommand::Show {
                    file,
                    store,
                    host,
                    json,
                },
        }) => {
            let store = match (&file, store) {
                (None, Some(s)) => Some(Store::open(&Location::parse(&s)?)?),
                _ => None,
            };
            let r = crate::report::load(file.as_deref(), store.as_ref(), host.as_deref())?;
            if json {
                print_json(&r)?;
            } else {
                out!("{}", crate::report::human(&r));
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "restore", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            Ok(0)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating \"{}\"", dir.display()))?;
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into \"{}\"", dir.display()))?;
            eprintln!("man pages written to \"{}\"", dir.display());
            Ok(0)
        }
        Command::ThawWatchdog {
            deadline_ms,
            remove_lv,
            mounts,
        } => capture::live::watchdog(
            std::time::Duration::from_millis(deadline_ms),
            &mounts,
            &remove_lv,
        ),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    outln!("{text}");
    Ok(())
}

fn run_capture(a: CaptureArgs) -> Result<i32> {
    let store = Location::parse(&a.store)?;
    let host = match a.host {
        Some(h) => h,
        None => capture::hostname()
            .context("this machine has no hostname to capture it as: give --host NAME")?,
    };
    let disks = if a.all {
        let all = capture::live::all_disks(store.local_path())?;
        if all.is_empty() {
            bail!("--all: no disk of this machine holds a mounted filesystem or a boot loader");
        }
        eprintln!(
            "capturing {}",
            all.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        all
    } else {
        a.disks
    };
    let opts = CaptureOptions {
        all_blocks: a.all_blocks,
        store,
        host,
        disks,
        chunk_size: a.chunk_size,
        sign_key: a.sign_key,
        verify_existing: a.verify_existing,
        consistency: match a.consistency {
            ConsistencyArg::Auto => capture::live::Policy::Auto,
            ConsistencyArg::AllowInconsistent => capture::live::Policy::AllowInconsistent,
        },
        max_freeze: std::time::Duration::from_secs(a.max_freeze),
        gentle: matches!(a.io_priority, IoPriorityArg::Idle),
        limit_read: a.limit_read.map(|m| m << 20),
    };
    if a.dry_run {
        for (disk, parts) in capture::dry_run(&opts)? {
            outln!("{disk}:");
            for (part, how) in parts {
                outln!("  {part}: {how}");
            }
        }
        return Ok(0);
    }
    let tracker = a.common.tracker("capture", &a.notify)?;
    let events = tracker.events.clone();
    events.set_subject(&opts.host, None);
    let started = std::time::Instant::now();
    let r = match capture::capture(&opts, &tracker) {
        Ok(r) => r,
        Err(e) => {
            crate::report::announce_failed(
                &tracker,
                "capture",
                &e,
                started.elapsed().as_secs_f64(),
            );
            events.finish();
            return Err(e);
        }
    };
    events.set_subject(&opts.host, Some(&r.snapshot_id));
    events.emit(
        "done",
        &format!(
            "capture finished in {}: snapshot {}, {} read, {} new.",
            crate::notify::human_duration(r.seconds),
            r.snapshot_id,
            units::bytes(r.bytes_read),
            units::bytes(r.uploaded_bytes)
        ),
        serde_json::json!({
            "duration_seconds": r.seconds,
            "bytes_read": r.bytes_read,
            "bytes_uploaded": r.uploaded_bytes,
            "partitions": r.partitions,
        }),
        true,
    );
    events.finish();
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
        for r in &r.repaired_chunks {
            eprintln!("repaired a damaged chunk in the store: {r}");
        }
        for p in r
            .partitions
            .iter()
            .filter(|p| p.consistency != crate::manifest::Consistency::Offline)
        {
            eprintln!(
                "{} partition {}: {}{}",
                p.disk,
                p.number,
                p.consistency,
                p.freeze_seconds
                    .map(|s| format!(", frozen for {s:.2} s"))
                    .unwrap_or_default()
            );
        }
        if let Some(key) = &r.signed_by {
            eprintln!("signed by key {key}");
        }
        outln!("{}", r.snapshot_id);
    }
    Ok(0)
}

fn run_snapshots(a: SnapshotsArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let trust = a.trust.load()?;
    let list = manifest::list(&store, a.host.as_deref(), &trust)?;
    if a.json {
        print_json(&list)?;
    } else if list.is_empty() {
        outln!("no snapshots in {}", store.describe());
    } else {
        let mut header = vec!["HOST", "SNAPSHOT", "CREATED (UTC)", "DISKS", "SIZE"];
        if !trust.is_empty() {
            header.push("SIGNED BY");
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                // "2026-12-04T02:15:00.123456Z" -> "2026-12-04 02:15:00"
                let created: String = s.created.replace('T', " ").chars().take(19).collect();
                let mut row = vec![
                    s.host.clone(),
                    s.id.clone(),
                    created,
                    s.disks.to_string(),
                    units::bytes(s.bytes),
                ];
                if !trust.is_empty() {
                    row.push(match (&s.refused, &s.signed_by) {
                        (Some(_), _) => "REFUSED (see below)".to_string(),
                        (None, Some(k)) => k.clone(),
                        (None, None) => String::new(),
                    });
                }
                row
            })
            .collect();
        let n = header.len();
        out!(
            "{}",
            units::table(
                &header,
                &rows,
                &[false, false, false, true, true, false][..n],
                &[true, false, false, false, false, true][..n],
                units::width(),
                0
            )
        );
        for s in list.iter().filter(|s| s.refused.is_some()) {
            outln!(
                "refused {}/{}: {}",
                s.host,
                s.id,
                s.refused.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

fn run_show(a: ShowArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let (m, verification) =
        manifest::resolve(&store, a.host.as_deref(), &a.snapshot, &a.trust.load()?)?;
    if a.json {
        let mut v = serde_json::to_value(&m)?;
        v["verification"] = serde_json::to_value(&verification)?;
        print_json(&v)?;
        return Ok(0);
    }
    outln!(
        "snapshot {} of host {}, created {}, chunk size {}",
        m.id,
        m.host,
        m.created,
        units::bytes(u64::from(m.chunk_size))
    );
    outln!("{verification}");
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
                format_args!(
                    "{} chunks ({} zero){}",
                    p.chunks,
                    p.zero_chunks,
                    p.consistency
                        .map(|c| format!(
                            ", read {c}{}",
                            p.freeze_seconds
                                .map(|s| format!(" for {s:.2} s"))
                                .unwrap_or_default()
                        ))
                        .unwrap_or_default()
                )
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
        trust: sel.trust.load()?,
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
    let tracker = a.common.tracker("plan", &a.notify)?;
    let events = tracker.events.clone();
    let started = std::time::Instant::now();
    let plan = match Store::open(&opts.store).and_then(|s| plan::make(&s, &opts, &tracker)) {
        Ok(p) => p,
        Err(e) => {
            crate::report::announce_failed(&tracker, "plan", &e, started.elapsed().as_secs_f64());
            events.finish();
            return Err(e);
        }
    };
    crate::report::announce_plan(&events, &plan);
    events.finish();
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
    let tracker = a.common.tracker("apply", &a.notify)?;
    let events = tracker.events.clone();
    let started = std::time::Instant::now();
    let result = apply_with_events(a, &tracker);
    if let Err(e) = &result
        && !e.is::<Announced>()
    {
        crate::report::announce_failed(&tracker, "apply", e, started.elapsed().as_secs_f64());
    }
    events.finish();
    result.map_err(|e| match e.downcast::<Announced>() {
        Ok(Announced(inner)) => inner,
        Err(e) => e,
    })
}

/// An apply error whose `failed` event has gone out already.
#[derive(Debug)]
struct Announced(anyhow::Error);

impl std::fmt::Display for Announced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Announced {}

fn apply_with_events(a: ApplyArgs, tracker: &progress::Tracker) -> Result<i32> {
    let progress: &dyn progress::Progress = tracker;
    let events = &tracker.events;
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
        (plan::make(&store, &opts, progress)?, store)
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
    let plan_file = saved.then(|| a.targets[0].clone());
    let prepared = apply::prepare(plan, &store, &opts, &a.sel.trust.load()?, progress)?;
    let plan = prepared.plan.clone();
    if !a.common.json {
        out!("{}", plan::render::human(&plan));
    }
    crate::report::announce_plan(events, &plan);
    tracker.set_estimate(plan.estimated_seconds);
    let context = crate::report::ApplyContext {
        plan: &plan,
        plan_file: plan_file.as_deref(),
        started: crate::clock::now().rfc3339,
        targets: prepared.identities(),
    };
    let apply_started = std::time::Instant::now();
    let result = apply::run(prepared, &opts, progress, &confirm_on_terminal(a.yes));
    // Nothing happened when the operator did not confirm: no report.
    let not_confirmed = result.as_ref().err().is_some_and(|e| {
        let e = format!("{e}");
        e.starts_with("not confirmed") || e.contains("needs confirmation")
    });
    if plan.has_changes() && !not_confirmed {
        let saved_to = crate::report::save(&context, &result, &tracker.position(), Some(&store));
        if !saved_to.is_empty() {
            eprintln!("Restore report saved to {}.", saved_to.join(" and "));
        }
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let secs = apply_started.elapsed().as_secs_f64();
            crate::report::announce_failed(tracker, "apply", &e, secs);
            return Err(anyhow::Error::new(Announced(e)));
        }
    };
    crate::report::announce_done(events, &plan, &report);
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
            let (m, _) =
                manifest::resolve(&store, a.host.as_deref(), &a.snapshot, &a.trust.load()?)?;
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

/// Exit code of `check` when the store is damaged.
pub const EXIT_DAMAGED: i32 = 3;

fn run_check(a: CheckArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let trust = a.trust.load()?;
    let opts = crate::check::CheckOptions {
        host: a.host.as_deref(),
        snapshot: a.snapshot.as_deref(),
        read_data: a.read_data,
        jobs: a.jobs,
    };
    let progress = a.common.progress();
    let r = crate::check::check(&store, &opts, &trust, progress.as_ref())?;
    if a.common.json {
        print_json(&r)?;
    } else {
        for p in &r.problems {
            outln!("DAMAGED {}: {}", p.object, p.problem);
            if !p.breaks.is_empty() {
                outln!("  breaks {}", p.breaks.join(", "));
            }
        }
        outln!(
            "{}: {} snapshot(s), {} object(s) checked{} in {:.1} s",
            if r.whole {
                "store whole".to_string()
            } else {
                format!("store DAMAGED ({} problem(s))", r.problems.len())
            },
            r.snapshots,
            r.objects,
            if a.read_data {
                format!(
                    ", {} read and hashed ({}/s)",
                    units::bytes(r.bytes_read),
                    units::bytes((r.bytes_read as f64 / r.seconds.max(1e-3)) as u64)
                )
            } else {
                String::new()
            },
            r.seconds
        );
    }
    Ok(if r.whole { 0 } else { EXIT_DAMAGED })
}

fn run_forget(a: ForgetArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let policy = crate::forget::Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    let verdicts = crate::forget::forget(&store, a.host.as_deref(), &policy, a.dry_run)?;
    let pruned = if a.prune && !a.dry_run {
        let progress = a.common.progress();
        Some(crate::prune::prune(
            &store,
            false,
            std::time::Duration::from_secs(a.wait),
            progress.as_ref(),
        )?)
    } else {
        None
    };
    if a.common.json {
        print_json(
            &serde_json::json!({"snapshots": verdicts, "dry_run": a.dry_run, "prune": pruned}),
        )?;
    } else {
        for v in &verdicts {
            outln!(
                "{:<6} {}/{} {} {}",
                if v.keep { "keep" } else { "forget" },
                v.host,
                v.id,
                v.created,
                v.reasons.join(", ")
            );
        }
        let gone = verdicts.iter().filter(|v| !v.keep).count();
        outln!(
            "{} {gone} of {} snapshot(s){}",
            if a.dry_run { "would forget" } else { "forgot" },
            verdicts.len(),
            if a.dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        );
        if let Some(p) = &pruned {
            print_prune(p);
        }
    }
    Ok(0)
}

fn print_prune(p: &crate::prune::PruneReport) {
    outln!(
        "{} {} chunk(s) and {} index(es), {}, that none of {} snapshot(s) references ({:.1} s)",
        if p.dry_run { "would delete" } else { "deleted" },
        p.deleted_chunks,
        p.deleted_indexes,
        units::bytes(p.deleted_bytes),
        p.snapshots,
        p.seconds
    );
}

fn run_prune(a: PruneArgs) -> Result<i32> {
    let store = Store::open(&Location::parse(&a.store)?)?;
    let progress = a.common.progress();
    let r = crate::prune::prune(
        &store,
        a.dry_run,
        std::time::Duration::from_secs(a.wait),
        progress.as_ref(),
    )?;
    if a.common.json {
        print_json(&r)?;
    } else {
        print_prune(&r);
    }
    Ok(0)
}

fn run_key(a: KeyArgs) -> Result<i32> {
    match a.command {
        KeyCommand::Generate { secret, public } => {
            let id = crate::signing::generate(&secret, &public)?;
            outln!(
                "key {id}: secret key \"{}\" (keep it on the hosts that capture), public key \"{}\" (give it to --trust)",
                secret.display(),
                public.display()
            );
        }
    }
    Ok(0)
}
