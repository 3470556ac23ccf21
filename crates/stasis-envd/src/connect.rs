//! The Connect protocol (v1, JSON codec) on top of axum.
//!
//! * Unary: `POST /<pkg>.<Service>/<Method>`, `application/json` body in and out; errors
//!   are a non-200 status with `{"code","message"}` (status from [`Code::http_status`]).
//! * Server streaming: one request envelope in; HTTP 200 `application/connect+json` out,
//!   message envelopes as events occur, then exactly one end-stream envelope. Errors,
//!   even before the first message, go into the end-stream envelope.
//! * Client streaming: request envelopes until the body ends; one message and an
//!   end-stream envelope out.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_envd_proto::envelope::{self, Decoder};
use stasis_envd_proto::error::{Code, ConnectError, EndStream};
use stasis_envd_proto::{CONTENT_TYPE_CONNECT_JSON, CONTENT_TYPE_JSON};
use tokio::sync::mpsc;

/// Default keepalive interval when the client sends no `Keepalive-Ping-Interval`.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// Resolves at `deadline` (a stream's `Connect-Timeout-Ms`), or never without one.
pub async fn until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A unary response: the JSON message or a Connect error.
pub struct Unary<T>(pub Result<T, ConnectError>);

impl<T: Serialize> IntoResponse for Unary<T> {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(msg) => match serde_json::to_vec(&msg) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => error_response(&ConnectError::new(
                    Code::Internal,
                    format!("cannot encode response: {e}"),
                )),
            },
            Err(err) => error_response(&err),
        }
    }
}

/// A unary error response.
pub fn error_response(err: &ConnectError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, err.to_json())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_JSON),
    );
    resp
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn check_encoding(headers: &HeaderMap, name: &str) -> Result<(), ConnectError> {
    match headers.get(name).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("") | Some("identity") => Ok(()),
        Some(other) => Err(ConnectError::new(
            Code::Unimplemented,
            format!("unsupported {name}: {other:?} (only identity is supported)"),
        )),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ConnectError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if stasis_http::over_limit(&e) {
            ConnectError::new(
                Code::ResourceExhausted,
                format!("request body exceeds the limit of {limit} bytes"),
            )
        } else {
            ConnectError::new(Code::Canceled, format!("cannot read request body: {e}"))
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConnectError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ConnectError::new(
            Code::InvalidArgument,
            format!("invalid request message: {e}"),
        )
    })
}

/// Reads and decodes a unary request.
pub async fn read_unary<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ConnectError> {
    let ct = media_type(headers);
    if ct != CONTENT_TYPE_JSON {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!("unsupported content type {ct:?}: unary calls must use {CONTENT_TYPE_JSON}"),
        ));
    }
    check_encoding(headers, "content-encoding")?;
    let bytes = read_body(body, limit).await?;
    parse_json(&bytes)
}

fn check_stream_content_type(headers: &HeaderMap) -> Result<(), ConnectError> {
    let ct = media_type(headers);
    if ct != CONTENT_TYPE_CONNECT_JSON {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!(
                "unsupported content type {ct:?}: streaming calls must use {CONTENT_TYPE_CONNECT_JSON}"
            ),
        ));
    }
    check_encoding(headers, "connect-content-encoding")
}

/// Reads the single request envelope of a server-streaming call.
pub async fn read_stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ConnectError> {
    check_stream_content_type(headers)?;
    let bytes = read_body(body, limit + envelope::HEADER_LEN).await?;
    let envs = envelope::decode_all(&bytes, limit)
        .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("invalid envelope: {e}")))?;
    let mut msgs = envs.into_iter().filter(|e| !e.is_end_stream());
    match (msgs.next(), msgs.next()) {
        (Some(env), None) => parse_json(&env.payload),
        (None, _) => Err(ConnectError::new(
            Code::InvalidArgument,
            "streaming request has no message envelope",
        )),
        (Some(_), Some(_)) => Err(ConnectError::new(
            Code::InvalidArgument,
            "server-streaming request must hold exactly one message",
        )),
    }
}

/// Incremental reader of a client-streaming request body.
pub struct StreamReader {
    body: axum::body::BodyDataStream,
    decoder: Decoder,
    done: bool,
}

impl StreamReader {
    /// Checks headers and starts reading.
    pub fn new(headers: &HeaderMap, body: Body, limit: usize) -> Result<Self, ConnectError> {
        check_stream_content_type(headers)?;
        Ok(Self {
            body: body.into_data_stream(),
            decoder: Decoder::new(limit),
            done: false,
        })
    }

    /// The next message, `Ok(None)` at the end of the request.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectError> {
        loop {
            match self.decoder.next_envelope() {
                Ok(Some(env)) if env.is_end_stream() => continue,
                Ok(Some(env)) => return parse_json(&env.payload).map(Some),
                Ok(None) => {}
                Err(e) => {
                    return Err(ConnectError::new(
                        Code::InvalidArgument,
                        format!("invalid envelope: {e}"),
                    ))
                }
            }
            if self.done {
                return self.decoder.finish().map(|()| None).map_err(|e| {
                    ConnectError::new(Code::InvalidArgument, format!("invalid envelope: {e}"))
                });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        Code::Canceled,
                        format!("cannot read request body: {e}"),
                    ))
                }
                None => self.done = true,
            }
        }
    }
}

/// The sending half of a streaming response.
pub struct StreamSender {
    tx: mpsc::Sender<Bytes>,
}

/// The client went away; stop producing.
#[derive(Debug, Clone, Copy)]
pub struct ClientGone;

impl StreamSender {
    /// Sends one message.
    pub async fn send<T: Serialize>(&self, msg: &T) -> Result<(), ClientGone> {
        let payload = serde_json::to_vec(msg).expect("stream messages serialize");
        self.send_frame(Bytes::from(envelope::encode(0, &payload)))
            .await
    }

    /// Sends an already encoded envelope.
    pub async fn send_frame(&self, frame: Bytes) -> Result<(), ClientGone> {
        self.tx.send(frame).await.map_err(|_| ClientGone)
    }

    /// Sends the end-stream envelope, consuming the sender.
    pub async fn end(self, error: Option<ConnectError>) {
        let end = match error {
            Some(e) => EndStream::error(e),
            None => EndStream::ok(),
        };
        let _ = self.tx.send(Bytes::from(end.to_envelope())).await;
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A streaming response and the sender feeding it.
pub fn stream_response() -> (StreamSender, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_CONNECT_JSON),
    );
    (StreamSender { tx }, resp)
}

/// A streaming response holding only an end-stream error.
pub fn stream_error(err: ConnectError) -> Response {
    let mut resp = Response::new(Body::from(EndStream::error(err).to_envelope()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_CONNECT_JSON),
    );
    resp
}

/// `Keepalive-Ping-Interval` (seconds), default [`DEFAULT_KEEPALIVE`], at least 1 s.
pub fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.max(1)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// `Connect-Timeout-Ms`; `None` when absent or 0.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(v) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let ms: u64 = v
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ConnectError::new(
                Code::InvalidArgument,
                format!("invalid connect-timeout-ms header {v:?}"),
            )
        })?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}
