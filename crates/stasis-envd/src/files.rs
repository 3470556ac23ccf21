//! `GET /files` (download) and `POST /files` (upload: multipart or octet-stream,
//! optionally gzip-encoded), streamed to and from disk.
//!
//! Paths resolve against the user's home (`username=` or the default user); files and
//! new parent directories belong to that user. Errors are `{"code","message"}` JSON.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_compression::tokio::bufread::GzipDecoder;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use stasis_envd_proto::http::{UploadedEntry, UploadedType};
use thiserror::Error;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::auth::{self, AuthError, FileOp};
use crate::fsys::{self, FsError};
use crate::users::User;
use crate::{http_error, paths, AppState};

/// Query parameters of `/files`.
#[derive(Debug, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// `/files` failures, each with its HTTP status.
#[derive(Debug, Error)]
pub enum FilesError {
    /// Bad request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Token, signature or user rejected (401).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Missing file (404).
    #[error("file '{0}' not found")]
    NotFound(PathBuf),
    /// Upload above the limit (413).
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// Disk full (507).
    #[error("not enough disk space to write '{0}'")]
    NoSpace(PathBuf),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl From<FsError> for FilesError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::NotFound(p) => FilesError::NotFound(p),
            FsError::Path(_) | FsError::NotADirectory(_) | FsError::AlreadyExists(_) => {
                FilesError::BadRequest(e.to_string())
            }
            FsError::Io {
                ref source,
                ref path,
                ..
            } if is_no_space(source) => FilesError::NoSpace(path.clone()),
            other => FilesError::Internal(other.to_string()),
        }
    }
}

fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = match &self {
            FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::Auth(AuthError::User(crate::users::UserError::Read { .. })) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            FilesError::Auth(_) => StatusCode::UNAUTHORIZED,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FilesError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            FilesError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        http_error(status, self.to_string())
    }
}

fn authorize(
    s: &AppState,
    headers: &HeaderMap,
    q: &FilesQuery,
    op: FileOp,
) -> Result<User, FilesError> {
    auth::check_files_access(
        s,
        headers,
        q.path.as_deref().unwrap_or(""),
        op,
        q.username.as_deref(),
        q.signature.as_deref(),
        q.signature_expiration,
    )?;
    Ok(auth::named_user(s, q.username.as_deref())?)
}

fn query(q: Result<Query<FilesQuery>, QueryRejection>) -> Result<FilesQuery, FilesError> {
    q.map(|Query(q)| q)
        .map_err(|e| FilesError::BadRequest(format!("invalid query: {}", e.body_text())))
}

fn resolve(path: &str, user: &User) -> Result<PathBuf, FilesError> {
    Ok(paths::resolve(path, &user.home).map_err(FsError::from)?)
}

/// `GET /files?path=…`: the file's bytes.
pub async fn download(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FilesQuery>, QueryRejection>,
) -> Result<Response, FilesError> {
    let q = query(q)?;
    let user = authorize(&s, &headers, &q, FileOp::Read)?;
    let path = resolve(q.path.as_deref().unwrap_or(""), &user)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FilesError::NotFound(path.clone()),
            _ => FilesError::Internal(format!("cannot open '{}': {e}", path.display())),
        })?;
    let md = file
        .metadata()
        .await
        .map_err(|e| FilesError::Internal(format!("cannot stat '{}': {e}", path.display())))?;
    if md.is_dir() {
        return Err(FilesError::BadRequest(format!(
            "path '{}' is a directory",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_"))
        .unwrap_or_default();
    let (body, length) = if md.is_file() && md.len() == 0 {
        unsized_body(file, &path).await?
    } else {
        let stream = ReaderStream::with_capacity(file, 256 * 1024);
        (Body::from_stream(stream), Some(md.len()))
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// What is read of a file whose size is unknown before a body without a length is sent.
const UNSIZED_HEAD: u64 = 1 << 20;

/// The body of a regular file that reports size 0: files of `/proc` and `/sys` have
/// content all the same, so it is read, not trusted. Content up to [`UNSIZED_HEAD`]
/// goes out with its exact `Content-Length` (an empty file keeps `Content-Length: 0`);
/// more is streamed without a length.
async fn unsized_body(
    mut file: tokio::fs::File,
    path: &Path,
) -> Result<(Body, Option<u64>), FilesError> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    (&mut file)
        .take(UNSIZED_HEAD + 1)
        .read_to_end(&mut head)
        .await
        .map_err(|e| FilesError::Internal(format!("cannot read '{}': {e}", path.display())))?;
    if head.len() as u64 <= UNSIZED_HEAD {
        let length = head.len() as u64;
        return Ok((Body::from(head), Some(length)));
    }
    let rest = ReaderStream::with_capacity(file, 256 * 1024);
    let stream = futures_util::stream::once(async { Ok(Bytes::from(head)) }).chain(rest);
    Ok((Body::from_stream(stream), None))
}

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

fn decoded_body(headers: &HeaderMap, body: Body) -> Result<ByteStream, FilesError> {
    let raw = body.into_data_stream().map_err(io::Error::other);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(Box::pin(raw)),
        "gzip" | "x-gzip" => {
            let reader = GzipDecoder::new(StreamReader::new(raw));
            Ok(Box::pin(ReaderStream::with_capacity(reader, 256 * 1024)))
        }
        other => Err(FilesError::BadRequest(format!(
            "unsupported content encoding {other:?}"
        ))),
    }
}

/// `POST /files`: writes the body (octet-stream) or each `file` part (multipart).
pub async fn upload(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FilesQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, FilesError> {
    let q = query(q)?;
    let user = authorize(&s, &headers, &q, FileOp::Write)?;
    let limit = s.limits.max_upload;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let stream = decoded_body(&headers, body)?;
    let metadata = upload_metadata(&headers)?;
    let mut written = Vec::new();
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|e| FilesError::BadRequest(format!("invalid multipart content type: {e}")))?;
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(limit.saturating_add(1 << 20)));
        let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e, limit)),
            };
            if field.name() != Some("file") && field.file_name().is_none() {
                continue; // not a file part (e.g. a plain form field)
            }
            let target = match (&q.path, field.file_name()) {
                (Some(p), _) if !p.is_empty() => p.clone(),
                (_, Some(f)) if !f.is_empty() => f.to_string(),
                _ => {
                    return Err(FilesError::BadRequest(
                        "missing destination: give ?path= or a part filename".into(),
                    ))
                }
            };
            let path = resolve(&target, &user)?;
            let field_stream: ByteStream =
                Box::pin(field.map_err(|e| io::Error::other(MultipartIo(e))));
            written.push(write_file(&path, field_stream, &user, &metadata, limit).await?);
        }
        if written.is_empty() {
            return Err(FilesError::BadRequest(
                "multipart body has no file part".into(),
            ));
        }
    } else {
        let target = q
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| FilesError::BadRequest("path is required".into()))?;
        let path = resolve(&target, &user)?;
        written.push(write_file(&path, stream, &user, &metadata, limit).await?);
    }
    Ok(Json(written).into_response())
}

