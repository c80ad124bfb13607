//! `Kustomization` (`kustomize.toolkit.fluxcd.io/v1`, short name `ks`): a directory of an
//! artifact built with kustomize, post-processed (substitution, decryption) and applied to the
//! cluster with an inventory for pruning. Same schema as Flux kustomize-controller v1.9.5's
//! (the version Flux v2.9.5 pins; `config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml`,
//! walked by `tests/compat_flux.rs`), so manifests written for Flux and the `flux` CLI work
//! unchanged. Plain data plus pure helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::parse_duration;
use super::source::{Condition, INTERVAL_PATTERN, LocalObjectReference, parse_interval, set};

/// API group of Kustomization; also the prefix of its per-object annotations and owner labels.
pub const GROUP: &str = "kustomize.toolkit.fluxcd.io";
/// `apiVersion` of the Kustomization pennant serves.
pub const API_VERSION: &str = "kustomize.toolkit.fluxcd.io/v1";
/// Categories of the CRD (`kubectl get fluxcd-appliers`), as Flux's.
pub const CATEGORIES: [&str; 3] = ["all", "fluxcd", "fluxcd-appliers"];

/// Kinds `spec.sourceRef.kind` accepts, as Flux's enum (`Bucket` is accepted by the schema and
/// reported as unsupported by the controller: pennant serves no Bucket).
pub const SOURCE_KINDS: [&str; 4] = [
    "OCIRepository",
    "GitRepository",
    "Bucket",
    "ExternalArtifact",
];
/// Values of `spec.deletionPolicy`; `MirrorPrune` when empty (Flux's `GetDeletionPolicy`).
pub const DELETION_POLICIES: [&str; 4] = ["MirrorPrune", "Delete", "WaitForTermination", "Orphan"];
/// Values of `spec.postBuild.substituteStrategy`; `WithVariables` when empty.
pub const SUBSTITUTE_STRATEGIES: [&str; 2] = ["WithVariables", "Always"];
/// Values of `spec.buildMetadata[]`.
pub const BUILD_METADATA_OPTIONS: [&str; 2] = ["originAnnotations", "transformerAnnotations"];
/// At most this many entries in `status.history` (Flux's `meta.HistoryMaxSize`).
pub const HISTORY_MAX_SIZE: usize = 5;
/// The floor of the effective timeout (Flux's `GetTimeout`).
pub const MIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Kubebuilder's CEL rules on `spec.kubeConfig`, as Flux's (exactly one of the two references).
const KUBECONFIG_ONE_OF: &str =
    "exactly one of spec.kubeConfig.configMapRef or spec.kubeConfig.secretRef must be specified";

/// Spec of a Kustomization. Same fields as Flux's `KustomizationSpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    namespaced,
    status = "KustomizationStatus",
    shortname = "ks",
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
pub struct KustomizationSpec {
    /// Kustomizations that must be Ready (and, on the same source, applied at the same
    /// revision) before this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    /// How often to reconcile, a Go duration.
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: String,
    /// Interval after a failure; `interval` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub retry_interval: Option<String>,
    /// Kubeconfig of a remote cluster to apply to (impersonation then happens there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    /// Directory inside the artifact (`./` by default); a `kustomization.yaml` is generated when
    /// it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Post-build actions: variable substitution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    /// Garbage-collect objects that left the source (required, as in Flux).
    pub prune: bool,
    /// What to delete when the Kustomization is deleted; `MirrorPrune` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = DELETION_POLICIES))]
    pub deletion_policy: Option<String>,
    /// Objects whose health gates readiness (ignored when `wait` is true).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<NamespacedObjectKindReference>,
    /// Prefix added to the names of all objects (kustomize `namePrefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 200))]
    pub name_prefix: Option<String>,
    /// Suffix added to the names of all objects (kustomize `nameSuffix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 200))]
    pub name_suffix: Option<String>,
    /// Strategic merge or JSON 6902 patches, each with an optional target selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
    /// Image name, tag and digest overrides (kustomize `images`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// Service account impersonated for apply, prune and health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The source whose artifact holds the manifests.
    pub source_ref: CrossNamespaceSourceReference,
    /// Stop reconciling (applied objects stay as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Namespace set on every namespaced object (kustomize `namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 63))]
    pub target_namespace: Option<String>,
    /// Bound of apply plus health checks, a Go duration; see [`Kustomization::timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub timeout: Option<String>,
    /// Recreate objects whose immutable fields changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub force: Option<bool>,
    /// Health-check every applied object (then `healthChecks` is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// kustomize components (paths relative to `path`) added to the build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Skip `components` that do not exist instead of failing the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_missing_components: Option<bool>,
    /// SOPS decryption of encrypted Secrets and generator inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Labels and annotations added to every object (not to selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// kustomize build metadata options: `originAnnotations`, `transformerAnnotations`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "enum": BUILD_METADATA_OPTIONS}))]
    pub build_metadata: Vec<String>,
    /// CEL health rules per kind, for objects that are health-checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<CustomHealthCheck>,
    /// JSON pointers excluded from drift detection and apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
}

