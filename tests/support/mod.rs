//! Harness for tests against the real local control plane (`e2e/cluster up`): a client from
//! its kubeconfig, a fresh namespace per test, the `pennant` binary as a real process scoped to
//! that namespace, and polling helpers that print progress.
//!
//! The cluster is required: these tests fail (never skip) when it is not reachable, with the
//! command that starts it.

#![allow(dead_code)]

pub mod big_index;
pub mod charts;
pub mod gitserver;
pub mod helmrepo;
pub mod hr;
pub mod kustomize;
pub mod registry;
pub mod sources;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use pennant::api::{Canary, CanaryPhase};
use serde_json::Value;

pub fn state_dir() -> String {
    std::env::var("PENNANT_E2E_STATE").unwrap_or_else(|_| "/tmp/pennant-e2e".into())
}

pub fn kubeconfig_path() -> String {
    format!("{}/kubeconfig", state_dir())
}

/// `pennant <args>` run as a process with the cluster's kubeconfig and `env` (no `NO_COLOR`
/// from the caller's environment), printed as run: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pennant"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("NO_COLOR")
        .output()
        .expect("run pennant");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("$ pennant {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

pub fn prometheus_url() -> String {
    std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19090".into())
}

/// The traffic simulator's URL: `$PENNANT_SIM_URL`, else the port the cluster of
/// [`state_dir`] recorded (`SIM_PORT` in its `ports.env`), else the default 19100.
/// The traffic simulator's `/metrics` text.
pub async fn simulator_metrics() -> String {
    reqwest::get(format!("{}/metrics", simulator_url()))
        .await
        .expect("simulator /metrics")
        .text()
        .await
        .unwrap()
}

pub fn simulator_url() -> String {
    if let Ok(url) = std::env::var("PENNANT_SIM_URL") {
        return url;
    }
    let ports = std::fs::read_to_string(format!("{}/ports.env", state_dir())).unwrap_or_default();
    let port = ports
        .lines()
        .find_map(|l| l.strip_prefix("SIM_PORT="))
        .unwrap_or("19100");
    format!("http://127.0.0.1:{port}")
}

/// A client for the local cluster; installs the CRDs from `crds/` (server-side apply).
pub async fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): start the local cluster with `e2e/cluster up`")
    });
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    let client = Client::try_from(cfg).expect("client");
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("cluster not reachable ({e}): run `e2e/cluster up`"));
    for crd in pennant::api::crds::all() {
        let v = serde_json::to_value(&crd).unwrap();
        apply(&client, &v).await;
    }
    client
}

/// Server-side apply any object given as JSON (field manager `e2e`).
pub async fn apply(client: &Client, obj: &Value) {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = if kind == "CustomResourceDefinition" {
        ApiResource::from_gvk_with_plural(&gvk, "customresourcedefinitions")
    } else {
        ApiResource::from_gvk(&gvk)
    };
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(obj))
        .await
        .unwrap_or_else(|e| panic!("apply {kind}/{name}: {e}"));
}

/// Parse a YAML manifest (one or more documents) into JSON values.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("yaml")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// How long [`TestNs::events_until`] waits for an Event that follows a status already seen
/// (generous: two test binaries share the machine with the cluster).
pub const EVENT_WAIT: Duration = Duration::from_secs(30);

/// A fresh namespace for one test; deleted by `cleanup` (left behind on failure for debugging).
pub struct TestNs {
    pub client: Client,
    pub name: String,
}

