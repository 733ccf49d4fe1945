//! `make demo` on a machine that is not an image-based host: the main job of
//! hostd, end to end, on a throwaway host. v1 of a fixture image is
//! installed into a tmpfs sysroot, hostd serves it on a private system bus
//! with polkitd, and an administrator (in `wheel`, which the project's
//! example polkit rules grant every action) runs `hostctl` as on a real
//! host: status, a check that finds v2 once it is published, the upgrade
//! with its progress lines, status with both deployments, a rollback and
//! status again. Everything is torn down at the end, also on failure.
//!
//! `hostctl`'s output goes straight to the demo's (a progress bar on a
//! terminal, plain lines when stderr is a pipe). An `upgrade --check` that
//! finds an update exits 0 (bootc's contract) or 100 (the distinct code);
//! the demo accepts both.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{ExitCode, Stdio};

use anyhow::{ensure, Context, Result};
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::{TestMachine, ADMIN};
use hostd_tests::repo_root;
use hostd_tests::sysroot::TestSysroot;

/// The data layer's size: large enough for the pull to report progress.
const DATA_BYTES: usize = 16 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<()> {
    let sysroot = TestSysroot::new("512m")?;
    let mut builder = ImageBuilder::new(&sysroot.dir.path().join("images"))?;
    builder.sizes.insert("data", DATA_BYTES);
    say(&format!("A throwaway host: an ostree sysroot on a tmpfs at {}", sysroot.path().display()));
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await?;
    sysroot.deploy_image(&v1.reference).await?;
    say(&format!("Installed v1 of oci:{} ({})", builder.oci_name(), v1.digest));

    let machine = TestMachine::start(sysroot.path(), "")?;
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules"))?;
    machine.add_polkit_rule("50-hostd.rules", &rules)?;
    say(&format!(
        "hostd serves it on a private system bus with polkitd; {} is in wheel, which the example \
         polkit rules let do everything",
        ADMIN.0
    ));

    hostctl(&machine, &["status", "--format", "humanreadable"], &[0])?;

    let v2 = builder.build("v2", &["data", "tools"], &BTreeMap::new()).await?;
    say(&format!("v2 is published under the same tag ({}): its data and tools layers changed", v2.digest));
    hostctl(&machine, &["upgrade", "--check"], &[0])?;

    hostctl(&machine, &["upgrade"], &[0])?;
    hostctl(&machine, &["status", "--format", "humanreadable"], &[0])?;

    say("Back to v1: rollback makes the previous deployment the default (a second one undoes it)");
    hostctl(&machine, &["rollback"], &[0])?;
    hostctl(&machine, &["status", "--format", "humanreadable"], &[0])?;

    say("Cleaning up: hostd, polkitd, the bus, the tmpfs sysroot");
    drop(machine);
    drop(builder);
    drop(sysroot);
    say("Done.");
    Ok(())
}

/// A heading between the commands.
fn say(text: &str) {
    println!("\n== {text}");
}

/// Run `hostctl ARGS` as the administrator, its output going where the
/// demo's goes; fail unless it exits with one of `codes`.
fn hostctl(machine: &TestMachine, args: &[&str], codes: &[i32]) -> Result<()> {
    println!("\n$ hostctl {}", args.join(" "));
    std::io::stdout().flush()?;
    let status = machine
        .command(hostd_tests::binary("hostctl"), Some(ADMIN.1))
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("running hostctl")?;
    ensure!(codes.contains(&status.code().unwrap_or(-1)), "hostctl {} exited {status}", args.join(" "));
    Ok(())
}
