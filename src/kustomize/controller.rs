//! The kustomize controller (`--controllers kustomize`): Flux's kustomize-controller for
//! `kustomize.toolkit.fluxcd.io/v1` Kustomizations.
//!
//! Wiring: the Kustomization watch passes an event on a new generation, a new
//! `reconcile.fluxcd.io/requestedAt` token or a deletion (Flux's predicate); a GitRepository,
//! OCIRepository or ExternalArtifact whose artifact revision differs from a Kustomization's
//! `status.lastAttemptedRevision` reconciles the Kustomizations naming it at once. Otherwise
//! `spec.interval` after a success, `spec.retryInterval` (else the interval) after a failure.
//!
//! Each reconcile: finalizer → suspend → source artifact (download, `sha256:` digest verified,
//! unpacked into a temp dir) → SOPS decryption of the generator/patch files in that temp copy
//! ([`super::decrypt`], age keys of `spec.decryption.secretRef`) → [`super::build`] (the real
//! `kustomize`) → [`decrypt`] of the built objects → postBuild substitution
//! ([`super::substitute`], variables from `substituteFrom` ConfigMaps/Secrets; these render
//! steps are [`super::render`], shared with `pennant build|diff ks`) → `spec.commonMetadata`
//! labels and annotations on every object →
//! staged server-side apply ([`crate::apply::ssa`]) → prune of the stale inventory entries →
//! [`health`] hook → status (`inventory`, `lastAppliedRevision`, `lastAttemptedRevision`,
//! `history`, Ready `Applied revision: <rev>`) and Events with the change set.
//!
//! A failure is `Ready=False` with Flux's reason (`ArtifactFailed`, `BuildFailed`,
//! `ReconciliationFailed`, `PruneFailed`) and a Warning Event naming the file or object; a
//! failed build or apply prunes nothing and the inventory keeps the objects applied before.
//! Deletion (finalizer `finalizers.fluxcd.io`) prunes per `spec.deletionPolicy`.
//!
//! Health (`wait`, `healthChecks`, `healthCheckExprs`) is a state, not a blocking wait
//! ([`super::health_wait`]): the reconcile returns after the apply and the wait is
//! re-evaluated when a checked object changes. A dependency turning Ready wakes its
//! dependents at once ([`super::wake`]); `--requeue-dependency` stays the fallback.
//!
//! Revision-aware readiness (pennant, [`crate::gitops::canary_gate`]): after the apply and the
//! health step, the Canaries (a watch) targeting a Deployment or DaemonSet of the inventory
//! decide `Ready`: `Unknown` `CanaryProgressing` while one analyses the applied pod template
//! (nothing fetched or applied again meanwhile; the Canary's status changes wake the
//! Kustomization), `True` with `status.lastPromotedRevision` once all promoted it, `False`
//! `CanaryFailed` with `status.rejectedRevision` once one rolled it back — a rejected revision is
//! not fetched or applied again until the source moves or the spec changes. The fields those
//! Canaries own (the target's replicas while parked, ...) are applied as they are live
//! ([`crate::apply::ownership::keep_owned`]). Local targets only (no `kubeConfig`, no
//! impersonation).
//!
//! Accepted but not acted on yet (an `Unsupported=True` condition and a Warning Event):
//! `decryption.serviceAccountName`
//! (cloud KMS). Refused (`Ready=False`, `Stalled=True`, reason `UnsupportedField`, a Warning
//! Event, nothing applied or pruned): `kubeConfig.configMapRef` (workload identity), since
//! applying to the local cluster instead would be wrong. `kubeConfig.secretRef` (a remote
//! cluster) and `serviceAccountName` (impersonation) choose where and as whom objects are
//! applied, pruned and checked ([`super::target`]); sources, Secrets, status and Events stay
//! local. Decryption failures (missing Secret, wrong
//! key, unsupported key type, ciphertext without `spec.decryption`) are `BuildFailed`, as in
//! Flux, before anything is applied or pruned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::Digest;
use tracing::{info, warn};

use super::build::{BuildOptions, kustomize_binary};
use super::health_wait::{self, Attempted, Outcome, Target, WaitState, Waits};
use super::render::{
    RenderError, SourceState, cause_of, fetch_artifact, render, source_key, source_state,
};
use super::target::{Options as TargetOptions, TargetError, Targets};
use crate::api::Canary;
use crate::api::kustomization::{
    GROUP, HISTORY_MAX_SIZE, Kustomization, KustomizationStatus, ResourceInventory, Snapshot,
};
use crate::api::source::{
    Artifact, ExternalArtifact, FINALIZER, GitRepository, OCIRepository, Source,
};
use crate::apply::inventory::{merge_survivors, stale};
use crate::apply::ssa::{ApplyOptions, Change, change_set_message};
use crate::gitops::canary_gate::{self as gate, Gate};
use crate::gitops::conditions::{self, reasons, types};
use crate::gitops::depends_on::{DEPENDENCY_CYCLE, check_dependencies, find_cycle};
use crate::gitops::reconcile_request::requested_at;
use crate::health::expr::eval_ready_expr;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// `source.component` of the Events: Flux's, so tools filtering on it read pennant's.
pub const EVENT_SOURCE: &str = "kustomize-controller";
/// Field manager of the controller's own writes (status, finalizers, events).
const FIELD_MANAGER: &str = crate::apply::ssa::FIELD_MANAGER;
/// Condition type of the fields accepted but not acted on (as the source controller's).
pub const UNSUPPORTED: &str = "Unsupported";
/// Its reason.
pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";
/// Flux's prefix of a terminal configuration error (`TerminalErrorMessage`).
pub const TERMINAL_ERROR_MESSAGE: &str =
    "Reconciliation failed terminally due to configuration error";

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub build: BuildOptions,
    /// Wait before the next attempt when a dependency is not ready or the source has no
    /// artifact yet (Flux's `--requeue-dependency`, 30 s).
    pub requeue_dependency: Duration,
    /// Impersonation and kubeconfig flags ([`super::target`]).
    pub target: TargetOptions,
    /// Kustomizations reconciled at once (Flux's `--concurrent`, 4).
    pub concurrent: u16,
    /// The Canary controller's default router (`--mesh-provider`), for the fields it owns in
    /// the Canaries without `spec.provider`.
    pub mesh_provider: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            build: BuildOptions {
                kustomize: kustomize_binary(),
                allow_remote_bases: false,
            },
            requeue_dependency: Duration::from_secs(30),
            target: TargetOptions::default(),
            concurrent: 4,
            mesh_provider: crate::api::canary::DEFAULT_MESH_PROVIDER.into(),
        }
    }
}

/// Why a reconcile failed (the status says more).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(String),
}

struct Ctx {
    client: Client,
    /// Running health waits, and the watches of the objects they check.
    waits: Arc<Waits>,
    watches: Arc<crate::health::watch::Watches>,
    /// Kustomizations waiting for a HelmRelease (pennant's `dependsOn[].kind`).
    helm_dependents: Arc<super::wake::HelmDependents>,
    /// Where each Kustomization applies (the local client, impersonating or remote ones).
    targets: Targets,
    /// Every Canary in scope (revision-aware readiness, [`gate`]).
    canaries: Store<Canary>,
    /// The Kustomizations whose gate waits for a Canary.
    gate_waiters: Arc<gate::Waiters>,
    settings: Settings,
    instance: String,
    failures: Mutex<BTreeMap<(String, String), u32>>,
    /// Per Kustomization, the turn to record Events: a reconcile's Events are recorded in the
    /// background after its status write, after those of the reconcile before it.
    event_turns: Mutex<BTreeMap<(String, String), EventTurn>>,
}

/// A Kustomization's turn to record its Events ([`Ctx::event_turn`]).
type EventTurn = Arc<tokio::sync::Mutex<()>>;

impl Ctx {
    /// The Event turn of `key` (created on first use).
    fn event_turn(&self, key: &(String, String)) -> EventTurn {
        self.event_turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }
}

