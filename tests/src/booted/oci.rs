//! Tags of an OCI layout directory, and cheap private copies of one.
//!
//! A tag is an entry of `index.json`; moving it to another manifest is what
//! "pushing a new version under the same tag" amounts to for the `oci`
//! transport, and needs no blob to be written again.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The annotation holding a manifest's tag in `index.json`.
const TAG_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The manifest digest (`sha256:…`) tagged `tag`.
pub fn tagged_digest(oci_dir: &Path, tag: &str) -> Result<String> {
    let index = read_index(oci_dir)?;
    let descriptor = tagged(&index, tag).with_context(|| format!("no tag {tag} in {}", oci_dir.display()))?;
    Ok(descriptor["digest"].as_str().context("descriptor without digest")?.to_string())
}

/// Point tag `to` at the manifest tagged `from`.
pub fn retag(oci_dir: &Path, from: &str, to: &str) -> Result<()> {
    let mut index = read_index(oci_dir)?;
    let mut descriptor =
        tagged(&index, from).with_context(|| format!("no tag {from} in {}", oci_dir.display()))?.clone();
    descriptor["annotations"][TAG_ANNOTATION] = Value::from(to);
    let manifests = index["manifests"].as_array_mut().context("index.json without manifests")?;
    manifests.retain(|d| d["annotations"][TAG_ANNOTATION] != to);
    manifests.push(descriptor);
    // Readers (a pull in progress) see the old or the new index, never half.
    let tmp = oci_dir.join(".index.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&index)?)?;
    std::fs::rename(&tmp, oci_dir.join("index.json"))?;
    Ok(())
}

/// Copy the layout `src` to `dest` (which must not exist): the index is
/// copied, so tags can move independently; blobs, which are never written
/// again once complete, are hard links when both are on one file system.
pub fn copy_layout(src: &Path, dest: &Path) -> Result<()> {
    let blobs = Path::new("blobs/sha256");
    std::fs::create_dir_all(dest.join(blobs))?;
    for file in ["oci-layout", "index.json"] {
        std::fs::copy(src.join(file), dest.join(file)).with_context(|| format!("copying {file}"))?;
    }
    for entry in std::fs::read_dir(src.join(blobs))? {
        let entry = entry?;
        let target = dest.join(blobs).join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn read_index(oci_dir: &Path) -> Result<Value> {
    let path = oci_dir.join("index.json");
    serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("parsing {}", path.display()))
}

fn tagged<'a>(index: &'a Value, tag: &str) -> Option<&'a Value> {
    index["manifests"].as_array()?.iter().find(|d| d["annotations"][TAG_ANNOTATION] == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retag_moves_a_tag_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": "sha256:aa", "annotations": {TAG_ANNOTATION: "v1"}},
                {"digest": "sha256:bb", "annotations": {TAG_ANNOTATION: "v2"}},
            ]
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        retag(dir.path(), "v1", "stable").unwrap();
        assert_eq!(tagged_digest(dir.path(), "stable").unwrap(), "sha256:aa");
        retag(dir.path(), "v2", "stable").unwrap();
        assert_eq!(tagged_digest(dir.path(), "stable").unwrap(), "sha256:bb");
        assert_eq!(tagged_digest(dir.path(), "v1").unwrap(), "sha256:aa");
        assert_eq!(read_index(dir.path()).unwrap()["manifests"].as_array().unwrap().len(), 3);
    }
}
