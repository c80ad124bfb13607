//! A real local HTTP receiver (axum on 127.0.0.1:0) that records every request and answers
//! with a script of statuses, for the notifier tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::transport::{Endpoint, parse_http_url};
use super::{Alert, DeliveryPolicy};
use crate::api::CanaryPhase;
use crate::notify::Severity;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    /// As received: origin form (`/path?q`) normally, absolute form through a proxy.
    pub uri: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The body's bytes as received (a signature covers these).
    pub raw: Vec<u8>,
}

impl Hit {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    hits: Vec<Hit>,
    /// Answers for the next requests, in order; `200 ok` once empty.
    script: VecDeque<(u16, String)>,
    delay: Option<Duration>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Shared,
}

async fn record(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (answer, delay) = {
        let mut i = inner.lock().unwrap();
        i.hits.push(Hit {
            method: method.to_string(),
            uri: uri.to_string(),
            path: uri.path().to_string(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            raw: body.to_vec(),
        });
        (i.script.pop_front(), i.delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let (status, body) = answer.unwrap_or((200, "ok".into()));
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

impl Receiver {
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these statuses and bodies, then `200 ok`.
    pub fn answer(&self, script: &[(u16, &str)]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .extend(script.iter().map(|(s, b)| (*s, b.to_string())));
    }

    /// Wait this long before answering each request.
    pub fn delay(&self, d: Duration) {
        self.inner.lock().unwrap().delay = Some(d);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No system proxy: the tests talk to 127.0.0.1 whatever the environment says.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Three attempts, millisecond backoff.
pub fn fast() -> DeliveryPolicy {
    DeliveryPolicy {
        timeout: Duration::from_secs(5),
        attempts: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// An alert about `test/podinfo` with the new-revision text.
pub fn alert(severity: Severity, fields: &[(&str, &str)]) -> Alert {
    Alert {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: CanaryPhase::Progressing,
        checksum: "0123456789abcdef".into(),
        message: "New revision detected, progressing canary analysis.".into(),
        severity,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// An endpoint for `url` with the [`fast`] policy and no proxy.
pub fn endpoint(kind: &'static str, url: &str, token: Option<&str>) -> Endpoint {
    Endpoint::new(
        kind,
        &client(),
        parse_http_url(url).unwrap(),
        token.map(Into::into),
        None,
        fast(),
    )
    .unwrap()
}
