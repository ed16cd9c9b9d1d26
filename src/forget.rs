//! `restore forget`: a retention policy with restic's semantics. Snapshots are grouped by
//! host and taken newest first. `--keep-last N` keeps the N newest. `--keep-hourly N` keeps,
//! for each of the last N hours that have snapshots, the newest snapshot of that hour; daily,
//! weekly (ISO 8601 weeks), monthly and yearly likewise, counted separately. A snapshot that
//! any rule keeps is kept; the rest are forgotten (their manifests and signatures removed).
//! Chunks stay until `prune`. A snapshot that cannot be read or verified is left alone.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::clock;
use crate::manifest::{self, SnapshotSummary};
use crate::signing::Trust;
use crate::store::Store;

#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub host: String,
    pub id: String,
    pub created: String,
    pub keep: bool,
    /// Which rules keep it ("last", "daily", ...), or why it is left alone.
    pub reasons: Vec<String>,
}

/// Which snapshots `policy` keeps, newest first within each host (restic's algorithm).
pub fn decide(policy: &Policy, snapshots: &[SnapshotSummary]) -> Vec<Verdict> {
    let mut by_host: std::collections::BTreeMap<&str, Vec<&SnapshotSummary>> =
        std::collections::BTreeMap::new();
    for s in snapshots {
        by_host.entry(s.host.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_host {
        list.sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
        let mut left = [
            policy.last,
            policy.hourly,
            policy.daily,
            policy.weekly,
            policy.monthly,
            policy.yearly,
        ];
        let mut last_bucket: [Option<String>; 6] = Default::default();
        const NAMES: [&str; 6] = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];
        for s in list {
            let secs = if s.refused.is_none() {
                clock::parse_rfc3339(&s.created)
            } else {
                None
            };
            let Some(secs) = secs else {
                out.push(Verdict {
                    host: s.host.clone(),
                    id: s.id.clone(),
                    created: s.created.clone(),
                    keep: true,
                    reasons: vec![format!(
                        "left alone: {}",
                        s.refused
                            .as_deref()
                            .unwrap_or("its creation time is not readable")
                    )],
                });
                continue;
            };
            let b = clock::buckets(secs);
            let keys = [
                s.id.clone(),
                format!("{:?}", b.hour),
                format!("{:?}", b.day),
                format!("{:?}", b.week),
                format!("{:?}", b.month),
                b.year.to_string(),
            ];
            let mut reasons = Vec::new();
            for rule in 0..6 {
                if left[rule] == 0 {
                    continue;
                }
                if rule == 0 || last_bucket[rule].as_deref() != Some(&keys[rule]) {
                    left[rule] -= 1;
                    last_bucket[rule] = Some(keys[rule].clone());
                    reasons.push(NAMES[rule].to_string());
                }
            }
            out.push(Verdict {
                host: s.host.clone(),
                id: s.id.clone(),
                created: s.created.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out
}

/// Forgets (unless `dry_run`) what `policy` does not keep; returns every verdict.
pub fn forget(
    store: &Store,
    host: Option<&str>,
    policy: &Policy,
    dry_run: bool,
) -> Result<Vec<Verdict>> {
    if policy.is_empty() {
        bail!(
            "forget needs a policy: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly"
        );
    }
    if !dry_run {
        store.writable()?;
    }
    let all = manifest::list(store, host, &Trust::default())?;
    let verdicts = decide(policy, &all);
    if !dry_run {
        let mut hosts = std::collections::BTreeSet::new();
        for v in verdicts.iter().filter(|v| !v.keep) {
            let key = manifest::Manifest::key(&v.host, &v.id);
            // The manifest first: without it the snapshot is gone; a signature left behind
            // signs nothing that exists.
            store.delete(&key)?;
            store.delete(&format!("{key}.minisig"))?;
            hosts.insert(v.host.clone());
        }
        for h in hosts {
            store.refresh_catalogue(&h)?;
        }
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, created: &str) -> SnapshotSummary {
        SnapshotSummary {
            host: host.into(),
            id: created.replace([':', '-', '.'], ""),
            created: created.into(),
            disks: 1,
            bytes: 1,
            signed_by: None,
            refused: None,
        }
    }

    fn kept(policy: Policy, snaps: &[SnapshotSummary]) -> Vec<String> {
        let mut k: Vec<String> = decide(&policy, snaps)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| v.created)
            .collect();
        k.sort();
        k
    }

    #[test]
    fn restic_semantics() {
        // Two snapshots a day for ten days, at 01:00 and 13:00.
        let mut snaps = Vec::new();
        for day in 1..=10 {
            for hour in [1, 13] {
                snaps.push(snap(
                    "a",
                    &format!("2026-03-{day:02}T{hour:02}:00:00.000000Z"),
                ));
            }
        }
        let last3 = kept(
            Policy {
                last: 3,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(
            last3,
            [
                "2026-03-09T13:00:00.000000Z",
                "2026-03-10T01:00:00.000000Z",
                "2026-03-10T13:00:00.000000Z"
            ]
        );
        // The newest of each of the last 3 days.
        let daily = kept(
            Policy {
                daily: 3,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(
            daily,
            [
                "2026-03-08T13:00:00.000000Z",
                "2026-03-09T13:00:00.000000Z",
                "2026-03-10T13:00:00.000000Z"
            ]
        );
        // Rules add up; a snapshot kept by two rules is kept once.
        let both = kept(
            Policy {
                last: 2,
                daily: 2,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(
            both,
            [
                "2026-03-09T13:00:00.000000Z",
                "2026-03-10T01:00:00.000000Z",
                "2026-03-10T13:00:00.000000Z"
            ]
        );
        // 2026-03-01 is a Sunday: ISO week 9; the 2nd..8th week 10; the 9th..10th week 11.
        let weekly = kept(
            Policy {
                weekly: 5,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(
            weekly,
            [
                "2026-03-01T13:00:00.000000Z",
                "2026-03-08T13:00:00.000000Z",
                "2026-03-10T13:00:00.000000Z"
            ]
        );
        // Hosts are separate; an unreadable snapshot is left alone.
        let mut other = snaps.clone();
        other.push(snap("b", "2020-01-01T00:00:00.000000Z"));
        let mut bad = snap("a", "garbage");
        bad.refused = Some("manifest does not parse".into());
        other.push(bad);
        let v = decide(
            &Policy {
                last: 1,
                ..Default::default()
            },
            &other,
        );
        assert!(v.iter().any(|v| v.host == "b" && v.keep));
        assert!(
            v.iter().any(|v| v.created == "garbage"
                && v.keep
                && v.reasons[0].starts_with("left alone"))
        );
        assert_eq!(v.iter().filter(|v| v.host == "a" && v.keep).count(), 2);
    }
}
