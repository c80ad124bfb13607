//! The inventory of applied objects and the prune set, in Flux's format (kustomize-controller
//! v1.9.5 `internal/inventory`, `fluxcd/cli-utils` `ObjMetadata`, `fluxcd/pkg/ssa` delete
//! options). PURE: the caller reads the live objects and deletes.
//!
//! - An entry is `{id: "<namespace>_<name>_<group>_<kind>", v: "<version>"}`: empty namespace
//!   for cluster-scoped objects, empty group for the core group (`_apps__Namespace`); a `:` in
//!   the name of an RBAC kind is written `__` (`_system__viewer_rbac.authorization.k8s.io_ClusterRole`).
//!   So `flux tree ks` and `flux get ks` read pennant's inventories.
//! - The stale set is old inventory − new inventory, compared by namespace, name, group and kind
//!   (an API version change is not a removal), in deletion order: the reverse of the apply order.
//! - A stale object is deleted only when its live copy carries this Kustomization's owner
//!   labels ([`owner_labels`]) and no opt-out: `kustomize.toolkit.fluxcd.io/prune: disabled`,
//!   `kustomize.toolkit.fluxcd.io/reconcile: disabled` or `kustomize.toolkit.fluxcd.io/ssa:
//!   Ignore`, as a label or an annotation, values compared case-insensitively.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::kustomization::{ResourceInventory, ResourceRef};

/// Owner label naming the Kustomization that applied an object.
pub const OWNER_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Owner label naming the Kustomization's namespace.
pub const OWNER_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Opt-outs that keep a stale object from being pruned (label or annotation, key → value).
pub const PRUNE_EXCLUSIONS: [(&str, &str); 3] = [
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("kustomize.toolkit.fluxcd.io/ssa", "Ignore"),
];

/// RBAC kinds whose names may hold `:`, written `__` in an inventory id.
const RBAC_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Identity of an object in an inventory (cli-utils' `ObjMetadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    /// Empty for the core group.
    pub group: String,
    pub kind: String,
}

/// An inventory id that does not have the four `_`-separated fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse stored object metadata: {0}")]
pub struct BadInventoryId(pub String);

impl ObjectId {
    /// The identity of an object (JSON with `apiVersion`, `kind`, `metadata.name|namespace`).
    pub fn of(obj: &Value) -> ObjectId {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        ObjectId {
            namespace: obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: obj["metadata"]["name"].as_str().unwrap_or_default().into(),
            group: api_version
                .rsplit_once('/')
                .map(|(g, _)| g)
                .unwrap_or_default()
                .into(),
            kind: obj["kind"].as_str().unwrap_or_default().into(),
        }
    }

    /// The inventory id, `<namespace>_<name>_<group>_<kind>`.
    pub fn to_id(&self) -> String {
        let name = if self.group == RBAC_GROUP && RBAC_KINDS.contains(&self.kind.as_str()) {
            self.name.replace(':', "__")
        } else {
            self.name.clone()
        };
        format!("{}_{}_{}_{}", self.namespace, name, self.group, self.kind)
    }

    /// Parse an inventory id: the namespace up to the first `_`, the kind and group after the
    /// last two; `__` in the name reads as `:` (as Flux parses, whatever the kind).
    pub fn parse(id: &str) -> Result<ObjectId, BadInventoryId> {
        let bad = || BadInventoryId(id.to_string());
        let (namespace, rest) = id.split_once('_').ok_or_else(bad)?;
        let (rest, kind) = rest.rsplit_once('_').ok_or_else(bad)?;
        let (name, group) = rest.rsplit_once('_').ok_or_else(bad)?;
        Ok(ObjectId {
            namespace: namespace.into(),
            name: name.replace("__", ":"),
            group: group.into(),
            kind: kind.into(),
        })
    }
}

/// The inventory entry of an object: its id and the version part of its `apiVersion`.
pub fn entry(obj: &Value) -> ResourceRef {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    ResourceRef {
        id: ObjectId::of(obj).to_id(),
        v: api_version
            .rsplit_once('/')
            .map_or(api_version, |(_, v)| v)
            .into(),
    }
}

/// The inventory of the objects applied, in the order given (Flux records the change set in
/// apply order).
pub fn inventory_of<'a>(objects: impl IntoIterator<Item = &'a Value>) -> ResourceInventory {
    ResourceInventory {
        entries: objects.into_iter().map(entry).collect(),
    }
}

