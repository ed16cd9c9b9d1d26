//! The backup store: config, content-addressed chunks and chunk indexes, snapshot manifests.
//! The layout is the same wherever the bytes live (see docs/store-format.md); `Backend`
//! hides where that is.

pub mod backend;
pub mod catalogue;
pub mod frame;
pub mod http;
pub mod index;
pub mod lock;
mod memo;
pub use memo::Wanted;
mod presence;
pub mod remote;
pub mod retry;
pub mod s3;
mod transport;

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use backend::{Backend, BackendError, LocalBackend};
use index::ChunkIndex;

pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
pub const MIN_CHUNK_SIZE: u32 = 256 << 10;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
const ZSTD_LEVEL: i32 = 3;
/// The largest objects of each kind a store may hand us; anything larger is refused unread.
const MAX_CONFIG: u64 = 64 << 10;
pub const MAX_MANIFEST: u64 = 64 << 20;
pub const MAX_CATALOGUE: u64 = 64 << 20;
/// A chunk index covers at most this many bytes of disk (32 chunks per KiB of index at the
/// smallest chunk size: 1 GiB of index at 1 MiB chunks is a 32 TiB partition).
const MAX_INDEX_BODY: u64 = 1 << 30;

/// The largest content-addressed object: a chunk is at most 16 MiB, a used-space map 64 MiB.
pub const MAX_OBJECT: u64 = 64 << 20;

/// Compresses `data` with zstd at ZSTD_LEVEL and hands the frame to `f`. Each thread keeps
/// one compression context and one output buffer: a context holds megabytes of tables, and
/// making it and the output afresh per chunk cost allocations each time (under musl's
/// allocator, fresh mappings faulted in page by page). The frame is the same as a new
/// context's.
fn with_compressed<T>(data: &[u8], f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    thread_local! {
        static CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
        static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    OUT.with_borrow_mut(|out| {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        CCTX.with_borrow_mut(|c| {
            let c = match c {
                Some(c) => c,
                None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            };
            c.compress_to_buffer(data, out)
        })
        .context("compressing a chunk")?;
        f(out)
    })
}

/// The most a zstd frame of `len` bytes may take when stored.
fn packed_bound(len: u64) -> u64 {
    // zstd's worst case is its input plus a small header and block overheads.
    len + len / 128 + 1024
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub format: String,
    pub version: u32,
    pub chunk_size: u32,
    pub hash: String,
    pub compression: String,
}

impl StoreConfig {
    pub fn new(chunk_size: u32) -> Result<StoreConfig> {
        ensure!(
            (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) && chunk_size.is_power_of_two(),
            "chunk size {chunk_size} is not allowed: use a power of two from 256 KiB to 16 MiB"
        );
        Ok(StoreConfig {
            format: "restore-store".into(),
            version: 1,
            chunk_size,
            hash: "blake3".into(),
            compression: "zstd".into(),
        })
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.format == "restore-store",
            "config.json does not describe a restore store"
        );
        ensure!(
            self.version == 1,
            "store format version {} is not supported (1 expected)",
            self.version
        );
        ensure!(
            self.hash == "blake3" && self.compression == "zstd",
            "store uses an unknown hash or compression"
        );
        StoreConfig::new(self.chunk_size).map(|_| ())
    }
}

pub struct Store {
    backend: Box<dyn Backend>,
    pub config: StoreConfig,
    /// Verified indexes and small chunks this run has fetched already.
    memo: memo::Memo,
}

/// A chunk as `get_packed` returns it, before `unpack`.
pub enum Packed {
    /// The stored object: compressed and not yet checked.
    Stored(Vec<u8>),
    /// The chunk itself, checked when this run first read it.
    Verified(Vec<u8>),
}

impl Packed {
    /// The buffer, to read the next chunk into (`Store::get_packed_in`).
    pub fn into_buffer(self) -> Vec<u8> {
        match self {
            Packed::Stored(b) | Packed::Verified(b) => b,
        }
    }
}

/// What `put_chunk` did.
#[derive(Debug)]
pub enum Stored {
    /// The store already held the chunk, whole.
    Existed,
    /// New: this many compressed bytes were written.
    Written(u64),
    /// The stored object was damaged (why) and was written again.
    Repaired(u64, String),
}

pub fn shard(kind: &str, id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{kind}/{}/{hex}", &hex[..2])
}

