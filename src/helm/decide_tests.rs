//! Tables translated from helm-controller's `state_test.go` and `atomic_release_test.go`
//! (`TestAtomicRelease_actionForState`, `TestAtomicRelease_Reconcile_Scenarios`), a simulated
//! Helm storage to drive the loop end to end, and property tests of the loop's invariants.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::gitops::conditions::{get, mark_false, mark_true};

const NS: &str = "default";
const NAME: &str = "podinfo";

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn t() -> Time {
    Time(now())
}

fn snap(revision: u32, status: ReleaseStatus) -> Snapshot {
    Snapshot {
        name: NAME.into(),
        namespace: NS.into(),
        revision,
        status,
        chart_name: "podinfo".into(),
        chart_version: "6.5.0".into(),
        config_digest: "sha256:a".into(),
        test_hooks: None,
    }
}

fn tested(mut s: Snapshot, hooks: &[(&str, TestPhase)]) -> Snapshot {
    s.test_hooks = Some(hooks.iter().map(|(n, p)| (n.to_string(), *p)).collect());
    s
}

fn rel(revision: u32, status: ReleaseStatus) -> ReleaseInfo {
    ReleaseInfo {
        name: NAME.into(),
        namespace: NS.into(),
        revision,
        status,
        chart_name: "podinfo".into(),
        chart_version: "6.5.0".into(),
        last_deployed: None,
    }
}

/// Revision 1 deployed, recorded, in sync with the desired chart and values.
fn in_sync() -> Observed {
    Observed {
        release_name: NAME.into(),
        release_namespace: NS.into(),
        latest: Some(rel(1, ReleaseStatus::Deployed)),
        history: vec![snap(1, ReleaseStatus::Deployed)],
        desired: Desired {
            chart_name: "podinfo".into(),
            chart_version: "6.5.0".into(),
            config_digest: "sha256:a".into(),
        },
        last_action: Some(ReleaseAction::Install),
        now: now(),
        ..Observed::default()
    }
}

fn tests_on() -> Policy {
    Policy {
        test: TestPolicy {
            enabled: true,
            ..TestPolicy::default()
        },
        ..Policy::default()
    }
}

// ---------------------------------------------------------------------------------------------
// DetermineReleaseState (state_test.go)

