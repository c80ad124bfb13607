//! Prometheus behind [`MetricsProvider`], through `prometheus-http-query`.
//!
//! Same answers as Flagger's Prometheus provider (§2.16-11): an instant query (`GET
//! /api/v1/query`) whose whitespace runs are collapsed first; a vector result gives the value
//! of its *last* series, a scalar its value; an empty vector or a NaN value is "no values found";
//! a matrix (range vector) is an error. Unlike Flagger, failures are classified so a canary's
//! status can tell "Prometheus is down" from "the query is wrong":
//!
//! | What happened | [`QueryError`] |
//! |---|---|
//! | connection refused, DNS, TLS, timeout, HTTP 5xx or 429, Prometheus `timeout` / `canceled` / `unavailable` / `internal` | `Unavailable` |
//! | HTTP 4xx (Prometheus `bad_data`, `execution`, `not_found`; 401/403 from a proxy) | `Rejected` |
//! | a 2xx answer that is not a single number (matrix, string, not JSON) | `Invalid` |
//! | empty vector, NaN | `NoValues` |
//! | the same, when the query's shortest `[window]` is shorter than twice the shortest `scrapeInterval` of Prometheus' active targets (asked only then) | `WindowTooShort` (Flagger #1123) |
//!
//! From a MetricTemplate ([`PrometheusProvider::from_template`]): `address` (else the canary's
//! metrics server), credentials from `secretRef` with Flagger's keys — `token` (bearer) or
//! `username` + `password` (basic) — every `headers` value, and `insecureSkipVerify`.

use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_http_query::response::Data;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::http::{self as h, Credentials, quote};
use super::template::collapse_whitespace;
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;
use crate::util::chain;

/// Per-query timeout unless [`PrometheusProvider::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Query sent by [`MetricsProvider::is_online`]; it must return 1.
pub const ONLINE_QUERY: &str = "vector(1)";

/// A Prometheus server (or anything speaking its HTTP API: Thanos, Mimir, VictoriaMetrics).
/// Cheap to build: it shares the caller's HTTP client (connection pool, TLS settings).
#[derive(Clone)]
pub struct PrometheusProvider {
    client: prometheus_http_query::Client,
    /// The same HTTP client, for the targets API ([`Self::scrape_intervals`]).
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    /// Sent with every query (MetricTemplate `headers` and credentials).
    headers: HeaderMap,
}

