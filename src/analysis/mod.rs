//! Metric analysis: providers behind [`MetricsProvider`], builtin queries, template rendering,
//! MetricTemplates, and the per-metric range judgement.
//!
//! - [`builtin`]: Flagger's PromQL for `request-success-rate` / `request-duration` per provider
//! - [`template`]: PURE rendering of `{{ namespace }}`-style query templates
//! - [`range`]: PURE range judgement and Flagger's messages
//! - [`counts`]: per-step counts per version for the sequential judge (Prometheus raw samples)
//! - [`count_metric`]: MetricTemplates declared as count signals for the sequential judge
//! - [`judge`](mod@judge): PURE sequential (anytime-valid) judge of canary vs primary counts
//! - [`prometheus`]: the Prometheus provider (HTTP), also behind `prometheus` MetricTemplates
//! - [`templates`]: `templateRef` metrics: the template, its Secret, the provider it names
//! - [`datadog`], [`graphite`], [`influxdb`], [`newrelic`], [`dynatrace`], [`splunk`]: the other
//!   MetricTemplate providers, over their HTTP APIs
//! - [`evaluate_metrics`]: one analysis tick's metric checks, in spec order

pub mod builtin;
pub mod count_metric;
pub mod counts;
pub mod datadog;
pub mod dynatrace;
pub mod graphite;
pub(crate) mod http;
pub mod influxdb;
pub mod judge;
pub mod newrelic;
pub mod prometheus;
pub mod range;
pub mod splunk;
pub mod template;
pub mod templates;

use futures::future::BoxFuture;
use kube::ResourceExt;

use crate::api::{Canary, CanaryMetric};

pub use http::{Credentials, ProviderError};
pub use prometheus::PrometheusProvider;
pub use range::{MetricKind, judge};
pub use templates::{
    SUPPORTED_PROVIDER_TYPES, SecretData, TemplateProvider, TemplateSnapshot, TemplateSource,
    build_provider,
};

/// Interval (range-vector window) of a metric without `interval`, builtin, inline or
/// MetricTemplate alike. Flagger defaults it for builtins only and renders `[]` into template
/// queries (quirk §2.16-4); pennant defaults every metric.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";

/// Result of one metric check.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricOutcome {
    /// Value within range.
    Pass(f64),
    /// Value outside `thresholdRange`; the message names the bound.
    OutOfRange(f64, String),
    /// The query returned no samples (Flagger's "no values found").
    NoValues(String),
    /// The provider could not be queried (unreachable, bad query, non-200).
    Error(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    pub name: String,
    pub outcome: MetricOutcome,
}

/// A metrics backend that turns a query into one number.
///
/// Object safe (boxed futures) so a provider can be chosen at run time, e.g. from a
/// MetricTemplate's `provider.type`.
pub trait MetricsProvider: Send + Sync {
    /// Run `query` and return its single value.
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>>;
    /// `Ok` when the backend answers a trivial request correctly (Prometheus: `vector(1)` is
    /// 1; the others: see each provider). An `Err` says the backend (or the credentials) cannot
    /// be used, as opposed to a metric that fails its range.
    fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>>;
}

/// Why a query gave no usable value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query ran but returned nothing (empty vector or NaN): Flagger's "no values found",
    /// usually because the target receives no traffic. `query` is the query as sent.
    #[error("no values found for query: {query}")]
    NoValues { query: String },
    /// No values because the query's range window is shorter than twice the scrape interval
    /// (Prometheus: [`prometheus::window_too_short`]), so it never holds the two samples
    /// `rate()` needs (Flagger #1123). `window` and `scrape_interval` as written.
    #[error(
        "no values found for query: {query}: {}",
        prometheus::window_too_short_message(window, scrape_interval)
    )]
    WindowTooShort {
        query: String,
        window: String,
        scrape_interval: String,
    },
    /// The backend could not answer: connection refused, DNS, TLS, timeout, HTTP 5xx or 429.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the query: HTTP 4xx, e.g. a PromQL syntax error (`bad_data`) or
    /// credentials it does not accept.
    #[error("query rejected: {0}")]
    Rejected(String),
    /// The backend answered with something that is not one number (a matrix, a string, not
    /// the backend's API format).
    #[error("unusable answer: {0}")]
    Invalid(String),
    /// The provider is misconfigured (e.g. the server URL is not a URL).
    #[error("misconfigured: {0}")]
    Config(String),
}

