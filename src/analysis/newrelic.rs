//! New Relic behind [`MetricsProvider`]: NRQL over the Insights query API or NerdGraph, as
//! Flagger's two New Relic providers. The Secret chooses:
//!
//! | Secret keys | API | Default address |
//! |---|---|---|
//! | `newrelic_account_id` + `newrelic_api_key` (a user key, `NRAK-...`) | NerdGraph: `POST <address>` GraphQL `actor { account(id) { nrql(query) { results } } }`, header `API-Key` | `https://api.newrelic.com/graphql` |
//! | `newrelic_account_id` + `newrelic_query_key` | Insights: `GET <address>/v1/accounts/<id>/query?nrql=<q>`, header `X-Query-Key` | `https://insights-api.newrelic.com` |
//!
//! `newrelic_api_key` wins when both are present (New Relic retires Insights query keys).
//!
//! - Query: the NRQL with ` SINCE <interval in seconds> seconds ago` appended (Flagger's).
//! - Value: the one result row must hold one number: its `result` field if it has one (what
//!   `SELECT ... AS result` or an arithmetic expression returns), else its only field (e.g.
//!   `average.duration`). No rows or `null`: no values found; several rows (a `FACET` or
//!   `TIMESERIES` query) or several fields: an unusable answer that says why.
//! - Errors: Insights answers `{"error": "..."}` with a 4xx; NerdGraph answers 200 with
//!   `{"errors": [{"message": ...}]}`. Both are `Rejected` with New Relic's words.
//! - [`MetricsProvider::is_online`]: Insights runs `SELECT * FROM Metric` (Flagger's);
//!   NerdGraph asks `{ actor { user { name } } }`.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{self as h, Credentials, parse_interval, required_secret};
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Insights API address when the template has none.
pub const INSIGHTS_ADDRESS: &str = "https://insights-api.newrelic.com";
/// NerdGraph endpoint when the template has no address.
pub const NERDGRAPH_ADDRESS: &str = "https://api.newrelic.com/graphql";
/// Secret key of the account ID.
pub const ACCOUNT_ID: &str = "newrelic_account_id";
/// Secret key of an Insights query key (header `X-Query-Key`).
pub const QUERY_KEY: &str = "newrelic_query_key";
/// Secret key of a user API key for NerdGraph (header `API-Key`).
pub const API_KEY: &str = "newrelic_api_key";
/// Per-request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Which New Relic API the provider talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Insights,
    NerdGraph,
}

/// A New Relic account.
#[derive(Clone)]
pub struct NewRelicProvider {
    client: reqwest::Client,
    api: Api,
    address: Url,
    account_id: String,
    headers: HeaderMap,
    since_seconds: u64,
}

