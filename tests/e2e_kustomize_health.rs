//! Kustomization health checks and `dependsOn` end to end: the real Git server, pennant's
//! source and kustomize controllers in one process, kwok's pods (a pod template annotated
//! `e2e.pennant.dev/never-ready: "true"` never becomes Ready) and the `flux` CLI.
//!
//! - `a_health_wait_blocks_nothing_times_out_as_flux_and_a_fix_supersedes_it`: `wait: true`
//!   on a Deployment that becomes ready (Ready, Healthy), one that never does (`HealthCheckFailed`
//!   with Flux's message after `timeout`, a Warning Event, retried after `retryInterval`) while
//!   the first becomes Ready meanwhile, and a commit fixing a third one supersedes its wait.
//! - `cel_health_of_a_custom_resource_and_a_dependency_wakes_its_dependent`: `healthCheckExprs`
//!   judge a custom resource; a Kustomization depending on it becomes Ready seconds after it
//!   (not on the 30 s `--requeue-dependency` timer); a HelmRelease dependency (pennant's
//!   `dependsOn[].kind`, on pennant's HelmRelease CRD) is reported not found while absent, and
//!   its dependent follows within seconds once it is Ready for its generation.
//! - `an_impersonated_wait_is_woken_by_the_watch_not_the_periodic_recheck`: with
//!   `serviceAccountName` the wait reads as the account but is woken by the controller's watch.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use pennant::api::helm_release::HelmRelease;
use pennant::api::kustomization::Kustomization;
use serde_json::json;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::kustomize::{get_ks, git_repository};
use support::sources::{cleanup, flux_ok, start_source_and_kustomize_controllers};
use support::*;

fn deployment(name: &str, never_ready: bool) -> String {
    let annotations = if never_ready {
        "      annotations:\n        e2e.pennant.dev/never-ready: \"true\"\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n{annotations}    spec:\n      containers:\n        - name: app\n          image: nginx:1.27\n"
    )
}

fn ks(name: &str, ns: &str, spec: serde_json::Value) -> Kustomization {
    let mut s = json!({"interval": "10m", "prune": true, "targetNamespace": ns,
        "sourceRef": {"kind": "GitRepository", "name": "apps"}});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name}, "spec": s
    }))
    .unwrap()
}

