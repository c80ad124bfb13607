//! Flux's source kinds (`source.toolkit.fluxcd.io/v1`): GitRepository, OCIRepository,
//! HelmRepository, HelmChart and ExternalArtifact (plus source-watcher's
//! `source.extensions.fluxcd.io/v1beta1` ArtifactGenerator), wire-compatible with source-controller v1.9's CRDs
//! (`config/crd/bases/source.toolkit.fluxcd.io_*.yaml`): same field names, enums, defaults,
//! patterns, CEL rules, short names and printer columns, so manifests written for Flux and the
//! `flux` CLI (which decodes with Flux's Go types) work unchanged. `tests/compat_flux.rs` walks
//! Flux's own schemas against ours. Plain data plus pure helpers; conditions are
//! `metav1.Condition` (k8s-openapi's [`Condition`]), as Flux writes them.

pub mod artifact;
pub mod artifact_generator;
pub mod external_artifact;
pub mod git_repository;
pub mod helm_chart;
pub mod helm_repository;
pub mod oci_repository;

pub use artifact::*;
pub use artifact_generator::*;
pub use external_artifact::*;
pub use git_repository::*;
pub use helm_chart::*;
pub use helm_repository::*;
pub use oci_repository::*;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// API group of the source kinds.
pub const GROUP: &str = "source.toolkit.fluxcd.io";
/// `apiVersion` of the source kinds pennant serves.
pub const API_VERSION: &str = "source.toolkit.fluxcd.io/v1";

/// Annotation that requests an immediate reconcile; its value (any token, the `flux` CLI
/// writes an RFC 3339 time) is echoed to `status.lastHandledReconcileAt` once handled. Same as
/// Flux's `meta.ReconcileRequestAnnotation`.
pub const RECONCILE_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
/// Finalizer on every reconciled GitOps object, Flux's `SourceFinalizer`
/// (`finalizers.fluxcd.io`).
pub const FINALIZER: &str = "finalizers.fluxcd.io";

/// Flux's pattern for `spec.interval`: Go durations in `ms`, `s`, `m`, `h`.
pub const INTERVAL_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Flux's pattern for `spec.timeout`: Go durations in `ms`, `s`, `m` (no hours).
pub const TIMEOUT_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$";
/// Default `spec.timeout` of every source kind: 60 s (Flux's CRD default, or code default for
/// HelmRepository).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Categories of the source CRDs (`kubectl get fluxcd-sources`), as Flux's.
pub const CATEGORIES: [&str; 3] = ["all", "fluxcd", "fluxcd-sources"];

/// A reference to an object in the referring object's namespace (Flux's
/// `meta.LocalObjectReference`: `name` required).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referent.
    pub name: String,
}

/// An OIDC identity a keyless cosign signature must match (regular expressions), Flux's
/// `OIDCIdentityMatch`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcIdentityMatch {
    /// Regular expression the OIDC issuer must match.
    pub issuer: String,
    /// Regular expression the OIDC subject must match.
    pub subject: String,
}

/// `spec.interval` (required by Flux's schema except on HelmRepository) as a duration; `None`
/// when malformed (the schema's pattern makes that rare) or zero.
pub fn parse_interval(interval: &str) -> Option<Duration> {
    super::parse_duration(interval).filter(|d| !d.is_zero())
}

/// `spec.timeout` as a duration: [`DEFAULT_TIMEOUT`] when absent; `None` when malformed or zero.
pub fn parse_timeout(timeout: Option<&str>) -> Option<Duration> {
    match timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(t) => super::parse_duration(t).filter(|d| !d.is_zero()),
    }
}

/// Empty strings read as absent, as Flux's Go code treats `""` (`omitempty` fields).
pub(crate) fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// What every source kind shares, for the code that reconciles them generically.
pub trait Source {
    /// `spec.interval` as written (Flux requires it; a static OCI HelmRepository may omit it).
    fn interval(&self) -> Option<&str>;
    /// `spec.timeout` as written.
    fn timeout(&self) -> Option<&str>;
    /// `spec.suspend`.
    fn suspended(&self) -> bool;
    /// `status.artifact`, when one is stored.
    fn artifact(&self) -> Option<&Artifact>;
    /// `status.conditions` (empty without a status).
    fn conditions(&self) -> &[Condition];
    /// `status.lastHandledReconcileAt`.
    fn last_handled_reconcile_at(&self) -> Option<&str>;
    /// `status.observedGeneration` (`-1`, the CRD default, when never reconciled or absent).
    fn observed_generation(&self) -> i64;
}

macro_rules! impl_source {
    ($kind:ty, |$s:ident| interval: $interval:expr, timeout: $timeout:expr) => {
        impl Source for $kind {
            fn interval(&self) -> Option<&str> {
                let $s = &self.spec;
                $interval
            }
            fn timeout(&self) -> Option<&str> {
                let $s = &self.spec;
                $timeout
            }
            fn suspended(&self) -> bool {
                self.spec.suspend.unwrap_or(false)
            }
            fn artifact(&self) -> Option<&Artifact> {
                self.status.as_ref().and_then(|s| s.artifact.as_ref())
            }
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
            fn last_handled_reconcile_at(&self) -> Option<&str> {
                self.status
                    .as_ref()
                    .and_then(|s| s.last_handled_reconcile_at.as_deref())
            }
            fn observed_generation(&self) -> i64 {
                self.status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or(-1)
            }
        }
    };
}

impl_source!(
    GitRepository,
    |s| interval: Some(s.interval.as_str()),
    timeout: s.timeout.as_deref()
);
impl_source!(
    OCIRepository,
    |s| interval: Some(s.interval.as_str()),
    timeout: s.timeout.as_deref()
);
impl_source!(
    HelmRepository,
    |s| interval: s.interval.as_deref(),
    timeout: s.timeout.as_deref()
);
// HelmChart has no `spec.timeout`: the HelmRepository's applies.
impl_source!(
    HelmChart,
    |s| interval: Some(s.interval.as_str()),
    timeout: { let _ = s; None }
);
