//! Throwaway ostree sysroots on a tmpfs.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ostree_ext::container::deploy::{deploy, DeployOpts};
use ostree_ext::container::OstreeImageReference;
use ostree_ext::{gio, ostree};

use crate::run;

/// Where ostree-ext keeps a ref per imported layer.
const LAYER_REF_PREFIX: &str = "ostree/container/blob";

/// The stateroot fixtures deploy into.
pub const STATEROOT: &str = "default";

/// A sysroot on its own tmpfs, unmounted on drop.
#[derive(Debug)]
pub struct TestSysroot {
    /// Holds the mount point and everything beside it.
    pub dir: tempfile::TempDir,
    /// The sysroot (the tmpfs mount point).
    pub path: PathBuf,
}

impl TestSysroot {
    /// An initialized, empty sysroot with stateroot `default` and no bootloader.
    pub fn new(size: &str) -> Result<TestSysroot> {
        crate::mutable_deployments();
        let dir = tempfile::Builder::new().prefix("hostd-sysroot-").tempdir()?;
        let path = dir.path().join("sysroot");
        std::fs::create_dir(&path)?;
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(&path))?;
        let sysroot = TestSysroot { dir, path };
        let p = sysroot.path.display().to_string();
        run(Command::new("ostree").args(["admin", "init-fs", "--modern", &p]))?;
        run(Command::new("ostree").args(["admin", "os-init", STATEROOT, &format!("--sysroot={p}")]))?;
        run(Command::new("ostree").args(["config", &format!("--repo={p}/ostree/repo"), "set", "sysroot.bootloader", "none"]))?;
        Ok(sysroot)
    }

    /// Open and load the sysroot with libostree.
    pub fn open(&self) -> Result<ostree::Sysroot> {
        let s = ostree::Sysroot::new(Some(&gio::File::for_path(&self.path)));
        s.load(gio::Cancellable::NONE)?;
        Ok(s)
    }

    /// Deploy `reference` (an `ostree-unverified-image:…` string) as the new
    /// default with ostree-ext directly, as an installer would.
    pub async fn deploy_image(&self, reference: &str) -> Result<()> {
        let sysroot = self.open()?;
        sysroot.lock()?;
        let imgref = OstreeImageReference::try_from(reference)?;
        let mut opts = DeployOpts::default();
        opts.kargs = Some(&["rw", "console=ttyS0"]);
        let result = deploy(&sysroot, STATEROOT, &imgref, Some(opts)).await;
        sysroot.unlock();
        result.with_context(|| format!("deploying {reference}"))?;
        Ok(())
    }

    /// Pin or unpin the deployment at `index` in boot order.
    pub fn set_pinned(&self, index: usize, pinned: bool) -> Result<()> {
        let sysroot = self.open()?;
        let d = sysroot.deployments().get(index).cloned().context("no such deployment")?;
        sysroot.deployment_set_pinned(&d, pinned)?;
        Ok(())
    }

    /// Checksums of the deployments in boot order.
    pub fn deployment_checksums(&self) -> Result<Vec<String>> {
        Ok(self.open()?.deployments().iter().map(|d| d.csum().to_string()).collect())
    }

    /// The layers the repo holds, as `sha256:…` digests (ostree-ext keeps
    /// one ref per imported layer).
    pub fn layer_digests(&self) -> Result<std::collections::BTreeSet<String>> {
        let repo = self.open()?.repo();
        let refs = repo.list_refs_ext(
            Some(LAYER_REF_PREFIX),
            ostree::RepoListRefsExtFlags::NONE,
            gio::Cancellable::NONE,
        )?;
        Ok(refs
            .keys()
            .filter_map(|r| r.strip_prefix(LAYER_REF_PREFIX))
            .map(|escaped| escaped.trim_start_matches('/').replace("_3A_", ":"))
            .collect())
    }

    /// Run `ostree fsck` on the repo; its output when it finds damage.
    pub fn fsck(&self) -> Result<()> {
        run(Command::new("ostree").arg("fsck").arg(format!("--repo={}", self.path.join("ostree/repo").display())))?;
        Ok(())
    }

    /// Free bytes on the sysroot's filesystem.
    pub fn free_bytes(&self) -> Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.path)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Take every free byte of the sysroot's filesystem, as another
    /// program filling the disk would; given back when the result drops.
    pub fn fill_up(&self) -> Result<DiskFiller> {
        let path = self.path.join("hostd-test-filler");
        let file = std::fs::File::create_new(&path).context("creating the filler file")?;
        let filler = DiskFiller { path };
        // Other writers may be running: grab in chunks, halving a chunk
        // whenever it no longer fits, down to a page.
        let (mut offset, mut chunk) = (0i64, 64i64 << 20);
        while chunk >= 4096 {
            match nix::fcntl::fallocate(file.as_raw_fd(), nix::fcntl::FallocateFlags::empty(), offset, chunk) {
                Ok(()) => offset += chunk,
                Err(nix::errno::Errno::ENOSPC) => chunk /= 2,
                Err(e) => return Err(e).context("allocating the free space"),
            }
        }
        Ok(filler)
    }

    /// The sysroot path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A file holding all the space that was free; removed on drop.
#[derive(Debug)]
pub struct DiskFiller {
    path: PathBuf,
}

impl Drop for DiskFiller {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for TestSysroot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.path).status();
    }
}
