//! The OCIRepository reconciler's decisions, PURE (`now` passed in): what to do with an object
//! ([`decide`]), whether the stored artifact can be kept without a download
//! ([`reusable_revision`]), and the status and Events after an attempt ([`outcome`]). The I/O
//! around them is in [`super::controller`].
//!
//! Same flow as Flux's source-controller `OCIRepositoryReconciler` (flux.md §1.5): finalizer,
//! deletion, suspend as the GitRepository's ([`lifecycle`]); the tag, semver range or digest is
//! resolved to a manifest digest and the layer is downloaded only when that digest is not the
//! stored artifact's (or `ignore`/`layerSelector` changed since it was built); the artifact file
//! is `sha256:<hex>.tar.gz` (the digest part of the revision `<tag>@sha256:<hex>`), either the
//! extracted layer re-archived (`extract`) or the layer's bytes as they are (`copy`);
//! `status.artifact.metadata` holds the manifest's annotations. Differences, on purpose, as the
//! GitRepository's ([`super::git_repository`]): the final status of the attempt is written
//! (no `Reconciling` left behind); `serviceAccountName` and `proxySecretRef` give
//! `Unsupported=True` and a Warning; `verify` and a `provider` other than `generic` stall.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::git_repository::{Plan, Settled, lifecycle, settle};
use super::oci::{LayerOperation, LayerSelector};
use crate::api::source::{
    Artifact, OCIRepository, OCIRepositoryRef, OCIRepositoryStatus, OciSelector, parse_interval,
    parse_timeout,
};
use crate::gitops::conditions::OCI_REPOSITORY_READY;
use crate::gitops::reconcile_request::requested_at;

pub use super::git_repository::{INVALID_SPEC, NEW_ARTIFACT};

/// A pull to run.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPlan {
    pub selector: OciSelector,
    pub layer: LayerSelector,
    /// `spec.timeout` (default 60 s).
    pub timeout: Duration,
    /// `spec.interval`.
    pub interval: Duration,
    /// `spec.secretRef.name` (a `.dockerconfigjson` Secret).
    pub secret: Option<String>,
    /// `spec.certSecretRef.name` (`ca.crt`, `tls.crt`, `tls.key`).
    pub cert_secret: Option<String>,
    /// `spec.insecure`: plain HTTP.
    pub insecure: bool,
    /// Accepted but not acted on.
    pub unsupported: Vec<String>,
}

/// The OCIRepository's decision from the object alone (Flux's order: deletion, finalizer,
/// suspend, then a spec that cannot be acted on stalls: bad interval/timeout, a `provider`
/// other than `generic`, `verify`).
pub fn decide(repo: &OCIRepository) -> Plan<PullPlan> {
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
    let layer = match LayerSelector::from_spec(spec.layer_selector.as_ref()) {
        Ok(l) => l,
        Err(e) => return stall(e.to_string()),
    };
    let (selector, ignored) = OCIRepositoryRef::selector(spec.reference.as_ref());
    let mut unsupported: Vec<String> = ignored
        .iter()
        .map(|f| format!("spec.{f} (overridden by a ref field of higher precedence)"))
        .collect();
    if spec.proxy_secret_ref.is_some() {
        unsupported.push("spec.proxySecretRef (no proxy is used)".into());
    }
    if spec.service_account_name.is_some() {
        unsupported.push("spec.serviceAccountName (its image pull secrets are not read)".into());
    }
    Plan::Fetch(PullPlan {
        selector,
        layer,
        timeout,
        interval,
        secret: spec.secret_ref.as_ref().map(|r| r.name.clone()),
        cert_secret: spec.cert_secret_ref.as_ref().map(|r| r.name.clone()),
        insecure: spec.insecure.unwrap_or(false),
        unsupported,
    })
}

