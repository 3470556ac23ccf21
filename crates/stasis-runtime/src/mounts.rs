//! Overlay mounts and unmounting.

use std::io;
use std::path::Path;

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::error::Cause;

/// Rejects paths that cannot be written into overlay's comma/colon separated options.
pub(crate) fn check_mount_path(p: &Path) -> Result<(), Cause> {
    let s = p.to_string_lossy();
    if s.contains([',', ':', '\\']) || !p.is_absolute() {
        return Err(Cause::Invalid(format!(
            "path {s:?} must be absolute and free of ',', ':' and '\\' to be used in a mount"
        )));
    }
    Ok(())
}

/// Mounts an overlay with one or more lower layers (`lowers[0]` is the topmost).
pub(crate) fn mount_overlay(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), Cause> {
    for p in lowers.iter().chain([&upper, &work, &target]) {
        check_mount_path(p)?;
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_str(),
    )
    .map_err(|e| Cause::Sys {
        what: format!("mount overlay at {} ({data})", target.display()),
        source: e.into(),
    })
}

/// True if `path` is a mount point (it appears as a mount target in /proc/self/mountinfo).
pub(crate) fn is_mounted(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .any(|mp| unescape(mp) == want)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 4 <= s.len() {
            let oct = std::str::from_utf8(&s[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Every mount point at or below `dir`, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<std::path::PathBuf> = info
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|mp| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(mp))))
        .filter(|mp| mp.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches every mount at or below `dir` (deepest first), so that a recursive removal
/// of `dir` can never reach into a mounted file system.
pub(crate) fn unmount_under(dir: &Path) -> Result<(), Cause> {
    for mp in mounts_under(dir) {
        match unmount(&mp, UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
            Err(e) => {
                return Err(Cause::Sys {
                    what: format!("umount -l {}", mp.display()),
                    source: e.into(),
                })
            }
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(Cause::Invalid(format!(
            "still mounted under {}: {left:?}",
            dir.display()
        )))
    }
}

/// Unmounts `path` if it is mounted (all stacked mounts on it), detaching lazily when a
/// plain unmount reports it busy.
pub(crate) fn unmount_all(path: &Path) -> Result<(), Cause> {
    for _ in 0..16 {
        if !is_mounted(path) {
            return Ok(());
        }
        match unmount(path, UnmountFlags::empty()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::BUSY => {
                unmount(path, UnmountFlags::DETACH).map_err(|e| Cause::Sys {
                    what: format!("umount -l {}", path.display()),
                    source: io::Error::from(e),
                })?;
            }
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {
                return Ok(())
            }
            Err(e) => {
                return Err(Cause::Sys {
                    what: format!("umount {}", path.display()),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(b"/a\\040b"), b"/a b");
        assert_eq!(unescape(b"/plain"), b"/plain");
        assert_eq!(unescape(b"/x\\"), b"/x\\");
    }

    #[test]
    fn mounts_under_a_dir_come_deepest_first() {
        let under = mounts_under(Path::new("/"));
        assert!(under.contains(&std::path::PathBuf::from("/")));
        assert_eq!(under.last(), Some(&std::path::PathBuf::from("/")));
        assert!(mounts_under(Path::new("/nonexistent-stasis-dir")).is_empty());
    }

    #[test]
    fn root_is_mounted_and_rejects_bad_paths() {
        assert!(is_mounted(Path::new("/")));
        assert!(check_mount_path(Path::new("/a,b")).is_err());
        assert!(check_mount_path(Path::new("relative")).is_err());
        assert!(check_mount_path(Path::new("/var/lib/stasis")).is_ok());
    }
}
