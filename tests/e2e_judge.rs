//! End-to-end releases judged by the sequential judge (annotation
//! `judge.pennant.dev/mode: sequential`) against the real local control plane, the real
//! Prometheus and the traffic simulator (`e2e/cluster up`). Each test has its own namespace and
//! its own `pennant controller` process.

mod support;

use std::time::Duration;

use pennant::analysis::MetricOutcome;
use pennant::analysis::{MetricKind, judge};
use pennant::api::{CanaryPhase, JudgeStatus, ThresholdRange};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);

/// The builtin-metrics Canary of the other e2e tests, opted in with a policy ConfigMap. Its
/// success-rate floor, which stays an absolute guardrail on the canary's cumulative counts, is
/// set to 90 % so that the judge, not the SLO, decides these releases.
fn judged_canary(policy: &str) -> String {
    let canary = podinfo_canary(5, 25, 50, 300)
        .replace("        min: 99\n", "        min: 90\n")
        .replace(
        "  namespace: NAMESPACE\nspec:",
        "  namespace: NAMESPACE\n  annotations:\n    judge.pennant.dev/mode: sequential\n    judge.pennant.dev/policy: podinfo-judge\nspec:",
    );
    let policy: String = policy.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo-judge\n  namespace: NAMESPACE\ndata:\n  policy: |\n{policy}---\n{canary}"
    )
}

async fn initialized(
    prefix: &str,
    rps: u32,
    error_rate: f64,
    policy: &str,
) -> (TestNs, ControllerProcess) {
    initialized_with(prefix, rps, error_rate, "", &judged_canary(policy)).await
}

/// [`judged_canary`] routed by ingress-nginx through [`INGRESS`].
fn judged_nginx_canary(policy: &str) -> String {
    let c = judged_canary(policy)
        .replace("  provider: istio\n", "  provider: nginx\n")
        .replace(
            "  service:\n",
            "  ingressRef:\n    apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    name: podinfo\n  service:\n",
        );
    assert!(
        c.contains("provider: nginx") && c.contains("ingressRef"),
        "{c}"
    );
    c
}

/// `podinfo_canary`'s Service (a mesh's) in [`judged_canary`].
const MESH_SERVICE: &str = "  service:\n    port: 80\n    targetPort: 9898\n";

/// [`judged_canary`] routed by a Gateway API implementation (the simulator plays it) through an
/// HTTPRoute on Gateway `public`.
fn judged_gateway_canary(policy: &str) -> String {
    let c = judged_canary(policy)
        .replace("  provider: istio\n", "  provider: gatewayapi:v1\n")
        .replace(
            MESH_SERVICE,
            "  service:\n    port: 9898\n    hosts:\n    - app.example.com\n    gatewayRefs:\n    - name: public\n      namespace: NAMESPACE\n",
        );
    assert!(
        c.contains("provider: gatewayapi:v1") && c.contains("gatewayRefs"),
        "{c}"
    );
    c
}

/// [`judged_canary`] as a plain Kubernetes blue/green: no router, `iterations` instead of the
/// weight ramp.
fn judged_blue_green_canary(policy: &str, iterations: u32) -> String {
    let c = judged_canary(policy)
        .replace("  provider: istio\n", "  provider: kubernetes\n")
        .replace(MESH_SERVICE, "  service:\n    port: 9898\n")
        .replace(
            "    maxWeight: 50\n    stepWeight: 25\n",
            &format!("    iterations: {iterations}\n"),
        );
    assert!(
        c.contains("provider: kubernetes")
            && c.contains("iterations:")
            && !c.contains("stepWeight"),
        "{c}"
    );
    c
}

/// podinfo v1 with `error_rate`, `extra` manifests, a controller, and `canary` Initialized.
async fn initialized_with(
    prefix: &str,
    rps: u32,
    error_rate: f64,
    extra: &str,
    canary: &str,
) -> (TestNs, ControllerProcess) {
    initialized_in(
        prefix,
        rps,
        &[],
        &podinfo(V1, error_rate, ""),
        extra,
        canary,
    )
    .await
}

/// [`initialized_with`] in a namespace with the simulator annotations `sim` as well, the
/// podinfo Deployment `deployment`.
async fn initialized_in(
    prefix: &str,
    rps: u32,
    sim: &[(&str, &str)],
    deployment: &str,
    extra: &str,
    canary: &str,
) -> (TestNs, ControllerProcess) {
    let client = client().await;
    let ns = TestNs::new(&client, prefix, rps).await;
    for (k, v) in sim {
        ns.annotate(k, v).await;
    }
    ns.apply_yaml(deployment).await;
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
    // let the primary build a little lookback
    tokio::time::sleep(Duration::from_secs(15)).await;
    (ns, ctl)
}

/// podinfo's `status.judge`, with its verdict checked to be `verdict`.
async fn judge_status(ns: &TestNs, verdict: &str) -> JudgeStatus {
    let js = ns
        .canary("podinfo")
        .await
        .status
        .and_then(|s| s.judge)
        .expect("status.judge");
    assert_eq!(js.verdict.as_deref(), Some(verdict), "{js:#?}");
    js
}

