//! Microsoft Teams (`type: msteams`): an incoming webhook taking a legacy connector
//! `MessageCard`, as Flagger's `pkg/notifier/teams.go`:
//!
//! ```json
//! {"@type": "MessageCard", "@context": "http://schema.org/extensions", "themeColor": "0076D7",
//!  "summary": "podinfo.test",
//!  "sections": [{"activityTitle": "<message>", "activitySubtitle": "podinfo.test",
//!                "facts": [{"name": "Target", "value": "Deployment/podinfo.test"}]}]}
//! ```
//!
//! `themeColor` is `FF0000` for errors.

use futures::future::BoxFuture;
use serde::Serialize;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError};
use crate::notify::Severity;

#[derive(Serialize, Debug)]
struct Payload<'a> {
    #[serde(rename = "@type")]
    type_: &'a str,
    #[serde(rename = "@context")]
    context: &'a str,
    #[serde(rename = "themeColor")]
    theme_color: &'a str,
    summary: String,
    sections: [Section<'a>; 1],
}

#[derive(Serialize, Debug)]
struct Section<'a> {
    #[serde(rename = "activityTitle")]
    activity_title: &'a str,
    #[serde(rename = "activitySubtitle")]
    activity_subtitle: String,
    facts: Vec<Fact<'a>>,
}

#[derive(Serialize, Debug)]
struct Fact<'a> {
    name: &'a str,
    value: &'a str,
}

fn payload(alert: &Alert) -> Payload<'_> {
    Payload {
        type_: "MessageCard",
        context: "http://schema.org/extensions",
        theme_color: if alert.severity == Severity::Error {
            "FF0000"
        } else {
            "0076D7"
        },
        summary: alert.subject(),
        sections: [Section {
            activity_title: &alert.message,
            activity_subtitle: alert.subject(),
            facts: alert
                .fields
                .iter()
                .map(|(name, value)| Fact { name, value })
                .collect(),
        }],
    }
}

/// Posts to Microsoft Teams.
pub struct MsTeams {
    endpoint: Endpoint,
}

impl MsTeams {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        MsTeams { endpoint }
    }
}

impl Notifier for MsTeams {
    fn kind(&self) -> &'static str {
        "msteams"
    }

    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move { self.endpoint.post_json(&payload(alert)).await.map(drop) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Receiver, alert, endpoint};
    use super::*;

    #[tokio::test]
    async fn posts_a_message_card() {
        let r = Receiver::start().await;
        let n = MsTeams::new(endpoint(
            "msteams",
            &r.url("/webhookb2/x/IncomingWebhook/y"),
            Some("tok"),
        ));
        n.post(&alert(
            Severity::Info,
            &[
                ("Target", "Deployment/podinfo.test"),
                ("Traffic routing", "Blue/Green"),
            ],
        ))
        .await
        .unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].path, "/webhookb2/x/IncomingWebhook/y");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer tok");
        assert_eq!(
            hits[0].body,
            json!({
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "themeColor": "0076D7",
                "summary": "podinfo.test",
                "sections": [{
                    "activityTitle": "New revision detected, progressing canary analysis.",
                    "activitySubtitle": "podinfo.test",
                    "facts": [
                        {"name": "Target", "value": "Deployment/podinfo.test"},
                        {"name": "Traffic routing", "value": "Blue/Green"}
                    ]
                }]
            })
        );
    }

    #[test]
    fn errors_are_red_and_facts_never_null() {
        let p = serde_json::to_value(payload(&alert(Severity::Error, &[]))).unwrap();
        assert_eq!(p["themeColor"], "FF0000");
        assert_eq!(p["sections"][0]["facts"], json!([]));
        let p = serde_json::to_value(payload(&alert(Severity::Warn, &[]))).unwrap();
        assert_eq!(p["themeColor"], "0076D7");
    }

    #[tokio::test]
    async fn retry_then_success_and_clear_4xx() {
        let r = Receiver::start().await;
        r.answer(&[(503, "")]);
        let n = MsTeams::new(endpoint("msteams", &r.url("/w"), None));
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits().len(), 2);
        r.answer(&[(400, "Summary or Text is required.")]);
        let err = n.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "msteams http://{}/… returned 400: Summary or Text is required.",
                r.addr
            )
        );
    }
}
