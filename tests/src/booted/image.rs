//! The test OS images: the cached Debian root file system turned into a
//! bootable ostree tree with this build of hostd installed, encapsulated by
//! ostree-ext into an OCI directory as `v1`, and two updates derived from it
//! the way a Containerfile `FROM v1` + `COPY` would make them:
//!
//! - `v2` changes `/usr/share/testos/version`, the default of
//!   `/etc/testos/a.conf` and `b.conf`, and the image's kernel arguments
//!   (`/usr/lib/bootc/kargs.d`), and adds [`SETGID_FILE`], setgid to group
//!   `shadow` like `chage`: a file whose setgid bit root keeps on `chmod`
//!   only with `CAP_FSETID`, and installs one more Debian package,
//!   [`V2_PACKAGE`] (the real `.deb` from this machine's apt mirror,
//!   installed by `dpkg --root` onto v1's package database, so v2's dpkg
//!   status file is dpkg's own);
//! - `v3` is `v1` plus a large incompressible file, for pulls slow enough to
//!   interrupt;
//! - `v11` and `v12` are `v1` with a second kargs.d file
//!   ([`KARGS_V11`], [`KARGS_V12`]): the kargs delta of an upgrade.
//!
//! v1 is made in three steps, like any image with hostd:
//!
//! 1. the base image: the Debian root file system, without Debian's own
//!    timers, with bootc's update service and timer as bootc ships them
//!    ([`BOOTC_SERVICE`], [`BOOTC_TIMER`]), the timer enabled; there is no
//!    bootc binary, so only hostd's drop-in makes that service work;
//! 2. hostd installed by exactly the steps of docs/install.md
//!    ([`install_as_documented`]): `make install DESTDIR=/out` in the build
//!    stage, `/out` copied over the image, `systemctl preset` of hostd's units;
//! 3. what the tests need on top: the example polkit rules enabled, the
//!    version files, the ostree layout.
//!
//! The OCI directory is cached (see [`super::cache`]) under a key made of the
//! root file system's key, every file `make install` puts into the image and
//! the source of the code that builds it, so a run with the same build
//! reuses it and a rebuilt hostd gets a new image.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use ostree_ext::container::{encapsulate, Config, ExportOpts, ImageReference, Transport};
use ostree_ext::{gio, glib, ostree};

use super::cache;
use super::oci;
use super::rootfs;
use crate::fixture::{payload, BuiltImage, ImageBuilder, LayerFile};
use crate::{binary, repo_root, run};

/// The fake kernel version of the test OS.
pub const KVER: &str = "6.1.0-testos";
/// Size of `v3`'s extra file.
pub const V3_PAYLOAD_BYTES: usize = 24 << 20;
/// The kernel argument each version's kargs.d adds (`testos.release=<version>`).
pub const RELEASE_KARG: &str = "testos.release";
/// The file `v11` and `v12` add to kargs.d.
pub const KARGS_FILE: &str = "usr/lib/bootc/kargs.d/20-testos-kargs.toml";
/// What `v11` adds to the kernel arguments: a flag, a key=value and a
/// quoted value with spaces.
pub const KARGS_V11: [&str; 3] = ["quiet", "a=1", "dyndbg=\"file foo.c +p\""];
/// What `v12` has instead: only `a=2`.
pub const KARGS_V12: [&str; 1] = ["a=2"];

/// The file `v2` adds with mode [`SETGID_MODE`], owned by root and group
/// `shadow` (gid 42 on Debian).
pub const SETGID_FILE: &str = "usr/libexec/testos/shadow-helper";
/// Its mode.
pub const SETGID_MODE: u32 = 0o2755;
const SHADOW_GID: u64 = 42;

/// The Debian package v2 installs on top of v1: small, no maintainer
/// scripts, files only under `/usr`, and its one dependency (libc6) in v1.
pub const V2_PACKAGE: &str = "hello";
/// Where the test OS keeps dpkg's database: where ostree-ext 0.15 puts an
/// image's `/var/lib/dpkg` when it imports a layer (it moves `/var` to
/// `/usr/share/factory/var`), so v1's base and v2's derived layer agree.
pub const DPKG_DIR: &str = "usr/share/factory/var/lib/dpkg";