impl PrometheusProvider {
    /// A provider for `url` (e.g. `http://prometheus.istio-system:9090`) with an HTTP client of
    /// its own. Prefer [`Self::with_client`] to share a connection pool. Needs the process-wide
    /// rustls provider.
    pub fn new(url: &str) -> Result<Self, QueryError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| QueryError::Config(format!("cannot build HTTP client: {e}")))?;
        Self::with_client(http, url)
    }

    /// A provider for `url` (a path prefix is kept) over `http`, with a [`DEFAULT_TIMEOUT`] per
    /// query (request and body) whatever timeout `http` has. Errors (`QueryError::Config`) when
    /// `url` is not an absolute http(s) URL.
    pub fn with_client(http: reqwest::Client, url: &str) -> Result<Self, QueryError> {
        let invalid =
            |why: String| QueryError::Config(format!("invalid Prometheus URL {url:?}: {why}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid("expected http(s)://host[:port][/path]".into()));
        }
        // prometheus-http-query appends "/api/v1/query" to a non-root path with a "/" of its
        // own, so a trailing slash would give "//api".
        let client = prometheus_http_query::Client::from(http.clone(), url.trim_end_matches('/'))
            .map_err(|e| invalid(chain(&e)))?;
        Ok(PrometheusProvider {
            client,
            http,
            url: url.to_string(),
            timeout: DEFAULT_TIMEOUT,
            headers: HeaderMap::new(),
        })
    }

    /// The provider a `prometheus` MetricTemplate describes, as Flagger's
    /// `NewPrometheusProvider`: `spec.address`, else `metrics_server`; with a `secretRef`, the
    /// Secret must hold `token` (sent as `Authorization: Bearer`) or both `username` and
    /// `password` (basic auth; `token` wins when both are present); `headers` are sent with
    /// every query (credentials replace an `Authorization` header); `insecureSkipVerify`
    /// skips TLS certificate verification.
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        metrics_server: &str,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let url = h::address(spec, Some(metrics_server))?;
        let mut headers = h::custom_headers(spec)?;
        if let Some(creds) = secret {
            let auth = match creds.get("token")? {
                Some(token) => h::secret_header(&creds, "token", &format!("Bearer {token}"))?,
                None => match (creds.get("username")?, creds.get("password")?) {
                    (Some(user), Some(password)) => basic_auth(&creds, &user, &password)?,
                    (Some(_), None) => return Err(missing(&creds, "password")),
                    (None, Some(_)) => return Err(missing(&creds, "username")),
                    (None, None) => {
                        return Err(ProviderError::MissingSecretKeys {
                            secret: creds.name.to_string(),
                            want: "neither key \"token\" nor keys \"username\" and \"password\""
                                .into(),
                        });
                    }
                },
            };
            headers.insert(AUTHORIZATION, auth);
        }
        let client = h::client(http, spec)?;
        let mut p = Self::with_client(client, url.as_str().trim_end_matches('/')).map_err(|e| {
            ProviderError::BadAddress {
                address: url.to_string(),
                why: e.to_string(),
            }
        })?;
        p.headers = headers;
        Ok(p)
    }

    /// The same provider sending `headers` with every query.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// The same provider with another per-query timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn run(&self, promql: &str) -> Result<f64, QueryError> {
        let query = collapse_whitespace(promql);
        let data = self.data_at(&query, None).await?;
        match value_of(data, &query) {
            Err(QueryError::NoValues { query }) => Err(self.explain_no_values(query).await),
            v => v,
        }
    }

    /// On the no-values path only (one request more, no cost while values come): when the
    /// query's shortest range window is shorter than twice the scrape interval, say so
    /// ([`QueryError::WindowTooShort`], Flagger #1123) rather than blame the traffic. Any trouble
    /// asking Prometheus keeps the plain `NoValues`.
    async fn explain_no_values(&self, query: String) -> QueryError {
        if !range_windows(&query).is_empty()
            && let Ok(intervals) = self.scrape_intervals().await
            && let Some((window, scrape_interval)) = window_too_short(&query, &intervals)
        {
            return QueryError::WindowTooShort {
                query,
                window,
                scrape_interval,
            };
        }
        QueryError::NoValues { query }
    }

    /// `scrapeInterval` of every active target (`GET /api/v1/targets?state=active`), with this
    /// provider's headers and timeout.
    async fn scrape_intervals(&self) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Targets {
            data: TargetsData,
        }
        #[derive(Deserialize)]
        struct TargetsData {
            #[serde(default, rename = "activeTargets")]
            active: Vec<Target>,
        }
        #[derive(Deserialize)]
        struct Target {
            #[serde(default, rename = "scrapeInterval")]
            scrape_interval: Option<String>,
        }
        let url = format!("{}/api/v1/targets", self.url.trim_end_matches('/'));
        let req = self
            .http
            .get(url)
            .query(&[("state", "active")])
            .headers(self.headers.clone())
            .timeout(self.timeout);
        let targets: Targets = req
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| chain(&e))?
            .json()
            .await
            .map_err(|e| chain(&e))?;
        Ok(targets
            .data
            .active
            .into_iter()
            .filter_map(|t| t.scrape_interval)
            .collect())
    }

    /// The raw answer of an instant query evaluated at `at` (Unix seconds; now when `None`):
    /// a vector, a scalar, or a matrix for a range selector (raw samples). Same errors and
    /// timeout as [`MetricsProvider::query`].
    pub async fn data_at(&self, query: &str, at: Option<i64>) -> Result<Data, QueryError> {
        tokio::time::timeout(self.timeout, self.send(query, at))
            .await
            .map_err(|_| QueryError::Unavailable(format!("timed out after {:?}", self.timeout)))?
    }

    async fn send(&self, query: &str, at: Option<i64>) -> Result<Data, QueryError> {
        let mut req = self.client.query(query);
        if let Some(t) = at {
            req = req.at(t);
        }
        for (name, value) in &self.headers {
            req = req.header(name.clone(), value.clone());
        }
        let resp = req
            .get_raw()
            .await
            .map_err(|e| QueryError::Unavailable(transport_error(&e)))?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        let body = resp
            .text()
            .await
            .map_err(|e| QueryError::Unavailable(format!("reading the response: {}", chain(&e))))?;

        let envelope = if is_json {
            serde_json::from_str::<Envelope>(&body).ok()
        } else {
            None
        };
        match envelope {
            Some(Envelope {
                status: s,
                error_type,
                error,
                ..
            }) if s == "error" || !status.is_success() => {
                let what = format!(
                    "HTTP {}: {}: {}",
                    status.as_u16(),
                    error_type.as_deref().unwrap_or("error"),
                    error.as_deref().unwrap_or("")
                );
                Err(classify(status, error_type.as_deref(), what))
            }
            Some(Envelope {
                data: Some(data), ..
            }) => Ok(data),
            Some(Envelope { data: None, .. }) => Err(QueryError::Invalid(format!(
                "success answer without data: {}",
                quote(&body)
            ))),
            None if !status.is_success() => Err(classify(
                status,
                None,
                format!("HTTP {}: {}", status.as_u16(), quote(&body)),
            )),
            None => Err(QueryError::Invalid(format!(
                "not a Prometheus API answer: {}",
                quote(&body)
            ))),
        }
    }
}

