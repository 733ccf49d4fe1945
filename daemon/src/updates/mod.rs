//! Building blocks of unattended updates, free of the bus: when a run may
//! reboot, and the cluster lock it may need first.
//!
//! - [`window`]: maintenance windows in a time zone (open now? next opening?).
//! - [`fleetlock`]: the FleetLock client and the node id it presents.
//! - [`policy`]: what a run does for each policy, and the reboot decision.

pub mod fleetlock;
pub mod policy;
pub mod window;

use std::path::Path;

use anyhow::Context as _;

use fleetlock::{FleetLockClient, NodeId, MACHINE_ID_PATH};
use policy::RebootStrategy;

use crate::config::Config;
use crate::health::assess::{state_dir, ROLLED_BACK};
use crate::health::record::HealthRecord;
use hostd_interface::host::DeploymentHealth;

/// The latest assessment, when it failed and led to a rollback: the rollout
/// stays halted until a later deployment passes.
fn latest_rolled_back(record: &HealthRecord) -> Option<(&String, &DeploymentHealth)> {
    let latest = record.deployments.iter().max_by(|a, b| a.1.checked_at.cmp(&b.1.checked_at))?;
    (latest.1.action.as_deref() == Some(ROLLED_BACK)).then_some(latest)
}

/// After a good boot: give the reboot slot back to the fleet lock manager
/// (idempotent, so it is done on every boot) when the strategy uses one.
/// A host whose latest boot health assessment failed and rolled back keeps
/// its slot while `[health] fleet_lock_keep_slot` is on, so a rollout of a
/// bad image halts (docs/health.md, "Fleet rule"). What was done, for the log.
pub fn report_steady_state(config: &Config, root: &Path) -> anyhow::Result<String> {
    let strategy = &config.strategy;
    let RebootStrategy::FleetLock(settings) = strategy else {
        return Ok(format!("strategy {}: no fleet lock to release", strategy.name()));
    };
    if config.health.fleet_lock_keep_slot {
        let record = HealthRecord::load(&state_dir(root))?;
        if let Some((checksum, _)) = latest_rolled_back(&record) {
            return Ok(format!(
                "keeping the reboot slot: deployment {checksum} failed its boot health checks and was rolled back \
                 ([health] fleet_lock_keep_slot); docs/automation.md says how to resume the rollout"
            ));
        }
    }
    let id = NodeId::read(Path::new(MACHINE_ID_PATH))?;
    FleetLockClient::new(settings.url.clone(), &settings.group, id)
        .steady_state()
        .context("reporting steady state to the fleet lock manager")?;
    Ok(format!("reported steady state to {} (group {})", settings.url.as_str(), settings.group.as_str()))
}
