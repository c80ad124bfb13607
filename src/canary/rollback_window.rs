//! Rollback window (Flagger #1800, Argo Rollouts' `rollbackWindow`), as pure functions.
//!
//! Opt-in per Canary without changing Flagger's CRD: the annotation [`ANNOTATION`]
//! (`canary.pennant.dev/rollback-window: "3"`). pennant then remembers the ids of the promoted
//! revisions in `status.promotedRevisions` (`machine::revision_id`: the pod template's
//! canonical hash and the tracked ConfigMaps/Secrets), and a target that goes back to one of
//! the last N revisions promoted before the current one is promoted without analysis, like
//! `skipAnalysis` (the canary must still become ready), with an event saying so.

use crate::api::Canary;

/// Canary annotation: how many of the previously promoted revisions are promoted again
/// without analysis (1 to [`MAX_WINDOW`]).
pub const ANNOTATION: &str = "canary.pennant.dev/rollback-window";
/// The largest window; `status.promotedRevisions` keeps this many plus the current one.
pub const MAX_WINDOW: usize = 10;

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
