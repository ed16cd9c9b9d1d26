//! Signed snapshots: Ed25519 keys and signatures in minisign's file formats (so `minisign -V`
//! can check a manifest by hand). Capture signs the manifest's bytes, which name every chunk
//! index by hash: key -> manifest -> index -> chunk is one chain. A store signature sits
//! beside its manifest (`<id>.json.minisig`); its trusted comment binds host and id.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// The largest signature or key file read: real ones are a few hundred bytes.
pub const MAX_SIG: u64 = 4096;

/// A minisign key id as minisign prints it (16 hex digits).
fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(b))
}

fn read_small(path: &Path, what: &str) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .with_context(|| format!("reading the {what} \"{}\"", path.display()))?;
    let mut text = String::new();
    f.take(MAX_SIG)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the {what} \"{}\"", path.display()))?;
    Ok(text)
}

/// `restore key generate`: a new key pair, the secret key unencrypted (a nightly capture runs
/// unattended) and private (0600). Refuses to replace existing files.
pub fn generate(secret: &Path, public: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for p in [secret, public] {
        ensure!(
            !p.exists(),
            "\"{}\" exists; a key is never overwritten: choose another file",
            p.display()
        );
    }
    let minisign::KeyPair { pk, sk } = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| anyhow::anyhow!("generating a key pair: {e}"))?;
    let id = key_id(pk.keynum());
    let sk_text = sk
        .to_box(Some(&format!("restore secret key {id}")))
        .map_err(|e| anyhow::anyhow!("encoding the secret key: {e}"))?
        .to_string();
    let pk_text = pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?
        .to_string();
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating \"{}\"", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    };
    write(secret, &sk_text, 0o600)?;
    write(public, &pk_text, 0o644)?;
    Ok(id)
}

/// The key a capture signs with.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    pub id: String,
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = read_small(path, "secret key")?;
        let sk = minisign::SecretKeyBox::from_string(&text)
            .and_then(|b| b.into_unencrypted_secret_key())
            .map_err(|e| {
                anyhow::anyhow!(
                    "\"{}\" is not an unencrypted minisign secret key ({e}); make one with `restore key generate`",
                    path.display()
                )
            })?;
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| {
            anyhow::anyhow!("deriving the public key of \"{}\": {e}", path.display())
        })?;
        Ok(SigningKey {
            id: key_id(pk.keynum()),
            sk,
            pk,
        })
    }

    /// A minisign signature of `manifest`, its trusted comment naming the snapshot.
    pub fn sign(&self, manifest: &[u8], host: &str, id: &str) -> Result<String> {
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            manifest,
            Some(&trusted_comment(host, id)),
            Some(&format!("restore snapshot signature, key {}", self.id)),
        )
        .map_err(|e| anyhow::anyhow!("signing the manifest: {e}"))?;
        Ok(sig.to_string())
    }
}

fn trusted_comment(host: &str, id: &str) -> String {
    format!("restore snapshot {host}/{id}")
}

/// The public keys a restore trusts (`--trust`, RESTORE_TRUST). Empty: nothing is verified.
#[derive(Default)]
pub struct Trust {
    keys: Vec<(String, minisign::PublicKey)>,
}

/// How a snapshot was checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Verification {
    /// No key was given to check it with.
    NotVerified,
    /// Signed by the trusted key with this id.
    SignedBy { key: String },
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::NotVerified => f.write_str("snapshot not verified: no --trust key given"),
            Verification::SignedBy { key } => write!(f, "snapshot verified: signed by key {key}"),
        }
    }
}

