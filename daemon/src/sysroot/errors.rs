//! What the sysroot operations return when they fail: conditions they decide
//! themselves, and failures of the libraries below them with the context of
//! the step that failed. Naming these for the API happens once, at the edge
//! (`crate::errors`), from the typed causes kept here.

use ostree_ext::container::{OstreeImageReference, Transport};

use super::image::user_reference;

/// An error of a sysroot operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not fit the sysroot: nothing to update, no rollback
    /// deployment, an older image without leave to downgrade, a selector
    /// that names no deployment.
    #[error("{0}")]
    Refused(String),
    /// The path is not an ostree sysroot.
    #[error("{0}")]
    NotImageBased(String),
    /// `Stage` found nothing to queue.
    #[error("{0}")]
    NothingToStage(String),
    /// A tree's package database cannot be read (malformed, too large).
    #[error("{0}")]
    MalformedPackageDatabase(String),
    /// Another process holds the sysroot lock for longer than hostd waits.
    #[error("{0}")]
    LockHeld(String),
    /// The free-space estimate before an import failed.
    #[error("{0}")]
    NotEnoughSpace(String),
    /// The containers signature policy rejected the image.
    #[error("{0}")]
    SignatureRejected(String),
    /// The job was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// The caller may not have the job read what it would read (a local
    /// path others can write, for a caller not allowed to choose images).
    #[error("{0}")]
    NotAuthorized(String),
    /// A program hostd needs is not installed.
    #[error("{0}")]
    ProgramMissing(String),
    /// Reading the image failed; `image` is the reference as the caller
    /// wrote it (`oci:/srv/os:v2`, `127.0.0.1:5000/os:latest`).
    #[error("{image}: {failure}")]
    Image {
        /// The reference in the caller's syntax.
        image: String,
        /// Whether the image was read from a registry, whose answers only
        /// then can say anything about the registry.
        from_registry: bool,
        /// What went wrong.
        failure: ImageFailure,
    },
    /// Any other failed step, with the context of each step it was in.
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    /// Keeps an [`Error`] that travelled inside an `anyhow::Error` as it was.
    fn from(e: anyhow::Error) -> Error {
        e.downcast::<Error>().unwrap_or_else(Error::Other)
    }
}

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageFailure {
    /// The local path (`oci:`, `oci-archive:`, `dir:`) could not be opened.
    #[error("{}: {source}", path.display())]
    LocalPath {
        /// The path as given.
        path: std::path::PathBuf,
        /// The error of `stat(2)`.
        source: std::io::Error,
    },
    /// The local path holds something hostd does not read: a symlink out of
    /// the image directory, a FIFO or device.
    #[error("{0}")]
    Unsafe(super::local_source::Unsafe),
    /// The OCI layout has no manifest with this tag.
    #[error("the OCI layout has no image tagged {tag:?}")]
    TagMissing {
        /// The requested tag.
        tag: String,
    },
    /// The image has none of the labels of an ostree/bootc image.
    #[error("it is not an ostree/bootc image (it has none of the labels {})", labels.join(", "))]
    NotBootable {
        /// The labels looked for.
        labels: Vec<&'static str>,
    },
    /// A file of the image's `/usr/lib/bootc/kargs.d` cannot be used.
    #[error("{0}")]
    MalformedKargs(super::kargs::Malformed),
    /// An entry of the image's `/usr/lib/bootc/bound-images.d` cannot be used.
    #[error("{0}")]
    MalformedBoundImages(super::bound_images::Malformed),
    /// A bound image (the error's `image`) could not be pulled into the
    /// bound-image store; skopeo's own words.
    #[error("pulling the image bound by /{}/{file}: {said}", super::bound_images::BOUND_IMAGES_DIR)]
    BoundImage {
        /// The entry of `bound-images.d` that binds it.
        file: String,
        /// What skopeo said.
        said: String,
    },
    /// `skopeo copy` could not open the image; its own words.
    #[error("{0}")]
    SkopeoSaid(String),
    /// The image proxy or ostree-ext failed; the chain holds the typed cause.
    #[error("{0:#}")]
    Read(anyhow::Error),
}

impl Error {
    /// A read of `imgref` that failed with `e`.
    pub fn image(imgref: &OstreeImageReference, e: anyhow::Error) -> Error {
        match e.downcast::<Error>() {
            Ok(already) => already,
            Err(e) => Error::image_failure(imgref, ImageFailure::Read(e)),
        }
    }

    /// A read of `imgref` that failed for `failure`.
    pub fn image_failure(imgref: &OstreeImageReference, failure: ImageFailure) -> Error {
        Error::Image {
            image: user_reference(imgref),
            from_registry: imgref.imgref.transport == Transport::Registry,
            failure,
        }
    }

    /// The job was cancelled at the caller's request.
    pub fn cancelled() -> Error {
        Error::Cancelled("cancelled by request".into())
    }
}
