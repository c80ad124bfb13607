//! Tables for the HelmRepository decisions: plans (static `type: oci`, stalls), credentials
//! and TLS from Secrets, file names, sizes as Flux writes them, and the status after each kind
//! of attempt under Flux's condition checker.

use super::*;
use crate::gitops::conditions::{TRUE, check, get, types};
use k8s_openapi::jiff::Timestamp;

fn repo(yaml: &str) -> HelmRepository {
    let mut r: HelmRepository = serde_saphyr::from_str(yaml).expect("yaml");
    r.metadata.generation.get_or_insert(1);
    r
}

const BASE: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: ns, generation: 2, finalizers: [finalizers.fluxcd.io]}
spec:
  url: https://charts.example/stable
  interval: 5m
"#;

fn with(extra_spec: &str) -> HelmRepository {
    repo(&format!("{BASE}{extra_spec}"))
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn artifact(rev: &str) -> Artifact {
    Artifact {
        path: format!("helmrepository/ns/charts/{}", artifact_file(rev)),
        url: format!("http://h/helmrepository/ns/charts/{}", artifact_file(rev)),
        revision: rev.into(),
        digest: rev.into(),
        last_update_time: now(),
        size: Some(1234),
        metadata: None,
    }
}

fn index_plan(r: &HelmRepository) -> IndexPlan {
    match decide(r) {
        Plan::Fetch(RepoPlan::Index(p)) => p,
        other => panic!("expected an index download, got {other:?}"),
    }
}

fn checked(r: &HelmRepository, out: &Outcome) {
    let problems = check(
        &out.status.conditions,
        HELM_REPOSITORY_READY.negative_polarity,
        r.metadata.generation.unwrap(),
        out.status.observed_generation.unwrap(),
    );
    assert!(problems.is_empty(), "{problems:?}\n{:#?}", out.status);
}

#[test]
fn plans_static_oci_first_then_fluxs_order_and_stalls() {
    let mut oci = repo(&BASE.replace("https://charts.example/stable", "oci://ghcr.io/org"));
    oci.spec.type_ = Some("oci".into());
    assert_eq!(decide(&oci), Plan::Fetch(RepoPlan::Static));
    oci.metadata.finalizers = None;
    assert_eq!(
        decide(&oci),
        Plan::Fetch(RepoPlan::Static),
        "no finalizer is added to a static object"
    );

    let mut r = with("");
    r.metadata.finalizers = None;
    assert_eq!(decide(&r), Plan::AddFinalizer);
    r.metadata.deletion_timestamp = Some(now());
    assert_eq!(decide(&r), Plan::Nothing);
    assert_eq!(decide(&with("  suspend: true\n")), Plan::Suspended);

    let p = index_plan(&with(
        "  secretRef: {name: creds}\n  certSecretRef: {name: tls}\n  passCredentials: true\n  timeout: 15s\n",
    ));
    assert_eq!(p.secret.as_deref(), Some("creds"));
    assert_eq!(p.cert_secret.as_deref(), Some("tls"));
    assert!(p.pass_credentials);
    assert_eq!(p.timeout, Duration::from_secs(15));
    assert_eq!(p.interval, Some(Duration::from_secs(300)));
    let mut no_interval = with("");
    no_interval.spec.interval = None;
    assert_eq!(index_plan(&no_interval).interval, None);

    let p = index_plan(&with(
        "  accessFrom: {namespaceSelectors: [{matchLabels: {a: b}}]}\n",
    ));
    assert_eq!(p.unsupported.len(), 1);

    let oci_url = repo(&BASE.replace("https://charts.example/stable", "oci://ghcr.io/org"));
    assert!(
        matches!(decide(&oci_url), Plan::Stall { ref reason, .. } if reason == "URLInvalid"),
        "an oci:// URL with type default stalls, as Flux"
    );
    let mut bad = with("  timeout: 0s\n");
    assert!(matches!(decide(&bad), Plan::Stall { .. }));
    bad = with("");
    bad.spec.interval = Some("0s".into());
    assert!(matches!(decide(&bad), Plan::Stall { .. }));
}

#[test]
fn credentials_and_tls_from_secrets() {
    let data = |kv: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        basic_auth(&data(&[("username", "u"), ("password", "p")])),
        Ok(HelmAuth::Basic {
            username: "u".into(),
            password: "p".into()
        })
    );
    assert_eq!(basic_auth(&data(&[])), Ok(HelmAuth::None));
    let e = basic_auth(&data(&[("username", "u")])).unwrap_err();
    assert!(e.contains("'password' is missing"), "{e}");
    assert!(
        basic_auth(&data(&[("password", "hunter2")]))
            .unwrap_err()
            .find("hunter2")
            .is_none()
    );

    assert!(tls_config(&data(&[("username", "u")])).is_none());
    let t = tls_config(&data(&[
        ("ca.crt", "CA"),
        ("certFile", "C"),
        ("keyFile", "K"),
    ]))
    .unwrap();
    assert_eq!(t.ca_pem.as_deref(), Some(&b"CA"[..]));
    assert_eq!(
        t.cert_pem.as_deref(),
        Some(&b"C"[..]),
        "deprecated keys still read"
    );
    assert_eq!(t.key_pem.as_deref(), Some(&b"K"[..]));
}

