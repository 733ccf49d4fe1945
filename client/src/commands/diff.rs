//! `hostctl diff`.

use std::collections::HashMap;
use std::io::{self, Write};

use hostd_interface::diff::{Diff, DiffSide, PackageChangeKind, PackageDatabase};
use hostd_interface::Error;

use super::{options, Caller};
use crate::cli::DiffArgs;
use crate::exit::Code;

/// Ask hostd for the comparison and print it as text or JSON.
pub async fn run(call: &Caller<'_>, args: &DiffArgs) -> Result<Code, Error> {
    let from = args.from.as_deref().unwrap_or_default();
    let to = args.to.as_deref().unwrap_or_default();
    let json: String = call.call("Diff", &(from, to, options(&[]))).await?;
    let diff: Diff = serde_json::from_str(&json)
        .map_err(|e| Error::Failed(format!("hostd sent a comparison this client cannot read: {e}")))?;
    crate::output::print_document(args.json, &diff, render);
    Ok(Code::Success)
}

/// The two sides, then one line per changed package (as `rpm-ostree db
/// diff` groups them), the kernel and the kernel arguments.
pub fn render(out: &mut impl Write, diff: &Diff) -> io::Result<()> {
    writeln!(out, "From: {}", side(&diff.from))?;
    writeln!(out, "To:   {}", side(&diff.to))?;
    let urls: HashMap<&str, &str> = [("Source", "org.opencontainers.image.source"), ("URL", "org.opencontainers.image.url")]
        .into_iter()
        .filter_map(|(what, key)| diff.to.labels.get(key).map(|v| (what, v.as_str())))
        .collect();
    for what in ["URL", "Source"] {
        if let Some(url) = urls.get(what) {
            writeln!(out, "      {what}: {}", one_line(url))?;
        }
    }
    match &diff.packages {
        None => {
            let why = [&diff.from, &diff.to]
                .iter()
                .find(|s| s.packages.is_none())
                .map(|s| match s.package_database {
                    PackageDatabase::Rpm => {
                        format!("{} has an rpm database older than rpm 4.16's sqlite one, which hostd does not read", s.target)
                    }
                    _ => format!("{} has no package database hostd knows", s.target),
                })
                .unwrap_or_else(|| {
                    format!(
                        "{} has {}'s package database, {} has {}'s",
                        diff.from.target, diff.from.package_database, diff.to.target, diff.to.package_database
                    )
                });
            writeln!(out, "Packages: not compared ({why})")?;
        }
        Some(changes) if changes.is_empty() => writeln!(out, "Packages: no changes")?,
        Some(changes) => {
            let groups = [
                (PackageChangeKind::Upgraded, "Upgraded", '↑'),
                (PackageChangeKind::Downgraded, "Downgraded", '↓'),
                (PackageChangeKind::Removed, "Removed", '-'),
                (PackageChangeKind::Added, "Added", '+'),
            ];
            for (kind, title, mark) in groups {
                let of_kind: Vec<_> = changes.iter().filter(|c| c.kind == kind).collect();
                if of_kind.is_empty() {
                    continue;
                }
                writeln!(out, "{title}:")?;
                for c in of_kind {
                    let name = if c.architecture == "all" || same_arch_only(changes, &c.name) {
                        c.name.clone()
                    } else {
                        format!("{}:{}", c.name, c.architecture)
                    };
                    match (&c.from, &c.to) {
                        (Some(a), Some(b)) => writeln!(out, "  {mark} {name} {a} -> {b}")?,
                        (Some(v), None) | (None, Some(v)) => writeln!(out, "  {mark} {name} {v}")?,
                        (None, None) => writeln!(out, "  {mark} {name}")?,
                    }
                }
            }
        }
    }
    if diff.kernel_changed {
        let k = |s: &DiffSide| s.kernel.clone().unwrap_or_else(|| "(none)".into());
        writeln!(out, "Kernel: {} -> {}", k(&diff.from), k(&diff.to))?;
    }
    for a in &diff.kargs.removed {
        writeln!(out, "Kernel argument removed: {a}")?;
    }
    for a in &diff.kargs.added {
        writeln!(out, "Kernel argument added: {a}")?;
    }
    Ok(())
}

/// Whether `name` appears with one architecture only among the changes
/// (then the architecture is left out, as dpkg -l does for native ones).
fn same_arch_only(changes: &[hostd_interface::diff::PackageChange], name: &str) -> bool {
    changes.iter().filter(|c| c.name == name).count() == 1
}

