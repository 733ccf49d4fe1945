//! `hostctl etc-diff`.

use std::io::{self, Write};

use hostd_interface::etc_diff::{EtcChange, EtcChangeKind, EtcDiff, EtcDiffTarget};
use hostd_interface::options as opt;
use hostd_interface::Error;
use zbus::Variant;

use super::{options, Caller};
use crate::cli::{DeploymentArg, EtcDiffArgs};
use crate::exit::Code;

/// Ask hostd for the changes and print them as text or JSON.
pub async fn run(call: &Caller<'_>, args: &EtcDiffArgs) -> Result<Code, Error> {
    let target = match args.deployment {
        DeploymentArg::Booted => EtcDiffTarget::Booted,
        DeploymentArg::Staged => EtcDiffTarget::Staged,
    };
    let opts = options(&[(opt::DEPLOYMENT, Variant::from(target.as_str()))]);
    let json: String = call.call("EtcDiff", &(opts,)).await?;
    let diff: EtcDiff = serde_json::from_str(&json)
        .map_err(|e| Error::Failed(format!("hostd sent /etc changes this client cannot read: {e}")))?;
    crate::output::print_document(args.json, &diff, render);
    Ok(Code::Success)
}

/// One line per change, as `ostree admin config-diff` prints them (A, D, M),
/// with what changed on modified paths.
pub fn render(out: &mut impl Write, diff: &EtcDiff) -> io::Result<()> {
    if diff.changes.is_empty() {
        return writeln!(out, "/etc of {} matches the image's defaults.", diff.deployment);
    }
    for change in &diff.changes {
        let letter = match change.kind {
            EtcChangeKind::Added => 'A',
            EtcChangeKind::Removed => 'D',
            EtcChangeKind::Modified => 'M',
        };
        let what = what_changed(change);
        if what.is_empty() {
            writeln!(out, "{letter}  {}", change.path)?;
        } else {
            writeln!(out, "{letter}  {}  ({})", change.path, what.join(", "))?;
        }
    }
    Ok(())
}

fn what_changed(c: &EtcChange) -> Vec<String> {
    let mut what = Vec::new();
    match c.kind {
        EtcChangeKind::Added | EtcChangeKind::Removed => what.push(format!("{} {}", c.file_type, c.mode)),
        EtcChangeKind::Modified => {
            if let Some(was) = c.previous_type {
                what.push(format!("type {was} -> {}", c.file_type));
            }
            if let Some(was) = &c.previous_mode {
                what.push(format!("mode {was} -> {}", c.mode));
            }
            if c.owner_changed {
                what.push("owner".into());
            }
            if c.content_changed {
                what.push(if c.file_type == hostd_interface::etc_diff::EtcFileType::Symlink { "target" } else { "content" }.into());
            }
        }
    }
    what
}

#[cfg(test)]
mod tests {
    use hostd_interface::etc_diff::EtcFileType;

    use super::*;

    fn change(path: &str, kind: EtcChangeKind, file_type: EtcFileType, mode: &str) -> EtcChange {
        EtcChange {
            path: path.into(),
            kind,
            file_type,
            previous_type: None,
            mode: mode.into(),
            previous_mode: None,
            owner_changed: false,
            content_changed: false,
        }
    }

    #[test]
    fn each_change_is_one_line_saying_what_changed() {
        let mut modified = change("/etc/hosts", EtcChangeKind::Modified, EtcFileType::File, "0600");
        modified.previous_mode = Some("0644".into());
        modified.content_changed = true;
        let mut retyped = change("/etc/x", EtcChangeKind::Modified, EtcFileType::Directory, "0755");
        retyped.previous_type = Some(EtcFileType::File);
        let diff = EtcDiff {
            deployment: "abc.0".into(),
            changes: vec![
                change("/etc/added.conf", EtcChangeKind::Added, EtcFileType::File, "0644"),
                modified,
                change("/etc/motd", EtcChangeKind::Removed, EtcFileType::File, "0644"),
                retyped,
            ],
        };
        let mut out = Vec::new();
        render(&mut out, &diff).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A  /etc/added.conf  (file 0644)\n\
             M  /etc/hosts  (mode 0644 -> 0600, content)\n\
             D  /etc/motd  (file 0644)\n\
             M  /etc/x  (type file -> directory)\n"
        );
        let mut out = Vec::new();
        render(&mut out, &EtcDiff { deployment: "abc.0".into(), changes: vec![] }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "/etc of abc.0 matches the image's defaults.\n");
    }
}
