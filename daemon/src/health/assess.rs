//! One assessment of the booted deployment, and what follows a failure.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::{sleep, Instant};
use zbus::Connection;

use hostd_interface::host::{BootEntry, DeploymentHealth, HealthResult, Host};
use hostd_interface::job::JobStatus;
use hostd_interface::proxy::{Host1Proxy, JobProxy};

use super::checks::{self, CheckResult};
use super::record::{FailedImage, HealthRecord};
use super::{HealthSettings, OnFailure};
use crate::journal;
use crate::reboot::logind::{self, RebootOutcome};

/// `ACTION` of a failure that led to a rollback.
pub const ROLLED_BACK: &str = "rolled-back";
/// `ACTION` of a failure that changed nothing.
pub const REPORTED: &str = "reported";
/// How often a blocked rollback reboot is asked for again.
const REBOOT_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for the daemon's rollback job.
const ROLLBACK_JOB_LIMIT: Duration = Duration::from_secs(300);

/// How the assessment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not booted from an image deployment: nothing to assess.
    NotImageBased,
    /// The booted deployment was assessed on an earlier boot.
    AssessedBefore(HealthResult),
    /// Every check passed.
    Passed,
    /// A check failed; with the action taken.
    Failed(String),
}

/// Assess the booted deployment if it was never assessed: run the checks
/// (executables and wants below `root`, `/` on a booted host), record the
/// outcome in `state_dir`, log it, and roll back on failure when configured.
pub async fn assess(root: &Path, state_dir: &Path, settings: &HealthSettings) -> Result<Verdict> {
    let deadline = Instant::now() + settings.deadline;
    let conn = Connection::system().await.context("connecting to the system bus")?;
    // Read the sysroot as the daemon does, without starting the daemon on
    // every boot; it is asked only for a rollback.
    let (sysroot, dir) = (root.to_path_buf(), state_dir.to_path_buf());
    let host: Host = tokio::task::spawn_blocking(move || crate::sysroot::status::load(&sysroot, &dir))
        .await
        .context("reading the sysroot")??
        .host;
    let Some((booted, checksum)) = host.status.booted.as_ref().and_then(|b| Some((b, checksum_of(b)?))) else {
        return Ok(Verdict::NotImageBased);
    };
    let mut record = HealthRecord::load(state_dir)?;
    if let Some(done) = record.deployments.get(&checksum) {
        return Ok(Verdict::AssessedBefore(done.result));
    }
    let digest = booted.image.as_ref().map(|i| i.image_digest.clone());
    let results = checks::run_all(&conn, root, settings, deadline).await;
    for r in &results {
        log_check(r);
    }
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.failure).collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if failures.is_empty() {
        let health = DeploymentHealth { result: HealthResult::Passed, checked_at: now, failures, action: None };
        record.deployments.insert(checksum.clone(), health);
        record.save(state_dir)?;
        journal::record_health(&checksum, digest.as_deref(), &[], None, &format!("deployment {checksum} passed its boot health checks"));
        return Ok(Verdict::Passed);
    }
    let target = rollback_target(&host, &record);
    let action = match (settings.on_failure, &target) {
        (OnFailure::Rollback, Some(_)) => ROLLED_BACK,
        _ => REPORTED,
    };
    // Recorded before acting: whatever happens next, this deployment is
    // never rolled back a second time.
    let health = DeploymentHealth { result: HealthResult::Failed, checked_at: now.clone(), failures: failures.clone(), action: Some(action.into()) };
    record.deployments.insert(checksum.clone(), health);
    if let Some(digest) = &digest {
        record.failed_digests.insert(digest.clone(), FailedImage { checksum: checksum.clone(), failed_at: now });
    }
    record.save(state_dir)?;
    let message = match (action, target) {
        (ROLLED_BACK, Some(t)) => format!("deployment {checksum} failed its boot health checks; rolling back to {t} and rebooting"),
        _ => format!("deployment {checksum} failed its boot health checks; reported only"),
    };
    journal::record_health(&checksum, digest.as_deref(), &failures, Some(action), &message);
    if action == ROLLED_BACK {
        let hostd = Host1Proxy::new(&conn).await?;
        roll_back(&conn, &hostd).await?;
        reboot_within_grace(&conn, settings.reboot_grace).await?;
    }
    Ok(Verdict::Failed(action.into()))
}