/// A side as one line: what it is, the image and version, the commit.
fn side(s: &DiffSide) -> String {
    let what = match &s.deployment {
        Some(d) => format!("{} ({d})", s.target),
        None => format!("{} (downloaded update, commit {})", s.target, s.commit),
    };
    let title = s.labels.get("org.opencontainers.image.title").map(|t| format!(" \"{}\"", one_line(t))).unwrap_or_default();
    let version = s.version.as_deref().map(|v| format!(" version {}", one_line(v))).unwrap_or_default();
    match &s.image {
        Some(image) => format!("{what}: {}{title}{version}", one_line(image)),
        None => what,
    }
}

/// A label value on one line: line breaks and other control characters
/// become spaces, so an image cannot forge output lines.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use hostd_interface::diff::{KargsChange, PackageChange};

    use super::*;

    fn side(target: &str, database: PackageDatabase) -> DiffSide {
        DiffSide {
            target: target.into(),
            deployment: Some(format!("{target}c.0")),
            commit: format!("{target}c"),
            image: Some("quay.io/os:latest".into()),
            digest: None,
            version: Some("2".into()),
            labels: [("org.opencontainers.image.url".to_string(), "https://example.org/\nforged".to_string())].into(),
            kernel: Some("6.1.0".into()),
            kargs: vec![],
            package_database: database,
            packages: None,
        }
    }

    fn change(name: &str, arch: &str, kind: PackageChangeKind, from: Option<&str>, to: Option<&str>) -> PackageChange {
        PackageChange { name: name.into(), architecture: arch.into(), kind, from: from.map(Into::into), to: to.map(Into::into) }
    }

    #[test]
    fn packages_are_grouped_as_rpm_ostree_groups_them() {
        use PackageChangeKind::*;
        let mut diff = Diff {
            from: side("booted", PackageDatabase::Dpkg),
            to: side("staged", PackageDatabase::Dpkg),
            packages: Some(vec![
                change("bash", "amd64", Upgraded, Some("5.2-1"), Some("5.2-2")),
                change("curl", "amd64", Downgraded, Some("7.88-2"), Some("7.88-1")),
                change("hello", "amd64", Added, None, Some("2.10-3")),
                change("libc6", "amd64", Upgraded, Some("2.36-9"), Some("2.36-10")),
                change("libc6", "i386", Removed, Some("2.36-9"), None),
            ]),
            kernel_changed: true,
            kargs: KargsChange { removed: vec!["a=1".into()], added: vec!["a=2".into()] },
        };
        diff.to.kernel = Some("6.2.0".into());
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: booted (bootedc.0): quay.io/os:latest version 2\n\
             To:   staged (stagedc.0): quay.io/os:latest version 2\n      URL: https://example.org/ forged\n\
             Upgraded:\n  ↑ bash 5.2-1 -> 5.2-2\n  ↑ libc6:amd64 2.36-9 -> 2.36-10\n\
             Downgraded:\n  ↓ curl 7.88-2 -> 7.88-1\n\
             Removed:\n  - libc6:i386 2.36-9\n\
             Added:\n  + hello 2.10-3\n\
             Kernel: 6.1.0 -> 6.2.0\nKernel argument removed: a=1\nKernel argument added: a=2\n"
        );
    }

    #[test]
    fn no_changes_and_uncompared_packages_are_said() {
        let mut diff = Diff {
            from: side("booted", PackageDatabase::Dpkg),
            to: side("staged", PackageDatabase::Dpkg),
            packages: Some(vec![]),
            kernel_changed: false,
            kargs: KargsChange::default(),
        };
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("Packages: no changes\n"));
        // rpm's sqlite database is compared as dpkg's is.
        diff.to.package_database = PackageDatabase::Rpm;
        diff.from.package_database = PackageDatabase::Rpm;
        diff.from.packages = Some(3);
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("Packages: no changes\n"));
        // An older rpm database is not read.
        diff.packages = None;
        diff.to.packages = None;
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Packages: not compared (staged has an rpm database older than rpm 4.16's sqlite one, which hostd does not read)"),
            "{text}"
        );
        // Both read, but of different kinds.
        diff.from.package_database = PackageDatabase::Dpkg;
        diff.to.packages = Some(3);
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Packages: not compared (booted has dpkg's package database, staged has rpm's)"), "{text}");
    }
}
