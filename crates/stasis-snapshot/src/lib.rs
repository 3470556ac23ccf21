//! The on-disk snapshot format of a paused sandbox.
//!
//! A snapshot generation is a directory:
//!
//! ```text
//! snapshots/<sandbox id>/<generation>/
//!   images/         CRIU images (absent for a filesystem-only snapshot)
//!   config.json     the OCI bundle config the sandbox ran with (resources, hooks, mounts)
//!   sandbox.json    the runtime's record of the sandbox (spec, address, uid range)
//!   manifest.json   written last: magic, format version, sizes and checksums
//! ```
//!
//! The filesystem half of a snapshot is the sandbox's overlay upper layer, which stays
//! where the sandbox uses it (`sandboxes/<id>/upper`): format version 2 lists every entry
//! of it in the manifest ([`tree`]), so a resume checks the files as it checks the
//! images. Version 1 (still read) kept the upper layer in the generation dir as `upper/`
//! and only summarised it.
//!
//! A generation is valid only if its `manifest.json` exists and verifies. The manifest is
//! written after everything else is on disk (`syncfs`), to a temporary name, fsynced, then
//! renamed into place and its directory fsynced: a crash at any point leaves either no
//! manifest (an incomplete snapshot, never used) or a complete one.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stasis_types::SandboxId;

pub mod tree;
pub use tree::Tree;

/// The manifest's magic string; anything else is not a Stasis snapshot.
pub const MAGIC: &str = "stasis-snapshot";
/// The format version this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this code reads (its upper layer is inside the generation).
pub const OLDEST_READABLE: u32 = 1;
/// File name of the manifest inside a generation directory.
pub const MANIFEST: &str = "manifest.json";
/// Directory of CRIU images inside a generation directory.
pub const IMAGES: &str = "images";
/// Directory of the overlay upper layer inside a generation directory.
pub const UPPER: &str = "upper";

/// What went wrong reading, writing or verifying a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no manifest: the snapshot is incomplete")]
    NoManifest { path: PathBuf },
    #[error("{path} is not a stasis snapshot manifest")]
    NotAManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has magic {found:?}, expected {MAGIC:?}")]
    BadMagic { path: PathBuf, found: String },
    #[error("{path} has format version {found}; this build reads versions {OLDEST_READABLE} to {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("{path} changed while it was being recorded")]
    Changed { path: PathBuf },
    #[error("{path} is not in the snapshot's manifest: the files changed since the pause")]
    Unlisted { path: PathBuf },
    #[error("{path} differs from the snapshot's manifest: {what}")]
    TreeMismatch { path: PathBuf, what: String },
    #[error("snapshot file {path} is missing")]
    Missing { path: PathBuf },
    #[error("snapshot file {path} has {found} bytes, the manifest says {expected}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("snapshot file {path} does not match its checksum")]
    ChecksumMismatch { path: PathBuf },
    #[error("manifest names an unsafe path {0:?}")]
    UnsafePath(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One checksummed file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    /// BLAKE3 of the contents, hex.
    pub blake3: String,
}

/// A summary of the upper layer (its files are the sandbox's own and are not hashed one
/// by one: they can be many, and overlay metadata lives in xattrs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpperSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// The manifest of one snapshot generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub magic: String,
    pub format_version: u32,
    pub sandbox_id: SandboxId,
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// True when the snapshot holds memory (CRIU images); false for filesystem-only.
    pub memory: bool,
    /// Checksummed files, by path relative to the generation directory.
    pub files: BTreeMap<String, FileEntry>,
    pub upper: UpperSummary,
    /// Version 2: every entry of the upper layer (which is not in the generation dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Tree>,
}

