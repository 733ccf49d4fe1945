//! What `EtcDiff` returns: how a deployment's `/etc` differs from the
//! image's defaults in its `/usr/etc`, as `ostree admin config-diff` shows
//! it. Paths and kinds of change only, never file contents.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

wire_enum! {
    /// Which deployment's `/etc` to compare (the `deployment` option).
    pub enum EtcDiffTarget {
        /// The booted deployment; on an offline sysroot, the default one
        /// (the merge deployment).
        Booted = "booted",
        /// The deployment staged for the next boot (booted hosts only).
        Staged = "staged",
    }
}

wire_enum! {
    /// How one path differs.
    pub enum EtcChangeKind {
        /// In `/etc`, not in `/usr/etc`.
        Added = "added",
        /// In `/usr/etc`, not in `/etc`.
        Removed = "removed",
        /// In both, with a different type, mode, owner or content.
        Modified = "modified",
    }
}

wire_enum! {
    /// The type of a file.
    pub enum EtcFileType {
        /// A regular file.
        File = "file",
        /// A directory.
        Directory = "directory",
        /// A symbolic link.
        Symlink = "symlink",
        /// A device, FIFO or socket.
        Other = "other",
    }
}

/// One changed path.
///
/// An added or removed directory is one entry: what lies under it is not
/// listed (as `ostree admin config-diff` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcChange {
    /// The path as seen on the host, e.g. `/etc/motd`.
    pub path: String,
    /// Added, removed or modified.
    pub kind: EtcChangeKind,
    /// The type in `/etc` (for a removed path: in `/usr/etc`).
    #[serde(rename = "type")]
    pub file_type: EtcFileType,
    /// Modified paths whose type changed: the type in `/usr/etc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_type: Option<EtcFileType>,
    /// The permission bits in `/etc` (for a removed path: in `/usr/etc`),
    /// in octal, e.g. `0644`.
    pub mode: String,
    /// Modified paths whose permission bits changed: the bits in `/usr/etc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_mode: Option<String>,
    /// Modified paths: owner or group changed.
    #[serde(default)]
    pub owner_changed: bool,
    /// Modified paths of the same type: the content (a symlink's target)
    /// changed.
    #[serde(default)]
    pub content_changed: bool,
}

/// The answer of `EtcDiff`, as its JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcDiff {
    /// The deployment compared, `<checksum>.<serial>`.
    pub deployment: String,
    /// Changed paths, sorted by path.
    pub changes: Vec<EtcChange>,
}

/// Permission bits (with setuid, setgid and sticky) as `0644`.
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_serialize_with_camel_case_names_and_octal_modes() {
        let change = EtcChange {
            path: "/etc/hosts".into(),
            kind: EtcChangeKind::Modified,
            file_type: EtcFileType::File,
            previous_type: None,
            mode: format_mode(0o100600),
            previous_mode: Some(format_mode(0o644)),
            owner_changed: false,
            content_changed: true,
        };
        let v = serde_json::to_value(&change).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"path": "/etc/hosts", "kind": "modified", "type": "file", "mode": "0600",
                "previousMode": "0644", "ownerChanged": false, "contentChanged": true})
        );
        assert_eq!(serde_json::from_value::<EtcChange>(v).unwrap(), change);
    }
}