/// Everything [`evaluate_metrics`] needs besides the Canary.
#[derive(Clone, Copy)]
pub struct MetricsBackends<'a> {
    /// Mesh/ingress provider that selects the builtin queries ([`builtin::builtin_query`]);
    /// the caller applies Flagger's overrides (§2.16-8).
    pub provider: &'a str,
    /// URL of the canary's Prometheus (`spec.metricsServer`, else `-metrics-server`), used in
    /// messages, and the address of a `prometheus` MetricTemplate that has none.
    pub metrics_server: &'a str,
    /// The Prometheus at `metrics_server`: builtins and inline `query` metrics run here.
    pub prom: &'a dyn MetricsProvider,
    /// Where MetricTemplates and their Secrets are read.
    pub templates: &'a dyn TemplateSource,
    /// HTTP client shared by the MetricTemplate providers (connection pool, TLS roots). A
    /// template with `insecureSkipVerify` gets a separate client that skips verification.
    pub http: &'a reqwest::Client,
}

/// Run the metric checks of one analysis tick, Flagger §4.1, and return one [`MetricCheck`]
/// per metric in `analysis.metrics` order.
///
/// - Builtins (`request-success-rate` in percent, `request-duration` in ms) and inline `query`
///   metrics (deprecated) are rendered with [`template::render`] and run on
///   `backends.prom`, then judged by [`judge()`]. A metric with an inline `query` is judged as
///   a custom metric even when it carries a builtin name (the user's query wins).
/// - `templateRef` metrics (whatever their name or `query`): see [`templates`]. A template that
///   declares a count signal ([`count_metric`]) of a Canary using the sequential judge
///   ([`judge::opted_in`]) has no check here: the judge judges it. The template is read from
///   `templateRef.namespace`, else the canary's namespace; its `secretRef` from the
///   template's namespace; the provider is built for this tick from `spec.provider`; the query
///   is rendered (with `templateVariables`) and judged as a custom metric. A missing template
///   or Secret, a Secret without the keys the provider needs, an unknown variable, an
///   unsupported provider type, or a query the backend rejects is an `Error` whose message
///   starts `MetricTemplate <ns>/<name>: ` and names the field and the problem, e.g.
///   `MetricTemplate test/error-rate: secret "prom-auth" has no key "token"`.
/// - Every metric without `interval` uses `1m` ([`DEFAULT_METRIC_INTERVAL`]), templates too
///   (fix of Flagger quirk §2.16-4).
/// - Querying **stops after the first check that does not pass**, as Flagger does (the first
///   failure ends the tick), so the result holds every passing check followed by at most one
///   failing one. An empty result means there was nothing to check. Unlike Flagger, which
///   runs all builtins before all templates, the order is the spec's.
///
/// Outcomes: `NoValues` reads `no values found for {provider} metric {name} probably
/// {target}.{namespace} is not receiving traffic: {query}` (for templates the provider is the
/// template's type followed by `(MetricTemplate ns/name)`); a backend failure is `Error`
/// (`prometheus {url} unreachable: ...`, `prometheus {url} rejected query {query}: ...`, ...).
pub async fn evaluate_metrics(canary: &Canary, backends: &MetricsBackends<'_>) -> Vec<MetricCheck> {
    run_checks(
        canary,
        backends.provider,
        backends.metrics_server,
        backends.prom,
        Some(backends),
    )
    .await
}

/// Test shorthand: [`evaluate_metrics`] without MetricTemplates (`templateRef` metrics are
/// skipped).
#[cfg(test)]
pub(crate) async fn evaluate<P: MetricsProvider + ?Sized>(
    canary: &Canary,
    provider: &str,
    metrics_server: &str,
    prom: &P,
) -> Vec<MetricCheck> {
    struct Dyn<'a, P: ?Sized>(&'a P);
    impl<P: MetricsProvider + ?Sized> MetricsProvider for Dyn<'_, P> {
        fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
            self.0.query(query)
        }
        fn is_online(&self) -> BoxFuture<'_, Result<(), QueryError>> {
            self.0.is_online()
        }
    }
    run_checks(canary, provider, metrics_server, &Dyn(prom), None).await
}

