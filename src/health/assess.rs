//! The health of a set of objects with a deadline: the verdict Flux's `ssa` `WaitForSet`
//! reaches by polling (kustomize-controller's health assessment, helm-controller's `poller`
//! wait), reached here from the latest copies a watch delivered. PURE: the caller calls
//! [`assess`] again on every watch event and when the deadline passes; nothing blocks.
//!
//! Rules, as Flux's `WaitForSetWithContext`:
//! - every object Current → [`Verdict::Healthy`] (an empty set is healthy);
//! - an object absent from `observed` is `NotFound`, except a Job with a TTL (it may be gone
//!   after completing), which counts as Current;
//! - any Failed with fail-fast, or every object Current or Failed → [`Verdict::Failed`],
//!   "failed early due to stalled resources: [Deployment/ns/name status: 'Failed']";
//! - at or after the deadline (`started + timeout`) → [`Verdict::TimedOut`], every object not
//!   Current: "timeout waiting for: [Deployment/ns/name status: 'InProgress']" (an Unknown
//!   status adds its error: `...status: 'Unknown': failed to evaluate ...`);
//! - otherwise [`Verdict::Waiting`] with the objects not Current.
//!
//! Objects are listed in the order of `desired` (Flux's order is a Go map's, random).
//! kustomize-controller prefixes the Failed/TimedOut message with "health check failed after
//! <elapsed>: " for the `HealthCheckFailed` reason; the caller adds it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::expr::HealthExprs;
use super::kstatus::{Health, Status};
use crate::api::kustomization::NamespacedObjectKindReference;
use crate::apply::inventory::ObjectId;

/// How a set is waited on (Flux's `ssa.WaitOptions`, with the start instead of a context).
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// When the wait began (after the apply).
    pub started: Timestamp,
    /// `spec.timeout` of the Kustomization.
    pub timeout: SignedDuration,
    /// Stop at the first Failed object (Flux's default for Kustomizations).
    pub fail_fast: bool,
    /// Jobs with `ttlSecondsAfterFinished`: NotFound counts as Current.
    pub jobs_with_ttl: BTreeSet<ObjectId>,
}

impl WaitOptions {
    /// When the wait gives up.
    pub fn deadline(&self) -> Timestamp {
        self.started + self.timeout
    }
}

/// One object's health within the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHealth {
    pub id: ObjectId,
    pub health: Health,
}

impl ObjectHealth {
    /// Flux's entry: `Kind/namespace/name status: 'InProgress'` (`Kind/name` when cluster-scoped).
    pub fn describe(&self) -> String {
        let mut s = format!("{} status: '{}'", fmt_id(&self.id), self.health.status);
        if self.health.status == Status::Unknown && !self.health.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.health.message);
        }
        s
    }
}

/// Flux's `FmtObjMetadata`: `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
pub fn fmt_id(id: &ObjectId) -> String {
    if id.namespace.is_empty() {
        format!("{}/{}", id.kind, id.name)
    } else {
        format!("{}/{}/{}", id.kind, id.namespace, id.name)
    }
}

/// The verdict over a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every object is Current.
    Healthy,
    /// Not done yet: the objects not Current, and when the wait gives up.
    Waiting {
        pending: Vec<ObjectHealth>,
        deadline: Timestamp,
    },
    /// Failed objects stopped the wait (fail-fast, or nothing left to wait for).
    Failed { failed: Vec<ObjectHealth> },
    /// The deadline passed with objects not Current.
    TimedOut { pending: Vec<ObjectHealth> },
}

impl Verdict {
    /// Flux's error text for Failed and TimedOut; `None` otherwise.
    pub fn message(&self) -> Option<String> {
        let (prefix, list) = match self {
            Verdict::Failed { failed } => ("failed early due to stalled resources", failed),
            Verdict::TimedOut { pending } => ("timeout waiting for", pending),
            _ => return None,
        };
        let entries: Vec<String> = list.iter().map(ObjectHealth::describe).collect();
        Some(format!("{prefix}: [{}]", entries.join(", ")))
    }
}

