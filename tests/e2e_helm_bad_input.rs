//! Bad input to a HelmRelease (issue 15, "Bad input"): pennant's source and helm controllers
//! (`--controllers source,helm`), a real HTTP Helm repository, the real `helm` CLI, kubectl.
//!
//! Each mistake is made on a HelmRelease whose release (`web`, chart `app` 1.0.0) is deployed
//! and must stay so: a chart the repository does not have, a version constraint no chart
//! satisfies, values the chart's schema refuses, `valuesFrom` data that is not YAML, a missing
//! `valuesFrom` Secret (optional: ignored; required: `ValuesError`), a template that fails to
//! render, a `serviceAccountName` without rights. Each leaves `Ready=False` with a reason and
//! a message that names the cause, a Warning Event saying the same (on the HelmRelease, or for
//! a source problem on the HelmChart the HelmRelease's message names), no new Helm revision,
//! and the objects of the last good release in place; putting the good spec back makes it
//! Ready again without a new revision. A HelmRelease written with `apiVersion:
//! source.toolkit.fluxcd.io/v1` is refused by the API server with the text docs/guide.md
//! quotes.

mod support;

use std::process::Command;
use std::time::Duration;

use support::charts::{ChartSpec, RENDER_FAILURE_MESSAGE};
use support::helmrepo::HelmRepo;
use support::hr::*;
use support::*;

/// Namespace, controller, repository (app 1.0.0 with a values schema) and `web` deployed.
async fn deployed(prefix: &str) -> (TestNs, ControllerProcess, HelmRepo, tempfile::TempDir) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 0).await;
    let storage = tempfile::tempdir().unwrap();
    let ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").schema().publish(&repo);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&good()).await;
    wait_hr(&ns, "web", "installed", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;
    (ns, ctl, repo, storage)
}

fn good() -> String {
    hr_yaml("web", "app", "1.0.0", "  values:\n    message: good\n")
}

/// The last good release still runs: revision 1 deployed and nothing else, its objects there.
async fn assert_last_good_running(ns: &TestNs, case: &str) {
    assert_eq!(
        helm_history(&ns.name, "web"),
        vec![(1, "deployed".to_string())],
        "{case}: helm history unchanged"
    );
    assert_eq!(
        configmap_data(ns, "web-values", "message").await.as_deref(),
        Some("good"),
        "{case}: the release's ConfigMap"
    );
    assert!(
        ns.deployment("web").await.is_some(),
        "{case}: the Deployment"
    );
}

/// Apply `bad`, wait for `Ready=False` with `reason`; returns the Ready message.
async fn refused(ns: &TestNs, bad: &str, reason: &str, case: &str) -> String {
    refused_with(ns, bad, reason, "", case).await
}

/// [`refused`], waiting until the Ready message also contains `needle` (a source first reports
/// its new generation as not reconciled yet, then its failure).
async fn refused_with(ns: &TestNs, bad: &str, reason: &str, needle: &str, case: &str) -> String {
    ns.apply_yaml(bad).await;
    let h = wait_hr_for(ns, "web", case, Duration::from_secs(90), |h| {
        cond(h, "Ready").is_some_and(|c| c.0 == "False" && c.1 == reason && c.2.contains(needle))
    })
    .await;
    cond(&h, "Ready").unwrap().2
}

/// Put the good spec back: Ready again, no new revision.
async fn restore(ns: &TestNs, case: &str) {
    ns.apply_yaml(&good()).await;
    let h = wait_hr_for(ns, "web", case, Duration::from_secs(90), |h| {
        cond(h, "Ready").is_some_and(|c| c.0 == "True")
            && h.status.as_ref().and_then(|s| s.observed_generation) == h.metadata.generation
    })
    .await;
    assert_eq!(history(&h), vec![(1, "deployed".to_string())], "{case}");
    assert_last_good_running(ns, case).await;
}

