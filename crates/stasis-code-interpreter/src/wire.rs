//! The HTTP wire format of the code interpreter (e2b-compat §5) and the mapping from
//! Jupyter iopub messages to NDJSON lines. Pure: no I/O, tested inline.

use jupyter_protocol::{JupyterMessage, JupyterMessageContent, Media, Stdio};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `POST /execute` body. The Python SDK sends every key, `null` when unset.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default)]
    pub context_id: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// `POST /contexts` body.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct CreateContext {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

/// A context as listed and created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// The canonical language name: lowercase, trimmed, `js`→`javascript`, `ts`→`typescript`;
/// `None` (or empty) means python.
pub fn normalize_language(lang: Option<&str>) -> String {
    let l = lang
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match l.as_str() {
        "" | "python3" | "ipython" => "python".into(),
        "js" => "javascript".into(),
        "ts" => "typescript".into(),
        "sh" | "shell" => "bash".into(),
        _ => l,
    }
}

/// One rich output, with `None` fields left out of the JSON.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResultLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub javascript: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    pub is_main_result: bool,
}

/// One NDJSON line of an execution stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    NumberOfExecutions {
        execution_count: usize,
    },
    Stdout {
        text: String,
        timestamp: String,
    },
    Stderr {
        text: String,
        timestamp: String,
    },
    Result(Box<ResultLine>),
    Error {
        name: String,
        value: String,
        traceback: String,
    },
    Keepalive,
    EndOfExecution,
}

impl Line {
    /// The line as sent: compact JSON and `\n`.
    pub fn to_ndjson(&self) -> bytes::Bytes {
        let mut v = serde_json::to_vec(self).expect("lines serialize");
        v.push(b'\n');
        v.into()
    }

    /// An error line from a traceback given as Jupyter's list of lines.
    pub fn error(name: &str, value: &str, traceback: &[String]) -> Line {
        Line::Error {
            name: name.to_owned(),
            value: value.to_owned(),
            traceback: traceback.join("\n"),
        }
    }
}

fn text_of(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        // nbformat allows multi-line strings as lists of lines
        Value::Array(a) => Some(
            a.into_iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Maps a MIME bundle to a result line, as E2B does: known types to their fields, the
/// rest to `extra`; a `text/plain` repr in single quotes loses them.
pub fn result_from_bundle(mut bundle: Map<String, Value>, is_main_result: bool) -> ResultLine {
    let mut take = |k: &str| bundle.remove(k);
    let text = take("text/plain").and_then(text_of).map(|t| {
        if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
            t[1..t.len() - 1].to_owned()
        } else {
            t
        }
    });
    let mut r = ResultLine {
        text,
        html: take("text/html").and_then(text_of),
        markdown: take("text/markdown").and_then(text_of),
        svg: take("image/svg+xml").and_then(text_of),
        png: take("image/png").and_then(text_of).map(strip_newlines),
        jpeg: take("image/jpeg").and_then(text_of).map(strip_newlines),
        pdf: take("application/pdf").and_then(text_of),
        latex: take("text/latex").and_then(text_of),
        json: take("application/json"),
        javascript: take("application/javascript").and_then(text_of),
        data: take("e2b/data"),
        chart: take("e2b/chart"),
        extra: None,
        is_main_result,
    };
    if !bundle.is_empty() {
        r.extra = Some(bundle);
    }
    r
}

/// Base64 in MIME bundles may be wrapped; the SDKs want one line.
fn strip_newlines(s: String) -> String {
    if s.contains('\n') {
        s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
    } else {
        s
    }
}

fn bundle_of(media: &Media) -> Map<String, Value> {
    match serde_json::to_value(media) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// What one iopub message means for an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum IoPub {
    /// A line for the client.
    Line(Line),
    /// The kernel went idle: with the execute reply, the execution is over.
    Idle,
    /// Nothing for the client (busy, execute_input echo handled as a line, comms…).
    Ignore,
}

/// Maps an iopub message (already known to belong to the execution) to its meaning.
pub fn map_iopub(msg: &JupyterMessage) -> IoPub {
    let timestamp = || match serde_json::to_value(msg.header.date) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    };
    match &msg.content {
        JupyterMessageContent::StreamContent(s) => match s.name {
            Stdio::Stdout => IoPub::Line(Line::Stdout {
                text: s.text.clone(),
                timestamp: timestamp(),
            }),
            Stdio::Stderr => IoPub::Line(Line::Stderr {
                text: s.text.clone(),
                timestamp: timestamp(),
            }),
        },
        JupyterMessageContent::ExecuteInput(i) => IoPub::Line(Line::NumberOfExecutions {
            execution_count: i.execution_count.value(),
        }),
        JupyterMessageContent::ExecuteResult(r) => IoPub::Line(Line::Result(Box::new(
            result_from_bundle(bundle_of(&r.data), true),
        ))),
        JupyterMessageContent::DisplayData(d) => IoPub::Line(Line::Result(Box::new(
            result_from_bundle(bundle_of(&d.data), false),
        ))),
        JupyterMessageContent::UpdateDisplayData(d) => IoPub::Line(Line::Result(Box::new(
            result_from_bundle(bundle_of(&d.data), false),
        ))),
        JupyterMessageContent::ErrorOutput(e) => {
            IoPub::Line(Line::error(&e.ename, &e.evalue, &e.traceback))
        }
        JupyterMessageContent::Status(s)
            if s.execution_state == jupyter_protocol::ExecutionState::Idle =>
        {
            IoPub::Idle
        }
        _ => IoPub::Ignore,
    }
}

