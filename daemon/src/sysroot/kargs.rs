//! Kernel arguments shipped by images in `/usr/lib/bootc/kargs.d/*.toml`
//! (`kargs = [...]`, optional `match-architectures = [...]`), applied as a
//! diff: what the old image added is removed, what the new one adds is added,
//! and whatever the admin set locally stays.

use anyhow::{Context, Result};
use ostree_ext::gio::prelude::*;
use ostree_ext::{gio, ostree};
use serde::Deserialize;

const KARGS_DIR: &str = "usr/lib/bootc/kargs.d";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct KargsFile {
    kargs: Vec<String>,
    match_architectures: Option<Vec<String>>,
}

/// The kernel arguments an image commit asks for, in file name order.
pub fn from_commit(repo: &ostree::Repo, commit: &str) -> Result<Vec<String>> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE)?;
    let dir = root.resolve_relative_path(KARGS_DIR);
    // A missing parent directory is reported with varying error codes by
    // ostree's RepoFile, so ask for the type instead of matching errors.
    let kind = dir.query_file_type(gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE);
    if kind != gio::FileType::Directory {
        return Ok(Vec::new());
    }
    let entries = dir
        .enumerate_children(
            "standard::name,standard::type",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )
        .context("listing kargs.d")?;
    let mut names: Vec<String> = Vec::new();
    for info in entries {
        let info = info?;
        let name = info.name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && info.file_type() == gio::FileType::Regular {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let bytes = read_commit_file(repo, &dir.child(&name)).with_context(|| format!("reading {KARGS_DIR}/{name}"))?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("{KARGS_DIR}/{name}"))?;
        out.extend(parse(text, std::env::consts::ARCH).with_context(|| format!("{KARGS_DIR}/{name}"))?);
    }
    Ok(out)
}

/// The content of a regular file of a commit. Not `load_contents`: that
/// asks the file's stream for its etag as if it were a `GFileInputStream`,
/// which the stream of an ostree `RepoFile` is not, and GLib logs a
/// CRITICAL for every file read so (ostree issue 2703).
fn read_commit_file(repo: &ostree::Repo, file: &gio::File) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = file.downcast_ref::<ostree::RepoFile>().context("not a file of an ostree commit")?;
    file.ensure_resolved()?;
    let (stream, _, _) = repo.load_file(file.checksum().as_str(), gio::Cancellable::NONE)?;
    let mut bytes = Vec::new();
    if let Some(stream) = stream {
        stream.into_read().read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// The kargs of one file for `arch` (Rust's arch names, e.g. `x86_64`).
pub fn parse(text: &str, arch: &str) -> Result<Vec<String>> {
    let f: KargsFile = toml::from_str(text)?;
    match f.match_architectures {
        Some(archs) if !archs.iter().any(|a| a == arch) => Ok(Vec::new()),
        _ => Ok(f.kargs),
    }
}

/// `current` minus what the old image added, plus what the new image adds.
pub fn apply_diff(current: &[String], old_image: &[String], new_image: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current.iter().filter(|k| !old_image.contains(k)).cloned().collect();
    for k in new_image {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diff_keeps_local_and_swaps_image_kargs() {
        let current = v(&["rw", "quiet", "console=ttyS0", "local=1"]);
        let got = apply_diff(&current, &v(&["quiet", "console=ttyS0"]), &v(&["console=ttyS1", "quiet"]));
        assert_eq!(got, v(&["rw", "local=1", "console=ttyS1", "quiet"]));
    }

    #[test]
    fn architecture_filter() {
        let t = "kargs = [\"a=1\"]\nmatch-architectures = [\"aarch64\"]\n";
        assert!(parse(t, "x86_64").unwrap().is_empty());
        assert_eq!(parse(t, "aarch64").unwrap(), v(&["a=1"]));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(parse("kargs = []\nextra = 1\n", "x86_64").is_err());
    }
}
