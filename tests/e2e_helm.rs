//! The helm controller end to end: pennant's source and helm controllers in one process
//! (`--controllers source,helm`), a real HTTP Helm repository (`support::helmrepo`), the real
//! `helm` CLI (v4) as the engine and as the witness (`helm list`, `helm history`), and the
//! `flux` CLI as the client.

mod support;

use std::time::Duration;

use kube::{Api, ResourceExt};
use pennant::api::helm_release::HelmRelease;
use support::charts::{ChartSpec, Hook};
use support::helmrepo::HelmRepo;
use support::hr::{
    cond, configmap_data, delete_releases, get_hr, helm_history, helm_json, helm_repository,
    history, hr_yaml, ready_reason, start_controllers, wait_hr, warnings_with,
};
use support::sources::{cleanup, flux, flux_ok};
use support::*;

/// `pennant controller --controllers source,helm` in `ns`, helm v4 from the cache.
fn start(ns: &str, storage: &std::path::Path) -> ControllerProcess {
    start_with(ns, storage, &[])
}

/// [`start`] with more arguments.
fn start_with(ns: &str, storage: &std::path::Path, more: &[&str]) -> ControllerProcess {
    start_controllers(ns, ns, "source,helm", storage, more)
}

/// Install, values change → upgrade, chart version change → upgrade, `flux get/reconcile/
/// suspend/resume hr`, deletion → uninstall and the generated HelmChart gone.
#[tokio::test]
async fn helm_release_installs_upgrades_and_uninstalls() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-life", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", "")).await;

    // installed: Ready InstallSucceeded, the objects, history = helm history
    let h = wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let (_, _, message) = cond(&h, "Ready").unwrap();
    assert_eq!(
        message,
        format!(
            "Helm install succeeded for release {}/web.v1 with chart app@1.0.0",
            ns.name
        )
    );
    assert_eq!(
        cond(&h, "Released").map(|c| c.1),
        Some("InstallSucceeded".into())
    );
    let st = h.status.clone().unwrap();
    assert_eq!(st.last_attempted_revision.as_deref(), Some("1.0.0"));
    assert_eq!(st.last_attempted_release_action.as_deref(), Some("install"));
    assert_eq!(st.storage_namespace.as_deref(), Some(ns.name.as_str()));
    assert_eq!(
        st.helm_chart.as_deref(),
        Some(format!("{0}/{0}-web", ns.name).as_str())
    );
    assert!(
        st.last_attempted_config_digest
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(history(&h), vec![(1, "deployed".to_string())]);
    assert_eq!(helm_history(&ns.name, "web"), vec![(1, "deployed".into())]);
    let inventory: Vec<String> = h
        .status
        .as_ref()
        .unwrap()
        .inventory
        .as_ref()
        .expect("inventory")
        .entries
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(inventory, [format!("{}_web-app__ConfigMap", ns.name)]);
    assert_eq!(
        configmap_data(&ns, "web-app", "message").await.as_deref(),
        Some("hello")
    );
    let chart = ns
        .get(
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            &format!("{}-web", ns.name),
        )
        .await
        .expect("the generated HelmChart");
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "web"
    );
    assert_eq!(chart["spec"]["chart"], "app");
    let want = format!(
        "Helm install succeeded for release {}/web.v1 with chart app@1.0.0",
        ns.name
    );
    let events = ns.events_with("web", &[&want]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Normal" && *m == want),
        "{events:?}"
    );

    // the flux CLI reads it
    let out = flux_ok(&ns.name, &["get", "helmreleases"]);
    assert!(out.contains("web") && out.contains("True"), "{out}");

    // values change → upgrade (revision 2)
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  values:\n    message: changed\n",
    ))
    .await;
    let h = wait_hr(&ns, "web", "upgraded for values", |h| {
        ready_reason(h) == Some(("True".into(), "UpgradeSucceeded".into()))
    })
    .await;
    assert_eq!(
        history(&h),
        vec![(2, "deployed".to_string()), (1, "superseded".to_string())]
    );
    assert_eq!(
        helm_history(&ns.name, "web"),
        vec![(1, "superseded".into()), (2, "deployed".into())]
    );
    assert_eq!(
        configmap_data(&ns, "web-app", "message").await.as_deref(),
        Some("changed")
    );

    // a new chart version → upgrade (revision 3) with `flux reconcile hr --with-source`
    repo.add_chart("app", "1.1.0");
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.x",
        "  values:\n    message: changed\n",
    ))
    .await;
    flux_ok(&ns.name, &["reconcile", "source", "helm", "charts"]);
    let (ok, out) = flux(&ns.name, &["reconcile", "hr", "web", "--with-source"]);
    assert!(ok, "{out}");
    let h = wait_hr(&ns, "web", "upgraded to 1.1.0", |h| {
        h.status
            .as_ref()
            .and_then(|s| s.last_attempted_revision.as_deref())
            == Some("1.1.0")
            && ready_reason(h) == Some(("True".into(), "UpgradeSucceeded".into()))
    })
    .await;
    assert_eq!(h.status.unwrap().history[0].chart_version, "1.1.0");
    assert_eq!(
        configmap_data(&ns, "web-app", "chartVersion")
            .await
            .as_deref(),
        Some("1.1.0")
    );

    // suspend/resume through the CLI
    flux_ok(&ns.name, &["suspend", "hr", "web"]);
    let h = get_hr(&ns, "web").await.unwrap();
    assert_eq!(h.spec.suspend, Some(true));
    flux_ok(&ns.name, &["resume", "hr", "web"]);
    let h = get_hr(&ns, "web").await.unwrap();
    assert_ne!(h.spec.suspend, Some(true));

    // deletion: uninstalled, the HelmChart gone
    Api::<HelmRelease>::namespaced(client.clone(), &ns.name)
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(90), "HelmRelease gone", || async {
        get_hr(&ns, "web").await.is_none()
    })
    .await;
    assert_eq!(
        release_secrets(&ns).await,
        0,
        "uninstalled, no history kept"
    );
    assert!(configmap_data(&ns, "web-app", "message").await.is_none());
    assert!(
        ns.get(
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            &format!("{}-web", ns.name)
        )
        .await
        .is_none()
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// A chart version whose pre-upgrade hook fails, `upgrade.remediation.retries: 1`: two upgrade
/// attempts, each rolled back, then `Stalled=True RetriesExceeded` "Failed to upgrade after 2
/// attempt(s)", `Remediated=True RollbackSucceeded`; `helm history` shows every revision and
/// agrees with `status.history`.
#[tokio::test]
async fn failing_upgrade_is_rolled_back_then_stalls_after_retries() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-rb", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").publish(&repo);
    ChartSpec::new("app", "2.0.0")
        .pre_upgrade_hook(Hook::Fails)
        .publish(&repo);
    helm_repository(&ns, &repo.url).await;
    let extra = "  upgrade:\n    remediation:\n      retries: 1\n";
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", extra)).await;
    wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    ns.apply_yaml(&hr_yaml("web", "app", "2.0.0", extra)).await;
    let h = wait_hr(&ns, "web", "stalled after 2 upgrades", |h| {
        cond(h, "Stalled").map(|c| c.0) == Some("True".into())
    })
    .await;
    assert_eq!(
        cond(&h, "Stalled").map(|c| (c.1, c.2)),
        Some((
            "RetriesExceeded".into(),
            "Failed to upgrade after 2 attempt(s)".into()
        ))
    );
    let (status, reason, message) = cond(&h, "Remediated").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RollbackSucceeded")
    );
    assert!(
        message.starts_with(&format!(
            "Helm rollback to previous release {}/web.v",
            ns.name
        )),
        "{message}"
    );
    assert_eq!(ready_reason(&h).unwrap().0, "False");
    let st = h.status.clone().unwrap();
    assert_eq!(st.upgrade_failures, Some(2));
    assert_eq!(st.last_attempted_release_action.as_deref(), Some("upgrade"));
    // helm's own record: install, failed upgrade, rollback, failed upgrade, rollback
    let helm = helm_history(&ns.name, "web");
    assert_eq!(
        helm.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["superseded", "failed", "superseded", "failed", "deployed"],
        "{helm:?}"
    );
    // status.history is the newest revisions, newest first, with Helm's statuses
    let mine = history(&h);
    assert_eq!(mine[0], (5, "deployed".to_string()), "{mine:?}");
    for (v, s) in &mine {
        assert!(helm.contains(&(*v, s.clone())), "{v} {s} not in {helm:?}");
    }
    // the rolled back release runs 1.0.0
    assert_eq!(
        configmap_data(&ns, "web-values", "chartVersion")
            .await
            .as_deref(),
        Some("1.0.0")
    );
    let events = ns
        .events_with("web", &["Helm upgrade failed for release"])
        .await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning"
            && m.starts_with(&format!(
                "Helm upgrade failed for release {}/web with chart app@2.0.0",
                ns.name
            ))),
        "{events:?}"
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `valuesFrom` a Secret: its change (seen on the next reconcile, here `flux reconcile hr`)
/// upgrades the release; deletion with `uninstall.keepHistory` keeps the release's history
/// (`uninstalled`).
#[tokio::test]
async fn values_from_secret_change_upgrades_and_keep_history_keeps_it() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-vals", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    let secret = |m: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-values\n  namespace: NAMESPACE\nstringData:\n  values.yaml: |\n    message: {m}\n"
        )
    };
    ns.apply_yaml(&secret("from-secret")).await;
    let extra = "  valuesFrom:\n    - kind: Secret\n      name: web-values\n  uninstall:\n    keepHistory: true\n";
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", extra)).await;
    let h = wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let digest1 = h.status.unwrap().last_attempted_config_digest.unwrap();
    assert_eq!(
        configmap_data(&ns, "web-app", "message").await.as_deref(),
        Some("from-secret")
    );
    ns.apply_yaml(&secret("rotated")).await;
    let (ok, out) = flux(&ns.name, &["reconcile", "hr", "web"]);
    assert!(ok, "{out}");
    let h = wait_hr(&ns, "web", "upgraded for the Secret", |h| {
        ready_reason(h) == Some(("True".into(), "UpgradeSucceeded".into()))
    })
    .await;
    assert_ne!(
        h.status.unwrap().last_attempted_config_digest.unwrap(),
        digest1
    );
    assert_eq!(
        configmap_data(&ns, "web-app", "message").await.as_deref(),
        Some("rotated")
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 2);
    delete_releases(&ns).await;
    // keepHistory: the release is uninstalled, its record stays
    let helm = helm_history(&ns.name, "web");
    assert_eq!(
        helm.last().map(|r| r.1.as_str()),
        Some("uninstalled"),
        "{helm:?}"
    );
    assert!(configmap_data(&ns, "web-app", "message").await.is_none());
    cleanup(ns).await;
}

