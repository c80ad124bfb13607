//! Helm actions through the real `helm` CLI (Helm 4, the major Flux's helm-controller is built
//! on) behind the [`Engine`] trait: install, upgrade, test, rollback, uninstall, and the
//! storage reads (history, latest) and Unlock done natively ([`super::storage`]).
//!
//! [`HelmCli`] spawns `helm` with its own Helm home (`HELM_CACHE_HOME`, `HELM_CONFIG_HOME`,
//! `HELM_DATA_HOME`, `HELM_PLUGINS` in a temporary directory, so nothing is shared with a user's
//! Helm setup or another engine), the post-renderer plugin installed there
//! ([`super::postrender`]), and every secret on disk in 0600 temporary files that are removed
//! when the action ends: the values (`-f`), the kubeconfig (`--kubeconfig`) and the
//! post-render configuration. Values never reach a log or an error: helm's stderr is cut to
//! its last lines and every string of the values is masked in it.
//!
//! **Storage namespace.** The `helm` CLI keeps a release's Secrets in the release namespace
//! (`--namespace`); Flux's separate `spec.storageNamespace` cannot be expressed through the
//! CLI, so this engine stores in the release namespace.
//!
//! **Wait timeouts name objects** (Flux's bare "timed out waiting for the condition" is a top
//! complaint, flux.md §8): when an action fails on a wait deadline, the objects of the release
//! manifest are read back and assessed with kstatus ([`crate::health::kstatus::flux`]), and
//! the error lists each one that is not Current and why.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

use super::postrender::{self, PostRenderConfig};
use super::storage::{self, Release, StorageError};
use crate::apply::inventory::ObjectId;
use crate::health::assess::{self, Verdict, WaitOptions};
use crate::health::expr::HealthExprs;
use crate::health::kstatus::{self, Status as KStatus};
use crate::health::watch::{self, Watches};

/// The `helm` binary: `$PENNANT_HELM` (set by `e2e/cluster env` and the image), else `helm` on
/// `PATH`.
pub fn helm_binary() -> PathBuf {
    std::env::var_os("PENNANT_HELM")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("helm"), PathBuf::from)
}

/// A release: its name and namespace (helm's `--namespace`, also where it is stored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseRef {
    pub name: String,
    pub namespace: String,
}

/// The cluster an action runs against.
#[derive(Clone)]
pub struct Target {
    /// For storage reads, CRD policy and the assessment after a wait timeout; the same
    /// cluster and identity as `kubeconfig`/`as_user`.
    pub client: Client,
    /// A kubeconfig (YAML) for helm, written to a 0600 temporary file; `None`: helm's default
    /// (in-cluster config, or `$KUBECONFIG`).
    pub kubeconfig: Option<String>,
    /// `--kube-as-user` (a HelmRelease's `serviceAccountName`:
    /// `system:serviceaccount:<ns>:<name>`).
    pub as_user: Option<String>,
    /// The controller's watches of this cluster (`None` for a remote one): the engine's own
    /// wait ([`HelmCli::wait_ready`]) reads the release's objects from them, or, as
    /// `as_user`, resolves their kinds through their discovery cache and reads with GETs.
    pub watches: Option<Arc<Watches>>,
}

/// Helm 4 wait strategies (`--wait`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitStrategy {
    /// kstatus-based watcher (Helm 4's default for `--wait`, Flux's `poller`).
    #[default]
    Watcher,
    /// Helm 3's waiter (Flux's `waitStrategy.name: legacy`).
    Legacy,
    /// Wait for hooks only: Flux's `disableWait`.
    HookOnly,
}

impl WaitStrategy {
    fn as_str(self) -> &'static str {
        match self {
            WaitStrategy::Watcher => "watcher",
            WaitStrategy::Legacy => "legacy",
            WaitStrategy::HookOnly => "hookOnly",
        }
    }
}

/// How an action waits: the strategy, and whether Jobs must complete (`--wait-for-jobs`,
/// Flux's `!disableWaitForJobs`; ignored with `HookOnly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub strategy: WaitStrategy,
    pub for_jobs: bool,
}

impl Default for Wait {
    /// Flux's defaults: wait, Jobs included.
    fn default() -> Self {
        Wait {
            strategy: WaitStrategy::Watcher,
            for_jobs: true,
        }
    }
}

impl Wait {
    /// Flux's `disableWait: true`.
    pub fn disabled() -> Self {
        Wait {
            strategy: WaitStrategy::HookOnly,
            for_jobs: false,
        }
    }
}

/// Flux's `crds` policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crds {
    /// `--skip-crds`.
    Skip,
    /// Create the chart's CRDs that do not exist; never update one. The engine creates them
    /// and passes `--skip-crds`: Helm 4's install server-side applies the chart's `crds/`,
    /// which updates a CRD that exists (or fails on another manager's fields, e.g. Gateway API
    /// CRDs installed before the envoy-gateway chart), against Flux's "existing CRDs are
    /// neither updated nor deleted".
    Create,
    /// Create or update (server-side apply, field manager `pennant`, forced) the chart's CRDs
    /// before the action. Helm itself never updates CRDs, so the engine applies them and
    /// passes `--skip-crds`.
    CreateReplace,
}

/// Server-side apply always takes the fields other managers hold (a `kubectl set image`, the
/// `helm-controller` of a release moved from Flux), as Flux's helm-controller does: without it
/// such an upgrade fails on `conflict with "kubectl-set"`. Helm refuses it with client-side
/// apply, so `auto` is resolved from storage first ([`HelmCli::resolve_server_side`]).
const FORCE_CONFLICTS: &str = "--force-conflicts";

/// `--server-side` of upgrade and rollback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerSide {
    Enabled,
    Disabled,
    /// The apply method of the release being replaced (Helm 4's default).
    #[default]
    Auto,
}

impl ServerSide {
    fn as_str(self) -> &'static str {
        match self {
            ServerSide::Enabled => "true",
            ServerSide::Disabled => "false",
            ServerSide::Auto => "auto",
        }
    }
}

/// `uninstall --cascade` (Flux's `deletionPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cascade {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// `helm install` (Flux's `install` options).
#[derive(Clone, Debug)]
pub struct InstallRequest {
    pub release: ReleaseRef,
    /// A chart archive (`.tgz`) or directory.
    pub chart: PathBuf,
    /// The composed values (Flux's order); stored as the release's `config`.
    pub values: Value,
    pub timeout: Duration,
    pub wait: Wait,
    pub disable_hooks: bool,
    pub disable_openapi_validation: bool,
    pub disable_schema_validation: bool,
    /// Flux's install default: `Create`.
    pub crds: Crds,
    pub create_namespace: bool,
    /// `--replace`: reuse the name of an uninstalled release kept in history.
    pub replace: bool,
    /// `--take-ownership` (Flux: unless `disableTakeOwnership`).
    pub take_ownership: bool,
    /// `--server-side` (Flux's install default with Helm 4: true).
    pub server_side: bool,
    pub description: Option<String>,
    /// The post-render (origin labels always; `None`: no post-renderer at all).
    pub post_render: Option<PostRenderConfig>,
}

/// `helm upgrade` (Flux's `upgrade` options).
#[derive(Clone, Debug)]
pub struct UpgradeRequest {
    pub release: ReleaseRef,
    pub chart: PathBuf,
    pub values: Value,
    pub timeout: Duration,
    pub wait: Wait,
    pub disable_hooks: bool,
    pub disable_openapi_validation: bool,
    pub disable_schema_validation: bool,
    /// Flux's upgrade default: `Skip`.
    pub crds: Crds,
    /// `--force-replace`.
    pub force: bool,
    pub cleanup_on_fail: bool,
    pub take_ownership: bool,
    pub server_side: ServerSide,
    /// `--history-max` (Flux's `maxHistory`, default 5; 0 = unlimited).
    pub history_max: u32,
    /// Flux's `preserveValues` (`--reuse-values`); otherwise `--reset-values`, so the stored
    /// config is exactly `values`.
    pub preserve_values: bool,
    pub description: Option<String>,
    pub post_render: Option<PostRenderConfig>,
}

/// What [`Engine::dry_run`] simulates: the install of a release not in storage, else the
/// upgrade, with the options the controller would use.
#[derive(Clone, Debug)]
pub enum DryRunRequest {
    Install(InstallRequest),
    Upgrade(UpgradeRequest),
}

/// A `helm test --filter` entry: `name=<n>`, or `!name=<n>` when `exclude`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestFilter {
    pub name: String,
    pub exclude: bool,
}

/// `helm test` (Flux's `test` options).
#[derive(Clone, Debug)]
pub struct TestRequest {
    pub release: ReleaseRef,
    pub timeout: Duration,
    pub filters: Vec<TestFilter>,
}

