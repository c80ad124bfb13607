//! Istio `networking.istio.io/v1` VirtualService and DestinationRule: only the fields pennant
//! writes or reads. Sub-objects pennant copies from the Canary without interpreting them
//! (`match`, `rewrite`, `retries`, `corsPolicy`, `headers`, `trafficPolicy`) are raw JSON.
//!
//! Every optional field is skipped when unset, so a server-side-apply body carries only the
//! fields pennant owns. Unknown fields of a live object are ignored when reading it.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `VirtualService.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
}

/// `HTTPRoute` (fields in Istio's order).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `HTTPMatchRequest` list.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
    /// `HTTPRewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `HTTPRetry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// `CorsPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<Value>,
    /// `Headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

/// `TCPRoute`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// `L4MatchAttributes` list.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<Value>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `HTTPRouteDestination` / `RouteDestination`. `weight` is always written, 0 included, as
/// Flagger does (an absent weight reads as 0).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

/// `Destination`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// `Percent` (0-100). A JSON number, not `f64`, so an integer percentage is written as the API
/// server returns it (`50`, not `50.0`) and desired and live objects compare equal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Percent {
    pub value: serde_json::Number,
}

/// `DestinationRule.spec`: pennant writes one per `-primary`/`-canary` host, without subsets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    /// `TrafficPolicy`, copied from `service.trafficPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn type_meta_is_networking_istio_io_v1() {
        assert_eq!(VirtualService::api_version(&()), "networking.istio.io/v1");
        assert_eq!(VirtualService::plural(&()), "virtualservices");
        assert_eq!(DestinationRule::kind(&()), "DestinationRule");
        assert_eq!(DestinationRule::plural(&()), "destinationrules");
    }

    #[test]
    fn reads_a_live_object_with_unknown_fields_and_writes_only_owned_ones() {
        let live = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "7"},
            "spec": {"hosts": ["podinfo"], "exportTo": ["."],
                     "http": [{"fault": {"delay": {"fixedDelay": "1s"}},
                               "route": [{"destination": {"host": "podinfo-primary"}, "weight": 100},
                                         {"destination": {"host": "podinfo-canary"}}],
                               "mirrorPercentage": {"value": 12.5}}]}
        });
        let vs: VirtualService = serde_json::from_value(live).unwrap();
        assert_eq!(vs.spec.http[0].route[1].weight, 0);
        assert_eq!(
            vs.spec.http[0]
                .mirror_percentage
                .as_ref()
                .unwrap()
                .value
                .as_f64(),
            Some(12.5)
        );
        let out = serde_json::to_value(&vs.spec).unwrap();
        assert_eq!(
            out,
            json!({"hosts": ["podinfo"],
                   "http": [{"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100},
                                       {"destination": {"host": "podinfo-canary"}, "weight": 0}],
                             "mirrorPercentage": {"value": 12.5}}]})
        );
    }
}
