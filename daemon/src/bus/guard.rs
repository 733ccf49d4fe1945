//! Argument signature checking in front of an `#[interface]` object.
//!
//! zbus answers a call whose arguments do not deserialize with the generic
//! `org.freedesktop.DBus.Error.InvalidArgs`. hostd promises one error
//! vocabulary, so this wrapper compares the incoming body signature with the
//! introspected one first and answers `org.hostd.Host1.Error.InvalidArgument`.

use std::collections::HashMap;
use std::fmt::Write;

use hostd_interface::Error;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::{fdo, BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant};

/// An interface whose method calls are signature-checked before dispatch.
pub struct SignatureGuard<I> {
    inner: I,
    /// Method name → concatenated signature of its in-arguments.
    expected: HashMap<String, String>,
}

impl<I: Interface> SignatureGuard<I> {
    /// Wrap `inner`, learning its method signatures from its introspection.
    pub fn new(inner: I) -> SignatureGuard<I> {
        let mut xml = String::new();
        inner.introspect_to_writer(&mut xml, 0);
        SignatureGuard {
            inner,
            expected: in_signatures(&xml),
        }
    }

    /// The wrapped interface.
    pub fn inner(&self) -> &I {
        &self.inner
    }
}

/// Parse `<method name="…">` / `<arg type="…" direction="in"/>` lines as
/// written by zbus's introspection.
fn in_signatures(xml: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<method ") {
            let name = attribute(line, "name").unwrap_or_default();
            if line.ends_with("/>") {
                out.insert(name, String::new());
            } else {
                current = Some((name, String::new()));
            }
        } else if line.starts_with("</method>") {
            if let Some((name, sig)) = current.take() {
                out.insert(name, sig);
            }
        } else if line.starts_with("<arg ") {
            if let Some((_, sig)) = current.as_mut() {
                if attribute(line, "direction").as_deref() != Some("out") {
                    sig.push_str(&attribute(line, "type").unwrap_or_default());
                }
            }
        }
    }
    out
}

fn attribute(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

#[zbus::export::async_trait::async_trait]
impl<I: Interface> Interface for SignatureGuard<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        self.inner.get(property_name, server, connection, header, emitter).await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        self.inner.get_all(server, connection, header, emitter).await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Variant<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        self.inner.set(property_name, value, server, connection, header, emitter)
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        self.inner
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        if let Some(expected) = self.expected.get(name.as_str()) {
            let got = msg.body().signature().to_string_no_parens();
            if &got != expected {
                let err = Error::InvalidArgument(format!(
                    "{name} takes arguments of type '{expected}', got '{got}'"
                ));
                return DispatchResult::new_async(connection, msg, async move {
                    Err::<(), Error>(err)
                });
            }
        }
        self.inner.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        self.inner.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        self.inner.introspect_to_writer(writer, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_arguments_only() {
        let xml = r#"<interface name="x">
  <method name="Switch">
    <arg name="image" type="s" direction="in"/>
    <arg name="options" type="a{sv}" direction="in"/>
    <arg type="o" direction="out"/>
  </method>
  <method name="ReloadConfig">
  </method>
  <method name="Nothing"/>
</interface>"#;
        let m = in_signatures(xml);
        assert_eq!(m["Switch"], "sa{sv}");
        assert_eq!(m["ReloadConfig"], "");
        assert_eq!(m["Nothing"], "");
    }
}