impl Store {
    /// Opens an existing store; a path that holds no store is an error, never created.
    pub fn open(location: &Location) -> Result<Store> {
        let backend = backend_for(location)?;
        let raw = match backend.get("config.json", MAX_CONFIG) {
            Ok(raw) => raw,
            Err(BackendError::NotFound(_)) => bail!(
                "no store at {location} (config.json not found); check --store, or create one with `restore capture`"
            ),
            Err(BackendError::Other(e)) => {
                return Err(e.context(format!("opening store {location}")));
            }
        };
        let config: StoreConfig = serde_json::from_slice(&raw)
            .with_context(|| format!("store {location}: config.json is not valid"))?;
        config
            .check()
            .with_context(|| format!("store {location}"))?;
        Ok(Store {
            backend,
            config,
            memo: memo::Memo::default(),
        })
    }

    /// Opens the store, creating it with `chunk_size` when the location is new or empty.
    pub fn open_or_create(location: &Location, chunk_size: Option<u32>) -> Result<(Store, bool)> {
        let open_existing = || -> Result<(Store, bool)> {
            let store = Store::open(location)?;
            if let Some(cs) = chunk_size {
                ensure!(
                    cs == store.config.chunk_size,
                    "store {location} uses {}-byte chunks; --chunk-size {cs} cannot change that",
                    store.config.chunk_size
                );
            }
            Ok((store, false))
        };
        let backend = backend_for(location)?;
        if backend.exists("config.json")? {
            return open_existing();
        }
        backend.writable()?;
        let not_empty = match location {
            Location::Local(local) => {
                local.exists()
                    && std::fs::read_dir(local)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(true)
            }
            _ => !backend.list("")?.is_empty(),
        };
        if not_empty {
            // Hosts of a fleet capturing into a new store at once: another one may have made
            // it (config.json first, then its chunks) since we looked. That is our store.
            if backend.exists("config.json")? {
                return open_existing();
            }
            bail!(
                "{location} is not empty and holds no store (config.json missing); refusing to create one there"
            );
        }
        let config = StoreConfig::new(chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE))?;
        backend.put("config.json", &serde_json::to_vec_pretty(&config)?)?;
        Ok((
            Store {
                backend,
                config,
                memo: memo::Memo::default(),
            },
            true,
        ))
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether listing is a real listing (a directory, S3), not a crawl of web pages.
    pub fn lists_cheaply(&self) -> bool {
        self.backend.lists_cheaply()
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.backend.exists(&shard("chunks", id))
    }

    /// Stores a chunk unless the store already holds it whole. An existing object is not
    /// trusted blindly: its size must be plausible and (where ranges read cheaply, a local
    /// store) its zstd frame must end where the object does; `verify` reads and hashes it. A
    /// damaged one is written again.
    pub fn put_chunk(&self, id: &ChunkId, data: &[u8], verify: bool) -> Result<Stored> {
        let key = shard("chunks", id);
        let damage = match self.backend.size(&key)? {
            None => None,
            Some(size) => match self.chunk_problem(id, &key, size, data.len() as u64, verify) {
                // Without cheap range reads (S3) the frame cannot be walked: the object must
                // be exactly as long as this chunk compresses to (zstd is deterministic).
                None if !verify && !self.backend.reads_ranges() => {
                    return with_compressed(data, |packed| {
                        if packed.len() as u64 == size {
                            return Ok(Stored::Existed);
                        }
                        self.backend.put(&key, packed)?;
                        let why = format!(
                            "it is {size} bytes, the chunk compresses to {}",
                            packed.len()
                        );
                        Ok(Stored::Repaired(packed.len() as u64, why))
                    });
                }
                None => return Ok(Stored::Existed),
                Some(why) => Some(why),
            },
        };
        with_compressed(data, |packed| {
            self.backend.put(&key, packed)?;
            Ok(match damage {
                None => Stored::Written(packed.len() as u64),
                Some(why) => Stored::Repaired(packed.len() as u64, why),
            })
        })
    }

    /// What is wrong with the stored object of a chunk of `len` bytes, if anything (for a
    /// capture deciding whether to reuse it, and for `check`).
    pub fn chunk_problem(
        &self,
        id: &ChunkId,
        key: &str,
        size: u64,
        len: u64,
        read_data: bool,
    ) -> Option<String> {
        if size == 0 {
            return Some("it is empty".into());
        }
        if size > packed_bound(len) {
            return Some(format!(
                "it is {size} bytes, more than a {len}-byte chunk can take"
            ));
        }
        let read = |off: u64, n: u64| -> Result<Vec<u8>> {
            self.backend
                .read_range(key, off, n)?
                .context("no range reads")
        };
        if read_data {
            return self
                .fetch_chunk(id, len as usize)
                .err()
                .map(|e| format!("{e:#}"));
        }
        if self.backend.reads_ranges() {
            return frame::check(&read, size, len).err();
        }
        None
    }

