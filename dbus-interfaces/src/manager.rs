//! The shapes of `org.hostd.Host1`'s properties: string-typed values and
//! the `a{sv}` dictionaries of `Deployments`, `CachedUpdate` and `LastJobs`.

use zbus::{DeserializeDict, OwnedObjectPath, SerializeDict, Type};

use crate::host::Transport;
use crate::job::{JobKind, JobStatus};
use crate::wire_enum::wire_enum;

wire_enum! {
    /// `State`: what the daemon is doing.
    #[derive(Default)]
    pub enum ManagerState {
        /// No job runs.
        #[default]
        Idle = "idle",
        /// A `Check` runs.
        Checking = "checking",
        /// An update's layers are fetched.
        Fetching = "fetching",
        /// A deployment is written or queued.
        Staging = "staging",
        /// The boot order is changed to the rollback deployment.
        RollingBack = "rolling-back",
        /// Unused images and objects are pruned.
        Cleaning = "cleaning",
        /// A staged or downloaded update is dropped.
        Discarding = "discarding",
        /// A reboot is asked for.
        Rebooting = "rebooting",
    }
}

wire_enum! {
    /// The `role` of a deployment: where it stands relative to the running system.
    pub enum DeploymentRole {
        /// Queued for the next boot, finalized at shutdown.
        Staged = "staged",
        /// Running now.
        Booted = "booted",
        /// The previous deployment.
        Rollback = "rollback",
        /// Anything else (pinned ones, or every deployment of an offline sysroot).
        Other = "other",
    }
}

wire_enum! {
    /// `AutomaticUpdatePolicy`, and `[updates] policy` in hostd.toml: what
    /// an unattended run does with an update.
    #[derive(Default)]
    pub enum UpdatePolicy {
        /// Nothing.
        #[default]
        None = "none",
        /// Only look.
        Check = "check",
        /// Fetch, keep finalization-locked.
        Download = "download",
        /// Fetch and stage for the next boot.
        Stage = "stage",
        /// Stage and reboot.
        Apply = "apply",
    }
}

wire_enum! {
    /// `UpdateStrategy`, and `[updates] strategy` in hostd.toml: when an
    /// unattended run may reboot.
    pub enum UpdateStrategy {
        /// Whenever nothing inhibits it.
        Immediate = "immediate",
        /// Only inside a maintenance window.
        Periodic = "periodic",
        /// Only with a reboot slot from a FleetLock manager.
        FleetLock = "fleet-lock",
    }
}

/// One entry of `Deployments` (boot order, an `a{sv}`). Optional keys are
/// absent, not empty, when the deployment does not have them.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct DeploymentEntry {
    /// `index` u: position in the boot order.
    pub index: u32,
    /// `role` s
    pub role: DeploymentRole,
    /// `pinned` b: kept through new deployments and cleanups.
    pub pinned: bool,
    /// `download-only` b: fetched, finalization-locked, not for the next boot.
    pub download_only: bool,
    /// `incompatible` b: has local changes an image update cannot carry.
    pub incompatible: bool,
    /// `checksum` s: the ostree commit.
    pub checksum: Option<String>,
    /// `serial` u: the deployment serial of that commit.
    pub serial: Option<u32>,
    /// `stateroot` s
    pub stateroot: Option<String>,
    /// `image` s: the image reference, for image deployments.
    pub image: Option<String>,
    /// `transport` s: how the image is fetched (registry, oci, …).
    pub transport: Option<Transport>,
    /// `digest` s: the image's manifest digest.
    pub digest: Option<String>,
    /// `version` s: the image's version label.
    pub version: Option<String>,
    /// `timestamp` s: the image's build time (RFC 3339).
    pub timestamp: Option<String>,
    /// `labels` a{ss}: the image's description labels by their full names
    /// (`org.opencontainers.image.title`, `description`, `url`, `source`,
    /// `revision`, `version`); absent when none has a usable value.
    pub labels: Option<std::collections::HashMap<String, String>>,
    /// `health` s: the result of the boot health checks on the
    /// deployment's first boot, `passed` or `failed`; absent when never
    /// assessed (docs/health.md).
    pub health: Option<String>,
    /// `health-failures` as: one line per failed check; absent unless failed.
    pub health_failures: Option<Vec<String>>,
}

