//! Wiring of the Canary controller: watches, mappers from related objects to Canaries, the
//! reconcile pipeline (observe → decide → build → execute → status) and the finalizer.
//!
//! A Canary is reconciled when it changes, when its target or primary workload (Deployment or
//! DaemonSet) changes, when its HorizontalPodAutoscaler (`autoscalerRef`) or the primary's
//! changes, when one of its Services or routing objects changes, or when a ConfigMap/Secret its
//! target's pods reference changes. Nothing is polled: time-gated steps come back through
//! `requeue_after`. Which Canaries a changed object concerns is looked up in the `index`, kept
//! up to date from the Canary and workload watches (no scan of every Canary per event).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DynamicObject, Patch, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::concurrency::{ConcurrencyLimit, Peer, PeerState, peer_state};
pub use super::context::{Context, Error, Settings};
use super::context::{ROUTE_KINDS, route_resource};
use super::index::{CanaryKey, ConfigKind, Index, WorkloadKind};
use super::machine::{self, Decision, Step};
use super::{build, execute, observe};
use crate::api::{Canary, CanaryStatus};
use crate::notify::{self, Severity};
use crate::router::Weights;
use crate::webhook::HookKind;

/// Finalizer added when `revertOnDeletion` is set (same name as Flagger's).
pub const FINALIZER: &str = "finalizer.flagger.app";

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Build the caches and run the Canary controller until shutdown.
///
/// Hosted by the process ([`crate::runtime::Process`]): its client, metrics, readiness (marked
/// synced once every cache has its initial list), scope (the label selector applies to the
/// Canary watch only) and shutdown.
pub async fn run(process: crate::runtime::Process, settings: Settings) -> anyhow::Result<()> {
    let crate::runtime::Process {
        client,
        metrics,
        scope,
        shutdown,
        ..
    } = process.clone();
    let wc = watcher::Config::default().any_semantic();
    // The objects pennant may take over from the user (the apex Service, routing objects): their
    // (re)list is a consistent read, not the apiserver's watch cache at any age, so a user's
    // edit made just before the process started is in the spec recorded for giving it back.
    // (A write built from a copy that is still behind fails its precondition: `execute::adopt`.)
    let wc_taken_over = watcher::Config::default();
    let ns = settings.namespace.clone();

    // The index of who refers to what (`index`), kept in step with the stores: each watch
    // event updates the store (reflector), then the index, then reaches the mappers.
    let index = Arc::new(RwLock::new(Index::default()));
    // Every cache keeps only what pennant reads (`slim`, `slim_deployment`): the field
    // managers' bookkeeping is most of each object, and a fleet of N Canaries caches about 2N
    // Deployments, 3N Services and 2N routing objects.
    let (deployments, writer) = reflector::store::<Deployment>();
    let deployment_events = {
        let index = index.clone();
        reflector::reflector(
            writer,
            watcher(api::<Deployment>(&client, &ns), wc.clone()).modify(slim_deployment),
        )
        .backoff(crate::runtime::watch_backoff())
        .inspect_ok(move |e| {
            index.write().expect("lock").workload_event(
                WorkloadKind::Deployment,
                e,
                |d: &Deployment| d.spec.as_ref()?.template.spec.as_ref(),
            )
        })
        .touched_objects()
    };
    // DaemonSets and HPAs: every one of the namespace(s) is cached (a Canary may name any), so
    // the bulky bookkeeping nobody reads is dropped before it reaches the store.
    let (daemon_sets, writer) = reflector::store::<DaemonSet>();
    let daemon_set_events = {
        let index = index.clone();
        reflector::reflector(
            writer,
            watcher(api::<DaemonSet>(&client, &ns), wc.clone()).modify(slim),
        )
        .backoff(crate::runtime::watch_backoff())
        .inspect_ok(move |e| {
            index.write().expect("lock").workload_event(
                WorkloadKind::DaemonSet,
                e,
                |d: &DaemonSet| d.spec.as_ref()?.template.spec.as_ref(),
            )
        })
        .touched_objects()
    };
    let (hpas, writer) = reflector::store::<HorizontalPodAutoscaler>();
    let hpa_events = reflector::reflector(
        writer,
        watcher(api::<HorizontalPodAutoscaler>(&client, &ns), wc.clone()).modify(slim),
    )
    .backoff(crate::runtime::watch_backoff())
    .touched_objects();
    let (services, writer) = reflector::store::<Service>();
    let service_events = reflector::reflector(
        writer,
        watcher(api::<Service>(&client, &ns), wc_taken_over.clone()).modify(drop_managed_fields),
    )
    .backoff(crate::runtime::watch_backoff())
    .touched_objects();
    let config_map_events = watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, &ns),
        wc.clone(),
    )
    .backoff(crate::runtime::watch_backoff())
    .touched_objects();
    let secret_events = watcher(api::<PartialObjectMeta<Secret>>(&client, &ns), wc.clone())
        .backoff(crate::runtime::watch_backoff())
        .touched_objects();

    // Routing objects: cached only when their CRD is installed.
    let mut routes = HashMap::new();
    let mut route_streams = vec![];
    for kind in ROUTE_KINDS.iter().copied() {
        let ar = route_resource(kind).expect("known kind");
        // Probed in the watched scope: a namespace-scoped install (a Role) may not list
        // cluster-wide.
        let a: Api<DynamicObject> = match &ns {
            Some(n) => Api::namespaced_with(client.clone(), n, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        if let Err(e) = a.list(&kube::api::ListParams::default().limit(1)).await {
            info!(%kind, "not watching: {e}");
            continue;
        }
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let s = reflector::reflector(
            writer,
            watcher(a, wc_taken_over.clone()).modify(drop_managed_fields),
        )
        .backoff(crate::runtime::watch_backoff())
        .touched_objects();
        routes.insert(kind.to_string(), store);
        route_streams.push((s, ar));
    }

    // Per-request timeouts (webhooks, notifiers) override this default (metric queries).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
    let (global, problems) = notify::GlobalNotifiers::from_settings(&settings.notify, &http);
    for p in problems {
        warn!("global notifier: {p}");
    }
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    // As `Controller::new` does (with its own backoff: the controller shares none),
    // with the index fed on the way.
    let (canaries, writer) = reflector::store::<Canary>();
    let canary_events = {
        let index = index.clone();
        reflector::reflector(
            writer,
            watcher(api::<Canary>(&client, &ns), scope.watcher_config()).modify(slim),
        )
        .backoff(crate::runtime::watch_backoff())
        .inspect_ok(move |e| index.write().expect("lock").canary_event(e))
        .applied_objects()
    };
    // every stream backs off on its own: none shared (`NoSharedBackoff`)
    let controller = Controller::for_stream(canary_events, canaries.clone())
        .trigger_backoff(crate::runtime::NoSharedBackoff)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrent));
    let ctx = Arc::new(Context {
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into()),
        client: client.clone(),
        settings,
        deployments: deployments.clone(),
        daemon_sets: daemon_sets.clone(),
        hpas,
        canaries: canaries.clone(),
        index: index.clone(),
        services,
        routes,
        http,
        global,
        metrics,
        written: Mutex::new(HashMap::new()),
        synced: synced_rx,
        slots: Mutex::new(HashMap::new()),
        wake,
    });

    // flagger_canary_total: counted from the cache at scrape time
    let known = canaries.clone();
    ctx.metrics
        .set_canary_source(move || known.state().iter().filter_map(|c| c.namespace()).collect());
    let lookup = |f: fn(&Index, &str, &str) -> Vec<CanaryKey>| {
        let index = index.clone();
        move |ns: Option<String>, name: String| -> Vec<ObjectRef<Canary>> {
            let Some(ns) = ns else { return vec![] };
            let keys = f(&index.read().expect("lock"), &ns, &name);
            keys.into_iter().map(canary_ref).collect()
        }
    };
    let for_deployment = lookup(|ix, ns, name| ix.for_object("Deployment", ns, name));
    let for_daemon_set = lookup(|ix, ns, name| ix.for_object("DaemonSet", ns, name));
    let for_hpa = lookup(|ix, ns, name| ix.for_object("HorizontalPodAutoscaler", ns, name));
    let for_config_map = lookup(|ix, ns, name| ix.for_config(ConfigKind::ConfigMap, ns, name));
    let for_secret = lookup(|ix, ns, name| ix.for_config(ConfigKind::Secret, ns, name));
    let mut controller = controller
        .watches_stream(deployment_events, move |d: Deployment| {
            for_deployment(d.namespace(), d.name_any())
        })
        .watches_stream(daemon_set_events, move |d: DaemonSet| {
            for_daemon_set(d.namespace(), d.name_any())
        })
        .watches_stream(hpa_events, move |h: HorizontalPodAutoscaler| {
            for_hpa(h.namespace(), h.name_any())
        })
        .owns_stream(service_events)
        .watches_stream(config_map_events, move |m| {
            for_config_map(m.namespace(), m.name_any())
        })
        .watches_stream(secret_events, move |m| {
            for_secret(m.namespace(), m.name_any())
        })
        .reconcile_on(crate::runtime::received(woken));
    for (s, ar) in route_streams {
        let index = index.clone();
        let kind = ar.kind.clone();
        controller = controller.watches_stream_with(
            s,
            move |o: DynamicObject| canaries_for_route(&index, &kind, &o),
            ar,
        );
    }
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.wait_until_ready().await;
            let _ = synced_tx.send(true);
            process.synced();
            info!("caches synced");
        });
    }
    controller
        .graceful_shutdown_on(shutdown.signalled())
        .run(timed_reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                // a Service owned by a Canary of another shard (or one just relabelled away):
                // not this shard's to reconcile
                Err(kube::runtime::controller::Error::ObjectNotFound(o)) => {
                    tracing::debug!("not in this shard's cache: {o}")
                }
                Err(e) => warn!("reconcile: {e}"),
                Ok(_) => {}
            }
        })
        .await;
    Ok(())
}

