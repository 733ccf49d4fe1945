//! Queuing a fetched image for the next boot: staged on a booted host (the
//! /etc merge happens at shutdown in ostree-finalize-staged), written as the
//! new default deployment on an offline sysroot.

use std::path::Path;

use anyhow::Context;
use hostd_interface::host::ImageReference;
use ostree_ext::container::deploy::ORIGIN_CONTAINER;
use ostree_ext::container::store::{self, LayeredImageState};
use ostree_ext::container::{OstreeImageReference, SignatureSource};
use ostree_ext::{glib, ostree};
use tokio_util::sync::CancellationToken;

use super::cancel::Interruptible;
use super::metadata::ImageMetadata;
use super::progress::{Phase, Progress};
use super::pull::{self, Fetched, Import};
use super::update_rule::{self, ImageFacts, Verdict};
use super::{bound_images, bound_storage, filtered, image, kargs, merge_deployment, origin_reference, Error, ImageFailure, Outcome, SysrootPath, UpdateSummary};
use crate::failpoint::points;
use crate::journal::{Change, Event};

/// Marker that keeps ostree-finalize-staged from applying the staged deployment.
pub const STAGED_LOCK_FILE: &str = "/run/ostree/staged-deployment-locked";

/// Space kept free beyond the estimate.
const SPACE_MARGIN: u64 = 16 << 20;
/// Unpacked layers take more room than their compressed size.
const UNPACK_FACTOR: u64 = 2;

/// How an update or `Stage` writes its deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeployOptions {
    /// Fetch, and on a booted host stage the deployment finalization-locked
    /// (applied only by a later `Stage`); on an offline sysroot, fetch only.
    pub download_only: bool,
    /// Keep the other deployments of an offline sysroot instead of
    /// replacing the previous default.
    pub retain: bool,
    /// Accept an image built before the deployed one.
    pub allow_downgrade: bool,
    /// Accept an image whose deployment failed its boot health checks.
    pub retry_failed: bool,
    /// An unattended run (`Upgrade({auto})`): an image built before the
    /// deployed one ends the job successfully, nothing fetched, instead of
    /// failing it.
    pub unattended: bool,
    /// `Stage`: an update already queued for the next boot is not an error
    /// (the caller reboots into it next).
    pub queued_is_enough: bool,
    /// The caller may choose what the host runs (root, or granted
    /// `switch`): an `Upgrade` may then re-read a local path others can write.
    pub may_choose_image: bool,
    /// `[updates] require_signatures`: the containers policy must accept
    /// every image deployed, whatever its reference says.
    pub require_signatures: bool,
}

/// Whether `imgref`'s signatures are checked: tracked as
/// `ostree-image-signed`, or required of every image by the configuration.
fn signatures_for(imgref: &OstreeImageReference, options: &DeployOptions) -> pull::Signatures {
    if options.require_signatures || imgref.sigverify == SignatureSource::ContainerPolicy {
        pull::Signatures::Enforced
    } else {
        pull::Signatures::NotChecked
    }
}

