//! The source controller (`--controllers source`): GitRepositories, OCIRepositories ([`oci`]),
//! HelmRepositories ([`helm_repository`]) and HelmCharts ([`helm_chart`]) reconciled as Flux's source-controller does, their artifacts written to the [`Storage`] and served by the
//! process's HTTP server ([`Storage::routes`]).
//!
//! Wiring: the GitRepository watch passes an event on only when the generation or the
//! `reconcile.fluxcd.io/requestedAt` token changed, or the object is being deleted (Flux's
//! `GenerationChanged OR ReconcileRequested` predicate), so status writes never loop back. A
//! Secret change reconciles the GitRepositories whose `secretRef` names it (a fixed password is
//! picked up at once, not an interval later), and a new artifact reconciles the GitRepositories
//! that `include` it. Everything else is timed: the next check at
//! `spec.interval` (±5% jitter), a failure retried with backoff (5 s doubling up to 15 min,
//! Flux's `--max-retry-delay`, whatever the interval).
//!
//! Each reconcile: [`decide`] (pure) → finalizer / deletion / fetch with gix off the runtime
//! (`spawn_blocking`, bounded by `spec.timeout`) → archive into storage → [`outcome`] (pure) →
//! status (a merge patch of `/status`, only when it changed) → Events → GC.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, EventSource, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::artifact::{UntarLimits, untar_gz};
use super::git::{self, FetchRequest, Fetched};
use super::git_repository::{
    Attempt, FetchPlan, NEW_ARTIFACT, Notice, Plan, credentials, decide, next_interval, outcome,
    progressing, retry_after, reusable_revision,
};
use super::ignore::IgnoreRules;
use super::storage::{Retention, Storage};
use crate::api::source::{
    Artifact, FINALIZER, GitRepository, HelmChart, HelmRepository, OCIRepository,
};

mod generator;
mod helm_chart;
mod helm_repository;
mod kind;
mod oci;
use crate::gitops::conditions::{self, reasons, types};
use crate::gitops::reconcile_request::requested_at;

/// Kind directory and Event kind.
const KIND: &str = "GitRepository";
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

