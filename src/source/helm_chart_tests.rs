//! Tables for the HelmChart decisions: plans, Flux's revisions, reuse of the stored chart, and
//! the status after each kind of attempt under Flux's condition checker.

use super::*;
use crate::gitops::conditions::{TRUE, check, get, types};
use k8s_openapi::jiff::Timestamp;

fn chart(extra_spec: &str) -> HelmChart {
    let mut c: HelmChart = serde_saphyr::from_str(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {{name: podinfo, namespace: ns, generation: 4, finalizers: [finalizers.fluxcd.io]}}\nspec:\n  chart: podinfo\n  interval: 1m\n  sourceRef: {{kind: HelmRepository, name: charts}}\n{extra_spec}"
    ))
    .expect("yaml");
    c.metadata.generation.get_or_insert(1);
    c
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

fn plan(c: &HelmChart) -> ChartPlan {
    match decide(c) {
        Plan::Fetch(p) => p,
        other => panic!("expected a build, got {other:?}"),
    }
}

fn artifact(rev: &str) -> Artifact {
    Artifact {
        path: format!("helmchart/ns/podinfo/{}", artifact_file("podinfo", rev)),
        url: "http://h/x".into(),
        revision: rev.into(),
        digest: "sha256:aa".into(),
        last_update_time: now(),
        size: Some(1),
        metadata: None,
    }
}

fn checked(c: &HelmChart, out: &Outcome) {
    let problems = check(
        &out.status.conditions,
        HELM_CHART_READY.negative_polarity,
        c.metadata.generation.unwrap(),
        out.status.observed_generation.unwrap(),
    );
    assert!(problems.is_empty(), "{problems:?}\n{:#?}", out.status);
}

#[test]
fn plans_and_stalls() {
    let p = plan(&chart(""));
    assert_eq!(p.source, ChartSource::HelmRepository("charts".into()));
    assert_eq!(p.version, "*", "latest stable by default");
    let p = plan(&chart(
        "  version: '>=6.0 <7.0'\n  valuesFiles: [values.yaml, prod.yaml]\n  ignoreMissingValuesFiles: true\n",
    ));
    assert_eq!(p.version, ">=6.0 <7.0");
    assert_eq!(p.values_files, ["values.yaml", "prod.yaml"]);
    assert!(p.ignore_missing_values_files);
    let mut git = chart("  reconcileStrategy: Revision\n");
    git.spec.source_ref.kind = "GitRepository".into();
    let p = plan(&git);
    assert_eq!(p.source, ChartSource::GitRepository("charts".into()));
    assert!(p.on_revision);
    let mut bucket = chart("");
    bucket.spec.source_ref.kind = "Bucket".into();
    assert!(matches!(decide(&bucket), Plan::Stall { .. }));
    assert!(matches!(
        decide(&chart("  verify: {provider: cosign}\n")),
        Plan::Stall { .. }
    ));
    let mut gone = chart("");
    gone.metadata.finalizers = None;
    assert_eq!(decide(&gone), Plan::AddFinalizer);
}

#[test]
fn revisions_as_flux() {
    let repo = plan(&chart(""));
    assert_eq!(chart_revision(&repo, "6.5.0", 4, "sha256:abc"), "6.5.0");
    let values = plan(&chart("  valuesFiles: [prod.yaml]\n"));
    assert_eq!(chart_revision(&values, "6.5.0", 4, "sha256:abc"), "6.5.0+4");
    let mut git = chart("  reconcileStrategy: Revision\n");
    git.spec.source_ref.kind = "GitRepository".into();
    let rev = "main@sha1:0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        chart_revision(&plan(&git), "1.0.0", 4, rev),
        "1.0.0+0123456789ab"
    );
    git.spec.reconcile_strategy = Some("ChartVersion".into());
    assert_eq!(chart_revision(&plan(&git), "1.0.0", 4, rev), "1.0.0");
    assert_eq!(artifact_file("podinfo", "6.5.0+4"), "podinfo-6.5.0+4.tgz");
    assert_eq!(
        build_summary(false, "podinfo", "6.5.0", &[]),
        "pulled 'podinfo' chart with version '6.5.0'"
    );
    assert_eq!(
        build_summary(true, "app", "1.0.0+4", &["a.yaml".into(), "b.yaml".into()]),
        "packaged 'app' chart with version '1.0.0+4' and merged values files [a.yaml b.yaml]"
    );
}

