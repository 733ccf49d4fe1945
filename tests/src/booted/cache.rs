//! Build products kept between test runs, outside the checkout: the
//! debootstrapped root file system and the test OS images built from it.
//!
//! Each product is a directory `<root>/<kind>-<key>`, where the key is a
//! hash of everything its content depends on. A product is built in a
//! `<kind>-<key>.partial-<pid>` directory and renamed into place only when
//! complete, so an interrupted build is never used; partial directories of
//! processes that are gone are removed, and so are other keys of the same
//! kind once a new one is complete (they can no longer be wanted).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree_ext::glib;

/// Where products are kept unless `HOSTD_TEST_CACHE` names another directory.
pub const DEFAULT_ROOT: &str = "/var/cache/hostd-tests";

/// The cache directory (created).
pub fn root() -> Result<PathBuf> {
    let root = std::env::var_os("HOSTD_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| DEFAULT_ROOT.into());
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    Ok(root)
}

/// A hash of `parts`, short enough for a directory name.
pub fn key(parts: &[&[u8]]) -> String {
    let mut sum = glib::Checksum::new(glib::ChecksumType::Sha256).expect("sha256 is supported");
    for part in parts {
        // The length first, so ("ab", "c") and ("a", "bc") differ.
        sum.update(&(part.len() as u64).to_le_bytes());
        sum.update(part);
    }
    sum.string().expect("a fresh checksum has a digest")[..16].to_string()
}

/// The directory of product `kind` with `key`, built by `build` (given an
/// empty directory to fill) unless it exists already.
pub fn product(kind: &str, key: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let root = root()?;
    let done = root.join(format!("{kind}-{key}"));
    if done.is_dir() {
        return Ok(done);
    }
    remove_abandoned(&root)?;
    let partial = root.join(format!("{kind}-{key}.partial-{}", std::process::id()));
    std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    if let Err(e) = build(&partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.context(format!("building {}", done.display())));
    }
    if std::fs::rename(&partial, &done).is_err() {
        // Another process finished the same product first.
        std::fs::remove_dir_all(&partial)?;
    }
    remove_other_keys(&root, kind, &done)?;
    Ok(done)
}

/// A directory for one test's files below the cache root, named after this
/// process so one left by a killed run can be recognized and removed.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = root()?.join("run");
    std::fs::create_dir_all(&dir)?;
    remove_abandoned(&dir)?;
    Ok(tempfile::Builder::new().prefix(&format!("{prefix}.partial-{}-", std::process::id())).tempdir_in(dir)?)
}

/// Remove `*.partial-<pid>…` entries whose process no longer runs.
fn remove_abandoned(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(pid) = path.file_name().and_then(|n| n.to_str()).and_then(owner_pid) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The pid in `<name>.partial-<pid>` or `<name>.partial-<pid>-<suffix>`.
fn owner_pid(name: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once(".partial-")?;
    rest.split('-').next()?.parse().ok()
}

fn remove_other_keys(root: &Path, kind: &str, keep: &Path) -> Result<()> {
    let prefix = format!("{kind}-");
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&prefix) && !name.contains(".partial-") && path != keep {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing the outdated {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(key(&[b"x"]), key(&[b"x"]));
        assert_eq!(key(&[b"x"]).len(), 16);
    }

    #[test]
    fn partial_names_carry_their_pid() {
        assert_eq!(owner_pid("rootfs-0123.partial-42"), Some(42));
        assert_eq!(owner_pid("machine.partial-42-a1B2c3"), Some(42));
        assert_eq!(owner_pid("rootfs-0123"), None);
    }
}