/// The `X-Metadata-<key>: <value>` headers of an upload: every file it writes gets
/// exactly this metadata (none clears what the file had).
fn upload_metadata(headers: &HeaderMap) -> Result<BTreeMap<String, String>, FilesError> {
    let mut metadata = BTreeMap::new();
    for (name, value) in headers {
        // A bare `X-Metadata-` names no key and is ignored, as envd does.
        let Some(key) = name
            .as_str()
            .strip_prefix("x-metadata-")
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            FilesError::BadRequest(format!(
                "invalid metadata: the value of header '{name}' is not text"
            ))
        })?;
        metadata.insert(key.to_owned(), value.to_owned());
    }
    fsys::validate_metadata(&metadata)
        .map_err(|e| FilesError::BadRequest(format!("invalid metadata: {e}")))?;
    Ok(metadata)
}

/// Wraps a multer error so it can travel through `io::Error` and be recognised again.
#[derive(Debug, Error)]
#[error(transparent)]
struct MultipartIo(multer::Error);

fn multipart_error(e: multer::Error, limit: u64) -> FilesError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            FilesError::TooLarge(limit)
        }
        e => FilesError::BadRequest(format!("invalid multipart body: {e}")),
    }
}

async fn write_file(
    path: &Path,
    mut data: ByteStream,
    user: &User,
    metadata: &BTreeMap<String, String>,
    limit: u64,
) -> Result<UploadedEntry, FilesError> {
    let (p, u) = (path.to_path_buf(), user.clone());
    tokio::task::spawn_blocking(move || match p.parent() {
        Some(parent) => fsys::create_dirs(parent, &u),
        None => Ok(()),
    })
    .await
    .map_err(|e| FilesError::Internal(format!("task failed: {e}")))??;
    if path.is_dir() {
        return Err(FilesError::BadRequest(format!(
            "path '{}' is a directory",
            path.display()
        )));
    }
    let io_err = |op: &'static str, e: io::Error| -> FilesError {
        FsError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        }
        .into()
    };
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .await
        .map_err(|e| io_err("open", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut total: u64 = 0;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(m) = e.get_ref().and_then(|r| r.downcast_ref::<MultipartIo>()) {
                return match &m.0 {
                    multer::Error::StreamSizeExceeded { .. } => FilesError::TooLarge(limit),
                    other => FilesError::BadRequest(format!("invalid multipart body: {other}")),
                };
            }
            FilesError::BadRequest(format!("cannot read request body: {e}"))
        })?;
        total += chunk.len() as u64;
        if total > limit {
            drop(out);
            let _ = tokio::fs::remove_file(path).await;
            return Err(FilesError::TooLarge(limit));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| io_err("write", e))?;
    }
    out.flush().await.map_err(|e| io_err("write", e))?;
    // No fsync, like envd: durability comes from the snapshot, which captures the
    // upper dir after the sandbox is frozen.
    let file = out.into_inner().into_std().await;
    let (p, u, m) = (path.to_path_buf(), user.clone(), metadata.clone());
    let stored = tokio::task::spawn_blocking(move || {
        fsys::chown(&p, &u)?;
        fsys::replace_metadata(&file, &p, &m)?;
        Ok::<_, FsError>(fsys::read_metadata(&p))
    })
    .await
    .map_err(|e| FilesError::Internal(format!("task failed: {e}")))??;
    Ok(UploadedEntry {
        path: path.to_string_lossy().into_owned(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        entry_type: UploadedType::File,
        // What the file holds now, read back: empty when the file system keeps none.
        metadata: (!stored.is_empty()).then_some(stored),
    })
}
