//! Prometheus metrics on `/metrics`: Flagger's names and labels (reference §7.1, Flagger's
//! `pkg/metrics/recorder.go`), so existing Grafana dashboards and alert rules keep working, plus
//! pennant's own.
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `flagger_info` | gauge = 1 | `version`, `mesh_provider` | build info (pennant's version) |
//! | `flagger_canary_total` | gauge | `namespace` | Canaries per namespace, counted from the controller's cache at scrape time |
//! | `flagger_canary_status` | gauge | `name`, `namespace` | 0 Progressing (and the other running phases), 1 Initialized/Succeeded, 2 Failed |
//! | `flagger_canary_weight` | gauge | `workload`, `namespace` | traffic weight of `<target>-primary` and `<target>` |
//! | `flagger_canary_duration_seconds` | histogram | `name`, `namespace` | time of each reconcile that ran an analysis step |
//! | `flagger_canary_metric_analysis` | gauge | `name`, `namespace`, `metric` | last value of each metric check |
//! | `flagger_canary_metric_analysis_threshold` | gauge | `name`, `namespace`, `metric`, `bound` | pennant: the bound each value is judged against (`min`/`max`) |
//! | `flagger_canary_successes_total` | counter | `name`, `namespace`, `deployment_strategy`, `analysis_status` | promotions |
//! | `flagger_canary_failures_total` | counter | same | rollbacks |
//! | `pennant_reconcile_total` | counter | `result` | reconciles by result (`ok`, `kube`, `invalid`, `rejected`: a write the API server refused) |
//! | `pennant_reconcile_errors_total` | counter | `controller`, `reason` | failed reconciles by controller and what failed (`canary`: `kube`, `invalid`, `rejected`, `target_not_found`, `router_build`, `status_conflict`, `panic`, `encode`; `source`: `kube` (an API call or a panic), `source` (the fetch, include or storage failed: the status says which); `notification`: `kube`, `token` (a Receiver's Secret or its `token` key is missing)) |
//! | `pennant_reconcile_duration_seconds` | histogram | `result` | time of every reconcile |
//! | `pennant_api_writes_total` | counter | | applies, patches and Events written |
//!
//! As in Flagger, `name` is the **target's** name (`spec.targetRef.name`), not the Canary's.
//! Units follow Flagger: `request-success-rate` in percent, the builtin `request-duration` in
//! **seconds** (its `thresholdRange` is written in milliseconds; the threshold series is
//! converted too, so a value and its bound plot on one axis), other metrics as their query returns.
//!
//! The threshold series (Flagger #1304, case 27) is the bound the judge really applies:
//! `thresholdRange.min`/`max` when a range is set; otherwise the legacy `threshold`, a `min` for
//! `request-success-rate` and a `max` for every other metric, where a missing `threshold` counts
//! as 0 (so such a metric shows `bound="max"` 0, Flagger's quirk made visible).
//!
//! `flagger_canary_duration_seconds` is observed, like Flagger's, only for the ticks that reach
//! the analysis: reconciles of a `Progressing` or `WaitingPromotion` canary in which a step ran
//! (`status.lastStepTime` moved). `analysis_status` is `skipped` for Canaries with
//! `skipAnalysis` (or no analysis), else `completed`.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::analysis::builtin::{REQUEST_DURATION, REQUEST_SUCCESS_RATE};
use crate::analysis::{MetricCheck, MetricOutcome};
use crate::api::{Canary, CanaryMetric, CanaryPhase, CanaryStatus, Strategy};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub workload: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    /// `min` or `max`.
    pub bound: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub name: String,
    pub namespace: String,
    /// `canary`, `blue-green` or `ab-testing`.
    pub deployment_strategy: String,
    /// `completed` or `skipped`.
    pub analysis_status: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Prometheus' default buckets (client_golang `DefBuckets`), which Flagger uses.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn default_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// Namespaces of the known Canaries, one entry per Canary (for `flagger_canary_total`).
type CanarySource = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// All metrics pennant exports.
pub struct Metrics {
    pub registry: Registry,
    /// `flagger_info{version,mesh_provider}` = 1.
    pub info: Family<InfoLabels, Gauge>,
    /// `flagger_canary_total{namespace}`: filled at scrape time from the canary source.
    pub total: Family<NamespaceLabels, Gauge>,
    /// `flagger_canary_status`: 0 running, 1 successful, 2 failed (as Flagger).
    pub status: Family<CanaryLabels, Gauge>,
    /// `flagger_canary_weight{workload}`: traffic weight of the primary and of the canary.
    pub weight: Family<WorkloadLabels, Gauge>,
    /// `flagger_canary_duration_seconds`: analysis ticks.
    pub duration: Histograms<CanaryLabels>,
    /// `flagger_canary_metric_analysis{metric}`: last value per metric.
    pub analysis: Family<MetricLabels, FloatGauge>,
    /// `flagger_canary_metric_analysis_threshold{metric,bound}`: the bounds (pennant).
    pub threshold: Family<ThresholdLabels, FloatGauge>,
    /// `flagger_canary_successes_total`: promotions.
    pub successes: Family<OutcomeLabels, Counter>,
    /// `flagger_canary_failures_total`: rollbacks.
    pub failures: Family<OutcomeLabels, Counter>,
    /// `pennant_reconcile_total{result}`.
    pub reconciles: Family<ResultLabels, Counter>,
    /// `pennant_reconcile_errors_total{controller,reason}`.
    pub errors: Family<ErrorLabels, Counter>,
    /// `pennant_reconcile_duration_seconds{result}`.
    pub reconcile_duration: Histograms<ResultLabels>,
    /// `pennant_api_writes_total`: server-side applies and patches issued.
    pub writes: Counter,
    canaries: OnceLock<CanarySource>,
    /// Serialises scrapes, which refresh `total` before encoding.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            info: Family::default(),
            total: Family::default(),
            status: Family::default(),
            weight: Family::default(),
            duration: Family::new_with_constructor(default_histogram),
            analysis: Family::default(),
            threshold: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(default_histogram),
            writes: Counter::default(),
            canaries: OnceLock::new(),
            scrape: std::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "flagger_info",
            "Version and default mesh provider",
            m.info.clone(),
        );
        registry.register(
            "flagger_canary_total",
            "Number of canaries per namespace",
            m.total.clone(),
        );
        registry.register(
            "flagger_canary_status",
            "Last canary analysis result: 0 running, 1 successful, 2 failed",
            m.status.clone(),
        );
        registry.register(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            m.weight.clone(),
        );
        registry.register(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis",
            m.duration.clone(),
        );
        registry.register(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            m.analysis.clone(),
        );
        registry.register(
            "flagger_canary_metric_analysis_threshold",
            "Bound of the threshold range each metric is judged against, in the unit of flagger_canary_metric_analysis",
            m.threshold.clone(),
        );
        registry.register(
            "flagger_canary_successes",
            "Total number of canary successes (promotions)",
            m.successes.clone(),
        );
        registry.register(
            "flagger_canary_failures",
            "Total number of canary failures (rollbacks)",
            m.failures.clone(),
        );
        registry.register(
            "pennant_reconcile",
            "Canary reconciles by result",
            m.reconciles.clone(),
        );
        registry.register(
            "pennant_reconcile_errors",
            "Failed reconciles by controller and reason",
            m.errors.clone(),
        );
        registry.register(
            "pennant_reconcile_duration_seconds",
            "Seconds spent in each canary reconcile, by result",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "pennant_api_writes",
            "Writes to the Kubernetes API (apply, patch)",
            m.writes.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// `flagger_info`.
    pub fn set_info(&self, version: &str, mesh_provider: &str) {
        self.info
            .get_or_create(&InfoLabels {
                version: version.into(),
                mesh_provider: mesh_provider.into(),
            })
            .set(1);
    }

    /// Where `flagger_canary_total` comes from: a function returning the namespace of every
    /// known Canary (the controller's cache). Set once; later calls are ignored.
    pub fn set_canary_source(&self, f: impl Fn() -> Vec<String> + Send + Sync + 'static) {
        let _ = self.canaries.set(Box::new(f));
    }

    /// Record a canary's phase and weights (`name` is the target's name, as Flagger).
    pub fn observe_canary(
        &self,
        target: &str,
        namespace: &str,
        phase: Option<CanaryPhase>,
        primary: i32,
        canary: i32,
    ) {
        let v = match phase {
            Some(CanaryPhase::Succeeded | CanaryPhase::Initialized) => 1,
            Some(CanaryPhase::Failed) => 2,
            _ => 0,
        };
        let labels = CanaryLabels {
            name: target.into(),
            namespace: namespace.into(),
        };
        self.status.get_or_create(&labels).set(v);
        let w = |workload: String| WorkloadLabels {
            workload,
            namespace: namespace.into(),
        };
        self.weight
            .get_or_create(&w(format!("{target}-primary")))
            .set(primary as i64);
        self.weight
            .get_or_create(&w(target.to_string()))
            .set(canary as i64);
    }

    /// Record what one reconcile of `canary` (its status before) decided (`status`, after):
    /// the metric values of the checks it ran, the thresholds, the analysis tick duration and
    /// promotions / rollbacks.
    pub fn observe_analysis(
        &self,
        canary: &Canary,
        status: &CanaryStatus,
        checks: Option<&[MetricCheck]>,
        elapsed: Duration,
    ) {
        let name = canary.spec.target_ref.name.clone();
        let namespace = canary.namespace().unwrap_or_default();
        let metrics = canary
            .spec
            .analysis()
            .map(|a| a.metrics.as_slice())
            .unwrap_or_default();
        for m in metrics {
            for (bound, v) in thresholds(m) {
                self.threshold
                    .get_or_create(&ThresholdLabels {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        metric: m.name.clone(),
                        bound: bound.into(),
                    })
                    .set(v);
            }
        }
        for check in checks.unwrap_or_default() {
            let (MetricOutcome::Pass(v) | MetricOutcome::OutOfRange(v, _)) = check.outcome else {
                continue;
            };
            let builtin_duration = metrics
                .iter()
                .find(|m| m.name == check.name)
                .is_some_and(is_builtin_duration);
            let v = if builtin_duration { v / 1000.0 } else { v };
            self.analysis
                .get_or_create(&MetricLabels {
                    name: name.clone(),
                    namespace: namespace.clone(),
                    metric: check.name.clone(),
                })
                .set(v);
        }

        let old = canary.status.clone().unwrap_or_default();
        if analysis_step(&old, status) {
            self.duration
                .get_or_create(&CanaryLabels {
                    name: name.clone(),
                    namespace: namespace.clone(),
                })
                .observe(elapsed.as_secs_f64());
        }
        if old.phase != status.phase {
            let counter = match status.phase {
                Some(CanaryPhase::Succeeded) => &self.successes,
                Some(CanaryPhase::Failed) => &self.failures,
                _ => return,
            };
            let strategy = match canary.spec.analysis().map(|a| a.strategy()) {
                Some(Strategy::BlueGreen) => "blue-green",
                Some(Strategy::ABTesting) => "ab-testing",
                Some(Strategy::Canary) | None => "canary",
            };
            let analysis_status = if canary.spec.skip_analysis() {
                "skipped"
            } else {
                "completed"
            };
            counter
                .get_or_create(&OutcomeLabels {
                    name,
                    namespace,
                    deployment_strategy: strategy.into(),
                    analysis_status: analysis_status.into(),
                })
                .inc();
        }
    }

    /// `pennant_reconcile_duration_seconds{result}`.
    pub fn observe_reconcile(&self, result: &str, elapsed: Duration) {
        self.reconcile_duration
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// `pennant_reconcile_errors_total{controller,reason}`: one failed reconcile.
    pub fn reconcile_error(&self, controller: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = self.canaries.get() {
            let mut counts = std::collections::BTreeMap::<String, i64>::new();
            for ns in source() {
                *counts.entry(ns).or_default() += 1;
            }
            self.total.clear();
            for (namespace, n) in counts {
                self.total
                    .get_or_create(&NamespaceLabels { namespace })
                    .set(n);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

/// The builtin `request-duration` check (milliseconds from Prometheus, exported in seconds).
fn is_builtin_duration(m: &CanaryMetric) -> bool {
    m.name == REQUEST_DURATION && is_builtin(m)
}

fn is_builtin(m: &CanaryMetric) -> bool {
    m.template_ref.is_none() && m.query.as_deref().is_none_or(|q| q.trim().is_empty())
}

/// The bounds `analysis::judge` applies to metric `m`, in the unit of
/// `flagger_canary_metric_analysis`: `("min" | "max", value)`.
pub fn thresholds(m: &CanaryMetric) -> Vec<(&'static str, f64)> {
    let duration = is_builtin_duration(m);
    // the judge truncates duration bounds to whole milliseconds
    let unit = |v: f64| if duration { v.trunc() / 1000.0 } else { v };
    if let Some(r) = &m.threshold_range {
        return [("min", r.min), ("max", r.max)]
            .into_iter()
            .filter_map(|(b, v)| v.map(|v| (b, unit(v))))
            .collect();
    }
    let t = m.threshold.unwrap_or(0.0);
    if m.name == REQUEST_SUCCESS_RATE && is_builtin(m) {
        m.threshold.map(|t| vec![("min", t)]).unwrap_or_default()
    } else {
        vec![("max", unit(t))]
    }
}

/// A reconcile that reached the analysis: the canary was Progressing or WaitingPromotion and a
/// step ran (`lastStepTime` moved).
fn analysis_step(old: &CanaryStatus, new: &CanaryStatus) -> bool {
    matches!(
        old.phase,
        Some(CanaryPhase::Progressing | CanaryPhase::WaitingPromotion)
    ) && new.last_step_time.is_some()
        && new.last_step_time != old.last_step_time
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ThresholdRange;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn flagger_metric_names_and_labels() {
        let m = Metrics::default();
        m.observe_canary("podinfo", "test", Some(CanaryPhase::Progressing), 70, 30);
        let text = m.encode();
        has(
            &text,
            r#"flagger_canary_status{name="podinfo",namespace="test"} 0"#,
        );
        has(
            &text,
            r#"flagger_canary_weight{workload="podinfo-primary",namespace="test"} 70"#,
        );
        has(
            &text,
            r#"flagger_canary_weight{workload="podinfo",namespace="test"} 30"#,
        );
        m.observe_canary("podinfo", "test", Some(CanaryPhase::Failed), 100, 0);
        has(
            &m.encode(),
            r#"flagger_canary_status{name="podinfo",namespace="test"} 2"#,
        );
        m.observe_canary("podinfo", "test", Some(CanaryPhase::Succeeded), 100, 0);
        has(
            &m.encode(),
            r#"flagger_canary_status{name="podinfo",namespace="test"} 1"#,
        );
    }

    fn canary(analysis: serde_json::Value, status: serde_json::Value) -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "web-canary", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "service": {"port": 80},
                "analysis": analysis,
            },
            "status": status,
        }))
        .unwrap()
    }

    fn time(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    #[test]
    fn metric_values_thresholds_and_analysis_duration() {
        let m = Metrics::default();
        let c = canary(
            serde_json::json!({
                "interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}},
                    {"name": "request-duration", "thresholdRange": {"max": 500.7}},
                    {"name": "error-rate", "templateRef": {"name": "error-rate"},
                     "thresholdRange": {"min": 0, "max": 1.5}},
                    {"name": "not-run", "query": "up", "thresholdRange": {"max": 3}},
                ]
            }),
            serde_json::json!({"phase": "Progressing", "canaryWeight": 10,
                "lastStepTime": "2024-01-01T00:00:00Z"}),
        );
        let mut after = c.status.clone().unwrap();
        after.canary_weight = 20;
        after.last_step_time = time("2024-01-01T00:01:00Z");
        let checks = [
            MetricCheck {
                name: "request-success-rate".into(),
                outcome: MetricOutcome::Pass(99.5),
            },
            MetricCheck {
                name: "request-duration".into(),
                outcome: MetricOutcome::OutOfRange(612.0, "request duration 612ms > 500ms".into()),
            },
            MetricCheck {
                name: "error-rate".into(),
                outcome: MetricOutcome::Error("down".into()),
            },
        ];
        m.observe_analysis(&c, &after, Some(&checks), Duration::from_millis(120));
        let text = m.encode();
        for line in [
            // values: name is the target, duration in seconds
            r#"flagger_canary_metric_analysis{name="web",namespace="prod",metric="request-success-rate"} 99.5"#,
            r#"flagger_canary_metric_analysis{name="web",namespace="prod",metric="request-duration"} 0.612"#,
            // thresholds, in the same units, for every metric of the spec
            r#"flagger_canary_metric_analysis_threshold{name="web",namespace="prod",metric="request-success-rate",bound="min"} 99.0"#,
            r#"flagger_canary_metric_analysis_threshold{name="web",namespace="prod",metric="request-duration",bound="max"} 0.5"#,
            r#"flagger_canary_metric_analysis_threshold{name="web",namespace="prod",metric="error-rate",bound="min"} 0.0"#,
            r#"flagger_canary_metric_analysis_threshold{name="web",namespace="prod",metric="error-rate",bound="max"} 1.5"#,
            r#"flagger_canary_metric_analysis_threshold{name="web",namespace="prod",metric="not-run",bound="max"} 3.0"#,
            // the analysis tick was timed
            r#"flagger_canary_duration_seconds_count{name="web",namespace="prod"} 1"#,
            r#"flagger_canary_duration_seconds_bucket{le="0.1",name="web",namespace="prod"} 0"#,
            r#"flagger_canary_duration_seconds_bucket{le="0.25",name="web",namespace="prod"} 1"#,
            "# TYPE flagger_canary_duration_seconds histogram",
            "# TYPE flagger_canary_metric_analysis gauge",
        ] {
            has(&text, line);
        }
        assert!(
            !text.contains(r#"metric="error-rate"} "#),
            "an errored check sets no value:\n{text}"
        );
        assert!(!text.contains("flagger_canary_successes_total{"), "{text}");

        // a reconcile that only waits for the next step is not an analysis tick
        let mut waiting = c.clone();
        waiting.status = Some(after.clone());
        m.observe_analysis(&waiting, &after, None, Duration::from_secs(1));
        has(
            &m.encode(),
            r#"flagger_canary_duration_seconds_count{name="web",namespace="prod"} 1"#,
        );
    }

    #[test]
    fn promotions_and_rollbacks_are_counted_on_the_transition() {
        let m = Metrics::default();
        let bg = canary(
            serde_json::json!({"interval": "1m", "threshold": 2, "iterations": 3}),
            serde_json::json!({"phase": "Finalising"}),
        );
        let mut done = bg.status.clone().unwrap();
        done.phase = Some(CanaryPhase::Succeeded);
        m.observe_analysis(&bg, &done, None, Duration::ZERO);
        // the next reconcile sees Succeeded already: not counted again
        let mut again = bg.clone();
        again.status = Some(done.clone());
        m.observe_analysis(&again, &done, None, Duration::ZERO);

        let mut failing = canary(
            serde_json::json!({"interval": "1m", "threshold": 2, "stepWeight": 10}),
            serde_json::json!({"phase": "Progressing"}),
        );
        let mut failed = failing.status.clone().unwrap();
        failed.phase = Some(CanaryPhase::Failed);
        m.observe_analysis(&failing, &failed, None, Duration::ZERO);
        failing.spec.skip_analysis = true;
        m.observe_analysis(&failing, &failed, None, Duration::ZERO);

        let text = m.encode();
        has(
            &text,
            r#"flagger_canary_successes_total{name="web",namespace="prod",deployment_strategy="blue-green",analysis_status="completed"} 1"#,
        );
        has(
            &text,
            r#"flagger_canary_failures_total{name="web",namespace="prod",deployment_strategy="canary",analysis_status="completed"} 1"#,
        );
        has(
            &text,
            r#"flagger_canary_failures_total{name="web",namespace="prod",deployment_strategy="canary",analysis_status="skipped"} 1"#,
        );
        has(&text, "# TYPE flagger_canary_successes counter");
    }

    #[test]
    fn thresholds_follow_the_judge() {
        let metric = |name: &str,
                      query: Option<&str>,
                      range: Option<(Option<f64>, Option<f64>)>,
                      t: Option<f64>| CanaryMetric {
            name: name.into(),
            query: query.map(String::from),
            threshold_range: range.map(|(min, max)| ThresholdRange { min, max }),
            threshold: t,
            ..Default::default()
        };
        let cases: Vec<(CanaryMetric, Vec<(&str, f64)>)> = vec![
            (
                metric("request-success-rate", None, Some((Some(99.0), None)), None),
                vec![("min", 99.0)],
            ),
            (
                metric("request-success-rate", None, None, Some(95.0)),
                vec![("min", 95.0)],
            ),
            (metric("request-success-rate", None, None, None), vec![]),
            (
                metric("request-duration", None, Some((None, Some(500.0))), None),
                vec![("max", 0.5)],
            ),
            (
                metric("request-duration", None, None, Some(250.0)),
                vec![("max", 0.25)],
            ),
            (
                metric("request-duration", None, None, None),
                vec![("max", 0.0)],
            ),
            // an inline query named like a builtin is a custom metric: raw units
            (
                metric(
                    "request-duration",
                    Some("q"),
                    Some((None, Some(500.0))),
                    None,
                ),
                vec![("max", 500.0)],
            ),
            (
                metric("request-success-rate", Some("q"), None, Some(95.0)),
                vec![("max", 95.0)],
            ),
            (
                metric("errors", Some("q"), Some((Some(1.0), Some(2.0))), Some(9.0)),
                vec![("min", 1.0), ("max", 2.0)],
            ),
            (
                metric("errors", Some("q"), Some((None, None)), None),
                vec![],
            ),
            (metric("errors", Some("q"), None, None), vec![("max", 0.0)]),
        ];
        for (m, want) in cases {
            assert_eq!(thresholds(&m), want, "{m:?}");
        }
    }

    #[test]
    fn totals_info_and_reconcile_durations() {
        let m = Metrics::default();
        let text = m.encode();
        assert!(
            !text.contains("flagger_canary_total{"),
            "no source, no series"
        );
        let known = std::sync::Arc::new(std::sync::Mutex::new(vec!["a", "b", "a"]));
        let k = known.clone();
        m.set_canary_source(move || k.lock().unwrap().iter().map(|s| s.to_string()).collect());
        m.set_info("0.1.0", "istio");
        m.observe_reconcile("ok", Duration::from_millis(30));
        m.observe_reconcile("kube", Duration::from_secs(3));
        m.reconcile_error("canary", "target_not_found");
        let text = m.encode();
        has(&text, r#"flagger_canary_total{namespace="a"} 2"#);
        has(&text, r#"flagger_canary_total{namespace="b"} 1"#);
        has(
            &text,
            r#"flagger_info{version="0.1.0",mesh_provider="istio"} 1"#,
        );
        has(
            &text,
            r#"pennant_reconcile_duration_seconds_count{result="ok"} 1"#,
        );
        has(
            &text,
            r#"pennant_reconcile_duration_seconds_bucket{le="0.05",result="ok"} 1"#,
        );
        has(
            &text,
            r#"pennant_reconcile_duration_seconds_bucket{le="2.5",result="kube"} 0"#,
        );
        has(&text, "# TYPE pennant_reconcile_duration_seconds histogram");
        has(
            &text,
            r#"pennant_reconcile_errors_total{controller="canary",reason="target_not_found"} 1"#,
        );
        // a namespace whose canaries are gone drops out
        *known.lock().unwrap() = vec!["a"];
        let text = m.encode();
        has(&text, r#"flagger_canary_total{namespace="a"} 1"#);
        assert!(
            !text.contains(r#"flagger_canary_total{namespace="b"}"#),
            "{text}"
        );
    }
}
