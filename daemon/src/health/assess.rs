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
/// `ACTION` recorded while the rollback is under way; a boot that finds it
/// (the rollback was interrupted) finishes the rollback.
pub const ROLLING_BACK: &str = "rolling-back";
/// `ACTION` of a failure whose rollback could not be done; the failure
/// lines end with why.
pub const ROLLBACK_FAILED: &str = "rollback-failed";
/// `ACTION` of a failure that changed nothing.
pub const REPORTED: &str = "reported";
/// How often a blocked rollback reboot is asked for again.
const REBOOT_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for the daemon's rollback job, including the wait for
/// another job to end.
const ROLLBACK_JOB_LIMIT: Duration = Duration::from_secs(300);
/// How often a busy daemon is asked for the rollback again.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// How the assessment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not booted from an image deployment: nothing to assess.
    NotImageBased,
    /// The booted deployment was not staged by hostd (the installed one,
    /// one another tool deployed): it is not assessed.
    NotStagedByHostd,
    /// The booted deployment was assessed on an earlier boot.
    AssessedBefore(HealthResult),
    /// Every check passed.
    Passed,
    /// A check failed; with the action taken.
    Failed(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NotImageBased => write!(f, "not booted from an image deployment; nothing to assess"),
            Verdict::NotStagedByHostd => write!(f, "the booted deployment was not staged by hostd; not assessed"),
            Verdict::AssessedBefore(result) => write!(f, "the booted deployment {result} its checks on its first boot"),
            Verdict::Passed => write!(f, "passed"),
            Verdict::Failed(action) => write!(f, "failed ({action})"),
        }
    }
}

/// What a boot does about the booted deployment `checksum`, from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Todo {
    /// hostd staged it and no boot assessed it since: run the checks.
    Assess,
    /// It failed and its rollback was interrupted: finish the rollback.
    FinishRollback,
    /// Assessed before, with this result.
    Done(HealthResult),
    /// Not hostd's to assess.
    Nothing,
}

fn todo(record: &HealthRecord, checksum: &str) -> Todo {
    if record.pending.contains_key(checksum) {
        return Todo::Assess;
    }
    match record.deployments.get(checksum) {
        Some(h) if h.action.as_deref() == Some(ROLLING_BACK) => Todo::FinishRollback,
        Some(h) => Todo::Done(h.result),
        None => Todo::Nothing,
    }
}

/// Assess the booted deployment of the sysroot at `sysroot` (`/` on a
/// booted host) if hostd staged it and no boot assessed it yet: run the
/// checks (configuration, check executables and wants below `config_root`),
/// record the outcome in `state_dir`, log it, and roll back on failure when
/// configured.
pub async fn assess(sysroot: &Path, config_root: &Path, state_dir: &Path, settings: &HealthSettings) -> Result<Verdict> {
    let deadline = Instant::now() + settings.deadline;
    let conn = Connection::system().await.context("connecting to the system bus")?;
    // Marks older than this read whose deployment is gone (discarded,
    // cleaned up) go; one the daemon writes meanwhile stays.
    let read_at = now();
    let host = read_host(sysroot, state_dir).await?;
    let Some((booted, checksum)) = host.status.booted.as_ref().and_then(|b| Some((b, checksum_of(b)?))) else {
        return Ok(Verdict::NotImageBased);
    };
    let digest = booted.image.as_ref().map(|i| i.image_digest.clone());
    let deployed = deployed_checksums(&host);
    let record = HealthRecord::update(state_dir, |r| {
        r.pending.retain(|c, p| deployed.contains(c) || p.staged_at >= read_at);
        r.clone()
    })?;
    let todo = todo(&record, &checksum);
    tracing::debug!("booted deployment {checksum}: {todo:?}");
    let failures = match todo {
        Todo::Assess => {
            let results = checks::run_all(&conn, config_root, settings, deadline).await;
            for r in &results {
                log_check(r);
            }
            results.into_iter().filter_map(|r| r.failure).collect::<Vec<String>>()
        }
        Todo::Done(result) => return Ok(Verdict::AssessedBefore(result)),
        Todo::Nothing => return Ok(Verdict::NotStagedByHostd),
        Todo::FinishRollback => {
            tracing::warn!("deployment {checksum} failed its boot health checks and its rollback was interrupted; finishing it");
            let before = record.deployments.get(&checksum);
            let failed = Failed {
                checksum: &checksum,
                digest: digest.as_deref(),
                failures: before.map(|h| h.failures.clone()).unwrap_or_default(),
                checked_at: before.map(|h| h.checked_at.clone()).unwrap_or_else(now),
            };
            let action = roll_back_and_reboot(&conn, sysroot, state_dir, failed, settings).await?;
            return Ok(Verdict::Failed(action.into()));
        }
    };
    let failed = Failed { checksum: &checksum, digest: digest.as_deref(), failures, checked_at: now() };
    if failed.failures.is_empty() {
        let health = DeploymentHealth { result: HealthResult::Passed, checked_at: failed.checked_at.clone(), failures: Vec::new(), action: None };
        HealthRecord::update(state_dir, |r| {
            r.pending.remove(&checksum);
            r.last_assessed = Some(checksum.clone());
            r.deployments.insert(checksum.clone(), health);
            if let Some(digest) = &digest {
                r.failed_digests.remove(digest);
            }
        })?;
        journal::record_health(&checksum, digest.as_deref(), &[], None, &format!("deployment {checksum} passed its boot health checks"));
        return Ok(Verdict::Passed);
    }
    let plan = rollback_plan(settings, &host, &record);
    let action = if plan.is_ok() { ROLLING_BACK } else { REPORTED };
    // Recorded before acting: the rollback happens at most once, and one
    // that is interrupted is finished by the next boot.
    HealthRecord::update(state_dir, |r| {
        r.pending.remove(&checksum);
        r.last_assessed = Some(checksum.clone());
        r.deployments.insert(checksum.clone(), failed.health(action));
        if let Some(digest) = &digest {
            r.failed_digests.insert(digest.clone(), FailedImage { checksum: checksum.clone(), failed_at: failed.checked_at.clone() });
        }
    })?;
    if let Err(why) = plan {
        let message = format!("deployment {checksum} failed its boot health checks; reported only: {why}");
        journal::record_health(&checksum, digest.as_deref(), &failed.failures, Some(REPORTED), &message);
        return Ok(Verdict::Failed(REPORTED.into()));
    }
    let action = roll_back_and_reboot(&conn, sysroot, state_dir, failed, settings).await?;
    Ok(Verdict::Failed(action.into()))
}

