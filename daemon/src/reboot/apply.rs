//! `apply` after a successful job: reboot into what it queued, or say why
//! not. A caller's `apply` reboots unless an inhibitor blocks it; an
//! unattended run (`auto`) also needs the configured strategy's consent:
//! an open maintenance window, a reboot slot from the fleet lock manager.
//! The decision goes back to the job runner as [`Applied`]; nothing here
//! keeps state.

use chrono::Utc;
use hostd_interface::Error;
use zbus::Connection;

use super::finalize;
use super::logind::{self, RebootOutcome};
use crate::config::Config;
use crate::jobs::runner::{Applied, Reboot};
use crate::jobs::JobShared;
use crate::journal::{self, Change, Event};
use crate::sysroot::cache::Loaded;
use crate::sysroot::progress::{Phase, Progress};
use crate::sysroot::status::Role;
use crate::updates::fleetlock::{FleetLockClient, NodeId, MACHINE_ID_PATH};
use crate::updates::policy::{needs_lock, RebootStrategy, reboot_decision, LockOutcome, RebootDecision};

/// The production [`Reboot`]: logind on the system bus `conn`, under the
/// settings in force when the job started.
#[derive(Debug, Clone)]
pub struct Logind {
    /// The system bus connection logind and systemd are reached on.
    pub conn: Connection,
    /// The strategy and maintenance windows for unattended runs.
    pub config: Config,
}

impl Reboot for Logind {
    async fn apply(&self, job: &JobShared, loaded: &Loaded, message: String) -> Result<Applied, Error> {
        apply(&self.config, &self.conn, job, loaded, message).await
    }

    async fn arm_finalization(&self, loaded: &Loaded) -> Result<(), String> {
        let staged = loaded.as_ref().as_ref().ok().is_some_and(|s| s.booted && s.staged().is_some());
        if !staged {
            return Ok(());
        }
        finalize::arm(&self.conn).await.map_err(|e| e.to_string())
    }
}

/// Finish the job `message` with the reboot `apply` asks for.
pub async fn apply(config: &Config, conn: &Connection, job: &JobShared, loaded: &Loaded, message: String) -> Result<Applied, Error> {
    let Some((change, staged)) = pending_boot_change(loaded) else {
        let message = format!("{message} Nothing is queued for the next boot, so the system does not reboot.");
        return Ok(Applied { message, postponed: None });
    };
    job.phase(Phase::Rebooting, "deciding whether to reboot");
    let lock = if job.request.options.auto { consult_strategy(config).await } else { Consent::Given { slot: None } };
    let slot = match lock {
        Consent::Given { slot } => slot,
        Consent::Refused(reason) => {
            return Ok(postpone(job, change, &message, &format!("Reboot postponed: {reason}")).await)
        }
    };
    let failed = |e: &dyn std::fmt::Display| Error::Failed(format!("{message} The reboot was not started: {e}"));
    let mut blockers = logind::blockers(conn).await.map_err(|e| failed(&e))?;
    if blockers.is_empty() {
        if staged {
            finalize::arm(conn).await.map_err(|e| failed(&e))?;
        }
        journal::record(&change, &job.initiator, job.id, "Rebooting into the queued deployment");
        job.message("rebooting now");
        // The shutdown may take the bus away before the job's end is out;
        // a client that saw the job rebooting knows what happened.
        job.wait_published(Phase::Rebooting, std::time::Duration::from_secs(1)).await;
        match logind::request_reboot(conn).await.map_err(|e| failed(&e))? {
            RebootOutcome::Started => {
                return Ok(Applied { message: format!("{message} Rebooting now."), postponed: None });
            }
            RebootOutcome::Blocked(late) => blockers = late,
        }
    }
    if let Some(slot) = slot {
        release_slot(slot).await;
    }
    let who: Vec<String> = blockers.iter().map(ToString::to_string).collect();
    Ok(postpone(job, change, &message, &format!("Reboot blocked by {}", who.join(", "))).await)
}

/// What the strategy says, and the reboot slot taken for it.
enum Consent {
    Given { slot: Option<FleetLockClient> },
    Refused(String),
}

async fn consult_strategy(config: &Config) -> Consent {
    let now = Utc::now();
    let (lock, slot) = match &config.strategy {
        RebootStrategy::FleetLock(settings) if needs_lock(&config.strategy, &config.windows, now) => {
            let settings = settings.clone();
            let asked = tokio::task::spawn_blocking(move || {
                let id = NodeId::read(std::path::Path::new(MACHINE_ID_PATH)).map_err(|e| e.to_string())?;
                let client = FleetLockClient::new(settings.url, &settings.group, id);
                match client.pre_reboot() {
                    Ok(()) => Ok::<_, String>((LockOutcome::Granted, Some(client))),
                    Err(e) => Ok((LockOutcome::Failed(e), None)),
                }
            })
            .await;
            match asked {
                Ok(Ok(answer)) => answer,
                Ok(Err(no_id)) => return Consent::Refused(format!("no node id for the lock manager: {no_id}")),
                Err(e) => return Consent::Refused(format!("asking the lock manager failed: {e}")),
            }
        }
        _ => (LockOutcome::NotAsked, None),
    };
    match reboot_decision(&config.strategy, &config.windows, now, &lock) {
        RebootDecision::Now => Consent::Given { slot },
        RebootDecision::Postpone { reason, .. } => {
            if let Some(slot) = slot {
                release_slot(slot).await;
            }
            Consent::Refused(reason)
        }
    }
}

/// A slot taken but not used would keep the rest of the group waiting.
async fn release_slot(slot: FleetLockClient) {
    match tokio::task::spawn_blocking(move || slot.steady_state()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("giving back the unused reboot slot: {e}"),
        Err(e) => tracing::warn!("giving back the unused reboot slot: {e}"),
    }
}

/// Log, tell logged-in users, and keep `RebootRequired` (the deployment
/// stays queued). `why` is a sentence without its full stop.
async fn postpone(job: &JobShared, change: Change, message: &str, why: &str) -> Applied {
    let note = format!("{why}; the update applies at the next reboot.");
    let blocked = Change { event: Event::RebootBlocked, ..change };
    journal::record(&blocked, &job.initiator, job.id, &note);
    tell_logged_in_users(&format!("A system update is ready and waits for a reboot. {note}")).await;
    Applied { message: format!("{message} {note}"), postponed: Some(why.to_string()) }
}

/// There is no D-Bus API for a broadcast to terminals; wall(1) is the tool.
async fn tell_logged_in_users(text: &str) {
    let run = tokio::process::Command::new("wall")
        .arg("--nobanner")
        .arg(text)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => tracing::warn!("wall: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Ok(Err(e)) => tracing::warn!("wall: {e}"),
        Err(_) => tracing::warn!("wall did not finish within 5 s"),
    }
}

/// The booted and the next deployment, when a reboot would change what
/// runs, and whether the next one is a staged deployment.
fn pending_boot_change(loaded: &Loaded) -> Option<(Change, bool)> {
    let snapshot = loaded.as_ref().as_ref().ok().filter(|s| s.booted && s.reboot_required)?;
    let booted = snapshot.deployments.iter().find(|d| d.role == Role::Booted);
    let next = snapshot.staged().or_else(|| snapshot.deployments.first())?;
    let change = Change {
        event: Event::RebootRequested,
        old_checksum: booted.map(|d| d.checksum().to_string()),
        new_checksum: Some(next.checksum().to_string()),
        image: next.origin_reference.clone(),
    };
    Some((change, next.role == Role::Staged))
}
