//! The skopeo image proxy process of a job: who it runs as, and that it
//! ends when its job is cancelled.
//!
//! The proxy library waits for skopeo's answers in blocking threads, so a
//! skopeo stuck on a registry that never answers, a stalled medium or a
//! blob that stops mid-stream would hold its job forever: dropping the
//! job's future does not reach it. Every skopeo hostd starts therefore
//! reports its pid through a pipe as it starts, and a watcher kills it when
//! the job's cancellation fires (`Cancel()`, the time limit, shutdown); the
//! library's threads then see the socket close and return.

use std::io::Read;

use anyhow::Context;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use ostree_ext::container::store::ImageProxyConfig;
use ostree_ext::container::Transport;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio_util::sync::CancellationToken;

use super::local_source::LocalImage;

/// How often the watcher looks at the job's cancellation while skopeo runs.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Who skopeo runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// ostree-ext's default: `nobody` for registries when hostd runs under
    /// systemd, else root.
    Default,
    /// root: trusted local paths and containers-storage, whose files only
    /// root may read.
    Root,
    /// `nobody`, without supplementary groups or new privileges: local paths
    /// others can write, so skopeo reads no more than any user could even
    /// if the path changes after hostd checked it.
    Nobody,
}

/// Who reads an image of `transport`, given what `local` found on a local path.
pub fn run_as(transport: Transport, local: Option<&LocalImage>) -> RunAs {
    match (transport, local) {
        (Transport::ContainerStorage, _) => RunAs::Root,
        (_, Some(local)) if local.trust.is_trusted() => RunAs::Root,
        (_, Some(_)) => RunAs::Nobody,
        _ => RunAs::Default,
    }
}

/// The image proxy configuration for one image read of a job: credentials
/// as ostree-ext finds them, skopeo run as `run_as`, and killed when
/// `cancel` fires.
pub fn proxy_config(run_as: RunAs, cancel: &CancellationToken) -> anyhow::Result<ImageProxyConfig> {
    let mut config = ImageProxyConfig::default();
    match run_as {
        RunAs::Default => {}
        RunAs::Root | RunAs::Nobody => {
            config.skopeo_cmd = Some(command(run_as));
            // Local images need no credentials, and a skopeo run as
            // `nobody` for a user's path must not be handed root's.
            config.auth_anonymous = true;
        }
    }
    // Credentials, and for `Default` the isolation ostree-ext chooses; a
    // command set above is kept as it is.
    ostree_ext::container::merge_default_container_proxy_opts(&mut config)?;
    let command = config.skopeo_cmd.get_or_insert_with(|| {
        let mut c = Command::new(super::pull::SKOPEO);
        c.env_remove("HOME");
        c
    });
    watch(command, cancel)?;
    Ok(config)
}

/// `skopeo` run as `run_as`, killed when `cancel` fires, for a run other
/// than the image proxy (`skopeo copy`).
pub fn watched_command(run_as: RunAs, cancel: &CancellationToken) -> anyhow::Result<Command> {
    let mut c = command(run_as);
    if run_as != RunAs::Nobody {
        c.env_remove("HOME");
    }
    watch(&mut c, cancel)?;
    Ok(c)
}

/// `skopeo` run as `run_as` (`Default` is root, as hostd runs).
pub fn command(run_as: RunAs) -> Command {
    match run_as {
        RunAs::Nobody => as_nobody(),
        RunAs::Default | RunAs::Root => Command::new(super::pull::SKOPEO),
    }
}

/// `skopeo` as `nobody`: uid and gid of the `nobody` user (65534 where it
/// is not in the user database), no supplementary groups (std drops them
/// when the uid changes), no new privileges.
#[expect(unsafe_code, reason = "pre_exec: the child's setup between fork and exec")]
fn as_nobody() -> Command {
    let (uid, gid) = nobody_ids();
    let mut c = Command::new(super::pull::SKOPEO);
    c.uid(uid).gid(gid);
    // Its configuration must come from the system, not root's home.
    c.env_remove("HOME").env_remove("XDG_RUNTIME_DIR").env_remove("XDG_CONFIG_HOME");
    // SAFETY: prctl(2) only, which is async-signal-safe.
    unsafe {
        c.pre_exec(|| rustix::thread::set_no_new_privs(true).map_err(std::io::Error::from));
    }
    c
}

