//! HTTP/1 connection hygiene shared by the control server and the in-sandbox agent.
//!
//! An answer given before the request body was read to its end (a body over the
//! limit, a refused API key or access token) leaves the rest of that body on the
//! connection. hyper then closes the connection after the answer, since it cannot
//! tell where the next request would start; a client that was not told so returns
//! the connection to its pool, and its next request on it fails with an incomplete
//! message. [`close_if_body_unread`] tells it: such answers carry `Connection: close`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

/// Middleware: answers given while the request body is not yet read to its end say
/// `Connection: close`. Meant for handlers that read the whole body before they
/// answer (or refuse without reading it); not for routes that stream a request body
/// on while the answer is already under way.
pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = Body::new(Watched {
        inner: body,
        ended: ended.clone(),
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !ended.load(Ordering::Acquire) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that records when its end has been reached.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let end = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if end {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
            .layer(axum::middleware::from_fn(close_if_body_unread));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    /// Sends one raw HTTP/1.1 request and returns the head of the answer.
    async fn head_of(addr: std::net::SocketAddr, path: &str, body: &[u8], chunked: bool) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("POST {path} HTTP/1.1\r\nhost: x\r\n");
        if chunked {
            req.push_str("transfer-encoding: chunked\r\n\r\n");
            req.push_str(&format!("{:x}\r\n", body.len()));
        } else {
            req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        }
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        if chunked {
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        // The answer may come before the body is all sent; a refused write is fine.
        let _ = s.write_all(&bytes).await;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before an answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    }

    #[tokio::test]
    async fn unread_bodies_close_and_read_ones_keep_alive() {
        let addr = app().await;
        let small = b"0123456789";
        let h = head_of(addr, "/read", small, false).await;
        assert!(
            h.starts_with("http/1.1 200") && !h.contains("connection: close"),
            "{h}"
        );
        let h = head_of(addr, "/read", small, true).await;
        assert!(
            h.starts_with("http/1.1 200") && !h.contains("connection: close"),
            "{h}"
        );
        let h = head_of(addr, "/limit", small, false).await;
        assert!(
            h.starts_with("http/1.1 200") && !h.contains("connection: close"),
            "{h}"
        );
        let h = head_of(addr, "/ignore", b"", false).await;
        assert!(
            h.starts_with("http/1.1 401") && !h.contains("connection: close"),
            "{h}"
        );

        let big = vec![b'x'; 1 << 20];
        let h = head_of(addr, "/ignore", &big, false).await;
        assert!(
            h.starts_with("http/1.1 401") && h.contains("connection: close"),
            "{h}"
        );
        let h = head_of(addr, "/limit", &big, false).await;
        assert!(
            h.starts_with("http/1.1 413") && h.contains("connection: close"),
            "{h}"
        );
        let h = head_of(addr, "/limit", &big, true).await;
        assert!(
            h.starts_with("http/1.1 413") && h.contains("connection: close"),
            "{h}"
        );
    }
}
