//! What a caller asked for.

use hostd_interface::host::ImageReference;
pub use hostd_interface::job::JobKind;
use hostd_interface::options::Options;
use hostd_interface::Error;

use crate::sysroot::cache::Loaded;
use crate::updates::policy::{self, UnattendedPlan, UpdatePolicy};

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

impl JobRequest {
    /// What `Upgrade({auto})` does under `policy`; `None` when the policy is
    /// none. Nothing runs from an offline sysroot (`booted` false), so there
    /// `apply` stages without rebooting.
    pub fn unattended(policy: UpdatePolicy, booted: bool) -> Option<JobRequest> {
        let mut options = Options { auto: true, ..Options::default() };
        let kind = match policy::plan(policy) {
            UnattendedPlan::Nothing => return None,
            UnattendedPlan::CheckOnly => JobKind::Check,
            UnattendedPlan::DownloadOnly => {
                options.download_only = true;
                JobKind::Upgrade
            }
            UnattendedPlan::Stage => JobKind::Upgrade,
            UnattendedPlan::StageAndReboot => {
                options.apply = booted;
                JobKind::Upgrade
            }
        };
        Some(JobRequest { kind, image: None, options })
    }

    /// A request of `kind` about the tracked image; `loaded` must show one.
    pub fn about_tracked_image(kind: JobKind, options: Options, loaded: &Loaded) -> Result<JobRequest, Error> {
        let tracked = match &**loaded {
            Ok(s) => s.host.spec.image.is_some(),
            Err(e) => return Err(crate::errors::name(e)),
        };
        if !tracked {
            return Err(Error::InvalidArgument("the host does not track an image; use Switch first".into()));
        }
        Ok(JobRequest { kind, image: None, options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattended_requests_follow_the_policy() {
        assert_eq!(JobRequest::unattended(UpdatePolicy::None, true), None);
        let check = JobRequest::unattended(UpdatePolicy::Check, true).unwrap();
        assert_eq!((check.kind, check.options.auto), (JobKind::Check, true));
        let download = JobRequest::unattended(UpdatePolicy::Download, true).unwrap();
        assert!(download.options.download_only && !download.options.apply);
        let apply = JobRequest::unattended(UpdatePolicy::Apply, true).unwrap();
        assert!(apply.options.apply && apply.kind == JobKind::Upgrade);
        let offline = JobRequest::unattended(UpdatePolicy::Apply, false).unwrap();
        assert!(!offline.options.apply, "an offline sysroot is never rebooted into");
    }
}
