//! Filesystem operations behind `filesystem.Filesystem` and `/files`.
//!
//! The agent runs as root; paths resolve against the requesting user's home and
//! directories it creates are handed to that user, as envd does.
#![forbid(unsafe_code)]

pub mod rpc;
pub mod watch;

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stasis_envd_proto::error::{Code, ConnectError};
use stasis_envd_proto::filesystem::{EntryInfo, FileType};
use thiserror::Error;

use crate::paths::PathError;
use crate::users::{IdNames, User};

/// Filesystem failures, each naming the path.
#[derive(Debug, Error)]
pub enum FsError {
    /// Bad path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Missing entry.
    #[error("file or directory '{0}' not found")]
    NotFound(PathBuf),
    /// Not a directory where one is needed.
    #[error("path '{0}' is not a directory")]
    NotADirectory(PathBuf),
    /// Already exists.
    #[error("path '{0}' already exists")]
    AlreadyExists(PathBuf),
    /// Too many entries.
    #[error("listing '{0}' exceeds {1} entries")]
    TooMany(PathBuf, usize),
    /// Any other I/O failure.
    #[error("cannot {op} '{path}': {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// Wraps an I/O error, mapping "not found" to [`FsError::NotFound`].
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound => FsError::NotFound(path.to_path_buf()),
            io::ErrorKind::AlreadyExists => FsError::AlreadyExists(path.to_path_buf()),
            io::ErrorKind::NotADirectory => FsError::NotADirectory(path.to_path_buf()),
            _ => FsError::Io {
                op,
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

impl From<FsError> for ConnectError {
    fn from(e: FsError) -> Self {
        let code = match &e {
            FsError::Path(_) | FsError::NotADirectory(_) => Code::InvalidArgument,
            FsError::NotFound(_) => Code::NotFound,
            FsError::AlreadyExists(_) => Code::AlreadyExists,
            FsError::TooMany(..) => Code::ResourceExhausted,
            FsError::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory => Code::InvalidArgument,
                io::ErrorKind::StorageFull => Code::ResourceExhausted,
                _ => Code::Internal,
            },
        };
        ConnectError::new(code, e.to_string())
    }
}

// Go's os.FileMode bits, from which `permissions` is rendered.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHARDEV: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;
const GO_IRREGULAR: u32 = 1 << 19;

/// Converts `st_mode` to Go's `os.FileMode`.
pub fn go_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    m |= match st_mode & 0o170000 {
        0o040000 => GO_DIR,
        0o120000 => GO_SYMLINK,
        0o060000 => GO_DEVICE,
        0o020000 => GO_DEVICE | GO_CHARDEV,
        0o010000 => GO_PIPE,
        0o140000 => GO_SOCKET,
        0o100000 => 0,
        _ => GO_IRREGULAR,
    };
    if st_mode & 0o4000 != 0 {
        m |= GO_SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= GO_SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= GO_STICKY;
    }
    m
}

/// Go's `os.FileMode.String()`, e.g. `-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`.
pub fn go_mode_string(m: u32) -> String {
    const TYPES: &[(u32, char)] = &[
        (GO_DIR, 'd'),
        (1 << 30, 'a'),
        (1 << 29, 'l'),
        (1 << 28, 'T'),
        (GO_SYMLINK, 'L'),
        (GO_DEVICE, 'D'),
        (GO_PIPE, 'p'),
        (GO_SOCKET, 'S'),
        (GO_SETUID, 'u'),
        (GO_SETGID, 'g'),
        (GO_CHARDEV, 'c'),
        (GO_STICKY, 't'),
        (GO_IRREGULAR, '?'),
    ];
    let mut s: String = TYPES
        .iter()
        .filter(|(b, _)| m & b != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if m & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

/// RFC 3339 UTC timestamp.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Describes `path`. A final symlink is not followed for the name, size, times,
/// owner and `permissions`, but it is resolved as envd does: `symlink_target` is the
/// absolute path it finally leads to, and `type` and `mode` are those of that target
/// (a broken link: the link's own path, type unspecified, mode 0).
pub fn entry_info(path: &Path, names: &IdNames) -> Result<EntryInfo, FsError> {
    let md = std::fs::symlink_metadata(path).map_err(|e| FsError::io("stat", path, e))?;
    Ok(entry_from_metadata(path, &md, names))
}

fn file_type_of(ft: std::fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Unspecified
    }
}

/// Builds an [`EntryInfo`] from `md`, the metadata of `path` itself (not followed).
pub fn entry_from_metadata(path: &Path, md: &std::fs::Metadata, names: &IdNames) -> EntryInfo {
    let (file_type, mode, symlink_target) = if md.file_type().is_symlink() {
        // Every link on the way is resolved; one that cannot be is its own target.
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let (file_type, mode) = match std::fs::metadata(&target) {
            Ok(t) => (file_type_of(t.file_type()), t.permissions().mode() & 0o777),
            Err(_) => (FileType::Unspecified, 0),
        };
        (file_type, mode, Some(target.to_string_lossy().into_owned()))
    } else {
        (
            file_type_of(md.file_type()),
            md.permissions().mode() & 0o777,
            None,
        )
    };
    EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: md.len() as i64,
        // Only the permission bits, as envd sends them; the type travels in `type`
        // and, with the special bits, in `permissions` (Go's `FileMode.String()`).
        mode,
        permissions: go_mode_string(go_mode(md.permissions().mode())),
        owner: names.user(md.uid()),
        group: names.group(md.gid()),
        modified_time: md.modified().ok().map(rfc3339),
        symlink_target,
        metadata: read_metadata(path),
    }
}