/// The fields of a spec accepted but not acted on yet, as `spec.<field> (<why>)`. PURE.
pub fn unsupported_fields(ks: &Kustomization) -> Vec<String> {
    let s = &ks.spec;
    let mut out = vec![];
    if s.decryption
        .as_ref()
        .and_then(|d| d.service_account_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        out.push(
            "spec.decryption.serviceAccountName (no cloud KMS: age keys from secretRef only)"
                .to_string(),
        );
    }
    out
}

/// Reason of a spec that pennant refuses to apply (`Stalled=True`, nothing applied or pruned).
pub const UNSUPPORTED_FIELD: &str = super::target::UNSUPPORTED_FIELD;

/// Why the spec must not be applied at all, or `None`: `spec.kubeConfig.configMapRef`
/// (Flux 2.6 workload identity) is not implemented, and applying to the local cluster instead
/// would be wrong. (`spec.kubeConfig.secretRef` and `spec.serviceAccountName` are implemented:
/// [`super::target`].) PURE.
pub fn refused(ks: &Kustomization) -> Option<String> {
    let kc = ks.spec.kube_config.as_ref()?;
    (kc.secret_ref.is_none()).then(|| super::target::CONFIG_MAP_REF_REFUSED.to_string())
}

/// A step of a run on a new revision, named in `Reconciling`'s message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Downloading and unpacking the artifact.
    Fetching,
    /// Decrypting, building and post-building the manifests.
    Building,
}

/// Flux's in-progress message: `Fetching manifests for revision <rev> with a timeout of
/// <timeout>` (Go duration, e.g. `9m30s`), `Building manifests ...` likewise. PURE.
pub fn progressing_message(step: Step, revision: &str, timeout: Duration) -> String {
    let verb = match step {
        Step::Fetching => "Fetching",
        Step::Building => "Building",
    };
    format!(
        "{verb} manifests for revision {revision} with a timeout of {}",
        crate::util::go_duration(timeout.as_millis() as f64)
    )
}

/// A run in progress (Flux's reconcile before the build): `Ready=Unknown` (`Progressing`,
/// `Reconciliation in progress`), `Reconciling=True` (`Progressing`, `message`), no `Stalled`.
/// PURE.
pub fn mark_progressing(conds: &mut Vec<Condition>, message: &str, generation: i64, now: &Time) {
    conditions::remove_condition(conds, types::STALLED);
    conditions::set_condition(
        conds,
        types::READY,
        conditions::UNKNOWN,
        reasons::PROGRESSING,
        "Reconciliation in progress",
        generation,
        now,
    );
    conditions::mark_true(
        conds,
        types::RECONCILING,
        reasons::PROGRESSING,
        message,
        generation,
        now,
    );
}

/// A successful run: `Ready=True` (`ReconciliationSucceeded`, `message`), neither
/// `Reconciling` nor `Stalled`. PURE.
pub fn mark_succeeded(conds: &mut Vec<Condition>, message: &str, generation: i64, now: &Time) {
    conditions::mark_true(
        conds,
        types::READY,
        reasons::RECONCILIATION_SUCCEEDED,
        message,
        generation,
        now,
    );
    conditions::remove_condition(conds, types::RECONCILING);
    conditions::remove_condition(conds, types::STALLED);
}

/// A failed run: `Ready=False` (`reason`, `message`). A `terminal` failure (retrying cannot
/// help without a spec change) is `Stalled=True` with the same reason and message and no
/// `Reconciling`; otherwise `Stalled` goes and a `Reconciling` left by the run becomes
/// `ProgressingWithRetry` (Flux's `finalizeStatus`). Never `Reconciling` and `Stalled`
/// together. PURE.
pub fn mark_failed(
    conds: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    terminal: bool,
    generation: i64,
    now: &Time,
) {
    conditions::mark_false(conds, types::READY, reason, message, generation, now);
    if terminal {
        conditions::remove_condition(conds, types::RECONCILING);
        conditions::mark_true(conds, types::STALLED, reason, message, generation, now);
    } else {
        conditions::remove_condition(conds, types::STALLED);
        if let Some(c) = conds.iter_mut().find(|c| c.type_ == types::RECONCILING) {
            c.reason = reasons::PROGRESSING_WITH_RETRY.to_string();
        }
    }
}

/// `sha256:<hex>` of the built objects (the `status.history` digest). PURE.
pub fn manifests_digest(objects: &[Value]) -> String {
    let mut h = sha2::Sha256::new();
    for o in objects {
        h.update(serde_json::to_vec(o).unwrap_or_default());
        h.update(b"\n---\n");
    }
    format!("sha256:{:x}", h.finalize())
}

/// Record one reconcile in `history` (Flux's `History.Upsert`): the entry of the same digest
/// is updated (count, last time, duration, status) and moved first, else a new one is put
/// first; at most [`HISTORY_MAX_SIZE`] entries. PURE.
pub fn record_history(
    history: &mut Vec<Snapshot>,
    digest: &str,
    revision: &str,
    status: &str,
    took: Duration,
    now: &Time,
) {
    let mut entry = match history.iter().position(|h| h.digest == digest) {
        Some(i) => history.remove(i),
        None => Snapshot {
            digest: digest.to_string(),
            first_reconciled: now.clone(),
            last_reconciled: now.clone(),
            last_reconciled_duration: String::new(),
            last_reconciled_status: String::new(),
            total_reconciliations: 0,
            metadata: BTreeMap::new(),
        },
    };
    entry.last_reconciled = now.clone();
    entry.last_reconciled_duration = crate::util::go_duration(took.as_millis() as f64);
    entry.last_reconciled_status = status.to_string();
    entry.total_reconciliations += 1;
    entry
        .metadata
        .insert("revision".to_string(), revision.to_string());
    history.insert(0, entry);
    history.truncate(HISTORY_MAX_SIZE);
}

/// The Kustomizations reading `source` whose last attempt is not its artifact's revision (none
/// while it has no artifact).
fn for_source<S: Source + Resource<DynamicType = ()>>(
    store: &Store<Kustomization>,
    source: &S,
) -> Vec<ObjectRef<Kustomization>> {
    let Some(revision) = source.artifact().map(|a| a.revision.as_str()) else {
        return vec![];
    };
    let key = (
        S::kind(&()).into_owned(),
        source.namespace().unwrap_or_default(),
        source.name_any(),
    );
    store
        .state()
        .iter()
        .filter(|k| source_key(k) == key)
        .filter(|k| {
            k.status
                .as_ref()
                .and_then(|s| s.last_attempted_revision.as_deref())
                != Some(revision)
        })
        .map(|k| ObjectRef::from_obj(&**k))
        .collect()
}