#[test]
fn release_state_table() {
    use ReleaseStatus as R;
    use StateKind::*;
    let p = Policy::default();
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Observed, &mut Policy)>,
        StateKind,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("in-sync release", Box::new(|_, _| {}), InSync, ""),
        (
            "no release in storage",
            Box::new(|o, _| o.latest = None),
            Absent,
            "no release in storage for object",
        ),
        (
            "existing release without current",
            Box::new(|o, _| o.history.clear()),
            Unmanaged,
            "found existing release in storage",
        ),
        (
            "release digest parse error",
            Box::new(|o, _| o.latest_match = SnapshotMatch::DigestError),
            Unmanaged,
            "release digest verification error",
        ),
        (
            "release digest mismatch",
            Box::new(|o, _| o.latest_match = SnapshotMatch::NotObserved),
            Unmanaged,
            "release not observed to be made for object",
        ),
        (
            "release in pending state",
            Box::new(|o, _| o.latest = Some(rel(1, R::PendingInstall))),
            Locked,
            "release with status 'pending-install'",
        ),
        (
            "pending state wins over missing history",
            Box::new(|o, _| {
                o.history.clear();
                o.latest = Some(rel(2, R::PendingUpgrade));
            }),
            Locked,
            "release with status 'pending-upgrade'",
        ),
        (
            "untested release",
            Box::new(|_, p| p.test.enabled = true),
            Untested,
            "",
        ),
        (
            "incomplete test result",
            Box::new(|o, p| {
                p.test.enabled = true;
                o.last_action = Some(ReleaseAction::Upgrade);
                o.history[0] = tested(
                    o.history[0].clone(),
                    &[
                        ("passing-test", TestPhase::Succeeded),
                        ("never-run-test", TestPhase::Unknown),
                    ],
                );
            }),
            Untested,
            "",
        ),
        (
            "failed test",
            Box::new(|o, p| {
                p.test.enabled = true;
                o.last_action = Some(ReleaseAction::Install);
                o.history[0] = tested(o.history[0].clone(), &[("t", TestPhase::Failed)]);
            }),
            Failed,
            "release has test in failed phase",
        ),
        (
            "failed test with unstarted remaining test hooks",
            Box::new(|o, p| {
                p.test.enabled = true;
                o.history[0] = tested(
                    o.history[0].clone(),
                    &[("a", TestPhase::Failed), ("b", TestPhase::Unknown)],
                );
            }),
            Failed,
            "release has test in failed phase",
        ),
        (
            "failed test with ignore failures set",
            Box::new(|o, p| {
                p.test.enabled = true;
                p.test.ignore_failures = true;
                o.history[0] = tested(o.history[0].clone(), &[("t", TestPhase::Failed)]);
            }),
            InSync,
            "",
        ),
        (
            "failed test ignored by the upgrade remediation",
            Box::new(|o, p| {
                p.test.enabled = true;
                p.upgrade.remediation.ignore_test_failures = Some(true);
                o.last_action = Some(ReleaseAction::Upgrade);
                o.history[0] = tested(o.history[0].clone(), &[("t", TestPhase::Failed)]);
            }),
            InSync,
            "",
        ),
        (
            "failed test without an attempted release action is not a failure",
            Box::new(|o, p| {
                p.test.enabled = true;
                o.last_action = None;
                o.history[0] = tested(o.history[0].clone(), &[("t", TestPhase::Failed)]);
            }),
            InSync,
            "",
        ),
        (
            "failed test is ignored when not made by controller",
            Box::new(|o, p| {
                // The hook failed in storage (someone ran `helm test`), our snapshot has no
                // results: untested.
                p.test.enabled = true;
                o.last_action = None;
            }),
            Untested,
            "",
        ),
        (
            "failed release",
            Box::new(|o, _| {
                o.latest = Some(rel(1, R::Failed));
                o.history[0].status = R::Failed;
            }),
            Failed,
            "",
        ),
        (
            "uninstalled release",
            Box::new(|o, _| o.latest = Some(rel(1, R::Uninstalled))),
            Absent,
            "found uninstalled release in storage",
        ),
        (
            "uninstalled release without current",
            Box::new(|o, _| {
                o.history.clear();
                o.latest = Some(rel(1, R::Uninstalled));
            }),
            Absent,
            "found uninstalled release in storage",
        ),
        (
            "chart changed",
            Box::new(|o, _| o.desired.chart_version = "6.6.0".into()),
            OutOfSync,
            "release chart changed",
        ),
        (
            "chart name changed",
            Box::new(|o, _| o.desired.chart_name = "podinfo-fork".into()),
            OutOfSync,
            "release chart changed",
        ),
        (
            "values changed",
            Box::new(|o, _| o.desired.config_digest = "sha256:b".into()),
            OutOfSync,
            "release config values changed",
        ),
        (
            "postRenderers changed",
            Box::new(|o, _| {
                o.new_generation = true;
                o.post_renderers_changed = true;
            }),
            OutOfSync,
            "postrenderers digest has changed",
        ),
        (
            "postRenderers mismatch ignored for processed generation",
            Box::new(|o, _| o.post_renderers_changed = true),
            InSync,
            "",
        ),
        (
            "commonMetadata changed",
            Box::new(|o, _| {
                o.new_generation = true;
                o.common_metadata_changed = true;
            }),
            OutOfSync,
            "common metadata digest has changed",
        ),
        (
            "commonMetadata mismatch ignored for processed generation",
            Box::new(|o, _| o.common_metadata_changed = true),
            InSync,
            "",
        ),
        (
            "with drift and detection mode enabled",
            Box::new(|o, p| {
                p.drift = DriftMode::Enabled;
                o.drift = Some("Deployment/default/podinfo changed".into());
            }),
            Drifted,
            "Deployment/default/podinfo changed",
        ),
        (
            "with drift and detection mode warn",
            Box::new(|o, p| {
                p.drift = DriftMode::Warn;
                o.drift = Some("x".into());
            }),
            Drifted,
            "x",
        ),
        (
            "drift detection mode disabled",
            Box::new(|o, _| o.drift = Some("x".into())),
            InSync,
            "",
        ),
        (
            "pennant: a crashed uninstall is a lock, not a state error",
            Box::new(|o, _| o.latest = Some(rel(1, R::Uninstalling))),
            Locked,
            "release with status 'uninstalling'",
        ),
        (
            "superseded as latest is a state error",
            Box::new(|o, _| o.latest = Some(rel(1, R::Superseded))),
            Unknown,
            "unable to determine state for release with status 'superseded'",
        ),
    ];
    for (name, edit, kind, reason) in cases {
        let (mut o, mut p) = (in_sync(), p);
        edit(&mut o, &mut p);
        let got = release_state(&o, &p);
        assert_eq!((got.kind, got.reason.as_str()), (kind, reason), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// actionForState (TestAtomicRelease_actionForState)

fn failed_upgrade() -> Observed {
    let mut o = in_sync();
    o.latest = Some(rel(2, ReleaseStatus::Failed));
    o.history = vec![
        snap(2, ReleaseStatus::Failed),
        snap(1, ReleaseStatus::Deployed),
    ];
    o.last_action = Some(ReleaseAction::Upgrade);
    o.counters = Counters {
        failures: 1,
        install_failures: 0,
        upgrade_failures: 1,
    };
    o
}

fn retry(p: &mut Policy, a: ReleaseAction) {
    let s = Some(FailureStrategy::RetryOnFailure {
        retry_interval: Duration::from_secs(60),
    });
    match a {
        ReleaseAction::Install => p.install.strategy = s,
        ReleaseAction::Upgrade => p.upgrade.strategy = s,
    }
}

fn stalled(msg: &str) -> Next {
    Next::Stalled {
        reason: StallReason::RetriesExceeded,
        message: msg.into(),
    }
}

#[test]
fn action_for_state_table() {
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Observed, &mut Policy)>,
        Observed,
        Next,
    );
    let rollback_to_1 = Next::Run(Action::RollbackRemediation {
        target: snap(1, ReleaseStatus::Deployed),
    });
    let cases: Vec<Case> = vec![
        (
            "in-sync release does not trigger any action",
            Box::new(|_, _| {}),
            in_sync(),
            Next::Done,
        ),
        (
            "in-sync release with force annotation triggers upgrade action",
            Box::new(|o, _| o.force_requested = true),
            in_sync(),
            Next::Run(Action::Upgrade),
        ),
        (
            "locked release triggers unlock action",
            Box::new(|o, _| o.latest = Some(rel(2, ReleaseStatus::PendingUpgrade))),
            in_sync(),
            Next::Run(Action::Unlock {
                from: ReleaseStatus::PendingUpgrade,
            }),
        ),
        (
            "absent release triggers install action",
            Box::new(|o, _| o.latest = None),
            in_sync(),
            Next::Run(Action::Install),
        ),
        (
            "absent release without remaining retries and force annotation triggers install",
            Box::new(|o, _| {
                o.latest = None;
                o.counters.install_failures = 1;
                o.force_requested = true;
            }),
            in_sync(),
            Next::Run(Action::Install),
        ),
        (
            "absent release without remaining retries returns error",
            Box::new(|o, _| {
                o.latest = None;
                o.counters.install_failures = 1;
            }),
            in_sync(),
            stalled("Failed to install after 1 attempt(s)"),
        ),
        (
            "unmanaged release triggers upgrade",
            Box::new(|o, _| o.history.clear()),
            in_sync(),
            Next::Run(Action::Upgrade),
        ),
        (
            "drifted release triggers correction if enabled",
            Box::new(|o, p| {
                p.drift = DriftMode::Enabled;
                o.drift = Some("x".into());
            }),
            in_sync(),
            Next::Run(Action::CorrectDrift),
        ),
        (
            "drifted release only triggers event if mode is warn",
            Box::new(|o, p| {
                p.drift = DriftMode::Warn;
                o.drift = Some("x".into());
            }),
            in_sync(),
            Next::Done,
        ),
        (
            "out-of-sync release triggers upgrade",
            Box::new(|o, _| o.desired.chart_version = "7.0.0".into()),
            in_sync(),
            Next::Run(Action::Upgrade),
        ),
        (
            "out-of-sync release with no remaining retries and force annotation triggers upgrade",
            Box::new(|o, _| {
                o.desired.chart_version = "7.0.0".into();
                o.last_action = Some(ReleaseAction::Upgrade);
                o.counters.upgrade_failures = 1;
                o.force_requested = true;
            }),
            in_sync(),
            Next::Run(Action::Upgrade),
        ),
        (
            "out-of-sync release with no remaining retries returns error",
            Box::new(|o, _| {
                o.desired.chart_version = "7.0.0".into();
                o.last_action = Some(ReleaseAction::Upgrade);
                o.counters.upgrade_failures = 1;
            }),
            in_sync(),
            stalled("Failed to upgrade after 1 attempt(s)"),
        ),
        (
            "untested release triggers test action",
            Box::new(|_, p| p.test.enabled = true),
            in_sync(),
            Next::Run(Action::Test),
        ),
        (
            "failed release without active remediation triggers upgrade",
            Box::new(|o, _| o.last_action = None),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release without failure count triggers upgrade",
            Box::new(|o, _| o.counters = Counters::default()),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release with exhausted retries and force annotation triggers upgrade",
            Box::new(|o, _| o.force_requested = true),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release with exhausted retries returns error",
            Box::new(|_, _| {}),
            failed_upgrade(),
            stalled("Failed to upgrade after 1 attempt(s)"),
        ),
        (
            "failed release with active install remediation triggers uninstall",
            Box::new(|o, p| {
                p.install.remediation.retries = 3;
                o.last_action = Some(ReleaseAction::Install);
                o.counters.install_failures = 1;
            }),
            failed_upgrade(),
            Next::Run(Action::UninstallRemediation),
        ),
        (
            "failed release with active install retry triggers upgrade",
            Box::new(|o, p| {
                retry(p, ReleaseAction::Install);
                o.last_action = Some(ReleaseAction::Install);
                o.counters.install_failures = 1;
            }),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release with active upgrade remediation triggers rollback",
            Box::new(|_, p| p.upgrade.remediation.retries = 1),
            failed_upgrade(),
            rollback_to_1.clone(),
        ),
        (
            "failed release with remediateLastFailure rolls back when exhausted",
            Box::new(|_, p| p.upgrade.remediation.remediate_last_failure = Some(true)),
            failed_upgrade(),
            rollback_to_1.clone(),
        ),
        (
            "failed release with upgrade uninstall strategy triggers uninstall",
            Box::new(|_, p| {
                p.upgrade.remediation.retries = 1;
                p.upgrade.remediation_strategy = RemediationStrategy::Uninstall;
            }),
            failed_upgrade(),
            Next::Run(Action::UninstallRemediation),
        ),
        (
            "failed release with active upgrade retry triggers upgrade",
            Box::new(|_, p| retry(p, ReleaseAction::Upgrade)),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release with active upgrade remediation and no previous release triggers error",
            Box::new(|o, p| {
                p.upgrade.remediation.retries = 1;
                o.history.truncate(1);
            }),
            failed_upgrade(),
            Next::Stalled {
                reason: StallReason::MissingRollbackTarget,
                message: "Failed to perform remediation: missing target release for rollback: \
                          cannot remediate failed release"
                    .into(),
            },
        ),
        (
            "failed release with active upgrade remediation and unverified previous triggers upgrade",
            Box::new(|o, p| {
                p.upgrade.remediation.retries = 1;
                o.rollback_target = TargetCheck::Modified;
            }),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "failed release whose previous release disappeared triggers upgrade",
            Box::new(|o, p| {
                p.upgrade.remediation.retries = 1;
                o.rollback_target = TargetCheck::Disappeared;
            }),
            failed_upgrade(),
            Next::Run(Action::Upgrade),
        ),
        (
            "previous release with a failed test is skipped as rollback target",
            Box::new(|o, p| {
                p.upgrade.remediation.retries = 1;
                p.test.enabled = true;
                o.latest = Some(rel(3, ReleaseStatus::Failed));
                o.history = vec![
                    snap(3, ReleaseStatus::Failed),
                    tested(
                        snap(2, ReleaseStatus::Superseded),
                        &[("t", TestPhase::Failed)],
                    ),
                    snap(1, ReleaseStatus::Superseded),
                ];
            }),
            failed_upgrade(),
            Next::Run(Action::RollbackRemediation {
                target: snap(1, ReleaseStatus::Superseded),
            }),
        ),
        (
            "unknown release status is a state error",
            Box::new(|o, _| o.latest = Some(rel(1, ReleaseStatus::Unknown))),
            in_sync(),
            Next::StateError("unable to determine state for release with status 'unknown'".into()),
        ),
    ];
    for (name, edit, base, want) in cases {
        let (mut o, mut p) = (base, Policy::default());
        edit(&mut o, &mut p);
        let step = next_step(&o, &p, &AlreadyRun::default());
        assert_eq!(step.next, want, "{name}");
    }
}

#[test]
fn history_edits_follow_flux() {
    // Failed with remediation: truncate down to the previous good release.
    let mut o = failed_upgrade();
    o.history.push(snap(0, ReleaseStatus::Superseded));
    let mut p = Policy::default();
    p.upgrade.remediation.retries = 2;
    let step = next_step(&o, &p, &AlreadyRun::default());
    assert_eq!(
        step.history,
        HistoryEdit::Truncate {
            ignore_tests: false
        }
    );
    let mut h = o.history.clone();
    step.history.apply(&mut h);
    assert_eq!(h.iter().map(|s| s.revision).collect::<Vec<_>>(), vec![2, 1]);
    // Unmanaged clears; RetryOnFailure keeps 5.
    let mut u = in_sync();
    u.latest_match = SnapshotMatch::NotObserved;
    assert_eq!(
        next_step(&u, &p, &AlreadyRun::default()).history,
        HistoryEdit::Clear
    );
    let mut h: Vec<Snapshot> = (1..=8).map(|r| snap(r, ReleaseStatus::Failed)).collect();
    HistoryEdit::TruncateIgnoringPrevious.apply(&mut h);
    assert_eq!(
        h.iter().map(|s| s.revision).collect::<Vec<_>>(),
        vec![8, 7, 6, 5, 4]
    );
    // Truncate without a good previous keeps at most five.
    let mut h: Vec<Snapshot> = (1..=8).map(|r| snap(r, ReleaseStatus::Failed)).collect();
    HistoryEdit::Truncate { ignore_tests: true }.apply(&mut h);
    assert_eq!(h.len(), MAX_HISTORY_SNAPSHOTS);
}

