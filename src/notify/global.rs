//! The global notifiers configured by controller flags (Flagger §6.1, §5.2, §7.2):
//! `-slack-url`, `-slack-token`, `-slack-proxy-url`, `-slack-user`, `-slack-channel`,
//! `-msteams-url`, `-msteams-proxy-url` for alerts of Canaries without `analysis.alerts`, and
//! `-event-webhook` for every event of Canaries without `event` webhooks.
//!
//! As Flagger: MS Teams wins when both Teams and Slack URLs are set; `-slack-user` defaults to
//! `flagger`; the Slack notifier needs a channel, and without one there is no global alert
//! notifier (Flagger logs "Notifier empty Slack channel"; pennant reports it once, at start-up).

use std::fmt;
use std::sync::Arc;

use super::transport::parse_http_url;
use super::{DeliveryPolicy, Notifier, NotifyError, Target, build};
use crate::api::DEFAULT_ALERT_USERNAME;

/// The flag values. `None` and `""` both mean unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalSettings {
    /// `-slack-url` / `SLACK_URL`: incoming webhook, or `https://slack.com/api/chat.postMessage`
    /// with `slack_token`.
    pub slack_url: Option<String>,
    /// `-slack-token` / `SLACK_TOKEN`: sent as `Authorization: Bearer <token>`.
    pub slack_token: Option<String>,
    /// `-slack-proxy-url` / `SLACK_PROXY_URL`.
    pub slack_proxy_url: Option<String>,
    /// `-slack-user`; default `flagger`.
    pub slack_user: Option<String>,
    /// `-slack-channel`; required for Slack.
    pub slack_channel: Option<String>,
    /// `-msteams-url` / `MSTEAMS_URL`; wins over Slack.
    pub msteams_url: Option<String>,
    /// `-msteams-proxy-url` / `MSTEAMS_PROXY_URL`.
    pub msteams_proxy_url: Option<String>,
    /// `-event-webhook` / `EVENT_WEBHOOK_URL`: receives every event as Flagger's event payload.
    pub event_webhook: Option<String>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The notifiers built from [`GlobalSettings`]; cheap to clone.
#[derive(Clone, Default)]
pub struct GlobalNotifiers {
    alerts: Option<Arc<dyn Notifier>>,
    events: Option<Arc<dyn Notifier>>,
}

impl fmt::Debug for GlobalNotifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalNotifiers")
            .field("alerts", &self.alerts.as_ref().map(|n| n.describe()))
            .field("events", &self.events.as_ref().map(|n| n.describe()))
            .finish()
    }
}

fn invalid(field: &str, reason: String) -> NotifyError {
    NotifyError::Invalid {
        object: "controller flags".into(),
        field: field.into(),
        reason,
    }
}

/// One notifier as the flags describe it.
struct Flagged<'a> {
    type_: &'static str,
    url_flag: &'static str,
    url: &'a str,
    token: Option<&'a str>,
    proxy_flag: &'static str,
    proxy: Option<&'a str>,
    user: &'a str,
    channel: &'a str,
}

fn global_notifier(
    http: &reqwest::Client,
    policy: &DeliveryPolicy,
    f: Flagged<'_>,
) -> Result<Arc<dyn Notifier>, NotifyError> {
    let url = parse_http_url(f.url).map_err(|r| invalid(f.url_flag, r))?;
    let target = Target {
        url,
        token: f.token.map(Into::into),
        proxy: f.proxy,
        username: f.user,
        channel: f.channel,
    };
    match build(f.type_, target, http, policy) {
        Ok(Some(n)) => Ok(Arc::from(n)),
        Ok(None) => unreachable!("known notifier types"),
        Err(r) => Err(invalid(f.proxy_flag, r)),
    }
}

impl GlobalNotifiers {
    /// [`GlobalNotifiers::from_settings_with`] with the default [`DeliveryPolicy`].
    pub fn from_settings(
        settings: &GlobalSettings,
        http: &reqwest::Client,
    ) -> (Self, Vec<NotifyError>) {
        Self::from_settings_with(settings, http, &DeliveryPolicy::default())
    }

