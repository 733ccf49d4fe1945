//! The settings `SetSettings` changes, `ResetSettings` drops and `Settings`
//! shows: the keys of hostd.toml an update GUI offers, named exactly as in
//! the file (`updates.policy`, `updates.window`, …), with their D-Bus types
//! and a strict parser. An unknown key or a value of the wrong D-Bus type
//! is `InvalidArgument` naming the key. What a value may be (a day name, a
//! time, a length, a zone, a URL) is decided by the daemon's configuration
//! reader, the code that reads the files, so the bus and the files accept
//! exactly the same values.
//!
//! | key | type | hostd.toml |
//! |---|---|---|
//! | `updates.policy` | `s` | `[updates] policy` |
//! | `updates.strategy` | `s` | `[updates] strategy` |
//! | `updates.time_zone` | `s` | `[updates] time_zone` |
//! | `updates.window` | `aa{sv}` (`days` `as`, `start` `s`, `length` `u` minutes) | `[[updates.window]]` |
//! | `updates.fleet_lock.url` | `s` | `[updates.fleet_lock] url` |
//! | `updates.fleet_lock.group` | `s` | `[updates.fleet_lock] group` |

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::manager::{UpdatePolicy, UpdateStrategy};
use crate::options::{truncate, MAX_KEYS, MAX_STRING_LEN};
use crate::Error;

/// `[updates] policy`: what an unattended run does.
pub const POLICY: &str = "updates.policy";
/// `[updates] strategy`: when an unattended run may reboot.
pub const STRATEGY: &str = "updates.strategy";
/// `[updates] time_zone`: the zone the windows are read in.
pub const TIME_ZONE: &str = "updates.time_zone";
/// `[[updates.window]]`: the maintenance windows, as one list.
pub const WINDOW: &str = "updates.window";
/// `[updates.fleet_lock] url`: the lock manager.
pub const FLEET_LOCK_URL: &str = "updates.fleet_lock.url";
/// `[updates.fleet_lock] group`: the reboot group.
pub const FLEET_LOCK_GROUP: &str = "updates.fleet_lock.group";

/// Every key, in the order `Settings` and `hostctl config get` list them.
pub const KEYS: [&str; 6] = [POLICY, STRATEGY, TIME_ZONE, WINDOW, FLEET_LOCK_URL, FLEET_LOCK_GROUP];

/// A window's days (`as`), as in `[[updates.window]]`.
pub const WINDOW_DAYS: &str = "days";
/// A window's start (`s`, `HH:MM`).
pub const WINDOW_START: &str = "start";
/// A window's length (`u`, minutes).
pub const WINDOW_LENGTH: &str = "length";

/// Most windows accepted in one call.
pub const MAX_WINDOWS: usize = 64;

/// One `[[updates.window]]` as it travels. A key left out stays out of
/// the file, and the configuration reader names it as missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSetting {
    /// `days`: day names (`Mon` … `Sun`, or the full names).
    pub days: Option<Vec<String>>,
    /// `start`: `HH:MM`, 24-hour, in the windows' time zone.
    pub start: Option<String>,
    /// `length`: minutes.
    pub length: Option<u32>,
}

/// Settings as `SetSettings` takes them and `Settings` returns them: each
/// key present is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `updates.policy`
    pub policy: Option<UpdatePolicy>,
    /// `updates.strategy`
    pub strategy: Option<UpdateStrategy>,
    /// `updates.time_zone` (an IANA name)
    pub time_zone: Option<String>,
    /// `updates.window`: the whole list; empty clears it.
    pub windows: Option<Vec<WindowSetting>>,
    /// `updates.fleet_lock.url`
    pub fleet_lock_url: Option<String>,
    /// `updates.fleet_lock.group`
    pub fleet_lock_group: Option<String>,
}