#[test]
fn loop_discipline() {
    let p = Policy::default();
    let mut run = AlreadyRun::default();
    // An upgrade already ran this reconcile and the release is out of sync again: requeue.
    run.insert(ActionKind::Release);
    let mut o = in_sync();
    o.desired.chart_version = "7.0.0".into();
    assert_eq!(next_step(&o, &p, &run).next, Next::MustRequeue);
    // ... with RetryOnFailure: retry after its interval.
    let mut pr = p;
    retry(&mut pr, ReleaseAction::Install);
    assert_eq!(
        next_step(&o, &pr, &run).next,
        Next::RetryAfter(Duration::from_secs(60))
    );
    // After any remediation: stop, even when the state would call for more.
    let mut run = AlreadyRun::default();
    run.insert(ActionKind::Remediate);
    let mut f = failed_upgrade();
    let mut p2 = Policy::default();
    p2.upgrade.remediation.retries = 3;
    assert_eq!(next_step(&f, &p2, &run).next, Next::MustRequeue);
    // ... and stall early when that used the last retry.
    f.counters.upgrade_failures = 4;
    assert_eq!(
        next_step(&f, &p2, &run).next,
        stalled("Failed to upgrade after 4 attempt(s)")
    );
    // ... except an uninstall after an upgrade: the next reconcile installs.
    p2.upgrade.remediation_strategy = RemediationStrategy::Uninstall;
    assert_eq!(next_step(&f, &p2, &run).next, Next::MustRequeue);
    // A drift correction that did not take is not retried in a hot loop.
    let mut d = in_sync();
    d.drift = Some("x".into());
    let pd = Policy {
        drift: DriftMode::Enabled,
        ..Policy::default()
    };
    let mut run = AlreadyRun::default();
    run.insert(ActionKind::DriftCorrection);
    assert_eq!(next_step(&d, &pd, &run).next, Next::Done);
}

#[test]
fn stale_lock_is_unlocked_fresh_lock_waits() {
    let mut o = in_sync();
    let mut r = rel(2, ReleaseStatus::PendingUpgrade);
    r.last_deployed = Some(now() - k8s_openapi::jiff::SignedDuration::from_secs(60));
    o.latest = Some(r);
    let p = Policy::default(); // upgrade timeout 5m
    assert_eq!(
        next_step(&o, &p, &AlreadyRun::default()).next,
        Next::WaitForLock(Duration::from_secs(240))
    );
    // Older than the timeout: unlock.
    o.now = now() + k8s_openapi::jiff::SignedDuration::from_secs(300);
    assert_eq!(
        next_step(&o, &p, &AlreadyRun::default()).next,
        Next::Run(Action::Unlock {
            from: ReleaseStatus::PendingUpgrade
        })
    );
    // Flux's behaviour on request: unlock at once.
    o.now = now();
    let flux = Policy {
        unlock_only_stale: false,
        ..Policy::default()
    };
    assert!(matches!(
        next_step(&o, &flux, &AlreadyRun::default()).next,
        Next::Run(Action::Unlock { .. })
    ));
    assert_eq!(
        unlock_description(ReleaseStatus::PendingUpgrade),
        "Release unlocked from stale 'pending-upgrade' state"
    );
}

// ---------------------------------------------------------------------------------------------
// Counters, reset, requeue

#[test]
fn retries_exhausted_counts_attempts() {
    assert!(!retries_exhausted(0, 0));
    assert!(retries_exhausted(0, 1));
    assert!(!retries_exhausted(3, 3));
    assert!(retries_exhausted(3, 4));
    assert!(!retries_exhausted(-1, 1_000_000));
}

#[test]
fn record_outcome_table() {
    let fail = |stored| ActionResult::Failed {
        error: "boom".into(),
        stored,
    };
    let p = Policy::default();
    let zero = Counters::default();
    let c = |f, i, u| Counters {
        failures: f,
        install_failures: i,
        upgrade_failures: u,
    };
    let up = Some(ReleaseAction::Upgrade);
    let target = Action::RollbackRemediation {
        target: snap(1, ReleaseStatus::Deployed),
    };
    let cases: Vec<(&str, Action, ActionResult, Policy, Counters)> = vec![
        (
            "install failed, stored",
            Action::Install,
            fail(true),
            p,
            c(1, 1, 0),
        ),
        (
            "install failed, nothing stored",
            Action::Install,
            fail(false),
            p,
            c(1, 0, 0),
        ),
        (
            "upgrade failed, stored",
            Action::Upgrade,
            fail(true),
            p,
            c(1, 0, 1),
        ),
        (
            "test failed, counted for upgrade",
            Action::Test,
            fail(true),
            p,
            c(1, 0, 1),
        ),
        (
            "test failed, not recorded",
            Action::Test,
            fail(false),
            p,
            c(1, 0, 0),
        ),
        // pennant: a failed remediation that stored a release counts against the retries
        ("rollback failed", target.clone(), fail(true), p, c(1, 0, 1)),
        (
            "rollback failed, nothing stored",
            target.clone(),
            fail(false),
            p,
            c(1, 0, 0),
        ),
        (
            "uninstall failed",
            Action::UninstallRemediation,
            fail(true),
            p,
            c(1, 0, 1),
        ),
        (
            "unlock failed",
            Action::Unlock {
                from: ReleaseStatus::PendingInstall,
            },
            fail(false),
            p,
            c(1, 0, 0),
        ),
        (
            "drift correction never counts",
            Action::CorrectDrift,
            fail(true),
            p,
            zero,
        ),
        (
            "upgrade succeeded keeps counters",
            Action::Upgrade,
            ActionResult::Succeeded,
            p,
            c(3, 1, 2),
        ),
    ];
    for (name, a, r, pol, want) in cases {
        let start = if name.contains("keeps") {
            c(3, 1, 2)
        } else {
            zero
        };
        assert_eq!(record_outcome(start, &a, &r, &pol, up), want, "{name}");
    }
    // Test failures ignored: only the total moves.
    let mut ign = p;
    ign.test.ignore_failures = true;
    assert_eq!(
        record_outcome(zero, &Action::Test, &fail(true), &ign, up),
        c(1, 0, 0)
    );
    // RetryOnFailure: a success clears every counter.
    let mut r = p;
    retry(&mut r, ReleaseAction::Upgrade);
    assert_eq!(
        record_outcome(
            c(3, 1, 2),
            &Action::Upgrade,
            &ActionResult::Succeeded,
            &r,
            up
        ),
        zero
    );
}

#[test]
fn reset_counters_table() {
    let base = AttemptInputs {
        generation: 2,
        last_attempted_generation: 2,
        chart_version: "6.5.0".into(),
        last_attempted_revision: "6.5.0".into(),
        config_digest: "sha256:a".into(),
        last_attempted_config_digest: "sha256:a".into(),
        reset_requested: false,
    };
    assert_eq!(reset_counters_needed(&base), None);
    let with = |f: &dyn Fn(&mut AttemptInputs)| {
        let mut i = base.clone();
        f(&mut i);
        reset_counters_needed(&i)
    };
    assert_eq!(with(&|i| i.generation = 3), Some(ResetReason::Generation));
    assert_eq!(
        with(&|i| i.chart_version = "6.6.0".into()),
        Some(ResetReason::ChartVersion)
    );
    // helm-controller#1031: a valuesFrom change alone resets the counters.
    assert_eq!(
        with(&|i| i.config_digest = "sha256:b".into()),
        Some(ResetReason::Values)
    );
    assert_eq!(with(&|i| i.last_attempted_config_digest.clear()), None);
    assert_eq!(
        with(&|i| i.reset_requested = true),
        Some(ResetReason::ResetRequested)
    );
    assert_eq!(
        ResetReason::Values.as_str(),
        "values differ from last attempt"
    );
}

#[test]
fn requeue_after_stall_is_the_interval() {
    let i = Duration::from_secs(600);
    assert_eq!(requeue_after(&stalled("x"), i), Some(i));
    assert_eq!(requeue_after(&Next::Done, i), Some(i));
    assert_eq!(requeue_after(&Next::MustRequeue, i), Some(Duration::ZERO));
    assert_eq!(
        requeue_after(&Next::RetryAfter(Duration::from_secs(60)), i),
        Some(Duration::from_secs(60))
    );
    assert_eq!(requeue_after(&Next::StateError("x".into()), i), None);
    assert_eq!(
        reconciling_for(&Next::RetryAfter(Duration::from_secs(300)), ""),
        Some((
            reasons::PROGRESSING_WITH_RETRY,
            "retrying after 5m0s".to_string()
        ))
    );
}

#[test]
fn effective_strategy_defaults_to_remediate() {
    let p = Policy::default();
    assert_eq!(
        p.effective_strategy(ReleaseAction::Upgrade),
        FailureStrategy::RemediateOnFailure
    );
    assert_eq!(p.active_retry(Some(ReleaseAction::Upgrade)), None);
    let gated = Policy {
        default_to_retry_on_failure: true,
        ..p
    };
    assert_eq!(
        gated.active_retry(Some(ReleaseAction::Install)),
        Some(DEFAULT_RETRY_INTERVAL)
    );
    // Upgrade remediateLastFailure defaults to retries > 0; install's to false.
    let mut r = p;
    r.upgrade.remediation.retries = 2;
    r.install.remediation.retries = 2;
    assert!(r.remediation(ReleaseAction::Upgrade).remediate_last_failure);
    assert!(!r.remediation(ReleaseAction::Install).remediate_last_failure);
    assert_eq!(
        r.remediation(ReleaseAction::Install).strategy,
        RemediationStrategy::Uninstall
    );
}

// ---------------------------------------------------------------------------------------------
// Messages and conditions

fn ctx<'a>(p: &'a Policy, d: &'a Desired, latest: Option<&'a Snapshot>) -> OutcomeContext<'a> {
    OutcomeContext {
        policy: p,
        release_name: NAME,
        release_namespace: NS,
        desired: d,
        counters: Counters::default(),
        last_action: Some(ReleaseAction::Upgrade),
        latest,
        unlocked: None,
    }
}