    /// Build what the settings allow. The errors name the flag at fault (a URL that is not
    /// http(s), an unusable proxy, Slack without a channel, Slack ignored because Teams is set);
    /// they are for a start-up warning, and the notifier concerned is left out.
    pub fn from_settings_with(
        settings: &GlobalSettings,
        http: &reqwest::Client,
        policy: &DeliveryPolicy,
    ) -> (Self, Vec<NotifyError>) {
        let mut problems = Vec::new();
        let mut keep = |r: Result<Arc<dyn Notifier>, NotifyError>| match r {
            Ok(n) => Some(n),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let alerts = match (set(&settings.msteams_url), set(&settings.slack_url)) {
            (Some(teams), slack) => {
                let n = keep(global_notifier(
                    http,
                    policy,
                    Flagged {
                        type_: "msteams",
                        url_flag: "--msteams-url",
                        url: teams,
                        token: None,
                        proxy_flag: "--msteams-proxy-url",
                        proxy: set(&settings.msteams_proxy_url),
                        user: "",
                        channel: "",
                    },
                ));
                if slack.is_some() {
                    keep(Err(invalid(
                        "--slack-url",
                        "is ignored: --msteams-url is set and wins, as in Flagger".into(),
                    )));
                }
                n
            }
            (None, Some(slack)) => match set(&settings.slack_channel) {
                None => keep(Err(invalid(
                    "--slack-channel",
                    "is empty: the global Slack notifier needs a channel (as Flagger), \
                     so alerts of Canaries without analysis.alerts are not sent"
                        .into(),
                ))),
                Some(channel) => keep(global_notifier(
                    http,
                    policy,
                    Flagged {
                        type_: "slack",
                        url_flag: "--slack-url",
                        url: slack,
                        token: set(&settings.slack_token),
                        proxy_flag: "--slack-proxy-url",
                        proxy: set(&settings.slack_proxy_url),
                        user: set(&settings.slack_user).unwrap_or(DEFAULT_ALERT_USERNAME),
                        channel,
                    },
                )),
            },
            (None, None) => None,
        };
        let events = set(&settings.event_webhook).and_then(|url| {
            keep(global_notifier(
                http,
                policy,
                Flagged {
                    type_: "generic",
                    url_flag: "--event-webhook",
                    url,
                    token: None,
                    proxy_flag: "",
                    proxy: None,
                    user: "",
                    channel: "",
                },
            ))
        });
        (GlobalNotifiers { alerts, events }, problems)
    }

    /// The alert notifier for Canaries without `analysis.alerts` (every severity), if any.
    pub fn alerts(&self) -> Option<Arc<dyn Notifier>> {
        self.alerts.clone()
    }

    /// The `-event-webhook` notifier, if any: post `Alert::new(canary, notice.severity,
    /// notice.message)` for every notice of a Canary that has no `event` webhooks.
    pub fn event_webhook(&self) -> Option<Arc<dyn Notifier>> {
        self.events.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Receiver, alert, client, fast};
    use super::*;
    use crate::notify::Severity;

    fn build(s: GlobalSettings) -> (GlobalNotifiers, Vec<String>) {
        let (g, p) = GlobalNotifiers::from_settings_with(&s, &client(), &fast());
        (g, p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn nothing_set_nothing_built() {
        let (g, p) = build(GlobalSettings {
            slack_url: Some(String::new()),
            ..Default::default()
        });
        assert!(g.alerts().is_none() && g.event_webhook().is_none());
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn slack_with_user_channel_and_token() {
        let r = Receiver::start().await;
        let (g, p) = build(GlobalSettings {
            slack_url: Some(r.url("/slack")),
            slack_token: Some("xoxb-9".into()),
            slack_channel: Some("deploys".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let n = g.alerts().unwrap();
        assert_eq!(n.kind(), "slack");
        n.post(&alert(Severity::Error, &[])).await.unwrap();
        let hit = &r.hits()[0];
        assert_eq!(hit.header("authorization"), "Bearer xoxb-9");
        assert_eq!(hit.body["channel"], "deploys");
        assert_eq!(hit.body["username"], "flagger");
        assert_eq!(hit.body["attachments"][0]["color"], "danger");
    }

    #[test]
    fn slack_without_channel_is_reported_and_left_out() {
        let (g, p) = build(GlobalSettings {
            slack_url: Some("https://hooks.slack.com/services/x".into()),
            ..Default::default()
        });
        assert!(g.alerts().is_none());
        assert_eq!(
            p,
            vec![
                "controller flags: --slack-channel is empty: the global Slack notifier needs a \
                 channel (as Flagger), so alerts of Canaries without analysis.alerts are not sent"
            ]
        );
    }

    #[tokio::test]
    async fn teams_wins_over_slack() {
        let r = Receiver::start().await;
        let (g, p) = build(GlobalSettings {
            slack_url: Some("https://hooks.slack.com/services/x".into()),
            slack_channel: Some("general".into()),
            msteams_url: Some(r.url("/teams")),
            ..Default::default()
        });
        assert_eq!(
            p,
            vec![
                "controller flags: --slack-url is ignored: --msteams-url is set and wins, as in Flagger"
            ]
        );
        let n = g.alerts().unwrap();
        assert_eq!(n.kind(), "msteams");
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits()[0].body["@type"], "MessageCard");
    }

    #[test]
    fn bad_urls_and_proxies_name_the_flag() {
        let (g, p) = build(GlobalSettings {
            msteams_url: Some("https://outlook.office.com/webhook/x".into()),
            msteams_proxy_url: Some("not a url".into()),
            event_webhook: Some("events.example.com/hook".into()),
            ..Default::default()
        });
        assert!(g.alerts().is_none() && g.event_webhook().is_none());
        assert_eq!(
            p,
            vec![
                "controller flags: --msteams-proxy-url is not a valid URL: relative URL without a base",
                "controller flags: --event-webhook is not a valid URL: relative URL without a base",
            ]
        );
    }

    #[tokio::test]
    async fn event_webhook_posts_flaggers_event_payload() {
        let r = Receiver::start().await;
        let (g, p) = build(GlobalSettings {
            event_webhook: Some(r.url("/events")),
            ..Default::default()
        });
        assert!(p.is_empty());
        assert!(g.alerts().is_none());
        let n = g.event_webhook().unwrap();
        assert_eq!(n.kind(), "generic");
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        let body = &r.hits()[0].body;
        assert_eq!(body["name"], "podinfo");
        assert_eq!(body["metadata"]["eventType"], "Normal");
        assert_eq!(
            body["metadata"]["eventMessage"],
            json!("New revision detected, progressing canary analysis.")
        );
    }
}
