//! The dashboard of issue 18 end to end: `pennant controller --ui` on the dev cluster runs real
//! canary releases (the mesh simulator's traffic, the real Prometheus) while headless Chromium
//! (Debian's `chromium`, driven over the DevTools protocol by `tests/support/ui_driver.mjs`)
//! keeps the Canary page open: the weight climbs and the release ends Succeeded without a
//! reload; a rolled-back release shows the failed step and the reason. Actions: a POST without
//! a token, or with the token of a ServiceAccount that may not patch the Canary, is refused 403
//! and changes nothing; the token of one that may is obeyed. Screenshots of the overview and
//! the Canary page go to `target/ui-screenshots/`.
//!
//! Skipped (with a message) when `chromium` or `node` is not installed.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pennant::api::CanaryPhase;
use serde_json::Value;
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// `chromium` (or `$PENNANT_CHROMIUM`) when it and `node` run.
fn chromium() -> Option<String> {
    let c = std::env::var("PENNANT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return None;
    }
    Command::new(&c)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| c)
}

fn screenshots() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The driver on `url`, its samples collected as they come (one JSON value per line).
struct Driver {
    child: std::process::Child,
    samples: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    fn start(chromium: &str, url: &str, args: &[&str]) -> Driver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ui_driver.mjs");
        let mut child = Command::new("node")
            .args([
                "--experimental-websocket",
                "--no-warnings",
                script,
                "--url",
                url,
            ])
            .args(["--chromium", chromium])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let out = child.stdout.take().unwrap();
        let samples = Arc::new(Mutex::new(vec![]));
        let sink = samples.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Driver {
            child,
            samples,
            reader: Some(reader),
        }
    }

    /// Waits for the driver to end (its own `--seconds` bound it) and returns its samples; the
    /// last is the final one.
    async fn finish(mut self) -> Vec<Value> {
        let status = tokio::task::spawn_blocking(move || {
            let st = self.child.wait().unwrap();
            self.reader.take().unwrap().join().unwrap();
            (st, self.samples.lock().unwrap().clone())
        })
        .await
        .unwrap();
        assert!(status.0.success(), "the browser driver failed: {status:?}");
        status.1
    }
}

/// A namespace running podinfo V1 behind an Istio Canary (simulated traffic), a controller with
/// `--ui` on a free port: (namespace, controller, base URL).
async fn setup(prefix: &str, canary: &str) -> (TestNs, ControllerProcess, String) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 50).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let ctl = ControllerProcess::start_with(
        &ns.name,
        &ns.name,
        &kubeconfig_path(),
        &[
            "--ui",
            "--listen",
            &listen,
            "--metrics-server",
            &prometheus_url(),
            "--log-level",
            "info,pennant=debug",
        ],
        &[],
    );
    ns.apply_yaml(canary).await;
    wait_initialized(&ns, "podinfo").await;
    (ns, ctl, format!("http://{listen}"))
}

/// Weights as the page shows them (`"25%"` → 25).
fn weight(s: &Value) -> Option<i64> {
    s["weight"].as_str()?.trim_end_matches('%').parse().ok()
}

/// The samples taken while the page was open: never reloaded, updated by its script.
fn assert_live(samples: &[Value]) {
    let loaded: Vec<&Value> = samples.iter().map(|s| &s["loadedAt"]).collect();
    assert!(loaded[0].is_number(), "{samples:?}");
    assert!(
        loaded.iter().all(|l| *l == loaded[0]),
        "the page was reloaded: {loaded:?}"
    );
    let updates: Vec<i64> = samples
        .iter()
        .filter_map(|s| s["updates"].as_i64())
        .collect();
    assert!(updates.windows(2).all(|w| w[1] >= w[0]), "{updates:?}");
    assert!(
        *updates.last().unwrap() >= 5,
        "the script updated the page: {updates:?}"
    );
}

