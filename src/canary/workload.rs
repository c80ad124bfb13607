//! The primary workload, its autoscaler and workload readiness, PURE (Flagger §2.5, §2.7,
//! §2.14).
//!
//! A target is a Deployment or a DaemonSet ([`Workload`]); everything else is written once over
//! both. [`build_primary`] gives the whole desired `<target>-primary` workload; the caller
//! applies it with server-side apply both to create the primary and to promote a revision (the
//! `flagger-id` annotation it stamps on the pod template starts the rolling update).
//! [`build_primary_hpa`] gives the `<hpa>-primary` HorizontalPodAutoscaler of a Deployment
//! target with an `autoscalerRef`.
//!
//! Scaling: a Deployment is scaled through `spec.replicas`; a DaemonSet has no replicas, so it
//! is "scaled to zero" as Flagger does, with a pod-template nodeSelector that matches no node
//! ([`SCALE_TO_ZERO_NODE_SELECTOR`]` = "true"`), and scaled up by removing it ([`scale_patch`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ManagedFieldsEntry, ObjectMeta,
};
use serde_json::{Value, json};

use super::machine::Readiness;
use super::tracker::{FLUX_TOOLKIT_MARKER, SCALE_TO_ZERO_NODE_SELECTOR, rewrite_config_refs};
use crate::api::meta::{FLUX_DISABLED_ANNOTATIONS, owner_reference};
use crate::api::{AutoscalerReference, Canary};

/// A workload pennant releases: the target and its primary are of the same kind.
///
/// Serialises as the object itself (with its `apiVersion` and `kind`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Workload {
    Deployment(Deployment),
    DaemonSet(DaemonSet),
}

impl From<Deployment> for Workload {
    fn from(d: Deployment) -> Self {
        Self::Deployment(d)
    }
}

impl From<DaemonSet> for Workload {
    fn from(d: DaemonSet) -> Self {
        Self::DaemonSet(d)
    }
}

impl Workload {
    /// `Deployment` or `DaemonSet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deployment(_) => "Deployment",
            Self::DaemonSet(_) => "DaemonSet",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Deployment(d) => &d.metadata,
            Self::DaemonSet(d) => &d.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("")
    }

    /// `spec.selector.matchLabels`.
    pub fn match_labels(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Deployment(d) => d.spec.as_ref()?.selector.match_labels.as_ref(),
            Self::DaemonSet(d) => d.spec.as_ref()?.selector.match_labels.as_ref(),
        }
    }

    /// `spec.template` (empty when the object has no spec).
    pub fn template(&self) -> PodTemplateSpec {
        match self {
            Self::Deployment(d) => d.spec.as_ref().map(|s| s.template.clone()),
            Self::DaemonSet(d) => d.spec.as_ref().map(|s| s.template.clone()),
        }
        .unwrap_or_default()
    }

    /// A Deployment's `spec.replicas`; `None` for a DaemonSet (one pod per selected node).
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Self::Deployment(d) => d.spec.as_ref()?.replicas,
            Self::DaemonSet(_) => None,
        }
    }

    /// A Deployment's `status.readyReplicas` (0 when unset); 0 for a DaemonSet.
    pub fn ready_replicas(&self) -> i32 {
        match self {
            Self::Deployment(d) => d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            Self::DaemonSet(_) => 0,
        }
    }

    /// Readiness with `ready_threshold_percent` (0-100): [`deployment_readiness`] or
    /// [`daemon_set_readiness`].
    pub fn readiness(&self, ready_threshold_percent: i32) -> Readiness {
        match self {
            Self::Deployment(d) => deployment_readiness(d, ready_threshold_percent),
            Self::DaemonSet(d) => daemon_set_readiness(d, ready_threshold_percent),
        }
    }

    fn id(&self) -> String {
        format!("{}.{}", self.name(), self.namespace())
    }
}

/// Selector labels tried, in order, to find the one that tells target pods apart (Flagger's
/// `-selector-labels` default).
pub const DEFAULT_SELECTOR_LABELS: &[&str] = &["app", "name", "app.kubernetes.io/name"];

/// Pod template annotation carrying the promoted revision id (Flagger writes a random UUID here;
/// pennant writes `machine::revision_id`, so a restarted controller can tell what is promoted).
pub const REVISION_ANNOTATION: &str = "flagger-id";

/// Annotations never copied from the target to the primary workload: `kubectl apply`'s record
/// of the target, and the workload controllers' own bookkeeping (`deployment.kubernetes.io/*`,
/// e.g. `revision`; the DaemonSet controller's `deprecated.daemonset.template.generation`),
/// which must stay the primary's own.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deprecated.daemonset.template.generation",
];
const SKIPPED_ANNOTATION_PREFIXES: &[&str] = &["deployment.kubernetes.io/"];

/// The selector label of the target and its value: the first of `candidates` present in
/// `spec.selector.matchLabels` (see [`DEFAULT_SELECTOR_LABELS`]).
///
/// Error, as Flagger's: `deployment <name>.<ns> spec.selector.matchLabels must contain one of
/// [app name app.kubernetes.io/name]` (`daemonset ...` for a DaemonSet).
pub fn selector_label(
    target: &Workload,
    candidates: &[String],
) -> Result<(String, String), String> {
    let labels = target.match_labels();
    candidates
        .iter()
        .find_map(|c| {
            labels
                .and_then(|l| l.get(c))
                .map(|v| (c.clone(), v.clone()))
        })
        .ok_or_else(|| {
            format!(
                "{} {} spec.selector.matchLabels must contain one of [{}]",
                target.kind().to_lowercase(),
                target.id(),
                candidates.join(" ")
            )
        })
}

