//! `HelmChart` (`source.toolkit.fluxcd.io/v1`, short name `hc`): a chart taken from a
//! HelmRepository, GitRepository or Bucket (or, a pennant extension, an OCIRepository) and
//! stored packaged (`.tgz`). Same schema as Flux source-controller v1.9's `HelmChart`, with
//! `OCIRepository` added to `spec.sourceRef.kind` (a superset: every Flux manifest is
//! accepted).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Artifact, Condition, INTERVAL_PATTERN, LocalObjectReference, OidcIdentityMatch};

/// Values of `spec.sourceRef.kind`: Flux's three, and `OCIRepository` (pennant's extension: a
/// chart directory inside the OCI artifact, as for a GitRepository).
pub const HELM_CHART_SOURCE_KINDS: [&str; 4] =
    ["HelmRepository", "GitRepository", "Bucket", "OCIRepository"];
/// Values of `spec.reconcileStrategy`.
pub const RECONCILE_STRATEGIES: [&str; 2] = ["ChartVersion", "Revision"];

/// Spec of a HelmChart. Same fields as Flux's `HelmChartSpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmChart",
    namespaced,
    status = "HelmChartStatus",
    shortname = "hc",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    printcolumn(name = "Chart", type_ = "string", json_path = ".spec.chart"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Source Kind",
        type_ = "string",
        json_path = ".spec.sourceRef.kind"
    ),
    printcolumn(
        name = "Source Name",
        type_ = "string",
        json_path = ".spec.sourceRef.name"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "spec.verify is only supported when spec.sourceRef.kind is 'HelmRepository'",
    "rule": "!has(self.verify) || self.sourceRef.kind == 'HelmRepository'"
}]))]
pub struct HelmChartSpec {
    /// Chart name (HelmRepository source) or path inside the source (Git, Bucket,
    /// OCIRepository).
    pub chart: String,
    /// Masterminds semver constraint; default `*` (the newest stable version). Ignored for
    /// Git and Bucket sources (the version comes from `Chart.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "*"))]
    pub version: Option<String>,
    /// The source, in the HelmChart's namespace.
    pub source_ref: LocalHelmChartSourceReference,
    /// How often to check the source, a Go duration.
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: String,
    /// `ChartVersion` (default: a new artifact when the chart version changes) or `Revision`
    /// (also on every source revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = RECONCILE_STRATEGIES, "default" = "ChartVersion"))]
    pub reconcile_strategy: Option<String>,
    /// Values files inside the source merged into the chart's values, in order, last wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Skip a missing values file instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_missing_values_files: Option<bool>,
    /// Stop reconciling (the last artifact stays served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Signature verification (OCI HelmRepository sources only; CEL rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<HelmChartVerification>,
}

impl HelmChartSpec {
    /// `spec.version`, `*` when absent or empty.
    pub fn version(&self) -> &str {
        super::set(&self.version).unwrap_or("*")
    }
    /// True for `reconcileStrategy: Revision`.
    pub fn reconciles_on_revision(&self) -> bool {
        self.reconcile_strategy.as_deref() == Some("Revision")
    }
}

/// `spec.sourceRef`: Flux's `LocalHelmChartSourceReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalHelmChartSourceReference {
    /// API version of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `HelmRepository`, `GitRepository` or `Bucket` (Flux's), or `OCIRepository` (a pennant
    /// extension: `spec.chart` is then a path inside the OCI artifact).
    #[schemars(extend("enum" = HELM_CHART_SOURCE_KINDS))]
    pub kind: String,
    /// Name of the source.
    pub name: String,
}

/// `spec.verify` of a HelmChart: Flux's `OCIRepositoryVerification`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartVerification {
    /// `cosign` (default) or `notation`.
    #[schemars(extend("enum" = ["cosign", "notation"], "default" = "cosign"))]
    pub provider: String,
    /// Secret with the public keys (cosign) or the trust policy and CA (notation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Keyless verification: identities a signature must match (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "matchOIDCIdentity")]
    pub match_oidc_identity: Vec<OidcIdentityMatch>,
}

/// Status of a HelmChart. Same fields as Flux's `HelmChartStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct HelmChartStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The source artifact revision the chart was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_source_artifact_revision: Option<String>,
    /// `spec.chart` the artifact was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_chart_name: Option<String>,
    /// `spec.valuesFiles` the artifact was built with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_values_files: Vec<String>,
    /// `metav1.Condition`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Stable address of the last chart (`.../latest.tar.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored chart package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
