//! The `a{sv}` option dictionaries of each method: which keys exist, their
//! types, and a strict parser shared by the daemon and the tests.
//!
//! Unknown keys, wrong value types and contradictory combinations are
//! `InvalidArgument`: an option that is silently ignored is a footgun.

use std::collections::HashMap;

use crate::etc_diff::EtcDiffTarget;
use crate::{host::Transport, Error};
use zbus::{OwnedVariant, Variant};

/// Fetch and keep the new deployment finalization-locked.
pub const DOWNLOAD_ONLY: &str = "download-only";
/// Reboot when the deployment is queued.
pub const APPLY: &str = "apply";
/// Do what the configured unattended-update policy allows.
pub const AUTO: &str = "auto";
/// Accept an image older than the current one.
pub const ALLOW_DOWNGRADE: &str = "allow-downgrade";
/// Install an image whose deployment failed its boot health checks before
/// (docs/health.md).
pub const RETRY_FAILED: &str = "retry-failed";
/// Transport of the image given to `Switch`.
pub const TRANSPORT: &str = "transport";
/// Keep the previous image's deployment instead of letting it be pruned.
pub const RETAIN: &str = "retain";
/// Require the containers signature policy to verify the image.
pub const ENFORCE_CONTAINER_SIGPOLICY: &str = "enforce-container-sigpolicy";
/// Keep the `/usr` overlay across reboots (a hotfix).
pub const PERSIST: &str = "persist";
/// Which deployment's `/etc` `EtcDiff` compares (`booted`, `staged`).
pub const DEPLOYMENT: &str = "deployment";

/// Longest accepted option value string.
pub const MAX_STRING_LEN: usize = 4096;
/// Most keys accepted in one dictionary.
pub const MAX_KEYS: usize = 32;
/// Largest body (all arguments of one call, as sent) a method of the hostd
/// objects accepts. Checked before the arguments are decoded, so the limits
/// above never wait for a huge dictionary to be built first; real calls
/// are a few hundred bytes.
pub const MAX_CALL_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
}

/// The API methods that take options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `Status`
    Status,
    /// `Check`
    Check,
    /// `Upgrade`
    Upgrade,
    /// `Switch`
    Switch,
    /// `Stage`
    Stage,
    /// `Rollback`
    Rollback,
    /// `Cleanup`
    Cleanup,
    /// `UsrOverlay`
    UsrOverlay,
    /// `EtcDiff`
    EtcDiff,
    /// `Edit`
    Edit,
    /// `Discard`
    Discard,
    /// `Settings`
    Settings,
    /// `SetSettings` (its options, not the settings)
    SetSettings,
    /// `ResetSettings`
    ResetSettings,
    /// `Diff`
    Diff,
}

impl Method {
    fn accepted(self) -> &'static [(&'static str, Kind)] {
        use Kind::*;
        match self {
            Method::Status
            | Method::Check
            | Method::Cleanup
            | Method::Edit
            | Method::Discard
            | Method::Settings
            | Method::SetSettings
            | Method::ResetSettings
            | Method::Diff => &[],
            Method::EtcDiff => &[(DEPLOYMENT, Str)],
            Method::Upgrade => {
                &[(DOWNLOAD_ONLY, Bool), (APPLY, Bool), (ALLOW_DOWNGRADE, Bool), (AUTO, Bool), (RETRY_FAILED, Bool)]
            }
            Method::Switch => &[
                (TRANSPORT, Str),
                (RETAIN, Bool),
                (ENFORCE_CONTAINER_SIGPOLICY, Bool),
                (DOWNLOAD_ONLY, Bool),
                (APPLY, Bool),
            ],
            Method::Stage | Method::Rollback => &[(APPLY, Bool)],
            Method::UsrOverlay => &[(PERSIST, Bool)],
        }
    }

    /// The D-Bus method name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Status => "Status",
            Method::Check => "Check",
            Method::Upgrade => "Upgrade",
            Method::Switch => "Switch",
            Method::Stage => "Stage",
            Method::Rollback => "Rollback",
            Method::Cleanup => "Cleanup",
            Method::UsrOverlay => "UsrOverlay",
            Method::EtcDiff => "EtcDiff",
            Method::Edit => "Edit",
            Method::Discard => "Discard",
            Method::Settings => "Settings",
            Method::SetSettings => "SetSettings",
            Method::ResetSettings => "ResetSettings",
            Method::Diff => "Diff",
        }
    }
}