async fn run_checks(
    canary: &Canary,
    provider: &str,
    metrics_server: &str,
    prom: &dyn MetricsProvider,
    backends: Option<&MetricsBackends<'_>>,
) -> Vec<MetricCheck> {
    let Some(analysis) = canary.spec.analysis() else {
        return vec![];
    };
    let mut checks = Vec::with_capacity(analysis.metrics.len());
    for metric in &analysis.metrics {
        let outcome = match (&metric.template_ref, backends) {
            (Some(_), None) => continue,
            (Some(tref), Some(b)) => match templates::check(canary, metric, tref, b).await {
                Some(o) => o,
                // a count signal the sequential judge owns: no per-window check
                None => continue,
            },
            (None, _) => check_metric(canary, metric, provider, metrics_server, prom).await,
        };
        let failed = !matches!(outcome, MetricOutcome::Pass(_));
        checks.push(MetricCheck {
            name: metric.name.clone(),
            outcome,
        });
        if failed {
            break;
        }
    }
    checks
}

/// The metric's `interval`, else [`DEFAULT_METRIC_INTERVAL`].
pub(crate) fn metric_interval(metric: &CanaryMetric) -> &str {
    metric
        .interval
        .as_deref()
        .filter(|i| !i.is_empty())
        .unwrap_or(DEFAULT_METRIC_INTERVAL)
}

async fn check_metric(
    canary: &Canary,
    metric: &CanaryMetric,
    provider: &str,
    metrics_server: &str,
    prom: &dyn MetricsProvider,
) -> MetricOutcome {
    let name = metric.name.as_str();
    let inline = metric.query.as_deref().filter(|q| !q.trim().is_empty());
    let (tpl, kind, scale) = match (inline, name) {
        (Some(q), _) => (q, MetricKind::Custom, 1.0),
        (None, builtin::REQUEST_SUCCESS_RATE | builtin::REQUEST_DURATION) => {
            let Some(q) = builtin::builtin_query(provider, name, &canary.spec.target_ref.kind)
            else {
                return MetricOutcome::Error(format!(
                    "no builtin {name} query for provider {provider:?} (builtins exist for istio, nginx, gatewayapi, kubernetes); use a query or templateRef"
                ));
            };
            if name == builtin::REQUEST_DURATION {
                (q, MetricKind::Duration, builtin::duration_to_ms(provider))
            } else {
                (q, MetricKind::SuccessRate, 1.0)
            }
        }
        (None, _) => {
            return MetricOutcome::Error(format!(
                "metric {name} has no query and is not a builtin metric"
            ));
        }
    };

    let interval = metric_interval(metric);
    let model = template::TemplateModel::new(canary, interval, metric.template_variables.as_ref());
    let query = match template::render(tpl, &model) {
        Ok(q) => template::collapse_whitespace(&q),
        Err(e) => {
            return MetricOutcome::Error(format!("cannot render the query of metric {name}: {e}"));
        }
    };

    match prom.query(&query).await {
        Ok(v) => judge(
            kind,
            name,
            v * scale,
            metric.threshold_range.as_ref(),
            metric.threshold,
        ),
        Err(e) => failed_query(
            canary,
            name,
            provider,
            "prometheus",
            metrics_server,
            &query,
            e,
        ),
    }
}