#[test]
fn outcome_messages_are_fluxs() {
    let p = tests_on();
    let d = in_sync().desired;
    let s1 = snap(1, ReleaseStatus::Deployed);
    let ok = ActionResult::Succeeded;
    let err = ActionResult::Failed {
        error: "timed out waiting for the condition\n".into(),
        stored: true,
    };
    let out = outcome(&Action::Install, &ok, &ctx(&p, &d, Some(&s1)));
    assert_eq!(
        out.marks[0].message,
        "Helm install succeeded for release default/podinfo.v1 with chart podinfo@6.5.0"
    );
    assert_eq!(out.marks[1].reason, reasons::AWAITING_TESTS);
    assert_eq!(
        out.marks[1].message,
        "Helm release default/podinfo.v1 with chart podinfo@6.5.0 is awaiting tests"
    );
    let out = outcome(&Action::Upgrade, &err, &ctx(&p, &d, Some(&s1)));
    assert_eq!(
        (out.marks[0].reason, out.marks[0].message.as_str()),
        (
            reasons::UPGRADE_FAILED,
            "Helm upgrade failed for release default/podinfo with chart podinfo@6.5.0: timed out waiting for the condition"
        )
    );
    assert!(out.event.as_ref().unwrap().warning);
    assert!(!out.retry_error);
    let out = outcome(
        &Action::RollbackRemediation { target: s1.clone() },
        &ok,
        &ctx(&p, &d, None),
    );
    assert_eq!(
        out.marks[0].message,
        "Helm rollback to previous release default/podinfo.v1 with chart podinfo@6.5.0 succeeded"
    );
    let t2 = tested(
        snap(2, ReleaseStatus::Deployed),
        &[("a", TestPhase::Succeeded), ("b", TestPhase::Succeeded)],
    );
    let out = outcome(&Action::Test, &ok, &ctx(&p, &d, Some(&t2)));
    assert_eq!(
        out.marks[0].message,
        "Helm test succeeded for release default/podinfo.v2 with chart podinfo@6.5.0: 2 test hooks completed successfully"
    );
    let out = outcome(
        &Action::Unlock {
            from: ReleaseStatus::PendingUpgrade,
        },
        &ok,
        &ctx(&p, &d, Some(&t2)),
    );
    assert_eq!(
        (
            out.marks[0].status,
            out.marks[0].reason,
            out.marks[0].message.as_str()
        ),
        (
            FALSE,
            reasons::PENDING_RELEASE,
            "Unlocked Helm release default/podinfo.v2 with chart podinfo@6.5.0 in pending-upgrade state"
        )
    );
    let out = outcome(
        &Action::UninstallRemediation,
        &ActionResult::Failed {
            error: "x".into(),
            stored: false,
        },
        &ctx(&p, &d, Some(&s1)),
    );
    assert!(out.retry_error);
    assert_eq!(
        out.marks[0].message,
        "Helm uninstall remediation for release default/podinfo.v1 with chart podinfo@6.5.0 failed: x"
    );
    assert_eq!(
        Action::Upgrade.running_message(&Policy::default()),
        "Running 'upgrade' action with timeout of 5m0s"
    );
    assert_eq!(with_logs("m", "l1"), "m\n\nLast Helm logs:\n\nl1");
}

#[test]
fn summarize_prefers_remediated_and_makes_ready_false() {
    let p = Policy::default();
    let mut c: Vec<Condition> = vec![];
    mark_false(
        &mut c,
        condition_types::RELEASED,
        reasons::UPGRADE_FAILED,
        "up failed",
        2,
        &t(),
    );
    mark_true(
        &mut c,
        condition_types::REMEDIATED,
        reasons::ROLLBACK_SUCCEEDED,
        "rolled back",
        2,
        &t(),
    );
    summarize(&mut c, &p, 2, &t());
    let ready = get(&c, "Ready").unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        (FALSE, reasons::ROLLBACK_SUCCEEDED, "rolled back")
    );
    // A newer Released wins over an older Remediated.
    mark_true(
        &mut c,
        condition_types::RELEASED,
        reasons::UPGRADE_SUCCEEDED,
        "up ok",
        3,
        &t(),
    );
    mark_true(&mut c, "Stalled", reasons::RETRIES_EXCEEDED, "x", 2, &t());
    summarize(&mut c, &p, 3, &t());
    let ready = get(&c, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        (TRUE, "up ok")
    );
    assert!(get(&c, "Stalled").is_none(), "Ready=True removes Stalled");
    // TestSuccess counts only when tests are on and failures not ignored.
    let mut c: Vec<Condition> = vec![];
    mark_true(
        &mut c,
        condition_types::RELEASED,
        reasons::UPGRADE_SUCCEEDED,
        "up ok",
        1,
        &t(),
    );
    mark_false(
        &mut c,
        condition_types::TEST_SUCCESS,
        reasons::TEST_FAILED,
        "tests failed",
        1,
        &t(),
    );
    let mut on = tests_on();
    summarize(&mut c, &on, 1, &t());
    assert_eq!(get(&c, "Ready").unwrap().message, "tests failed");
    on.test.ignore_failures = true;
    summarize(&mut c, &on, 1, &t());
    assert_eq!(get(&c, "Ready").unwrap().message, "up ok");
    summarize(&mut c, &Policy::default(), 1, &t());
    assert!(get(&c, condition_types::TEST_SUCCESS).is_none());
}

#[test]
fn in_sync_replaces_stale_conditions() {
    let p = Policy {
        drift: DriftMode::Warn,
        ..Policy::default()
    };
    let s = snap(3, ReleaseStatus::Deployed);
    let mut c: Vec<Condition> = vec![];
    mark_true(
        &mut c,
        condition_types::REMEDIATED,
        reasons::ROLLBACK_SUCCEEDED,
        "rb",
        1,
        &t(),
    );
    apply_state_effect(&mut c, &StateEffect::InSync, Some(&s), &p, 2, &t());
    assert!(get(&c, condition_types::REMEDIATED).is_none());
    let rel = get(&c, condition_types::RELEASED).unwrap();
    assert_eq!(
        (
            rel.status.as_str(),
            rel.reason.as_str(),
            rel.message.as_str()
        ),
        (
            TRUE,
            reasons::UPGRADE_SUCCEEDED,
            "Helm upgrade succeeded for release default/podinfo.v3 with chart podinfo@6.5.0"
        )
    );
    assert_eq!(
        get(&c, condition_types::DRIFTED).unwrap().reason,
        reasons::NO_DRIFT_DETECTED
    );
    // A stale InstallFailed becomes InstallSucceeded and Ready follows.
    let mut c: Vec<Condition> = vec![];
    mark_false(
        &mut c,
        condition_types::RELEASED,
        reasons::INSTALL_FAILED,
        "x",
        1,
        &t(),
    );
    apply_state_effect(&mut c, &StateEffect::InSync, Some(&s), &p, 2, &t());
    assert_eq!(get(&c, "Ready").unwrap().reason, reasons::INSTALL_SUCCEEDED);
    assert_eq!(get(&c, "Ready").unwrap().status, TRUE);
}

// ---------------------------------------------------------------------------------------------
// A simulated Helm storage driving the loop (TestAtomicRelease_Reconcile_Scenarios)

#[derive(Clone, Debug)]
struct Rel {
    revision: u32,
    status: ReleaseStatus,
    chart_version: String,
    config: String,
    hooks: Option<BTreeMap<String, TestPhase>>,
}

/// Failure script: which actions fail. `fail_upgrade_times` counts down.
#[derive(Clone, Debug, Default)]
struct Faults {
    install: bool,
    upgrade: u32,
    test: bool,
    rollback: bool,
    /// A failed rollback fails in its apply: Helm then relabels the release it rolled back from
    /// `superseded` (rollback.go), and the controller's history follows storage.
    rollback_relabels: bool,
}

#[derive(Clone, Debug)]
struct Sim {
    storage: Vec<Rel>,
    history: Vec<Snapshot>,
    counters: Counters,
    last_action: Option<ReleaseAction>,
    conditions: Vec<Condition>,
    desired: Desired,
    force: bool,
    faults: Faults,
}

fn to_snap(r: &Rel) -> Snapshot {
    Snapshot {
        name: NAME.into(),
        namespace: NS.into(),
        revision: r.revision,
        status: r.status,
        chart_name: "podinfo".into(),
        chart_version: r.chart_version.clone(),
        config_digest: r.config.clone(),
        test_hooks: r.hooks.clone(),
    }
}

impl Sim {
    fn new() -> Self {
        Sim {
            storage: vec![],
            history: vec![],
            counters: Counters::default(),
            last_action: None,
            conditions: vec![],
            desired: in_sync().desired,
            force: false,
            faults: Faults::default(),
        }
    }

    /// Revision 1 deployed by us.
    fn deployed() -> Self {
        let mut s = Self::new();
        s.push(ReleaseStatus::Deployed, "6.5.0", "sha256:a");
        s.last_action = Some(ReleaseAction::Install);
        s
    }

    fn push(&mut self, status: ReleaseStatus, version: &str, config: &str) {
        let revision = self.storage.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        if status == ReleaseStatus::Deployed {
            self.supersede();
        }
        let r = Rel {
            revision,
            status,
            chart_version: version.into(),
            config: config.into(),
            hooks: None,
        };
        self.history.insert(0, to_snap(&r));
        self.storage.push(r);
    }

    fn supersede(&mut self) {
        for r in &mut self.storage {
            if r.status == ReleaseStatus::Deployed {
                r.status = ReleaseStatus::Superseded;
                if let Some(s) = self.history.iter_mut().find(|s| s.revision == r.revision) {
                    s.status = ReleaseStatus::Superseded;
                }
            }
        }
    }