/// Parsed options; keys a method does not accept stay at their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Options {
    /// `download-only`
    pub download_only: bool,
    /// `apply`
    pub apply: bool,
    /// `allow-downgrade`
    pub allow_downgrade: bool,
    /// `retry-failed` (`Upgrade` only)
    pub retry_failed: bool,
    /// `transport` (`Switch` only; defaults to registry there)
    pub transport: Option<Transport>,
    /// `retain`
    pub retain: bool,
    /// `enforce-container-sigpolicy`
    pub enforce_container_sigpolicy: bool,
    /// `auto` (`Upgrade` only): the policy decides what the other flags would.
    pub auto: bool,
    /// `persist` (`UsrOverlay` only)
    pub persist: bool,
    /// `deployment` (`EtcDiff` only; defaults to booted there)
    pub deployment: Option<EtcDiffTarget>,
}

impl Options {
    /// Parse and validate the dictionary given to `method`.
    pub fn parse(method: Method, dict: &HashMap<String, OwnedVariant>) -> Result<Options, Error> {
        if dict.len() > MAX_KEYS {
            return Err(invalid(format!(
                "{}: too many options ({} > {MAX_KEYS})",
                method.name(),
                dict.len()
            )));
        }
        let accepted = method.accepted();
        let mut keys: Vec<&String> = dict.keys().collect();
        // Deterministic error text when several keys are wrong.
        keys.sort();
        let mut out = Options::default();
        for key in keys {
            let value: &Variant<'_> = &dict[key];
            let Some(&(_, kind)) = accepted.iter().find(|(k, _)| k == key) else {
                return Err(invalid(format!(
                    "{}: unknown option '{}'{}",
                    method.name(),
                    truncate(key),
                    list_accepted(accepted)
                )));
            };
            match kind {
                Kind::Bool => {
                    let b = as_bool(value).ok_or_else(|| wrong_type(method, key, "b", value))?;
                    out.set_bool(key, b);
                }
                Kind::Str => {
                    let s = as_str(value).ok_or_else(|| wrong_type(method, key, "s", value))?;
                    out.set_str(key, s)?;
                }
            }
        }
        out.check_combinations(method)?;
        Ok(out)
    }

    fn set_bool(&mut self, key: &str, b: bool) {
        match key {
            DOWNLOAD_ONLY => self.download_only = b,
            APPLY => self.apply = b,
            ALLOW_DOWNGRADE => self.allow_downgrade = b,
            RETRY_FAILED => self.retry_failed = b,
            RETAIN => self.retain = b,
            ENFORCE_CONTAINER_SIGPOLICY => self.enforce_container_sigpolicy = b,
            AUTO => self.auto = b,
            PERSIST => self.persist = b,
            _ => unreachable!("boolean option table and setter disagree on {key}"),
        }
    }

    fn set_str(&mut self, key: &str, s: &str) -> Result<(), Error> {
        match key {
            TRANSPORT => {
                let t = Transport::parse(s).ok_or_else(|| {
                    let names: Vec<_> = Transport::ALL.iter().map(|t| t.as_str()).collect();
                    invalid(format!(
                        "unknown transport '{}' (expected one of: {})",
                        truncate(s),
                        names.join(", ")
                    ))
                })?;
                self.transport = Some(t);
                Ok(())
            }
            DEPLOYMENT => {
                let d = s.parse::<EtcDiffTarget>().map_err(|_| {
                    let names: Vec<_> = EtcDiffTarget::ALL.iter().map(|t| t.as_str()).collect();
                    invalid(format!(
                        "unknown deployment '{}' (expected one of: {})",
                        truncate(s),
                        names.join(", ")
                    ))
                })?;
                self.deployment = Some(d);
                Ok(())
            }
            _ => unreachable!("string option table and setter disagree on {key}"),
        }
    }