/// Watch and reconcile Kustomizations until the process's shutdown.
pub async fn run(process: crate::runtime::Process, settings: Settings) -> anyhow::Result<()> {
    let crate::runtime::Process {
        client,
        scope,
        shutdown,
        ..
    } = process.clone();
    let (store, writer) = reflector::store::<Kustomization>();
    let wanted = |o: &Kustomization| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        o.metadata.generation.hash(&mut h);
        requested_at(o.metadata.annotations.as_ref()).hash(&mut h);
        o.metadata.deletion_timestamp.is_some().hash(&mut h);
        Some(h.finish())
    };
    let first_list = std::sync::Once::new();
    // a dependency turning Ready and a checked object changing wake Kustomizations at once
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let (deps_store, wake_deps) = (store.clone(), wake.clone());
    let trigger = reflector::reflector(
        writer,
        watcher(scope.api::<Kustomization>(&client), scope.watcher_config()),
    )
    .backoff(crate::runtime::watch_backoff())
    .inspect(move |e| {
        if matches!(e, Ok(watcher::Event::InitDone)) {
            first_list.call_once(|| {
                process.synced();
                info!("kustomize controller: caches synced");
            });
        }
    })
    .applied_objects()
    .inspect(move |r| {
        if let Ok(k) = r {
            for d in super::wake::dependents_to_wake(&deps_store.state(), k) {
                let _ = wake_deps.send(d);
            }
        }
    })
    .predicate_filter(wanted, PredicateConfig::default());
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    let any = || watcher::Config::default().any_semantic();
    let (watches, changed) =
        crate::health::watch::Watches::new(client.clone(), scope.namespace.clone());
    let waits = Arc::new(Waits::default());
    let helm_dependents = Arc::new(super::wake::HelmDependents::default());
    tokio::spawn(super::wake::forward_object_changes(
        changed,
        waits.clone(),
        helm_dependents.clone(),
        wake.clone(),
    ));
    // a Canary's status change wakes the Kustomizations waiting for its run. Every Canary,
    // whatever its shard label: a Kustomization of this shard may apply (and must then wait
    // for, and keep off the fields of) a Canary another shard analyses
    let every_shards_canary = watcher::Config::default().any_semantic();
    let (canaries, canary_writer) = reflector::store::<Canary>();
    let gate_waiters = Arc::new(gate::Waiters::default());
    let (waiters, wake_gated) = (gate_waiters.clone(), wake.clone());
    tokio::spawn(
        reflector::reflector(
            canary_writer,
            watcher(scope.api::<Canary>(&client), every_shards_canary),
        )
        .backoff(crate::runtime::watch_backoff())
        // a deleted Canary too: its applier stops waiting for it
        .touched_objects()
        .for_each(move |r| {
            match r {
                Ok(c) => {
                    for (ns, name) in waiters.waiting_for(&c) {
                        let _ = wake_gated.send(ObjectRef::new(&name).within(&ns));
                    }
                }
                Err(e) => tracing::debug!("kustomize controller: canary watch: {e}"),
            }
            futures::future::ready(())
        }),
    );
    let ctx = Arc::new(Ctx {
        canaries,
        gate_waiters,
        waits,
        helm_dependents,
        watches,
        targets: Targets::new(client.clone(), settings.target.clone()),
        client: client.clone(),
        settings,
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into()),
        failures: Mutex::default(),
        event_turns: Mutex::default(),
    });
    let concurrency = ctx.settings.concurrent;
    // a short shared backoff: kube pauses all of a controller's watches on any one's error
    Controller::for_stream(trigger, store)
        .trigger_backoff(crate::runtime::watch_backoff())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches(scope.api::<GitRepository>(&client), any(), move |r| {
            for_source(&s1, &r)
        })
        .watches(scope.api::<OCIRepository>(&client), any(), move |r| {
            for_source(&s2, &r)
        })
        .watches(scope.api::<ExternalArtifact>(&client), any(), move |r| {
            for_source(&s3, &r)
        })
        .reconcile_on(crate::runtime::received(woken))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("kustomize reconcile: {e}");
            }
        })
        .await;
    Ok(())
}

fn error_policy(ks: Arc<Kustomization>, err: &Error, ctx: Arc<Ctx>) -> Requeue {
    warn!(kustomization = %ks.name_any(), "reconcile failed: {err}");
    let key = (ks.namespace().unwrap_or_default(), ks.name_any());
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key).or_default();
        *n += 1;
        *n
    };
    Requeue::requeue(crate::gitops::reconcile_request::failure_backoff(
        n,
        ks.retry_interval().unwrap_or(Duration::from_secs(60)),
    ))
}

async fn reconcile(ks: Arc<Kustomization>, ctx: Arc<Ctx>) -> Result<Requeue, Error> {
    use futures::FutureExt;
    let name = ks.name_any();
    std::panic::AssertUnwindSafe(reconcile_one(ks, ctx.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(Error::Kube(format!(
                "reconcile of {name} panicked (see the log)"
            )))
        })
}

fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Kube(format!("{what}: {e}"))
}

/// A failed step: Flux's reason and the message; `terminal` when retrying cannot help
/// without a spec change (`Stalled`).
struct Failure {
    reason: &'static str,
    message: String,
    terminal: bool,
    /// Retry after this instead of `spec.retryInterval`, with no Warning Event (a dependency
    /// or the source's first artifact awaited: only the status says so, as Flux).
    waiting: Option<Duration>,
    /// A failed health check: the `Healthy=False` message and the manifests' digest (for
    /// `history`); `observedGeneration` then stays, as Flux.
    health: Option<(String, String)>,
}

fn failure(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        terminal: false,
        waiting: None,
        health: None,
    }
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure {
            reason: e.reason,
            message: e.message,
            terminal: e.terminal,
            waiting: None,
            health: None,
        }
    }
}

/// A [`Failure`] that waits on something else (retried after `after`, no Warning Event).
fn waiting(reason: &'static str, message: impl Into<String>, after: Duration) -> Failure {
    Failure {
        waiting: Some(after),
        ..failure(reason, message)
    }
}

/// A [`Failure`] of the spec itself (`Stalled=True`, no retry until the spec changes).
fn terminal(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        terminal: true,
        ..failure(reason, message)
    }
}

impl From<RenderError> for Failure {
    fn from(e: RenderError) -> Failure {
        Failure {
            terminal: e.terminal,
            ..failure(e.reason, e.message)
        }
    }
}

