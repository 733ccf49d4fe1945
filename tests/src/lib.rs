//! Integration test harness for hostd, used by every test under `tests/tests/`.
//!
//! - [`sysroot`]: throwaway ostree sysroots on a tmpfs (ostree freezes the
//!   filesystem holding `boot/`; a tmpfs makes that harmless).
//! - [`fixture`]: bootable-shaped OCI images encapsulated with ostree-ext,
//!   several layers and a version label, with v2/v3 changing chosen layers.
//! - [`jobs`]: start a job over the bus and record every change a client sees.
//! - [`machine`]: a private system bus with a real polkitd in a private mount
//!   namespace (own /etc with test users and polkit rules), hostd started by
//!   D-Bus activation against a sysroot.
//! - [`registry`]: a real `docker-registry` on 127.0.0.1 and a rate-limited
//!   relay in front of it, for pulls slow enough to watch and cancel.
//! - [`standin_registry`]: a stand-in registry on 127.0.0.1 that fails
//!   manifest requests (500, 403, 429, reset) as a real one cannot be told to.
//! - [`schema`]: validation against bootc's published JSON schemas.
//! - [`signing`]: GPG and cosign-format keys, images pushed signed with
//!   skopeo, and where skopeo finds their signatures.
//! - [`bound`]: a small application image for logically bound images, the
//!   quadlet files binding it, and readers of the bound-image store.
//! - [`booted`]: the test OS booted under systemd with systemd-nspawn, for
//!   tests of hostd on a running image-based host.
//! - [`offline`]: v1 deployed on an offline sysroot, and readers of its status.
//! - [`fleetlock`]: a stand-in FleetLock lock manager on 127.0.0.1.
//! - [`journal`]: the journal entries hostd sends, caught at the socket.
//! - [`consistency`]: what a host must look like after any fault.
//! - [`inject`]: a `PATH` without skopeo, a skopeo that crashes on demand,
//!   and `ostree admin` holding the sysroot lock.
//!
//! Everything started is stopped on drop, also when a test panics.

pub mod booted;
pub mod bound;
pub mod consistency;
pub mod fixture;
pub mod fleetlock;
pub mod inject;
pub mod jobs;
pub mod journal;
pub mod machine;
pub mod offline;
pub mod podman;
pub mod registry;
pub mod schema;
pub mod signing;
pub mod standin_registry;
pub mod sysroot;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A built binary of the workspace (`hostd` or `hostctl`), from the same
/// profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/<name>
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile dir");
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built; run `cargo build --workspace` first", path.display());
    path
}

/// Run a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Make the test process's libostree leave deployment directories mutable, so
/// teardown can remove them.
pub fn mutable_deployments() {
    std::env::set_var("OSTREE_SYSROOT_DEBUG", "mutable-deployments");
}
