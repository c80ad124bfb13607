//! A HelmRelease and a pennant Canary on the same Deployment (issue 15, "a podinfo chart whose
//! Deployment has a pennant Canary"): pennant's canary, source and helm controllers in one
//! process (`--controllers canary,source,helm`), a podinfo-like chart from
//! `support::charts` served by a real HTTP Helm repository, the release installed by the real
//! `helm` CLI with `driftDetection.mode: enabled`, and a Kubernetes (blue/green) Canary on the
//! chart's Deployment whose apex Service is the chart's own Service.
//!
//! What could go wrong, and is checked: the HelmRelease's drift detection "correcting" what the
//! Canary controller changed (the target parked at zero, the apex Service's selector pointed at
//! the primary) — the fight of flagger#1407 / flagger#1121; a values change not reaching the
//! Canary as a new revision; drift elsewhere in the same objects no longer corrected.

mod support;

use std::time::Duration;

use pennant::api::{CanaryPhase, find_condition};
use serde_json::Value;
use support::charts::ChartSpec;
use support::helmrepo::HelmRepo;
use support::hr::*;
use support::*;

const CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: web
  namespace: NAMESPACE
spec:
  provider: kubernetes
  progressDeadlineSeconds: 120
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: 5s
    threshold: 2
    iterations: 2
"#;

fn values(tag: &str) -> String {
    format!(
        "  driftDetection:\n    mode: enabled\n  values:\n    replicaCount: 2\n    image:\n      tag: \"{tag}\"\n"
    )
}

async fn replicas(ns: &TestNs, name: &str) -> Option<i32> {
    ns.deployment(name).await?.spec?.replicas
}

async fn selector(ns: &TestNs, name: &str) -> Value {
    ns.get("v1", "Service", name).await.expect("service")["spec"]["selector"].clone()
}

