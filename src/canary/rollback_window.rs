//! Rollback window (Flagger #1800, Argo Rollouts' `rollbackWindow`), as pure functions.
//!
//! Opt-in per Canary without changing Flagger's CRD: the annotation [`ANNOTATION`]
//! (`canary.pennant.dev/rollback-window: "3"`). pennant then remembers the ids of the promoted
//! revisions (`machine::revision_id`: the pod template's canonical hash and the tracked
//! ConfigMaps/Secrets) in the status condition `RollbackWindow` ([`history`]; a condition, not
//! a new status field, so Flagger's CRD or one Helm did not upgrade cannot prune it), and a target that goes back to one of
//! the last N revisions promoted before the current one is promoted without analysis, like
//! `skipAnalysis` (the canary must still become ready), with an event saying so.

use crate::api::condition::types;
use crate::api::{Canary, CanaryStatus, find_condition};

/// Canary annotation: how many of the previously promoted revisions are promoted again
/// without analysis (1 to [`MAX_WINDOW`]).
pub const ANNOTATION: &str = "canary.pennant.dev/rollback-window";
/// The largest window; the history keeps this many plus the current one.
pub const MAX_WINDOW: usize = 10;
/// Message of the `RollbackWindow` condition, before the ids.
const HISTORY_PREFIX: &str = "promoted revisions, oldest first:";

/// The ids of the promoted revisions recorded in `st` (oldest first).
pub fn history(st: &CanaryStatus) -> Vec<String> {
    find_condition(&st.conditions, types::ROLLBACK_WINDOW)
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.strip_prefix(HISTORY_PREFIX))
        .map(|ids| ids.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The `RollbackWindow` condition's message for `ids` ([`history`] reads it back).
pub fn history_message(ids: &[String]) -> String {
    format!("{HISTORY_PREFIX} {}", ids.join(" "))
}

/// The Canary's window: `Ok(None)` without the annotation, `Err` with a message for a value
/// that is not an integer from 1 to [`MAX_WINDOW`].
pub fn window(canary: &Canary) -> Result<Option<usize>, String> {
    let Some(v) = canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
    else {
        return Ok(None);
    };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WINDOW).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "annotation {ANNOTATION}: {v:?} is not a number of revisions from 1 to {MAX_WINDOW}"
        )),
    }
}

/// `history` after promoting `id`: `id` moves to the end, the oldest entries beyond
/// [`MAX_WINDOW`] + 1 are dropped.
pub fn remember(history: &[String], id: &str) -> Vec<String> {
    let mut h: Vec<String> = history.iter().filter(|h| *h != id).cloned().collect();
    h.push(id.to_string());
    let extra = h.len().saturating_sub(MAX_WINDOW + 1);
    h.drain(..extra);
    h
}

/// Whether `id` is one of the last `n` revisions promoted before the current one (the last
/// entry of `history`).
pub fn within(history: &[String], id: &str, n: usize) -> bool {
    let Some((_current, before)) = history.split_last() else {
        return false;
    };
    before.iter().rev().take(n).any(|h| h == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn history_is_bounded_and_a_repromoted_revision_moves_to_the_end() {
        let mut h = vec![];
        for i in 0..15 {
            h = remember(&h, &format!("r{i}"));
        }
        assert_eq!(h.len(), MAX_WINDOW + 1);
        assert_eq!(h.first().unwrap(), "r4");
        assert_eq!(h.last().unwrap(), "r14");
        let h = remember(&ids(&["a", "b", "c"]), "a");
        assert_eq!(h, ids(&["b", "c", "a"]));
    }

    #[test]
    fn window_counts_the_revisions_before_the_current_one() {
        let h = ids(&["v1", "v2", "v3"]);
        assert!(within(&h, "v2", 1));
        assert!(!within(&h, "v1", 1));
        assert!(within(&h, "v1", 2));
        // the current primary is no rollback, and an unknown revision is analysed
        assert!(!within(&h, "v3", 3));
        assert!(!within(&h, "v4", 3));
        assert!(!within(&[], "v1", 3));
    }

    #[test]
    fn history_round_trips_through_the_condition_message() {
        let ids = ids(&["0011223344556677", "8899aabbccddeeff"]);
        let mut st = CanaryStatus::default();
        assert!(history(&st).is_empty());
        crate::api::condition::set_condition(
            &mut st.conditions,
            types::ROLLBACK_WINDOW,
            "True",
            "PromotedRevisions",
            &history_message(&ids),
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        );
        assert_eq!(
            history_message(&ids),
            "promoted revisions, oldest first: 0011223344556677 8899aabbccddeeff"
        );
        assert_eq!(history(&st), ids);
    }

    #[test]
    fn annotation_values() {
        let mut c = Canary::new("podinfo", Default::default());
        assert_eq!(window(&c), Ok(None));
        for (v, want) in [("3", Ok(Some(3))), (" 10 ", Ok(Some(10)))] {
            c.metadata.annotations = Some([(ANNOTATION.to_string(), v.to_string())].into());
            assert_eq!(window(&c), want);
        }
        for v in ["0", "11", "three", "-1"] {
            c.metadata.annotations = Some([(ANNOTATION.to_string(), v.to_string())].into());
            let e = window(&c).unwrap_err();
            assert!(e.contains("from 1 to 10"), "{e}");
        }
    }
}
