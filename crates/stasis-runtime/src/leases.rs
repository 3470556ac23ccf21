//! Host-wide leases on shared numbered resources (sandbox addresses on a bridge, uid
//! ranges), so that runtimes with different data dirs on one host never hand out the
//! same one.
//!
//! A lease is a file `<leases dir>/<pool>/<key>` holding its owner (data dir and sandbox
//! id), made to appear atomically with its content (hard link of a written temporary
//! file). A lease whose owner's sandbox directory no longer exists is stale and may be
//! taken over. Take-over and release read a lease and then replace or remove it: both
//! run under the pool's `flock` (`<pool>/.lock`), so a release can never remove a lease
//! that another process took over between the read and the removal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use stasis_types::SandboxId;

use crate::error::Cause;

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub data_dir: PathBuf,
    pub id: SandboxId,
}

impl Owner {
    fn encode(&self) -> String {
        format!("{}\n{}\n", self.data_dir.display(), self.id)
    }

    fn decode(s: &str) -> Option<Owner> {
        let mut lines = s.lines();
        let data_dir = PathBuf::from(lines.next()?);
        let id = lines.next()?.parse().ok()?;
        Some(Owner { data_dir, id })
    }

    fn is_live(&self) -> bool {
        self.data_dir
            .join("sandboxes")
            .join(self.id.as_str())
            .is_dir()
    }
}

/// One pool of leases.
#[derive(Debug, Clone)]
pub(crate) struct LeasePool {
    dir: PathBuf,
}

impl LeasePool {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The pool's lock, held for a read-then-replace or read-then-remove of a lease.
    fn lock(&self) -> Result<fs::File, Cause> {
        fs::create_dir_all(&self.dir).map_err(Cause::io(&self.dir))?;
        hold_lock(&self.dir.join(".lock"))
    }

    /// Takes the lease `key` for `owner`. True if it is now held by `owner`.
    ///
    /// A lease file appears with its owner already in it (written to a temporary file,
    /// then hard-linked into place, which fails if the name exists), so a concurrent
    /// reader never sees an empty lease and mistakes it for a stale one.
    pub fn try_acquire(&self, key: &str, owner: &Owner) -> Result<bool, Cause> {
        fs::create_dir_all(&self.dir).map_err(Cause::io(&self.dir))?;
        let path = self.path(key);
        let tmp = self.dir.join(format!(".{key}.{}", SandboxId::generate()));
        fs::write(&tmp, owner.encode()).map_err(Cause::io(&tmp))?;
        let linked = fs::hard_link(&tmp, &path);
        let outcome = match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _lock = self.lock()?;
                let holder = fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| Owner::decode(&s));
                match holder {
                    Some(h) if &h == owner => Ok(true),
                    Some(h) if h.is_live() => Ok(false),
                    // Unreadable leases are never taken over: only a lease whose owner
                    // is known to be gone is stale.
                    None if path.exists() => Ok(false),
                    // Released meanwhile: take it.
                    None => match fs::hard_link(&tmp, &path) {
                        Ok(()) => Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(Cause::io(&path)(e)),
                    },
                    Some(_) => {
                        // Stale: replace it atomically.
                        fs::rename(&tmp, &path).map_err(Cause::io(&path))?;
                        return Ok(true);
                    }
                }
            }
            Err(e) => Err(Cause::io(&path)(e)),
        };
        let _ = fs::remove_file(&tmp);
        outcome
    }

    /// Gives the lease back if `owner` holds it.
    pub fn release(&self, key: &str, owner: &Owner) {
        let path = self.path(key);
        let Ok(_lock) = self.lock() else {
            return;
        };
        let held = fs::read_to_string(&path)
            .ok()
            .and_then(|s| Owner::decode(&s))
            .is_some_and(|h| &h == owner);
        if held {
            let _ = fs::remove_file(&path);
        }
    }

    /// Takes the first free key from `candidates`.
    pub fn acquire_first(
        &self,
        candidates: impl Iterator<Item = String>,
        owner: &Owner,
    ) -> Result<Option<String>, Cause> {
        for key in candidates {
            if self.try_acquire(&key, owner)? {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

/// Takes the host-wide `flock` at `path` (creating the file), waiting for another
/// holder; it is held until the returned file is dropped.
pub(crate) fn hold_lock(path: &Path) -> Result<fs::File, Cause> {
    use rustix::fs::{flock, FlockOperation};
    let f = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Cause::io(path))?;
    flock(&f, FlockOperation::LockExclusive).map_err(|e| Cause::Sys {
        what: format!("flock {}", path.display()),
        source: e.into(),
    })?;
    Ok(f)
}

/// The default host-wide leases directory.
pub(crate) fn default_dir() -> &'static Path {
    Path::new("/run/stasis/leases")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_and_stale_ones_are_reclaimed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let pool = LeasePool::new(tmp.path().join("leases"));
        let a = Owner {
            data_dir: data.clone(),
            id: "a".parse().unwrap(),
        };
        let b = Owner {
            data_dir: data.clone(),
            id: "b".parse().unwrap(),
        };
        fs::create_dir_all(data.join("sandboxes/a")).unwrap();
        fs::create_dir_all(data.join("sandboxes/b")).unwrap();
        assert!(pool.try_acquire("5", &a).unwrap());
        assert!(
            pool.try_acquire("5", &a).unwrap(),
            "re-acquire by the holder"
        );
        assert!(!pool.try_acquire("5", &b).unwrap());
        let got = pool
            .acquire_first(["5", "6"].into_iter().map(String::from), &b)
            .unwrap();
        assert_eq!(got.as_deref(), Some("6"));
        // An unreadable lease is held, not stale.
        fs::write(tmp.path().join("leases/7"), "").unwrap();
        assert!(!pool.try_acquire("7", &a).unwrap());
        // a's sandbox disappears: its lease is stale.
        fs::remove_dir_all(data.join("sandboxes/a")).unwrap();
        assert!(pool.try_acquire("5", &b).unwrap());
        pool.release("5", &a);
        assert!(
            tmp.path().join("leases/5").exists(),
            "release by a non-holder"
        );
        pool.release("5", &b);
        assert!(!tmp.path().join("leases/5").exists());
    }
}