/// A condition as (status, reason, message).
fn cond(k: &Kustomization, type_: &str) -> Option<(String, String, String)> {
    let c = k
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is(k: &Kustomization, type_: &str, status: &str, reason: &str) -> bool {
    cond(k, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

#[tokio::test]
async fn a_health_wait_blocks_nothing_times_out_as_flux_and_a_fix_supersedes_it() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-health", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha1 = repo.commit(
        "main",
        &[
            ("good/deploy.yaml", &deployment("good", false)),
            ("stuck/deploy.yaml", &deployment("stuck", true)),
            ("fixme/deploy.yaml", &deployment("fixme", true)),
        ],
        "three deployments",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let rev1 = format!("main@sha1:{sha1}");

    // never ready: times out after 30s (Flux's floor of spec.timeout), retried 5s later
    let stuck = ks(
        "stuck",
        &ns.name,
        json!({"path": "./stuck", "wait": true, "timeout": "30s", "retryInterval": "5s"}),
    );
    api.create(&Default::default(), &stuck).await.unwrap();
    // never ready until a commit fixes it; its own timeout (2m) is never reached
    let fixme = ks(
        "fixme",
        &ns.name,
        json!({"path": "./fixme", "wait": true, "timeout": "2m"}),
    );
    api.create(&Default::default(), &fixme).await.unwrap();
    let running = format!("Running health checks for revision {rev1} with a timeout of 30s");
    wait_until(Duration::from_secs(30), "stuck waiting", || async {
        let k = get_ks(&ns, "stuck").await;
        cond(&k, "Healthy") == Some(("Unknown".into(), "Progressing".into(), running.clone()))
            && cond(&k, "Reconciling").is_some_and(|c| c.2 == running)
            && is(&k, "Ready", "Unknown", "Progressing")
    })
    .await;

    let t_stuck = Instant::now();
    // meanwhile another Kustomization of the namespace is applied and becomes Ready
    let t_good = Instant::now();
    api.create(
        &Default::default(),
        &ks("good", &ns.name, json!({"path": "./good", "wait": true})),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "good Ready", || async {
        is(
            &get_ks(&ns, "good").await,
            "Ready",
            "True",
            "ReconciliationSucceeded",
        )
    })
    .await;
    let good_lag = t_good.elapsed();
    println!("wait: true on a ready Deployment -> Ready: {good_lag:?}");
    let good = get_ks(&ns, "good").await;
    let (h, r, m) = cond(&good, "Healthy").expect("Healthy");
    assert_eq!((h.as_str(), r.as_str()), ("True", "Succeeded"));
    assert!(m.starts_with("Health check passed in "), "{m}");
    assert_eq!(
        cond(&good, "Ready").unwrap().2,
        format!("Applied revision: {rev1}")
    );
    let stuck_now = get_ks(&ns, "stuck").await;
    assert!(
        is(&stuck_now, "Healthy", "Unknown", "Progressing"),
        "good became Ready while stuck was still waiting: {:?}",
        stuck_now.status
    );
    let events = ns.events_with("good", &["Health check passed in "]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Normal" && m.starts_with("Health check passed in ")),
        "{events:?}"
    );

    // stuck: Flux's HealthCheckFailed after the timeout
    wait_until(
        Duration::from_secs(45),
        "stuck HealthCheckFailed",
        || async {
            is(
                &get_ks(&ns, "stuck").await,
                "Ready",
                "False",
                "HealthCheckFailed",
            )
        },
    )
    .await;
    let took = t_stuck.elapsed();
    println!("never-ready Deployment, timeout 30s: wait seen -> HealthCheckFailed {took:?}");
    assert!(
        took >= Duration::from_secs(28) && took < Duration::from_secs(34),
        "{took:?}"
    );
    let k = get_ks(&ns, "stuck").await;
    let want = format!(
        "timeout waiting for: [Deployment/{}/stuck status: 'InProgress']",
        ns.name
    );
    let (_, _, ready_msg) = cond(&k, "Ready").unwrap();
    assert!(
        ready_msg.starts_with("health check failed after 30") && ready_msg.ends_with(&want),
        "{ready_msg}"
    );
    assert_eq!(
        cond(&k, "Healthy"),
        Some(("False".into(), "HealthCheckFailed".into(), want.clone()))
    );
    assert_eq!(
        cond(&k, "Reconciling").map(|c| c.1),
        Some("ProgressingWithRetry".into())
    );
    let st = k.status.clone().unwrap();
    assert_eq!(
        st.last_applied_revision, None,
        "nothing healthy applied yet"
    );
    assert_eq!(st.last_attempted_revision.as_deref(), Some(rev1.as_str()));
    assert_eq!(st.history[0].last_reconciled_status, "HealthCheckFailed");
    assert_eq!(
        st.inventory.map(|i| i.entries.len()),
        Some(1),
        "the inventory has the applied Deployment"
    );
    let events = ns
        .events_until("stuck", |events| {
            events
                .iter()
                .any(|(t, m)| t == "Warning" && m.ends_with(&want))
        })
        .await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && m.ends_with(&want)),
        "{events:?}"
    );
    // retried after retryInterval (5s): applied again, a new wait
    let t_failed = Instant::now();
    wait_until(Duration::from_secs(20), "retry", || async {
        is(
            &get_ks(&ns, "stuck").await,
            "Healthy",
            "Unknown",
            "Progressing",
        )
    })
    .await;
    let again = t_failed.elapsed();
    println!("HealthCheckFailed -> retry (a new wait): {again:?}");
    assert!(
        again >= Duration::from_secs(3) && again < Duration::from_secs(10),
        "{again:?}"
    );

    // fixme is still waiting (its timeout is 2m); a commit fixing it supersedes the wait
    assert!(is(
        &get_ks(&ns, "fixme").await,
        "Healthy",
        "Unknown",
        "Progressing"
    ));
    let sha2 = repo.commit(
        "main",
        &[("fixme/deploy.yaml", &deployment("fixme", false))],
        "fixme: no longer never-ready",
    );
    let t_fix = Instant::now();
    flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    let rev2 = format!("main@sha1:{sha2}");
    wait_until(
        Duration::from_secs(30),
        "fixme Ready at the fix",
        || async {
            let k = get_ks(&ns, "fixme").await;
            is(&k, "Ready", "True", "ReconciliationSucceeded")
                && k.status.and_then(|s| s.last_applied_revision) == Some(rev2.clone())
        },
    )
    .await;
    let fix_lag = t_fix.elapsed();
    println!("fixing commit -> superseded wait Ready: {fix_lag:?}");
    assert!(fix_lag < Duration::from_secs(20), "{fix_lag:?}");
    assert!(is(
        &get_ks(&ns, "fixme").await,
        "Healthy",
        "True",
        "Succeeded"
    ));

    let get = flux_ok(&ns.name, &["get", "ks"]);
    let line = |n: &str| {
        get.lines()
            .find(|l| l.starts_with(&format!("{n} ")) || l.starts_with(&format!("{n}\t")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("fixme").contains("True"), "{get}");
    assert!(line("good").contains("True"), "{get}");
    // stuck: superseded by the new revision too, waiting again (its Deployment is still broken)
    assert!(line("stuck").contains("Unknown"), "{get}");
    for n in ["good", "stuck", "fixme"] {
        api.delete(n, &Default::default()).await.unwrap();
    }
    cleanup(ns).await;
}

const WIDGET_CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.health.e2e.pennant.dev"},
  "spec": {"group": "health.e2e.pennant.dev", "scope": "Namespaced",
    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;

#[tokio::test]
async fn cel_health_of_a_custom_resource_and_a_dependency_wakes_its_dependent() {
    let client = client().await;
    apply(&client, &serde_json::from_str(WIDGET_CRD).unwrap()).await;
    let ns = TestNs::new(&client, "ks-cel", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    repo.commit(
        "main",
        &[
            (
                "widget/widget.yaml",
                "apiVersion: health.e2e.pennant.dev/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: 1\n",
            ),
            (
                "app/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n",
            ),
            (
                "after-helm/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-helm\ndata:\n  a: \"1\"\n",
            ),
        ],
        "a widget and an app",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    wait_until(Duration::from_secs(30), "widget CRD served", || async {
        kube::discovery::pinned_kind(
            &client,
            &kube::api::GroupVersionKind::gvk("health.e2e.pennant.dev", "v1", "Widget"),
        )
        .await
        .is_ok()
    })
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let widget = ks(
        "widget",
        &ns.name,
        json!({"path": "./widget", "timeout": "5m",
            "healthChecks": [{"apiVersion": "health.e2e.pennant.dev/v1", "kind": "Widget", "name": "w", "namespace": ns.name}],
            "healthCheckExprs": [{"apiVersion": "health.e2e.pennant.dev/v1", "kind": "Widget",
                "current": "status.phase == 'Ready'", "failed": "status.phase == 'Broken'"}]}),
    );
    api.create(&Default::default(), &widget).await.unwrap();
    let app = ks(
        "app",
        &ns.name,
        json!({"path": "./app", "dependsOn": [{"name": "widget"}]}),
    );
    api.create(&Default::default(), &app).await.unwrap();
    // a HelmRelease dependency that does not exist yet (pennant's CRDs, HelmRelease's included,
    // applied again just before: the shared dev cluster may hold an older Kustomization CRD
    // without `dependsOn[].kind`, which the API server would prune)
    for crd in pennant::api::crds::all() {
        apply(&client, &serde_json::to_value(&crd).unwrap()).await;
    }
    let hr = ks(
        "after-helm",
        &ns.name,
        json!({"path": "./after-helm", "dependsOn": [{"kind": "HelmRelease", "name": "ingress"}]}),
    );
    api.create(&Default::default(), &hr).await.unwrap();

    wait_until(Duration::from_secs(30), "widget waiting", || async {
        is(
            &get_ks(&ns, "widget").await,
            "Healthy",
            "Unknown",
            "Progressing",
        )
    })
    .await;
    let not_ready = format!("dependency '{}/widget' is not ready", ns.name);
    wait_until(
        Duration::from_secs(30),
        "app DependencyNotReady",
        || async {
            cond(&get_ks(&ns, "app").await, "Ready")
                == Some((
                    "False".into(),
                    "DependencyNotReady".into(),
                    not_ready.clone(),
                ))
        },
    )
    .await;
    assert!(ns.get("v1", "ConfigMap", "app").await.is_none());
    let retrying = "Dependencies do not meet ready condition, retrying in 30s";
    let events = ns.events_with("app", &[retrying]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Normal" && m == retrying),
        "{events:?}"
    );
    let helm_msg = format!(
        "dependency '{0}/ingress' not found: helmreleases.helm.toolkit.fluxcd.io \"ingress\" not found",
        ns.name
    );
    wait_until(
        Duration::from_secs(30),
        "HelmRelease dependency",
        || async {
            cond(&get_ks(&ns, "after-helm").await, "Ready")
                == Some((
                    "False".into(),
                    "DependencyNotReady".into(),
                    helm_msg.clone(),
                ))
        },
    )
    .await;
    // the HelmRelease appears (no helm controller runs here: the test writes its status), not
    // ready, then Ready for its generation: the dependent is woken, not left to the 30 s timer
    let releases = Api::<HelmRelease>::namespaced(client.clone(), &ns.name);
    let ingress: HelmRelease = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "ingress", "namespace": ns.name},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "ingress"}},
    }))
    .unwrap();
    let ingress = releases
        .create(&Default::default(), &ingress)
        .await
        .unwrap();
    let not_ready = format!("dependency '{}/ingress' is not ready", ns.name);
    wait_until(Duration::from_secs(30), "HelmRelease not ready", || async {
        cond(&get_ks(&ns, "after-helm").await, "Ready")
            == Some((
                "False".into(),
                "DependencyNotReady".into(),
                not_ready.clone(),
            ))
    })
    .await;
    let t_hr = Instant::now();
    let status = json!({"status": {"observedGeneration": ingress.metadata.generation,
        "conditions": [{"type": "Ready", "status": "True", "reason": "InstallSucceeded",
            "message": "Helm install succeeded", "lastTransitionTime": "2026-12-06T00:00:00Z"}]}});
    releases
        .patch_status(
            "ingress",
            &Default::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "after-helm Ready", || async {
        is(
            &get_ks(&ns, "after-helm").await,
            "Ready",
            "True",
            "ReconciliationSucceeded",
        )
    })
    .await;
    assert!(
        t_hr.elapsed() < Duration::from_secs(15),
        "woken by the HelmRelease, not the 30 s timer: {:?}",
        t_hr.elapsed()
    );
    assert!(ns.get("v1", "ConfigMap", "after-helm").await.is_some());

    // the widget becomes Ready by its CEL rule; the dependent follows within seconds
    let widgets = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "health.e2e.pennant.dev",
            "v1",
            "Widget",
        )),
    );
    let t0 = Instant::now();
    widgets
        .patch(
            "w",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    let mut widget_ready = None;
    let mut app_ready = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while (widget_ready.is_none() || app_ready.is_none()) && Instant::now() < deadline {
        if widget_ready.is_none()
            && is(
                &get_ks(&ns, "widget").await,
                "Ready",
                "True",
                "ReconciliationSucceeded",
            )
        {
            widget_ready = Some(t0.elapsed());
        }
        if app_ready.is_none()
            && is(
                &get_ks(&ns, "app").await,
                "Ready",
                "True",
                "ReconciliationSucceeded",
            )
        {
            app_ready = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (w, a) = (
        widget_ready.expect("widget Ready"),
        app_ready.expect("app Ready"),
    );
    println!("Widget phase Ready -> widget Kustomization Ready: {w:?}");
    println!(
        "dependency Ready -> dependent Ready: {:?}",
        a.saturating_sub(w)
    );
    assert!(w < Duration::from_secs(6), "{w:?}");
    assert!(
        a.saturating_sub(w) < Duration::from_secs(5),
        "the dependent followed on the wake, not the 30s timer: {a:?} vs {w:?}"
    );
    let k = get_ks(&ns, "widget").await;
    assert!(
        cond(&k, "Healthy")
            .is_some_and(|c| c.0 == "True" && c.2.starts_with("Health check passed")),
        "{:?}",
        k.status
    );
    assert!(ns.get("v1", "ConfigMap", "app").await.is_some());
    let get = flux_ok(&ns.name, &["get", "ks"]);
    for n in ["widget", "app"] {
        assert!(
            get.lines().any(|l| (l.starts_with(&format!("{n} "))
                || l.starts_with(&format!("{n}\t")))
                && l.contains("True")
                && l.contains("Applied revision")),
            "{get}"
        );
    }

    // a Broken widget fails early (fail-fast), naming it
    widgets
        .patch(
            "w",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Broken"}})),
        )
        .await
        .unwrap();
    // a reconcile request (`flux reconcile ks` would wait for a Ready it never gets)
    let token = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "broken"}}});
    api.patch(
        "widget",
        &Default::default(),
        &kube::api::Patch::Merge(&token),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "widget failed", || async {
        cond(&get_ks(&ns, "widget").await, "Healthy").is_some_and(|c| {
            c.0 == "False"
                && c.2
                    == format!(
                        "failed early due to stalled resources: [Widget/{}/w status: 'Failed']",
                        ns.name
                    )
        })
    })
    .await;
    let k = get_ks(&ns, "widget").await;
    assert!(
        cond(&k, "Reconciling").is_some_and(|c| c.1 == "ProgressingWithRetry"
            && c.2.starts_with("Running health checks for revision")),
        "{:?}",
        k.status
    );
    for n in ["widget", "app", "after-helm"] {
        api.delete(n, &Default::default()).await.unwrap();
    }
    cleanup(ns).await;
}

