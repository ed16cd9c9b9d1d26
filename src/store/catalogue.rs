//! Which snapshots a store holds. Local and S3 stores list their `snapshots/` folder; a static
//! web server cannot list, so capture also keeps a catalogue: `snapshots/<host>/index.json`
//! (that host's snapshot ids) and `snapshots/index.json` (the hosts). Each is rebuilt from a
//! listing after the manifest is committed and checked again after it is written, so many
//! hosts capturing at once all end up listed (a host's catalogue is only written by that
//! host's captures, and the list of hosts only changes when a new host appears).

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::Store;
use super::backend::BackendError;
use crate::manifest::{valid_host, valid_id};

pub const TOP: &str = "snapshots/index.json";

fn host_key(host: &str) -> String {
    format!("snapshots/{host}/index.json")
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalogue {
    format: String,
    #[serde(default)]
    version: u32,
    /// Version 2, top level: the hosts with snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<String>,
    /// Version 2, per host: snapshot ids. Version 1 (one catalogue for all): full keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    snapshots: Vec<String>,
}

fn parse(raw: &[u8]) -> Result<Catalogue> {
    let c: Catalogue = serde_json::from_slice(raw).context("not a valid catalogue")?;
    ensure!(
        c.format == "restore-catalogue",
        "not a restore catalogue (format {:?})",
        c.format
    );
    Ok(c)
}

/// The keys a catalogue lists (for the tests of decoders).
#[cfg(test)]
pub fn parse_catalogue(raw: &[u8]) -> Result<Vec<String>> {
    let c = parse(raw)?;
    Ok(c.hosts.into_iter().chain(c.snapshots).collect())
}

/// `snapshots/<host>/<id>.json` with a valid host and id (not a catalogue, not a signature).
pub fn parse_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("snapshots/")?;
    let (host, file) = rest.split_once('/')?;
    let id = file.strip_suffix(".json")?;
    (valid_host(host).is_ok() && valid_id(id).is_ok()).then(|| (host.to_string(), id.to_string()))
}

impl Store {
    /// (host, id) of every snapshot, or of one host's, sorted.
    pub fn snapshot_keys(&self, host: Option<&str>) -> Result<Vec<(String, String)>> {
        let prefix = match host {
            Some(h) => {
                valid_host(h)?;
                format!("snapshots/{h}/")
            }
            None => "snapshots/".to_string(),
        };
        let mut out: Vec<(String, String)> = if self.backend.lists_cheaply() {
            self.backend
                .list(&prefix)?
                .iter()
                .filter_map(|k| parse_key(k))
                .collect()
        } else {
            match self.catalogued_keys(host)? {
                Some(keys) => keys,
                // A copy made without a catalogue: the web server's directory pages.
                None => self
                    .backend
                    .list(&prefix)?
                    .iter()
                    .filter_map(|k| parse_key(k))
                    .collect(),
            }
        };
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn read_catalogue(&self, key: &str) -> Result<Option<Catalogue>> {
        match self.backend.get(key, super::MAX_CATALOGUE) {
            Ok(raw) => {
                Ok(Some(parse(&raw).with_context(|| {
                    format!("{key} of store {}", self.describe())
                })?))
            }
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(BackendError::Other(e)) => Err(e),
        }
    }

    fn catalogued_keys(&self, host: Option<&str>) -> Result<Option<Vec<(String, String)>>> {
        let Some(top) = self.read_catalogue(TOP)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        if top.version < 2 {
            out.extend(top.snapshots.iter().filter_map(|k| parse_key(k)));
        } else {
            for h in top.hosts.iter().filter(|h| valid_host(h).is_ok()) {
                if host.is_some_and(|want| want != h) {
                    continue;
                }
                if let Some(c) = self.read_catalogue(&host_key(h))? {
                    out.extend(
                        c.snapshots
                            .iter()
                            .filter(|id| valid_id(id).is_ok())
                            .map(|id| (h.clone(), id.clone())),
                    );
                }
            }
        }
        out.retain(|(h, _)| host.is_none_or(|want| want == h));
        Ok(Some(out))
    }

    /// Rewrites the catalogue entries of `host` (and the list of hosts when it changed) from
    /// listings, then checks the listing again: a capture that finished meanwhile is added.
    pub fn refresh_catalogue(&self, host: &str) -> Result<()> {
        if !self.backend.lists_cheaply() {
            return Ok(());
        }
        let ids = |store: &Store| -> Result<Vec<String>> {
            Ok(store
                .backend
                .list(&format!("snapshots/{host}/"))?
                .iter()
                .filter_map(|k| parse_key(k))
                .map(|(_, id)| id)
                .collect())
        };
        let mut want = ids(self)?;
        for _ in 0..4 {
            self.write_catalogue(
                &host_key(host),
                &Catalogue {
                    format: "restore-catalogue".into(),
                    version: 2,
                    hosts: Vec::new(),
                    snapshots: want.clone(),
                },
            )?;
            let again = ids(self)?;
            if again == want {
                break;
            }
            want = again;
        }
        let hosts = |store: &Store| -> Result<Vec<String>> {
            let mut hs: Vec<String> = store
                .backend
                .list("snapshots/")?
                .iter()
                .filter_map(|k| parse_key(k))
                .map(|(h, _)| h)
                .collect();
            hs.sort();
            hs.dedup();
            Ok(hs)
        };
        let mut want = hosts(self)?;
        for _ in 0..4 {
            let have = self
                .read_catalogue(TOP)?
                .map(|c| c.hosts)
                .unwrap_or_default();
            if have == want {
                break;
            }
            self.write_catalogue(
                TOP,
                &Catalogue {
                    format: "restore-catalogue".into(),
                    version: 2,
                    hosts: want.clone(),
                    snapshots: Vec::new(),
                },
            )?;
            want = hosts(self)?;
        }
        Ok(())
    }

    fn write_catalogue(&self, key: &str, c: &Catalogue) -> Result<()> {
        self.backend.put(key, &serde_json::to_vec_pretty(c)?)
    }
}
