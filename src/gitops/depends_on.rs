//! `spec.dependsOn`: when a dependency is ready, and dependency cycles. PURE: objects are the
//! watched copies (JSON), the CEL `readyExpr` evaluator is passed in (it lives in `health`,
//! above this module).
//!
//! Readiness, as Flux's kustomize-controller `checkDependencies` (and helm-controller's), each
//! failure a `DependencyNotReady` message:
//! - the dependency exists ("dependency 'ns/name' not found: kustomizations.kustomize.toolkit.fluxcd.io
//!   \"name\" not found", the API server's NotFound text);
//! - with `readyExpr`, the CEL expression over `self` (the dependent) and `dep` is true
//!   ("dependency 'ns/name' is not ready according to readyExpr eval"; an evaluation error is
//!   passed through). Then, as in Flux, the dependency is ready: `readyExpr` *replaces* the
//!   rules below unless `additive` (Flux's `AdditiveCELDependencyCheck` feature gate);
//! - it has conditions and `status.observedGeneration == metadata.generation`, and `Ready` is
//!   `True` ("dependency 'ns/name' is not ready");
//! - a Kustomization dependency reading the *same source* as the dependent (kind, namespace and
//!   name of `spec.sourceRef`, the namespace defaulting to the object's) must have applied the
//!   source's current revision: `status.lastAppliedRevision` == the revision the dependent is
//!   about to apply ("dependency 'ns/name' revision is not up to date").
//!
//! Beyond Flux: a dependency may be a HelmRelease (flux2#3364), and a cycle is found and named
//! ("dependency cycle: ns/a -> ns/b -> ns/a") instead of waited on forever
//! (kustomize-controller#1712); the caller sets `Stalled` with [`DEPENDENCY_CYCLE`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// Reason of the `Stalled` condition on an object whose dependencies form a cycle (pennant).
pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";

/// The kinds `dependsOn` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DependencyKind {
    Kustomization,
    HelmRelease,
}

impl DependencyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::Kustomization => "Kustomization",
            DependencyKind::HelmRelease => "HelmRelease",
        }
    }

    /// `resource.group`, as the API server names the kind in a NotFound error.
    pub fn resource(self) -> &'static str {
        match self {
            DependencyKind::Kustomization => "kustomizations.kustomize.toolkit.fluxcd.io",
            DependencyKind::HelmRelease => "helmreleases.helm.toolkit.fluxcd.io",
        }
    }
}

/// A node of the dependency graph: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DependencyId {
    pub kind: DependencyKind,
    pub namespace: String,
    pub name: String,
}

impl DependencyId {
    pub fn new(kind: DependencyKind, namespace: &str, name: &str) -> DependencyId {
        DependencyId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The id a `dependsOn` entry of `owner` names: the namespace defaults to the owner's.
    pub fn of_reference(
        owner: &DependencyId,
        kind: DependencyKind,
        namespace: Option<&str>,
        name: &str,
    ) -> DependencyId {
        let namespace = namespace
            .filter(|n| !n.is_empty())
            .unwrap_or(&owner.namespace);
        DependencyId::new(kind, namespace, name)
    }
}

/// `namespace/name`, as Flux's `types.NamespacedName` prints.
impl fmt::Display for DependencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One `dependsOn` entry, resolved.
#[derive(Clone, Debug)]
pub struct Dependency<'a> {
    pub id: DependencyId,
    /// The dependency's latest watched copy; `None` when it does not exist.
    pub object: Option<&'a Value>,
    pub ready_expr: Option<&'a str>,
}

/// Evaluates a `readyExpr` over `self` and `dep` (the caller passes
/// `health::expr::ReadyExpr`); an error is an evaluation failure.
pub type ReadyExprEval<'e> = dyn Fn(&str, &Value, &Value) -> Result<bool, String> + 'e;