async fn reconcile_one(ks: Arc<Kustomization>, ctx: Arc<Ctx>) -> Result<Requeue, Error> {
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    let api: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &ns);
    if ks.metadata.deletion_timestamp.is_some() {
        ctx.waits.remove(&(ns.clone(), name.clone()));
        ctx.gate_waiters.remove(&(ns.clone(), name.clone()));
        ctx.event_turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.clone(), name.clone()));
        ctx.helm_dependents.set(&(ns.clone(), name.clone()), &[]);
        return finalize(&ks, &api, &ctx).await;
    }
    let mut ks = ks;
    if !ks.finalizers().iter().any(|f| f == FINALIZER) {
        let op = if ks.finalizers().is_empty() {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        };
        ks = Arc::new(patch_json(&api, &ks, op).await?);
    }
    if ks.spec.suspend == Some(true) {
        ctx.waits.remove(&(ns.clone(), name.clone()));
        ctx.gate_waiters.remove(&(ns.clone(), name.clone()));
        return Ok(Requeue::await_change());
    }
    let started = Instant::now();
    let now = Time(Timestamp::now());
    let generation = ks.metadata.generation.unwrap_or_default();
    let old = ks.status.clone().unwrap_or_default();
    let mut status = old.clone();
    if let Some(token) = requested_at(ks.metadata.annotations.as_ref()) {
        status.last_handled_reconcile_at = Some(token.to_string());
    }
    let mut events: Vec<(bool, String, String, Option<String>)> = vec![];
    // accepted but not acted on
    let unsupported = unsupported_fields(&ks);
    if unsupported.is_empty() {
        conditions::remove_condition(&mut status.conditions, UNSUPPORTED);
    } else {
        let message = format!(
            "accepted but not acted on, ignored: {}",
            unsupported.join(", ")
        );
        if conditions::get(&status.conditions, UNSUPPORTED).is_none_or(|c| c.message != message) {
            events.push((true, UNSUPPORTED_FIELDS.into(), message.clone(), None));
        }
        conditions::mark_true(
            &mut status.conditions,
            UNSUPPORTED,
            UNSUPPORTED_FIELDS,
            &message,
            generation,
            &now,
        );
    }
    let mut written = old.clone();
    let refusal = refused(&ks);
    let pre = match refusal {
        None => canary_pre_check(&ks, &ctx, &old, generation).await,
        Some(_) => None,
    };
    // `Ok(None)`: a Canary analyses the revision applied before, only its gate is evaluated
    let outcome = match (refusal, pre) {
        (Some(message), _) => Err(terminal(UNSUPPORTED_FIELD, message)),
        (None, Some(Pre::Rejected(rev))) => {
            status.last_attempted_revision = Some(rev.clone());
            Err(rejected(&ks, &old, &rev))
        }
        (None, Some(Pre::Resume(rev))) => {
            status.last_attempted_revision = Some(rev);
            Ok(None)
        }
        // Flux: an invalid healthCheckExprs rule is terminal, before the source is read
        (None, None) => {
            match crate::health::expr::HealthExprs::compile(&ks.spec.health_check_exprs) {
                Err(e) => Err(terminal(
                    reasons::INVALID_CEL_EXPRESSION,
                    format!("{TERMINAL_ERROR_MESSAGE}: {}", e.0),
                )),
                Ok(_) => attempt(&ks, &ctx, &api, &mut status, &mut written, &now)
                    .await
                    .map(Some),
            }
        }
    };
    let key = (ns.clone(), name.clone());
    if matches!(outcome, Ok(Some(Attempted::Settled(_)))) && !ctx.gate_waiters.contains(&key) {
        // the status written when its wait passed stands; this object may predate that write
        // in the watch cache, so nothing is rewritten from it
        return Ok(ks
            .interval()
            .map_or(Requeue::await_change(), Requeue::requeue));
    }
    let revision = status.last_attempted_revision.clone();
    let outcome = match outcome {
        Ok(None) => {
            let digest = old
                .history
                .first()
                .map(|h| h.digest.clone())
                .unwrap_or_default();
            let health = match conditions::get(&old.conditions, types::HEALTHY) {
                Some(c) if c.status == conditions::TRUE => Outcome::Passed {
                    message: c.message.clone(),
                    announce: false,
                },
                _ => Outcome::NoChecks,
            };
            Ok((vec![], digest, health))
        }
        Ok(Some(attempted)) => {
            let rev = revision.clone().unwrap_or_default();
            // the controller's watches serve its own cluster and rights only: an impersonated
            // account's objects are read with its client, its wait woken by the watches
            let remote = attempted.client().cloned();
            let target = Target {
                client: remote.as_ref().unwrap_or(&ctx.client),
                watches: remote.is_none().then_some(&*ctx.watches),
                wake: ks.spec.kube_config.is_none().then_some(&*ctx.watches),
            };
            let (changes, digest, health) = health_wait::step(
                &ctx.waits,
                target,
                &ks,
                attempted,
                &rev,
                &old.conditions,
                old.last_applied_revision.as_deref(),
                now.0,
            )
            .await;
            match health {
                Outcome::Failed { ready, healthy } => {
                    let lines = change_set_message(&changes);
                    if !lines.is_empty() {
                        events.push((false, reasons::PROGRESSING.into(), lines, Some(rev)));
                    }
                    Err(Failure {
                        health: Some((healthy, digest)),
                        ..failure(reasons::HEALTH_CHECK_FAILED, ready)
                    })
                }
                health => Ok((changes, digest, health)),
            }
        }
        Err(f) => Err(f),
    };
    // revision-aware readiness: the Canaries of the applied workloads (local cluster only)
    let gate = match &outcome {
        Ok((_, _, Outcome::Waiting { .. })) | Err(_) => Gate::NoCanary,
        Ok(_) if local_target(&ks, &ctx.settings) => {
            observe_gate(
                &ctx,
                key.clone(),
                status.inventory.as_ref(),
                revision.as_deref().unwrap_or_default(),
            )
            .await
        }
        Ok(_) => Gate::NoCanary,
    };
    if !matches!(gate, Gate::Progressing { .. }) {
        ctx.gate_waiters.remove(&key);
    }
    let requeue = match outcome {
        Ok((changes, digest, health))
            if matches!(gate, Gate::Progressing { .. } | Gate::Failed { .. }) =>
        {
            let rev = revision.clone().unwrap_or_default();
            match health {
                Outcome::Passed { message, .. } => conditions::mark_true(
                    &mut status.conditions,
                    types::HEALTHY,
                    reasons::SUCCEEDED,
                    &message,
                    generation,
                    &now,
                ),
                _ => conditions::remove_condition(&mut status.conditions, types::HEALTHY),
            }
            gate::mark(&mut status.conditions, &gate, generation, &now);
            status.observed_generation = Some(generation);
            let lines = change_set_message(&changes);
            if !lines.is_empty() {
                events.push((false, reasons::PROGRESSING.into(), lines, Some(rev.clone())));
            }
            let was = conditions::get(&old.conditions, types::READY).map(|c| c.reason.as_str());
            match &gate {
                Gate::Failed { message } => {
                    status.rejected_revision = Some(rev.clone());
                    record_history(
                        &mut status.history,
                        &digest,
                        &rev,
                        gate::CANARY_FAILED,
                        started.elapsed(),
                        &now,
                    );
                    events.push((true, gate::CANARY_FAILED.into(), message.clone(), Some(rev)));
                }
                Gate::Progressing { message } => {
                    if !changes.is_empty() {
                        record_history(
                            &mut status.history,
                            &digest,
                            &rev,
                            gate::CANARY_PROGRESSING,
                            started.elapsed(),
                            &now,
                        );
                    }
                    if was != Some(gate::CANARY_PROGRESSING) {
                        events.push((
                            false,
                            gate::CANARY_PROGRESSING.into(),
                            message.clone(),
                            Some(rev),
                        ));
                    }
                }
                Gate::NoCanary | Gate::Promoted { .. } => {}
            }
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            // the Canary's status changes wake it; the interval bounds a missed event
            ks.interval()
                .map_or(Requeue::await_change(), Requeue::requeue)
        }
        Ok((changes, digest, Outcome::Waiting { message, after, .. })) => {
            // the health wait goes on: the status says so, nothing is held
            mark_progressing(&mut status.conditions, &message, generation, &now);
            conditions::set_condition(
                &mut status.conditions,
                types::HEALTHY,
                conditions::UNKNOWN,
                reasons::PROGRESSING,
                &message,
                generation,
                &now,
            );
            let _ = digest;
            let lines = change_set_message(&changes);
            if !lines.is_empty() {
                events.push((false, reasons::PROGRESSING.into(), lines, revision.clone()));
            }
            Requeue::requeue(after)
        }
        Ok((changes, digest, health)) => {
            let rev = revision.clone().unwrap_or_default();
            let message = format!("Applied revision: {rev}");
            let mut passed = None;
            match health {
                Outcome::Passed { message, announce } => {
                    conditions::mark_true(
                        &mut status.conditions,
                        types::HEALTHY,
                        reasons::SUCCEEDED,
                        &message,
                        generation,
                        &now,
                    );
                    passed = announce.then_some(message);
                }
                _ => conditions::remove_condition(&mut status.conditions, types::HEALTHY),
            }
            mark_succeeded(&mut status.conditions, &message, generation, &now);
            status.last_applied_revision = Some(rev.clone());
            if let Gate::Promoted { canaries } = &gate
                && old.last_promoted_revision.as_deref() != Some(rev.as_str())
            {
                status.last_promoted_revision = Some(rev.clone());
                events.push((
                    false,
                    CANARY_PROMOTED.into(),
                    format!("revision {rev} promoted by Canary {}", canaries.join(", ")),
                    Some(rev.clone()),
                ));
            }
            status.observed_generation = Some(generation);
            record_history(
                &mut status.history,
                &digest,
                &rev,
                reasons::RECONCILIATION_SUCCEEDED,
                started.elapsed(),
                &now,
            );
            let lines = change_set_message(&changes);
            let new_revision = old.last_applied_revision.as_deref() != Some(rev.as_str());
            if !lines.is_empty() {
                events.push((
                    false,
                    reasons::PROGRESSING.into(),
                    lines.clone(),
                    Some(rev.clone()),
                ));
            }
            if let Some(m) = passed {
                // Flux emits it while Ready is still Progressing
                events.push((false, reasons::PROGRESSING.into(), m, Some(rev.clone())));
            }
            // Flux's closing Event, here only when something changed (a steady state is quiet)
            if !lines.is_empty()
                || new_revision
                || !conditions::is_true(&old.conditions, types::READY)
            {
                let next = ks.interval().map_or("never".to_string(), |i| {
                    crate::util::go_duration(i.as_millis() as f64)
                });
                let took = crate::util::go_duration(started.elapsed().as_millis() as f64);
                events.push((
                    false,
                    reasons::RECONCILIATION_SUCCEEDED.into(),
                    format!("Reconciliation finished in {took}, next run in {next}"),
                    Some(rev.clone()),
                ));
            }
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            ks.interval()
                .map_or(Requeue::await_change(), Requeue::requeue)
        }
        Err(f) => {
            if f.health.is_some() {
                // Flux leaves the health step's Reconciling, as ProgressingWithRetry
                let timeout = ks.timeout().unwrap_or(Duration::from_secs(300));
                let running = health_wait::running_message(
                    revision.as_deref().unwrap_or_default(),
                    k8s_openapi::jiff::SignedDuration::try_from(timeout).unwrap_or_default(),
                );
                conditions::mark_true(
                    &mut status.conditions,
                    types::RECONCILING,
                    reasons::PROGRESSING,
                    &running,
                    generation,
                    &now,
                );
            }
            mark_failed(
                &mut status.conditions,
                f.reason,
                &f.message,
                f.terminal,
                generation,
                &now,
            );
            match &f.health {
                Some((healthy, digest)) => {
                    conditions::mark_false(
                        &mut status.conditions,
                        types::HEALTHY,
                        reasons::HEALTH_CHECK_FAILED,
                        healthy,
                        generation,
                        &now,
                    );
                    record_history(
                        &mut status.history,
                        digest,
                        revision.as_deref().unwrap_or_default(),
                        reasons::HEALTH_CHECK_FAILED,
                        started.elapsed(),
                        &now,
                    );
                }
                None => status.observed_generation = Some(generation),
            }
            if f.waiting.is_none() {
                events.push((true, f.reason.into(), f.message.clone(), revision.clone()));
            } else if f.reason == reasons::DEPENDENCY_NOT_READY
                && conditions::get(&old.conditions, types::READY)
                    .is_none_or(|c| c.message != f.message)
            {
                // Flux's Info event, here once per new reason rather than every retry
                let after =
                    crate::util::go_duration(f.waiting.unwrap_or_default().as_millis() as f64);
                events.push((
                    false,
                    f.reason.into(),
                    format!("Dependencies do not meet ready condition, retrying in {after}"),
                    revision.clone(),
                ));
            }
            if f.terminal {
                // Flux's terminal error: no retry until the spec changes
                Requeue::await_change()
            } else if let Some(after) = f.waiting {
                Requeue::requeue(after)
            } else {
                ks.retry_interval()
                    .map_or(Requeue::await_change(), Requeue::requeue)
            }
        }
    };
    if let Err(e) = write_status(&api, &ks, &written, &status).await {
        ctx.waits.unsettle(&key);
        return Err(e);
    }
    if !events.is_empty() {
        // recorded after the status they explain, in order, without holding the worker: one
        // POST each, ~0.25 s apiece on a loaded API server (bench ks x100: 3 per reconcile)
        let turn = ctx.event_turn(&(ns, name)).lock_owned().await;
        let (ctx, ks) = (ctx.clone(), ks.clone());
        tokio::spawn(async move {
            let _turn = turn;
            for (warning, reason, message, rev) in events {
                emit_event(&ctx, &ks, warning, &reason, &message, rev.as_deref()).await;
            }
        });
    }
    Ok(requeue)
}