/// `Upgrade` (no image) or `Switch` (to `switch_to`).
pub async fn update(
    sysroot: &SysrootPath,
    switch_to: Option<&ImageReference>,
    options: &DeployOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    let booted = locked.booted_deployment().is_some();
    let merge = merge_deployment(&locked);
    let imgref = match switch_to {
        Some(r) => image::reference_from_api(r),
        None => super::tracked_image(&locked)?.1,
    };
    let repo = locked.repo();
    let current = merge
        .as_ref()
        .and_then(|m| store::query_image_commit(&repo, m.csum().as_str()).ok());
    // A `Switch` was authorized as choosing its image.
    let untrusted = if switch_to.is_some() || options.may_choose_image {
        pull::UntrustedPaths::Allowed
    } else {
        pull::UntrustedPaths::Refused
    };
    let access = pull::Access { untrusted, signatures: signatures_for(&imgref, options) };
    let repo_path = sysroot.path().join("ostree/repo");
    // Switching to another image is an explicit choice of what to run.
    let judged = switch_to.is_none() && !options.allow_downgrade;
    let deployed = current.as_deref().map(update_rule::state_facts);
    let failed = if booted && switch_to.is_none() && !options.retry_failed {
        crate::health::record::HealthRecord::failed_images(sysroot.state_dir())
    } else {
        Default::default()
    };
    let judge = |found: &ImageFacts<'_>| {
        if let Import::Decline(message) = not_failed_before(&failed, found, options.unattended)? {
            return Ok(Import::Decline(message));
        }
        match &deployed {
            Some(d) if judged => not_a_downgrade(d, found, options.unattended),
            _ => Ok(Import::Proceed),
        }
    };
    let deployed = pull::deployed_commits(&locked);
    let fetched = pull::fetch(&repo, &deployed, &imgref, access, progress, cancel, |prep, cost| {
        let found = update_rule::facts(prep.manifest_digest.as_ref(), &prep.manifest, &prep.config);
        if let Import::Decline(message) = judge(&found)? {
            return Ok(Import::Decline(message));
        }
        ensure_space(&repo, &repo_path, cost)?;
        Ok(Import::Proceed)
    })
    .await?;
    let state = match &fetched {
        Fetched::Declined(message) => return Ok(Outcome::message(message.clone())),
        Fetched::AlreadyPresent(state) => {
            // Fetched earlier (download-only with allow-downgrade): the
            // same rule as for an image still to fetch.
            if let Import::Decline(message) = judge(&update_rule::state_facts(state))? {
                return Ok(Outcome::message(message));
            }
            state
        }
        Fetched::Imported(state, _) => state,
    };
    Interruptible { progress, cancel }.failpoint(points::AFTER_PULL);
    let version = ImageMetadata::of(&state.manifest, &state.configuration).version_or_none().to_string();
    let digest = state.manifest_digest.to_string();

    let merge_commit = merge.as_ref().map(|m| m.csum().to_string());
    let staged = locked.staged_deployment();
    let same_as_merge = merge_commit.as_deref() == Some(state.merge_commit.as_str());
    let same_tracking = merge.as_ref().and_then(|m| origin_reference(m).ok().flatten()).as_ref() == Some(&imgref);
    if same_as_merge && same_tracking && staged.is_none() {
        if let (None, Some(m)) = (switch_to, &merge_commit) {
            // A check like any other: what it did not find is no update.
            pull::forget_cached_update(&repo, m, None)?;
        }
        return Ok(Outcome::message(pull::NO_UPDATE));
    }
    if let (Fetched::AlreadyPresent(state), pull::Signatures::Enforced) = (&fetched, access.signatures) {
        pull::verify_stored(&imgref, state, progress, cancel).await?;
    }
    if let Some(s) = &staged {
        let locked_now = Path::new(STAGED_LOCK_FILE).exists();
        if s.csum().as_str() == state.merge_commit && locked_now == options.download_only {
            return Ok(Outcome::message(format!("{version} ({digest}) is already staged.")));
        }
    }
    warn_left_out(&repo, &state.merge_commit, progress);
    if options.download_only && !booted {
        return Ok(Outcome::message(format!(
            "Downloaded {version} ({digest}); Stage deploys it."
        )));
    }
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    let kargs = kernel_args(&repo, merge.as_ref(), &imgref, state)?;
    let fetched_bytes = match &fetched {
        Fetched::Imported(_, s) => s.bytes_to_fetch,
        Fetched::AlreadyPresent(_) | Fetched::Declined(_) => 0,
    };
    let bound = BoundPull { commit: &state.merge_commit, fetched_bytes };
    pull_bound_images(sysroot, &repo, &imgref, merge.as_ref(), bound, progress, cancel).await?;
    progress.phase(Phase::Staging, "writing the deployment");
    write_deployment(&locked, merge.as_ref(), &imgref, state, kargs, options, Interruptible { progress, cancel })?;
    if booted {
        mark_for_assessment(sysroot.state_dir(), &state.merge_commit, &digest, options.retry_failed, progress);
    }
    if !booted {
        progress.phase(Phase::Cleanup, "pruning images no deployment uses");
        ostree_ext::container::deploy::prune(&locked.as_ostree_ext_lock())?;
        let _removed = super::cleanup::prune_bound_images(sysroot, &locked, progress, cancel).await;
    }
    let fetched_note = match &fetched {
        Fetched::Imported(_, s) => format!(" ({} layers, {} bytes fetched)", s.layers_to_fetch, s.bytes_to_fetch),
        Fetched::AlreadyPresent(_) | Fetched::Declined(_) => String::new(),
    };
    let message = if booted && options.download_only {
        format!("Downloaded {version} ({digest}){fetched_note}; it is staged but locked: Stage applies it at the next boot.")
    } else if booted {
        format!("Staged {version} ({digest}){fetched_note} for the next boot.")
    } else {
        format!("Deployed {version} ({digest}){fetched_note} as the default deployment.")
    };
    let change = Change {
        event: if switch_to.is_some() { Event::Switched } else { Event::Staged },
        old_checksum: merge_commit,
        new_checksum: Some(state.merge_commit.clone()),
        image: Some(imgref.to_string()),
    };
    Ok(Outcome::changed(message, change))
}

