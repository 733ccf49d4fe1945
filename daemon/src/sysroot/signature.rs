//! Enforcing the containers signature policy (`/etc/containers/policy.json`)
//! for an image about to be deployed, bound to the manifest the import reads.
//!
//! An enforced image is one tracked as `ostree-image-signed` (Switch with
//! `enforce-container-sigpolicy`), or any image when `[updates]
//! require_signatures` is set. Its policy is evaluated after ostree-ext has
//! fetched the manifest through the image proxy and before any layer is
//! read, for the reference the host tracks (so the policy's scopes and a
//! signature's identity are judged against the tag, as podman and bootc
//! judge them), and the image it accepted must be the one the import reads:
//! same config, same layers. A tag that moves between the two reads (a
//! registry answering the two requests differently) fails the job; it
//! never gets another image deployed.
//!
//! The evaluation is a `skopeo copy --remove-signatures` into a scratch OCI
//! layout that already holds every blob the imported manifest names (sparse
//! placeholders): the copy reads the manifest, the config and the
//! signatures, evaluates the policy, and finds every layer present, so it
//! reads none. Outcomes are typed by exit status alone:
//! - success: the policy accepted the image; the manifest that landed in the
//!   scratch layout is compared with the imported one;
//! - failure: the same copy with `--insecure-policy` tells an image that
//!   cannot be read (an image error with skopeo's words) from one the policy
//!   refused; a refusal is confirmed by one more evaluation, so a passing
//!   network failure is not reported as a rejection
//!   ([`Error::SignatureRejected`], skopeo's reason as its text).
//! - an accepted image is evaluated once more without any signature
//!   location (`--registries.d` empty): if the policy accepts it even so, it
//!   requires no signature for it and enforcing it verifies nothing
//!   ([`Error::SignatureRejected`]). This asks containers-image itself
//!   which scope applies (ports, wildcards, tags).
//!
//! skopeo's image proxy evaluates the policy itself from protocol 0.2.6
//! (skopeo 1.13) on, as it opens an image; Debian 12's skopeo 1.9 speaks
//! 0.2.3 and verifies nothing. hostd asks the proxy for its protocol
//! ([`skopeo::proxy_protocol`]): where the proxy evaluates the policy, an
//! enforced image it refused to open is named by evaluating its reference
//! here, since the proxy's refusal is only text.

use std::os::fd::AsFd;
use std::process::Stdio;

use anyhow::Context;
use sha2::Digest as _;
use ostree_ext::container::{OstreeImageReference, Transport};
use ostree_ext::oci_spec::image::ImageManifest;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::image::user_reference;
use super::skopeo::{self, RunAs};
use super::{Error, ImageFailure};

/// The tag the scratch layout gives the copy; never read.
const SCRATCH_TAG: &str = "policy-check";

/// The image to evaluate: `imgref` read as the pull reads it (`run_as`),
/// and the manifest the import reads, which the evaluated one must match.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The reference the caller tracks.
    pub imgref: &'a OstreeImageReference,
    /// The digest of the manifest the import reads (`sha256:…`), and that
    /// manifest, whose blobs the evaluation must not read.
    pub manifest: Option<(String, ImageManifest)>,
    /// Who skopeo runs as.
    pub run_as: RunAs,
}