/// `CachedUpdate` (an `a{sv}`): the image the last check found for the
/// tracked reference when it is not the deployed one; empty when none. An
/// image built before the deployed one is no update: `downgrade` is true.
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct CachedUpdate {
    /// `digest` s: the found image's manifest digest.
    pub digest: Option<String>,
    /// `downgrade` b: present with `digest`; true when the image was built
    /// before the deployed one, which only `allow-downgrade` installs.
    pub downgrade: Option<bool>,
    /// `downloaded` b: already fetched; `Stage` deploys it.
    pub downloaded: Option<bool>,
    /// `version` s
    pub version: Option<String>,
    /// `timestamp` s
    pub timestamp: Option<String>,
    /// `download-bytes` t: bytes still to fetch (from a check since the daemon started).
    pub download_bytes: Option<u64>,
    /// `layers-to-fetch` u
    pub layers_to_fetch: Option<u32>,
    /// `layers-total` u
    pub layers_total: Option<u32>,
    /// `labels` a{ss}: the found image's description labels, as in
    /// `Deployments`.
    pub labels: Option<std::collections::HashMap<String, String>>,
    /// `bound-images` as: with `downloaded` true, the images the fetched
    /// update binds (`/usr/lib/bootc/bound-images.d`), as written; a check
    /// reads no layer, so it is absent until the update is fetched.
    pub bound_images: Option<Vec<String>>,
}

impl CachedUpdate {
    /// An update (not a downgrade) is known and not yet fetched.
    pub fn pending(&self) -> bool {
        self.digest.is_some() && !self.is_downgrade() && !self.downloaded.unwrap_or(false)
    }

    /// The image found is older than the deployed one.
    pub fn is_downgrade(&self) -> bool {
        self.downgrade.unwrap_or(false)
    }

    /// This update with every key it lacks taken from `other`, when both
    /// describe the same image (`digest`); else this one unchanged. Works
    /// on the dictionary's keys, so a key added to the type later is
    /// carried over without being named here.
    pub fn filled_from(self, other: &CachedUpdate) -> CachedUpdate {
        if self.digest.is_none() || self.digest != other.digest {
            return self;
        }
        let (Ok(serde_json::Value::Object(mut mine)), Ok(serde_json::Value::Object(theirs))) =
            (serde_json::to_value(&self), serde_json::to_value(other))
        else {
            return self;
        };
        for (key, value) in theirs {
            mine.entry(key).or_insert(value);
        }
        serde_json::from_value(serde_json::Value::Object(mine)).unwrap_or(self)
    }
}

/// One entry of `LastJobs` (an `a{sv}`): how the last job of a kind ended.
/// Times are µs since the epoch, like `LastCheckTime`.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct LastJob {
    /// `kind` s: check, upgrade, switch, stage, rollback or cleanup.
    pub kind: JobKind,
    /// `result` s: succeeded, failed or cancelled.
    pub result: JobStatus,
    /// `message` s: the job's final `Message`.
    pub message: String,
    /// `error-name` s: `org.hostd.Host1.Error.*` when failed or cancelled, else empty.
    pub error_name: String,
    /// `error-message` s: the error's message when failed or cancelled, else empty.
    pub error_message: String,
    /// `start-time` t: when the job was created.
    pub start_time: u64,
    /// `end-time` t: when it ended.
    pub end_time: u64,
    /// `image` s: the image it fetched or looked at, as a caller writes it; empty for jobs without one.
    pub image: String,
    /// `initiator-uid` u: who asked for it.
    pub initiator_uid: u32,
}

/// The manager's signalled properties as an `a{sv}` dictionary keyed by
/// property name (what its `PropertiesChanged` carries). A field is `None`
/// when the dictionary does not carry it: a `PropertiesChanged` carries
/// only what changed. `NextMaintenanceWindow` moves with the clock and is
/// signalled apart, only when the configured windows change.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub struct ManagerProperties {
    /// `State`
    pub state: Option<ManagerState>,
    /// `ActiveJob`
    pub active_job: Option<OwnedObjectPath>,
    /// `Deployments`
    pub deployments: Option<Vec<DeploymentEntry>>,
    /// `CachedUpdate`
    pub cached_update: Option<CachedUpdate>,
    /// `RebootRequired`
    pub reboot_required: Option<bool>,
    /// `AutomaticUpdatePolicy`
    pub automatic_update_policy: Option<UpdatePolicy>,
    /// `UpdateStrategy`
    pub update_strategy: Option<UpdateStrategy>,
    /// `LastCheckTime`
    pub last_check_time: Option<u64>,
    /// `LastCheckResult`
    pub last_check_result: Option<String>,
    /// `RebootPendingReason`
    pub reboot_pending_reason: Option<String>,
    /// `LastJobs`
    pub last_jobs: Option<Vec<LastJob>>,
}

