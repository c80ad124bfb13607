//! The wiring every source kind's reconciler shares (GitRepository, OCIRepository,
//! HelmRepository, HelmChart): the watch with Flux's generation-or-request predicate and the
//! Secrets an object names, the readiness of the caches ([`SyncGate`]), the
//! finalizer/deletion/suspend steps of a [`Plan`], and the end of a reconcile (GC, interval
//! with jitter or backoff).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::{Error, Kind, add_finalizer, blocking, remove_finalizer};
use crate::api::source::Condition;
use crate::gitops::conditions::{self, types};
use crate::gitops::reconcile_request::requested_at;
use crate::source::git_repository::{Plan, next_interval, retry_after};
use crate::source::storage::Storage;

/// A source kind reconciled with this wiring.
pub(super) trait Source: Kind + kube::Resource<Scope = NamespaceResourceScope> {
    /// The storage directory's kind (and the logs').
    const KIND: &'static str;
    /// `spec.interval`; `None` when absent or invalid (no periodic check).
    fn interval(&self) -> Option<Duration>;
    /// The Secrets the object reads (`secretRef`, `certSecretRef`): a change reconciles it.
    fn secret_names(&self) -> Vec<&str>;
    /// Whether the kind names Secrets at all (else no Secret watch is started for it).
    const READS_SECRETS: bool = true;
}

/// What every reconciler of a kind shares.
pub(super) struct Ctx<K: Source> {
    pub client: Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub storage: Storage,
    pub instance: String,
    /// The caches of other source kinds a kind reads (a HelmChart's sources, a
    /// GitRepository's includes).
    pub sources: Sources,
    /// Largest Helm repository `index.yaml` downloaded or parsed, bytes (Flux's
    /// `--helm-index-max-size`; [`crate::source::helm_index::DEFAULT_MAX_INDEX_SIZE`] by default).
    pub helm_index_max_size: u64,
    /// The process's shutdown, for the kinds whose fetch runs off the runtime and must be
    /// interrupted (`None`: nothing to interrupt).
    pub shutdown: Option<crate::runtime::Shutdown>,
    /// Reconciles other objects of the kind at once (a GitRepository whose artifact another
    /// one includes); `None` when the kind does not need it.
    pub wake: Option<tokio::sync::mpsc::UnboundedSender<ObjectRef<K>>>,
    failures: Mutex<HashMap<ObjectRef<K>, u32>>,
}

/// Caches of the source kinds a HelmChart reads, and the parsed indexes (one parse per index
/// revision, shared by every chart of the repository).
#[derive(Clone, Default)]
pub(super) struct Sources {
    pub helm_repos: Option<Store<crate::api::source::HelmRepository>>,
    pub git_repos: Option<Store<crate::api::source::GitRepository>>,
    pub oci_repos: Option<Store<crate::api::source::OCIRepository>>,
    pub indexes: Option<Arc<crate::source::helm_index::IndexCache>>,
}

impl<K: Source> Ctx<K> {
    pub fn new(
        client: Client,
        metrics: Arc<crate::metrics::Metrics>,
        storage: Storage,
        instance: String,
    ) -> Self {
        Ctx {
            client,
            metrics,
            storage,
            instance,
            sources: Sources::default(),
            helm_index_max_size: crate::source::helm_index::DEFAULT_MAX_INDEX_SIZE,
            shutdown: None,
            wake: None,
            failures: Mutex::default(),
        }
    }

    /// A context of kind `L` with the same client, metrics, storage and instance, reading
    /// `sources`.
    pub fn like<L: Source>(&self, sources: Sources) -> Ctx<L> {
        let mut c = Ctx::new(
            self.client.clone(),
            self.metrics.clone(),
            self.storage.clone(),
            self.instance.clone(),
        );
        c.sources = sources;
        c.helm_index_max_size = self.helm_index_max_size;
        c
    }

    fn forget(&self, obj: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(obj));
    }
}

/// The objects of the namespace whose [`Source::secret_names`] name this Secret.
fn for_secret<K: Source>(
    store: &Store<K>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<K>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == ns && o.secret_names().contains(&name.as_str()))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// The readiness of the source controller's caches: every watch made with [`watch_counted`]
/// counts, and `done` runs once, when the last of them has its first complete list (the
/// watches list at the same time; none is awaited alone).
#[derive(Clone)]
pub(super) struct SyncGate {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<dyn Fn() + Send + Sync>,
    /// Where the watches report an object that left the shard ([`super::shard`]).
    departures: Option<tokio::sync::mpsc::UnboundedSender<super::shard::Departed>>,
}

impl SyncGate {
    /// A gate calling `done` (e.g. [`crate::runtime::Process::synced`]) once every counted
    /// cache is filled.
    pub fn new(done: impl Fn() + Send + Sync + 'static) -> Self {
        SyncGate {
            pending: Arc::default(),
            done: Arc::new(done),
            departures: None,
        }
    }

