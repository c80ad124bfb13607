//! `pennant::source::oci::pull` against a real OCI registry (distribution v3, started per test by
//! `tests/support/registry.rs`) holding artifacts pushed by the real `flux push artifact`: tag,
//! semver (with filter) and digest refs, Flux's revision strings and annotations, nothing
//! downloaded when the digest is unchanged, `copy`, layer selection errors, htpasswd auth from a
//! docker config.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pennant::source::artifact::UntarLimits;
use pennant::source::http::TlsConfig;
use pennant::source::oci::{
    DEFAULT_MAX_LAYER_SIZE, FLUX_ARTIFACT_MEDIA_TYPE, LayerOperation, LayerSelector, OciAuth,
    OciError, OciSelector, PullRequest, Pulled, docker_config_auth, pull,
};
use support::registry::{REGISTRY_USER, Registry, TOKEN_SERVICE, flux_push as push};
use support::{free_port, run};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "pennant-source-oci-{name}-{}-{}",
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

fn request(addr: &str, repo: &str, selector: OciSelector, dest: PathBuf) -> PullRequest {
    PullRequest {
        url: format!("oci://{addr}/{repo}"),
        selector,
        layer: LayerSelector::default(),
        auth: OciAuth::Anonymous,
        insecure: true,
        tls: TlsConfig::default(),
        timeout: Duration::from_secs(20),
        last_revision: None,
        max_layer_size: DEFAULT_MAX_LAYER_SIZE,
        untar: UntarLimits::default(),
        dest,
    }
}

fn pulled(r: Result<Pulled, OciError>) -> (String, BTreeMap<String, String>) {
    match r.unwrap_or_else(|e| panic!("pull failed ({}): {e}", e.reason())) {
        Pulled::Pulled {
            revision,
            annotations,
            ..
        } => (revision, annotations),
        other => panic!("expected a download, got {other:?}"),
    }
}

fn version_in(dir: &Path) -> String {
    let cm = std::fs::read_to_string(dir.join("apps/cm.yaml")).unwrap();
    cm.rsplit("version: ").next().unwrap().trim().to_string()
}

fn blob_gets(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .count()
}

fn tag(t: &str) -> OciSelector {
    OciSelector::Tag(t.into())
}

fn semver(c: &str, filter: Option<&str>) -> OciSelector {
    OciSelector::Semver {
        constraint: c.into(),
        filter: filter.map(str::to_string),
    }
}

