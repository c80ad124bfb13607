//! Table and scenario tests for `decide`. A small `World` plays the controller: it answers the
//! probes `decide` asks for, applies the status it returns and moves the clock.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;
use proptest::prelude::{
    Just, ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as _;

use super::*;
use crate::api::{
    Canary, CanaryAnalysis, CanaryMetric, CanaryService, CanarySpec, CanaryStatus, CanaryWebhook,
    TargetReference, find_condition,
};

const REV1: &str = "sha256:1111111111111111";
const REV2: &str = "sha256:2222222222222222";
const REV3: &str = "sha256:3333333333333333";

fn analysis() -> CanaryAnalysis {
    CanaryAnalysis {
        interval: Some("30s".into()),
        threshold: Some(5),
        max_weight: Some(50),
        step_weight: Some(10),
        metrics: vec![CanaryMetric {
            name: "request-success-rate".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn canary(a: CanaryAnalysis) -> Canary {
    let mut c = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            service: CanaryService {
                port: 9898,
                ..Default::default()
            },
            progress_deadline_seconds: Some(60),
            analysis: Some(a),
            ..Default::default()
        },
    );
    c.metadata = ObjectMeta {
        name: Some("podinfo".into()),
        namespace: Some("test".into()),
        ..Default::default()
    };
    c
}

fn hook(name: &str, kind: &str) -> CanaryWebhook {
    CanaryWebhook {
        name: name.into(),
        type_: Some(kind.into()),
        url: format!("http://hooks/{name}"),
        ..Default::default()
    }
}

/// A scripted cluster around one Canary.
struct World {
    canary: Canary,
    now: Timestamp,
    revision: String,
    configs: BTreeMap<String, String>,
    target_ready: Readiness,
    primary: Option<PrimaryState>,
    /// Primary readiness after a promotion (applied when a Promote action runs).
    primary_after_promote: Readiness,
    metric: MetricOutcome,
    hooks: BTreeMap<HookKind, bool>,
    /// Every probe asked for, in order.
    asked: Vec<Probe>,
    actions: Vec<Action>,
    notices: Vec<Notice>,
    target_replicas: i32,
    /// The primary's `spec.replicas` after a promotion (raised by ScalePrimary).
    primary_replicas: i32,
    routes: Option<Weights>,
    last: Option<Decision>,
    target_matches_primary: Option<bool>,
    routes_pending: Option<String>,
    concurrency: Vec<super::super::concurrency::ConcurrencyLimit>,
    invalid: Vec<String>,
    /// The sequential judge's observation at a canary weight (opted-in Canaries only).
    judge: Option<Box<dyn Fn(i32) -> super::super::judged::JudgeObservation>>,
}

impl World {
    fn new(a: CanaryAnalysis) -> Self {
        Self {
            canary: canary(a),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            revision: REV1.into(),
            configs: BTreeMap::new(),
            target_ready: Readiness::Ready,
            primary: None,
            primary_after_promote: Readiness::Ready,
            metric: MetricOutcome::Pass(100.0),
            hooks: BTreeMap::new(),
            asked: vec![],
            actions: vec![],
            notices: vec![],
            target_replicas: 2,
            primary_replicas: 2,
            routes: None,
            last: None,
            target_matches_primary: None,
            routes_pending: None,
            concurrency: vec![],
            invalid: vec![],
            judge: None,
        }
    }

    /// A world whose canary is already Initialized at REV1.
    fn initialized(a: CanaryAnalysis) -> Self {
        let mut w = Self::new(a);
        w.primary = Some(PrimaryState {
            readiness: Readiness::Ready,
            revision_id: None,
            replicas: Some(2),
        });
        w.tick();
        assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
        // the metrics provider check of the initialisation is not part of the scenario
        w.asked.clear();
        w.notices.clear();
        w
    }

    fn status(&self) -> CanaryStatus {
        self.canary.status.clone().unwrap_or_default()
    }

    fn phase(&self) -> Option<CanaryPhase> {
        self.status().phase
    }

    fn weight(&self) -> i32 {
        self.status().canary_weight
    }

    fn observed(&self, probes: Probes) -> Observed {
        Observed {
            now: self.now,
            target: Some(TargetState {
                revision: self.revision.clone(),
                configs: self.configs.clone(),
                readiness: if self.target_replicas == 0 {
                    Readiness::NotReady("scaled to zero".into())
                } else {
                    self.target_ready.clone()
                },
                scale_up_replicas: 2,
                ready_replicas: self.target_replicas,
            }),
            primary: self.primary.clone(),
            probes,
            invalid: self.invalid.clone(),
            unsupported: vec![],
            target_matches_primary: self.target_matches_primary,
            routes_pending: self.routes_pending.clone(),
            concurrency: self.concurrency.clone(),
        }
    }

    /// One reconcile: answer probes until `decide` is done, then apply the decision.
    fn tick(&mut self) -> Decision {
        let mut probes = Probes::default();
        let mut asked_now: Vec<Probe> = vec![];
        let d = loop {
            match decide(&self.canary, &self.observed(probes.clone())) {
                Step::Need(p) => {
                    assert!(
                        !asked_now.contains(&p),
                        "decide asked for {p:?} twice in one reconcile"
                    );
                    asked_now.push(p);
                    self.asked.push(p);
                    match p {
                        Probe::Metrics => {
                            probes.metrics = Some(vec![MetricCheck {
                                name: "request-success-rate".into(),
                                outcome: self.metric.clone(),
                            }])
                        }
                        Probe::Judge => {
                            let j = self
                                .judge
                                .as_ref()
                                .expect("the sequential judge is not opted in here");
                            probes.judge = Some(j(self.weight()));
                        }
                        Probe::CountSignals => {
                            let j = self
                                .judge
                                .as_ref()
                                .expect("the sequential judge is not opted in here");
                            probes.count_signals = Some(j(self.weight()).count_signals);
                        }
                        Probe::Hooks(k) => {
                            let pass = *self.hooks.get(&k).unwrap_or(&true);
                            probes.hooks.insert(
                                k,
                                HookVerdict {
                                    pass,
                                    message: format!("{k:?}"),
                                },
                            );
                        }
                    }
                }
                Step::Done(d) => break d,
            }
        };
        for a in &d.actions {
            match a {
                Action::ScaleTarget(n) => self.target_replicas = *n,
                Action::ScalePrimary(n) => {
                    self.primary_replicas = self.primary_replicas.max(*n);
                    if let Some(p) = &mut self.primary {
                        p.replicas = Some(self.primary_replicas);
                        // the new pods start unready
                        p.readiness = Readiness::NotReady("scaling up".into());
                    }
                }
                Action::EnsureRoutes(w) => self.routes = Some(*w),
                Action::Promote { revision_id } => {
                    self.primary = Some(PrimaryState {
                        readiness: self.primary_after_promote.clone(),
                        revision_id: Some(revision_id.clone()),
                        replicas: Some(self.primary_replicas),
                    })
                }
                _ => {}
            }
        }
        self.actions.extend(d.actions.clone());
        self.notices.extend(d.notices.clone());
        self.canary.status = Some(d.status.clone());
        self.last = Some(d.clone());
        d
    }

    /// Start a release of REV2 and take its first step (the canary is ready at once).
    fn release_to_first_step(&mut self) {
        self.revision = REV2.into();
        self.tick();
        self.advance(1);
        self.tick();
    }

    fn advance(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_secs(secs))
            .unwrap();
    }

    /// Tick, then advance by the requested requeue (or `interval`) — the controller's loop.
    fn step(&mut self) -> Decision {
        let d = self.tick();
        let wait = d.requeue_after.unwrap_or(Duration::from_secs(30));
        self.advance(wait.as_secs().max(1) as i64);
        d
    }

    fn run_until(&mut self, max_ticks: usize, done: impl Fn(&World) -> bool) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!(
            "not done after {max_ticks} ticks: phase {:?} weight {} notices {:#?}",
            self.phase(),
            self.weight(),
            self.notices
        );
    }

    fn messages(&self) -> Vec<String> {
        self.notices.iter().map(|n| n.message.clone()).collect()
    }

    fn has_notice(&self, needle: &str) -> bool {
        self.notices.iter().any(|n| n.message.contains(needle))
    }

    fn weights_seen(&self) -> Vec<i32> {
        let mut out: Vec<i32> = vec![];
        for a in &self.actions {
            if let Action::EnsureRoutes(w) = a
                && out.last() != Some(&w.canary)
            {
                out.push(w.canary);
            }
        }
        out
    }
}

fn terminal(w: &World) -> bool {
    matches!(
        w.phase(),
        Some(CanaryPhase::Succeeded | CanaryPhase::Failed)
    )
}

// ---------------------------------------------------------------------------------------------
// Initialisation

#[test]
fn init_waits_for_primary_before_touching_traffic() {
    let mut w = World::new(analysis());
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Initializing));
    assert_eq!(
        d.actions,
        vec![Action::EnsurePrimary, Action::EnsureServices]
    );
    assert!(w.routes.is_none(), "no routing before the primary is ready");
    assert_eq!(w.target_replicas, 2, "target keeps serving");
    assert!(d.requeue_after.is_some());

    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    });
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    // apex routes to the primary before the target is scaled down: zero-downtime takeover
    let routes = d
        .actions
        .iter()
        .position(|a| matches!(a, Action::EnsureRoutes(_)))
        .unwrap();
    let scale = d
        .actions
        .iter()
        .position(|a| *a == Action::ScaleTarget(0))
        .unwrap();
    assert!(routes < scale);
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 100,
            canary: 0,
            mirror: false
        })
    );
    let st = w.status();
    assert_eq!(st.last_applied_spec.as_deref(), Some(REV1));
    assert_eq!(st.last_promoted_spec.as_deref(), Some(REV1));
    let promoted = find_condition(&st.conditions, "Promoted").unwrap();
    assert_eq!(promoted.status, "True");
    assert!(w.has_notice("Initialization done! podinfo.test"));
}

#[test]
fn primary_never_ready_at_init_stalls_without_moving_traffic() {
    let mut w = World::new(analysis());
    w.primary = Some(PrimaryState {
        readiness: Readiness::NotReady("0 of 2 updated replicas are available".into()),
        revision_id: None,
        replicas: Some(2),
    });
    for _ in 0..5 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Initializing));
    assert!(w.routes.is_none());
    assert_eq!(w.target_replicas, 2);
    let st = w.status();
    let stalled = find_condition(&st.conditions, "Stalled").expect("stalled");
    assert_eq!(stalled.reason.as_deref(), Some("PrimaryNotReady"));
    let warnings = w
        .notices
        .iter()
        .filter(|n| n.severity == Severity::Warn)
        .count();
    assert_eq!(
        warnings, 2,
        "warned when the wait starts and at the deadline, not every reconcile: {:#?}",
        w.notices
    );
}

#[test]
fn steady_state_is_idempotent_and_quiet() {
    let mut w = World::initialized(analysis());
    let before = w.status();
    let d = w.tick();
    assert_eq!(d.status, before, "no status change in steady state");
    assert!(d.notices.is_empty());
    assert_eq!(d.requeue_after, None);
    assert!(w.asked.is_empty(), "no webhooks or metrics in steady state");
}

#[test]
fn controller_restart_with_same_revision_starts_no_run() {
    // Case 2: a new pennant build reads the same revision hash → nothing happens.
    let mut w = World::initialized(analysis());
    for _ in 0..3 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    assert!(!w.has_notice("New revision"));
}

#[test]
fn status_written_by_flagger_is_adopted_without_a_run() {
    // Case 2, migration: Flagger's FNV hash in status must not look like a new revision.
    let mut w = World::initialized(analysis());
    let mut st = w.status();
    st.phase = Some(CanaryPhase::Succeeded);
    st.last_applied_spec = Some("5d8f7b9c4".into());
    st.last_promoted_spec = Some("5d8f7b9c4".into());
    w.canary.status = Some(st);
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.status().last_applied_spec.as_deref(), Some(REV1));
    assert!(!w.has_notice("New revision"));
    // and a real change afterwards still starts a run
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
}

