//! The helm controller with more HelmReleases than workers (issue 17), against the local
//! cluster with pennant's source and helm controllers in one process and the real `helm` CLI
//! behind a wrapper script (`PENNANT_HELM`) that lets the test hold an install or count the
//! `helm` processes alive:
//!
//! - `helm_charts_are_applied_ahead_of_a_busy_install_worker`: with `--concurrent 1` and the
//!   one worker held in `helm install`, the HelmCharts of HelmReleases created after it exist
//!   and are Ready (their charts fetched) before any of their reconciles ran; one deleted then
//!   (never reconciled, no finalizer) takes its HelmChart with it; released, both install.
//! - `helm_processes_stay_under_helm_max_processes`: `--concurrent 3 --helm-max-processes 1`,
//!   three HelmReleases at once: never two `helm` processes alive together, all installed.

mod support;

use std::path::Path;
use std::time::Duration;

use kube::Api;
use pennant::api::helm_release::HelmRelease;
use support::helmrepo::HelmRepo;
use support::hr::{
    delete_releases, get_hr, helm_repository, hr_yaml, is_ready, start_controllers_with_helm,
    wait_hr,
};
use support::sources::cleanup;
use support::*;

/// `pennant controller --controllers source,helm` in `ns` with `helm` = the script `helm`.
fn start_with_helm(
    ns: &str,
    log: &str,
    storage: &Path,
    helm: &Path,
    more: &[&str],
) -> ControllerProcess {
    start_controllers_with_helm(
        ns,
        log,
        "source,helm",
        storage,
        helm.to_str().unwrap(),
        more,
    )
}

/// An executable shell script `name` in `dir` with `body` after the shebang.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

async fn helm_chart(ns: &TestNs, hr: &str) -> Option<serde_json::Value> {
    ns.get(
        "source.toolkit.fluxcd.io/v1",
        "HelmChart",
        &format!("{}-{hr}", ns.name),
    )
    .await
}

fn ready_true(o: &serde_json::Value) -> bool {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::test]
async fn helm_charts_are_applied_ahead_of_a_busy_install_worker() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-charts-ahead", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (held, gate) = (work.path().join("held"), work.path().join("gate"));
    // `helm install first ...` waits for the gate (at most 180 s, so a failed test leaves no
    // helm behind for long); everything else runs at once
    let helm = script(
        work.path(),
        "helm",
        &format!(
            "if [ \"$1\" = install ] && [ \"$2\" = first ]; then\n  touch '{held}'\n  i=0\n  \
             while [ ! -e '{gate}' ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done\nfi\n\
             exec '{real}' \"$@\"\n",
            held = held.display(),
            gate = gate.display(),
            real = helm(),
        ),
    );
    let _ctl = start_with_helm(
        &ns.name,
        "charts-ahead",
        storage.path(),
        &helm,
        &["--concurrent", "1"],
    );
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml("first", "app", "1.0.0", "")).await;
    wait_until(
        Duration::from_secs(90),
        "the install of first held",
        || async { held.exists() },
    )
    .await;

    // the one worker is in `helm install first`: the next HelmReleases' reconciles cannot
    // start, their HelmCharts come from the pass ahead
    ns.apply_yaml(&hr_yaml("second", "app", "1.0.0", "")).await;
    ns.apply_yaml(&hr_yaml("third", "app", "1.0.0", "")).await;
    wait_until(
        Duration::from_secs(60),
        "the HelmChart of second Ready while first installs",
        || async {
            helm_chart(&ns, "second")
                .await
                .is_some_and(|c| ready_true(&c))
        },
    )
    .await;
    let chart = helm_chart(&ns, "second").await.unwrap();
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "second"
    );
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"],
        ns.name.as_str()
    );
    assert_eq!(chart["spec"]["chart"], "app");
    assert_eq!(chart["spec"]["sourceRef"]["name"], "charts");
    assert!(!gate.exists());
    for name in ["second", "third"] {
        let h = get_hr(&ns, name).await.unwrap();
        // (the CRD's defaults give a status of its own: observedGeneration -1)
        let untouched = h
            .status
            .as_ref()
            .is_none_or(|s| s.helm_chart.is_none() && s.conditions.is_empty());
        assert!(
            untouched && h.metadata.finalizers.is_none(),
            "{name} not reconciled yet: {:?}",
            h.status
        );
    }

    // third goes before any reconcile recorded its HelmChart: no finalizer, the HelmChart too
    wait_until(
        Duration::from_secs(60),
        "the HelmChart of third",
        || async { helm_chart(&ns, "third").await.is_some() },
    )
    .await;
    Api::<HelmRelease>::namespaced(client.clone(), &ns.name)
        .delete("third", &Default::default())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the HelmChart of the deleted third gone",
        || async { helm_chart(&ns, "third").await.is_none() },
    )
    .await;

    std::fs::write(&gate, "").unwrap();
    for name in ["first", "second"] {
        let h = wait_hr(&ns, name, "installed", |h| {
            is_ready(h, "True", "InstallSucceeded")
        })
        .await;
        assert_eq!(
            h.status.unwrap().helm_chart,
            Some(format!("{0}/{0}-{name}", ns.name))
        );
    }
    delete_releases(&ns).await;
    assert!(helm_chart(&ns, "second").await.is_none(), "finalized");
    cleanup(ns).await;
}

/// The most processes alive at once and how many started, from the `start`/`stop` lines.
fn most_at_once(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut now, mut most, mut started) = (0usize, 0usize, 0usize);
    for l in text.lines() {
        if l == "start" {
            now += 1;
            started += 1;
            most = most.max(now);
        } else if l == "stop" {
            now = now.saturating_sub(1);
        }
    }
    (most, started)
}

#[tokio::test]
async fn helm_processes_stay_under_helm_max_processes() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-helm-cap", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    // every helm lives 2 s longer than the real one: three installs reconciled at once (three
    // workers, their charts Ready within a second or two of each other) would overlap
    let helm = script(
        work.path(),
        "helm",
        &format!(
            "echo start >> '{log}'\nsleep 2\n'{real}' \"$@\"\nrc=$?\necho stop >> '{log}'\nexit $rc\n",
            log = log.display(),
            real = helm(),
        ),
    );
    let _ctl = start_with_helm(
        &ns.name,
        "helm-cap",
        storage.path(),
        &helm,
        &["--concurrent", "3", "--helm-max-processes", "1"],
    );
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    for name in ["a", "b", "c"] {
        ns.apply_yaml(&hr_yaml(name, "app", "1.0.0", "")).await;
    }
    for name in ["a", "b", "c"] {
        wait_hr(&ns, name, "installed", |h| {
            is_ready(h, "True", "InstallSucceeded")
        })
        .await;
    }
    let (most, started) = most_at_once(&log);
    assert!(started >= 3, "one install each: {started}");
    assert_eq!(most, 1, "never two helm processes at once");
    delete_releases(&ns).await;
    cleanup(ns).await;
}
