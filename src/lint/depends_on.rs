//! `dependsOn` cycles among the Kustomizations and HelmReleases of the repository, found by the
//! controllers' own search ([`crate::gitops::depends_on::find_cycle`]): none of their members
//! would ever apply. A `dependsOn` entry names a Kustomization from a Kustomization and a
//! HelmRelease from a HelmRelease unless its `kind` says otherwise (pennant's extension); its
//! namespace defaults to its object's. An object without `metadata.namespace` is in namespace
//! `""` here (an overlay may set it). Each cycle is reported once, at the `dependsOn` entry of
//! its first member in file order.

use std::collections::{BTreeMap, BTreeSet};

use super::{Doc, Findings, Repo};
use crate::api::{helm_release, kustomization};
use crate::gitops::depends_on::{DependencyId, DependencyKind, find_cycle};

fn kind_of(d: &Doc) -> Option<DependencyKind> {
    if d.is(kustomization::GROUP, "Kustomization") {
        Some(DependencyKind::Kustomization)
    } else if d.is(helm_release::GROUP, "HelmRelease") {
        Some(DependencyKind::HelmRelease)
    } else {
        None
    }
}

pub fn check(repo: &Repo, out: &mut Findings) {
    // node → (its doc, the dependsOn entries: (target, index))
    let mut nodes: Vec<(DependencyId, &Doc, Vec<DependencyId>)> = vec![];
    for d in &repo.docs {
        let Some(kind) = kind_of(d) else { continue };
        let me = DependencyId::new(kind, d.namespace().unwrap_or(""), d.name());
        let deps = d.json["spec"]["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e["name"].as_str()?;
                let kind = match e["kind"].as_str() {
                    Some("Kustomization") => DependencyKind::Kustomization,
                    Some("HelmRelease") => DependencyKind::HelmRelease,
                    _ => kind,
                };
                Some(DependencyId::of_reference(
                    &me,
                    kind,
                    e["namespace"].as_str(),
                    name,
                ))
            })
            .collect();
        nodes.push((me, d, deps));
    }
    let graph: BTreeMap<DependencyId, Vec<DependencyId>> = nodes
        .iter()
        .map(|(id, _, deps)| (id.clone(), deps.clone()))
        .collect();
    let mut reported: BTreeSet<BTreeSet<DependencyId>> = BTreeSet::new();
    for (me, d, deps) in &nodes {
        let Some(cycle) = find_cycle(&graph, me) else {
            continue;
        };
        let Some(at) = cycle.0.iter().position(|n| n == me) else {
            continue;
        };
        // the cycle from `me`: me -> ... -> me
        let path: Vec<&DependencyId> = cycle.0[at..cycle.0.len() - 1]
            .iter()
            .chain(&cycle.0[..at])
            .chain(std::iter::once(me))
            .collect();
        if !reported.insert(path.iter().map(|n| (*n).clone()).collect()) {
            continue;
        }
        let entry = deps.iter().position(|t| t == path[1]).unwrap_or(0);
        let line = d
            .node
            .at(&["spec", "dependsOn"])
            .and_then(|s| s.items().get(entry))
            .map_or_else(|| d.line(&["spec", "dependsOn"]), |n| n.line);
        out.push(
            d.file,
            line,
            format!(
                "dependsOn cycle: {} (none of them will ever be applied)",
                render(&path)
            ),
        );
    }
}

/// `a -> b -> a`, with `namespace/` when written and the kind when the cycle mixes kinds.
fn render(path: &[&DependencyId]) -> String {
    let mixed = path.iter().any(|n| n.kind != path[0].kind);
    path.iter()
        .map(|n| {
            let id = if n.namespace.is_empty() {
                n.name.clone()
            } else {
                n.to_string()
            };
            if mixed {
                format!("{}/{id}", n.kind.as_str())
            } else {
                id
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_one;
    use super::*;

    fn ks(name: &str, deps: &[&str]) -> String {
        let deps: String = deps.iter().map(|d| format!("    - name: {d}\n")).collect();
        format!(
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\nspec:\n  dependsOn:\n{deps}"
        )
    }

    #[test]
    fn a_cycle_is_reported_once_at_its_first_member() {
        let text = [
            ks("a", &["b"]),
            ks("b", &["c"]),
            ks("c", &["a"]),
            ks("d", &["a"]),
        ]
        .concat();
        assert_eq!(
            check_one(&text, check),
            ["8: dependsOn cycle: a -> b -> c -> a (none of them will ever be applied)"]
        );
    }

    #[test]
    fn a_chain_is_not_a_cycle_and_a_self_dependency_is() {
        let chain = [ks("a", &["b"]), ks("b", &["c"]), ks("c", &[])].concat();
        assert_eq!(check_one(&chain, check), Vec::<String>::new());
        let myself = [ks("x", &["y", "x"]), ks("y", &[])].concat();
        assert_eq!(
            check_one(&myself, check),
            ["9: dependsOn cycle: x -> x (none of them will ever be applied)"]
        );
    }

    #[test]
    fn mixed_kinds_name_the_kind() {
        let hr = "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: db\nspec:\n  dependsOn:\n    - name: infra\n      kind: Kustomization\n";
        let text = format!(
            "{hr}{}",
            ks("infra", &[]).replace(
                "  dependsOn:\n",
                "  dependsOn:\n    - name: db\n      kind: HelmRelease\n",
            )
        );
        assert_eq!(
            check_one(&text, check),
            [
                "8: dependsOn cycle: HelmRelease/db -> Kustomization/infra -> HelmRelease/db (none of them will ever be applied)"
            ]
        );
    }
}
