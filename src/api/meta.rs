//! Metadata pennant puts on the objects it generates for a Canary, and reads back from the
//! objects it takes over: the controller owner reference, the labels and annotations of routing
//! objects, and the records of a taken-over object's original spec. PURE.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::Value;

use super::{Canary, CustomMetadata};

/// Annotations every routing-side object gets so Flux does not revert pennant's edits
/// (Flagger §1.7): kustomize-controller skips it, helm-controller ignores its drift.
pub const FLUX_DISABLED_ANNOTATIONS: &[(&str, &str)] = &[
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// Labels and annotations of a generated routing object: the user's `service.apex/primary/canary`
/// metadata, plus the Flux "disabled" annotations.
pub fn routing_metadata(
    custom: Option<&CustomMetadata>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = custom.map(|m| m.labels.clone()).unwrap_or_default();
    let mut annotations = custom.map(|m| m.annotations.clone()).unwrap_or_default();
    for (k, v) in FLUX_DISABLED_ANNOTATIONS {
        annotations.insert(k.to_string(), v.to_string());
    }
    (labels, annotations)
}

/// Controller owner reference to the Canary (`flagger.app/v1beta1`, `controller: true`,
/// `blockOwnerDeletion: true`), set on every object pennant generates for it.
pub fn owner_reference(canary: &Canary) -> OwnerReference {
    OwnerReference {
        api_version: Canary::api_version(&()).into_owned(),
        kind: Canary::kind(&()).into_owned(),
        name: canary.metadata.name.clone().unwrap_or_default(),
        uid: canary.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// True when `live` (JSON) has `canary` among its owner references: pennant created it.
pub(crate) fn owned_by(canary: &Canary, live: &Value) -> bool {
    let uid = canary.metadata.uid.as_deref().unwrap_or_default();
    live["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
}

/// kubectl's client-side-apply record of an object's configuration.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Flagger's record of the spec of a routing object it took over (JSON). pennant writes it from
/// the live spec at the first change of every object it takes over, kubectl's last-applied
/// annotation or not (Flagger skips it then): the live spec is the user's truth, the
/// last-applied record may be older than a `kubectl patch` or `edit`.
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";

/// Field managers of controllers that rewrite the objects they take over: pennant, and Flagger
/// (a Canary moved over from it), whose takeover recorded nothing when kubectl's last-applied
/// annotation existed.
const TAKEOVER_MANAGERS: &[&str] = &["pennant", "flagger"];

/// The spec a taken-over object had before pennant changed it: [`ORIGINAL_CONFIGURATION`]; for
/// an object Flagger (or a pennant before this record) rewrote without writing it, kubectl's
/// last-applied spec. `None` for an object not rewritten yet — its live spec is the user's —
/// and for one pennant created.
pub(crate) fn original_spec(live: &Value) -> Option<Value> {
    let a = &live["metadata"]["annotations"];
    if let Some(original) = a.get(ORIGINAL_CONFIGURATION).and_then(Value::as_str) {
        return serde_json::from_str(original).ok();
    }
    let rewritten = live["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|m| {
            m.iter()
                .any(|e| TAKEOVER_MANAGERS.contains(&e["manager"].as_str().unwrap_or_default()))
        });
    if !rewritten {
        return None;
    }
    a.get(LAST_APPLIED)
        .and_then(Value::as_str)
        .and_then(|last| serde_json::from_str::<Value>(last).ok())
        .map(|v| v["spec"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::*;
    use serde_json::json;

    /// Issue 11: kubectl's last-applied record predates a `kubectl patch`; the live spec wins
    /// until pennant's own record exists, which wins afterwards.
    #[test]
    fn the_original_spec_is_the_live_one_until_recorded() {
        let last = json!({"spec": {"rules": [{"path": "/healthz"}]}}).to_string();
        let mut live = json!({
            "metadata": {"annotations": {LAST_APPLIED: last},
                "managedFields": [{"manager": "kubectl-client-side-apply"}, {"manager": "kubectl-patch"}]},
            "spec": {"rules": [{"path": "/livez"}]},
        });
        assert_eq!(
            original_spec(&live),
            None,
            "not taken over yet: the live spec"
        );
        live["metadata"]["annotations"][ORIGINAL_CONFIGURATION] =
            json!(json!({"rules": [{"path": "/livez"}]}).to_string());
        live["metadata"]["managedFields"][1]["manager"] = json!("pennant");
        assert_eq!(
            original_spec(&live),
            Some(json!({"rules": [{"path": "/livez"}]}))
        );
        // Rewritten by Flagger (or an older pennant), which recorded nothing: last-applied.
        let mut flagger = live.clone();
        flagger["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(ORIGINAL_CONFIGURATION);
        flagger["metadata"]["managedFields"][1]["manager"] = json!("flagger");
        assert_eq!(
            original_spec(&flagger),
            Some(json!({"rules": [{"path": "/healthz"}]}))
        );
    }

    #[test]
    fn owner_reference_points_at_the_canary() {
        let c = flagger_istio_canary();
        let o = owner_reference(&c);
        assert_eq!(o.api_version, "flagger.app/v1beta1");
        assert_eq!(o.kind, "Canary");
        assert_eq!(o.name, "podinfo");
        assert_eq!(o.uid, "6f1c0a4e-0000-4000-8000-000000000001");
        assert_eq!(
            (o.controller, o.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
}
