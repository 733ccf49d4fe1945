//! `hostctl upgrade --check` against a registry on 127.0.0.1: with nothing
//! new, and with a newer image.

use anyhow::Result;
use hostd_tests::registry::TestRegistry;

use crate::figures::{ms, Report};
use crate::host;
use crate::images::ImageSet;

/// hostctl's exit code when an update is available.
const UPDATE_AVAILABLE: i32 = 100;

/// Figure 8, `runs` times each.
pub async fn check(set: &ImageSet, runs: usize, report: &mut Report) -> Result<()> {
    let registry = TestRegistry::start()?;
    registry.push(&set.oci_name("v2"), "bench/os:stable")?;
    let sysroot = host::sysroot(set, "v2", "v2").await?;
    let machine = host::machine(&sysroot)?;
    machine.trust_registry(&registry.host())?;
    let image = format!("{}/bench/os:stable", registry.host());
    host::hostctl(&machine, &["switch", "--quiet", "--transport", "registry", &image])?;

    let mut unchanged = vec![];
    for _ in 0..runs {
        unchanged.push(ms(host::hostctl_timed(&machine, &["upgrade", "--check", "--exit-code", "--quiet"], &[])?));
    }
    registry.push(&set.oci_name("v3"), "bench/os:stable")?;
    let mut newer = vec![];
    for _ in 0..runs {
        newer.push(ms(host::hostctl_timed(&machine, &["upgrade", "--check", "--exit-code", "--quiet"], &[UPDATE_AVAILABLE])?));
    }
    report.record("check_unchanged_ms", "ms", unchanged, None);
    report.record("check_newer_ms", "ms", newer, None);
    Ok(())
}
