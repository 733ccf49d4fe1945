//! Enforcing the containers signature policy (`/etc/containers/policy.json`)
//! for an image about to be deployed, bound to the manifest the import reads.
//!
//! An enforced image is one tracked as `ostree-image-signed` (Switch with
//! `enforce-container-sigpolicy`), or any image when `[updates]
//! require_signatures` is set. Its policy is evaluated after ostree-ext has
//! fetched the manifest through the image proxy and before any layer is
//! read, against exactly that manifest: for a registry,
//! `docker://<repository>@<manifest digest>`. The import then reads the same
//! manifest, so a tag that moves between the evaluation and the pull (a
//! registry answering the two requests differently) changes nothing
//! deployed: what was verified is what is deployed.
//!
//! The evaluation is a `skopeo copy --remove-signatures` of that manifest
//! into a scratch OCI layout that already holds every blob the manifest
//! names (sparse placeholders): the copy reads the manifest, the config and
//! the signatures, evaluates the policy, and then finds every layer present,
//! so it reads none. Its outcome is typed by exit status alone:
//! - success: the policy accepted the image;
//! - failure: the same copy is run once more with `--insecure-policy`. If
//!   that one succeeds, the policy alone refused the image
//!   ([`Error::SignatureRejected`], with skopeo's reason as its text); if it
//!   fails too, the image could not be read ([`ImageFailure::SkopeoSaid`]).
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
/// pinned to a manifest digest where its transport can name one.
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
/// accepts the image. Errors: [`Error::SignatureRejected`] (the policy
/// refused it; the text names the image, its digest and skopeo's reason),
/// [`Error::Image`] (it could not be read at all), [`Error::Cancelled`].
pub async fn verify(subject: Subject<'_>, cancel: &CancellationToken) -> Result<(), Error> {
    super::pull::require_skopeo()?;
    let subject = &subject;
    let source = source_reference(subject);
    tracing::info!("evaluating the containers signature policy for {source}");
    let evaluation = async {
        let first = copy_to_scratch(&source, subject, Policy::Host).await?;
        if first.success {
            return Ok(());
        }
        let without_policy = copy_to_scratch(&source, subject, Policy::Insecure).await?;
        let who = match &subject.manifest {
            Some((digest, _)) => format!("{} ({digest})", user_reference(subject.imgref)),
            None => user_reference(subject.imgref),
        };
        if without_policy.success {
            let reason = first.said.unwrap_or_else(|| "the policy did not accept it".into());
            return Err(Error::SignatureRejected(format!(
                "the containers policy {} rejected {who}: {reason}",
                crate::containers_policy::POLICY_PATH
            )));
        }
        let said = without_policy.said.unwrap_or_else(|| "skopeo failed without a message".into());
        Err(Error::image_failure(subject.imgref, ImageFailure::SkopeoSaid(said)))
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::cancelled()),
        r = evaluation => r,
    }
}

/// Refuse to enforce the policy for `imgref` when the policy accepts it
/// unsigned ([`crate::containers_policy::ensure_enforcing`]): enforcing it
/// would verify nothing. [`Error::SignatureRejected`] names the file.
pub fn ensure_policy_requires_signatures(imgref: &OstreeImageReference) -> Result<(), Error> {
    let api = super::image::reference_to_api(imgref)?;
    let path = std::path::Path::new(crate::containers_policy::POLICY_PATH);
    crate::containers_policy::ensure_enforcing(path, &api).map_err(|e| Error::SignatureRejected(e.to_string()))
}

/// What skopeo reads: for a registry, the repository at `digest`, which
/// skopeo checks the manifest against; a local image by its reference.
fn source_reference(subject: &Subject<'_>) -> String {
    let imgref = &subject.imgref.imgref;
    match (imgref.transport, &subject.manifest) {
        (Transport::Registry, Some((digest, _))) => format!("docker://{}@{digest}", repository_of(&imgref.name)),
        _ => imgref.to_string(),
    }
}

/// `registry[:port]/path` of a registry reference, without its tag or digest.
fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(repo, _)| repo);
    // A tag follows the last `:` after the last `/`; a `:` before it is a port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

/// Which policy a copy evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The host's.
    Host,
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

/// `skopeo copy` of `source` into a scratch layout holding the manifest's
/// blobs already.
async fn copy_to_scratch(source: &str, subject: &Subject<'_>, policy: Policy) -> Result<CopyEnd, Error> {
    let scratch = scratch_layout(subject).map_err(|e| Error::Other(e.context("preparing the policy evaluation")))?;
    let mut command = Command::from(skopeo::command(subject.run_as));
    if policy == Policy::Insecure {
        command.arg("--insecure-policy");
    }
    command.args(["copy", "--quiet", "--retry-times=0", "--remove-signatures"]);
    // The credentials the pull uses (ostree-ext's auth.json), never a user's.
    let authfile = if subject.imgref.imgref.transport == Transport::Registry { global_authfile() } else { None };
    match &authfile {
        Some(file) => {
            let file = file.as_fd().try_clone_to_owned().context("passing the credentials to skopeo")?;
            command.arg("--src-authfile=/dev/stdin").stdin(Stdio::from(file));
        }
        None => {
            if subject.imgref.imgref.transport == Transport::Registry {
                command.arg("--src-no-creds");
            }
            command.stdin(Stdio::null());
        }
    }
    let out = command
        .arg(source)
        .arg(format!("oci:{}:{SCRATCH_TAG}", scratch.path().display()))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::Error::new(e).context("running skopeo to evaluate the signature policy"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(CopyEnd { success: out.status.success(), said: fatal_message(&stderr).or_else(|| non_empty(stderr.trim())) })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The authentication file ostree-ext hands the image proxy, open.
fn global_authfile() -> Option<std::fs::File> {
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
fn fatal_message(stderr: &str) -> Option<String> {
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

    #[test]
    fn the_repository_is_the_reference_without_tag_or_digest() {
        for (name, repo) in [
            ("127.0.0.1:5000/hostd/os:latest", "127.0.0.1:5000/hostd/os"),
            ("127.0.0.1:5000/hostd/os", "127.0.0.1:5000/hostd/os"),
            ("quay.io/fedora/fedora-bootc:41", "quay.io/fedora/fedora-bootc"),
            ("registry:5000/os@sha256:0123", "registry:5000/os"),
            ("registry:5000/os:v2@sha256:0123", "registry:5000/os"),
            ("localhost:5000/os", "localhost:5000/os"),
        ] {
            assert_eq!(repository_of(name), repo, "{name}");
        }
    }
}
