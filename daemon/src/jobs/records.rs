//! What finished jobs leave behind for the manager's properties: the last
//! check (`CachedUpdate`'s download size, `LastCheckTime`,
//! `LastCheckResult`), the last job of each kind (`LastJobs`), why a
//! reboot `apply` asked for was postponed (`RebootPendingReason`) and the
//! last update announced (`UpdateAvailable`). Written by the job runner,
//! read by the bus, kept in the state file, and brought in line with the
//! host whenever its deployments change ([`Records::follow_host`]).
//!
//! The last check's end is also the answer to the next checks of callers
//! other than root for `check_interval_secs` ([`CheckAnswer`]), so a loop
//! of checks costs no sysroot work and no registry requests
//! (docs/security.md, "Checks and pre-emption").

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostd_interface::manager::{CachedUpdate, LastJob};
use hostd_interface::Error;

use super::{Initiator, JobKind, JobRequest};
use crate::persist::{Saved, StateFile};
use crate::sysroot::cache::Loaded;
use crate::sysroot::status::Snapshot;

/// How the last `Check` that reached a result ended, kept to answer the
/// checks that follow it closely.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckAnswer {
    /// When it ended.
    pub ended: Instant,
    /// Its result: the message, or the error it failed with.
    pub result: Result<String, Error>,
    /// The sysroot as the check left it ([`sysroot_state`]): once it looks
    /// different (a deployment written, a cached update changed by another
    /// tool), the answer is stale.
    pub sysroot: String,
}

impl CheckAnswer {
    /// Whether this answer stands in for a new check at `now`, within
    /// `interval` and with the sysroot looking like `sysroot_now`.
    pub fn answers(&self, now: Instant, interval: Duration, sysroot_now: &str) -> bool {
        now.saturating_duration_since(self.ended) < interval && self.sysroot == sysroot_now
    }

    /// The result a check answered by this one ends with: the same, saying
    /// how old it is.
    pub fn replayed(&self, now: Instant, interval: Duration) -> Result<String, Error> {
        let note = format!(
            " (from the check {} s ago; checks by users other than root are answered from the last result for {} s)",
            now.saturating_duration_since(self.ended).as_secs(),
            interval.as_secs()
        );
        match &self.result {
            Ok(message) => Ok(format!("{message}{note}")),
            Err(e) => Err(Error::from_name(e.short_name(), format!("{}{note}", e.message()))),
        }
    }
}

/// What a check's answer depends on in the sysroot: the Host document and
/// the downloaded update; `None` when the sysroot could not be read.
pub fn sysroot_state(loaded: &Loaded) -> Option<String> {
    let snapshot = loaded.as_ref().as_ref().ok()?;
    Some(format!("{}\n{:?}", snapshot.json, snapshot.downloaded_update))
}

/// The records; every accessor copies, so no guard outlives a call.
/// Everything but the check answer is kept in the state file
/// ([`crate::persist`]) by [`Records::persist`].
#[derive(Debug, Default)]
pub struct Records {
    saved: Mutex<Saved>,
    check_answer: Mutex<Option<CheckAnswer>>,
    /// Where [`Records::persist`] writes; `None`: nowhere (unit tests).
    file: Option<StateFile>,
    /// Held while writing, so saves land in the order they were taken.
    writing: tokio::sync::Mutex<()>,
}

impl Records {
    /// Records restored from `saved`, kept in `file` from now on.
    pub fn restored(file: StateFile, saved: Saved) -> Records {
        Records { saved: Mutex::new(saved), file: Some(file), ..Records::default() }
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.saved.lock().expect("records lock poisoned")
    }

    /// Write the records to the state file, if there is one. A failure is
    /// logged: the properties stay right for this daemon's lifetime.
    pub async fn persist(&self) {
        let Some(file) = self.file.clone() else { return };
        let _in_order = self.writing.lock().await;
        let saved = self.saved().clone();
        let written = tokio::task::spawn_blocking(move || file.save(&saved)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("saving the state: {e:#}"),
            Err(e) => tracing::warn!("saving the state: {e}"),
        }
    }

    /// Remember the update a finished `Check` found (`None`: none).
    pub fn record_check(&self, update: Option<CachedUpdate>) {
        self.saved().last_check.update = update;
    }

    /// The update the last finished `Check` found, with its download size.
    pub fn last_check(&self) -> Option<CachedUpdate> {
        self.saved().last_check.update.clone()
    }

    /// Remember when a check (a `Check`, or an unattended run) ended and how.
    pub fn record_check_result(&self, result: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut saved = self.saved();
        saved.last_check.result = result.to_string();
        saved.last_check.time = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
    }

