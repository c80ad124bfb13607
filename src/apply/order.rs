//! The order in which a set of objects is applied: Flux's staged apply (`fluxcd/pkg/ssa`
//! v0.76.2 `ApplyAllStaged` and its `ReconcileOrder` kind table). PURE.
//!
//! Stages, in order: (1) cluster definitions — CustomResourceDefinitions
//! (`apiextensions.k8s.io/*`), Namespaces (`v1`) and ClusterRoles (`rbac.authorization.k8s.io/*`)
//! — applied and then waited for; (2) every kind whose name ends in `Class` (StorageClass,
//! IngressClass, GatewayClass, ...), applied and waited for; (3) the custom stage kinds
//! configured by the operator (Flux's `--custom-apply-stage-kinds`), applied; (4) everything
//! else. Within a stage the objects are sorted by [`compare`]: the kind table first
//! ([`KIND_ORDER_FIRST`]), then the kinds it does not name, then the admission webhooks
//! ([`KIND_ORDER_LAST`]); ties by group, kind, namespace, name. Pruning deletes in the reverse
//! of that order.

use std::cmp::Ordering;

use serde_json::Value;

use super::inventory::ObjectId;

/// Kinds applied first, in this order (Flux's `ReconcileOrder.First`).
pub const KIND_ORDER_FIRST: [&str; 23] = [
    "CustomResourceDefinition",
    "Namespace",
    "ClusterRole",
    "ClusterClass",
    "RuntimeClass",
    "PriorityClass",
    "StorageClass",
    "VolumeSnapshotClass",
    "IngressClass",
    "GatewayClass",
    "ClusterRoleBinding",
    "ResourceQuota",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "LimitRange",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];

/// Kinds applied last, in this order (Flux's `ReconcileOrder.Last`).
pub const KIND_ORDER_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// One apply stage of [`stages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// CRDs, Namespaces, ClusterRoles: applied, then waited for until ready.
    ClusterDefinitions,
    /// `*Class` kinds: applied, then waited for.
    Classes,
    /// The operator's custom stage kinds: applied.
    Custom,
    /// Everything else.
    Resources,
}

impl Stage {
    /// Whether the objects of this stage must be ready before the next stage is applied.
    pub fn waits(self) -> bool {
        matches!(self, Stage::ClusterDefinitions | Stage::Classes)
    }
}

/// Position of a kind in the apply order: negative for [`KIND_ORDER_FIRST`], 0 for kinds the
/// table does not name, positive for [`KIND_ORDER_LAST`] (Flux's index; the group is ignored).
pub fn kind_rank(kind: &str) -> i32 {
    if let Some(i) = KIND_ORDER_FIRST.iter().position(|k| *k == kind) {
        i as i32 - KIND_ORDER_FIRST.len() as i32
    } else if let Some(i) = KIND_ORDER_LAST.iter().position(|k| *k == kind) {
        1 + i as i32
    } else {
        0
    }
}

/// Flux's apply order of two objects: kind rank, then group, kind, namespace and name.
pub fn compare(a: &ObjectId, b: &ObjectId) -> Ordering {
    if (a.group.as_str(), a.kind.as_str()) != (b.group.as_str(), b.kind.as_str()) {
        kind_rank(&a.kind)
            .cmp(&kind_rank(&b.kind))
            .then_with(|| a.group.cmp(&b.group))
            .then_with(|| a.kind.cmp(&b.kind))
    } else {
        a.namespace
            .cmp(&b.namespace)
            .then_with(|| a.name.cmp(&b.name))
    }
}

/// The stage of one object. `custom` lists `(group, kind)` pairs of the custom stage.
pub fn stage_of(obj: &Value, custom: &[(String, String)]) -> Stage {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let lower = kind.to_lowercase();
    let definition = (lower == "customresourcedefinition"
        && api_version.starts_with("apiextensions.k8s.io/"))
        || (lower == "namespace" && api_version == "v1")
        || (lower == "clusterrole" && api_version.starts_with("rbac.authorization.k8s.io/"));
    if definition {
        return Stage::ClusterDefinitions;
    }
    if kind.ends_with("Class") {
        return Stage::Classes;
    }
    let id = ObjectId::of(obj);
    if custom.iter().any(|(g, k)| *g == id.group && *k == id.kind) {
        return Stage::Custom;
    }
    Stage::Resources
}

