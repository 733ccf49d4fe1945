//! Reading the sysroot into a [`Snapshot`]: the Host document plus the facts
//! the bus properties and the jobs need. Runs on a blocking thread and never
//! takes the sysroot lock, so a running job or another tool holding the lock
//! does not delay it.

use std::path::Path;

use anyhow::{Context, Result};
use hostd_interface::host::{
    BootEntry, BootEntryOstree, BootOrder, FilesystemOverlay, Host, HostSpec, HostStatus, HostType, ImageReference,
    ImageStatus,
};
use ostree_ext::container::deploy::ORIGIN_CONTAINER;
use ostree_ext::container::store;
use ostree_ext::{gio, ostree};

use super::deploy::STAGED_LOCK_FILE;
use super::image::{layered_status, parse_origin_reference, reference_to_api};
use super::update_rule::{self, Verdict};
use super::usr_overlay;
use super::Error;


/// Where a deployment stands relative to the running system (the `role` of a `Deployments` entry).
pub use hostd_interface::manager::DeploymentRole as Role;

/// One deployment, as the jobs and the `Deployments` property see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Position in the boot order (0 boots next unless a staged one exists).
    pub index: usize,
    /// Where it stands relative to the running system.
    pub role: Role,
    /// The Host document entry.
    pub entry: BootEntry,
    /// The reference string stored in the origin, if the deployment came from an image.
    pub origin_reference: Option<String>,
    /// An image a check found for the tracked reference that is older than
    /// this one (a downgrade, [`update_rule`]); kept out of the Host
    /// document, whose `cachedUpdate` names updates only. Only on the
    /// deployment updates build on.
    pub cached_downgrade: Option<ImageStatus>,
}

impl Deployment {
    /// The ostree commit.
    pub fn checksum(&self) -> &str {
        self.entry.ostree.as_ref().map(|o| o.checksum.as_str()).unwrap_or_default()
    }
}

/// Everything `Status` and the properties serve, computed in one pass.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The Host document.
    pub host: Host,
    /// The document serialized once, so `Status` only copies a string.
    pub json: String,
    /// Deployments in boot order.
    pub deployments: Vec<Deployment>,
    /// A reboot would change what runs (staged deployment or queued rollback).
    pub reboot_required: bool,
    /// Whether the sysroot is the running system.
    pub booted: bool,
    /// With nothing staged: manifest digest of a pulled image of the tracked
    /// reference that the merge deployment does not run.
    pub downloaded_update: Option<String>,
    /// The images that downloaded update binds (`bound-images.d` of its
    /// commit), as written; empty without one.
    pub downloaded_bound_images: Vec<String>,
}

impl Snapshot {
    /// The deployment the next update builds on: the booted one, or the
    /// default of an offline sysroot.
    pub fn merge_deployment(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.role == Role::Booted)
            .or_else(|| (!self.booted).then(|| self.deployments.first()).flatten())
    }

    /// The staged deployment, if any.
    pub fn staged(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.role == Role::Staged)
    }

    /// A fetched update waits to be queued by `Stage`: a download-only staged
    /// deployment on a booted host, a pulled but undeployed image offline.
    pub fn has_downloaded_update(&self) -> bool {
        self.staged().is_some_and(|d| d.entry.download_only) || self.downloaded_update.is_some()
    }

    /// The update `Check` found for the tracked image.
    pub fn cached_update(&self) -> Option<&ImageStatus> {
        self.merge_deployment().and_then(|d| d.entry.cached_update.as_ref())
    }

    /// Whether a deployment runs or is queued to run the image of `digest`
    /// (a download-only one is not: it waits for `Stage`).
    pub fn has_deployed(&self, digest: &str) -> bool {
        self.deployments.iter().any(|d| {
            !d.entry.download_only && d.entry.image.as_ref().is_some_and(|i| i.image_digest == digest)
        })
    }

    /// The older image `Check` found for the tracked image (not an update).
    pub fn cached_downgrade(&self) -> Option<&ImageStatus> {
        self.merge_deployment().and_then(|d| d.cached_downgrade.as_ref())
    }
}