/// Prefix of the extended attributes that hold user metadata of files
/// (`files.write(…, {metadata})`, sent as `X-Metadata-<key>` headers).
const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Longest metadata key: the whole attribute name is limited to 255 bytes.
pub const MAX_METADATA_KEY: usize = 255 - METADATA_XATTR_PREFIX.len();
/// Most bytes of metadata (attribute names and values) one file can hold: ext4 keeps
/// all of a file's attributes in one 4 KiB block.
pub const MAX_METADATA_TOTAL: usize = 4096;

/// Metadata that cannot be stored, with what is wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    /// An empty key (a bare `X-Metadata-` header).
    #[error("metadata key must not be empty")]
    EmptyKey,
    /// A key longer than [`MAX_METADATA_KEY`].
    #[error("metadata key '{0}' is longer than {MAX_METADATA_KEY} bytes")]
    KeyTooLong(String),
    /// A key or value with a byte outside printable ASCII.
    #[error("metadata {what} contains a byte outside printable ASCII (0x20-0x7e)")]
    NotPrintable {
        /// Which key or value.
        what: String,
    },
    /// More than [`MAX_METADATA_TOTAL`] bytes together.
    #[error("metadata takes {0} bytes, more than the {MAX_METADATA_TOTAL} a file can hold")]
    TooLarge(usize),
}

/// Checks that `metadata` can be stored on a file, before anything is written.
pub fn validate_metadata(
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), MetadataError> {
    let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let mut total = 0;
    for (k, v) in metadata {
        if k.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if !printable(k) {
            return Err(MetadataError::NotPrintable {
                what: format!("key {k:?}"),
            });
        }
        if k.len() > MAX_METADATA_KEY {
            return Err(MetadataError::KeyTooLong(k.clone()));
        }
        if !printable(v) {
            return Err(MetadataError::NotPrintable {
                what: format!("value of key '{k}'"),
            });
        }
        total += METADATA_XATTR_PREFIX.len() + k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(MetadataError::TooLarge(total));
    }
    Ok(())
}

fn xattr_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP
}

/// Splits a `listxattr` buffer into the names that carry metadata.
fn metadata_names(list: &[u8]) -> impl Iterator<Item = &str> {
    list.split(|b| *b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter(|n| n.starts_with(METADATA_XATTR_PREFIX))
}

/// The user metadata of `path` (its `user.e2b.*` extended attributes). Like envd, a
/// symlink is followed: a link shows its target's metadata. A file system without
/// extended attributes (`/proc`) simply has none.
pub fn read_metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut list = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::listxattr(path, &mut list) else {
        return out;
    };
    for name in metadata_names(&list[..n]) {
        let mut value = vec![0u8; MAX_METADATA_TOTAL];
        if let Ok(len) = rustix::fs::getxattr(path, name, &mut value) {
            if let Ok(v) = std::str::from_utf8(&value[..len]) {
                out.insert(name[METADATA_XATTR_PREFIX.len()..].to_owned(), v.to_owned());
            }
        }
    }
    out
}

/// Makes `metadata` the whole user metadata of the open file `file` (at `path`, for
/// errors): attributes of keys not in it are removed, so overwriting a file without
/// metadata clears what an earlier upload stored (truncation keeps attributes).
/// Keys are lower-cased, as HTTP header names arrive. A file system without extended
/// attributes stores nothing and is not an error, as in envd.
pub fn replace_metadata(
    file: &std::fs::File,
    path: &Path,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), FsError> {
    let fail = |e: rustix::io::Errno| FsError::io("set metadata", path, e.into());
    let mut list = vec![0u8; 64 * 1024];
    let n = match rustix::fs::flistxattr(file, &mut list) {
        Ok(n) => n,
        Err(e) if xattr_unsupported(e) => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    let wanted: std::collections::BTreeMap<String, &str> = metadata
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    for name in metadata_names(&list[..n]) {
        if wanted.contains_key(&name[METADATA_XATTR_PREFIX.len()..]) {
            continue;
        }
        match rustix::fs::fremovexattr(file, name) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    for (k, v) in &wanted {
        let name = format!("{METADATA_XATTR_PREFIX}{k}");
        match rustix::fs::fsetxattr(
            file,
            name.as_str(),
            v.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(e) if xattr_unsupported(e) => return Ok(()),
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// Creates `dir` and missing parents, giving each new directory to `user`.
pub fn create_dirs(dir: &Path, user: &User) -> Result<(), FsError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => break,
            Ok(md) if md.file_type().is_symlink() && p.is_dir() => break,
            Ok(_) => return Err(FsError::NotADirectory(p.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) => return Err(FsError::io("stat", p, e)),
        }
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => chown(p, user)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(FsError::io("create directory", p, e)),
        }
    }
    Ok(())
}

/// Hands `path` to `user` (no-op when the agent is not root).
pub fn chown(path: &Path, user: &User) -> Result<(), FsError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| FsError::io("chown", path, e))
}

