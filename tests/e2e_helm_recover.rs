//! The helm controller killed mid-upgrade (issue 15, "controller killed mid-upgrade → the
//! release is recovered; `helm history` agrees with status"): pennant's source and helm
//! controllers (`--controllers source,helm`), a real HTTP Helm repository, the real `helm` CLI.
//!
//! A chart version whose pods never get Ready (kwok keeps them `Ready=False`,
//! `support::charts::ChartSpec::never_ready`) makes the upgrade wait for its `upgrade.timeout`:
//! `helm upgrade --wait` when the chart has a post-upgrade hook, pennant's own wait after
//! `helm upgrade --wait=hookOnly` otherwise (`engine::waits_itself`; one test each). The
//! controller process is killed (SIGKILL, as a crash or an evicted pod) while the release is
//! `pending-upgrade`, and a `helm` child dies with it (PR_SET_PDEATHSIG, `engine.rs`). The
//! restarted controller finds the release locked by the action its status
//! still shows running (`Reconciling` "Running 'upgrade' action …", written before the pending
//! revision): that lock is its own (`decide::pending_is_ours`), so it is unlocked at once, well
//! before the action's timeout (Helm storage: `failed`, "Release unlocked from stale
//! 'pending-upgrade' state"; a lock someone else holds still waits out its timeout,
//! `decide::Policy::unlock_only_stale`, helm#11863); a good chart version then upgrades.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::charts::ChartSpec;
use support::helmrepo::HelmRepo;
use support::hr::*;
use support::*;

/// The upgrade timeout: long enough to kill the controller mid-wait, short enough for a test.
const TIMEOUT_S: u64 = 40;

