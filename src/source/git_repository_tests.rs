//! Tables for the GitRepository decisions: plans from objects, credentials from Secrets, status
//! after each kind of attempt, and Flux's condition checker over every status written.

use super::*;
use crate::gitops::conditions::{TRUE, check, get};
use k8s_openapi::jiff::Timestamp;

fn repo(yaml: &str) -> GitRepository {
    let mut r: GitRepository = serde_saphyr::from_str(yaml).expect("yaml");
    r.metadata.generation.get_or_insert(1);
    r
}

const BASE: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: app, namespace: ns, generation: 3, finalizers: [finalizers.fluxcd.io]}
spec:
  url: http://git.example/app.git
  interval: 1m
  ref: {branch: main}
"#;

fn with(extra_spec: &str) -> GitRepository {
    repo(&format!("{BASE}{extra_spec}"))
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

fn artifact(rev: &str, digest: &str) -> Artifact {
    Artifact {
        path: "gitrepository/ns/app/abc.tar.gz".into(),
        url: "http://127.0.0.1:8080/gitrepository/ns/app/abc.tar.gz".into(),
        revision: rev.into(),
        digest: digest.into(),
        last_update_time: now(),
        size: Some(10),
        metadata: None,
    }
}

fn fetch_plan(r: &GitRepository) -> FetchPlan {
    match decide(r) {
        Plan::Fetch(p) => p,
        other => panic!("expected a fetch, got {other:?}"),
    }
}

/// Every status the reconciler writes follows Flux's condition checker.
fn checked(r: &GitRepository, out: &Outcome) {
    let problems = check(
        &out.status.conditions,
        GIT_REPOSITORY_READY.negative_polarity,
        r.metadata.generation.unwrap(),
        out.status.observed_generation.unwrap_or(0),
    );
    assert!(problems.is_empty(), "{problems:?}\n{:#?}", out.status);
}

#[test]
fn plans_follow_fluxs_order_finalizer_deletion_suspend_then_fetch() {
    let mut r = with("");
    r.metadata.finalizers = None;
    assert_eq!(decide(&r), Plan::AddFinalizer, "finalizer first");
    r.metadata.deletion_timestamp = Some(now());
    assert_eq!(decide(&r), Plan::Nothing, "deleted, nothing of ours on it");
    let mut r = with("  suspend: true\n");
    assert_eq!(decide(&r), Plan::Suspended);
    r.metadata.deletion_timestamp = Some(now());
    assert_eq!(
        decide(&r),
        Plan::Finalize,
        "deletion wins over suspend, as Flux"
    );
    let p = fetch_plan(&with("  timeout: 20s\n  secretRef: {name: creds}\n"));
    assert_eq!(p.reference, GitRef::Branch("main".into()));
    assert_eq!(p.timeout, Duration::from_secs(20));
    assert_eq!(p.interval, Duration::from_secs(60));
    assert_eq!(p.secret.as_deref(), Some("creds"));
    assert!(p.unsupported.is_empty());
}

#[test]
fn refs_resolve_with_fluxs_precedence_and_ambiguity_stalls() {
    let r = repo(&BASE.replace(
        "ref: {branch: main}",
        "ref: {branch: main, semver: '>=1.0.0'}",
    ));
    let p = fetch_plan(&r);
    assert_eq!(p.reference, GitRef::Semver(">=1.0.0".into()));
    assert_eq!(
        p.unsupported,
        ["spec.ref.branch (overridden by a ref field of higher precedence)"]
    );
    let r = repo(&BASE.replace("ref: {branch: main}", "ref: {tag: v1, semver: '1.x'}"));
    assert!(matches!(decide(&r), Plan::Stall { .. }), "tag and semver");
    let r = repo(&BASE.replace("ref: {branch: main}", "ref: {commit: abc, branch: dev}"));
    assert_eq!(
        fetch_plan(&r).reference,
        GitRef::Commit {
            sha: "abc".into(),
            branch: Some("dev".into())
        }
    );
    let r = repo(&BASE.replace("  ref: {branch: main}\n", ""));
    assert_eq!(fetch_plan(&r).reference, GitRef::Branch("master".into()));
}

#[test]
fn fields_not_acted_on_are_named_and_unsafe_ones_stall() {
    let p = fetch_plan(&with(
        "  recurseSubmodules: true\n  sparseCheckout: [apps]\n  proxySecretRef: {name: p}\n",
    ));
    // submodules and sparse checkout are acted on, the proxy is not
    assert_eq!(p.unsupported.len(), 1, "{:?}", p.unsupported);
    assert!(p.unsupported[0].starts_with("spec.proxySecretRef"));
    assert!(p.recurse_submodules);
    assert_eq!(p.sparse_checkout, ["apps"]);
    assert!(!fetch_plan(&with("")).recurse_submodules);
    for spec in [
        "  verify: {mode: HEAD, secretRef: {name: keys}}\n",
        "  provider: github\n",
        "  interval: 0s\n",
    ] {
        let r = repo(&format!(
            "{}{spec}",
            BASE.replace(
                "  interval: 1m\n",
                if spec.contains("interval") {
                    ""
                } else {
                    "  interval: 1m\n"
                }
            )
        ));
        assert!(matches!(decide(&r), Plan::Stall { .. }), "{spec}");
    }
}

#[test]
fn credentials_read_fluxs_keys_and_never_show_values() {
    let data = |kv: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let (auth, ca) = credentials(&data(&[("username", "u"), ("password", "s3cret")])).unwrap();
    assert!(
        matches!(auth, GitAuth::Basic { ref username, ref password } if username == "u" && password == "s3cret")
    );
    assert_eq!(ca, None);
    let (auth, ca) = credentials(&data(&[("bearerToken", "t0k"), ("ca.crt", "PEM")])).unwrap();
    assert!(matches!(auth, GitAuth::Bearer(ref t) if t == "t0k"));
    assert_eq!(ca.as_deref(), Some(&b"PEM"[..]));
    let (_, ca) = credentials(&data(&[("caFile", "OLD")])).unwrap();
    assert_eq!(ca.as_deref(), Some(&b"OLD"[..]), "legacy key");
    let (auth, _) = credentials(&data(&[("identity", "KEY"), ("known_hosts", "h")])).unwrap();
    assert!(matches!(auth, GitAuth::Ssh { .. }));
    assert!(matches!(credentials(&data(&[])).unwrap().0, GitAuth::None));
    for bad in [
        data(&[
            ("username", "u"),
            ("password", "s3cret"),
            ("bearerToken", "t0k"),
        ]),
        data(&[("username", "u")]),
        data(&[("password", "s3cret")]),
        data(&[("identity", "KEY")]),
    ] {
        let e = credentials(&bad).unwrap_err();
        assert!(
            !e.contains("s3cret") && !e.contains("t0k") && !e.contains("KEY"),
            "{e}"
        );
    }
}

#[test]
fn the_tree_is_fetched_again_when_the_artifact_or_its_configuration_changed() {
    let a = artifact("main@sha1:aaa", "sha256:1");
    let mut r = with("");
    assert_eq!(reusable_revision(&r, true, &[]), None, "no artifact yet");
    r.status = Some(GitRepositoryStatus {
        artifact: Some(a.clone()),
        ..Default::default()
    });
    assert_eq!(
        reusable_revision(&r, true, &[]).as_deref(),
        Some("main@sha1:aaa")
    );
    assert_eq!(
        reusable_revision(&r, false, &[]),
        None,
        "file gone or corrupt"
    );
    r.spec.ignore = Some("*.md".into());
    assert_eq!(reusable_revision(&r, true, &[]), None, "ignore changed");
    r.status.as_mut().unwrap().observed_ignore = Some("*.md".into());
    assert!(reusable_revision(&r, true, &[]).is_some());
    let inc = artifact("main@sha1:bbb", "sha256:2");
    assert_eq!(
        reusable_revision(&r, true, std::slice::from_ref(&inc)),
        None,
        "a new include"
    );
    r.status.as_mut().unwrap().included_artifacts = vec![inc.clone()];
    assert!(reusable_revision(&r, true, std::slice::from_ref(&inc)).is_some());
    r.spec.recurse_submodules = Some(true);
    assert_eq!(
        reusable_revision(&r, true, std::slice::from_ref(&inc)),
        None,
        "submodules now wanted"
    );
    r.status.as_mut().unwrap().observed_recurse_submodules = Some(true);
    r.spec.sparse_checkout = vec!["apps".into()];
    assert_eq!(
        reusable_revision(&r, true, std::slice::from_ref(&inc)),
        None,
        "sparse checkout changed"
    );
    r.status.as_mut().unwrap().observed_sparse_checkout = vec!["apps".into()];
    assert!(reusable_revision(&r, true, &[inc]).is_some());
}

#[test]
fn a_new_artifact_is_ready_with_fluxs_message_and_one_event() {
    let mut r = with("  ignore: '*.md'\n");
    r.metadata.annotations = Some(BTreeMap::from([(
        crate::api::source::RECONCILE_REQUESTED_AT_ANNOTATION.to_string(),
        "t1".to_string(),
    )]));
    let a = artifact("main@sha1:aaa", "sha256:1");
    let out = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            commit_message: "first".into(),
            included: vec![],
        },
        &[],
        &now(),
    );
    checked(&r, &out);
    let st = &out.status;
    let ready = get(&st.conditions, types::READY).unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        (
            TRUE,
            "Succeeded",
            "stored artifact for revision 'main@sha1:aaa'"
        )
    );
    assert!(conditions::is_true(
        &st.conditions,
        types::ARTIFACT_IN_STORAGE
    ));
    assert_eq!(st.artifact.as_ref(), Some(&a));
    assert_eq!(st.observed_ignore.as_deref(), Some("*.md"));
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.last_handled_reconcile_at.as_deref(), Some("t1"));
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.notices.len(), 1);
    let n = &out.notices[0];
    assert_eq!(
        (n.warning, n.reason.as_str(), n.message.as_str()),
        (false, "NewArtifact", "stored artifact for commit 'first'")
    );
    assert_eq!(n.annotations["revision"], "main@sha1:aaa");

    // the same again: no Event, nothing new
    r.status = Some(st.clone());
    let again = outcome(
        &r,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: "main@sha1:aaa".into(),
        },
        &[],
        &now(),
    );
    assert_eq!(again.status, *st);
    assert!(again.notices.is_empty());
}

