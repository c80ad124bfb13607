//! `pennant diff hr` end to end: a release installed by pennant's helm controller
//! (`--controllers source,helm`, the real `helm` v4, a real HTTP Helm repository), then the
//! HelmRelease suspended and changed, and `pennant diff hr` run as a user would: the exact
//! changed field, exit codes 0/1/2, helm's own error for a template that fails, and nothing
//! written (resourceVersions and `helm history` unchanged).

mod support;

use std::process::Command;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::helm_release::HelmRelease;
use serde_json::{Value, json};
use support::charts::{ChartSpec, RENDER_FAILURE_MESSAGE};
use support::helmrepo::HelmRepo;
use support::sources::cleanup;
use support::*;

/// `pennant controller --controllers source,helm` in `ns`.
fn start(ns: &str, storage: &std::path::Path) -> ControllerProcess {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--controllers",
        "source,helm",
        "--storage-path",
        storage.to_str().unwrap(),
        "--listen",
        &listen,
        "--log-level",
        "info,pennant=debug",
    ];
    ControllerProcess::start_with(
        ns,
        &format!("helm-cli-{ns}"),
        &kubeconfig_path(),
        &args,
        &[("PENNANT_HELM", &helm())],
    )
}

/// `pennant <args>` as a user: (exit code, stdout, stderr).
fn pennant(args: &[&str]) -> (i32, String, String) {
    run_cli(
        args,
        &[("PENNANT_HELM", helm()), ("PENNANT_KUSTOMIZE", kustomize())],
    )
}

/// `helm history` as (revision, status), oldest first.
fn helm_history(ns: &str, release: &str) -> Vec<(i64, String)> {
    let out = Command::new(helm())
        .args(["history", release, "--namespace", ns, "-o", "json"])
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The `+`/`-` lines of the unified diff under the `► <subject> configured` line.
fn changed_lines(stdout: &str, subject: &str) -> Vec<String> {
    let head = format!("► {subject} configured");
    stdout
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with('►'))
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .map(String::from)
        .collect()
}

