//! Gateway API `gateway.networking.k8s.io/v1` HTTPRoute: only the fields pennant writes or reads.
//! Filter bodies pennant copies without interpreting them (header modifiers, URL rewrite, CORS,
//! the user's `service.mirror` entries) are raw JSON.
//!
//! Every optional field is skipped when unset, so a server-side-apply body carries only the
//! fields pennant owns. Unknown fields of a live object are ignored when reading it.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `gateway.networking.k8s.io`, the default `ParentReference.group`.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `HTTPRoute.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "HttpRouteStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// `ParentReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// `HTTPRouteRule`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// `HTTPRouteMatch`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpNameMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpNameMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// `HTTPPathMatch`: `type` is `Exact`, `PathPrefix` or `RegularExpression`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HttpPathMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `HTTPHeaderMatch` / `HTTPQueryParamMatch`: `type` is `Exact` or `RegularExpression`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HttpNameMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// `HTTPRouteFilter`. Only `requestMirror` is typed (pennant reads it back); the other bodies are
/// copied as raw JSON.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<Value>,
}

/// `HTTPRequestMirrorFilter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    #[serde(default)]
    pub backend_ref: BackendObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Value>,
}

/// `BackendObjectReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// `HTTPBackendRef`. An absent `weight` means 1 (Gateway API default).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// `HTTPRouteTimeouts` (Gateway API durations, e.g. `30s`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `HTTPRoute.status`: only the per-parent conditions pennant checks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// `RouteParentStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    #[serde(default)]
    pub parent_ref: ParentReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_name: Option<String>,
    #[serde(default)]
    pub conditions: Vec<RouteCondition>,
}

/// A `metav1.Condition` of a route parent (only the fields pennant reads).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteCondition {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn type_meta_is_gateway_networking_k8s_io_v1() {
        assert_eq!(HTTPRoute::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(HTTPRoute::kind(&()), "HTTPRoute");
        assert_eq!(HTTPRoute::plural(&()), "httproutes");
    }

    #[test]
    fn reads_a_live_route_with_unknown_fields_and_writes_only_owned_ones() {
        let live = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test", "generation": 3},
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
                     "rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 80},
                                                {"name": "podinfo-canary", "port": 80, "weight": 0}],
                                "sessionPersistence": {"sessionName": "x"}}]},
            "status": {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "c",
                "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 3,
                                "reason": "Accepted", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}
        });
        let route: HTTPRoute = serde_json::from_value(live).unwrap();
        assert_eq!(route.spec.rules[0].backend_refs[0].weight, None);
        assert_eq!(
            route.status.as_ref().unwrap().parents[0].conditions[0].observed_generation,
            Some(3)
        );
        assert_eq!(
            serde_json::to_value(&route.spec).unwrap(),
            json!({"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
                   "rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 80},
                                              {"name": "podinfo-canary", "port": 80, "weight": 0}]}]})
        );
    }
}