/// `helm rollback` (Flux's `rollback` options).
#[derive(Clone, Debug)]
pub struct RollbackRequest {
    pub release: ReleaseRef,
    /// The revision to roll back to; `None`: the previous one (helm's default).
    pub revision: Option<u32>,
    pub timeout: Duration,
    pub wait: Wait,
    pub disable_hooks: bool,
    /// `--force-replace`.
    pub force: bool,
    pub cleanup_on_fail: bool,
    pub server_side: ServerSide,
    pub history_max: u32,
    pub description: Option<String>,
}

/// `helm uninstall` (Flux's `uninstall` options).
#[derive(Clone, Debug)]
pub struct UninstallRequest {
    pub release: ReleaseRef,
    pub timeout: Duration,
    pub disable_hooks: bool,
    /// Keep the history; the last revision becomes `uninstalled`.
    pub keep_history: bool,
    /// Flux's `!disableWait`: wait for the objects to be gone.
    pub wait: bool,
    pub cascade: Cascade,
    pub description: Option<String>,
}

/// The action that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Install,
    Upgrade,
    Test,
    Rollback,
    Uninstall,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Upgrade => "upgrade",
            Action::Test => "test",
            Action::Rollback => "rollback",
            Action::Uninstall => "uninstall",
        }
    }
}

/// A failed helm action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmError {
    pub action: Action,
    /// What went wrong, one line: helm's error, or after a wait timeout the objects that were
    /// not ready ("timeout waiting for: [Deployment/ns/app: InProgress: ...]").
    pub message: String,
    /// The last lines of helm's stderr, values masked.
    pub stderr: String,
    /// The action failed on a wait deadline.
    pub timed_out: bool,
    /// After a wait timeout: `Kind/namespace/name: <kstatus>: <message>` for each object of
    /// the release that was not Current.
    pub not_ready: Vec<String>,
}

impl std::fmt::Display for HelmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.action.as_str(), self.message)
    }
}

impl std::error::Error for HelmError {}

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Helm(#[from] HelmError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The engine could not run helm (binary missing, scratch files).
    #[error("helm engine: {0}")]
    Setup(String),
}

impl EngineError {
    /// A wait timeout.
    pub fn timed_out(&self) -> bool {
        matches!(self, EngineError::Helm(h) if h.timed_out)
    }
}

type Result<T> = std::result::Result<T, EngineError>;

/// The Helm actions a HelmRelease needs. Implementations: [`HelmCli`].
pub trait Engine: Send + Sync {
    /// Install; the new release (revision 1, or the next after an uninstalled one with
    /// `replace`) as stored.
    fn install(
        &self,
        t: &Target,
        r: &InstallRequest,
    ) -> impl Future<Output = Result<Release>> + Send;
    /// Upgrade; the new release as stored.
    fn upgrade(
        &self,
        t: &Target,
        r: &UpgradeRequest,
    ) -> impl Future<Output = Result<Release>> + Send;
    /// Run the test hooks; the release with their `last_run` phases.
    fn test(&self, t: &Target, r: &TestRequest) -> impl Future<Output = Result<Release>> + Send;
    /// Roll back; the new release ("Rollback to N").
    fn rollback(
        &self,
        t: &Target,
        r: &RollbackRequest,
    ) -> impl Future<Output = Result<Release>> + Send;
    /// Uninstall; the `uninstalled` release when history is kept, else `None`.
    fn uninstall(
        &self,
        t: &Target,
        r: &UninstallRequest,
    ) -> impl Future<Output = Result<Option<Release>>> + Send;
    /// Every stored revision, newest first (native storage read).
    fn history(
        &self,
        t: &Target,
        r: &ReleaseRef,
    ) -> impl Future<Output = Result<Vec<Release>>> + Send;
    /// The newest stored revision (native storage read).
    fn latest(
        &self,
        t: &Target,
        r: &ReleaseRef,
    ) -> impl Future<Output = Result<Option<Release>>> + Send;
    /// Simulate the install or upgrade `r` with `--dry-run=server` (templates rendered with
    /// the cluster's `lookup`, the post-renderer run, objects validated by the API server):
    /// the release Helm would store (manifest, hooks, config). Writes nothing: no release
    /// Secret, no object, no CRD. A template that fails is a [`HelmError`] with helm's message.
    fn dry_run(
        &self,
        t: &Target,
        r: &DryRunRequest,
    ) -> impl Future<Output = Result<Release>> + Send;
    /// Flux's Unlock: a `pending-*` revision becomes `failed` ("Release unlocked from stale
    /// '<status>' state").
    fn unlock(
        &self,
        t: &Target,
        r: &ReleaseRef,
        revision: u32,
        now: Timestamp,
    ) -> impl Future<Output = Result<Release>> + Send;
}

/// How [`HelmCli`] is set up.
#[derive(Clone, Debug, Default)]
pub struct HelmCliOptions {
    /// The helm binary; `None`: [`helm_binary`].
    pub helm: Option<PathBuf>,
    /// The executable the post-renderer plugin runs (`<exe> helm-post-render`); `None`: the
    /// current executable (the pennant binary).
    pub post_renderer_exe: Option<PathBuf>,
    /// The most `helm` processes this engine runs at once (each with its post-renderer child);
    /// the other actions wait for one to end before they start. 0: no cap. A `helm install
    /// --wait` holds tens of MiB for as long as it waits, so this bounds the engine's memory
    /// whatever the number of HelmReleases reconciled at once.
    pub max_processes: usize,
}

/// [`Engine`] by the `helm` CLI.
pub struct HelmCli {
    helm: PathBuf,
    home: tempfile::TempDir,
    /// [`HelmCliOptions::max_processes`] permits (`None`: no cap).
    processes: Option<tokio::sync::Semaphore>,
}

/// How many lines of helm's stderr an error keeps.
const STDERR_LINES: usize = 20;

impl HelmCli {
    /// An engine with a fresh Helm home and the post-renderer plugin installed in it.
    pub fn new(options: HelmCliOptions) -> std::result::Result<Self, EngineError> {
        let setup = |e: std::io::Error| EngineError::Setup(e.to_string());
        let home = tempfile::Builder::new()
            .prefix("pennant-helm-")
            .tempdir()
            .map_err(setup)?;
        let exe = match options.post_renderer_exe {
            Some(p) => p,
            None => std::env::current_exe().map_err(setup)?,
        };
        for d in ["cache", "config", "data", "plugins", "run"] {
            std::fs::create_dir_all(home.path().join(d)).map_err(setup)?;
        }
        postrender::write_plugin(&home.path().join("plugins"), &exe).map_err(setup)?;
        Ok(HelmCli {
            helm: options.helm.unwrap_or_else(helm_binary),
            home,
            processes: (options.max_processes > 0)
                .then(|| tokio::sync::Semaphore::new(options.max_processes)),
        })
    }

