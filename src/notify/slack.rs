//! Slack (`type: slack`): an incoming webhook, or `https://slack.com/api/chat.postMessage` with a
//! bot token from the Secret's `token` key. Flagger's `pkg/notifier/slack.go` payload:
//!
//! ```json
//! {"channel": "general", "username": "flagger", "icon_url": "", "icon_emoji": ":rocket:",
//!  "attachments": [{"color": "good", "author_name": "podinfo.test", "text": "<message>",
//!                   "mrkdwn_in": ["text"],
//!                   "fields": [{"title": "Target", "value": "Deployment/podinfo.test", "short": false}]}]}
//! ```
//!
//! `color` is `danger` for errors, `good` otherwise. Discord and Rocket.Chat reuse this shape
//! ([`payload`]).

use futures::future::BoxFuture;
use serde::Serialize;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError};
use crate::notify::Severity;

#[derive(Serialize, Debug)]
pub(super) struct Payload<'a> {
    channel: &'a str,
    username: &'a str,
    icon_url: &'a str,
    icon_emoji: &'a str,
    attachments: [Attachment<'a>; 1],
}

#[derive(Serialize, Debug)]
struct Attachment<'a> {
    color: &'a str,
    author_name: String,
    text: &'a str,
    mrkdwn_in: [&'a str; 1],
    fields: Vec<Field<'a>>,
}

#[derive(Serialize, Debug)]
struct Field<'a> {
    title: &'a str,
    value: &'a str,
    short: bool,
}

/// The Slack-format message, with `color` chosen by the caller.
pub(super) fn payload<'a>(
    alert: &'a Alert,
    channel: &'a str,
    username: &'a str,
    color: &'a str,
) -> Payload<'a> {
    Payload {
        channel,
        username,
        icon_url: "",
        icon_emoji: ":rocket:",
        attachments: [Attachment {
            color,
            author_name: alert.subject(),
            text: &alert.message,
            mrkdwn_in: ["text"],
            fields: alert
                .fields
                .iter()
                .map(|(title, value)| Field {
                    title,
                    value,
                    short: false,
                })
                .collect(),
        }],
    }
}

/// Posts to Slack.
pub struct Slack {
    endpoint: Endpoint,
    username: String,
    channel: String,
}

impl Slack {
    pub(super) fn new(endpoint: Endpoint, username: String, channel: String) -> Self {
        Slack {
            endpoint,
            username,
            channel,
        }
    }

    fn payload<'a>(&'a self, alert: &'a Alert) -> Payload<'a> {
        let color = if alert.severity == Severity::Error {
            "danger"
        } else {
            "good"
        };
        payload(alert, &self.channel, &self.username, color)
    }
}

/// Slack's Web API answers `200 {"ok": false, "error": "channel_not_found"}` when it refuses a
/// message; incoming webhooks answer `ok` (not JSON).
pub(super) fn refusal(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    (v.get("ok")? == false).then(|| {
        v.get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("ok: false")
            .to_string()
    })
}

impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let body = self.endpoint.post_json(&self.payload(alert)).await?;
            match refusal(&body) {
                Some(error) => Err(NotifyError::Rejected {
                    notifier: self.describe(),
                    error,
                }),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Receiver, alert, endpoint};
    use super::*;

    fn slack(url: &str, token: Option<&str>) -> Slack {
        Slack::new(
            endpoint("slack", url, token),
            "flagger".into(),
            "general".into(),
        )
    }

    #[tokio::test]
    async fn posts_flaggers_payload() {
        let r = Receiver::start().await;
        let s = slack(&r.url("/services/T0/B0/x"), Some("xoxb-123"));
        let a = alert(
            Severity::Info,
            &[
                ("Target", "Deployment/podinfo.test"),
                ("Failed checks threshold", "5"),
            ],
        );
        s.post(&a).await.unwrap();
        let hits = r.hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].path, "/services/T0/B0/x");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer xoxb-123");
        assert_eq!(
            hits[0].body,
            json!({
                "channel": "general",
                "username": "flagger",
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": "good",
                    "author_name": "podinfo.test",
                    "text": "New revision detected, progressing canary analysis.",
                    "mrkdwn_in": ["text"],
                    "fields": [
                        {"title": "Target", "value": "Deployment/podinfo.test", "short": false},
                        {"title": "Failed checks threshold", "value": "5", "short": false}
                    ]
                }]
            })
        );
    }

    #[test]
    fn key_order_is_flaggers() {
        let s = slack("https://hooks.slack.com/x", None);
        let a = alert(Severity::Error, &[]);
        assert_eq!(
            serde_json::to_string(&s.payload(&a)).unwrap(),
            r#"{"channel":"general","username":"flagger","icon_url":"","icon_emoji":":rocket:","attachments":[{"color":"danger","author_name":"podinfo.test","text":"New revision detected, progressing canary analysis.","mrkdwn_in":["text"],"fields":[]}]}"#
        );
    }

    #[tokio::test]
    async fn errors_are_danger_warnings_are_good() {
        let r = Receiver::start().await;
        let s = slack(&r.url("/x"), None);
        s.post(&alert(Severity::Error, &[])).await.unwrap();
        s.post(&alert(Severity::Warn, &[])).await.unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].body["attachments"][0]["color"], "danger");
        assert_eq!(hits[0].body["attachments"][0]["fields"], json!([]));
        assert_eq!(hits[1].body["attachments"][0]["color"], "good");
        assert_eq!(hits[0].header("authorization"), "");
    }

    #[tokio::test]
    async fn web_api_refusal_is_an_error() {
        let r = Receiver::start().await;
        r.answer(&[(200, r#"{"ok":false,"error":"channel_not_found"}"#)]);
        let s = slack(&r.url("/api/chat.postMessage"), Some("xoxb"));
        let err = s.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "slack http://{}/… refused the message: channel_not_found",
                r.addr
            )
        );
        r.answer(&[(200, r#"{"ok":true,"ts":"1"}"#)]);
        s.post(&alert(Severity::Info, &[])).await.unwrap();
    }

    #[tokio::test]
    async fn retries_5xx_and_reports_4xx() {
        let r = Receiver::start().await;
        r.answer(&[(500, "oops")]);
        let s = slack(&r.url("/x"), None);
        s.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits().len(), 2);

        r.answer(&[(403, "invalid_token")]);
        let err = s.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(r.hits().len(), 3);
        assert_eq!(
            err.to_string(),
            format!("slack http://{}/… returned 403: invalid_token", r.addr)
        );
    }
}
