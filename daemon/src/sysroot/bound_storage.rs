//! The container storage of logically bound images, in bootc's layout: a
//! containers-storage root with the `overlay` driver at
//! `<sysroot>/ostree/bootc/storage`, which a booted host reaches as
//! `/usr/lib/bootc/storage` (a link into `/sysroot` that hostd's
//! `make install` puts into the image, as bootc's does) and podman uses as
//! an additional image store:
//! `podman --storage-opt additionalimagestore=/usr/lib/bootc/storage run <image>`.
//!
//! Pulls are `skopeo copy docker://<image> containers-storage:[overlay@<root>+<runroot>]<image>`
//! run as root (the store is root's), killed when the job is cancelled
//! (`Cancel()`, its time limit, shutdown) and named from skopeo's words by
//! the same rules as an OS image's ([`crate::errors`]). An image already in
//! the store is not pulled again (bootc's rule: the registry need not be
//! reachable to deploy an image whose bound images did not change).
//! Cleanup deletes unreferenced images with `skopeo delete`. hostd does
//! not run podman on the store: podman records the paths it was first run
//! with in the store (its database) and refuses other ones, and the same
//! store is `<dir>/ostree/bootc/storage` while a sysroot is offline and
//! `/sysroot/ostree/bootc/storage` once it is booted.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::bound_images::{self, BoundImage};
use super::progress::{Phase, Progress};
use super::{Error, ImageFailure};

/// The store, relative to the sysroot (bootc's `ostree/bootc` + `storage`).
pub const STORAGE_DIR: &str = "ostree/bootc/storage";
/// The runroot of the booted host's store: bootc's, so both tools lock the
/// same transient state.
const BOOTED_RUNROOT: &str = "/run/bootc/storage";
/// Runroots of offline sysroots' stores, one per sysroot path.
const OFFLINE_RUNROOTS: &str = "/run/hostd/bound-storage";

/// The bound-image store of one sysroot.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    runroot: PathBuf,
}

impl Store {
    /// The store of the sysroot at `sysroot`.
    pub fn of(sysroot: &Path) -> Store {
        let root = sysroot.join(STORAGE_DIR);
        let runroot = if sysroot == Path::new("/") {
            PathBuf::from(BOOTED_RUNROOT)
        } else {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(sysroot.as_os_str().as_encoded_bytes());
            let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Path::new(OFFLINE_RUNROOTS).join(name)
        };
        Store { root, runroot }
    }

    /// `containers-storage:` with this store's driver, root and runroot.
    fn transport(&self) -> String {
        format!("containers-storage:[overlay@{}+{}]", self.root.display(), self.runroot.display())
    }