#[test]
fn a_failure_keeps_the_last_artifact_served_and_says_so() {
    let mut r = with("");
    let a = artifact("main@sha1:aaa", "sha256:1");
    let ok = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            commit_message: "first".into(),
            included: vec![],
        },
        &[],
        &now(),
    );
    r.status = Some(ok.status);
    let fail = || Attempt::Failed {
        condition: types::FETCH_FAILED,
        reason: "AuthenticationFailed".into(),
        message: "authentication failed: HTTP 401".into(),
    };
    let out = outcome(&r, Some(a.clone()), fail(), &[], &now());
    checked(&r, &out);
    let st = &out.status;
    let ready = get(&st.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AuthenticationFailed")
    );
    assert_eq!(ready.message, "authentication failed: HTTP 401");
    assert!(conditions::is_true(
        &st.conditions,
        types::ARTIFACT_IN_STORAGE
    ));
    assert!(conditions::is_true(&st.conditions, types::FETCH_FAILED));
    // Flux's retry state: kstatus reads InProgress
    let rec = get(&st.conditions, types::RECONCILING).unwrap();
    assert_eq!(
        (
            rec.status.as_str(),
            rec.reason.as_str(),
            rec.message.as_str()
        ),
        ("True", "ProgressingWithRetry", "reconciliation in progress")
    );
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.artifact.as_ref(), Some(&a));
    assert_eq!(out.result, Err(true), "retried with backoff");
    assert_eq!(out.notices.len(), 1);
    assert!(out.notices[0].warning);
    assert_eq!(out.notices[0].reason, "AuthenticationFailed");

    // the same failure again, later: no new Event, no status change (no write)
    r.status = Some(st.clone());
    let later = Time(Timestamp::from_second(1_800_000_100).unwrap());
    let again = outcome(&r, Some(a.clone()), fail(), &[], &later);
    assert!(again.notices.is_empty());
    assert_eq!(&again.status, st);

    // recovered: the failure is gone, Ready again
    r.status = Some(again.status);
    let back = outcome(
        &r,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: a.revision.clone(),
        },
        &[],
        &now(),
    );
    checked(&r, &back);
    assert!(conditions::is_true(&back.status.conditions, types::READY));
    assert!(get(&back.status.conditions, types::RECONCILING).is_none());
    assert!(get(&back.status.conditions, types::FETCH_FAILED).is_none());

    // without a stored artifact: no ArtifactInStorage
    let fresh = with("");
    let out = outcome(&fresh, None, fail(), &[], &now());
    checked(&fresh, &out);
    assert!(out.status.artifact.is_none());
    assert!(get(&out.status.conditions, types::ARTIFACT_IN_STORAGE).is_none());
}

