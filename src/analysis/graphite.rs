//! Graphite behind [`MetricsProvider`]: the render URL API, as Flagger's Graphite provider.
//!
//! - Query: the template's query is render API parameters (`target=summarize(...)&from=-10min`);
//!   whitespace runs are collapsed to one space, then `GET <address>/render?<params>&format=json`.
//!   A query without `target=` is rejected before sending.
//! - Credentials: optional; with a `secretRef`, both `username` and `password` (basic auth).
//! - Value: the **last non-null** datapoint across all returned series (Flagger's); values may
//!   be numbers or numeric strings. `[]` or only `null`s: no values found.
//! - Errors: graphite-web answers 400 (bad target) or 500 (a Python traceback) as text/HTML.
//! - [`MetricsProvider::is_online`]: `target=test` must answer (no values is fine).

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use serde_json::Value;

use super::http::{self as h, Credentials};
use super::prometheus::base64_encode;
use super::template::collapse_whitespace;
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Per-request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Query sent by [`MetricsProvider::is_online`] (Flagger's).
pub const ONLINE_QUERY: &str = "target=test";

/// A Graphite (graphite-web, carbonapi, go-graphite, ...) render API.
#[derive(Clone)]
pub struct GraphiteProvider {
    client: reqwest::Client,
    address: Url,
    headers: HeaderMap,
}

impl GraphiteProvider {
    /// The provider a `graphite` MetricTemplate describes (`address` required).
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let address = h::address(spec, None)?;
        let mut headers = h::custom_headers(spec)?;
        if let Some(creds) = secret {
            let user = creds.require("username")?;
            let password = creds.require("password")?;
            let encoded = base64_encode(format!("{user}:{password}").as_bytes());
            headers.insert(
                AUTHORIZATION,
                h::secret_header(&creds, "password", &format!("Basic {encoded}"))?,
            );
        }
        Ok(GraphiteProvider {
            client: h::client(http, spec)?,
            address,
            headers,
        })
    }

    /// The render API's base address.
    pub fn address(&self) -> &str {
        self.address.as_str().trim_end_matches('/')
    }

    async fn run(&self, query: &str) -> Result<f64, QueryError> {
        let params = collapse_whitespace(query);
        // Parse the parameters as a query string (`+` and `%xx` decoded, as Go's url.Query).
        let parsed = Url::parse(&format!("http://graphite/render?{params}"))
            .map_err(|e| QueryError::Rejected(format!("not render API parameters: {e}")))?;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "format")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if !pairs.iter().any(|(k, _)| k == "target") {
            return Err(QueryError::Rejected(
                "the query must be render API parameters with a target, e.g. target=sumSeries(app.requests.*)&from=-5min".into(),
            ));
        }
        let mut url = h::endpoint(&self.address, "/render");
        url.query_pairs_mut()
            .extend_pairs(&pairs)
            .append_pair("format", "json");
        let answer = h::fetch(self.client.get(url).headers(self.headers.clone()), TIMEOUT).await?;
        h::check_status(answer.status, &h::quote(&answer.body))?;
        let series: Vec<Series> = serde_json::from_str(&answer.body).map_err(|e| {
            QueryError::Invalid(format!(
                "not a Graphite render answer ({e}): {}",
                h::quote(&answer.body)
            ))
        })?;
        let mut last = None;
        for s in &series {
            for point in &s.datapoints {
                if let Some(v) = point.first().and_then(number) {
                    last = Some(v);
                }
            }
        }
        last.ok_or_else(|| QueryError::NoValues {
            query: params.clone(),
        })
    }
}

