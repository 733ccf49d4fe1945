//! Validation against bootc's published JSON schemas (shared/reference/),
//! draft 2020-12 with formats checked, by the `jsonschema` crate.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Where the shared reference material lives: `shared/reference` beside the
/// repository, or `HOSTD_REFERENCE_DIR` for a checkout elsewhere.
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("HOSTD_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::repo_root().parent().expect("repo has a parent").join("shared/reference"),
    }
}

/// Validate `instance` against the named schema file in the reference dir;
/// the error lists every violation with its JSON pointer.
pub fn validate(schema_file: &str, instance: &serde_json::Value) -> Result<()> {
    let path = reference_dir().join(schema_file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| anyhow::anyhow!("compiling {schema_file}: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        bail!("does not validate against {schema_file}:\n{}", errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_that_breaks_the_host_schema_is_reported_with_its_path() {
        let bad = serde_json::json!({
            "apiVersion": "org.containers.bootc/v1",
            "kind": "BootcHost",
            "metadata": {"name": "host"},
            "spec": {"image": {"image": 7, "transport": "registry"}},
            "status": {}
        });
        let e = validate("bootc-host-v1.schema.json", &bad).unwrap_err().to_string();
        assert!(e.contains("/spec/image"), "{e}");
    }

    fn booted_built_at(timestamp: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "org.containers.bootc/v1",
            "kind": "BootcHost",
            "metadata": {"name": "host"},
            "spec": {"image": {"image": "quay.io/os:latest", "transport": "registry"}},
            "status": {
                "booted": {
                    "image": {
                        "image": {"image": "quay.io/os:latest", "transport": "registry"},
                        "imageDigest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                        "timestamp": timestamp,
                        "version": null,
                        "architecture": "amd64"
                    },
                    "incompatible": false,
                    "pinned": false
                },
                "type": "bootcHost"
            }
        })
    }

    #[test]
    fn a_timestamp_that_is_not_rfc3339_fails_the_format_check() {
        validate("bootc-host-v1.schema.json", &booted_built_at("2026-11-30T08:00:00Z")).unwrap();
        let e = validate("bootc-host-v1.schema.json", &booted_built_at("yesterday")).unwrap_err().to_string();
        assert!(e.contains("/status/booted") && e.contains("yesterday"), "{e}");
    }
}