impl Manifest {
    /// Total bytes of checksummed files plus the upper layer.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum::<u64>() + self.upper.bytes
    }

    /// Builds the manifest of `dir` by hashing every regular file under `images/` and the
    /// given top-level files, and listing every entry of the upper layer at `upper`
    /// (reusing the hashes of `previous` for unchanged files).
    pub fn build(
        dir: &Path,
        sandbox_id: SandboxId,
        generation: u64,
        top_level: &[&str],
        upper: &Path,
        previous: Option<&Tree>,
    ) -> Result<Self, SnapshotError> {
        let mut files = BTreeMap::new();
        let images = dir.join(IMAGES);
        let memory = images.is_dir();
        if memory {
            for entry in fs::read_dir(&images).map_err(io_err(&images))? {
                let entry = entry.map_err(io_err(&images))?;
                let ft = entry.file_type().map_err(io_err(&entry.path()))?;
                if ft.is_file() {
                    let name = format!("{IMAGES}/{}", entry.file_name().to_string_lossy());
                    files.insert(name, hash_file(&entry.path())?);
                }
            }
        }
        for name in top_level {
            files.insert((*name).to_owned(), hash_file(&dir.join(name))?);
        }
        let tree = Tree::build(upper, previous)?;
        let upper = UpperSummary {
            entries: tree.entries.len() as u64,
            bytes: tree.bytes(),
        };
        Ok(Self {
            magic: MAGIC.to_owned(),
            format_version: FORMAT_VERSION,
            sandbox_id,
            generation,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            memory,
            files,
            upper,
            tree: Some(tree),
        })
    }

    /// Whether the upper layer is kept inside the generation dir (format version 1).
    pub fn upper_inside(&self) -> bool {
        self.tree.is_none()
    }

    /// Checks the upper layer at `upper` against the manifest (version 2; version 1 has
    /// nothing to check it against).
    pub fn verify_upper(&self, upper: &Path) -> Result<(), SnapshotError> {
        match &self.tree {
            Some(t) => t.verify(upper),
            None => Ok(()),
        }
    }

    /// Makes everything under `dir` durable, then writes the manifest durably. Call it
    /// last: a generation directory is a snapshot only once this returns.
    pub fn write_durable(&self, dir: &Path) -> Result<(), SnapshotError> {
        // One syncfs flushes the images and the upper layer (same filesystem).
        let d = File::open(dir).map_err(io_err(dir))?;
        rustix::fs::syncfs(&d).map_err(|e| SnapshotError::Io {
            path: dir.to_owned(),
            source: e.into(),
        })?;
        let tmp = dir.join(".manifest.json.tmp");
        let body = serde_json::to_vec_pretty(self).expect("manifest serializes");
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&body).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        let dst = dir.join(MANIFEST);
        fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        sync_dir(dir)
    }

    /// Reads and checks the manifest of `dir` (magic and version), without hashing.
    pub fn read(dir: &Path) -> Result<Self, SnapshotError> {
        let path = dir.join(MANIFEST);
        let body = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NoManifest {
                    path: dir.to_owned(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        // Check magic and version before the full shape, so that a newer format gets a
        // precise error instead of a parse error.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            magic: String,
            format_version: u32,
        }
        let head: Head =
            serde_json::from_slice(&body).map_err(|source| SnapshotError::NotAManifest {
                path: path.clone(),
                source,
            })?;
        if head.magic != MAGIC {
            return Err(SnapshotError::BadMagic {
                path,
                found: head.magic,
            });
        }
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&head.format_version) {
            return Err(SnapshotError::UnsupportedVersion {
                path,
                found: head.format_version,
            });
        }
        serde_json::from_slice(&body).map_err(|source| SnapshotError::NotAManifest { path, source })
    }

    /// Checks every listed file's size and checksum.
    pub fn verify(&self, dir: &Path) -> Result<(), SnapshotError> {
        for (name, want) in &self.files {
            if name
                .split('/')
                .any(|c| c.is_empty() || c == ".." || c == ".")
            {
                return Err(SnapshotError::UnsafePath(name.clone()));
            }
            let path = dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SnapshotError::Missing { path })
                }
                Err(e) => return Err(io_err(&path)(e)),
            };
            if meta.len() != want.size {
                return Err(SnapshotError::SizeMismatch {
                    path,
                    expected: want.size,
                    found: meta.len(),
                });
            }
            if hash_file(&path)?.blake3 != want.blake3 {
                return Err(SnapshotError::ChecksumMismatch { path });
            }
        }
        if self.upper_inside() {
            let upper = dir.join(UPPER);
            if !upper.is_dir() {
                return Err(SnapshotError::Missing { path: upper });
            }
        }
        Ok(())
    }
}

