//! The sequential judge inside the Canary state machine (`sequential-judge.md` §4.6). PURE.
//!
//! Opt-in per Canary without changing Flagger's CRD: the annotation
//! `judge.pennant.dev/mode: sequential`, and optionally `judge.pennant.dev/policy: <ConfigMap>`
//! naming a ConfigMap in the Canary's namespace whose key `policy` (YAML or JSON) holds a
//! [`Policy`] (every field optional; §4.5 defaults). Without the annotation Flagger's rule runs
//! unchanged.
//!
//! Each analysis step the observer brings a [`JudgeObservation`]: the policy, the step's counts
//! per version from Prometheus, and (until the plan is frozen) the primary's lookback. [`tick`]
//! records the step in `status.judge`, judges all judged steps and says what to do.
//!
//! The judge replaces Flagger's *per-window* builtin `request-success-rate` /
//! `request-duration` checks ([`replaces`]), but their `thresholdRange` (or legacy
//! `threshold`) stays as an absolute SLO ([`Guardrail`], §4.4): judged on the canary's
//! cumulative counts over the judged steps (`status.judge.canaryTotals`); a breach needs
//! anytime-valid evidence ([`breached`]) and rolls back at once ([`Tick::Breached`]).
//!
//! `templateRef` metrics whose MetricTemplate declares a count signal
//! (`analysis::count_metric`: `judge.pennant.dev/bad` / `total`) are judged here too, each as
//! a signal of its own after the builtin ones (`JudgeObservation::count_signals`); they have no
//! per-window check. An invalid declaration is [`Tick::Broken`].
//!
//! `status.judge.steps` is capped at [`step_cap`] steps (4 × `maxSteps`) so a run held past
//! `maxSteps` does not grow the status without bound.

use crate::analysis::MetricOutcome;
pub use crate::analysis::counts::{InputError, StepSample, VersionSample};
use crate::analysis::judge::{
    self, CountSignal, OnInconclusive, Policy, Progress, Verdict, Weights, guardrail::ln_evidence,
    report, weights,
};
use crate::analysis::range::{self, MetricKind};
use crate::api::{
    Canary, CanaryAnalysis, CanaryTotals, JudgeStatus, Plan, SignalKind, StepCounts, ThresholdRange,
};

pub use crate::analysis::judge::{MODE_ANNOTATION, opted_in};
/// `judge.pennant.dev/policy`: name of a ConfigMap (key `policy`) holding the [`Policy`].
pub const POLICY_ANNOTATION: &str = "judge.pennant.dev/policy";
/// The ConfigMap key holding the policy.
pub const POLICY_KEY: &str = "policy";

/// The policy ConfigMap `canary` names, if any.
pub fn policy_ref(canary: &Canary) -> Option<&str> {
    canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POLICY_ANNOTATION))
        .map(String::as_str)
}

/// Parse a policy document (YAML or JSON). Errors name the ConfigMap key.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let p: Policy = serde_saphyr::from_str(text).map_err(|e| format!("policy: {e}"))?;
    p.validate().map_err(|e| format!("policy: {e}"))?;
    Ok(p)
}

/// A builtin metric whose *per-window* check the judge replaces when opted in: Flagger's
/// `request-success-rate` / `request-duration` (no template, no query). Their thresholds do
/// not vanish: they are judged as absolute guardrails on the canary's cumulative counts
/// ([`guardrails`], [`breached`]). Other metrics keep running per window.
pub fn replaces(analysis: &CanaryAnalysis, name: &str) -> bool {
    analysis.metrics.iter().any(|m| {
        m.name == name
            && m.template_ref.is_none()
            && m.query.is_none()
            && matches!(name, "request-success-rate" | "request-duration")
    })
}

/// An absolute SLO kept from a builtin metric (§4.4): Flagger's range semantics
/// ([`range::judge`]: `min` and `max` both optional, or the legacy `threshold`), on the
/// canary's cumulative success rate (percent) or p99 latency (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Guardrail {
    /// `request-success-rate` or `request-duration`.
    pub name: String,
    pub kind: MetricKind,
    pub range: Option<ThresholdRange>,
    pub threshold: Option<f64>,
}

/// The guardrails of `analysis`: each builtin metric the judge [`replaces`] that has a
/// `thresholdRange` or a legacy `threshold`. Without either there is nothing to guard (and
/// Flagger's "missing threshold counts as 0" quirk would fail every `request-duration`).
pub fn guardrails(analysis: &CanaryAnalysis) -> Vec<Guardrail> {
    analysis
        .metrics
        .iter()
        .filter(|m| {
            matches!(m.name.as_str(), "request-success-rate" | "request-duration")
                && m.template_ref.is_none()
                && m.query.is_none()
        })
        .filter(|m| m.threshold_range.is_some() || m.threshold.is_some())
        .map(|m| Guardrail {
            name: m.name.clone(),
            kind: if m.name == "request-duration" {
                MetricKind::Duration
            } else {
                MetricKind::SuccessRate
            },
            range: m.threshold_range.clone(),
            threshold: m.threshold,
        })
        .collect()
}