/// Fetch, build, substitute, apply, prune: the change set and the manifests' digest, with
/// `status` updated along the way (`lastAttemptedRevision`, `inventory`). On a new revision or
/// generation the in-progress conditions ([`mark_progressing`]) are written before the fetch
/// and before the build (`written` is then what the API server holds). [`Attempted::Settled`]
/// when the last wait of this very apply has passed and nothing changed since.
async fn attempt(
    ks: &Kustomization,
    ctx: &Ctx,
    api: &Api<Kustomization>,
    status: &mut KustomizationStatus,
    written: &mut KustomizationStatus,
    now: &Time,
) -> Result<Attempted, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    let generation = ks.metadata.generation.unwrap_or_default();
    let wait = ctx.settings.requeue_dependency;
    let artifact = source_artifact(ks, &ctx.client, wait).await?;
    let key = (ns.clone(), name.clone());
    let resumes = |w: &WaitState| {
        let token = requested_at(ks.metadata.annotations.as_ref());
        health_wait::resumes(
            Some(w),
            &artifact.revision,
            generation,
            token,
            ks.interval(),
            now.0,
        )
    };
    // a running health wait of this very apply is re-evaluated, nothing re-applied
    if let Some(w) = ctx.waits.get(&key).filter(resumes) {
        status.last_attempted_revision = Some(artifact.revision.clone());
        let client = match local_target(ks, &ctx.settings) {
            true => None,
            false => Some(ctx.targets.target(ks).await?.client),
        };
        return Ok(Attempted::Resumed(w, client));
    }
    // its wait has passed and nothing changed since (a wake queued while it ran): as is
    if let Some(settled) = ctx.waits.settled(&key).filter(|s| resumes(&s.wait)) {
        status.last_attempted_revision = Some(artifact.revision.clone());
        return Ok(Attempted::Settled(settled));
    }
    // Flux's order: the source's artifact, then the dependencies, then the fetch
    let deps = dependencies(ks, &ctx.client, &artifact.revision, wait).await;
    super::wake::track_helm_dependencies(&ctx.helm_dependents, &ctx.watches, ks, deps.is_err())
        .await;
    deps?;
    status.last_attempted_revision = Some(artifact.revision.clone());
    let progressing = status.last_applied_revision.as_deref() != Some(artifact.revision.as_str())
        || status.observed_generation != Some(generation);
    let timeout = ks.timeout().unwrap_or(Duration::from_secs(300));
    let mut report = async |step: Step, status: &mut KustomizationStatus| {
        if !progressing {
            return;
        }
        let message = progressing_message(step, &artifact.revision, timeout);
        mark_progressing(&mut status.conditions, &message, generation, now);
        match write_status(api, ks, written, status).await {
            Ok(()) => *written = status.clone(),
            Err(e) => warn!(kustomization = %name, "in-progress status: {e}"),
        }
    };
    report(Step::Fetching, status).await;
    let work = tempfile::Builder::new()
        .prefix("pennant-ks-")
        .tempdir()
        .map_err(|e| {
            failure(
                reasons::ARTIFACT_FAILED,
                format!("failed to create tmp dir: {e}"),
            )
        })?;
    let root = fetch_artifact(&artifact, work.path()).await?;
    report(Step::Building, status).await;
    // Flux's order: the client (remote, impersonating) after the progress report, before the
    // build; sources, Secrets and status stay on the local cluster
    let target = ctx.targets.target(ks).await?;
    let objects = render(ks, &ctx.client, root, &ctx.settings.build).await?;
    let digest = manifests_digest(&objects);
    let built = objects.len();
    let jobs_with_ttl = crate::health::assess::jobs_with_ttl(&objects);
    // one owner per field: what the Canary controller owns is applied as it set it
    let objects = match local_target(ks, &ctx.settings) {
        true => keep_canary_fields(ctx, &target.applier, objects).await,
        false => objects,
    };
    let opts = ApplyOptions {
        force: ks.spec.force == Some(true),
        owner: Some((name.clone(), ns.clone())),
        custom_stages: vec![],
        wait_timeout: timeout,
        concurrency: crate::apply::ssa::CONCURRENT_SSA,
    };
    let old_inventory = status.inventory.clone().unwrap_or_default();
    let entries = |changes: &[Change]| ResourceInventory {
        entries: changes
            .iter()
            .map(|c| crate::api::kustomization::ResourceRef {
                id: c.id.to_id(),
                v: c.version.clone(),
            })
            .collect(),
    };
    let mut changes = match target.applier.apply_all(objects, &opts).await {
        Ok(changes) => changes,
        Err(e) => {
            // the stages applied before the failure stay in the cluster: the inventory names
            // them too, so that a later prune or deletion finds them (Flux forgets them)
            if !e.applied.is_empty() {
                let mut inventory = old_inventory;
                merge_survivors(&mut inventory, &entries(&e.applied).entries);
                status.inventory = Some(inventory);
            }
            return Err(failure(reasons::RECONCILIATION_FAILED, e.message));
        }
    };
    let mut inventory = entries(&changes);
    debug_assert_eq!(inventory.entries.len(), built);
    if ks.spec.prune {
        let stale = stale(&old_inventory, &inventory)
            .map_err(|e| failure(reasons::PRUNE_FAILED, e.to_string()))?;
        let (deleted, failed) = target.applier.prune(&stale, (&name, &ns), None).await;
        changes.extend(deleted);
        if !failed.is_empty() {
            let survivors: Vec<_> = failed.iter().map(|(r, _)| r.clone()).collect();
            merge_survivors(&mut inventory, &survivors);
            status.inventory = Some(inventory);
            let message = failed
                .iter()
                .map(|(_, e)| e.message.clone())
                .collect::<Vec<_>>()
                .join("\n");
            return Err(failure(reasons::PRUNE_FAILED, message));
        }
    }
    status.inventory = Some(inventory);
    Ok(Attempted::Applied {
        changes,
        digest,
        jobs_with_ttl,
        client: (!local_target(ks, &ctx.settings)).then(|| target.client.clone()),
    })
}

