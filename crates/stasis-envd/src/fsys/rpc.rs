//! `filesystem.Filesystem` RPC handlers.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use stasis_envd_proto::error::{Code, ConnectError};
use stasis_envd_proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryResponse, GetWatcherEventsResponse,
    ListDirRequest, ListDirResponse, MoveRequest, PathRequest, WatchDirRequest, WatchDirResponse,
    WatcherRequest,
};
use stasis_envd_proto::process::Empty;
use tokio_util::sync::CancellationToken;

use super::{watch, FsError};
use crate::connect::{self, Unary};
use crate::users::User;
use crate::{auth, paths, AppState};

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, ConnectError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(ConnectError::new(
            Code::Internal,
            format!("filesystem task failed: {e}"),
        )),
    }
}

fn resolve(path: &str, user: &User) -> Result<PathBuf, ConnectError> {
    paths::resolve(path, &user.home).map_err(|e| FsError::from(e).into())
}

async fn unary_with_user<Req: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Req, User), ConnectError> {
    let req = connect::read_unary(headers, body, s.limits.max_message).await?;
    let user = auth::request_user(s, headers)?;
    Ok((req, user))
}

/// `Stat`.
pub async fn stat(State(s): State<AppState>, headers: HeaderMap, body: Body) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (PathRequest, _) = unary_with_user(&s, &headers, body).await?;
            let path = resolve(&req.path, &user)?;
            let names = s.accounts.clone();
            let entry = blocking(move || super::entry_info(&path, &names.names())).await?;
            Ok(EntryResponse { entry: Some(entry) })
        }
        .await,
    )
}

/// `MakeDir`.
pub async fn make_dir(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (PathRequest, _) = unary_with_user(&s, &headers, body).await?;
            let path = resolve(&req.path, &user)?;
            let acc = s.accounts.clone();
            let entry = blocking(move || super::make_dir(&path, &user, &acc.names())).await?;
            Ok(EntryResponse { entry: Some(entry) })
        }
        .await,
    )
}

/// `Move`.
pub async fn move_entry(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (MoveRequest, _) = unary_with_user(&s, &headers, body).await?;
            let src = resolve(&req.source, &user)?;
            let dst = resolve(&req.destination, &user)?;
            let acc = s.accounts.clone();
            let entry =
                blocking(move || super::move_entry(&src, &dst, &user, &acc.names())).await?;
            Ok(EntryResponse { entry: Some(entry) })
        }
        .await,
    )
}

/// `ListDir`.
pub async fn list_dir(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (ListDirRequest, _) = unary_with_user(&s, &headers, body).await?;
            let path = resolve(&req.path, &user)?;
            let acc = s.accounts.clone();
            let limit = s.limits.max_list_entries;
            let entries =
                blocking(move || super::list_dir(&path, req.depth, limit, &acc.names())).await?;
            Ok(ListDirResponse { entries })
        }
        .await,
    )
}

/// `Remove`.
pub async fn remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (PathRequest, _) = unary_with_user(&s, &headers, body).await?;
            let path = resolve(&req.path, &user)?;
            blocking(move || super::remove(&path)).await?;
            Ok(Empty {})
        }
        .await,
    )
}

fn watch_spec(req: &WatchDirRequest, user: &User) -> Result<watch::WatchSpec, ConnectError> {
    Ok(watch::WatchSpec {
        root: resolve(&req.path, user)?,
        recursive: req.recursive,
        include_entry: req.include_entry,
    })
}

/// `WatchDir` (server streaming): `start`, then events and keepalives.
pub async fn watch_dir(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = async {
        let req: WatchDirRequest =
            connect::read_stream_request(&headers, body, s.limits.max_message).await?;
        let user = auth::request_user(&s, &headers)?;
        let spec = watch_spec(&req, &user)?;
        let deadline = connect::timeout(&headers)?.map(|t| tokio::time::Instant::now() + t);
        let stop = s.shutdown.child_token();
        let rx = watch::start(spec, s.accounts.names(), false, stop.clone())?;
        Ok::<_, ConnectError>((rx, stop, deadline))
    }
    .await;
    let (mut rx, stop, deadline) = match started {
        Ok(x) => x,
        Err(e) => return connect::stream_error(e),
    };
    let keepalive = connect::keepalive_interval(&headers);
    let shutdown = s.shutdown.clone();
    let (tx, resp) = connect::stream_response();
    tokio::spawn(async move {
        let _stop_on_exit = stop.drop_guard();
        if tx.send(&WatchDirResponse::Start(Empty {})).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        if tx.send(&WatchDirResponse::Filesystem(ev)).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        tx.end(None).await;
                        return;
                    }
                },
                _ = tokio::time::sleep(keepalive) => {
                    if tx.send(&WatchDirResponse::Keepalive(Empty {})).await.is_err() {
                        return;
                    }
                }
                _ = crate::connect::until_deadline(deadline) => {
                    tx.end(Some(ConnectError::new(Code::DeadlineExceeded, "connect timeout elapsed"))).await;
                    return;
                }
                _ = shutdown.cancelled() => {
                    tx.end(Some(ConnectError::new(Code::Unavailable, "envd is shutting down"))).await;
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    resp
}

/// `CreateWatcher`.
pub async fn create_watcher(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, user): (CreateWatcherRequest, _) =
                unary_with_user(&s, &headers, body).await?;
            let spec = watch_spec(&req, &user)?;
            let stop: CancellationToken = s.shutdown.child_token();
            let rx = watch::start(spec, s.accounts.names(), true, stop.clone())?;
            let id = s
                .watchers
                .insert(rx, stop, s.limits.max_watchers)
                .ok_or_else(|| {
                    ConnectError::new(
                        Code::ResourceExhausted,
                        format!("too many watchers (limit {})", s.limits.max_watchers),
                    )
                })?;
            Ok(CreateWatcherResponse { watcher_id: id })
        }
        .await,
    )
}

/// `GetWatcherEvents`.
pub async fn get_watcher_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, _user): (WatcherRequest, _) = unary_with_user(&s, &headers, body).await?;
            let events = s.watchers.drain(&req.watcher_id).ok_or_else(|| {
                ConnectError::new(
                    Code::NotFound,
                    format!("watcher '{}' not found", req.watcher_id),
                )
            })?;
            Ok(GetWatcherEventsResponse { events })
        }
        .await,
    )
}

/// `RemoveWatcher`.
pub async fn remove_watcher(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let (req, _user): (WatcherRequest, _) = unary_with_user(&s, &headers, body).await?;
            if !s.watchers.remove(&req.watcher_id) {
                return Err(ConnectError::new(
                    Code::NotFound,
                    format!("watcher '{}' not found", req.watcher_id),
                ));
            }
            Ok(Empty {})
        }
        .await,
    )
}
