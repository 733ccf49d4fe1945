//! What `Diff` compares and what it returns: two deployments (or a
//! deployment and the downloaded update) side by side, with the packages
//! added, removed, upgraded and downgraded between them, the kernel
//! version and the kernel arguments, as `rpm-ostree db diff` shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

/// Longest `from`/`to` argument accepted: every valid one is short.
pub const MAX_TARGET_LEN: usize = 16;

/// One side of `Diff`, as the `from` and `to` arguments name it.
///
/// Accepted spellings, exactly (no white space, lower case):
/// - `booted` — the booted deployment; on an offline sysroot the default
///   one (the one updates build on), as `EtcDiff` takes it;
/// - `staged` — the deployment queued for the next boot (booted hosts);
/// - `rollback` — the rollback deployment (booted hosts);
/// - `cached` — the update fetched but not deployed (`download-only`): a
///   download-only staged deployment, or on an offline sysroot the pulled
///   image of the tracked reference;
/// - a decimal index into `Deployments` (`0`, `1`, …; no sign, no leading
///   zero);
/// - the empty string — the default: `booted` for `from`; for `to` the
///   staged deployment, else the downloaded update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffTarget {
    /// `booted`
    Booted,
    /// `staged`
    Staged,
    /// `rollback`
    Rollback,
    /// `cached`
    Cached,
    /// An index into `Deployments` (boot order).
    Index(u32),
}

/// A `from`/`to` argument that is none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTarget(pub String);

impl std::fmt::Display for InvalidTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.0.chars().take(MAX_TARGET_LEN).flat_map(char::escape_debug).collect();
        let cut = if self.0.chars().count() > MAX_TARGET_LEN { "…" } else { "" };
        write!(
            f,
            "\"{shown}{cut}\" names no deployment: use booted, staged, rollback, cached, \
             or an index into Deployments (0 boots next)"
        )
    }
}

impl DiffTarget {
    /// Parse one argument; `Ok(None)` for the empty string (the default).
    pub fn parse(text: &str) -> Result<Option<DiffTarget>, InvalidTarget> {
        let target = match text {
            "" => return Ok(None),
            "booted" => DiffTarget::Booted,
            "staged" => DiffTarget::Staged,
            "rollback" => DiffTarget::Rollback,
            "cached" => DiffTarget::Cached,
            digits
                if digits.len() <= 4
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && (digits == "0" || !digits.starts_with('0')) =>
            {
                DiffTarget::Index(digits.parse().map_err(|_| InvalidTarget(text.to_string()))?)
            }
            _ => return Err(InvalidTarget(text.to_string())),
        };
        Ok(Some(target))
    }
}

impl std::fmt::Display for DiffTarget {
    /// The spelling `parse` accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiffTarget::Booted => f.write_str("booted"),
            DiffTarget::Staged => f.write_str("staged"),
            DiffTarget::Rollback => f.write_str("rollback"),
            DiffTarget::Cached => f.write_str("cached"),
            DiffTarget::Index(i) => write!(f, "{i}"),
        }
    }
}

wire_enum! {
    /// Which package database a tree has.
    pub enum PackageDatabase {
        /// dpkg's status file (Debian and derivatives).
        Dpkg = "dpkg",
        /// An rpm database (Fedora and derivatives): rpm ≥ 4.16's sqlite one
        /// is read, an older one is not (its `packages` is `null`).
        Rpm = "rpm",
        /// None found.
        None = "none",
    }
}

