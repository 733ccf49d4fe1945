//! Boot health: on the first boot of a deployment hostd staged, run the
//! health checks ([`checks`]), record the outcome ([`record`]) and, when they fail
//! and `[health] on_failure = "rollback"`, make the rollback deployment the
//! default again and reboot into it ([`assess`]). docs/health.md has the
//! rules.
//!
//! `hostd --health-check` runs this from `hostd-health-check.service`,
//! ordered before `boot-complete.target` (systemd's boot assessment): a
//! process of its own rather than a call into the daemon, so the checks and
//! their time limits do not depend on the daemon's job queue or idle exit,
//! and a check that hangs cannot hold the daemon. It reads the sysroot's
//! status itself (read-only, as the daemon does, so a boot does not start
//! the daemon) and asks the daemon over the bus only for the rollback,
//! like any client.

pub mod assess;
pub mod checks;
pub mod record;

use std::time::Duration;

use serde::Deserialize;

/// `[health] on_failure`: what a failed assessment leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Make the rollback deployment the default and reboot into it.
    Rollback,
    /// Record and log the failure, change nothing.
    Report,
}

/// The `[health]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// `required_units`: units that must be active.
    pub required_units: Vec<String>,
    /// `no_failed_units`: also fail when any unit is failed. Default false.
    pub no_failed_units: bool,
    /// `check_time_limit_secs`: how long one check executable may run
    /// before it is killed and counts as failed. Default 60 s.
    pub check_time_limit: Duration,
    /// `deadline_secs`: how long the whole assessment may take (units still
    /// starting are waited for up to here). Default 300 s.
    pub deadline: Duration,
    /// `on_failure`. Default rollback.
    pub on_failure: OnFailure,
    /// `reboot_grace_secs`: how long the rollback reboot waits for block
    /// inhibitors before overriding them. Default 300 s.
    pub reboot_grace: Duration,
    /// `fleet_lock_keep_slot`: with the fleet-lock strategy, a host that
    /// failed its checks keeps its reboot slot, so the rollout halts.
    /// Default true.
    pub fleet_lock_keep_slot: bool,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings {
            required_units: Vec::new(),
            no_failed_units: false,
            check_time_limit: Duration::from_secs(60),
            deadline: Duration::from_secs(300),
            on_failure: OnFailure::Rollback,
            reboot_grace: Duration::from_secs(300),
            fleet_lock_keep_slot: true,
        }
    }
}
