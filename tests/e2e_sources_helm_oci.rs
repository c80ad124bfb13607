//! HelmCharts from OCI against the real local control plane and the dev cluster's registry:
//! charts pushed by the real `helm push` to a `type: oci` HelmRepository, an OCIRepository
//! (pushed by `flux push artifact`) holding chart directories with `file://` and `oci://`
//! dependencies, hostile chart layers pushed with the registry API, and the artifacts read by
//! the real `helm show` / `helm template` and `flux get sources chart`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pennant::api::source::{HelmChart, HelmRepository};
use sha2::Digest;
use support::gitserver::TempDir;
use support::helmrepo::{HelmRepo, helm_in};
use support::sources::{cleanup, flux_ok, get_source};
use support::*;

async fn helm_chart(ns: &TestNs, name: &str) -> HelmChart {
    get_source(ns, name).await
}

/// Waits until the HelmChart is Ready with revision `rev`.
async fn wait_chart(ns: &TestNs, name: &str, rev: &str) -> HelmChart {
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

fn chart_yaml(name: &str, kind: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  sourceRef:\n    kind: {kind}\n    name: {source}\n{extra}"
    )
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
fn names_under(dir: &Path) -> Vec<String> {
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

fn write_tree(root: &Path, files: &[(&str, &str)]) {
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
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--controllers",
        "source",
        "--storage-path",
        storage.path().to_str().unwrap(),
        "--listen",
        &listen,
        "--log-level",
        "info,pennant=debug",
    ];
    let _ctl = ControllerProcess::start_with(
        &ns.name,
        &format!("source-{}", ns.name),
        &kubeconfig_path(),
        &args,
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let addr = registry_addr();
    let charts = HelmRepo::start(None); // packages with the real `helm package`
    let push = |tgz: &Path| {
        run(helm_in(&charts.work)
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
    let shown = run(helm_in(home.path()).args(["show", "chart", &a.url]));
    assert!(shown.contains("version: 1.1.0"), "{shown}");
    let out = flux_ok(&ns.name, &["get", "sources", "chart"]);
    let line = out.lines().find(|l| l.starts_with("app")).expect(&out);
    assert!(line.contains("True"), "{line}");
    assert!(
        line.contains("pulled 'app' chart with version '1.1.0'"),
        "{line}"
    );
    let repo: HelmRepository = get_source(&ns, "oci").await;
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
    let rendered = run(helm_in(home.path()).args(["template", "rel", &url]));
    assert!(
        rendered.contains("chartVersion: \"1.2.0\"") && rendered.contains("name: rel-app"),
        "{rendered}"
    );

    // hostile chart layers: refused, the message names the entry, nothing written outside
    for (tag, entries) in [
        (
            "1.0.0",
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
        assert!(!message.is_empty(), "{message}");
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
    assert!(!Path::new("/tmp/escaped-abs.txt").exists());

    // an OCIRepository holding chart directories: `file://` and `oci://` dependencies vendored
    let tree = TempDir::new("pennant-ocichart-tree");
    let oci_dep = format!("oci://{addr}/{}/charts", ns.name);
    write_tree(
        tree.path(),
        &[
            (
                "charts/web/Chart.yaml",
                &format!(
                    "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n- name: lib\n  version: 1.x\n  repository: file://../lib\n- name: app\n  version: '>=1.0 <2.0'\n  repository: {oci_dep}\n"
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
    run(Command::new(flux()).args([
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
    let rendered = run(helm_in(home.path()).args(["template", "rel", &url]));
    assert!(
        rendered.contains("lib: from-lib"),
        "file:// dependency: {rendered}"
    );
    assert!(
        rendered.contains("chartVersion: \"1.2.0\""),
        "oci:// dependency at the newest matching version: {rendered}"
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