#[test]
fn steps_keep_to_the_interval_grid_when_reconciles_run_late() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    let step_time = |w: &World| w.status().last_step_time.clone().unwrap().0;
    let first = step_time(&w);
    assert_eq!(w.weight(), 10);

    // the reconcile for the next step runs 400 ms after it was due: the step is recorded at
    // the time it was due, and the one after is due an interval after that, not after now
    w.now = first
        .checked_add(SignedDuration::from_millis(30_400))
        .unwrap();
    let d = w.tick();
    assert_eq!(w.weight(), 20, "the step was taken");
    let second = step_time(&w);
    assert_eq!(
        second,
        first.checked_add(SignedDuration::from_secs(30)).unwrap()
    );
    assert_eq!(d.requeue_after, Some(Duration::from_millis(29_600)));

    // three late reconciles in a row do not add up: the fourth step is still on the grid
    for k in 2..4 {
        w.now = first
            .checked_add(SignedDuration::from_millis(30_000 * k + 900))
            .unwrap();
        w.tick();
    }
    assert_eq!(w.weight(), 40);
    assert_eq!(
        step_time(&w),
        first.checked_add(SignedDuration::from_secs(90)).unwrap()
    );

    // away for more than an interval (a restart): the schedule starts again from now, rounded
    // up to the second (never early)
    let away = step_time(&w)
        .checked_add(SignedDuration::from_millis(95_300))
        .unwrap();
    w.now = away;
    w.tick();
    assert_eq!(w.weight(), 50);
    assert_eq!(
        step_time(&w),
        Timestamp::from_second(away.as_second() + 1).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// A good release

#[test]
fn good_release_steps_to_max_weight_and_promotes() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert!(d.actions.contains(&Action::ScaleTarget(2)));
    assert!(w.has_notice("New revision detected! Scaling up podinfo.test"));

    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.weights_seen(), vec![0, 10, 20, 30, 40, 50, 0]);
    assert_eq!(
        w.target_replicas, 0,
        "canary scaled to zero after promotion"
    );
    let st = w.status();
    assert_eq!(st.last_promoted_spec.as_deref(), Some(REV2));
    assert_eq!(st.canary_weight, 0);
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 100,
            canary: 0,
            mirror: false
        })
    );
    assert!(w.has_notice("Starting canary analysis for podinfo.test"));
    assert!(w.has_notice("Promotion completed! Scaling down podinfo.test"));
    assert!(w.actions.contains(&Action::RunHooks(
        HookKind::PostRollout,
        CanaryPhase::Succeeded
    )));
    // the primary was promoted to exactly this revision
    let promote = w.actions.iter().find_map(|a| match a {
        Action::Promote { revision_id } => Some(revision_id.clone()),
        _ => None,
    });
    assert_eq!(promote, Some(revision_id(REV2, &BTreeMap::new())));
}

#[test]
fn first_step_is_immediate_then_steps_wait_the_interval() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick(); // Progressing, scaled up
    w.advance(1);
    w.tick(); // canary ready → start + first step at once
    assert_eq!(w.weight(), 10);
    // 29 s later: not due
    w.advance(29);
    let d = w.tick();
    assert_eq!(w.weight(), 10);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
    w.advance(1);
    w.tick();
    assert_eq!(w.weight(), 20);
}

#[test]
fn weight_never_overshoots_max_weight() {
    // Flagger goes 20, 40, 60 with maxWeight 50; pennant stops at 50.
    let a = CanaryAnalysis {
        step_weight: Some(20),
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.weights_seen(), vec![0, 20, 40, 50, 0]);
}

/// A sequentially judged Canary at 2 rps (120 requests per interval, 1 % errors in both
/// versions, no latency signal) under `policy`; the judge's first step is a warm-up.
fn judged_world(policy: crate::analysis::judge::Policy) -> World {
    use super::super::judged::{JudgeObservation, MODE_ANNOTATION, StepSample, VersionSample};
    let mut w = World::initialized(analysis());
    w.canary.metadata.annotations = Some(BTreeMap::from([(
        MODE_ANNOTATION.to_string(),
        "sequential".to_string(),
    )]));
    w.judge = Some(Box::new(move |weight| {
        let nc = 120 * weight as u64 / 100;
        let v = |n: u64| VersionSample {
            requests: n,
            errors: n / 100,
            ..Default::default()
        };
        JudgeObservation {
            policy: Ok(policy.clone()),
            step: Ok(StepSample {
                canary: v(nc),
                primary: v(120 - nc),
            }),
            from: 0,
            lookback: Some(Ok(v(7200))),
            count_signals: Ok(Vec::new()),
            load_tests: Default::default(),
        }
    }));
    w
}

#[test]
fn adaptive_weights_jump_ahead_of_the_schedule_within_the_harm_budget() {
    use crate::analysis::judge::{Policy, Weights};
    let quiet = Policy {
        latency: false,
        ..Policy::default()
    };
    let adaptive = Policy {
        weights: Weights::Adaptive,
        harm_budget: 20.0,
        ..quiet.clone()
    };
    let mut seen = Vec::new();
    for policy in [quiet, adaptive] {
        let mut w = judged_world(policy);
        w.release_to_first_step();
        assert_eq!(w.weight(), 10);
        // steps at 10 % (warm-up, not judged: no evidence, the schedule's 20 %), then 20 %:
        // 24 canary requests without an error bound its error rate by ~27 % (anytime, 95 %),
        // so at 50 % (60 requests per interval) the worst case is ~16 ≤ 20 extra failures
        for _ in 0..2 {
            w.advance(30);
            w.tick();
        }
        seen.push(w.weight());
        if w.weight() == 50 {
            assert!(w.has_notice("adaptive: worst case"), "{:#?}", w.messages());
        }
    }
    // the fixed schedule is at 30 %, the adaptive one at maxWeight
    assert_eq!(seen, [30, 50]);
}

#[test]
fn an_invalid_count_declaration_halts_the_judge_before_any_traffic_moves() {
    use crate::analysis::judge::{CountSignal, Policy};
    let refused = "MetricTemplate test/jobs (metric jobs): annotation judge.pennant.dev/bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): rate(x[5m])";
    for (declared, want_weights) in [
        (Err(refused.to_string()), vec![0]),
        (
            Ok(vec![CountSignal {
                name: "jobs".into(),
                tolerance_pp: None,
            }]),
            vec![0, 10],
        ),
    ] {
        let mut w = judged_world(Policy::default());
        let inner = w.judge.take().unwrap();
        let d = declared.clone();
        w.judge = Some(Box::new(move |weight| {
            let mut o = inner(weight);
            o.count_signals = d.clone();
            o
        }));
        let jobs: CanaryMetric = serde_json::from_value(serde_json::json!(
            {"name": "jobs", "templateRef": {"name": "jobs"}, "interval": "30s"}
        ))
        .unwrap();
        w.canary.spec.analysis.as_mut().unwrap().metrics.push(jobs);
        w.revision = REV2.into();
        if declared.is_ok() {
            w.release_to_first_step();
            assert!(w.asked.contains(&Probe::CountSignals));
            assert_eq!(w.weights_seen(), want_weights);
            let st = w.status();
            assert!(find_condition(&st.conditions, types::JUDGE_READY).is_none());
            continue;
        }
        w.run_until(40, terminal);
        // threshold 5 failed checks at weight 0, then the rollback: traffic never moved
        assert_eq!(w.phase(), Some(CanaryPhase::Failed));
        assert_eq!(w.weights_seen(), want_weights, "{:#?}", w.messages());
        assert!(!w.asked.contains(&Probe::Judge));
        let halt = format!("Halt podinfo.test advancement sequential judge: {refused}");
        assert!(w.has_notice(&halt), "{:#?}", w.messages());
        assert!(!w.has_notice("Advance"), "{:#?}", w.messages());
        let st = w.status();
        let ready = find_condition(&st.conditions, types::JUDGE_READY).expect("JudgeReady");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("CannotJudge"))
        );
        let message = ready.message.clone().unwrap_or_default();
        assert!(message.contains(refused), "{message}");
    }
}

#[test]
fn a_suspicious_adaptive_canary_is_pulled_back() {
    use super::super::judged::{JudgeObservation, StepSample, VersionSample};
    use crate::analysis::judge::{Policy, Weights};
    let policy = Policy {
        latency: false,
        weights: Weights::Adaptive,
        harm_budget: 5.0,
        ..Policy::default()
    };
    let mut w = judged_world(policy.clone());
    // 20 rps, the canary fails 5 % of its requests against the primary's 1 %
    w.judge = Some(Box::new(move |weight| {
        let nc = 1200 * weight as u64 / 100;
        let v = |n: u64, pct: u64| VersionSample {
            requests: n,
            errors: n * pct / 100,
            ..Default::default()
        };
        JudgeObservation {
            policy: Ok(policy.clone()),
            step: Ok(StepSample {
                canary: v(nc, 5),
                primary: v(1200 - nc, 1),
            }),
            from: 0,
            lookback: Some(Ok(v(72000, 1))),
            count_signals: Ok(Vec::new()),
            load_tests: Default::default(),
        }
    }));
    w.release_to_first_step();
    let mut weights = vec![w.weight()];
    for _ in 0..6 {
        w.advance(30);
        w.tick();
        weights.push(w.weight());
        if w.phase() == Some(CanaryPhase::Failed) {
            break;
        }
    }
    // never more traffic than the first step once the evidence leans to FAIL, then rolled
    // back by the judge
    assert!(weights.iter().all(|x| *x <= 20), "{weights:?}");
    assert!(w.has_notice("Pull back"), "{weights:?} {:#?}", w.messages());
    assert!(w.has_notice("sequential judge FAIL"), "{:#?}", w.messages());
}

// ---------------------------------------------------------------------------------------------
// Low traffic (issue 19): the 2 rps releases of `tests/e2e_judge.rs` (`two_rps_*`), on the
// machine and judge the controller runs, with the counts the e2e traffic simulator serves.
// They fix the e2e tests' parameters and their margins, in milliseconds instead of minutes.

/// One version's counters in the e2e traffic simulator (`e2e/simulator/simulator.py`): fluid
/// counts (rps × seconds, errors × the error rate) accumulated as floats and exposed floored,
/// so a step's count is the difference of two floors: deterministic, within one request.
#[derive(Clone, Copy, Default)]
struct FluidVersion {
    ok: f64,
    err: f64,
}

impl FluidVersion {
    fn floor(x: f64) -> u64 {
        (x + 1e-6).floor() as u64
    }

    /// The counters an Istio destination reporter exposes: (requests, errors, `le` buckets at
    /// `ISTIO_EDGES_MS`, `+Inf`), floored. podinfo's simulated latency of 45 ms puts its p99
    /// (calibrated at 1.1 × 45 = 49.5 ms) in the bucket (25, 50]: half the requests are slower
    /// than 25 ms and none slower than 50 ms.
    fn exposed(&self) -> (u64, u64, Vec<(f64, u64)>, u64) {
        let n = self.ok + self.err;
        let le = |edge: f64| match edge {
            e if e < 25.0 => 0.0,
            e if e < 50.0 => 0.5,
            _ => 1.0,
        };
        let buckets = crate::analysis::judge::ISTIO_EDGES_MS
            .iter()
            .map(|&e| (e, Self::floor(n * le(e))))
            .collect();
        (
            Self::floor(self.ok) + Self::floor(self.err),
            Self::floor(self.err),
            buckets,
            Self::floor(n),
        )
    }

    /// The sample of the step from `before` to `self`, as `analysis::counts` reads it.
    fn since(&self, before: &FluidVersion) -> super::super::judged::VersionSample {
        let (n1, e1, b1, t1) = self.exposed();
        let (n0, e0, b0, t0) = before.exposed();
        let mut run = 0;
        let buckets = b1
            .iter()
            .zip(&b0)
            .map(|(&(le, c1), &(_, c0))| {
                run = u64::max(run, c1 - c0);
                (le, run)
            })
            .collect();
        super::super::judged::VersionSample {
            requests: n1 - n0,
            errors: e1 - e0,
            buckets,
            timed: t1 - t0,
            ..Default::default()
        }
    }

    fn add(&mut self, requests: f64, error_rate: f64) {
        self.ok += requests * (1.0 - error_rate);
        self.err += requests * error_rate;
    }
}

/// A podinfo behind Istio at 2 rps in the e2e simulator: primary and canary counters, the
/// canary's error rate after the release, and the weight the simulator applies, `lag`
/// seconds after the controller wrote it.
struct Fluid {
    canary: FluidVersion,
    primary: FluidVersion,
    canary_errors: f64,
    primary_errors: f64,
    applied: i32,
    lag: f64,
}

const LOW_RPS: f64 = 2.0;
const LOW_INTERVAL: i64 = 10;

impl Fluid {
    /// One interval at canary `weight` (the previous weight for the first `lag` seconds when
    /// it changed): the step's sample.
    fn step(&mut self, weight: i32) -> super::super::judged::StepSample {
        let (c0, p0) = (self.canary, self.primary);
        let late = if weight == self.applied {
            0.0
        } else {
            self.lag
        };
        for (w, secs) in [(self.applied, late), (weight, LOW_INTERVAL as f64 - late)] {
            let share = w as f64 / 100.0;
            self.canary.add(LOW_RPS * secs * share, self.canary_errors);
            self.primary
                .add(LOW_RPS * secs * (1.0 - share), self.primary_errors);
        }
        self.applied = weight;
        super::super::judged::StepSample {
            canary: self.canary.since(&c0),
            primary: self.primary.since(&p0),
        }
    }
}

/// What a 2 rps release came to.
#[derive(Debug)]
struct LowTrafficRun {
    signals: Vec<String>,
    phase: Option<CanaryPhase>,
    verdict: Option<String>,
    /// Recorded judge steps when the run ended (or first held).
    steps: usize,
    weights: Vec<i32>,
    /// Failed requests the canary served, exactly (the simulator's float count).
    failed: f64,
    served: f64,
}

