//! Facts from Flux's documentation (kustomize-controller's `healthCheckExprs`, the CEL
//! cheatsheet, RFC-0009) and `fluxcd/pkg` `runtime/cel` tests.

use super::*;
use crate::health::kstatus::tests::obj;

fn check(
    api_version: &str,
    kind: &str,
    current: &str,
    in_progress: Option<&str>,
    failed: Option<&str>,
) -> CustomHealthCheck {
    CustomHealthCheck {
        api_version: api_version.into(),
        kind: (!kind.is_empty()).then(|| kind.into()),
        current: current.into(),
        in_progress: in_progress.map(Into::into),
        failed: failed.map(Into::into),
    }
}

fn now() -> Timestamp {
    "2026-12-05T12:00:00Z".parse().unwrap()
}

/// RFC-0009's cert-manager Certificate rule (Issuing, then Ready, both at the current generation).
fn certificate() -> CustomHealthCheck {
    check(
        "cert-manager.io/v1",
        "Certificate",
        "status.conditions.filter(e, e.type == 'Ready').all(e, e.observedGeneration == metadata.generation && e.status == 'True')",
        Some(
            "status.conditions.filter(e, e.type == 'Issuing').all(e, e.observedGeneration == metadata.generation && e.status == 'True')",
        ),
        Some(
            "status.conditions.filter(e, e.type == 'Ready').all(e, e.observedGeneration == metadata.generation && e.status == 'False')",
        ),
    )
}

#[test]
fn certificate_table() {
    let exprs = HealthExprs::compile(&[certificate()]).unwrap();
    let cert = |conds: &str| {
        obj(&format!(
            "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {{name: c, namespace: ns, generation: 2}}\nstatus: {{conditions: {conds}}}"
        ))
    };
    let cases = [
        (
            "issuing",
            "[{type: Issuing, status: 'True', observedGeneration: 2}, {type: Ready, status: 'False', observedGeneration: 2}]",
            Status::InProgress,
        ),
        (
            "ready",
            "[{type: Issuing, status: 'False', observedGeneration: 2}, {type: Ready, status: 'True', observedGeneration: 2}]",
            Status::Current,
        ),
        // `filter` on no Issuing condition is empty and `all` of nothing is true (cel-go too):
        // RFC-0009's `inProgress` then holds, so a Certificate without an Issuing condition
        // reads InProgress, as in Flux.
        (
            "ready without issuing condition",
            "[{type: Ready, status: 'True', observedGeneration: 2}]",
            Status::InProgress,
        ),
        (
            "failed",
            "[{type: Issuing, status: 'False', observedGeneration: 2}, {type: Ready, status: 'False', observedGeneration: 2}]",
            Status::Failed,
        ),
        // Ready from an older generation: none of the three holds → InProgress.
        (
            "stale ready",
            "[{type: Ready, status: 'True', observedGeneration: 1}, {type: Issuing, status: 'False', observedGeneration: 2}]",
            Status::InProgress,
        ),
    ];
    for (name, conds, want) in cases {
        assert_eq!(
            exprs.health(&cert(conds), now()).status,
            want,
            "case {name}"
        );
    }
}

#[test]
fn sealed_secret_and_helm_release_rules() {
    let exprs = HealthExprs::compile(&[
        check(
            "bitnami.com/v1alpha1",
            "SealedSecret",
            "status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'True')",
            None,
            Some("status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False')"),
        ),
        check(
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')",
            None,
            Some("status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')"),
        ),
    ])
    .unwrap();
    let ss = |s: &str| {
        obj(&format!(
            "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {{name: s}}\nstatus: {{conditions: [{{type: Synced, status: '{s}'}}]}}"
        ))
    };
    assert_eq!(exprs.health(&ss("True"), now()).status, Status::Current);
    assert_eq!(exprs.health(&ss("False"), now()).status, Status::Failed);
    let hr = |s: &str| {
        obj(&format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: h, generation: 3}}\nstatus: {{observedGeneration: 3, conditions: [{{type: Ready, status: '{s}'}}]}}"
        ))
    };
    assert_eq!(exprs.health(&hr("True"), now()).status, Status::Current);
    assert_eq!(exprs.health(&hr("False"), now()).status, Status::Failed);
    // Flux's order puts `failed` before `current`: an empty condition list makes both `all`s
    // true, and the object reads Failed.
    let empty = obj(
        "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {name: s}\nstatus: {conditions: []}",
    );
    assert_eq!(exprs.health(&empty, now()).status, Status::Failed);
}

#[test]
fn generation_not_observed_is_in_progress_without_evaluating() {
    let exprs =
        HealthExprs::compile(&[check("example.com/v1", "Widget", "true", None, None)]).unwrap();
    let w = obj(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, generation: 2}\nstatus: {observedGeneration: 1}",
    );
    assert_eq!(exprs.health(&w, now()).status, Status::InProgress);
    let w = obj(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, generation: 2}\nstatus: {observedGeneration: 2}",
    );
    assert_eq!(exprs.health(&w, now()).status, Status::Current);
}

#[test]
fn none_true_is_in_progress() {
    let exprs = HealthExprs::compile(&[check(
        "example.com/v1",
        "Widget",
        "false",
        Some("false"),
        Some("false"),
    )])
    .unwrap();
    let w = obj("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}");
    assert_eq!(exprs.health(&w, now()).status, Status::InProgress);
}