#[test]
fn the_stored_chart_is_reused_only_for_the_same_revision_name_and_values() {
    let mut c = chart("");
    let a = artifact("6.5.0");
    assert!(!reusable(&c, Some(&a), "6.5.0"), "no status yet");
    c.status = Some(HelmChartStatus {
        observed_chart_name: Some("podinfo".into()),
        artifact: Some(a.clone()),
        ..Default::default()
    });
    assert!(reusable(&c, Some(&a), "6.5.0"));
    assert!(!reusable(&c, None, "6.5.0"), "file gone");
    assert!(!reusable(&c, Some(&a), "6.6.0"), "a newer version");
    c.spec.values_files = vec!["prod.yaml".into()];
    assert!(!reusable(&c, Some(&a), "6.5.0"), "values files changed");
}

#[test]
fn statuses_say_flux_build_summary() {
    let c = chart("");
    let built = Built {
        reason: PULLED,
        summary: build_summary(false, "podinfo", "6.5.0", &[]),
        source_revision: "sha256:idx".into(),
    };
    let out = outcome(
        &c,
        None,
        Attempt::Stored {
            artifact: artifact("6.5.0"),
            url: "http://h/helmchart/ns/podinfo/latest.tar.gz".into(),
            built: built.clone(),
        },
        &now(),
    );
    checked(&c, &out);
    let ready = get(&out.status.conditions, types::READY).unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        (
            TRUE,
            "ChartPullSucceeded",
            "pulled 'podinfo' chart with version '6.5.0'"
        )
    );
    assert_eq!(out.status.observed_chart_name.as_deref(), Some("podinfo"));
    assert_eq!(
        out.status.observed_source_artifact_revision.as_deref(),
        Some("sha256:idx")
    );
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].reason, "ChartPullSucceeded");

    let mut c2 = c.clone();
    c2.status = Some(out.status.clone());
    let same = outcome(
        &c2,
        Some(artifact("6.5.0")),
        Attempt::Unchanged { built },
        &now(),
    );
    checked(&c2, &same);
    assert!(same.notices.is_empty());

    let failed = outcome(
        &c2,
        Some(artifact("6.5.0")),
        Attempt::Failed {
            condition: types::BUILD_FAILED,
            reason: build_reasons::INVALID_CHART_REFERENCE.into(),
            message: "no 'podinfo' chart with version matching '>=9'".into(),
        },
        &now(),
    );
    checked(&c2, &failed);
    let ready = get(&failed.status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidChartReference")
    );
    assert!(
        failed.status.artifact.is_some(),
        "the last chart stays served"
    );
}

#[test]
fn an_oci_repository_path_is_a_source_with_flux_git_revisions() {
    let mut oci = chart("  reconcileStrategy: Revision\n");
    oci.spec.source_ref.kind = "OCIRepository".into();
    oci.spec.chart = "charts/app".into();
    let p = plan(&oci);
    assert_eq!(p.source, ChartSource::OCIRepository("charts".into()));
    assert_eq!(p.source.kind(), "OCIRepository");
    assert_eq!(p.chart, "charts/app");
    let rev = "v1.2.0@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    assert_eq!(chart_revision(&p, "1.0.0", 4, rev), "1.0.0+fedcba987654");
    oci.spec.reconcile_strategy = None;
    assert_eq!(chart_revision(&plan(&oci), "1.0.0", 4, rev), "1.0.0");
    // an unknown kind still stalls, naming the supported ones
    oci.spec.source_ref.kind = "Bucket".into();
    let Plan::Stall { message, .. } = decide(&oci) else {
        panic!("Bucket is not supported")
    };
    assert!(message.contains("OCIRepository"), "{message}");
}

#[test]
fn a_chart_from_a_registry_has_no_observed_source_revision() {
    // a `type: oci` HelmRepository has no artifact: Flux leaves the field unset
    let c = chart("  version: '>=1.0 <2.0'\n");
    let built = Built {
        reason: PULLED,
        summary: build_summary(false, "podinfo", "1.2.0", &[]),
        source_revision: String::new(),
    };
    let out = outcome(
        &c,
        None,
        Attempt::Stored {
            artifact: artifact("1.2.0"),
            url: "http://h/helmchart/ns/podinfo/latest.tar.gz".into(),
            built,
        },
        &now(),
    );
    checked(&c, &out);
    assert_eq!(out.status.observed_source_artifact_revision, None);
    assert_eq!(
        out.status.artifact.as_ref().map(|a| a.revision.as_str()),
        Some("1.2.0")
    );
    let failed = outcome(
        &c,
        None,
        Attempt::Failed {
            condition: types::BUILD_FAILED,
            reason: build_reasons::DEPENDENCY_BUILD_ERROR.into(),
            message: "dependency build error: failed to add remote dependency 'lib': x".into(),
        },
        &now(),
    );
    checked(&c, &failed);
    let ready = get(&failed.status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "DependencyBuildError")
    );
}
