//! `Alert` (`notification.toolkit.fluxcd.io/v1beta3`): which events go to which Provider. Same
//! schema as Flux notification-controller v1.9.3's
//! (`config/crd/bases/notification.toolkit.fluxcd.io_alerts.yaml`), with `Canary` added to the
//! kinds `eventSources` accepts (pennant's Canary controller publishes events too).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::source::LocalObjectReference;

/// Kinds `spec.eventSources[].kind` accepts: Flux's enum, in Flux's order, then `Canary`.
pub const EVENT_SOURCE_KINDS: &[&str] = &[
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
    "ArtifactGenerator",
    "ExternalArtifact",
    "Canary",
];

/// Values of `spec.eventSeverity`: `info` (default: every event) or `error` (errors only).
pub const EVENT_SEVERITIES: [&str; 2] = ["info", "error"];

/// Spec of an Alert. Same fields as Flux's `AlertSpec` (v1beta3).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "notification.toolkit.fluxcd.io",
    version = "v1beta3",
    kind = "Alert",
    namespaced,
    category = "all",
    category = "fluxcd",
    category = "fluxcd-notifications",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// The Provider, in the Alert's namespace.
    pub provider_ref: LocalObjectReference,
    /// `info` lets every event through, errors included; `error` only errors. Default `info`.
    #[serde(default = "default_severity")]
    #[schemars(extend("enum" = EVENT_SEVERITIES, "default" = "info"))]
    pub event_severity: String,
    /// The objects whose events are sent.
    pub event_sources: Vec<CrossNamespaceObjectReference>,
    /// Go (RE2) regular expressions over the message; when set, one must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_list: Vec<String>,
    /// Go (RE2) regular expressions over the message; any match drops the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusion_list: Vec<String>,
    /// Metadata added to every notification; the event's own keys win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub event_metadata: BTreeMap<String, String>,
    /// Deprecated: becomes `eventMetadata.summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 255))]
    pub summary: Option<String>,
    /// Stop sending this Alert's notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

fn default_severity() -> String {
    "info".into()
}

/// An object (or, with name `*`, every object of a kind) whose events an Alert sends. Flux's
/// `CrossNamespaceObjectReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    /// API version of the referent (not matched, as in Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent, one of [`EVENT_SOURCE_KINDS`].
    #[schemars(extend("enum" = EVENT_SOURCE_KINDS))]
    pub kind: String,
    /// Name of the referent, or `*` for every object of the kind.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Namespace of the referent; the Alert's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub namespace: Option<String>,
    /// Labels the object must carry (ANDed); requires name `*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl AlertSpec {
    /// Whether `spec.suspend` is true.
    pub fn suspended(&self) -> bool {
        self.suspend == Some(true)
    }
}