    fn check_combinations(&self, method: Method) -> Result<(), Error> {
        if self.download_only && self.apply {
            return Err(invalid(format!(
                "{}: '{DOWNLOAD_ONLY}' and '{APPLY}' contradict each other",
                method.name()
            )));
        }
        if self.auto && (self.download_only || self.apply || self.allow_downgrade || self.retry_failed) {
            return Err(invalid(format!(
                "{}: '{AUTO}' takes what to do from the configured policy; it cannot be combined with '{DOWNLOAD_ONLY}', '{APPLY}', '{ALLOW_DOWNGRADE}' or '{RETRY_FAILED}'",
                method.name()
            )));
        }
        Ok(())
    }
}

fn as_bool(v: &Variant<'_>) -> Option<bool> {
    match v {
        Variant::Bool(b) => Some(*b),
        _ => None,
    }
}

fn as_str<'a>(v: &'a Variant<'_>) -> Option<&'a str> {
    match v {
        Variant::Str(s) if s.len() <= MAX_STRING_LEN => Some(s.as_str()),
        _ => None,
    }
}

fn wrong_type(method: Method, key: &str, want: &str, got: &Variant<'_>) -> Error {
    let got_sig = got.value_signature().to_string();
    let detail = match got {
        Variant::Str(s) if s.len() > MAX_STRING_LEN => {
            format!("string longer than {MAX_STRING_LEN} bytes")
        }
        _ => format!("got '{got_sig}'"),
    };
    invalid(format!(
        "{}: option '{key}' must be of type '{want}', {detail}",
        method.name()
    ))
}

fn list_accepted(accepted: &[(&str, Kind)]) -> String {
    if accepted.is_empty() {
        " (this method takes no options)".to_string()
    } else {
        let keys: Vec<_> = accepted.iter().map(|(k, _)| *k).collect();
        format!(" (accepted: {})", keys.join(", "))
    }
}

