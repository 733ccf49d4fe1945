//! Images ostree-ext cannot import from where they are, copied once with
//! `skopeo copy` into a temporary OCI layout on the sysroot's file system
//! and imported from there, recorded as the reference they came from.
//! Removed afterwards, also when the job fails or is cancelled, and any
//! left by a hostd that stopped mid-copy at the next copy.
//!
//! - **docker-archive** (`podman save`): skopeo's image proxy describes
//!   its uncompressed layers as gzip-compressed (docker's schema 2 has no
//!   other type in use), which ostree-ext then fails to decompress;
//!   `skopeo copy` writes them with their true media type.
//! - **containers-storage** (podman's image store) on an older skopeo:
//!
//! ostree-ext reads a layer from containers-storage by its uncompressed
//! digest, which it asks skopeo's image proxy for (`GetLayerInfo`, protocol
//! 0.2.5, skopeo 1.14); the storage keeps no compressed blobs to fetch by
//! the manifest's digests. An older proxy (Debian 12's skopeo 1.9 speaks
//! 0.2.3) cannot, so there the image is first copied once with
//! `skopeo copy containers-storage:<ref> oci:<dir>` into a temporary OCI
//! layout on the sysroot's file system and imported from that layout,
//! recorded as the `containers-storage:<ref>` it came from. Which way is
//! taken is decided by the protocol version the proxy answers
//! `Initialize` with, before anything is read.
//!
//! skopeo finds the storage as podman does: `/etc/containers/storage.conf`
//! (or `$CONTAINERS_STORAGE_CONF`), else `/var/lib/containers/storage`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use ostree_ext::container::{ImageReference, OstreeImageReference, Transport};
use ostree_ext::ostree;
use tokio_util::sync::CancellationToken;

use super::progress::{Phase, Progress};
use super::skopeo::{self, RunAs};
use super::{Error, ImageFailure};

/// The first protocol version of skopeo's image proxy that answers
/// `GetLayerInfo`, which ostree-ext needs to read containers-storage
/// (containers-image-proxy's `layer_info_proto_version`).
pub const LAYER_INFO_PROTOCOL: semver::Version = semver::Version::new(0, 2, 5);

/// How an image is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through the image proxy, layer by layer.
    Proxy,
    /// Copied once into a temporary OCI layout, imported from there.
    CopiedLayout,
}

/// The route for an image of `transport` on the installed skopeo, or why
/// there is none: for containers-storage, a proxy that does not tell its
/// protocol cannot be relied on for either. Decided before the job reads
/// anything.
pub async fn route(transport: Transport) -> Result<Route, Error> {
    match transport {
        Transport::DockerArchive => return Ok(Route::CopiedLayout),
        Transport::ContainerStorage => {}
        _ => return Ok(Route::Proxy),
    }
    match skopeo::proxy_protocol().await {
        Some(v) if v >= LAYER_INFO_PROTOCOL => Ok(Route::Proxy),
        Some(_) => Ok(Route::CopiedLayout),
        None => Err(Error::ProgramMissing(format!(
            "containers-storage: the installed {} did not tell its image proxy's protocol (skopeo \
             experimental-image-proxy answered no Initialize), so hostd can neither read podman's storage through \
             it (protocol {LAYER_INFO_PROTOCOL}, skopeo 1.14, needed) nor copy from it; check that skopeo runs, or \
             copy the image out yourself (podman save -o /path/os.tar IMAGE, then switch --transport docker-archive)",
            super::pull::SKOPEO
        ))),
    }
}

/// Prefix of the temporary layouts in the repository's `tmp` directory.
pub const COPY_PREFIX: &str = "hostd-copied-image-";

/// The tag the copied image carries in its temporary layout.
const COPY_TAG: &str = "image";

/// A temporary OCI layout holding a copy of an image;
/// removed on drop (after the import, a failure or a cancellation).
#[derive(Debug)]
pub struct CopiedLayout {
    dir: tempfile::TempDir,
    /// The layout as ostree-ext reads it (`oci:<dir>:image`), with the
    /// signature source of the reference it was copied from.
    pub source: OstreeImageReference,
}

