//! Content of an image that the host does not deploy.
//!
//! ostree-ext imports a derived layer's files below `/usr` and `/etc`
//! (as `/usr/etc`), moves `/var` aside, and drops every other top-level
//! directory (`/opt`, `/srv`, `/home`, …) and what is below `/run`, `/tmp`,
//! `/proc`, `/sys` and `/dev`. It records what it dropped, per layer, in the
//! metadata of the image's merged commit (`ostree.tar-filtered`, type
//! `a{sa{su}}`: layer digest → path → entries). [`left_out`] reads that
//! record back, so a job can tell the user instead of deploying silently
//! without it.

use std::collections::BTreeMap;

use anyhow::Context;
use ostree_ext::container::store::{MetaFilteredData, META_FILTERED};
use ostree_ext::{glib, ostree};

/// What ostree-ext left out of an image, summed over its layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// The path as ostree-ext records it (the top-level directory, e.g.
    /// `opt`; below `/run`, `/tmp`, `/proc`, `/sys`, `/dev`, the entry
    /// under it) → tar entries left out under it.
    pub paths: BTreeMap<String, u32>,
}

impl LeftOut {
    /// Sum the per-layer record of ostree-ext.
    pub fn from_layers(data: &MetaFilteredData) -> LeftOut {
        let mut paths = BTreeMap::new();
        for per_layer in data.values() {
            for (path, count) in per_layer {
                *paths.entry(path.clone()).or_insert(0u32) += count;
            }
        }
        LeftOut { paths }
    }

    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// `/opt (1 path), /srv (3 paths)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::with_capacity(self.paths.len());
        for (path, count) in &self.paths {
            let noun = if *count == 1 { "path" } else { "paths" };
            parts.push(format!("/{} ({count} {noun})", path.trim_start_matches('/')));
        }
        parts.join(", ")
    }

    /// The warning a job gives, or `None` when nothing was left out.
    pub fn warning(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        Some(format!(
            "The image has content outside /usr, /etc and /var that is not deployed: {}. \
             A bootc image may write below /usr and /etc, below /var only for the first deployment, \
             and elsewhere (such as /opt) only through symlinks into /usr or /var.",
            self.summary()
        ))
    }
}

/// What ostree-ext left out when it imported the image whose merged commit
/// is `commit`. A commit without the record (written by another tool, or
/// by an ostree-ext before 0.6) left nothing out that hostd can know of.
pub fn left_out(repo: &ostree::Repo, commit: &str) -> anyhow::Result<LeftOut> {
    let (commit_obj, _) = repo.load_commit(commit).with_context(|| format!("loading commit {commit}"))?;
    let meta = glib::VariantDict::new(Some(&commit_obj.child_value(0)));
    let data = meta
        .lookup::<MetaFilteredData>(META_FILTERED)
        .with_context(|| format!("reading {META_FILTERED} of commit {commit}"))?
        .unwrap_or_default();
    Ok(LeftOut::from_layers(&data))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ostree_ext::gio;
    use ostree_ext::glib::prelude::*;

    use super::*;

    fn layers(entries: &[(&str, &[(&str, u32)])]) -> MetaFilteredData {
        entries
            .iter()
            .map(|(digest, paths)| {
                (digest.to_string(), paths.iter().map(|(p, n)| (p.to_string(), *n)).collect::<HashMap<_, _>>())
            })
            .collect()
    }

    #[test]
    fn what_is_left_out_is_summed_over_layers_and_named() {
        let cases: &[(MetaFilteredData, Option<&str>)] = &[
            (MetaFilteredData::new(), None),
            (layers(&[("sha256:a", &[])]), None),
            (layers(&[("sha256:a", &[("opt", 1)])]), Some("/opt (1 path)")),
            (
                layers(&[("sha256:a", &[("opt", 2), ("srv", 1)]), ("sha256:b", &[("opt", 3)])]),
                Some("/opt (5 paths), /srv (1 path)"),
            ),
        ];
        for (data, summary) in cases {
            let left = LeftOut::from_layers(data);
            assert_eq!(left.is_empty(), summary.is_none(), "{data:?}");
            match summary {
                None => assert_eq!(left.warning(), None),
                Some(s) => {
                    assert_eq!(left.summary(), *s);
                    let warning = left.warning().unwrap();
                    assert!(warning.contains(&format!("not deployed: {s}.")), "{warning}");
                }
            }
        }
    }

    /// The record as ostree-ext writes it into a commit, read back.
    #[test]
    fn the_record_is_read_from_the_commit_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        let repo = ostree::Repo::new_for_path(dir.path().join("repo"));
        repo.create(ostree::RepoMode::BareUser, gio::Cancellable::NONE).unwrap();
        let commit_with = |metadata: Option<glib::Variant>| {
            repo.prepare_transaction(gio::Cancellable::NONE).unwrap();
            let mtree = ostree::MutableTree::new();
            let tree = gio::File::for_path(dir.path().join("tree"));
            repo.write_directory_to_mtree(&tree, &mtree, None, gio::Cancellable::NONE).unwrap();
            let root = repo.write_mtree(&mtree, gio::Cancellable::NONE).unwrap();
            let root = root.downcast::<ostree::RepoFile>().unwrap();
            let commit = repo
                .write_commit(None, None, None, metadata.as_ref(), &root, gio::Cancellable::NONE)
                .unwrap();
            repo.commit_transaction(gio::Cancellable::NONE).unwrap();
            commit.to_string()
        };
        let data = layers(&[("sha256:a", &[("opt", 1)])]);
        let metadata = HashMap::from([(META_FILTERED, data.to_variant())]).to_variant();
        let with = commit_with(Some(metadata));
        assert_eq!(left_out(&repo, &with).unwrap(), LeftOut::from_layers(&data));
        let without = commit_with(None);
        assert!(left_out(&repo, &without).unwrap().is_empty());
    }
}
