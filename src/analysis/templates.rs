//! `templateRef` metrics: a MetricTemplate (`flagger.app/v1beta1`) names a provider and a
//! query; the canary's metric names the template, the accepted range, the `interval` and the
//! `templateVariables`.
//!
//! Per metric and per tick, as Flagger's `runMetricChecks`:
//! 1. read the template `templateRef.namespace/templateRef.name` (namespace defaults to the
//!    canary's) from the [`TemplateSource`];
//! 2. read `spec.provider.secretRef` from the **template's** namespace;
//! 3. render `spec.query` with the canary's variables ([`super::template`]); `interval`
//!    defaults to `1m` (fix of Flagger quirk §2.16-4);
//! 4. build the provider named by `spec.provider.type` ([`build_provider`]), fresh each tick;
//! 5. run the query and judge the value as a custom metric ([`super::judge()`]).
//!
//! | `spec.provider.type` | Address | Secret keys | Module |
//! |---|---|---|---|
//! | `prometheus` | `address`, else the canary's metrics server | `token` (bearer) or `username` + `password` (basic) | [`super::prometheus`] |
//! | `datadog` | default `https://api.datadoghq.com` | `datadog_api_key`, `datadog_application_key` | [`super::datadog`] |
//! | `graphite` | required | optional `username` + `password` | [`super::graphite`] |
//! | `influxdb` | required | optional `token` + `org` | [`super::influxdb`] |
//! | `newrelic` | Insights or NerdGraph default | `newrelic_account_id` + `newrelic_query_key` (Insights) or `newrelic_api_key` (NerdGraph) | [`super::newrelic`] |
//! | `dynatrace` | required | `dynatrace_token` | [`super::dynatrace`] |
//! | `splunk` | required (`https://api.<realm>.signalfx.com`) | `sf_token_key` | [`super::splunk`] |
//!
//! `headers` and `insecureSkipVerify` apply to every type above (Flagger honours them for
//! Prometheus and Graphite only). `cloudwatch`, `stackdriver`, `keptn` and `externalmetrics`
//! are not supported: such a metric is an `Error` naming the type, never a silent pass.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use kube::ResourceExt;

use super::http::Credentials;
use super::template::{TemplateModel, collapse_whitespace, render};
use super::{
    MetricKind, MetricsBackends, MetricsProvider, ProviderError, datadog, dynatrace, failed_query,
    graphite, influxdb, judge, metric_interval, newrelic, prometheus, splunk,
};
use crate::analysis::MetricOutcome;
use crate::api::{
    Canary, CanaryMetric, CrossNamespaceReference, MetricTemplate, MetricTemplateProvider,
};

/// `spec.provider.type` values pennant can query, in Flagger's order.
pub const SUPPORTED_PROVIDER_TYPES: &[&str] = &[
    "prometheus",
    "influxdb",
    "datadog",
    "newrelic",
    "graphite",
    "dynatrace",
    "splunk",
];

/// The `data` of a Secret: key → raw (base64-decoded) bytes, as `k8s_openapi`'s
/// `Secret.data` holds it.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Where MetricTemplates and their credentials Secrets come from: the controller's caches
/// (reflector stores) or direct GETs. Asynchronous so either works.
pub trait TemplateSource: Send + Sync {
    /// The MetricTemplate `namespace/name`; `Ok(None)` when it does not exist, `Err` (a
    /// human-readable reason) when it cannot be read.
    fn template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<MetricTemplate>, String>>;

    /// The `data` of Secret `namespace/name` (values decoded from base64, i.e. raw bytes);
    /// `Ok(None)` when it does not exist, `Err` when it cannot be read.
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, String>>;
}

/// A [`TemplateSource`] over maps held in memory: a snapshot taken from reflector stores, or
/// test fixtures.
#[derive(Clone, Debug, Default)]
pub struct TemplateSnapshot {
    /// MetricTemplates by (namespace, name).
    pub templates: BTreeMap<(String, String), MetricTemplate>,
    /// Secret `data` by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
}

impl TemplateSnapshot {
    /// Add a template under its own namespace and name.
    pub fn with_template(mut self, template: MetricTemplate) -> Self {
        let key = (
            template.namespace().unwrap_or_default(),
            template.name_any(),
        );
        self.templates.insert(key, template);
        self
    }

