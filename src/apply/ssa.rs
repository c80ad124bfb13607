//! Server-side apply of a set of objects, the way Flux's `fluxcd/pkg/ssa` ResourceManager does
//! (`ApplyAllStaged`, `Apply`, `DeleteAll`), with pennant's field manager (`pennant`, DESIGN.md
//! promise 3). I/O: talks to the API server through `Api<DynamicObject>`; the kinds are found by
//! discovery, cached per group/version/kind (refreshed after a stage adds CRDs).
//!
//! Per object: read the live copy; `kustomize.toolkit.fluxcd.io/ssa: Ignore` or
//! `kustomize.toolkit.fluxcd.io/reconcile: disabled` (label or annotation, on the desired or
//! the live object, case-insensitive) skips it, `IfNotPresent` skips it when it exists; otherwise a
//! server-side dry-run apply, compared with the live copy (metadata the server owns and
//! `status` ignored): equal → `unchanged` with no write, else the apply → `created` or
//! `configured`. With `force`, a dry-run or apply refused because a field is immutable
//! (`Invalid` with "immutable", or a Service's/Job's selector) deletes the object and creates
//! it again (Flux's `Force`). `Override` (the default) takes the fields that a client-side
//! `kubectl apply` or `kubectl create` owned (Flux's managed-fields cleanup of
//! `kubectl-client-side-apply` and `before-first-apply`); `Merge` leaves them to their owner.
//!
//! Stages: [`super::order::stages`]; after the cluster-definitions and classes stages the
//! applier waits until the CRDs are `Established` and the Namespaces `Active` (bounded by the
//! caller's timeout), then forgets its discovery cache so the new kinds resolve.
//!
//! Within a stage every object is dry-run before any is applied (Flux's `ApplyAll`), so a
//! refused dry-run (e.g. a kind without its CRD) applies nothing of its stage; the reads and
//! dry-runs, then the applies, run [`ApplyOptions::concurrency`] at once (Flux's
//! `--concurrent-ssa`), the change set staying in the objects' order. Errors name the object
//! (`Deployment/ns/name dry-run failed: <API message>`; the first in order when several fail)
//! and stop the apply: the stages applied before stay, nothing is pruned.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PropagationPolicy,
};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::inventory::{ObjectId, PruneDecision, owner_labels, prune_decision};
use super::order::{Stage, stages};
use crate::api::kustomization::ResourceRef;

/// Field manager of every apply (the Canary and source controllers').
pub const FIELD_MANAGER: &str = "pennant";
/// Per-object apply policy, label or annotation: `Override`, `Merge`, `IfNotPresent`, `Ignore`.
pub const SSA_KEY: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// Per-object opt-out of reconciliation (label or annotation `disabled`): the object is
/// skipped, as with `ssa: Ignore`.
pub const RECONCILE_KEY: &str = "kustomize.toolkit.fluxcd.io/reconcile";
/// Per-object opt-in to recreation on immutable-field errors (label or annotation `enabled`).
pub const FORCE_KEY: &str = "kustomize.toolkit.fluxcd.io/force";
/// Managers of client-side applies whose fields an `Override` apply takes over (Flux's
/// kustomize-controller default cleanup: `kubectl` client-side apply and the
/// `before-first-apply` placeholder the API server writes when SSA first meets such fields).
pub const OVERRIDE_MANAGERS: [&str; 2] = ["kubectl-client-side-apply", "before-first-apply"];

/// What happened to one object (Flux's `ssa.Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
    Skipped,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
            Action::Skipped => "skipped",
        })
    }
}

/// One line of a change set: the object and what was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: ObjectId,
    /// The version part of the object's `apiVersion` (for the inventory).
    pub version: String,
    pub action: Action,
}

impl Change {
    /// `Kind/namespace/name` (`Kind/name` when cluster-scoped), Flux's `FmtUnstructured`.
    pub fn subject(&self) -> String {
        subject(&self.id)
    }
}

impl fmt::Display for Change {
    /// Flux's change-set line: `Deployment/apps/podinfo configured`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject(), self.action)
    }
}

/// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
pub fn subject(id: &ObjectId) -> String {
    if id.namespace.is_empty() {
        format!("{}/{}", id.kind, id.name)
    } else {
        format!("{}/{}/{}", id.kind, id.namespace, id.name)
    }
}

