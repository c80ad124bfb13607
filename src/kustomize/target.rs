//! Where a Kustomization applies, prunes and checks health: [`crate::gitops::target`] (the
//! kubeconfig Secret, its sanitising, impersonation and the client cache, shared with the helm
//! controller) with kustomize-controller's messages, and per cluster a server-side [`Applier`]
//! with its own discovery cache.

use kube::Client;

use crate::api::kustomization::Kustomization;
use crate::apply::ssa::Applier;
use crate::gitops::target::{self as shared, Cluster, Flavour, TargetSpec};

pub use crate::gitops::target::{CONFIG_MAP_REF_REFUSED, Options, TargetError, UNSUPPORTED_FIELD};

/// The cluster and identity of one Kustomization's apply, prune and health checks.
#[derive(Clone)]
pub struct Target {
    /// A remote one answers within 30 s or fails (Flux's request timeout): a watch through it
    /// idle that long ends and must be restarted (kube's `watcher` does).
    pub client: Client,
    /// Server-side apply and prune through `client`, with its own discovery cache.
    pub applier: Applier,
}

/// What of `ks` decides its target. PURE.
pub fn spec_of(ks: &Kustomization) -> TargetSpec<'_> {
    TargetSpec {
        namespace: ks.metadata.namespace.as_deref().unwrap_or_default(),
        kube_config: ks.spec.kube_config.as_ref(),
        service_account_name: ks.spec.service_account_name.as_deref(),
    }
}

/// The user impersonated for `ks` ([`shared::impersonated_user`]). PURE.
pub fn impersonated_user(ks: &Kustomization, default: Option<&str>) -> Option<String> {
    let spec = spec_of(ks);
    shared::impersonated_user(spec.namespace, spec.service_account_name, default)
}

/// The targets of all Kustomizations: the controller's own, and cached impersonating or
/// remote clients, each with its applier.
pub struct Targets(shared::Targets<Target>);

impl Targets {
    /// The controller's own `client`, with `options`.
    pub fn new(client: Client, options: Options) -> Self {
        Targets(shared::Targets::new(
            client,
            options,
            Flavour::Kustomize,
            |c: Cluster| Target {
                applier: Applier::new(c.client.clone()),
                client: c.client,
            },
        ))
    }

    /// The target of `ks` ([`shared::Targets::target`]).
    pub async fn target(&self, ks: &Kustomization) -> Result<Target, TargetError> {
        self.0.target(&spec_of(ks)).await
    }

    /// Whether the impersonated service account of `ks` exists ([`shared::Targets::can_impersonate`]).
    pub async fn can_impersonate(&self, ks: &Kustomization) -> bool {
        self.0.can_impersonate(&spec_of(ks)).await
    }
}
