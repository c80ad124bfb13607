//! The GitRepository reconciler's decisions, PURE (`now` passed in): what to do with an object
//! ([`decide`]), the credentials a `secretRef` Secret gives ([`credentials`]), and the status,
//! Events and requeue after an attempt ([`outcome`]). The I/O around them is in
//! [`super::controller`].
//!
//! Same flow as Flux's source-controller `GitRepositoryReconciler` (flux.md §1.2): finalizer
//! first; deletion removes the storage directory then the finalizer; `suspend` does nothing; the
//! stored artifact is checked (present, digest verifies) before anything else; the fetch is
//! skipped ("optimised clone") only when the artifact is good and was built from the same
//! `ignore`/`include`/`recurseSubmodules`/`sparseCheckout` configuration and included
//! artifacts; a failure keeps
//! the last good artifact served (`ArtifactInStorage` stays True, `Ready=False`). Differences,
//! on purpose:
//! - status flow as Flux's: before a fetch of a new generation or a requested reconcile,
//!   [`progressing`] gives `Reconciling=True Progressing` (written once, only when it changes
//!   the status); a failure keeps the old `observedGeneration` and leaves
//!   `Reconciling=True ProgressingWithRetry` with `Ready=False` carrying the failure (kstatus:
//!   InProgress); a stall sets `observedGeneration` and has no `Reconciling`;
//! - fields pennant accepts but does not act on (`proxySecretRef`, `serviceAccountName`,
//!   overridden `ref` fields) give `Unsupported=True` and a Warning Event;
//!   `verify` and a `provider` other than `generic` stall the object (serving an unverified or
//!   unauthenticated artifact in their place would be worse than none).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::source::{
    Artifact, Condition, FINALIZER, GitCheckout, GitRepository, GitRepositoryRef,
    GitRepositoryStatus, parse_interval, parse_timeout,
};
use crate::gitops::conditions::{
    self, GIT_REPOSITORY_READY, mark_true, reasons, remove_condition, summarize, types,
};
use crate::gitops::reconcile_request::requested_at;
use crate::source::git::{GitAuth, GitRef};

/// Condition type of the fields accepted but not acted on (pennant's, as on Canaries).
pub const UNSUPPORTED: &str = "Unsupported";
/// Its reason.
pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";
/// Event reason of a new artifact (Flux's).
pub const NEW_ARTIFACT: &str = "NewArtifact";
/// Stalled reason of a spec pennant cannot act on at all.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// What to do with a source object, from the object alone (`F`: the kind's fetch, a
/// [`FetchPlan`] for a GitRepository).
#[derive(Clone, Debug, PartialEq)]
pub enum Plan<F = FetchPlan> {
    /// Being deleted: remove its storage directory, then the finalizer.
    Finalize,
    /// Deleted and nothing of ours is left on it.
    Nothing,
    /// Add `finalizers.fluxcd.io` first (and come back).
    AddFinalizer,
    /// `spec.suspend`: nothing is fetched and the status is left alone.
    Suspended,
    /// Fetching cannot help until the spec changes: `Stalled=True`.
    Stall { reason: String, message: String },
    /// Fetch (and store when the commit or configuration changed).
    Fetch(F),
}

/// The steps every source kind takes first, in Flux's order: a deleted object is finalized (or
/// left alone once the finalizer is gone), the finalizer is added, `spec.suspend` stops.
/// `None`: go on with the kind's own checks.
pub fn lifecycle<F>(meta: &kube::api::ObjectMeta, suspend: Option<bool>) -> Option<Plan<F>> {
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
    if meta.deletion_timestamp.is_some() {
        return Some(if has_finalizer {
            Plan::Finalize
        } else {
            Plan::Nothing
        });
    }
    if !has_finalizer {
        return Some(Plan::AddFinalizer);
    }
    suspend.unwrap_or(false).then_some(Plan::Suspended)
}

/// A fetch to run.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchPlan {
    pub reference: GitRef,
    /// `spec.timeout` (default 60 s).
    pub timeout: Duration,
    /// `spec.interval`.
    pub interval: Duration,
    /// `spec.secretRef.name`.
    pub secret: Option<String>,
    /// `spec.recurseSubmodules`.
    pub recurse_submodules: bool,
    /// `spec.sparseCheckout` (empty: the whole tree).
    pub sparse_checkout: Vec<String>,
    /// Accepted but not acted on, e.g. `spec.proxySecretRef`.
    pub unsupported: Vec<String>,
}

