//! `process.Process` messages (E2B `spec/envd/process/process.proto`) in proto3 JSON.
//!
//! Oneofs are Rust enums whose variant names are the JSON keys
//! (`{"event":{"start":{"pid":42}}}`); the oneof's own name never appears in JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json::{b64, is_false, is_zero, opt_u32_lenient, u32_lenient};

/// Terminal size of a PTY.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    /// Columns.
    #[serde(
        default,
        deserialize_with = "u32_lenient",
        skip_serializing_if = "is_zero"
    )]
    pub cols: u32,
    /// Rows.
    #[serde(
        default,
        deserialize_with = "u32_lenient",
        skip_serializing_if = "is_zero"
    )]
    pub rows: u32,
}

/// PTY request: present means "run the process on a pseudo-terminal".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pty {
    /// Initial or new size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<PtySize>,
}

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// Executable (looked up in `PATH` when it has no slash).
    #[serde(default)]
    pub cmd: String,
    /// Arguments after argv[0].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables for this process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    /// Working directory; relative paths and `~` resolve against the user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `ListRequest` (empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {}

/// One running process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// How it was started.
    #[serde(default)]
    pub config: ProcessConfig,
    /// Its pid.
    #[serde(default, deserialize_with = "u32_lenient")]
    pub pid: u32,
    /// Its tag, if it was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `ListResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Running processes.
    #[serde(default)]
    pub processes: Vec<ProcessInfo>,
}

/// `StartRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// What to run (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessConfig>,
    /// Run on a PTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
    /// A tag to find the process by later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Whether stdin is a pipe the client can write to; absent means true (old clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

/// `ProcessSelector`: a pid or a tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSelector {
    /// Select by pid.
    #[serde(
        default,
        deserialize_with = "opt_u32_lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<u32>,
    /// Select by tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A validated selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By pid.
    Pid(u32),
    /// By tag.
    Tag(String),
}

impl ProcessSelector {
    /// Select by pid.
    pub fn pid(pid: u32) -> Self {
        Self {
            pid: Some(pid),
            tag: None,
        }
    }

    /// Select by tag.
    pub fn tag(tag: impl Into<String>) -> Self {
        Self {
            pid: None,
            tag: Some(tag.into()),
        }
    }

    /// Checks that exactly one member of the oneof is set.
    pub fn validate(&self) -> Result<Selector, &'static str> {
        match (&self.pid, &self.tag) {
            (Some(pid), None) => Ok(Selector::Pid(*pid)),
            (None, Some(tag)) => Ok(Selector::Tag(tag.clone())),
            (None, None) => Err("process selector needs a pid or a tag"),
            (Some(_), Some(_)) => Err("process selector must not have both a pid and a tag"),
        }
    }
}

/// `ProcessEvent.StartEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartEvent {
    /// Pid of the started process.
    #[serde(default, deserialize_with = "u32_lenient")]
    pub pid: u32,
}

/// `ProcessEvent.DataEvent`: one chunk of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    /// Bytes from stdout.
    Stdout(#[serde(with = "b64")] Vec<u8>),
    /// Bytes from stderr.
    Stderr(#[serde(with = "b64")] Vec<u8>),
    /// Bytes from the PTY.
    Pty(#[serde(with = "b64")] Vec<u8>),
}

/// `ProcessEvent.EndEvent`, shaped like Go's `ProcessState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndEvent {
    /// Exit code; -1 when killed by a signal. Omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exit_code: i32,
    /// Whether the process exited normally (not by a signal).
    #[serde(default, skip_serializing_if = "is_false")]
    pub exited: bool,
    /// `"exit status N"` or `"signal: killed"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Present when the process did not exit with status 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `ProcessEvent.KeepAlive` (empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {}

/// `ProcessEvent`: the oneof `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    /// The process started.
    Start(StartEvent),
    /// Output.
    Data(DataEvent),
    /// The process ended.
    End(EndEvent),
    /// Nothing happened for a while.
    Keepalive(KeepAlive),
}

/// `StartResponse` and `ConnectResponse` (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    /// The event.
    pub event: ProcessEvent,
}

/// `ConnectResponse`.
pub type ConnectResponse = StartResponse;

/// `UpdateRequest`: resize a PTY.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// Which process.
    #[serde(default)]
    pub process: ProcessSelector,
    /// New PTY settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
}

/// `ProcessInput`: the oneof `input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessInput {
    /// Bytes for stdin.
    Stdin(#[serde(with = "b64")] Vec<u8>),
    /// Bytes for the PTY.
    Pty(#[serde(with = "b64")] Vec<u8>),
}

/// `SendInputRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInputRequest {
    /// Which process.
    #[serde(default)]
    pub process: ProcessSelector,
    /// What to send (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ProcessInput>,
}

/// `StreamInputRequest.StartEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInputStart {
    /// Which process.
    #[serde(default)]
    pub process: ProcessSelector,
}

/// `StreamInputRequest.DataEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInputData {
    /// The input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ProcessInput>,
}

/// `StreamInputRequest`: the oneof `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamInputRequest {
    /// First message: which process.
    Start(StreamInputStart),
    /// Input bytes.
    Data(StreamInputData),
    /// Keepalive.
    Keepalive(KeepAlive),
}

/// Signals a client may send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signal {
    /// Not set (rejected by the server).
    #[default]
    Unspecified,
    /// SIGTERM (15).
    Sigterm,
    /// SIGKILL (9).
    Sigkill,
}

