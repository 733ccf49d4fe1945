//! `hostctl edit`: send an edited Host document; hostd works out the switch
//! or rollback it takes and runs it as a job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hostd_interface::edit::spec_document;
use hostd_interface::host::Host;
use hostd_interface::Error;
use tokio::io::AsyncReadExt;
use zbus::Connection;

use super::job::finish;
use super::{options, Caller};
use crate::cli::EditArgs;
use crate::exit::Code;
use crate::watch;

/// Read or edit the document, send it, and follow the job it starts.
pub async fn run(conn: &Connection, call: &Caller<'_>, args: &EditArgs) -> Result<Code, Error> {
    let document = match &args.filename {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            tokio::io::stdin()
                .read_to_string(&mut text)
                .await
                .map_err(|e| Error::Failed(format!("reading the document from standard input: {e}")))?;
            text
        }
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Error::Failed(format!("reading {}: {e}", path.display())))?,
        None => {
            let json = call.host.status(HashMap::new()).await?;
            let host: Host = serde_json::from_str(&json)
                .map_err(|e| Error::Failed(format!("hostd sent a Host document this client cannot read: {e}")))?;
            let shown = spec_document(&host);
            let edited = edit_in_editor(&shown).await?;
            if edited == shown {
                if !args.output.quiet {
                    crate::output::outln!("The spec was not changed; nothing to do.");
                }
                return Ok(Code::Success);
            }
            edited
        }
    };
    let path = call.start("Edit", &(document.as_str(), options(&[]))).await?;
    if path.as_str() == "/" {
        if !args.output.quiet {
            crate::output::outln!("The host already matches the spec; nothing to do.");
        }
        return Ok(Code::Success);
    }
    finish(watch::follow(conn, &path, &args.output).await?)
}

/// Open `$EDITOR` (else `$VISUAL`, else `vi`; an empty one counts as
/// unset) on `text` in a file of our own; what the file holds when the
/// editor exits successfully. `vi` without a terminal would wait forever:
/// with neither variable set and no terminal, `--filename` is the way.
async fn edit_in_editor(text: &str) -> Result<String, Error> {
    let set = |name: &str| std::env::var(name).ok().filter(|e| !e.trim().is_empty());
    let chosen = set("EDITOR").or_else(|| set("VISUAL"));
    if chosen.is_none() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::InvalidArgument(
            "neither $EDITOR nor $VISUAL is set and stdin is no terminal for vi; \
             give the spec with --filename FILE (or - for stdin)"
                .into(),
        ));
    }
    let editor = chosen.unwrap_or_else(|| "vi".to_string());
    let file = EditFile::create(text).await?;
    // Through the shell, so EDITOR may carry arguments ("code --wait").
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file.path)
        .status()
        .await
        .map_err(|e| Error::Failed(format!("starting the editor '{editor}': {e}")))?;
    if !status.success() {
        return Err(Error::Failed(format!("the editor '{editor}' failed ({status}); nothing was changed")));
    }
    tokio::fs::read_to_string(&file.path)
        .await
        .map_err(|e| Error::Failed(format!("reading back {}: {e}", file.path.display())))
}

/// The file the editor works on, removed when dropped.
struct EditFile {
    path: PathBuf,
}

impl EditFile {
    async fn create(text: &str) -> Result<EditFile, Error> {
        let dir = std::env::temp_dir();
        let mut attempt = 0u32;
        loop {
            let path = dir.join(format!("hostctl-edit-{}-{attempt}.yaml", std::process::id()));
            match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
                Ok(mut f) => {
                    let file = EditFile { path };
                    tokio::io::AsyncWriteExt::write_all(&mut f, text.as_bytes())
                        .await
                        .map_err(|e| Error::Failed(format!("writing {}: {e}", file.path.display())))?;
                    return Ok(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(Error::Failed(format!("creating {}: {e}", path.display()))),
            }
        }
    }
}

impl Drop for EditFile {
    fn drop(&mut self) {
        remove_quietly(&self.path);
    }
}

fn remove_quietly(path: &Path) {
    // Nothing to tell the user if it is already gone.
    let _ = std::fs::remove_file(path);
}