#[test]
fn a_stalled_spec_and_unsupported_fields_are_never_silent() {
    let r = with("");
    let out = outcome(
        &r,
        None,
        Attempt::Stalled {
            reason: INVALID_SPEC.into(),
            message: "invalid spec.ref".into(),
        },
        &["spec.sparseCheckout".into()],
        &now(),
    );
    checked(&r, &out);
    let st = &out.status.conditions;
    assert!(conditions::is_true(st, types::STALLED));
    assert!(conditions::is_false(st, types::READY));
    assert_eq!(get(st, types::READY).unwrap().reason, INVALID_SPEC);
    assert!(conditions::is_true(st, UNSUPPORTED));
    assert_eq!(out.result, Err(false), "waits for a change");
    assert_eq!(out.notices.len(), 2, "{:?}", out.notices);
    assert!(out.notices.iter().all(|n| n.warning));
    // the same stall again (e.g. after a restart): the status says it already, no new Event
    let mut again = r.clone();
    again.status = Some(out.status.clone());
    let out2 = outcome(
        &again,
        None,
        Attempt::Stalled {
            reason: INVALID_SPEC.into(),
            message: "invalid spec.ref".into(),
        },
        &["spec.sparseCheckout".into()],
        &now(),
    );
    assert!(out2.notices.is_empty(), "{:?}", out2.notices);
    assert_eq!(out2.status, out.status);
    let unsupported_ok = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: artifact("main@sha1:aaa", "sha256:1"),
            commit_message: "m".into(),
            included: vec![],
        },
        &["spec.sparseCheckout".into()],
        &now(),
    );
    checked(&r, &unsupported_ok);
    assert!(
        conditions::is_true(&unsupported_ok.status.conditions, types::READY),
        "Ready stays"
    );
}

