//! Logically bound images in tests: a small application image that runs
//! (the host's `true` with the libraries it links), built into an OCI
//! layout, and the quadlet files and `bound-images.d` links an OS image
//! binds it with.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ocidir::{cap_std, OciDir};
use ostree_ext::oci_spec::image::{ImageConfiguration, Platform};

use crate::run;

/// Where an OS image links the quadlet files it binds.
pub const BOUND_IMAGES_DIR: &str = "usr/lib/bootc/bound-images.d";
/// Where the quadlet files live in the tests' OS images.
pub const QUADLET_DIR: &str = "usr/share/containers/systemd";

/// The program the application image runs.
pub const APP_PROGRAM: &str = "/usr/bin/true";

/// Build the application image into the OCI layout `dir` (created), tagged
/// `tag`: `/usr/bin/true`, the libraries and loader `ldd` names for it, and
/// `/app-version` holding `tag`, so that images of different tags differ.
/// Returns the layout's `oci:` name (`<dir>:<tag>`).
pub fn app_image(dir: &Path, tag: &str) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let cap = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())?;
    let oci = OciDir::ensure(&cap)?;
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![(APP_PROGRAM.trim_start_matches('/').into(), std::fs::read(APP_PROGRAM)?, 0o755)];
    for lib in linked_libraries(APP_PROGRAM)? {
        let content = std::fs::read(std::fs::canonicalize(&lib)?)?;
        files.push((lib.to_string_lossy().trim_start_matches('/').to_string(), content, 0o755));
    }
    files.push(("app-version".into(), format!("{tag}\n").into_bytes(), 0o644));
    let mut layer = oci.create_layer(None)?;
    for (path, content, mode) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        layer.append_data(&mut header, path, content.as_slice())?;
    }
    let layer = layer.into_inner()?.complete()?;
    let mut manifest = ocidir::new_empty_manifest().build()?;
    let mut config = ImageConfiguration::default();
    config.set_architecture(ostree_ext::oci_spec::image::Arch::Amd64);
    config.set_os(ostree_ext::oci_spec::image::Os::Linux);
    oci.push_layer(&mut manifest, &mut config, layer, &format!("bound application image {tag}"), None);
    oci.insert_manifest_and_config(manifest, config, Some(tag), Platform::default())?;
    Ok(format!("{}:{tag}", dir.display()))
}

/// The shared libraries and the loader of `program`, as `ldd` names them.
fn linked_libraries(program: &str) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(program))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    anyhow::ensure!(!libs.is_empty(), "ldd named no libraries for {program}: {out}");
    Ok(libs)
}

/// A quadlet `.image` file binding `image`, with `AuthFile=` when given.
pub fn image_file(image: &str, auth_file: Option<&str>) -> String {
    let auth = auth_file.map(|a| format!("AuthFile={a}\n")).unwrap_or_default();
    format!("[Unit]\nDescription=the bound application image\n\n[Image]\nImage={image}\n{auth}")
}

/// A quadlet `.container` file running `image`.
pub fn container_file(image: &str) -> String {
    format!(
        "[Container]\nImage={image}\nExec={APP_PROGRAM}\nGlobalArgs=--storage-opt=additionalimagestore=/usr/lib/bootc/storage\n"
    )
}

/// The path of quadlet file `name` and of its link in `bound-images.d`,
/// with the link's (absolute) target, as an image binds it.
pub fn binding(name: &str) -> (String, String, String) {
    let file = format!("{QUADLET_DIR}/{name}");
    (file.clone(), format!("{BOUND_IMAGES_DIR}/{name}"), format!("/{file}"))
}

/// The names of the images in the bound-image store at `root` (e.g.
/// `<sysroot>/ostree/bootc/storage`), sorted, from containers-storage's
/// image list; running podman on the store would record the test's paths
/// in it.
pub fn stored_names(root: &Path) -> Result<Vec<String>> {
    let path = root.join("overlay-images/images.json");
    let images: Vec<serde_json::Value> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let mut names: Vec<String> = images
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}