/// The entries of `old` whose object is not in `new` (the prune candidates), in deletion order
/// (the reverse of the apply order, [`super::order::compare`]). An id that does not parse is an
/// error: the inventory is not trusted for pruning.
pub fn stale(
    old: &ResourceInventory,
    new: &ResourceInventory,
) -> Result<Vec<ResourceRef>, BadInventoryId> {
    let keep: BTreeSet<ObjectId> = new
        .entries
        .iter()
        .map(|e| ObjectId::parse(&e.id))
        .collect::<Result<_, _>>()?;
    let mut out = vec![];
    for e in &old.entries {
        let id = ObjectId::parse(&e.id)?;
        if !keep.contains(&id) && !out.iter().any(|(o, _): &(ObjectId, _)| *o == id) {
            out.push((id, e.clone()));
        }
    }
    out.sort_by(|a, b| super::order::compare(&b.0, &a.0));
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// Add the `survivors` (stale objects a prune failed to delete) back into `inventory`, so that
/// the next reconcile retries them (Flux's `inventory.Merge`, kustomize-controller #1664).
pub fn merge_survivors(inventory: &mut ResourceInventory, survivors: &[ResourceRef]) {
    for s in survivors {
        if !inventory.entries.iter().any(|e| e.id == s.id) {
            inventory.entries.push(s.clone());
        }
    }
}

/// The owner labels stamped on every object a Kustomization applies.
pub fn owner_labels(name: &str, namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (OWNER_NAME_LABEL.to_string(), name.to_string()),
        (OWNER_NAMESPACE_LABEL.to_string(), namespace.to_string()),
    ])
}

/// What to do with a stale object, judged from its live copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PruneDecision {
    /// Delete it (background propagation).
    Delete,
    /// Leave it: it is gone already.
    Gone,
    /// Leave it: it is not this Kustomization's (owner labels missing or different).
    NotOwned,
    /// Leave it: it opts out; the label or annotation key.
    Excluded(&'static str),
}

