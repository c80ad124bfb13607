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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::storage::Retention;
    use tokio::io::AsyncWriteExt;

    /// Sends `request_line` as written (no client normalises the path) and returns the status,
    /// the headers (lowercase names) and the body.
    async fn raw(
        addr: std::net::SocketAddr,
        method: &str,
        target: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(buf[..split].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_lowercase(), v.to_string()))
            .collect();
        (status, headers, buf[split + 4..].to_vec())
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn serves_artifacts_and_nothing_else() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(parent.path().join("secret"), "outside").unwrap();
        let s = Storage::new(&root, "h", Retention::default());
        let a = s
            .store_bytes("GitRepository", "ns", "app", "abc.tar.gz", b"artifact")
            .unwrap();
        s.store_bytes("OCIRepository", "ns", "o", "sha256:ab.tar.gz", b"oci")
            .unwrap();
        s.symlink("GitRepository", "ns", "app", "abc.tar.gz", "latest.tar.gz")
            .unwrap();
        let dir = root.join("gitrepository/ns/app");
        std::fs::write(dir.join(".tmp-half"), "half").unwrap();
        std::os::unix::fs::symlink("../../../../secret", dir.join("escape.tar.gz")).unwrap();
        std::fs::create_dir(dir.join("subdir")).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, s.routes()).into_future());

        let (status, h, body) = raw(addr, "GET", &format!("/{}", a.path)).await;
        assert_eq!(status, 200);
        assert_eq!(body, b"artifact");
        assert_eq!(header(&h, "content-length"), Some("8"));
        assert_eq!(header(&h, "content-type"), Some("application/gzip"));

        let (status, h, body) = raw(addr, "HEAD", &format!("/{}", a.path)).await;
        assert_eq!((status, header(&h, "content-length")), (200, Some("8")));
        assert!(body.is_empty());

        let (status, _, body) = raw(addr, "GET", "/gitrepository/ns/app/latest.tar.gz").await;
        assert_eq!((status, body.as_slice()), (200, b"artifact".as_slice()));
        let (status, _, body) = raw(addr, "GET", "/ocirepository/ns/o/sha256:ab.tar.gz").await;
        assert_eq!((status, body.as_slice()), (200, b"oci".as_slice()));

        for target in [
            "/gitrepository/ns/app/missing.tar.gz",
            "/gitrepository/ns/app/.tmp-half",
            "/gitrepository/ns/app/escape.tar.gz",
            "/gitrepository/ns/app/subdir",
            "/gitrepository/ns/app/",
            "/gitrepository/ns/app",
            "/gitrepository/ns/app/../../../../secret",
            "/../../../secret",
            "/../secret/x/y",
            "/gitrepository/ns/%2e%2e/%2e%2e",
            "/%2e%2e/%2e%2e/%2e%2e/secret",
            "/gitrepository/ns/app/..%2f..%2f..%2f..%2fsecret",
            "/gitrepository/ns/app/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret",
            "/gitrepository/ns/app/abc.tar.gz%00",
            "/",
        ] {
            let (status, _, body) = raw(addr, "GET", target).await;
            assert_eq!(status, 404, "{target}");
            assert!(!body.windows(7).any(|w| w == b"outside"), "{target}");
        }
        server.abort();
    }
}
