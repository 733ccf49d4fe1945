//! Queuing a fetched image for the next boot: staged on a booted host (the
//! /etc merge happens at shutdown in ostree-finalize-staged), written as the
//! new default deployment on an offline sysroot.

use std::path::Path;

use anyhow::Context;
use hostd_interface::host::ImageReference;
use ostree_ext::container::deploy::ORIGIN_CONTAINER;
use ostree_ext::container::store::{self, LayeredImageState, PreparedImport};
use ostree_ext::container::{OstreeImageReference, SignatureSource};
use ostree_ext::{glib, ostree};
use tokio_util::sync::CancellationToken;

use super::cancel::Interruptible;
use super::progress::{Phase, Progress};
use super::pull::{self, Fetched};
use super::{filtered, image, kargs, signature, merge_deployment, origin_reference, Error, Outcome, SysrootPath, UpdateSummary};
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
    /// `Stage`: an update already queued for the next boot is not an error
    /// (the caller reboots into it next).
    pub queued_is_enough: bool,
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
    if imgref.sigverify == SignatureSource::ContainerPolicy {
        progress.phase(Phase::Checking, "checking the image against the containers signature policy");
        tokio::select! {
            verified = signature::verify(&imgref) => verified?,
            _ = cancel.cancelled() => return Err(Error::cancelled()),
        }
    }
    let repo_path = sysroot.path().join("ostree/repo");
    let fetched = pull::fetch(&repo, &imgref, progress, cancel, |prep, cost| {
        ensure_space(&repo, &repo_path, cost)?;
        // Switching to another image is an explicit choice of what to run.
        ensure_not_downgrade(prep, current.as_deref(), options.allow_downgrade || switch_to.is_some())
    })
    .await?;
    Interruptible { progress, cancel }.failpoint(points::AFTER_PULL);
    let state = fetched.state();
    let version = state.version().unwrap_or("no version").to_string();
    let digest = state.manifest_digest.to_string();

    let merge_commit = merge.as_ref().map(|m| m.csum().to_string());
    let staged = locked.staged_deployment();
    let same_as_merge = merge_commit.as_deref() == Some(state.merge_commit.as_str());
    let same_tracking = merge.as_ref().and_then(|m| origin_reference(m).ok().flatten()).as_ref() == Some(&imgref);
    if same_as_merge && same_tracking && staged.is_none() {
        return Ok(Outcome::message("No update available."));
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
    progress.phase(Phase::Staging, "writing the deployment");
    let kargs = kernel_args(&repo, merge.as_ref(), current.as_deref(), state)?;
    write_deployment(&locked, merge.as_ref(), &imgref, state, kargs, options, Interruptible { progress, cancel })?;
    if !booted {
        progress.phase(Phase::Cleanup, "pruning images no deployment uses");
        ostree_ext::container::deploy::prune(&locked.as_ostree_ext_lock())?;
    }
    let fetched_note = match &fetched {
        Fetched::Imported(_, s) => format!(" ({} layers, {} bytes fetched)", s.layers_to_fetch, s.bytes_to_fetch),
        Fetched::AlreadyPresent(_) => String::new(),
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
    progress.phase(Phase::Staging, "queuing the downloaded update");
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    if let Some(staged) = locked.staged_deployment() {
        if !Path::new(STAGED_LOCK_FILE).exists() {
            if options.queued_is_enough {
                return Ok(Outcome::message(format!("Deployment {} is queued for the next boot.", staged.csum())));
            }
            return Err(Error::NothingToStage("the staged deployment is already queued".into()));
        }
        std::fs::remove_file(STAGED_LOCK_FILE)
            .with_context(|| format!("removing {STAGED_LOCK_FILE}"))?;
        warn_left_out(&locked.repo(), staged.csum().as_str(), progress);
        let booted = locked.booted_deployment();
        let change = Change {
            event: Event::Staged,
            old_checksum: booted.map(|b| b.csum().to_string()),
            new_checksum: Some(staged.csum().to_string()),
            image: origin_reference(&staged).ok().flatten().map(|r| r.to_string()),
        };
        return Ok(Outcome::changed(
            format!("Deployment {} will be applied at the next boot.", staged.csum()),
            change,
        ));
    }
    let (merge, imgref) = super::tracked_image(&locked)?;
    let repo = locked.repo();
    let state = store::query_image(&repo, &imgref.imgref)?
        .filter(|s| s.merge_commit != merge.csum().as_str())
        .ok_or_else(|| Error::NothingToStage("no downloaded update is waiting to be staged".into()))?;
    let current = store::query_image_commit(&repo, merge.csum().as_str()).ok();
    warn_left_out(&repo, &state.merge_commit, progress);
    let kargs = kernel_args(&repo, Some(&merge), current.as_deref(), &state)?;
    write_deployment(&locked, Some(&merge), &imgref, &state, kargs, &DeployOptions::default(), Interruptible { progress, cancel })?;
    let version = state.version().unwrap_or("no version").to_string();
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
/// deployment's unchanged.
fn kernel_args(
    repo: &ostree::Repo,
    merge: Option<&ostree::Deployment>,
    current: Option<&LayeredImageState>,
    new: &LayeredImageState,
) -> anyhow::Result<Option<Vec<String>>> {
    let new_image = kargs::from_commit(repo, &new.merge_commit).context("reading the new image's kargs.d")?;
    let old_image = match current {
        Some(c) => kargs::from_commit(repo, &c.merge_commit).context("reading the current image's kargs.d")?,
        None => Vec::new(),
    };
    if new_image == old_image {
        return Ok(None);
    }
    let current_args: Vec<String> = merge
        .and_then(|m| m.bootconfig())
        .and_then(|b| b.get("options"))
        .map(|o| o.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Some(kargs::apply_diff(&current_args, &old_image, &new_image)))
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

fn ensure_not_downgrade(
    prep: &PreparedImport,
    current: Option<&LayeredImageState>,
    allowed: bool,
) -> Result<(), Error> {
    let parse = |s: &Option<String>| {
        s.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let Some(current) = current else { return Ok(()) };
    let (Some(new), Some(old)) = (parse(prep.config.created()), parse(current.configuration.created())) else {
        return Ok(());
    };
    if new < old && !allowed {
        return Err(Error::Refused(format!(
            "the image was built at {new}, before the deployed one ({old}); pass allow-downgrade to accept it"
        )));
    }
    Ok(())
}
