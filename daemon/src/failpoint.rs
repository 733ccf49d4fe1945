//! Named moments inside long operations where a test can hold a job.
//!
//! Built on the `fail` crate: the points are live only in a build with the
//! `failpoints` feature (`scripts/test` builds the test binaries that way;
//! `make build` and `make install` of a release do not), and only when the
//! `FAILPOINTS` environment variable of hostd names them, e.g.
//! `FAILPOINTS=deploy-write=return`. In every other build [`hold`] compiles
//! to nothing.
//!
//! A held job sets its `Message` to `held at failpoint <name>` and waits
//! until it is cancelled (`Cancel()` or its time limit); then the operation
//! goes on into the libostree call that follows the point with a cancelled
//! `GCancellable`, which is what the fault tests prove ends it `Cancelled`.
//! A test may also kill hostd while it is held, to stop it at exactly that
//! moment.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Every point, so tests and docs name them from one list.
pub mod points {
    /// Upgrade/Switch/Stage: the image is in the repo, no deployment written yet.
    pub const AFTER_PULL: &str = "after-pull";
    /// Upgrade/Switch/Check of an image copied into a temporary OCI layout
    /// first (docker-archive, containers-storage on an older skopeo): the
    /// layout is written, nothing imported from it yet.
    pub const AFTER_COPY: &str = "after-copy";
    /// Upgrade/Switch/Stage: right before libostree writes the deployment.
    pub const DEPLOY_WRITE: &str = "deploy-write";
    /// Booted host: the deployment is staged, the download-only lock file
    /// not yet written again.
    pub const AFTER_STAGING: &str = "after-staging";
    /// Cleanup: right before libostree's cleanup and prune.
    pub const PRUNE: &str = "prune";
    /// Cleanup: libostree has pruned, ostree-ext's image prune has not run.
    pub const MID_PRUNE: &str = "mid-prune";
}

/// How often a held job looks at its cancellation.
const POLL: Duration = Duration::from_millis(20);

/// The `Message` a held job shows, which tests wait for.
pub fn held_message(name: &str) -> String {
    format!("held at failpoint {name}")
}

/// Read `FAILPOINTS` once at start-up (a no-op without the feature). Returns
/// the names configured, for the log.
pub fn setup() -> Vec<String> {
    #[cfg(feature = "failpoints")]
    {
        std::mem::forget(fail::FailScenario::setup());
        fail::list().into_iter().map(|(name, actions)| format!("{name}={actions}")).collect()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        if std::env::var_os("FAILPOINTS").is_some() {
            tracing::warn!("FAILPOINTS is set, but this hostd was built without the failpoints feature");
        }
        Vec::new()
    }
}

/// Hold here while `name` is configured (with `return`): announce it, then
/// block this (job) thread until `cancel` fires.
#[expect(clippy::disallowed_methods, reason = "holds the job's own thread, as intended")]
pub fn hold(name: &str, announce: impl FnOnce(&str), cancel: &CancellationToken) {
    if !configured(name) {
        return;
    }
    tracing::info!(failpoint = name, "holding the job until it is cancelled");
    announce(&held_message(name));
    while !cancel.is_cancelled() {
        std::thread::sleep(POLL);
    }
}

#[allow(unused_variables)]
fn configured(name: &str) -> bool {
    fail::fail_point!(name, |_| true);
    false
}