/// `spec.dependsOn[]` of a Kustomization or a HelmRelease: Flux's `meta.DependencyReference`,
/// plus pennant's optional `kind`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyReference {
    /// pennant extension (flux2#3364): the kind depended on, `Kustomization` or `HelmRelease`
    /// (ready when `Ready=True` for its current generation); when absent, the dependent's own
    /// kind (Flux's only one) — see [`DependencyReference::kind_or`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Kustomization", "HelmRelease"]))]
    pub kind: Option<String>,
    /// Name of the object depended on.
    pub name: String,
    /// Its namespace; the dependent's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// CEL expression over `self` and `dep` that must be true for the dependency to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_expr: Option<String>,
}

impl DependencyReference {
    /// `kind`, else `dependent_kind` (the kind of the object holding the reference: Flux's
    /// Kustomizations depend on Kustomizations, its HelmReleases on HelmReleases).
    pub fn kind_or<'a>(&'a self, dependent_kind: &'a str) -> &'a str {
        set(&self.kind).unwrap_or(dependent_kind)
    }
}

/// `spec.sourceRef`: Flux's `CrossNamespaceSourceReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceSourceReference {
    /// API version of the source (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `GitRepository`, `OCIRepository`, `Bucket` or `ExternalArtifact`.
    #[schemars(extend("enum" = SOURCE_KINDS))]
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; the Kustomization's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.kubeConfig`: Flux's `meta.KubeConfigReference` (exactly one of the two, CEL rules).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": KUBECONFIG_ONE_OF, "rule": "has(self.configMapRef) || has(self.secretRef)"},
    {"message": KUBECONFIG_ONE_OF, "rule": "!has(self.configMapRef) || !has(self.secretRef)"},
]))]
pub struct KubeConfigReference {
    /// ConfigMap with the remote cluster's address and a workload-identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectReference>,
    /// Secret with a kubeconfig (key `value` or `value.yaml` unless `key` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyReference>,
}

/// A Secret and one of its keys (Flux's `meta.SecretKeyReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret; the consumer's default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `spec.postBuild`: Flux's `PostBuild`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// `WithVariables` (default: substitute only when a variable is defined) or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = SUBSTITUTE_STRATEGIES))]
    pub substitute_strategy: Option<String>,
    /// Inline variables; they win over `substituteFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    /// ConfigMaps and Secrets whose keys are variables, read in order (later ones win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

/// `spec.postBuild.substituteFrom[]`: Flux's `SubstituteReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    #[schemars(extend("enum" = ["Secret", "ConfigMap"]))]
    pub kind: String,
    /// Name of the object, in the Kustomization's namespace.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// A missing object is skipped instead of failing the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub optional: Option<bool>,
}

/// `spec.healthChecks[]`: Flux's `meta.NamespacedObjectKindReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectKindReference {
    /// API version of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object; the Kustomization's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.patches[]`: Flux's `kustomize.Patch`, written into the generated overlay as is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Patch {
    /// A strategic merge patch or a JSON 6902 patch (YAML list of operations).
    pub patch: String,
    /// Objects the patch applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Selector>,
}

/// Flux's `kustomize.Selector` (kustomize's patch target).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// API version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (a regular expression in kustomize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace (a regular expression in kustomize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Annotation selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_selector: Option<String>,
}

