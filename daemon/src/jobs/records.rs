//! What finished jobs leave behind for the manager's properties: the last
//! check (`CachedUpdate`'s download size, `LastCheckTime`,
//! `LastCheckResult`) and why a reboot `apply` asked for was postponed
//! (`RebootPendingReason`). Written by the job runner, read by the bus.
//!
//! The last check's end is also the answer to the next checks of callers
//! other than root for `check_interval_secs` ([`CheckAnswer`]), so a loop
//! of checks costs no sysroot work and no registry requests
//! (docs/security.md, "Checks and pre-emption").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostd_interface::Error;

use super::{Initiator, JobKind, JobRequest};
use crate::sysroot::cache::Loaded;
use crate::sysroot::UpdateSummary;

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
#[derive(Debug, Default)]
pub struct Records {
    last_check: Mutex<Option<UpdateSummary>>,
    /// µs since the epoch; 0 when never.
    last_check_time_us: AtomicU64,
    last_check_result: Mutex<String>,
    reboot_postponed: Mutex<Option<String>>,
    check_answer: Mutex<Option<CheckAnswer>>,
}

impl Records {
    /// Remember what a finished `Check` found.
    pub fn record_check(&self, summary: Option<UpdateSummary>) {
        *self.last_check.lock().expect("check lock poisoned") = summary;
    }

    /// What the last finished `Check` found.
    pub fn last_check(&self) -> Option<UpdateSummary> {
        self.last_check.lock().expect("check lock poisoned").clone()
    }

    /// Remember when a check (a `Check`, or an unattended run) ended and how.
    pub fn record_check_result(&self, result: &str) {
        *self.last_check_result.lock().expect("check lock poisoned") = result.to_string();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_check_time_us.store(now.as_micros() as u64, Ordering::Relaxed);
    }

    /// How the last check ended; empty when never.
    pub fn last_check_result(&self) -> String {
        self.last_check_result.lock().expect("check lock poisoned").clone()
    }

    /// When the last check ended, µs since the epoch; 0 when never.
    pub fn last_check_time(&self) -> u64 {
        self.last_check_time_us.load(Ordering::Relaxed)
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
        *self.reboot_postponed.lock().expect("postponement lock poisoned") = reason;
    }

    /// The postponement recorded by [`Records::set_reboot_postponed`].
    pub fn reboot_postponed(&self) -> Option<String> {
        self.reboot_postponed.lock().expect("postponement lock poisoned").clone()
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