/// The HelmRelease is reconciled again and again after the Canary initialised: the target stays
/// parked at zero and the apex Service keeps the Canary's selector, `Drifted=False`; a hand
/// edit of a chart ConfigMap and of a Deployment label is corrected (the event names only
/// those objects). A new image tag in `values` upgrades the release (revision 2), the Canary
/// sees the new revision, runs and promotes it (the primary runs the new tag), and the next
/// reconciles still leave the Canary's fields alone.
#[tokio::test]
async fn helm_upgrade_starts_a_canary_run_and_drift_detection_leaves_the_canary_alone() {
    let client = client().await;
    let guard = guard_crd(
        &client,
        "helmreleases.helm.toolkit.fluxcd.io",
        "lastPromotedRevision",
    )
    .await;
    let ns = TestNs::new(&client, "hr-e2e-canary", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let prom = prometheus_url();
    let _ctl = start_controllers(
        &ns.name,
        &ns.name,
        "canary,source,helm",
        storage.path(),
        &["--metrics-server", &prom],
    );
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0")
        .image("ghcr.io/stefanprodan/podinfo:6.0.0")
        .publish(&repo);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &values("6.0.0")))
        .await;
    wait_hr(&ns, "web", "installed", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;
    let chart_selector = selector(&ns, "web").await;
    assert_eq!(replicas(&ns, "web").await, Some(2));

    ns.apply_yaml(CANARY).await;
    wait_initialized(&ns, "web").await;
    let primary = ns.deployment("web-primary").await.expect("primary");
    assert_eq!(image_of(&primary), "ghcr.io/stefanprodan/podinfo:6.0.0");
    assert_eq!(replicas(&ns, "web").await, Some(0), "target parked");
    let canary_selector = selector(&ns, "web").await;
    assert_ne!(
        canary_selector, chart_selector,
        "the Canary points the apex Service at the primary"
    );

    // reconcile after reconcile: nothing of the Canary's is undone, no drift reported
    for i in 0..3 {
        request_reconcile(&ns, "web").await;
        let h = get_hr(&ns, "web").await.unwrap();
        assert_eq!(
            cond(&h, "Drifted").map(|c| (c.0, c.1)),
            Some(("False".into(), "NoDriftDetected".into())),
            "reconcile {i}"
        );
        assert_eq!(
            replicas(&ns, "web").await,
            Some(0),
            "reconcile {i}: target parked"
        );
        assert_eq!(selector(&ns, "web").await, canary_selector, "reconcile {i}");
    }
    assert_eq!(helm_history(&ns.name, "web").len(), 1, "no new revision");

    // a hand edit elsewhere in the release is drift, and corrected
    let params = kube::api::PatchParams {
        field_manager: Some("e2e-hand".into()),
        ..Default::default()
    };
    ns.api("v1", "ConfigMap")
        .patch(
            "web-values",
            &params,
            &kube::api::Patch::Merge(serde_json::json!({"data": {"message": "tampered"}})),
        )
        .await
        .unwrap();
    ns.deployments()
        .patch(
            "web",
            &params,
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/version": "tampered"}}}),
            ),
        )
        .await
        .unwrap();
    request_reconcile(&ns, "web").await;
    wait_until(Duration::from_secs(60), "drift corrected", || async {
        configmap_data(&ns, "web-values", "message")
            .await
            .as_deref()
            == Some("hello")
    })
    .await;
    let d = ns.deployment("web").await.unwrap();
    assert_eq!(
        d.metadata.labels.unwrap()["app.kubernetes.io/version"],
        "1.0.0",
        "the hand-edited label is put back"
    );
    assert_eq!(
        d.spec.unwrap().replicas,
        Some(0),
        "the parked replicas are not"
    );
    assert_eq!(selector(&ns, "web").await, canary_selector);
    let events = ns.events_with("web", &["has been corrected"]).await;
    let corrected: Vec<_> = events
        .iter()
        .filter(|(_, m)| m.contains("has been corrected"))
        .map(|e| e.1.clone())
        .collect();
    assert!(!corrected.is_empty(), "{events:?}");
    for m in &corrected {
        assert!(m.contains("ConfigMap/") && m.contains("web-values"), "{m}");
        assert!(
            !m.contains("Service/"),
            "the apex Service is not corrected: {m}"
        );
    }
    assert_eq!(helm_history(&ns.name, "web").len(), 1, "no new revision");
    // the Canary did not see a new revision from any of this
    assert_eq!(
        ns.canary("web").await.status.unwrap().phase,
        Some(CanaryPhase::Initialized)
    );

    // the initialised Canary runs the installed release: promoted (revision-aware readiness)
    let h = wait_hr(&ns, "web", "installed release promoted", |h| {
        is_ready(h, "True", "InstallSucceeded")
            && h.status.as_ref().unwrap().last_promoted_revision.as_deref() == Some("web.v1")
    })
    .await;
    assert_eq!(h.status.unwrap().rejected_revision, None);

    // a new image tag → Helm upgrade → a canary run that promotes it; meanwhile the
    // HelmRelease is Ready=Unknown CanaryProgressing, then Ready=True with the promoted revision
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &values("6.0.1")))
        .await;
    let h = wait_hr(&ns, "web", "upgraded, its canary analysing", |h| {
        is_ready(h, "Unknown", "CanaryProgressing")
    })
    .await;
    let (_, _, message) = cond(&h, "Ready").unwrap();
    assert!(
        message.contains(&format!("Canary {}/web", ns.name)) && message.contains("web.v2"),
        "{message}"
    );
    assert_history_agrees(&h, &ns.name, "web");
    wait_phase(
        &ns,
        "web",
        CanaryPhase::Progressing,
        Some(CanaryPhase::Failed),
        Duration::from_secs(90),
    )
    .await;
    wait_promoted(&ns, "web").await;
    wait_hr(&ns, "web", "upgraded release promoted", |h| {
        is_ready(h, "True", "UpgradeSucceeded")
            && h.status.as_ref().unwrap().last_promoted_revision.as_deref() == Some("web.v2")
    })
    .await;
    let primary = ns.deployment("web-primary").await.unwrap();
    assert_eq!(image_of(&primary), "ghcr.io/stefanprodan/podinfo:6.0.1");
    let c = ns.canary("web").await;
    let promoted = find_condition(&c.status.as_ref().unwrap().conditions, "Promoted").cloned();
    assert_eq!(promoted.map(|p| p.status).as_deref(), Some("True"));
    wait_until(
        Duration::from_secs(60),
        "target parked after promotion",
        || async { replicas(&ns, "web").await == Some(0) },
    )
    .await;

    // after the run: reconciles still leave the Canary's fields, and report no drift
    for i in 0..2 {
        request_reconcile(&ns, "web").await;
        let h = get_hr(&ns, "web").await.unwrap();
        assert_eq!(
            cond(&h, "Drifted").map(|c| c.0).as_deref(),
            Some("False"),
            "after promotion, reconcile {i}: {:?}",
            h.status.as_ref().map(|s| &s.conditions)
        );
        assert!(
            is_ready(&h, "True", "UpgradeSucceeded"),
            "{:?}",
            ready_reason(&h)
        );
        assert_eq!(
            replicas(&ns, "web").await,
            Some(0),
            "after promotion, reconcile {i}"
        );
        assert_eq!(
            selector(&ns, "web").await,
            canary_selector,
            "after promotion"
        );
    }
    assert_eq!(
        ns.canary("web").await.status.unwrap().phase,
        Some(CanaryPhase::Succeeded),
        "no second run"
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 2);
    ns.canaries()
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "Canary finalized", || async {
        ns.canaries()
            .get_opt("web")
            .await
            .is_ok_and(|c| c.is_none())
    })
    .await;
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
    guard.abort();
}