    fn observe(&self, p: &Policy) -> Observed {
        let latest = self.storage.iter().max_by_key(|r| r.revision);
        let top = latest_snapshot(&self.history);
        let latest_match = match (latest, top) {
            (Some(l), Some(s)) if l.revision == s.revision && l.status == s.status => {
                SnapshotMatch::Matches
            }
            _ => SnapshotMatch::NotObserved,
        };
        let rollback_target = match rollback_candidate(&self.history, p, self.last_action) {
            Some(c)
                if self
                    .storage
                    .iter()
                    .any(|r| r.revision == c.revision && r.status == c.status) =>
            {
                TargetCheck::Verified
            }
            Some(_) => TargetCheck::Disappeared,
            None => TargetCheck::Verified,
        };
        Observed {
            release_name: NAME.into(),
            release_namespace: NS.into(),
            latest: latest.map(|r| ReleaseInfo {
                name: NAME.into(),
                namespace: NS.into(),
                revision: r.revision,
                status: r.status,
                chart_name: "podinfo".into(),
                chart_version: r.chart_version.clone(),
                last_deployed: None,
            }),
            latest_match,
            history: self.history.clone(),
            rollback_target,
            desired: self.desired.clone(),
            counters: self.counters,
            last_action: self.last_action,
            force_requested: self.force,
            now: now(),
            ..Observed::default()
        }
    }

    /// Run one action against the simulated storage; returns its result.
    fn exec(&mut self, a: &Action) -> ActionResult {
        let fail = |stored| ActionResult::Failed {
            error: "boom".into(),
            stored,
        };
        let (v, cfg) = (
            self.desired.chart_version.clone(),
            self.desired.config_digest.clone(),
        );
        match a {
            Action::Install | Action::Upgrade => {
                let bad = if *a == Action::Install {
                    self.faults.install
                } else {
                    let b = self.faults.upgrade > 0;
                    self.faults.upgrade = self.faults.upgrade.saturating_sub(1);
                    b
                };
                if bad {
                    self.push(ReleaseStatus::Failed, &v, &cfg);
                    fail(true)
                } else {
                    self.push(ReleaseStatus::Deployed, &v, &cfg);
                    ActionResult::Succeeded
                }
            }
            Action::Test => {
                let phase = if self.faults.test {
                    TestPhase::Failed
                } else {
                    TestPhase::Succeeded
                };
                let hooks: BTreeMap<_, _> = [("t".to_string(), phase)].into();
                let rev = latest_snapshot(&self.history).unwrap().revision;
                self.history
                    .iter_mut()
                    .find(|s| s.revision == rev)
                    .unwrap()
                    .test_hooks = Some(hooks.clone());
                self.storage
                    .iter_mut()
                    .find(|r| r.revision == rev)
                    .unwrap()
                    .hooks = Some(hooks);
                if self.faults.test {
                    fail(true)
                } else {
                    ActionResult::Succeeded
                }
            }
            Action::RollbackRemediation { target } => {
                if self.faults.rollback {
                    if self.faults.rollback_relabels {
                        let cur = self.storage.iter_mut().max_by_key(|r| r.revision).unwrap();
                        cur.status = ReleaseStatus::Superseded;
                        let rev = cur.revision;
                        if let Some(s) = self.history.iter_mut().find(|s| s.revision == rev) {
                            s.status = ReleaseStatus::Superseded;
                        }
                    }
                    self.push(
                        ReleaseStatus::Failed,
                        &target.chart_version,
                        &target.config_digest,
                    );
                    fail(true)
                } else {
                    self.push(
                        ReleaseStatus::Deployed,
                        &target.chart_version,
                        &target.config_digest,
                    );
                    ActionResult::Succeeded
                }
            }
            Action::UninstallRemediation => {
                self.storage.clear();
                if let Some(s) = self.history.iter_mut().max_by_key(|s| s.revision) {
                    s.status = ReleaseStatus::Uninstalled;
                }
                ActionResult::Succeeded
            }
            Action::Unlock { .. } => {
                let r = self.storage.iter_mut().max_by_key(|r| r.revision).unwrap();
                r.status = ReleaseStatus::Failed;
                let rev = r.revision;
                if let Some(s) = self.history.iter_mut().find(|s| s.revision == rev) {
                    s.status = ReleaseStatus::Failed;
                }
                ActionResult::Succeeded
            }
            Action::CorrectDrift => ActionResult::Succeeded,
        }
    }

    /// One reconcile: the loop until it ends. Returns how it ended and the actions run.
    fn reconcile(&mut self, p: &Policy) -> (Next, Vec<Action>) {
        let mut run = AlreadyRun::default();
        let mut ran = vec![];
        for _ in 0..16 {
            let obs = self.observe(p);
            let step = next_step(&obs, p, &run);
            step.history.apply(&mut self.history);
            apply_state_effect(
                &mut self.conditions,
                &step.effect,
                latest_snapshot(&self.history),
                p,
                1,
                &t(),
            );
            let action = match step.next {
                Next::Run(a) => a,
                other => {
                    self.force = false;
                    if other == Next::Done {
                        summarize(&mut self.conditions, p, 1, &t());
                    }
                    return (other, ran);
                }
            };
            let prep = prepare(&action, p);
            if prep.last_action.is_some() {
                self.last_action = prep.last_action;
            }
            if prep.clear_history {
                self.history.clear();
            }
            for c in prep.remove_conditions {
                crate::gitops::conditions::remove_condition(&mut self.conditions, c);
            }
            let result = self.exec(&action);
            let out = outcome(
                &action,
                &result,
                &OutcomeContext {
                    policy: p,
                    release_name: NAME,
                    release_namespace: NS,
                    desired: &self.desired,
                    counters: self.counters,
                    last_action: self.last_action,
                    latest: latest_snapshot(&self.history),
                    unlocked: None,
                },
            );
            self.counters = out.counters;
            out.apply_conditions(&mut self.conditions, p, 1, &t());
            run.insert(action.kind());
            ran.push(action);
            if let Some(n) = out.stop {
                self.force = false;
                return (n, ran);
            }
            if out.retry_error {
                return (
                    on_action_error(p, self.last_action)
                        .unwrap_or(Next::StateError("retry".into())),
                    ran,
                );
            }
        }
        panic!("the loop did not end: {ran:?}");
    }
}

fn names(actions: &[Action]) -> Vec<&'static str> {
    actions.iter().map(Action::name).collect()
}

fn revisions(h: &[Snapshot]) -> Vec<u32> {
    let mut h = h.to_vec();
    h.sort_by_key(|s| std::cmp::Reverse(s.revision));
    h.iter().map(|s| s.revision).collect()
}

