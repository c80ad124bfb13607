//! `HelmRepository` (`source.toolkit.fluxcd.io/v1`, short name `helmrepo`): a Helm chart
//! repository, `type: default` (an `index.yaml` over HTTP(S), stored as an artifact) or
//! `type: oci` (a static object the HelmCharts pull from directly). Same schema as Flux
//! source-controller v1.9's `HelmRepository`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Artifact, Condition, INTERVAL_PATTERN, LocalObjectReference, OCI_PROVIDERS, TIMEOUT_PATTERN,
};

/// Values of `spec.type`.
pub const HELM_REPOSITORY_TYPES: [&str; 2] = ["default", "oci"];

/// Spec of a HelmRepository. Same fields as Flux's `HelmRepositorySpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmRepository",
    namespaced,
    status = "HelmRepositoryStatus",
    shortname = "helmrepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
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
pub struct HelmRepositorySpec {
    /// `http(s)://` (type `default`, the directory holding `index.yaml`) or `oci://` (type `oci`).
    #[schemars(extend("pattern" = "^(http|https|oci)://.*$"))]
    pub url: String,
    /// Secret with `username` + `password` (its TLS keys are deprecated: use `certSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret with `tls.crt`, `tls.key`, `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// Send the credentials to chart URLs on other hosts than `url`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_credentials: Option<bool>,
    /// How often to download the index, a Go duration (optional: a `type: oci` repository is
    /// never reconciled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: Option<String>,
    /// Plain HTTP to an OCI registry (`type: oci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Bound of one index download, a Go duration; 60 s when absent (Flux's code default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = TIMEOUT_PATTERN))]
    pub timeout: Option<String>,
    /// Stop reconciling (the last artifact stays served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Namespaces allowed to refer to it (a placeholder in Flux, not acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_from: Option<AccessFrom>,
    /// `default` (HTTP(S) index, the default) or `oci`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    #[schemars(extend("enum" = HELM_REPOSITORY_TYPES))]
    pub type_: Option<String>,
    /// Registry login for `type: oci`: `generic` (default), `aws`, `azure`, `gcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = OCI_PROVIDERS, "default" = "generic"))]
    pub provider: Option<String>,
}

impl HelmRepositorySpec {
    /// True for `type: oci`: a static object, never reconciled (Flux source-controller ≥ 1.2).
    pub fn is_oci(&self) -> bool {
        self.type_.as_deref() == Some("oci")
    }
}

/// `spec.accessFrom`: Flux's `acl.AccessFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessFrom {
    /// Namespaces, by labels, allowed to refer to the object.
    pub namespace_selectors: Vec<NamespaceSelector>,
}

/// One namespace selector of `accessFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// Status of a HelmRepository. Same fields as Flux's `HelmRepositoryStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct HelmRepositoryStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `metav1.Condition`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Stable address of the last index (`.../index.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