fn filtered(
    m: Option<&BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    m.into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn not_flux(k: &str) -> bool {
    !k.contains(FLUX_TOOLKIT_MARKER)
}

fn some_if_any(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// Flagger's `-include-label-prefix`: the target's own labels whose key starts with one of
/// `prefixes` (`*` = every label), never Flux's, copied onto the primary workload `primary`
/// (JSON), whose selector label wins. The default (no prefix) copies none.
pub fn include_labels(primary: &mut serde_json::Value, target: &Workload, prefixes: &[String]) {
    let Some(labels) = target.metadata().labels.as_ref() else {
        return;
    };
    for (k, v) in labels {
        let included = prefixes
            .iter()
            .any(|p| p == "*" || (!p.is_empty() && k.starts_with(p.as_str())));
        if included && not_flux(k) && primary["metadata"]["labels"].get(k).is_none() {
            primary["metadata"]["labels"][k] = serde_json::Value::String(v.clone());
        }
    }
}

/// The desired primary workload for the target, of the target's kind (Flagger's
/// `createPrimaryDeployment`/`createPrimaryDaemonSet` and `Promote` in one builder).
///
/// - name `<target>-primary`, in the target's namespace; controller owner: the Canary;
/// - labels: only `<label>: <value>-primary` (Flagger's `-include-label-prefix` default copies
///   none); annotations: the target's, except Flux keys (`*toolkit.fluxcd.io*`),
///   `kubectl.kubernetes.io/last-applied-configuration` and `deployment.kubernetes.io/*`, plus
///   the Flux opt-outs ([`FLUX_DISABLED_ANNOTATIONS`]);
/// - selector `{<label>: <value>-primary}` only;
/// - Deployment: `progressDeadlineSeconds`, `minReadySeconds`, `revisionHistoryLimit`,
///   `strategy` copied; DaemonSet: `minReadySeconds`, `revisionHistoryLimit`, `updateStrategy`;
/// - pod template: labels copied (without Flux keys) with `<label>` set to `<value>-primary`;
///   annotations copied (without Flux keys) plus `flagger-id: <revision_id>`; the pod spec with
///   tracked ConfigMap/Secret refs pointed at their `-primary` copies
///   ([`rewrite_config_refs`]), the label selectors of topologySpreadConstraints and
///   podAntiAffinity terms that select `<label>: <value>` changed to `<value>-primary`, and the
///   DaemonSet scale-to-zero nodeSelector key removed (the target is parked with it);
/// - `replicas` (Deployment only): `Some(n)` sets it; `None` leaves it out of the applied
///   object, so an autoscaler (or the previous value) keeps ownership.
pub fn build_primary(
    canary: &Canary,
    target: &Workload,
    label: &str,
    value: &str,
    revision_id: &str,
    tracked: &BTreeMap<String, String>,
    replicas: Option<i32>,
) -> Workload {
    let primary_value = format!("{value}-primary");
    let template = target.template();
    let tmpl_meta = template.metadata.clone().unwrap_or_default();

    let mut tmpl_labels = filtered(tmpl_meta.labels.as_ref(), not_flux);
    tmpl_labels.insert(label.to_string(), primary_value.clone());
    let mut tmpl_annotations = filtered(tmpl_meta.annotations.as_ref(), not_flux);
    tmpl_annotations.insert(REVISION_ANNOTATION.to_string(), revision_id.to_string());

    let mut pod = template.spec.clone().unwrap_or_default();
    rewrite_config_refs(&mut pod, tracked);
    rewrite_pod_selectors(&mut pod, label, value, &primary_value);
    if let Some(sel) = pod.node_selector.as_mut() {
        sel.remove(SCALE_TO_ZERO_NODE_SELECTOR);
        if sel.is_empty() {
            pod.node_selector = None;
        }
    }

    let meta = target.metadata();
    let mut annotations = filtered(meta.annotations.as_ref(), |k| {
        not_flux(k)
            && !SKIPPED_ANNOTATIONS.contains(&k)
            && !SKIPPED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    with_flux_opt_out(&mut annotations);
    let selector = BTreeMap::from([(label.to_string(), primary_value.clone())]);
    let target_name = meta.name.as_deref().unwrap_or(&canary.spec.target_ref.name);

    let metadata = ObjectMeta {
        name: Some(format!("{target_name}-primary")),
        namespace: meta
            .namespace
            .clone()
            .or_else(|| canary.metadata.namespace.clone()),
        labels: Some(selector.clone()),
        annotations: some_if_any(annotations),
        owner_references: Some(vec![owner_reference(canary)]),
        ..Default::default()
    };
    let selector = LabelSelector {
        match_labels: Some(selector),
        match_expressions: None,
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(tmpl_labels),
            annotations: Some(tmpl_annotations),
            ..Default::default()
        }),
        spec: Some(pod),
    };

    match target {
        Workload::Deployment(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            Workload::Deployment(Deployment {
                metadata,
                spec: Some(DeploymentSpec {
                    replicas,
                    progress_deadline_seconds: spec.progress_deadline_seconds,
                    min_ready_seconds: spec.min_ready_seconds,
                    revision_history_limit: spec.revision_history_limit,
                    strategy: spec.strategy.clone(),
                    selector,
                    template,
                    paused: None,
                }),
                status: None,
            })
        }
        Workload::DaemonSet(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            Workload::DaemonSet(DaemonSet {
                metadata,
                spec: Some(DaemonSetSpec {
                    min_ready_seconds: spec.min_ready_seconds,
                    revision_history_limit: spec.revision_history_limit,
                    update_strategy: spec.update_strategy.clone(),
                    selector,
                    template,
                }),
                status: None,
            })
        }
    }
}

/// Add the Flux opt-out annotations ([`FLUX_DISABLED_ANNOTATIONS`]) to `annotations`.
pub fn with_flux_opt_out(annotations: &mut BTreeMap<String, String>) {
    for (k, v) in FLUX_DISABLED_ANNOTATIONS {
        annotations.insert(k.to_string(), v.to_string());
    }
}

/// Flagger refuses a DaemonSet target whose `updateStrategy.type` is not `RollingUpdate` (with
/// `OnDelete` a promotion would never replace the primary's pods). `Ok` for Deployments.
///
/// Error: `daemonset <name>.<ns> must have RollingUpdate strategy but has OnDelete`.
pub fn check_target(target: &Workload) -> Result<(), String> {
    let Workload::DaemonSet(d) = target else {
        return Ok(());
    };
    let t = d
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("");
    if t.is_empty() || t == "RollingUpdate" {
        Ok(())
    } else {
        Err(format!(
            "daemonset {} must have RollingUpdate strategy but has {t}",
            target.id()
        ))
    }
}

/// Flagger's `appendPrimarySuffixToValuesIfNeeded`, keyed on the selector label's *value*
/// (Flagger compares with the Deployment name, which misses targets whose label value differs
/// from their name): only the selector label is rewritten, because it is the only pod label the
/// primary changes.
fn rewrite_pod_selectors(pod: &mut PodSpec, label: &str, value: &str, primary_value: &str) {
    let rewrite = |sel: &mut Option<LabelSelector>| {
        let Some(sel) = sel else { return };
        if let Some(v) = sel.match_labels.as_mut().and_then(|m| m.get_mut(label))
            && v == value
        {
            *v = primary_value.to_string();
        }
        for req in sel.match_expressions.iter_mut().flatten() {
            if req.key == label {
                for v in req.values.iter_mut().flatten() {
                    if v == value {
                        *v = primary_value.to_string();
                    }
                }
            }
        }
    };
    for tsc in pod.topology_spread_constraints.iter_mut().flatten() {
        rewrite(&mut tsc.label_selector);
    }
    if let Some(anti) = pod
        .affinity
        .as_mut()
        .and_then(|a| a.pod_anti_affinity.as_mut())
    {
        for t in anti
            .preferred_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            rewrite(&mut t.pod_affinity_term.label_selector);
        }
        for t in anti
            .required_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            rewrite(&mut t.label_selector);
        }
    }
}