/// The objects a Kustomization health-checks, as kustomize-controller's `checkHealth`: with
/// `wait`, every object of the apply's change set that was not skipped (`applied`, in apply
/// order); otherwise the `healthChecks` references (an empty `apiVersion` reads `apps/v1`, the
/// namespace as written); never the Kustomization `owner` (name, namespace) itself. Empty: no
/// health check, and the caller removes the `Healthy` condition.
pub fn objects_to_check(
    wait: bool,
    health_checks: &[NamespacedObjectKindReference],
    applied: &[ObjectId],
    owner: (&str, &str),
) -> Vec<ObjectId> {
    let objects: Vec<ObjectId> = if wait {
        applied.to_vec()
    } else {
        health_checks
            .iter()
            .map(|hc| {
                let api_version = hc.api_version.as_deref().filter(|v| !v.is_empty());
                ObjectId {
                    namespace: hc.namespace.clone().unwrap_or_default(),
                    name: hc.name.clone(),
                    group: api_version
                        .unwrap_or("apps/v1")
                        .rsplit_once('/')
                        .map_or("", |(g, _)| g)
                        .into(),
                    kind: hc.kind.clone(),
                }
            })
            .collect()
    };
    objects
        .into_iter()
        .filter(|o| !(o.kind == "Kustomization" && o.name == owner.0 && o.namespace == owner.1))
        .collect()
}