/// What a reconcile does before reading the artifact when a Canary gates the Kustomization.
enum Pre {
    /// The source still serves the revision a Canary rolled back: nothing fetched or applied.
    Rejected(String),
    /// A Canary analyses the revision applied before: its gate is re-evaluated, nothing applied.
    Resume(String),
}

/// Reason of the Event when a revision's Canaries all promoted it.
pub const CANARY_PROMOTED: &str = "CanaryPromoted";

/// [`Pre`] of `ks` from its status before this reconcile (`None`: the usual run). Reads the
/// source only while the status shows a rejected revision or a running Canary.
async fn canary_pre_check(
    ks: &Kustomization,
    ctx: &Ctx,
    old: &KustomizationStatus,
    generation: i64,
) -> Option<Pre> {
    let rejected = gate::rejected_revision(
        old.rejected_revision.as_deref(),
        old.history.first().map(|h| {
            (
                h.last_reconciled_status.as_str(),
                h.metadata.get("revision").map(String::as_str),
            )
        }),
    );
    let gated = rejected.is_some()
        || conditions::get(&old.conditions, types::READY)
            .is_some_and(|c| c.reason == gate::CANARY_PROGRESSING);
    if !gated {
        return None;
    }
    let artifact = source_artifact(ks, &ctx.client, ctx.settings.requeue_dependency)
        .await
        .ok()?;
    let rev = artifact.revision;
    if gate::skips_rejected(&rev, rejected, generation, old.observed_generation) {
        return Some(Pre::Rejected(rev));
    }
    gate::resumes(
        &old.conditions,
        &rev,
        old.last_attempted_revision.as_deref(),
        generation,
        requested_at(ks.metadata.annotations.as_ref()),
        old.last_handled_reconcile_at.as_deref(),
    )
    .then_some(Pre::Resume(rev))
}

/// The failure of a rejected revision still served by the source: `Ready=False`
/// `CanaryFailed` with the message of the run that failed, no Warning Event again, retried at
/// the interval (a new revision or spec wakes it at once).
fn rejected(ks: &Kustomization, old: &KustomizationStatus, rev: &str) -> Failure {
    let message = conditions::get(&old.conditions, types::READY)
        .filter(|c| c.reason == gate::CANARY_FAILED)
        .map(|c| c.message.clone())
        .unwrap_or_else(|| {
            format!("revision {rev} was rolled back by its canary; not applied again until a new revision")
        });
    waiting(
        gate::CANARY_FAILED,
        message,
        ks.interval().unwrap_or(Duration::from_secs(600)),
    )
}

/// The gate of `revision` ([`gate::decide`]): the Canaries (from the watch) targeting a
/// Deployment or DaemonSet of `inventory`, and the live pod templates ([`gate::observe`]).
async fn observe_gate(
    ctx: &Ctx,
    key: (String, String),
    inventory: Option<&ResourceInventory>,
    revision: &str,
) -> Gate {
    let Some(inventory) = inventory else {
        return Gate::NoCanary;
    };
    ctx.gate_waiters.register(key, inventory);
    let canaries = ctx.canaries.state();
    let refs: Vec<&Canary> = canaries.iter().map(|c| &**c).collect();
    let applied = gate::observe(&ctx.client, &refs, inventory).await;
    gate::decide(revision, &applied, &refs)
}

/// `objects` with the fields the Canary controller owns (the Canaries from the watch,
/// [`crate::apply::ownership`]) carried over from the live objects, so that an apply never
/// reverts them (flagger#1121: the target parked at zero scaled up again; the apex Service
/// the Canary takes over is skipped already, its `kustomize.toolkit.fluxcd.io/reconcile:
/// disabled`). Reads only the objects with owned fields; one that cannot be read is applied
/// as built (and logged).
async fn keep_canary_fields(
    ctx: &Ctx,
    applier: &crate::apply::ssa::Applier,
    objects: Vec<Value>,
) -> Vec<Value> {
    use crate::apply::inventory::ObjectId;
    use crate::apply::ownership::{Ownership, keep_owned};
    let canaries = ctx.canaries.state();
    if canaries.is_empty() {
        return objects;
    }
    let owned = Ownership::of_canaries(canaries.iter().map(|c| &**c), &ctx.settings.mesh_provider);
    let mut live = BTreeMap::new();
    for o in &objects {
        let id = ObjectId::of(o);
        if owned.paths(&id).is_empty() || owned.owns_whole(&id) {
            continue;
        }
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &id.kind);
        let got = match applier.resolve(&gvk).await {
            Ok((ar, _)) => Api::<kube::api::DynamicObject>::namespaced_with(
                ctx.client.clone(),
                &id.namespace,
                &ar,
            )
            .get_opt(&id.name)
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(Some(l)) => {
                live.insert(id, serde_json::to_value(l).unwrap_or_default());
            }
            Ok(None) => {}
            Err(e) => warn!(object = %id.name, "reading a Canary-owned object: {e}"),
        }
    }
    keep_owned(objects, &owned, &live)
}

/// Whether `ks` applies with the controller's own client (no `kubeConfig`, no impersonated
/// account). PURE.
fn local_target(ks: &Kustomization, settings: &Settings) -> bool {
    ks.spec.kube_config.is_none()
        && super::target::impersonated_user(ks, settings.target.default_service_account.as_deref())
            .is_none()
}

/// The source's artifact, or `ArtifactFailed` with Flux's message.
async fn source_artifact(
    ks: &Kustomization,
    client: &Client,
    wait: Duration,
) -> Result<Artifact, Failure> {
    let (kind, ns, name) = source_key(ks);
    let missing = || {
        failure(
            reasons::ARTIFACT_FAILED,
            format!("Source '{kind}/{ns}/{name}' not found"),
        )
    };
    let not_ready = || {
        waiting(
            reasons::ARTIFACT_FAILED,
            format!(
                "Source artifact not found, retrying in {}",
                crate::util::go_duration(wait.as_millis() as f64)
            ),
            wait,
        )
    };
    let get_err = |e: kube::Error| {
        failure(
            reasons::ARTIFACT_FAILED,
            format!("unable to get source '{kind}/{ns}/{name}': {}", cause_of(e)),
        )
    };
    match source_state(ks, client).await.map_err(get_err)? {
        SourceState::Ready(a) => Ok(a),
        SourceState::NoArtifact => Err(not_ready()),
        SourceState::Missing => Err(missing()),
        SourceState::UnsupportedKind(other) => Err(terminal(
            reasons::ARTIFACT_FAILED,
            format!("source `{other}` kind is not supported"),
        )),
    }
}

