//! What users read about a Canary, against the real local control plane (`e2e/cluster up`): a
//! write the API server refuses is on status and in a Warning event (and not retried in a loop),
//! Event notes fit the server's byte limit, Events sort and show like every other
//! controller's, and every field pennant writes names pennant in `managedFields`.

mod support;

use std::time::Duration;

use pennant::api::{CanaryPhase, find_condition};
use serde_json::{Value, json};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// `pennant_reconcile_total` over every result, from `/metrics`.
async fn reconciles(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("pennant_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A 60-character target name makes `<name>-primary`, as a label value, longer than 63 bytes:
/// the apply of the primary is refused (422). The Canary says so (Stalled, Warning) and waits
/// for a change instead of retrying every 5 s; pointing it at a valid target recovers.
#[tokio::test]
async fn rejected_apply_stalls_with_the_servers_message_and_waits_for_a_change() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-rejected", 50).await;
    let long = format!("podinfo-{}", "x".repeat(52));
    assert_eq!(long.len(), 60);
    let target = podinfo(V1, 0.0, "")
        .replace("  name: podinfo\n", &format!("  name: {long}\n"))
        .replace("app: podinfo\n", &format!("app: {long}\n"));
    ns.apply_yaml(&target).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let _ctl = ControllerProcess::start_with_listen(&ns.name, &prometheus_url(), &listen);
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    let canary = podinfo_canary(2, 25, 50, 120).replace(
        "    kind: Deployment\n    name: podinfo\n",
        &format!("    kind: Deployment\n    name: {long}\n"),
    );
    ns.apply_yaml(&canary).await;

    let stalled = || async {
        let c = ns.canary("podinfo").await;
        let st = c.status.unwrap_or_default();
        find_condition(&st.conditions, "Stalled").cloned()
    };
    wait_until(Duration::from_secs(60), "Stalled (Rejected)", || async {
        stalled()
            .await
            .is_some_and(|c| c.reason.as_deref() == Some("Rejected"))
    })
    .await;
    let c = stalled().await.unwrap();
    let message = c.message.unwrap();
    println!("Stalled: {message}");
    assert!(
        message.starts_with(&format!(
            "Deployment {}/{long}-primary rejected by the API server: ",
            ns.name
        )),
        "names the object refused: {message}"
    );
    assert!(message.contains("63"), "the server's reason: {message}");
    let warnings = || async {
        ns.events("podinfo")
            .await
            .into_iter()
            .filter(|e| e.0 == "Warning" && e.1.contains("rejected by the API server"))
            .count()
    };
    wait_until(Duration::from_secs(20), "the Warning event", || async {
        warnings().await > 0
    })
    .await;

    // No hot loop: the refused write is not retried every 5 s (the watch events of the
    // initial writes settle first).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = reconciles(&base).await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let after = reconciles(&base).await;
    assert!(
        after - before <= 1,
        "{} reconciles in 16 s while nothing changed",
        after - before
    );
    assert_eq!(warnings().await, 1, "one Warning, not one per attempt");

    // A change (a valid target) recovers.
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let patch = json!({"spec": {"targetRef": {"name": "podinfo"}}});
    ns.canaries()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        Duration::from_secs(120),
    )
    .await;
    assert!(stalled().await.is_none(), "Stalled cleared");
    ns.cleanup().await;
}

/// A failing release whose metric has a long non-ASCII name (1200 bytes, 400 characters): the
/// Halt event is recorded, its note cut to the server's 1024 bytes. The same run checks how the
/// Events read in `kubectl get events --sort-by=.lastTimestamp` and that the target's
/// scale-down and the Canary's status writes name pennant in `managedFields`.
#[tokio::test]
async fn halt_event_with_a_long_non_ascii_metric_name_is_recorded() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-events", 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    let metric = "応答時間".repeat(100);
    let canary = podinfo_canary(1, 25, 50, 120).replace(
        "    metrics:\n",
        &format!(
            "    metrics:\n    - name: {metric}\n      query: vector(5)\n      thresholdRange:\n        max: 1\n"
        ),
    );
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
    wait_rolled_back(&ns, "podinfo").await;

    let halt = format!("Halt podinfo.{} advancement {}", ns.name, "応答時間");
    let flaggers = [
        "all the metrics providers are available!",
        "Rolling back podinfo.",
        "Canary failed! Scaling down podinfo.",
    ];
    // the rollback's Events follow its status: poll for every one asserted below
    let events: Vec<String> = ns
        .events_with("podinfo", &[&[halt.as_str()][..], &flaggers[..]].concat())
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    let note = events
        .iter()
        .find(|m| m.starts_with(&halt))
        .unwrap_or_else(|| panic!("Halt event in {events:#?}"));
    assert!(note.len() <= 1024, "{} bytes", note.len());
    assert!(note.contains('…'), "{note}");
    assert!(
        note.contains(" > 1"),
        "the value at the end is kept: {note}"
    );
    for flagger in flaggers {
        assert!(
            events.iter().any(|m| m.starts_with(flagger)),
            "{flagger:?} in {events:#?}"
        );
    }

    // Events as `kubectl get events --sort-by=.lastTimestamp` reads them.
    let out = std::process::Command::new(kubectl())
        .args(["get", "events", "-n", &ns.name])
        .args(["--sort-by=.lastTimestamp", "-o", "json"])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reportingComponent"] == "pennant.dev/canary")
        .collect();
    assert!(ours.len() >= 5, "{list:#}");
    for e in &ours {
        assert!(e["lastTimestamp"].is_string(), "lastTimestamp: {e:#}");
        assert!(e["firstTimestamp"].is_string(), "firstTimestamp: {e:#}");
        assert_eq!(e["count"], 1, "{e:#}");
        assert_eq!(e["source"]["component"], "flagger", "{e:#}");
        assert_eq!(e["involvedObject"]["kind"], "Canary", "{e:#}");
    }
    let stamps: Vec<&str> = ours
        .iter()
        .map(|e| e["lastTimestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.is_sorted(), "sorted by lastTimestamp: {stamps:?}");

    // Every write has pennant's field manager: the target's scale-down and the status writes.
    let managers = |obj: Value| -> Vec<(String, String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("manager"), s("operation"), s("subresource"))
            })
            .collect()
    };
    let target = managers(ns.get("apps/v1", "Deployment", "podinfo").await.unwrap());
    let canary = managers(
        ns.get("flagger.app/v1beta1", "Canary", "podinfo")
            .await
            .unwrap(),
    );
    println!("target: {target:?}\ncanary: {canary:?}");
    for (what, m) in [("target", &target), ("canary", &canary)] {
        assert!(
            m.iter().all(|(manager, ..)| manager != "unknown"),
            "{what}: {m:?}"
        );
    }
    let replicas_owner = |obj: &Value| {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["fieldsV1"]["f:spec"].get("f:replicas").is_some())
            .map(|m| m["manager"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let live = ns.get("apps/v1", "Deployment", "podinfo").await.unwrap();
    assert_eq!(
        replicas_owner(&live),
        ["pennant"],
        "the scale-down is pennant's: {target:?}"
    );
    assert!(
        canary
            .iter()
            .any(|(m, op, sub)| m == "pennant" && op == "Update" && sub == "status"),
        "the status writes are pennant's: {canary:?}"
    );
    ns.cleanup().await;
}