/// `Stage`: promote a downloaded update without touching the network. With
/// `apply`, an update that is already queued is fine: the reboot follows.
pub async fn stage(
    sysroot: &SysrootPath,
    options: &DeployOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    if let Some(staged) = locked.staged_deployment() {
        progress.phase(Phase::Staging, "queuing the downloaded update");
        if !Path::new(STAGED_LOCK_FILE).exists() {
            if options.queued_is_enough {
                return Ok(Outcome::message(format!("Deployment {} is queued for the next boot.", staged.csum())));
            }
            return Err(Error::NothingToStage("the staged deployment is already queued".into()));
        }
        // Fetched by a download-only run, perhaps before the policy
        // applied to it: evaluated again before it is let through.
        if let Some(imgref) = origin_reference(&staged).ok().flatten() {
            if signatures_for(&imgref, options) == pull::Signatures::Enforced {
                let state = store::query_image_commit(&locked.repo(), staged.csum().as_str())?;
                pull::verify_stored(&imgref, &state, progress, cancel).await?;
            }
        }
        std::fs::remove_file(STAGED_LOCK_FILE)
            .with_context(|| format!("removing {STAGED_LOCK_FILE}"))?;
        warn_left_out(&locked.repo(), staged.csum().as_str(), progress);
        let booted = locked.booted_deployment();
        let origin = origin_reference(&staged).ok().flatten();
        if let Some(origin) = &origin {
            progress.image(&super::image::user_reference(origin));
        }
        let change = Change {
            event: Event::Staged,
            old_checksum: booted.map(|b| b.csum().to_string()),
            new_checksum: Some(staged.csum().to_string()),
            image: origin.map(|r| r.to_string()),
        };
        return Ok(Outcome::changed(
            format!("Deployment {} will be applied at the next boot.", staged.csum()),
            change,
        ));
    }
    let (merge, imgref) = super::tracked_image(&locked)?;
    progress.image(&super::image::user_reference(&imgref));
    let repo = locked.repo();
    let state = store::query_image(&repo, &imgref.imgref)?
        .filter(|s| s.merge_commit != merge.csum().as_str())
        .ok_or_else(|| Error::NothingToStage("no downloaded update is waiting to be staged".into()))?;
    if signatures_for(&imgref, options) == pull::Signatures::Enforced {
        // Downloaded perhaps before the policy applied to it: the digest
        // about to be deployed is evaluated now.
        pull::verify_stored(&imgref, &state, progress, cancel).await?;
    }
    warn_left_out(&repo, &state.merge_commit, progress);
    let kargs = kernel_args(&repo, Some(&merge), &imgref, &state)?;
    let bound = BoundPull { commit: &state.merge_commit, fetched_bytes: 0 };
    pull_bound_images(sysroot, &repo, &imgref, Some(&merge), bound, progress, cancel).await?;
    progress.phase(Phase::Staging, "queuing the downloaded update");
    write_deployment(&locked, Some(&merge), &imgref, &state, kargs, &DeployOptions::default(), Interruptible { progress, cancel })?;
    if locked.booted_deployment().is_some() {
        // A download-only deployment a reboot dropped, staged anew.
        mark_for_assessment(sysroot.state_dir(), &state.merge_commit, state.manifest_digest.as_ref(), false, progress);
    }
    let version = ImageMetadata::of(&state.manifest, &state.configuration).version_or_none().to_string();
    let change = Change {
        event: Event::Staged,
        old_checksum: Some(merge.csum().to_string()),
        new_checksum: Some(state.merge_commit.clone()),
        image: Some(imgref.to_string()),
    };
    Ok(Outcome::changed(
        format!("Deployed the downloaded {version} ({}) as the default deployment.", state.manifest_digest),
        change,
    ))
}

