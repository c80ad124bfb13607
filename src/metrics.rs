//! Prometheus metrics on `/metrics`: Flagger's names and labels (so existing dashboards keep
//! working) plus pennant's own reconcile and write counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::CanaryPhase;

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

/// All metrics pennant exports.
pub struct Metrics {
    pub registry: Registry,
    /// `flagger_canary_status`: 0 running, 1 successful, 2 failed (as Flagger).
    pub status: Family<CanaryLabels, Gauge>,
    /// `flagger_canary_weight{workload}`: traffic weight of the primary and of the canary.
    pub weight: Family<WorkloadLabels, Gauge>,
    /// `pennant_reconcile_total{result}`.
    pub reconciles: Family<ResultLabels, Counter>,
    /// `pennant_api_writes_total`: server-side applies and patches issued.
    pub writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let status = Family::<CanaryLabels, Gauge>::default();
        let weight = Family::<WorkloadLabels, Gauge>::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let writes = Counter::default();
        registry.register(
            "flagger_canary_status",
            "Last canary analysis result: 0 running, 1 successful, 2 failed",
            status.clone(),
        );
        registry.register(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            weight.clone(),
        );
        registry.register(
            "pennant_reconcile",
            "Canary reconciles by result",
            reconciles.clone(),
        );
        registry.register(
            "pennant_api_writes",
            "Writes to the Kubernetes API (apply, patch)",
            writes.clone(),
        );
        Self {
            registry,
            status,
            weight,
            reconciles,
            writes,
        }
    }
}

impl Metrics {
    /// Record a canary's phase and weights.
    pub fn observe_canary(
        &self,
        name: &str,
        namespace: &str,
        target: &str,
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
            name: name.into(),
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

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagger_metric_names_and_labels() {
        let m = Metrics::default();
        m.observe_canary(
            "podinfo",
            "test",
            "podinfo",
            Some(CanaryPhase::Progressing),
            70,
            30,
        );
        let text = m.encode();
        assert!(
            text.contains(r#"flagger_canary_status{name="podinfo",namespace="test"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flagger_canary_weight{workload="podinfo-primary",namespace="test"} 70"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"flagger_canary_weight{workload="podinfo",namespace="test"} 30"#),
            "{text}"
        );
        m.observe_canary(
            "podinfo",
            "test",
            "podinfo",
            Some(CanaryPhase::Failed),
            100,
            0,
        );
        assert!(
            m.encode()
                .contains(r#"flagger_canary_status{name="podinfo",namespace="test"} 2"#)
        );
        m.observe_canary(
            "podinfo",
            "test",
            "podinfo",
            Some(CanaryPhase::Succeeded),
            100,
            0,
        );
        assert!(
            m.encode()
                .contains(r#"flagger_canary_status{name="podinfo",namespace="test"} 1"#)
        );
    }
}
