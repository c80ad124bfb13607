//! OCIRepositories: the watch and one reconcile ([`decide`] → finalizer / deletion / pull →
//! store → [`outcome`] → status → Events → GC), with the GitRepository's wiring (Flux's
//! generation-or-request predicate, Secrets named by `secretRef`/`certSecretRef` reconcile their
//! OCIRepositories, interval with jitter, backoff on failure).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::{
    Error, add_finalizer, blocking, emit_event, kept_artifact, remove_finalizer, write_status,
};
use crate::api::source::{Artifact, OCIRepository};
use crate::gitops::conditions::{self, reasons, types};
use crate::gitops::reconcile_request::requested_at;
use crate::source::git_repository::{Plan, next_interval, retry_after};
use crate::source::http::TlsConfig;
use crate::source::ignore::IgnoreRules;
use crate::source::oci::{self, OciAuth, PullRequest, Pulled, docker_config_auth};
use crate::source::oci_repository::{
    Attempt, PullPlan, artifact_file, copies, decide, outcome, reusable_revision,
};
use crate::source::storage::Storage;

/// Kind directory and Event kind.
const KIND: &str = "OCIRepository";

pub(super) struct Context {
    pub client: Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub storage: Storage,
    pub instance: String,
    failures: Mutex<HashMap<ObjectRef<OCIRepository>, u32>>,
}

/// The OCIRepository controller: its cache (for readiness) and the future that runs it until
/// `shutdown`.
pub(super) fn controller(
    ctx: Context,
    scope: &crate::runtime::Scope,
    shutdown: crate::runtime::Shutdown,
) -> (
    Store<OCIRepository>,
    impl std::future::Future<Output = ()> + Send,
) {
    let client = ctx.client.clone();
    let api: Api<OCIRepository> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (repos, writer) = reflector::store::<OCIRepository>();
    let wanted = |r: &OCIRepository| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.metadata.generation.hash(&mut h);
        requested_at(r.metadata.annotations.as_ref()).hash(&mut h);
        r.metadata.deletion_timestamp.is_some().hash(&mut h);
        Some(h.finish())
    };
    let trigger = reflector::reflector(writer, watcher(api, scope.watcher_config()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(wanted, PredicateConfig::default());
    let secret_events = watcher(secrets_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    let index = repos.clone();
    let fut = Controller::for_stream(trigger, repos.clone())
        .watches_stream(secret_events, move |s| repos_for_secret(&index, &s))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("ocirepository reconcile: {e}");
            }
        });
    (repos, fut)
}

impl Context {
    pub(super) fn new(
        client: Client,
        metrics: Arc<crate::metrics::Metrics>,
        storage: Storage,
        instance: String,
    ) -> Self {
        Context {
            client,
            metrics,
            storage,
            instance,
            failures: Mutex::default(),
        }
    }
}

/// The OCIRepositories whose `secretRef` or `certSecretRef` names this Secret.
fn repos_for_secret(
    repos: &Store<OCIRepository>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<OCIRepository>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    repos
        .state()
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter(|r| {
            [&r.spec.secret_ref, &r.spec.cert_secret_ref]
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s.name == name))
        })
        .map(|r| ObjectRef::from_obj(&**r))
        .collect()
}

fn error_policy(repo: Arc<OCIRepository>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(ObjectRef::from_obj(&*repo)).or_default();
        *n += 1;
        *n
    };
    let reason = match err {
        Error::Kube(_) => {
            warn!(ocirepository = %repo.name_any(), "reconcile failed: {err}");
            "kube"
        }
        Error::Failed(_) => "source",
    };
    ctx.metrics.reconcile_error("source", reason);
    let interval =
        crate::api::source::parse_interval(&repo.spec.interval).unwrap_or(Duration::from_secs(60));
    Action::requeue(retry_after(n, interval))
}