#[test]
fn requeue_times_jitter_around_the_interval_and_back_off() {
    let i = Duration::from_secs(600);
    for seed in [0, 5000, 10_000, 123_456_789] {
        let d = next_interval(i, seed);
        assert!(
            d >= Duration::from_secs(570) && d <= Duration::from_secs(630),
            "{d:?}"
        );
    }
    assert_eq!(next_interval(i, 5000), i);
    assert_eq!(retry_after(1, i), Duration::from_secs(5));
    assert_eq!(retry_after(2, i), Duration::from_secs(10));
    assert_eq!(retry_after(8, i), Duration::from_secs(640));
    assert_eq!(retry_after(9, i), Duration::from_secs(900));
    assert_eq!(retry_after(40, i), Duration::from_secs(900));
    // not capped at the interval: a tiny interval still backs off (Flux's rate limiter)
    let tiny = Duration::from_secs(1);
    assert_eq!(retry_after(1, tiny), Duration::from_secs(5));
    assert_eq!(retry_after(5, tiny), Duration::from_secs(80));
    assert_eq!(retry_after(20, tiny), Duration::from_secs(900));
}

#[test]
fn a_new_generation_is_progressing_before_the_fetch_and_a_failure_keeps_the_old_one() {
    let mut r = with("");
    let a = artifact("main@sha1:aaa", "sha256:1");
    let ok = outcome(
        &r,
        None,
        Attempt::Stored {
            artifact: a.clone(),
            commit_message: "first".into(),
            included: vec![],
        },
        &[],
        &now(),
    );
    r.status = Some(ok.status.clone());
    // steady state: nothing to write before the fetch
    assert_eq!(progressing(&r, &now()), None);

    // a new generation: Reconciling=True Progressing, Ready kept until the attempt ends
    r.metadata.generation = Some(4);
    let p = progressing(&r, &now()).expect("a progress write");
    let rec = get(&p.conditions, types::RECONCILING).unwrap();
    assert_eq!(
        (
            rec.status.as_str(),
            rec.reason.as_str(),
            rec.message.as_str()
        ),
        (
            "True",
            "Progressing",
            "processing object: new generation 3 -> 4"
        )
    );
    assert_eq!(p.observed_generation, Some(3));
    assert_eq!(get(&p.conditions, types::READY).unwrap().status, "True");
    r.status = Some(p.clone());
    assert_eq!(progressing(&r, &now()), None, "written once");

    // it fails: observedGeneration stays 3, Reconciling ProgressingWithRetry, Ready=False
    let fail = Attempt::Failed {
        condition: types::FETCH_FAILED,
        reason: "GitOperationFailed".into(),
        message: "failed to checkout and determine revision: boom".into(),
    };
    let out = outcome(&r, Some(a.clone()), fail, &[], &now());
    checked(&r, &out);
    assert_eq!(out.status.observed_generation, Some(3));
    let rec = get(&out.status.conditions, types::RECONCILING).unwrap();
    assert_eq!(
        (rec.reason.as_str(), rec.message.as_str()),
        (
            "ProgressingWithRetry",
            "processing object: new generation 3 -> 4"
        )
    );
    let ready = get(&out.status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "GitOperationFailed")
    );

    // then succeeds: observedGeneration 4, no Reconciling
    r.status = Some(out.status);
    let back = outcome(
        &r,
        Some(a.clone()),
        Attempt::Unchanged {
            revision: a.revision.clone(),
        },
        &[],
        &now(),
    );
    checked(&r, &back);
    assert_eq!(back.status.observed_generation, Some(4));
    assert!(get(&back.status.conditions, types::RECONCILING).is_none());

    // a new object: Ready=Unknown Progressing as well
    let fresh = with("");
    let p = progressing(&fresh, &now()).unwrap();
    let ready = get(&p.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("Unknown", "Progressing")
    );
    assert_eq!(p.observed_generation, None);

    // a requested reconcile of a ready object
    let mut req = r.clone();
    req.status = Some(back.status.clone());
    req.metadata.annotations = Some(BTreeMap::from([(
        "reconcile.fluxcd.io/requestedAt".to_string(),
        "t1".to_string(),
    )]));
    let p = progressing(&req, &now()).unwrap();
    assert_eq!(
        get(&p.conditions, types::RECONCILING).unwrap().message,
        "reconciliation in progress"
    );
    // a stall sets observedGeneration and has no Reconciling
    let out = outcome(
        &r,
        None,
        Attempt::Stalled {
            reason: INVALID_SPEC.into(),
            message: "bad".into(),
        },
        &[],
        &now(),
    );
    checked(&r, &out);
    assert_eq!(out.status.observed_generation, Some(4));
    assert!(get(&out.status.conditions, types::RECONCILING).is_none());
}