    /// The Helm home (cache, config, data, plugins).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Run `helm args...` for `action`; `values` are only used to mask stderr. Returns stdout.
    async fn run(
        &self,
        action: Action,
        t: &Target,
        scratch: &Path,
        args: Vec<String>,
        values: &Value,
    ) -> std::result::Result<String, EngineError> {
        let mut cmd = tokio::process::Command::new(&self.helm);
        cmd.args(&args).env_clear();
        let h = self.home.path();
        cmd.env("HOME", h)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .env("HELM_PLUGINS", h.join("plugins"))
            .env("HELM_DRIVER", "secret");
        for k in [
            "PATH",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "TMPDIR",
        ] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        match &t.kubeconfig {
            Some(kc) => {
                let f = secret_file(scratch, "kubeconfig", kc.as_bytes())?;
                cmd.arg("--kubeconfig").arg(f);
            }
            None => {
                if let Some(v) = std::env::var_os("KUBECONFIG") {
                    cmd.env("KUBECONFIG", v);
                }
            }
        }
        if let Some(u) = &t.as_user {
            cmd.arg("--kube-as-user").arg(u);
        }
        cmd.kill_on_drop(true);
        die_with_parent(&mut cmd);
        // held until the process (and its post-renderer) has exited; the semaphore is never
        // closed, so acquiring only waits
        let _permit = match &self.processes {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|e| EngineError::Setup(e.to_string()))?,
            ),
            None => None,
        };
        let out = cmd
            .output()
            .await
            .map_err(|e| EngineError::Setup(format!("running {}: {e}", self.helm.display())))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = mask(
            &tail(&String::from_utf8_lossy(&out.stderr), STDERR_LINES),
            values,
        );
        let post_render =
            std::fs::read_to_string(scratch.join("post-render.err")).unwrap_or_default();
        let message = if !post_render.trim().is_empty() {
            mask(post_render.trim(), values)
        } else {
            error_line(&stderr)
        };
        Err(HelmError {
            action,
            timed_out: is_timeout(&stderr),
            message,
            stderr,
            not_ready: Vec::new(),
        }
        .into())
    }

    fn scratch(&self) -> std::result::Result<tempfile::TempDir, EngineError> {
        tempfile::Builder::new()
            .prefix("action-")
            .tempdir_in(self.home.path().join("run"))
            .map_err(|e| EngineError::Setup(e.to_string()))
    }

    /// After a wait timeout, name what was not ready in the release's latest manifest.
    async fn explain_timeout(&self, t: &Target, r: &ReleaseRef, err: EngineError) -> EngineError {
        let mut h = match err {
            EngineError::Helm(h) if h.timed_out => h,
            other => return other,
        };
        let manifest = match storage::latest(&t.client, &r.namespace, &r.name).await {
            Ok(Some(rel)) => rel.manifest,
            _ => return EngineError::Helm(h),
        };
        let not_ready = not_ready(&t.client, &manifest, &r.namespace, Timestamp::now()).await;
        if !not_ready.is_empty() {
            h.message = format!("timeout waiting for: [{}]", not_ready.join(", "));
            h.not_ready = not_ready;
        }
        EngineError::Helm(h)
    }

    /// pennant's own wait for the objects of `rel` (just installed or upgraded with
    /// `--wait=hookOnly`, see [`waits_itself`]) until `started + timeout`: Helm's `watcher` semantics
    /// (kstatus per object; a paused Deployment is not waited for; a Failed object is
    /// terminal; Jobs only with `for_jobs`), read from the controller's watch caches every
    /// 250 ms, or as `t.as_user` (or on a remote cluster) with GETs every 0.5-2 s, where an
    /// object Current at one look is not read again. The first look is a GET of each object,
    /// and a cached copy older than it is read again. Why: Helm's
    /// `watcher` starts namespace-wide informers per kind in every `helm` process, so each
    /// install listed every Deployment, Service, ServiceAccount and Ingress of the namespace:
    /// 0.40 CPU s per install of podinfo beside 1000 releases against 0.16 in an empty one.
    /// `Err`: the verdict (Failed or TimedOut), with the objects not Current.
    async fn wait_ready(
        &self,
        t: &Target,
        rel: &Release,
        started: Timestamp,
        timeout: Duration,
        for_jobs: bool,
    ) -> std::result::Result<(), Verdict> {
        let manifest = postrender::parse_manifests(&rel.manifest).unwrap_or_default();
        let waited: Vec<&Value> = manifest
            .iter()
            .filter(|o| {
                let (group, kind) = kstatus::group_kind(o);
                !(group == "apps" && kind == "Deployment" && o["spec"]["paused"] == true)
                    && (for_jobs || !(group == "batch" && kind == "Job"))
            })
            .collect();
        let ids = waited
            .iter()
            .map(|o| {
                let version = watch::split_api_version(o["apiVersion"].as_str().unwrap_or(""))
                    .1
                    .to_string();
                (ObjectId::of(o), version)
            })
            .collect();
        let discovery = t.watches.as_deref();
        let objects = watch::place(&t.client, discovery, &rel.namespace, ids).await;
        // the Jobs with a TTL as written, by their placed ids
        let ttl = assess::jobs_with_ttl(&manifest);
        let desired: Vec<ObjectId> = objects.iter().map(|(id, _)| id.clone()).collect();
        let jobs_with_ttl = desired
            .iter()
            .zip(&waited)
            .filter(|(_, o)| ttl.contains(&ObjectId::of(o)))
            .map(|(id, _)| id.clone())
            .collect();
        let reads = discovery.filter(|_| t.as_user.is_none());
        if let Some(w) = reads {
            for (id, version) in &objects {
                w.ensure(id, version).await;
            }
        }
        let opts = WaitOptions {
            started,
            timeout: timeout.try_into().unwrap_or_default(),
            fail_fast: false,
            jobs_with_ttl,
        };
        let exprs = HealthExprs::default();
        let mut pause = Duration::from_millis(250);
        // the first look is a GET each: the watches may not have delivered helm's writes yet,
        // and a cached copy of the previous generation would pass as Current. Later cached
        // copies older than that look are read again.
        let generation = |o: &Value| o["metadata"]["generation"].as_i64().unwrap_or(0);
        let mut first_look: Option<BTreeMap<ObjectId, i64>> = None;
        let mut observed: BTreeMap<ObjectId, Value> = BTreeMap::new();
        // with GETs, an object Current at a look is not read again (a wait costs one GET per
        // object, and one per look of each that is still in progress)
        let mut done: Vec<ObjectId> = vec![];
        loop {
            let todo: Vec<(ObjectId, String)> = objects
                .iter()
                .filter(|(id, _)| !done.contains(id))
                .cloned()
                .collect();
            let fresh = match &first_look {
                None => {
                    let o = watch::observe(&t.client, None, discovery, &todo).await;
                    let seen = o.iter().map(|(id, v)| (id.clone(), generation(v)));
                    first_look = Some(seen.collect());
                    o
                }
                Some(seen) => {
                    let mut o = watch::observe(&t.client, reads, discovery, &todo).await;
                    let behind: Vec<(ObjectId, String)> = todo
                        .iter()
                        .filter(|(id, _)| {
                            seen.get(id)
                                .is_some_and(|g| o.get(id).is_none_or(|v| generation(v) < *g))
                        })
                        .cloned()
                        .collect();
                    if !behind.is_empty() {
                        o.extend(watch::observe(&t.client, None, discovery, &behind).await);
                    }
                    o
                }
            };
            for (id, _) in &todo {
                observed.remove(id);
            }
            observed.extend(fresh);
            match assess::assess(&desired, &observed, &exprs, &opts, Timestamp::now()) {
                Verdict::Healthy => return Ok(()),
                Verdict::Waiting { deadline, pending } => {
                    if reads.is_none() {
                        done = desired
                            .iter()
                            .filter(|id| !pending.iter().any(|p| p.id == **id))
                            .cloned()
                            .collect();
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    let left = deadline.duration_since(Timestamp::now());
                    let left = Duration::try_from(left).unwrap_or_default();
                    tokio::time::sleep(pause.min(left)).await;
                }
                v => return Err(v),
            }
        }
    }

    /// The rest of an install or upgrade that `helm --wait=hookOnly` ran ([`waits_itself`]),
    /// leaving Helm's storage as its own wait would: while pennant waits
    /// ([`HelmCli::wait_ready`]), revision `rel` is `pending-install`/`pending-upgrade`
    /// ("Initial install underway", "Preparing upgrade") and the revision it replaces
    /// (`previous`, as read before the upgrade) has its status back, so the release is locked
    /// to other writers and a controller killed meanwhile finds its own lock, as after a killed
    /// `helm --wait`. Ready: the previous revision `superseded`, `rel` `deployed` with the
    /// description helm wrote. Not: `rel` `failed` with Helm's description
    /// (`Release "<name>" failed: <error>`, `Upgrade "<name>" failed: <error>`, the error in
    /// Helm 4's words: `resource <Kind>/<ns>/<name> not ready. status: <kstatus>, message: <..>`
    /// per object, then `context deadline exceeded` on a timeout) and the error for the
    /// controller (a timeout when the deadline passed). A storage write that fails is added
    /// to the error; a revision someone else changed meanwhile is left alone.
    async fn own_wait(
        &self,
        t: &Target,
        action: Action,
        rel: Release,
        previous: Option<&Release>,
        (started, timeout, for_jobs): (Timestamp, Duration, bool),
    ) -> Result<Release> {
        let (name, ns) = (rel.name.as_str(), rel.namespace.as_str());
        let previous = previous.filter(|p| p.version != rel.version);
        let (pending, underway) = match action {
            Action::Upgrade => (storage::Status::PendingUpgrade, "Preparing upgrade"),
            _ => (storage::Status::PendingInstall, "Initial install underway"),
        };
        let mut errors: Vec<String> = vec![];
        // (revision, from, to, description): one status rewrite, skipped when the stored status
        // is not `from` any more
        let mut rewrite = async |version: u32, from: storage::Status, to, description| {
            let r = storage::set_status(
                &t.client,
                ns,
                (name, version),
                to,
                description,
                Timestamp::now(),
                |stored| match &stored.info.status {
                    s if *s == from => Ok(()),
                    other => Err(StorageError::Changed {
                        name: name.to_string(),
                        version,
                        status: other.to_string(),
                    }),
                },
            )
            .await;
            match r {
                Ok(_) | Err(StorageError::Changed { .. }) => {}
                Err(e) => errors.push(format!("revision {version}: {e}")),
            }
        };
        let deployed = storage::Status::Deployed;
        let superseded = storage::Status::Superseded;
        rewrite(
            rel.version,
            deployed.clone(),
            pending.clone(),
            Some(underway),
        )
        .await;
        if let Some(p) = previous {
            rewrite(p.version, superseded.clone(), p.info.status.clone(), None).await;
        }
        let verdict = self.wait_ready(t, &rel, started, timeout, for_jobs).await;
        let (timed_out, not_current) = match verdict {
            Ok(()) => {
                if let Some(p) = previous {
                    rewrite(p.version, p.info.status.clone(), superseded, None).await;
                }
                let done = Some(rel.info.description.as_str());
                rewrite(rel.version, pending, deployed, done).await;
                if errors.is_empty() {
                    return Ok(rel);
                }
                return Err(EngineError::Setup(format!(
                    "release {name} is ready, but its storage: {}",
                    errors.join("; ")
                )));
            }
            Err(Verdict::TimedOut { pending }) => (true, pending),
            Err(Verdict::Failed { failed }) => (false, failed),
            Err(_) => (false, Vec::new()),
        };
        let not_ready: Vec<String> = not_current
            .iter()
            .map(|h| {
                let status = &h.health;
                format!(
                    "{}: {}: {}",
                    assess::fmt_id(&h.id),
                    status.status,
                    status.message
                )
            })
            .collect();
        let mut message = if timed_out {
            format!("timeout waiting for: [{}]", not_ready.join(", "))
        } else {
            format!(
                "failed early due to stalled resources: [{}]",
                not_ready.join(", ")
            )
        };
        // Helm's wait error, as `helm history` shows it after its own wait
        let mut helm_error: Vec<String> = not_current
            .iter()
            .map(|h| {
                let id = &h.id;
                format!(
                    "resource {}/{}/{} not ready. status: {}, message: {}",
                    id.kind, id.namespace, id.name, h.health.status, h.health.message
                )
            })
            .collect();
        if timed_out {
            helm_error.push("context deadline exceeded".into());
        }
        let helm_error = helm_error.join("\n");
        let description = match action {
            Action::Upgrade => format!("Upgrade {name:?} failed: {helm_error}"),
            _ => format!("Release {name:?} failed: {helm_error}"),
        };
        let failed = storage::Status::Failed;
        rewrite(rel.version, pending, failed, Some(&description)).await;
        if !errors.is_empty() {
            message.push_str(&format!(" (storage: {})", errors.join("; ")));
        }
        Err(HelmError {
            action,
            timed_out,
            stderr: String::new(),
            message,
            not_ready,
        }
        .into())
    }

    async fn stored(&self, t: &Target, r: &ReleaseRef) -> Result<Release> {
        storage::latest(&t.client, &r.namespace, &r.name)
            .await?
            .ok_or_else(|| {
                EngineError::Setup(format!(
                    "release {} not in storage after the action",
                    r.name
                ))
            })
    }
}

