//! How a deployment's `/etc` has drifted from its image's defaults in
//! `/usr/etc`: what `ostree admin config-diff` shows, with the type and
//! mode changes spelled out.
//!
//! The two trees are walked through directory handles (`cap-std`): no
//! symlink is followed, nothing outside the deployment is read, and file
//! contents are only compared, never returned. libostree's
//! `ostree_diff_dirs` would do the comparison, but its binding in the
//! `ostree` crate takes its output arrays as inputs and so cannot return
//! the result. Like libostree's finalization, the comparison looks at type,
//! permission bits, owner and content; extended attributes are not compared.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, MetadataExt, OpenOptions, OpenOptionsExt};
use nix::fcntl::OFlag;
use hostd_interface::etc_diff::{format_mode, EtcChange, EtcChangeKind, EtcDiff, EtcDiffTarget, EtcFileType};

use super::status::{Role, Snapshot};
use super::Error;

/// The deployment `target` names in `snapshot`: its name
/// (`<checksum>.<serial>`) and its directory under `sysroot`.
pub fn deployment_of(snapshot: &Snapshot, sysroot: &Path, target: EtcDiffTarget) -> Result<(String, PathBuf), Error> {
    let deployment = match target {
        EtcDiffTarget::Booted => snapshot.merge_deployment(),
        EtcDiffTarget::Staged if !snapshot.booted => {
            return Err(Error::Refused(format!(
                "{} is not the booted sysroot: nothing is staged there; its default deployment is the one compared by default",
                sysroot.display()
            )))
        }
        EtcDiffTarget::Staged => snapshot.deployments.iter().find(|d| d.role == Role::Staged),
    };
    let ostree = deployment
        .and_then(|d| d.entry.ostree.as_ref())
        .ok_or_else(|| Error::Refused(format!("there is no {target} deployment")))?;
    let name = format!("{}.{}", ostree.checksum, ostree.deploy_serial);
    let dir = sysroot.join("ostree/deploy").join(&ostree.stateroot).join("deploy").join(&name);
    Ok((name, dir))
}

/// Compare `etc` with `usr/etc` of the deployment directory `deployment`.
pub fn diff(name: String, deployment: &Path) -> Result<EtcDiff, Error> {
    let open = |rel: &str| {
        Dir::open_ambient_dir(deployment.join(rel), ambient_authority())
            .with_context(|| format!("opening {rel} of {}", deployment.display()))
    };
    let defaults = open("usr/etc")?;
    let current = open("etc")?;
    let mut changes = Vec::new();
    compare_dirs(defaults, current, "/etc", &mut changes)
        .with_context(|| format!("comparing etc with usr/etc of {}", deployment.display()))?;
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(EtcDiff { deployment: name, changes })
}

fn file_type(m: &Metadata) -> EtcFileType {
    let t = m.file_type();
    if t.is_symlink() {
        EtcFileType::Symlink
    } else if t.is_dir() {
        EtcFileType::Directory
    } else if t.is_file() {
        EtcFileType::File
    } else {
        EtcFileType::Other
    }
}

fn names(dir: &Dir) -> Result<BTreeSet<std::ffi::OsString>> {
    dir.entries()?.map(|e| Ok(e?.file_name())).collect()
}

