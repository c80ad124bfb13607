//! Dynatrace behind [`MetricsProvider`]: the Metrics API v2, as Flagger's Dynatrace provider.
//!
//! - Query: the template's query is a metric selector;
//!   `GET <address>/api/v2/metrics/query?metricSelector=<q>&resolution=Inf&from=<ms>&to=<ms>`
//!   with `from = now − 10 × interval` (Unix milliseconds) and
//!   `Authorization: Api-Token <dynatrace_token>`. `address` is required, e.g.
//!   `https://<env>.live.dynatrace.com` or `https://<host>/e/<env>`.
//! - Value: the first value of the **last** series of the first result (Flagger's). A `null`
//!   value (no data in the window) is no values found, where Flagger reads it as 0. No
//!   result, no series or no values: no values found.
//! - Errors: Dynatrace answers `{"error": {"code": 400, "message": "...",
//!   "constraintViolations": [...]}}`; the message and violations are quoted.
//! - [`MetricsProvider::is_online`]: `GET /api/v2/metrics?pageSize=1` with the token must be 200.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use serde_json::Value;

use super::http::{self as h, Credentials, parse_interval, required_secret};
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Secret key of the API token (scope `metrics.read`).
pub const TOKEN: &str = "dynatrace_token";
/// The query window is this many metric intervals back from now (Flagger's).
pub const WINDOW_INTERVALS: u32 = 10;
/// Per-request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A Dynatrace environment.
#[derive(Clone)]
pub struct DynatraceProvider {
    client: reqwest::Client,
    address: Url,
    headers: HeaderMap,
    window: Duration,
}

impl DynatraceProvider {
    /// The provider a `dynatrace` MetricTemplate describes; `interval` is the metric's.
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        interval: &str,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let address = h::address(spec, None)?;
        let creds = required_secret(secret, "dynatrace", TOKEN)?;
        let token = creds.require(TOKEN)?;
        let window = parse_interval(interval, "dynatrace")? * WINDOW_INTERVALS;
        let mut headers = h::custom_headers(spec)?;
        headers.insert(
            AUTHORIZATION,
            h::secret_header(&creds, TOKEN, &format!("Api-Token {token}"))?,
        );
        Ok(DynatraceProvider {
            client: h::client(http, spec)?,
            address,
            headers,
            window,
        })
    }

    /// The environment's address.
    pub fn address(&self) -> &str {
        self.address.as_str().trim_end_matches('/')
    }

    async fn get(&self, url: Url) -> Result<String, QueryError> {
        let answer = h::fetch(self.client.get(url).headers(self.headers.clone()), TIMEOUT).await?;
        let what = serde_json::from_str::<ErrorEnvelope>(&answer.body)
            .ok()
            .map(|e| e.error.describe())
            .unwrap_or_else(|| h::quote(&answer.body));
        h::check_status(answer.status, &what)?;
        Ok(answer.body)
    }

    async fn run(&self, selector: &str) -> Result<f64, QueryError> {
        let now = h::unix_now().as_millis();
        let from = now.saturating_sub(self.window.as_millis());
        let mut url = h::endpoint(&self.address, "/api/v2/metrics/query");
        url.query_pairs_mut()
            .append_pair("metricSelector", selector)
            .append_pair("resolution", "Inf")
            .append_pair("from", &from.to_string())
            .append_pair("to", &now.to_string());
        let body = self.get(url).await?;
        let resp: Response = serde_json::from_str(&body).map_err(|e| {
            QueryError::Invalid(format!(
                "not a Dynatrace metrics answer ({e}): {}",
                h::quote(&body)
            ))
        })?;
        resp.result
            .first()
            .and_then(|r| r.data.last())
            .and_then(|series| series.values.first())
            .and_then(Value::as_f64)
            .filter(|v| !v.is_nan())
            .ok_or_else(|| QueryError::NoValues {
                query: selector.to_string(),
            })
    }
}

impl std::fmt::Debug for DynatraceProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynatraceProvider")
            .field("address", &self.address())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for DynatraceProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(query.trim()))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            let mut url = h::endpoint(&self.address, "/api/v2/metrics");
            url.query_pairs_mut().append_pair("pageSize", "1");
            self.get(url).await.map(|_| ())
        })
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    result: Vec<MetricResult>,
}

#[derive(Deserialize)]
struct MetricResult {
    #[serde(default)]
    data: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    /// Numbers or `null`s.
    #[serde(default)]
    values: Vec<Value>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "constraintViolations")]
    violations: Vec<Violation>,
}

#[derive(Deserialize)]
struct Violation {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    message: String,
}

