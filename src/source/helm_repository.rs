//! The HelmRepository reconciler's decisions, PURE (`now` passed in): what to do with an object
//! ([`decide`]), the credentials and TLS material its Secrets give ([`basic_auth`],
//! [`tls_config`]), and the status and Events after an attempt ([`outcome`]). The I/O around
//! them is in [`super::controller`].
//!
//! Same flow as Flux's source-controller `HelmRepositoryReconciler` (flux.md §1.3):
//! - `type: default`: `<url>/index.yaml` is downloaded and validated; its revision is
//!   `sha256:<hex>` of the file; when that is the stored artifact's revision nothing is stored
//!   again; otherwise the index is stored as `index-<hex>.yaml` and the `index.yaml` link to it
//!   is `status.url`. An `oci://` URL stalls.
//! - `type: oci`: a static object since Flux v1.2 ([`RepoPlan::Static`]): never fetched, no
//!   artifact, no conditions; an object left from an older version is migrated (storage removed,
//!   status cleared, finalizer released), as Flux's `migrationToStatic`.
//!
//! Differences, on purpose, as the GitRepository's ([`super::git_repository`]): the final
//! status of the attempt is written; `accessFrom` (a placeholder in Flux too) gives
//! `Unsupported=True` and a Warning.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::git_repository::{Plan, Settled, lifecycle, settle};
use super::helm_index::HelmAuth;
use super::http::TlsConfig;
use crate::api::source::{
    Artifact, HelmRepository, HelmRepositoryStatus, parse_interval, parse_timeout,
};
use crate::gitops::conditions::HELM_REPOSITORY_READY;
use crate::gitops::reconcile_request::requested_at;

pub use super::git_repository::{INVALID_SPEC, NEW_ARTIFACT};

/// What to do with a HelmRepository past the lifecycle steps.
#[derive(Clone, Debug, PartialEq)]
pub enum RepoPlan {
    /// `type: default`: download the index.
    Index(IndexPlan),
    /// `type: oci`: nothing but releasing what an older version left (storage, status,
    /// finalizer).
    Static,
}

/// An index download to run.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexPlan {
    /// `spec.timeout` (default 60 s).
    pub timeout: Duration,
    /// `spec.interval`; `None` when absent (checked once, then on changes, as Flux).
    pub interval: Option<Duration>,
    /// `spec.secretRef.name` (`username`, `password`; deprecated TLS keys).
    pub secret: Option<String>,
    /// `spec.certSecretRef.name` (`ca.crt`, `tls.crt`, `tls.key`).
    pub cert_secret: Option<String>,
    /// `spec.passCredentials`.
    pub pass_credentials: bool,
    /// Accepted but not acted on.
    pub unsupported: Vec<String>,
}

/// The HelmRepository's decision from the object alone: a `type: oci` object is static before
/// anything else; then Flux's order (deletion, finalizer, suspend) and a spec that cannot be
/// acted on stalls (an `oci://` URL with `type: default`, a bad interval or timeout).
pub fn decide(repo: &HelmRepository) -> Plan<RepoPlan> {
    let spec = &repo.spec;
    if spec.is_oci() {
        return Plan::Fetch(RepoPlan::Static);
    }
    if let Some(p) = lifecycle(&repo.metadata, spec.suspend) {
        return p;
    }
    let stall = |message: String| Plan::Stall {
        reason: INVALID_SPEC.into(),
        message,
    };
    let interval = match spec.interval.as_deref() {
        None => None,
        Some(i) => match parse_interval(i) {
            Some(d) => Some(d),
            None => return stall(format!("invalid spec.interval '{i}'")),
        },
    };
    let Some(timeout) = parse_timeout(spec.timeout.as_deref()) else {
        return stall(format!(
            "invalid spec.timeout '{}'",
            spec.timeout.as_deref().unwrap_or_default()
        ));
    };
    if !(spec.url.starts_with("http://") || spec.url.starts_with("https://")) {
        return Plan::Stall {
            reason: "URLInvalid".into(),
            message: format!(
                "invalid Helm repository URL '{}': scheme must be http or https for type \
                 'default' (an oci:// URL needs type: oci)",
                super::helm_index::redact_url(&spec.url)
            ),
        };
    }
    let mut unsupported = vec![];
    if spec.access_from.is_some() {
        unsupported.push("spec.accessFrom (cross-namespace access is not checked)".to_string());
    }
    Plan::Fetch(RepoPlan::Index(IndexPlan {
        timeout,
        interval,
        secret: spec.secret_ref.as_ref().map(|r| r.name.clone()),
        cert_secret: spec.cert_secret_ref.as_ref().map(|r| r.name.clone()),
        pass_credentials: spec.pass_credentials.unwrap_or(false),
        unsupported,
    }))
}