#[test]
fn scenarios_from_flux() {
    struct Case {
        name: &'static str,
        sim: Sim,
        policy: Policy,
        want: Next,
        actions: &'static [&'static str],
        history: &'static [u32],
    }
    let with = |mut s: Sim, f: &dyn Fn(&mut Sim)| {
        f(&mut s);
        s
    };
    let pol = |f: &dyn Fn(&mut Policy)| {
        let mut p = Policy::default();
        f(&mut p);
        p
    };
    let retry_install = pol(&|p| retry(p, ReleaseAction::Install));
    let retry_upgrade = pol(&|p| retry(p, ReleaseAction::Upgrade));
    let new_chart = |s: &mut Sim| s.desired.chart_version = "6.6.0".into();
    let cases = vec![
        Case {
            name: "release is in-sync",
            sim: Sim::deployed(),
            policy: Policy::default(),
            want: Next::Done,
            actions: &[],
            history: &[1],
        },
        Case {
            name: "release is out-of-sync (chart)",
            sim: with(Sim::deployed(), &new_chart),
            policy: Policy::default(),
            want: Next::Done,
            actions: &["upgrade"],
            history: &[2, 1],
        },
        Case {
            name: "release is out-of-sync (values)",
            sim: with(Sim::deployed(), &|s| {
                s.desired.config_digest = "sha256:b".into()
            }),
            policy: Policy::default(),
            want: Next::Done,
            actions: &["upgrade"],
            history: &[2, 1],
        },
        Case {
            name: "release is locked (pending-upgrade)",
            sim: with(Sim::deployed(), &|s| {
                s.push(ReleaseStatus::PendingUpgrade, "6.6.0", "sha256:a");
                s.last_action = Some(ReleaseAction::Upgrade);
                s.desired.chart_version = "6.6.0".into();
            }),
            policy: Policy {
                unlock_only_stale: false,
                ..Policy::default()
            },
            // unlock → failed with no failure counted → upgrade (rule c) → in sync.
            want: Next::Done,
            actions: &["unlock", "upgrade"],
            history: &[3, 2, 1],
        },
        Case {
            name: "release is not installed",
            sim: Sim::new(),
            policy: Policy::default(),
            want: Next::Done,
            actions: &["install"],
            history: &[1],
        },
        Case {
            name: "release exists but is not managed",
            sim: with(Sim::deployed(), &|s| s.history.clear()),
            policy: Policy::default(),
            want: Next::Done,
            actions: &["upgrade"],
            history: &[2],
        },
        Case {
            name: "release was upgraded outside of the reconciler",
            sim: with(Sim::deployed(), &|s| {
                s.storage.push(Rel {
                    revision: 2,
                    status: ReleaseStatus::Deployed,
                    chart_version: "6.5.0".into(),
                    config: "sha256:z".into(),
                    hooks: None,
                });
                s.storage[0].status = ReleaseStatus::Superseded;
            }),
            policy: Policy::default(),
            want: Next::Done,
            actions: &["upgrade"],
            history: &[3],
        },
        Case {
            name: "install failure",
            sim: with(Sim::new(), &|s| s.faults.install = true),
            policy: Policy::default(),
            want: stalled("Failed to install after 1 attempt(s)"),
            actions: &["install"],
            history: &[1],
        },
        Case {
            name: "install failure with remediation",
            sim: with(Sim::new(), &|s| s.faults.install = true),
            policy: pol(&|p| p.install.remediation.remediate_last_failure = Some(true)),
            want: stalled("Failed to install after 1 attempt(s)"),
            actions: &["install", "uninstall"],
            history: &[1],
        },
        Case {
            name: "install failure with retry",
            sim: with(Sim::new(), &|s| s.faults.install = true),
            policy: retry_install,
            want: Next::RetryAfter(Duration::from_secs(60)),
            actions: &["install"],
            history: &[1],
        },
        Case {
            name: "install test failure with remediation",
            sim: with(Sim::new(), &|s| s.faults.test = true),
            policy: pol(&|p| {
                p.install.remediation.remediate_last_failure = Some(true);
                p.test.enabled = true;
            }),
            want: stalled("Failed to install after 1 attempt(s)"),
            actions: &["install", "test", "uninstall"],
            history: &[1],
        },
        Case {
            name: "install test failure with retry",
            sim: with(Sim::new(), &|s| s.faults.test = true),
            policy: pol(&|p| {
                retry(p, ReleaseAction::Install);
                p.test.enabled = true;
            }),
            want: Next::RetryAfter(Duration::from_secs(60)),
            actions: &["install", "test"],
            history: &[1],
        },
        Case {
            name: "install test failure with test ignore",
            sim: with(Sim::new(), &|s| s.faults.test = true),
            policy: pol(&|p| {
                p.test.enabled = true;
                p.test.ignore_failures = true;
            }),
            want: Next::Done,
            actions: &["install", "test"],
            history: &[1],
        },
        Case {
            name: "install with exhausted retries after remediation",
            sim: with(Sim::new(), &|s| {
                s.history = vec![snap(1, ReleaseStatus::Uninstalling)];
                s.last_action = Some(ReleaseAction::Install);
                s.counters = Counters {
                    failures: 1,
                    install_failures: 1,
                    upgrade_failures: 0,
                };
            }),
            policy: Policy::default(),
            want: stalled("Failed to install after 1 attempt(s)"),
            actions: &[],
            history: &[1],
        },
        Case {
            name: "upgrade failure",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.upgrade = 9;
            }),
            policy: Policy::default(),
            want: stalled("Failed to upgrade after 1 attempt(s)"),
            actions: &["upgrade"],
            history: &[2, 1],
        },
        Case {
            name: "upgrade failure with rollback remediation",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.upgrade = 9;
            }),
            policy: pol(&|p| p.upgrade.remediation.remediate_last_failure = Some(true)),
            want: stalled("Failed to upgrade after 1 attempt(s)"),
            actions: &["upgrade", "rollback"],
            history: &[3, 2, 1],
        },
        Case {
            name: "upgrade failure with uninstall remediation",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.upgrade = 9;
            }),
            policy: pol(&|p| {
                p.upgrade.remediation.remediate_last_failure = Some(true);
                p.upgrade.remediation_strategy = RemediationStrategy::Uninstall;
            }),
            want: Next::MustRequeue,
            actions: &["upgrade", "uninstall"],
            history: &[2, 1],
        },
        Case {
            name: "upgrade failure with retry",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.upgrade = 9;
            }),
            policy: retry_upgrade,
            want: Next::RetryAfter(Duration::from_secs(60)),
            actions: &["upgrade"],
            history: &[2, 1],
        },
        Case {
            name: "upgrade test failure with remediation",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.test = true;
            }),
            policy: pol(&|p| {
                p.upgrade.remediation.remediate_last_failure = Some(true);
                p.test.enabled = true;
            }),
            want: stalled("Failed to upgrade after 1 attempt(s)"),
            actions: &["upgrade", "test", "rollback"],
            history: &[3, 2, 1],
        },
        Case {
            name: "upgrade test failure with test ignore",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.faults.test = true;
            }),
            policy: pol(&|p| {
                p.test.enabled = true;
                p.test.ignore_failures = true;
            }),
            want: Next::Done,
            actions: &["upgrade", "test"],
            history: &[2, 1],
        },
        Case {
            name: "upgrade with exhausted retries after remediation",
            sim: with(Sim::deployed(), &|s| {
                new_chart(s);
                s.last_action = Some(ReleaseAction::Upgrade);
                s.counters = Counters {
                    failures: 1,
                    install_failures: 0,
                    upgrade_failures: 1,
                };
            }),
            policy: Policy::default(),
            want: stalled("Failed to upgrade after 1 attempt(s)"),
            actions: &[],
            history: &[1],
        },
        Case {
            name: "upgrade remediation results in exhausted retries",
            sim: with(Sim::deployed(), &|s| {
                s.push(ReleaseStatus::Deployed, "6.5.0", "sha256:a");
                s.push(ReleaseStatus::Failed, "6.6.0", "sha256:a");
                s.last_action = Some(ReleaseAction::Upgrade);
                s.counters = Counters {
                    failures: 2,
                    install_failures: 0,
                    upgrade_failures: 2,
                };
            }),
            policy: pol(&|p| p.upgrade.remediation.retries = 1),
            want: stalled("Failed to upgrade after 2 attempt(s)"),
            actions: &["rollback"],
            history: &[4, 3, 2],
        },
    ];
    for c in cases {
        let mut sim = c.sim;
        let (next, ran) = sim.reconcile(&c.policy);
        assert_eq!(next, c.want, "{}: {ran:?}", c.name);
        assert_eq!(names(&ran), c.actions, "{}", c.name);
        assert_eq!(revisions(&sim.history), c.history, "{}", c.name);
    }
}

#[test]
fn remediated_release_is_not_ready_then_recovers() {
    // upgrade fails once, is rolled back (Ready=False: remediated), the next reconcile upgrades
    // again and succeeds (Ready=True).
    let mut sim = Sim::deployed();
    sim.desired.chart_version = "6.6.0".into();
    sim.faults.upgrade = 1;
    let p = pol_retries(1);
    let (next, ran) = sim.reconcile(&p);
    assert_eq!(
        (next, names(&ran)),
        (Next::MustRequeue, vec!["upgrade", "rollback"])
    );
    let ready = get(&sim.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        (FALSE, reasons::ROLLBACK_SUCCEEDED)
    );
    let (next, ran) = sim.reconcile(&p);
    assert_eq!((next, names(&ran)), (Next::Done, vec!["upgrade"]));
    let ready = get(&sim.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        (TRUE, reasons::UPGRADE_SUCCEEDED)
    );
    assert!(get(&sim.conditions, condition_types::REMEDIATED).is_none());
}

fn pol_retries(n: i64) -> Policy {
    let mut p = Policy::default();
    p.upgrade.remediation.retries = n;
    p.install.remediation.retries = n;
    p
}

#[test]
fn values_change_after_stall_retries() {
    // helm-controller#1031: stalled on retries, then a valuesFrom change (new config digest)
    // resets the counters and the next reconcile (at the interval, requeue_after) upgrades.
    let mut sim = Sim::deployed();
    sim.desired.chart_version = "6.6.0".into();
    sim.faults.upgrade = 1;
    let p = Policy::default();
    let (next, _) = sim.reconcile(&p);
    assert!(matches!(next, Next::Stalled { .. }));
    assert_eq!(
        requeue_after(&next, Duration::from_secs(600)),
        Some(Duration::from_secs(600))
    );
    sim.desired.config_digest = "sha256:fixed".into();
    let inputs = AttemptInputs {
        config_digest: sim.desired.config_digest.clone(),
        last_attempted_config_digest: "sha256:a".into(),
        ..AttemptInputs::default()
    };
    assert_eq!(reset_counters_needed(&inputs), Some(ResetReason::Values));
    assert!(
        !resume_after_stall(true, None, false),
        "unchanged: stays stalled"
    );
    assert!(resume_after_stall(
        true,
        reset_counters_needed(&inputs),
        false
    ));
    assert!(resume_after_stall(true, None, true), "forced");
    sim.counters = Counters::default();
    let (next, ran) = sim.reconcile(&p);
    assert_eq!((next, names(&ran)), (Next::Done, vec!["upgrade"]));
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        -1i64..4,
        -1i64..4,
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(|(ir, ur, irl, url, uninstall, tests, ignore, retry_mode)| {
            let mut p = Policy::default();
            p.install.remediation = Remediation {
                retries: ir,
                ignore_test_failures: None,
                remediate_last_failure: irl,
            };
            p.upgrade.remediation = Remediation {
                retries: ur,
                ignore_test_failures: None,
                remediate_last_failure: url,
            };
            if uninstall {
                p.upgrade.remediation_strategy = RemediationStrategy::Uninstall;
            }
            p.test.enabled = tests;
            p.test.ignore_failures = ignore;
            if retry_mode & 1 == 1 {
                retry(&mut p, ReleaseAction::Install);
            }
            if retry_mode & 2 == 2 {
                retry(&mut p, ReleaseAction::Upgrade);
            }
            p
        })
}

fn arb_faults() -> impl Strategy<Value = Faults> {
    (
        any::<bool>(),
        0u32..6,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(install, upgrade, test, rollback, rollback_relabels)| Faults {
                install,
                upgrade,
                test,
                rollback,
                rollback_relabels,
            },
        )
}