/// The reference of an indexed Canary, for a reconcile request.
fn canary_ref(k: CanaryKey) -> ObjectRef<Canary> {
    ObjectRef::new(&k.name).within(&k.namespace)
}

/// Drop what pennant never reads from a cached object: `managedFields` and `kubectl apply`'s
/// copy of the last applied object.
fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A cached Deployment: [`slim`], keeping pennant's ownership of `spec.replicas`
/// (`workload::slim_managed_fields`, for `workload::owns_replicas`).
fn slim_deployment(d: &mut Deployment) {
    super::workload::slim_managed_fields(&mut d.metadata, execute::FIELD_MANAGER);
}

/// A cached Service or routing object: without `managedFields` (its annotations stay: a
/// canary Ingress is cloned from the user's with them; a release reads the object fresh).
fn drop_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Canaries a routing object belongs to: its owner, the Canary whose `ingressRef` names this
/// Ingress (the user's Ingress the canary Ingress is cloned from), and the Canary whose apex it
/// is named after (a pre-existing route pennant takes over).
fn canaries_for_route(
    index: &RwLock<Index>,
    kind: &str,
    o: &DynamicObject,
) -> Vec<ObjectRef<Canary>> {
    let Some(ns) = o.namespace() else {
        return vec![];
    };
    let owners: Vec<String> = o.owner_references().iter().map(|r| r.uid.clone()).collect();
    let keys = index
        .read()
        .expect("lock")
        .for_route(kind, &ns, &o.name_any(), &owners);
    keys.into_iter().map(canary_ref).collect()
}

