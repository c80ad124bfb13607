//! `HelmRelease` (`helm.toolkit.fluxcd.io/v2`, short name `hr`): a Helm release of a chart (from
//! a generated HelmChart, `spec.chart`, or an existing source, `spec.chartRef`) with values
//! composed from the spec and ConfigMaps/Secrets, installed, upgraded, tested, remediated and
//! uninstalled by the helm controller. Same schema as Flux helm-controller v1.6.4's (the version
//! Flux v2.9.5 pins; `config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml`, walked by
//! `tests/compat_flux.rs`), so manifests written for Flux and the `flux` CLI work unchanged.
//! pennant's extensions (a superset: every Flux manifest is accepted): `spec.dependsOn[].kind`
//! may name a Kustomization (flux2#3364), and `spec.chart.spec.sourceRef.kind` may be an
//! OCIRepository (as pennant's HelmChart). Plain data plus pure helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::kustomization::{
    CommonMetadata, CustomHealthCheck, DependencyReference, IgnoreRule, Image, KubeConfigReference,
    Patch, ResourceInventory,
};
use super::parse_duration;
use super::source::{Condition, HelmChartVerification, INTERVAL_PATTERN, parse_interval, set};

/// API group of HelmRelease; also the prefix of its owner labels and event metadata keys.
pub const GROUP: &str = "helm.toolkit.fluxcd.io";
/// Version of HelmRelease pennant serves (the only one Flux serves).
pub const VERSION: &str = "v2";
/// `apiVersion` of HelmRelease. Not `source.toolkit.fluxcd.io/v1`, which tutorials sometimes
/// write and the API server refuses ("no matches for kind").
pub const API_VERSION: &str = "helm.toolkit.fluxcd.io/v2";
/// Kind of HelmRelease.
pub const KIND: &str = "HelmRelease";
/// Categories of the CRD (`kubectl get fluxcd-appliers`), as Flux's.
pub const CATEGORIES: [&str; 3] = ["all", "fluxcd", "fluxcd-appliers"];
/// Finalizer of a reconciled HelmRelease, Flux's `HelmReleaseFinalizer` (`finalizers.fluxcd.io`).
pub use super::source::FINALIZER;
/// Label with the HelmRelease's name on the generated HelmChart and on every rendered object
/// (Flux's owner labels).
pub const NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
/// Label with the HelmRelease's namespace, next to [`NAME_LABEL`].
pub const NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";
/// Label or annotation `…: disabled` on a live object excludes it from drift detection (Flux's
/// `DriftDetectionMetadataKey`).
pub const DRIFT_DETECTION_KEY: &str = "helm.toolkit.fluxcd.io/driftDetection";
/// Annotation forcing a one-off install/upgrade when its value equals `requestedAt`'s; echoed
/// to `status.lastHandledForceAt` (Flux's `meta.ForceRequestAnnotation`).
pub const FORCE_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/forceAt";
/// Annotation resetting the failure counters when its value equals `requestedAt`'s; echoed to
/// `status.lastHandledResetAt` (Flux's `meta.ResetRequestAnnotation`).
pub const RESET_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/resetAt";

/// `spec.timeout` when absent: 5 minutes (Flux's `GetTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// `spec.maxHistory` when absent (Flux's `defaultMaxHistory`); `0` means unlimited.
pub const DEFAULT_MAX_HISTORY: i64 = 5;
/// `strategy.retryInterval` when absent, with `RetryOnFailure` (Flux's `GetRetryInterval`).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// Longest Helm release name; longer names are shortened by [`shorten_release_name`].
pub const MAX_RELEASE_NAME_LENGTH: usize = 53;

/// Kinds `spec.chart.spec.sourceRef.kind` accepts: Flux's three, and `OCIRepository` (pennant's
/// HelmChart extension: a chart directory inside the OCI artifact).
pub const CHART_SOURCE_KINDS: [&str; 4] =
    ["HelmRepository", "GitRepository", "Bucket", "OCIRepository"];
/// Kinds `spec.chartRef.kind` accepts, as Flux's.
pub const CHART_REF_KINDS: [&str; 3] = ["OCIRepository", "HelmChart", "ExternalArtifact"];
/// Values of `install.crds` / `upgrade.crds`.
pub const CRDS_POLICIES: [&str; 3] = ["Skip", "Create", "CreateReplace"];
/// Values of `upgrade.serverSideApply` / `rollback.serverSideApply`.
pub const SERVER_SIDE_APPLY_MODES: [&str; 3] = ["enabled", "disabled", "auto"];
/// Values of `install.strategy.name` / `upgrade.strategy.name`.
pub const ACTION_STRATEGIES: [&str; 2] = ["RemediateOnFailure", "RetryOnFailure"];
/// Values of `upgrade.remediation.strategy`.
pub const REMEDIATION_STRATEGIES: [&str; 2] = ["rollback", "uninstall"];
/// Values of `driftDetection.mode`.
pub const DRIFT_DETECTION_MODES: [&str; 3] = ["enabled", "warn", "disabled"];
/// Values of `postRenderStrategy`.
pub const POST_RENDER_STRATEGIES: [&str; 3] = ["nohooks", "combined", "separate"];
/// Values of `waitStrategy.name`.
pub const WAIT_STRATEGIES: [&str; 2] = ["poller", "legacy"];
/// Values of `uninstall.deletionPropagation` (default `background`).
pub const DELETION_PROPAGATIONS: [&str; 3] = ["background", "foreground", "orphan"];

/// Flux's pattern of `valuesFrom[].valuesKey`.
const VALUES_KEY_PATTERN: &str = r"^[\-._a-zA-Z0-9]+$";
/// Flux's pattern of `valuesFrom[].targetPath`.
const TARGET_PATH_PATTERN: &str = r"^([a-zA-Z0-9_\-.\\\/]|\[[0-9]{1,5}\])+$";

/// Condition types a HelmRelease carries besides Ready/Reconciling/Stalled (Flux's
/// `condition_types.go`).
pub mod condition_types {
    /// Outcome of the last install or upgrade.
    pub const RELEASED: &str = "Released";
    /// Outcome of the last Helm test run.
    pub const TEST_SUCCESS: &str = "TestSuccess";
    /// Outcome of the last rollback or uninstall remediation.
    pub const REMEDIATED: &str = "Remediated";
    /// Whether the cluster drifted from the release manifest.
    pub const DRIFTED: &str = "Drifted";
}

