//! The manifest of a directory tree: every entry of a sandbox's overlay upper layer with
//! its kind, owner, mode, extended attributes (overlay whiteouts and opaque markers, the
//! agent's file metadata) and, for regular files, size and BLAKE3.
//!
//! [`Tree::build`] hashes regular files, reusing the hash recorded by the previous
//! generation for a file whose inode, size, mtime and ctime are unchanged (ctime cannot
//! be set from user space, so an unchanged ctime means the file was not written).
//! [`Tree::verify`] checks the tree on disk against the manifest: the same set of
//! entries, the same metadata, the same contents.
//!
//! Paths are relative to the tree's root, with every byte outside printable ASCII (and
//! `%`) written as `%XX`, so that any file name round-trips through JSON.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{hash_file, SnapshotError};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Regular files: BLAKE3 of the contents, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Symlinks: the link text, encoded like paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device nodes (an overlay whiteout is a character device 0:0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes: name → BLAKE3 of the value, hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// What [`Tree::build`] of the next generation compares to reuse `blake3`; not
    /// verified (a restore or copy changes it without changing the contents).
    #[serde(default)]
    pub stamp: Stamp,
}

/// Inode, mtime and ctime of an entry when it was hashed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// The manifest of a tree, by encoded relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: BTreeMap<String, Node>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `%XX` for every byte outside printable ASCII, and for `%`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..0x7f).contains(&b) && b != b'%' || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Inverse of [`encode`]; `None` for a malformed escape.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn xattrs(path: &Path) -> Result<BTreeMap<String, String>, SnapshotError> {
    let sys = |e: rustix::io::Errno| SnapshotError::Io {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut out = BTreeMap::new();
    let len = match rustix::fs::llistxattr(path, &mut []) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(out),
        Err(e) => return Err(sys(e)),
    };
    if len == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; len];
    let len = rustix::fs::llistxattr(path, &mut names).map_err(sys)?;
    names.truncate(len);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let n = OsStr::from_bytes(name);
        let vlen = rustix::fs::lgetxattr(path, n, &mut []).map_err(sys)?;
        let mut value = vec![0u8; vlen];
        let vlen = rustix::fs::lgetxattr(path, n, &mut value).map_err(sys)?;
        out.insert(
            encode(name),
            blake3::hash(&value[..vlen]).to_hex().to_string(),
        );
    }
    Ok(out)
}

fn ns(secs: i64, nsec: i64) -> i128 {
    secs as i128 * 1_000_000_000 + nsec as i128
}

/// Reads one entry; `previous` may supply the hash of an unchanged regular file.
fn node(path: &Path, previous: Option<&Node>) -> Result<Node, SnapshotError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let stamp = Stamp {
        ino: meta.ino(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    };
    let mut n = Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: None,
        blake3: None,
        target: None,
        rdev: None,
        xattrs: xattrs(path)?,
        stamp,
    };
    match kind {
        Kind::File => {
            let reuse = previous
                .filter(|p| p.kind == Kind::File && p.stamp == stamp && p.size == Some(meta.len()));
            let blake3 = match reuse.and_then(|p| p.blake3.clone()) {
                Some(h) => h,
                None => {
                    let h = hash_file(path)?;
                    if h.size != meta.len() {
                        // Written while being hashed: nothing here may change during a
                        // snapshot, so say so rather than record a torn hash.
                        return Err(SnapshotError::Changed {
                            path: path.to_owned(),
                        });
                    }
                    h.blake3
                }
            };
            n.size = Some(meta.len());
            n.blake3 = Some(blake3);
        }
        Kind::Symlink => {
            let t = fs::read_link(path).map_err(io_err(path))?;
            n.target = Some(encode(t.as_os_str().as_bytes()));
        }
        Kind::Char | Kind::Block => n.rdev = Some(meta.rdev()),
        Kind::Dir | Kind::Fifo | Kind::Socket => {}
    }
    Ok(n)
}