/// Flux's prune rule for one stale object; `live` is `None` when the object no longer exists.
pub fn prune_decision(live: Option<&Value>, name: &str, namespace: &str) -> PruneDecision {
    let Some(live) = live else {
        return PruneDecision::Gone;
    };
    let meta = &live["metadata"];
    let owned = owner_labels(name, namespace)
        .iter()
        .all(|(k, v)| meta["labels"][k].as_str() == Some(v.as_str()));
    if !owned {
        return PruneDecision::NotOwned;
    }
    for (key, value) in PRUNE_EXCLUSIONS {
        let hit = ["labels", "annotations"].iter().any(|m| {
            meta[m][key]
                .as_str()
                .is_some_and(|v| !v.is_empty() && v.eq_ignore_ascii_case(value))
        });
        if hit {
            return PruneDecision::Excluded(key);
        }
    }
    PruneDecision::Delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind,
               "metadata": {"name": name, "namespace": ns}})
    }

    fn r(id: &str, v: &str) -> ResourceRef {
        ResourceRef {
            id: id.into(),
            v: v.into(),
        }
    }

    #[test]
    fn entries_are_in_fluxs_format() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
                "_apps__Namespace",
                "v1",
            ),
            (
                obj("apps/v1", "Deployment", "apps", "web"),
                "apps_web_apps_Deployment",
                "v1",
            ),
            (
                obj("v1", "ConfigMap", "apps", "cfg"),
                "apps_cfg__ConfigMap",
                "v1",
            ),
            (
                obj("flagger.app/v1beta1", "Canary", "apps", "web"),
                "apps_web_flagger.app_Canary",
                "v1beta1",
            ),
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:viewer"}}),
                "_system__viewer_rbac.authorization.k8s.io_ClusterRole",
                "v1",
            ),
            (
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "canaries.flagger.app"}}),
                "_canaries.flagger.app_apiextensions.k8s.io_CustomResourceDefinition",
                "v1",
            ),
        ];
        for (o, id, v) in cases {
            let e = entry(&o);
            assert_eq!((e.id.as_str(), e.v.as_str()), (id, v), "{o}");
            let parsed = ObjectId::parse(id).unwrap();
            assert_eq!(parsed, ObjectId::of(&o), "{id} parses back");
        }
        assert_eq!(
            ObjectId::parse("no-separators"),
            Err(BadInventoryId("no-separators".into()))
        );
        assert!(ObjectId::parse("ns_name").is_err());
    }

    #[test]
    fn the_stale_set_is_old_minus_new_in_deletion_order() {
        let old = ResourceInventory {
            entries: vec![
                r("_apps__Namespace", "v1"),
                r("apps_cfg__ConfigMap", "v1"),
                r("apps_web_apps_Deployment", "v1"),
                r("apps_web_autoscaling_HorizontalPodAutoscaler", "v2beta2"),
                r("apps_old__Service", "v1"),
                r(
                    "_web-hook_admissionregistration.k8s.io_ValidatingWebhookConfiguration",
                    "v1",
                ),
            ],
        };
        let new = ResourceInventory {
            entries: vec![
                r("apps_cfg__ConfigMap", "v1"),
                r("apps_web_apps_Deployment", "v1"),
                // a new API version of the same object is not a removal
                r("apps_web_autoscaling_HorizontalPodAutoscaler", "v2"),
            ],
        };
        let got = stale(&old, &new).unwrap();
        assert_eq!(
            got,
            vec![
                r(
                    "_web-hook_admissionregistration.k8s.io_ValidatingWebhookConfiguration",
                    "v1"
                ),
                r("apps_old__Service", "v1"),
                r("_apps__Namespace", "v1"),
            ]
        );
        assert_eq!(stale(&new, &new).unwrap(), vec![]);
        let broken = ResourceInventory {
            entries: vec![r("garbage", "v1")],
        };
        assert!(stale(&broken, &new).is_err());
        assert!(stale(&old, &broken).is_err());

        let mut inv = new.clone();
        merge_survivors(
            &mut inv,
            &[r("apps_old__Service", "v1"), r("apps_cfg__ConfigMap", "v1")],
        );
        assert_eq!(inv.entries.len(), 4);
        assert_eq!(inv.entries[3], r("apps_old__Service", "v1"));
    }

    #[test]
    fn only_owned_objects_without_an_opt_out_are_pruned() {
        let owned = |extra: Value| {
            let mut o = obj("v1", "ConfigMap", "apps", "cfg");
            o["metadata"]["labels"] = json!(owner_labels("apps", "flux-system"));
            for (section, kv) in extra.as_object().unwrap() {
                for (k, v) in kv.as_object().unwrap() {
                    o["metadata"][section.as_str()][k.as_str()] = v.clone();
                }
            }
            o
        };
        let cases = [
            (owned(json!({})), PruneDecision::Delete),
            (
                obj("v1", "ConfigMap", "apps", "cfg"),
                PruneDecision::NotOwned,
            ),
            (
                owned(json!({"labels": {OWNER_NAMESPACE_LABEL: "other"}})),
                PruneDecision::NotOwned,
            ),
            (
                owned(json!({"annotations": {"kustomize.toolkit.fluxcd.io/prune": "disabled"}})),
                PruneDecision::Excluded("kustomize.toolkit.fluxcd.io/prune"),
            ),
            (
                owned(json!({"labels": {"kustomize.toolkit.fluxcd.io/prune": "Disabled"}})),
                PruneDecision::Excluded("kustomize.toolkit.fluxcd.io/prune"),
            ),
            (
                owned(
                    json!({"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}}),
                ),
                PruneDecision::Excluded("kustomize.toolkit.fluxcd.io/reconcile"),
            ),
            (
                owned(json!({"annotations": {"kustomize.toolkit.fluxcd.io/ssa": "ignore"}})),
                PruneDecision::Excluded("kustomize.toolkit.fluxcd.io/ssa"),
            ),
            (
                owned(json!({"annotations": {"kustomize.toolkit.fluxcd.io/ssa": "Merge"}})),
                PruneDecision::Delete,
            ),
        ];
        for (live, want) in cases {
            assert_eq!(
                prune_decision(Some(&live), "apps", "flux-system"),
                want,
                "{live}"
            );
        }
        assert_eq!(
            prune_decision(None, "apps", "flux-system"),
            PruneDecision::Gone
        );
    }
}
