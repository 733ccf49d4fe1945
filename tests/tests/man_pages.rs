//! `make install` puts man pages and shell completions where man and the
//! shells look, and every page renders: hostctl(1) and one page per verb
//! generated from the command line definition, the hand-written hostd(8),
//! hostd.toml(5) and org.hostd.Host1(5); every `man:` page the installed
//! units name is among them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use hostd_tests::{binary, repo_root};

/// `make install DESTDIR=<dest>` of the binaries of this test build.
fn make_install(dest: &Path) {
    let bin = binary("hostctl");
    let out = Command::new("make")
        .current_dir(repo_root())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("RELEASE={}", bin.parent().unwrap().display()))
        // Not the jobserver of a `make test` this runs under.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The page rendered by `man -l`, with what man and groff warned about.
fn render(page: &Path) -> (String, String) {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {}: {}", page.display(), String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn make_install_installs_man_pages_that_render_and_completions_that_load() {
    let dest = tempfile::tempdir().unwrap();
    make_install(dest.path());
    let man = dest.path().join("usr/share/man");

    // One page per verb of `hostctl --help`, and the hand-written ones.
    let help = Command::new(binary("hostctl")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let verbs: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .collect();
    assert!(verbs.contains(&"status") && verbs.contains(&"watch"), "{help}");
    let mut pages: Vec<(String, &str)> = verbs.iter().map(|v| (format!("man1/hostctl-{v}.1"), "hostctl")).collect();
    pages.push(("man1/hostctl.1".into(), "hostctl"));
    pages.push(("man8/hostd.8".into(), "hostd"));
    pages.push(("man5/hostd.toml.5".into(), "hostd.toml"));
    pages.push(("man5/org.hostd.Host1.5".into(), "org.hostd.Host1"));
    for (page, name) in &pages {
        let path = man.join(page);
        assert!(path.exists(), "{page} is installed");
        let (text, warnings) = render(&path);
        assert_eq!(warnings, "", "{page} renders without warnings");
        assert!(text.contains("NAME") && text.contains(name), "{page}:\n{text}");
    }
    let (status, _) = render(&man.join("man1/hostctl-status.1"));
    for option in ["--format", "humanreadable", "--format-version", "--booted"] {
        assert!(status.contains(option), "hostctl-status(1) documents {option}:\n{status}");
    }
    let (upgrade, _) = render(&man.join("man1/hostctl-upgrade.1"));
    assert!(upgrade.contains("--exit-code"), "{upgrade}");
    let (api, _) = render(&man.join("man5/org.hostd.Host1.5"));
    assert!(api.contains("/usr/share/dbus-1/interfaces/org.hostd.Host1.xml"), "the brief points to the XML:\n{api}");

    // Every man: page the installed units name is installed.
    let units = dest.path().join("usr/lib/systemd/system");
    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines().filter(|l| l.starts_with("Documentation=")) {
            for doc in line["Documentation=".len()..].split_whitespace().filter_map(|d| d.strip_prefix("man:")) {
                named.insert(doc.to_string());
            }
        }
    }
    assert!(named.contains("hostctl(1)"), "{named:?}");
    for doc in &named {
        let (name, section) = doc.trim_end_matches(')').split_once('(').unwrap();
        assert!(man.join(format!("man{section}/{name}.{section}")).exists(), "{doc} named by a unit is installed");
    }

    // The completions load in their shells and offer the verbs and formats.
    let bash = dest.path().join("usr/share/bash-completion/completions/hostctl");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(hostctl status --format ''); COMP_CWORD=3; COMP_LINE='hostctl status --format '; COMP_POINT=${{#COMP_LINE}}; _hostctl hostctl '' --format; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(offered.contains("humanreadable") && offered.contains("yaml"), "{offered}{}", String::from_utf8_lossy(&out.stderr));
    let zsh = std::fs::read_to_string(dest.path().join("usr/share/zsh/vendor-completions/_hostctl")).unwrap();
    assert!(zsh.starts_with("#compdef hostctl") && zsh.contains("watch"), "{zsh}");
    let fish = std::fs::read_to_string(dest.path().join("usr/share/fish/vendor_completions.d/hostctl.fish")).unwrap();
    assert!(fish.contains("complete -c hostctl") && fish.contains("exit-code"), "{fish}");
}