#[tokio::test]
async fn pull_by_tag_semver_and_digest_as_flux_and_nothing_downloaded_when_unchanged() {
    let reg = Registry::start(None);
    let tmp = Scratch::new("refs");
    let repo = "team/app";
    let d1 = push(&reg.addr, repo, "v1.0.0", &tmp.0, None);

    // Tag: Flux's revision, the pushed files, the annotations flux push wrote.
    let out = tmp.0.join("by-tag");
    let (revision, annotations) =
        pulled(pull(&request(&reg.addr, repo, tag("v1.0.0"), out.clone())).await);
    assert_eq!(revision, format!("v1.0.0@{d1}"));
    assert_eq!(version_in(&out), "v1.0.0");
    assert!(out.join("kustomization.yaml").is_file());
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://git.example.com/fleet.git"
    );
    assert_eq!(
        annotations["org.opencontainers.image.revision"],
        "v1.0.0@sha1:0123456789abcdef0123456789abcdef01234567"
    );

    // Unchanged digest: only the manifest is HEADed, no blob is fetched, dest is untouched.
    let blobs_before = blob_gets(&reg);
    assert!(blobs_before >= 1, "{:?}", reg.requests());
    let mut again = request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("again"));
    again.last_revision = Some(revision.clone());
    assert_eq!(
        pull(&again).await.unwrap(),
        Pulled::Unchanged {
            revision: revision.clone()
        }
    );
    assert_eq!(blob_gets(&reg), blobs_before, "{:?}", reg.requests());
    assert!(!tmp.0.join("again").exists());

    // Semver: `>=1.0.0` is v1.0.0, then moves to v1.1.0 once it is pushed; a pre-release and
    // a non-semver tag never win; the filter narrows the candidates.
    let (r, _) = pulled(
        pull(&request(
            &reg.addr,
            repo,
            semver(">=1.0.0", None),
            tmp.0.join("s1"),
        ))
        .await,
    );
    assert_eq!(r, format!("v1.0.0@{d1}"));
    let d2 = push(&reg.addr, repo, "v1.1.0", &tmp.0, None);
    push(&reg.addr, repo, "v1.2.0-rc.1", &tmp.0, None);
    push(&reg.addr, repo, "latest", &tmp.0, None);
    assert_ne!(d1, d2);
    let out = tmp.0.join("s2");
    let mut moved = request(&reg.addr, repo, semver(">=1.0.0", None), out.clone());
    moved.last_revision = Some(format!("v1.0.0@{d1}"));
    let (r, _) = pulled(pull(&moved).await);
    assert_eq!(r, format!("v1.1.0@{d2}"));
    assert_eq!(version_in(&out), "v1.1.0");
    let (r, _) = pulled(
        pull(&request(
            &reg.addr,
            repo,
            semver(">=1.0.0", Some(r"^v1\.0\.")),
            tmp.0.join("s3"),
        ))
        .await,
    );
    assert_eq!(r, format!("v1.0.0@{d1}"));
    let e = pull(&request(
        &reg.addr,
        repo,
        semver(">=2.0.0", None),
        tmp.0.join("s4"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.reason(), "ReadOperationFailed", "{e}");
    assert!(
        e.to_string().contains("no match found for semver: >=2.0.0"),
        "{e}"
    );

    // Digest: revision is the bare digest; `copy` keeps the layer's bytes as they are.
    let file = tmp.0.join("copy").join(format!("{d1}.tgz"));
    let mut by_digest = request(
        &reg.addr,
        repo,
        OciSelector::Digest(d1.clone()),
        file.clone(),
    );
    by_digest.layer = LayerSelector {
        media_type: Some(FLUX_ARTIFACT_MEDIA_TYPE.into()),
        operation: LayerOperation::Copy,
    };
    match pull(&by_digest).await.unwrap() {
        Pulled::Pulled {
            revision,
            layer,
            extracted,
            ..
        } => {
            assert_eq!(revision, d1);
            assert_eq!(extracted, None);
            assert_eq!(layer.media_type, FLUX_ARTIFACT_MEDIA_TYPE);
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(bytes.len() as u64, layer.size);
            assert_eq!(
                pennant::source::artifact::sha256_digest(bytes.as_slice()).unwrap(),
                layer.digest
            );
        }
        other => panic!("{other:?}"),
    }

    // A layer selector naming a media type the artifact lacks: a clear error, nothing written.
    let mut missing = request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("missing"));
    missing.layer.media_type = Some("application/vnd.example.missing".into());
    let e = pull(&missing).await.unwrap_err();
    assert_eq!(e.reason(), "OCIArtifactLayerOperationFailed", "{e}");
    assert!(
        e.to_string()
            .contains("failed to find layer with media type 'application/vnd.example.missing'"),
        "{e}"
    );
    assert!(!tmp.0.join("missing").exists());

    // A tag that is not there, a malformed digest, an invalid URL.
    let e = pull(&request(&reg.addr, repo, tag("v9"), tmp.0.join("x")))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "OCIArtifactPullFailed", "{e}");
    assert!(e.to_string().contains("404"), "{e}");
    let e = pull(&request(
        &reg.addr,
        repo,
        OciSelector::Digest("sha256:abc".into()),
        tmp.0.join("x"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.reason(), "URLInvalid", "{e}");
    let mut bad = request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("x"));
    bad.url = format!("https://{}/{repo}", reg.addr);
    assert_eq!(pull(&bad).await.unwrap_err().reason(), "URLInvalid");
}

