//! HelmRepositories: one reconcile ([`decide`] → finalizer / deletion / index download and
//! validation → store → [`outcome`] → status → Events → GC), wired by [`super::kind`]
//! (Secrets named by `secretRef`/`certSecretRef` reconcile their HelmRepositories). A
//! `type: oci` object is static: only what an older version left on it is released.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::kind::{Ctx, Source, finish, prepare, record, remove_storage};
use super::oci::secret_data;
use super::{Error, blocking, kept_artifact, remove_finalizer};
use crate::api::source::{Artifact, FINALIZER, HelmRepository, parse_interval};
use crate::gitops::conditions::{reasons, types};
use crate::source::git_repository::Plan;
use crate::source::helm_index::{ChartRepo, HelmAuth, IndexFetched, IndexLimits, parse_index};
use crate::source::helm_repository::{
    Attempt, IndexPlan, RepoPlan, artifact_file, basic_auth, decide, outcome, tls_config,
};

impl Source for HelmRepository {
    const KIND: &'static str = "HelmRepository";
    fn interval(&self) -> Option<Duration> {
        self.spec.interval.as_deref().and_then(parse_interval)
    }
    fn secret_names(&self) -> Vec<&str> {
        [&self.spec.secret_ref, &self.spec.cert_secret_ref]
            .into_iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// One reconcile of one HelmRepository.
pub(super) async fn reconcile(
    repo: Arc<HelmRepository>,
    ctx: Arc<Ctx<HelmRepository>>,
) -> Result<Action, Error> {
    let (repo, plan) = match prepare(repo, &ctx, decide).await? {
        Ok(p) => p,
        Err(done) => return Ok(done),
    };
    let api: Api<HelmRepository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let (attempt, unsupported) = match plan {
        Plan::Fetch(RepoPlan::Static) => return make_static(&repo, &ctx, &api).await,
        Plan::Fetch(RepoPlan::Index(plan)) => {
            let kept = kept_artifact(
                repo.status.as_ref().and_then(|s| s.artifact.as_ref()),
                &ctx.storage,
            )
            .await;
            let attempt = attempt(&repo, &plan, kept.as_ref(), &ctx).await;
            ((attempt, kept), plan.unsupported)
        }
        Plan::Stall { reason, message } => ((Attempt::Stalled { reason, message }, None), vec![]),
        _ => return Ok(Action::await_change()),
    };
    let (attempt, kept) = attempt;
    let now = Time(Timestamp::now());
    let out = outcome(&repo, kept, attempt, &unsupported, &now);
    record(
        &*repo,
        &ctx,
        repo.status.as_ref(),
        &out.status,
        &out.notices,
    )
    .await?;
    let current = out
        .status
        .artifact
        .as_ref()
        .map(|a| a.file_name().to_string());
    finish(&*repo, &ctx, current, &out.status.conditions, out.result).await
}

/// `type: oci`: Flux's `migrationToStatic`: the storage directory removed, the status cleared,
/// the finalizer released; nothing at all when none of them is there.
async fn make_static(
    repo: &HelmRepository,
    ctx: &Ctx<HelmRepository>,
    api: &Api<HelmRepository>,
) -> Result<Action, Error> {
    let has_finalizer = repo.finalizers().iter().any(|f| f == FINALIZER);
    let has_status = repo
        .status
        .as_ref()
        .is_some_and(|s| *s != Default::default());
    if !has_finalizer && !has_status {
        return Ok(Action::await_change());
    }
    remove_storage::<HelmRepository>(ctx, &repo.namespace().unwrap_or_default(), &repo.name_any())
        .await?;
    if has_status {
        api.patch_status(
            &repo.name_any(),
            &super::patch_params(),
            &kube::api::Patch::Merge(&json!({ "status": null })),
        )
        .await
        .map_err(|e| Error::Kube(format!("clear status: {e}")))?;
    }
    if has_finalizer {
        let fresh = api
            .get(&repo.name_any())
            .await
            .map_err(|e| Error::Kube(format!("get: {e}")))?;
        remove_finalizer(&fresh, api).await?;
    }
    Ok(Action::await_change())
}

/// Credentials, TLS, index download and validation, store: what [`outcome`] is told.
async fn attempt(
    repo: &HelmRepository,
    plan: &IndexPlan,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmRepository>,
) -> Attempt {
    const KIND: &str = HelmRepository::KIND;
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let fail = |condition: &'static str, reason: &str, message: String| Attempt::Failed {
        condition,
        reason: reason.into(),
        message,
    };
    let (mut auth, mut tls) = (HelmAuth::None, Default::default());
    if let Some(secret) = &plan.secret {
        let data = match secret_data(&ctx.client, &ns, secret).await {
            Ok(d) => d,
            Err(m) => return fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m),
        };
        auth = match basic_auth(&data) {
            Ok(a) => a,
            Err(e) => {
                return fail(
                    types::FETCH_FAILED,
                    reasons::AUTHENTICATION_FAILED,
                    format!("secret '{ns}/{secret}': {e}"),
                );
            }
        };
        // deprecated: TLS keys in the secretRef, when there is no certSecretRef
        if plan.cert_secret.is_none() {
            tls = tls_config(&data).unwrap_or_default();
        }
    }
    if let Some(secret) = &plan.cert_secret {
        match secret_data(&ctx.client, &ns, secret).await {
            Ok(d) => tls = tls_config(&d).unwrap_or_default(),
            Err(m) => return fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m),
        }
    }
    let client = match ChartRepo::new(
        &repo.spec.url,
        auth,
        &tls,
        plan.timeout,
        plan.pass_credentials,
    ) {
        Ok(c) => c,
        Err(e) => return fail(types::FETCH_FAILED, e.reason(), e.to_string()),
    };
    let work = match tempfile::Builder::new()
        .prefix("pennant-helmrepo-")
        .tempdir()
    {
        Ok(w) => w,
        Err(e) => {
            return fail(
                types::STORAGE_OPERATION_FAILED,
                reasons::DIR_CREATION_FAILED,
                format!("failed to create temporary working directory: {e}"),
            );
        }
    };
    let dest = work.path().join("index.yaml");
    let fetched = tokio::time::timeout(
        plan.timeout + Duration::from_secs(5),
        client.fetch_index(&dest, ctx.helm_index_max_size, None),
    )
    .await;
    let revision = match fetched {
        Err(_) => {
            return fail(
                types::FETCH_FAILED,
                "IndexationFailed",
                format!(
                    "failed to fetch Helm repository index: timed out after {:?}",
                    plan.timeout
                ),
            );
        }
        Ok(Err(e)) => return fail(types::FETCH_FAILED, e.reason(), e.to_string()),
        Ok(Ok(IndexFetched::Downloaded { revision, .. })) => revision,
        // no validators were sent: a 304 cannot happen
        Ok(Ok(IndexFetched::NotModified { revision })) => revision,
    };
    // validated (parsed with bounded memory) before it is served, as Flux loads it
    let path = dest.clone();
    let limits = IndexLimits {
        max_size: ctx.helm_index_max_size,
        ..IndexLimits::default()
    };
    let parsed = blocking(move || parse_index(&path, &limits)).await;
    match parsed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return fail(types::FETCH_FAILED, e.reason(), e.to_string()),
        Err(e) => return fail(types::FETCH_FAILED, "IndexationFailed", e),
    }
    if kept.is_some_and(|a| a.revision == revision) {
        return Attempt::Unchanged { revision };
    }
    let file = artifact_file(&revision);
    let storage = ctx.storage.clone();
    let stored = blocking(move || -> Result<_, String> {
        let s = storage
            .store_file(KIND, &ns, &name, &file, &dest)
            .map_err(|e| format!("unable to save artifact to storage: {e}"))?;
        let url = storage
            .symlink(KIND, &ns, &name, &file, "index.yaml")
            .map_err(|e| format!("failed to update status URL symlink: {e}"))?;
        drop(work);
        Ok((s, url))
    })
    .await
    .and_then(|r| r);
    match stored {
        Ok((s, url)) => Attempt::Stored {
            artifact: s.into_artifact(revision, None),
            url,
        },
        Err(message) => fail(
            types::STORAGE_OPERATION_FAILED,
            reasons::ARCHIVE_OPERATION_FAILED,
            message,
        ),
    }
}
