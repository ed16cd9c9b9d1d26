//! The plan as an operator reads it: per disk a short table, the reason behind every write,
//! what was not checked, and the totals.

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
    human_at(plan, units::width())
}

/// Appends `text` wrapped to `width`, continuation lines indented by `indent` more spaces than
/// the text itself.
fn para(out: &mut String, text: &str, width: usize, indent: usize) {
    let lead = text.len() - text.trim_start().len();
    for line in units::wrap(text, width, &" ".repeat(lead + indent)) {
        out.push_str(&line);
        out.push('\n');
    }
}

/// "3 to write, 4 unchanged, 1 to replace in full": the plan at a glance.
pub fn summary(plan: &Plan) -> String {
    let (mut write, mut keep, mut full, mut skip) = (0, 0, 0, 0);
    for a in plan.disks.iter().flat_map(|d| &d.actions) {
        match a.action {
            Verb::Keep => keep += 1,
            Verb::Write | Verb::Patch => write += 1,
            Verb::Full => full += 1,
            Verb::Skip => skip += 1,
        }
    }
    let mut parts = vec![format!("{write} to write"), format!("{keep} unchanged")];
    if full > 0 {
        parts.push(format!("{full} to replace in full"));
    }
    if skip > 0 {
        parts.push(format!("{skip} skipped"));
    }
    parts.join(", ")
}

/// The plan laid out for a console `width` columns wide.
pub fn human_at(plan: &Plan, width: usize) -> String {
    let mut out = String::new();
    let mode = match plan.mode {
        super::Mode::Deep => "deep check: every chunk hashed",
        super::Mode::Quick => "quick check: tables, boot regions and critical chunks only",
    };
    para(
        &mut out,
        &format!(
            "Plan: host {} snapshot {} from {} ({mode})",
            plan.host, plan.snapshot, plan.store
        ),
        width,
        2,
    );
    para(
        &mut out,
        &match &plan.signed_by {
            Some(key) => crate::signing::Verification::SignedBy { key: key.clone() },
            None => crate::signing::Verification::NotVerified,
        }
        .to_string(),
        width,
        2,
    );
    for d in &plan.disks {
        out.push('\n');
        para(
            &mut out,
            &format!(
                "Disk {} -> \"{}\" ({}, {}-byte sectors; {})",
                d.source,
                d.target.display(),
                units::bytes(d.target_size),
                d.target_sector_size,
                d.mapping
            ),
            width,
            2,
        );
        if let Some(f) = &d.foreign {
            para(
                &mut out,
                &format!(
                    "  FOREIGN DISK: \"{}\" holds another system's data: {}.",
                    d.target.display(),
                    f.why
                ),
                width,
                2,
            );
            para(&mut out, "  A restore destroys:", width, 2);
            for line in f.destroyed() {
                para(&mut out, &format!("    {line}"), width, 2);
            }
            para(
                &mut out,
                "  apply refuses this disk unless --overwrite-foreign is given.",
                width,
                2,
            );
        }
        let rows: Vec<Vec<String>> = d
            .actions
            .iter()
            .map(|a| {
                let bytes = if a.writes() {
                    units::bytes(a.bytes_to_write)
                } else {
                    "-".into()
                };
                vec![component_title(a), a.found.clone(), verb(a), bytes]
            })
            .collect();
        out.push_str(&units::table(
            &["COMPONENT", "FOUND", "ACTION", "WRITE"],
            &rows,
            &[false, false, false, true],
            &[true, true, false, false],
            width,
            2,
        ));
        let why: Vec<&Action> = d
            .actions
            .iter()
            .filter(|a| a.action != Verb::Keep)
            .collect();
        if !why.is_empty() {
            out.push_str("  Why:\n");
            for a in why {
                para(
                    &mut out,
                    &format!("    {}: {}", component_title(a), a.reason),
                    width,
                    2,
                );
            }
        }
        for n in &d.notes {
            para(&mut out, &format!("  Note: {n}"), width, 2);
        }
        if !d.not_checked.is_empty() {
            para(
                &mut out,
                "  Not checked (run a deep plan to check them):",
                width,
                2,
            );
            for n in &d.not_checked {
                para(&mut out, &format!("    {n}"), width, 2);
            }
        }
    }
    let t = &plan.totals;
    out.push('\n');
    if plan.has_changes() {
        para(&mut out, &format!("Plan: {}.", summary(plan)), width, 2);
        para(
            &mut out,
            &format!(
                "Total: write {} in {} chunk(s) and table sectors, fetch {} ({} chunk(s)) from the store; {} component(s) to write; estimated {}.",
                units::bytes(t.bytes_to_write),
                t.chunks_to_write,
                units::bytes(t.bytes_to_fetch),
                t.chunks_to_fetch,
                t.components_to_write,
                units::duration(plan.estimated_seconds)
            ),
            width,
            2,
        );
    } else {
        para(
            &mut out,
            &format!(
                "Plan: {}. Nothing to do: the target already matches the snapshot.",
                summary(plan)
            ),
            width,
            2,
        );
    }
    out
}
