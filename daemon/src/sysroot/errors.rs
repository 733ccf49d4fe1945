//! Turning failures of libostree, ostree-ext and skopeo into the API's error
//! names. Those libraries report most conditions only as text, so this is the
//! one place that reads it.

use hostd_interface::Error;

/// Phrases (lower case) that identify a condition, and the error it is.
type Pattern = (&'static [&'static str], fn(String) -> Error);

/// Checked in order.
const PATTERNS: &[Pattern] = &[
    (
        &["no space left on device", "enospc", "not enough free space", "min-free-space"],
        Error::NoSpace,
    ),
    // skopeo died in the middle of a request: its process was seen to end,
    // its reply could not be read, or its side of a layer transfer failed
    // with no cause it could send. Before `Network`, whose "eof" such a
    // text may contain.
    (
        &["skopeo proxy unexpectedly exited", "serialization error", "proxy failure: error and client error"],
        skopeo_stopped,
    ),
    (
        &[
            "manifest unknown",
            "name unknown",
            "not found in",
            "no such image",
            "index.json: no such file or directory",
            "method openimage: lstat",
            "reading manifest",
            "does not exist",
        ],
        Error::ImageNotFound,
    ),
    (
        &[
            "connection refused",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "connection reset",
            "tls handshake",
            "dial tcp",
            "eof",
        ],
        Error::Network,
    ),
    (
        &["signature", "source image rejected", "insecureacceptanything"],
        Error::SignatureRejected,
    ),
];

fn skopeo_stopped(text: String) -> Error {
    Error::Failed(format!("skopeo stopped unexpectedly (it crashed or was killed): {text}"))
}

/// Name an error from an operation by what its cause chain says.
pub fn classify(e: anyhow::Error) -> Error {
    if let Some(named) = e.downcast_ref::<Error>() {
        return named.clone();
    }
    let text = format!("{e:#}");
    let lower = text.to_lowercase();
    for (phrases, make) in PATTERNS {
        if phrases.iter().any(|p| lower.contains(p)) {
            return make(text);
        }
    }
    Error::Failed(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_errors_pass_through() {
        let e = anyhow::Error::new(Error::Cancelled("stop".into())).context("pulling");
        assert_eq!(classify(e), Error::Cancelled("stop".into()));
    }

    #[test]
    fn conditions_are_recognised() {
        let c = |s: &str| classify(anyhow::anyhow!("{s}")).short_name();
        assert_eq!(c("writing object: No space left on device"), "NoSpace");
        assert_eq!(
            c("pinging container registry 127.0.0.1:5000: dial tcp 127.0.0.1:5000: connect: connection refused"),
            "Network"
        );
        assert_eq!(c("reading manifest latest in 127.0.0.1:5000/os: manifest unknown"), "ImageNotFound");
        assert_eq!(
            c("failed to invoke method OpenImage: lstat /srv/absent: no such file or directory"),
            "ImageNotFound"
        );
        assert_eq!(c("writing /sysroot/x: No such file or directory"), "Failed");
        assert_eq!(c("Source image rejected: A signature was required"), "SignatureRejected");
        assert_eq!(c("something odd"), "Failed");
        assert_eq!(
            c("writing commit: min-free-space-percent '3%' would be exceeded, at least 4096 bytes requested"),
            "NoSpace"
        );
    }

    #[test]
    fn a_skopeo_that_died_mid_request_is_named() {
        let crashed = "proxy failure: failed to invoke method FinishPipe: serialization error and client error: EOF";
        let e = classify(anyhow::anyhow!("{crashed}"));
        assert_eq!(e.short_name(), "Failed");
        assert!(e.message().starts_with("skopeo stopped unexpectedly (it crashed or was killed): proxy failure"), "{e:?}");
        let exited = "skopeo proxy unexpectedly exited during request method GetBlob: signal: 11 (SIGSEGV)";
        assert!(classify(anyhow::anyhow!("{exited}")).message().contains("SIGSEGV"));
        let mute = "Unencapsulating base: proxy failure: error and client error: incomplete deflate stream";
        assert!(classify(anyhow::anyhow!("{mute}")).message().starts_with("skopeo stopped unexpectedly"));
    }
}
