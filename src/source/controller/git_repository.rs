//! GitRepositories: one reconcile ([`decide`] → finalizer / deletion / fetch with gix off the
//! runtime (`spawn_blocking`, bounded by `spec.timeout`) → includes → archive into storage →
//! [`outcome`] → status → Events → GC), wired by [`super::kind`]: a Secret named by
//! `secretRef` reconciles its GitRepositories, and a new artifact reconciles the GitRepositories
//! that `include` it at once (through [`Ctx::wake`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::info;

use super::kind::{Ctx, Source, finish, prepare, record};
use super::oci::secret_data;
use super::{Error, blocking, kept_artifact, kube_err, write_status};
use crate::api::source::{Artifact, GitRepository, parse_interval};
use crate::gitops::conditions::{self, reasons, types};
use crate::source::artifact::{UntarLimits, untar_gz};
use crate::source::git::{self, FetchRequest, Fetched};
use crate::source::git_repository::{
    Attempt, FetchPlan, NEW_ARTIFACT, Plan, credentials, decide, outcome, progressing,
    reusable_revision,
};
use crate::source::ignore::IgnoreRules;

impl Source for GitRepository {
    const KIND: &'static str = "GitRepository";
    fn interval(&self) -> Option<Duration> {
        parse_interval(&self.spec.interval)
    }
    fn secret_names(&self) -> Vec<&str> {
        self.spec
            .secret_ref
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// Completes when the process stops (never without a shutdown).
async fn stopping(shutdown: Option<&crate::runtime::Shutdown>) {
    match shutdown {
        Some(s) => s.signalled().await,
        None => std::future::pending().await,
    }
}

/// One reconcile of one GitRepository.
pub(super) async fn reconcile(
    repo: Arc<GitRepository>,
    ctx: Arc<Ctx<GitRepository>>,
) -> Result<Action, Error> {
    let (mut repo, plan) = match prepare(repo, &ctx, decide).await? {
        Ok(p) => p,
        Err(done) => return Ok(done),
    };
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let kept = kept_artifact(
        repo.status.as_ref().and_then(|s| s.artifact.as_ref()),
        &ctx.storage,
    )
    .await;
    let (attempt, unsupported) = match plan {
        Plan::Fetch(plan) => {
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
            (attempt, plan.unsupported)
        }
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
    // a new artifact: the GitRepositories including this one copy it now, not an interval later
    if out.notices.iter().any(|n| n.reason == NEW_ARTIFACT)
        && let (Some(wake), Some(repos)) = (&ctx.wake, &ctx.sources.git_repos)
    {
        for r in repos.state() {
            if r.namespace().as_deref() == Some(ns.as_str())
                && r.spec.include.iter().any(|i| i.repository.name == name)
            {
                let _ = wake.send(ObjectRef::from_obj(&*r));
            }
        }
    }
    let current = out
        .status
        .artifact
        .as_ref()
        .map(|a| a.file_name().to_string());
    finish(&*repo, &ctx, current, &out.status.conditions, out.result).await
}

/// Includes, credentials, fetch, archive: what [`outcome`] is told.
async fn attempt(
    repo: &GitRepository,
    plan: &FetchPlan,
    kept: Option<&Artifact>,
    ctx: &Ctx<GitRepository>,
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
            .sources
            .git_repos
            .as_ref()
            .and_then(|repos| repos.get(&ObjectRef::new(&inc.repository.name).within(&ns)));
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
            let data = match secret_data(&ctx.client, &ns, secret).await {
                Ok(d) => d,
                Err(m) => return fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m),
            };
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
        recurse_submodules: plan.recurse_submodules,
        sparse_checkout: plan.sparse_checkout.clone(),
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
        () = stopping(ctx.shutdown.as_ref()) => {
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
                git::GitError::AuthenticationFailed(_)
                | git::GitError::UrlInvalid(_)
                | git::GitError::SparseCheckout(_) => e.to_string(),
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
    let stored = blocking(
        move || -> Result<crate::source::storage::StoredArtifact, String> {
            for (archive, from, to) in &includes {
                copy_include(archive, from, to, &dest, work.path())?;
            }
            let rules = IgnoreRules::load(&dest, spec_ignore.as_deref())
                .map_err(|e| format!("failed to load ignore rules: {e}"))?;
            storage
                .archive_dir(GitRepository::KIND, &n, &nm, &file, &dest, &rules)
                .map_err(|e| format!("unable to archive artifact to storage: {e}"))
        },
    )
    .await
    .and_then(|r| r);
    match stored {
        Ok(s) => Attempt::Stored {
            artifact: s.into_artifact(revision, None),
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

/// Sets the flag when dropped: a fetch stops once its reconcile stopped waiting for it.
struct InterruptOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
