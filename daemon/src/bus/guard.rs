//! Argument signature checking in front of an `#[interface]` object.
//!
//! zbus answers a call whose arguments do not deserialize with the generic
//! `org.freedesktop.DBus.Error.InvalidArgs`. hostd promises one error
//! vocabulary, so this wrapper compares the incoming body signature with the
//! introspected one first and answers `org.hostd.Host1.Error.InvalidArgument`.
//!
//! It also refuses a call whose body is larger than [`MAX_CALL_BYTES`]
//! before anything decodes it: a dictionary of a million keys costs only
//! its bytes here, where decoding it first would cost hundreds of megabytes
//! before the option parser could count the keys.

use std::collections::HashMap;
use std::fmt::Write;

use hostd_interface::options::MAX_CALL_BYTES;
use hostd_interface::Error;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::{fdo, BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant};

/// An interface whose method calls are signature-checked before dispatch.
#[derive(Debug)]
pub struct SignatureGuard<I> {
    inner: I,
    /// Method name → concatenated signature of its in-arguments.
    expected: HashMap<String, String>,
}

impl<I: Interface> SignatureGuard<I> {
    /// Wrap `inner`, learning its method signatures from its introspection
    /// (the same data the committed interface XML is checked against).
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

impl<I> SignatureGuard<I> {
    /// Whether a call of method `name` may be decoded: its body is at most
    /// [`MAX_CALL_BYTES`] (looked at as bytes only) and has the method's
    /// signature.
    fn check(&self, msg: &Message, name: &MemberName<'_>) -> Result<(), Error> {
        check_size(name, msg.body().len())?;
        if let Some(expected) = self.expected.get(name.as_str()) {
            let got = msg.body().signature().to_string_no_parens();
            if &got != expected {
                return Err(Error::InvalidArgument(format!(
                    "{name} takes arguments of type '{expected}', got '{got}'"
                )));
            }
        }
        Ok(())
    }
}

fn check_size(name: &MemberName<'_>, body_len: usize) -> Result<(), Error> {
    if body_len > MAX_CALL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{name}: the arguments are {body_len} bytes; at most {MAX_CALL_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// Method name → the concatenated types of its in-arguments, from an
/// `<interface>` element of introspection XML.
///
/// Panics on XML that does not parse: it is zbus's own output for an
/// interface compiled into the daemon, so that is a programming error.
fn in_signatures(interface_xml: &str) -> HashMap<String, String> {
    let document = format!("<node>{interface_xml}</node>");
    let node = zbus_xml::Node::try_from(document.as_str()).expect("introspection XML of a built-in interface");
    node.interfaces()
        .iter()
        .flat_map(|iface| iface.methods())
        .map(|method| {
            let signature: String = method
                .args()
                .iter()
                .filter(|arg| arg.direction() != Some(zbus_xml::ArgDirection::Out))
                .map(|arg| arg.ty().to_string())
                .collect();
            (method.name().to_string(), signature)
        })
        .collect()
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
        if let Err(err) = self.check(msg, &name) {
            return DispatchResult::new_async(connection, msg, async move { Err::<(), Error>(err) });
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
        if let Err(err) = self.check(msg, &name) {
            return DispatchResult::new_async(connection, msg, async move { Err::<(), Error>(err) });
        }
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
    fn size_limit_is_inclusive() {
        let name = MemberName::from_static_str("Status").unwrap();
        assert!(check_size(&name, MAX_CALL_BYTES).is_ok());
        assert_eq!(
            check_size(&name, MAX_CALL_BYTES + 1),
            Err(Error::InvalidArgument(format!(
                "Status: the arguments are {} bytes; at most {MAX_CALL_BYTES} are accepted",
                MAX_CALL_BYTES + 1
            )))
        );
    }

    #[test]
    fn reads_in_arguments_only() {
        let xml = r#"<interface name="org.example.X">
  <method name="Switch">
    <arg name="image" type="s" direction="in"/>
    <arg name="options" type="a{sv}" direction="in"/>
    <arg type="o" direction="out"/>
  </method>
  <method name="ReloadConfig">
  </method>
  <method name="Nothing"/>
  <method name="Implicit">
    <arg type="s"/>
  </method>
  <property name="State" type="s" access="read"/>
</interface>"#;
        let m = in_signatures(xml);
        assert_eq!(m["Switch"], "sa{sv}");
        assert_eq!(m["ReloadConfig"], "");
        assert_eq!(m["Nothing"], "");
        // A method argument without a direction is an in-argument.
        assert_eq!(m["Implicit"], "s");
        assert_eq!(m.len(), 4);
    }
}