async fn reconcile(repo: Arc<OCIRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
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

async fn reconcile_one(repo: Arc<OCIRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let api: Api<OCIRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let mut repo = repo;
    let pull = loop {
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
                info!(ocirepository = %name, namespace = %ns, "artifacts removed, finalizer released");
                return Ok(Action::await_change());
            }
            Plan::AddFinalizer => repo = Arc::new(add_finalizer(&*repo, &api).await?),
            Plan::Stall { reason, message } => break Err(Attempt::Stalled { reason, message }),
            Plan::Fetch(p) => break Ok(p),
        }
    };
    let kept = kept_artifact(
        repo.status.as_ref().and_then(|s| s.artifact.as_ref()),
        &ctx.storage,
    )
    .await;
    let (attempt, unsupported, interval) = match pull {
        Err(stalled) => (stalled, vec![], None),
        Ok(plan) => {
            let attempt = attempt(&repo, &plan, kept.as_ref(), &ctx).await;
            (attempt, plan.unsupported.clone(), Some(plan.interval))
        }
    };
    let now = Time(Timestamp::now());
    let out = outcome(&repo, kept, attempt, &unsupported, &now);
    write_status(&*repo, repo.status.as_ref(), &out.status, &api).await?;
    for n in &out.notices {
        emit_event(&*repo, n, &ctx.client, &ctx.instance).await;
    }
    if let Some(a) = out.status.artifact.clone() {
        let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), name.clone());
        let removed = blocking(move || {
            storage
                .gc(KIND, &n, &nm, Some(a.file_name()), SystemTime::now())
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        if let Err(e) = removed {
            warn!(ocirepository = %name, "garbage collection: {e}");
        }
    }
    match out.result {
        Ok(()) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ObjectRef::from_obj(&*repo));
            let seed = Timestamp::now().subsec_nanosecond().unsigned_abs() as u64;
            Ok(Action::requeue(next_interval(
                interval.unwrap_or(Duration::from_secs(60)),
                seed,
            )))
        }
        Err(false) => Ok(Action::await_change()),
        Err(true) => Err(Error::Failed(
            conditions::get(&out.status.conditions, types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )),
    }
}

/// A Secret's `data`, or the `FetchFailed` message naming it (never its content).
async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    match secrets.get_opt(name).await {
        Ok(Some(s)) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) => Err(format!(
            "failed to get secret '{ns}/{name}': secrets \"{name}\" not found"
        )),
        Err(e) => Err(format!("failed to get secret '{ns}/{name}': {e}")),
    }
}

