//! Facts from Flux's kustomize-controller `checkDependencies` and its dependsOn suite, plus the
//! cycle of flux.md §8.6 (kustomize-controller#1712).

use super::*;
use serde_json::json;

fn ks(
    name: &str,
    generation: i64,
    observed: i64,
    ready: &str,
    source: &str,
    applied: &str,
) -> Value {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system", "generation": generation},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": source}},
        "status": {
            "observedGeneration": observed,
            "lastAppliedRevision": applied,
            "conditions": [{"type": "Ready", "status": ready}],
        },
    })
}

fn id(kind: DependencyKind, name: &str) -> DependencyId {
    DependencyId::new(kind, "flux-system", name)
}

/// The caller's CEL evaluator stands in here as a rule on `dep`'s label `ok` (the real one,
/// `health::expr::ReadyExpr`, is tested with this module from `health`).
fn label_eval(expr: &str, _this: &Value, dep: &Value) -> Result<bool, String> {
    match expr {
        "label" => Ok(dep["metadata"]["labels"]["ok"] == "yes"),
        _ => Err(format!("failed to evaluate the CEL expression '{expr}'")),
    }
}

/// name, the dependency's object, its `readyExpr`, `additive`, the verdict.
type Case = (
    &'static str,
    Option<Value>,
    Option<&'static str>,
    bool,
    Result<(), &'static str>,
);

const REV: &str = "main@sha1:2222";

#[test]
fn readiness_table() {
    let apps = ks("apps", 1, 1, "Unknown", "flux-system", "");
    let other_source = |g, o, r: &str| ks("infra", g, o, r, "infra-repo", "");
    let same_source = |applied: &str| ks("infra", 1, 1, "True", "flux-system", applied);
    let mut labelled = ks("infra", 2, 1, "False", "infra-repo", "");
    labelled["metadata"]["labels"] = json!({"ok": "yes"});
    let cases: Vec<Case> = vec![
        (
            "missing",
            None,
            None,
            false,
            Err(
                "dependency 'flux-system/infra' not found: kustomizations.kustomize.toolkit.fluxcd.io \"infra\" not found",
            ),
        ),
        (
            "ready",
            Some(other_source(3, 3, "True")),
            None,
            false,
            Ok(()),
        ),
        (
            "not ready",
            Some(other_source(3, 3, "False")),
            None,
            false,
            Err("dependency 'flux-system/infra' is not ready"),
        ),
        (
            "generation not observed",
            Some(other_source(3, 2, "True")),
            None,
            false,
            Err("dependency 'flux-system/infra' is not ready"),
        ),
        (
            "same source, current revision applied",
            Some(same_source(REV)),
            None,
            false,
            Ok(()),
        ),
        (
            "same source, older revision applied",
            Some(same_source("main@sha1:1111")),
            None,
            false,
            Err("dependency 'flux-system/infra' revision is not up to date"),
        ),
        (
            "readyExpr replaces the Ready rule",
            Some(labelled.clone()),
            Some("label"),
            false,
            Ok(()),
        ),
        (
            "readyExpr is additive with the feature gate",
            Some(labelled.clone()),
            Some("label"),
            true,
            Err("dependency 'flux-system/infra' is not ready"),
        ),
        (
            "readyExpr false",
            Some(other_source(1, 1, "True")),
            Some("label"),
            false,
            Err("dependency 'flux-system/infra' is not ready according to readyExpr eval"),
        ),
        (
            "readyExpr error",
            Some(other_source(1, 1, "True")),
            Some("bad"),
            false,
            Err("failed to evaluate the CEL expression 'bad'"),
        ),
    ];
    for (name, object, ready_expr, additive, want) in cases {
        let dep = Dependency {
            id: id(DependencyKind::Kustomization, "infra"),
            object: object.as_ref(),
            ready_expr,
        };
        let got = check_dependency(&apps, Some(REV), &dep, &label_eval, additive);
        assert_eq!(got, want.map_err(String::from), "case {name}");
    }
}

#[test]
fn helm_release_dependency_has_no_same_source_rule() {
    // Beyond Flux (flux2#3364): a Kustomization waits on a HelmRelease by Ready and generation.
    let apps = ks("apps", 1, 1, "Unknown", "flux-system", "");
    let hr = json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "ingress", "namespace": "flux-system", "generation": 4},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
        "status": {"observedGeneration": 4, "conditions": [{"type": "Ready", "status": "True"}]},
    });
    let dep = Dependency {
        id: id(DependencyKind::HelmRelease, "ingress"),
        object: Some(&hr),
        ready_expr: None,
    };
    assert_eq!(
        check_dependency(&apps, Some(REV), &dep, &label_eval, false),
        Ok(())
    );
    let mut stale = hr.clone();
    stale["status"]["observedGeneration"] = json!(3);
    let dep = Dependency {
        object: Some(&stale),
        ..dep
    };
    assert_eq!(
        check_dependency(&apps, Some(REV), &dep, &label_eval, false),
        Err("dependency 'flux-system/ingress' is not ready".into())
    );
}

