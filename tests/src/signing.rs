//! Signed images as their publishers sign them: GPG keys made with `gpg`
//! (simple signing, signatures in a lookaside directory) and cosign-format
//! key pairs (sigstore signatures attached in the registry), images pushed
//! with `skopeo copy --sign-by…`, and the registries.d file that tells
//! skopeo where signatures are kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use base64::Engine;

use crate::registry::TestRegistry;
use crate::run;

/// A GPG signing key in its own keyring; the keyring is deleted on drop.
#[derive(Debug)]
pub struct GpgKey {
    home: tempfile::TempDir,
    /// The key's fingerprint (what `--sign-by` takes).
    pub fingerprint: String,
    /// The public key, exported (what a `signedBy` requirement's `keyPath` names).
    pub public_key: PathBuf,
}

impl GpgKey {
    /// An ed25519 signing key without passphrase for `name`, public key
    /// exported into `dir`.
    pub fn generate(dir: &Path, name: &str) -> Result<GpgKey> {
        let home = tempfile::Builder::new().prefix("hostd-gnupg-").tempdir()?;
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.env("GNUPGHOME", home.path()).args(["--batch", "--quiet"]).args(args);
            c
        };
        let uid = format!("{name} <{name}@hostd.invalid>");
        run(&mut gpg(&["--passphrase", "", "--quick-gen-key", &uid, "ed25519", "sign", "never"]))?;
        let listing = run(&mut gpg(&["--with-colons", "--list-keys", &uid]))?;
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .context("gpg listed no fingerprint")?
            .to_string();
        let public_key = dir.join(format!("{name}.gpg"));
        let exported = gpg(&["--export", &fingerprint]).output()?;
        anyhow::ensure!(exported.status.success() && !exported.stdout.is_empty(), "gpg --export failed");
        std::fs::write(&public_key, exported.stdout)?;
        Ok(GpgKey { home, fingerprint, public_key })
    }
}

/// A cosign-format key pair: the private key sealed with a passphrase as
/// `cosign generate-key-pair` writes it, and its public key (PEM).
#[derive(Debug)]
pub struct SigstoreKey {
    /// `ENCRYPTED COSIGN PRIVATE KEY` PEM.
    pub private_key: PathBuf,
    /// The file holding its passphrase (`--sign-passphrase-file`).
    pub passphrase_file: PathBuf,
    /// `PUBLIC KEY` PEM (what a `sigstoreSigned` requirement's `keyPath` names).
    pub public_key: PathBuf,
}

impl SigstoreKey {
    /// A new ECDSA P-256 key pair in `dir`, named `name`.
    pub fn generate(dir: &Path, name: &str) -> Result<SigstoreKey> {
        use crypto_secretbox::aead::{Aead, KeyInit};
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        use rand_core::{OsRng, RngCore};

        let secret = p256::SecretKey::random(&mut OsRng);
        let pkcs8 = secret.to_pkcs8_der().map_err(|e| anyhow::anyhow!("{e}"))?;
        let public = secret.public_key().to_public_key_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
        let passphrase = format!("hostd-test-{name}");
        // scrypt and secretbox as go-securesystemslib's `encrypted` package
        // seals: N=32768, r=8, p=1, a 32-byte salt and a 24-byte nonce.
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let params = scrypt::Params::new(15, 8, 1, 32).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut key = [0u8; 32];
        scrypt::scrypt(passphrase.as_bytes(), &salt, &params, &mut key).map_err(|e| anyhow::anyhow!("{e}"))?;
        let sealed = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
            .encrypt(&nonce.into(), pkcs8.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64.encode(nonce)},
            "ciphertext": b64.encode(sealed),
        });
        let body = b64.encode(serde_json::to_vec(&envelope)?);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        let pem = format!(
            "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let private_key = dir.join(format!("{name}.key"));
        let passphrase_file = dir.join(format!("{name}.pass"));
        let public_key = dir.join(format!("{name}.pub"));
        std::fs::write(&private_key, pem)?;
        std::fs::write(&passphrase_file, passphrase)?;
        std::fs::write(&public_key, public)?;
        Ok(SigstoreKey { private_key, passphrase_file, public_key })
    }
}

/// Who signs a pushed image.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// Simple signing with a GPG key; the signature goes to the lookaside.
    Gpg(&'a GpgKey),
    /// A sigstore signature, attached in the registry.
    Sigstore(&'a SigstoreKey),
}

/// A registries.d directory telling skopeo where the signatures of
/// `host`'s images are: simple signatures in `lookaside` (read and
/// written), sigstore signatures attached in the registry.
pub fn write_registries_d(dir: &Path, host: &str, lookaside: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(lookaside)?;
    let url = format!("file://{}", lookaside.display());
    let yaml = format!(
        "docker:\n  {host}:\n    lookaside: {url}\n    lookaside-staging: {url}\n    use-sigstore-attachments: true\n"
    );
    std::fs::write(dir.join(format!("50-hostd-test-{}.yaml", host.replace([':', '.'], "-"))), yaml)?;
    Ok(())
}

/// Push `oci_name` (`<dir>:<tag>`) to `registry` as `name`, signed by
/// `signer` for `identity` (the reference hosts will pull it as; default:
/// where it is pushed), signatures stored as `registries_d` says.
pub fn push_signed(
    registry: &TestRegistry,
    oci_name: &str,
    name: &str,
    signer: Signer<'_>,
    identity: Option<&str>,
    registries_d: &Path,
) -> Result<()> {
    let mut c = Command::new("skopeo");
    c.arg("--registries.d").arg(registries_d);
    c.args(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"]);
    match signer {
        Signer::Gpg(key) => {
            c.env("GNUPGHOME", key.home.path()).args(["--sign-by", &key.fingerprint]);
        }
        Signer::Sigstore(key) => {
            c.arg("--sign-by-sigstore-private-key").arg(&key.private_key);
            c.arg("--sign-passphrase-file").arg(&key.passphrase_file);
        }
    }
    if let Some(identity) = identity {
        c.args(["--sign-identity", identity]);
    }
    c.arg(format!("oci:{oci_name}")).arg(format!("docker://{}/{name}", registry.host()));
    run(&mut c).with_context(|| format!("pushing {name} signed"))?;
    Ok(())
}