/// bootc's `systemd/bootc-fetch-apply-updates.service`, as bootc ships it.
pub const BOOTC_SERVICE: &str = include_str!("bootc/bootc-fetch-apply-updates.service");
/// bootc's `systemd/bootc-fetch-apply-updates.timer`, as bootc ships it.
pub const BOOTC_TIMER: &str = include_str!("bootc/bootc-fetch-apply-updates.timer");

/// The image build steps of docs/install.md, as run on the test OS: what
/// the build stage runs (in the repository, after `make build`) ...
pub const DOCUMENTED_INSTALL: &str = "make install DESTDIR=/out";
/// ... how the final stage takes it ...
pub const DOCUMENTED_COPY: &str = "COPY --from=build /out/ /";
/// ... and the units it enables there (`systemctl preset UNITS`).
pub const DOCUMENTED_PRESET: [&str; 3] =
    ["hostd-fetch-apply-updates.timer", "hostd-steady-state.service", "hostd-health-check.service"];

/// The three versions, in one read-only OCI directory (tags `v1`, `v2`, `v3`).
#[derive(Debug)]
pub struct TestOsImages {
    /// The OCI layout directory.
    pub oci_dir: PathBuf,
    /// The base image.
    pub v1: BuiltImage,
    /// The update: other /usr, /etc defaults and kernel arguments.
    pub v2: BuiltImage,
    /// v1 with a large layer on top.
    pub v3: BuiltImage,
    /// v1 with [`KARGS_V11`] in kargs.d.
    pub v11: BuiltImage,
    /// v1 with [`KARGS_V12`] in kargs.d.
    pub v12: BuiltImage,
}

/// The images of this build, made once per process (and cached across runs).
pub fn test_os_images() -> Result<&'static TestOsImages> {
    static IMAGES: OnceLock<Result<TestOsImages, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| build_or_reuse().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the test OS images: {e}"))
}

fn build_or_reuse() -> Result<TestOsImages> {
    let rootfs = rootfs::rootfs()?.join("rootfs");
    let hostd = tempfile::Builder::new().prefix("hostd-install-").tempdir()?;
    install_hostd(hostd.path())?;
    let key = cache::key(&[
        rootfs.to_string_lossy().as_bytes(),
        &tree_digest(&hostd.path().join("root"))?,
        // How the tree, v1 and the derived versions are made.
        include_str!("image.rs").as_bytes(),
        include_str!("oci.rs").as_bytes(),
        include_str!("../fixture.rs").as_bytes(),
        BOOTC_SERVICE.as_bytes(),
        BOOTC_TIMER.as_bytes(),
    ]);
    let dir = cache::product("images", &key, |dir| build(&rootfs, &hostd.path().join("root"), dir))?;
    load(&dir.join("oci"))
}

/// Stripped copies of this build's `hostd` and `hostctl` in `<dest>/bin`,
/// and what `make install` makes of them in `<dest>/root` (the build
/// stage's [`DOCUMENTED_INSTALL`]), which goes into the image and decides
/// whether a cached image is still this build's.
fn install_hostd(dest: &Path) -> Result<()> {
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin)?;
    for name in ["hostd", "hostctl"] {
        run(Command::new("strip").arg("--strip-all").arg("-o").arg(bin.join(name)).arg(binary(name)))?;
    }
    make_install(&bin, &dest.join("root"))
}

/// `make install` of the binaries in `bin` into `destdir`.
fn make_install(bin: &Path, destdir: &Path) -> Result<()> {
    run(Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(repo_root())
        .arg("install")
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("RELEASE={}", bin.display()))
        // Not the jobserver of a `make test` this runs under.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL"))?;
    Ok(())
}

/// A digest of every path, mode, link target and file content under `root`.
fn tree_digest(root: &Path) -> Result<Vec<u8>> {
    let mut sum = glib::Checksum::new(glib::ChecksumType::Sha256).expect("sha256 is supported");
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            sum.update(path.strip_prefix(root)?.to_string_lossy().as_bytes());
            sum.update(&meta.mode().to_le_bytes());
            if meta.is_dir() {
                pending.push(path);
            } else if meta.file_type().is_symlink() {
                sum.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
            } else {
                sum.update(&std::fs::read(&path)?);
            }
        }
    }
    Ok(sum.string().expect("digest").into_bytes())
}