/// The e2e Canary's analysis (`tests/e2e_judge.rs` `low_traffic_canary`): 10 s interval, 5 %
/// steps up to 50 %, the builtin metrics' thresholds kept as guardrails (2 more FAIL tests
/// sharing `alphaFail`).
fn low_traffic_analysis() -> CanaryAnalysis {
    serde_json::from_value(serde_json::json!({
        "interval": "10s",
        "threshold": 5,
        "maxWeight": 50,
        "stepWeight": 5,
        "metrics": [
            {"name": "request-success-rate", "thresholdRange": {"min": 90}, "interval": "15s"},
            {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "15s"},
        ]
    }))
    .unwrap()
}

/// A World releasing podinfo at 2 rps, 0 % errors before, `canary_errors` after, under the
/// policy document `policy` (as the e2e ConfigMap holds it), the simulator applying each
/// weight `lag` seconds late; the release has taken its first step (5 %). The simulator's
/// counters are shared with the judge probe.
fn low_traffic_world(
    policy: &str,
    canary_errors: f64,
    lag: f64,
) -> (World, std::rc::Rc<std::cell::RefCell<Fluid>>) {
    use super::super::judged::{JudgeObservation, MODE_ANNOTATION, parse_policy};
    use std::cell::RefCell;
    use std::rc::Rc;
    let policy = parse_policy(policy).unwrap();
    let mut w = World::initialized(low_traffic_analysis());
    w.canary.metadata.annotations = Some(BTreeMap::from([(
        MODE_ANNOTATION.to_string(),
        "sequential".to_string(),
    )]));
    // the primary's lookback: the minute it served alone since the Canary was initialised
    let mut before = FluidVersion::default();
    before.add(60.0 * LOW_RPS, 0.0);
    let lookback = before.since(&FluidVersion::default());
    let fluid = Rc::new(RefCell::new(Fluid {
        canary: FluidVersion::default(),
        primary: before,
        canary_errors,
        primary_errors: 0.0,
        applied: 0,
        lag,
    }));
    let f = fluid.clone();
    w.judge = Some(Box::new(move |weight| JudgeObservation {
        policy: Ok(policy.clone()),
        step: Ok(f.borrow_mut().step(weight)),
        from: 0,
        lookback: Some(Ok(lookback.clone())),
        count_signals: Ok(Vec::new()),
        load_tests: Default::default(),
    }));
    w.release_to_first_step();
    assert_eq!(w.weight(), 5);
    (w, fluid)
}

/// [`low_traffic_world`], ticked every interval until the release ends, or is held
/// (`WaitingPromotion`) when `stop_when_held`.
fn low_traffic_release(
    policy: &str,
    canary_errors: f64,
    lag: f64,
    stop_when_held: bool,
) -> LowTrafficRun {
    let (mut w, fluid) = low_traffic_world(policy, canary_errors, lag);
    for _ in 0..200 {
        w.advance(LOW_INTERVAL);
        w.tick();
        let held = stop_when_held && w.phase() == Some(CanaryPhase::WaitingPromotion);
        if terminal(&w) || held {
            break;
        }
    }
    let st = w.status();
    let js = st.judge.clone().unwrap_or_default();
    let c = fluid.borrow().canary;
    LowTrafficRun {
        signals: js
            .plan
            .iter()
            .flat_map(|p| p.signals.iter().map(|s| s.name.clone()))
            .collect(),
        phase: st.phase,
        verdict: js.verdict,
        steps: js.steps.len(),
        weights: w.weights_seen(),
        failed: c.err,
        served: c.ok + c.err,
    }
}

/// Delays (s) between the controller writing a weight and the simulator applying it (its
/// 1 s tick), which also shift where the floors fall; the e2e namespaces each get one.
const LAGS: [f64; 5] = [0.0, 0.5, 1.0, 1.5, 2.0];

/// The good release of the e2e test: podinfo at 0 % errors before and after, latency
/// unchanged. Why these parameters (a quiet service's owner could set them):
/// - `errorTolerance: 5`: with no error on either side the comparative test has nothing to
///   condition on and the errors signal PASSes on the canary's own count alone (100 canary
///   requests without an error reject "5 % or worse" at α_P), so when it PASSes depends only
///   on how many requests the canary got: deterministic;
/// - `latencyTolerance: 50`: Istio's buckets around 45 ms are 10, 25 and 50 ms, so a 10 %
///   shift is a sliver of the (10, 25] bucket and would need thousands of requests; at 50 %
///   the latency>25ms signal PASSes after ~60 canary requests, before the errors signal;
/// - `maxSteps: 13`: the fixed ramp (5 % a step) reaches 50 % at step 10 with 54 judged canary
///   requests and would PASS at step 17 (its e-processes have half of `alphaPass`; the other
///   half is the final look's, and at step 13 that sees no error on either side in too few
///   requests); the adaptive weights go from 5 % to 50 % after the first step (2 rps: 10
///   requests per interval at 50 %, worst case within the default budget of 20) and PASS at
///   step 11 or 12: a step or more on either side.
#[test]
fn judged_two_rps_adaptive_weights_promote_where_the_fixed_schedule_holds() {
    const POLICY: &str =
        "errorTolerance: 5\nlatencyTolerance: 50\nmaxSteps: 13\nonInconclusive: hold\n";
    for lag in LAGS {
        let fixed = low_traffic_release(POLICY, 0.0, lag, true);
        let adaptive = low_traffic_release(&format!("{POLICY}weights: adaptive\n"), 0.0, lag, true);
        eprintln!("lag {lag}s\nfixed: {fixed:?}\nadaptive: {adaptive:?}");
        // errors and one latency edge, both of which must PASS
        assert_eq!(adaptive.signals, ["errors", "latency>25ms"]);
        assert_eq!(
            (fixed.phase, fixed.verdict.as_deref(), fixed.steps),
            (Some(CanaryPhase::WaitingPromotion), Some("CONTINUE"), 13),
            "{fixed:?}"
        );
        assert_eq!(*fixed.weights.last().unwrap(), 50, "{fixed:?}");
        assert_eq!(adaptive.phase, Some(CanaryPhase::Succeeded), "{adaptive:?}");
        assert_eq!(adaptive.verdict.as_deref(), Some("PASS"));
        assert!(adaptive.steps <= 12, "{adaptive:?}");
        assert_eq!(adaptive.weights[..3], [0, 5, 50], "{adaptive:?}");
        // held, the fixed schedule keeps collecting and PASSes 4 steps after maxSteps
        let later = low_traffic_release(POLICY, 0.0, lag, false);
        assert_eq!(later.phase, Some(CanaryPhase::Succeeded), "{later:?}");
        assert!(later.steps >= 16, "{later:?}");
    }
}

/// The final look (issue 19) in the controller: a good canary at 1 % errors beside a primary
/// at 1 %, 200 requests each per step, errors only, 10 % steps to 50 %. Its PASS e-process
/// does not reach its level within `maxSteps` 30; the final look at the 30th recorded step
/// (29 judged) passes, and the release is promoted there with the look in the Event. With
/// `finalLookShare: 0` the same run is held at `maxSteps`.
#[test]
fn judged_final_look_promotes_at_max_steps_what_the_e_processes_hold() {
    use super::super::judged::{JudgeObservation, MODE_ANNOTATION, StepSample, VersionSample};
    let sample = |n, e| VersionSample {
        requests: n,
        errors: e,
        ..Default::default()
    };
    for (share, want) in [
        ("0.5", CanaryPhase::Succeeded),
        ("0", CanaryPhase::WaitingPromotion),
    ] {
        let policy = super::super::judged::parse_policy(&format!(
            "latency: false\nmaxSteps: 30\nonInconclusive: hold\nfinalLookShare: {share}\n"
        ))
        .unwrap();
        let mut w = World::initialized(
            serde_json::from_value(serde_json::json!({
                "interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
            }))
            .unwrap(),
        );
        w.canary.metadata.annotations = Some(BTreeMap::from([(
            MODE_ANNOTATION.to_string(),
            "sequential".to_string(),
        )]));
        w.judge = Some(Box::new(move |_| JudgeObservation {
            policy: Ok(policy.clone()),
            step: Ok(StepSample {
                canary: sample(200, 2),
                primary: sample(200, 2),
            }),
            from: 0,
            lookback: Some(Ok(sample(6000, 60))),
            count_signals: Ok(Vec::new()),
            load_tests: Default::default(),
        }));
        w.release_to_first_step();
        w.run_until(200, |w| {
            terminal(w) || w.phase() == Some(CanaryPhase::WaitingPromotion)
        });
        let js = w.status().judge.unwrap_or_default();
        assert_eq!(w.phase(), Some(want), "share {share}: {:#?}", w.messages());
        assert_eq!(js.steps.len(), 30, "share {share}");
        let looked = w.has_notice("final look at 29 steps p 1.85% ≤ 2.5% needed → pass");
        assert_eq!(looked, share == "0.5", "share {share}: {:#?}", w.messages());
    }
}

/// The regression of the e2e test: podinfo at 0 % errors, the new version failing 10 % of its
/// requests. Why +10 pp and not +2 pp: at 2 rps a +2 pp regression is ~1 failed request in
/// 50, and telling 2 % from the fail margin needs a dozen of them whatever the schedule
/// ([`judged_two_rps_two_point_regression_takes_minutes_on_any_schedule`]), so no 4-minute
/// test can show it. `errorTolerance: 3` (fail margin 1.5 pp), `latencyTolerance: 50` as for
/// the good release, and a small `harmBudget`: at most 2 extra failed (or slow) requests per
/// interval in the worst case. The fixed ramp climbs 5 % a step to 50 % while the first
/// failures come in; the adaptive weights follow it while the canary looks clean (the floor),
/// and once the FAIL evidence is halfway there pull the canary back to the weight whose worst
/// case fits the budget (15–20 %), where each of its failures weighs more against the
/// primary's clean majority.
#[test]
fn judged_two_rps_adaptive_weights_roll_back_a_regression_with_fewer_failed_requests() {
    const POLICY: &str = "errorTolerance: 3\nlatencyTolerance: 50\nharmBudget: 2\n";
    let (mut fixed_least, mut adaptive_most) = (f64::INFINITY, 0.0f64);
    for lag in LAGS {
        let fixed = low_traffic_release(POLICY, 0.10, lag, false);
        let adaptive =
            low_traffic_release(&format!("{POLICY}weights: adaptive\n"), 0.10, lag, false);
        eprintln!("lag {lag}s\nfixed: {fixed:?}\nadaptive: {adaptive:?}");
        for r in [&fixed, &adaptive] {
            assert_eq!(r.phase, Some(CanaryPhase::Failed), "{r:?}");
            assert_eq!(r.verdict.as_deref(), Some("FAIL"), "{r:?}");
            // within the e2e test's 4 minutes
            assert!(r.steps <= 20, "{r:?}");
            // every request the canary served failed at its 10 %
            assert!((r.failed / r.served - 0.10).abs() < 1e-9, "{r:?}");
        }
        let pulled_back = adaptive.weights.windows(2).any(|w| w[1] < w[0] && w[1] > 0);
        assert!(pulled_back, "{adaptive:?}");
        fixed_least = fixed_least.min(fixed.failed);
        adaptive_most = adaptive_most.max(adaptive.failed);
    }
    // the canary serves 10 % failures whatever its weight: fewer failures is fewer requests.
    // Whatever the lag of either run, the adaptive weights serve 3 fewer failures or more
    assert!(
        adaptive_most + 3.0 <= fixed_least,
        "adaptive up to {adaptive_most:.1}, fixed from {fixed_least:.1}"
    );
}

/// A +2 pp regression (0 % → 2 %) at 2 rps with a 3 pp tolerance (fail margin 1.5 pp): the
/// judge rolls it back, but only after more than 60 intervals (10 minutes at 10 s) with the
/// fixed ramp or the adaptive weights alike — the canary fails one request in 50, and each
/// failure among 10 canary and 10 primary requests is weak evidence. Why the e2e regression
/// is +10 pp. The adaptive weights still serve fewer failures than the ramp.
#[test]
fn judged_two_rps_two_point_regression_takes_minutes_on_any_schedule() {
    const POLICY: &str = "errorTolerance: 3\nlatencyTolerance: 50\nharmBudget: 1\nmaxSteps: 200\n";
    let fixed = low_traffic_release(POLICY, 0.02, 0.0, false);
    let adaptive = low_traffic_release(&format!("{POLICY}weights: adaptive\n"), 0.02, 0.0, false);
    eprintln!("fixed: {fixed:?}\nadaptive: {adaptive:?}");
    for r in [&fixed, &adaptive] {
        assert_eq!(r.phase, Some(CanaryPhase::Failed), "{r:?}");
        assert!(r.steps > 60, "{r:?}");
    }
    assert!(adaptive.failed < fixed.failed, "{adaptive:?} {fixed:?}");
}

