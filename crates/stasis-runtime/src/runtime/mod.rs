//! [`RuncRuntime`]: the runc + CRIU implementation of [`Runtime`], one file per verb:
//! [`create`](create.rs), [`pause`](pause.rs) (checkpoint), [`resume`](resume.rs)
//! (restore), [`fork`](fork.rs), [`kill`](kill.rs), [`adopt`](adopt.rs) (recovery after
//! a crash) and [`inspect`](inspect.rs) (info, list, stats).
//!
//! Every operation on a sandbox records itself in the sandbox's record before it starts
//! (`Record::op`) and follows the crash protocol of docs/snapshot-format.md, so that
//! [`RuncRuntime::adopt`] can finish or roll back whatever a crash interrupted.

mod adopt;
mod create;
mod fork;
mod inspect;
mod kill;
mod network_policy;
mod pause;
mod resume;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use stasis_snapshot as snap;
use stasis_types::SandboxId;
use tracing::warn;

use crate::cgroup::Cgroups;
use crate::cmd;
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::idmap::{self, RANGE};
use crate::layout::{Layout, SandboxPaths};
use crate::leases::{self, LeasePool, Owner};
use crate::mounts;
use crate::net::{self, HookParams, NetworkConfig};
use crate::oci::{self, BundleInputs};
use crate::runc::Runc;
use crate::spec::{PauseMode, Record, SandboxInfo, SandboxSpec, SnapshotInfo, Stats};
use crate::Runtime;

/// First host uid of the first sandbox range. Ranges are `RANGE` ids wide.
const UID_BASE: u32 = 1 << 20;
/// Number of uid ranges (keeps every range below 2^32 - 1).
const UID_RANGES: u32 = 60_000;
/// Files at the top of a snapshot generation that the manifest checksums.
const SNAPSHOT_FILES: &[&str] = &["config.json", "sandbox.json"];

/// How a [`RuncRuntime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of all state (templates, sandboxes, snapshots).
    pub data_dir: PathBuf,
    pub runc: PathBuf,
    pub criu: PathBuf,
    /// The prestart hook binary (`stasis-netns-hook`).
    pub hook_binary: PathBuf,
    pub network: NetworkConfig,
    /// Host-wide lease directory shared by every runtime on the host.
    pub leases_dir: PathBuf,
    /// Verify snapshot checksums before every resume.
    pub verify_checksums: bool,
}

impl RuntimeConfig {
    /// Defaults for `data_dir`: runc from Debian, CRIU from `scripts/setup.sh`, the hook
    /// next to the current executable.
    pub fn new(data_dir: impl Into<PathBuf>, hook_binary: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runc: PathBuf::from("/usr/sbin/runc"),
            criu: PathBuf::from("/usr/local/sbin/criu"),
            hook_binary: hook_binary.into(),
            network: NetworkConfig::default(),
            leases_dir: leases::default_dir().to_owned(),
            verify_checksums: true,
        }
    }
}

/// The runc + CRIU runtime.
pub struct RuncRuntime {
    /// Held for the runtime's lifetime: one runtime per data dir.
    _lock: File,
    cfg: RuntimeConfig,
    layout: Layout,
    runc: Runc,
    ip_pool: LeasePool,
    uid_pool: LeasePool,
    cgroups: Cgroups,
    busy: Mutex<HashSet<SandboxId>>,
}

/// Marks a sandbox busy for the lifetime of the guard.
struct BusyGuard<'a> {
    rt: &'a RuncRuntime,
    id: SandboxId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.rt
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn write_json_durable(path: &Path, value: &impl Serialize) -> Result<(), Cause> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(value).map_err(|source| Cause::Json {
        path: path.to_owned(),
        source,
    })?;
    {
        let mut f = File::create(&tmp).map_err(Cause::io(&tmp))?;
        f.write_all(&body).map_err(Cause::io(&tmp))?;
        f.sync_all().map_err(Cause::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(Cause::io(path))?;
    if let Some(dir) = path.parent() {
        snap::sync_dir(dir)?;
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<Record, Cause> {
    let body = fs::read(path).map_err(Cause::io(path))?;
    serde_json::from_slice(&body).map_err(|source| Cause::Json {
        path: path.to_owned(),
        source,
    })
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Cause> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(Cause::io(path))?;
    // The umask may have narrowed the mode; CRIU needs the image dir at exactly 0711.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Cause::io(path))
}

fn remove_dir_all_if_exists(path: &Path) -> Result<(), Cause> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Cause::io(path)(e)),
    }
}