/// `spec.dependsOn`, as Flux's `checkDependencies` ([`check_dependencies`]): the
/// Kustomizations depended on (and theirs, for [`find_cycle`], at most 64 read) are read from
/// the API server. Not ready: `DependencyNotReady` with Flux's message, retried after `wait`;
/// a cycle: `Stalled` with [`DEPENDENCY_CYCLE`] naming it. `revision` is the artifact about
/// to be applied (a dependency on the same source must have applied it).
async fn dependencies(
    ks: &Kustomization,
    client: &Client,
    revision: &str,
    wait: Duration,
) -> Result<(), Failure> {
    use crate::gitops::depends_on::{Dependency, DependencyId, DependencyKind};
    if ks.spec.depends_on.is_empty() {
        return Ok(());
    }
    // `dependsOn` of a Kustomization or a HelmRelease, as JSON: pennant's `kind` names the other
    // kind, its absence the dependent's own (`DependencyReference::kind_or`)
    let refs = |owner: &DependencyId, k: &Value| -> Vec<DependencyId> {
        k["spec"]["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let kind = match d["kind"].as_str().filter(|k| !k.is_empty()) {
                    Some("HelmRelease") => DependencyKind::HelmRelease,
                    Some("Kustomization") => DependencyKind::Kustomization,
                    _ => owner.kind,
                };
                let name = d["name"].as_str().unwrap_or_default();
                DependencyId::of_reference(owner, kind, d["namespace"].as_str(), name)
            })
            .collect()
    };
    let me = DependencyId::new(
        DependencyKind::Kustomization,
        &ks.namespace().unwrap_or_default(),
        &ks.name_any(),
    );
    let dependent = serde_json::to_value(ks).unwrap_or_default();
    let mine = refs(&me, &dependent);
    let mut graph = BTreeMap::from([(me.clone(), mine.clone())]);
    let mut objects: BTreeMap<DependencyId, Option<Value>> = BTreeMap::new();
    let mut queue: std::collections::VecDeque<DependencyId> = mine.clone().into();
    while let Some(id) = queue.pop_front() {
        if id == me || objects.contains_key(&id) || objects.len() >= 64 {
            continue;
        }
        let got = match id.kind {
            DependencyKind::Kustomization => {
                Api::<Kustomization>::namespaced(client.clone(), &id.namespace)
                    .get_opt(&id.name)
                    .await
                    .map(|k| k.map(|k| serde_json::to_value(k).unwrap_or_default()))
            }
            DependencyKind::HelmRelease => helm_release(client, &id, wait).await?,
        }
        .map_err(|e| {
            let cause = cause_of(e);
            waiting(
                reasons::DEPENDENCY_NOT_READY,
                format!("unable to get dependency '{id}': {cause}"),
                wait,
            )
        })?;
        if let Some(k) = &got {
            let next = refs(&id, k);
            queue.extend(next.iter().cloned());
            graph.insert(id.clone(), next);
        }
        objects.insert(id, got);
    }
    if let Some(cycle) = find_cycle(&graph, &me) {
        return Err(terminal(DEPENDENCY_CYCLE, cycle.to_string()));
    }
    let deps: Vec<Dependency<'_>> = ks
        .spec
        .depends_on
        .iter()
        .zip(mine)
        .map(|(d, id)| Dependency {
            object: objects.get(&id).and_then(Option::as_ref),
            id,
            ready_expr: d.ready_expr.as_deref().filter(|e| !e.is_empty()),
        })
        .collect();
    check_dependencies(&dependent, Some(revision), &deps, &eval_ready_expr, false)
        .map_err(|m| waiting(reasons::DEPENDENCY_NOT_READY, m, wait))
}

/// A HelmRelease depended on (pennant's `dependsOn[].kind: HelmRelease`, flux2#3364), read as
/// `helm.toolkit.fluxcd.io/v2` through the dynamic API. When the cluster does not serve that
/// kind at all the dependency is not ready with a message that says so (instead of a plain
/// "not found").
async fn helm_release(
    client: &Client,
    id: &crate::gitops::depends_on::DependencyId,
    wait: Duration,
) -> Result<Result<Option<Value>, kube::Error>, Failure> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "helmreleases");
    let got = Api::<DynamicObject>::namespaced_with(client.clone(), &id.namespace, &ar)
        .get_opt(&id.name)
        .await;
    // an unserved kind is a 404 without a Status body ("404 page not found")
    let maybe_unserved = match &got {
        Ok(None) => true,
        Err(e) => e.to_string().contains("404"),
        Ok(Some(_)) => false,
    };
    if maybe_unserved && kube::discovery::pinned_kind(client, &gvk).await.is_err() {
        return Err(waiting(
            reasons::DEPENDENCY_NOT_READY,
            format!(
                "dependency '{id}' is a HelmRelease, but the cluster does not serve \
                 helmreleases.helm.toolkit.fluxcd.io/v2 (is the HelmRelease CRD installed?)"
            ),
            wait,
        ));
    }
    Ok(got.map(|o| o.map(|o| serde_json::to_value(o).unwrap_or_default())))
}

/// Deletion: prune per `spec.deletionPolicy` (`MirrorPrune`: when `spec.prune`; `Delete`;
/// `WaitForTermination`: delete and wait; `Orphan`: keep), skipped while suspended, then
/// release the finalizer.
async fn finalize(
    ks: &Kustomization,
    api: &Api<Kustomization>,
    ctx: &Ctx,
) -> Result<Requeue, Error> {
    let policy = ks
        .spec
        .deletion_policy
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("MirrorPrune");
    let delete = match policy {
        "Delete" | "WaitForTermination" => true,
        "Orphan" => false,
        _ => ks.spec.prune,
    };
    let inv = ks
        .status
        .as_ref()
        .and_then(|s| s.inventory.clone())
        .unwrap_or_default();
    // nothing applied: no target needed (a broken kubeConfig never blocks the deletion)
    if delete && ks.spec.suspend != Some(true) && !inv.entries.is_empty() {
        let stale =
            stale(&inv, &ResourceInventory::default()).map_err(|e| Error::Kube(e.to_string()))?;
        let wait = (policy == "WaitForTermination")
            .then(|| ks.timeout().unwrap_or(Duration::from_secs(300)));
        let (name, ns) = (ks.name_any(), ks.namespace().unwrap_or_default());
        // Flux: the account or the kubeconfig gone, the objects are left and named
        let target = match ctx.targets.target(ks).await {
            Ok(t) if ctx.targets.can_impersonate(ks).await => Some(t),
            Err(e) if !e.gone => {
                emit_event(ctx, ks, true, reasons::PRUNE_FAILED, &e.message, None).await;
                return Err(Error::Kube(e.message));
            }
            _ => None,
        };
        let Some(target) = target else {
            let objects: Vec<String> = inv.entries.iter().map(|e| e.id.clone()).collect();
            let message = format!("unable to prune objects: \n{}", objects.join("\n"));
            emit_event(ctx, ks, true, reasons::PRUNE_FAILED, &message, None).await;
            return release(ks, api).await;
        };
        let (deleted, failed) = target.applier.prune(&stale, (&name, &ns), wait).await;
        if !failed.is_empty() {
            let message = failed
                .iter()
                .map(|(_, e)| e.message.clone())
                .collect::<Vec<_>>()
                .join("\n");
            emit_event(ctx, ks, true, reasons::PRUNE_FAILED, &message, None).await;
            return Err(Error::Kube(message));
        }
        let lines = change_set_message(&deleted);
        if !lines.is_empty() {
            emit_event(ctx, ks, false, reasons::PROGRESSING, &lines, None).await;
        }
    }
    release(ks, api).await
}

/// Remove the finalizer (gone already is fine).
async fn release(ks: &Kustomization, api: &Api<Kustomization>) -> Result<Requeue, Error> {
    crate::gitops::object::remove_finalizer(api, ks, FINALIZER, FIELD_MANAGER)
        .await
        .map_err(kube_err("remove the finalizer"))?;
    Ok(Requeue::await_change())
}

/// A JSON patch guarded by a `test` of the resourceVersion.
async fn patch_json(
    api: &Api<Kustomization>,
    ks: &Kustomization,
    op: Value,
) -> Result<Kustomization, Error> {
    crate::gitops::object::patch_json(api, ks, op, FIELD_MANAGER)
        .await
        .map_err(kube_err("patch finalizers"))
}

/// Merge-patch `/status` when it changed ([`crate::gitops::object::write_status`]).
async fn write_status(
    api: &Api<Kustomization>,
    ks: &Kustomization,
    old: &KustomizationStatus,
    status: &KustomizationStatus,
) -> Result<(), Error> {
    crate::gitops::object::write_status(api, &ks.name_any(), old, status, FIELD_MANAGER)
        .await
        .map_err(kube_err("patch status"))
}