fn error_policy(canary: Arc<Canary>, err: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(canary = %canary.name_any(), "reconcile failed: {err}");
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: err.label().into(),
        })
        .inc();
    ctx.metrics.reconcile_error("canary", err.label());
    requeue_after_error(err)
}

/// When a failed reconcile runs again by itself (a watch event on the Canary or its target
/// runs it anyway).
fn requeue_after_error(err: &Error) -> Requeue {
    match err {
        // Writing the same object again would be refused again: wait for a change of the
        // Canary or its target (the watches), looking again now and then in case the cause
        // was elsewhere (an admission policy, RBAC, a CRD installed later).
        Error::Rejected(_) => Requeue::requeue(REJECTED_RECHECK),
        // The same Canary and target would fail the same way: only a change helps.
        Error::Invalid(_) => Requeue::await_change(),
        _ => Requeue::requeue(Duration::from_secs(5)),
    }
}

/// How long a Canary whose write was rejected waits when nothing changes.
const REJECTED_RECHECK: Duration = Duration::from_secs(300);

/// [`Error::Rejected`] from `res`: the Canary becomes `Stalled` (reason `Rejected`) with the
/// server's message and gets a Warning event (once per message); the error is passed on, so
/// [`error_policy`] waits for a change instead of retrying every 5 s. The status written is the
/// one read (the decision's actions did not all happen), plus the condition.
async fn stall_on_rejection(
    canary: &Canary,
    res: Result<(), Error>,
    api: &Api<Canary>,
    ctx: &Context,
) -> Result<(), Error> {
    let Err(Error::Rejected(message)) = &res else {
        return res;
    };
    use crate::api::condition::{has_message, set_condition, types};
    let mut status = canary.status.clone().unwrap_or_default();
    let known = crate::api::find_condition(&status.conditions, types::STALLED)
        .is_some_and(|c| has_message(c, message));
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    set_condition(
        &mut status.conditions,
        types::STALLED,
        "True",
        "Rejected",
        message,
        &now,
    );
    if let Err(e) = write_status(canary, &status, api, ctx).await {
        warn!(canary = %canary.name_any(), "status: {e}");
    }
    // Stalled, it holds no slot (`concurrency::peer_state`): the waiting Canaries may start.
    {
        let mut slots = ctx.slots.lock().expect("lock");
        record_state(
            canary,
            peer_state(canary.spec.suspend, Some(&status)),
            &mut slots,
            ctx,
        );
    }
    if !known {
        emit_event(canary, Severity::Warn, message, ctx).await;
    }
    res
}

/// [`reconcile`], timed into `pennant_reconcile_duration_seconds{result}`.
async fn timed_reconcile(cached: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    use futures::FutureExt;
    let started = std::time::Instant::now();
    let name = cached.name_any();
    // A bug triggered by one Canary must not take the controller down for all the others.
    let res = match std::panic::AssertUnwindSafe(reconcile(cached, ctx.clone()))
        .catch_unwind()
        .await
    {
        Ok(res) => res,
        Err(_) => Err(Error::Panic(format!(
            "reconcile of {name} panicked (see the log)"
        ))),
    };
    let result = res.as_ref().map_or_else(Error::label, |_| "ok");
    tracing::debug!(canary = %name, result, ms = started.elapsed().as_millis() as u64, "reconciled");
    ctx.metrics.observe_reconcile(result, started.elapsed());
    res
}

