//! Who asked for a job: the caller's uid and the systemd unit it runs in,
//! for `Cancel` and for the journal. A leaf module, so that the journal and
//! the job machinery can both name a caller without depending on each other.
//!
//! The unit is read when the call arrives, and only when the bus's word on
//! the calling process can be checked:
//!
//! - The process is pinned by a pidfd (the bus's `ProcessFD` credential
//!   where it offers one, else one opened from its `ProcessID` at once), and
//!   its `/proc` files count only if it is still alive after they were
//!   read, so they cannot belong to a process that took over a recycled pid
//!   meanwhile.
//! - The process must run as the uid the bus gives for the connection.
//!   Without `ProcessFD` (dbus-daemon 1.14) the pid is the one that opened
//!   the connection; had that process exited and its pid been reused, the
//!   uid check leaves only processes of the caller's own uid to be taken
//!   for it.
//! - The unit is the outermost `.service` or `.scope` of the cgroup path:
//!   one the system manager made, which the process cannot rename. Deeper
//!   cgroups can be named by whoever was delegated the subtree (every user
//!   owns the inside of their `user@UID.service`), so a user's process
//!   shows as `user@UID.service`, never as a name of its own choosing.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

/// Who asked for a job: for `Cancel` and for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    /// The caller's uid.
    pub uid: u32,
    /// The system unit the caller runs in (a service, a session scope or a
    /// user's `user@UID.service`), when it could be read without doubt.
    pub unit: Option<String>,
}

/// The unit of the process behind a bus connection of `uid`, from the bus's
/// `ProcessID` and, where the bus offers it, `ProcessFD` credentials; `None`
/// when it cannot be told for sure (see the module documentation).
pub fn unit_of_connection(uid: u32, pid: Option<u32>, process_fd: Option<BorrowedFd<'_>>) -> Option<String> {
    let pid = pid?;
    let opened;
    let pidfd = match process_fd {
        Some(fd) => fd,
        None => {
            opened = pidfd_open(Pid::from_raw(i32::try_from(pid).ok()?)?, PidfdFlags::empty()).ok()?;
            opened.as_fd()
        }
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // Read before this check, so both files are the pinned process's.
    if has_exited(pidfd) {
        return None;
    }
    if effective_uid(&status)? != uid {
        return None;
    }
    unit_from_cgroups(&cgroups)
}

/// A pidfd polls readable once its process has exited.
fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    // An error means the fd does not pin a process we can vouch for.
    rustix::event::poll(&mut fds, Some(&now)).map_or(true, |ready| ready > 0)
}

/// The effective uid from a `/proc/<pid>/status` file (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// The outermost unit named in a `/proc/<pid>/cgroup` file: in the cgroup
/// v2 line `0::/…`, or else in the name=systemd hierarchy of v1 (on hybrid
/// hosts both are there, in either order).
fn unit_from_cgroups(cgroups: &str) -> Option<String> {
    let unified = cgroups.lines().find_map(|l| l.strip_prefix("0::"));
    let legacy = cgroups.lines().find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p));
    [unified, legacy].into_iter().flatten().find_map(outermost_unit)
}

fn outermost_unit(cgroup_path: &str) -> Option<String> {
    cgroup_path
        .split('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_the_outermost_service_or_scope() {
        let v2 = "0::/system.slice/hostd-fetch-apply-updates.service\n";
        assert_eq!(unit_from_cgroups(v2).as_deref(), Some("hostd-fetch-apply-updates.service"));
        let session = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(unit_from_cgroups(session).as_deref(), Some("session-3.scope"));
        // Below user@1000.service the user names the cgroups.
        let nested = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/hostd-fetch-apply-updates.service\n";
        assert_eq!(unit_from_cgroups(nested).as_deref(), Some("user@1000.service"));
        let delegated = "0::/system.slice/container.service/payload/inner.service\n";
        assert_eq!(unit_from_cgroups(delegated).as_deref(), Some("container.service"));
        let v1 = "12:pids:/\n1:name=systemd:/system.slice/cron.service\n";
        assert_eq!(unit_from_cgroups(v1).as_deref(), Some("cron.service"));
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/cron.service\n";
        assert_eq!(unit_from_cgroups(hybrid).as_deref(), Some("cron.service"));
        let hybrid_legacy_only = "9:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(unit_from_cgroups(hybrid_legacy_only).as_deref(), Some("cron.service"));
        assert_eq!(unit_from_cgroups("0::/\n"), None);
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    fn own_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_live_process_of_the_uid_is_read() {
        let me = std::process::id();
        let expected = unit_from_cgroups(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
        assert_eq!(unit_of_connection(own_uid(), Some(me), None), expected);
        // The same through a pidfd handed over, as the bus's ProcessFD.
        let pidfd = pidfd_open(Pid::from_raw(me as i32).unwrap(), PidfdFlags::empty()).unwrap();
        assert_eq!(unit_of_connection(own_uid(), Some(me), Some(pidfd.as_fd())), expected);
    }

    #[test]
    fn another_uid_or_no_pid_is_not_read() {
        let me = std::process::id();
        assert_eq!(unit_of_connection(own_uid() + 1, Some(me), None), None);
        assert_eq!(unit_of_connection(own_uid(), None, None), None);
    }

    #[test]
    fn an_exited_process_is_not_read() {
        // Exited but not yet reaped: its /proc files are still there.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let pidfd = pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !has_exited(pidfd.as_fd()) {
            assert!(std::time::Instant::now() < deadline, "child did not exit");
            std::thread::yield_now();
        }
        assert!(std::fs::metadata(format!("/proc/{pid}/cgroup")).is_ok());
        assert_eq!(unit_of_connection(own_uid(), Some(pid), Some(pidfd.as_fd())), None);
        assert_eq!(unit_of_connection(own_uid(), Some(pid), None), None);
        let _ = child.try_wait();
    }
}
