//! Who asked for a job: the caller's uid and the systemd unit it runs in,
//! for `Cancel` and for the journal. A leaf module, so that the journal and
//! the job machinery can both name a caller without depending on each other.

/// Who asked for a job: for `Cancel` and for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    /// The caller's uid.
    pub uid: u32,
    /// The systemd unit the caller runs in (a service, or a session scope),
    /// when it can be found.
    pub unit: Option<String>,
}

impl Initiator {
    /// The initiator behind process `pid` with `uid`.
    pub fn of_process(uid: u32, pid: Option<u32>) -> Initiator {
        let unit = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok())
            .and_then(|cgroups| unit_from_cgroups(&cgroups));
        Initiator { uid, unit }
    }
}

/// The innermost unit named in a `/proc/<pid>/cgroup` file (cgroup v2 line
/// `0::/…`, or the name=systemd hierarchy of v1).
fn unit_from_cgroups(cgroups: &str) -> Option<String> {
    let path = cgroups.lines().find_map(|l| {
        l.strip_prefix("0::").or_else(|| l.split_once(":name=systemd:").map(|(_, p)| p))
    })?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_the_innermost_service_or_scope() {
        let v2 = "0::/system.slice/hostd-fetch-apply-updates.service\n";
        assert_eq!(unit_from_cgroups(v2).as_deref(), Some("hostd-fetch-apply-updates.service"));
        let session = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(unit_from_cgroups(session).as_deref(), Some("session-3.scope"));
        let nested = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope\n";
        assert_eq!(unit_from_cgroups(nested).as_deref(), Some("app-x.scope"));
        let v1 = "12:pids:/\n1:name=systemd:/system.slice/cron.service\n";
        assert_eq!(unit_from_cgroups(v1).as_deref(), Some("cron.service"));
        assert_eq!(unit_from_cgroups("0::/\n"), None);
    }
}
