//! A minimal sandbox agent: PID 1 that starts one command and reaps every child.
//!
//! `stasis-mini-init PROGRAM [ARGS...]`. Its stdio (host descriptors inherited from runc)
//! is replaced by the sandbox's `/dev/null` before anything else, because CRIU cannot
//! checkpoint host file descriptors; the command's output goes to
//! `/var/log/stasis-mini-init.log` inside the sandbox. The full agent, `stasis-envd`,
//! replaces it in production; this one serves the runtime's own tests and benchmarks.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{wait, WaitOptions};

fn main() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let mut args = std::env::args_os().skip(1);
    if let Some(program) = args.next() {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open("/var/log/stasis-mini-init.log")
            .ok();
        let (out, err) = match log.as_ref().map(|l| (l.try_clone(), l.try_clone())) {
            Some((Ok(o), Ok(e))) => (Stdio::from(o), Stdio::from(e)),
            _ => (Stdio::null(), Stdio::null()),
        };
        let _ = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        drop::<Option<File>>(log);
    }
    loop {
        match wait(WaitOptions::empty()) {
            Ok(Some(_)) => continue,
            // No children left: stay up (PID 1 exiting would end the sandbox).
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
