//! Datadog behind [`MetricsProvider`]: the v1 metrics query API, as Flagger's Datadog provider.
//!
//! - Query: `GET <address>/api/v1/query?query=<q>&from=<now − 10 × interval>&to=<now>` (Unix
//!   seconds; the 10× window is Flagger's, issue #1820), headers `DD-API-KEY` and
//!   `DD-APPLICATION-KEY` from the Secret keys `datadog_api_key` and
//!   `datadog_application_key`. Default address `https://api.datadoghq.com` (other sites:
//!   `https://api.datadoghq.eu`, `https://us5.datadoghq.com`, ...).
//! - Value: the **first (oldest)** point of the first series (Flagger PR #1763: the newest
//!   bucket is usually incomplete). Points whose value is `null` are skipped (Flagger reads
//!   them as 0). No series, no points, or only `null`s: no values found.
//! - Errors: Datadog answers `{"errors": ["..."]}` with a 4xx (bad query, bad keys) or
//!   `{"status": "error", "error": "..."}`; both are `Rejected` with Datadog's words.
//! - [`MetricsProvider::is_online`]: `GET /api/v1/validate` with the same keys must be 200.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::http::{self as h, Credentials, parse_interval, required_secret};
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Address when the template has none.
pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
/// Secret key of the API key (header `DD-API-KEY`).
pub const API_KEY: &str = "datadog_api_key";
/// Secret key of the application key (header `DD-APPLICATION-KEY`).
pub const APPLICATION_KEY: &str = "datadog_application_key";
/// The query window is this many metric intervals back from now (Flagger's).
pub const WINDOW_INTERVALS: u32 = 10;
/// Per-request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A Datadog site.
#[derive(Clone)]
pub struct DatadogProvider {
    client: reqwest::Client,
    address: Url,
    headers: HeaderMap,
    window: Duration,
}

impl DatadogProvider {
    /// The provider a `datadog` MetricTemplate describes; `interval` is the metric's.
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        interval: &str,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let address = h::address(spec, Some(DEFAULT_ADDRESS))?;
        let creds = required_secret(secret, "datadog", &format!("{API_KEY}, {APPLICATION_KEY}"))?;
        let api_key = creds.require(API_KEY)?;
        let app_key = creds.require(APPLICATION_KEY)?;
        let window = parse_interval(interval, "datadog")? * WINDOW_INTERVALS;
        let mut headers = h::custom_headers(spec)?;
        headers.insert("DD-API-KEY", h::secret_header(&creds, API_KEY, &api_key)?);
        headers.insert(
            "DD-APPLICATION-KEY",
            h::secret_header(&creds, APPLICATION_KEY, &app_key)?,
        );
        Ok(DatadogProvider {
            client: h::client(http, spec)?,
            address,
            headers,
            window,
        })
    }

    /// The site's address, e.g. `https://api.datadoghq.com`.
    pub fn address(&self) -> &str {
        self.address.as_str().trim_end_matches('/')
    }

    /// How far back queries look: 10 × the metric interval.
    pub fn window(&self) -> Duration {
        self.window
    }

    async fn run(&self, query: &str) -> Result<f64, QueryError> {
        let now = h::unix_now().as_secs();
        let from = now.saturating_sub(self.window.as_secs());
        let mut url = h::endpoint(&self.address, "/api/v1/query");
        url.query_pairs_mut()
            .append_pair("query", query)
            .append_pair("from", &from.to_string())
            .append_pair("to", &now.to_string());
        let answer = h::fetch(self.client.get(url).headers(self.headers.clone()), TIMEOUT).await?;
        let parsed: Option<Response> = serde_json::from_str(&answer.body).ok();
        h::check_status(
            answer.status,
            &parsed
                .as_ref()
                .and_then(Response::error)
                .unwrap_or_else(|| h::quote(&answer.body)),
        )?;
        let Some(resp) = parsed else {
            return Err(QueryError::Invalid(format!(
                "not a Datadog query answer: {}",
                h::quote(&answer.body)
            )));
        };
        if let Some(e) = resp.error() {
            return Err(QueryError::Rejected(e));
        }
        let no_values = || QueryError::NoValues {
            query: query.to_string(),
        };
        let series = resp.series.first().ok_or_else(no_values)?;
        series
            .pointlist
            .iter()
            .find_map(|p| p.get(1).and_then(Value::as_f64))
            .filter(|v| !v.is_nan())
            .ok_or_else(no_values)
    }

    async fn validate(&self) -> Result<(), QueryError> {
        let url = h::endpoint(&self.address, "/api/v1/validate");
        let answer = h::fetch(self.client.get(url).headers(self.headers.clone()), TIMEOUT).await?;
        let what = serde_json::from_str::<Response>(&answer.body)
            .ok()
            .and_then(|r| r.error())
            .unwrap_or_else(|| h::quote(&answer.body));
        h::check_status(answer.status, &what)
    }
}

