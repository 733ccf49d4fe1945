//! Kernel arguments shipped by images in `/usr/lib/bootc/kargs.d/*.toml`
//! (`kargs = [...]`, optional `match-architectures = [...]`), applied the way
//! bootc applies them: the difference between the old image's set and the
//! new image's set is applied to the boot entry the new deployment inherits
//! (the merge deployment's). What the old image added and the new one does
//! not is removed, what the new one adds is appended, and every argument the
//! admin set or removed locally stays as the admin has it.
//!
//! Command lines are split and compared by the kernel's rules
//! (`linux-kernel-cmdline`): double quotes group (`dyndbg="file foo.c +p"`
//! is one argument), `"a=b c"` and `a="b c"` are the same argument, and so
//! are `a-b=1` and `a_b=1`; repeated keys are kept, in order.

use anyhow::{Context, Result};
use linux_kernel_cmdline::utf8::{Cmdline, Parameter};
use ostree_ext::gio::prelude::*;
use ostree_ext::{gio, ostree};
use serde::Deserialize;

/// Where an image keeps its kernel arguments.
pub const KARGS_DIR: &str = "usr/lib/bootc/kargs.d";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct KargsFile {
    kargs: Vec<String>,
    match_architectures: Option<Vec<String>>,
}

/// A kargs.d file that cannot be used: the image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/{KARGS_DIR}/{file} is malformed: {reason}")]
pub struct Malformed {
    /// The file name within the kargs.d directory.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Kernel arguments in command-line order, each as written
/// (`dyndbg="file foo.c +p"` keeps its quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kargs(Vec<String>);

impl Kargs {
    /// Split a command line (a BLS entry's `options`) as the kernel does.
    pub fn parse(line: &str) -> Kargs {
        Kargs(Cmdline::from(line).iter_str().map(str::to_string).collect())
    }

    /// The arguments, in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The arguments, in order.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl From<Vec<String>> for Kargs {
    /// Arguments already split, each as written.
    fn from(args: Vec<String>) -> Kargs {
        Kargs(args)
    }
}

impl std::fmt::Display for Kargs {
    /// The command line: the arguments separated by single spaces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// Whether two arguments mean the same to the kernel.
fn same(a: &str, b: &str) -> bool {
    Parameter::parse(a) == Parameter::parse(b)
}

/// What the new image changes in the kernel arguments: the old image's
/// arguments it no longer has, and its own the old image did not have.
/// Repeated arguments count as often as they occur.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// In the old image's set only.
    pub removed: Vec<String>,
    /// In the new image's set only.
    pub added: Vec<String>,
}

impl Delta {
    /// The delta from the `old` image's set to the `new` image's set.
    pub fn between(old: &Kargs, new: &Kargs) -> Delta {
        Delta { removed: minus(old.as_slice(), new.as_slice()), added: minus(new.as_slice(), old.as_slice()) }
    }

    /// Whether the two sets were the same.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }

    /// `entry` with the delta applied: for each removed argument its last
    /// occurrence goes (none, if the admin removed it already), then the
    /// added arguments are appended in the new image's order.
    pub fn apply(&self, entry: &Kargs) -> Kargs {
        let mut out = entry.0.clone();
        for gone in &self.removed {
            if let Some(i) = out.iter().rposition(|k| same(k, gone)) {
                out.remove(i);
            }
        }
        out.extend(self.added.iter().cloned());
        Kargs(out)
    }
}

/// `a` without one occurrence of each element of `b` (multiset difference).
fn minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut unmatched: Vec<&String> = b.iter().collect();
    let mut out = Vec::new();
    for k in a {
        match unmatched.iter().position(|u| same(u, k)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => out.push(k.clone()),
        }
    }
    out
}

