//! Transport to the services inside a sandbox, through the server's proxy.
//!
//! Every request goes to the sandbox URL with `E2b-Sandbox-Id`, `E2b-Sandbox-Port` and
//! `X-Access-Token`. envd speaks the Connect protocol with the JSON codec: unary calls
//! are plain JSON POSTs; server-streaming calls send one 5-byte-enveloped message and
//! read enveloped messages until the mandatory end-stream frame.

use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_e2b_api as wire;
use stasis_envd_proto::envelope::{self, Decoder};
use stasis_envd_proto::error::{Code, ConnectError, EndStream};

use crate::client::Client;
use crate::error::{Error, Result};

/// Largest envelope accepted from envd.
const MAX_ENVELOPE: usize = 64 << 20;

/// The way to one sandbox's services.
#[derive(Clone, Debug)]
pub(crate) struct Envd {
    pub client: Client,
    pub sandbox_id: String,
    pub token: Option<String>,
}

impl Envd {
    /// A request to `path` on `port` inside the sandbox.
    pub fn request(&self, port: u16, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{}", self.client.config().sandbox_url, path);
        let mut req = self
            .client
            .http()
            .request(method, &url)
            .header(wire::SANDBOX_ID_HEADER, &self.sandbox_id)
            .header(wire::SANDBOX_PORT_HEADER, port.to_string());
        if let Some(t) = &self.token {
            req = req.header(wire::ACCESS_TOKEN_HEADER, t);
        }
        (url, req)
    }

    /// A Connect request to envd, as `user` when given.
    fn rpc(&self, path: &str, content_type: &str, user: Option<&str>) -> (String, RequestBuilder) {
        let (url, mut req) = self.request(wire::ENVD_PORT, Method::POST, path);
        req = req
            .header("Content-Type", content_type)
            .header("Connect-Protocol-Version", "1");
        if let Some(u) = user {
            req = req.header("Authorization", basic_user(u));
        }
        (url, req)
    }

    /// A unary Connect call. `file` names the path the call is about, so that
    /// `not_found` becomes [`Error::FileNotFound`].
    pub async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        user: Option<&str>,
        file: Option<&str>,
    ) -> Result<Resp> {
        let timeout = self.client.config().request_timeout;
        let (url, rb) = self.rpc(path, stasis_envd_proto::CONTENT_TYPE_JSON, user);
        let body = serde_json::to_vec(req).expect("request serializes");
        let resp = rb
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::transport(&url, path, timeout, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&url, path, timeout, e))?;
        if status.is_success() {
            return serde_json::from_slice(if bytes.is_empty() { b"{}" } else { &bytes }).map_err(
                |e| Error::Protocol {
                    message: format!("unexpected answer to {path}: {e}"),
                },
            );
        }
        Err(self.sandbox_error(status, &bytes, file))
    }

    /// Opens a server-streaming Connect call; `timeout` travels as `Connect-Timeout-Ms`
    /// (for `Process.Start` it is the process's lifetime).
    pub async fn stream<Req: Serialize>(
        &self,
        path: &str,
        req: &Req,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<EnvelopeStream> {
        let (url, mut rb) = self.rpc(path, stasis_envd_proto::CONTENT_TYPE_CONNECT_JSON, user);
        rb = rb.header("Keepalive-Ping-Interval", "50");
        if let Some(t) = timeout {
            rb = rb.header("Connect-Timeout-Ms", t.as_millis().to_string());
        }
        let payload = serde_json::to_vec(req).expect("request serializes");
        let rt = self.client.config().request_timeout;
        let resp = rb
            .body(envelope::encode(0, &payload))
            .send()
            .await
            .map_err(|e| Error::transport(&url, path, rt, e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(self.sandbox_error(status, &bytes, None));
        }
        Ok(EnvelopeStream::new(path.to_owned(), resp))
    }

    /// The error of a failed answer from inside the sandbox (or from the proxy).
    pub fn sandbox_error(&self, status: StatusCode, body: &[u8], file: Option<&str>) -> Error {
        let text = String::from_utf8_lossy(body);
        if status == StatusCode::BAD_GATEWAY && text.contains("was not found") {
            return Error::SandboxNotFound {
                id: self.sandbox_id.clone(),
                message: "the sandbox is not running (killed, timed out or paused)".into(),
            };
        }
        if let Ok(e) = serde_json::from_slice::<ConnectError>(body) {
            return Error::from_connect(e.code, e.message, file);
        }
        // Plain-HTTP endpoints answer {"code": <status>, "message"}.
        let message = serde_json::from_slice::<wire::ErrorBody>(body)
            .map(|b| b.message)
            .unwrap_or_else(|_| text.trim().to_owned());
        match status.as_u16() {
            404 => match file {
                Some(p) => Error::FileNotFound {
                    path: p.to_owned(),
                    message,
                },
                None => Error::NotFound { message },
            },
            400 => Error::InvalidArgument { message },
            401 | 403 => Error::Auth { message },
            s => Error::from_connect(Code::from_http_status(s), format!("{s}: {message}"), file),
        }
    }
}

/// `Authorization: Basic base64("<user>:")`, how envd learns the user.
fn basic_user(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The messages of a server-streaming answer.
pub(crate) struct EnvelopeStream {
    path: String,
    body: ByteStream,
    decoder: Decoder,
    ended: bool,
}

impl EnvelopeStream {
    fn new(path: String, resp: Response) -> Self {
        Self {
            path,
            body: Box::pin(resp.bytes_stream()),
            decoder: Decoder::new(MAX_ENVELOPE),
            ended: false,
        }
    }

    /// The next message, `Ok(None)` after a successful end-stream frame.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let env = self.decoder.next_envelope().map_err(|e| Error::Protocol {
                message: format!("{}: {e}", self.path),
            })?;
            if let Some(env) = env {
                if env.is_end_stream() {
                    self.ended = true;
                    let end: EndStream =
                        serde_json::from_slice(&env.payload).map_err(|e| Error::Protocol {
                            message: format!("{}: bad end-stream frame: {e}", self.path),
                        })?;
                    return match end.error {
                        Some(err) => Err(Error::from_connect(err.code, err.message, None)),
                        None => Ok(None),
                    };
                }
                return serde_json::from_slice(&env.payload).map(Some).map_err(|e| {
                    Error::Protocol {
                        message: format!("{}: unexpected message: {e}", self.path),
                    }
                });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    return Err(Error::Protocol {
                        message: format!("{}: the stream broke: {e}", self.path),
                    })
                }
                None => {
                    return Err(Error::Protocol {
                        message: format!(
                            "{}: the stream ended without an end-stream frame",
                            self.path
                        ),
                    })
                }
            }
        }
    }
}

/// Incremental UTF-8 decoding of output chunks that may split a character.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text completed by `bytes`; an incomplete trailing character waits for more.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_joins_split_characters() {
        let bytes = "aé€b".as_bytes();
        for split in 0..bytes.len() {
            let mut u = Utf8Stream::default();
            let mut s = u.push(&bytes[..split]);
            s.push_str(&u.push(&bytes[split..]));
            s.push_str(&u.finish());
            assert_eq!(s, "aé€b");
        }
        let mut u = Utf8Stream::default();
        assert_eq!(u.push(&[b'x', 0xff, b'y']), "x\u{fffd}y");
    }

    #[test]
    fn basic_user_header() {
        assert_eq!(basic_user("root"), "Basic cm9vdDo=");
        assert_eq!(basic_user("user"), "Basic dXNlcjo=");
    }
}