/// The change-set lines of the entries whose action is not `unchanged`, one per line (the
/// message of Flux's "Progressing"/"ReconciliationSucceeded" Events).
pub fn change_set_message(changes: &[Change]) -> String {
    changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An apply or delete that failed, naming the object.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    /// `Kind/namespace/name`, or empty when no object is to blame (discovery, timeout).
    pub object: String,
    pub message: String,
    /// [`Applier::apply_all`]: what the stages before the failure applied (they stay in the
    /// cluster, so they belong in the inventory).
    pub applied: Vec<Change>,
}

fn fail(id: &ObjectId, what: &str, e: impl fmt::Display) -> ApplyError {
    ApplyError {
        object: subject(id),
        message: format!("{} {what}: {e}", subject(id)),
        ..Default::default()
    }
}

/// A failed API call on an object, as Flux's ssa manager words it:
/// `<subject> <what> (<Reason>): <message>` (e.g. `ConfigMap/ns/app dry-run failed
/// (NotFound): namespaces "ns" not found`), the reason left out when the API server gave none
/// (a body that is not a `Status`, e.g. `404 page not found`). Only the `Status` message is
/// used, never the Debug form of the error. PURE.
pub fn api_failure(subject: &str, what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let message = s.message.trim();
            let reason = s.reason.trim();
            let known = !reason.is_empty()
                && reason != "Unknown"
                && reason != "Failure"
                && reason.chars().all(|c| c.is_ascii_alphanumeric());
            if known {
                format!("{subject} {what} ({reason}): {message}")
            } else {
                format!("{subject} {what}: {message}")
            }
        }
        e => format!("{subject} {what}: {e}"),
    }
}

/// An object whose kind the API server does not serve, as Flux (the RESTMapper's text):
/// `<subject> dry-run failed: no matches for kind "<Kind>" in version "<apiVersion>"` when
/// discovery found no such group/version or kind, else [`api_failure`]. PURE.
pub fn discovery_failure(subject: &str, kind: &str, api_version: &str, e: &kube::Error) -> String {
    let missing = match e {
        kube::Error::Api(s) => s.code == 404,
        kube::Error::Discovery(_) => true,
        _ => false,
    };
    if missing {
        format!(
            "{subject} dry-run failed: no matches for kind \"{kind}\" in version \"{api_version}\""
        )
    } else {
        api_failure(subject, "dry-run failed", e)
    }
}

fn fail_api(id: &ObjectId, what: &str, e: &kube::Error) -> ApplyError {
    ApplyError {
        object: subject(id),
        message: api_failure(&subject(id), what, e),
        ..Default::default()
    }
}

/// How one object is applied, from its `ssa` label or annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Override,
    Merge,
    IfNotPresent,
    Ignore,
}

/// The value of `key` as a label or an annotation of `obj` (label first).
fn meta_value<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    ["labels", "annotations"]
        .iter()
        .find_map(|m| obj["metadata"][m][key].as_str())
}

/// The [`Policy`] of an object (`Override` when unset or unknown), values case-insensitive.
pub fn policy_of(obj: &Value) -> Policy {
    match meta_value(obj, SSA_KEY)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("merge") => Policy::Merge,
        Some("ifnotpresent") => Policy::IfNotPresent,
        Some("ignore") => Policy::Ignore,
        _ => Policy::Override,
    }
}

/// Whether an object opts into recreation (`kustomize.toolkit.fluxcd.io/force: enabled`).
pub fn force_of(obj: &Value) -> bool {
    meta_value(obj, FORCE_KEY).is_some_and(|v| v.eq_ignore_ascii_case("enabled"))
}

/// `obj` without what the API server owns (`status`, `metadata.managedFields|resourceVersion|
/// generation|uid|creationTimestamp`): what a dry-run is compared on.
pub fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = o["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            meta.remove(k);
        }
    }
    o
}

/// Whether an API error says a field cannot change once set, so `force` may delete and recreate
/// the object: an `Invalid` (422) naming immutability in any of the API server's wordings
/// ("field is immutable", "may not change once set" for a Service's clusterIP, "may not be
/// changed", "updates to statefulset spec ... are forbidden") or a webhook's / CEL rule's
/// "immutable". Flux's `IsImmutableError` takes every `Invalid` and `Conflict` as immutable,
/// so with `force` an object that is merely invalid (`replicas: "two"`) is deleted and then
/// fails to be created again; here it is reported and left in place.
pub fn is_immutable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            let m = s.message.to_lowercase();
            (s.code == 422 || s.reason == "Invalid")
                && (m.contains("immutable")
                    || m.contains("cannot change")
                    || m.contains("may not change")
                    || m.contains("may not be changed")
                    || m.contains("are forbidden"))
        }
        _ => false,
    }
}