/// The names `match-architectures` may give the host's architecture: the
/// kernel's (`uname -m`, what bootc images use: `x86_64`, `aarch64`,
/// `ppc64le`, `s390x`) and Rust's (`std::env::consts::ARCH`).
pub fn host_architectures() -> Vec<&'static str> {
    architectures(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

fn architectures(rust: &'static str, little_endian: bool) -> Vec<&'static str> {
    let kernel: &[&'static str] = match (rust, little_endian) {
        ("powerpc64", true) => &["ppc64le"],
        ("powerpc64", false) => &["ppc64"],
        ("powerpc", _) => &["ppc"],
        ("x86", _) => &["i686", "i386"],
        ("arm", _) => &["armv7l"],
        _ => &[],
    };
    let mut names = vec![rust];
    names.extend(kernel);
    names
}

/// The arguments of one file for a host whose architecture has the names
/// `arch`. A `kargs` entry may hold several arguments (`"a=1 b=2"`); one
/// whose double quotes do not pair up would swallow the arguments after it
/// on the real command line, so it makes the file malformed.
pub fn parse_file(text: &str, arch: &[&str]) -> Result<Kargs, String> {
    let f: KargsFile = toml::from_str(text).map_err(|e| toml_reason(text, &e))?;
    for k in &f.kargs {
        if k.matches('"').count() % 2 != 0 {
            return Err(format!("the argument {k:?} has an unpaired double quote"));
        }
    }
    let applies = f.match_architectures.is_none_or(|archs| archs.iter().any(|a| arch.contains(&a.as_str())));
    if !applies {
        return Ok(Kargs::default());
    }
    Ok(Kargs(f.kargs.iter().flat_map(|k| Kargs::parse(k).0).collect()))
}

/// A TOML error on one line (it ends up in a D-Bus error message): where
/// it is and what is wrong.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The arguments of all `files` (name, content; content `None` when it is
/// not UTF-8) in file name order, and the files that are malformed.
pub fn parse_files(files: &[(String, Option<String>)], arch: &[&str]) -> (Kargs, Vec<Malformed>) {
    let mut sorted: Vec<&(String, Option<String>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let mut malformed = Vec::new();
    for (name, text) in sorted {
        let parsed = match text {
            Some(text) => parse_file(text, arch),
            None => Err("it is not UTF-8".to_string()),
        };
        match parsed {
            Ok(k) => out.extend(k.0),
            Err(reason) => malformed.push(Malformed { file: name.clone(), reason }),
        }
    }
    (Kargs(out), malformed)
}

/// The `*.toml` regular files in the kargs.d directory of `commit`, with
/// their content (`None` when not UTF-8); none when there is no such
/// directory.
pub fn files_of_commit(repo: &ostree::Repo, commit: &str) -> Result<Vec<(String, Option<String>)>> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE).with_context(|| format!("reading commit {commit}"))?;
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
    let mut files = Vec::new();
    for info in entries {
        let info = info?;
        let name = info.name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && info.file_type() == gio::FileType::Regular {
            let bytes = read_commit_file(repo, &dir.child(&name)).with_context(|| format!("reading /{KARGS_DIR}/{name}"))?;
            files.push((name, String::from_utf8(bytes).ok()));
        }
    }
    Ok(files)
}

/// The content of a regular file of a commit. Not `load_contents`: that
/// asks the file's stream for its etag as if it were a `GFileInputStream`,
/// which the stream of an ostree `RepoFile` is not, and GLib logs a
/// CRITICAL for every file read so (ostree issue 2703).
pub(super) fn read_commit_file(repo: &ostree::Repo, file: &gio::File) -> Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn k(line: &str) -> Kargs {
        Kargs::parse(line)
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        list.iter().map(|(n, t)| (n.to_string(), Some(t.to_string()))).collect()
    }

    #[test]
    fn command_lines_split_by_the_kernels_rules() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("rw console=ttyS0", &["rw", "console=ttyS0"]),
            ("  rw\tquiet \n", &["rw", "quiet"]),
            ("dyndbg=\"file foo.c +p\" a=1", &["dyndbg=\"file foo.c +p\"", "a=1"]),
            ("\"a=b c\" d", &["\"a=b c\"", "d"]),
            ("console=tty0 console=ttyS0,115200", &["console=tty0", "console=ttyS0,115200"]),
            ("a=\"x=y\" b==c", &["a=\"x=y\"", "b==c"]),
            ("a=\"unclosed b c", &["a=\"unclosed b c"]),
            ("x=\"\" y", &["x=\"\"", "y"]),
        ];
        for (line, want) in table {
            assert_eq!(k(line).as_slice(), *want, "{line:?}");
        }
    }

    #[test]
    fn arguments_compare_by_meaning() {
        let table = [
            ("a=1", "a=1", true),
            ("a=1", "a=2", false),
            ("a-b=1", "a_b=1", true),
            ("\"a=b c\"", "a=\"b c\"", true),
            ("quiet", "quiet=", false),
            ("A=1", "a=1", false),
        ];
        for (a, b, want) in table {
            assert_eq!(same(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn the_delta_changes_only_what_the_images_changed() {
        // (entry, old image, new image, result)
        let table = [
            // The case: the quoted argument goes too.
            (
                "rw console=ttyS0 ostree=/x quiet a=1 dyndbg=\"file foo.c +p\"",
                "quiet a=1 dyndbg=\"file foo.c +p\"",
                "a=2",
                "rw console=ttyS0 ostree=/x a=2",
            ),
            // First deployment: the new image's arguments are added.
            ("rw console=ttyS0", "", "quiet a=1", "rw console=ttyS0 quiet a=1"),
            // Local arguments stay, wherever they are.
            ("rw local=1 a=1 late", "a=1", "a=2", "rw local=1 late a=2"),
            // Removed locally, kept in both images: stays removed.
            ("rw a=1", "quiet a=1", "quiet a=2", "rw a=2"),
            // Removed locally, dropped by the image: nothing to remove.
            ("rw", "a=1", "", "rw"),
            // Changed locally: the admin's value stays, the image's new one is added.
            ("rw a=9", "a=1", "a=2", "rw a=9 a=2"),
            // Repeated keys: one occurrence per argument, the last one.
            ("console=tty0 console=ttyS0 console=tty0", "console=tty0", "", "console=tty0 console=ttyS0"),
            ("rw", "console=tty0 console=tty0", "console=tty0", "rw"),
            ("rw x", "", "x", "rw x x"),
            // Same meaning, other spelling.
            ("rw a-b=1 \"c=d e\"", "a_b=1 c=\"d e\"", "", "rw"),
            // Unchanged images change nothing.
            ("rw a=9", "a=1 quiet", "quiet a=1", "rw a=9"),
        ];
        for (entry, old, new, want) in table {
            let got = Delta::between(&k(old), &k(new)).apply(&k(entry));
            assert_eq!(got.to_string(), want, "entry {entry:?}, {old:?} -> {new:?}");
        }
        assert!(Delta::between(&k("a=1 quiet"), &k("quiet a=1")).is_empty());
    }

    #[test]
    fn kargs_d_files_by_bootcs_rules() {
        let x86 = architectures("x86_64", true);
        let table: &[(&str, Result<&str, &str>)] = &[
            ("kargs = [\"a=1\", \"quiet\"]\n", Ok("a=1 quiet")),
            ("kargs = []\n", Ok("")),
            ("kargs = [\"a=1 b=2\", \"c=\\\"d e\\\"\"]\n", Ok("a=1 b=2 c=\"d e\"")),
            ("kargs = [\"\"]\n", Ok("")),
            ("kargs = [\"a=1\"]\nmatch-architectures = [\"x86_64\"]\n", Ok("a=1")),
            ("kargs = [\"a=1\"]\nmatch-architectures = [\"aarch64\"]\n", Ok("")),
            ("kargs = [\"a=1\"]\nmatch-architectures = []\n", Ok("")),
            ("kargs = [\"a=1\"]\nmatch-architectures = [\"s390x\", \"x86_64\"]\n", Ok("a=1")),
            ("kargs = [\"a=\\\"b\"]\n", Err("the argument \"a=\\\"b\" has an unpaired double quote")),
            ("kargs = \"a=1\"\n", Err("line 1, column 9: invalid type: string \"a=1\", expected a sequence")),
            ("kargs = [1]\n", Err("line 1, column 10: invalid type: integer `1`, expected a string")),
            ("kargs = []\nextra = 1\n", Err("line 2, column 1: unknown field `extra`, expected `kargs` or `match-architectures`")),
            ("match-architectures = [\"x86_64\"]\n", Err("line 1, column 1: missing field `kargs`")),
            ("kargs = [\n", Err("line 2, column 1: invalid array; expected `]`")),
            ("kargs = [\"a\"]\nmatch-architectures = \"x86_64\"\n", Err("line 2, column 23: invalid type: string \"x86_64\", expected a sequence")),
        ];
        for (text, want) in table {
            let got = parse_file(text, &x86).map(|k| k.to_string());
            assert_eq!(got, want.map(str::to_string).map_err(str::to_string), "{text:?}");
        }
    }

    #[test]
    fn architecture_names_are_the_kernels_and_rusts() {
        let table: &[(&str, bool, &[&str])] = &[
            ("x86_64", true, &["x86_64"]),
            ("aarch64", true, &["aarch64"]),
            ("s390x", false, &["s390x"]),
            ("riscv64", true, &["riscv64"]),
            ("powerpc64", true, &["powerpc64", "ppc64le"]),
            ("powerpc64", false, &["powerpc64", "ppc64"]),
            ("x86", true, &["x86", "i686", "i386"]),
            ("arm", true, &["arm", "armv7l"]),
        ];
        for (rust, le, want) in table {
            assert_eq!(architectures(rust, *le), *want, "{rust}");
        }
        assert!(host_architectures().contains(&std::env::consts::ARCH));
    }

    #[test]
    fn files_apply_in_name_order_and_every_malformed_one_is_named() {
        let arch = ["x86_64"];
        let (got, bad) = parse_files(&files(&[("20-b.toml", "kargs = [\"b\"]"), ("10-a.toml", "kargs = [\"a\"]")]), &arch);
        assert_eq!((got.to_string(), bad), ("a b".to_string(), vec![]));
        let mut list = files(&[("10-ok.toml", "kargs = [\"ok\"]"), ("30-bad.toml", "kargs = 1")]);
        list.push(("20-binary.toml".into(), None));
        let (got, bad) = parse_files(&list, &arch);
        assert_eq!(got.to_string(), "ok", "the good files still count");
        let named: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(
            named,
            [
                "/usr/lib/bootc/kargs.d/20-binary.toml is malformed: it is not UTF-8",
                "/usr/lib/bootc/kargs.d/30-bad.toml is malformed: line 1, column 9: invalid type: integer `1`, expected a sequence",
            ]
        );
    }

    mod properties {
        //! Seeded and bounded in `make test` (PROPTEST_RNG_SEED,
        //! PROPTEST_CASES); `make fuzz` runs them long.
        use super::*;
        use proptest::prelude::*;

        /// One argument as people write them: a flag, `key=value`, a value
        /// in quotes with spaces, or the whole argument quoted.
        fn arg() -> impl Strategy<Value = String> {
            let key = "[a-z][a-z0-9._-]{0,6}";
            let value = "[a-zA-Z0-9,./:+=-]{0,6}";
            let spaced = "[a-zA-Z0-9.+= ]{0,8}";
            prop_oneof![
                key.prop_map(String::from),
                (key, value).prop_map(|(k, v)| format!("{k}={v}")),
                (key, spaced).prop_map(|(k, v)| format!("{k}=\"{v}\"")),
                (key, spaced).prop_map(|(k, v)| format!("\"{k}={v}\"")),
            ]
        }

        fn args(max: usize) -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec(arg(), 0..max)
        }

        /// Whitespace the kernel splits on.
        fn gap() -> impl Strategy<Value = String> {
            "[ \t\n]{1,3}"
        }

        proptest! {
            #[test]
            fn printing_what_was_parsed_gives_the_arguments_back(list in args(8)) {
                let printed = Kargs(list.clone()).to_string();
                prop_assert_eq!(Kargs::parse(&printed).into_vec(), list);
                prop_assert_eq!(Kargs::parse(&printed).to_string(), printed);
            }

            #[test]
            fn any_spacing_parses_to_the_same_arguments(list in args(8), gaps in proptest::collection::vec(gap(), 9)) {
                let mut line = gaps[0].clone();
                for (a, g) in list.iter().zip(&gaps[1..]) {
                    line.push_str(a);
                    line.push_str(g);
                }
                prop_assert_eq!(Kargs::parse(&line).into_vec(), list);
            }

            #[test]
            fn parse_then_print_is_a_fixpoint_for_any_text(line in any::<String>()) {
                let once = Kargs::parse(&line).to_string();
                prop_assert_eq!(Kargs::parse(&once).to_string(), once);
            }

            #[test]
            fn a_to_b_then_b_to_a_restores_the_entry(base in args(6), a in args(5), b in args(5)) {
                // The entry as the deployment of image A left it.
                let entry = Kargs(base.iter().chain(&a).cloned().collect());
                let (ka, kb) = (Kargs(a.clone()), Kargs(b.clone()));
                let there = Delta::between(&ka, &kb).apply(&entry);
                let back = Delta::between(&kb, &ka).apply(&there);
                // The same arguments, as often as before.
                prop_assert!(minus(back.as_slice(), entry.as_slice()).is_empty(), "{} vs {}", back, entry);
                prop_assert!(minus(entry.as_slice(), back.as_slice()).is_empty(), "{} vs {}", back, entry);
                // In the same order when the images share no argument.
                if minus(&a, &b).len() == a.len() {
                    prop_assert_eq!(back, entry);
                }
            }

            #[test]
            fn the_new_images_arguments_end_up_in_the_entry(base in args(6), a in args(5), b in args(5)) {
                let entry = Kargs(base.iter().chain(&a).cloned().collect());
                let got = Delta::between(&Kargs(a.clone()), &Kargs(b.clone())).apply(&entry);
                prop_assert!(minus(&b, got.as_slice()).is_empty(), "{:?} not all in {}", b, got);
                prop_assert!(minus(&base, got.as_slice()).is_empty(), "local {:?} not all in {}", base, got);
            }
        }
    }
}
