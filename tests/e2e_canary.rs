//! End-to-end canary releases against the real local control plane, the real Prometheus and the
//! mesh traffic simulator (`e2e/cluster up`). Each test has its own namespace and its own
//! `pennant controller` process.

mod support;

use std::time::Duration;

use pennant::api::{CanaryPhase, find_condition};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);

async fn initialized(prefix: &str, threshold: i32, deadline: i32) -> (TestNs, ControllerProcess) {
    initialized_with(prefix, &podinfo_canary(threshold, 25, 50, deadline), "").await
}

/// [`initialized`] with the Canary given, after the extra objects (`extra`, YAML) it needs.
async fn initialized_with(prefix: &str, canary: &str, extra: &str) -> (TestNs, ControllerProcess) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    if !extra.is_empty() {
        ns.apply_yaml(extra).await;
    }
    let ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(canary).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    (ns, ctl)
}

#[tokio::test]
async fn good_release_is_promoted() {
    let (ns, _ctl) = initialized("e2e-promote", 3, 120).await;
    // initialisation: primary serves, target scaled to zero, all traffic on the primary
    let primary = ns.deployment("podinfo-primary").await.expect("primary");
    assert_eq!(image_of(&primary), V1);
    assert_eq!(
        ns.deployment("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));

    set_image(&ns, V2, 0.0).await;
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert!(
        weights.contains(&25) && weights.contains(&50),
        "stepped 25 → 50: {weights:?}"
    );
    assert!(
        weights.iter().all(|w| *w <= 50),
        "never above maxWeight: {weights:?}"
    );

    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V2, "primary runs the new version");
    assert_eq!(
        ns.deployment("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0),
        "canary at zero"
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    let c = ns.canary("podinfo").await;
    let promoted = find_condition(&c.status.as_ref().unwrap().conditions, "Promoted")
        .cloned()
        .unwrap();
    assert_eq!(promoted.status, "True");
    let needles = [
        "New revision detected! Scaling up podinfo",
        "Advance podinfo.",
        "Promotion completed!",
    ];
    let events: Vec<String> = ns
        .events_with("podinfo", &needles)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    for needle in needles {
        assert!(
            events.iter().any(|e| e.contains(needle)),
            "event {needle:?} in {events:#?}"
        );
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn version_with_errors_is_rolled_back() {
    let (ns, _ctl) = initialized("e2e-rollback", 2, 120).await;
    set_image(&ns, V2, 0.2).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(3),
    )
    .await;

    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V1, "primary untouched");
    assert_eq!(
        ns.vs_weights("podinfo").await,
        Some((100, 0)),
        "all traffic back on the primary"
    );
    assert_eq!(
        ns.deployment("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );
    let threshold = format!(
        "Rolling back podinfo.{} failed checks threshold reached 2",
        ns.name
    );
    let events = ns
        .events_with("podinfo", &["advancement success rate", &threshold])
        .await;
    let halt = events
        .iter()
        .find(|e| e.1.contains("advancement success rate"))
        .expect("halt event");
    assert_eq!(halt.0, "Warning");
    // 20% errors: success rate around 80%, named in the event
    assert!(halt.1.contains("< 99"), "{}", halt.1);
    assert!(events.iter().any(|e| e.1 == threshold), "{events:#?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn config_map_change_starts_an_analysis() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-config", 50).await;
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: podinfo-config}
data: {greeting: hello}
"#,
    )
    .await;
    let mut deploy = podinfo(V1, 0.0, "");
    deploy
        .push_str("        envFrom:\n        - configMapRef:\n            name: podinfo-config\n");
    ns.apply_yaml(&deploy).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&podinfo_canary(3, 25, 50, 120)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    // the primary reads its own copy of the config
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let copy = cms
        .get("podinfo-config-primary")
        .await
        .expect("primary config copy");
    assert_eq!(copy.data.unwrap()["greeting"], "hello");

    ns.apply_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: podinfo-config}
data: {greeting: bonjour}
"#,
    )
    .await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Progressing,
        Some(CanaryPhase::Failed),
        MINUTES(1),
    )
    .await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    let copy = cms.get("podinfo-config-primary").await.unwrap();
    assert_eq!(
        copy.data.unwrap()["greeting"],
        "bonjour",
        "promotion copies the new config"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn canary_that_never_becomes_ready_rolls_back_on_its_deadline() {
    let (ns, _ctl) = initialized("e2e-deadline", 3, 30).await;
    // pods carrying this annotation never become Ready (kwok stage in e2e/cluster)
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"e2e.pennant.dev/never-ready": "true"}},
        "spec": {"containers": [{"name": "podinfod", "image": V2}]}}}});
    ns.deployments()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(2),
    )
    .await;
    let took = start.elapsed().as_secs();
    assert!(took >= 25, "not before the 30 s deadline: {took}s");
    assert_eq!(
        weights.iter().max(),
        Some(&0),
        "no traffic ever reached the canary: {weights:?}"
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    let events = ns
        .events_with("podinfo", &["progress deadline exceeded"])
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.1.contains("progress deadline exceeded")),
        "{events:#?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn controller_killed_mid_analysis_resumes_and_finishes() {
    let (ns, mut ctl) = initialized("e2e-restart", 3, 120).await;
    set_image(&ns, V2, 0.0).await;
    wait_until(MINUTES(2), "canary weight 25", || async {
        ns.canary("podinfo")
            .await
            .status
            .is_some_and(|s| s.canary_weight == 25)
    })
    .await;
    ctl.kill();
    let before = ns.canary("podinfo").await.status.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ctl2 = ControllerProcess::start(&ns.name, &prometheus_url());
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert_eq!(before.phase, Some(CanaryPhase::Progressing));
    assert!(
        weights.iter().all(|w| *w == 0 || *w >= 25),
        "resumed, not restarted from scratch: {weights:?}"
    );
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V2
    );
    // The run's last Event is written after its status: every earlier one is there then.
    let events = ns
        .event_messages_with("podinfo", "Promotion completed!")
        .await;
    let scale_ups = events
        .iter()
        .filter(|e| e.contains("New revision detected"))
        .count();
    assert_eq!(
        scale_ups, 1,
        "the restart did not start a second run: {events:#?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn bad_canaries_are_reported_and_do_not_stop_good_ones() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-bad", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    let base = podinfo_canary(3, 25, 50, 120);
    let bad = [
        (
            "missing-target",
            base.replace(
                "name: podinfo\n  service",
                "name: does-not-exist\n  service",
            ),
            "target Deployment",
        ),
        (
            "max-weight",
            base.replace("maxWeight: 50", "maxWeight: 150"),
            "maxWeight 150",
        ),
        (
            "step-weight",
            base.replace("stepWeight: 25", "stepWeight: 0"),
            "stepWeight 0",
        ),
        (
            "threshold",
            base.replace("threshold: 3", "threshold: 0"),
            "threshold 0",
        ),
        (
            "provider",
            base.replace("provider: istio", "provider: istoi"),
            "unknown provider \"istoi\"",
        ),
    ];
    for (name, yaml, _) in &bad {
        let renamed = yaml.replace(
            "  name: podinfo\n  namespace:",
            &format!("  name: {name}\n  namespace:"),
        );
        ns.apply_yaml(&renamed).await;
    }
    // a valid canary in the same namespace initialises meanwhile
    ns.apply_yaml(&base).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    for (name, _, needle) in &bad {
        wait_until(
            Duration::from_secs(30),
            &format!("{name} stalled"),
            || async {
                let c = ns.canary(name).await;
                c.status
                    .and_then(|s| find_condition(&s.conditions, "Stalled").cloned())
                    .is_some_and(|c| {
                        c.status == "True" && c.message.unwrap_or_default().contains(needle)
                    })
            },
        )
        .await;
        let events = ns.events_with(name, &[needle]).await;
        assert!(
            events
                .iter()
                .any(|e| e.0 == "Warning" && e.1.contains(needle)),
            "{name}: {events:#?}"
        );
        assert_eq!(ns.canary(name).await.status.unwrap().canary_weight, 0);
    }
    // nothing was created for the broken ones
    assert!(ns.deployment("does-not-exist-primary").await.is_none());
    ns.cleanup().await;
}

