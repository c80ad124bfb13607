//! Build, PURE: every object a decision writes, from the Canary, the decision and the
//! observation, as one [`Desired`] value with a field per object. `execute` applies it (and
//! adapts it to what the user owns, `respect_existing`); it builds nothing itself.

use serde::Serialize;
use serde_json::Value;

use super::context::{Error, Settings};
use super::machine::{Action, Decision, revision_id};
use super::observe::Observation;
use super::services::{self, Services};
use super::{tracker, validate, workload};
use crate::api::Canary;
use crate::api::meta::owner_reference;
use crate::router::{self, Weights};

/// What one decision writes. A field is empty when no action of the decision writes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Desired {
    /// The primary workload and its config copies: with `EnsurePrimary` while there is no
    /// primary (it is never updated then), with `Promote` always.
    pub primary: Option<Primary>,
    /// `<hpa>-primary` (`EnsurePrimary`, `Promote`), with an HPA `autoscalerRef`.
    pub primary_hpa: Option<Value>,
    /// `<apex>-primary` Service (`EnsureServices`).
    pub primary_service: Option<Value>,
    /// `<apex>-canary` Service (`EnsureServices`).
    pub canary_service: Option<Value>,
    /// The apex Service (`EnsureRoutes`); none without the target's selector (the target was
    /// deleted mid-run: only the routing objects are updated).
    pub apex_service: Option<Value>,
    /// The router's objects at the decision's weights (`EnsureRoutes`), built from the status
    /// being written (the session-affinity cookies it holds).
    pub routes: Vec<Value>,
}

/// The primary workload with the `-primary` copies of the tracked configs, applied in this
/// order: the copies first, so the primary's pods never reference a missing one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Primary {
    pub config_maps: Vec<Value>,
    pub secrets: Vec<Value>,
    pub workload: Value,
    /// `spec.replicas` is left to an autoscaler (`autoscalerRef`, at promotion): the live
    /// primary's replicas are handed over before the apply drops the field.
    pub replicas_to_autoscaler: bool,
}

/// Every object `decision`'s actions write.
pub fn build(
    canary: &Canary,
    decision: &Decision,
    obs: &Observation,
    settings: &Settings,
) -> Result<Desired, Error> {
    let mut d = Desired::default();
    let services = services(canary, obs);
    for action in &decision.actions {
        match action {
            Action::EnsurePrimary => {
                if obs.primary.is_none() {
                    let target = obs.observed.target.as_ref();
                    let id = target
                        .map(|t| revision_id(&t.revision, &t.configs))
                        .unwrap_or_default();
                    let replicas = target.map(|t| t.scale_up_replicas);
                    d.primary = Some(primary(canary, obs, settings, &id, replicas)?);
                }
                d.primary_hpa = primary_hpa(canary, obs)?;
            }
            Action::Promote { revision_id } => {
                // Copy the target's replicas, except with an HPA (autoscalerRef): the primary's
                // HPA owns them then (Flagger §2.5), so they are left out of the applied object.
                let replicas = match validate::hpa_ref(&canary.spec) {
                    Some(_) => None,
                    None => obs.observed.target.as_ref().map(|t| t.scale_up_replicas),
                };
                d.primary = Some(primary(canary, obs, settings, revision_id, replicas)?);
                d.primary_hpa = primary_hpa(canary, obs)?;
            }
            Action::EnsureServices => {
                let s = services.as_ref().ok_or_else(no_selector)?;
                d.primary_service = Some(to_value(&s.primary)?);
                d.canary_service = Some(to_value(&s.canary)?);
            }
            Action::EnsureRoutes(weights) => {
                d.apex_service = services.as_ref().map(|s| to_value(&s.apex)).transpose()?;
                let provider = validate::provider(&canary.spec, &settings.default_provider);
                let r = router::router_for(provider, &settings.ingress_prefix)
                    .ok_or_else(|| Error::Invalid(format!("no router for provider {provider}")))?;
                let mut next = canary.clone();
                next.status = Some(decision.status.clone());
                d.routes = r
                    .build(&next, *weights, &obs.route_inputs)
                    .map_err(Error::RouterBuild)?;
            }
            Action::ScaleTarget(_)
            | Action::ScalePrimary(_)
            | Action::RunHooks(..)
            | Action::RetireTarget(_) => {}
        }
    }
    Ok(d)
}

/// The apex, `-primary` and `-canary` Services; `None` while the target's selector label is
/// unknown.
pub fn services(canary: &Canary, obs: &Observation) -> Option<Services> {
    let (label, value) = obs.selector.as_ref()?;
    Some(services::services(
        canary,
        label,
        value,
        &obs.discovered_ports,
    ))
}

/// The routing objects of `provider`'s router for `canary` at 100/0, built from the live
/// `inputs` (`Router::inputs`); `None` without a router.
pub fn routes_at_primary(
    canary: &Canary,
    provider: &str,
    ingress_prefix: &str,
    inputs: &[Value],
) -> Option<Result<Vec<Value>, String>> {
    let r = router::router_for(provider, ingress_prefix)?;
    let primary_only = Weights {
        primary: 100,
        canary: 0,
        mirror: false,
    };
    Some(r.build(canary, primary_only, inputs))
}

