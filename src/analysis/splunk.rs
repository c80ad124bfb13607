//! Splunk Observability Cloud (SignalFx) behind [`MetricsProvider`]: a SignalFlow program
//! run over the window `now − 10 × interval .. now`, as Flagger's Splunk provider.
//!
//! Flagger runs the program through SignalFlow's WebSocket API; pennant uses the same
//! computation over SignalFlow's HTTP API, which streams the same messages as Server-Sent
//! Events (no WebSocket client needed):
//!
//! - Query: `POST <stream>/v2/signalflow/execute?start=<ms>&stop=<ms>&immediate=true`, body
//!   the program (`text/plain`), header `X-SF-Token` from the Secret key `sf_token_key`.
//!   `address` is required, as in Flagger: the API address `https://api.<realm>.signalfx.com`
//!   (its host's `api.` becomes `stream.` for the computation; `wss://stream.<realm>...`
//!   works too, and any other host, e.g. a proxy, is used as is).
//! - Value: the value of the **last** `data` message; `null` values are dropped. No values:
//!   no values found. Values from more than one time series (`tsId`) are an error, as in
//!   Flagger: the program must aggregate to one series (e.g. `.sum().publish()`).
//! - Errors: a non-2xx with `{"code": ..., "message": ...}`; an `error` event (program
//!   errors, e.g. a syntax error, arrive this way with HTTP 200); a `CHANNEL_ABORT`.
//! - [`MetricsProvider::is_online`]: `GET <api>/v2/metric?limit=1` with the token must be 200.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::http::{self as h, Credentials, parse_interval, required_secret};
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Secret key of the access token (header `X-SF-Token`).
pub const TOKEN: &str = "sf_token_key";
/// The query window is this many metric intervals back from now (Flagger's).
pub const WINDOW_INTERVALS: u32 = 10;
/// Per-computation timeout, streaming included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A Splunk Observability realm.
#[derive(Clone)]
pub struct SplunkProvider {
    client: reqwest::Client,
    /// `https://api.<realm>.signalfx.com`: metadata (is_online).
    api: Url,
    /// `https://stream.<realm>.signalfx.com`: SignalFlow.
    stream: Url,
    headers: HeaderMap,
    window: Duration,
}

impl SplunkProvider {
    /// The provider a `splunk` MetricTemplate describes; `interval` is the metric's.
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        interval: &str,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let raw = spec
            .address()
            .ok_or_else(|| ProviderError::MissingAddress("splunk".into()))?;
        // Flagger accepts the WebSocket form of the stream address; speak HTTP to it.
        let http_form = match raw.split_once("://") {
            Some(("wss", rest)) => format!("https://{rest}"),
            Some(("ws", rest)) => format!("http://{rest}"),
            _ => raw.to_string(),
        };
        let base = h::parse_url(&http_form)?;
        let api = swap_host_prefix(&base, "stream.", "api.");
        let stream = swap_host_prefix(&base, "api.", "stream.");
        let creds = required_secret(secret, "splunk", TOKEN)?;
        let token = creds.require(TOKEN)?;
        let window = parse_interval(interval, "splunk")? * WINDOW_INTERVALS;
        let mut headers = h::custom_headers(spec)?;
        headers.insert("X-SF-Token", h::secret_header(&creds, TOKEN, &token)?);
        Ok(SplunkProvider {
            client: h::client(http, spec)?,
            api,
            stream,
            headers,
            window,
        })
    }

    /// The API address (`https://api.<realm>.signalfx.com`).
    pub fn address(&self) -> &str {
        self.api.as_str().trim_end_matches('/')
    }

    /// The SignalFlow address (`https://stream.<realm>.signalfx.com`).
    pub fn stream_address(&self) -> &str {
        self.stream.as_str().trim_end_matches('/')
    }

    async fn run(&self, program: &str) -> Result<f64, QueryError> {
        let now = h::unix_now().as_millis();
        let start = now.saturating_sub(self.window.as_millis());
        let mut url = h::endpoint(&self.stream, "/v2/signalflow/execute");
        url.query_pairs_mut()
            .append_pair("start", &start.to_string())
            .append_pair("stop", &now.to_string())
            .append_pair("immediate", "true");
        let req = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .body(program.to_string());
        let run = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| QueryError::Unavailable(h::transport_error(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                let what = serde_json::from_str::<ApiError>(&body)
                    .ok()
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| h::quote(&body));
                return Err(match h::check_status(status, &what) {
                    Err(e) => e,
                    Ok(()) => QueryError::Invalid(format!("HTTP {}", status.as_u16())),
                });
            }
            let mut events = SseParser::default();
            let mut computation = Computation::default();
            loop {
                let chunk = resp.chunk().await.map_err(|e| {
                    QueryError::Unavailable(format!(
                        "reading the stream: {}",
                        h::transport_error(&e)
                    ))
                })?;
                let Some(chunk) = chunk else { break };
                for (event, data) in events.push(&String::from_utf8_lossy(&chunk)) {
                    if computation.apply(&event, &data)? {
                        return Ok(computation);
                    }
                }
            }
            for (event, data) in events.finish() {
                computation.apply(&event, &data)?;
            }
            Ok(computation)
        };
        let computation = tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| QueryError::Unavailable(format!("timed out after {TIMEOUT:?}")))??;
        computation.value(program)
    }
}

