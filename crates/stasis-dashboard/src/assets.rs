//! The front-end bundle embedded at build time (see `build.rs`): `index.html` at
//! `/dashboard/`, everything else by its path below it. Vite names the files under
//! `assets/` by their content hash, so those are cached for good; `index.html` is
//! revalidated every time. Without a bundle, `/dashboard/` answers a page that says how
//! to build it.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

mod bundle {
    include!(concat!(env!("OUT_DIR"), "/bundle.rs"));
}

/// A set of files to serve: path below `/dashboard/`, contents.
#[derive(Debug, Clone, Copy)]
pub struct Assets(pub &'static [(&'static str, &'static [u8])]);

/// The bundle this binary was built with (empty when it was built without one).
pub const BUNDLE: Assets = Assets(bundle::FILES);

/// Who may load what: only this origin, no frames. Inline styles are allowed because
/// the terminal and the chart position their elements with them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Shown at `/dashboard/` when the binary has no bundle.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Stasis dashboard: not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto; line-height: 1.5">
<h1>The dashboard is not built into this server</h1>
<p>This <code>stasis</code> binary was compiled without the dashboard's front-end bundle.
Build the bundle (needs Node.js 20 and npm), then the server again, and restart it:</p>
<pre>scripts/build-dashboard.sh
cargo build -p stasis-cli</pre>
<p><code>scripts/serve.sh</code> does both. The control API works without the dashboard.</p>
</body></html>
"#;

impl Assets {
    /// Whether there is a bundle at all.
    pub fn is_built(&self) -> bool {
        self.get("index.html").is_some()
    }

    /// The contents of `path` (below `/dashboard/`).
    pub fn get(&self, path: &str) -> Option<&'static [u8]> {
        self.0.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
    }

    /// The answer for `/dashboard/` + `path` (`""` is the index).
    pub fn respond(&self, path: &str) -> Response {
        let path = if path.is_empty() { "index.html" } else { path };
        match self.get(path) {
            Some(body) => {
                let cache = if path.starts_with("assets/") {
                    "public, max-age=31536000, immutable"
                } else {
                    "no-cache"
                };
                let mut resp = (
                    [
                        (header::CONTENT_TYPE, content_type(path)),
                        (header::CACHE_CONTROL, cache),
                    ],
                    body,
                )
                    .into_response();
                harden(&mut resp);
                resp
            }
            None if path == "index.html" => {
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    NOT_BUILT,
                )
                    .into_response();
                harden(&mut resp);
                resp
            }
            None => (
                StatusCode::NOT_FOUND,
                crate::error_body(404, &format!("no such dashboard file: /dashboard/{path}")),
            )
                .into_response(),
        }
    }
}

fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The media type of a bundle file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /dashboard/`.
pub(crate) async fn index() -> Response {
    BUNDLE.respond("")
}

/// `GET /dashboard/{*path}`.
pub(crate) async fn file(Path(path): Path<String>) -> Response {
    BUNDLE.respond(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> String {
        let b = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        String::from_utf8(b.to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_missing_bundle_answers_a_page_that_says_how_to_build_it() {
        let none = Assets(&[]);
        assert!(!none.is_built());
        let resp = none.respond("");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(body(resp).await.contains("scripts/build-dashboard.sh"));
        assert_eq!(
            none.respond("assets/app.js").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn bundle_files_are_served_with_their_type_and_caching() {
        let built = Assets(&[
            ("index.html", b"<!doctype html><title>x</title>"),
            ("assets/index-abc123.js", b"console.log(1)"),
        ]);
        assert!(built.is_built());
        let index = built.respond("");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(index.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(body(index).await, "<!doctype html><title>x</title>");
        let js = built.respond("assets/index-abc123.js");
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(js.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert_eq!(
            built.respond("assets/nope.js").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            built.respond("../catalog.db").status(),
            StatusCode::NOT_FOUND
        );
    }
}
