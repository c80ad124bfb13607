//! Execute: apply a decision's actions in order. The objects they write come built in a
//! [`Desired`] (`build`); each is written with server-side apply (field manager `pennant`) only when it differs from
//! the cached live object, so a steady-state reconcile costs no API writes.

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::build::{self, Desired, Primary};
use super::context::{Context, Error};
use super::machine::{Action, Decision};
use super::observe::Observation;
use super::{tracker, validate, workload};
use crate::api::Canary;
use crate::api::meta::{ORIGINAL_CONFIGURATION, original_spec, owned_by};
use crate::router;

pub const FIELD_MANAGER: &str = "pennant";

/// Params of every write that is not a server-side apply (merge/JSON patches, status): pennant's
/// field manager, so `managedFields` names pennant for every field it wrote (without one the
/// server records the client's user agent, or `unknown`).
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// The error of a write of `what` (`Kind ns/name`). A 4xx other than 409 (conflict) and 429
/// (throttled) will not go away by writing the same object again: it is [`Error::Rejected`],
/// with the server's message, so the Canary stalls and waits for a change (`controller`).
pub fn write_error(verb: &'static str, kind: &str, what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Error::Rejected(format!("{what} rejected by the API server: {}", s.message))
        }
        e => Error::kube(verb, kind)(e),
    }
}

/// Apply `decision.actions` in order, writing the objects `desired` holds for them (built
/// from the same decision); stop at the first error (status is not written then).
pub async fn execute(
    canary: &Canary,
    decision: &Decision,
    desired: &Desired,
    obs: &Observation,
    ctx: &Context,
) -> Result<(), Error> {
    for action in &decision.actions {
        debug!(?action, "applying");
        match action {
            Action::EnsurePrimary | Action::Promote { .. } => {
                if let Some(primary) = &desired.primary {
                    apply_primary(primary, obs, ctx).await?;
                }
                if let Some(hpa) = &desired.primary_hpa {
                    apply_if_changed(ctx, hpa).await?;
                }
            }
            Action::EnsureServices => {
                for svc in [&desired.primary_service, &desired.canary_service]
                    .into_iter()
                    .flatten()
                {
                    apply_if_changed(ctx, svc).await?;
                }
            }
            Action::EnsureRoutes(_) => {
                for obj in desired.apex_service.iter().chain(&desired.routes) {
                    let mut obj = obj.clone();
                    let precondition = match existing(ctx, &obj, &obs.route_inputs) {
                        Some(live) => adopt(canary, &mut obj, &live),
                        None => {
                            refuse_unseen(ctx, canary, &obj).await?;
                            None
                        }
                    };
                    apply_checked(ctx, &obj, precondition.as_deref()).await?;
                }
            }
            Action::ScaleTarget(n) => {
                let Some(target) = &obs.target else { continue };
                if let Some(patch) = workload::scale_patch(target, *n) {
                    let ar =
                        ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", target.kind()));
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(ctx.client.clone(), target.namespace(), &ar);
                    let name = target.name();
                    info!(kind = target.kind(), %name, replicas = n, "scaling target");
                    ctx.metrics.writes.inc();
                    api.patch(name, &patch_params(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| {
                            let ns = target.namespace();
                            write_error(
                                "patch",
                                target.kind(),
                                &format!("{} {ns}/{name}", target.kind()),
                                e,
                            )
                        })?;
                }
            }
            Action::ScalePrimary(n) => {
                let Some(primary) = &obs.primary else {
                    continue;
                };
                if primary.replicas().is_some_and(|r| r < *n) {
                    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
                        Api::namespaced(ctx.client.clone(), primary.namespace());
                    let name = primary.name();
                    info!(%name, replicas = n, "scaling the primary up before it gets the traffic back");
                    ctx.metrics.writes.inc();
                    let params = PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    };
                    api.patch_scale(
                        name,
                        &params,
                        &Patch::Merge(json!({"spec": {"replicas": n}})),
                    )
                    .await
                    .map_err(Error::kube("patch scale", "Deployment"))?;
                }
            }
            Action::RetireTarget(old) => {
                // The old target's objects, built from the Canary as it was.
                let mut retired = canary.clone();
                retired.spec.target_ref = old.clone();
                let provider = canary
                    .status
                    .as_ref()
                    .and_then(|s| s.routing_provider.clone())
                    .unwrap_or_else(|| {
                        validate::provider(&canary.spec, &ctx.settings.default_provider).into()
                    });
                info!(target = %old.name, "targetRef changed: sending the old routes back to the primary");
                give_back(&retired, &provider, true, ctx).await?;
            }
            Action::RunHooks(kind, phase) => {
                let v = crate::webhook::run_hooks(&ctx.http, canary, *kind, *phase).await;
                if !v.pass {
                    warn!(hook = kind.as_str(), message = %v.message, "hook failed");
                }
            }
        }
    }
    Ok(())
}

