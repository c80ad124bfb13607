//! Helpers for HelmRelease tests against the real cluster: the controller process with a
//! chosen set of controllers, the `charts` HelmRepository, HelmRelease manifests, waiting on
//! conditions, and the `helm` CLI as the witness (`helm history`), shared by the HelmRelease
//! test files.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::helm_release::HelmRelease;
use serde_json::{Value, json};

use super::{ControllerProcess, TestNs, free_port, helm, kubeconfig_path, wait_until};

/// `pennant controller --controllers <controllers>` in `ns` (log `helm-<log>`), helm from the
/// cache, with `extra` arguments (e.g. `--metrics-server URL`).
pub fn start_controllers(
    ns: &str,
    log: &str,
    controllers: &str,
    storage: &Path,
    extra: &[&str],
) -> ControllerProcess {
    start_controllers_with_helm(ns, log, controllers, storage, &helm(), extra)
}

/// [`start_controllers`] with `PENNANT_HELM` = `helm` (e.g. a wrapper script).
pub fn start_controllers_with_helm(
    ns: &str,
    log: &str,
    controllers: &str,
    storage: &Path,
    helm: &str,
    extra: &[&str],
) -> ControllerProcess {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--controllers",
        controllers,
        "--storage-path",
        storage.to_str().unwrap(),
        "--listen",
        &listen,
        "--log-level",
        "info,pennant=debug",
    ];
    args.extend_from_slice(extra);
    ControllerProcess::start_with(
        ns,
        &format!("helm-{log}"),
        &kubeconfig_path(),
        &args,
        &[("PENNANT_HELM", helm)],
    )
}

/// The `charts` HelmRepository at `url`.
pub async fn helm_repository(ns: &TestNs, url: &str) {
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n"
    ))
    .await;
}

/// A HelmRelease `name` of chart `chart` (`version`) from the `charts` HelmRepository; `extra`
/// is more of `spec` (YAML lines, two spaces in).
pub fn hr_yaml(name: &str, chart: &str, version: &str, extra: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: {chart}\n      version: \"{version}\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n{extra}"
    )
}

pub async fn get_hr(ns: &TestNs, name: &str) -> Option<HelmRelease> {
    Api::<HelmRelease>::namespaced(ns.client.clone(), &ns.name)
        .get_opt(name)
        .await
        .unwrap()
}

/// (status, reason, message) of condition `t`.
pub fn cond(hr: &HelmRelease, t: &str) -> Option<(String, String, String)> {
    let c = hr
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn ready_reason(h: &HelmRelease) -> Option<(String, String)> {
    cond(h, "Ready").map(|(s, r, _)| (s, r))
}

/// Whether `Ready` is `status`/`reason`.
pub fn is_ready(h: &HelmRelease, status: &str, reason: &str) -> bool {
    ready_reason(h) == Some((status.into(), reason.into()))
}

/// Waits until `f` holds for the HelmRelease (`timeout`), returning it; panics with the status.
pub async fn wait_hr_for(
    ns: &TestNs,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&HelmRelease) -> bool,
) -> HelmRelease {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = get_hr(ns, name).await
            && f(&h)
        {
            return h;
        }
        if Instant::now() > deadline {
            let h = get_hr(ns, name).await;
            panic!(
                "{what}: HelmRelease {name} now {:#?}",
                h.and_then(|h| h.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`wait_hr_for`] with 120 s.
pub async fn wait_hr(
    ns: &TestNs,
    name: &str,
    what: &str,
    f: impl Fn(&HelmRelease) -> bool,
) -> HelmRelease {
    wait_hr_for(ns, name, what, Duration::from_secs(120), f).await
}

/// Sets `reconcile.fluxcd.io/requestedAt` to a new token (as `flux reconcile hr` does) and
/// waits until the controller reports it handled (`status.lastHandledReconcileAt`).
pub async fn request_reconcile(ns: &TestNs, name: &str) {
    let token = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    Api::<HelmRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}),
            ),
        )
        .await
        .unwrap();
    wait_hr(ns, name, "reconcile request handled", |h| {
        h.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(token.as_str())
    })
    .await;
}

/// `helm <args> -n ns -o json` against the local cluster, as JSON.
pub fn helm_json(ns: &str, args: &[&str]) -> Value {
    helm_json_at(&kubeconfig_path(), ns, args)
}

/// `helm <args> -n ns -o json --kubeconfig <kubeconfig>` as JSON.
pub fn helm_json_at(kubeconfig: &str, ns: &str, args: &[&str]) -> Value {
    let out = Command::new(helm())
        .args(args)
        .args(["--namespace", ns, "-o", "json", "--kubeconfig", kubeconfig])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `helm history` on the local cluster as (revision, status) pairs, oldest first.
pub fn helm_history(ns: &str, release: &str) -> Vec<(i64, String)> {
    helm_history_at(&kubeconfig_path(), ns, release)
}

/// `helm history` with `kubeconfig` as (revision, status) pairs, oldest first.
pub fn helm_history_at(kubeconfig: &str, ns: &str, release: &str) -> Vec<(i64, String)> {
    helm_json_at(kubeconfig, ns, &["history", release])
        .as_array()
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

/// `status.history` as (version, status), newest first.
pub fn history(h: &HelmRelease) -> Vec<(i64, String)> {
    h.status
        .as_ref()
        .map(|s| {
            s.history
                .iter()
                .map(|s| (s.version, s.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every entry of `status.history` is in `helm history` with the same status, and the newest
/// entries agree.
pub fn assert_history_agrees(h: &HelmRelease, ns: &str, release: &str) {
    let helm = helm_history(ns, release);
    let mine = history(h);
    assert!(!mine.is_empty(), "status.history empty, helm: {helm:?}");
    for e in &mine {
        assert!(
            helm.contains(e),
            "{e:?} of status.history not in helm history {helm:?}"
        );
    }
    assert_eq!(
        mine.first(),
        helm.last(),
        "newest: status {mine:?} helm {helm:?}"
    );
}

pub async fn configmap_data(ns: &TestNs, name: &str, key: &str) -> Option<String> {
    ns.get("v1", "ConfigMap", name)
        .await
        .and_then(|c| c["data"][key].as_str().map(String::from))
}

/// Deletes the namespace's HelmReleases while the controller still runs (it uninstalls and
/// releases their finalizers).
pub async fn delete_releases(ns: &TestNs) {
    let api = Api::<HelmRelease>::namespaced(ns.client.clone(), &ns.name);
    let _ = api
        .delete_collection(&Default::default(), &Default::default())
        .await;
    wait_until(
        Duration::from_secs(90),
        "HelmReleases finalized",
        || async {
            api.list(&Default::default())
                .await
                .is_ok_and(|l| l.items.is_empty())
        },
    )
    .await;
}

/// Warning events of `name` whose message contains `needle` (polls up to `EVENT_WAIT`).
pub async fn warnings_with(ns: &TestNs, name: &str, needle: &str) -> Vec<String> {
    ns.events_until(name, |ev| {
        ev.iter().any(|(t, m)| t == "Warning" && m.contains(needle))
    })
    .await
    .into_iter()
    .filter(|(t, m)| t == "Warning" && m.contains(needle))
    .map(|e| e.1)
    .collect()
}
