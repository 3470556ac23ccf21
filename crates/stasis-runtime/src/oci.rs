//! The OCI bundle config of a sandbox, generated from its record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, HookBuilder, HooksBuilder, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::Cause;
use crate::idmap::RANGE;
use crate::net::HookParams;
use crate::seccomp;
use crate::spec::Record;
use stasis_types::SandboxId;

/// Annotation naming the CRIU configuration file (read by runc at checkpoint and restore).
pub const CRIU_CONFIG_ANNOTATION: &str = "org.criu.config";

/// Where the agent binary appears inside the sandbox.
pub const AGENT_DIR: &str = "/usr/local/bin";

/// The capabilities of processes in a sandbox: Docker's default set without NET_RAW.
/// (runc's own defaults — three capabilities — would leave root in the sandbox unable
/// to chown files or switch users, which every template needs.)
pub const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The CRIU options every sandbox shares.
///
/// * `ghost-limit`: CRIU copies the data of open, deleted files into the images and by
///   default refuses files over 1 MiB. The sandbox's disk (the upper layer) or memory
///   (tmpfs, under the memory limit) already bounds such a file, so CRIU gets no cap of
///   its own (1 PiB).
/// * `irmap-scan-path`: an inotify watch is dumped as the path of the watched inode.
///   CRIU first opens the watch's file handle, which overlayfs (without `nfs_export`)
///   cannot decode; then it searches a few fixed directories (`/etc`, `/var/log`, ...)
///   for the inode ("irmap"). Watches on the sandbox's own files (a dev server watching
///   its project) are found only in the directories listed here. The search runs only
///   when a watch exists, stops at the first match and caches every inode it stats.
/// * `skip-in-flight`: a connection that reached a listener inside the sandbox but was
///   not accepted yet when it was frozen (traffic through the proxy during a fork, which
///   keeps the sandbox serving) would fail the dump ("In-flight connection"); it is left
///   out instead, and its client sees it reset, as after any restart of a server.
macro_rules! criu_conf_common {
    () => {
        concat!(
            "skip-in-flight\n",
            "ghost-limit 1048576G\n",
            "irmap-scan-path /home\n",
            "irmap-scan-path /root\n",
            "irmap-scan-path /tmp\n",
            "irmap-scan-path /var\n",
            "irmap-scan-path /app\n",
            "irmap-scan-path /workspace\n",
            "irmap-scan-path /code\n",
            "irmap-scan-path /srv\n",
            "irmap-scan-path /opt\n",
            "irmap-scan-path /mnt\n",
            "irmap-scan-path /usr/local\n",
        )
    };
}

/// CRIU options for a sandbox's own pause and resume. `tcp-established` keeps
/// connections inside the sandbox (e.g. loopback between an agent and a kernel) across
/// a pause; the host's proxy closes its own connections before pausing.
pub const CRIU_CONF: &str = concat!("tcp-established\n", "file-locks\n", criu_conf_common!());

/// CRIU options for restoring forks: a fork has a new address, so connections are
/// restored closed.
pub const CRIU_CONF_FORK: &str = concat!("tcp-close\n", "file-locks\n", criu_conf_common!());

/// Where a host with cgroup-v1 controllers mounts the cgroup-v2 hierarchy beside them
/// ("hybrid"); runc puts a sandbox's processes there too, at [`cgroups_path`].
pub const CGROUP2_HYBRID_ROOT: &str = "/sys/fs/cgroup/unified";

/// The sandbox's cgroup, relative to each hierarchy's root.
pub fn cgroups_path(id: &SandboxId) -> PathBuf {
    PathBuf::from(format!("/stasis/{id}"))
}

/// The CRIU configuration file of sandbox `id`: `base` ([`CRIU_CONF`] or
/// [`CRIU_CONF_FORK`]) and, on a hybrid cgroup host, `freeze-cgroup` naming the sandbox's
/// cgroup-v2 directory.
///
/// runc hands CRIU the sandbox's cgroup-v1 freezer; the config file overrides it. With
/// the v1 freezer a stopped process (SIGSTOP, Ctrl-Z) hangs the dump: a v1-frozen task
/// sits in `TASK_FROZEN`, and `ptrace_attach` on a task in group stop waits, killable
/// only, for it to move to `TRACED`, which a frozen task never does. The v2 freezer
/// leaves a stopped task stopped (and counts it as frozen), so the attach completes and
/// CRIU saves and restores it stopped. (See docs/engine.md, "Stopped processes".)
///
/// With this file in force nothing may freeze the sandbox through v1 before CRIU runs:
/// after `runc pause`, CRIU's v2 freeze times out (10 s) and the dump fails, for every
/// sandbox. Freeze through v2 instead (`1` into the cgroup's `cgroup.freeze`, wait for
/// `frozen 1` in `cgroup.events`; `0` thaws).
pub fn criu_conf(base: &str, id: &SandboxId) -> String {
    criu_conf_in(base, id, Path::new(CGROUP2_HYBRID_ROOT))
}

/// The sandbox's cgroup-v2 directory on a hybrid cgroup host (the one to freeze through
/// and to name in `freeze-cgroup`), or `None` on a host without the hybrid hierarchy.
pub fn cgroup2_dir(id: &SandboxId) -> Option<PathBuf> {
    cgroup2_dir_in(id, Path::new(CGROUP2_HYBRID_ROOT))
}

fn cgroup2_dir_in(id: &SandboxId, hybrid_root: &Path) -> Option<PathBuf> {
    if !hybrid_root.join("cgroup.controllers").exists() {
        return None;
    }
    let rel = cgroups_path(id);
    Some(hybrid_root.join(rel.strip_prefix("/").unwrap_or(&rel)))
}

