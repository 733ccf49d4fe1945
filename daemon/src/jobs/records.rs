//! What finished jobs leave behind for the manager's properties: the last
//! check (`CachedUpdate`'s download size, `LastCheckTime`,
//! `LastCheckResult`) and why a reboot `apply` asked for was postponed
//! (`RebootPendingReason`). Written by the job runner, read by the bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sysroot::UpdateSummary;

/// The records; every accessor copies, so no guard outlives a call.
#[derive(Debug, Default)]
pub struct Records {
    last_check: Mutex<Option<UpdateSummary>>,
    /// µs since the epoch; 0 when never.
    last_check_time_us: AtomicU64,
    last_check_result: Mutex<String>,
    reboot_postponed: Mutex<Option<String>>,
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

    /// Why the last reboot `apply` asked for did not happen, or `None`.
    pub fn set_reboot_postponed(&self, reason: Option<String>) {
        *self.reboot_postponed.lock().expect("postponement lock poisoned") = reason;
    }

    /// The postponement recorded by [`Records::set_reboot_postponed`].
    pub fn reboot_postponed(&self) -> Option<String> {
        self.reboot_postponed.lock().expect("postponement lock poisoned").clone()
    }
}