/// Whether one dependency is ready for `dependent` (its JSON) about to apply
/// `source_revision` (the current artifact revision of its source). `Err` is Flux's message
/// for the `DependencyNotReady` reason.
pub fn check_dependency(
    dependent: &Value,
    source_revision: Option<&str>,
    dep: &Dependency<'_>,
    eval: &ReadyExprEval<'_>,
    additive: bool,
) -> Result<(), String> {
    let name = &dep.id;
    let Some(obj) = dep.object else {
        return Err(format!(
            "dependency '{name}' not found: {} \"{}\" not found",
            dep.id.kind.resource(),
            dep.id.name
        ));
    };
    if let Some(expr) = dep.ready_expr {
        match eval(expr, dependent, obj) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "dependency '{name}' is not ready according to readyExpr eval"
                ));
            }
            Err(e) => return Err(e),
        }
        if !additive {
            return Ok(());
        }
    }
    let conditions = obj["status"]["conditions"].as_array();
    let observed = obj["status"]["observedGeneration"].as_i64();
    let ready = conditions
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if conditions.is_none_or(Vec::is_empty)
        || observed != obj["metadata"]["generation"].as_i64()
        || !ready
    {
        // pennant: a dependency whose Canary analyses (or rolled back) its revision says so,
        // so a wave waits for the analysis, not for health only (argo-cd#9437)
        let canary = conditions.into_iter().flatten().find(|c| {
            c["type"] == "Ready"
                && (c["reason"] == super::canary_gate::CANARY_PROGRESSING
                    || c["reason"] == super::canary_gate::CANARY_FAILED)
        });
        return Err(match canary {
            Some(c) => format!(
                "dependency '{name}' is not ready ({}): {}",
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            ),
            None => format!("dependency '{name}' is not ready"),
        });
    }
    if dep.id.kind == DependencyKind::Kustomization
        && let (Some(mine), Some(theirs)) = (source_of(dependent), source_of(obj))
        && mine == theirs
        && obj["status"]["lastAppliedRevision"].as_str() != source_revision
    {
        return Err(format!("dependency '{name}' revision is not up to date"));
    }
    Ok(())
}

/// The first dependency of `deps` (in order) that is not ready, as [`check_dependency`].
pub fn check_dependencies(
    dependent: &Value,
    source_revision: Option<&str>,
    deps: &[Dependency<'_>],
    eval: &ReadyExprEval<'_>,
    additive: bool,
) -> Result<(), String> {
    deps.iter()
        .try_for_each(|d| check_dependency(dependent, source_revision, d, eval, additive))
}

/// `(kind, namespace, name)` of `spec.sourceRef`, the namespace defaulting to the object's.
fn source_of(obj: &Value) -> Option<(&str, &str, &str)> {
    let r = &obj["spec"]["sourceRef"];
    let name = r["name"].as_str()?;
    let namespace = r["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| obj["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    Some((r["kind"].as_str().unwrap_or_default(), namespace, name))
}

/// A dependency cycle reachable from a node: the path from the first node of the cycle back
/// to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle: {}", render(.0))]
pub struct Cycle(pub Vec<DependencyId>);

fn render(path: &[DependencyId]) -> String {
    // Kinds are named only when the cycle mixes them.
    let mixed = path.iter().any(|id| id.kind != path[0].kind);
    path.iter()
        .map(|id| {
            if mixed {
                format!("{}/{id}", id.kind.as_str())
            } else {
                id.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The first cycle reachable from `start` in `graph` (node → the nodes it depends on, in
/// `dependsOn` order), or `None`. A node absent from `graph` has no dependencies. Depth-first,
/// so the cycle is found whether or not `start` is on it (a node waiting on a cycle would wait
/// forever too).
pub fn find_cycle(
    graph: &BTreeMap<DependencyId, Vec<DependencyId>>,
    start: &DependencyId,
) -> Option<Cycle> {
    fn visit<'g>(
        graph: &'g BTreeMap<DependencyId, Vec<DependencyId>>,
        node: &'g DependencyId,
        path: &mut Vec<&'g DependencyId>,
        done: &mut BTreeSet<&'g DependencyId>,
    ) -> Option<Cycle> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<DependencyId> = path[at..].iter().map(|n| (*n).clone()).collect();
            cycle.push(node.clone());
            return Some(Cycle(cycle));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    visit(graph, start, &mut Vec::new(), &mut BTreeSet::new())
}

#[cfg(test)]
#[path = "depends_on_tests.rs"]
mod tests;