impl std::fmt::Debug for PrometheusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusProvider")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for PrometheusProvider {
    fn query<'a>(&'a self, promql: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(promql))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            match self.run(ONLINE_QUERY).await? {
                1.0 => Ok(()),
                v => Err(QueryError::Invalid(format!(
                    "{ONLINE_QUERY} returned {v}, expected 1"
                ))),
            }
        })
    }
}

/// Prometheus' API envelope. `data` is parsed only on success; an unknown `resultType`
/// (`string`) makes the whole envelope unparsable, reported as `Invalid`.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn value_of(data: Data, query: &str) -> Result<f64, QueryError> {
    let no_values = || QueryError::NoValues {
        query: query.to_string(),
    };
    let v = match data {
        Data::Vector(series) => series.last().ok_or_else(no_values)?.sample().value(),
        Data::Scalar(sample) => sample.value(),
        Data::Matrix(_) => {
            return Err(QueryError::Invalid(
                "a range vector (matrix); the query must return an instant vector or a scalar"
                    .into(),
            ));
        }
    };
    if v.is_nan() { Err(no_values()) } else { Ok(v) }
}

/// A PromQL duration (`1m`, `90s`, `1h30m`, `500ms`, `2d`, `1w`, `1y`: units y, w, d, h, m, s,
/// ms; the `analysis` durations lack d, w and y); `None` otherwise.
pub fn prom_duration(s: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = s.trim();
    let mut ms: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, factor) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        ms = ms.checked_add(n.checked_mul(*factor)?)?;
        rest = &rest[unit.len()..];
    }
    Some(Duration::from_millis(ms))
}

/// The range windows of `query`'s range selectors (`x[1m]`, `x[5m] offset 1m`), as written
/// and parsed, in order. Subqueries (`[5m:1m]`, whose window holds evaluations, not scrapes),
/// brackets inside string literals and windows that are not plain durations are skipped.
pub fn range_windows(query: &str) -> Vec<(String, Duration)> {
    let mut out = vec![];
    let mut chars = query.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // skip the string literal (backslash escapes, except in raw `...` strings)
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            '[' => {
                let Some(len) = query[i + 1..].find(']') else {
                    break;
                };
                let inner = query[i + 1..i + 1 + len].trim();
                if !inner.contains(':')
                    && let Some(d) = prom_duration(inner)
                {
                    out.push((inner.to_string(), d));
                }
            }
            _ => {}
        }
    }
    out
}

/// When the shortest range window of `query` is shorter than twice the shortest of
/// `scrape_intervals` (Prometheus durations, e.g. the targets' `scrapeInterval`): that window
/// and interval as written. `rate()`, `increase()` and the like need two samples in the
/// window, so such a query finds nothing however much traffic flows (Flagger #1123). The
/// shortest interval is used so that the claim holds for every target.
pub fn window_too_short(query: &str, scrape_intervals: &[String]) -> Option<(String, String)> {
    let (window, w) = range_windows(query).into_iter().min_by_key(|(_, d)| *d)?;
    let (interval, i) = scrape_intervals
        .iter()
        .filter_map(|s| Some((s.clone(), prom_duration(s)?)))
        .filter(|(_, d)| !d.is_zero())
        .min_by_key(|(_, d)| *d)?;
    (w < i * 2).then_some((window, interval))
}

/// `window 1m is shorter than 2 × scrape interval 1m`: the cause named in no-values messages.
pub fn window_too_short_message(window: &str, scrape_interval: &str) -> String {
    format!("window {window} is shorter than 2 × scrape interval {scrape_interval}")
}

