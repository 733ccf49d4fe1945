//! Enforcing the containers signature policy for `ostree-image-signed`
//! references.
//!
//! skopeo's image proxy in the releases Debian 12 ships (1.9) opens images
//! without evaluating `/etc/containers/policy.json`, so a pull through it
//! verifies nothing. `skopeo copy` does evaluate the policy, before it reads
//! any layer: hostd lets it do exactly that and no more, by copying into
//! `docker-archive:/dev/full`, whose first write fails. A rejection names the
//! policy's reason; any other ending means the policy accepted the image.

use ostree_ext::container::OstreeImageReference;
use tokio::process::Command;

use super::image::user_reference;
use super::skopeo::{self, RunAs};
use super::{Error, ImageFailure};

/// A destination that accepts nothing: the copy stops at its first byte.
const NOWHERE: &str = "docker-archive:/dev/full";

/// What `skopeo copy` says when the policy refuses the source.
const REJECTED: &str = "Source image rejected";

/// What `skopeo copy` says when it could not open the source: the policy
/// was never evaluated.
const SOURCE_FAILED: &str = "initializing source";

/// Evaluate the host's containers policy for `imgref`, reading it as
/// `run_as` (as the pull will: `nobody` for a path others can write).
pub async fn verify(imgref: &OstreeImageReference, run_as: RunAs) -> Result<(), Error> {
    let source = imgref.imgref.to_string();
    super::pull::require_skopeo()?;
    let out = Command::from(skopeo::command(run_as))
        .args(["copy", "--quiet", "--retry-times=0"])
        .arg(&source)
        .arg(NOWHERE)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::Error::new(e).context("running skopeo to check the signature policy"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(at) = stderr.find(REJECTED) {
        let reason = stderr[at..].lines().next().unwrap_or(REJECTED).trim_end_matches('"');
        return Err(Error::SignatureRejected(format!("{}: {reason}", user_reference(imgref))));
    }
    let fatal = fatal_message(&stderr);
    if out.status.success() || accepted(fatal.as_deref()) {
        return Ok(());
    }
    // The policy was never reached: the image could not be opened at all.
    let said = fatal.unwrap_or_else(|| stderr.trim().to_string());
    Err(Error::image_failure(imgref, ImageFailure::SkopeoSaid(said)))
}

/// Whether `skopeo copy` got past the policy, from its fatal message: past
/// the source's opening the policy has accepted it, and the copy stops at
/// its first write to /dev/full. Every failure names the destination, so
/// only the source's own failure tells them apart.
fn accepted(fatal: Option<&str>) -> bool {
    fatal.is_some_and(|m| m.contains("/dev/full") && !m.contains(SOURCE_FAILED))
}

/// The message of skopeo's fatal log line (`time=… level=fatal msg="…"`),
/// where its error is, without the log's quoting.
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
        let stderr = "time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"initializing source docker://127.0.0.1:5000/os:nope: \
                      reading manifest nope in 127.0.0.1:5000/os: manifest unknown: manifest unknown\"\n";
        let said = fatal_message(stderr).unwrap();
        assert!(said.ends_with("manifest unknown: manifest unknown"), "{said}");
        assert_eq!(fatal_message("no log line"), None);
    }

    /// skopeo 1.9.3's words for an image it opened and one it could not.
    #[test]
    fn only_a_copy_past_the_source_counts_as_accepted() {
        let wrote = "time=\"2026-11-30T11:52:23Z\" level=fatal msg=\" (dest: write /dev/full: no space left on device): \
                     writing blob: write /dev/full: no space left on device\"\n";
        let unopened = "time=\"2026-11-30T11:52:23Z\" level=fatal msg=\" (dest: write /dev/full: no space left on device): \
                        initializing source oci:/var/tmp/sigt:none: open /var/tmp/sigt/index.json: no such file or directory\"\n";
        assert!(accepted(fatal_message(wrote).as_deref()));
        assert!(!accepted(fatal_message(unopened).as_deref()));
        assert!(!accepted(None));
    }
}