/// Hand `spec.replicas` of the live primary Deployment over to
/// [`workload::REPLICAS_HANDOVER_MANAGER`] (an apply of the live value alone) when pennant's own
/// apply holds it, so the apply that drops the field keeps its value instead of resetting it.
async fn hand_over_replicas(primary: &workload::Workload, ctx: &Context) -> Result<(), Error> {
    let Some(replicas) = primary.replicas() else {
        return Ok(());
    };
    if !workload::owns_replicas(primary, FIELD_MANAGER) {
        return Ok(());
    }
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", primary.kind()));
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), primary.namespace(), &ar);
    let obj = json!({
        "apiVersion": "apps/v1", "kind": primary.kind(),
        "metadata": {"name": primary.name(), "namespace": primary.namespace()},
        "spec": {"replicas": replicas},
    });
    info!(
        name = primary.name(),
        replicas, "handing primary replicas over to the autoscaler"
    );
    ctx.metrics.writes.inc();
    api.patch(
        primary.name(),
        &PatchParams::apply(workload::REPLICAS_HANDOVER_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|e| {
        let what = format!(
            "{} {}/{}",
            primary.kind(),
            primary.namespace(),
            primary.name()
        );
        write_error("apply", primary.kind(), &what, e)
    })?;
    Ok(())
}

/// Write the `-primary` copies of the tracked configs, then the primary workload.
async fn apply_primary(primary: &Primary, obs: &Observation, ctx: &Context) -> Result<(), Error> {
    for copy in primary.config_maps.iter().chain(&primary.secrets) {
        apply_if_changed(ctx, copy).await?;
    }
    if primary.replicas_to_autoscaler
        && let Some(live) = &obs.primary
    {
        hand_over_replicas(live, ctx).await?;
    }
    apply_if_changed(ctx, &primary.workload).await
}

/// Annotation carrying a digest of the object pennant last applied: when the desired object
/// changes (a field removed from the Canary), the apply happens even though the live object
/// still "contains" the desired one, so server-side apply removes the fields pennant dropped.
pub const APPLIED_ANNOTATION: &str = "pennant.dev/applied";

/// `revertOnDeletion`: give back what pennant took over (Flagger's finalizer, §2.13). The apex
/// Service selects the target's pods again (its original selector) and a routing object the user
/// created before the Canary gets its original spec back (Flagger restores only Istio's
/// VirtualService; pennant restores every router's). Objects pennant created are left to garbage
/// collection.
pub async fn restore_taken_over(
    canary: &Canary,
    obs: &Observation,
    ctx: &Context,
) -> Result<(), Error> {
    if let (Some(services), Some((label, value))) = (build::services(canary, obs), &obs.selector) {
        let mut svc = serde_json::to_value(&services.apex).map_err(Error::encode)?;
        if let Some(live) = read_fresh(ctx, &svc).await?
            && !owned_by(canary, &live)
        {
            let selector = original_spec(&live)
                .map(|s| s["selector"].clone())
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({ label: value }));
            // Given back right after: no takeover to guard.
            let _ = adopt(canary, &mut svc, &live);
            svc["spec"]["selector"] = selector;
            info!(service = %canary.spec.apex_name(), "restoring the apex Service selector");
            apply_if_changed(ctx, &svc).await?;
            release(ctx, &svc).await?;
        }
    }
    restore_routes(canary, ctx).await
}

/// The routing objects pennant took over get their original spec back (see
/// [`restore_taken_over`]); with or without `revertOnDeletion`, so a user's route never points
/// at the `-primary`/`-canary` Services garbage-collected with the Canary.
pub async fn restore_routes(canary: &Canary, ctx: &Context) -> Result<(), Error> {
    let provider = super::validate::provider(&canary.spec, &ctx.settings.default_provider);
    give_back(canary, provider, false, ctx).await
}

