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
    /// `get` into `buf` (replacing what it held), keeping its allocation where the backend
    /// can: a restore reads every chunk through a few recycled buffers.
    fn get_into(&self, key: &str, max: u64, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        *buf = self.get(key, max)?;
        Ok(())
    }
    /// Writes `data` under `key` atomically: readers see the old state or all of the new bytes.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    fn exists(&self, key: &str) -> Result<bool>;
    /// The size of an object, None when it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Bytes `offset..offset+len` of an object, where the backend reads ranges cheaply (a
    /// local file); None elsewhere.
    fn read_range(&self, _key: &str, _offset: u64, _len: u64) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Whether `read_range` works here (and costs no more than a small read).
    fn reads_ranges(&self) -> bool {
        false
    }
    /// Keys directly or indirectly under `prefix` (a folder ending in '/').
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Keys under `prefix` with their sizes (one listing where the backend has one).
    fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for key in self.list(prefix)? {
            if let Some(size) = self.size(&key)? {
                out.push((key, size));
            }
        }
        Ok(out)
    }
    /// Removes an object; one that is already gone is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Makes every object written so far durable; called before a manifest is committed.
    fn sync(&self) -> Result<()>;
    /// True when `list` is a real listing (a directory, S3), not a crawl of web pages.
    fn lists_cheaply(&self) -> bool {
        true
    }
    /// Keys under `prefix` when there are at most `max` of them, None when there are more
    /// (the listing stops there) or the backend answers single keys cheaper than a listing
    /// (a directory, HTTP): a short listing of a small store instead of a request per key.
    fn list_at_most(&self, prefix: &str, max: usize) -> Result<Option<Vec<String>>> {
        let _ = (prefix, max);
        Ok(None)
    }
    /// Keys directly in `folder` (ending in '/') as a web server's directory index page
    /// names them; None where there is no such page (a listing backend, a web server
    /// without index pages, any error). A page is only evidence that a key exists: a key
    /// it does not name is checked by itself.
    fn folder_page(&self, folder: &str) -> Option<Vec<String>> {
        let _ = folder;
        None
    }
    /// Fails with a clear message when this store cannot be written (HTTP).
    fn writable(&self) -> Result<()> {
        Ok(())
    }
}

/// A store in a local directory (also the layout served over HTTP or copied to S3).
pub struct LocalBackend {
    root: PathBuf,
    /// Directories that received a rename since the last `sync`: their entries are made
    /// durable there (a manifest's directory at once).
    renamed_in: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl LocalBackend {
    pub fn new(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.to_path_buf(),
            renamed_in: std::sync::Mutex::new(std::collections::BTreeSet::new()),
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
        let mut data = Vec::new();
        self.get_into(key, max, &mut data)?;
        Ok(data)
    }

    fn get_into(&self, key: &str, max: u64, data: &mut Vec<u8>) -> Result<(), BackendError> {
        use std::io::Read;
        let path = self.path(key);
        let mut read = || -> std::io::Result<()> {
            let f = fs::File::open(&path)?;
            let len = f.metadata()?.len();
            if len > max {
                return Err(std::io::Error::other(too_large(key, len, max)));
            }
            data.clear();
            data.reserve_exact(len as usize);
            f.take(max + 1).read_to_end(data)?;
            if data.len() as u64 > max {
                return Err(std::io::Error::other(too_large(
                    key,
                    data.len() as u64,
                    max,
                )));
            }
            Ok(())
        };
        match read() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(BackendError::NotFound(key.to_string()))
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }

    /// Durable: the bytes are on disk before the name points at them (a power cut never
    /// leaves a named but empty object), and the directory entry is synced with the next
    /// `sync` (at once for metadata, which commits snapshots).
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().context("store key without a folder")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = temp_name(&path);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            if !key.starts_with("chunks/") && !key.starts_with("indexes/") {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        })?;
        self.renamed_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf());
        Ok(())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("checking {}", path.display()))),
        }
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let path = self.path(key);
        let f = fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(0)];
        let n = f
            .read_at(&mut buf, offset)
            .with_context(|| format!("reading {}", path.display()))?;
        buf.truncate(n);
        Ok(Some(buf))
    }

    fn reads_ranges(&self) -> bool {
        true
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
        }
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
        let dirs = std::mem::take(&mut *self.renamed_in.lock().unwrap_or_else(|p| p.into_inner()));
        for d in dirs {
            fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing directory {}", d.display()))?;
        }
        Ok(())
    }
}
