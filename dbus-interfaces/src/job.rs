//! The shapes of `org.hostd.Host1.Job`: its string-typed values and its
//! properties as one `a{sv}` dictionary (what `GetAll` and
//! `PropertiesChanged` carry).

use serde::{Deserialize, Serialize};
use zbus::{DeserializeDict, SerializeDict, Type};

use crate::options::Method;
use crate::wire_enum::wire_enum;

wire_enum! {
    /// `Kind`, and the `kind` of `JobNew`: what a job does.
    pub enum JobKind {
        /// Metadata-only look for an update.
        Check = "check",
        /// Fetch and queue the tracked image.
        Upgrade = "upgrade",
        /// Fetch and queue another image.
        Switch = "switch",
        /// Queue a downloaded update.
        Stage = "stage",
        /// Make the rollback deployment the default.
        Rollback = "rollback",
        /// Prune unreferenced images and objects.
        Cleanup = "cleanup",
        /// Drop a staged or downloaded update.
        Discard = "discard",
    }
}

impl JobKind {
    /// The method whose options this kind takes.
    pub fn method(self) -> Method {
        match self {
            JobKind::Check => Method::Check,
            JobKind::Upgrade => Method::Upgrade,
            JobKind::Switch => Method::Switch,
            JobKind::Stage => Method::Stage,
            JobKind::Rollback => Method::Rollback,
            JobKind::Cleanup => Method::Cleanup,
            JobKind::Discard => Method::Discard,
        }
    }
}

wire_enum! {
    /// `State`, and the `result` of `JobRemoved`.
    pub enum JobStatus {
        /// Working.
        Running = "running",
        /// Done, with its result in `Message`.
        Succeeded = "succeeded",
        /// Ended with an error in `ErrorName`/`ErrorMessage`.
        Failed = "failed",
        /// Stopped by `Cancel()` or the time limit.
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// Whether a job in this state has ended.
    pub fn is_final(self) -> bool {
        self != JobStatus::Running
    }
}

wire_enum! {
    /// `Phase`: the phases a job goes through, in order (a job may skip some).
    #[derive(PartialOrd, Ord)]
    pub enum Phase {
        /// Fetching manifest and config.
        Checking = "checking",
        /// Fetching layers.
        Pulling = "pulling",
        /// Writing the merged commit.
        Importing = "importing",
        /// Pulling the application images the new image binds
        /// (`/usr/lib/bootc/bound-images.d`) into the bound-image store;
        /// `LayersDone`/`LayersTotal` count images.
        BoundImages = "bound-images",
        /// Writing or queuing the deployment.
        Staging = "staging",
        /// Pruning.
        Cleanup = "cleanup",
        /// Asking for the reboot.
        Rebooting = "rebooting",
    }
}

wire_enum! {
    /// What a layer of an image is, as ostree-ext imports it.
    pub enum LayerKind {
        /// The image's ostree commit, or one of its content chunks.
        Chunk = "chunk",
        /// A layer derived images add on top (a plain tar layer).
        Derived = "derived",
    }
}

/// One layer of the image a job fetches (`Layers`, D-Bus type `(sstb)`),
/// in the order the job fetches them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Layer {
    /// The layer's digest (`sha256:…`).
    pub digest: String,
    /// What the layer is.
    pub kind: LayerKind,
    /// Its size in bytes (compressed, as fetched).
    pub size: u64,
    /// Already in the repository: not fetched again.
    pub cached: bool,
}

/// The job's properties as an `a{sv}` dictionary keyed by property name.
/// A field is `None` when the dictionary does not carry it: a
/// `PropertiesChanged` carries only what changed.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub struct JobProperties {
    /// `Id`
    pub id: Option<u64>,
    /// `Kind`
    pub kind: Option<JobKind>,
    /// `State`
    pub state: Option<JobStatus>,
    /// `Phase`
    pub phase: Option<Phase>,
    /// `BytesDone`: bytes fetched so far.
    pub bytes_done: Option<u64>,
    /// `BytesTotal`: bytes to fetch in all.
    pub bytes_total: Option<u64>,
    /// `LayersDone`: layers fetched so far.
    pub layers_done: Option<u32>,
    /// `LayersTotal`: layers to fetch in all.
    pub layers_total: Option<u32>,
    /// `Progress`: 0..1.
    pub progress: Option<f64>,
    /// `Image`: the image reference the job fetches or looks at, as a
    /// caller writes it; empty until known and for jobs without one.
    pub image: Option<String>,
    /// `Layers`: every layer of that image, cached or to fetch, in the
    /// order they are fetched; empty until the job knows them.
    pub layers: Option<Vec<Layer>>,
    /// `Message`: what the job is doing, or its result.
    pub message: Option<String>,
    /// `ErrorName`: `org.hostd.Host1.Error.*` when failed or cancelled, else empty.
    pub error_name: Option<String>,
    /// `ErrorMessage`: the error message when failed or cancelled, else empty.
    pub error_message: Option<String>,
    /// `Warnings`: what the user must know about the result although the
    /// job goes on (e.g. image content the host does not deploy), in the
    /// order they came up; empty when none.
    pub warnings: Option<Vec<String>>,
    /// `StartTime`: when the job was created, µs since the epoch.
    pub start_time: Option<u64>,
    /// `BytesPerSecond`: the recent fetching rate; 0 while unknown (not
    /// fetching, or too early to tell).
    pub bytes_per_second: Option<u64>,
    /// `SecondsLeft`: estimated time until the fetch is done;
    /// [`SECONDS_LEFT_UNKNOWN`] while no estimate exists, 0 once the job has ended.
    pub seconds_left: Option<u64>,
}

