//! Routers: per provider, PURE builders of the routing objects for a traffic split, and PURE
//! read-back of the split from live objects. The I/O lives in `canary::execute`.

pub mod gateway_api;
pub mod istio;
pub mod nginx;

use kube::api::ApiResource;
use serde_json::Value;

use crate::api::Canary;
use crate::canary::machine::Weights;

pub use istio::IstioRouter;

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

    /// The desired routing objects for `weights` (percent; `mirror` mirrors the primary's
    /// traffic to the canary where the provider supports it). An error names a spec the provider
    /// cannot express.
    fn build(&self, canary: &Canary, weights: Weights) -> Result<Vec<Value>, String>;

    /// The split currently applied, read from `live`: this router's objects as read from the
    /// cluster, in any order (missing ones simply absent). `None` when the routing object is
    /// missing or carries no weights for the `-primary`/`-canary` hosts (Flagger's GetRoutes
    /// error "does not contain routes for …").
    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights>;
}

/// The router for a provider name (`spec.provider`, else the controller default). `None` for a
/// provider this build does not implement (see `canary::validate::IMPLEMENTED_PROVIDERS`).
pub fn router_for(provider: &str) -> Option<Box<dyn Router>> {
    match provider {
        "istio" => Some(Box::new(IstioRouter)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_for_knows_istio_only() {
        assert!(router_for("istio").is_some());
        assert!(router_for("nginx").is_none());
        assert!(router_for("").is_none());
        let kinds: Vec<String> = router_for("istio")
            .unwrap()
            .resources()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, ["DestinationRule", "VirtualService"]);
    }
}
