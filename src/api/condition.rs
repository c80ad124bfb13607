//! Status conditions in Flagger's shape (`type`, `status`, `reason`, `message`, `lastUpdateTime`,
//! `lastTransitionTime`), with a pure setter that keeps `lastTransitionTime` when the status does
//! not change.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition. Same fields as Flagger's `CanaryCondition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
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

/// Most bytes of a condition message or an Event note: the API server refuses an Event whose
/// note is longer (`NoteLengthLimit`, counted in bytes, so 342 three-byte characters fill it),
/// and a condition message is shown in `kubectl get` and alerts, so it gets the same bound.
pub const MESSAGE_MAX_BYTES: usize = 1024;

/// `message` cut to at most `max` bytes on UTF-8 character boundaries: when it is longer, its
/// middle is replaced by `…` (the ellipsis counts in `max`), keeping the start and the last
/// quarter, because the value that explains a message usually ends it ("… 5.00 > 1"). Used for
/// every Event note and condition message.
pub fn truncate_message(message: &str, max: usize) -> Cow<'_, str> {
    if message.len() <= max {
        return Cow::Borrowed(message);
    }
    const ELLIPSIS: &str = "…";
    let room = max.saturating_sub(ELLIPSIS.len());
    let mut tail = message.len() - room / 4;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    let mut head = room - (message.len() - tail);
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    Cow::Owned(format!(
        "{}{ELLIPSIS}{}",
        &message[..head],
        &message[tail..]
    ))
}

/// True when `c` carries `message` as [`set_condition`] stores it (cut to
/// [`MESSAGE_MAX_BYTES`]): a long message compares equal to its own stored form.
pub fn has_message(c: &Condition, message: &str) -> bool {
    c.message.as_deref() == Some(&*truncate_message(message, MESSAGE_MAX_BYTES))
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
    let message = &*truncate_message(message, MESSAGE_MAX_BYTES);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_message_cuts_bytes_on_a_character_boundary() {
        assert_eq!(truncate_message("short", 1024), "short");
        // 'é' is 2 bytes, '€' 3: 600 of them are 1200 / 1800 bytes but only 600 characters,
        // under a 1000-character cut
        for s in [
            "é".repeat(600),
            "€".repeat(600),
            format!("a{}", "€".repeat(600)),
        ] {
            let t = truncate_message(&s, 1024);
            assert!(t.len() <= 1024, "{} bytes", t.len());
            assert!(
                t.len() >= 1024 - 3 - 3,
                "cut no more than needed: {} bytes",
                t.len()
            );
            let (head, tail) = t.split_once('…').expect("an ellipsis");
            assert!(s.starts_with(head) && s.ends_with(tail), "{t}");
            assert!(
                tail.len() >= 1024 / 4 - 6,
                "the end is kept: {} bytes",
                tail.len()
            );
        }
        let exact = "x".repeat(1024);
        assert_eq!(truncate_message(&exact, 1024), exact, "at the limit: kept");
        assert_eq!(truncate_message(&"x".repeat(1025), 1024).len(), 1024);
    }

    #[test]
    fn long_condition_messages_are_stored_cut_and_compare_equal() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let long = format!("invalid Canary: {}", "stepWeights[0] ".repeat(3000));
        let mut cs = vec![];
        set_condition(&mut cs, types::STALLED, "True", "InvalidSpec", &long, &now);
        let stored = cs[0].message.clone().unwrap();
        assert!(stored.len() <= MESSAGE_MAX_BYTES, "{} bytes", stored.len());
        assert!(has_message(&cs[0], &long));
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap());
        set_condition(
            &mut cs,
            types::STALLED,
            "True",
            "InvalidSpec",
            &long,
            &later,
        );
        assert_eq!(
            cs[0].last_update_time,
            Some(now),
            "the same long message is no change"
        );
    }
}
