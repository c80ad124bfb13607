//! End-to-end metric analysis against the real local Prometheus (`e2e/cluster up`, which
//! scrapes every target each second) and the mesh traffic simulator.

mod support;

use std::time::Duration;

use pennant::api::CanaryPhase;
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// Flagger #1123: a `rate()` window shorter than two scrape intervals finds no samples while
/// traffic flows; the Halt event names the window and the scrape interval, not the traffic.
#[tokio::test]
async fn a_window_shorter_than_two_scrapes_is_named_as_the_cause() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-short-window", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    ns.apply_yaml(
        r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: error-rate, namespace: NAMESPACE}
spec:
  provider: {type: prometheus}
  query: |
    100 - sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}]))
    / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100
"#,
    )
    .await;
    // The cluster's Prometheus scrapes every second: a 500ms window never holds two samples.
    let canary = podinfo_canary(2, 25, 50, 120).replace(
        "    metrics:\n",
        "    metrics:\n    - name: error-rate\n      templateRef:\n        name: error-rate\n      thresholdRange:\n        max: 1\n      interval: 500ms\n",
    );
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&canary).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        Duration::from_secs(120),
    )
    .await;
    set_image(&ns, V2, 0.0).await;
    let needle = "window 500ms is shorter than 2 × scrape interval 1s";
    wait_until(Duration::from_secs(120), needle, || async {
        ns.event_messages("podinfo")
            .await
            .iter()
            .any(|e| e.contains("metric error-rate") && e.contains(needle))
    })
    .await;
    let events = ns.event_messages("podinfo").await;
    assert!(
        !events.iter().any(|e| e.contains("not receiving traffic")),
        "the traffic is not blamed: {events:#?}"
    );
    ns.cleanup().await;
}