/// Pull the images the commit `commit` of `imgref` binds
/// (`/usr/lib/bootc/bound-images.d`) into the bound-image store, before the
/// deployment is written: a deployment never boots without them. A
/// malformed entry refuses the image as a malformed kargs.d does
/// (`NotBootable`, the import forgotten); a failed pull fails the job with
/// the registry's answer named, and the fetched image stays for the next try.
async fn pull_bound_images(
    sysroot: &SysrootPath,
    repo: &ostree::Repo,
    imgref: &OstreeImageReference,
    merge: Option<&ostree::Deployment>,
    bound: BoundPull<'_>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let images = match bound_images::of_commit(repo, bound.commit).context("reading the new image's bound-images.d")? {
        Ok(images) => images,
        Err(bad) => {
            forget_refused_import(repo, imgref, merge);
            return Err(Error::image_failure(imgref, ImageFailure::MalformedBoundImages(bad)));
        }
    };
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    bound_storage::Store::of(sysroot.path()).pull_all(&images, bound.fetched_bytes, progress, cancel).await
}

/// Whose bound images [`pull_bound_images`] pulls, and the bytes the job
/// fetched for that image already (its byte counts continue from them).
#[derive(Debug, Clone, Copy)]
struct BoundPull<'a> {
    /// The merged commit of the image to deploy.
    commit: &'a str,
    /// Bytes the job fetched for it.
    fetched_bytes: u64,
}

/// Tell the job what ostree-ext left out of the image whose merged commit
/// is `commit` (content outside /usr, /etc, /var). Not being able to read
/// that record is a warning too, not a reason to fail the deployment.
fn warn_left_out(repo: &ostree::Repo, commit: &str, progress: &dyn Progress) {
    match filtered::left_out(repo, commit) {
        Ok(left_out) => {
            if let Some(warning) = left_out.warning() {
                progress.warning(&warning);
            }
        }
        Err(e) => progress.warning(&format!("hostd could not read which content of the image is not deployed: {e:#}")),
    }
}

fn write_deployment(
    sysroot: &ostree::Sysroot,
    merge: Option<&ostree::Deployment>,
    imgref: &OstreeImageReference,
    state: &LayeredImageState,
    kargs: Option<Vec<String>>,
    options: &DeployOptions,
    job: Interruptible<'_>,
) -> anyhow::Result<()> {
    // libostree checks it between the steps of the write (checkout, /etc
    // merge, bootloader): Cancel and the time limit reach into the call.
    let link = job.link();
    job.failpoint(points::DEPLOY_WRITE);
    let cancellable = Some(link.get());
    let stateroot = merge
        .map(|m| m.osname().to_string())
        .unwrap_or_else(|| ostree_ext::container::deploy::STATEROOT_DEFAULT.to_string());
    let origin = glib::KeyFile::new();
    origin.set_string("origin", ORIGIN_CONTAINER, &imgref.to_string());
    let karg_refs: Option<Vec<&str>> = kargs.as_ref().map(|k| k.iter().map(String::as_str).collect());
    let opts = ostree::SysrootDeployTreeOpts {
        override_kernel_argv: karg_refs.as_deref(),
        ..Default::default()
    };
    let commit = state.merge_commit.as_str();
    if sysroot.booted_deployment().is_some() {
        // The lock must exist before the staged deployment does, or a
        // shutdown in between would apply a download-only update.
        set_staged_lock(options.download_only)?;
        sysroot
            .stage_tree_with_options(Some(&stateroot), commit, Some(&origin), merge, &opts, cancellable)
            .context("staging the deployment")?;
        job.failpoint(points::AFTER_STAGING);
        set_staged_lock(options.download_only)?;
    } else {
        let deployment = sysroot
            .deploy_tree_with_options(Some(&stateroot), commit, Some(&origin), merge, Some(&opts), cancellable)
            .context("writing the deployment")?;
        let flags = if options.retain {
            ostree::SysrootSimpleWriteDeploymentFlags::RETAIN
        } else {
            ostree::SysrootSimpleWriteDeploymentFlags::NONE
        };
        sysroot
            .simple_write_deployment(Some(&stateroot), &deployment, merge, flags, cancellable)
            .context("making the deployment the default")?;
    }
    Ok(())
}

