//! Routers: per provider, PURE builders of the routing objects for a traffic split, and PURE
//! read-back of the split from live objects. The I/O lives in `canary::execute`.

pub mod gateway_api;
pub mod istio;
pub mod kubernetes;
pub mod nginx;

use kube::api::ApiResource;
use serde_json::Value;

use crate::api::{Canary, SessionAffinity};

pub use gateway_api::{GatewayApiRouter, GatewayApiV1beta1Router};
pub use istio::IstioRouter;
pub use kubernetes::KubernetesRouter;
pub use nginx::NginxRouter;

/// Traffic split for the routing objects, in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub primary: i32,
    pub canary: i32,
    pub mirror: bool,
}

/// One traffic-routing provider (Flagger's `pkg/router` `Interface`, split into pure halves).
///
/// Objects are full JSON objects (`apiVersion`, `kind`, `metadata` with name, namespace, labels,
/// annotations and the controller ownerReference, `spec`) holding only the fields pennant owns,
/// ready for server-side apply. `build` returns them in apply order.
pub trait Router: Send + Sync {
    /// The resource types `build` returns, so the caller can watch them (reflectors for
    /// `read_weights` and diffing) and apply them (dynamic API by `ApiResource`) without knowing
    /// the provider. Added to the trait sketch because a JSON object does not carry its plural.
    fn resources(&self) -> Vec<ApiResource>;

    /// The provider-specific Canary fields this router reads, as field paths (`service.retries`,
    /// `ingressRef`). `canary::validate::unsupported` reports every other such field that a
    /// Canary sets (`Unsupported=True` and a Warning event), so none is ignored silently.
    /// Fields every provider reads (the Services' `service.port`, `portDiscovery`, metadata …)
    /// are not listed.
    fn reads(&self) -> &'static [&'static str];

    /// Objects besides the Canary that `build` reads, as `(kind, name)` in the Canary's
    /// namespace: the user's Ingress for NGINX, the live HTTPRoute for Gateway API (to keep the
    /// user's rules). The caller passes them, as read from its caches, to `build`.
    fn inputs(&self, _canary: &Canary) -> Vec<(&'static str, String)> {
        vec![]
    }

    /// The desired routing objects for `weights` (percent; `mirror` mirrors the primary's
    /// traffic to the canary where the provider supports it), given the live `inputs` found (any
    /// order; missing ones absent). An error names a spec the provider cannot express or an input
    /// it needs and did not get.
    fn build(
        &self,
        canary: &Canary,
        weights: Weights,
        inputs: &[Value],
    ) -> Result<Vec<Value>, String>;

    /// Why the routing objects in `live` cannot be trusted to carry the last split written yet
    /// (Gateway API: a parent has not accepted the route's generation), which halts the
    /// analysis without counting a failure. `None` when they can.
    fn pending(&self, _canary: &Canary, _live: &[Value]) -> Option<String> {
        None
    }

    /// The split currently applied, read from `live`: this router's objects as read from the
    /// cluster, in any order (missing ones simply absent). `None` when the routing object is
    /// missing or carries no weights for the `-primary`/`-canary` hosts (Flagger's GetRoutes
    /// error "does not contain routes for …").
    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights>;
}

/// The router for a provider name (`spec.provider`, else the controller default);
/// `ingress_prefix` is the NGINX annotation prefix (`-ingress-annotations-prefix`). `None` for a
/// provider this build does not implement (see `canary::validate::IMPLEMENTED_PROVIDERS`).
pub fn router_for(provider: &str, ingress_prefix: &str) -> Option<Box<dyn Router>> {
    match provider {
        "istio" => Some(Box::new(IstioRouter)),
        "nginx" => Some(Box::new(NginxRouter::new(ingress_prefix))),
        "gatewayapi:v1" => Some(Box::new(GatewayApiRouter)),
        "gatewayapi:v1beta1" => Some(Box::new(GatewayApiV1beta1Router)),
        "kubernetes" => Some(Box::new(KubernetesRouter)),
        _ => None,
    }
}

/// `<cookie>; Max-Age=<maxAge|86400>` plus the configured `Domain`, `HttpOnly`, `Partitioned`,
/// `Path`, `SameSite`, `Secure` attributes.
pub(crate) fn set_cookie_value(cookie: &str, sa: &SessionAffinity, max_age: i64) -> String {
    let mut v = format!("{cookie}; Max-Age={max_age}");
    if let Some(d) = sa.domain.as_deref().filter(|d| !d.is_empty()) {
        v.push_str(&format!("; Domain={d}"));
    }
    if sa.http_only == Some(true) {
        v.push_str("; HttpOnly");
    }
    if sa.partitioned == Some(true) {
        v.push_str("; Partitioned");
    }
    if let Some(p) = sa.path.as_deref().filter(|p| !p.is_empty()) {
        v.push_str(&format!("; Path={p}"));
    }
    if let Some(s) = sa.same_site.as_deref().filter(|s| !s.is_empty()) {
        v.push_str(&format!("; SameSite={s}"));
    }
    if sa.secure == Some(true) {
        v.push_str("; Secure");
    }
    v
}

/// The first object of `objs` with this `kind`, API group and name.
pub(crate) fn find<'a>(
    objs: &'a [Value],
    group: &str,
    kind: &str,
    name: &str,
) -> Option<&'a Value> {
    let prefix = format!("{group}/");
    objs.iter().find(|o| {
        o["kind"] == kind
            && o["apiVersion"].as_str().is_some_and(|v| {
                if group.is_empty() {
                    !v.contains('/')
                } else {
                    v.starts_with(&prefix)
                }
            })
            && o["metadata"]["name"] == name
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_for_each_implemented_provider() {
        let kinds = |p: &str| -> Vec<String> {
            router_for(p, "")
                .unwrap()
                .resources()
                .into_iter()
                .map(|r| r.kind)
                .collect()
        };
        assert_eq!(kinds("istio"), ["DestinationRule", "VirtualService"]);
        assert_eq!(kinds("nginx"), ["Ingress"]);
        assert_eq!(kinds("gatewayapi:v1"), ["HTTPRoute"]);
        assert!(kinds("kubernetes").is_empty());
        assert_eq!(kinds("gatewayapi:v1beta1"), ["HTTPRoute"]);
        for p in ["", "linkerd", "gatewayapi"] {
            assert!(router_for(p, "").is_none(), "{p}");
        }
    }
}