/// Build the OCI directory `<dir>/oci` from the root file system and what
/// `make install` put into `installed`.
fn build(rootfs: &Path, installed: &Path, dir: &Path) -> Result<()> {
    let tree = dir.join("tree");
    run(Command::new("cp").arg("-a").arg(rootfs).arg(&tree))?;
    base_image(&tree)?;
    install_as_documented(installed, &tree)?;
    enable_polkit_rules(&tree)?;
    check_libraries(&tree)?;
    make_ostree_tree(&tree)?;
    let oci = dir.join("oci");
    let v1 = commit_and_encapsulate(&tree, &dir.join("repo"), &oci)?;
    oci::retag(&oci, "latest", "v1")?;
    let mut builder = ImageBuilder::new(&dir.join("derive"))?;
    builder.oci_dir = oci.clone();
    let v2 = v2_files();
    let mut files: Vec<LayerFile> = v2.iter().map(|(path, content)| LayerFile::plain(path, content)).collect();
    let helper = b"#!/bin/sh\n";
    files.push(LayerFile { path: SETGID_FILE, content: helper, mode: SETGID_MODE, uid: 0, gid: SHADOW_GID });
    let package = package_files(&tree.join(DPKG_DIR), &dir.join("package"))?;
    files.extend(package.iter().map(|(path, content, mode)| LayerFile { path, content, mode: *mode, uid: 0, gid: 0 }));
    builder.derive_files(&v1, "v2", &files)?;
    oci::retag(&oci, "latest", "v2")?;
    builder.derive(&v1, "v3", &v3_files())?;
    oci::retag(&oci, "latest", "v3")?;
    for (version, kargs) in [("v11", &KARGS_V11[..]), ("v12", &KARGS_V12[..])] {
        builder.derive(&v1, version, &kargs_files(version, kargs))?;
        oci::retag(&oci, "latest", version)?;
    }
    for scratch in [tree, dir.join("repo"), dir.join("derive"), dir.join("package")] {
        remove_tree(&scratch)?;
    }
    Ok(())
}

/// What installing [`V2_PACKAGE`] on v1 adds or changes, as a layer's
/// files (path, content, mode): `apt-get download` fetches the `.deb` from
/// this machine's apt sources into `scratch`, and `dpkg --root` installs it
/// into `scratch/root`, which holds a copy of v1's dpkg database
/// (`v1_dpkg`) at `/var/lib/dpkg`, the path dpkg and an image's layer use.
/// The package has no maintainer scripts, so nothing runs in that root.
fn package_files(v1_dpkg: &Path, scratch: &Path) -> Result<Vec<(String, Vec<u8>, u32)>> {
    let root = scratch.join("root");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.parent().expect("has a parent"))?;
    run(Command::new("cp").arg("-a").arg(v1_dpkg).arg(&admin))?;
    run(Command::new("apt-get").current_dir(scratch).args(["download", V2_PACKAGE]))?;
    let deb = std::fs::read_dir(scratch)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {V2_PACKAGE} left no .deb"))?;
    run(Command::new("dpkg").arg(format!("--root={}", root.display())).arg("--log=/dev/null").arg("-i").arg(&deb))?;
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(&root)?.to_string_lossy().into_owned();
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            anyhow::ensure!(meta.is_file(), "{V2_PACKAGE} installed {rel}, which is not a regular file");
            // dpkg's locks and backups are no part of the database.
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("lock") || name == "Lock" || name.ends_with("-old") {
                continue;
            }
            let content = std::fs::read(&path)?;
            let unchanged = rel
                .strip_prefix("var/lib/dpkg/")
                .is_some_and(|inner| std::fs::read(v1_dpkg.join(inner)).is_ok_and(|old| old == content));
            if !unchanged {
                files.push((rel, content, meta.mode() & 0o7777));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What the base image brings besides Debian: no timers of its own (apt-daily
/// and the like would reach out to the network from the guest), and bootc's
/// update service and timer, the timer enabled as on a bootc host.
fn base_image(tree: &Path) -> Result<()> {
    let wants = tree.join("etc/systemd/system/timers.target.wants");
    empty_dir(&wants)?;
    let units = tree.join("usr/lib/systemd/system");
    std::fs::write(units.join("bootc-fetch-apply-updates.service"), BOOTC_SERVICE)?;
    std::fs::write(units.join("bootc-fetch-apply-updates.timer"), BOOTC_TIMER)?;
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/bootc-fetch-apply-updates.timer",
        wants.join("bootc-fetch-apply-updates.timer"),
    )?;
    Ok(())
}

/// hostd's part of the image, by the steps of docs/install.md: the tree
/// `make install DESTDIR=…` made (`installed`) copied over the image
/// ([`DOCUMENTED_COPY`]), then `systemctl preset` of [`DOCUMENTED_PRESET`].
fn install_as_documented(installed: &Path, tree: &Path) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(installed.join(".")).arg(tree))?;
    run(Command::new("systemctl").arg(format!("--root={}", tree.display())).arg("preset").args(DOCUMENTED_PRESET))?;
    Ok(())
}

