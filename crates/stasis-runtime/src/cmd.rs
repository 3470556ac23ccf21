//! Running host programs: argument vectors only, never shell strings, and every failure
//! reported with the program, its arguments, its exit status and its stderr.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::Cause;

/// Longest stderr excerpt kept in an error.
const STDERR_KEEP: usize = 4000;

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

/// Runs `cmd` to completion with piped output; returns stdout on success.
pub(crate) fn run(mut cmd: Command) -> Result<String, Cause> {
    cmd.stdin(Stdio::null());
    let (program, args) = describe(&cmd);
    let out = cmd.output().map_err(|source| Cause::Spawn {
        program: program.clone(),
        source,
    })?;
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

/// Runs `cmd` with `input` on stdin.
pub(crate) fn run_with_input(mut cmd: Command, input: &[u8]) -> Result<String, Cause> {
    let (program, args) = describe(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Cause::Spawn {
        program: program.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|source| Cause::Spawn {
            program: program.clone(),
            source,
        })?;
    }
    let out = child.wait_with_output().map_err(|source| Cause::Spawn {
        program: program.clone(),
        source,
    })?;
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

/// Runs `cmd` whose children may outlive it (`runc run -d`, `runc restore -d`): their
/// inherited stdout/stderr go to `log` (a file, never a pipe we would wait on), and
/// stdin is `/dev/null`.
pub(crate) fn run_detached(mut cmd: Command, log: &Path) -> Result<(), Cause> {
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
    let status = cmd.status().map_err(|source| Cause::Spawn {
        program: program.clone(),
        source,
    })?;
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
