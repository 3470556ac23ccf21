//! `process.Process` RPC handlers: parse, validate, call the manager, answer.

use std::ffi::OsString;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use stasis_envd_proto::error::{Code, ConnectError};
use stasis_envd_proto::process::{
    CloseStdinRequest, ConnectRequest, Empty, KeepAlive, ListRequest, ListResponse, ProcessEvent,
    PtySize, SendInputRequest, SendSignalRequest, Signal, StartRequest, StreamInputRequest,
    UpdateRequest,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{frame, start_frame, Attach, Out, ProcessError, StartSpec, Subscription};
use crate::connect::{self, StreamSender, Unary};
use crate::users::User;
use crate::{auth, paths, AppState};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_PTY_SIZE: PtySize = PtySize { cols: 80, rows: 24 };

fn invalid(msg: impl Into<String>) -> ConnectError {
    ConnectError::new(Code::InvalidArgument, msg)
}

fn no_nul(what: &str, s: &str) -> Result<(), ConnectError> {
    if s.contains('\0') {
        Err(invalid(format!("{what} must not contain NUL bytes")))
    } else {
        Ok(())
    }
}

/// `Start`: spawn and stream the process's events.
pub async fn start(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match start_inner(&s, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => connect::stream_error(e),
    }
}

async fn start_inner(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let req: StartRequest =
        connect::read_stream_request(headers, body, s.limits.max_message).await?;
    let user = auth::request_user(s, headers)?;
    let lifetime = connect::timeout(headers)?;
    // The deadline is taken before the process starts, so it passes no later than the
    // process's lifetime, which kills it: the stream then ends with `deadline_exceeded`,
    // as envd's does, and not with the end event of the kill.
    let deadline = lifetime.map(|t| Instant::now() + t);
    let spec = build_spec(s, req, user, lifetime)?;
    let (process, sub) = s.procs.start(spec)?;
    let (tx, resp) = connect::stream_response();
    tokio::spawn(forward(
        process.pid(),
        sub,
        tx,
        connect::keepalive_interval(headers),
        deadline,
        s.shutdown.clone(),
    ));
    Ok(resp)
}

fn build_spec(
    s: &AppState,
    req: StartRequest,
    user: User,
    lifetime: Option<Duration>,
) -> Result<StartSpec, ConnectError> {
    let config = req
        .process
        .ok_or_else(|| invalid("process config is required"))?;
    if config.cmd.is_empty() {
        return Err(invalid("process cmd is required"));
    }
    no_nul("cmd", &config.cmd)?;
    for a in &config.args {
        no_nul("args", a)?;
    }
    for (k, v) in &config.envs {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!("invalid environment variable name {k:?}")));
        }
        no_nul("envs", k)?;
        no_nul("envs", v)?;
    }
    let dynamic = s.dynamic();
    let cwd = match &config.cwd {
        Some(c) if !c.is_empty() => {
            let p =
                paths::resolve(c, &user.home).map_err(|_| ProcessError::InvalidCwd(c.clone()))?;
            if !p.is_dir() {
                return Err(ProcessError::InvalidCwd(c.clone()).into());
            }
            p
        }
        _ => [dynamic.default_workdir.clone(), Some(user.home.clone())]
            .into_iter()
            .flatten()
            .find(|p| p.is_dir())
            .unwrap_or_else(|| "/".into()),
    };
    let mut env: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), user.home.clone().into_os_string()),
        ("USER".into(), user.name.clone().into()),
        ("LOGNAME".into(), user.name.clone().into()),
        ("SHELL".into(), user.shell.clone().into()),
        ("PATH".into(), DEFAULT_PATH.into()),
    ];
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.into(), v.into()));
    };
    for (k, v) in &dynamic.env_vars {
        set(k, v);
    }
    for (k, v) in &config.envs {
        set(k, v);
    }
    drop(dynamic);
    let pty = req.pty.map(|p| match p.size {
        Some(sz) if sz.cols > 0 && sz.rows > 0 => sz,
        _ => DEFAULT_PTY_SIZE,
    });
    Ok(StartSpec {
        config,
        tag: req.tag,
        stdin: req.stdin.unwrap_or(true),
        pty,
        user,
        env,
        cwd,
        lifetime,
    })
}