impl Settings {
    /// Parse the dictionary given to `method` (for error messages).
    /// Unknown keys, wrong D-Bus types, unknown policy or strategy names
    /// are `InvalidArgument` naming the key.
    pub fn parse(method: &str, dict: &HashMap<String, OwnedVariant>) -> Result<Settings, Error> {
        if dict.len() > MAX_KEYS {
            return Err(invalid(format!("{method}: too many settings ({} > {MAX_KEYS})", dict.len())));
        }
        let mut keys: Vec<&String> = dict.keys().collect();
        // Deterministic error text when several keys are wrong.
        keys.sort();
        let mut out = Settings::default();
        for key in keys {
            let value: &Variant<'_> = &dict[key];
            let Some(known) = KEYS.iter().copied().find(|k| k == key) else {
                return Err(unknown_key(method, key));
            };
            match known {
                POLICY => {
                    let name = string(method, known, value)?;
                    out.policy = Some(name.parse().map_err(|_| unknown_name(method, known, name, UpdatePolicy::ALL))?);
                }
                STRATEGY => {
                    let name = string(method, known, value)?;
                    out.strategy =
                        Some(name.parse().map_err(|_| unknown_name(method, known, name, UpdateStrategy::ALL))?);
                }
                TIME_ZONE => out.time_zone = Some(string(method, known, value)?.to_string()),
                WINDOW => out.windows = Some(windows(method, value)?),
                FLEET_LOCK_URL => out.fleet_lock_url = Some(string(method, known, value)?.to_string()),
                FLEET_LOCK_GROUP => out.fleet_lock_group = Some(string(method, known, value)?.to_string()),
                _ => unreachable!("KEYS and the parser disagree on {known}"),
            }
        }
        Ok(out)
    }

    /// The keys set, in [`KEYS`] order.
    pub fn keys(&self) -> Vec<&'static str> {
        let set = [
            self.policy.is_some(),
            self.strategy.is_some(),
            self.time_zone.is_some(),
            self.windows.is_some(),
            self.fleet_lock_url.is_some(),
            self.fleet_lock_group.is_some(),
        ];
        KEYS.iter().zip(set).filter(|(_, set)| *set).map(|(k, _)| *k).collect()
    }

    /// The dictionary that carries these settings.
    pub fn to_dict(&self) -> HashMap<String, OwnedVariant> {
        let mut dict = HashMap::new();
        let mut put = |key: &str, value: Variant<'_>| {
            let owned = value.try_to_owned().expect("plain values convert");
            dict.insert(key.to_string(), owned);
        };
        if let Some(p) = self.policy {
            put(POLICY, Variant::from(p.as_str()));
        }
        if let Some(s) = self.strategy {
            put(STRATEGY, Variant::from(s.as_str()));
        }
        if let Some(z) = &self.time_zone {
            put(TIME_ZONE, Variant::from(z.as_str()));
        }
        if let Some(windows) = &self.windows {
            let list: Vec<HashMap<&str, Variant<'_>>> = windows.iter().map(window_dict).collect();
            put(WINDOW, Variant::from(list));
        }
        if let Some(u) = &self.fleet_lock_url {
            put(FLEET_LOCK_URL, Variant::from(u.as_str()));
        }
        if let Some(g) = &self.fleet_lock_group {
            put(FLEET_LOCK_GROUP, Variant::from(g.as_str()));
        }
        dict
    }
}

/// The keys given to `ResetSettings`, checked against [`KEYS`]; at least one.
pub fn parse_keys(method: &str, keys: &[String]) -> Result<Vec<&'static str>, Error> {
    if keys.is_empty() {
        return Err(invalid(format!("{method}: name at least one setting (known: {})", KEYS.join(", "))));
    }
    if keys.len() > MAX_KEYS {
        return Err(invalid(format!("{method}: too many settings ({} > {MAX_KEYS})", keys.len())));
    }
    keys.iter()
        .map(|key| KEYS.iter().copied().find(|k| k == key).ok_or_else(|| unknown_key(method, key)))
        .collect()
}

