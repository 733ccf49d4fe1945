//! The decisions of an unattended run, as pure functions: what it may do
//! (from `[updates] policy`) and whether it may reboot now (from the
//! strategy, the maintenance windows and the lock manager's answer). No I/O
//! and no clock: the caller passes `now` and what the lock manager said.

use chrono::{DateTime, Utc};

use hostd_interface::manager::UpdateStrategy;

use crate::updates::fleetlock::{FleetLockError, FleetLockGroup, FleetLockUrl};
use crate::updates::window::MaintenanceWindows;

/// What to do when an update is found unattended (`[updates] policy`).
pub use hostd_interface::manager::UpdatePolicy;

/// When an unattended run may reboot into what it staged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RebootStrategy {
    /// Whenever nothing inhibits it; maintenance windows are ignored.
    #[default]
    Immediate,
    /// Only inside a maintenance window (at least one is configured).
    Periodic,
    /// Only with a reboot slot from a FleetLock manager, and inside a
    /// maintenance window when any is configured.
    FleetLock(FleetLockSettings),
}

impl RebootStrategy {
    /// The name used in files and on the bus.
    pub fn name(&self) -> UpdateStrategy {
        match self {
            RebootStrategy::Immediate => UpdateStrategy::Immediate,
            RebootStrategy::Periodic => UpdateStrategy::Periodic,
            RebootStrategy::FleetLock(_) => UpdateStrategy::FleetLock,
        }
    }
}

/// `[updates.fleet_lock]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockSettings {
    /// The lock manager's base URL.
    pub url: FleetLockUrl,
    /// The reboot group.
    pub group: FleetLockGroup,
}

/// What an unattended run does with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnattendedPlan {
    /// Nothing at all (policy `none`).
    Nothing,
    /// Look for an update, fetch nothing (`check`).
    CheckOnly,
    /// Fetch it and stage it finalization-locked, not for the next boot (`download`).
    DownloadOnly,
    /// Fetch it and queue it for the next boot (`stage`).
    Stage,
    /// Queue it and reboot into it, when the strategy allows (`apply`).
    StageAndReboot,
}

impl UnattendedPlan {
    /// Whether the run fetches the update's layers.
    pub fn fetches(self) -> bool {
        matches!(
            self,
            UnattendedPlan::DownloadOnly | UnattendedPlan::Stage | UnattendedPlan::StageAndReboot
        )
    }

    /// Whether the run ends by rebooting (subject to [`reboot_decision`]).
    pub fn reboots(self) -> bool {
        self == UnattendedPlan::StageAndReboot
    }
}

/// The plan for `policy`.
pub fn plan(policy: UpdatePolicy) -> UnattendedPlan {
    match policy {
        UpdatePolicy::None => UnattendedPlan::Nothing,
        UpdatePolicy::Check => UnattendedPlan::CheckOnly,
        UpdatePolicy::Download => UnattendedPlan::DownloadOnly,
        UpdatePolicy::Stage => UnattendedPlan::Stage,
        UpdatePolicy::Apply => UnattendedPlan::StageAndReboot,
    }
}

/// What the lock manager said, as far as the caller got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Not asked (the strategy needs no lock, or the windows were checked first).
    NotAsked,
    /// `pre-reboot` succeeded: this host holds a reboot slot.
    Granted,
    /// `pre-reboot` failed.
    Failed(FleetLockError),
}

/// Reboot now, or not yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootDecision {
    /// Nothing configured stands in the way.
    Now,
    /// Wait; `until` is when to try again if known (the next window),
    /// `None` for "at the next run".
    Postpone {
        /// For the log and the job message.
        reason: String,
        /// When to try again, when known.
        until: Option<DateTime<Utc>>,
    },
}

/// Whether the caller should ask the lock manager for a slot now: only with
/// the fleet-lock strategy, and only inside a window when windows are
/// configured (a slot taken outside one would block the fleet until it opens).
pub fn needs_lock(strategy: &RebootStrategy, windows: &MaintenanceWindows, now: DateTime<Utc>) -> bool {
    matches!(strategy, RebootStrategy::FleetLock(_)) && windows_allow(windows, now)
}

