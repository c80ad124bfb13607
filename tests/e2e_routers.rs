//! End-to-end releases through every router pennant implements, against the real local control
//! plane, the real Prometheus and the traffic simulator (which plays ingress-nginx, a Gateway API
//! implementation, plain Services and the Istio mesh, and serves each one's metric series).
//! Mirrors Flagger's e2e scripts (`test/<provider>/run.sh`): a canary promoted, A/B by header,
//! blue/green (with mirroring), a failing version rolled back, takeover of a user's route.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pennant::api::find_condition;
use serde_json::Value;
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const V3: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);

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

/// A Canary on podinfo: `provider`, extra `spec` lines (indented 2) and `analysis` lines
/// (indented 4), the builtin metrics of the provider.
fn canary(provider: &str, spec: &str, analysis: &str) -> String {
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  provider: {provider}
  progressDeadlineSeconds: 120
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
{spec}
  analysis:
    interval: 10s
    threshold: 3
{analysis}
{METRICS}
"#
    )
}

/// A namespace with podinfo v1 and a controller, and the Canary applied and Initialized.
async fn initialized(
    prefix: &str,
    manifests: &str,
    canary_yaml: &str,
) -> (TestNs, ControllerProcess) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    if !manifests.is_empty() {
        ns.apply_yaml(manifests).await;
    }
    let ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(canary_yaml).await;
    wait_initialized(&ns, "podinfo").await;
    (ns, ctl)
}