/// The first guardrail `totals` breach, worded for the rollback event:
/// `absolute SLO breached: success rate 97.80% < 99% over 1234 canary requests
/// (evidence 10^3.1 ≥ 10^2.0 needed)`, `absolute SLO breached: request duration 612ms > 500ms
/// (p99) over 1234 canary requests (evidence …)`.
///
/// A guardrail breaches when both
/// - the observed cumulative value is out of range ([`range::judge`], Flagger's semantics:
///   success rate in %, `request-duration` the p99 of the cumulative histogram, as
///   `histogram_quantile(0.99, …)`, in whole ms), so the breach means what the user wrote; and
/// - a test martingale ([`ln_evidence`]) on the cumulative counts reaches `tests / alpha`
///   against the hypothesis that the SLO holds, `alpha` being the guardrails' share of the
///   policy's `alphaFail` ([`tick`] splits it evenly over the judge's signals and the bounds),
///   split evenly over the bounds of all guardrails (`tests`; a range with `min` and `max` is
///   two).
///   The SLO as the event probability `q0` of H0 "each request is an event with probability
///   ≤ `q0`":
///   - success rate `< min`: the event is an error, `q0 = 1 − min/100` (`min` 100: one error
///     is enough; the legacy `threshold` is a `min`);
///   - success rate `> max` (mirror): the event is a success, `q0 = max/100`, i.e. evidence
///     that the error rate is below `1 − max/100`;
///   - p99 `> max` (and the legacy `threshold`): the event is a request slower than `max`,
///     `q0 = 0.01`;
///   - p99 `< min` (mirror): the event is a request no slower than `min`, `q0 = 0.99`.
///
///   Requests slower than a duration bound are counted from the cumulative histogram
///   ([`CanaryTotals::no_slower_than`]): exact when the bound (whole ms, as [`range::judge`]
///   reads it) is a bucket edge, otherwise at the neighbouring edge on the safe side (the
///   edge above a `max`, below a `min`), so bucketing never manufactures evidence.
///
/// Without the evidence a breach would be Flagger's low-traffic flaw: one error in 50
/// requests is "98 % < 99 %", and a canary whose true rate sits just under the SLO a coin
/// flip. With it no minimum request count is needed: few requests cannot reach `tests / alpha`.
/// The martingale is a product over requests, so evaluating it on the cumulative counts every
/// tick keeps the false-breach probability ≤ `alpha` per run (Ville).
pub fn breached(totals: &CanaryTotals, guardrails: &[Guardrail], alpha: f64) -> Option<String> {
    let tests: usize = guardrails.iter().map(|g| g.bounds().tests()).sum();
    let needed = (tests.max(1) as f64 / alpha).ln();
    guardrails.iter().find_map(|g| {
        let duration = g.kind == MetricKind::Duration;
        let (value, n, what) = if duration {
            (totals.quantile(0.99)?, totals.timed, " (p99)")
        } else {
            (totals.success_rate()?, totals.requests, "")
        };
        let MetricOutcome::OutOfRange(_, m) =
            range::judge(g.kind, &g.name, value, g.range.as_ref(), g.threshold)
        else {
            return None;
        };
        // which bound: as range::judge reads them (min first; duration in whole ms)
        let b = g.bounds();
        let whole = |x: f64| if duration { x.trunc() } else { x };
        let low = b.min.filter(|&min| whole(value) < whole(min));
        let nf = n as f64;
        let ln_e = match (duration, low) {
            (false, Some(min)) => ln_evidence(nf, totals.errors as f64, 1.0 - min / 100.0),
            (false, None) => {
                let max = b.max?;
                ln_evidence(
                    nf,
                    totals.requests.saturating_sub(totals.errors) as f64,
                    max / 100.0,
                )
            }
            (true, Some(min)) => ln_evidence(nf, totals.no_slower_than(min.trunc(), false)?, 0.99),
            (true, None) => {
                let max = b.max?.trunc();
                ln_evidence(nf, nf - totals.no_slower_than(max, true)?, 0.01)
            }
        };
        if ln_e < needed {
            return None;
        }
        let log10 = |x: f64| x / std::f64::consts::LN_10;
        let have = if ln_e.is_finite() {
            format!("10^{:.1}", log10(ln_e))
        } else {
            "unbounded".to_string()
        };
        Some(format!(
            "absolute SLO breached: {m}{what} over {n} canary requests (evidence {have} ≥ 10^{:.1} needed)",
            log10(needed)
        ))
    })
}

/// The bounds a [`Guardrail`] judges, as [`range::judge`] reads them: the `thresholdRange`'s,
/// else the legacy `threshold` (a `min` for the success rate, a `max` for the duration; a
/// missing one counts as 0, as in Flagger).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Bounds {
    /// How many one-sided tests the bounds make.
    pub fn tests(self) -> usize {
        self.min.is_some() as usize + self.max.is_some() as usize
    }
}

impl Guardrail {
    /// Its [`Bounds`].
    pub fn bounds(&self) -> Bounds {
        match (&self.range, self.kind) {
            (Some(r), _) => Bounds {
                min: r.min,
                max: r.max,
            },
            (None, MetricKind::Duration) => Bounds {
                min: None,
                max: Some(self.threshold.unwrap_or(0.0)),
            },
            (None, _) => Bounds {
                min: Some(self.threshold.unwrap_or(0.0)),
                max: None,
            },
        }
    }
}

/// Recorded steps per run are capped at `STEP_CAP_FACTOR × maxSteps` ([`step_cap`]).
pub const STEP_CAP_FACTOR: u32 = 4;

/// Most steps `status.judge.steps` holds: 4 × `maxSteps` (120 at the default 30; `maxSteps`
/// is at most 250, so at most 1000 steps, ~120 KB of status).
///
/// Why a hard stop and not a merge or a running state: the e-processes are sums over steps of
/// each step's *conditional* log-likelihood (stratified by step); merging steps into one
/// prefix entry would change that likelihood (the 2×2 tables of different steps are not
/// poolable), and keeping running log-likelihoods instead of the steps would lose replay and
/// the report's per-step evidence. Past 4 × the analysis budget more of the same traffic
/// rarely decides what the budget could not, so at the cap no step is recorded or judged;
/// the verdict stays, the run is inconclusive (`onInconclusive`; with `hold`, a
/// confirm-promotion gate still promotes). The absolute guardrails keep counting (their
/// totals are fixed-size), so an SLO breach while held still rolls back.
pub fn step_cap(policy: &Policy) -> usize {
    (STEP_CAP_FACTOR * policy.max_steps) as usize
}

/// What the observer brings for one judged step.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeObservation {
    /// The policy (defaults when the Canary names no ConfigMap), or why it is unusable.
    pub policy: Result<Policy, String>,
    /// The step that just ended: from `from` to now.
    pub step: Result<StepSample, InputError>,
    /// Start of the step's window (Unix seconds): the last step time, or the start of the
    /// first deferred step.
    pub from: i64,
    /// The primary's lookback; asked for only until the plan is frozen.
    pub lookback: Option<Result<VersionSample, InputError>>,
    /// The count signals the Canary's MetricTemplates declare, in `analysis.metrics` order
    /// (`analysis::count_metric`); their events are [`VersionSample::counts`] of `step` and
    /// `lookback`, in the same order. `Err`: an invalid declaration, naming the template.
    pub count_signals: Result<Vec<CountSignal>, String>,
    /// Which of the canary's requests are load tests ([`LoadTests::of`]); counted ones are
    /// `step`'s canary [`VersionSample::load_test`].
    pub load_tests: LoadTests,
}

/// Webhook types whose hosts generate load against the canary: Flagger's loadtester runs `hey`
/// from `rollout` hooks every step, and acceptance tests from `pre-rollout`.
pub const LOAD_TEST_HOOKS: [&str; 2] = ["rollout", "pre-rollout"];

/// The workload a webhook URL's host names: its first DNS label (`http://flagger-loadtester.test/`
/// and `http://flagger-loadtester.test.svc.cluster.local:80/` give `flagger-loadtester`, the
/// Service, named after its Deployment as Flagger's loadtester is). `None` for an IP address,
/// a URL without a host, or a label that is no object name.
pub fn host_workload(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    // `domain` is `None` for an IP address
    let w = u.domain()?.split('.').next()?.to_ascii_lowercase();
    judge::is_workload_name(&w).then_some(w)
}

/// The load-test workloads of a Canary: the policy's `loadTestWorkloads` when set, else the
/// [`host_workload`]s of the analysis' [`LOAD_TEST_HOOKS`] webhooks; sorted, without
/// duplicates.
pub fn load_test_workloads(analysis: Option<&CanaryAnalysis>, policy: &Policy) -> Vec<String> {
    let mut w: Vec<String> = match &policy.load_test_workloads {
        Some(w) => w.clone(),
        None => analysis
            .into_iter()
            .flat_map(|a| {
                LOAD_TEST_HOOKS
                    .into_iter()
                    .flat_map(move |k| a.webhooks_of(k))
            })
            .filter_map(|h| host_workload(&h.url))
            .collect(),
    };
    w.sort();
    w.dedup();
    w
}

