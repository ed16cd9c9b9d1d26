//! `restore apply`: the only code that writes to a target. A saved plan is first proven: the
//! planner reads every target afresh and must arrive at exactly the plan's actions, else
//! nothing is written. Then one writer (`writer`) writes in fixed phases, each behind a named
//! crash point, and afterwards the targets are checked against the snapshot (not against the
//! plan): a target that does not match now is an error.

mod writer;

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::disk::{Disk, guard};
use crate::manifest::{self, DiskRecord, Manifest};
use crate::plan::{self, Mode, Plan, Settings};
use crate::progress::{Progress, Silent};
use crate::store::Store;
use crate::units;

pub use writer::{Interrupted, Phase};

/// The progress phase of apply's writes (what `failed` events and reports name).
pub const WRITE_PHASE: &str = "restore";

pub struct ApplyOptions {
    /// Re-read every chunk of every written component afterwards (not only the written ones).
    pub verify: bool,
    pub jobs: usize,
    /// The plan comes from a file: prove it against a fresh diagnosis before writing.
    pub prove: bool,
    /// Write to a target that holds another system's data.
    pub overwrite_foreign: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ApplyReport {
    pub bytes_written: u64,
    pub chunks_written: u64,
    pub table_sectors_written: u64,
    pub verified: bool,
    /// From the first write to the end of the checks (time at the prompt is not counted).
    pub seconds: f64,
    /// How long each write phase took.
    pub phases: Vec<PhaseTime>,
    /// The offline boot-chain check of every target whose snapshot recorded a boot loader.
    pub boot_check: Vec<crate::boot::ChainReport>,
    /// UEFI boot entries created ("Boot0003 \EFI\debian\shimx64.efi").
    pub boot_entries: Vec<String>,
    /// Files added to the ESP for the removable fallback path.
    pub fallback_loader: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PhaseTime {
    pub phase: Phase,
    pub seconds: f64,
}

struct Target {
    record: DiskRecord,
    disk: Disk,
}

/// A plan proven against its targets, which are open for writing.
pub struct Prepared<'a> {
    /// The plan to carry out: for a saved plan, the fresh diagnosis it was proven equal to.
    pub plan: Plan,
    store: &'a Store,
    manifest: Manifest,
    targets: Vec<Target>,
}

impl Prepared<'_> {
    /// The targets as the restore report names them.
    pub fn identities(&self) -> Vec<crate::report::Target> {
        self.plan
            .disks
            .iter()
            .zip(&self.targets)
            .map(|(dp, t)| crate::report::Target {
                path: t.disk.path.display().to_string(),
                source: dp.source.clone(),
                size: t.disk.size,
                model: t.disk.identity.model.clone(),
                serial: t.disk.identity.serial.clone(),
            })
            .collect()
    }
}

/// Everything that can fail on input, before the prompt: the snapshot, the targets (guards,
/// sizes), the proof of a saved plan, foreign disks.
pub fn prepare<'a>(
    plan: Plan,
    store: &'a Store,
    opts: &ApplyOptions,
    trust: &crate::signing::Trust,
    progress: &dyn Progress,
) -> Result<Prepared<'a>> {
    if let Some(key) = &plan.signed_by
        && trust.is_empty()
    {
        bail!(
            "the plan was made from a snapshot verified with key {key}: give --trust (or RESTORE_TRUST) to apply it; nothing was written"
        );
    }
    let (m, _) = manifest::load(store, &plan.host, &plan.snapshot, trust)?;
    ensure!(
        m.chunk_size == plan.chunk_size,
        "plan and snapshot disagree on the chunk size; make a new plan"
    );
    ensure!(
        plan.totals == plan::sum_totals(&plan.disks),
        "the plan file does not match what the target needs now (its totals are not the sum of its disks); nothing was written: make a new plan"
    );
    let mut targets = Vec::new();
    for dp in &plan.disks {
        let record = m
            .disks
            .iter()
            .find(|d| d.name == dp.source)
            .with_context(|| {
                format!(
                    "snapshot {} has no disk {} named in the plan",
                    m.id, dp.source
                )
            })?
            .clone();
        ensure!(
            !targets.iter().any(|t: &Target| t.disk.path == dp.target),
            "the plan names target {} twice; nothing was written",
            dp.target.display()
        );
        // The guards look first, so a mounted or held target gets the precise reason.
        let look = Disk::open_read(&dp.target)?;
        guard::check_writable(&look, plan.store.local_path())?;
        drop(look);
        let disk = Disk::open_write(&dp.target)?;
        ensure!(
            disk.size == dp.target_size && disk.logical_sector_size == dp.target_sector_size,
            "target {} is now {} with {}-byte sectors, the plan was made for {} with {}-byte sectors; nothing was written: make a new plan",
            dp.target.display(),
            units::bytes_exact(disk.size),
            disk.logical_sector_size,
            units::bytes_exact(dp.target_size),
            dp.target_sector_size
        );
        targets.push(Target { record, disk });
    }

    let mut plan = plan;
    if opts.prove {
        let settings = plan.settings();
        for (dp, t) in plan.disks.iter_mut().zip(&targets) {
            let (mut fresh, _) =
                plan::diagnose_disk(store, &m, &t.record, &t.disk, &settings, progress)?;
            if fresh.fingerprint != dp.fingerprint {
                bail!(
                    "target {} changed since the plan was made (its contents no longer match the plan's fingerprint); \
                     nothing was written: make a new plan",
                    t.disk.path.display()
                );
            }
            fresh.target = dp.target.clone();
            fresh.mapping = dp.mapping.clone();
            if let Err(diff) = plan::compare(dp, &fresh) {
                bail!(
                    "the plan file does not match what the target needs now ({}: {diff}); nothing was written: make a new plan",
                    t.disk.path.display()
                );
            }
            // From here on the plan is the fresh diagnosis, proven equal to the file.
            *dp = fresh;
        }
    }
    for dp in &plan.disks {
        if let Some(f) = &dp.foreign
            && dp.has_changes()
            && !opts.overwrite_foreign
        {
            bail!(
                "refusing to write to {}: it holds another system's data ({}; a restore destroys {}); pass --overwrite-foreign if it is really to be overwritten; nothing was written",
                dp.target.display(),
                f.why,
                f.destroyed().join(", ")
            );
        }
    }
    Ok(Prepared {
        plan,
        store,
        manifest: m,
        targets,
    })
}