/// Sums over the recorded steps: (canary requests, canary errors, primary requests, primary
/// errors).
fn sums(js: &JudgeStatus) -> (u64, u64, u64, u64) {
    js.steps.iter().fold((0, 0, 0, 0), |a, s| {
        (
            a.0 + s.canary.requests,
            a.1 + s.canary.errors,
            a.2 + s.primary.requests,
            a.3 + s.primary.errors,
        )
    })
}

#[tokio::test]
async fn one_point_regression_is_rolled_back_where_flaggers_rule_passes() {
    let (ns, _ctl) = initialized("e2e-judge-bad", 100, 0.0, "errorTolerance: 0.5").await;
    // 0 % → 0.6 % errors: the canary's success rate stays ≥ 99 %
    set_image(&ns, V2, 0.006).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(4),
    )
    .await;
    let js = judge_status(&ns, "FAIL").await;
    let (n, e, _, _) = sums(&js);
    assert!(n > 500 && e > 0, "canary counts {e}/{n}");
    // Flagger's rule on the same canary traffic: success rate ≥ 99 passes
    let sr = 100.0 * (1.0 - e as f64 / n as f64);
    let range = ThresholdRange {
        min: Some(99.0),
        max: None,
    };
    assert!(
        matches!(
            judge(
                MetricKind::SuccessRate,
                "request-success-rate",
                sr,
                Some(&range),
                None
            ),
            MetricOutcome::Pass(_)
        ),
        "Flagger's rule would pass at {sr:.3}%"
    );
    let events = ns
        .event_messages_with("podinfo", "sequential judge FAIL: errors: canary")
        .await;
    let fail = events
        .iter()
        .find(|e| e.contains("sequential judge FAIL: errors: canary"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    for part in [
        "vs primary",
        "difference +",
        "95% CS [",
        "FAIL evidence 10^",
        "needed → rollback",
    ] {
        assert!(fail.contains(part), "{part:?} in {fail}");
    }
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    ns.cleanup().await;
}

#[tokio::test]
async fn good_release_is_promoted_by_the_judge() {
    let (ns, _ctl) = initialized("e2e-judge-good", 100, 0.01, "errorTolerance: 2").await;
    set_image(&ns, V2, 0.01).await;
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(5),
    )
    .await;
    assert!(weights.contains(&50), "ramped to maxWeight: {weights:?}");
    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V2);
    let events = ns
        .event_messages_with("podinfo", "Sequential judge PASS for podinfo.")
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("Sequential judge PASS for podinfo.")
                && e.contains("PASS evidence 10^")),
        "{events:#?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn two_rps_ends_not_enough_evidence_and_holds() {
    let (ns, _ctl) = initialized(
        "e2e-judge-low",
        2,
        0.01,
        "maxSteps: 4\nonInconclusive: hold",
    )
    .await;
    set_image(&ns, V2, 0.01).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::WaitingPromotion,
        Some(CanaryPhase::Failed),
        MINUTES(4),
    )
    .await;
    let c = ns.canary("podinfo").await;
    let st = c.status.clone().unwrap();
    assert_eq!(
        st.judge.as_ref().unwrap().verdict.as_deref(),
        Some("CONTINUE")
    );
    assert_eq!(st.canary_weight, 50, "held at maxWeight");
    let events = ns
        .event_messages_with("podinfo", "not enough evidence after 4 steps")
        .await;
    assert!(
        events.iter().any(
            |e| e.contains("not enough evidence after 4 steps, holding (onInconclusive: hold)")
        ),
        "{events:#?}"
    );
    // still held a while later: no promotion without a verdict or a gate
    tokio::time::sleep(Duration::from_secs(25)).await;
    let c = ns.canary("podinfo").await;
    assert_eq!(c.status.unwrap().phase, Some(CanaryPhase::WaitingPromotion));
    ns.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Low traffic (issue 19): a 2 rps service, the fixed ramp against `weights: adaptive`, each pair
// run side by side (two namespaces, two controllers). Parameters and margins are chosen on the
// real machine and judge with the simulator's counts in `canary::machine_tests`
// (`judged_two_rps_*`), which say why each was chosen.

/// podinfo v1 at `error_rate` with a simulated latency of 45 ms: its p99 is calibrated at
/// 49.5 ms in Istio's (25, 50] bucket, so half the requests are slower than 25 ms and none
/// slower than 50 ms, and the judge has one latency signal, latency>25ms, with about 5 slow
/// requests in every 10. At [`podinfo`]'s 30 ms, 98.5 % of the requests are at or below
/// 25 ms: the only candidate edge has ~1.5 % slow requests in the lookback, picked or not
/// against the 2 % cutoff as the floors fall, and then too rare at 2 rps to ever PASS.
fn podinfo_45ms(error_rate: f64) -> String {
    let d = podinfo(V1, error_rate, "");
    let slow = d.replace(
        "sim.pennant.dev/latency-ms: \"30\"",
        "sim.pennant.dev/latency-ms: \"45\"",
    );
    assert_ne!(d, slow);
    slow
}

