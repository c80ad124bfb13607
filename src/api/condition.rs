//! Status conditions in Flagger's shape (`type`, `status`, `reason`, `message`, `lastUpdateTime`,
//! `lastTransitionTime`), with a pure setter that keeps `lastTransitionTime` when the status does
//! not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition. Same fields as Flagger's `CanaryCondition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Promoted` (Flagger's), `Stalled`, `Unsupported` (pennant's).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition types pennant writes.
pub mod types {
    /// Flagger's single condition: True when Initialized/Succeeded, False when Failed, else Unknown.
    pub const PROMOTED: &str = "Promoted";
    /// True while pennant cannot act on the Canary (invalid spec, missing target, ...).
    pub const STALLED: &str = "Stalled";
    /// True when the spec uses fields pennant accepts but does not implement yet.
    pub const UNSUPPORTED: &str = "Unsupported";
    /// True while a run waits without stepping because the primary is missing or not ready.
    pub const HALTED: &str = "Halted";
    /// False when the metrics provider could not be queried on the last analysis step.
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// pennant: False while the sequential judge cannot judge (no series for a signal, a
    /// histogram without the chosen edge, a policy out of range); the message names the signal.
    pub const JUDGE_READY: &str = "JudgeReady";
    /// pennant: True while a new revision waits for a free slot under the concurrency limit
    /// (reason `ConcurrencyLimit`); the message says how many run and how many wait ahead, and
    /// `lastTransitionTime` is the Canary's place in the FIFO queue.
    pub const QUEUED: &str = "Queued";
    /// pennant: with the annotation `canary.pennant.dev/rollback-window`, True with reason
    /// `PromotedRevisions` and the ids of the last promoted revisions in its message.
    pub const ROLLBACK_WINDOW: &str = "RollbackWindow";
}

/// Set (or replace) a condition in `conditions`. `last_update_time` becomes `now` when anything
/// changed; `last_transition_time` only when `status` changed, as Flagger does.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message);
        if same {
            return;
        }
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_update_time = Some(now.clone());
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
        });
    }
}

/// Remove a condition by type (no-op when absent).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
