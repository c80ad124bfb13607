//! pennant's sequential-judge status block (`Canary.status.judge`): everything the judge needs
//! to resume after a restart or to replay a release. The types of the counts and plan are the
//! judge's own ([`crate::analysis::judge`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::analysis::judge::guardrail::{Bucket, CanaryTotals};
pub use crate::analysis::judge::{Plan, StepCounts};

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
