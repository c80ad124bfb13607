//! Observe: gather what `machine::decide` needs, from the reflector stores (workloads) and, for
//! the few objects pennant does not cache, from the API.
//!
//! ConfigMaps and Secrets are watched metadata-only (a change triggers a reconcile) and read with
//! a GET only for the ones the target's pod spec references: caching every Secret's data in a
//! cluster (Helm release secrets are megabytes) would cost far more memory than it saves.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, Error};
use super::machine::{Observed, PrimaryState, Probe, Probes, TargetState};
use super::workload::{self, Workload};
use super::{tracker, validate};
use crate::analysis::{
    MetricCheck, MetricOutcome, MetricsBackends, PrometheusProvider, SecretData, TemplateSource,
};
use crate::api::{Canary, CanaryPhase, CanarySpec, MetricTemplate};
use crate::router::{self, Weights};
use crate::webhook::HookKind;
use futures::future::BoxFuture;

/// Everything observed for one reconcile: the machine's view plus the raw objects the builders
/// need to apply its actions.
pub struct Observation {
    pub observed: Observed,
    pub target: Option<Workload>,
    pub primary: Option<Workload>,
    /// The target's HorizontalPodAutoscaler (`autoscalerRef`), when the Canary has one.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Selector label key and value of the target (`app=podinfo`).
    pub selector: Option<(String, String)>,
    /// The tracked ConfigMaps/Secrets themselves (for the `-primary` copies).
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    /// The live objects the router's `build` reads (`Router::inputs`), as found in the caches.
    pub route_inputs: Vec<serde_json::Value>,
    /// `service.portDiscovery`: the target's other container ports, for every Service.
    pub discovered_ports: Vec<k8s_openapi::api::core::v1::ServicePort>,
    /// Refused because an older Canary claims one of its objects: looked at again later, since
    /// that claim can go away without any event on this Canary.
    pub claim_conflict: bool,
    /// The namespace's concurrency limit (`concurrency::NAMESPACE_ANNOTATION`), read only when
    /// the Canary may ask for a slot ([`may_ask_for_slot`]).
    pub namespace_limit: Option<u32>,
}

