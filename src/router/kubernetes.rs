//! Plain Kubernetes router (`provider: kubernetes`, Flagger §3.5): blue/green without a mesh.
//!
//! There is no routing object. The apex Service always selects the primary pods; the canary is
//! reachable only through `<apex>-canary` (load tests, smoke tests), and the switch happens when
//! the promotion's rolling update replaces the primary. `validate` accepts only blue/green
//! (`analysis.iterations`) for this provider.

use kube::api::ApiResource;
use serde_json::Value;

use super::Router;
use crate::api::Canary;
use crate::router::Weights;

/// Flagger's `NopRouter`. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubernetesRouter;

impl Router for KubernetesRouter {
    fn resources(&self) -> Vec<ApiResource> {
        vec![]
    }

    /// None: there is no routing object.
    fn reads(&self) -> &'static [&'static str] {
        &[]
    }

    /// No objects: the Services are built by `canary::services`.
    fn build(&self, _: &Canary, _: Weights, _: &[Value]) -> Result<Vec<Value>, String> {
        Ok(vec![])
    }

    /// `None`: there is no split to read; all traffic through the apex goes to the primary.
    fn read_weights(&self, _: &Canary, _: &[Value]) -> Option<Weights> {
        None
    }
}
