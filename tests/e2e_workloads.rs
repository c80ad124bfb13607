//! End-to-end releases of the workloads besides a plain Deployment, against the real local
//! control plane (kube-controller-manager runs the DaemonSet and HPA controllers, kwok runs the
//! pods), the real Prometheus and the traffic simulator:
//!
//! - a DaemonSet target under `provider: kubernetes` (blue/green): parked at zero with Flagger's
//!   nodeSelector, promoted, and a failing version rolled back;
//! - a Deployment with an `autoscalerRef` HorizontalPodAutoscaler: the primary HPA is created
//!   and kept in sync, and a promotion leaves the primary's replicas to the HPA.
//!
//! The simulator sends `sim.pennant.dev/service-rps` requests/s to every Service of the
//! namespace (also `<apex>-canary`, as a load tester would) and serves per-pod
//! `http_request_duration_seconds_*` series for the builtin `kubernetes` queries.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::CanaryPhase;
use serde_json::{Value, json};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const V3: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);
const PARKED: &str = "flagger.app/scale-to-zero";

const METRICS: &str = r#"
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 15s
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 15s
"#;

/// A blue/green Canary (`provider: kubernetes`, 3 iterations of 10 s) on `kind/podinfo`, with
/// extra `spec` lines (indented 2).
fn canary(kind: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  provider: kubernetes
  progressDeadlineSeconds: 120
  targetRef:
    apiVersion: apps/v1
    kind: {kind}
    name: podinfo
{spec}
  service:
    port: 9898
  analysis:
    interval: 10s
    threshold: 3
    iterations: 3
{METRICS}
"#
    )
}

fn daemon_set(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: podinfo
  namespace: NAMESPACE
  labels:
    app: podinfo
spec:
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
      annotations:
        sim.pennant.dev/error-rate: "0"
        sim.pennant.dev/latency-ms: "30"
    spec:
      containers:
      - name: podinfod
        image: {image}
        ports:
        - name: http
          containerPort: 9898
"#
    )
}

/// A namespace whose every Service gets direct traffic, and a controller for it.
async fn namespace(prefix: &str) -> (TestNs, ControllerProcess) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 40).await;
    ns.annotate("sim.pennant.dev/service-rps", "30").await;
    let ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    (ns, ctl)
}

async fn ds(ns: &TestNs, name: &str) -> Value {
    ns.get("apps/v1", "DaemonSet", name)
        .await
        .unwrap_or_else(|| panic!("DaemonSet {name}"))
}

fn ds_image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn parked(d: &Value) -> bool {
    d["spec"]["template"]["spec"]["nodeSelector"][PARKED] == "true"
}