struct Context {
    client: Client,
    metrics: Arc<crate::metrics::Metrics>,
    storage: Storage,
    repos: Store<GitRepository>,
    /// Failures in a row per object, for the backoff.
    failures: Mutex<HashMap<ObjectRef<GitRepository>, u32>>,
    /// Reconciles the GitRepositories that include one with a new artifact.
    wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<GitRepository>>,
    instance: String,
    /// Interrupts the fetches in flight (a stopping process does not wait for them).
    shutdown: crate::runtime::Shutdown,
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
    let repos_api: Api<GitRepository> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (repos, writer) = reflector::store::<GitRepository>();
    // Flux's predicate: a new generation, a new reconcile request, or a deletion.
    let wanted = |r: &GitRepository| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.metadata.generation.hash(&mut h);
        requested_at(r.metadata.annotations.as_ref()).hash(&mut h);
        r.metadata.deletion_timestamp.is_some().hash(&mut h);
        Some(h.finish())
    };
    // Synced at the GitRepositories' first complete list (the other kinds' watches list at the
    // same time; not awaited one by one). (Not `repos.wait_until_ready()` in a task: the
    // Controller waits on the same store, and kube wakes only one of the waiters.)
    let first_list = std::sync::Once::new();
    let trigger = reflector::reflector(writer, watcher(repos_api, scope.watcher_config()))
        .default_backoff()
        .inspect_ok(move |e| {
            if matches!(e, watcher::Event::InitDone) {
                first_list.call_once(|| {
                    process.synced();
                    info!("source controller: caches synced");
                });
            }
        })
        .applied_objects()
        .predicate_filter(wanted, PredicateConfig::default());
    let secret_events = watcher(secrets_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client,
        metrics,
        storage,
        repos: repos.clone(),
        failures: Mutex::default(),
        wake,
        shutdown: shutdown.clone(),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into()),
    });
    let (oci_repos, oci_watch) = kind::watch::<OCIRepository>(&ctx.client, &scope);
    let oci_controller = kind::run(
        oci_watch,
        shutdown.clone(),
        Arc::new(kind::Ctx::new(
            ctx.client.clone(),
            ctx.metrics.clone(),
            ctx.storage.clone(),
            ctx.instance.clone(),
        )),
        oci::reconcile,
    );
    let (helm_repos, helm_watch) = kind::watch::<HelmRepository>(&ctx.client, &scope);
    let helm_repo_controller = kind::run(
        helm_watch,
        shutdown.clone(),
        Arc::new(kind::Ctx::new(
            ctx.client.clone(),
            ctx.metrics.clone(),
            ctx.storage.clone(),
            ctx.instance.clone(),
        )),
        helm_repository::reconcile,
    );
    let (charts, chart_watch) = kind::watch::<HelmChart>(&ctx.client, &scope);
    let mut chart_ctx = kind::Ctx::new(
        ctx.client.clone(),
        ctx.metrics.clone(),
        ctx.storage.clone(),
        ctx.instance.clone(),
    );
    chart_ctx.sources = kind::Sources {
        helm_repos: Some(helm_repos.clone()),
        git_repos: Some(repos.clone()),
        oci_repos: Some(oci_repos),
        // a few index revisions: every chart of a repository shares one parse
        indexes: Some(Arc::new(super::helm_index::IndexCache::new(16))),
    };
    // a source's change (a new artifact, Ready) reconciles the HelmCharts using it
    let (by_helm, by_git, by_oci) = (charts.clone(), charts.clone(), charts.clone());
    let chart_watch = chart_watch
        .watches(
            scoped_api::<HelmRepository>(&ctx.client, &scope),
            watcher::Config::default().any_semantic(),
            move |r| {
                helm_chart::charts_of(&by_helm, "HelmRepository", r.namespace(), &r.name_any())
            },
        )
        .watches(
            scoped_api::<GitRepository>(&ctx.client, &scope),
            watcher::Config::default().any_semantic(),
            move |r| helm_chart::charts_of(&by_git, "GitRepository", r.namespace(), &r.name_any()),
        )
        .watches(
            scoped_api::<OCIRepository>(&ctx.client, &scope),
            watcher::Config::default().any_semantic(),
            move |r| helm_chart::charts_of(&by_oci, "OCIRepository", r.namespace(), &r.name_any()),
        );
    let chart_controller = kind::run(
        chart_watch,
        shutdown.clone(),
        Arc::new(chart_ctx),
        helm_chart::reconcile,
    );
    // ArtifactGenerators (source-watcher): ExternalArtifacts composed from the sources above
    let generator_controller = generator::controller(
        kind::Ctx::new(
            ctx.client.clone(),
            ctx.metrics.clone(),
            ctx.storage.clone(),
            ctx.instance.clone(),
        ),
        &scope,
        shutdown.clone(),
    );
    let index = repos.clone();
    let git_controller = Controller::for_stream(trigger, repos)
        .watches_stream(secret_events, move |s| repos_for_secret(&index, &s))
        .reconcile_on(futures::stream::unfold(woken, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        }))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("source reconcile: {e}");
            }
        });
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

/// The GitRepositories whose `secretRef` names this Secret.
fn repos_for_secret(
    repos: &Store<GitRepository>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<GitRepository>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    repos
        .state()
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter(|r| r.spec.secret_ref.as_ref().is_some_and(|s| s.name == name))
        .map(|r| ObjectRef::from_obj(&**r))
        .collect()
}

fn error_policy(repo: Arc<GitRepository>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*repo);
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key).or_default();
        *n += 1;
        *n
    };
    let reason = match err {
        Error::Kube(_) => {
            warn!(gitrepository = %repo.name_any(), "reconcile failed: {err}");
            "kube"
        }
        Error::Failed(_) => "source",
    };
    ctx.metrics.reconcile_error("source", reason);
    let interval =
        crate::api::source::parse_interval(&repo.spec.interval).unwrap_or(Duration::from_secs(60));
    Action::requeue(retry_after(n, interval))
}

