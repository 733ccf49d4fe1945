//! The images measured, built with the test fixtures' builder and kept in
//! the test cache (`/var/cache/hostd-tests`, or `HOSTD_TEST_CACHE`) keyed
//! by their shape, so only the first `make bench` pays for building them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hostd_tests::booted::cache;
use hostd_tests::fixture::{payload, ImageBuilder};
use hostd_tests::registry::oci_layer_digests;

/// Bump when the way images are built changes, so cached ones are rebuilt.
const RECIPE: &str = "bench-images-2";

/// What an image set looks like: v2's payload and layer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub payload_mib: usize,
    pub layers: u32,
}

impl Shape {
    /// A tmpfs big enough for a sysroot holding v1, v2 and v3.
    pub fn sysroot_size(self) -> String {
        format!("{}m", self.payload_mib * 3 + 128)
    }
}

/// `v1` (tiny payloads; deployed first), `v2` (the payload spread over the
/// layers, no layer shared with v1) and `v3` (v2 plus one derived layer the
/// size of one component), in one `oci:` directory tagged by version.
pub struct ImageSet {
    pub shape: Shape,
    pub oci_dir: PathBuf,
}

impl ImageSet {
    /// The set of `shape`, built unless cached.
    pub fn get(shape: Shape) -> Result<ImageSet> {
        let kind = format!("bench-{}m-{}l", shape.payload_mib, shape.layers);
        let key = cache::key(&[RECIPE.as_bytes(), kind.as_bytes()]);
        let dir = cache::product(&kind, &key, |dir| {
            let handle = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| handle.block_on(build(dir, shape)))
        })?;
        Ok(ImageSet { shape, oci_dir: dir.join("oci") })
    }

    /// What a deployment tracking this set follows.
    pub fn reference(&self) -> String {
        format!("ostree-unverified-image:oci:{}:latest", self.oci_dir.display())
    }

    /// `<dir>:<tag>` for skopeo and the registry.
    pub fn oci_name(&self, tag: &str) -> String {
        format!("{}:{tag}", self.oci_dir.display())
    }

    /// Make `latest` (what deployments track) name version `tag`.
    pub fn point_latest_at(&self, tag: &str) -> Result<()> {
        let digest = manifest_digest(&self.oci_dir, tag)?;
        set_tag(&self.oci_dir, &digest, "latest")
    }

    /// Compressed sizes of the layers of `tag`, by digest.
    pub fn layer_sizes(&self, tag: &str) -> Result<BTreeMap<String, u64>> {
        let mut sizes = BTreeMap::new();
        for digest in oci_layer_digests(&self.oci_dir, tag)? {
            let blob = self.oci_dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
            sizes.insert(digest, std::fs::metadata(&blob).with_context(|| blob.display().to_string())?.len());
        }
        Ok(sizes)
    }
}

async fn build(dir: &Path, shape: Shape) -> Result<()> {
    let mut builder = ImageBuilder::new(&dir.join("build"))?;
    builder.oci_dir = dir.join("oci");
    // ostree-ext adds a layer of its own (the commit) to the content
    // chunks; a one-layer image is an unchunked one.
    let (components, chunks) = match shape.layers {
        1 => (1, 1),
        n => (n as usize - 2, n - 1),
    };
    builder.components = (0..components).map(|i| format!("c{i:02}")).collect();
    builder.layers = Some(chunks);
    let none = BTreeMap::new();

    builder.component_size = 4096;
    let v1 = builder.build("v1", &[], &none).await?;
    set_tag(&builder.oci_dir, &v1.digest, "v1")?;

    // Same seeds as v1, other sizes: every layer differs from v1's.
    let component_size = (shape.payload_mib << 20) / components;
    builder.component_size = component_size;
    let v2 = builder.build("v2", &[], &none).await?;
    set_tag(&builder.oci_dir, &v2.digest, "v2")?;

    let update = payload("update-v3", component_size);
    let v3 = builder.derive(&v2, "v3", &[("usr/share/hostd-bench/update", update)])?;
    set_tag(&builder.oci_dir, &v3.digest, "v3")?;
    std::fs::remove_dir_all(dir.join("build"))?;
    Ok(())
}

const TAG: &str = "org.opencontainers.image.ref.name";

fn read_index(oci_dir: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_slice(&std::fs::read(oci_dir.join("index.json"))?)?)
}

fn manifest_digest(oci_dir: &Path, tag: &str) -> Result<String> {
    let index = read_index(oci_dir)?;
    let entries = index["manifests"].as_array().context("index.json has no manifests")?;
    let entry = entries.iter().find(|m| m["annotations"][TAG] == tag).with_context(|| format!("no manifest tagged {tag}"))?;
    Ok(entry["digest"].as_str().context("manifest without digest")?.to_string())
}

/// Tag the manifest `digest` as `tag` in `index.json` (the tag moves if it
/// named another manifest). The manifest blob is untouched, so its digest,
/// which hostd reports, stays the same.
fn set_tag(oci_dir: &Path, digest: &str, tag: &str) -> Result<()> {
    let mut index = read_index(oci_dir)?;
    let entries = index["manifests"].as_array_mut().context("index.json has no manifests")?;
    let mut entry = entries.iter().find(|m| m["digest"] == digest).context("no such manifest")?.clone();
    entries.retain(|m| m["annotations"][TAG] != tag);
    entry["annotations"] = serde_json::json!({ TAG: tag });
    entries.push(entry);
    let temp = oci_dir.join("index.json.new");
    std::fs::write(&temp, serde_json::to_vec(&index)?)?;
    std::fs::rename(&temp, oci_dir.join("index.json"))?;
    Ok(())
}