/// Read the target, the primary and the tracked configs; validate the spec.
pub async fn observe(canary: &Canary, ctx: &Context) -> Result<Observation, Error> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let spec = &canary.spec;
    let mut invalid = validate::invalid(spec, &ctx.settings.default_provider);
    let provider = validate::provider(spec, &ctx.settings.default_provider);
    let unsupported = validate::unsupported(spec, provider);
    // The router's inputs, and a trial build: a spec or an input the router cannot express
    // (no user Ingress, no apex backend in it, a match it cannot translate) stalls the Canary
    // before anything is written.
    let mut route_inputs = vec![];
    let mut routes_pending = None;
    if invalid.is_empty() {
        match route_check(canary, ctx) {
            Ok((inputs, pending)) => {
                route_inputs = inputs;
                routes_pending = pending;
            }
            Err(e) => invalid.push(e),
        }
    }
    // One Canary per target and per written object: the oldest valid claim wins, the others
    // are refused (Flagger only logs, and both fight over the objects). Only the Canaries the
    // index says share an object with this one are read and validated.
    let key = |c: &Canary| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.metadata.name.clone(),
        )
    };
    let mut claim_conflict = false;
    let claimants = ctx.index.read().expect("lock").claimants(canary);
    let mut others: Vec<_> = claimants
        .iter()
        .filter_map(|k| {
            ctx.canaries
                .get(&ObjectRef::new(&k.name).within(&k.namespace))
        })
        .filter(|c| c.metadata.uid != canary.metadata.uid)
        .filter(|c| key(c) < key(canary))
        .collect();
    others.sort_by_key(|c| key(c));
    for other in others {
        let Some(conflict) = shared_object(spec, &other.spec) else {
            continue;
        };
        // an invalid Canary never acts, so it holds no claim
        if !validate::invalid(&other.spec, &ctx.settings.default_provider).is_empty()
            || route_check(&other, ctx).is_err()
        {
            continue;
        }
        claim_conflict = true;
        invalid.push(format!(
            "{conflict} is already managed by Canary {}",
            other.metadata.name.as_deref().unwrap_or_default()
        ));
        break;
    }
    let now = k8s_openapi::jiff::Timestamp::now();

    let get = |name: &str| -> Option<Workload> {
        match spec.target_ref.kind.as_str() {
            "Deployment" => ctx
                .deployments
                .get(&ObjectRef::new(name).within(&ns))
                .map(|d| (*d).clone().into()),
            "DaemonSet" => ctx
                .daemon_sets
                .get(&ObjectRef::new(name).within(&ns))
                .map(|d| (*d).clone().into()),
            _ => None,
        }
    };
    let target = get(&spec.target_ref.name);
    let primary = get(&format!("{}-primary", spec.target_ref.name));
    let autoscaler = match validate::hpa_ref(spec) {
        Some(r) if spec.target_ref.kind == "Deployment" => {
            let hpa = ctx
                .hpas
                .get(&ObjectRef::new(&r.name).within(&ns))
                .map(|h| (*h).clone());
            if hpa.is_none() {
                invalid.push(format!(
                    "autoscalerRef: HorizontalPodAutoscaler {}.{ns} not found",
                    r.name
                ));
            }
            hpa
        }
        _ => None,
    };

    let mut obs = Observation {
        observed: Observed {
            now,
            target: None,
            primary: None,
            probes: Probes::default(),
            invalid: vec![],
            unsupported,
            target_matches_primary: None,
            routes_pending,
            concurrency: vec![],
        },
        target: target.clone(),
        primary: primary.clone(),
        autoscaler: autoscaler.clone(),
        selector: None,
        config_maps: vec![],
        secrets: vec![],
        route_inputs,
        discovered_ports: vec![],
        claim_conflict,
        namespace_limit: None,
    };
    let analysis = spec.analysis().cloned().unwrap_or_default();
    obs.observed.primary = primary.as_ref().map(|p| PrimaryState {
        readiness: p.readiness(analysis.primary_ready_threshold()),
        revision_id: workload::primary_revision_id(p),
        replicas: p.replicas(),
    });

    if let Some(t) = &target {
        match workload::selector_label(t, &ctx.settings.selector_labels) {
            Ok(sel) => obs.selector = Some(sel),
            Err(e) => invalid.push(e),
        }
        if let Err(e) = workload::check_target(t) {
            invalid.push(e);
        }
        let template = t.template();
        if let Some(pod) = template.spec.as_ref() {
            obs.discovered_ports = super::services::discovered_ports(canary, pod);
        }
        let configs = match template.spec.as_ref() {
            Some(pod) => read_configs(ctx, &ns, &tracker::config_refs(pod), &mut obs).await?,
            None => Ok(BTreeMap::new()),
        };
        match configs {
            Ok(configs) => {
                if let (Some(p), Some((label, value))) = (&primary, &obs.selector) {
                    obs.observed.target_matches_primary =
                        Some(primary_runs_target(canary, t, p, label, value, &configs));
                }
                obs.observed.target = Some(TargetState {
                    revision: tracker::revision(&template),
                    configs,
                    readiness: t.readiness(analysis.canary_ready_threshold()),
                    scale_up_replicas: workload::scale_up_replicas(
                        t,
                        primary.as_ref(),
                        autoscaler.as_ref(),
                    ),
                    ready_replicas: t.ready_replicas(),
                })
            }
            Err(e) => invalid.push(e),
        }
    }
    if let Err(e) = super::rollback_window::window(canary) {
        invalid.push(e);
    }
    if let Err(e) = crate::notify::progress_alerts(canary) {
        invalid.push(e);
    }
    if let Some(t) = &obs.observed.target
        && may_ask_for_slot(canary, t)
    {
        match namespace_limit(ctx, &ns).await? {
            Ok(limit) => obs.namespace_limit = limit,
            Err(e) => invalid.push(e),
        }
    }
    obs.observed.invalid = invalid;
    Ok(obs)
}

/// Whether `canary` may ask for a slot under the concurrency limit in this reconcile: it waits
/// in the queue, or it is idle and its target moved (over-approximated: a GET too many is
/// harmless).
pub fn may_ask_for_slot(canary: &Canary, target: &TargetState) -> bool {
    let Some(st) = canary.status.as_ref() else {
        return false;
    };
    match st.phase {
        Some(CanaryPhase::Waiting) => true,
        Some(CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed) => {
            st.last_applied_spec.as_ref() != Some(&target.revision)
                || st.tracked_configs.as_ref() != Some(&target.configs)
        }
        _ => false,
    }
}

