//! A store served over HTTP(S) by any static web server or CDN: read-only. Objects are
//! fetched by GET and checked by HEAD; snapshots are listed from the catalogue
//! (`snapshots/index.json`), or, for a copy made without one, from the directory index pages
//! that python's http.server and nginx's autoindex produce.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use tokio::runtime::Runtime;

use super::HttpLocation;
use super::backend::{Backend, BackendError, too_large};
use super::remote::{RemoteOptions, http_client, run_on, runtime, timeout_from_env};

/// A directory index page larger than this is not one.
const MAX_PAGE: u64 = 16 << 20;
/// A chunk shard's index page read as evidence of what it holds: ~28,000 names (a store of
/// ~7 million chunks); a larger page is not read and its chunks are checked one by one.
const MAX_SHARD_PAGE: u64 = 4 << 20;
/// The crawl of directory index pages: how deep below the listed prefix, how many pages.
const MAX_CRAWL_DEPTH: usize = 3;
const MAX_CRAWL_PAGES: usize = 4096;
/// The slowest transfer rate a body is given time for, beyond the base deadline.
const MIN_RATE: u64 = 512 << 10;
/// Requests in flight at once to a server that closes every connection after one answer
/// (HTTP/1.0, `Connection: close`): there each request is a new TCP connection, and a burst
/// of them overflows a small accept queue (python's http.server listens with a backlog of
/// 5); every SYN the server drops waits a second for its retransmission. Measured on
/// http.server, 1 GiB restore: 16 in flight 26-31 dropped connects, 6 in flight 12.
const MAX_IN_FLIGHT_CLOSING: usize = 6;

/// Holds requests back while MAX_IN_FLIGHT_CLOSING are in flight to a server that closes
/// its connections (unlimited until one is seen to).
#[derive(Default)]
struct Gate {
    closes: std::sync::atomic::AtomicBool,
    in_flight: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

struct Pass<'g>(&'g Gate);

impl Gate {
    fn enter(&self) -> Pass<'_> {
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while self.closes.load(std::sync::atomic::Ordering::Relaxed) && *n >= MAX_IN_FLIGHT_CLOSING
        {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Pass(self)
    }

