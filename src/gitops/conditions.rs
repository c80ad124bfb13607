//! Conditions of the GitOps Toolkit contract (flux.md "Cross-cutting conventions", §1.1):
//! `metav1.Condition`s with Flux's types and reasons, the `Ready` summary computed from the
//! others as Flux's `conditions.SetSummary` does (`fluxcd/pkg/runtime/conditions`), and the rules
//! of Flux's condition checker (`runtime/conditions/check`) as a function tests call. PURE.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{MESSAGE_MAX_BYTES, truncate_message};

/// `status` values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Condition types (`fluxcd/pkg/apis/meta` and source-controller `api/v1/condition_types.go`).
pub mod types {
    /// The summary; True only when fully reconciled at the current generation.
    pub const READY: &str = "Ready";
    /// Abnormal-true: present (True) only while work is in progress.
    pub const RECONCILING: &str = "Reconciling";
    /// Abnormal-true: present (True) only when retrying is pointless without a spec change.
    pub const STALLED: &str = "Stalled";
    /// kustomize-controller's health assessment.
    pub const HEALTHY: &str = "Healthy";
    /// Normal polarity: present once an artifact is stored.
    pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
    /// Abnormal-true: the stored artifact is older than what the spec or upstream asks for.
    pub const ARTIFACT_OUTDATED: &str = "ArtifactOutdated";
    /// Abnormal-true: clone, index download or pull failed.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// Abnormal-true: building the artifact (e.g. packaging a chart) failed.
    pub const BUILD_FAILED: &str = "BuildFailed";
    /// Abnormal-true: filesystem, archive or lock failure in the storage.
    pub const STORAGE_OPERATION_FAILED: &str = "StorageOperationFailed";
    /// Abnormal-true: a GitRepository `include` is not ready.
    pub const INCLUDE_UNAVAILABLE: &str = "IncludeUnavailable";
    /// Bi-polar: present only when verification is configured.
    pub const SOURCE_VERIFIED: &str = "SourceVerified";
}

/// Reasons (`fluxcd/pkg/apis/meta` generic ones, then source-controller's).
pub mod reasons {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const PROGRESSING: &str = "Progressing";
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    pub const SUSPENDED: &str = "Suspended";
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    pub const RECONCILIATION_SUCCEEDED: &str = "ReconciliationSucceeded";
    pub const RECONCILIATION_FAILED: &str = "ReconciliationFailed";
    pub const PRUNE_FAILED: &str = "PruneFailed";
    pub const INVALID_CEL_EXPRESSION: &str = "InvalidCELExpression";
    pub const HEALTH_CHECK_CANCELED: &str = "HealthCheckCanceled";
    pub const FEATURE_GATE_DISABLED: &str = "FeatureGateDisabled";
    pub const INVALID_PATH: &str = "InvalidPath";
    pub const INVALID_URL: &str = "InvalidURL";
    pub const INSECURE_CONNECTIONS_DISALLOWED: &str = "InsecureConnectionsDisallowed";
    // source-controller
    pub const URL_INVALID: &str = "URLInvalid";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const GIT_OPERATION_FAILED: &str = "GitOperationFailed";
    pub const GIT_OPERATION_SUCCEEDED: &str = "GitOperationSucceeded";
    pub const INDEXATION_FAILED: &str = "IndexationFailed";
    pub const OCI_PULL_FAILED: &str = "OCIArtifactPullFailed";
    pub const OCI_LAYER_OPERATION_FAILED: &str = "OCIArtifactLayerOperationFailed";
    pub const CHART_PULL_SUCCEEDED: &str = "ChartPullSucceeded";
    pub const CHART_PACKAGE_SUCCEEDED: &str = "ChartPackageSucceeded";
    pub const DIR_CREATION_FAILED: &str = "DirectoryCreationFailed";
    pub const STAT_OPERATION_FAILED: &str = "StatOperationFailed";
    pub const READ_OPERATION_FAILED: &str = "ReadOperationFailed";
    pub const ACQUIRE_LOCK_FAILED: &str = "AcquireLockFailed";
    pub const ARCHIVE_OPERATION_FAILED: &str = "ArchiveOperationFailed";
    pub const SYMLINK_UPDATE_FAILED: &str = "SymlinkUpdateFailed";
    pub const ARTIFACT_UP_TO_DATE: &str = "ArtifactUpToDate";
    pub const CACHE_OPERATION_FAILED: &str = "CacheOperationFailed";
    pub const PATCH_OPERATION_FAILED: &str = "PatchOperationFailed";
    pub const INVALID_PROVIDER_CONFIGURATION: &str = "InvalidProviderConfiguration";
    /// `ArtifactOutdated` reasons.
    pub const NEW_REVISION: &str = "NewRevision";
    pub const INCLUDE_CHANGE: &str = "IncludeChange";
}

