//! The source controller (`--controllers source`): GitRepositories ([`git_repository`]),
//! OCIRepositories ([`oci`]), HelmRepositories ([`helm_repository`]) and HelmCharts
//! ([`helm_chart`]) reconciled as Flux's source-controller does, and ArtifactGenerators
//! ([`generator`]) as Flux's source-watcher, their artifacts written to the [`Storage`] and
//! served by the process's HTTP server ([`Storage::routes`]).
//!
//! Wiring, one path for every kind ([`kind`]): a watch passes an event on only when the
//! generation or the `reconcile.fluxcd.io/requestedAt` token changed, or the object is being
//! deleted (Flux's `GenerationChanged OR ReconcileRequested` predicate), so status writes never
//! loop back. A Secret change reconciles the objects naming it (a fixed password is picked up
//! at once, not an interval later); a new GitRepository artifact reconciles the
//! GitRepositories that `include` it, a source's change the HelmCharts using it. Everything
//! else is timed: the next check at `spec.interval` (±5% jitter), a failure retried with
//! backoff (5 s doubling up to 15 min, Flux's `--max-retry-delay`, whatever the interval).
//! `/readyz` turns true when every kind's cache has its first list ([`kind::SyncGate`]).
//!
//! Each reconcile: `decide` (pure) → finalizer / deletion / fetch off the runtime → archive
//! into storage → `outcome` (pure) → status (a merge patch of `/status`, only when it changed)
//! → Events → GC.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use super::git_repository::Notice;
use super::storage::{Retention, Storage};
use crate::api::source::{
    Artifact, FINALIZER, GitRepository, HelmChart, HelmRepository, OCIRepository,
};
use crate::gitops::events;

mod generator;
mod git_repository;
mod helm_chart;
mod helm_repository;
mod kind;
mod oci;
pub mod shard;

/// Field manager of pennant's writes (as the Canary controller's).
const FIELD_MANAGER: &str = "pennant";
/// `source.component` of the Events: Flux's, so tools filtering on it read pennant's.
pub const EVENT_SOURCE: &str = "source-controller";

/// The source controller's settings (Flux's source-controller flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--storage-path`.
    pub storage_path: PathBuf,
    /// `--storage-adv-addr`: host[:port] (or URL prefix) written in artifact URLs.
    pub storage_adv_addr: String,
    /// `--artifact-retention-ttl` and `--artifact-retention-records`.
    pub retention: Retention,
    /// `--helm-index-max-size`: largest Helm repository `index.yaml`, bytes.
    pub helm_index_max_size: u64,
}

impl Settings {
    /// The storage these settings describe.
    pub fn storage(&self) -> Storage {
        Storage::new(
            self.storage_path.clone(),
            self.storage_adv_addr.clone(),
            self.retention.clone(),
        )
    }
}

/// Why a reconcile failed (the status says more).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(String),
    #[error("source not ready: {0}")]
    Failed(String),
}

/// What the generic helpers need of a source kind.
trait Kind:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Kube(format!("{what}: {e}"))
}