/// Takes the data dir's lock, waiting up to 10 s for a previous owner (for example a
/// server that is shutting down in the same process) to let go.
fn lock_data_dir(path: &Path) -> Result<File, Cause> {
    use rustix::fs::{flock, FlockOperation};
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path)
        .map_err(Cause::io(path))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = f.set_len(0);
                let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
                return Ok(f);
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let holder = fs::read_to_string(path).unwrap_or_default();
                return Err(Cause::Invalid(format!(
                    "the data dir is in use by another runtime (process {}); \
                     only one server may use a data dir at a time",
                    holder.trim()
                )));
            }
            Err(e) => {
                return Err(Cause::Sys {
                    what: format!("flock {}", path.display()),
                    source: e.into(),
                })
            }
        }
    }
}

/// Copies a directory tree preserving owners, modes, xattrs (overlay whiteouts and
/// opaque markers) and hard links.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), Cause> {
    let mut c = Command::new("cp");
    c.args(["-a", "--reflink=auto"]).arg(src).arg(dst);
    cmd::run(c).map(drop)
}

/// Makes the CRIU images in `dir` readable by host root and the sandbox's own root
/// (group: CRIU opens some of them from inside the sandbox's user namespace at restore;
/// an image owned by that uid with mode 0600 is refused there) and nobody else: they
/// hold the sandbox's memory, its secrets included. The dir stays traversable only.
fn restrict_images(dir: &Path, uid_base: u32) -> Result<(), Cause> {
    for e in fs::read_dir(dir).map_err(Cause::io(dir))? {
        let e = e.map_err(Cause::io(dir))?;
        let p = e.path();
        if e.file_type().map_err(Cause::io(&p))?.is_file() {
            chown(&p, Some(0), Some(uid_base)).map_err(Cause::io(&p))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).map_err(Cause::io(&p))?;
        }
    }
    Ok(())
}

/// How long a freeze may take (a task in uninterruptible sleep can hold it off).
const FREEZE_WITHIN: Duration = Duration::from_secs(15);

/// How long the processes of a killed sandbox have to disappear.
const KILL_WITHIN: Duration = Duration::from_secs(10);