/// The managedFields entries an `Override` apply removes (the [`OVERRIDE_MANAGERS`]'
/// `Update`s); `None` when there are none.
pub fn override_managed_fields(live: &Value) -> Option<Vec<Value>> {
    let fields = live["metadata"]["managedFields"].as_array()?;
    let keep: Vec<Value> = fields
        .iter()
        .filter(|f| {
            !(f["operation"] == "Update"
                && OVERRIDE_MANAGERS.contains(&f["manager"].as_str().unwrap_or_default()))
        })
        .cloned()
        .collect();
    (keep.len() != fields.len()).then_some(keep)
}

/// Options of one [`Applier::apply_all`].
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// `spec.force`: recreate objects whose immutable fields changed.
    pub force: bool,
    /// The owner `(name, namespace)`: its labels are stamped on every object.
    pub owner: Option<(String, String)>,
    /// Operator's custom stage kinds, `(group, kind)`.
    pub custom_stages: Vec<(String, String)>,
    /// Bound of the wait for CRDs and Namespaces.
    pub wait_timeout: Duration,
    /// Objects of one stage read, dry-run and applied at once (Flux's `--concurrent-ssa`,
    /// [`CONCURRENT_SSA`]); 0 and 1: one after another.
    pub concurrency: usize,
}

/// Flux's default `--concurrent-ssa` (kustomize-controller): objects of a stage applied at once.
pub const CONCURRENT_SSA: usize = 4;

