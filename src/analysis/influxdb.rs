//! InfluxDB 2.x behind [`MetricsProvider`]: Flux over the v2 query API, as Flagger's InfluxDB
//! provider (which uses the official Go client).
//!
//! - Query: `POST <address>/api/v2/query?org=<org>` with `Authorization: Token <token>`,
//!   `Accept: application/csv` and a JSON body `{"query": <flux>, "type": "flux", "dialect":
//!   {annotations: datatype, group, default}}`. Credentials are optional; with a `secretRef`
//!   both `token` and `org` are required (Flagger's rule). Works with InfluxDB 1.8+'s v2
//!   compatibility API too (no org).
//! - Value: `_value` of the first record of the first table, from the annotated CSV answer.
//!   `double`, `long` and `unsignedLong` columns are accepted (Flagger's client accepts only
//!   `double`); an empty `_value` is no values found. **An answer without records is no
//!   values found**, where Flagger returns 0 with no error (quirk §2.16-10, fixed).
//! - Errors: a 4xx/5xx with `{"code": "invalid", "message": "compilation failed: ..."}`, or a
//!   200 whose CSV is an error table (`,error,reference`); both carry InfluxDB's message.
//! - [`MetricsProvider::is_online`]: `buckets() |> limit(n: 1)` must run. Flagger queries the
//!   bucket `default`, which fails on servers that have no such bucket; `buckets()` checks
//!   the same things (reachable, token and org accepted) on any server.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::http::{self as h, Credentials};
use super::{MetricsProvider, ProviderError, QueryError};
use crate::api::MetricTemplateProvider;

/// Per-request timeout (Flagger's).
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Query sent by [`MetricsProvider::is_online`].
pub const ONLINE_QUERY: &str = "buckets() |> limit(n: 1)";

/// An InfluxDB 2.x server (or Cloud).
#[derive(Clone)]
pub struct InfluxdbProvider {
    client: reqwest::Client,
    address: Url,
    org: Option<String>,
    headers: HeaderMap,
}

impl InfluxdbProvider {
    /// The provider an `influxdb` MetricTemplate describes (`address` required).
    pub fn from_template(
        spec: &MetricTemplateProvider,
        secret: Option<Credentials<'_>>,
        http: &reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let address = h::address(spec, None)?;
        let mut headers = h::custom_headers(spec)?;
        let mut org = None;
        if let Some(creds) = secret {
            let token = creds.require("token")?;
            org = Some(creds.require("org")?);
            headers.insert(
                AUTHORIZATION,
                h::secret_header(&creds, "token", &format!("Token {token}"))?,
            );
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/csv"));
        Ok(InfluxdbProvider {
            client: h::client(http, spec)?,
            address,
            org: org.filter(|o| !o.is_empty()),
            headers,
        })
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        self.address.as_str().trim_end_matches('/')
    }

    /// Run `flux` and return the CSV answer (HTTP errors mapped).
    async fn run(&self, flux: &str) -> Result<String, QueryError> {
        let mut url = h::endpoint(&self.address, "/api/v2/query");
        if let Some(org) = &self.org {
            url.query_pairs_mut().append_pair("org", org);
        }
        let body = json!({
            "query": flux,
            "type": "flux",
            "dialect": {
                "header": true,
                "delimiter": ",",
                "annotations": ["datatype", "group", "default"],
                "commentPrefix": "#",
                "dateTimeFormat": "RFC3339"
            }
        });
        let answer = h::fetch(
            self.client
                .post(url)
                .headers(self.headers.clone())
                .json(&body),
            TIMEOUT,
        )
        .await?;
        let what = serde_json::from_str::<ApiError>(&answer.body)
            .ok()
            .map(|e| match e.code {
                Some(code) => format!("{code}: {}", e.message),
                None => e.message,
            })
            .unwrap_or_else(|| h::quote(&answer.body));
        h::check_status(answer.status, &what)?;
        Ok(answer.body)
    }
}

impl std::fmt::Debug for InfluxdbProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxdbProvider")
            .field("address", &self.address())
            .field("org", &self.org)
            .finish_non_exhaustive()
    }
}

impl MetricsProvider for InfluxdbProvider {
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
        Box::pin(async move {
            first_value(&self.run(query).await?, true)?.ok_or_else(|| QueryError::NoValues {
                query: query.trim().to_string(),
            })
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            first_value(&self.run(ONLINE_QUERY).await?, false)?;
            Ok(())
        })
    }
}

/// InfluxDB's error body.
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<String>,
    message: String,
}

