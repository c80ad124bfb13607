//! HelmRepositories reconciled by the source controller against the real local control plane,
//! a real chart repository (`helm package` + `helm repo index`, tests/support/helmrepo.rs) and
//! the real `flux` CLI: `flux get sources helm`, `flux reconcile source helm`.

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
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n  secretRef:\n    name: creds\n",
        charts.url
    ))
    .await;
    let mut failed = None;
    for _ in 0..60 {
        let r = helm_repo(&ns, "charts").await;
        if ready(&r).is_some_and(|(s, _, _)| s == "False") {
            failed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = failed.expect("Ready=False with the wrong password");
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
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n",
        charts.url
    ))
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
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n",
        charts.url
    ))
    .await;
    let mut failed = None;
    for _ in 0..60 {
        let r = helm_repo(&ns, "charts").await;
        if ready(&r).is_some_and(|(s, _, _)| s == "False") {
            failed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = failed.expect("Ready=False with an index over --helm-index-max-size");
    let (_, reason, message) = ready(&r).unwrap();
    assert_eq!(reason, "IndexationFailed", "{message}");
    assert!(
        message.contains(&format!("limit of {} bytes", size - 1)),
        "{message}"
    );
    assert!(r.status.as_ref().unwrap().artifact.is_none());
    cleanup(ns).await;
}
