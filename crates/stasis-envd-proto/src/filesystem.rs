//! `filesystem.Filesystem` messages (E2B `spec/envd/filesystem/filesystem.proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::json::{int64, is_false, is_zero, u32_lenient};

/// `FileType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileType {
    /// Anything that is not a regular file, directory or symlink.
    #[default]
    #[serde(rename = "FILE_TYPE_UNSPECIFIED")]
    Unspecified,
    /// Regular file.
    #[serde(rename = "FILE_TYPE_FILE")]
    File,
    /// Directory.
    #[serde(rename = "FILE_TYPE_DIRECTORY")]
    Directory,
    /// Symbolic link.
    #[serde(rename = "FILE_TYPE_SYMLINK")]
    Symlink,
}

impl FileType {
    fn is_unspecified(&self) -> bool {
        *self == FileType::Unspecified
    }
}

/// `EntryInfo`: what `Stat`, `ListDir`, `MakeDir`, `Move` and watch events report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// Base name.
    #[serde(default)]
    pub name: String,
    /// Type.
    #[serde(
        default,
        rename = "type",
        skip_serializing_if = "FileType::is_unspecified"
    )]
    pub file_type: FileType,
    /// Absolute path.
    #[serde(default)]
    pub path: String,
    /// Size in bytes (int64: a JSON string).
    #[serde(default, with = "int64", skip_serializing_if = "is_zero")]
    pub size: i64,
    /// Permission bits only (`0o755` for a usual directory), as envd sends Go's
    /// `FileMode.Perm()`; a symlink's are its target's. The type is in `file_type`.
    #[serde(
        default,
        deserialize_with = "u32_lenient",
        skip_serializing_if = "is_zero"
    )]
    pub mode: u32,
    /// `ls -l` style permissions, e.g. `-rw-r--r--`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    /// Owner user name (or uid when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Owner group name (or gid when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Modification time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// `user.e2b.*` extended attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A request that only names a path (`StatRequest`, `MakeDirRequest`, `RemoveRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    /// The path.
    #[serde(default)]
    pub path: String,
}

/// `StatRequest`.
pub type StatRequest = PathRequest;
/// `MakeDirRequest`.
pub type MakeDirRequest = PathRequest;
/// `RemoveRequest`.
pub type RemoveRequest = PathRequest;

/// A response holding one entry (`StatResponse`, `MakeDirResponse`, `MoveResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    /// The entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `MoveRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// Current path.
    #[serde(default)]
    pub source: String,
    /// New path.
    #[serde(default)]
    pub destination: String,
}

/// `ListDirRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirRequest {
    /// Directory to list.
    #[serde(default)]
    pub path: String,
    /// How many levels to descend (0 is treated as 1).
    #[serde(
        default,
        deserialize_with = "u32_lenient",
        skip_serializing_if = "is_zero"
    )]
    pub depth: u32,
}

/// `ListDirResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirResponse {
    /// Entries, the directory itself excluded.
    #[serde(default)]
    pub entries: Vec<EntryInfo>,
}

/// `WatchDirRequest` and `CreateWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchDirRequest {
    /// Directory to watch.
    #[serde(default)]
    pub path: String,
    /// Watch subdirectories too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
    /// Attach an `EntryInfo` to each event.
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_entry: bool,
    /// Accepted and ignored (no network mounts inside a sandbox).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_network_mounts: bool,
}

/// `CreateWatcherRequest`.
pub type CreateWatcherRequest = WatchDirRequest;

/// `EventType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Unknown.
    #[default]
    #[serde(rename = "EVENT_TYPE_UNSPECIFIED")]
    Unspecified,
    /// Created or moved in.
    #[serde(rename = "EVENT_TYPE_CREATE")]
    Create,
    /// Written.
    #[serde(rename = "EVENT_TYPE_WRITE")]
    Write,
    /// Removed.
    #[serde(rename = "EVENT_TYPE_REMOVE")]
    Remove,
    /// Renamed or moved out.
    #[serde(rename = "EVENT_TYPE_RENAME")]
    Rename,
    /// Attributes changed.
    #[serde(rename = "EVENT_TYPE_CHMOD")]
    Chmod,
}

/// `FilesystemEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemEvent {
    /// Path relative to the watched directory.
    #[serde(default)]
    pub name: String,
    /// What happened.
    #[serde(default, rename = "type")]
    pub event_type: EventType,
    /// The entry, when requested and still present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `WatchDirResponse`: the oneof `event`.
// A short-lived wire message; boxing the event would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    /// First message.
    Start(crate::process::Empty),
    /// A change.
    Filesystem(FilesystemEvent),
    /// Nothing happened for a while.
    Keepalive(crate::process::Empty),
}

/// `CreateWatcherResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    /// Id for `GetWatcherEvents` / `RemoveWatcher`.
    #[serde(default)]
    pub watcher_id: String,
}

/// `GetWatcherEventsRequest` and `RemoveWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherRequest {
    /// The watcher.
    #[serde(default)]
    pub watcher_id: String,
}

/// `GetWatcherEventsResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetWatcherEventsResponse {
    /// Events queued since the last call.
    #[serde(default)]
    pub events: Vec<FilesystemEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_info_matches_the_sdk_accepted_example() {
        let json = r#"{"name":"file.txt","type":"FILE_TYPE_FILE","path":"/tmp/file.txt","size":"12","mode":420,"permissions":"-rw-r--r--","owner":"user","group":"user","modifiedTime":"2026-08-22T10:00:00Z"}"#;
        let e: EntryInfo = serde_json::from_str(json).unwrap();
        assert_eq!(e.size, 12);
        assert_eq!(e.file_type, FileType::File);
        assert_eq!(serde_json::to_string(&e).unwrap(), json);
        let link = EntryInfo {
            name: "l".into(),
            file_type: FileType::Symlink,
            path: "/l".into(),
            symlink_target: Some("/etc".into()),
            ..Default::default()
        };
        let j = serde_json::to_string(&link).unwrap();
        assert_eq!(
            j,
            r#"{"name":"l","type":"FILE_TYPE_SYMLINK","path":"/l","symlinkTarget":"/etc"}"#
        );
        assert_eq!(serde_json::from_str::<EntryInfo>(&j).unwrap(), link);
    }

    #[test]
    fn watch_messages() {
        let req: WatchDirRequest = serde_json::from_str(
            r#"{"path":"/tmp","recursive":true,"includeEntry":false,"allowNetworkMounts":false}"#,
        )
        .unwrap();
        assert!(req.recursive);
        assert_eq!(
            serde_json::to_string(&WatchDirResponse::Start(Default::default())).unwrap(),
            r#"{"start":{}}"#
        );
        let ev = WatchDirResponse::Filesystem(FilesystemEvent {
            name: "a.txt".into(),
            event_type: EventType::Create,
            entry: None,
        });
        let j = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            j,
            r#"{"filesystem":{"name":"a.txt","type":"EVENT_TYPE_CREATE"}}"#
        );
        assert_eq!(serde_json::from_str::<WatchDirResponse>(&j).unwrap(), ev);
        let r: ListDirRequest = serde_json::from_str(r#"{"path":"/tmp","depth":1}"#).unwrap();
        assert_eq!(r.depth, 1);
        let w: CreateWatcherResponse = serde_json::from_str(r#"{"watcherId":"w1"}"#).unwrap();
        assert_eq!(w.watcher_id, "w1");
    }
}