    /// Add a Secret's data; values are given as text.
    pub fn with_secret(mut self, namespace: &str, name: &str, data: &[(&str, &str)]) -> Self {
        let data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        self.secrets
            .insert((namespace.to_string(), name.to_string()), data);
        self
    }
}

impl TemplateSource for TemplateSnapshot {
    fn template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<MetricTemplate>, String>> {
        let t = self
            .templates
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move { Ok(t) })
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, String>> {
        let s = self
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move { Ok(s) })
    }
}

/// A provider built from a MetricTemplate, with what messages need to name it.
pub struct TemplateProvider {
    /// `spec.provider.type`, e.g. `datadog`.
    pub kind: &'static str,
    /// The address queries go to (after defaults), e.g. `https://api.datadoghq.com`.
    pub address: String,
    /// The provider; `is_online` is available for status conditions.
    pub provider: Box<dyn MetricsProvider>,
}

impl std::fmt::Debug for TemplateProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateProvider")
            .field("kind", &self.kind)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Build the provider a MetricTemplate's `spec.provider` names, as Flagger's provider factory.
///
/// - `secret`: the `spec.provider.secretRef` Secret (name and data) when the template has one;
///   the keys each type needs are in the module table.
/// - `interval`: the metric's interval (Go duration, e.g. `1m`); Datadog, Dynatrace and Splunk
///   query `10 × interval` back from now, New Relic `interval`.
/// - `metrics_server`: address of a `prometheus` template without `address`.
/// - `http`: shared client (see [`MetricsBackends::http`]).
///
/// Errors name the field or Secret key at fault ([`ProviderError`]).
pub fn build_provider(
    spec: &MetricTemplateProvider,
    secret: Option<Credentials<'_>>,
    interval: &str,
    metrics_server: &str,
    http: &reqwest::Client,
) -> Result<TemplateProvider, ProviderError> {
    fn boxed<P: MetricsProvider + 'static>(
        kind: &'static str,
        address: String,
        p: P,
    ) -> TemplateProvider {
        TemplateProvider {
            kind,
            address,
            provider: Box::new(p),
        }
    }
    match spec.type_.as_str() {
        "prometheus" => {
            let p =
                prometheus::PrometheusProvider::from_template(spec, secret, metrics_server, http)?;
            Ok(boxed("prometheus", p.url().to_string(), p))
        }
        "datadog" => {
            let p = datadog::DatadogProvider::from_template(spec, secret, interval, http)?;
            Ok(boxed("datadog", p.address().to_string(), p))
        }
        "graphite" => {
            let p = graphite::GraphiteProvider::from_template(spec, secret, http)?;
            Ok(boxed("graphite", p.address().to_string(), p))
        }
        "influxdb" => {
            let p = influxdb::InfluxdbProvider::from_template(spec, secret, http)?;
            Ok(boxed("influxdb", p.address().to_string(), p))
        }
        "newrelic" => {
            let p = newrelic::NewRelicProvider::from_template(spec, secret, interval, http)?;
            Ok(boxed("newrelic", p.address().to_string(), p))
        }
        "dynatrace" => {
            let p = dynatrace::DynatraceProvider::from_template(spec, secret, interval, http)?;
            Ok(boxed("dynatrace", p.address().to_string(), p))
        }
        "splunk" => {
            let p = splunk::SplunkProvider::from_template(spec, secret, interval, http)?;
            Ok(boxed("splunk", p.address().to_string(), p))
        }
        other => Err(ProviderError::Unsupported(other.to_string())),
    }
}