/// The tests need the project's example rule that grants `wheel` everything.
fn enable_polkit_rules(tree: &Path) -> Result<()> {
    let rules = tree.join("etc/polkit-1/rules.d/50-hostd.rules");
    std::fs::copy(tree.join("usr/share/doc/hostd/examples/50-hostd.rules"), &rules)?;
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Turn a Debian root file system into what ostree deploys: `/etc` becomes
/// `/usr/etc` (the defaults of the 3-way merge), the state directories are
/// left empty, the toplevel directories that live in `/var` become links,
/// and a kernel and initramfs appear where libostree looks for them.
fn make_ostree_tree(tree: &Path) -> Result<()> {
    // dpkg's database is the image's record of its packages, not state:
    // keep it where ostree-ext puts an image's /var (see DPKG_DIR).
    let dpkg = tree.join(DPKG_DIR);
    std::fs::create_dir_all(dpkg.parent().expect("has a parent"))?;
    std::fs::rename(tree.join("var/lib/dpkg"), &dpkg)?;
    for dir in ["dev", "proc", "sys", "run", "tmp", "var", "boot"] {
        empty_dir(&tree.join(dir))?;
    }
    let _ = std::fs::remove_file(tree.join("etc/resolv.conf"));
    write_test_os_files(tree, "v1")?;
    std::fs::rename(tree.join("etc"), tree.join("usr/etc"))?;
    for dir in ["home", "root", "opt", "srv", "mnt", "media", "usr/local"] {
        remove_tree(&tree.join(dir))?;
    }
    for (link, target) in [
        ("home", "var/home"),
        ("root", "var/roothome"),
        ("opt", "var/opt"),
        ("srv", "var/srv"),
        ("mnt", "var/mnt"),
        ("media", "run/media"),
        ("usr/local", "../var/usrlocal"),
        ("ostree", "sysroot/ostree"),
    ] {
        std::os::unix::fs::symlink(target, tree.join(link))?;
    }
    std::fs::create_dir(tree.join("sysroot"))?;
    Ok(())
}

/// The files that tell versions apart, the boot files and the tmpfiles that
/// make a booted deployment (what `ostree-prepare-root` does on real hardware).
fn write_test_os_files(tree: &Path, version: &str) -> Result<()> {
    let write = |rel: &str, content: &str| -> Result<()> {
        let path = tree.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, content).with_context(|| path.display().to_string())
    };
    write(&format!("usr/lib/modules/{KVER}/vmlinuz"), &format!("test OS kernel {KVER}\n"))?;
    write(&format!("usr/lib/modules/{KVER}/initramfs.img"), "test OS initramfs\n")?;
    for (rel, content) in version_files(version) {
        write(&rel.replacen("usr/etc/", "etc/", 1), &content)?;
    }
    write(
        "usr/lib/tmpfiles.d/testos-ostree.conf",
        "f /run/ostree-booted 0644 root root -\n\
         d /var/home 0755 root root -\n\
         d /var/roothome 0700 root root -\n\
         d /var/opt 0755 root root -\n\
         d /var/srv 0755 root root -\n\
         d /var/mnt 0755 root root -\n\
         d /var/usrlocal 0755 root root -\n\
         d /run/media 0755 root root -\n\
         d /var/log/journal 2755 root systemd-journal -\n",
    )
}

/// Files whose content is the version: a plain file in /usr, two defaults in
/// /etc (`a.conf` is never edited by the tests, `b.conf` is, so the 3-way
/// merge must take the new default of one and keep the edit of the other)
/// and the kernel arguments.
fn version_files(version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("usr/share/testos/version", format!("{version}\n")),
        ("usr/etc/testos/a.conf", format!("a={version}-default\n")),
        ("usr/etc/testos/b.conf", format!("b={version}-default\n")),
        ("usr/lib/bootc/kargs.d/10-testos.toml", format!("kargs = [\"{RELEASE_KARG}={version}\"]\n")),
    ]
}

