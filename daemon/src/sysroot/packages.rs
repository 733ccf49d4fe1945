//! The packages installed in a tree, read from its package database, and
//! what differs between two such lists. Pure: [`super::diff`] reads the
//! files out of the ostree commits and hands their bytes here.
//!
//! Debian-based images: dpkg's status file (deb822 paragraphs, Debian
//! policy §5.1 for the syntax, dpkg's `dpkg-query(1)` for the `Status`
//! field). ostree-ext 0.15 moves an image's `/var` to
//! `/usr/share/factory/var` when it imports a layer, so an image's
//! `/var/lib/dpkg/status` is found there; a commit that keeps its own `/var`
//! has it in place ([`DPKG_STATUS_PATHS`], first found wins). Versions are
//! compared by dpkg's rules (Debian policy §5.6.12) through the `debversion`
//! crate.
//!
//! rpm databases ([`RPM_DB_DIRS`]) are recognized but not read: Debian's
//! `rpm` tools that could read one are not a dependency hostd has, and a
//! hand-written reader of rpm's sqlite/ndb formats would not be sound. A
//! tree with one is reported as such and its packages are not compared.

use std::collections::BTreeMap;

use debversion::Version;
use hostd_interface::diff::{PackageChange, PackageChangeKind};

/// Where a tree keeps dpkg's status file, in the order looked at.
pub const DPKG_STATUS_PATHS: [&str; 2] = ["usr/share/factory/var/lib/dpkg/status", "var/lib/dpkg/status"];
/// Where a tree keeps an rpm database (rpm ≥ 4.16, and older Fedora).
pub const RPM_DB_DIRS: [&str; 2] = ["usr/lib/sysimage/rpm", "usr/share/rpm"];
/// A larger status file is refused: a full desktop's is a few MiB.
pub const MAX_STATUS_BYTES: u64 = 64 << 20;
/// More installed packages than this are refused (a full Debian archive
/// has about 65 000 binary packages per architecture).
pub const MAX_PACKAGES: usize = 200_000;

/// A package's name and architecture: dpkg's key of an installed package.
pub type PackageKey = (String, String);
/// Installed packages: (name, architecture) → version as written.
pub type Installed = BTreeMap<PackageKey, String>;

/// A status file that cannot be read as dpkg writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Malformed {
    /// The 1-based line of the file where the problem is (for a whole
    /// paragraph, its first line).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// One paragraph's fields of interest, and where it starts.
#[derive(Debug, Default)]
struct Paragraph {
    line: usize,
    package: Option<String>,
    architecture: Option<String>,
    version: Option<String>,
    status: Option<String>,
}

impl Paragraph {
    fn set(&mut self, field: &str, value: &str, line: usize) -> Result<(), Malformed> {
        let slot = match field.to_ascii_lowercase().as_str() {
            "package" => &mut self.package,
            "architecture" => &mut self.architecture,
            "version" => &mut self.version,
            "status" => &mut self.status,
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(Malformed { line, reason: format!("the field {field} appears twice in one paragraph") });
        }
        *slot = Some(value.trim().to_string());
        Ok(())
    }

    /// The installed package this paragraph describes; `None` for one whose
    /// files are not on disk (`not-installed`, `config-files`).
    fn installed(self) -> Result<Option<(PackageKey, String)>, Malformed> {
        let line = self.line;
        let missing = |field: &str| Malformed { line, reason: format!("a paragraph has no {field} field") };
        let name = self.package.ok_or_else(|| missing("Package"))?;
        let status = self.status.ok_or_else(|| missing("Status"))?;
        let words: Vec<&str> = status.split_whitespace().collect();
        let [_want, _flag, state] = words[..] else {
            return Err(Malformed { line, reason: format!("{name}: the Status {status:?} is not three words") });
        };
        match state {
            "not-installed" | "config-files" => return Ok(None),
            "installed" | "unpacked" | "half-configured" | "half-installed" | "triggers-awaited"
            | "triggers-pending" => {}
            other => return Err(Malformed { line, reason: format!("{name}: unknown package state {other:?}") }),
        }
        let version = self.version.ok_or_else(|| missing("Version"))?;
        let parsed = version
            .parse::<Version>()
            .map_err(|e| Malformed { line, reason: format!("{name}: the version {version:?} is not valid: {e}") })?;
        // Debian policy §5.6.12: "The upstream_version must start with a digit".
        if !parsed.upstream_version.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(Malformed { line, reason: format!("{name}: the version {version:?} is not valid: it does not start with a digit") });
        }
        let architecture = self.architecture.ok_or_else(|| missing("Architecture"))?;
        Ok(Some(((name, architecture), version)))
    }
}