/// The entry `name` of `dir`, not following a symlink; `None` when absent.
fn entry(dir: &Dir, name: &std::ffi::OsStr) -> Result<Option<Metadata>> {
    match dir.symlink_metadata(name) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A directory pair being compared, with the names still to look at.
struct Frame {
    defaults: Dir,
    current: Dir,
    at: String,
    names: std::collections::btree_set::IntoIter<std::ffi::OsString>,
}

impl Frame {
    fn new(defaults: Dir, current: Dir, at: String) -> Result<Frame> {
        let mut all = names(&defaults)?;
        all.extend(names(&current)?);
        Ok(Frame { defaults, current, at, names: all.into_iter() })
    }
}

/// Compare the trees under `defaults` and `current` depth first, with an
/// explicit stack: a tree of any depth is an answer or an error (too many
/// open directories), never an overflowed thread stack.
fn compare_dirs(defaults: Dir, current: Dir, at: &str, out: &mut Vec<EtcChange>) -> Result<()> {
    let mut stack = vec![Frame::new(defaults, current, at.to_string())?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        if let Some(deeper) = compare_entry(frame, &name, out)? {
            stack.push(deeper);
        }
    }
    Ok(())
}

/// Compare `name` of `frame`'s two directories; the pair to descend into
/// when both are directories.
fn compare_entry(frame: &Frame, name: &std::ffi::OsStr, out: &mut Vec<EtcChange>) -> Result<Option<Frame>> {
    let (defaults, current, at) = (&frame.defaults, &frame.current, frame.at.as_str());
    let path = format!("{at}/{}", escaped(name));
    let change = |kind, m: &Metadata| EtcChange {
        path: path.clone(),
        kind,
        file_type: file_type(m),
        previous_type: None,
        mode: format_mode(m.mode()),
        previous_mode: None,
        owner_changed: false,
        content_changed: false,
    };
    match (entry(defaults, name)?, entry(current, name)?) {
        (None, None) => {}
        (None, Some(now)) => out.push(change(EtcChangeKind::Added, &now)),
        (Some(was), None) => out.push(change(EtcChangeKind::Removed, &was)),
        (Some(was), Some(now)) => {
            let (type_was, type_now) = (file_type(&was), file_type(&now));
            let mut c = change(EtcChangeKind::Modified, &now);
            if type_was != type_now {
                c.previous_type = Some(type_was);
            } else {
                c.content_changed = match type_now {
                    EtcFileType::File => !same_content(defaults, current, name, &was, &now)
                        .with_context(|| format!("comparing {path}"))?,
                    EtcFileType::Symlink => {
                        link_target(defaults, name).with_context(|| format!("reading the link /usr{path}"))?
                            != link_target(current, name).with_context(|| format!("reading the link {path}"))?
                    }
                    EtcFileType::Other => was.rdev() != now.rdev(),
                    EtcFileType::Directory => false,
                };
            }
            // A symlink's own bits mean nothing on Linux; across a
            // type change, the type says it.
            if type_was == type_now && type_now != EtcFileType::Symlink && (was.mode() & 0o7777) != (now.mode() & 0o7777) {
                c.previous_mode = Some(format_mode(was.mode()));
            }
            c.owner_changed = (was.uid(), was.gid()) != (now.uid(), now.gid());
            let changed = c.previous_type.is_some() || c.previous_mode.is_some() || c.owner_changed || c.content_changed;
            if changed {
                out.push(c);
            }
            if type_was == EtcFileType::Directory && type_now == EtcFileType::Directory {
                let sub_defaults = open_subdir(defaults, name).with_context(|| format!("opening /usr{path}"))?;
                let sub_current = open_subdir(current, name).with_context(|| format!("opening {path}"))?;
                return Ok(Some(Frame::new(sub_defaults, sub_current, path)?));
            }
        }
    }
    Ok(None)
}

/// `name` as one unambiguous line of text: a backslash, control characters
/// (a newline in a name would forge another line) and bytes that are not
/// UTF-8 are written as `\\`, `\n`, `\t` or `\xNN`, as `ls -b` quotes them;
/// two different names never look alike.
fn escaped(name: &std::ffi::OsStr) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut text = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\n' => text.push_str("\\n"),
                '\t' => text.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(text, "\\x{:02x}", u32::from(c));
                }
                c => text.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// A symlink's target as written, absolute ones included (cap-std's
/// `read_link` refuses those, as they lead outside the directory).
fn link_target(dir: &Dir, name: &std::ffi::OsStr) -> Result<PathBuf> {
    Ok(dir.read_link_contents(name)?)
}

/// Open the entry `name` of `dir` for reading, failing on a symlink (one
/// swapped in since it was looked at).
fn open_nofollow(dir: &Dir, name: &std::ffi::OsStr, flags: OFlag) -> Result<cap_std::fs::File> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | flags).bits());
    Ok(dir.open_with(name, &options)?)
}

fn open_subdir(dir: &Dir, name: &std::ffi::OsStr) -> Result<Dir> {
    Ok(Dir::from_std_file(open_nofollow(dir, name, OFlag::O_DIRECTORY)?.into_std()))
}