/// The wait lives in memory, but status is the only memory: a controller killed mid-wait and
/// started again resumes the wait from the `Healthy=Unknown` condition's transition time, so
/// the timeout is not restarted.
#[tokio::test]
async fn a_restarted_controller_resumes_the_wait_without_restarting_the_timeout() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-restart", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (mut ctl, port) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    repo.commit(
        "main",
        &[("stuck/deploy.yaml", &deployment("stuck", true))],
        "never ready",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    api.create(
        &Default::default(),
        &ks(
            "stuck",
            &ns.name,
            json!({"path": "./stuck", "wait": true, "timeout": "30s", "retryInterval": "10m"}),
        ),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "waiting", || async {
        is(
            &get_ks(&ns, "stuck").await,
            "Healthy",
            "Unknown",
            "Progressing",
        )
    })
    .await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    ctl.kill();
    let listen = format!("127.0.0.1:{port}");
    let storage_path = storage.path().to_str().unwrap().to_string();
    let _ctl2 = ControllerProcess::start_with(
        &ns.name,
        &format!("kustomize-{}-restarted", ns.name),
        &kubeconfig_path(),
        &[
            "--controllers",
            "source,kustomize",
            "--storage-path",
            &storage_path,
            "--listen",
            &listen,
            "--log-level",
            "info,pennant=debug",
        ],
        &[],
    );
    wait_until(Duration::from_secs(60), "HealthCheckFailed", || async {
        is(
            &get_ks(&ns, "stuck").await,
            "Ready",
            "False",
            "HealthCheckFailed",
        )
    })
    .await;
    let took = t0.elapsed();
    println!("restart 10s into a 30s wait -> HealthCheckFailed {took:?} after the wait began");
    assert!(
        took < Duration::from_secs(36),
        "the timeout restarted with the process: {took:?}"
    );
    let (_, _, message) = cond(&get_ks(&ns, "stuck").await, "Ready").unwrap();
    assert!(
        message.starts_with("health check failed after 3"),
        "{message}"
    );
    api.delete("stuck", &Default::default()).await.unwrap();
    cleanup(ns).await;
}