/// The uid and gid of `nobody` (65534 where it is not in the user database).
pub fn nobody_ids() -> (u32, u32) {
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    nobody.map_or((65534, 65534), |u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// The first protocol version of skopeo's image proxy that evaluates the
/// containers policy when it opens an image (skopeo 1.13).
pub const POLICY_EVALUATING_PROTOCOL: semver::Version = semver::Version::new(0, 2, 6);

/// How long the proxy may take to answer `Initialize`.
const INITIALIZE_LIMIT: Duration = Duration::from_secs(10);

/// The protocol version the installed skopeo's image proxy speaks, from its
/// answer to `Initialize`; asked once per process once it has answered.
/// `None` where it could not be asked this time (no skopeo, no answer in
/// time, an answer not understood): a failure is not kept, so a proxy slow
/// once under load is asked again by the next job.
pub async fn proxy_protocol() -> Option<semver::Version> {
    static PROTOCOL: tokio::sync::OnceCell<semver::Version> = tokio::sync::OnceCell::const_new();
    let asked = PROTOCOL
        .get_or_try_init(|| async {
            let asked = tokio::task::spawn_blocking(ask_proxy_protocol).await;
            let version = asked.map_err(anyhow::Error::new).and_then(|r| r)?;
            tracing::info!("skopeo's image proxy speaks protocol {version}");
            anyhow::Ok(version)
        })
        .await;
    match asked {
        Ok(version) => Some(version.clone()),
        Err(e) => {
            tracing::warn!("could not ask skopeo's image proxy for its protocol: {e:#}");
            None
        }
    }
}

/// One `Initialize` request over the proxy's socket (a SOCK_SEQPACKET pair
/// on its stdin, one JSON message per packet), then EOF, which ends it.
#[expect(clippy::disallowed_methods, reason = "runs on a blocking thread (spawn_blocking)")]
fn ask_proxy_protocol() -> anyhow::Result<semver::Version> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
    #[derive(serde::Deserialize)]
    struct Reply {
        success: bool,
        value: serde_json::Value,
        #[serde(default)]
        error: String,
    }
    let (ours, theirs) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    let mut child = Command::new(super::pull::SKOPEO)
        .arg("experimental-image-proxy")
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let answer = (|| -> anyhow::Result<Vec<u8>> {
        rustix::net::sockopt::set_socket_timeout(&ours, rustix::net::sockopt::Timeout::Recv, Some(INITIALIZE_LIMIT))?;
        rustix::net::send(&ours, br#"{"method":"Initialize","args":[]}"#, SendFlags::empty())?;
        let mut buf = vec![0u8; 64 * 1024];
        let (n, _) = rustix::net::recv(&ours, &mut buf, RecvFlags::empty())?;
        buf.truncate(n);
        Ok(buf)
    })();
    drop(ours);
    // The answer is all that was wanted: a proxy that would not end at EOF
    // must not hold this thread.
    let _ = child.kill();
    let _ = child.wait();
    let reply: Reply = serde_json::from_slice(&answer?)?;
    anyhow::ensure!(reply.success, "Initialize failed: {}", reply.error);
    let version = reply.value.as_str().context("Initialize answered no version")?;
    Ok(semver::Version::parse(version)?)
}

/// Make `command` report its pid as it starts, and kill it once `cancel`
/// fires; it also gets SIGTERM when the thread that started it ends.
#[expect(unsafe_code, reason = "pre_exec: the child's setup between fork and exec")]
fn watch(command: &mut Command, cancel: &CancellationToken) -> std::io::Result<()> {
    let (pid_reader, pid_writer) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    // SAFETY: prctl(2), getpid(2) and write(2) only, all async-signal-safe.
    // The pipe's write end is closed by exec (CLOEXEC) in the child and by
    // dropping the command in hostd, so the watcher always sees an end.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
            let pid = rustix::process::getpid().as_raw_nonzero().get();
            rustix::io::write(&pid_writer, &pid.to_ne_bytes())?;
            Ok(())
        });
    }
    let cancel = cancel.clone();
    std::thread::Builder::new()
        .name("skopeo-watch".into())
        .spawn(move || kill_when_cancelled(pid_reader, &cancel))?;
    Ok(())
}

/// Wait for the pid, then until the process ends or `cancel` fires, which
/// kills it. A pidfd names the process, so a reused pid is never signalled.
fn kill_when_cancelled(pid_reader: OwnedFd, cancel: &CancellationToken) {
    let mut pid = [0u8; 4];
    if std::fs::File::from(pid_reader).read_exact(&mut pid).is_err() {
        return; // never started
    }
    let Some(pid) = Pid::from_raw(i32::from_ne_bytes(pid)) else { return };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else { return };
    let timeout = rustix::time::Timespec::try_from(CANCEL_POLL).unwrap_or(rustix::time::Timespec { tv_sec: 0, tv_nsec: 100_000_000 });
    loop {
        if cancel.is_cancelled() {
            tracing::info!(pid = pid.as_raw_nonzero().get(), "the job was cancelled; stopping its skopeo");
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
            return;
        }
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return, // exited
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installed skopeo (a dependency of every build and test
    /// machine) answers `Initialize` with the version containers-image-proxy
    /// requires at least (0.2.3).
    #[tokio::test]
    async fn the_installed_proxy_tells_its_protocol() {
        let version = proxy_protocol().await.expect("skopeo's image proxy answers Initialize");
        assert!(version >= semver::Version::new(0, 2, 3) && version.major == 0, "{version}");
    }
}
