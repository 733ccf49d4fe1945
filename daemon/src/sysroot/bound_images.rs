//! Logically bound images: the application images an OS image binds to
//! itself through `/usr/lib/bootc/bound-images.d`, read from an image's
//! commit (the tree a deployment is checked out from).
//!
//! The rules are bootc's (`boundimage.rs`, docs "Logically Bound Images"),
//! so an image that bootc accepts means the same to hostd:
//! - every entry of the directory is a symbolic link (bootc refuses a
//!   regular file) whose name ends in `.image` or `.container`; an
//!   absolute target is resolved within the image's tree, not the host's;
//! - the target is a podman quadlet file (systemd unit syntax): `Image=` of
//!   its `[Image]` or `[Container]` section names the image; nothing else is
//!   read, except `AuthFile=` of an `[Image]` section (bootc refuses it; hostd
//!   hands it to skopeo as `--authfile`, as `podman pull` would use it);
//! - systemd specifiers (`%n`, `%h`, …) are refused; `%%` is a `%`;
//! - a missing directory binds nothing; anything else the rules refuse makes
//!   the image unusable, named by the file ([`Malformed`]).

use anyhow::{Context, Result};
use ostree_ext::gio::prelude::*;
use ostree_ext::{gio, ostree};

/// Where an image keeps its bound-image links.
pub const BOUND_IMAGES_DIR: &str = "usr/lib/bootc/bound-images.d";

/// How many symbolic links a bound-image entry may pass through.
const MAX_LINK_HOPS: usize = 32;

/// A quadlet file is a unit file, not an image: a larger one is refused.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One image bound by a file of `bound-images.d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundImage {
    /// The entry's name in `bound-images.d`, e.g. `app.image`.
    pub file: String,
    /// `Image=`: the image as written (a registry reference; podman's
    /// transport-less syntax, e.g. `quay.io/org/app:1`).
    pub image: String,
    /// `AuthFile=` of an `.image` file: credentials for this image, a path
    /// on the running host.
    pub auth_file: Option<String>,
}

/// An entry of `bound-images.d` that cannot be used: the image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/{BOUND_IMAGES_DIR}/{file} is malformed: {reason}")]
pub struct Malformed {
    /// The entry's name in `bound-images.d`.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The kinds of quadlet file bootc reads, by the entry's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuadletKind {
    /// `.image`: section `[Image]`, keys `Image=` and `AuthFile=`.
    Image,
    /// `.container`: section `[Container]`, key `Image=`.
    Container,
}

impl QuadletKind {
    fn of(file: &str) -> Option<QuadletKind> {
        match file.rsplit_once('.').map(|(_, ext)| ext) {
            Some("image") => Some(QuadletKind::Image),
            Some("container") => Some(QuadletKind::Container),
            _ => None,
        }
    }

    fn section(self) -> &'static str {
        match self {
            QuadletKind::Image => "Image",
            QuadletKind::Container => "Container",
        }
    }
}

/// Parse the quadlet file behind the entry `file` of `bound-images.d`.
pub fn parse(file: &str, content: &str) -> Result<BoundImage, Malformed> {
    let malformed = |reason: String| Malformed { file: file.to_string(), reason };
    let kind = QuadletKind::of(file)
        .ok_or_else(|| malformed("only .image and .container files bind images".into()))?;
    let values = section_values(content, kind.section()).map_err(malformed)?;
    let last = |key: &str| values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let image = last("Image")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed(format!("its [{}] section has no Image=", kind.section())))?;
    let image = unescape_specifiers(image).map_err(|r| malformed(format!("Image={image}: {r}")))?;
    if kind == QuadletKind::Container && (image.ends_with(".image") || image.ends_with(".build")) {
        return Err(malformed(format!(
            "Image={image} names a quadlet unit, not an image; bind that unit's file instead"
        )));
    }
    let auth_file = match (kind, last("AuthFile")) {
        (QuadletKind::Image, Some(path)) if !path.is_empty() => {
            let path = unescape_specifiers(path).map_err(|r| malformed(format!("AuthFile={path}: {r}")))?;
            if !path.starts_with('/') {
                return Err(malformed(format!("AuthFile={path} is not an absolute path")));
            }
            Some(path)
        }
        _ => None,
    };
    Ok(BoundImage { file: file.to_string(), image, auth_file })
}

/// The `key=value` assignments of `section`, in order, by systemd's unit
/// file syntax: `#` and `;` start comment lines, a trailing backslash
/// continues a line, whitespace around keys and values is dropped.
fn section_values(content: &str, section: &str) -> Result<Vec<(String, String)>, String> {
    let mut values = Vec::new();
    let mut current: Option<String> = None;
    let mut pending = String::new();
    for (number, raw) in content.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        let line = if pending.is_empty() { line.to_string() } else { std::mem::take(&mut pending) + line };
        if let Some(name) = line.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| format!("line {}: unterminated section header", number + 1))?;
            current = Some(name.to_string());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: neither a section header nor key=value", number + 1))?;
        match &current {
            None => return Err(format!("line {}: an assignment outside any section", number + 1)),
            Some(name) if name == section => values.push((key.trim().to_string(), value.trim().to_string())),
            Some(_) => {}
        }
    }
    Ok(values)
}