/// Moves the successes of `results` (in order) to `out` and returns the first failure: a
/// stage's applies run concurrently, so every object applied, also after a failed one, is
/// reported (the caller's inventory must name it). PURE.
fn first_failure<T, E>(out: &mut Vec<T>, results: Vec<Result<T, E>>) -> Option<E> {
    let mut first = None;
    for r in results {
        match r {
            Ok(c) => out.push(c),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first
}

/// One object after its dry-run: nothing left to do, or the apply to make.
enum Planned {
    Done(Change),
    Apply(Box<PendingApply>),
}

/// An apply a dry-run accepted (`force`: recreate on an immutable field, the live object
/// existing).
struct PendingApply {
    api: Api<DynamicObject>,
    change: Change,
    desired: DynamicObject,
    force: bool,
}

/// What a dry-run found for one object ([`Applier::dry_run_one`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DryRun {
    pub change: Change,
    /// The object in the cluster, `None` when it does not exist.
    pub live: Option<Value>,
    /// The server-side dry-run apply result, `None` when skipped or to be recreated.
    pub merged: Option<Value>,
}

/// The live copy of one object and, unless skipped, its desired form and dry-run result.
struct Plan {
    id: ObjectId,
    version: String,
    api: Api<DynamicObject>,
    live: Option<Value>,
    policy: Policy,
    desired: Option<(DynamicObject, Result<DynamicObject, kube::Error>)>,
}

/// The change of the object `id` (its `version`) for an action.
fn change_of<'a>(id: &'a ObjectId, version: &'a str) -> impl Fn(Action) -> Change + 'a {
    move |action| Change {
        id: id.clone(),
        version: version.to_string(),
        action,
    }
}

/// Applies object sets and deletes objects, with a shared discovery cache.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    discovery: Arc<Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>>,
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            discovery: Arc::default(),
        }
    }

    /// The client the applier talks through (for callers that make their own calls with the
    /// kinds it discovered, [`Self::resolve`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Forget the discovered kinds (after CRDs change).
    pub fn forget_discovery(&self) {
        self.discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The API resource of a group/version/kind, discovered once.
    pub async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities), kube::Error> {
        if let Some(r) = self
            .discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(gvk)
        {
            return Ok(r.clone());
        }
        let r = kube::discovery::pinned_kind(&self.client, gvk).await?;
        self.discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(gvk.clone(), r.clone());
        Ok(r)
    }

    async fn api_for(
        &self,
        id: &ObjectId,
        version: &str,
    ) -> Result<Api<DynamicObject>, ApplyError> {
        let gvk = GroupVersionKind::gvk(&id.group, version, &id.kind);
        let (ar, caps) = self.resolve(&gvk).await.map_err(|e| {
            let api_version = if id.group.is_empty() {
                version.to_string()
            } else {
                format!("{}/{version}", id.group)
            };
            ApplyError {
                object: subject(id),
                message: discovery_failure(&subject(id), &id.kind, &api_version, &e),
                ..Default::default()
            }
        })?;
        Ok(match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            Scope::Namespaced if id.namespace.is_empty() => {
                return Err(fail(
                    id,
                    "namespace not specified",
                    "the object is namespaced",
                ));
            }
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &id.namespace, &ar),
        })
    }

    /// Apply `objects` in Flux's stages; returns the change set in apply order. Within a stage
    /// every object is dry-run before any is applied (Flux's `ApplyAll`): a refused dry-run
    /// applies nothing of its stage. `opts.concurrency` objects are read, dry-run, then applied
    /// at once. Stops at the first error (in the objects' order); every object applied (earlier
    /// stages, and the applies of the failing stage that succeeded) is in the error's `applied`.
    pub async fn apply_all(
        &self,
        objects: Vec<Value>,
        opts: &ApplyOptions,
    ) -> Result<Vec<Change>, ApplyError> {
        let mut out = vec![];
        let partial = |e: ApplyError, out: Vec<Change>| ApplyError { applied: out, ..e };
        for (stage, mut objs) in stages(objects, &opts.custom_stages) {
            if let Some((name, ns)) = &opts.owner {
                for o in &mut objs {
                    stamp_labels(o, &owner_labels(name, ns));
                }
            }
            let at_once = opts.concurrency.max(1);
            // in the objects' order, `at_once` in flight; the first refusal stops the stage
            let staged = &objs;
            let planned: Vec<Planned> = stream::iter(0..objs.len())
                .map(|i| self.plan_one(&staged[i], opts.force))
                .buffered(at_once)
                .try_collect()
                .await
                .map_err(|e| partial(e, std::mem::take(&mut out)))?;
            let committed: Vec<Result<Change, ApplyError>> = stream::iter(planned)
                .map(|p| self.commit(p))
                .buffered(at_once)
                .collect()
                .await;
            if let Some(e) = first_failure(&mut out, committed) {
                return Err(partial(e, out));
            }
            if stage.waits() {
                if let Err(e) = self.wait_ready(&objs, stage, opts.wait_timeout).await {
                    return Err(partial(e, out));
                }
                self.forget_discovery();
            }
        }
        Ok(out)
    }

    /// Read the live copy of `obj`, decide whether it is skipped, else dry-run its apply.
    async fn plan(&self, obj: &Value, field_manager: &str) -> Result<Plan, ApplyError> {
        let id = ObjectId::of(obj);
        let version = version_of(obj);
        let api = self.api_for(&id, &version).await?;
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(|e| fail_api(&id, "read failed", &e))?
            .map(|l| serde_json::to_value(l).unwrap_or_default());
        let policy = policy_of(obj);
        let live_policy = live.as_ref().map(policy_of);
        let disabled = |o: &Value| {
            meta_value(o, RECONCILE_KEY).is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
        };
        let skipped = policy == Policy::Ignore
            || live_policy == Some(Policy::Ignore)
            || disabled(obj)
            || live.as_ref().is_some_and(disabled)
            || (policy == Policy::IfNotPresent && live.is_some());
        if skipped {
            return Ok(Plan {
                id,
                version,
                api,
                live,
                policy,
                desired: None,
            });
        }
        let desired: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| fail(&id, "is not an object", e))?;
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::apply(field_manager).force()
        };
        let dry_run = api.patch(&id.name, &dry, &Patch::Apply(&desired)).await;
        Ok(Plan {
            id,
            version,
            api,
            live,
            policy,
            desired: Some((desired, dry_run)),
        })
    }

    /// What applying `obj` would do, without writing (Flux's `ResourceManager.Diff`): the
    /// change (`created`, `configured`, `unchanged` or `skipped`; `created` too for an object
    /// that `force` would recreate), the live object and the server-side dry-run result (both
    /// `None` where there is none). Errors as [`Self::apply_one`]'s.
    pub async fn dry_run_one(&self, obj: &Value, force: bool) -> Result<DryRun, ApplyError> {
        self.dry_run_one_as(obj, force, FIELD_MANAGER).await
    }

    /// [`Self::dry_run_one`] as another field manager (`helm` for a Helm release's objects, so
    /// fields the new manifest drops are dropped in the result as the real apply drops them).
    pub async fn dry_run_one_as(
        &self,
        obj: &Value,
        force: bool,
        field_manager: &str,
    ) -> Result<DryRun, ApplyError> {
        let Plan {
            id,
            version,
            live,
            desired,
            ..
        } = self.plan(obj, field_manager).await?;
        let change = change_of(&id, &version);
        let Some((_, dry_run)) = desired else {
            return Ok(DryRun {
                change: change(Action::Skipped),
                live,
                merged: None,
            });
        };
        let force = force || force_of(obj);
        let merged = match dry_run {
            Ok(d) => serde_json::to_value(&d).unwrap_or_default(),
            Err(e) if force && live.is_some() && is_immutable(&e) => {
                return Ok(DryRun {
                    change: change(Action::Created),
                    live,
                    merged: None,
                });
            }
            Err(e) => return Err(fail_api(&id, "dry-run failed", &e)),
        };
        let action = match &live {
            None => Action::Created,
            Some(l) if comparable(&merged) == comparable(l) => Action::Unchanged,
            Some(_) => Action::Configured,
        };
        Ok(DryRun {
            change: change(action),
            live,
            merged: Some(merged),
        })
    }

    /// Apply one object (see the module doc).
    pub async fn apply_one(&self, obj: &Value, force: bool) -> Result<Change, ApplyError> {
        let planned = self.plan_one(obj, force).await?;
        self.commit(planned).await
    }

    /// The first half of [`Self::apply_one`]: [`Self::plan`] (read, policy, dry-run), then
    /// recreation on an immutable field with `force`, the managed-fields cleanup of `Override`;
    /// the apply still to make, if any.
    async fn plan_one(&self, obj: &Value, force: bool) -> Result<Planned, ApplyError> {
        let Plan {
            id,
            version,
            api,
            live,
            policy,
            desired,
        } = self.plan(obj, FIELD_MANAGER).await?;
        let change = change_of(&id, &version);
        let Some((desired, dry_run)) = desired else {
            return Ok(Planned::Done(change(Action::Skipped)));
        };
        let force = force || force_of(obj);
        let dry_run = match dry_run {
            Ok(d) => d,
            Err(e) if force && live.is_some() && is_immutable(&e) => {
                return self
                    .recreate(&api, &id, &desired)
                    .await
                    .map(|_| Planned::Done(change(Action::Created)));
            }
            Err(e) => return Err(fail_api(&id, "dry-run failed", &e)),
        };
        if let Some(l) = &live {
            let dry_run = serde_json::to_value(&dry_run).unwrap_or_default();
            if comparable(&dry_run) == comparable(l) {
                return Ok(Planned::Done(change(Action::Unchanged)));
            }
            if policy == Policy::Override
                && let Some(keep) = override_managed_fields(l)
            {
                let patch =
                    json!([{"op": "replace", "path": "/metadata/managedFields", "value": keep}]);
                let patch: json_patch::Patch =
                    serde_json::from_value(patch).map_err(|e| fail(&id, "cleanup failed", e))?;
                api.patch(&id.name, &PatchParams::default(), &Patch::Json::<()>(patch))
                    .await
                    .map_err(|e| fail_api(&id, "field managers cleanup failed", &e))?;
            }
        }
        Ok(Planned::Apply(Box::new(PendingApply {
            api,
            change: change(if live.is_some() {
                Action::Configured
            } else {
                Action::Created
            }),
            desired,
            force: force && live.is_some(),
        })))
    }

    /// The second half of [`Self::apply_one`]: the server-side apply a [`Planned`] holds.
    async fn commit(&self, planned: Planned) -> Result<Change, ApplyError> {
        let PendingApply {
            api,
            change,
            desired,
            force,
        } = match planned {
            Planned::Done(change) => return Ok(change),
            Planned::Apply(pending) => *pending,
        };
        let id = &change.id;
        match api
            .patch(
                &id.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
        {
            Ok(_) => Ok(change),
            Err(e) if force && is_immutable(&e) => {
                self.recreate(&api, id, &desired).await?;
                Ok(Change {
                    action: Action::Created,
                    ..change
                })
            }
            Err(e) => Err(fail_api(id, "apply failed", &e)),
        }
    }

    /// Delete the object, wait until it is gone (at most 30 s), apply it again.
    async fn recreate(
        &self,
        api: &Api<DynamicObject>,
        id: &ObjectId,
        desired: &DynamicObject,
    ) -> Result<(), ApplyError> {
        api.delete(&id.name, &DeleteParams::foreground())
            .await
            .map_err(|e| fail_api(id, "delete (to recreate) failed", &e))?;
        let until = Instant::now() + Duration::from_secs(30);
        while api
            .get_opt(&id.name)
            .await
            .map_err(|e| fail_api(id, "read failed", &e))?
            .is_some()
        {
            if Instant::now() > until {
                return Err(fail(
                    id,
                    "recreate failed",
                    "the old object is still terminating",
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        api.patch(
            &id.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(|e| fail_api(id, "apply failed", &e))?;
        Ok(())
    }

    /// Wait until the CRDs of a stage are `Established` and its Namespaces `Active`.
    async fn wait_ready(
        &self,
        objs: &[Value],
        stage: Stage,
        timeout: Duration,
    ) -> Result<(), ApplyError> {
        let until = Instant::now() + timeout.max(Duration::from_secs(1));
        for o in objs {
            let id = ObjectId::of(o);
            let ready = |live: &Value| match id.kind.as_str() {
                "CustomResourceDefinition" => {
                    live["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
                }
                "Namespace" => live["status"]["phase"] == "Active",
                _ => true,
            };
            if !matches!(id.kind.as_str(), "CustomResourceDefinition" | "Namespace") {
                continue;
            }
            let api = self.api_for(&id, &version_of(o)).await?;
            loop {
                let live = api
                    .get_opt(&id.name)
                    .await
                    .map_err(|e| fail_api(&id, "read failed", &e))?
                    .map(|l| serde_json::to_value(l).unwrap_or_default());
                if live.as_ref().is_some_and(ready) {
                    break;
                }
                if Instant::now() > until {
                    return Err(fail(
                        &id,
                        &format!("{stage:?} stage"),
                        "timeout waiting for readiness",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Prune `stale` (deletion order, [`super::inventory::stale`]) with Flux's rule
    /// ([`prune_decision`]): objects deleted are `deleted` changes, those left alone are not
    /// listed. Returns the changes and the entries that could not be deleted with their error
    /// (to keep in the inventory, [`super::inventory::merge_survivors`]).
    pub async fn prune(
        &self,
        stale: &[ResourceRef],
        owner: (&str, &str),
        wait: Option<Duration>,
    ) -> (Vec<Change>, Vec<(ResourceRef, ApplyError)>) {
        let mut deleted = vec![];
        let mut failed = vec![];
        let mut waiting = vec![];
        for entry in stale {
            let id = match ObjectId::parse(&entry.id) {
                Ok(id) => id,
                Err(e) => {
                    failed.push((
                        entry.clone(),
                        ApplyError {
                            object: entry.id.clone(),
                            message: e.to_string(),
                            ..Default::default()
                        },
                    ));
                    continue;
                }
            };
            match self.delete_owned(&id, &entry.v, owner).await {
                Ok(Some(api)) => {
                    deleted.push(Change {
                        id: id.clone(),
                        version: entry.v.clone(),
                        action: Action::Deleted,
                    });
                    waiting.push((id, api));
                }
                Ok(None) => {}
                Err(e) => failed.push((entry.clone(), e)),
            }
        }
        if let Some(timeout) = wait {
            let until = Instant::now() + timeout;
            for (id, api) in waiting {
                while matches!(api.get_opt(&id.name).await, Ok(Some(_))) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        (deleted, failed)
    }

    /// The entries of `stale` that [`Self::prune`] would delete now ([`prune_decision`] on
    /// their live copies), as `deleted` changes, without deleting anything.
    pub async fn prune_preview(
        &self,
        stale: &[ResourceRef],
        owner: (&str, &str),
    ) -> Result<Vec<Change>, ApplyError> {
        let mut out = vec![];
        for entry in stale {
            let id = ObjectId::parse(&entry.id).map_err(|e| ApplyError {
                object: entry.id.clone(),
                message: e.to_string(),
                ..Default::default()
            })?;
            if self.prunable(&id, &entry.v, owner).await?.is_some() {
                out.push(Change {
                    id,
                    version: entry.v.clone(),
                    action: Action::Deleted,
                });
            }
        }
        Ok(out)
    }

    /// Delete one stale object if [`prune_decision`] says so; `Some(api)` when deleted.
    async fn delete_owned(
        &self,
        id: &ObjectId,
        version: &str,
        owner: (&str, &str),
    ) -> Result<Option<Api<DynamicObject>>, ApplyError> {
        let Some(api) = self.prunable(id, version, owner).await? else {
            return Ok(None);
        };
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&id.name, &dp).await {
            Ok(_) => Ok(Some(api)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(fail_api(id, "delete failed", &e)),
        }
    }

    /// `Some(api)` of a stale object that exists and [`prune_decision`] lets go.
    async fn prunable(
        &self,
        id: &ObjectId,
        version: &str,
        (name, ns): (&str, &str),
    ) -> Result<Option<Api<DynamicObject>>, ApplyError> {
        let api = match self.api_for(id, version).await {
            Ok(a) => a,
            // the kind is gone (its CRD was pruned first): so are its objects
            Err(_)
                if self
                    .resolve(&GroupVersionKind::gvk(&id.group, version, &id.kind))
                    .await
                    .is_err() =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(|e| fail_api(id, "read failed", &e))?
            .map(|l| serde_json::to_value(l).unwrap_or_default());
        Ok((prune_decision(live.as_ref(), name, ns) == PruneDecision::Delete).then_some(api))
    }
}

/// The version part of `apiVersion` (`apps/v1` → `v1`).
fn version_of(obj: &Value) -> String {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    av.rsplit_once('/').map_or(av, |(_, v)| v).to_string()
}

/// Add `labels` to `obj`'s `metadata.labels`.
pub fn stamp_labels(obj: &mut Value, labels: &std::collections::BTreeMap<String, String>) {
    let meta = &mut obj["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    for (k, v) in labels {
        meta["labels"][k] = json!(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, name: &str, kind: &str) -> ObjectId {
        ObjectId {
            namespace: ns.into(),
            name: name.into(),
            group: "apps".into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn immutable_fields_in_the_api_servers_wordings_but_not_invalid_values() {
        let invalid = |m: &str| {
            kube::Error::Api(
                kube::core::Status::failure(m, "Invalid")
                    .with_code(422)
                    .boxed(),
            )
        };
        for m in [
            "Job.batch \"j\" is invalid: spec.template: Invalid value: ...: field is immutable",
            "Service \"fixedip\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.96.200.11\"]: may not change once set",
            "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template' are forbidden",
            "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests",
        ] {
            assert!(is_immutable(&invalid(m)), "{m}");
        }
        // merely invalid: never deleted by `force`
        let m = "Deployment.apps \"bad\" is invalid: spec.replicas: Invalid value: \"two\": must be an integer";
        assert!(!is_immutable(&invalid(m)));
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("field is immutable", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert!(!is_immutable(&forbidden));
    }

    #[test]
    fn api_errors_are_worded_as_fluxs_never_debug_dumped() {
        let status = |m: &str, r: &str, code| {
            kube::Error::Api(kube::core::Status::failure(m, r).with_code(code).boxed())
        };
        let e = status("namespaces \"x\" not found", "NotFound", 404);
        assert_eq!(
            api_failure("ConfigMap/x/app", "dry-run failed", &e),
            "ConfigMap/x/app dry-run failed (NotFound): namespaces \"x\" not found"
        );
        // a body that is not a Status: kube's placeholder reason is not shown
        let e = status("404 page not found\n", "Failed to parse error data", 404);
        let m = api_failure("ConfigMap/x/app", "apply failed", &e);
        assert_eq!(m, "ConfigMap/x/app apply failed: 404 page not found");
        assert_eq!(
            discovery_failure(
                "HelmRelease/podinfo/podinfo",
                "HelmRelease",
                "helm.toolkit.fluxcd.io/v2",
                &e
            ),
            "HelmRelease/podinfo/podinfo dry-run failed: no matches for kind \"HelmRelease\" in version \"helm.toolkit.fluxcd.io/v2\""
        );
        let e = kube::Error::Discovery(kube::error::DiscoveryError::MissingKind("x".into()));
        assert!(
            discovery_failure("Foo/a", "Foo", "v1", &e)
                .ends_with("no matches for kind \"Foo\" in version \"v1\""),
        );
        let e = status("etcd timeout", "InternalError", 500);
        let m = discovery_failure("Foo/a", "Foo", "v1", &e);
        assert_eq!(m, "Foo/a dry-run failed (InternalError): etcd timeout");
        assert!(!m.contains("Status {"), "{m}");
    }

    #[test]
    fn a_stages_applies_report_every_success_and_the_first_failure() {
        type R = Result<u8, &'static str>;
        let table: [(Vec<R>, Vec<u8>, Option<&str>); 4] = [
            (vec![], vec![], None),
            (vec![Ok(1), Ok(2)], vec![1, 2], None),
            // a success after the failure was applied too: it is reported
            (
                vec![Ok(1), Err("a"), Ok(3), Err("b")],
                vec![1, 3],
                Some("a"),
            ),
            (vec![Err("a")], vec![], Some("a")),
        ];
        for (results, applied, failure) in table {
            let mut out = vec![0];
            let e = first_failure(&mut out, results.clone());
            assert_eq!(e, failure, "{results:?}");
            assert_eq!(out[1..], applied[..], "{results:?}");
            assert_eq!(out[0], 0, "earlier changes kept");
        }
    }

    #[test]
    fn change_lines_are_fluxs() {
        let c = |ns, a| Change {
            id: id(ns, "podinfo", "Deployment"),
            version: "v1".into(),
            action: a,
        };
        assert_eq!(
            c("apps", Action::Configured).to_string(),
            "Deployment/apps/podinfo configured"
        );
        assert_eq!(
            c("", Action::Created).to_string(),
            "Deployment/podinfo created"
        );
        let msg = change_set_message(&[
            c("a", Action::Unchanged),
            c("b", Action::Created),
            c("c", Action::Deleted),
        ]);
        assert_eq!(
            msg,
            "Deployment/b/podinfo created\nDeployment/c/podinfo deleted"
        );
    }

    #[test]
    fn policies_read_labels_and_annotations_case_insensitively() {
        let o = |m: Value| json!({"metadata": m});
        assert_eq!(policy_of(&o(json!({}))), Policy::Override);
        assert_eq!(
            policy_of(&o(json!({"annotations": {SSA_KEY: "merge"}}))),
            Policy::Merge
        );
        assert_eq!(
            policy_of(&o(json!({"labels": {SSA_KEY: "IfNotPresent"}}))),
            Policy::IfNotPresent
        );
        assert_eq!(
            policy_of(&o(json!({"annotations": {SSA_KEY: "IGNORE"}}))),
            Policy::Ignore
        );
        assert_eq!(
            policy_of(&o(json!({"annotations": {SSA_KEY: "bogus"}}))),
            Policy::Override
        );
        assert!(force_of(&o(json!({"annotations": {FORCE_KEY: "Enabled"}}))));
        assert!(!force_of(&o(
            json!({"annotations": {FORCE_KEY: "disabled"}})
        )));
    }

    #[test]
    fn comparable_drops_server_owned_fields_only() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "generation": 2,
            "managedFields": [{}], "labels": {"a": "b"}}, "spec": {"r": 1}, "status": {"s": 1}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "9", "labels": {"a": "b"}}, "spec": {"r": 1}});
        assert_eq!(comparable(&a), comparable(&b));
        let c = json!({"metadata": {"name": "x", "labels": {"a": "c"}}, "spec": {"r": 1}});
        assert_ne!(comparable(&a), comparable(&c));
    }

    #[test]
    fn override_removes_client_side_managers_only() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-client-side-apply", "operation": "Update"},
            {"manager": "pennant", "operation": "Apply"},
            {"manager": "kube-controller-manager", "operation": "Update"},
        ]}});
        let keep = override_managed_fields(&live).unwrap();
        let managers: Vec<_> = keep
            .iter()
            .map(|f| f["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["pennant", "kube-controller-manager"]);
        let clean =
            json!({"metadata": {"managedFields": [{"manager": "pennant", "operation": "Apply"}]}});
        assert_eq!(override_managed_fields(&clean), None);
    }
}
