//! The packages installed in a tree, read from its package database, and
//! what differs between two such lists. Pure: [`super::diff`] reads the
//! files out of the ostree commits (and has rpm list an rpm database, see
//! [`super::rpmdb`]) and hands the text here.
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
//! Fedora-based images: rpm's sqlite database (`rpmdb.sqlite`, rpm ≥ 4.16)
//! in one of [`RPM_DB_DIRS`]. It is not read here but by rpm itself
//! (Debian's `rpm` 4.18, see [`super::rpmdb`]), which prints one line per
//! installed package in [`RPM_QUERY_FORMAT`]; [`parse_rpm_query`] reads
//! those lines (why rpm and not a crate: see [`super::rpmdb`]; a
//! hand-written reader of rpm's header blobs would have to follow every
//! header format rpm has written). Versions are compared by rpm's rules
//! (`rpmvercmp`: epoch, then version, then release; `~` sorts before
//! anything, `^` after the version it extends but before anything else)
//! through the `rpm-version` crate of the rpm-rs project. rpm keeps
//! several versions of an install-only package (kernels) side by side, so
//! a name and architecture can have several versions.
//!
//! An rpm directory without `rpmdb.sqlite` (the Berkeley DB or ndb
//! formats of older rpm) is reported as an rpm database whose packages
//! are not compared.

use std::collections::BTreeMap;

use std::cmp::Ordering;

use debversion::Version;
use hostd_interface::diff::{PackageChange, PackageChangeKind};

/// Where a tree keeps dpkg's status file, in the order looked at.
pub const DPKG_STATUS_PATHS: [&str; 2] = ["usr/share/factory/var/lib/dpkg/status", "var/lib/dpkg/status"];
/// Where a tree keeps an rpm database (rpm ≥ 4.16, and older Fedora).
pub const RPM_DB_DIRS: [&str; 2] = ["usr/lib/sysimage/rpm", "usr/share/rpm"];
/// rpm's database file in one of [`RPM_DB_DIRS`], and its write-ahead log
/// (read with it when present: sqlite keeps recent writes there).
pub const RPM_DB_FILES: [&str; 2] = ["rpmdb.sqlite", "rpmdb.sqlite-wal"];
/// What rpm prints for each installed package: name, architecture, epoch,
/// version and release, separated by tabs (`(none)` for an unset tag).
pub const RPM_QUERY_FORMAT: &str = "%{NAME}\\t%{ARCH}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\n";
/// What rpm prints for a tag a header does not have.
const RPM_UNSET: &str = "(none)";
/// A larger status file is refused: a full desktop's is a few MiB.
pub const MAX_STATUS_BYTES: u64 = 64 << 20;
/// More installed packages than this are refused (a full Debian archive
/// has about 65 000 binary packages per architecture).
pub const MAX_PACKAGES: usize = 200_000;

/// A package's name and architecture: dpkg's key of an installed package.
pub type PackageKey = (String, String);
/// Installed packages: (name, architecture) → its versions as written
/// (one for dpkg; rpm may keep several, in rpm's order).
pub type Installed = BTreeMap<PackageKey, Vec<String>>;

/// Whose rules order the versions of a package database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// dpkg's (Debian policy §5.6.12): `[epoch:]upstream[-revision]`.
    Dpkg,
    /// rpm's (`rpmvercmp`): `[epoch:]version-release`.
    Rpm,
}

impl VersionOrder {
    /// How `a` compares to `b`. Versions as the parsers here wrote them;
    /// anything else compares as text.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            VersionOrder::Dpkg => match (a.parse::<Version>(), b.parse::<Version>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.cmp(b),
            },
            // The parser wrote `[epoch:]version-release` with neither `:`
            // nor `-` inside version and release, so it splits back exactly.
            VersionOrder::Rpm => rpm_version::Evr::parse(a).cmp(&rpm_version::Evr::parse(b)),
        }
    }
}

