//! The Host document returned by `Status`: field-compatible with bootc's
//! `org.containers.bootc/v1` schema, so tools that read `bootc status --json`
//! read ours.
//!
//! On an offline sysroot (not booted) there is no booted, staged or rollback
//! entry: every deployment is listed in `status.otherDeployments` in boot order,
//! the first being the one the bootloader would pick.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

/// `apiVersion` of the document.
pub const API_VERSION: &str = "org.containers.bootc/v1";
/// `kind` of the document.
pub const KIND: &str = "BootcHost";

/// The whole Host document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Object metadata; `name` is `host`.
    pub metadata: ObjectMeta,
    /// What the host is configured to run.
    pub spec: HostSpec,
    /// What the host runs and has queued.
    pub status: HostStatus,
}

/// Object metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Always `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The desired state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// The image the host tracks for updates.
    pub image: Option<ImageReference>,
    /// Which deployment boots next.
    #[serde(default)]
    pub boot_order: BootOrder,
}

/// Which deployment boots next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BootOrder {
    /// The staged or booted deployment.
    #[default]
    Default,
    /// The rollback deployment.
    Rollback,
}

wire_enum! {
    /// How an image is reached (the `transport` option, the Host document's
    /// `transport` field).
    pub enum Transport {
        /// A container registry (`docker://`).
        Registry = "registry",
        /// An OCI image layout directory.
        Oci = "oci",
        /// A tar archive of an OCI image layout.
        OciArchive = "oci-archive",
        /// Local containers-storage (podman).
        ContainersStorage = "containers-storage",
        /// A directory written by `skopeo copy dir:`.
        Dir = "dir",
        /// A `docker save` tar archive, what `podman save` writes by default.
        DockerArchive = "docker-archive",
    }
}

impl Transport {
    /// Parse an API transport name.
    pub fn parse(s: &str) -> Option<Transport> {
        s.parse().ok()
    }

    /// Whether the image name is a path on the local filesystem.
    pub fn reads_local_path(self) -> bool {
        matches!(self, Transport::Oci | Transport::OciArchive | Transport::Dir | Transport::DockerArchive)
    }
}

/// How the image signature is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageSignature {
    /// Verified against the named ostree remote.
    OstreeRemote(String),
    /// Verified by the host's containers `policy.json`.
    ContainerPolicy,
    /// Not verified.
    Insecure,
}

/// An image with its transport and signature policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    /// The image name, e.g. `quay.io/example/os:latest` or `/srv/images/os`.
    pub image: String,
    /// How the image is reached.
    pub transport: Transport,
    /// How the image is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ImageSignature>,
}

/// What is known about one fetched image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The image reference.
    pub image: ImageReference,
    /// The version (labels `org.opencontainers.image.version`, `version`,
    /// then the manifest annotation; trimmed), `None` when unknown, never
    /// empty. Rules: docs/dbus-api.md, "Image metadata".
    pub version: Option<String>,
    /// The build time (annotation `org.opencontainers.image.created`, then
    /// the config's `created`), RFC 3339 in UTC; `None` when unknown or malformed.
    pub timestamp: Option<String>,
    /// The manifest digest, `sha256:…`.
    pub image_digest: String,
    /// The image architecture, e.g. `amd64`.
    pub architecture: String,
    /// hostd's extension of bootc's schema: the image's description
    /// labels (`org.opencontainers.image.title`, `description`, `url`,
    /// `source`, `revision`, `version`) that have a usable value, by their
    /// full names; absent when none has. Rules: docs/dbus-api.md, "Image
    /// metadata".
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The ostree side of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootEntryOstree {
    /// The stateroot (`/ostree/deploy/<stateroot>`).
    pub stateroot: String,
    /// The deployed ostree commit.
    pub checksum: String,
    /// Distinguishes deployments of the same commit.
    pub deploy_serial: u32,
}

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootEntry {
    /// The image this deployment was made from; `None` for a plain ostree commit.
    pub image: Option<ImageStatus>,
    /// Metadata of a newer version of this image fetched by `Check`.
    pub cached_update: Option<ImageStatus>,
    /// The origin carries settings hostd does not understand (e.g. layered packages).
    pub incompatible: bool,
    /// Protected from garbage collection.
    pub pinned: bool,
    /// Staged but locked: a plain reboot does not apply it.
    #[serde(default)]
    pub download_only: bool,
    /// The ostree deployment.
    pub ostree: Option<BootEntryOstree>,
    /// hostd's extension (`boundImages`, left out when empty): the
    /// application images the deployment's image binds through
    /// `/usr/lib/bootc/bound-images.d`, in the order of their files. They
    /// are pulled into the bound-image store (`/usr/lib/bootc/storage`)
    /// before the deployment is written and kept while it exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_images: Vec<BoundImage>,
    /// hostd's extension of bootc's schema: the boot health assessment of
    /// this deployment's first boot; absent when it was never assessed.
    /// Rules: docs/health.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<DeploymentHealth>,
}

