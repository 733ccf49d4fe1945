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

/// After a good boot: give the reboot slot back to the fleet lock manager
/// (idempotent, so it is done on every boot) when `strategy` uses one.
/// What was done, for the log.
pub fn report_steady_state(strategy: &RebootStrategy) -> anyhow::Result<String> {
    let RebootStrategy::FleetLock(settings) = strategy else {
        return Ok(format!("strategy {}: no fleet lock to release", strategy.name()));
    };
    let id = NodeId::read(Path::new(MACHINE_ID_PATH))?;
    FleetLockClient::new(settings.url.clone(), &settings.group, id)
        .steady_state()
        .context("reporting steady state to the fleet lock manager")?;
    Ok(format!("reported steady state to {} (group {})", settings.url.as_str(), settings.group.as_str()))
}
