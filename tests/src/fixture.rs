//! Fixture OS images: a bootable-shaped tree committed with ostree and
//! encapsulated by ostree-ext into an `oci:` directory, one layer per
//! component, so an update can change chosen layers only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ostree_ext::chunking::ObjectMetaSized;
use ostree_ext::container::{encapsulate, Config, ExportOpts, ImageReference, Transport};
use ostree_ext::objectsource::{ObjectMeta, ObjectSourceMeta};
use ostree_ext::prelude::*;
use ostree_ext::oci_spec::image::{ImageConfiguration, Platform};
use ostree_ext::{gio, ostree};
use ocidir::{cap_std, OciDir};

use crate::run;

/// Components of the fixture tree; each becomes its own layer.
pub const COMPONENTS: [&str; 5] = ["base", "kernel", "tools", "data", "docs"];
const KVER: &str = "6.1.0-fixture";

/// Builds versions of one image into one OCI directory (tag `latest`).
#[derive(Debug)]
pub struct ImageBuilder {
    work: PathBuf,
    repo: ostree::Repo,
    /// The OCI layout directory.
    pub oci_dir: PathBuf,
    /// Bytes of payload per component.
    pub component_size: usize,
    /// Payload sizes of components that differ from `component_size`.
    pub sizes: BTreeMap<&'static str, usize>,
    /// The components, each its own layer (default [`COMPONENTS`]).
    pub components: Vec<String>,
    /// The number of layers when not one per component plus one; 1 makes
    /// an image without content chunking (ostree-ext packs at least 4).
    pub layers: Option<u32>,
    /// Symbolic links every later build carries (path in the image →
    /// target), e.g. the links of `/usr/lib/bootc/bound-images.d`.
    pub symlinks: BTreeMap<String, String>,
}

/// One built version.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The version label.
    pub version: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// `ostree-unverified-image:oci:<dir>:latest`
    pub reference: String,
}

impl ImageBuilder {
    /// A builder working under `work` (created).
    pub fn new(work: &Path) -> Result<ImageBuilder> {
        std::fs::create_dir_all(work)?;
        let repo_path = work.join("build-repo");
        run(Command::new("ostree").arg("init").arg(format!("--repo={}", repo_path.display())).arg("--mode=bare-user"))?;
        let repo = ostree::Repo::new_for_path(&repo_path);
        repo.open(gio::Cancellable::NONE)?;
        Ok(ImageBuilder {
            work: work.to_path_buf(),
            repo,
            oci_dir: work.join("oci"),
            component_size: 64 * 1024,
            sizes: BTreeMap::new(),
            components: COMPONENTS.iter().map(|c| c.to_string()).collect(),
            layers: None,
            symlinks: BTreeMap::new(),
        })
    }

    /// The image name for the `oci` transport (`<dir>:latest`).
    pub fn oci_name(&self) -> String {
        format!("{}:latest", self.oci_dir.display())
    }

