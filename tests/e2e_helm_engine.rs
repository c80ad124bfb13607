//! The Helm engine (`pennant::helm::engine::HelmCli`, the real Helm 4 `helm` CLI) and native
//! release storage (`pennant::helm::storage`) against the local cluster (`e2e/cluster up`),
//! with charts made here by `helm create` + edits and packaged by `helm package`:
//!
//! - `lifecycle_as_helm_records_it`: install → the storage Secret decoded equals
//!   `helm history -o json` and `helm get values`; upgrade → superseded/deployed; an upgrade
//!   whose pre-upgrade hook fails → `failed` and the hook's error; rollback → "Rollback to 2";
//!   the test hook (a Job) → its phase recorded; uninstall with `keepHistory` → `uninstalled`
//!   kept; a second release uninstalled without → its Secrets gone.
//! - `a_stale_pending_release_is_unlocked`: a `pending-upgrade` revision written through
//!   `storage::to_secret` blocks helm ("another operation"); Unlock rewrites it to `failed`
//!   (helm agrees) and the next upgrade succeeds.
//! - `post_render_stamps_origin_metadata_and_patches`: origin labels, `commonMetadata` and a
//!   kustomize patch, by the post-renderer plugin (`pennant helm-post-render`), on the live
//!   Deployment.
//! - `crds_follow_the_policy`: `CreateReplace` creates and updates the chart's CRD (applied
//!   by the engine), `Create` leaves an existing one alone, at upgrade and at install (helm's
//!   own apply of `crds/` conflicted there with the CRD's other manager), and creates a missing
//!   one at install.
//! - `a_wait_timeout_names_the_deployment`: pods that never become Ready (kwok stage): the
//!   error names `Deployment/<ns>/<name>` and its kstatus.
//! - `the_engine_s_own_wait_leaves_the_storage_helm_s_wait_leaves`: a chart without
//!   post-upgrade hooks is waited for by the engine (from the watch caches), one with such a
//!   hook by helm; an upgrade that never becomes Ready ends the same in both, as `helm history`
//!   prints it: the new revision `failed`, the one before it `deployed` again.
//! - `time_queued_for_a_helm_process_is_not_taken_from_the_wait`: with one `helm` process at
//!   a time, a release queued behind a longer helm wait still gets its whole timeout.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use pennant::helm::engine::*;
use pennant::helm::postrender::{KustomizePostRenderer, Patch, PostRenderConfig};
use pennant::helm::storage::{self, Status};
use serde_json::{Value, json};
use support::helmrepo::helm_in;
use support::*;

struct Charts {
    dir: tempfile::TempDir,
}

impl Charts {
    fn new() -> Self {
        Charts {
            dir: tempfile::Builder::new()
                .prefix("pennant-hr-engine-")
                .tempdir()
                .unwrap(),
        }
    }

