//! The primary Deployment and workload readiness, PURE (Flagger §2.5, §2.7).
//!
//! [`build_primary`] gives the whole desired `<target>-primary` Deployment; the caller applies it
//! with server-side apply both to create the primary and to promote a revision (the
//! `flagger-id` annotation it stamps on the pod template starts the rolling update).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use super::machine::Readiness;
use super::tracker::{FLUX_TOOLKIT_MARKER, rewrite_config_refs};
use crate::api::Canary;

/// Selector labels tried, in order, to find the one that tells target pods apart (Flagger's
/// `-selector-labels` default).
pub const DEFAULT_SELECTOR_LABELS: &[&str] = &["app", "name", "app.kubernetes.io/name"];

/// Pod template annotation carrying the promoted revision id (Flagger writes a random UUID here;
/// pennant writes `machine::revision_id`, so a restarted controller can tell what is promoted).
pub const REVISION_ANNOTATION: &str = "flagger-id";

/// Annotations never copied from the target to the primary Deployment: `kubectl apply`'s record
/// of the target, and the Deployment controller's own bookkeeping (`deployment.kubernetes.io/*`,
/// e.g. `revision`), which must stay the primary's own.
const SKIPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];
const SKIPPED_ANNOTATION_PREFIXES: &[&str] = &["deployment.kubernetes.io/"];