    /// Fetches a chunk, decompresses it and checks it hashes to its name. `expected_len` is
    /// at most the store's chunk size (or a table sector's length): it bounds what is read.
    pub fn get_chunk(&self, id: &ChunkId, expected_len: usize) -> Result<Vec<u8>> {
        let packed = self.get_packed(id, expected_len)?;
        self.unpack(id, expected_len, packed)
    }

    /// The network (or disk) half of `get_chunk`: the chunk's stored bytes, or the chunk
    /// itself when this run already holds it verified. `unpack` does the CPU half, so a
    /// restore can keep its requests in flight while other threads decompress and hash.
    pub fn get_packed(&self, id: &ChunkId, expected_len: usize) -> Result<Packed> {
        self.get_packed_in(id, expected_len, Vec::new())
    }

    /// `get_packed` reading into `buf`, a buffer handed back by `Packed::into_buffer`, so a
    /// restore reads its chunks through a few allocations instead of one per chunk.
    pub fn get_packed_in(
        &self,
        id: &ChunkId,
        expected_len: usize,
        mut buf: Vec<u8>,
    ) -> Result<Packed> {
        if expected_len <= memo::SMALL_CHUNK
            && let Some(data) = self.memo.chunk(id)
        {
            // Verified when it was kept; its length is part of what its name hashes.
            ensure!(
                data.len() == expected_len,
                "chunk {id} in store {} is corrupt: its bytes do not match its hash",
                self.describe()
            );
            return Ok(Packed::Verified(data.to_vec()));
        }
        if let Some(why) = self.memo.failure(id) {
            bail!(why);
        }
        self.fetch_packed_into(id, expected_len, &mut buf)?;
        Ok(Packed::Stored(buf))
    }

    /// Decompresses what `get_packed` returned and checks that it hashes to `id`.
    pub fn unpack(&self, id: &ChunkId, expected_len: usize, packed: Packed) -> Result<Vec<u8>> {
        match packed {
            Packed::Verified(data) => Ok(data),
            stored => {
                let mut data = Vec::new();
                self.unpack_into(id, expected_len, &stored, &mut data)?;
                Ok(data)
            }
        }
    }

    /// `unpack` into `out`, whose allocation is kept: a restore's writer thread decompresses
    /// every chunk into the same buffer instead of allocating (and, under musl's allocator,
    /// mapping and faulting in) a fresh one per chunk.
    pub fn unpack_into(
        &self,
        id: &ChunkId,
        expected_len: usize,
        packed: &Packed,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match packed {
            Packed::Verified(data) => {
                out.clear();
                out.extend_from_slice(data);
            }
            Packed::Stored(packed) => {
                self.decompress_into(id, expected_len, packed, out)?;
                if expected_len <= memo::SMALL_CHUNK {
                    self.memo.keep_chunk(id, out);
                }
            }
        }
        Ok(())
    }

    /// As `get_chunk`, always from the store (what a check of the store must read).
    fn fetch_chunk(&self, id: &ChunkId, expected_len: usize) -> Result<Vec<u8>> {
        let packed = self.fetch_packed(id, expected_len)?;
        self.decompress(id, expected_len, &packed)
    }

    fn fetch_packed(&self, id: &ChunkId, expected_len: usize) -> Result<Vec<u8>> {
        let mut packed = Vec::new();
        self.fetch_packed_into(id, expected_len, &mut packed)?;
        Ok(packed)
    }

    fn fetch_packed_into(
        &self,
        id: &ChunkId,
        expected_len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        ensure!(
            expected_len as u64 <= MAX_OBJECT,
            "object {id} would be {expected_len} bytes, larger than any object of store {}",
            self.describe()
        );
        let key = shard("chunks", id);
        self.backend
            .get_into(&key, packed_bound(expected_len as u64), buf)
            .map_err(|e| match e {
                BackendError::NotFound(_) => {
                    anyhow::anyhow!("chunk {id} is missing from store {}", self.describe())
                }
                BackendError::Other(e) => e.context(format!(
                    "fetching chunk {id} from store {}",
                    self.describe()
                )),
            })
    }