/// resourceVersions of everything a diff must not write.
async fn versions(ns: &TestNs) -> Vec<(String, String)> {
    let mut out = vec![];
    for (api_version, kind, name) in [
        ("v1", "ConfigMap", "web-values".to_string()),
        ("v1", "Service", "web".to_string()),
        ("apps/v1", "Deployment", "web".to_string()),
        (
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            format!("{}-web", ns.name),
        ),
        (
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "web".to_string(),
        ),
    ] {
        let o = ns.get(api_version, kind, &name).await.unwrap();
        out.push((
            format!("{kind}/{name}"),
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let secrets = ns.api("v1", "Secret");
    let mut stored: Vec<String> = secrets
        .list(&kube::api::ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            format!(
                "{}@{}",
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default()
            )
        })
        .collect();
    stored.sort();
    out.push(("release secrets".into(), stored.join(",")));
    out
}

async fn patch_hr(ns: &TestNs, patch: Value) {
    Api::<HelmRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn diff_hr_shows_what_the_next_upgrade_would_apply_and_writes_nothing() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-diff-cli", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let mut ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    // charts whose template fails when `failRender` is true (their default; off in the HR)
    ChartSpec::new("app", "1.0.0")
        .broken_template()
        .publish(&repo);
    ChartSpec::new("app", "1.1.0")
        .broken_template()
        .publish(&repo);
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n",
        repo.url
    ))
    .await;
    ns.apply_yaml(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: app\n      version: \"1.0.0\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n  values:\n    message: hello\n    failRender: false\n",
    )
    .await;
    let api = Api::<HelmRelease>::namespaced(client.clone(), &ns.name);
    wait_until(Duration::from_secs(120), "installed", || async {
        api.get_opt("web").await.ok().flatten().is_some_and(|h| {
            h.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "InstallSucceeded")
            })
        })
    })
    .await;
    patch_hr(&ns, json!({"spec": {"suspend": true}})).await;
    let n = ns.name.as_str();

    // nothing changed: exit 0, only the summary line
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "► HelmRelease/{n}/web app@1.0.0 unchanged, values sha256:"
        )) && lines[0].ends_with(" unchanged"),
        "{out}"
    );
    let before = versions(&ns).await;
    let history = helm_history(n, "web");
    assert_eq!(history, vec![(1, "deployed".to_string())]);

    // a values change: exit 1, exactly the changed field
    patch_hr(&ns, json!({"spec": {"values": {"message": "changed"}}})).await;
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("identified at least one change"), "{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.contains("app@1.0.0 unchanged, values sha256:"),
        "{first}"
    );
    assert!(first.contains(" → sha256:"), "{first}");
    assert_eq!(
        changed_lines(&out, &format!("ConfigMap/{n}/web-values")),
        ["-  message: hello", "+  message: changed"],
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with('►')).count(),
        2,
        "the summary and the ConfigMap, nothing else: {out}"
    );

    // `build hr`: the objects of the next release (the new message in the ConfigMap)
    let (code, out, err) = pennant(&["build", "hr", "web", "-n", n]);
    assert_eq!(code, 0, "{err}");
    let docs = yaml_docs(&out);
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(cm["data"]["message"], "changed", "{out}");
    assert_eq!(docs.len(), 3, "ConfigMap, Service, Deployment: {out}");

    // a template that fails: exit 2, helm's message on stderr
    patch_hr(&ns, json!({"spec": {"values": {"failRender": true}}})).await;
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with("✗ render failed: "), "{err}");
    assert!(err.contains(RENDER_FAILURE_MESSAGE), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    patch_hr(&ns, json!({"spec": {"values": {"failRender": false}}})).await;

    // a new chart version in spec.chart: the generated HelmChart is stale until the controller
    // updates it, and the diff says so rather than diffing the old chart
    patch_hr(
        &ns,
        json!({"spec": {"chart": {"spec": {"version": "1.1.0"}}}}),
    )
    .await;
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("source not ready: HelmChart") && err.contains("spec.version"),
        "{err}"
    );

    // nothing written by any of these
    assert_eq!(
        versions(&ns).await[..4],
        before[..4],
        "objects and HelmChart untouched"
    );
    assert_eq!(
        versions(&ns).await[5],
        before[5],
        "release storage untouched"
    );
    assert_eq!(helm_history(n, "web"), history);

    // the HelmChart moves to 1.1.0 (as the controller would make it): the diff shows the
    // chart change and the ConfigMap's new chartVersion beside the new message
    let hc = format!("{n}-web");
    ns.api("source.toolkit.fluxcd.io/v1", "HelmChart")
        .patch(
            &hc,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"version": "1.1.0"}})),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "HelmChart at 1.1.0", || async {
        ns.get("source.toolkit.fluxcd.io/v1", "HelmChart", &hc)
            .await
            .is_some_and(|c| c["status"]["artifact"]["revision"] == "1.1.0")
    })
    .await;
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("app@1.0.0 → app@1.1.0"),
        "{out}"
    );
    let cm = changed_lines(&out, &format!("ConfigMap/{n}/web-values"));
    for want in [
        "-  chartVersion: 1.0.0",
        "+  chartVersion: 1.1.0",
        "-  message: hello",
        "+  message: changed",
    ] {
        assert!(
            cm.iter().any(|l| l.replace(['\'', '"'], "") == want),
            "{want} in {cm:?}\n{out}"
        );
    }
    assert_eq!(helm_history(n, "web"), history, "still no new revision");

    // a HelmRelease that does not exist
    let (code, _, err) = pennant(&["diff", "hr", "nope", "-n", n]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), format!("✗ HelmRelease '{n}/nope' not found"));

    // the controller finalizes the HelmRelease and the HelmChart, then stops
    cleanup(ns).await;
    ctl.terminate(Duration::from_secs(10));
}
