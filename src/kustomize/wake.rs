//! What wakes a Kustomization besides its own changes and its source: a dependency turning
//! Ready (instead of only Flux's `--requeue-dependency` timer, kept as the fallback) and a
//! change of an object its health wait checks ([`super::health_wait`]). Both become
//! `ObjectRef`s on the controller's `reconcile_on` stream, so the reconcile follows within a
//! second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::health_wait::{Key, Waits};
use crate::api::kustomization::Kustomization;
use crate::apply::inventory::ObjectId;
use crate::gitops::conditions::{self, reasons, types};
use crate::health::watch::Watches;

/// Whether `k` counts as a ready dependency: `Ready=True` for its current generation (the
/// first rules of Flux's `checkDependencies`; the rest is checked by the dependent's
/// reconcile). PURE.
pub fn ready_for_dependents(k: &Kustomization) -> bool {
    k.status.as_ref().is_some_and(|s| {
        s.observed_generation == k.metadata.generation
            && conditions::is_true(&s.conditions, types::READY)
    })
}

/// The Kustomizations among `all` that wait for `dep` (`DependencyNotReady`) and name it in a
/// Kustomization `dependsOn` entry (the namespace defaulting to the dependent's), when `dep`
/// is ready ([`ready_for_dependents`]). PURE.
pub fn dependents_to_wake(
    all: &[Arc<Kustomization>],
    dep: &Kustomization,
) -> Vec<ObjectRef<Kustomization>> {
    if !ready_for_dependents(dep) {
        return vec![];
    }
    let (dep_ns, dep_name) = (dep.namespace().unwrap_or_default(), dep.name_any());
    all.iter()
        .filter(|k| {
            k.status.as_ref().is_some_and(|s| {
                conditions::get(&s.conditions, types::READY)
                    .is_some_and(|c| c.reason == reasons::DEPENDENCY_NOT_READY)
            })
        })
        .filter(|k| {
            let own_ns = k.namespace().unwrap_or_default();
            k.spec.depends_on.iter().any(|d| {
                d.kind.as_deref().is_none_or(|kind| kind == "Kustomization")
                    && d.name == dep_name
                    && d.namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(&own_ns)
                        == dep_ns
            })
        })
        .map(|k| ObjectRef::from_obj(&**k))
        .collect()
}

/// The HelmReleases (pennant's `dependsOn[].kind: HelmRelease`) each Kustomization waits for,
/// so that a change of one (seen by the dynamic watches) wakes its dependents.
#[derive(Default)]
pub struct HelmDependents {
    index: Mutex<BTreeMap<ObjectId, BTreeSet<Key>>>,
}

/// The id of a HelmRelease (`helm.toolkit.fluxcd.io`).
pub fn helm_release_id(namespace: &str, name: &str) -> ObjectId {
    ObjectId {
        namespace: namespace.into(),
        name: name.into(),
        group: "helm.toolkit.fluxcd.io".into(),
        kind: "HelmRelease".into(),
    }
}

/// The HelmReleases `ks` depends on (the namespace defaulting to its own). PURE.
pub fn helm_dependencies(ks: &Kustomization) -> Vec<ObjectId> {
    let own = ks.namespace().unwrap_or_default();
    ks.spec
        .depends_on
        .iter()
        .filter(|d| d.kind.as_deref() == Some("HelmRelease"))
        .map(|d| {
            let ns = d
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&own);
            helm_release_id(ns, &d.name)
        })
        .collect()
}

impl HelmDependents {
    /// Record that `key` waits for `deps` (replacing what it waited for before; empty: none).
    pub fn set(&self, key: &Key, deps: &[ObjectId]) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.retain(|_, keys| {
            keys.remove(key);
            !keys.is_empty()
        });
        for d in deps {
            index.entry(d.clone()).or_default().insert(key.clone());
        }
    }

    /// The Kustomizations waiting for the HelmRelease `id`.
    pub fn waiting_on(&self, id: &ObjectId) -> Vec<Key> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// After a dependency check of `ks`: while it waits (`waiting`), its HelmRelease dependencies