impl std::fmt::Debug for SplunkProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkProvider")
            .field("api", &self.address())
            .field("stream", &self.stream_address())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for SplunkProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            let mut url = h::endpoint(&self.api, "/v2/metric");
            url.query_pairs_mut().append_pair("limit", "1");
            let answer =
                h::fetch(self.client.get(url).headers(self.headers.clone()), TIMEOUT).await?;
            let what = serde_json::from_str::<ApiError>(&answer.body)
                .ok()
                .and_then(|e| e.message)
                .unwrap_or_else(|| h::quote(&answer.body));
            h::check_status(answer.status, &what)
        })
    }
}

/// `url` with its host's leading `from` replaced by `to` (`api.us1.signalfx.com` ↔
/// `stream.us1.signalfx.com`); other hosts unchanged.
fn swap_host_prefix(url: &Url, from: &str, to: &str) -> Url {
    let mut out = url.clone();
    if let Some(host) = url.host_str()
        && let Some(rest) = host.strip_prefix(from)
    {
        // Cannot fail: only a leading DNS label changes.
        let _ = out.set_host(Some(&format!("{to}{rest}")));
    }
    out
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
}

/// What a SignalFlow computation has said so far.
#[derive(Default)]
struct Computation {
    /// (tsId, value) of every data point with a value, in arrival order.
    points: Vec<(String, f64)>,
}

impl Computation {
    /// Take one event; `Ok(true)` when the computation is over (`END_OF_CHANNEL`).
    fn apply(&mut self, event: &str, data: &str) -> Result<bool, QueryError> {
        let payload: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) if event == "data" || event == "error" => {
                return Err(QueryError::Invalid(format!(
                    "a SignalFlow {event} message that is not JSON: {}",
                    h::quote(data)
                )));
            }
            Err(_) => return Ok(false),
        };
        match event {
            "data" => {
                for d in payload["data"].as_array().into_iter().flatten() {
                    if let (Some(ts), Some(v)) = (d["tsId"].as_str(), d["value"].as_f64())
                        && !v.is_nan()
                    {
                        self.points.push((ts.to_string(), v));
                    }
                }
                Ok(false)
            }
            "error" => {
                let errors: Vec<String> = payload["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| match (&e["code"], &e["context"]) {
                        (Value::Null, c) => c.to_string(),
                        (code, Value::Null) => code.to_string().trim_matches('"').to_string(),
                        (code, c) => format!("{}: {c}", code.to_string().trim_matches('"')),
                    })
                    .collect();
                let what = if errors.is_empty() {
                    h::quote(data)
                } else {
                    errors.join("; ")
                };
                Err(QueryError::Rejected(format!("SignalFlow error: {what}")))
            }
            "control-message" => match payload["event"].as_str() {
                Some("END_OF_CHANNEL") => Ok(true),
                Some("CHANNEL_ABORT") => {
                    let info = &payload["abortInfo"];
                    let reason = info["sf_job_abortReason"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| info.to_string());
                    Err(QueryError::Unavailable(format!(
                        "SignalFlow computation aborted: {reason}"
                    )))
                }
                _ => Ok(false),
            },
            _ => Ok(false),
        }
    }

    fn value(&self, program: &str) -> Result<f64, QueryError> {
        let series: BTreeSet<&str> = self.points.iter().map(|(ts, _)| ts.as_str()).collect();
        if series.len() > 1 {
            return Err(QueryError::Invalid(format!(
                "{} time series returned; the program must publish one (aggregate, e.g. .sum().publish())",
                series.len()
            )));
        }
        self.points
            .last()
            .map(|(_, v)| *v)
            .ok_or_else(|| QueryError::NoValues {
                query: program.trim().to_string(),
            })
    }
}

