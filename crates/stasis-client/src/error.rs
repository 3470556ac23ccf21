//! The SDK's one error type.
//!
//! Control-plane errors are mapped from E2B's `{"code", "message"}` body, envd errors
//! from Connect codes, so callers match on what went wrong (`SandboxNotFound`,
//! `AlreadyPaused`, `CommandExit`, …) rather than on HTTP statuses.

use std::time::Duration;

use stasis_envd_proto::error::Code;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A command that finished with a non-zero exit code (E2B's `CommandExitError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command exited with code {exit_code} and error:\n{stderr}")]
pub struct CommandExitError {
    /// The exit code; -1 when a signal ended the process.
    pub exit_code: i32,
    /// envd's description, e.g. `exit status 3` or `signal: killed`.
    pub error: Option<String>,
    /// Everything the command wrote to stdout.
    pub stdout: String,
    /// Everything the command wrote to stderr.
    pub stderr: String,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is incomplete (no API key, bad URL, …).
    #[error("{message}")]
    Config { message: String },

    /// The server could not be reached at all.
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The API key (401 from the control plane) or the sandbox access token was refused.
    #[error("authentication failed: {message}")]
    Auth { message: String },

    /// The sandbox does not exist (any more), or is paused and not auto-resumable.
    #[error("sandbox {id} not found: {message}")]
    SandboxNotFound { id: String, message: String },

    /// Pausing a sandbox that is already paused.
    #[error("sandbox {id} is already paused")]
    AlreadyPaused { id: String, message: String },

    /// Another conflict (the sandbox is in a transition, …).
    #[error("conflict: {message}")]
    Conflict { message: String },

    /// The server or envd rejected an argument.
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },

    /// A file or directory inside the sandbox does not exist.
    #[error("file not found: {message}")]
    FileNotFound { path: String, message: String },

    /// Something other than a file or sandbox was not found (a process, a template, …).
    #[error("not found: {message}")]
    NotFound { message: String },

    /// A command exited with a non-zero code.
    #[error(transparent)]
    CommandExit(#[from] CommandExitError),

    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    /// Any other control-plane error.
    #[error("server error {status}: {message}")]
    Api { status: u16, message: String },

    /// Any other envd (Connect) error.
    #[error("sandbox error ({code}): {message}")]
    Rpc { code: Code, message: String },

    /// The peer spoke something this SDK does not understand.
    #[error("protocol error: {message}")]
    Protocol { message: String },

    /// A transport failure after the connection was made.
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// Maps a transport error: connection failures become [`Error::Unreachable`],
    /// timeouts [`Error::Timeout`].
    pub(crate) fn transport(url: &str, what: &str, timeout: Duration, e: reqwest::Error) -> Self {
        if e.is_connect() {
            Error::Unreachable {
                url: base_of(url),
                source: e,
            }
        } else if e.is_timeout() {
            Error::Timeout {
                what: what.to_owned(),
                after: timeout,
            }
        } else {
            Error::Http {
                url: url.to_owned(),
                source: e,
            }
        }
    }

    /// Maps a Connect error (unary body or end-stream) to a typed error.
    pub(crate) fn from_connect(code: Code, message: String, path: Option<&str>) -> Self {
        match code {
            Code::NotFound => match path {
                Some(p) => Error::FileNotFound {
                    path: p.to_owned(),
                    message,
                },
                None => Error::NotFound { message },
            },
            Code::InvalidArgument => Error::InvalidArgument { message },
            Code::Unauthenticated | Code::PermissionDenied => Error::Auth { message },
            Code::DeadlineExceeded => Error::Timeout {
                what: message,
                after: Duration::ZERO,
            },
            code => Error::Rpc { code, message },
        }
    }

    /// Whether this is a "not found" of any kind.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::SandboxNotFound { .. } | Error::FileNotFound { .. } | Error::NotFound { .. }
        )
    }
}

/// `scheme://host:port` of a URL, for messages.
fn base_of(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            url[..i + 3 + end].to_owned()
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = Error::from(CommandExitError {
            exit_code: 3,
            error: Some("exit status 3".into()),
            stdout: String::new(),
            stderr: "boom\n".into(),
        });
        assert_eq!(
            e.to_string(),
            "command exited with code 3 and error:\nboom\n"
        );
        assert_eq!(
            base_of("http://127.0.0.1:9/v2/sandboxes?x"),
            "http://127.0.0.1:9"
        );
        assert!(Error::from_connect(Code::NotFound, "x".into(), Some("/a")).is_not_found());
        assert!(matches!(
            Error::from_connect(Code::InvalidArgument, "cwd".into(), None),
            Error::InvalidArgument { .. }
        ));
    }
}