fn no_selector() -> Error {
    Error::Invalid("target selector label unknown".into())
}

/// The primary workload (and the `-primary` copies of tracked configs) from the target.
/// `replicas: None` leaves them to an autoscaler.
fn primary(
    canary: &Canary,
    obs: &Observation,
    settings: &Settings,
    revision_id: &str,
    replicas: Option<i32>,
) -> Result<Primary, Error> {
    let (Some(target), Some(state)) = (&obs.target, &obs.observed.target) else {
        return Err(Error::TargetNotFound("target not found".into()));
    };
    let (label, value) = obs.selector.as_ref().ok_or_else(no_selector)?;
    let owner = owner_reference(canary);
    let config_maps = obs
        .config_maps
        .iter()
        .map(|cm| to_value(&tracker::primary_config_map(cm, owner.clone())))
        .collect::<Result<_, _>>()?;
    let secrets = obs
        .secrets
        .iter()
        .map(|s| to_value(&tracker::primary_secret(s, owner.clone())))
        .collect::<Result<_, _>>()?;
    let built = workload::build_primary(
        canary,
        target,
        label,
        value,
        revision_id,
        &state.configs,
        replicas,
    );
    let mut workload = to_value(&built)?;
    workload::include_labels(&mut workload, target, &settings.include_label_prefix);
    Ok(Primary {
        config_maps,
        secrets,
        workload,
        replicas_to_autoscaler: replicas.is_none(),
    })
}

/// The `<hpa>-primary` HorizontalPodAutoscaler when the Canary has an HPA `autoscalerRef`
/// (observe found it, else the Canary is invalid and never gets here). Built with every
/// EnsurePrimary and Promote, i.e. at initialisation, at promotion and on every idle
/// reconcile: unlike Flagger (which updates it only while Promoting), a change to the target's
/// HPA reaches the primary's without waiting for a release, since the HPA is not part of the
/// revision; it is never touched mid-analysis.
fn primary_hpa(canary: &Canary, obs: &Observation) -> Result<Option<Value>, Error> {
    let (Some(reference), Some(hpa)) = (validate::hpa_ref(&canary.spec), &obs.autoscaler) else {
        return Ok(None);
    };
    let primary_name = format!("{}-primary", canary.spec.target_ref.name);
    to_value(&workload::build_primary_hpa(
        canary,
        reference,
        hpa,
        &primary_name,
    ))
    .map(Some)
}

fn to_value<T: Serialize>(obj: &T) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(Error::encode)
}

#[cfg(test)]
mod tests {
    //! Goldens of whole `Desired` sets: Flagger's Istio example Canary (HPA `autoscalerRef`,
    //! port discovery) on Flagger's podinfo Deployment with a tracked Secret, per provider and
    //! phase, with the actions `decide` returns in that phase.

    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::api::fixtures::{flagger_istio_canary, podinfo_deployment, podinfo_hpa};
    use crate::api::{CanaryPhase, CanaryStatus};
    use crate::canary::machine::{Observed, PrimaryState, Probes, Readiness, TargetState};
    use crate::canary::workload::Workload;

    const REV: &str = "sha256:2222222222222222";

    fn settings() -> Settings {
        Settings {
            default_provider: "kubernetes".into(),
            metrics_server: String::new(),
            selector_labels: vec!["app".into()],
            config_tracking: true,
            ingress_prefix: "nginx.ingress.kubernetes.io".into(),
            include_label_prefix: vec![],
            namespace: None,
            notify: Default::default(),
            cluster_name: String::new(),
            max_concurrent_canaries: 0,
            concurrent: 0,
        }
    }