/// Flushes the whole filesystem that holds `path` (`syncfs`).
pub fn sync_fs(path: &Path) -> Result<(), SnapshotError> {
    let d = File::open(path).map_err(io_err(path))?;
    rustix::fs::syncfs(&d).map_err(|e| SnapshotError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Size and BLAKE3 of one file.
pub fn hash_file(path: &Path) -> Result<FileEntry, SnapshotError> {
    let mut f = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            SnapshotError::Missing {
                path: path.to_owned(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileEntry {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// Counts entries and regular-file bytes under `dir` without following symlinks.
pub fn summarize(dir: &Path) -> Result<UpperSummary, SnapshotError> {
    let mut sum = UpperSummary::default();
    if !dir.exists() {
        return Ok(sum);
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err(&d))? {
            let entry = entry.map_err(io_err(&d))?;
            let meta = entry.metadata().map_err(io_err(&entry.path()))?;
            sum.entries += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                sum.bytes += meta.len();
            }
        }
    }
    Ok(sum)
}

/// fsyncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> Manifest {
        fs::create_dir_all(dir.join(IMAGES)).unwrap();
        let upper = dir.join("sandbox-upper");
        fs::create_dir_all(upper.join("tmp")).unwrap();
        fs::write(dir.join(IMAGES).join("pages-1.img"), vec![7u8; 100_000]).unwrap();
        fs::write(upper.join("tmp/file.txt"), b"Hello World\n").unwrap();
        fs::write(dir.join("config.json"), b"{}").unwrap();
        let m = Manifest::build(
            dir,
            "sbx1".parse().unwrap(),
            3,
            &["config.json"],
            &upper,
            None,
        )
        .unwrap();
        m.write_durable(dir).unwrap();
        m
    }

    #[test]
    fn round_trip_and_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let m = sample(tmp.path());
        assert!(m.memory);
        assert_eq!(m.upper.entries, 2);
        assert_eq!(m.upper.bytes, 12);
        assert_eq!(m.total_bytes(), 100_000 + 2 + 12);
        let back = Manifest::read(tmp.path()).unwrap();
        assert_eq!(back, m);
        back.verify(tmp.path()).unwrap();
        back.verify_upper(&tmp.path().join("sandbox-upper"))
            .unwrap();
        fs::write(
            tmp.path().join("sandbox-upper/tmp/file.txt"),
            b"Hello Wyrld\n",
        )
        .unwrap();
        assert!(matches!(
            back.verify_upper(&tmp.path().join("sandbox-upper")),
            Err(SnapshotError::TreeMismatch { .. })
        ));
    }

    #[test]
    fn version_1_manifests_are_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join(UPPER)).unwrap();
        let v1 = r#"{"magic":"stasis-snapshot","formatVersion":1,"sandboxId":"old1",
            "generation":1,"createdAt":1,"memory":false,"files":{},
            "upper":{"entries":0,"bytes":0}}"#;
        fs::write(tmp.path().join(MANIFEST), v1).unwrap();
        let m = Manifest::read(tmp.path()).unwrap();
        assert!(m.upper_inside());
        m.verify(tmp.path()).unwrap();
        fs::remove_dir(tmp.path().join(UPPER)).unwrap();
        assert!(matches!(
            m.verify(tmp.path()),
            Err(SnapshotError::Missing { .. })
        ));
    }

    #[test]
    fn detects_corruption_truncation_and_loss() {
        let tmp = tempfile::tempdir().unwrap();
        let m = sample(tmp.path());
        let img = tmp.path().join(IMAGES).join("pages-1.img");
        fs::write(&img, vec![8u8; 100_000]).unwrap();
        assert!(matches!(
            m.verify(tmp.path()),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
        fs::write(&img, vec![7u8; 10]).unwrap();
        assert!(matches!(
            m.verify(tmp.path()),
            Err(SnapshotError::SizeMismatch {
                expected: 100_000,
                found: 10,
                ..
            })
        ));
        fs::remove_file(&img).unwrap();
        assert!(matches!(
            m.verify(tmp.path()),
            Err(SnapshotError::Missing { .. })
        ));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Manifest::read(tmp.path()),
            Err(SnapshotError::NoManifest { .. })
        ));
        let p = tmp.path().join(MANIFEST);
        fs::write(&p, br#"{"magic":"stasis-snapshot","formatVersion":99}"#).unwrap();
        assert!(matches!(
            Manifest::read(tmp.path()),
            Err(SnapshotError::UnsupportedVersion { found: 99, .. })
        ));
        fs::write(&p, br#"{"magic":"other","formatVersion":1}"#).unwrap();
        assert!(matches!(
            Manifest::read(tmp.path()),
            Err(SnapshotError::BadMagic { .. })
        ));
        fs::write(&p, b"not json").unwrap();
        assert!(matches!(
            Manifest::read(tmp.path()),
            Err(SnapshotError::NotAManifest { .. })
        ));
    }

    #[test]
    fn rejects_path_escapes_in_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let mut m = sample(tmp.path());
        m.files.insert(
            "../../etc/passwd".into(),
            FileEntry {
                size: 1,
                blake3: String::new(),
            },
        );
        assert!(matches!(
            m.verify(tmp.path()),
            Err(SnapshotError::UnsafePath(_))
        ));
    }
}