/// The namespace annotation `concurrency::NAMESPACE_ANNOTATION`, read with a GET (a Role in
/// the namespace grants it): `Ok(None)` without it, the inner `Err` for a bad value. Without
/// the permission (RBAC older than this feature) there is no namespace limit, and a warning
/// in the log: releases must not stop for it.
async fn namespace_limit(ctx: &Context, ns: &str) -> Result<Result<Option<u32>, String>, Error> {
    use super::concurrency::{NAMESPACE_ANNOTATION, parse_max};
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    let meta = match api.get_metadata_opt(ns).await {
        Ok(Some(meta)) => meta,
        Ok(None) => return Ok(Ok(None)),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(
                namespace = ns,
                "cannot read the namespace, so its {NAMESPACE_ANNOTATION} is not applied: {}",
                e.message
            );
            return Ok(Ok(None));
        }
        Err(e) => return Err(Error::kube("get", "Namespace")(e)),
    };
    Ok(
        match meta
            .metadata
            .annotations
            .unwrap_or_default()
            .get(NAMESPACE_ANNOTATION)
        {
            Some(v) => parse_max(v)
                .map(Some)
                .map_err(|e| format!("namespace {ns}: {e}")),
            None => Ok(None),
        },
    )
}

/// The router's live inputs for `canary` and whether its objects are pending
/// (`Router::pending`), or why the router cannot build them (trial build at 100/0).
fn route_check(
    canary: &Canary,
    ctx: &Context,
) -> Result<(Vec<serde_json::Value>, Option<String>), String> {
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    let provider = validate::provider(&canary.spec, &ctx.settings.default_provider);
    let Some(router) = router::router_for(provider, &ctx.settings.ingress_prefix) else {
        return Ok((vec![], None));
    };
    let inputs: Vec<serde_json::Value> = router
        .inputs(canary)
        .into_iter()
        .filter_map(|(kind, name)| ctx.live(kind, ns, &name))
        .collect();
    let trial = Weights {
        primary: 100,
        canary: 0,
        mirror: false,
    };
    router.build(canary, trial, &inputs)?;
    let pending = router.pending(canary, &inputs);
    Ok((inputs, pending))
}

/// The first object two Canaries of one namespace would both write, named for a message: the
/// target, the apex (its Services and routes), or the NGINX canary Ingress. `None` when they
/// share nothing.
pub fn shared_object(a: &CanarySpec, b: &CanarySpec) -> Option<String> {
    if a.target_ref.kind == b.target_ref.kind && a.target_ref.name == b.target_ref.name {
        return Some(format!("{} {}", a.target_ref.kind, a.target_ref.name));
    }
    if a.apex_name() == b.apex_name() {
        return Some(format!("Service {}", a.apex_name()));
    }
    if let (Some(x), Some(y)) = (&a.ingress_ref, &b.ingress_ref)
        && x.name == y.name
    {
        return Some(format!("Ingress {}-canary", x.name));
    }
    None
}

/// True when the primary's pod template equals what promoting `target` now would write, apart
/// from the `flagger-id` stamp (both come from the API server, so defaults match).
fn primary_runs_target(
    canary: &Canary,
    target: &Workload,
    primary: &Workload,
    label: &str,
    value: &str,
    configs: &BTreeMap<String, String>,
) -> bool {
    let built = workload::build_primary(canary, target, label, value, "", configs, None);
    let strip = |w: &Workload| {
        let mut t = serde_json::to_value(w.template()).unwrap_or_default();
        if let Some(a) = t
            .pointer_mut("/metadata/annotations")
            .and_then(|a| a.as_object_mut())
        {
            a.remove(workload::REVISION_ANNOTATION);
        }
        tracker::canonical_json(&t)
    };
    strip(&built) == strip(primary)
}

