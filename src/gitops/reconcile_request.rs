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

#[cfg(test)]
mod tests {
    use super::*;

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