    /// Build `version`, with `changed` components carrying content specific
    /// to this version (others keep their v1 content), and tag it `latest`.
    pub async fn build(&self, version: &str, changed: &[&str], extra: &BTreeMap<String, String>) -> Result<BuiltImage> {
        let tree = self.work.join(format!("tree-{version}"));
        let _ = std::fs::remove_dir_all(&tree);
        let size_of = |c: &str| self.sizes.get(c).copied().unwrap_or(self.component_size);
        write_tree(&tree, version, &self.components, changed, &size_of, extra)?;
        for (path, target) in &self.symlinks {
            let link = tree.join(path);
            std::fs::create_dir_all(link.parent().expect("has parent"))?;
            std::os::unix::fs::symlink(target, &link).with_context(|| link.display().to_string())?;
        }
        let branch = format!("fixture/{version}");
        run(Command::new("ostree")
            .arg(format!("--repo={}", self.work.join("build-repo").display()))
            .args(["commit", "--owner-uid=0", "--owner-gid=0", "--no-xattrs", "--timestamp=2026-01-01T00:00:00Z"])
            .arg(format!("--branch={branch}"))
            .arg(format!("--tree=dir={}", tree.display()))
            .arg(format!("--add-metadata-string=version={version}"))
            .arg("--add-metadata=ostree.bootable=true"))?;
        std::fs::remove_dir_all(&tree)?;
        let meta = object_meta(&self.repo, &branch, &self.components)?;
        let sized = ObjectMetaSized::compute_sizes(&self.repo, meta)?;
        let dest = ImageReference { transport: Transport::OciDir, name: self.oci_name() };
        let mut opts = ExportOpts::default();
        opts.copy_meta_keys = vec!["version".into()];
        let layers = self.layers.unwrap_or(self.components.len() as u32 + 1);
        opts.max_layers = std::num::NonZeroU32::new(layers);
        opts.contentmeta = (layers > 1).then_some(&sized);
        opts.created = Some(created_for(version));
        let digest = encapsulate(&self.repo, &branch, &Config::default(), Some(opts), &dest)
            .await
            .with_context(|| format!("encapsulating {version}"))?;
        Ok(BuiltImage {
            version: version.to_string(),
            digest: digest.to_string(),
            reference: format!("ostree-unverified-image:oci:{}", self.oci_name()),
        })
    }
}

/// The file type bits of a symbolic link ([`LayerFile::symlink`]).
const SYMLINK_TYPE: u32 = 0o120000;

/// A regular file (or with [`LayerFile::symlink`], a symbolic link) of a
/// derived image's layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerFile<'a> {
    /// Path in the image, relative.
    pub path: &'a str,
    /// Content.
    pub content: &'a [u8],
    /// Permission bits, setuid/setgid included.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

impl<'a> LayerFile<'a> {
    /// `path` with `content`, 0644, owned by root.
    pub fn plain(path: &'a str, content: &'a [u8]) -> LayerFile<'a> {
        LayerFile { path, content, mode: 0o644, uid: 0, gid: 0 }
    }

    /// A symbolic link at `path` to `target`, owned by root.
    pub fn symlink(path: &'a str, target: &'a str) -> LayerFile<'a> {
        LayerFile { path, content: target.as_bytes(), mode: SYMLINK_TYPE | 0o777, uid: 0, gid: 0 }
    }
}

impl ImageBuilder {
    /// Build `version` as a derived image: the image currently tagged
    /// `latest` plus one tar layer holding `files` (path → content), the way
    /// a Containerfile `FROM base` + `COPY` makes one. Re-deriving from the
    /// same base changes exactly one layer.
    pub fn derive(&self, base: &BuiltImage, version: &str, files: &[(&str, Vec<u8>)]) -> Result<BuiltImage> {
        let files: Vec<LayerFile> = files.iter().map(|(path, content)| LayerFile::plain(path, content)).collect();
        self.derive_files(base, version, &files)
    }