impl Trust {
    pub fn load(paths: &[PathBuf]) -> Result<Trust> {
        let mut keys = Vec::new();
        for path in paths {
            let text = read_small(path, "public key")?;
            let pk = minisign::PublicKeyBox::from_string(&text)
                .and_then(|b| b.into_public_key())
                .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "\"{}\" is not a minisign public key ({e}); use the file `restore key generate --public` wrote",
                        path.display()
                    )
                })?;
            keys.push((key_id(pk.keynum()), pk));
        }
        Ok(Trust { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Checks `signature` (None: the store has none) over `manifest`, snapshot `host`/`id`.
    pub fn verify(
        &self,
        manifest: &[u8],
        signature: Option<&[u8]>,
        host: &str,
        id: &str,
    ) -> Result<Verification> {
        if self.keys.is_empty() {
            return Ok(Verification::NotVerified);
        }
        let trusted = self.ids().join(", ");
        let Some(signature) = signature else {
            bail!(
                "snapshot {id} of host {host} is not signed, and only snapshots signed by key {trusted} are trusted; nothing was restored from it"
            );
        };
        let text = std::str::from_utf8(signature).unwrap_or_default();
        let sig = minisign::SignatureBox::from_string(text).map_err(|e| {
            anyhow::anyhow!(
                "the signature of snapshot {id} of host {host} is not a minisign signature ({e})"
            )
        })?;
        let signer = key_id(sig.keynum());
        let Some((kid, pk)) = self.keys.iter().find(|(k, _)| *k == signer) else {
            bail!(
                "snapshot {id} of host {host} is signed by key {signer}, which is not trusted (trusted: {trusted}); nothing was restored from it"
            );
        };
        minisign::verify(pk, &sig, std::io::Cursor::new(manifest), true, false, false).map_err(
            |e| {
                anyhow::anyhow!(
                    "snapshot {id} of host {host}: its manifest does not match its signature by key {kid} ({e}); the store was tampered with or damaged"
                )
            },
        )?;
        let comment = sig.trusted_comment().unwrap_or_default();
        ensure!(
            comment == trusted_comment(host, id),
            "snapshot {id} of host {host}: its signature by key {kid} was made for \"{comment}\", not for this snapshot"
        );
        Ok(Verification::SignedBy { key: kid.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_and_every_way_to_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let id = generate(&sk, &pk).unwrap();
        assert!(generate(&sk, &pk).is_err(), "never overwrites a key");
        let key = SigningKey::load(&sk).unwrap();
        assert_eq!(key.id, id);
        let m = br#"{"host":"web-3","id":"s1"}"#;
        let sig = key.sign(m, "web-3", "s1").unwrap();
        let trust = Trust::load(std::slice::from_ref(&pk)).unwrap();
        assert_eq!(
            trust
                .verify(m, Some(sig.as_bytes()), "web-3", "s1")
                .unwrap(),
            Verification::SignedBy { key: id.clone() }
        );
        let mut edited = m.to_vec();
        edited[5] ^= 1;
        let e = trust.verify(&edited, Some(sig.as_bytes()), "web-3", "s1");
        assert!(format!("{:#}", e.unwrap_err()).contains("does not match its signature"));
        let e = trust.verify(m, Some(sig.as_bytes()), "web-4", "s1");
        assert!(format!("{:#}", e.unwrap_err()).contains("was made for"));
        let e = trust.verify(m, None, "web-3", "s1");
        assert!(format!("{:#}", e.unwrap_err()).contains("is not signed"));
        let (sk2, pk2) = (dir.path().join("o.key"), dir.path().join("o.pub"));
        let other = generate(&sk2, &pk2).unwrap();
        let sig2 = SigningKey::load(&sk2)
            .unwrap()
            .sign(m, "web-3", "s1")
            .unwrap();
        let e = trust.verify(m, Some(sig2.as_bytes()), "web-3", "s1");
        let text = format!("{:#}", e.unwrap_err());
        assert!(
            text.contains(&other) && text.contains("not trusted"),
            "{text}"
        );
        assert_eq!(
            Trust::default().verify(m, None, "x", "y").unwrap(),
            Verification::NotVerified
        );
        assert!(
            Trust::load(&[sk]).is_err(),
            "a secret key is not a public key"
        );
    }
}