/// `s` for an error message: escaped, at most 64 bytes of it.
pub(crate) fn truncate(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.len() <= SHOWN {
        return s.escape_debug().to_string();
    }
    let cut = (0..=SHOWN).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", s[..cut].escape_debug())
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, Variant<'static>)]) -> HashMap<String, OwnedVariant> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), OwnedVariant::try_from(v.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn empty_dict_is_fine_everywhere() {
        for m in [Method::Status, Method::Check, Method::Upgrade, Method::Switch] {
            assert_eq!(Options::parse(m, &HashMap::new()).unwrap(), Options::default());
        }
    }

    #[test]
    fn upgrade_flags_parse() {
        let o = Options::parse(
            Method::Upgrade,
            &dict(&[(DOWNLOAD_ONLY, Variant::Bool(true)), (ALLOW_DOWNGRADE, Variant::Bool(true))]),
        )
        .unwrap();
        assert!(o.download_only && o.allow_downgrade && !o.apply);
    }

    #[test]
    fn auto_stands_alone() {
        let o = Options::parse(Method::Upgrade, &dict(&[(AUTO, Variant::Bool(true))])).unwrap();
        assert!(o.auto && !o.apply && !o.download_only);
        for other in [DOWNLOAD_ONLY, APPLY, ALLOW_DOWNGRADE, RETRY_FAILED] {
            let e = Options::parse(Method::Upgrade, &dict(&[(AUTO, Variant::Bool(true)), (other, Variant::Bool(true))]));
            assert!(matches!(e, Err(Error::InvalidArgument(m)) if m.contains("cannot be combined")), "{other}");
        }
        assert!(Options::parse(Method::Switch, &dict(&[(AUTO, Variant::Bool(true))])).is_err());
        let o = Options::parse(Method::Upgrade, &dict(&[(RETRY_FAILED, Variant::Bool(true))])).unwrap();
        assert!(o.retry_failed);
        assert!(Options::parse(Method::Switch, &dict(&[(RETRY_FAILED, Variant::Bool(true))])).is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Options::parse(Method::Status, &dict(&[("bogus", Variant::Bool(true))])).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidArgument(
                "Status: unknown option 'bogus' (this method takes no options)".into()
            )
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Options::parse(Method::Upgrade, &dict(&[(APPLY, Variant::from("yes"))])).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidArgument("Upgrade: option 'apply' must be of type 'b', got 's'".into())
        );
    }

    #[test]
    fn persist_belongs_to_usr_overlay_alone() {
        let o = Options::parse(Method::UsrOverlay, &dict(&[(PERSIST, Variant::Bool(true))])).unwrap();
        assert!(o.persist);
        let e = Options::parse(Method::Upgrade, &dict(&[(PERSIST, Variant::Bool(true))])).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("unknown option 'persist'")));
        let e = Options::parse(Method::UsrOverlay, &dict(&[(APPLY, Variant::Bool(true))])).unwrap_err();
        assert_eq!(e, Error::InvalidArgument("UsrOverlay: unknown option 'apply' (accepted: persist)".into()));
    }

    #[test]
    fn key_of_another_method_is_unknown() {
        let e = Options::parse(Method::Upgrade, &dict(&[(TRANSPORT, Variant::from("oci"))]))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("unknown option 'transport'")));
    }

    #[test]
    fn unknown_transport_lists_the_valid_ones() {
        let e = Options::parse(Method::Switch, &dict(&[(TRANSPORT, Variant::from("docker"))]))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("registry, oci, oci-archive")));
    }

    #[test]
    fn download_only_and_apply_conflict() {
        let e = Options::parse(
            Method::Switch,
            &dict(&[(DOWNLOAD_ONLY, Variant::Bool(true)), (APPLY, Variant::Bool(true))]),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("contradict")));
    }

    #[test]
    fn oversized_values_and_keys_are_refused() {
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let e = Options::parse(Method::Switch, &dict(&[(TRANSPORT, Variant::from(long.clone()))]))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("longer than")));
        let e = Options::parse(Method::Status, &dict(&[(long.as_str(), Variant::Bool(true))]))
            .unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.len() < 200), "{e:?}");
    }

    mod properties {
        //! Seeded and bounded in `make test`; `make fuzz` runs them long.
        use super::*;
        use proptest::prelude::*;

        const METHODS: [Method; 8] = [
            Method::Status, Method::Check, Method::Upgrade, Method::Switch,
            Method::Stage, Method::Rollback, Method::Cleanup, Method::UsrOverlay,
        ];
        const KEYS: [&str; 8] =
            [DOWNLOAD_ONLY, APPLY, ALLOW_DOWNGRADE, TRANSPORT, RETAIN, ENFORCE_CONTAINER_SIGPOLICY, PERSIST, "force"];

        fn value() -> impl Strategy<Value = OwnedVariant> {
            prop_oneof![
                any::<bool>().prop_map(|b| OwnedVariant::try_from(Variant::Bool(b)).unwrap()),
                any::<String>().prop_map(|s| OwnedVariant::try_from(Variant::from(s)).unwrap()),
                "(registry|oci|oci-archive|dir|containers-storage|docker)"
                    .prop_map(|s| OwnedVariant::try_from(Variant::from(s)).unwrap()),
                any::<u32>().prop_map(|n| OwnedVariant::try_from(Variant::U32(n)).unwrap()),
                Just(OwnedVariant::try_from(Variant::from("x".repeat(MAX_STRING_LEN + 1))).unwrap()),
            ]
        }

        fn dict() -> impl Strategy<Value = HashMap<String, OwnedVariant>> {
            let key = prop_oneof![proptest::sample::select(KEYS.to_vec()).prop_map(String::from), any::<String>()];
            proptest::collection::hash_map(key, value(), 0..6)
        }

        proptest! {
            #[test]
            fn parsing_never_panics_and_accepts_only_known_well_typed_keys(m in proptest::sample::select(METHODS.to_vec()), d in dict()) {
                match Options::parse(m, &d) {
                    Ok(o) => {
                        for (k, v) in &d {
                            let kind = m.accepted().iter().find(|(name, _)| name == k).map(|(_, kind)| *kind);
                            prop_assert!(kind.is_some(), "accepted unknown key {:?}", k);
                            let well_typed = match kind.unwrap() {
                                Kind::Bool => as_bool(v).is_some(),
                                Kind::Str => as_str(v).is_some(),
                            };
                            prop_assert!(well_typed, "accepted {:?} with the wrong type", k);
                        }
                        prop_assert!(!(o.download_only && o.apply));
                    }
                    Err(e) => prop_assert_eq!(e.short_name(), "InvalidArgument"),
                }
            }
        }
    }
}
