//! Images built the way users build theirs: `podman build` from a
//! Containerfile `FROM` the fixture base, then pushed (`podman push`),
//! saved (`podman save`) or left in podman's storage.
//!
//! Each [`Podman`] has its own storage (root and runroot in a temporary
//! directory), named by a `storage.conf` that podman reads through
//! `CONTAINERS_STORAGE_CONF` and that a test machine can take as its
//! `/etc/containers/storage.conf`, so hostd's skopeo finds the same images
//! as podman put there. Tests run as root and in parallel: no test touches
//! `/var/lib/containers`. The `vfs` driver is used: it mounts nothing (so
//! nothing outlives the test) and works on any file system the tests run on,
//! overlayfs roots of CI containers included; the images are small.
//!
//! Nothing here uses the network: the base comes from the fixture's `oci:`
//! layout (copied into the storage with skopeo), builds never pull (`--pull=never`), and the
//! Containerfiles only `COPY` (a `RUN` would need a shell in the base and a
//! container runtime).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// A private podman storage; removed with its directory on drop (the vfs
/// driver mounts nothing, and `podman system reset` is not used: it would
/// also remove root's podman networks, which are not the test's).
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
}

/// The name the fixture base has in podman's storage.
pub const BASE: &str = "localhost/hostd-fixture-base:latest";

impl Podman {
    /// A new, empty storage under `/var/tmp` (not a small tmpfs `/tmp`).
    pub fn new() -> Result<Podman> {
        let dir = tempfile::Builder::new().prefix("hostd-podman-").tempdir_in("/var/tmp")?;
        let podman = Podman { dir };
        std::fs::write(podman.storage_conf(), podman.storage_conf_text())?;
        std::fs::create_dir_all(podman.dir.path().join("context"))?;
        Ok(podman)
    }

    /// The `storage.conf` naming this storage.
    pub fn storage_conf(&self) -> PathBuf {
        self.dir.path().join("storage.conf")
    }

    /// The text of [`Podman::storage_conf`], for a machine's `/etc/containers/storage.conf`.
    pub fn storage_conf_text(&self) -> String {
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            self.dir.path().join("root").display(),
            self.dir.path().join("run").display()
        )
    }

    /// `podman` on this storage.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", self.storage_conf());
        // podman keeps per-user state under $HOME/$XDG_*; keep it here.
        c.env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        c.env("XDG_DATA_HOME", self.dir.path().join("data"));
        // Its state (the default /run/libpod) in the test's directory too.
        c.arg(format!("--tmpdir={}", self.dir.path().join("libpod").display()));
        c.args(["--cgroup-manager=cgroupfs", "--events-backend=none"]);
        c
    }

    /// Run `podman args…`; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run(self.command().args(args)).with_context(|| format!("podman {}", args.join(" ")))
    }

    /// Load the image of the `oci:` layout `oci_name` (`<dir>:<tag>`) as
    /// `name` (`podman pull oci:` would name it by its path).
    pub fn load_oci(&self, oci_name: &str, name: &str) -> Result<()> {
        run(Command::new("skopeo")
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
            .args(["copy", "--quiet"])
            .arg(format!("oci:{oci_name}"))
            .arg(format!("containers-storage:{name}")))?;
        Ok(())
    }

    /// `podman build -t tag` of `containerfile`, whose `COPY` sources are
    /// `files` (path in the build context → content).
    pub fn build(&self, tag: &str, containerfile: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let context = self.dir.path().join("context");
        let _ = std::fs::remove_dir_all(&context);
        for (path, content) in files {
            let file = context.join(path);
            std::fs::create_dir_all(file.parent().context("a file in the context")?)?;
            std::fs::write(&file, content)?;
            // COPY keeps the source's mtime: the same content makes the same
            // layer in every build.
            let fixed = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
            std::fs::File::options().write(true).open(&file)?.set_modified(fixed)?;
        }
        std::fs::create_dir_all(&context)?;
        std::fs::write(context.join("Containerfile"), containerfile)?;
        self.run(&["build", "--quiet", "--pull=never", "-t", tag, "-f", &context.join("Containerfile").to_string_lossy(), &context.to_string_lossy()])?;
        Ok(())
    }

    /// `podman push` of `name` to `dest` (`host:port/repo:tag`) over plain HTTP.
    pub fn push(&self, name: &str, dest: &str) -> Result<()> {
        self.run(&["push", "--quiet", "--tls-verify=false", name, &format!("docker://{dest}")])?;
        Ok(())
    }

    /// `podman save` of `name` to `path`: `format` `None` writes podman's
    /// default (a docker-archive), `Some("oci-archive")` an OCI archive.
    pub fn save(&self, name: &str, format: Option<&str>, path: &Path) -> Result<()> {
        let mut args = vec!["save", "--quiet", "-o"];
        let path = path.to_string_lossy();
        args.push(&path);
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        args.push(name);
        self.run(&args)?;
        Ok(())
    }
}

/// A Containerfile deriving an OS image from [`BASE`] as users write one:
/// an `/etc` default changed, a kernel argument in `/usr/lib/bootc/kargs.d`,
/// a tool under `/usr` (last: only its layer differs between versions), and
/// the version label.
pub fn containerfile(version: &str) -> String {
    format!(
        "FROM {BASE}\n\
         COPY motd /etc/motd\n\
         COPY 60-podman.toml /usr/lib/bootc/kargs.d/60-podman.toml\n\
         COPY tool /usr/bin/hostd-test-tool\n\
         LABEL version={version} org.opencontainers.image.version={version}\n"
    )
}

/// The build context of [`containerfile`] for `version`: only the tool
/// differs between versions.
pub fn context(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tool", format!("#!/bin/sh\necho tool {version}\n").into_bytes()),
        ("motd", b"built with podman\n".to_vec()),
        ("60-podman.toml", b"kargs = [\"podman.built=1\"]\n".to_vec()),
    ]
}

/// [`Podman::build`] of [`containerfile`] with [`context`].
pub fn build_derived(podman: &Podman, tag: &str, version: &str) -> Result<()> {
    let files = context(version);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    podman.build(tag, &containerfile(version), &files)
}
