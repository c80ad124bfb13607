//! A private OCI registry on loopback: the same `registry` binary (distribution v3) that
//! `e2e/cluster up` starts, run by the test on a free port with its own storage, optionally
//! behind htpasswd basic auth (which the shared one has not). Plain HTTP, so clients need their
//! insecure option (`flux push artifact --insecure-registry`, OCIRepository `insecure: true`).
//!
//! ```ignore
//! let reg = Registry::start(Some(REGISTRY_USER));   // 401 without ociuser / s3cret-oci
//! let url = format!("oci://{}/team/app", reg.addr);
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{flux, free_port, run, tool};

/// The user of an authenticated [`Registry`]: `(username, password)`.
pub const REGISTRY_USER: (&str, &str) = ("ociuser", "s3cret-oci");
/// bcrypt (cost 5) of [`REGISTRY_USER`]'s password, the only hash distribution's htpasswd reads;
/// made once with `crypt(3)` so tests need no htpasswd tool.
const REGISTRY_USER_BCRYPT: &str = "$2b$05$dty8JjWCXtTRCUWGv7YzSePVb1FdmBS/q4rCq5XfZjQgvOy8K97Oy";

/// The `service` a token-auth [`Registry`] announces and its tokens are for.
pub const TOKEN_SERVICE: &str = "pennant-test-registry";

/// A running registry; dropping it stops the process and removes its storage.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
    child: Child,
    /// With token auth: the token server's requests (`service=…&scope=… <status>`).
    token_requests: Arc<Mutex<Vec<String>>>,
    token_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The `registry` binary built by `e2e/cluster build`: `$PENNANT_REGISTRY`, else the cache.
pub fn registry_bin() -> String {
    tool("PENNANT_REGISTRY", "registry")
}

impl Registry {
    /// Start a registry; with `basic_auth` (must be [`REGISTRY_USER`]) every request without
    /// those credentials gets 401 `WWW-Authenticate: Basic`. Waits until `/v2/` answers.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Registry {
        Registry::start_with(basic_auth.map(Auth::Htpasswd))
    }

    /// Start a registry with the Docker token flow, as Docker Hub, GHCR or Harbor run it: the
    /// registry answers `401 WWW-Authenticate: Bearer realm=<token server>,service=
    /// TOKEN_SERVICE`, and a token server (an axum app of this test) gives a JWT to a GET with
    /// [`REGISTRY_USER`]'s basic auth (401 otherwise). The JWT is RS256, signed with `openssl`
    /// by a self-signed CA the registry trusts (`rootcertbundle`, the `x5c` header), granting
    /// pull and push on `repository`.
    ///
    /// It serves the storage of `twin` (an anonymous registry, to push to): the `flux` CLI
    /// refuses a token realm on a private address ("realm host is a private or link-local
    /// address"), so it cannot push through this one.
    pub fn start_token(repository: &str, twin: &Registry) -> Registry {
        Registry::start_with(Some(Auth::Token(repository, twin.dir.join("storage"))))
    }

    /// Start a registry speaking HTTPS only, with a server certificate for 127.0.0.1 from a
    /// fresh CA, and requiring a client certificate from that CA (mutual TLS), serving the
    /// storage of `twin` (an anonymous registry to push to). Returns the registry and the PEM
    /// files `(ca.crt, client tls.crt, client tls.key)`: a `certSecretRef`'s content.
    pub fn start_mtls(twin: &Registry) -> (Registry, (PathBuf, PathBuf, PathBuf)) {
        let reg = Registry::start_with(Some(Auth::MutualTls(twin.dir.join("storage"))));
        let d = &reg.dir;
        let files = (d.join("ca.crt"), d.join("client.crt"), d.join("client.key"));
        (reg, files)
    }

    /// The token server's requests so far, `"<query> <status>"`.
    pub fn token_requests(&self) -> Vec<String> {
        self.token_requests.lock().unwrap().clone()
    }

    fn start_with(auth: Option<Auth<'_>>) -> Registry {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pennant-registry-{}-{port}", std::process::id()));
        let storage = match &auth {
            Some(Auth::Token(_, storage) | Auth::MutualTls(storage)) => storage.clone(),
            _ => dir.join("storage"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: pennant-test-only\n",
            storage.display()
        );
        if let Some(Auth::MutualTls(_)) = &auth {
            std::fs::create_dir_all(&dir).unwrap();
            let (ca, crt, key) = make_mtls(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                crt.display(),
                key.display(),
                ca.display()
            ));
        }
        let token_requests = Arc::new(Mutex::new(Vec::new()));
        let mut token_shutdown = None;
        if let Some(Auth::Token(repository, _)) = &auth {
            let (realm, tx) = token_server(&dir, repository, token_requests.clone());
            token_shutdown = Some(tx);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: pennant-test-issuer\n    rootcertbundle: {}\n",
                dir.join("token-ca.crt").display()
            ));
        }
        if let Some(Auth::Htpasswd(user)) = &auth {
            let user = *user;
            assert_eq!(user, REGISTRY_USER, "only REGISTRY_USER has a hash");
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{}:{REGISTRY_USER_BCRYPT}\n", user.0)).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pennant-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(registry_bin())
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `e2e/cluster build`)", registry_bin()));
        let reg = Registry {
            addr: format!("127.0.0.1:{port}"),
            dir,
            child,
            token_requests,
            token_shutdown,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&reg.addr).is_ok() {
                return reg;
            }
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(reg.dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Registry {
    /// The request lines of the access log so far (`"GET /v2/…/blobs/sha256:… HTTP/1.1" 200`
    /// …), oldest first: lets a test check what a client downloaded.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(tx) = self.token_shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Auth<'a> {
    Htpasswd((&'a str, &'a str)),
    /// The repository the token grants, the storage directory served.
    Token(&'a str, PathBuf),
    /// HTTPS with client certificates; the storage directory served.
    MutualTls(PathBuf),
}

/// Makes the CA and one long-lived token (openssl), serves it on a free port from a thread of
/// its own; returns the realm URL and the shutdown sender.
fn token_server(
    dir: &Path,
    repository: &str,
    log: Arc<Mutex<Vec<String>>>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use base64::Engine;
    let (b64, b64url) = (
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    );
    let (key, crt) = (dir.join("token-ca.key"), dir.join("token-ca.crt"));
    super::run(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=pennant-test-token-ca", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&crt)
        .output()
        .unwrap()
        .stdout;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [b64.encode(&der)]});
    let claims = serde_json::json!({
        "iss": "pennant-test-issuer", "sub": REGISTRY_USER.0, "aud": TOKEN_SERVICE,
        "iat": now, "nbf": now - 60, "exp": now + 7200, "jti": format!("t{now}"),
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        b64url.encode(header.to_string()),
        b64url.encode(claims.to_string())
    );
    let input_file = dir.join("token.input");
    std::fs::write(&input_file, &signing_input).unwrap();
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&input_file)
        .output()
        .unwrap()
        .stdout;
    let token = format!("{signing_input}.{}", b64url.encode(sig));
    let expected = format!(
        "Basic {}",
        b64.encode(format!("{}:{}", REGISTRY_USER.0, REGISTRY_USER.1))
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use axum::http::{StatusCode, header};
            use axum::response::IntoResponse;
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/token",
                axum::routing::get(move |req: axum::extract::Request| {
                    let (token, expected, log) = (token.clone(), expected.clone(), log.clone());
                    async move {
                        let ok = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            == Some(expected.as_str());
                        let query = req.uri().query().unwrap_or_default().to_string();
                        let resp = if ok {
                            axum::Json(serde_json::json!({"token": token, "expires_in": 7200}))
                                .into_response()
                        } else {
                            StatusCode::UNAUTHORIZED.into_response()
                        };
                        log.lock()
                            .unwrap()
                            .push(format!("{query} {}", resp.status().as_u16()));
                        resp
                    }
                }),
            );
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
    });
    (realm, tx)
}