impl Signal {
    /// Proto enum name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Unspecified => "SIGNAL_UNSPECIFIED",
            Signal::Sigterm => "SIGNAL_SIGTERM",
            Signal::Sigkill => "SIGNAL_SIGKILL",
        }
    }

    /// Proto enum number (equal to the Linux signal number).
    pub fn number(self) -> i32 {
        match self {
            Signal::Unspecified => 0,
            Signal::Sigterm => 15,
            Signal::Sigkill => 9,
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let all = [Signal::Unspecified, Signal::Sigterm, Signal::Sigkill];
        let found = match &v {
            serde_json::Value::String(s) => all.into_iter().find(|x| x.name() == s),
            serde_json::Value::Number(n) => all
                .into_iter()
                .find(|x| Some(i64::from(x.number())) == n.as_i64()),
            _ => None,
        };
        found.ok_or_else(|| serde::de::Error::custom(format!("unknown signal {v}")))
    }
}

/// `SendSignalRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendSignalRequest {
    /// Which process.
    #[serde(default)]
    pub process: ProcessSelector,
    /// Which signal.
    #[serde(default)]
    pub signal: Signal,
}

/// `CloseStdinRequest` and `ConnectRequest` (same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorRequest {
    /// Which process.
    #[serde(default)]
    pub process: ProcessSelector,
}

/// `CloseStdinRequest`.
pub type CloseStdinRequest = SelectorRequest;
/// `ConnectRequest`.
pub type ConnectRequest = SelectorRequest;

/// Empty responses (`SendInputResponse`, `SendSignalResponse`, `CloseStdinResponse`,
/// `UpdateResponse`, `StreamInputResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(v: &T, json: &str) {
        assert_eq!(serde_json::to_string(v).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), v);
    }

    #[test]
    fn start_request_as_sent_by_commands_run() {
        let json = r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},"stdin":false}"#;
        let req: StartRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.process.as_ref().unwrap().cmd, "/bin/bash");
        assert_eq!(req.stdin, Some(false));
        assert!(req.pty.is_none());
        rt(&req, json);
        let pty = r#"{"process":{"cmd":"/bin/bash","args":["-i","-l"],"envs":{"LANG":"C.UTF-8","TERM":"xterm-256color"},"cwd":"/tmp"},"pty":{"size":{"cols":80,"rows":24}}}"#;
        let req: StartRequest = serde_json::from_str(pty).unwrap();
        assert_eq!(req.pty.unwrap().size, Some(PtySize { cols: 80, rows: 24 }));
        assert_eq!(req.stdin, None);
    }

    #[test]
    fn events_match_the_wire_example() {
        rt(
            &StartResponse {
                event: ProcessEvent::Start(StartEvent { pid: 42 }),
            },
            r#"{"event":{"start":{"pid":42}}}"#,
        );
        rt(
            &StartResponse {
                event: ProcessEvent::Data(DataEvent::Stdout(b"hi\n".to_vec())),
            },
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#,
        );
        rt(
            &StartResponse {
                event: ProcessEvent::End(EndEvent {
                    exit_code: 0,
                    exited: true,
                    status: "exit status 0".into(),
                    error: None,
                }),
            },
            r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#,
        );
        rt(
            &StartResponse {
                event: ProcessEvent::End(EndEvent {
                    exit_code: -1,
                    exited: false,
                    status: "signal: killed".into(),
                    error: Some("signal: killed".into()),
                }),
            },
            r#"{"event":{"end":{"exitCode":-1,"status":"signal: killed","error":"signal: killed"}}}"#,
        );
        rt(
            &StartResponse {
                event: ProcessEvent::Keepalive(KeepAlive {}),
            },
            r#"{"event":{"keepalive":{}}}"#,
        );
    }

    #[test]
    fn list_selectors_input_and_signals() {
        let json = r#"{"processes":[{"config":{"cmd":"/bin/bash","args":["-l","-c","sleep 10"],"cwd":"/home/user"},"pid":42,"tag":"t"}]}"#;
        let list: ListResponse = serde_json::from_str(json).unwrap();
        assert_eq!(list.processes[0].pid, 42);
        rt(&list, json);

        let req: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"pid":9999},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(req.signal, Signal::Sigkill);
        assert_eq!(req.process.validate(), Ok(Selector::Pid(9999)));
        let req: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"tag":"x"},"signal":15}"#).unwrap();
        assert_eq!(req.signal, Signal::Sigterm);
        assert_eq!(req.process.validate(), Ok(Selector::Tag("x".into())));
        assert!(
            serde_json::from_str::<SendSignalRequest>(r#"{"signal":"SIGNAL_SIGSTOP"}"#).is_err()
        );
        assert!(ProcessSelector::default().validate().is_err());

        rt(
            &SendInputRequest {
                process: ProcessSelector::pid(7),
                input: Some(ProcessInput::Stdin(b"hi\n".to_vec())),
            },
            r#"{"process":{"pid":7},"input":{"stdin":"aGkK"}}"#,
        );
        rt(
            &StreamInputRequest::Start(StreamInputStart {
                process: ProcessSelector::pid(7),
            }),
            r#"{"start":{"process":{"pid":7}}}"#,
        );
        rt(
            &StreamInputRequest::Data(StreamInputData {
                input: Some(ProcessInput::Pty(vec![3])),
            }),
            r#"{"data":{"input":{"pty":"Aw=="}}}"#,
        );
        rt(
            &UpdateRequest {
                process: ProcessSelector::pid(7),
                pty: Some(Pty {
                    size: Some(PtySize {
                        cols: 100,
                        rows: 40,
                    }),
                }),
            },
            r#"{"process":{"pid":7},"pty":{"size":{"cols":100,"rows":40}}}"#,
        );
        rt(&Empty {}, "{}");
    }
}