#[tokio::test]
async fn unreachable_prometheus_moves_no_traffic() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-noprom", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, "http://127.0.0.1:1");
    ns.apply_yaml(&podinfo_canary(2, 25, 50, 120)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    set_image(&ns, V2, 0.0).await;
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(2),
    )
    .await;
    assert_eq!(
        weights.iter().max(),
        Some(&0),
        "no traffic moved: {weights:?}"
    );
    let c = ns.canary("podinfo").await;
    let cond = find_condition(&c.status.as_ref().unwrap().conditions, "MetricsAvailable")
        .cloned()
        .expect("condition");
    assert_eq!(cond.status, "False");
    assert!(cond.message.unwrap().contains("127.0.0.1:1"));
    let events = ns.events_with("podinfo", &["Metric query failed"]).await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Warning" && e.1.contains("Metric query failed")),
        "{events:#?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn revert_on_deletion_gives_traffic_back_to_the_target() {
    // Cases 8 and 12: one finalizer however many reconciles race, and deletion restores the target.
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-revert", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    let canary = podinfo_canary(3, 25, 50, 60).replace(
        "  provider: istio",
        "  provider: istio\n  revertOnDeletion: true",
    );
    ns.apply_yaml(&canary).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    // trigger a burst of reconciles: each label change is an update event
    for i in 0..5 {
        let patch = serde_json::json!({"metadata": {"labels": {"poke": i.to_string()}}});
        ns.canaries()
            .patch(
                "podinfo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let finalizers = ns
        .canary("podinfo")
        .await
        .metadata
        .finalizers
        .unwrap_or_default();
    assert_eq!(finalizers, vec!["finalizer.flagger.app".to_string()]);
    assert_eq!(
        ns.deployment("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );

    ns.canaries()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_until(MINUTES(1), "canary deleted", || async {
        ns.canaries().get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
    let target = ns.deployment("podinfo").await.unwrap();
    assert_eq!(
        target.spec.as_ref().unwrap().replicas,
        Some(2),
        "target scaled back to the primary's replicas"
    );
    assert_eq!(
        target.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2),
        "and ready before the Canary went away"
    );
    ns.cleanup().await;
}

/// A Slack-shaped receiver on 127.0.0.1 recording every JSON body it is sent.
async fn slack_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::{Json, Router, routing::post};
    let got = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let sink = got.clone();
    let events = sink.clone();
    let app = Router::new()
        .route(
            "/slack",
            post(move |Json(body): Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    "ok"
                }
            }),
        )
        // Flagger's event webhook payload, recorded beside the Slack messages under "event"
        .route(
            "/events",
            post(move |Json(body): Json<serde_json::Value>| {
                let sink = events.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::json!({"event": body}));
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slack", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn metric_template_judges_and_slack_hears_every_outcome() {
    let (url, got) = slack_receiver().await;
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-template", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    ns.apply_yaml(&format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {{name: error-rate, namespace: NAMESPACE}}
spec:
  provider: {{type: prometheus, address: "{prom}"}}
  query: |
    100 - sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{{{{ namespace }}}}",destination_workload=~"{{{{ target }}}}",response_code!~"5.*"}}[{{{{ interval }}}}]))
    / sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{{{{ namespace }}}}",destination_workload=~"{{{{ target }}}}"}}[{{{{ interval }}}}])) * 100
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: team-slack, namespace: NAMESPACE}}
spec: {{type: slack, channel: releases, address: "{url}"}}
"#,
        prom = prometheus_url()
    ))
    .await;
    let events_url = url.replace("/slack", "/events");
    let canary = podinfo_canary(2, 25, 50, 120).replace(
        "    metrics:\n",
        &format!("    webhooks:\n    - name: events\n      type: event\n      url: {events_url}\n    alerts:\n    - name: team\n      providerRef:\n        name: team-slack\n    metrics:\n    - name: error-rate\n      templateRef:\n        name: error-rate\n      thresholdRange:\n        max: 1\n      interval: 15s\n"),
    );
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&canary).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    set_image(&ns, V2, 0.0).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    set_image(&ns, "ghcr.io/stefanprodan/podinfo:6.0.2", 0.2).await;
    wait_phase(&ns, "podinfo", CanaryPhase::Progressing, None, MINUTES(1)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(3),
    )
    .await;

    let judged = |e: &(String, String)| e.1.contains("error-rate") && e.1.contains("> 1");
    let events = ns
        .events_until("podinfo", |events| events.iter().any(judged))
        .await;
    assert!(
        events.iter().any(judged),
        "the template metric judged the bad version: {events:#?}"
    );
    wait_until(Duration::from_secs(30), "alerts delivered", || async {
        got.lock().unwrap().iter().any(|b| {
            b["attachments"][0]["text"]
                .as_str()
                .unwrap_or("")
                .contains("failed")
        })
    })
    .await;
    let all = got.lock().unwrap().clone();
    let (events_got, bodies): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|b| b.get("event").is_some());
    let event_messages: Vec<String> = events_got
        .iter()
        .map(|e| {
            e["event"]["metadata"]["eventMessage"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for needle in [
        "New revision detected! Scaling up podinfo",
        "Advance podinfo.",
        "Canary failed! Scaling down podinfo",
    ] {
        assert!(
            event_messages.iter().any(|m| m.contains(needle)),
            "event {needle:?} in {event_messages:#?}"
        );
    }
    let warning = events_got
        .iter()
        .find(|e| {
            e["event"]["metadata"]["eventMessage"]
                .as_str()
                .unwrap_or("")
                .contains("Canary failed!")
        })
        .unwrap();
    assert_eq!(warning["event"]["metadata"]["eventType"], "Warning");
    assert_eq!(warning["event"]["name"], "podinfo");
    let texts: Vec<String> = bodies
        .iter()
        .map(|b| {
            b["attachments"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for needle in [
        "initialization completed",
        "New revision detected, progressing canary analysis.",
        "Canary analysis completed successfully, promotion finished.",
        "Canary analysis failed",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "{needle:?} in {texts:#?}"
        );
    }
    assert!(
        bodies
            .iter()
            .all(|b| b["channel"] == "releases" && b["username"] == "flagger"),
        "{bodies:#?}"
    );
    let failed = bodies
        .iter()
        .find(|b| {
            b["attachments"][0]["text"]
                .as_str()
                .unwrap_or("")
                .contains("failed")
        })
        .unwrap();
    assert_eq!(failed["attachments"][0]["color"], "danger");
    ns.cleanup().await;
}

#[tokio::test]
async fn promotion_gate_holds_until_opened_through_the_gating_api() {
    // A Flagger manifest's confirm-promotion hook pointed at pennant's own /gate/check.
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-gate", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let _ctl = ControllerProcess::start_with_listen(&ns.name, &prometheus_url(), &listen);
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    let canary = podinfo_canary(3, 25, 50, 120).replace(
        "    metrics:\n",
        &format!(
            "    webhooks:\n    - name: promotion-gate\n      type: confirm-promotion\n      url: {base}/gate/check\n    metrics:\n"
        ),
    );
    ns.apply_yaml(&canary).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;

    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).json(&body).send();
    let id = serde_json::json!({"name": "podinfo", "namespace": ns.name});
    let check = |phase: &str| serde_json::json!({"name": "podinfo", "namespace": ns.name, "phase": phase, "checksum": "x"});
    assert_eq!(
        post("/gate/check", check("Progressing"))
            .await
            .unwrap()
            .status(),
        403,
        "closed by default"
    );
    let elsewhere = serde_json::json!({"name": "podinfo", "namespace": "kube-system"});
    assert_eq!(
        post("/gate/open", elsewhere).await.unwrap().status(),
        403,
        "a controller started with --namespace serves that namespace's gates only"
    );

    set_image(&ns, V2, 0.0).await;
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::WaitingPromotion,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert!(
        weights.contains(&25) && weights.contains(&50),
        "stepped 25 → 50 before the gate: {weights:?}"
    );

    // Held across more than two analysis intervals: weights kept, nothing promoted.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(st.phase, Some(CanaryPhase::WaitingPromotion), "{st:#?}");
    assert_eq!(st.canary_weight, 50);
    assert_eq!(st.failed_checks, 0, "a closed gate burns no checks");
    assert_eq!(ns.vs_weights("podinfo").await, Some((50, 50)));
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V1,
        "primary untouched while the gate is closed"
    );
    let gated = |e: &(String, String)| {
        e.1.contains("waiting for promotion approval") && e.1.contains("403")
    };
    let events = ns
        .events_until("podinfo", |events| events.iter().any(gated))
        .await;
    assert!(events.iter().any(gated), "{events:#?}");

    // Flagger's metrics for dashboards, with pennant's threshold series.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sr = format!(
        r#"flagger_canary_metric_analysis{{name="podinfo",namespace="{}",metric="request-success-rate"}} "#,
        ns.name
    );
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&sr))
        .unwrap_or_else(|| panic!("{sr} in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!((99.0..=100.0).contains(&value), "success rate {value}");
    for line in [
        format!(
            r#"flagger_canary_metric_analysis_threshold{{name="podinfo",namespace="{}",metric="request-success-rate",bound="min"}} 99.0"#,
            ns.name
        ),
        format!(
            r#"flagger_canary_metric_analysis_threshold{{name="podinfo",namespace="{}",metric="request-duration",bound="max"}} 0.5"#,
            ns.name
        ),
        format!(r#"flagger_canary_total{{namespace="{}"}} 1"#, ns.name),
        format!(
            r#"flagger_canary_weight{{workload="podinfo",namespace="{}"}} 50"#,
            ns.name
        ),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            r#"flagger_canary_metric_analysis{{name="podinfo",namespace="{}",metric="request-duration"}} "#,
            ns.name
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("flagger_canary_duration_seconds_count{"),
        "{metrics}"
    );

    // Open the gate through the API: stored on the Canary, then promoted.
    let r = post("/gate/open", id.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let annotations = ns.canary("podinfo").await.metadata.annotations.unwrap();
    assert_eq!(annotations["gate.pennant.dev/promotion"], "open");
    assert_eq!(
        post("/gate/check", check("Progressing"))
            .await
            .unwrap()
            .status(),
        200
    );
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V2
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));

    // The gate stays open until closed; close it with the CLI verb.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pennant"))
        .args(["gate", "close", "podinfo", "-n", &ns.name])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("pennant gate close");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "canary {}/podinfo: gate.pennant.dev/promotion=closed",
            ns.name
        )
    );
    assert_eq!(
        post("/gate/check", check("Progressing"))
            .await
            .unwrap()
            .status(),
        403
    );
    let promoted = format!(
        r#"flagger_canary_successes_total{{name="podinfo",namespace="{}",deployment_strategy="canary",analysis_status="completed"}} 1"#,
        ns.name
    );
    // Counted after the status is written.
    let metrics = wait_http_until(&format!("{base}/metrics"), Duration::from_secs(30), |m| {
        m.lines().any(|l| l == promoted)
    })
    .await;
    assert!(
        metrics.lines().any(|l| l == promoted),
        "{promoted} in:\n{metrics}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn pre_existing_service_is_kept_and_survives_canary_deletion() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-takeover", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    // the user's own NodePort apex Service, created before the Canary
    let port = 30000 + (std::process::id() % 2000) as i64;
    ns.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: podinfo, namespace: NAMESPACE}}
