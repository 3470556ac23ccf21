//! Host cgroups: how the runtime finds, and ends, every process of a sandbox and every
//! host program working on one, whatever an earlier process of the server left behind.
//!
//! * A sandbox's processes live in its container cgroup `/stasis/<id>` (runc puts them
//!   there in every hierarchy, the cgroup2 one included; CRIU puts restored ones back).
//! * Every `runc` (and the `criu` it starts) that works on sandbox `<id>` runs in the
//!   cgroup2 group `/stasis-ops/<data dir key>/<id>`, entered before `exec`. A crashed
//!   server's orphaned `runc checkpoint` or `runc restore` is found there by the next one
//!   (or by `stasis gc`), not by memory; the data dir key keeps servers apart.
//!
//! `cgroup.kill` (cgroup2, kernel ≥ 5.14) ends every process of a group at once; tasks
//! frozen by the cgroup-v1 freezer only die once thawed, so a kill also thaws.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stasis_types::SandboxId;

use crate::error::Cause;

/// Parent of the container cgroups (runc's `cgroupsPath` is `/stasis/<id>`).
pub const SANDBOX_PARENT: &str = "stasis";
/// Parent of the per-sandbox groups of host programs.
pub const OPS_PARENT: &str = "stasis-ops";

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    /// Mount point of the cgroup2 hierarchy.
    v2: PathBuf,
    /// Mount points of cgroup-v1 hierarchies (one per controller set), if any.
    v1: Vec<PathBuf>,
    /// The v1 freezer's mount point, if the freezer is a v1 controller here.
    freezer_v1: Option<PathBuf>,
    /// `/stasis-ops/<data dir key>` in the cgroup2 hierarchy.
    ops_root: PathBuf,
}

/// A short, stable key of a data dir for the ops cgroups of its sandboxes.
pub(crate) fn data_dir_key(data_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    blake3::hash(data_dir.as_os_str().as_bytes()).to_hex()[..16].to_owned()
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Cause + '_ {
    move |source| Cause::Io {
        path: path.to_owned(),
        source,
    }
}

