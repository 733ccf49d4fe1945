//! Authorization: every call except `Status` and property reads goes through
//! polkit with the caller's bus name as the subject. Root is trusted.

use std::collections::HashMap;
use std::os::fd::AsFd;

use hostd_interface::names::ACTION_PREFIX;
use hostd_interface::options::Options;
use hostd_interface::Error;
use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use crate::initiator;
use crate::jobs::{JobKind, JobRequest};

/// The polkit actions, one per verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `org.hostd.host1.check`
    Check,
    /// `org.hostd.host1.upgrade`
    Upgrade,
    /// `org.hostd.host1.switch`
    Switch,
    /// `org.hostd.host1.stage`
    Stage,
    /// `org.hostd.host1.rollback`
    Rollback,
    /// `org.hostd.host1.cancel`
    Cancel,
    /// `org.hostd.host1.cleanup`
    Cleanup,
    /// `org.hostd.host1.reboot`
    Reboot,
    /// `org.hostd.host1.reload`
    Reload,
    /// `org.hostd.host1.usr-overlay`
    UsrOverlay,
    /// `org.hostd.host1.etc-diff`
    EtcDiff,
    /// `org.hostd.host1.configure`
    Configure,
}

impl Action {
    /// The verb part of the action id.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Check => "check",
            Action::Upgrade => "upgrade",
            Action::Switch => "switch",
            Action::Stage => "stage",
            Action::Rollback => "rollback",
            Action::Cancel => "cancel",
            Action::Cleanup => "cleanup",
            Action::Reboot => "reboot",
            Action::Reload => "reload",
            Action::UsrOverlay => "usr-overlay",
            Action::EtcDiff => "etc-diff",
            Action::Configure => "configure",
        }
    }

    /// The full polkit action id.
    pub fn id(self) -> String {
        format!("{ACTION_PREFIX}{}", self.verb())
    }
}

/// The polkit actions a request needs. Options that widen what a verb means
/// need the stricter action too (see docs/dbus-api.md).
pub fn actions_for(request: &JobRequest) -> Vec<Action> {
    let o = &request.options;
    let mut actions = vec![match request.kind {
        JobKind::Check => Action::Check,
        JobKind::Upgrade => Action::Upgrade,
        JobKind::Switch => Action::Switch,
        JobKind::Stage => Action::Stage,
        JobKind::Rollback => Action::Rollback,
        JobKind::Cleanup => Action::Cleanup,
        // Dropping a queued update is the other side of queuing it.
        JobKind::Discard => Action::Stage,
    }];
    if o.allow_downgrade && request.kind != JobKind::Switch {
        actions.push(Action::Switch);
    }
    if o.apply {
        actions.push(Action::Reboot);
    }
    actions
}

/// Details polkit rules can match on.
pub fn details_for(request: &JobRequest) -> HashMap<&'static str, String> {
    let mut d = HashMap::new();
    d.insert("verb", request.kind.as_str().to_string());
    if let Some(image) = &request.image {
        d.insert("image", image.image.clone());
        d.insert("transport", image.transport.as_str().to_string());
    }
    d.insert("options", options_summary(&request.options));
    d
}

/// The `options` detail: the options set, comma-separated.
pub fn options_summary(o: &Options) -> String {
    let mut parts = Vec::new();
    for (set, name) in [
        (o.download_only, "download-only"),
        (o.apply, "apply"),
        (o.allow_downgrade, "allow-downgrade"),
        (o.retry_failed, "retry-failed"),
        (o.retain, "retain"),
        (o.enforce_container_sigpolicy, "enforce-container-sigpolicy"),
        (o.auto, "auto"),
        (o.persist, "persist"),
    ] {
        if set {
            parts.push(name);
        }
    }
    parts.join(",")
}

/// Who is calling, as the bus daemon vouches.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Unique bus name of the caller.
    pub sender: String,
    /// Its uid.
    pub uid: u32,
    /// The system unit its process runs in, read when the call arrived,
    /// when that can be told for sure ([`crate::initiator`]).
    pub unit: Option<String>,
    /// Whether it allowed polkit to prompt (`ALLOW_INTERACTIVE_AUTHORIZATION`).
    pub interactive: bool,
}

