//! Fixtures shared by the builders' tests: the compat manifests under `tests/fixtures/`.
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use crate::api::Canary;

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $path
        ))
    };
}

fn with_identity(mut c: Canary) -> Canary {
    c.metadata.uid = Some("6f1c0a4e-0000-4000-8000-000000000001".into());
    c
}

/// The article's Canary (`web-app` in `production`), with a uid as the API server gives it.
pub fn article_canary() -> Canary {
    with_identity(serde_saphyr::from_str(fixture!("article-canary.yaml")).unwrap())
}

/// Flagger's Istio example Canary (`podinfo` in `test`), with a uid.
pub fn flagger_istio_canary() -> Canary {
    with_identity(
        serde_saphyr::from_str(fixture!("flagger/artifacts_examples_istio-canary.yaml")).unwrap(),
    )
}

/// Flagger's e2e podinfo Deployment, placed in namespace `test` as the e2e applies it.
pub fn podinfo_deployment() -> Deployment {
    let mut d: Deployment =
        serde_saphyr::from_str(fixture!("flagger/test_workloads_deployment.yaml")).unwrap();
    d.metadata.namespace = Some("test".into());
    d
}

/// Flagger's kustomize podinfo HorizontalPodAutoscaler, placed in namespace `test`.
pub fn podinfo_hpa() -> HorizontalPodAutoscaler {
    let mut h: HorizontalPodAutoscaler =
        serde_saphyr::from_str(fixture!("flagger/kustomize_podinfo_hpa.yaml")).unwrap();
    h.metadata.namespace = Some("test".into());
    h
}