#[test]
fn first_unready_dependency_is_reported() {
    let apps = ks("apps", 1, 1, "Unknown", "flux-system", "");
    let ready = ks("a", 1, 1, "True", "other", "");
    let deps = [
        Dependency {
            id: id(DependencyKind::Kustomization, "a"),
            object: Some(&ready),
            ready_expr: None,
        },
        Dependency {
            id: id(DependencyKind::Kustomization, "b"),
            object: None,
            ready_expr: None,
        },
        Dependency {
            id: id(DependencyKind::Kustomization, "c"),
            object: None,
            ready_expr: None,
        },
    ];
    assert_eq!(
        check_dependencies(&apps, Some(REV), &deps, &label_eval, false),
        Err("dependency 'flux-system/b' not found: kustomizations.kustomize.toolkit.fluxcd.io \"b\" not found".into())
    );
}

#[test]
fn namespace_of_a_reference_defaults_to_the_owner() {
    let owner = id(DependencyKind::Kustomization, "apps");
    assert_eq!(
        DependencyId::of_reference(&owner, DependencyKind::Kustomization, None, "infra")
            .to_string(),
        "flux-system/infra"
    );
    assert_eq!(
        DependencyId::of_reference(
            &owner,
            DependencyKind::HelmRelease,
            Some("ingress"),
            "nginx"
        )
        .to_string(),
        "ingress/nginx"
    );
}

fn graph(edges: &[(&DependencyId, &[&DependencyId])]) -> BTreeMap<DependencyId, Vec<DependencyId>> {
    edges
        .iter()
        .map(|(from, to)| ((*from).clone(), to.iter().map(|t| (*t).clone()).collect()))
        .collect()
}

#[test]
fn cycles_are_found_and_named() {
    let k = DependencyKind::Kustomization;
    let (a, b, c, d) = (id(k, "seq-a"), id(k, "seq-b"), id(k, "c"), id(k, "d"));
    // flux.md §8.6: seq-a <-> seq-b.
    let g = graph(&[(&a, &[&b]), (&b, &[&a])]);
    assert_eq!(
        find_cycle(&g, &a).unwrap().to_string(),
        "dependency cycle: flux-system/seq-a -> flux-system/seq-b -> flux-system/seq-a"
    );
    // d waits on a cycle it is not part of: reported too.
    let g = graph(&[(&d, &[&c]), (&c, &[&b]), (&b, &[&a]), (&a, &[&b])]);
    assert_eq!(
        find_cycle(&g, &d).unwrap().to_string(),
        "dependency cycle: flux-system/seq-b -> flux-system/seq-a -> flux-system/seq-b"
    );
    // A self-dependency.
    let g = graph(&[(&c, &[&c])]);
    assert_eq!(
        find_cycle(&g, &c).unwrap().to_string(),
        "dependency cycle: flux-system/c -> flux-system/c"
    );
    // A diamond is no cycle.
    let g = graph(&[(&d, &[&b, &c]), (&b, &[&a]), (&c, &[&a])]);
    assert_eq!(find_cycle(&g, &d), None);
    // Across kinds the kinds are named.
    let hr = id(DependencyKind::HelmRelease, "ingress");
    let g = graph(&[(&a, &[&hr]), (&hr, &[&a])]);
    assert_eq!(
        find_cycle(&g, &a).unwrap().to_string(),
        "dependency cycle: Kustomization/flux-system/seq-a -> HelmRelease/flux-system/ingress -> Kustomization/flux-system/seq-a"
    );
}

/// Waves gated by metrics (pennant): a dependency whose Canary analyses its revision is
/// `Ready=Unknown` `CanaryProgressing` and holds its dependents, naming the analysis; one whose
/// Canary rolled the revision back holds them too; promoted (`Ready=True`, the revision applied)
/// it lets them go. Same source: a dependency still analysing has not recorded the revision as
/// applied (`lastAppliedRevision` moves on promotion only).
#[test]
fn a_dependency_waiting_for_its_canary_holds_the_wave() {
    let production = ks("production", 1, 1, "Unknown", "fleet", "");
    let staging = |status: &str, reason: &str, message: &str, applied: &str| {
        let mut s = ks("staging", 4, 4, status, "fleet", applied);
        s["status"]["conditions"][0]["reason"] = json!(reason);
        s["status"]["conditions"][0]["message"] = json!(message);
        s
    };
    let waiting = "waiting for the canary analysis of revision main@sha1:2222: Canary \
                   staging/podinfo Progressing, weight 20%";
    let cases = [
        (
            staging("Unknown", "CanaryProgressing", waiting, "main@sha1:1111"),
            Err(format!(
                "dependency 'flux-system/staging' is not ready (CanaryProgressing): {waiting}"
            )),
        ),
        (
            staging(
                "False",
                "CanaryFailed",
                "revision main@sha1:2222 rolled back",
                "main@sha1:1111",
            ),
            Err(
                "dependency 'flux-system/staging' is not ready (CanaryFailed): revision \
                 main@sha1:2222 rolled back"
                    .to_string(),
            ),
        ),
        (
            staging(
                "True",
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:2222",
                REV,
            ),
            Ok(()),
        ),
    ];
    for (dep, want) in cases {
        let d = Dependency {
            id: id(DependencyKind::Kustomization, "staging"),
            object: Some(&dep),
            ready_expr: None,
        };
        assert_eq!(
            check_dependency(&production, Some(REV), &d, &label_eval, false),
            want
        );
    }
}