/// [`judged_canary`] ramping 5 % a step up to 50 %, one step per 10 s interval.
fn low_traffic_canary(policy: &str) -> String {
    let c = judged_canary(policy).replace("    stepWeight: 25\n", "    stepWeight: 5\n");
    assert!(c.contains("    stepWeight: 5\n"), "{c}");
    c
}

/// (requests, failed requests) `workload` of namespace `ns` answered to clients so far,
/// exactly: the simulator's unfloored `sim_served_requests_total` (0 before any).
async fn served_by(ns: &str, workload: &str) -> (f64, f64) {
    let body = simulator_metrics().await;
    let (mut served, mut failed) = (0.0, 0.0);
    let want = format!("namespace=\"{ns}\",workload=\"{workload}\",");
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("sim_served_requests_total{") else {
            continue;
        };
        if !rest.starts_with(&want) {
            continue;
        }
        let n: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        served += n;
        if rest.contains("code=\"500\"") {
            failed += n;
        }
    }
    (served, failed)
}

/// What one 2 rps release came to when it reached the phase waited for.
#[derive(Debug)]
struct LowTraffic {
    /// The judge's signals.
    signals: Vec<String>,
    verdict: String,
    /// Judge steps recorded (the first, at 5 %, is the warm-up).
    steps: usize,
    /// Canary weights on the way, from 0.
    weights: Vec<i32>,
    /// Requests, and failed ones, the canary served from the release on (the simulator's
    /// exact counts); read once it stopped serving after a rollback.
    served: f64,
    failed: f64,
    /// Seconds from the new revision to the phase.
    secs: f64,
}

/// Release podinfo v2 at `error_rate` (v1: 0 %) at 2 rps, judged under the policy `policy`,
/// and wait until `want` (panics on `fail_on`).
async fn low_traffic_release(
    prefix: &str,
    policy: &str,
    error_rate: f64,
    want: CanaryPhase,
    fail_on: CanaryPhase,
) -> (TestNs, ControllerProcess, LowTraffic) {
    let (ns, ctl) = initialized_in(
        prefix,
        2,
        &[],
        &podinfo_45ms(0.0),
        "",
        &low_traffic_canary(policy),
    )
    .await;
    let before = served_by(&ns.name, "podinfo").await;
    let start = std::time::Instant::now();
    set_image(&ns, V2, error_rate).await;
    let weights = wait_phase(&ns, "podinfo", want, Some(fail_on), MINUTES(4)).await;
    let secs = start.elapsed().as_secs_f64();
    let js = ns
        .canary("podinfo")
        .await
        .status
        .and_then(|s| s.judge)
        .expect("status.judge");
    // after a rollback the canary stops serving within a simulator tick: read the counts once
    // they stand still
    let mut now = served_by(&ns.name, "podinfo").await;
    if want == CanaryPhase::Failed {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let again = served_by(&ns.name, "podinfo").await;
            if again == now {
                break;
            }
            now = again;
        }
    }
    let out = LowTraffic {
        signals: js
            .plan
            .iter()
            .flat_map(|p| p.signals.iter().map(|s| s.name.clone()))
            .collect(),
        verdict: js.verdict.clone().unwrap_or_default(),
        steps: js.steps.len(),
        weights,
        served: now.0 - before.0,
        failed: now.1 - before.1,
        secs,
    };
    eprintln!("{}: {out:?}", ns.name);
    (ns, ctl, out)
}

