//! The Kubernetes Events of the GitOps controllers, as Flux's event recorder
//! (`fluxcd/pkg/runtime/events`) writes them: a core/v1 Event on the object with Flux's reason
//! and type, `source.component` naming the Flux controller (`source-controller`,
//! `kustomize-controller`), the metadata as annotations `<group>/<key>` (`revision`, `digest`),
//! `firstTimestamp`/`lastTimestamp`/`count` set, the message cut to the API server's 1024
//! bytes. [`event`] builds one (PURE, `now` passed in); [`emit`] logs and posts it.
//!
//! [`emit`] also publishes the same note as a Flux notification Event ([`flux_event`], the JSON
//! Flux's controllers post to notification-controller's `--events-addr`) on the process's event
//! bus ([`publish`], [`subscribe`]), which the `notification` controller consumes. The bus is one
//! per process, as Flux's events address is one per installation; with no subscriber (the
//! notification controller disabled) publishing costs nothing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{Event, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::notification::{self as flux, truncate_event_message};
use crate::api::{MESSAGE_MAX_BYTES, truncate_message};

/// Events the bus holds for a slow subscriber before the oldest are dropped (a lagging
/// notification controller logs how many it missed; events are best effort, as in Flux).
pub const BUS_CAPACITY: usize = 1024;

fn bus() -> &'static tokio::sync::broadcast::Sender<flux::Event> {
    static BUS: OnceLock<tokio::sync::broadcast::Sender<flux::Event>> = OnceLock::new();
    BUS.get_or_init(|| tokio::sync::broadcast::channel(BUS_CAPACITY).0)
}

/// Publish `event` to every subscriber of the process's event bus; dropped when nobody
/// subscribes.
pub fn publish(event: flux::Event) {
    let _ = bus().send(event);
}

/// A receiver of every Event published from now on (the `notification` controller's).
pub fn subscribe() -> tokio::sync::broadcast::Receiver<flux::Event> {
    bus().subscribe()
}

/// The Flux notification Event of `note` on `obj` at `now` (PURE): severity `error` for a
/// Warning, `info` otherwise; metadata keys prefixed with `reporter.group`
/// (`kustomize.toolkit.fluxcd.io/revision`); `reportingController` is `reporter.component`.
/// Same shape as Flux's `fluxcd/pkg/runtime/events` recorder posts.
pub fn flux_event<K>(
    obj: &K,
    note: &Note<'_>,
    reporter: &Reporter<'_>,
    now: Timestamp,
) -> flux::Event
where
    K: Resource<DynamicType = ()>,
{
    let mut involved = obj.object_ref(&());
    involved.field_path = None;
    flux::Event {
        involved_object: involved,
        severity: flux::Event::severity_of(note.warning).into(),
        timestamp: flux::event_time(now),
        message: truncate_event_message(note.message),
        reason: note.reason.to_string(),
        metadata: note
            .annotations
            .iter()
            .map(|(k, v)| (format!("{}/{k}", reporter.group), v.clone()))
            .collect(),
        reporting_controller: reporter.component.to_string(),
        reporting_instance: reporter.instance.to_string(),
    }
}

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
    let now = Timestamp::now();
    publish(flux_event(obj, note, reporter, now));
    let ev = event(obj, note, reporter, now);
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
    fn the_flux_event_has_severity_prefixed_metadata_and_the_reporter() {
        let mut obj = ConfigMap::default();
        obj.metadata.name = Some("apps".into());
        obj.metadata.namespace = Some("flux-system".into());
        obj.metadata.uid = Some("u-1".into());
        let annotations = BTreeMap::from([("revision".to_string(), "main@sha1:abc".to_string())]);
        let note = Note {
            warning: true,
            reason: "BuildFailed",
            message: "kustomize build failed",
            annotations: &annotations,
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let e = flux_event(&obj, &note, &reporter(), now);
        assert_eq!(e.severity, "error");
        assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(
            e.metadata,
            BTreeMap::from([(
                "kustomize.toolkit.fluxcd.io/revision".to_string(),
                "main@sha1:abc".to_string()
            )])
        );
        assert_eq!(e.reporting_controller, "kustomize-controller");
        assert_eq!(e.reporting_instance, "pennant-0");
        assert_eq!(e.timestamp, now);
        let info = Note {
            warning: false,
            ..note
        };
        assert_eq!(flux_event(&obj, &info, &reporter(), now).severity, "info");
    }

    #[tokio::test]
    async fn published_events_reach_subscribers() {
        let mut rx = subscribe();
        let mut obj = ConfigMap::default();
        obj.metadata.name = Some("bus-test".into());
        let empty = BTreeMap::new();
        let note = Note {
            warning: false,
            reason: "R",
            message: "m",
            annotations: &empty,
        };
        publish(flux_event(&obj, &note, &reporter(), Timestamp::UNIX_EPOCH));
        loop {
            let e = rx.recv().await.unwrap();
            if e.involved_object.name.as_deref() == Some("bus-test") {
                assert_eq!(e.reason, "R");
                break;
            }
        }
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
