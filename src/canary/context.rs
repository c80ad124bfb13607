//! Shared state of the Canary controller (`Context`), its settings and its error: what
//! `controller`, `observe` and `execute` all use, so none of them imports another for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::concurrency::PeerState;
use super::index::Index;
use crate::api::Canary;
use crate::metrics::Metrics;
use crate::notify;

/// Controller settings, from the command line (names mirror Flagger's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Default router when a Canary has no `provider` (`-mesh-provider`).
    pub default_provider: String,
    /// Default Prometheus URL (`-metrics-server`).
    pub metrics_server: String,
    /// Labels tried, in order, to find the target's selector label (`-selector-labels`).
    pub selector_labels: Vec<String>,
    /// Track ConfigMaps/Secrets referenced by the target (`-enable-config-tracking`).
    pub config_tracking: bool,
    /// Annotation prefix of the NGINX canary Ingress (`-ingress-annotations-prefix`).
    pub ingress_prefix: String,
    /// Label prefixes copied from the target to its primary (`-include-label-prefix`; `*` = all).
    pub include_label_prefix: Vec<String>,
    /// Only watch this namespace (`-namespace`); all when `None`.
    pub namespace: Option<String>,
    /// Global notifiers (`-slack-url`, `-msteams-url`, `-event-webhook`, ...).
    pub notify: notify::GlobalSettings,
    /// Cluster name shown in alerts (`-cluster-name`).
    pub cluster_name: String,
    /// The most Canaries running at once in the watched namespaces (`--max-concurrent-canaries`,
    /// pennant's); 0 = no limit.
    pub max_concurrent_canaries: u32,
    /// Canaries reconciled at once (`--canary-concurrent`); the others queue, each once. 0 = no
    /// bound.
    pub concurrent: u16,
}

/// What failed in a reconcile. Each variant's [`Error::label`] is the `reason` of
/// `pennant_reconcile_errors_total{controller="canary",reason}` (and the `result` of
/// `pennant_reconcile_total`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed in a way retrying may fix (5xx, 409, 429, network).
    #[error("kubernetes API: {verb} {kind}: {source}")]
    Kube {
        verb: &'static str,
        kind: String,
        #[source]
        source: kube::Error,
    },
    /// The Canary or its target cannot be reconciled as they are (no router for the provider,
    /// no selector label on the target): it waits for a change of either.
    #[error("{0}")]
    Invalid(String),
    /// The API server refused a write with a 4xx that retrying the same object cannot fix
    /// (`execute::write_error`): the message names the object and carries the server's reason.
    #[error("{0}")]
    Rejected(String),
    /// The target workload went away between observe and apply.
    #[error("{0}")]
    TargetNotFound(String),
    /// The provider's router could not build its routing objects.
    #[error("router: {0}")]
    RouterBuild(String),
    /// The Canary's status changed under us between observe and the status write.
    #[error("{0}")]
    StatusConflict(String),
    /// The reconcile panicked (contained to this Canary; the log has the backtrace).
    #[error("{0}")]
    Panic(String),
    /// An object could not be encoded as JSON (a bug: the types are ours).
    #[error("encoding: {0}")]
    Encode(String),
}

impl Error {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Invalid(_) => "invalid",
            Self::Rejected(_) => "rejected",
            Self::TargetNotFound(_) => "target_not_found",
            Self::RouterBuild(_) => "router_build",
            Self::StatusConflict(_) => "status_conflict",
            Self::Panic(_) => "panic",
            Self::Encode(_) => "encode",
        }
    }

    /// `map_err` for a failed Kubernetes call: `verb` (`get`, `patch`, `apply` …) on `kind`.
    pub fn kube(verb: &'static str, kind: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let kind = kind.into();
        move |source| Self::Kube { verb, kind, source }
    }

    /// `map_err` for a failed JSON encoding.
    pub fn encode(e: serde_json::Error) -> Self {
        Self::Encode(e.to_string())
    }
}

