//! The kustomize controller's e2e fixtures: a repository layout with `apps/base` (a Deployment
//! and a ConfigMap) and `apps/overlays/production` (a replica patch), and helpers reading a
//! Kustomization's status.

use std::time::Duration;

use kube::Api;
use pennant::api::kustomization::Kustomization;

use super::TestNs;
use super::gitserver::Repo;

pub const BASE_KUSTOMIZATION: &str = "resources:\n  - deployment.yaml\n  - config.yaml\n";
pub const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.27\n";
pub const CONFIG: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  level: info\n";

pub fn overlay(replicas: u32) -> String {
    format!(
        "resources:\n  - ../../base\npatches:\n  - target:\n      kind: Deployment\n      name: web\n    patch: |\n      - op: replace\n        path: /spec/replicas\n        value: {replicas}\n"
    )
}

/// Commits `apps/base` and `apps/overlays/production` (at `replicas`) to `main`: the sha.
pub fn commit_apps(repo: &Repo, replicas: u32) -> String {
    repo.commit(
        "main",
        &[
            ("apps/base/kustomization.yaml", BASE_KUSTOMIZATION),
            ("apps/base/deployment.yaml", DEPLOYMENT),
            ("apps/base/config.yaml", CONFIG),
            (
                "apps/overlays/production/kustomization.yaml",
                &overlay(replicas),
            ),
        ],
        &format!("production at {replicas} replicas"),
    )
}

/// Removes `apps/base/config.yaml` (and its entry in the base): the new commit's sha.
pub fn remove_config(repo: &Repo) -> String {
    super::gitserver::git(&repo.work, &["rm", "-q", "apps/base/config.yaml"]);
    repo.commit(
        "main",
        &[(
            "apps/base/kustomization.yaml",
            "resources:\n  - deployment.yaml\n",
        )],
        "no config",
    )
}

/// A GitRepository `name` in the test namespace following `main` of `url` every 10 minutes.
pub async fn git_repository(ns: &TestNs, name: &str, url: &str) {
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n  ref:\n    branch: main\n"
    ))
    .await;
}

pub fn ks(name: &str, ns: &str) -> Kustomization {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name},
        "spec": {"interval": "10m", "path": "./apps/overlays/production", "prune": true, "targetNamespace": ns,
            "sourceRef": {"kind": "GitRepository", "name": "apps"}}
    }))
    .unwrap()
}

pub async fn get_ks(ns: &TestNs, name: &str) -> Kustomization {
    Api::<Kustomization>::namespaced(ns.client.clone(), &ns.name)
        .get(name)
        .await
        .unwrap()
}

pub fn ready(k: &Kustomization) -> Option<(String, String, String)> {
    super::sources::ready_of(&k.status.as_ref()?.conditions)
}

/// Waits (up to 40 s) until `done` holds for the Kustomization `name`; panics with its last
/// status, naming `what`.
pub async fn wait_ks_for(
    ns: &TestNs,
    name: &str,
    what: &str,
    done: impl Fn(&Kustomization) -> bool,
) -> Kustomization {
    let mut last = None;
    for _ in 0..600 {
        let k = get_ks(ns, name).await;
        if done(&k) {
            return k;
        }
        last = Some(k);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: no {what}: {:?}", last.and_then(|k| k.status));
}

/// Waits until Ready has `reason` and the last attempted revision is `main@sha1:<sha>`.
pub async fn wait_ks(ns: &TestNs, name: &str, sha: &str, reason: &str) -> Kustomization {
    let rev = format!("main@sha1:{sha}");
    wait_ks_for(ns, name, &format!("{reason} at {rev}"), |k| {
        let attempted = k
            .status
            .as_ref()
            .and_then(|s| s.last_attempted_revision.as_deref());
        attempted == Some(rev.as_str()) && ready(k).is_some_and(|(_, r, _)| r == reason)
    })
    .await
}

/// Waits until Ready is True with `main@sha1:<sha>` as the last applied revision.
pub async fn wait_applied(ns: &TestNs, name: &str, sha: &str) -> Kustomization {
    let rev = format!("main@sha1:{sha}");
    wait_ks_for(ns, name, &format!("{rev} applied"), |k| {
        let applied = k
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref());
        applied == Some(rev.as_str()) && ready(k).is_some_and(|(status, _, _)| status == "True")
    })
    .await
}

/// Waits until Ready has `reason` and a message containing `needle`.
pub async fn wait_ready(ns: &TestNs, name: &str, reason: &str, needle: &str) -> Kustomization {
    wait_ks_for(ns, name, &format!("{reason} with {needle:?}"), |k| {
        ready(k).is_some_and(|(_, r, m)| r == reason && m.contains(needle))
    })
    .await
}

/// The ids of `status.inventory` (`<namespace>_<name>_<group>_<kind>`), in order.
pub fn inventory_ids(k: &Kustomization) -> Vec<String> {
    let inv = k.status.as_ref().and_then(|s| s.inventory.as_ref());
    inv.map(|i| i.entries.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

/// `flux reconcile`'s request: a new `reconcile.fluxcd.io/requestedAt` token.
pub async fn request_reconcile(api: &Api<Kustomization>, name: &str, token: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    api.patch(name, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
}
