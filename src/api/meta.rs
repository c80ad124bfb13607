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

/// Flagger's record of the spec of a routing object it took over (JSON), written on the first
/// change when there is no kubectl last-applied annotation.
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";

/// The spec a taken-over object had before pennant changed it: from kubectl's last-applied
/// annotation, else from [`ORIGINAL_CONFIGURATION`]. `None` for an object pennant created.
pub(crate) fn original_spec(live: &Value) -> Option<Value> {
    let a = &live["metadata"]["annotations"];
    if let Some(last) = a.get(LAST_APPLIED).and_then(Value::as_str) {
        return serde_json::from_str::<Value>(last)
            .ok()
            .map(|v| v["spec"].clone());
    }
    a.get(ORIGINAL_CONFIGURATION)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::*;

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
