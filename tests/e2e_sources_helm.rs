//! HelmRepositories and HelmCharts reconciled by the source controller against the real local
//! control plane, a real chart repository (`helm package` + `helm repo index`,
//! tests/support/helmrepo.rs), the dev cluster's registry (charts pushed by the real `helm
//! push`, hostile ones with the registry API) and the real `flux` CLI: `flux get sources
//! helm|chart`, `flux reconcile source helm|chart`; artifacts read by `helm show|template`.

mod support;

use std::time::Duration;

use pennant::api::source::HelmRepository;
use sha2::Digest;
use support::gitserver::TempDir;
use support::helmrepo::HelmRepo;
use support::sources::{cleanup, flux_ok, get_source, ready, start_source_controller};
use support::*;

async fn helm_repo(ns: &TestNs, name: &str) -> HelmRepository {
    get_source(ns, name).await
}

async fn wait_revision(ns: &TestNs, name: &str, rev: &str) -> HelmRepository {
    support::sources::wait_revision(ns, name, rev).await
}

/// `sha256:<hex>` of the served `index.yaml`.
fn index_revision(repo: &HelmRepo) -> String {
    let bytes = std::fs::read(repo.dir.join("index.yaml")).unwrap();
    format!("sha256:{:x}", sha2::Sha256::digest(&bytes))
}

/// An http(s) HelmRepository `name` serving `url` (interval 10m), with the Secret `creds`
/// when `with_creds`.
fn helm_repository(name: &str, url: &str, with_creds: bool) -> String {
    let secret = if with_creds {
        "  secretRef:\n    name: creds\n"
    } else {
        ""
    };
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n{secret}"
    )
}