/// May the host reboot at `now`?
///
/// - `immediate`: yes; windows and lock are not consulted.
/// - `periodic`: when a window is open, else postponed to the next one.
/// - `fleet-lock`: when the windows (if any) are open and `lock` is
///   [`LockOutcome::Granted`]. A slot granted while the windows are closed
///   is not used: the caller should give it back (`steady-state`).
pub fn reboot_decision(
    strategy: &RebootStrategy,
    windows: &MaintenanceWindows,
    now: DateTime<Utc>,
    lock: &LockOutcome,
) -> RebootDecision {
    match strategy {
        RebootStrategy::Immediate => RebootDecision::Now,
        RebootStrategy::Periodic if windows.is_empty() => RebootDecision::Postpone {
            reason: "the periodic strategy has no maintenance window".to_string(),
            until: None,
        },
        RebootStrategy::Periodic => window_decision(windows, now),
        RebootStrategy::FleetLock(_) if !windows_allow(windows, now) => window_decision(windows, now),
        RebootStrategy::FleetLock(_) => lock_decision(lock),
    }
}

/// Without windows there is nothing to wait for; with some, one must be open.
fn windows_allow(windows: &MaintenanceWindows, now: DateTime<Utc>) -> bool {
    windows.is_empty() || windows.is_open(now)
}

fn window_decision(windows: &MaintenanceWindows, now: DateTime<Utc>) -> RebootDecision {
    if windows.is_open(now) {
        return RebootDecision::Now;
    }
    let next = windows.next_open(now);
    let reason = match next {
        Some(at) => format!(
            "outside the maintenance windows; the next opens {}",
            windows.local_time(at)
        ),
        None => "outside the maintenance windows".to_string(),
    };
    RebootDecision::Postpone { reason, until: next }
}

