//! [`RuncRuntime`]: the runc + CRIU implementation of [`Runtime`].

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
use stasis_snapshot::{self as snap, Manifest};
use stasis_types::SandboxId;
use tracing::{info, warn};

use crate::cmd;
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::idmap::{self, RANGE};
use crate::layout::{Layout, SandboxPaths};
use crate::leases::{self, LeasePool, Owner};
use crate::mounts;
use crate::net::{self, HookParams, NetworkConfig};
use crate::oci::{self, BundleInputs};
use crate::runc::Runc;
use crate::spec::{PauseMode, Record, SandboxInfo, SandboxSpec, SandboxState, SnapshotInfo, Stats};
use crate::Runtime;
#[path = "network_policy.rs"]
mod network_policy;

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
        let pool_name = format!("ip-{}", cfg.network.bridge);
        let rt = Self {
            _lock: lock,
            runc: Runc {
                bin: cfg.runc.clone(),
                root: layout.runc_root(),
                criu: cfg.criu.clone(),
            },
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

    fn write_bundle(&self, p: &SandboxPaths, rec: &Record, criu_conf: &str) -> Result<(), Cause> {
        mkdir(&p.bundle, 0o711)?;
        fs::write(&p.criu_conf, criu_conf).map_err(Cause::io(&p.criu_conf))?;
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

    fn container_pid(&self, id: &SandboxId) -> Result<Option<u32>> {
        Ok(self
            .runc
            .state(id.as_str())
            .at(id, Step::Inspect)?
            .filter(|s| s.status == "running" || s.status == "paused")
            .map(|s| s.pid as u32))
    }

    /// Stops and deletes the container if runc knows it, waiting until it is gone.
    fn stop_container(&self, id: &SandboxId) -> Result<(), Cause> {
        if let Some(st) = self.runc.state(id.as_str())? {
            if st.is_live() {
                if st.status == "paused" {
                    let _ = self.runc.resume(id.as_str());
                }
                let _ = self.runc.kill(id.as_str(), "KILL");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    match self.runc.state(id.as_str())? {
                        Some(s) if s.is_live() => std::thread::sleep(Duration::from_millis(20)),
                        _ => break,
                    }
                }
            }
            self.runc.delete_force(id.as_str())?;
        }
        Ok(())
    }

    fn set_internet(&self, rec: &Record, on: bool) -> Result<(), Cause> {
        if rec.spec.allow_internet || !on {
            net::set_internet(
                &self.cfg.network,
                rec.address,
                on && rec.spec.allow_internet,
            )?;
        }
        Ok(())
    }

    /// Removes every trace of a sandbox, continuing past failures and returning the first.
    fn destroy(&self, id: &SandboxId, rec: Option<&Record>) -> Result<(), Cause> {
        let p = self.layout.sandbox(id);
        let mut first: Option<Cause> = None;
        let mut keep = |r: Result<(), Cause>| {
            if let Err(e) = r {
                warn!(sandbox_id = %id, error = %e, "cleanup step failed");
                first.get_or_insert(e);
            }
        };
        keep(self.stop_container(id));
        keep(self.unmount_root(&p));
        keep(net::delete_link(&net::host_if_name(id)));
        keep(self.remove_network_policy(id, rec));
        if let Some(rec) = rec {
            keep(self.set_internet(rec, false));
        }
        keep(remove_dir_all_if_exists(&p.snapshots));
        keep(remove_dir_all_if_exists(&p.dir));
        let owner = self.owner(id);
        if let Some(rec) = rec {
            self.ip_pool.release(&rec.address.to_string(), &owner);
            self.uid_pool.release(&Self::uid_key(rec.uid_base), &owner);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The newest complete snapshot generation of a sandbox.
    fn latest_snapshot(&self, p: &SandboxPaths) -> Option<(u64, PathBuf)> {
        let entries = fs::read_dir(&p.snapshots).ok()?;
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let g: u64 = e.file_name().to_str()?.parse().ok()?;
                Some((g, e.path()))
            })
            .filter(|(_, path)| path.join(snap::MANIFEST).exists())
            .max_by_key(|(g, _)| *g)
    }

    fn snapshot_info(&self, generation: u64, dir: &Path) -> Result<SnapshotInfo, Cause> {
        let m = Manifest::read(dir)?;
        Ok(SnapshotInfo {
            generation,
            path: dir.to_owned(),
            bytes: m.total_bytes(),
            memory: m.memory,
        })
    }

    fn info_of(&self, p: &SandboxPaths, rec: &Record) -> Result<SandboxInfo> {
        let id = &rec.spec.id;
        let state = if let Some(pid) = self.container_pid(id)? {
            SandboxState::Running { pid }
        } else if rec.paused.is_some() {
            match self.latest_snapshot(p) {
                Some((g, dir)) => match self.snapshot_info(g, &dir) {
                    Ok(snapshot) => SandboxState::Paused { snapshot },
                    Err(e) => SandboxState::Broken {
                        reason: format!("snapshot {}: {e}", dir.display()),
                    },
                },
                None => SandboxState::Broken {
                    reason: "paused, but no complete snapshot on disk".into(),
                },
            }
        } else {
            SandboxState::Stopped
        };
        Ok(SandboxInfo {
            spec: rec.spec.clone(),
            address: rec.address,
            uid_base: rec.uid_base,
            state,
        })
    }

    /// Finishes or rolls back operations that an earlier process left half done, then
    /// reports every sandbox. Call once at start, before serving (also available as
    /// [`Runtime::adopt`]).
    ///
    /// * a pause interrupted before its manifest: the partial snapshot is dropped and its
    ///   upper layer put back; the sandbox is `Stopped` unless it still runs;
    /// * a resume interrupted before the container ran: the upper layer goes back into
    ///   the snapshot, which stays `Paused`;
    /// * a resume that completed without updating the record: the snapshot is dropped.
    pub fn adopt(&self) -> Result<Vec<SandboxInfo>> {
        let mut out = Vec::new();
        let dir = self.layout.sandboxes();
        let entries = fs::read_dir(&dir)
            .map_err(Cause::io(&dir))
            .map_err(|c| RuntimeError::host("read sandboxes dir", c))?;
        for e in entries.flatten() {
            let Some(id) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<SandboxId>().ok())
            else {
                continue;
            };
            let _guard = self.claim(&id)?;
            let p = self.layout.sandbox(&id);
            let Ok(mut rec) = read_record(&p.record) else {
                warn!(sandbox_id = %id, "sandbox directory without a readable record; removing it");
                let _ = self.destroy(&id, None);
                continue;
            };
            let owner = self.owner(&id);
            // Re-take the leases (after a reboot the lease dir may be empty).
            let _ = self.ip_pool.try_acquire(&rec.address.to_string(), &owner);
            let _ = self
                .uid_pool
                .try_acquire(&Self::uid_key(rec.uid_base), &owner);
            let running = self.container_pid(&id)?.is_some();
            // Interrupted pauses.
            if let Ok(entries) = fs::read_dir(&p.snapshots) {
                for s in entries.flatten() {
                    let name = s.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".partial") || name.starts_with("fork-") {
                        let upper = s.path().join(snap::UPPER);
                        if upper.is_dir() && !p.upper.exists() && !name.starts_with("fork-") {
                            fs::rename(&upper, &p.upper)
                                .map_err(Cause::io(&p.upper))
                                .at(&id, Step::Inspect)?;
                        }
                        remove_dir_all_if_exists(&s.path()).at(&id, Step::Inspect)?;
                        info!(sandbox_id = %id, snapshot = %name, "dropped an incomplete snapshot");
                    }
                }
            }
            if running && rec.paused.is_some() {
                // Resume finished; the record was not updated.
                rec.paused = None;
                write_json_durable(&p.record, &rec).at(&id, Step::Inspect)?;
                if let Some((_, dir)) = self.latest_snapshot(&p) {
                    remove_dir_all_if_exists(&dir).at(&id, Step::Inspect)?;
                }
            } else if !running && rec.paused.is_some() {
                // Resume interrupted: the upper layer belongs in the snapshot.
                let _ = self.stop_container(&id);
                let _ = self.unmount_root(&p);
                if let Some((_, dir)) = self.latest_snapshot(&p) {
                    let snap_upper = dir.join(snap::UPPER);
                    if !snap_upper.exists() && p.upper.is_dir() {
                        fs::rename(&p.upper, &snap_upper)
                            .map_err(Cause::io(&snap_upper))
                            .at(&id, Step::Inspect)?;
                        info!(sandbox_id = %id, "rolled back an interrupted resume");
                    }
                }
            } else if !running {
                let _ = self.stop_container(&id);
                let _ = self.unmount_root(&p);
            }
            out.push(self.info_of(&p, &rec)?);
        }
        Ok(out)
    }

    fn do_create(&self, spec: &SandboxSpec, p: &SandboxPaths) -> Result<SandboxInfo> {
        let id = &spec.id;
        let address = self.acquire_address(id)?;
        let uid_base = self.acquire_uid_range(id)?;
        let agent_path = self.agent_copy(&spec.agent.binary).at(id, Step::Prepare)?;
        let template = self.layout.template_rootfs(&spec.template);
        let template_rootfs = fs::canonicalize(&template)
            .map_err(Cause::io(&template))
            .at(id, Step::Prepare)?;
        let rec = Record {
            spec: spec.clone(),
            address,
            uid_base,
            template_rootfs,
            agent_path,
            next_generation: 1,
            paused: None,
        };
        write_json_durable(&p.record, &rec).at(id, Step::Prepare)?;
        mkdir(&p.upper, 0o755).at(id, Step::Mount)?;
        chown(&p.upper, Some(uid_base), Some(uid_base))
            .map_err(Cause::io(&p.upper))
            .at(id, Step::Mount)?;
        self.mount_root(p, &rec).at(id, Step::Mount)?;
        self.write_bundle(p, &rec, oci::CRIU_CONF)
            .at(id, Step::Bundle)?;
        self.set_internet(&rec, true).at(id, Step::Network)?;
        self.apply_network_policy(&rec, true)
            .at(id, Step::Network)?;
        self.runc
            .run(id.as_str(), &p.bundle, &p.log)
            .at(id, Step::Start)?;
        let info = self.info_of(p, &rec)?;
        if !matches!(info.state, SandboxState::Running { .. }) {
            return Err(RuntimeError::Failed {
                id: id.clone(),
                step: Step::Start,
                cause: Box::new(Cause::Invalid(format!(
                    "the agent exited right after start (see {})",
                    p.log.display()
                ))),
            });
        }
        Ok(info)
    }

    /// Puts a stopped sandbox's filesystem back to running after a failed pause.
    fn roll_back_pause(
        &self,
        p: &SandboxPaths,
        rec: &Record,
        partial: &Path,
        mode: PauseMode,
    ) -> Result<(), Cause> {
        let moved = partial.join(snap::UPPER);
        if moved.is_dir() && !p.upper.exists() {
            fs::rename(&moved, &p.upper).map_err(Cause::io(&p.upper))?;
        }
        self.mount_root(p, rec)?;
        let id = rec.spec.id.as_str();
        let _ = self.runc.delete_force(id);
        match mode {
            PauseMode::Full => {
                let work = p.dir.join("restore-work");
                remove_dir_all_if_exists(&work)?;
                mkdir(&work, 0o700)?;
                self.runc
                    .restore(id, &p.bundle, &partial.join(snap::IMAGES), &work, &p.log)?
            }
            PauseMode::FilesystemOnly => self.runc.run(id, &p.bundle, &p.log)?,
        }
        remove_dir_all_if_exists(partial)
    }

    fn do_pause(
        &self,
        p: &SandboxPaths,
        rec: &mut Record,
        mode: PauseMode,
    ) -> Result<SnapshotInfo> {
        let id = rec.spec.id.clone();
        let id = &id;
        match self.runc.state(id.as_str()).at(id, Step::Checkpoint)? {
            Some(s) if s.status == "running" => {}
            Some(s) if s.status == "paused" => {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "frozen",
                    action: "pause",
                })
            }
            _ if rec.paused.is_some() => {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "paused",
                    action: "pause",
                })
            }
            _ => {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "stopped",
                    action: "pause",
                })
            }
        }
        let generation = rec.next_generation;
        let partial = p.partial(generation);
        remove_dir_all_if_exists(&partial).at(id, Step::Checkpoint)?;
        mkdir(&partial, 0o711).at(id, Step::Checkpoint)?;
        let started = Instant::now();
        match mode {
            PauseMode::Full => {
                let images = partial.join(snap::IMAGES);
                mkdir(&images, 0o711).at(id, Step::Checkpoint)?;
                let work = p.dir.join("dump-work");
                remove_dir_all_if_exists(&work).at(id, Step::Checkpoint)?;
                mkdir(&work, 0o700).at(id, Step::Checkpoint)?;
                if let Err(e) = self.runc.checkpoint(id.as_str(), &images, &work, false) {
                    // CRIU resumes the tasks when a dump fails; make sure they are thawed.
                    if let Ok(Some(s)) = self.runc.state(id.as_str()) {
                        if s.status == "paused" {
                            let _ = self.runc.resume(id.as_str());
                        }
                    }
                    let _ = remove_dir_all_if_exists(&partial);
                    return Err(e).at(id, Step::Checkpoint);
                }
            }
            PauseMode::FilesystemOnly => {
                self.stop_container(id).at(id, Step::Checkpoint)?;
            }
        }
        let dumped = started.elapsed();
        // The container is gone from here on: any failure must bring it back.
        let persist = (|| -> Result<SnapshotInfo, Cause> {
            let _ = net::delete_link(&net::host_if_name(id));
            self.unmount_root(p)?;
            fs::rename(&p.upper, partial.join(snap::UPPER)).map_err(Cause::io(&p.upper))?;
            fs::copy(&p.config, partial.join("config.json")).map_err(Cause::io(&p.config))?;
            let mut paused = rec.clone();
            paused.paused = Some(mode);
            write_json_durable(&partial.join("sandbox.json"), &paused)?;
            let manifest = Manifest::build(&partial, id.clone(), generation, SNAPSHOT_FILES)?;
            manifest.write_durable(&partial)?;
            let dir = p.generation(generation);
            fs::rename(&partial, &dir).map_err(Cause::io(&dir))?;
            snap::sync_dir(&p.snapshots)?;
            Ok(SnapshotInfo {
                generation,
                path: dir,
                bytes: manifest.total_bytes(),
                memory: manifest.memory,
            })
        })();
        match persist {
            Ok(info) => {
                rec.paused = Some(mode);
                rec.next_generation = generation + 1;
                write_json_durable(&p.record, &*rec).at(id, Step::Persist)?;
                let _ = self.set_internet(rec, false);
                let _ = remove_dir_all_if_exists(&p.work);
                info!(sandbox_id = %id, generation, bytes = info.bytes,
                      dump_ms = dumped.as_millis() as u64,
                      total_ms = started.elapsed().as_millis() as u64, "paused");
                Ok(info)
            }
            Err(e) => {
                warn!(sandbox_id = %id, error = %e, "pause failed after the dump; restoring");
                if let Err(rb) = self.roll_back_pause(p, rec, &partial, mode) {
                    warn!(sandbox_id = %id, error = %rb, "rolling back the failed pause failed");
                }
                Err(e).at(id, Step::Persist)
            }
        }
    }

    fn do_resume(&self, p: &SandboxPaths, rec: &mut Record) -> Result<SandboxInfo> {
        let id = rec.spec.id.clone();
        let id = &id;
        let Some(mode) = rec.paused else {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: "running",
                action: "resume",
            });
        };
        let (generation, dir) = self
            .latest_snapshot(p)
            .ok_or_else(|| RuntimeError::Failed {
                id: id.clone(),
                step: Step::Verify,
                cause: Box::new(Cause::Invalid("no complete snapshot on disk".into())),
            })?;
        let manifest = Manifest::read(&dir).at(id, Step::Verify)?;
        if self.cfg.verify_checksums {
            manifest.verify(&dir).at(id, Step::Verify)?;
        }
        let started = Instant::now();
        let snap_upper = dir.join(snap::UPPER);
        fs::rename(&snap_upper, &p.upper)
            .map_err(Cause::io(&p.upper))
            .at(id, Step::Mount)?;
        let attempt = (|| -> Result<(), Cause> {
            // The restore must see the mounts the dump saw, so the bundle is the one the
            // sandbox ran with; only host paths that may have moved are refreshed.
            self.refresh_bundle(p, rec)?;
            self.mount_root(p, rec)?;
            self.set_internet(rec, true)?;
            self.apply_network_policy(rec, false)?;
            let _ = self.runc.delete_force(id.as_str());
            match mode {
                PauseMode::Full => {
                    let work = p.dir.join("restore-work");
                    remove_dir_all_if_exists(&work)?;
                    mkdir(&work, 0o700)?;
                    self.runc.restore(
                        id.as_str(),
                        &p.bundle,
                        &dir.join(snap::IMAGES),
                        &work,
                        &p.log,
                    )
                }
                PauseMode::FilesystemOnly => self.runc.run(id.as_str(), &p.bundle, &p.log),
            }
        })();
        if let Err(e) = attempt {
            let _ = self.stop_container(id);
            let _ = net::delete_link(&net::host_if_name(id));
            let _ = self.unmount_root(p);
            let _ = self.set_internet(rec, false);
            if let Err(back) = fs::rename(&p.upper, &snap_upper) {
                warn!(sandbox_id = %id, error = %back, "could not put the upper layer back into the snapshot");
            }
            return Err(e).at(id, Step::Restore);
        }
        rec.paused = None;
        write_json_durable(&p.record, &*rec).at(id, Step::Restore)?;
        // The sandbox runs from here; its snapshot is spent.
        if let Err(e) = remove_dir_all_if_exists(&dir) {
            warn!(sandbox_id = %id, error = %e, "could not remove a spent snapshot");
        }
        info!(sandbox_id = %id, generation, restore_ms = started.elapsed().as_millis() as u64, "resumed");
        self.info_of(p, rec)
    }

    fn do_fork(&self, src: &Record, new_ids: &[SandboxId]) -> Result<Vec<SandboxInfo>> {
        let id = &src.spec.id;
        let sp = self.layout.sandbox(id);
        if self.container_pid(id)?.is_none() {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: if src.paused.is_some() {
                    "paused"
                } else {
                    "stopped"
                },
                action: "fork",
            });
        }
        for n in new_ids {
            if self.layout.sandbox(n).dir.exists() || n == id {
                return Err(RuntimeError::AlreadyExists(n.clone()));
            }
        }
        let tmp = sp.snapshots.join(format!("fork-{}", SandboxId::generate()));
        let images = tmp.join(snap::IMAGES);
        mkdir(&images, 0o711).at(id, Step::Fork)?;
        let work = sp.dir.join("fork-work");
        let result = (|| -> Result<Vec<SandboxInfo>> {
            remove_dir_all_if_exists(&work).at(id, Step::Fork)?;
            mkdir(&work, 0o700).at(id, Step::Fork)?;
            // Freeze, dump while frozen, copy the upper layer while still frozen, thaw.
            self.runc.pause(id.as_str()).at(id, Step::Fork)?;
            let frozen = (|| -> Result<(), Cause> {
                self.runc.checkpoint(id.as_str(), &images, &work, true)?;
                copy_tree(&sp.upper, &tmp.join(snap::UPPER))
            })();
            let thawed = self.runc.resume(id.as_str());
            frozen.at(id, Step::Fork)?;
            thawed.at(id, Step::Fork)?;

            let mut made: Vec<SandboxInfo> = Vec::new();
            for nid in new_ids {
                match self.restore_fork(src, nid, &tmp) {
                    Ok(info) => made.push(info),
                    Err(e) => {
                        for m in &made {
                            let r = read_record(&self.layout.sandbox(&m.spec.id).record).ok();
                            let _ = self.destroy(&m.spec.id, r.as_ref());
                        }
                        return Err(e);
                    }
                }
            }
            Ok(made)
        })();
        let _ = remove_dir_all_if_exists(&tmp);
        let _ = remove_dir_all_if_exists(&work);
        result
    }

    fn restore_fork(&self, src: &Record, nid: &SandboxId, tmp: &Path) -> Result<SandboxInfo> {
        let _guard = self.claim(nid)?;
        let p = self.layout.sandbox(nid);
        mkdir(&p.dir, 0o711).at(nid, Step::Fork)?;
        let attempt = (|| -> Result<SandboxInfo> {
            let address = self.acquire_address(nid)?;
            let owner = self.owner(nid);
            // A fork shares its parent's uid range: the images carry the id map.
            let _ = self
                .uid_pool
                .try_acquire(&Self::uid_key(src.uid_base), &owner);
            let mut spec = src.spec.clone();
            spec.id = nid.clone();
            let rec = Record {
                spec,
                address,
                uid_base: src.uid_base,
                template_rootfs: src.template_rootfs.clone(),
                agent_path: src.agent_path.clone(),
                next_generation: 1,
                paused: None,
            };
            write_json_durable(&p.record, &rec).at(nid, Step::Fork)?;
            copy_tree(&tmp.join(snap::UPPER), &p.upper).at(nid, Step::Fork)?;
            self.mount_root(&p, &rec).at(nid, Step::Mount)?;
            self.write_bundle(&p, &rec, oci::CRIU_CONF_FORK)
                .at(nid, Step::Bundle)?;
            self.set_internet(&rec, true).at(nid, Step::Network)?;
            self.apply_network_policy(&rec, false)
                .at(nid, Step::Network)?;
            let work = p.dir.join("restore-work");
            mkdir(&work, 0o700).at(nid, Step::Fork)?;
            self.runc
                .restore(
                    nid.as_str(),
                    &p.bundle,
                    &tmp.join(snap::IMAGES),
                    &work,
                    &p.log,
                )
                .at(nid, Step::Restore)?;
            // Later pauses of the fork keep connections like any sandbox.
            fs::write(&p.criu_conf, oci::CRIU_CONF)
                .map_err(Cause::io(&p.criu_conf))
                .at(nid, Step::Fork)?;
            self.info_of(&p, &rec)
        })();
        if attempt.is_err() {
            let rec = read_record(&p.record).ok();
            let _ = self.destroy(nid, rec.as_ref());
        }
        attempt
    }

    fn read_stats(&self, p: &SandboxPaths, rec: &Record) -> Result<Stats, Cause> {
        let cg = format!("stasis/{}", rec.spec.id);
        let read_u64 =
            |path: PathBuf| -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
        let v1 = Path::new("/sys/fs/cgroup/memory").exists();
        let mut st = Stats::default();
        if v1 {
            let base = Path::new("/sys/fs/cgroup");
            st.cpu_usage_ns =
                read_u64(base.join("cpuacct").join(&cg).join("cpuacct.usage")).unwrap_or(0);
            st.memory_bytes =
                read_u64(base.join("memory").join(&cg).join("memory.usage_in_bytes")).unwrap_or(0);
            st.memory_limit_bytes =
                read_u64(base.join("memory").join(&cg).join("memory.limit_in_bytes")).unwrap_or(0);
            st.pids = read_u64(base.join("pids").join(&cg).join("pids.current")).unwrap_or(0);
        } else {
            let base = Path::new("/sys/fs/cgroup").join(&cg);
            if let Ok(s) = fs::read_to_string(base.join("cpu.stat")) {
                st.cpu_usage_ns = s
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1000;
            }
            st.memory_bytes = read_u64(base.join("memory.current")).unwrap_or(0);
            st.memory_limit_bytes = read_u64(base.join("memory.max")).unwrap_or(0);
            st.pids = read_u64(base.join("pids.current")).unwrap_or(0);
        }
        st.disk_bytes = snap::summarize(&p.upper)?.bytes;
        Ok(st)
    }
}

