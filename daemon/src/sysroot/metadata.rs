//! An image's version and build time, read from its manifest and config the
//! way registries and build tools really write them: the one place where
//! labels and annotations become the values that reach the Host document,
//! the `Deployments` and `CachedUpdate` properties, job messages and the
//! journal. The rules are documented in docs/dbus-api.md ("Image metadata").
//!
//! - **Version**: the first usable value of the config label
//!   `org.opencontainers.image.version`, the config label `version`, the
//!   manifest annotation `org.opencontainers.image.version`. A value is
//!   trimmed of surrounding white space; it is not usable (and the next
//!   source is tried) when nothing is left, when it still holds a control
//!   character, or when it is longer than [`MAX_VERSION_CHARS`] characters.
//! - **Build time**: the first usable value of the manifest annotation
//!   `org.opencontainers.image.created`, then the config's `created`. A value
//!   is usable when it parses as RFC 3339 (chrono's reading: `T`, `t` or a
//!   space between date and time, `Z` or a numeric offset); it is given out
//!   normalized to UTC (`2026-01-01T00:00:00Z`, fractional seconds kept).
//!   Anything else (empty, a date without a time, no offset, prose) is not
//!   usable.
//! - **Description labels**: the config labels
//!   `org.opencontainers.image.{title,description,url,source,revision,version}`
//!   ([`DESCRIPTION_LABELS`]), each trimmed; one is left out when nothing is
//!   left, when it holds a control character other than a line break or a
//!   tab, or when it is longer than [`MAX_LABEL_CHARS`] characters.
//! - Nothing usable: unknown (`None`; `null` in JSON, absent from an `a{sv}`),
//!   never an empty string.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};

/// The OCI label and annotation naming an image's version.
pub const OCI_VERSION: &str = "org.opencontainers.image.version";
/// The older label naming an image's version (ostree-ext and bootc write it).
pub const LEGACY_VERSION: &str = "version";
/// The OCI annotation holding an image's build time.
pub const OCI_CREATED: &str = "org.opencontainers.image.created";
/// Longer versions are not usable: no one names a release that way, and the
/// text status and the journal would carry it on every line.
pub const MAX_VERSION_CHARS: usize = 128;

/// The labels that describe an image to a person (what a GUI links release
/// notes with), passed on by their full names.
pub const DESCRIPTION_LABELS: [&str; 6] = [
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.url",
    "org.opencontainers.image.source",
    "org.opencontainers.image.revision",
    OCI_VERSION,
];
/// Longer label values are left out: a description is a paragraph, not a
/// document, and every `Deployments` read carries them.
pub const MAX_LABEL_CHARS: usize = 1024;

/// The usable [`DESCRIPTION_LABELS`] of an image config, by full name.
pub fn description_labels(config: &ImageConfiguration) -> BTreeMap<String, String> {
    let Some(labels) = config.config().as_ref().and_then(|c| c.labels().as_ref()) else { return BTreeMap::new() };
    DESCRIPTION_LABELS
        .iter()
        .filter_map(|key| {
            let v = labels.get(*key)?.trim();
            let usable = !v.is_empty()
                && !v.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
                && v.chars().count() <= MAX_LABEL_CHARS;
            usable.then(|| (key.to_string(), v.to_string()))
        })
        .collect()
}

/// A version and a build time, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMetadata {
    /// The version, when a source has a usable one.
    pub version: Option<String>,
    /// The build time, when a source has a usable one.
    pub created: Option<DateTime<Utc>>,
}

impl ImageMetadata {
    /// Read an image's manifest and config.
    pub fn of(manifest: &ImageManifest, config: &ImageConfiguration) -> ImageMetadata {
        let labels = config.config().as_ref().and_then(|c| c.labels().as_ref());
        let annotations = manifest.annotations().as_ref();
        ImageMetadata {
            version: version(labels, annotations),
            created: created(
                annotations.and_then(|a| a.get(OCI_CREATED)).map(String::as_str),
                config.created().as_deref(),
            ),
        }
    }

    /// The build time as the Host document and the properties carry it (RFC 3339, UTC).
    pub fn timestamp(&self) -> Option<String> {
        self.created.map(format_time)
    }

    /// The version for a sentence: the version, or `no version`.
    pub fn version_or_none(&self) -> &str {
        self.version.as_deref().unwrap_or("no version")
    }
}

/// The version by the precedence in the module documentation.
pub fn version(
    labels: Option<&HashMap<String, String>>,
    annotations: Option<&HashMap<String, String>>,
) -> Option<String> {
    let sources = [(labels, OCI_VERSION), (labels, LEGACY_VERSION), (annotations, OCI_VERSION)];
    sources
        .into_iter()
        .filter_map(|(map, key)| map.and_then(|m| m.get(key)))
        .find_map(|v| usable_version(v))
}

/// One version value, trimmed, or `None` when it is not usable.
pub fn usable_version(raw: &str) -> Option<String> {
    let v = raw.trim();
    let usable = !v.is_empty() && !v.chars().any(char::is_control) && v.chars().count() <= MAX_VERSION_CHARS;
    usable.then(|| v.to_string())
}

/// The build time by the precedence in the module documentation.
pub fn created(annotation: Option<&str>, config_created: Option<&str>) -> Option<DateTime<Utc>> {
    [annotation, config_created].into_iter().flatten().find_map(parse_time)
}