/// [`super::gitserver::make_tls`] (a CA, a server certificate for 127.0.0.1) plus a client
/// certificate from the same CA in `dir`: `client.crt`, `client.key`. Returns `(ca.crt,
/// server.crt, server.key)`.
pub fn make_mtls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, crt, key) = super::gitserver::make_tls(dir);
    let ossl = |args: &[&str]| {
        super::run(Command::new("openssl").args(args).current_dir(dir));
    };
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=pennant-client",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
        "-out",
        "client.crt",
    ]);
    (ca, crt, key)
}

/// Writes a two-file tree whose content names `tag` (`apps/cm.yaml` has `version: <tag>`),
/// pushes it with the real `flux push artifact` to `oci://<addr>/<repo>:<tag>` (`--creds
/// user:password` when given); returns the pushed manifest digest.
pub fn flux_push(addr: &str, repo: &str, tag: &str, dir: &Path, creds: Option<&str>) -> String {
    flux_push_version(addr, repo, tag, tag, dir, creds)
}

/// [`flux_push`] with the content's `version` chosen apart from the tag (a tag re-pushed with
/// new content).
pub fn flux_push_version(
    addr: &str,
    repo: &str,
    tag: &str,
    version: &str,
    dir: &Path,
    creds: Option<&str>,
) -> String {
    let src = dir.join(format!("src-{tag}-{version}"));
    std::fs::create_dir_all(src.join("apps")).unwrap();
    std::fs::write(
        src.join("kustomization.yaml"),
        "resources:\n- apps/cm.yaml\n",
    )
    .unwrap();
    std::fs::write(
        src.join("apps/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  version: {version}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(flux());
    cmd.args([
        "push",
        "artifact",
        &format!("oci://{addr}/{repo}:{tag}"),
        &format!("--path={}", src.display()),
        "--source=https://git.example.com/fleet.git",
        &format!("--revision={tag}@sha1:0123456789abcdef0123456789abcdef01234567"),
        "--insecure-registry",
        "--output=json",
    ]);
    if let Some(c) = creds {
        cmd.arg(format!("--creds={c}"));
    }
    let pushed: serde_json::Value =
        serde_json::from_str(&run(&mut cmd)).expect("flux push -o json");
    pushed["digest"].as_str().unwrap().to_string()
}