/// An incremental Server-Sent Events parser: `(event, data)` per dispatched event.
#[derive(Default)]
struct SseParser {
    buf: String,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feed text; returns the events completed by it.
    fn push(&mut self, text: &str) -> Vec<(String, String)> {
        self.buf.push_str(text);
        let mut out = vec![];
        while let Some(nl) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            self.line(line, &mut out);
        }
        out
    }

    /// The end of the stream: a last line without newline, a last event without blank line.
    fn finish(&mut self) -> Vec<(String, String)> {
        let mut out = vec![];
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.line(rest.trim_end_matches('\r'), &mut out);
        }
        self.line("", &mut out);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<(String, String)>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                let event = match std::mem::take(&mut self.event) {
                    e if e.is_empty() => "message".to_string(),
                    e => e,
                };
                out.push((event, self.data.join("\n")));
                self.data.clear();
            }
            self.event.clear();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::extract::Query;
    use axum::http::{HeaderMap as AxHeaders, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::json;

    use super::super::http::testing::{http, refused, serve};
    use super::*;
    use crate::api::SecretReference;

    fn sse(events: &[(&str, serde_json::Value)]) -> String {
        events
            .iter()
            .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
            .collect()
    }

    fn stream_start() -> Vec<(&'static str, serde_json::Value)> {
        vec![
            (
                "control-message",
                json!({"event": "STREAM_START", "timestampMs": 1}),
            ),
            (
                "control-message",
                json!({"event": "JOB_START", "handle": "E1", "timestampMs": 2}),
            ),
            (
                "metadata",
                json!({"tsId": "AAAA", "properties": {"sf_metric": "demo.trans.latency"}}),
            ),
        ]
    }

    fn data(ts: u64, points: serde_json::Value) -> (&'static str, serde_json::Value) {
        ("data", json!({"logicalTimestampMs": ts, "data": points}))
    }

    fn end() -> (&'static str, serde_json::Value) {
        (
            "control-message",
            json!({"event": "END_OF_CHANNEL", "timestampMs": 9}),
        )
    }

    type Seen = Arc<Mutex<Vec<(HashMap<String, String>, String, Option<String>)>>>;

    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let execute = move |Query(q): Query<HashMap<String, String>>,
                            h: AxHeaders,
                            body: String| {
            let s = s.clone();
            async move {
                let ct = h
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string());
                s.lock().unwrap().push((q, body.clone(), ct));
                if h.get("x-sf-token").and_then(|v| v.to_str().ok()) != Some("sf-t0k") {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"code": 401, "message": "Invalid token"})),
                    )
                        .into_response();
                }
                let mut events = stream_start();
                match body.as_str() {
                    "ok" => {
                        events.push(data(3, json!([{"tsId": "AAAA", "value": 12}])));
                        events.push(data(4, json!([{"tsId": "AAAA", "value": null}])));
                        events.push(data(5, json!([{"tsId": "AAAA", "value": 15.5}])));
                        events.push(end());
                    }
                    "nulls" => {
                        events.push(data(3, json!([{"tsId": "AAAA", "value": null}])));
                        events.push(end());
                    }
                    "two_series" => {
                        events.push(data(3, json!([{"tsId": "AAAA", "value": 1}, {"tsId": "BBBB", "value": 2}])));
                        events.push(end());
                    }
                    "aborted" => events.push((
                        "control-message",
                        json!({"event": "CHANNEL_ABORT", "timestampMs": 3,
                               "abortInfo": {"sf_job_abortState": "FAILED", "sf_job_abortReason": "Computation ran out of memory"}}),
                    )),
                    "no_end" => events.push(data(3, json!([{"tsId": "AAAA", "value": 7}]))),
                    _ => {
                        events = vec![(
                            "error",
                            json!({"errors": [{"code": "ANALYTICS_PROGRAM_ERROR",
                                               "context": {"line": 1, "column": 5, "message": "mismatched input"}}]}),
                        )];
                    }
                }
                ([(header::CONTENT_TYPE, "text/event-stream")], sse(&events)).into_response()
            }
        };
        let metric = |h: AxHeaders| async move {
            if h.get("x-sf-token").is_some_and(|v| v == "sf-t0k") {
                Json(json!({"count": 1, "results": [{"name": "demo.trans.latency"}]}))
                    .into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"code": 401, "message": "Invalid token"})),
                )
                    .into_response()
            }
        };
        let app = Router::new()
            .route("/v2/signalflow/execute", post(execute))
            .route("/v2/metric", get(metric));
        (serve(app).await, seen)
    }

    fn provider(address: &str, token: &str) -> SplunkProvider {
        let data = BTreeMap::from([(TOKEN.to_string(), token.as_bytes().to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "splunk".into(),
            address: Some(address.into()),
            secret_ref: Some(SecretReference { name: "sf".into() }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "sf",
            data: &data,
        };
        SplunkProvider::from_template(&spec, Some(creds), "1m", &http()).unwrap()
    }

    #[tokio::test]
    async fn last_value_of_the_stream_with_token_and_window() {
        let (addr, seen) = fake().await;
        let p = provider(&addr, "sf-t0k");
        assert_eq!(p.query("ok").await, Ok(15.5));
        let (q, body, ct) = seen.lock().unwrap()[0].clone();
        assert_eq!(body, "ok");
        assert_eq!(ct.as_deref(), Some("text/plain"));
        assert_eq!(q["immediate"], "true");
        let start: u128 = q["start"].parse().unwrap();
        let stop: u128 = q["stop"].parse().unwrap();
        assert_eq!(stop - start, 600_000, "10 × 1m in ms");
        assert_eq!(
            p.query("no_end").await,
            Ok(7.0),
            "stream closed without END_OF_CHANNEL"
        );
    }

    #[tokio::test]
    async fn no_values_several_series_and_errors() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "sf-t0k");
        assert_eq!(
            p.query("nulls").await,
            Err(QueryError::NoValues {
                query: "nulls".into()
            })
        );
        assert!(matches!(
            p.query("two_series").await,
            Err(QueryError::Invalid(m)) if m.starts_with("2 time series")
        ));
        assert_eq!(
            p.query("data('x'").await,
            Err(QueryError::Rejected(
                "SignalFlow error: ANALYTICS_PROGRAM_ERROR: {\"column\":5,\"line\":1,\"message\":\"mismatched input\"}".into()
            ))
        );
        assert_eq!(
            p.query("aborted").await,
            Err(QueryError::Unavailable(
                "SignalFlow computation aborted: Computation ran out of memory".into()
            ))
        );
        assert_eq!(
            provider(&addr, "bad").query("ok").await,
            Err(QueryError::Rejected("HTTP 401: Invalid token".into()))
        );
    }

    #[tokio::test]
    async fn is_online_reads_one_metric() {
        let (addr, _) = fake().await;
        assert_eq!(provider(&addr, "sf-t0k").is_online().await, Ok(()));
        assert_eq!(
            provider(&addr, "bad").is_online().await,
            Err(QueryError::Rejected("HTTP 401: Invalid token".into()))
        );
        assert!(matches!(
            provider(&refused(), "sf-t0k").is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn realm_addresses() {
        let p = provider("https://api.us1.signalfx.com", "t");
        assert_eq!(p.address(), "https://api.us1.signalfx.com");
        assert_eq!(p.stream_address(), "https://stream.us1.signalfx.com");
        let p = provider("wss://stream.eu0.signalfx.com", "t");
        assert_eq!(p.address(), "https://api.eu0.signalfx.com");
        assert_eq!(p.stream_address(), "https://stream.eu0.signalfx.com");
        let p = provider("http://proxy.internal:8080/sfx", "t");
        assert_eq!(p.address(), "http://proxy.internal:8080/sfx");
        assert_eq!(p.stream_address(), "http://proxy.internal:8080/sfx");
    }

    #[test]
    fn sse_parser_handles_split_chunks_and_multiline_data() {
        let mut p = SseParser::default();
        assert!(p.push("event: da").is_empty());
        assert!(p.push("ta\r\ndata: {\"a\":\r\ndata: 1}\r\n").is_empty());
        assert_eq!(
            p.push("\r\n: comment\n\ndata: x"),
            vec![("data".to_string(), "{\"a\":\n1}".to_string())]
        );
        assert_eq!(p.finish(), vec![("message".to_string(), "x".to_string())]);
    }
}