/// The revision to pass to the pull as the last one (no download when the resolved digest is
/// its digest): the stored artifact's, when its file verified (`artifact_ok`) and it was built
/// with the current `ignore` and `layerSelector` (Flux's `ociContentConfigChanged`). `None`:
/// download.
pub fn reusable_revision(repo: &OCIRepository, artifact_ok: bool) -> Option<String> {
    let status = repo.status.as_ref()?;
    let artifact = status.artifact.as_ref().filter(|_| artifact_ok)?;
    let same = status.observed_ignore == repo.spec.ignore
        && status.observed_layer_selector == repo.spec.layer_selector;
    same.then(|| artifact.revision.clone())
}

/// The artifact file name of a revision: its digest part with `.tar.gz` (Flux's, colon
/// included: `sha256:<hex>.tar.gz`), whatever the layer operation.
pub fn artifact_file(revision: &str) -> String {
    format!("{}.tar.gz", super::oci::revision_digest(revision))
}

/// Whether the layer is kept as is (`copy`) rather than extracted and re-archived.
pub fn copies(plan: &PullPlan) -> bool {
    plan.layer.operation == LayerOperation::Copy
}

/// What the attempt did (the I/O's result, fed to [`outcome`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The resolved digest is the stored artifact's: nothing downloaded. `revision` is the
    /// current revision string (the tag may be another one).
    Unchanged { revision: String },
    /// A new artifact was stored (its `metadata` holds the manifest annotations); `url` is the
    /// `latest.tar.gz` link's URL (`status.url`).
    Stored { artifact: Artifact, url: String },
    /// It failed: `FetchFailed` (Flux's reasons `AuthenticationFailed`, `OCIArtifactPullFailed`,
    /// `OCIArtifactLayerOperationFailed`, ...) or `StorageOperationFailed`; no secrets in it.
    Failed {
        condition: &'static str,
        reason: String,
        message: String,
    },
    /// Retrying cannot help without a spec change.
    Stalled { reason: String, message: String },
}

/// The status to write, the Events and the result (as the GitRepository's
/// [`super::git_repository::Outcome`]).
pub type Outcome = super::git_repository::Outcome<OCIRepositoryStatus>;

/// Flux's `NewArtifact` message of an OCIRepository: "stored artifact with revision '<rev>'
/// from '<url>'", plus the origin source and revision when the manifest names them (what
/// `flux push artifact --source --revision` writes).
pub fn new_artifact_message(
    revision: &str,
    url: &str,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut m = format!("stored artifact with revision '{revision}' from '{url}'");
    if let Some(s) = metadata.get("org.opencontainers.image.source") {
        m.push_str(&format!(", origin source '{s}'"));
    }
    if let Some(r) = metadata.get("org.opencontainers.image.revision") {
        m.push_str(&format!(", origin revision '{r}'"));
    }
    m
}

/// The status after `attempt`, from the object's current status. `kept` is the stored artifact
/// still served (verified, URL refreshed), `None` when there is none or it is gone. `now`
/// stamps condition transitions.
pub fn outcome(
    repo: &OCIRepository,
    kept: Option<Artifact>,
    attempt: Attempt,
    unsupported: &[String],
    now: &Time,
) -> Outcome {
    let old = repo.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = repo.metadata.generation.unwrap_or(0);
    st.observed_generation = Some(generation);
    if let Some(token) = requested_at(repo.metadata.annotations.as_ref()) {
        st.last_handled_reconcile_at = Some(token.to_string());
    }
    let core = match attempt {
        Attempt::Unchanged { revision } => Settled::Unchanged { revision },
        Attempt::Stored { artifact, url } => {
            st.url = Some(url);
            st.observed_ignore = repo.spec.ignore.clone();
            st.observed_layer_selector = repo.spec.layer_selector.clone();
            Settled::Stored {
                message: new_artifact_message(
                    &artifact.revision,
                    &repo.spec.url,
                    &artifact.metadata.clone().unwrap_or_default(),
                ),
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
        &OCI_REPOSITORY_READY,
        super::git_repository::stored_message,
        generation,
        now,
    );
    if st.artifact.is_none() {
        st.url = None;
    }
    Outcome {
        status: st,
        notices,
        result,
    }
}

#[cfg(test)]
#[path = "oci_repository_tests.rs"]
mod tests;