impl RuncRuntime {
    /// Opens (or initialises) the data dir and sets up host networking. Checks that
    /// runc, CRIU and the hook are usable, so that a misconfigured host fails here with
    /// a precise error rather than at the first sandbox.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        let host = |what: &str| {
            let what = what.to_owned();
            move |c: Cause| RuntimeError::host(what, c)
        };
        mounts::check_mount_path(&cfg.data_dir).map_err(host("data dir"))?;
        for (name, p) in [
            ("runc", &cfg.runc),
            ("criu", &cfg.criu),
            ("netns hook", &cfg.hook_binary),
        ] {
            if !p.is_file() {
                return Err(RuntimeError::host(
                    format!("{name} not found"),
                    Cause::Invalid(format!(
                        "{} does not exist; run scripts/setup.sh (or set the path)",
                        p.display()
                    )),
                ));
            }
        }
        let layout = Layout::new(&cfg.data_dir);
        for d in [
            layout.root.clone(),
            layout.sandboxes(),
            layout.snapshots(),
            layout.agents(),
            layout.runc_root(),
            layout.root.join("templates"),
        ] {
            mkdir(&d, 0o711).map_err(host("data dir"))?;
        }
        let lock =
            lock_data_dir(&layout.root.join("runtime.lock")).map_err(host("data dir lock"))?;
        net::ensure_host_network(&cfg.network).map_err(host("network"))?;
        let cgroups = Cgroups::detect(&cfg.data_dir).map_err(host("cgroups"))?;
        let pool_name = format!("ip-{}", cfg.network.bridge);
        let rt = Self {
            _lock: lock,
            runc: Runc {
                bin: cfg.runc.clone(),
                root: layout.runc_root(),
                criu: cfg.criu.clone(),
                cgroups: cgroups.clone(),
            },
            cgroups,
            ip_pool: LeasePool::new(cfg.leases_dir.join(pool_name)),
            uid_pool: LeasePool::new(cfg.leases_dir.join("uid")),
            layout,
            cfg,
            busy: Mutex::new(HashSet::new()),
        };
        Ok(rt)
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// The root filesystem of a template.
    pub fn template_rootfs(&self, name: &stasis_types::TemplateName) -> PathBuf {
        self.layout.template_rootfs(name)
    }

    fn claim(&self, id: &SandboxId) -> Result<BusyGuard<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id.clone()) {
            return Err(RuntimeError::Busy(id.clone()));
        }
        Ok(BusyGuard {
            rt: self,
            id: id.clone(),
        })
    }

    fn owner(&self, id: &SandboxId) -> Owner {
        Owner {
            data_dir: self.cfg.data_dir.clone(),
            id: id.clone(),
        }
    }

    fn record(&self, id: &SandboxId) -> Result<(SandboxPaths, Record)> {
        let p = self.layout.sandbox(id);
        if !p.record.exists() {
            return Err(RuntimeError::NotFound(id.clone()));
        }
        let rec = read_record(&p.record).at(id, Step::Inspect)?;
        Ok((p, rec))
    }

    fn hook_params(&self, rec: &Record) -> HookParams {
        HookParams {
            bridge: self.cfg.network.bridge.clone(),
            address: rec.address,
            prefix: self.cfg.network.prefix,
            gateway: self.cfg.network.gateway(),
            host_if: net::host_if_name(&rec.spec.id),
        }
    }

    /// Keeps a content-addressed copy of the agent binary and returns its path.
    fn agent_copy(&self, binary: &Path) -> Result<PathBuf, Cause> {
        let entry = snap::hash_file(binary)?;
        let dst = self.layout.agent_copy(&entry.blake3[..32], binary);
        if dst.is_file() {
            return Ok(dst);
        }
        let dir = dst.parent().expect("agent copy has a parent");
        mkdir(dir, 0o755)?;
        // Concurrent creates may copy the same binary: each uses its own temporary name.
        let tmp = dir.join(format!(".tmp.{}", SandboxId::generate()));
        fs::copy(binary, &tmp).map_err(Cause::io(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(Cause::io(&tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(Cause::io(&tmp))?;
        fs::rename(&tmp, &dst).map_err(Cause::io(&dst))?;
        Ok(dst)
    }

    fn acquire_address(&self, id: &SandboxId) -> Result<Ipv4Addr> {
        let owner = self.owner(id);
        let key = self
            .ip_pool
            .acquire_first(
                self.cfg.network.host_addresses().map(|a| a.to_string()),
                &owner,
            )
            .at(id, Step::Network)?
            .ok_or(RuntimeError::PoolExhausted { what: "address" })?;
        Ok(key.parse().expect("lease keys are addresses"))
    }

    fn acquire_uid_range(&self, id: &SandboxId) -> Result<u32> {
        let owner = self.owner(id);
        let key = self
            .uid_pool
            .acquire_first((0..UID_RANGES).map(|i| i.to_string()), &owner)
            .at(id, Step::Prepare)?
            .ok_or(RuntimeError::PoolExhausted { what: "uid range" })?;
        let idx: u32 = key.parse().expect("lease keys are numbers");
        Ok(UID_BASE + idx * RANGE)
    }

    fn uid_key(base: u32) -> String {
        ((base - UID_BASE) / RANGE).to_string()
    }

    /// Mounts the id-mapped template and the overlay root of a sandbox whose upper dir
    /// is in place.
    fn mount_root(&self, p: &SandboxPaths, rec: &Record) -> Result<(), Cause> {
        let template = &rec.template_rootfs;
        for d in [&p.lower, &p.rootfs] {
            mkdir(d, 0o755)?;
        }
        remove_dir_all_if_exists(&p.work)?;
        mkdir(&p.work, 0o700)?;
        if !mounts::is_mounted(&p.lower) {
            idmap::mount_idmapped(template, &p.lower, rec.uid_base)?;
        }
        if !mounts::is_mounted(&p.rootfs) {
            if let Err(e) = mounts::mount_overlay(&[&p.lower], &p.upper, &p.work, &p.rootfs) {
                let _ = mounts::unmount_all(&p.lower);
                return Err(e);
            }
        }
        Ok(())
    }

    fn unmount_root(&self, p: &SandboxPaths) -> Result<(), Cause> {
        mounts::unmount_all(&p.rootfs)?;
        mounts::unmount_all(&p.lower)
    }

    /// The sandbox's `/etc/hosts` (its hostname resolves to its address) and
    /// `/etc/resolv.conf` (the host's resolvers when it may reach the internet; otherwise
    /// a resolver that refuses at once, so lookups fail fast instead of timing out).
    fn write_etc(&self, p: &SandboxPaths, rec: &Record) -> Result<(), Cause> {
        mkdir(&p.etc, 0o755)?;
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            rec.address, rec.spec.hostname
        );
        let resolv = if rec.spec.allow_internet {
            let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let servers: Vec<&str> = host
                .lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .map(str::trim)
                .filter(|a| !a.starts_with("127.") && *a != "::1")
                .collect();
            if servers.is_empty() {
                "nameserver 127.0.0.1\n".to_owned()
            } else {
                servers
                    .iter()
                    .map(|a| format!("nameserver {a}\n"))
                    .collect()
            }
        } else {
            "# This sandbox has no internet access.\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n".to_owned()
        };
        for (name, body) in [("hosts", hosts), ("resolv.conf", resolv)] {
            let f = p.etc.join(name);
            fs::write(&f, body).map_err(Cause::io(&f))?;
            // Root in the sandbox may edit them.
            chown(&f, Some(rec.uid_base), Some(rec.uid_base)).map_err(Cause::io(&f))?;
        }
        Ok(())
    }

    /// Writes the bundle; `criu_base` is [`oci::CRIU_CONF`] or [`oci::CRIU_CONF_FORK`].
    fn write_bundle(&self, p: &SandboxPaths, rec: &Record, criu_base: &str) -> Result<(), Cause> {
        mkdir(&p.bundle, 0o711)?;
        self.write_criu_conf(p, rec, criu_base)?;
        if !p.etc.join("hosts").exists() {
            self.write_etc(p, rec)?;
        }
        let spec = oci::build(&BundleInputs {
            record: rec,
            net: &self.hook_params(rec),
            hook_binary: &self.cfg.hook_binary,
            criu_conf: &p.criu_conf,
            etc: &p.etc,
        })?;
        write_json_durable(&p.config, &spec)
    }

    /// Points an existing bundle at this runtime's hook binary (the binary may have
    /// moved since the sandbox was created), or writes the bundle if it is missing.
    fn refresh_bundle(&self, p: &SandboxPaths, rec: &Record) -> Result<(), Cause> {
        if !p.config.exists() {
            return self.write_bundle(p, rec, oci::CRIU_CONF);
        }
        // The CRIU options of this version (a sandbox may come from an older one).
        self.write_criu_conf(p, rec, oci::CRIU_CONF)?;
        let mut spec = oci_spec::runtime::Spec::load(&p.config)?;
        if let Some(hooks) = spec.hooks_mut() {
            if let Some(pre) = hooks.prestart_mut() {
                for h in pre.iter_mut() {
                    h.set_path(self.cfg.hook_binary.clone());
                }
            }
        }
        write_json_durable(&p.config, &spec)
    }

    /// The sandbox's CRIU config file (named by the `org.criu.config` annotation).
    fn write_criu_conf(&self, p: &SandboxPaths, rec: &Record, base: &str) -> Result<(), Cause> {
        let conf = oci::criu_conf(base, &rec.spec.id);
        fs::write(&p.criu_conf, conf).map_err(Cause::io(&p.criu_conf))
    }

    /// Freezes the sandbox through the cgroup2 freezer where CRIU uses it (a stopped
    /// process would hang a dump under the v1 freezer, and a v1 freeze makes CRIU's own
    /// v2 freeze time out), else through runc.
    fn freeze(&self, id: &SandboxId) -> Result<(), Cause> {
        match oci::cgroup2_dir(id) {
            Some(_) => self.cgroups.freeze_v2(id, FREEZE_WITHIN),
            None => self.runc.freeze(id.as_str()),
        }
    }

    /// Thaws the sandbox, whichever freezer froze it, and checks that it is thawed.
    fn thaw(&self, id: &SandboxId) -> Result<(), Cause> {
        self.cgroups.thaw(id);
        if self.cgroups.is_frozen(id) {
            return Err(Cause::Invalid(format!(
                "sandbox {id} is still frozen after a thaw ({:?})",
                self.cgroups.freezer_state(id)
            )));
        }
        Ok(())
    }

    /// Refuses, before anything is frozen, a sandbox holding state CRIU cannot save.
    /// `pid` is its PID 1 on the host.
    fn preflight(&self, id: &SandboxId, pid: u32) -> Result<()> {
        let freezer = if oci::cgroup2_dir(id).is_some() {
            crate::preflight::Freezer::CgroupV2
        } else {
            crate::preflight::Freezer::CgroupV1
        };
        let found = crate::preflight::check(pid as i32, freezer)
            .map_err(|e| Cause::Invalid(e.to_string()))
            .at(id, Step::Checkpoint)?;
        if found.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Unpausable {
                id: id.clone(),
                obstacles: found.to_string(),
            })
        }
    }

    /// A fault point of the crash tests (see [`crate::fault`]).
    fn fault(&self, point: &str, id: &SandboxId) {
        crate::fault::point(point, &self.cgroups, id);
    }

    fn container_pid(&self, id: &SandboxId) -> Result<Option<u32>> {
        Ok(self
            .runc
            .state(id.as_str())
            .at(id, Step::Inspect)?
            .filter(|s| s.status == "running" || s.status == "paused")
            .map(|s| s.pid as u32))
    }
}