/// A change of `spec.postRenderers` or `spec.commonMetadata` alone upgrades the release (Flux's
/// `observedPostRenderersDigest` / `observedCommonMetadataDigest`); a new generation that changes
/// neither (here `interval`) does not.
#[tokio::test]
async fn post_renderer_and_common_metadata_changes_upgrade() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-postr", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    let spec = |patched: &str, meta: &str, interval: &str| {
        hr_yaml("web", "app", "1.0.0", &format!(
            "  postRenderers:\n    - kustomize:\n        patches:\n          - target:\n              kind: ConfigMap\n            patch: |\n              apiVersion: v1\n              kind: ConfigMap\n              metadata:\n                name: any\n              data:\n                patched: \"{patched}\"\n{meta}"
        ))
        .replace("interval: 10m", interval)
    };
    ns.apply_yaml(&spec("one", "", "interval: 10m")).await;
    let h = wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let st = h.status.unwrap();
    let pr1 = st.observed_post_renderers_digest.clone().unwrap();
    assert!(pr1.starts_with("sha256:"), "{pr1}");
    assert_eq!(st.observed_common_metadata_digest, None);
    assert_eq!(
        configmap_data(&ns, "web-app", "patched").await.as_deref(),
        Some("one")
    );

    ns.apply_yaml(&spec("two", "", "interval: 10m")).await;
    let h = wait_hr(&ns, "web", "upgraded for the post-renderer", |h| {
        ready_reason(h) == Some(("True".into(), "UpgradeSucceeded".into()))
    })
    .await;
    let st = h.status.unwrap();
    assert_ne!(
        st.observed_post_renderers_digest.as_deref(),
        Some(pr1.as_str())
    );
    assert_eq!(
        configmap_data(&ns, "web-app", "patched").await.as_deref(),
        Some("two")
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 2);

    let meta = "  commonMetadata:\n    labels:\n      team: blue\n";
    ns.apply_yaml(&spec("two", meta, "interval: 10m")).await;
    let h = wait_hr(&ns, "web", "upgraded for commonMetadata", |h| {
        h.status
            .as_ref()
            .is_some_and(|s| s.observed_common_metadata_digest.is_some())
    })
    .await;
    assert_eq!(
        ready_reason(&h),
        Some(("True".into(), "UpgradeSucceeded".into()))
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 3);
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("web-app")
        .await
        .unwrap();
    assert_eq!(cm.labels().get("team").map(String::as_str), Some("blue"));

    // a new generation that changes neither digest: observed, no upgrade
    ns.apply_yaml(&spec("two", meta, "interval: 11m")).await;
    let generation = get_hr(&ns, "web").await.unwrap().metadata.generation;
    wait_hr(&ns, "web", "the interval change observed", |h| {
        h.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert_eq!(helm_history(&ns.name, "web").len(), 3);
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// A field another manager changed by hand (`kubectl edit`) does not block the next upgrade:
/// server-side apply forces conflicts, as Flux's helm-controller (without it: `conflict with
/// "kubectl-edit"`, then retries and a stall).
#[tokio::test]
async fn upgrade_takes_fields_another_manager_changed() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-conflict", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    repo.add_chart("app", "1.0.1");
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", "")).await;
    wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns.name);
    cms.patch(
        "web-app",
        &kube::api::PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &kube::api::Patch::Merge(serde_json::json!({"data": {"chartVersion": "by hand"}})),
    )
    .await
    .unwrap();
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.1", "")).await;
    let h = wait_hr(&ns, "web", "upgraded over the hand edit", |h| {
        ready_reason(h).is_some_and(|(s, r)| s == "True" && r == "UpgradeSucceeded")
            || cond(h, "Ready").is_some_and(|c| c.2.contains("conflict with"))
    })
    .await;
    assert_eq!(
        ready_reason(&h),
        Some(("True".into(), "UpgradeSucceeded".into())),
        "{:?}",
        cond(&h, "Ready")
    );
    assert_eq!(
        configmap_data(&ns, "web-app", "chartVersion")
            .await
            .as_deref(),
        Some("1.0.1")
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 2);
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `--concurrent 1`: HelmReleases are reconciled one at a time (each a `helm` process), so
/// never two of them run an action at once; all still get there.
#[tokio::test]
async fn concurrent_bounds_the_releases_in_action() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-conc", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start_with(&ns.name, storage.path(), &["--concurrent", "1"]);
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").never_ready().publish(&repo);
    helm_repository(&ns, &repo.url).await;
    let names = ["a", "b", "c"];
    for n in names {
        let extra = "  install:\n    timeout: 4s\n    remediation:\n      retries: 0\n";
        ns.apply_yaml(&hr_yaml(n, "app", "1.0.0", extra)).await;
    }
    let api = Api::<HelmRelease>::namespaced(client.clone(), &ns.name);
    let (mut most, mut failed) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while failed < names.len() && std::time::Instant::now() < deadline {
        let list = api.list(&Default::default()).await.unwrap().items;
        let running = list
            .iter()
            .filter(|h| cond(h, "Ready").is_some_and(|c| c.2.starts_with("Running 'install'")))
            .count();
        most = most.max(running);
        failed = list
            .iter()
            .filter(|h| cond(h, "Released").is_some_and(|c| c.1 == "InstallFailed"))
            .count();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(failed, names.len(), "every install ran and failed");
    assert_eq!(most, 1, "one install at a time");
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// SIGTERM during a Helm action that would wait minutes: the process exits after
/// `--shutdown-grace` (a pod is killed 30 s after SIGTERM anyway), not at the action's timeout.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_long_helm_action() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-stop", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let mut ctl = start_with(&ns.name, storage.path(), &["--shutdown-grace", "2s"]);
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").never_ready().publish(&repo);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  install:\n    timeout: 5m\n",
    ))
    .await;
    wait_hr(&ns, "web", "installing", |h| {
        cond(h, "Ready").is_some_and(|c| c.2.starts_with("Running 'install'"))
    })
    .await;
    let started = std::time::Instant::now();
    let code = ctl.terminate(Duration::from_secs(20));
    drop(ctl);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "exited on its own after {took:?}");
    assert!(took >= Duration::from_secs(2), "waited the grace: {took:?}");
    // a controller again, to uninstall and finalize what is left
    let _ctl = start(&ns.name, storage.path());
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// A `valuesFrom` ConfigMap labelled `reconcile.fluxcd.io/watch: Enabled` (Flux's
/// `--watch-configs-label-selector`): its change upgrades the release at once, not at the next
/// interval (10m here) and without `flux reconcile`.
#[tokio::test]
async fn a_labelled_values_config_map_change_upgrades_at_once() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-watchcm", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    let cm = |m: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-values\n  namespace: NAMESPACE\n  labels:\n    reconcile.fluxcd.io/watch: Enabled\ndata:\n  values.yaml: |\n    message: {m}\n"
        )
    };
    ns.apply_yaml(&cm("first")).await;
    let extra = "  valuesFrom:\n    - kind: ConfigMap\n      name: web-values\n";
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", extra)).await;
    wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    ns.apply_yaml(&cm("second")).await;
    wait_hr(&ns, "web", "upgraded for the labelled ConfigMap", |h| {
        ready_reason(h) == Some(("True".into(), "UpgradeSucceeded".into()))
    })
    .await;
    assert_eq!(
        configmap_data(&ns, "web-app", "message").await.as_deref(),
        Some("second")
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `driftDetection.mode: enabled`: a changed object of the release is put back on the next
/// reconcile, with a `DriftDetected` Warning and a `DriftCorrected` Event naming it, and no
/// new Helm revision.
#[tokio::test]
async fn drift_is_detected_and_corrected() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-drift", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  driftDetection:\n    mode: enabled\n",
    ))
    .await;
    wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns.name);
    cms.patch(
        "web-app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"data": {"message": "tampered"}})),
    )
    .await
    .unwrap();
    let (ok, out) = flux(&ns.name, &["reconcile", "hr", "web"]);
    assert!(ok, "{out}");
    wait_until(Duration::from_secs(60), "drift corrected", || async {
        configmap_data(&ns, "web-app", "message").await.as_deref() == Some("hello")
    })
    .await;
    let events = ns.events_with("web", &["has been corrected"]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Normal"
            && m.starts_with(&format!(
                "Cluster state of release {}/web.v1 has been corrected",
                ns.name
            ))
            && m.contains("web-app")),
        "{events:?}"
    );
    // first the Warning Flux emits in both modes, for alerting
    let drifted = format!(
        "Cluster state of release {}/web.v1 has drifted from the desired state:",
        ns.name
    );
    let warnings = warnings_with(&ns, "web", &drifted).await;
    assert!(
        warnings.iter().any(|m| m.contains("web-app")),
        "{warnings:?}"
    );
    assert_eq!(helm_history(&ns.name, "web").len(), 1, "no new revision");
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// An install whose Deployment never gets Ready within `install.timeout`: the failure names the
/// object and why (in `Released` and the Warning Event), not Flux's bare "timed out waiting for
/// the condition".
#[tokio::test]
async fn install_timeout_names_the_objects_not_ready() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-timeout", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0").never_ready().publish(&repo);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  install:\n    timeout: 5s\n",
    ))
    .await;
    let h = wait_hr(&ns, "web", "install failed", |h| {
        cond(h, "Released").map(|c| c.1) == Some("InstallFailed".into())
    })
    .await;
    let (_, _, message) = cond(&h, "Released").unwrap();
    let object = format!("Deployment/{}/web", ns.name);
    assert!(
        message.starts_with(&format!(
            "Helm install failed for release {}/web with chart app@1.0.0: timeout waiting for: [",
            ns.name
        )) && message.contains(&object),
        "{message}"
    );
    let events = ns.events_with("web", &[&object]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning"
            && m.contains("Helm install failed")
            && m.contains(&object)),
        "{events:?}"
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `test.enable`: the test hooks run after the install, `TestSuccess=True TestSucceeded`, and
/// the history records the hook's phase.
#[tokio::test]
async fn tests_run_after_install_and_are_recorded() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-test", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    ChartSpec::new("app", "1.0.0")
        .test_hook(Hook::Succeeds)
        .publish(&repo);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  test:\n    enable: true\n",
    ))
    .await;
    let h = wait_hr(&ns, "web", "tested", |h| {
        cond(h, "TestSuccess").map(|c| (c.0, c.1)) == Some(("True".into(), "TestSucceeded".into()))
            && ready_reason(h).map(|r| r.0) == Some("True".into())
    })
    .await;
    let (_, _, message) = cond(&h, "TestSuccess").unwrap();
    assert!(
        message.starts_with(&format!(
            "Helm test succeeded for release {}/web.v1 with chart app@1.0.0",
            ns.name
        )),
        "{message}"
    );
    let hooks = h.status.unwrap().history[0]
        .test_hooks
        .clone()
        .expect("test hooks recorded");
    assert!(!hooks.is_empty());
    assert!(
        hooks
            .values()
            .all(|t| t.phase.as_deref() == Some("Succeeded")),
        "{hooks:?}"
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `chartRef` to an OCIRepository holding a chart `helm push`ed to the registry: installed,
/// `lastAttemptedRevision` `<version>+<12 hex of the digest>` (Flux's), no generated HelmChart.
#[tokio::test]
async fn chart_ref_oci_repository_installs_with_the_digest_in_the_version() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-oci", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    let url = ChartSpec::new("ociapp", "1.2.0").push_oci(
        &repo.work,
        &registry_addr(),
        &format!("{}/charts", ns.name),
    );
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: chart\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n  insecure: true\n  ref:\n    tag: 1.2.0\n  layerSelector:\n    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n    operation: copy\n"
    ))
    .await;
    ns.apply_yaml(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  chartRef:\n    kind: OCIRepository\n    name: chart\n",
    )
    .await;
    let h = wait_hr(&ns, "web", "installed from OCI", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let st = h.status.unwrap();
    let rev = st.last_attempted_revision.unwrap();
    let (version, hex) = rev.split_once('+').expect("version+digest");
    assert_eq!(version, "1.2.0");
    assert_eq!(hex.len(), 12, "{rev}");
    assert!(
        st.last_attempted_revision_digest
            .unwrap()
            .starts_with(&format!("sha256:{hex}"))
    );
    assert!(st.helm_chart.is_none(), "no generated HelmChart");
    assert_eq!(st.history[0].chart_name, "ociapp");
    assert_eq!(
        configmap_data(&ns, "web-values", "chartVersion")
            .await
            .as_deref(),
        Some("1.2.0")
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// A chart whose install fails (an object the API server rejects), `install.remediation.retries:
/// 0` with `remediateLastFailure`: uninstall remediation, then `Stalled=True RetriesExceeded` "Failed to install after 1
/// attempt(s)".
#[tokio::test]
async fn failed_install_is_remediated_by_uninstall_then_stalls() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-fail", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    let src = repo.work.join("charts").join("bad-1.0.0");
    std::fs::create_dir_all(src.join("templates")).unwrap();
    std::fs::write(
        src.join("Chart.yaml"),
        "apiVersion: v2\nname: bad\nversion: 1.0.0\ntype: application\n",
    )
    .unwrap();
    std::fs::write(
        src.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\ndata:\n  a: b\n",
    )
    .unwrap();
    repo.add_chart_dir(&src);
    helm_repository(&ns, &repo.url).await;
    ns.apply_yaml(&hr_yaml(
        "bad",
        "bad",
        "1.0.0",
        "  install:\n    remediation:\n      retries: 0\n      remediateLastFailure: true\n",
    ))
    .await;
    let h = wait_hr(&ns, "bad", "stalled", |h| {
        cond(h, "Stalled").map(|c| c.0) == Some("True".into())
    })
    .await;
    let (_, reason, message) = cond(&h, "Stalled").unwrap();
    assert_eq!(reason, "RetriesExceeded");
    assert_eq!(message, "Failed to install after 1 attempt(s)");
    assert_eq!(ready_reason(&h).unwrap().0, "False");
    assert_eq!(
        cond(&h, "Remediated").map(|c| (c.0, c.1)),
        Some(("True".into(), "UninstallSucceeded".into()))
    );
    let st = h.status.unwrap();
    assert_eq!(st.install_failures, Some(1));
    assert_eq!(release_secrets(&ns).await, 0, "uninstalled");
    assert_eq!(helm_json(&ns.name, &["list"]).as_array().unwrap().len(), 0);
    let failed = format!(
        "Helm install failed for release {}/bad with chart bad@1.0.0",
        ns.name
    );
    let events = ns.events_with("bad", &[&failed]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && m.starts_with(&failed)),
        "{events:?}"
    );
    delete_releases(&ns).await;
    cleanup(ns).await;
}

