//! Sharding end to end (Flux's `sharding.fluxcd.io/key` convention): two pennant processes,
//! shard `a` and shard `b`, each `--watch-label-selector=sharding.fluxcd.io/key=<shard>` with
//! its own Lease (the default name, suffixed per shard), artifact address and storage, on the
//! dev cluster's real apiserver and a real Git server.
//!
//! Proves: each shard takes its own Canaries, GitRepositories and Kustomizations (the Events'
//! `reportingInstance` and the artifact URLs name the process that acted); a Canary relabelled
//! mid-analysis is finished by the other shard from its status, without a second run; a
//! GitRepository and its Kustomization relabelled are taken over without re-applying, and the
//! old shard stops serving the artifact once the new one serves its own (Flux's
//! source-controller#2150 fixed); an object relabelled to no shard keeps its artifact served
//! and gets a `ShardOrphaned` Warning; killing one shard does not stop the other; a shard
//! restarted on empty storage serves its artifacts again.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::CanaryPhase;
use pennant::api::kustomization::Kustomization;
use pennant::api::source::GitRepository;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::*;

const KEY: &str = "sharding.fluxcd.io/key";

struct Shard {
    name: &'static str,
    port: u16,
    process: ControllerProcess,
}

fn start_shard(ns: &str, name: &'static str, port: u16, storage: &Path) -> Shard {
    let listen = format!("127.0.0.1:{port}");
    let selector = format!("{KEY}={name}");
    let process = ControllerProcess::start_with(
        ns,
        &format!("{ns}-{name}"),
        &kubeconfig_path(),
        &[
            "--controllers",
            "canary,source,kustomize",
            "--watch-label-selector",
            &selector,
            "--storage-path",
            storage.to_str().unwrap(),
            "--listen",
            &listen,
            "--artifact-retention-ttl",
            "2s",
            "--leader-election",
            "--leader-election-namespace",
            ns,
            "--leader-election-lease-duration",
            "6s",
            "--log-level",
            "info,pennant=debug",
        ],
        &[("POD_NAME", &format!("shard-{name}"))],
    );
    Shard {
        name,
        port,
        process,
    }
}

impl Shard {
    fn prefix(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
    fn instance(&self) -> String {
        format!("shard-{}", self.name)
    }
}

/// `(reason, message, reportingInstance, time)` of the Events on `name`, oldest first.
async fn events_of(ns: &TestNs, name: &str) -> Vec<(String, String, String, String)> {
    let api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut out: Vec<_> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| {
            let at = e
                .event_time
                .as_ref()
                .map(|t| t.0.to_string())
                .or(e.last_timestamp.as_ref().map(|t| t.0.to_string()))
                .unwrap_or_default();
            (
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
                at,
            )
        })
        .collect();
    out.sort_by(|a, b| a.3.cmp(&b.3));
    out
}

async fn relabel<K>(api: &Api<K>, name: &str, shard: Option<&str>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {"labels": {KEY: shard}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn artifact_url(r: &GitRepository) -> Option<String> {
    r.status.as_ref()?.artifact.as_ref().map(|a| a.url.clone())
}

async fn wait_url(api: &Api<GitRepository>, name: &str, prefix: &str) -> String {
    let mut last = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        let r = api.get(name).await.unwrap();
        if let Some(u) = artifact_url(&r).filter(|u| u.starts_with(prefix)) {
            return u;
        }
        last = artifact_url(&r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name}: no artifact served by {prefix}; last {last:?}");
}

async fn http_status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn source(name: &str, shard: &str, url: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\n  labels:\n    {KEY}: {shard}\nspec:\n  url: {url}\n  interval: 10m\n  ref:\n    branch: main\n"
    )
}

fn kustomization(name: &str, shard: &str, src: &str, path: &str) -> String {
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\n  labels:\n    {KEY}: {shard}\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  targetNamespace: NAMESPACE\n  sourceRef:\n    kind: GitRepository\n    name: {src}\n"
    )
}

async fn wait_applied(api: &Api<Kustomization>, name: &str) -> Kustomization {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(40) {
        let k = api.get(name).await.unwrap();
        let st = k.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready && st.last_applied_revision.is_some() {
            return k;
        }
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} not applied: {last:?}");
}

const CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
  labels:
    sharding.fluxcd.io/key: a
spec:
  provider: kubernetes
  progressDeadlineSeconds: 60
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: 10s
    threshold: 2
    iterations: 2
"#;

