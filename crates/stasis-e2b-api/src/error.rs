//! The control plane's only error shape, and the sandbox proxy's not-found body.
//!
//! Every control-plane error is `{"code": <HTTP status>, "message": "<text>"}`: the Python
//! SDK raises inside itself on anything else, and the JS SDK decides `kill() → false`
//! (404) and `pause() → false` (409) from `code` in the body, not from the status line.
//! The constructors reproduce E2B's messages where the SDKs or users may match on them.

use serde::{Deserialize, Serialize};

use crate::query::QueryError;
use crate::request::BodyError;

/// `{"code": <status>, "message": …}`. `code` is always the HTTP status of the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

impl ErrorBody {
    /// Any status and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status to answer with (same as `code`).
    pub fn status(&self) -> u16 {
        self.code
    }

    /// 400 with a free-form message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 401 for a missing or unknown API key.
    pub fn unauthorized() -> Self {
        Self::new(401, "Invalid API key")
    }

    /// 404: `Sandbox "<id>" doesn't exist or you don't have access to it`.
    pub fn not_found_sandbox(id: impl std::fmt::Display) -> Self {
        Self::new(
            404,
            format!("Sandbox \"{id}\" doesn't exist or you don't have access to it"),
        )
    }

    /// 404 for `POST /sandboxes/{id}/timeout` and `/refreshes` on a sandbox that is not
    /// running (the legacy connect flow relies on this 404 to fall back to resume).
    pub fn sandbox_not_running(id: impl std::fmt::Display) -> Self {
        Self::new(404, format!("Sandbox \"{id}\" is not running"))
    }

    /// 404 for an unknown template.
    pub fn not_found_template(template: impl std::fmt::Display) -> Self {
        Self::new(
            404,
            format!("Template '{template}' not found or you don't have access to it"),
        )
    }

    /// 409: `Error pausing sandbox - sandbox '<id>' is already paused`.
    pub fn already_paused(id: impl std::fmt::Display) -> Self {
        Self::new(
            409,
            format!("Error pausing sandbox - sandbox '{id}' is already paused"),
        )
    }

    /// 409 for pause during a transition: `… cannot be paused while in '<state>' state`.
    pub fn cannot_pause_in_state(id: impl std::fmt::Display, state: &str) -> Self {
        Self::new(
            409,
            format!(
                "Error pausing sandbox - sandbox '{id}' cannot be paused while in '{state}' state"
            ),
        )
    }

    /// 409 for resume of a running sandbox (the 2.0–2.5 connect flow treats it as fine).
    pub fn already_running(id: impl std::fmt::Display) -> Self {
        Self::new(409, format!("Sandbox \"{id}\" is already running"))
    }

    /// 409 for connect/resume while the sandbox is pausing or being killed.
    pub fn in_transition(id: impl std::fmt::Display, state: &str) -> Self {
        Self::new(
            409,
            format!("Sandbox \"{id}\" is in '{state}' state, try again later"),
        )
    }

    /// 400 for a timeout above the server's maximum.
    pub fn timeout_too_large(max_hours: u32) -> Self {
        Self::new(
            400,
            format!("Timeout cannot be greater than {max_hours} hours"),
        )
    }

    /// 500 with a message; prefer typed 4xx errors for anything deterministic.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// envd's 401 for a missing or wrong `X-Access-Token`.
    pub fn envd_unauthorized() -> Self {
        Self::new(
            401,
            "unauthorized access, please provide a valid access token or method signing if supported",
        )
    }
}

impl From<&QueryError> for ErrorBody {
    /// A query-string error is a 400 naming the parameter and value.
    fn from(err: &QueryError) -> Self {
        Self::bad_request(err.to_string())
    }
}

impl From<QueryError> for ErrorBody {
    fn from(err: QueryError) -> Self {
        Self::from(&err)
    }
}

impl From<&BodyError> for ErrorBody {
    /// A body error is a 400.
    fn from(err: &BodyError) -> Self {
        Self::bad_request(err.to_string())
    }
}

impl From<BodyError> for ErrorBody {
    fn from(err: BodyError) -> Self {
        Self::from(&err)
    }
}

/// The sandbox proxy's answer for an unknown, killed or (non-auto-resume) paused sandbox:
/// HTTP 502, `Content-Type: application/json; charset=utf-8`,
/// `{"sandboxId":…,"message":"The sandbox was not found","code":502}`.
/// The SDKs key on the substring `was not found`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyNotFound {
    /// As the client named it; not necessarily a valid id.
    #[serde(rename = "sandboxId")]
    pub sandbox_id: String,
    pub message: String,
    pub code: u16,
}

impl ProxyNotFound {
    /// HTTP status of this body.
    pub const STATUS: u16 = 502;
    /// Content type E2B's proxy sends with it.
    pub const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    /// The body for `sandbox_id`.
    pub fn new(sandbox_id: impl Into<String>) -> Self {
        Self {
            sandbox_id: sandbox_id.into(),
            message: "The sandbox was not found".into(),
            code: Self::STATUS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_body_has_exactly_code_and_message() {
        let e = ErrorBody::not_found_sandbox("abc");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"code": 404, "message": "Sandbox \"abc\" doesn't exist or you don't have access to it"})
        );
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn messages_match_e2b() {
        assert_eq!(
            ErrorBody::already_paused("abc").message,
            "Error pausing sandbox - sandbox 'abc' is already paused"
        );
        assert_eq!(ErrorBody::already_paused("abc").code, 409);
        assert!(ErrorBody::cannot_pause_in_state("abc", "killing")
            .message
            .contains("cannot be paused while in 'killing' state"));
        assert_eq!(ErrorBody::sandbox_not_running("x").code, 404);
        assert_eq!(
            ErrorBody::timeout_too_large(24).message,
            "Timeout cannot be greater than 24 hours"
        );
    }

    #[test]
    fn proxy_not_found_body_is_exact() {
        assert_eq!(
            serde_json::to_string(&ProxyNotFound::new("abc")).unwrap(),
            r#"{"sandboxId":"abc","message":"The sandbox was not found","code":502}"#
        );
    }

    #[test]
    fn query_errors_become_400() {
        let err = crate::ListQuery::parse("limit=0").unwrap_err();
        let body = ErrorBody::from(&err);
        assert_eq!(body.code, 400);
        assert!(body.message.contains("limit"), "{}", body.message);
    }
}