    fn decompress(&self, id: &ChunkId, expected_len: usize, packed: &[u8]) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.decompress_into(id, expected_len, packed, &mut data)?;
        Ok(data)
    }

    /// Decompresses into `out` (at most its capacity, which is made at least `expected_len`)
    /// and checks that the result is `expected_len` bytes that hash to `id`.
    fn decompress_into(
        &self,
        id: &ChunkId,
        expected_len: usize,
        packed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        // One decompression context per thread: creating one per chunk showed in profiles.
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        out.clear();
        out.reserve_exact(expected_len.max(1));
        DCTX.with_borrow_mut(|d| {
            let d = match d {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new()?),
            };
            d.decompress_to_buffer(packed, out)
        })
        .map_err(|e| anyhow::anyhow!("chunk {id} in store {} is corrupt: {e}", self.describe()))?;
        ensure!(
            out.len() == expected_len && ChunkId::of(out) == *id,
            "chunk {id} in store {} is corrupt: its bytes do not match its hash",
            self.describe()
        );
        Ok(())
    }

    /// Stores a chunk index unless the store holds it whole already (checked as chunks are).
    pub fn put_index(&self, index: &ChunkIndex) -> Result<ChunkId> {
        let body = index.encode();
        let id = ChunkId::of(&body);
        let key = shard("indexes", &id);
        let sound = match self.backend.size(&key)? {
            None => false,
            Some(size) if size == 0 || size > packed_bound(body.len() as u64) => false,
            Some(size) if self.backend.reads_ranges() => {
                let read = |off: u64, n: u64| -> Result<Vec<u8>> {
                    self.backend
                        .read_range(&key, off, n)?
                        .context("no range reads")
                };
                frame::check(&read, size, body.len() as u64).is_ok()
            }
            Some(_) => true,
        };
        if !sound {
            with_compressed(&body, |packed| self.backend.put(&key, packed))?;
        }
        Ok(id)
    }

    /// Fetches the chunk index of a component of `covers` bytes. Its size is known before a
    /// byte is read or inflated: an object that is or inflates to more is corrupt.
    pub fn get_index(&self, id: &ChunkId, covers: u64) -> Result<ChunkIndex> {
        if let Some(index) = self.memo.index(id, covers) {
            return Ok((*index).clone());
        }
        if let Some(why) = self.memo.failure(id) {
            bail!(why);
        }
        let index = std::sync::Arc::new(self.fetch_index(id, covers)?);
        self.memo.keep_index(id, covers, &index);
        Ok(std::sync::Arc::unwrap_or_clone(index))
    }

    fn fetch_index(&self, id: &ChunkId, covers: u64) -> Result<ChunkIndex> {
        use std::io::Read;
        let chunks = ChunkIndex::chunk_count(covers, self.config.chunk_size);
        let body_len = chunks
            .checked_mul(32)
            .and_then(|n| n.checked_add(index::HEADER_LEN as u64))
            .filter(|&n| n <= MAX_INDEX_BODY)
            .with_context(|| {
                format!(
                    "chunk index {id} would cover {covers} bytes, more than restore handles in one partition"
                )
            })?;
        let key = shard("indexes", id);
        let packed = self
            .backend
            .get(&key, packed_bound(body_len))
            .map_err(|e| match e {
                BackendError::NotFound(_) => anyhow::anyhow!(
                    "chunk index {id} is missing from store {}; the snapshot is incomplete",
                    self.describe()
                ),
                BackendError::Other(e) => e.context(format!("fetching chunk index {id}")),
            })?;
        let mut body = Vec::new();
        zstd::stream::read::Decoder::new(&packed[..])
            .and_then(|d| d.take(body_len + 1).read_to_end(&mut body))
            .map_err(|e| {
                anyhow::anyhow!(
                    "chunk index {id} in store {} is corrupt: {e}",
                    self.describe()
                )
            })?;
        ensure!(
            body.len() as u64 == body_len,
            "chunk index {id} in store {} is corrupt: it holds {} bytes, a component of {covers} bytes needs {body_len}",
            self.describe(),
            body.len()
        );
        ensure!(
            ChunkId::of(&body) == *id,
            "chunk index {id} in store {} is corrupt",
            self.describe()
        );
        let index = ChunkIndex::decode(&body).with_context(|| format!("chunk index {id}"))?;
        ensure!(
            index.chunk_size == self.config.chunk_size && index.length == covers,
            "chunk index {id} covers {} bytes in {}-byte chunks, the snapshot says {covers} bytes in the store's {}-byte chunks",
            index.length,
            index.chunk_size,
            self.config.chunk_size
        );
        Ok(index)
    }

    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    /// Commits a snapshot: its signature (when signed), then the manifest (one atomic write:
    /// the snapshot exists from then on), then the catalogue entries that let static web
    /// servers list it (rebuilt from a listing, so races between captures heal).
    pub fn commit_snapshot(
        &self,
        host: &str,
        id: &str,
        manifest: &[u8],
        signature: Option<&str>,
    ) -> Result<()> {
        let key = crate::manifest::Manifest::key(host, id);
        if let Some(sig) = signature {
            self.backend
                .put(&format!("{key}.minisig"), sig.as_bytes())?;
        }
        self.memo.forget_manifest(&key);
        self.backend.put(&key, manifest)?;
        self.refresh_catalogue(host)
            .context("the snapshot is committed, but updating the catalogue failed")
    }

    /// Removes objects (prune and forget only).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.memo.forget_manifest(key);
        self.backend.delete(key)
    }

    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(key)
    }

    pub fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.backend.list_sized(prefix)
    }

    pub fn put_object(&self, key: &str, data: &[u8]) -> Result<()> {
        self.memo.forget_manifest(key);
        self.backend.put(key, data)
    }

    pub fn writable(&self) -> Result<()> {
        self.backend.writable()
    }

    /// A manifest or another small metadata object, at most `max` bytes.
    pub fn get_object(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        self.backend.get(key, max)
    }

    /// A snapshot manifest (`snapshots/HOST/ID.json`), at most `max` bytes: listing the
    /// snapshots and then loading the one chosen reads it once.
    pub fn get_manifest(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        if let Some(raw) = self.memo.manifest(key)
            && raw.len() as u64 <= max
        {
            return Ok(raw.to_vec());
        }
        let raw = self.backend.get(key, max)?;
        self.memo.keep_manifest(key, &raw);
        Ok(raw)
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.backend.list(prefix)
    }
}