spec:
  type: NodePort
  selector: {{app: podinfo}}
  ports: [{{name: http, port: 80, targetPort: 9898, nodePort: {port}}}]
"#
    ))
    .await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&podinfo_canary(3, 25, 50, 120)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let svc = services.get("podinfo").await.unwrap();
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(
        spec.ports.unwrap()[0].node_port,
        Some(port as i32),
        "node port kept"
    );
    assert_eq!(
        spec.selector.unwrap()["app"],
        "podinfo-primary",
        "selector taken over"
    );
    assert!(
        svc.metadata.owner_references.unwrap_or_default().is_empty(),
        "not owned by the Canary"
    );

    ns.canaries()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // garbage collection of owned objects
    assert!(
        services.get_opt("podinfo").await.unwrap().is_some(),
        "the user's Service survives"
    );
    assert!(
        services.get_opt("podinfo-canary").await.unwrap().is_none(),
        "pennant's own are collected"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn fields_removed_from_the_canary_leave_the_virtual_service() {
    let (ns, _ctl) = initialized("e2e-prune", 3, 120).await;
    let with_timeout = podinfo_canary(3, 25, 50, 120).replace(
        "    targetPort: 9898\n",
        "    targetPort: 9898\n    timeout: 5s\n",
    );
    ns.apply_yaml(&with_timeout).await;
    let vs = ns.api("networking.istio.io/v1", "VirtualService");
    wait_until(Duration::from_secs(20), "timeout on the VS", || async {
        vs.get("podinfo").await.unwrap().data["spec"]["http"][0]["timeout"] == "5s"
    })
    .await;
    ns.apply_yaml(&podinfo_canary(3, 25, 50, 120)).await;
    wait_until(
        Duration::from_secs(20),
        "timeout removed from the VS",
        || async {
            vs.get("podinfo").await.unwrap().data["spec"]["http"][0]
                .get("timeout")
                .is_none()
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn second_canary_on_the_same_target_is_refused() {
    let (ns, _ctl) = initialized("e2e-twice", 3, 120).await;
    let second = podinfo_canary(3, 25, 50, 120).replace(
        "  name: podinfo\n  namespace:",
        "  name: podinfo-again\n  namespace:",
    );
    ns.apply_yaml(&second).await;
    wait_until(Duration::from_secs(30), "second canary stalled", || async {
        ns.canary("podinfo-again")
            .await
            .status
            .and_then(|s| find_condition(&s.conditions, "Stalled").cloned())
            .is_some_and(|c| {
                c.message
                    .unwrap_or_default()
                    .contains("Deployment podinfo is already managed by Canary podinfo")
            })
    })
    .await;
    assert_eq!(
        ns.canary("podinfo").await.status.unwrap().phase,
        Some(CanaryPhase::Initialized),
        "first keeps it"
    );
    // The first one goes away: the second takes over without being touched.
    ns.canaries()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_phase(
        &ns,
        "podinfo-again",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn status_written_by_flagger_is_adopted_and_a_pending_change_still_runs() {
    // Case 2 (migration): no spurious run for an unchanged workload, but a change made while no
    // controller ran is released.
    let (ns, mut ctl) = initialized("e2e-adopt", 3, 120).await;
    let flaggers_status = serde_json::json!({"status": {
        "phase": "Succeeded", "lastAppliedSpec": "5d8f7b9c4", "lastPromotedSpec": "5d8f7b9c4"}});
    let pp = kube::api::PatchParams::default();
    ctl.kill();
    ns.canaries()
        .patch_status("podinfo", &pp, &kube::api::Patch::Merge(&flaggers_status))
        .await
        .unwrap();
    let mut ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    wait_until(Duration::from_secs(30), "adoption", || async {
        ns.canary("podinfo")
            .await
            .status
            .unwrap()
            .last_applied_spec
            .unwrap_or_default()
            .starts_with("sha256:")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(
        st.phase,
        Some(CanaryPhase::Succeeded),
        "no run for an unchanged workload"
    );

    ctl.kill();
    ns.canaries()
        .patch_status("podinfo", &pp, &kube::api::Patch::Merge(&flaggers_status))
        .await
        .unwrap();
    set_image(&ns, V2, 0.0).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    wait_phase(&ns, "podinfo", CanaryPhase::Progressing, None, MINUTES(1)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V2,
        "the pending change was released"
    );
    ns.cleanup().await;
}

/// The canary weight in status, 0 before the first status.
async fn weight(ns: &TestNs) -> i32 {
    ns.canary("podinfo")
        .await
        .status
        .map_or(0, |s| s.canary_weight)
}

#[tokio::test]
async fn deleted_primary_mid_run_fails_the_run_onto_the_canary() {
    let (ns, _ctl) = initialized("e2e-noprimary", 5, 60).await;
    set_image(&ns, V2, 0.0).await;
    wait_until(MINUTES(2), "canary weight 25", || async {
        weight(&ns).await == 25
    })
    .await;
    assert_eq!(ns.vs_weights("podinfo").await, Some((75, 25)));
    ns.deployments()
        .delete("podinfo-primary", &Default::default())
        .await
        .expect("delete primary");
    // at once, well within the 60 s progress deadline
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        ns.vs_weights("podinfo").await,
        Some((0, 100)),
        "all traffic on the canary, the only pods left"
    );
    let target = ns.deployment("podinfo").await.unwrap();
    assert_eq!(target.spec.unwrap().replicas, Some(2), "canary kept");
    let needle = format!("primary podinfo-primary.{} not found", ns.name);
    let events = ns.events_with("podinfo", &[&needle]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && m.contains(&needle)),
        "{events:#?}"
    );
    // The target rolled back to the promoted revision: the primary is recreated from it and,
    // once ready, takes the traffic back; the canary is scaled down after the drain.
    set_image(&ns, V1, 0.0).await;
    wait_until(
        MINUTES(2),
        "traffic back on the recreated primary",
        || async { ns.vs_weights("podinfo").await == Some((100, 0)) },
    )
    .await;
    let primary = ns.deployment("podinfo-primary").await.expect("recreated");
    assert_eq!(image_of(&primary), V1);
    let messages = ns
        .event_messages_with("podinfo", "Routing all traffic to primary")
        .await;
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Routing all traffic to primary")),
        "{messages:#?}"
    );
    wait_until(MINUTES(1), "canary scaled down after the drain", || async {
        let d = ns.deployment("podinfo").await.unwrap();
        d.spec.and_then(|s| s.replicas) == Some(0)
    })
    .await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(st.phase, Some(CanaryPhase::Failed));
    assert_eq!(st.canary_weight, 0);
    ns.cleanup().await;
}

#[tokio::test]
async fn target_ref_changed_mid_run_sends_the_old_route_back_and_initialises_the_new_target() {
    let (ns, _ctl) = initialized("e2e-retarget", 5, 120).await;
    let web = podinfo(V1, 0.0, "")
        .replace("name: podinfo\n", "name: web\n")
        .replace("app: podinfo", "app: web");
    ns.apply_yaml(&web).await;
    set_image(&ns, V2, 0.0).await;
    wait_until(MINUTES(2), "canary weight 25", || async {
        weight(&ns).await == 25
    })
    .await;
    let patch = serde_json::json!({"spec": {"targetRef": {"name": "web"}}});
    ns.canaries()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .expect("patch targetRef");
    wait_until(
        Duration::from_secs(30),
        "old route back on its primary",
        || async { ns.vs_weights("podinfo").await == Some((100, 0)) },
    )
    .await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(st.target_ref.map(|t| t.name).as_deref(), Some("web"));
    let primary = ns.deployment("web-primary").await.expect("new primary");
    assert_eq!(image_of(&primary), V1);
    assert_eq!(ns.vs_weights("web").await, Some((100, 0)));
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    let messages = ns
        .event_messages_with("podinfo", "targetRef changed from Deployment podinfo")
        .await;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("targetRef changed from Deployment podinfo to Deployment web")),
        "{messages:#?}"
    );
    ns.cleanup().await;
}

/// Deployment and Canary `name` built from the podinfo fixtures (`app: name`).
fn named_podinfo(name: &str, canary: &str) -> String {
    let deploy = podinfo(V1, 0.0, "")
        .replace("name: podinfo\n", &format!("name: {name}\n"))
        .replace("app: podinfo", &format!("app: {name}"));
    format!(
        "{deploy}\n---\n{}",
        canary.replace("name: podinfo", &format!("name: {name}"))
    )
}

/// The Canary manifest with `annotations` (YAML lines, 4 spaces in) in its metadata.
fn annotated(canary: &str, annotations: &str) -> String {
    canary.replace(
        "  namespace: NAMESPACE\nspec:",
        &format!("  namespace: NAMESPACE\n  annotations:\n{annotations}\nspec:"),
    )
}

/// Wait until every Canary in `names` is Initialized, then give all their targets V2 at once.
async fn release_all_at_once(ns: &TestNs, names: &[&str]) {
    for n in names {
        wait_phase(
            ns,
            n,
            CanaryPhase::Initialized,
            Some(CanaryPhase::Failed),
            MINUTES(2),
        )
        .await;
    }
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "podinfod", "image": V2}]}}}});
    for n in names {
        ns.deployments()
            .patch(
                n,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn concurrency_limit_runs_one_canary_at_a_time_in_fifo_order() {
    use std::collections::BTreeMap;
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-limit", 50).await;
    // the namespace's limit (1) is below the controller's (2): the lower one holds
    ns.annotate("canary.pennant.dev/max-concurrent-canaries", "1")
        .await;
    let names = ["web-a", "web-b", "web-c"];
    for n in names {
        ns.apply_yaml(&named_podinfo(n, &podinfo_canary(2, 50, 50, 120)))
            .await;
    }
    let _ctl = ControllerProcess::start_with(
        &ns.name,
        &ns.name,
        &kubeconfig_path(),
        &[
            "--metrics-server",
            &prometheus_url(),
            "--listen",
            "127.0.0.1:0",
            "--max-concurrent-canaries",
            "2",
            // one reconcile at a time: the queue moves all the same
            "--canary-concurrent",
            "1",
        ],
        &[],
    );
    // one change to all three at once
    release_all_at_once(&ns, &names).await;
    let running = |p: Option<CanaryPhase>| {
        matches!(
            p,
            Some(
                CanaryPhase::Progressing
                    | CanaryPhase::WaitingPromotion
                    | CanaryPhase::Promoting
                    | CanaryPhase::Finalising
            )
        )
    };
    let start = std::time::Instant::now();
    let mut started: Vec<String> = vec![];
    let mut queued: BTreeMap<String, String> = BTreeMap::new();
    let mut queued_condition = false;
    // when each run ended (back to Succeeded) and when the next one started
    let mut ended: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut started_at: Vec<std::time::Instant> = vec![];
    loop {
        let list = ns.canaries().list(&Default::default()).await.unwrap();
        let now_running: Vec<String> = list
            .items
            .iter()
            .filter(|c| running(c.status.as_ref().and_then(|s| s.phase)))
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert!(
            now_running.len() <= 1,
            "at most one Canary running at any time: {now_running:?}"
        );
        for c in &list.items {
            let name = c.metadata.name.clone().unwrap();
            let st = c.status.clone().unwrap_or_default();
            // the Queued condition's lastTransitionTime is the place in the queue
            if let Some(q) = find_condition(&st.conditions, "Queued") {
                let t = q.last_transition_time.as_ref().unwrap().0;
                queued.entry(name.clone()).or_insert(t.to_string());
                queued_condition |= st.phase == Some(CanaryPhase::Waiting)
                    && q.reason.as_deref() == Some("ConcurrencyLimit");
            }
            if running(st.phase) && !started.contains(&name) {
                println!("[{:>5.1}s] {name} started", start.elapsed().as_secs_f32());
                started.push(name.clone());
                started_at.push(std::time::Instant::now());
            }
            if st.phase == Some(CanaryPhase::Succeeded) && started.contains(&name) {
                ended.entry(name).or_insert_with(std::time::Instant::now);
            }
        }
        let done = started.len() == 3
            && list
                .items
                .iter()
                .all(|c| c.status.as_ref().and_then(|s| s.phase) == Some(CanaryPhase::Succeeded));
        if done {
            break;
        }
        assert!(
            list.items
                .iter()
                .all(|c| c.status.as_ref().and_then(|s| s.phase) != Some(CanaryPhase::Failed)),
            "no Canary fails"
        );
        assert!(
            start.elapsed() < MINUTES(8),
            "all three promoted within 8 minutes; started {started:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(queued.len(), 2, "two Canaries waited: {queued:?}");
    // a freed slot wakes the next Canary from the watch, not from the 30 s backstop
    for i in 1..3 {
        let freed = ended[&started[i - 1]];
        let gap = started_at[i].saturating_duration_since(freed);
        assert!(
            gap < Duration::from_secs(10),
            "{} started {gap:?} after {} ended",
            started[i],
            started[i - 1]
        );
    }
    assert!(
        queued_condition,
        "the waiting ones showed the Queued condition"
    );
    // FIFO: the waiting ones started in the order of their queue time (then name)
    let mut fifo: Vec<(String, String)> =
        queued.iter().map(|(n, t)| (t.clone(), n.clone())).collect();
    fifo.sort();
    let fifo: Vec<String> = fifo.into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        started[1..].to_vec(),
        fifo,
        "started {started:?}, queued {queued:?}"
    );
    for n in queued.keys() {
        let events = ns.event_messages_with(n, "Waiting for a free slot").await;
        let waits = events
            .iter()
            .filter(|e| e.starts_with("Waiting for a free slot"))
            .count();
        assert_eq!(waits, 1, "one event on entering the queue: {events:#?}");
        let c = ns.canary(n).await;
        let st = c.status.unwrap();
        assert!(
            find_condition(&st.conditions, "Queued").is_none(),
            "{n} left the queue"
        );
    }
    ns.cleanup().await;
}

/// The one Canary Progressing besides `skip`, once there is exactly one and `waiting` others
/// are queued (`Queued` True); panics after `timeout`.
async fn sole_runner(
    canaries: &kube::Api<pennant::api::Canary>,
    waiting: usize,
    skip: &[&str],
    timeout: Duration,
) -> String {
    let start = std::time::Instant::now();
    loop {
        let list = canaries.list(&Default::default()).await.unwrap().items;
        let running: Vec<String> = list
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(CanaryPhase::Progressing))
            .map(|c| c.metadata.name.clone().unwrap())
            .filter(|n| !skip.contains(&n.as_str()))
            .collect();
        let queued = list
            .iter()
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| {
                    find_condition(&s.conditions, "Queued").is_some_and(|q| q.status == "True")
                })
            })
            .count();
        if running.len() == 1 && queued == waiting {
            return running[0].clone();
        }
        assert!(
            start.elapsed() < timeout,
            "one Canary running besides {skip:?}, {waiting} waiting: running {running:?}, {queued} queued"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue 11: a Canary making no progress — suspended, or Stalled because its Deployment was
/// deleted — held its slot for ever. It frees it, and the next waiting Canary starts at once
/// (woken, not the 30 s backstop); the wait message names the Canary holding the slot.
#[tokio::test]
async fn concurrency_limit_frees_the_slot_of_a_suspended_or_stalled_canary() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-limit-stall", 50).await;
    ns.annotate("canary.pennant.dev/max-concurrent-canaries", "1")
        .await;
    let names = ["web-a", "web-b", "web-c"];
    for n in names {
        // 10 steps of 10 s: no run ends during the test
        ns.apply_yaml(&named_podinfo(n, &podinfo_canary(2, 5, 50, 600)))
            .await;
    }
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    release_all_at_once(&ns, &names).await;
    let canaries = ns.canaries();
    let first = sole_runner(&canaries, 2, &[], MINUTES(2)).await;
    let waiting = names.iter().find(|n| **n != first).unwrap();
    let st = ns.canary(waiting).await.status.unwrap();
    let q = find_condition(&st.conditions, "Queued").unwrap();
    assert!(
        q.message
            .as_deref()
            .unwrap()
            .ends_with(&format!("running: {first}.{}", ns.name)),
        "{q:?}"
    );

    // Suspended: its slot goes to the next one at once.
    canaries
        .patch(
            &first,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let suspended_at = std::time::Instant::now();
    let second = sole_runner(&canaries, 1, &[&first], Duration::from_secs(60)).await;
    assert!(
        suspended_at.elapsed() < Duration::from_secs(15),
        "woken, not by the backstop: {:?}",
        suspended_at.elapsed()
    );

    // Its Deployment deleted: Stalled, and its slot goes to the last one.
    ns.deployments()
        .delete(&second, &Default::default())
        .await
        .unwrap();
    let deleted_at = std::time::Instant::now();
    sole_runner(&canaries, 0, &[&first, &second], Duration::from_secs(60)).await;
    assert!(
        deleted_at.elapsed() < Duration::from_secs(15),
        "woken, not by the backstop: {:?}",
        deleted_at.elapsed()
    );
    let st = ns.canary(&second).await.status.unwrap();
    assert!(
        find_condition(&st.conditions, "Stalled").is_some_and(|c| c.status == "True"),
        "{st:?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn rollback_window_promotes_a_known_revision_without_analysis() {
    let canary = annotated(
        &podinfo_canary(2, 25, 50, 120),
        "    canary.pennant.dev/rollback-window: \"3\"",
    );
    let (ns, _ctl) = initialized_with("e2e-rbwindow", &canary, "").await;
    let advances = |events: &[String]| {
        events
            .iter()
            .filter(|e| e.starts_with("Advance podinfo.") && e.contains("canary weight"))
            .count()
    };
    // v2 is new: analysed
    set_image(&ns, V2, 0.0).await;
    let weights = wait_promoted_after_a_change(&ns).await;
    assert!(weights.contains(&25), "v2 analysed: {weights:?}");
    let before = advances(
        &ns.event_messages_with("podinfo", "Promotion completed!")
            .await,
    );
    assert!(before >= 2, "v2 stepped");

    // v1 again: promoted at once, no traffic on the canary, an event says why
    set_image(&ns, V1, 0.0).await;
    let weights = wait_promoted_after_a_change(&ns).await;
    assert!(
        weights.iter().all(|w| *w == 0),
        "no analysis steps: {weights:?}"
    );
    let events = ns.event_messages_with("podinfo", "Rollback window").await;
    assert!(
        events.iter().any(|e| e.starts_with(&format!(
            "Rollback window: podinfo.{} goes back to a revision promoted before, promoting without analysis",
            ns.name
        ))),
        "{events:#?}"
    );
    assert_eq!(advances(&events), before, "no weight advanced: {events:#?}");
    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V1, "the primary runs v1 again");

    // without the annotation, going back to v2 is analysed again
    let patch = serde_json::json!({"metadata": {"annotations": {"canary.pennant.dev/rollback-window": null}}});
    ns.canaries()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    set_image(&ns, V2, 0.0).await;
    let weights = wait_promoted_after_a_change(&ns).await;
    assert!(
        weights.contains(&25),
        "analysed without the annotation: {weights:?}"
    );
    ns.cleanup().await;
}

/// After a change to a promoted Canary: wait for the run to start (the phase leaves
/// `Succeeded`), then for its promotion; the canary weights seen.
async fn wait_promoted_after_a_change(ns: &TestNs) -> Vec<i32> {
    wait_until(MINUTES(1), "the run starts", || async {
        ns.canary("podinfo").await.status.and_then(|s| s.phase) != Some(CanaryPhase::Succeeded)
    })
    .await;
    wait_promoted(ns, "podinfo").await
}

#[tokio::test]
async fn progress_alerts_post_every_weight_advance_and_halt() {
    let (url, got) = slack_receiver().await;
    let provider = format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: team-slack, namespace: NAMESPACE}}
spec: {{type: slack, channel: releases, address: "{url}"}}
"#
    );
    let canary = annotated(
        &podinfo_canary(2, 25, 50, 120),
        "    canary.pennant.dev/progress-alerts: \"true\"",
    )
    .replace(
        "    metrics:\n",
        "    alerts:\n    - name: team\n      severity: info\n      providerRef:\n        name: team-slack\n    metrics:\n",
    );
    let (ns, _ctl) = initialized_with("e2e-progress", &canary, &provider).await;
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    // a bad version: each failed check is a halt, posted too
    set_image(&ns, "ghcr.io/stefanprodan/podinfo:6.0.2", 0.2).await;
    wait_rolled_back(&ns, "podinfo").await;

    let texts = || -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|b| {
                b["attachments"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    wait_until(Duration::from_secs(30), "the rollback alert", || async {
        texts().iter().any(|t| t.contains("Canary analysis failed"))
    })
    .await;
    let events: Vec<String> = ns
        .events_until("podinfo", |events| {
            let count = |p: &str| events.iter().filter(|e| e.1.starts_with(p)).count();
            count("Advance podinfo.") >= 2 && count("Halt ") >= 1
        })
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    let advances: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("Advance podinfo.") && e.contains("weight"))
        .collect();
    let halts: Vec<&String> = events.iter().filter(|e| e.starts_with("Halt ")).collect();
    assert!(advances.len() >= 2, "{events:#?}");
    assert!(!halts.is_empty(), "{events:#?}");
    let texts = texts();
    for e in advances.iter().chain(halts.iter()) {
        assert_eq!(
            texts.iter().filter(|t| t == e).count(),
            events.iter().filter(|m| m == e).count(),
            "one post per advance and halt, {e:?} in {texts:#?}"
        );
    }
    ns.cleanup().await;
}