/// Streams `start`, the subscription's frames and keepalives, then the end-stream.
/// Once `deadline` has passed nothing more is forwarded, not even an end event that is
/// already queued: the stream ends with `deadline_exceeded`.
async fn forward(
    pid: u32,
    mut sub: Subscription,
    tx: StreamSender,
    keepalive: Duration,
    deadline: Option<Instant>,
    shutdown: CancellationToken,
) {
    if tx.send_frame(start_frame(pid)).await.is_err() {
        return;
    }
    let ka = frame(ProcessEvent::Keepalive(KeepAlive {}));
    let deadline_exceeded = || ConnectError::new(Code::DeadlineExceeded, "connect timeout elapsed");
    loop {
        tokio::select! {
            biased;
            _ = crate::connect::until_deadline(deadline) => {
                tx.end(Some(deadline_exceeded())).await;
                return;
            }
            msg = sub.recv() => match msg {
                Some(Out::Frame(f)) => {
                    if tx.send_frame(f).await.is_err() {
                        return;
                    }
                }
                Some(Out::End(_)) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    tx.end(Some(deadline_exceeded())).await;
                    return;
                }
                Some(Out::End(f)) => {
                    if tx.send_frame(f).await.is_ok() {
                        tx.end(None).await;
                    }
                    return;
                }
                None => {
                    tx.end(Some(ConnectError::new(Code::Internal, "process output ended without an end event"))).await;
                    return;
                }
            },
            _ = tokio::time::sleep(keepalive) => {
                if tx.send_frame(ka.clone()).await.is_err() {
                    return;
                }
            }
            _ = shutdown.cancelled() => {
                tx.end(Some(ConnectError::new(Code::Unavailable, "envd is shutting down"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

/// `Connect`: re-attach to a process by pid or tag; live output from now on.
pub async fn connect(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let req: ConnectRequest =
            connect::read_stream_request(&headers, body, s.limits.max_message).await?;
        auth::request_user(&s, &headers)?;
        let sel = req.process.validate().map_err(invalid)?;
        let deadline = connect::timeout(&headers)?.map(|t| Instant::now() + t);
        Ok::<_, ConnectError>((s.procs.attach(&sel)?, deadline))
    }
    .await;
    match result {
        Err(e) => connect::stream_error(e),
        Ok((Attach::Running(p, sub), deadline)) => {
            let (tx, resp) = connect::stream_response();
            tokio::spawn(forward(
                p.pid(),
                sub,
                tx,
                connect::keepalive_interval(&headers),
                deadline,
                s.shutdown.clone(),
            ));
            resp
        }
        Ok((Attach::Ended(pid, end), _)) => {
            let mut body = start_frame(pid).to_vec();
            body.extend_from_slice(&end);
            body.extend_from_slice(&stasis_envd_proto::error::EndStream::ok().to_envelope());
            let (tx, resp) = connect::stream_response();
            tokio::spawn(async move {
                let _ = tx.send_frame(Bytes::from(body)).await;
            });
            resp
        }
    }
}

/// `List`.
pub async fn list(State(s): State<AppState>, headers: HeaderMap, body: Body) -> impl IntoResponse {
    Unary(
        async {
            let _: ListRequest = connect::read_unary(&headers, body, s.limits.max_message).await?;
            auth::request_user(&s, &headers)?;
            Ok(ListResponse {
                processes: s.procs.list(),
            })
        }
        .await,
    )
}

/// `SendInput`.
pub async fn send_input(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let req: SendInputRequest =
                connect::read_unary(&headers, body, s.limits.max_message).await?;
            auth::request_user(&s, &headers)?;
            let sel = req.process.validate().map_err(invalid)?;
            let input = req.input.ok_or_else(|| invalid("input is required"))?;
            let p = s.procs.find(&sel)?;
            p.write_input(input).await?;
            Ok(Empty {})
        }
        .await,
    )
}

/// `StreamInput` (client streaming): `start{process}`, then `data{input}`….
pub async fn stream_input(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        auth::request_user(&s, &headers)?;
        let mut reader = connect::StreamReader::new(&headers, body, s.limits.max_message)?;
        let first: Option<StreamInputRequest> = reader.next().await?;
        let sel = match first {
            Some(StreamInputRequest::Start(st)) => st.process.validate().map_err(invalid)?,
            _ => return Err(invalid("the first StreamInput message must be start")),
        };
        let p = s.procs.find(&sel)?;
        while let Some(msg) = reader.next::<StreamInputRequest>().await? {
            match msg {
                StreamInputRequest::Data(d) => {
                    let input = d.input.ok_or_else(|| invalid("data event without input"))?;
                    p.write_input(input).await?;
                }
                StreamInputRequest::Keepalive(_) => {}
                StreamInputRequest::Start(_) => {
                    return Err(invalid("StreamInput start sent twice"));
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Err(e) => connect::stream_error(e),
        Ok(()) => {
            let (tx, resp) = connect::stream_response();
            tokio::spawn(async move {
                if tx.send(&Empty {}).await.is_ok() {
                    tx.end(None).await;
                }
            });
            resp
        }
    }
}

/// `CloseStdin`.
pub async fn close_stdin(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let req: CloseStdinRequest =
                connect::read_unary(&headers, body, s.limits.max_message).await?;
            auth::request_user(&s, &headers)?;
            let sel = req.process.validate().map_err(invalid)?;
            s.procs.find(&sel)?.close_stdin().await?;
            Ok(Empty {})
        }
        .await,
    )
}

/// `SendSignal`.
pub async fn send_signal(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let req: SendSignalRequest =
                connect::read_unary(&headers, body, s.limits.max_message).await?;
            auth::request_user(&s, &headers)?;
            let sel = req.process.validate().map_err(invalid)?;
            let sig = match req.signal {
                Signal::Sigkill => rustix::process::Signal::Kill,
                Signal::Sigterm => rustix::process::Signal::Term,
                Signal::Unspecified => return Err(invalid("signal is required")),
            };
            s.procs.find(&sel)?.signal(sig)?;
            Ok(Empty {})
        }
        .await,
    )
}

/// `Update`: resize the PTY.
pub async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    Unary(
        async {
            let req: UpdateRequest =
                connect::read_unary(&headers, body, s.limits.max_message).await?;
            auth::request_user(&s, &headers)?;
            let sel = req.process.validate().map_err(invalid)?;
            let p = s.procs.find(&sel)?;
            if let Some(size) = req.pty.and_then(|p| p.size) {
                if size.cols == 0 || size.rows == 0 {
                    return Err(invalid("pty size needs non-zero cols and rows"));
                }
                p.resize(size)?;
            }
            Ok(Empty {})
        }
        .await,
    )
}