/// Basic auth from a `secretRef` Secret's `data` (Flux's keys `username`, `password`); none
/// when neither is set. Errors (naming keys, never values): one without the other.
pub fn basic_auth(data: &BTreeMap<String, Vec<u8>>) -> Result<HelmAuth, String> {
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    match (text("username"), text("password")) {
        (Some(username), Some(password)) => Ok(HelmAuth::Basic { username, password }),
        (None, None) => Ok(HelmAuth::None),
        (Some(_), None) => {
            Err("invalid secret: 'username' is set but 'password' is missing".into())
        }
        (None, Some(_)) => {
            Err("invalid secret: 'password' is set but 'username' is missing".into())
        }
    }
}

/// TLS material of a Secret's `data`: `ca.crt`, `tls.crt`, `tls.key` (Flux's `certSecretRef`
/// keys), else the deprecated `caFile`, `certFile`, `keyFile` Flux still reads from a
/// `secretRef`. `None` when the Secret has none of them.
pub fn tls_config(data: &BTreeMap<String, Vec<u8>>) -> Option<TlsConfig> {
    let key = |new: &str, old: &str| data.get(new).or_else(|| data.get(old)).cloned();
    let tls = TlsConfig {
        ca_pem: key("ca.crt", "caFile"),
        cert_pem: key("tls.crt", "certFile"),
        key_pem: key("tls.key", "keyFile"),
    };
    (tls.ca_pem.is_some() || tls.cert_pem.is_some() || tls.key_pem.is_some()).then_some(tls)
}

/// The artifact file of an index revision `sha256:<hex>`: `index-<hex>.yaml` (Flux's).
pub fn artifact_file(revision: &str) -> String {
    let hex = revision.strip_prefix("sha256:").unwrap_or(revision);
    format!("index-{hex}.yaml")
}

/// What the attempt did (the I/O's result, fed to [`outcome`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The index's revision is the stored artifact's: nothing stored.
    Unchanged { revision: String },
    /// A new index was stored; `url` is the `index.yaml` link's URL (`status.url`).
    Stored { artifact: Artifact, url: String },
    /// It failed: `FetchFailed` (Flux's reasons `AuthenticationFailed`, `IndexationFailed`,
    /// ...) or `StorageOperationFailed`; no secrets in the message.
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
pub type Outcome = super::git_repository::Outcome<HelmRepositoryStatus>;

/// Flux's `ArtifactInStorage` message of a HelmRepository.
pub fn stored_message(revision: &str) -> String {
    format!("stored artifact: revision '{revision}'")
}

/// A size as go-humanize's `Bytes` writes it (SI units, as Flux's event): `512 B`, `1.2 kB`,
/// `15 MB`.
pub fn human_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let v = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[e])
    } else {
        format!("{v:.0} {}", UNITS[e])
    }
}

/// The status after `attempt`, from the object's current status. `kept` is the stored artifact
/// still served (verified, URL refreshed), `None` when there is none or it is gone.
pub fn outcome(
    repo: &HelmRepository,
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
            Settled::Stored {
                message: format!(
                    "stored fetched index of size {} from '{}'",
                    human_bytes(artifact.size.unwrap_or(0).max(0) as u64),
                    super::helm_index::redact_url(&repo.spec.url)
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
        &HELM_REPOSITORY_READY,
        stored_message,
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
#[path = "helm_repository_tests.rs"]
mod tests;
