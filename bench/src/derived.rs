//! `derived_switch_bytes_ratio`: switching to an image built with podman
//! `FROM` the deployed image and pushed to a registry. podman re-compresses
//! every base layer when it pushes, so their compressed digests are new;
//! only the layers with new content (uncompressed digests the host does not
//! have) should cross the network. Bytes the registry served for layers ÷
//! compressed bytes of those truly new layers; the goal is 1.00.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use hostd_tests::fixture::payload;
use hostd_tests::jobs::run_job;
use hostd_tests::podman::{Podman, BASE};
use hostd_tests::registry::{registry_layers, TestRegistry};
use zbus::zvariant::Variant;

use crate::figures::{Report, Target};
use crate::host;
use crate::images::ImageSet;

/// The uncompressed digests (`rootfs.diff_ids`) of the image `skopeo_ref`.
fn diff_ids(skopeo_ref: &str) -> Result<Vec<String>> {
    let raw = hostd_tests::run(Command::new("skopeo").args(["inspect", "--config", "--raw", "--tls-verify=false", skopeo_ref]))?;
    let config: serde_json::Value = serde_json::from_str(&raw)?;
    let ids = config["rootfs"]["diff_ids"].as_array().context("a config with diff_ids")?;
    Ok(ids.iter().filter_map(|d| d.as_str().map(String::from)).collect())
}

pub async fn derived_switch(set: &ImageSet, runs: usize, report: &mut Report) -> Result<()> {
    // v2 of the set is deployed; the derived image adds one layer the size
    // of one of its components, as a Containerfile `COPY` does.
    let podman = Podman::new()?;
    podman.load_oci(&set.oci_name("v2"), BASE)?;
    let size = (set.shape.payload_mib << 20) / set.shape.layers.max(1) as usize;
    let data = payload("derived-switch", size);
    let containerfile = format!("FROM {BASE}\nCOPY data /usr/share/bench-derived/data\nLABEL version=derived\n");
    podman.build("localhost/bench-derived:latest", &containerfile, &[("data", &data)])?;
    let registry = TestRegistry::start()?;
    let image = format!("{}/bench/derived:latest", registry.host());
    podman.push("localhost/bench-derived:latest", &image)?;

    let layers = registry_layers(&image)?;
    let pushed_ids = diff_ids(&format!("docker://{image}"))?;
    let base_ids: BTreeSet<String> = diff_ids(&format!("oci:{}", set.oci_name("v2")))?.into_iter().collect();
    let new_bytes: u64 = layers.iter().zip(&pushed_ids).filter(|(_, id)| !base_ids.contains(*id)).map(|(l, _)| l.1).sum();
    ensure!(new_bytes > 0, "the derived image has a new layer");
    let size_of: HashMap<&str, u64> = layers.iter().map(|(d, s)| (d.as_str(), *s)).collect();

    let mut ratio = vec![];
    for _ in 0..runs {
        let sysroot = host::sysroot(set, "v2", "v2").await?;
        let machine = host::machine(&sysroot)?;
        machine.trust_registry(&registry.host())?;
        let (conn, _) = machine.manager().await?;
        let served_before = registry.blob_fetches().len();
        let job = run_job(&conn, "Switch", &(image.as_str(), HashMap::<&str, Variant<'_>>::new()))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(job.state == "succeeded", "the switch to the derived image: {job:?}");
        let served: u64 = registry.blob_fetches()[served_before..].iter().filter_map(|d| size_of.get(d.as_str())).sum();
        ratio.push(served as f64 / new_bytes as f64);
    }
    report.record("derived_switch_bytes_ratio", "x", ratio, Some(Target::AtMost(1.01)));
    Ok(())
}