/// `spec.images[]`: Flux's `kustomize.Image`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image name to match in the manifests.
    pub name: String,
    /// Replacement name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_name: Option<String>,
    /// Replacement tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_tag: Option<String>,
    /// Replacement digest (wins over `newTag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// `spec.decryption`: Flux's `Decryption`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// `sops`.
    #[schemars(extend("enum" = ["sops"]))]
    pub provider: String,
    /// Service account for cloud KMS workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Secret with the keys (`*.agekey`, `*.asc`, `sops.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// `spec.commonMetadata`: Flux's `CommonMetadata`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommonMetadata {
    /// Annotations added to every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels added to every object (not to selectors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `spec.healthCheckExprs[]`: Flux's `kustomize.CustomHealthCheck` (CEL over the object).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomHealthCheck {
    /// API version of the kind the rule is for.
    pub api_version: String,
    /// Kind the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// CEL: the object is healthy (Current).
    pub current: String,
    /// CEL: the object is still progressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
    /// CEL: the object failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// `spec.ignore[]`: Flux's `IgnoreRule`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IgnoreRule {
    /// JSON pointers (RFC 6901) excluded from drift detection and apply.
    pub paths: Vec<String>,
    /// Objects the rule applies to; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Selector>,
}

/// Status of a Kustomization. Same fields as Flux's `KustomizationStatus`; the CRD defaults it
/// to `{observedGeneration: -1}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct KustomizationStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `metav1.Condition`s: Ready, Reconciling, Stalled, Healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Source revision of the last successful apply, e.g. `main@sha1:<40 hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Origin revision (`org.opencontainers.image.revision`) of the last successful apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_origin_revision: Option<String>,
    /// Source revision of the last attempt, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Objects applied by the last successful reconcile (the prune set is computed from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<ResourceInventory>,
    /// The last [`HISTORY_MAX_SIZE`] reconciliations, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Snapshot>,
    /// pennant: the last source revision whose Canaries (those targeting an applied Deployment
    /// or DaemonSet) all promoted its pod templates, so CI can ask "was my commit promoted?"
    /// (flagger#830). Unset while no Canary targets an applied workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_revision: Option<String>,
    /// pennant: the last source revision a Canary rolled back (`Ready=False`, `CanaryFailed`):
    /// not fetched nor applied again, on an interval or after a restart, until the source
    /// moves or the spec changes (flagger#1577).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<String>,
}

/// `status.inventory`: Flux's `ResourceInventory` (`entries` always present, possibly empty).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ResourceInventory {
    /// One entry per applied object.
    pub entries: Vec<ResourceRef>,
}

/// One inventory entry: Flux's `ResourceRef`.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub struct ResourceRef {
    /// `<namespace>_<name>_<group>_<kind>`: empty namespace for cluster-scoped objects, empty
    /// group for the core group (`_ns1__Namespace`).
    pub id: String,
    /// The object's API version (`v1`, `v1beta1`), without the group.
    pub v: String,
}

