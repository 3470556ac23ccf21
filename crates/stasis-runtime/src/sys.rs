//! The runtime's only `unsafe` code: the new mount API syscalls that neither `rustix`
//! nor `nix` wrap completely (`mount_setattr` with an id map), and entering a cgroup
//! between `fork` and `exec` (std's `pre_exec`).
//!
//! Each function takes and returns owned file descriptors, checks the syscall's result,
//! and converts errors to `io::Error`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` from `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)`:
/// a detached copy of the mount tree at `path`.
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the flags are
    // plain integers. On success the kernel returns a new fd that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Applies an id map (the one of the user namespace `userns`) to the detached mount
/// `tree`, recursively.
pub(crate) fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `tree` and `userns` are open descriptors borrowed for the duration of the
    // call; `attr` is a properly initialised `struct mount_attr` whose size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `tree` at `target`.
pub(crate) fn move_mount_to(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    let empty = c"";
    // SAFETY: `tree` is an open descriptor; both strings are valid and NUL-terminated
    // for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child of `cmd` enter a cgroup before it executes its program: `procs` is the
/// group's `cgroup.procs`, opened by the caller (with `O_CLOEXEC`, as std opens files).
/// The child and everything it starts are in the group from their first instruction, so
/// none of them can be missed by a later look at the group.
pub(crate) fn enter_cgroup_before_exec(cmd: &mut std::process::Command, procs: OwnedFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes one `write(2)` on a descriptor that
    // the closure owns (so it is open in the child; `O_CLOEXEC` closes it at exec) from
    // a static buffer, and builds an `io::Error` from errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            let buf = b"0";
            let r = libc::write(procs.as_raw_fd(), buf.as_ptr().cast(), buf.len());
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
