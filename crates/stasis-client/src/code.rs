//! `sandbox.run_code()`: the code-interpreter service on port 49999 (e2b-compat §5).
//!
//! `POST /execute` answers NDJSON lines (`number_of_executions`, `stdout`, `stderr`,
//! `result`, `error`, `keepalive`, `end_of_execution`); contexts are separate
//! interpreters (`/contexts`). An error raised by the code is [`Execution::error`], not
//! an `Err`: only transport and service failures are.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envd::Envd;
use crate::error::{Error, Result};

/// Port of the code-interpreter service.
pub const CODE_INTERPRETER_PORT: u16 = stasis_e2b_api::CODE_INTERPRETER_PORT;

/// Template name of code-interpreter sandboxes.
pub const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";

/// Default execution timeout.
pub const DEFAULT_CODE_TIMEOUT: Duration = Duration::from_secs(300);

/// One rich result of an execution (the value of the last expression, a display, …).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecResult {
    #[serde(default)]
    pub is_main_result: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub javascript: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// An error raised by the executed code.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecutionError {
    /// e.g. `NameError`.
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// Output the code printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Logs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// What an execution produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Execution {
    pub results: Vec<ExecResult>,
    pub logs: Logs,
    pub error: Option<ExecutionError>,
    pub execution_count: Option<u64>,
}

impl Execution {
    /// The text of the main result (the value of the last expression), if any.
    pub fn text(&self) -> Option<&str> {
        self.results
            .iter()
            .find(|r| r.is_main_result)
            .and_then(|r| r.text.as_deref())
    }
}

/// An interpreter context (a kernel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// One NDJSON line of `/execute`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    NumberOfExecutions {
        execution_count: u64,
    },
    Stdout {
        text: String,
    },
    Stderr {
        text: String,
    },
    Result(Box<ExecResult>),
    Error(ExecutionError),
    Keepalive,
    EndOfExecution,
    #[serde(other)]
    Unknown,
}

type Callback<T> = Box<dyn FnMut(T) + Send + 'static>;

/// Code about to run; see [`crate::Sandbox::run_code`].
#[must_use = "code runs when awaited"]
pub struct RunCode {
    envd: Envd,
    code: String,
    language: Option<String>,
    context: Option<String>,
    env_vars: BTreeMap<String, String>,
    timeout: Duration,
    on_stdout: Option<Callback<String>>,
    on_stderr: Option<Callback<String>>,
    on_result: Option<Callback<ExecResult>>,
}

impl RunCode {
    pub(crate) fn new(envd: Envd, code: String) -> Self {
        Self {
            envd,
            code,
            language: None,
            context: None,
            env_vars: BTreeMap::new(),
            timeout: DEFAULT_CODE_TIMEOUT,
            on_stdout: None,
            on_stderr: None,
            on_result: None,
        }
    }

    /// Runs in the default context of this language (`python`, `javascript`, …).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Runs in this context (from [`crate::Sandbox::create_code_context`]).
    pub fn context(mut self, context: &Context) -> Self {
        self.context = Some(context.id.clone());
        self
    }

