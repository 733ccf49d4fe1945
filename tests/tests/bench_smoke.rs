//! The benchmark program of `make bench` (bench/) in its smoke variant:
//! every scenario once, on tiny images, so it keeps working between
//! benchmark runs. Figures must be printed as `name value unit` with
//! finite values; the ones that are properties rather than speeds (an
//! update of one layer fetches exactly that layer; a podman-built image on
//! the deployed base fetches only its own layers) are checked too.

use std::process::Command;

use hostd_tests::binary;

/// Every figure `make bench` reports (names ending in `_` are prefixes).
const FIGURES: &[&str] = &[
    "pull_overhead_ratio",
    "pull_vs_copy_ratio",
    "pull_cpu_ratio",
    "incremental_bytes_ratio",
    "incremental_pull_s",
    "derived_switch_bytes_ratio",
    "status_p50_ms",
    "status_p99_ms",
    "status_dbus_p50_ms",
    "status_dbus_p99_ms",
    "ostree_admin_status_p50_ms",
    "status_vs_ostree_admin_ratio",
    "status_cold_ms",
    "status_p99_during_pull_ms",
    "rss_idle_mb",
    "rss_peak_pull_",
    "check_unchanged_ms",
    "check_newer_ms",
];

/// The value of the first figure line whose name is (or starts with) `name`.
fn figure(output: &str, name: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (figure, value, _unit) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = if name.ends_with('_') { figure.starts_with(name) } else { figure == name };
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn the_benchmark_smoke_run_prints_every_figure() {
    let out = Command::new(binary("hostd-bench")).arg("--smoke").output().expect("hostd-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hostd-bench --smoke failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for name in FIGURES {
        let value = figure(&stdout, name).unwrap_or_else(|| panic!("no figure {name}:\n{stdout}"));
        assert!(value.is_finite() && value >= 0.0, "{name} = {value}");
    }
    assert_eq!(figure(&stdout, "incremental_bytes_ratio"), Some(1.0), "an update adding one layer fetches that layer only");
    let derived = figure(&stdout, "derived_switch_bytes_ratio").unwrap();
    assert!(derived <= 1.01, "a podman-built image on the deployed base fetches its own layers only: {derived}");
    assert!(stdout.contains("payload_MiB  layers  pull_s"), "the scaling table:\n{stdout}");
}
