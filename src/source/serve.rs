//! Serving the storage over HTTP: `GET`/`HEAD /<kind>/<ns>/<name>/<file>`, what consumers fetch
//! from `status.artifact.url` (Flux's artifact file server, `fluxcd/pkg/artifact/server`).
//!
//! Unlike Go's `http.FileServer` it serves artifacts only: exactly four plain path components,
//! no directory listing, no hidden (temp) files, nothing that resolves outside the root (a
//! `latest.tar.gz` symlink is followed only to a file inside it). Everything else is 404.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;

use super::storage::{Storage, valid_component, valid_file_name};

impl Storage {
    /// The routes serving this storage's artifacts, for the process's HTTP server (the
    /// controller adds them; Flux serves on `--storage-addr`). Responses carry
    /// `Content-Length`; HEAD answers the same headers without the body.
    pub fn routes(&self) -> Router {
        let root = Arc::new(self.root.clone());
        Router::new()
            .route("/{kind}/{ns}/{name}/{file}", get(serve))
            .with_state(root)
    }
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

async fn serve(
    State(root): State<Arc<PathBuf>>,
    Path((kind, ns, name, file)): Path<(String, String, String, String)>,
) -> Response {
    if ![&kind, &ns, &name].iter().all(|c| valid_component(c)) || !valid_file_name(&file) {
        return not_found();
    }
    let path = root.join(&kind).join(&ns).join(&name).join(&file);
    let Ok(real) = tokio::fs::canonicalize(&path).await else {
        return not_found();
    };
    let Ok(real_root) = tokio::fs::canonicalize(root.as_path()).await else {
        return not_found();
    };
    let hidden = real
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    if !real.starts_with(&real_root) || hidden {
        return not_found();
    }
    let Ok(f) = tokio::fs::File::open(&real).await else {
        return not_found();
    };
    let Ok(meta) = f.metadata().await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let len = meta.len();
    let content_type = if file.ends_with(".gz") || file.ends_with(".tgz") {
        "application/gzip"
    } else if file.ends_with(".yaml") || file.ends_with(".yml") {
        "application/x-yaml"
    } else {
        "application/octet-stream"
    };
    // Stream what the header promised: at most `len` bytes, even if the file changes.
    let body = futures::stream::unfold((f, len), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (f, left - n as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    (
        [
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_TYPE, content_type.to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
