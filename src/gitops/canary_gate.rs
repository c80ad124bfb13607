//! Revision-aware readiness (pennant; none of Flux, Flagger or Argo has it, flagger#830,
//! flagger#1577): an applier (Kustomization, HelmRelease) that applied source revision R to the
//! target workload of a Canary is not `Ready` until that Canary's run for R ends.
//!
//! The run is tied to R through the revision hash of the target's pod template
//! ([`crate::api::revision::revision`]), which the Canary controller writes to the Canary's
//! `status.lastAppliedSpec` when it sees a new template and to `status.lastPromotedSpec` once
//! the primary runs it. The applier hashes the live template of each Deployment/DaemonSet it
//! applied and compares ([`decide`]):
//!
//! | Canary status (for the applied hash H)          | run                    |
//! |-------------------------------------------------|------------------------|
//! | `lastPromotedSpec == H`                          | promoted (or unchanged)|
//! | `phase: Failed`, `lastAppliedSpec == H`          | failed (rolled back)   |
//! | anything else (not seen yet, analysing, ...)     | progressing            |
//!
//! Over all the Canaries on applied workloads: one failed → [`Gate::Failed`]; else one in
//! progress → [`Gate::Progressing`]; else at least one → [`Gate::Promoted`]; none →
//! [`Gate::NoCanary`]. The applier then writes its conditions with [`mark`]: `Ready=Unknown`
//! `CanaryProgressing`, `Ready=False` `CanaryFailed`, or its usual success with
//! `status.lastPromotedRevision = R`. A failed revision is remembered (`status.rejectedRevision`)
//! and not applied again ([`skips_rejected`]) until the source moves or the spec changes.
//! PURE (`now` is passed in), but for [`observe`] (reads the applied workloads).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::kustomization::ResourceInventory;
use crate::api::{Canary, CanaryPhase, find_condition};

use super::conditions::{self, types};

/// `Ready=Unknown` reason while a Canary analyses the applied revision.
pub const CANARY_PROGRESSING: &str = "CanaryProgressing";
/// `Ready=False` reason after a Canary rolled the applied revision back.
pub const CANARY_FAILED: &str = "CanaryFailed";

/// A Deployment or DaemonSet an applier applied, with the revision hash of its live pod
/// template ([`crate::api::revision::revision`] of the object as the API server holds it after
/// the apply, defaults included, as the Canary controller reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedWorkload {
    pub namespace: String,
    /// `Deployment` or `DaemonSet`.
    pub kind: String,
    pub name: String,
    /// `sha256:<16 hex>`.
    pub template_revision: String,
}

/// Whether `canary` targets the workload `kind`/`namespace`/`name` (its `spec.targetRef` in its
/// own namespace; the API version is not compared). A Canary being deleted targets nothing.
pub fn targets(canary: &Canary, namespace: &str, kind: &str, name: &str) -> bool {
    canary.metadata.deletion_timestamp.is_none()
        && canary.metadata.namespace.as_deref().unwrap_or_default() == namespace
        && canary.spec.target_ref.kind == kind
        && canary.spec.target_ref.name == name
}

/// The inventory id (`<namespace>_<name>_apps_<Kind>`) of the workload `canary` targets. PURE.
pub fn target_id(canary: &Canary) -> String {
    format!(
        "{}_{}_apps_{}",
        canary.metadata.namespace.as_deref().unwrap_or_default(),
        canary.spec.target_ref.name,
        canary.spec.target_ref.kind
    )
}

/// The appliers (of one kind, by namespace/name) whose gate is being evaluated or waits for a
/// Canary, with the Deployments and DaemonSets of their inventory: a change of a Canary's
/// status wakes those whose inventory holds its target ([`target_id`]).
///
/// An applier registers *before* its gate reads the Canaries and leaves once its gate is not
/// [`Gate::Progressing`]. Deciding from the applier's status instead (`Ready` reason
/// [`CANARY_PROGRESSING`] in the appliers' watch) lost wake-ups: the Canary's status change could
/// arrive after the gate read the Canaries and before that status reached the watch, and then
/// nothing woke the applier until its interval (seen in `e2e_cli`: a Kustomization held at
/// "Canary … not started" 34 ms after the Canary's initialisation).
#[derive(Default)]
pub struct Waiters {
    index: std::sync::Mutex<std::collections::BTreeMap<(String, String), Vec<String>>>,
}

