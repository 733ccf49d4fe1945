//! Typed client proxies of the manager and job objects.

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::job::{JobKind, JobStatus, Layer, Phase};
use crate::manager::{CachedUpdate, DeploymentEntry, LastJob, ManagerState, UpdatePolicy, UpdateStrategy};
use crate::Error;

/// Options dictionary as sent by clients.
pub type OptionsArg<'a> = HashMap<&'a str, Variant<'a>>;

/// The manager object `/org/hostd/Host1`.
#[zbus::proxy(
    interface = "org.hostd.Host1",
    default_service = "org.hostd.Host1",
    default_path = "/org/hostd/Host1"
)]
pub trait Host1 {
    /// The Host JSON document.
    fn status(&self, options: OptionsArg<'_>) -> Result<String, Error>;
    /// Look for an update of the tracked image (manifest and config only).
    fn check(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Fetch and queue the tracked image.
    fn upgrade(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Fetch and queue another image, and track it from then on.
    fn switch(&self, image: &str, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Queue an already downloaded update for the next boot.
    fn stage(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Make the rollback deployment the default (again: undo).
    fn rollback(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Prune images, layers and objects no deployment needs.
    fn cleanup(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Drop the staged or downloaded update, leaving the boot order
    /// otherwise as it is; `/` when there is none.
    fn discard(&self, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// The update settings in force (`settings::Settings` as a dictionary)
    /// and the file that set each key (absent: the default).
    fn settings(&self, options: OptionsArg<'_>) -> Result<(HashMap<String, OwnedVariant>, HashMap<String, String>), Error>;
    /// Set update settings (`settings::Settings` as a dictionary) in the
    /// drop-in hostd owns, and apply them.
    fn set_settings(&self, settings: HashMap<&str, Variant<'_>>, options: OptionsArg<'_>) -> Result<(), Error>;
    /// Drop keys from the drop-in hostd owns (the other files decide them
    /// again), and apply that.
    fn reset_settings(&self, keys: &[&str], options: OptionsArg<'_>) -> Result<(), Error>;
    /// How a deployment's /etc differs from its image's /usr/etc, as JSON
    /// (`etc_diff::EtcDiff`).
    fn etc_diff(&self, options: OptionsArg<'_>) -> Result<String, Error>;
    /// What changes from one deployment to another, or to the downloaded
    /// update (`from`, `to`: booted, staged, rollback, cached, an index, or
    /// "" for the default), as JSON (`diff::Diff`).
    fn diff(&self, from: &str, to: &str, options: OptionsArg<'_>) -> Result<String, Error>;
    /// Bring the host to the spec of a Host document (YAML or JSON): the
    /// switch or rollback job, `/` when the host already matches it.
    fn edit(&self, document: &str, options: OptionsArg<'_>) -> Result<OwnedObjectPath, Error>;
    /// Re-read the configuration.
    fn reload_config(&self) -> Result<(), Error>;
    /// Keep a deployment (index in boot order, or checksum[.serial]) through
    /// new deployments and cleanups, or let it go.
    fn pin(&self, deployment: &str, pinned: bool) -> Result<(), Error>;
    /// Mount a writable overlay on the booted deployment's `/usr`,
    /// discarded at the next reboot unless `persist` is set.
    fn usr_overlay(&self, options: OptionsArg<'_>) -> Result<(), Error>;

    /// idle | checking | fetching | staging | rolling-back | cleaning | rebooting
    #[zbus(property)]
    fn state(&self) -> zbus::Result<ManagerState>;
    /// The running job, `/` when idle.
    #[zbus(property)]
    fn active_job(&self) -> zbus::Result<OwnedObjectPath>;
    /// Deployments in boot order.
    #[zbus(property)]
    fn deployments(&self) -> zbus::Result<Vec<DeploymentEntry>>;
    /// The update found by the last `Check`, empty when none.
    #[zbus(property)]
    fn cached_update(&self) -> zbus::Result<CachedUpdate>;
    /// A queued deployment waits for a reboot.
    #[zbus(property)]
    fn reboot_required(&self) -> zbus::Result<bool>;
    /// The configured automatic update policy.
    #[zbus(property)]
    fn automatic_update_policy(&self) -> zbus::Result<UpdatePolicy>;
    /// When the last check or unattended run ended, µs since the epoch, 0 when never.
    #[zbus(property)]
    fn last_check_time(&self) -> zbus::Result<u64>;
    /// How the last check or unattended run ended.
    #[zbus(property)]
    fn last_check_result(&self) -> zbus::Result<String>;
    /// When unattended runs may reboot: immediate, periodic or fleet-lock.
    #[zbus(property)]
    fn update_strategy(&self) -> zbus::Result<UpdateStrategy>;
    /// When the next maintenance window opens, µs since the epoch, 0 when none.
    #[zbus(property)]
    fn next_maintenance_window(&self) -> zbus::Result<u64>;
    /// Why a reboot is required (and why it was postponed); empty when none is.
    #[zbus(property)]
    fn reboot_pending_reason(&self) -> zbus::Result<String>;
    /// How the last job of each kind ended, oldest end first.
    #[zbus(property)]
    fn last_jobs(&self) -> zbus::Result<Vec<LastJob>>;

    /// A job was created.
    #[zbus(signal)]
    fn job_new(&self, id: u64, job: OwnedObjectPath, kind: JobKind) -> zbus::Result<()>;
    /// A job finished: `succeeded`, `failed` or `cancelled`.
    #[zbus(signal)]
    fn job_removed(&self, id: u64, job: OwnedObjectPath, result: JobStatus) -> zbus::Result<()>;
    /// An update not announced before is available: once per new digest.
    #[zbus(signal)]
    fn update_available(&self, digest: String, version: String) -> zbus::Result<()>;
}

/// A job object `/org/hostd/Host1/job/<id>`.
#[zbus::proxy(interface = "org.hostd.Host1.Job", default_service = "org.hostd.Host1")]
pub trait Job {
    /// Stop the job at the next safe point.
    fn cancel(&self) -> Result<(), Error>;

    /// The job id.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<u64>;
    /// check | upgrade | switch | stage | rollback | cleanup
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<JobKind>;
    /// running | succeeded | failed | cancelled
    #[zbus(property)]
    fn state(&self) -> zbus::Result<JobStatus>;
    /// checking | pulling | importing | staging | cleanup | rebooting
    #[zbus(property)]
    fn phase(&self) -> zbus::Result<Phase>;
    /// Bytes fetched so far.
    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;
    /// Bytes to fetch in all.
    #[zbus(property)]
    fn bytes_total(&self) -> zbus::Result<u64>;
    /// Layers fetched so far.
    #[zbus(property)]
    fn layers_done(&self) -> zbus::Result<u32>;
    /// Layers to fetch in all.
    #[zbus(property)]
    fn layers_total(&self) -> zbus::Result<u32>;
    /// 0..1
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    /// What the job is doing, or its result.
    #[zbus(property)]
    fn message(&self) -> zbus::Result<String>;
    /// The error name when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_name(&self) -> zbus::Result<String>;
    /// The error message when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_message(&self) -> zbus::Result<String>;
    /// What the user must know about the result; empty when none.
    #[zbus(property)]
    fn warnings(&self) -> zbus::Result<Vec<String>>;
    /// The image the job fetches or looks at.
    #[zbus(property)]
    fn image(&self) -> zbus::Result<String>;
    /// The image's layers, in fetching order.
    #[zbus(property)]
    fn layers(&self) -> zbus::Result<Vec<Layer>>;
    /// When the job was created, µs since the epoch.
    #[zbus(property)]
    fn start_time(&self) -> zbus::Result<u64>;
    /// The recent fetching rate; 0 while unknown.
    #[zbus(property)]
    fn bytes_per_second(&self) -> zbus::Result<u64>;
    /// Estimated seconds until the fetch is done; `u64::MAX` while unknown.
    #[zbus(property)]
    fn seconds_left(&self) -> zbus::Result<u64>;
}