    /// [`Self::derive`] with each file's mode and owner as given.
    pub fn derive_files(&self, base: &BuiltImage, version: &str, files: &[LayerFile]) -> Result<BuiltImage> {
        let dir = cap_std::fs::Dir::open_ambient_dir(&self.oci_dir, cap_std::ambient_authority())?;
        let oci = OciDir::open(&dir)?;
        let base_tag = format!("base-{}", base.version);
        let manifest = match oci.find_manifest_with_tag(&base_tag)? {
            Some(m) => m,
            None => {
                let m = oci.find_manifest_with_tag("latest")?.context("no image tagged latest")?;
                let config: ImageConfiguration = oci.read_json_blob(m.config())?;
                oci.insert_manifest_and_config(m.clone(), config, Some(&base_tag), Platform::default())?;
                m
            }
        };
        let mut manifest = manifest;
        let mut config: ImageConfiguration = oci.read_json_blob(manifest.config())?;
        let mut layer = oci.create_layer(None)?;
        for file in files {
            let mut header = tar::Header::new_gnu();
            if file.mode & 0o170000 == SYMLINK_TYPE {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                header.set_mtime(0);
                let target = std::str::from_utf8(file.content).context("a link target is UTF-8")?;
                layer.append_link(&mut header, file.path, target)?;
                continue;
            }
            header.set_size(file.content.len() as u64);
            header.set_mode(file.mode);
            header.set_uid(file.uid);
            header.set_gid(file.gid);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            layer.append_data(&mut header, file.path, file.content)?;
        }
        let layer = layer.into_inner()?.complete()?;
        oci.push_layer(&mut manifest, &mut config, layer, &format!("hostd fixture {version}"), None);
        let mut labels = config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
        labels.insert("version".into(), version.into());
        labels.insert("org.opencontainers.image.version".into(), version.into());
        let mut inner = config.config().clone().unwrap_or_default();
        inner.set_labels(Some(labels));
        config.set_config(Some(inner));
        config.set_created(Some(created_for(version)));
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        annotations.insert("org.opencontainers.image.version".into(), version.into());
        annotations.remove("org.opencontainers.image.created");
        manifest.set_annotations(Some(annotations));
        let desc = oci.insert_manifest_and_config(manifest, config, Some("latest"), Platform::default())?;
        Ok(BuiltImage {
            version: version.to_string(),
            digest: desc.digest().to_string(),
            reference: base.reference.clone(),
        })
    }
}

/// How [`ImageBuilder::with_metadata`] edits an image's metadata: the config's
/// labels, the manifest's annotations and the config's `created`.
#[derive(Debug)]
pub struct MetadataEdit<'a> {
    /// Config labels.
    pub labels: &'a mut std::collections::HashMap<String, String>,
    /// Manifest annotations.
    pub annotations: &'a mut std::collections::HashMap<String, String>,
    /// The config's `created`.
    pub created: &'a mut Option<String>,
}

impl ImageBuilder {
    /// Tag as `tag` the image now tagged `latest` with its labels,
    /// annotations and `created` changed by `edit`, the way registries and
    /// build tools leave them (empty labels, disagreeing versions, times in
    /// other formats). The layers are the same; the manifest and config are
    /// new and still valid OCI. `version` names the result for the test.
    pub fn with_metadata(&self, tag: &str, version: &str, edit: impl FnOnce(MetadataEdit<'_>)) -> Result<BuiltImage> {
        let dir = cap_std::fs::Dir::open_ambient_dir(&self.oci_dir, cap_std::ambient_authority())?;
        let oci = OciDir::open(&dir)?;
        let mut manifest = oci.find_manifest_with_tag("latest")?.context("no image tagged latest")?;
        let mut config: ImageConfiguration = oci.read_json_blob(manifest.config())?;
        let mut labels = config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        let mut created = config.created().clone();
        edit(MetadataEdit { labels: &mut labels, annotations: &mut annotations, created: &mut created });
        let mut inner = config.config().clone().unwrap_or_default();
        inner.set_labels(Some(labels));
        config.set_config(Some(inner));
        config.set_created(created);
        manifest.set_annotations(Some(annotations));
        let desc = oci.insert_manifest_and_config(manifest, config, Some(tag), Platform::default())?;
        Ok(BuiltImage {
            version: version.to_string(),
            digest: desc.digest().to_string(),
            reference: format!("ostree-unverified-image:oci:{}:{tag}", self.oci_dir.display()),
        })
    }
}

/// Later versions get later build times, so upgrades are not downgrades:
/// one minute apart, which leaves room for the torture's hundreds of
/// versions (days would wrap within a month).
pub fn created_for(version: &str) -> String {
    let n: u32 = version.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().unwrap_or(0);
    assert!(n < 28 * 24 * 60, "version {version} is too high for January");
    format!("2026-01-{:02}T{:02}:{:02}:00Z", n / (24 * 60) + 1, n / 60 % 24, n % 60)
}

fn write_tree(
    root: &Path,
    version: &str,
    components: &[String],
    changed: &[&str],
    size_of: &dyn Fn(&str) -> usize,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let w = |rel: &str, content: &[u8]| -> Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, content).with_context(|| p.display().to_string())
    };
    w(&format!("usr/lib/modules/{KVER}/vmlinuz"), format!("fixture kernel {KVER}\n").as_bytes())?;
    w(&format!("usr/lib/modules/{KVER}/initramfs.img"), b"fixture initramfs\n")?;
    w("usr/lib/os-release", format!("ID=hostd-fixture\nVERSION_ID={version}\n").as_bytes())?;
    w("usr/etc/hostd-fixture.conf", b"setting=default\n")?;
    for comp in components {
        let tag = if changed.contains(&comp.as_str()) { version } else { "v1" };
        let data = payload(&format!("{comp}-{tag}"), size_of(comp));
        w(&format!("usr/share/hostd-fixture/{comp}/data"), &data)?;
    }
    for (rel, content) in extra {
        w(rel, content.as_bytes())?;
    }
    for d in ["etc", "var", "boot", "sysroot", "run", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::remove_dir(root.join("etc"))?;
    Ok(())
}