/// Shared state of the controller: clients, caches, metrics.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub deployments: Store<Deployment>,
    /// DaemonSets (targets and primaries), without `managedFields`.
    pub daemon_sets: Store<DaemonSet>,
    /// HorizontalPodAutoscalers (`autoscaling/v2`), without `managedFields`.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// Every Canary (the controller's own cache).
    pub canaries: Store<Canary>,
    /// Which Canaries refer to which objects, fed by the Canary and workload watches: the
    /// mappers and the claim check look up here instead of scanning `canaries`.
    pub index: Arc<RwLock<Index>>,
    pub services: Store<Service>,
    /// Routing objects by kind (`VirtualService`, `DestinationRule`), when their CRDs exist.
    pub routes: HashMap<String, Store<DynamicObject>>,
    pub http: reqwest::Client,
    /// Notifiers for Canaries without `analysis.alerts`, and the global event webhook.
    pub global: notify::GlobalNotifiers,
    /// `reportingInstance` of the Events pennant writes (pod name, else hostname).
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// resourceVersion of each Canary as written by our last status patch: a cached Canary with
    /// another version is stale (our own write has not come back through the watch yet) and is
    /// read fresh, so a step is never decided twice from an old status.
    pub(super) written: Mutex<HashMap<ObjectRef<Canary>, String>>,
    /// Becomes true once every cache has its initial list.
    pub(super) synced: tokio::sync::watch::Receiver<bool>,
    /// How each Canary counts for the concurrency limit as this process last decided it (ahead
    /// of the cache, which shows our status writes a moment later). Locked around `decide`, so
    /// two Canaries never take the last slot at once.
    pub(super) slots: Mutex<HashMap<ObjectRef<Canary>, PeerState>>,
    /// Reconciles waiting Canaries when a slot frees.
    pub(super) wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<Canary>>,
}

impl Context {
    /// The cached live object for `kind/ns/name`, as JSON, if pennant caches that kind.
    pub fn live(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        match kind {
            "Deployment" => self
                .deployments
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|d| serde_json::to_value(&*d).ok()),
            "Service" => self
                .services
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|s| serde_json::to_value(&*s).ok()),
            "DaemonSet" => self
                .daemon_sets
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|d| serde_json::to_value(&*d).ok()),
            "HorizontalPodAutoscaler" => self
                .hpas
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|h| serde_json::to_value(&*h).ok()),
            k => self.routes.get(k).and_then(|store| {
                let ar = route_resource(k)?;
                let o = store.get(&ObjectRef::new_with(name, ar.clone()).within(ns))?;
                let mut v = serde_json::to_value(&*o).ok()?;
                // Items of a LIST of built-in kinds (Ingress) come without apiVersion/kind.
                v["apiVersion"] = Value::String(ar.api_version);
                v["kind"] = Value::String(ar.kind);
                Some(v)
            }),
        }
    }

    /// Wait until every cache has its initial list (the basis of `/readyz`).
    pub async fn wait_until_ready(&self) {
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.daemon_sets.wait_until_ready().await;
        let _ = self.hpas.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        for s in self.routes.values() {
            let _ = s.wait_until_ready().await;
        }
    }
}

/// The routing kinds pennant caches (every router's `resources`), by kind.
pub(super) const ROUTE_KINDS: &[&str] =
    &["VirtualService", "DestinationRule", "Ingress", "HTTPRoute"];

/// The API resource of a cached routing kind.
pub(super) fn route_resource(kind: &str) -> Option<ApiResource> {
    let gvk = match kind {
        "VirtualService" => GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "DestinationRule" => GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
        "Ingress" => GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
        "HTTPRoute" => GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        _ => return None,
    };
    Some(ApiResource::from_gvk(&gvk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_what_failed_in_its_label() {
        let api = kube::Error::Api(
            kube::core::Status::failure("boom", "InternalError")
                .with_code(500)
                .boxed(),
        );
        let cases = [
            (Error::kube("patch", "Deployment")(api), "kube"),
            (Error::Invalid("x".into()), "invalid"),
            (Error::Rejected("x".into()), "rejected"),
            (Error::TargetNotFound("x".into()), "target_not_found"),
            (Error::RouterBuild("x".into()), "router_build"),
            (Error::StatusConflict("x".into()), "status_conflict"),
            (Error::Panic("x".into()), "panic"),
            (Error::Encode("x".into()), "encode"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (e, label) in cases {
            assert_eq!(e.label(), label, "{e:?}");
            assert!(seen.insert(label), "{label} twice");
        }
    }

    #[test]
    fn a_kube_error_says_the_verb_and_the_kind() {
        let api = kube::Error::Api(
            kube::core::Status::failure("etcd timeout", "InternalError")
                .with_code(500)
                .boxed(),
        );
        let e = Error::kube("get", "ConfigMap")(api);
        assert!(
            e.to_string().starts_with("kubernetes API: get ConfigMap: "),
            "{e}"
        );
    }
}
