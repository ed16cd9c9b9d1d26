//! A store served over HTTP(S) by any static web server or CDN: read-only. Objects are
//! fetched by GET and checked by HEAD; snapshots are listed from the catalogue
//! (`snapshots/index.json`), or, for a copy made without one, from the directory index pages
//! that python's http.server and nginx's autoindex produce.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use tokio::runtime::Runtime;

use super::backend::{Backend, BackendError};
use super::remote::{RemoteOptions, bundled_roots, lacks_system_roots, runtime};

pub const CATALOGUE: &str = "snapshots/index.json";

pub struct HttpBackend {
    /// Ends with '/'.
    base: String,
    client: reqwest::Client,
    rt: Runtime,
}

impl HttpBackend {
    pub fn new(url: &str, opts: &RemoteOptions) -> Result<HttpBackend> {
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
        let build = |bundled: bool| -> Result<reqwest::Client> {
            let builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .user_agent(concat!("restore/", env!("CARGO_PKG_VERSION")));
            let builder = if bundled {
                let mut roots = extra.clone();
                for der in bundled_roots() {
                    roots.push(reqwest::Certificate::from_der(der)?);
                }
                builder.tls_certs_only(roots)
            } else {
                builder.tls_certs_merge(extra.clone())
            };
            Ok(builder.build()?)
        };
        let client = match build(false) {
            Err(e) if lacks_system_roots(&e) => build(true),
            other => other,
        }
        .context("setting up the HTTP client")?;
        Ok(HttpBackend {
            base,
            client,
            rt: runtime()?,
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    fn request(&self, method: reqwest::Method, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let url = self.url(key);
        let head = method == reqwest::Method::HEAD;
        self.rt.block_on(async {
            let resp = self
                .client
                .request(method, &url)
                .send()
                .await
                .map_err(|e| transport(e, &url))?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Err(BackendError::NotFound(key.to_string()));
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
            let body = resp.bytes().await.map_err(|e| transport(e, &url))?;
            // hyper already fails a body shorter than its Content-Length; this is a second net.
            if let Some(n) = expected
                && n != body.len() as u64
            {
                return Err(BackendError::temporary(anyhow!(
                    "truncated body from {url}: {} of {n} bytes",
                    body.len()
                )));
            }
            Ok(Some(body.to_vec()))
        })
    }

    /// Keys under `prefix` from the directory index pages of a static web server.
    fn list_from_index_pages(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = vec![prefix.to_string()];
        while let Some(dir) = dirs.pop() {
            let page = match self.request(reqwest::Method::GET, &dir) {
                Ok(page) => page.unwrap_or_default(),
                Err(BackendError::NotFound(_)) => continue,
                Err(BackendError::Other(e)) => return Err(e),
            };
            for name in index_links(&String::from_utf8_lossy(&page)) {
                if name.ends_with('/') {
                    dirs.push(format!("{dir}{name}"));
                } else {
                    out.push(format!("{dir}{name}"));
                }
            }
        }
        out.sort();
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
fn index_links(html: &str) -> Vec<String> {
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

    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        Ok(self.request(reqwest::Method::GET, key)?.unwrap_or_default())
    }

    fn put(&self, _key: &str, _data: &[u8]) -> Result<()> {
        self.writable()
    }

    fn exists(&self, key: &str) -> Result<bool> {
        match self.request(reqwest::Method::HEAD, key) {
            Ok(_) => Ok(true),
            Err(BackendError::NotFound(_)) => Ok(false),
            Err(BackendError::Other(e)) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self.request(reqwest::Method::GET, CATALOGUE) {
            Ok(raw) => {
                let keys = super::parse_catalogue(&raw.unwrap_or_default())
                    .with_context(|| format!("{} of store {}", CATALOGUE, self.describe()))?;
                Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
            }
            Err(BackendError::NotFound(_)) => self.list_from_index_pages(prefix),
            Err(BackendError::Other(e)) => Err(e),
        }
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
