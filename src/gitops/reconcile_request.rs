//! On-demand reconciles: `flux reconcile` writes the annotation
//! `reconcile.fluxcd.io/requestedAt: <token>`; the controller reconciles and echoes the token to
//! `status.lastHandledReconcileAt`, which `flux reconcile` waits for. Same as Flux's
//! `meta.ReconcileAnnotationValue` / `predicates.ReconcileRequestedPredicate`.

use std::collections::BTreeMap;

pub use crate::api::source::RECONCILE_REQUESTED_AT_ANNOTATION;

/// The `reconcile.fluxcd.io/requestedAt` token in `annotations`, if any (an empty value counts
/// as absent).
pub fn requested_at(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations
        .and_then(|a| a.get(RECONCILE_REQUESTED_AT_ANNOTATION))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A reconcile request not handled yet: the token in `annotations` when it differs from
/// `last_handled` (`status.lastHandledReconcileAt`). The controller reconciles, then writes the
/// token to `status.lastHandledReconcileAt` (whatever the outcome, as Flux does).
pub fn pending_request<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    last_handled: Option<&str>,
) -> Option<&'a str> {
    requested_at(annotations).filter(|token| Some(*token) != last_handled)
}

/// The JSON merge patch that requests a reconcile: `reconcile.fluxcd.io/requestedAt: <token>`
/// (any string; `flux reconcile` writes the time, RFC 3339), nothing else touched.
pub fn request_patch(token: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT_ANNOTATION: token}}})
}

/// The wait before retrying after the `n`-th consecutive reconcile error (n ≥ 1): 5 s doubling
/// per failure, capped at `cap` (the object's retry interval). PURE.
pub fn failure_backoff(n: u32, cap: std::time::Duration) -> std::time::Duration {
    (std::time::Duration::from_secs(5) * 2u32.saturating_pow(n.clamp(1, 10) - 1)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_patch_writes_only_the_annotation() {
        assert_eq!(
            request_patch("2026-12-06T20:00:00Z"),
            serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2026-12-06T20:00:00Z"}}})
        );
    }

    #[test]
    fn failure_backoff_doubles_from_five_seconds_up_to_the_cap() {
        use std::time::Duration;
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6).map(|n| failure_backoff(n, cap).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(failure_backoff(0, cap), Duration::from_secs(5));
    }

    #[test]
    fn a_request_is_pending_until_its_token_is_echoed() {
        let ann = |v: &str| {
            BTreeMap::from([(RECONCILE_REQUESTED_AT_ANNOTATION.to_string(), v.to_string())])
        };
        let t1 = ann("2026-12-04T23:00:00.000000000Z");
        assert_eq!(requested_at(None), None);
        assert_eq!(requested_at(Some(&ann(""))), None);
        assert_eq!(requested_at(Some(&BTreeMap::new())), None);
        assert_eq!(
            pending_request(Some(&t1), None),
            Some("2026-12-04T23:00:00.000000000Z")
        );
        assert_eq!(
            pending_request(Some(&t1), Some("2026-12-04T23:00:00.000000000Z")),
            None
        );
        assert_eq!(
            pending_request(Some(&t1), Some("2026-12-04T22:00:00Z")),
            Some("2026-12-04T23:00:00.000000000Z"),
            "a new token is a new request"
        );
        assert_eq!(pending_request(None, Some("x")), None);
    }
}