    /// The example Canary with `provider` and what that router needs (an Ingress to copy for
    /// NGINX, a Gateway for the Gateway API), and the live inputs its router reads.
    fn canary_for(provider: &str) -> (Canary, Vec<Value>) {
        let mut c = flagger_istio_canary();
        c.spec.provider = Some(provider.into());
        let mut inputs = vec![];
        match provider {
            "nginx" => {
                c.spec.ingress_ref = Some(
                    serde_json::from_value(json!({
                        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"
                    }))
                    .unwrap(),
                );
                inputs.push(json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": "podinfo", "namespace": "test",
                        "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                    "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [
                        {"pathType": "Prefix", "path": "/",
                         "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}
                    ]}}]}
                }));
            }
            "gatewayapi:v1" => {
                c.spec.service.gateway_refs = serde_json::from_value(
                    json!([{"name": "gateway", "namespace": "istio-ingress"}]),
                )
                .unwrap();
            }
            _ => {}
        }
        (c, inputs)
    }

    fn secret() -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("podinfo-secret".into()),
                namespace: Some("test".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "value".into(),
                ByteString(b"s3cr3t".to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }

    fn observation(canary: &Canary, route_inputs: Vec<Value>, primary: bool) -> Observation {
        let target = podinfo_deployment();
        let pod = target.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let live_primary = primary.then(|| {
            let mut p = podinfo_deployment();
            p.metadata.name = Some("podinfo-primary".into());
            Workload::Deployment(p)
        });
        Observation {
            observed: Observed {
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                target: Some(TargetState {
                    revision: REV.into(),
                    configs: BTreeMap::from([("secret/podinfo-secret".into(), "c0ffee".into())]),
                    readiness: Readiness::Ready,
                    scale_up_replicas: 2,
                    ready_replicas: 2,
                }),
                primary: primary.then_some(PrimaryState {
                    readiness: Readiness::Ready,
                    revision_id: None,
                    replicas: Some(2),
                }),
                probes: Probes::default(),
                invalid: vec![],
                unsupported: vec![],
                target_matches_primary: None,
                routes_pending: None,
                concurrency: vec![],
            },
            target: Some(Workload::Deployment(target)),
            primary: live_primary,
            autoscaler: Some(podinfo_hpa()),
            selector: Some(("app".into(), "podinfo".into())),
            config_maps: vec![],
            secrets: vec![secret()],
            route_inputs,
            discovered_ports: services::discovered_ports(canary, &pod),
            claim_conflict: false,
            namespace_limit: None,
        }
    }

    fn split(canary: i32) -> Weights {
        Weights {
            primary: 100 - canary,
            canary,
            mirror: false,
        }
    }

    /// (name, phase, canary weight, actions, a primary exists)
    fn phases() -> Vec<(&'static str, CanaryPhase, i32, Vec<Action>, bool)> {
        vec![
            (
                "initializing",
                CanaryPhase::Initializing,
                0,
                vec![Action::EnsurePrimary, Action::EnsureServices],
                false,
            ),
            (
                "initialized",
                CanaryPhase::Initialized,
                0,
                vec![
                    Action::EnsurePrimary,
                    Action::EnsureServices,
                    Action::EnsureRoutes(split(0)),
                    Action::ScaleTarget(0),
                ],
                true,
            ),
            (
                "progressing_30",
                CanaryPhase::Progressing,
                30,
                vec![Action::EnsureServices, Action::EnsureRoutes(split(30))],
                true,
            ),
            (
                "promoting",
                CanaryPhase::Promoting,
                30,
                vec![Action::Promote {
                    revision_id: revision_id(
                        REV,
                        &BTreeMap::from([("secret/podinfo-secret".into(), "c0ffee".into())]),
                    ),
                }],
                true,
            ),
        ]
    }

    #[test]
    fn desired_sets_per_provider_and_phase() {
        for provider in ["istio", "nginx", "gatewayapi:v1", "kubernetes"] {
            let (canary, inputs) = canary_for(provider);
            for (phase_name, phase, weight, actions, primary) in phases() {
                let decision = Decision {
                    status: CanaryStatus {
                        phase: Some(phase),
                        canary_weight: weight,
                        ..Default::default()
                    },
                    actions,
                    notices: vec![],
                    requeue_after: None,
                };
                let obs = observation(&canary, inputs.clone(), primary);
                let desired = build(&canary, &decision, &obs, &settings()).unwrap();
                let name = format!("{}_{phase_name}", provider.replace(':', "_"));
                insta::assert_yaml_snapshot!(name, desired);
            }
        }
    }

    #[test]
    fn ensure_primary_never_rebuilds_an_existing_primary_but_promote_does() {
        let (canary, _) = canary_for("kubernetes");
        let decision = |actions| Decision {
            status: CanaryStatus::default(),
            actions,
            notices: vec![],
            requeue_after: None,
        };
        let with_primary = observation(&canary, vec![], true);
        let d = build(
            &canary,
            &decision(vec![Action::EnsurePrimary]),
            &with_primary,
            &settings(),
        )
        .unwrap();
        assert_eq!(d.primary, None);
        assert!(d.primary_hpa.is_some(), "the HPA follows the target's");
        let d = build(
            &canary,
            &decision(vec![Action::Promote {
                revision_id: "r".into(),
            }]),
            &with_primary,
            &settings(),
        )
        .unwrap();
        let p = d.primary.unwrap();
        assert!(p.replicas_to_autoscaler, "an HPA owns the replicas");
        assert_eq!(p.workload["spec"].get("replicas"), None);
        assert_eq!(p.secrets[0]["metadata"]["name"], "podinfo-secret-primary");
    }

    #[test]
    fn services_without_a_selector_are_an_invalid_canary_but_routes_still_build() {
        let (canary, _) = canary_for("istio");
        let mut obs = observation(&canary, vec![], true);
        obs.selector = None;
        let decision = |actions| Decision {
            status: CanaryStatus::default(),
            actions,
            notices: vec![],
            requeue_after: None,
        };
        let err = build(
            &canary,
            &decision(vec![Action::EnsureServices]),
            &obs,
            &settings(),
        )
        .unwrap_err();
        assert_eq!(err.label(), "invalid");
        let d = build(
            &canary,
            &decision(vec![Action::EnsureRoutes(split(0))]),
            &obs,
            &settings(),
        )
        .unwrap();
        assert_eq!(d.apex_service, None);
        assert_eq!(d.routes.len(), 3, "a VirtualService, two DestinationRules");
    }
}
