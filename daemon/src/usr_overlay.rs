//! `UsrOverlay` made effective for the host.
//!
//! libostree mounts the `/usr` overlay in the mount namespace of the
//! process that asks for it, and hostd's namespace is its own
//! (`PrivateMounts=yes`, docs/security.md "Confinement of the service"): a
//! mount made there would be seen by hostd alone. So the daemon asks
//! systemd to run `hostd --usr-overlay-helper MODE` as a transient unit;
//! systemd starts it in the host's namespace, it calls
//! [`sysroot::usr_overlay::unlock_booted`] and exits. Its stderr is a pipe
//! back to the daemon: on failure the helper writes the error's name on the
//! first line and its message after it, so the caller gets the same error
//! as if the daemon had done the work.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use futures_util::StreamExt;
use hostd_interface::host::FilesystemOverlayPersistence;
use hostd_interface::Error;
use zbus::{Fd, Variant};
use zbus::Connection;

use crate::systemd::Systemd1ManagerProxy;
use crate::{errors, sysroot};

/// The argument that runs `hostd` as the helper.
pub const HELPER_ARG: &str = "--usr-overlay-helper";
/// The transient unit the helper runs as.
pub const UNIT: &str = "hostd-usr-overlay.service";
/// Held by a `UsrOverlay` call from after its authorization until the
/// status shows its overlay, so a second call finds it.
pub static CALLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How long the daemon waits for the helper: the sysroot lock wait, and
/// with `persist` libostree's write of a rollback clone.
const LIMIT: Duration = Duration::from_secs(120);

/// Run the helper as a transient unit and wait for its end. `Ok` once the
/// overlay is mounted on the host's `/usr`.
pub async fn mount_on_host(conn: &Connection, persistence: FilesystemOverlayPersistence) -> Result<(), Error> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Failed(format!("{what}: {e}"));
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| failed("finding hostd's own program", &e))?;
    let exe = exe.to_string_lossy().into_owned();
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| failed("creating the helper's error pipe", &e))?;
    let systemd = Systemd1ManagerProxy::new(conn).await.map_err(|e| failed("talking to systemd", &e))?;
    // systemd sends JobRemoved only while someone is subscribed.
    systemd.subscribe().await.map_err(|e| failed("subscribing to systemd's jobs", &e))?;
    let mut removed = systemd.receive_job_removed().await.map_err(|e| failed("subscribing to systemd's jobs", &e))?;
    let argv = vec![exe.clone(), HELPER_ARG.to_string(), persistence.as_str().to_string()];
    let properties = [
        ("Description", Variant::from("hostd: writable overlay on /usr")),
        ("Type", Variant::from("oneshot")),
        ("ExecStart", Variant::from(vec![(exe, argv, false)])),
        ("StandardErrorFileDescriptor", Variant::from(Fd::from(writer.as_fd()))),
        // Gone when it ends, failed or not: the daemon has its answer.
        ("CollectMode", Variant::from("inactive-or-failed")),
        ("NoNewPrivileges", Variant::from(true)),
    ];
    let started = systemd.start_transient_unit(UNIT, "fail", &properties, &[]).await;
    drop(writer);
    let job = started.map_err(|e| failed(&format!("starting {UNIT}"), &e))?;
    let result = tokio::time::timeout(LIMIT, async {
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args() {
                if args.job == job {
                    return Some(args.result);
                }
            }
        }
        None
    })
    .await;
    let _ = systemd.unsubscribe().await;
    match result {
        Ok(Some(r)) if r == "done" => Ok(()),
        Ok(Some(r)) => Err(helper_error(reader).unwrap_or_else(|| {
            Error::Failed(format!("{UNIT} ended with '{r}'; `journalctl -u {UNIT}` says why"))
        })),
        Ok(None) => Err(Error::Failed(format!("lost systemd's signals while {UNIT} ran"))),
        Err(_) => Err(Error::Failed(format!("{UNIT} did not end within {}s", LIMIT.as_secs()))),
    }
}

/// The error the helper wrote to its stderr: name on the first line,
/// message after it. Read without waiting: the helper has exited.
fn helper_error(reader: OwnedFd) -> Option<Error> {
    let mut text = String::new();
    let _ = std::fs::File::from(reader).take(64 * 1024).read_to_string(&mut text);
    let (name, message) = text.trim_end().split_once('\n')?;
    Some(Error::from_name(name, message.to_string()))
}

/// `hostd --usr-overlay-helper MODE`, run by systemd in the host's mount
/// namespace: mount the overlay; on failure write the error for the daemon
/// to stderr. Returns the exit status.
pub fn helper_main(mode: &str) -> std::process::ExitCode {
    let persist = match mode.parse::<FilesystemOverlayPersistence>() {
        Ok(p) => p == FilesystemOverlayPersistence::Persistent,
        Err(e) => {
            eprintln!("Failed\n{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match sysroot::usr_overlay::unlock_booted(persist) {
        Ok(overlay) => {
            tracing::info!("a {} overlay is mounted on /usr", overlay.persistence);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            let named = errors::name_owned(e);
            eprintln!("{}\n{}", named.short_name(), named.message());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_error_comes_back_named() {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        std::io::Write::write_all(&mut std::fs::File::from(writer), b"InvalidArgument\na /usr overlay is already active\n").unwrap();
        assert_eq!(helper_error(reader), Some(Error::InvalidArgument("a /usr overlay is already active".into())));
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(writer);
        assert_eq!(helper_error(reader), None);
    }
}