/// Watch and reconcile GitRepositories, OCIRepositories, HelmRepositories and HelmCharts until the process's shutdown.
pub async fn run(process: crate::runtime::Process, settings: Settings) -> anyhow::Result<()> {
    let crate::runtime::Process {
        client,
        metrics,
        scope,
        shutdown,
        ..
    } = process.clone();
    let storage = settings.storage();
    std::fs::create_dir_all(&storage.root)
        .map_err(|e| anyhow::anyhow!("--storage-path {}: {e}", storage.root.display()))?;
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "pennant".into());
    // the client, metrics, storage and instance every kind's context shares
    let mut base: kind::Ctx<GitRepository> =
        kind::Ctx::new(client.clone(), metrics, storage, instance);
    base.helm_index_max_size = settings.helm_index_max_size;
    // `/readyz`: synced once every kind's cache has its first complete list; then, on a shard,
    // the stored artifacts of objects that are not this shard's are handed over (`shard`)
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let listed_tx = std::sync::Mutex::new(Some(listed_tx));
    let gate = kind::SyncGate::new(move || {
        process.synced();
        info!("source controller: caches synced");
        if let Some(tx) = listed_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    });
    let (departed_tx, mut departed_rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = gate.with_departures(departed_tx);
    {
        let (client, storage, selector, shutdown) = (
            client.clone(),
            base.storage.clone(),
            scope.label_selector.clone(),
            shutdown.clone(),
        );
        let grace = settings.retention.ttl;
        tokio::spawn(async move {
            if listed_rx.await.is_ok() {
                shard::sweep(
                    client.clone(),
                    storage.clone(),
                    selector.clone(),
                    grace,
                    shutdown.clone(),
                )
                .await;
            }
            while let Some(d) = departed_rx.recv().await {
                info!(kind = %d.kind, namespace = %d.namespace, name = %d.name,
                      "left this shard: no longer reconciled here; artifacts served for {grace:?}");
                tokio::spawn(shard::follow(
                    client.clone(),
                    storage.clone(),
                    selector.clone(),
                    grace,
                    d,
                    shutdown.clone(),
                ));
            }
        });
    }

    // a source's change (a new artifact, Ready) reconciles the HelmCharts using it, sent from
    // the source's own watch once its cache has the change: the chart's build reads that cache
    let (charts, chart_watch) =
        kind::watch_counted::<HelmChart>(&client, &scope, Some(&gate), None);
    let (chart_wake, chart_woken) = tokio::sync::mpsc::unbounded_channel();
    let wake_charts = |kind: &'static str| {
        let (charts, tx) = (charts.clone(), chart_wake.clone());
        move |meta: &ObjectMeta| {
            let name = meta.name.as_deref().unwrap_or_default();
            for c in helm_chart::charts_of(&charts, kind, meta.namespace.clone(), name) {
                let _ = tx.send(c);
            }
        }
    };
    let (repos, git_watch) = kind::watch_counted::<GitRepository>(
        &client,
        &scope,
        Some(&gate),
        Some(Box::new(wake_charts("GitRepository")) as _),
    );
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let mut git_ctx = base.like(kind::Sources {
        git_repos: Some(repos.clone()),
        ..Default::default()
    });
    git_ctx.shutdown = Some(shutdown.clone());
    git_ctx.wake = Some(wake);
    // a new artifact reconciles the GitRepositories including it (sent by the reconcile)
    let git_watch = git_watch.reconcile_on(crate::runtime::received(woken));
    let git_controller = kind::run(
        git_watch,
        shutdown.clone(),
        Arc::new(git_ctx),
        git_repository::reconcile,
    );

    let (oci_repos, oci_watch) = kind::watch_counted::<OCIRepository>(
        &client,
        &scope,
        Some(&gate),
        Some(Box::new(wake_charts("OCIRepository")) as _),
    );
    let oci_controller = kind::run(
        oci_watch,
        shutdown.clone(),
        Arc::new(base.like(kind::Sources::default())),
        oci::reconcile,
    );

    let (helm_repos, helm_watch) = kind::watch_counted::<HelmRepository>(
        &client,
        &scope,
        Some(&gate),
        Some(Box::new(wake_charts("HelmRepository")) as _),
    );
    let helm_repo_controller = kind::run(
        helm_watch,
        shutdown.clone(),
        Arc::new(base.like(kind::Sources::default())),
        helm_repository::reconcile,
    );

    let chart_ctx = base.like(kind::Sources {
        helm_repos: Some(helm_repos.clone()),
        git_repos: Some(repos.clone()),
        oci_repos: Some(oci_repos),
        // a few index revisions: every chart of a repository shares one parse
        indexes: Some(Arc::new(super::helm_index::IndexCache::new(16))),
    });
    let chart_watch = chart_watch.reconcile_on(crate::runtime::received(chart_woken));
    let chart_controller = kind::run(
        chart_watch,
        shutdown.clone(),
        Arc::new(chart_ctx),
        helm_chart::reconcile,
    );
    // ArtifactGenerators (source-watcher): ExternalArtifacts composed from the sources above
    let generator_controller = generator::controller(
        base.like(kind::Sources::default()),
        &scope,
        shutdown.clone(),
        Some(&gate),
    );
    futures::join!(
        git_controller,
        oci_controller,
        helm_repo_controller,
        chart_controller,
        generator_controller
    );
    Ok(())
}