/// Which of the canary's requests are load tests (issue 19).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LoadTests {
    /// No load-test workload: nothing to report.
    #[default]
    None,
    /// Counted each step from the series' source label (`analysis::counts::source_label`).
    Counted(Vec<String>),
    /// The provider's series do not name a request's source: the share is unknown, and the
    /// report says so rather than guess.
    Unknown {
        provider: String,
        workloads: Vec<String>,
    },
}

impl LoadTests {
    /// For `workloads` ([`load_test_workloads`]) under `provider` (`istio`, `nginx`, …).
    pub fn of(provider: &str, workloads: Vec<String>) -> LoadTests {
        if workloads.is_empty() {
            LoadTests::None
        } else if crate::analysis::counts::source_label(provider).is_some() {
            LoadTests::Counted(workloads)
        } else {
            LoadTests::Unknown {
                provider: provider.to_string(),
                workloads,
            }
        }
    }

    /// The workloads whose requests to count (empty unless [`LoadTests::Counted`]).
    pub fn counted(&self) -> Vec<String> {
        match self {
            LoadTests::Counted(w) => w.clone(),
            _ => Vec::new(),
        }
    }

    /// The report's clause on the judged `steps`: `38% of the canary's requests from load tests
    /// (flagger-loadtester)` ([`report::load_test_phrase`]), or why it is unknown; `None` with
    /// no load tests, or none counted yet.
    pub fn clause(&self, steps: &[StepCounts]) -> Option<String> {
        match self {
            LoadTests::None => None,
            LoadTests::Counted(w) => report::load_test_phrase(steps, w),
            LoadTests::Unknown {
                provider,
                workloads,
            } => Some(format!(
                "share of the canary's requests from load tests ({}) unknown: provider {provider}'s series do not name a request's source",
                workloads.join(", ")
            )),
        }
    }
}

/// What the machine does after a judged tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Tick {
    /// A scrape gap: the step is merged into the next one (hold, no failed check).
    Deferred(String),
    /// The judge cannot judge: a failed check (Flagger's `threshold` semantics), the
    /// `JudgeReady` condition False with this message, no advance.
    Broken(String),
    /// An absolute guardrail is breached ([`breached`]): roll back at once, with this message.
    Breached(String),
    /// A step was judged.
    Judged {
        verdict: Verdict,
        progress: Progress,
        /// The evidence, one clause per signal (§4.9).
        evidence: String,
        /// Warnings: measured traffic share far from the configured weight, no canary traffic.
        warnings: Vec<String>,
    },
}

/// Steps in a row with no canary request (primary > 20, weight > 0) before "router not
/// honouring weight" holds the weight (§3.4).
pub const STARVED_STEPS: usize = 3;

/// Where in the run the judged step was (§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A canary release: the step ran at canary `weight`; the ramp stops at `max_weight`.
    Ramp { weight: i32, max_weight: i32 },
    /// Blue/green or A/B (`analysis.iterations`): the step was iteration `iteration` of
    /// `iterations`, with status weight `weight` (0 for blue/green, 100 for A/B). The canary
    /// gets whatever share the router or the load gives it, so the measured share is not
    /// compared with the weight; promotion needs PASS at the last iteration (or
    /// `onInconclusive`).
    Iteration {
        weight: i32,
        iteration: i32,
        iterations: i32,
    },
}

impl Stage {
    /// The status weight the step ran at.
    pub fn weight(self) -> i32 {
        match self {
            Stage::Ramp { weight, .. } | Stage::Iteration { weight, .. } => weight,
        }
    }

    /// (where the run is, where promotion may start) for [`judge::progress`].
    fn position(self) -> (i32, i32) {
        match self {
            Stage::Ramp { weight, max_weight } => (weight, max_weight),
            Stage::Iteration {
                iteration,
                iterations,
                ..
            } => (iteration, iterations),
        }
    }
}

/// Record the step in `status` and judge (§4.6 steps 2–7) at `stage`, then check the absolute
/// `guardrails` on the canary's cumulative counts.
///
/// The guardrail totals take every step the judge judges: recorded (not the baseline step of a
/// first release) and after the warm-up ([`judge::judged_steps`]); past [`step_cap`] steps
/// that are no longer recorded still count there.
pub fn tick(
    status: &mut JudgeStatus,
    obs: &JudgeObservation,
    stage: Stage,
    guardrails: &[Guardrail],
) -> Tick {
    let weight = stage.weight();
    let policy = match &obs.policy {
        Ok(p) => p,
        Err(e) => return Tick::Broken(format!("sequential judge {e}")),
    };
    let count_signals = match &obs.count_signals {
        Ok(c) => c,
        Err(e) => return Tick::Broken(format!("sequential judge: {e}")),
    };
    let sample = match &obs.step {
        Ok(s) => s,
        Err(InputError::Provider(m)) => {
            return Tick::Broken(format!("Metric query failed for sequential judge: {m}"));
        }
        Err(InputError::NoSeries(m)) | Err(InputError::Inconsistent(m)) => {
            return Tick::Broken(m.clone());
        }
        Err(InputError::Incomplete(m)) => {
            if status.window_start.is_none() {
                status.window_start = Some(obs.from);
            }
            return Tick::Deferred(m.clone());
        }
    };
    status.window_start = None;
    let mut skip_step = false;
    let plan = match &status.plan {
        Some(p) => p.clone(),
        None => {
            // The primary's lookback; without one (first release), this step's primary data,
            // and the step is then not judged (§3.5).
            let lookback = match &obs.lookback {
                Some(Ok(lb)) if lb.requests > 0 => lb.as_lookback(),
                Some(Err(InputError::Provider(m))) => {
                    return Tick::Broken(format!("Metric query failed for sequential judge: {m}"));
                }
                _ => {
                    skip_step = true;
                    sample.primary.as_lookback()
                }
            };
            // (no primary traffic yet to set the baseline from: broken until there is)
            match judge::plan_with_counts(policy, &lookback, count_signals) {
                Ok(p) => p,
                Err(e) => return Tick::Broken(format!("sequential judge: {e}")),
            }
        }
    };
    if let Some(m) = count_mismatch(&plan, count_signals, sample) {
        return Tick::Broken(format!("sequential judge: {m}"));
    }
    let counts = |v: &VersionSample, who| v.counts(&plan.edges_ms, who);
    let step = match (
        counts(&sample.canary, "canary"),
        counts(&sample.primary, "primary"),
    ) {
        (Ok(c), Ok(p)) => StepCounts {
            weight,
            canary: c,
            primary: p,
        },
        (Err(e), _) | (_, Err(e)) => return Tick::Broken(format!("sequential judge: {e}")),
    };
    status.plan = Some(plan.clone());
    let ramp = matches!(stage, Stage::Ramp { .. });
    let mut warnings = if ramp {
        share_warnings(policy, &step)
    } else {
        Vec::new()
    };
    // judged iff the warm-up is over before it (`judged_steps` is a suffix of the steps)
    let warmed_up = status
        .steps
        .iter()
        .filter(|s| s.canary.requests > 0)
        .count()
        >= policy.warmup_steps as usize;
    if !skip_step && warmed_up {
        status
            .canary_totals
            .get_or_insert_with(CanaryTotals::default)
            .add(&sample.canary);
    }
    let cap = step_cap(policy);
    let capped = status.steps.len() >= cap;
    if !skip_step && !capped {
        status.steps.push(step);
    }
    let judged = judge::judged_steps(policy, &status.steps);
    // one alphaFail for the run: split over the judge's signals and the guardrails' bounds
    let guard_tests: usize = guardrails.iter().map(|g| g.bounds().tests()).sum();
    let j = judge::evaluate_run(policy, &plan, &status.steps, guard_tests);
    let mut evidence = report::summary(&j, judged);
    if let Some(c) = obs.load_tests.clause(judged) {
        evidence += &format!(" | {c}");
    }
    if capped {
        evidence += &format!(" (step cap {cap} reached: later steps are not recorded or judged)");
    }
    status.verdict = Some(j.verdict.as_str().to_string());
    status.message = Some(evidence.clone());
    if let Some(m) = status.canary_totals.as_ref().and_then(|t| {
        let share = guard_tests as f64 / (guard_tests + plan.signals.len()) as f64;
        breached(t, guardrails, policy.alpha_fail * share)
    }) {
        status.verdict = Some(Verdict::Fail.as_str().to_string());
        status.message = Some(format!("{m}; judge: {evidence}"));
        return Tick::Breached(m);
    }
    let (at, promote_at) = stage.position();
    let mut progress =
        judge::progress(policy, j.verdict, at, promote_at, status.steps.len() as u32);
    if ramp && starved(&status.steps) && progress == Progress::Advance {
        warnings.push(format!(
            "canary got no requests for {STARVED_STEPS} steps while the primary did: router not honouring weight {weight}%; holding"
        ));
        progress = Progress::Hold;
    }
    if capped && j.verdict == Verdict::Continue {
        // no new evidence can come: the run is inconclusive whatever the weight
        progress = Progress::Inconclusive(policy.on_inconclusive);
    }
    Tick::Judged {
        verdict: j.verdict,
        progress,
        evidence,
        warnings,
    }
}

