//! Running host programs: argument vectors only, never shell strings; every run has a
//! deadline; every failure is reported with the program, its arguments, its exit status
//! and its stderr.
//!
//! A program runs in its own process group and, when [`Limits::cgroup`] names one, in
//! that cgroup from before its `exec` (see [`crate::cgroup`]). When the deadline passes,
//! the group and the cgroup are killed and the call fails with [`Cause::TimedOut`]: no
//! runc or CRIU process outlives the call that started it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::Cause;

/// Longest stderr excerpt kept in an error.
const STDERR_KEEP: usize = 4000;

/// How long a killed program has to disappear before the call gives up on it.
const REAP_WITHIN: Duration = Duration::from_secs(10);

/// The bounds of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// The whole run, from spawn to exit.
    pub within: Duration,
    /// The cgroup2 directory the program runs in, if any.
    pub cgroup: Option<&'a Path>,
}

impl Limits<'_> {
    /// A deadline and no cgroup.
    pub fn within(within: Duration) -> Limits<'static> {
        Limits {
            within,
            cgroup: None,
        }
    }
}

fn describe(cmd: &Command) -> (String, String) {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args = cmd
        .get_args()
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    (program, args)
}

fn tail(s: &str) -> String {
    let s = s.trim();
    if s.len() <= STDERR_KEEP {
        return s.to_owned();
    }
    let mut start = s.len() - STDERR_KEEP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Spawns `cmd` in its own process group, inside `limits.cgroup` if given.
fn spawn(cmd: &mut Command, limits: &Limits<'_>) -> Result<Child, Cause> {
    let (program, _) = describe(cmd);
    cmd.process_group(0);
    if let Some(dir) = limits.cgroup {
        let procs = dir.join("cgroup.procs");
        let f = File::options()
            .write(true)
            .open(&procs)
            .map_err(Cause::io(&procs))?;
        crate::sys::enter_cgroup_before_exec(cmd, f.into());
    }
    cmd.spawn()
        .map_err(|source| Cause::Spawn { program, source })
}

/// Kills the process group led by `pid` and every process of `cgroup`.
fn kill_everything(pid: u32, cgroup: Option<&Path>) {
    use rustix::process::{kill_process, kill_process_group, Pid, Signal};
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = kill_process_group(p, Signal::Kill);
        let _ = kill_process(p, Signal::Kill);
    }
    if let Some(dir) = cgroup {
        crate::cgroup::sigkill_all(dir, &crate::cgroup::procs(dir));
    }
}

/// Waits for `child` (collecting its output on another thread) until `limits.within`.
fn finish(child: Child, limits: &Limits<'_>, program: &str, args: &str) -> Result<Output, Cause> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limits.within) {
        Ok(out) => out.map_err(|source| Cause::Spawn {
            program: program.to_owned(),
            source,
        }),
        Err(_) => {
            kill_everything(pid, limits.cgroup);
            // The waiting thread ends once the program is reaped.
            let _ = rx.recv_timeout(REAP_WITHIN);
            Err(Cause::TimedOut {
                program: program.to_owned(),
                args: args.to_owned(),
                after: limits.within,
            })
        }
    }
}

fn judge(out: Output, program: String, args: String) -> Result<String, Cause> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Cause::Command {
            program,
            args,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// Runs `cmd` to completion with piped output; returns stdout on success.
pub(crate) fn run_limited(mut cmd: Command, limits: Limits<'_>) -> Result<String, Cause> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (program, args) = describe(&cmd);
    let child = spawn(&mut cmd, &limits)?;
    let out = finish(child, &limits, &program, &args)?;
    judge(out, program, args)
}

/// The deadline of [`run`]: host tools, and template build steps in a chroot (a `pip
/// install` can take minutes).
const HOST_TOOL_WITHIN: Duration = Duration::from_secs(30 * 60);

/// [`run_limited`] with a generous deadline and no cgroup: for host tools (`ip`, `nft`,
/// `cp`, `chroot`) that never touch a sandbox's processes.
pub(crate) fn run(cmd: Command) -> Result<String, Cause> {
    run_limited(cmd, Limits::within(HOST_TOOL_WITHIN))
}

/// Runs `cmd` with `input` on stdin, within the host-tool deadline.
pub(crate) fn run_with_input(mut cmd: Command, input: &[u8]) -> Result<String, Cause> {
    let limits = Limits::within(HOST_TOOL_WITHIN);
    let (program, args) = describe(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, &limits)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|source| Cause::Spawn {
            program: program.clone(),
            source,
        })?;
    }
    let out = finish(child, &limits, &program, &args)?;
    judge(out, program, args)
}

/// Runs `cmd` whose children may outlive it (`runc run -d`, `runc restore -d`): their
/// inherited stdout/stderr go to `log` (a file, never a pipe we would wait on), and
/// stdin is `/dev/null`.
pub(crate) fn run_detached(mut cmd: Command, log: &Path, limits: Limits<'_>) -> Result<(), Cause> {
    let (program, args) = describe(&cmd);
    let mut f = File::options()
        .create(true)
        .append(true)
        .read(true)
        .open(log)
        .map_err(Cause::io(log))?;
    let start = f.seek(SeekFrom::End(0)).map_err(Cause::io(log))?;
    let out = f.try_clone().map_err(Cause::io(log))?;
    let err = f.try_clone().map_err(Cause::io(log))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = spawn(&mut cmd, &limits)?;
    let status = finish(child, &limits, &program, &args)?.status;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    f.seek(SeekFrom::Start(start)).map_err(Cause::io(log))?;
    let _ = f.read_to_string(&mut text);
    Err(Cause::Command {
        program,
        args,
        status: status.to_string(),
        stderr: tail(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_program_past_its_deadline_is_killed_with_its_children() {
        // `sh` starts a child that would outlive a plain kill of `sh` itself.
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 30 & sleep 30; wait"]);
        let started = Instant::now();
        let r = run_limited(c, Limits::within(Duration::from_millis(300)));
        assert!(
            matches!(r, Err(Cause::TimedOut { ref program, .. }) if program == "sh"),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not killed in time"
        );
        // Nothing of the group is left: `pgrep` finds no `sleep 30` of ours.
        let left = std::process::Command::new("pgrep")
            .args(["-f", "^sleep 30$"])
            .output()
            .unwrap();
        let ours: Vec<u32> = String::from_utf8_lossy(&left.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|pid: &u32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next().map(str::to_owned))
                    .and_then(|rest| rest.split_whitespace().nth(2).map(str::to_owned))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(1)
            })
            .collect();
        assert!(ours.is_empty(), "orphaned children left: {ours:?}");
    }

    #[test]
    fn failures_carry_program_status_and_stderr() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo boom >&2; exit 3"]);
        match run(c) {
            Err(Cause::Command { stderr, status, .. }) => {
                assert_eq!(stderr, "boom");
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("{other:?}"),
        }
    }
}