/// The count of installed package versions.
pub fn count(installed: &Installed) -> usize {
    installed.values().map(Vec::len).sum()
}

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
            if installed.insert(key.clone(), vec![version]).is_some() {
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

/// The installed packages of rpm's answer to `-qa --qf` [`RPM_QUERY_FORMAT`]:
/// one line per installed header. The epoch is a number or unset, version
/// and release are non-empty and hold neither `:` nor `-` (rpmbuild refuses
/// them), and no field holds white space or control characters.
pub fn parse_rpm_query(text: &str) -> Result<Installed, Malformed> {
    let mut installed = Installed::new();
    let mut total = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason: String| Malformed { line, reason };
        let fields: Vec<&str> = raw.split('\t').collect();
        let [name, arch, epoch, version, release] = fields[..] else {
            return Err(bad(format!("{} fields where rpm prints 5 (a tag holding a tab or a line break?)", fields.len())));
        };
        for (what, value) in [("name", name), ("architecture", arch), ("epoch", epoch), ("version", version), ("release", release)] {
            if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!("the {what} {value:?} is empty or holds white space")));
            }
        }
        if name == RPM_UNSET {
            return Err(bad("a package without a name".into()));
        }
        for (what, value) in [("version", version), ("release", release)] {
            if value == RPM_UNSET || value.contains([':', '-']) {
                return Err(bad(format!("{name}: the {what} {value:?} is unset or holds ':' or '-'")));
            }
        }
        let evr = if epoch == RPM_UNSET {
            format!("{version}-{release}")
        } else {
            let n: u32 = epoch.parse().map_err(|_| bad(format!("{name}: the epoch {epoch:?} is not a number")))?;
            format!("{n}:{version}-{release}")
        };
        total += 1;
        if total > MAX_PACKAGES {
            return Err(bad(format!("more than {MAX_PACKAGES} packages")));
        }
        installed.entry((name.to_string(), arch.to_string())).or_default().push(evr);
    }
    for versions in installed.values_mut() {
        versions.sort_by(|a, b| VersionOrder::Rpm.compare(a, b));
    }
    Ok(installed)
}