/// A chart the repository does not have, then a version constraint no chart satisfies: the
/// generated HelmChart fails with a Warning naming the chart or constraint, the HelmRelease
/// waits (`SourceNotReady`) with a message carrying the HelmChart's and a Warning of its own; no
/// Helm action.
#[tokio::test]
async fn missing_chart_and_unsatisfiable_version_leave_the_release_running() {
    let (ns, _ctl, _repo, _storage) = deployed("hr-e2e-bad-src").await;
    let chart = format!("{}-web", ns.name);
    for (case, bad, needle) in [
        (
            "missing chart",
            hr_yaml("web", "nope", "1.0.0", "  values:\n    message: good\n"),
            "nope",
        ),
        (
            "unsatisfiable version",
            hr_yaml("web", "app", ">=9.0.0", "  values:\n    message: good\n"),
            ">=9.0.0",
        ),
    ] {
        let message = refused_with(&ns, &bad, "SourceNotReady", needle, case).await;
        assert!(
            message.starts_with(&format!("HelmChart '{}/{chart}' is not ready: ", ns.name))
                && message.contains(needle),
            "{case}: {message}"
        );
        let warnings = warnings_with(&ns, &chart, needle).await;
        assert!(
            !warnings.is_empty(),
            "{case}: a Warning on the HelmChart: {:?}",
            ns.events(&chart).await
        );
        // and on the HelmRelease (Flux has none there): `flux events --for HelmRelease/web`
        let warnings = warnings_with(&ns, "web", needle).await;
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("HelmChart '{}/{chart}' is not ready: ", ns.name))),
            "{case}: a Warning on the HelmRelease: {:?}",
            ns.events("web").await
        );
        assert_last_good_running(&ns, case).await;
        restore(&ns, case).await;
    }
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
}

/// Values the chart's `values.schema.json` refuses; `valuesFrom` a ConfigMap whose data is not
/// YAML; a missing `valuesFrom` Secret, optional (ignored, Ready) and required (`ValuesError`).
#[tokio::test]
async fn bad_values_are_refused_and_leave_the_release_running() {
    let (ns, _ctl, _repo, _storage) = deployed("hr-e2e-bad-vals").await;

    // schema: replicaCount must be an integer
    let case = "values against the schema";
    let bad = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: good\n    replicaCount: many\n",
    );
    ns.apply_yaml(&bad).await;
    let h = wait_hr_for(&ns, "web", case, Duration::from_secs(90), |h| {
        cond(h, "Ready").is_some_and(|c| c.0 == "False" && c.2.contains("replicaCount"))
    })
    .await;
    let (_, reason, message) = cond(&h, "Ready").unwrap();
    assert_eq!(reason, "UpgradeFailed", "{case}: {message}");
    assert!(message.contains("schema"), "{case}: {message}");
    let warnings = warnings_with(&ns, "web", "replicaCount").await;
    assert!(
        warnings.iter().any(|m| m.starts_with(&format!(
            "Helm upgrade failed for release {}/web with chart app@1.0.0",
            ns.name
        ))),
        "{case}: {warnings:?}"
    );
    assert_last_good_running(&ns, case).await;
    restore(&ns, case).await;

    // valuesFrom data that is not YAML
    let case = "valuesFrom not YAML";
    ns.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n  namespace: NAMESPACE\ndata:\n  values.yaml: \"message: [unclosed\"\n",
    )
    .await;
    let bad = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: good\n  valuesFrom:\n    - kind: ConfigMap\n      name: broken\n",
    );
    let message = refused(&ns, &bad, "ValuesError", case).await;
    assert!(message.contains("broken"), "{case}: {message}");
    let warnings = warnings_with(&ns, "web", "broken").await;
    assert!(!warnings.is_empty(), "{case}: {:?}", ns.events("web").await);
    assert_last_good_running(&ns, case).await;
    restore(&ns, case).await;

    // a missing Secret, optional: ignored
    let case = "optional missing Secret";
    let optional = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: good\n  valuesFrom:\n    - kind: Secret\n      name: missing\n      optional: true\n",
    );
    ns.apply_yaml(&optional).await;
    let h = wait_hr_for(&ns, "web", case, Duration::from_secs(90), |h| {
        h.status.as_ref().and_then(|s| s.observed_generation) == h.metadata.generation
            && cond(h, "Ready").is_some_and(|c| c.0 != "Unknown")
    })
    .await;
    assert_eq!(
        cond(&h, "Ready").map(|c| c.0).as_deref(),
        Some("True"),
        "{case}: {:?}",
        cond(&h, "Ready")
    );
    assert_last_good_running(&ns, case).await;

    // required: ValuesError naming it
    let case = "required missing Secret";
    let required = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: good\n  valuesFrom:\n    - kind: Secret\n      name: missing\n",
    );
    let message = refused(&ns, &required, "ValuesError", case).await;
    assert!(message.contains("missing"), "{case}: {message}");
    let warnings = warnings_with(&ns, "web", "missing").await;
    assert!(!warnings.is_empty(), "{case}: {:?}", ns.events("web").await);
    assert_last_good_running(&ns, case).await;
    restore(&ns, case).await;
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
}