/// How a kind's `Ready` is summarised, as the `summarize.Conditions` of each Flux reconciler:
/// the conditions in scope (`summarize`, in priority order), which of them are abnormal-true
/// (`negative_polarity`), and the bi-polar ones whose False overrides Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub summarize: &'static [&'static str],
    pub negative_polarity: &'static [&'static str],
    pub bipolar: &'static [&'static str],
}

use types::*;

/// GitRepository's (source-controller `gitRepositoryReadyCondition`).
pub const GIT_REPOSITORY_READY: Summary = Summary {
    summarize: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        INCLUDE_UNAVAILABLE,
        ARTIFACT_OUTDATED,
        ARTIFACT_IN_STORAGE,
        SOURCE_VERIFIED,
        STALLED,
        RECONCILING,
    ],
    negative_polarity: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        INCLUDE_UNAVAILABLE,
        ARTIFACT_OUTDATED,
        STALLED,
        RECONCILING,
    ],
    bipolar: &[SOURCE_VERIFIED],
};

/// OCIRepository's (`ociRepositoryReadyCondition`).
pub const OCI_REPOSITORY_READY: Summary = Summary {
    summarize: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        ARTIFACT_OUTDATED,
        ARTIFACT_IN_STORAGE,
        SOURCE_VERIFIED,
        STALLED,
        RECONCILING,
    ],
    negative_polarity: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        ARTIFACT_OUTDATED,
        STALLED,
        RECONCILING,
    ],
    bipolar: &[SOURCE_VERIFIED],
};

/// HelmRepository's (`helmRepositoryReadyCondition`).
pub const HELM_REPOSITORY_READY: Summary = Summary {
    summarize: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        ARTIFACT_OUTDATED,
        ARTIFACT_IN_STORAGE,
        STALLED,
        RECONCILING,
    ],
    negative_polarity: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        ARTIFACT_OUTDATED,
        STALLED,
        RECONCILING,
    ],
    bipolar: &[],
};

/// HelmChart's (`helmChartReadyCondition`).
pub const HELM_CHART_READY: Summary = Summary {
    summarize: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        BUILD_FAILED,
        ARTIFACT_OUTDATED,
        ARTIFACT_IN_STORAGE,
        SOURCE_VERIFIED,
        STALLED,
        RECONCILING,
    ],
    negative_polarity: &[
        STORAGE_OPERATION_FAILED,
        FETCH_FAILED,
        BUILD_FAILED,
        ARTIFACT_OUTDATED,
        STALLED,
        RECONCILING,
    ],
    bipolar: &[SOURCE_VERIFIED],
};

/// The condition of type `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// True when the condition is present with status `False`.
pub fn is_false(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == FALSE)
}

/// Set (add or replace) a condition, as Flux's `conditions.Set`: `observedGeneration` becomes
/// `generation`; the message is cut to [`MESSAGE_MAX_BYTES`]; `lastTransitionTime` becomes
/// `now` only when `status` changes (the `metav1.Condition` convention; Flux also moves it on a
/// new reason or message); the list is kept in Flux's order (Stalled, Reconciling, Ready, then
/// by type) so that `kubectl` shows the summary first.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    let message = truncate_message(message, MESSAGE_MAX_BYTES).into_owned();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = Some(generation);
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: Some(generation),
            last_transition_time: now.clone(),
        }),
    }
    conditions.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
}