impl TestNs {
    pub async fn new(client: &Client, prefix: &str, rps: u32) -> Self {
        let name = format!("{prefix}-{}", std::process::id() % 100000);
        let ns: Value = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": {"sim.pennant.dev/rps": rps.to_string()}}
        });
        apply(client, &ns).await;
        // The ServiceAccount admission needs the default SA before pods can be created.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "default service account",
            || async { sa.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        Self {
            client: client.clone(),
            name,
        }
    }

    pub async fn cleanup(self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
    }

    pub fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Apply a manifest with `NAMESPACE` replaced by this namespace.
    pub async fn apply_yaml(&self, yaml: &str) {
        for mut doc in yaml_docs(&yaml.replace("NAMESPACE", &self.name)) {
            doc["metadata"]["namespace"] = Value::String(self.name.clone());
            apply(&self.client, &doc).await;
        }
    }

    pub async fn canary(&self, name: &str) -> Canary {
        self.canaries().get(name).await.expect("canary")
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.deployments()
            .get_opt(name)
            .await
            .expect("get deployment")
    }

    /// The API of any kind in this namespace, e.g. `api("gateway.networking.k8s.io/v1",
    /// "HTTPRoute")` (to patch or watch what [`TestNs::get`] reads).
    pub fn api(&self, api_version: &str, kind: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        Api::namespaced_with(self.client.clone(), &self.name, &ar)
    }

    /// The VirtualService weights (primary, canary) as written by pennant.
    pub async fn vs_weights(&self, name: &str) -> Option<(i64, i64)> {
        let api = self.api("networking.istio.io/v1", "VirtualService");
        let vs = api.get_opt(name).await.ok().flatten()?;
        let route = vs.data["spec"]["http"][0]["route"].as_array()?.clone();
        let w = |i: usize| route.get(i).and_then(|r| r["weight"].as_i64()).unwrap_or(0);
        Some((w(0), w(1)))
    }

    /// Any object of this namespace as JSON, e.g. `get("networking.k8s.io/v1", "Ingress", "web")`.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let o = self
            .api(api_version, kind)
            .get_opt(name)
            .await
            .ok()
            .flatten()?;
        serde_json::to_value(o).ok()
    }

    /// Set an annotation on this Namespace (the simulator's `sim.pennant.dev/*` knobs).
    pub async fn annotate(&self, key: &str, value: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("annotate namespace");
    }

    /// The messages of the Events recorded for an object, oldest first.
    pub async fn event_messages(&self, name: &str) -> Vec<String> {
        self.events(name).await.into_iter().map(|e| e.1).collect()
    }

    /// [`TestNs::event_messages`] once one of them contains `needle` ([`TestNs::events_until`]).
    pub async fn event_messages_with(&self, name: &str, needle: &str) -> Vec<String> {
        self.events_with(name, &[needle])
            .await
            .into_iter()
            .map(|e| e.1)
            .collect()
    }

    /// [`TestNs::events`] once every one of `needles` is contained in a message
    /// ([`TestNs::events_until`]).
    pub async fn events_with(&self, name: &str, needles: &[&str]) -> Vec<(String, String)> {
        self.events_until(name, |events| {
            needles
                .iter()
                .all(|n| events.iter().any(|(_, m)| m.contains(n)))
        })
        .await
    }

    /// [`TestNs::events`] once `ready` holds for them. Controllers record an Event after the
    /// status it explains, so a test that saw the status polls (every 250 ms, for up to
    /// [`EVENT_WAIT`]) instead of reading once. All events either way: the caller asserts.
    pub async fn events_until(
        &self,
        name: &str,
        ready: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let start = Instant::now();
        loop {
            let events = self.events(name).await;
            if ready(&events) || start.elapsed() > EVENT_WAIT {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Events recorded for an object, oldest first: (type, message).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.name);
        let mut evs: Vec<_> = api
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        evs.into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

/// `pennant controller` as a real process, watching one namespace; killed on drop.
pub struct ControllerProcess {
    child: Child,
}

impl ControllerProcess {
    pub fn start(ns: &str, metrics_server: &str) -> Self {
        Self::start_with_listen(ns, metrics_server, "127.0.0.1:0")
    }

    /// [`start`](Self::start) with the HTTP server (`/metrics`, `/gate/*`) on `listen`, e.g.
    /// `127.0.0.1:<free_port()>`, so the test (and the Canary's webhooks) can reach it.
    pub fn start_with_listen(ns: &str, metrics_server: &str, listen: &str) -> Self {
        let log = std::fs::File::create(format!("{}/logs/pennant-{ns}.log", state_dir()))
            .or_else(|_| std::fs::File::create(format!("/tmp/pennant-{ns}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pennant"))
            .args([
                "controller",
                "--controllers",
                "canary",
                "--namespace",
                ns,
                "--metrics-server",
                metrics_server,
                "--listen",
                listen,
                "--log-level",
                "info,pennant=debug",
            ])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn pennant");
        Self { child }
    }

    /// `pennant controller --namespace <ns> <args>` with `KUBECONFIG=<kubeconfig>` and the given
    /// environment, logging to `<state>/logs/pennant-<log_name>.log` (see [`Self::log_path`]).
    /// Without `--controllers` in `args`, only the Canary controller runs (the source
    /// controller's default storage, `/data`, is no place for a test).
    pub fn start_with(
        ns: &str,
        log_name: &str,
        kubeconfig: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let path = Self::log_path(log_name);
        let log = std::fs::File::create(&path).expect("log file");
        let only_canary: &[&str] = if args.iter().any(|a| a.starts_with("--controllers")) {
            &[]
        } else {
            &["--controllers", "canary"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_pennant"))
            .args(["controller", "--namespace", ns])
            .args(only_canary)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn pennant");
        Self { child }
    }

    /// Where [`Self::start_with`] writes the log of `log_name`.
    pub fn log_path(log_name: &str) -> String {
        let dir = format!("{}/logs", state_dir());
        if std::path::Path::new(&dir).is_dir() {
            format!("{dir}/pennant-{log_name}.log")
        } else {
            format!("/tmp/pennant-{log_name}.log")
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for the process to exit on its own: its exit code (`Some(-1)` when
    /// killed by a signal), `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM (as the kubelet stops a pod), then wait up to `timeout` for the exit; the exit
    /// code, `None` when it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }

    /// Kill -9, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// GET `url` until it answers 2xx (a freshly started server), then return the body.
pub async fn wait_http(url: &str, timeout: Duration) -> String {
    wait_http_until(url, timeout, |_| true).await
}

/// GET `url` until it answers 2xx with a body for which `ready` holds, then return the body:
/// a controller updates its metrics after the status a test waited for, so a scrape right
/// after it may be too early. Panics after `timeout` with the last body.
pub async fn wait_http_until(url: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            let body = r.text().await.unwrap_or_default();
            if ready(&body) {
                return body;
            }
            last = Some(body);
        }
        if start.elapsed() > timeout {
            match last {
                Some(body) => {
                    panic!("{url} did not answer as expected within {timeout:?}:\n{body}")
                }
                None => panic!("{url} did not answer within {timeout:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll `f` every 500 ms until it is true; panic with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Wait for a canary phase, printing every change of (phase, weight, failedChecks); returns the
/// weights the canary went through. Panics on timeout or when `fail_on` is reached first.
pub async fn wait_phase(
    ns: &TestNs,
    name: &str,
    want: CanaryPhase,
    fail_on: Option<CanaryPhase>,
    timeout: Duration,
) -> Vec<i32> {
    let start = Instant::now();
    let mut last = None;
    let mut weights = vec![];
    loop {
        let c = ns.canary(name).await;
        let st = c.status.clone().unwrap_or_default();
        let now = (st.phase, st.canary_weight, st.failed_checks);
        if last != Some(now) {
            println!(
                "[{:>5.1}s] {}/{name}: phase {:?} weight {} failedChecks {}",
                start.elapsed().as_secs_f32(),
                ns.name,
                st.phase,
                st.canary_weight,
                st.failed_checks
            );
            if weights.last() != Some(&st.canary_weight) {
                weights.push(st.canary_weight);
            }
            last = Some(now);
        }
        if st.phase == Some(want) {
            return weights;
        }
        if fail_on.is_some() && st.phase == fail_on {
            panic!(
                "{name} reached {:?} while waiting for {want:?}: {:#?}",
                st.phase, st.conditions
            );
        }
        if start.elapsed() > timeout {
            panic!("timed out waiting for {name} to reach {want:?}; status {st:#?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The HTTPRoute API version pennant writes (`provider: gatewayapi:v1`).
pub const HTTPROUTE: &str = "gateway.networking.k8s.io/v1";

/// (primary, canary) weights of an HTTPRoute's first rule with a `podinfo-canary` backend.
pub fn route_weights(route: &Value) -> Option<(i64, i64)> {
    let rules = route["spec"]["rules"].as_array()?;
    let rule = rules.iter().find(|r| {
        r["backendRefs"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["name"] == "podinfo-canary"))
    })?;
    let w = |name: &str| {
        rule["backendRefs"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == name)?["weight"]
            .as_i64()
    };
    Some((w("podinfo-primary")?, w("podinfo-canary")?))
}

/// `name` Initialized (the primary ready, the routes written) within two minutes, never
/// `Failed` on the way.
pub async fn wait_initialized(ns: &TestNs, name: &str) {
    let two_minutes = Duration::from_secs(120);
    wait_phase(
        ns,
        name,
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        two_minutes,
    )
    .await;
}

/// A release promoted: `name` reaches `Succeeded` within 3 minutes (panics on `Failed`); the
/// canary weights seen on the way.
pub async fn wait_promoted(ns: &TestNs, name: &str) -> Vec<i32> {
    let three_minutes = Duration::from_secs(180);
    wait_phase(
        ns,
        name,
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        three_minutes,
    )
    .await
}

/// A new release rolled back: `name` starts (`Progressing`, within a minute) and reaches
/// `Failed` within 3 minutes (panics on `Succeeded`).
pub async fn wait_rolled_back(ns: &TestNs, name: &str) -> Vec<i32> {
    wait_phase(
        ns,
        name,
        CanaryPhase::Progressing,
        None,
        Duration::from_secs(60),
    )
    .await;
    let three_minutes = Duration::from_secs(180);
    wait_phase(
        ns,
        name,
        CanaryPhase::Failed,
        Some(CanaryPhase::Succeeded),
        three_minutes,
    )
    .await
}

/// The podinfo Deployment used by the tests, with the simulator's behaviour annotations.
pub fn podinfo(image: &str, error_rate: f64, extra_template_annotations: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: NAMESPACE
  labels:
    app: podinfo
spec:
  replicas: 2
  progressDeadlineSeconds: 600
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
      annotations:
        sim.pennant.dev/error-rate: "{error_rate}"
        sim.pennant.dev/latency-ms: "30"
{extra_template_annotations}
    spec:
      containers:
      - name: podinfod
        image: {image}
        ports:
        - name: http
          containerPort: 9898
"#
    )
}

/// A Canary on podinfo with the builtin Istio metrics.
pub fn podinfo_canary(threshold: i32, step: i32, max: i32, deadline: i32) -> String {
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  provider: istio
  progressDeadlineSeconds: {deadline}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: 10s
    threshold: {threshold}
    maxWeight: {max}
    stepWeight: {step}
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 15s
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 15s
"#
    )
}

/// Set the podinfo image (a new revision), as `kubectl set image` does.
pub async fn set_image(ns: &TestNs, image: &str, error_rate: f64) {
    let patch = serde_json::json!({"spec": {"template": {
        "metadata": {"annotations": {"sim.pennant.dev/error-rate": error_rate.to_string()}},
        "spec": {"containers": [{"name": "podinfod", "image": image}]}}}});
    // a field manager, as kubectl's (`kubectl-set`): `unknown` in managedFields is a bug
    let params = PatchParams {
        field_manager: Some("e2e".into()),
        ..Default::default()
    };
    ns.deployments()
        .patch("podinfo", &params, &Patch::Strategic(patch))
        .await
        .expect("set image");
}

pub fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// The `helm` binary built by `e2e/cluster build`: `$PENNANT_HELM` (set by `e2e/cluster env`),
/// else the newest one in the cache, else `helm` on `PATH`.
pub fn helm() -> String {
    tool("PENNANT_HELM", "helm")
}

/// The `flux` CLI built by `e2e/cluster build`: `$PENNANT_FLUX`, else the cache, else `PATH`.
pub fn flux() -> String {
    tool("PENNANT_FLUX", "flux")
}

/// `kustomize` built by `e2e/cluster build`: `$PENNANT_KUSTOMIZE`, else the cache, else `PATH`.
pub fn kustomize() -> String {
    tool("PENNANT_KUSTOMIZE", "kustomize")
}

/// `sops` built by `e2e/cluster build`: `$PENNANT_SOPS`, else the cache, else `PATH`.
pub fn sops() -> String {
    tool("PENNANT_SOPS", "sops")
}

/// `age` built by `e2e/cluster build`: `$PENNANT_AGE`, else the cache, else `PATH`.
pub fn age() -> String {
    tool("PENNANT_AGE", "age")
}

/// `age-keygen` built by `e2e/cluster build`: `$PENNANT_AGE_KEYGEN`, else the cache, else `PATH`.
pub fn age_keygen() -> String {
    tool("PENNANT_AGE_KEYGEN", "age-keygen")
}

/// `host:port` of the cluster's OCI registry (distribution, anonymous, plain HTTP), started by
/// `e2e/cluster up`: `$PENNANT_E2E_REGISTRY_ADDR`, else `127.0.0.1:15000`. Push with
/// `oci://<addr>/<repo>:<tag>` (clients need their insecure/plain-HTTP option).
pub fn registry_addr() -> String {
    std::env::var("PENNANT_E2E_REGISTRY_ADDR").unwrap_or_else(|_| "127.0.0.1:15000".into())
}

/// `kubectl` from `e2e/cluster env`'s PATH, else the cache.
pub fn kubectl() -> String {
    tool("PENNANT_KUBECTL", "kubectl")
}

fn tool(var: &str, name: &str) -> String {
    if let Ok(p) = std::env::var(var) {
        return p;
    }
    let cache = std::env::var("PENNANT_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/pennant",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let mut found: Vec<_> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file() && !p.to_string_lossy().contains(".tmp/"))
        .collect();
    found.sort();
    match found.pop() {
        Some(p) => p.to_string_lossy().into_owned(),
        None => name.to_string(),
    }
}

/// Run a command, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `e2e/cluster build`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply --dry-run=server` of a manifest (stdin) against the local cluster; panics with
/// the apiserver's answer when it refuses.
pub fn server_dry_run(manifest: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(kubectl())
        .args([
            "--kubeconfig",
            &kubeconfig_path(),
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=dry-run",
            "--dry-run=server",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (run `e2e/cluster build`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "server-side dry-run refused:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The user's Ingress for an NGINX Canary (`ingressRef: podinfo`): host app.example.com to
/// Service podinfo:80.
pub const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: podinfo
  namespace: NAMESPACE
  annotations:
    kubernetes.io/ingress.class: nginx
spec:
  rules:
  - host: app.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: podinfo
            port:
              number: 80
"#;

/// An age key pair from the real `age-keygen`: the key file text (with its `#` comment lines)
/// and the recipient.
pub struct AgeKey {
    pub file: String,
    pub recipient: String,
}

/// A new age key from `age-keygen -o <dir>/<name>`.
pub fn age_key(dir: &std::path::Path, name: &str) -> AgeKey {
    let path = dir.join(name);
    let out = std::process::Command::new(age_keygen())
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (run `e2e/cluster build`, or set PENNANT_AGE_KEYGEN)");
    assert!(out.status.success(), "age-keygen: {out:?}");
    let file = std::fs::read_to_string(&path).unwrap();
    let recipient = file
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    AgeKey { file, recipient }
}

/// `sops --encrypt` (the real CLI) of `plain` written as `<dir>/<name>` (the extension picks
/// the format) for `recipients`, with `extra` flags: the encrypted document.
pub fn sops_encrypt(
    dir: &std::path::Path,
    name: &str,
    plain: &[u8],
    recipients: &[&AgeKey],
    extra: &[&str],
) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::write(&path, plain).unwrap();
    let rs: Vec<&str> = recipients.iter().map(|k| k.recipient.as_str()).collect();
    let out = std::process::Command::new(sops())
        .current_dir(dir)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .args(["--encrypt", "--age", &rs.join(",")])
        .args(extra)
        .arg(&path)
        .output()
        .expect("sops (run `e2e/cluster build`, or set PENNANT_SOPS)");
    assert!(
        out.status.success(),
        "sops --encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The second control plane's admin kubeconfig (`e2e/cluster env`'s
/// `PENNANT_E2E_REMOTE_KUBECONFIG`, else `<state>/remote/kubeconfig`).
pub fn remote_kubeconfig_path() -> String {
    std::env::var("PENNANT_E2E_REMOTE_KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/remote/kubeconfig", state_dir()))
}

/// A client of the second control plane and its kubeconfig's text.
pub async fn remote_client() -> (Client, String) {
    let path = remote_kubeconfig_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): `e2e/cluster up` starts the second control plane")
    });
    let kc = Kubeconfig::from_yaml(&text).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(cfg).unwrap();
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("second control plane not reachable ({e}): `e2e/cluster up`"));
    (client, text)
}