/// Whether an environment variable name is safe to pass to any kernel.
pub fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn iopub(msg_type: &str, content: Value) -> JupyterMessage {
        JupyterMessage::from_value(json!({
            "header": {"msg_id": "m1", "username": "u", "session": "s",
                       "date": "2026-01-02T03:04:05.123456Z", "msg_type": msg_type, "version": "5.3"},
            "parent_header": {"msg_id": "p1", "username": "u", "session": "s",
                       "date": "2026-01-02T03:04:05Z", "msg_type": "execute_request", "version": "5.3"},
            "metadata": {},
            "content": content,
        }))
        .unwrap()
    }

    fn line_json(m: &JupyterMessage) -> Value {
        match map_iopub(m) {
            IoPub::Line(l) => serde_json::to_value(l).unwrap(),
            other => panic!("not a line: {other:?}"),
        }
    }

    #[test]
    fn execute_request_accepts_nulls_and_missing_keys() {
        let py: ExecuteRequest = serde_json::from_value(
            json!({"code":"x = 42","context_id":null,"language":null,"env_vars":null}),
        )
        .unwrap();
        assert_eq!(py.code, "x = 42");
        assert!(py.context_id.is_none() && py.env_vars.is_none());
        let js: ExecuteRequest =
            serde_json::from_value(json!({"code":"1","env_vars":{"A":"b"}})).unwrap();
        assert_eq!(js.env_vars.unwrap()["A"], "b");
    }

    #[test]
    fn languages_normalize() {
        assert_eq!(normalize_language(None), "python");
        assert_eq!(normalize_language(Some(" Python ")), "python");
        assert_eq!(normalize_language(Some("js")), "javascript");
        assert_eq!(normalize_language(Some("TS")), "typescript");
        assert_eq!(normalize_language(Some("bash")), "bash");
        assert_eq!(normalize_language(Some("r")), "r");
    }

    #[test]
    fn stream_messages_become_stdout_and_stderr_with_timestamps() {
        let v = line_json(&iopub("stream", json!({"name":"stdout","text":"hi\n"})));
        assert_eq!(v["type"], "stdout");
        assert_eq!(v["text"], "hi\n");
        assert!(v["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-02T03:04:05"));
        let v = line_json(&iopub("stream", json!({"name":"stderr","text":"oops"})));
        assert_eq!(v["type"], "stderr");
    }

    #[test]
    fn execute_input_gives_the_execution_count() {
        let v = line_json(&iopub(
            "execute_input",
            json!({"code":"x","execution_count":7}),
        ));
        assert_eq!(
            v,
            json!({"type":"number_of_executions","execution_count":7})
        );
    }

    #[test]
    fn execute_result_is_the_main_result_and_omits_absent_formats() {
        let v = line_json(&iopub(
            "execute_result",
            json!({"execution_count":2,"data":{"text/plain":"42"},"metadata":{}}),
        ));
        assert_eq!(
            v,
            json!({"type":"result","text":"42","is_main_result":true})
        );
    }

    #[test]
    fn display_data_maps_every_known_format_and_keeps_the_rest_in_extra() {
        let v = line_json(&iopub(
            "display_data",
            json!({"data":{
                "text/plain":"<Figure>", "text/html":"<b>x</b>", "text/markdown":"*x*",
                "image/svg+xml":"<svg/>", "image/png":"iVBO\nRw==\n", "image/jpeg":"/9j/",
                "application/pdf":"JVBE", "text/latex":"$x$", "application/json":{"a":1},
                "application/javascript":"alert(1)", "e2b/data":{"x":[1]},
                "e2b/chart":{"type":"line"}, "application/x-custom":"c"
            },"metadata":{}}),
        ));
        assert_eq!(v["type"], "result");
        assert_eq!(v["is_main_result"], false);
        assert_eq!(v["text"], "<Figure>");
        assert_eq!(v["html"], "<b>x</b>");
        assert_eq!(v["markdown"], "*x*");
        assert_eq!(v["svg"], "<svg/>");
        assert_eq!(v["png"], "iVBORw==");
        assert_eq!(v["jpeg"], "/9j/");
        assert_eq!(v["pdf"], "JVBE");
        assert_eq!(v["latex"], "$x$");
        assert_eq!(v["json"], json!({"a":1}));
        assert_eq!(v["javascript"], "alert(1)");
        assert_eq!(v["data"], json!({"x":[1]}));
        assert_eq!(v["chart"], json!({"type":"line"}));
        assert_eq!(v["extra"], json!({"application/x-custom":"c"}));
    }

    #[test]
    fn quoted_string_reprs_lose_their_quotes() {
        let r = result_from_bundle(
            json!({"text/plain":"'abc'"}).as_object().unwrap().clone(),
            true,
        );
        assert_eq!(r.text.as_deref(), Some("abc"));
        let r = result_from_bundle(json!({"text/plain":"'"}).as_object().unwrap().clone(), true);
        assert_eq!(r.text.as_deref(), Some("'"));
    }

    #[test]
    fn errors_join_the_traceback() {
        let v = line_json(&iopub(
            "error",
            json!({"ename":"ZeroDivisionError","evalue":"division by zero",
                   "traceback":["Traceback","  line 1","ZeroDivisionError: division by zero"]}),
        ));
        assert_eq!(v["type"], "error");
        assert_eq!(v["name"], "ZeroDivisionError");
        assert_eq!(v["value"], "division by zero");
        assert_eq!(
            v["traceback"],
            "Traceback\n  line 1\nZeroDivisionError: division by zero"
        );
    }

    #[test]
    fn idle_status_ends_and_busy_is_ignored() {
        assert_eq!(
            map_iopub(&iopub("status", json!({"execution_state":"idle"}))),
            IoPub::Idle
        );
        assert_eq!(
            map_iopub(&iopub("status", json!({"execution_state":"busy"}))),
            IoPub::Ignore
        );
    }

    #[test]
    fn ndjson_lines_are_compact_and_newline_terminated() {
        assert_eq!(
            &Line::EndOfExecution.to_ndjson()[..],
            b"{\"type\":\"end_of_execution\"}\n"
        );
        assert_eq!(
            &Line::Keepalive.to_ndjson()[..],
            b"{\"type\":\"keepalive\"}\n"
        );
        assert_eq!(
            &Line::NumberOfExecutions { execution_count: 2 }.to_ndjson()[..],
            b"{\"type\":\"number_of_executions\",\"execution_count\":2}\n"
        );
    }

    #[test]
    fn env_names_are_checked() {
        assert!(valid_env_name("FOO_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
        assert!(!valid_env_name("A;rm"));
    }
}