    /// The watches counted by this gate report to `tx` each object that leaves the shard
    /// (a delete event of an object not being deleted: relabelled out of the selector).
    pub fn with_departures(
        mut self,
        tx: tokio::sync::mpsc::UnboundedSender<super::shard::Departed>,
    ) -> Self {
        self.departures = Some(tx);
        self
    }

    /// One more cache to wait for; the returned closure is its first list (later calls count
    /// for nothing).
    fn register(&self) -> impl Fn() + Send + Sync + 'static {
        use std::sync::atomic::Ordering;
        self.pending.fetch_add(1, Ordering::SeqCst);
        let (pending, done, once) = (
            self.pending.clone(),
            self.done.clone(),
            Arc::new(std::sync::Once::new()),
        );
        move || {
            once.call_once(|| {
                if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    done();
                }
            })
        }
    }
}

/// The watch of `K` in `scope`: events pass on a new generation, a new reconcile request or a
/// deletion (Flux's predicate); a Secret change reconciles the objects naming it. Returns the
/// cache and the controller, to which the caller may add watches before running it. Its cache
/// is not counted for readiness: see [`watch_counted`].
#[allow(dead_code)] // every kind of `run` counts its cache; kept for a kind that does not
pub(super) fn watch<K: Source>(
    client: &Client,
    scope: &crate::runtime::Scope,
) -> (Store<K>, Controller<K>) {
    watch_counted(client, scope, None, None)
}

/// Called with the metadata of every object of a watch once the watch's cache holds it (an
/// apply, a relist, a deletion): another kind's reconcile triggered from it reads that cache up
/// to date.
pub(super) type OnChange = Box<dyn Fn(&ObjectMeta) + Send + Sync>;

/// [`watch`], the cache's first complete list counted by `gate` (`/readyz` waits for it), each
/// change passed to `on_change` after the cache has it.
pub(super) fn watch_counted<K: Source>(
    client: &Client,
    scope: &crate::runtime::Scope,
    gate: Option<&SyncGate>,
    on_change: Option<OnChange>,
) -> (Store<K>, Controller<K>) {
    let api: Api<K> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store::<K>();
    let wanted = |o: &K| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        o.meta().generation.hash(&mut h);
        requested_at(o.meta().annotations.as_ref()).hash(&mut h);
        o.meta().deletion_timestamp.is_some().hash(&mut h);
        Some(h.finish())
    };
    let listed = gate.map(SyncGate::register);
    let departures = gate.and_then(|g| g.departures.clone());
    let trigger = reflector::reflector(writer, watcher(api, scope.watcher_config()))
        .backoff(crate::runtime::watch_backoff())
        .inspect_ok(move |e| match e {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                if let Some(f) = &on_change {
                    f(o.meta())
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = &listed {
                    listed();
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(f) = &on_change {
                    f(o.meta())
                }
                // gone from the (selected) watch without being deleted: relabelled out of this
                // shard. The cache has dropped it, so no queued reconcile, finalizer or GC
                // runs; its files are handed over (`shard`)
                if let (None, Some(tx)) = (&o.meta().deletion_timestamp, &departures) {
                    let _ = tx.send(super::shard::Departed {
                        kind: K::KIND.to_string(),
                        namespace: o.namespace().unwrap_or_default(),
                        name: o.name_any(),
                    });
                }
            }
            _ => {}
        })
        .applied_objects()
        .predicate_filter(wanted, PredicateConfig::default());
    // a short shared backoff: kube pauses all of a controller's watches on any one's error
    let mut controller = Controller::for_stream(trigger, store.clone())
        .trigger_backoff(crate::runtime::watch_backoff());
    if K::READS_SECRETS {
        let secret_events = watcher(secrets_api, watcher::Config::default().any_semantic())
            .backoff(crate::runtime::watch_backoff())
            .touched_objects();
        let index = store.clone();
        controller = controller.watches_stream(secret_events, move |s| for_secret(&index, &s));
    }
    (store, controller)
}

/// Runs `controller` with `reconcile` until `shutdown`, a panic contained to its object,
/// failures retried with backoff (5 s doubling, at most the interval).
pub(super) fn run<K, F, Fut>(
    controller: Controller<K>,
    shutdown: crate::runtime::Shutdown,
    ctx: Arc<Ctx<K>>,
    reconcile: F,
) -> impl std::future::Future<Output = ()> + Send
where
    K: Source,
    F: Fn(Arc<K>, Arc<Ctx<K>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(shutdown.signalled())
        .run(
            move |obj: Arc<K>, ctx: Arc<Ctx<K>>| {
                use futures::FutureExt;
                let name = obj.name_any();
                let fut = reconcile(obj, ctx);
                async move {
                    std::panic::AssertUnwindSafe(fut)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::Kube(format!(
                                "reconcile of {name} panicked (see the log)"
                            )))
                        })
                }
            },
            error_policy::<K>,
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("{} reconcile: {e}", K::KIND);
            }
        })
}

