//! HTTP/1 connection hygiene shared by the control server and the in-sandbox agent.
//!
//! An answer given before the request body was read to its end (a body over the
//! limit, a refused API key or access token) leaves the rest of that body on the
//! connection. hyper then closes the connection after the answer, since it cannot tell
//! where the next request would start. Two things go wrong: a client that was not told
//! so returns the connection to its pool and its next request on it fails; and the
//! close, with unread data in the socket, becomes a reset that can destroy the answer
//! before the client (or a proxy in front) has read it.
//!
//! [`finish_request_body`] reads and drops what is left of such a body, within bounds,
//! before the answer goes out, so the answer arrives and the connection stays usable;
//! when the rest is too large or too slow, the answer says `Connection: close`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// The most of an unread request body that is read and dropped before answering.
pub const DRAIN_BYTES: u64 = 32 << 20;
/// The longest an answer waits for the rest of an unread request body.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Middleware: when the answer is ready but the request body is not read to its end and
/// the handler has let go of it, the rest is read and dropped (at most [`DRAIN_BYTES`]
/// within [`DRAIN_TIME`]); if that does not reach the end, the answer says
/// `Connection: close`. A handler still streaming the body on (a proxy whose upstream
/// answered early) keeps it, and the answer says `Connection: close`.
pub async fn finish_request_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let shared = Arc::new(Mutex::new(Some(body)));
    let ended = Arc::new(AtomicBool::new(false));
    let watched = Body::new(Watched {
        inner: shared.clone(),
        ended: ended.clone(),
    });
    let mut resp = next.run(Request::from_parts(parts, watched)).await;
    if ended.load(Ordering::Acquire) || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    // The handler's body is gone when this is the last reference: the rest is ours.
    let rest = match Arc::try_unwrap(shared) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => None,
    };
    let drained = match rest {
        Some(body) => tokio::time::timeout(DRAIN_TIME, drain(body))
            .await
            .unwrap_or(false),
        None => false,
    };
    if !drained {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Whether a body read with a limit (`axum::body::to_bytes`) failed because the body
/// was over the limit, rather than because it could not be read.
pub fn over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
}

/// Reads `body` to its end, dropping at most [`DRAIN_BYTES`]; whether it got there.
async fn drain(mut body: Body) -> bool {
    let mut seen: u64 = 0;
    loop {
        if body.is_end_stream() {
            return true;
        }
        match body.frame().await {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > DRAIN_BYTES {
                        return false;
                    }
                }
            }
        }
    }
}

/// The request body as the handler sees it: the real one, shared with the middleware,
/// noting when its end has been reached.
struct Watched {
    inner: Arc<Mutex<Option<Body>>>,
    ended: Arc<AtomicBool>,
}

impl Watched {
    fn body(&self) -> MutexGuard<'_, Option<Body>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut guard = self.body();
        let Some(body) = guard.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        let end = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
            _ => false,
        };
        if end {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body()
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn app() -> std::net::SocketAddr {
        let router = Router::new()
            .route("/ignore", post(|| async { StatusCode::UNAUTHORIZED }))
            .route(
                "/read",
                post(|body: Body| async move {
                    let n = axum::body::to_bytes(body, usize::MAX).await.unwrap().len();
                    n.to_string()
                }),
            )
            .route(
                "/limit",
                post(|body: Body| async move {
                    match axum::body::to_bytes(body, 10).await {
                        Ok(_) => StatusCode::OK,
                        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    }
                }),
            )
            .layer(axum::middleware::from_fn(finish_request_body));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    /// Writes one HTTP/1.1 request whose body is `body`, of which only `sent` bytes go
    /// out (all of it when `None`).
    async fn send(s: &mut TcpStream, path: &str, body: &[u8], chunked: bool, sent: Option<usize>) {
        let mut req = format!("POST {path} HTTP/1.1\r\nhost: x\r\n");
        if chunked {
            req.push_str("transfer-encoding: chunked\r\n\r\n");
            req.push_str(&format!("{:x}\r\n", body.len()));
        } else {
            req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        }
        let mut bytes = req.into_bytes();
        let n = sent.unwrap_or(body.len());
        bytes.extend_from_slice(&body[..n]);
        if chunked && sent.is_none() {
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        s.write_all(&bytes).await.unwrap();
    }

    /// Reads one answer (head and a content-length body); returns the head, lowercased.
    async fn answer(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before an answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while got.len() < head_end + len {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed in the answer's body");
            got.extend_from_slice(&buf[..n]);
        }
        head
    }

    #[tokio::test]
    async fn early_answers_drain_the_body_and_keep_the_connection() {
        let addr = app().await;
        let big = vec![b'x'; 1 << 20];
        // One connection through every case: each answer leaves it usable.
        let mut s = TcpStream::connect(addr).await.unwrap();
        for (path, body, chunked, status) in [
            ("/read", &b"0123456789"[..], false, "200"),
            ("/read", &b"0123456789"[..], true, "200"),
            ("/limit", &b"0123456789"[..], false, "200"),
            ("/ignore", &b""[..], false, "401"),
            ("/ignore", &big[..], false, "401"),
            ("/ignore", &big[..], true, "401"),
            ("/limit", &big[..], false, "413"),
            ("/read", &big[..], false, "200"),
        ] {
            send(&mut s, path, body, chunked, None).await;
            let h = answer(&mut s).await;
            assert!(h.starts_with(&format!("http/1.1 {status}")), "{path}: {h}");
            assert!(!h.contains("connection: close"), "{path}: {h}");
        }
    }

    #[tokio::test]
    async fn over_limit_is_told_apart() {
        let e = axum::body::to_bytes(Body::from("0123456789"), 4)
            .await
            .unwrap_err();
        assert!(over_limit(&e));
        assert!(!over_limit(&axum::Error::new(std::io::Error::other(
            "reset"
        ))));
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_gets_connection_close() {
        let addr = app().await;
        let big = vec![b'x'; 1 << 20];
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        send(&mut s, "/ignore", &big, false, Some(1000)).await;
        let h = answer(&mut s).await;
        assert!(
            h.starts_with("http/1.1 401") && h.contains("connection: close"),
            "{h}"
        );
        assert!(
            started.elapsed() >= DRAIN_TIME,
            "answered before the drain gave up"
        );
    }
}