/// Asks polkit on the system bus.
#[derive(Debug, Clone)]
pub struct Authorizer {
    conn: Connection,
}

impl Authorizer {
    /// An authorizer speaking over `conn`.
    pub fn new(conn: Connection) -> Authorizer {
        Authorizer { conn }
    }

    /// Identify the sender of a call.
    pub async fn caller(&self, header: &Header<'_>) -> Result<Caller, Error> {
        let sender = header
            .sender()
            .ok_or_else(|| Error::NotAuthorized("the call carries no sender".into()))?
            .to_owned();
        let dbus = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .map_err(|e| Error::Failed(format!("talking to the bus: {e}")))?;
        let credentials = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| Error::NotAuthorized(format!("cannot identify the caller: {e}")))?;
        let uid = credentials
            .unix_user_id()
            .ok_or_else(|| Error::NotAuthorized("the bus does not know the caller's uid".into()))?;
        // Now, before polkit (which may wait for a password): the sooner,
        // the likelier the process is still there to be vouched for.
        let unit = initiator::unit_of_connection(
            uid,
            credentials.process_id(),
            credentials.process_fd().map(|fd| fd.as_fd()),
        );
        Ok(Caller {
            sender: sender.to_string(),
            uid,
            unit,
            interactive: header.primary().flags().contains(Flags::ALLOW_INTERACTIVE_AUTH),
        })
    }

    /// Succeed if `caller` may perform every action in `actions`.
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        caller: &Caller,
        actions: &[Action],
        details: &HashMap<&str, String>,
    ) -> Result<(), Error> {
        if caller.uid == 0 {
            return Ok(());
        }
        let subject = Subject::new_for_message_header(header)
            .map_err(|e| Error::NotAuthorized(format!("cannot identify the caller: {e}")))?;
        let authority = AuthorityProxy::new(&self.conn)
            .await
            .map_err(|e| Error::NotAuthorized(format!("polkit is not available: {e}")))?;
        let flags = if caller.interactive {
            CheckAuthorizationFlags::ALLOW_USER_INTERACTION
        } else {
            CheckAuthorizationFlags::empty()
        };
        let details: HashMap<&str, &str> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for action in actions {
            let id = action.id();
            let result = authority
                .check_authorization(&subject, &id, &details, flags, "")
                .await
                .map_err(|e| Error::NotAuthorized(format!("{id}: polkit check failed: {e}")))?;
            if !result.is_authorized {
                let why = if result.is_challenge {
                    "authentication required"
                } else {
                    "not permitted"
                };
                tracing::info!(uid = caller.uid, action = %id, "denied: {why}");
                return Err(Error::NotAuthorized(format!("{id}: {why}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: JobKind, options: Options) -> JobRequest {
        JobRequest { kind, image: None, options }
    }

    #[test]
    fn widening_options_need_the_stricter_action() {
        let o = Options { allow_downgrade: true, ..Default::default() };
        assert_eq!(actions_for(&req(JobKind::Upgrade, o)), [Action::Upgrade, Action::Switch]);
        let o = Options { apply: true, ..Default::default() };
        assert_eq!(actions_for(&req(JobKind::Stage, o)), [Action::Stage, Action::Reboot]);
        assert_eq!(actions_for(&req(JobKind::Check, Options::default())), [Action::Check]);
    }

    #[test]
    fn action_ids_follow_the_naming_rule() {
        assert_eq!(Action::Upgrade.id(), "org.hostd.host1.upgrade");
        assert_eq!(Action::Reload.id(), "org.hostd.host1.reload");
        assert_eq!(Action::UsrOverlay.id(), "org.hostd.host1.usr-overlay");
        assert_eq!(Action::EtcDiff.id(), "org.hostd.host1.etc-diff");
        assert_eq!(Action::Configure.id(), "org.hostd.host1.configure");
    }
}
