//! A store in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...), through the
//! `object_store` crate (request signing, path-style requests for custom endpoints). Its own
//! retries are off: `retry::Retrying` is the one place that retries, so errors are classified
//! here as missing, temporary or permanent.

use std::error::Error as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::runtime::Runtime;

use super::backend::{Backend, BackendError};
use super::remote::{
    RemoteOptions, bundled_roots, lacks_system_roots, run_on, runtime, timeout_from_env,
};

pub struct S3Backend {
    s3: AmazonS3,
    bucket: String,
    /// Key prefix inside the bucket, without slashes at either end ("" for the bucket root).
    prefix: String,
    endpoint: String,
    rt: Runtime,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Backend {
    pub fn new(bucket: &str, prefix: &str, opts: &RemoteOptions) -> Result<S3Backend> {
        anyhow::ensure!(
            !bucket.is_empty(),
            "store URL s3://{bucket}/{prefix} names no bucket"
        );
        let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            anyhow::bail!(
                "no S3 credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            );
        };
        let region = env("AWS_REGION").unwrap_or_else(|| "us-east-1".into());
        let extra = match opts.ca_pem()? {
            Some(pem) => object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", opts.ca_name()))?,
            None => Vec::new(),
        };
        let endpoint_env = env("AWS_ENDPOINT_URL");
        // A plain-HTTP endpoint (an RGW or MinIO inside the data centre) is reached through
        // the QuickAck transport; TLS endpoints and proxies keep reqwest's stack.
        let plain_http = endpoint_env
            .as_ref()
            .is_some_and(|u| u.starts_with("http://"));
        // The deadline of a whole request, its answer and all of its body.
        let timeout = timeout_from_env(Duration::from_secs(120));
        let build = |bundled: bool| -> Result<AmazonS3> {
            let mut client = ClientOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(timeout)
                .with_allow_http(plain_http);
            for cert in &extra {
                client = client.with_root_certificate(cert.clone());
            }
            if bundled {
                client = client.with_no_system_certificates(true);
                for der in bundled_roots() {
                    client =
                        client.with_root_certificate(object_store::Certificate::from_der(der)?);
                }
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&region)
                .with_access_key_id(&key_id)
                .with_secret_access_key(&secret)
                .with_retry(RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                })
                .with_client_options(client);
            if plain_http && super::transport::no_proxy_set() {
                builder = builder.with_http_connector(super::transport::QuickAckHttp {
                    connect_timeout: CONNECT_TIMEOUT,
                    timeout,
                });
            }
            if let Some(token) = env("AWS_SESSION_TOKEN") {
                builder = builder.with_token(token);
            }
            if let Some(url) = &endpoint_env {
                builder = builder
                    .with_endpoint(url.trim_end_matches('/'))
                    .with_virtual_hosted_style_request(false);
            }
            Ok(builder.build()?)
        };
        let s3 = match build(false) {
            Err(e) if lacks_system_roots(&e) => build(true),
            other => other,
        }
        .with_context(|| format!("setting up S3 access to bucket {bucket}"))?;
        let endpoint = endpoint_env.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        Ok(S3Backend {
            s3,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            rt: runtime()?,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Sorts an object_store error into missing / temporary / permanent, with a message that
    /// says what to check.
    fn classify(&self, e: object_store::Error, key: &str) -> BackendError {
        // object_store's messages repeat their sources in part: keep each new part once.
        let mut text = format!("{e}");
        let mut source = e.source();
        let mut transport = false;
        while let Some(s) = source {
            transport |= s.is::<object_store::client::HttpError>();
            let part = s.to_string();
            if !text.contains(&part) {
                text = format!("{text}: {part}");
            }
            source = s.source();
        }
        let bucket = &self.bucket;
        if text.contains("NoSuchBucket") {
            return BackendError::Other(anyhow!(
                "bucket {bucket} does not exist at {}",
                self.endpoint
            ));
        }
        match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound(key.to_string()),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                BackendError::Other(anyhow!("{}", first_line(&text)).context(format!(
                    "S3 at {} refused access to bucket {bucket}: check AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)",
                    self.endpoint
                )))
            }
            object_store::Error::Generic { .. } => {
                let e = anyhow!("{text}").context(format!("S3 request for {key}"));
                if text.contains("certificate") {
                    BackendError::Other(e.context(format!(
                        "TLS to {} failed: the certificate is not trusted (a private CA needs --ca-cert FILE)",
                        self.endpoint
                    )))
                } else if transport || server_side(&text) {
                    BackendError::temporary(e)
                } else {
                    BackendError::Other(e)
                }
            }
            _ => BackendError::Other(anyhow!("{text}").context(format!("S3 request for {key}"))),
        }
    }
}

/// The status line of an S3 error without the XML body that follows.
fn first_line(text: &str) -> &str {
    text.split(": <?xml").next().unwrap_or(text)
}

/// object_store does not expose the status of a failed request other than in its message:
/// "... status code: 503 ..." (a 5xx or 429) or an error document inside a 200 response.
fn server_side(text: &str) -> bool {
    if text.contains("error response") {
        return true;
    }
    text.split("status code: ")
        .skip(1)
        .filter_map(|rest| rest.get(..3)?.parse::<u16>().ok())
        .any(|code| code >= 500 || code == 429)
}

impl S3Backend {
    /// Keys under `prefix` (relative to the store) with their sizes, sorted; the listing
    /// stops after `max` + 1 keys.
    fn listing(&self, prefix: &str, max: usize) -> Result<Vec<(String, u64)>> {
        use futures_util::StreamExt;
        let full = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<_> = self
            .rt
            .block_on(
                self.s3
                    .list(Some(&full))
                    .take(max.saturating_add(1))
                    .try_collect(),
            )
            .map_err(|e| match self.classify(e, prefix) {
                BackendError::NotFound(_) => {
                    anyhow!("listing {prefix}: bucket {} not found", self.bucket)
                }
                BackendError::Other(e) => e,
            })?;
        let mut keys: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(&strip)
                    .map(|k| (k.to_string(), m.size))
            })
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        let mut body = Vec::new();
        self.get_into(key, max, &mut body)?;
        Ok(body)
    }

    /// The body is copied into `buf` part by part as it arrives: a recycled buffer costs a
    /// copy, where collecting the parts afresh cost an allocation per object (under musl, a
    /// mapping faulted in page by page).
    fn get_into(&self, key: &str, max: u64, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        let (s3, path) = (self.s3.clone(), self.path(key));
        let mut body = std::mem::take(buf);
        // On the runtime's thread (remote::run_on); what failed is classified here.
        let got = run_on(&self.rt, async move {
            let got = s3.get(&path).await?;
            if got.meta.size > max {
                return Ok(Err(got.meta.size));
            }
            body.clear();
            body.reserve(got.meta.size as usize);
            let mut parts = got.into_stream();
            while let Some(part) = parts.try_next().await? {
                if (body.len() + part.len()) as u64 > max {
                    return Ok(Err((body.len() + part.len()) as u64));
                }
                body.extend_from_slice(&part);
            }
            Ok(Ok(body))
        })
        .map_err(BackendError::Other)?
        .map_err(|e| self.classify(e, key))?
        .map_err(|size| BackendError::Other(anyhow!(super::backend::too_large(key, size, max))))?;
        *buf = got;
        Ok(())
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        // One PUT is atomic in S3: readers see no object or all of it, never part of one.
        let path = self.path(key);
        self.rt
            .block_on(self.s3.put(&path, PutPayload::from(data.to_vec())))
            .map(|_| ())
            .map_err(|e| match self.classify(e, key) {
                BackendError::NotFound(_) => {
                    anyhow!("writing {key}: bucket {} not found", self.bucket)
                }
                BackendError::Other(e) => e,
            })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        match self.rt.block_on(self.s3.head(&path)) {
            Ok(_) => Ok(true),
            Err(e) => match self.classify(e, key) {
                BackendError::NotFound(_) => Ok(false),
                BackendError::Other(e) => Err(e),
            },
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match self.rt.block_on(self.s3.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) => match self.classify(e, key) {
                BackendError::NotFound(_) => Ok(None),
                BackendError::Other(e) => Err(e),
            },
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.rt.block_on(self.s3.delete(&path)) {
            Ok(()) => Ok(()),
            // Keys that may read but not delete are the usual setup of an append-only bucket
            // (and object lock refuses deletes too): credentials are not what to check.
            Err(e @ object_store::Error::PermissionDenied { .. }) => {
                Err(anyhow!("{}", first_line(&e.to_string())).context(format!(
                    "S3 at {} refused to delete {key} from bucket {}: prune and forget need a key \
                 allowed s3:DeleteObject (and no object lock retention on the object)",
                    self.endpoint, self.bucket
                )))
            }
            Err(e) => match self.classify(e, key) {
                BackendError::NotFound(_) => Ok(()),
                BackendError::Other(e) => Err(e.context(format!("deleting {key}"))),
            },
        }
    }

    fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.listing(prefix, usize::MAX)
    }

    fn list_at_most(&self, prefix: &str, max: usize) -> Result<Option<Vec<String>>> {
        let keys = self.listing(prefix, max)?;
        Ok((keys.len() <= max).then(|| keys.into_iter().map(|(k, _)| k).collect()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .listing(prefix, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn sync(&self) -> Result<()> {
        // Every successful PUT is already durable.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::server_side;

    #[test]
    fn status_codes_in_messages() {
        assert!(server_side(
            "Error performing GET in 1ms - Server returned non-2xx status code: 503 Service Unavailable: "
        ));
        assert!(server_side("status code: 429 Too Many Requests"));
        assert!(!server_side("status code: 400 Bad Request"));
        assert!(!server_side("no code here"));
    }
}