/// One `status.history` entry: Flux's `meta.Snapshot`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// `sha256:<hex>` of the built manifests.
    pub digest: String,
    /// First reconcile of this digest.
    pub first_reconciled: Time,
    /// Last reconcile of this digest.
    pub last_reconciled: Time,
    /// Duration of the last reconcile, a Go duration string (`1.2s`).
    pub last_reconciled_duration: String,
    /// `ReconciliationSucceeded`, or the failure reason.
    pub last_reconciled_status: String,
    /// How many reconciles saw this digest.
    pub total_reconciliations: i64,
    /// `revision` and `originRevision` of the source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Kustomization {
    /// `spec.interval`; `None` when malformed or zero.
    pub fn interval(&self) -> Option<Duration> {
        parse_interval(&self.spec.interval)
    }

    /// `spec.retryInterval`, else `spec.interval` (Flux's `GetRetryInterval`).
    pub fn retry_interval(&self) -> Option<Duration> {
        match set(&self.spec.retry_interval) {
            Some(r) => parse_interval(r),
            None => self.interval(),
        }
    }

    /// Bound of one apply plus health checks: `spec.timeout`, else `interval − 30s`; never
    /// below 30 s (Flux's `GetTimeout`). `None` when the durations are malformed.
    pub fn timeout(&self) -> Option<Duration> {
        let d = match set(&self.spec.timeout) {
            Some(t) => parse_duration(t)?,
            None => self.interval()?.saturating_sub(MIN_TIMEOUT),
        };
        Some(d.max(MIN_TIMEOUT))
    }

    /// `spec.deletionPolicy`, `MirrorPrune` when empty.
    pub fn deletion_policy(&self) -> &str {
        set(&self.spec.deletion_policy).unwrap_or("MirrorPrune")
    }

    /// `spec.postBuild.substituteStrategy`, `WithVariables` when empty.
    pub fn substitute_strategy(&self) -> &str {
        self.spec
            .post_build
            .as_ref()
            .and_then(|p| set(&p.substitute_strategy))
            .unwrap_or("WithVariables")
    }

    /// `spec.path` without a leading `./`, `""` for the artifact root.
    pub fn path(&self) -> &str {
        let p = set(&self.spec.path).unwrap_or("");
        p.trim_start_matches("./")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ks(spec: serde_json::Value) -> Kustomization {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn base() -> serde_json::Value {
        json!({"interval": "10m", "prune": true,
               "sourceRef": {"kind": "GitRepository", "name": "flux-system"}})
    }

    #[test]
    fn timeout_follows_flux_get_timeout() {
        let cases = [
            (json!({"interval": "10m"}), 570),
            (json!({"interval": "10m", "timeout": "2m"}), 120),
            (json!({"interval": "45s"}), 30), // 15 s raised to the floor
            (json!({"interval": "10m", "timeout": "5s"}), 30),
            (json!({"interval": "1h", "timeout": "90m"}), 5400),
        ];
        for (over, secs) in cases {
            let mut spec = base();
            spec.as_object_mut()
                .unwrap()
                .extend(over.as_object().unwrap().clone());
            let k = ks(spec.clone());
            assert_eq!(k.timeout(), Some(Duration::from_secs(secs)), "{spec}");
        }
        let mut spec = base();
        spec["timeout"] = json!("soon");
        assert_eq!(ks(spec).timeout(), None);
    }

    #[test]
    fn defaults_of_the_helpers() {
        let k = ks(base());
        assert_eq!(k.retry_interval(), Some(Duration::from_secs(600)));
        assert_eq!(k.deletion_policy(), "MirrorPrune");
        assert_eq!(k.substitute_strategy(), "WithVariables");
        assert_eq!(k.path(), "");
        let mut spec = base();
        spec["retryInterval"] = json!("2m");
        spec["deletionPolicy"] = json!("Orphan");
        spec["path"] = json!("./apps/production");
        spec["postBuild"] = json!({"substituteStrategy": "Always"});
        let k = ks(spec);
        assert_eq!(k.retry_interval(), Some(Duration::from_secs(120)));
        assert_eq!(k.deletion_policy(), "Orphan");
        assert_eq!(k.substitute_strategy(), "Always");
        assert_eq!(k.path(), "apps/production");
    }

    #[test]
    fn status_round_trips_in_fluxs_shape() {
        let status = json!({
            "observedGeneration": 3,
            "lastAppliedRevision": "main@sha1:5394cb7f48332b2de7c17dd8b8384bbc84b7e738",
            "lastAttemptedRevision": "main@sha1:5394cb7f48332b2de7c17dd8b8384bbc84b7e738",
            "inventory": {"entries": [
                {"id": "_apps__Namespace", "v": "v1"},
                {"id": "apps_podinfo_apps_Deployment", "v": "v1"},
            ]},
            "history": [{
                "digest": "sha256:0f1e",
                "firstReconciled": "2026-12-05T10:00:00Z",
                "lastReconciled": "2026-12-05T11:00:00Z",
                "lastReconciledDuration": "1.2s",
                "lastReconciledStatus": "ReconciliationSucceeded",
                "totalReconciliations": 2,
                "metadata": {"revision": "main@sha1:5394cb7f48332b2de7c17dd8b8384bbc84b7e738"},
            }],
        });
        let s: KustomizationStatus = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(s.inventory.as_ref().unwrap().entries[1].v, "v1");
        assert_eq!(serde_json::to_value(&s).unwrap(), status);
        // an empty inventory keeps its `entries`, as Flux writes it
        let empty = KustomizationStatus {
            inventory: Some(ResourceInventory::default()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            json!({"inventory": {"entries": []}})
        );
    }
}