/// The installed packages of a dpkg status file.
pub fn parse_dpkg_status(text: &str) -> Result<Installed, Malformed> {
    let mut installed = Installed::new();
    let mut current: Option<Paragraph> = None;
    let finish = |p: Paragraph, installed: &mut Installed| -> Result<(), Malformed> {
        let line = p.line;
        if let Some((key, version)) = p.installed()? {
            if installed.len() >= MAX_PACKAGES {
                return Err(Malformed { line, reason: format!("more than {MAX_PACKAGES} packages") });
            }
            if installed.insert(key.clone(), version).is_some() {
                return Err(Malformed { line, reason: format!("{}:{} is listed twice", key.0, key.1) });
            }
        }
        Ok(())
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.trim().is_empty() {
            if let Some(p) = current.take() {
                finish(p, &mut installed)?;
            }
            continue;
        }
        if l.starts_with(' ') || l.starts_with('\t') {
            // A continuation line of a multi-line field (Description,
            // Conffiles): none of the fields read here has one.
            if current.is_none() {
                return Err(Malformed { line, reason: "a continuation line starts a paragraph".into() });
            }
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let Some((field, value)) = l.split_once(':') else {
            return Err(Malformed { line, reason: "neither a field (Name: value) nor a continuation line".into() });
        };
        if field.is_empty() || field.contains(char::is_whitespace) {
            return Err(Malformed { line, reason: format!("{field:?} is not a field name") });
        }
        current.get_or_insert_with(|| Paragraph { line, ..Paragraph::default() }).set(field, value, line)?;
    }
    if let Some(p) = current.take() {
        finish(p, &mut installed)?;
    }
    Ok(installed)
}

/// What differs from `from` to `to`, sorted by name and architecture.
/// Versions that parse differently but compare equal (`1.0` and `1.0-0`)
/// are the same.
pub fn diff(from: &Installed, to: &Installed) -> Vec<PackageChange> {
    let mut changes = Vec::new();
    let change = |(name, arch): &PackageKey, kind, from: Option<&String>, to: Option<&String>| PackageChange {
        name: name.clone(),
        architecture: arch.clone(),
        kind,
        from: from.cloned(),
        to: to.cloned(),
    };
    for (key, old) in from {
        match to.get(key) {
            None => changes.push(change(key, PackageChangeKind::Removed, Some(old), None)),
            Some(new) => {
                // Both parsed when the files were read.
                let ordering = match (old.parse::<Version>(), new.parse::<Version>()) {
                    (Ok(a), Ok(b)) => a.cmp(&b),
                    _ => old.cmp(new),
                };
                match ordering {
                    std::cmp::Ordering::Less => changes.push(change(key, PackageChangeKind::Upgraded, Some(old), Some(new))),
                    std::cmp::Ordering::Greater => {
                        changes.push(change(key, PackageChangeKind::Downgraded, Some(old), Some(new)))
                    }
                    std::cmp::Ordering::Equal => {}
                }
            }
        }
    }
    for (key, new) in to {
        if !from.contains_key(key) {
            changes.push(change(key, PackageChangeKind::Added, None, Some(new)));
        }
    }
    changes.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    changes
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        a.parse::<Version>().unwrap().cmp(&b.parse::<Version>().unwrap())
    }

    /// The orderings Debian policy §5.6.12 spells out, and dpkg's own
    /// test cases for `verrevcmp` (lib/dpkg/t/t-version.c).
    #[test]
    fn versions_compare_by_debian_policy() {
        let less = [
            // "~~" < "~~a" < "~" < "" < "a" (policy's example of the tilde).
            ("1.0~~", "1.0~~a"),
            ("1.0~~a", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            // A pre-release sorts before the release.
            ("1.0~rc1", "1.0"),
            ("1.0~rc1-1", "1.0-1"),
            // Digits compare numerically, not as text.
            ("1.9", "1.10"),
            ("1.0-9", "1.0-10"),
            // Letters sort before non-letters.
            ("1.0a", "1.0+"),
            ("1.0+", "1.0."),
            // The epoch decides first.
            ("2.0", "1:0.1"),
            ("1:9.9", "2:0.1"),
            // Then the upstream version, then the revision.
            ("1.0-2", "1.1-1"),
            ("1.0-1", "1.0-1+deb12u1"),
            ("1.0-1+b1", "1.0-2"),
            ("6.1.0-9", "6.1.0-10"),
        ];
        for (a, b) in less {
            assert_eq!(cmp(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(cmp(b, a), Ordering::Greater, "{b} > {a}");
        }
        // Equal: an absent epoch is 0, an absent revision is "0", leading
        // zeroes in numbers do not count.
        for (a, b) in [("1.0", "0:1.0"), ("1.0", "1.0-0"), ("1.01", "1.1"), ("1.0-1", "0:1.0-1")] {
            assert_eq!(cmp(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    const STATUS: &str = "\
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u11
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.
 .
 More text.

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u10

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u10

Package: removed-long-ago
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: purged
Status: purge ok not-installed
Architecture: all

Package: tzdata
status: install ok installed
architecture: all
version: 2025b-0+deb12u1
";

    #[test]
    fn installed_packages_of_a_status_file() {
        let installed = parse_dpkg_status(STATUS).unwrap();
        let keys: Vec<String> = installed.iter().map(|((n, a), v)| format!("{n}:{a}={v}")).collect();
        assert_eq!(
            keys,
            [
                "base-files:amd64=12.4+deb12u11",
                "libc6:amd64=2.36-9+deb12u10",
                "libc6:i386=2.36-9+deb12u10",
                "tzdata:all=2025b-0+deb12u1",
            ]
        );
        assert!(parse_dpkg_status("").unwrap().is_empty());
        // CRLF line ends and trailing blank lines are fine.
        let crlf = STATUS.replace('\n', "\r\n") + "\r\n\r\n";
        assert_eq!(parse_dpkg_status(&crlf).unwrap(), installed);
    }

    #[test]
    fn malformed_status_files_are_named_with_their_line() {
        let table: &[(&str, usize, &str)] = &[
            ("Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nbroken line\n", 5, "neither a field"),
            (" leading continuation\n", 1, "continuation line starts"),
            ("Status: install ok installed\nArchitecture: all\nVersion: 1\n", 1, "no Package field"),
            ("Package: a\nArchitecture: all\nVersion: 1\n", 1, "no Status field"),
            ("Package: a\nStatus: install ok\nArchitecture: all\nVersion: 1\n", 1, "not three words"),
            ("Package: a\nStatus: install ok sideways\nArchitecture: all\nVersion: 1\n", 1, "unknown package state"),
            ("Package: a\nStatus: install ok installed\nArchitecture: all\n", 1, "no Version field"),
            ("Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1 2\n", 1, "is not valid"),
            ("Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: -1\n", 1, "is not valid"),
            ("Package: a\nStatus: install ok installed\nVersion: 1\n", 1, "no Architecture field"),
            ("Package: a\nPackage: b\n", 2, "appears twice"),
            (
                "Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
                 Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 2\n",
                6,
                "listed twice",
            ),
            ("Bad Field: x\n", 1, "is not a field name"),
        ];
        for (text, line, reason) in table {
            let e = parse_dpkg_status(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
        // Arbitrary bytes never panic.
        for text in ["\0\0", ":", "::\n\n", "\u{feff}Package: x", "Package:\nStatus:\n"] {
            let _ = parse_dpkg_status(text);
        }
    }

    fn list(entries: &[(&str, &str, &str)]) -> Installed {
        entries.iter().map(|(n, a, v)| ((n.to_string(), a.to_string()), v.to_string())).collect()
    }

    #[test]
    fn the_diff_lists_added_removed_upgraded_and_downgraded_packages() {
        let from = list(&[
            ("base-files", "amd64", "12.4"),
            ("bash", "amd64", "5.2.15-2+b2"),
            ("curl", "amd64", "7.88.1-10+deb12u5"),
            ("gone", "all", "1.0"),
            ("libc6", "amd64", "2.36-9"),
            ("libc6", "i386", "2.36-9"),
            ("same-meaning", "all", "1.0"),
            ("tzdata", "all", "2025b-0+deb12u1"),
        ]);
        let to = list(&[
            ("base-files", "amd64", "12.4"),
            ("bash", "amd64", "5.2.15-2+b10"),
            ("curl", "amd64", "7.88.1-10+deb12u4"),
            ("libc6", "amd64", "2.36-9+deb12u1"),
            ("netbase", "all", "6.4"),
            ("same-meaning", "all", "0:1.0-0"),
            ("tzdata", "all", "2025b-0+deb12u1~rc1"),
        ]);
        let shown: Vec<String> = diff(&from, &to)
            .iter()
            .map(|c| {
                format!("{} {}:{} {:?}->{:?}", c.kind, c.name, c.architecture, c.from.as_deref(), c.to.as_deref())
            })
            .collect();
        assert_eq!(
            shown,
            [
                "upgraded bash:amd64 Some(\"5.2.15-2+b2\")->Some(\"5.2.15-2+b10\")",
                "downgraded curl:amd64 Some(\"7.88.1-10+deb12u5\")->Some(\"7.88.1-10+deb12u4\")",
                "removed gone:all Some(\"1.0\")->None",
                "upgraded libc6:amd64 Some(\"2.36-9\")->Some(\"2.36-9+deb12u1\")",
                "removed libc6:i386 Some(\"2.36-9\")->None",
                "added netbase:all None->Some(\"6.4\")",
                "downgraded tzdata:all Some(\"2025b-0+deb12u1\")->Some(\"2025b-0+deb12u1~rc1\")",
            ]
        );
        assert!(diff(&from, &from).is_empty());
    }
}