/// `serviceAccountName` with `wait: true` on the controller's own cluster: the objects are read
/// as the account (GET per evaluation), but the wait is woken by the controller's watch of the
/// pending Deployment, so it passes as soon as the Deployment is ready instead of at the next
/// periodic re-check ([`RECHECK`], every 5 s; Flux's checker polls every 5 s too). Seen in
/// `e2e/bench-gitops`: impersonated Kustomizations waited 5-20 s longer than needed. The
/// Deployment is made ready 6.5 s into the wait (between the re-checks at ~5 s and ~10 s): woken
/// by the watch the wait passes at ~7 s, by the re-check only at ~10 s.
#[tokio::test]
async fn an_impersonated_wait_is_woken_by_the_watch_not_the_periodic_recheck() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    use pennant::kustomize::health_wait::RECHECK;
    let client = client().await;
    let ns = TestNs::new(&client, "ks-health-sa", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    repo.commit(
        "main",
        &[("web/deploy.yaml", &deployment("web", true))],
        "a deployment not ready yet",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n  namespace: NAMESPACE\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer-admin\n  namespace: NAMESPACE\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: admin\nsubjects:\n  - kind: ServiceAccount\n    name: deployer\n    namespace: NAMESPACE\n",
    )
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let spec =
        json!({"path": "./web", "wait": true, "timeout": "1m", "serviceAccountName": "deployer"});
    api.create(&Default::default(), &ks("web", &ns.name, spec))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "web waiting", || async {
        is(
            &get_ks(&ns, "web").await,
            "Healthy",
            "Unknown",
            "Progressing",
        )
    })
    .await;
    let waiting = Instant::now();
    let ready_at = RECHECK + Duration::from_millis(1500);
    tokio::time::sleep(ready_at.saturating_sub(waiting.elapsed())).await;
    // what kwok reads: without the annotation the new pod becomes Ready at once
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "e2e.pennant.dev/never-ready": null}}}}})),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "web Ready", || async {
        is(
            &get_ks(&ns, "web").await,
            "Ready",
            "True",
            "ReconciliationSucceeded",
        )
    })
    .await;
    let (_, _, message) = cond(&get_ks(&ns, "web").await, "Healthy").expect("Healthy");
    // "Health check passed in 7.234s" (Go's duration: minutes would read "1m2s", not a float)
    let passed_in = message
        .strip_prefix("Health check passed in ")
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(f64::MAX);
    println!("impersonated wait, Deployment ready at ~{ready_at:?}: {message}");
    assert!(
        passed_in < 2.0 * RECHECK.as_secs_f64() - 1.0,
        "the impersonated wait passed only at the periodic re-check: {message}"
    );
    cleanup(ns).await;
}