    /// How the last check ended; empty when never.
    pub fn last_check_result(&self) -> String {
        self.saved().last_check.result.clone()
    }

    /// When the last check ended, µs since the epoch; 0 when never.
    pub fn last_check_time(&self) -> u64 {
        self.saved().last_check.time
    }

    /// Remember how a job ended: it replaces the last one of its kind.
    pub fn record_job(&self, job: LastJob) {
        let mut saved = self.saved();
        saved.last_jobs.retain(|j| j.kind != job.kind);
        saved.last_jobs.push(job);
        saved.last_jobs.sort_by_key(|j| j.end_time);
    }

    /// The last finished job of each kind, oldest end first.
    pub fn last_jobs(&self) -> Vec<LastJob> {
        self.saved().last_jobs.clone()
    }

    /// Whether the update of `digest` is new to the announcements: true
    /// once per digest in a row, which is then the announced one.
    pub fn announce_update(&self, digest: &str) -> bool {
        let mut saved = self.saved();
        if saved.announced_update.as_deref() == Some(digest) {
            return false;
        }
        saved.announced_update = Some(digest.to_string());
        true
    }

    /// Bring the records in line with the host as `snapshot` shows it;
    /// whether anything changed. An update the last check found that a
    /// deployment now runs (deployed by hostd or any other tool) is no
    /// longer news: it and its download size are dropped and the check's
    /// result says so. A postponed reboot is forgotten once no reboot is
    /// required (it happened, or what it was for was undone).
    pub fn follow_host(&self, snapshot: &Snapshot) -> bool {
        let mut saved = self.saved();
        let mut changed = false;
        let deployed = saved
            .last_check
            .update
            .as_ref()
            .filter(|u| !u.is_downgrade())
            .and_then(|u| Some((u.digest.clone()?, u.version.clone())))
            .filter(|(digest, _)| snapshot.has_deployed(digest));
        if let Some((digest, version)) = deployed {
            let version = version.as_deref().unwrap_or("no version");
            saved.last_check.result = format!("The update this check found, {version} ({digest}), has been deployed since.");
            saved.last_check.update = None;
            changed = true;
        }
        if !snapshot.reboot_required && saved.reboot_postponed.is_some() {
            saved.reboot_postponed = None;
            changed = true;
        }
        changed
    }

    /// Keep how a `Check` that reached a result ended.
    pub fn record_check_answer(&self, answer: CheckAnswer) {
        *self.check_answer.lock().expect("check lock poisoned") = Some(answer);
    }

    /// The result that answers `request` instead of a new check, when the
    /// rule allows it: a `Check` from a caller other than root, within
    /// `interval` (`None`: never) of the end of the last check that reached
    /// a result, with the sysroot as that check left it (`sysroot_now`).
    /// Root (an administrator, the update timer) always gets a fresh check.
    pub fn check_answer(
        &self,
        request: &JobRequest,
        initiator: &Initiator,
        interval: Option<Duration>,
        sysroot_now: Option<&str>,
        now: Instant,
    ) -> Option<Result<String, Error>> {
        if request.kind != JobKind::Check || initiator.uid == 0 {
            return None;
        }
        let (interval, sysroot_now) = (interval?, sysroot_now?);
        let answer = self.check_answer.lock().expect("check lock poisoned");
        let answer = answer.as_ref().filter(|a| a.answers(now, interval, sysroot_now))?;
        Some(answer.replayed(now, interval))
    }

    /// Why the last reboot `apply` asked for did not happen, or `None`.
    pub fn set_reboot_postponed(&self, reason: Option<String>) {
        self.saved().reboot_postponed = reason;
    }

    /// The postponement recorded by [`Records::set_reboot_postponed`].
    pub fn reboot_postponed(&self) -> Option<String> {
        self.saved().reboot_postponed.clone()
    }
}

#[cfg(test)]
mod tests {
    use hostd_interface::options::Options;

    use super::*;

    const MINUTE: Option<Duration> = Some(Duration::from_secs(60));

    fn check() -> JobRequest {
        JobRequest { kind: JobKind::Check, image: None, options: Options::default() }
    }

    fn uid(uid: u32) -> Initiator {
        Initiator { uid, unit: None }
    }

    fn recorded(result: Result<String, Error>) -> (Records, Instant) {
        let records = Records::default();
        let ended = Instant::now();
        records.record_check_answer(CheckAnswer { ended, result, sysroot: "v1".into() });
        (records, ended)
    }