impl ManagerProperties {
    /// The properties of `new` that differ from `old` (what a
    /// `PropertiesChanged` carries).
    pub fn changes(old: &ManagerProperties, new: &ManagerProperties) -> ManagerProperties {
        macro_rules! diff {
            ($($field:ident),+) => {
                ManagerProperties { $( $field: if old.$field != new.$field { new.$field.clone() } else { None }, )+ }
            };
        }
        diff!(
            state,
            active_job,
            deployments,
            cached_update,
            reboot_required,
            automatic_update_policy,
            update_strategy,
            last_check_time,
            last_check_result,
            reboot_pending_reason,
            last_jobs
        )
    }

    /// Overwrite the fields `newer` carries.
    pub fn merge(&mut self, newer: ManagerProperties) {
        macro_rules! take {
            ($($field:ident),+) => { $( if newer.$field.is_some() { self.$field = newer.$field; } )+ };
        }
        take!(
            state,
            active_job,
            deployments,
            cached_update,
            reboot_required,
            automatic_update_policy,
            update_strategy,
            last_check_time,
            last_check_result,
            reboot_pending_reason,
            last_jobs
        );
    }

    /// Whether the dictionary carries nothing.
    pub fn is_empty(&self) -> bool {
        *self == ManagerProperties::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::wire::{serialized::Context, to_bytes, LE};
    use zbus::OwnedVariant;

    use super::*;

    fn keys<T: serde::Serialize + Type>(value: &T) -> Vec<String> {
        let bytes = to_bytes(Context::new(LE, 0), value).unwrap();
        let dict: HashMap<String, OwnedVariant> = bytes.deserialize().unwrap().0;
        let mut keys: Vec<String> = dict.into_keys().collect();
        keys.sort();
        keys
    }

    #[test]
    fn deployment_keys_are_the_documented_ones() {
        let bare = DeploymentEntry {
            index: 0,
            role: DeploymentRole::Booted,
            pinned: false,
            download_only: false,
            incompatible: false,
            checksum: None,
            serial: None,
            stateroot: None,
            image: None,
            transport: None,
            digest: None,
            version: None,
            timestamp: None,
            labels: None,
            health: None,
            health_failures: None,
        };
        assert_eq!(keys(&bare), ["download-only", "incompatible", "index", "pinned", "role"]);
        let full = DeploymentEntry {
            checksum: Some("c".into()),
            serial: Some(0),
            stateroot: Some("default".into()),
            image: Some("quay.io/os:1".into()),
            transport: Some(Transport::Registry),
            digest: Some("sha256:1".into()),
            version: Some("1".into()),
            timestamp: Some("2026-01-01T00:00:00Z".into()),
            labels: Some([("org.opencontainers.image.url".to_string(), "https://example.org".to_string())].into()),
            health: Some("failed".into()),
            health_failures: Some(vec!["unit a.service: failed (failed)".into()]),
            ..bare
        };
        assert_eq!(
            keys(&full),
            [
                "checksum", "digest", "download-only", "health", "health-failures", "image", "incompatible", "index",
                "labels", "pinned", "role", "serial", "stateroot", "timestamp", "transport", "version"
            ]
        );
        let bytes = to_bytes(Context::new(LE, 0), &full).unwrap();
        let back: DeploymentEntry = bytes.deserialize().unwrap().0;
        assert_eq!(back, full);
        assert_eq!(<Vec<DeploymentEntry> as Type>::SIGNATURE, "aa{sv}");
    }

    #[test]
    fn cached_update_keys_are_the_documented_ones() {
        assert!(keys(&CachedUpdate::default()).is_empty());
        let update = CachedUpdate {
            digest: Some("sha256:2".into()),
            downgrade: Some(false),
            downloaded: Some(false),
            version: Some("2".into()),
            timestamp: None,
            download_bytes: Some(10),
            layers_to_fetch: Some(1),
            layers_total: Some(3),
            labels: None,
            bound_images: None,
        };
        assert_eq!(
            keys(&update),
            ["digest", "downgrade", "download-bytes", "downloaded", "layers-to-fetch", "layers-total", "version"]
        );
        let fetched = CachedUpdate { downloaded: Some(true), bound_images: Some(vec!["quay.io/org/app:1".into()]), ..update.clone() };
        assert!(keys(&fetched).contains(&"bound-images".to_string()));
        assert!(update.pending());
        assert!(!CachedUpdate { downloaded: Some(true), ..update.clone() }.pending());
        let older = CachedUpdate {
            digest: Some("sha256:0".into()),
            downgrade: Some(true),
            version: Some("0".into()),
            ..CachedUpdate::default()
        };
        assert_eq!(keys(&older), ["digest", "downgrade", "version"]);
        assert!(older.is_downgrade() && !older.pending(), "a downgrade is not a pending update");
    }

    #[test]
    fn a_cached_update_takes_missing_keys_only_from_the_same_image() {
        let found = CachedUpdate {
            digest: Some("sha256:2".into()),
            downgrade: Some(false),
            version: Some("2".into()),
            download_bytes: Some(10),
            layers_to_fetch: Some(1),
            layers_total: Some(3),
            ..CachedUpdate::default()
        };
        let now = CachedUpdate {
            digest: Some("sha256:2".into()),
            downgrade: Some(false),
            downloaded: Some(true),
            version: Some("2".into()),
            ..CachedUpdate::default()
        };
        let filled = now.clone().filled_from(&found);
        assert_eq!(filled, CachedUpdate { downloaded: Some(true), ..found.clone() });
        let other = CachedUpdate { digest: Some("sha256:3".into()), ..now.clone() };
        assert_eq!(other.clone().filled_from(&found), other, "another image keeps its own keys only");
        assert_eq!(CachedUpdate::default().filled_from(&found), CachedUpdate::default(), "no update stays none");
    }

    #[test]
    fn last_job_keys_are_the_documented_ones() {
        let job = LastJob {
            kind: JobKind::Upgrade,
            result: JobStatus::Failed,
            message: "m".into(),
            error_name: "org.hostd.Host1.Error.Network".into(),
            error_message: "m".into(),
            start_time: 1,
            end_time: 2,
            image: "quay.io/os:1".into(),
            initiator_uid: 1000,
        };
        assert_eq!(
            keys(&job),
            ["end-time", "error-message", "error-name", "image", "initiator-uid", "kind", "message", "result", "start-time"]
        );
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<LastJob>(&json).unwrap(), job, "the state file keeps it as the bus carries it");
        assert_eq!(<Vec<LastJob> as Type>::SIGNATURE, "aa{sv}");
    }

    #[test]
    fn manager_changes_carry_only_what_changed_under_property_names() {
        let old = ManagerProperties {
            state: Some(ManagerState::Idle),
            last_check_time: Some(1),
            cached_update: Some(CachedUpdate::default()),
            ..ManagerProperties::default()
        };
        let new = ManagerProperties {
            state: Some(ManagerState::Idle),
            last_check_time: Some(2),
            cached_update: Some(CachedUpdate { digest: Some("sha256:2".into()), ..CachedUpdate::default() }),
            ..ManagerProperties::default()
        };
        let change = ManagerProperties::changes(&old, &new);
        assert_eq!(keys(&change), ["CachedUpdate", "LastCheckTime"]);
        let mut seen = old.clone();
        seen.merge(change);
        assert_eq!(seen, new);
        assert!(ManagerProperties::changes(&new, &new).is_empty());
    }

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(ManagerState::RollingBack.as_str(), "rolling-back");
        assert_eq!(UpdateStrategy::FleetLock.to_string(), "fleet-lock");
        assert_eq!("download".parse::<UpdatePolicy>(), Ok(UpdatePolicy::Download));
        assert_eq!(DeploymentRole::ALL.len(), 4);
    }
}
