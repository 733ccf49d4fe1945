//! `make install DESTDIR=…` as an image build runs it (docs/install.md):
//! what it installs, that `systemctl preset` enables what the preset says,
//! that the documentation the units point to is there, that bootc's timer
//! keeps fetching, staging and rebooting, and that the README's install
//! table lists every file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hostd_tests::{binary, repo_root, run};

/// `make install DESTDIR=<dest>` of this build's binaries.
fn make_install(dest: &Path) {
    let bin = binary("hostctl").parent().expect("a target directory").to_path_buf();
    run(Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(repo_root())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("RELEASE={}", bin.display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL"))
    .unwrap();
}

/// Every file and symlink under `root`, as absolute paths inside it.
fn files(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            } else {
                found.insert(format!("/{}", path.strip_prefix(root).unwrap().display()));
            }
        }
    }
    found
}

fn read(dest: &Path, path: &str) -> String {
    let full = dest.join(path.trim_start_matches('/'));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{} is not installed: {e}", full.display()))
}

/// The `installed as` column of the README's install table: paths, a
/// directory (ending in `/`) standing for everything below it.
fn readme_install_table() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let table = readme.split("\n## Install\n").nth(1).expect("README has an Install section");
    let table = &table[..table.find("\n## ").unwrap_or(table.len())];
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(2))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>())
        .filter(|p| p.starts_with('/'))
        .collect()
}

#[test]
fn an_image_build_gets_presets_docs_and_the_bootc_drop_in_and_the_readme_lists_every_file() {
    let dest = tempfile::tempdir().unwrap();
    make_install(dest.path());
    let installed = files(dest.path());

    // The preset enables the timer, the steady-state unit and the boot
    // health checks, and only them; `systemctl preset-all` (an image
    // build's) does exactly that.
    let preset = read(dest.path(), "/usr/lib/systemd/system-preset/80-hostd.preset");
    let enabled: BTreeSet<&str> =
        preset.lines().filter_map(|l| l.strip_prefix("enable ")).map(str::trim).collect();
    assert_eq!(
        enabled,
        BTreeSet::from(["hostd-fetch-apply-updates.timer", "hostd-steady-state.service", "hostd-health-check.service"])
    );
    run(Command::new("systemctl").arg(format!("--root={}", dest.path().display())).arg("preset-all")).unwrap();
    let links: BTreeSet<String> =
        files(dest.path()).into_iter().filter(|p| p.starts_with("/etc/systemd/system/")).collect();
    assert_eq!(
        links,
        BTreeSet::from([
            "/etc/systemd/system/boot-complete.target.requires/hostd-health-check.service".to_string(),
            "/etc/systemd/system/multi-user.target.wants/hostd-health-check.service".to_string(),
            "/etc/systemd/system/multi-user.target.wants/hostd-steady-state.service".to_string(),
            "/etc/systemd/system/timers.target.wants/hostd-fetch-apply-updates.timer".to_string(),
        ])
    );

    // The image's own configuration goes to the vendor drop-in directory.
    assert!(dest.path().join("usr/lib/hostd/hostd.d").is_dir());

    // bootc's timer keeps bootc's meaning (fetch, stage, reboot) through
    // hostd, whatever [updates] policy says.
    let drop_in = read(dest.path(), "/usr/lib/systemd/system/bootc-fetch-apply-updates.service.d/50-hostd.conf");
    let exec: Vec<&str> = drop_in.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    assert_eq!(exec, ["ExecStart=", "ExecStart=/usr/bin/hostctl upgrade --apply --quiet"]);

    // What the units' Documentation= points to in the file system is there,
    // and so is every page the installed README links to.
    for unit in installed.iter().filter(|p| p.starts_with("/usr/lib/systemd/system/hostd")) {
        for doc in read(dest.path(), unit).lines().filter_map(|l| l.strip_prefix("Documentation=")) {
            for url in doc.split_whitespace().filter_map(|u| u.strip_prefix("file://")) {
                assert!(dest.path().join(url.trim_start_matches('/')).exists(), "{unit} points to {url}, not installed");
            }
        }
    }
    let doc_dir = PathBuf::from("usr/share/doc/hostd");
    let readme = read(dest.path(), "/usr/share/doc/hostd/README.md");
    for link in readme.split("](").skip(1).filter_map(|l| l.split([')', '#']).next()) {
        if !link.contains("://") && !link.is_empty() {
            assert!(dest.path().join(&doc_dir).join(link).exists(), "README.md links to {link}, not installed");
        }
    }
    assert!(installed.contains("/usr/share/doc/hostd/docs/install.md"));

    // The README's table names every installed file.
    let table = readme_install_table();
    let unlisted: Vec<&String> = installed
        .iter()
        .filter(|f| !table.iter().any(|t| t == *f || (t.ends_with('/') && f.starts_with(t.as_str()))))
        .collect();
    assert!(unlisted.is_empty(), "installed but not in the README's install table: {unlisted:?}\ntable: {table:?}");
}
