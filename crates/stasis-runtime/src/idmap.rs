//! Id-mapped mounts: the template rootfs (owned by host root) seen through a sandbox's
//! uid range, without a chowned copy.
//!
//! The kernel needs a user namespace that carries the mapping. We make one by starting
//! `unshare --user sleep` (no `pre_exec`, no unsafe), writing its `uid_map`/`gid_map` from
//! here, opening its `/proc/<pid>/ns/user`, then ending it: the open fd keeps the
//! namespace alive for as long as we need it.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Cause;
use crate::sys;

/// Number of ids in every sandbox's range (container ids `0..65536`).
pub const RANGE: u32 = 65536;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A user namespace mapping container ids `0..RANGE` to host ids `base..base+RANGE`.
pub(crate) fn userns_fd(base: u32) -> Result<File, Cause> {
    let child = Command::new("unshare")
        .args(["--user", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Cause::Spawn {
            program: "unshare".into(),
            source,
        })?;
    let child = KillOnDrop(child);
    let pid = child.0.id();
    let mine = fs::read_link("/proc/self/ns/user").map_err(Cause::io("/proc/self/ns/user"))?;
    let ns_path = format!("/proc/{pid}/ns/user");
    let deadline = Instant::now() + Duration::from_secs(5);
    // `unshare` switches namespace right after exec; wait until it has.
    loop {
        match fs::read_link(&ns_path) {
            Ok(ns) if ns != mine => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(_) => {
                return Err(Cause::Invalid(
                    "unshare --user did not create a namespace".into(),
                ))
            }
            Err(e) => return Err(Cause::io(&ns_path)(e)),
        }
    }
    let map = format!("0 {base} {RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let p = format!("/proc/{pid}/{file}");
        fs::write(&p, &map).map_err(Cause::io(&p))?;
    }
    File::open(&ns_path).map_err(Cause::io(&ns_path))
}

/// Mounts `src` at `dst` (an existing empty directory) with ids shifted by `base`.
pub(crate) fn mount_idmapped(src: &Path, dst: &Path, base: u32) -> Result<(), Cause> {
    let ns = userns_fd(base)?;
    let tree = sys::open_tree_clone(src).map_err(|source| Cause::Sys {
        what: format!("open_tree {}", src.display()),
        source,
    })?;
    sys::set_idmap(tree.as_fd(), ns.as_fd()).map_err(|source| Cause::Sys {
        what: format!("mount_setattr(MOUNT_ATTR_IDMAP) on {}", src.display()),
        source,
    })?;
    sys::move_mount_to(tree.as_fd(), dst).map_err(|source| Cause::Sys {
        what: format!("move_mount to {}", dst.display()),
        source,
    })
}