/// Held at maxWeight past `maxSteps` (`onInconclusive: hold`), an adaptive canary that turns
/// suspicious is pulled back within the harm budget, as it would be before `maxSteps`: the
/// hold is no licence to serve past the budget until a verdict or a gate. 2 rps, 0 % → 5 %
/// errors: the ramp reaches 50 % at step 10 with the canary still clean-looking, the run is
/// held at step 12, and the FAIL evidence reaches half its level some steps later.
#[test]
fn judged_adaptive_canary_held_past_max_steps_is_still_pulled_back_when_suspicious() {
    let policy = "errorTolerance: 3\nlatencyTolerance: 50\nharmBudget: 2\nmaxSteps: 12\nonInconclusive: hold\nweights: adaptive\n";
    let (mut w, _) = low_traffic_world(policy, 0.05, 0.0);
    let mut held_at = None;
    let mut after_held = Vec::new();
    for _ in 0..60 {
        w.advance(LOW_INTERVAL);
        w.tick();
        if held_at.is_none() && w.phase() == Some(CanaryPhase::WaitingPromotion) {
            held_at = Some(w.status().judge.unwrap().steps.len());
            assert_eq!(w.weight(), 50);
        } else if held_at.is_some() {
            after_held.push(w.weight());
        }
        if terminal(&w) {
            break;
        }
    }
    assert_eq!(held_at, Some(12), "{:#?}", w.messages());
    assert_eq!(w.phase(), Some(CanaryPhase::Failed), "{:#?}", w.messages());
    assert!(
        after_held.iter().any(|x| *x > 0 && *x < 50),
        "never pulled back while held: {after_held:?}"
    );
    assert!(w.has_notice("Pull back"), "{:#?}", w.messages());
}

#[test]
fn step_weights_ladder() {
    let a = CanaryAnalysis {
        step_weight: None,
        step_weights: vec![1, 5, 25, 80],
        max_weight: None,
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.weights_seen(), vec![0, 1, 5, 25, 80, 0]);
}

#[test]
fn promotion_waits_for_primary_to_run_the_promoted_revision() {
    let mut w = World::initialized(analysis());
    w.primary_after_promote =
        Readiness::NotReady("1 out of 2 new replicas have been updated".into());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    for _ in 0..3 {
        w.tick();
        w.advance(5);
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Promoting));
    assert_eq!(
        w.weight(),
        50,
        "canary keeps its traffic while the primary rolls"
    );
    assert_eq!(w.target_replicas, 2);
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Finalising));
    assert_eq!(w.routes.unwrap().primary, 100);
    assert_eq!(w.target_replicas, 2, "canary drains before scale-down");
    w.run_until(5, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.target_replicas, 0);
}

#[test]
fn stale_cached_primary_is_not_taken_as_promoted() {
    // The reflector may still show the old primary (Ready, old flagger-id) right after Promote.
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: Some("old".into()),
        replicas: Some(2),
    });
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Promoting));
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. })),
        "re-applies the copy"
    );
}

#[test]
fn step_weight_promotion_shifts_back_gradually() {
    let a = CanaryAnalysis {
        step_weight_promotion: Some(20),
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.run_until(60, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.weights_seen(), vec![0, 10, 20, 30, 40, 50, 30, 10, 0]);
}

#[test]
fn skip_analysis_promotes_without_checks_once_canary_is_ready() {
    let mut w = World::initialized(analysis());
    w.canary.spec.skip_analysis = true;
    w.revision = REV2.into();
    w.target_ready = Readiness::NotReady("0 of 2 updated replicas are available".into());
    w.tick();
    w.advance(1);
    w.tick();
    assert_eq!(
        w.phase(),
        Some(CanaryPhase::Progressing),
        "waits for the canary"
    );
    w.target_ready = Readiness::Ready;
    w.run_until(10, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert!(w.asked.is_empty(), "no metrics or hooks: {:?}", w.asked);
    assert_eq!(w.weights_seen(), vec![0]);
}

#[test]
fn blue_green_iterations_then_switch_then_promote() {
    let a = CanaryAnalysis {
        step_weight: None,
        max_weight: None,
        iterations: Some(3),
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.weights_seen(), vec![0, 100, 0]);
    assert!(w.has_notice("Advance podinfo.test canary iteration 3/3"));
}

#[test]
fn ab_testing_routes_matching_requests_to_the_canary_for_each_iteration_then_promotes() {
    let a = CanaryAnalysis {
        step_weight: None,
        max_weight: None,
        iterations: Some(3),
        r#match: vec![serde_json::json!({"headers": {"x-canary": {"exact": "insider"}}})],
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    // 0 at the start tick, the matching rule on the canary for the iterations and promotion,
    // back to the primary once promoted; never a "route all traffic" step as in blue/green.
    assert_eq!(w.weights_seen(), vec![0, 100, 0]);
    assert!(w.has_notice("Advance podinfo.test canary iteration 3/3"));
    assert!(!w.has_notice("Routing all traffic to canary"));
    let metric_probes = w.asked.iter().filter(|p| **p == Probe::Metrics).count();
    assert!(
        metric_probes >= 3,
        "each iteration is analysed: {metric_probes}"
    );
}

#[test]
fn ab_testing_with_failing_metrics_rolls_back_to_the_primary() {
    let a = CanaryAnalysis {
        step_weight: None,
        max_weight: None,
        iterations: Some(10),
        threshold: Some(2),
        r#match: vec![serde_json::json!({"headers": {"x-canary": {"exact": "insider"}}})],
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.release_to_first_step();
    assert_eq!(w.weight(), 100);
    w.metric = MetricOutcome::OutOfRange(80.0, "success rate 80.00% < 99%".into());
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.map(|r| r.canary), Some(0));
    assert_eq!(w.target_replicas, 0);
}

#[test]
fn canary_with_mirror_mirrors_one_analysed_interval_then_steps() {
    let a = CanaryAnalysis {
        mirror: Some(true),
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.release_to_first_step();
    assert_eq!(w.weight(), 0);
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 100,
            canary: 0,
            mirror: true
        })
    );
    assert!(w.has_notice("Mirroring traffic to canary podinfo.test"));
    let probes_before = w.asked.iter().filter(|p| **p == Probe::Metrics).count();
    w.advance(30);
    w.tick();
    assert_eq!(w.weight(), 10, "steps after the mirrored interval");
    assert!(!w.routes.unwrap().mirror);
    let probes_after = w.asked.iter().filter(|p| **p == Probe::Metrics).count();
    assert!(
        probes_after > probes_before,
        "the mirrored interval is analysed"
    );
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn pending_routes_halt_the_analysis_without_counting_a_failure() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    assert_eq!(w.weight(), 10);
    w.routes_pending = Some("HTTPRoute podinfo.test parent gw not accepted".into());
    for _ in 0..5 {
        w.step();
    }
    let st = w.status();
    assert_eq!(st.canary_weight, 10, "no step while the route is pending");
    assert_eq!(st.failed_checks, 0);
    let halted = crate::api::find_condition(&st.conditions, types::HALTED).unwrap();
    assert_eq!(halted.reason.as_deref(), Some("RoutesPending"));
    let warnings = w
        .notices
        .iter()
        .filter(|n| n.message.contains("not accepted"))
        .count();
    assert_eq!(warnings, 1, "one Warning, not one per tick");
    w.routes_pending = None;
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert!(crate::api::find_condition(&w.status().conditions, types::HALTED).is_none());
}

#[test]
fn session_affinity_cookie_lives_while_the_canary_has_traffic() {
    let a = CanaryAnalysis {
        session_affinity: Some(crate::api::SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            primary_cookie_name: Some("primary-cookie".into()),
            ..Default::default()
        }),
        ..analysis()
    };
    let mut w = World::initialized(a);
    assert_eq!(w.status().session_affinity_cookie, None);
    w.release_to_first_step();
    let st = w.status();
    let cookie = st.session_affinity_cookie.clone().unwrap();
    let (name, value) = cookie.split_once('=').unwrap();
    assert_eq!(name, "flagger-cookie");
    assert_eq!(value.len(), 10);
    assert!(value.chars().all(|c| c.is_ascii_alphabetic()), "{value}");
    assert!(
        st.primary_session_affinity_cookie
            .as_deref()
            .unwrap()
            .starts_with("primary-cookie=")
    );
    // Stable across steps: a user keeps the canary for the whole run.
    w.advance(30);
    w.tick();
    assert_eq!(w.weight(), 20);
    assert_eq!(
        w.status().session_affinity_cookie.as_deref(),
        Some(cookie.as_str())
    );
    w.run_until(40, terminal);
    let st = w.status();
    assert_eq!(st.session_affinity_cookie, None);
    assert_eq!(st.primary_session_affinity_cookie, None);
    assert_eq!(
        st.previous_session_affinity_cookie.as_deref(),
        Some(cookie.as_str())
    );
    // A new run gets a new cookie.
    w.revision = REV3.into();
    w.tick();
    w.advance(1);
    w.tick();
    let next = w.status().session_affinity_cookie.unwrap();
    assert_ne!(next, cookie);
}

// ---------------------------------------------------------------------------------------------
// Rollbacks

#[test]
fn failing_metrics_roll_back_after_threshold() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    w.advance(1);
    w.tick(); // start, weight 10
    w.metric = MetricOutcome::OutOfRange(80.0, "success rate 80.00% < 99%".into());
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    let st = w.status();
    assert_eq!(st.failed_checks, 5);
    assert_eq!(st.canary_weight, 0);
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 100,
            canary: 0,
            mirror: false
        })
    );
    assert_eq!(w.target_replicas, 0);
    assert!(
        !w.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. })),
        "primary untouched"
    );
    assert!(w.has_notice("Rolling back podinfo.test failed checks threshold reached 5"));
    assert!(w.has_notice("Halt podinfo.test advancement success rate 80.00% < 99%"));
    let promoted = find_condition(&st.conditions, "Promoted").unwrap();
    assert_eq!(
        (promoted.status.as_str(), promoted.reason.as_deref()),
        ("False", Some("Failed"))
    );
}

#[test]
fn every_failure_alerts_with_its_reason() {
    // Case 6: progress-deadline rollbacks (outside the analysis) alert too.
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.target_ready =
        Readiness::NotReady("0 of 2 (readyThreshold 100%) updated replicas are available".into());
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    let alert = w
        .notices
        .iter()
        .find(|n| n.severity == Severity::Error)
        .expect("error alert");
    let text = alert.alert.as_deref().unwrap();
    assert!(text.contains("progress deadline exceeded"), "{text}");
}

#[test]
fn progress_deadline_counts_from_pennants_own_clock() {
    // Case 15: crash-looping canary whose Deployment conditions never say "deadline exceeded".
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    let start = w.now;
    w.target_ready = Readiness::NotReady("1 out of 2 new replicas have been updated".into());
    for _ in 0..100 {
        let d = w.tick();
        if terminal(&w) {
            break;
        }
        w.advance(d.requeue_after.unwrap().as_secs() as i64);
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    let took = w.now.duration_since(start).as_secs();
    assert!(
        (60..=62).contains(&took),
        "rolled back after {took}s, deadline is 60s"
    );
}

#[test]
fn deployment_deadline_exceeded_rolls_back_at_once() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    w.target_ready = Readiness::Failed("ProgressDeadlineExceeded".into());
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
}

#[test]
fn canary_unready_mid_analysis_then_recovers_resets_the_clock() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.target_ready = Readiness::NotReady("pod restarting".into());
    w.tick();
    assert!(w.status().unready_since.is_some());
    w.advance(40);
    w.target_ready = Readiness::Ready;
    w.tick();
    assert_eq!(w.status().unready_since, None);
    w.target_ready = Readiness::NotReady("pod restarting".into());
    w.advance(40);
    w.tick();
    assert_eq!(
        w.phase(),
        Some(CanaryPhase::Progressing),
        "clock restarted: 40s < 60s"
    );
}

#[test]
fn no_values_counts_as_failed_check_with_flaggers_message() {
    // Case 16.
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.advance(30);
    w.metric = MetricOutcome::NoValues(
        "no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic".into(),
    );
    w.tick();
    assert_eq!(w.status().failed_checks, 1);
    assert_eq!(w.weight(), 10, "no advance on a failed check");
    assert!(w.has_notice(
        "Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic"
    ));
}

#[test]
fn unreachable_prometheus_sets_condition_and_never_advances() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    w.advance(1);
    w.tick(); // weight 10
    w.metric = MetricOutcome::Error("prometheus http://127.0.0.1:1 unreachable".into());
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.weights_seen().iter().max(), Some(&10));
    let st = w.status();
    let c = find_condition(&st.conditions, "MetricsAvailable").unwrap();
    assert_eq!(c.status, "False");
}

#[test]
fn unreachable_prometheus_at_start_moves_no_traffic() {
    let mut w = World::initialized(analysis());
    w.metric = MetricOutcome::Error("prometheus http://127.0.0.1:1 unreachable".into());
    w.revision = REV2.into();
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.weights_seen(), vec![0], "the canary never got traffic");
    assert!(w.has_notice("Metric query failed for request-success-rate"));
}