/// The GitRepository's decision from the object alone: see [`Plan`] (Flux's order: deletion,
/// finalizer, suspend, then a spec that cannot be acted on stalls).
pub fn decide(repo: &GitRepository) -> Plan {
    let spec = &repo.spec;
    if let Some(p) = lifecycle(&repo.metadata, spec.suspend) {
        return p;
    }
    let stall = |message: String| Plan::Stall {
        reason: INVALID_SPEC.into(),
        message,
    };
    let Some(interval) = parse_interval(&spec.interval) else {
        return stall(format!("invalid spec.interval '{}'", spec.interval));
    };
    let Some(timeout) = parse_timeout(spec.timeout.as_deref()) else {
        return stall(format!(
            "invalid spec.timeout '{}'",
            spec.timeout.as_deref().unwrap_or_default()
        ));
    };
    let resolved = match GitRepositoryRef::checkout(spec.reference.as_ref()) {
        Ok(r) => r,
        Err(e) => return stall(e.to_string()),
    };
    if let Some(p) = spec.provider.as_deref().filter(|p| *p != "generic") {
        return stall(format!(
            "spec.provider '{p}' is not supported by pennant yet: use 'generic' with a secretRef"
        ));
    }
    if spec.verify.is_some() {
        return stall(
            "spec.verify is not supported by pennant yet: signature verification cannot be \
             done, so no artifact is served"
                .into(),
        );
    }
    let reference = match resolved.checkout {
        GitCheckout::Commit { commit, branch } => GitRef::Commit {
            sha: commit,
            branch,
        },
        GitCheckout::Name(n) => GitRef::Name(n),
        GitCheckout::Semver(s) => GitRef::Semver(s),
        GitCheckout::Tag(t) => GitRef::Tag(t),
        GitCheckout::Branch(b) => GitRef::Branch(b),
    };
    let mut unsupported: Vec<String> = resolved
        .ignored
        .iter()
        .map(|f| format!("spec.{f} (overridden by a ref field of higher precedence)"))
        .collect();
    if spec.proxy_secret_ref.is_some() {
        unsupported.push("spec.proxySecretRef (no proxy is used)".into());
    }
    if spec.service_account_name.is_some() {
        unsupported.push("spec.serviceAccountName".into());
    }
    Plan::Fetch(FetchPlan {
        reference,
        timeout,
        interval,
        secret: spec.secret_ref.as_ref().map(|r| r.name.clone()),
        recurse_submodules: spec.recurse_submodules.unwrap_or(false),
        sparse_checkout: spec.sparse_checkout.clone(),
        unsupported,
    })
}

/// The revision to pass to the fetch as the last one (no download when the remote still points
/// at its commit): the stored artifact's, when its file verified (`artifact_ok`), it was built
/// from the current `ignore`, `include`, `recurseSubmodules` and `sparseCheckout` (Flux's
/// `gitContentConfigChanged`), and the included artifacts are
/// the ones it was built with (`included`, in `spec.include` order). `None`: fetch the tree.
pub fn reusable_revision(
    repo: &GitRepository,
    artifact_ok: bool,
    included: &[Artifact],
) -> Option<String> {
    let status = repo.status.as_ref()?;
    let artifact = status.artifact.as_ref().filter(|_| artifact_ok)?;
    let spec = &repo.spec;
    let same_config = status.observed_ignore == spec.ignore
        && status.observed_include == spec.include
        && status.observed_recurse_submodules.unwrap_or(false)
            == spec.recurse_submodules.unwrap_or(false)
        && status.observed_sparse_checkout == spec.sparse_checkout
        && status.included_artifacts.len() == included.len()
        && status
            .included_artifacts
            .iter()
            .zip(included)
            .all(|(a, b)| a.same_content(b));
    same_config.then(|| artifact.revision.clone())
}