impl ApiError {
    fn describe(&self) -> String {
        let mut parts = vec![self.message.clone()];
        parts.extend(self.violations.iter().map(|v| match &v.path {
            Some(p) if !p.is_empty() => format!("{p}: {}", v.message),
            _ => v.message.clone(),
        }));
        parts.retain(|p| !p.is_empty());
        parts.join("; ")
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

    fn unauthorised() -> axum::response::Response {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "message": "Missing authorization parameter."}})),
        )
            .into_response()
    }

    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let query = move |Query(q): Query<HashMap<String, String>>, h: AxHeaders| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(q.clone());
                if h.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Api-Token dt0c01.abc")
                {
                    return unauthorised();
                }
                let result = |data: serde_json::Value| {
                    json!({
                        "totalCount": 1, "nextPageKey": null, "resolution": "Inf",
                        "result": [{
                            "metricId": q["metricSelector"], "dataPointCountRatio": 0.0001,
                            "dimensionCountRatio": 0.001, "data": data
                        }]
                    })
                };
                let series = |v: serde_json::Value| {
                    json!({"dimensions": ["SERVICE-1"], "dimensionMap": {"dt.entity.service": "SERVICE-1"},
                           "timestamps": [1_700_000_000_000_u64], "values": [v]})
                };
                let body = match q["metricSelector"].as_str() {
                    "builtin:service.response.time:avg" => {
                        result(json!([series(json!(1000.0)), series(json!(2500.5))]))
                    }
                    "null" => result(json!([series(json!(null))])),
                    "no_data" => result(json!([])),
                    "no_result" => {
                        json!({"totalCount": 0, "nextPageKey": null, "resolution": "Inf", "result": []})
                    }
                    _ => {
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"error": {
                                "code": 400,
                                "message": "Constraints violated.",
                                "constraintViolations": [{
                                    "path": "metricSelector",
                                    "message": "Metric selector parse error: unexpected ':'",
                                    "parameterLocation": "QUERY", "location": null
                                }]
                            }})),
                        )
                            .into_response();
                    }
                };
                Json(body).into_response()
            }
        };
        let metrics = |Query(q): Query<HashMap<String, String>>, h: AxHeaders| async move {
            if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Api-Token dt0c01.abc")
            {
                return unauthorised();
            }
            assert_eq!(q.get("pageSize").map(String::as_str), Some("1"));
            Json(json!({"totalCount": 900, "nextPageKey": "x", "metrics": [{"metricId": "builtin:host.cpu.usage"}]}))
                .into_response()
        };
        let app = Router::new()
            .route("/e/env1/api/v2/metrics/query", get(query))
            .route("/e/env1/api/v2/metrics", get(metrics));
        (format!("{}/e/env1", serve(app).await), seen)
    }

    fn provider(address: &str, token: &str) -> DynatraceProvider {
        let data = BTreeMap::from([(TOKEN.to_string(), token.as_bytes().to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "dynatrace".into(),
            address: Some(address.into()),
            secret_ref: Some(SecretReference { name: "dt".into() }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "dt",
            data: &data,
        };
        DynatraceProvider::from_template(&spec, Some(creds), "1m", &http()).unwrap()
    }

    #[tokio::test]
    async fn last_series_first_value_with_token_and_window() {
        let (addr, seen) = fake().await;
        let p = provider(&addr, "dt0c01.abc");
        assert_eq!(
            p.query("builtin:service.response.time:avg").await,
            Ok(2500.5)
        );
        let q = seen.lock().unwrap()[0].clone();
        assert_eq!(q["resolution"], "Inf");
        let from: u128 = q["from"].parse().unwrap();
        let to: u128 = q["to"].parse().unwrap();
        assert_eq!(to - from, 600_000, "10 × 1m in ms");
    }

    #[tokio::test]
    async fn nulls_and_empty_answers_are_no_values() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "dt0c01.abc");
        for q in ["null", "no_data", "no_result"] {
            assert_eq!(
                p.query(q).await,
                Err(QueryError::NoValues { query: q.into() }),
                "{q}"
            );
        }
    }

    #[tokio::test]
    async fn errors_quote_dynatrace() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "dt0c01.abc");
        assert_eq!(
            p.query("builtin:bad::").await,
            Err(QueryError::Rejected(
                "HTTP 400: Constraints violated.; metricSelector: Metric selector parse error: unexpected ':'".into()
            ))
        );
        assert_eq!(
            provider(&addr, "wrong").query("null").await,
            Err(QueryError::Rejected(
                "HTTP 401: Missing authorization parameter.".into()
            ))
        );
    }

    #[tokio::test]
    async fn is_online_lists_one_metric() {
        let (addr, _) = fake().await;
        assert_eq!(provider(&addr, "dt0c01.abc").is_online().await, Ok(()));
        assert!(matches!(
            provider(&addr, "wrong").is_online().await,
            Err(QueryError::Rejected(_))
        ));
        assert!(matches!(
            provider(&refused(), "x").is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn address_and_token_are_required() {
        let spec = MetricTemplateProvider {
            type_: "dynatrace".into(),
            ..Default::default()
        };
        assert_eq!(
            DynatraceProvider::from_template(&spec, None, "1m", &http()).unwrap_err(),
            ProviderError::MissingAddress("dynatrace".into())
        );
        let spec = MetricTemplateProvider {
            type_: "dynatrace".into(),
            address: Some("https://abc.live.dynatrace.com".into()),
            ..Default::default()
        };
        assert_eq!(
            DynatraceProvider::from_template(&spec, None, "1m", &http())
                .unwrap_err()
                .to_string(),
            "spec.provider.secretRef is required for provider type dynatrace (keys: dynatrace_token)"
        );
    }
}
