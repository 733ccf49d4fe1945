//! The only code that touches libostree and ostree-ext.
//!
//! - [`status`]: read deployments into a [`status::Snapshot`] (no lock taken).
//! - [`cache`]: the snapshot served to the bus, refreshed when the sysroot changes.
//! - [`watch`]: inotify on the sysroot, telling the cache to refresh.
//! - [`image`]: conversions between ostree-ext image types and the Host document.
//! - [`filtered`]: image content ostree-ext left out on import, read from its commit.
//! - [`metadata`]: an image's version and build time from its labels and
//!   annotations, normalized (the one place for it).
//! - [`signature`]: enforcing the containers signature policy before a pull.
//! - [`pull`], [`deploy`], [`rollback`], [`cleanup`], [`discard`]: the mutating operations,
//!   run by jobs on their own thread under the sysroot lock.
//! - [`etc_diff`]: a deployment's `/etc` against its image's `/usr/etc`,
//!   read by the `EtcDiff` call on a blocking thread.
//! - [`diff`]: what changes between two deployments or a deployment and
//!   the downloaded update (packages, kernel, kargs), read from their
//!   commits by the `Diff` call on a blocking thread; [`packages`] reads
//!   package databases and compares versions (no I/O); [`rpmdb`] has
//!   Debian's `rpm` list an rpm database copied out of a commit.
//! - [`pin`]: pinning a deployment, done directly by the `Pin` call.
//! - [`usr_overlay`]: the overlay on the booted `/usr` (libostree's unlock),
//!   run by a helper in the host's mount namespace; its state in the Host document.
//! - [`bound_images`]: the images an image binds in
//!   `/usr/lib/bootc/bound-images.d`, read from its commit;
//!   [`bound_storage`]: the store they are pulled into and removed from.
//! - [`update_rule`]: what counts as an update, a downgrade or the same
//!   image (used by `Check`, `Upgrade` and the status read).

pub mod bound_images;
pub mod bound_storage;
pub mod cache;
pub mod cancel;
pub mod cleanup;
pub mod copied_layout;
pub mod deploy;
pub mod diff;
pub mod discard;
pub mod errors;
pub mod etc_diff;
pub mod filtered;
pub mod image;
pub mod kargs;
pub mod layer_reuse;
pub mod local_source;
pub mod metadata;
pub mod packages;
pub mod pin;
pub mod progress;
pub mod pull;
pub mod rpmdb;
pub mod rollback;
pub mod signature;
pub mod skopeo;
pub mod status;
pub mod update_rule;
pub mod usr_overlay;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree_ext::container::deploy::ORIGIN_CONTAINER;
use ostree_ext::container::OstreeImageReference;
use ostree_ext::sysroot::SysrootLock;
use ostree_ext::{gio, ostree};
use tokio_util::sync::CancellationToken;

use crate::journal::Change;

pub use errors::{Error, ImageFailure};

/// What a finished operation reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The job's final `Message`.
    pub message: String,
    /// What `Check` found, if it found an update.
    pub update: Option<UpdateSummary>,
    /// What changed in the boot order or the repo, for the journal.
    pub change: Option<Change>,
}

impl Outcome {
    /// An outcome that is only a message.
    pub fn message(message: impl Into<String>) -> Outcome {
        Outcome { message: message.into(), ..Outcome::default() }
    }

    /// An outcome that changed something worth a journal entry.
    pub fn changed(message: impl Into<String>, change: Change) -> Outcome {
        Outcome { message: message.into(), update: None, change: Some(change) }
    }
}

/// An update as seen from its manifest, before fetching it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Manifest digest.
    pub digest: String,
    /// Version label.
    pub version: Option<String>,
    /// Build time.
    pub timestamp: Option<String>,
    /// Compressed bytes of the layers not yet in the repo.
    pub bytes_to_fetch: u64,
    /// Layers not yet in the repo.
    pub layers_to_fetch: u32,
    /// Layers of the image.
    pub layers_total: u32,
}

impl UpdateSummary {
    /// What a check found, as `CachedUpdate` carries it: what the records
    /// and the state file keep of it.
    pub fn cached_update(&self) -> hostd_interface::manager::CachedUpdate {
        hostd_interface::manager::CachedUpdate {
            digest: Some(self.digest.clone()),
            downgrade: Some(false),
            version: self.version.clone(),
            timestamp: self.timestamp.clone(),
            download_bytes: Some(self.bytes_to_fetch),
            layers_to_fetch: Some(self.layers_to_fetch),
            layers_total: Some(self.layers_total),
            ..Default::default()
        }
    }
}

/// The deployment updates build on (booted, or the default of an offline
/// sysroot) and the image it tracks.
pub fn tracked_image(sysroot: &ostree::Sysroot) -> Result<(ostree::Deployment, OstreeImageReference), Error> {
    let merge = merge_deployment(sysroot)
        .ok_or_else(|| Error::Refused("the sysroot has no deployment to update".into()))?;
    let reference = origin_reference(&merge)?.ok_or_else(|| {
        Error::Refused("the deployment was not made from an image; use Switch first".into())
    })?;
    Ok((merge, reference))
}