/// An application image bound to a deployment's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundImage {
    /// The image as its file's `Image=` names it, e.g. `quay.io/org/app:1`.
    pub image: String,
    /// The entry of `/usr/lib/bootc/bound-images.d` that binds it, e.g. `app.image`.
    pub file: String,
}

/// The outcome of the health checks on a deployment's first boot
/// (docs/health.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentHealth {
    /// Whether every check passed.
    pub result: HealthResult,
    /// When the assessment ended, RFC 3339 in UTC.
    pub checked_at: String,
    /// One line per failed check (`unit foo.service: failed`, `check
    /// /etc/hostd/health.d/10-net: exit status 1`); empty when passed.
    #[serde(default)]
    pub failures: Vec<String>,
    /// What hostd did about a failure: `rolled-back` (the rollback
    /// deployment was made the default and the host rebooted into it),
    /// `rolling-back` (under way; a boot that finds it finishes it),
    /// `rollback-failed` (the last failure line says why) or `reported`
    /// (`[health] on_failure = "report"`, no rollback deployment, or one
    /// that failed its own checks); absent when passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

wire_enum! {
    /// The result of a boot health assessment.
    pub enum HealthResult {
        /// Every check passed within its limits.
        Passed = "passed",
        /// A check failed, or did not finish within its limit.
        Failed = "failed",
    }
}

/// Detected type of host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostType {
    /// Booted from a container image deployed by ostree.
    BootcHost,
}

/// The observed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The deployment queued for the next boot.
    pub staged: Option<BootEntry>,
    /// The running deployment; `None` on an offline sysroot.
    pub booted: Option<BootEntry>,
    /// The previous deployment.
    pub rollback: Option<BootEntry>,
    /// Further deployments (pinned ones, or all of an offline sysroot in boot order).
    #[serde(default)]
    pub other_deployments: Vec<BootEntry>,
    /// The rollback deployment is set to boot next.
    #[serde(default)]
    pub rollback_queued: bool,
    /// The kind of host; `None` when not booted from an image.
    #[serde(rename = "type")]
    pub ty: Option<HostType>,
    /// The overlay on the booted deployment's `/usr` (`UsrOverlay`);
    /// `None` when `/usr` is the image's, read-only.
    #[serde(default)]
    pub usr_overlay: Option<FilesystemOverlay>,
}

/// An overlay on `/usr`, as bootc describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemOverlay {
    /// Whether the overlay is writable.
    pub access_mode: FilesystemOverlayAccessMode,
    /// Whether it survives a reboot.
    pub persistence: FilesystemOverlayPersistence,
}

wire_enum! {
    /// Whether a `/usr` overlay is mounted read-only or writable.
    pub enum FilesystemOverlayAccessMode {
        /// Mounted read-only (libostree's "transient" unlock).
        ReadOnly = "readOnly",
        /// Mounted writable.
        ReadWrite = "readWrite",
    }
}

wire_enum! {
    /// Whether a `/usr` overlay survives a reboot.
    pub enum FilesystemOverlayPersistence {
        /// Discarded at the next reboot.
        Transient = "transient",
        /// Mounted again at every boot of the deployment (a hotfix).
        Persistent = "persistent",
    }
}

impl Host {
    /// A document with the fixed header fields filled in.
    pub fn new(spec: HostSpec, status: HostStatus) -> Host {
        Host {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: ObjectMeta {
                name: Some("host".to_string()),
            },
            spec,
            status,
        }
    }

    /// The document filtered to the booted deployment, as `bootc status
    /// --booted` filters it: `staged`, `rollback` and `otherDeployments`
    /// emptied, the rest kept. On an offline sysroot nothing is booted, so
    /// no deployment is left: no other deployment stands in for the booted
    /// one (readers tell a booted image-based host by `status.booted`).
    pub fn filtered_to_booted(&self) -> Host {
        let mut host = self.clone();
        host.status.staged = None;
        host.status.rollback = None;
        host.status.other_deployments.clear();
        host
    }