fn lock_decision(lock: &LockOutcome) -> RebootDecision {
    let reason = match lock {
        LockOutcome::Granted => return RebootDecision::Now,
        LockOutcome::NotAsked => "no reboot slot taken from the lock manager yet".to_string(),
        LockOutcome::Failed(FleetLockError::Denied { kind, value, .. }) => {
            format!("the lock manager gave no reboot slot: {kind}: {value}")
        }
        LockOutcome::Failed(e) => format!("no reboot slot: {e}"),
    };
    RebootDecision::Postpone { reason, until: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::updates::fleetlock::Operation;
    use crate::updates::window::{parse_start, Window};
    use chrono::{Weekday, WeekdaySet};
    use chrono_tz::Tz;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// Sundays 02:00–03:00 in Berlin.
    fn sunday_night() -> MaintenanceWindows {
        let w = Window::new(WeekdaySet::single(Weekday::Sun), parse_start("02:00").unwrap(), 60).unwrap();
        MaintenanceWindows::new(Tz::Europe__Berlin, vec![w])
    }

    fn no_windows() -> MaintenanceWindows {
        MaintenanceWindows::new(Tz::UTC, vec![])
    }

    fn fleet_lock() -> RebootStrategy {
        RebootStrategy::FleetLock(FleetLockSettings {
            url: FleetLockUrl::parse("http://127.0.0.1:8080").unwrap(),
            group: FleetLockGroup::default(),
        })
    }

    // 2026-06-07 is a Sunday; Berlin is UTC+2 (CEST).
    const INSIDE: &str = "2026-06-07T00:30:00Z"; // 02:30 CEST
    const BEFORE: &str = "2026-06-06T12:00:00Z"; // Saturday 14:00 CEST
    const NEXT_OPENING: &str = "2026-06-07T00:00:00Z";

    fn denied() -> LockOutcome {
        LockOutcome::Failed(FleetLockError::Denied {
            operation: Operation::PreReboot,
            status: 409,
            kind: "failed_lock_semaphore_full".to_string(),
            value: "all slots taken".to_string(),
        })
    }

    #[test]
    fn plans_for_each_policy() {
        let plans: Vec<_> = [
            UpdatePolicy::None,
            UpdatePolicy::Check,
            UpdatePolicy::Download,
            UpdatePolicy::Stage,
            UpdatePolicy::Apply,
        ]
        .into_iter()
        .map(|p| {
            let plan = plan(p);
            (plan, plan.fetches(), plan.reboots())
        })
        .collect();
        assert_eq!(
            plans,
            [
                (UnattendedPlan::Nothing, false, false),
                (UnattendedPlan::CheckOnly, false, false),
                (UnattendedPlan::DownloadOnly, true, false),
                (UnattendedPlan::Stage, true, false),
                (UnattendedPlan::StageAndReboot, true, true),
            ]
        );
    }

    #[test]
    fn immediate_ignores_windows_and_lock() {
        let s = RebootStrategy::Immediate;
        assert_eq!(
            reboot_decision(&s, &sunday_night(), utc(BEFORE), &LockOutcome::NotAsked),
            RebootDecision::Now
        );
        assert_eq!(
            reboot_decision(&s, &sunday_night(), utc(BEFORE), &denied()),
            RebootDecision::Now
        );
        assert!(!needs_lock(&s, &no_windows(), utc(BEFORE)));
    }

    #[test]
    fn periodic_waits_for_the_window() {
        let s = RebootStrategy::Periodic;
        assert_eq!(
            reboot_decision(&s, &sunday_night(), utc(INSIDE), &LockOutcome::NotAsked),
            RebootDecision::Now
        );
        assert_eq!(
            reboot_decision(&s, &sunday_night(), utc(BEFORE), &LockOutcome::NotAsked),
            RebootDecision::Postpone {
                reason: "outside the maintenance windows; the next opens Sun 2026-06-07 02:00 CEST".to_string(),
                until: Some(utc(NEXT_OPENING)),
            }
        );
        assert!(!needs_lock(&s, &sunday_night(), utc(INSIDE)));
    }

    #[test]
    fn periodic_without_windows_never_reboots() {
        assert_eq!(
            reboot_decision(
                &RebootStrategy::Periodic,
                &no_windows(),
                utc(INSIDE),
                &LockOutcome::NotAsked
            ),
            RebootDecision::Postpone {
                reason: "the periodic strategy has no maintenance window".to_string(),
                until: None
            }
        );
    }

    #[test]
    fn fleet_lock_without_windows_needs_only_the_slot() {
        let s = fleet_lock();
        let w = no_windows();
        let now = utc(BEFORE);
        assert!(needs_lock(&s, &w, now));
        assert_eq!(reboot_decision(&s, &w, now, &LockOutcome::Granted), RebootDecision::Now);
        assert_eq!(
            reboot_decision(&s, &w, now, &LockOutcome::NotAsked),
            RebootDecision::Postpone {
                reason: "no reboot slot taken from the lock manager yet".to_string(),
                until: None
            }
        );
        assert_eq!(
            reboot_decision(&s, &w, now, &denied()),
            RebootDecision::Postpone {
                reason: "the lock manager gave no reboot slot: failed_lock_semaphore_full: all slots taken".to_string(),
                until: None,
            }
        );
        let down = LockOutcome::Failed(FleetLockError::Unreachable {
            operation: Operation::PreReboot,
            url: "http://127.0.0.1:8080/v1/pre-reboot".to_string(),
            reason: "connection refused".to_string(),
        });
        assert_eq!(
            reboot_decision(&s, &w, now, &down),
            RebootDecision::Postpone {
                reason: "no reboot slot: lock manager http://127.0.0.1:8080/v1/pre-reboot unreachable for \
                         pre-reboot: connection refused"
                    .to_string(),
                until: None,
            }
        );
    }

    #[test]
    fn fleet_lock_with_windows_needs_both() {
        let s = fleet_lock();
        let w = sunday_night();
        // Outside: the lock is not even asked for, and a granted one does not count.
        assert!(!needs_lock(&s, &w, utc(BEFORE)));
        for lock in [LockOutcome::NotAsked, LockOutcome::Granted, denied()] {
            assert_eq!(
                reboot_decision(&s, &w, utc(BEFORE), &lock),
                RebootDecision::Postpone {
                    reason: "outside the maintenance windows; the next opens Sun 2026-06-07 02:00 CEST".to_string(),
                    until: Some(utc(NEXT_OPENING)),
                }
            );
        }
        // Inside: the lock decides.
        assert!(needs_lock(&s, &w, utc(INSIDE)));
        assert_eq!(
            reboot_decision(&s, &w, utc(INSIDE), &LockOutcome::Granted),
            RebootDecision::Now
        );
        assert!(matches!(
            reboot_decision(&s, &w, utc(INSIDE), &denied()),
            RebootDecision::Postpone { until: None, .. }
        ));
    }
}