/// Samples `f(object)` every 300 ms in the background; `seen()` gives the distinct values in
/// order.
struct Sampler<T> {
    seen: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: PartialEq + Clone + Send + 'static> Sampler<T> {
    fn start(
        ns: &TestNs,
        api_version: &'static str,
        kind: &'static str,
        name: &'static str,
        f: fn(&Value) -> Option<T>,
    ) -> Self {
        let seen = Arc::new(Mutex::new(vec![]));
        let out = seen.clone();
        let ns = TestNs {
            client: ns.client.clone(),
            name: ns.name.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                if let Some(v) = ns.get(api_version, kind, name).await.as_ref().and_then(f) {
                    let mut s = out.lock().unwrap();
                    if s.last() != Some(&v) {
                        s.push(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> Vec<T> {
        self.seen.lock().unwrap().clone()
    }
}

impl<T> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn primary_image(ns: &TestNs) -> String {
    image_of(&ns.deployment("podinfo-primary").await.expect("primary"))
}

// ---------------------------------------------------------------------------------------------
// NGINX ingress

const INGRESS_REF: &str = r#"  ingressRef:
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    name: podinfo
  service:
    port: 80
    targetPort: 9898"#;

const NGINX: &str = "nginx.ingress.kubernetes.io";

fn canary_weight(ing: &Value) -> Option<String> {
    ing["metadata"]["annotations"][format!("{NGINX}/canary-weight")]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn nginx_canary_is_promoted_then_a_failing_version_rolled_back() {
    let c = canary(
        "nginx",
        INGRESS_REF,
        "    maxWeight: 50\n    stepWeight: 25",
    );
    let (ns, _ctl) = initialized("e2e-nginx", INGRESS, &c).await;
    let ing = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await
        .expect("canary Ingress cloned from the user's");
    assert_eq!(
        ing["metadata"]["annotations"][format!("{NGINX}/canary")],
        "true"
    );
    assert_eq!(canary_weight(&ing).as_deref(), Some("0"));
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "podinfo-canary"
    );
    let user = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo")
        .await
        .unwrap();
    assert!(
        user["metadata"]["annotations"]
            .get(format!("{NGINX}/canary"))
            .is_none(),
        "the user's Ingress is never modified"
    );

    let sampler = Sampler::start(
        &ns,
        "networking.k8s.io/v1",
        "Ingress",
        "podinfo-canary",
        canary_weight,
    );
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    let seen = sampler.seen();
    assert!(
        seen.contains(&"25".to_string()) && seen.contains(&"50".to_string()),
        "canary-weight stepped 25 → 50: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("0"), "{seen:?}");
    assert_eq!(primary_image(&ns).await, V2);

    // 20 % errors on the canary path: nginx_ingress_controller_requests{canary!=""} says so.
    set_image(&ns, V3, 0.2).await;
    wait_rolled_back(&ns, "podinfo").await;
    assert_eq!(primary_image(&ns).await, V2, "the primary is untouched");
    let ing = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await
        .unwrap();
    assert_eq!(canary_weight(&ing).as_deref(), Some("0"));
    let halted = |e: &str| e.contains("advancement success rate") && e.contains("< 99");
    let events = ns
        .events_until("podinfo", |events| events.iter().any(|(_, m)| halted(m)))
        .await;
    assert!(events.iter().any(|(_, m)| halted(m)), "{events:#?}");
    ns.cleanup().await;
}

/// Promise 1: fields the nginx router does not read (`service.retries`, `service.gateways`, read
/// by Istio only) are named on `Unsupported=True` with the provider, in one Warning event, and
/// the release goes on.
#[tokio::test]
async fn nginx_names_the_fields_it_does_not_read_and_still_promotes() {
    let spec = format!(
        "{INGRESS_REF}\n    retries:\n      attempts: 3\n    gateways:\n    - public-gateway"
    );
    let c = canary("nginx", &spec, "    maxWeight: 50\n    stepWeight: 25");
    let (ns, _ctl) = initialized("e2e-nginx-unread", INGRESS, &c).await;
    let unsupported = || async {
        let status = ns.canary("podinfo").await.status.unwrap_or_default();
        find_condition(&status.conditions, "Unsupported").cloned()
    };
    let c = unsupported().await.expect("Unsupported condition");
    let message = c.message.unwrap_or_default();
    println!("Unsupported: {message}");
    assert_eq!(c.status, "True");
    for needle in [
        "service.gateways (not read by provider \"nginx\")",
        "service.retries (not read by provider \"nginx\")",
    ] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    assert!(!message.contains("ingressRef"), "nginx reads it: {message}");

    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    assert_eq!(primary_image(&ns).await, V2, "the release is not lost");
    assert!(
        unsupported().await.is_some(),
        "still reported after the release"
    );
    let warnings: Vec<String> = ns
        .events_with("podinfo", &["not read by provider"])
        .await
        .into_iter()
        .filter(|(t, m)| t == "Warning" && m.contains("not read by provider"))
        .map(|e| e.1)
        .collect();
    assert_eq!(warnings, vec![message], "one Warning for the whole release");
    ns.cleanup().await;
}

#[tokio::test]
async fn nginx_header_ab_test_routes_matching_requests_to_the_canary() {
    let c = canary(
        "nginx",
        INGRESS_REF,
        r#"    iterations: 3
    match:
    - headers:
        x-canary:
          exact: insider"#,
    );
    let (ns, _ctl) = initialized("e2e-nginx-ab", INGRESS, &c).await;
    ns.annotate("sim.pennant.dev/ab-rps", "30").await;
    let sampler = Sampler::start(
        &ns,
        "networking.k8s.io/v1",
        "Ingress",
        "podinfo-canary",
        |ing| {
            let a = &ing["metadata"]["annotations"];
            Some((
                a[format!("{NGINX}/canary-by-header")].as_str()?.to_string(),
                a[format!("{NGINX}/canary-by-header-value")]
                    .as_str()?
                    .to_string(),
                canary_weight(ing)?,
            ))
        },
    );
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    assert!(
        sampler.seen().contains(&(
            "x-canary".to_string(),
            "insider".to_string(),
            "0".to_string()
        )),
        "header routing during the iterations, no weighted traffic: {:?}",
        sampler.seen()
    );
    let ing = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await
        .unwrap();
    assert!(
        ing["metadata"]["annotations"]
            .get(format!("{NGINX}/canary-by-header"))
            .is_none(),
        "header routing removed after promotion"
    );
    assert_eq!(primary_image(&ns).await, V2);
    assert!(
        ns.event_messages_with("podinfo", "canary iteration 3/3")
            .await
            .iter()
            .any(|e| e.contains("canary iteration 3/3"))
    );
    ns.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Gateway API

const GATEWAY_SPEC: &str = r#"  service:
    port: 9898
    hosts:
    - app.example.com
    gatewayRefs:
    - name: public
      namespace: NAMESPACE"#;

#[tokio::test]
async fn gateway_api_canary_takes_over_a_users_route_and_keeps_its_other_rules() {
    // The user's own HTTPRoute named like the apex, with a rule for another service. (Its
    // rules keep their order; the simulator sends its traffic through the first rule without
    // header matches whatever its path, so the apex rule comes first.)
    let users_route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  parentRefs:
  - name: public
  hostnames:
  - app.example.com
  rules:
  - backendRefs:
    - name: podinfo
      port: 9898
  - matches:
    - path:
        type: PathPrefix
        value: /docs
    backendRefs:
    - name: docs
      port: 80
"#;
    let c = canary(
        "gatewayapi:v1",
        GATEWAY_SPEC,
        "    maxWeight: 50\n    stepWeight: 25",
    );
    let (ns, _ctl) = initialized("e2e-gateway", users_route, &c).await;
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(route_weights(&route), Some((100, 0)));
    let keeps_docs = |r: &Value| {
        r["spec"]["rules"].as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|rule| rule["backendRefs"][0]["name"] == "docs")
        })
    };
    assert!(
        keeps_docs(&route),
        "the user's /docs rule survives: {route:#}"
    );
    assert!(
        route["metadata"].get("ownerReferences").is_none(),
        "a taken-over route is not garbage-collected with the Canary"
    );

    let sampler = Sampler::start(&ns, HTTPROUTE, "HTTPRoute", "podinfo", route_weights);
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    let seen = sampler.seen();
    assert!(
        seen.contains(&(75, 25)) && seen.contains(&(50, 50)),
        "weights stepped through the HTTPRoute: {seen:?}"
    );
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(route_weights(&route), Some((100, 0)));
    assert!(keeps_docs(&route));
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

/// Flagger #1857: the user's route named like the apex, every rule to the apex Service.
const USERS_THREE_RULES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  parentRefs:
  - name: public
  hostnames:
  - app.example.com
  rules:
  - matches:
    - path:
        type: Exact
        value: /healthz
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-probe
          value: health
    backendRefs:
    - name: podinfo
      port: 9898
  - matches:
    - path:
        type: Exact
        value: /readyz
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove:
        - x-debug
    backendRefs:
    - name: podinfo
      port: 9898
  - matches:
    - path:
        type: PathPrefix
        value: /api
      headers:
      - name: x-tenant
        value: blue
    backendRefs:
    - name: podinfo
      port: 9898
"#;

/// (primary, canary) weights of every rule of an HTTPRoute.
fn rule_weights(route: &Value) -> Option<Vec<(i64, i64)>> {
    route["spec"]["rules"]
        .as_array()?
        .iter()
        .map(|r| {
            let w = |i: usize| r["backendRefs"][i]["weight"].as_i64();
            Some((w(0)?, w(1)?))
        })
        .collect()
}

/// `kubectl --kubeconfig <cluster> <args…>` with `manifest` (NAMESPACE replaced) as `-f`;
/// the command's output, or its error when `must_pass` is false.
fn kubectl_with(
    ns: &TestNs,
    args: &[&str],
    manifest: &str,
    must_pass: bool,
) -> Result<String, String> {
    let file = format!("{}/{}-route.yaml", state_dir(), ns.name);
    std::fs::write(&file, manifest.replace("NAMESPACE", &ns.name)).unwrap();
    let mut cmd = std::process::Command::new(kubectl());
    cmd.args(["--kubeconfig", &kubeconfig_path()])
        .args(args)
        .args(["-f", &file]);
    let out = if must_pass {
        Ok(run(&mut cmd))
    } else {
        let o = cmd.output().unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    };
    let _ = std::fs::remove_file(&file);
    out
}

/// Deletes the Canary `podinfo` and waits (up to 2 min) until its finalizer has run.
async fn delete_canary(ns: &TestNs) {
    let canaries = ns.canaries();
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_until(MINUTES(2), "Canary finalized", || async {
        canaries.get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
}

/// True when a field manager of `obj` is `pennant`.
fn managed_by_pennant(obj: &Value) -> bool {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["manager"] == "pennant")
}

/// Takes over [`USERS_THREE_RULES`], releases through it, deletes the Canary: the user's rules
/// are kept (matches, filters) and split at every step, and the route gets exactly its original
/// spec back, with or without `revertOnDeletion` (a finalizer is added for the takeover), owned
/// by pennant no more. With `revert`, the user applies the route with kubectl's client-side
/// apply, then edits it with `kubectl patch`: the live, patched rules are kept and restored, not
/// the older last-applied record. Without, the user applies it server-side, and applies an
/// edited route server-side again after the deletion, without conflicts.
async fn three_rule_route_is_split_then_given_back(prefix: &str, revert: bool) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    if revert {
        kubectl_with(&ns, &["apply"], USERS_THREE_RULES, true).unwrap();
        let patch = r#"[{"op": "replace", "path": "/spec/rules/0/matches/0/path/value", "value": "/livez"},
            {"op": "replace", "path": "/spec/rules/2/matches/0/headers/0/value", "value": "green"}]"#;
        run(std::process::Command::new(kubectl()).args([
            "--kubeconfig",
            &kubeconfig_path(),
            "-n",
            &ns.name,
            "patch",
            "httproute",
            "podinfo",
            "--type=json",
            "-p",
            patch,
        ]));
    } else {
        kubectl_with(&ns, &["apply", "--server-side"], USERS_THREE_RULES, true).unwrap();
    }
    let original = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap()["spec"].clone();
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    let spec = format!("  revertOnDeletion: {revert}\n{GATEWAY_SPEC}");
    ns.apply_yaml(&canary(
        "gatewayapi:v1",
        &spec,
        "    maxWeight: 50\n    stepWeight: 25",
    ))
    .await;
    wait_initialized(&ns, "podinfo").await;
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(
        rules.len(),
        3,
        "the user's three rules, nothing added: {route:#}"
    );
    for (rule, user) in rules.iter().zip(original["rules"].as_array().unwrap()) {
        assert_eq!(rule["matches"], user["matches"], "{route:#}");
        assert_eq!(rule["filters"], user["filters"], "{route:#}");
    }
    assert_eq!(rule_weights(&route), Some(vec![(100, 0); 3]));
    assert!(
        ns.canary("podinfo")
            .await
            .metadata
            .finalizers
            .is_some_and(|f| f.iter().any(|f| f == "finalizer.flagger.app")),
        "a taken-over route is given back on deletion"
    );

    let sampler = Sampler::start(&ns, HTTPROUTE, "HTTPRoute", "podinfo", rule_weights);
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    let seen = sampler.seen();
    assert!(
        seen.contains(&vec![(75, 25); 3]) && seen.contains(&vec![(50, 50); 3]),
        "every rule stepped: {seen:?}"
    );
    assert_eq!(primary_image(&ns).await, V2);

    delete_canary(&ns).await;
    let route = ns
        .get(HTTPROUTE, "HTTPRoute", "podinfo")
        .await
        .expect("the user's route survives");
    assert_eq!(route["spec"], original, "original spec restored exactly");
    if revert {
        assert_eq!(
            route["spec"]["rules"][0]["matches"][0]["path"]["value"], "/livez",
            "the patched rule, not kubectl's last-applied one"
        );
    }
    assert!(!managed_by_pennant(&route), "given back: {route:#}");
    if !revert {
        let edited = USERS_THREE_RULES.replace("value: /readyz", "value: /ready");
        let applied = kubectl_with(&ns, &["apply", "--server-side"], &edited, false);
        assert!(applied.is_ok(), "the user's next apply: {applied:?}");
        let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
        assert_eq!(
            route["spec"]["rules"][1]["matches"][0]["path"]["value"],
            "/ready"
        );
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_takes_over_a_three_rule_route_and_gives_it_back_on_deletion() {
    three_rule_route_is_split_then_given_back("e2e-gw-rules", false).await;
}

#[tokio::test]
async fn gateway_api_takes_over_a_three_rule_route_and_reverts_on_deletion() {
    three_rule_route_is_split_then_given_back("e2e-gw-revert", true).await;
}

/// The takeover records the route as it is when the Canary is created, not a cached copy from
/// before the user's last edit (seen once under load: the spec from before a `kubectl patch`
/// made just before the Canary was recorded, kept and restored). With the controller running
/// and its caches filled: the route created, then the Canary at once (the route must not become
/// pennant's own); then twice: the route patched, the Canary created at once. Each time the
/// taken-over route keeps the user's current rule, records exactly the current spec, and gets
/// it back on deletion.
#[tokio::test]
async fn gateway_api_takeover_right_after_a_patch_records_the_patched_route() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-gw-fresh", 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let port = free_port();
    let _ctl = ControllerProcess::start_with_listen(
        &ns.name,
        &prometheus_url(),
        &format!("127.0.0.1:{port}"),
    );
    wait_http(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(60),
    )
    .await;
    let routes = ns.api(HTTPROUTE, "HTTPRoute");
    let spec = format!("  revertOnDeletion: true\n{GATEWAY_SPEC}");
    let canary_yaml = canary("gatewayapi:v1", &spec, "    stepWeight: 25");
    for i in 1..=3 {
        let path = format!("/v{i}");
        if i == 1 {
            ns.apply_yaml(&USERS_THREE_RULES.replace("value: /healthz", "value: /v1"))
                .await;
        } else {
            let mut rules =
                ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap()["spec"]["rules"].clone();
            rules[0]["matches"][0]["path"]["value"] = Value::String(path.clone());
            routes
                .patch(
                    "podinfo",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(serde_json::json!({"spec": {"rules": rules}})),
                )
                .await
                .expect("patch the route");
        }
        // at once, before the controller's route watch may have delivered the change
        ns.apply_yaml(&canary_yaml).await;
        let patched = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap()["spec"].clone();
        assert_eq!(
            patched["rules"][0]["matches"][0]["path"]["value"],
            path.as_str()
        );
        wait_initialized(&ns, "podinfo").await;
        let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
        assert_eq!(
            route["spec"]["rules"][0]["matches"][0]["path"]["value"],
            path.as_str(),
            "round {i}: the patched rule is kept: {route:#}"
        );
        assert_eq!(rule_weights(&route), Some(vec![(100, 0); 3]), "{route:#}");
        let recorded: Value = serde_json::from_str(
            route["metadata"]["annotations"]["flagger.kubernetes.io/original-configuration"]
                .as_str()
                .expect("the original spec recorded"),
        )
        .unwrap();
        assert_eq!(recorded, patched, "round {i}: the patched spec recorded");
        assert!(
            route["metadata"]["ownerReferences"].is_null(),
            "round {i}: still the user's, not garbage-collected with the Canary: {route:#}"
        );

        delete_canary(&ns).await;
        let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
        assert_eq!(
            route["spec"], patched,
            "round {i}: the patched spec restored"
        );
        assert!(!managed_by_pennant(&route), "given back: {route:#}");
        // the next Canary starts clean: what this one owned is garbage-collected
        wait_until(
            MINUTES(1),
            "the primary and the Services collected",
            || async {
                ns.deployment("podinfo-primary").await.is_none()
                    && ns.get("v1", "Service", "podinfo-primary").await.is_none()
                    && ns.get("v1", "Service", "podinfo-canary").await.is_none()
            },
        )
        .await;
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_refuses_a_route_rule_mixing_the_apex_with_other_backends() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-gw-mixed", 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let mixed = USERS_THREE_RULES.replace(
        "    backendRefs:\n    - name: podinfo\n      port: 9898\n  - matches:\n    - path:\n        type: PathPrefix",
        "    backendRefs:\n    - name: podinfo\n      port: 9898\n      weight: 90\n    - name: legacy\n      port: 80\n      weight: 10\n  - matches:\n    - path:\n        type: PathPrefix",
    );
    assert_ne!(mixed, USERS_THREE_RULES);
    ns.apply_yaml(&mixed).await;
    let original = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap()["spec"].clone();
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&canary("gatewayapi:v1", GATEWAY_SPEC, "    stepWeight: 25"))
        .await;
    assert_stalled(
        &ns,
        "HTTPRoute podinfo spec.rules[1] sends traffic to Service podinfo and to other backends (podinfo, legacy)",
    )
    .await;
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(route["spec"], original, "nothing written");
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_waits_for_the_gateway_to_accept_the_route() {
    let c = canary(
        "gatewayapi:v1",
        GATEWAY_SPEC,
        "    maxWeight: 50\n    stepWeight: 25",
    );
    let (ns, _ctl) = initialized("e2e-gateway-pending", "", &c).await;
    // The gateway now rejects the route (as a misconfigured listener would).
    ns.annotate("sim.pennant.dev/gateway-accept", "false").await;
    let routes = ns.api(HTTPROUTE, "HTTPRoute");
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    let generation = route["metadata"]["generation"].as_i64().unwrap();
    let rejected = serde_json::json!({"status": {"parents": [{
        "parentRef": {"name": "public", "namespace": ns.name},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
            "message": "no listener for app.example.com", "observedGeneration": generation,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}});
    // The simulator re-reads the annotation on its next tick (1 s): reject until it stays so.
    for attempt in 0.. {
        tokio::time::sleep(Duration::from_secs(2)).await;
        routes
            .patch_status(
                "podinfo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(rejected.clone()),
            )
            .await
            .expect("reject the route");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
        let c = &r["status"]["parents"][0]["conditions"][0];
        if c["status"] == "False" {
            break;
        }
        assert!(attempt < 5, "the simulator keeps accepting the route: {c}");
    }

    set_image(&ns, V2, 0.0).await;
    let c = ns.canaries();
    wait_until(MINUTES(1), "Halted RoutesPending", || async {
        let c = c.get("podinfo").await.unwrap();
        let st = c.status.unwrap_or_default();
        find_condition(&st.conditions, "Halted")
            .is_some_and(|h| h.reason.as_deref() == Some("RoutesPending"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(
        st.canary_weight, 0,
        "no traffic moves to an unaccepted route"
    );
    assert_eq!(st.failed_checks, 0, "waiting is not a failure");
    let halted = find_condition(&st.conditions, "Halted").unwrap();
    assert!(
        halted
            .message
            .as_deref()
            .unwrap()
            .contains("no listener for app.example.com"),
        "{halted:?}"
    );

    // The gateway accepts it again: the release goes on to promotion.
    ns.annotate("sim.pennant.dev/gateway-accept", "true").await;
    wait_promoted(&ns, "podinfo").await;
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_blue_green_mirrors_then_switches() {
    let c = canary(
        "gatewayapi:v1",
        GATEWAY_SPEC,
        "    iterations: 3\n    mirror: true",
    );
    let (ns, _ctl) = initialized("e2e-gateway-bg", "", &c).await;
    let sampler = Sampler::start(&ns, HTTPROUTE, "HTTPRoute", "podinfo", |r| {
        let mirrored = r["spec"]["rules"][0]["filters"]
            .as_array()
            .is_some_and(|f| {
                f.iter().any(|f| {
                    f["type"] == "RequestMirror"
                        && f["requestMirror"]["backendRef"]["name"] == "podinfo-canary"
                })
            });
        Some((route_weights(r)?, mirrored))
    });
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    let seen = sampler.seen();
    assert!(
        seen.contains(&((100, 0), true)),
        "mirrored during the iterations: {seen:?}"
    );
    assert!(
        seen.contains(&((0, 100), false)),
        "all traffic to the canary before promotion: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&((100, 0), false)), "{seen:?}");
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_v1beta1_ab_test_by_header() {
    // Written through the older API version, as `gatewayapi:v1beta1` users have it.
    let c = canary(
        "gatewayapi:v1beta1",
        GATEWAY_SPEC,
        r#"    iterations: 3
    match:
    - headers:
        x-canary:
          exact: insider"#,
    );
    let (ns, _ctl) = initialized("e2e-gateway-ab", "", &c).await;
    ns.annotate("sim.pennant.dev/ab-rps", "30").await;
    let sampler = Sampler::start(&ns, HTTPROUTE, "HTTPRoute", "podinfo", |r| {
        let rules = r["spec"]["rules"].as_array()?;
        let header = rules[0]["matches"][0]["headers"][0]["name"].as_str()?;
        Some((
            header.to_string(),
            route_weights(r)?,
            rules.get(1)?["backendRefs"][0]["name"]
                .as_str()?
                .to_string(),
        ))
    });
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    assert!(
        sampler.seen().contains(&(
            "x-canary".to_string(),
            (0, 100),
            "podinfo-primary".to_string()
        )),
        "matching requests to the canary, the rest to the primary: {:?}",
        sampler.seen()
    );
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Plain Kubernetes blue/green

#[tokio::test]
async fn kubernetes_blue_green_without_a_mesh() {
    let c = canary(
        "kubernetes",
        "  service:\n    port: 9898",
        "    iterations: 3",
    );
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-kubernetes", 40).await;
    // A load tester hits podinfo-canary directly: every Service of the namespace gets traffic.
    ns.annotate("sim.pennant.dev/service-rps", "30").await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&c).await;
    wait_initialized(&ns, "podinfo").await;
    let apex = ns.get("v1", "Service", "podinfo").await.unwrap();
    assert_eq!(apex["spec"]["selector"]["app"], "podinfo-primary");
    let canary_svc = ns.get("v1", "Service", "podinfo-canary").await.unwrap();
    assert_eq!(canary_svc["spec"]["selector"]["app"], "podinfo");

    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    assert_eq!(primary_image(&ns).await, V2);
    for (api_version, kind) in [
        ("networking.istio.io/v1", "VirtualService"),
        (HTTPROUTE, "HTTPRoute"),
        ("networking.k8s.io/v1", "Ingress"),
    ] {
        assert!(
            ns.get(api_version, kind, "podinfo").await.is_none(),
            "no {kind} without a mesh"
        );
    }
    let events = ns
        .event_messages_with("podinfo", "canary iteration 3/3")
        .await;
    assert!(
        events.iter().any(|e| e.contains("canary iteration 3/3")),
        "{events:#?}"
    );

    // A failing version never reaches the primary.
    set_image(&ns, V3, 0.3).await;
    wait_rolled_back(&ns, "podinfo").await;
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Istio, completed: A/B and session affinity

#[tokio::test]
async fn istio_ab_test_by_header() {
    let c = canary(
        "istio",
        "  service:\n    port: 9898",
        r#"    iterations: 3
    match:
    - headers:
        x-canary:
          exact: insider"#,
    );
    let (ns, _ctl) = initialized("e2e-istio-ab", "", &c).await;
    ns.annotate("sim.pennant.dev/ab-rps", "30").await;
    let sampler = Sampler::start(
        &ns,
        "networking.istio.io/v1",
        "VirtualService",
        "podinfo",
        |vs| {
            let http = vs["spec"]["http"].as_array()?;
            Some((
                http[0]["match"][0]["headers"]["x-canary"]["exact"]
                    .as_str()?
                    .to_string(),
                http[0]["route"][1]["weight"].as_i64()?,
                http.get(1)?["route"][0]["weight"].as_i64()?,
            ))
        },
    );
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    assert!(
        sampler.seen().contains(&("insider".to_string(), 100, 100)),
        "{:?}",
        sampler.seen()
    );
    assert_eq!(primary_image(&ns).await, V2);
    ns.cleanup().await;
}

/// The simulator's routing decision for one request through VirtualService `podinfo`.
async fn route_request(ns: &TestNs, cookie: Option<&str>, seed: u32) -> Value {
    let base = simulator_url();
    let mut url = format!(
        "{base}/route?namespace={}&router=istio&name=podinfo&seed={seed}",
        ns.name
    );
    if let Some(c) = cookie {
        url.push_str(&format!("&header.Cookie={c}"));
    }
    reqwest::get(&url)
        .await
        .expect("simulator /route")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn istio_session_affinity_keeps_a_user_on_the_canary() {
    // A confirm-promotion gate holds the run at its weights while the routes are sampled, so a
    // slow machine cannot promote (and expire the cookie) before the requests are made.
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let c = canary(
        "istio",
        "  service:\n    port: 9898",
        &format!(
            r#"    maxWeight: 50
    stepWeight: 25
    sessionAffinity:
      cookieName: flagger-cookie
      maxAge: 3600
    webhooks:
    - name: promotion-gate
      type: confirm-promotion
      url: {base}/gate/check"#
        ),
    );
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-istio-sticky", 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start_with_listen(&ns.name, &prometheus_url(), &listen);
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    ns.apply_yaml(&c).await;
    wait_initialized(&ns, "podinfo").await;
    set_image(&ns, V2, 0.0).await;
    let canaries = ns.canaries();
    wait_until(MINUTES(1), "a session-affinity cookie", || async {
        let c = canaries.get("podinfo").await.unwrap();
        c.status
            .is_some_and(|s| s.canary_weight > 0 && s.session_affinity_cookie.is_some())
    })
    .await;
    let st = ns.canary("podinfo").await.status.unwrap();
    let cookie = st.session_affinity_cookie.unwrap();
    assert!(cookie.starts_with("flagger-cookie="), "{cookie}");
    // Wait for the route carrying it.
    wait_until(Duration::from_secs(20), "sticky VirtualService", || async {
        ns.get("networking.istio.io/v1", "VirtualService", "podinfo")
            .await
            .is_some_and(|vs| vs.to_string().contains(&cookie))
    })
    .await;

    // With the cookie, every request lands on the canary workload; without, the split applies
    // and a request that lands on the canary gets the cookie set.
    let mut on_canary = 0;
    let mut set_cookie_seen = false;
    for seed in 0..40 {
        let with = route_request(&ns, Some(&cookie), seed).await;
        assert_eq!(with["workload"], "podinfo", "sticky: {with}");
        let without = route_request(&ns, None, seed).await;
        if without["workload"] == "podinfo" {
            on_canary += 1;
            set_cookie_seen |= without["setCookie"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c.as_str().unwrap_or("").starts_with(&cookie))
            });
        }
    }
    assert!(
        (1..40).contains(&on_canary),
        "without the cookie the weights apply: {on_canary}/40 on the canary"
    );
    assert!(set_cookie_seen, "the canary sets the cookie");

    let opened = reqwest::Client::new()
        .post(format!("{base}/gate/open"))
        .json(&serde_json::json!({"name": "podinfo", "namespace": ns.name}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 202, "gate opened");
    wait_promoted(&ns, "podinfo").await;
    let st = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(st.session_affinity_cookie, None);
    assert_eq!(
        st.previous_session_affinity_cookie.as_deref(),
        Some(cookie.as_str())
    );
    wait_until(Duration::from_secs(20), "cookie expiry route", || async {
        let r = route_request(&ns, Some(&cookie), 1).await;
        r["setCookie"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c.as_str().unwrap_or("").contains("Max-Age=-1"))
        }) && r["workload"] == "podinfo-primary"
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn istio_takes_over_a_users_service_and_virtualservice_and_reverts_on_deletion() {
    let users = r#"
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  selector:
    app: podinfo
  ports:
  - name: http
    port: 9898
    targetPort: 9898
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  hosts:
  - podinfo
  http:
  - timeout: 5s
    route:
    - destination:
        host: podinfo
"#;
    let c = canary(
        "istio",
        "  revertOnDeletion: true\n  service:\n    port: 9898",
        "    maxWeight: 50\n    stepWeight: 25",
    );
    let (ns, _ctl) = initialized("e2e-istio-takeover", users, &c).await;
    let vs = ns
        .get("networking.istio.io/v1", "VirtualService", "podinfo")
        .await
        .unwrap();
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );
    assert!(vs["metadata"].get("ownerReferences").is_none(), "{vs:#}");
    let original = vs["metadata"]["annotations"]["flagger.kubernetes.io/original-configuration"]
        .as_str()
        .expect("original spec recorded");
    assert!(original.contains("\"timeout\":\"5s\""), "{original}");
    let apex = ns.get("v1", "Service", "podinfo").await.unwrap();
    assert_eq!(apex["spec"]["selector"]["app"], "podinfo-primary");
    assert_eq!(
        apex["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"], "disabled",
        "Flux leaves a taken-over Service alone"
    );

    ns.canaries()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    let canaries = ns.canaries();
    wait_until(MINUTES(2), "Canary finalized", || async {
        canaries.get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
    let vs = ns
        .get("networking.istio.io/v1", "VirtualService", "podinfo")
        .await
        .expect("the user's VirtualService survives");
    assert_eq!(
        vs["spec"]["http"],
        serde_json::json!([{"timeout": "5s", "route": [{"destination": {"host": "podinfo"}}]}]),
        "original spec restored"
    );
    let apex = ns
        .get("v1", "Service", "podinfo")
        .await
        .expect("Service survives");
    assert_eq!(
        apex["spec"]["selector"],
        serde_json::json!({"app": "podinfo"})
    );
    for given_back in [&vs, &apex] {
        assert!(!managed_by_pennant(given_back), "{given_back:#}");
        assert!(
            given_back["metadata"]["annotations"]
                .get("flagger.kubernetes.io/original-configuration")
                .is_none(),
            "no stale record for a later takeover: {given_back:#}"
        );
    }
    let target = ns.deployment("podinfo").await.unwrap();
    assert_eq!(
        target.spec.unwrap().replicas,
        Some(2),
        "target scaled back up"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn istio_canary_mirrors_its_first_interval_then_shifts_traffic() {
    let c = canary(
        "istio",
        "  service:\n    port: 9898",
        "    maxWeight: 50\n    stepWeight: 25\n    mirror: true\n    mirrorWeight: 100",
    );
    let (ns, _ctl) = initialized("e2e-istio-mirror", "", &c).await;
    let sampler = Sampler::start(
        &ns,
        "networking.istio.io/v1",
        "VirtualService",
        "podinfo",
        |vs| {
            let rule = &vs["spec"]["http"][0];
            Some((
                rule["route"][1]["weight"].as_i64()?,
                rule["mirror"]["host"].as_str() == Some("podinfo-canary"),
            ))
        },
    );
    set_image(&ns, V2, 0.0).await;
    wait_promoted(&ns, "podinfo").await;
    let seen = sampler.seen();
    let mirrored_at = seen.iter().position(|s| *s == (0, true));
    let first_step = seen.iter().position(|s| *s == (25, false));
    assert!(
        matches!((mirrored_at, first_step), (Some(m), Some(f)) if m < f),
        "mirrored at weight 0 before the first step: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&(0, false)), "{seen:?}");
    assert!(
        ns.event_messages_with("podinfo", "Mirroring traffic to canary")
            .await
            .iter()
            .any(|e| e.contains("Mirroring traffic to canary"))
    );
    ns.cleanup().await;
}

/// Stalled=True whose message contains `needle`, and a Warning event saying so.
async fn assert_stalled(ns: &TestNs, needle: &str) {
    let canaries = ns.canaries();
    wait_until(Duration::from_secs(30), needle, || async {
        let c = canaries.get("podinfo").await.unwrap();
        c.status
            .and_then(|s| find_condition(&s.conditions, "Stalled").cloned())
            .is_some_and(|c| c.status == "True" && c.message.unwrap_or_default().contains(needle))
    })
    .await;
    // the Event follows the status it explains: poll for it too
    let events = ns.events_with("podinfo", &[needle]).await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Warning" && e.1.contains(needle)),
        "{events:#?}"
    );
}

#[tokio::test]
async fn nginx_without_its_ingress_stalls_until_the_ingress_exists() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-nginx-missing", 40).await;
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    ns.apply_yaml(&canary(
        "nginx",
        INGRESS_REF,
        "    maxWeight: 50\n    stepWeight: 25",
    ))
    .await;
    assert_stalled(&ns, "ingress podinfo").await;
    assert!(
        ns.deployment("podinfo-primary").await.is_none(),
        "nothing is touched for an invalid Canary"
    );
    assert_eq!(
        ns.deployment("podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2),
        "the target keeps serving"
    );
    // The user creates the Ingress: the Canary initialises without being touched.
    ns.apply_yaml(INGRESS).await;
    wait_initialized(&ns, "podinfo").await;
    assert!(
        ns.get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
            .await
            .is_some()
    );

    // A conflicting edit (A/B match without iterations) stalls again, traffic untouched.
    ns.apply_yaml(&canary(
        "nginx",
        INGRESS_REF,
        r#"    maxWeight: 50
    stepWeight: 25
    match:
    - headers:
        x-canary:
          exact: insider"#,
    ))
    .await;
    assert_stalled(
        &ns,
        "analysis.match (A/B testing) needs analysis.iterations",
    )
    .await;
    let ing = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await
        .unwrap();
    assert_eq!(canary_weight(&ing).as_deref(), Some("0"));
    ns.cleanup().await;
}

#[tokio::test]
async fn changing_the_provider_mid_run_sends_the_old_routes_back_to_the_primary() {
    let c = canary(
        "istio",
        "  service:\n    port: 9898",
        "    maxWeight: 50\n    stepWeight: 25",
    );
    let (ns, _ctl) = initialized("e2e-provider-change", "", &c).await;
    set_image(&ns, V2, 0.0).await;
    let canaries = ns.canaries();
    wait_until(MINUTES(1), "first step on Istio", || async {
        canaries
            .get("podinfo")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.canary_weight > 0)
    })
    .await;
    assert_eq!(ns.vs_weights("podinfo").await, Some((75, 25)));
    // The platform team moves the service to the Gateway API in the middle of the run.
    ns.apply_yaml(&canary(
        "gatewayapi:v1",
        GATEWAY_SPEC,
        "    maxWeight: 50\n    stepWeight: 25",
    ))
    .await;
    wait_until(
        Duration::from_secs(30),
        "the VirtualService back on the primary",
        || async { ns.vs_weights("podinfo").await == Some((100, 0)) },
    )
    .await;
    wait_promoted(&ns, "podinfo").await;
    assert_eq!(
        ns.vs_weights("podinfo").await,
        Some((100, 0)),
        "never back to the canary"
    );
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(route_weights(&route), Some((100, 0)));
    assert_eq!(
        ns.canary("podinfo")
            .await
            .status
            .unwrap()
            .routing_provider
            .as_deref(),
        Some("gatewayapi:v1")
    );
    ns.cleanup().await;
}
