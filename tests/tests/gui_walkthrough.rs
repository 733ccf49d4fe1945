//! docs/dbus-api.md, "Writing a GUI", run as written: every `$` line of
//! the section's `console` blocks, in order, as a wheel member on a test
//! machine (real bus, real polkitd with the example rules) whose host has
//! v1 deployed and v2 published. Each call must succeed, the type of its
//! answer (the first word `busctl` prints) must be the one the document
//! shows, and the host must end as the calls say: v2 downloaded, discarded,
//! upgraded to, rolled back from, and the policy changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hostd_interface::job::JobStatus;
use hostd_interface::manager::{ManagerState, UpdatePolicy};
use hostd_tests::machine::{TestMachine, ADMIN};
use hostd_tests::offline::{deployed, host_with_v1, text, vd};
use hostd_tests::repo_root;

/// One `$` line of the section and the answer the document shows for it.
#[derive(Debug)]
struct Step {
    command: String,
    /// The first word of the first line shown after the command (`o`,
    /// `s`, `b`); `None` when the document shows no answer.
    answer_type: Option<String>,
}

/// The `$` lines of the "Writing a GUI" section's `console` blocks.
fn documented_steps() -> Vec<Step> {
    let doc = std::fs::read_to_string(repo_root().join("docs/dbus-api.md")).unwrap();
    let section = doc.split("\n## Writing a GUI\n").nth(1).expect("the section exists");
    let section = section.split("\n## ").next().unwrap();
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in section.lines() {
        match line {
            "```console" => in_console = true,
            "```" => in_console = false,
            _ if !in_console => {}
            _ => match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step { command: command.to_string(), answer_type: None }),
                None => {
                    let step = steps.last_mut().expect("an answer follows a command");
                    if step.answer_type.is_none() {
                        step.answer_type = line.split_whitespace().next().map(str::to_string);
                    }
                }
            },
        }
    }
    steps
}

/// Waits (bounded) until no job runs, so that the next call is not one
/// request too many.
async fn wait_idle(machine: &TestMachine) {
    let (_conn, manager) = machine.manager().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while manager.state().await.unwrap() != ManagerState::Idle {
        assert!(Instant::now() < deadline, "a job still runs:\n{}", machine.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writing_a_gui_transcripts_run_as_documented() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), "[daemon]\nidle_exit_secs = 120\n").unwrap();
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();

    let steps = documented_steps();
    assert!(steps.len() >= 9, "the section shows its calls: {steps:?}");
    for step in &steps {
        assert!(step.command.starts_with("busctl "), "only busctl is run: {}", step.command);
        let out = machine.command("sh", Some(ADMIN.1)).arg("-c").arg(&step.command).output().unwrap();
        eprintln!("$ {}\n{}", step.command, text(&out));
        assert!(out.status.success(), "{}:\n{}\n{}", step.command, text(&out), machine.log());
        let shown = String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_string);
        assert_eq!(shown, step.answer_type, "{}: the answer's type:\n{}", step.command, text(&out));
        wait_idle(&machine).await;
    }

    // Downloaded, discarded, upgraded to v2, rolled back to v1: v1 first.
    let (conn, manager) = machine.manager().await.unwrap();
    assert_eq!(deployed(&conn).await, [vd(&h.v1), vd(&v2)], "{}", machine.log());
    assert_eq!(manager.automatic_update_policy().await.unwrap(), UpdatePolicy::Stage);
    let kinds: Vec<String> = manager
        .last_jobs()
        .await
        .unwrap()
        .iter()
        .filter(|j| j.result == JobStatus::Succeeded)
        .map(|j| j.kind.to_string())
        .collect();
    for kind in ["check", "upgrade", "discard", "rollback"] {
        assert!(kinds.iter().any(|k| k == kind), "LastJobs records a succeeded {kind}: {kinds:?}");
    }
}
