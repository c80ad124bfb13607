//! pennant's sequential-judge status block (`Canary.status.judge`): everything the judge needs
//! to resume after a restart or to replay a release. Plain data: the judge (`analysis::judge`)
//! computes with these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a signal counts as an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum SignalKind {
    /// 5xx responses among requests.
    Errors,
    /// Requests slower than `edgeMs`; `index` into [`VersionCounts::slow`].
    Slower { edge_ms: f64, index: usize },
    /// Bad events among the events of a MetricTemplate declared as a count signal
    /// (`analysis::count_metric`); `index` into [`VersionCounts::counts`].
    Count { index: usize },
}

/// One judged signal with its frozen hypotheses (log odds ratios, canary vs primary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// `errors` or `latency>250ms`.
    pub name: String,
    /// `{kind: errors}` or `{kind: slower, edgeMs: 250, index: 0}`.
    #[schemars(schema_with = "crate::api::preserve_unknown_object")]
    pub kind: SignalKind,
    /// The primary's event probability in the lookback the hypotheses were set from.
    pub baseline: f64,
    /// β_F: FAIL rejects "β ≤ β_F".
    pub beta_fail: f64,
    /// β_P: PASS rejects "β ≥ β_P".
    pub beta_pass: f64,
    /// errors only, with `trackRate`: the tolerance δ as a probability; the hypotheses are then
    /// re-derived at each step's event rate ([`Signal::hypotheses`]). Absent: β_F and β_P hold
    /// for every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// The policy's over-dispersion factor φ (`Policy::dispersion`); absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
}

/// One version's counts in one step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCounts {
    /// Requests served.
    pub requests: u64,
    /// 5xx responses.
    pub errors: u64,
    /// Requests in the latency histogram (its `+Inf` bucket).
    #[serde(default)]
    pub timed: u64,
    /// Requests slower than each judged latency edge, in [`Plan::edges_ms`] order.
    #[serde(default)]
    pub slow: Vec<u64>,
    /// Events of each count signal declared by a MetricTemplate, in the order of the plan's
    /// [`SignalKind::Count`] signals (`analysis::count_metric`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<EventCounts>,
    /// Of `requests`, those sent by load tests (the load-test workloads named in the series'
    /// source label, `canary::judged::LoadTests`). Canary only, and only where the series
    /// name the source (Istio's `source_workload`); absent: not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_test: Option<u64>,
}

/// One version's events of a count signal in one step (or a lookback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    /// Bad events (the `judge.pennant.dev/bad` series' increase).
    pub bad: u64,
    /// All events (the `judge.pennant.dev/total` series' increase).
    pub total: u64,
}

/// One analysis step's counts: what the status keeps and replay reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepCounts {
    /// Configured canary weight during the step, percent.
    pub weight: i32,
    pub canary: VersionCounts,
    pub primary: VersionCounts,
}

/// The signals to judge and the latency edges to count, frozen at the start of the analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub signals: Vec<Signal>,
    /// Latency edges whose slow counts [`VersionCounts::slow`] holds, ms.
    pub edges_ms: Vec<f64>,
    /// The final look's horizon and share of `alphaPass`, frozen with the plan so that a policy
    /// edited during the run cannot add a look or move it; unset when the run has none
    /// (`analysis::judge::final_look`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_look: Option<FinalLookPlan>,
}

/// The final look of a run: once `maxSteps` steps are recorded, one test of every judged step
/// at `alphaPass · share`; the PASS e-processes get `alphaPass · (1 − share)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FinalLookPlan {
    /// Recorded steps at which the look is taken (the policy's `maxSteps` when frozen).
    pub max_steps: u32,
    /// Share of `alphaPass` it spends (`finalLookShare`), in (0, 0.9].
    pub share: f64,
}

/// One cumulative latency bucket: requests no slower than `leMs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Upper edge, ms.
    pub le_ms: f64,
    /// Requests no slower than the edge.
    pub count: u64,
}

/// The canary's counts summed over the judged steps of the run (those after the warm-up, as
/// `analysis::judge::judged_steps` picks them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryTotals {
    /// Requests served.
    pub requests: u64,
    /// 5xx responses.
    pub errors: u64,
    /// Requests in the latency histogram (its `+Inf` bucket).
    #[serde(default)]
    pub timed: u64,
    /// Cumulative histogram, ascending finite edges: only the edges every added step had
    /// (a step without an edge cannot say how many of its requests were below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<Bucket>,
    /// Steps added.
    #[serde(default)]
    pub steps: u32,
}

/// The judge's memory for the current run. Reset with the run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgeStatus {
    /// Signals and latency edges, frozen at the run's first judged step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// One entry per completed analysis step, oldest first. At most 4 × `maxSteps`: past
    /// that cap steps are no longer recorded or judged (`judged::step_cap`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepCounts>,
    /// The canary's counts summed over the judged steps (after the warm-up), for the absolute
    /// guardrails kept from the builtin `request-success-rate` / `request-duration` (§4.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_totals: Option<CanaryTotals>,
    /// Start (Unix seconds) of the step being collected when earlier ticks were deferred by a
    /// scrape gap; the next tick's counts cover it too (§3.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<i64>,
    /// `PASS`, `FAIL` or `CONTINUE` after the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The evidence after the last step, one clause per signal (counts, estimate, 95 %
    /// confidence sequence, e-values against the level needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