fn error_policy<K: Source>(obj: Arc<K>, err: &Error, ctx: Arc<Ctx<K>>) -> Action {
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(ObjectRef::from_obj(&*obj)).or_default();
        *n += 1;
        *n
    };
    let reason = match err {
        Error::Kube(_) => {
            warn!(kind = K::KIND, name = %obj.name_any(), "reconcile failed: {err}");
            "kube"
        }
        Error::Failed(_) => "source",
    };
    ctx.metrics.reconcile_error("source", reason);
    let interval = obj.interval().unwrap_or(Duration::from_secs(60));
    Action::requeue(retry_after(n, interval))
}

/// The steps before the kind's own work: [`Plan::Finalize`] removes the storage directory and
/// the finalizer, [`Plan::AddFinalizer`] adds it (then the plan of the patched object is
/// taken), [`Plan::Nothing`]/[`Plan::Suspended`] end the reconcile. `Ok(Err(action))`: done;
/// `Ok(Ok((obj, plan)))`: go on with `Stall` or `Fetch`.
#[allow(clippy::type_complexity)]
pub(super) async fn prepare<K: Source, P>(
    obj: Arc<K>,
    ctx: &Ctx<K>,
    decide: impl Fn(&K) -> Plan<P>,
) -> Result<Result<(Arc<K>, Plan<P>), Action>, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let mut obj = obj;
    loop {
        match decide(&obj) {
            Plan::Nothing | Plan::Suspended => return Ok(Err(Action::await_change())),
            Plan::Finalize => {
                remove_storage::<K>(ctx, &ns, &name).await?;
                remove_finalizer(&*obj, &api).await?;
                ctx.forget(&obj);
                info!(kind = K::KIND, name = %name, namespace = %ns, "artifacts removed, finalizer released");
                return Ok(Err(Action::await_change()));
            }
            Plan::AddFinalizer => obj = Arc::new(add_finalizer(&*obj, &api).await?),
            plan => return Ok(Ok((obj, plan))),
        }
    }
}

/// Removes the object's storage directory.
pub(super) async fn remove_storage<K: Source>(
    ctx: &Ctx<K>,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let (storage, n, nm) = (ctx.storage.clone(), ns.to_string(), name.to_string());
    blocking(move || {
        storage
            .remove_all(K::KIND, &n, &nm)
            .map_err(|e| e.to_string())
    })
    .await
    .and_then(|r| r)
    .map_err(|e| Error::Kube(format!("removing the artifacts: {e}")))?;
    Ok(())
}

/// What every kind does with its pure outcome: `status` merge-patched when it differs from
/// `old` (the object's status read), then each notice recorded as an Event.
pub(super) async fn record<K, S>(
    obj: &K,
    ctx: &Ctx<K>,
    old: Option<&S>,
    status: &S,
    notices: &[crate::source::git_repository::Notice],
) -> Result<(), Error>
where
    K: Source,
    S: serde::Serialize + PartialEq + Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    super::write_status(obj, old, status, &api).await?;
    for n in notices {
        super::emit_event(obj, n, &ctx.client, &ctx.instance).await;
    }
    Ok(())
}

/// The end of a reconcile: GC of the object's old artifacts (`current` kept), then the next
/// check (`result` as [`crate::source::git_repository::Outcome::result`]): at the interval with
/// jitter after a success (never without an interval), an error (backoff) after a failure
/// (its message `Ready`'s), a change after a stall.
pub(super) async fn finish<K: Source>(
    obj: &K,
    ctx: &Ctx<K>,
    current: Option<String>,
    conditions_after: &[Condition],
    result: Result<(), bool>,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    if let Some(file) = current {
        let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), name.clone());
        let removed = blocking(move || {
            storage
                .gc(K::KIND, &n, &nm, Some(&file), SystemTime::now())
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        if let Err(e) = removed {
            warn!(kind = K::KIND, name = %name, "garbage collection: {e}");
        }
    }
    match result {
        Ok(()) => {
            ctx.forget(obj);
            let seed = Timestamp::now().subsec_nanosecond().unsigned_abs() as u64;
            Ok(match obj.interval() {
                Some(i) => Action::requeue(next_interval(i, seed)),
                None => Action::await_change(),
            })
        }
        Err(false) => Ok(Action::await_change()),
        Err(true) => Err(Error::Failed(
            conditions::get(conditions_after, types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::SyncGate;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ready_only_when_every_kinds_cache_has_listed_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let gate = SyncGate::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let (git, oci, helm) = (gate.register(), gate.register(), gate.register());
        git();
        oci();
        // a relist of a cache already counted counts for nothing
        git();
        oci();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "HelmRepositories not listed yet"
        );
        helm();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        helm();
        git();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "done once");
    }
}