/// A good release of a 2 rps service: 0 % errors and the same latency before and after.
/// Same Canary and policy but the weights: the fixed ramp (5 % a step) reaches 50 % at step
/// 10 and is held there at `maxSteps` 13 without a verdict; `weights: adaptive` goes to 50 %
/// after the first step (at 2 rps its worst case is within the default budget) and PASSes
/// within the 13 steps.
#[tokio::test]
async fn two_rps_good_release_is_promoted_with_adaptive_weights_where_the_fixed_ramp_holds() {
    const POLICY: &str =
        "errorTolerance: 5\nlatencyTolerance: 50\nmaxSteps: 13\nonInconclusive: hold\n";
    let adaptive_policy = format!("{POLICY}weights: adaptive\n");
    let ((fixed_ns, _f, fixed), (adaptive_ns, _a, adaptive)) = tokio::join!(
        low_traffic_release(
            "e2e-judge-lowgf",
            POLICY,
            0.0,
            CanaryPhase::WaitingPromotion,
            CanaryPhase::Succeeded,
        ),
        low_traffic_release(
            "e2e-judge-lowga",
            &adaptive_policy,
            0.0,
            CanaryPhase::Succeeded,
            CanaryPhase::Failed,
        ),
    );
    eprintln!(
        "2 rps good release: fixed held at {} after {} steps ({:.0}s); adaptive {} at step {} ({:.0}s), weights {:?}",
        fixed.verdict,
        fixed.steps,
        fixed.secs,
        adaptive.verdict,
        adaptive.steps,
        adaptive.secs,
        adaptive.weights
    );
    // both judged on errors and one latency edge, both of which must PASS for a promotion
    for r in [&fixed, &adaptive] {
        assert_eq!(r.signals, ["errors", "latency>25ms"], "{r:?}");
    }
    // fixed: the whole ramp, then held at maxWeight without a verdict
    let ramp: Vec<i32> = (0..=50).step_by(5).collect();
    assert_eq!(fixed.weights, ramp, "{fixed:?}");
    assert_eq!((fixed.verdict.as_str(), fixed.steps), ("CONTINUE", 13));
    let held = fixed_ns
        .event_messages_with("podinfo", "not enough evidence after 13 steps")
        .await;
    assert!(
        held.iter()
            .any(|e| e
                .contains("not enough evidence after 13 steps, holding (onInconclusive: hold)")),
        "{held:#?}"
    );
    assert_eq!(
        image_of(&fixed_ns.deployment("podinfo-primary").await.unwrap()),
        V1
    );
    // adaptive: 5 %, then maxWeight, promoted on PASS within maxSteps, never held
    assert_eq!(adaptive.weights[..3], [0, 5, 50], "{adaptive:?}");
    assert_eq!(adaptive.verdict, "PASS");
    assert!(adaptive.steps <= 13, "{adaptive:?}");
    assert_eq!(
        image_of(&adaptive_ns.deployment("podinfo-primary").await.unwrap()),
        V2
    );
    let events = adaptive_ns
        .event_messages_with("podinfo", "Sequential judge PASS for podinfo.")
        .await;
    assert!(
        events.iter().any(|e| e.contains("adaptive: worst case")),
        "{events:#?}"
    );
    assert!(
        events.iter().all(|e| !e.contains("not enough evidence")),
        "{events:#?}"
    );
    fixed_ns.cleanup().await;
    adaptive_ns.cleanup().await;
}

/// A regression of a 2 rps service: 0 % errors, then 10 % (+10 pp; a +2 pp regression takes
/// over 10 minutes to roll back at 2 rps on any schedule, see
/// `judged_two_rps_two_point_regression_takes_minutes_on_any_schedule`). Same Canary and
/// policy (`harmBudget: 2`) but the weights: the fixed ramp climbs to 50 % while the failures
/// come in; the adaptive weights follow it while the canary looks clean, then pull it back to
/// the weight whose worst case fits the budget. Both are rolled back; the canary serves fewer
/// failed requests (counted by the simulator, from the new revision's first request on) with
/// the adaptive weights.
#[tokio::test]
async fn two_rps_regression_is_rolled_back_with_fewer_failed_requests_with_adaptive_weights() {
    const POLICY: &str = "errorTolerance: 3\nlatencyTolerance: 50\nharmBudget: 2\n";
    let adaptive_policy = format!("{POLICY}weights: adaptive\n");
    let ((fixed_ns, _f, fixed), (adaptive_ns, _a, adaptive)) = tokio::join!(
        low_traffic_release(
            "e2e-judge-lowbf",
            POLICY,
            0.10,
            CanaryPhase::Failed,
            CanaryPhase::Succeeded,
        ),
        low_traffic_release(
            "e2e-judge-lowba",
            &adaptive_policy,
            0.10,
            CanaryPhase::Failed,
            CanaryPhase::Succeeded,
        ),
    );
    eprintln!(
        "2 rps +10pp regression: fixed FAIL after {} steps ({:.0}s), {:.1} failed of {:.1} served; adaptive FAIL after {} steps ({:.0}s), {:.1} failed of {:.1} served, weights {:?}",
        fixed.steps,
        fixed.secs,
        fixed.failed,
        fixed.served,
        adaptive.steps,
        adaptive.secs,
        adaptive.failed,
        adaptive.served,
        adaptive.weights
    );
    for (ns, r) in [(&fixed_ns, &fixed), (&adaptive_ns, &adaptive)] {
        assert_eq!(r.signals, ["errors", "latency>25ms"], "{r:?}");
        assert_eq!(r.verdict, "FAIL", "{r:?}");
        assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
        // the simulator counted the canary's 10 %
        assert!(
            r.served > 20.0 && (r.failed / r.served - 0.10).abs() < 1e-6,
            "{r:?}"
        );
    }
    let pulled_back = adaptive.weights.windows(2).any(|w| w[1] < w[0] && w[1] > 0);
    assert!(pulled_back, "{adaptive:?}");
    let events = adaptive_ns
        .event_messages_with("podinfo", "Pull back podinfo.")
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Pull back podinfo.") && e.contains(": suspicious, worst case")),
        "{events:#?}"
    );
    // 11.5 against 7.2–8.5 failed requests in `canary::machine_tests` over the simulator's
    // phases; a request of slack for what the model leaves out
    assert!(
        adaptive.failed + 2.0 <= fixed.failed,
        "failed requests served: adaptive {:.1}, fixed {:.1}",
        adaptive.failed,
        fixed.failed
    );
    fixed_ns.cleanup().await;
    adaptive_ns.cleanup().await;
}

