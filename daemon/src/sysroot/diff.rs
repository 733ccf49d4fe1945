//! What changes between two deployments, or between a deployment and the
//! downloaded update: packages (from each tree's package database,
//! [`super::packages`]), the kernel version and the kernel arguments, as
//! `rpm-ostree db diff` shows them. Everything is read from the ostree
//! commits in the repo, never from a deployment's checkout, so a deployment
//! and an update that is only pulled are read the same way; no lock is
//! taken.

use std::path::Path;

use anyhow::{Context, Result};
use hostd_interface::diff::{Diff, DiffSide, DiffTarget, KargsChange, PackageDatabase};
use hostd_interface::host::ImageStatus;
use ostree_ext::container::store;
use ostree_ext::gio::prelude::*;
use ostree_ext::{gio, ostree};

use super::image::parse_origin_reference;
use super::kargs::{self, Kargs};
use super::packages::{self, Installed, VersionOrder, DPKG_STATUS_PATHS, MAX_STATUS_BYTES, RPM_DB_DIRS, RPM_DB_FILES};
use super::rpmdb::{self, Answer, MAX_DATABASE_BYTES};
use super::status::{Role, Snapshot};
use super::Error;

/// Where libostree finds a tree's kernel: `usr/lib/modules/<version>/vmlinuz`.
const MODULES_DIR: &str = "usr/lib/modules";

/// One side as resolved from the status snapshot, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The argument as the answer names it.
    pub target: DiffTarget,
    /// What to read.
    pub tree: Tree,
    /// What the snapshot knows of its image.
    pub image: Option<ImageStatus>,
}

/// The tree of a side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// A deployment: its index in the boot order, commit and serial.
    Deployment {
        /// Position in the boot order.
        index: usize,
        /// The commit.
        checksum: String,
        /// The deployment serial.
        serial: u32,
    },
    /// The pulled image of the tracked reference, by manifest digest (not deployed).
    Downloaded {
        /// Its manifest digest.
        digest: String,
    },
}

/// The two sides `from` and `to` name (`None`: the default), or why not.
pub fn resolve(snapshot: &Snapshot, from: Option<DiffTarget>, to: Option<DiffTarget>) -> Result<(Source, Source), Error> {
    let from = resolve_one(snapshot, from.unwrap_or(DiffTarget::Booted))?;
    let to = match to {
        Some(t) => resolve_one(snapshot, t)?,
        None => match (snapshot.staged(), snapshot.downloaded_update.is_some()) {
            (Some(_), _) => resolve_one(snapshot, DiffTarget::Staged)?,
            (None, true) => resolve_one(snapshot, DiffTarget::Cached)?,
            (None, false) => {
                return Err(Error::Refused(
                    "nothing is staged and no update is downloaded: name what to compare (booted, staged, rollback, \
                     cached or an index)"
                        .into(),
                ))
            }
        },
    };
    Ok((from, to))
}

fn resolve_one(snapshot: &Snapshot, target: DiffTarget) -> Result<Source, Error> {
    let offline = |what: &str| {
        Error::Refused(format!(
            "this sysroot is not the booted one, so it has no {what} deployment; name a deployment by its index"
        ))
    };
    let deployment = match target {
        DiffTarget::Booted => snapshot.merge_deployment(),
        DiffTarget::Staged if !snapshot.booted => return Err(offline("staged")),
        DiffTarget::Rollback if !snapshot.booted => return Err(offline("rollback")),
        DiffTarget::Staged => snapshot.staged(),
        DiffTarget::Rollback => snapshot.deployments.iter().find(|d| d.role == Role::Rollback),
        DiffTarget::Index(i) => snapshot.deployments.get(i as usize),
        DiffTarget::Cached => {
            if let Some(staged) = snapshot.staged().filter(|d| d.entry.download_only) {
                Some(staged)
            } else if let Some(digest) = &snapshot.downloaded_update {
                let image = snapshot.cached_update().filter(|u| &u.image_digest == digest).cloned();
                return Ok(Source { target, tree: Tree::Downloaded { digest: digest.clone() }, image });
            } else {
                return Err(Error::Refused(
                    "no update is downloaded (`hostctl upgrade --download-only` fetches one without deploying it)".into(),
                ));
            }
        }
    };
    let d = deployment.ok_or_else(|| match target {
        DiffTarget::Index(i) => {
            Error::Refused(format!("there is no deployment {i}: Deployments has {}", snapshot.deployments.len()))
        }
        _ => Error::Refused(format!("there is no {target} deployment")),
    })?;
    let ostree = d.entry.ostree.as_ref().ok_or_else(|| Error::Refused(format!("the {target} deployment has no ostree commit")))?;
    Ok(Source {
        target,
        tree: Tree::Deployment { index: d.index, checksum: ostree.checksum.clone(), serial: ostree.deploy_serial },
        image: d.entry.image.clone(),
    })
}