/// systemd's `%%` as `%`; any other specifier is refused (bootc's rule: it
/// would expand differently for the unit than for the pull).
fn unescape_specifiers(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("systemd specifiers (%{other}) are not supported in bound images")),
            None => return Err("ends in a lone %".into()),
        }
    }
    Ok(out)
}

/// The images the commit `commit` binds, in the order of their entries'
/// names. `Ok(Err(_))` is a malformed entry (the image is unusable); `Err`
/// is a failure to read the repository.
pub fn of_commit(repo: &ostree::Repo, commit: &str) -> Result<Result<Vec<BoundImage>, Malformed>> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE).with_context(|| format!("reading commit {commit}"))?;
    let dir = root.resolve_relative_path(BOUND_IMAGES_DIR);
    // A missing parent directory is reported with varying error codes by
    // ostree's RepoFile, so ask for the type instead of matching errors.
    if file_type(&dir) != gio::FileType::Directory {
        return Ok(Ok(Vec::new()));
    }
    let entries = dir
        .enumerate_children("standard::name,standard::type", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
        .with_context(|| format!("listing /{BOUND_IMAGES_DIR}"))?;
    let mut names = Vec::new();
    for info in entries {
        let info = info?;
        names.push((info.name(), info.file_type()));
    }
    names.sort();
    let mut images = Vec::new();
    for (name, kind) in names {
        let Some(file) = name.to_str().map(str::to_string) else {
            return Ok(Err(Malformed { file: name.to_string_lossy().into_owned(), reason: "the name is not UTF-8".into() }));
        };
        let malformed = |reason: String| Malformed { file: file.clone(), reason };
        if kind != gio::FileType::SymbolicLink {
            return Ok(Err(malformed(
                "not a symbolic link; bound-images.d holds links to quadlet files (e.g. in /usr/share/containers/systemd)".into(),
            )));
        }
        let target = match resolve_link(&root, &dir.child(&file)) {
            Ok(target) => target,
            Err(reason) => return Ok(Err(malformed(reason))),
        };
        let bytes = match read_regular(repo, &target) {
            Ok(bytes) => bytes,
            Err(reason) => return Ok(Err(malformed(reason))),
        };
        let Ok(text) = String::from_utf8(bytes) else { return Ok(Err(malformed("the file is not UTF-8".into()))) };
        match parse(&file, &text) {
            Ok(image) => images.push(image),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(images))
}

fn file_type(file: &gio::File) -> gio::FileType {
    file.query_file_type(gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
}

/// Follow the link `link` inside the commit whose root is `root`: an
/// absolute target from the root (the tree is the future `/`), a relative
/// one from the link's directory; `..` never leaves the root.
fn resolve_link(root: &gio::File, link: &gio::File) -> Result<gio::File, String> {
    let mut current = link.clone();
    for _ in 0..MAX_LINK_HOPS {
        if file_type(&current) != gio::FileType::SymbolicLink {
            return Ok(current);
        }
        let info = current
            .query_info("standard::symlink-target", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
            .map_err(|e| format!("reading the link: {e}"))?;
        let target = info.symlink_target().ok_or("the link has no target")?;
        let target = target.to_string_lossy();
        let base = if target.starts_with('/') { root.clone() } else { current.parent().unwrap_or_else(|| root.clone()) };
        current = within_root(root, &base, &target);
    }
    Err(format!("more than {MAX_LINK_HOPS} symbolic links"))
}

/// `target` relative to `base`, component by component, clamped at `root`.
fn within_root(root: &gio::File, base: &gio::File, target: &str) -> gio::File {
    let mut current = base.clone();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if !current.equal(root) {
                    current = current.parent().unwrap_or_else(|| root.clone());
                }
            }
            name => current = current.child(name),
        }
    }
    current
}