/// Credentials from a `secretRef` Secret's `data` (Flux's keys): `username` + `password` (basic
/// auth) or `bearerToken`, `identity` + `known_hosts` (+ `password` of the key) for ssh, and
/// `ca.crt` (or the legacy `caFile`) as extra trusted roots for https.
///
/// Errors (messages name keys, never values): basic auth and a bearer token together (as
/// Flux), a `username` without `password` or the reverse, `identity` without `known_hosts`.
pub fn credentials(data: &BTreeMap<String, Vec<u8>>) -> Result<(GitAuth, Option<Vec<u8>>), String> {
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let ca = data.get("ca.crt").or_else(|| data.get("caFile")).cloned();
    let basic = (text("username"), text("password"));
    let bearer = text("bearerToken");
    let auth = if let Some(identity) = data.get("identity") {
        let Some(known_hosts) = data.get("known_hosts") else {
            return Err("invalid secret: 'identity' is set but 'known_hosts' is missing".into());
        };
        GitAuth::Ssh {
            identity: identity.clone(),
            known_hosts: known_hosts.clone(),
            password: basic.1,
        }
    } else {
        match (basic, bearer) {
            ((Some(_), _), Some(_)) => {
                return Err("invalid secret: basic auth ('username', 'password') and \
                            'bearerToken' are both set; set one"
                    .into());
            }
            ((Some(username), Some(password)), None) => GitAuth::Basic { username, password },
            ((Some(_), None), None) => {
                return Err("invalid secret: 'username' is set but 'password' is missing".into());
            }
            ((None, Some(_)), None) => {
                return Err("invalid secret: 'password' is set but 'username' is missing".into());
            }
            ((None, _), Some(token)) => GitAuth::Bearer(token),
            ((None, None), None) => GitAuth::None,
        }
    };
    Ok((auth, ca))
}

/// What the attempt did (the I/O's result, fed to [`outcome`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The remote still points at the stored artifact's commit: nothing downloaded or stored.
    /// `revision` is the current revision string.
    Unchanged { revision: String },
    /// A new artifact was stored.
    Stored {
        artifact: Artifact,
        /// First line of the commit message.
        commit_message: String,
        /// The included repositories' artifacts, in `spec.include` order.
        included: Vec<Artifact>,
    },
    /// It failed: `condition` is `FetchFailed`, `StorageOperationFailed` or
    /// `IncludeUnavailable`, with Flux's reason (`AuthenticationFailed`, `GitOperationFailed`,
    /// ...) and a message without secrets.
    Failed {
        condition: &'static str,
        reason: String,
        message: String,
    },
    /// The plan was [`Plan::Stall`].
    Stalled { reason: String, message: String },
}

/// An Event to record on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// Flux's event metadata (`revision`, `digest`), without the group prefix.
    pub annotations: BTreeMap<String, String>,
}

/// The status to write, the Events to record and whether to retry with backoff (else requeue
/// at the interval): the result of every source kind's `outcome` (`S`: the kind's status).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<S = GitRepositoryStatus> {
    pub status: S,
    pub notices: Vec<Notice>,
    /// The attempt failed (retry with backoff) / stalled (wait for a change) / succeeded.
    pub result: Result<(), bool>,
}

/// Flux's message of a stored artifact.
pub fn stored_message(revision: &str) -> String {
    format!("stored artifact for revision '{revision}'")
}

/// Flux's message of a reconcile in progress: `processing object: new generation X -> Y` for a
/// generation not yet observed, else `reconciliation in progress`.
fn progress_message(repo: &GitRepository) -> String {
    let generation = repo.metadata.generation.unwrap_or(0);
    let observed = repo
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    if observed == generation {
        "reconciliation in progress".into()
    } else {
        format!("processing object: new generation {observed} -> {generation}")
    }
}

/// The status to write before fetching, as Flux does at the start of a reconcile of a new
/// generation or a requested one (`reconcile.fluxcd.io/requestedAt` not yet handled):
/// `Reconciling=True Progressing` with [`progress_message`]'s text, and `Ready=Unknown` with
/// the same when `Ready` is absent or already Unknown (Flux's `ProgressiveStatus`; a `Ready`
/// True or False is kept until the attempt ends). `None` when neither holds or nothing would
/// change, so a steady state makes no write.
pub fn progressing(repo: &GitRepository, now: &Time) -> Option<GitRepositoryStatus> {
    let old = repo.status.clone().unwrap_or_default();
    let generation = repo.metadata.generation.unwrap_or(0);
    let requested = requested_at(repo.metadata.annotations.as_ref())
        .is_some_and(|t| old.last_handled_reconcile_at.as_deref() != Some(t));
    if old.observed_generation == Some(generation) && !requested {
        return None;
    }
    let message = progress_message(repo);
    let mut st = old.clone();
    let conds = &mut st.conditions;
    remove_condition(conds, types::STALLED);
    mark_true(
        conds,
        types::RECONCILING,
        reasons::PROGRESSING,
        &message,
        generation,
        now,
    );
    if conditions::get(conds, types::READY).is_none_or(|c| c.status == conditions::UNKNOWN) {
        conditions::set_condition(
            conds,
            types::READY,
            conditions::UNKNOWN,
            reasons::PROGRESSING,
            &message,
            generation,
            now,
        );
    }
    (st != old).then_some(st)
}