/// The booted deployment, or the default one of an offline sysroot.
pub fn merge_deployment(sysroot: &ostree::Sysroot) -> Option<ostree::Deployment> {
    sysroot.booted_deployment().or_else(|| sysroot.deployments().into_iter().next())
}

/// The image reference stored in a deployment's origin.
pub fn origin_reference(d: &ostree::Deployment) -> Result<Option<OstreeImageReference>, Error> {
    let Some(text) = d.origin().and_then(|o| o.string("origin", ORIGIN_CONTAINER).ok()) else {
        return Ok(None);
    };
    Ok(Some(image::parse_origin_reference(text.as_str())?))
}

/// Where the sysroot lives and how to open it, and where the host booted
/// from it keeps hostd's state (the boot health record among it).
#[derive(Debug, Clone)]
pub struct SysrootPath {
    path: PathBuf,
    state_dir: PathBuf,
}

impl SysrootPath {
    /// A sysroot at `path` (`/` for the running system), its state in
    /// [`crate::persist::DEFAULT_DIR`].
    pub fn new(path: impl Into<PathBuf>) -> SysrootPath {
        SysrootPath { path: path.into(), state_dir: PathBuf::from(crate::persist::DEFAULT_DIR) }
    }

    /// The same sysroot with its state in `dir` (`--state-dir`).
    pub fn with_state_dir(self, dir: impl Into<PathBuf>) -> SysrootPath {
        SysrootPath { state_dir: dir.into(), ..self }
    }

    /// The sysroot directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// hostd's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Open, load and lock the sysroot for a mutating operation. Waits for the
    /// lock (another `ostree admin` or bootc may hold it) and tells `on_wait`
    /// once, so the job can say why it is not moving.
    pub async fn lock(&self, cancel: &CancellationToken, on_wait: impl FnOnce()) -> Result<LockedSysroot> {
        let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(&self.path)));
        if self.path == Path::new("/") {
            enter_private_mount_namespace()?;
            sysroot.set_mount_namespace_in_use();
        }
        let mut on_wait = Some(on_wait);
        while !sysroot.try_lock().context("locking the sysroot")? {
            if let Some(f) = on_wait.take() {
                f();
            }
            // Another tool may hold the lock for good: Cancel() and the
            // time limit must still end the job.
            if cancel.is_cancelled() {
                return Err(Error::Cancelled("cancelled while waiting for the sysroot lock".into()).into());
            }
            tokio::time::sleep(LOCK_POLL_INTERVAL).await;
        }
        let marker = self.path.join(WORK_MARKER);
        let locked = LockedSysroot { sysroot, marker };
        locked.sysroot.load(gio::Cancellable::NONE).context("loading sysroot")?;
        locked.mark_work_in_progress()?;
        Ok(locked)
    }

    /// Whether a hostd stopped (crash, `kill -9`, power loss) while it held
    /// the lock, and [`cleanup::finish_interrupted_work`] has yet to run.
    pub fn work_was_interrupted(&self) -> bool {
        self.path.join(WORK_MARKER).exists()
    }
}

/// A booted host's /sysroot is mounted read-only and libostree remounts it
/// writable; doing that in a mount namespace of the job's thread (inherited
/// by its helper threads and skopeo) keeps the rest of the host read-only.
fn enter_private_mount_namespace() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context("making mounts private to the job")?;
    Ok(())
}

const LOCK_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Present on disk exactly while hostd holds the sysroot lock, so the next
/// start finds out that work was cut off halfway: libostree's prune (run by
/// Cleanup and after every deployment write) deletes unreachable objects in
/// no particular order, and a kill in between leaves a commit whose trees
/// are gone, which `ostree fsck` reports until the next prune. Beside the
/// repo, where bootc keeps its own state too.
const WORK_MARKER: &str = "ostree/hostd/work-in-progress";

/// A loaded sysroot whose lock we hold; unlocked on drop.
#[derive(Debug)]
pub struct LockedSysroot {
    sysroot: ostree::Sysroot,
    marker: PathBuf,
}

impl LockedSysroot {
    /// libostree made the sysroot writable when it took the lock.
    fn mark_work_in_progress(&self) -> Result<()> {
        let dir = self.marker.parent().expect("the marker is inside ostree/");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Empty: it takes no data block, so a full disk still fails where
        // the operation writes, not here.
        std::fs::File::create(&self.marker).with_context(|| format!("creating {}", self.marker.display()))?;
        Ok(())
    }

    /// The ostree-ext view of the same lock, for its helpers that demand one.
    pub fn as_ostree_ext_lock(&self) -> SysrootLock {
        SysrootLock::from_assumed_locked(&self.sysroot)
    }
}

impl std::ops::Deref for LockedSysroot {
    type Target = ostree::Sysroot;

    fn deref(&self) -> &ostree::Sysroot {
        &self.sysroot
    }
}

impl Drop for LockedSysroot {
    fn drop(&mut self) {
        // Also after a failed operation: libostree and ostree-ext leave the
        // repo consistent when they return an error; only a stop in
        // mid-call does not.
        if let Err(e) = std::fs::remove_file(&self.marker) {
            tracing::warn!("removing {}: {e}", self.marker.display());
        }
        self.sysroot.unlock();
    }
}
