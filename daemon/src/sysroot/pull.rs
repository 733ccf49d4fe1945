//! Fetching images with ostree-ext's `ImageImporter` through skopeo's image
//! proxy: metadata only for `Check`, layers not yet in the repo for updates.

use std::future::Future;

use anyhow::Context;
use hostd_interface::names::ACTION_PREFIX;
use ostree_ext::container::store::{
    self, ImageImporter, ImportProgress, LayeredImageState, PrepareResult,
    PreparedImport,
};
use ostree_ext::container::{OstreeImageReference, SignatureSource, BOOTC_LABEL, DIFFID_LABEL};
use ostree_ext::containers_image_proxy::ImageProxy;
use ostree_ext::oci_spec::image::ImageIndex;
use ostree_ext::{gio, glib, ostree};
use tokio_util::sync::CancellationToken;

use super::copied_layout::{self, CopiedLayout, Route};
use super::layer_reuse::{self, Record};
use super::local_source::{self, LocalImage, LocalKind, Trust, Unsafe};
use super::metadata::ImageMetadata;
use super::signature;
use super::skopeo::{self, RunAs};
use super::progress::{Layer, Phase, Progress};
use hostd_interface::job::LayerKind;
use super::update_rule::{self, ImageFacts, Verdict};
use super::{tracked_image, Error, ImageFailure, Outcome, SysrootPath, UpdateSummary};

/// Run `f` unless `cancel` fires first; dropping the future is the safe point
/// (ostree-ext commits each layer as it completes, so finished layers stay).
pub async fn cancellable<T>(cancel: &CancellationToken, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::select! {
        // Cancelling kills the job's skopeo, which fails `f` at once: the
        // cancellation is what happened.
        biased;
        _ = cancel.cancelled() => Err(Error::cancelled()),
        r = f => r,
    }
}

/// The program every image read goes through (its image proxy).
pub const SKOPEO: &str = "skopeo";

/// Fail with a message saying what to install when skopeo is not in `PATH`;
/// spawning it would only report "No such file or directory".
pub fn require_skopeo() -> Result<(), Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| is_executable(&dir.join(SKOPEO)));
    if found {
        return Ok(());
    }
    Err(Error::ProgramMissing(format!(
        "{SKOPEO} was not found in PATH ({}): hostd reads container images through it; install the {SKOPEO} package",
        path.to_string_lossy()
    )))
}

fn is_executable(file: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The OCI annotation that names a manifest's tag in a layout's index.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Whether a job may read a local image path others can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrustedPaths {
    /// The caller may choose what the host runs (`Switch`, root, or an
    /// `Upgrade` granted `switch`).
    Allowed,
    /// Re-reading such a path would let its writers choose the image.
    Refused,
}

/// Inspect a local image's path before skopeo is asked (see
/// [`local_source`]): its shape, its trust, and the tag of an `oci:`
/// layout. `None` for registries and containers-storage.
pub fn inspect_local(imgref: &OstreeImageReference, untrusted: UntrustedPaths) -> Result<Option<LocalImage>, Error> {
    let Some((path, kind, tag)) = local_source::locate(imgref) else { return Ok(None) };
    let failed = |f: ImageFailure| Error::image_failure(imgref, f);
    let local = local_source::inspect(&path, kind).map_err(|e| match e {
        Unsafe::Open { path, source } => failed(ImageFailure::LocalPath { path, source }),
        other => failed(ImageFailure::Unsafe(other)),
    })?;
    if let (Trust::Untrusted(why), UntrustedPaths::Refused) = (&local.trust, untrusted) {
        return Err(Error::NotAuthorized(format!(
            "{}: {why}, so others can change which image it holds; re-reading it needs the authority to choose \
             an image ({ACTION_PREFIX}switch), and unattended updates never install from it",
            super::image::user_reference(imgref),
        )));
    }
    let (LocalKind::OciDir, Some(tag)) = (kind, tag) else { return Ok(Some(local)) };
    // A layout hostd cannot (or may not) parse is left for skopeo to judge.
    let Some(index) = local.read_index().and_then(|bytes| serde_json::from_slice::<ImageIndex>(&bytes).ok()) else {
        return Ok(Some(local));
    };
    let tagged = index.manifests().iter().any(|m| {
        m.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION)).is_some_and(|t| t == tag)
    });
    if tagged {
        Ok(Some(local))
    } else {
        Err(failed(ImageFailure::TagMissing { tag: tag.to_string() }))
    }
}