#[test]
fn empty_results_at_start_do_not_block_the_first_step() {
    let mut w = World::initialized(analysis());
    w.metric = MetricOutcome::NoValues("no values found".into());
    w.release_to_first_step();
    assert_eq!(w.weight(), 10);
}

#[test]
fn rollback_webhook_rolls_back_immediately() {
    let mut a = analysis();
    a.webhooks = vec![hook("rb", "rollback")];
    let mut w = World::initialized(a);
    w.release_to_first_step();
    assert_eq!(
        w.phase(),
        Some(CanaryPhase::Failed),
        "the scripted hook answers 2xx = roll back"
    );
    assert!(w.has_notice("Rolling back podinfo.test manual webhook invoked"));
}

#[test]
fn failed_pre_rollout_counts_and_retries_each_interval() {
    let mut a = analysis();
    a.webhooks = vec![hook("smoke", "pre-rollout")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::PreRollout, false);
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(
        w.weights_seen().iter().max(),
        Some(&0),
        "no traffic ever reached the canary"
    );
    let pre = w
        .asked
        .iter()
        .filter(|p| **p == Probe::Hooks(HookKind::PreRollout))
        .count();
    assert_eq!(pre, 5);
}

#[test]
fn closed_traffic_gate_with_failing_metrics_still_rolls_back() {
    // Case 14.
    let mut a = analysis();
    a.webhooks = vec![hook("ti", "confirm-traffic-increase")];
    let mut w = World::initialized(a);
    w.revision = REV2.into();
    w.tick();
    w.advance(1);
    w.tick(); // weight 10 needs the gate: closed below
    w.hooks.insert(HookKind::ConfirmTrafficIncrease, false);
    w.metric = MetricOutcome::OutOfRange(1.0, "error-rate 1 > 0.5".into());
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
}

#[test]
fn confirm_promotion_gate_holds_in_waiting_promotion_until_opened() {
    // Case 13: gates wait indefinitely (documented); analysis keeps running meanwhile.
    let mut a = analysis();
    a.webhooks = vec![hook("gate", "confirm-promotion")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmPromotion, false);
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::WaitingPromotion));
    for _ in 0..20 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::WaitingPromotion));
    assert_eq!(w.weight(), 50, "weights kept while waiting");
    assert_eq!(w.routes.unwrap().canary, 50);
    let alerts = w
        .notices
        .iter()
        .filter(|n| n.alert.is_some() && n.message.contains("promotion approval"))
        .count();
    assert_eq!(alerts, 1, "one alert, not one per tick");
    w.hooks.insert(HookKind::ConfirmPromotion, true);
    w.run_until(10, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn waiting_promotion_still_enforces_threshold() {
    let mut a = analysis();
    a.webhooks = vec![hook("gate", "confirm-promotion")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmPromotion, false);
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::WaitingPromotion));
    w.metric = MetricOutcome::OutOfRange(50.0, "success rate 50.00% < 99%".into());
    w.run_until(20, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
}

#[test]
fn confirm_rollout_gate_keeps_waiting_then_starts() {
    let mut a = analysis();
    a.webhooks = vec![hook("approve", "confirm-rollout")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmRollout, false);
    w.revision = REV2.into();
    for _ in 0..4 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    assert_eq!(w.target_replicas, 0, "not scaled up before approval");
    w.hooks.insert(HookKind::ConfirmRollout, true);
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(w.target_replicas, 2);
}

#[test]
fn failed_promotion_keeps_traffic_on_the_healthy_canary() {
    // Cases 1 and 8: the primary never comes up with the promoted spec.
    let mut w = World::initialized(analysis());
    w.primary_after_promote =
        Readiness::NotReady("1 out of 2 new replicas have been updated".into());
    w.revision = REV2.into();
    w.run_until(60, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    let st = w.status();
    assert_eq!(st.canary_weight, 100);
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 0,
            canary: 100,
            mirror: false
        })
    );
    assert_eq!(w.target_replicas, 2, "canary not scaled down");
    let err = w
        .notices
        .iter()
        .find(|n| n.severity == Severity::Error)
        .unwrap();
    assert!(
        err.message
            .starts_with("Promotion of podinfo.test failed, primary not ready: "),
        "{}",
        err.message
    );
    // stays that way in steady state
    w.step();
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 0,
            canary: 100,
            mirror: false
        })
    );
}

#[test]
fn failed_run_is_not_retried_for_the_same_revision() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.metric = MetricOutcome::OutOfRange(0.0, "bad".into());
    w.run_until(20, terminal);
    let n = w.notices.len();
    for _ in 0..5 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.notices.len(), n, "quiet after failure");
    // a new revision starts a new run
    w.revision = REV3.into();
    w.metric = MetricOutcome::Pass(100.0);
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn reverting_target_to_promoted_revision_starts_no_run() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.metric = MetricOutcome::OutOfRange(0.0, "bad".into());
    w.run_until(20, terminal);
    w.revision = REV1.into(); // back to what the primary runs
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
}

// ---------------------------------------------------------------------------------------------
// Changes mid-run

#[test]
fn new_revision_mid_analysis_restarts() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.advance(30);
    w.tick();
    assert_eq!(w.weight(), 20);
    w.revision = REV3.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(w.weight(), 0);
    assert_eq!(w.routes.unwrap().canary, 0);
    assert!(w.has_notice("New revision detected! Restarting analysis for podinfo.test"));
    w.run_until(40, terminal);
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV3));
}

#[test]
fn config_change_starts_a_run() {
    let mut w = World::initialized(analysis());
    w.configs
        .insert("configmap/podinfo-config".into(), "aaaa".into());
    // first observation of configs after init counts as a change, as Flagger
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    w.configs
        .insert("configmap/podinfo-config".into(), "bbbb".into());
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    // and the promoted id covers the configs, so the primary rolls
    let ids: Vec<_> = w
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Promote { revision_id } => Some(revision_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], revision_id(REV1, &BTreeMap::new()));
}

#[test]
fn editing_the_canary_mid_run_keeps_weights() {
    // Case 5: a spec edit (e.g. service.match) must not reset the traffic split.
    let mut a = analysis();
    a.webhooks = vec![hook("gate", "confirm-promotion")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmPromotion, false);
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::WaitingPromotion));
    w.canary.spec.service.r#match = vec![serde_json::json!({"uri": {"prefix": "/tasks/"}})];
    let d = w.tick();
    let routes = d.actions.iter().find_map(|a| match a {
        Action::EnsureRoutes(r) => Some(*r),
        _ => None,
    });
    assert_eq!(
        routes,
        Some(Weights {
            primary: 50,
            canary: 50,
            mirror: false
        })
    );
    assert_eq!(w.phase(), Some(CanaryPhase::WaitingPromotion));
}

// ---------------------------------------------------------------------------------------------
// Restarts: the controller is stateless; every phase resumes from status alone.

#[test]
fn restart_at_every_phase_finishes_the_same_way() {
    // Run once, snapshotting status at every tick; then "restart" from each snapshot with a
    // fresh World (no memory but status) and check the release still succeeds.
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    let mut snapshots = vec![];
    for _ in 0..40 {
        snapshots.push((
            w.canary.clone(),
            w.now,
            w.target_replicas,
            w.primary.clone(),
        ));
        if terminal(&w) {
            break;
        }
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    let phases: std::collections::BTreeSet<_> = snapshots
        .iter()
        .filter_map(|s| s.0.status.as_ref().and_then(|st| st.phase))
        .map(|p| p.as_str())
        .collect();
    for p in ["Initialized", "Progressing", "Promoting", "Finalising"] {
        assert!(phases.contains(p), "scenario covers {p}: {phases:?}");
    }
    for (canary, now, replicas, primary) in snapshots {
        let mut r = World::new(analysis());
        r.canary = canary;
        r.now = now;
        r.revision = REV2.into();
        r.target_replicas = replicas;
        r.primary = primary;
        r.run_until(40, terminal);
        assert_eq!(r.phase(), Some(CanaryPhase::Succeeded));
        assert_eq!(r.status().last_promoted_spec.as_deref(), Some(REV2));
        assert_eq!(r.target_replicas, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn invalid_spec_stalls_with_warning_and_touches_nothing() {
    let mut w = World::new(analysis());
    let mut obs = w.observed(Probes::default());
    obs.invalid = vec!["analysis.maxWeight 150 must be between 1 and 100".into()];
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(d.actions.is_empty());
    let c = find_condition(&d.status.conditions, "Stalled").unwrap();
    assert_eq!(c.reason.as_deref(), Some("InvalidSpec"));
    assert!(c.message.as_deref().unwrap().contains("maxWeight 150"));
    assert_eq!(d.notices.len(), 1);
    assert_eq!(d.notices[0].severity, Severity::Warn);
    // not polled: a change of the Canary or its target (the watches) decides again
    assert_eq!(d.requeue_after, None);
    // the same problem again: no new event
    w.canary.status = Some(d.status);
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(d.notices.is_empty());
}

#[test]
fn a_long_invalid_message_is_cut_and_stalls_once() {
    // 3000 stepWeights made a 17 000-character message (issue 11 item 5)
    let mut w = World::new(analysis());
    let mut obs = w.observed(Probes::default());
    let steps: Vec<i32> = (0..3000).map(|i| 100 - i % 100).collect();
    obs.invalid = vec![format!(
        "analysis.stepWeights {steps:?} must be increasing values between 1 and 100"
    )];
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    let c = find_condition(&d.status.conditions, "Stalled").unwrap();
    let stored = c.message.as_deref().unwrap();
    assert!(stored.len() <= 1024, "{} bytes", stored.len());
    assert!(stored.starts_with("invalid Canary: analysis.stepWeights [100, 99"));
    assert_eq!(d.notices.len(), 1);
    w.canary.status = Some(d.status);
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(
        d.notices.is_empty(),
        "the same long problem again: no new event"
    );
    assert_eq!(
        Some(&d.status),
        w.canary.status.as_ref(),
        "and no status write"
    );
}

#[test]
fn missing_target_stalls_and_touches_nothing() {
    let w = World::initialized(analysis());
    let mut obs = w.observed(Probes::default());
    obs.target = None;
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(d.actions.is_empty());
    let c = find_condition(&d.status.conditions, "Stalled").unwrap();
    assert_eq!(
        c.message.as_deref(),
        Some("target Deployment test/podinfo not found")
    );
    assert_eq!(d.status.phase, Some(CanaryPhase::Initialized), "phase kept");
}

#[test]
fn unsupported_fields_are_reported_once() {
    let w = World::initialized(analysis());
    let mut obs = w.observed(Probes::default());
    obs.unsupported = vec!["analysis.mirror".into()];
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    let c = find_condition(&d.status.conditions, "Unsupported").unwrap();
    assert!(c.message.as_deref().unwrap().contains("analysis.mirror"));
    assert_eq!(d.notices.len(), 1);
}

#[test]
fn suspend_freezes_an_in_flight_run() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.canary.spec.suspend = true;
    let before = w.status();
    for _ in 0..5 {
        let d = w.step();
        assert!(d.actions.is_empty());
    }
    assert_eq!(w.status().canary_weight, before.canary_weight);
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
}

// ---------------------------------------------------------------------------------------------
// Invariants

fn arb_analysis() -> impl proptest::strategy::Strategy<Value = CanaryAnalysis> {
    (
        prop_oneof![Just(None), (1..=100i32).prop_map(Some)],
        prop::collection::btree_set(1..=100i32, 0..5),
        prop_oneof![Just(None), (1..=100i32).prop_map(Some)],
        10u64..120,
        1..6i32,
        prop_oneof![Just(None), (1..=100i32).prop_map(Some)],
    )
        .prop_filter("needs a progression", |(s, ss, ..)| {
            s.is_some() || !ss.is_empty()
        })
        .prop_map(
            |(step, steps, max, interval, threshold, promo)| CanaryAnalysis {
                interval: Some(format!("{interval}s")),
                threshold: Some(threshold),
                max_weight: max,
                step_weight: step,
                step_weights: steps.into_iter().collect(),
                step_weight_promotion: promo,
                metrics: vec![CanaryMetric {
                    name: "request-success-rate".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn weights_stay_valid_and_steps_respect_the_interval(
        a in arb_analysis(),
        failures in prop::collection::vec(any::<bool>(), 60),
        jitter in prop::collection::vec(0u64..40, 60),
    ) {
        let max = a.max_weight();
        let interval = a.interval();
        let mut w = World::initialized(a);
        w.revision = REV2.into();
        let mut last_change: Option<(Timestamp, i32)> = None;
        for i in 0..60 {
            w.metric = if failures[i] { MetricOutcome::OutOfRange(0.0, "bad".into()) } else { MetricOutcome::Pass(100.0) };
            let before = w.weight();
            let phase_before = w.phase();
            let d = w.tick();
            for act in &d.actions {
                if let Action::EnsureRoutes(r) = act {
                    prop_assert_eq!(r.primary + r.canary, 100);
                    prop_assert!(r.canary >= 0 && r.primary >= 0);
                    if r.canary != 100 {
                        prop_assert!(r.canary <= max, "canary {} > max {}", r.canary, max);
                    }
                }
            }
            // one EnsureRoutes per decision, for the status written, never after the canary is
            // scaled down or the post-rollout hooks ran
            let routes: Vec<usize> = d.actions.iter().enumerate()
                .filter(|(_, a)| matches!(a, Action::EnsureRoutes(_)))
                .map(|(i, _)| i)
                .collect();
            prop_assert!(routes.len() <= 1, "{:?}", d.actions);
            if let Some(&i) = routes.first() {
                let analysis = w.canary.spec.analysis().cloned();
                prop_assert_eq!(&d.actions[i], &Action::EnsureRoutes(routes_for(&d.status, analysis.as_ref())));
                prop_assert!(
                    !d.actions[..i].iter().any(|a| matches!(a, Action::ScaleTarget(0) | Action::RunHooks(..))),
                    "{:?}", d.actions
                );
            }
            let after = w.weight();
            if after > before
                && phase_before == Some(CanaryPhase::Progressing)
                && before > 0
                && let Some((t, _)) = last_change
            {
                // never early against the schedule: an interval after the previous step's slot
                let gap = w.now.duration_since(t);
                prop_assert!(gap >= SignedDuration::try_from(interval).unwrap(), "step {gap:?} after the last slot < {interval:?}");
            }
            if after != before {
                // the slot a step is recorded at is never after the step itself
                let slot = w.status().last_step_time.as_ref().map_or(w.now, |t| t.0);
                prop_assert!(slot <= w.now || slot.as_second() == w.now.as_second() + 1, "slot {slot} after {}", w.now);
                last_change = Some((slot, after));
            }
            if terminal(&w) { break; }
            let wait = d.requeue_after.unwrap_or(Duration::from_secs(30)).as_secs().max(1);
            w.advance((wait + jitter[i] % 3) as i64);
        }
    }

    #[test]
    fn decide_is_deterministic(a in arb_analysis(), secs in 0i64..600) {
        let mut w = World::initialized(a);
        w.revision = REV2.into();
        w.tick();
        w.advance(secs);
        let obs = w.observed(Probes::default());
        prop_assert_eq!(decide(&w.canary, &obs), decide(&w.canary, &obs));
    }
}

#[test]
fn messages_helper_is_used() {
    // keep the helper honest: notices are recorded in order
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    assert_eq!(
        w.messages().last().unwrap(),
        "New revision detected! Scaling up podinfo.test"
    );
}

// ---------------------------------------------------------------------------------------------
// Found by review on the live cluster

#[test]
fn target_change_during_promotion_takes_traffic_off_the_canary() {
    let a = CanaryAnalysis {
        step_weight_promotion: Some(10),
        ..analysis()
    };
    let mut w = World::initialized(a);
    w.primary_after_promote =
        Readiness::NotReady("1 out of 2 new replicas have been updated".into());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    assert_eq!(w.weight(), 50);
    w.revision = REV3.into(); // new image while the primary rolls REV2
    w.tick();
    assert_eq!(w.weight(), 0, "unanalysed pods get no traffic");
    assert_eq!(w.routes.unwrap().canary, 0);
    assert!(
        !w.actions
            .iter()
            .filter(|a| matches!(a, Action::Promote { .. }))
            .any(|a| *a
                == Action::Promote {
                    revision_id: revision_id(REV3, &BTreeMap::new())
                })
    );
    // the primary finishes REV2, then REV3 gets its own run
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    w.run_until(10, |w| w.phase() == Some(CanaryPhase::Succeeded));
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV2));
    w.primary_after_promote = Readiness::Ready;
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    w.run_until(40, terminal);
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV3));
}

#[test]
fn failed_promotion_never_routes_to_an_unanalysed_canary() {
    let mut w = World::initialized(analysis());
    w.primary_after_promote =
        Readiness::NotReady("1 out of 2 new replicas have been updated".into());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    w.revision = REV3.into();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 0);
}

#[test]
fn reached_threshold_rolls_back_before_readiness_is_looked_at() {
    // A rollback whose status write was lost must not route traffic back to a canary at zero.
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    let mut st = w.status();
    st.failed_checks = 5;
    w.canary.status = Some(st);
    w.target_replicas = 0; // the rollback's scale-down was applied
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert!(w.has_notice("Rolling back podinfo.test failed checks threshold reached 5"));
    assert!(!w.has_notice("progress deadline"));
}

#[test]
fn target_deleted_mid_run_gives_traffic_back_to_the_primary() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    assert_eq!(w.routes.unwrap().canary, 10);
    let mut obs = w.observed(Probes::default());
    obs.target = None;
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(d.actions.contains(&Action::EnsureRoutes(Weights {
        primary: 100,
        canary: 0,
        mirror: false
    })));
    assert_eq!(d.status.canary_weight, 0);
}

#[test]
fn deleted_primary_is_not_recreated_from_a_rejected_target() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.metric = MetricOutcome::OutOfRange(0.0, "bad".into());
    w.run_until(20, terminal);
    w.primary = None;
    let n = w.notices.len();
    let d = w.tick();
    assert!(!d.actions.contains(&Action::EnsurePrimary));
    let st = w.status();
    let c = find_condition(&st.conditions, "Stalled").unwrap();
    assert_eq!(c.reason.as_deref(), Some("PrimaryNotFound"));
    w.tick();
    assert_eq!(w.notices.len(), n + 1, "warned once, not every reconcile");
}