fn v2_files() -> Vec<(&'static str, Vec<u8>)> {
    version_files("v2").into_iter().map(|(path, content)| (path, content.into_bytes())).collect()
}

/// v3 keeps v1's configuration: only the version and a large file differ.
fn v3_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("usr/share/testos/version", b"v3\n".to_vec()),
        ("usr/share/testos/payload", payload("testos-v3", V3_PAYLOAD_BYTES)),
    ]
}

/// v1 with `kargs` in a second kargs.d file.
fn kargs_files(version: &str, kargs: &[&str]) -> Vec<(&'static str, Vec<u8>)> {
    let list: Vec<String> = kargs.iter().map(|k| format!("{k:?}")).collect();
    vec![
        ("usr/share/testos/version", format!("{version}\n").into_bytes()),
        (KARGS_FILE, format!("kargs = [{}]\n", list.join(", ")).into_bytes()),
    ]
}

/// Commit `tree` as v1 and encapsulate it into `oci` (tag `latest`).
fn commit_and_encapsulate(tree: &Path, repo_path: &Path, oci: &Path) -> Result<BuiltImage> {
    run(Command::new("ostree").arg("init").arg(format!("--repo={}", repo_path.display())).arg("--mode=bare-user"))?;
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo_path.display()))
        .args(["commit", "--no-xattrs", "--branch=testos/v1", "--add-metadata-string=version=v1"])
        .arg("--add-metadata=ostree.bootable=true")
        .arg(format!("--tree=dir={}", tree.display())))?;
    let repo = ostree::Repo::new_for_path(repo_path);
    repo.open(gio::Cancellable::NONE)?;
    let name = format!("{}:latest", oci.display());
    let dest = ImageReference { transport: Transport::OciDir, name: name.clone() };
    let mut opts = ExportOpts::default();
    opts.copy_meta_keys = vec!["version".into()];
    // What the fixture's `derive` gives a version 1: the derived v2 and v3
    // are later builds, not downgrades.
    opts.created = Some(crate::fixture::created_for("v1"));
    // The fastest gzip level: the image never leaves this machine.
    opts.skip_compression = true;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let digest = runtime
        .block_on(encapsulate(&repo, "testos/v1", &Config::default(), Some(opts), &dest))
        .context("encapsulating v1")?;
    Ok(BuiltImage {
        version: "v1".into(),
        digest: digest.to_string(),
        reference: format!("ostree-unverified-image:oci:{name}"),
    })
}

/// The built images of a cached OCI directory.
fn load(oci_dir: &Path) -> Result<TestOsImages> {
    let image = |version: &str| -> Result<BuiltImage> {
        Ok(BuiltImage {
            version: version.into(),
            digest: oci::tagged_digest(oci_dir, version)?,
            reference: format!("ostree-unverified-image:oci:{}:{version}", oci_dir.display()),
        })
    };
    Ok(TestOsImages {
        oci_dir: oci_dir.to_path_buf(),
        v1: image("v1")?,
        v2: image("v2")?,
        v3: image("v3")?,
        v11: image("v11")?,
        v12: image("v12")?,
    })
}

/// Make `dir` an empty directory, keeping its own metadata.
fn empty_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Fail early, naming what is missing, when the image cannot run hostd.
fn check_libraries(tree: &Path) -> Result<()> {
    let out = run(Command::new("chroot").arg(tree).args(["ldd", "/usr/libexec/hostd"]))?;
    let missing: Vec<&str> = out.lines().filter(|l| l.contains("not found")).collect();
    if !missing.is_empty() {
        bail!(
            "hostd cannot run in the test OS, libraries missing: {missing:?}; add their packages to rootfs::PACKAGES"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test OS is built by the steps docs/install.md gives admins.
    #[test]
    fn the_image_build_steps_are_the_documented_ones() {
        let doc = include_str!("../../../docs/install.md");
        let preset = format!("systemctl preset {}", DOCUMENTED_PRESET.join(" "));
        for step in [DOCUMENTED_INSTALL, DOCUMENTED_COPY, preset.as_str()] {
            assert!(doc.contains(step), "docs/install.md no longer says `{step}`");
        }
    }
}
