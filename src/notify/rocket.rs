//! Rocket.Chat (`type: rocket`): an incoming webhook taking the Slack payload, with Flagger's
//! Rocket colors `#0076D7` (and `#FF0000` for errors), as `pkg/notifier/rocket.go`.

use futures::future::BoxFuture;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError, slack};
use crate::notify::Severity;

/// Posts to Rocket.Chat.
pub struct Rocket {
    endpoint: Endpoint,
    username: String,
    channel: String,
}

impl Rocket {
    pub(super) fn new(endpoint: Endpoint, username: String, channel: String) -> Self {
        Rocket {
            endpoint,
            username,
            channel,
        }
    }
}

impl Notifier for Rocket {
    fn kind(&self) -> &'static str {
        "rocket"
    }

    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let color = if alert.severity == Severity::Error {
                "#FF0000"
            } else {
                "#0076D7"
            };
            let payload = slack::payload(alert, &self.channel, &self.username, color);
            self.endpoint.post_json(&payload).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Receiver, alert, endpoint};
    use super::*;

    #[tokio::test]
    async fn posts_slack_format_with_rocket_colors() {
        let r = Receiver::start().await;
        let n = Rocket::new(
            endpoint("rocket", &r.url("/hooks/abc/def"), Some("tok")),
            "flagger".into(),
            "general".into(),
        );
        n.post(&alert(Severity::Warn, &[("Progress deadline", "60s")]))
            .await
            .unwrap();
        n.post(&alert(Severity::Error, &[])).await.unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].path, "/hooks/abc/def");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer tok");
        assert_eq!(
            hits[0].body,
            json!({
                "channel": "general",
                "username": "flagger",
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": "#0076D7",
                    "author_name": "podinfo.test",
                    "text": "New revision detected, progressing canary analysis.",
                    "mrkdwn_in": ["text"],
                    "fields": [{"title": "Progress deadline", "value": "60s", "short": false}]
                }]
            })
        );
        assert_eq!(hits[1].body["attachments"][0]["color"], "#FF0000");
    }

    #[tokio::test]
    async fn retry_then_success_and_clear_4xx() {
        let r = Receiver::start().await;
        r.answer(&[(500, "x")]);
        let n = Rocket::new(
            endpoint("rocket", &r.url("/h"), None),
            "flagger".into(),
            "general".into(),
        );
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits().len(), 2);
        r.answer(&[(404, "{\"success\":false}")]);
        let err = n.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "rocket http://{}/… returned 404: {{\"success\":false}}",
                r.addr
            )
        );
    }
}
