//! Where store objects physically live. A backend moves opaque bytes by key
//! ("chunks/ab/abcd...", "snapshots/web-3/ID.json"); it knows nothing of their meaning.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Failures a caller branches on: a missing object is not the same as a broken store.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} is missing from the store")]
    NotFound(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Marks a failure worth retrying (connection refused or reset, timeout, HTTP 5xx or 429, a
/// truncated body) in the context chain of a `BackendError::Other`. Everything else is
/// permanent: retrying a 403 or a corrupt object only delays the error.
#[derive(Debug, thiserror::Error)]
#[error("temporary failure")]
pub struct Temporary;

impl BackendError {
    pub fn temporary(e: anyhow::Error) -> BackendError {
        BackendError::Other(e.context(Temporary))
    }

    pub fn is_temporary(&self) -> bool {
        match self {
            BackendError::NotFound(_) => false,
            BackendError::Other(e) => e.downcast_ref::<Temporary>().is_some(),
        }
    }
}

/// The message for an object larger than anything of its kind can be.
pub fn too_large(key: &str, len: u64, max: u64) -> String {
    format!(
        "store object {key} is {len} bytes, more than the {max} bytes an object of its kind can hold; the store is damaged"
    )
}

pub trait Backend: Send + Sync {
    /// A human name for messages: the path or URL of the store.
    fn describe(&self) -> String;
    /// Reads an object of at most `max` bytes. A larger one is refused (a permanent error)
    /// without being read: a store is not trusted to size the memory it takes.
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError>;
    /// Writes `data` under `key` atomically: readers see the old state or all of the new bytes.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    fn exists(&self, key: &str) -> Result<bool>;
    /// Keys directly or indirectly under `prefix` (a folder ending in '/').
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Makes every object written so far durable; called before a manifest is committed.
    fn sync(&self) -> Result<()>;
    /// True when `list` is a real listing (a directory, S3), not a crawl of web pages.
    fn lists_cheaply(&self) -> bool {
        true
    }
    /// Fails with a clear message when this store cannot be written (HTTP).
    fn writable(&self) -> Result<()> {
        Ok(())
    }
}

/// A store in a local directory (also the layout served over HTTP or copied to S3).
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// Temp names start with '.', so listings and `latest` never see a half-written object.
fn temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{}-{name}", std::process::id(), n))
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        use std::io::Read;
        let path = self.path(key);
        let read = || -> std::io::Result<Vec<u8>> {
            let f = fs::File::open(&path)?;
            let len = f.metadata()?.len();
            if len > max {
                return Err(std::io::Error::other(too_large(key, len, max)));
            }
            let mut data = Vec::with_capacity(len as usize);
            f.take(max + 1).read_to_end(&mut data)?;
            if data.len() as u64 > max {
                return Err(std::io::Error::other(too_large(
                    key,
                    data.len() as u64,
                    max,
                )));
            }
            Ok(data)
        };
        match read() {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(BackendError::NotFound(key.to_string()))
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().context("store key without a folder")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = temp_name(&path);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            if key.ends_with(".json") {
                // Small metadata objects are synced one by one; chunks are synced in bulk by sync().
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("checking {}", path.display()))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(rel) = stack.pop() {
            let dir = self.path(&rel);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("listing {}", dir.display())));
                }
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(key);
                } else {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        let dir = fs::File::open(&self.root)
            .with_context(|| format!("opening {}", self.root.display()))?;
        rustix::fs::syncfs(&dir).with_context(|| format!("syncing {}", self.root.display()))?;
        Ok(())
    }
}