/// 4xx means the request is wrong (bad PromQL, unauthorised); 5xx and 429 mean Prometheus cannot
/// answer now. A JSON error on a 2xx status falls back to Prometheus' `errorType`.
fn classify(status: StatusCode, error_type: Option<&str>, what: String) -> QueryError {
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return QueryError::Unavailable(what);
    }
    if status.is_client_error() {
        return QueryError::Rejected(what);
    }
    match error_type {
        Some("bad_data" | "execution" | "not_found") => QueryError::Rejected(what),
        _ => QueryError::Unavailable(what),
    }
}

/// The cause of a failed request, without the request URL (the caller names the server and
/// the query already).
fn transport_error(e: &prometheus_http_query::Error) -> String {
    if let prometheus_http_query::Error::Client(c) = e
        && let Some(r) = c.inner()
    {
        if r.is_timeout() {
            return "timed out".into();
        }
        if let Some(cause) = std::error::Error::source(r) {
            return format!("error sending request: {}", chain(cause));
        }
    }
    chain(e)
}

fn missing(creds: &Credentials<'_>, key: &str) -> ProviderError {
    ProviderError::MissingSecretKey {
        secret: creds.name.to_string(),
        key: key.to_string(),
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_auth(
    creds: &Credentials<'_>,
    user: &str,
    password: &str,
) -> Result<HeaderValue, ProviderError> {
    let encoded = base64_encode(format!("{user}:{password}").as_bytes());
    h::secret_header(creds, "username", &format!("Basic {encoded}"))
}

/// Standard base64 with padding (RFC 4648 §4), for basic auth.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::Query;
    use axum::http::{StatusCode as AxStatus, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{Value, json};

    use super::*;

    fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// A fake Prometheus: the answer is chosen by the PromQL text.
    async fn fake_prometheus(
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        let query = q.get("query").cloned().unwrap_or_default();
        let ok = |data: Value| Json(json!({"status": "success", "data": data})).into_response();
        match query.as_str() {
            "vector(1)" => ok(json!({"resultType": "vector", "result": [
                {"metric": {}, "value": [1_700_000_000.0, "1"]}
            ]})),
            "vector(2)" => ok(json!({"resultType": "vector", "result": [
                {"metric": {}, "value": [1_700_000_000.0, "2"]}
            ]})),
            "two_series" => ok(json!({"resultType": "vector", "result": [
                {"metric": {"pod": "a"}, "value": [1_700_000_000.0, "10"]},
                {"metric": {"pod": "b"}, "value": [1_700_000_000.0, "99.5"]}
            ]})),
            "empty" | "sum(rate(x[1m]))" | "sum(rate(x[2m]))" => {
                ok(json!({"resultType": "vector", "result": []}))
            }
            "nan" => ok(json!({"resultType": "vector", "result": [
                {"metric": {}, "value": [1_700_000_000.0, "NaN"]}
            ]})),
            "scalar(1.5)" => ok(json!({"resultType": "scalar", "result": [1_700_000_000.0, "1.5"]})),
            "matrix[1m]" => ok(json!({"resultType": "matrix", "result": [
                {"metric": {}, "values": [[1_700_000_000.0, "1"], [1_700_000_015.0, "2"]]}
            ]})),
            "\"a string\"" => ok(json!({"resultType": "string", "result": [1_700_000_000.0, "a string"]})),
            "sum( rate(x[1m]) ) * 100" => ok(json!({"resultType": "vector", "result": [
                {"metric": {}, "value": [1_700_000_000.0, "42"]}
            ]})),
            "overloaded" => (
                AxStatus::SERVICE_UNAVAILABLE,
                Json(json!({"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"})),
            )
                .into_response(),
            "proxy_down" => (AxStatus::BAD_GATEWAY, [(header::CONTENT_TYPE, "text/html")], "<html>502 Bad Gateway</html>")
                .into_response(),
            "forbidden" => (AxStatus::FORBIDDEN, "access denied").into_response(),
            "html" => (AxStatus::OK, [(header::CONTENT_TYPE, "text/html")], "<html>login</html>").into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ok(json!({"resultType": "vector", "result": []}))
            }
            _ => (
                AxStatus::BAD_REQUEST,
                Json(json!({
                    "status": "error",
                    "errorType": "bad_data",
                    "error": "invalid parameter \"query\": 1:5: parse error: unexpected <op:/>"
                })),
            )
                .into_response(),
        }
    }

    async fn serve() -> SocketAddr {
        let targets = Json(json!({"status": "success", "data": {"activeTargets": [
            {"labels": {"job": "a"}, "scrapeInterval": "1m", "health": "up"},
            {"labels": {"job": "b"}, "scrapeInterval": "2m", "health": "up"}
        ], "droppedTargets": []}}));
        let app = Router::new()
            .route("/api/v1/query", get(fake_prometheus))
            .route("/api/v1/targets", get(move || async move { targets }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn http() -> reqwest::Client {
        install_crypto();
        reqwest::Client::new()
    }

    async fn provider() -> PrometheusProvider {
        let addr = serve().await;
        PrometheusProvider::with_client(http(), &format!("http://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn values_follow_flagger() {
        let p = provider().await;
        assert_eq!(p.query("vector(1)").await, Ok(1.0));
        assert_eq!(p.query("two_series").await, Ok(99.5), "last series wins");
        assert_eq!(p.query("scalar(1.5)").await, Ok(1.5));
        assert_eq!(
            p.query("\n\tsum(\n\t\trate(x[1m])\n\t) \n\t* 100").await,
            Ok(42.0),
            "whitespace collapsed"
        );
        assert_eq!(
            p.query("empty").await,
            Err(QueryError::NoValues {
                query: "empty".into()
            })
        );
        assert_eq!(
            p.query("nan").await,
            Err(QueryError::NoValues {
                query: "nan".into()
            })
        );
    }

    #[test]
    fn prom_durations_and_range_windows() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(prom_duration("1m"), ms(60_000));
        assert_eq!(prom_duration("1h30m"), ms(5_400_000));
        assert_eq!(prom_duration("500ms"), ms(500));
        assert_eq!(prom_duration("1d2h"), ms(93_600_000));
        assert_eq!(prom_duration("1w"), ms(604_800_000));
        for bad in ["", "1", "m", "1x", "1.5m", "-1m"] {
            assert_eq!(prom_duration(bad), None, "{bad}");
        }
        let q = r#"sum(rate(a{path=~"/x[1s]"}[1m])) / sum(increase(b[5m] offset 1m)) + max_over_time(rate(c[30s])[10m:1m]) + d['[2s]'][ 90s ]"#;
        let windows: Vec<String> = range_windows(q).into_iter().map(|w| w.0).collect();
        assert_eq!(windows, ["1m", "5m", "30s", "90s"]);
        assert!(range_windows("vector(1)").is_empty());
    }

    #[test]
    fn a_window_shorter_than_two_scrape_intervals_is_named() {
        let intervals = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Flagger #1123: a 1m window with a 1m scrape interval.
        assert_eq!(
            window_too_short("sum(rate(x[1m]))", &intervals(&["1m"])),
            Some(("1m".into(), "1m".into()))
        );
        assert_eq!(
            window_too_short(
                "sum(rate(x[1m])) / sum(rate(y[5m]))",
                &intervals(&["15s", "30s"])
            ),
            None
        );
        assert_eq!(
            window_too_short("rate(x[90s]) / rate(y[5m])", &intervals(&["1m", "15s"])),
            None,
            "the shortest interval is compared"
        );
        assert_eq!(
            window_too_short("rate(x[1m59s])", &intervals(&["1m"])),
            Some(("1m59s".into(), "1m".into()))
        );
        assert_eq!(window_too_short("rate(x[2m])", &intervals(&["1m"])), None);
        assert_eq!(window_too_short("vector(1)", &intervals(&["1m"])), None);
        assert_eq!(window_too_short("rate(x[1m])", &[]), None);
        assert_eq!(
            window_too_short_message("1m", "1m"),
            "window 1m is shorter than 2 × scrape interval 1m"
        );
    }

    #[tokio::test]
    async fn no_values_from_a_short_window_name_the_scrape_interval() {
        let p = provider().await;
        assert_eq!(
            p.query("sum(rate(x[1m]))").await,
            Err(QueryError::WindowTooShort {
                query: "sum(rate(x[1m]))".into(),
                window: "1m".into(),
                scrape_interval: "1m".into()
            })
        );
        assert_eq!(
            p.query("sum(rate(x[2m]))").await,
            Err(QueryError::NoValues {
                query: "sum(rate(x[2m]))".into()
            }),
            "a window of two scrapes is not the cause"
        );
    }

    #[tokio::test]
    async fn unusable_answers_are_invalid() {
        let p = provider().await;
        for q in ["matrix[1m]", "\"a string\"", "html"] {
            let e = p.query(q).await.unwrap_err();
            assert!(matches!(e, QueryError::Invalid(_)), "{q}: {e:?}");
        }
        let e = p.query("matrix[1m]").await.unwrap_err();
        assert!(e.to_string().contains("range vector"), "{e}");
    }

    #[tokio::test]
    async fn bad_promql_is_rejected_with_prometheus_words() {
        let p = provider().await;
        let e = p.query("1 +/ 2").await.unwrap_err();
        assert_eq!(
            e,
            QueryError::Rejected(
                "HTTP 400: bad_data: invalid parameter \"query\": 1:5: parse error: unexpected <op:/>".into()
            )
        );
        let e = p.query("forbidden").await.unwrap_err();
        assert_eq!(e, QueryError::Rejected("HTTP 403: access denied".into()));
    }

    #[tokio::test]
    async fn server_trouble_is_unavailable() {
        let p = provider().await;
        let e = p.query("overloaded").await.unwrap_err();
        assert_eq!(
            e,
            QueryError::Unavailable(
                "HTTP 503: timeout: query timed out in expression evaluation".into()
            )
        );
        let e = p.query("proxy_down").await.unwrap_err();
        assert_eq!(
            e,
            QueryError::Unavailable("HTTP 502: <html>502 Bad Gateway</html>".into())
        );
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = PrometheusProvider::with_client(http(), &format!("http://{addr}")).unwrap();
        let e = p.query("vector(1)").await.unwrap_err();
        let QueryError::Unavailable(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.to_lowercase().contains("connect"), "{m}");
        assert!(matches!(
            p.is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn timeout_is_unavailable() {
        let addr = serve().await;
        let p = PrometheusProvider::with_client(http(), &format!("http://{addr}"))
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let e = p.query("slow").await.unwrap_err();
        let QueryError::Unavailable(m) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(m, "timed out after 200ms");
    }

    #[tokio::test]
    async fn is_online_needs_vector_1_to_be_1() {
        let p = provider().await;
        assert_eq!(p.is_online().await, Ok(()));
    }

    #[tokio::test]
    async fn base_path_is_kept() {
        let app = Router::new().route("/prom/api/v1/query", get(fake_prometheus));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let p = PrometheusProvider::with_client(http(), &format!("http://{addr}/prom")).unwrap();
        assert_eq!(p.query("vector(2)").await, Ok(2.0));
        let p = PrometheusProvider::with_client(http(), &format!("http://{addr}/prom/")).unwrap();
        assert_eq!(p.query("vector(2)").await, Ok(2.0));
    }

    fn template(address: &str, insecure: bool) -> MetricTemplateProvider {
        MetricTemplateProvider {
            type_: "prometheus".into(),
            address: Some(address.into()),
            insecure_skip_verify: Some(insecure),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_a_self_signed_certificate() {
        let addr = h::testing::serve_tls_json(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}}"#,
        );
        let p =
            PrometheusProvider::from_template(&template(&addr, true), None, "", &http()).unwrap();
        assert_eq!(p.query("vector(1)").await, Ok(1.0));
        assert_eq!(p.is_online().await, Ok(()));

        let p =
            PrometheusProvider::from_template(&template(&addr, false), None, "", &http()).unwrap();
        let e = p.query("vector(1)").await.unwrap_err();
        let QueryError::Unavailable(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.to_lowercase().contains("certificate"), "{m}");
    }

    #[tokio::test]
    async fn template_without_address_uses_the_metrics_server() {
        let addr = serve().await;
        let spec = MetricTemplateProvider {
            type_: "prometheus".into(),
            ..Default::default()
        };
        let p = PrometheusProvider::from_template(&spec, None, &format!("http://{addr}/"), &http())
            .unwrap();
        assert_eq!(p.url(), format!("http://{addr}"));
        assert_eq!(p.query("vector(2)").await, Ok(2.0));
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:s3cret", "YWxpY2U6czNjcmV0"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn bad_url_is_a_config_error() {
        let e = PrometheusProvider::with_client(http(), "prometheus:9090").unwrap_err();
        assert!(matches!(e, QueryError::Config(_)), "{e:?}");
        let e = PrometheusProvider::new("not a url").unwrap_err();
        assert!(matches!(e, QueryError::Config(_)), "{e:?}");
    }
}