/// Read both sides from the sysroot at `sysroot` and compare them.
pub fn diff(sysroot: &Path, from: &Source, to: &Source) -> Result<Diff, Error> {
    let root = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    root.load(gio::Cancellable::NONE).context("loading the sysroot")?;
    let repo = root.repo();
    let (from_side, from_packages) = read_side(&root, &repo, from)?;
    let (to_side, to_packages) = read_side(&root, &repo, to)?;
    let packages = match (from_packages, to_packages) {
        (Some((a, order)), Some((b, other))) if order == other => Some(packages::diff(&a, &b, order)),
        _ => None,
    };
    let delta = kargs::Delta::between(&Kargs::from(from_side.kargs.clone()), &Kargs::from(to_side.kargs.clone()));
    Ok(Diff {
        kernel_changed: from_side.kernel != to_side.kernel,
        kargs: KargsChange { removed: delta.removed, added: delta.added },
        from: from_side,
        to: to_side,
        packages,
    })
}

/// A side's installed packages, and whose rules order their versions.
type Packages = (Installed, VersionOrder);

/// One side's facts, and its packages when its package database was read.
fn read_side(root: &ostree::Sysroot, repo: &ostree::Repo, source: &Source) -> Result<(DiffSide, Option<Packages>), Error> {
    let (commit, deployment, kargs) = match &source.tree {
        Tree::Deployment { index, checksum, serial } => {
            let d = root
                .deployments()
                .into_iter()
                .nth(*index)
                .filter(|d| d.csum() == checksum.as_str() && u32::try_from(d.deployserial()).ok() == Some(*serial))
                // Not the caller's fault: another tool changed the
                // deployments between the status read and this one.
                .ok_or_else(|| {
                    Error::Other(anyhow::anyhow!(
                        "deployment {checksum}.{serial} is gone or has moved: the deployments changed; try again"
                    ))
                })?;
            let kargs = deployment_kargs(&d);
            (checksum.clone(), Some(format!("{checksum}.{serial}")), kargs)
        }
        Tree::Downloaded { digest } => {
            let (commit, kargs) = downloaded(root, repo, digest)?;
            (commit, None, kargs)
        }
    };
    let (database, installed) = package_database(repo, &commit)?;
    let image = source.image.as_ref();
    let side = DiffSide {
        target: source.target.to_string(),
        deployment,
        kernel: kernel_version(repo, &commit)?,
        kargs: without_ostree(kargs).into_vec(),
        package_database: database,
        packages: installed.as_ref().map(|(i, _)| u32::try_from(packages::count(i)).unwrap_or(u32::MAX)),
        image: image.map(|i| i.image.image.clone()),
        digest: image.map(|i| i.image_digest.clone()).or_else(|| match &source.tree {
            Tree::Downloaded { digest } => Some(digest.clone()),
            Tree::Deployment { .. } => None,
        }),
        version: image.and_then(|i| i.version.clone()),
        labels: image.map(|i| i.labels.clone()).unwrap_or_default(),
        commit,
    };
    Ok((side, installed))
}

/// The arguments of a deployment's boot entry.
fn deployment_kargs(d: &ostree::Deployment) -> Kargs {
    d.bootconfig().and_then(|b| b.get("options")).map(|o| Kargs::parse(&o)).unwrap_or_default()
}

/// The per-deployment `ostree=` argument differs between any two
/// deployments and says nothing about the change.
fn without_ostree(kargs: Kargs) -> Kargs {
    Kargs::from(kargs.into_vec().into_iter().filter(|k| !k.starts_with("ostree=")).collect::<Vec<_>>())
}