#[tokio::test]
async fn the_canary_page_follows_a_release_live_and_actions_need_patch_rights() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: no chromium or node (apt-get install chromium nodejs)");
        return;
    };
    let (ns, _ctl, base) = setup("ui-live", &podinfo_canary(2, 25, 75, 120)).await;
    let n = ns.name.clone();
    let page = format!("{base}/ui/canaries/{n}/podinfo");
    let html = wait_http(&page, Duration::from_secs(10)).await;
    assert!(html.contains("<dd id=\"phase\">Initialized</dd>"), "{html}");

    let driver = Driver::start(
        &chromium,
        &page,
        &[
            "--seconds",
            "150",
            "--until",
            "Succeeded",
            "--width",
            "900",
            "--height",
            "900",
            "--screenshot",
            screenshots().join("canary.png").to_str().unwrap(),
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_image(&ns, V2, 0.0).await;

    // actions while the release runs: refused without rights, nothing written
    let http = reqwest::Client::new();
    let abort = format!("{base}/ui/api/canaries/{n}/podinfo/abort");
    let promote = format!("{base}/ui/api/canaries/{n}/podinfo/promote");
    let r = http.post(&abort).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("no bearer token"));
    let r = http
        .post(&abort)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: viewer\n  namespace: NAMESPACE\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n  namespace: NAMESPACE\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: canary-patch\n  namespace: NAMESPACE\nrules:\n\
         - apiGroups: [flagger.app]\n  resources: [canaries]\n  verbs: [get, patch]\n\
         - apiGroups: [kustomize.toolkit.fluxcd.io]\n  resources: [kustomizations]\n  verbs: [patch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer\n  namespace: NAMESPACE\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: canary-patch}\n\
         subjects:\n- {kind: ServiceAccount, name: deployer, namespace: NAMESPACE}\n",
    )
    .await;
    let token = |sa: &str| {
        let out = Command::new(kubectl())
            .args([
                "--kubeconfig",
                &kubeconfig_path(),
                "-n",
                &n,
                "create",
                "token",
                sa,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let viewer = token("viewer");
    let r = http.post(&abort).bearer_auth(&viewer).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&format!(
            "system:serviceaccount:{n}:viewer may not patch canaries"
        )),
        "{body}"
    );
    assert!(!body.contains(&viewer), "the token is never echoed");
    let annotations = ns
        .canary("podinfo")
        .await
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key("gate.pennant.dev/rollback"),
        "a refused abort wrote nothing: {annotations:?}"
    );
    let r = http
        .post(&promote)
        .bearer_auth(token("deployer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let annotations = ns
        .canary("podinfo")
        .await
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        annotations
            .get("gate.pennant.dev/promotion")
            .map(String::as_str),
        Some("open")
    );

    // reconcile now: a Kustomization (no kustomize controller runs here: the request is the
    // annotation), its page, and the action refused then obeyed
    ns.apply_yaml(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: NAMESPACE\n\
         spec:\n  interval: 10m\n  path: ./\n  prune: true\n  sourceRef: {kind: GitRepository, name: repo}\n",
    )
    .await;
    let ks_page = wait_http(
        &format!("{base}/ui/kustomizations/{n}/apps"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        ks_page.contains(&format!("Kustomization {n}/apps")),
        "{ks_page}"
    );
    let reconcile = format!("{base}/ui/api/kustomizations/{n}/apps/reconcile");
    let requested = || async {
        ns.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps")
            .await
            .unwrap()["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
            .as_str()
            .map(String::from)
    };
    let r = http
        .post(&reconcile)
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(requested().await, None, "a refused reconcile wrote nothing");
    let r = http
        .post(&reconcile)
        .bearer_auth(token("deployer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert!(requested().await.is_some_and(|t| t.starts_with("20")));

    let samples = driver.finish().await;
    let last = samples.last().unwrap();
    assert_eq!(last["phase"], "Succeeded", "{samples:#?}");
    assert_live(&samples);
    let weights: Vec<i64> = samples
        .iter()
        .filter(|s| s["phase"] == "Progressing")
        .filter_map(weight)
        .collect();
    let mut climbed = weights.clone();
    climbed.dedup();
    println!("weights seen on the page: {climbed:?}");
    assert!(
        climbed.len() >= 2,
        "the weight climbed on the page: {climbed:?}"
    );
    assert!(climbed.windows(2).all(|w| w[1] > w[0]), "{climbed:?}");
    let text = last["text"].as_str().unwrap();
    assert!(text.contains("Promotion completed"), "{text}");
    for w in [25, 50, 75] {
        assert!(
            text.contains(&format!("Advance podinfo.{n} canary weight {w}")),
            "{text}"
        );
    }
    // the per-step success rate from Prometheus: the simulator serves no errors
    assert!(text.contains("100.0%"), "{text}");

    // the overview at phone width
    let overview = Driver::start(
        &chromium,
        &format!("{base}/ui"),
        &[
            "--width",
            "390",
            "--height",
            "700",
            "--screenshot",
            screenshots().join("overview.png").to_str().unwrap(),
        ],
    )
    .finish()
    .await;
    let text = overview.last().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("podinfo") && text.contains("Succeeded"),
        "{text}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_rolled_back_release_shows_the_failed_step_and_the_reason() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: no chromium or node (apt-get install chromium nodejs)");
        return;
    };
    let (ns, _ctl, base) = setup("ui-fail", &podinfo_canary(2, 25, 75, 120)).await;
    let n = ns.name.clone();
    let page = format!("{base}/ui/canaries/{n}/podinfo");
    wait_http(&page, Duration::from_secs(10)).await;
    let driver = Driver::start(
        &chromium,
        &page,
        &[
            "--seconds",
            "150",
            "--until",
            "Failed",
            "--width",
            "900",
            "--screenshot",
            screenshots().join("canary-failed.png").to_str().unwrap(),
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_image(&ns, V2, 0.5).await;
    let samples = driver.finish().await;
    let last = samples.last().unwrap();
    assert_eq!(last["phase"], "Failed", "{samples:#?}");
    assert_live(&samples);
    let text = last["text"].as_str().unwrap();
    assert!(text.contains("Halt podinfo"), "the failed step: {text}");
    assert!(text.contains("success rate"), "its reason: {text}");
    assert!(
        text.contains("failed checks threshold reached 2"),
        "the rollback's reason: {text}"
    );
    let phase = ns.canary("podinfo").await.status.unwrap().phase;
    assert_eq!(phase, Some(CanaryPhase::Failed));
    ns.cleanup().await;
}