/// The revision id stamped on a primary's pod template (`flagger-id`), if any.
pub fn primary_revision_id(w: &Workload) -> Option<String> {
    w.template()
        .metadata?
        .annotations?
        .get(REVISION_ANNOTATION)
        .cloned()
}

/// Readiness of a Deployment, as Flagger's `isDeploymentReady`, checked in this order:
///
/// 1. `metadata.generation > status.observedGeneration` → NotReady("waiting for rollout to finish:
///    observed deployment generation less than desired generation");
/// 2. condition `Progressing` with reason `ProgressDeadlineExceeded` → Failed("deployment
///    \"NAME\" exceeded its progress deadline");
/// 3. `updatedReplicas < spec.replicas` → NotReady("… N out of M new replicas have been updated");
/// 4. `status.replicas > updatedReplicas` → NotReady("… N old replicas are pending termination");
/// 5. `availableReplicas < floor(updatedReplicas × threshold / 100)` → NotReady("… N of M
///    (readyThreshold X%) updated replicas are available");
/// 6. `spec.replicas == 0` → NotReady("deployment \"NAME\" is scaled to zero") (what Flagger's
///    `IsPrimaryReady` meant to check but never did, §2.7 quirk);
/// 7. otherwise Ready.
///
/// `ready_threshold_percent` is 0-100. Flagger's "stuck" test (`Available=False` past the
/// deadline) is not here: the state machine measures the deadline with its own clock.
pub fn deployment_readiness(d: &Deployment, ready_threshold_percent: i32) -> Readiness {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let status = d.status.clone().unwrap_or_default();
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas);
    let waiting = |m: String| Readiness::NotReady(format!("waiting for rollout to finish: {m}"));

    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return waiting("observed deployment generation less than desired generation".into());
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return Readiness::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(want) = spec_replicas
        && updated < want
    {
        return waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    let needed = (i64::from(updated) * i64::from(ready_threshold_percent) / 100) as i32;
    if available < needed {
        return waiting(format!(
            "{available} of {needed} (readyThreshold {ready_threshold_percent}%) updated replicas are available"
        ));
    }
    if spec_replicas == Some(0) {
        return Readiness::NotReady(format!("deployment {name:?} is scaled to zero"));
    }
    Readiness::Ready
}

/// Readiness of a DaemonSet (Flagger's `isDaemonSetReady`, with the readyThreshold of §2.7),
/// checked in this order:
///
/// 1. `metadata.generation > status.observedGeneration` → NotReady("waiting for rollout to
///    finish: observed daemonset generation less than desired generation");
/// 2. `updatedNumberScheduled < desiredNumberScheduled` → NotReady("… N out of M new pods have
///    been updated");
/// 3. `numberAvailable < floor(desiredNumberScheduled × threshold / 100)` → NotReady("… N of M
///    (readyThreshold X%) pods are available");
/// 4. the pod template carries the scale-to-zero nodeSelector → NotReady("daemonset \"NAME\"
///    is scaled to zero") (as a Deployment at `replicas: 0`);
/// 5. otherwise Ready (also with no node selected: `desiredNumberScheduled: 0`).
///
/// Never `Failed`: a DaemonSet has no progress deadline of its own; the state machine measures
/// the Canary's `progressDeadlineSeconds` with its own clock (`status.unreadySince`).
pub fn daemon_set_readiness(d: &DaemonSet, ready_threshold_percent: i32) -> Readiness {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let status = d.status.clone().unwrap_or_default();
    let waiting = |m: String| Readiness::NotReady(format!("waiting for rollout to finish: {m}"));
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return waiting("observed daemonset generation less than desired generation".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        return waiting(format!(
            "{updated} out of {desired} new pods have been updated"
        ));
    }
    let needed = (i64::from(desired) * i64::from(ready_threshold_percent) / 100) as i32;
    if available < needed {
        return waiting(format!(
            "{available} of {needed} (readyThreshold {ready_threshold_percent}%) pods are available"
        ));
    }
    if parked(d) {
        return Readiness::NotReady(format!("daemonset {name:?} is scaled to zero"));
    }
    Readiness::Ready
}

/// True when the DaemonSet's pod template carries the scale-to-zero nodeSelector key.
fn parked(d: &DaemonSet) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_selector.as_ref())
        .is_some_and(|n| n.contains_key(SCALE_TO_ZERO_NODE_SELECTOR))
}

/// Replicas to scale the target up to for a new run (Flagger's `ScaleFromZero`, §2.5):
/// the target's `spec.replicas` if > 0; else the primary's if > 0 (with an autoscaler too,
/// kept within the target HPA's `minReplicas`..`maxReplicas`: Flagger starts at `minReplicas`,
/// so a blue/green canary gets all the traffic on fewer pods than the primary, #1209); else
/// the HPA's `minReplicas` if > 1; else 1. A DaemonSet is always 1 ("scheduled":
/// [`scale_patch`] only tells zero from non-zero).
///
/// `autoscaler` is the target's HPA when the Canary has an `autoscalerRef` to one.
pub fn scale_up_replicas(
    target: &Workload,
    primary: Option<&Workload>,
    autoscaler: Option<&HorizontalPodAutoscaler>,
) -> i32 {
    let replicas = |w: &Workload| w.replicas().filter(|r| *r > 0);
    if let Some(r) = replicas(target) {
        return r;
    }
    let min = autoscaler
        .and_then(|h| h.spec.min_replicas)
        .unwrap_or(1)
        .max(1);
    match (primary.and_then(replicas), autoscaler) {
        (Some(p), Some(hpa)) => p.max(min).min(hpa.spec.max_replicas.max(min)),
        (Some(p), None) => p,
        (None, _) => min,
    }
}