fn set_staged_lock(locked: bool) -> anyhow::Result<()> {
    if locked {
        std::fs::create_dir_all("/run/ostree")?;
        std::fs::write(STAGED_LOCK_FILE, b"").with_context(|| format!("writing {STAGED_LOCK_FILE}"))
    } else {
        match std::fs::remove_file(STAGED_LOCK_FILE) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {STAGED_LOCK_FILE}"))
            }
            _ => Ok(()),
        }
    }
}

/// Kernel arguments for the new deployment, or `None` to keep the merge
/// deployment's unchanged: the difference between the kargs.d of the merge
/// deployment's commit and the new image, applied to the merge deployment's
/// boot entry (see [`kargs`]). A malformed file of the new image refuses it;
/// one of the deployed image (written by another tool) counts as empty,
/// with a warning, so the host can still move to a good image.
/// Where ostree-ext keeps the ref of each imported image (its
/// `container::store` layout), followed by the escaped image reference.
pub(super) const IMAGE_REF_PREFIX: &str = "ostree/container/image";

/// Undo what importing a refused image did to the image's ref: point it
/// back at the deployed commit it tracked before (or drop it when the
/// image was not deployed), so the refused image does not stand in for the
/// deployed one. Checks compare against that ref's image and cache what they
/// find on its commit; Stage would deploy it. Its layers stay until a cleanup.
fn forget_refused_import(repo: &ostree::Repo, imgref: &OstreeImageReference, merge: Option<&ostree::Deployment>) {
    let image_ref = match ostree_ext::refescape::prefix_escape_for_ref(IMAGE_REF_PREFIX, &imgref.imgref.to_string()) {
        Ok(r) => r,
        Err(e) => return tracing::warn!("the refused image's ref stays: {e:#}"),
    };
    let tracked_before = merge
        .filter(|m| origin_reference(m).ok().flatten().is_some_and(|o| o.imgref == imgref.imgref))
        .map(|m| m.csum().to_string());
    if let Err(e) = repo.set_ref_immediate(None, &image_ref, tracked_before.as_deref(), ostree_ext::gio::Cancellable::NONE) {
        tracing::warn!("the refused image's ref stays: {e}");
    }
}

fn kernel_args(
    repo: &ostree::Repo,
    merge: Option<&ostree::Deployment>,
    imgref: &OstreeImageReference,
    new: &LayeredImageState,
) -> Result<Option<Vec<String>>, Error> {
    let arch = kargs::host_architectures();
    let files = kargs::files_of_commit(repo, &new.merge_commit).context("reading the new image's kargs.d")?;
    let (new_image, malformed) = kargs::parse_files(&files, &arch);
    if let Some(first) = malformed.into_iter().next() {
        forget_refused_import(repo, imgref, merge);
        return Err(Error::image_failure(imgref, ImageFailure::MalformedKargs(first)));
    }
    let old_image = match merge {
        Some(m) => {
            let files = kargs::files_of_commit(repo, m.csum().as_str()).context("reading the deployed image's kargs.d")?;
            let (old_image, malformed) = kargs::parse_files(&files, &arch);
            for bad in malformed {
                tracing::warn!(deployment = %m.csum(), "the deployed image's {bad}; its arguments are not removed");
            }
            old_image
        }
        None => kargs::Kargs::default(),
    };
    let delta = kargs::Delta::between(&old_image, &new_image);
    if delta.is_empty() {
        return Ok(None);
    }
    let entry = merge
        .and_then(|m| m.bootconfig())
        .and_then(|b| b.get("options"))
        .map(|o| kargs::Kargs::parse(&o))
        .unwrap_or_default();
    let args = delta.apply(&entry);
    tracing::debug!(removed = ?delta.removed, added = ?delta.added, options = %args, "kernel arguments from kargs.d");
    Ok(Some(args.into_vec()))
}