impl NewRelicProvider {
    /// The provider a `newrelic` MetricTemplate describes; `interval` is the metric's.
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        interval: &str,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let creds = required_secret(
            secret,
            "newrelic",
            &format!("{ACCOUNT_ID} and {API_KEY} or {QUERY_KEY}"),
        )?;
        let account_id = creds.require(ACCOUNT_ID)?;
        if account_id.is_empty() || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProviderError::BadSecretKey {
                secret: creds.name.to_string(),
                key: ACCOUNT_ID.into(),
                problem: "not a numeric account ID".into(),
            });
        }
        let mut headers = h::custom_headers(spec)?;
        let api = match (creds.get(API_KEY)?, creds.get(QUERY_KEY)?) {
            (Some(key), _) => {
                headers.insert("API-Key", h::secret_header(&creds, API_KEY, &key)?);
                Api::NerdGraph
            }
            (None, Some(key)) => {
                headers.insert("X-Query-Key", h::secret_header(&creds, QUERY_KEY, &key)?);
                Api::Insights
            }
            (None, None) => {
                return Err(ProviderError::MissingSecretKeys {
                    secret: creds.name.to_string(),
                    want: format!(
                        "neither key {API_KEY:?} (NerdGraph) nor {QUERY_KEY:?} (Insights)"
                    ),
                });
            }
        };
        let default = match api {
            Api::Insights => INSIGHTS_ADDRESS,
            Api::NerdGraph => NERDGRAPH_ADDRESS,
        };
        Ok(NewRelicProvider {
            client: h::client(http, spec)?,
            api,
            address: h::address(spec, Some(default))?,
            account_id,
            headers,
            since_seconds: parse_interval(interval, "newrelic")?.as_secs().max(1),
        })
    }

    /// The API in use.
    pub fn api(&self) -> Api {
        self.api
    }

    /// The API address.
    pub fn address(&self) -> &str {
        self.address.as_str().trim_end_matches('/')
    }

    /// `nrql` with Flagger's time window appended.
    fn windowed(&self, nrql: &str) -> String {
        format!("{} SINCE {} seconds ago", nrql.trim(), self.since_seconds)
    }

    async fn run(&self, nrql: &str) -> Result<f64, QueryError> {
        let sent = self.windowed(nrql);
        let results = match self.api {
            Api::Insights => self.insights(&sent).await?,
            Api::NerdGraph => self.nerdgraph(&sent).await?,
        };
        one_value(&results).map_err(|e| match e {
            QueryError::NoValues { .. } => QueryError::NoValues { query: sent },
            e => e,
        })
    }

    async fn insights(&self, nrql: &str) -> Result<Vec<Value>, QueryError> {
        let mut url = h::endpoint(
            &self.address,
            &format!("/v1/accounts/{}/query", self.account_id),
        );
        url.query_pairs_mut().append_pair("nrql", nrql);
        let answer = h::fetch(
            self.client
                .get(url)
                .headers(self.headers.clone())
                .header("Accept", "application/json"),
            TIMEOUT,
        )
        .await?;
        let parsed: Option<Insights> = serde_json::from_str(&answer.body).ok();
        let what = parsed
            .as_ref()
            .and_then(|r| r.error.clone())
            .unwrap_or_else(|| h::quote(&answer.body));
        h::check_status(answer.status, &what)?;
        match parsed {
            Some(Insights { error: Some(e), .. }) => Err(QueryError::Rejected(e)),
            Some(Insights { results, .. }) => Ok(results),
            None => Err(QueryError::Invalid(format!(
                "not an Insights query answer: {}",
                h::quote(&answer.body)
            ))),
        }
    }

    async fn graphql(&self, body: Value) -> Result<Value, QueryError> {
        let answer = h::fetch(
            self.client
                .post(self.address.clone())
                .headers(self.headers.clone())
                .json(&body),
            TIMEOUT,
        )
        .await?;
        let parsed: Option<GraphQl> = serde_json::from_str(&answer.body).ok();
        let errors = parsed.as_ref().and_then(GraphQl::errors);
        h::check_status(
            answer.status,
            &errors.clone().unwrap_or_else(|| h::quote(&answer.body)),
        )?;
        match parsed {
            _ if errors.is_some() => Err(QueryError::Rejected(errors.unwrap_or_default())),
            Some(GraphQl { data: Some(d), .. }) => Ok(d),
            _ => Err(QueryError::Invalid(format!(
                "not a NerdGraph answer: {}",
                h::quote(&answer.body)
            ))),
        }
    }

    async fn nerdgraph(&self, nrql: &str) -> Result<Vec<Value>, QueryError> {
        let query = format!(
            "query ($query: Nrql!) {{ actor {{ account(id: {}) {{ nrql(query: $query) {{ results }} }} }} }}",
            self.account_id
        );
        let data = self
            .graphql(json!({"query": query, "variables": {"query": nrql}}))
            .await?;
        match data.pointer("/actor/account/nrql/results") {
            Some(Value::Array(rows)) => Ok(rows.clone()),
            Some(Value::Null) | None => Ok(vec![]),
            Some(other) => Err(QueryError::Invalid(format!(
                "results is not a list: {}",
                h::quote(&other.to_string())
            ))),
        }
    }
}

impl std::fmt::Debug for NewRelicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRelicProvider")
            .field("api", &self.api)
            .field("address", &self.address())
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for NewRelicProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            match self.api {
                Api::Insights => self
                    .insights(&self.windowed("SELECT * FROM Metric"))
                    .await
                    .map(|_| ()),
                Api::NerdGraph => self
                    .graphql(json!({"query": "{ actor { user { name } } }"}))
                    .await
                    .map(|_| ()),
            }
        })
    }
}