/// The merge patch that scales `target` to `replicas`, `None` when it is there already.
///
/// - Deployment: `{"spec": {"replicas": n}}`;
/// - DaemonSet, `replicas == 0`: adds the nodeSelector `flagger.app/scale-to-zero: "true"` to
///   the pod template (no node carries that label, so every pod goes away); `replicas > 0`:
///   removes that key (`null` in a JSON merge patch), leaving the user's own selectors alone.
pub fn scale_patch(target: &Workload, replicas: i32) -> Option<Value> {
    match target {
        Workload::Deployment(_) => {
            (target.replicas() != Some(replicas)).then(|| json!({"spec": {"replicas": replicas}}))
        }
        Workload::DaemonSet(d) => {
            let want_parked = replicas == 0;
            (parked(d) != want_parked).then(|| {
                let v = if want_parked {
                    Value::String("true".into())
                } else {
                    Value::Null
                };
                json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_NODE_SELECTOR: v}}}}})
            })
        }
    }
}

/// Field manager that takes over `spec.replicas` of a primary Deployment before pennant stops
/// applying it (see [`owns_replicas`]).
pub const REPLICAS_HANDOVER_MANAGER: &str = "pennant-replicas-handover";

/// True when `manager` holds `spec.replicas` of `d` through a server-side apply.
///
/// A field an applier drops from its object is *removed* (reset to the default, 1 replica)
/// when no other manager owns it. So before pennant applies a primary without `replicas` (an
/// autoscaler owns them), it hands the field over to [`REPLICAS_HANDOVER_MANAGER`] with an apply
/// of the live value, the procedure the Kubernetes server-side apply docs give for handing
/// replicas to an HPA.
pub fn owns_replicas(d: &Workload, manager: &str) -> bool {
    let owns = |m: &ManagedFieldsEntry| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    };
    matches!(d, Workload::Deployment(_)) && d.metadata().managed_fields.iter().flatten().any(owns)
}