/// Every entry under `root` (not `root` itself), by encoded relative path.
fn walk(
    root: &Path,
    mut visit: impl FnMut(String, &Path) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(&d)
            .map_err(io_err(&d))?
            .collect::<Result<_, _>>()
            .map_err(io_err(&d))?;
        children.sort_by_key(|e| e.file_name());
        for e in children {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under the root");
            visit(encode(rel.as_os_str().as_bytes()), &p)?;
            if e.file_type().map_err(io_err(&p))?.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

impl Tree {
    /// The manifest of the tree at `root`, reusing hashes of `previous` where the file is
    /// unchanged. Nothing may write into the tree meanwhile.
    pub fn build(root: &Path, previous: Option<&Tree>) -> Result<Tree, SnapshotError> {
        let mut entries = BTreeMap::new();
        walk(root, |rel, path| {
            let prev = previous.and_then(|t| t.entries.get(&rel));
            entries.insert(rel, node(path, prev)?);
            Ok(())
        })?;
        Ok(Tree { entries })
    }

    /// Regular-file bytes of the tree.
    pub fn bytes(&self) -> u64 {
        self.entries.values().filter_map(|n| n.size).sum()
    }

    /// Checks the tree at `root` against this manifest: every entry present with the
    /// same kind, owner, mode, attributes and contents, and no entry the manifest does
    /// not list.
    pub fn verify(&self, root: &Path) -> Result<(), SnapshotError> {
        let mut seen = 0usize;
        let mut problem: Option<SnapshotError> = None;
        walk(root, |rel, path| {
            if problem.is_some() {
                return Ok(());
            }
            let Some(want) = self.entries.get(&rel) else {
                problem = Some(SnapshotError::Unlisted {
                    path: path.to_owned(),
                });
                return Ok(());
            };
            seen += 1;
            let mut found = node(path, None)?;
            found.stamp = want.stamp;
            if &found != want {
                problem = Some(SnapshotError::TreeMismatch {
                    path: path.to_owned(),
                    what: differs(want, &found),
                });
            }
            Ok(())
        })?;
        if let Some(p) = problem {
            return Err(p);
        }
        if seen != self.entries.len() {
            let missing = self
                .entries
                .keys()
                .find(|rel| {
                    decode(rel).is_none_or(|b| {
                        fs::symlink_metadata(root.join(OsStr::from_bytes(&b))).is_err()
                    })
                })
                .cloned()
                .unwrap_or_default();
            return Err(SnapshotError::Missing {
                path: root.join(missing),
            });
        }
        Ok(())
    }
}

/// What differs between two nodes, for the error message.
fn differs(want: &Node, found: &Node) -> String {
    if want.kind != found.kind {
        return format!("kind {:?}, expected {:?}", found.kind, want.kind);
    }
    if want.size != found.size {
        return format!("size {:?}, expected {:?}", found.size, want.size);
    }
    if want.blake3 != found.blake3 {
        return "contents do not match the checksum".into();
    }
    if (want.mode, want.uid, want.gid) != (found.mode, found.uid, found.gid) {
        return format!(
            "mode/owner {:o} {}:{}, expected {:o} {}:{}",
            found.mode, found.uid, found.gid, want.mode, want.uid, want.gid
        );
    }
    if want.xattrs != found.xattrs {
        return "extended attributes differ".into();
    }
    "link target or device differs".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("home/user/app")).unwrap();
        fs::write(root.join("home/user/app/main.js"), b"console.log(1)\n").unwrap();
        fs::write(root.join("weird\nname %"), b"x").unwrap();
        symlink("../etc/passwd", root.join("home/link")).unwrap();
    }

    #[test]
    fn names_round_trip() {
        for name in [
            &b"plain/path.txt"[..],
            b"sp ace",
            b"100%",
            b"\xff\x00\n",
            "é".as_bytes(),
        ] {
            assert_eq!(decode(&encode(name)).unwrap(), name);
        }
        assert!(decode("%zz").is_none());
    }

    #[test]
    fn a_tree_verifies_until_anything_in_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        sample(root);
        let t = Tree::build(root, None).unwrap();
        assert_eq!(t.entries.len(), 6);
        assert_eq!(t.bytes(), 16);
        t.verify(root).unwrap();
        let back: Tree = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);

        // One flipped byte, same size.
        let f = root.join("home/user/app/main.js");
        fs::write(&f, b"console.log(2)\n").unwrap();
        assert!(matches!(
            t.verify(root),
            Err(SnapshotError::TreeMismatch { .. })
        ));
        fs::write(&f, b"console.log(1)\n").unwrap();
        t.verify(root).unwrap();

        // An added file, a removed one, a retargeted link, a changed mode.
        fs::write(root.join("extra"), b"").unwrap();
        assert!(matches!(
            t.verify(root),
            Err(SnapshotError::Unlisted { .. })
        ));
        fs::remove_file(root.join("extra")).unwrap();
        fs::remove_file(root.join("weird\nname %")).unwrap();
        assert!(matches!(t.verify(root), Err(SnapshotError::Missing { .. })));
        fs::write(root.join("weird\nname %"), b"x").unwrap();
        fs::remove_file(root.join("home/link")).unwrap();
        symlink("/etc/shadow", root.join("home/link")).unwrap();
        assert!(matches!(
            t.verify(root),
            Err(SnapshotError::TreeMismatch { .. })
        ));
        fs::remove_file(root.join("home/link")).unwrap();
        symlink("../etc/passwd", root.join("home/link")).unwrap();
        t.verify(root).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            t.verify(root),
            Err(SnapshotError::TreeMismatch { .. })
        ));
    }

    #[test]
    fn unchanged_files_reuse_their_hash_and_changed_ones_are_rehashed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        sample(root);
        let mut first = Tree::build(root, None).unwrap();
        // Poison the recorded hash of an unchanged file: it is reused as recorded.
        let key = "home/user/app/main.js".to_owned();
        first.entries.get_mut(&key).unwrap().blake3 = Some("reused".into());
        let second = Tree::build(root, Some(&first)).unwrap();
        assert_eq!(second.entries[&key].blake3.as_deref(), Some("reused"));
        // A write changes ctime: the file is hashed again.
        fs::write(root.join(&key), b"console.log(1)\n").unwrap();
        let third = Tree::build(root, Some(&first)).unwrap();
        assert_ne!(third.entries[&key].blake3.as_deref(), Some("reused"));
    }
}