fn criu_conf_in(base: &str, id: &SandboxId, hybrid_root: &Path) -> String {
    let mut conf = base.to_owned();
    if let Some(dir) = cgroup2_dir_in(id, hybrid_root) {
        conf.push_str(&format!("freeze-cgroup {}\n", dir.display()));
    }
    conf
}

/// The inputs of [`build`] that are not in the record.
pub(crate) struct BundleInputs<'a> {
    pub record: &'a Record,
    pub net: &'a HookParams,
    pub hook_binary: &'a Path,
    pub criu_conf: &'a Path,
    /// Directory holding the sandbox's `hosts` and `resolv.conf`.
    pub etc: &'a Path,
}

/// Open files allowed in a sandbox: 65536, or less if the host's own hard limit is lower
/// (a user namespace cannot raise it).
fn nofile_limit() -> u64 {
    let host = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    host.min(65536)
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The sandbox's config.json.
pub(crate) fn build(inp: &BundleInputs<'_>) -> Result<Spec, Cause> {
    let rec = inp.record;
    let spec = &rec.spec;
    let agent_name = rec
        .agent_path
        .file_name()
        .ok_or_else(|| Cause::Invalid("agent path has no file name".into()))?
        .to_string_lossy()
        .into_owned();
    let agent_in_sandbox = format!("{AGENT_DIR}/{agent_name}");

    let caps: oci_spec::runtime::Capabilities = CAPABILITIES.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let mut args = vec![agent_in_sandbox.clone()];
    args.extend(spec.agent.args.iter().cloned());
    let mut env = vec![
        s("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        s("HOME=/root"),
        s("TERM=xterm"),
    ];
    env.extend(spec.agent.env.iter().cloned());
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(args)
        .env(env)
        .cwd(PathBuf::from("/"))
        // Off, so that setuid programs (`sudo`) work as in E2B: see architecture.md,
        // Hardening.
        .no_new_privileges(false)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile_limit())
            .soft(nofile_limit())
            .build()?])
        .build()?;

    let mut mounts = oci_spec::runtime::get_default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination(PathBuf::from(&agent_in_sandbox))
            .typ(s("bind"))
            .source(rec.agent_path.clone())
            .options(vec![s("bind"), s("ro"), s("nosuid"), s("nodev")])
            .build()?,
    );

    for file in ["hosts", "resolv.conf"] {
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(format!("/etc/{file}")))
                .typ(s("bind"))
                .source(inp.etc.join(file))
                .options(vec![
                    s("bind"),
                    s("rw"),
                    s("nosuid"),
                    s("nodev"),
                    s("noexec"),
                ])
                .build()?,
        );
    }

    let id_map = |base: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(base)
            .size(RANGE)
            .build()
    };
    let r = spec.resources;
    let period: u64 = 100_000;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access(s("rwm"))
            .build()?])
        .memory(
            LinuxMemoryBuilder::default()
                .limit(r.memory_bytes as i64)
                .swap(r.memory_bytes as i64)
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(r.cpu_millis as i64 * period as i64 / 1000)
                .build()?,
        )
        .pids(LinuxPidsBuilder::default().limit(r.pids as i64).build()?)
        .build()?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::User,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .uid_mappings(vec![id_map(rec.uid_base)?])
        .gid_mappings(vec![id_map(rec.uid_base)?])
        .namespaces(namespaces)
        .cgroups_path(cgroups_path(&spec.id))
        .resources(resources)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .seccomp(seccomp::default_profile()?)
        .build()?;

    let hooks = HooksBuilder::default()
        .prestart(vec![HookBuilder::default()
            .path(inp.hook_binary.to_owned())
            .args(vec![s("stasis-netns-hook")])
            .timeout(30i64)
            .build()?])
        .build()?;
    let mut annotations: HashMap<String, String> = inp.net.annotations().into_iter().collect();
    annotations.insert(
        CRIU_CONFIG_ANNOTATION.into(),
        inp.criu_conf.to_string_lossy().into_owned(),
    );

    Ok(SpecBuilder::default()
        .version(s("1.0.2-dev"))
        .root(
            RootBuilder::default()
                .path(PathBuf::from("rootfs"))
                .readonly(false)
                .build()?,
        )
        .hostname(spec.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .hooks(hooks)
        .annotations(annotations)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_options_are_one_per_line() {
        for conf in [CRIU_CONF, CRIU_CONF_FORK] {
            assert!(conf.ends_with('\n'));
            assert!(conf.lines().all(|l| !l.trim().is_empty()), "{conf}");
            assert!(conf.contains("ghost-limit 1048576G\n"), "{conf}");
            assert!(conf.contains("irmap-scan-path /home\n"), "{conf}");
            assert!(!conf.contains("freeze-cgroup"), "{conf}");
        }
    }

    #[test]
    fn a_hybrid_host_freezes_through_the_sandboxs_cgroup_v2() {
        let id: SandboxId = "abc123".parse().unwrap();
        let root = tempfile::tempdir().unwrap();
        // Not hybrid: runc's own freezer stays.
        assert_eq!(criu_conf_in(CRIU_CONF, &id, root.path()), CRIU_CONF);
        std::fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let conf = criu_conf_in(CRIU_CONF, &id, root.path());
        assert_eq!(
            conf.strip_prefix(CRIU_CONF).unwrap(),
            format!("freeze-cgroup {}/stasis/abc123\n", root.path().display())
        );
    }
}