/// `SecondsLeft` while there is no estimate: `u64::MAX` (`UINT64_MAX`, what
/// systemd uses for "unset" times).
pub const SECONDS_LEFT_UNKNOWN: u64 = u64::MAX;

impl JobProperties {
    /// Overwrite the fields `newer` carries.
    pub fn merge(&mut self, newer: JobProperties) {
        macro_rules! take {
            ($($field:ident),+) => { $( if newer.$field.is_some() { self.$field = newer.$field; } )+ };
        }
        take!(id, kind, state, phase, bytes_done, bytes_total, layers_done, layers_total, progress, image, layers, message, error_name, error_message, warnings, start_time, bytes_per_second, seconds_left);
    }

    /// The properties of `new` that differ from `old` (what a
    /// `PropertiesChanged` carries).
    pub fn changes(old: &JobProperties, new: &JobProperties) -> JobProperties {
        macro_rules! diff {
            ($($field:ident),+) => {
                JobProperties { $( $field: if old.$field != new.$field { new.$field.clone() } else { None }, )+ }
            };
        }
        diff!(id, kind, state, phase, bytes_done, bytes_total, layers_done, layers_total, progress, image, layers, message, error_name, error_message, warnings, start_time, bytes_per_second, seconds_left)
    }

    /// Whether the dictionary carries nothing.
    pub fn is_empty(&self) -> bool {
        *self == JobProperties::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::wire::{serialized::Context, to_bytes, LE};
    use zbus::OwnedVariant;

    use super::*;

    fn keys(props: &JobProperties) -> Vec<String> {
        let bytes = to_bytes(Context::new(LE, 0), props).unwrap();
        let dict: HashMap<String, OwnedVariant> = bytes.deserialize().unwrap().0;
        let mut keys: Vec<String> = dict.into_keys().collect();
        keys.sort();
        keys
    }

    #[test]
    fn properties_travel_under_their_interface_names() {
        let all = JobProperties {
            id: Some(1),
            kind: Some(JobKind::Switch),
            state: Some(JobStatus::Running),
            phase: Some(Phase::Pulling),
            bytes_done: Some(1),
            bytes_total: Some(2),
            layers_done: Some(1),
            layers_total: Some(2),
            progress: Some(0.5),
            image: Some("quay.io/os:latest".into()),
            layers: Some(vec![Layer { digest: "sha256:00".into(), kind: LayerKind::Derived, size: 7, cached: true }]),
            message: Some("m".into()),
            error_name: Some(String::new()),
            error_message: Some(String::new()),
            warnings: Some(vec!["w".into()]),
            start_time: Some(1),
            bytes_per_second: Some(2),
            seconds_left: Some(SECONDS_LEFT_UNKNOWN),
        };
        assert_eq!(
            keys(&all),
            [
                "BytesDone", "BytesPerSecond", "BytesTotal", "ErrorMessage", "ErrorName", "Id", "Image", "Kind", "Layers",
                "LayersDone", "LayersTotal", "Message", "Phase", "Progress", "SecondsLeft", "StartTime", "State", "Warnings"
            ]
        );
        let bytes = to_bytes(Context::new(LE, 0), &all).unwrap();
        let back: JobProperties = bytes.deserialize().unwrap().0;
        assert_eq!(back, all);
    }

    #[test]
    fn a_change_carries_only_what_changed() {
        let old = JobProperties { state: Some(JobStatus::Running), phase: Some(Phase::Pulling), ..Default::default() };
        let new = JobProperties { state: Some(JobStatus::Running), phase: Some(Phase::Staging), ..Default::default() };
        let change = JobProperties::changes(&old, &new);
        assert_eq!(keys(&change), ["Phase"]);
        let mut seen = old.clone();
        seen.merge(change);
        assert_eq!(seen, new);
        assert!(JobProperties::changes(&new, &new).is_empty());
    }

    #[test]
    fn wire_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(*phase));
        }
        assert_eq!(JobStatus::Cancelled.to_string(), "cancelled");
        assert!("nope".parse::<JobKind>().is_err());
        assert!(Phase::Checking < Phase::Rebooting, "phases are ordered as a job passes them");
        assert_eq!(<JobKind as Type>::SIGNATURE, "s");
        assert_eq!(<Layer as Type>::SIGNATURE, "(sstb)");
    }
}
