//! The test OS's root file system: a `debootstrap --variant=minbase` of
//! Debian 12 with what an image-based host running hostd needs, from the
//! mirror this machine's apt already uses. Cached (see [`super::cache`]) by
//! suite, package list and mirror.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache;
use crate::run;

/// The Debian release the test OS is made of.
pub const SUITE: &str = "bookworm";

/// Installed on top of minbase: init and bus (systemd, dbus, logind through
/// libpam-systemd), polkit, ostree with its boot units (finalizing staged
/// deployments), skopeo for hostd's image proxy (netavark lets debootstrap
/// satisfy containers-common), the tools tests run inside (procps,
/// util-linux), libssl3, which hostd links, and podman, which runs the
/// containers of logically bound images from the bound-image store.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "polkitd",
    "ostree",
    "ostree-boot",
    "skopeo",
    "netavark",
    "procps",
    "util-linux",
    "libssl3",
    "podman",
];

/// The cached root file system, debootstrapped first if needed.
pub fn rootfs() -> Result<PathBuf> {
    let mirror = apt_mirror()?;
    let key = rootfs_key(&mirror);
    cache::product("rootfs", &key, |dir| debootstrap(&mirror, dir))
}

/// What the cached root file system depends on.
pub fn rootfs_key(mirror: &str) -> String {
    cache::key(&[SUITE.as_bytes(), PACKAGES.join(",").as_bytes(), mirror.as_bytes()])
}

fn debootstrap(mirror: &str, dir: &Path) -> Result<()> {
    let target = dir.join("rootfs");
    let log = dir.join("debootstrap.log");
    let log_file = std::fs::File::create(&log)?;
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", PACKAGES.join(",")), SUITE])
        .arg(&target)
        .arg(mirror)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!("debootstrap failed ({status}):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    // Downloaded packages are not part of the system.
    run(Command::new("chroot").arg(&target).args(["apt-get", "clean"]))?;
    Ok(())
}

/// The first mirror in this machine's apt sources that serves [`SUITE`]
/// (deb822 `*.sources` files first, then the one-line `sources.list`).
pub fn apt_mirror() -> Result<String> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sources.sort();
    let has_extension = |p: &Path, ext: &str| p.extension().is_some_and(|e| e == ext);
    for path in sources.iter().filter(|p| has_extension(p, "sources")) {
        if let Some(uri) = mirror_in_deb822(&std::fs::read_to_string(path)?) {
            return Ok(uri);
        }
    }
    let lists = sources.iter().filter(|p| has_extension(p, "list"));
    for path in std::iter::once(&PathBuf::from("/etc/apt/sources.list")).chain(lists) {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        if let Some(uri) = mirror_in_one_line(&text) {
            return Ok(uri);
        }
    }
    bail!("no apt source for Debian {SUITE} found in /etc/apt; debootstrap needs a mirror")
}

/// The URI of the first enabled `Types: deb` stanza listing [`SUITE`].
fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'))).map(str::trim)
        };
        let words = |name: &str| field(name).unwrap_or_default().split_whitespace().collect::<Vec<_>>();
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        (enabled && words("Types").contains(&"deb") && words("Suites").contains(&SUITE))
            .then(|| words("URIs").first().map(|u| u.to_string()))
            .flatten()
    })
}

/// The URI of the first `deb [options] URI bookworm …` line.
fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == SUITE).then(|| uri.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_stanza_of_the_suite() {
        let text = "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb\n# comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(mirror_in_deb822(text).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in_deb822("Types: deb\nEnabled: no\nURIs: http://x/\nSuites: bookworm\n"), None);
    }

    #[test]
    fn one_line_sources_skip_options_and_other_suites() {
        let text = "deb http://a.example/debian bullseye main\n\
                    deb [ arch=amd64 trusted=yes ] http://b.example/debian bookworm main\n";
        assert_eq!(mirror_in_one_line(text).as_deref(), Some("http://b.example/debian"));
    }
}