#[tokio::test]
async fn htpasswd_registry_needs_the_docker_config_credentials() {
    let reg = Registry::start(Some(REGISTRY_USER));
    let tmp = Scratch::new("auth");
    let repo = "private/app";
    let (user, password) = REGISTRY_USER;
    let d1 = push(
        &reg.addr,
        repo,
        "v1.0.0",
        &tmp.0,
        Some(&format!("{user}:{password}")),
    );

    let anonymous = pull(&request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("a")))
        .await
        .unwrap_err();
    assert_eq!(anonymous.reason(), "AuthenticationFailed", "{anonymous}");

    let wrong = format!(
        r#"{{"auths":{{"{}":{{"username":"{user}","password":"not-the-password"}}}}}}"#,
        reg.addr
    );
    let mut req = request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("w"));
    req.auth = docker_config_auth(wrong.as_bytes(), &reg.addr).unwrap();
    let e = pull(&req).await.unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");

    // A `.dockerconfigjson` as `kubectl create secret docker-registry` writes it (`auth`).
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    let good = format!(
        r#"{{"auths":{{"http://{}":{{"username":"{user}","password":"{password}","auth":"{auth}"}}}}}}"#,
        reg.addr
    );
    let out = tmp.0.join("ok");
    let mut req = request(&reg.addr, repo, semver("1.x", None), out.clone());
    req.auth = docker_config_auth(good.as_bytes(), &reg.addr).unwrap();
    let (revision, _) = pulled(pull(&req).await);
    assert_eq!(revision, format!("v1.0.0@{d1}"));
    assert_eq!(version_in(&out), "v1.0.0");
}

#[tokio::test]
async fn token_flow_registry_as_docker_hub_and_ghcr_run_it() {
    let repo = "team/tokened";
    let open = Registry::start(None);
    let reg = Registry::start_token(repo, &open);
    let tmp = Scratch::new("token");
    let (user, password) = REGISTRY_USER;
    let d1 = push(&open.addr, repo, "v1.0.0", &tmp.0, None);

    // Without credentials the token server refuses: AuthenticationFailed.
    let e = pull(&request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join("a")))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
    assert!(e.to_string().contains("token request"), "{e}");

    // With them: a token for `repository:<repo>:pull`, then tags, manifest and blob with it.
    let before = reg.token_requests().len();
    let out = tmp.0.join("ok");
    let mut req = request(&reg.addr, repo, semver(">=1.0.0", None), out.clone());
    req.auth = OciAuth::Basic {
        username: user.into(),
        password: password.into(),
    };
    let (revision, _) = pulled(pull(&req).await);
    assert_eq!(revision, format!("v1.0.0@{d1}"));
    assert_eq!(version_in(&out), "v1.0.0");
    let asked = reg.token_requests()[before..].to_vec();
    assert_eq!(
        asked,
        [format!(
            "service={TOKEN_SERVICE}&scope=repository%3A{}%3Apull 200",
            repo.replace('/', "%2F")
        )],
        "one token, reused for every request of the pull"
    );
}