/// The outcome of a query that gave no value. `source` names the provider in the no-values
/// message (Flagger: the mesh provider for builtins); `kind` and `address` name the backend
/// in error messages.
pub(crate) fn failed_query(
    canary: &Canary,
    metric: &str,
    source: &str,
    kind: &str,
    address: &str,
    query: &str,
    err: QueryError,
) -> MetricOutcome {
    match err {
        QueryError::NoValues { query } => MetricOutcome::NoValues(format!(
            "no values found for {source} metric {metric} probably {}.{} is not receiving traffic: {query}",
            canary.spec.target_ref.name,
            canary.namespace().unwrap_or_default(),
        )),
        QueryError::WindowTooShort {
            query,
            window,
            scrape_interval,
        } => MetricOutcome::NoValues(format!(
            "no values found for {source} metric {metric}: {}, so rate() finds fewer than two samples in it whatever the traffic; use an interval of at least 2 × {scrape_interval}: {query}",
            prometheus::window_too_short_message(&window, &scrape_interval),
        )),
        QueryError::Unavailable(e) => {
            MetricOutcome::Error(format!("{kind} {address} unreachable: {e}"))
        }
        QueryError::Rejected(e) => {
            MetricOutcome::Error(format!("{kind} {address} rejected query {query}: {e}"))
        }
        QueryError::Invalid(e) => MetricOutcome::Error(format!(
            "{kind} {address} gave an unusable answer to {query}: {e}"
        )),
        QueryError::Config(e) => MetricOutcome::Error(format!("{kind} {address}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// A provider answering from a table; unknown queries are `NoValues`. Records the queries.
    struct Fake {
        answers: BTreeMap<String, Result<f64, QueryError>>,
        seen: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(answers: &[(&str, Result<f64, QueryError>)]) -> Self {
            Fake {
                answers: answers
                    .iter()
                    .map(|(q, a)| (q.to_string(), a.clone()))
                    .collect(),
                seen: Mutex::new(vec![]),
            }
        }
        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl MetricsProvider for Fake {
        fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, QueryError>> {
            self.seen.lock().unwrap().push(query.to_string());
            let a = self.answers.get(query).cloned().unwrap_or_else(|| {
                Err(QueryError::NoValues {
                    query: query.to_string(),
                })
            });
            Box::pin(async move { a })
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

    const SR: &str = r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo" }[1m] ) ) * 100"#;
    const DUR_30S: &str = r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo" }[30s] ) ) by (le) )"#;

    #[tokio::test]
    async fn builtins_and_inline_run_in_order_and_pass() {
        let c = canary(json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "request-duration", "interval": "30s", "thresholdRange": {"max": 500}},
            {"name": "errors", "query": "sum(rate(errors{ns=\"{{ namespace }}\",app=\"{{ variables.app }}\"}[{{ interval }}]))",
             "templateVariables": {"app": "web"}, "thresholdRange": {"max": 1}},
        ]));
        let prom = Fake::new(&[
            (SR, Ok(99.5)),
            (DUR_30S, Ok(120.9)),
            (r#"sum(rate(errors{ns="test",app="web"}[1m]))"#, Ok(0.5)),
        ]);
        let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
        assert_eq!(
            got,
            vec![
                MetricCheck {
                    name: "request-success-rate".into(),
                    outcome: MetricOutcome::Pass(99.5)
                },
                MetricCheck {
                    name: "request-duration".into(),
                    outcome: MetricOutcome::Pass(120.0)
                },
                MetricCheck {
                    name: "errors".into(),
                    outcome: MetricOutcome::Pass(0.5)
                },
            ]
        );
        assert_eq!(prom.seen().len(), 3);
    }

    #[tokio::test]
    async fn stops_after_the_first_failure() {
        let c = canary(json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "request-duration", "thresholdRange": {"max": 500}},
        ]));
        let prom = Fake::new(&[(SR, Ok(80.0))]);
        let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
        assert_eq!(
            got,
            vec![MetricCheck {
                name: "request-success-rate".into(),
                outcome: MetricOutcome::OutOfRange(80.0, "success rate 80.00% < 99%".into()),
            }]
        );
        assert_eq!(
            prom.seen(),
            vec![SR.to_string()],
            "request-duration not queried"
        );
    }

    #[tokio::test]
    async fn no_values_names_provider_target_and_query() {
        let c = canary(json!([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]));
        let prom = Fake::new(&[]);
        let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::NoValues(format!(
                "no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic: {SR}"
            ))
        );
    }

    #[tokio::test]
    async fn no_values_from_a_short_window_names_the_window_not_the_traffic() {
        let c = canary(json!([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]));
        let short = QueryError::WindowTooShort {
            query: SR.into(),
            window: "1m".into(),
            scrape_interval: "1m".into(),
        };
        let prom = Fake::new(&[(SR, Err(short))]);
        let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::NoValues(format!(
                "no values found for istio metric request-success-rate: window 1m is shorter than 2 × scrape interval 1m, so rate() finds fewer than two samples in it whatever the traffic; use an interval of at least 2 × 1m: {SR}"
            ))
        );
    }

    #[tokio::test]
    async fn backend_failures_are_errors_naming_the_server() {
        let cases = [
            (
                QueryError::Unavailable("connection refused".into()),
                "prometheus http://prom:9090 unreachable: connection refused".to_string(),
            ),
            (
                QueryError::Rejected("HTTP 400: bad_data: parse error".into()),
                "prometheus http://prom:9090 rejected query up: HTTP 400: bad_data: parse error"
                    .to_string(),
            ),
            (
                QueryError::Invalid("a range vector".into()),
                "prometheus http://prom:9090 gave an unusable answer to up: a range vector"
                    .to_string(),
            ),
        ];
        for (err, want) in cases {
            let c = canary(json!([{"name": "up", "query": "up", "thresholdRange": {"min": 1}}]));
            let prom = Fake::new(&[("up", Err(err))]);
            let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
            assert_eq!(
                got,
                vec![MetricCheck {
                    name: "up".into(),
                    outcome: MetricOutcome::Error(want)
                }]
            );
        }
    }

    #[tokio::test]
    async fn template_metrics_are_skipped_and_render_errors_reported() {
        let c = canary(json!([
            {"name": "latency", "templateRef": {"name": "latency", "namespace": "flagger"}, "thresholdRange": {"max": 1}},
            {"name": "bad", "query": "x{a=\"{{ variables.missing }}\"}"},
        ]));
        let prom = Fake::new(&[]);
        let got = evaluate(&c, "istio", "http://prom:9090", &prom).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "bad");
        let MetricOutcome::Error(m) = &got[0].outcome else {
            panic!("{got:?}")
        };
        assert!(m.starts_with("cannot render the query of metric bad: unknown template variable \"variables.missing\""), "{m}");
        assert!(prom.seen().is_empty());
    }

    #[tokio::test]
    async fn http_observer_duration_is_seconds_times_1000() {
        let c = canary(json!([{"name": "request-duration", "thresholdRange": {"max": 500}}]));
        let q = template::collapse_whitespace(
            &template::render(
                builtin::builtin_query("kubernetes", "request-duration", "Deployment").unwrap(),
                &template::TemplateModel::new(&c, "1m", None),
            )
            .unwrap(),
        );
        let prom = Fake::new(&[(q.as_str(), Ok(0.6125))]);
        let got = evaluate(&c, "kubernetes", "http://prom:9090", &prom).await;
        assert_eq!(
            got[0].outcome,
            MetricOutcome::OutOfRange(612.0, "request duration 612ms > 500ms".into())
        );
    }

    #[tokio::test]
    async fn unknown_provider_builtin_is_an_error_and_no_analysis_is_empty() {
        let c = canary(json!([{"name": "request-success-rate"}]));
        let got = evaluate(&c, "linkerd", "http://prom:9090", &Fake::new(&[])).await;
        assert!(
            matches!(&got[0].outcome, MetricOutcome::Error(m) if m.contains("linkerd")),
            "{got:?}"
        );

        let mut c = canary(json!([]));
        c.spec.analysis = None;
        assert!(evaluate(&c, "istio", "x", &Fake::new(&[])).await.is_empty());
    }

    #[tokio::test]
    async fn works_through_dyn() {
        let c = canary(json!([{"name": "request-success-rate", "threshold": 99}]));
        let fake = Fake::new(&[(SR, Ok(100.0))]);
        let prom: &dyn MetricsProvider = &fake;
        let got = evaluate(&c, "istio", "http://prom:9090", prom).await;
        assert_eq!(got[0].outcome, MetricOutcome::Pass(100.0));
    }
}