/// Sets the flag when dropped: a fetch stops once its reconcile stopped waiting for it.
struct InterruptOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `f` on tokio's blocking pool; a panic in it is an error of this object, not of the process.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

/// [`reconcile_one`], a panic contained to the object (as the Canary controller does).
async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    use futures::FutureExt;
    let name = repo.name_any();
    std::panic::AssertUnwindSafe(reconcile_one(repo, ctx))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(Error::Kube(format!(
                "reconcile of {name} panicked (see the log)"
            )))
        })
}

/// One reconcile of one GitRepository.
async fn reconcile_one(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let mut repo = repo;
    let fetch = loop {
        match decide(&repo) {
            Plan::Nothing | Plan::Suspended => return Ok(Action::await_change()),
            Plan::Finalize => {
                let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), name.clone());
                blocking(move || storage.remove_all(KIND, &n, &nm).map_err(|e| e.to_string()))
                    .await
                    .and_then(|r| r)
                    .map_err(|e| Error::Kube(format!("removing the artifacts: {e}")))?;
                remove_finalizer(&*repo, &api).await?;
                ctx.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ObjectRef::from_obj(&*repo));
                info!(gitrepository = %name, namespace = %ns, "artifacts removed, finalizer released");
                return Ok(Action::await_change());
            }
            // the finalizer first; then go on with the object as patched (the watch filters
            // metadata changes out, and the cache may lag)
            Plan::AddFinalizer => repo = Arc::new(add_finalizer(&*repo, &api).await?),
            Plan::Stall { reason, message } => break Err(Attempt::Stalled { reason, message }),
            Plan::Fetch(f) => break Ok(f),
        }
    };
    let kept = kept_artifact(
        repo.status.as_ref().and_then(|s| s.artifact.as_ref()),
        &ctx.storage,
    )
    .await;
    let (attempt, unsupported, interval) = match fetch {
        Err(stalled) => (stalled, vec![], None),
        Ok(plan) => {
            // Flux's "processing object" write, before a fetch of a new generation or request
            if let Some(st) = progressing(&repo, &Time(Timestamp::now())) {
                write_status(&*repo, repo.status.as_ref(), &st, &api).await?;
                let mut r = (*repo).clone();
                r.status = Some(st);
                repo = Arc::new(r);
            }
            let attempt = attempt(&repo, &plan, kept.as_ref(), &ctx).await;
            // deleted while fetching: no status or NewArtifact for it; the deletion's own
            // reconcile (queued meanwhile) removes the storage, this artifact included
            if matches!(attempt, Attempt::Stored { .. })
                && api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err("get"))?
                    .is_none_or(|r| r.metadata.deletion_timestamp.is_some())
            {
                info!(gitrepository = %name, namespace = %ns, "deleted while fetching: nothing recorded");
                return Ok(Action::await_change());
            }
            (attempt, plan.unsupported.clone(), Some(plan.interval))
        }
    };
    let now = Time(Timestamp::now());
    let out = outcome(&repo, kept, attempt, &unsupported, &now);
    write_status(&*repo, repo.status.as_ref(), &out.status, &api).await?;
    for n in &out.notices {
        emit_event(&*repo, n, &ctx.client, &ctx.instance).await;
    }
    // a new artifact: the GitRepositories including this one copy it now, not an interval later
    if out.notices.iter().any(|n| n.reason == NEW_ARTIFACT) {
        for r in ctx.repos.state() {
            if r.namespace().as_deref() == Some(ns.as_str())
                && r.spec.include.iter().any(|i| i.repository.name == name)
            {
                let _ = ctx.wake.send(ObjectRef::from_obj(&*r));
            }
        }
    }
    // GC: the current artifact and the retention's records are kept.
    if let Some(a) = out.status.artifact.clone() {
        let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), name.clone());
        let removed = blocking(move || {
            storage
                .gc(KIND, &n, &nm, Some(a.file_name()), SystemTime::now())
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        match removed {
            Ok(r) if !r.is_empty() => {
                tracing::debug!(gitrepository = %name, removed = r.len(), "garbage collected")
            }
            Ok(_) => {}
            Err(e) => warn!(gitrepository = %name, "garbage collection: {e}"),
        }
    }
    let key = ObjectRef::from_obj(&*repo);
    match out.result {
        Ok(()) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            let seed = Timestamp::now().subsec_nanosecond().unsigned_abs() as u64;
            Ok(Action::requeue(next_interval(
                interval.unwrap_or(Duration::from_secs(60)),
                seed,
            )))
        }
        // Stalled: only a change of the object helps.
        Err(false) => Ok(Action::await_change()),
        Err(true) => Err(Error::Failed(
            conditions::get(&out.status.conditions, types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )),
    }
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

/// Includes, credentials, fetch, archive: what [`outcome`] is told.
async fn attempt(
    repo: &GitRepository,
    plan: &FetchPlan,
    kept: Option<&Artifact>,
    ctx: &Context,
) -> Attempt {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let fail = |condition: &'static str, reason: &str, message: String| Attempt::Failed {
        condition,
        reason: reason.into(),
        message,
    };
    // included GitRepositories: ready, with an artifact
    let mut included = vec![];
    for inc in &repo.spec.include {
        let r = ctx
            .repos
            .get(&ObjectRef::new(&inc.repository.name).within(&ns));
        let artifact = r.as_ref().and_then(|r| {
            let ready = r
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, types::READY));
            r.status.as_ref()?.artifact.clone().filter(|_| ready)
        });
        match artifact {
            Some(a) => included.push(a),
            None => {
                return fail(
                    types::INCLUDE_UNAVAILABLE,
                    "NotFound",
                    format!(
                        "could not get artifact of include '{}': {}",
                        inc.repository.name,
                        if r.is_some() {
                            "the GitRepository is not ready"
                        } else {
                            "no such GitRepository"
                        }
                    ),
                );
            }
        }
    }
    // credentials
    let (auth, ca_pem) = match &plan.secret {
        None => (git::GitAuth::None, None),
        Some(secret) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            match secrets.get_opt(secret).await {
                Ok(Some(s)) => {
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    match credentials(&data) {
                        Ok(c) => c,
                        Err(e) => {
                            return fail(
                                types::FETCH_FAILED,
                                reasons::AUTHENTICATION_FAILED,
                                format!("secret '{ns}/{secret}': {e}"),
                            );
                        }
                    }
                }
                Ok(None) => {
                    return fail(
                        types::FETCH_FAILED,
                        reasons::AUTHENTICATION_FAILED,
                        format!(
                            "failed to get secret '{ns}/{secret}': secrets \"{secret}\" not found"
                        ),
                    );
                }
                Err(e) => {
                    return fail(
                        types::FETCH_FAILED,
                        reasons::AUTHENTICATION_FAILED,
                        format!("failed to get secret '{ns}/{secret}': {e}"),
                    );
                }
            }
        }
    };
    let artifact_ok = kept.is_some();
    let last_revision = reusable_revision(repo, artifact_ok, &included);
    let work = match tempfile::Builder::new().prefix("pennant-git-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            return fail(
                types::STORAGE_OPERATION_FAILED,
                reasons::DIR_CREATION_FAILED,
                format!("failed to create temporary working directory: {e}"),
            );
        }
    };
    let dest = work.path().join("tree");
    let req = FetchRequest {
        url: repo.spec.url.clone(),
        reference: plan.reference.clone(),
        auth,
        ca_pem,
        timeout: plan.timeout,
        last_revision,
        dest: dest.clone(),
        interrupt: Default::default(),
    };
    // The blocking task owns the working directory: it is removed when the fetch ends, even
    // after this reconcile stopped waiting. The fetch bounds itself by `spec.timeout`; the
    // interrupt stops it when this future is dropped or the grace below runs out.
    let interrupt = InterruptOnDrop(req.interrupt.clone());
    let fetched = tokio::select! {
        r = tokio::time::timeout(
            plan.timeout + Duration::from_secs(5),
            tokio::task::spawn_blocking(move || (git::fetch(&req), work)),
        ) => r,
        () = ctx.shutdown.signalled() => {
            return fail(
                types::FETCH_FAILED,
                reasons::GIT_OPERATION_FAILED,
                "fetch interrupted: the controller is stopping".into(),
            );
        }
    };
    drop(interrupt);
    let (fetched, work) = match fetched {
        Err(_) => {
            return fail(
                types::FETCH_FAILED,
                reasons::GIT_OPERATION_FAILED,
                format!(
                    "failed to checkout and determine revision: timeout of {:?} (spec.timeout) reached",
                    plan.timeout
                ),
            );
        }
        Ok(Err(e)) => {
            return fail(
                types::FETCH_FAILED,
                reasons::GIT_OPERATION_FAILED,
                format!("fetch task failed: {e}"),
            );
        }
        Ok(Ok((fetched, work))) => (fetched, work),
    };
    let fetched = match fetched {
        Err(e) => {
            let message = match &e {
                git::GitError::AuthenticationFailed(_) | git::GitError::UrlInvalid(_) => {
                    e.to_string()
                }
                _ => format!("failed to checkout and determine revision: {e}"),
            };
            return fail(types::FETCH_FAILED, e.reason(), message);
        }
        Ok(f) => f,
    };
    let (revision, commit_sha, commit_message) = match fetched {
        Fetched::Unchanged { revision } if kept.is_some() => {
            return Attempt::Unchanged { revision };
        }
        Fetched::Unchanged { revision } => {
            return fail(
                types::FETCH_FAILED,
                reasons::GIT_OPERATION_FAILED,
                format!("no tree fetched for '{revision}' while no artifact is stored"),
            );
        }
        Fetched::Checked {
            revision,
            commit_sha,
            commit_message,
        } => (revision, commit_sha, commit_message),
    };
    // includes, ignore rules, archive: blocking file work
    let storage = ctx.storage.clone();
    let spec_ignore = repo.spec.ignore.clone();
    let includes: Vec<(PathBuf, String, String)> = repo
        .spec
        .include
        .iter()
        .zip(&included)
        .filter_map(|(inc, a)| {
            Some((
                storage.local_path(&a.path)?,
                inc.from_path().to_string(),
                inc.to_path().to_string(),
            ))
        })
        .collect();
    let file = format!("{commit_sha}.tar.gz");
    let (n, nm) = (ns.clone(), name.clone());
    let stored = blocking(move || -> Result<super::storage::StoredArtifact, String> {
        for (archive, from, to) in &includes {
            copy_include(archive, from, to, &dest, work.path())?;
        }
        let rules = IgnoreRules::load(&dest, spec_ignore.as_deref())
            .map_err(|e| format!("failed to load ignore rules: {e}"))?;
        storage
            .archive_dir(KIND, &n, &nm, &file, &dest, &rules)
            .map_err(|e| format!("unable to archive artifact to storage: {e}"))
    })
    .await
    .and_then(|r| r);
    match stored {
        Ok(s) => Attempt::Stored {
            artifact: Artifact {
                path: s.path,
                url: s.url,
                revision,
                digest: s.digest,
                last_update_time: Time(s.last_update_time),
                size: i64::try_from(s.size).ok(),
                metadata: None,
            },
            commit_message,
            included,
        },
        Err(message) => fail(
            types::STORAGE_OPERATION_FAILED,
            reasons::ARCHIVE_OPERATION_FAILED,
            message,
        ),
    }
}

