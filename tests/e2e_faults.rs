//! Faults, against the real local control plane (`e2e/cluster up`), each bounded in time:
//!
//! - `kill -9` of pennant at seeded random moments while Canaries release and Kustomizations
//!   reconcile (`PENNANT_CHAOS_*` scale it; `e2e/chaos` runs 100 + 100): everything converges,
//!   no release runs again after its promotion, no request reaches a canary that is not Ready
//!   (the simulator's `sim_requests_by_readiness_total`);
//! - the API server killed and started again mid-release: the controller keeps running and the
//!   release and a Kustomization finish;
//! - Prometheus stopped for 2 minutes mid-analysis: no step and no promotion on missing data,
//!   the analysis resumes once it is back;
//! - the Git server stopped: the last artifact is still served, the applied objects are kept,
//!   the GitRepository says `FetchFailed`, and it recovers when the server is back;
//! - a webhook receiver that accepts and never answers: the hook fails after its `timeout`
//!   while another Canary of the same controller is promoted meanwhile.
//!
//! Tests that stop a shared component (API server, Prometheus) serialise through [`SHARED`]:
//! the API server's restart takes it exclusively, every other test shares it.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Path as AxPath;
use axum::routing::post;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use pennant::api::CanaryPhase;
use pennant::api::kustomization::Kustomization;
use pennant::api::source::GitRepository;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use support::gitserver::{GitServer, Repo, ServerOptions, TempDir};
use support::*;

/// Held exclusively by the test that restarts the API server, shared by all the others.
static SHARED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn image(n: usize) -> String {
    format!("ghcr.io/stefanprodan/podinfo:6.1.{n}")
}

// ------------------------------------------------------------------------------------------
// Cluster components stopped and started again (the pids `e2e/cluster` records)

/// A component of the cluster that a test stopped; started again by [`Outage::restore`], or
/// on drop (a failing test must not leave the shared cluster broken).
struct Outage {
    name: &'static str,
    argv: Vec<String>,
    identity: String,
    restored: bool,
}