impl Waiters {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, String), Vec<String>>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` evaluates its gate over `inventory` (call before reading the Canaries).
    pub fn register(&self, key: (String, String), inventory: &ResourceInventory) {
        let workloads = inventory
            .entries
            .iter()
            .filter(|e| e.id.ends_with("_apps_Deployment") || e.id.ends_with("_apps_DaemonSet"))
            .map(|e| e.id.clone())
            .collect();
        self.lock().insert(key, workloads);
    }

    /// `key` waits for no Canary (its gate passed, failed or has none; deleted, suspended).
    pub fn remove(&self, key: &(String, String)) {
        self.lock().remove(key);
    }

    /// Whether `key` waits for a Canary.
    pub fn contains(&self, key: &(String, String)) -> bool {
        self.lock().contains_key(key)
    }

    /// The appliers to wake on a change of `canary`.
    pub fn waiting_for(&self, canary: &Canary) -> Vec<(String, String)> {
        let target = target_id(canary);
        self.lock()
            .iter()
            .filter(|(_, ids)| ids.contains(&target))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The workloads of `inventory` (an applier's `status.inventory`) that one of `canaries`
/// targets, each with the revision hash of its live pod template (a GET each, through
/// `client`: the cluster the applier applied to). A workload that cannot be read is left out
/// and logged.
pub async fn observe(
    client: &kube::Client,
    canaries: &[&Canary],
    inventory: &ResourceInventory,
) -> Vec<AppliedWorkload> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use kube::Api;
    let ids: std::collections::BTreeSet<&str> =
        inventory.entries.iter().map(|e| e.id.as_str()).collect();
    let mut applied: Vec<AppliedWorkload> = vec![];
    for c in canaries
        .iter()
        .filter(|c| ids.contains(target_id(c).as_str()))
    {
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        let (kind, name) = (
            c.spec.target_ref.kind.as_str(),
            c.spec.target_ref.name.as_str(),
        );
        if applied
            .iter()
            .any(|w| w.namespace == ns && w.kind == kind && w.name == name)
        {
            continue;
        }
        let template = match kind {
            "Deployment" => Api::<Deployment>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
            "DaemonSet" => Api::<DaemonSet>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
            _ => Ok(None),
        };
        match template {
            Ok(Some(t)) => applied.push(AppliedWorkload {
                namespace: ns,
                kind: kind.to_string(),
                name: name.to_string(),
                template_revision: crate::api::revision::revision(&t),
            }),
            Ok(None) => {}
            Err(e) => tracing::warn!("canary gate: read {kind} {ns}/{name}: {e}"),
        }
    }
    applied
}

/// One Canary's run for the applied template, as the table of the module doc says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// The primary runs the applied template.
    Promoted,
    /// Rolled back; the Canary's `Promoted` condition message, if any.
    Failed(String),
    /// Not ended: the phase (`None`: no status yet) and the canary weight (percent 0-100).
    Progressing {
        phase: Option<CanaryPhase>,
        weight: i32,
        suspended: bool,
    },
}

/// The run of `canary` for the template hash `applied`. PURE.
pub fn run_of(canary: &Canary, applied: &str) -> Run {
    let st = canary.status.as_ref();
    let last_promoted = st.and_then(|s| s.last_promoted_spec.as_deref());
    let last_applied = st.and_then(|s| s.last_applied_spec.as_deref());
    let phase = st.and_then(|s| s.phase);
    if last_promoted == Some(applied) {
        return Run::Promoted;
    }
    if phase == Some(CanaryPhase::Failed) && last_applied == Some(applied) {
        let message = st
            .and_then(|s| find_condition(&s.conditions, "Promoted"))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        return Run::Failed(message);
    }
    Run::Progressing {
        phase,
        weight: st.map_or(0, |s| s.canary_weight),
        suspended: canary.spec.suspend,
    }
}

/// What the Canaries say about an applied revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No Canary targets an applied workload: the applier's own readiness stands.
    NoCanary,
    /// Every Canary on an applied workload runs its applied template on the primary (their
    /// `namespace/name`s).
    Promoted { canaries: Vec<String> },
    /// A run has not ended: the `Ready=Unknown` message.
    Progressing { message: String },
    /// A Canary rolled the revision back: the `Ready=False` message.
    Failed { message: String },
}

/// The gate of `revision` given the workloads applied and every Canary known (those targeting
/// none of them are ignored). Canaries are reported in the order given. PURE.
pub fn decide(revision: &str, applied: &[AppliedWorkload], canaries: &[&Canary]) -> Gate {
    let mut promoted = vec![];
    let mut progressing = vec![];
    let mut failed = vec![];
    for c in canaries {
        let Some(w) = applied
            .iter()
            .find(|w| targets(c, &w.namespace, &w.kind, &w.name))
        else {
            continue;
        };
        let id = format!(
            "{}/{}",
            c.metadata.namespace.as_deref().unwrap_or_default(),
            c.metadata.name.as_deref().unwrap_or_default()
        );
        match run_of(c, &w.template_revision) {
            Run::Promoted => promoted.push(id),
            Run::Failed(m) => failed.push((id, m)),
            Run::Progressing {
                phase,
                weight,
                suspended,
            } => {
                let phase = phase.map_or("not started", |p| p.as_str());
                let mut what = format!("Canary {id} {phase}, weight {weight}%");
                if suspended {
                    what.push_str(" (suspended)");
                }
                progressing.push(what);
            }
        }
    }
    if !failed.is_empty() {
        let lines: Vec<String> = failed
            .iter()
            .map(|(id, m)| match m.is_empty() {
                true => format!("Canary {id} failed"),
                false => format!("Canary {id} failed: {}", m.trim_end_matches('.')),
            })
            .collect();
        return Gate::Failed {
            message: format!(
                "revision {revision} rolled back: {}; not applied again until a new revision",
                lines.join("; ")
            ),
        };
    }
    if !progressing.is_empty() {
        return Gate::Progressing {
            message: format!(
                "waiting for the canary analysis of revision {revision}: {}",
                progressing.join("; ")
            ),
        };
    }
    if promoted.is_empty() {
        Gate::NoCanary
    } else {
        Gate::Promoted { canaries: promoted }
    }
}

/// Write a [`Gate::Progressing`] or [`Gate::Failed`] into `conds` (no-op for the others, whose
/// success the applier writes itself): `Ready=Unknown` `CanaryProgressing` with
/// `Reconciling=True` (same reason and message), or `Ready=False` `CanaryFailed` without
/// `Reconciling`; never `Stalled` (a new revision ends either). PURE.
pub fn mark(conds: &mut Vec<Condition>, gate: &Gate, generation: i64, now: &Time) {
    match gate {
        Gate::Progressing { message } => {
            conditions::remove_condition(conds, types::STALLED);
            conditions::set_condition(
                conds,
                types::READY,
                conditions::UNKNOWN,
                CANARY_PROGRESSING,
                message,
                generation,
                now,
            );
            conditions::mark_true(
                conds,
                types::RECONCILING,
                CANARY_PROGRESSING,
                message,
                generation,
                now,
            );
        }
        Gate::Failed { message } => {
            conditions::remove_condition(conds, types::STALLED);
            conditions::remove_condition(conds, types::RECONCILING);
            conditions::mark_false(conds, types::READY, CANARY_FAILED, message, generation, now);
        }
        Gate::NoCanary | Gate::Promoted { .. } => {}
    }
}

/// The revision an applier rejected: `status.rejectedRevision`, else the revision of the newest
/// `status.history` entry when that entry's status is [`CANARY_FAILED`] (`newest`: its
/// `lastReconciledStatus` and `metadata.revision`), so the memory holds where the CRD in the
/// cluster predates `rejectedRevision` (the API server prunes an unknown status field). PURE.
pub fn rejected_revision<'a>(
    rejected: Option<&'a str>,
    newest: Option<(&'a str, Option<&'a str>)>,
) -> Option<&'a str> {
    rejected.or(match newest {
        Some((CANARY_FAILED, revision)) => revision,
        _ => None,
    })
}

/// Whether a reconcile of an applier at `generation` about to apply `revision` stops before
/// fetching it: the revision was rejected (`rejected`, its Canary failed) while the applier
/// observed this generation (a spec change retries it). PURE.
pub fn skips_rejected(
    revision: &str,
    rejected: Option<&str>,
    generation: i64,
    observed_generation: Option<i64>,
) -> bool {
    rejected == Some(revision) && observed_generation == Some(generation)
}

/// Whether a reconcile only re-evaluates the gate of the revision it applied (nothing fetched
/// or applied again while a Canary analyses it): `Ready` is `CanaryProgressing` for this
/// generation, `revision` is the one attempted, and no new `reconcile.fluxcd.io/requestedAt`
/// token arrived (`requested` is the annotation, `handled` the status' `lastHandledReconcileAt`).
/// PURE.
pub fn resumes(
    conds: &[Condition],
    revision: &str,
    attempted: Option<&str>,
    generation: i64,
    requested: Option<&str>,
    handled: Option<&str>,
) -> bool {
    attempted == Some(revision)
        && requested.is_none_or(|r| handled == Some(r))
        && conditions::get(conds, types::READY).is_some_and(|c| {
            c.reason == CANARY_PROGRESSING && c.observed_generation == Some(generation)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    const H1: &str = "sha256:1111111111111111";
    const H2: &str = "sha256:2222222222222222";
    const REV: &str = "main@sha1:abc";

    fn canary(name: &str, target: &str, status: serde_json::Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "service": {"port": 80}, "analysis": {"interval": "1s"}},
            "status": status,
        }))
        .unwrap()
    }

    fn applied(name: &str, hash: &str) -> AppliedWorkload {
        AppliedWorkload {
            namespace: "apps".into(),
            kind: "Deployment".into(),
            name: name.into(),
            template_revision: hash.into(),
        }
    }

    fn st(phase: &str, applied: &str, promoted: &str, weight: i32) -> serde_json::Value {
        json!({"phase": phase, "lastAppliedSpec": applied, "lastPromotedSpec": promoted,
            "canaryWeight": weight, "failedChecks": 0, "iterations": 0,
            "conditions": [{"type": "Promoted", "status": "False", "reason": "Failed",
                "message": "Canary analysis failed, Deployment scaled to zero.",
                "lastTransitionTime": "2026-12-06T00:00:00Z"}]})
    }

    #[test]
    fn the_gate_follows_the_canary_run_of_the_applied_template() {
        use Gate::*;
        let progressing = |m: &str| Progressing {
            message: format!("waiting for the canary analysis of revision {REV}: {m}"),
        };
        let cases: Vec<(&str, Vec<Canary>, Vec<AppliedWorkload>, Gate)> = vec![
            (
                "no canary at all",
                vec![],
                vec![applied("web", H2)],
                NoCanary,
            ),
            (
                "a canary on a workload not applied",
                vec![canary("db", "db", st("Progressing", H2, H1, 10))],
                vec![applied("web", H2)],
                NoCanary,
            ),
            (
                "a new canary, no status yet (same revision)",
                vec![canary("web", "web", json!(null))],
                vec![applied("web", H2)],
                progressing("Canary apps/web not started, weight 0%"),
            ),
            (
                "initialised from the applied template: promoted",
                vec![canary("web", "web", st("Initialized", H2, H2, 0))],
                vec![applied("web", H2)],
                Promoted {
                    canaries: vec!["apps/web".into()],
                },
            ),
            (
                "the canary has not seen the new template yet",
                vec![canary("web", "web", st("Succeeded", H1, H1, 0))],
                vec![applied("web", H2)],
                progressing("Canary apps/web Succeeded, weight 0%"),
            ),
            (
                "analysing the applied template",
                vec![canary("web", "web", st("Progressing", H2, H1, 20))],
                vec![applied("web", H2)],
                progressing("Canary apps/web Progressing, weight 20%"),
            ),
            (
                "promoting",
                vec![canary("web", "web", st("Promoting", H2, H1, 0))],
                vec![applied("web", H2)],
                progressing("Canary apps/web Promoting, weight 0%"),
            ),
            (
                "promoted",
                vec![canary("web", "web", st("Succeeded", H2, H2, 0))],
                vec![applied("web", H2)],
                Promoted {
                    canaries: vec!["apps/web".into()],
                },
            ),
            (
                "template unchanged by this revision: already promoted",
                vec![canary("web", "web", st("Succeeded", H1, H1, 0))],
                vec![applied("web", H1)],
                Promoted {
                    canaries: vec!["apps/web".into()],
                },
            ),
            (
                "rolled back",
                vec![canary("web", "web", st("Failed", H2, H1, 0))],
                vec![applied("web", H2)],
                Failed {
                    message: format!(
                        "revision {REV} rolled back: Canary apps/web failed: Canary analysis \
                         failed, Deployment scaled to zero; not applied again until a new \
                         revision"
                    ),
                },
            ),
            (
                "failed on an older template, the new one not seen yet",
                vec![canary("web", "web", st("Failed", H1, H1, 0))],
                vec![applied("web", H2)],
                progressing("Canary apps/web Failed, weight 0%"),
            ),
            (
                "one failed wins over one progressing",
                vec![
                    canary("api", "api", st("Progressing", H2, H1, 30)),
                    canary("web", "web", st("Failed", H2, H1, 0)),
                ],
                vec![applied("web", H2), applied("api", H2)],
                Failed {
                    message: format!(
                        "revision {REV} rolled back: Canary apps/web failed: Canary analysis \
                         failed, Deployment scaled to zero; not applied again until a new \
                         revision"
                    ),
                },
            ),
            (
                "one progressing holds the promoted one",
                vec![
                    canary("api", "api", st("Succeeded", H2, H2, 0)),
                    canary("web", "web", st("WaitingPromotion", H2, H1, 50)),
                ],
                vec![applied("web", H2), applied("api", H2)],
                progressing("Canary apps/web WaitingPromotion, weight 50%"),
            ),
        ];
        for (name, canaries, workloads, want) in cases {
            let refs: Vec<&Canary> = canaries.iter().collect();
            assert_eq!(decide(REV, &workloads, &refs), want, "{name}");
        }
    }

    #[test]
    fn a_canary_elsewhere_or_being_deleted_targets_nothing() {
        let mut c = canary("web", "web", json!(null));
        assert!(targets(&c, "apps", "Deployment", "web"));
        assert!(!targets(&c, "other", "Deployment", "web"));
        assert!(!targets(&c, "apps", "DaemonSet", "web"));
        c.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(!targets(&c, "apps", "Deployment", "web"));
        c.metadata.deletion_timestamp = None;
        c.spec.suspend = true;
        assert_eq!(
            decide(REV, &[applied("web", H2)], &[&c]),
            Gate::Progressing {
                message: format!(
                    "waiting for the canary analysis of revision {REV}: Canary apps/web not \
                     started, weight 0% (suspended)"
                )
            }
        );
    }

    #[test]
    fn conditions_of_the_gate() {
        let now = Time(Timestamp::from_second(100).unwrap());
        let mut c = vec![];
        let p = Gate::Progressing {
            message: "waiting".into(),
        };
        mark(&mut c, &p, 2, &now);
        let ready = conditions::get(&c, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("Unknown", CANARY_PROGRESSING)
        );
        assert!(conditions::is_true(&c, types::RECONCILING));
        assert!(resumes(&c, REV, Some(REV), 2, None, None));
        assert!(resumes(&c, REV, Some(REV), 2, Some("t1"), Some("t1")));
        assert!(
            !resumes(&c, REV, Some(REV), 2, Some("t2"), Some("t1")),
            "a new token"
        );
        assert!(!resumes(&c, "main@sha1:new", Some(REV), 2, None, None));
        assert!(!resumes(&c, REV, Some(REV), 3, None, None), "a new spec");
        let f = Gate::Failed {
            message: "rolled back".into(),
        };
        mark(&mut c, &f, 2, &now);
        let ready = conditions::get(&c, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", CANARY_FAILED)
        );
        assert!(conditions::get(&c, types::RECONCILING).is_none());
        assert!(conditions::get(&c, types::STALLED).is_none());
        assert!(!resumes(&c, REV, Some(REV), 2, None, None));
        let before = c.clone();
        mark(&mut c, &Gate::NoCanary, 2, &now);
        assert_eq!(c, before);
    }

    #[test]
    fn the_rejected_revision_is_the_status_field_else_a_failed_newest_history_entry() {
        assert_eq!(rejected_revision(Some(REV), None), Some(REV));
        assert_eq!(
            rejected_revision(Some(REV), Some((CANARY_FAILED, Some("other")))),
            Some(REV)
        );
        assert_eq!(
            rejected_revision(None, Some((CANARY_FAILED, Some(REV)))),
            Some(REV)
        );
        assert_eq!(
            rejected_revision(None, Some(("ReconciliationSucceeded", Some(REV)))),
            None
        );
        assert_eq!(rejected_revision(None, None), None);
    }

    #[test]
    fn a_rejected_revision_is_skipped_until_the_source_or_the_spec_moves() {
        let cases = [
            (REV, Some(REV), 2, Some(2), true),
            ("main@sha1:next", Some(REV), 2, Some(2), false),
            (REV, Some(REV), 3, Some(2), false),
            (REV, None, 2, Some(2), false),
        ];
        for (rev, rejected, generation, observed, want) in cases {
            assert_eq!(
                skips_rejected(rev, rejected, generation, observed),
                want,
                "{rev} {rejected:?} {generation} {observed:?}"
            );
        }
    }

    #[test]
    fn a_canary_wakes_the_appliers_registered_on_its_target_until_they_leave() {
        let inventory = |ids: &[&str]| ResourceInventory {
            entries: ids
                .iter()
                .map(|id| crate::api::kustomization::ResourceRef {
                    id: id.to_string(),
                    v: "v1".into(),
                })
                .collect(),
        };
        let key = |n: &str| ("apps".to_string(), n.to_string());
        let waiters = Waiters::default();
        waiters.register(
            key("a"),
            &inventory(&["apps_web_apps_Deployment", "apps_web__Service"]),
        );
        waiters.register(key("b"), &inventory(&["apps_api_apps_Deployment"]));
        waiters.register(key("c"), &inventory(&["apps_web_apps_DaemonSet"]));
        waiters.register(key("d"), &inventory(&["apps_web__Service"]));
        let web = canary("web", "web", json!({}));
        assert_eq!(target_id(&web), "apps_web_apps_Deployment");
        assert_eq!(waiters.waiting_for(&web), [key("a")]);
        waiters.register(key("b"), &inventory(&["apps_web_apps_Deployment"]));
        assert_eq!(
            waiters.waiting_for(&web),
            [key("a"), key("b")],
            "registered again with a new inventory"
        );
        waiters.remove(&key("a"));
        assert_eq!(waiters.waiting_for(&web), [key("b")], "its gate passed");
    }
}
