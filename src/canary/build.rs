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
