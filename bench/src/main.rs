//! `make bench`: hostd measured side by side with the work it wraps
//! (ostree-ext called directly, `skopeo copy`, `ostree admin status`) on
//! tmpfs sysroots, with a private bus and a real polkitd, as in the
//! integration tests. Prints `name value unit` per figure as it is
//! measured, then a summary with median, min and max. `--smoke` runs every
//! scenario once on tiny images (a test in `make test` does that);
//! `--timeline` prints hostd's debug log of one upgrade of the main image,
//! whose timestamps show where its time goes; `--derived` measures only
//! `derived_switch_bytes_ratio` on the main image.

mod check;
mod derived;
mod figures;
mod host;
mod images;
mod pull;
mod status;

use std::time::Instant;

use anyhow::{bail, Result};

use figures::Report;
use images::{ImageSet, Shape};

/// How much to measure.
struct Plan {
    /// The image of figures 1–4, 6 and 8.
    main: Shape,
    /// Rounds of hostd, ostree-ext and skopeo pulling the main image.
    pull_rounds: usize,
    /// Repetitions of the other pulls and checks.
    runs: usize,
    /// Calls per kind for the latency percentiles.
    status_calls: usize,
    /// Concurrent `Status` callers during a pull.
    callers: usize,
    /// Rows of the scaling table; the largest also gives its peak memory.
    scaling: Vec<Shape>,
    scaling_runs: usize,
}

impl Plan {
    fn full() -> Plan {
        let shape = |payload_mib, layers| Shape { payload_mib, layers };
        Plan {
            main: shape(200, 9),
            pull_rounds: 15,
            runs: 3,
            status_calls: 200,
            callers: 50,
            scaling: vec![shape(50, 9), shape(200, 9), shape(800, 9), shape(1024, 9), shape(200, 1), shape(200, 40)],
            scaling_runs: 2,
        }
    }

    fn smoke() -> Plan {
        let tiny = Shape { payload_mib: 2, layers: 9 };
        Plan { main: tiny, pull_rounds: 1, runs: 1, status_calls: 3, callers: 2, scaling: vec![tiny], scaling_runs: 1 }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !nix::unistd::geteuid().is_root() {
        bail!("hostd-bench mounts tmpfs sysroots: run it as root");
    }
    hostd_tests::mutable_deployments();
    let plan = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Plan::full(),
        ["--smoke"] => Plan::smoke(),
        ["--timeline"] => return pull::timeline(&ImageSet::get(Plan::full().main)?).await,
        ["--derived"] => {
            let mut report = Report::default();
            derived::derived_switch(&ImageSet::get(Plan::full().main)?, Plan::full().runs, &mut report).await?;
            print!("{}", report.summary());
            return Ok(());
        }
        _ => {
            eprintln!("usage: hostd-bench [--smoke | --timeline | --derived]");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut report = Report::default();
    let main_set = ImageSet::get(plan.main)?;
    pull::overhead(&main_set, plan.pull_rounds, &mut report).await?;
    pull::incremental(&main_set, plan.runs, &mut report).await?;
    derived::derived_switch(&main_set, plan.runs, &mut report).await?;
    status::latency(&main_set, plan.status_calls, &mut report).await?;
    status::cold(&main_set, plan.runs.max(5), &mut report).await?;
    status::during_pull(&main_set, plan.callers, &mut report).await?;
    check::check(&main_set, plan.runs.max(5), &mut report).await?;
    pull::scaling(&plan.scaling, plan.scaling_runs, &mut report).await?;
    print!("{}", report.summary());
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