/// Evaluate the host's containers policy for `subject`; `Ok` when it
/// accepts the image that is imported. Errors: [`Error::SignatureRejected`]
/// (the policy refused it, requires no signature for it, or the registry
/// served another image to the evaluation; the text names the image, its
/// digest and the reason), [`Error::Image`] (it could not be read at all),
/// [`Error::Cancelled`].
pub async fn verify(subject: Subject<'_>, cancel: &CancellationToken) -> Result<(), Error> {
    super::pull::require_skopeo()?;
    let subject = &subject;
    let source = subject.imgref.imgref.to_string();
    tracing::info!("evaluating the containers signature policy for {source}");
    let evaluation = async {
        ensure_tag_unmoved(subject).await?;
        let accepted = match evaluate(&source, subject, Policy::Host).await? {
            Evaluated::Accepted(manifest) => manifest,
            Evaluated::Refused(first) => {
                let readable = evaluate(&source, subject, Policy::Insecure).await?;
                if let Evaluated::Refused(said) = readable {
                    let said = said.unwrap_or_else(|| "skopeo failed without a message".into());
                    return Err(Error::image_failure(subject.imgref, ImageFailure::SkopeoSaid(said)));
                }
                // Readable, yet refused: asked once more, so a request that
                // failed in passing is not taken for the policy's verdict.
                match evaluate(&source, subject, Policy::Host).await? {
                    Evaluated::Accepted(manifest) => manifest,
                    Evaluated::Refused(again) => {
                        let reason = again.or(first).unwrap_or_else(|| "the policy did not accept it".into());
                        return Err(rejected(subject, &reason));
                    }
                }
            }
        };
        ensure_same_image(subject, accepted.as_deref())?;
        if let Evaluated::Accepted(_) = evaluate(&source, subject, Policy::HostWithoutSignatures).await? {
            return Err(rejected(
                subject,
                "it accepts the image without a signature, so enforcing it verifies nothing; \
                 configure a signedBy or sigstoreSigned requirement for it",
            ));
        }
        Ok(())
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::cancelled()),
        r = evaluation => r,
    }
}

/// The image `subject` names, with the digest of its imported manifest.
fn described(subject: &Subject<'_>) -> String {
    match &subject.manifest {
        Some((digest, _)) => format!("{} ({digest})", user_reference(subject.imgref)),
        None => user_reference(subject.imgref),
    }
}

fn rejected(subject: &Subject<'_>, reason: &str) -> Error {
    Error::SignatureRejected(format!(
        "the containers policy {} rejected {}: {reason}",
        crate::containers_policy::POLICY_PATH,
        described(subject)
    ))
}

/// Refuse unless the image the policy accepted (`accepted`, the manifest
/// the evaluation copied) has the config and layers of the one imported.
/// Its manifest may differ in form only: skopeo converts a Docker manifest
/// to OCI for the scratch layout, keeping every blob digest.
fn ensure_same_image(subject: &Subject<'_>, accepted: Option<&ImageManifest>) -> Result<(), Error> {
    let Some((_, imported)) = &subject.manifest else { return Ok(()) };
    // Accepted, but what was accepted cannot be told: not let through.
    let accepted = accepted.ok_or_else(|| {
        Error::Other(anyhow::anyhow!("{}: the manifest the policy evaluation copied could not be read back", described(subject)))
    })?;
    let blobs = |m: &ImageManifest| -> Vec<String> {
        std::iter::once(m.config()).chain(m.layers()).map(|d| d.digest().to_string()).collect()
    };
    if blobs(imported) == blobs(accepted) {
        return Ok(());
    }
    Err(Error::SignatureRejected(format!(
        "{}: the registry served another image (config {}) to the signature evaluation than to the pull; \
         the tag moved or the registry answers inconsistently; nothing was deployed, try again",
        described(subject),
        accepted.config().digest()
    )))
}

/// What one evaluation found.
#[derive(Debug)]
enum Evaluated {
    /// Accepted; the manifest copied, when it could be read back.
    Accepted(Option<Box<ImageManifest>>),
    /// Not accepted; skopeo's words, for people.
    Refused(Option<String>),
}

/// One `skopeo copy` of `source` into a fresh scratch layout.
async fn evaluate(source: &str, subject: &Subject<'_>, policy: Policy) -> Result<Evaluated, Error> {
    let scratch = scratch_layout(subject).map_err(|e| Error::Other(e.context("preparing the policy evaluation")))?;
    let end = copy_to_scratch(source, subject, policy, scratch.path()).await?;
    if !end.success {
        return Ok(Evaluated::Refused(end.said));
    }
    Ok(Evaluated::Accepted(copied_manifest(scratch.path()).map(Box::new)))
}