#[test]
fn rollback_hook_ends_a_run_waiting_for_confirm_rollout() {
    let mut a = analysis();
    a.webhooks = vec![hook("approve", "confirm-rollout"), hook("rb", "rollback")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmRollout, false);
    w.hooks.insert(HookKind::Rollback, false);
    w.revision = REV2.into();
    w.step();
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    w.hooks.insert(HookKind::Rollback, true);
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.target_replicas, 0, "never scaled up");
    assert_eq!(w.weights_seen().iter().max(), Some(&0));
}

#[test]
fn adopting_another_controllers_status_keeps_a_pending_change() {
    // Review finding: Flagger stopped, image changed, pennant started.
    let mut w = World::initialized(analysis());
    let mut st = w.status();
    st.phase = Some(CanaryPhase::Succeeded);
    st.last_applied_spec = Some("5d8f7b9c4".into());
    st.last_promoted_spec = Some("5d8f7b9c4".into());
    w.canary.status = Some(st);
    w.revision = REV2.into();
    w.target_matches_primary = Some(false);
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(w.status().last_applied_spec.as_deref(), Some(REV2));
}

// ---------------------------------------------------------------------------------------------
// Issue 11: no traffic on a workload without pods, no halt past the deadline, no early step

fn ready_primary() -> Option<PrimaryState> {
    Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    })
}

fn alerts(w: &World) -> Vec<String> {
    w.notices.iter().filter_map(|n| n.alert.clone()).collect()
}

#[test]
fn deleted_primary_mid_run_fails_with_all_traffic_on_the_canary() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.run_until(10, |w| w.weight() == 30);
    w.primary = None;
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(
        w.routes,
        Some(Weights {
            primary: 0,
            canary: 100,
            mirror: false
        }),
        "no traffic on the missing primary"
    );
    assert!(!d.actions.contains(&Action::ScaleTarget(0)), "canary kept");
    assert_eq!(w.target_replicas, 2);
    assert!(
        alerts(&w)
            .iter()
            .any(|a| a.contains("primary podinfo-primary.test not found")),
        "{:?}",
        w.notices
    );
    assert!(find_condition(&w.status().conditions, "Halted").is_none());
    // Idle: the primary is not recreated from the unverified target, the traffic stays.
    let d = w.tick();
    assert!(!d.actions.contains(&Action::EnsurePrimary));
    assert_eq!(w.routes.unwrap().canary, 100);
}

#[test]
fn primary_not_ready_mid_run_halts_until_the_deadline_then_routes_to_the_ready_canary() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    assert_eq!(w.weight(), 10);
    w.primary.as_mut().unwrap().readiness = Readiness::NotReady("0 of 2 available".into());
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    let halted = find_condition(&w.status().conditions, "Halted")
        .unwrap()
        .clone();
    assert_eq!(halted.reason.as_deref(), Some("PrimaryNotReady"));
    // every 5 s for 55 s: still halted, at the same weight, since the same time
    for _ in 0..11 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(w.weight(), 10);
    let st = w.status();
    let again = find_condition(&st.conditions, "Halted").unwrap();
    assert_eq!(again.last_transition_time, halted.last_transition_time);
    // past the 60 s progress deadline
    w.run_until(5, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 100);
    assert!(
        alerts(&w)
            .iter()
            .any(|a| a.contains("not ready within the progress deadline")),
        "{:?}",
        w.notices
    );
}

#[test]
fn primary_and_canary_not_ready_past_the_deadline_roll_back() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.primary.as_mut().unwrap().readiness = Readiness::NotReady("0 of 2 available".into());
    w.target_ready = Readiness::NotReady("0 of 2 available".into());
    w.run_until(30, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 0);
    assert_eq!(w.target_replicas, 0);
    assert!(alerts(&w).iter().any(|a| a.contains("rolled back")));
}

#[test]
fn pending_routes_past_the_deadline_roll_back() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.routes_pending = Some("HTTPRoute podinfo.test parent gw not accepted".into());
    w.run_until(30, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 0);
    assert!(w.has_notice("routes not accepted within the progress deadline"));
    assert_eq!(w.status().failed_checks, 0);
}

#[test]
fn pending_routes_before_the_run_wait_but_alert_past_the_deadline() {
    let mut a = analysis();
    a.webhooks = vec![hook("approve", "confirm-rollout")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmRollout, false);
    w.revision = REV2.into();
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    w.routes_pending = Some("HTTPRoute podinfo.test parent gw not accepted".into());
    for _ in 0..40 {
        w.step();
    }
    // no traffic on the canary: it keeps waiting, and says so once more, as an alert
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    let overdue = alerts(&w)
        .into_iter()
        .filter(|a| a.contains("longer than the progress deadline"))
        .count();
    assert_eq!(overdue, 1, "{:?}", w.notices);
}

#[test]
fn closed_gates_wait_past_the_deadline() {
    // A human decides: gates are not bound by the progress deadline (the metrics still are).
    let mut a = analysis();
    a.webhooks = vec![hook("gate", "confirm-promotion")];
    let mut w = World::initialized(a);
    w.hooks.insert(HookKind::ConfirmPromotion, false);
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::WaitingPromotion));
    w.advance(600);
    for _ in 0..10 {
        w.step();
    }
    assert_eq!(w.phase(), Some(CanaryPhase::WaitingPromotion));
    assert_eq!(w.weight(), 50);
}

#[test]
fn primary_deleted_while_promoting_is_recreated_with_the_analysed_revision() {
    let mut w = World::initialized(analysis());
    w.primary_after_promote = Readiness::NotReady("1 out of 2 new replicas".into());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    w.primary = None;
    let d = w.tick();
    assert!(d.actions.contains(&Action::Promote {
        revision_id: revision_id(REV2, &BTreeMap::new())
    }));
    assert_eq!(w.routes.unwrap().canary, 50, "the canary keeps its share");
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    w.run_until(10, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn primary_deleted_while_finalising_gives_the_traffic_back_to_the_canary() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Finalising));
    assert_eq!(w.routes.unwrap().canary, 0);
    w.primary = None;
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Promoting));
    assert_eq!(w.routes.unwrap().canary, 100);
    assert_eq!(w.target_replicas, 2, "not scaled down");
    let d = w.tick();
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }))
    );
    w.run_until(10, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn target_ref_changed_mid_run_sends_the_old_route_back_and_initialises_the_new_target() {
    let mut w = World::initialized(analysis());
    assert_eq!(
        w.status().target_ref.map(|t| t.name).as_deref(),
        Some("podinfo")
    );
    w.release_to_first_step();
    w.run_until(10, |w| w.weight() == 20);
    let old = w.canary.spec.target_ref.clone();
    w.canary.spec.target_ref.name = "other".into();
    w.primary = None; // other-primary does not exist yet
    w.revision = REV3.into();
    let d = w.tick();
    assert_eq!(d.actions.first(), Some(&Action::RetireTarget(old)));
    assert!(d.actions.contains(&Action::EnsurePrimary));
    let st = w.status();
    assert_eq!(st.phase, Some(CanaryPhase::Initializing));
    assert_eq!(st.canary_weight, 0);
    assert_eq!(st.last_applied_spec, None);
    assert_eq!(st.target_ref.map(|t| t.name).as_deref(), Some("other"));
    assert!(alerts(&w).iter().any(|a| a.contains("targetRef changed")));
    w.primary = ready_primary();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV3));
    assert_eq!(w.routes.unwrap().canary, 0);
    assert_eq!(w.target_replicas, 0);
}

