//! Discord (`type: discord`): Discord's Slack-compatible webhook endpoint, `<address>/slack`
//! (Flagger appends `/slack` unless the address already ends with it), with the Slack payload
//! and Slack colors (`danger` for errors, `good` otherwise), as Flagger's
//! `pkg/notifier/discord.go`.

use futures::future::BoxFuture;
use reqwest::Url;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError, slack};
use crate::notify::Severity;

/// `url` with `/slack` appended to its path, unless the path already ends with `/slack`.
/// The query string is kept.
pub(super) fn slack_compatible(mut url: Url) -> Url {
    if !url.path().ends_with("/slack") {
        let path = format!("{}/slack", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url
}

/// Posts to Discord.
pub struct Discord {
    endpoint: Endpoint,
    username: String,
    channel: String,
}

impl Discord {
    /// `endpoint` already points at the `/slack` URL ([`slack_compatible`]).
    pub(super) fn new(endpoint: Endpoint, username: String, channel: String) -> Self {
        Discord {
            endpoint,
            username,
            channel,
        }
    }
}

impl Notifier for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let color = if alert.severity == Severity::Error {
                "danger"
            } else {
                "good"
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

    #[test]
    fn slack_suffix_is_appended_once() {
        let s = |u: &str| slack_compatible(Url::parse(u).unwrap()).to_string();
        assert_eq!(
            s("https://discord.com/api/webhooks/1/abc"),
            "https://discord.com/api/webhooks/1/abc/slack"
        );
        assert_eq!(
            s("https://discord.com/api/webhooks/1/abc/"),
            "https://discord.com/api/webhooks/1/abc/slack"
        );
        assert_eq!(
            s("https://discord.com/api/webhooks/1/abc/slack"),
            "https://discord.com/api/webhooks/1/abc/slack"
        );
        assert_eq!(
            s("https://discord.com/api/webhooks/1/abc?wait=true"),
            "https://discord.com/api/webhooks/1/abc/slack?wait=true"
        );
    }

    #[tokio::test]
    async fn posts_slack_format_to_the_slack_path() {
        let r = Receiver::start().await;
        let url = slack_compatible(Url::parse(&r.url("/api/webhooks/1/abc")).unwrap());
        let d = Discord::new(
            endpoint("discord", url.as_str(), Some("tok")),
            "bot".into(),
            "deploys".into(),
        );
        d.post(&alert(
            Severity::Error,
            &[("Target", "Deployment/podinfo.test")],
        ))
        .await
        .unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].path, "/api/webhooks/1/abc/slack");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer tok");
        assert_eq!(
            hits[0].body,
            json!({
                "channel": "deploys",
                "username": "bot",
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": "danger",
                    "author_name": "podinfo.test",
                    "text": "New revision detected, progressing canary analysis.",
                    "mrkdwn_in": ["text"],
                    "fields": [{"title": "Target", "value": "Deployment/podinfo.test", "short": false}]
                }]
            })
        );
    }

    #[tokio::test]
    async fn retry_then_success_and_clear_4xx() {
        let r = Receiver::start().await;
        r.answer(&[
            (502, "bad gateway"),
            (400, "{\"message\": \"Cannot send an empty message\"}"),
        ]);
        let d = Discord::new(
            endpoint("discord", &r.url("/w/slack"), None),
            "flagger".into(),
            "general".into(),
        );
        let err = d.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert_eq!(r.hits().len(), 2, "502 retried, 400 final");
        assert_eq!(
            err.to_string(),
            format!(
                "discord http://{}/… returned 400: {{\"message\": \"Cannot send an empty message\"}} (after 2 attempts)",
                r.addr
            )
        );
        d.post(&alert(Severity::Info, &[])).await.unwrap();
    }
}
