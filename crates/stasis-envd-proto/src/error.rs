//! Connect error codes, their HTTP statuses, and the end-stream message.
//!
//! Unary errors travel as a non-200 status with body `{"code":"<code>","message":"…"}`;
//! streaming errors travel inside the end-stream envelope as
//! `{"error":{"code":"<code>","message":"…"}}` after an HTTP 200.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Connect error code (wire name in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The operation was canceled.
    Canceled,
    /// Unknown error.
    Unknown,
    /// The client sent an invalid request.
    InvalidArgument,
    /// The deadline expired.
    DeadlineExceeded,
    /// A requested entity was not found.
    NotFound,
    /// The entity already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A resource limit was hit.
    ResourceExhausted,
    /// The system is not in a state required for the operation.
    FailedPrecondition,
    /// The operation was aborted.
    Aborted,
    /// Out of range.
    OutOfRange,
    /// Not implemented.
    Unimplemented,
    /// Internal error.
    Internal,
    /// Service unavailable.
    Unavailable,
    /// Unrecoverable data loss.
    DataLoss,
    /// Missing or invalid credentials.
    Unauthenticated,
}

impl Code {
    /// All codes, for exhaustive tests.
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The wire name, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code for a wire name.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status of a unary error with this code (Connect protocol mapping).
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }

    /// The code a Connect client derives from an HTTP status when the body has none.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error: the body of a failed unary call and the `error` of an end-stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectError {
    /// Error code.
    pub code: Code,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ConnectError {
    /// A new error.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The unary JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("connect error serializes")
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ConnectError {}

/// The JSON payload of the end-stream envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndStream {
    /// Set when the stream failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
    /// Trailers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
}

impl EndStream {
    /// A successful end: `{}`.
    pub fn ok() -> Self {
        Self::default()
    }

    /// A failed end.
    pub fn error(err: ConnectError) -> Self {
        Self {
            error: Some(err),
            metadata: BTreeMap::new(),
        }
    }

    /// The complete end-stream envelope (header included).
    pub fn to_envelope(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).expect("end-stream serializes");
        crate::envelope::encode(crate::envelope::FLAG_END_STREAM, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        for code in Code::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
            assert_eq!(Code::from_name(code.as_str()), Some(code));
        }
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Canceled, 499),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, status) in table {
            assert_eq!(code.http_status(), status, "{code}");
        }
    }

    #[test]
    fn end_stream_shapes() {
        assert_eq!(serde_json::to_string(&EndStream::ok()).unwrap(), "{}");
        let e = EndStream::error(ConnectError::new(
            Code::NotFound,
            "process with pid 9 not found",
        ));
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"not_found","message":"process with pid 9 not found"}}"#
        );
        assert_eq!(serde_json::from_str::<EndStream>(&json).unwrap(), e);
        assert_eq!(EndStream::ok().to_envelope(), [2, 0, 0, 0, 2, b'{', b'}']);
        let unary: ConnectError =
            serde_json::from_str(r#"{"code":"invalid_argument","message":"bad"}"#).unwrap();
        assert_eq!(unary, ConnectError::new(Code::InvalidArgument, "bad"));
    }
}
