//! Pairs snapshot disks with target disks: explicit `--map SOURCE=TARGET` first, then by
//! serial or WWN, then by exact size; refuses when two targets are equally good, and says
//! for every pair why it was made.

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};

use crate::disk::Disk;
use crate::manifest::Manifest;
use crate::units;

pub struct Pair {
    pub disk: usize,
    pub target: PathBuf,
    pub why: String,
}

/// `maps` are (snapshot disk name, target path) pairs from --map.
pub fn pair(m: &Manifest, targets: &[PathBuf], maps: &[(String, PathBuf)]) -> Result<Vec<Pair>> {
    ensure!(
        !targets.is_empty() || !maps.is_empty(),
        "no target disk given"
    );
    let mut all: Vec<PathBuf> = targets.to_vec();
    for (_, t) in maps {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    let mut opened = Vec::new();
    for t in &all {
        opened.push(Disk::open_read(t)?);
    }
    let names: Vec<&str> = m.disks.iter().map(|d| d.name.as_str()).collect();
    let mut pairs: Vec<Pair> = Vec::new();
    let mut free: Vec<usize> = (0..all.len()).collect();
    let mut todo: Vec<usize> = (0..m.disks.len()).collect();
    for (source, target) in maps {
        let Some(d) = m.disks.iter().position(|d| &d.name == source) else {
            bail!(
                "--map {source}=...: snapshot {} has no disk {source} (it has {})",
                m.id,
                names.join(", ")
            );
        };
        ensure!(
            todo.contains(&d),
            "--map names snapshot disk {source} twice"
        );
        let t = all.iter().position(|p| p == target).expect("added above");
        ensure!(
            free.contains(&t),
            "--map gives target {} to two snapshot disks",
            target.display()
        );
        todo.retain(|&x| x != d);
        free.retain(|&x| x != t);
        pairs.push(Pair {
            disk: d,
            target: target.clone(),
            why: "--map".into(),
        });
    }
    // With explicit maps and no other targets, only the mapped disks are restored.
    if !maps.is_empty() && free.is_empty() {
        todo.clear();
    }
    for d in todo.clone() {
        let rec = &m.disks[d];
        let id = &rec.identity;
        let by_identity: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&t| {
                let ti = &opened[t].identity;
                (id.serial.is_some() && id.serial == ti.serial)
                    || (id.wwn.is_some() && id.wwn == ti.wwn)
            })
            .collect();
        let (choice, why) = if by_identity.len() == 1 {
            (by_identity[0], "same serial/WWN".to_string())
        } else {
            let same_size: Vec<usize> = free
                .iter()
                .copied()
                .filter(|&t| opened[t].size == rec.size)
                .collect();
            match same_size.len() {
                1 => (
                    same_size[0],
                    format!("same size ({})", units::bytes(rec.size)),
                ),
                0 => continue,
                _ => bail!(
                    "snapshot disk {} ({}) could go to {}: they are equally good (same size, no serial); say which with --map {}=TARGET",
                    rec.name,
                    units::bytes(rec.size),
                    same_size
                        .iter()
                        .map(|&t| all[t].display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    rec.name
                ),
            }
        };
        todo.retain(|&x| x != d);
        free.retain(|&x| x != choice);
        pairs.push(Pair {
            disk: d,
            target: all[choice].clone(),
            why,
        });
    }
    // One disk and one target left over: pair them whatever their sizes (new hardware).
    if todo.len() == 1 && free.len() == 1 {
        let (d, t) = (todo[0], free[0]);
        pairs.push(Pair {
            disk: d,
            target: all[t].clone(),
            why: format!(
                "only target left ({} for a {} disk)",
                units::bytes(opened[t].size),
                units::bytes(m.disks[d].size)
            ),
        });
        todo.clear();
        free.clear();
    }
    if !todo.is_empty() {
        let left: Vec<String> = todo
            .iter()
            .map(|&d| format!("{} ({})", m.disks[d].name, units::bytes(m.disks[d].size)))
            .collect();
        let targets: Vec<String> = free
            .iter()
            .map(|&t| format!("{} ({})", all[t].display(), units::bytes(opened[t].size)))
            .collect();
        bail!(
            "cannot pair snapshot disk(s) {} with target(s) {}: no serial or size match; say which with --map SOURCE=TARGET",
            left.join(", "),
            if targets.is_empty() {
                "(none left)".to_string()
            } else {
                targets.join(", ")
            }
        );
    }
    if !free.is_empty() {
        bail!(
            "target(s) {} match no snapshot disk; remove them or use --map",
            free.iter()
                .map(|&t| all[t].display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    pairs.sort_by_key(|p| p.disk);
    Ok(pairs)
}

/// Parses `--map SOURCE=TARGET`.
pub fn parse_map(s: &str) -> Result<(String, PathBuf)> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), PathBuf::from(b))),
        _ => bail!("--map {s:?}: expected SOURCE=TARGET, e.g. --map sda=/dev/nvme0n1"),
    }
}