/// A deployment that failed its checks.
#[derive(Debug)]
struct Failed<'a> {
    checksum: &'a str,
    digest: Option<&'a str>,
    failures: Vec<String>,
    /// When the checks that failed ended, RFC 3339 in UTC.
    checked_at: String,
}

impl Failed<'_> {
    fn health(&self, action: &str) -> DeploymentHealth {
        DeploymentHealth {
            result: HealthResult::Failed,
            checked_at: self.checked_at.clone(),
            failures: self.failures.clone(),
            action: Some(action.into()),
        }
    }
}

/// Have the daemon make the rollback deployment the default (the record
/// already says `rolling-back`), record how that ended, log it, and reboot
/// into it. The action recorded. A record that cannot be saved now does
/// not stop the reboot: the boot order is what counts.
async fn roll_back_and_reboot(
    conn: &Connection,
    sysroot: &Path,
    state_dir: &Path,
    mut failed: Failed<'_>,
    settings: &HealthSettings,
) -> Result<&'static str> {
    let checksum = failed.checksum.to_string();
    let outcome = roll_back(conn, sysroot, state_dir, &checksum).await;
    let (action, message) = match &outcome {
        Ok(target) => (ROLLED_BACK, format!("deployment {checksum} failed its boot health checks; rolled back to {target}, rebooting")),
        Err(e) => {
            failed.failures.push(format!("rollback: {e:#}"));
            (ROLLBACK_FAILED, format!("deployment {checksum} failed its boot health checks; the rollback failed: {e:#}"))
        }
    };
    let health = failed.health(action);
    if let Err(e) = HealthRecord::update(state_dir, |r| {
        r.deployments.insert(checksum.clone(), health);
    }) {
        tracing::error!("boot health record: saving the outcome of the rollback: {e:#}");
    }
    journal::record_health(&checksum, failed.digest, &failed.failures, Some(action), &message);
    if outcome.is_ok() {
        reboot_within_grace(conn, settings.reboot_grace).await?;
    }
    Ok(action)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The sysroot's status as the daemon reads it, without starting the
/// daemon on every boot (it is asked only for a rollback).
async fn read_host(sysroot: &Path, state_dir: &Path) -> Result<Host> {
    let (sysroot, dir) = (sysroot.to_path_buf(), state_dir.to_path_buf());
    Ok(tokio::task::spawn_blocking(move || crate::sysroot::status::load(&sysroot, &dir))
        .await
        .context("reading the sysroot")??
        .host)
}

