//! The Kubernetes Events of the GitOps controllers, as Flux's event recorder
//! (`fluxcd/pkg/runtime/events`) writes them: a core/v1 Event on the object with Flux's reason
//! and type, `source.component` naming the Flux controller (`source-controller`,
//! `kustomize-controller`), the metadata as annotations `<group>/<key>` (`revision`, `digest`),
//! `firstTimestamp`/`lastTimestamp`/`count` set, the message cut to the API server's 1024
//! bytes. [`event`] builds one (PURE, `now` passed in); [`emit`] logs and posts it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{MESSAGE_MAX_BYTES, truncate_message};

/// Who records: one per controller.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    /// `source.component`: Flux's controller name, so tools filtering on it read pennant's.
    pub component: &'a str,
    /// `reportingComponent`, e.g. `pennant.dev/source`.
    pub reporting_component: &'a str,
    /// `reportingInstance`: the pod's name.
    pub instance: &'a str,
    /// The API group the annotation keys are prefixed with, e.g. `source.toolkit.fluxcd.io`.
    pub group: &'a str,
    /// Field manager of the create.
    pub field_manager: &'a str,
}

/// One Event's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// `Warning`, else `Normal`.
    pub warning: bool,
    /// Flux's reason (`NewArtifact`, `ReconciliationSucceeded`, …).
    pub reason: &'a str,
    /// The message; it must carry no secret.
    pub message: &'a str,
    /// Flux's event metadata (`revision`, `digest`), keys without the group prefix.
    pub annotations: &'a BTreeMap<String, String>,
}

/// The Event recording `note` on `obj` at `now` (named `<name>.<now in hex ns>`).
pub fn event<K>(obj: &K, note: &Note<'_>, reporter: &Reporter<'_>, now: Timestamp) -> Event
where
    K: Resource<DynamicType = ()>,
{
    let annotations: BTreeMap<String, String> = note
        .annotations
        .iter()
        .map(|(k, v)| (format!("{}/{k}", reporter.group), v.clone()))
        .collect();
    Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
            namespace: obj.namespace(),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            ..Default::default()
        },
        involved_object: obj.object_ref(&()),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(note.reason.to_string()),
        message: Some(truncate_message(note.message, MESSAGE_MAX_BYTES).into_owned()),
        source: Some(EventSource {
            component: Some(reporter.component.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".into()),
        reporting_component: Some(reporter.reporting_component.into()),
        reporting_instance: Some(reporter.instance.to_string()),
        ..Default::default()
    }
}

/// Log `note` and record it as an Event on `obj` ([`event`]); a failed create is logged, never
/// returned (an Event is best effort, as in Flux).
pub async fn emit<K>(client: &Client, obj: &K, note: &Note<'_>, reporter: &Reporter<'_>)
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    let name = obj.name_any();
    if note.warning {
        warn!(kind = %kind, name = %name, reason = %note.reason, "{}", note.message);
    } else {
        info!(kind = %kind, name = %name, reason = %note.reason, "{}", note.message);
    }
    let ev = event(obj, note, reporter, Timestamp::now());
    let api: Api<Event> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let pp = PostParams {
        field_manager: Some(reporter.field_manager.into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&pp, &ev).await {
        warn!("event: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn reporter() -> Reporter<'static> {
        Reporter {
            component: "kustomize-controller",
            reporting_component: "pennant.dev/kustomize",
            instance: "pennant-0",
            group: "kustomize.toolkit.fluxcd.io",
            field_manager: "pennant",
        }
    }

    #[test]
    fn an_event_carries_fluxs_fields_and_prefixed_metadata() {
        let mut obj = ConfigMap::default();
        obj.metadata.name = Some("apps".into());
        obj.metadata.namespace = Some("flux-system".into());
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let annotations = BTreeMap::from([("revision".to_string(), "main@sha1:abc".to_string())]);
        let note = Note {
            warning: true,
            reason: "BuildFailed",
            message: &"é".repeat(600),
            annotations: &annotations,
        };
        let ev = event(&obj, &note, &reporter(), now);
        assert_eq!(
            ev.metadata.name.as_deref(),
            Some(format!("apps.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("flux-system"));
        assert_eq!(
            ev.metadata.annotations.unwrap()["kustomize.toolkit.fluxcd.io/revision"],
            "main@sha1:abc"
        );
        assert_eq!(ev.involved_object.name.as_deref(), Some("apps"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reason.as_deref(), Some("BuildFailed"));
        let message = ev.message.unwrap();
        assert!(message.len() <= MESSAGE_MAX_BYTES, "{}", message.len());
        assert!(message.starts_with('é'));
        assert_eq!(
            ev.source.unwrap().component.as_deref(),
            Some("kustomize-controller")
        );
        assert_eq!(ev.count, Some(1));
        assert_eq!(ev.first_timestamp, Some(Time(now)));
        assert_eq!(ev.reporting_instance.as_deref(), Some("pennant-0"));
    }

    #[test]
    fn an_event_without_metadata_has_no_annotations() {
        let mut obj = ConfigMap::default();
        obj.metadata.name = Some("apps".into());
        let empty = BTreeMap::new();
        let note = Note {
            warning: false,
            reason: "ReconciliationSucceeded",
            message: "ok",
            annotations: &empty,
        };
        let ev = event(&obj, &note, &reporter(), Timestamp::UNIX_EPOCH);
        assert_eq!(ev.metadata.annotations, None);
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
    }
}
