//! `GET /dashboard/api/events`: the catalog's lifecycle events as server-sent events.
//!
//! The catalog's `events` table is append-only with a global, increasing `seq`. A stream
//! starts after the `seq` the client names (`Last-Event-ID`, else `?after=`, else 0 =
//! the whole log), sends what is there in pages of [`PAGE`], then an `event: caught-up`
//! message, and from then on tails the table: it reads what was appended every
//! [`Tail::poll`]. Each event is
//!
//! ```text
//! id: <seq>
//! event: lifecycle
//! data: {"id":"<seq>","type":"sandbox.lifecycle.<kind>","sandboxId":…,"timestamp":…,"eventData":…}
//! ```
//!
//! (the body of `GET /events/sandboxes/{id}`, one item). A stream ends after
//! [`crate::MAX_STREAM`]; the client reconnects with `Last-Event-ID` and misses nothing.
//! A catalog failure ends it with `event: error` and a message.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use stasis_catalog::{Catalog, CatalogError, Event};

use crate::Dashboard;

/// Events read from the catalog at a time.
pub const PAGE: u32 = 500;

/// How a stream follows the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    /// Interval between reads of the catalog once caught up.
    pub poll: Duration,
    /// Interval of comment lines that keep an idle connection open.
    pub keep_alive: Duration,
    /// How long one stream stays open.
    pub max_stream: Duration,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            keep_alive: Duration::from_secs(10),
            max_stream: crate::MAX_STREAM,
        }
    }
}

/// Why a stream could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("reading the catalog's events after seq {after}")]
    Catalog {
        after: i64,
        #[source]
        source: CatalogError,
    },
    #[error("the catalog read after seq {after} did not finish")]
    Join {
        after: i64,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The client named no valid place to start.
    #[error("{field} must be an event sequence number (an integer >= 0), got {value:?}")]
    BadStart { field: &'static str, value: String },
}

/// Where a stream starts, from the request.
#[derive(Debug, serde::Deserialize)]
pub struct StreamQuery {
    after: Option<String>,
}

/// The `seq` after which to start: `Last-Event-ID` wins over `?after=`.
fn start_after(headers: &HeaderMap, q: &StreamQuery) -> Result<i64, EventsError> {
    let (field, value) = match headers.get("last-event-id") {
        Some(v) => (
            "Last-Event-ID",
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ),
        None => match &q.after {
            Some(a) => ("after", a.clone()),
            None => return Ok(0),
        },
    };
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(EventsError::BadStart { field, value }),
    }
}

/// The body of one event, as `GET /events/sandboxes/{id}` lists it.
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": e.seq.to_string(),
        "type": format!("sandbox.lifecycle.{}", e.kind.as_str()),
        "sandboxId": e.sandbox_id,
        "timestamp": e.at,
        "eventData": e.detail,
    })
}

async fn read(catalog: &Arc<Catalog>, after: i64) -> Result<Vec<Event>, EventsError> {
    let catalog = catalog.clone();
    tokio::task::spawn_blocking(move || catalog.events_since(after, PAGE))
        .await
        .map_err(|source| EventsError::Join { after, source })?
        .map_err(|source| EventsError::Catalog { after, source })
}

/// A stream's position.
struct Cursor {
    catalog: Arc<Catalog>,
    tail: Tail,
    after: i64,
    pending: VecDeque<Event>,
    caught_up: bool,
    opened: Instant,
    done: bool,
}

impl Cursor {
    /// The next message, waiting for the catalog to grow; `None` ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.pending.pop_front() {
                self.after = e.seq;
                return Some(
                    SseEvent::default()
                        .id(e.seq.to_string())
                        .event("lifecycle")
                        .data(event_json(&e).to_string()),
                );
            }
            if self.opened.elapsed() >= self.tail.max_stream {
                return None;
            }
            match read(&self.catalog, self.after).await {
                Ok(events) if events.is_empty() => {
                    if !self.caught_up {
                        self.caught_up = true;
                        let data = serde_json::json!({ "seq": self.after });
                        return Some(
                            SseEvent::default()
                                .event("caught-up")
                                .data(data.to_string()),
                        );
                    }
                    tokio::time::sleep(self.tail.poll).await;
                }
                Ok(events) => self.pending.extend(events),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "dashboard event stream failed");
                    self.done = true;
                    let data = serde_json::json!({ "message": error_chain(&e) });
                    return Some(SseEvent::default().event("error").data(data.to_string()));
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// `GET /dashboard/api/events`.
pub(crate) async fn stream(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    if !d.authorized(&headers) {
        return crate::unauthorized();
    }
    let after = match start_after(&headers, &q) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                crate::error_body(400, &e.to_string()),
            )
                .into_response();
        }
    };
    let cursor = Cursor {
        catalog: d.catalog.clone(),
        tail: d.tail,
        after,
        pending: VecDeque::new(),
        caught_up: false,
        opened: Instant::now(),
        done: false,
    };
    let events = stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|e| (Ok::<_, Infallible>(e), c))
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(d.tail.keep_alive))
        .into_response();
    // Proxies in front of the server must not buffer the stream.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}