impl Runtime for RuncRuntime {
    fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        RuncRuntime::create(self, spec)
    }

    fn pause(&self, id: &SandboxId, mode: PauseMode) -> Result<SnapshotInfo> {
        let _guard = self.claim(id)?;
        let (p, mut rec) = self.record(id)?;
        self.do_pause(&p, &mut rec, mode)
    }

    fn resume(&self, id: &SandboxId) -> Result<SandboxInfo> {
        let _guard = self.claim(id)?;
        let (p, mut rec) = self.record(id)?;
        if self.container_pid(id)?.is_some() {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: "running",
                action: "resume",
            });
        }
        self.do_resume(&p, &mut rec)
    }

    fn kill(&self, id: &SandboxId) -> Result<()> {
        RuncRuntime::kill(self, id)
    }

    fn fork(&self, id: &SandboxId, new_ids: &[SandboxId]) -> Result<Vec<SandboxInfo>> {
        let _guard = self.claim(id)?;
        let (_, rec) = self.record(id)?;
        self.do_fork(&rec, new_ids)
    }

    fn info(&self, id: &SandboxId) -> Result<SandboxInfo> {
        let (p, rec) = self.record(id)?;
        self.info_of(&p, &rec)
    }

    fn list(&self) -> Result<Vec<SandboxInfo>> {
        RuncRuntime::list(self)
    }

    fn stats(&self, id: &SandboxId) -> Result<Stats> {
        RuncRuntime::stats(self, id)
    }

    fn adopt(&self) -> Result<Vec<SandboxInfo>> {
        RuncRuntime::adopt(self)
    }

    fn abort(&self, id: &SandboxId) {
        if let Err(e) = self.cgroups.abort_ops(id, KILL_WITHIN) {
            warn!(sandbox_id = %id, error = %e, "could not end the programs working on the sandbox");
        }
    }

    fn watch(&self, id: &SandboxId) -> Result<Option<std::os::fd::OwnedFd>> {
        RuncRuntime::watch(self, id)
    }

    fn quarantine(&self, id: &SandboxId) -> Result<PathBuf> {
        RuncRuntime::quarantine(self, id)
    }

    fn set_network(
        &self,
        id: &SandboxId,
        internet: bool,
        policy: crate::NetworkPolicy,
    ) -> Result<SandboxInfo> {
        RuncRuntime::set_network(self, id, internet, policy)
    }
}