/// Why the step's count-signal events do not fit the frozen `plan`: the declared signals are
/// not the plan's (a MetricTemplate or `analysis.metrics` changed during the run), or a
/// version's events are not one per signal. `None` when they fit.
pub fn count_mismatch(
    plan: &Plan,
    declared: &[CountSignal],
    sample: &StepSample,
) -> Option<String> {
    let planned: Vec<&str> = plan
        .signals
        .iter()
        .filter(|s| matches!(s.kind, SignalKind::Count { .. }))
        .map(|s| s.name.as_str())
        .collect();
    let now: Vec<&str> = declared.iter().map(|c| c.name.as_str()).collect();
    if planned != now {
        return Some(format!(
            "the count signals changed during the run: judged {planned:?}, declared now {now:?}; restart the analysis"
        ));
    }
    for (v, who) in [(&sample.canary, "canary"), (&sample.primary, "primary")] {
        if v.counts.len() != now.len() {
            return Some(format!(
                "{} count signal events for the {who}, {} signals declared",
                v.counts.len(),
                now.len()
            ));
        }
    }
    None
}

/// The canary's requests the router sent: all but the counted load tests, which reach the
/// canary Service directly whatever the weight.
fn routed(step: &StepCounts) -> u64 {
    let c = &step.canary;
    c.requests - c.load_test.unwrap_or(0).min(c.requests)
}

/// Measured canary share of the step against the configured weight (§1): a Warning when they
/// differ by more than `shareTolerance` pp (with at least 20 requests in the step). Counted
/// load-test requests are left out: the router did not send them.
pub fn share_warnings(policy: &Policy, step: &StepCounts) -> Vec<String> {
    let canary = routed(step);
    let n = canary + step.primary.requests;
    if n < 20 {
        return Vec::new();
    }
    let share = 100.0 * canary as f64 / n as f64;
    if (share - step.weight as f64).abs() > policy.share_tolerance {
        vec![format!(
            "measured canary traffic share {share:.1}% differs from the configured weight {}% by more than {}pp",
            step.weight, policy.share_tolerance
        )]
    } else {
        Vec::new()
    }
}

fn starved(steps: &[StepCounts]) -> bool {
    steps.len() >= STARVED_STEPS
        && steps[steps.len() - STARVED_STEPS..]
            .iter()
            .all(|s| s.weight > 0 && routed(s) == 0 && s.primary.requests > 20)
}

/// The wording of an inconclusive end.
pub fn inconclusive_message(status: &JudgeStatus, on: OnInconclusive) -> String {
    let what = match on {
        OnInconclusive::Hold => "holding (onInconclusive: hold)",
        OnInconclusive::Rollback => "rolling back (onInconclusive: rollback)",
        OnInconclusive::Promote => "promoting (onInconclusive: promote)",
    };
    format!(
        "not enough evidence after {} steps, {what}: {}",
        status.steps.len(),
        status.message.as_deref().unwrap_or_default()
    )
}

/// With `weights: adaptive` (and a frozen plan), the canary weight after a judged step at
/// `current` (issue 19; [`weights`]): `ladder` the user's weights up to `maxWeight`
/// ([`weights::ladder`] of Flagger's `nextStepWeight`), `fixed_next` the fixed schedule's
/// next weight (`current` when the judge holds). Worst-case excess from the judged steps,
/// traffic from the recorded ones, suspicion from each signal's current FAIL e-value at the
/// level the run's FAIL tests share (`other_tests`: the guardrails' bounds). `None` with
/// fixed weights or before a plan.
pub fn adaptive_next(
    status: &JudgeStatus,
    policy: &Policy,
    ladder: &[i32],
    current: i32,
    fixed_next: i32,
    other_tests: usize,
) -> Option<weights::Choice> {
    if policy.weights != Weights::Adaptive {
        return None;
    }
    let plan = status.plan.as_ref()?;
    let judged = judge::judged_steps(policy, &status.steps);
    let exposures = weights::exposures(&plan.signals, judged);
    let th = judge::thresholds(policy, plan.signals.len() + other_tests);
    let ln_fail = plan.signals.iter().map(|s| {
        let mut p = judge::Process::new(s);
        for step in judged {
            p.push(judge::Table::of(s, step));
        }
        p.ln_e_fail()
    });
    Some(weights::choose(
        policy,
        ladder,
        current,
        fixed_next,
        weights::worst_excess(&plan.signals, &exposures),
        weights::interval_requests(&status.steps),
        weights::suspicious(ln_fail, th.0),
    ))
}

