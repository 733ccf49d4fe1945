//! Layers already imported, found by their content rather than by their
//! compressed digest.
//!
//! ostree-ext keeps each imported layer as an ostree commit under a ref
//! named by the layer's compressed digest (`ostree/container/blob/<digest>`)
//! and asks only for layers without such a ref. An image rebuilt on the same
//! base by podman or buildah carries the base's layers re-compressed: other
//! compressed digests, the same uncompressed ones (the config's
//! `rootfs.diff_ids`). Before an import, each layer still to fetch whose
//! uncompressed digest is that of a layer of an image a deployment runs, in
//! the same role, gets a layer ref under its own compressed digest pointing
//! at the existing commit, and is not fetched.
//!
//! Trust: a diff_id is only what an image's config claims. ostree-ext
//! imports a layer by its compressed digest and never checks the
//! uncompressed stream against the config's diff_id, so any image that ever
//! reached the repository (a third-party image tried once, a local path
//! others can write, an import that failed and left its layer refs) could
//! claim another image's diff_id for other content. Hence:
//! - Only the images of the sysroot's deployments (booted, staged,
//!   rollback, pinned, any other) are looked at, never images merely stored.
//!   Their layers are content the host already runs as root, deployed by
//!   someone allowed to choose it: reusing one cannot bring in content that
//!   was not already deployed.
//! - Nothing is reused for an image whose signatures are enforced
//!   ([`Signatures::Enforced`], the containers policy requires a signature
//!   for it). A signature vouches for the manifest's layers by compressed
//!   digest; a reused layer would be content it does not cover, so every
//!   layer is fetched and checked against its digest.
//!
//! Why a match is then the same layer:
//! - Given a diff_id that is true, the commit ostree-ext writes for a layer
//!   is a function of the layer's uncompressed tar stream, and of the role
//!   the layer has in its image:
//!   the ostree commit layer (first), a content chunk (up to the layer named
//!   by the `ostree.final-diffid` label), or a derived layer (after it),
//!   as ostree-ext's `parse_manifest_layout` assigns them. Roles are
//!   matched. A derived layer's commit also depends on the base commit (its
//!   SELinux policy labels the files, and whether the root is transient
//!   decides what outside `/usr` is kept), so derived layers are reused only
//!   from a deployed image with the same base commit. Where a deployed
//!   image's diff_id was false, the new image gets what that deployment
//!   already runs, never anything else.
//! - ostree-ext prunes a layer ref when no stored image's or deployment's
//!   manifest lists its digest (`gc_image_layers`), and ostree prunes a commit
//!   only when no ref or deployment reaches it. A ref written here is listed
//!   by the new image's manifest once it is imported, so it lives as long as
//!   the image; if the import fails, the next pruning removes it, and the
//!   commit it points to stays as long as the layer ref it was found by.

use std::collections::HashMap;

use anyhow::Context;
use ostree_ext::container::store::{self, ManifestLayerState, PreparedImport};
use ostree_ext::container::DIFFID_LABEL;
use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};
use ostree_ext::{gio, ostree};

use super::pull::Signatures;
use super::Error;

/// The ref prefix of ostree-ext's layer refs (`LAYER_PREFIX` of its store).
const LAYER_PREFIX: &str = "ostree/container/blob";

/// What a layer is to the image it is in (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// The first layer: the ostree commit.
    Commit,
    /// A content chunk of the ostree commit.
    Chunk,
    /// A layer added on top (a Containerfile's `RUN`, `COPY`).
    Derived,
}

/// The role of each of `manifest`'s layers, in order; `None` where the image
/// is not ostree-encapsulated (no `ostree.final-diffid` label).
fn roles(manifest: &ImageManifest, config: &ImageConfiguration) -> Option<Vec<Role>> {
    let diff_ids = config.rootfs().diff_ids();
    let labels = config.config().as_ref()?.labels().as_ref()?;
    let last_chunk = diff_ids.iter().position(|d| Some(d) == labels.get(DIFFID_LABEL))?;
    let roles = (0..manifest.layers().len())
        .map(|i| match i {
            0 => Role::Commit,
            i if i <= last_chunk => Role::Chunk,
            _ => Role::Derived,
        })
        .collect();
    Some(roles)
}

/// A layer commit found for an uncompressed digest.
#[derive(Debug, Clone)]
struct Known {
    /// The layer's commit.
    commit: String,
    /// The base commit of the image it was found in.
    base_commit: String,
}

/// Layer commits of the images the deployments run (`deployed`: their
/// commit checksums), by role and uncompressed digest.
fn deployed_layers(repo: &ostree::Repo, deployed: &[String]) -> anyhow::Result<HashMap<(Role, String), Vec<Known>>> {
    let mut found: HashMap<(Role, String), Vec<Known>> = HashMap::new();
    for commit in deployed {
        // A deployment not from an image, or whose metadata cannot be
        // read, offers nothing to reuse.
        let Ok(state) = store::query_image_commit(repo, commit) else { continue };
        let Some(roles) = roles(&state.manifest, &state.configuration) else { continue };
        let diff_ids = state.configuration.rootfs().diff_ids();
        for ((layer, diff_id), role) in state.manifest.layers().iter().zip(diff_ids).zip(roles) {
            let layer_ref = ostree_ext::refescape::prefix_escape_for_ref(LAYER_PREFIX, layer.digest().as_ref())?;
            let Some(commit) = repo.resolve_rev(&layer_ref, true)? else { continue };
            let known = Known { commit: commit.to_string(), base_commit: state.base_commit.clone() };
            found.entry((role, diff_id.clone())).or_default().push(known);
        }
    }
    Ok(found)
}