impl std::fmt::Debug for GraphiteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphiteProvider")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for GraphiteProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            match self.run(ONLINE_QUERY).await {
                Ok(_) | Err(QueryError::NoValues { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// One series of a `format=json` render answer.
#[derive(Deserialize)]
struct Series {
    /// `[[value_or_null, timestamp], ...]`, oldest first.
    #[serde(default)]
    datapoints: Vec<Vec<Value>>,
}

/// A datapoint value: a number or a numeric string; `null`, NaN and anything else are absent.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| !v.is_nan())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::extract::RawQuery;
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::json;

    use super::super::http::testing::{http, refused, serve};
    use super::*;
    use crate::api::SecretReference;

    type Seen = Arc<Mutex<Vec<(HashMap<String, String>, Option<String>)>>>;

    /// A fake graphite-web `/render`.
    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let render = move |RawQuery(raw): RawQuery, h: AxHeaders| {
            let s = s.clone();
            async move {
                let q: HashMap<String, String> =
                    Url::parse(&format!("http://x/?{}", raw.unwrap_or_default()))
                        .unwrap()
                        .query_pairs()
                        .into_owned()
                        .collect();
                let auth = h
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                s.lock().unwrap().push((q.clone(), auth.clone()));
                if auth.is_some_and(|a| a != "Basic Z3JhcGg6cHc=") {
                    return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
                }
                if q.get("format").map(String::as_str) != Some("json") {
                    return (StatusCode::BAD_REQUEST, "format").into_response();
                }
                let target = q.get("target").cloned().unwrap_or_default();
                let body = match target.as_str() {
                    "summarize( asPercent(a, b), 1min, 'avg' )" => json!([
                        {"target": "a", "tags": {"name": "a"}, "datapoints": [[1.0, 1_700_000_000], [2.0, 1_700_000_060], [null, 1_700_000_120]]},
                        {"target": "b", "tags": {"name": "b"}, "datapoints": [["97.5", 1_700_000_000], [null, 1_700_000_060]]}
                    ]),
                    "nulls" => json!([{"target": "nulls", "datapoints": [[null, 1], [null, 2]]}]),
                    "test" | "missing" => json!([]),
                    "boom" => {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "<pre>Traceback (most recent call last):\n  File \"render/views.py\"</pre>",
                        )
                            .into_response();
                    }
                    _ => {
                        return (StatusCode::BAD_REQUEST, "Invalid target: unexpected EOF")
                            .into_response();
                    }
                };
                Json(body).into_response()
            }
        };
        let app = Router::new().route("/graphite/render", get(render));
        (format!("{}/graphite/", serve(app).await), seen)
    }

    fn provider(address: &str, creds: Option<(&str, &str)>) -> GraphiteProvider {
        let data: BTreeMap<String, Vec<u8>> = creds
            .map(|(u, p)| {
                BTreeMap::from([
                    ("username".to_string(), u.as_bytes().to_vec()),
                    ("password".to_string(), p.as_bytes().to_vec()),
                ])
            })
            .unwrap_or_default();
        let spec = MetricTemplateProvider {
            type_: "graphite".into(),
            address: Some(address.into()),
            secret_ref: creds.map(|_| SecretReference { name: "gr".into() }),
            ..Default::default()
        };
        let c = creds.map(|_| Credentials {
            name: "gr",
            data: &data,
        });
        GraphiteProvider::from_template(&spec, c, &http()).unwrap()
    }

    #[tokio::test]
    async fn last_non_null_point_across_series() {
        let (addr, seen) = fake().await;
        let p = provider(&addr, Some(("graph", "pw")));
        let q = "target=summarize(\n  asPercent(a, b),\n  1min,\n  'avg'\n)&from=-10min";
        assert_eq!(p.query(q).await, Ok(97.5));
        let (params, auth) = seen.lock().unwrap()[0].clone();
        assert_eq!(params["from"], "-10min");
        assert_eq!(params["format"], "json");
        assert_eq!(auth.as_deref(), Some("Basic Z3JhcGg6cHc="));
    }

    #[tokio::test]
    async fn empty_and_null_answers_are_no_values() {
        let (addr, _) = fake().await;
        let p = provider(&addr, None);
        for t in ["missing", "nulls"] {
            let q = format!("target={t}");
            assert_eq!(p.query(&q).await, Err(QueryError::NoValues { query: q }));
        }
    }

    #[tokio::test]
    async fn errors() {
        let (addr, _) = fake().await;
        let p = provider(&addr, None);
        assert_eq!(
            p.query("target=sumSeries(").await,
            Err(QueryError::Rejected(
                "HTTP 400: Invalid target: unexpected EOF".into()
            ))
        );
        assert!(matches!(
            p.query("target=boom").await,
            Err(QueryError::Unavailable(m)) if m.starts_with("HTTP 500: <pre>Traceback")
        ));
        assert!(matches!(
            p.query("sumSeries(a.b)").await,
            Err(QueryError::Rejected(m)) if m.contains("target=")
        ));
        let bad = provider(&addr, Some(("graph", "wrong")));
        assert_eq!(
            bad.query("target=test").await,
            Err(QueryError::Rejected("HTTP 401: Unauthorized".into()))
        );
    }

    #[tokio::test]
    async fn is_online_accepts_no_values() {
        let (addr, _) = fake().await;
        assert_eq!(provider(&addr, None).is_online().await, Ok(()));
        assert!(matches!(
            provider(&refused(), None).is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn secret_needs_both_keys_and_address_is_required() {
        let data = BTreeMap::from([("username".to_string(), b"u".to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "graphite".into(),
            address: Some("http://graphite".into()),
            ..Default::default()
        };
        let creds = Credentials {
            name: "gr",
            data: &data,
        };
        assert_eq!(
            GraphiteProvider::from_template(&spec, Some(creds), &http())
                .unwrap_err()
                .to_string(),
            "secret \"gr\" has no key \"password\""
        );
        let spec = MetricTemplateProvider {
            type_: "graphite".into(),
            ..Default::default()
        };
        assert_eq!(
            GraphiteProvider::from_template(&spec, None, &http()).unwrap_err(),
            ProviderError::MissingAddress("graphite".into())
        );
    }
}
