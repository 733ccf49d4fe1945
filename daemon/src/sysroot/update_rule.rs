//! What counts as an update: the one rule `Check`, `Upgrade` (also
//! unattended) and `Status` apply to the image the tracked reference names
//! now, compared with the deployed image.
//!
//! 1. The same manifest digest, or the same config digest (the image ID:
//!    the same image, packed or pushed differently), is **the same** image.
//! 2. Otherwise the build times decide, each the time `Status` shows for the
//!    image (the `org.opencontainers.image.created` annotation, else the
//!    config's `created`, as RFC 3339; [`super::metadata`]): an image built
//!    **before** the deployed one is a **downgrade**.
//! 3. Anything else is **an update**: built later or at the same time, or
//!    either build time missing or not RFC 3339. hostd cannot tell such an
//!    image is older, so it follows the tag, as bootc does.
//!
//! The rule is pure, so it is tested by table; the callers build the
//! [`ImageFacts`] from ostree-ext's types with [`facts`].

use chrono::{DateTime, Utc};
use ostree_ext::container::store::LayeredImageState;
use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};

use super::metadata::{format_time, ImageMetadata};

/// What the image found for the tracked reference is to the deployed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The deployed image itself: nothing to do.
    Same,
    /// A different image, not built before the deployed one.
    Update,
    /// A different image built before the deployed one: installed only on
    /// request (`allow-downgrade`).
    Downgrade,
}

/// What the rule looks at of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts<'a> {
    /// Manifest digest (`sha256:…`).
    pub manifest_digest: &'a str,
    /// Config digest (the image ID).
    pub config_digest: &'a str,
    /// The build time, as `Status` shows it; `None` when unknown or malformed.
    pub created: Option<DateTime<Utc>>,
    /// The version, as `Status` shows it, for messages.
    pub version: Option<String>,
}

/// The facts of an image from its manifest digest, manifest and config.
pub fn facts<'a>(
    manifest_digest: &'a str,
    manifest: &'a ImageManifest,
    config: &'a ImageConfiguration,
) -> ImageFacts<'a> {
    let metadata = ImageMetadata::of(manifest, config);
    ImageFacts {
        manifest_digest,
        config_digest: manifest.config().digest().as_ref(),
        created: metadata.created,
        version: metadata.version,
    }
}

/// The facts of an image in the repo (the deployed one, or one fetched earlier).
pub fn state_facts(state: &LayeredImageState) -> ImageFacts<'_> {
    facts(state.manifest_digest.as_ref(), &state.manifest, &state.configuration)
}

/// [`classify`] against the deployed image when its metadata could be read;
/// without it, only an image of the same digest is known to be the same.
pub fn classify_against(deployed: Option<&ImageFacts<'_>>, found: &ImageFacts<'_>) -> Verdict {
    match deployed {
        Some(d) => classify(d, found),
        None => Verdict::Update,
    }
}

/// The result a check (or an unattended run) gives for a downgrade; its
/// first words, `Downgrade available, not installed`, are stable.
pub fn downgrade_message(found: &ImageFacts<'_>, deployed: &ImageFacts<'_>) -> String {
    format!(
        "Downgrade available, not installed: {} ({}) was built {}, before the deployed image ({}); \
         only an upgrade with allow-downgrade installs it.",
        found.version.as_deref().unwrap_or("no version"),
        found.manifest_digest,
        found.created.map_or_else(|| "at an unknown time".to_string(), format_time),
        deployed.created.map_or_else(|| "unknown".to_string(), format_time),
    )
}

/// Apply the rule (module docs) to `found`, the image the tracked reference
/// names now, against `deployed`.
pub fn classify(deployed: &ImageFacts<'_>, found: &ImageFacts<'_>) -> Verdict {
    if found.manifest_digest == deployed.manifest_digest || found.config_digest == deployed.config_digest {
        return Verdict::Same;
    }
    match (found.created, deployed.created) {
        (Some(new), Some(old)) if new < old => Verdict::Downgrade,
        _ => Verdict::Update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image<'a>(digest: &'a str, config: &'a str, created: Option<&'a str>) -> ImageFacts<'a> {
        ImageFacts { manifest_digest: digest, config_digest: config, created: created.and_then(super::super::metadata::parse_time), version: None }
    }

    #[test]
    fn the_rule_by_table() {
        let deployed = image("sha256:m1", "sha256:c1", Some("2026-01-01T00:01:00Z"));
        let cases: &[(&str, ImageFacts<'_>, Verdict)] = &[
            ("the deployed manifest", image("sha256:m1", "sha256:c1", Some("2026-01-01T00:01:00Z")), Verdict::Same),
            (
                "same image ID, other manifest (re-pushed, recompressed)",
                image("sha256:m9", "sha256:c1", Some("2026-01-01T00:01:00Z")),
                Verdict::Same,
            ),
            ("same manifest, times ignored", image("sha256:m1", "sha256:c1", Some("1999-01-01T00:00:00Z")), Verdict::Same),
            ("built later", image("sha256:m2", "sha256:c2", Some("2026-01-01T00:02:00Z")), Verdict::Update),
            ("built earlier", image("sha256:m0", "sha256:c0", Some("2026-01-01T00:00:00Z")), Verdict::Downgrade),
            ("one second earlier", image("sha256:m0", "sha256:c0", Some("2026-01-01T00:00:59Z")), Verdict::Downgrade),
            (
                "earlier, written in another offset",
                image("sha256:m0", "sha256:c0", Some("2026-01-01T01:00:59+01:00")),
                Verdict::Downgrade,
            ),
            (
                "the same instant in another offset, other image",
                image("sha256:m2", "sha256:c2", Some("2026-01-01T01:01:00+01:00")),
                Verdict::Update,
            ),
            (
                "built at the same time (reproducible builds), other image",
                image("sha256:m2", "sha256:c2", Some("2026-01-01T00:01:00Z")),
                Verdict::Update,
            ),
            ("no build time", image("sha256:m2", "sha256:c2", None), Verdict::Update),
            ("build time not RFC 3339", image("sha256:m2", "sha256:c2", Some("2025-12-31 23:00:00")), Verdict::Update),
            ("empty build time", image("sha256:m2", "sha256:c2", Some("")), Verdict::Update),
            (
                "sub-second precision, earlier",
                image("sha256:m0", "sha256:c0", Some("2026-01-01T00:00:59.999999999Z")),
                Verdict::Downgrade,
            ),
        ];
        for (what, found, verdict) in cases {
            assert_eq!(classify(&deployed, found), *verdict, "{what}");
        }
    }

    #[test]
    fn a_deployed_image_without_a_usable_build_time_only_knows_same_or_update() {
        for created in [None, Some("yesterday")] {
            let deployed = image("sha256:m1", "sha256:c1", created);
            let older = image("sha256:m0", "sha256:c0", Some("1970-01-01T00:00:00Z"));
            assert_eq!(classify(&deployed, &older), Verdict::Update, "{created:?}");
            assert_eq!(classify(&deployed, &deployed), Verdict::Same);
        }
    }
}