    /// `helm create demo`, the test Pod replaced by a test Job (kwok completes Job pods), the
    /// version set, `extra` files (paths in the chart) added; packaged. Returns the `.tgz`.
    fn chart(&self, version: &str, extra: &[(&str, &str)]) -> PathBuf {
        let work = self.dir.path().join(format!("src-{version}"));
        std::fs::create_dir_all(&work).unwrap();
        run(helm_in(self.dir.path())
            .current_dir(&work)
            .args(["create", "demo"]));
        let c = work.join("demo");
        let chart_yaml = std::fs::read_to_string(c.join("Chart.yaml")).unwrap();
        let chart_yaml = chart_yaml.replace("version: 0.1.0", &format!("version: {version}"));
        std::fs::write(c.join("Chart.yaml"), chart_yaml).unwrap();
        std::fs::write(
            c.join("templates/tests/test-connection.yaml"),
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: \"{{ include \"demo.fullname\" . }}-test\"\n  annotations:\n    \"helm.sh/hook\": test\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: check\n          image: busybox\n",
        )
        .unwrap();
        for (path, text) in extra {
            let f = c.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
        let out = self.dir.path().join("pkg");
        std::fs::create_dir_all(&out).unwrap();
        run(helm_in(self.dir.path()).args([
            "package",
            c.to_str().unwrap(),
            "--destination",
            out.to_str().unwrap(),
        ]));
        out.join(format!("demo-{version}.tgz"))
    }
}

/// A pre-upgrade hook the API server refuses (a ConfigMap key with a space).
const FAILING_HOOK: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{{ .Release.Name }}-bad-hook\"\n  annotations:\n    \"helm.sh/hook\": pre-upgrade\ndata:\n  \"not a valid key\": x\n";

async fn target() -> Target {
    Target {
        client: client().await,
        kubeconfig: Some(std::fs::read_to_string(kubeconfig_path()).unwrap()),
        as_user: None,
        watches: None,
    }
}

/// [`target`] with the controller's watches (what the helm controller passes for its own
/// cluster), their change feed drained.
async fn watched_target() -> (Target, std::sync::Arc<pennant::health::watch::Watches>) {
    let mut t = target().await;
    let (w, mut changed) = pennant::health::watch::Watches::new(t.client.clone(), None);
    tokio::spawn(async move { while changed.recv().await.is_some() {} });
    t.watches = Some(w.clone());
    (t, w)
}

fn engine() -> HelmCli {
    HelmCli::new(HelmCliOptions {
        helm: Some(helm().into()),
        post_renderer_exe: Some(env!("CARGO_BIN_EXE_pennant").into()),
        ..Default::default()
    })
    .unwrap()
}

fn rref(name: &str, ns: &str) -> ReleaseRef {
    ReleaseRef {
        name: name.into(),
        namespace: ns.into(),
    }
}

fn install_req(r: &ReleaseRef, chart: &Path, values: Value) -> InstallRequest {
    InstallRequest {
        release: r.clone(),
        chart: chart.into(),
        values,
        timeout: Duration::from_secs(120),
        wait: Wait::default(),
        disable_hooks: false,
        disable_openapi_validation: false,
        disable_schema_validation: false,
        crds: Crds::Create,
        create_namespace: false,
        replace: false,
        take_ownership: true,
        server_side: true,
        description: None,
        post_render: None,
    }
}

fn upgrade_req(r: &ReleaseRef, chart: &Path, values: Value) -> UpgradeRequest {
    UpgradeRequest {
        release: r.clone(),
        chart: chart.into(),
        values,
        timeout: Duration::from_secs(120),
        wait: Wait::default(),
        disable_hooks: false,
        disable_openapi_validation: false,
        disable_schema_validation: false,
        crds: Crds::Skip,
        force: false,
        cleanup_on_fail: false,
        take_ownership: true,
        server_side: ServerSide::Auto,
        history_max: 5,
        preserve_values: false,
        description: None,
        post_render: None,
    }
}

fn uninstall_req(r: &ReleaseRef, keep_history: bool) -> UninstallRequest {
    UninstallRequest {
        release: r.clone(),
        timeout: Duration::from_secs(60),
        disable_hooks: false,
        keep_history,
        wait: true,
        cascade: Cascade::Background,
        description: None,
    }
}

/// `helm <args> --namespace ns -o json` with the test cluster's kubeconfig.
fn helm_json(home: &Path, ns: &str, args: &[&str]) -> Value {
    let out = run(helm_in(home).args(args).args([
        "--namespace",
        ns,
        "-o",
        "json",
        "--kubeconfig",
        &kubeconfig_path(),
    ]));
    serde_json::from_str(&out).unwrap()
}

async fn secrets(client: &kube::Client, ns: &str, release: &str) -> Vec<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(&format!("owner=helm,name={release}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn lifecycle_as_helm_records_it() {
    let t = target().await;
    let ns = TestNs::new(&t.client, "hr-engine-life", 0).await;
    let charts = Charts::new();
    let v1 = charts.chart("0.1.0", &[]);
    let v2 = charts.chart("0.2.0", &[]);
    let v3 = charts.chart("0.3.0", &[("templates/pre-upgrade.yaml", FAILING_HOOK)]);
    let e = engine();
    let r = rref("web", &ns.name);

    // install: the decoded Secret is what helm itself reports
    let values = json!({"replicaCount": 1, "podLabels": {"tier": "front"}});
    let rel = e
        .install(&t, &install_req(&r, &v1, values.clone()))
        .await
        .unwrap();
    assert_eq!((rel.version, &rel.info.status), (1, &Status::Deployed));
    assert_eq!(rel.config, values, "config = the values given");
    assert_eq!(rel.chart.name, "demo");
    assert_eq!(rel.chart.version, "0.1.0");
    assert_eq!(
        rel.apply_method, "ssa",
        "Helm 4 server-side apply by default"
    );
    assert!(rel.manifest.contains("kind: Deployment"));
    let got_values = helm_json(charts.dir.path(), &ns.name, &["get", "values", "web"]);
    assert_eq!(got_values, values);
    let hist = helm_json(charts.dir.path(), &ns.name, &["history", "web"]);
    assert_eq!(hist[0]["revision"], 1);
    assert_eq!(hist[0]["status"], "deployed");
    assert_eq!(hist[0]["chart"], "demo-0.1.0");
    assert_eq!(hist[0]["description"], rel.info.description.as_str());
    assert_eq!(
        secrets(&t.client, &ns.name, "web").await,
        ["sh.helm.release.v1.web.v1"]
    );

    // upgrade: superseded / deployed
    let rel = e
        .upgrade(&t, &upgrade_req(&r, &v2, values.clone()))
        .await
        .unwrap();
    assert_eq!((rel.version, &rel.info.status), (2, &Status::Deployed));
    let h = e.history(&t, &r).await.unwrap();
    let statuses: Vec<(u32, Status)> = h
        .iter()
        .map(|x| (x.version, x.info.status.clone()))
        .collect();
    assert_eq!(statuses, [(2, Status::Deployed), (1, Status::Superseded)]);

    // a pre-upgrade hook that fails: revision 3 failed, the error says why
    let err = e
        .upgrade(&t, &upgrade_req(&r, &v3, values.clone()))
        .await
        .unwrap_err();
    let EngineError::Helm(he) = &err else {
        panic!("{err}")
    };
    assert!(!he.timed_out);
    assert!(he.message.contains("pre-upgrade hooks failed"), "{he:?}");
    let latest = e.latest(&t, &r).await.unwrap().unwrap();
    assert_eq!((latest.version, &latest.info.status), (3, &Status::Failed));
    assert!(latest.info.description.contains("pre-upgrade hooks failed"));

    // rollback to 2
    let rb = RollbackRequest {
        release: r.clone(),
        revision: Some(2),
        timeout: Duration::from_secs(120),
        wait: Wait::default(),
        disable_hooks: false,
        force: false,
        cleanup_on_fail: false,
        server_side: ServerSide::Auto,
        history_max: 5,
        description: None,
    };
    let rel = e.rollback(&t, &rb).await.unwrap();
    assert_eq!((rel.version, &rel.info.status), (4, &Status::Deployed));
    assert_eq!(rel.info.description, "Rollback to 2");
    assert_eq!(rel.chart.version, "0.2.0");

    // test hook: a Job kwok completes
    let tr = TestRequest {
        release: r.clone(),
        timeout: Duration::from_secs(120),
        filters: vec![],
    };
    let rel = e.test(&t, &tr).await.unwrap();
    let hook = rel.test_hooks().next().expect("test hook");
    assert_eq!(hook.kind, "Job");
    assert_eq!(hook.last_run.phase, "Succeeded");
    assert!(hook.last_run.started_at.is_some() && hook.last_run.completed_at.is_some());

    // uninstall, keeping history
    let kept = e.uninstall(&t, &uninstall_req(&r, true)).await.unwrap();
    let kept = kept.expect("history kept");
    assert_eq!(kept.info.status, Status::Uninstalled);
    assert!(kept.info.deleted.is_some());
    assert_eq!(secrets(&t.client, &ns.name, "web").await.len(), 4);
    assert!(ns.deployment("web-demo").await.is_none(), "objects deleted");

    // another release, uninstalled without history: no Secret left
    let r2 = rref("gone", &ns.name);
    e.install(&t, &install_req(&r2, &v1, json!({})))
        .await
        .unwrap();
    assert_eq!(secrets(&t.client, &ns.name, "gone").await.len(), 1);
    let none = e.uninstall(&t, &uninstall_req(&r2, false)).await.unwrap();
    assert!(none.is_none());
    assert!(secrets(&t.client, &ns.name, "gone").await.is_empty());
    ns.cleanup().await;
}

#[tokio::test]
async fn a_stale_pending_release_is_unlocked() {
    let t = target().await;
    let ns = TestNs::new(&t.client, "hr-engine-lock", 0).await;
    let charts = Charts::new();
    let v1 = charts.chart("0.1.0", &[]);
    let e = engine();
    let r = rref("locked", &ns.name);
    let first = e
        .install(&t, &install_req(&r, &v1, json!({})))
        .await
        .unwrap();

    // a crashed upgrade: revision 2 left pending-upgrade (written by our own encoder)
    let mut pending = first.clone();
    pending.version = 2;
    pending.info.status = Status::PendingUpgrade;
    pending.info.description = "Preparing upgrade".into();
    let api: Api<Secret> = Api::namespaced(t.client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &storage::to_secret(&pending, &ns.name, Timestamp::now()),
    )
    .await
    .unwrap();
    let hist = helm_json(charts.dir.path(), &ns.name, &["history", "locked"]);
    assert_eq!(
        hist[1]["status"], "pending-upgrade",
        "helm reads our Secret"
    );
    let err = e
        .upgrade(&t, &upgrade_req(&r, &v1, json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another operation"), "{err}");

    let unlocked = e.unlock(&t, &r, 2, Timestamp::now()).await.unwrap();
    assert_eq!(unlocked.info.status, Status::Failed);
    let hist = helm_json(charts.dir.path(), &ns.name, &["history", "locked"]);
    assert_eq!(hist[1]["status"], "failed");
    assert_eq!(
        hist[1]["description"],
        "Release unlocked from stale 'pending-upgrade' state"
    );
    let s = api.get("sh.helm.release.v1.locked.v2").await.unwrap();
    assert_eq!(s.metadata.labels.unwrap()["status"], "failed");
    // unlocking again: nothing pending
    assert!(e.unlock(&t, &r, 2, Timestamp::now()).await.is_err());

    let rel = e
        .upgrade(&t, &upgrade_req(&r, &v1, json!({})))
        .await
        .unwrap();
    assert_eq!((rel.version, &rel.info.status), (3, &Status::Deployed));
    ns.cleanup().await;
}

#[tokio::test]
async fn post_render_stamps_origin_metadata_and_patches() {
    let t = target().await;
    let ns = TestNs::new(&t.client, "hr-engine-pr", 0).await;
    let charts = Charts::new();
    let v1 = charts.chart("0.1.0", &[]);
    let e = engine();
    let r = rref("pr", &ns.name);
    let mut req = install_req(&r, &v1, json!({}));
    req.post_render = Some(PostRenderConfig {
        kustomize: vec![KustomizePostRenderer {
            patches: vec![Patch {
                patch: "- op: add\n  path: /metadata/labels/patched\n  value: \"yes\"\n".into(),
                target: Some(json!({"kind": "Deployment"})),
            }],
            images: vec![json!({"name": "nginx", "newTag": "1.27.0"})],
        }],
        common_labels: [
            ("team".to_string(), "platform".to_string()),
            (
                "helm.toolkit.fluxcd.io/name".to_string(),
                "spoofed".to_string(),
            ),
        ]
        .into(),
        common_annotations: [("owner".to_string(), "ops".to_string())].into(),
        origin_name: "my-hr".into(),
        origin_namespace: "flux-system".into(),
        kustomize_binary: kustomize(),
        ..Default::default()
    });
    let rel = e.install(&t, &req).await.unwrap();
    assert_eq!(rel.info.status, Status::Deployed);
    let d: Deployment = ns.deployments().get("pr-demo").await.unwrap();
    let labels = d.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["helm.toolkit.fluxcd.io/name"], "my-hr",
        "origin wins"
    );
    assert_eq!(labels["helm.toolkit.fluxcd.io/namespace"], "flux-system");
    assert_eq!(labels["team"], "platform");
    assert_eq!(labels["patched"], "yes");
    assert_eq!(d.metadata.annotations.clone().unwrap()["owner"], "ops");
    assert_eq!(image_of(&d), "nginx:1.27.0", "kustomize images");
    let svc = ns.get("v1", "Service", "pr-demo").await.unwrap();
    assert_eq!(
        svc["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "my-hr"
    );
    assert!(
        svc["metadata"]["labels"].get("patched").is_none(),
        "the patch targets Deployments only"
    );
    let stored = yaml_docs(&rel.manifest);
    assert!(!stored.is_empty());
    for o in &stored {
        assert_eq!(
            o["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"], "my-hr",
            "the stored manifest is the post-rendered one"
        );
    }

    // a post-renderer that fails says why (kustomize's error), not just "exited with error"
    let mut bad = upgrade_req(&r, &v1, json!({}));
    bad.post_render = Some(PostRenderConfig {
        kustomize: vec![KustomizePostRenderer {
            patches: vec![Patch {
                patch: "- op: replace\n  path: /spec/nothing/here\n  value: 1\n".into(),
                target: Some(json!({"kind": "Deployment"})),
            }],
            images: vec![],
        }],
        origin_name: "my-hr".into(),
        origin_namespace: "flux-system".into(),
        kustomize_binary: kustomize(),
        ..Default::default()
    });
    let err = e.upgrade(&t, &bad).await.unwrap_err();
    assert!(err.to_string().contains("kustomize"), "{err}");
    println!("post-render error: {err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_wait_timeout_names_the_deployment() {
    let t = target().await;
    let ns = TestNs::new(&t.client, "hr-engine-wait", 0).await;
    let charts = Charts::new();
    let v1 = charts.chart("0.1.0", &[]);
    let e = engine();
    let r = rref("slow", &ns.name);
    let mut req = install_req(
        &r,
        &v1,
        json!({"podAnnotations": {"e2e.pennant.dev/never-ready": "true"}}),
    );
    req.timeout = Duration::from_secs(10);
    let err = e.install(&t, &req).await.unwrap_err();
    assert!(err.timed_out(), "{err:?}");
    let EngineError::Helm(he) = &err else {
        panic!("{err}")
    };
    let want = format!("Deployment/{}/slow-demo: InProgress", ns.name);
    assert!(
        he.not_ready.iter().any(|n| n.starts_with(&want)),
        "{:?}",
        he.not_ready
    );
    assert!(
        he.message.starts_with("timeout waiting for: ["),
        "{}",
        he.message
    );
    assert!(he.message.contains(&want), "{}", he.message);
    assert!(
        !he.not_ready.iter().any(|n| n.contains("Service/")),
        "ready objects are not named: {:?}",
        he.not_ready
    );
    let latest = e.latest(&t, &r).await.unwrap().unwrap();
    assert_eq!(latest.info.status, Status::Failed);
    println!("timeout message: {}", he.message);
    ns.cleanup().await;
}

#[tokio::test]
async fn the_engine_s_own_wait_leaves_the_storage_helm_s_wait_leaves() {
    let (t, watches) = watched_target().await;
    let ns = TestNs::new(&t.client, "hr-engine-ownwait", 0).await;
    let charts = Charts::new();
    let plain = charts.chart("0.1.0", &[]);
    let hook = post_hook("post-install,post-upgrade");
    let hooked = charts.chart("0.2.0", &[("templates/after.yaml", &hook)]);
    assert!(waits_itself(Wait::default(), false, false, &plain));
    assert!(!waits_itself(Wait::default(), false, false, &hooked));
    let e = engine();
    let never_ready = json!({"podAnnotations": {"e2e.pennant.dev/never-ready": "true"}});
    let mut histories = vec![];
    for (name, chart) in [("own", &plain), ("helms", &hooked)] {
        let r = rref(name, &ns.name);
        // a good install passes the wait (the Deployment's pod becomes Ready under kwok)
        let rel = e
            .install(&t, &install_req(&r, chart, json!({})))
            .await
            .unwrap();
        assert_eq!((rel.version, &rel.info.status), (1, &Status::Deployed));
        let dep: Api<Deployment> = Api::namespaced(t.client.clone(), &ns.name);
        let live = dep.get(&format!("{name}-demo")).await.unwrap();
        assert_eq!(
            live.status.and_then(|s| s.ready_replicas),
            Some(1),
            "{name}: the install returned before its Deployment was ready"
        );
        // an upgrade that never becomes Ready: a timeout naming the Deployment
        let mut req = upgrade_req(&r, chart, never_ready.clone());
        req.timeout = Duration::from_secs(10);
        let err = e.upgrade(&t, &req).await.unwrap_err();
        assert!(err.timed_out(), "{name}: {err:?}");
        let EngineError::Helm(he) = &err else {
            panic!("{err}")
        };
        let want = format!("Deployment/{}/{name}-demo: InProgress", ns.name);
        assert!(
            he.not_ready.iter().any(|n| n.starts_with(&want)),
            "{name}: {:?}",
            he.not_ready
        );
        let hist = helm_json(charts.dir.path(), &ns.name, &["history", name]);
        let statuses: Vec<(i64, String)> = hist
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let status = x["status"].as_str().unwrap().to_string();
                (x["revision"].as_i64().unwrap(), status)
            })
            .collect();
        let latest = e.latest(&t, &r).await.unwrap().unwrap();
        // Helm's words in both
        let want = format!(
            "Upgrade \"{name}\" failed: resource Deployment/{}/{name}-demo not ready. status: InProgress, message: ",
            ns.name
        );
        let d = &latest.info.description;
        assert!(d.starts_with(&want), "{name}: {d}");
        assert!(d.ends_with("\ncontext deadline exceeded"), "{name}: {d}");
        println!("{name}: {statuses:?} {:?}", latest.info.description);
        histories.push(statuses);
    }
    let want = vec![(1, "deployed".to_string()), (2, "failed".to_string())];
    assert_eq!(histories, [want.clone(), want]);
    assert!(
        watches
            .watched_kinds()
            .contains(&"Deployment.apps".to_string()),
        "the engine's wait read the watch cache: {:?}",
        watches.watched_kinds()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn time_queued_for_a_helm_process_is_not_taken_from_the_wait() {
    let (t, _watches) = watched_target().await;
    let ns = TestNs::new(&t.client, "hr-engine-queue", 0).await;
    let charts = Charts::new();
    let hook = post_hook("post-install");
    let hooked = charts.chart("0.2.0", &[("templates/after.yaml", &hook)]);
    // available 4 s after its pod is ready: not Current at the wait's first look
    let min_ready = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"{{ .Release.Name }}-min-ready\"\nspec:\n  replicas: 1\n  minReadySeconds: 4\n  selector:\n    matchLabels: {app: \"{{ .Release.Name }}-min-ready\"}\n  template:\n    metadata:\n      labels: {app: \"{{ .Release.Name }}-min-ready\"}\n    spec:\n      containers:\n        - name: c\n          image: busybox\n";
    let plain = charts.chart("0.1.0", &[("templates/min-ready.yaml", min_ready)]);
    let e = HelmCli::new(HelmCliOptions {
        helm: Some(helm().into()),
        post_renderer_exe: Some(env!("CARGO_BIN_EXE_pennant").into()),
        max_processes: 1,
    })
    .unwrap();
    // helm's own wait (a post-install hook) holds the only helm process for its 12 s timeout
    let mut slow = install_req(
        &rref("slow", &ns.name),
        &hooked,
        json!({"podAnnotations": {"e2e.pennant.dev/never-ready": "true"}}),
    );
    slow.timeout = Duration::from_secs(12);
    // pennant's wait, 8 s: queued longer than that behind the first
    let mut quick = install_req(&rref("quick", &ns.name), &plain, json!({}));
    quick.timeout = Duration::from_secs(8);
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(e.install(&t, &slow), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        e.install(&t, &quick).await
    });
    assert!(a.unwrap_err().timed_out());
    let b = b.unwrap();
    assert_eq!(b.info.status, Status::Deployed);
    let dep: Api<Deployment> = Api::namespaced(t.client.clone(), &ns.name);
    let live = dep.get("quick-min-ready").await.unwrap();
    assert_eq!(live.status.and_then(|s| s.available_replicas), Some(1));
    assert!(
        started.elapsed() > Duration::from_secs(12),
        "the second install was queued behind the first: {:?}",
        started.elapsed()
    );
    ns.cleanup().await;
}

/// A ConfigMap hook `<release>-after` on `events` (e.g. `post-install,post-upgrade`): a chart
/// with it keeps helm's own wait ([`waits_itself`] is false).
fn post_hook(events: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{{{{ .Release.Name }}}}-after\"\n  annotations:\n    \"helm.sh/hook\": {events}\n    \"helm.sh/hook-delete-policy\": before-hook-creation\ndata:\n  a: b\n"
    )
}

fn crd(group: &str, rev: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\n  labels:\n    rev: \"{rev}\"\nspec:\n  group: {group}\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    )
}

#[tokio::test]
async fn crds_follow_the_policy() {
    let t = target().await;
    let ns = TestNs::new(&t.client, "hr-engine-crds", 0).await;
    let group = format!("e{}.hrengine.pennant.dev", std::process::id());
    let charts = Charts::new();
    let v1 = charts.chart("0.1.0", &[("crds/widget.yaml", &crd(&group, "1"))]);
    let v2 = charts.chart("0.2.0", &[("crds/widget.yaml", &crd(&group, "2"))]);
    let e = engine();
    let r = rref("crds", &ns.name);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(t.client.clone());
    let name = format!("widgets.{group}");
    let rev = || async { crds.get(&name).await.unwrap().metadata.labels.unwrap()["rev"].clone() };
    let mut req = install_req(&r, &v1, json!({}));
    req.crds = Crds::CreateReplace;
    e.install(&t, &req).await.unwrap();
    assert_eq!(rev().await, "1", "created");
    let mut up = upgrade_req(&r, &v2, json!({}));
    up.crds = Crds::Create;
    e.upgrade(&t, &up).await.unwrap();
    assert_eq!(rev().await, "1", "Create leaves an existing CRD alone");
    up.crds = Crds::CreateReplace;
    e.upgrade(&t, &up).await.unwrap();
    assert_eq!(rev().await, "2", "CreateReplace updates it");
    // `Create` at install: the engine creates a missing CRD and leaves an existing one (another
    // manager's fields) alone, where helm 4's own server-side apply of `crds/` conflicted
    let r2 = rref("crds-again", &ns.name);
    let mut req = install_req(&r2, &v1, json!({}));
    req.crds = Crds::Create;
    e.install(&t, &req).await.unwrap();
    assert_eq!(
        rev().await,
        "2",
        "Create at install leaves an existing CRD alone"
    );
    let _ = crds.delete(&name, &Default::default()).await;
    wait_until(Duration::from_secs(60), "CRD deleted", || async {
        crds.get_opt(&name).await.is_ok_and(|c| c.is_none())
    })
    .await;
    let r3 = rref("crds-fresh", &ns.name);
    let mut req = install_req(&r3, &v1, json!({}));
    req.crds = Crds::Create;
    e.install(&t, &req).await.unwrap();
    assert_eq!(rev().await, "1", "Create at install creates a missing CRD");
    let _ = crds.delete(&name, &Default::default()).await;
    ns.cleanup().await;
}