/// True when one of the routing objects of the Canary's router exists and was created by the
/// user, not pennant: it is (or is about to be) taken over, and must be given back on deletion
/// ([`restore_routes`]). `None` when the router cannot build its objects now.
pub fn takes_over_routes(canary: &Canary, ctx: &Context) -> Option<bool> {
    let provider = super::validate::provider(&canary.spec, &ctx.settings.default_provider);
    let built = routes_at_primary(canary, provider, ctx)?.ok()?;
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    Some(built.iter().any(|o| {
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        ctx.live(kind, ns, name)
            .is_some_and(|live| !owned_by(canary, &live))
    }))
}

/// The routing objects of `provider`'s router for `canary` at 100/0, built from the live
/// inputs; `None` without a router.
fn routes_at_primary(
    canary: &Canary,
    provider: &str,
    ctx: &Context,
) -> Option<Result<Vec<Value>, String>> {
    let r = router::router_for(provider, &ctx.settings.ingress_prefix)?;
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    let inputs: Vec<Value> = r
        .inputs(canary)
        .into_iter()
        .filter_map(|(kind, name)| ctx.live(kind, ns, &name))
        .collect();
    build::routes_at_primary(canary, provider, &ctx.settings.ingress_prefix, &inputs)
}

/// The routing objects of `provider`'s router for `canary`: a taken-over one gets its original
/// spec back; with `all`, one pennant created is sent back to the primary (100/0). Objects the
/// router cannot build any more (its inputs gone) are logged and left.
async fn give_back(canary: &Canary, provider: &str, all: bool, ctx: &Context) -> Result<(), Error> {
    let Some(built) = routes_at_primary(canary, provider, ctx) else {
        return Ok(());
    };
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            warn!(%provider, "cannot rebuild the routing objects to give them back: {e}");
            return Ok(());
        }
    };
    for obj in built {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let Some(live) = read_fresh(ctx, &obj).await? else {
            continue;
        };
        if owned_by(canary, &live) {
            if all {
                info!(%kind, %name, "sending the old router's traffic back to the primary");
                apply_if_changed(ctx, &obj).await?;
            }
            continue;
        }
        let Some(spec) = original_spec(&live) else {
            continue;
        };
        let restored = restored_route(&obj, &live, spec);
        info!(%kind, %name, "restoring the original spec");
        apply_if_changed(ctx, &restored).await?;
        release(ctx, &restored).await?;
    }
    Ok(())
}

/// Hand an object pennant gave back (`obj`: its apiVersion, kind, name, namespace) to its user:
/// pennant's field ownership and records go ([`release_patch`], on the object read fresh: the
/// restoring apply just changed it), so the user's next server-side apply of it meets no
/// conflict with `pennant`.
async fn release(ctx: &Context, obj: &Value) -> Result<(), Error> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let what = || format!("{kind} {ns}/{name}");
    let Some(live) = api.get_opt(name).await.map_err(Error::kube("get", kind))? else {
        return Ok(());
    };
    let live = serde_json::to_value(&live).map_err(Error::encode)?;
    let Some(patch) = release_patch(&live) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(Error::encode)?;
    info!(%kind, %ns, %name, "releasing pennant's fields");
    ctx.metrics.writes.inc();
    api.patch(name, &patch_params(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| write_error("patch", kind, &what(), e))?;
    Ok(())
}

