//! The Event Flux's controllers post to notification-controller (`event.toolkit.fluxcd.io`
//! v1beta1, `fluxcd/pkg/apis/event`): the JSON pennant's controllers publish on the in-process
//! bus and the `generic` Provider posts.
//!
//! ```json
//! {"involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "apps",
//!                     "uid": "…", "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
//!                     "resourceVersion": "…"},
//!  "severity": "info", "timestamp": "2026-12-06T10:00:00Z", "message": "…",
//!  "reason": "ReconciliationSucceeded",
//!  "metadata": {"kustomize.toolkit.fluxcd.io/revision": "main@sha1:…"},
//!  "reportingController": "kustomize-controller", "reportingInstance": "pennant-0"}
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `severity` of an informational event (Kubernetes `Normal`).
pub const SEVERITY_INFO: &str = "info";
/// `severity` of an error event (Kubernetes `Warning`).
pub const SEVERITY_ERROR: &str = "error";
/// Longest `message`, in characters (Flux's `MaxLength` on the field).
pub const EVENT_MESSAGE_MAX: usize = 39_000;
/// Group of the metadata keys of the event API itself (`event.toolkit.fluxcd.io/<key>`).
pub const EVENT_GROUP: &str = "event.toolkit.fluxcd.io";

/// Metadata key of the revision (`<group>/revision` on the wire).
pub const META_REVISION: &str = "revision";
/// Metadata key of the origin revision.
pub const META_ORIGIN_REVISION: &str = "originRevision";
/// Metadata key of a token that makes otherwise equal events distinct (Flux's `token`).
pub const META_TOKEN: &str = "token";
/// Metadata key naming a commit (`event.toolkit.fluxcd.io/commit`).
pub const META_COMMIT: &str = "commit";
/// Metadata key marking an event that updates a commit status (value `update`).
pub const META_COMMIT_STATUS: &str = "commit_status";

/// One event: Flux's `eventv1.Event`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The object the event is about: kind, namespace, name, uid, apiVersion, resourceVersion.
    pub involved_object: ObjectReference,
    /// [`SEVERITY_INFO`] or [`SEVERITY_ERROR`].
    pub severity: String,
    /// When the event happened (RFC 3339, whole seconds: [`event_time`]).
    pub timestamp: Timestamp,
    /// Human-readable text, at most [`EVENT_MESSAGE_MAX`] characters.
    pub message: String,
    /// A short CamelCase reason (`ReconciliationSucceeded`, `NewArtifact`).
    pub reason: String,
    /// Metadata, keys prefixed with a group (`<group>/revision`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Who emitted it (`kustomize-controller`, `flagger`).
    pub reporting_controller: String,
    /// Which instance (the pod's name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}

impl Event {
    /// The API group of the involved object (`kustomize.toolkit.fluxcd.io`); empty for core.
    pub fn group(&self) -> &str {
        let v = self.involved_object.api_version.as_deref().unwrap_or("");
        v.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Whether the severity is [`SEVERITY_ERROR`].
    pub fn is_error(&self) -> bool {
        self.severity == SEVERITY_ERROR
    }

    /// `<Kind>/<namespace>/<name>`, for messages.
    pub fn object_string(&self) -> String {
        let o = &self.involved_object;
        format!(
            "{}/{}/{}",
            o.kind.as_deref().unwrap_or(""),
            o.namespace.as_deref().unwrap_or(""),
            o.name.as_deref().unwrap_or("")
        )
    }

    /// Flux's severity of a Kubernetes event type: `Warning` → error, anything else → info.
    pub fn severity_of(warning: bool) -> &'static str {
        if warning {
            SEVERITY_ERROR
        } else {
            SEVERITY_INFO
        }
    }
}

/// `now` at whole seconds: Flux's `metav1.Time` is RFC 3339 without a fraction on the wire.
pub fn event_time(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// `message` cut to [`EVENT_MESSAGE_MAX`] characters.
pub fn truncate_event_message(message: &str) -> String {
    message.chars().take(EVENT_MESSAGE_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_fluxs_event_json() {
        let e = Event {
            involved_object: ObjectReference {
                kind: Some("Kustomization".into()),
                namespace: Some("flux-system".into()),
                name: Some("apps".into()),
                api_version: Some("kustomize.toolkit.fluxcd.io/v1".into()),
                ..Default::default()
            },
            severity: SEVERITY_INFO.into(),
            timestamp: Timestamp::from_second(1_700_000_000).unwrap(),
            message: "ok".into(),
            reason: "ReconciliationSucceeded".into(),
            metadata: BTreeMap::from([(
                "kustomize.toolkit.fluxcd.io/revision".into(),
                "main@sha1:abc".into(),
            )]),
            reporting_controller: "kustomize-controller".into(),
            reporting_instance: "pennant-0".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["involvedObject"]["kind"], "Kustomization");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["reportingController"], "kustomize-controller");
        assert_eq!(
            v["metadata"]["kustomize.toolkit.fluxcd.io/revision"],
            "main@sha1:abc"
        );
        assert_eq!(e.group(), "kustomize.toolkit.fluxcd.io");
        assert_eq!(e.object_string(), "Kustomization/flux-system/apps");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            truncate_event_message(&"é".repeat(40_000)).chars().count(),
            39_000
        );
    }
}