/// One RFC 3339 time, in UTC; `None` when it is not one.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// RFC 3339 in UTC with `Z`, fractional seconds only when there are some.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label or annotation pairs of one table row.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn map(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        (!pairs.is_empty()).then(|| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn version_precedence_and_malformed_values() {
        let long = "1".repeat(MAX_VERSION_CHARS + 1);
        let longest = "1".repeat(MAX_VERSION_CHARS);
        // (config labels, manifest annotations, expected)
        let table: &[(Pairs, Pairs, Option<&str>)] = &[
            (&[], &[], None),
            (&[(OCI_VERSION, "42.1")], &[], Some("42.1")),
            (&[(LEGACY_VERSION, "v7")], &[], Some("v7")),
            (&[], &[(OCI_VERSION, "a1")], Some("a1")),
            // The OCI label wins over `version`, labels over the annotation.
            (&[(OCI_VERSION, "2"), (LEGACY_VERSION, "1")], &[(OCI_VERSION, "3")], Some("2")),
            (&[(LEGACY_VERSION, "1")], &[(OCI_VERSION, "3")], Some("1")),
            // Empty and white space only: not usable, the next source counts.
            (&[(OCI_VERSION, "")], &[], None),
            (&[(OCI_VERSION, "   \t")], &[], None),
            (&[(OCI_VERSION, ""), (LEGACY_VERSION, "v7")], &[], Some("v7")),
            (&[(OCI_VERSION, " "), (LEGACY_VERSION, "")], &[(OCI_VERSION, "a1")], Some("a1")),
            // Trimmed.
            (&[(OCI_VERSION, "  9.0\n")], &[], Some("9.0")),
            // Inner control characters and over-long values: not usable.
            (&[(OCI_VERSION, "1\n2"), (LEGACY_VERSION, "v7")], &[], Some("v7")),
            (&[(OCI_VERSION, "1\u{1b}[31m")], &[], None),
            (&[(OCI_VERSION, long.as_str()), (LEGACY_VERSION, "v7")], &[], Some("v7")),
            (&[(OCI_VERSION, longest.as_str())], &[], Some(longest.as_str())),
            // Inner spaces and non-ASCII are kept.
            (&[(OCI_VERSION, "42 (Forty Two) ü")], &[], Some("42 (Forty Two) ü")),
        ];
        for (labels, annotations, expected) in table {
            let got = version(map(labels).as_ref(), map(annotations).as_ref());
            assert_eq!(got.as_deref(), *expected, "labels {labels:?}, annotations {annotations:?}");
        }
    }

    #[test]
    fn description_labels_are_the_six_oci_ones_when_usable() {
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
            "config": {"Labels": {
                "org.opencontainers.image.title": " Test OS ",
                "org.opencontainers.image.description": "line one\nline two",
                "org.opencontainers.image.url": "",
                "org.opencontainers.image.source": "https://example.org/src\u{1b}[31m",
                "org.opencontainers.image.revision": long,
                "org.opencontainers.image.version": "2",
                "org.opencontainers.image.vendor": "not passed on",
            }}
        }))
        .unwrap();
        let labels = description_labels(&config);
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["org.opencontainers.image.description", "org.opencontainers.image.title", "org.opencontainers.image.version"]
        );
        assert_eq!(labels["org.opencontainers.image.title"], "Test OS");
        assert_eq!(labels["org.opencontainers.image.description"], "line one\nline two");
    }

    #[test]
    fn timestamp_precedence_and_malformed_values() {
        // (annotation, config created, expected)
        let table: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (None, None, None),
            (None, Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            (Some("2026-02-01T00:00:00Z"), None, Some("2026-02-01T00:00:00Z")),
            // The annotation wins when usable.
            (Some("2026-02-01T00:00:00Z"), Some("2026-01-01T00:00:00Z"), Some("2026-02-01T00:00:00Z")),
            // Normalized to UTC with `Z`; fractional seconds kept, lower case accepted.
            (Some("2026-02-01T02:00:00+02:00"), None, Some("2026-02-01T00:00:00Z")),
            (None, Some("2026-01-01T00:00:00.123456789Z"), Some("2026-01-01T00:00:00.123456789Z")),
            (None, Some("2026-01-01t00:00:00z"), Some("2026-01-01T00:00:00Z")),
            (None, Some("2026-01-01 00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            (None, Some(" 2026-01-01T00:00:00Z\n"), Some("2026-01-01T00:00:00Z")),
            // Not RFC 3339: unknown, or the next source.
            (Some(""), None, None),
            (Some("   "), Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            (Some("yesterday"), Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            (None, Some("2026-01-01"), None),
            (None, Some("2026-01-01T00:00:00"), None),
            (None, Some("2026-01-01 00:00:00 +0000 UTC"), None),
            (None, Some("Thu, 01 Jan 2026 00:00:00 GMT"), None),
            (None, Some("1767225600"), None),
            (None, Some("2026-13-01T00:00:00Z"), None),
        ];
        for (annotation, config, expected) in table {
            let got = created(*annotation, *config).map(format_time);
            assert_eq!(got.as_deref(), *expected, "annotation {annotation:?}, created {config:?}");
        }
    }

    #[test]
    fn metadata_of_a_manifest_and_config() {
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "not a time",
            "config": {"Labels": {OCI_VERSION: "", LEGACY_VERSION: " 5 "}},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []
        }))
        .unwrap();
        let manifest: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "size": 1
            },
            "layers": [],
            "annotations": {OCI_CREATED: "2026-03-01T10:00:00+01:00"}
        }))
        .unwrap();
        let meta = ImageMetadata::of(&manifest, &config);
        assert_eq!(meta.version.as_deref(), Some("5"));
        assert_eq!(meta.timestamp().as_deref(), Some("2026-03-01T09:00:00Z"));
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "history": []
        }))
        .unwrap();
        let manifest: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "size": 1
            },
            "layers": []
        }))
        .unwrap();
        let meta = ImageMetadata::of(&manifest, &config);
        assert_eq!(meta, ImageMetadata::default());
        assert_eq!(meta.version_or_none(), "no version");
        assert_eq!(meta.timestamp(), None);
    }
}