wire_enum! {
    /// How a package differs between the two sides.
    pub enum PackageChangeKind {
        /// Only in `to`.
        Added = "added",
        /// Only in `from`.
        Removed = "removed",
        /// A higher version in `to`, by the package system's rules.
        Upgraded = "upgraded",
        /// A lower version in `to`.
        Downgraded = "downgraded",
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffSide {
    /// The argument as resolved: `booted`, `staged`, `rollback`, `cached`
    /// or an index.
    pub target: String,
    /// The deployment, `<checksum>.<serial>`; `None` for a downloaded
    /// update that is not deployed.
    pub deployment: Option<String>,
    /// The ostree commit read.
    pub commit: String,
    /// The image reference, when the tree came from an image.
    pub image: Option<String>,
    /// The image's manifest digest.
    pub digest: Option<String>,
    /// The image's version (docs/dbus-api.md, "Image metadata").
    pub version: Option<String>,
    /// The image's description labels (`org.opencontainers.image.title`,
    /// `description`, `url`, `source`, `revision`, `version`) that have a
    /// usable value, by their full names.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The kernel version (`/usr/lib/modules/<version>/vmlinuz`), `None`
    /// when the tree has no kernel.
    pub kernel: Option<String>,
    /// The kernel arguments the deployment boots with (without the
    /// per-deployment `ostree=`); for a downloaded update, those it would
    /// get when deployed now.
    pub kargs: Vec<String>,
    /// The package database found in the tree.
    pub package_database: PackageDatabase,
    /// Number of installed packages; `None` when not read.
    pub packages: Option<u32>,
}

/// One package that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageChange {
    /// The package name.
    pub name: String,
    /// Its architecture (`amd64`, `all`, …); packages of several
    /// architectures (multi-arch) are compared per architecture.
    pub architecture: String,
    /// Added, removed, upgraded or downgraded.
    pub kind: PackageChangeKind,
    /// The version in `from`; `None` when added.
    pub from: Option<String>,
    /// The version in `to`; `None` when removed.
    pub to: Option<String>,
}

/// What the kernel arguments change: multisets, compared by the kernel's
/// rules (`a-b=1` is `a_b=1`; quotes group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KargsChange {
    /// Only in `from`.
    pub removed: Vec<String>,
    /// Only in `to`.
    pub added: Vec<String>,
}

/// The answer of `Diff`, as its JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// The first side.
    pub from: DiffSide,
    /// The second side.
    pub to: DiffSide,
    /// Packages that differ, sorted by name and architecture; `None` when
    /// not compared (a side has no dpkg database: see `packageDatabase`).
    pub packages: Option<Vec<PackageChange>>,
    /// Whether the kernel version differs.
    pub kernel_changed: bool,
    /// Kernel arguments removed and added.
    pub kargs: KargsChange,
}

impl Diff {
    /// Whether nothing the answer covers differs.
    pub fn is_empty(&self) -> bool {
        self.packages.as_ref().is_none_or(Vec::is_empty)
            && !self.kernel_changed
            && self.kargs.added.is_empty()
            && self.kargs.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_strictly() {
        let ok = [
            ("", None),
            ("booted", Some(DiffTarget::Booted)),
            ("staged", Some(DiffTarget::Staged)),
            ("rollback", Some(DiffTarget::Rollback)),
            ("cached", Some(DiffTarget::Cached)),
            ("0", Some(DiffTarget::Index(0))),
            ("12", Some(DiffTarget::Index(12))),
        ];
        for (text, want) in ok {
            assert_eq!(DiffTarget::parse(text), Ok(want), "{text:?}");
            if let Some(t) = want {
                assert_eq!(t.to_string(), text);
            }
        }
        for bad in ["Booted", " booted", "booted ", "-1", "+1", "01", "1.0", "99999", "0x1", "staged\n", "pending", "١"] {
            let e = DiffTarget::parse(bad).unwrap_err();
            assert!(e.to_string().contains("names no deployment"), "{bad:?}: {e}");
        }
        let long = "x".repeat(5000);
        let shown = DiffTarget::parse(&long).unwrap_err().to_string();
        assert!(shown.len() < 200, "a long argument is cut in the message: {shown}");
    }

    #[test]
    fn the_answer_serializes_with_camel_case_names() {
        let side = DiffSide {
            target: "booted".into(),
            deployment: Some("abc.0".into()),
            commit: "abc".into(),
            image: None,
            digest: None,
            version: None,
            labels: BTreeMap::new(),
            kernel: Some("6.1.0".into()),
            kargs: vec!["rw".into()],
            package_database: PackageDatabase::Dpkg,
            packages: Some(1),
        };
        let diff = Diff {
            from: side.clone(),
            to: side,
            packages: Some(vec![PackageChange {
                name: "netbase".into(),
                architecture: "all".into(),
                kind: PackageChangeKind::Added,
                from: None,
                to: Some("6.4".into()),
            }]),
            kernel_changed: false,
            kargs: KargsChange::default(),
        };
        let v = serde_json::to_value(&diff).unwrap();
        assert_eq!(v["from"]["packageDatabase"], "dpkg");
        assert_eq!(v["packages"][0]["kind"], "added");
        assert_eq!(v["kernelChanged"], false);
        assert!(!diff.is_empty());
        assert_eq!(serde_json::from_value::<Diff>(v).unwrap(), diff);
    }
}
