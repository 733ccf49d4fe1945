//! Journal entries that mark changes to what the host boots, each with a
//! stable `MESSAGE_ID` so admins and tools can find them with
//! `journalctl MESSAGE_ID=…` (the list is in docs/dbus-api.md and the
//! catalog in systemd-units/hostd.catalog).
//!
//! Fields are sent without a prefix (see `logging`), so `old_checksum`
//! arrives as `OLD_CHECKSUM`.

use crate::initiator::Initiator;

/// The kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An update of the tracked image was queued for the next boot (staged,
    /// or written as the default deployment of an offline sysroot).
    Staged,
    /// Another image was queued and is tracked from now on.
    Switched,
    /// The boot order changed to the rollback deployment, or back.
    RolledBack,
    /// Unused images, layers and objects were removed.
    CleanedUp,
    /// A reboot into the queued deployment was requested from logind.
    RebootRequested,
    /// A requested reboot did not happen because something blocks it.
    RebootBlocked,
    /// A writable overlay was mounted on the booted deployment's `/usr`.
    UsrOverlay,
    /// The update waiting for the next boot (staged, or downloaded) was
    /// dropped; the boot order is otherwise unchanged.
    Discarded,
    /// Every health check passed on the first boot of a deployment.
    HealthPassed,
    /// A health check failed on the first boot of a deployment.
    HealthFailed,
}

impl Event {
    /// The `MESSAGE_ID`.
    pub fn message_id(self) -> &'static str {
        match self {
            Event::Staged => "f9d50aaef31b4f90a550b665af736046",
            Event::Switched => "31ae56d88a0743f5834f350e328db55b",
            Event::RolledBack => "c17cdb11fce8408f86e7049afe2004f9",
            Event::CleanedUp => "132306e3ef0f4bcf90db4b19e9c23866",
            Event::RebootRequested => "7750f9b2947848bdb17bf0f817cb781c",
            Event::RebootBlocked => "cc99a0dfb0c0420f986aa32459afc800",
            Event::UsrOverlay => "19e66f27e05443f3b0d78aadc0652db8",
            Event::Discarded => "cfe5c337e1f64166b1c8e704016af609",
            Event::HealthPassed => "8d3c2f0e5b7a4e61a2f4c9d7b1e03a55",
            Event::HealthFailed => "e4b19a7c60d24f3e9c58a1f2d7360b9e",
        }
    }
}

/// What changed, as a sysroot operation reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The kind of entry to write.
    pub event: Event,
    /// The commit that was the default before.
    pub old_checksum: Option<String>,
    /// The commit that is the default (or staged) now.
    pub new_checksum: Option<String>,
    /// The image reference of the new deployment.
    pub image: Option<String>,
}

impl Change {
    /// A change with no checksums (cleanup).
    pub fn event(event: Event) -> Change {
        Change { event, old_checksum: None, new_checksum: None, image: None }
    }
}

/// Write one entry; `message` is the human-readable `MESSAGE`.
pub fn record(change: &Change, initiator: &Initiator, job: u64, message: &str) {
    record_with_warnings(change, initiator, job, message, &[]);
}

/// Write one entry with the job's warnings (the `WARNING` field, one line
/// each; left out when there are none), e.g. image content that was not
/// deployed.
pub fn record_with_warnings(change: &Change, initiator: &Initiator, job: u64, message: &str, warnings: &[String]) {
    let warning = (!warnings.is_empty()).then(|| warnings.join("\n"));
    tracing::info!(
        message_id = change.event.message_id(),
        old_checksum = change.old_checksum.as_deref(),
        new_checksum = change.new_checksum.as_deref(),
        image = change.image.as_deref(),
        initiator_uid = initiator.uid,
        initiator_unit = initiator.unit.as_deref(),
        job,
        warning = warning.as_deref(),
        "{message}"
    );
}

/// The entry for a `/usr` overlay mounted on the booted deployment
/// `checksum` (`PERSISTENCE` transient or persistent). Not a job's: no
/// `JOB` field.
pub fn record_usr_overlay(checksum: Option<&str>, persistence: &str, initiator: &Initiator) {
    tracing::info!(
        message_id = Event::UsrOverlay.message_id(),
        new_checksum = checksum,
        persistence,
        initiator_uid = initiator.uid,
        initiator_unit = initiator.unit.as_deref(),
        "a writable {persistence} overlay was mounted on /usr"
    );
}

/// The outcome of the health checks on the first boot of deployment
/// `checksum` (image `digest`): `failures` one line each (the `FAILURES`
/// field, left out when passed), `action` what hostd does about it
/// (`ACTION`: rolled-back, rollback-failed, reported).
pub fn record_health(checksum: &str, digest: Option<&str>, failures: &[String], action: Option<&str>, message: &str) {
    let event = if failures.is_empty() { Event::HealthPassed } else { Event::HealthFailed };
    let failures = (!failures.is_empty()).then(|| failures.join("\n"));
    tracing::info!(
        message_id = event.message_id(),
        new_checksum = checksum,
        image_digest = digest,
        failures = failures.as_deref(),
        action,
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let all = [
            Event::Staged,
            Event::Switched,
            Event::RolledBack,
            Event::CleanedUp,
            Event::RebootRequested,
            Event::RebootBlocked,
            Event::UsrOverlay,
            Event::Discarded,
            Event::HealthPassed,
            Event::HealthFailed,
        ];
        let ids: std::collections::BTreeSet<_> = all.iter().map(|e| e.message_id()).collect();
        assert_eq!(ids.len(), all.len());
        for id in ids {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        }
    }
}