/// The status after `attempt`, from the object's current status. `kept` is the stored artifact
/// still served (its file verified; URL refreshed to the advertised address), `None` when there
/// is none or it is gone from storage. `unsupported` lists the fields accepted but not acted
/// on. `now` stamps condition transitions.
pub fn outcome(
    repo: &GitRepository,
    kept: Option<Artifact>,
    attempt: Attempt,
    unsupported: &[String],
    now: &Time,
) -> Outcome {
    let old = repo.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = repo.metadata.generation.unwrap_or(0);
    // a failure has not reconciled this generation (Flux's observedGeneration rule)
    if !matches!(attempt, Attempt::Failed { .. }) {
        st.observed_generation = Some(generation);
    }
    if let Some(token) = requested_at(repo.metadata.annotations.as_ref()) {
        st.last_handled_reconcile_at = Some(token.to_string());
    }
    let core = match attempt {
        Attempt::Unchanged { revision } => Settled::Unchanged { revision },
        Attempt::Stored {
            artifact,
            commit_message,
            included,
        } => {
            st.included_artifacts = included;
            st.observed_ignore = repo.spec.ignore.clone();
            st.observed_include = repo.spec.include.clone();
            st.observed_recurse_submodules = repo.spec.recurse_submodules;
            st.observed_sparse_checkout = repo.spec.sparse_checkout.clone();
            Settled::Stored {
                message: format!("stored artifact for commit '{commit_message}'"),
                artifact,
            }
        }
        Attempt::Failed {
            condition,
            reason,
            message,
        } => Settled::Failed {
            condition,
            reason,
            message,
        },
        Attempt::Stalled { reason, message } => Settled::Stalled { reason, message },
    };
    st.artifact = kept;
    let (notices, result) = settle(
        &mut st.conditions,
        &mut st.artifact,
        old.artifact.as_ref(),
        core,
        unsupported,
        &GIT_REPOSITORY_READY,
        stored_message,
        generation,
        now,
    );
    if st.artifact.is_none() {
        st.included_artifacts.clear();
    }
    Outcome {
        status: st,
        notices,
        result,
    }
}

/// An attempt's result as every source kind reports it (input of [`settle`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Settled {
    /// Nothing new: the kept artifact's revision becomes `revision`.
    Unchanged { revision: String },
    /// A new artifact; `message` is the `NewArtifact` Event's (Flux's words for the kind).
    Stored { artifact: Artifact, message: String },
    /// As [`Attempt::Failed`].
    Failed {
        condition: &'static str,
        reason: String,
        message: String,
    },
    /// As [`Attempt::Stalled`].
    Stalled { reason: String, message: String },
}