/// Waits (up to 60 s) until the HelmRepository is `Ready=False`; `expect` names what the test
/// expected in the panic.
async fn wait_not_ready(ns: &TestNs, name: &str, expect: &str) -> HelmRepository {
    for _ in 0..120 {
        let r = helm_repo(ns, name).await;
        if ready(&r).is_some_and(|(s, _, _)| s == "False") {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{name} never Ready=False: {expect}");
}

fn creds(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: NAMESPACE\nstringData:\n  username: chartuser\n  password: {password}\n"
    )
}

/// A basic-auth repository: a wrong password is `FetchFailed`/`AuthenticationFailed` (no
/// password in the status), the fixed Secret makes it Ready with Flux's revision, the index
/// served at `status.url`; a new chart version and `flux reconcile` give a new revision; a
/// `type: oci` HelmRepository stays a static object (no finalizer, no status).
#[tokio::test]
async fn helm_repository_auth_recovery_new_index_and_static_oci() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-helm", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    let charts = HelmRepo::start(Some(("chartuser", "right-pass")));
    charts.add_chart("podinfo", "6.5.0");

    ns.apply_yaml(&creds("wrong-pass")).await;
    ns.apply_yaml(&helm_repository("charts", &charts.url, true))
        .await;
    let r = wait_not_ready(&ns, "charts", "Ready=False with the wrong password").await;
    let (_, reason, message) = ready(&r).unwrap();
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    let fetch_failed = r
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "FetchFailed")
        .expect("FetchFailed");
    assert_eq!(fetch_failed.status, "True");
    assert!(!message.contains("wrong-pass"), "{message}");

    ns.apply_yaml(&creds("right-pass")).await;
    let rev1 = index_revision(&charts);
    let r = wait_revision(&ns, "charts", &rev1).await;
    let st = r.status.clone().unwrap();
    let a = st.artifact.clone().unwrap();
    assert_eq!(
        a.path,
        format!(
            "helmrepository/{}/charts/index-{}.yaml",
            ns.name,
            rev1.trim_start_matches("sha256:")
        )
    );
    assert_eq!(a.digest, rev1, "digest and revision are the index's");
    let url = st.url.clone().expect("status.url");
    assert!(url.ends_with("/index.yaml"), "{url}");
    let served = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        served,
        std::fs::read(charts.dir.join("index.yaml")).unwrap()
    );
    assert_eq!(
        ready(&r).unwrap().2,
        format!("stored artifact: revision '{rev1}'")
    );
    let out = flux_ok(&ns.name, &["get", "sources", "helm"]);
    let line = out.lines().find(|l| l.starts_with("charts")).expect(&out);
    assert!(line.contains("True"), "{line}");

    // unchanged index: reconciled on request, not stored again
    let before = a.last_update_time.clone();
    flux_ok(&ns.name, &["reconcile", "source", "helm", "charts"]);
    let r = helm_repo(&ns, "charts").await;
    assert_eq!(
        r.status
            .as_ref()
            .unwrap()
            .artifact
            .as_ref()
            .unwrap()
            .last_update_time,
        before
    );

    // a new chart version: a new index, picked up on request
    charts.add_chart("podinfo", "6.6.0");
    let rev2 = index_revision(&charts);
    assert_ne!(rev1, rev2);
    let out = flux_ok(&ns.name, &["reconcile", "source", "helm", "charts"]);
    assert!(out.contains(&rev2), "{out}");
    wait_revision(&ns, "charts", &rev2).await;

    // type: oci is a static object; one left with Flux's finalizer by an older version is
    // migrated (finalizer released, no status written)
    ns.apply_yaml(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: oci\n  namespace: NAMESPACE\n  finalizers: [finalizers.fluxcd.io]\nspec:\n  type: oci\n  url: oci://ghcr.io/stefanprodan/charts\n  interval: 10m\n",
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "static finalizer released",
        || async {
            helm_repo(&ns, "oci")
                .await
                .metadata
                .finalizers
                .is_none_or(|f| f.is_empty())
        },
    )
    .await;
    let r = helm_repo(&ns, "oci").await;
    assert!(
        r.status
            .as_ref()
            .is_none_or(|s| s.conditions.is_empty() && s.artifact.is_none()),
        "{:?}",
        r.status
    );
    let out = flux_ok(&ns.name, &["get", "sources", "helm"]);
    assert!(out.lines().any(|l| l.starts_with("oci")), "{out}");

    cleanup(ns).await;
}

async fn helm_chart(ns: &TestNs, name: &str) -> pennant::api::source::HelmChart {
    let api: kube::Api<pennant::api::source::HelmChart> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    api.get(name).await.expect("HelmChart")
}