#[test]
fn target_ref_changed_to_an_invalid_target_still_sends_the_old_route_back() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.canary.spec.target_ref.name = "other".into();
    let mut obs = w.observed(Probes::default());
    obs.invalid = vec!["Deployment other has no selector label".into()];
    let Step::Done(d) = decide(&w.canary, &obs) else {
        panic!()
    };
    assert!(matches!(d.actions[..], [Action::RetireTarget(_)]));
    assert_eq!(d.status.canary_weight, 0);
    let c = find_condition(&d.status.conditions, "Stalled").unwrap();
    assert_eq!(c.reason.as_deref(), Some("InvalidSpec"));
}

#[test]
fn status_without_target_ref_adopts_the_spec_without_a_run() {
    let mut w = World::initialized(analysis());
    let mut st = w.status();
    st.target_ref = None;
    w.canary.status = Some(st);
    let d = w.tick();
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::RetireTarget(_)))
    );
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    assert!(w.status().target_ref.is_some());
}

#[test]
fn promotion_scales_the_primary_to_the_canarys_ready_replicas_before_the_traffic_goes_back() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.run_until(5, |w| w.phase() == Some(CanaryPhase::Progressing));
    w.target_replicas = 12; // the canary's HPA scaled it up
    w.run_until(40, |w| w.phase() == Some(CanaryPhase::Promoting));
    w.tick();
    assert!(w.actions.contains(&Action::ScalePrimary(12)));
    assert_eq!(w.phase(), Some(CanaryPhase::Promoting));
    // not before the 12 primary pods are ready
    for _ in 0..3 {
        w.advance(5);
        w.tick();
        assert_eq!(w.routes.unwrap().canary, 50);
    }
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    w.step();
    assert_eq!(w.phase(), Some(CanaryPhase::Finalising));
    assert_eq!(w.routes.unwrap().canary, 0);
}

#[test]
fn steps_are_never_early_with_second_resolution_status() {
    let mut w = World::initialized(analysis());
    w.now = w.now.checked_add(SignedDuration::from_millis(900)).unwrap();
    w.revision = REV2.into();
    w.tick();
    w.advance(1);
    let mut steps = vec![];
    for _ in 0..1000 {
        let before = w.weight();
        w.tick();
        if w.weight() != before {
            steps.push(w.now);
        }
        // the API server keeps whole seconds
        let json = serde_json::to_value(w.canary.status.clone()).unwrap();
        w.canary.status = serde_json::from_value(json).unwrap();
        w.now = w.now.checked_add(SignedDuration::from_millis(100)).unwrap();
        if steps.len() == 3 {
            break;
        }
    }
    assert_eq!(steps.len(), 3);
    for pair in steps.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= SignedDuration::from_secs(30), "gap {gap:?}");
        assert!(gap <= SignedDuration::from_millis(31_100), "gap {gap:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limit on concurrent analyses (Flagger #1069)

fn limit_one(
    other: super::super::concurrency::PeerState,
) -> Vec<super::super::concurrency::ConcurrencyLimit> {
    vec![super::super::concurrency::ConcurrencyLimit {
        max: 1,
        source: "--max-concurrent-canaries".into(),
        others: vec![super::super::concurrency::Peer {
            id: "other.test".into(),
            state: other,
        }],
    }]
}

#[test]
fn new_revision_waits_for_a_free_slot_then_starts() {
    use super::super::concurrency::PeerState;
    let mut w = World::initialized(analysis());
    w.concurrency = limit_one(PeerState::Running);
    w.revision = REV2.into();
    let queued_at = w.now;
    for _ in 0..3 {
        let d = w.step();
        assert!(d.requeue_after.is_some(), "a waiting Canary looks again");
    }
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    assert_eq!(w.target_replicas, 0, "no canary pods while waiting");
    assert!(w.asked.is_empty(), "no hooks or metrics while waiting");
    let st = w.status();
    assert_eq!(
        super::super::concurrency::queued_since(&st),
        Some(queued_at)
    );
    assert_eq!(st.last_applied_spec.as_deref(), Some(REV1));
    let q = find_condition(&st.conditions, "Queued").expect("Queued condition");
    assert_eq!(q.reason.as_deref(), Some("ConcurrencyLimit"));
    assert_eq!(
        q.message.as_deref(),
        Some(
            "Waiting for a free slot to analyse podinfo.test: 1 of at most 1 Canaries running \
             (--max-concurrent-canaries), 0 waiting ahead; running: other.test"
        )
    );
    let waits: Vec<_> = w
        .notices
        .iter()
        .filter(|n| n.message.starts_with("Waiting for a free slot"))
        .collect();
    assert_eq!(
        waits.len(),
        1,
        "one event on entering the queue: {waits:#?}"
    );
    assert_eq!(waits[0].severity, Severity::Info);

    // the slot frees: the run starts at once (no interval to wait), and the queue is left
    w.concurrency = limit_one(PeerState::Idle);
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert!(d.actions.contains(&Action::ScaleTarget(2)));
    let st = w.status();
    assert!(find_condition(&st.conditions, "Queued").is_none());
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
}

#[test]
fn waiting_canaries_start_first_detected_first() {
    use super::super::concurrency::PeerState;
    // another Canary queued earlier takes the free slot first
    let mut w = World::initialized(analysis());
    let earlier = w.now.checked_sub(SignedDuration::from_secs(5)).unwrap();
    w.concurrency = limit_one(PeerState::Queued(earlier));
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    // one queued later waits behind this one
    let mut w = World::initialized(analysis());
    let later = w.now.checked_add(SignedDuration::from_secs(5)).unwrap();
    w.concurrency = limit_one(PeerState::Queued(later));
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
}

#[test]
fn queue_time_survives_a_restart_and_keeps_the_place() {
    use super::super::concurrency::PeerState;
    let mut w = World::initialized(analysis());
    w.concurrency = limit_one(PeerState::Running);
    w.revision = REV2.into();
    w.tick();
    let queued_at = super::super::concurrency::queued_since(&w.status()).unwrap();
    // later, another Canary queued after this one: this one is first when the slot frees
    w.advance(120);
    let after = queued_at.checked_add(SignedDuration::from_secs(1)).unwrap();
    w.concurrency = limit_one(PeerState::Queued(after));
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
}

#[test]
fn queued_change_reverted_before_its_turn_leaves_the_queue() {
    use super::super::concurrency::PeerState;
    let mut w = World::initialized(analysis());
    w.concurrency = limit_one(PeerState::Running);
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Waiting));
    w.revision = REV1.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    let st = w.status();
    assert!(find_condition(&st.conditions, "Queued").is_none());
    assert_eq!(w.target_replicas, 0);
}

#[test]
fn without_a_limit_nothing_waits() {
    let mut w = World::initialized(analysis());
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert!(find_condition(&w.status().conditions, "Queued").is_none());
}

// ---------------------------------------------------------------------------------------------
// Rollback window (Flagger #1800)

fn with_rollback_window(w: &mut World, n: &str) {
    w.canary.metadata.annotations = Some(
        [(
            super::super::rollback_window::ANNOTATION.to_string(),
            n.to_string(),
        )]
        .into(),
    );
}

/// v1 initialised, v2 released and promoted, then the target goes back to v1.
fn release_v2_then_back_to_v1(window: Option<&str>) -> World {
    let mut w = World::new(analysis());
    if let Some(n) = window {
        with_rollback_window(&mut w, n);
    }
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    });
    w.tick();
    w.revision = REV2.into();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    w.asked.clear();
    w.notices.clear();
    w.revision = REV1.into();
    w.tick();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    w
}

#[test]
fn rollback_window_promotes_a_previously_promoted_revision_without_analysis() {
    let w = release_v2_then_back_to_v1(Some("3"));
    assert!(w.asked.is_empty(), "no hooks or metrics: {:?}", w.asked);
    assert!(
        w.has_notice(
            "Rollback window: podinfo.test goes back to a revision promoted before, promoting without analysis"
        ),
        "{:#?}",
        w.messages()
    );
    assert!(!w.has_notice("Advance podinfo.test canary weight"));
    let none = BTreeMap::new();
    assert_eq!(
        super::super::rollback_window::history(&w.status()),
        vec![revision_id(REV2, &none), revision_id(REV1, &none)],
        "the history follows the promotions"
    );
}

#[test]
fn without_the_annotation_a_previous_revision_is_analysed() {
    let w = release_v2_then_back_to_v1(None);
    assert!(w.asked.contains(&Probe::Metrics));
    assert!(w.has_notice("Advance podinfo.test canary weight"));
    assert!(!w.has_notice("Rollback window"));
    assert!(
        find_condition(&w.status().conditions, "RollbackWindow").is_none(),
        "kept only when opted in"
    );
}

#[test]
fn rollback_window_counts_only_the_last_n_revisions_and_never_a_failed_one() {
    let mut w = World::new(analysis());
    with_rollback_window(&mut w, "1");
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    });
    w.tick();
    for rev in [REV2, REV3] {
        w.revision = rev.into();
        w.tick();
        w.run_until(40, terminal);
        assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    }
    // REV1 is two promotions back: outside a window of 1
    w.asked.clear();
    w.revision = REV1.into();
    w.tick();
    w.run_until(40, terminal);
    assert!(w.asked.contains(&Probe::Metrics), "REV1 analysed");
    // a rejected revision is not in the history
    w.metric = MetricOutcome::OutOfRange(50.0, "bad".into());
    w.revision = "sha256:4444444444444444".into();
    w.tick();
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    let none = BTreeMap::new();
    assert!(
        !super::super::rollback_window::history(&w.status())
            .contains(&revision_id("sha256:4444444444444444", &none))
    );
}

#[test]
fn rollback_window_revision_does_not_wait_for_a_slot() {
    use super::super::concurrency::PeerState;
    let mut w = World::new(analysis());
    with_rollback_window(&mut w, "3");
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    });
    w.tick();
    w.revision = REV2.into();
    w.run_until(40, terminal);
    w.concurrency = limit_one(PeerState::Running);
    w.revision = REV1.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
}

// ---------------------------------------------------------------------------------------------
// Event texts, word for word Flagger's (users match them in alerts and log queries)