/// The JSON patch that gives `live` back: pennant's entries leave `metadata.managedFields`
/// (the others stay; none left is written `[{}]`, which the API server reads as "clear",
/// where `[]` would mean "unchanged"), and pennant's annotations ([`APPLIED_ANNOTATION`],
/// [`ORIGINAL_CONFIGURATION`], which a later takeover would otherwise trust) go. Guarded by
/// the resourceVersion read (a 409 then, retried). `None` when there is nothing of pennant's.
pub fn release_patch(live: &Value) -> Option<Value> {
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kept: Vec<Value> = entries
        .iter()
        .filter(|e| e["manager"] != FIELD_MANAGER)
        .cloned()
        .collect();
    let annotations: Vec<&str> = [APPLIED_ANNOTATION, ORIGINAL_CONFIGURATION]
        .into_iter()
        .filter(|a| live["metadata"]["annotations"].get(a).is_some())
        .collect();
    if kept.len() == entries.len() && annotations.is_empty() {
        return None;
    }
    let mut ops = vec![json!({"op": "replace", "path": "/metadata/resourceVersion",
        "value": live["metadata"]["resourceVersion"]})];
    if kept.len() != entries.len() {
        let value = if kept.is_empty() {
            vec![json!({})]
        } else {
            kept
        };
        ops.push(json!({"op": "replace", "path": "/metadata/managedFields", "value": value}));
    }
    for a in annotations {
        // JSON pointer: `~1` is `/`.
        let path = format!(
            "/metadata/annotations/{}",
            a.replace('~', "~0").replace('/', "~1")
        );
        ops.push(json!({"op": "remove", "path": path}));
    }
    Some(Value::Array(ops))
}

/// `spec.provider` changed since the routes were written (`status.routingProvider`): the old
/// router's objects stop sending traffic to the canary before the new router takes over.
pub async fn retire_router(
    canary: &Canary,
    old_provider: &str,
    ctx: &Context,
) -> Result<(), Error> {
    give_back(canary, old_provider, true, ctx).await
}

/// The taken-over routing object `live` with its original `spec` back (the apply of a give-back;
/// `built` gives apiVersion, kind and name). PURE. The original-configuration record stays until
/// [`release`] drops it with pennant's fields: when that release fails (409, retried), the retry
/// must still find the record, or it would take the object over again from kubectl's older
/// last-applied spec and restore that (CI caught a pre-`kubectl patch` spec restored this way).
pub fn restored_route(built: &Value, live: &Value, spec: Value) -> Value {
    let mut restored = json!({
        "apiVersion": built["apiVersion"],
        "kind": built["kind"],
        "metadata": {
            "name": built["metadata"]["name"],
            "namespace": live["metadata"]["namespace"],
        },
        "spec": spec,
    });
    if let Some(record) = live["metadata"]["annotations"].get(ORIGINAL_CONFIGURATION) {
        restored["metadata"]["annotations"] = json!({ ORIGINAL_CONFIGURATION: record });
    }
    restored
}

/// The live `desired` object as the controller knows it: the one the router's `build` read
/// (`inputs`, the Observation's `route_inputs`) when it is there, else the cached one, so the
/// rules a takeover keeps, the original spec it records and its precondition ([`adopt`]) all
/// come from one version. `None` when the caches do not have it.
fn existing(ctx: &Context, desired: &Value, inputs: &[Value]) -> Option<Value> {
    let kind = desired["kind"].as_str().unwrap_or_default();
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let ns = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    inputs
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .cloned()
        .or_else(|| ctx.live(kind, ns, name))
}

/// The caches do not have `desired`: the apply is about to create it with the Canary's
/// controller reference, unless the user created it a moment ago and its watch event has not
/// arrived yet, when the apply would make the user's object pennant's own (and garbage-collected
/// with the Canary). One consistent GET, made only on the way to such a create, tells; an
/// object found that the Canary does not own is a conflict, retried once the cache has it.
async fn refuse_unseen(ctx: &Context, canary: &Canary, desired: &Value) -> Result<(), Error> {
    let kind = desired["kind"].as_str().unwrap_or_default();
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let ns = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let Some(found) = read_fresh(ctx, desired).await? else {
        return Ok(());
    };
    if owned_by(canary, &found) {
        return Ok(());
    }
    let message = format!("{kind} {ns}/{name} exists but is not in the cache yet");
    Err(Error::kube("apply", kind)(kube::Error::Api(
        kube::core::Status::failure(&message, "Conflict")
            .with_code(409)
            .boxed(),
    )))
}

/// The dynamic API of `obj`'s kind (its `apiVersion`) in its namespace.
fn dynamic_api(ctx: &Context, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(ctx.client.clone(), ns, &ar)
}