/// `MakeDir`: fails with `AlreadyExists` if anything is at `path`.
pub fn make_dir(path: &Path, user: &User, names: &IdNames) -> Result<EntryInfo, FsError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(FsError::AlreadyExists(path.to_path_buf()));
    }
    create_dirs(path, user)?;
    entry_info(path, names)
}

/// `Move`: renames, creating the destination's parents.
pub fn move_entry(
    src: &Path,
    dst: &Path,
    user: &User,
    names: &IdNames,
) -> Result<EntryInfo, FsError> {
    std::fs::symlink_metadata(src).map_err(|e| FsError::io("stat", src, e))?;
    if let Some(parent) = dst.parent() {
        create_dirs(parent, user)?;
    }
    std::fs::rename(src, dst).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FsError::NotFound(src.to_path_buf()),
        _ => FsError::Io {
            op: "move",
            path: src.to_path_buf(),
            source: e,
        },
    })?;
    entry_info(dst, names)
}

/// `Remove`: a file, a symlink (not its target) or a directory tree. Like envd's
/// remove-all, a path where nothing is is already removed: that is success.
pub fn remove(path: &Path) -> Result<(), FsError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io("stat", path, e)),
    };
    let removed = if md.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// `ListDir`: entries under `dir` up to `depth` levels, depth-first in name order,
/// without following symlinks below the root.
pub fn list_dir(
    dir: &Path,
    depth: u32,
    limit: usize,
    names: &IdNames,
) -> Result<Vec<EntryInfo>, FsError> {
    let md = std::fs::metadata(dir).map_err(|e| FsError::io("stat", dir, e))?;
    if !md.is_dir() {
        return Err(FsError::NotADirectory(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    walk(dir, depth.max(1), limit, names, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    depth: u32,
    limit: usize,
    names: &IdNames,
    out: &mut Vec<EntryInfo>,
) -> Result<(), FsError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| FsError::io("list", dir, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue; // vanished meanwhile
        };
        if out.len() >= limit {
            return Err(FsError::TooMany(dir.to_path_buf(), limit));
        }
        out.push(entry_from_metadata(&path, &md, names));
        if depth > 1 && md.is_dir() {
            // unreadable subdirectories are listed but not descended into
            match walk(&path, depth - 1, limit, names, out) {
                Err(FsError::Io { .. }) | Err(FsError::NotFound(_)) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_like_go() {
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode_string(go_mode(0o100644)), "-rw-r--r--");
        assert_eq!(go_mode(0o040755), GO_DIR | 0o755);
        assert_eq!(go_mode_string(go_mode(0o040755)), "drwxr-xr-x");
        assert_eq!(go_mode_string(go_mode(0o120777)), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(go_mode(0o104755)), "urwxr-xr-x");
        assert_eq!(go_mode_string(go_mode(0o041777)), "dtrwxrwxrwx");
    }

    #[test]
    fn metadata_is_checked_like_envd() {
        let one = |k: &str, v: &str| std::collections::BTreeMap::from([(k.into(), v.into())]);
        assert_eq!(validate_metadata(&one("owner", "a b ~")), Ok(()));
        assert_eq!(
            validate_metadata(&one("", "x")),
            Err(MetadataError::EmptyKey)
        );
        let long = "k".repeat(MAX_METADATA_KEY + 1);
        assert_eq!(
            validate_metadata(&one(&long, "x")),
            Err(MetadataError::KeyTooLong(long.clone()))
        );
        assert!(validate_metadata(&one(&long[1..], "x")).is_ok());
        assert!(matches!(
            validate_metadata(&one("k", "caf\u{e9}")),
            Err(MetadataError::NotPrintable { .. })
        ));
        assert!(matches!(
            validate_metadata(&one("k", "tab\t")),
            Err(MetadataError::NotPrintable { .. })
        ));
        let fits = "v".repeat(MAX_METADATA_TOTAL - METADATA_XATTR_PREFIX.len() - 1);
        assert!(validate_metadata(&one("k", &fits)).is_ok());
        assert_eq!(
            validate_metadata(&one("k", &format!("{fits}v"))),
            Err(MetadataError::TooLarge(MAX_METADATA_TOTAL + 1))
        );
    }
}