#[tokio::test]
async fn two_shards_split_the_objects_and_hand_them_over_on_relabel() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = TestNs::new(&client, "sh-shards", 0).await;
    let (store_a, store_b) = (TempDir::new("sh-store-a"), TempDir::new("sh-store-b"));
    let mut a = start_shard(&ns.name, "a", free_port(), store_a.path());
    let mut b = start_shard(&ns.name, "b", free_port(), store_b.path());

    // each shard leads on its own Lease (the default name, suffixed with the shard)
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    for s in [&a, &b] {
        let name = format!("pennant-leader-election-{}", s.name);
        let want = s.instance();
        wait_until(Duration::from_secs(30), &format!("{name} held"), || async {
            leases.get_opt(&name).await.ok().flatten().is_some_and(|l| {
                l.spec
                    .and_then(|s| s.holder_identity)
                    .is_some_and(|h| h.starts_with(&want))
            })
        })
        .await;
    }

    println!("[{:>5.1}s] leases", t0.elapsed().as_secs_f32());
    // GitOps: each shard fetches its own source and applies its own Kustomization
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let cm = |n: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\ndata:\n  k: v\n")
    };
    repo.commit(
        "main",
        &[("a/cm.yaml", &cm("cm-a")), ("b/cm.yaml", &cm("cm-b"))],
        "two apps",
    );
    let url = server.url("apps");
    ns.apply_yaml(&source("src-a", "a", &url)).await;
    ns.apply_yaml(&source("src-b", "b", &url)).await;
    ns.apply_yaml(&kustomization("ks-a", "a", "src-a", "./a"))
        .await;
    ns.apply_yaml(&kustomization("ks-b", "b", "src-b", "./b"))
        .await;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &ns.name);
    let url_a = wait_url(&repos, "src-a", &a.prefix()).await;
    let url_b = wait_url(&repos, "src-b", &b.prefix()).await;
    assert_eq!(http_status(&url_a).await, 200);
    assert_eq!(http_status(&url_b).await, 200);
    assert_eq!(
        http_status(&url_b.replace(&b.prefix(), &a.prefix())).await,
        404,
        "shard a holds nothing of shard b"
    );
    let ks_a = wait_applied(&kss, "ks-a").await;
    wait_applied(&kss, "ks-b").await;
    let by = |evs: &[(String, String, String, String)], inst: &str| {
        evs.iter().filter(|e| e.2 == inst).count()
    };
    for (obj, s) in [("ks-a", &a), ("src-a", &a), ("ks-b", &b), ("src-b", &b)] {
        let evs = events_of(&ns, obj).await;
        assert!(by(&evs, &s.instance()) > 0, "{obj}: {evs:?}");
        let other = if s.name == "a" { "shard-b" } else { "shard-a" };
        assert_eq!(by(&evs, other), 0, "{obj} acted on by {other}: {evs:?}");
    }

    println!("[{:>5.1}s] gitops split", t0.elapsed().as_secs_f32());
    // Canary: shard a initialises it
    ns.apply_yaml(&podinfo("ghcr.io/stefanprodan/podinfo:6.0.0", 0.0, ""))
        .await;
    ns.apply_yaml(CANARY).await;
    wait_initialized(&ns, "podinfo").await;
    let evs = events_of(&ns, "podinfo").await;
    assert!(
        by(&evs, "shard-a") > 0 && by(&evs, "shard-b") == 0,
        "{evs:?}"
    );

    println!("[{:>5.1}s] canary initialised", t0.elapsed().as_secs_f32());
    // a new revision: shard a runs the analysis; relabelled mid-run, shard b finishes it from
    // status (no restart of the run, iterations never go back)
    set_image(&ns, "ghcr.io/stefanprodan/podinfo:6.0.1", 0.0).await;
    let canaries = ns.canaries();
    wait_until(
        Duration::from_secs(60),
        "two iterations on shard a",
        || async {
            let st = canaries
                .get("podinfo")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            st.phase == Some(CanaryPhase::Progressing) && st.iterations >= 2
        },
    )
    .await;
    relabel(&canaries, "podinfo", Some("b")).await;
    let moved_at = Instant::now();
    let mut iterations = vec![];
    loop {
        let st = canaries
            .get("podinfo")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        iterations.push(st.iterations);
        if st.phase == Some(CanaryPhase::Succeeded) {
            break;
        }
        assert_ne!(st.phase, Some(CanaryPhase::Failed), "{st:?}");
        assert!(
            moved_at.elapsed() < Duration::from_secs(60),
            "not promoted: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let running: Vec<i32> = iterations.iter().copied().take_while(|i| *i > 0).collect();
    assert!(
        running.windows(2).all(|w| w[0] <= w[1]),
        "iterations went back: {iterations:?}"
    );
    assert!(running.first().is_some_and(|i| *i >= 1), "{iterations:?}");
    let evs = events_of(&ns, "podinfo").await;
    let detected: Vec<_> = evs
        .iter()
        .filter(|e| e.1.starts_with("New revision detected!"))
        .collect();
    assert_eq!(detected.len(), 1, "one run of the new revision: {evs:?}");
    assert_eq!(detected[0].2, "shard-a");
    let promoted: Vec<_> = evs
        .iter()
        .filter(|e| e.1.starts_with("Copying") || e.1.starts_with("Promotion completed"))
        .collect();
    assert!(
        !promoted.is_empty() && promoted.iter().all(|e| e.2 == "shard-b"),
        "shard b promoted: {evs:?}"
    );

    println!("[{:>5.1}s] canary handed over", t0.elapsed().as_secs_f32());
    // GitOps hand-over: src-a and ks-a move to shard b; b serves its own copy of the same
    // revision, ks-a is not re-applied, a stops serving its copy after the grace period
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let rv_before = cms.get("cm-a").await.unwrap().metadata.resource_version;
    let applied = ks_a.status.clone().unwrap().last_applied_revision;
    relabel(&repos, "src-a", Some("b")).await;
    relabel(&kss, "ks-a", Some("b")).await;
    let url_a2 = wait_url(&repos, "src-a", &b.prefix()).await;
    assert_eq!(http_status(&url_a2).await, 200);
    wait_until(
        Duration::from_secs(20),
        "shard a stops serving src-a",
        || async { http_status(&url_a).await == 404 },
    )
    .await;
    assert!(
        !store_a
            .path()
            .join("gitrepository")
            .join(&ns.name)
            .join("src-a")
            .exists(),
        "the files are gone from shard a's storage"
    );
    let ks = kss.get("ks-a").await.unwrap();
    assert_eq!(ks.status.unwrap().last_applied_revision, applied);
    assert_eq!(
        cms.get("cm-a").await.unwrap().metadata.resource_version,
        rv_before,
        "not applied again"
    );
    // the same revision: no new-artifact Event from shard b (its URL above shows it acted)
    let evs = events_of(&ns, "src-a").await;
    assert_eq!(by(&evs, "shard-b"), 0, "{evs:?}");

    println!("[{:>5.1}s] gitops handed over", t0.elapsed().as_secs_f32());
    // an object relabelled to no shard: its artifact stays served, a Warning says why
    relabel(&repos, "src-b", Some("nowhere")).await;
    let orphaned = ns.events_with("src-b", &["no shard took it over"]).await;
    let evs = events_of(&ns, "src-b").await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "ShardOrphaned" && e.2 == "shard-b"),
        "{orphaned:?} {evs:?}"
    );
    assert_eq!(http_status(&url_b).await, 200, "consumers keep working");
    relabel(&repos, "src-b", Some("b")).await;

    println!("[{:>5.1}s] orphan", t0.elapsed().as_secs_f32());
    // killing shard a does not stop shard b
    a.process.kill();
    let sha = repo.commit("main", &[("b/cm.yaml", &cm("cm-b2"))], "rename");
    let token = format!("{}", t0.elapsed().as_millis());
    let req = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    repos
        .patch("src-b", &PatchParams::default(), &Patch::Merge(&req))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(40),
        "shard b applies the new commit",
        || async {
            kss.get("ks-b")
                .await
                .ok()
                .and_then(|k| k.status)
                .and_then(|s| s.last_applied_revision)
                == Some(format!("main@sha1:{sha}"))
        },
    )
    .await;
    assert!(cms.get_opt("cm-b2").await.unwrap().is_some());

    println!("[{:>5.1}s] kill", t0.elapsed().as_secs_f32());
    // shard b restarted on empty storage (an emptyDir): its artifacts are rebuilt and served
    b.process.kill();
    let store_b2 = TempDir::new("sh-store-b2");
    let port_b = b.port;
    let b2 = start_shard(&ns.name, "b", port_b, store_b2.path());
    let before = repos.get("src-a").await.unwrap();
    let url = artifact_url(&before).unwrap();
    wait_until(
        Duration::from_secs(40),
        "src-a served again after the restart",
        || async {
            let now = repos.get("src-a").await.ok().and_then(|r| artifact_url(&r));
            match now {
                Some(u) => http_status(&u).await == 200,
                None => false,
            }
        },
    )
    .await;
    assert!(url.starts_with(&b2.prefix()));

    println!("[{:>5.1}s] restart", t0.elapsed().as_secs_f32());
    // delete the sources while shard b still runs (it releases their finalizers)
    for n in ["ks-a", "ks-b"] {
        let _ = kss.delete(n, &Default::default()).await;
    }
    for n in ["src-a", "src-b"] {
        let _ = repos.delete(n, &Default::default()).await;
    }
    wait_until(Duration::from_secs(30), "objects finalized", || async {
        repos
            .list(&Default::default())
            .await
            .is_ok_and(|l| l.items.is_empty())
            && kss
                .list(&Default::default())
                .await
                .is_ok_and(|l| l.items.is_empty())
    })
    .await;
    let _ = canaries.delete("podinfo", &Default::default()).await;
    wait_until(Duration::from_secs(30), "Canary finalized", || async {
        canaries.get_opt("podinfo").await.is_ok_and(|c| c.is_none())
    })
    .await;
    drop(b2);
    ns.cleanup().await;
    println!("e2e_shards: {:.1}s", t0.elapsed().as_secs_f32());
}