/// `dependsOn`: the dependent waits (`DependencyNotReady`) until its dependency is Ready, then
/// installs; a cycle stalls.
#[tokio::test]
async fn depends_on_orders_releases_and_cycles_stall() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-controller-deps", 0).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start(&ns.name, storage.path());
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    // the dependent first: it waits
    ns.apply_yaml(&hr_yaml(
        "front",
        "app",
        "1.0.0",
        "  dependsOn:\n    - name: back\n",
    ))
    .await;
    let h = wait_hr(&ns, "front", "waiting", |h| {
        ready_reason(h).map(|r| r.1) == Some("DependencyNotReady".into())
    })
    .await;
    assert!(history_empty(&h));
    ns.apply_yaml(&hr_yaml("back", "app", "1.0.0", "")).await;
    wait_hr(&ns, "front", "installed after back", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    let back = get_hr(&ns, "back").await.unwrap();
    let front = get_hr(&ns, "front").await.unwrap();
    let deployed = |h: &HelmRelease| h.status.as_ref().unwrap().history[0].first_deployed.0;
    assert!(deployed(&back) <= deployed(&front));
    // a cycle
    ns.apply_yaml(&hr_yaml(
        "c1",
        "app",
        "1.0.0",
        "  dependsOn:\n    - name: c2\n",
    ))
    .await;
    ns.apply_yaml(&hr_yaml(
        "c2",
        "app",
        "1.0.0",
        "  dependsOn:\n    - name: c1\n",
    ))
    .await;
    let h = wait_hr(&ns, "c1", "cycle", |h| {
        cond(h, "Stalled").map(|c| c.0) == Some("True".into())
    })
    .await;
    let (_, reason, message) = cond(&h, "Stalled").unwrap();
    assert_eq!(reason, "DependencyCycle");
    assert!(message.contains("c2"), "{message}");
    delete_releases(&ns).await;
    cleanup(ns).await;
}

fn history_empty(h: &HelmRelease) -> bool {
    h.status.as_ref().is_none_or(|s| s.history.is_empty())
}

/// How many Helm release Secrets (`helm.sh/release.v1`) the namespace holds.
async fn release_secrets(ns: &TestNs) -> usize {
    let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ns.client.clone(), &ns.name);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some("helm.sh/release.v1"))
        .count()
}
