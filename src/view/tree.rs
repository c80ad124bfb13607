//! A Kustomization's inventory as a tree, as `flux tree ks` prints it (`Kind/namespace/name`
//! lines joined by `├──`, `└──` and `│`), with pennant's additions: a HelmRelease's own
//! inventory and a Canary's generated objects beneath them, and the state of the GitOps
//! objects and Canaries on their line. PURE: the caller fetches the objects.

use serde::Serialize;

use super::summary::{Kind, Summary};
use crate::api::Canary;

/// An object named by an inventory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// API group, empty for the core group.
    pub group: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object (`flux tree`'s text).
    pub fn text(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// The pennant kind this object is, if it is one (matched on group and kind).
    pub fn pennant_kind(&self) -> Option<Kind> {
        let k = Kind::parse(&self.kind)?;
        let group = k.api_version().rsplit_once('/').map_or("", |(g, _)| g);
        (group == self.group && k.as_str() == self.kind).then_some(k)
    }
}

/// An inventory entry's id, `<namespace>_<name>_<group>_<kind>` (Flux's `ObjMetadata` form:
/// empty namespace for cluster-scoped objects, empty group for the core group), as an
/// [`ObjectRef`]. `None` when it has fewer than four parts. Names never hold `_`; RBAC names'
/// `:` is written `__` by Flux and read back here.
pub fn parse_inventory_id(id: &str) -> Option<ObjectRef> {
    let (rest, kind) = id.rsplit_once('_')?;
    let (rest, group) = rest.rsplit_once('_')?;
    let (namespace, name) = rest.split_once('_')?;
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    Some(ObjectRef {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.replace("__", ":"),
    })
}

/// A node of the tree: its line and its children.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Node>,
}

impl Node {
    pub fn leaf(text: impl Into<String>) -> Node {
        Node {
            text: text.into(),
            items: vec![],
        }
    }
}

/// The line of a GitOps object or Canary: `Kind/ns/name` and its state in brackets:
/// `[Ready=True 6.1.0]` (the revision when known) for Flux's kinds, `[Progressing weight=20]`
/// for a Canary.
pub fn state_text(r: &ObjectRef, s: &Summary) -> String {
    match s.kind {
        Kind::Canary => {
            let phase = if s.phase.is_empty() {
                "Initializing"
            } else {
                &s.phase
            };
            format!("{} [{phase} weight={}]", r.text(), s.weight.unwrap_or(0))
        }
        _ if s.revision.is_empty() => format!("{} [Ready={}]", r.text(), s.ready),
        _ => format!("{} [Ready={} {}]", r.text(), s.ready, s.revision),
    }
}

/// The objects a Canary generates and drives, as Flagger names them: its target, the
/// `<target>-primary` workload, and the apex, `-canary` and `-primary` Services (apex name
/// `spec.service.name`, default the target's). A Service target (no workloads) gives only the
/// target.
pub fn canary_objects(c: &Canary) -> Vec<ObjectRef> {
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    let t = &c.spec.target_ref;
    let group = t
        .api_version
        .as_deref()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("apps", |(g, _)| g);
    let obj = |group: &str, kind: &str, name: String| ObjectRef {
        group: group.into(),
        kind: kind.into(),
        namespace: ns.clone(),
        name,
    };
    let mut out = vec![obj(group, &t.kind, t.name.clone())];
    if matches!(t.kind.as_str(), "Deployment" | "DaemonSet") {
        out.push(obj(group, &t.kind, format!("{}-primary", t.name)));
        let apex = c
            .spec
            .service
            .name
            .clone()
            .unwrap_or_else(|| t.name.clone());
        for suffix in ["", "-canary", "-primary"] {
            out.push(obj("", "Service", format!("{apex}{suffix}")));
        }
    }
    out
}

/// The tree as text, as `flux tree` prints it: the root's line, then each child prefixed by
/// `├── ` (`└── ` for the last) under continuation columns of `│   ` (or four spaces below a
/// last child). Each line ends in `\n`.
pub fn render(root: &Node) -> String {
    let mut out = format!("{}\n", root.text);
    render_items(&root.items, "", &mut out);
    out
}

fn render_items(items: &[Node], prefix: &str, out: &mut String) {
    for (i, n) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        out.push_str(prefix);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(&n.text);
        out.push('\n');
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        render_items(&n.items, &deeper, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_ids_parse_as_flux_writes_them() {
        let r = parse_inventory_id("apps_web_apps_Deployment").unwrap();
        assert_eq!(r.text(), "Deployment/apps/web");
        assert_eq!(r.group, "apps");
        let ns = parse_inventory_id("_apps__Namespace").unwrap();
        assert_eq!(
            (ns.text(), ns.group.as_str()),
            ("Namespace/apps".into(), "")
        );
        let role = parse_inventory_id("_system__controller_rbac.authorization.k8s.io_ClusterRole")
            .unwrap();
        assert_eq!(role.name, "system:controller");
        assert_eq!(parse_inventory_id("apps_web"), None);
        let hr = parse_inventory_id("apps_web_helm.toolkit.fluxcd.io_HelmRelease").unwrap();
        assert_eq!(hr.pennant_kind(), Some(Kind::HelmRelease));
        let cd = parse_inventory_id("apps_web_flagger.app_Canary").unwrap();
        assert_eq!(cd.pennant_kind(), Some(Kind::Canary));
        let other = parse_inventory_id("apps_web_example.com_Canary").unwrap();
        assert_eq!(other.pennant_kind(), None, "another group's Canary");
    }

    #[test]
    fn trees_print_as_flux_tree() {
        let root = Node {
            text: "Kustomization/apps/apps".into(),
            items: vec![
                Node {
                    text: "HelmRelease/apps/web".into(),
                    items: vec![
                        Node::leaf("Deployment/apps/web"),
                        Node::leaf("Service/apps/web"),
                    ],
                },
                Node::leaf("ConfigMap/apps/b"),
            ],
        };
        assert_eq!(
            render(&root),
            "Kustomization/apps/apps\n\
             ├── HelmRelease/apps/web\n\
             │   ├── Deployment/apps/web\n\
             │   └── Service/apps/web\n\
             └── ConfigMap/apps/b\n"
        );
    }
}
