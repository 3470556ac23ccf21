//! The sandbox traffic proxy: requests that are not for the control API are routed to a
//! port inside a sandbox (envd on 49983, the code interpreter on 49999, or any port),
//! streaming both ways without buffering.
//!
//! Routing (first match wins): the `E2b-Sandbox-Id` header; a Host of the form
//! `{port}-{id}.{domain}`; the `X-Access-Token` header looked up among the sandboxes'
//! tokens; the signature of a signed `/files` URL checked against each sandbox's token;
//! the only sandbox, if there is exactly one. The port comes from `E2b-Sandbox-Port`,
//! else the Host prefix, else 49983.

use std::net::SocketAddr;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::BodyStream;
use stasis_types::SandboxId;
use tracing::debug;

use crate::envd::ENVD_PORT;
use crate::supervisor::{Supervisor, Upstream};

const SANDBOX_ID: &str = "e2b-sandbox-id";
const SANDBOX_PORT: &str = "e2b-sandbox-port";
const ACCESS_TOKEN: &str = "x-access-token";

/// Paths of the agent that only the server itself may call.
const HOST_ONLY_PATHS: &[&str] = &["/init"];

/// E2B's answer for traffic to a sandbox that is not there (unknown, killed, or paused
/// without auto-resume). The SDKs key on "was not found".
pub fn not_found(id: Option<&str>) -> Response {
    let body = stasis_e2b_api::ProxyNotFound::new(id.unwrap_or(""));
    (
        StatusCode::BAD_GATEWAY,
        [(
            header::CONTENT_TYPE,
            stasis_e2b_api::ProxyNotFound::CONTENT_TYPE,
        )],
        serde_json::to_string(&body).expect("body serializes"),
    )
        .into_response()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `{port}-{id}.{anything}` → (port, id).
fn parse_host(host: &str) -> Option<(u16, &str)> {
    let first = host.split('.').next()?;
    let (port, id) = first.split_once('-')?;
    let port = port.parse().ok()?;
    (!id.is_empty()).then_some((port, id))
}

/// The query parameters of a signed `/files` URL.
fn signed_files_query(uri: &Uri) -> Option<(String, String, String, Option<String>)> {
    if uri.path() != "/files" {
        return None;
    }
    let q = uri.query()?;
    let mut path = None;
    let mut user = String::new();
    let mut sig = None;
    let mut exp = None;
    for (k, v) in form_pairs(q) {
        match k.as_str() {
            "path" => path = Some(v),
            "username" => user = v,
            "signature" => sig = Some(v),
            "signature_expiration" => exp = Some(v),
            _ => {}
        }
    }
    Some((path?, user, sig?, exp))
}

/// Decodes `a=b&c=d` with `+` as space and percent escapes.
pub fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// E2B's file URL signature: `v1_` + unpadded base64 of SHA-256 over
/// `{path}:{operation}:{username}:{token}[:{expiration}]`.
pub fn file_signature(path: &str, op: &str, user: &str, token: &str, exp: Option<&str>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut text = format!("{path}:{op}:{user}:{token}");
    if let Some(e) = exp {
        text.push(':');
        text.push_str(e);
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Which sandbox and port a request is for, or `None` when nothing identifies one.
fn route(sup: &Supervisor, req: &Request<Body>) -> (Option<String>, u16) {
    let h = req.headers();
    let host = header_str(h, "host").and_then(parse_host);
    let port = header_str(h, SANDBOX_PORT)
        .and_then(|p| p.parse().ok())
        .or(host.map(|(p, _)| p))
        .unwrap_or(ENVD_PORT);
    if let Some(id) = header_str(h, SANDBOX_ID).filter(|s| !s.is_empty()) {
        return (Some(id.to_owned()), port);
    }
    if let Some((_, id)) = host {
        return (Some(id.to_owned()), port);
    }
    if let Some(tok) = header_str(h, ACCESS_TOKEN) {
        if let Some(id) = sup.sandbox_by_token(tok) {
            return (Some(id.to_string()), port);
        }
    }
    if let Some((path, user, sig, exp)) = signed_files_query(req.uri()) {
        let op = if req.method() == http::Method::GET {
            "read"
        } else {
            "write"
        };
        let found = sup
            .find_by_token(|token| file_signature(&path, op, &user, token, exp.as_deref()) == sig);
        if let Some(id) = found {
            return (Some(id.to_string()), port);
        }
    }
    (sup.only_sandbox().map(|id| id.to_string()), port)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

/// Forwards one request into a sandbox.
pub async fn forward(sup: &Supervisor, req: Request<Body>) -> Response {
    let mut req = req;
    match route_or_reject(sup, &mut req).await {
        Ok(up) => forward_to(sup, req, up).await,
        // The body that was not forwarded is read and dropped by the server's
        // `stasis_http::finish_request_body` layer, so the connection stays usable.
        Err(resp) => resp,
    }
}

/// Where a request goes, or the answer that refuses it.
async fn route_or_reject(
    sup: &Supervisor,
    req: &mut Request<Body>,
) -> Result<(SandboxId, u16, Upstream), Response> {
    let (id, port) = route(sup, req);
    let Some(id_str) = id else {
        return Err(not_found(None));
    };
    let Ok(id) = id_str.parse::<SandboxId>() else {
        return Err(not_found(Some(&id_str)));
    };
    if port == ENVD_PORT && HOST_ONLY_PATHS.contains(&req.uri().path()) {
        return Err((
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"code":403,"message":"this path is reserved for the server"}"#,
        )
            .into_response());
    }
    match sup.upstream(&id).await {
        Some(u) => Ok((id, port, u)),
        None => Err(not_found(Some(&id_str))),
    }
}

async fn forward_to(
    sup: &Supervisor,
    mut req: Request<Body>,
    (id, port, upstream): (SandboxId, u16, Upstream),
) -> Response {
    let id_str = id.to_string();
    let addr = SocketAddr::from((upstream.address, port));
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let uri: Uri = match format!("http://{addr}{path_q}").parse() {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad request path").into_response(),
    };
    let upgrade = req.headers().get(header::UPGRADE).cloned().filter(|_| {
        header_str(req.headers(), "connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade"))
    });
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for h in [SANDBOX_ID, SANDBOX_PORT] {
        parts.headers.remove(h);
    }
    if let Some(up) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, up.clone());
    }
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).expect("address is a valid header"),
    );
    parts.uri = uri;
    let upstream_req = Request::from_parts(parts, body);
    let activity = upstream.activity.clone();
    activity.touch();
    let cancel = upstream.cancel.clone();
    let resp = tokio::select! {
        r = sup.http().request(upstream_req) => r,
        _ = cancel.cancelled() => return not_found(Some(&id_str)),
    };
    let mut resp = match resp {
        Ok(r) => r,
        Err(e) => {
            debug!(sandbox_id = %id, error = %e, "upstream request failed");
            return (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"code": 502, "message": format!("sandbox port {port} is not reachable: {e}")}).to_string(),
            )
                .into_response();
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let server_upgrade = hyper::upgrade::on(&mut resp);
            let guard = activity.stream();
            tokio::spawn(async move {
                let _guard = guard;
                let (Ok(c), Ok(s)) = (client_upgrade.await, server_upgrade.await) else {
                    return;
                };
                let mut c = hyper_util::rt::TokioIo::new(c);
                let mut s = hyper_util::rt::TokioIo::new(s);
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The response streams as it comes and counts as activity while it is open. When the
    // sandbox is paused or killed it is cut as a dropped connection (an error, so no
    // clean end of the body reaches the client), as E2B's SDKs expect: they turn it into
    // their own errors instead of reading a stream that ended without its end event.
    let guard = activity.stream();
    let cut = cancel.clone();
    let stream = BodyStream::new(body)
        .take_until(cancel.cancelled_owned())
        .map(|frame| match frame {
            Ok(f) => f.into_data().ok().map(Ok::<_, BoxError>),
            Err(e) => Some(Err(BoxError::from(e))),
        })
        .chain(futures_util::stream::once(async move {
            cut.is_cancelled()
                .then(|| Err(BoxError::from("the sandbox was paused or killed")))
        }))
        .filter_map(|item| async move { item })
        .map(move |item| {
            let _keep = &guard;
            item
        });
    Response::from_parts(parts, Body::from_stream(stream))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_id_hosts() {
        assert_eq!(parse_host("49983-abc.example.com"), Some((49983, "abc")));
        assert_eq!(
            parse_host("49999-i123.localhost:3000"),
            Some((49999, "i123"))
        );
        assert_eq!(parse_host("127.0.0.1:3000"), None);
        assert_eq!(parse_host("localhost"), None);
    }

    #[test]
    fn decodes_queries() {
        let p = form_pairs("path=%2Ftmp%2Fa+b.txt&username=user&x");
        assert_eq!(p[0], ("path".into(), "/tmp/a b.txt".into()));
        assert_eq!(p[1], ("username".into(), "user".into()));
        assert_eq!(p[2], ("x".into(), String::new()));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%C3%A9"), "%zzé");
    }

    #[test]
    fn signature_matches_e2b_scheme() {
        use base64::Engine;
        use sha2::Digest;
        let want = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(sha2::Sha256::digest(b"/tmp/a:read:user:tok:1700000000"))
        );
        assert_eq!(
            file_signature("/tmp/a", "read", "user", "tok", Some("1700000000")),
            want
        );
        assert!(!file_signature("/tmp/a", "write", "", "tok", None).contains('='));
    }
}
