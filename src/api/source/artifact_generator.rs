//! `ArtifactGenerator` (`source.extensions.fluxcd.io/v1beta1`, short name `ag`): composes
//! artifacts from other sources (Flux's source-watcher). Each entry of `spec.artifacts` becomes
//! an [`super::ExternalArtifact`] of the same name whose tarball holds the files its `copy`
//! operations select (`@<alias>/<glob>` → `@artifact/<path>`). Same schema as source-watcher
//! v2's `ArtifactGenerator` (`api/v1beta1/artifactgenerator_types.go`).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// API group of the ArtifactGenerator.
pub const EXTENSIONS_GROUP: &str = "source.extensions.fluxcd.io";
/// `apiVersion` of the ArtifactGenerator.
pub const EXTENSIONS_API_VERSION: &str = "source.extensions.fluxcd.io/v1beta1";
/// The ArtifactGenerator's finalizer (source-watcher's, not `finalizers.fluxcd.io`).
pub const GENERATOR_FINALIZER: &str = "source.extensions.fluxcd.io/finalizer";
/// Label on each generated ExternalArtifact: the generator's UID.
pub const GENERATOR_LABEL: &str = "source.extensions.fluxcd.io/generator";
/// Annotation `source.extensions.fluxcd.io/reconcile: disabled` pauses a generator.
pub const GENERATOR_RECONCILE_ANNOTATION: &str = "source.extensions.fluxcd.io/reconcile";
/// Artifact metadata key `originRevision` fills.
pub const ORIGIN_REVISION_KEY: &str = "org.opencontainers.image.revision";
/// Values of `spec.sources[].kind`.
pub const GENERATOR_SOURCE_KINDS: [&str; 5] = [
    "Bucket",
    "GitRepository",
    "OCIRepository",
    "HelmChart",
    "ExternalArtifact",
];
/// Values of `spec.artifacts[].copy[].strategy` (`Overwrite` when absent).
pub const COPY_STRATEGIES: [&str; 3] = ["Overwrite", "Merge", "Extract"];

const ALIAS_PATTERN: &str = "^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$";
const ALIAS_REF_PATTERN: &str = "^@([a-z0-9]([a-z0-9_-]*[a-z0-9])?)$";
/// `to`: `@artifact/` then segments none of which is `..` (source-watcher v2.2's pattern).
const TO_PATTERN: &str = "^@artifact/([^/]{0,1}|[^./][^/]|[.][^./]|[^/]{3,})(/([^/]{0,1}|[^./][^/]|[.][^./]|[^/]{3,}))*$";
const FROM_PATTERN: &str = "^@([a-z0-9]([a-z0-9_-]*[a-z0-9])?)/(.*)$";

/// Spec of an ArtifactGenerator. Same fields as source-watcher's `ArtifactGeneratorSpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.extensions.fluxcd.io",
    version = "v1beta1",
    kind = "ArtifactGenerator",
    namespaced,
    status = "ArtifactGeneratorStatus",
    shortname = "ag",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
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
    "message": "artifact names must be valid Kubernetes object names when pathPattern is not set",
    "rule": "has(self.pathPattern) && size(self.pathPattern) > 0 || self.artifacts.all(a, a.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))"
}]))]
pub struct ArtifactGeneratorSpec {
    /// Labels and annotations set on every generated ExternalArtifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// The sources read, by alias (1 to 1000).
    #[schemars(extend("minItems" = 1, "maxItems" = 1000))]
    pub sources: Vec<GeneratorSourceReference>,
    /// `@<alias>/<pattern>` with `{name}` captures expanding the artifacts per directory
    /// (accepted, not implemented: the generator reports it and generates nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = FROM_PATTERN, "maxLength" = 1024))]
    pub path_pattern: Option<String>,
    /// The artifacts to generate (1 to 1000).
    #[schemars(extend("minItems" = 1, "maxItems" = 1000))]
    pub artifacts: Vec<OutputArtifact>,
}

/// `spec.commonMetadata`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CommonMetadata {
    /// Annotations added to each ExternalArtifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels added to each ExternalArtifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `spec.sources[]`: source-watcher's `SourceReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GeneratorSourceReference {
    /// Name of the source inside the generator (`@<alias>`), unique.
    #[schemars(extend("pattern" = ALIAS_PATTERN, "maxLength" = 63))]
    pub alias: String,
    /// Name of the source object.
    #[schemars(extend("pattern" = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", "maxLength" = 253))]
    pub name: String,
    /// Namespace of the source object; the generator's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "pattern" = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        "minLength" = 1,
        "maxLength" = 63
    ))]
    pub namespace: Option<String>,
    /// Kind of the source object.
    #[schemars(extend("enum" = GENERATOR_SOURCE_KINDS))]
    pub kind: String,
}

/// `spec.artifacts[]`: one ExternalArtifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputArtifact {
    /// Name of the ExternalArtifact.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// `@<alias>`: the artifact takes that source's revision; else `latest@<digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = ALIAS_REF_PATTERN, "maxLength" = 64))]
    pub revision: Option<String>,
    /// `@<alias>`: that source's origin revision (or revision) is put in the artifact's
    /// metadata as `org.opencontainers.image.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = ALIAS_REF_PATTERN, "maxLength" = 64))]
    pub origin_revision: Option<String>,
    /// Copy operations, applied in order (later ones overwrite).
    #[schemars(extend("minItems" = 1))]
    pub copy: Vec<CopyOperation>,
}

/// `spec.artifacts[].copy[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CopyOperation {
    /// `@<alias>/<path or glob>`.
    #[schemars(extend("pattern" = FROM_PATTERN, "minLength" = 1, "maxLength" = 1024))]
    pub from: String,
    /// `@artifact/<path>`; a trailing `/` names a directory.
    #[schemars(extend("pattern" = TO_PATTERN, "minLength" = 1, "maxLength" = 1024))]
    pub to: String,
    /// Globs of files and directories not copied (relative to the source root or to the
    /// literal prefix of `from`; a pattern without `/` matches the file name at any depth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 100, "items" = {"type": "string", "maxLength": 1024}))]
    pub exclude: Option<Vec<String>>,
    /// `Overwrite` (default), `Merge` (YAML, Helm values merge) or `Extract` (tarballs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = COPY_STRATEGIES))]
    pub strategy: Option<String>,
}

/// Status of an ArtifactGenerator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactGeneratorStatus {
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// `metav1.Condition`s (`Ready`, `Reconciling`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The ExternalArtifacts generated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<ExternalArtifactReference>,
    /// `sha256:<hex>` over the sources' digest, revision and URL: a new value regenerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_sources_digest: Option<String>,
}

/// `status.inventory[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ExternalArtifactReference {
    /// Name of the ExternalArtifact.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Digest of its tarball.
    pub digest: String,
    /// File name of its tarball in storage.
    pub filename: String,
}