/// The part of an outcome every source kind shares: `Stalled` cleared, `Reconciling` cleared
/// (a failure leaves `Reconciling=True ProgressingWithRetry` with the message of the progress
/// written before, Flux's retry state; a stall already in `conds` gives no new Warning), the
/// `Unsupported` condition (a Warning when its list changed), the failure conditions, the
/// artifact (`artifact` holds the kept one on entry; `old` is `status.artifact` before), the
/// `ArtifactInStorage` condition (message `stored(revision)`) and `Ready` summarized with
/// `summary`. Returns the Events and
/// the result as [`Outcome::result`]. A `NewArtifact` Event only when the content changed.
#[allow(clippy::too_many_arguments)]
pub fn settle(
    conds: &mut Vec<Condition>,
    artifact: &mut Option<Artifact>,
    old: Option<&Artifact>,
    attempt: Settled,
    unsupported: &[String],
    summary: &conditions::Summary,
    stored: fn(&str) -> String,
    generation: i64,
    now: &Time,
) -> (Vec<Notice>, Result<(), bool>) {
    let mut notices = vec![];
    // a stall already in the status read (a restart) is not announced again
    let old_stall = conditions::get(conds, types::STALLED)
        .filter(|c| c.status == conditions::TRUE)
        .map(|c| c.message.clone());
    // Flux's retry state keeps the message of the progress written before the attempt
    let progress = conditions::get(conds, types::RECONCILING)
        .filter(|c| c.status == conditions::TRUE)
        .map_or_else(
            || "reconciliation in progress".to_string(),
            |c| c.message.clone(),
        );
    if !matches!(attempt, Settled::Failed { .. }) {
        remove_condition(conds, types::RECONCILING);
    }
    remove_condition(conds, types::STALLED);
    // Unsupported fields: a condition and, when the list changed, a Warning.
    if unsupported.is_empty() {
        remove_condition(conds, UNSUPPORTED);
    } else {
        let message = format!(
            "accepted but not acted on, ignored: {}",
            unsupported.join(", ")
        );
        if conditions::get(conds, UNSUPPORTED).is_none_or(|c| c.message != message) {
            notices.push(warning(UNSUPPORTED_FIELDS, &message));
        }
        mark_true(
            conds,
            UNSUPPORTED,
            UNSUPPORTED_FIELDS,
            &message,
            generation,
            now,
        );
    }
    let failures = [
        types::FETCH_FAILED,
        types::STORAGE_OPERATION_FAILED,
        types::INCLUDE_UNAVAILABLE,
        types::BUILD_FAILED,
        types::ARTIFACT_OUTDATED,
    ];
    let result = match attempt {
        Settled::Unchanged { revision } => {
            if let Some(a) = artifact.as_mut() {
                a.revision = revision;
            }
            for c in failures {
                remove_condition(conds, c);
            }
            Ok(())
        }
        Settled::Stored {
            artifact: stored,
            message,
        } => {
            if old.is_none_or(|a| !a.same_content(&stored)) {
                notices.push(Notice {
                    warning: false,
                    reason: NEW_ARTIFACT.into(),
                    message,
                    annotations: BTreeMap::from([
                        ("revision".to_string(), stored.revision.clone()),
                        ("digest".to_string(), stored.digest.clone()),
                    ]),
                });
            }
            *artifact = Some(stored);
            for c in failures {
                remove_condition(conds, c);
            }
            Ok(())
        }
        Settled::Failed {
            condition,
            reason,
            message,
        } => {
            if conditions::get(conds, condition)
                .is_none_or(|c| c.message != message || c.status != conditions::TRUE)
            {
                notices.push(warning(&reason, &message));
            }
            for c in failures.iter().filter(|c| **c != condition) {
                remove_condition(conds, c);
            }
            mark_true(conds, condition, &reason, &message, generation, now);
            mark_true(
                conds,
                types::RECONCILING,
                reasons::PROGRESSING_WITH_RETRY,
                &progress,
                generation,
                now,
            );
            Err(true)
        }
        Settled::Stalled { reason, message } => {
            if old_stall.as_deref() != Some(message.as_str()) {
                notices.push(warning(&reason, &message));
            }
            mark_true(conds, types::STALLED, &reason, &message, generation, now);
            Err(false)
        }
    };
    match &*artifact {
        Some(a) => mark_true(
            conds,
            types::ARTIFACT_IN_STORAGE,
            reasons::SUCCEEDED,
            &stored(&a.revision),
            generation,
            now,
        ),
        None => remove_condition(conds, types::ARTIFACT_IN_STORAGE),
    }
    summarize(conds, summary, generation, now);
    (notices, result)
}

fn warning(reason: &str, message: &str) -> Notice {
    Notice {
        warning: true,
        reason: reason.into(),
        message: message.into(),
        annotations: BTreeMap::new(),
    }
}

/// When to look again after a success: `interval` plus a jitter of up to ±5% (Flux's
/// `--interval-jitter-percentage` default), `seed` (any number, e.g. the clock's nanoseconds)
/// choosing where in that range.
pub fn next_interval(interval: Duration, seed: u64) -> Duration {
    let spread = interval.as_secs_f64() * 0.05;
    let unit = (seed % 10_001) as f64 / 10_000.0; // 0..=1
    Duration::from_secs_f64((interval.as_secs_f64() + spread * (2.0 * unit - 1.0)).max(0.0))
}

/// When to retry after the `failures`-th failure in a row (1 = first): 5 s doubling up to
/// 15 minutes, whatever `spec.interval` is (same as Flux's controller-runtime rate limiter with
/// `--max-retry-delay=15m`): a failing source with a tiny interval is not fetched every second.
/// `_interval` is not a cap; it stays in the signature for the callers of every source kind.
pub fn retry_after(failures: u32, _interval: Duration) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_RETRY_DELAY)
}

/// Flux's `--max-retry-delay` default.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
#[path = "git_repository_tests.rs"]
mod tests;
