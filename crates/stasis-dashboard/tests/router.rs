//! The dashboard's routes through `tower::ServiceExt::oneshot`, on a real (in-memory)
//! catalog: the key, the methods, and the live event stream as the log grows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use stasis_catalog::{Catalog, EventKind};
use stasis_dashboard::events::Tail;
use stasis_dashboard::Dashboard;
use tower::ServiceExt;

const KEY: &str = "e2b_0123456789abcdef";

fn app(catalog: &Arc<Catalog>) -> Router {
    let tail = Tail {
        poll: Duration::from_millis(20),
        keep_alive: Duration::from_secs(10),
        max_stream: Duration::from_secs(30),
    };
    Dashboard::new(catalog.clone(), KEY)
        .with_tail(tail)
        .router()
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::builder().uri(uri).header("x-api-key", KEY)
}

/// Reads an event stream's body until it contains `want` (deadline 10 s).
struct SseReader {
    body: Body,
    text: String,
}

impl SseReader {
    fn new(resp: Response) -> Self {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            body: resp.into_body(),
            text: String::new(),
        }
    }

    async fn until(&mut self, want: &str) -> &str {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} within 10 s; got {:?}", self.text))
                .unwrap_or_else(|| panic!("stream ended before {want:?}; got {:?}", self.text))
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        &self.text
    }
}

fn sid(s: &str) -> stasis_types::SandboxId {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_event_stream_sends_the_log_then_what_is_appended_while_it_is_open() {
    let catalog = Arc::new(Catalog::open_in_memory().unwrap());
    let a = sid("idasha1");
    let first = catalog
        .append_event(&a, &EventKind::Created, &serde_json::json!({}))
        .unwrap();
    let resp = app(&catalog)
        .oneshot(get("/dashboard/api/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    let text = sse.until("event: caught-up").await.to_owned();
    assert!(text.contains(&format!("id: {first}\n")), "{text}");
    assert!(
        text.contains("\"type\":\"sandbox.lifecycle.created\""),
        "{text}"
    );
    assert!(text.contains("\"sandboxId\":\"idasha1\""), "{text}");

    // Appended after the stream caught up: it arrives without a new request.
    let paused = catalog
        .append_event(
            &a,
            &EventKind::PauseFailed,
            &serde_json::json!({"error": "criu said no"}),
        )
        .unwrap();
    let text = sse.until(&format!("id: {paused}\n")).await;
    assert!(text.contains("sandbox.lifecycle.pause_failed"), "{text}");
    assert!(text.contains("criu said no"), "{text}");
}

#[tokio::test]
async fn a_reconnecting_stream_starts_after_its_last_event_id() {
    let catalog = Arc::new(Catalog::open_in_memory().unwrap());
    let a = sid("idashb2");
    let seen = catalog
        .append_event(&a, &EventKind::Created, &serde_json::json!({}))
        .unwrap();
    let next = catalog
        .append_event(&a, &EventKind::Killed, &serde_json::json!({}))
        .unwrap();
    let resp = app(&catalog)
        .oneshot(
            get("/dashboard/api/events?after=0")
                .header("last-event-id", seen.to_string())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    let text = sse.until("event: caught-up").await;
    assert!(!text.contains(&format!("id: {seen}\n")), "{text}");
    assert!(text.contains(&format!("id: {next}\n")), "{text}");
    assert!(text.contains("sandbox.lifecycle.killed"), "{text}");
}

#[tokio::test]
async fn the_api_needs_the_key_and_a_valid_start() {
    let catalog = Arc::new(Catalog::open_in_memory().unwrap());
    for uri in ["/dashboard/api/events", "/dashboard/api/info"] {
        let no_key = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = app(&catalog).oneshot(no_key).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{uri}");
        let wrong = Request::builder()
            .uri(uri)
            .header("x-api-key", "e2b_wrong")
            .body(Body::empty())
            .unwrap();
        let resp = app(&catalog).oneshot(wrong).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    let bad = get("/dashboard/api/events?after=yesterday")
        .body(Body::empty())
        .unwrap();
    let resp = app(&catalog).oneshot(bad).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 400);
    assert!(
        v["message"].as_str().unwrap().contains("\"yesterday\""),
        "{v}"
    );

    let resp = app(&catalog)
        .oneshot(get("/dashboard/api/info").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn every_method_under_dashboard_is_answered_by_the_dashboard() {
    // Merged into a router whose fallback stands for the server's sandbox proxy.
    let catalog = Arc::new(Catalog::open_in_memory().unwrap());
    let server: Router = Router::new()
        .merge(app(&catalog))
        .fallback(|| async { (StatusCode::BAD_GATEWAY, "proxied") });
    for (method, uri) in [
        ("POST", "/dashboard"),
        ("PUT", "/dashboard/"),
        ("DELETE", "/dashboard/api/events"),
        ("POST", "/dashboard/process.Process/Start"),
        ("OPTIONS", "/dashboard/assets/x.js"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = server.clone().oneshot(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
    }
    let req = Request::builder()
        .uri("/dashboard")
        .body(Body::empty())
        .unwrap();
    let resp = server.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "/dashboard/");
    let req = Request::builder()
        .uri("/dashboard/no/such/file")
        .body(Body::empty())
        .unwrap();
    let resp = server.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The index: the bundle, or the page that says how to build it.
    let req = Request::builder()
        .uri("/dashboard/")
        .body(Body::empty())
        .unwrap();
    let resp = server.oneshot(req).await.unwrap();
    let want = if stasis_dashboard::assets::BUNDLE.is_built() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    assert_eq!(resp.status(), want);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}