/// Waits until the HelmChart is Ready with revision `rev`; returns its artifact URL.
async fn wait_chart(ns: &TestNs, name: &str, rev: &str) -> pennant::api::source::HelmChart {
    let mut last = None;
    for _ in 0..120 {
        let c = helm_chart(ns, name).await;
        let st = c.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready && st.artifact.as_ref().is_some_and(|a| a.revision == rev) {
            return c;
        }
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{name} never built {rev}: {last:#?}");
}

/// `helm show <what> <artifact url>` with the real helm (an isolated home).
fn helm_show(home: &std::path::Path, what: &str, url: &str) -> String {
    run(support::helmrepo::helm_in(home).args(["show", what, url]))
}

fn chart_yaml(name: &str, source_kind: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  sourceRef:\n    kind: {source_kind}\n    name: {source}\n{extra}"
    )
}

/// HelmCharts with the `flux` CLI and the real `helm` reading the artifacts: from a
/// HelmRepository (latest stable for `*`, the downloaded package as is, a new version picked up
/// when the repository's index changes, a bad constraint is BuildFailed), from a GitRepository
/// path (packaged by pennant, merged valuesFiles, `reconcileStrategy: Revision` following
/// commits).
#[tokio::test]
async fn helm_charts_from_a_helm_repository_and_a_git_path() {
    use support::gitserver::{GitServer, ServerOptions};
    let client = client().await;
    let ns = TestNs::new(&client, "src-chart", 0).await;
    let storage = TempDir::new("pennant-storage");
    let home = TempDir::new("pennant-helm-home");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    let charts = HelmRepo::start(None);
    let pkg = charts.add_chart("podinfo", "6.5.0");
    charts.add_chart("podinfo", "6.6.0");
    charts.add_chart("podinfo", "7.0.0-rc.1");
    ns.apply_yaml(&helm_repository("charts", &charts.url, false))
        .await;
    ns.apply_yaml(&chart_yaml(
        "podinfo",
        "HelmRepository",
        "charts",
        "  chart: podinfo\n  version: '*'\n",
    ))
    .await;
    let c = wait_chart(&ns, "podinfo", "6.6.0").await;
    let st = c.status.clone().unwrap();
    let a = st.artifact.clone().unwrap();
    assert!(a.path.ends_with("/podinfo-6.6.0.tgz"), "{}", a.path);
    let tgz = std::fs::read(pkg.with_file_name("podinfo-6.6.0.tgz")).unwrap();
    assert_eq!(
        a.digest,
        format!("sha256:{:x}", sha2::Sha256::digest(&tgz)),
        "without valuesFiles the downloaded package is stored as it is"
    );
    assert_eq!(st.observed_chart_name.as_deref(), Some("podinfo"));
    assert!(
        st.observed_source_artifact_revision
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    let shown = helm_show(home.path(), "chart", &a.url);
    assert!(shown.contains("version: 6.6.0"), "{shown}");
    let out = flux_ok(&ns.name, &["get", "sources", "chart"]);
    let line = out.lines().find(|l| l.starts_with("podinfo")).expect(&out);
    assert!(line.contains("True") && line.contains("6.6.0"), "{line}");
    assert!(
        line.contains("pulled 'podinfo' chart with version '6.6.0'"),
        "{line}"
    );

    // a new version in the repository: the chart follows the new index, no request on it
    charts.add_chart("podinfo", "6.7.0");
    flux_ok(&ns.name, &["reconcile", "source", "helm", "charts"]);
    wait_chart(&ns, "podinfo", "6.7.0").await;

    // valuesFiles on a repository chart: re-packaged, revision `<version>+<generation>`
    ns.apply_yaml(&chart_yaml(
        "tuned",
        "HelmRepository",
        "charts",
        "  chart: podinfo\n  version: 6.5.x\n  valuesFiles: [values.yaml, missing.yaml]\n  ignoreMissingValuesFiles: true\n",
    ))
    .await;
    let c = wait_chart(&ns, "tuned", "6.5.0+1").await;
    let a = c.status.unwrap().artifact.unwrap();
    assert!(a.path.ends_with("/podinfo-6.5.0+1.tgz"), "{}", a.path);
    let shown = helm_show(home.path(), "chart", &a.url);
    assert!(shown.contains("version: 6.5.0+1"), "{shown}");
    assert!(helm_show(home.path(), "values", &a.url).contains("message: hello"));

    // nothing matches: BuildFailed with Flux's reason, the last chart kept
    ns.apply_yaml(&chart_yaml(
        "none",
        "HelmRepository",
        "charts",
        "  chart: podinfo\n  version: '>=9.0.0'\n",
    ))
    .await;
    wait_until(Duration::from_secs(30), "InvalidChartReference", || async {
        helm_chart(&ns, "none").await.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "BuildFailed"
                    && c.status == "True"
                    && c.reason == "InvalidChartReference"
            })
        })
    })
    .await;

    // from a Git path: packaged by pennant, values files merged, revision strategy
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("fleet");
    let sha1 = repo.commit(
        "main",
        &[
            (
                "charts/app/Chart.yaml",
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndescription: from git\n",
            ),
            ("charts/app/values.yaml", "replicas: 1\nimage: {tag: v1, pull: Always}\n"),
            ("charts/app/values-prod.yaml", "image: {tag: v2}\n"),
            (
                "charts/app/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  tag: {{ .Values.image.tag }}\n",
            ),
        ],
        "chart",
    );
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: fleet\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n",
        server.url("fleet")
    ))
    .await;
    ns.apply_yaml(&chart_yaml(
        "app",
        "GitRepository",
        "fleet",
        "  chart: charts/app\n  reconcileStrategy: Revision\n  valuesFiles:\n  - charts/app/values.yaml\n  - charts/app/values-prod.yaml\n",
    ))
    .await;
    let rev1 = format!("1.0.0+{}", &sha1[..12]);
    let c = wait_chart(&ns, "app", &rev1).await;
    let a = c.status.clone().unwrap().artifact.unwrap();
    assert!(a.path.ends_with(&format!("/app-{rev1}.tgz")), "{}", a.path);
    let shown = helm_show(home.path(), "chart", &a.url);
    assert!(shown.contains(&format!("version: {rev1}")), "{shown}");
    let values = helm_show(home.path(), "values", &a.url);
    assert!(
        values.contains("tag: v2") && values.contains("pull: Always"),
        "{values}"
    );
    let out = flux_ok(&ns.name, &["get", "sources", "chart"]);
    let line = out.lines().find(|l| l.starts_with("app")).expect(&out);
    assert!(line.contains("True"), "{line}");
    assert!(line.contains("packaged 'app' chart with version"), "{line}");

    // a new commit: Revision strategy gives a new chart revision once the source has it
    let sha2 = repo.commit(
        "main",
        &[("charts/app/values-prod.yaml", "image: {tag: v3}\n")],
        "v3",
    );
    flux_ok(&ns.name, &["reconcile", "source", "git", "fleet"]);
    let c = wait_chart(&ns, "app", &format!("1.0.0+{}", &sha2[..12])).await;
    let url = c.status.unwrap().artifact.unwrap().url;
    assert!(helm_show(home.path(), "values", &url).contains("tag: v3"));

    cleanup(ns).await;
}