/// What differs from `from` to `to`, versions ordered by `order`, sorted by
/// name and architecture. Versions that are written differently but
/// compare equal (`1.0` and `1.0-0`) are the same. Where a name and
/// architecture has one version on each side that differ, it is upgraded
/// or downgraded; otherwise (several versions of an install-only rpm
/// package) each version only one side has is removed or added.
pub fn diff(from: &Installed, to: &Installed, order: VersionOrder) -> Vec<PackageChange> {
    let mut changes = Vec::new();
    let change = |(name, arch): &PackageKey, kind, from: Option<&String>, to: Option<&String>| PackageChange {
        name: name.clone(),
        architecture: arch.clone(),
        kind,
        from: from.cloned(),
        to: to.cloned(),
    };
    let none = Vec::new();
    let keys: std::collections::BTreeSet<&PackageKey> = from.keys().chain(to.keys()).collect();
    for key in keys {
        let (old, new) = (from.get(key).unwrap_or(&none), to.get(key).unwrap_or(&none));
        let missing_in = |these: &[String], others: &[String]| -> Vec<String> {
            these.iter().filter(|v| !others.iter().any(|o| order.compare(v, o) == Ordering::Equal)).cloned().collect()
        };
        let (gone, came) = (missing_in(old, new), missing_in(new, old));
        match (&gone[..], &came[..]) {
            ([a], [b]) => {
                let kind = match order.compare(a, b) {
                    Ordering::Greater => PackageChangeKind::Downgraded,
                    _ => PackageChangeKind::Upgraded,
                };
                changes.push(change(key, kind, Some(a), Some(b)));
            }
            _ => {
                changes.extend(gone.iter().map(|v| change(key, PackageChangeKind::Removed, Some(v), None)));
                changes.extend(came.iter().map(|v| change(key, PackageChangeKind::Added, None, Some(v))));
            }
        }
    }
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
        let keys: Vec<String> = installed.iter().map(|((n, a), v)| format!("{n}:{a}={}", v.join(","))).collect();
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
        entries.iter().map(|(n, a, v)| ((n.to_string(), a.to_string()), vec![v.to_string()])).collect()
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
        let shown = shown(&diff(&from, &to, VersionOrder::Dpkg));
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
        assert!(diff(&from, &from, VersionOrder::Dpkg).is_empty());
    }

    fn shown(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}:{} {:?}->{:?}", c.kind, c.name, c.architecture, c.from.as_deref(), c.to.as_deref()))
            .collect()
    }

    /// rpm's own test cases for `rpmvercmp` (rpm's tests/rpmvercmp.at),
    /// as (a, b, a compared to b).
    #[test]
    fn versions_compare_by_rpmvercmp() {
        use Ordering::{Equal as E, Greater as G, Less as L};
        let table = [
            ("1.0", "1.0", E), ("1.0", "2.0", L), ("2.0", "1.0", G),
            ("2.0.1", "2.0.1", E), ("2.0", "2.0.1", L), ("2.0.1", "2.0", G),
            ("2.0.1a", "2.0.1a", E), ("2.0.1a", "2.0.1", G), ("2.0.1", "2.0.1a", L),
            ("5.5p1", "5.5p1", E), ("5.5p1", "5.5p2", L), ("5.5p2", "5.5p1", G),
            ("5.5p10", "5.5p10", E), ("5.5p1", "5.5p10", L), ("5.5p10", "5.5p1", G),
            ("10xyz", "10.1xyz", L), ("10.1xyz", "10xyz", G),
            ("xyz10", "xyz10", E), ("xyz10", "xyz10.1", L), ("xyz10.1", "xyz10", G),
            ("xyz.4", "xyz.4", E), ("xyz.4", "8", L), ("8", "xyz.4", G), ("xyz.4", "2", L), ("2", "xyz.4", G),
            ("5.5p2", "5.6p1", L), ("5.6p1", "5.5p2", G),
            ("5.6p1", "6.5p1", L), ("6.5p1", "5.6p1", G),
            ("6.0.rc1", "6.0", G), ("6.0", "6.0.rc1", L),
            ("10b2", "10a1", G), ("10a2", "10b2", L),
            ("1.0aa", "1.0aa", E), ("1.0a", "1.0aa", L), ("1.0aa", "1.0a", G),
            ("10.0001", "10.0001", E), ("10.0001", "10.1", E), ("10.1", "10.0001", E),
            ("10.0001", "10.0039", L), ("10.0039", "10.0001", G),
            ("4.999.9", "5.0", L), ("5.0", "4.999.9", G),
            ("20101121", "20101121", E), ("20101121", "20101122", L), ("20101122", "20101121", G),
            ("2_0", "2_0", E), ("2.0", "2_0", E), ("2_0", "2.0", E),
            ("a", "a", E), ("a+", "a+", E), ("a+", "a_", E), ("a_", "a+", E), ("+a", "+a", E),
            ("+a", "_a", E), ("_a", "+a", E), ("+_", "+_", E), ("_+", "+_", E), ("_+", "_+", E),
            ("+", "_", E), ("_", "+", E),
            ("1.0~rc1", "1.0~rc1", E), ("1.0~rc1", "1.0", L), ("1.0", "1.0~rc1", G),
            ("1.0~rc1", "1.0~rc2", L), ("1.0~rc2", "1.0~rc1", G),
            ("1.0~rc1~git123", "1.0~rc1~git123", E), ("1.0~rc1~git123", "1.0~rc1", L), ("1.0~rc1", "1.0~rc1~git123", G),
            // The caret (rpm ≥ 4.15): after the version it extends, before
            // anything else; each as Debian's rpm 4.18 answers `rpm.vercmp`.
            ("1.0^", "1.0^", E), ("1.0^", "1.0", G), ("1.0", "1.0^", L),
            ("1.0^git1", "1.0", G), ("1.0^git1", "1.01", L), ("1.0^git1", "1.0^git2", L),
            ("1.0^git1", "1.0.1", L), ("1.0^git1", "1.0~rc1", G), ("1.0~rc1^git1", "1.0~rc1", G),
            ("1.0^git1~pre", "1.0^git1", L),
        ];
        for (a, b, expected) in table {
            // As versions of one release, then as whole EVRs.
            assert_eq!(VersionOrder::Rpm.compare(&format!("{a}-1"), &format!("{b}-1")), expected, "{a} vs {b}");
            assert_eq!(VersionOrder::Rpm.compare(&format!("1-{a}"), &format!("1-{b}")), expected, "release {a} vs {b}");
        }
        // The epoch decides first; no epoch is epoch 0.
        assert_eq!(VersionOrder::Rpm.compare("1:1.0-1", "2.0-1"), Ordering::Greater);
        assert_eq!(VersionOrder::Rpm.compare("0:1.0-1", "1.0-1"), Ordering::Equal);
        assert_eq!(VersionOrder::Rpm.compare("1.0-2", "1.0-10"), Ordering::Less);
    }

    #[test]
    fn installed_packages_of_rpms_answer() {
        let text = "bash\tx86_64\t(none)\t5.2.26\t3.fc41\n\
                    kernel-core\tx86_64\t(none)\t6.11.4\t301.fc41\n\
                    kernel-core\tx86_64\t(none)\t6.10.9\t200.fc40\n\
                    shadow-utils\tx86_64\t2\t4.15.1\t12.fc41\n\
                    gpg-pubkey\t(none)\t(none)\te99d6ad1\t64d2612c\n";
        let installed = parse_rpm_query(text).unwrap();
        let keys: Vec<String> = installed.iter().map(|((n, a), v)| format!("{n}.{a}={}", v.join(","))).collect();
        assert_eq!(
            keys,
            [
                "bash.x86_64=5.2.26-3.fc41",
                "gpg-pubkey.(none)=e99d6ad1-64d2612c",
                "kernel-core.x86_64=6.10.9-200.fc40,6.11.4-301.fc41",
                "shadow-utils.x86_64=2:4.15.1-12.fc41",
            ]
        );
        assert_eq!(count(&installed), 5);
        assert!(parse_rpm_query("").unwrap().is_empty());
        let table: &[(&str, usize, &str)] = &[
            ("a\tnoarch\t(none)\t1\t1\nb\tnoarch\t1\n", 2, "3 fields"),
            ("a\tnoarch\t(none)\t1\t1\tx\n", 1, "6 fields"),
            ("a b\tnoarch\t(none)\t1\t1\n", 1, "white space"),
            ("a\tnoarch\t\t1\t1\n", 1, "empty"),
            ("a\tnoarch\tone\t1\t1\n", 1, "not a number"),
            ("a\tnoarch\t-1\t1\t1\n", 1, "not a number"),
            ("a\tnoarch\t(none)\t1:2\t1\n", 1, "holds ':'"),
            ("a\tnoarch\t(none)\t1\t1-2\n", 1, "holds ':' or '-'"),
            ("a\tnoarch\t(none)\t(none)\t1\n", 1, "unset"),
            ("(none)\tnoarch\t(none)\t1\t1\n", 1, "without a name"),
        ];
        for (text, line, reason) in table {
            let e = parse_rpm_query(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn rpm_packages_differ_by_rpms_order() {
        let query = |lines: &[&str]| parse_rpm_query(&(lines.join("\n") + "\n")).unwrap();
        let from = query(&[
            "bash\tx86_64\t(none)\t5.2.26\t1.fc41",
            "gone\tnoarch\t(none)\t1.0\t1",
            "kernel-core\tx86_64\t(none)\t6.10.9\t200.fc40",
            "kernel-core\tx86_64\t(none)\t6.11.4\t301.fc41",
            "shadow-utils\tx86_64\t2\t4.15.1\t1",
            "tool\tnoarch\t(none)\t2.0\t1",
            "same\tnoarch\t0\t1.0\t1",
        ]);
        let to = query(&[
            "bash\tx86_64\t(none)\t5.2.26\t10.fc41",
            "kernel-core\tx86_64\t(none)\t6.11.4\t301.fc41",
            "kernel-core\tx86_64\t(none)\t6.12.1\t100.fc41",
            "kernel-core\tx86_64\t(none)\t6.12.2\t100.fc41",
            "new\tnoarch\t(none)\t0.1\t1",
            // The epoch wins over a higher version.
            "shadow-utils\tx86_64\t(none)\t9.0\t1",
            // A pre-release sorts before the release.
            "tool\tnoarch\t(none)\t2.0~rc1\t1",
            "same\tnoarch\t(none)\t1.0\t1",
        ]);
        assert_eq!(
            shown(&diff(&from, &to, VersionOrder::Rpm)),
            [
                "upgraded bash:x86_64 Some(\"5.2.26-1.fc41\")->Some(\"5.2.26-10.fc41\")",
                "removed gone:noarch Some(\"1.0-1\")->None",
                "removed kernel-core:x86_64 Some(\"6.10.9-200.fc40\")->None",
                "added kernel-core:x86_64 None->Some(\"6.12.1-100.fc41\")",
                "added kernel-core:x86_64 None->Some(\"6.12.2-100.fc41\")",
                "added new:noarch None->Some(\"0.1-1\")",
                "downgraded shadow-utils:x86_64 Some(\"2:4.15.1-1\")->Some(\"9.0-1\")",
                "downgraded tool:noarch Some(\"2.0-1\")->Some(\"2.0~rc1-1\")",
            ]
        );
        assert!(diff(&from, &from, VersionOrder::Rpm).is_empty());
    }
}