fn window_dict(w: &WindowSetting) -> HashMap<&'static str, Variant<'static>> {
    let mut d = HashMap::new();
    if let Some(days) = &w.days {
        d.insert(WINDOW_DAYS, Variant::from(days.clone()));
    }
    if let Some(start) = &w.start {
        d.insert(WINDOW_START, Variant::from(start.clone()));
    }
    if let Some(length) = w.length {
        d.insert(WINDOW_LENGTH, Variant::from(length));
    }
    d
}

/// `updates.window`: `aa{sv}`, each dictionary with only the window keys.
fn windows(method: &str, value: &Variant<'_>) -> Result<Vec<WindowSetting>, Error> {
    let value = unwrap_variant(value);
    if value.value_signature() != "aa{sv}" {
        return Err(wrong_type(method, WINDOW, "aa{sv}", value));
    }
    let list: Vec<HashMap<String, OwnedVariant>> = value
        .try_clone()
        .and_then(|v| v.downcast())
        .map_err(|e| invalid(format!("{method}: {WINDOW}: {e}")))?;
    if list.len() > MAX_WINDOWS {
        return Err(invalid(format!("{method}: {WINDOW}: too many windows ({} > {MAX_WINDOWS})", list.len())));
    }
    list.iter().enumerate().map(|(i, dict)| window(method, i, dict)).collect()
}