#[derive(Deserialize)]
struct Insights {
    #[serde(default)]
    results: Vec<Value>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct GraphQl {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Vec<GraphQlError>,
}

#[derive(Deserialize)]
struct GraphQlError {
    message: String,
}

impl GraphQl {
    fn errors(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| {
            self.errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// The single number of NRQL result rows (see the module docs). Pure; `NoValues` carries an
/// empty query, filled in by the caller.
fn one_value(rows: &[Value]) -> Result<f64, QueryError> {
    let no_values = || QueryError::NoValues {
        query: String::new(),
    };
    let row: &Map<String, Value> = match rows {
        [] => return Err(no_values()),
        [Value::Object(row)] => row,
        [_] => {
            return Err(QueryError::Invalid(
                "the result row is not an object".into(),
            ));
        }
        _ => {
            return Err(QueryError::Invalid(format!(
                "{} result rows; the NRQL must return one row (no FACET or TIMESERIES)",
                rows.len()
            )));
        }
    };
    let value = match row.get("result") {
        Some(v) => v,
        None => {
            let mut fields = row.iter().filter(|(k, _)| !is_time_field(k));
            match (fields.next(), fields.next()) {
                (Some((_, v)), None) => v,
                (None, _) => return Err(no_values()),
                (Some(_), Some(_)) => {
                    return Err(QueryError::Invalid(format!(
                        "the result row has several fields ({}); select one value, e.g. SELECT ... AS result",
                        row.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };
    match value {
        Value::Null => Err(no_values()),
        Value::Number(n) => n.as_f64().filter(|v| !v.is_nan()).ok_or_else(no_values),
        // Some functions (percentile, ...) return an object of one number.
        Value::Object(inner) if inner.len() == 1 => match inner.values().next() {
            Some(Value::Number(n)) => n.as_f64().ok_or_else(no_values),
            Some(Value::Null) => Err(no_values()),
            _ => Err(QueryError::Invalid(format!("not a number: {value}"))),
        },
        other => Err(QueryError::Invalid(format!("not a number: {other}"))),
    }
}

/// Fields New Relic adds to rows besides the selected values.
fn is_time_field(name: &str) -> bool {
    matches!(name, "beginTimeSeconds" | "endTimeSeconds" | "timestamp")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query};
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};

    use super::super::http::testing::{http, refused, serve};
    use super::*;
    use crate::api::SecretReference;

    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A fake Insights API and NerdGraph endpoint. Both record (account, nrql).
    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s1 = seen.clone();
        let insights = move |Path(account): Path<String>,
                             Query(q): Query<HashMap<String, String>>,
                             h: AxHeaders| {
            let s = s1.clone();
            async move {
                let nrql = q.get("nrql").cloned().unwrap_or_default();
                s.lock().unwrap().push((account, nrql.clone()));
                if h.get("x-query-key").and_then(|v| v.to_str().ok()) != Some("NRIQ-abc") {
                    return (
                        StatusCode::FORBIDDEN,
                        Json(json!({"error": "Invalid query key"})),
                    )
                        .into_response();
                }
                let body = match nrql.split(" SINCE").next().unwrap() {
                    "SELECT percentage(count(*), WHERE error IS true) AS result FROM Transaction" =>
                    {
                        json!({"results": [{"result": 1.5}], "metadata": {"eventTypes": ["Transaction"]}})
                    }
                    "SELECT average(duration) FROM Transaction" => {
                        json!({"results": [{"average": 0.25}], "metadata": {}})
                    }
                    "SELECT * FROM Metric" => json!({"results": [{"events": []}]}),
                    "SELECT count(*) FROM Nothing" => json!({"results": [{"count": null}]}),
                    "SELECT count(*) FROM Transaction FACET appName" => {
                        json!({"facets": [{"name": "a", "results": [{"count": 1}]}], "totalResult": {"results": [{"count": 1}]}})
                    }
                    "SELECT count(*), average(duration) FROM Transaction" => {
                        json!({"results": [{"count": 1}, {"average": 2.0}]})
                    }
                    _ => {
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"error": "NRQL Syntax Error: Error at line 1 position 7, unexpected 'FORM'"})),
                        )
                            .into_response();
                    }
                };
                Json(body).into_response()
            }
        };
        let s2 = seen.clone();
        let graphql = move |h: AxHeaders, Json(body): Json<Value>| {
            let s = s2.clone();
            async move {
                if h.get("api-key").and_then(|v| v.to_str().ok()) != Some("NRAK-xyz") {
                    return Json(json!({"errors": [{"message": "Invalid API key"}]}))
                        .into_response();
                }
                let gql = body["query"].as_str().unwrap_or_default();
                if gql == "{ actor { user { name } } }" {
                    return Json(json!({"data": {"actor": {"user": {"name": "ci"}}}}))
                        .into_response();
                }
                let account = gql
                    .split("account(id: ")
                    .nth(1)
                    .and_then(|r| r.split(')').next())
                    .unwrap_or_default()
                    .to_string();
                let nrql = body["variables"]["query"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                s.lock().unwrap().push((account, nrql.clone()));
                let results = match nrql.split(" SINCE").next().unwrap() {
                    "SELECT average(duration) FROM Transaction" => {
                        json!([{"average.duration": 0.125}])
                    }
                    "SELECT percentile(duration, 99) FROM Transaction" => {
                        json!([{"percentile.duration": {"99": 0.9}}])
                    }
                    "SELECT count(*) FROM Nothing" => json!([]),
                    _ => {
                        return Json(json!({
                            "data": {"actor": {"account": {"nrql": null}}},
                            "errors": [{"message": "NRQL Syntax Error: Error at line 1 position 7, unexpected 'FORM'",
                                        "path": ["actor", "account", "nrql"]}]
                        }))
                        .into_response();
                    }
                };
                Json(json!({"data": {"actor": {"account": {"nrql": {"results": results}}}}}))
                    .into_response()
            }
        };
        let app = Router::new()
            .route("/v1/accounts/{account}/query", get(insights))
            .route("/graphql", post(graphql));
        (serve(app).await, seen)
    }

    fn provider(address: &str, keys: &[(&str, &str)], interval: &str) -> NewRelicProvider {
        let data: BTreeMap<String, Vec<u8>> = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let spec = MetricTemplateProvider {
            type_: "newrelic".into(),
            address: Some(address.into()),
            secret_ref: Some(SecretReference { name: "nr".into() }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "nr",
            data: &data,
        };
        NewRelicProvider::from_template(&spec, Some(creds), interval, &http()).unwrap()
    }

    fn insights(addr: &str, key: &str) -> NewRelicProvider {
        provider(addr, &[(ACCOUNT_ID, "12345"), (QUERY_KEY, key)], "1m")
    }

    fn nerdgraph(addr: &str, key: &str) -> NewRelicProvider {
        provider(
            &format!("{addr}/graphql"),
            &[
                (ACCOUNT_ID, "12345"),
                (API_KEY, key),
                (QUERY_KEY, "ignored"),
            ],
            "2m",
        )
    }

    #[tokio::test]
    async fn insights_queries_with_window_and_key() {
        let (addr, seen) = fake().await;
        let p = insights(&addr, "NRIQ-abc");
        assert_eq!(p.api(), Api::Insights);
        let q = "SELECT percentage(count(*), WHERE error IS true) AS result FROM Transaction\n";
        assert_eq!(p.query(q).await, Ok(1.5));
        assert_eq!(
            seen.lock().unwrap()[0],
            (
                "12345".to_string(),
                "SELECT percentage(count(*), WHERE error IS true) AS result FROM Transaction SINCE 60 seconds ago".to_string()
            )
        );
        assert_eq!(
            p.query("SELECT average(duration) FROM Transaction").await,
            Ok(0.25),
            "a single field"
        );
    }

    #[tokio::test]
    async fn insights_no_values_and_errors() {
        let (addr, _) = fake().await;
        let p = insights(&addr, "NRIQ-abc");
        assert_eq!(
            p.query("SELECT count(*) FROM Nothing").await,
            Err(QueryError::NoValues {
                query: "SELECT count(*) FROM Nothing SINCE 60 seconds ago".into()
            })
        );
        assert_eq!(
            p.query("SELECT count(*) FROM Transaction FACET appName")
                .await,
            Err(QueryError::NoValues {
                query: "SELECT count(*) FROM Transaction FACET appName SINCE 60 seconds ago".into()
            }),
            "a FACET answer has no results"
        );
        assert!(matches!(
            p.query("SELECT count(*), average(duration) FROM Transaction").await,
            Err(QueryError::Invalid(m)) if m.contains("2 result rows")
        ));
        assert_eq!(
            p.query("SELECT x FORM y").await,
            Err(QueryError::Rejected(
                "HTTP 400: NRQL Syntax Error: Error at line 1 position 7, unexpected 'FORM'".into()
            ))
        );
        assert_eq!(
            insights(&addr, "wrong").query("SELECT 1").await,
            Err(QueryError::Rejected("HTTP 403: Invalid query key".into()))
        );
    }

    #[tokio::test]
    async fn nerdgraph_queries_with_window_and_key() {
        let (addr, seen) = fake().await;
        let p = nerdgraph(&addr, "NRAK-xyz");
        assert_eq!(p.api(), Api::NerdGraph);
        assert_eq!(
            p.query("SELECT average(duration) FROM Transaction").await,
            Ok(0.125)
        );
        assert_eq!(
            seen.lock().unwrap()[0],
            (
                "12345".to_string(),
                "SELECT average(duration) FROM Transaction SINCE 120 seconds ago".to_string()
            )
        );
        assert_eq!(
            p.query("SELECT percentile(duration, 99) FROM Transaction")
                .await,
            Ok(0.9)
        );
        assert!(matches!(
            p.query("SELECT count(*) FROM Nothing").await,
            Err(QueryError::NoValues { .. })
        ));
        assert_eq!(
            p.query("SELECT x FORM y").await,
            Err(QueryError::Rejected(
                "NRQL Syntax Error: Error at line 1 position 7, unexpected 'FORM'".into()
            ))
        );
    }

    #[tokio::test]
    async fn is_online_for_both_apis() {
        let (addr, _) = fake().await;
        assert_eq!(insights(&addr, "NRIQ-abc").is_online().await, Ok(()));
        assert!(matches!(
            insights(&addr, "wrong").is_online().await,
            Err(QueryError::Rejected(_))
        ));
        assert_eq!(nerdgraph(&addr, "NRAK-xyz").is_online().await, Ok(()));
        assert_eq!(
            nerdgraph(&addr, "wrong").is_online().await,
            Err(QueryError::Rejected("Invalid API key".into()))
        );
        assert!(matches!(
            insights(&refused(), "NRIQ-abc").is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn secret_checks_and_defaults() {
        let spec = MetricTemplateProvider {
            type_: "newrelic".into(),
            ..Default::default()
        };
        let build = |keys: &[(&str, &str)]| {
            let data: BTreeMap<String, Vec<u8>> = keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            let creds = Credentials {
                name: "nr",
                data: &data,
            };
            NewRelicProvider::from_template(&spec, Some(creds), "1m", &http())
                .map(|p| (p.api(), p.address().to_string()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            build(&[(ACCOUNT_ID, "1"), (QUERY_KEY, "q")]),
            Ok((Api::Insights, INSIGHTS_ADDRESS.to_string()))
        );
        assert_eq!(
            build(&[(ACCOUNT_ID, "1"), (API_KEY, "k")]),
            Ok((Api::NerdGraph, NERDGRAPH_ADDRESS.to_string()))
        );
        assert_eq!(
            build(&[(QUERY_KEY, "q")]),
            Err("secret \"nr\" has no key \"newrelic_account_id\"".into())
        );
        assert_eq!(
            build(&[(ACCOUNT_ID, "abc"), (QUERY_KEY, "q")]),
            Err("secret \"nr\" key \"newrelic_account_id\" is not a numeric account ID".into())
        );
        assert_eq!(
            build(&[(ACCOUNT_ID, "1")]),
            Err("secret \"nr\" has neither key \"newrelic_api_key\" (NerdGraph) nor \"newrelic_query_key\" (Insights)".into())
        );
    }
}