/// One reconcile of one Canary.
async fn reconcile(cached: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // kube's Store::wait_until_ready wakes a single waiter; concurrent reconciles wait here.
    let _ = ctx.synced.clone().wait_for(|ready| *ready).await;
    let started = std::time::Instant::now();
    let oref = ObjectRef::from_obj(&*cached);
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &ns);

    // Read fresh only when our own last write has not reached the cache yet.
    let stale = {
        let w = ctx.written.lock().expect("lock");
        w.get(&oref)
            .is_some_and(|rv| cached.resource_version().as_ref() != Some(rv))
    };
    let canary = if stale {
        match api
            .get_opt(&cached.name_any())
            .await
            .map_err(Error::kube("get", "Canary"))?
        {
            Some(c) => Arc::new(c),
            None => return Ok(Requeue::await_change()),
        }
    } else {
        cached
    };

    if canary.metadata.deletion_timestamp.is_some() {
        return finalize(&canary, &api, &ctx).await;
    }
    sync_finalizer(&canary, &api, &ctx).await?;

    let t = std::time::Instant::now();
    let mut obs = observe::observe(&canary, &ctx).await?;
    tracing::debug!(canary = %canary.name_any(), ms = t.elapsed().as_millis() as u64, "observed");
    let decision = loop {
        match decide_in_turn(&canary, &mut obs, &ctx) {
            Step::Done(d) => break d,
            Step::Need(p) => {
                let t = std::time::Instant::now();
                observe::probe(&canary, p, &mut obs, &ctx).await;
                tracing::debug!(canary = %canary.name_any(), probe = ?p, ms = t.elapsed().as_millis() as u64, "probed");
            }
        }
    };
    let mut decision = decision;
    if decision
        .actions
        .iter()
        .any(|a| matches!(a, machine::Action::EnsureRoutes(_)))
    {
        let provider =
            super::validate::provider(&canary.spec, &ctx.settings.default_provider).to_string();
        if let Some(old) = canary
            .status
            .as_ref()
            .and_then(|s| s.routing_provider.as_deref())
            .filter(|old| *old != provider)
        {
            info!(canary = %canary.name_any(), %old, new = %provider, "provider changed");
            let res = execute::retire_router(&canary, old, &ctx).await;
            stall_on_rejection(&canary, res, &api, &ctx).await?;
        }
        decision.status.routing_provider = Some(provider);
    }
    let desired = build::build(&canary, &decision, &obs, &ctx.settings)?;
    // Relabelled out of this shard (`--watch-label-selector`) while we observed: the watch
    // dropped it from the cache and the shard it joined resumes from status, so nothing of
    // this decision is applied (no step runs twice).
    if ctx.canaries.get(&oref).is_none() {
        info!(canary = %canary.name_any(), namespace = %ns, "left this shard: decision dropped");
        return Ok(Requeue::await_change());
    }
    let t = std::time::Instant::now();
    let res = execute::execute(&canary, &decision, &desired, &obs, &ctx).await;
    stall_on_rejection(&canary, res, &api, &ctx).await?;
    tracing::debug!(canary = %canary.name_any(), ms = t.elapsed().as_millis() as u64, "executed");
    write_status(&canary, &decision.status, &api, &ctx).await?;
    if !decision.notices.is_empty() {
        let mut decided = (*canary).clone();
        decided.status = Some(decision.status.clone());
        for n in &decision.notices {
            emit_event(&decided, n.severity, &n.message, &ctx).await;
        }
    }
    if !decision.notices.is_empty() {
        // Alerts and event webhooks retry for up to ~30 s: never hold the reconcile for them.
        let mut updated = (*canary).clone();
        updated.status = Some(decision.status.clone());
        tokio::spawn(send_notifications(
            updated,
            decision.notices.clone(),
            ctx.clone(),
        ));
    }

    let st = &decision.status;
    let w = machine::routes_for(st, canary.spec.analysis());
    ctx.metrics.observe_canary(
        &canary.spec.target_ref.name,
        &ns,
        st.phase,
        w.primary,
        w.canary,
    );
    ctx.metrics.observe_analysis(
        &canary,
        st,
        obs.observed.probes.metrics.as_deref(),
        started.elapsed(),
    );
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: "ok".into(),
        })
        .inc();
    Ok(match decision.requeue_after {
        Some(d) => Requeue::requeue(d),
        // the older Canary's claim can end (deleted, edited) without any event on this one
        None if obs.claim_conflict => Requeue::requeue(Duration::from_secs(30)),
        None => Requeue::await_change(),
    })
}