#[tokio::test]
async fn nginx_two_point_regression_is_rolled_back_by_the_judge() {
    let (ns, _ctl) = initialized_with(
        "e2e-judge-nginx",
        100,
        0.0,
        INGRESS,
        &judged_nginx_canary("errorTolerance: 0.5\nloadTestWorkloads: [flagger-loadtester]"),
    )
    .await;
    // 0 % → 2 % errors on the canary: counted from nginx_ingress_controller_requests, the
    // canary's series by their `canary` label, the primary's by its absence
    set_image(&ns, V2, 0.02).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(4),
    )
    .await;
    let js = judge_status(&ns, "FAIL").await;
    let (n, e, pn, _) = sums(&js);
    assert!(n > 100 && e > 0, "canary counts {e}/{n}");
    assert!(pn > n, "primary requests {pn} (canary {n})");
    let events = ns
        .event_messages_with("podinfo", "sequential judge FAIL: errors: canary")
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("sequential judge FAIL: errors: canary")
                && e.contains("needed → rollback")),
        "{events:#?}"
    );
    let ing = ns
        .get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await
        .expect("canary Ingress");
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"], "0",
        "rolled back: {ing:#}"
    );
    // NGINX's series do not say who sent a request: the judge says so instead of guessing
    assert!(
        js.steps.iter().all(|s| s.canary.load_test.is_none()),
        "nothing counted: {js:#?}"
    );
    let unknown = "share of the canary's requests from load tests (flagger-loadtester) unknown: provider nginx's series do not name a request's source";
    let events = ns.event_messages_with("podinfo", unknown).await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("sequential judge FAIL: errors: canary") && e.contains(unknown)),
        "{events:#?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn gateway_api_five_point_regression_is_rolled_back_by_the_judge() {
    let (ns, _ctl) = initialized_with(
        "e2e-judge-gw",
        100,
        0.01,
        "",
        &judged_gateway_canary("errorTolerance: 1\nwarmupSteps: 0"),
    )
    .await;
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(route_weights(&route), Some((100, 0)));
    // 1 % → 6 % errors on the canary: counted from the app's own
    // http_request_duration_seconds_count, the versions told apart by kubernetes_pod_name
    set_image(&ns, V2, 0.06).await;
    let weights = wait_rolled_back(&ns, "podinfo").await;
    assert!(
        weights.contains(&25),
        "shifted through the HTTPRoute: {weights:?}"
    );
    let js = judge_status(&ns, "FAIL").await;
    assert!(js.steps.len() <= 4, "decided within a few steps: {js:#?}");
    let (n, e, pn, pe) = sums(&js);
    assert!(n > 100 && e * 100 >= n * 4, "canary counts {e}/{n}");
    assert!(pn > n && pe * 100 <= pn * 2, "primary counts {pe}/{pn}");
    let events = ns
        .event_messages_with("podinfo", "sequential judge FAIL: errors: canary")
        .await;
    let fail = events
        .iter()
        .find(|e| e.contains("sequential judge FAIL: errors: canary"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(fail.contains("needed → rollback"), "{fail}");
    let route = ns.get(HTTPROUTE, "HTTPRoute", "podinfo").await.unwrap();
    assert_eq!(
        route_weights(&route),
        Some((100, 0)),
        "rolled back: {route:#}"
    );
    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V1);
    ns.cleanup().await;
}

#[tokio::test]
async fn kubernetes_blue_green_good_release_is_promoted_on_pass_at_the_last_iteration() {
    // No router: a load tester hits podinfo-canary (30 rps), users the apex and the primary
    // Service (30 rps each), all on podinfo's own per-pod series.
    let (ns, _ctl) = initialized_in(
        "e2e-judge-bg",
        40,
        &[("sim.pennant.dev/service-rps", "30")],
        &podinfo(V1, 0.01, ""),
        "",
        &judged_blue_green_canary("errorTolerance: 2\nwarmupSteps: 0", 4),
    )
    .await;
    set_image(&ns, V2, 0.01).await;
    let weights = wait_promoted(&ns, "podinfo").await;
    assert!(
        weights.contains(&100),
        "all traffic to the canary before promotion: {weights:?}"
    );
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V2
    );
    let apex = ns.get("v1", "Service", "podinfo").await.unwrap();
    assert_eq!(apex["spec"]["selector"]["app"], "podinfo-primary");
    let js = judge_status(&ns, "PASS").await;
    // one judged step per iteration: PASS before the last one only advances the iterations
    assert_eq!(js.steps.len(), 4, "{js:#?}");
    assert!(
        js.steps
            .iter()
            .all(|s| s.canary.requests > 0 && s.primary.requests > s.canary.requests),
        "{js:#?}"
    );
    let events = ns
        .event_messages_with("podinfo", "Routing all traffic to canary")
        .await;
    let pos = |needle: &str| {
        events
            .iter()
            .position(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} in {events:#?}"))
    };
    let last_iteration = pos("canary iteration 4/4");
    let pass = pos("Sequential judge PASS for podinfo.");
    let switch = pos("Routing all traffic to canary");
    assert!(last_iteration < pass && pass < switch, "{events:#?}");
    assert!(
        events[pass].contains("PASS evidence 10^"),
        "{}",
        events[pass]
    );
    assert!(
        events
            .iter()
            .all(|e| !e.contains("measured canary traffic share")),
        "blue/green has no configured split to compare with: {events:#?}"
    );
    ns.cleanup().await;
}