/// Whether two regular files hold the same bytes.
fn same_content(a: &Dir, b: &Dir, name: &std::ffi::OsStr, ma: &Metadata, mb: &Metadata) -> Result<bool> {
    if ma.len() != mb.len() {
        return Ok(false);
    }
    // Hard links of one file (ostree links /etc files to /usr/etc ones
    // when it can): the same inode is the same content.
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return Ok(true);
    }
    let (mut fa, mut fb) = (open_nofollow(a, name, OFlag::empty())?, open_nofollow(b, name, OFlag::empty())?);
    if !fa.metadata()?.is_file() || !fb.metadata()?.is_file() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        match (na.cmp(&nb), ba[..na] == bb[..nb]) {
            (Ordering::Equal, true) if na == 0 => return Ok(true),
            (Ordering::Equal, true) => continue,
            _ => return Ok(false),
        }
    }
}

/// Read until `buf` is full or the file ends; the bytes read.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn lists_added_removed_and_modified_paths_with_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let (usr, etc) = (d.path().join("usr/etc"), d.path().join("etc"));
        for root in [&usr, &etc] {
            write(&root.join("same"), "x");
            write(&root.join("sub/same"), "y");
            write(&root.join("mode"), "m");
            symlink("target-a", root.join("link")).unwrap();
            std::fs::create_dir_all(root.join("gone-dir/inner")).unwrap();
        }
        write(&usr.join("edited"), "old");
        write(&etc.join("edited"), "new");
        write(&usr.join("sub/removed"), "r");
        write(&etc.join("added"), "a");
        std::fs::create_dir_all(etc.join("new-dir/deep")).unwrap();
        std::fs::set_permissions(etc.join("mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(usr.join("mode"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(etc.join("link")).unwrap();
        symlink("target-b", etc.join("link")).unwrap();
        // Absolute targets, as /etc/localtime has: compared, not followed.
        symlink("/usr/share/zoneinfo/UTC", usr.join("localtime")).unwrap();
        symlink("/usr/share/zoneinfo/UTC", etc.join("localtime")).unwrap();
        symlink("/usr/share/zoneinfo/CET", usr.join("timezone-link")).unwrap();
        symlink("/usr/share/zoneinfo/EET", etc.join("timezone-link")).unwrap();
        write(&usr.join("was-file"), "f");
        std::fs::create_dir(etc.join("was-file")).unwrap();
        std::fs::remove_dir_all(etc.join("gone-dir")).unwrap();

        let diff = diff("abc.0".into(), d.path()).unwrap();
        assert_eq!(diff.deployment, "abc.0");
        let shown: Vec<_> = diff
            .changes
            .iter()
            .map(|c| {
                (
                    c.path.as_str(),
                    c.kind,
                    c.file_type,
                    c.previous_type,
                    c.previous_mode.as_deref(),
                    c.content_changed,
                )
            })
            .collect();
        use EtcChangeKind::*;
        use EtcFileType::*;
        assert_eq!(
            shown,
            [
                ("/etc/added", Added, File, None, None, false),
                ("/etc/edited", Modified, File, None, None, true),
                ("/etc/gone-dir", Removed, Directory, None, None, false),
                ("/etc/link", Modified, Symlink, None, None, true),
                ("/etc/mode", Modified, File, None, Some("0644"), false),
                ("/etc/new-dir", Added, Directory, None, None, false),
                ("/etc/sub/removed", Removed, File, None, None, false),
                ("/etc/timezone-link", Modified, Symlink, None, None, true),
                ("/etc/was-file", Modified, Directory, Some(File), None, false),
            ]
        );
        let mode = diff.changes.iter().find(|c| c.path == "/etc/mode").unwrap();
        assert_eq!(mode.mode, "0600");
    }

    #[test]
    fn a_symlink_to_outside_is_compared_as_a_link_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/etc")).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink("/", d.path().join("etc/escape")).unwrap();
        let diff = diff("x.0".into(), d.path()).unwrap();
        assert_eq!(diff.changes.len(), 1, "{diff:?}");
        assert_eq!(diff.changes[0].file_type, EtcFileType::Symlink);
    }
}