/// A core/v1 Event on the Kustomization as Flux's recorder writes it
/// ([`crate::gitops::events`]: `source.component: kustomize-controller`, annotation
/// `kustomize.toolkit.fluxcd.io/revision`), also logged.
async fn emit_event(
    ctx: &Ctx,
    ks: &Kustomization,
    warning: bool,
    reason: &str,
    message: &str,
    revision: Option<&str>,
) {
    let mut annotations: BTreeMap<String, String> = revision
        .map(|r| ("revision".to_string(), r.to_string()))
        .into_iter()
        .collect();
    if reason == reasons::RECONCILIATION_SUCCEEDED {
        // Flux's closing event marks a commit status update (commit-status Providers)
        annotations.insert("commit_status".into(), "update".into());
    }
    let note = crate::gitops::events::Note {
        warning,
        reason,
        message,
        annotations: &annotations,
    };
    let reporter = crate::gitops::events::Reporter {
        component: EVENT_SOURCE,
        reporting_component: "pennant.dev/kustomize",
        instance: &ctx.instance,
        group: GROUP,
        field_manager: FIELD_MANAGER,
    };
    crate::gitops::events::emit(&ctx.client, ks, &note, &reporter).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kustomization::KustomizationSpec;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn history_upserts_by_digest_newest_first_and_is_bounded() {
        let mut h = vec![];
        record_history(
            &mut h,
            "sha256:a",
            "main@sha1:1",
            "ReconciliationSucceeded",
            Duration::from_millis(1500),
            &t(10),
        );
        record_history(
            &mut h,
            "sha256:b",
            "main@sha1:2",
            "BuildFailed",
            Duration::from_secs(1),
            &t(20),
        );
        record_history(
            &mut h,
            "sha256:a",
            "main@sha1:3",
            "ReconciliationSucceeded",
            Duration::from_secs(2),
            &t(30),
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].digest, "sha256:a");
        assert_eq!(h[0].total_reconciliations, 2);
        assert_eq!(h[0].first_reconciled, t(10));
        assert_eq!(h[0].last_reconciled, t(30));
        assert_eq!(h[0].last_reconciled_duration, "2s");
        assert_eq!(h[0].metadata["revision"], "main@sha1:3");
        for i in 0..10 {
            record_history(
                &mut h,
                &format!("sha256:{i}"),
                "r",
                "ReconciliationSucceeded",
                Duration::ZERO,
                &t(40 + i),
            );
        }
        assert_eq!(h.len(), HISTORY_MAX_SIZE);
        assert_eq!(h[0].digest, "sha256:9");
    }

    #[test]
    fn unimplemented_fields_are_named() {
        let mut ks = Kustomization::new("app", KustomizationSpec::default());
        assert!(unsupported_fields(&ks).is_empty());
        ks.spec.wait = Some(true);
        ks.spec.service_account_name = Some("deployer".into());
        ks.spec.decryption = Some(serde_json::from_value(json!({"provider": "sops"})).unwrap());
        assert!(
            unsupported_fields(&ks).is_empty(),
            "health checks, decryption and serviceAccountName are implemented"
        );
        ks.spec.decryption = Some(
            serde_json::from_value(json!({"provider": "sops", "serviceAccountName": "kms"}))
                .unwrap(),
        );
        let u = unsupported_fields(&ks);
        assert_eq!(u.len(), 1);
        assert!(
            u[0].starts_with("spec.decryption.serviceAccountName"),
            "{u:?}"
        );
    }

    #[test]
    fn only_the_workload_identity_kube_config_is_refused() {
        let mut ks = Kustomization::new("app", KustomizationSpec::default());
        assert_eq!(refused(&ks), None);
        ks.spec.service_account_name = Some("deployer".into());
        assert_eq!(refused(&ks), None, "impersonation is implemented");
        ks.spec.kube_config =
            Some(serde_json::from_value(json!({"secretRef": {"name": "kc"}})).unwrap());
        assert_eq!(refused(&ks), None, "a kubeconfig Secret is implemented");
        ks.spec.kube_config =
            Some(serde_json::from_value(json!({"configMapRef": {"name": "cluster"}})).unwrap());
        let m = refused(&ks).expect("refused");
        assert!(
            m.starts_with("spec.kubeConfig.configMapRef is not supported yet: nothing is applied"),
            "{m}"
        );
        assert!(
            m.contains("will not apply to the local cluster instead"),
            "{m}"
        );
        // the decision is terminal: Stalled, Ready=False, no Reconciling
        let mut c = vec![];
        mark_failed(&mut c, UNSUPPORTED_FIELD, &m, true, 1, &t(0));
        assert_eq!(
            cond(&c, "Ready"),
            Some(("False", UNSUPPORTED_FIELD, m.as_str()))
        );
        assert_eq!(cond(&c, "Stalled").map(|x| x.0), Some("True"));
        assert!(cond(&c, "Reconciling").is_none());
    }

    fn cond<'a>(c: &'a [Condition], t: &str) -> Option<(&'a str, &'a str, &'a str)> {
        conditions::get(c, t).map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    }

    /// Flux's condition checker finds nothing wrong in the state a run ends with (never
    /// Reconciling and Stalled together, Ready=False while either is True). Mid-run Flux
    /// itself holds Ready=Unknown with Reconciling=True, which the checker does not judge.
    fn flux_valid(c: &[Condition]) {
        let bad = conditions::check(c, &[types::RECONCILING, types::STALLED], 3, 3);
        assert!(bad.is_empty(), "{bad:?} in {c:?}");
    }

    #[test]
    fn progress_messages_are_fluxs() {
        let rev = "main@sha1:abc";
        assert_eq!(
            progressing_message(Step::Fetching, rev, Duration::from_secs(570)),
            "Fetching manifests for revision main@sha1:abc with a timeout of 9m30s"
        );
        assert_eq!(
            progressing_message(Step::Building, rev, Duration::from_secs(30)),
            "Building manifests for revision main@sha1:abc with a timeout of 30s"
        );
    }

    #[test]
    fn status_transitions_of_a_run() {
        let mut c = vec![];
        // a new revision: in progress
        mark_progressing(&mut c, "Fetching manifests for revision r2", 3, &t(1));
        assert_eq!(
            cond(&c, types::READY),
            Some(("Unknown", "Progressing", "Reconciliation in progress"))
        );
        assert_eq!(
            cond(&c, types::RECONCILING),
            Some(("True", "Progressing", "Fetching manifests for revision r2"))
        );
        assert!(cond(&c, types::STALLED).is_none());
        // a retryable failure keeps Reconciling as ProgressingWithRetry
        mark_failed(&mut c, reasons::BUILD_FAILED, "boom", false, 3, &t(2));
        assert_eq!(
            cond(&c, types::READY),
            Some(("False", "BuildFailed", "boom"))
        );
        assert_eq!(
            cond(&c, types::RECONCILING).map(|c| c.1),
            Some(reasons::PROGRESSING_WITH_RETRY)
        );
        assert!(cond(&c, types::STALLED).is_none());
        flux_valid(&c);
        // a terminal one stalls and drops Reconciling
        mark_progressing(&mut c, "Building manifests for revision r2", 3, &t(3));
        mark_failed(&mut c, reasons::BUILD_FAILED, "bad spec", true, 3, &t(4));
        assert_eq!(
            cond(&c, types::STALLED),
            Some(("True", "BuildFailed", "bad spec"))
        );
        assert!(cond(&c, types::RECONCILING).is_none());
        assert_eq!(cond(&c, types::READY).map(|c| c.0), Some("False"));
        flux_valid(&c);
        // the next run clears Stalled while it is in progress, success clears both
        mark_progressing(&mut c, "Fetching manifests for revision r3", 3, &t(5));
        assert!(cond(&c, types::STALLED).is_none());
        assert_eq!(cond(&c, types::READY).map(|c| c.0), Some("Unknown"));
        mark_succeeded(&mut c, "Applied revision: r3", 3, &t(6));
        assert_eq!(
            cond(&c, types::READY),
            Some(("True", "ReconciliationSucceeded", "Applied revision: r3"))
        );
        assert!(cond(&c, types::RECONCILING).is_none() && cond(&c, types::STALLED).is_none());
        flux_valid(&c);
        // a failure of a steady run (no Reconciling) adds none
        mark_failed(&mut c, reasons::PRUNE_FAILED, "x", false, 3, &t(7));
        assert!(cond(&c, types::RECONCILING).is_none());
        flux_valid(&c);
    }

    #[test]
    fn the_digest_follows_the_manifests() {
        let a = [json!({"kind": "ConfigMap", "data": {"k": "1"}})];
        let b = [json!({"kind": "ConfigMap", "data": {"k": "2"}})];
        assert_eq!(manifests_digest(&a), manifests_digest(&a));
        assert_ne!(manifests_digest(&a), manifests_digest(&b));
        assert!(manifests_digest(&a).starts_with("sha256:"));
    }
}