/// Every Flagger event text pennant sends, with the pennant scenario that produces it. Source:
/// Flagger 1.44 `pkg/controller/{scheduler,scheduler_metrics,events}.go` and
/// `pkg/canary/deployment_ready.go`; metric values go through `analysis::range::judge`, the
/// wording's owner. Texts pennant words differently on purpose (webhook failures name the URL,
/// "no values found" names the query) are not listed.
#[test]
fn event_texts_are_flaggers() {
    use crate::analysis::range::{MetricKind, judge};
    let th = |min: Option<f64>, max: Option<f64>| Some(crate::api::ThresholdRange { min, max });
    let halting = |outcome: MetricOutcome| {
        let mut w = World::initialized(analysis());
        w.release_to_first_step();
        w.metric = outcome;
        w.advance(30);
        w.tick();
        w
    };
    let released = |a: CanaryAnalysis| {
        let mut w = World::initialized(a);
        w.revision = REV2.into();
        w.run_until(60, terminal);
        w
    };
    let not_ready = "waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available";
    type Scenario = Box<dyn Fn() -> World>;
    let table: Vec<(&str, Scenario)> = vec![
        (
            "podinfo-primary.test not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
            Box::new(move || {
                let mut w = World::new(analysis());
                w.primary = Some(PrimaryState {
                    readiness: Readiness::NotReady(not_ready.into()),
                    revision_id: None,
                    replicas: Some(2),
                });
                w.tick();
                w
            }),
        ),
        (
            "primary daemonset podinfo-primary.test not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
            Box::new(move || {
                let mut w = World::new(analysis());
                w.canary.spec.target_ref.kind = "DaemonSet".into();
                w.primary = Some(PrimaryState {
                    readiness: Readiness::NotReady(not_ready.into()),
                    revision_id: None,
                    replicas: Some(2),
                });
                w.tick();
                w
            }),
        ),
        (
            "Rolling back podinfo.test progress deadline exceeded canary damonset podinfo.test not ready with retryable false: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
            Box::new(move || {
                let mut w = World::initialized(analysis());
                // a DaemonSet target from the start (a kind changed later is a new target)
                let mut st = w.status();
                w.canary.spec.target_ref.kind = "DaemonSet".into();
                st.target_ref = Some(w.canary.spec.target_ref.clone());
                w.canary.status = Some(st);
                w.revision = REV2.into();
                w.target_ready = Readiness::NotReady(not_ready.into());
                w.run_until(40, terminal);
                w
            }),
        ),
        (
            "all the metrics providers are available!",
            Box::new(|| {
                let mut w = World::new(analysis());
                w.primary = Some(PrimaryState {
                    readiness: Readiness::Ready,
                    revision_id: None,
                    replicas: Some(2),
                });
                w.tick();
                w
            }),
        ),
        (
            "Initialization done! podinfo.test",
            Box::new(|| {
                let mut w = World::new(analysis());
                w.primary = Some(PrimaryState {
                    readiness: Readiness::Ready,
                    revision_id: None,
                    replicas: Some(2),
                });
                w.tick();
                w
            }),
        ),
        (
            "New revision detected! Scaling up podinfo.test",
            Box::new(move || released(analysis())),
        ),
        (
            "Starting canary analysis for podinfo.test",
            Box::new(move || released(analysis())),
        ),
        (
            "Advance podinfo.test canary weight 10",
            Box::new(move || released(analysis())),
        ),
        (
            "Copying podinfo.test template spec to podinfo-primary.test",
            Box::new(move || released(analysis())),
        ),
        (
            "Routing all traffic to primary",
            Box::new(move || released(analysis())),
        ),
        (
            "Promotion completed! Scaling down podinfo.test",
            Box::new(move || released(analysis())),
        ),
        (
            "Advance podinfo.test primary weight 90",
            Box::new(move || {
                released(CanaryAnalysis {
                    step_weight_promotion: Some(40),
                    ..analysis()
                })
            }),
        ),
        (
            "Advance podinfo.test canary iteration 1/3",
            Box::new(move || {
                released(CanaryAnalysis {
                    step_weight: None,
                    max_weight: None,
                    iterations: Some(3),
                    ..analysis()
                })
            }),
        ),
        (
            "Routing all traffic to canary",
            Box::new(move || {
                released(CanaryAnalysis {
                    step_weight: None,
                    max_weight: None,
                    iterations: Some(3),
                    ..analysis()
                })
            }),
        ),
        (
            "Halt podinfo.test advancement success rate 80.00% < 99%",
            Box::new(move || {
                let o = judge(
                    MetricKind::SuccessRate,
                    "request-success-rate",
                    80.0,
                    th(Some(99.0), None).as_ref(),
                    None,
                );
                halting(o)
            }),
        ),
        (
            "Halt podinfo.test advancement request duration 1.5s > 500ms",
            Box::new(move || {
                let o = judge(
                    MetricKind::Duration,
                    "request-duration",
                    1500.0,
                    th(None, Some(500.0)).as_ref(),
                    None,
                );
                halting(o)
            }),
        ),
        (
            "Halt podinfo.test advancement error-rate 3.20 > 1",
            Box::new(move || {
                let o = judge(
                    MetricKind::Custom,
                    "error-rate",
                    3.2,
                    th(None, Some(1.0)).as_ref(),
                    None,
                );
                halting(o)
            }),
        ),
        (
            "Rolling back podinfo.test failed checks threshold reached 5",
            Box::new(move || {
                let mut w = halting(MetricOutcome::OutOfRange(0.0, "x".into()));
                w.run_until(20, terminal);
                w
            }),
        ),
        (
            "Canary failed! Scaling down podinfo.test",
            Box::new(move || {
                let mut w = halting(MetricOutcome::OutOfRange(0.0, "x".into()));
                w.run_until(20, terminal);
                w
            }),
        ),
        (
            "Rolling back podinfo.test progress deadline exceeded canary deployment podinfo.test not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
            Box::new(move || {
                let mut w = World::initialized(analysis());
                w.revision = REV2.into();
                w.target_ready = Readiness::NotReady(not_ready.into());
                w.run_until(40, terminal);
                w
            }),
        ),
        (
            "Promotion of podinfo.test failed, primary not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
            Box::new(move || {
                let mut w = World::initialized(analysis());
                w.primary_after_promote = Readiness::NotReady(not_ready.into());
                w.revision = REV2.into();
                w.run_until(60, terminal);
                w
            }),
        ),
        (
            "Rolling back podinfo.test manual webhook invoked",
            Box::new(|| {
                let mut w = World::initialized(CanaryAnalysis {
                    webhooks: vec![hook("rb", "rollback")],
                    ..analysis()
                });
                w.hooks.insert(HookKind::Rollback, false);
                w.release_to_first_step();
                w.hooks.insert(HookKind::Rollback, true);
                w.run_until(5, terminal);
                w
            }),
        ),
        (
            "New revision detected! Restarting analysis for podinfo.test",
            Box::new(|| {
                let mut w = World::initialized(analysis());
                w.release_to_first_step();
                w.revision = REV3.into();
                w.tick();
                w
            }),
        ),
    ];
    for (flagger, scenario) in table {
        let w = scenario();
        assert!(
            w.messages().iter().any(|m| m == flagger),
            "Flagger's {flagger:?} not among {:#?}",
            w.messages()
        );
    }
    // and its alerts
    let w = released(analysis());
    let alerts: Vec<_> = w.notices.iter().filter_map(|n| n.alert.clone()).collect();
    assert!(alerts.contains(&"New revision detected, progressing canary analysis.".into()));
    assert!(alerts.contains(&"Canary analysis completed successfully, promotion finished.".into()));
}

#[test]
fn metric_provider_errors_at_initialisation_warn_and_initialise() {
    let mut w = World::new(analysis());
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: None,
        replicas: Some(2),
    });
    w.metric = MetricOutcome::Error("prometheus http://prom:9090 unreachable: refused".into());
    let d = w.tick();
    assert_eq!(
        w.phase(),
        Some(CanaryPhase::Initialized),
        "bootstrap goes on"
    );
    assert_eq!(w.asked, vec![Probe::Metrics]);
    let warn = d
        .notices
        .iter()
        .find(|n| n.message.starts_with("Error checking metric providers: "))
        .expect("warning");
    assert_eq!(warn.severity, Severity::Warn);
    assert!(!w.has_notice("all the metrics providers are available!"));
}

#[test]
fn primary_not_ready_at_initialisation_warns_once() {
    let mut w = World::new(analysis());
    w.tick(); // primary being created
    w.primary = Some(PrimaryState {
        readiness: Readiness::NotReady("waiting for rollout to finish: 0 of 2".into()),
        revision_id: None,
        replicas: Some(2),
    });
    w.advance(5);
    w.tick();
    let warnings = w
        .notices
        .iter()
        .filter(|n| n.message.starts_with("podinfo-primary.test not ready: "))
        .count();
    assert_eq!(warnings, 1, "{:#?}", w.notices);
}

// ---------------------------------------------------------------------------------------------
// Issue 11, tester's findings: after a fail onto the canary, a bad spec mid-run, targetRef back

/// Initialized at REV1 with a primary stamped as pennant stamps it, then a release of REV2 whose
/// primary goes unready at weight 20 and is failed onto the canary at the deadline.
fn failed_onto_the_canary() -> World {
    let mut w = World::initialized(analysis());
    w.primary.as_mut().unwrap().revision_id = Some(revision_id(REV1, &BTreeMap::new()));
    w.release_to_first_step();
    w.run_until(10, |w| w.weight() == 20);
    w.primary.as_mut().unwrap().readiness = Readiness::NotReady("0 of 0 available".into());
    w.run_until(30, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 100);
    w
}

fn promoted_message(w: &World) -> String {
    let st = w.status();
    let c = find_condition(&st.conditions, "Promoted").unwrap();
    c.message.clone().unwrap_or_default()
}

#[test]
fn primary_ready_again_after_failing_onto_the_canary_takes_the_traffic_back() {
    let mut w = failed_onto_the_canary();
    assert!(
        promoted_message(&w).contains("all traffic on the canary until the primary is ready"),
        "{}",
        promoted_message(&w)
    );
    // still unready: the traffic stays on the canary
    w.step();
    assert_eq!(w.routes.unwrap().canary, 100);
    // scaled back up
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    let n = w.notices.len();
    w.tick();
    assert_eq!(
        w.phase(),
        Some(CanaryPhase::Failed),
        "the revision stays failed"
    );
    assert_eq!(w.weight(), 0);
    assert_eq!(w.routes.unwrap().canary, 0);
    assert!(
        w.notices[n..]
            .iter()
            .any(|n| n.message.starts_with("Routing all traffic to primary")),
        "{:?}",
        &w.notices[n..]
    );
    assert_eq!(w.target_replicas, 2, "the canary drains first");
    w.advance(10);
    w.tick();
    assert_eq!(w.target_replicas, 2, "still draining");
    w.advance(20);
    w.tick();
    assert_eq!(w.target_replicas, 0);
    assert!(promoted_message(&w).contains("scaled to zero"));
    // steady afterwards: no run for the failed revision, no more events
    let n = w.notices.len();
    w.step();
    w.step();
    assert_eq!(w.notices.len(), n, "{:?}", &w.notices[n..]);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
}

#[test]
fn primary_recreated_from_the_promoted_revision_takes_the_traffic_back() {
    let mut w = failed_onto_the_canary();
    w.primary = None;
    w.tick();
    assert_eq!(w.routes.unwrap().canary, 100);
    // the target rolled back to the promoted revision: the primary is recreated from it
    w.revision = REV1.into();
    let d = w.tick();
    assert!(d.actions.contains(&Action::EnsurePrimary));
    assert_eq!(w.routes.unwrap().canary, 100, "not before it is ready");
    w.primary = Some(PrimaryState {
        readiness: Readiness::NotReady("0 of 2 available".into()),
        revision_id: Some(revision_id(REV1, &BTreeMap::new())),
        replicas: Some(2),
    });
    w.tick();
    assert_eq!(w.routes.unwrap().canary, 100);
    w.primary.as_mut().unwrap().readiness = Readiness::Ready;
    w.tick();
    assert_eq!(w.routes.unwrap().canary, 0);
    w.run_until(5, |w| w.target_replicas == 0);
    assert!(w.has_notice("Routing all traffic to primary"));
}

#[test]
fn new_revision_on_the_canary_without_a_primary_is_said_once_per_revision_as_an_alert() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.primary = None;
    w.tick();
    assert_eq!(w.routes.unwrap().canary, 100);
    w.tick();
    let n = alerts(&w).len();
    // the Deployment controller rolls a new release onto the traffic
    w.revision = REV3.into();
    w.tick();
    let st = w.status();
    let stalled = find_condition(&st.conditions, "Stalled").unwrap();
    assert!(stalled.message.as_deref().unwrap().contains(REV3));
    let new = alerts(&w)[n..].to_vec();
    assert_eq!(new.len(), 1, "{:?}", w.notices);
    assert!(new[0].contains("unanalysed revision serves all traffic"));
    assert!(new[0].contains(&format!("promoted revision {REV1}")));
    let m = w.notices.len();
    w.step();
    w.step();
    assert_eq!(w.notices.len(), m, "once per revision");
}

#[test]
fn invalid_spec_mid_run_rolls_back_past_the_progress_deadline() {
    let mut w = World::initialized(analysis());
    w.release_to_first_step();
    w.run_until(10, |w| w.weight() == 20);
    w.invalid =
        vec!["annotation canary.pennant.dev/rollback-window \"abc\" is not a number".into()];
    let d = w.step();
    assert!(d.requeue_after.is_some(), "looks again at the deadline");
    assert_eq!(w.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(w.routes.unwrap().canary, 20);
    w.run_until(10, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Failed));
    assert_eq!(w.routes.unwrap().canary, 0);
    assert_eq!(w.target_replicas, 0);
    assert!(
        alerts(&w)
            .iter()
            .any(|a| a.contains("invalid Canary for longer than the progress deadline")),
        "{:?}",
        w.notices
    );
    let st = w.status();
    let stalled = find_condition(&st.conditions, "Stalled").unwrap();
    assert_eq!(stalled.reason.as_deref(), Some("InvalidSpec"));
}

#[test]
fn invalid_spec_without_traffic_on_the_canary_waits() {
    let mut w = World::initialized(analysis());
    w.invalid = vec!["analysis.interval \"x\" is not a duration like 30s or 1m".into()];
    w.tick();
    w.advance(3600);
    let d = w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    assert!(d.actions.is_empty());
}

#[test]
fn initialising_against_a_primary_that_runs_another_revision_analyses_the_target() {
    // targetRef switched away mid-run and back: podinfo-primary runs REV1, podinfo REV2
    let mut w = World::new(analysis());
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: Some(revision_id(REV1, &BTreeMap::new())),
        replicas: Some(2),
    });
    w.revision = REV2.into();
    w.tick();
    assert_eq!(w.phase(), Some(CanaryPhase::Initialized));
    assert_ne!(w.status().last_promoted_spec.as_deref(), Some(REV2));
    assert_eq!(w.routes.unwrap().canary, 0);
    w.run_until(5, |w| w.phase() == Some(CanaryPhase::Progressing));
    assert!(w.has_notice("New revision detected"));
    w.run_until(40, terminal);
    assert_eq!(w.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV2));
    assert!(
        w.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }))
    );
}

#[test]
fn initialising_against_a_primary_created_from_the_target_promotes_it() {
    let mut w = World::new(analysis());
    w.primary = Some(PrimaryState {
        readiness: Readiness::Ready,
        revision_id: Some(revision_id(REV1, &BTreeMap::new())),
        replicas: Some(2),
    });
    w.tick();
    assert_eq!(w.status().last_promoted_spec.as_deref(), Some(REV1));
    assert_eq!(w.target_replicas, 0);
}