/// What a cached Deployment keeps of `metadata.managedFields` (PURE): only `manager`'s `Apply`
/// entry, its fields cut down to `spec.replicas` when it lists them — all [`owns_replicas`]
/// reads. The rest (every manager's field sets, kubectl's `last-applied-configuration`) is most
/// of a Deployment's size in the cache and nothing pennant reads from it: writes that need the
/// full list read the object fresh (`execute::release`).
pub fn slim_managed_fields(meta: &mut ObjectMeta, manager: &str) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    let kept: Vec<ManagedFieldsEntry> = meta
        .managed_fields
        .take()
        .into_iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(manager) && m.operation.as_deref() == Some("Apply")
        })
        .map(|m| {
            let replicas = m
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some());
            ManagedFieldsEntry {
                manager: m.manager,
                operation: m.operation,
                fields_v1: replicas.then(|| FieldsV1(json!({"f:spec": {"f:replicas": {}}}))),
                ..Default::default()
            }
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The `<hpa>-primary` HorizontalPodAutoscaler (`autoscaling/v2`) for the primary Deployment
/// (Flagger's `HPAReconciler`, §2.14):
///
/// - name `<hpa>-primary`, in the HPA's namespace; controller owner: the Canary;
/// - labels: the HPA's without Flux keys (Flagger's `filterMetadata`); annotations: only the
///   Flux opt-outs;
/// - `scaleTargetRef`: the HPA's `apiVersion` and `kind` (default `apps/v1`, `Deployment`), name
///   `primary_name`;
/// - `metrics` and `behavior` copied; `minReplicas`/`maxReplicas` copied, each replaced by
///   `autoscalerRef.primaryScalerReplicas` when that sets it.
pub fn build_primary_hpa(
    canary: &Canary,
    reference: &AutoscalerReference,
    hpa: &HorizontalPodAutoscaler,
    primary_name: &str,
) -> HorizontalPodAutoscaler {
    let spec = &hpa.spec;
    let overrides = reference
        .primary_scaler_replicas
        .clone()
        .unwrap_or_default();
    let mut annotations = BTreeMap::new();
    with_flux_opt_out(&mut annotations);
    let name = hpa.metadata.name.as_deref().unwrap_or(&reference.name);
    let kind = Some(spec.scale_target_ref.kind.as_str())
        .filter(|k| !k.is_empty())
        .unwrap_or("Deployment");
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(format!("{name}-primary")),
            namespace: hpa
                .metadata
                .namespace
                .clone()
                .or_else(|| canary.metadata.namespace.clone()),
            labels: some_if_any(filtered(hpa.metadata.labels.as_ref(), not_flux)),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(canary)]),
            ..Default::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(
                    spec.scale_target_ref
                        .api_version
                        .clone()
                        .unwrap_or_else(|| "apps/v1".into()),
                ),
                kind: kind.into(),
                name: primary_name.into(),
            },
            min_replicas: overrides.min_replicas.or(spec.min_replicas),
            max_replicas: overrides.max_replicas.unwrap_or(spec.max_replicas),
            metrics: spec.metrics.clone(),
            behavior: spec.behavior.clone(),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use serde_json::json;

    fn labels() -> Vec<String> {
        DEFAULT_SELECTOR_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selector_label_takes_the_first_candidate_present() {
        let d = deployment(json!({"metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "podinfo", "name": "pi"}},
                     "template": {}}}));
        assert_eq!(
            selector_label(&d.into(), &labels()).unwrap(),
            ("name".into(), "pi".into())
        );
        assert_eq!(
            selector_label(&podinfo_deployment().into(), &labels()).unwrap(),
            ("app".into(), "podinfo".into())
        );
    }

    #[test]
    fn selector_label_error_names_the_candidates() {
        let d = deployment(json!({"metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}, "template": {}}}));
        assert_eq!(
            selector_label(&d.into(), &labels()).unwrap_err(),
            "deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
        let ds: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}, "template": {}}}))
            .unwrap();
        assert_eq!(
            selector_label(&ds.into(), &labels()).unwrap_err(),
            "daemonset agent.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
    }

    fn podinfo_primary(replicas: Option<i32>) -> Workload {
        let canary = flagger_istio_canary();
        let mut target = podinfo_deployment();
        let ann = target.metadata.annotations.get_or_insert_default();
        ann.insert("kustomize.toolkit.fluxcd.io/name".into(), "apps".into());
        ann.insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "{}".into(),
        );
        ann.insert("deployment.kubernetes.io/revision".into(), "3".into());
        target.metadata.labels.get_or_insert_default().insert(
            "kustomize.toolkit.fluxcd.io/namespace".into(),
            "flux-system".into(),
        );
        target.metadata.resource_version = Some("1234".into());
        let tracked = BTreeMap::from([(
            "secret/podinfo-secret".to_string(),
            "0123456789abcdef".to_string(),
        )]);
        build_primary(
            &canary,
            &target.into(),
            "app",
            "podinfo",
            "c0ffee00c0ffee00",
            &tracked,
            replicas,
        )
    }

    #[test]
    fn primary_deployment_golden() {
        insta::assert_yaml_snapshot!(podinfo_primary(Some(2)));
    }

    #[test]
    fn include_label_prefix_copies_matching_target_labels() {
        let mut target = podinfo_deployment();
        target.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            ("team.example.com/owner".to_string(), "web".to_string()),
            ("tier".to_string(), "frontend".to_string()),
            (
                "kustomize.toolkit.fluxcd.io/name".to_string(),
                "apps".to_string(),
            ),
        ]));
        let target: Workload = target.into();
        let labels = |prefixes: &[&str]| {
            let mut p = serde_json::to_value(podinfo_primary(Some(2))).unwrap();
            let prefixes: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
            include_labels(&mut p, &target, &prefixes);
            p["metadata"]["labels"].clone()
        };
        // Default: none copied, only the primary's selector label.
        assert_eq!(labels(&[]), serde_json::json!({"app": "podinfo-primary"}));
        assert_eq!(
            labels(&["team.example.com/"]),
            serde_json::json!({"app": "podinfo-primary", "team.example.com/owner": "web"})
        );
        // `*`: all, but the selector label stays the primary's and Flux keys stay behind.
        assert_eq!(
            labels(&["*"]),
            serde_json::json!({"app": "podinfo-primary", "team.example.com/owner": "web",
                "tier": "frontend"})
        );
    }

    #[test]
    fn primary_without_replicas_leaves_them_to_the_autoscaler() {
        let d = podinfo_primary(None);
        assert_eq!(d.replicas(), None);
        let v = serde_json::to_value(&d).unwrap();
        assert!(v["spec"].get("replicas").is_none());
        assert_eq!(primary_revision_id(&d).as_deref(), Some("c0ffee00c0ffee00"));
    }

    #[test]
    fn primary_pod_selectors_follow_the_primary_label() {
        let canary = flagger_istio_canary();
        let target = deployment(json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "selector": {"matchLabels": {"app": "pi"}},
                "template": {
                    "metadata": {"labels": {"app": "pi", "app.kubernetes.io/name": "pi"},
                                 "annotations": {"flagger-id": "stale"}},
                    "spec": {
                        "containers": [{"name": "c", "image": "i"}],
                        "topologySpreadConstraints": [{
                            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": {"app": "pi", "app.kubernetes.io/name": "pi"}}}],
                        "affinity": {"podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [{
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchExpressions": [
                                    {"key": "app", "operator": "In", "values": ["pi", "other"]}]}}],
                            "preferredDuringSchedulingIgnoredDuringExecution": [{
                                "weight": 100,
                                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"app": "podinfo"}}}}]
                        }}
                    }
                }
            }
        }));
        let p = build_primary(
            &canary,
            &target.into(),
            "app",
            "pi",
            "rev",
            &BTreeMap::new(),
            Some(1),
        );
        let v = serde_json::to_value(&p).unwrap();
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(
            pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
            json!({"app": "pi-primary", "app.kubernetes.io/name": "pi"})
        );
        let anti = &pod["affinity"]["podAntiAffinity"];
        assert_eq!(
            anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchExpressions"]
                [0]["values"],
            json!(["pi-primary", "other"])
        );
        // Keyed on the label value, not the Deployment name: `podinfo` is not the value here.
        assert_eq!(
            anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]
                ["matchLabels"],
            json!({"app": "podinfo"})
        );
        assert_eq!(
            v["spec"]["template"]["metadata"],
            json!({"labels": {"app": "pi-primary", "app.kubernetes.io/name": "pi"},
                   "annotations": {"flagger-id": "rev"}})
        );
        assert_eq!(
            v["spec"]["selector"],
            json!({"matchLabels": {"app": "pi-primary"}})
        );
        assert_eq!(v["metadata"]["labels"], json!({"app": "pi-primary"}));
        // Only the Flux opt-outs: the target has no annotations.
        assert_eq!(
            v["metadata"]["annotations"],
            json!({"kustomize.toolkit.fluxcd.io/reconcile": "disabled",
                   "helm.toolkit.fluxcd.io/driftDetection": "disabled"})
        );
    }

    #[test]
    fn primary_revision_id_absent_without_annotation() {
        assert_eq!(primary_revision_id(&podinfo_deployment().into()), None);
    }

    struct Case {
        name: &'static str,
        generation: i64,
        observed: i64,
        spec_replicas: Option<i32>,
        replicas: i32,
        updated: i32,
        available: i32,
        progressing_reason: Option<&'static str>,
        threshold: i32,
        want: Readiness,
    }

    const OK: Case = Case {
        name: "",
        generation: 2,
        observed: 2,
        spec_replicas: Some(2),
        replicas: 2,
        updated: 2,
        available: 2,
        progressing_reason: Some("NewReplicaSetAvailable"),
        threshold: 100,
        want: Readiness::Ready,
    };

    fn with_status(c: &Case) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                namespace: Some("test".into()),
                generation: Some(c.generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: c.spec_replicas,
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(c.observed),
                replicas: Some(c.replicas),
                updated_replicas: Some(c.updated),
                available_replicas: Some(c.available),
                conditions: c.progressing_reason.map(|r| {
                    vec![DeploymentCondition {
                        type_: "Progressing".into(),
                        status: if r == "ProgressDeadlineExceeded" {
                            "False"
                        } else {
                            "True"
                        }
                        .into(),
                        reason: Some(r.into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn not_ready(m: &str) -> Readiness {
        Readiness::NotReady(format!("waiting for rollout to finish: {m}"))
    }

    #[test]
    fn deployment_readiness_table() {
        let cases = [
            Case {
                name: "ready",
                ..OK
            },
            Case {
                name: "generation not observed yet",
                generation: 3,
                progressing_reason: Some("ProgressDeadlineExceeded"),
                want: not_ready("observed deployment generation less than desired generation"),
                ..OK
            },
            Case {
                name: "progress deadline exceeded",
                progressing_reason: Some("ProgressDeadlineExceeded"),
                updated: 1,
                want: Readiness::Failed(
                    "deployment \"podinfo\" exceeded its progress deadline".into(),
                ),
                ..OK
            },
            Case {
                name: "rolling out",
                spec_replicas: Some(3),
                replicas: 3,
                updated: 1,
                want: not_ready("1 out of 3 new replicas have been updated"),
                ..OK
            },
            Case {
                name: "old replicas terminating",
                replicas: 3,
                want: not_ready("1 old replicas are pending termination"),
                ..OK
            },
            Case {
                name: "updated but not available",
                available: 1,
                want: not_ready("1 of 2 (readyThreshold 100%) updated replicas are available"),
                ..OK
            },
            Case {
                name: "threshold floors the count",
                spec_replicas: Some(3),
                replicas: 3,
                updated: 3,
                available: 1,
                threshold: 50,
                want: Readiness::Ready,
                ..OK
            },
            Case {
                name: "threshold not met",
                spec_replicas: Some(4),
                replicas: 4,
                updated: 4,
                available: 1,
                threshold: 50,
                want: not_ready("1 of 2 (readyThreshold 50%) updated replicas are available"),
                ..OK
            },
            Case {
                name: "scaled to zero",
                spec_replicas: Some(0),
                replicas: 0,
                updated: 0,
                available: 0,
                want: Readiness::NotReady("deployment \"podinfo\" is scaled to zero".into()),
                ..OK
            },
            Case {
                name: "no conditions yet",
                progressing_reason: None,
                ..OK
            },
        ];
        for c in cases {
            assert_eq!(
                deployment_readiness(&with_status(&c), c.threshold),
                c.want,
                "case: {}",
                c.name
            );
        }
    }

    #[test]
    fn scale_up_replicas_prefers_target_then_primary_then_one() {
        let d = |r: Option<i32>| -> Workload {
            Deployment {
                spec: Some(DeploymentSpec {
                    replicas: r,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into()
        };
        assert_eq!(scale_up_replicas(&d(Some(3)), Some(&d(Some(5))), None), 3);
        assert_eq!(scale_up_replicas(&d(Some(0)), Some(&d(Some(5))), None), 5);
        assert_eq!(scale_up_replicas(&d(None), Some(&d(Some(0))), None), 1);
        assert_eq!(scale_up_replicas(&d(Some(0)), None, None), 1);
    }

    #[test]
    fn scale_up_replicas_with_an_hpa_starts_at_the_primarys_within_its_bounds() {
        let d = |r: i32| -> Workload {
            Deployment {
                spec: Some(DeploymentSpec {
                    replicas: Some(r),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into()
        };
        let hpa = |min: Option<i32>| hpa(json!({"minReplicas": min, "maxReplicas": 10}));
        // The target's own replicas first, as without an HPA.
        assert_eq!(
            scale_up_replicas(&d(4), Some(&d(7)), Some(&hpa(Some(2)))),
            4
        );
        // Then the primary's, as the HPA sized them (Flagger takes minReplicas, #1209)...
        assert_eq!(
            scale_up_replicas(&d(0), Some(&d(7)), Some(&hpa(Some(3)))),
            7
        );
        // ...within the HPA's bounds...
        assert_eq!(
            scale_up_replicas(&d(0), Some(&d(12)), Some(&hpa(Some(3)))),
            10
        );
        assert_eq!(
            scale_up_replicas(&d(0), Some(&d(2)), Some(&hpa(Some(3)))),
            3
        );
        // ...and the HPA's minReplicas without a primary.
        assert_eq!(scale_up_replicas(&d(0), None, Some(&hpa(Some(3)))), 3);
        assert_eq!(scale_up_replicas(&d(0), Some(&d(0)), Some(&hpa(None))), 1);
        // A DaemonSet has no replicas: "scale up" is 1.
        assert_eq!(
            scale_up_replicas(&podinfo_daemon_set().into(), None, None),
            1
        );
    }

    fn hpa(spec: serde_json::Value) -> HorizontalPodAutoscaler {
        let mut spec = spec;
        spec["scaleTargetRef"] =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"});
        serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec}))
        .unwrap()
    }

    /// A podinfo DaemonSet parked at zero (scale-to-zero nodeSelector next to the user's own),
    /// with Flux and kubectl metadata, a tracked Secret and status as the API server gives it.
    fn podinfo_daemon_set() -> DaemonSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {
                "name": "podinfo", "namespace": "test", "resourceVersion": "42", "generation": 3,
                "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps"},
                "annotations": {"team": "web", "kustomize.toolkit.fluxcd.io/checksum": "x",
                                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                                "deprecated.daemonset.template.generation": "3"}},
            "spec": {
                "minReadySeconds": 5,
                "revisionHistoryLimit": 4,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo", "helm.toolkit.fluxcd.io/name": "x"},
                                 "annotations": {"prometheus.io/scrape": "true"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux",
                                         "flagger.app/scale-to-zero": "true"},
                        "containers": [{"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                            "envFrom": [{"secretRef": {"name": "podinfo-secret"}}]}]
                    }
                }
            },
            "status": {"desiredNumberScheduled": 0, "currentNumberScheduled": 0,
                       "numberMisscheduled": 0, "numberReady": 0, "observedGeneration": 3}
        }))
        .unwrap()
    }

    fn podinfo_primary_daemon_set() -> Workload {
        let tracked = BTreeMap::from([(
            "secret/podinfo-secret".to_string(),
            "0123456789abcdef".to_string(),
        )]);
        let mut canary = flagger_istio_canary();
        canary.spec.target_ref.kind = "DaemonSet".into();
        build_primary(
            &canary,
            &podinfo_daemon_set().into(),
            "app",
            "podinfo",
            "c0ffee00c0ffee00",
            &tracked,
            Some(3),
        )
    }

    #[test]
    fn primary_daemon_set_golden() {
        insta::assert_yaml_snapshot!(podinfo_primary_daemon_set());
    }

    #[test]
    fn primary_daemon_set_is_never_parked_and_has_no_replicas() {
        let p = podinfo_primary_daemon_set();
        assert_eq!(p.kind(), "DaemonSet");
        assert_eq!(p.name(), "podinfo-primary");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(
            v["spec"]["template"]["spec"]["nodeSelector"],
            json!({"kubernetes.io/os": "linux"})
        );
        assert!(v["spec"].get("replicas").is_none());
        assert_eq!(primary_revision_id(&p).as_deref(), Some("c0ffee00c0ffee00"));
        // Only the parking key was the nodeSelector: no empty nodeSelector is written.
        let mut ds = podinfo_daemon_set();
        let pod = ds.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.node_selector = Some(BTreeMap::from([(
            SCALE_TO_ZERO_NODE_SELECTOR.to_string(),
            "true".to_string(),
        )]));
        let p = build_primary(
            &flagger_istio_canary(),
            &ds.into(),
            "app",
            "podinfo",
            "r",
            &BTreeMap::new(),
            None,
        );
        let v = serde_json::to_value(&p).unwrap();
        assert!(
            v["spec"]["template"]["spec"].get("nodeSelector").is_none(),
            "{v}"
        );
    }

    #[test]
    fn every_primary_object_carries_the_flux_opt_outs() {
        let canary = flagger_istio_canary();
        let reference = AutoscalerReference {
            kind: "HorizontalPodAutoscaler".into(),
            name: "podinfo".into(),
            ..Default::default()
        };
        let h = build_primary_hpa(
            &canary,
            &reference,
            &hpa(json!({"maxReplicas": 4})),
            "podinfo-primary",
        );
        let owner = owner_reference(&canary);
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "cfg", "namespace": "test",
                "annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "enabled"}}}))
            .unwrap();
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(json!({"metadata": {"name": "sec", "namespace": "test"}}))
                .unwrap();
        let objects = [
            serde_json::to_value(podinfo_primary(Some(2))).unwrap(),
            serde_json::to_value(podinfo_primary_daemon_set()).unwrap(),
            serde_json::to_value(h).unwrap(),
            serde_json::to_value(crate::canary::tracker::primary_config_map(
                &cm,
                owner.clone(),
            ))
            .unwrap(),
            serde_json::to_value(crate::canary::tracker::primary_secret(&secret, owner)).unwrap(),
        ];
        for o in objects {
            for (k, v) in FLUX_DISABLED_ANNOTATIONS {
                assert_eq!(o["metadata"]["annotations"][k], *v, "{}", o["kind"]);
            }
        }
    }

    #[test]
    fn daemon_set_target_must_roll_update() {
        assert_eq!(check_target(&podinfo_daemon_set().into()), Ok(()));
        assert_eq!(check_target(&podinfo_deployment().into()), Ok(()));
        let mut ds = podinfo_daemon_set();
        ds.spec.as_mut().unwrap().update_strategy =
            Some(serde_json::from_value(json!({"type": "OnDelete"})).unwrap());
        assert_eq!(
            check_target(&ds.into()),
            Err("daemonset podinfo.test must have RollingUpdate strategy but has OnDelete".into())
        );
    }

    fn ds_with(
        generation: i64,
        observed: i64,
        desired: i32,
        updated: i32,
        available: i32,
        parked: bool,
    ) -> DaemonSet {
        let mut ds = podinfo_daemon_set();
        let pod = ds.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        if !parked {
            pod.node_selector = None;
        }
        ds.metadata.generation = Some(generation);
        ds.status = Some(
            serde_json::from_value(json!({
            "observedGeneration": observed,
            "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
            "numberMisscheduled": 0, "numberReady": available,
            "updatedNumberScheduled": updated, "numberAvailable": available}))
            .unwrap(),
        );
        ds
    }

    #[test]
    fn daemon_set_readiness_table() {
        let cases: Vec<(&str, DaemonSet, i32, Readiness)> = vec![
            (
                "ready",
                ds_with(2, 2, 3, 3, 3, false),
                100,
                Readiness::Ready,
            ),
            (
                "generation not observed",
                ds_with(3, 2, 3, 3, 3, false),
                100,
                not_ready("observed daemonset generation less than desired generation"),
            ),
            (
                "rolling out",
                ds_with(2, 2, 3, 1, 3, false),
                100,
                not_ready("1 out of 3 new pods have been updated"),
            ),
            (
                "updated but not available",
                ds_with(2, 2, 3, 3, 2, false),
                100,
                not_ready("2 of 3 (readyThreshold 100%) pods are available"),
            ),
            (
                "threshold floors",
                ds_with(2, 2, 3, 3, 1, false),
                50,
                Readiness::Ready,
            ),
            (
                "threshold not met",
                ds_with(2, 2, 4, 4, 1, false),
                50,
                not_ready("1 of 2 (readyThreshold 50%) pods are available"),
            ),
            (
                "parked on the scale-to-zero nodeSelector",
                ds_with(2, 2, 0, 0, 0, true),
                100,
                Readiness::NotReady("daemonset \"podinfo\" is scaled to zero".into()),
            ),
            (
                "unparked but not yet observed",
                ds_with(3, 2, 0, 0, 0, false),
                100,
                not_ready("observed daemonset generation less than desired generation"),
            ),
            (
                "no node selected",
                ds_with(2, 2, 0, 0, 0, false),
                100,
                Readiness::Ready,
            ),
        ];
        for (name, ds, threshold, want) in cases {
            assert_eq!(daemon_set_readiness(&ds, threshold), want, "case: {name}");
            assert_eq!(
                Workload::DaemonSet(ds).readiness(threshold),
                want,
                "case: {name}"
            );
        }
    }

    #[test]
    fn scale_patches() {
        let parked: Workload = ds_with(1, 1, 0, 0, 0, true).into();
        let running: Workload = ds_with(1, 1, 1, 1, 1, false).into();
        assert_eq!(scale_patch(&parked, 0), None);
        assert_eq!(
            scale_patch(&parked, 2),
            Some(
                json!({"spec": {"template": {"spec": {"nodeSelector": {"flagger.app/scale-to-zero": null}}}}})
            )
        );
        assert_eq!(
            scale_patch(&running, 0),
            Some(
                json!({"spec": {"template": {"spec": {"nodeSelector": {"flagger.app/scale-to-zero": "true"}}}}})
            )
        );
        assert_eq!(scale_patch(&running, 1), None);
        let mut d = podinfo_deployment();
        d.spec.as_mut().unwrap().replicas = Some(2);
        let d: Workload = d.into();
        assert_eq!(scale_patch(&d, 2), None);
        assert_eq!(scale_patch(&d, 0), Some(json!({"spec": {"replicas": 0}})));
    }

    #[test]
    fn scale_to_zero_patch_applied_keeps_the_revision() {
        // The JSON merge patch, applied as the API server does, changes no revision hash.
        let running = ds_with(1, 1, 1, 1, 1, false);
        let mut v = serde_json::to_value(&running).unwrap();
        let p = scale_patch(&running.clone().into(), 0).unwrap();
        json_patch::merge(&mut v, &p);
        let parked: DaemonSet = serde_json::from_value(v).unwrap();
        let sel = parked
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .node_selector
            .clone();
        assert_eq!(
            sel,
            Some(BTreeMap::from([(
                SCALE_TO_ZERO_NODE_SELECTOR.to_string(),
                "true".to_string()
            )]))
        );
        assert_eq!(
            crate::canary::tracker::revision(&parked.spec.as_ref().unwrap().template),
            crate::canary::tracker::revision(&running.spec.as_ref().unwrap().template)
        );
    }

    #[test]
    fn replicas_ownership_from_managed_fields() {
        let mut d = podinfo_deployment();
        d.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({"manager": "pennant", "operation": "Apply",
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}))
            .unwrap(),
            serde_json::from_value(
                json!({"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {}}}),
            )
            .unwrap(),
        ]);
        let w: Workload = d.clone().into();
        assert!(owns_replicas(&w, "pennant"));
        assert!(!owns_replicas(&w, "kube-controller-manager"));
        // After the handover pennant's apply no longer lists replicas.
        d.metadata.managed_fields.as_mut().unwrap()[0].fields_v1 =
            Some(serde_json::from_value(json!({"f:spec": {"f:template": {}}})).unwrap());
        assert!(!owns_replicas(&d.into(), "pennant"));
        assert!(!owns_replicas(&podinfo_daemon_set().into(), "pennant"));
    }

    #[test]
    fn slimmed_managed_fields_keep_only_the_replicas_ownership() {
        let entry = |manager: &str, op: &str, fields: Value| -> ManagedFieldsEntry {
            serde_json::from_value(json!({"manager": manager, "operation": op,
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": fields}))
            .unwrap()
        };
        let big = json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}});
        let no_replicas = json!({"f:spec": {"f:template": {}}});
        // (entries, pennant owns replicas after slimming, entries kept)
        let cases = [
            (vec![entry("pennant", "Apply", big.clone())], true, 1),
            (
                vec![entry("pennant", "Apply", no_replicas.clone())],
                false,
                1,
            ),
            (vec![entry("pennant", "Update", big.clone())], false, 0),
            (vec![entry("kubectl", "Apply", big.clone())], false, 0),
            (
                vec![
                    entry("kube-controller-manager", "Update", json!({"f:status": {}})),
                    entry("pennant", "Apply", big.clone()),
                ],
                true,
                1,
            ),
            (vec![], false, 0),
        ];
        for (entries, owns, kept) in cases {
            let mut d = podinfo_deployment();
            d.metadata.managed_fields = Some(entries.clone());
            let before = owns_replicas(&d.clone().into(), "pennant");
            d.metadata.annotations = Some(BTreeMap::from([
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{}".into(),
                ),
                ("keep".into(), "me".into()),
            ]));
            slim_managed_fields(&mut d.metadata, "pennant");
            assert_eq!(
                owns_replicas(&d.clone().into(), "pennant"),
                owns,
                "{entries:?}"
            );
            assert_eq!(before, owns, "slimming changed the answer for {entries:?}");
            let left = d.metadata.managed_fields.as_ref().map_or(0, Vec::len);
            assert_eq!(left, kept, "{entries:?}");
            if let Some(m) = d.metadata.managed_fields.as_ref().and_then(|m| m.first()) {
                assert!(
                    m.fields_v1
                        .as_ref()
                        .is_none_or(|f| f.0.pointer("/f:spec/f:template").is_none())
                );
            }
            assert_eq!(
                d.metadata.annotations,
                Some(BTreeMap::from([("keep".into(), "me".into())]))
            );
        }
    }

    #[test]
    fn primary_hpa_golden() {
        let canary = flagger_istio_canary();
        let reference = AutoscalerReference {
            api_version: Some("autoscaling/v2".into()),
            kind: "HorizontalPodAutoscaler".into(),
            name: "podinfo".into(),
            ..Default::default()
        };
        let mut target = hpa(json!({
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 99}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}));
        target.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            (
                "kustomize.toolkit.fluxcd.io/name".to_string(),
                "apps".to_string(),
            ),
        ]));
        target.metadata.resource_version = Some("7".into());
        insta::assert_yaml_snapshot!(build_primary_hpa(
            &canary,
            &reference,
            &target,
            "podinfo-primary"
        ));
    }

    #[test]
    fn primary_hpa_takes_the_primary_scaler_replicas_overrides() {
        let canary = flagger_istio_canary();
        let target = hpa(json!({"minReplicas": 2, "maxReplicas": 4}));
        let reference = |min, max| AutoscalerReference {
            kind: "HorizontalPodAutoscaler".into(),
            name: "podinfo".into(),
            primary_scaler_replicas: Some(crate::api::ScalerReplicas {
                min_replicas: min,
                max_replicas: max,
            }),
            ..Default::default()
        };
        let bounds = |r: &AutoscalerReference| {
            let h = build_primary_hpa(&canary, r, &target, "podinfo-primary");
            (h.spec.min_replicas, h.spec.max_replicas)
        };
        assert_eq!(bounds(&reference(Some(3), Some(10))), (Some(3), 10));
        assert_eq!(bounds(&reference(None, Some(10))), (Some(2), 10));
        assert_eq!(bounds(&reference(Some(1), None)), (Some(1), 4));
    }
}