fn checksum_of(entry: &BootEntry) -> Option<String> {
    entry.ostree.as_ref().map(|o| o.checksum.clone())
}

/// The rollback deployment, unless it failed its own checks (two bad
/// deployments must not take turns).
fn rollback_target(host: &Host, record: &HealthRecord) -> Option<String> {
    let target = checksum_of(host.status.rollback.as_ref()?)?;
    let failed = record.deployments.get(&target).is_some_and(|h| h.result == HealthResult::Failed);
    (!failed).then_some(target)
}

fn log_check(r: &CheckResult) {
    match &r.failure {
        None if r.output.is_empty() => tracing::info!("{}: healthy", r.name),
        None => tracing::info!(check_output = r.output.as_str(), "{}: healthy; output:\n{}", r.name, r.output),
        Some(why) if r.output.is_empty() => tracing::warn!("{why}"),
        Some(why) => tracing::warn!(check_output = r.output.as_str(), "{why}; output:\n{}", r.output),
    }
}

/// Ask the daemon to make the rollback deployment the default; wait for its job.
async fn roll_back(conn: &Connection, hostd: &Host1Proxy<'_>) -> Result<()> {
    let path = hostd.rollback(HashMap::new()).await.context("asking hostd to roll back")?;
    let job = JobProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let limit = Instant::now() + ROLLBACK_JOB_LIMIT;
    loop {
        match job.state().await {
            Ok(JobStatus::Succeeded) => return Ok(()),
            Ok(JobStatus::Running) if Instant::now() < limit => sleep(Duration::from_millis(200)).await,
            Ok(state) => bail!("the rollback job ended {state:?}"),
            // The job object is gone once it ended and was collected.
            Err(e) => return Err(e).context("following the rollback job"),
        }
    }
}

/// Reboot through logind; while block inhibitors hold it off, ask again
/// until `grace` has passed, then override them.
async fn reboot_within_grace(conn: &Connection, grace: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        // logind lets root through inhibitors root holds: read them first,
        // as the daemon's reboots do.
        let blockers = logind::blockers(conn).await?;
        let outcome = if blockers.is_empty() { logind::request_reboot(conn).await? } else { RebootOutcome::Blocked(blockers) };
        match outcome {
            RebootOutcome::Started => {
                tracing::info!("rebooting into the rollback deployment");
                return Ok(());
            }
            RebootOutcome::Blocked(blockers) if started.elapsed() >= grace => {
                let who: Vec<String> = blockers.iter().map(|b| b.to_string()).collect();
                tracing::warn!("rollback reboot: the grace period of {} s is over; overriding {}", grace.as_secs(), who.join(", "));
                logind::override_reboot(conn).await?;
                return Ok(());
            }
            RebootOutcome::Blocked(blockers) => {
                let who: Vec<String> = blockers.iter().map(|b| b.to_string()).collect();
                let left = grace.saturating_sub(started.elapsed()).as_secs();
                tracing::warn!("rollback reboot blocked by {}; overriding in {left} s", who.join(", "));
                sleep(REBOOT_RETRY).await;
            }
        }
    }
}

/// `hostd --health-check`: assess on a runtime of its own; the exit
/// status is failure when the checks failed (so `boot-complete.target`
/// is not reached) or could not be run.
pub fn main(root: &Path, state_dir: &Path, settings: &HealthSettings) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(assess(root, state_dir, settings)) {
        // A deployment that failed stays unhealthy on every boot of it: its
        // boots never reach boot-complete.target.
        Ok(verdict @ (Verdict::Failed(_) | Verdict::AssessedBefore(HealthResult::Failed))) => {
            tracing::warn!("boot health: {verdict:?}");
            std::process::ExitCode::FAILURE
        }
        Ok(verdict) => {
            tracing::info!("boot health: {verdict:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("boot health assessment: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
