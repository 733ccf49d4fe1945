//! What a caller asked for.

use hostd_interface::host::ImageReference;
use hostd_interface::options::{Method, Options};

/// The kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Metadata-only look for an update.
    Check,
    /// Fetch and queue the tracked image.
    Upgrade,
    /// Fetch and queue another image.
    Switch,
    /// Queue a downloaded update.
    Stage,
    /// Make the rollback deployment the default.
    Rollback,
    /// Prune unreferenced images and objects.
    Cleanup,
}

impl JobKind {
    /// The `Kind` property value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Check => "check",
            JobKind::Upgrade => "upgrade",
            JobKind::Switch => "switch",
            JobKind::Stage => "stage",
            JobKind::Rollback => "rollback",
            JobKind::Cleanup => "cleanup",
        }
    }

    /// The method whose options this kind takes.
    pub fn method(self) -> Method {
        match self {
            JobKind::Check => Method::Check,
            JobKind::Upgrade => Method::Upgrade,
            JobKind::Switch => Method::Switch,
            JobKind::Stage => Method::Stage,
            JobKind::Rollback => Method::Rollback,
            JobKind::Cleanup => Method::Cleanup,
        }
    }
}

/// A validated request; two equal requests are "the same job".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobRequest {
    /// What to do.
    pub kind: JobKind,
    /// The image for `Switch`.
    pub image: Option<ImageReference>,
    /// Parsed options.
    pub options: Options,
}