impl Outage {
    /// Stops `name` (a file under `$STATE/pids`: `<pid> <identity>`) with `signal`, waiting up
    /// to 20 s for it to exit.
    fn stop(name: &'static str, signal: &str) -> Outage {
        let pid_file = format!("{}/pids/{name}", state_dir());
        let text = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{pid_file}: {e} (is the cluster up?)"));
        let (pid, identity) = text.trim().split_once(' ').expect("<pid> <identity>");
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("cmdline of a running component")
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let st = Command::new("kill")
            .args([signal, pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {signal} {name} ({pid})");
        let start = Instant::now();
        while alive(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} ({pid}) still alive"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("[faults] stopped {name} (pid {pid}, {signal})");
        Outage {
            name,
            argv,
            identity: identity.to_string(),
            restored: false,
        }
    }

    /// Starts the component again with the same command line, detached (own session, as
    /// `e2e/cluster` starts it), appending to its log; records the new pid.
    fn restore(&mut self) {
        if self.restored {
            return;
        }
        self.restored = true;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{}/logs/{}.log", state_dir(), self.name))
            .expect("component log");
        let child = Command::new("setsid")
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start component");
        std::fs::write(
            format!("{}/pids/{}", state_dir(), self.name),
            format!("{} {}\n", child.id(), self.identity),
        )
        .unwrap();
        println!("[faults] started {} again (pid {})", self.name, child.id());
        // reaped by a thread, so no zombie is left while the test process lives
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A process that has not exited (a zombie counts as exited).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => !st
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_apiserver_ready(timeout: Duration) {
    wait_until(timeout, "API server /readyz", || async {
        Command::new(kubectl())
            .args([
                "--kubeconfig",
                &kubeconfig_path(),
                "get",
                "--raw",
                "/readyz",
            ])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ok"))
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// What the tests read

/// Requests the simulator routed to a `*-canary` Service of `ns` while no pod behind it was
/// Ready (`sim_requests_by_readiness_total{ready="false"}`), and those routed to a Ready one.
async fn canary_requests_by_readiness(ns: &str) -> (u64, u64) {
    let body = simulator_metrics().await;
    let (mut ready, mut unready) = (0, 0);
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("sim_requests_by_readiness_total{") else {
            continue;
        };
        if !rest.contains(&format!("namespace=\"{ns}\"")) || !rest.contains("-canary\"") {
            continue;
        }
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if rest.contains("ready=\"false\"") {
            unready += n;
        } else {
            ready += n;
        }
    }
    (ready, unready)
}

/// Webhook calls received: (kind, canary, checksum, when).
type Calls = Arc<Mutex<Vec<(String, String, String, Instant)>>>;

/// An HTTP receiver for Canary webhooks: `POST <url>/<kind>` answers 200 and records the call.
async fn hook_recorder() -> (String, Calls) {
    let calls: Calls = Default::default();
    let sink = calls.clone();
    let app = axum::Router::new().route(
        "/{kind}",
        post(
            move |AxPath(kind): AxPath<String>, Json(body): Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((
                        kind,
                        body["name"].as_str().unwrap_or_default().to_string(),
                        body["checksum"].as_str().unwrap_or_default().to_string(),
                        Instant::now(),
                    ));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// A Deployment `name` (one replica, the simulator's defaults) at `image`.
fn app(name: &str, image: &str) -> String {
    podinfo(image, 0.0, "")
        .replace("podinfo", name)
        .replace(
            &format!("ghcr.io/stefanprodan/{name}"),
            "ghcr.io/stefanprodan/podinfo",
        )
        .replace(&format!("name: {name}d"), "name: podinfod")
        .replace("replicas: 2", "replicas: 1")
}

/// A Canary on Deployment `name` (Istio, no metrics, threshold 3): `interval` (Flagger raises
/// anything under 10 s to 10 s, and so does pennant: a release takes at least two intervals),
/// steps of `step` up to `max`, `webhooks` (YAML list items, indented for `analysis.webhooks`).
fn fast_canary(name: &str, interval: &str, step: u32, max: u32, webhooks: &str) -> String {
    let hooks = if webhooks.is_empty() {
        String::new()
    } else {
        format!("    webhooks:\n{webhooks}")
    };
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {name}
  namespace: NAMESPACE
spec:
  provider: istio
  progressDeadlineSeconds: 60
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: {interval}
    threshold: 3
    maxWeight: {max}
    stepWeight: {step}
{hooks}"#
    )
}

/// Points the Deployment `name` at `image` (a new revision).
async fn set_app_image(ns: &TestNs, name: &str, image: &str) -> Result<(), String> {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "podinfod", "image": image}]}}}});
    let params = kube::api::PatchParams {
        field_manager: Some("e2e".into()),
        ..Default::default()
    };
    ns.deployments()
        .patch(name, &params, &kube::api::Patch::Strategic(patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("set image of {name}: {e}"))
}

/// Waits until Canary `name` has promoted `image`: phase Succeeded and the primary at it.
async fn wait_released(
    ns: &TestNs,
    name: &str,
    image: &str,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let phase = ns
            .canaries()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .and_then(|s| s.phase);
        let primary = ns
            .deployments()
            .get_opt(&format!("{name}-primary"))
            .await
            .ok()
            .flatten()
            .map(|d| image_of(&d));
        if phase == Some(CanaryPhase::Succeeded) && primary.as_deref() == Some(image) {
            return Ok(());
        }
        if phase == Some(CanaryPhase::Failed) {
            return Err(format!("{name}: release of {image} Failed"));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{name}: {image} not released within {timeout:?} (phase {phase:?}, primary {primary:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The controllers every GitOps fault test runs: canary, source and kustomize in one process,
/// its artifact server on `port` (kept across restarts, so artifact URLs stay valid).
fn all_controllers(ns: &str, log: &str, storage: &std::path::Path, port: u16) -> ControllerProcess {
    let listen = format!("127.0.0.1:{port}");
    let prom = prometheus_url();
    let level = std::env::var("PENNANT_FAULTS_LOG_LEVEL").unwrap_or("info,pennant=debug".into());
    ControllerProcess::start_with(
        ns,
        log,
        &kubeconfig_path(),
        &[
            "--controllers",
            "canary,source,kustomize",
            "--storage-path",
            storage.to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-server",
            &prom,
            "--log-level",
            &level,
        ],
        &[],
    )
}

/// `app-<i>/cm.yaml`: ConfigMap `cm-<i>` with `rev: <rev>`, for every app.
fn commit_configmaps(repo: &Repo, apps: usize, rev: usize) -> String {
    let files: Vec<(String, String)> = (0..apps)
        .map(|i| {
            (
                format!("app-{i}/cm.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  rev: \"{rev}\"\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.commit("main", &refs, &format!("rev {rev}"))
}

async fn apply_gitops(ns: &TestNs, url: &str, apps: usize, source_interval: &str) {
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: apps\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: {source_interval}\n  timeout: 5s\n  ref:\n    branch: main\n"
    ))
    .await;
    for i in 0..apps {
        ns.apply_yaml(&format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: ks-{i}\n  namespace: NAMESPACE\nspec:\n  interval: 10s\n  retryInterval: 2s\n  targetNamespace: NAMESPACE\n  path: ./app-{i}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: apps\n"
        ))
        .await;
    }
}

/// Kustomizations `ks-0..apps` that applied `main@sha1:<sha>` and ConfigMaps at `rev`: the
/// ones not there yet.
async fn gitops_lagging(ns: &TestNs, apps: usize, sha: &str, rev: usize) -> Vec<String> {
    let ks: Api<Kustomization> = Api::namespaced(ns.client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let want = format!("main@sha1:{sha}");
    let mut lagging = vec![];
    for i in 0..apps {
        let applied = ks
            .get_opt(&format!("ks-{i}"))
            .await
            .ok()
            .flatten()
            .and_then(|k| k.status)
            .and_then(|s| s.last_applied_revision);
        let data = cms
            .get_opt(&format!("cm-{i}"))
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get("rev").cloned());
        if applied.as_deref() != Some(want.as_str()) || data != Some(rev.to_string()) {
            lagging.push(format!("ks-{i} ({applied:?}, cm rev {data:?})"));
        }
    }
    lagging
}

/// Deletes the Kustomizations and the GitRepository while the controller still runs (it
/// releases their finalizers), then the namespace.
async fn cleanup_gitops(ns: TestNs) {
    support::sources::delete_all::<Kustomization>(&ns, "Kustomizations").await;
    support::sources::cleanup(ns).await;
}

// ------------------------------------------------------------------------------------------
// 1. kill -9 at random moments

/// kill -9 of the controller at seeded random moments (every 1.5-5 s, restarted after 0-1 s)
/// while `PENNANT_CHAOS_CANARIES` Canaries each release `PENNANT_CHAOS_RELEASES` revisions in
/// turn and `PENNANT_CHAOS_KUSTOMIZATIONS` Kustomizations each apply
/// `PENNANT_CHAOS_COMMITS` commits (CI: 5 × 2 and 5 × 3; `e2e/chaos`: 10 × 10 and 10 × 10).
/// Seed: `PENNANT_CHAOS_SEED` (printed either way). Every revision is promoted and every commit
/// applied; no `rollout` hook call for a revision after its `post-rollout` call (a release run
/// again), a second `post-rollout` call only across a kill; no request routed to a canary with
/// no Ready pod.
#[tokio::test]
async fn chaos_kill_nine_at_random_moments_converges_without_reruns() {
    let _shared = SHARED.read().await;
    let seed: u64 = env_or(
        "PENNANT_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let canaries: usize = env_or("PENNANT_CHAOS_CANARIES", 5);
    let releases: usize = env_or("PENNANT_CHAOS_RELEASES", 2);
    let apps: usize = env_or("PENNANT_CHAOS_KUSTOMIZATIONS", 5);
    let commits: usize = env_or("PENNANT_CHAOS_COMMITS", 3);
    println!(
        "[chaos] seed {seed} (PENNANT_CHAOS_SEED={seed} reproduces the kill times): {canaries} canaries x {releases} releases, {apps} kustomizations x {commits} commits"
    );
    let client = client().await;
    let ns = TestNs::new(&client, "faults-chaos", 10).await;
    let (hooks, calls) = hook_recorder().await;
    let git = GitServer::start(ServerOptions::default());
    let repo = git.create_repo("apps");
    commit_configmaps(&repo, apps, 0);
    let storage = TempDir::new("pennant-chaos-storage");
    let port = free_port();
    let ctl: Arc<Mutex<Option<ControllerProcess>>> = Arc::new(Mutex::new(Some(all_controllers(
        &ns.name,
        &format!("{}-0", ns.name),
        storage.path(),
        port,
    ))));
    for i in 0..canaries {
        let name = format!("app-{i}");
        ns.apply_yaml(&app(&name, &image(0))).await;
        let webhooks = format!(
            "    - name: rollout\n      type: rollout\n      url: {hooks}/rollout\n    - name: post\n      type: post-rollout\n      url: {hooks}/post-rollout\n"
        );
        ns.apply_yaml(&fast_canary(&name, "10s", 50, 50, &webhooks))
            .await;
    }
    apply_gitops(&ns, &git.url("apps"), apps, "2s").await;

    // the chaos: kill -9 and restart, at seeded random moments, until told to stop
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kills: Arc<Mutex<Vec<Instant>>> = Default::default();
    let started = Instant::now();
    let chaos = {
        let (ctl, stop, kills, ns_name, storage_path) = (
            ctl.clone(),
            stop.clone(),
            kills.clone(),
            ns.name.clone(),
            storage.path().to_path_buf(),
        );
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut n = 0;
            loop {
                let up = rng.random_range(1500..5000u64);
                let down = rng.random_range(0..1000u64);
                tokio::time::sleep(Duration::from_millis(up)).await;
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return n;
                }
                n += 1;
                if let Some(mut p) = ctl.lock().unwrap().take() {
                    p.kill();
                }
                kills.lock().unwrap().push(Instant::now());
                println!(
                    "[chaos] kill -9 #{n} at {:.1}s (up {up} ms), restart after {down} ms",
                    started.elapsed().as_secs_f32()
                );
                tokio::time::sleep(Duration::from_millis(down)).await;
                let p = all_controllers(&ns_name, &format!("{ns_name}-{n}"), &storage_path, port);
                *ctl.lock().unwrap() = Some(p);
            }
        })
    };

    let per_release = Duration::from_secs(90);
    let mut drivers = vec![];
    for i in 0..canaries {
        let ns = TestNs {
            client: client.clone(),
            name: ns.name.clone(),
        };
        drivers.push(tokio::spawn(async move {
            let name = format!("app-{i}");
            wait_phase(
                &ns,
                &name,
                CanaryPhase::Initialized,
                Some(CanaryPhase::Failed),
                Duration::from_secs(120),
            )
            .await;
            for r in 1..=releases {
                set_app_image(&ns, &name, &image(r)).await?;
                wait_released(&ns, &name, &image(r), per_release).await?;
            }
            Ok::<_, String>(())
        }));
    }
    let mut gitops_errors = vec![];
    for rev in 1..=commits {
        let sha = commit_configmaps(&repo, apps, rev);
        let start = Instant::now();
        loop {
            let lagging = gitops_lagging(&ns, apps, &sha, rev).await;
            if lagging.is_empty() {
                println!(
                    "[chaos] commit {rev} applied by all {apps} Kustomizations in {:.1}s",
                    start.elapsed().as_secs_f32()
                );
                break;
            }
            if start.elapsed() > Duration::from_secs(90) {
                gitops_errors.push(format!("commit {rev} not applied: {lagging:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let mut canary_errors = vec![];
    for d in drivers {
        if let Err(e) = d.await.expect("driver") {
            canary_errors.push(e);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n_kills = chaos.await.unwrap();
    println!(
        "[chaos] seed {seed}: {n_kills} kills in {:.1}s",
        started.elapsed().as_secs_f32()
    );
    assert!(
        canary_errors.is_empty() && gitops_errors.is_empty(),
        "seed {seed}: not converged: {canary_errors:?} {gitops_errors:?}"
    );
    assert!(n_kills >= 3, "seed {seed}: only {n_kills} kills: no chaos");

    // no release ran again after its promotion; post-rollout twice only across a kill
    let calls = calls.lock().unwrap().clone();
    let kills = kills.lock().unwrap().clone();
    let mut promoted: BTreeMap<(String, String), Vec<Instant>> = BTreeMap::new();
    for (kind, name, sum, at) in &calls {
        if kind == "post-rollout" {
            promoted
                .entry((name.clone(), sum.clone()))
                .or_default()
                .push(*at);
        }
    }
    for (kind, name, sum, at) in &calls {
        if kind == "rollout"
            && let Some(first) = promoted.get(&(name.clone(), sum.clone())).map(|v| v[0])
        {
            assert!(
                *at <= first,
                "seed {seed}: {name} revision {sum} analysed again {:?} after its promotion",
                *at - first
            );
        }
    }
    for ((name, sum), times) in &promoted {
        for pair in times.windows(2) {
            assert!(
                kills.iter().any(|k| *k >= pair[0] && *k <= pair[1]),
                "seed {seed}: {name} revision {sum}: post-rollout called twice with no kill in between"
            );
        }
    }
    for i in 0..canaries {
        let name = format!("app-{i}");
        let revisions = promoted.keys().filter(|(n, _)| *n == name).count();
        assert_eq!(
            revisions, releases,
            "seed {seed}: {name}: promoted revisions (post-rollout checksums)"
        );
    }
    let (ready, unready) = canary_requests_by_readiness(&ns.name).await;
    println!("[chaos] canary requests: {ready} to Ready pods, {unready} to none Ready");
    assert!(ready > 0, "the canaries got traffic");
    assert_eq!(
        unready, 0,
        "seed {seed}: requests reached a canary that was not Ready"
    );
    cleanup_gitops(ns).await;
    drop(ctl.lock().unwrap().take());
    drop(storage);
}

// ------------------------------------------------------------------------------------------
// 2. the API server restarted

/// The API server killed (`kill -9`) while a release is in flight and started again after
/// 10 s, a commit pushed meanwhile: the controller process is still running, the release is
/// promoted and the commit applied; no request reached a canary that was not Ready. Runs alone
/// ([`SHARED`] exclusively): every other test needs the API server.
#[tokio::test]
async fn restart_of_the_api_server_mid_release_recovers() {
    let _exclusive = SHARED.write().await;
    let client = client().await;
    let ns = TestNs::new(&client, "faults-apiserver", 10).await;
    let git = GitServer::start(ServerOptions::default());
    let repo = git.create_repo("apps");
    commit_configmaps(&repo, 1, 0);
    let storage = TempDir::new("pennant-apiserver-storage");
    let mut ctl = all_controllers(
        &ns.name,
        &format!("{}-ctl", ns.name),
        storage.path(),
        free_port(),
    );
    ns.apply_yaml(&app("web", &image(0))).await;
    // the default progress deadline (600 s): the release must not hang on the outage
    ns.apply_yaml(&fast_canary("web", "10s", 30, 60, "").replace(
        "progressDeadlineSeconds: 60",
        "progressDeadlineSeconds: 600",
    ))
    .await;
    apply_gitops(&ns, &git.url("apps"), 1, "2s").await;
    wait_initialized(&ns, "web").await;
    let sha0 = repo.head();
    wait_until(Duration::from_secs(60), "commit 0 applied", || async {
        gitops_lagging(&ns, 1, &sha0, 0).await.is_empty()
    })
    .await;
    set_app_image(&ns, "web", &image(1)).await.unwrap();
    wait_until(Duration::from_secs(60), "canary weight > 0", || async {
        let st = ns.canary("web").await.status.unwrap_or_default();
        st.phase == Some(CanaryPhase::Progressing) && st.canary_weight > 0
    })
    .await;
    let mut outage = Outage::stop("kube-apiserver", "-KILL");
    let sha1 = commit_configmaps(&repo, 1, 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    outage.restore();
    wait_apiserver_ready(Duration::from_secs(90)).await;
    let back = Instant::now();
    wait_released(&ns, "web", &image(1), Duration::from_secs(150))
        .await
        .unwrap();
    wait_until(Duration::from_secs(90), "commit 1 applied", || async {
        gitops_lagging(&ns, 1, &sha1, 1).await.is_empty()
    })
    .await;
    println!(
        "[faults] release and commit done {:.1}s after the API server was back",
        back.elapsed().as_secs_f32()
    );
    assert_eq!(
        ctl.wait_exit(Duration::from_millis(300)),
        None,
        "the controller exited while the API server was away"
    );
    let (_, unready) = canary_requests_by_readiness(&ns.name).await;
    assert_eq!(unready, 0, "requests reached a canary that was not Ready");
    cleanup_gitops(ns).await;
}

// ------------------------------------------------------------------------------------------
// 3. Prometheus stopped for two minutes

/// Prometheus stopped (SIGTERM) for 2 minutes (`PENNANT_FAULTS_PROM_DOWN_S`) while a Canary
/// with the builtin request-success-rate metric is at its first step: from one interval after
/// the stop until Prometheus is back, the weight does not move and the Canary stays
/// `Progressing` (no step, no promotion on missing data); once it is back, the release is
/// promoted.
#[tokio::test]
async fn analysis_holds_while_prometheus_is_down() {
    let _shared = SHARED.read().await;
    let down = Duration::from_secs(env_or("PENNANT_FAULTS_PROM_DOWN_S", 120));
    let client = client().await;
    let ns = TestNs::new(&client, "faults-prom", 20).await;
    ns.apply_yaml(&app("podinfo", &image(0))).await;
    ns.apply_yaml(&format!(
        "{}    threshold: 100\n    metrics:\n    - name: request-success-rate\n      thresholdRange:\n        min: 99\n      interval: 30s\n",
        fast_canary("podinfo", "10s", 20, 60, "").replace("    threshold: 3\n", "")
    ))
    .await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    wait_initialized(&ns, "podinfo").await;
    set_app_image(&ns, "podinfo", &image(1)).await.unwrap();
    wait_until(Duration::from_secs(90), "first step", || async {
        let st = ns.canary("podinfo").await.status.unwrap_or_default();
        st.phase == Some(CanaryPhase::Progressing) && st.canary_weight >= 20
    })
    .await;
    let mut outage = Outage::stop("prometheus", "-TERM");
    let stopped = Instant::now();
    // an analysis already past its queries may take one more step
    tokio::time::sleep(Duration::from_secs(12)).await;
    let held = ns.canary("podinfo").await.status.unwrap_or_default();
    println!(
        "[faults] Prometheus down: weight {} failedChecks {}",
        held.canary_weight, held.failed_checks
    );
    assert_eq!(held.phase, Some(CanaryPhase::Progressing));
    while stopped.elapsed() < down {
        let st = ns.canary("podinfo").await.status.unwrap_or_default();
        assert_eq!(
            (st.phase, st.canary_weight),
            (Some(CanaryPhase::Progressing), held.canary_weight),
            "the analysis moved on missing data after {:?}: {st:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = ns.canary("podinfo").await.status.unwrap_or_default();
    println!(
        "[faults] after {:?} without Prometheus: weight {} failedChecks {}",
        down, during.canary_weight, during.failed_checks
    );
    assert!(
        during.failed_checks > held.failed_checks,
        "missing data counted as failed checks ({} then {})",
        held.failed_checks,
        during.failed_checks
    );
    outage.restore();
    wait_http(
        &format!("{}/-/ready", prometheus_url()),
        Duration::from_secs(60),
    )
    .await;
    let weights = wait_promoted(&ns, "podinfo").await;
    assert!(
        weights.iter().any(|w| *w > held.canary_weight),
        "the analysis resumed: {weights:?}"
    );
    ns.cleanup().await;
}

// ------------------------------------------------------------------------------------------
// 4. the Git server stopped

/// The Git server killed while a GitRepository (interval 2 s) and two Kustomizations (prune)
/// are Ready: the GitRepository shows `FetchFailed=True` and `Ready=False`, the last artifact
/// is still served (same digest), the Kustomizations keep their objects over their next
/// reconcile; a commit pushed meanwhile is applied once the server is back on the same port.
#[tokio::test]
async fn git_server_down_keeps_the_artifact_and_objects_then_recovers() {
    let _shared = SHARED.read().await;
    let client = client().await;
    let ns = TestNs::new(&client, "faults-git", 10).await;
    let mut git = GitServer::start(ServerOptions::default());
    let repo = git.create_repo("apps");
    let sha1 = commit_configmaps(&repo, 2, 1);
    let storage = TempDir::new("pennant-git-storage");
    let _ctl = all_controllers(
        &ns.name,
        &format!("{}-ctl", ns.name),
        storage.path(),
        free_port(),
    );
    apply_gitops(&ns, &git.url("apps"), 2, "2s").await;
    wait_until(Duration::from_secs(60), "commit 1 applied", || async {
        gitops_lagging(&ns, 2, &sha1, 1).await.is_empty()
    })
    .await;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let before = repos.get("apps").await.unwrap();
    let artifact = before.status.as_ref().unwrap().artifact.clone().unwrap();

    git.stop();
    let stopped = Instant::now();
    let failed = loop {
        let r = repos.get("apps").await.unwrap();
        let conds = r.status.map(|s| s.conditions).unwrap_or_default();
        let fetch = conds
            .iter()
            .find(|c| c.type_ == "FetchFailed" && c.status == "True");
        let ready_false = conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False");
        if let Some(c) = fetch
            && ready_false
        {
            break format!("{}: {}", c.reason, c.message);
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "no FetchFailed within 60 s: {conds:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "[faults] {:.1}s after the stop: {}",
        stopped.elapsed().as_secs_f32(),
        failed
    );
    let r = repos.get("apps").await.unwrap();
    assert_eq!(
        r.status.unwrap().artifact.map(|a| (a.revision, a.digest)),
        Some((artifact.revision.clone(), artifact.digest.clone())),
        "the last artifact stays in the status"
    );
    let body = reqwest::get(&artifact.url)
        .await
        .expect("artifact server")
        .error_for_status()
        .expect("the last artifact is still served")
        .bytes()
        .await
        .unwrap();
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(&body)),
        artifact.digest
    );
    // the Kustomizations (interval 10 s) reconcile at least once more while the server is away
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        gitops_lagging(&ns, 2, &sha1, 1).await.is_empty(),
        "objects pruned or changed while the Git server was away"
    );
    let sha2 = commit_configmaps(&repo, 2, 2);
    git.restart();
    let back = Instant::now();
    wait_until(Duration::from_secs(60), "commit 2 applied", || async {
        gitops_lagging(&ns, 2, &sha2, 2).await.is_empty()
    })
    .await;
    let r = repos.get("apps").await.unwrap();
    let conds = r.status.map(|s| s.conditions).unwrap_or_default();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{conds:?}"
    );
    assert!(
        !conds.iter().any(|c| c.type_ == "FetchFailed"),
        "FetchFailed removed once it fetched: {conds:?}"
    );
    println!(
        "[faults] commit 2 applied {:.1}s after the server was back",
        back.elapsed().as_secs_f32()
    );
    cleanup_gitops(ns).await;
}

// ------------------------------------------------------------------------------------------
// 5. a webhook receiver that hangs

/// Per connection: when it was accepted and, once the peer closed it, when it was closed.
type Connections = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// A TCP server that accepts every connection and never answers: its url and [`Connections`].
async fn hanging_receiver() -> (String, Connections) {
    let conns: Connections = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let sink = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let i = {
                let mut c = sink.lock().unwrap();
                c.push((Instant::now(), None));
                c.len() - 1
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                sink.lock().unwrap()[i].1 = Some(Instant::now());
            });
        }
    });
    (url, conns)
}

/// Canary `slow` has a pre-rollout hook (timeout 45 s, threshold 1) on a receiver that
/// accepts and never answers; Canary `fast`, same controller, starts its release right after
/// the hook's connection opened. `fast` is promoted (two 10 s intervals) while the hook hangs;
/// the controller gives up on the hook after its timeout (the connection closed 44-51 s after
/// it opened) and `slow` is rolled back.
#[tokio::test]
async fn hanging_webhook_times_out_while_other_canaries_progress() {
    let _shared = SHARED.read().await;
    let (url, conns) = hanging_receiver().await;
    let client = client().await;
    let ns = TestNs::new(&client, "faults-hang", 10).await;
    for name in ["slow", "fast"] {
        ns.apply_yaml(&app(name, &image(0))).await;
    }
    ns.apply_yaml(
        &fast_canary(
            "slow",
            "10s",
            50,
            50,
            &format!(
                "    - name: gate\n      type: pre-rollout\n      url: {url}\n      timeout: 45s\n"
            ),
        )
        .replace("threshold: 3", "threshold: 1"),
    )
    .await;
    ns.apply_yaml(&fast_canary("fast", "10s", 50, 50, "")).await;
    let _ctl = ControllerProcess::start(&ns.name, &prometheus_url());
    wait_initialized(&ns, "slow").await;
    wait_initialized(&ns, "fast").await;
    set_app_image(&ns, "slow", &image(1)).await.unwrap();
    wait_until(Duration::from_secs(60), "the hook's connection", || async {
        !conns.lock().unwrap().is_empty()
    })
    .await;
    let opened = conns.lock().unwrap()[0].0;
    set_app_image(&ns, "fast", &image(1)).await.unwrap();
    wait_released(&ns, "fast", &image(1), Duration::from_secs(60))
        .await
        .unwrap();
    let fast_done = opened.elapsed();
    let first = conns.lock().unwrap()[0];
    assert_eq!(
        first.1, None,
        "fast promoted after {fast_done:?}, but the hook's connection was already closed"
    );
    println!("[faults] fast promoted {fast_done:?} after the hook's connection opened");
    wait_until(
        Duration::from_secs(60),
        "the hook's connection closed",
        || async { conns.lock().unwrap()[0].1.is_some() },
    )
    .await;
    let held = conns.lock().unwrap()[0].1.unwrap() - opened;
    println!("[faults] the controller closed the hanging connection after {held:?}");
    assert!(
        held >= Duration::from_secs(44) && held <= Duration::from_secs(51),
        "the hook's timeout is 45 s, the connection was held {held:?}"
    );
    wait_phase(
        &ns,
        "slow",
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        Duration::from_secs(60),
    )
    .await;
    let events = ns.event_messages_with("slow", "pre-rollout").await;
    assert!(
        events.iter().any(|m| m.contains("pre-rollout")),
        "an Event names the failed hook: {events:?}"
    );
    ns.cleanup().await;
}