/// Credentials, TLS, pull, store: what [`outcome`] is told.
async fn attempt(
    repo: &OCIRepository,
    plan: &PullPlan,
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
    let url = match oci::parse_url(&repo.spec.url) {
        Ok(u) => u,
        Err(e) => {
            return Attempt::Stalled {
                reason: e.reason().into(),
                message: e.to_string(),
            };
        }
    };
    let auth = match &plan.secret {
        None => OciAuth::Anonymous,
        Some(secret) => {
            let data = match secret_data(&ctx.client, &ns, secret).await {
                Ok(d) => d,
                Err(m) => return fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m),
            };
            let Some(json) = data.get(".dockerconfigjson") else {
                return fail(
                    types::FETCH_FAILED,
                    reasons::AUTHENTICATION_FAILED,
                    format!("secret '{ns}/{secret}': no '.dockerconfigjson' key"),
                );
            };
            match docker_config_auth(json, &url.registry) {
                Ok(a) => a,
                Err(e) => {
                    return fail(
                        types::FETCH_FAILED,
                        reasons::AUTHENTICATION_FAILED,
                        format!("secret '{ns}/{secret}': {e}"),
                    );
                }
            }
        }
    };
    let tls = match &plan.cert_secret {
        None => TlsConfig::default(),
        Some(secret) => match secret_data(&ctx.client, &ns, secret).await {
            Ok(d) => TlsConfig {
                ca_pem: d.get("ca.crt").cloned(),
                cert_pem: d.get("tls.crt").cloned(),
                key_pem: d.get("tls.key").cloned(),
            },
            Err(m) => return fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m),
        },
    };
    let work = match tempfile::Builder::new().prefix("pennant-oci-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            return fail(
                types::STORAGE_OPERATION_FAILED,
                reasons::DIR_CREATION_FAILED,
                format!("failed to create temporary working directory: {e}"),
            );
        }
    };
    let dest = work
        .path()
        .join(if copies(plan) { "layer.tgz" } else { "tree" });
    let req = PullRequest {
        url: repo.spec.url.clone(),
        selector: plan.selector.clone(),
        layer: plan.layer.clone(),
        auth,
        insecure: plan.insecure,
        tls,
        timeout: plan.timeout,
        last_revision: reusable_revision(repo, kept.is_some()),
        max_layer_size: oci::DEFAULT_MAX_LAYER_SIZE,
        untar: Default::default(),
        dest: dest.clone(),
    };
    // the whole pull (several requests) is bounded too, a little above one request's timeout
    let pulled = match tokio::time::timeout(plan.timeout * 2, oci::pull(&req)).await {
        Err(_) => {
            return fail(
                types::FETCH_FAILED,
                "OCIArtifactPullFailed",
                format!(
                    "failed to pull artifact: timed out after {:?}",
                    plan.timeout * 2
                ),
            );
        }
        Ok(Err(e)) if e.is_stalling() => {
            return Attempt::Stalled {
                reason: e.reason().into(),
                message: e.to_string(),
            };
        }
        Ok(Err(e)) => return fail(types::FETCH_FAILED, e.reason(), e.to_string()),
        Ok(Ok(p)) => p,
    };
    let (revision, annotations) = match pulled {
        Pulled::Unchanged { revision } if kept.is_some() => {
            return Attempt::Unchanged { revision };
        }
        Pulled::Unchanged { revision } => {
            return fail(
                types::FETCH_FAILED,
                "OCIArtifactPullFailed",
                format!("no layer pulled for '{revision}' while no artifact is stored"),
            );
        }
        Pulled::Pulled {
            revision,
            annotations,
            ..
        } => (revision, annotations),
    };
    let file = artifact_file(&revision);
    let storage = ctx.storage.clone();
    let (spec_ignore, copy) = (repo.spec.ignore.clone(), copies(plan));
    let stored = blocking(
        move || -> Result<(super::super::storage::StoredArtifact, String), String> {
            let s = if copy {
                storage
                    .store_file(KIND, &ns, &name, &file, &dest)
                    .map_err(|e| format!("unable to copy artifact to storage: {e}"))?
            } else {
                let rules = IgnoreRules::load(&dest, spec_ignore.as_deref())
                    .map_err(|e| format!("failed to load ignore rules: {e}"))?;
                storage
                    .archive_dir(KIND, &ns, &name, &file, &dest, &rules)
                    .map_err(|e| format!("unable to archive artifact to storage: {e}"))?
            };
            // Flux's (deprecated, still made) `latest.tar.gz` link: `status.url`
            let url = storage
                .symlink(KIND, &ns, &name, &file, "latest.tar.gz")
                .map_err(|e| format!("failed to update status URL symlink: {e}"))?;
            drop(work);
            Ok((s, url))
        },
    )
    .await
    .and_then(|r| r);
    match stored {
        Ok((s, url)) => Attempt::Stored {
            artifact: Artifact {
                path: s.path,
                url: s.url,
                revision,
                digest: s.digest,
                last_update_time: Time(s.last_update_time),
                size: i64::try_from(s.size).ok(),
                metadata: Some(annotations).filter(|a| !a.is_empty()),
            },
            url,
        },
        Err(message) => fail(
            types::STORAGE_OPERATION_FAILED,
            reasons::ARCHIVE_OPERATION_FAILED,
            message,
        ),
    }
}
