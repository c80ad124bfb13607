//! Reading the objects a health wait checks, from watches where it can: a dynamic watch
//! (`watcher` + `reflector` over [`kube::discovery`]'s `ApiResource`) per kind that has an
//! object not yet healthy, started on first need and kept for the process's life. Every
//! change of a watched object is sent as its [`ObjectId`] to the receiver returned by
//! [`Watches::new`], so the controller that waits can re-evaluate at once (a map from
//! objects to waits lives with the caller). I/O only; the verdict is [`super::assess`]'s.
//!
//! Why not Flux's poller: kustomize-controller polls every 5 s inside the reconcile and holds
//! a worker for the whole `spec.timeout` (flux2#5622); here a wait holds nothing, and an
//! object becoming Ready is noticed within a second.
//!
//! Under a namespace-scoped controller (`--namespace`) a namespaced kind is watched in that
//! namespace only (no cluster-wide list rights needed). Objects of a kind that is not watched
//! (yet, or elsewhere, or a remote cluster's client, for which there is no watch) are read
//! with one GET each; an error other than NotFound is logged and the
//! object counts as not found for this evaluation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::apply::inventory::ObjectId;

/// One watched kind.
struct KindWatch {
    resource: ApiResource,
    /// The one namespace watched (a namespaced kind under a namespace-scoped controller).
    namespace: Option<String>,
    store: Store<DynamicObject>,
    /// The first complete list arrived: the store can answer "absent" too.
    synced: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// The dynamic watches of one cluster (the controller's own), keyed by group and kind.
pub struct Watches {
    client: Client,
    /// The controller's namespace scope (`--namespace`): namespaced kinds are watched there
    /// only; objects elsewhere are read with a GET.
    namespace: Option<String>,
    kinds: Mutex<HashMap<(String, String), Arc<KindWatch>>>,
    discovered: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
    events: mpsc::UnboundedSender<ObjectId>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for w in self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            w.task.abort();
        }
    }
}

/// `(group, version)` of an `apiVersion` (`v1` is the core group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

impl Watches {
    /// Watches of `client`'s cluster (namespaced kinds only in `namespace` when set), and the
    /// receiver of the ids of the objects that changed.
    pub fn new(
        client: Client,
        namespace: Option<String>,
    ) -> (Arc<Watches>, mpsc::UnboundedReceiver<ObjectId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Watches {
                client,
                namespace,
                kinds: Mutex::default(),
                discovered: Mutex::default(),
                events: tx,
            }),
            rx,
        )
    }

    /// The kinds watched now, as `Kind.group` (`Deployment.apps`), sorted.
    pub fn watched_kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|(g, k)| format!("{k}.{g}"))
            .collect();
        v.sort();
        v
    }

    async fn resolve(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)> {
        if let Some(r) = self
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(gvk)
        {
            return Some(r.clone());
        }
        let r = resolve(&self.client, gvk).await?;
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(gvk.clone(), r.clone());
        Some(r)
    }

    fn kind(&self, group: &str, kind: &str) -> Option<Arc<KindWatch>> {
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(group.to_string(), kind.to_string()))
            .cloned()
    }

    /// Start watching the kind of `id` (at `version`) unless it is watched already.
    pub async fn ensure(&self, id: &ObjectId, version: &str) {
        if self.kind(&id.group, &id.kind).is_some() {
            return;
        }
        let gvk = GroupVersionKind::gvk(&id.group, version, &id.kind);
        let Some((resource, caps)) = self.resolve(&gvk).await else {
            return;
        };
        let namespace = match caps.scope {
            Scope::Namespaced => self.namespace.clone(),
            Scope::Cluster => None,
        };
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let key = (id.group.clone(), id.kind.clone());
        if kinds.contains_key(&key) {
            return;
        }
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let store = writer.as_reader();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let (tx, flag, group, kind) = (
            self.events.clone(),
            synced.clone(),
            id.group.clone(),
            id.kind.clone(),
        );
        debug!(kind = %id.kind, group = %id.group, "health: watching a new kind");
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()),
        )
        .backoff(crate::runtime::watch_backoff());
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(e) = stream.next().await {
                match e {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::SeqCst),
                    // InitApply too: a change between the caller's GET and the first list
                    // is not missed
                    Ok(
                        watcher::Event::Apply(o)
                        | watcher::Event::Delete(o)
                        | watcher::Event::InitApply(o),
                    ) => {
                        let id = ObjectId {
                            namespace: o.metadata.namespace.clone().unwrap_or_default(),
                            name: o.metadata.name.clone().unwrap_or_default(),
                            group: group.clone(),
                            kind: kind.clone(),
                        };
                        if tx.send(id).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(%kind, %group, "health watch: {e}"),
                }
            }
        })
        .abort_handle();
        kinds.insert(
            key,
            Arc::new(KindWatch {
                resource,
                namespace,
                store,
                synced,
                task,
            }),
        );
    }

    /// The watched copy of `id`: `Some(None)` when its kind is watched and synced and the
    /// object is absent, `None` when the watch cannot tell (not watched or not synced).
    pub fn cached(&self, id: &ObjectId) -> Option<Option<Value>> {
        let w = self.kind(&id.group, &id.kind)?;
        if !w.synced.load(Ordering::SeqCst)
            || w.namespace.as_ref().is_some_and(|ns| *ns != id.namespace)
        {
            return None;
        }
        let mut key = ObjectRef::<DynamicObject>::new_with(&id.name, w.resource.clone());
        if !id.namespace.is_empty() {
            key = key.within(&id.namespace);
        }
        Some(w.store.get(&key).map(|o| to_value(&o, &w.resource)))
    }
}