/// A template that fails to render (`failRender`), then a `serviceAccountName` whose account may
/// do nothing: each `Ready=False`, a Warning with the cause, no new revision.
#[tokio::test]
async fn render_failure_and_account_without_rights_leave_the_release_running() {
    let (ns, _ctl, _repo, _storage) = deployed("hr-e2e-bad-run").await;
    let case = "template fails to render";
    let bad = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: good\n    failRender: true\n",
    );
    ns.apply_yaml(&bad).await;
    let h = wait_hr_for(&ns, "web", case, Duration::from_secs(90), |h| {
        cond(h, "Ready").is_some_and(|c| c.0 == "False" && c.2.contains(RENDER_FAILURE_MESSAGE))
    })
    .await;
    assert_eq!(cond(&h, "Ready").unwrap().1, "UpgradeFailed");
    let warnings = warnings_with(&ns, "web", RENDER_FAILURE_MESSAGE).await;
    assert!(!warnings.is_empty(), "{case}: {:?}", ns.events("web").await);
    assert_last_good_running(&ns, case).await;
    restore(&ns, case).await;

    let case = "account without rights";
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: nobody\n  namespace: NAMESPACE\n",
    )
    .await;
    let bad = hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  serviceAccountName: nobody\n  values:\n    message: changed\n",
    );
    ns.apply_yaml(&bad).await;
    let account = format!("system:serviceaccount:{}:nobody", ns.name);
    let h = wait_hr_for(&ns, "web", case, Duration::from_secs(90), |h| {
        cond(h, "Ready").is_some_and(|c| c.0 == "False" && c.2.contains("forbidden"))
    })
    .await;
    let (_, reason, message) = cond(&h, "Ready").unwrap();
    assert!(message.contains(&account), "{case}: {reason}: {message}");
    let warnings = warnings_with(&ns, "web", &account).await;
    assert!(
        warnings.iter().any(|m| m.contains("forbidden")),
        "{case}: {:?}",
        ns.events("web").await
    );
    assert_last_good_running(&ns, case).await;
    restore(&ns, case).await;
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
}

/// `apiVersion: source.toolkit.fluxcd.io/v1` `kind: HelmRelease` (a tutorial mistake): kubectl
/// refuses it with the text docs/guide.md quotes, and nothing is stored; the same object with
/// `helm.toolkit.fluxcd.io/v2` is accepted (server dry-run).
#[tokio::test]
async fn helm_release_with_the_source_group_is_refused_by_the_api_server() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-e2e-bad-api", 0).await;
    let wrong = hr_yaml("web", "app", "1.0.0", "")
        .replace("helm.toolkit.fluxcd.io/v2", "source.toolkit.fluxcd.io/v1")
        .replace("NAMESPACE", &ns.name);
    let apply = |manifest: &str, extra: &[&str]| {
        let mut child = Command::new(kubectl())
            .args(["--kubeconfig", &kubeconfig_path(), "apply", "-f", "-"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = apply(&wrong, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let quoted = r#"no matches for kind "HelmRelease" in version "source.toolkit.fluxcd.io/v1""#;
    assert!(stderr.contains(quoted), "{stderr}");
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md")).unwrap();
    assert!(
        guide.contains(quoted) && guide.contains("apiVersion: helm.toolkit.fluxcd.io/v2"),
        "docs/guide.md tells the user the right group"
    );
    assert!(get_hr(&ns, "web").await.is_none());
    let right = wrong.replace(
        "source.toolkit.fluxcd.io/v1\nkind: HelmRelease",
        "helm.toolkit.fluxcd.io/v2\nkind: HelmRelease",
    );
    assert!(right.contains("helm.toolkit.fluxcd.io/v2"));
    let out = apply(&right, &["--dry-run=server"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::sources::cleanup(ns).await;
}