/// The commit of the downloaded image `digest` of the tracked reference,
/// and the kernel arguments it would boot with if deployed now: the
/// default deployment's, with the images' kargs.d delta applied (as
/// `Upgrade` and `Stage` do; malformed kargs.d files count as empty here).
fn downloaded(root: &ostree::Sysroot, repo: &ostree::Repo, digest: &str) -> Result<(String, Kargs), Error> {
    let merge = super::merge_deployment(root).ok_or_else(|| Error::Refused("the sysroot has no deployment".into()))?;
    let reference = merge
        .origin()
        .and_then(|o| o.string("origin", ostree_ext::container::deploy::ORIGIN_CONTAINER).ok())
        .ok_or_else(|| Error::Refused("the default deployment tracks no image".into()))?;
    let reference = parse_origin_reference(reference.as_str())?;
    let state = store::query_image(repo, &reference.imgref)
        .context("reading the downloaded image")?
        .filter(|s| s.manifest_digest.to_string() == digest)
        .ok_or_else(|| Error::Other(anyhow::anyhow!("the downloaded update {digest} is no longer in the repo; try again")))?;
    let arch = kargs::host_architectures();
    let read = |commit: &str| -> Result<Kargs> { Ok(kargs::parse_files(&kargs::files_of_commit(repo, commit)?, &arch).0) };
    let delta = kargs::Delta::between(&read(merge.csum().as_str())?, &read(&state.merge_commit)?);
    Ok((state.merge_commit, delta.apply(&deployment_kargs(&merge))))
}

/// The file or directory at `rel` of `commit`'s tree, when it is one of `kind`.
fn entry_of(root: &gio::File, rel: &str, kind: gio::FileType) -> Option<gio::File> {
    let f = root.resolve_relative_path(rel);
    // A missing parent is reported with varying error codes by ostree's
    // RepoFile, so ask for the type instead of matching errors.
    (f.query_file_type(gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE) == kind).then_some(f)
}

/// Which package database `commit` has, and its packages when it is
/// dpkg's or rpm's sqlite database.
fn package_database(repo: &ostree::Repo, commit: &str) -> Result<(PackageDatabase, Option<Packages>), Error> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE).with_context(|| format!("reading commit {commit}"))?;
    for rel in DPKG_STATUS_PATHS {
        let Some(file) = entry_of(&root, rel, gio::FileType::Regular) else { continue };
        let malformed = |why: String| Error::MalformedPackageDatabase(format!("/{rel} of commit {commit}: {why}"));
        let size = file
            .query_info("standard::size", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
            .with_context(|| format!("reading the size of /{rel}"))?
            .size();
        if u64::try_from(size).unwrap_or(u64::MAX) > MAX_STATUS_BYTES {
            return Err(malformed(format!("{size} bytes, more than the {MAX_STATUS_BYTES} read")));
        }
        let bytes = kargs::read_commit_file(repo, &file).with_context(|| format!("reading /{rel}"))?;
        let text = String::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to())))?;
        let installed = packages::parse_dpkg_status(&text).map_err(|e| malformed(e.to_string()))?;
        return Ok((PackageDatabase::Dpkg, Some((installed, VersionOrder::Dpkg))));
    }
    let dirs: Vec<(&str, gio::File)> =
        RPM_DB_DIRS.iter().filter_map(|rel| entry_of(&root, rel, gio::FileType::Directory).map(|d| (*rel, d))).collect();
    if dirs.is_empty() {
        return Ok((PackageDatabase::None, None));
    }
    for (rel, dir) in dirs {
        if entry_of(&dir, RPM_DB_FILES[0], gio::FileType::Regular).is_some() {
            let installed = rpm_packages(repo, commit, rel, &dir)?;
            return Ok((PackageDatabase::Rpm, Some((installed, VersionOrder::Rpm))));
        }
    }
    // Berkeley DB or ndb, from rpm before 4.16: not read.
    Ok((PackageDatabase::Rpm, None))
}