/// Flux's `lexicographicLess`: Stalled, Reconciling, Ready first, then newer generations, then by
/// type.
fn order_key(c: &Condition) -> (u8, i64, &str) {
    let weight = match c.type_.as_str() {
        STALLED => 0,
        RECONCILING => 1,
        READY => 2,
        _ => 3,
    };
    if weight < 3 {
        (weight, 0, "")
    } else {
        (
            weight,
            -c.observed_generation.unwrap_or(0),
            c.type_.as_str(),
        )
    }
}

/// [`set_condition`] with status `True`.
pub fn mark_true(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    set_condition(conditions, type_, TRUE, reason, message, generation, now);
}

/// [`set_condition`] with status `False`.
pub fn mark_false(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    set_condition(conditions, type_, FALSE, reason, message, generation, now);
}

/// Remove a condition by type (no-op when absent), Flux's `conditions.Delete`.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Compute `Ready` from the other conditions, as Flux's `summarize.Helper` does before it
/// patches the status:
///
/// - `Reconciling` and `Stalled` are present only while True (a False one is removed), and
///   `Stalled=True` removes `Reconciling` (the two are never present together);
/// - the conditions in `summary.summarize` are grouped by (status, polarity) and the group of
///   highest priority wins: abnormal-true (a negative-polarity condition that is True), then
///   normal False, normal True, abnormal False, Unknown. Within the group the first condition in
///   `summary.summarize` order gives its reason and message. A winning abnormal-true or normal
///   False makes `Ready=False`, normal True (or abnormal False) `Ready=True`, Unknown
///   `Ready=Unknown`. So `Ready` is False while `Reconciling` or `Stalled` is True, and the
///   first failing condition's reason and message become Ready's;
/// - a bi-polar condition (`SourceVerified`) that is False then overrides `Ready` with its
///   reason and message.
///
/// With no condition in scope `Ready` is left as it is. `generation` is the object's
/// `metadata.generation`; `now` the time written on a transition.
pub fn summarize(conditions: &mut Vec<Condition>, summary: &Summary, generation: i64, now: &Time) {
    conditions.retain(|c| !matches!(c.type_.as_str(), RECONCILING | STALLED) || c.status == TRUE);
    if is_true(conditions, STALLED) {
        remove_condition(conditions, RECONCILING);
    }
    let priority = |c: &Condition| {
        let negative = summary.negative_polarity.contains(&c.type_.as_str());
        match (c.status.as_str(), negative) {
            (TRUE, true) => 0,
            (FALSE, false) => 1,
            (TRUE, false) => 2,
            (FALSE, true) => 3,
            _ => 4,
        }
    };
    let in_scope = |c: &&Condition| summary.summarize.contains(&c.type_.as_str());
    let top = conditions.iter().filter(in_scope).map(priority).min();
    let winner = top.and_then(|top| {
        summary.summarize.iter().find_map(|t| {
            conditions
                .iter()
                .find(|c| c.type_ == *t && priority(c) == top)
        })
    });
    let mut ready = winner.map(|c| {
        let status = match priority(c) {
            0 | 1 => FALSE,
            2 | 3 => TRUE,
            _ => UNKNOWN,
        };
        (status, c.reason.clone(), c.message.clone())
    });
    if let Some(c) = summary
        .bipolar
        .iter()
        .find_map(|t| get(conditions, t).filter(|c| c.status == FALSE))
    {
        ready = Some((FALSE, c.reason.clone(), c.message.clone()));
    }
    if let Some((status, reason, message)) = ready {
        set_condition(
            conditions, READY, status, &reason, &message, generation, now,
        );
    }
}