/// Wait until the DaemonSet `name` runs `ready` ready pods of its current generation.
async fn wait_ds_ready(ns: &TestNs, name: &str, ready: i64) {
    wait_until(
        MINUTES(1),
        &format!("DaemonSet {name} with {ready} ready pods"),
        || async {
            let d = ds(ns, name).await;
            d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && d["status"]["numberReady"].as_i64().unwrap_or(0) == ready
                && d["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0) == ready
        },
    )
    .await;
}

async fn set_ds_image(ns: &TestNs, image: &str, error_rate: f64) {
    let api: Api<DaemonSet> = Api::namespaced(ns.client.clone(), &ns.name);
    let patch = json!({"spec": {"template": {
        "metadata": {"annotations": {"sim.pennant.dev/error-rate": error_rate.to_string()}},
        "spec": {"containers": [{"name": "podinfod", "image": image}]}}}});
    api.patch("podinfo", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("set image");
}

#[tokio::test]
async fn daemon_set_blue_green_is_parked_promoted_and_rolled_back() {
    let (ns, _ctl) = namespace("e2e-daemonset").await;
    ns.apply_yaml(&daemon_set(V1)).await;
    ns.apply_yaml(&canary("DaemonSet", "")).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;

    // The primary runs on the (single) node; the target is parked on a nodeSelector no node has.
    wait_ds_ready(&ns, "podinfo-primary", 1).await;
    let primary = ds(&ns, "podinfo-primary").await;
    assert_eq!(
        primary["spec"]["selector"]["matchLabels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        primary["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"],
        "disabled"
    );
    assert!(!parked(&primary), "{primary:#}");
    assert!(parked(&ds(&ns, "podinfo").await));
    wait_ds_ready(&ns, "podinfo", 0).await;
    let canary_svc = ns.get("v1", "Service", "podinfo-canary").await.unwrap();
    assert_eq!(canary_svc["spec"]["selector"]["app"], "podinfo");

    // A new image: the target is unparked, analysed through its own pods, promoted, parked.
    set_ds_image(&ns, V2, 0.0).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(4),
    )
    .await;
    assert_eq!(ds_image(&ds(&ns, "podinfo-primary").await), V2);
    let target = ds(&ns, "podinfo").await;
    assert!(parked(&target), "{target:#}");
    assert_eq!(ds_image(&target), V2, "the target keeps the user's spec");
    wait_ds_ready(&ns, "podinfo-primary", 1).await;
    wait_ds_ready(&ns, "podinfo", 0).await;
    let events = ns
        .event_messages_with("podinfo", "canary iteration 3/3")
        .await;
    assert!(
        events.iter().any(|e| e.contains("canary iteration 3/3")),
        "{events:#?}"
    );

    // A failing version (30% errors on its pods) never reaches the primary.
    set_ds_image(&ns, V3, 0.3).await;
    wait_rolled_back(&ns, "podinfo").await;
    assert_eq!(ds_image(&ds(&ns, "podinfo-primary").await), V2);
    assert!(parked(&ds(&ns, "podinfo").await));
    let halted = |e: &str| e.contains("advancement success rate") && e.contains("< 99");
    let events = ns
        .events_until("podinfo", |events| events.iter().any(|(_, m)| halted(m)))
        .await;
    assert!(
        events.iter().any(|(_, m)| halted(m)),
        "the failure came from the canary pods' metrics: {events:#?}"
    );
    ns.cleanup().await;
}

const HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: podinfo
  namespace: NAMESPACE
  labels:
    app: podinfo
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  minReplicas: 2
  maxReplicas: 4
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 99
"#;

const AUTOSCALER_REF: &str = r#"  autoscalerRef:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    name: podinfo"#;

async fn primary_replicas(ns: &TestNs) -> Option<i32> {
    ns.deployment("podinfo-primary")
        .await
        .and_then(|d| d.spec.and_then(|s| s.replicas))
}

/// Whether pennant's own apply (field manager `pennant`) holds `spec.replicas` of the primary.
async fn pennant_owns_primary_replicas(ns: &TestNs) -> bool {
    let d = ns.deployment("podinfo-primary").await.expect("primary");
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some("pennant")
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

#[tokio::test]
async fn deployment_with_an_hpa_leaves_the_primary_replicas_to_its_hpa() {
    let (ns, _ctl) = namespace("e2e-hpa").await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    ns.apply_yaml(HPA).await;
    ns.apply_yaml(&canary("Deployment", AUTOSCALER_REF)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    let c = ns.canary("podinfo").await;
    let conditions = c.status.unwrap_or_default().conditions;
    assert!(
        pennant::api::find_condition(&conditions, "Unsupported").is_none(),
        "autoscalerRef is implemented: {conditions:#?}"
    );

    let hpa = ns
        .get(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "podinfo-primary",
        )
        .await
        .expect("primary HPA");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 4);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        hpa["metadata"]["annotations"]["helm.toolkit.fluxcd.io/driftDetection"],
        "disabled"
    );
    assert_eq!(primary_replicas(&ns).await, Some(2));

    // First release: nobody but pennant ever set the primary's replicas. Dropping them from
    // pennant's apply must not reset them to 1: they are handed over first.
    set_image(&ns, V2, 0.0).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(4),
    )
    .await;
    assert_eq!(primary_image(&ns).await, V2);
    assert_eq!(primary_replicas(&ns).await, Some(2));
    assert!(!pennant_owns_primary_replicas(&ns).await);

    // The HPA scales the primary to 3 (done here through the scale subresource, as the HPA
    // controller does: no metrics-server in this cluster), and the user raises maxReplicas.
    let deployments = ns.deployments();
    deployments
        .patch_scale(
            "podinfo-primary",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale primary");
    let raise = json!({"spec": {"maxReplicas": 5}});
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(ns.client.clone(), &ns.name);
    hpas.patch("podinfo", &PatchParams::default(), &Patch::Merge(raise))
        .await
        .expect("raise maxReplicas");
    wait_until(
        Duration::from_secs(30),
        "maxReplicas 5 on the primary HPA",
        || async {
            ns.get(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                "podinfo-primary",
            )
            .await
            .is_some_and(|h| h["spec"]["maxReplicas"] == 5)
        },
    )
    .await;

    // Second release: promotion keeps the replicas the HPA chose.
    set_image(&ns, V3, 0.0).await;
    wait_phase(&ns, "podinfo", CanaryPhase::Progressing, None, MINUTES(1)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(4),
    )
    .await;
    assert_eq!(primary_image(&ns).await, V3);
    assert_eq!(primary_replicas(&ns).await, Some(3));
    let target = ns.deployment("podinfo").await.unwrap();
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    ns.cleanup().await;
}

#[tokio::test]
async fn missing_hpa_and_daemon_set_with_an_autoscaler_stall_before_anything_is_written() {
    let (ns, _ctl) = namespace("e2e-wl-invalid").await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    ns.apply_yaml(&canary("Deployment", AUTOSCALER_REF)).await;
    let stalled = |ns: &TestNs, name: &'static str| {
        let ns = TestNs {
            client: ns.client.clone(),
            name: ns.name.clone(),
        };
        async move {
            let c = ns.canary(name).await;
            let conditions = c.status.unwrap_or_default().conditions;
            pennant::api::find_condition(&conditions, "Stalled")
                .filter(|s| s.status == "True")
                .and_then(|s| s.message.clone())
        }
    };
    wait_until(Duration::from_secs(30), "Stalled condition", || async {
        stalled(&ns, "podinfo").await.is_some()
    })
    .await;
    let m = stalled(&ns, "podinfo").await.unwrap();
    assert!(
        m.contains("HorizontalPodAutoscaler podinfo.") && m.contains("not found"),
        "{m}"
    );
    assert!(ns.deployment("podinfo-primary").await.is_none());

    // Every `podinfo` name and label becomes `agent` (the image line ends with its tag).
    ns.apply_yaml(&daemon_set(V1).replace("podinfo\n", "agent\n"))
        .await;
    let ds_canary = canary("DaemonSet", AUTOSCALER_REF).replace("podinfo\n", "agent\n");
    ns.apply_yaml(&ds_canary).await;
    wait_until(Duration::from_secs(30), "Stalled condition", || async {
        stalled(&ns, "agent").await.is_some()
    })
    .await;
    let m = stalled(&ns, "agent").await.unwrap();
    assert!(
        m.contains("a DaemonSet cannot have an autoscalerRef"),
        "{m}"
    );
    assert!(
        ns.get("apps/v1", "DaemonSet", "agent-primary")
            .await
            .is_none()
    );
    assert!(!parked(&ds(&ns, "agent").await), "the target is untouched");
    ns.cleanup().await;
}

async fn primary_image(ns: &TestNs) -> String {
    image_of(&ns.deployment("podinfo-primary").await.expect("primary"))
}

#[tokio::test]
async fn hpa_canary_starts_like_the_primary_and_the_primary_takes_the_canarys_size_back() {
    let (ns, _ctl) = namespace("e2e-hpa-size").await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    ns.apply_yaml(&HPA.replace("maxReplicas: 4", "maxReplicas: 20"))
        .await;
    ns.apply_yaml(&canary("Deployment", AUTOSCALER_REF)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    // The primary's HPA sized it at 3 (through the scale subresource, as the HPA controller
    // does: no metrics-server here, so the HPAs themselves never move within their bounds).
    let deployments = ns.deployments();
    let scale = |name: &'static str, n: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch_scale(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
                .expect("scale");
        }
    };
    scale("podinfo-primary", 3).await;
    wait_until(Duration::from_secs(30), "3 primary pods", || async {
        ready_replicas(&ns, "podinfo-primary").await == 3
    })
    .await;

    set_image(&ns, V2, 0.0).await;
    wait_phase(&ns, "podinfo", CanaryPhase::Progressing, None, MINUTES(1)).await;
    // Flagger #1209: the blue/green canary starts at the primary's 3, not the HPA's minimum 2.
    let target = ns.deployment("podinfo").await.unwrap();
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(3));

    // The canary's HPA scales it to 8 during the analysis; at promotion the primary gets as
    // many before the traffic goes back to it (Flagger #1600).
    scale("podinfo", 8).await;
    let start = std::time::Instant::now();
    loop {
        let phase = ns.canary("podinfo").await.status.and_then(|s| s.phase);
        if matches!(
            phase,
            Some(CanaryPhase::Finalising | CanaryPhase::Succeeded)
        ) {
            break;
        }
        assert_ne!(phase, Some(CanaryPhase::Failed));
        assert!(start.elapsed() < MINUTES(4), "not promoted: {phase:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ready_replicas(&ns, "podinfo-primary").await >= 8,
        "primary scaled before the traffic went back"
    );
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    assert_eq!(primary_image(&ns).await, V2);
    assert_eq!(primary_replicas(&ns).await, Some(8));
    ns.cleanup().await;
}

async fn ready_replicas(ns: &TestNs, name: &str) -> i32 {
    ns.deployment(name)
        .await
        .and_then(|d| d.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}
