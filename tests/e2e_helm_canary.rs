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
}

/// A check server for a Canary's `rollout` webhook: answers every request with the status in
/// `status` (200 passes the check, 500 fails it). Its URL.
async fn check_server(status: std::sync::Arc<std::sync::atomic::AtomicU16>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let code = status.load(std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let _ = sock.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

/// Revision-aware readiness of a HelmRelease whose upgrade a Canary rolls back (the rollout
/// check fails): `Ready=Unknown` `CanaryProgressing` during the analysis, then `Ready=False`
/// `CanaryFailed` with `rejectedRevision` = the Helm release revision (`web.v2`), kept over
/// further reconciles with no new Helm revision; the next upgrade (the check passing) is
/// analysed and promoted: `Ready=True`, `lastPromotedRevision` = `web.v3`.
#[tokio::test]
async fn a_release_its_canary_rolls_back_is_ready_false_until_the_next_upgrade_is_promoted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    let client = client().await;
    let ns = TestNs::new(&client, "hr-e2e-canary-fail", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let prom = prometheus_url();
    let _ctl = start_controllers(
        &ns.name,
        &ns.name,
        "canary,source,helm",
        storage.path(),
        &["--metrics-server", &prom],
    );
    let status = Arc::new(AtomicU16::new(200));
    let url = check_server(status.clone()).await;
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
    let canary = CANARY.replace("threshold: 2", "threshold: 1").replace(
        "    iterations: 2\n",
        &format!(
            "    iterations: 2\n    webhooks:\n    - name: check\n      type: rollout\n      url: {url}\n      timeout: 5s\n"
        ),
    );
    ns.apply_yaml(&canary).await;
    wait_initialized(&ns, "web").await;
    request_reconcile(&ns, "web").await;
    wait_hr(&ns, "web", "installed release promoted", |h| {
        h.status.as_ref().unwrap().last_promoted_revision.as_deref() == Some("web.v1")
    })
    .await;

    // a bad upgrade: analysed, rolled back, rejected
    status.store(500, Ordering::SeqCst);
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &values("6.0.1")))
        .await;
    wait_hr(&ns, "web", "upgraded, its canary analysing", |h| {
        is_ready(h, "Unknown", "CanaryProgressing")
    })
    .await;
    wait_rolled_back(&ns, "web").await;
    let h = wait_hr(&ns, "web", "rolled back", |h| {
        is_ready(h, "False", "CanaryFailed")
    })
    .await;
    let st = h.status.clone().unwrap();
    assert_eq!(st.rejected_revision.as_deref(), Some("web.v2"));
    assert_eq!(st.last_promoted_revision.as_deref(), Some("web.v1"));
    let (_, _, message) = cond(&h, "Ready").unwrap();
    assert!(
        message.contains(&format!("Canary {}/web failed", ns.name)),
        "{message}"
    );
    for i in 0..2 {
        request_reconcile(&ns, "web").await;
        let h = get_hr(&ns, "web").await.unwrap();
        assert!(
            is_ready(&h, "False", "CanaryFailed"),
            "reconcile {i}: {:?}",
            ready_reason(&h)
        );
    }
    assert_eq!(helm_history(&ns.name, "web").len(), 2, "not upgraded again");
    assert_eq!(
        image_of(&ns.deployment("web-primary").await.unwrap()),
        "ghcr.io/stefanprodan/podinfo:6.0.0",
        "the primary still runs the promoted image"
    );

    // the next upgrade passes its check and is promoted
    status.store(200, Ordering::SeqCst);
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &values("6.0.2")))
        .await;
    wait_hr_for(
        &ns,
        "web",
        "next upgrade promoted",
        Duration::from_secs(180),
        |h| {
            is_ready(h, "True", "UpgradeSucceeded")
                && h.status.as_ref().unwrap().last_promoted_revision.as_deref() == Some("web.v3")
        },
    )
    .await;
    assert_eq!(
        image_of(&ns.deployment("web-primary").await.unwrap()),
        "ghcr.io/stefanprodan/podinfo:6.0.2"
    );
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
}