/// Judge a whole recorded release for `replay`/`analyze`: the plan plus steps, evaluated after
/// each step with the progression, without the Kubernetes machine.
pub fn verdicts(policy: &Policy, plan: &Plan, steps: &[StepCounts]) -> Vec<judge::Judgement> {
    (1..=steps.len())
        .map(|k| judge::evaluate_run(policy, plan, &steps[..k], 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAMP_10: Stage = Stage::Ramp {
        weight: 10,
        max_weight: 50,
    };

    fn sample(nc: u64, xc: u64, np: u64, xp: u64) -> StepSample {
        let v = |n, x| VersionSample {
            requests: n,
            errors: x,
            buckets: vec![(100.0, n / 2), (250.0, n * 9 / 10)],
            timed: n,
            pods: Vec::new(),
            counts: Vec::new(),
            load_test: None,
        };
        StepSample {
            canary: v(nc, xc),
            primary: v(np, xp),
        }
    }

    fn obs(step: StepSample) -> JudgeObservation {
        JudgeObservation {
            policy: Ok(Policy::default()),
            step: Ok(step),
            lookback: Some(Ok(sample(0, 0, 100_000, 1_000).primary)),
            from: 0,
            count_signals: Ok(Vec::new()),
            load_tests: LoadTests::None,
        }
    }

    /// [`obs`] with one declared count signal `jobs`: canary `jc` bad of `nc_jobs`, primary
    /// `jp` of `np_jobs` in the step; the lookback's primary 0.5 % bad.
    fn obs_jobs(step: StepSample, jobs: [(u64, u64); 2]) -> JudgeObservation {
        use crate::api::EventCounts;
        let mut step = step;
        step.canary.counts = vec![EventCounts {
            bad: jobs[0].0,
            total: jobs[0].1,
        }];
        step.primary.counts = vec![EventCounts {
            bad: jobs[1].0,
            total: jobs[1].1,
        }];
        let mut lookback = sample(0, 0, 100_000, 1_000).primary;
        lookback.counts = vec![EventCounts {
            bad: 100,
            total: 20_000,
        }];
        JudgeObservation {
            step: Ok(step),
            lookback: Some(Ok(lookback)),
            count_signals: Ok(vec![CountSignal {
                name: "jobs".into(),
                tolerance_pp: None,
            }]),
            ..obs(sample(0, 0, 0, 0))
        }
    }

    #[test]
    fn a_regression_in_a_declared_count_signal_fails_while_the_builtins_pass() {
        // requests: canary and primary both 1 % errors, same latency; jobs: canary 5 % failed
        // against the primary's 0.5 %
        let mut st = JudgeStatus::default();
        let mut last = None;
        for _ in 0..8 {
            let t = tick(
                &mut st,
                &obs_jobs(sample(3000, 30, 27000, 270), [(25, 500), (23, 4500)]),
                RAMP_10,
                &[],
            );
            if matches!(
                t,
                Tick::Judged {
                    verdict: Verdict::Fail,
                    ..
                }
            ) {
                last = Some(t);
                break;
            }
            last = Some(t);
        }
        let Some(Tick::Judged {
            verdict,
            progress,
            evidence,
            ..
        }) = last
        else {
            panic!("{last:?}")
        };
        assert_eq!((verdict, progress), (Verdict::Fail, Progress::Rollback));
        let plan = st.plan.as_ref().unwrap();
        let names: Vec<&str> = plan.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["errors", "latency>100ms", "latency>250ms", "jobs"]);
        assert_eq!(plan.signals[3].kind, SignalKind::Count { index: 0 });
        assert!((plan.signals[3].baseline - 0.005).abs() < 1e-12);
        // the report names the signal that failed, and only it
        let clauses: Vec<&str> = evidence.split(" | ").collect();
        assert!(clauses[3].starts_with("jobs: canary "), "{evidence}");
        assert!(clauses[3].ends_with("→ rollback"), "{evidence}");
        assert!(
            clauses[..3].iter().all(|c| !c.ends_with("→ rollback")),
            "{evidence}"
        );
        let j = judge::evaluate(
            &Policy::default(),
            &plan.signals,
            judge::judged_steps(&Policy::default(), &st.steps),
        );
        let verdicts: Vec<Verdict> = j.signals.iter().map(|s| s.verdict).collect();
        assert_eq!(verdicts[3], Verdict::Fail);
        assert!(
            verdicts[..3].iter().all(|v| *v != Verdict::Fail),
            "{verdicts:?}"
        );
        // the steps keep the events for replay
        assert_eq!(st.steps[0].canary.counts[0].total, 500);
    }

    #[test]
    fn invalid_or_changed_count_declarations_break_the_judge() {
        let mut st = JudgeStatus::default();
        let o = JudgeObservation {
            count_signals: Err(
                "MetricTemplate test/jobs (metric jobs): annotation judge.pennant.dev/total is missing or empty".into(),
            ),
            ..obs(sample(3000, 30, 27000, 270))
        };
        let Tick::Broken(m) = tick(&mut st, &o, RAMP_10, &[]) else {
            panic!()
        };
        assert_eq!(
            m,
            "sequential judge: MetricTemplate test/jobs (metric jobs): annotation judge.pennant.dev/total is missing or empty"
        );
        assert!(st.steps.is_empty() && st.plan.is_none());
        // the plan is frozen with `jobs`; the template loses its declaration mid-run
        let t = tick(
            &mut st,
            &obs_jobs(sample(3000, 30, 27000, 270), [(1, 300), (9, 2700)]),
            RAMP_10,
            &[],
        );
        assert!(matches!(t, Tick::Judged { .. }), "{t:?}");
        let Tick::Broken(m) = tick(&mut st, &obs(sample(3000, 30, 27000, 270)), RAMP_10, &[])
        else {
            panic!()
        };
        assert!(
            m.contains(
                "the count signals changed during the run: judged [\"jobs\"], declared now []"
            ),
            "{m}"
        );
        assert_eq!(st.steps.len(), 1);
    }

    #[test]
    fn a_bad_canary_rolls_back_with_evidence() {
        let mut st = JudgeStatus::default();
        let mut last = None;
        for _ in 0..6 {
            last = Some(tick(
                &mut st,
                &obs(sample(3000, 90, 27000, 270)),
                RAMP_10,
                &[],
            ));
        }
        let Some(Tick::Judged {
            verdict,
            progress,
            evidence,
            ..
        }) = last
        else {
            panic!("{last:?}")
        };
        assert_eq!((verdict, progress), (Verdict::Fail, Progress::Rollback));
        assert!(evidence.starts_with("errors: canary "), "{evidence}");
        assert!(evidence.contains("FAIL evidence"), "{evidence}");
        assert_eq!(st.steps.len(), 6);
        assert_eq!(st.plan.as_ref().unwrap().edges_ms, [100.0, 250.0]);
    }

    #[test]
    fn missing_edge_and_provider_errors_break_the_judge() {
        let mut st = JudgeStatus::default();
        let mut s = sample(3000, 30, 27000, 270);
        s.canary.buckets.retain(|(le, _)| *le != 250.0);
        let Tick::Broken(m) = tick(&mut st, &obs(s), RAMP_10, &[]) else {
            panic!()
        };
        assert!(
            m.contains("latency>250ms: the canary's histogram has no bucket"),
            "{m}"
        );
        assert!(st.steps.is_empty());
        let o = JudgeObservation {
            step: Err(InputError::NoSeries(
                "errors: no istio_requests_total series for canary podinfo".into(),
            )),
            ..obs(sample(1, 0, 1, 0))
        };
        assert_eq!(
            tick(&mut st, &o, RAMP_10, &[]),
            Tick::Broken("errors: no istio_requests_total series for canary podinfo".into())
        );
        let o = JudgeObservation {
            policy: Err("policy: errorTolerance 0 out of range (0, 50] pp".into()),
            ..obs(sample(1, 0, 1, 0))
        };
        let Tick::Broken(m) = tick(&mut st, &o, RAMP_10, &[]) else {
            panic!()
        };
        assert!(m.contains("errorTolerance"), "{m}");
    }

    #[test]
    fn a_router_ignoring_weights_is_caught() {
        let mut st = JudgeStatus::default();
        let mut warned = false;
        let mut progress = None;
        for _ in 0..4 {
            if let Tick::Judged {
                warnings,
                progress: p,
                ..
            } = tick(
                &mut st,
                &obs(sample(0, 0, 6000, 60)),
                Stage::Ramp {
                    weight: 20,
                    max_weight: 50,
                },
                &[],
            ) {
                warned |= warnings
                    .iter()
                    .any(|w| w.contains("measured canary traffic share 0.0%"));
                progress = Some(p);
            }
        }
        assert!(warned);
        assert_eq!(progress, Some(Progress::Hold));
    }

    #[test]
    fn policy_parses_with_defaults_and_rejects_out_of_range() {
        let p = parse_policy("errorTolerance: 1\nonInconclusive: rollback\n").unwrap();
        assert_eq!(p.error_tolerance, 1.0);
        assert_eq!(p.on_inconclusive, OnInconclusive::Rollback);
        assert_eq!(p.alpha_fail, 0.01);
        let e = parse_policy("latencyTolerance: -3").unwrap_err();
        assert!(e.contains("latencyTolerance -3 out of range"), "{e}");
    }

    fn guard(name: &str, min: Option<f64>, max: Option<f64>) -> Vec<Guardrail> {
        let a: CanaryAnalysis = serde_json::from_value(serde_json::json!({
            "metrics": [
                {"name": name, "thresholdRange": {"min": min, "max": max}},
                // a templated metric of the same name and a builtin without a threshold
                // are not guardrails
                {"name": name, "templateRef": {"name": "t"}, "thresholdRange": {"max": 1}},
                {"name": if name == "request-duration" { "request-success-rate" } else { "request-duration" }},
            ]
        }))
        .unwrap();
        let g = guardrails(&a);
        assert_eq!(g.len(), 1, "{g:?}");
        g
    }

    #[test]
    fn success_rate_guardrail_breaches_on_cumulative_counts_after_warmup() {
        // both versions fail 3.3 %: the judge sees no difference, the absolute SLO does
        let g = guard("request-success-rate", Some(99.0), None);
        let mut st = JudgeStatus::default();
        let at = |weight| Stage::Ramp {
            weight,
            max_weight: 50,
        };
        // step 1 is the warm-up: not counted
        let t = tick(&mut st, &obs(sample(30, 1, 270, 9)), at(10), &g);
        assert!(matches!(t, Tick::Judged { .. }), "{t:?}");
        assert_eq!(st.canary_totals, None);
        // 30 then 60 requests, 2 errors: 96.67 % < 99 % observed, but 2 errors in 60 are no
        // evidence against 99 % (Flagger's rule, and pennant's before, rolled back here)
        for weight in [20, 30] {
            let t = tick(&mut st, &obs(sample(30, 1, 270, 9)), at(weight), &g);
            assert!(matches!(t, Tick::Judged { .. }), "{t:?}");
        }
        assert_eq!(st.canary_totals.as_ref().unwrap().requests, 60);
        // 1260 requests, 42 errors: the same 3.33 %, now evidence
        let t = tick(&mut st, &obs(sample(1200, 40, 10800, 360)), at(40), &g);
        let Tick::Breached(m) = t else {
            panic!("{t:?}")
        };
        assert!(
            m.starts_with(
                "absolute SLO breached: success rate 96.67% < 99% over 1260 canary requests (evidence 10^"
            ) && m.ends_with(" ≥ 10^2.6 needed)"),
            "{m}"
        );
        // (one bound beside 3 signals: the guardrail gets ¼ of alphaFail, 4/0.01 = 10^2.6)
        assert_eq!(st.verdict.as_deref(), Some("FAIL"));
        // a max on the success rate is a bound too (Flagger's range semantics), mirrored:
        // evidence that the error rate is below 1 − max/100
        let mut st = JudgeStatus::default();
        let g = guard("request-success-rate", None, Some(50.0));
        let mut last = None;
        for _ in 0..3 {
            last = Some(tick(&mut st, &obs(sample(30, 0, 270, 0)), at(10), &g));
        }
        let Some(Tick::Breached(m)) = last else {
            panic!("{last:?}")
        };
        assert!(m.contains("success rate 100.00% > 50%"), "{m}");
    }

    #[test]
    fn duration_guardrail_judges_the_p99_of_the_cumulative_histogram() {
        let step = || {
            let v = |k: u64| VersionSample {
                requests: 100 * k,
                errors: 0,
                buckets: vec![(100.0, 90 * k), (250.0, 95 * k), (500.0, 99 * k + k / 2)],
                timed: 100 * k,
                pods: Vec::new(),
                counts: Vec::new(),
                load_test: None,
            };
            StepSample {
                canary: v(100),
                primary: v(900),
            }
        };
        // cumulative over 2 judged steps: 20000 requests, rank 19800 in (250, 500]:
        // 250 + 250·(19800 − 19000)/(19900 − 19000) = 472.2 ms
        let run = |g: &[Guardrail]| {
            let mut st = JudgeStatus::default();
            (0..3)
                .map(|_| {
                    tick(
                        &mut st,
                        &obs(step()),
                        Stage::Ramp {
                            weight: 10,
                            max_weight: 50,
                        },
                        g,
                    )
                })
                .last()
                .unwrap()
        };
        // slower than 250 ms (an edge): 20000 − 19000 = 1000 (5 %)
        let Tick::Breached(m) = run(&guard("request-duration", None, Some(250.0))) else {
            panic!()
        };
        assert!(
            m.starts_with(
                "absolute SLO breached: request duration 472ms > 250ms (p99) over 20000 canary requests (evidence 10^"
            ),
            "{m}"
        );
        // 400 ms is inside (250, 500]: counted at 500, 100 slower (0.5 %): no evidence
        assert!(matches!(
            run(&guard("request-duration", None, Some(400.0))),
            Tick::Judged { .. }
        ));
        assert!(matches!(
            run(&guard("request-duration", None, Some(480.0))),
            Tick::Judged { .. }
        ));
        // mirrored: 19900 of 20000 (99.5 %) no slower than 500 ms
        let Tick::Breached(m) = run(&guard("request-duration", Some(500.0), None)) else {
            panic!()
        };
        assert!(m.contains("request duration 472ms < 500ms (p99)"), "{m}");
    }

    fn totals(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> CanaryTotals {
        CanaryTotals {
            requests,
            errors,
            timed: if buckets.is_empty() { 0 } else { requests },
            buckets: buckets
                .iter()
                .map(|&(le_ms, count)| crate::api::judge::Bucket { le_ms, count })
                .collect(),
            steps: 1,
        }
    }

    #[test]
    fn a_success_rate_breach_needs_evidence_not_one_unlucky_error() {
        let g = guard("request-success-rate", Some(99.0), None);
        let b = |n, x| breached(&totals(n, x, &[]), &g, 0.01);
        // 1 error in 50: 98 % < 99 % observed, no evidence
        assert_eq!(b(50, 1), None);
        assert_eq!(b(100, 3), None);
        // 30 in 1000
        assert_eq!(
            b(1000, 30).as_deref(),
            Some(
                "absolute SLO breached: success rate 97.00% < 99% over 1000 canary requests (evidence 10^4.9 ≥ 10^2.0 needed)"
            )
        );
        // a canary at exactly the SLO, or just under it, over 100 000 requests
        assert_eq!(b(100_000, 1000), None);
        assert_eq!(b(100_000, 1010), None);
        assert_eq!(b(100_000, 500), None);
        // alphaFail is split over the guardrails' bounds: two tests need 10^2.3
        let mut two = g.clone();
        two.extend(guard("request-duration", None, Some(500.0)));
        let m = breached(&totals(1000, 30, &[]), &two, 0.01).unwrap();
        assert!(m.ends_with("(evidence 10^4.9 ≥ 10^2.3 needed)"), "{m}");
        // min 100: a single error is certain evidence
        let g100 = guard("request-success-rate", Some(100.0), None);
        let m = breached(&totals(10, 1, &[]), &g100, 0.01).unwrap();
        assert!(m.ends_with("(evidence unbounded ≥ 10^2.0 needed)"), "{m}");
        assert_eq!(breached(&totals(10, 0, &[]), &g100, 0.01), None);
    }

    #[test]
    fn a_duration_breach_needs_evidence_counted_from_the_histogram() {
        let g = guard("request-duration", None, Some(500.0));
        let b = |n, buckets: &[(f64, u64)]| breached(&totals(n, 0, buckets), &g, 0.01);
        // 1 of 50 slower than 500 ms (an edge): p99 750 ms > 500 ms observed, no evidence
        assert_eq!(b(50, &[(100.0, 49), (500.0, 49), (1000.0, 50)]), None);
        // 30 of 1000: p99 833 ms
        let m = b(1000, &[(100.0, 900), (500.0, 970), (1000.0, 1000)]).unwrap();
        assert!(
            m.starts_with(
                "absolute SLO breached: request duration 833ms > 500ms (p99) over 1000 canary requests (evidence 10^4.9"
            ),
            "{m}"
        );
        // exactly 1 % slower, and 1.01 % (p99 504 ms > 500 ms), over 100 000
        assert_eq!(b(100_000, &[(500.0, 99_000), (1000.0, 100_000)]), None);
        assert_eq!(b(100_000, &[(500.0, 98_990), (1000.0, 100_000)]), None);
        // max 750 inside (500, 1000]: counted at the edge above (1000), where nothing is
        // slower, so bucketing manufactures no evidence however many requests; at the edge
        // 500 the same shape breaches
        let g = guard("request-duration", None, Some(750.0));
        let b = |n, buckets: &[(f64, u64)]| breached(&totals(n, 0, buckets), &g, 0.01);
        assert_eq!(b(1000, &[(100.0, 900), (500.0, 970), (1000.0, 1000)]), None);
        assert_eq!(
            b(10_000, &[(100.0, 9000), (500.0, 9700), (1000.0, 10_000)]),
            None
        );
        let g = guard("request-duration", None, Some(500.0));
        let t = totals(10_000, 0, &[(100.0, 9000), (500.0, 9700), (1000.0, 10_000)]);
        assert!(breached(&t, &g, 0.01).is_some());
    }

    #[test]
    fn a_canary_at_the_slo_rarely_breaches_where_the_observed_rule_nearly_always_did() {
        use rand::{SeedableRng, rngs::StdRng};
        use rand_distr::{Binomial, Distribution};
        // true error rate exactly 1 %, SLO 99 %: 100 runs of 50 ticks of 1000 requests,
        // judged on the cumulative counts every tick
        let g = guard("request-success-rate", Some(99.0), None);
        let mut rng = StdRng::seed_from_u64(20260404);
        let (mut breaches, mut observed) = (0, 0);
        for _ in 0..100 {
            let mut t = CanaryTotals::default();
            let (mut b, mut o) = (false, false);
            for _ in 0..50 {
                let x = Binomial::new(1000, 0.01).unwrap().sample(&mut rng);
                t.add(&VersionSample {
                    requests: 1000,
                    errors: x,
                    ..Default::default()
                });
                b |= breached(&t, &g, 0.01).is_some();
                o |= t.success_rate().unwrap() < 99.0;
            }
            breaches += b as u32;
            observed += o as u32;
        }
        // ≤ α = 1 % per run in expectation (Ville); the observed rule alone fails most runs
        assert!(breaches <= 3, "{breaches}");
        assert!(observed >= 80, "{observed}");
    }

    #[test]
    fn a_histogram_that_disagrees_with_the_counter_breaks_the_judge() {
        let mut st = JudgeStatus::default();
        let o = JudgeObservation {
            step: Err(InputError::Inconsistent(
                "latency: the canary's histogram h counts 512 requests (+Inf bucket) but its request counter c 1034".into(),
            )),
            ..obs(sample(1, 0, 1, 0))
        };
        let Tick::Broken(m) = tick(
            &mut st,
            &o,
            Stage::Ramp {
                weight: 10,
                max_weight: 50,
            },
            &[],
        ) else {
            panic!()
        };
        assert!(m.starts_with("latency: the canary's histogram"), "{m}");
        assert!(st.steps.is_empty());
    }

    #[test]
    fn steps_stop_growing_at_the_cap_and_the_run_is_inconclusive() {
        let policy = Policy {
            max_steps: 3,
            ..Policy::default()
        };
        let cap = step_cap(&policy);
        assert_eq!(cap, 12);
        let g = guard("request-success-rate", Some(90.0), None);
        let mut st = JudgeStatus::default();
        let mut sizes = Vec::new();
        let mut last = None;
        for _ in 0..cap + 10 {
            let o = JudgeObservation {
                policy: Ok(policy.clone()),
                ..obs(sample(10, 0, 90, 1))
            };
            // below maxWeight: without the cap, CONTINUE would advance forever
            last = Some(tick(
                &mut st,
                &o,
                Stage::Ramp {
                    weight: 10,
                    max_weight: 50,
                },
                &g,
            ));
            sizes.push(serde_json::to_string(&st).unwrap().len());
        }
        assert_eq!(st.steps.len(), cap);
        // the status stops growing once capped (the totals' counters may gain a digit)
        assert!(sizes[cap - 1] > sizes[cap - 2], "{sizes:?}");
        assert!(sizes[cap + 9] <= sizes[cap] + 8, "{sizes:?}");
        // the guardrail totals still count the steps past the cap
        assert_eq!(st.canary_totals.as_ref().unwrap().steps as usize, cap + 9);
        let Some(Tick::Judged {
            verdict, progress, ..
        }) = last
        else {
            panic!("{last:?}")
        };
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(progress, Progress::Inconclusive(OnInconclusive::Hold));
        let m = st.message.as_deref().unwrap();
        assert!(m.contains("step cap 12 reached"), "{m}");
        assert!(
            inconclusive_message(&st, OnInconclusive::Hold)
                .contains("not enough evidence after 12 steps")
        );
        let e = parse_policy("maxSteps: 251").unwrap_err();
        assert!(e.contains("maxSteps 251 out of range [1, 250]"), "{e}");
    }

    #[test]
    fn guardrails_and_the_judge_share_one_alpha_fail() {
        // 3 judged signals (errors, latency>100ms, latency>250ms); with a success-rate floor
        // the judge's FAIL level is 4/0.01 (10^2.6), not 3/0.01 (10^2.5)
        let needed = |g: &[Guardrail]| {
            let mut st = JudgeStatus::default();
            let mut last = None;
            for _ in 0..2 {
                last = Some(tick(
                    &mut st,
                    &obs(sample(300, 3, 2700, 27)),
                    Stage::Ramp {
                        weight: 10,
                        max_weight: 50,
                    },
                    g,
                ));
            }
            let Some(Tick::Judged { evidence, .. }) = last else {
                panic!("{last:?}")
            };
            evidence
        };
        assert!(needed(&[]).contains("of 10^2.5 needed"), "{}", needed(&[]));
        let g = guard("request-success-rate", Some(99.0), None);
        assert!(needed(&g).contains("of 10^2.6 needed"), "{}", needed(&g));
    }

    fn hook(type_: Option<&str>, url: &str) -> serde_json::Value {
        serde_json::json!({"name": url, "type": type_, "url": url})
    }

    #[test]
    fn load_test_workloads_are_the_hosts_of_load_generating_hooks_unless_the_policy_names_them() {
        let a: CanaryAnalysis = serde_json::from_value(serde_json::json!({
            "webhooks": [
                hook(Some("rollout"), "http://flagger-loadtester.test/"),
                hook(Some("pre-rollout"), "http://flagger-loadtester.test.svc.cluster.local:80/"),
                // no type is a rollout hook (Flagger)
                hook(None, "http://K6-Runner.load/run"),
                // gates, notifications and an IP address generate no load a source label names
                hook(Some("confirm-rollout"), "http://gatekeeper.test/gate/check"),
                hook(Some("event"), "http://events.test/"),
                hook(Some("rollout"), "http://10.0.0.7:8080/"),
                hook(Some("rollout"), "not a url"),
            ]
        }))
        .unwrap();
        let p = Policy::default();
        assert_eq!(
            load_test_workloads(Some(&a), &p),
            vec!["flagger-loadtester".to_string(), "k6-runner".to_string()]
        );
        assert_eq!(load_test_workloads(None, &p), Vec::<String>::new());
        // the policy wins, `[]` turning the derivation off
        let named = parse_policy("loadTestWorkloads: [locust-master]").unwrap();
        assert_eq!(load_test_workloads(Some(&a), &named), vec!["locust-master"]);
        let off = parse_policy("loadTestWorkloads: []").unwrap();
        assert!(load_test_workloads(Some(&a), &off).is_empty());
        let e = parse_policy("loadTestWorkloads: [\"Bad Name\"]").unwrap_err();
        assert!(
            e.contains("loadTestWorkloads: \"Bad Name\" is not a workload name"),
            "{e}"
        );
        assert_eq!(host_workload("http://[::1]:9898/"), None);
        assert_eq!(
            host_workload("https://flagger-loadtester/"),
            Some("flagger-loadtester".into())
        );
        // counted where the series name the source, unknown elsewhere, nothing without workloads
        let w = vec!["flagger-loadtester".to_string()];
        assert_eq!(
            LoadTests::of("istio", w.clone()),
            LoadTests::Counted(w.clone())
        );
        assert_eq!(
            LoadTests::of("nginx", w.clone()),
            LoadTests::Unknown {
                provider: "nginx".into(),
                workloads: w.clone()
            }
        );
        assert_eq!(LoadTests::of("istio", Vec::new()), LoadTests::None);
        assert!(LoadTests::of("nginx", w).counted().is_empty());
    }

    #[test]
    fn the_report_names_the_share_of_the_judged_canary_requests_from_load_tests() {
        let lt = |load: u64, loads: LoadTests| {
            let mut s = sample(1000, 10, 9000, 90);
            s.canary.load_test = loads.counted().first().map(|_| load);
            JudgeObservation {
                load_tests: loads,
                ..obs(s)
            }
        };
        let counted = LoadTests::Counted(vec!["flagger-loadtester".into()]);
        let mut st = JudgeStatus::default();
        // the warm-up step (all load test) is not evidence, so not in the share
        for load in [1000, 380] {
            tick(&mut st, &lt(load, counted.clone()), RAMP_10, &[]);
        }
        let loads: Vec<Option<u64>> = st.steps.iter().map(|s| s.canary.load_test).collect();
        assert_eq!(loads, vec![Some(1000), Some(380)]);
        let m = st.message.as_deref().unwrap();
        assert!(
            m.ends_with(" | 38% of the canary's requests from load tests (flagger-loadtester)"),
            "{m}"
        );
        // 380 + 20 of 2000
        tick(&mut st, &lt(20, counted), RAMP_10, &[]);
        let m = st.message.as_deref().unwrap();
        assert!(
            m.contains(" | 20% of the canary's requests from load tests"),
            "{m}"
        );
        // series without a source label: unknown, said, never guessed
        let unknown = LoadTests::of("nginx", vec!["flagger-loadtester".into()]);
        let mut st = JudgeStatus::default();
        for _ in 0..2 {
            tick(&mut st, &lt(380, unknown.clone()), RAMP_10, &[]);
        }
        assert!(st.steps.iter().all(|s| s.canary.load_test.is_none()));
        let m = st.message.as_deref().unwrap();
        assert!(
            m.ends_with(" | share of the canary's requests from load tests (flagger-loadtester) unknown: provider nginx's series do not name a request's source"),
            "{m}"
        );
        // no load tests: no clause
        let mut st = JudgeStatus::default();
        for _ in 0..2 {
            tick(&mut st, &lt(380, LoadTests::None), RAMP_10, &[]);
        }
        assert!(!st.message.unwrap().contains("load tests"));
    }

    #[test]
    fn load_test_requests_are_not_the_routers_share_of_the_traffic() {
        use crate::api::VersionCounts;
        let step = |canary: u64, load: Option<u64>| StepCounts {
            weight: 10,
            canary: VersionCounts {
                requests: canary,
                load_test: load,
                ..Default::default()
            },
            primary: VersionCounts {
                requests: 2700,
                ..Default::default()
            },
        };
        let p = Policy::default();
        // 1300 of 4000 (32.5 %) reach the canary, 1000 of them from the load tester: the
        // router sent 300 of 3000, the configured 10 %
        assert_eq!(
            share_warnings(&p, &step(1300, Some(1000))),
            Vec::<String>::new()
        );
        let w = share_warnings(&p, &step(1300, None));
        assert!(
            w[0].contains("measured canary traffic share 32.5%"),
            "{w:?}"
        );
        // a canary that only the load tester reaches is starved of routed traffic
        assert!(starved(&[
            step(300, Some(300)),
            step(300, Some(300)),
            step(300, Some(300))
        ]));
        assert!(!starved(&[
            step(300, Some(300)),
            step(300, Some(300)),
            step(300, Some(200))
        ]));
        assert!(!starved(&[
            step(300, None),
            step(300, None),
            step(300, None)
        ]));
    }
}
