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
use crate::health::assess::REPORTED;
use crate::health::record::HealthRecord;
use hostd_interface::host::{DeploymentHealth, HealthResult};

/// The latest assessment, when it failed: the rollout stays halted until a
/// later deployment passes.
fn latest_failed(record: &HealthRecord) -> Option<(&String, &DeploymentHealth)> {
    let latest = record.last_assessed.as_ref()?;
    let health = record.deployments.get(latest)?;
    (health.result == HealthResult::Failed).then_some((latest, health))
}

/// After a good boot: give the reboot slot back to the fleet lock manager
/// (idempotent, so it is done on every boot) when the strategy uses one.
/// A host whose latest boot health assessment failed keeps its slot while
/// `[health] fleet_lock_keep_slot` is on, so a rollout of a
/// bad image halts (docs/health.md, "Fleet rule"). What was done, for the log.
pub fn report_steady_state(config: &Config, state_dir: &Path) -> anyhow::Result<String> {
    let strategy = &config.strategy;
    let RebootStrategy::FleetLock(settings) = strategy else {
        return Ok(format!("strategy {}: no fleet lock to release", strategy.name()));
    };
    if config.health.fleet_lock_keep_slot {
        let record = HealthRecord::load(state_dir)?;
        if let Some((checksum, health)) = latest_failed(&record) {
            let action = health.action.as_deref().unwrap_or(REPORTED);
            return Ok(format!(
                "keeping the reboot slot: deployment {checksum}, the last one assessed, failed its boot health checks \
                 ({action}) ([health] fleet_lock_keep_slot); docs/automation.md says how to resume the rollout"
            ));
        }
    }
    let id = NodeId::read(Path::new(MACHINE_ID_PATH))?;
    FleetLockClient::new(settings.url.clone(), &settings.group, id)
        .steady_state()
        .context("reporting steady state to the fleet lock manager")?;
    Ok(format!("reported steady state to {} (group {})", settings.url.as_str(), settings.group.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::assess::ROLLED_BACK;

    fn fleet_lock_config(root: &Path) -> Config {
        let dir = root.join("etc/hostd");
        std::fs::create_dir_all(&dir).unwrap();
        // Port 9 (discard) on loopback: nothing answers, so a report fails.
        let toml = "[updates]\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\nurl = \"http://127.0.0.1:9\"\n";
        std::fs::write(dir.join("hostd.toml"), toml).unwrap();
        Config::load(root).unwrap()
    }

    #[test]
    fn the_last_assessed_deployment_in_the_state_directory_decides_whether_the_slot_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let config = fleet_lock_config(root.path());
        let state = tempfile::tempdir().unwrap();
        let health = |action: Option<&str>, at: &str| DeploymentHealth {
            result: if action.is_some() { HealthResult::Failed } else { HealthResult::Passed },
            checked_at: at.into(),
            failures: Vec::new(),
            action: action.map(str::to_string),
        };
        HealthRecord::update(state.path(), |record| {
            record.deployments.insert("old".into(), health(None, "2026-01-01T00:00:00Z"));
            // Stamped before "old" by a clock not yet synchronized: the
            // order of assessment counts, not the time.
            record.deployments.insert("bad".into(), health(Some(ROLLED_BACK), "2025-01-02T00:00:00Z"));
            record.last_assessed = Some("bad".into());
        })
        .unwrap();
        let said = report_steady_state(&config, state.path()).unwrap();
        assert!(said.starts_with("keeping the reboot slot: deployment bad, the last one assessed, failed"), "{said}");
        // Another state directory has no such record: the report is tried.
        let empty = tempfile::tempdir().unwrap();
        assert!(report_steady_state(&config, empty.path()).is_err());
        // A later passed assessment gives the slot back.
        HealthRecord::update(state.path(), |record| {
            record.deployments.insert("fixed".into(), health(None, "2024-01-03T00:00:00Z"));
            record.last_assessed = Some("fixed".into());
        })
        .unwrap();
        assert!(report_steady_state(&config, state.path()).is_err());
    }
}