/// Asks once (`confirm` with a summary of the targets), then writes and checks.
pub fn run(
    p: Prepared,
    opts: &ApplyOptions,
    progress: &dyn Progress,
    confirm: &dyn Fn(&str) -> Result<bool>,
) -> Result<ApplyReport> {
    let plan = &p.plan;
    if !plan.has_changes() {
        return Ok(ApplyReport::default());
    }
    let work = writer::Work::load(
        p.store,
        plan,
        &p.targets.iter().map(|t| &t.disk).collect::<Vec<_>>(),
    )?;
    let mut summary = String::new();
    for (dp, t) in plan.disks.iter().zip(&p.targets) {
        let id = &t.disk.identity;
        summary.push_str(&format!(
            "  {} ({}, model {}, serial {}): write {}\n",
            t.disk.path.display(),
            units::bytes(t.disk.size),
            id.model.as_deref().unwrap_or("-"),
            id.serial.as_deref().unwrap_or("-"),
            units::bytes(dp.totals.bytes_to_write)
        ));
        if let Some(f) = &dp.foreign {
            summary.push_str(&format!(
                "  FOREIGN DISK: {} holds another system's data; this destroys:\n",
                t.disk.path.display()
            ));
            for line in f.destroyed() {
                summary.push_str(&format!("    {line}\n"));
            }
        }
    }
    if !confirm(&summary)? {
        bail!("not confirmed; nothing was written");
    }

    let started = Instant::now();
    let mut report = ApplyReport::default();
    let disks: Vec<&Disk> = p.targets.iter().map(|t| &t.disk).collect();
    writer::write(p.store, &disks, &work, opts.jobs, progress, &mut report)?;

    // Checked against the snapshot, not against the plan: a fresh quick diagnosis of every
    // target must find nothing left to write, and what was written must hash as the
    // snapshot's chunks (with --verify, every chunk of every written component).
    work.verify_written(&disks, opts.verify, opts.jobs)?;
    report.verified = opts.verify;
    let quick = Settings {
        mode: Mode::Quick,
        ..plan.settings()
    };
    for (dp, t) in plan.disks.iter().zip(&p.targets) {
        let (now, _) =
            plan::diagnose_disk(p.store, &p.manifest, &t.record, &t.disk, &quick, &Silent)
                .with_context(|| format!("checking {} after the restore", t.disk.path.display()))?;
        if let Some(a) = now
            .actions
            .iter()
            .find(|a| a.writes() && a.component != plan::Component::BootEntry)
        {
            bail!(
                "apply wrote everything, but {} does not match the snapshot now ({}: {}); run restore plan to see what differs",
                dp.target.display(),
                a.name,
                a.found
            );
        }
    }
    for (dp, t) in plan.disks.iter().zip(&p.targets) {
        if t.record.boot_loaders.is_empty() {
            continue;
        }
        // On a kept table the loaders were patched, so the chain is checked as found.
        let snapshot = (!plan.keep_table).then_some((p.store, &t.record));
        let chain = crate::check_boot::check(&t.disk, snapshot, None)?;
        if t.record.boot_chain_whole && !chain.whole {
            let broken: Vec<String> = chain
                .links
                .iter()
                .filter(|l| !l.ok)
                .map(|l| format!("{}: {}", l.link, l.detail))
                .collect();
            bail!(
                "apply wrote everything, but the boot chain of {} is broken ({}); run restore check-boot for details",
                dp.target.display(),
                broken.join("; ")
            );
        }
        report.boot_check.push(chain);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