    fn ensure_dirs(&self) -> anyhow::Result<()> {
        for dir in [&self.root, &self.runroot] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// Whether `image` (normalized) is in the store.
    async fn has(&self, image: &str, cancel: &CancellationToken) -> Result<bool, Error> {
        if !self.root.exists() {
            return Ok(false);
        }
        let mut command = Command::new(super::pull::SKOPEO);
        command
            .args(["inspect", "--raw"])
            .arg(format!("{}{image}", self.transport()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let out = run(command, cancel, "skopeo inspect of the bound-image store").await?;
        Ok(out.status.success())
    }

    /// Pull every image of `images` that the store does not hold yet, with
    /// the job in phase `bound-images` (`LayersDone`/`LayersTotal` count
    /// images). The first that fails ends the pulls: [`Error::Image`] named
    /// by what its registry answered, [`Error::Cancelled`],
    /// [`Error::ProgramMissing`].
    pub async fn pull_all(&self, images: &[BoundImage], progress: &dyn Progress, cancel: &CancellationToken) -> Result<(), Error> {
        if images.is_empty() {
            return Ok(());
        }
        super::pull::require_skopeo()?;
        progress.phase(Phase::BoundImages, &format!("pulling {} bound images", images.len()));
        self.ensure_dirs()?;
        let total = u32::try_from(images.len()).unwrap_or(u32::MAX);
        progress.layers(0, total);
        for (done, image) in images.iter().enumerate() {
            let name = bound_images::normalized(&image.image);
            if self.has(&name, cancel).await? {
                tracing::info!(image = %name, "bound image already present");
            } else {
                progress.message(&format!("pulling bound image {} of {total}: {}", done + 1, image.image));
                self.pull(image, &name, cancel).await?;
            }
            progress.layers(u32::try_from(done + 1).unwrap_or(u32::MAX), total);
        }
        Ok(())
    }

    async fn pull(&self, image: &BoundImage, name: &str, cancel: &CancellationToken) -> Result<(), Error> {
        let mut command = Command::new(super::pull::SKOPEO);
        command.args(["copy", "--quiet", "--retry-times=0", "--remove-signatures"]);
        // Kept open until skopeo has ended.
        let mut _credentials = None;
        match &image.auth_file {
            Some(path) => {
                command.arg(format!("--src-authfile={path}")).stdin(Stdio::null());
            }
            None => match super::signature::global_authfile() {
                Some(file) => {
                    let fd = file.as_fd().try_clone_to_owned().context("passing the credentials to skopeo")?;
                    command.arg("--src-authfile=/dev/stdin").stdin(Stdio::from(fd));
                    _credentials = Some(file);
                }
                None => {
                    command.arg("--src-no-creds").stdin(Stdio::null());
                }
            },
        }
        command
            .arg(format!("docker://{}", image.image))
            .arg(format!("{}{name}", self.transport()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = run(command, cancel, "skopeo copy of a bound image").await?;
        if out.status.success() {
            tracing::info!(image = %image.image, file = %image.file, "pulled the bound image");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = super::signature::fatal_message(&stderr).unwrap_or_else(|| stderr.trim().to_string());
        Err(Error::Image {
            image: image.image.clone(),
            from_registry: true,
            failure: ImageFailure::BoundImage { file: image.file.clone(), said },
        })
    }

    /// The images in the store as `(id, names)`, from containers-storage's
    /// image list (`overlay-images/images.json`; skopeo can copy, inspect
    /// and delete but not list). No store is no images. Read under the
    /// sysroot lock, which every writer of the store (hostd) holds.
    fn list(&self) -> Result<Vec<(String, Vec<String>)>, Error> {
        #[derive(serde::Deserialize)]
        struct Listed {
            id: String,
            #[serde(default)]
            names: Option<Vec<String>>,
        }
        let path = self.root.join("overlay-images/images.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())).into()),
        };
        let listed: Vec<Listed> = serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
        Ok(listed.into_iter().map(|l| (l.id, l.names.unwrap_or_default())).collect())
    }

    /// Remove every image none of whose names is in `keep` (normalized
    /// names), with its layers; returns the first name (or the id) of each
    /// removed. An image one of whose names is kept stays with all its
    /// names (several tags of the same content are one image).
    pub async fn remove_all_but(&self, keep: &BTreeSet<String>, cancel: &CancellationToken) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for (id, names) in self.list()? {
            if names.iter().any(|n| keep.contains(n)) {
                continue;
            }
            let mut command = Command::new(super::pull::SKOPEO);
            command
                .arg("delete")
                .arg(format!("{}@{id}", self.transport()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let out = run(command, cancel, "skopeo delete in the bound-image store").await?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let said = super::signature::fatal_message(&stderr).unwrap_or_else(|| stderr.trim().to_string());
                return Err(anyhow::anyhow!("removing the bound image {id} ({}): {said}", names.join(", ")).into());
            }
            tracing::info!(image = %id, ?names, "removed a bound image no deployment references");
            removed.push(names.first().cloned().unwrap_or(id));
        }
        Ok(removed)
    }
}

/// Run `command` to its end, killing it when `cancel` fires.
async fn run(mut command: Command, cancel: &CancellationToken, what: &str) -> Result<std::process::Output, Error> {
    command.kill_on_drop(true);
    let child = command.spawn().map_err(|e| anyhow::Error::new(e).context(format!("starting {what}")))?;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::cancelled()),
        out = child.wait_with_output() => Ok(out.map_err(|e| anyhow::Error::new(e).context(format!("waiting for {what}")))?),
    }
}