#[test]
fn file_names_and_sizes_as_flux() {
    assert_eq!(
        artifact_file(&format!("sha256:{HEX}")),
        format!("index-{HEX}.yaml")
    );
    for (n, s) in [
        (0, "0 B"),
        (9, "9 B"),
        (512, "512 B"),
        (1234, "1.2 kB"),
        (12_345, "12 kB"),
        (15_000_000, "15 MB"),
    ] {
        assert_eq!(human_bytes(n), s, "{n}");
    }
}

#[test]
fn stored_unchanged_failed_statuses() {
    let r = with("");
    let rev = format!("sha256:{HEX}");
    let a = artifact(&rev);
    let out = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            url: "http://h/helmrepository/ns/charts/index.yaml".into(),
        },
        &[],
        &now(),
    );
    checked(&r, &out);
    let ready = get(&out.status.conditions, types::READY).unwrap();
    assert_eq!(ready.status, TRUE);
    assert_eq!(ready.message, format!("stored artifact: revision '{rev}'"));
    assert_eq!(
        out.status.url.as_deref(),
        Some("http://h/helmrepository/ns/charts/index.yaml")
    );
    assert_eq!(out.notices.len(), 1);
    assert_eq!(
        out.notices[0].message,
        "stored fetched index of size 1.2 kB from 'https://charts.example/stable'"
    );

    let mut r2 = r.clone();
    r2.status = Some(out.status.clone());
    let same = outcome(
        &r2,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: rev.clone(),
        },
        &[],
        &now(),
    );
    checked(&r2, &same);
    assert!(same.notices.is_empty());
    assert_eq!(same.status.artifact, out.status.artifact);

    let failed = outcome(
        &r2,
        Some(a),
        Attempt::Failed {
            condition: types::FETCH_FAILED,
            reason: "AuthenticationFailed".into(),
            message: "failed to fetch Helm repository index: 401 Unauthorized".into(),
        },
        &[],
        &now(),
    );
    checked(&r2, &failed);
    let ready = get(&failed.status.conditions, types::READY).unwrap();
    assert_eq!(ready.reason, "AuthenticationFailed");
    assert_eq!(ready.status, "False");
    assert!(
        failed.status.artifact.is_some(),
        "the last index stays served"
    );
    assert_eq!(failed.result, Err(true));

    let lost = outcome(
        &with(""),
        None,
        Attempt::Failed {
            condition: types::FETCH_FAILED,
            reason: "IndexationFailed".into(),
            message: "x".into(),
        },
        &[],
        &now(),
    );
    checked(&with(""), &lost);
    assert!(lost.status.url.is_none() && lost.status.artifact.is_none());
}