/// The content of a regular file of a commit (see `kargs::read_commit_file`
/// for why not `load_contents`).
fn read_regular(repo: &ostree::Repo, file: &gio::File) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let path = file.path().map(|p| p.display().to_string()).unwrap_or_default();
    match file_type(file) {
        gio::FileType::Regular => {}
        gio::FileType::Unknown => return Err(format!("its link points to {path}, which the image does not have")),
        _ => return Err(format!("its link points to {path}, which is not a regular file")),
    }
    let file = file.downcast_ref::<ostree::RepoFile>().ok_or("not a file of an ostree commit")?;
    file.ensure_resolved().map_err(|e| format!("{path}: {e}"))?;
    let (stream, info, _) = repo.load_file(file.checksum().as_str(), gio::Cancellable::NONE).map_err(|e| format!("{path}: {e}"))?;
    if info.size() as u64 > MAX_FILE_BYTES {
        return Err(format!("{path} is larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    if let Some(stream) = stream {
        stream.into_read().read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(bytes)
}

/// `image` as containers-storage names it: a registry host first
/// (`docker.io` when the first component names none, with `library/` for a
/// single-component name), and `:latest` when neither tag nor digest is
/// given. Cleanup compares stored names with this.
pub fn normalized(image: &str) -> String {
    let image = image.strip_prefix("docker://").unwrap_or(image);
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let has_host = repo.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    });
    let repo = match (has_host, repo.contains('/')) {
        (true, _) => repo.to_string(),
        (false, true) => format!("docker.io/{repo}"),
        (false, false) => format!("docker.io/library/{repo}"),
    };
    match (tag, digest) {
        (_, Some(d)) => match tag {
            Some(t) => format!("{repo}:{t}@{d}"),
            None => format!("{repo}@{d}"),
        },
        (Some(t), None) => format!("{repo}:{t}"),
        (None, None) => format!("{repo}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_and_container_files_name_their_image() {
        let image = parse("app.image", "# app\n[Unit]\nDescription=x\n\n[Image]\nImage=quay.io/org/app:1\n").unwrap();
        assert_eq!(image, BoundImage { file: "app.image".into(), image: "quay.io/org/app:1".into(), auth_file: None });
        let container = parse(
            "web.container",
            "[Container]\nContainerName=web\n; a comment\nImage = 127.0.0.1:5000/web:latest\nExec=true\n[Install]\nWantedBy=default.target\n",
        )
        .unwrap();
        assert_eq!(container.image, "127.0.0.1:5000/web:latest");
        // The last assignment wins, as in systemd.
        assert_eq!(parse("a.image", "[Image]\nImage=a\nImage=b\n").unwrap().image, "b");
        // A continued line.
        assert_eq!(parse("a.image", "[Image]\nImage=quay.io/\\\norg/app\n").unwrap().image, "quay.io/ org/app");
    }

    #[test]
    fn an_image_files_auth_file_is_kept_and_must_be_absolute() {
        let image = parse("app.image", "[Image]\nImage=quay.io/org/app:1\nAuthFile=/etc/app/auth.json\n").unwrap();
        assert_eq!(image.auth_file.as_deref(), Some("/etc/app/auth.json"));
        let relative = parse("app.image", "[Image]\nImage=quay.io/org/app:1\nAuthFile=auth.json\n").unwrap_err();
        assert!(relative.reason.contains("not an absolute path"), "{relative}");
        // Not a key of .container files.
        let container = parse("a.container", "[Container]\nImage=x\nAuthFile=/a\n").unwrap();
        assert_eq!(container.auth_file, None);
    }

    #[test]
    fn what_bootc_refuses_is_malformed_and_named_by_its_file() {
        let cases = [
            ("app.image", "[Image]\n", "has no Image="),
            ("app.image", "[Container]\nImage=x\n", "[Image] section has no Image="),
            ("app.container", "[Container]\nImage=\n", "has no Image="),
            ("app.image", "[Image]\nImage=quay.io/%u/app\n", "specifiers"),
            ("app.image", "[Image]\nImage=quay.io/app%\n", "lone %"),
            ("app.conf", "[Image]\nImage=x\n", "only .image and .container"),
            ("app.image", "Image=x\n", "outside any section"),
            ("app.image", "[Image\nImage=x\n", "unterminated section"),
            ("app.image", "[Image]\nthis is not an assignment\n", "neither a section header"),
            ("app.container", "[Container]\nImage=app.image\n", "names a quadlet unit"),
        ];
        for (file, content, expected) in cases {
            let e = parse(file, content).unwrap_err();
            assert_eq!(e.file, file);
            assert!(e.reason.contains(expected), "{file} {content:?}: {e}");
            assert!(e.to_string().starts_with(&format!("/{BOUND_IMAGES_DIR}/{file} is malformed")), "{e}");
        }
        assert_eq!(parse("a.image", "[Image]\nImage=quay.io/%%x\n").unwrap().image, "quay.io/%x");
    }

    #[test]
    fn names_are_normalized_as_containers_storage_stores_them() {
        assert_eq!(normalized("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalized("org/app:2"), "docker.io/org/app:2");
        assert_eq!(normalized("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalized("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert_eq!(normalized("localhost/app"), "localhost/app:latest");
        assert_eq!(normalized("quay.io/org/app@sha256:ab"), "quay.io/org/app@sha256:ab");
        assert_eq!(normalized("docker://quay.io/org/app:1"), "quay.io/org/app:1");
    }
}