/// Reasons of the HelmRelease conditions (Flux's `condition_types.go` and `ReleaseAction`s).
pub mod reasons {
    pub const INSTALL_SUCCEEDED: &str = "InstallSucceeded";
    pub const INSTALL_FAILED: &str = "InstallFailed";
    pub const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
    pub const TEST_SUCCEEDED: &str = "TestSucceeded";
    pub const TEST_FAILED: &str = "TestFailed";
    pub const ROLLBACK_SUCCEEDED: &str = "RollbackSucceeded";
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const UNINSTALL_SUCCEEDED: &str = "UninstallSucceeded";
    pub const UNINSTALL_FAILED: &str = "UninstallFailed";
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const NO_DRIFT_DETECTED: &str = "NoDriftDetected";
}

/// Spec of a HelmRelease. Same fields as Flux's `HelmReleaseSpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    namespaced,
    status = "HelmReleaseStatus",
    shortname = "hr",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-appliers",
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
    "message": "either chart or chartRef must be set",
    "rule": "(has(self.chart) && !has(self.chartRef)) || (!has(self.chart) && has(self.chartRef))"
}]))]
pub struct HelmReleaseSpec {
    /// Template of the HelmChart pennant generates (named [`HelmRelease::helm_chart_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<HelmChartTemplate>,
    /// An existing source holding the chart artifact (instead of `chart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<ChartReference>,
    /// How often to reconcile, a Go duration.
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: String,
    /// Kubeconfig of a remote cluster to release to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    /// Stop reconciling (the release stays as it is; on deletion it is not uninstalled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Helm release name; see [`HelmRelease::release_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 53))]
    pub release_name: Option<String>,
    /// Namespace of the release's objects; the HelmRelease's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub target_namespace: Option<String>,
    /// Namespace of Helm's release Secrets; the HelmRelease's (not `targetNamespace`) when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub storage_namespace: Option<String>,
    /// HelmReleases (or, pennant's `kind`, Kustomizations) that must be Ready first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    /// Bound of each Helm action, a Go duration; 5m when absent (per-action timeouts win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// Release revisions Helm keeps; 5 when absent, 0 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int")]
    pub max_history: Option<i64>,
    /// Service account impersonated for the Helm actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub service_account_name: Option<String>,
    /// Reuse one Kubernetes client across actions; true when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_client: Option<bool>,
    /// Drift detection of the release's objects against its manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_detection: Option<DriftDetection>,
    /// Options of `helm install`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    /// Options of `helm upgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,
    /// Options of `helm test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
    /// Options of `helm rollback` (upgrade remediation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Options of `helm uninstall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall: Option<Uninstall>,
    /// ConfigMaps and Secrets whose keys are merged into the values, in order, before `values`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesReference>,
    /// Inline values (any JSON), merged last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_any")]
    pub values: Option<Value>,
    /// Labels and annotations stamped on every rendered object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// Post-renderers applied to the rendered manifests, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_renderers: Vec<PostRenderer>,
    /// `nohooks`, `combined` (Helm 4's default) or `separate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = POST_RENDER_STRATEGIES))]
    pub post_render_strategy: Option<String>,
    /// How Helm waits for the applied objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_strategy: Option<WaitStrategy>,
    /// CEL health rules per kind (with the `poller` wait strategy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<CustomHealthCheck>,
}

/// Schema of `spec.values`: any JSON, no `type`, unknown fields preserved (Flux's
/// `apiextensionsv1.JSON`).
fn preserve_unknown_any(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a Go `int`: `type: integer`, no format.
fn go_int(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer" })
}

/// `spec.chart`: Flux's `HelmChartTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HelmChartTemplate {
    /// Labels and annotations of the generated HelmChart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<CommonMetadata>,
    /// Spec of the generated HelmChart.
    pub spec: HelmChartTemplateSpec,
}

/// `spec.chart.spec`: Flux's `HelmChartTemplateSpec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    /// Chart name (HelmRepository) or path inside the source (Git, Bucket, OCIRepository).
    #[schemars(extend("minLength" = 1, "maxLength" = 2048))]
    pub chart: String,
    /// Semver constraint; `*` when absent. Ignored for Git and Bucket sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "*"))]
    pub version: Option<String>,
    /// The source of the chart; its namespace is the HelmChart's.
    pub source_ref: ChartSourceReference,
    /// Interval of the HelmChart; the HelmRelease's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: Option<String>,
    /// `ChartVersion` (default) or `Revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = super::source::RECONCILE_STRATEGIES, "default" = "ChartVersion"))]
    pub reconcile_strategy: Option<String>,
    /// Values files in the source merged into the chart's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Skip a missing values file instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_missing_values_files: Option<bool>,
    /// Signature verification of an OCI chart, passed to the HelmChart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<HelmChartVerification>,
}

/// `spec.chart.spec.sourceRef`: Flux's `CrossNamespaceObjectReference` with its enum.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChartSourceReference {
    /// API version of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// One of [`CHART_SOURCE_KINDS`].
    #[schemars(extend("enum" = CHART_SOURCE_KINDS))]
    pub kind: String,
    /// Name of the source.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Namespace of the source (and of the generated HelmChart); the HelmRelease's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub namespace: Option<String>,
}

/// `spec.chartRef`: Flux's `CrossNamespaceSourceReference` with its enum.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChartReference {
    /// API version of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// One of [`CHART_REF_KINDS`].
    #[schemars(extend("enum" = CHART_REF_KINDS))]
    pub kind: String,
    /// Name of the source.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Namespace of the source; the HelmRelease's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub namespace: Option<String>,
}

/// `spec.valuesFrom[]`: Flux's `meta.ValuesReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuesReference {
    /// `Secret` or `ConfigMap`.
    #[schemars(extend("enum" = ["Secret", "ConfigMap"]))]
    pub kind: String,
    /// Name of the object, in the HelmRelease's namespace.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Key holding the values; `values.yaml` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 253, "pattern" = VALUES_KEY_PATTERN))]
    pub values_key: Option<String>,
    /// Dotted path (`helm --set` syntax) the key's content is set at, as one value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 250, "pattern" = TARGET_PATH_PATTERN))]
    pub target_path: Option<String>,
    /// A missing object or key is skipped instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// With `targetPath`: set the content verbatim (`helm --set-literal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<bool>,
}

impl ValuesReference {
    /// `valuesKey`, `values.yaml` when empty (Flux's `GetValuesKey`).
    pub fn values_key(&self) -> &str {
        set(&self.values_key).unwrap_or("values.yaml")
    }
}

/// `spec.postRenderers[]`: Flux's `PostRenderer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PostRenderer {
    /// kustomize patches and image overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizePostRenderer>,
}