/// Controller owner reference to the Canary (`flagger.app/v1beta1`, `controller: true`,
/// `blockOwnerDeletion: true`), set on every object pennant generates for it.
pub fn owner_reference(canary: &Canary) -> OwnerReference {
    OwnerReference {
        api_version: Canary::api_version(&()).into_owned(),
        kind: Canary::kind(&()).into_owned(),
        name: canary.metadata.name.clone().unwrap_or_default(),
        uid: canary.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn deployment_id(d: &Deployment) -> String {
    format!(
        "{}.{}",
        d.metadata.name.as_deref().unwrap_or(""),
        d.metadata.namespace.as_deref().unwrap_or("")
    )
}

/// The selector label of the target and its value: the first of `candidates` present in
/// `spec.selector.matchLabels` (see [`DEFAULT_SELECTOR_LABELS`]).
///
/// Error, as Flagger's: `deployment <name>.<ns> spec.selector.matchLabels must contain one of
/// [app name app.kubernetes.io/name]`.
pub fn selector_label(
    target: &Deployment,
    candidates: &[String],
) -> Result<(String, String), String> {
    let labels = target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref());
    candidates
        .iter()
        .find_map(|c| {
            labels
                .and_then(|l| l.get(c))
                .map(|v| (c.clone(), v.clone()))
        })
        .ok_or_else(|| {
            format!(
                "deployment {} spec.selector.matchLabels must contain one of [{}]",
                deployment_id(target),
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

/// The desired primary Deployment for the target (Flagger's `createPrimaryDeployment` and
/// `Promote` in one builder).
///
/// - name `<target>-primary`, in the target's namespace; controller owner: the Canary;
/// - labels: only `<label>: <value>-primary` (Flagger's `-include-label-prefix` default copies
///   none); annotations: the target's, except Flux keys (`*toolkit.fluxcd.io*`),
///   `kubectl.kubernetes.io/last-applied-configuration` and `deployment.kubernetes.io/*`;
/// - selector `{<label>: <value>-primary}` only;
/// - `progressDeadlineSeconds`, `minReadySeconds`, `revisionHistoryLimit`, `strategy` copied;
/// - pod template: labels copied (without Flux keys) with `<label>` set to `<value>-primary`;
///   annotations copied (without Flux keys) plus `flagger-id: <revision_id>`; the pod spec with
///   tracked ConfigMap/Secret refs pointed at their `-primary` copies
///   ([`rewrite_config_refs`]) and the label selectors of topologySpreadConstraints and
///   podAntiAffinity terms that select `<label>: <value>` changed to `<value>-primary`;
/// - `replicas`: `Some(n)` sets it; `None` leaves it out of the applied object, so an autoscaler
///   (or the previous value) keeps ownership.
pub fn build_primary(
    canary: &Canary,
    target: &Deployment,
    label: &str,
    value: &str,
    revision_id: &str,
    tracked: &BTreeMap<String, String>,
    replicas: Option<i32>,
) -> Deployment {
    let primary_value = format!("{value}-primary");
    let spec = target.spec.clone().unwrap_or_default();
    let tmpl_meta = spec.template.metadata.clone().unwrap_or_default();

    let mut tmpl_labels = filtered(tmpl_meta.labels.as_ref(), not_flux);
    tmpl_labels.insert(label.to_string(), primary_value.clone());
    let mut tmpl_annotations = filtered(tmpl_meta.annotations.as_ref(), not_flux);
    tmpl_annotations.insert(REVISION_ANNOTATION.to_string(), revision_id.to_string());

    let mut pod = spec.template.spec.clone().unwrap_or_default();
    rewrite_config_refs(&mut pod, tracked);
    rewrite_pod_selectors(&mut pod, label, value, &primary_value);

    let annotations = filtered(target.metadata.annotations.as_ref(), |k| {
        not_flux(k)
            && !SKIPPED_ANNOTATIONS.contains(&k)
            && !SKIPPED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    let selector = BTreeMap::from([(label.to_string(), primary_value.clone())]);
    let target_name = target
        .metadata
        .name
        .as_deref()
        .unwrap_or(&canary.spec.target_ref.name);

    Deployment {
        metadata: ObjectMeta {
            name: Some(format!("{target_name}-primary")),
            namespace: target
                .metadata
                .namespace
                .clone()
                .or_else(|| canary.metadata.namespace.clone()),
            labels: Some(selector.clone()),
            annotations: some_if_any(annotations),
            owner_references: Some(vec![owner_reference(canary)]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            strategy: spec.strategy.clone(),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(tmpl_labels),
                    annotations: Some(tmpl_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            paused: None,
        }),
        status: None,
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
pub fn primary_revision_id(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
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

/// Replicas to scale the target up to for a new run (Flagger's `ScaleFromZero`): the target's
/// `spec.replicas` if > 0, else the primary's if > 0, else 1.
pub fn scale_up_replicas(target: &Deployment, primary: Option<&Deployment>) -> i32 {
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).filter(|r| *r > 0);
    replicas(target)
        .or_else(|| primary.and_then(replicas))
        .unwrap_or(1)
}

/// Fixtures shared by the builders' tests: the compat manifests under `tests/fixtures/`.
#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::apps::v1::Deployment;

    use crate::api::Canary;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                $path
            ))
        };
    }

    fn with_identity(mut c: Canary) -> Canary {
        c.metadata.uid = Some("6f1c0a4e-0000-4000-8000-000000000001".into());
        c
    }

    /// The article's Canary (`web-app` in `production`), with a uid as the API server gives it.
    pub fn article_canary() -> Canary {
        with_identity(serde_saphyr::from_str(fixture!("article-canary.yaml")).unwrap())
    }

    /// Flagger's Istio example Canary (`podinfo` in `test`), with a uid.
    pub fn flagger_istio_canary() -> Canary {
        with_identity(
            serde_saphyr::from_str(fixture!("flagger/artifacts_examples_istio-canary.yaml"))
                .unwrap(),
        )
    }

    /// Flagger's e2e podinfo Deployment, placed in namespace `test` as the e2e applies it.
    pub fn podinfo_deployment() -> Deployment {
        let mut d: Deployment =
            serde_saphyr::from_str(fixture!("flagger/test_workloads_deployment.yaml")).unwrap();
        d.metadata.namespace = Some("test".into());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
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
    fn owner_reference_points_at_the_canary() {
        let c = flagger_istio_canary();
        let o = owner_reference(&c);
        assert_eq!(o.api_version, "flagger.app/v1beta1");
        assert_eq!(o.kind, "Canary");
        assert_eq!(o.name, "podinfo");
        assert_eq!(o.uid, "6f1c0a4e-0000-4000-8000-000000000001");
        assert_eq!(
            (o.controller, o.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn selector_label_takes_the_first_candidate_present() {
        let d = deployment(json!({"metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "podinfo", "name": "pi"}},
                     "template": {}}}));
        assert_eq!(
            selector_label(&d, &labels()).unwrap(),
            ("name".into(), "pi".into())
        );
        assert_eq!(
            selector_label(&podinfo_deployment(), &labels()).unwrap(),
            ("app".into(), "podinfo".into())
        );
    }

    #[test]
    fn selector_label_error_names_the_candidates() {
        let d = deployment(json!({"metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}, "template": {}}}));
        assert_eq!(
            selector_label(&d, &labels()).unwrap_err(),
            "deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
    }

    fn podinfo_primary(replicas: Option<i32>) -> Deployment {
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
            &target,
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
    fn primary_without_replicas_leaves_them_to_the_autoscaler() {
        let d = podinfo_primary(None);
        assert_eq!(d.spec.as_ref().unwrap().replicas, None);
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
            &target,
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
        assert!(v["metadata"].get("annotations").is_none());
    }

    #[test]
    fn primary_revision_id_absent_without_annotation() {
        assert_eq!(primary_revision_id(&podinfo_deployment()), None);
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
        let d = |r: Option<i32>| Deployment {
            spec: Some(DeploymentSpec {
                replicas: r,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(scale_up_replicas(&d(Some(3)), Some(&d(Some(5)))), 3);
        assert_eq!(scale_up_replicas(&d(Some(0)), Some(&d(Some(5)))), 5);
        assert_eq!(scale_up_replicas(&d(None), Some(&d(Some(0)))), 1);
        assert_eq!(scale_up_replicas(&d(Some(0)), None), 1);
    }
}
