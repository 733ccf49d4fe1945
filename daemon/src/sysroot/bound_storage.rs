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
    /// the job in phase `bound-images`: `LayersDone`/`LayersTotal` count
    /// images (present ones are done at once), and the compressed bytes of
    /// the images to pull (config and layers of each manifest, read first
    /// with `skopeo inspect --raw`) are added to the `already` bytes the
    /// job fetched for the OS image: `BytesTotal` grows by them at once,
    /// `BytesDone` as each image lands (a job's byte counts never go back).
    /// The first image that fails ends the
    /// pulls: [`Error::Image`] named by what its registry answered,
    /// [`Error::Cancelled`], [`Error::ProgramMissing`].
    pub async fn pull_all(
        &self,
        images: &[BoundImage],
        already: u64,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        if images.is_empty() {
            return Ok(());
        }
        super::pull::require_skopeo()?;
        progress.phase(Phase::BoundImages, &format!("looking for {} bound images", images.len()));
        self.ensure_dirs()?;
        let total = u32::try_from(images.len()).unwrap_or(u32::MAX);
        let mut missing = Vec::new();
        for image in images {
            let name = bound_images::normalized(&image.image);
            if self.has(&name, cancel).await? {
                tracing::info!(image = %name, "bound image already present");
            } else {
                missing.push((image, name));
            }
        }
        let mut done = total - u32::try_from(missing.len()).unwrap_or(total);
        progress.layers(done, total);
        let mut sizes = Vec::with_capacity(missing.len());
        for (image, _) in &missing {
            sizes.push(self.size_of(image, cancel).await?);
        }
        let bytes_total = already + sizes.iter().sum::<u64>();
        let mut bytes_done = already;
        progress.bytes(bytes_done, bytes_total);
        for ((image, name), size) in missing.iter().zip(sizes) {
            progress.message(&format!("pulling bound image {} of {total}: {}", done + 1, image.image));
            self.pull(image, name, cancel).await?;
            done += 1;
            bytes_done += size;
            progress.bytes(bytes_done, bytes_total);
            progress.layers(done, total);
        }
        Ok(())
    }

    /// The compressed size of `image` as pulled: its manifest's config and
    /// layers, for this host's platform when the tag names an index. 0 when
    /// the manifest says no size (the count still moves); an image that
    /// cannot be read fails as its pull would.
    async fn size_of(&self, image: &BoundImage, cancel: &CancellationToken) -> Result<u64, Error> {
        let manifest = self.raw_manifest(image, &format!("docker://{}", image.image), cancel).await?;
        if let Some(size) = manifest_size(&manifest) {
            return Ok(size);
        }
        let Some(digest) = platform_manifest(&manifest) else { return Ok(0) };
        let by_digest = format!("docker://{}@{digest}", repository(&image.image));
        let manifest = self.raw_manifest(image, &by_digest, cancel).await?;
        Ok(manifest_size(&manifest).unwrap_or(0))
    }

    /// `skopeo inspect --raw` of `source`, with `image`'s credentials.
    async fn raw_manifest(&self, image: &BoundImage, source: &str, cancel: &CancellationToken) -> Result<serde_json::Value, Error> {
        let mut command = Command::new(super::pull::SKOPEO);
        command.args(["inspect", "--raw", "--retry-times=0"]);
        let _credentials = with_credentials(&mut command, image, "--")?;
        command.arg(source).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = run(command, cancel, "skopeo inspect of a bound image").await?;
        if !out.status.success() {
            return Err(failed(image, &out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    }

    async fn pull(&self, image: &BoundImage, name: &str, cancel: &CancellationToken) -> Result<(), Error> {
        let mut command = Command::new(super::pull::SKOPEO);
        command.args(["copy", "--quiet", "--retry-times=0", "--remove-signatures"]);
        let _credentials = with_credentials(&mut command, image, "--src-")?;
        command
            .arg(format!("docker://{}", image.image))
            .arg(format!("{}{name}", self.transport()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = run(command, cancel, "skopeo copy of a bound image").await?;
        if !out.status.success() {
            return Err(failed(image, &out.stderr));
        }
        tracing::info!(image = %image.image, file = %image.file, "pulled the bound image");
        Ok(())
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

/// Give `command` the credentials for `image` (options `<prefix>authfile`
/// or `<prefix>no-creds`: `--src-` for `copy`, `--` for `inspect`):
/// `AuthFile=` of its file, else the authentication file hostd uses for OS
/// images (on skopeo's stdin, returned to be kept open until skopeo ends),
/// else none.
fn with_credentials(command: &mut Command, image: &BoundImage, prefix: &str) -> Result<Option<std::fs::File>, Error> {
    if let Some(path) = &image.auth_file {
        command.arg(format!("{prefix}authfile={path}")).stdin(Stdio::null());
        return Ok(None);
    }
    match super::signature::global_authfile() {
        Some(file) => {
            let fd = file.as_fd().try_clone_to_owned().context("passing the credentials to skopeo")?;
            command.arg(format!("{prefix}authfile=/dev/stdin")).stdin(Stdio::from(fd));
            Ok(Some(file))
        }
        None => {
            command.arg(format!("{prefix}no-creds")).stdin(Stdio::null());
            Ok(None)
        }
    }
}

/// A read of `image` that skopeo refused, with its words (`stderr`).
fn failed(image: &BoundImage, stderr: &[u8]) -> Error {
    let stderr = String::from_utf8_lossy(stderr);
    let said = super::signature::fatal_message(&stderr).unwrap_or_else(|| stderr.trim().to_string());
    Error::Image {
        image: image.image.clone(),
        from_registry: true,
        failure: ImageFailure::BoundImage { file: image.file.clone(), said },
    }
}

/// The config and layer sizes of an image manifest; `None` for anything
/// else (an index).
fn manifest_size(manifest: &serde_json::Value) -> Option<u64> {
    let layers = manifest["layers"].as_array()?;
    let config = manifest["config"]["size"].as_u64().unwrap_or(0);
    Some(config + layers.iter().filter_map(|l| l["size"].as_u64()).sum::<u64>())
}

/// The digest of the index entry for this host's platform (linux and the
/// architecture in Go's terms, as registries name it).
fn platform_manifest(index: &serde_json::Value) -> Option<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    };
    index["manifests"].as_array()?.iter().find_map(|m| {
        let platform = &m["platform"];
        (platform["os"] == "linux" && platform["architecture"] == arch).then(|| m["digest"].as_str().map(str::to_string))?
    })
}

/// The repository of an image reference: without its tag or digest.
fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_the_manifest_and_an_index_names_this_platforms() {
        let manifest = serde_json::json!({"config": {"size": 10}, "layers": [{"size": 100}, {"size": 5}]});
        assert_eq!(manifest_size(&manifest), Some(115));
        let arch = if std::env::consts::ARCH == "x86_64" { "amd64" } else { "arm64" };
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:other", "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": "sha256:ours", "platform": {"os": "linux", "architecture": arch}},
        ]});
        assert_eq!(manifest_size(&index), None);
        assert_eq!(platform_manifest(&index).as_deref(), Some("sha256:ours"));
        assert_eq!(repository("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app");
        assert_eq!(repository("quay.io/org/app@sha256:ab"), "quay.io/org/app");
        assert_eq!(repository("localhost:5000/app"), "localhost:5000/app");
    }
}
