//! Who may call and as whom.
//!
//! * Access token: when set, every request needs `X-Access-Token`, except
//!   `GET /health`, `GET`/`POST /files` (header or signed URL) and `POST /init`
//!   (checked by its handler).
//! * User: `Authorization: Basic base64("<user>:")` on RPCs, `username=` on `/files`;
//!   otherwise the sandbox default user (`root` if that account does not exist).
//! * Signed `/files` URLs: `v1_` + unpadded base64 of SHA-256 over
//!   `"{path}:{read|write}:{username}:{token}[:{expiration}]"`.
#![forbid(unsafe_code)]

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use stasis_envd_proto::error::{Code, ConnectError};
use thiserror::Error;

use crate::users::{User, UserError};
use crate::{http_error, AppState};

/// Header carrying the access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

/// Authentication failures.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The `Authorization` header is not `Basic base64(user:)`.
    #[error("invalid authorization header: {0}")]
    BadHeader(String),
    /// The user does not exist.
    #[error(transparent)]
    User(#[from] UserError),
    /// Missing or wrong access token / signature.
    #[error("{0}")]
    Token(String),
}

impl From<AuthError> for ConnectError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::User(UserError::Read { .. }) => Code::Internal,
            _ => Code::Unauthenticated,
        };
        ConnectError::new(code, e.to_string())
    }
}

/// Compares two secrets without early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Whether `presented` matches the current token (always true when none is set).
pub fn token_ok(state: &AppState, presented: Option<&str>) -> bool {
    match &state.dynamic().access_token {
        None => true,
        Some(t) => presented.is_some_and(|p| {
            constant_time_eq(p.as_bytes(), t.as_bytes())
                || constant_time_eq(p.as_bytes(), state.internal_token.as_bytes())
        }),
    }
}

/// Middleware enforcing the access token on every path E2B does not leave open.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let open = matches!(
        (req.method(), req.uri().path()),
        (&Method::GET, "/health")
            | (&Method::GET, "/files")
            | (&Method::POST, "/files")
            | (&Method::POST, "/init")
    );
    if !open && !token_ok(&state, header_token(req.headers())) {
        return http_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response();
    }
    next.run(req).await
}

/// The user named by `Authorization: Basic`, else the default user.
pub fn request_user(state: &AppState, headers: &HeaderMap) -> Result<User, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return default_user(state);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::BadHeader("not ASCII".into()))?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| AuthError::BadHeader("expected Basic credentials".into()))?
        .trim();
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|e| AuthError::BadHeader(format!("invalid base64: {e}")))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| AuthError::BadHeader("not UTF-8".into()))?;
    let name = decoded.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return default_user(state);
    }
    Ok(state.accounts.lookup(name)?)
}

/// The user named by `username` (query of `/files`), else the default user.
pub fn named_user(state: &AppState, username: Option<&str>) -> Result<User, AuthError> {
    match username {
        Some(name) if !name.is_empty() => Ok(state.accounts.lookup(name)?),
        _ => default_user(state),
    }
}

/// The sandbox default user (falls back to root when the account does not exist).
pub fn default_user(state: &AppState) -> Result<User, AuthError> {
    let name = state.dynamic().default_user.clone();
    Ok(state.accounts.lookup_or_root(&name)?)
}

/// Operation a `/files` signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// GET.
    Read,
    /// POST.
    Write,
}

impl FileOp {
    fn as_str(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Write => "write",
        }
    }
}

/// Computes a signature the way the SDKs' `uploadUrl`/`downloadUrl` do.
pub fn sign(
    path: &str,
    op: FileOp,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut raw = format!("{path}:{}:{username}:{token}", op.as_str());
    if let Some(exp) = expiration {
        raw.push_str(&format!(":{exp}"));
    }
    format!(
        "v1_{}",
        STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

/// Access check of `/files`: a matching token header, or a valid unexpired signature.
pub fn check_files_access(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    op: FileOp,
    username: Option<&str>,
    signature: Option<&str>,
    expiration: Option<i64>,
) -> Result<(), AuthError> {
    let Some(token) = state.dynamic().access_token.clone() else {
        return Ok(());
    };
    if let Some(presented) = header_token(headers) {
        return if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Token(
                "access token present in header but does not match".into(),
            ))
        };
    }
    let signature = signature.ok_or_else(|| AuthError::Token(UNAUTHORIZED.into()))?;
    let expected = sign(path, op, username.unwrap_or(""), &token, expiration);
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(AuthError::Token("invalid signature".into()));
    }
    if let Some(exp) = expiration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if exp < now {
            return Err(AuthError::Token("signature is already expired".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_scheme() {
        // sha256("/tmp/a:read::tok") computed independently with coreutils:
        // printf '/tmp/a:read::tok' | sha256sum | xxd -r -p | base64 | tr -d '='
        let s = sign("/tmp/a", FileOp::Read, "", "tok", None);
        assert_eq!(s, "v1_jRv7bf35peDXq059OOOyWD0PBnF4OWRLw0tBteoU7A4");
        assert_ne!(s, sign("/tmp/a", FileOp::Write, "", "tok", None));
        assert_ne!(s, sign("/tmp/a", FileOp::Read, "", "tok", Some(1)));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