/// Whether [`reuse`] records what it found in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Write the layer refs (an import follows).
    Refs,
    /// Only mark the layers as present in `prep` (a check's estimate).
    Nothing,
}

/// Whether layers may be reused for an image imported with `signatures`:
/// never where the containers policy must accept it, since its signature
/// covers only the layers by compressed digest (module documentation).
fn may_reuse(signatures: Signatures) -> bool {
    match signatures {
        Signatures::Enforced => false,
        Signatures::NotChecked => true,
    }
}

/// Mark each layer of `prep` still to fetch whose uncompressed digest is
/// that of a layer of the same role of an image a deployment runs
/// (`deployed`: the deployments' commit checksums; for a derived layer, an
/// image on the same base commit) as present, with that layer's commit;
/// with [`Record::Refs`] also point its layer ref there. Nothing is reused
/// for an image with [`Signatures::Enforced`]. Returns the number of layers
/// and compressed bytes that no longer need fetching.
pub fn reuse(
    repo: &ostree::Repo,
    deployed: &[String],
    signatures: Signatures,
    prep: &mut PreparedImport,
    record: Record,
) -> Result<(u32, u64), Error> {
    if !may_reuse(signatures) {
        return Ok((0, 0));
    }
    reuse_inner(repo, deployed, prep, record).context("looking for deployed layers with the same content").map_err(Error::Other)
}

fn reuse_inner(repo: &ostree::Repo, deployed: &[String], prep: &mut PreparedImport, record: Record) -> anyhow::Result<(u32, u64)> {
    let missing = prep.all_layers().filter(|l| l.commit.is_none()).count();
    if missing == 0 {
        return Ok((0, 0));
    }
    let Some(roles) = roles(&prep.manifest, &prep.config) else { return Ok((0, 0)) };
    let known = deployed_layers(repo, deployed)?;
    if known.is_empty() {
        return Ok((0, 0));
    }
    let diff_ids = prep.config.rootfs().diff_ids().clone();
    let layers = prep.manifest.layers().clone();
    // The diff_id and role of a layer, by its place in the manifest.
    let identity = |state: &ManifestLayerState| {
        let i = layers.iter().position(|l| l.digest() == state.layer().digest())?;
        Some((roles.get(i).copied()?, diff_ids.get(i)?.clone()))
    };
    let mut found = Vec::new();
    let mut lookup = |state: &mut ManifestLayerState, base: Option<&str>| {
        if state.commit.is_some() {
            return;
        }
        let Some(key) = identity(state) else { return };
        let candidates = known.get(&key).into_iter().flatten();
        let hit = candidates.into_iter().find(|k| key.0 != Role::Derived || Some(k.base_commit.as_str()) == base);
        if let Some(hit) = hit {
            state.commit = Some(hit.commit.clone());
            found.push((state.ostree_ref.clone(), hit.commit.clone(), state.layer().size()));
        }
    };
    lookup(&mut prep.ostree_commit_layer, None);
    for chunk in prep.ostree_layers.iter_mut() {
        lookup(chunk, None);
    }
    let base = prep.ostree_commit_layer.commit.clone();
    for derived in prep.layers.iter_mut() {
        lookup(derived, base.as_deref());
    }
    if record == Record::Refs {
        for (layer_ref, commit, _) in &found {
            repo.set_ref_immediate(None, layer_ref, Some(commit), gio::Cancellable::NONE)
                .with_context(|| format!("writing {layer_ref}"))?;
            tracing::info!("reusing the deployed layer commit {commit} for {layer_ref}: same uncompressed digest");
        }
    }
    Ok((found.len() as u32, found.iter().map(|(_, _, size)| *size).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:x}").repeat(64))
    }

    /// A manifest of four layers and a config whose `ostree.final-diffid`
    /// label names the diff_id of layer `last_chunk`, if any.
    fn image(last_chunk: Option<usize>) -> (ImageManifest, ImageConfiguration) {
        let layer = |n: u8| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(n), "size": 1});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(0), "size": 1},
            "layers": [layer(1), layer(2), layer(3), layer(4)],
        });
        let diff_ids: Vec<String> = (5..9).map(digest).collect();
        let labels = last_chunk.map(|i| serde_json::json!({DIFFID_LABEL: diff_ids[i]}));
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        });
        (serde_json::from_value(manifest).unwrap(), serde_json::from_value(config).unwrap())
    }

    #[test]
    fn roles_follow_ostree_ext_s_layout() {
        let (manifest, config) = image(Some(2));
        assert_eq!(roles(&manifest, &config), Some(vec![Role::Commit, Role::Chunk, Role::Chunk, Role::Derived]));
        let (manifest, config) = image(Some(0));
        assert_eq!(roles(&manifest, &config), Some(vec![Role::Commit, Role::Derived, Role::Derived, Role::Derived]));
        // Not ostree-encapsulated: nothing is reused for or from it.
        let (manifest, config) = image(None);
        assert_eq!(roles(&manifest, &config), None);
    }

    #[test]
    fn nothing_is_reused_for_an_image_whose_signature_is_enforced() {
        assert!(!may_reuse(Signatures::Enforced));
        assert!(may_reuse(Signatures::NotChecked));
    }

    #[test]
    fn layer_refs_are_named_as_ostree_ext_names_them() {
        // ostree-ext's own test vector for `ref_for_layer`.
        let digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let name = ostree_ext::refescape::prefix_escape_for_ref(LAYER_PREFIX, digest).unwrap();
        assert_eq!(name, "ostree/container/blob/sha256_3A_2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae");
    }
}
