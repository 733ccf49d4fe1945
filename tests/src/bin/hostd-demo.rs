//! `make demo` on a machine that is not an image-based host: a throwaway
//! tmpfs sysroot with two deployments of fixture images, a private system bus
//! with polkitd, hostd activated on it, and `hostctl status` (text and JSON)
//! as a user would run it. Everything is torn down at the end.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::TestMachine;
use hostd_tests::sysroot::TestSysroot;

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

async fn demo() -> anyhow::Result<()> {
    let sysroot = TestSysroot::new("512m")?;
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images"))?;
    println!("== building fixture images v1 and v2 into {}", builder.oci_dir.display());
    for version in ["v1", "v2"] {
        let image = builder.build(version, &["data"], &BTreeMap::new()).await?;
        sysroot.deploy_image(&image.reference).await?;
        println!("   deployed {version} ({})", image.digest);
    }
    let machine = TestMachine::start(sysroot.path(), "")?;
    for args in [&["status", "--format", "humanreadable"][..], &["status", "--json"][..]] {
        println!("\n$ hostctl {}", args.join(" "));
        let out = machine.hostctl(Some(hostd_tests::machine::USER.1), args);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(out.status.success(), "hostctl {} failed", args.join(" "));
    }
    println!("\n== cleaning up (bus, polkitd, hostd, tmpfs sysroot)");
    Ok(())
}