fn window(method: &str, index: usize, dict: &HashMap<String, OwnedVariant>) -> Result<WindowSetting, Error> {
    let mut keys: Vec<&String> = dict.keys().collect();
    keys.sort();
    let mut w = WindowSetting::default();
    for key in keys {
        let value = unwrap_variant(&dict[key]);
        let name = format!("{WINDOW}[{index}].{}", truncate(key));
        match key.as_str() {
            WINDOW_DAYS => {
                let days = match value {
                    Variant::Array(a) if value.value_signature() == "as" && a.len() <= 7 * 4 => a
                        .inner()
                        .iter()
                        .map(|d| match d {
                            Variant::Str(s) if s.len() <= MAX_STRING_LEN => Ok(s.to_string()),
                            other => Err(wrong_type(method, &name, "s", other)),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Variant::Array(_) if value.value_signature() == "as" => {
                        return Err(invalid(format!("{method}: {name}: too many days")))
                    }
                    other => return Err(wrong_type(method, &name, "as", other)),
                };
                w.days = Some(days);
            }
            WINDOW_START => w.start = Some(string(method, &name, value)?.to_string()),
            WINDOW_LENGTH => match value {
                Variant::U32(n) => w.length = Some(*n),
                other => return Err(wrong_type(method, &name, "u", other)),
            },
            _ => {
                return Err(invalid(format!(
                    "{method}: {WINDOW}[{index}]: unknown key '{}' (accepted: {WINDOW_DAYS}, {WINDOW_START}, {WINDOW_LENGTH})",
                    truncate(key)
                )))
            }
        }
    }
    Ok(w)
}

/// A value sent as a variant inside the variant is read as what it holds.
fn unwrap_variant<'a, 'b>(v: &'a Variant<'b>) -> &'a Variant<'b> {
    match v {
        Variant::Variant(inner) => inner,
        other => other,
    }
}

fn string<'a>(method: &str, key: &str, value: &'a Variant<'_>) -> Result<&'a str, Error> {
    match unwrap_variant(value) {
        Variant::Str(s) if s.len() <= MAX_STRING_LEN => Ok(s.as_str()),
        other => Err(wrong_type(method, key, "s", other)),
    }
}

fn unknown_key(method: &str, key: &str) -> Error {
    invalid(format!("{method}: unknown setting '{}' (known: {})", truncate(key), KEYS.join(", ")))
}

fn unknown_name<T: std::fmt::Display>(method: &str, key: &str, name: &str, all: &[T]) -> Error {
    let names: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    invalid(format!("{method}: {key}: unknown value '{}' (expected one of: {})", truncate(name), names.join(", ")))
}

fn wrong_type(method: &str, key: &str, want: &str, got: &Variant<'_>) -> Error {
    let detail = match got {
        Variant::Str(s) if s.len() > MAX_STRING_LEN => format!("string longer than {MAX_STRING_LEN} bytes"),
        _ => format!("got '{}'", got.value_signature()),
    };
    invalid(format!("{method}: {key} must be of type '{want}', {detail}"))
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: Vec<(&str, Variant<'static>)>) -> HashMap<String, OwnedVariant> {
        entries.into_iter().map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap())).collect()
    }

    fn error(entries: Vec<(&str, Variant<'static>)>) -> String {
        match Settings::parse("SetSettings", &dict(entries)) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_key_round_trips_through_its_dictionary() {
        let all = Settings {
            policy: Some(UpdatePolicy::Stage),
            strategy: Some(UpdateStrategy::FleetLock),
            time_zone: Some("Europe/Berlin".into()),
            windows: Some(vec![
                WindowSetting { days: Some(vec!["Sat".into(), "Sun".into()]), start: Some("23:30".into()), length: Some(90) },
                WindowSetting { days: None, start: Some("01:00".into()), length: None },
            ]),
            fleet_lock_url: Some("http://127.0.0.1:8080".into()),
            fleet_lock_group: Some("workers".into()),
        };
        assert_eq!(all.keys(), KEYS);
        assert_eq!(Settings::parse("SetSettings", &all.to_dict()).unwrap(), all);
        let cleared = Settings { windows: Some(Vec::new()), ..Settings::default() };
        assert_eq!(cleared.keys(), [WINDOW]);
        assert_eq!(Settings::parse("SetSettings", &cleared.to_dict()).unwrap(), cleared);
    }

    #[test]
    fn unknown_keys_and_names_are_named() {
        assert_eq!(
            error(vec![("updates.require_signatures", Variant::Bool(false))]),
            "SetSettings: unknown setting 'updates.require_signatures' (known: updates.policy, updates.strategy, \
             updates.time_zone, updates.window, updates.fleet_lock.url, updates.fleet_lock.group)"
        );
        assert_eq!(
            error(vec![(POLICY, Variant::from("sometimes"))]),
            "SetSettings: updates.policy: unknown value 'sometimes' (expected one of: none, check, download, stage, apply)"
        );
        assert_eq!(
            error(vec![(STRATEGY, Variant::from("fleet_lock"))]),
            "SetSettings: updates.strategy: unknown value 'fleet_lock' (expected one of: immediate, periodic, fleet-lock)"
        );
        let window = HashMap::from([("days", Variant::from(vec!["Sun"])), ("hours", Variant::from(2u32))]);
        assert_eq!(
            error(vec![(WINDOW, Variant::from(vec![window]))]),
            "SetSettings: updates.window[0]: unknown key 'hours' (accepted: days, start, length)"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(
            error(vec![(POLICY, Variant::U32(3))]),
            "SetSettings: updates.policy must be of type 's', got 'u'"
        );
        assert_eq!(
            error(vec![(WINDOW, Variant::from("Sat 01:00 60"))]),
            "SetSettings: updates.window must be of type 'aa{sv}', got 's'"
        );
        let window = HashMap::from([("length", Variant::from("90"))]);
        assert_eq!(
            error(vec![(WINDOW, Variant::from(vec![window]))]),
            "SetSettings: updates.window[0].length must be of type 'u', got 's'"
        );
        let window = HashMap::from([("days", Variant::from("Sun"))]);
        assert_eq!(
            error(vec![(WINDOW, Variant::from(vec![window]))]),
            "SetSettings: updates.window[0].days must be of type 'as', got 's'"
        );
    }

    #[test]
    fn reset_keys_must_be_known_and_named() {
        assert_eq!(parse_keys("ResetSettings", &[POLICY.to_string(), WINDOW.to_string()]).unwrap(), [POLICY, WINDOW]);
        assert!(matches!(parse_keys("ResetSettings", &[]), Err(Error::InvalidArgument(m)) if m.contains("at least one")));
        assert!(matches!(
            parse_keys("ResetSettings", &["policy".to_string()]),
            Err(Error::InvalidArgument(m)) if m.contains("unknown setting 'policy'")
        ));
    }
}