/// The Jobs among `objects` (`batch/*` Jobs) with `spec.ttlSecondsAfterFinished` set, any value
/// (Flux's `ExtractJobsWithTTL`): for [`WaitOptions::jobs_with_ttl`].
pub fn jobs_with_ttl(objects: &[Value]) -> BTreeSet<ObjectId> {
    objects
        .iter()
        .filter(|o| {
            o["kind"] == "Job"
                && o["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("batch/"))
                && o["spec"]["ttlSecondsAfterFinished"].is_i64()
        })
        .map(ObjectId::of)
        .collect()
}

/// The verdict over `desired` given the latest `observed` copies (by id; absent = not in the
/// cluster), the parsed `healthCheckExprs` and the wait options, at `now`.
pub fn assess(
    desired: &[ObjectId],
    observed: &BTreeMap<ObjectId, Value>,
    exprs: &HealthExprs,
    opts: &WaitOptions,
    now: Timestamp,
) -> Verdict {
    let healths: Vec<ObjectHealth> = desired
        .iter()
        .map(|id| {
            let health = match observed.get(id) {
                Some(obj) => exprs.health(obj, now),
                None if opts.jobs_with_ttl.contains(id) => {
                    Health::new(Status::Current, "Job with TTL is gone")
                }
                None => Health::new(Status::NotFound, "Resource not found"),
            };
            ObjectHealth {
                id: id.clone(),
                health,
            }
        })
        .collect();
    let is = |s: Status| move |h: &&ObjectHealth| h.health.status == s;
    if healths.iter().all(|h| h.health.status == Status::Current) {
        return Verdict::Healthy;
    }
    let failed: Vec<ObjectHealth> = healths.iter().filter(is(Status::Failed)).cloned().collect();
    let terminal = healths
        .iter()
        .all(|h| matches!(h.health.status, Status::Current | Status::Failed));
    let pending: Vec<ObjectHealth> = healths
        .into_iter()
        .filter(|h| h.health.status != Status::Current)
        .collect();
    if now >= opts.deadline() {
        return Verdict::TimedOut { pending };
    }
    if !failed.is_empty() && (opts.fail_fast || terminal) {
        return Verdict::Failed { failed };
    }
    Verdict::Waiting {
        pending,
        deadline: opts.deadline(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::kstatus::tests::obj;

    fn t(s: &str) -> Timestamp {
        format!("2026-12-05T12:{s}Z").parse().unwrap()
    }

    fn opts(fail_fast: bool) -> WaitOptions {
        WaitOptions {
            started: t("00:00"),
            timeout: SignedDuration::from_secs(60),
            fail_fast,
            jobs_with_ttl: BTreeSet::new(),
        }
    }

    const NEVER_READY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: apps, generation: 1}\nspec: {replicas: 1}\nstatus: {observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 0, availableReplicas: 0}";
    const READY_CM: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: apps}";

    fn world(yamls: &[&str]) -> (Vec<ObjectId>, BTreeMap<ObjectId, Value>) {
        let objs: Vec<Value> = yamls.iter().map(|y| obj(y)).collect();
        let ids = objs.iter().map(ObjectId::of).collect();
        (
            ids,
            objs.into_iter().map(|o| (ObjectId::of(&o), o)).collect(),
        )
    }

    #[test]
    fn never_ready_deployment_waits_then_times_out_with_flux_message() {
        let (ids, observed) = world(&[READY_CM, NEVER_READY]);
        let exprs = HealthExprs::default();
        let waiting = assess(&ids, &observed, &exprs, &opts(true), t("00:59"));
        let Verdict::Waiting { pending, deadline } = &waiting else {
            panic!("{waiting:?}")
        };
        assert_eq!(*deadline, t("01:00"));
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].health.message, "Available: 0/1");
        assert_eq!(waiting.message(), None);
        let timed_out = assess(&ids, &observed, &exprs, &opts(true), t("01:00"));
        assert_eq!(
            timed_out.message().unwrap(),
            "timeout waiting for: [Deployment/apps/web status: 'InProgress']"
        );
    }

    #[test]
    fn all_current_is_healthy_and_empty_set_too() {
        let ready = NEVER_READY
            .replace(
            "readyReplicas: 0, availableReplicas: 0}",
            "readyReplicas: 1, availableReplicas: 1, conditions: [{type: Available, status: 'True'}]}",
        );
        let (ids, observed) = world(&[READY_CM, &ready]);
        let exprs = HealthExprs::default();
        assert_eq!(
            assess(&ids, &observed, &exprs, &opts(true), t("00:10")),
            Verdict::Healthy
        );
        assert_eq!(
            assess(&[], &observed, &exprs, &opts(true), t("05:00")),
            Verdict::Healthy
        );
    }

    #[test]
    fn failed_object_stops_the_wait_early_only_with_fail_fast_or_when_terminal() {
        let failed = NEVER_READY.replace("availableReplicas: 0}", "availableReplicas: 0, conditions: [{type: Progressing, status: 'False', reason: ProgressDeadlineExceeded}]}");
        let exprs = HealthExprs::default();
        let (ids, observed) = world(&[&failed, READY_CM]);
        let v = assess(&ids, &observed, &exprs, &opts(false), t("00:10"));
        assert_eq!(
            v.message().unwrap(),
            "failed early due to stalled resources: [Deployment/apps/web status: 'Failed']",
            "terminal: nothing else to wait for"
        );
        let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: apps}\nstatus: {phase: Pending}";
        let (ids, observed) = world(&[&failed, pvc]);
        assert!(matches!(
            assess(&ids, &observed, &exprs, &opts(false), t("00:10")),
            Verdict::Waiting { .. }
        ));
        let v = assess(&ids, &observed, &exprs, &opts(true), t("00:10"));
        let Verdict::Failed { failed } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(failed.len(), 1, "only the Failed object is named");
        assert_eq!(fmt_id(&failed[0].id), "Deployment/apps/web");
    }

    #[test]
    fn missing_objects_are_not_found_except_jobs_with_ttl() {
        let ns = obj("apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}");
        let job =
            obj("apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: apps}");
        let ids = vec![ObjectId::of(&ns), ObjectId::of(&job)];
        let exprs = HealthExprs::default();
        let mut o = opts(true);
        let v = assess(&ids, &BTreeMap::new(), &exprs, &o, t("02:00"));
        assert_eq!(
            v.message().unwrap(),
            "timeout waiting for: [Namespace/apps status: 'NotFound', Job/apps/migrate status: 'NotFound']"
        );
        o.jobs_with_ttl.insert(ObjectId::of(&job));
        let observed = BTreeMap::from([(ObjectId::of(&ns), ns)]);
        assert_eq!(
            assess(&ids, &observed, &exprs, &o, t("00:30")),
            Verdict::Healthy
        );
    }

    #[test]
    fn objects_to_check_follow_wait_or_health_checks_and_skip_the_owner() {
        let applied = vec![
            ObjectId::parse("apps_web_apps_Deployment").unwrap(),
            ObjectId::parse("flux-system_apps_kustomize.toolkit.fluxcd.io_Kustomization").unwrap(),
            ObjectId::parse("flux-system_other_kustomize.toolkit.fluxcd.io_Kustomization").unwrap(),
        ];
        let hc = |api: Option<&str>, kind: &str, name: &str, ns: Option<&str>| {
            NamespacedObjectKindReference {
                api_version: api.map(Into::into),
                kind: kind.into(),
                name: name.into(),
                namespace: ns.map(Into::into),
            }
        };
        let checks = [
            hc(None, "Deployment", "legacy", Some("apps")),
            hc(Some("v1"), "Service", "web", Some("apps")),
            hc(
                Some("helm.toolkit.fluxcd.io/v2"),
                "HelmRelease",
                "ingress",
                None,
            ),
        ];
        let owner = ("apps", "flux-system");
        let ids = |v: Vec<ObjectId>| v.iter().map(ObjectId::to_id).collect::<Vec<_>>();
        assert_eq!(
            ids(objects_to_check(true, &checks, &applied, owner)),
            [
                "apps_web_apps_Deployment",
                "flux-system_other_kustomize.toolkit.fluxcd.io_Kustomization"
            ],
            "wait: the applied set, healthChecks ignored, the owner left out"
        );
        assert_eq!(
            ids(objects_to_check(false, &checks, &applied, owner)),
            [
                "apps_legacy_apps_Deployment",
                "apps_web__Service",
                "_ingress_helm.toolkit.fluxcd.io_HelmRelease"
            ]
        );
        assert!(objects_to_check(false, &[], &applied, owner).is_empty());
    }

    #[test]
    fn jobs_with_ttl_are_batch_jobs_with_the_field_set() {
        let objs = [
            obj(
                "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a, namespace: jobs}\nspec: {ttlSecondsAfterFinished: 0}",
            ),
            obj("apiVersion: batch/v1\nkind: Job\nmetadata: {name: b, namespace: jobs}\nspec: {}"),
            obj(
                "apiVersion: example.com/v1\nkind: Job\nmetadata: {name: c, namespace: jobs}\nspec: {ttlSecondsAfterFinished: 5}",
            ),
        ];
        let got: Vec<String> = jobs_with_ttl(&objs).iter().map(ObjectId::to_id).collect();
        assert_eq!(got, ["jobs_a_batch_Job"]);
    }

    #[test]
    fn cel_errors_are_named_at_the_timeout() {
        use crate::api::kustomization::CustomHealthCheck;
        let exprs = HealthExprs::compile(&[CustomHealthCheck {
            api_version: "example.com/v1".into(),
            kind: Some("Widget".into()),
            current: "status.ready".into(),
            in_progress: None,
            failed: None,
        }])
        .unwrap();
        let (ids, observed) = world(&[
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: apps}",
        ]);
        let m = assess(&ids, &observed, &exprs, &opts(true), t("01:00"))
            .message()
            .unwrap();
        assert!(
            m.starts_with("timeout waiting for: [Widget/apps/w status: 'Unknown': failed to evaluate the CEL expression 'status.ready': "),
            "{m}"
        );
    }
}