/// A 0600 file in `dir` holding `data`.
fn secret_file(dir: &Path, name: &str, data: &[u8]) -> std::result::Result<PathBuf, EngineError> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| EngineError::Setup(format!("{name}: {e}")))?;
    f.write_all(data)
        .map_err(|e| EngineError::Setup(format!("{name}: {e}")))?;
    Ok(path)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s` with every string of `values` (4 characters or more) replaced by `***`. PURE.
pub fn mask(s: &str, values: &Value) -> String {
    fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) if s.len() >= 4 => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
            _ => {}
        }
    }
    let mut secrets = Vec::new();
    leaves(values, &mut secrets);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = s.to_string();
    for v in secrets {
        out = out.replace(v, "***");
    }
    out
}

/// helm's error (`Error: ...` without the prefix, with the lines that follow it: Helm prints a
/// multi-line error such as a schema violation as its last output, e.g. "values don't meet the
/// specifications of the schema(s) in the following chart(s):\napp:\n- at '/replicaCount': got
/// string, want integer"), else the last line. PURE.
pub fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    match lines.iter().rposition(|l| l.starts_with("Error: ")) {
        Some(i) => {
            let mut out = vec![&lines[i]["Error: ".len()..]];
            out.extend(lines[i + 1..].iter().copied());
            out.join("\n").trim().to_string()
        }
        None => lines
            .last()
            .copied()
            .unwrap_or("helm failed")
            .trim()
            .to_string(),
    }
}

/// Whether helm failed on a wait deadline. PURE.
pub fn is_timeout(stderr: &str) -> bool {
    [
        "context deadline exceeded",
        "timed out waiting for the condition",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Helm's duration flag for `d` (whole seconds, at least 1).
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn wait_args(args: &mut Vec<String>, w: Wait) {
    args.push(format!("--wait={}", w.strategy.as_str()));
    if w.for_jobs && w.strategy != WaitStrategy::HookOnly {
        args.push("--wait-for-jobs".into());
    }
}

/// The arguments of `helm install` for `r`, the values file `values` and, when set, the
/// post-render configuration file `post_render` and its error file. PURE.
///
/// With server-side apply `--disable-openapi-validation` is always passed: against an API
/// server that serves field validation (Kubernetes 1.27 and later) Helm's client-side check
/// validates nothing itself, but it still fetches and parses the OpenAPI v3 document of each
/// group, which was half the CPU of a `helm install` of podinfo (0.14 → 0.07 CPU s). The apply
/// is sent with `fieldValidation=Strict` either way, so an unknown field still fails the action
/// (checked with Helm v4.3.2: ".bogusField: field not declared in schema" with and without).
pub fn install_args(
    r: &InstallRequest,
    values: &Path,
    post_render: Option<(&Path, &Path)>,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "install".into(),
        r.release.name.clone(),
        r.chart.to_string_lossy().into_owned(),
        "--namespace".into(),
        r.release.namespace.clone(),
        "--values".into(),
        values.to_string_lossy().into_owned(),
        "--timeout".into(),
        seconds(r.timeout),
        format!("--server-side={}", r.server_side),
    ];
    if r.server_side {
        a.push(FORCE_CONFLICTS.into());
    }
    wait_args(&mut a, r.wait);
    let flags = [
        (r.disable_hooks, "--no-hooks"),
        (
            r.disable_openapi_validation || r.server_side,
            "--disable-openapi-validation",
        ),
        (r.disable_schema_validation, "--skip-schema-validation"),
        // the engine creates the CRDs of `Create` itself (see [`Crds::Create`])
        (true, "--skip-crds"),
        (r.create_namespace, "--create-namespace"),
        (r.replace, "--replace"),
        (r.take_ownership, "--take-ownership"),
    ];
    a.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
    if let Some(d) = &r.description {
        a.extend(["--description".into(), d.clone()]);
    }
    post_render_args(&mut a, post_render);
    a
}

fn post_render_args(a: &mut Vec<String>, post_render: Option<(&Path, &Path)>) {
    if let Some((config, err)) = post_render {
        a.extend([
            "--post-renderer".into(),
            postrender::PLUGIN_NAME.into(),
            "--post-renderer-args".into(),
            format!("--config={}", config.display()),
            "--post-renderer-args".into(),
            format!("--error-file={}", err.display()),
        ]);
    }
}

/// The arguments of `helm upgrade`. PURE.
pub fn upgrade_args(
    r: &UpgradeRequest,
    values: &Path,
    post_render: Option<(&Path, &Path)>,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "upgrade".into(),
        r.release.name.clone(),
        r.chart.to_string_lossy().into_owned(),
        "--namespace".into(),
        r.release.namespace.clone(),
        "--values".into(),
        values.to_string_lossy().into_owned(),
        "--timeout".into(),
        seconds(r.timeout),
        format!("--server-side={}", r.server_side.as_str()),
        format!("--history-max={}", r.history_max),
        if r.preserve_values {
            "--reuse-values".into()
        } else {
            "--reset-values".into()
        },
    ];
    wait_args(&mut a, r.wait);
    let flags = [
        (r.disable_hooks, "--no-hooks"),
        (
            r.disable_openapi_validation || r.server_side == ServerSide::Enabled,
            "--disable-openapi-validation",
        ),
        (r.disable_schema_validation, "--skip-schema-validation"),
        (r.server_side == ServerSide::Enabled, FORCE_CONFLICTS),
        (
            r.force && r.server_side != ServerSide::Enabled,
            "--force-replace",
        ),
        (r.cleanup_on_fail, "--cleanup-on-fail"),
        (r.take_ownership, "--take-ownership"),
    ];
    a.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
    if let Some(d) = &r.description {
        a.extend(["--description".into(), d.clone()]);
    }
    post_render_args(&mut a, post_render);
    a
}

/// The arguments of the dry-run of `r` ([`Engine::dry_run`]): the action's own arguments
/// (same flags as the real action) with `--dry-run=server --output=json`; no wait, nothing to
/// wait for. PURE.
pub fn dry_run_args(
    r: &DryRunRequest,
    values: &Path,
    post_render: Option<(&Path, &Path)>,
) -> Vec<String> {
    let mut a = match r {
        DryRunRequest::Install(i) => install_args(
            &InstallRequest {
                wait: Wait::disabled(),
                ..i.clone()
            },
            values,
            post_render,
        ),
        DryRunRequest::Upgrade(u) => upgrade_args(
            &UpgradeRequest {
                wait: Wait::disabled(),
                ..u.clone()
            },
            values,
            post_render,
        ),
    };
    a.extend(["--dry-run=server".into(), "--output=json".into()]);
    a
}

/// The arguments of `helm test`. PURE.
pub fn test_args(r: &TestRequest) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "test".into(),
        r.release.name.clone(),
        "--namespace".into(),
        r.release.namespace.clone(),
        "--timeout".into(),
        seconds(r.timeout),
    ];
    for f in &r.filters {
        let bang = if f.exclude { "!" } else { "" };
        a.extend(["--filter".into(), format!("{bang}name={}", f.name)]);
    }
    a
}

/// The arguments of `helm rollback`. PURE.
pub fn rollback_args(r: &RollbackRequest) -> Vec<String> {
    let mut a: Vec<String> = vec!["rollback".into(), r.release.name.clone()];
    if let Some(rev) = r.revision {
        a.push(rev.to_string());
    }
    a.extend([
        "--namespace".into(),
        r.release.namespace.clone(),
        "--timeout".into(),
        seconds(r.timeout),
        format!("--server-side={}", r.server_side.as_str()),
        format!("--history-max={}", r.history_max),
    ]);
    wait_args(&mut a, r.wait);
    let flags = [
        (r.disable_hooks, "--no-hooks"),
        (r.server_side == ServerSide::Enabled, FORCE_CONFLICTS),
        (
            r.force && r.server_side != ServerSide::Enabled,
            "--force-replace",
        ),
        (r.cleanup_on_fail, "--cleanup-on-fail"),
    ];
    a.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
    if let Some(d) = &r.description {
        a.extend(["--description".into(), d.clone()]);
    }
    a
}

/// The arguments of `helm uninstall`. PURE.
pub fn uninstall_args(r: &UninstallRequest) -> Vec<String> {
    let cascade = match r.cascade {
        Cascade::Background => "background",
        Cascade::Foreground => "foreground",
        Cascade::Orphan => "orphan",
    };
    let mut a: Vec<String> = vec![
        "uninstall".into(),
        r.release.name.clone(),
        "--namespace".into(),
        r.release.namespace.clone(),
        "--timeout".into(),
        seconds(r.timeout),
        format!("--cascade={cascade}"),
        format!("--wait={}", if r.wait { "watcher" } else { "hookOnly" }),
    ];
    if r.disable_hooks {
        a.push("--no-hooks".into());
    }
    if r.keep_history {
        a.push("--keep-history".into());
    }
    if let Some(d) = &r.description {
        a.extend(["--description".into(), d.clone()]);
    }
    a
}

/// The objects of a release manifest that are not Current, as
/// `Kind/namespace/name: <kstatus status>: <kstatus message>` (objects without a namespace
/// in the manifest are looked up in `namespace` when namespaced; NotFound when absent).
pub async fn not_ready(
    client: &Client,
    manifest: &str,
    namespace: &str,
    now: Timestamp,
) -> Vec<String> {
    let Ok(objects) = postrender::parse_manifests(manifest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for o in objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let Ok((ar, caps)) = kube::discovery::pinned_kind(client, &gvk).await else {
            continue;
        };
        let (api, ns): (Api<DynamicObject>, String) = match caps.scope {
            Scope::Cluster => (Api::all_with(client.clone(), &ar), String::new()),
            Scope::Namespaced => {
                let ns = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_string();
                (Api::namespaced_with(client.clone(), &ns, &ar), ns)
            }
        };
        let id = if ns.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}/{ns}/{name}")
        };
        match api.get_opt(name).await {
            Ok(Some(live)) => {
                let live = serde_json::to_value(&live).unwrap_or_default();
                let h = kstatus::flux(&live, now);
                if h.status != KStatus::Current {
                    out.push(format!("{id}: {}: {}", h.status, h.message));
                }
            }
            Ok(None) => out.push(format!("{id}: {}: Resource not found", KStatus::NotFound)),
            Err(_) => {}
        }
    }
    out
}

/// Whether the engine waits for an install or upgrade itself ([`HelmCli::wait_ready`], after
/// `helm --wait=hookOnly`) instead of helm's `--wait=watcher`: only for the `watcher` strategy
/// (Flux's default `poller`), not with `cleanupOnFail` (helm deletes what a failed upgrade
/// created, which it knows and pennant does not), and only when no post-install or
/// post-upgrade hook can run (hooks disabled, or a chart archive without one,
/// [`chart_may_have_post_hooks`]): such hooks run after helm's wait, so they must see the
/// objects ready. PURE (reads the chart).
pub fn waits_itself(wait: Wait, disable_hooks: bool, cleanup_on_fail: bool, chart: &Path) -> bool {
    wait.strategy == WaitStrategy::Watcher
        && !cleanup_on_fail
        && (disable_hooks || !chart_may_have_post_hooks(chart))
}

/// Whether the chart archive `chart` may run a `post-install` or `post-upgrade` hook: a
/// template (its own or an unpacked subchart's) that mentions either word, or a nested
/// archive. `false` only when the archive was read to its end without one; a directory or an
/// unreadable archive counts as `true`. PURE (reads the file).
pub fn chart_may_have_post_hooks(chart: &Path) -> bool {
    fn scan(chart: &Path) -> std::io::Result<bool> {
        let f = std::fs::File::open(chart)?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for entry in ar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let name = path.to_string_lossy();
            if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
                return Ok(true);
            }
            if !path.components().any(|c| c.as_os_str() == "templates") {
                continue;
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)?;
            if text.contains("post-install") || text.contains("post-upgrade") {
                return Ok(true);
            }
        }
        Ok(false)
    }
    !chart.is_file() || scan(chart).unwrap_or(true)
}

/// Whether the chart archive `chart` may hold CRDs, i.e. whether `helm show crds` can print
/// anything: a `crds` directory anywhere in it (the chart's own `crds/`, an unpacked
/// subchart's) or a nested archive (a packed subchart, which may have its own). `false` only
/// when the archive was read to its end and has neither; a directory or an unreadable archive
/// is left to helm (`true`). PURE (reads the file).
pub fn chart_may_have_crds(chart: &Path) -> bool {
    fn scan(chart: &Path) -> std::io::Result<bool> {
        let f = std::fs::File::open(chart)?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for entry in ar.entries()? {
            let entry = entry?;
            let path = entry.path()?;
            if path.components().any(|c| c.as_os_str() == "crds") {
                return Ok(true);
            }
            let name = path.to_string_lossy();
            if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
                return Ok(true);
            }
        }
        Ok(false)
    }
    !chart.is_file() || scan(chart).unwrap_or(true)
}

/// The chart's CRDs (`helm show crds`), created (`replace: false`, existing ones untouched)
/// or server-side applied (`replace: true`, field manager `pennant`, forced). A chart archive
/// without any ([`chart_may_have_crds`]) costs no `helm` process: one process fewer per
/// install and upgrade of most charts.
async fn apply_crds(
    engine: &HelmCli,
    t: &Target,
    action: Action,
    chart: &Path,
    replace: bool,
) -> Result<()> {
    if !chart_may_have_crds(chart) {
        return Ok(());
    }
    let scratch = engine.scratch()?;
    let out = engine
        .run(
            action,
            t,
            scratch.path(),
            vec![
                "show".into(),
                "crds".into(),
                chart.to_string_lossy().into_owned(),
            ],
            &Value::Null,
        )
        .await?;
    let crds = postrender::parse_manifests(&out).map_err(|e| EngineError::Setup(e.to_string()))?;
    let fail = |name: &str, e: kube::Error| {
        EngineError::Helm(HelmError {
            action,
            message: format!("failed to apply CustomResourceDefinition {name}: {e}"),
            stderr: String::new(),
            timed_out: false,
            not_ready: Vec::new(),
        })
    };
    // the chart's CRDs are objects of the chart like any other: the dynamic API, as for the
    // rest of a release (the helm controller is bound to cluster-admin, as Flux's)
    for c in crds {
        let name = c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api_version = c["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, c["kind"].as_str().unwrap_or_default());
        let (ar, _) = kube::discovery::pinned_kind(&t.client, &gvk)
            .await
            .map_err(|e| fail(&name, e))?;
        let api: Api<DynamicObject> = Api::all_with(t.client.clone(), &ar);
        let obj: DynamicObject = serde_json::from_value(c)
            .map_err(|e| EngineError::Setup(format!("CRD {name}: {e}")))?;
        if replace {
            let pp = PatchParams::apply("pennant").force();
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .map_err(|e| fail(&name, e))?;
        } else {
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(fail(&name, e)),
            }
        }
    }
    Ok(())
}

/// Write the values file and, with a post-render, its configuration; returns their paths.
fn action_files(
    scratch: &Path,
    values: &Value,
    post_render: Option<&PostRenderConfig>,
) -> Result<(PathBuf, Option<(PathBuf, PathBuf)>)> {
    let values = match values {
        Value::Null => Value::Object(Default::default()),
        v => v.clone(),
    };
    let vf = secret_file(
        scratch,
        "values.json",
        &serde_json::to_vec(&values).unwrap_or_default(),
    )?;
    let pr = match post_render {
        Some(c) => {
            let mut c = c.clone();
            if c.kustomize_binary.is_empty() {
                c.kustomize_binary = postrender::kustomize_binary()
                    .to_string_lossy()
                    .into_owned();
            }
            let f = secret_file(
                scratch,
                "post-render.json",
                &serde_json::to_vec(&c).unwrap_or_default(),
            )?;
            Some((f, scratch.join("post-render.err")))
        }
        None => None,
    };
    Ok((vf, pr))
}

impl HelmCli {
    /// `auto` resolved as Helm does, so conflicts can be forced ([`FORCE_CONFLICTS`]): the
    /// apply method (`ssa` or not) of the latest release (upgrade, `revision: None`) or of the
    /// release rolled back to (`Some(Some(n))`; `Some(None)`: the one before the latest). Left
    /// `auto` (Helm decides, conflicts not forced) when storage cannot tell.
    async fn resolve_server_side(
        &self,
        t: &Target,
        r: &ReleaseRef,
        side: ServerSide,
        revision: Option<Option<u32>>,
    ) -> ServerSide {
        if side != ServerSide::Auto {
            return side;
        }
        let Ok(history) = storage::history(&t.client, &r.namespace, &r.name).await else {
            return side;
        };
        server_side_in(side, &history, revision)
    }
}

/// `side` resolved from `history` as [`HelmCli::resolve_server_side`] does. PURE.
fn server_side_in(
    side: ServerSide,
    history: &[Release],
    revision: Option<Option<u32>>,
) -> ServerSide {
    if side != ServerSide::Auto {
        return side;
    }
    let latest = history.iter().map(|x| x.version).max().unwrap_or(0);
    let version = match revision {
        None => latest,
        Some(Some(n)) => n,
        Some(None) => latest.saturating_sub(1),
    };
    match history.iter().find(|x| x.version == version) {
        Some(x) if x.apply_method == "ssa" => ServerSide::Enabled,
        Some(_) => ServerSide::Disabled,
        None => side,
    }
}

impl Engine for HelmCli {
    async fn install(&self, t: &Target, r: &InstallRequest) -> Result<Release> {
        match r.crds {
            Crds::Skip => {}
            Crds::Create => apply_crds(self, t, Action::Install, &r.chart, false).await?,
            Crds::CreateReplace => apply_crds(self, t, Action::Install, &r.chart, true).await?,
        }
        let own_wait = waits_itself(r.wait, r.disable_hooks, false, &r.chart);
        let scratch = self.scratch()?;
        let (vf, pr) = action_files(scratch.path(), &r.values, r.post_render.as_ref())?;
        let pr = pr.as_ref().map(|(c, e)| (c.as_path(), e.as_path()));
        let args = if own_wait {
            install_args(
                &InstallRequest {
                    wait: Wait::disabled(),
                    ..r.clone()
                },
                &vf,
                pr,
            )
        } else {
            install_args(r, &vf, pr)
        };
        if let Err(e) = self
            .run(Action::Install, t, scratch.path(), args, &r.values)
            .await
        {
            return Err(self.explain_timeout(t, &r.release, e).await);
        }
        let rel = self.stored(t, &r.release).await?;
        if !own_wait {
            return Ok(rel);
        }
        // the wait's own `--timeout`, from when helm is done, as Helm gives each of its waits
        // the whole timeout (and not from before the queue for a `helm` process)
        let wait = (Timestamp::now(), r.timeout, r.wait.for_jobs);
        self.own_wait(t, Action::Install, rel, None, wait).await
    }

    async fn upgrade(&self, t: &Target, r: &UpgradeRequest) -> Result<Release> {
        match r.crds {
            Crds::Skip => {}
            Crds::Create => apply_crds(self, t, Action::Upgrade, &r.chart, false).await?,
            Crds::CreateReplace => apply_crds(self, t, Action::Upgrade, &r.chart, true).await?,
        }
        let own_wait = waits_itself(r.wait, r.disable_hooks, r.cleanup_on_fail, &r.chart);
        // one storage read for both: the apply method `auto` follows, and the revision the
        // upgrade replaces, whose status a failed wait restores
        let (ns, name) = (&r.release.namespace, &r.release.name);
        let history = if own_wait {
            Some(storage::history(&t.client, ns, name).await?)
        } else if r.server_side == ServerSide::Auto {
            storage::history(&t.client, ns, name).await.ok()
        } else {
            None
        };
        let r = &UpgradeRequest {
            server_side: match &history {
                Some(h) => server_side_in(r.server_side, h, None),
                None => r.server_side,
            },
            ..r.clone()
        };
        let previous = history
            .filter(|_| own_wait)
            .and_then(|h| h.into_iter().next());
        let scratch = self.scratch()?;
        let (vf, pr) = action_files(scratch.path(), &r.values, r.post_render.as_ref())?;
        let pr = pr.as_ref().map(|(c, e)| (c.as_path(), e.as_path()));
        let args = if own_wait {
            upgrade_args(
                &UpgradeRequest {
                    wait: Wait::disabled(),
                    ..r.clone()
                },
                &vf,
                pr,
            )
        } else {
            upgrade_args(r, &vf, pr)
        };
        if let Err(e) = self
            .run(Action::Upgrade, t, scratch.path(), args, &r.values)
            .await
        {
            return Err(self.explain_timeout(t, &r.release, e).await);
        }
        let rel = self.stored(t, &r.release).await?;
        if !own_wait {
            return Ok(rel);
        }
        // the wait's own `--timeout`, from when helm is done, as Helm gives each of its waits
        // the whole timeout (and not from before the queue for a `helm` process)
        let wait = (Timestamp::now(), r.timeout, r.wait.for_jobs);
        let previous = previous.as_ref();
        self.own_wait(t, Action::Upgrade, rel, previous, wait).await
    }

    async fn test(&self, t: &Target, r: &TestRequest) -> Result<Release> {
        let scratch = self.scratch()?;
        self.run(Action::Test, t, scratch.path(), test_args(r), &Value::Null)
            .await?;
        self.stored(t, &r.release).await
    }

    async fn rollback(&self, t: &Target, r: &RollbackRequest) -> Result<Release> {
        let r = &RollbackRequest {
            server_side: self
                .resolve_server_side(t, &r.release, r.server_side, Some(r.revision))
                .await,
            ..r.clone()
        };
        let scratch = self.scratch()?;
        if let Err(e) = self
            .run(
                Action::Rollback,
                t,
                scratch.path(),
                rollback_args(r),
                &Value::Null,
            )
            .await
        {
            return Err(self.explain_timeout(t, &r.release, e).await);
        }
        self.stored(t, &r.release).await
    }

    async fn uninstall(&self, t: &Target, r: &UninstallRequest) -> Result<Option<Release>> {
        let scratch = self.scratch()?;
        self.run(
            Action::Uninstall,
            t,
            scratch.path(),
            uninstall_args(r),
            &Value::Null,
        )
        .await?;
        Ok(storage::latest(&t.client, &r.release.namespace, &r.release.name).await?)
    }

    async fn dry_run(&self, t: &Target, r: &DryRunRequest) -> Result<Release> {
        let resolved;
        let r = match r {
            DryRunRequest::Upgrade(u) => {
                resolved = DryRunRequest::Upgrade(UpgradeRequest {
                    server_side: self
                        .resolve_server_side(t, &u.release, u.server_side, None)
                        .await,
                    ..u.clone()
                });
                &resolved
            }
            other => other,
        };
        let (action, values, post_render) = match r {
            DryRunRequest::Install(i) => (Action::Install, &i.values, i.post_render.as_ref()),
            DryRunRequest::Upgrade(u) => (Action::Upgrade, &u.values, u.post_render.as_ref()),
        };
        let scratch = self.scratch()?;
        let (vf, pr) = action_files(scratch.path(), values, post_render)?;
        let pr = pr.as_ref().map(|(c, e)| (c.as_path(), e.as_path()));
        let out = self
            .run(action, t, scratch.path(), dry_run_args(r, &vf, pr), values)
            .await?;
        let raw: Value = serde_json::from_str(&out).map_err(|e| {
            EngineError::Setup(format!("helm --dry-run output is not a release: {e}"))
        })?;
        Ok(Release::from_json(raw))
    }

    async fn history(&self, t: &Target, r: &ReleaseRef) -> Result<Vec<Release>> {
        Ok(storage::history(&t.client, &r.namespace, &r.name).await?)
    }

    async fn latest(&self, t: &Target, r: &ReleaseRef) -> Result<Option<Release>> {
        Ok(storage::latest(&t.client, &r.namespace, &r.name).await?)
    }

    async fn unlock(
        &self,
        t: &Target,
        r: &ReleaseRef,
        revision: u32,
        now: Timestamp,
    ) -> Result<Release> {
        let rel = storage::history(&t.client, &r.namespace, &r.name)
            .await?
            .into_iter()
            .find(|x| x.version == revision)
            .ok_or_else(|| StorageError::NotFound(r.name.clone(), revision))?;
        let description = storage::unlock_description(&rel.info.status);
        Ok(storage::unlock(
            &t.client,
            &r.namespace,
            &r.name,
            revision,
            &description,
            now,
        )
        .await?)
    }
}

/// Linux: the spawned `helm` gets SIGKILL when the thread that spawned it (a tokio worker, alive
/// as long as the runtime) ends, so a killed controller leaves no `helm` behind. `kill_on_drop`
/// covers a dropped future only; after a SIGKILL of the controller an orphaned `helm upgrade
/// --wait` kept the release `pending-upgrade` and could finish it under the next controller,
/// which unlocks the pending release its predecessor left at once
/// (`decide::pending_is_ours`).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // the controller died before prctl took effect: do not run orphaned
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the controller exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rel() -> ReleaseRef {
        ReleaseRef {
            name: "web".into(),
            namespace: "apps".into(),
        }
    }

    fn install() -> InstallRequest {
        InstallRequest {
            release: rel(),
            chart: "/c/web-1.0.0.tgz".into(),
            values: json!({}),
            timeout: Duration::from_secs(300),
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

    fn has(a: &[String], s: &str) -> bool {
        a.iter().any(|x| x == s)
    }

    #[test]
    fn install_flags_follow_the_options() {
        let a = install_args(&install(), Path::new("/t/v.json"), None);
        assert_eq!(&a[..3], ["install", "web", "/c/web-1.0.0.tgz"]);
        for f in [
            "--namespace",
            "apps",
            "/t/v.json",
            "300s",
            "--server-side=true",
            "--force-conflicts",
            "--wait=watcher",
            "--wait-for-jobs",
            "--take-ownership",
            // server-side apply: the API server validates (Strict); no OpenAPI download
            "--disable-openapi-validation",
        ] {
            assert!(has(&a, f), "{f} in {a:?}");
        }
        let csa = InstallRequest {
            server_side: false,
            ..install()
        };
        let a_csa = install_args(&csa, Path::new("/t/v.json"), None);
        assert!(!has(&a_csa, "--disable-openapi-validation"), "{a_csa:?}");
        for f in ["--no-hooks", "--replace", "--post-renderer"] {
            assert!(!has(&a, f), "{f} not in {a:?}");
        }
        // `Create`: the engine creates the missing CRDs, helm never applies one
        assert!(has(&a, "--skip-crds"), "{a:?}");
        let mut r = install();
        r.wait = Wait::disabled();
        r.crds = Crds::Skip;
        r.disable_hooks = true;
        r.disable_schema_validation = true;
        r.disable_openapi_validation = true;
        r.create_namespace = true;
        r.replace = true;
        r.take_ownership = false;
        r.server_side = false;
        r.description = Some("d".into());
        let a = install_args(
            &r,
            Path::new("/v"),
            Some((Path::new("/p.json"), Path::new("/p.err"))),
        );
        for f in [
            "--wait=hookOnly",
            "--skip-crds",
            "--no-hooks",
            "--skip-schema-validation",
            "--disable-openapi-validation",
            "--create-namespace",
            "--replace",
            "--server-side=false",
            "--description",
            "--post-renderer",
            "pennant-post-render",
            "--config=/p.json",
            "--error-file=/p.err",
        ] {
            assert!(has(&a, f), "{f} in {a:?}");
        }
        assert!(!has(&a, "--wait-for-jobs") && !has(&a, "--take-ownership"));
        assert!(!has(&a, "--force-conflicts"), "client-side apply: {a:?}");
        r.crds = Crds::CreateReplace;
        assert!(
            has(&install_args(&r, Path::new("/v"), None), "--skip-crds"),
            "CreateReplace: the engine applies the CRDs, helm skips them"
        );
    }

    #[test]
    fn a_dry_run_has_the_actions_flags_without_waiting() {
        let a = dry_run_args(
            &DryRunRequest::Install(install()),
            Path::new("/v"),
            Some((Path::new("/p.json"), Path::new("/p.err"))),
        );
        assert_eq!(&a[..3], ["install", "web", "/c/web-1.0.0.tgz"]);
        for f in [
            "--dry-run=server",
            "--output=json",
            "--wait=hookOnly",
            "--take-ownership",
            "--server-side=true",
            "--config=/p.json",
        ] {
            assert!(has(&a, f), "{f} in {a:?}");
        }
        assert!(!has(&a, "--wait-for-jobs") && !has(&a, "--wait=watcher"));
        let i = install();
        let u = UpgradeRequest {
            release: rel(),
            chart: i.chart.clone(),
            values: json!({}),
            timeout: i.timeout,
            wait: Wait::default(),
            disable_hooks: true,
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
        };
        let a = dry_run_args(&DryRunRequest::Upgrade(u), Path::new("/v"), None);
        assert_eq!(&a[..2], ["upgrade", "web"]);
        for f in [
            "--dry-run=server",
            "--reset-values",
            "--no-hooks",
            "--history-max=5",
        ] {
            assert!(has(&a, f), "{f} in {a:?}");
        }
        assert!(!has(&a, "--post-renderer"));
    }

    #[test]
    fn upgrade_rollback_uninstall_and_test_flags() {
        let u = UpgradeRequest {
            release: rel(),
            chart: "/c.tgz".into(),
            values: json!({}),
            timeout: Duration::from_millis(10),
            wait: Wait {
                strategy: WaitStrategy::Legacy,
                for_jobs: false,
            },
            disable_hooks: false,
            disable_openapi_validation: false,
            disable_schema_validation: false,
            crds: Crds::Skip,
            force: true,
            cleanup_on_fail: true,
            take_ownership: false,
            server_side: ServerSide::Auto,
            history_max: 5,
            preserve_values: false,
            description: None,
            post_render: None,
        };
        let a = upgrade_args(&u, Path::new("/v"), None);
        for f in [
            "1s",
            "--wait=legacy",
            "--force-replace",
            "--cleanup-on-fail",
            "--server-side=auto",
            "--history-max=5",
            "--reset-values",
        ] {
            assert!(has(&a, f), "{f} in {a:?}");
        }
        assert!(
            !has(&a, "--skip-crds"),
            "upgrade has no CRD flag: the engine applies them"
        );
        assert!(
            !has(&a, "--force-conflicts"),
            "auto: Helm refuses it with CSA"
        );
        assert!(!has(&a, "--disable-openapi-validation"), "{a:?}");
        // server-side apply forces conflicts (Flux); --force-replace is client-side only
        let a = upgrade_args(
            &UpgradeRequest {
                server_side: ServerSide::Enabled,
                ..u.clone()
            },
            Path::new("/v"),
            None,
        );
        assert!(
            has(&a, "--force-conflicts")
                && !has(&a, "--force-replace")
                && has(&a, "--disable-openapi-validation"),
            "{a:?}"
        );
        let a = upgrade_args(
            &UpgradeRequest {
                server_side: ServerSide::Disabled,
                ..u.clone()
            },
            Path::new("/v"),
            None,
        );
        assert!(
            !has(&a, "--force-conflicts") && has(&a, "--force-replace"),
            "{a:?}"
        );
        let rb = RollbackRequest {
            release: rel(),
            revision: Some(3),
            timeout: Duration::from_secs(60),
            wait: Wait::default(),
            disable_hooks: true,
            force: false,
            cleanup_on_fail: false,
            server_side: ServerSide::Enabled,
            history_max: 0,
            description: None,
        };
        let a = rollback_args(&rb);
        assert_eq!(&a[..3], ["rollback", "web", "3"]);
        assert!(
            has(&a, "--no-hooks") && has(&a, "--history-max=0") && has(&a, "--server-side=true")
        );
        assert!(has(&a, "--force-conflicts"), "{a:?}");
        let un = UninstallRequest {
            release: rel(),
            timeout: Duration::from_secs(60),
            disable_hooks: false,
            keep_history: true,
            wait: false,
            cascade: Cascade::Foreground,
            description: None,
        };
        let a = uninstall_args(&un);
        assert!(
            has(&a, "--keep-history")
                && has(&a, "--cascade=foreground")
                && has(&a, "--wait=hookOnly")
        );
        let t = TestRequest {
            release: rel(),
            timeout: Duration::from_secs(60),
            filters: vec![
                TestFilter {
                    name: "a".into(),
                    exclude: false,
                },
                TestFilter {
                    name: "b".into(),
                    exclude: true,
                },
            ],
        };
        let a = test_args(&t);
        assert!(has(&a, "name=a") && has(&a, "!name=b"));
    }

    #[test]
    fn stderr_is_cut_and_values_masked() {
        let values = json!({"db": {"password": "hunter22"}, "n": 3, "short": "ab"});
        let err = "line\n".repeat(30) + "Error: secret hunter22 leaked ab";
        let t = mask(&tail(&err, STDERR_LINES), &values);
        assert_eq!(t.lines().count(), STDERR_LINES);
        assert!(!t.contains("hunter22") && t.contains("***"));
        assert_eq!(error_line(&t), "secret *** leaked ab");
        assert_eq!(error_line("no prefix\nlast"), "last");
        assert_eq!(error_line(""), "helm failed");
        assert_eq!(
            error_line(
                "debug\nError: UPGRADE FAILED: values don't meet the specifications of the schema(s) in the following chart(s):\napp:\n- at '/replicaCount': got string, want integer\n"
            ),
            "UPGRADE FAILED: values don't meet the specifications of the schema(s) in the following chart(s):\napp:\n- at '/replicaCount': got string, want integer"
        );
    }

    #[test]
    fn timeouts_are_recognised() {
        assert!(is_timeout(
            "Error: UPGRADE FAILED: context deadline exceeded"
        ));
        assert!(is_timeout("Error: timed out waiting for the condition"));
        assert!(!is_timeout(
            "Error: UPGRADE FAILED: pre-upgrade hooks failed"
        ));
    }

    /// A gzipped tar of `files` (path, content) at `path`.
    fn tgz(path: &Path, files: &[(&str, &str)]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut ar = tar::Builder::new(gz);
        for (name, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            ar.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        ar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn only_a_chart_archive_without_crds_skips_helm_show_crds() {
        let dir = tempfile::tempdir().unwrap();
        let chart = |name: &str, extra: &[(&str, &str)]| {
            let p = dir.path().join(name);
            let mut files = vec![
                ("app/Chart.yaml", "name: app\nversion: 1.0.0\n"),
                ("app/templates/cm.yaml", "kind: ConfigMap\n"),
            ];
            files.extend_from_slice(extra);
            tgz(&p, &files);
            p
        };
        assert!(!chart_may_have_crds(&chart("plain.tgz", &[])));
        // the chart's own crds/, an unpacked subchart's, a packed subchart (which may have some)
        for (name, extra) in [
            (
                "own.tgz",
                ("app/crds/crd.yaml", "kind: CustomResourceDefinition\n"),
            ),
            ("sub.tgz", ("app/charts/db/crds/crd.yaml", "kind: X\n")),
            ("packed.tgz", ("app/charts/db-1.0.0.tgz", "not read")),
        ] {
            assert!(chart_may_have_crds(&chart(name, &[extra])), "{name}");
        }
        // not an archive this can read, or not a file: helm decides
        let garbage = dir.path().join("garbage.tgz");
        std::fs::write(&garbage, "not gzip").unwrap();
        assert!(chart_may_have_crds(&garbage));
        assert!(chart_may_have_crds(dir.path()));
        assert!(chart_may_have_crds(&dir.path().join("missing.tgz")));
    }

    #[test]
    fn the_engine_waits_itself_unless_a_post_hook_or_a_cleanup_needs_helm_s_wait() {
        let dir = tempfile::tempdir().unwrap();
        let chart = |name: &str, extra: &[(&str, &str)]| {
            let p = dir.path().join(name);
            let mut files = vec![
                ("app/Chart.yaml", "name: app\nversion: 1.0.0\n"),
                ("app/templates/deploy.yaml", "kind: Deployment\n"),
                // a test hook runs only under `helm test`
                (
                    "app/templates/tests/t.yaml",
                    "metadata:\n  annotations:\n    helm.sh/hook: test\n",
                ),
            ];
            files.extend_from_slice(extra);
            tgz(&p, &files);
            p
        };
        let plain = chart("plain.tgz", &[]);
        assert!(!chart_may_have_post_hooks(&plain));
        let hook = |event: &str| {
            format!("metadata:\n  annotations:\n    \"helm.sh/hook\": pre-install,{event}\n")
        };
        let (install, upgrade) = (hook("post-install"), hook("post-upgrade"));
        for (name, extra) in [
            (
                "post-install.tgz",
                ("app/templates/job.yaml", install.as_str()),
            ),
            (
                "post-upgrade.tgz",
                ("app/templates/job.yaml", upgrade.as_str()),
            ),
            (
                "subchart.tgz",
                ("app/charts/db/templates/job.yaml", install.as_str()),
            ),
            ("packed.tgz", ("app/charts/db-1.0.0.tgz", "not read")),
        ] {
            assert!(chart_may_have_post_hooks(&chart(name, &[extra])), "{name}");
        }
        // a hook word outside the templates (a README, values) runs nothing
        let readme = chart("readme.tgz", &[("app/README.md", "post-install notes")]);
        assert!(!chart_may_have_post_hooks(&readme));
        assert!(chart_may_have_post_hooks(dir.path()));
        assert!(chart_may_have_post_hooks(&dir.path().join("missing.tgz")));

        let with_hooks = chart("hooked.tgz", &[("app/templates/job.yaml", &install)]);
        let watcher = Wait::default();
        let legacy = Wait {
            strategy: WaitStrategy::Legacy,
            for_jobs: true,
        };
        assert!(waits_itself(watcher, false, false, &plain));
        assert!(!waits_itself(watcher, false, false, &with_hooks));
        // hooks disabled: nothing runs after the wait
        assert!(waits_itself(watcher, true, false, &with_hooks));
        assert!(!waits_itself(watcher, false, true, &plain), "cleanupOnFail");
        assert!(
            !waits_itself(legacy, false, false, &plain),
            "legacy is helm's"
        );
        assert!(
            !waits_itself(Wait::disabled(), false, false, &plain),
            "no wait"
        );
    }

    /// The most `helm` processes alive at once, from the `start`/`stop` lines a fake helm
    /// appended to `log`.
    fn most_at_once(log: &Path) -> (usize, usize) {
        let text = std::fs::read_to_string(log).unwrap();
        let (mut now, mut most, mut started) = (0usize, 0usize, 0usize);
        for l in text.lines() {
            match l {
                "start" => {
                    now += 1;
                    started += 1;
                    most = most.max(now);
                }
                "stop" => now -= 1,
                other => panic!("unexpected line {other:?}"),
            }
        }
        assert_eq!(now, 0, "every process stopped");
        (most, started)
    }

    /// `n` uninstalls at once through an engine capped at `cap` processes whose `helm` records
    /// its start and stop and lives 1 s; returns (most alive at once, started).
    async fn run_fake_helms(n: usize, cap: usize) -> (usize, usize) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let helm = dir.path().join("helm");
        std::fs::write(
            &helm,
            format!(
                "#!/bin/sh\necho start >> '{0}'\nsleep 1\necho stop >> '{0}'\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
        let engine = HelmCli::new(HelmCliOptions {
            helm: Some(helm),
            post_renderer_exe: Some("/bin/true".into()),
            max_processes: cap,
        })
        .unwrap();
        // no API server: the storage read after each `helm` fails, which is not what is counted
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let target = Target {
            client: Client::try_from(config).unwrap(),
            kubeconfig: None,
            as_user: None,
            watches: None,
        };
        let req = UninstallRequest {
            release: rel(),
            timeout: Duration::from_secs(60),
            disable_hooks: false,
            keep_history: false,
            wait: false,
            cascade: Cascade::Background,
            description: None,
        };
        let runs = (0..n).map(|_| engine.uninstall(&target, &req));
        futures::future::join_all(runs).await;
        most_at_once(&log)
    }

    #[tokio::test]
    async fn helm_processes_never_exceed_the_cap() {
        // 6 processes of 1 s each, started together: without a cap all 6 overlap (the control
        // below; spawning takes milliseconds, far under the 1 s they live), with cap 2 at most
        // 2 run, and 2 do (the second starts while the first sleeps)
        let (most, started) = run_fake_helms(6, 2).await;
        assert_eq!((most, started), (2, 6));
        let (most, started) = run_fake_helms(6, 0).await;
        assert_eq!(started, 6);
        assert!(most > 2, "without a cap the 6 overlap: {most}");
    }
}
