//! What a bootloader would boot: the Boot Loader Specification entries
//! libostree writes under `<sysroot>/boot/loader/entries`.
//!
//! libostree (2022.7) numbers them `version = <deployments> - <index>` and
//! sorts them by `version` with `strverscmp()`, highest first: the highest
//! is the default deployment. Its `ostree=` kernel argument names
//! `/ostree/boot.N/<stateroot>/<bootcsum>/<serial>`, a chain of links that
//! ends at the deployment directory.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file it was read from.
    pub file: PathBuf,
    /// The `version` key.
    pub version: String,
    /// The `options` key: the kernel command line.
    pub options: String,
}

impl Entry {
    /// Parse the text of an entry file.
    pub fn parse(file: PathBuf, text: &str) -> Entry {
        let key = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(char::is_whitespace)))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Entry { version: key("version"), options: key("options"), file }
    }

    /// The value of kernel argument `name` (`name=value`), if present.
    pub fn karg(&self, name: &str) -> Option<&str> {
        self.options.split_whitespace().find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    }

    /// The deployment directory under `sysroot` this entry boots.
    pub fn deployment(&self, sysroot: &Path) -> Result<PathBuf> {
        let ostree = self.karg("ostree").with_context(|| format!("{} has no ostree= argument", self.file.display()))?;
        let link = sysroot.join(ostree.trim_start_matches('/'));
        std::fs::canonicalize(&link).with_context(|| format!("resolving {}", link.display()))
    }
}

/// Every entry under `<sysroot>/boot/loader/entries`, by file name.
pub fn entries(sysroot: &Path) -> Result<Vec<Entry>> {
    let dir = sysroot.join("boot/loader/entries");
    let mut found = Vec::new();
    for item in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "conf") {
            let text = std::fs::read_to_string(&path)?;
            found.push(Entry::parse(path, &text));
        }
    }
    found.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(found)
}

/// The entry a bootloader boots by default: the highest `version`.
pub fn default_entry(sysroot: &Path) -> Result<Entry> {
    entries(sysroot)?
        .into_iter()
        .max_by(|a, b| version_cmp(&a.version, &b.version))
        .with_context(|| format!("no boot entries under {}", sysroot.join("boot/loader/entries").display()))
}

/// `strverscmp()` order for the versions libostree writes: runs of digits
/// compare as numbers, everything else byte by byte.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let by_number = na.len().cmp(&nb.len()).then(na.cmp(nb));
                if by_number != Ordering::Equal {
                    return by_number;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

/// The leading digits (without leading zeros) and the rest.
fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
    let digits = &s[..end];
    let significant = digits.iter().position(|&c| c != b'0').unwrap_or(digits.len());
    (&digits[significant..], &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(version_cmp("10", "9"), Ordering::Greater);
        assert_eq!(version_cmp("2", "2"), Ordering::Equal);
        assert_eq!(version_cmp("1", "2"), Ordering::Less);
        assert_eq!(version_cmp("1.10", "1.9"), Ordering::Greater);
    }

    #[test]
    fn an_entry_gives_its_version_and_kernel_arguments() {
        let text = "title Debian (ostree:default:0)\nversion 2\n\
                    options rw console=ttyS0 ostree=/ostree/boot.1/default/abc/0 testos.release=v2\n\
                    linux /ostree/x/vmlinuz\n";
        let e = Entry::parse(PathBuf::from("ostree-2-default.conf"), text);
        assert_eq!(e.version, "2");
        assert_eq!(e.karg("ostree"), Some("/ostree/boot.1/default/abc/0"));
        assert_eq!(e.karg("testos.release"), Some("v2"));
        assert_eq!(e.karg("console"), Some("ttyS0"));
        assert_eq!(e.karg("rw"), None);
    }
}