    fn found(version: &str) -> CachedUpdate {
        CachedUpdate {
            digest: Some(format!("sha256:{version}")),
            downgrade: Some(false),
            version: Some(version.into()),
            download_bytes: Some(10),
            ..CachedUpdate::default()
        }
    }

    #[test]
    fn a_found_update_that_got_deployed_is_no_longer_news() {
        use crate::sysroot::status::tests::{booted_with_staged, offline};
        let records = Records::default();
        records.record_check(Some(found("3")));
        records.record_check_result("Update 3 is downloaded and not yet deployed.");
        assert!(!records.follow_host(&booted_with_staged(true)), "download-only: not deployed yet");
        assert_eq!(records.last_check(), Some(found("3")));
        assert!(!records.follow_host(&offline()), "3 is nowhere deployed");
        assert!(records.follow_host(&booted_with_staged(false)), "3 is staged");
        assert_eq!(records.last_check(), None);
        assert_eq!(records.last_check_result(), "The update this check found, 3 (sha256:3), has been deployed since.");
        assert!(!records.follow_host(&booted_with_staged(false)), "once");
    }

    #[test]
    fn a_postponed_reboot_is_forgotten_once_none_is_required() {
        use crate::sysroot::status::tests::{booted_with_staged, offline};
        let records = Records::default();
        records.set_reboot_postponed(Some("an inhibitor".into()));
        assert!(!records.follow_host(&booted_with_staged(false)));
        assert!(records.follow_host(&offline()));
        assert_eq!(records.reboot_postponed(), None);
    }

    #[test]
    fn an_update_is_announced_once_per_digest() {
        let records = Records::default();
        assert!(records.announce_update("sha256:2"));
        assert!(!records.announce_update("sha256:2"));
        assert!(records.announce_update("sha256:3"));
    }

    #[tokio::test]
    async fn records_survive_in_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        let records = Records::restored(file.clone(), Saved::default());
        records.record_check(Some(found("2")));
        records.record_check_result("Update available: 2.");
        records.persist().await;
        let back = Records::restored(file.clone(), file.load().unwrap());
        assert_eq!(back.last_check(), Some(found("2")));
        assert_eq!(back.last_check_result(), "Update available: 2.");
        assert_eq!(back.last_check_time(), records.last_check_time());
    }

    #[test]
    fn a_users_check_within_the_interval_gets_the_last_result() {
        let (records, ended) = recorded(Ok("Update available: v2.".into()));
        let later = ended + Duration::from_secs(12);
        let answer = records.check_answer(&check(), &uid(1000), MINUTE, Some("v1"), later);
        let Some(Ok(message)) = answer else { panic!("{answer:?}") };
        assert!(message.starts_with("Update available: v2. (from the check 12 s ago;"), "{message}");
        assert!(message.ends_with("for 60 s)"), "{message}");
    }

    #[test]
    fn a_failed_check_answers_with_its_error() {
        let (records, ended) = recorded(Err(Error::Network("connection refused".into())));
        let answer = records.check_answer(&check(), &uid(1000), MINUTE, Some("v1"), ended);
        let Some(Err(Error::Network(message))) = answer else { panic!("{answer:?}") };
        assert!(message.starts_with("connection refused (from the check 0 s ago"), "{message}");
    }

    #[test]
    fn root_late_callers_a_changed_sysroot_and_other_requests_get_a_new_job() {
        let (records, ended) = recorded(Ok("No update available.".into()));
        let soon = ended + Duration::from_secs(5);
        assert!(records.check_answer(&check(), &uid(0), MINUTE, Some("v1"), soon).is_none(), "root");
        let late = ended + Duration::from_secs(60);
        assert!(records.check_answer(&check(), &uid(1000), MINUTE, Some("v1"), late).is_none(), "interval over");
        assert!(records.check_answer(&check(), &uid(1000), None, Some("v1"), soon).is_none(), "interval 0: off");
        assert!(records.check_answer(&check(), &uid(1000), MINUTE, Some("v2"), soon).is_none(), "sysroot changed");
        assert!(records.check_answer(&check(), &uid(1000), MINUTE, None, soon).is_none(), "sysroot unreadable");
        let upgrade = JobRequest { kind: JobKind::Upgrade, ..check() };
        assert!(records.check_answer(&upgrade, &uid(1000), MINUTE, Some("v1"), soon).is_none(), "not a check");
        assert!(Records::default().check_answer(&check(), &uid(1000), MINUTE, Some("v1"), soon).is_none(), "none yet");
    }
}
