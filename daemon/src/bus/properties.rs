//! The manager's computed properties, rendered from the status snapshot,
//! the job slot and the job records: what the bus shows, kept out of the
//! shared state itself.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::context::Context;
use crate::jobs::JobKind;
use crate::sysroot::progress::Phase;

/// The `State` value for a running job.
pub fn state_for(kind: JobKind, phase: Phase) -> &'static str {
    match (kind, phase) {
        (_, Phase::Rebooting) => "rebooting",
        (JobKind::Check, _) => "checking",
        (JobKind::Upgrade | JobKind::Switch, Phase::Staging) => "staging",
        (JobKind::Upgrade | JobKind::Switch, Phase::Cleanup) => "cleaning",
        (JobKind::Upgrade | JobKind::Switch, _) => "fetching",
        (JobKind::Stage, _) => "staging",
        (JobKind::Rollback, _) => "rolling-back",
        (JobKind::Cleanup, _) => "cleaning",
    }
}

/// `RebootPendingReason`: why a reboot is needed and, if one was
/// postponed, why it has not happened; empty when none is needed.
pub fn reboot_pending_reason(ctx: &Context) -> String {
    let loaded = ctx.status.peek();
    let Some(Ok(snapshot)) = loaded.as_deref() else { return String::new() };
    if !snapshot.reboot_required {
        return String::new();
    }
    let why = crate::reboot::marker::reason(snapshot)
        .unwrap_or_else(|| "a change is queued for the next boot".to_string());
    match ctx.records.reboot_postponed() {
        Some(postponed) => format!("{}; {postponed}", why.trim_end()),
        None => why.trim_end().to_string(),
    }
}

/// `CachedUpdate`: the persisted cached update from the sysroot, plus the
/// download size from this daemon's last check of the same digest.
pub fn cached_update(ctx: &Context) -> HashMap<String, OwnedVariant> {
    let mut m: HashMap<String, Variant<'static>> = HashMap::new();
    let loaded = ctx.status.peek();
    let cached = match loaded.as_deref() {
        Some(Ok(s)) => s.cached_update().cloned(),
        _ => None,
    };
    if let Some(update) = &cached {
        m.insert("digest".into(), Variant::from(update.image_digest.clone()));
        let downloaded = matches!(loaded.as_deref(), Some(Ok(s))
            if s.downloaded_update.as_deref() == Some(update.image_digest.as_str()));
        m.insert("downloaded".into(), Variant::Bool(downloaded));
        if let Some(v) = &update.version {
            m.insert("version".into(), Variant::from(v.clone()));
        }
        if let Some(t) = &update.timestamp {
            m.insert("timestamp".into(), Variant::from(t.clone()));
        }
        if let Some(summary) = ctx.records.last_check().filter(|s| s.digest == update.image_digest) {
            m.insert("download-bytes".into(), Variant::U64(summary.bytes_to_fetch));
            m.insert("layers-to-fetch".into(), Variant::U32(summary.layers_to_fetch));
            m.insert("layers-total".into(), Variant::U32(summary.layers_total));
        }
    }
    m.into_iter()
        .map(|(k, v)| (k, OwnedVariant::try_from(v).expect("no file descriptors")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_state_follows_kind_and_phase() {
        assert_eq!(state_for(JobKind::Upgrade, Phase::Pulling), "fetching");
        assert_eq!(state_for(JobKind::Upgrade, Phase::Staging), "staging");
        assert_eq!(state_for(JobKind::Rollback, Phase::Staging), "rolling-back");
        assert_eq!(state_for(JobKind::Stage, Phase::Rebooting), "rebooting");
    }
}