/// An importer of an image, and what it reads.
#[derive(Debug)]
pub struct Opened {
    /// The importer, writing the image as the reference the caller gave.
    pub imp: ImageImporter,
    /// Who its skopeo runs as.
    pub run_as: RunAs,
    /// What the importer reads: the caller's reference, or the temporary
    /// layout the image was copied to.
    pub source: OstreeImageReference,
    /// That layout, removed when the import is done with it.
    pub copied: Option<CopiedLayout>,
}

/// An importer for `imgref` writing into `repo`, and who its skopeo runs
/// as; that skopeo ends when `cancel` fires, opening included. A
/// docker-archive, or a containers-storage image the installed skopeo cannot
/// read through its proxy, is copied into a temporary layout first
/// ([`copied_layout`]).
pub async fn open(
    repo: &ostree::Repo,
    imgref: &OstreeImageReference,
    untrusted: UntrustedPaths,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Opened, Error> {
    require_skopeo()?;
    let local = inspect_local(imgref, untrusted)?;
    let run_as = skopeo::run_as(imgref.imgref.transport, local.as_ref());
    let copied = match copied_layout::route(imgref.imgref.transport).await? {
        Route::Proxy => None,
        Route::CopiedLayout => Some(copied_layout::copy(repo, imgref, run_as, progress, cancel).await?),
    };
    let source = copied.as_ref().map_or_else(|| imgref.clone(), |c| c.source.clone());
    let config = skopeo::proxy_config(run_as, cancel).map_err(|e| Error::image(imgref, e))?;
    // hostd evaluates the policy of an enforced image itself, with the
    // scopes of its transport ([`signature`]); ostree-ext's own test, that
    // the policy's global default is not `insecureAcceptAnything`, would
    // refuse the usual policy that signs only some registries.
    let unchecked = |r: &OstreeImageReference| OstreeImageReference {
        sigverify: match &r.sigverify {
            SignatureSource::ContainerPolicy => SignatureSource::ContainerPolicyAllowInsecure,
            other => other.clone(),
        },
        imgref: r.imgref.clone(),
    };
    let mut imp = cancellable(cancel, async {
        ImageImporter::new(repo, &unchecked(&source), config).await.map_err(|e| Error::image(imgref, e))
    })
    .await?;
    if copied.is_some() {
        // Stored, and tracked, as the containers-storage image it is.
        imp.set_target(&unchecked(imgref));
    }
    imp.require_bootable();
    Ok(Opened { imp, run_as, source, copied })
}

/// The stored image of `imgref` when it is the image `prep` would import:
/// the same config (image id), as ostree-ext's `prepare` finds it for a
/// reference it reads itself. For an import from a copied layout, whose
/// reference ostree-ext does not know the stored image by.
fn stored_as(repo: &ostree::Repo, imgref: &OstreeImageReference, prep: &PreparedImport) -> Option<Box<LayeredImageState>> {
    let state = store::query_image(repo, &imgref.imgref).ok()??;
    (state.manifest.config().digest() == prep.manifest.config().digest()).then_some(state)
}

/// `prepare` of an opened import; for an import from a copied layout, an
/// image already stored under the caller's reference is `AlreadyPresent`.
async fn prepare_opened(
    repo: &ostree::Repo,
    opened: &mut Opened,
    imgref: &OstreeImageReference,
    cancel: &CancellationToken,
) -> Result<PrepareResult, Error> {
    let prepared = prepare(&mut opened.imp, imgref, &opened.source, opened.run_as, cancel).await?;
    match prepared {
        PrepareResult::Ready(prep) if opened.copied.is_some() => match stored_as(repo, imgref, &prep) {
            Some(state) => Ok(PrepareResult::AlreadyPresent(state)),
            None => Ok(PrepareResult::Ready(prep)),
        },
        other => Ok(other),
    }
}

/// The labels an image needs for ostree-ext to import and boot it: one of
/// the first two, and the third.
const BOOTABLE_LABELS: [&str; 3] = ["ostree.bootable", BOOTC_LABEL, DIFFID_LABEL];

/// `prepare`, with a failure explained by the image's labels where they
/// show it is no ostree/bootc image. ostree-ext says so only in prose, so
/// when it fails for a reason other than the image proxy's, hostd reads the
/// image's config itself (one more skopeo run, on this path only).
async fn prepare(
    imp: &mut ImageImporter,
    imgref: &OstreeImageReference,
    source: &OstreeImageReference,
    run_as: RunAs,
    cancel: &CancellationToken,
) -> Result<PrepareResult, Error> {
    let e = match imp.prepare().await {
        Ok(prepared) => return Ok(prepared),
        Err(e) => e,
    };
    let proxy_failed = e.chain().any(|c| c.is::<ostree_ext::containers_image_proxy::Error>());
    if !proxy_failed && !has_bootable_labels(source, run_as, cancel).await.unwrap_or(true) {
        let labels = BOOTABLE_LABELS.to_vec();
        return Err(Error::image_failure(imgref, ImageFailure::NotBootable { labels }));
    }
    Err(Error::image(imgref, e))
}

/// Whether the image's config carries the labels of an ostree/bootc image.
async fn has_bootable_labels(imgref: &OstreeImageReference, run_as: RunAs, cancel: &CancellationToken) -> anyhow::Result<bool> {
    let config = skopeo::proxy_config(run_as, cancel)?;
    let proxy = ImageProxy::new_with_config(config).await?;
    let opened = proxy.open_image(&imgref.imgref.to_string()).await?;
    let config = proxy.fetch_config(&opened).await?;
    proxy.close_image(&opened).await?;
    let labels = config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
    let has = |l: &str| labels.contains_key(l);
    Ok((has(BOOTABLE_LABELS[0]) || has(BOOTABLE_LABELS[1])) && has(BOOTABLE_LABELS[2]))
}

/// What fetching a prepared import will cost.
pub fn summarize(prep: &PreparedImport) -> UpdateSummary {
    let meta = ImageMetadata::of(&prep.manifest, &prep.config);
    let mut summary = UpdateSummary {
        digest: prep.manifest_digest.to_string(),
        timestamp: meta.timestamp(),
        version: meta.version,
        bytes_to_fetch: 0,
        layers_to_fetch: 0,
        layers_total: 0,
    };
    for layer in prep.all_layers() {
        summary.layers_total += 1;
        if layer.commit.is_none() {
            summary.layers_to_fetch += 1;
            summary.bytes_to_fetch += layer.layer().size();
        }
    }
    summary
}

/// An update fetched already: its name, nothing to fetch.
fn downloaded_summary(state: &store::LayeredImageState) -> UpdateSummary {
    let meta = ImageMetadata::of(&state.manifest, &state.configuration);
    let layers = u32::try_from(state.manifest.layers().len()).unwrap_or(u32::MAX);
    UpdateSummary {
        digest: state.manifest_digest.to_string(),
        timestamp: meta.timestamp(),
        version: meta.version,
        bytes_to_fetch: 0,
        layers_to_fetch: 0,
        layers_total: layers,
    }
}

/// Every layer of a prepared import, in the order `import` fetches them
/// (the content chunks, the ostree commit, then derived layers), cached or
/// not.
fn layer_plan(prep: &PreparedImport) -> Vec<Layer> {
    let chunks = prep.ostree_layers.iter().chain(std::iter::once(&prep.ostree_commit_layer));
    let chunks = chunks.map(|l| (l, LayerKind::Chunk));
    chunks
        .chain(prep.layers.iter().map(|l| (l, LayerKind::Derived)))
        .map(|(l, kind)| Layer {
            digest: l.layer().digest().to_string(),
            kind,
            size: l.layer().size(),
            cached: l.commit.is_some(),
        })
        .collect()
}

/// `Check`: fetch manifest and config of the tracked image; ostree-ext caches
/// them on the deployed commit so `Status` shows `cachedUpdate` offline.
/// What was found is judged by [`update_rule`]; a cached update the check
/// did not find again (the tag moved back) is removed from the deployed commit.
pub async fn check(
    sysroot: &SysrootPath,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    progress.phase(Phase::Checking, "fetching the image manifest");
    let locked = sysroot.lock(cancel, || progress.message("waiting for the sysroot lock")).await?;
    let (merge, imgref) = tracked_image(&locked)?;
    progress.image(&crate::sysroot::image::user_reference(&imgref));
    let repo = locked.repo();
    let current = store::query_image_commit(&repo, merge.csum().as_str()).ok();
    let deployed = current.as_deref().map(update_rule::state_facts);
    // A check installs nothing, so any readable path may be looked at.
    let mut opened = open(&repo, &imgref, UntrustedPaths::Allowed, progress, cancel).await?;
    let mut prepared = cancellable(cancel, prepare_opened(&repo, &mut opened, &imgref, cancel)).await?;
    if let PrepareResult::Ready(prep) = &mut prepared {
        // The estimate follows the tracked reference; `[updates]
        // require_signatures` is applied when the update is fetched.
        let signatures = match imgref.sigverify {
            SignatureSource::ContainerPolicy => Signatures::Enforced,
            _ => Signatures::NotChecked,
        };
        let deployed = deployed_commits(&locked);
        layer_reuse::reuse(&repo, &deployed, signatures, prep, Record::Nothing)?;
    }
    let (outcome, found) = match &prepared {
        PrepareResult::AlreadyPresent(state) => {
            let deployed_commit = state.merge_commit == merge.csum().as_str();
            judged(deployed.as_ref(), &update_rule::state_facts(state), deployed_commit, || Outcome {
                message: format!("Update {} is downloaded and not yet deployed.", state.manifest_digest),
                // Named, so the record of this check follows the update
                // once it is deployed; nothing is left to fetch.
                update: Some(downloaded_summary(state)),
                change: None,
            })
        }
        PrepareResult::Ready(prep) => {
            let found = update_rule::facts(prep.manifest_digest.as_ref(), &prep.manifest, &prep.config);
            judged(deployed.as_ref(), &found, false, || {
                let s = summarize(prep);
                Outcome {
                    message: format!(
                        "Update available: {} ({}), {} of {} layers to fetch, {} bytes.",
                        s.version.as_deref().unwrap_or("no version"),
                        s.digest,
                        s.layers_to_fetch,
                        s.layers_total,
                        s.bytes_to_fetch
                    ),
                    update: Some(s),
                    change: None,
                }
            })
        }
    };
    forget_cached_update(&repo, merge.csum().as_str(), found.as_deref())?;
    match found {
        Some(digest) if locked.booted_deployment().is_some() => Ok(with_health_failure(outcome, &digest, sysroot.state_dir())),
        _ => Ok(outcome),
    }
}

/// A check that found image `digest`, which failed its boot health checks
/// on this host (docs/health.md, "Rollback rule"), says so: unattended
/// runs will not install it.
fn with_health_failure(mut outcome: Outcome, digest: &str, state_dir: &std::path::Path) -> Outcome {
    if let Some(failed) = crate::health::record::HealthRecord::failed_images(state_dir).get(digest) {
        outcome.message = format!(
            "{} It failed its boot health checks on {}: unattended updates skip it; hostctl upgrade --retry-failed installs it.",
            outcome.message, failed.failed_at
        );
    }
    outcome
}

/// A check's outcome for `found` (the deployed commit itself when
/// `deployed_commit`), by [`update_rule`], and the digest whose cached
/// update stays on the deployed commit (`None`: nothing new was found).
fn judged(
    deployed: Option<&ImageFacts<'_>>,
    found: &ImageFacts<'_>,
    deployed_commit: bool,
    update: impl FnOnce() -> Outcome,
) -> (Outcome, Option<String>) {
    let verdict = if deployed_commit { Verdict::Same } else { update_rule::classify_against(deployed, found) };
    let keep = Some(found.manifest_digest.to_string());
    match (verdict, deployed) {
        (Verdict::Same, _) => (Outcome::message(NO_UPDATE), None),
        (Verdict::Downgrade, Some(d)) => (Outcome::message(update_rule::downgrade_message(found, d)), keep),
        (Verdict::Update | Verdict::Downgrade, _) => (update(), keep),
    }
}

/// The result of a check or upgrade that found the deployed image.
pub const NO_UPDATE: &str = "No update available.";

/// The detached-metadata keys under which ostree-ext's `prepare` caches the
/// manifest and config it found on the commit the image pointed to before
/// (`ImageImporter::CACHED_KEY_*`, private to ostree-ext 0.15; what
/// `store::query_image_commit` reads back as `cached_update`).
const CACHED_UPDATE_KEYS: [&str; 3] =
    ["ostree-ext.cached.manifest-digest", "ostree-ext.cached.manifest", "ostree-ext.cached.config"];

/// Remove the update cached on `commit` unless it is the image of digest
/// `keep`, so the Host document and `CachedUpdate` never show what the last
/// check did not find. Other detached metadata of the commit stays.
pub fn forget_cached_update(repo: &ostree::Repo, commit: &str, keep: Option<&str>) -> Result<(), Error> {
    let Some(meta) = repo
        .read_commit_detached_metadata(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading the detached metadata of {commit}"))?
    else {
        return Ok(());
    };
    let dict = glib::VariantDict::new(Some(&meta));
    // A value of another type under the key is not ostree-ext's cache:
    // left alone, like any other metadata.
    let cached = dict.lookup::<String>(CACHED_UPDATE_KEYS[0]).ok().flatten();
    if cached.is_none() || cached.as_deref() == keep {
        return Ok(());
    }
    for key in CACHED_UPDATE_KEYS {
        dict.remove(key);
    }
    let rest = dict.end();
    // No metadata left: libostree removes the file.
    let rest = (rest.n_children() > 0).then_some(rest);
    repo.write_commit_detached_metadata(commit, rest.as_ref(), gio::Cancellable::NONE)
        .with_context(|| format!("removing the cached update of {commit}"))?;
    tracing::info!("forgot the cached update {} of {commit}", cached.unwrap_or_default());
    Ok(())
}

/// How often the bytes fetched of the current layer are looked at.
const BYTE_PROGRESS_SAMPLING: std::time::Duration = std::time::Duration::from_millis(100);

/// The layer being fetched, for byte progress within it.
///
/// Layers reach hostd through a pipe from skopeo, so the bytes this process
/// has read (`rchar` of `/proc/self/io`) since the layer started are the
/// bytes of it fetched so far, give or take hostd's other (small) reads,
/// which is why the count is capped at the layer's size. ostree-ext can
/// report the same (`request_layer_progress`), but it wakes the job's
/// thread for every 8 KiB read to do so, which made a 200 MiB pull use a
/// quarter more CPU than the import itself (docs/performance.md).
struct LayerRead {
    size: u64,
    read_at_start: u64,
}

impl LayerRead {
    /// `None` where `/proc/self/io` cannot be read: progress by layers only.
    fn start(size: u64) -> Option<LayerRead> {
        Some(LayerRead { size, read_at_start: bytes_read_by_this_process()? })
    }

    fn bytes_so_far(&self) -> Option<u64> {
        Some(bytes_read_by_this_process()?.saturating_sub(self.read_at_start).min(self.size))
    }
}

/// Bytes this process has read through `read(2)` and its kind, all threads.
fn bytes_read_by_this_process() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok())
}

