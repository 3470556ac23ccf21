//! Bodies of envd's plain-HTTP endpoints (`envd.yaml`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Error body of every plain-HTTP endpoint: `{"code": <status>, "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// The HTTP status, repeated.
    pub code: u16,
    /// What failed.
    pub message: String,
}

/// `POST /init` body. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    /// Sandbox-wide environment variables to add or overwrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// The access token from now on (a fork gets a new one); `null`/absent clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Host time, RFC 3339; requests older than the newest one seen are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Default user for requests that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    /// Default working directory for processes that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_workdir: Option<String>,
}

/// Entry type in an upload response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadedType {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Other.
    Unspecified,
}

/// One item of the `POST /files` response array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedEntry {
    /// Absolute path written.
    pub path: String,
    /// Base name.
    pub name: String,
    /// Always `file` for uploads.
    #[serde(rename = "type")]
    pub entry_type: UploadedType,
    /// The file's metadata after the write (`X-Metadata-*` headers), absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = UploadedEntry {
            path: "/tmp/a.txt".into(),
            name: "a.txt".into(),
            entry_type: UploadedType::File,
            metadata: None,
        };
        assert_eq!(
            serde_json::to_string(&vec![e]).unwrap(),
            r#"[{"path":"/tmp/a.txt","name":"a.txt","type":"file"}]"#
        );
        let init: InitRequest = serde_json::from_str(
            r#"{"envVars":{"A":"1"},"accessToken":"t","timestamp":"2026-08-22T10:00:00Z","defaultUser":"root"}"#,
        )
        .unwrap();
        assert_eq!(init.access_token.as_deref(), Some("t"));
        assert_eq!(init.env_vars.unwrap()["A"], "1");
        let err = HttpError {
            code: 401,
            message: "unauthorized".into(),
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"code":401,"message":"unauthorized"}"#
        );
    }
}