/// `decide` with the concurrency limits, under the lock of `ctx.slots`: the other Canaries'
/// states are read and this Canary's new one recorded in one step, so two Canaries never both
/// take the last slot. When this decision frees a slot, the waiting Canaries are woken.
fn decide_in_turn(canary: &Canary, obs: &mut observe::Observation, ctx: &Context) -> Step {
    let me = ObjectRef::from_obj(canary);
    let mut slots = ctx.slots.lock().expect("lock");
    let state_of = |c: &Canary| slot_state(&slots, c);
    // Read only with a limit: every other Canary of its scope counts.
    let peers = |same_ns: bool| -> Vec<Peer> {
        ctx.canaries
            .state()
            .iter()
            .filter(|c| ObjectRef::from_obj(&***c) != me)
            .filter(|c| !same_ns || c.namespace() == canary.namespace())
            .map(|c| Peer {
                id: format!("{}.{}", c.name_any(), c.namespace().unwrap_or_default()),
                state: state_of(c),
            })
            .collect()
    };
    let mut limits = vec![];
    if ctx.settings.max_concurrent_canaries > 0 {
        limits.push(ConcurrencyLimit {
            max: ctx.settings.max_concurrent_canaries,
            source: "--max-concurrent-canaries".into(),
            others: peers(false),
        });
    }
    if let Some(max) = obs.namespace_limit {
        limits.push(ConcurrencyLimit {
            max,
            source: format!(
                "namespace {} annotation {}",
                canary.namespace().unwrap_or_default(),
                super::concurrency::NAMESPACE_ANNOTATION
            ),
            others: peers(true),
        });
    }
    obs.observed.concurrency = limits;
    let step = machine::decide(canary, &obs.observed);
    if let Step::Done(d) = &step {
        let after = peer_state(canary.spec.suspend, Some(&d.status));
        record_state(canary, after, &mut slots, ctx);
    }
    step
}

/// `c`'s state for the concurrency limits: what this controller last decided for it (its
/// status may not have come back to the cache yet), else from its spec and status.
fn slot_state(slots: &HashMap<ObjectRef<Canary>, PeerState>, c: &Canary) -> PeerState {
    slots
        .get(&ObjectRef::from_obj(c))
        .cloned()
        .unwrap_or_else(|| peer_state(c.spec.suspend, c.status.as_ref()))
}

/// Record `canary`'s state for the concurrency limits in `slots` (held locked). When it leaves
/// `Running` — done, suspended, Stalled — the Canaries waiting for a slot are woken.
fn record_state(
    canary: &Canary,
    after: PeerState,
    slots: &mut HashMap<ObjectRef<Canary>, PeerState>,
    ctx: &Context,
) {
    let state_of = |c: &Canary| slot_state(slots, c);
    if state_of(canary) == PeerState::Running && after != PeerState::Running {
        for c in ctx.canaries.state().iter() {
            if matches!(state_of(c), PeerState::Queued(_)) {
                let _ = ctx.wake.send(ObjectRef::from_obj(&**c));
            }
        }
    }
    slots.insert(ObjectRef::from_obj(canary), after);
    if slots.len() > 2 * ctx.index.read().expect("lock").len() + 16 {
        slots.retain(|k, _| ctx.canaries.get(k).is_some());
    }
}

/// Patch the status subresource when it changed, guarded by the resourceVersion we decided on.
async fn write_status(
    canary: &Canary,
    status: &CanaryStatus,
    api: &Api<Canary>,
    ctx: &Context,
) -> Result<(), Error> {
    let old = canary.status.clone().unwrap_or_default();
    if *status == old {
        return Ok(());
    }
    let new_v = serde_json::to_value(status).map_err(Error::encode)?;
    let mut st = new_v.as_object().cloned().unwrap_or_default();
    // A merge patch only removes a field that is sent as null.
    if let Value::Object(old_v) = serde_json::to_value(&old).unwrap_or_default() {
        for k in old_v.keys() {
            st.entry(k.clone()).or_insert(Value::Null);
        }
    }
    let patch_with =
        |rv: Option<String>| json!({"metadata": {"resourceVersion": rv}, "status": st});
    ctx.metrics.writes.inc();
    let name = canary.name_any();
    let res = match api
        .patch_status(
            &name,
            &execute::patch_params(),
            &Patch::Merge(&patch_with(canary.resource_version())),
        )
        .await
    {
        Ok(res) => res,
        // The Canary changed under us. When only its metadata or spec moved (a label, a GitOps
        // apply, the finalizer) our decision still stands: its actions are already applied, so
        // record it; when the status itself moved, decide again from the fresh one.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let fresh = api.get(&name).await.map_err(Error::kube("get", "Canary"))?;
            if fresh.status.clone().unwrap_or_default() != old {
                return Err(Error::StatusConflict(format!(
                    "status of {name} changed concurrently; deciding again"
                )));
            }
            ctx.metrics.writes.inc();
            api.patch_status(
                &name,
                &execute::patch_params(),
                &Patch::Merge(&patch_with(fresh.resource_version())),
            )
            .await
            .map_err(Error::kube("patch status", "Canary"))?
        }
        Err(e) => return Err(Error::kube("patch status", "Canary")(e)),
    };
    if let Some(rv) = res.resource_version() {
        let mut written = ctx.written.lock().expect("lock");
        written.insert(ObjectRef::from_obj(canary), rv);
        // Forget deleted Canaries now and then, so the map stays the size of the cache.
        if written.len() > 2 * ctx.index.read().expect("lock").len() + 16 {
            written.retain(|k, _| ctx.canaries.get(k).is_some());
        }
    }
    Ok(())
}