/// Whether an image's signatures are checked before it is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// The containers policy must accept the manifest the import reads
    /// ([`signature`]).
    Enforced,
    /// Imported as found (`ostree-unverified-registry`).
    NotChecked,
}

/// What a fetch may read and must verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Whether a local path others can write may be read.
    pub untrusted: UntrustedPaths,
    /// Whether the containers policy is enforced.
    pub signatures: Signatures,
}

/// The error for an enforced image the image proxy could not open: where
/// the proxy evaluates the policy itself (protocol 0.2.6 on) its refusal is
/// only text, so hostd evaluates the reference to tell a rejection (named
/// as such) from any other failure (`e`, unchanged).
async fn name_refusal(imgref: &OstreeImageReference, e: Error, cancel: &CancellationToken) -> Error {
    let proxy_evaluates = skopeo::proxy_protocol().await.is_some_and(|v| v >= skopeo::POLICY_EVALUATING_PROTOCOL);
    if !proxy_evaluates || !matches!(e, Error::Image { .. }) {
        return e;
    }
    // The open got past the path's checks, so they pass again.
    let local = inspect_local(imgref, UntrustedPaths::Allowed).ok().flatten();
    let run_as = skopeo::run_as(imgref.imgref.transport, local.as_ref());
    match signature::verify(signature::Subject { imgref, manifest: None, run_as }, cancel).await {
        Err(rejected @ Error::SignatureRejected(_)) => rejected,
        _ => e,
    }
}