/// Every descendant of `pid` (children first found by `ps --ppid`), deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let o = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &p.to_string()])
            .output()
            .unwrap();
        for c in String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse::<u32>().ok())
        {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

/// (revision, status, description, chart) of `helm history`, oldest first.
fn helm_history_full(ns: &str) -> Vec<(i64, String, String, String)> {
    helm_json(ns, &["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
                r["description"].as_str().unwrap_or_default().to_string(),
                r["chart"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// helm waits (the chart has a post-upgrade hook): its `helm upgrade` child dies with the
/// controller.
#[tokio::test]
async fn controller_killed_mid_upgrade_recovers_the_release() {
    killed_mid_upgrade(true).await
}

/// pennant waits itself (no post-upgrade hook; `helm --wait=hookOnly` has exited): the revision
/// is `pending-upgrade` all the same while it waits, and recovered the same way.
#[tokio::test]
async fn controller_killed_in_its_own_wait_recovers_the_release() {
    killed_mid_upgrade(false).await
}

async fn killed_mid_upgrade(helm_waits: bool) {
    let client = client().await;
    let prefix = if helm_waits {
        "hr-e2e-recover"
    } else {
        "hr-e2e-recover-own"
    };
    let ns = TestNs::new(&client, prefix, 0).await;
    let storage = tempfile::tempdir().unwrap();
    let mut ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").publish(&repo);
    let mut bad = ChartSpec::new("app", "2.0.0").never_ready();
    if helm_waits {
        bad = bad.post_upgrade_hook();
    }
    bad.publish(&repo);
    ChartSpec::new("app", "3.0.0").publish(&repo);
    helm_repository(&ns, &repo.url).await;
    let extra = format!("  upgrade:\n    timeout: {TIMEOUT_S}s\n");
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", &extra)).await;
    wait_hr(&ns, "web", "installed", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;

    // the upgrade to 2.0.0 waits for pods that never get Ready
    ns.apply_yaml(&hr_yaml("web", "app", "2.0.0", &extra)).await;
    wait_until(Duration::from_secs(60), "pending-upgrade", || async {
        helm_history(&ns.name, "web").last() == Some(&(2, "pending-upgrade".to_string()))
    })
    .await;
    let pending_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let children = descendants(ctl.pid());
    let helms: Vec<u32> = children
        .iter()
        .copied()
        .filter(|p| command_of(*p).contains("upgrade"))
        .collect();
    assert_eq!(
        !helms.is_empty(),
        helm_waits,
        "a helm upgrade child runs only when helm waits: {:?}",
        children.iter().map(|p| command_of(*p)).collect::<Vec<_>>()
    );
    // only the controller is killed: its helm child dies with it
    ctl.kill();
    let gone = |p: &u32| {
        !std::path::Path::new(&format!("/proc/{p}")).exists()
            || std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z "))
    };
    wait_until(
        Duration::from_secs(5),
        "helm died with the controller",
        || async { helms.iter().all(gone) },
    )
    .await;
    for p in &children {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    // nobody finishes the upgrade: still pending
    assert_eq!(
        helm_history(&ns.name, "web").last(),
        Some(&(2, "pending-upgrade".to_string()))
    );
    let h = get_hr(&ns, "web").await.unwrap();
    assert_eq!(
        cond(&h, "Ready").map(|c| c.0).as_deref(),
        Some("Unknown"),
        "killed while running the upgrade: {:?}",
        h.status.as_ref().map(|s| &s.conditions)
    );

    // restart: the lock is the killed controller's own, unlocked at once (Helm storage:
    // failed), long before the 40 s timeout
    let log = format!("{}-restarted", ns.name);
    let restarted = Instant::now();
    let _ctl = start_controllers(&ns.name, &log, "source,helm", storage.path(), &[]);
    // (its start reconciles every HelmRelease; no request needed)
    wait_until(Duration::from_secs(30), "revision 2 unlocked", || async {
        helm_history_full(&ns.name)
            .iter()
            .any(|r| r.0 == 2 && r.1 == "failed")
    })
    .await;
    assert!(
        pending_since.elapsed() < Duration::from_secs(TIMEOUT_S - 10)
            && restarted.elapsed() < Duration::from_secs(20),
        "unlocked {:?} after the restart, {:?} after the lock",
        restarted.elapsed(),
        pending_since.elapsed()
    );
    let log_text = std::fs::read_to_string(ControllerProcess::log_path(&format!("helm-{log}")))
        .unwrap_or_default();
    assert!(
        !log_text.contains("WaitForLock"),
        "the restarted controller waited for its own lock"
    );
    let rev2 = helm_history_full(&ns.name)
        .into_iter()
        .find(|r| r.0 == 2)
        .unwrap();
    assert_eq!(
        rev2.2,
        "Release unlocked from stale 'pending-upgrade' state"
    );
    // the unlocked release is failed: the controller retries 2.0.0 (waiting its timeout again);
    // a good version meanwhile is upgraded to next, and helm and status.history agree
    ns.apply_yaml(&hr_yaml("web", "app", "3.0.0", &extra)).await;
    // the loop's Events are recorded when the reconcile ends, after that retry
    let unlocked = format!(
        "Unlocked Helm release {}/web.v2 with chart app@2.0.0 in pending-upgrade state",
        ns.name
    );
    wait_until(
        Duration::from_secs(TIMEOUT_S + 60),
        "the unlock Event",
        || async { ns.events("web").await.iter().any(|(_, m)| *m == unlocked) },
    )
    .await;
    let h = wait_hr_for(
        &ns,
        "web",
        "upgraded to 3.0.0",
        Duration::from_secs(TIMEOUT_S * 2 + 120),
        |h| {
            h.status
                .as_ref()
                .and_then(|s| s.last_attempted_revision.as_deref())
                == Some("3.0.0")
                && is_ready(h, "True", "UpgradeSucceeded")
        },
    )
    .await;
    let helm = helm_history_full(&ns.name);
    let last = helm.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.3.as_str()),
        ("deployed", "app-3.0.0"),
        "{helm:?}"
    );
    assert!(
        helm.iter().all(|r| !r.1.starts_with("pending")),
        "no pending revision left: {helm:?}"
    );
    assert_history_agrees(&h, &ns.name, "web");
    assert_eq!(h.status.as_ref().unwrap().history[0].chart_version, "3.0.0");
    assert_eq!(
        configmap_data(&ns, "web-values", "chartVersion")
            .await
            .as_deref(),
        Some("3.0.0")
    );
    delete_releases(&ns).await;
    support::sources::cleanup(ns).await;
}