/// `size` incompressible bytes determined by `seed`, so layer sizes on the
/// wire are what the test asked for and equal seeds give equal layers.
pub fn payload(seed: &str, size: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    data.truncate(size);
    data
}

/// Map every content object to the component directory it lives in.
fn object_meta(repo: &ostree::Repo, rev: &str, components: &[String]) -> Result<ObjectMeta> {
    let (root, _) = repo.read_commit(rev, gio::Cancellable::NONE)?;
    let mut meta = ObjectMeta::default();
    for comp in components.iter().map(String::as_str).chain(["other"]) {
        let id: std::rc::Rc<str> = comp.into();
        meta.set.insert(ObjectSourceMeta {
            identifier: id.clone(),
            name: id.clone(),
            srcid: id,
            change_time_offset: 1,
            change_frequency: 1,
        });
    }
    walk(&root, "", components, &mut meta)?;
    Ok(meta)
}

fn walk(dir: &gio::File, prefix: &str, components: &[String], meta: &mut ObjectMeta) -> Result<()> {
    let children = dir.enumerate_children(
        "standard::name,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    for info in children {
        let info = info?;
        let name = info.name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        let child = dir.child(&name);
        if info.file_type() == gio::FileType::Directory {
            walk(&child, &path, components, meta)?;
            continue;
        }
        let repo_file = child.downcast::<ostree::RepoFile>().expect("repo file");
        let checksum = repo_file.checksum().to_string();
        let owner = components
            .iter()
            .map(String::as_str)
            .find(|c| path.starts_with(&format!("/usr/share/hostd-fixture/{c}/")))
            .unwrap_or("other");
        meta.map.insert(checksum, owner.into());
    }
    Ok(())
}

/// Write a plain container image (not an ostree/bootc one) into a new OCI
/// layout at `dir`, tagged `tag`: one tar layer with a small root file
/// system, the way `FROM scratch` + `COPY rootfs /` would make it. Returns
/// `<dir>:<tag>`.
pub fn plain_image(dir: &Path, tag: &str) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let root = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())?;
    let oci = OciDir::ensure(&root)?;
    let mut manifest = ocidir::new_empty_manifest().build()?;
    let mut config = ImageConfiguration::default();
    let mut layer = oci.create_layer(None)?;
    let files: [(&str, &[u8]); 3] = [
        ("usr/bin/hello", b"#!/bin/sh\necho hello\n"),
        ("etc/os-release", b"ID=plain\nNAME=\"Plain image\"\n"),
        ("usr/lib/os-release", b"ID=plain\nNAME=\"Plain image\"\n"),
    ];
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        layer.append_data(&mut header, path, content)?;
    }
    let layer = layer.into_inner()?.complete()?;
    oci.push_layer(&mut manifest, &mut config, layer, "plain root file system", None);
    oci.insert_manifest_and_config(manifest, config, Some(tag), Platform::default())?;
    Ok(format!("{}:{tag}", dir.display()))
}
