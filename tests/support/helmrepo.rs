//! A real Helm chart repository on loopback, made the way users make one: charts packaged by
//! the real `helm package`, `index.yaml` written by `helm repo index --url`, the directory served
//! over plain HTTP, optionally behind basic auth. For HelmRepository (`type: default`) and
//! HelmChart tests; `helm repo add` / `helm pull` read it (tests/e2e_tools.rs proves it).
//!
//! ```ignore
//! let repo = HelmRepo::start(Some(("user", "pass")));
//! repo.add_chart("podinfo", "6.5.0");          // podinfo-6.5.0.tgz + a fresh index.yaml
//! // HelmRepository spec.url = repo.url, secretRef with username/password
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{helm, run};

/// A served chart repository. Dropping it stops the server and deletes its directory.
pub struct HelmRepo {
    /// `http://127.0.0.1:<port>` without a trailing slash: a HelmRepository's `spec.url`, and
    /// the `--url` the index's chart URLs are made from.
    pub url: String,
    /// The served directory: `<name>-<version>.tgz` files and `index.yaml`.
    pub dir: PathBuf,
    /// Scratch space: chart sources and an isolated Helm home (see [`helm_in`]).
    pub work: PathBuf,
    served: Arc<Served>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Served {
    dir: PathBuf,
    /// The whole expected `Authorization` header value, `Basic <base64(user:pass)>`.
    authorization: Option<String>,
    requests: Mutex<Vec<String>>,
}

impl HelmRepo {
    /// Serve a new, empty repository (an `index.yaml` with no entries) on a free loopback port,
    /// from a thread of its own (so sync and async tests alike can use it). With
    /// `basic_auth = Some((user, password))` every request without exactly those credentials
    /// gets 401 with `WWW-Authenticate: Basic`.
    pub fn start(basic_auth: Option<(&str, &str)>) -> HelmRepo {
        let root = std::env::temp_dir().join(format!(
            "pennant-helmrepo-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        let dir = root.join("repo");
        let work = root.join("work");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let served = Arc::new(Served {
            dir: dir.clone(),
            authorization: basic_auth
                .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            requests: Mutex::new(Vec::new()),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = served.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(serve).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        let repo = HelmRepo {
            url: format!("http://{addr}"),
            dir,
            work,
            served,
            shutdown: Some(tx),
        };
        repo.reindex();
        repo
    }

    /// Write a small chart `name` at `version` (appVersion the same): `values.yaml` with
    /// `message: hello`, and one template, a ConfigMap `<release>-<name>` whose data holds
    /// `message` and `chartVersion`. Then package and re-index; returns the `.tgz` path.
    pub fn add_chart(&self, name: &str, version: &str) -> PathBuf {
        let src = self.work.join("charts").join(format!("{name}-{version}"));
        std::fs::create_dir_all(src.join("templates")).unwrap();
        std::fs::write(
            src.join("Chart.yaml"),
            format!(
                "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\n\
                 description: test chart made by tests/support/helmrepo.rs\ntype: application\n"
            ),
        )
        .unwrap();
        std::fs::write(src.join("values.yaml"), "message: hello\n").unwrap();
        std::fs::write(
            src.join("templates/configmap.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-{{ .Chart.Name }}\n\
             data:\n  message: {{ .Values.message | quote }}\n  chartVersion: {{ .Chart.Version | quote }}\n",
        )
        .unwrap();
        self.add_chart_dir(&src)
    }

    /// `helm package` an existing chart directory into the repository and re-index; returns
    /// the `.tgz` path (`<name>-<version>.tgz`, Helm's name).
    pub fn add_chart_dir(&self, chart: &Path) -> PathBuf {
        let out = run(helm_in(&self.work)
            .arg("package")
            .arg(chart)
            .arg("--destination")
            .arg(&self.dir));
        self.reindex();
        // "Successfully packaged chart and saved it to: <path>"
        let path = out.trim().rsplit(": ").next().unwrap_or_default();
        PathBuf::from(path)
    }

    /// Rewrite `index.yaml` from the `.tgz` files in [`HelmRepo::dir`] with `helm repo index
    /// --url`, so every entry's URL is absolute on this server (as on a hosted repository).
    pub fn reindex(&self) {
        run(helm_in(&self.work)
            .args(["repo", "index"])
            .arg(&self.dir)
            .args(["--url", &self.url]));
    }

    /// Every request served so far, as `"<METHOD> <path> <status>"` (e.g.
    /// `"GET /index.yaml 200"`), oldest first: lets a test check what a client fetched.
    pub fn requests(&self) -> Vec<String> {
        self.served.requests.lock().unwrap().clone()
    }
}

impl Drop for HelmRepo {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// The real `helm` (see [`helm`]) with its config, cache and data homes under `home`, so a
/// test's `helm repo add` never touches the user's Helm setup or another test's.
pub fn helm_in(home: &Path) -> Command {
    let mut cmd = Command::new(helm());
    cmd.env("HELM_CONFIG_HOME", home.join("helm/config"))
        .env("HELM_CACHE_HOME", home.join("helm/cache"))
        .env("HELM_DATA_HOME", home.join("helm/data"));
    cmd
}

async fn serve(State(st): State<Arc<Served>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let response = if let Some(expected) = &st.authorization
        && req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(expected.as_str())
    {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"helm\"")],
        )
            .into_response()
    } else {
        let rel = path.trim_start_matches('/');
        let safe = !rel.is_empty() && rel.split('/').all(|c| !c.is_empty() && c != "..");
        match safe {
            true => match tokio::fs::read(st.dir.join(rel)).await {
                Ok(body) => {
                    let kind = if rel.ends_with(".tgz") {
                        "application/gzip"
                    } else {
                        "text/yaml"
                    };
                    ([(header::CONTENT_TYPE, kind)], body).into_response()
                }
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            },
            false => StatusCode::NOT_FOUND.into_response(),
        }
    };
    st.requests.lock().unwrap().push(format!(
        "{} {path} {}",
        req.method(),
        response.status().as_u16()
    ));
    response
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