/// Copies `from` (a path inside the included artifact `archive`) to `to` inside `dest`, as
/// Flux's `reconcileInclude`: the artifact is extracted (hostile-archive safe) into a scratch
/// directory under `work`, then the sub-tree copied; `to` replaces what the checkout had there.
fn copy_include(
    archive: &Path,
    from: &str,
    to: &str,
    dest: &Path,
    work: &Path,
) -> Result<(), String> {
    let clean = |p: &str| -> Result<PathBuf, String> {
        let mut out = PathBuf::new();
        for c in Path::new(p).components() {
            match c {
                std::path::Component::Normal(s) => out.push(s),
                std::path::Component::CurDir | std::path::Component::RootDir => {}
                _ => return Err(format!("include path '{p}' leaves the artifact")),
            }
        }
        Ok(out)
    };
    let (from_rel, to_rel) = (clean(from)?, clean(to)?);
    let scratch = tempfile::Builder::new()
        .prefix("include-")
        .tempdir_in(work)
        .map_err(|e| format!("failed to create include directory: {e}"))?;
    let f = std::fs::File::open(archive)
        .map_err(|e| format!("failed to open included artifact: {e}"))?;
    untar_gz(f, scratch.path(), &UntarLimits::default())
        .map_err(|e| format!("failed to extract included artifact: {e}"))?;
    let src = scratch.path().join(&from_rel);
    if !src.is_dir() {
        return Err(format!(
            "include fromPath '{from}' is not a directory of the artifact"
        ));
    }
    let target = dest.join(&to_rel);
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .or_else(|_| std::fs::remove_file(&target))
            .map_err(|e| format!("failed to replace '{to}': {e}"))?;
    }
    copy_dir(&src, &target).map_err(|e| format!("failed to copy include to '{to}': {e}"))
}

