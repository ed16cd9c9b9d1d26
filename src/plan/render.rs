//! The plan as an operator reads it: per disk a short table, the reason behind every write,
//! what was not checked, and the totals.

use std::fmt::Write;

use super::{Action, Component, Plan, Verb};
use crate::units;

fn component_title(a: &Action) -> String {
    match a.component {
        Component::PartitionTable => format!("partition table ({})", a.name),
        Component::BootRegion => format!("boot region {}", a.name),
        Component::BootEntry => "UEFI boot entry".to_string(),
        Component::BootFallback => "UEFI fallback loader".to_string(),
        Component::Partition => match &a.holds {
            Some(h) => format!("{} ({h})", a.name),
            None => a.name.clone(),
        },
    }
}

fn verb(a: &Action) -> String {
    match a.action {
        Verb::Keep => "keep".into(),
        Verb::Write => "write".into(),
        Verb::Patch => format!("patch {}", a.chunks_to_write),
        Verb::Full => "full".into(),
        Verb::Skip => "skip".into(),
    }
}

pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    let mode = match plan.mode {
        super::Mode::Deep => "deep check: every chunk hashed",
        super::Mode::Quick => "quick check: tables, boot regions and critical chunks only",
    };
    let _ = writeln!(
        out,
        "Plan: host {} snapshot {} from {} ({mode})",
        plan.host, plan.snapshot, plan.store
    );
    let _ = writeln!(
        out,
        "{}",
        match &plan.signed_by {
            Some(key) => crate::signing::Verification::SignedBy { key: key.clone() },
            None => crate::signing::Verification::NotVerified,
        }
    );
    for d in &plan.disks {
        let _ = writeln!(
            out,
            "\nDisk {} -> {} ({}, {}-byte sectors; {})",
            d.source,
            d.target.display(),
            units::bytes(d.target_size),
            d.target_sector_size,
            d.mapping
        );
        if let Some(f) = &d.foreign {
            let _ = writeln!(
                out,
                "  FOREIGN DISK: {} holds another system's data: {}.",
                d.target.display(),
                f.why
            );
            let _ = writeln!(out, "  A restore destroys:");
            for line in f.destroyed() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(
                out,
                "  apply refuses this disk unless --overwrite-foreign is given."
            );
        }
        let rows: Vec<[String; 4]> = d
            .actions
            .iter()
            .map(|a| {
                let bytes = if a.writes() {
                    units::bytes(a.bytes_to_write)
                } else {
                    "-".into()
                };
                [component_title(a), a.found.clone(), verb(a), bytes]
            })
            .collect();
        let header = [
            "COMPONENT".to_string(),
            "FOUND".into(),
            "ACTION".into(),
            "WRITE".into(),
        ];
        let mut widths = [0usize; 4];
        for r in std::iter::once(&header).chain(rows.iter()) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        for r in std::iter::once(&header).chain(rows.iter()) {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        }
        let why: Vec<&Action> = d
            .actions
            .iter()
            .filter(|a| a.action != Verb::Keep)
            .collect();
        if !why.is_empty() {
            let _ = writeln!(out, "  Why:");
            for a in why {
                let _ = writeln!(out, "    {}: {}", component_title(a), a.reason);
            }
        }
        for n in &d.notes {
            let _ = writeln!(out, "  Note: {n}");
        }
        if !d.not_checked.is_empty() {
            let _ = writeln!(out, "  Not checked (run a deep plan to check them):");
            for n in &d.not_checked {
                let _ = writeln!(out, "    {n}");
            }
        }
    }
    let t = &plan.totals;
    if plan.has_changes() {
        let _ = writeln!(
            out,
            "\nTotal: write {} in {} chunk(s) and table sectors, fetch {} ({} chunk(s)) from the store; {} component(s) to write; estimated {}.",
            units::bytes(t.bytes_to_write),
            t.chunks_to_write,
            units::bytes(t.bytes_to_fetch),
            t.chunks_to_fetch,
            t.components_to_write,
            units::duration(plan.estimated_seconds)
        );
    } else {
        let _ = writeln!(
            out,
            "\nNothing to do: the target already matches the snapshot."
        );
    }
    out
}