/// Where a store lives, from `--store`: a path or file:// URL, http(s)://, or s3://. Parsed
/// once, where the text enters the program; a saved plan carries it in its text form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Http(HttpLocation),
    S3 { bucket: String, prefix: String },
}

/// An http(s):// store: its URL without credentials, and the credentials apart, so that they
/// never reach a message, a log or a plan file (shown as `https://***@host/...`).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpLocation {
    /// The URL without user or password.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for HttpLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpLocation({})", self.redacted())
    }
}

/// What a plan file saves in place of credentials.
const REDACTED: &str = "***";

impl HttpLocation {
    fn parse(text: &str) -> Result<HttpLocation> {
        let mut url = reqwest::Url::parse(text)
            .map_err(|e| anyhow::anyhow!("store URL {} is not valid: {e}", redact_text(text)))?;
        let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(percent_decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(HttpLocation {
            url: url.to_string(),
            user,
            password,
        })
    }

    /// True when credentials were saved as `***` (a plan file): the real ones must be given.
    pub fn lacks_credentials(&self) -> bool {
        self.user.as_deref() == Some(REDACTED)
    }

    /// The URL as it may be shown and saved.
    pub fn redacted(&self) -> String {
        if self.user.is_none() && self.password.is_none() {
            return self.url.clone();
        }
        match self.url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{REDACTED}@{rest}"),
            None => self.url.clone(),
        }
    }
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A store URL as typed, with any `user:password@` replaced, for an error about the URL itself.
fn redact_text(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) if authority.contains('@') => {
                let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
                format!("{scheme}://{REDACTED}@{host}/{path}")
            }
            None if rest.contains('@') => {
                let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
                format!("{scheme}://{REDACTED}@{host}")
            }
            _ => text.to_string(),
        },
        None => text.to_string(),
    }
}