/// are watched and indexed; once they are ready, forgotten.
pub async fn track_helm_dependencies(
    index: &HelmDependents,
    watches: &Watches,
    ks: &Kustomization,
    waiting: bool,
) {
    let key = (ks.namespace().unwrap_or_default(), ks.name_any());
    let deps = if waiting {
        helm_dependencies(ks)
    } else {
        vec![]
    };
    index.set(&key, &deps);
    for d in &deps {
        watches.ensure(d, "v2").await;
    }
}

/// Forward every change of a checked object or a HelmRelease depended on (from the dynamic
/// watches) to the Kustomizations waiting on it, until either channel closes.
pub async fn forward_object_changes(
    mut changed: mpsc::UnboundedReceiver<ObjectId>,
    waits: Arc<Waits>,
    helm: Arc<HelmDependents>,
    wake: mpsc::UnboundedSender<ObjectRef<Kustomization>>,
) {
    while let Some(id) = changed.recv().await {
        let mut keys = waits.waiting_on(&id);
        if id.kind == "HelmRelease" {
            keys.extend(helm.waiting_on(&id));
        }
        for (ns, name) in keys {
            if wake
                .send(ObjectRef::<Kustomization>::new(&name).within(&ns))
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ks(
        name: &str,
        ns: &str,
        deps: serde_json::Value,
        ready: (&str, &str),
        gens: (i64, i64),
    ) -> Arc<Kustomization> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": name, "namespace": ns, "generation": gens.0},
                "spec": {"interval": "1m", "prune": true, "dependsOn": deps,
                    "sourceRef": {"kind": "GitRepository", "name": "r"}},
                "status": {"observedGeneration": gens.1, "conditions": [{"type": "Ready",
                    "status": ready.0, "reason": ready.1, "message": "",
                    "lastTransitionTime": "2026-12-06T00:00:00Z"}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_ready_dependency_wakes_only_the_dependents_waiting_for_it() {
        let waiting = ("False", "DependencyNotReady");
        let a = ks(
            "a",
            "apps",
            json!([]),
            ("True", "ReconciliationSucceeded"),
            (1, 1),
        );
        let all = vec![
            a.clone(),
            ks("b", "apps", json!([{"name": "a"}]), waiting, (1, 1)),
            ks(
                "c",
                "other",
                json!([{"name": "a", "namespace": "apps"}]),
                waiting,
                (1, 1),
            ),
            ks("d", "other", json!([{"name": "a"}]), waiting, (1, 1)),
            ks(
                "e",
                "apps",
                json!([{"name": "a"}]),
                ("True", "ReconciliationSucceeded"),
                (1, 1),
            ),
            ks(
                "f",
                "apps",
                json!([{"name": "a", "kind": "HelmRelease"}]),
                waiting,
                (1, 1),
            ),
        ];
        let woken: Vec<String> = dependents_to_wake(&all, &a)
            .iter()
            .map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name))
            .collect();
        assert_eq!(woken, ["apps/b", "other/c"]);
        let stale = ks(
            "a",
            "apps",
            json!([]),
            ("True", "ReconciliationSucceeded"),
            (2, 1),
        );
        assert!(
            dependents_to_wake(&all, &stale).is_empty(),
            "not ready for its generation"
        );
        let failed = ks("a", "apps", json!([]), ("False", "BuildFailed"), (1, 1));
        assert!(dependents_to_wake(&all, &failed).is_empty());
    }

    #[test]
    fn helm_release_dependencies_are_indexed_while_waited_for() {
        let waiting = ("False", "DependencyNotReady");
        let b = ks(
            "b",
            "apps",
            json!([{"name": "a"}, {"kind": "HelmRelease", "name": "ingress"},
                {"kind": "HelmRelease", "name": "db", "namespace": "data"}]),
            waiting,
            (1, 1),
        );
        let deps = helm_dependencies(&b);
        assert_eq!(
            deps,
            [
                helm_release_id("apps", "ingress"),
                helm_release_id("data", "db")
            ]
        );
        let index = HelmDependents::default();
        let key: Key = ("apps".into(), "b".into());
        index.set(&key, &deps);
        assert_eq!(
            index.waiting_on(&helm_release_id("data", "db")),
            std::slice::from_ref(&key)
        );
        assert!(index.waiting_on(&helm_release_id("apps", "db")).is_empty());
        index.set(&key, &[]);
        assert!(index.waiting_on(&helm_release_id("data", "db")).is_empty());
    }
}
