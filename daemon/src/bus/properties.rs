//! The manager's computed properties, rendered from the status snapshot,
//! the job slot and the job records: what the bus shows, kept out of the
//! shared state itself.

use hostd_interface::manager::{CachedUpdate, DeploymentEntry, ManagerProperties, ManagerState};
use zbus::{ObjectPath, OwnedObjectPath};

use crate::context::Context;
use crate::jobs::JobKind;
use crate::sysroot::progress::Phase;
use crate::sysroot::status::{Deployment, Snapshot};

/// The `State` value for a running job.
pub fn state_for(kind: JobKind, phase: Phase) -> ManagerState {
    match (kind, phase) {
        (_, Phase::Rebooting) => ManagerState::Rebooting,
        (JobKind::Check, _) => ManagerState::Checking,
        (JobKind::Upgrade | JobKind::Switch, Phase::Staging) => ManagerState::Staging,
        (JobKind::Upgrade | JobKind::Switch, Phase::Cleanup) => ManagerState::Cleaning,
        (JobKind::Upgrade | JobKind::Switch, _) => ManagerState::Fetching,
        (JobKind::Stage, _) => ManagerState::Staging,
        (JobKind::Rollback, _) => ManagerState::RollingBack,
        (JobKind::Cleanup, _) => ManagerState::Cleaning,
        (JobKind::Discard, _) => ManagerState::Discarding,
    }
}

/// `RebootPendingReason`: why a reboot is needed and, if one was
/// postponed, why it has not happened; empty when none is needed.
pub fn reboot_pending_reason(ctx: &Context) -> String {
    let loaded = ctx.status.peek();
    let Some(Ok(snapshot)) = loaded.as_deref() else { return String::new() };
    if !snapshot.reboot_required {
        return String::new();
    }
    let why = crate::reboot::marker::reason(snapshot)
        .unwrap_or_else(|| "a change is queued for the next boot".to_string());
    match ctx.records.reboot_postponed() {
        Some(postponed) => format!("{}; {postponed}", why.trim_end()),
        None => why.trim_end().to_string(),
    }
}

/// `CachedUpdate`: the cached update ostree-ext keeps in the sysroot,
/// with what the last check recorded about the same image (download size,
/// layer counts) filled in; or the older image a check found, marked
/// `downgrade`. Empty when none, and when a deployment already runs or is
/// queued to run that update (whichever tool deployed it).
pub fn cached_update(ctx: &Context) -> CachedUpdate {
    let loaded = ctx.status.peek();
    let Some(Ok(snapshot)) = loaded.as_deref() else { return CachedUpdate::default() };
    if let Some(older) = snapshot.cached_downgrade() {
        return CachedUpdate {
            digest: Some(older.image_digest.clone()),
            downgrade: Some(true),
            version: older.version.clone(),
            timestamp: older.timestamp.clone(),
            labels: labels(&older.labels),
            ..CachedUpdate::default()
        };
    }
    // None either once a deployment runs it (the status read drops it).
    let Some(update) = snapshot.cached_update() else { return CachedUpdate::default() };
    let downloaded = snapshot.downloaded_update.as_deref() == Some(update.image_digest.as_str());
    let current = CachedUpdate {
        digest: Some(update.image_digest.clone()),
        downgrade: Some(false),
        downloaded: Some(downloaded),
        bound_images: downloaded.then(|| snapshot.downloaded_bound_images.clone()),
        version: update.version.clone(),
        timestamp: update.timestamp.clone(),
        labels: labels(&update.labels),
        ..CachedUpdate::default()
    };
    match ctx.records.last_check() {
        Some(checked) => current.filled_from(&checked),
        None => current,
    }
}

/// `State`: what the running job does, idle without one.
pub fn state(ctx: &Context) -> ManagerState {
    match ctx.jobs.active() {
        Some(job) => state_for(job.request.kind, job.props().phase()),
        None => ManagerState::Idle,
    }
}

/// `ActiveJob`: the running job's object path, `/` without one.
pub fn active_job(ctx: &Context) -> OwnedObjectPath {
    match ctx.jobs.active() {
        Some(job) => OwnedObjectPath::try_from(job.path.clone()).expect("job paths are valid object paths"),
        None => OwnedObjectPath::from(ObjectPath::from_static_str_unchecked("/")),
    }
}

/// `Deployments` of the last sysroot read; empty before the first.
pub fn current_deployments(ctx: &Context) -> Vec<DeploymentEntry> {
    match ctx.status.peek().as_deref() {
        Some(Ok(snapshot)) => deployments(snapshot),
        _ => Vec::new(),
    }
}

/// `RebootRequired`
pub fn reboot_required(ctx: &Context) -> bool {
    matches!(ctx.status.peek().as_deref(), Some(Ok(s)) if s.reboot_required)
}

/// Every signalled property as it is now: what `PropertiesChanged` is
/// computed from.
pub fn current(ctx: &Context) -> ManagerProperties {
    let config = ctx.config();
    ManagerProperties {
        state: Some(state(ctx)),
        active_job: Some(active_job(ctx)),
        deployments: Some(current_deployments(ctx)),
        cached_update: Some(cached_update(ctx)),
        reboot_required: Some(reboot_required(ctx)),
        automatic_update_policy: Some(config.policy),
        update_strategy: Some(config.strategy.name()),
        last_check_time: Some(ctx.records.last_check_time()),
        last_check_result: Some(ctx.records.last_check_result()),
        reboot_pending_reason: Some(reboot_pending_reason(ctx)),
        last_jobs: Some(ctx.records.last_jobs()),
    }
}

/// Description labels as an `a{ss}`; `None` (the key absent) when there are none.
fn labels(labels: &std::collections::BTreeMap<String, String>) -> Option<std::collections::HashMap<String, String>> {
    (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `Deployments`: every deployment in boot order.
pub fn deployments(snapshot: &Snapshot) -> Vec<DeploymentEntry> {
    snapshot.deployments.iter().map(deployment_entry).collect()
}

fn deployment_entry(d: &Deployment) -> DeploymentEntry {
    let ostree = d.entry.ostree.as_ref();
    let image = d.entry.image.as_ref();
    DeploymentEntry {
        index: u32::try_from(d.index).unwrap_or(u32::MAX),
        role: d.role,
        pinned: d.entry.pinned,
        download_only: d.entry.download_only,
        incompatible: d.entry.incompatible,
        checksum: ostree.map(|o| o.checksum.clone()),
        serial: ostree.map(|o| o.deploy_serial),
        stateroot: ostree.map(|o| o.stateroot.clone()),
        image: image.map(|i| i.image.image.clone()),
        transport: image.map(|i| i.image.transport),
        digest: image.map(|i| i.image_digest.clone()),
        version: image.and_then(|i| i.version.clone()),
        timestamp: image.and_then(|i| i.timestamp.clone()),
        labels: image.and_then(|i| labels(&i.labels)),
        health: d.entry.health.as_ref().map(|h| h.result.to_string()),
        health_failures: d.entry.health.as_ref().filter(|h| !h.failures.is_empty()).map(|h| h.failures.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_state_follows_kind_and_phase() {
        assert_eq!(state_for(JobKind::Upgrade, Phase::Pulling), ManagerState::Fetching);
        assert_eq!(state_for(JobKind::Upgrade, Phase::Staging), ManagerState::Staging);
        assert_eq!(state_for(JobKind::Rollback, Phase::Staging), ManagerState::RollingBack);
        assert_eq!(state_for(JobKind::Stage, Phase::Rebooting), ManagerState::Rebooting);
    }
}