impl Cgroups {
    /// Reads the mounted hierarchies from `/proc/self/mountinfo`; ops groups are those of
    /// `data_dir`.
    pub fn detect(data_dir: &Path) -> Result<Self, Cause> {
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_at(Path::new("/proc/self/mountinfo")))?;
        Self::from_mountinfo(&info, data_dir)
    }

    fn from_mountinfo(info: &str, data_dir: &Path) -> Result<Self, Cause> {
        let mut v2 = None;
        let mut v1 = Vec::new();
        let mut freezer_v1 = None;
        for line in info.lines() {
            // `… mount-point options - fstype source super-options`
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            // Only the host's own hierarchies: CRIU mounts controllers again in a
            // temporary "cgroup yard" while it restores, which must not be taken for them.
            if !mount_point.starts_with("/sys/fs/cgroup") {
                continue;
            }
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let super_opts = r.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    let p = PathBuf::from(mount_point);
                    if super_opts.split(',').any(|o| o == "freezer") && freezer_v1.is_none() {
                        freezer_v1 = Some(p.clone());
                    }
                    if !v1.contains(&p) {
                        v1.push(p);
                    }
                }
                _ => {}
            }
        }
        let v2 = v2.ok_or_else(|| {
            Cause::Invalid(
                "no cgroup2 hierarchy is mounted; mount one (e.g. at /sys/fs/cgroup/unified)"
                    .into(),
            )
        })?;
        let ops_root = v2.join(OPS_PARENT).join(data_dir_key(data_dir));
        Ok(Self {
            v2,
            v1,
            freezer_v1,
            ops_root,
        })
    }

    /// The sandbox's container cgroup in the cgroup2 hierarchy.
    pub fn sandbox(&self, id: &SandboxId) -> PathBuf {
        self.v2.join(SANDBOX_PARENT).join(id.as_str())
    }

    /// The group of host programs working on sandbox `id`.
    pub fn ops(&self, id: &SandboxId) -> PathBuf {
        self.ops_root.join(id.as_str())
    }

    /// Every sandbox id of this data dir that has an ops group (orphaned programs may be
    /// in it).
    pub fn ops_ids(&self) -> Vec<SandboxId> {
        ids_in(&self.ops_root)
    }

    /// Creates the ops group of `id` (and its parent) if missing.
    pub fn ensure_ops(&self, id: &SandboxId) -> Result<PathBuf, Cause> {
        let dir = self.ops(id);
        // The parent may be removed between its mkdir and ours by `remove_all` of the
        // data dir's last other sandbox: then make both again.
        let mut made = fs::create_dir_all(&dir);
        if matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            made = fs::create_dir_all(&dir);
        }
        made.map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// Thaws the sandbox's freezer (v1 and cgroup2), if it exists and is frozen.
    pub fn thaw(&self, id: &SandboxId) {
        if let Some(f) = &self.freezer_v1 {
            let state = f
                .join(SANDBOX_PARENT)
                .join(id.as_str())
                .join("freezer.state");
            if state.exists() {
                let _ = fs::write(&state, "THAWED");
            }
        }
        let freeze = self.sandbox(id).join("cgroup.freeze");
        if freeze.exists() {
            let _ = fs::write(&freeze, "0");
        }
    }

    /// The v1 freezer state (or cgroup2 `cgroup.freeze`) as the kernel reports it.
    pub fn freezer_state(&self, id: &SandboxId) -> Option<String> {
        if let Some(f) = &self.freezer_v1 {
            let state = f
                .join(SANDBOX_PARENT)
                .join(id.as_str())
                .join("freezer.state");
            if let Ok(s) = fs::read_to_string(state) {
                return Some(s.trim().to_owned());
            }
        }
        fs::read_to_string(self.sandbox(id).join("cgroup.freeze"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Freezes the sandbox through its cgroup2 `cgroup.freeze` and waits until the
    /// kernel reports it frozen (`frozen 1` in `cgroup.events`).
    pub fn freeze_v2(&self, id: &SandboxId, within: Duration) -> Result<(), Cause> {
        let dir = self.sandbox(id);
        let freeze = dir.join("cgroup.freeze");
        fs::write(&freeze, "1").map_err(io_at(&freeze))?;
        let events = dir.join("cgroup.events");
        let until = Instant::now() + within;
        loop {
            let text = fs::read_to_string(&events).map_err(io_at(&events))?;
            if text.lines().any(|l| l.trim() == "frozen 1") {
                return Ok(());
            }
            if Instant::now() >= until {
                let _ = fs::write(&freeze, "0");
                return Err(Cause::Invalid(format!(
                    "{} did not freeze within {within:?}",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the sandbox's cgroup is frozen (or freezing), through either freezer.
    pub fn is_frozen(&self, id: &SandboxId) -> bool {
        if let Some(f) = &self.freezer_v1 {
            let state = f
                .join(SANDBOX_PARENT)
                .join(id.as_str())
                .join("freezer.state");
            if fs::read_to_string(state).is_ok_and(|s| s.trim() != "THAWED") {
                return true;
            }
        }
        fs::read_to_string(self.sandbox(id).join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    /// Ends every process of the sandbox and waits until they are gone.
    pub fn kill_sandbox(&self, id: &SandboxId, within: Duration) -> Result<(), Cause> {
        let dir = self.sandbox(id);
        kill_group(&dir, within, || self.thaw(id))
    }

    /// Ends every host program working on `id` and waits until they are gone.
    pub fn kill_ops(&self, id: &SandboxId, within: Duration) -> Result<(), Cause> {
        kill_group(&self.ops(id), within, || {})
    }

    /// Ends every host program working on `id` while thawing the sandbox: a CRIU
    /// blocked on a frozen task (in `ptrace` attach) can only die once it is thawed.
    pub fn abort_ops(&self, id: &SandboxId, within: Duration) -> Result<(), Cause> {
        kill_group(&self.ops(id), within, || self.thaw(id))
    }

    /// Lets the host programs working on `id` finish on their own for up to `grace`
    /// (a CRIU killed in the middle of a dump can leave its parasite code in the
    /// sandbox's processes; one left to finish cleans up after itself), then kills what
    /// is left. Returns whether anything had to be waited for.
    pub fn settle_ops(&self, id: &SandboxId, grace: Duration) -> Result<bool, Cause> {
        let dir = self.ops(id);
        if procs(&dir).is_empty() {
            return Ok(false);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until && !procs(&dir).is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(&dir, Duration::from_secs(10), || {})?;
        Ok(true)
    }

    /// Removes the sandbox's container cgroups in every hierarchy and its ops group.
    /// Groups that still hold processes are left (and reported).
    pub fn remove_all(&self, id: &SandboxId) -> Result<(), Cause> {
        let mut first = None;
        let dirs = std::iter::once(&self.v2)
            .chain(&self.v1)
            .map(|h| h.join(SANDBOX_PARENT).join(id.as_str()))
            .chain(std::iter::once(self.ops(id)));
        for d in dirs {
            if let Err(e) = remove_group(&d) {
                first.get_or_insert(e);
            }
        }
        // The data dir's own group goes with its last sandbox (it is made again when
        // needed); while other sandboxes of the dir have groups, rmdir refuses.
        let _ = fs::remove_dir(&self.ops_root);
        first.map_or(Ok(()), Err)
    }

    /// Whether any container cgroup of `id` exists in any hierarchy.
    pub fn any_exists(&self, id: &SandboxId) -> bool {
        std::iter::once(&self.v2)
            .chain(&self.v1)
            .any(|h| h.join(SANDBOX_PARENT).join(id.as_str()).is_dir())
            || self.ops(id).is_dir()
    }
}

fn ids_in(dir: &Path) -> Vec<SandboxId> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes of a cgroup (empty if it does not exist).
pub(crate) fn procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Sends SIGKILL to every process of the group at `dir` (`cgroup.kill`, and to each of
/// `members` where that is not available), without waiting.
pub(crate) fn sigkill_all(dir: &Path, members: &[u32]) {
    let killed = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if killed.is_err() {
        for pid in members {
            if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::Kill);
            }
        }
    }
}

/// Kills every process of the group at `dir` (`cgroup.kill`, else SIGKILL to each) and
/// waits until it is empty. `after_kill` runs after each round (to thaw frozen tasks).
fn kill_group(dir: &Path, within: Duration, after_kill: impl Fn()) -> Result<(), Cause> {
    if !dir.is_dir() {
        return Ok(());
    }
    let deadline = Instant::now() + within;
    loop {
        let left = procs(dir);
        if left.is_empty() {
            return Ok(());
        }
        sigkill_all(dir, &left);
        after_kill();
        if Instant::now() >= deadline {
            return Err(Cause::Invalid(format!(
                "processes {left:?} of {} did not exit within {within:?}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes an empty cgroup (and nothing else: cgroup dirs hold only kernel files).
fn remove_group(dir: &Path) -> Result<(), Cause> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
39 35 0:34 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,freezer
40 35 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_hierarchies_of_a_hybrid_host() {
        let c = Cgroups::from_mountinfo(HYBRID, Path::new("/var/lib/stasis")).unwrap();
        assert_eq!(c.v2, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(c.v1.len(), 2);
        assert_eq!(c.freezer_v1, Some(PathBuf::from("/sys/fs/cgroup/freezer")));
        let id: SandboxId = "abc".parse().unwrap();
        let key = data_dir_key(Path::new("/var/lib/stasis"));
        assert_eq!(key.len(), 16);
        assert_eq!(
            c.ops(&id),
            PathBuf::from(format!("/sys/fs/cgroup/unified/stasis-ops/{key}/abc"))
        );
        assert_eq!(
            c.sandbox(&id),
            PathBuf::from("/sys/fs/cgroup/unified/stasis/abc")
        );
    }

    #[test]
    fn criu_cgroup_yards_are_not_taken_for_the_hosts_hierarchies() {
        let with_yard = format!(
            "{HYBRID}90 25 0:50 / /var/lib/stasis/sandboxes/x/.criu.cgyard.abc/freezer rw - cgroup cgroup rw,freezer\n"
        );
        let c = Cgroups::from_mountinfo(&with_yard, Path::new("/d")).unwrap();
        assert_eq!(c.freezer_v1, Some(PathBuf::from("/sys/fs/cgroup/freezer")));
        assert_eq!(c.v1.len(), 2);
    }

    #[test]
    fn a_host_without_cgroup2_is_refused() {
        let v1_only: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).collect();
        assert!(Cgroups::from_mountinfo(&v1_only, Path::new("/d")).is_err());
    }

    #[test]
    fn a_pure_cgroup2_host_has_no_v1_freezer() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let c = Cgroups::from_mountinfo(info, Path::new("/d")).unwrap();
        assert_eq!(c.v2, PathBuf::from("/sys/fs/cgroup"));
        assert!(c.v1.is_empty() && c.freezer_v1.is_none());
    }
}