    /// Notes how the server treats connections, from an answer.
    fn saw(&self, resp: &reqwest::Response) {
        let closing = resp.version() <= reqwest::Version::HTTP_10
            || resp
                .headers()
                .get(reqwest::header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if closing {
            self.closes
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

pub struct HttpBackend {
    /// Ends with '/', without credentials.
    base: String,
    /// Basic-auth credentials, sent in a header so they never appear in a URL or a message.
    auth: Option<(String, Option<String>)>,
    /// The base deadline of every request (RESTORE_HTTP_TIMEOUT).
    deadline: Duration,
    client: reqwest::Client,
    rt: Runtime,
    gate: std::sync::Arc<Gate>,
}

impl HttpBackend {
    pub fn new(location: &HttpLocation, opts: &RemoteOptions) -> Result<HttpBackend> {
        let url = &location.url;
        let base = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        reqwest::Url::parse(&base).with_context(|| format!("store URL {url} is not valid"))?;
        let extra = match opts.ca_pem()? {
            Some(pem) => reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", opts.ca_name()))?,
            None => Vec::new(),
        };
        let client = http_client(&extra, |b| {
            b.connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
        })
        .context("setting up the HTTP client")?;
        let auth = location
            .user
            .clone()
            .map(|u| (u, location.password.clone()));
        Ok(HttpBackend {
            base,
            auth,
            // The base deadline of one request: RESTORE_HTTP_TIMEOUT, 30 s by default.
            deadline: timeout_from_env(Duration::from_secs(30)),
            client,
            rt: runtime()?,
            gate: Default::default(),
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    /// One request. A GET body is read up to `max` bytes. The answer must start within the
    /// base deadline and the body arrive within it plus its length at MIN_RATE: a server
    /// that drips bytes cannot stall a restore.
    fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        max: u64,
        mut body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let url = self.url(key);
        let head = method == reqwest::Method::HEAD;
        let _pass = self.gate.enter();
        let (client, auth, gate, deadline) = (
            self.client.clone(),
            self.auth.clone(),
            self.gate.clone(),
            self.deadline,
        );
        let key = key.to_string();
        run_on(&self.rt, async move {
            let timed_out = |after: Duration| {
                BackendError::temporary(anyhow!(
                    "timed out: no complete answer from {url} within {:.0} s",
                    after.as_secs_f64()
                ))
            };
            let mut req = client.request(method, &url);
            if let Some((user, password)) = &auth {
                req = req.basic_auth(user, password.as_ref());
            }
            let mut resp = tokio::time::timeout(deadline, req.send())
                .await
                .map_err(|_| timed_out(deadline))?
                .map_err(|e| transport(e, &url))?;
            gate.saw(&resp);
            let status = resp.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Err(BackendError::NotFound(key));
            }
            if !status.is_success() {
                let e = anyhow!("HTTP {status} for {url}");
                return Err(
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                        BackendError::temporary(e)
                    } else {
                        BackendError::Other(e)
                    },
                );
            }
            if head {
                return Ok(None);
            }
            let expected = resp.content_length();
            if let Some(n) = expected
                && n > max
            {
                return Err(BackendError::Other(anyhow!(too_large(&key, n, max))));
            }
            let allowed =
                deadline + Duration::from_secs(expected.unwrap_or(max).min(max) / MIN_RATE);
            // The caller's buffer (a recycled one keeps its allocation).
            body.clear();
            body.reserve(expected.unwrap_or(0) as usize);
            let read = async {
                while let Some(part) = resp.chunk().await.map_err(|e| transport(e, &url))? {
                    if (body.len() + part.len()) as u64 > max {
                        return Err(BackendError::Other(anyhow!(too_large(
                            &key,
                            (body.len() + part.len()) as u64,
                            max
                        ))));
                    }
                    body.extend_from_slice(&part);
                }
                Ok(())
            };
            tokio::time::timeout(allowed, read)
                .await
                .map_err(|_| timed_out(allowed))??;
            // hyper already fails a body shorter than its Content-Length; this is a second net.
            if let Some(n) = expected
                && n != body.len() as u64
            {
                return Err(BackendError::temporary(anyhow!(
                    "truncated body from {url}: {} of {n} bytes",
                    body.len()
                )));
            }
            Ok(Some(body))
        })
        .unwrap_or_else(|e| Err(BackendError::Other(e)))
    }

    /// Keys under `prefix` from the directory index pages of a static web server. The crawl
    /// is bounded: a few levels deep (the store's layout has two), each page once, a limited
    /// number of pages, so a server whose pages link on without end cannot hold it.
    fn list_from_index_pages(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut dirs = vec![(prefix.to_string(), 0usize)];
        while let Some((dir, depth)) = dirs.pop() {
            if !seen.insert(dir.clone()) {
                continue;
            }
            if seen.len() > MAX_CRAWL_PAGES {
                bail!(
                    "listing {prefix} of store {}: more than {MAX_CRAWL_PAGES} directory pages; add a catalogue (snapshots/index.json) to the store",
                    self.describe()
                );
            }
            let page = match self.request(reqwest::Method::GET, &dir, MAX_PAGE, Vec::new()) {
                Ok(page) => page.unwrap_or_default(),
                Err(BackendError::NotFound(_)) => continue,
                Err(BackendError::Other(e)) => return Err(e),
            };
            for name in index_links(&String::from_utf8_lossy(&page)) {
                if name.ends_with('/') {
                    if depth < MAX_CRAWL_DEPTH {
                        dirs.push((format!("{dir}{name}"), depth + 1));
                    }
                } else {
                    out.push(format!("{dir}{name}"));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Every transport failure (refused, reset, timed out, truncated) is temporary, except a TLS
/// certificate the client does not trust: retrying cannot fix that.
fn transport(e: reqwest::Error, url: &str) -> BackendError {
    let e = anyhow::Error::new(e);
    let text = format!("{e:#}");
    if text.contains("certificate") || text.contains("InvalidCertificate") {
        return BackendError::Other(e.context(format!(
            "TLS to {url} failed: the server's certificate is not trusted (a private CA needs --ca-cert FILE)"
        )));
    }
    BackendError::temporary(e)
}

/// Names linked from a directory index page (python http.server, nginx autoindex, Apache):
/// relative links only, no parent, no query, no absolute URLs.
pub(crate) fn index_links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in html.split("href=\"").skip(1) {
        let Some(link) = part.split('"').next() else {
            continue;
        };
        let ok = !link.is_empty()
            && !link.starts_with(['.', '/', '?', '#'])
            && !link.contains("://")
            && link
                .trim_end_matches('/')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok && !out.iter().any(|l| l == link) {
            out.push(link.to_string());
        }
    }
    out
}

impl Backend for HttpBackend {
    fn describe(&self) -> String {
        self.base.trim_end_matches('/').to_string()
    }

    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        Ok(self
            .request(reqwest::Method::GET, key, max, Vec::new())?
            .unwrap_or_default())
    }

    fn get_into(&self, key: &str, max: u64, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        let body = std::mem::take(buf);
        *buf = self
            .request(reqwest::Method::GET, key, max, body)?
            .unwrap_or_default();
        Ok(())
    }

    fn put(&self, _key: &str, _data: &[u8]) -> Result<()> {
        self.writable()
    }

    fn delete(&self, _key: &str) -> Result<()> {
        self.writable()
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let url = self.url(key);
        let _pass = self.gate.enter();
        let result = self.rt.block_on(async {
            let mut req = self.client.head(&url);
            if let Some((user, password)) = &self.auth {
                req = req.basic_auth(user, password.as_ref());
            }
            tokio::time::timeout(self.deadline, req.send()).await
        });
        match result {
            Ok(Ok(resp)) if resp.status().is_success() => {
                Ok(Some(resp.content_length().unwrap_or(0)))
            }
            Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND => Ok(None),
            Ok(Ok(resp)) => bail!("HTTP {} for {url}", resp.status()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("checking {url}"))),
            Err(_) => bail!(
                "timed out: no answer from {url} within {:.0} s",
                self.deadline.as_secs_f64()
            ),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        match self.request(reqwest::Method::HEAD, key, 0, Vec::new()) {
            Ok(_) => Ok(true),
            Err(BackendError::NotFound(_)) => Ok(false),
            Err(BackendError::Other(e)) => Err(e),
        }
    }

    /// A web server cannot list: its directory index pages are crawled (the store reads its
    /// catalogue first, `store::catalogue`).
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.list_from_index_pages(prefix)
    }

    fn folder_page(&self, folder: &str) -> Option<Vec<String>> {
        let page = self
            .request(reqwest::Method::GET, folder, MAX_SHARD_PAGE, Vec::new())
            .ok()
            .flatten()?;
        Some(
            index_links(&String::from_utf8_lossy(&page))
                .into_iter()
                .filter(|name| !name.ends_with('/'))
                .map(|name| format!("{folder}{name}"))
                .collect(),
        )
    }

    fn sync(&self) -> Result<()> {
        self.writable()
    }

    fn lists_cheaply(&self) -> bool {
        false
    }

    fn writable(&self) -> Result<()> {
        bail!(
            "store {} is read-only over HTTP; capture into a directory or s3:// and serve a copy",
            self.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_pages_of_common_servers() {
        let python = r#"<ul><li><a href="web-3/">web-3/</a></li><li><a href="index.json">index.json</a></li></ul>"#;
        assert_eq!(index_links(python), ["web-3/", "index.json"]);
        let nginx = r#"<a href="../">../</a><a href="20261129T124007Z-8a320d.json">2026…</a>"#;
        assert_eq!(index_links(nginx), ["20261129T124007Z-8a320d.json"]);
        let apache = r#"<a href="?C=N;O=D">Name</a><a href="/icons/x.gif"><a href="http://x/">"#;
        assert!(index_links(apache).is_empty());
    }
}