/// `K`'s API in the scope's namespace, or all.
fn scoped_api<K>(client: &Client, scope: &crate::runtime::Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    scope.api(client)
}

/// `f` on tokio's blocking pool; a panic in it is an error of this object, not of the process.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

/// `status.artifact` when its file is in storage and re-hashes to its digest, with its URL
/// rewritten for the current advertised address.
async fn kept_artifact(artifact: Option<&Artifact>, storage: &Storage) -> Option<Artifact> {
    let a = artifact?.clone();
    let url_of = storage.clone();
    let storage = storage.clone();
    let (path, digest) = (a.path.clone(), a.digest.clone());
    let ok = blocking(move || storage.verify(&path, &digest))
        .await
        .unwrap_or(false);
    ok.then(|| Artifact {
        url: url_of.url_for(&a.path),
        ..a
    })
}

/// A JSON patch guarded by a `test` of the resourceVersion (two reconciles never add twice).
async fn patch_finalizers<K: Kind>(repo: &K, api: &Api<K>, op: Value) -> Result<K, Error> {
    let ops = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": repo.resource_version()},
        op
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| Error::Kube(e.to_string()))?;
    api.patch(&repo.name_any(), &patch_params(), &Patch::<()>::Json(patch))
        .await
        .map_err(kube_err("patch finalizers"))
}

/// The object with `finalizers.fluxcd.io` added, as the server returned it.
async fn add_finalizer<K: Kind>(repo: &K, api: &Api<K>) -> Result<K, Error> {
    let op = if repo.finalizers().is_empty() {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
    };
    patch_finalizers(repo, api, op).await
}

async fn remove_finalizer<K: Kind>(repo: &K, api: &Api<K>) -> Result<(), Error> {
    let Some(i) = repo.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let op = json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")});
    match patch_finalizers(repo, api, op).await {
        // gone already
        Err(Error::Kube(m)) if m.contains("NotFound") || m.contains("not found") => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Merge-patch `/status` when it changed; a field that disappeared is sent as null.
async fn write_status<K: Kind, S: serde::Serialize + PartialEq + Default>(
    repo: &K,
    old: Option<&S>,
    status: &S,
    api: &Api<K>,
) -> Result<(), Error> {
    let default = S::default();
    crate::gitops::object::write_status(
        api,
        &repo.name_any(),
        old.unwrap_or(&default),
        status,
        FIELD_MANAGER,
    )
    .await
    .map_err(kube_err("patch status"))
}

/// A core/v1 Event on the source object, as Flux's recorder writes them
/// ([`crate::gitops::events`]: `source.component: source-controller`, annotations
/// `source.toolkit.fluxcd.io/<key>`), also logged. Messages carry no secrets (the fetch
/// redacts them).
async fn emit_event<K: Kind>(repo: &K, n: &Notice, client: &Client, instance: &str) {
    let note = events::Note {
        warning: n.warning,
        reason: &n.reason,
        message: &n.message,
        annotations: &n.annotations,
    };
    let reporter = events::Reporter {
        component: EVENT_SOURCE,
        reporting_component: "pennant.dev/source",
        instance,
        group: crate::api::source::GROUP,
        field_manager: FIELD_MANAGER,
    };
    events::emit(client, repo, &note, &reporter).await;
}