/// `objects` split into the stages that have objects, in stage order, each sorted by
/// [`compare`]. The order within the input does not matter.
pub fn stages(objects: Vec<Value>, custom: &[(String, String)]) -> Vec<(Stage, Vec<Value>)> {
    let mut out: Vec<(Stage, Vec<Value>)> = vec![];
    let mut keyed: Vec<(Stage, ObjectId, Value)> = objects
        .into_iter()
        .map(|o| (stage_of(&o, custom), ObjectId::of(&o), o))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| compare(&a.1, &b.1)));
    for (stage, _, obj) in keyed {
        match out.last_mut() {
            Some((s, objs)) if *s == stage => objs.push(obj),
            _ => out.push((stage, vec![obj])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        let mut o = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if !ns.is_empty() {
            o["metadata"]["namespace"] = json!(ns);
        }
        o
    }

    fn names(objs: &[Value]) -> Vec<String> {
        objs.iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn objects_are_staged_and_sorted_as_flux() {
        let input = vec![
            obj(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "",
                "vw",
            ),
            obj("apps/v1", "Deployment", "apps", "web"),
            obj("v1", "Service", "apps", "web"),
            obj("monitoring.coreos.com/v1", "ServiceMonitor", "apps", "web"),
            obj(
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
                "",
                "mw",
            ),
            obj("v1", "ConfigMap", "apps", "b"),
            obj("v1", "ConfigMap", "apps", "a"),
            obj("v1", "ConfigMap", "alpha", "z"),
            obj("networking.k8s.io/v1", "IngressClass", "", "nginx"),
            obj("storage.k8s.io/v1", "StorageClass", "", "fast"),
            obj(
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "",
                "crb",
            ),
            obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "cr"),
            obj("v1", "Namespace", "", "apps"),
            obj(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "canaries.flagger.app",
            ),
            obj("v1", "ServiceAccount", "apps", "sa"),
            obj("v1", "Secret", "apps", "s"),
            obj("batch/v1", "Job", "apps", "migrate"),
            obj("apps/v1", "StatefulSet", "apps", "db"),
            obj("flagger.app/v1beta1", "Canary", "apps", "web"),
        ];
        let staged = stages(input, &[]);
        let got: Vec<(Stage, Vec<String>)> = staged.iter().map(|(s, o)| (*s, names(o))).collect();
        let want = vec![
            (
                Stage::ClusterDefinitions,
                vec![
                    "CustomResourceDefinition/canaries.flagger.app",
                    "Namespace/apps",
                    "ClusterRole/cr",
                ],
            ),
            (
                Stage::Classes,
                vec!["StorageClass/fast", "IngressClass/nginx"],
            ),
            (
                Stage::Resources,
                vec![
                    "ClusterRoleBinding/crb",
                    "ServiceAccount/sa",
                    // same kind: namespace, then name
                    "ConfigMap/z",
                    "ConfigMap/a",
                    "ConfigMap/b",
                    "Secret/s",
                    "Service/web",
                    "Deployment/web",
                    "StatefulSet/db",
                    // unnamed kinds: by group, then kind
                    "Job/migrate",
                    "Canary/web",
                    "ServiceMonitor/web",
                    "MutatingWebhookConfiguration/mw",
                    "ValidatingWebhookConfiguration/vw",
                ],
            ),
        ];
        let want: Vec<(Stage, Vec<String>)> = want
            .into_iter()
            .map(|(s, v)| (s, v.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(got, want);
        assert!(Stage::ClusterDefinitions.waits() && Stage::Classes.waits());
        assert!(!Stage::Custom.waits() && !Stage::Resources.waits());
    }

    #[test]
    fn definitions_need_their_api_group_and_custom_kinds_get_their_stage() {
        // a kind named Namespace outside core, or a ClusterRole outside RBAC, is a resource
        let custom = [("cert-manager.io".to_string(), "ClusterIssuer".to_string())];
        let cases = [
            (
                obj("example.com/v1", "Namespace", "", "x"),
                Stage::Resources,
            ),
            (
                obj("example.com/v1", "ClusterRole", "", "x"),
                Stage::Resources,
            ),
            (
                obj(
                    "apiextensions.k8s.io/v1beta1",
                    "CustomResourceDefinition",
                    "",
                    "x",
                ),
                Stage::ClusterDefinitions,
            ),
            (
                obj("gateway.networking.k8s.io/v1", "GatewayClass", "", "x"),
                Stage::Classes,
            ),
            (
                obj("cluster.x-k8s.io/v1beta1", "ClusterClass", "", "x"),
                Stage::Classes,
            ),
            (
                obj("cert-manager.io/v1", "ClusterIssuer", "", "x"),
                Stage::Custom,
            ),
            (
                obj("cert-manager.io/v1", "Issuer", "ns", "x"),
                Stage::Resources,
            ),
        ];
        for (o, want) in cases {
            assert_eq!(stage_of(&o, &custom), want, "{o}");
        }
        assert!(kind_rank("CustomResourceDefinition") < kind_rank("Namespace"));
        assert!(kind_rank("PodDisruptionBudget") < kind_rank("Ingress"));
        assert_eq!(kind_rank("Ingress"), 0);
        assert!(
            kind_rank("MutatingWebhookConfiguration") < kind_rank("ValidatingWebhookConfiguration")
        );
    }
}
