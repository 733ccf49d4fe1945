//! What a registry answered, read from skopeo's error text: the one place
//! where hostd reads text to name an error, because skopeo passes a
//! registry's answer on only as text.
//!
//! skopeo (containers/image) writes its errors as `: `-separated segments,
//! e.g. `reading manifest v2 in 127.0.0.1:5000/os: manifest unknown`. A
//! rule matches a whole segment, never a phrase inside one:
//! - an OCI distribution error code, as containers/image prints it (lower
//!   case, `_` as a space: `MANIFEST_UNKNOWN` → `manifest unknown`);
//! - an HTTP status containers/image reports for a reply without such a
//!   code (`received unexpected HTTP status: 500 Internal Server Error`);
//! - a failed connection as Go's net package reports it (its errno texts).
//!
//! The unit tests run over real texts of Debian 12's skopeo 1.9.3, captured
//! one file per case in `fixtures/` by `scripts/capture-registry-errors.py`.

/// What the registry (or the way to it) said, as far as a user must act
/// differently on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// HTTP 401, `UNAUTHORIZED`: credentials are missing or wrong.
    Unauthorized,
    /// HTTP 403, `DENIED`: these credentials may not read the image.
    Denied,
    /// HTTP 404, `MANIFEST_UNKNOWN`, `NAME_UNKNOWN`: no such tag or repository.
    NotFound,
    /// HTTP 5xx or 429 (`TOOMANYREQUESTS`): the registry cannot serve now.
    Unavailable,
    /// The connection failed: refused, reset, timed out, cut short.
    Unreachable,
}

/// OCI distribution error codes as containers/image prints them.
const ERROR_CODES: &[(&str, RegistryAnswer)] = &[
    ("unauthorized", RegistryAnswer::Unauthorized),
    ("denied", RegistryAnswer::Denied),
    ("manifest unknown", RegistryAnswer::NotFound),
    ("name unknown", RegistryAnswer::NotFound),
    ("toomanyrequests", RegistryAnswer::Unavailable),
];

/// The segment after which containers/image puts a bare HTTP status.
const UNEXPECTED_STATUS: &str = "received unexpected HTTP status";

/// Failed connections as Go reports them: the segment that ends the text.
const CONNECTION_FAILURES: &[&str] = &[
    "connection refused",
    "connection reset by peer",
    "i/o timeout",
    "no route to host",
    "network is unreachable",
    "broken pipe",
    "EOF",
    "unexpected EOF",
];

/// What `text` (an error message of skopeo) says the registry answered, or
/// `None` when it says nothing this table knows.
pub fn classify(text: &str) -> Option<RegistryAnswer> {
    let segments: Vec<&str> = text.split(": ").map(str::trim).collect();
    for (i, segment) in segments.iter().enumerate() {
        if let Some((_, answer)) = ERROR_CODES.iter().find(|(code, _)| segment == code) {
            return Some(*answer);
        }
        if *segment == UNEXPECTED_STATUS {
            return segments.get(i + 1).and_then(|s| http_status(s)).and_then(answer_for_status);
        }
    }
    let last = segments.last()?;
    CONNECTION_FAILURES.contains(last).then_some(RegistryAnswer::Unreachable)
}

/// `500 Internal Server Error` → 500.
fn http_status(segment: &str) -> Option<u16> {
    let code = segment.split(' ').next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

fn answer_for_status(status: u16) -> Option<RegistryAnswer> {
    match status {
        401 => Some(RegistryAnswer::Unauthorized),
        403 => Some(RegistryAnswer::Denied),
        404 => Some(RegistryAnswer::NotFound),
        429 | 500..=599 => Some(RegistryAnswer::Unavailable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real texts of skopeo 1.9.3's image proxy, one per case, and what
    /// each must be read as.
    const FIXTURES: &[(&str, &str, Option<RegistryAnswer>)] = &[
        ("registry-401-no-credentials", include_str!("fixtures/registry-401-no-credentials.txt"), Some(RegistryAnswer::Unauthorized)),
        ("registry-401-wrong-credentials", include_str!("fixtures/registry-401-wrong-credentials.txt"), Some(RegistryAnswer::Unauthorized)),
        ("registry-manifest-unknown", include_str!("fixtures/registry-manifest-unknown.txt"), Some(RegistryAnswer::NotFound)),
        ("registry-repository-absent", include_str!("fixtures/registry-repository-absent.txt"), Some(RegistryAnswer::NotFound)),
        ("standin-404-name-unknown", include_str!("fixtures/standin-404-name-unknown.txt"), Some(RegistryAnswer::NotFound)),
        ("registry-connection-refused", include_str!("fixtures/registry-connection-refused.txt"), Some(RegistryAnswer::Unreachable)),
        ("standin-500", include_str!("fixtures/standin-500.txt"), Some(RegistryAnswer::Unavailable)),
        ("standin-403-denied", include_str!("fixtures/standin-403-denied.txt"), Some(RegistryAnswer::Denied)),
        ("standin-429-toomanyrequests", include_str!("fixtures/standin-429-toomanyrequests.txt"), Some(RegistryAnswer::Unavailable)),
        ("standin-reset-reading-manifest", include_str!("fixtures/standin-reset-reading-manifest.txt"), Some(RegistryAnswer::Unreachable)),
        ("oci-tag-missing", include_str!("fixtures/oci-tag-missing.txt"), None),
        ("oci-tag-and-digest", include_str!("fixtures/oci-tag-and-digest.txt"), None),
    ];

    #[test]
    fn captured_texts_are_read_as_the_registry_meant() {
        for (case, text, expected) in FIXTURES {
            assert_eq!(classify(text.trim_end()), *expected, "{case}: {text}");
        }
    }

    #[test]
    fn text_no_rule_knows_is_no_answer() {
        assert_eq!(classify("something odd happened"), None);
        // A phrase inside a segment is not a segment.
        assert_eq!(classify("reading manifest latest in 127.0.0.1:5000/os: the denied list changed"), None);
        assert_eq!(classify("received unexpected HTTP status: 302 Found"), None);
        assert_eq!(classify(""), None);
    }
}
