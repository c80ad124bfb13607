//! `ExternalArtifact` (`source.toolkit.fluxcd.io/v1`, short name `ea`, Flux 2.7+): a
//! status-only source kind. Another controller (here the ArtifactGenerator reconciler,
//! `crate::source::controller`) stores an artifact and writes `status.artifact` and
//! `status.conditions`; `spec.sourceRef` names the object that produced it. Appliers accept it
//! as a `sourceRef` kind like the other sources. Same schema as source-controller v1.9's
//! `ExternalArtifact` (`api/v1/externalartifact_types.go`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Artifact, Condition};

/// Spec of an ExternalArtifact: only the producer's reference.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "ExternalArtifact",
    namespaced,
    status = "ExternalArtifactStatus",
    shortname = "ea",
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
    ),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceRef.name")
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactSpec {
    /// The object the artifact is generated for (e.g. an ArtifactGenerator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<NamespacedObjectKindReference>,
}

/// A reference to an object of any kind, maybe in another namespace (Flux's
/// `meta.NamespacedObjectKindReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectKindReference {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; the referring object's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Status of an ExternalArtifact, written by its producer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactStatus {
    /// The stored artifact consumers download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// `metav1.Condition`s (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An ExternalArtifact read as any other source by the code that consumes sources (its
/// producer owns the schedule: no interval, timeout or suspension of its own).
impl super::Source for ExternalArtifact {
    fn interval(&self) -> Option<&str> {
        None
    }
    fn timeout(&self) -> Option<&str> {
        None
    }
    fn suspended(&self) -> bool {
        false
    }
    fn artifact(&self) -> Option<&Artifact> {
        self.status.as_ref().and_then(|s| s.artifact.as_ref())
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn last_handled_reconcile_at(&self) -> Option<&str> {
        None
    }
    /// The `Ready` condition's `observedGeneration` (the kind has no `status.observedGeneration`).
    fn observed_generation(&self) -> i64 {
        self.conditions()
            .iter()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.observed_generation)
            .unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::source::Source;

    #[test]
    fn external_artifact_round_trips_in_fluxs_shape_and_reads_as_a_source() {
        let json = serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "ExternalArtifact",
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1},
            "spec": {"sourceRef": {
                "apiVersion": "source.extensions.fluxcd.io/v1beta1",
                "kind": "ArtifactGenerator",
                "name": "flux-system",
                "namespace": "flux-system"
            }},
            "status": {
                "artifact": {
                    "path": "externalartifact/flux-system/apps/1234.tar.gz",
                    "url": "http://source-controller.flux-system.svc/externalartifact/flux-system/apps/1234.tar.gz",
                    "revision": "latest@sha256:0a0b",
                    "digest": "sha256:0a0b",
                    "lastUpdateTime": "2026-12-05T10:00:00Z"
                },
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Succeeded",
                    "message": "Artifact is ready", "observedGeneration": 1,
                    "lastTransitionTime": "2026-12-05T10:00:00Z"
                }]
            }
        });
        let ea: ExternalArtifact = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&ea).unwrap(), json);
        assert_eq!(ea.artifact().unwrap().revision, "latest@sha256:0a0b");
        assert_eq!(ea.observed_generation(), 1);
        assert_eq!(ea.interval(), None);
        let empty = ExternalArtifact::new("x", ExternalArtifactSpec::default());
        assert_eq!((empty.artifact(), empty.observed_generation()), (None, -1));
    }
}
