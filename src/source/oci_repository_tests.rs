//! Tables for the OCIRepository decisions: plans from objects, when the stored artifact is
//! reused, status after each kind of attempt, and Flux's condition checker over every status.

use super::*;
use crate::api::source::OCILayerSelector;
use crate::gitops::conditions::{TRUE, check, get, types};
use k8s_openapi::jiff::Timestamp;

fn repo(yaml: &str) -> OCIRepository {
    let mut r: OCIRepository = serde_saphyr::from_str(yaml).expect("yaml");
    r.metadata.generation.get_or_insert(1);
    r
}

const BASE: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: app, namespace: ns, generation: 3, finalizers: [finalizers.fluxcd.io]}
spec:
  url: oci://registry.example/ns/app
  interval: 1m
"#;

fn with(extra_spec: &str) -> OCIRepository {
    repo(&format!("{BASE}{extra_spec}"))
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

const HEX: &str = "3b6c5d0e3b6c5d0e3b6c5d0e3b6c5d0e3b6c5d0e3b6c5d0e3b6c5d0e3b6c5d0e";

fn artifact(rev: &str, digest: &str) -> Artifact {
    Artifact {
        path: format!("ocirepository/ns/app/{}", artifact_file(rev)),
        url: "http://127.0.0.1:8080/ocirepository/ns/app/x.tar.gz".into(),
        revision: rev.into(),
        digest: digest.into(),
        last_update_time: now(),
        size: Some(10),
        metadata: Some(BTreeMap::from([
            (
                "org.opencontainers.image.source".to_string(),
                "https://github.com/org/app".to_string(),
            ),
            (
                "org.opencontainers.image.revision".to_string(),
                "main@sha1:abc".to_string(),
            ),
        ])),
    }
}

fn pull_plan(r: &OCIRepository) -> PullPlan {
    match decide(r) {
        Plan::Fetch(p) => p,
        other => panic!("expected a pull, got {other:?}"),
    }
}

fn checked(r: &OCIRepository, out: &Outcome) {
    let problems = check(
        &out.status.conditions,
        OCI_REPOSITORY_READY.negative_polarity,
        r.metadata.generation.unwrap(),
        out.status.observed_generation.unwrap(),
    );
    assert!(problems.is_empty(), "{problems:?}\n{:#?}", out.status);
}

#[test]
fn plans_follow_fluxs_order_and_resolve_ref_layer_and_secrets() {
    let mut r = with("");
    r.metadata.finalizers = None;
    assert_eq!(decide(&r), Plan::AddFinalizer);
    r.metadata.deletion_timestamp = Some(now());
    assert_eq!(decide(&r), Plan::Nothing);
    let mut r = with("  suspend: true\n");
    assert_eq!(decide(&r), Plan::Suspended);
    r.metadata.deletion_timestamp = Some(now());
    assert_eq!(decide(&r), Plan::Finalize, "deletion wins over suspend");

    let p = pull_plan(&with(""));
    assert_eq!(p.selector, OciSelector::Tag("latest".into()));
    assert_eq!(p.layer, LayerSelector::default());
    assert!(!p.insecure && p.secret.is_none() && p.unsupported.is_empty());
    assert_eq!(p.timeout, Duration::from_secs(60));

    let p = pull_plan(&with(
        "  ref: {semver: '>=1.0.0', tag: v1}\n  layerSelector: {mediaType: a/b, operation: copy}\n  \
         secretRef: {name: regcred}\n  certSecretRef: {name: tls}\n  insecure: true\n  timeout: 20s\n",
    ));
    assert_eq!(
        p.selector,
        OciSelector::Semver {
            constraint: ">=1.0.0".into(),
            filter: None
        }
    );
    assert!(copies(&p));
    assert_eq!(p.layer.media_type.as_deref(), Some("a/b"));
    assert_eq!(p.secret.as_deref(), Some("regcred"));
    assert_eq!(p.cert_secret.as_deref(), Some("tls"));
    assert!(p.insecure);
    assert_eq!(p.timeout, Duration::from_secs(20));
    assert_eq!(
        p.unsupported,
        ["spec.ref.tag (overridden by a ref field of higher precedence)"]
    );
    let p = pull_plan(&with(&format!("  ref: {{digest: 'sha256:{HEX}'}}\n")));
    assert_eq!(p.selector, OciSelector::Digest(format!("sha256:{HEX}")));
}

#[test]
fn fields_not_acted_on_are_named_and_unsafe_ones_stall() {
    let p = pull_plan(&with(
        "  provider: generic\n  serviceAccountName: sa\n  proxySecretRef: {name: p}\n",
    ));
    assert_eq!(p.unsupported.len(), 2, "{:?}", p.unsupported);
    let mut zero_interval = with("");
    zero_interval.spec.interval = "0s".into();
    for r in [
        with("  provider: aws\n"),
        with("  verify: {provider: cosign}\n"),
        with("  timeout: 0s\n"),
        with("  layerSelector: {operation: move}\n"),
        zero_interval,
    ] {
        assert!(
            matches!(decide(&r), Plan::Stall { ref reason, .. } if reason == INVALID_SPEC),
            "{:?}: {:?}",
            r.spec,
            decide(&r)
        );
    }
}

#[test]
fn the_stored_artifact_is_reused_only_with_the_same_ignore_and_layer_selector() {
    let mut r = with("  ignore: '*.md'\n");
    assert_eq!(reusable_revision(&r, true), None, "no status yet");
    r.status = Some(OCIRepositoryStatus {
        artifact: Some(artifact(&format!("v1@sha256:{HEX}"), "sha256:aa")),
        observed_ignore: Some("*.md".into()),
        ..Default::default()
    });
    assert_eq!(
        reusable_revision(&r, true).as_deref(),
        Some(format!("v1@sha256:{HEX}").as_str())
    );
    assert_eq!(reusable_revision(&r, false), None, "file gone or corrupt");
    r.spec.layer_selector = Some(OCILayerSelector {
        media_type: None,
        operation: Some("copy".into()),
    });
    assert_eq!(reusable_revision(&r, true), None, "layer selector changed");
    r.spec.layer_selector = None;
    r.spec.ignore = None;
    assert_eq!(reusable_revision(&r, true), None, "ignore changed");
}

#[test]
fn artifact_file_is_the_digest_part_of_the_revision_as_flux() {
    assert_eq!(
        artifact_file(&format!("v1@sha256:{HEX}")),
        format!("sha256:{HEX}.tar.gz")
    );
    assert_eq!(
        artifact_file(&format!("sha256:{HEX}")),
        format!("sha256:{HEX}.tar.gz")
    );
}

#[test]
fn stored_unchanged_failed_and_stalled_statuses() {
    let r = with("  ignore: '*.md'\n  layerSelector: {operation: copy}\n");
    let rev = format!("v1@sha256:{HEX}");
    let a = artifact(&rev, "sha256:aa");
    let out = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            url: "http://h/ocirepository/ns/app/latest.tar.gz".into(),
        },
        &[],
        &now(),
    );
    checked(&r, &out);
    let ready = get(&out.status.conditions, types::READY).unwrap();
    assert_eq!(ready.status, TRUE);
    assert_eq!(
        ready.message,
        format!("stored artifact for revision '{rev}'")
    );
    assert_eq!(out.status.artifact.as_ref(), Some(&a));
    assert_eq!(out.status.observed_ignore.as_deref(), Some("*.md"));
    assert_eq!(out.status.observed_layer_selector, r.spec.layer_selector);
    assert_eq!(
        out.status.url.as_deref(),
        Some("http://h/ocirepository/ns/app/latest.tar.gz")
    );
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].reason, NEW_ARTIFACT);
    assert_eq!(
        out.notices[0].message,
        format!(
            "stored artifact with revision '{rev}' from 'oci://registry.example/ns/app', origin \
             source 'https://github.com/org/app', origin revision 'main@sha1:abc'"
        )
    );
    assert_eq!(out.result, Ok(()));

    // the next pull finds the same digest under another tag: no Event, revision updated
    let mut r2 = r.clone();
    r2.status = Some(out.status.clone());
    let rev2 = format!("v1.0.1@sha256:{HEX}");
    let out2 = outcome(
        &r2,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: rev2.clone(),
        },
        &[],
        &now(),
    );
    checked(&r2, &out2);
    assert!(out2.notices.is_empty());
    assert_eq!(out2.status.artifact.as_ref().unwrap().revision, rev2);
    assert_eq!(out2.status.artifact.as_ref().unwrap().metadata, a.metadata);

    // a failure keeps the artifact served, Ready=False with the reason, one Warning
    let failed = Attempt::Failed {
        condition: types::FETCH_FAILED,
        reason: "AuthenticationFailed".into(),
        message: "failed to get credential: unauthorized".into(),
    };
    let out3 = outcome(&r2, Some(a.clone()), failed.clone(), &[], &now());
    checked(&r2, &out3);
    let ready = get(&out3.status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AuthenticationFailed")
    );
    assert!(out3.status.artifact.is_some() && out3.status.url.is_some());
    assert_eq!(out3.notices.len(), 1);
    assert_eq!(out3.result, Err(true));
    let mut r3 = r2.clone();
    r3.status = Some(out3.status.clone());
    assert!(
        outcome(&r3, Some(a), failed, &[], &now())
            .notices
            .is_empty(),
        "the same failure again: no second Warning"
    );

    // stalled without an artifact: no url, Stalled, waits for a change
    let out4 = outcome(
        &with("  provider: aws\n"),
        None,
        Attempt::Stalled {
            reason: INVALID_SPEC.into(),
            message: "spec.provider 'aws' is not supported".into(),
        },
        &[],
        &now(),
    );
    checked(&with("  provider: aws\n"), &out4);
    assert_eq!(out4.result, Err(false));
    assert!(out4.status.url.is_none());
    assert_eq!(
        get(&out4.status.conditions, types::STALLED).unwrap().status,
        TRUE
    );
}

#[test]
fn unsupported_fields_give_a_condition_and_one_warning() {
    let r = with("  serviceAccountName: sa\n");
    let p = pull_plan(&r);
    let a = artifact(&format!("latest@sha256:{HEX}"), "sha256:aa");
    let out = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            url: "u".into(),
        },
        &p.unsupported,
        &now(),
    );
    checked(&r, &out);
    assert_eq!(
        get(&out.status.conditions, "Unsupported").unwrap().status,
        TRUE
    );
    assert_eq!(out.notices.iter().filter(|n| n.warning).count(), 1);
    let mut r2 = r.clone();
    r2.status = Some(out.status);
    let again = outcome(
        &r2,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: a.revision.clone(),
        },
        &p.unsupported,
        &now(),
    );
    assert!(again.notices.is_empty());
}
