//! `MetricTemplate` (`flagger.app/v1beta1`): a reusable metric query and the provider that runs
//! it, wire-compatible with Flagger's CRD.
//!
//! Field names and semantics follow Flagger 1.44 (`artifacts/flagger/crd.yaml` and
//! `pkg/apis/flagger/v1beta1/metric.go`). A Canary metric points at a template with
//! `analysis.metrics[].templateRef`; the query is a Go-template string rendered per canary
//! (`{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ interval }}`, `{{ variables.x }}`, ...).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// Spec of a MetricTemplate. Same fields as Flagger's `MetricTemplateSpec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "MetricTemplate",
    namespaced,
    status = "MetricTemplateStatus",
    category = "all",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    /// Where and how the query runs.
    pub provider: MetricTemplateProvider,
    /// The query, a Go-template string in the provider's language (PromQL for `prometheus`).
    pub query: String,
}

/// `spec.provider`: the metrics backend. Same fields as Flagger's `MetricTemplateProvider`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateProvider {
    /// Backend kind: `prometheus`, `influxdb`, `datadog`, `externalmetrics`, `stackdriver`,
    /// `cloudwatch`, `newrelic`, `graphite`, `dynatrace`, `keptn` or `splunk` (Flagger's list,
    /// enforced by the schema as Flagger's is; see `METRIC_PROVIDER_TYPES`).
    #[serde(rename = "type")]
    #[schemars(extend("enum" = METRIC_PROVIDER_TYPES))]
    pub type_: String,
    /// API address (URL) of the backend. Required by `prometheus`, `graphite`, `influxdb`,
    /// `dynatrace` and `splunk`; `datadog` and `newrelic` have defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Extra HTTP headers sent with every query, Go `http.Header` shape: name → list of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// Secret in the template's namespace holding the credentials (keys depend on the provider,
    /// e.g. `token` or `username` + `password` for `prometheus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Cloud region (`cloudwatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Skip TLS certificate verification of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A Secret in the referring object's own namespace (Flagger uses `corev1.LocalObjectReference`,
/// with `name` required by its schema).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
}

/// Status of a MetricTemplate: conditions only, as Flagger's `MetricTemplateStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Every `spec.provider.type` Flagger's CRD accepts, in Flagger's order.
pub const METRIC_PROVIDER_TYPES: &[&str] = &[
    "prometheus",
    "influxdb",
    "datadog",
    "externalmetrics",
    "stackdriver",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "keptn",
    "splunk",
];

impl MetricTemplateProvider {
    /// `address` when set and non-empty.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref().filter(|a| !a.is_empty())
    }

    /// Name of the credentials Secret, when set and non-empty.
    pub fn secret_name(&self) -> Option<&str> {
        self.secret_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
    }

    pub fn insecure_skip_verify(&self) -> bool {
        self.insecure_skip_verify.unwrap_or(false)
    }

    /// Headers as `(name, value)` pairs, one per value, in name order (a name with several
    /// values is sent several times, as Go's `http.Header`).
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .flatten()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_go_http_header_maps() {
        let p: MetricTemplateProvider = serde_json::from_value(serde_json::json!({
            "type": "prometheus",
            "address": "http://prom:9090",
            "headers": {"X-Scope-OrgID": ["a", "b"], "Accept": ["application/json"]},
            "secretRef": {"name": "prom-auth"},
            "insecureSkipVerify": true
        }))
        .unwrap();
        let pairs: Vec<_> = p.header_pairs().collect();
        assert_eq!(
            pairs,
            vec![
                ("Accept", "application/json"),
                ("X-Scope-OrgID", "a"),
                ("X-Scope-OrgID", "b")
            ]
        );
        assert_eq!(p.secret_name(), Some("prom-auth"));
        assert!(p.insecure_skip_verify());
    }

    #[test]
    fn empty_optionals_read_as_unset() {
        let p = MetricTemplateProvider {
            type_: "prometheus".into(),
            address: Some(String::new()),
            secret_ref: Some(SecretReference {
                name: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(p.address(), None);
        assert_eq!(p.secret_name(), None);
        assert_eq!(p.header_pairs().count(), 0);
    }
}
