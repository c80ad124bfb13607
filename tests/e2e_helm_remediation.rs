//! A remediation that fails (break-it finding 00b): pennant's source and helm controllers
//! (`--controllers source,helm`), a real HTTP Helm repository, the real `helm` CLI.
//!
//! The release's pods never get Ready (`neverReady`, kwok keeps them `Ready=False`); it was
//! installed without waiting, so it is `deployed`. A values change upgrades it: `helm upgrade
//! --wait` times out (`upgrade.timeout`), and so does the rollback to revision 1
//! (`rollback.timeout`: its pods never get Ready either). Before the fix the loop requeued at
//! once after the failed rollback: a new Helm revision and a `RollbackFailed` Warning every few
//! seconds, forever. Now each failed rollback counts against `upgrade.remediation.retries` and
//! the next one waits the error backoff (5 s, doubling); once the retries are spent the release
//! is `Stalled=True RetriesExceeded` and Helm storage gets no new revision.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use support::charts::ChartSpec;
use support::helmrepo::HelmRepo;
use support::hr::*;
use support::*;

/// (revision, status, description, updated) of `helm history`, oldest first.
fn helm_revisions(ns: &str) -> Vec<(i64, String, String, Timestamp)> {
    helm_json(ns, &["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
                r["description"].as_str().unwrap_or_default().to_string(),
                r["updated"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn failing_rollback_backs_off_then_stalls() {
    let client = client().await;
    let ns = TestNs::new(&client, "hrfix-hr-remediation", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").publish(&repo);
    helm_repository(&ns, &repo.url).await;
    let spec = |message: &str| {
        format!(
            "  values:\n    neverReady: true\n    message: {message}\n  install:\n    disableWait: true\n  \
             upgrade:\n    timeout: 6s\n    remediation:\n      retries: 2\n  rollback:\n    timeout: 4s\n"
        )
    };
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &spec("one")))
        .await;
    wait_hr(&ns, "web", "installed", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;

    // the upgrade fails, then every rollback to revision 1 fails
    let started = Instant::now();
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &spec("two")))
        .await;
    let h = wait_hr_for(
        &ns,
        "web",
        "stalled on retries",
        Duration::from_secs(90),
        |h| cond(h, "Stalled").is_some_and(|c| c.0 == "True"),
    )
    .await;
    assert_eq!(
        cond(&h, "Stalled").map(|c| (c.1, c.2)),
        Some((
            "RetriesExceeded".into(),
            "Failed to upgrade after 3 attempt(s)".into()
        ))
    );
    assert_eq!(ready_reason(&h).unwrap().0, "False");
    let (status, reason, message) = cond(&h, "Remediated").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RollbackFailed")
    );
    assert!(
        message.starts_with(&format!(
            "Helm rollback to previous release {}/web.v1 with chart app@1.0.0 failed",
            ns.name
        )),
        "{message}"
    );
    let st = h.status.clone().unwrap();
    assert_eq!(
        (st.failures, st.upgrade_failures),
        (Some(3), Some(3)),
        "one failed upgrade and two failed rollbacks, each an attempt"
    );

    // Helm storage: the install, the failed upgrade, two failed rollbacks, both to revision 1;
    // the second one only after the backoff
    let helm = helm_revisions(&ns.name);
    let statuses: Vec<&str> = helm.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        statuses,
        ["deployed", "failed", "failed", "failed"],
        "{helm:?}"
    );
    // (a rollback whose wait failed: Helm's "Release \"web\" failed: …")
    assert!(
        helm[2..]
            .iter()
            .all(|r| r.2.starts_with("Release \"web\" failed")),
        "{helm:?}"
    );
    // each rollback waits its 4 s timeout; the second starts ≥ 5 s (backoff) after the first failed
    let gap = helm[3].3.duration_since(helm[2].3);
    assert!(
        gap >= k8s_openapi::jiff::SignedDuration::from_secs(8),
        "second rollback {gap:?} after the first: no backoff? {helm:?}"
    );
    assert_history_agrees(&h, &ns.name, "web");

    // nothing more happens: no new revision within a minute of the change
    let rest = Duration::from_secs(60).saturating_sub(started.elapsed());
    tokio::time::sleep(rest.max(Duration::from_secs(15))).await;
    let after = helm_revisions(&ns.name);
    assert!(after.len() < 6, "{after:?}");
    assert_eq!(
        after.len(),
        helm.len(),
        "a revision after the stall: {after:?}"
    );
    let h = get_hr(&ns, "web").await.unwrap();
    assert_eq!(h.status.as_ref().unwrap().failures, Some(3));
    assert_history_agrees(&h, &ns.name, "web");
    let rollbacks_failed = ns
        .events("web")
        .await
        .into_iter()
        .filter(|(t, m)| t == "Warning" && m.starts_with("Helm rollback to previous release"))
        .count();
    assert_eq!(
        rollbacks_failed, 2,
        "one RollbackFailed Warning per rollback"
    );
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
}