/// Evaluate the containers policy for `state`, an image stored earlier
/// (downloaded before the policy applied to it, or by a download-only run),
/// by the digest it was stored under, read as a pull of `imgref` reads it.
pub async fn verify_stored(
    imgref: &OstreeImageReference,
    state: &LayeredImageState,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let local = inspect_local(imgref, UntrustedPaths::Allowed)?;
    let run_as = skopeo::run_as(imgref.imgref.transport, local.as_ref());
    progress.message(&format!("evaluating the containers signature policy for {}", state.manifest_digest));
    let manifest = Some((state.manifest_digest.to_string(), state.manifest.clone()));
    signature::verify(signature::Subject { imgref, manifest, run_as }, cancel).await
}

/// The commit checksums of every deployment of the sysroot (booted, staged,
/// rollback, pinned, any other): whose images' layers may be reused
/// ([`layer_reuse`]).
pub fn deployed_commits(sysroot: &ostree::Sysroot) -> Vec<String> {
    sysroot.deployments().iter().map(|d| d.csum().to_string()).collect()
}

/// Result of [`fetch`].
#[derive(Debug)]
pub enum Fetched {
    /// The repo already had this image.
    AlreadyPresent(Box<LayeredImageState>),
    /// Newly imported, with what it cost.
    Imported(Box<LayeredImageState>, UpdateSummary),
    /// `before_import` declined the image without an error (an unattended
    /// run that found a downgrade); nothing was fetched. The job's message.
    Declined(String),
}