/// The live `obj` (its apiVersion, kind, name, namespace) read from the API server, not the
/// caches: what a give-back restores from, and what [`refuse_unseen`] checks. A give-back
/// needs the record of the original spec that this controller's takeover wrote, which the
/// route's watch may not have delivered yet (right after a takeover, under load); the cached
/// copy would then have no record, the give-back would skip the object, and the finalizer's
/// 100 % to the target would stay on a route pointing at the Services garbage-collected with
/// the Canary.
async fn read_fresh(ctx: &Context, obj: &Value) -> Result<Option<Value>, Error> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let found = dynamic_api(ctx, obj)
        .get_opt(name)
        .await
        .map_err(Error::kube("get", kind))?;
    found
        .map(|o| serde_json::to_value(o).map_err(Error::encode))
        .transpose()
}

/// A routing object (or apex Service) the user created before the Canary (no controller
/// reference to it) is updated but never owned, so deleting the Canary does not
/// garbage-collect it (PURE, for the user's `live` object): drops the ownership and labels
/// from `desired`, records the user's spec in [`ORIGINAL_CONFIGURATION`] and keeps a Service's
/// type and node ports. Returns `live`'s `metadata.resourceVersion` when this write is the
/// takeover (the record is not there yet): the write is made with it as a precondition, so a
/// snapshot taken from a cache that has not seen the user's last edit (a `kubectl patch` just
/// before the Canary was created, or the watch cache's initial list) is refused by the server
/// (409 Conflict, retried) instead of recording, and later restoring, the older spec. `None`
/// when the object is pennant's own or already taken over.
pub fn adopt(canary: &Canary, desired: &mut Value, live: &Value) -> Option<String> {
    if owned_by(canary, live) {
        return None;
    }
    if let Some(meta) = desired["metadata"].as_object_mut() {
        meta.remove("ownerReferences");
        meta.remove("labels");
    }
    // What the user had, for giving it back ([`restore_taken_over`]) and for the rules a
    // taken-over route keeps: the live spec as first seen (kubectl's last-applied record may
    // predate a `kubectl patch`), kept in Flagger's annotation (carried over on every later
    // apply, or server-side apply would drop it).
    let recorded = live["metadata"]["annotations"]
        .get(ORIGINAL_CONFIGURATION)
        .and_then(Value::as_str)
        .map(str::to_string);
    let precondition = match &recorded {
        Some(_) => None,
        None => live["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    };
    let original = recorded.unwrap_or_else(|| {
        original_spec(live)
            .unwrap_or_else(|| live["spec"].clone())
            .to_string()
    });
    desired["metadata"]["annotations"][ORIGINAL_CONFIGURATION] = Value::String(original);
    if desired["kind"] == "Service" {
        if let Some(t) = live["spec"]["type"].as_str() {
            desired["spec"]["type"] = Value::String(t.to_string());
        }
        let live_ports = live["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = desired["spec"]["ports"].as_array_mut() {
            for p in ports {
                let node_port = live_ports
                    .iter()
                    .find(|lp| lp["port"] == p["port"])
                    .map(|lp| lp["nodePort"].clone())
                    .filter(|np| !np.is_null());
                if let Some(np) = node_port {
                    p["nodePort"] = np;
                }
            }
        }
    }
    precondition
}

/// Server-side apply `desired` unless the cached live object already contains it and was last
/// applied by pennant from this same desired object.
pub async fn apply_if_changed(ctx: &Context, desired: &Value) -> Result<(), Error> {
    apply_checked(ctx, desired, None).await
}

/// [`apply_if_changed`], the apply made only if the object is still at `resource_version`
/// (a 409 Conflict otherwise, retried by the caller's requeue). The precondition is not part
/// of the digest: it guards one write, it is not desired state.
async fn apply_checked(
    ctx: &Context,
    desired: &Value,
    resource_version: Option<&str>,
) -> Result<(), Error> {
    let digest = tracker::canonical_digest(desired);
    let mut desired = desired.clone();
    desired["metadata"]["annotations"][APPLIED_ANNOTATION] = Value::String(digest.clone());
    let desired = &desired;
    let kind = desired["kind"].as_str().unwrap_or_default();
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let ns = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if let Some(live) = ctx.live(kind, ns, name)
        && live["metadata"]["annotations"][APPLIED_ANNOTATION].as_str() == Some(digest.as_str())
        && is_subset(&without_api_version(desired), &live)
    {
        return Ok(());
    }
    let api = dynamic_api(ctx, desired);
    let mut desired = desired.clone();
    if let Some(rv) = resource_version {
        info!(%kind, %ns, %name, resource_version = %rv, "taking over the user's object");
        desired["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    } else {
        info!(%kind, %ns, %name, "applying");
    }
    ctx.metrics.writes.inc();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| write_error("apply", kind, &format!("{kind} {ns}/{name}"), e))?;
    Ok(())
}

/// `obj` without `apiVersion`: a cached object is read through one version of its API while
/// pennant may write another (Gateway API v1beta1); the digest already covers the version.
fn without_api_version(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
    }
    o
}

/// True when every field of `desired` is present with an equal value in `live` (fields the
/// server adds — status, defaults, managedFields — are ignored). Lists must match in length.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| is_subset(dv, lv)) || is_empty(dv) && l.get(k).is_none()
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        _ => desired == live,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_route_keeps_its_record_until_released() {
        let built = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "ns"}, "spec": {"rules": []}});
        let record = r#"{"rules":[{"matches":[{"path":{"value":"/livez"}}]}]}"#;
        let live = json!({"metadata": {"name": "podinfo", "namespace": "ns",
            "annotations": {ORIGINAL_CONFIGURATION: record, "kubectl.kubernetes.io/last-applied-configuration": "{}"}}});
        let spec: Value = serde_json::from_str(record).unwrap();
        let r = restored_route(&built, &live, spec.clone());
        assert_eq!(r["spec"], spec);
        assert_eq!(r["metadata"]["annotations"][ORIGINAL_CONFIGURATION], record);
        assert_eq!(r["metadata"]["annotations"].as_object().unwrap().len(), 1);
        // a retry reads the same record back, not kubectl's last-applied spec
        assert_eq!(original_spec(&r), Some(spec));
        let plain = json!({"metadata": {"namespace": "ns"}});
        assert!(restored_route(&built, &plain, json!({}))["metadata"]["annotations"].is_null());
    }

    /// Every provider `validate` accepts has a router (the router's own test lists them).
    #[test]
    fn every_implemented_provider_has_a_router() {
        for p in validate::IMPLEMENTED_PROVIDERS {
            assert!(router::router_for(p, "").is_some(), "{p}");
        }
    }

    #[test]
    fn client_errors_are_rejections_except_conflicts_and_throttling() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("spec.selector: Invalid value", "Invalid")
                    .with_code(code)
                    .boxed(),
            )
        };
        for code in [400, 403, 404, 422] {
            match write_error("apply", "Deployment", "Deployment t/x-primary", api(code)) {
                Error::Rejected(m) => assert_eq!(
                    m,
                    "Deployment t/x-primary rejected by the API server: spec.selector: Invalid value"
                ),
                e => panic!("{code}: {e:?}"),
            }
        }
        for code in [409, 429, 500, 503] {
            assert!(
                matches!(
                    write_error("apply", "X", "x", api(code)),
                    Error::Kube { .. }
                ),
                "{code} is retried"
            );
        }
    }

    /// Issue 11: a given-back route stayed owned by `pennant`, so the user's next server-side
    /// apply conflicted on `.spec.rules`.
    #[test]
    fn release_drops_pennants_field_entries_and_records_only() {
        let entry =
            |m: &str| json!({"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {}}});
        let live = json!({"metadata": {"resourceVersion": "42",
            "annotations": {APPLIED_ANNOTATION: "abc", ORIGINAL_CONFIGURATION: "{}", "team": "a"},
            "managedFields": [entry("kubectl"), entry("pennant"), entry("simulator")]}});
        assert_eq!(
            release_patch(&live),
            Some(json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "replace", "path": "/metadata/managedFields",
                 "value": [entry("kubectl"), entry("simulator")]},
                {"op": "remove", "path": "/metadata/annotations/pennant.dev~1applied"},
                {"op": "remove", "path": "/metadata/annotations/flagger.kubernetes.io~1original-configuration"},
            ]))
        );
        // Only pennant's entry: an empty list would leave managedFields unchanged.
        let only =
            json!({"metadata": {"resourceVersion": "7", "managedFields": [entry("pennant")]}});
        assert_eq!(release_patch(&only).unwrap()[1]["value"], json!([{}]));
        let theirs = json!({"metadata": {"managedFields": [entry("kubectl")], "annotations": {"team": "a"}}});
        assert_eq!(release_patch(&theirs), None);
    }

    fn route(rv: &str, path: &str) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": rv},
            "spec": {"rules": [{"matches": [{"path": {"value": path}}]}]}})
    }

    fn owned_canary() -> Canary {
        let mut c = Canary::new("podinfo", Default::default());
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("u1".into());
        c
    }

    /// A takeover built from a cached copy older than the user's last `kubectl patch` (seen
    /// once under load: the spec before the patch was recorded and restored) must not be
    /// written: it carries the copy's resourceVersion as a precondition, which the server
    /// compares with the object's, so the stale (rv 41) and fresh (rv 42) copies give writes
    /// the server tells apart, and each records the spec of its own version.
    #[test]
    fn the_first_takeover_write_is_conditional_on_the_version_it_recorded() {
        let canary = owned_canary();
        let desired = || {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test",
                "ownerReferences": [{"uid": "u1"}], "labels": {"app": "podinfo"}},
            "spec": {"rules": []}})
        };
        for (live, rv, path) in [
            (route("41", "/readyz"), "41", "/readyz"),
            (route("42", "/livez"), "42", "/livez"),
        ] {
            let mut d = desired();
            assert_eq!(adopt(&canary, &mut d, &live).as_deref(), Some(rv));
            let recorded: Value = serde_json::from_str(
                d["metadata"]["annotations"][ORIGINAL_CONFIGURATION]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(recorded["rules"][0]["matches"][0]["path"]["value"], path);
            assert_eq!(d["metadata"].get("ownerReferences"), None, "never owned");
            assert_eq!(d["metadata"].get("labels"), None);
        }
    }

    /// Once recorded, the record is carried over unconditionally (pennant's own writes move the
    /// resourceVersion on, and the cache may lag them: no precondition there), and an object
    /// pennant created is neither recorded nor guarded.
    #[test]
    fn later_writes_and_pennants_own_objects_carry_no_precondition() {
        let canary = owned_canary();
        let mut taken = route("50", "/livez");
        taken["metadata"]["annotations"] =
            json!({ORIGINAL_CONFIGURATION: r#"{"rules":[{"matches":[{"path":{"value":"/x"}}]}]}"#});
        let mut d = json!({"kind": "HTTPRoute", "metadata": {"name": "podinfo"}, "spec": {}});
        assert_eq!(adopt(&canary, &mut d, &taken), None);
        assert_eq!(
            d["metadata"]["annotations"][ORIGINAL_CONFIGURATION],
            taken["metadata"]["annotations"][ORIGINAL_CONFIGURATION]
        );
        let mut ours = route("60", "/livez");
        ours["metadata"]["ownerReferences"] = json!([{"uid": "u1"}]);
        let mut d = json!({"kind": "HTTPRoute", "metadata": {"name": "podinfo"}, "spec": {}});
        assert_eq!(adopt(&canary, &mut d, &ours), None);
        assert!(d["metadata"].get("annotations").is_none(), "{d}");
    }

    /// The appliers' ownership map names this annotation without importing the controller.
    #[test]
    fn the_ownership_map_knows_the_applied_annotation() {
        assert_eq!(
            APPLIED_ANNOTATION,
            crate::apply::ownership::APPLIED_ANNOTATION
        );
        assert_eq!(
            tracker::SCALE_TO_ZERO_NODE_SELECTOR,
            crate::apply::ownership::SCALE_TO_ZERO_NODE_SELECTOR
        );
    }

    #[test]
    fn subset_ignores_server_added_fields() {
        let desired = json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}}});
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "x"}}}, "status": {"readyReplicas": 2}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_detects_changed_values_and_list_lengths() {
        let live = json!({"spec": {"http": [{"route": [{"weight": 90}, {"weight": 10}]}]}});
        let moved = json!({"spec": {"http": [{"route": [{"weight": 80}, {"weight": 20}]}]}});
        let shorter = json!({"spec": {"http": [{"route": [{"weight": 90}]}]}});
        assert!(!is_subset(&moved, &live));
        assert!(!is_subset(&shorter, &live));
        assert!(is_subset(&live, &live));
    }

    #[test]
    fn empty_desired_fields_match_absent_live_fields() {
        let desired = json!({"metadata": {"labels": {}}, "spec": {"gateways": []}});
        let live = json!({"metadata": {}, "spec": {}});
        assert!(is_subset(&desired, &live));
    }
}