/// Recursive copy of regular files and directories (the extraction made no links).
fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
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
    let old = old.unwrap_or(&default);
    if status == old {
        return Ok(());
    }
    let new_v = serde_json::to_value(status).map_err(|e| Error::Kube(e.to_string()))?;
    let mut st = new_v.as_object().cloned().unwrap_or_default();
    if let Value::Object(old_v) = serde_json::to_value(old).unwrap_or_default() {
        for k in old_v.keys() {
            st.entry(k.clone()).or_insert(Value::Null);
        }
    }
    api.patch_status(
        &repo.name_any(),
        &patch_params(),
        &Patch::Merge(&json!({ "status": st })),
    )
    .await
    .map_err(kube_err("patch status"))?;
    Ok(())
}

/// A core/v1 Event on the source object, as Flux's recorder writes them (reason, type,
/// `source.component: source-controller`, annotations `source.toolkit.fluxcd.io/<key>`), also
/// logged. Messages carry no secrets (the fetch redacts them).
async fn emit_event<K: Kind>(repo: &K, n: &Notice, client: &Client, instance: &str) {
    let name = repo.name_any();
    let kind = K::kind(&());
    if n.warning {
        warn!(kind = %kind, name = %name, reason = %n.reason, "{}", n.message);
    } else {
        info!(kind = %kind, name = %name, reason = %n.reason, "{}", n.message);
    }
    let now = Timestamp::now();
    let note = crate::api::condition::truncate_message(
        &n.message,
        crate::api::condition::MESSAGE_MAX_BYTES,
    );
    let annotations: BTreeMap<String, String> = n
        .annotations
        .iter()
        .map(|(k, v)| (format!("{}/{k}", crate::api::source::GROUP), v.clone()))
        .collect();
    let ev = Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: repo.namespace(),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            ..Default::default()
        },
        involved_object: repo.object_ref(&()),
        type_: Some(if n.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(n.reason.clone()),
        message: Some(note.into_owned()),
        source: Some(EventSource {
            component: Some(EVENT_SOURCE.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".into()),
        reporting_component: Some("pennant.dev/source".into()),
        reporting_instance: Some(instance.to_string()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &repo.namespace().unwrap_or_default());
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&pp, &ev).await {
        warn!("event: {e}");
    }
}