/// What `before_import` decides about a prepared import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// Fetch the layers.
    Proceed,
    /// Fetch nothing, and end the job with this message.
    Decline(String),
}

/// Fetch the layers of `imgref` missing from the repo and write the merged
/// commit, reporting progress. `before_import` sees the prepared import and
/// what fetching it costs first (free space, downgrade checks) and may refuse
/// it (an error) or decline it (no error, nothing fetched). Layers of the
/// images of `deployed` (deployment commit checksums,
/// [`deployed_commits`]) may be reused ([`layer_reuse`]).
pub async fn fetch(
    repo: &ostree::Repo,
    deployed: &[String],
    imgref: &OstreeImageReference,
    access: Access,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    before_import: impl FnOnce(&PreparedImport, &UpdateSummary) -> Result<Import, Error>,
) -> Result<Fetched, Error> {
    progress.phase(Phase::Checking, "fetching the image manifest");
    progress.image(&crate::sysroot::image::user_reference(imgref));
    let opened = async {
        let mut opened = open(repo, imgref, access.untrusted, progress, cancel).await?;
        let prepared = cancellable(cancel, prepare_opened(repo, &mut opened, imgref, cancel)).await?;
        Ok((opened, prepared))
    };
    let (opened, prepared) = match opened.await {
        Ok(opened) => opened,
        Err(e) if access.signatures == Signatures::Enforced => return Err(name_refusal(imgref, e, cancel).await),
        Err(e) => return Err(e),
    };
    let Opened { mut imp, run_as, copied, .. } = opened;
    let mut prep = match prepared {
        // Fetched earlier, perhaps before the policy applied to it: the
        // caller evaluates it if it is to be deployed ([`verify_stored`]).
        PrepareResult::AlreadyPresent(state) => return Ok(Fetched::AlreadyPresent(state)),
        PrepareResult::Ready(prep) => prep,
    };
    layer_reuse::reuse(repo, deployed, access.signatures, &mut prep, Record::Refs)?;
    let summary = summarize(&prep);
    if let Import::Decline(message) = before_import(&prep, &summary)? {
        return Ok(Fetched::Declined(message));
    }
    // The manifest the import reads is the one evaluated: no second request
    // for the tag comes between them.
    if access.signatures == Signatures::Enforced {
        let digest = &prep.manifest_digest;
        progress.phase(Phase::Checking, &format!("evaluating the containers signature policy for {digest}"));
        let subject = signature::Subject { imgref, manifest: Some((digest.to_string(), prep.manifest.clone())), run_as };
        signature::verify(subject, cancel).await?;
    }
    progress.phase(
        Phase::Pulling,
        &format!("fetching {} of {} layers", summary.layers_to_fetch, summary.layers_total),
    );
    progress.layer_plan(&layer_plan(&prep));
    progress.layers(0, summary.layers_to_fetch);
    progress.bytes(0, summary.bytes_to_fetch);

    let mut layer_events = imp.request_progress();
    let totals = summary.clone();
    let reporter = async {
        let mut layers_done = 0u32;
        let mut bytes_completed = 0u64;
        let mut current: Option<LayerRead> = None;
        let mut sample = tokio::time::interval(BYTE_PROGRESS_SAMPLING);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = layer_events.recv() => match ev {
                    Some(ImportProgress::OstreeChunkStarted(layer) | ImportProgress::DerivedLayerStarted(layer)) => {
                        current = LayerRead::start(layer.size());
                    }
                    Some(ImportProgress::OstreeChunkCompleted(layer) | ImportProgress::DerivedLayerCompleted(layer)) => {
                        current = None;
                        layers_done += 1;
                        bytes_completed += layer.size();
                        progress.layers(layers_done.min(totals.layers_to_fetch), totals.layers_to_fetch);
                        progress.bytes(bytes_completed.min(totals.bytes_to_fetch), totals.bytes_to_fetch);
                    }
                    None => break,
                },
                _ = sample.tick(), if current.is_some() => {
                    if let Some(partial) = current.as_ref().and_then(LayerRead::bytes_so_far) {
                        progress.bytes((bytes_completed + partial).min(totals.bytes_to_fetch), totals.bytes_to_fetch);
                    }
                }
            }
        }
    };
    let import = cancellable(cancel, async { imp.import(prep).await.map_err(|e| Error::image(imgref, e)) });
    let (state, ()) = tokio::join!(import, reporter);
    // The copied layout has been read: removed before the deployment is written.
    drop(copied);
    let state = state?;
    progress.layers(summary.layers_to_fetch, summary.layers_to_fetch);
    progress.bytes(summary.bytes_to_fetch, summary.bytes_to_fetch);
    Ok(Fetched::Imported(state, summary))
}