#[cfg(test)]
mod race {
    use super::*;

    #[test]
    fn concurrent_acquirers_never_share_a_key() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let pool = LeasePool::new(tmp.path().join("leases"));
        let owners: Vec<Owner> = (0..8)
            .map(|i| {
                let id: SandboxId = format!("s{i}").parse().unwrap();
                fs::create_dir_all(data.join("sandboxes").join(id.as_str())).unwrap();
                Owner {
                    data_dir: data.clone(),
                    id,
                }
            })
            .collect();
        for _round in 0..50 {
            let got: Vec<Option<String>> = std::thread::scope(|s| {
                let handles: Vec<_> = owners
                    .iter()
                    .map(|o| {
                        let pool = pool.clone();
                        s.spawn(move || {
                            pool.acquire_first((0..16).map(|k| k.to_string()), o)
                                .unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut keys: Vec<String> = got.into_iter().map(|k| k.unwrap()).collect();
            keys.sort();
            let n = keys.len();
            keys.dedup();
            assert_eq!(keys.len(), n, "two owners got the same key");
            for o in &owners {
                for key in 0..16 {
                    pool.release(&key.to_string(), o);
                }
            }
        }
    }
}

#[cfg(test)]
mod takeover_race {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Owners whose sandboxes go away (stale leases) while others take them over and the
    /// old owners release: no key is ever held by two owners at once.
    #[test]
    fn release_never_removes_a_lease_taken_over_meanwhile() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = LeasePool::new(tmp.path().join("leases"));
        let held: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        std::thread::scope(|s| {
            for t in 0..6 {
                let pool = pool.clone();
                let held = &held;
                let data = tmp.path().join(format!("data{t}"));
                s.spawn(move || {
                    for round in 0..400 {
                        let id: SandboxId = format!("t{t}r{round}").parse().unwrap();
                        let dir = data.join("sandboxes").join(id.as_str());
                        fs::create_dir_all(&dir).unwrap();
                        let owner = Owner {
                            data_dir: data.clone(),
                            id,
                        };
                        let key = pool
                            .acquire_first((0..3).map(|k| k.to_string()), &owner)
                            .unwrap();
                        if let Some(key) = key {
                            assert!(
                                held.lock().unwrap().insert(key.clone()),
                                "key {key} held twice"
                            );
                            // The sandbox goes (its lease is stale from here), then it
                            // gives the lease back, as a kill does.
                            held.lock().unwrap().remove(&key);
                            fs::remove_dir_all(&dir).unwrap();
                            pool.release(&key, &owner);
                        } else {
                            fs::remove_dir_all(&dir).unwrap();
                        }
                    }
                });
            }
        });
    }
}