/// An object of the store as the API server returns it (with `apiVersion` and `kind`).
fn to_value(o: &DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["apiVersion"] = Value::String(ar.api_version.clone());
    v["kind"] = Value::String(ar.kind.clone());
    v
}

/// The API resource of `gvk`; with an empty version, the group's preferred one.
async fn resolve(
    client: &Client,
    gvk: &GroupVersionKind,
) -> Option<(ApiResource, ApiCapabilities)> {
    let r = if gvk.version.is_empty() {
        match kube::discovery::group(client, &gvk.group).await {
            Ok(g) => g.recommended_kind(&gvk.kind).ok_or_else(|| {
                kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(gvk.kind.clone()))
            }),
            Err(e) => Err(e),
        }
    } else {
        kube::discovery::pinned_kind(client, gvk).await
    };
    match r {
        Ok(r) => Some(r),
        Err(e) => {
            debug!(kind = %gvk.kind, group = %gvk.group, "health: kind not served: {e}");
            None
        }
    }
}

/// Discovered kinds of one call, for a cluster without [`Watches`] (a remote one).
type LocalDiscovery = HashMap<GroupVersionKind, Option<(ApiResource, ApiCapabilities)>>;

/// `gvk` resolved through `discovery`'s cache when given, else once per call through `local`.
async fn resolve_via(
    client: &Client,
    discovery: Option<&Watches>,
    local: &mut LocalDiscovery,
    gvk: &GroupVersionKind,
) -> Option<(ApiResource, ApiCapabilities)> {
    if let Some(w) = discovery {
        return w.resolve(gvk).await;
    }
    if let Some(r) = local.get(gvk) {
        return r.clone();
    }
    let r = resolve(client, gvk).await;
    local.insert(gvk.clone(), r.clone());
    r
}

/// `objects` (id and the version of its `apiVersion`, the namespace as a manifest wrote it,
/// possibly empty) placed as `helm` and `kubectl` place them: a namespaced kind's object
/// without a namespace in `default_namespace`, a cluster-scoped kind's without one. Kinds are
/// resolved through `discovery`'s cache when given, else once per kind; a kind the cluster does
/// not serve keeps the namespace as written.
pub async fn place(
    client: &Client,
    discovery: Option<&Watches>,
    default_namespace: &str,
    objects: Vec<(ObjectId, String)>,
) -> Vec<(ObjectId, String)> {
    let mut local = HashMap::new();
    let mut out = Vec::with_capacity(objects.len());
    for (mut id, version) in objects {
        let gvk = GroupVersionKind::gvk(&id.group, &version, &id.kind);
        let resolved = resolve_via(client, discovery, &mut local, &gvk).await;
        match resolved.map(|(_, caps)| caps.scope) {
            Some(Scope::Cluster) => id.namespace.clear(),
            Some(Scope::Namespaced) if id.namespace.is_empty() => {
                id.namespace = default_namespace.to_string()
            }
            _ => {}
        }
        out.push((id, version));
    }
    out
}

/// The latest copies of `objects` (id and the version of its `apiVersion`) in the cluster of
/// `client`. With `watches` (the cluster is the controller's own), a kind that is watched and
/// synced is read from its cache, the rest with a GET each ([`Watches::ensure`] starts a
/// kind's watch). `discovery`: the watches of the same cluster whose discovery cache resolves
/// the kinds when `watches` is `None` (an impersonated account on the controller's cluster:
/// its reads stay its own, the kinds are the cluster's); without either, each kind is
/// discovered once per call (a remote cluster). Absent objects are absent from the map.
pub async fn observe(
    client: &Client,
    watches: Option<&Watches>,
    discovery: Option<&Watches>,
    objects: &[(ObjectId, String)],
) -> BTreeMap<ObjectId, Value> {
    let mut out = BTreeMap::new();
    let mut local_discovery = HashMap::new();
    let mut reads = vec![];
    for (id, version) in objects {
        if let Some(cached) = watches.and_then(|w| w.cached(id)) {
            if let Some(o) = cached {
                out.insert(id.clone(), o);
            }
            continue;
        }
        let gvk = GroupVersionKind::gvk(&id.group, version, &id.kind);
        let resolved = resolve_via(client, watches.or(discovery), &mut local_discovery, &gvk).await;
        let Some((ar, caps)) = resolved else {
            continue;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced if !id.namespace.is_empty() => {
                Api::namespaced_with(client.clone(), &id.namespace, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        reads.push((id.clone(), api, ar));
    }
    // the GETs, READS_AT_ONCE in flight (each is a round trip; one after another they added up
    // to a second per evaluation on a loaded API server)
    let mut read = futures::stream::iter(reads)
        .map(|(id, api, ar)| async move {
            let got = api.get_opt(&id.name).await;
            (id, got, ar)
        })
        .buffer_unordered(READS_AT_ONCE);
    while let Some((id, got, ar)) = read.next().await {
        match got {
            Ok(Some(o)) => {
                out.insert(id, to_value(&o, &ar));
            }
            Ok(None) => {}
            Err(e) => warn!(object = %super::assess::fmt_id(&id), "health: cannot read: {e}"),
        }
    }
    out
}

/// GETs of one [`observe`] in flight at once.
const READS_AT_ONCE: usize = 4;