    /// Deployments in boot order: staged (if any), then what boots by default, then the rest.
    pub fn entries(&self) -> impl Iterator<Item = &BootEntry> {
        let s = &self.status;
        let (first, second) = if s.rollback_queued {
            (&s.rollback, &s.booted)
        } else {
            (&s.booted, &s.rollback)
        };
        s.staged
            .iter()
            .chain(first.iter())
            .chain(second.iter())
            .chain(s.other_deployments.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_bootc_field_names() {
        let entry = BootEntry {
            image: Some(ImageStatus {
                image: ImageReference {
                    image: "quay.io/example/os:latest".into(),
                    transport: Transport::Registry,
                    signature: Some(ImageSignature::Insecure),
                },
                version: Some("1".into()),
                timestamp: None,
                image_digest: "sha256:00".into(),
                architecture: "amd64".into(),
                labels: Default::default(),
            }),
            cached_update: None,
            incompatible: false,
            pinned: true,
            download_only: false,
            ostree: Some(BootEntryOstree {
                stateroot: "default".into(),
                checksum: "abc".into(),
                deploy_serial: 0,
            }),
            health: None,
            bound_images: vec![BoundImage { image: "quay.io/org/app:1".into(), file: "app.image".into() }],
        };
        let host = Host::new(
            HostSpec::default(),
            HostStatus {
                booted: Some(entry),
                ty: Some(HostType::BootcHost),
                ..Default::default()
            },
        );
        let v = serde_json::to_value(&host).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["spec"]["bootOrder"], "default");
        assert_eq!(v["status"]["type"], "bootcHost");
        let booted = &v["status"]["booted"];
        assert_eq!(booted["image"]["imageDigest"], "sha256:00");
        assert_eq!(booted["image"]["image"]["signature"], "insecure");
        assert_eq!(booted["ostree"]["deploySerial"], 0);
        assert_eq!(booted["downloadOnly"], false);
        assert_eq!(booted["boundImages"][0]["image"], "quay.io/org/app:1");
        assert_eq!(booted["boundImages"][0]["file"], "app.image");
        let back: Host = serde_json::from_value(v).unwrap();
        assert_eq!(back, host);
    }

    #[test]
    fn filtered_to_booted_keeps_only_the_booted_entry() {
        let entry = |checksum: &str| BootEntry {
            image: None,
            cached_update: None,
            incompatible: false,
            pinned: false,
            download_only: false,
            ostree: Some(BootEntryOstree { stateroot: "default".into(), checksum: checksum.into(), deploy_serial: 0 }),
            health: None,
            bound_images: Vec::new(),
        };
        let spec = HostSpec { image: None, boot_order: BootOrder::Rollback };
        let booted = Host::new(
            spec.clone(),
            HostStatus {
                staged: Some(entry("s")),
                booted: Some(entry("b")),
                rollback: Some(entry("r")),
                other_deployments: vec![entry("o")],
                rollback_queued: true,
                ty: Some(HostType::BootcHost),
                usr_overlay: None,
            },
        );
        let filtered = booted.filtered_to_booted();
        let checksums: Vec<_> = filtered.entries().map(|e| e.ostree.as_ref().unwrap().checksum.clone()).collect();
        assert_eq!(checksums, ["b"]);
        assert_eq!(filtered.spec, spec);
        assert_eq!(filtered.status.ty, Some(HostType::BootcHost));
        assert!(filtered.status.rollback_queued);
        // Offline: nothing is booted, so nothing is left.
        let offline = Host::new(
            spec,
            HostStatus { other_deployments: vec![entry("a"), entry("b")], ..Default::default() },
        );
        let filtered = offline.filtered_to_booted();
        assert_eq!(filtered.entries().count(), 0);
        assert!(filtered.status.booted.is_none());
    }

    #[test]
    fn ostree_remote_signature_is_an_object() {
        let v = serde_json::to_value(ImageSignature::OstreeRemote("fedora".into())).unwrap();
        assert_eq!(v, serde_json::json!({"ostreeRemote": "fedora"}));
    }

    #[test]
    fn transport_names_round_trip() {
        for &t in Transport::ALL {
            assert_eq!(Transport::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(Transport::parse("docker"), None);
    }
}