/// `spec.postRenderers[].kustomize`: Flux's `Kustomize`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KustomizePostRenderer {
    /// Strategic merge or JSON 6902 patches with optional targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
    /// Image overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

/// `spec.waitStrategy`: Flux's `WaitStrategy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WaitStrategy {
    /// `poller` (kstatus, the default) or `legacy` (Helm 3's waiter).
    #[schemars(extend("enum" = WAIT_STRATEGIES))]
    pub name: String,
}

/// `spec.driftDetection`: Flux's `DriftDetection`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DriftDetection {
    /// `enabled`, `warn` or `disabled` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = DRIFT_DETECTION_MODES))]
    pub mode: Option<String>,
    /// JSON pointers ignored on the selected objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
}

/// `install.strategy`: Flux's `InstallStrategy`, with its CEL rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": ".retryInterval cannot be set when .name is 'RemediateOnFailure'",
    "rule": "!has(self.retryInterval) || self.name != 'RemediateOnFailure'"
}]))]
pub struct InstallStrategy {
    /// `RemediateOnFailure` or `RetryOnFailure`.
    #[schemars(extend("enum" = ACTION_STRATEGIES))]
    pub name: String,
    /// With `RetryOnFailure`: the wait before retrying; 5m when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub retry_interval: Option<String>,
}

/// `upgrade.strategy`: Flux's `UpgradeStrategy`, with its CEL rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": ".retryInterval can only be set when .name is 'RetryOnFailure'",
    "rule": "!has(self.retryInterval) || self.name == 'RetryOnFailure'"
}]))]
pub struct UpgradeStrategy {
    /// `RemediateOnFailure` or `RetryOnFailure`.
    #[schemars(extend("enum" = ACTION_STRATEGIES))]
    pub name: String,
    /// With `RetryOnFailure`: the wait before retrying; 5m when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub retry_interval: Option<String>,
}

/// `install.remediation`: Flux's `InstallRemediation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallRemediation {
    /// Failed installs remediated and retried; 0 when absent, negative for infinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int")]
    pub retries: Option<i64>,
    /// Legacy: overrides `test.ignoreFailures` while install is the active action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_test_failures: Option<bool>,
    /// Remediate (uninstall) the last failure too, when retries are exhausted; false when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediate_last_failure: Option<bool>,
}

/// `upgrade.remediation`: Flux's `UpgradeRemediation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRemediation {
    /// Failed upgrades remediated and retried; 0 when absent, negative for infinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int")]
    pub retries: Option<i64>,
    /// Legacy: overrides `test.ignoreFailures` while upgrade is the active action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_test_failures: Option<bool>,
    /// Remediate the last failure too; true when absent and `retries > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediate_last_failure: Option<bool>,
    /// `rollback` (default) or `uninstall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = REMEDIATION_STRATEGIES))]
    pub strategy: Option<String>,
}

/// `spec.install`: Flux's `Install`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Install {
    /// Bound of the install (and its hooks and wait); `spec.timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// What happens after a failed install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<InstallStrategy>,
    /// Retries and uninstall remediation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<InstallRemediation>,
    /// Do not adopt objects owned by another release or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_take_ownership: Option<bool>,
    /// Do not wait for the objects to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait: Option<bool>,
    /// Do not wait for Jobs to complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait_for_jobs: Option<bool>,
    /// Do not run hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_hooks: Option<bool>,
    /// Do not validate the manifests against the OpenAPI schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "disableOpenAPIValidation")]
    pub disable_openapi_validation: Option<bool>,
    /// Do not validate the values against the chart's JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_schema_validation: Option<bool>,
    /// Reuse the name of a deleted release still in history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
    /// Deprecated: `crds: Skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "skipCRDs")]
    pub skip_crds: Option<bool>,
    /// `Skip`, `Create` (default) or `CreateReplace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = CRDS_POLICIES))]
    pub crds: Option<String>,
    /// Create the target namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
    /// Apply with server-side apply (Helm 4's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_apply: Option<bool>,
}

/// `spec.upgrade`: Flux's `Upgrade`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    /// Bound of the upgrade; `spec.timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// What happens after a failed upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpgradeStrategy>,
    /// Retries and rollback/uninstall remediation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<UpgradeRemediation>,
    /// Do not adopt objects owned by another release or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_take_ownership: Option<bool>,
    /// Do not wait for the objects to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait: Option<bool>,
    /// Do not wait for Jobs to complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait_for_jobs: Option<bool>,
    /// Do not run hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_hooks: Option<bool>,
    /// Do not validate the manifests against the OpenAPI schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "disableOpenAPIValidation")]
    pub disable_openapi_validation: Option<bool>,
    /// Do not validate the values against the chart's JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_schema_validation: Option<bool>,
    /// Replace objects that cannot be patched (delete and recreate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Reuse the last release's values instead of the composed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_values: Option<bool>,
    /// Delete objects created by a failed upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_on_fail: Option<bool>,
    /// `Skip` (default), `Create` or `CreateReplace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = CRDS_POLICIES))]
    pub crds: Option<String>,
    /// `enabled`, `disabled` or `auto` (default: the last release's method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = SERVER_SIDE_APPLY_MODES))]
    pub server_side_apply: Option<String>,
    /// `Reinstall` (default: a chart name change uninstalls first) or `InPlaceUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["InPlaceUpdate", "Reinstall"]))]
    pub chart_name_change_strategy: Option<String>,
}

/// `spec.test`: Flux's `Test`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Test {
    /// Run `helm test` after an install or upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Bound of the test run; `spec.timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// A failed test neither fails the release nor triggers remediation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_failures: Option<bool>,
    /// Test hooks to run or skip by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<TestFilter>>,
}

/// `spec.test.filters[]`: Flux's `Filter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TestFilter {
    /// Name of the test hook.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Skip it instead of selecting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<bool>,
}

/// `spec.rollback`: Flux's `Rollback`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// Bound of the rollback; `spec.timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// Do not wait for the objects to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait: Option<bool>,
    /// Do not wait for Jobs to complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait_for_jobs: Option<bool>,
    /// Do not run hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_hooks: Option<bool>,
    /// Deprecated (a no-op under Helm 4): restart the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate: Option<bool>,
    /// Replace objects that cannot be patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Delete objects created by a failed rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_on_fail: Option<bool>,
    /// `enabled`, `disabled` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = SERVER_SIDE_APPLY_MODES))]
    pub server_side_apply: Option<String>,
}