fn checksum_of(entry: &BootEntry) -> Option<String> {
    entry.ostree.as_ref().map(|o| o.checksum.clone())
}

fn deployed_checksums(host: &Host) -> Vec<String> {
    let s = &host.status;
    [&s.staged, &s.booted, &s.rollback].into_iter().filter_map(|e| checksum_of(e.as_ref()?)).collect()
}

/// Whether the next boot boots the booted deployment `checksum` again: no
/// rollback is queued and no deployment is staged to be applied.
fn next_boot_is(host: &Host, checksum: &str) -> bool {
    let s = &host.status;
    let booted_is = s.booted.as_ref().and_then(checksum_of).as_deref() == Some(checksum);
    let staged_applies = s.staged.as_ref().is_some_and(|e| !e.download_only);
    booted_is && !s.rollback_queued && !staged_applies
}

/// The rollback deployment to return to, or why there is none: the
/// settings say report, there is no rollback deployment, or it failed its
/// own checks (two bad deployments must not take turns).
fn rollback_plan(settings: &HealthSettings, host: &Host, record: &HealthRecord) -> Result<String, String> {
    if settings.on_failure == OnFailure::Report {
        return Err("[health] on_failure = \"report\"".into());
    }
    let target = host.status.rollback.as_ref().and_then(checksum_of).ok_or("there is no rollback deployment")?;
    if record.deployments.get(&target).is_some_and(|h| h.result == HealthResult::Failed) {
        return Err(format!("the rollback deployment {target} failed its own boot health checks"));
    }
    Ok(target)
}

fn log_check(r: &CheckResult) {
    match &r.failure {
        None if r.output.is_empty() => tracing::info!("{}: healthy", r.name),
        None => tracing::info!(check_output = r.output.as_str(), "{}: healthy; output:\n{}", r.name, r.output),
        Some(why) if r.output.is_empty() => tracing::warn!("{why}"),
        Some(why) => tracing::warn!(check_output = r.output.as_str(), "{why}; output:\n{}", r.output),
    }
}

/// Make the next boot leave the failed booted deployment `failed`: unless
/// someone already did (an admin's `hostctl rollback` while the checks
/// ran), ask the daemon for a rollback (waiting while it is busy) and
/// follow its job. Success is read from the sysroot afterwards, not from
/// the job alone. The deployment the next boot starts.
async fn roll_back(conn: &Connection, sysroot: &Path, state_dir: &Path, failed: &str) -> Result<String> {
    let limit = Instant::now() + ROLLBACK_JOB_LIMIT;
    let mut asked = false;
    // The boot order is read again before every request: a rollback that
    // ended meanwhile (an admin's, which kept the daemon busy) must not be
    // undone by a second one.
    loop {
        let host = read_host(sysroot, state_dir).await?;
        if !next_boot_is(&host, failed) {
            if !asked {
                tracing::info!("the next boot already leaves deployment {failed}; no rollback needed");
            }
            break;
        }
        if asked {
            bail!("the next boot would still start deployment {failed}");
        }
        let hostd = Host1Proxy::new(conn).await?;
        match hostd.rollback(HashMap::new()).await {
            Ok(path) => {
                asked = true;
                follow_rollback_job(conn, path, limit).await?;
            }
            Err(hostd_interface::Error::Busy(m)) if Instant::now() < limit => {
                tracing::info!("hostd is busy ({m}); asking for the rollback again");
                sleep(BUSY_RETRY).await;
            }
            Err(e) => bail!("asking hostd to roll back: {}: {}", e.short_name(), e.message()),
        }
    }
    let host = read_host(sysroot, state_dir).await?;
    let next = if host.status.rollback_queued { &host.status.rollback } else { &host.status.staged };
    Ok(next.as_ref().and_then(checksum_of).unwrap_or_else(|| "the rollback deployment".into()))
}