impl std::fmt::Debug for DatadogProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatadogProvider")
            .field("address", &self.address())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for DatadogProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(self.validate())
    }
}

/// The parts of `/api/v1/query` (and error) answers pennant reads.
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    /// `[[timestamp_ms, value_or_null], ...]`, oldest first.
    #[serde(default)]
    pointlist: Vec<Vec<Value>>,
}

impl Response {
    fn error(&self) -> Option<String> {
        if !self.errors.is_empty() {
            return Some(self.errors.join("; "));
        }
        match (&self.status, &self.error) {
            (_, Some(e)) if !e.is_empty() => Some(e.clone()),
            (Some(s), _) if s == "error" => Some("status error".into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::extract::Query;
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::json;

    use super::super::http::testing::{http, refused, serve};
    use super::*;
    use crate::api::SecretReference;

    type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

    fn authorised(h: &AxHeaders) -> bool {
        h.get("dd-api-key").is_some_and(|v| v == "api-123")
            && h.get("dd-application-key").is_some_and(|v| v == "app-456")
    }

    /// A fake Datadog answering as `api.datadoghq.com` does.
    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let query = move |Query(q): Query<HashMap<String, String>>, h: AxHeaders| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(q.clone());
                if !authorised(&h) {
                    return (
                        StatusCode::FORBIDDEN,
                        Json(json!({"errors": ["Forbidden"]})),
                    )
                        .into_response();
                }
                let series = |points: serde_json::Value| {
                    json!({
                        "status": "ok", "res_type": "time_series", "resp_version": 1,
                        "query": q["query"], "message": "", "from_date": 1, "to_date": 2,
                        "group_by": [],
                        "series": [{
                            "metric": "istio.mesh.request.count", "display_name": "istio.mesh.request.count",
                            "unit": null, "pointlist": points, "start": 1, "end": 2, "interval": 60,
                            "length": 3, "aggr": "sum", "scope": "*", "expression": "sum:x{*}",
                            "tag_set": [], "query_index": 0
                        }]
                    })
                };
                let body = match q["query"].as_str() {
                    "error_rate" => series(json!([
                        [1_700_000_000_000.0_f64, 1.25],
                        [1_700_000_060_000.0_f64, 7.0],
                        [1_700_000_120_000.0_f64, null]
                    ])),
                    "null_first" => series(json!([
                        [1_700_000_000_000.0_f64, null],
                        [1_700_000_060_000.0_f64, 2.5]
                    ])),
                    "all_null" => series(json!([[1_700_000_000_000.0_f64, null]])),
                    "no_points" => series(json!([])),
                    "no_series" => json!({
                        "status": "ok", "res_type": "time_series", "resp_version": 1,
                        "query": "no_series", "series": [], "from_date": 1, "to_date": 2,
                        "group_by": [], "message": ""
                    }),
                    "status_error" => json!({
                        "status": "error", "res_type": "time_series",
                        "error": "Rule 'scope_expr' didn't match at '}'"
                    }),
                    "overloaded" => {
                        return (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error")
                            .into_response();
                    }
                    "html" => return (StatusCode::OK, "<html>maintenance</html>").into_response(),
                    _ => {
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"errors": ["Error parsing query: \n unable to parse sum:x{: Rule 'scope_expr' didn't match"]})),
                        )
                            .into_response();
                    }
                };
                Json(body).into_response()
            }
        };
        let validate = |h: AxHeaders| async move {
            if h.get("dd-api-key").is_some_and(|v| v == "api-123") {
                Json(json!({"valid": true})).into_response()
            } else {
                (
                    StatusCode::FORBIDDEN,
                    Json(json!({"errors": ["Forbidden"]})),
                )
                    .into_response()
            }
        };
        let app: Router = Router::new()
            .route("/api/v1/query", get(query))
            .route("/api/v1/validate", get(validate));
        (serve(app).await, seen)
    }

    fn provider(address: &str, api_key: &str, interval: &str) -> DatadogProvider {
        let data = BTreeMap::from([
            (API_KEY.to_string(), api_key.as_bytes().to_vec()),
            (APPLICATION_KEY.to_string(), b"app-456\n".to_vec()),
        ]);
        let spec = MetricTemplateProvider {
            type_: "datadog".into(),
            address: Some(address.into()),
            secret_ref: Some(SecretReference {
                name: "datadog".into(),
            }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "datadog",
            data: &data,
        };
        DatadogProvider::from_template(&spec, Some(creds), interval, &http()).unwrap()
    }

    #[tokio::test]
    async fn first_point_of_first_series_with_keys_and_window() {
        let (addr, seen) = fake().await;
        let p = provider(&addr, "api-123", "1m");
        assert_eq!(p.query("error_rate").await, Ok(1.25), "oldest point");
        let q = seen.lock().unwrap()[0].clone();
        let from: u64 = q["from"].parse().unwrap();
        let to: u64 = q["to"].parse().unwrap();
        assert_eq!(to - from, 600, "10 × 1m");
        let now = h::unix_now().as_secs();
        assert!(to <= now && now - to < 5, "to is now");
        assert_eq!(
            p.query("null_first").await,
            Ok(2.5),
            "null points are skipped"
        );
    }

    #[tokio::test]
    async fn empty_answers_are_no_values() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "api-123", "30s");
        for q in ["no_series", "no_points", "all_null"] {
            assert_eq!(
                p.query(q).await,
                Err(QueryError::NoValues { query: q.into() }),
                "{q}"
            );
        }
    }

    #[tokio::test]
    async fn errors_carry_datadogs_words() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "api-123", "1m");
        assert_eq!(
            p.query("sum:x{").await,
            Err(QueryError::Rejected(
                "HTTP 400: Error parsing query: \n unable to parse sum:x{: Rule 'scope_expr' didn't match".into()
            ))
        );
        assert_eq!(
            p.query("status_error").await,
            Err(QueryError::Rejected(
                "Rule 'scope_expr' didn't match at '}'".into()
            ))
        );
        assert_eq!(
            p.query("overloaded").await,
            Err(QueryError::Unavailable(
                "HTTP 503: upstream connect error".into()
            ))
        );
        assert!(matches!(
            p.query("html").await,
            Err(QueryError::Invalid(m)) if m.contains("maintenance")
        ));
        let bad = provider(&addr, "wrong", "1m");
        assert_eq!(
            bad.query("error_rate").await,
            Err(QueryError::Rejected("HTTP 403: Forbidden".into()))
        );
    }

    #[tokio::test]
    async fn is_online_validates_the_keys() {
        let (addr, _) = fake().await;
        assert_eq!(provider(&addr, "api-123", "1m").is_online().await, Ok(()));
        assert_eq!(
            provider(&addr, "wrong", "1m").is_online().await,
            Err(QueryError::Rejected("HTTP 403: Forbidden".into()))
        );
        assert!(matches!(
            provider(&refused(), "api-123", "1m").is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn defaults_and_missing_keys() {
        let data = BTreeMap::from([(API_KEY.to_string(), b"k".to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "datadog".into(),
            ..Default::default()
        };
        let creds = Credentials {
            name: "dd",
            data: &data,
        };
        assert_eq!(
            DatadogProvider::from_template(&spec, Some(creds), "1m", &http())
                .unwrap_err()
                .to_string(),
            "secret \"dd\" has no key \"datadog_application_key\""
        );
        let data = BTreeMap::from([
            (API_KEY.to_string(), b"k".to_vec()),
            (APPLICATION_KEY.to_string(), b"a".to_vec()),
        ]);
        let creds = Credentials {
            name: "dd",
            data: &data,
        };
        let p = DatadogProvider::from_template(&spec, Some(creds), "2m", &http()).unwrap();
        assert_eq!(p.address(), DEFAULT_ADDRESS);
        assert_eq!(p.window(), Duration::from_secs(1200));
    }
}
