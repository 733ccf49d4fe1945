//! Validation against bootc's published JSON schemas (shared/reference/),
//! with the python3-jsonschema validator (draft 2020-12).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where the shared reference material lives: `shared/reference` beside the
/// repository, or `HOSTD_REFERENCE_DIR` for a checkout elsewhere.
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("HOSTD_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::repo_root().parent().expect("repo has a parent").join("shared/reference"),
    }
}

/// Validate `instance` against the named schema file in the reference dir.
pub fn validate(schema_file: &str, instance: &serde_json::Value) -> Result<()> {
    let schema = reference_dir().join(schema_file);
    anyhow::ensure!(schema.exists(), "{} is missing", schema.display());
    let script = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1]))\n\
        v=jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())\n\
        errs=[f'{list(e.absolute_path)}: {e.message}' for e in v.iter_errors(json.load(sys.stdin))]\n\
        print('\\n'.join(errs)); sys.exit(1 if errs else 0)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3 jsonschema")?;
    child.stdin.take().expect("piped").write_all(instance.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("does not validate against {schema_file}:\n{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