/// `source.component` of pennant's Events: Flagger's, so `kubectl get events
/// --field-selector source=flagger`, event exporters and `kubectl describe` read them as they
/// read Flagger's (`reportingComponent` says `pennant.dev/canary`).
pub const EVENT_SOURCE: &str = "flagger";

/// The core/v1 Event for a notice, as client-go's recorder writes Flagger's: `source`,
/// `firstTimestamp`/`lastTimestamp` and `count` set, so `kubectl get events
/// --sort-by=.lastTimestamp` sorts it with every other controller's. (events.k8s.io/v1 refuses
/// those fields on create, and kube's `Recorder`, which writes that API and merges events of
/// equal reason into one series keeping the first message, leaves them empty.) The note is cut
/// to the API server's 1024 bytes on a character boundary.
fn event(
    canary: &Canary,
    severity: Severity,
    message: &str,
    instance: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
    let note =
        crate::api::condition::truncate_message(message, crate::api::condition::MESSAGE_MAX_BYTES);
    k8s_openapi::api::core::v1::Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{:x}", canary.name_any(), now.as_nanosecond())),
            namespace: canary.namespace(),
            ..Default::default()
        },
        involved_object: canary.object_ref(&()),
        type_: Some(
            if severity == Severity::Info {
                "Normal"
            } else {
                "Warning"
            }
            .into(),
        ),
        reason: Some("Synced".into()),
        message: Some(note.into_owned()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(EVENT_SOURCE.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".into()),
        reporting_component: Some("pennant.dev/canary".into()),
        reporting_instance: Some(instance.to_string()),
        ..Default::default()
    }
}

/// The Flux notification Event of a notice (PURE), published on the process's event bus
/// ([`crate::gitops::events::publish`]) for the `notification` controller's Alerts: reason
/// `Synced`, severity `info` for Info and `error` for Warn and Error (the Kubernetes Event's
/// Warning), `reportingController: flagger`, metadata `flagger.app/revision` (the status's
/// `lastAppliedSpec`) and `flagger.app/phase` when known. `canary` carries the status just
/// decided.
fn flux_event(
    canary: &Canary,
    severity: Severity,
    message: &str,
    instance: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> crate::api::notification::Event {
    use crate::api::notification as flux;
    let group = Canary::group(&());
    let status = canary.status.as_ref();
    let mut metadata = std::collections::BTreeMap::new();
    if let Some(spec) = status.and_then(|s| s.last_applied_spec.clone()) {
        metadata.insert(format!("{group}/{}", flux::META_REVISION), spec);
    }
    if let Some(phase) = status.and_then(|s| s.phase) {
        metadata.insert(format!("{group}/phase"), format!("{phase:?}"));
    }
    let mut involved = canary.object_ref(&());
    involved.field_path = None;
    flux::Event {
        involved_object: involved,
        severity: flux::Event::severity_of(severity != Severity::Info).into(),
        timestamp: flux::event_time(now),
        message: flux::truncate_event_message(message),
        reason: "Synced".into(),
        metadata,
        reporting_controller: EVENT_SOURCE.into(),
        reporting_instance: instance.to_string(),
    }
}

/// A Kubernetes Event on the Canary (reason `Synced`, as Flagger), also logged and published as
/// a Flux notification Event ([`flux_event`]). Notices are emitted on transitions only, so each
/// is its own Event (no series).
async fn emit_event(canary: &Canary, severity: Severity, message: &str, ctx: &Context) {
    match severity {
        Severity::Info => info!(canary = %canary.name_any(), "{message}"),
        _ => warn!(canary = %canary.name_any(), "{message}"),
    }
    let ns = canary.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now();
    crate::gitops::events::publish(flux_event(canary, severity, message, &ctx.instance, now));
    let ev = event(canary, severity, message, &ctx.instance, now);
    ctx.metrics.writes.inc();
    let pp = PostParams {
        field_manager: Some(execute::FIELD_MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&pp, &ev).await {
        warn!("event: {e}");
    }
}

/// Post the decision's notices: every notice to the Canary's `event` webhooks (else to the
/// global `-event-webhook`), and those carrying an alert to the AlertProviders of
/// `analysis.alerts` (else to the global Slack/Teams notifier). A delivery that fails is a
/// Warning Event naming the provider; it never affects the release.
async fn send_notifications(canary: Canary, notices: Vec<machine::Notice>, ctx: Arc<Context>) {
    let event_hooks: Vec<_> = canary
        .spec
        .analysis()
        .map(|a| a.webhooks_of(HookKind::Event.as_str()).cloned().collect())
        .unwrap_or_default();
    for n in &notices {
        let event_type = if n.severity == Severity::Info {
            "Normal"
        } else {
            "Warning"
        };
        if !event_hooks.is_empty() {
            let ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
            for hook in &event_hooks {
                let payload =
                    crate::webhook::Payload::event(&canary, hook, &n.message, event_type, ms);
                let retry = crate::webhook::RetryPolicy::default();
                if let Err(e) = crate::webhook::call(&ctx.http, hook, &payload, &retry).await {
                    warn!(canary = %canary.name_any(), hook = %hook.name, "event webhook: {e}");
                }
            }
        } else if let Some(hook) = ctx.global.event_webhook() {
            let alert = notify::Alert::new(&canary, n.severity, n.message.clone());
            if let Err(e) = hook.post(&alert).await {
                warn!(canary = %canary.name_any(), "event webhook: {e}");
            }
        }
        let Some(text) = notify::alert_text(&canary, n.alert.as_deref(), &n.message) else {
            continue;
        };
        let mut alert = notify::Alert::new(&canary, n.severity, text.clone());
        if notify::wants_metadata(&text) {
            alert = alert.with_metadata(&canary);
        }
        let alert = alert.with_cluster(&ctx.settings.cluster_name);
        let mut providers = HashMap::new();
        for route in notify::routes(&canary, n.severity) {
            if let notify::Route::Provider {
                namespace, name, ..
            } = route
                && let Some(p) = resolve_provider(&ctx, &namespace, &name).await
            {
                providers.insert((namespace, name), p);
            }
        }
        let lookup =
            |ns: &str, name: &str| providers.get(&(ns.to_string(), name.to_string())).cloned();
        for d in notify::dispatch(&canary, &alert, &ctx.global, &ctx.http, lookup).await {
            if let Err(e) = d.result {
                let via = match &d.route {
                    notify::Route::Global => "the global notifier".to_string(),
                    notify::Route::Provider {
                        namespace, name, ..
                    } => format!("AlertProvider {namespace}/{name}"),
                };
                emit_event(
                    &canary,
                    Severity::Warn,
                    &format!("Alert not sent via {via}: {e}"),
                    &ctx,
                )
                .await;
            }
        }
    }
}

/// An AlertProvider and its Secret's data, read from the API (alerts are rare).
async fn resolve_provider(ctx: &Context, ns: &str, name: &str) -> Option<notify::ResolvedProvider> {
    let providers: Api<crate::api::AlertProvider> = Api::namespaced(ctx.client.clone(), ns);
    let provider = match providers.get_opt(name).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            warn!("AlertProvider {ns}/{name}: {e}");
            return None;
        }
    };
    let secret_data = match provider.spec.secret_name() {
        Some(s) => Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get_opt(s)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.data),
        None => None,
    };
    Some(notify::ResolvedProvider {
        provider: Arc::new(provider),
        secret_data,
    })
}