impl Location {
    pub fn parse(location: &str) -> Result<Location> {
        ensure!(!location.is_empty(), "empty store location");
        let Some((scheme, rest)) = location.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(location)));
        };
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                ensure!(!rest.is_empty(), "empty store location {location}");
                Location::Local(PathBuf::from(rest))
            }
            "http" | "https" => Location::Http(HttpLocation::parse(location)?),
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                ensure!(
                    !bucket.is_empty(),
                    "store URL {location} names no bucket (s3://BUCKET/PREFIX)"
                );
                Location::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                }
            }
            _ => bail!(
                "store URL scheme {}:// is not supported; use a directory, file://, http://, https:// or s3://",
                redact_text(scheme)
            ),
        })
    }

    /// The same location with a relative directory made absolute, for a plan file that may be
    /// applied from another working directory.
    pub fn absolute(&self) -> Result<Location> {
        Ok(match self {
            Location::Local(p) => Location::Local(
                std::path::absolute(p)
                    .with_context(|| format!("resolving store path {}", p.display()))?,
            ),
            other => other.clone(),
        })
    }

    /// The same store, whatever credentials either names.
    pub fn same_store(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Http(a), Location::Http(b)) => a.url == b.url,
            (a, b) => a == b,
        }
    }

    /// A plan file's http store saved without its credentials gets them from `with` (the
    /// operator's RESTORE_STORE) when that names the same store.
    pub fn with_credentials_from(&self, with: Option<&Location>) -> Result<Location> {
        match (self, with) {
            (Location::Http(h), _) if !h.lacks_credentials() => Ok(self.clone()),
            (Location::Http(_), Some(w @ Location::Http(wh)))
                if self.same_store(w) && !wh.lacks_credentials() =>
            {
                Ok(w.clone())
            }
            (Location::Http(h), _) => bail!(
                "the plan's store {} needs credentials, which a plan never saves: set RESTORE_STORE to the store's URL with them",
                h.redacted()
            ),
            _ => Ok(self.clone()),
        }
    }

    /// The directory of a local store, so guards can refuse a target that holds it.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Http(h) => f.write_str(&h.redacted()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Location::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn backend_for(location: &Location) -> Result<Box<dyn Backend>> {
    let opts = remote::options();
    Ok(match location.clone() {
        Location::Local(path) => Box::new(LocalBackend::new(&path)),
        Location::Http(h) => Box::new(retry::Retrying::new(
            Box::new(http::HttpBackend::new(&h, &opts)?),
            retry::RetryPolicy::default(),
        )),
        Location::S3 { bucket, prefix } => Box::new(retry::Retrying::new(
            Box::new(s3::S3Backend::new(&bucket, &prefix, &opts)?),
            retry::RetryPolicy::default(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that compress poorly, so a frame is about as long as the chunk.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn recycled_buffers_give_exactly_each_chunk_and_no_longer_frame() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Local(dir.path().join("store"));
        let (store, _) = Store::open_or_create(&location, None).unwrap();
        let big = noise(1 << 20, 1);
        let small = noise(100 << 10, 2);
        let (big_id, small_id) = (ChunkId::of(&big), ChunkId::of(&small));
        store.put_chunk(&big_id, &big, false).unwrap();
        store.put_chunk(&small_id, &small, false).unwrap();

        // The big chunk through fresh buffers, then the small one through the same, larger
        // buffers: exactly the small chunk's bytes come out, nothing of the big one's.
        let mut out = Vec::new();
        let packed = store.get_packed_in(&big_id, big.len(), Vec::new()).unwrap();
        store
            .unpack_into(&big_id, big.len(), &packed, &mut out)
            .unwrap();
        assert_eq!(out, big);
        let packed = store
            .get_packed_in(&small_id, small.len(), packed.into_buffer())
            .unwrap();
        assert!(matches!(packed, Packed::Stored(ref p) if p.capacity() >= 1 << 20));
        store
            .unpack_into(&small_id, small.len(), &packed, &mut out)
            .unwrap();
        assert_eq!(out, small);

        // A hostile store answers the small chunk's key with a short frame of 1 MiB: the
        // recycled buffer has room for what it unpacks to, but the chunk is refused as corrupt.
        let frame =
            with_compressed(&b"0123456789abcdef".repeat(1 << 16), |f| Ok(f.to_vec())).unwrap();
        assert!(frame.len() < small.len());
        std::fs::write(
            dir.path().join("store").join(shard("chunks", &small_id)),
            &frame,
        )
        .unwrap();
        let mut roomy = Vec::with_capacity(4 << 20);
        let packed = store
            .get_packed_in(&small_id, small.len(), Vec::with_capacity(4 << 20))
            .unwrap();
        let err = store
            .unpack_into(&small_id, small.len(), &packed, &mut roomy)
            .unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    }
}
