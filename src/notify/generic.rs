//! Generic JSON webhook (`type: generic`, and the global `-event-webhook`): Flagger's event
//! webhook payload (§5.2, [`crate::webhook::Payload`]):
//!
//! ```json
//! {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "…",
//!  "metadata": {"eventMessage": "<message>", "eventType": "Normal", "timestamp": "1700000000000"}}
//! ```
//!
//! `eventType` is `Normal` for info and `Warning` for warn and error (Flagger's Event types);
//! `timestamp` is the Unix time of the send in milliseconds, as a string. The alert's fields
//! are added to `metadata` under their titles; the three reserved keys win. An alert without
//! fields (every event) is exactly the body Flagger posts to `-event-webhook`.
//!
//! Flagger has no `generic` AlertProvider type: this one exists for receivers that already
//! understand Flagger's event webhooks.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError};
use crate::notify::Severity;
use crate::webhook::Payload;

/// Flagger's Event type for a severity.
pub(super) fn event_type(s: Severity) -> &'static str {
    match s {
        Severity::Info => "Normal",
        Severity::Warn | Severity::Error => "Warning",
    }
}

fn payload(alert: &Alert, timestamp_ms: i64) -> Payload {
    let mut metadata: BTreeMap<String, String> = alert.fields.iter().cloned().collect();
    metadata.insert("eventMessage".into(), alert.message.clone());
    metadata.insert("eventType".into(), event_type(alert.severity).into());
    metadata.insert("timestamp".into(), timestamp_ms.to_string());
    Payload {
        name: alert.name.clone(),
        namespace: alert.namespace.clone(),
        phase: alert.phase,
        checksum: alert.checksum.clone(),
        metadata,
    }
}

/// Posts Flagger's event payload to any URL.
pub struct Generic {
    endpoint: Endpoint,
}

impl Generic {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        Generic { endpoint }
    }
}

impl Notifier for Generic {
    fn kind(&self) -> &'static str {
        "generic"
    }

    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let body = payload(alert, Timestamp::now().as_millisecond());
            self.endpoint.post_json(&body).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Receiver, alert, endpoint};
    use super::*;

    #[tokio::test]
    async fn posts_flaggers_event_payload() {
        let r = Receiver::start().await;
        let n = Generic::new(endpoint("generic", &r.url("/events"), Some("tok")));
        let before = Timestamp::now().as_millisecond();
        n.post(&alert(Severity::Warn, &[])).await.unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].path, "/events");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer tok");
        let mut body = hits[0].body.clone();
        let ts: i64 = body["metadata"]["timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ts >= before && ts <= Timestamp::now().as_millisecond());
        body["metadata"]["timestamp"] = json!("T");
        assert_eq!(
            body,
            json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": "0123456789abcdef",
                "metadata": {
                    "eventMessage": "New revision detected, progressing canary analysis.",
                    "eventType": "Warning",
                    "timestamp": "T"
                }
            })
        );
    }

    #[test]
    fn fields_join_metadata_reserved_keys_win() {
        let a = alert(
            Severity::Info,
            &[
                ("Target", "Deployment/podinfo.test"),
                ("eventType", "spoofed"),
            ],
        );
        let p = serde_json::to_value(payload(&a, 42)).unwrap();
        assert_eq!(
            p["metadata"],
            json!({
                "Target": "Deployment/podinfo.test",
                "eventMessage": "New revision detected, progressing canary analysis.",
                "eventType": "Normal",
                "timestamp": "42"
            })
        );
        assert_eq!(event_type(Severity::Error), "Warning");
    }

    #[tokio::test]
    async fn retry_then_success_and_clear_4xx() {
        let r = Receiver::start().await;
        r.answer(&[(500, "")]);
        let n = Generic::new(endpoint("generic", &r.url("/e"), None));
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits().len(), 2);
        r.answer(&[(422, "bad")]);
        let err = n.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("generic http://{}/… returned 422: bad", r.addr)
        );
    }
}
