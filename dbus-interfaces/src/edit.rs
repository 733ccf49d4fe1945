//! The Host document `Edit` takes, as `bootc edit` does: YAML or JSON (JSON
//! is YAML too), with `apiVersion`, `kind`, optional `metadata` and the
//! `spec` the host is to reach. Parsed strictly: an unknown field, a
//! `status` section, or another `apiVersion` or `kind` than bootc's is an
//! `InvalidArgument`, so a typo never passes for "no change".

use serde::{Deserialize, Serialize};

use crate::host::{BootOrder, Host, HostSpec, ImageReference, ImageSignature, ObjectMeta, Transport, API_VERSION, KIND};
use crate::Error;

/// The `apiVersion`s of bootc's Host document `Edit` accepts: the current
/// one and its predecessor, which describe the same `spec`.
pub const ACCEPTED_API_VERSIONS: [&str; 2] = [API_VERSION, "org.containers.bootc/v1alpha1"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Metadata>,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    #[expect(dead_code, reason = "accepted so a document from Status or bootc parses; the host has one name")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    image: Option<Image>,
    #[serde(default)]
    boot_order: BootOrder,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    image: String,
    transport: Transport,
    #[serde(default)]
    signature: Option<ImageSignature>,
}

/// The part of a Host document an edit shows and reads.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Shown<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    spec: &'a HostSpec,
}

/// Parse an edited Host document into the spec it asks for.
pub fn parse(text: &str) -> Result<HostSpec, Error> {
    let invalid = |what: String| Error::InvalidArgument(format!("the Host document {what}"));
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| invalid(format!("is not valid YAML or JSON: {e}")))?;
    let serde_norway::Value::Mapping(top) = &value else {
        return Err(invalid("is not a mapping of apiVersion, kind, metadata and spec".into()));
    };
    if top.contains_key("status") {
        return Err(invalid(
            "has a status section: status is what the host reports, only the spec can be edited".into(),
        ));
    }
    let doc: Document = serde_norway::from_value(value).map_err(|e| invalid(format!("is not a bootc Host spec: {e}")))?;
    if !ACCEPTED_API_VERSIONS.contains(&doc.api_version.as_str()) {
        return Err(invalid(format!(
            "has apiVersion '{}', expected {}",
            doc.api_version,
            ACCEPTED_API_VERSIONS.join(" or ")
        )));
    }
    if doc.kind != KIND {
        return Err(invalid(format!("has kind '{}', expected {KIND}", doc.kind)));
    }
    let _ = doc.metadata;
    Ok(HostSpec {
        image: doc.spec.image.map(|i| ImageReference { image: i.image, transport: i.transport, signature: i.signature }),
        boot_order: doc.spec.boot_order,
    })
}

/// The editable part of `host` as YAML: what `hostctl edit` opens in the
/// editor.
pub fn spec_document(host: &Host) -> String {
    let shown = Shown { api_version: &host.api_version, kind: &host.kind, metadata: &host.metadata, spec: &host.spec };
    serde_norway::to_string(&shown).expect("the spec always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostStatus;

    fn host() -> Host {
        Host::new(
            HostSpec {
                image: Some(ImageReference {
                    image: "quay.io/example/os:1".into(),
                    transport: Transport::Registry,
                    signature: None,
                }),
                boot_order: BootOrder::Default,
            },
            HostStatus::default(),
        )
    }

    #[test]
    fn the_shown_document_parses_back_to_the_same_spec() {
        let shown = spec_document(&host());
        assert!(shown.contains("apiVersion: org.containers.bootc/v1\n"), "{shown}");
        assert!(!shown.contains("status"), "{shown}");
        assert_eq!(parse(&shown).unwrap(), host().spec);
    }

    #[test]
    fn json_and_bootcs_older_api_version_are_accepted() {
        let spec = parse(
            r#"{"apiVersion": "org.containers.bootc/v1alpha1", "kind": "BootcHost",
                "spec": {"image": {"image": "/srv/os", "transport": "oci", "signature": "insecure"}, "bootOrder": "rollback"}}"#,
        )
        .unwrap();
        assert_eq!(spec.boot_order, BootOrder::Rollback);
        assert_eq!(spec.image.unwrap().signature, Some(ImageSignature::Insecure));
    }

    #[test]
    fn status_unknown_fields_and_foreign_documents_are_refused() {
        let base = spec_document(&host());
        for (text, says) in [
            (format!("{base}status: {{}}\n"), "status section"),
            (format!("{base}status: null\n"), "status section"),
            (base.replace("bootOrder", "bootorder"), "unknown field `bootorder`"),
            (base.replace("  image:\n", "  image:\n    tag: x\n"), "unknown field `tag`"),
            (base.replace("transport: registry", "transport: docker"), "unknown variant `docker`"),
            (base.replace("BootcHost", "Pod"), "kind 'Pod'"),
            (base.replace("org.containers.bootc/v1", "v1"), "apiVersion 'v1'"),
            ("- a\n- b\n".to_string(), "not a mapping"),
            ("spec: [".to_string(), "not valid YAML"),
        ] {
            match parse(&text) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(says), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