/// `spec.uninstall`: Flux's `Uninstall`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Uninstall {
    /// Bound of the uninstall; `spec.timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// Do not run hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_hooks: Option<bool>,
    /// Keep the release history (mark it `uninstalled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_history: Option<bool>,
    /// Do not wait for the objects to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait: Option<bool>,
    /// `background` (default), `foreground` or `orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = DELETION_PROPAGATIONS, "default" = "background"))]
    pub deletion_propagation: Option<String>,
}

/// Status of a HelmRelease. Same fields as Flux's `HelmReleaseStatus`; the CRD defaults it to
/// `{observedGeneration: -1}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct HelmReleaseStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Digest of `spec.postRenderers` at the last release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_post_renderers_digest: Option<String>,
    /// Digest of `spec.commonMetadata` at the last release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_common_metadata_digest: Option<String>,
    /// Generation of the last release attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_generation: Option<i64>,
    /// `metav1.Condition`s: Ready, Reconciling, Stalled, Released, TestSuccess, Remediated,
    /// Drifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `<namespace>/<name>` of the generated HelmChart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart: Option<String>,
    /// Storage namespace of the release; empty when never installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub storage_namespace: Option<String>,
    /// Releases observed, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Snapshot>,
    /// Objects of the last release (same entries as the Kustomization inventory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<ResourceInventory>,
    /// `install` or `upgrade`: the action whose remediation is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["install", "upgrade"]))]
    pub last_attempted_release_action: Option<String>,
    /// Duration of the last release action, a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_release_action_duration: Option<String>,
    /// Failures of any action since the counters were last reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
    /// Install failures since the counters were last reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_failures: Option<i64>,
    /// Upgrade failures since the counters were last reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failures: Option<i64>,
    /// Chart version of the last attempt (`1.2.3+<12 hex>` for OCI sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// OCI digest of the last attempted chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision_digest: Option<String>,
    /// Deprecated (kept for round trips): the values checksum of older Flux versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_values_checksum: Option<String>,
    /// Deprecated (kept for round trips): the Helm revision of older Flux versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int")]
    pub last_release_revision: Option<i64>,
    /// `sha256:<hex>` of the composed values of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_config_digest: Option<String>,
    /// The last `reconcile.fluxcd.io/resetAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reset_at: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The last `reconcile.fluxcd.io/forceAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_force_at: Option<String>,
    /// pennant: the last Helm release revision (`<release>.v<N>`, as Helm names its storage)
    /// whose Canaries (those targeting a Deployment or DaemonSet of the inventory) all promoted
    /// its pod templates (flagger#830). Unset while no Canary targets a released workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_revision: Option<String>,
    /// pennant: the last Helm release revision a Canary rolled back (`Ready=False`,
    /// `CanaryFailed`); Helm upgrades again only on a new chart or values (flagger#1577).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<String>,
}

/// One `status.history` entry: Flux's helm `Snapshot` of a Helm release revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Snapshot format, `v2` for Helm 4 releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `sha256:<hex>` of the observed release.
    pub digest: String,
    /// Release name.
    pub name: String,
    /// Release namespace.
    pub namespace: String,
    /// Helm revision (1, 2, …).
    #[schemars(schema_with = "go_int")]
    pub version: i64,
    /// Helm status: `deployed`, `superseded`, `failed`, `uninstalled`, `pending-*`, …
    pub status: String,
    /// Action that produced it (`install`, `upgrade`, `rollback`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Chart name.
    pub chart_name: String,
    /// Chart version.
    pub chart_version: String,
    /// Chart appVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// `sha256:<hex>` of the release's values.
    pub config_digest: String,
    /// When the release was first deployed.
    pub first_deployed: Time,
    /// When this revision was deployed.
    pub last_deployed: Time,
    /// When it was uninstalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Time>,
    /// Test hooks of this revision by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<BTreeMap<String, TestHookStatus>>,
    /// OCI digest of the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_digest: Option<String>,
}

/// `status.history[].testHooks.*`: Flux's `TestHookStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestHookStatus {
    /// When the hook last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<Time>,
    /// When the hook last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<Time>,
    /// `Succeeded`, `Failed`, `Running`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A Helm release name of at most [`MAX_RELEASE_NAME_LENGTH`] characters: `name` itself when
/// short enough, else its first 40 bytes, `-` and the first 12 hex digits of its SHA-256. Same
/// as Flux's `release.ShortenName`.
pub fn shorten_release_name(name: &str) -> String {
    if name.len() <= MAX_RELEASE_NAME_LENGTH {
        return name.to_string();
    }
    const HASH: usize = 12;
    let sum = hex(&Sha256::digest(name.as_bytes()));
    let mut keep = MAX_RELEASE_NAME_LENGTH - HASH - 1;
    while !name.is_char_boundary(keep) {
        keep -= 1; // names are DNS labels (ASCII); never split a character regardless
    }
    format!("{}-{}", &name[..keep], &sum[..HASH])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The action whose failures and remediation are current (`status.lastAttemptedReleaseAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseAction {
    Install,
    Upgrade,
}

impl ReleaseAction {
    /// `install` or `upgrade`, as in `status.lastAttemptedReleaseAction`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseAction::Install => "install",
            ReleaseAction::Upgrade => "upgrade",
        }
    }
}

/// How a failed release is remediated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemediationStrategy {
    /// Roll back to the previous successful revision (upgrade default).
    Rollback,
    /// Uninstall the release (always for install).
    Uninstall,
}

/// The effective remediation of one action, defaults applied (Flux's `Remediation` interface
/// over `InstallRemediation`/`UpgradeRemediation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remediation {
    /// The action it belongs to.
    pub action: ReleaseAction,
    /// Retries allowed; negative for infinite.
    pub retries: i64,
    /// Whether the last failure (retries exhausted) is remediated too.
    pub remediate_last_failure: bool,
    /// Rollback or uninstall.
    pub strategy: RemediationStrategy,
    /// The legacy `remediation.ignoreTestFailures`, when set.
    pub ignore_test_failures: Option<bool>,
}

impl Remediation {
    /// True when `failures ≥ 0` failed attempts exhaust the retries: `retries ≥ 0` and
    /// `failures > retries` (so `retries: 3` allows 4 attempts). Same as Flux's
    /// `RetriesExhausted`.
    pub fn retries_exhausted(&self, failures: i64) -> bool {
        self.retries >= 0 && failures > self.retries
    }
}

/// What happens after a failed install or upgrade (`strategy.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionStrategy {
    /// Remediate per `remediation` (Flux's default).
    RemediateOnFailure,
    /// No remediation; retry as an upgrade after `retry_interval`.
    RetryOnFailure { retry_interval: Duration },
}

/// `driftDetection.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftMode {
    /// Detect and correct drift.
    Enabled,
    /// Detect and report drift only.
    Warn,
    /// No drift detection (default).
    Disabled,
}

