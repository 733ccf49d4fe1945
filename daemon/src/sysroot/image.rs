//! Conversions between ostree-ext's image types and the Host document's.

use anyhow::{Context, Result};
use hostd_interface::host::{ImageReference, ImageSignature, ImageStatus, Transport};
use ostree_ext::container::{
    self as ostree_container, store::LayeredImageState, OstreeImageReference, SignatureSource,
};
use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};

use super::metadata::ImageMetadata;

/// The image reference of the Host document for an ostree-ext reference.
pub fn reference_to_api(r: &OstreeImageReference) -> Result<ImageReference> {
    let transport = match r.imgref.transport {
        ostree_container::Transport::Registry => Transport::Registry,
        ostree_container::Transport::OciDir => Transport::Oci,
        ostree_container::Transport::OciArchive => Transport::OciArchive,
        ostree_container::Transport::ContainerStorage => Transport::ContainersStorage,
        ostree_container::Transport::Dir => Transport::Dir,
        ostree_container::Transport::DockerArchive => Transport::DockerArchive,
    };
    let signature = match &r.sigverify {
        SignatureSource::OstreeRemote(remote) => ImageSignature::OstreeRemote(remote.clone()),
        SignatureSource::ContainerPolicy => ImageSignature::ContainerPolicy,
        SignatureSource::ContainerPolicyAllowInsecure => ImageSignature::Insecure,
    };
    Ok(ImageReference {
        image: r.imgref.name.clone(),
        transport,
        signature: Some(signature),
    })
}

/// The ostree-ext reference for an API image reference.
pub fn reference_from_api(r: &ImageReference) -> OstreeImageReference {
    let transport = match r.transport {
        Transport::Registry => ostree_container::Transport::Registry,
        Transport::Oci => ostree_container::Transport::OciDir,
        Transport::OciArchive => ostree_container::Transport::OciArchive,
        Transport::ContainersStorage => ostree_container::Transport::ContainerStorage,
        Transport::Dir => ostree_container::Transport::Dir,
        Transport::DockerArchive => ostree_container::Transport::DockerArchive,
    };
    let sigverify = match &r.signature {
        Some(ImageSignature::OstreeRemote(remote)) => SignatureSource::OstreeRemote(remote.clone()),
        Some(ImageSignature::ContainerPolicy) => SignatureSource::ContainerPolicy,
        Some(ImageSignature::Insecure) | None => SignatureSource::ContainerPolicyAllowInsecure,
    };
    OstreeImageReference {
        sigverify,
        imgref: ostree_container::ImageReference {
            transport,
            name: r.image.clone(),
        },
    }
}

/// Image status from a manifest, its digest and config; version and build
/// time as [`metadata`](super::metadata) normalizes them.
pub fn image_status(
    reference: &ImageReference,
    digest: &str,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> ImageStatus {
    let meta = ImageMetadata::of(manifest, config);
    ImageStatus {
        image: reference.clone(),
        timestamp: meta.timestamp(),
        version: meta.version,
        image_digest: digest.to_string(),
        architecture: config.architecture().to_string(),
    }
}

/// Image status of a pulled image, and of its cached update if `Check` found one.
pub fn layered_status(
    reference: &ImageReference,
    state: &LayeredImageState,
) -> (ImageStatus, Option<ImageStatus>) {
    let current = image_status(
        reference,
        state.manifest_digest.as_ref(),
        &state.manifest,
        &state.configuration,
    );
    let cached = state.cached_update.as_ref().and_then(|u| {
        // A cached update equal to what is deployed is no update.
        (u.manifest_digest != state.manifest_digest).then(|| {
            image_status(reference, u.manifest_digest.as_ref(), &u.manifest, &u.config)
        })
    });
    (current, cached)
}

/// `imgref` as a caller writes it to `Switch` or `skopeo`: the registry
/// reference alone, a local one with its transport (`oci:/srv/os:v2`),
/// without ostree-ext's signature-verification prefix.
pub fn user_reference(imgref: &OstreeImageReference) -> String {
    match imgref.imgref.transport {
        ostree_container::Transport::Registry => imgref.imgref.name.clone(),
        _ => imgref.imgref.to_string(),
    }
}

/// Parse the origin's container reference string.
pub fn parse_origin_reference(s: &str) -> Result<OstreeImageReference> {
    OstreeImageReference::try_from(s).with_context(|| format!("parsing origin reference {s:?}"))
}