/// A worker's job counters, per version, that no builtin signal reads: `e2e_jobs_total{namespace,
/// workload, status="ok"|"failed"}`, `rate` jobs/s per workload, served on `/metrics` and
/// registered with the cluster's Prometheus (a file_sd target, removed on drop).
struct JobsExporter {
    failure: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
    sd_file: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl JobsExporter {
    async fn start(ns: &str, rate: f64, failure: &[(&str, f64)]) -> JobsExporter {
        use std::collections::BTreeMap;
        use std::sync::{Arc, Mutex};
        let failure = Arc::new(Mutex::new(
            failure
                .iter()
                .map(|(w, f)| (w.to_string(), *f))
                .collect::<BTreeMap<_, _>>(),
        ));
        // workload → (ok, failed), accumulated as floats, exposed floored
        let counts: Arc<Mutex<BTreeMap<String, (f64, f64)>>> = Arc::default();
        let (f, c) = (failure.clone(), counts.clone());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let rates = f.lock().unwrap().clone();
                let mut c = c.lock().unwrap();
                for (w, fail) in rates {
                    let e = c.entry(w).or_default();
                    e.0 += rate * 0.5 * (1.0 - fail);
                    e.1 += rate * 0.5 * fail;
                }
            }
        });
        let ns_label = ns.to_string();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let c = counts.lock().unwrap().clone();
                let ns = ns_label.clone();
                async move {
                    let mut out = String::from("# TYPE e2e_jobs_total counter\n");
                    for (w, (ok, failed)) in c {
                        for (status, n) in [("ok", ok), ("failed", failed)] {
                            out += &format!(
                                "e2e_jobs_total{{namespace=\"{ns}\",workload=\"{w}\",status=\"{status}\"}} {}\n",
                                n.floor()
                            );
                        }
                    }
                    out
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let sd_file = format!("{}/prom-targets/{ns}-jobs.json", state_dir());
        std::fs::write(
            &sd_file,
            format!(
                r#"[{{"targets": ["127.0.0.1:{port}"], "labels": {{"fixture": "{ns}-jobs"}}}}]"#
            ),
        )
        .unwrap();
        JobsExporter {
            failure,
            sd_file,
            tasks: vec![ticker, server],
        }
    }

    fn set_failure(&self, workload: &str, f: f64) {
        self.failure.lock().unwrap().insert(workload.into(), f);
    }
}

impl Drop for JobsExporter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sd_file);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A MetricTemplate declared as a count signal (`judge.pennant.dev/bad` / `total`): failed jobs
/// among all jobs, per version by `{{ target }}`. Its Flagger `query` would be checked per
/// window without the judge.
const JOBS_TEMPLATE: &str = r#"apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: jobs
  namespace: NAMESPACE
  annotations:
    judge.pennant.dev/bad: 'e2e_jobs_total{namespace="{{ namespace }}",workload="{{ target }}",status="failed"}'
    judge.pennant.dev/total: 'e2e_jobs_total{namespace="{{ namespace }}",workload="{{ target }}"}'
spec:
  provider:
    type: prometheus
  query: 'sum(rate(e2e_jobs_total{namespace="{{ namespace }}",workload="{{ target }}",status="failed"}[{{ interval }}]))'
"#;

