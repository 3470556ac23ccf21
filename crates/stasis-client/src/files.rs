//! `sandbox.files()`: the sandbox's filesystem (envd's `/files` and
//! `filesystem.Filesystem`).
//!
//! Relative paths resolve against the user's home (`/home/user`).

use std::time::Duration;

use reqwest::Method;
use stasis_envd_proto::filesystem::{
    EntryResponse, ListDirRequest, ListDirResponse, MoveRequest, PathRequest, WatchDirRequest,
    WatchDirResponse,
};
use stasis_envd_proto::http::UploadedEntry;
use stasis_envd_proto::process::Empty;
use tokio::task::JoinHandle;

use crate::envd::Envd;
use crate::error::{Error, Result};

pub use stasis_envd_proto::filesystem::{EntryInfo, EventType, FileType, FilesystemEvent};
pub use stasis_envd_proto::http::UploadedEntry as WriteInfo;

/// The filesystem of one sandbox.
#[derive(Clone, Debug)]
pub struct Files {
    pub(crate) envd: Envd,
    pub(crate) user: Option<String>,
}

impl Files {
    /// The same filesystem, accessed as `user` (file ownership and home directory).
    pub fn as_user(&self, user: impl Into<String>) -> Files {
        Files {
            envd: self.envd.clone(),
            user: Some(user.into()),
        }
    }

    fn files_request(&self, method: Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let (url, mut req) = self
            .envd
            .request(stasis_e2b_api::ENVD_PORT, method, "/files");
        req = req.query(&[("path", path)]);
        if let Some(u) = &self.user {
            req = req.query(&[("username", u.as_str())]);
        }
        (url, req)
    }

    /// Reads a file as bytes.
    pub async fn read_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let timeout = self.envd.client.config().request_timeout;
        let (url, req) = self.files_request(Method::GET, path);
        let resp = req
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::transport(&url, "read", timeout, e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&url, "read", timeout, e))?;
        if !status.is_success() {
            return Err(self.envd.sandbox_error(status, &body, Some(path)));
        }
        Ok(body.to_vec())
    }

    /// Reads a file as text (invalid UTF-8 is replaced).
    pub async fn read(&self, path: &str) -> Result<String> {
        let bytes = self.read_bytes(path).await?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Writes a file, creating parent directories and replacing what was there.
    pub async fn write(&self, path: &str, data: impl Into<Vec<u8>>) -> Result<WriteInfo> {
        let timeout = self.envd.client.config().request_timeout;
        let (url, req) = self.files_request(Method::POST, path);
        let resp = req
            .header("Content-Type", "application/octet-stream")
            .body(data.into())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::transport(&url, "write", timeout, e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&url, "write", timeout, e))?;
        if !status.is_success() {
            return Err(self.envd.sandbox_error(status, &body, Some(path)));
        }
        let mut written: Vec<UploadedEntry> =
            serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                message: format!("unexpected answer to a write of {path}: {e}"),
            })?;
        if written.is_empty() {
            return Err(Error::Protocol {
                message: format!("the write of {path} reported no file"),
            });
        }
        Ok(written.remove(0))
    }

    /// The entries of a directory (one level).
    pub async fn list(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let r: ListDirResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/ListDir",
                &ListDirRequest {
                    path: path.into(),
                    depth: 1,
                },
                self.user.as_deref(),
                Some(path),
            )
            .await?;
        Ok(r.entries)
    }

    /// Information about one path.
    pub async fn get_info(&self, path: &str) -> Result<EntryInfo> {
        let r: EntryResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/Stat",
                &PathRequest { path: path.into() },
                self.user.as_deref(),
                Some(path),
            )
            .await?;
        r.entry.ok_or_else(|| Error::Protocol {
            message: format!("stat of {path} returned no entry"),
        })
    }

    /// Whether a path exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.get_info(path).await {
            Ok(_) => Ok(true),
            Err(Error::FileNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a file or a directory tree.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let _: Empty = self
            .envd
            .unary(
                "/filesystem.Filesystem/Remove",
                &PathRequest { path: path.into() },
                self.user.as_deref(),
                Some(path),
            )
            .await?;
        Ok(())
    }

    /// Renames (moves) a path; returns the entry at its new place.
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let r: EntryResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/Move",
                &MoveRequest {
                    source: from.into(),
                    destination: to.into(),
                },
                self.user.as_deref(),
                Some(from),
            )
            .await?;
        r.entry.ok_or_else(|| Error::Protocol {
            message: format!("move of {from} returned no entry"),
        })
    }

    /// Creates a directory and its parents. `Ok(false)` if it already existed.
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let r: Result<EntryResponse> = self
            .envd
            .unary(
                "/filesystem.Filesystem/MakeDir",
                &PathRequest { path: path.into() },
                self.user.as_deref(),
                Some(path),
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(Error::Rpc {
                code: stasis_envd_proto::error::Code::AlreadyExists,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Watches a directory; `on_event` gets every change until the handle is stopped or
    /// dropped. Returns once the watch is in place.
    pub async fn watch_dir(
        &self,
        path: &str,
        recursive: bool,
        mut on_event: impl FnMut(FilesystemEvent) + Send + 'static,
    ) -> Result<WatchHandle> {
        let req = WatchDirRequest {
            path: path.into(),
            recursive,
            include_entry: false,
            allow_network_mounts: false,
        };
        let mut stream = self
            .envd
            .stream(
                "/filesystem.Filesystem/WatchDir",
                &req,
                self.user.as_deref(),
                None,
            )
            .await
            .map_err(|e| match e {
                Error::NotFound { message } => Error::FileNotFound {
                    path: path.to_owned(),
                    message,
                },
                e => e,
            })?;
        match stream.next::<WatchDirResponse>().await? {
            Some(WatchDirResponse::Start(_)) => {}
            other => {
                return Err(Error::Protocol {
                    message: format!("expected the watch's start event, got {other:?}"),
                })
            }
        }
        let task = tokio::spawn(async move {
            loop {
                match stream.next::<WatchDirResponse>().await? {
                    Some(WatchDirResponse::Filesystem(ev)) => on_event(ev),
                    Some(_) => {}
                    None => return Ok(()),
                }
            }
        });
        Ok(WatchHandle { task: Some(task) })
    }
}

/// A directory watch; stopped by [`WatchHandle::stop`] or on drop.
#[derive(Debug)]
pub struct WatchHandle {
    task: Option<JoinHandle<Result<()>>>,
}

impl WatchHandle {
    /// Stops watching.
    pub fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Whether the watch ended by itself (the directory went away or the sandbox
    /// stopped), with its error if it failed; `None` while it runs.
    pub async fn ended(&mut self, within: Duration) -> Option<Result<()>> {
        let t = self.task.as_mut()?;
        match tokio::time::timeout(within, t).await {
            Err(_) => None,
            Ok(Ok(r)) => {
                self.task = None;
                Some(r)
            }
            Ok(Err(e)) => {
                self.task = None;
                Some(Err(Error::Protocol {
                    message: format!("the watch task failed: {e}"),
                }))
            }
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