/// GET the referenced ConfigMaps/Secrets and checksum the tracked ones.
async fn read_configs(
    ctx: &Context,
    ns: &str,
    refs: &tracker::ConfigRefs,
    obs: &mut Observation,
) -> Result<Result<BTreeMap<String, String>, String>, Error> {
    if !ctx.settings.config_tracking {
        return Ok(Ok(BTreeMap::new()));
    }
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut found_cms = vec![];
    for name in refs.config_maps.keys() {
        if let Some(cm) = cms
            .get_opt(name)
            .await
            .map_err(Error::kube("get", "ConfigMap"))?
        {
            found_cms.push(cm);
        }
    }
    let mut found_secrets = vec![];
    for name in refs.secrets.keys() {
        if let Some(s) = secrets
            .get_opt(name)
            .await
            .map_err(Error::kube("get", "Secret"))?
        {
            found_secrets.push(s);
        }
    }
    let tracked = tracker::tracked_configs(
        refs,
        |n| {
            found_cms
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(n))
        },
        |n| {
            found_secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
        },
    );
    if let Ok(t) = &tracked {
        obs.config_maps = found_cms
            .into_iter()
            .filter(|c| {
                t.contains_key(&tracker::config_map_key(
                    c.metadata.name.as_deref().unwrap_or(""),
                ))
            })
            .collect();
        obs.secrets = found_secrets
            .into_iter()
            .filter(|s| {
                t.contains_key(&tracker::secret_key(
                    s.metadata.name.as_deref().unwrap_or(""),
                ))
            })
            .collect();
    }
    Ok(tracked)
}

/// Run one probe `decide` asked for (webhooks of a kind, or the metric checks) and record it.
pub async fn probe(canary: &Canary, probe: Probe, obs: &mut Observation, ctx: &Context) {
    match probe {
        Probe::Hooks(kind) => {
            // The phase in the payload, as Flagger sends it: the current phase for
            // confirm-rollout and rollback hooks, Progressing for the analysis hooks.
            let current = canary.status.as_ref().and_then(|s| s.phase);
            let phase = match kind {
                HookKind::ConfirmRollout | HookKind::Rollback => {
                    current.unwrap_or(CanaryPhase::Progressing)
                }
                _ => CanaryPhase::Progressing,
            };
            let v = crate::webhook::run_hooks(&ctx.http, canary, kind, phase).await;
            obs.observed.probes.hooks.insert(kind, v);
        }
        Probe::Metrics => {
            let provider = validate::provider(&canary.spec, &ctx.settings.default_provider);
            let server = canary
                .spec
                .metrics_server
                .clone()
                .unwrap_or_else(|| ctx.settings.metrics_server.clone());
            let checks = match PrometheusProvider::with_client(ctx.http.clone(), &server) {
                Ok(prom) => {
                    let templates = ApiTemplates {
                        client: ctx.client.clone(),
                    };
                    let backends = MetricsBackends {
                        provider,
                        metrics_server: &server,
                        prom: &prom,
                        templates: &templates,
                        http: &ctx.http,
                    };
                    crate::analysis::evaluate_metrics(canary, &backends).await
                }
                Err(e) => vec![MetricCheck {
                    name: "metrics-server".into(),
                    outcome: MetricOutcome::Error(format!("metrics server {server:?}: {e}")),
                }],
            };
            obs.observed.probes.metrics = Some(checks);
        }
        Probe::Judge => {
            obs.observed.probes.judge = Some(super::judge_probe::observe(canary, ctx).await);
        }
        Probe::CountSignals => {
            obs.observed.probes.count_signals =
                Some(super::judge_probe::count_signals(canary, ctx).await);
        }
    }
}

/// MetricTemplates and their Secrets, read with GETs when an analysis step needs them.
pub(super) struct ApiTemplates {
    pub(super) client: kube::Client,
}

impl TemplateSource for ApiTemplates {
    fn template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<MetricTemplate>, String>> {
        Box::pin(async move {
            Api::<MetricTemplate>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, String>> {
        Box::pin(async move {
            let s = Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(s.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, service: Option<&str>, ingress: Option<&str>) -> CanarySpec {
        let mut v = serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "service": {"port": 80}
        });
        if let Some(s) = service {
            v["service"]["name"] = s.into();
        }
        if let Some(i) = ingress {
            v["ingressRef"] = serde_json::json!({"apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress", "name": i});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn canaries_sharing_a_target_an_apex_or_an_ingress_conflict() {
        let a = spec("web", None, Some("public"));
        assert_eq!(
            shared_object(&a, &spec("web", Some("other"), None)).as_deref(),
            Some("Deployment web")
        );
        assert_eq!(
            shared_object(&a, &spec("web2", Some("web"), None)).as_deref(),
            Some("Service web")
        );
        assert_eq!(
            shared_object(&a, &spec("web2", None, Some("public"))).as_deref(),
            Some("Ingress public-canary")
        );
        assert_eq!(shared_object(&a, &spec("web2", None, Some("other"))), None);
    }
}