#[tokio::test]
async fn helm_chart_pushed_by_helm_is_pulled_by_semver_and_checked() {
    use pennant::source::helm_index::{DEFAULT_MAX_CHART_FILE_SIZE, check_chart};
    use pennant::source::oci::HELM_CHART_MEDIA_TYPE;
    use support::helmrepo::{HelmRepo, helm_in};

    let reg = Registry::start(None);
    let charts = HelmRepo::start(None);
    let tmp = Scratch::new("helm-oci");
    for v in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        let tgz = charts.add_chart("app", v);
        // `helm push` names the repository after the chart: oci://<addr>/charts/app:<version>.
        run(helm_in(&charts.work)
            .arg("push")
            .arg(&tgz)
            .arg(format!("oci://{}/charts", reg.addr))
            .arg("--plain-http"));
    }
    let file = tmp.0.join("app.tgz");
    let mut req = request(&reg.addr, "charts/app", semver("*", None), file.clone());
    req.layer = LayerSelector {
        media_type: Some(HELM_CHART_MEDIA_TYPE.into()),
        operation: LayerOperation::Copy,
    };
    let (revision, annotations) = pulled(pull(&req).await);
    assert!(revision.starts_with("1.1.0@sha256:"), "{revision}");
    assert_eq!(annotations["org.opencontainers.image.version"], "1.1.0");
    // The layer is the package helm made, byte for byte.
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(charts.dir.join("app-1.1.0.tgz")).unwrap()
    );
    let meta = check_chart(&file, DEFAULT_MAX_CHART_FILE_SIZE).unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.version.as_str()),
        ("app", "1.1.0")
    );

    req.selector = semver(">=2.0.0-0", None);
    let (revision, _) = pulled(pull(&req).await);
    assert!(revision.starts_with("2.0.0-rc.1@sha256:"), "{revision}");

    // HelmChart from a `type: oci` HelmRepository: Helm's `_` tags read as `+` build metadata.
    let tgz = charts.add_chart("app", "1.1.1+build.7");
    run(helm_in(&charts.work)
        .arg("push")
        .arg(&tgz)
        .arg(format!("oci://{}/charts", reg.addr))
        .arg("--plain-http"));
    let client = pennant::source::oci::Client::new(
        &format!("oci://{}/charts/app", reg.addr),
        OciAuth::Anonymous,
        true,
        &TlsConfig::default(),
        Duration::from_secs(20),
    )
    .unwrap();
    for (constraint, version, tag) in [
        ("", "1.1.1+build.7", "1.1.1_build.7"),
        ("~1.1.0", "1.1.1+build.7", "1.1.1_build.7"),
        ("1.0.0", "1.0.0", "1.0.0"),
        ("1.1.1+build.7", "1.1.1+build.7", "1.1.1_build.7"),
        (">=2.0.0-0", "2.0.0-rc.1", "2.0.0-rc.1"),
    ] {
        let (v, resolved) = client.resolve_chart(constraint).await.unwrap();
        assert_eq!(
            (v.as_str(), resolved.tag.as_deref()),
            (version, Some(tag)),
            "{constraint:?}"
        );
    }
    let e = client.resolve_chart(">=3").await.unwrap_err();
    assert_eq!(e.reason(), "ReadOperationFailed", "{e}");
}

#[tokio::test]
async fn mutual_tls_registry_needs_the_ca_and_the_client_certificate() {
    let open = Registry::start(None);
    let (reg, (ca, cert, key)) = Registry::start_mtls(&open);
    let tmp = Scratch::new("mtls");
    let repo = "team/tls";
    let d1 = push(&open.addr, repo, "v1.0.0", &tmp.0, None);
    let read = |p: &PathBuf| Some(std::fs::read(p).unwrap());
    let full = TlsConfig {
        ca_pem: read(&ca),
        cert_pem: read(&cert),
        key_pem: read(&key),
    };
    let https = |tls: TlsConfig, dest: &str| {
        let mut r = request(&reg.addr, repo, tag("v1.0.0"), tmp.0.join(dest));
        r.insecure = false;
        r.tls = tls;
        r
    };

    let (revision, _) = pulled(pull(&https(full.clone(), "ok")).await);
    assert_eq!(revision, format!("v1.0.0@{d1}"));
    assert_eq!(version_in(&tmp.0.join("ok")), "v1.0.0");

    // No client certificate: the registry ends the handshake.
    let no_client = TlsConfig {
        cert_pem: None,
        key_pem: None,
        ..full.clone()
    };
    let e = pull(&https(no_client, "x")).await.unwrap_err();
    assert_eq!(e.reason(), "OCIArtifactPullFailed", "{e}");
    // Not our CA: the server certificate is not trusted.
    let no_ca = TlsConfig {
        ca_pem: None,
        ..full.clone()
    };
    let e = pull(&https(no_ca, "x")).await.unwrap_err();
    assert_eq!(e.reason(), "OCIArtifactPullFailed", "{e}");
    // A broken PEM is named, its content never shown.
    let bad = TlsConfig {
        ca_pem: Some(b"-----BEGIN CERTIFICATE-----\nhunter2\n-----END CERTIFICATE-----\n".to_vec()),
        ..full
    };
    let e = pull(&https(bad, "x")).await.unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!tmp.0.join("x").exists());
}