/// The manifest tagged [`SCRATCH_TAG`] in the layout at `dir`.
fn copied_manifest(dir: &std::path::Path) -> Option<ImageManifest> {
    let index = ostree_ext::oci_spec::image::ImageIndex::from_file(dir.join("index.json")).ok()?;
    let entry = index.manifests().iter().find(|m| {
        m.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).is_some_and(|t| t == SCRATCH_TAG)
    })?;
    let digest = entry.digest();
    ImageManifest::from_file(dir.join("blobs").join(digest.algorithm().to_string()).join(digest.digest())).ok()
}

/// Which policy a copy evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The host's.
    Host,
    /// The host's, with no signature location known (an empty
    /// `--registries.d`): whether it requires a signature at all.
    HostWithoutSignatures,
    /// None (`--insecure-policy`): whether the image can be read at all.
    Insecure,
}

/// How a copy ended.
#[derive(Debug)]
struct CopyEnd {
    success: bool,
    /// The error of skopeo's fatal log line, for the message only.
    said: Option<String>,
}

/// `skopeo copy` of `source` into the scratch layout at `scratch`.
async fn copy_to_scratch(source: &str, subject: &Subject<'_>, policy: Policy, scratch: &std::path::Path) -> Result<CopyEnd, Error> {
    let mut command = Command::from(skopeo::command(subject.run_as));
    // Kept alive until skopeo has ended.
    let mut no_signature_locations = None;
    match policy {
        Policy::Host => {}
        Policy::Insecure => {
            command.arg("--insecure-policy");
        }
        Policy::HostWithoutSignatures => {
            let empty = tempfile::Builder::new().prefix("hostd-no-registries.d-").tempdir().context("an empty registries.d")?;
            if subject.run_as == RunAs::Nobody {
                let (uid, gid) = skopeo::nobody_ids();
                std::os::unix::fs::chown(empty.path(), Some(uid), Some(gid)).context("chown of an empty registries.d")?;
            }
            command.arg("--registries.d").arg(empty.path());
            no_signature_locations = Some(empty);
        }
    }
    command.args(["copy", "--quiet", "--retry-times=0", "--remove-signatures"]);
    with_credentials(&mut command, subject, "--src-")?;
    let out = command
        .arg(source)
        .arg(format!("oci:{}:{SCRATCH_TAG}", scratch.display()))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::Error::new(e).context("running skopeo to evaluate the signature policy"))?;
    drop(no_signature_locations);
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(CopyEnd { success: out.status.success(), said: fatal_message(&stderr).or_else(|| non_empty(stderr.trim())) })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Give `command` the credentials the pull uses (ostree-ext's auth.json,
/// on its stdin), never a user's: options `<prefix>authfile` or
/// `<prefix>no-creds` (`--src-` for `copy`, `--` for `inspect`).
fn with_credentials(command: &mut Command, subject: &Subject<'_>, prefix: &str) -> Result<(), Error> {
    command.stdin(Stdio::null());
    if subject.imgref.imgref.transport != Transport::Registry {
        return Ok(());
    }
    match global_authfile() {
        Some(file) => {
            let file = file.as_fd().try_clone_to_owned().context("passing the credentials to skopeo")?;
            command.arg(format!("{prefix}authfile=/dev/stdin")).stdin(Stdio::from(file));
        }
        None => {
            command.arg(format!("{prefix}no-creds"));
        }
    }
    Ok(())
}

/// Before the evaluation: whether the tracked tag still names the imported
/// manifest (itself, or a list holding it), so that a tag moved in between
/// fails at once instead of having the evaluation copy another image's
/// layers. The evaluation's own comparison ([`ensure_same_image`]) stays
/// the binding one.
async fn ensure_tag_unmoved(subject: &Subject<'_>) -> Result<(), Error> {
    let imgref = &subject.imgref.imgref;
    let Some((digest, _)) = &subject.manifest else { return Ok(()) };
    if imgref.transport != Transport::Registry || imgref.name.contains('@') {
        return Ok(());
    }
    let mut command = Command::from(skopeo::command(subject.run_as));
    command.args(["inspect", "--raw", "--retry-times=0"]);
    with_credentials(&mut command, subject, "--")?;
    let out = command
        .arg(imgref.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::Error::new(e).context("running skopeo to read the tag's manifest"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = fatal_message(&stderr).or_else(|| non_empty(stderr.trim())).unwrap_or_default();
        return Err(Error::image_failure(subject.imgref, ImageFailure::SkopeoSaid(said)));
    }
    let served = format!("sha256:{:x}", sha2::Sha256::digest(&out.stdout));
    let listed = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().is_some_and(|v| {
        v["manifests"].as_array().is_some_and(|m| m.iter().any(|e| e["digest"].as_str() == Some(digest.as_str())))
    });
    if served == *digest || listed {
        return Ok(());
    }
    Err(Error::SignatureRejected(format!(
        "{}: the tag now names {served}, not the manifest being imported; the tag moved while it was verified \
         (or the registry answers inconsistently); nothing was deployed, try again",
        described(subject)
    )))
}

/// The authentication file ostree-ext hands the image proxy, open.
pub(super) fn global_authfile() -> Option<std::fs::File> {
    let root = cap_std::fs::Dir::open_ambient_dir("/", cap_std::ambient_authority()).ok()?;
    ostree_ext::globals::get_global_authfile(&root).ok().flatten().map(|(_, file)| file)
}

/// An empty OCI layout in a private directory, with a sparse placeholder of
/// the right size for the config and every layer of the manifest, owned by
/// whoever skopeo runs as. skopeo's OCI destination takes a blob it finds
/// as already copied, so the copy reads none.
fn scratch_layout(subject: &Subject<'_>) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("hostd-policy-").tempdir()?;
    let mut made = vec![dir.path().join("oci-layout"), dir.path().join("index.json")];
    std::fs::write(&made[0], br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(&made[1], br#"{"schemaVersion":2,"manifests":[]}"#)?;
    let blobs = dir.path().join("blobs");
    std::fs::create_dir(&blobs)?;
    made.push(blobs.clone());
    if let Some((_, manifest)) = &subject.manifest {
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = blob.digest();
            let algorithm = blobs.join(digest.algorithm().to_string());
            if !algorithm.exists() {
                std::fs::create_dir(&algorithm)?;
                made.push(algorithm.clone());
            }
            let placeholder = algorithm.join(digest.digest());
            let file = std::fs::File::create(&placeholder).with_context(|| format!("placeholder for {digest}"))?;
            file.set_len(blob.size())?;
            made.push(placeholder);
        }
    }
    if subject.run_as == RunAs::Nobody {
        made.push(dir.path().to_path_buf());
        let (uid, gid) = skopeo::nobody_ids();
        for path in made {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
        }
    }
    Ok(dir)
}

/// The message of skopeo's fatal log line (`time=… level=fatal msg="…"`),
/// without the log's quoting: the reason a rejection gives, for people.
pub(super) fn fatal_message(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains("level=fatal"))?;
    let quoted = line.split_once("msg=\"")?.1.strip_suffix('"')?;
    Some(quoted.replace("\\\"", "\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fatal_message_is_taken_out_of_the_log_line() {
        let stderr = "time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"Source image rejected: \
                      A signature was required, but no signature exists\"\n";
        assert_eq!(fatal_message(stderr).unwrap(), "Source image rejected: A signature was required, but no signature exists");
        assert_eq!(fatal_message("no log line"), None);
    }

}