#[tokio::test]
async fn a_regression_only_a_count_metric_template_sees_is_rolled_back() {
    // the exporter first, labelled with the namespace to come: the lookback needs the
    // primary's jobs
    let ns_name = format!("cm-judge-jobs-{}", std::process::id() % 100000);
    let jobs = JobsExporter::start(
        &ns_name,
        20.0,
        &[("podinfo", 0.005), ("podinfo-primary", 0.005)],
    )
    .await;
    let canary = format!(
        "{}    - name: jobs\n      templateRef:\n        name: jobs\n      thresholdRange:\n        max: 1000\n      interval: 15s\n",
        judged_canary("errorTolerance: 1")
    );
    let (ns, _ctl) = initialized_with("cm-judge-jobs", 100, 0.0, JOBS_TEMPLATE, &canary).await;
    assert_eq!(ns.name, ns_name);
    // the new version serves every request well; its jobs fail 10 % of the time
    jobs.set_failure("podinfo", 0.10);
    set_image(&ns, V2, 0.0).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(3),
    )
    .await;
    let js = judge_status(&ns, "FAIL").await;
    let plan = js.plan.as_ref().expect("plan");
    let names: Vec<&str> = plan.signals.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"errors") && names.last() == Some(&"jobs"),
        "{names:?}"
    );
    // the builtins saw no error; the jobs were counted per version from Prometheus
    let (n, e, np, _) = sums(&js);
    assert!(
        n > 0 && np > 0 && e == 0,
        "requests: canary {e}/{n}, primary {np}"
    );
    let events = ns
        .event_messages_with("podinfo", "sequential judge FAIL: ")
        .await;
    let fail = events
        .iter()
        .find(|e| e.contains("sequential judge FAIL: "))
        .unwrap_or_else(|| panic!("{events:#?}"));
    println!("{fail}");
    let clauses: Vec<&str> = fail.split(" | ").collect();
    let jobs_clause = clauses
        .iter()
        .find(|c| c.starts_with("jobs: canary "))
        .unwrap_or_else(|| panic!("{fail}"));
    assert!(jobs_clause.ends_with("→ rollback"), "{fail}");
    // `jobs: canary 21/400 (5.25%) vs primary 2/400 (0.50%); …`: counted per version
    let count = |who: &str| -> (u64, u64) {
        let rest = jobs_clause
            .split(who)
            .nth(1)
            .unwrap_or_else(|| panic!("{fail}"));
        let frac = rest.split_whitespace().next().unwrap();
        let (x, n) = frac.split_once('/').unwrap();
        (x.parse().unwrap(), n.parse().unwrap())
    };
    let ((xc, nc), (xp, np)) = (count("jobs: canary "), count(" vs primary "));
    assert!(
        nc >= 50 && np >= 50 && xc as f64 / nc as f64 > 0.04 && (xp as f64) < 0.03 * np as f64,
        "jobs: canary {xc}/{nc}, primary {xp}/{np}"
    );
    assert!(
        clauses
            .iter()
            .filter(|c| !c.starts_with("jobs: "))
            .all(|c| !c.ends_with("→ rollback")),
        "only the jobs signal fails: {fail}"
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    drop(jobs);
    ns.cleanup().await;
}

#[tokio::test]
async fn an_invalid_count_declaration_stops_the_judge_with_a_warning_and_never_promotes() {
    // a rate, not a series selector: the judge cannot read the metric's counters, and says
    // which annotation, before any traffic moves
    let template = JOBS_TEMPLATE.replace(
        "judge.pennant.dev/bad: 'e2e_jobs_total{namespace=\"{{ namespace }}\",workload=\"{{ target }}\",status=\"failed\"}'",
        "judge.pennant.dev/bad: 'rate(e2e_jobs_total{workload=\"{{ target }}\",status=\"failed\"}[5m])'",
    );
    assert!(template.contains("bad: 'rate("), "{template}");
    let canary = format!(
        "{}    - name: jobs\n      templateRef:\n        name: jobs\n      interval: 15s\n",
        judged_canary("errorTolerance: 1")
    )
    .replace("    threshold: 5\n", "    threshold: 2\n");
    assert!(canary.contains("threshold: 2"), "{canary}");
    let (ns, _ctl) = initialized_with("cm-judge-badjobs", 100, 0.0, &template, &canary).await;
    set_image(&ns, V2, 0.0).await;
    // failed checks at weight 0 up to the threshold, then the rollback: no traffic moved
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        MINUTES(2),
    )
    .await;
    assert!(weights.iter().all(|w| *w == 0), "{weights:?}");
    let needle = format!(
        "sequential judge: MetricTemplate {}/jobs (metric jobs): annotation judge.pennant.dev/bad: not a series selector",
        ns.name
    );
    let events = ns.events_with("podinfo", &[needle.as_str()]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && m.starts_with("Halt ") && m.contains(&needle)),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|(_, m)| m.starts_with("Advance ")),
        "{events:#?}"
    );
    let status = ns.canary("podinfo").await.status.unwrap_or_default();
    let ready = pennant::api::find_condition(&status.conditions, "JudgeReady");
    assert!(
        ready
            .is_some_and(|c| c.status == "False"
                && c.message.as_deref().is_some_and(|m| m.contains(&needle))),
        "{:#?}",
        status.conditions
    );
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V1
    );
    ns.cleanup().await;
}

/// A `rollout` webhook receiver in Flagger's loadtester's place: answers 200 to every POST and
/// counts them. The controller runs outside the cluster, so the hook is on loopback; the load
/// itself comes from the simulator (`sim.pennant.dev/loadtest-rps`).
async fn loadtester_hook() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, calls, server)
}