impl CopiedLayout {
    /// The layout's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Copy `imgref` into a temporary OCI layout in the repository's `tmp`
/// directory, which is on the sysroot's file system, so its blobs never
/// fill a small `/tmp`, with skopeo run as `run_as` (who reads `imgref`;
/// a layout written by `nobody` is read by `nobody` too). Layouts left by
/// a hostd that stopped mid-copy are removed first: the caller holds the
/// sysroot lock, so no other job is using one. skopeo ends when `cancel`
/// fires; the layout is removed once it has exited.
pub async fn copy(
    repo: &ostree::Repo,
    imgref: &OstreeImageReference,
    run_as: RunAs,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<CopiedLayout, Error> {
    let tmp = repo_tmp(repo)?;
    remove_stale(&tmp);
    progress.phase(
        Phase::Checking,
        &format!("copying {} into a temporary OCI layout (skopeo copy)", super::image::user_reference(imgref)),
    );
    let failed = |what: String| move |e: std::io::Error| Error::Other(anyhow::Error::new(e).context(what));
    let dir = tempfile::Builder::new()
        .prefix(COPY_PREFIX)
        .tempdir_in(&tmp)
        .map_err(failed(format!("creating a temporary layout in {}", tmp.display())))?;
    if run_as == RunAs::Nobody {
        let (uid, gid) = skopeo::nobody_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .map_err(failed(format!("handing {} to nobody", dir.path().display())))?;
    }
    let mut command = skopeo::watched_command(run_as, cancel).map_err(|e| Error::image(imgref, e))?;
    command
        .args(["copy", "--quiet", "--remove-signatures"])
        .arg(imgref.imgref.to_string())
        .arg(format!("oci:{}:{COPY_TAG}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Waited for on a blocking thread; the watcher kills skopeo on cancel,
    // which ends the wait, and only then is the layout removed.
    let copied = tokio::task::spawn_blocking(move || {
        let output = run_to_end(command);
        (dir, output)
    })
    .await
    .map_err(|e| Error::Other(anyhow::Error::new(e).context("copying from containers-storage")))?;
    let (dir, output) = copied;
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    let output = output.map_err(|e| Error::image(imgref, anyhow::Error::new(e).context("running skopeo copy")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(Error::image_failure(imgref, ImageFailure::SkopeoSaid(said)));
    }
    crate::failpoint::hold(crate::failpoint::points::AFTER_COPY, |m| progress.message(m), cancel);
    if cancel.is_cancelled() {
        // `dir` goes with this return: nothing reads it any more.
        return Err(Error::cancelled());
    }
    let source = OstreeImageReference {
        sigverify: imgref.sigverify.clone(),
        imgref: ImageReference { transport: Transport::OciDir, name: format!("{}:{COPY_TAG}", dir.path().display()) },
    };
    tracing::info!("copied {} to {}", imgref.imgref, dir.path().display());
    Ok(CopiedLayout { dir, source })
}

/// Run `command` to its end, its output collected.
#[expect(clippy::disallowed_methods, reason = "runs on a blocking thread (spawn_blocking)")]
fn run_to_end(mut command: std::process::Command) -> std::io::Result<std::process::Output> {
    command.output()
}

/// The repository's `tmp` directory, by its real path (a repository
/// opened through a descriptor has a `/proc/self/fd` path).
fn repo_tmp(repo: &ostree::Repo) -> Result<PathBuf, Error> {
    let path = ostree_ext::gio::prelude::FileExt::path(&repo.path());
    let path = path.ok_or_else(|| Error::Other(anyhow::anyhow!("the ostree repository has no local path")))?;
    std::fs::canonicalize(path.join("tmp"))
        .map_err(|e| Error::Other(anyhow::Error::new(e).context(format!("resolving {}/tmp", path.display()))))
}

/// Remove the temporary layouts under `tmp` a stopped hostd left behind.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(COPY_PREFIX) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!("removed the stale layout {}", entry.path().display()),
                Err(e) => tracing::warn!("could not remove the stale layout {}: {e}", entry.path().display()),
            }
        }
    }
}
