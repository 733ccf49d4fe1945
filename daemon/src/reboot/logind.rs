//! Rebooting through `org.freedesktop.login1`.
//!
//! logind lets root through block inhibitors held by root (it ignores the
//! caller's own uid) and, without `SD_LOGIND_ROOT_CHECK_INHIBITORS`, every
//! other one too. hostd acts for callers who may not override anyone, so it
//! reads the inhibitors itself first and also passes that flag.

use zbus::Connection;

/// `SD_LOGIND_ROOT_CHECK_INHIBITORS`: fail instead of overriding inhibitors.
const ROOT_CHECK_INHIBITORS: u64 = 1;

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login1Manager {
    /// (what, who, why, mode, uid, pid) of every inhibitor.
    fn list_inhibitors(&self) -> zbus::Result<Vec<(String, String, String, String, u32, u32)>>;
    /// Reboot with `SD_LOGIND_*` flags (systemd ≥ 246).
    fn reboot_with_flags(&self, flags: u64) -> zbus::Result<()>;
    /// Reboot (older logind).
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// A block inhibitor on shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// Who took it (`--who=`).
    pub who: String,
    /// Why (`--why=`).
    pub why: String,
    /// Its holder.
    pub uid: u32,
    /// Its holder.
    pub pid: u32,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, uid {}: {})", self.who, self.pid, self.uid, self.why)
    }
}

/// What became of a reboot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootOutcome {
    /// logind accepted it; the system is going down.
    Started,
    /// Block inhibitors hold it off.
    Blocked(Vec<Blocker>),
}

/// Why the reboot could not even be asked for.
#[derive(Debug, thiserror::Error)]
#[error("asking logind to reboot: {0}")]
pub struct RebootError(#[from] zbus::Error);

/// The block inhibitors on shutdown held right now.
pub async fn blockers(conn: &Connection) -> Result<Vec<Blocker>, RebootError> {
    let logind = Login1ManagerProxy::new(conn).await?;
    Ok(shutdown_blockers(logind.list_inhibitors().await?))
}

/// Ask logind to reboot without overriding any inhibitor.
pub async fn request_reboot(conn: &Connection) -> Result<RebootOutcome, RebootError> {
    let logind = Login1ManagerProxy::new(conn).await?;
    let requested = match logind.reboot_with_flags(ROOT_CHECK_INHIBITORS).await {
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" => {
            logind.reboot(false).await
        }
        other => other,
    };
    match requested {
        Ok(()) => Ok(RebootOutcome::Started),
        // An inhibitor taken since the caller listed them.
        Err(zbus::Error::MethodError(name, _, _)) if is_inhibitor_refusal(name.as_str()) => {
            Ok(RebootOutcome::Blocked(shutdown_blockers(logind.list_inhibitors().await?)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reboot as root, overriding every block inhibitor (the automatic
/// rollback after its grace period; docs/health.md).
pub async fn override_reboot(conn: &Connection) -> Result<(), RebootError> {
    let logind = Login1ManagerProxy::new(conn).await?;
    match logind.reboot_with_flags(0).await {
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" => {
            Ok(logind.reboot(false).await?)
        }
        other => Ok(other?),
    }
}

/// logind answers AccessDenied to root with `ROOT_CHECK_INHIBITORS` and
/// BlockedByInhibitorLock when interactive authorization is needed.
fn is_inhibitor_refusal(error_name: &str) -> bool {
    matches!(
        error_name,
        "org.freedesktop.DBus.Error.AccessDenied" | "org.freedesktop.login1.BlockedByInhibitorLock"
    )
}

fn shutdown_blockers(inhibitors: Vec<(String, String, String, String, u32, u32)>) -> Vec<Blocker> {
    inhibitors
        .into_iter()
        .filter(|(what, _, _, mode, _, _)| mode == "block" && what.split(':').any(|w| w == "shutdown"))
        .map(|(_, who, why, _, uid, pid)| Blocker { who, why, uid, pid })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inhibitor(what: &str, who: &str, mode: &str) -> (String, String, String, String, u32, u32) {
        (what.into(), who.into(), "because".into(), mode.into(), 0, 42)
    }

    #[test]
    fn only_block_inhibitors_on_shutdown_count() {
        let all = vec![
            inhibitor("sleep", "a", "block"),
            inhibitor("shutdown", "b", "delay"),
            inhibitor("sleep:shutdown:idle", "c", "block"),
            inhibitor("handle-power-key", "d", "block"),
        ];
        let who: Vec<String> = shutdown_blockers(all).into_iter().map(|b| b.who).collect();
        assert_eq!(who, ["c"]);
    }

    #[test]
    fn a_blocker_names_holder_and_reason() {
        let b = Blocker { who: "burner".into(), why: "writing a disc".into(), uid: 1000, pid: 77 };
        assert_eq!(b.to_string(), "burner (pid 77, uid 1000: writing a disc)");
    }
}
