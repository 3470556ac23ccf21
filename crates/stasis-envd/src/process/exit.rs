//! Exit statuses, rendered the way envd (Go's `os.ProcessState`) reports them.

use stasis_envd_proto::process::EndEvent;

/// How a process ended, decoded from a raw `wait` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal {
        /// Signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    /// Decodes a raw `waitpid` status.
    pub fn from_raw(raw: i32) -> Exit {
        let sig = raw & 0x7f;
        if sig == 0 {
            Exit::Code((raw >> 8) & 0xff)
        } else {
            Exit::Signal {
                signal: sig,
                core_dumped: raw & 0x80 != 0,
            }
        }
    }

    /// The `end` event: `exitCode` (−1 for signals), `exited`, Go's status string, and
    /// `error` unless the process exited with 0.
    pub fn end_event(self) -> EndEvent {
        let (exit_code, exited, status) = match self {
            Exit::Code(c) => (c, true, format!("exit status {c}")),
            Exit::Signal {
                signal,
                core_dumped,
            } => {
                let core = if core_dumped { " (core dumped)" } else { "" };
                (-1, false, format!("signal: {}{core}", signal_name(signal)))
            }
        };
        let error = (self != Exit::Code(0)).then(|| status.clone());
        EndEvent {
            exit_code,
            exited,
            status,
            error,
        }
    }
}

/// Go's `syscall.Signal.String()` on Linux.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_like_go() {
        let ok = Exit::from_raw(0).end_event();
        assert_eq!(
            (ok.exit_code, ok.exited, ok.status.as_str(), ok.error),
            (0, true, "exit status 0", None)
        );
        let three = Exit::from_raw(3 << 8).end_event();
        assert_eq!(three.exit_code, 3);
        assert_eq!(three.error.as_deref(), Some("exit status 3"));
        let killed = Exit::from_raw(9).end_event();
        assert_eq!((killed.exit_code, killed.exited), (-1, false));
        assert_eq!(killed.status, "signal: killed");
        assert_eq!(killed.error.as_deref(), Some("signal: killed"));
        assert_eq!(
            Exit::from_raw(0x80 | 11).end_event().status,
            "signal: segmentation fault (core dumped)"
        );
    }
}