/// Refuse an import the file system cannot hold, counting libostree's own
/// reserve (`min-free-space-percent`/`-size` of the repo config): libostree
/// refuses a write into it with a generic error whose only sign is its
/// text, so hostd checks before importing, where the cause is known.
fn ensure_space(repo: &ostree::Repo, repo_path: &Path, cost: &UpdateSummary) -> Result<(), Error> {
    let reserve = repo.min_free_space_bytes().context("reading the repo's min-free-space")?;
    let needed = cost.bytes_to_fetch.saturating_mul(UNPACK_FACTOR) + SPACE_MARGIN + reserve;
    let stat = nix::sys::statvfs::statvfs(repo_path)
        .with_context(|| format!("statvfs {}", repo_path.display()))?;
    let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if available < needed {
        return Err(Error::NotEnoughSpace(format!(
            "not enough free space in {}: {available} bytes available, about {needed} needed \
             (including {reserve} bytes libostree keeps free)",
            repo_path.display()
        )));
    }
    Ok(())
}

/// The deployment of `checksum` (image `digest`) hostd just staged gets its
/// boot health checks on its first boot (docs/health.md); a retried image
/// (`retry-failed`) no longer counts as failed. A record that cannot be
/// written is a warning: the update stands, unchecked.
fn mark_for_assessment(state_dir: &Path, checksum: &str, digest: &str, retried: bool, progress: &dyn Progress) {
    use crate::health::record::HealthRecord;
    if retried {
        match HealthRecord::forget(state_dir, digest, checksum) {
            Ok(true) => tracing::info!("{digest}: retried; its earlier boot health failure is forgotten"),
            Ok(false) => {}
            Err(e) => tracing::warn!("boot health record: {e:#}"),
        }
    }
    if let Err(e) = HealthRecord::expect_assessment(state_dir, checksum, Some(digest)) {
        progress.warning(&format!(
            "the boot health record could not be updated ({e:#}); the boot health checks will not run on this deployment's first boot"
        ));
    }
}

/// An image that failed its boot health checks is skipped by unattended
/// runs and refused otherwise, unless asked for with retry-failed
/// (docs/health.md, "Rollback rule"). Another digest on the same tag is a
/// new image and proceeds.
fn not_failed_before(
    failed: &std::collections::BTreeMap<String, crate::health::record::FailedImage>,
    found: &ImageFacts<'_>,
    unattended: bool,
) -> Result<Import, Error> {
    let Some(before) = failed.get(found.manifest_digest) else {
        return Ok(Import::Proceed);
    };
    let what = format!(
        "{} ({}) failed its boot health checks on {}",
        found.version.as_deref().unwrap_or("the image"),
        found.manifest_digest,
        before.failed_at
    );
    if unattended {
        return Ok(Import::Decline(format!("{what}; unattended updates skip it until another image is published.")));
    }
    Err(Error::Refused(format!("{what}; to install it again, ask for it with retry-failed (hostctl upgrade --retry-failed)")))
}

/// [`update_rule`] for an update of the tracked image: a downgrade is
/// refused (`InvalidArgument`), or for an unattended run declined, since
/// only an explicit `allow-downgrade` installs one.
fn not_a_downgrade(
    deployed: &ImageFacts<'_>,
    found: &ImageFacts<'_>,
    unattended: bool,
) -> Result<Import, Error> {
    if update_rule::classify(deployed, found) != Verdict::Downgrade {
        return Ok(Import::Proceed);
    }
    if unattended {
        return Ok(Import::Decline(update_rule::downgrade_message(found, deployed)));
    }
    Err(Error::Refused(format!(
        "{} ({}) was built {}, before the deployed image ({}); to install it anyway, ask for it with allow-downgrade (hostctl upgrade --allow-downgrade)",
        found.version.as_deref().unwrap_or("the image"),
        found.manifest_digest,
        found.created.map_or_else(|| "at an unknown time".to_string(), super::metadata::format_time),
        deployed.created.map_or_else(|| "unknown".to_string(), super::metadata::format_time),
    )))
}