proptest! {
    /// Within one reconcile: each action kind at most once, at most one remediation, and a
    /// remediation is always the last action; the loop always ends.
    #[test]
    fn one_reconcile_runs_each_kind_once(
        p in arb_policy(),
        faults in arb_faults(),
        start_deployed in any::<bool>(),
        new_chart in any::<bool>(),
        reconciles in 1usize..6,
    ) {
        let mut sim = if start_deployed { Sim::deployed() } else { Sim::new() };
        sim.faults = faults;
        if new_chart {
            sim.desired.chart_version = "6.6.0".into();
        }
        for _ in 0..reconciles {
            let (next, ran) = sim.reconcile(&p);
            let kinds: Vec<ActionKind> = ran.iter().map(Action::kind).collect();
            for k in &kinds {
                prop_assert_eq!(kinds.iter().filter(|x| *x == k).count(), 1, "{:?}", ran);
            }
            if let Some(i) = kinds.iter().position(|k| *k == ActionKind::Remediate) {
                prop_assert_eq!(i, kinds.len() - 1, "remediation is last: {:?}", ran);
            }
            // A stalled release is left alone at the next interval unless something changed;
            // decided again (a manual reconcile) it upgrades or installs only when forced.
            // (It may still test a rolled-back release, or retry a failed rollback.)
            if let Next::Stalled { .. } = next {
                let obs = sim.observe(&p);
                let again = next_step(&obs, &p, &AlreadyRun::default());
                let releases = matches!(
                    &again.next,
                    Next::Run(a) if a.kind() == ActionKind::Release
                );
                prop_assert!(!releases, "{:?}", again);
                prop_assert!(!resume_after_stall(true, None, false));
            }
        }
    }

    /// `retries: N` with an upgrade that always fails allows exactly N+1 upgrade attempts
    /// before Stalled (RemediateOnFailure, rollback in between).
    #[test]
    fn upgrade_retries_allow_n_plus_one_attempts(n in 0i64..5, remediate_last in any::<bool>()) {
        let mut p = pol_retries(n);
        p.upgrade.remediation.remediate_last_failure = Some(remediate_last);
        let mut sim = Sim::deployed();
        sim.desired.chart_version = "6.6.0".into();
        sim.faults.upgrade = u32::MAX;
        let mut upgrades = 0;
        let mut stalled_at = None;
        for i in 0..30 {
            let (next, ran) = sim.reconcile(&p);
            upgrades += ran.iter().filter(|a| **a == Action::Upgrade).count();
            if let Next::Stalled { reason, message } = next {
                prop_assert_eq!(reason, StallReason::RetriesExceeded);
                prop_assert_eq!(message, format!("Failed to upgrade after {} attempt(s)", n + 1));
                stalled_at = Some(i);
                break;
            }
        }
        prop_assert!(stalled_at.is_some());
        prop_assert_eq!(upgrades as i64, n + 1);
        prop_assert_eq!(sim.counters.upgrade_failures, n + 1);
    }

    /// The same for install (uninstall remediation in between).
    #[test]
    fn install_retries_allow_n_plus_one_attempts(n in 0i64..5) {
        let p = pol_retries(n);
        let mut sim = Sim::new();
        sim.faults.install = true;
        let mut installs = 0;
        let mut stalled = false;
        for _ in 0..30 {
            let (next, ran) = sim.reconcile(&p);
            installs += ran.iter().filter(|a| **a == Action::Install).count();
            if matches!(next, Next::Stalled { .. }) {
                stalled = true;
                break;
            }
        }
        prop_assert!(stalled);
        prop_assert_eq!(installs as i64, n + 1);
    }

    /// Negative retries never stall.
    #[test]
    fn negative_retries_never_stall(reconciles in 1usize..12) {
        let p = pol_retries(-1);
        let mut sim = Sim::deployed();
        sim.desired.chart_version = "6.6.0".into();
        sim.faults.upgrade = u32::MAX;
        for _ in 0..reconciles {
            let (next, _) = sim.reconcile(&p);
            let stalled = matches!(next, Next::Stalled { .. });
            prop_assert!(!stalled, "{:?}", next);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A failed remediation (break-it finding 00b) and locks this controller left

/// The rollback target is the last release that deployed: a failed upgrade or failed rollback
/// Helm relabelled `superseded` (a rollback whose apply failed) is never one; Truncate keeps
/// the history down to that target.
#[test]
fn rollback_target_skips_failed_releases_relabelled_superseded() {
    use ReleaseStatus::*;
    let bad_test = |r| tested(snap(r, Deployed), &[("t", TestPhase::Failed)]);
    struct Case {
        name: &'static str,
        history: Vec<Snapshot>,
        ignore_tests: bool,
        want: Option<u32>,
        kept: &'static [u32],
    }
    let cases = [
        Case {
            name: "failed rollbacks relabelled superseded: the deployed v2",
            history: vec![
                snap(5, Failed),
                snap(4, Superseded),
                snap(3, Superseded),
                snap(2, Deployed),
                snap(1, Superseded),
            ],
            ignore_tests: false,
            want: Some(2),
            kept: &[5, 4, 3, 2],
        },
        Case {
            name: "unordered history",
            history: vec![
                snap(2, Deployed),
                snap(4, Superseded),
                snap(1, Superseded),
                snap(5, Failed),
            ],
            ignore_tests: false,
            want: Some(2),
            kept: &[5, 4, 2],
        },
        Case {
            name: "a successful rollback superseded the older ones: the newest superseded",
            history: vec![
                snap(4, Failed),
                snap(3, Deployed),
                snap(2, Failed),
                snap(1, Superseded),
            ],
            ignore_tests: false,
            want: Some(3),
            kept: &[4, 3],
        },
        Case {
            name: "no deployed one: Flux's rule",
            history: vec![snap(3, Failed), snap(2, Superseded), snap(1, Superseded)],
            ignore_tests: false,
            want: Some(2),
            kept: &[3, 2],
        },
        Case {
            name: "the deployed one failed its tests: an older superseded one",
            history: vec![
                snap(4, Failed),
                snap(3, Superseded),
                bad_test(2),
                snap(1, Superseded),
            ],
            ignore_tests: false,
            want: Some(1),
            kept: &[4, 3, 2, 1],
        },
        Case {
            name: "the deployed one failed its tests, ignored",
            history: vec![
                snap(4, Failed),
                snap(3, Superseded),
                bad_test(2),
                snap(1, Superseded),
            ],
            ignore_tests: true,
            want: Some(2),
            kept: &[4, 3, 2],
        },
        Case {
            name: "in sync (latest deployed): the newest superseded, as Flux",
            history: vec![snap(3, Deployed), snap(2, Failed), snap(1, Superseded)],
            ignore_tests: false,
            want: Some(1),
            kept: &[3, 2, 1],
        },
        Case {
            name: "only failures",
            history: vec![snap(2, Failed), snap(1, Failed)],
            ignore_tests: false,
            want: None,
            kept: &[2, 1],
        },
    ];
    for c in cases {
        let got = previous_snapshot(&c.history, c.ignore_tests).map(|s| s.revision);
        assert_eq!(got, c.want, "{}", c.name);
        let mut h = c.history.clone();
        HistoryEdit::Truncate {
            ignore_tests: c.ignore_tests,
        }
        .apply(&mut h);
        assert_eq!(revisions(&h), c.kept, "{}: truncated", c.name);
    }
    // the decision rolls back to it
    let mut o = failed_upgrade();
    o.latest = Some(rel(5, Failed));
    o.history = vec![
        snap(5, Failed),
        snap(4, Superseded),
        snap(3, Superseded),
        snap(2, Deployed),
    ];
    o.counters.upgrade_failures = 1;
    let p = pol_retries(3);
    let step = next_step(&o, &p, &AlreadyRun::default());
    assert_eq!(
        step.next,
        Next::Run(Action::RollbackRemediation {
            target: snap(2, Deployed)
        })
    );
    assert_eq!(
        rollback_candidate(&o.history, &p, o.last_action).map(|s| s.revision),
        Some(2)
    );
}

/// A failed rollback or uninstall remediation that changed storage counts against the active
/// remediation's retries and ends the reconcile with the error backoff, or Stalled once
/// exhausted; one that changed nothing is a retry error (backoff too). Never `MustRequeue`.
#[test]
fn failed_remediation_backs_off_then_stalls() {
    let d = in_sync().desired;
    let latest = snap(3, ReleaseStatus::Failed);
    let target = snap(1, ReleaseStatus::Deployed);
    let rollback = Action::RollbackRemediation {
        target: target.clone(),
    };
    let fail = |stored| ActionResult::Failed {
        error: "context deadline exceeded".into(),
        stored,
    };
    let msg = format!(
        "Helm rollback to previous release {NS}/{NAME}.v1 with chart podinfo@6.5.0 failed: \
         context deadline exceeded"
    );
    let p = pol_retries(2);
    let mut c = ctx(&p, &d, Some(&latest));
    c.counters = Counters {
        failures: 1,
        install_failures: 0,
        upgrade_failures: 1,
    };
    // retries left: backoff, counted as an upgrade attempt
    let out = outcome(&rollback, &fail(true), &c);
    assert_eq!(out.stop, Some(Next::Backoff(msg.clone())));
    assert!(!out.retry_error);
    assert_eq!(
        out.counters,
        Counters {
            failures: 2,
            install_failures: 0,
            upgrade_failures: 2,
        }
    );
    assert_eq!(
        requeue_after(out.stop.as_ref().unwrap(), Duration::from_secs(300)),
        None
    );
    assert_eq!(
        reconciling_for(out.stop.as_ref().unwrap(), "ready"),
        Some((reasons::PROGRESSING_WITH_RETRY, "ready".to_string()))
    );
    // exhausted: Stalled
    c.counters = out.counters;
    let out = outcome(&rollback, &fail(true), &c);
    assert_eq!(out.counters.upgrade_failures, 3);
    assert_eq!(
        out.stop,
        Some(stalled("Failed to upgrade after 3 attempt(s)"))
    );
    // nothing stored: a retry error (backoff), not counted against the retries
    let out = outcome(&rollback, &fail(false), &c);
    assert!(out.retry_error);
    assert_eq!(out.stop, None);
    assert_eq!(out.counters.upgrade_failures, 2);
    assert_eq!(on_action_error(&p, c.last_action), None);
    // uninstall remediation after an install: the install counter
    let mut pi = Policy::default();
    pi.install.remediation.retries = 1;
    let mut ci = ctx(&pi, &d, Some(&latest));
    ci.last_action = Some(ReleaseAction::Install);
    ci.counters.install_failures = 1;
    let out = outcome(&Action::UninstallRemediation, &fail(true), &ci);
    assert_eq!(out.counters.install_failures, 2);
    assert_eq!(
        out.stop,
        Some(stalled("Failed to install after 2 attempt(s)"))
    );
    // a successful rollback still requeues to retry the upgrade
    let out = outcome(&rollback, &ActionResult::Succeeded, &c);
    assert_eq!(out.stop, None);
    assert_eq!(out.counters, c.counters);
}

/// The break-it repro: `retries` left, the upgrade fails, every rollback fails in its apply
/// (Helm relabels the release it rolled back from `superseded`). Each reconcile runs one
/// rollback, always to revision 1, ends with the backoff, and the release stalls once the
/// retries are spent; before, it rolled back once a second forever, to alternating targets.
#[test]
fn failing_rollbacks_target_the_last_good_release_back_off_and_stall() {
    let p = pol_retries(3);
    let mut sim = Sim::deployed();
    sim.desired.chart_version = "6.6.0".into();
    sim.faults = Faults {
        upgrade: 100,
        rollback: true,
        rollback_relabels: true,
        ..Faults::default()
    };
    let mut ends = vec![];
    let mut targets = vec![];
    for _ in 0..3 {
        let (next, ran) = sim.reconcile(&p);
        for a in &ran {
            if let Action::RollbackRemediation { target } = a {
                targets.push(target.revision);
            }
        }
        assert_eq!(ran.len(), if ends.is_empty() { 2 } else { 1 }, "{ran:?}");
        ends.push(next);
    }
    assert_eq!(targets, [1, 1, 1]);
    let backoff = Next::Backoff(format!(
        "Helm rollback to previous release {NS}/{NAME}.v1 with chart podinfo@6.5.0 failed: boom"
    ));
    assert_eq!(ends[..2], [backoff.clone(), backoff]);
    assert_eq!(ends[2], stalled("Failed to upgrade after 4 attempt(s)"));
    assert!(!resume_after_stall(true, None, false));
    assert_eq!(
        sim.counters,
        Counters {
            failures: 4,
            install_failures: 0,
            upgrade_failures: 4,
        }
    );
    // Helm relabelled revisions 2..4 superseded; revision 1 is still deployed and recorded
    use ReleaseStatus::*;
    assert_eq!(
        sim.storage.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Deployed, Superseded, Superseded, Superseded, Failed]
    );
    assert!(sim.history.iter().any(|s| s.revision == 1));
}

fn at(secs: i64) -> Timestamp {
    now() + k8s_openapi::jiff::SignedDuration::from_secs(secs)
}

fn reconciling(status: &str, reason: &str, message: &str, since: Timestamp) -> Vec<Condition> {
    vec![Condition {
        type_: "Reconciling".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: Time(since),
    }]
}

#[test]
fn the_running_action_is_read_from_reconciling() {
    let running = "Running 'upgrade' action with timeout of 1m30s";
    assert_eq!(
        in_flight_action(&reconciling("True", "Progressing", running, at(0))),
        Some(InFlight {
            action: "upgrade".into(),
            since: at(0)
        })
    );
    let p = Policy::default();
    let msg = Action::RollbackRemediation {
        target: snap(1, ReleaseStatus::Deployed),
    }
    .running_message(&p);
    assert_eq!(
        in_flight_action(&reconciling("True", "Progressing", &msg, at(0))).map(|f| f.action),
        Some("rollback".into())
    );
    for (status, reason, message) in [
        ("True", "ProgressingWithRetry", running),
        ("False", "Progressing", running),
        ("True", "Progressing", "Fulfilling prerequisites"),
        ("True", "Progressing", "Running 'upgrade'"),
    ] {
        assert_eq!(
            in_flight_action(&reconciling(status, reason, message, at(0))),
            None,
            "{status} {reason} {message}"
        );
    }
    assert_eq!(in_flight_action(&[]), None);
}

/// A pending release this controller wrote (its status still says the action runs, and Helm
/// wrote the pending revision after that) is unlocked at once; any other waits out the
/// action's timeout.
#[test]
fn own_pending_release_is_unlocked_at_once() {
    use ReleaseStatus::*;
    let p = Policy::default(); // every timeout 5m
    let fl = |action: &str, since| {
        Some(InFlight {
            action: action.into(),
            since,
        })
    };
    struct Case {
        name: &'static str,
        pending: ReleaseStatus,
        written: i64,
        in_flight: Option<InFlight>,
        unlock: bool,
    }
    let cases = [
        Case {
            name: "ours: upgrade written 2s after the marker",
            pending: PendingUpgrade,
            written: -58,
            in_flight: fl("upgrade", at(-60)),
            unlock: true,
        },
        Case {
            name: "ours: same second as the marker",
            pending: PendingInstall,
            written: -10,
            in_flight: fl("install", at(-10)),
            unlock: true,
        },
        Case {
            name: "ours: rollback",
            pending: PendingRollback,
            written: -5,
            in_flight: fl("rollback", at(-6)),
            unlock: true,
        },
        Case {
            name: "ours: uninstall",
            pending: Uninstalling,
            written: -5,
            in_flight: fl("uninstall", at(-6)),
            unlock: true,
        },
        Case {
            name: "written before our action started: someone else's",
            pending: PendingUpgrade,
            written: -70,
            in_flight: fl("upgrade", at(-60)),
            unlock: false,
        },
        Case {
            name: "another action than ours",
            pending: PendingUpgrade,
            written: -58,
            in_flight: fl("rollback", at(-60)),
            unlock: false,
        },
        Case {
            name: "no action marked running",
            pending: PendingUpgrade,
            written: -58,
            in_flight: None,
            unlock: false,
        },
    ];
    for c in cases {
        let mut o = in_sync();
        let mut r = rel(2, c.pending);
        r.last_deployed = Some(at(c.written));
        o.latest = Some(r.clone());
        o.in_flight = c.in_flight.clone();
        assert_eq!(
            pending_is_ours(&r, c.in_flight.as_ref()),
            c.unlock,
            "{}",
            c.name
        );
        let next = next_step(&o, &p, &AlreadyRun::default()).next;
        if c.unlock {
            assert_eq!(
                next,
                Next::Run(Action::Unlock { from: c.pending }),
                "{}",
                c.name
            );
        } else {
            let wait = Duration::from_secs((300 + c.written) as u64);
            assert_eq!(next, Next::WaitForLock(wait), "{}", c.name);
        }
    }
    // no last_deployed: never ours (and not stale-checkable: unlocked, as before)
    let r = rel(2, PendingUpgrade);
    assert!(!pending_is_ours(&r, fl("upgrade", at(0)).as_ref()));
}

proptest! {
    /// A failed remediation never requeues at once: it ends the reconcile with the error
    /// backoff, a RetryAfter, or Stalled — whatever the policy, counters and storage effect.
    #[test]
    fn a_failed_remediation_never_requeues_immediately(
        p in arb_policy(),
        install_failures in 0i64..6,
        upgrade_failures in 0i64..6,
        upgrade in any::<bool>(),
        rollback in any::<bool>(),
        stored in any::<bool>(),
    ) {
        let d = in_sync().desired;
        let latest = snap(3, ReleaseStatus::Failed);
        let mut c = ctx(&p, &d, Some(&latest));
        c.last_action = Some(if upgrade { ReleaseAction::Upgrade } else { ReleaseAction::Install });
        c.counters = Counters { failures: install_failures + upgrade_failures, install_failures, upgrade_failures };
        let action = if rollback {
            Action::RollbackRemediation { target: snap(1, ReleaseStatus::Deployed) }
        } else {
            Action::UninstallRemediation
        };
        let out = outcome(&action, &ActionResult::Failed { error: "x".into(), stored }, &c);
        prop_assert_eq!(out.counters.failures, c.counters.failures + 1);
        let end = match (&out.stop, out.retry_error) {
            (Some(n), false) => Some(n.clone()),
            (None, true) => on_action_error(&p, c.last_action),
            other => return Err(TestCaseError::fail(format!("no end: {other:?}"))),
        };
        if let Some(n) = end {
            prop_assert!(
                matches!(n, Next::Backoff(_) | Next::RetryAfter(_) | Next::Stalled { .. }),
                "{:?}", n
            );
            prop_assert_ne!(requeue_after(&n, Duration::from_secs(300)), Some(Duration::ZERO));
        }
    }

    /// Driven end to end: a reconcile whose remediation failed never ends in MustRequeue.
    #[test]
    fn a_reconcile_with_a_failed_remediation_backs_off(
        p in arb_policy(),
        faults in arb_faults(),
        reconciles in 1usize..6,
    ) {
        let mut sim = Sim::deployed();
        sim.faults = faults;
        sim.desired.chart_version = "6.6.0".into();
        for _ in 0..reconciles {
            let (next, ran) = sim.reconcile(&p);
            let failed_remediation = sim.faults.rollback
                && ran.iter().any(|a| matches!(a, Action::RollbackRemediation { .. }));
            if failed_remediation {
                prop_assert_ne!(&next, &Next::MustRequeue, "{:?}", ran);
            }
        }
    }
}