/// `_value` of the first record of the first table of an annotated CSV answer; `Ok(None)` when
/// there is no record or the value is empty. An error table is `Rejected`. With `!want_value`
/// only errors are looked for. Pure.
fn first_value(csv: &str, want_value: bool) -> Result<Option<f64>, QueryError> {
    let mut datatypes: Vec<String> = vec![];
    let mut defaults: Vec<String> = vec![];
    let mut header: Option<Vec<String>> = None;
    for row in parse_csv(csv) {
        if row.iter().all(|c| c.is_empty()) {
            // A blank line ends a table; the next one brings its own annotations and header.
            datatypes.clear();
            defaults.clear();
            header = None;
            continue;
        }
        match row[0].as_str() {
            "#datatype" => {
                datatypes = row;
                continue;
            }
            "#default" => {
                defaults = row;
                continue;
            }
            a if a.starts_with('#') => continue,
            _ => {}
        }
        let Some(cols) = &header else {
            header = Some(row);
            continue;
        };
        let col = |name: &str| cols.iter().position(|c| c == name);
        let cell = |i: usize| -> String {
            row.get(i)
                .filter(|v| !v.is_empty())
                .or_else(|| defaults.get(i))
                .cloned()
                .unwrap_or_default()
        };
        if let (Some(e), None) = (col("error"), col("_value")) {
            let reference = col("reference").map(cell).filter(|r| !r.is_empty());
            return Err(QueryError::Rejected(match reference {
                Some(r) => format!("{} (reference {r})", cell(e)),
                None => cell(e),
            }));
        }
        if !want_value {
            return Ok(None);
        }
        let Some(i) = col("_value") else {
            return Err(QueryError::Invalid(format!(
                "the result has no _value column (columns: {}); end the query with a single value, e.g. |> last()",
                cols.iter()
                    .filter(|c| !c.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let raw = cell(i);
        if raw.is_empty() {
            return Ok(None);
        }
        let datatype = datatypes.get(i).map(String::as_str).unwrap_or("double");
        return match datatype {
            "double" | "long" | "unsignedLong" => match raw.parse::<f64>() {
                Ok(v) if v.is_nan() => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(QueryError::Invalid(format!(
                    "_value {raw:?} is not a number"
                ))),
            },
            other => Err(QueryError::Invalid(format!(
                "_value {raw:?} is of type {other}, not a number"
            ))),
        };
    }
    Ok(None)
}

/// RFC 4180 CSV rows (quoted fields may hold commas, quotes as `""` and newlines); a blank
/// line is a row with one empty cell. Pure.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let mut row = vec![];
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::extract::Query;
    use axum::http::{HeaderMap as AxHeaders, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::Value;

    use super::super::http::testing::{http, refused, serve};
    use super::*;
    use crate::api::SecretReference;

    /// A result as `influxd` 2.7 writes it (CRLF line ends, trailing blank line).
    const ONE_TABLE: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r\n\
#group,false,false,true,true,false,false,true,true,true\r\n\
#default,_result,,,,,,,,\r\n\
,result,table,_start,_stop,_time,_value,_field,_measurement,destination_workload\r\n\
,,0,2024-05-08T20:50:00Z,2024-05-08T20:51:00Z,2024-05-08T20:50:30Z,2.5,counter,istio_requests_total,podinfo\r\n\
,,0,2024-05-08T20:50:00Z,2024-05-08T20:51:00Z,2024-05-08T20:50:45Z,9,counter,istio_requests_total,podinfo\r\n\
\r\n";

    const ERROR_TABLE: &str = "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,\"runtime error @4:6-4:40: filter: type conflict: int != string\",\r\n\r\n";

    type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>, Value)>>>;

    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let query = move |Query(q): Query<HashMap<String, String>>,
                          h: AxHeaders,
                          Json(body): Json<Value>| {
            let s = s.clone();
            async move {
                let auth = h
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                s.lock()
                    .unwrap()
                    .push((q.get("org").cloned(), auth.clone(), body.clone()));
                if auth.as_deref() != Some("Token t0k") {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(serde_json::json!({"code": "unauthorized", "message": "unauthorized access"})),
                    )
                        .into_response();
                }
                let csv = |s: &str| {
                    (
                        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                        s.to_string(),
                    )
                        .into_response()
                };
                let flux = body["query"].as_str().unwrap_or_default();
                match flux {
                    f if f.contains("\"ok\"") => csv(ONE_TABLE),
                    f if f.contains("\"empty\"") => csv("\r\n"),
                    f if f.contains("\"null\"") => csv(
                        "#datatype,string,long,double\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,\r\n\r\n",
                    ),
                    f if f.contains("\"long\"") => csv(
                        "#datatype,string,long,long\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,42\r\n\r\n",
                    ),
                    f if f.contains("\"string\"") => csv(
                        "#datatype,string,long,string\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,hello\r\n\r\n",
                    ),
                    f if f.contains("\"runtime\"") => csv(ERROR_TABLE),
                    f if f.starts_with("buckets()") => csv(
                        "#datatype,string,long,string,string\r\n#group,false,false,false,false\r\n#default,_result,,,\r\n,result,table,name,id\r\n,,0,_monitoring,abc\r\n\r\n",
                    ),
                    _ => (
                        StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({"code": "invalid", "message": "compilation failed: error at @1:1-1:4: undefined identifier bad"})),
                    )
                        .into_response(),
                }
            }
        };
        let app = Router::new().route("/api/v2/query", post(query));
        (serve(app).await, seen)
    }

    fn provider(address: &str, token: &str) -> InfluxdbProvider {
        let data = BTreeMap::from([
            ("token".to_string(), token.as_bytes().to_vec()),
            ("org".to_string(), b"my-org".to_vec()),
        ]);
        let spec = MetricTemplateProvider {
            type_: "influxdb".into(),
            address: Some(address.into()),
            secret_ref: Some(SecretReference {
                name: "influx".into(),
            }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "influx",
            data: &data,
        };
        InfluxdbProvider::from_template(&spec, Some(creds), &http()).unwrap()
    }

    fn flux(bucket: &str) -> String {
        format!(
            "from(bucket: \"{bucket}\")\n  |> range(start: -1m)\n  |> filter(fn: (r) => r[\"_measurement\"] == \"istio_requests_total\")\n"
        )
    }

    #[tokio::test]
    async fn first_value_of_first_table_with_token_and_org() {
        let (addr, seen) = fake().await;
        let p = provider(&addr, "t0k");
        assert_eq!(p.query(&flux("ok")).await, Ok(2.5));
        let (org, auth, body) = seen.lock().unwrap()[0].clone();
        assert_eq!(org.as_deref(), Some("my-org"));
        assert_eq!(auth.as_deref(), Some("Token t0k"));
        assert_eq!(body["type"], "flux");
        assert_eq!(body["query"], flux("ok"), "flux is sent verbatim");
        assert_eq!(p.query(&flux("long")).await, Ok(42.0));
    }

    #[tokio::test]
    async fn empty_result_is_no_values_not_zero() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "t0k");
        for b in ["empty", "null"] {
            assert_eq!(
                p.query(&flux(b)).await,
                Err(QueryError::NoValues {
                    query: flux(b).trim().to_string()
                }),
                "{b}"
            );
        }
    }

    #[tokio::test]
    async fn errors_carry_influxdbs_words() {
        let (addr, _) = fake().await;
        let p = provider(&addr, "t0k");
        assert_eq!(
            p.query("bad").await,
            Err(QueryError::Rejected(
                "HTTP 400: invalid: compilation failed: error at @1:1-1:4: undefined identifier bad"
                    .into()
            ))
        );
        assert_eq!(
            p.query(&flux("runtime")).await,
            Err(QueryError::Rejected(
                "runtime error @4:6-4:40: filter: type conflict: int != string".into()
            ))
        );
        assert!(matches!(
            p.query(&flux("string")).await,
            Err(QueryError::Invalid(m)) if m.contains("type string")
        ));
        assert_eq!(
            provider(&addr, "nope").query(&flux("ok")).await,
            Err(QueryError::Rejected(
                "HTTP 401: unauthorized: unauthorized access".into()
            ))
        );
    }

    #[tokio::test]
    async fn is_online_lists_buckets() {
        let (addr, seen) = fake().await;
        assert_eq!(provider(&addr, "t0k").is_online().await, Ok(()));
        assert_eq!(seen.lock().unwrap()[0].2["query"], ONLINE_QUERY);
        assert!(matches!(
            provider(&addr, "nope").is_online().await,
            Err(QueryError::Rejected(_))
        ));
        assert!(matches!(
            provider(&refused(), "t0k").is_online().await,
            Err(QueryError::Unavailable(_))
        ));
    }

    #[test]
    fn csv_parsing() {
        assert_eq!(
            parse_csv("a,\"b,\"\"c\"\"\nd\",e\r\n\r\nf"),
            vec![
                vec!["a".to_string(), "b,\"c\"\nd".into(), "e".into()],
                vec![String::new()],
                vec!["f".to_string()],
            ]
        );
        assert_eq!(first_value(ONE_TABLE, true), Ok(Some(2.5)));
        assert_eq!(first_value("", true), Ok(None));
        // No annotations (dialect without them): still read.
        assert_eq!(
            first_value(",result,table,_value\n,_result,0,1.5\n", true),
            Ok(Some(1.5))
        );
        assert!(matches!(
            first_value(",result,table,count\n,,0,1\n", true),
            Err(QueryError::Invalid(m)) if m.contains("no _value column")
        ));
    }

    #[test]
    fn secret_needs_token_and_org() {
        let data = BTreeMap::from([("token".to_string(), b"t".to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "influxdb".into(),
            address: Some("http://influx:8086".into()),
            ..Default::default()
        };
        let creds = Credentials {
            name: "influx",
            data: &data,
        };
        assert_eq!(
            InfluxdbProvider::from_template(&spec, Some(creds), &http())
                .unwrap_err()
                .to_string(),
            "secret \"influx\" has no key \"org\""
        );
        assert!(InfluxdbProvider::from_template(&spec, None, &http()).is_ok());
    }
}