impl Runtime for RuncRuntime {
    fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let id = spec.id.clone();
        let _guard = self.claim(&id)?;
        let template = self.layout.template_rootfs(&spec.template);
        if !template.join("bin").exists() && !template.join("usr/bin").exists() {
            return Err(RuntimeError::TemplateMissing {
                name: spec.template.to_string(),
                path: template,
            });
        }
        if !spec.agent.binary.is_file() {
            return Err(RuntimeError::Failed {
                id,
                step: Step::Prepare,
                cause: Box::new(Cause::Invalid(format!(
                    "agent binary {} does not exist",
                    spec.agent.binary.display()
                ))),
            });
        }
        let p = self.layout.sandbox(&id);
        match fs::DirBuilder::new().mode(0o711).create(&p.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(id))
            }
            Err(e) => return Err(Cause::io(&p.dir)(e)).at(&id, Step::Prepare),
        }
        let started = Instant::now();
        match self.do_create(&spec, &p) {
            Ok(info) => {
                info!(sandbox_id = %id, address = %info.address, ms = started.elapsed().as_millis() as u64, "created");
                Ok(info)
            }
            Err(e) => {
                let rec = read_record(&p.record).ok();
                if let Err(c) = self.destroy(&id, rec.as_ref()) {
                    warn!(sandbox_id = %id, error = %c, "cleanup after a failed create failed");
                }
                Err(e)
            }
        }
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
        let _guard = self.claim(id)?;
        let p = self.layout.sandbox(id);
        if !p.dir.exists() && !p.snapshots.exists() {
            return Err(RuntimeError::NotFound(id.clone()));
        }
        let rec = read_record(&p.record).ok();
        self.destroy(id, rec.as_ref()).at(id, Step::Kill)?;
        info!(sandbox_id = %id, "killed");
        Ok(())
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
        let dir = self.layout.sandboxes();
        let entries = fs::read_dir(&dir)
            .map_err(Cause::io(&dir))
            .map_err(|c| RuntimeError::host("read sandboxes dir", c))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(id) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<SandboxId>().ok())
            else {
                continue;
            };
            match self.info(&id) {
                Ok(i) => out.push(i),
                Err(RuntimeError::NotFound(_)) => {} // being created or removed
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(out)
    }

    fn stats(&self, id: &SandboxId) -> Result<Stats> {
        let (p, rec) = self.record(id)?;
        if self.container_pid(id)?.is_none() {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: if rec.paused.is_some() {
                    "paused"
                } else {
                    "stopped"
                },
                action: "read stats",
            });
        }
        self.read_stats(&p, &rec).at(id, Step::Stats)
    }

    fn adopt(&self) -> Result<Vec<SandboxInfo>> {
        RuncRuntime::adopt(self)
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