/// Evaluate one `templateRef` metric (steps 1-5 of the module docs). `None`: the template
/// declares a count signal ([`super::count_metric::declares`]) and `canary` uses the
/// sequential judge ([`super::judge::opted_in`]), which judges it instead.
pub(crate) async fn check(
    canary: &Canary,
    metric: &CanaryMetric,
    tref: &CrossNamespaceReference,
    backends: &MetricsBackends<'_>,
) -> Option<MetricOutcome> {
    let canary_ns = canary.namespace().unwrap_or_default();
    let ns = tref
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&canary_ns);
    let id = format!("MetricTemplate {ns}/{}", tref.name);
    let fail = |problem: String| Some(MetricOutcome::Error(format!("{id}: {problem}")));

    let template = match backends.templates.template(ns, &tref.name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Some(MetricOutcome::Error(format!(
                "{id} not found (analysis.metrics[{}].templateRef)",
                metric.name
            )));
        }
        Err(e) => return fail(format!("cannot be read: {e}")),
    };
    if super::judge::opted_in(canary) && super::count_metric::declares(&template) {
        return None;
    }
    let spec = &template.spec;

    let secret_data = match spec.provider.secret_name() {
        None => None,
        Some(name) => match backends.templates.secret(ns, name).await {
            Ok(Some(data)) => Some((name, data)),
            Ok(None) => {
                return fail(format!(
                    "secret {name:?} (spec.provider.secretRef) not found in namespace {ns}"
                ));
            }
            Err(e) => return fail(format!("secret {name:?} cannot be read: {e}")),
        },
    };
    let secret = secret_data
        .as_ref()
        .map(|(name, data)| Credentials { name, data });

    let interval = metric_interval(metric);
    if spec.query.trim().is_empty() {
        return fail("spec.query is empty".into());
    }
    let model = TemplateModel::new(canary, interval, metric.template_variables.as_ref());
    let query = match render(&spec.query, &model) {
        Ok(q) => q,
        Err(e) => return fail(format!("spec.query: {e}")),
    };

    let built = match build_provider(
        &spec.provider,
        secret,
        interval,
        backends.metrics_server,
        backends.http,
    ) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };

    Some(match built.provider.query(&query).await {
        Ok(v) => judge(
            MetricKind::Custom,
            &metric.name,
            v,
            metric.threshold_range.as_ref(),
            metric.threshold,
        ),
        Err(e) => {
            let label = format!("{} ({id})", metric.name);
            match failed_query(
                canary,
                &label,
                built.kind,
                built.kind,
                &built.address,
                &collapse_whitespace(&query),
                e,
            ) {
                MetricOutcome::Error(m) => MetricOutcome::Error(format!("{id}: {m}")),
                other => other,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::Query;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::json;

    use super::super::http::testing::{http, serve};
    use super::super::{MetricsBackends, QueryError, evaluate, evaluate_metrics};
    use super::*;
    use crate::analysis::MetricCheck;

    /// The canary's Prometheus: never expected to be asked in these tests.
    struct NoProm;
    impl MetricsProvider for NoProm {
        fn query<'a>(&'a self, q: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
            panic!("builtin Prometheus queried with {q}")
        }
        fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn canary(metrics: serde_json::Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "metrics": metrics}
            }
        }))
        .unwrap()
    }

    fn template(ns: &str, name: &str, provider: serde_json::Value, query: &str) -> MetricTemplate {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": provider, "query": query}
        }))
        .unwrap()
    }

    /// Seen by the fake Prometheus: (query, authorization header, x-scope-orgid headers).
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Vec<String>)>>>;

    /// A Prometheus that records the query and auth headers, and answers 401 to requests
    /// without the credentials it expects (`Basic` for alice:s3cret or `Bearer t0ken`).
    async fn fake_prometheus() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let app = Router::new().route(
            "/api/v1/query",
            get(
                move |Query(q): Query<HashMap<String, String>>, h: HeaderMap| {
                    let s = s.clone();
                    async move {
                        let query = q.get("query").cloned().unwrap_or_default();
                        let auth = h
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string());
                        let org = h
                            .get_all("x-scope-orgid")
                            .iter()
                            .map(|v| v.to_str().unwrap().to_string())
                            .collect();
                        s.lock().unwrap().push((query.clone(), auth.clone(), org));
                        let ok = matches!(
                            auth.as_deref(),
                            Some("Basic YWxpY2U6czNjcmV0") | Some("Bearer t0ken") | None
                        );
                        if !ok {
                            return (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized")
                                .into_response();
                        }
                        let result = if query.starts_with("empty") {
                            json!([])
                        } else {
                            json!([{"metric": {}, "value": [1_700_000_000.0, "0.5"]}])
                        };
                        Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
                            .into_response()
                    }
                },
            ),
        );
        (serve(app).await, seen)
    }

    async fn run(c: &Canary, src: &TemplateSnapshot, metrics_server: &str) -> Vec<MetricCheck> {
        let http = http();
        let b = MetricsBackends {
            provider: "istio",
            metrics_server,
            prom: &NoProm,
            templates: src,
            http: &http,
        };
        evaluate_metrics(c, &b).await
    }

    fn error_of(checks: &[MetricCheck]) -> String {
        match &checks.last().unwrap().outcome {
            MetricOutcome::Error(m) => m.clone(),
            o => panic!("expected an error, got {o:?}"),
        }
    }

    const ERROR_RATE: &str = r#"
        sum(rate(http_requests_total{namespace="{{ namespace }}",app="{{ variables.app }}",status=~"5.."}[{{ interval }}]))
    "#;
    const ERROR_RATE_1M: &str =
        r#"sum(rate(http_requests_total{namespace="test",app="web",status=~"5.."}[1m]))"#;

    #[tokio::test]
    async fn prometheus_template_with_basic_auth_and_headers() {
        let (addr, seen) = fake_prometheus().await;
        let src = TemplateSnapshot::default()
            .with_template(template(
                "flagger",
                "error-rate",
                json!({"type": "prometheus", "address": addr, "secretRef": {"name": "prom-auth"},
                       "headers": {"X-Scope-OrgID": ["tenant-a", "tenant-b"]}}),
                ERROR_RATE,
            ))
            .with_secret(
                "flagger",
                "prom-auth",
                &[("username", "alice"), ("password", "s3cret\n")],
            );
        let c = canary(json!([{
            "name": "error-rate",
            "templateRef": {"name": "error-rate", "namespace": "flagger"},
            "templateVariables": {"app": "web"},
            "thresholdRange": {"max": 1}
        }]));
        let got = run(&c, &src, "http://unused:9090").await;
        assert_eq!(
            got,
            vec![MetricCheck {
                name: "error-rate".into(),
                outcome: MetricOutcome::Pass(0.5)
            }]
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(
                ERROR_RATE_1M.to_string(),
                Some("Basic YWxpY2U6czNjcmV0".to_string()),
                vec!["tenant-a".to_string(), "tenant-b".to_string()]
            )],
            "interval defaults to 1m, whitespace collapsed, basic auth and every header value sent"
        );
    }

    #[tokio::test]
    async fn a_count_template_is_left_to_the_judge_only_when_the_canary_uses_it() {
        let (addr, seen) = fake_prometheus().await;
        let mut t = template(
            "test",
            "jobs",
            json!({"type": "prometheus", "address": addr}),
            "sum(rate(jobs_total[1m]))",
        );
        t.metadata.annotations = Some(
            [
                (
                    crate::analysis::count_metric::BAD_ANNOTATION,
                    r#"jobs_total{workload="{{ target }}",status="failed"}"#,
                ),
                (
                    crate::analysis::count_metric::TOTAL_ANNOTATION,
                    r#"jobs_total{workload="{{ target }}"}"#,
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let src = TemplateSnapshot::default().with_template(t);
        let mut c = canary(json!([{
            "name": "jobs", "templateRef": {"name": "jobs"}, "thresholdRange": {"max": 1}
        }]));
        // without the judge: Flagger's threshold rule on spec.query
        let got = run(&c, &src, "http://unused:9090").await;
        assert_eq!(
            got,
            vec![MetricCheck {
                name: "jobs".into(),
                outcome: MetricOutcome::Pass(0.5)
            }]
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        // with the judge: no per-window check, no query
        c.metadata.annotations = Some(
            [(
                crate::analysis::judge::MODE_ANNOTATION.to_string(),
                "sequential".to_string(),
            )]
            .into(),
        );
        assert_eq!(run(&c, &src, "http://unused:9090").await, vec![]);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn prometheus_template_with_bearer_token_in_canary_namespace() {
        let (addr, seen) = fake_prometheus().await;
        let src = TemplateSnapshot::default()
            .with_template(template(
                "test",
                "error-rate",
                json!({"type": "prometheus", "secretRef": {"name": "prom-auth"}}),
                ERROR_RATE,
            ))
            .with_secret(
                "test",
                "prom-auth",
                &[("token", "t0ken"), ("username", "ignored")],
            );
        let c = canary(json!([{
            "name": "error-rate",
            "templateRef": {"name": "error-rate"},
            "templateVariables": {"app": "web"},
            "interval": "5m",
            "thresholdRange": {"max": 0.1}
        }]));
        // No address: the canary's metrics server.
        let got = run(&c, &src, &addr).await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::OutOfRange(0.5, "error-rate 0.50 > 0.1".into())
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].0, ERROR_RATE_1M.replace("[1m]", "[5m]"));
        assert_eq!(
            seen[0].1.as_deref(),
            Some("Bearer t0ken"),
            "token wins over username"
        );
    }

    #[tokio::test]
    async fn prometheus_rejecting_credentials_is_an_error_naming_the_template() {
        let (addr, _) = fake_prometheus().await;
        let src = TemplateSnapshot::default()
            .with_template(template(
                "test",
                "error-rate",
                json!({"type": "prometheus", "address": addr, "secretRef": {"name": "prom-auth"}}),
                "up",
            ))
            .with_secret("test", "prom-auth", &[("token", "wrong")]);
        let c = canary(json!([{"name": "up", "templateRef": {"name": "error-rate"}}]));
        let m = error_of(&run(&c, &src, "http://unused").await);
        assert_eq!(
            m,
            format!(
                "MetricTemplate test/error-rate: prometheus {addr} rejected query up: HTTP 401: Unauthorized"
            )
        );
    }

    #[tokio::test]
    async fn no_values_names_provider_template_and_query() {
        let (addr, _) = fake_prometheus().await;
        let src = TemplateSnapshot::default().with_template(template(
            "test",
            "t",
            json!({"type": "prometheus", "address": addr}),
            "empty{ns=\"{{ namespace }}\"}",
        ));
        let c = canary(json!([{"name": "rps", "templateRef": {"name": "t"}}]));
        let got = run(&c, &src, "http://unused").await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::NoValues(
                "no values found for prometheus metric rps (MetricTemplate test/t) probably podinfo.test is not receiving traffic: empty{ns=\"test\"}".into()
            )
        );
    }

    #[tokio::test]
    async fn bad_input_is_an_error_naming_template_field_and_problem() {
        let prom = |secret: bool| {
            let mut p = json!({"type": "prometheus", "address": "http://prom:9090"});
            if secret {
                p["secretRef"] = json!({"name": "prom-auth"});
            }
            p
        };
        let cases: Vec<(TemplateSnapshot, &str)> = vec![
            (
                TemplateSnapshot::default(),
                "MetricTemplate test/t not found (analysis.metrics[m].templateRef)",
            ),
            (
                TemplateSnapshot::default().with_template(template("test", "t", prom(true), "up")),
                "MetricTemplate test/t: secret \"prom-auth\" (spec.provider.secretRef) not found in namespace test",
            ),
            (
                TemplateSnapshot::default()
                    .with_template(template("test", "t", prom(true), "up"))
                    .with_secret("test", "prom-auth", &[("user", "x")]),
                "MetricTemplate test/t: secret \"prom-auth\" has neither key \"token\" nor keys \"username\" and \"password\"",
            ),
            (
                TemplateSnapshot::default()
                    .with_template(template("test", "t", prom(true), "up"))
                    .with_secret("test", "prom-auth", &[("username", "x")]),
                "MetricTemplate test/t: secret \"prom-auth\" has no key \"password\"",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    prom(false),
                    "x{app=\"{{ variables.app }}\"}",
                )),
                "MetricTemplate test/t: spec.query: unknown template variable \"variables.app\"",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    prom(false),
                    " \n",
                )),
                "MetricTemplate test/t: spec.query is empty",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    json!({"type": "cloudwatch", "region": "eu-west-1"}),
                    "[]",
                )),
                "MetricTemplate test/t: spec.provider.type \"cloudwatch\" is not supported by pennant",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    json!({"type": "datadog"}),
                    "avg:x{*}",
                )),
                "MetricTemplate test/t: spec.provider.secretRef is required for provider type datadog (keys: datadog_api_key, datadog_application_key)",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    json!({"type": "graphite"}),
                    "target=x",
                )),
                "MetricTemplate test/t: spec.provider.address is required for provider type graphite",
            ),
            (
                TemplateSnapshot::default().with_template(template(
                    "test",
                    "t",
                    json!({"type": "prometheus", "address": "prom:9090"}),
                    "up",
                )),
                "MetricTemplate test/t: spec.provider.address \"prom:9090\" is not a valid URL",
            ),
        ];
        for (src, want) in cases {
            let c = canary(json!([{"name": "m", "templateRef": {"name": "t"}}]));
            let m = error_of(&run(&c, &src, "http://prom:9090").await);
            assert!(m.starts_with(want), "{m}\n  does not start with\n{want}");
        }
    }

    #[tokio::test]
    async fn secret_is_read_from_the_template_namespace() {
        let src = TemplateSnapshot::default()
            .with_template(template(
                "flagger",
                "t",
                json!({"type": "prometheus", "address": "http://prom:9090", "secretRef": {"name": "auth"}}),
                "up",
            ))
            .with_secret("test", "auth", &[("token", "x")]);
        let c =
            canary(json!([{"name": "m", "templateRef": {"name": "t", "namespace": "flagger"}}]));
        assert_eq!(
            error_of(&run(&c, &src, "http://unused").await),
            "MetricTemplate flagger/t: secret \"auth\" (spec.provider.secretRef) not found in namespace flagger"
        );
    }

    #[tokio::test]
    async fn a_failing_template_stops_the_tick_and_builtins_still_run() {
        struct Prom;
        impl MetricsProvider for Prom {
            fn query<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
                Box::pin(async { Ok(99.9) })
            }
            fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
                Box::pin(async { Ok(()) })
            }
        }
        let c = canary(json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "t1", "templateRef": {"name": "missing"}},
            {"name": "request-duration", "thresholdRange": {"max": 500}},
        ]));
        let http = http();
        let src = TemplateSnapshot::default();
        let b = MetricsBackends {
            provider: "istio",
            metrics_server: "http://prom:9090",
            prom: &Prom,
            templates: &src,
            http: &http,
        };
        let got = evaluate_metrics(&c, &b).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].outcome, MetricOutcome::Pass(99.9));
        assert!(
            matches!(&got[1].outcome, MetricOutcome::Error(m) if m.contains("test/missing not found"))
        );

        // The legacy entry point skips templates.
        let got = evaluate(&c, "istio", "http://prom:9090", &Prom).await;
        assert_eq!(
            got.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            vec!["request-success-rate", "request-duration"]
        );
    }

    #[tokio::test]
    async fn source_errors_are_reported() {
        struct Broken;
        impl TemplateSource for Broken {
            fn template<'a>(
                &'a self,
                _: &'a str,
                _: &'a str,
            ) -> BoxFuture<'a, Result<Option<MetricTemplate>, String>> {
                Box::pin(async { Err("forbidden".to_string()) })
            }
            fn secret<'a>(
                &'a self,
                _: &'a str,
                _: &'a str,
            ) -> BoxFuture<'a, Result<Option<SecretData>, String>> {
                Box::pin(async { Ok(None) })
            }
        }
        let c = canary(json!([{"name": "m", "templateRef": {"name": "t"}}]));
        let http = http();
        let b = MetricsBackends {
            provider: "istio",
            metrics_server: "http://prom:9090",
            prom: &NoProm,
            templates: &Broken,
            http: &http,
        };
        assert_eq!(
            error_of(&evaluate_metrics(&c, &b).await),
            "MetricTemplate test/t: cannot be read: forbidden"
        );
    }

    #[tokio::test]
    async fn datadog_template_end_to_end_with_default_interval() {
        type Seen = Arc<Mutex<Vec<(HashMap<String, String>, Option<String>)>>>;
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let app = Router::new().route(
            "/api/v1/query",
            get(
                move |Query(q): Query<HashMap<String, String>>, h: HeaderMap| {
                    let s = s.clone();
                    async move {
                        let key = h
                            .get("dd-api-key")
                            .map(|v| v.to_str().unwrap().to_string());
                        s.lock().unwrap().push((q, key));
                        Json(json!({"status": "ok", "res_type": "time_series", "series": [
                            {"pointlist": [[1_700_000_000_000.0_f64, 3.5], [1_700_000_060_000.0_f64, 0.1]]}
                        ]}))
                    }
                },
            ),
        );
        let addr = serve(app).await;
        let src = TemplateSnapshot::default()
            .with_template(template(
                "flagger",
                "dd-errors",
                json!({"type": "datadog", "address": addr, "secretRef": {"name": "datadog"}}),
                "sum:trace.http.request.errors{service:{{ target }},env:{{ namespace }}}.as_count()",
            ))
            .with_secret(
                "flagger",
                "datadog",
                &[("datadog_api_key", "k"), ("datadog_application_key", "a")],
            );
        let c = canary(json!([{
            "name": "errors",
            "templateRef": {"name": "dd-errors", "namespace": "flagger"},
            "thresholdRange": {"max": 2}
        }]));
        let got = run(&c, &src, "http://unused").await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::OutOfRange(3.5, "errors 3.50 > 2".into())
        );
        let (q, key) = seen.lock().unwrap()[0].clone();
        assert_eq!(
            q["query"],
            "sum:trace.http.request.errors{service:podinfo,env:test}.as_count()"
        );
        assert_eq!(key.as_deref(), Some("k"));
        let window = q["to"].parse::<u64>().unwrap() - q["from"].parse::<u64>().unwrap();
        assert_eq!(window, 600, "no interval: 1m, window 10 × 1m");
    }

    #[test]
    fn build_provider_knows_every_supported_type() {
        let http = http();
        let data = BTreeMap::from([
            ("datadog_api_key".to_string(), b"k".to_vec()),
            ("datadog_application_key".to_string(), b"a".to_vec()),
            ("newrelic_account_id".to_string(), b"123".to_vec()),
            ("newrelic_query_key".to_string(), b"q".to_vec()),
            ("dynatrace_token".to_string(), b"d".to_vec()),
            ("sf_token_key".to_string(), b"s".to_vec()),
            ("token".to_string(), b"t".to_vec()),
            ("org".to_string(), b"o".to_vec()),
            ("username".to_string(), b"u".to_vec()),
            ("password".to_string(), b"p".to_vec()),
        ]);
        for kind in SUPPORTED_PROVIDER_TYPES {
            let spec = MetricTemplateProvider {
                type_: kind.to_string(),
                address: Some("https://api.us1.signalfx.com".into()),
                secret_ref: Some(crate::api::SecretReference { name: "s".into() }),
                ..Default::default()
            };
            let creds = Credentials {
                name: "s",
                data: &data,
            };
            let p = build_provider(&spec, Some(creds), "1m", "http://prom:9090", &http)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(p.kind, *kind);
        }
        for kind in ["cloudwatch", "stackdriver", "keptn", "externalmetrics", ""] {
            let spec = MetricTemplateProvider {
                type_: kind.to_string(),
                ..Default::default()
            };
            assert_eq!(
                build_provider(&spec, None, "1m", "http://prom:9090", &http).unwrap_err(),
                ProviderError::Unsupported(kind.to_string())
            );
        }
    }

    #[test]
    fn bad_interval_is_named_for_window_providers() {
        let http = http();
        let data = BTreeMap::from([("dynatrace_token".to_string(), b"d".to_vec())]);
        let spec = MetricTemplateProvider {
            type_: "dynatrace".into(),
            address: Some("https://abc.live.dynatrace.com".into()),
            secret_ref: Some(crate::api::SecretReference { name: "s".into() }),
            ..Default::default()
        };
        let creds = Credentials {
            name: "s",
            data: &data,
        };
        assert_eq!(
            build_provider(&spec, Some(creds), "1min", "", &http)
                .unwrap_err()
                .to_string(),
            "metric interval \"1min\" is not a duration such as 30s, 1m or 1h30m (provider type dynatrace derives its time window from it)"
        );
    }
}
