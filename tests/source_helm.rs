//! `pennant::source::helm_index` against a real Helm repository (charts packaged by the real
//! `helm`, `index.yaml` from `helm repo index`, served with basic auth by
//! `tests/support/helmrepo.rs`): index download and revision, parse once per revision, version
//! selection per constraint, chart download with digest check and package check, credentials
//! only to the repository's host unless passCredentials, a wrong password, a large index.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use pennant::source::artifact::sha256_digest;
use pennant::source::helm_index::{
    ChartRepo, DEFAULT_MAX_CHART_FILE_SIZE, DEFAULT_MAX_CHART_SIZE, DEFAULT_MAX_INDEX_SIZE,
    HelmAuth, IndexCache, IndexFetched, IndexLimits, check_chart, parse_index,
};
use pennant::source::http::TlsConfig;
use support::big_index::write_big_index;
use support::free_port;
use support::helmrepo::HelmRepo;

const USER: (&str, &str) = ("chartuser", "s3cret:pw");

fn auth((username, password): (&str, &str)) -> HelmAuth {
    HelmAuth::Basic {
        username: username.into(),
        password: password.into(),
    }
}

fn repo_client(url: &str, a: HelmAuth, pass_credentials: bool) -> ChartRepo {
    ChartRepo::new(
        url,
        a,
        &TlsConfig::default(),
        Duration::from_secs(20),
        pass_credentials,
    )
    .unwrap()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "pennant-source-helm-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn index_selection_and_chart_download_from_a_real_helm_repository() {
    let repo = HelmRepo::start(Some(USER));
    for v in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        repo.add_chart("app", v);
    }
    repo.add_chart("other", "0.1.0");
    let tmp = Scratch::new("index");

    // The index: revision is the sha256 of the served file.
    let client = repo_client(&repo.url, auth(USER), false);
    let dest = tmp.0.join("index.yaml");
    let fetched = client
        .fetch_index(&dest, DEFAULT_MAX_INDEX_SIZE, None)
        .await
        .unwrap();
    let served = std::fs::read(repo.dir.join("index.yaml")).unwrap();
    let revision = sha256_digest(served.as_slice()).unwrap();
    assert_eq!(fetched.revision(), revision);
    assert!(
        matches!(fetched, IndexFetched::Downloaded { size, .. } if size == served.len() as u64)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), served);

    // An index over the size limit stops the download; nothing is left at dest.
    let e = client
        .fetch_index(&tmp.0.join("small.yaml"), 64, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "IndexationFailed");
    assert!(e.to_string().contains("limit of 64 bytes"), "{e}");
    assert!(!tmp.0.join("small.yaml").exists());

    // Parsed once per revision; every chart selects from the same parse.
    let cache = IndexCache::new(4);
    let limits = IndexLimits::default();
    let (index, parsed) = cache.get_or_parse(&revision, &dest, &limits).unwrap();
    assert!(parsed);
    assert_eq!((index.charts(), index.versions()), (2, 4));
    let (again, parsed) = cache.get_or_parse(&revision, &dest, &limits).unwrap();
    assert!(!parsed);
    assert!(std::sync::Arc::ptr_eq(&index, &again));

    for (constraint, want) in [
        ("", "1.1.0"),
        ("*", "1.1.0"),
        ("1.0.x", "1.0.0"),
        ("~1.0", "1.0.0"),
        (">=1.0.0 <2.0.0", "1.1.0"),
        (">=2.0.0-0", "2.0.0-rc.1"),
        ("2.0.0-rc.1", "2.0.0-rc.1"),
        ("<1.1 || >=3", "1.0.0"),
    ] {
        assert_eq!(
            index.select("app", constraint).unwrap().version,
            want,
            "{constraint:?}"
        );
    }
    let e = index.select("app", ">=3.0.0").unwrap_err();
    assert_eq!(e.reason(), "InvalidChartReference");

    // The package: digest checked against the index, then read as a chart.
    let chosen = index.select("app", "*").unwrap();
    assert!(chosen.digest.is_some(), "helm repo index writes digests");
    let tgz = tmp.0.join("app-1.1.0.tgz");
    let got = client
        .download_chart(chosen, &tgz, DEFAULT_MAX_CHART_SIZE)
        .await
        .unwrap();
    let want = std::fs::read(repo.dir.join("app-1.1.0.tgz")).unwrap();
    assert_eq!(got.size, want.len() as u64);
    assert_eq!(std::fs::read(&tgz).unwrap(), want);
    let meta = check_chart(&tgz, DEFAULT_MAX_CHART_FILE_SIZE).unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.version.as_str(), meta.files),
        ("app", "1.1.0", 3)
    );

    // A digest in the index that does not match the package: refused, nothing kept.
    let mut tampered = chosen.clone();
    tampered.digest = Some("00".repeat(32));
    let bad = tmp.0.join("tampered.tgz");
    let e = client
        .download_chart(&tampered, &bad, DEFAULT_MAX_CHART_SIZE)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "ChartPullError");
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert!(!bad.exists());

    // A package over the size limit stops the download.
    let e = client
        .download_chart(chosen, &tmp.0.join("small.tgz"), 100)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("limit of 100 bytes"), "{e}");

    // Not a chart: a gzip tarball without Chart.yaml.
    let not_chart = tmp.0.join("not-chart.tgz");
    let src = tmp.0.join("nc/app");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("values.yaml"), "a: 1\n").unwrap();
    support::run(
        std::process::Command::new("tar")
            .arg("-czf")
            .arg(&not_chart)
            .arg("-C")
            .arg(tmp.0.join("nc"))
            .arg("app"),
    );
    let e = check_chart(&not_chart, DEFAULT_MAX_CHART_FILE_SIZE).unwrap_err();
    assert!(e.to_string().contains("Chart.yaml file is missing"), "{e}");

    let log = repo.requests();
    assert!(log.contains(&"GET /index.yaml 200".to_string()), "{log:?}");
    assert!(
        log.contains(&"GET /app-1.1.0.tgz 200".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn wrong_or_missing_password_is_authentication_failed_without_the_password() {
    let repo = HelmRepo::start(Some(USER));
    repo.add_chart("app", "1.0.0");
    let tmp = Scratch::new("auth");
    for a in [auth(("chartuser", "wrong-pass-123")), HelmAuth::None] {
        let e = repo_client(&repo.url, a, false)
            .fetch_index(&tmp.0.join("index.yaml"), DEFAULT_MAX_INDEX_SIZE, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
        assert!(e.to_string().contains("401"), "{e}");
        assert!(!e.to_string().contains("wrong-pass-123"), "{e}");
    }
    assert!(!tmp.0.join("index.yaml").exists());
}

#[tokio::test]
async fn credentials_go_to_chart_urls_on_other_hosts_only_with_pass_credentials() {
    // The index is served by `front`; its chart URLs point at `cdn` (another port: another
    // host for Helm's rule), which wants the same credentials.
    let front = HelmRepo::start(Some(USER));
    let cdn = HelmRepo::start(Some(USER));
    cdn.add_chart("app", "1.0.0");
    std::fs::copy(cdn.dir.join("index.yaml"), front.dir.join("index.yaml")).unwrap();
    let tmp = Scratch::new("pass");

    for pass in [false, true] {
        let client = repo_client(&front.url, auth(USER), pass);
        let dest = tmp.0.join(format!("index-{pass}.yaml"));
        client
            .fetch_index(&dest, DEFAULT_MAX_INDEX_SIZE, None)
            .await
            .unwrap();
        let index = parse_index(&dest, &IndexLimits::default()).unwrap();
        let chart = index.select("app", "1.0.0").unwrap();
        assert!(chart.urls[0].starts_with(&cdn.url), "{chart:?}");
        let r = client
            .download_chart(chart, &tmp.0.join("app.tgz"), DEFAULT_MAX_CHART_SIZE)
            .await;
        match pass {
            false => assert_eq!(r.unwrap_err().reason(), "AuthenticationFailed"),
            true => assert!(r.is_ok(), "{r:?}"),
        }
    }
    let log = cdn.requests();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("GET /app-1.0.0.tgz"))
            .cloned()
            .collect::<Vec<_>>(),
        ["GET /app-1.0.0.tgz 401", "GET /app-1.0.0.tgz 200"]
    );
}

#[test]
fn a_large_index_is_parsed_into_its_versions_only() {
    // ~25 MB, 24 000 versions of 40 charts; the 100 MB run with peak RSS is
    // `e2e/bench-helm-index` (not a test).
    let tmp = Scratch::new("big");
    let path = tmp.0.join("index.yaml");
    let size = write_big_index(&path, 40, 600);
    assert!(size > 20 << 20, "{size}");
    let limits = IndexLimits {
        max_size: 64 << 20,
        ..IndexLimits::default()
    };
    let cache = IndexCache::new(2);
    let (index, parsed) = cache.get_or_parse("sha256:big", &path, &limits).unwrap();
    assert!(parsed);
    assert_eq!((index.charts(), index.versions()), (40, 24_000));
    assert_eq!(index.select("chart-7", "*").unwrap().version, "5.99.0");
    assert_eq!(index.select("chart-7", "~2.5").unwrap().version, "2.5.0");
    // Over the configured limit: refused before parsing.
    let small = IndexLimits {
        max_size: 1 << 20,
        ..IndexLimits::default()
    };
    let e = parse_index(&path, &small).unwrap_err();
    assert_eq!(e.reason(), "IndexationFailed");
}

#[tokio::test]
async fn unchanged_index_is_not_downloaded_again_when_the_server_gives_validators() {
    // A static server that sends ETag and Last-Modified and honours If-None-Match (as nginx,
    // S3 or GitHub Pages do; tests/support/helmrepo.rs sends neither).
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    const BODY: &str =
        "apiVersion: v1\nentries:\n  app:\n  - version: 1.0.0\n    urls: [app-1.0.0.tgz]\n";
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = log.clone();
    let app = axum::Router::new().route(
        "/charts/index.yaml",
        axum::routing::get(move |h: HeaderMap| {
            let seen = seen.clone();
            async move {
                let inm = h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
                let resp = if inm == Some("\"v1\"") {
                    StatusCode::NOT_MODIFIED.into_response()
                } else {
                    (
                        [
                            (header::ETAG, "\"v1\""),
                            (header::LAST_MODIFIED, "Wed, 02 Dec 2026 10:00:00 GMT"),
                        ],
                        BODY,
                    )
                        .into_response()
                };
                seen.lock()
                    .unwrap()
                    .push(resp.status().as_u16().to_string());
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/charts/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tmp = Scratch::new("etag");
    let client = repo_client(&url, HelmAuth::None, false);
    let dest = tmp.0.join("index.yaml");
    let first = client
        .fetch_index(&dest, DEFAULT_MAX_INDEX_SIZE, None)
        .await
        .unwrap();
    let IndexFetched::Downloaded {
        revision,
        validators,
        ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(revision, sha256_digest(BODY.as_bytes()).unwrap());
    assert_eq!(validators.etag.as_deref(), Some("\"v1\""));
    std::fs::remove_file(&dest).unwrap();
    let second = client
        .fetch_index(&dest, DEFAULT_MAX_INDEX_SIZE, Some(&validators))
        .await
        .unwrap();
    assert_eq!(second, IndexFetched::NotModified { revision });
    assert!(!dest.exists(), "nothing written on 304");
    assert_eq!(*log.lock().unwrap(), ["200", "304"]);
}

#[tokio::test]
async fn index_over_mutual_tls_needs_the_ca_and_the_client_certificate() {
    // The repository's directory (charts by the real helm) served over HTTPS by Python's
    // standard library, requiring a client certificate from the test CA.
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    let tmp = Scratch::new("tls");
    let (ca, crt, key) = support::registry::make_mtls(&tmp.0);
    let script = "import functools, http.server, ssl, sys\n\
        d, cert, key, ca = sys.argv[1:5]\n\
        h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)\n\
        s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n\
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        c.load_cert_chain(cert, key)\n\
        c.verify_mode = ssl.CERT_REQUIRED\n\
        c.load_verify_locations(ca)\n\
        s.socket = c.wrap_socket(s.socket, server_side=True)\n\
        print(s.server_address[1], flush=True)\n\
        s.serve_forever()\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&repo.dir)
        .arg(&crt)
        .arg(&key)
        .arg(&ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    let url = format!("https://127.0.0.1:{port}");
    let read = |p: &PathBuf| Some(std::fs::read(p).unwrap());
    let full = TlsConfig {
        ca_pem: read(&ca),
        cert_pem: read(&tmp.0.join("client.crt")),
        key_pem: read(&tmp.0.join("client.key")),
    };
    let fetch = |tls: TlsConfig, name: &str| {
        let dest = tmp.0.join(name);
        let url = url.clone();
        async move {
            ChartRepo::new(&url, HelmAuth::None, &tls, Duration::from_secs(10), false)?
                .fetch_index(&dest, DEFAULT_MAX_INDEX_SIZE, None)
                .await
        }
    };
    let ok = fetch(full.clone(), "ok.yaml").await;
    let served = std::fs::read(repo.dir.join("index.yaml")).unwrap();
    let no_client = fetch(
        TlsConfig {
            cert_pem: None,
            key_pem: None,
            ..full.clone()
        },
        "a.yaml",
    )
    .await;
    let no_ca = fetch(
        TlsConfig {
            ca_pem: None,
            ..full.clone()
        },
        "b.yaml",
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ok.unwrap().revision(),
        sha256_digest(served.as_slice()).unwrap()
    );
    for e in [no_client.unwrap_err(), no_ca.unwrap_err()] {
        assert_eq!(e.reason(), "IndexationFailed", "{e}");
    }
    assert!(!tmp.0.join("a.yaml").exists() && !tmp.0.join("b.yaml").exists());
}