impl DriftMode {
    /// True for `enabled` and `warn` (Flux's `MustDetectChanges`).
    pub fn detects_changes(self) -> bool {
        self != DriftMode::Disabled
    }
}

/// `(name, retryInterval)` of a strategy → the effective one (Flux's `GetRetry`).
fn action_strategy(s: Option<(&str, Option<&String>)>, default_to_retry: bool) -> ActionStrategy {
    let retry = |interval: Option<&String>| ActionStrategy::RetryOnFailure {
        // the schema's pattern makes a malformed interval rare; it reads as the default
        retry_interval: interval
            .map(String::as_str)
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_RETRY_INTERVAL),
    };
    match s {
        None if default_to_retry => retry(None),
        Some(("RetryOnFailure", interval)) => retry(interval),
        _ => ActionStrategy::RemediateOnFailure,
    }
}

impl HelmRelease {
    /// `spec.interval`; `None` when malformed or zero.
    pub fn interval(&self) -> Option<Duration> {
        parse_interval(&self.spec.interval)
    }

    /// `spec.suspend`.
    pub fn suspended(&self) -> bool {
        self.spec.suspend.unwrap_or(false)
    }

    /// The release name before shortening: `spec.releaseName`, else
    /// `[<targetNamespace>-]<name>`. Same as Flux's `GetReleaseName`.
    pub fn release_name_unshortened(&self) -> String {
        if let Some(n) = set(&self.spec.release_name) {
            return n.to_string();
        }
        match set(&self.spec.target_namespace) {
            Some(t) => format!("{t}-{}", self.name_any()),
            None => self.name_any(),
        }
    }

    /// The Helm release name: [`Self::release_name_unshortened`] shortened by
    /// [`shorten_release_name`], as Flux's actions use it (`ShortenName(GetReleaseName())`).
    pub fn release_name(&self) -> String {
        shorten_release_name(&self.release_name_unshortened())
    }

    /// Namespace of the release's objects: `spec.targetNamespace`, else the HelmRelease's (Flux's
    /// `GetReleaseNamespace`).
    pub fn release_namespace(&self) -> String {
        set(&self.spec.target_namespace)
            .map(str::to_string)
            .unwrap_or_else(|| self.namespace().unwrap_or_default())
    }

    /// Namespace of Helm's release Secrets: `spec.storageNamespace`, else the HelmRelease's
    /// (not `targetNamespace`; Flux's `GetStorageNamespace`).
    pub fn storage_namespace(&self) -> String {
        set(&self.spec.storage_namespace)
            .map(str::to_string)
            .unwrap_or_else(|| self.namespace().unwrap_or_default())
    }

