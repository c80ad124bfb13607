//! Google Chat (`type: gchat`): an incoming webhook taking a card, as Flagger's
//! `pkg/notifier/gchat.go`: a header titled `Flagger` with the canary as subtitle and Flagger's
//! icon, one section with the message in grey bold, then one section per field
//! (`<name><br><font color=#848484><strong><value></strong></font>`). The severity does not
//! change the card; `channel` and `username` are not used.

use futures::future::BoxFuture;
use serde::Serialize;

use super::transport::Endpoint;
use super::{Alert, Notifier, NotifyError};

#[derive(Serialize, Debug)]
struct Payload {
    cards: [Card; 1],
}

#[derive(Serialize, Debug)]
struct Card {
    header: Header,
    sections: Vec<Section>,
}

#[derive(Serialize, Debug)]
struct Header {
    title: &'static str,
    subtitle: String,
    #[serde(rename = "imageUrl")]
    image_url: &'static str,
}

#[derive(Serialize, Debug)]
struct Section {
    widgets: [Widget; 1],
}

#[derive(Serialize, Debug)]
struct Widget {
    #[serde(rename = "textParagraph")]
    text_paragraph: Text,
}

#[derive(Serialize, Debug)]
struct Text {
    text: String,
}

fn section(text: String) -> Section {
    Section {
        widgets: [Widget {
            text_paragraph: Text { text },
        }],
    }
}

fn payload(alert: &Alert) -> Payload {
    let mut sections = vec![section(format!(
        "<font color=#848484><strong>{}</strong></font>",
        alert.message
    ))];
    sections.extend(alert.fields.iter().map(|(name, value)| {
        section(format!(
            "{name}<br><font color=#848484><strong>{value}</strong></font>"
        ))
    }));
    Payload {
        cards: [Card {
            header: Header {
                title: "Flagger",
                subtitle: alert.subject(),
                image_url: "https://flagger.app/favicon.png",
            },
            sections,
        }],
    }
}

/// Posts to Google Chat.
pub struct GoogleChat {
    endpoint: Endpoint,
}

impl GoogleChat {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        GoogleChat { endpoint }
    }
}

impl Notifier for GoogleChat {
    fn kind(&self) -> &'static str {
        "gchat"
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
    use crate::notify::Severity;

    #[tokio::test]
    async fn posts_flaggers_card() {
        let r = Receiver::start().await;
        let n = GoogleChat::new(endpoint(
            "gchat",
            &r.url("/v1/spaces/AAA/messages?key=k&token=t"),
            Some("tok"),
        ));
        n.post(&alert(
            Severity::Error,
            &[
                ("Target", "Deployment/podinfo.test"),
                ("Progress deadline", "60s"),
            ],
        ))
        .await
        .unwrap();
        let hits = r.hits();
        assert_eq!(hits[0].uri, "/v1/spaces/AAA/messages?key=k&token=t");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer tok");
        assert_eq!(
            hits[0].body,
            json!({
                "cards": [{
                    "header": {
                        "title": "Flagger",
                        "subtitle": "podinfo.test",
                        "imageUrl": "https://flagger.app/favicon.png"
                    },
                    "sections": [
                        {"widgets": [{"textParagraph": {"text": "<font color=#848484><strong>New revision detected, progressing canary analysis.</strong></font>"}}]},
                        {"widgets": [{"textParagraph": {"text": "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>"}}]},
                        {"widgets": [{"textParagraph": {"text": "Progress deadline<br><font color=#848484><strong>60s</strong></font>"}}]}
                    ]
                }]
            })
        );
    }

    #[tokio::test]
    async fn retry_then_success_and_clear_4xx() {
        let r = Receiver::start().await;
        r.answer(&[(500, "")]);
        let n = GoogleChat::new(endpoint("gchat", &r.url("/v1/spaces/AAA/messages"), None));
        n.post(&alert(Severity::Info, &[])).await.unwrap();
        assert_eq!(r.hits().len(), 2);
        assert_eq!(
            r.hits()[1].body["cards"][0]["sections"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        r.answer(&[(401, "{\"error\": {\"code\": 401}}")]);
        let err = n.post(&alert(Severity::Info, &[])).await.unwrap_err();
        assert!(
            matches!(
                err,
                NotifyError::Status {
                    status: 401,
                    attempts: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