#[test]
fn evaluation_error_is_unknown_with_flux_message() {
    let exprs = HealthExprs::compile(&[check(
        "example.com/v1",
        "Widget",
        "status.ready == true",
        None,
        None,
    )])
    .unwrap();
    let no_status = obj("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}");
    let h = exprs.health(&no_status, now());
    assert_eq!(h.status, Status::Unknown);
    assert!(
        h.message
            .starts_with("failed to evaluate the CEL expression 'status.ready == true': "),
        "{}",
        h.message
    );
    let exprs = HealthExprs::compile(&[check(
        "example.com/v1",
        "Widget",
        "metadata.name",
        None,
        None,
    )])
    .unwrap();
    let h = exprs.health(&no_status, now());
    assert_eq!(
        (h.status, h.message.as_str()),
        (
            Status::Unknown,
            "failed to evaluate CEL expression as boolean: 'metadata.name'"
        )
    );
}

#[test]
fn kind_rule_wins_over_group_rule_and_others_fall_back_to_kstatus() {
    let exprs = HealthExprs::compile(&[
        check("example.com/v1", "", "false", None, Some("true")),
        check("example.com/v1", "Widget", "true", None, None),
    ])
    .unwrap();
    let widget = obj("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}");
    let gadget = obj("apiVersion: example.com/v2\nkind: Gadget\nmetadata: {name: g}");
    assert_eq!(exprs.health(&widget, now()).status, Status::Current);
    assert_eq!(exprs.health(&gadget, now()).status, Status::Failed);
    // Not in the group: kstatus (a Deployment with no status is InProgress "Replicas: 0/1").
    let dep = obj("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}");
    assert_eq!(
        exprs.health(&dep, now()),
        Health::new(Status::InProgress, "Replicas: 0/1")
    );
}

#[test]
fn invalid_rules_are_rejected_at_validation_with_flux_messages() {
    let err = |checks: &[CustomHealthCheck]| HealthExprs::compile(checks).unwrap_err().0;
    assert_eq!(
        err(&[check("example.com/v1", "Widget", "", None, None)]),
        "failed to create custom status evaluator for healthchecks[0]: expression Current not specified"
    );
    let m = err(&[
        certificate(),
        check("example.com/v1", "Widget", "true", None, Some("status.(")),
    ]);
    assert!(
        m.starts_with("failed to create custom status evaluator for healthchecks[1]: failed to parse the expression Failed: failed to parse the CEL expression 'status.(': "),
        "{m}"
    );
    assert_eq!(
        err(&[
            certificate(),
            check("cert-manager.io/v1beta1", "Certificate", "true", None, None)
        ]),
        "duplicate custom health check for GroupKind Certificate.cert-manager.io at healthchecks[1]"
    );
}

#[test]
fn ready_expr_reads_self_and_dep() {
    let e = ReadyExpr::parse(
        "dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True') && dep.metadata.labels.tier == self.metadata.labels.tier",
    )
    .unwrap();
    let this = obj("metadata: {name: apps, labels: {tier: web}}");
    let ready = obj(
        "metadata: {name: infra, labels: {tier: web}}\nstatus: {conditions: [{type: Ready, status: 'True'}]}",
    );
    let other_tier = obj(
        "metadata: {name: infra, labels: {tier: db}}\nstatus: {conditions: [{type: Ready, status: 'True'}]}",
    );
    assert_eq!(e.evaluate(&this, &ready), Ok(true));
    assert_eq!(e.evaluate(&this, &other_tier), Ok(false));
    let not_bool = ReadyExpr::parse("dep.metadata.name").unwrap();
    assert_eq!(
        not_bool.evaluate(&this, &ready),
        Err("failed to evaluate CEL expression as boolean: 'dep.metadata.name'".into())
    );
}

#[test]
fn ready_expr_with_an_undeclared_variable_is_invalid() {
    let err = ReadyExpr::parse("status.ready == true").unwrap_err();
    assert_eq!(
        err.0,
        "failed to parse the CEL expression 'status.ready == true': undeclared reference to 'status'"
    );
    assert!(ReadyExpr::parse("dep.status.(").is_err());
}

#[test]
fn ready_expr_drives_depends_on() {
    use crate::gitops::depends_on::{Dependency, DependencyId, DependencyKind, check_dependency};
    let this = obj(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux-system}\nspec: {sourceRef: {kind: GitRepository, name: apps}}",
    );
    // sylva-core's ratchet: the dependency reconciled once at its generation, whatever Ready says.
    let dep = obj(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: infra, namespace: flux-system, generation: 2}\nspec: {sourceRef: {kind: GitRepository, name: infra}}\nstatus: {observedGeneration: 2, conditions: [{type: Ready, status: 'Unknown'}]}",
    );
    let d = |expr| Dependency {
        id: DependencyId::new(DependencyKind::Kustomization, "flux-system", "infra"),
        object: Some(&dep),
        ready_expr: Some(expr),
    };
    let ratchet = "dep.metadata.generation == dep.status.observedGeneration";
    assert_eq!(
        check_dependency(&this, None, &d(ratchet), &eval_ready_expr, false),
        Ok(())
    );
    assert_eq!(
        check_dependency(&this, None, &d(ratchet), &eval_ready_expr, true),
        Err("dependency 'flux-system/infra' is not ready".into())
    );
    assert_eq!(
        check_dependency(
            &this,
            None,
            &d("dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"),
            &eval_ready_expr,
            false
        ),
        Err("dependency 'flux-system/infra' is not ready according to readyExpr eval".into())
    );
}