/// Check that `path` looks like an ostree sysroot before libostree is asked.
pub fn ensure_image_based(path: &Path) -> Result<(), Error> {
    for sub in ["ostree/repo", "ostree/deploy"] {
        if !path.join(sub).is_dir() {
            return Err(Error::NotImageBased(format!(
                "{} is not an ostree sysroot (no {sub})",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Read the sysroot at `path` without locking it; on a booted host, with
/// the boot health record kept in `state_dir`.
pub fn load(path: &Path, state_dir: &Path) -> Result<Snapshot, Error> {
    ensure_image_based(path)?;
    Ok(read_snapshot(path, state_dir).context("reading the sysroot")?)
}

fn read_snapshot(path: &Path, state_dir: &Path) -> Result<Snapshot> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot.load(gio::Cancellable::NONE).context("loading sysroot")?;
    let repo = sysroot.repo();
    let booted = sysroot.booted_deployment();
    let staged = sysroot.staged_deployment();
    let rollback = booted.as_ref().and_then(|b| rollback_deployment(&sysroot, b, staged.as_ref()));
    let staged_locked = staged.is_some() && Path::new(STAGED_LOCK_FILE).exists();

    let mut deployments = Vec::new();
    for (index, d) in sysroot.deployments().into_iter().enumerate() {
        let role = if staged.as_ref().is_some_and(|s| s.equal(&d)) {
            Role::Staged
        } else if booted.as_ref().is_some_and(|b| b.equal(&d)) {
            Role::Booted
        } else if rollback.as_ref().is_some_and(|r| r.equal(&d)) {
            Role::Rollback
        } else {
            Role::Other
        };
        let origin_reference = d
            .origin()
            .and_then(|o| o.string("origin", ORIGIN_CONTAINER).ok())
            .map(|s| s.to_string());
        let (mut entry, mut cached_downgrade) = boot_entry(&repo, &d, origin_reference.as_deref())?;
        entry.download_only = role == Role::Staged && staged_locked;
        // ostree-ext caches a fetched manifest on whichever commit the image
        // pointed to before; only the deployment updates build on has an update.
        let is_merge = role == Role::Booted || (booted.is_none() && index == 0);
        if !is_merge {
            entry.cached_update = None;
            cached_downgrade = None;
        }
        deployments.push(Deployment {
            index,
            role,
            entry,
            origin_reference,
            cached_downgrade,
        });
    }
    if booted.is_some() {
        add_health(&mut deployments, state_dir);
    }
    let usr_overlay = booted.as_ref().and_then(|b| usr_overlay::overlay_of(b.unlocked()));
    let mut snapshot = assemble(deployments, booted.is_some(), usr_overlay);
    // A staged deployment is the update already; with none, a fetched image
    // may wait (offline download-only, or a locked one a reboot dropped).
    if snapshot.staged().is_none() {
        if let Some((digest, commit)) = downloaded_update(&repo, &snapshot) {
            snapshot.downloaded_update = Some(digest);
            snapshot.downloaded_bound_images = match super::bound_images::of_commit(&repo, &commit) {
                Ok(Ok(images)) => images.into_iter().map(|i| i.image).collect(),
                _ => Vec::new(),
            };
        }
    }
    Ok(snapshot)
}

/// Each deployment's boot health assessment from the record in `dir`; an
/// unreadable record is logged and shows no assessment.
fn add_health(deployments: &mut [Deployment], dir: &Path) {
    let record = match crate::health::record::HealthRecord::load(dir) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!("boot health record: {e:#}");
            return;
        }
    };
    for d in deployments {
        let checksum = d.entry.ostree.as_ref().map(|o| o.checksum.as_str());
        d.entry.health = checksum.and_then(|c| record.deployments.get(c)).cloned();
    }
}

/// The deployment a rollback boots. libostree calls a finalized deployment
/// ordered before the booted one "pending": that is what `Rollback` puts
/// there (a queued rollback). Otherwise it is the one after the booted one.
fn rollback_deployment(
    sysroot: &ostree::Sysroot,
    booted: &ostree::Deployment,
    staged: Option<&ostree::Deployment>,
) -> Option<ostree::Deployment> {
    let (pending, after_booted) = sysroot.query_deployments_for(Some(&booted.osname()));
    pending.filter(|p| staged.is_none_or(|s| !s.equal(p))).or(after_booted)
}

/// The digest and merged commit of the tracked image in the repo, when it
/// is not the default deployment.
fn downloaded_update(repo: &ostree::Repo, snapshot: &Snapshot) -> Option<(String, String)> {
    let merge = snapshot.merge_deployment()?;
    let reference = parse_origin_reference(merge.origin_reference.as_deref()?).ok()?;
    let state = store::query_image(repo, &reference.imgref).ok()??;
    (state.merge_commit != merge.checksum()).then(|| (state.manifest_digest.to_string(), state.merge_commit.clone()))
}

/// The Host document entry of `d`, and the downgrade cached on it (see
/// [`judge_cached`]).
fn boot_entry(
    repo: &ostree::Repo,
    d: &ostree::Deployment,
    origin_reference: Option<&str>,
) -> Result<(BootEntry, Option<ImageStatus>)> {
    let checksum = d.csum().to_string();
    let (image, cached_update, cached_downgrade) = match origin_reference {
        Some(r) => {
            let reference = parse_origin_reference(r).and_then(|r| reference_to_api(&r))?;
            let state = store::query_image_commit(repo, &checksum)
                .with_context(|| format!("reading image metadata of {checksum}"))?;
            let (image, cached) = layered_status(&reference, &state);
            let (update, downgrade) = judge_cached(&state, cached);
            (Some(image), update, downgrade)
        }
        None => (None, None, None),
    };
    let entry = BootEntry {
        image,
        cached_update,
        incompatible: origin_is_incompatible(d),
        pinned: d.is_pinned(),
        download_only: false,
        ostree: Some(BootEntryOstree {
            stateroot: d.osname().to_string(),
            checksum,
            deploy_serial: u32::try_from(d.deployserial()).unwrap_or_default(),
        }),
        health: None,
        bound_images: bound_images_of(repo, d),
    };
    Ok((entry, cached_downgrade))
}

/// The images `d`'s commit binds; none, with a log line, when its
/// `bound-images.d` cannot be read (the deployment is there all the same).
fn bound_images_of(repo: &ostree::Repo, d: &ostree::Deployment) -> Vec<hostd_interface::host::BoundImage> {
    let images = match super::bound_images::of_commit(repo, d.csum().as_str()) {
        Ok(Ok(images)) => images,
        Ok(Err(bad)) => {
            tracing::warn!(deployment = %d.csum(), "{bad}");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(deployment = %d.csum(), "reading its bound images: {e:#}");
            return Vec::new();
        }
    };
    images.into_iter().map(|i| hostd_interface::host::BoundImage { image: i.image, file: i.file }).collect()
}

/// ostree-ext's cached update of a deployed image, `cached` as the Host
/// document shows it, judged by [`update_rule`]: an update, or a downgrade
/// (second), or the deployed image itself (neither). A cache written by
/// another tool (`bootc upgrade --check`) is judged the same way.
fn judge_cached(
    state: &store::LayeredImageState,
    cached: Option<ImageStatus>,
) -> (Option<ImageStatus>, Option<ImageStatus>) {
    let (Some(cached), Some(found)) = (cached, state.cached_update.as_ref()) else {
        return (None, None);
    };
    let found = update_rule::facts(found.manifest_digest.as_ref(), &found.manifest, &found.config);
    match update_rule::classify(&update_rule::state_facts(state), &found) {
        Verdict::Same => (None, None),
        Verdict::Update => (Some(cached), None),
        Verdict::Downgrade => (None, Some(cached)),
    }
}

/// Origins carrying client-side changes (layered packages, overrides) are not
/// something an image update can reproduce.
fn origin_is_incompatible(d: &ostree::Deployment) -> bool {
    d.origin().is_some_and(|o| {
        o.has_group("rpmostree") || o.has_group("packages") || o.has_group("overrides")
    })
}

/// Drop a cached update that a deployment already runs or is queued to
/// run, whichever tool deployed it: it is no update any more. A
/// download-only deployment waits for `Stage` and keeps it.
fn without_deployed_updates(mut deployments: Vec<Deployment>) -> Vec<Deployment> {
    let deployed: Vec<String> = deployments
        .iter()
        .filter(|d| !d.entry.download_only)
        .filter_map(|d| d.entry.image.as_ref().map(|i| i.image_digest.clone()))
        .collect();
    for d in &mut deployments {
        if d.entry.cached_update.as_ref().is_some_and(|u| deployed.contains(&u.image_digest)) {
            d.entry.cached_update = None;
        }
    }
    deployments
}

/// Place deployments into the Host document's slots.
fn assemble(deployments: Vec<Deployment>, booted: bool, usr_overlay: Option<FilesystemOverlay>) -> Snapshot {
    let deployments = without_deployed_updates(deployments);
    let find = |role: Role| deployments.iter().find(|d| d.role == role);
    let entry_of = |role: Role| find(role).map(|d| d.entry.clone());
    let rollback_queued = match (find(Role::Booted), find(Role::Rollback)) {
        (Some(b), Some(r)) => r.index < b.index && find(Role::Staged).is_none(),
        _ => false,
    };
    let spec_image: Option<ImageReference> = find(Role::Staged)
        .or_else(|| find(Role::Booted))
        .or_else(|| (!booted).then(|| deployments.first()).flatten())
        .and_then(|d| d.entry.image.as_ref())
        .map(|i| i.image.clone());
    let status = HostStatus {
        staged: entry_of(Role::Staged),
        booted: entry_of(Role::Booted),
        rollback: entry_of(Role::Rollback),
        other_deployments: deployments
            .iter()
            .filter(|d| d.role == Role::Other)
            .map(|d| d.entry.clone())
            .collect(),
        rollback_queued,
        ty: find(Role::Booted)
            .and_then(|d| d.entry.image.as_ref())
            .map(|_| HostType::BootcHost),
        usr_overlay,
    };
    let host = Host::new(
        HostSpec {
            image: spec_image,
            boot_order: if rollback_queued { BootOrder::Rollback } else { BootOrder::Default },
        },
        status,
    );
    let json = serde_json::to_string(&host).expect("the Host document always serializes");
    let reboot_required = rollback_queued || find(Role::Staged).is_some_and(|d| !d.entry.download_only);
    Snapshot {
        host,
        json,
        deployments,
        reboot_required,
        booted,
        downloaded_update: None,
        downloaded_bound_images: Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostd_interface::host::{ImageSignature, Transport};
    use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};

    /// A booted host with v3 staged (locked when `download_only`).
    pub(crate) fn booted_with_staged(download_only: bool) -> Snapshot {
        let mut staged = deployment(0, Role::Staged, "3");
        staged.entry.download_only = download_only;
        assemble(vec![staged, deployment(1, Role::Booted, "2"), deployment(2, Role::Rollback, "1")], true, None)
    }

    /// A booted host whose rollback deployment boots next.
    pub(crate) fn booted_with_queued_rollback() -> Snapshot {
        assemble(vec![deployment(0, Role::Rollback, "1"), deployment(1, Role::Booted, "2")], true, None)
    }

    /// An offline sysroot with two deployments.
    pub(crate) fn offline() -> Snapshot {
        assemble(vec![deployment(0, Role::Other, "2"), deployment(1, Role::Other, "1")], false, None)
    }

    fn deployment(index: usize, role: Role, version: &str) -> Deployment {
        Deployment {
            index,
            role,
            origin_reference: Some(format!("ostree-unverified-image:oci:/images/{version}")),
            cached_downgrade: None,
            entry: BootEntry {
                image: Some(ImageStatus {
                    image: ImageReference {
                        image: format!("/images/{version}"),
                        transport: Transport::Oci,
                        signature: Some(ImageSignature::Insecure),
                    },
                    version: Some(version.into()),
                    timestamp: None,
                    image_digest: format!("sha256:{version}"),
                    architecture: "amd64".into(),
                    labels: Default::default(),
                }),
                cached_update: None,
                incompatible: false,
                pinned: false,
                download_only: false,
                ostree: Some(BootEntryOstree {
                    stateroot: "default".into(),
                    checksum: format!("c{version}"),
                    deploy_serial: 0,
                }),
                health: None,
                bound_images: Vec::new(),
            },
        }
    }

    /// A manifest digest, manifest and config: image `n` built at `created`.
    fn image(n: u8, created: &str) -> (ostree_ext::oci_spec::image::Digest, ImageManifest, ImageConfiguration) {
        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let config_digest = hex(char::from_digit((u32::from(n) + 10) % 16, 16).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": 1},
            "layers": [],
        });
        let config = serde_json::json!({
            "created": created, "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
        });
        (
            format!("sha256:{}", hex(char::from(b'0' + n))).parse().unwrap(),
            serde_json::from_value(manifest).unwrap(),
            serde_json::from_value(config).unwrap(),
        )
    }

    #[test]
    fn a_cached_update_is_judged_by_the_update_rule() {
        let (digest, manifest, configuration) = image(1, "2026-01-01T00:01:00Z");
        let mut deployed = store::LayeredImageState {
            base_commit: "b".into(),
            merge_commit: "m".into(),
            manifest_digest: digest,
            manifest,
            configuration,
            cached_update: None,
        };
        let shown = deployment(0, Role::Other, "found").entry.image.unwrap();
        let cases = [
            (image(2, "2026-01-01T00:02:00Z"), (true, false)),
            (image(0, "2026-01-01T00:00:00Z"), (false, true)),
            (image(3, "not a time"), (true, false)),
        ];
        for ((manifest_digest, manifest, config), expected) in cases {
            let created = config.created().clone();
            deployed.cached_update = Some(store::CachedImageUpdate { manifest, config, manifest_digest });
            let (update, downgrade) = judge_cached(&deployed, Some(shown.clone()));
            assert_eq!((update.is_some(), downgrade.is_some()), expected, "{created:?}");
        }
        // The deployed image itself, cached under another manifest digest.
        let (_, manifest, config) = image(1, "2026-01-01T00:01:00Z");
        let manifest_digest = image(9, "").0;
        deployed.cached_update = Some(store::CachedImageUpdate { manifest, config, manifest_digest });
        assert_eq!(judge_cached(&deployed, Some(shown)), (None, None));
        assert_eq!(judge_cached(&deployed, None), (None, None), "nothing shown, nothing judged");
    }

    #[test]
    fn offline_sysroot_lists_everything_in_boot_order() {
        let s = assemble(
            vec![deployment(0, Role::Other, "2"), deployment(1, Role::Other, "1")],
            false,
            None,
        );
        assert!(s.host.status.booted.is_none());
        assert!(s.host.status.ty.is_none());
        let versions: Vec<_> = s
            .host
            .status
            .other_deployments
            .iter()
            .map(|e| e.image.as_ref().unwrap().version.clone().unwrap())
            .collect();
        assert_eq!(versions, ["2", "1"]);
        assert_eq!(s.host.spec.image.as_ref().unwrap().image, "/images/2");
        assert_eq!(s.merge_deployment().unwrap().index, 0);
        assert!(!s.reboot_required);
    }

    #[test]
    fn a_cached_update_a_deployment_runs_is_no_update() {
        let with_cached_3 = || {
            let mut booted = deployment(1, Role::Booted, "2");
            booted.entry.cached_update = deployment(0, Role::Staged, "3").entry.image;
            booted
        };
        let mut locked = deployment(0, Role::Staged, "3");
        locked.entry.download_only = true;
        let s = assemble(vec![locked, with_cached_3()], true, None);
        assert_eq!(s.cached_update().map(|u| u.image_digest.as_str()), Some("sha256:3"), "download-only: Stage deploys it");
        assert!(!s.has_deployed("sha256:3"));
        let s = assemble(vec![deployment(0, Role::Staged, "3"), with_cached_3()], true, None);
        assert_eq!(s.cached_update(), None, "staged: deployed");
        assert!(s.has_deployed("sha256:3"));
        assert!(s.host.status.booted.as_ref().unwrap().cached_update.is_none(), "the Host document agrees");
    }

    #[test]
    fn rollback_before_booted_is_queued() {
        let s = assemble(
            vec![deployment(0, Role::Rollback, "1"), deployment(1, Role::Booted, "2")],
            true,
            None,
        );
        assert!(s.host.status.rollback_queued);
        assert_eq!(s.host.spec.boot_order, BootOrder::Rollback);
        assert!(s.reboot_required);
        assert_eq!(s.host.status.ty, Some(HostType::BootcHost));
    }

    #[test]
    fn staged_sets_spec_and_reboot_unless_download_only() {
        let mut staged = deployment(0, Role::Staged, "3");
        let s = assemble(vec![staged.clone(), deployment(1, Role::Booted, "2")], true, None);
        assert_eq!(s.host.spec.image.as_ref().unwrap().image, "/images/3");
        assert!(s.reboot_required);
        staged.entry.download_only = true;
        let s = assemble(vec![staged, deployment(1, Role::Booted, "2")], true, None);
        assert!(!s.reboot_required);
    }
}
