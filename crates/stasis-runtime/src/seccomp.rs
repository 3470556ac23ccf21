//! The default seccomp profile: an allow-list in the spirit of Docker's default.
//!
//! Every x86-64 syscall is allowed except those that reach outside the sandbox or are
//! kernel attack surface an unprivileged program has no use for: module loading, kexec,
//! mount and namespace manipulation, keyrings, BPF, perf, userfaultfd, io_uring, clock
//! setting, quotas, swap and reboot. Syscalls not on the list (including ones newer than
//! this list) fail with `EPERM`. `clone` is allowed only without namespace flags,
//! `clone3` answers `ENOSYS` so libc falls back to `clone`, and `personality` is allowed
//! only for the harmless personas. `socket` and `socketpair` are refused (`EPERM`) for
//! `AF_VSOCK`: nothing in a sandbox talks to a hypervisor, and CRIU cannot checkpoint such
//! a socket, so one would make every pause of the sandbox fail. (libseccomp refuses an
//! `EAFNOSUPPORT` rule on the same argument beside the allow rule, so the refusal is the
//! default action.)

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::Cause;

/// Syscalls allowed unconditionally.
pub const ALLOWED: &[&str] = &[
    "read",
    "write",
    "open",
    "close",
    "stat",
    "fstat",
    "lstat",
    "poll",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "access",
    "pipe",
    "select",
    "sched_yield",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "shmget",
    "shmat",
    "shmctl",
    "dup",
    "dup2",
    "pause",
    "nanosleep",
    "getitimer",
    "alarm",
    "setitimer",
    "getpid",
    "sendfile",
    "connect",
    "accept",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "fork",
    "vfork",
    "execve",
    "exit",
    "wait4",
    "kill",
    "uname",
    "semget",
    "semop",
    "semctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "mkdir",
    "rmdir",
    "creat",
    "link",
    "unlink",
    "symlink",
    "readlink",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "lchown",
    "umask",
    "gettimeofday",
    "getrlimit",
    "getrusage",
    "sysinfo",
    "times",
    "ptrace",
    "getuid",
    "syslog",
    "getgid",
    "setuid",
    "setgid",
    "geteuid",
    "getegid",
    "setpgid",
    "getppid",
    "getpgrp",
    "setsid",
    "setreuid",
    "setregid",
    "getgroups",
    "setgroups",
    "setresuid",
    "getresuid",
    "setresgid",
    "getresgid",
    "getpgid",
    "setfsuid",
    "setfsgid",
    "getsid",
    "capget",
    "capset",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "utime",
    "mknod",
    "statfs",
    "fstatfs",
    "getpriority",
    "setpriority",
    "sched_setparam",
    "sched_getparam",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "mlock",
    "munlock",
    "mlockall",
    "munlockall",
    "prctl",
    "arch_prctl",
    "setrlimit",
    "chroot",
    "sync",
    "sethostname",
    "setdomainname",
    "gettid",
    "readahead",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "tkill",
    "time",
    "futex",
    "sched_setaffinity",
    "sched_getaffinity",
    "set_thread_area",
    "io_setup",
    "io_destroy",
    "io_getevents",
    "io_submit",
    "io_cancel",
    "get_thread_area",
    "epoll_create",
    "remap_file_pages",
    "getdents64",
    "set_tid_address",
    "restart_syscall",
    "semtimedop",
    "fadvise64",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "exit_group",
    "epoll_wait",
    "epoll_ctl",
    "tgkill",
    "utimes",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "waitid",
    "ioprio_set",
    "ioprio_get",
    "inotify_init",
    "inotify_add_watch",
    "inotify_rm_watch",
    "openat",
    "mkdirat",
    "mknodat",
    "fchownat",
    "futimesat",
    "newfstatat",
    "unlinkat",
    "renameat",
    "linkat",
    "symlinkat",
    "readlinkat",
    "fchmodat",
    "faccessat",
    "pselect6",
    "ppoll",
    "set_robust_list",
    "get_robust_list",
    "splice",
    "tee",
    "sync_file_range",
    "vmsplice",
    "utimensat",
    "epoll_pwait",
    "signalfd",
    "timerfd_create",
    "eventfd",
    "fallocate",
    "timerfd_settime",
    "timerfd_gettime",
    "accept4",
    "signalfd4",
    "eventfd2",
    "epoll_create1",
    "dup3",
    "pipe2",
    "inotify_init1",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "fanotify_mark",
    "prlimit64",
    "syncfs",
    "sendmmsg",
    "getcpu",
    "process_vm_readv",
    "process_vm_writev",
    "sched_setattr",
    "sched_getattr",
    "renameat2",
    "seccomp",
    "getrandom",
    "memfd_create",
    "execveat",
    "membarrier",
    "mlock2",
    "copy_file_range",
    "preadv2",
    "pwritev2",
    "pkey_mprotect",
    "pkey_alloc",
    "pkey_free",
    "statx",
    "io_pgetevents",
    "rseq",
    "pidfd_send_signal",
    "pidfd_open",
    "close_range",
    "openat2",
    "pidfd_getfd",
    "faccessat2",
    "process_madvise",
    "epoll_pwait2",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "process_mrelease",
    "futex_waitv",
    "set_mempolicy_home_node",
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: `clone` with any of these is refused.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

/// Personas `personality(2)` may switch to: PER_LINUX, PER_LINUX32, UNAME26 variants, and
/// the query value 0xffffffff.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The address family `socket(2)` and `socketpair(2)` refuse.
const AF_VSOCK: u64 = 40;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn rule(names: &[&str], action: LinuxSeccompAction) -> Result<LinuxSyscall, Cause> {
    Ok(LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
        .build()?)
}

/// The profile as an OCI `linux.seccomp` section.
pub fn default_profile() -> Result<LinuxSeccomp, Cause> {
    let mut syscalls = vec![rule(ALLOWED, LinuxSeccompAction::ScmpActAllow)?];
    let clone_arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        // libseccomp's masked-equal: (arg & value) == valueTwo.
        .value(CLONE_NS_FLAGS)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()?;
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone".to_string()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(vec![clone_arg])
            .build()?,
    );
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    );
    for name in ["socket", "socketpair"] {
        let not_vsock = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(AF_VSOCK)
            .op(LinuxSeccompOperator::ScmpCmpNe)
            .build()?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec![name.to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![not_vsock])
                .build()?,
        );
    }
    for &p in PERSONAS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(p)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()?,
        );
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for bad in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "kexec_load",
            "init_module",
            "io_uring_setup",
            "userfaultfd",
            "ptrace_not_a_syscall",
            "clone",
            "clone3",
            "reboot",
            "keyctl",
            "socket",
            "socketpair",
        ] {
            assert!(!ALLOWED.contains(&bad), "{bad} is allowed");
        }
        for good in ["read", "execve", "wait4", "epoll_wait", "openat", "ptrace"] {
            assert!(ALLOWED.contains(&good), "{good} is not allowed");
        }
    }

    #[test]
    fn profile_serializes_as_oci() {
        let p = default_profile().unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        let syscalls = v["syscalls"].as_array().unwrap();
        let clone = syscalls.iter().find(|s| s["names"][0] == "clone").unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], CLONE_NS_FLAGS);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        for name in ["socket", "socketpair"] {
            let rules: Vec<_> = syscalls.iter().filter(|s| s["names"][0] == name).collect();
            assert_eq!(rules.len(), 1, "{name}: {rules:?}");
            assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
            assert_eq!(rules[0]["args"][0]["op"], "SCMP_CMP_NE");
            assert_eq!(rules[0]["args"][0]["value"], 40);
        }
    }
}