#[tokio::test]
async fn load_test_traffic_is_evidence_and_the_report_names_its_share() {
    const USERS_RPS: f64 = 100.0;
    const LOAD_RPS: f64 = 30.0;
    let (url, calls, server) = loadtester_hook().await;
    // The hook is on loopback (its host names no workload), so the policy names the load
    // tester; deriving it from `http://flagger-loadtester.<ns>/` is unit-tested
    // (`canary::judged`).
    let canary = format!(
        "{}    webhooks:\n    - name: load-test\n      type: rollout\n      url: {url}\n      timeout: 5s\n",
        judged_canary("errorTolerance: 2\nloadTestWorkloads: [flagger-loadtester]")
    );
    // users through the VirtualService; the load tester straight to podinfo-canary, on
    // istio_requests_total with source_workload="flagger-loadtester"
    let (ns, _ctl) = initialized_in(
        "e2e-judge-load",
        USERS_RPS as u32,
        &[("sim.pennant.dev/loadtest-rps", "30")],
        &podinfo(V1, 0.01, ""),
        "",
        &canary,
    )
    .await;
    set_image(&ns, V2, 0.01).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(5),
    )
    .await;
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the rollout hook ran"
    );
    let js = judge_status(&ns, "PASS").await;
    assert!(
        js.steps
            .iter()
            .all(|s| s.canary.load_test.is_some() && s.primary.load_test.is_none()),
        "counted for the canary each step: {js:#?}"
    );
    let judged = pennant::analysis::judge::judged_steps(&Default::default(), &js.steps);
    let (load, canary_n): (u64, u64) = judged.iter().fold((0, 0), |a, s| {
        (a.0 + s.canary.load_test.unwrap(), a.1 + s.canary.requests)
    });
    assert!(
        load > 0 && canary_n > load,
        "load tests {load} of {canary_n}"
    );
    // Each step's share is what the rates imply at its weight, LOAD / (LOAD + USERS·w/100). The
    // simulator's counts are deterministic; the slack is for the seconds around a weight
    // change (1 s simulator ticks, 1 s scrapes) that land in the neighbouring 10 s step: at
    // most ~3 s at the previous weight moves a step's share by < 9 pp.
    let implied = |w: i32| LOAD_RPS / (LOAD_RPS + USERS_RPS * w as f64 / 100.0);
    for s in judged.iter().filter(|s| s.canary.requests >= 100) {
        let got = s.canary.load_test.unwrap() as f64 / s.canary.requests as f64;
        assert!(
            (got - implied(s.weight)).abs() <= 0.15,
            "step at {}%: {got:.3} of the canary's requests from load tests, rates imply {:.3}",
            s.weight,
            implied(s.weight)
        );
    }
    // Over the judged steps, each step's length from its primary requests (USERS·(100 − w)/100
    // per second): the load tests' expected part of the canary's requests.
    let (mut exp_load, mut exp_all) = (0.0, 0.0);
    for s in judged {
        let secs = s.primary.requests as f64 / (USERS_RPS * (100 - s.weight) as f64 / 100.0);
        exp_load += LOAD_RPS * secs;
        exp_all += (LOAD_RPS + USERS_RPS * s.weight as f64 / 100.0) * secs;
    }
    let expected = 100.0 * exp_load / exp_all;
    let measured = 100.0 * load as f64 / canary_n as f64;
    assert!(
        (measured - expected).abs() <= 10.0,
        "{measured:.1}% of the canary's requests from load tests, rates imply {expected:.1}%"
    );
    // the PASS Event says how much of the evidence came from the load tester
    let suffix = "% of the canary's requests from load tests (flagger-loadtester)";
    let events = ns.event_messages_with("podinfo", suffix).await;
    let pass = events
        .iter()
        .find(|e| e.starts_with("Sequential judge PASS for podinfo.") && e.contains(suffix))
        .unwrap_or_else(|| panic!("{events:#?}"));
    let clause = pass
        .split(" | ")
        .find(|c| c.ends_with(suffix))
        .unwrap_or_else(|| panic!("{pass}"));
    let said: f64 = clause.trim_end_matches(suffix).parse().unwrap();
    let per_step: Vec<(i32, u64, u64)> = judged
        .iter()
        .map(|s| (s.weight, s.canary.load_test.unwrap(), s.canary.requests))
        .collect();
    println!(
        "load tests: report {said}%, status {measured:.1}%, rates {expected:.1}%; judged steps (weight, load, canary) {per_step:?}"
    );
    // the Event was written at the PASS step, the status may hold a step more
    assert!(
        (said - measured).abs() <= 5.0 && (said - expected).abs() <= 10.0,
        "the report says {said}%, the status {measured:.1}%, the rates imply {expected:.1}%: {pass}"
    );
    // The weight warning compares what the router sent: with the load tests in, the canary's
    // share would be 42 % at weight 25 and 62 % at 50 (> shareTolerance 10 pp off); without
    // them 25 % and 50 %, a few pp off at most around a weight change.
    let all = ns.events_with("podinfo", &["Sequential judge PASS"]).await;
    assert!(
        all.iter()
            .all(|(_, m)| !m.contains("measured canary traffic share")),
        "{all:#?}"
    );
    server.abort();
    ns.cleanup().await;
}