/// The rules of Flux's condition checker (`fluxcd/pkg/runtime/conditions/check`) an object's
/// status breaks, one line per rule with Flux's id (`FAIL0001` ...), empty when it follows the
/// contract. `negative_polarity` as in [`Summary`]; `generation` is `metadata.generation`,
/// `observed_generation` `status.observedGeneration`. Applies to reconciled objects (a static
/// `type: oci` HelmRepository has no conditions at all).
pub fn check(
    conditions: &[Condition],
    negative_polarity: &[&str],
    generation: i64,
    observed_generation: i64,
) -> Vec<String> {
    let mut out = vec![];
    let ready = get(conditions, READY);
    let ready_status = ready.map(|c| c.status.as_str());
    let ready_true = ready_status == Some(TRUE);
    let gen_of = |c: &Condition| c.observed_generation.unwrap_or(0);
    let list = |f: &dyn Fn(&Condition) -> bool| -> Vec<&str> {
        conditions
            .iter()
            .filter(|c| f(c))
            .map(|c| c.type_.as_str())
            .collect()
    };
    if ready_true {
        let bad = list(&|c| negative_polarity.contains(&c.type_.as_str()) && c.status == TRUE);
        if !bad.is_empty() {
            out.push(format!(
                "FAIL0001: Negative polarity condition cannot be True when Ready condition is True: {bad:?}"
            ));
        }
    }
    if ready.is_none() {
        out.push("FAIL0002: Ready condition must always be present".into());
    }
    if ready.is_some() && is_true(conditions, RECONCILING) && ready_status != Some(FALSE) {
        out.push(
            "FAIL0003: Ready condition must be False when Reconciling condition is True".into(),
        );
    }
    if ready.is_some() && is_true(conditions, STALLED) && ready_status != Some(FALSE) {
        out.push("FAIL0004: Ready condition must be False when Stalled condition is True".into());
    }
    if get(conditions, RECONCILING).is_some() && get(conditions, STALLED).is_some() {
        out.push(
            "FAIL0005: Only one of Reconciling condition or Stalled condition must be present at a time"
                .into(),
        );
    }
    if observed_generation > generation {
        out.push(
            "FAIL0006: The ObservedGeneration must be less than or equal to the object Generation"
                .into(),
        );
    }
    if observed_generation < generation && ready_true {
        out.push(
            "FAIL0007: Ready condition must be False when the ObservedGeneration is less than the object Generation"
                .into(),
        );
    }
    if ready_true {
        let stale = list(&|c| gen_of(c) < generation);
        if !stale.is_empty() {
            out.push(format!(
                "FAIL0008: Ready condition must be False when any of the status condition's ObservedGeneration is less than the object Generation: {stale:?}"
            ));
        }
        let other = list(&|c| gen_of(c) != observed_generation);
        if !other.is_empty() {
            out.push(format!(
                "FAIL0009: The status conditions' ObservedGenerations must be equal to the root ObservedGeneration when Ready condition is True: {other:?}"
            ));
        }
    }
    if ready_status == Some(UNKNOWN) && !is_true(conditions, RECONCILING) {
        out.push(
            "FAIL0011: A mid-reconciliation patched status must have Reconciling=True when Ready=Unknown"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    /// Conditions from `(type, status, reason)`, generation 1, time 0.
    /// `(type, status, reason)`.
    type Spec<'a> = (&'a str, &'a str, &'a str);

    fn conds(list: &[(&str, &str, &str)]) -> Vec<Condition> {
        let mut out = vec![];
        for (t, s, r) in list {
            set_condition(&mut out, t, s, r, &format!("{t} {r}"), 1, &at(0));
        }
        out
    }

    fn ready(cs: &[Condition]) -> Option<(String, String)> {
        get(cs, READY).map(|c| (c.status.clone(), c.reason.clone()))
    }

    #[test]
    fn summarize_as_flux() {
        use reasons::*;
        type Case<'a> = (&'a str, &'a [Spec<'a>], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            ("nothing in scope: no Ready", &[], None),
            (
                "stored: Ready=True with the artifact's reason",
                &[(ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED)],
                Some((TRUE, SUCCEEDED)),
            ),
            (
                "reconciling: Ready=False, Progressing",
                &[
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                    (RECONCILING, TRUE, PROGRESSING),
                ],
                Some((FALSE, PROGRESSING)),
            ),
            (
                "a failure wins over Reconciling (first in Flux's order)",
                &[
                    (RECONCILING, TRUE, PROGRESSING_WITH_RETRY),
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                    (FETCH_FAILED, TRUE, AUTHENTICATION_FAILED),
                ],
                Some((FALSE, AUTHENTICATION_FAILED)),
            ),
            (
                "storage failure before fetch failure",
                &[
                    (FETCH_FAILED, TRUE, GIT_OPERATION_FAILED),
                    (STORAGE_OPERATION_FAILED, TRUE, ARCHIVE_OPERATION_FAILED),
                ],
                Some((FALSE, ARCHIVE_OPERATION_FAILED)),
            ),
            (
                "stalled: Ready=False with Stalled's reason",
                &[
                    (STALLED, TRUE, URL_INVALID),
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                ],
                Some((FALSE, URL_INVALID)),
            ),
            (
                "outdated artifact: Ready=False, NewRevision",
                &[
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                    (ARTIFACT_OUTDATED, TRUE, NEW_REVISION),
                ],
                Some((FALSE, NEW_REVISION)),
            ),
            (
                "verification failed (bi-polar False) overrides a stored artifact",
                &[
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                    (SOURCE_VERIFIED, FALSE, "VerificationError"),
                ],
                Some((FALSE, "VerificationError")),
            ),
            (
                "include not ready",
                &[
                    (INCLUDE_UNAVAILABLE, TRUE, "NotFound"),
                    (ARTIFACT_IN_STORAGE, TRUE, SUCCEEDED),
                ],
                Some((FALSE, "NotFound")),
            ),
        ];
        for (what, list, want) in cases {
            let mut cs = conds(list);
            summarize(&mut cs, &GIT_REPOSITORY_READY, 1, &at(10));
            assert_eq!(
                ready(&cs),
                want.map(|(s, r)| (s.to_string(), r.to_string())),
                "{what}"
            );
            if let Some(c) = get(&cs, READY) {
                let source = list.iter().find(|(_, _, r)| *r == c.reason).unwrap().0;
                assert_eq!(
                    c.message,
                    format!("{source} {}", c.reason),
                    "{what}: message follows"
                );
            }
        }
    }

    #[test]
    fn stalled_removes_reconciling() {
        let mut cs = conds(&[
            (RECONCILING, TRUE, reasons::PROGRESSING),
            (STALLED, TRUE, reasons::URL_INVALID),
        ]);
        summarize(&mut cs, &GIT_REPOSITORY_READY, 1, &at(10));
        assert!(get(&cs, RECONCILING).is_none());
        assert_eq!(
            check(&cs, GIT_REPOSITORY_READY.negative_polarity, 1, 1),
            Vec::<String>::new()
        );
    }

    #[test]
    fn set_keeps_the_transition_time_while_the_status_holds() {
        let mut cs = vec![];
        mark_false(&mut cs, READY, reasons::PROGRESSING, "a", 1, &at(0));
        mark_false(
            &mut cs,
            READY,
            reasons::GIT_OPERATION_FAILED,
            "b",
            2,
            &at(5),
        );
        let c = get(&cs, READY).unwrap();
        assert_eq!(
            (
                c.last_transition_time.clone(),
                c.reason.as_str(),
                c.message.as_str(),
                c.observed_generation
            ),
            (at(0), reasons::GIT_OPERATION_FAILED, "b", Some(2))
        );
        mark_true(&mut cs, READY, reasons::SUCCEEDED, "c", 2, &at(9));
        assert_eq!(get(&cs, READY).unwrap().last_transition_time, at(9));
        // Flux's order: Stalled, Reconciling, Ready, then the rest by type
        mark_true(
            &mut cs,
            ARTIFACT_IN_STORAGE,
            reasons::SUCCEEDED,
            "",
            2,
            &at(9),
        );
        mark_true(
            &mut cs,
            FETCH_FAILED,
            reasons::GIT_OPERATION_FAILED,
            "",
            2,
            &at(9),
        );
        mark_true(&mut cs, RECONCILING, reasons::PROGRESSING, "", 2, &at(9));
        let order: Vec<_> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            order,
            [RECONCILING, READY, ARTIFACT_IN_STORAGE, FETCH_FAILED]
        );
        remove_condition(&mut cs, RECONCILING);
        assert!(!is_true(&cs, RECONCILING) && is_true(&cs, FETCH_FAILED) && !is_false(&cs, READY));
        // long messages are cut as every pennant condition message is
        mark_false(
            &mut cs,
            READY,
            reasons::FAILED,
            &"x".repeat(5000),
            2,
            &at(9),
        );
        assert!(get(&cs, READY).unwrap().message.len() <= MESSAGE_MAX_BYTES);
    }

    #[test]
    fn checker_rules_catch_each_violation() {
        let neg = GIT_REPOSITORY_READY.negative_polarity;
        let cases: &[(&[Spec], i64, i64, &str)] = &[
            (
                &[(READY, TRUE, "S"), (FETCH_FAILED, TRUE, "F")],
                1,
                1,
                "FAIL0001",
            ),
            (&[(ARTIFACT_IN_STORAGE, TRUE, "S")], 1, 1, "FAIL0002"),
            (
                &[(READY, TRUE, "S"), (RECONCILING, TRUE, "P")],
                1,
                1,
                "FAIL0003",
            ),
            (
                &[(READY, UNKNOWN, "S"), (STALLED, TRUE, "P")],
                1,
                1,
                "FAIL0004",
            ),
            (
                &[
                    (READY, FALSE, "S"),
                    (STALLED, TRUE, "P"),
                    (RECONCILING, TRUE, "P"),
                ],
                1,
                1,
                "FAIL0005",
            ),
            (&[(READY, FALSE, "S")], 1, 2, "FAIL0006"),
            (&[(READY, TRUE, "S")], 2, 1, "FAIL0007"),
            (&[(READY, TRUE, "S")], 2, 2, "FAIL0008"),
            (&[(READY, TRUE, "S")], 1, 3, "FAIL0009"),
            (&[(READY, UNKNOWN, "S")], 1, 1, "FAIL0011"),
        ];
        for (list, generation, observed, rule) in cases {
            let found = check(&conds(list), neg, *generation, *observed);
            assert!(
                found.iter().any(|l| l.starts_with(rule)),
                "{rule}: {found:?}"
            );
        }
        let ok = conds(&[(READY, TRUE, "S"), (ARTIFACT_IN_STORAGE, TRUE, "S")]);
        assert_eq!(check(&ok, neg, 1, 1), Vec::<String>::new());
    }

    /// Whatever the other conditions, the summary follows the checker's rules on Ready.
    #[test]
    fn every_summary_passes_the_checker() {
        let types = [
            FETCH_FAILED,
            STORAGE_OPERATION_FAILED,
            ARTIFACT_OUTDATED,
            ARTIFACT_IN_STORAGE,
            SOURCE_VERIFIED,
            RECONCILING,
            STALLED,
        ];
        for summary in [
            GIT_REPOSITORY_READY,
            OCI_REPOSITORY_READY,
            HELM_REPOSITORY_READY,
            HELM_CHART_READY,
        ] {
            for n in 0..3usize.pow(types.len() as u32) {
                let mut list = vec![];
                let mut k = n;
                for t in types {
                    match k % 3 {
                        1 => list.push((t, TRUE, "R")),
                        2 => list.push((t, FALSE, "R")),
                        _ => {}
                    }
                    k /= 3;
                }
                let mut cs = conds(&list);
                mark_true(
                    &mut cs,
                    ARTIFACT_IN_STORAGE,
                    "Succeeded",
                    "stored",
                    1,
                    &at(0),
                );
                summarize(&mut cs, &summary, 1, &at(1));
                let found = check(&cs, summary.negative_polarity, 1, 1);
                assert_eq!(found, Vec::<String>::new(), "{list:?} -> {cs:?}");
            }
        }
    }
}