/// Add or remove `finalizer.flagger.app`: wanted with `revertOnDeletion`, and also whenever a
/// routing object the user created is taken over, so that deleting the Canary gives it its
/// original spec back instead of leaving it on Services garbage-collected with the Canary
/// (unknown while the router cannot build: left as it is). The JSON patch is guarded by a
/// `test` of the resourceVersion, so concurrent reconciles never add it twice (Flagger #1124).
async fn sync_finalizer(canary: &Canary, api: &Api<Canary>, ctx: &Context) -> Result<(), Error> {
    let finalizers = canary.finalizers();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    let want =
        canary.spec.revert_on_deletion || execute::takes_over_routes(canary, ctx).unwrap_or(has);
    if has == want {
        return Ok(());
    }
    let rv = canary.resource_version();
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    if want {
        if finalizers.is_empty() {
            ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}));
        } else {
            ops.push(json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}));
        }
    } else {
        let i = finalizers
            .iter()
            .position(|f| f == FINALIZER)
            .expect("present");
        ops.push(json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(Error::encode)?;
    api.patch(
        &canary.name_any(),
        &execute::patch_params(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(Error::kube("patch finalizers", "Canary"))?;
    Ok(())
}

/// `revertOnDeletion`: give the traffic back to the target before the Canary (and everything
/// it owns) goes away: scale the target up, wait until it is ready, route 100% to it, then
/// release the finalizer. Gives up (with a Warning) after the progress deadline.
/// Without `revertOnDeletion` (the finalizer is there because a user's routing object was
/// taken over): only the taken-over routing objects get their original spec back; the target
/// stays scaled down and a taken-over apex Service keeps its selector, as in Flagger.
async fn finalize(canary: &Canary, api: &Api<Canary>, ctx: &Context) -> Result<Requeue, Error> {
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }
    let obs = observe::observe(canary, ctx).await?;
    let mut done = true;
    if !canary.spec.revert_on_deletion {
        execute::restore_routes(canary, ctx).await?;
    } else if let (Some(target), Some(_)) = (&obs.observed.target, &obs.selector) {
        let replicas = obs
            .primary
            .as_ref()
            .and_then(|p| p.replicas())
            .filter(|r| *r > 0)
            .unwrap_or(target.scale_up_replicas.max(1));
        let mut actions = vec![machine::Action::ScaleTarget(replicas)];
        let ready = target.readiness == machine::Readiness::Ready;
        let deleting_for = canary
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| {
                k8s_openapi::jiff::Timestamp::now()
                    .duration_since(t.0)
                    .as_secs()
            })
            .unwrap_or(0);
        if ready {
            actions.push(machine::Action::EnsureRoutes(Weights {
                primary: 0,
                canary: 100,
                mirror: false,
            }));
        } else if deleting_for < canary.spec.progress_deadline().as_secs() as i64 {
            done = false;
        } else {
            warn!(canary = %canary.name_any(), "target not ready after the progress deadline; releasing the finalizer anyway");
        }
        let d = Decision {
            status: canary.status.clone().unwrap_or_default(),
            actions,
            notices: vec![],
            requeue_after: None,
        };
        let desired = build::build(canary, &d, &obs, &ctx.settings)?;
        execute::execute(canary, &d, &desired, &obs, ctx).await?;
        if ready {
            execute::restore_taken_over(canary, &obs, ctx).await?;
        }
    }
    if !done {
        return Ok(Requeue::requeue(Duration::from_secs(2)));
    }
    let finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": canary.resource_version()}});
    api.patch(
        &canary.name_any(),
        &execute::patch_params(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube("patch finalizers", "Canary"))?;
    if canary.spec.revert_on_deletion {
        info!(canary = %canary.name_any(), "Terminated canary: traffic returned to the target");
    } else {
        info!(canary = %canary.name_any(), "Terminated canary: taken-over routes given back");
    }
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        let mut c = Canary::new("podinfo", Default::default());
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("u1".into());
        c
    }

    #[test]
    fn an_invalid_canary_waits_for_a_change_and_a_transient_error_is_retried() {
        assert_eq!(
            requeue_after_error(&Error::Invalid("target selector label unknown".into())),
            Requeue::await_change()
        );
        assert_eq!(
            requeue_after_error(&Error::Rejected("x".into())),
            Requeue::requeue(REJECTED_RECHECK)
        );
        for e in [
            Error::TargetNotFound("x".into()),
            Error::StatusConflict("x".into()),
            Error::Panic("x".into()),
        ] {
            assert_eq!(
                requeue_after_error(&e),
                Requeue::requeue(Duration::from_secs(5)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn events_carry_source_and_timestamps_like_client_go_recorders() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let e = event(&canary(), Severity::Warn, "Halt", "pennant-0", now);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["source"], json!({"component": "flagger"}));
        assert_eq!(v["lastTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(v["firstTimestamp"], v["lastTimestamp"]);
        assert_eq!(v["count"], 1);
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reason"], "Synced");
        assert_eq!(v["involvedObject"]["kind"], "Canary");
        assert_eq!(v["involvedObject"]["namespace"], "test");
        assert_eq!(v["metadata"]["namespace"], "test");
        assert_eq!(v["reportingComponent"], "pennant.dev/canary");
        assert_eq!(v["reportingInstance"], "pennant-0");
    }

    #[test]
    fn notices_are_flux_events_with_flagger_app_metadata() {
        use crate::api::CanaryPhase;
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut c = canary();
        let e = flux_event(&c, Severity::Info, "Initialization done!", "pennant-0", now);
        assert_eq!(e.severity, "info");
        assert_eq!(e.reason, "Synced");
        assert_eq!(e.reporting_controller, "flagger");
        assert_eq!(
            e.involved_object.api_version.as_deref(),
            Some("flagger.app/v1beta1")
        );
        assert_eq!(e.involved_object.kind.as_deref(), Some("Canary"));
        assert!(
            e.metadata.is_empty(),
            "no status, no metadata: {:?}",
            e.metadata
        );
        c.status = Some(CanaryStatus {
            phase: Some(CanaryPhase::Progressing),
            last_applied_spec: Some("5d8f7c9b4".into()),
            ..Default::default()
        });
        for severity in [Severity::Warn, Severity::Error] {
            let e = flux_event(&c, severity, "Halt", "pennant-0", now);
            assert_eq!(e.severity, "error", "{severity:?}");
            assert_eq!(
                e.metadata,
                std::collections::BTreeMap::from([
                    ("flagger.app/phase".to_string(), "Progressing".to_string()),
                    ("flagger.app/revision".to_string(), "5d8f7c9b4".to_string()),
                ])
            );
        }
    }

    #[test]
    fn event_notes_fit_the_api_servers_1024_bytes() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        // 700 characters (under the old 1000-character cut), 2100 bytes
        let metric = "応答".repeat(350);
        let m = format!("Halt podinfo.test advancement {metric} 5.00 > 1");
        let note = event(&canary(), Severity::Warn, &m, "p", now)
            .message
            .unwrap();
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(note.starts_with("Halt podinfo.test advancement 応答"));
        assert!(note.ends_with("応答 5.00 > 1"), "the value is kept: {note}");
        assert!(note.contains('…'));
    }
}