    /// Name of the generated HelmChart: `<namespace>-<name>` (Flux's `GetHelmChartName`).
    pub fn helm_chart_name(&self) -> String {
        format!(
            "{}-{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// Namespace of the generated HelmChart: the chart source's (`chart.spec.sourceRef.namespace`),
    /// else the HelmRelease's (Flux's `HelmChartTemplate.GetNamespace`). `None` with `chartRef`.
    pub fn helm_chart_namespace(&self) -> Option<String> {
        let chart = self.spec.chart.as_ref()?;
        Some(
            set(&chart.spec.source_ref.namespace)
                .map(str::to_string)
                .unwrap_or_else(|| self.namespace().unwrap_or_default()),
        )
    }

    /// Interval of the generated HelmChart: `chart.spec.interval`, else `spec.interval` (Flux's
    /// `HelmChartTemplate.GetInterval`); as written.
    pub fn helm_chart_interval(&self) -> &str {
        self.spec
            .chart
            .as_ref()
            .and_then(|c| set(&c.spec.interval))
            .unwrap_or(&self.spec.interval)
    }

    /// `spec.timeout`, else 5m (Flux's `GetTimeout`); `None` when malformed.
    pub fn timeout(&self) -> Option<Duration> {
        match set(&self.spec.timeout) {
            Some(t) => parse_duration(t),
            None => Some(DEFAULT_TIMEOUT),
        }
    }

    fn action_timeout(&self, t: Option<&Option<String>>) -> Option<Duration> {
        match t.and_then(set) {
            Some(t) => parse_duration(t),
            None => self.timeout(),
        }
    }

    /// `install.timeout`, else [`Self::timeout`] (Flux's `Install.GetTimeout`).
    pub fn install_timeout(&self) -> Option<Duration> {
        self.action_timeout(self.spec.install.as_ref().map(|a| &a.timeout))
    }
    /// `upgrade.timeout`, else [`Self::timeout`].
    pub fn upgrade_timeout(&self) -> Option<Duration> {
        self.action_timeout(self.spec.upgrade.as_ref().map(|a| &a.timeout))
    }
    /// `test.timeout`, else [`Self::timeout`].
    pub fn test_timeout(&self) -> Option<Duration> {
        self.action_timeout(self.spec.test.as_ref().map(|a| &a.timeout))
    }
    /// `rollback.timeout`, else [`Self::timeout`].
    pub fn rollback_timeout(&self) -> Option<Duration> {
        self.action_timeout(self.spec.rollback.as_ref().map(|a| &a.timeout))
    }
    /// `uninstall.timeout`, else [`Self::timeout`].
    pub fn uninstall_timeout(&self) -> Option<Duration> {
        self.action_timeout(self.spec.uninstall.as_ref().map(|a| &a.timeout))
    }

    /// `spec.maxHistory`, else 5; `0` means unlimited (Flux's `GetMaxHistory`).
    pub fn max_history(&self) -> i64 {
        self.spec.max_history.unwrap_or(DEFAULT_MAX_HISTORY)
    }

    /// `spec.persistentClient`, true when absent (Flux's `UsePersistentClient`).
    pub fn persistent_client(&self) -> bool {
        self.spec.persistent_client.unwrap_or(true)
    }

    /// `uninstall.deletionPropagation`, `background` when absent.
    pub fn deletion_propagation(&self) -> &str {
        self.spec
            .uninstall
            .as_ref()
            .and_then(|u| set(&u.deletion_propagation))
            .unwrap_or("background")
    }

    /// True for `upgrade.chartNameChangeStrategy: InPlaceUpdate` (default `Reinstall`: a chart
    /// name change uninstalls the release first).
    pub fn chart_name_change_in_place(&self) -> bool {
        self.spec
            .upgrade
            .as_ref()
            .and_then(|u| set(&u.chart_name_change_strategy))
            == Some("InPlaceUpdate")
    }

    /// Install remediation, defaults applied: retries 0, `remediateLastFailure` false, strategy
    /// always uninstall (Flux's `InstallRemediation`).
    pub fn install_remediation(&self) -> Remediation {
        let r = self
            .spec
            .install
            .as_ref()
            .and_then(|i| i.remediation.clone())
            .unwrap_or_default();
        Remediation {
            action: ReleaseAction::Install,
            retries: r.retries.unwrap_or(0),
            remediate_last_failure: r.remediate_last_failure.unwrap_or(false),
            strategy: RemediationStrategy::Uninstall,
            ignore_test_failures: r.ignore_test_failures,
        }
    }

    /// Upgrade remediation, defaults applied: retries 0, `remediateLastFailure` true when
    /// `retries > 0`, strategy rollback (Flux's `UpgradeRemediation`).
    pub fn upgrade_remediation(&self) -> Remediation {
        let r = self
            .spec
            .upgrade
            .as_ref()
            .and_then(|u| u.remediation.clone())
            .unwrap_or_default();
        let retries = r.retries.unwrap_or(0);
        Remediation {
            action: ReleaseAction::Upgrade,
            retries,
            remediate_last_failure: r.remediate_last_failure.unwrap_or(retries > 0),
            strategy: match r.strategy.as_deref() {
                Some("uninstall") => RemediationStrategy::Uninstall,
                _ => RemediationStrategy::Rollback,
            },
            ignore_test_failures: r.ignore_test_failures,
        }
    }

    /// `status.lastAttemptedReleaseAction`, parsed.
    pub fn last_attempted_release_action(&self) -> Option<ReleaseAction> {
        match self
            .status
            .as_ref()?
            .last_attempted_release_action
            .as_deref()
        {
            Some("install") => Some(ReleaseAction::Install),
            Some("upgrade") => Some(ReleaseAction::Upgrade),
            _ => None,
        }
    }

    /// The remediation of the last attempted action; `None` before any (Flux's
    /// `GetActiveRemediation`).
    pub fn active_remediation(&self) -> Option<Remediation> {
        self.last_attempted_release_action().map(|a| match a {
            ReleaseAction::Install => self.install_remediation(),
            ReleaseAction::Upgrade => self.upgrade_remediation(),
        })
    }

    /// `install.strategy`: `RetryOnFailure` (retry interval default 5m) or
    /// `RemediateOnFailure`; with no strategy, `RetryOnFailure` only when
    /// `default_to_retry_on_failure` (Flux's `DefaultToRetryOnFailure` feature gate). Same as
    /// Flux's `Install.GetRetry`.
    pub fn install_strategy(&self, default_to_retry_on_failure: bool) -> ActionStrategy {
        let s = self.spec.install.as_ref().and_then(|i| i.strategy.as_ref());
        let s = s.map(|s| (s.name.as_str(), s.retry_interval.as_ref()));
        action_strategy(s, default_to_retry_on_failure)
    }

    /// `upgrade.strategy`, as [`Self::install_strategy`] (Flux's `Upgrade.GetRetry`).
    pub fn upgrade_strategy(&self, default_to_retry_on_failure: bool) -> ActionStrategy {
        let s = self.spec.upgrade.as_ref().and_then(|u| u.strategy.as_ref());
        let s = s.map(|s| (s.name.as_str(), s.retry_interval.as_ref()));
        action_strategy(s, default_to_retry_on_failure)
    }

    /// The strategy of the last attempted action; `None` before any (Flux's `GetActiveRetry`,
    /// `RemediateOnFailure` standing for its nil).
    pub fn active_strategy(&self, default_to_retry_on_failure: bool) -> Option<ActionStrategy> {
        self.last_attempted_release_action().map(|a| match a {
            ReleaseAction::Install => self.install_strategy(default_to_retry_on_failure),
            ReleaseAction::Upgrade => self.upgrade_strategy(default_to_retry_on_failure),
        })
    }

    /// The failure counter of `action` (`status.installFailures` / `upgradeFailures`, 0 when
    /// absent).
    pub fn failure_count(&self, action: ReleaseAction) -> i64 {
        let s = self.status.as_ref();
        match action {
            ReleaseAction::Install => s.and_then(|s| s.install_failures),
            ReleaseAction::Upgrade => s.and_then(|s| s.upgrade_failures),
        }
        .unwrap_or(0)
    }

    /// `test.enable`.
    pub fn test_enabled(&self) -> bool {
        self.spec
            .test
            .as_ref()
            .and_then(|t| t.enable)
            .unwrap_or(false)
    }

    /// Whether failed tests are ignored: the active remediation's legacy `ignoreTestFailures`
    /// when set, else `test.ignoreFailures` (Flux's `MustIgnoreTestFailures(test.IgnoreFailures)`
    /// on `GetActiveRemediation`, `test.ignoreFailures` with none active).
    pub fn ignore_test_failures(&self) -> bool {
        let default = self
            .spec
            .test
            .as_ref()
            .and_then(|t| t.ignore_failures)
            .unwrap_or(false);
        self.active_remediation()
            .and_then(|r| r.ignore_test_failures)
            .unwrap_or(default)
    }

    /// `driftDetection.mode`, `Disabled` when absent (Flux's `DriftDetection.GetMode`).
    pub fn drift_mode(&self) -> DriftMode {
        match self
            .spec
            .drift_detection
            .as_ref()
            .and_then(|d| d.mode.as_deref())
        {
            Some("enabled") => DriftMode::Enabled,
            Some("warn") => DriftMode::Warn,
            _ => DriftMode::Disabled,
        }
    }

    /// `status.helmChart` split into `(namespace, name)`; `None` when absent or without a `/`
    /// (Flux's `GetHelmChart`).
    pub fn status_helm_chart(&self) -> Option<(&str, &str)> {
        self.status.as_ref()?.helm_chart.as_deref()?.split_once('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hr(spec: Value) -> HelmRelease {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "HelmRelease",
            "metadata": {"name": "podinfo", "namespace": "apps"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn base() -> Value {
        json!({"interval": "10m", "chart": {"spec": {"chart": "podinfo",
            "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}}})
    }

    fn with(over: Value) -> HelmRelease {
        let mut spec = base();
        spec.as_object_mut()
            .unwrap()
            .extend(over.as_object().unwrap().clone());
        hr(spec)
    }

    /// Flux's `TestShortName` cases, and the 53-character boundary.
    #[test]
    fn release_names_are_shortened_as_flux() {
        let cases = [
            ("release-name", "release-name"),
            (
                "release-name-with-very-long-name-which-is-longer-than-53-characters",
                "release-name-with-very-long-name-which-i-788ca0d0d7b0",
            ),
            (
                "another-release-name-with-very-long-name-which-is-longer-than-53-characters",
                "another-release-name-with-very-long-name-7e72150d5a36",
            ),
            ("", ""),
        ];
        for (name, want) in cases {
            assert_eq!(shorten_release_name(name), want, "{name}");
            assert!(shorten_release_name(name).len() <= 53);
        }
        let exactly = "a".repeat(53);
        assert_eq!(shorten_release_name(&exactly), exactly);
        let over = "a".repeat(54);
        assert_eq!(shorten_release_name(&over).len(), 53);
        assert_ne!(shorten_release_name(&over), exactly);
    }

    #[test]
    fn names_and_namespaces_follow_flux() {
        // (spec overrides, release name, release ns, storage ns)
        let cases = [
            (json!({}), "podinfo", "apps", "apps"),
            (
                json!({"targetNamespace": "web"}),
                "web-podinfo",
                "web",
                "apps",
            ),
            (
                json!({"targetNamespace": "web", "releaseName": "pi", "storageNamespace": "helm"}),
                "pi",
                "web",
                "helm",
            ),
            (json!({"releaseName": ""}), "podinfo", "apps", "apps"),
            // `<targetNamespace>-<name>` is 54 characters: shortened
            (
                json!({"targetNamespace": "a-much-longer-target-namespace-for-the-release"}),
                "a-much-longer-target-namespace-for-the-r-cef49ce3b96e",
                "a-much-longer-target-namespace-for-the-release",
                "apps",
            ),
        ];
        for (over, name, ns, storage) in cases {
            let h = with(over.clone());
            assert_eq!(h.release_name(), name, "{over}");
            assert_eq!(h.release_namespace(), ns, "{over}");
            assert_eq!(h.storage_namespace(), storage, "{over}");
        }
    }

    #[test]
    fn generated_helm_chart_name_and_namespace() {
        let h = with(json!({}));
        assert_eq!(h.helm_chart_name(), "apps-podinfo");
        assert_eq!(h.helm_chart_namespace().as_deref(), Some("apps"));
        assert_eq!(h.helm_chart_interval(), "10m");
        let mut spec = base();
        spec["chart"]["spec"]["sourceRef"]["namespace"] = json!("flux-system");
        spec["chart"]["spec"]["interval"] = json!("1h");
        let h = hr(spec);
        assert_eq!(h.helm_chart_name(), "apps-podinfo");
        assert_eq!(h.helm_chart_namespace().as_deref(), Some("flux-system"));
        assert_eq!(h.helm_chart_interval(), "1h");
        let h =
            hr(json!({"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "podinfo"}}));
        assert_eq!(h.helm_chart_namespace(), None);
    }

    #[test]
    fn timeouts_per_action() {
        let m = |s| Some(Duration::from_secs(s));
        let h = with(json!({}));
        for t in [
            h.timeout(),
            h.install_timeout(),
            h.upgrade_timeout(),
            h.test_timeout(),
            h.rollback_timeout(),
            h.uninstall_timeout(),
        ] {
            assert_eq!(t, m(300));
        }
        let h = with(json!({"timeout": "10m", "install": {"timeout": "1m"},
            "upgrade": {"timeout": "2m"}, "test": {"timeout": "30s"}, "rollback": {},
            "uninstall": {"timeout": "1h"}}));
        assert_eq!(
            [
                h.timeout(),
                h.install_timeout(),
                h.upgrade_timeout(),
                h.test_timeout(),
                h.rollback_timeout(),
                h.uninstall_timeout()
            ],
            [m(600), m(60), m(120), m(30), m(600), m(3600)]
        );
        assert_eq!(with(json!({"timeout": "soon"})).upgrade_timeout(), None);
    }

    #[test]
    fn remediation_defaults_follow_flux() {
        // (spec overrides, install (retries, last, strategy), upgrade (retries, last, strategy))
        use RemediationStrategy::{Rollback as Back, Uninstall as Un};
        let cases = [
            (json!({}), (0, false, Un), (0, false, Back)),
            (
                json!({"install": {"remediation": {"retries": 3}},
                       "upgrade": {"remediation": {"retries": 3}}}),
                (3, false, Un),
                (3, true, Back),
            ),
            (
                json!({"install": {"remediation": {"retries": -1, "remediateLastFailure": true}},
                       "upgrade": {"remediation": {"retries": 2, "remediateLastFailure": false,
                                                   "strategy": "uninstall"}}}),
                (-1, true, Un),
                (2, false, Un),
            ),
            (
                json!({"upgrade": {"remediation": {"retries": -1}}}),
                (0, false, Un),
                (-1, false, Back),
            ),
        ];
        for (over, i, u) in cases {
            let h = with(over.clone());
            let (ri, ru) = (h.install_remediation(), h.upgrade_remediation());
            assert_eq!(
                (ri.retries, ri.remediate_last_failure, ri.strategy),
                i,
                "{over}"
            );
            assert_eq!(
                (ru.retries, ru.remediate_last_failure, ru.strategy),
                u,
                "{over}"
            );
        }
        // retries exhausted: retries: 3 allows 4 attempts; negative never exhausts
        let r = with(json!({"upgrade": {"remediation": {"retries": 3}}})).upgrade_remediation();
        assert!(!r.retries_exhausted(3));
        assert!(r.retries_exhausted(4));
        let inf = with(json!({"upgrade": {"remediation": {"retries": -1}}})).upgrade_remediation();
        assert!(!inf.retries_exhausted(1000));
        assert!(with(json!({})).install_remediation().retries_exhausted(1));
    }

    #[test]
    fn active_remediation_and_strategy_follow_the_last_attempted_action() {
        let mut h = with(json!({
            "install": {"strategy": {"name": "RetryOnFailure", "retryInterval": "2m"}},
            "upgrade": {"strategy": {"name": "RemediateOnFailure"},
                        "remediation": {"retries": 1}}}));
        assert_eq!(h.active_remediation(), None);
        assert_eq!(h.active_strategy(false), None);
        h.status = Some(HelmReleaseStatus {
            last_attempted_release_action: Some("install".into()),
            install_failures: Some(2),
            ..Default::default()
        });
        assert_eq!(
            h.active_remediation().map(|r| r.action),
            Some(ReleaseAction::Install)
        );
        assert_eq!(
            h.active_strategy(false),
            Some(ActionStrategy::RetryOnFailure {
                retry_interval: Duration::from_secs(120)
            })
        );
        assert_eq!(h.failure_count(ReleaseAction::Install), 2);
        assert_eq!(h.failure_count(ReleaseAction::Upgrade), 0);
        h.status.as_mut().unwrap().last_attempted_release_action = Some("upgrade".into());
        assert_eq!(h.active_remediation().map(|r| r.retries), Some(1));
        assert_eq!(
            h.active_strategy(true),
            Some(ActionStrategy::RemediateOnFailure),
            "an explicit RemediateOnFailure wins over the feature gate"
        );
        // no strategy: remediate, or retry every 5m under DefaultToRetryOnFailure
        let h = with(json!({}));
        assert_eq!(
            h.upgrade_strategy(false),
            ActionStrategy::RemediateOnFailure
        );
        assert_eq!(
            h.upgrade_strategy(true),
            ActionStrategy::RetryOnFailure {
                retry_interval: DEFAULT_RETRY_INTERVAL
            }
        );
        assert_eq!(
            with(json!({"upgrade": {"strategy": {"name": "RetryOnFailure"}}}))
                .upgrade_strategy(false),
            ActionStrategy::RetryOnFailure {
                retry_interval: DEFAULT_RETRY_INTERVAL
            }
        );
    }

    #[test]
    fn test_failures_are_ignored_per_test_or_legacy_remediation() {
        let status = |action: &str| {
            Some(HelmReleaseStatus {
                last_attempted_release_action: Some(action.into()),
                ..Default::default()
            })
        };
        // (spec overrides, last action, enabled, ignored)
        let cases = [
            (json!({}), None, false, false),
            (json!({"test": {"enable": true}}), None, true, false),
            (
                json!({"test": {"enable": true, "ignoreFailures": true}}),
                None,
                true,
                true,
            ),
            (
                json!({"test": {"enable": true, "ignoreFailures": true},
                       "upgrade": {"remediation": {"ignoreTestFailures": false}}}),
                Some("upgrade"),
                true,
                false,
            ),
            (
                json!({"test": {"enable": true},
                       "install": {"remediation": {"ignoreTestFailures": true}}}),
                Some("install"),
                true,
                true,
            ),
            (
                json!({"test": {"enable": true},
                       "install": {"remediation": {"ignoreTestFailures": true}}}),
                Some("upgrade"),
                true,
                false,
            ),
        ];
        for (over, action, enabled, ignored) in cases {
            let mut h = with(over.clone());
            h.status = action.and_then(status);
            assert_eq!(h.test_enabled(), enabled, "{over}");
            assert_eq!(h.ignore_test_failures(), ignored, "{over} {action:?}");
        }
    }

    #[test]
    fn other_defaults() {
        let h = with(json!({}));
        assert_eq!(h.drift_mode(), DriftMode::Disabled);
        assert!(!h.drift_mode().detects_changes());
        assert_eq!(h.max_history(), 5);
        assert!(h.persistent_client());
        assert_eq!(h.deletion_propagation(), "background");
        assert!(!h.chart_name_change_in_place());
        assert!(!h.suspended());
        assert_eq!(h.interval(), Some(Duration::from_secs(600)));
        assert_eq!(h.status_helm_chart(), None);
        let mut h = with(json!({"driftDetection": {"mode": "warn"}, "maxHistory": 0,
            "persistentClient": false, "uninstall": {"deletionPropagation": "orphan"},
            "upgrade": {"chartNameChangeStrategy": "InPlaceUpdate"}, "suspend": true}));
        assert_eq!(h.drift_mode(), DriftMode::Warn);
        assert!(h.drift_mode().detects_changes());
        assert_eq!(h.max_history(), 0);
        assert!(!h.persistent_client());
        assert_eq!(h.deletion_propagation(), "orphan");
        assert!(h.chart_name_change_in_place());
        assert!(h.suspended());
        assert_eq!(
            with(json!({"driftDetection": {"mode": "enabled"}})).drift_mode(),
            DriftMode::Enabled
        );
        h.status = Some(HelmReleaseStatus {
            helm_chart: Some("flux-system/apps-podinfo".into()),
            ..Default::default()
        });
        assert_eq!(h.status_helm_chart(), Some(("flux-system", "apps-podinfo")));
        let v = ValuesReference {
            kind: "ConfigMap".into(),
            name: "v".into(),
            ..Default::default()
        };
        assert_eq!(v.values_key(), "values.yaml");
    }

    #[test]
    fn status_round_trips_in_fluxs_shape() {
        let status = json!({
            "observedGeneration": 2,
            "lastAttemptedGeneration": 2,
            "lastAttemptedRevision": "6.5.4",
            "lastAttemptedConfigDigest": "sha256:aa",
            "lastAttemptedReleaseAction": "upgrade",
            "lastAttemptedReleaseActionDuration": "3.2s",
            "failures": 1, "upgradeFailures": 1,
            "helmChart": "flux-system/podinfo-podinfo",
            "storageNamespace": "podinfo",
            "lastHandledReconcileAt": "2026-12-06T04:00:00Z",
            "lastHandledForceAt": "2026-12-06T04:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded",
                "message": "Helm upgrade succeeded", "lastTransitionTime": "2026-12-06T04:00:00Z",
                "observedGeneration": 2}],
            "history": [{
                "apiVersion": "v2", "digest": "sha256:bb", "name": "podinfo",
                "namespace": "podinfo", "version": 2, "status": "deployed", "action": "upgrade",
                "chartName": "podinfo", "chartVersion": "6.5.4", "appVersion": "6.5.4",
                "configDigest": "sha256:aa",
                "firstDeployed": "2026-12-06T03:00:00Z", "lastDeployed": "2026-12-06T04:00:00Z",
                "testHooks": {"podinfo-grpc-test-abc": {"lastStarted": "2026-12-06T04:00:01Z",
                    "lastCompleted": "2026-12-06T04:00:05Z", "phase": "Succeeded"}},
            }],
            "inventory": {"entries": [{"id": "podinfo_podinfo_apps_Deployment", "v": "v1"}]},
        });
        let s: HelmReleaseStatus = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(s.history[0].version, 2);
        assert_eq!(
            s.history[0].test_hooks.as_ref().unwrap()["podinfo-grpc-test-abc"]
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), status);
    }
}