    /// An environment variable for this execution only.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_vars.insert(key.into(), value.into());
        self
    }

    /// How long the execution may take (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Called with each piece of stdout.
    pub fn on_stdout(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Called with each piece of stderr.
    pub fn on_stderr(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// Called with each result as it arrives.
    pub fn on_result(mut self, f: impl FnMut(ExecResult) + Send + 'static) -> Self {
        self.on_result = Some(Box::new(f));
        self
    }

    async fn execute(mut self) -> Result<Execution> {
        if self.language.is_some() && self.context.is_some() {
            return Err(Error::InvalidArgument {
                message: "give a language or a context, not both".into(),
            });
        }
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            context_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            language: Option<&'a str>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            env_vars: &'a BTreeMap<String, String>,
        }
        let body = Body {
            code: &self.code,
            context_id: self.context.as_deref(),
            language: self.language.as_deref(),
            env_vars: &self.env_vars,
        };
        let (url, req) = self
            .envd
            .request(CODE_INTERPRETER_PORT, Method::POST, "/execute");
        let rt = self.envd.client.config().request_timeout;
        let resp = req
            .json(&body)
            .timeout(rt.max(self.timeout))
            .send()
            .await
            .map_err(|e| Error::transport(&url, "run_code", rt, e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(ci_error(&self.envd, status, &bytes));
        }
        let mut exec = Execution::default();
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let timeout = self.timeout;
        let read = async {
            loop {
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if self.apply(&mut exec, &line)? {
                        return Ok(());
                    }
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Err(Error::Protocol {
                            message: format!("the execution stream broke: {e}"),
                        })
                    }
                    None => {
                        let rest = std::mem::take(&mut buf);
                        self.apply(&mut exec, &rest)?;
                        return Ok(());
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: "code execution".into(),
                    after: timeout,
                })
            }
        }
        Ok(exec)
    }

    /// Applies one line; `true` at `end_of_execution`.
    fn apply(&mut self, exec: &mut Execution, line: &[u8]) -> Result<bool> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let parsed: Line = serde_json::from_slice(line).map_err(|e| Error::Protocol {
            message: format!(
                "unexpected execution line {:?}: {e}",
                String::from_utf8_lossy(line)
            ),
        })?;
        match parsed {
            Line::NumberOfExecutions { execution_count } => {
                exec.execution_count = Some(execution_count)
            }
            Line::Stdout { text } => {
                if let Some(cb) = &mut self.on_stdout {
                    cb(text.clone());
                }
                exec.logs.stdout.push(text);
            }
            Line::Stderr { text } => {
                if let Some(cb) = &mut self.on_stderr {
                    cb(text.clone());
                }
                exec.logs.stderr.push(text);
            }
            Line::Result(r) => {
                if let Some(cb) = &mut self.on_result {
                    cb((*r).clone());
                }
                exec.results.push(*r);
            }
            Line::Error(e) => exec.error = Some(e),
            Line::EndOfExecution => return Ok(true),
            Line::Keepalive | Line::Unknown => {}
        }
        Ok(false)
    }
}

impl IntoFuture for RunCode {
    type Output = Result<Execution>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// The error of a failed code-interpreter answer.
fn ci_error(envd: &Envd, status: StatusCode, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    match status.as_u16() {
        502 if text.contains("was not found") => envd.sandbox_error(status, body, None),
        // The proxy's own 502 (the service does not answer) carries a JSON message.
        502 if serde_json::from_slice::<stasis_e2b_api::ErrorBody>(body).is_ok() => Error::Api {
            status: 502,
            message: serde_json::from_slice::<stasis_e2b_api::ErrorBody>(body)
                .map(|b| b.message)
                .unwrap_or_default(),
        },
        502 => Error::Timeout {
            what: "code execution (the sandbox likely timed out)".into(),
            after: Duration::ZERO,
        },
        404 => Error::NotFound { message: text },
        400 => Error::InvalidArgument { message: text },
        s => Error::Api {
            status: s,
            message: text,
        },
    }
}

/// Context management calls.
pub(crate) async fn contexts_call(
    envd: &Envd,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<bytes::Bytes> {
    let (url, mut req) = envd.request(CODE_INTERPRETER_PORT, method, path);
    let rt = envd.client.config().request_timeout;
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .timeout(rt)
        .send()
        .await
        .map_err(|e| Error::transport(&url, path, rt, e))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::transport(&url, path, rt, e))?;
    if !status.is_success() {
        return Err(ci_error(envd, status, &bytes));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let l: Line =
            serde_json::from_str(r#"{"type":"result","text":"42","is_main_result":true}"#).unwrap();
        assert!(matches!(l, Line::Result(ref r) if r.text.as_deref() == Some("42")));
        let l: Line =
            serde_json::from_str(r#"{"type":"number_of_executions","execution_count":2}"#).unwrap();
        assert!(matches!(l, Line::NumberOfExecutions { execution_count: 2 }));
        let l: Line = serde_json::from_str(r#"{"type":"future_kind","x":1}"#).unwrap();
        assert!(matches!(l, Line::Unknown));
        let l: Line = serde_json::from_str(
            r#"{"type":"error","name":"NameError","value":"name 'y' is not defined","traceback":"..."}"#,
        )
        .unwrap();
        assert!(matches!(l, Line::Error(ref e) if e.name == "NameError"));
        let l: Line = serde_json::from_str(
            r#"{"type":"stdout","text":"hi\n","timestamp":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(matches!(l, Line::Stdout { .. }));
    }
}