/// The packages of the rpm database at `rel` (`dir`) of `commit`: its
/// files copied to a scratch directory, then listed by rpm.
fn rpm_packages(repo: &ostree::Repo, commit: &str, rel: &str, dir: &gio::File) -> Result<Installed, Error> {
    let malformed = |why: String| Error::MalformedPackageDatabase(format!("/{rel} of commit {commit}: {why}"));
    let scratch = rpmdb::Scratch::new()?;
    let mut total: u64 = 0;
    for name in RPM_DB_FILES {
        let Some(file) = entry_of(dir, name, gio::FileType::Regular) else { continue };
        let size = file
            .query_info("standard::size", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
            .with_context(|| format!("reading the size of /{rel}/{name}"))?
            .size();
        total = total.saturating_add(u64::try_from(size).unwrap_or(u64::MAX));
        if total > MAX_DATABASE_BYTES {
            return Err(malformed(format!("its files have more than the {MAX_DATABASE_BYTES} bytes read")));
        }
        let mut out = scratch.create(name)?;
        copy_commit_file(repo, &file, &mut out, MAX_DATABASE_BYTES).with_context(|| format!("copying /{rel}/{name}"))?;
    }
    match scratch.query()? {
        Answer::Listed(text) => packages::parse_rpm_query(&text).map_err(|e| malformed(format!("rpm's list, {e}"))),
        Answer::Refused(why) => Err(malformed(why)),
    }
}

/// Stream the content of `file` of a commit to `out`, at most `limit` bytes.
fn copy_commit_file(repo: &ostree::Repo, file: &gio::File, out: &mut impl std::io::Write, limit: u64) -> anyhow::Result<()> {
    use std::io::Read;
    let file = file.downcast_ref::<ostree::RepoFile>().context("not a file of an ostree commit")?;
    file.ensure_resolved()?;
    let (stream, _, _) = repo.load_file(file.checksum().as_str(), gio::Cancellable::NONE)?;
    if let Some(stream) = stream {
        std::io::copy(&mut stream.into_read().take(limit), out)?;
    }
    Ok(())
}

/// The kernel version of `commit`: the first `usr/lib/modules/<version>`
/// (by name) with a `vmlinuz` file, as libostree looks for it.
fn kernel_version(repo: &ostree::Repo, commit: &str) -> Result<Option<String>, Error> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE).with_context(|| format!("reading commit {commit}"))?;
    let Some(modules) = entry_of(&root, MODULES_DIR, gio::FileType::Directory) else { return Ok(None) };
    let entries = modules
        .enumerate_children("standard::name,standard::type", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
        .with_context(|| format!("listing /{MODULES_DIR}"))?;
    let mut versions = Vec::new();
    for info in entries {
        let info = info.with_context(|| format!("listing /{MODULES_DIR}"))?;
        if info.file_type() != gio::FileType::Directory {
            continue;
        }
        let name = info.name().to_string_lossy().into_owned();
        if entry_of(&modules, &format!("{name}/vmlinuz"), gio::FileType::Regular).is_some() {
            versions.push(name);
        }
    }
    versions.sort();
    Ok(versions.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::status::tests::{booted_with_queued_rollback, booted_with_staged, offline};

    fn target(s: &Snapshot, from: Option<DiffTarget>, to: Option<DiffTarget>) -> Result<(String, String), String> {
        resolve(s, from, to)
            .map(|(a, b)| {
                let name = |x: &Source| match &x.tree {
                    Tree::Deployment { checksum, .. } => format!("{}={checksum}", x.target),
                    Tree::Downloaded { digest } => format!("{}={digest}", x.target),
                };
                (name(&a), name(&b))
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_booted_to_staged_or_the_downloaded_update() {
        let staged = booted_with_staged(false);
        assert_eq!(target(&staged, None, None).unwrap(), ("booted=c2".into(), "staged=c3".into()));
        assert_eq!(target(&staged, Some(DiffTarget::Rollback), Some(DiffTarget::Index(1))).unwrap(), ("rollback=c1".into(), "1=c2".into()));
        // A download-only staged deployment is the downloaded update.
        let locked = booted_with_staged(true);
        assert_eq!(target(&locked, None, Some(DiffTarget::Cached)).unwrap(), ("booted=c2".into(), "cached=c3".into()));
        let e = target(&staged, None, Some(DiffTarget::Cached)).unwrap_err();
        assert!(e.contains("no update is downloaded"), "{e}");
        // Nothing staged or downloaded: nothing to compare by default.
        let queued = booted_with_queued_rollback();
        let e = target(&queued, None, None).unwrap_err();
        assert!(e.contains("nothing is staged"), "{e}");
        let e = target(&queued, None, Some(DiffTarget::Index(7))).unwrap_err();
        assert!(e.contains("no deployment 7"), "{e}");
    }

    #[test]
    fn an_offline_sysroot_has_no_staged_or_rollback_deployment() {
        let mut s = offline();
        assert_eq!(target(&s, None, Some(DiffTarget::Index(1))).unwrap(), ("booted=c2".into(), "1=c1".into()));
        for t in [DiffTarget::Staged, DiffTarget::Rollback] {
            let e = target(&s, Some(t), Some(DiffTarget::Index(0))).unwrap_err();
            assert!(e.contains("not the booted one"), "{e}");
        }
        s.downloaded_update = Some("sha256:9".into());
        assert_eq!(target(&s, None, None).unwrap(), ("booted=c2".into(), "cached=sha256:9".into()));
    }
}
