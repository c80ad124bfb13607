//! OCIRepositories: one reconcile ([`decide`] → finalizer / deletion / pull → store →
//! [`outcome`] → status → Events → GC), wired by [`super::kind`] (Secrets named by
//! `secretRef`/`certSecretRef` reconcile their OCIRepositories).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use super::kind::{Ctx, Source, finish, prepare, record};
use super::{Error, blocking, kept_artifact};
use crate::api::source::{Artifact, OCIRepository, parse_interval};
use crate::gitops::conditions::{reasons, types};
use crate::source::git_repository::Plan;
use crate::source::http::TlsConfig;
use crate::source::ignore::IgnoreRules;
use crate::source::oci::{self, OciAuth, PullRequest, Pulled, docker_config_auth};
use crate::source::oci_repository::{
    Attempt, PullPlan, artifact_file, copies, decide, outcome, reusable_revision,
};

impl Source for OCIRepository {
    const KIND: &'static str = "OCIRepository";
    fn interval(&self) -> Option<Duration> {
        parse_interval(&self.spec.interval)
    }
    fn secret_names(&self) -> Vec<&str> {
        [&self.spec.secret_ref, &self.spec.cert_secret_ref]
            .into_iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// One reconcile of one OCIRepository.
pub(super) async fn reconcile(
    repo: Arc<OCIRepository>,
    ctx: Arc<Ctx<OCIRepository>>,
) -> Result<Action, Error> {
    let (repo, plan) = match prepare(repo, &ctx, decide).await? {
        Ok(p) => p,
        Err(done) => return Ok(done),
    };
    let kept = kept_artifact(
        repo.status.as_ref().and_then(|s| s.artifact.as_ref()),
        &ctx.storage,
    )
    .await;
    let (attempt, unsupported) = match plan {
        Plan::Fetch(plan) => (
            attempt(&repo, &plan, kept.as_ref(), &ctx).await,
            plan.unsupported,
        ),
        Plan::Stall { reason, message } => (Attempt::Stalled { reason, message }, vec![]),
        _ => return Ok(Action::await_change()),
    };
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

/// A Secret's `data`, or the `FetchFailed` message naming it (never its content).
pub(super) async fn secret_data(
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
    ctx: &Ctx<OCIRepository>,
) -> Attempt {
    const KIND: &str = OCIRepository::KIND;
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
            artifact: s.into_artifact(revision, Some(annotations).filter(|a| !a.is_empty())),
            url,
        },
        Err(message) => fail(
            types::STORAGE_OPERATION_FAILED,
            reasons::ARCHIVE_OPERATION_FAILED,
            message,
        ),
    }
}