/// Wait for the rollback job at `path` to end, until `limit`.
async fn follow_rollback_job(conn: &Connection, path: zbus::OwnedObjectPath, limit: Instant) -> Result<()> {
    let job = JobProxy::builder(conn).path(path).cache_properties(zbus::proxy::CacheProperties::No).build().await?;
    loop {
        match job.state().await {
            Ok(JobStatus::Succeeded) => return Ok(()),
            Ok(JobStatus::Running) if Instant::now() < limit => sleep(Duration::from_millis(200)).await,
            Ok(JobStatus::Running) => bail!("the rollback job did not end within {} s", ROLLBACK_JOB_LIMIT.as_secs()),
            Ok(state) => {
                let name = job.error_name().await.unwrap_or_default();
                let message = job.error_message().await.unwrap_or_default();
                bail!("the rollback job ended {state:?}: {name}: {message}");
            }
            // The job object goes a while after it ended; the sysroot says
            // how it went.
            Err(e) => {
                tracing::debug!("following the rollback job: {e}");
                return Ok(());
            }
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
pub fn main(sysroot: &Path, config_root: &Path, state_dir: &Path, settings: &HealthSettings) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(assess(sysroot, config_root, state_dir, settings)) {
        // A deployment that failed stays unhealthy on every boot of it: its
        // boots never reach boot-complete.target.
        Ok(verdict @ (Verdict::Failed(_) | Verdict::AssessedBefore(HealthResult::Failed))) => {
            tracing::warn!("boot health: {verdict}");
            std::process::ExitCode::FAILURE
        }
        Ok(verdict) => {
            tracing::info!("boot health: {verdict}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("boot health assessment: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::host::{BootEntryOstree, HostSpec, HostStatus};

    fn entry(checksum: &str) -> BootEntry {
        BootEntry {
            image: None,
            cached_update: None,
            incompatible: false,
            pinned: false,
            download_only: false,
            ostree: Some(BootEntryOstree { stateroot: "default".into(), checksum: checksum.into(), deploy_serial: 0 }),
            bound_images: Vec::new(),
            health: None,
        }
    }

    fn host(staged: Option<BootEntry>, rollback_queued: bool) -> Host {
        let status = HostStatus {
            staged,
            booted: Some(entry("bad")),
            rollback: Some(entry("good")),
            rollback_queued,
            ..Default::default()
        };
        Host::new(HostSpec::default(), status)
    }

    fn failed(action: &str) -> DeploymentHealth {
        DeploymentHealth { result: HealthResult::Failed, checked_at: now(), failures: vec!["x".into()], action: Some(action.into()) }
    }

    #[test]
    fn only_what_hostd_staged_is_assessed_and_an_interrupted_rollback_is_finished() {
        let mut record = HealthRecord::default();
        assert_eq!(todo(&record, "a"), Todo::Nothing, "installed or deployed by another tool");
        record.pending.insert("a".into(), super::super::record::Pending { image_digest: None, staged_at: now() });
        assert_eq!(todo(&record, "a"), Todo::Assess);
        // Staged again after an assessment (new kernel arguments, a retry): assessed again.
        record.deployments.insert("a".into(), failed(REPORTED));
        assert_eq!(todo(&record, "a"), Todo::Assess);
        record.pending.clear();
        assert_eq!(todo(&record, "a"), Todo::Done(HealthResult::Failed));
        record.deployments.insert("a".into(), failed(ROLLING_BACK));
        assert_eq!(todo(&record, "a"), Todo::FinishRollback);
    }

    #[test]
    fn the_next_boot_leaves_the_failed_deployment_once_a_rollback_is_queued_or_an_update_staged() {
        assert!(next_boot_is(&host(None, false), "bad"));
        assert!(!next_boot_is(&host(None, true), "bad"), "an admin's rollback is queued");
        assert!(!next_boot_is(&host(Some(entry("newer")), false), "bad"));
        let mut locked = entry("newer");
        locked.download_only = true;
        assert!(next_boot_is(&host(Some(locked), false), "bad"), "a download-only deployment is not applied");
    }

    #[test]
    fn a_failure_is_only_reported_when_so_configured_or_the_rollback_deployment_failed_too() {
        let rollback = HealthSettings::default();
        let record = HealthRecord::default();
        assert_eq!(rollback_plan(&rollback, &host(None, false), &record), Ok("good".into()));
        let report = HealthSettings { on_failure: OnFailure::Report, ..Default::default() };
        assert_eq!(rollback_plan(&report, &host(None, false), &record), Err("[health] on_failure = \"report\"".into()));
        let mut lonely = host(None, false);
        lonely.status.rollback = None;
        assert_eq!(rollback_plan(&rollback, &lonely, &record), Err("there is no rollback deployment".into()));
        let mut both_bad = HealthRecord::default();
        both_bad.deployments.insert("good".into(), failed(ROLLED_BACK));
        assert_eq!(
            rollback_plan(&rollback, &host(None, false), &both_bad),
            Err("the rollback deployment good failed its own boot health checks".into())
        );
    }
}