/// Waits until the HelmChart has `condition`=True with `reason`; returns its message.
async fn wait_condition(ns: &TestNs, name: &str, condition: &str, reason: &str) -> String {
    let mut last = None;
    for _ in 0..120 {
        let st = helm_chart(ns, name).await.status.unwrap_or_default();
        if let Some(c) = st
            .conditions
            .iter()
            .find(|c| c.type_ == condition && c.status == "True" && c.reason == reason)
        {
            return c.message.clone();
        }
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{name} never had {condition}/{reason}: {last:#?}");
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A gzipped tar of `entries` written with raw header names (so `..` and absolute names get
/// through, as a hostile pusher's would): `(name, Some(content))` is a file, `(name, None)` a
/// symlink to `/etc/passwd`.
fn hostile_tgz(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, content) in entries {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_cksum();
                tar.append(&h, c.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name("/etc/passwd").unwrap();
                h.set_size(0);
                h.set_cksum();
                tar.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Pushes `layer` as a Helm chart (`helm push`'s media types) to `<addr>/<repo>:<tag>` with the
/// distribution API: what a registry accepts from any client, `helm push` checks or not.
async fn push_chart_layer(addr: &str, repo: &str, tag: &str, layer: &[u8]) {
    let http = pennant::source::http::client(&Default::default(), Duration::from_secs(20)).unwrap();
    let base = format!("http://{addr}/v2/{repo}");
    let config = br#"{"name":"evil","version":"1.0.0","apiVersion":"v2"}"#.to_vec();
    for blob in [&config[..], layer] {
        let resp = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{addr}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = http
            .put(format!("{url}{sep}digest={}", sha256(blob)))
            .header("content-type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    "digest": sha256(layer), "size": layer.len()}],
    });
    let resp = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
}

/// Every file name under `dir`, recursively.
fn names_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(e.file_name().to_string_lossy().into_owned());
        if p.is_dir() {
            out.extend(names_under(&p));
        }
    }
    out
}

fn write_tree(root: &std::path::Path, files: &[(&str, &str)]) {
    for (p, text) in files {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A `type: oci` HelmRepository (static: no status) and a HelmChart with `>=1.0 <2.0`: 1.1.0
/// then 1.2.0 pushed by `helm push`, the artifact follows (2.0.0 is out of range), stored as
/// pushed and read by `helm show` / `helm template`, `flux get sources chart` Ready; hostile
/// chart layers (`..`, absolute path, symlink) are `BuildFailed` and write nothing outside;
/// an OCIRepository path chart gets its `file://` and `oci://` dependencies vendored, and a
/// missing one is `DependencyBuildError`.
#[tokio::test]
async fn helm_charts_from_an_oci_registry_and_an_oci_repository_path() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-ocichart", 0).await;
    let storage = TempDir::new("pennant-storage");
    let tmp = TempDir::new("pennant-tmpdir");
    let home = TempDir::new("pennant-helm-home");
    let (_ctl, _) = support::sources::start_source_controller_env(
        &ns.name,
        storage.path(),
        &[],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let addr = registry_addr();
    let charts = HelmRepo::start(None); // packages with the real `helm package`
    let push = |tgz: &std::path::Path| {
        run(support::helmrepo::helm_in(&charts.work)
            .arg("push")
            .arg(tgz)
            .arg(format!("oci://{addr}/{}/charts", ns.name))
            .arg("--plain-http"))
    };
    let v110 = charts.add_chart("app", "1.1.0");
    push(&v110);
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: oci\n  namespace: NAMESPACE\nspec:\n  type: oci\n  url: oci://{addr}/{}/charts\n  insecure: true\n  interval: 10m\n",
        ns.name
    ))
    .await;
    ns.apply_yaml(&chart_yaml(
        "app",
        "HelmRepository",
        "oci",
        "  chart: app\n  version: '>=1.0 <2.0'\n",
    ))
    .await;
    let c = wait_chart(&ns, "app", "1.1.0").await;
    let st = c.status.clone().unwrap();
    let a = st.artifact.clone().unwrap();
    assert!(a.path.ends_with("/app-1.1.0.tgz"), "{}", a.path);
    assert_eq!(
        a.digest,
        sha256(&std::fs::read(&v110).unwrap()),
        "the pulled layer is stored as helm pushed it"
    );
    assert_eq!(
        st.observed_source_artifact_revision, None,
        "an OCI HelmRepository has no artifact"
    );
    let shown = helm_show(home.path(), "chart", &a.url);
    assert!(shown.contains("version: 1.1.0"), "{shown}");
    let out = flux_ok(&ns.name, &["get", "sources", "chart"]);
    let line = out.lines().find(|l| l.starts_with("app")).expect(&out);
    assert!(line.contains("True"), "{line}");
    assert!(
        line.contains("pulled 'app' chart with version '1.1.0'"),
        "{line}"
    );
    let repo = helm_repo(&ns, "oci").await;
    assert!(
        repo.status
            .as_ref()
            .is_none_or(|s| s.conditions.is_empty() && s.artifact.is_none()),
        "a type: oci HelmRepository stays static: {:?}",
        repo.status
    );

    // 1.2.0 in range, 2.0.0 not: the artifact moves to 1.2.0
    push(&charts.add_chart("app", "1.2.0"));
    push(&charts.add_chart("app", "2.0.0"));
    flux_ok(&ns.name, &["reconcile", "source", "chart", "app"]);
    let c = wait_chart(&ns, "app", "1.2.0").await;
    let url = c.status.unwrap().artifact.unwrap().url;
    let rendered = run(support::helmrepo::helm_in(home.path()).args(["template", "rel", &url]));
    assert!(
        rendered.contains("chartVersion: \"1.2.0\"") && rendered.contains("name: rel-app"),
        "{rendered}"
    );

    // hostile chart layers: refused, the message names the entry, nothing written outside
    for (tag, refused, entries) in [
        (
            "1.0.0",
            "invalid name '../escaped.txt'",
            vec![
                (
                    "evil/Chart.yaml",
                    Some("apiVersion: v2\nname: evil\nversion: 1.0.0\n"),
                ),
                ("../escaped.txt", Some("x")),
            ],
        ),
        (
            "1.0.1",
            "invalid name '/tmp/escaped-abs.txt'",
            vec![
                (
                    "evil/Chart.yaml",
                    Some("apiVersion: v2\nname: evil\nversion: 1.0.1\n"),
                ),
                ("/tmp/escaped-abs.txt", Some("x")),
            ],
        ),
        (
            "1.0.2",
            "'evil/templates/passwd' is a link",
            vec![
                (
                    "evil/Chart.yaml",
                    Some("apiVersion: v2\nname: evil\nversion: 1.0.2\n"),
                ),
                ("evil/templates/passwd", None),
            ],
        ),
    ] {
        let repo = format!("{}/charts/evil", ns.name);
        push_chart_layer(&addr, &repo, tag, &hostile_tgz(&entries)).await;
        let name = format!("evil-{}", tag.replace('.', "-"));
        ns.apply_yaml(&chart_yaml(
            &name,
            "HelmRepository",
            "oci",
            &format!("  chart: evil\n  version: {tag}\n"),
        ))
        .await;
        let message = wait_condition(&ns, &name, "BuildFailed", "ChartPullError").await;
        assert!(message.contains(refused), "{message}");
        let c = helm_chart(&ns, &name).await;
        assert!(
            c.status.unwrap().artifact.is_none(),
            "no artifact from a hostile chart"
        );
    }
    let names = names_under(tmp.path());
    assert!(
        !names.iter().any(|n| n.contains("escaped")),
        "nothing written outside the extraction directory: {names:?}"
    );
    assert!(!std::path::Path::new("/tmp/escaped-abs.txt").exists());

    // an OCIRepository holding chart directories: `file://` and `oci://` dependencies vendored
    let tree = TempDir::new("pennant-ocichart-tree");
    let oci_dep = format!("oci://{addr}/{}/charts", ns.name);
    // an http(s) repository no HelmRepository names: its index fetched anonymously
    charts.add_chart("podinfo", "6.5.0");
    // a private one a HelmRepository names: its stored index and its credentials
    let private = HelmRepo::start(Some(("chartuser", "right-pass")));
    private.add_chart("secret", "0.3.0");
    ns.apply_yaml(&creds("right-pass")).await;
    ns.apply_yaml(&helm_repository("private", &private.url, true))
        .await;
    write_tree(
        tree.path(),
        &[
            (
                "charts/web/Chart.yaml",
                &format!(
                    "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n- name: lib\n  version: 1.x\n  repository: file://../lib\n- name: app\n  version: '>=1.0 <2.0'\n  repository: {oci_dep}\n- name: podinfo\n  version: 6.x\n  repository: {}\n- name: secret\n  version: ~0.3\n  repository: {}/\n",
                    charts.url, private.url
                ),
            ),
            (
                "charts/web/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  lib: {{ include \"lib.greeting\" . }}\n",
            ),
            (
                "charts/lib/Chart.yaml",
                "apiVersion: v2\nname: lib\nversion: 1.3.0\ntype: library\n",
            ),
            (
                "charts/lib/templates/_helpers.tpl",
                "{{- define \"lib.greeting\" -}}from-lib{{- end -}}\n",
            ),
            (
                "charts/broken/Chart.yaml",
                "apiVersion: v2\nname: broken\nversion: 0.1.0\ndependencies:\n- name: nope\n  version: 1.x\n  repository: file://../nope\n",
            ),
        ],
    );
    run(std::process::Command::new(flux()).args([
        "push",
        "artifact",
        &format!("oci://{addr}/{}/fleet:v1", ns.name),
        &format!("--path={}", tree.path().display()),
        "--source=https://git.example.com/fleet.git",
        "--revision=v1@sha1:0123456789abcdef0123456789abcdef01234567",
        "--insecure-registry",
    ]));
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: fleet\n  namespace: NAMESPACE\nspec:\n  url: oci://{addr}/{}/fleet\n  interval: 10m\n  insecure: true\n  ref:\n    tag: v1\n",
        ns.name
    ))
    .await;
    ns.apply_yaml(&chart_yaml(
        "web",
        "OCIRepository",
        "fleet",
        "  chart: charts/web\n",
    ))
    .await;
    let c = wait_chart(&ns, "web", "0.1.0").await;
    let st = c.status.unwrap();
    assert!(
        st.observed_source_artifact_revision
            .as_deref()
            .is_some_and(|r| r.starts_with("v1@sha256:")),
        "{:?}",
        st.observed_source_artifact_revision
    );
    let url = st.artifact.unwrap().url;
    let rendered = run(support::helmrepo::helm_in(home.path()).args(["template", "rel", &url]));
    assert!(
        rendered.contains("lib: from-lib"),
        "file:// dependency: {rendered}"
    );
    assert!(
        rendered.contains("chartVersion: \"1.2.0\""),
        "oci:// dependency at the newest matching version: {rendered}"
    );
    assert!(
        rendered.contains("name: rel-podinfo") && rendered.contains("chartVersion: \"6.5.0\""),
        "http(s) index dependency: {rendered}"
    );
    assert!(
        rendered.contains("name: rel-secret") && rendered.contains("chartVersion: \"0.3.0\""),
        "dependency from a HelmRepository with credentials: {rendered}"
    );
    assert!(
        private
            .requests()
            .iter()
            .any(|r| r == "GET /secret-0.3.0.tgz 200"),
        "the package was fetched with the credentials: {:?}",
        private.requests()
    );
    let out = flux_ok(&ns.name, &["get", "sources", "chart"]);
    let line = out.lines().find(|l| l.starts_with("web")).expect(&out);
    assert!(
        line.contains("True") && line.contains("packaged 'web' chart with version '0.1.0'"),
        "{line}"
    );

    // a dependency that is not there: BuildFailed/DependencyBuildError naming it
    ns.apply_yaml(&chart_yaml(
        "broken",
        "OCIRepository",
        "fleet",
        "  chart: charts/broken\n",
    ))
    .await;
    let message = wait_condition(&ns, "broken", "BuildFailed", "DependencyBuildError").await;
    assert!(
        message.contains("failed to add local dependency 'nope'")
            && message.contains("no chart found"),
        "{message}"
    );

    cleanup(ns).await;
}

/// A `type: oci` HelmRepository on a registry behind basic auth: a wrong password is
/// `FetchFailed`/`AuthenticationFailed` (no password in the status), a `.dockerconfigjson`
/// Secret and `flux reconcile` pull the chart; `username`/`password` keys work too; a cloud
/// `provider` without a `secretRef` says it is not supported.
#[tokio::test]
async fn helm_chart_from_an_oci_registry_behind_basic_auth() {
    use support::registry::{REGISTRY_USER, Registry};
    let client = client().await;
    let ns = TestNs::new(&client, "src-ocichart-auth", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let reg = Registry::start(Some(REGISTRY_USER));
    let (user, password) = REGISTRY_USER;
    let charts = HelmRepo::start(None);
    let tgz = charts.add_chart("app", "1.0.0");
    run(support::helmrepo::helm_in(&charts.work)
        .arg("push")
        .arg(&tgz)
        .arg(format!("oci://{}/team", reg.addr))
        .args(["--plain-http", "--username", user, "--password", password]));
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: NAMESPACE\nstringData:\n  username: {user}\n  password: wrong-pass\n"
    ))
    .await;
    for (name, extra) in [
        ("oci", "  secretRef:\n    name: regcred\n"),
        ("cloud", "  provider: aws\n"),
    ] {
        ns.apply_yaml(&format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  type: oci\n  url: oci://{}/team\n  insecure: true\n  interval: 10m\n{extra}",
            reg.addr
        ))
        .await;
        ns.apply_yaml(&chart_yaml(
            name,
            "HelmRepository",
            name,
            "  chart: app\n  version: 1.x\n",
        ))
        .await;
    }
    let message = wait_condition(&ns, "oci", "FetchFailed", "AuthenticationFailed").await;
    assert!(
        message.starts_with("failed to authenticate with the Helm repository")
            && !message.contains("wrong-pass"),
        "{message}"
    );
    let message = wait_condition(&ns, "cloud", "FetchFailed", "AuthenticationFailed").await;
    assert!(
        message.contains("spec.provider 'aws' is not supported"),
        "{message}"
    );

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string();
    // a Secret's type cannot change: a new one, the repository pointed at it
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dockercfg\n  namespace: NAMESPACE\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n"
    ))
    .await;
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: oci\n  namespace: NAMESPACE\nspec:\n  type: oci\n  url: oci://{}/team\n  insecure: true\n  interval: 10m\n  secretRef:\n    name: dockercfg\n",
        reg.addr
    ))
    .await;
    flux_ok(&ns.name, &["reconcile", "source", "chart", "oci"]);
    let c = wait_chart(&ns, "oci", "1.0.0").await;
    let a = c.status.unwrap().artifact.unwrap();
    assert_eq!(
        a.digest,
        format!(
            "sha256:{:x}",
            sha2::Sha256::digest(std::fs::read(&tgz).unwrap())
        )
    );

    // username/password keys, as a `type: default` repository's
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: NAMESPACE\nstringData:\n  username: {user}\n  password: {password}\n"
    ))
    .await;
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: basic\n  namespace: NAMESPACE\nspec:\n  type: oci\n  url: oci://{}/team\n  insecure: true\n  interval: 10m\n  secretRef:\n    name: regcred\n",
        reg.addr
    ))
    .await;
    ns.apply_yaml(&chart_yaml(
        "basic",
        "HelmRepository",
        "basic",
        "  chart: app\n  version: 1.0.0\n",
    ))
    .await;
    wait_chart(&ns, "basic", "1.0.0").await;

    cleanup(ns).await;
}

/// `--helm-index-max-size` (Flux's flag) bounds the index download: with a limit below the
/// served index's size the HelmRepository is `Ready=False`/`IndexationFailed` naming the limit
/// (with the 50 MiB default the same index is Ready, as in the test above).
#[tokio::test]
async fn helm_index_max_size_flag_bounds_the_index() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-helm-max", 0).await;
    let storage = TempDir::new("pennant-storage");
    let charts = HelmRepo::start(None);
    charts.add_chart("podinfo", "6.5.0");
    let size = std::fs::metadata(charts.dir.join("index.yaml"))
        .unwrap()
        .len();
    let limit = format!("--helm-index-max-size={}", size - 1);
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[&limit]);
    ns.apply_yaml(&helm_repository("charts", &charts.url, false))
        .await;
    let r = wait_not_ready(
        &ns,
        "charts",
        "Ready=False with an index over --helm-index-max-size",
    )
    .await;
    let (_, reason, message) = ready(&r).unwrap();
    assert_eq!(reason, "IndexationFailed", "{message}");
    assert!(
        message.contains(&format!("limit of {} bytes", size - 1)),
        "{message}"
    );
    assert!(r.status.as_ref().unwrap().artifact.is_none());
    cleanup(ns).await;
}
