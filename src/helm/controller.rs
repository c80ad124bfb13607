//! The helm controller (`--controllers helm`): Flux's helm-controller for
//! `helm.toolkit.fluxcd.io/v2` HelmReleases.
//!
//! Wiring: the HelmRelease watch passes an event on a new generation, a new
//! `reconcile.fluxcd.io/requestedAt`, `forceAt` or `resetAt` token, or a deletion (Flux's
//! predicate); a HelmChart, OCIRepository or ExternalArtifact whose artifact revision differs
//! from the `status.lastAttemptedRevision` of a HelmRelease using it reconciles that HelmRelease
//! at once; a HelmRelease or Kustomization turning Ready wakes the HelmReleases waiting for it
//! (`DependencyNotReady`). Otherwise `spec.interval`. The generated HelmChart of a HelmRelease
//! is applied as soon as the watch shows it, outside the reconcile workers ([`charts_ahead`]),
//! so charts are fetched while the workers run `helm`; the engine runs at most
//! `--helm-max-processes` `helm` processes at once, whatever `--concurrent` is.
//!
//! Each reconcile (Flux's `reconcileRelease`): finalizer → suspend → the generated HelmChart
//! (server-side apply of [`chart::helm_chart`]; with `chartRef` a stale generated one is
//! deleted) → `dependsOn` (cycles are `Stalled`, Flux waits forever) → the chart's source
//! (`SourceNotReady`, retried after `--requeue-dependency`; a Warning Event when the source
//! failed) → values ([`super::values`], `ValuesError`) → the chart artifact (download, digest
//! verified; OCI versions `<version>+<12 hex>`) → the release-target check ([`chart::target_change`]: a
//! chart-name-only change follows `chartNameChangeStrategy` and is announced, never silent,
//! helm-controller#864/#234) → counters reset ([`decide::reset_counters_needed`]) →
//! `lastAttempted*` → the AtomicRelease loop: observe Helm storage ([`super::storage`] through
//! the [`Engine`]) → [`decide::next_step`] → the engine's action → the new release recorded in
//! `status.history` (newest first, `maxHistory`) → counters, conditions and Events of
//! [`decide::outcome`]. Before each action `Reconciling=True` (and for release actions
//! `Ready=Unknown`) "Running 'upgrade' action with timeout of 5m0s" is patched; a pending
//! release written after it and still there when a later reconcile starts was left by a killed
//! controller and is unlocked at once ([`decide::pending_is_ours`]). A failed remediation ends
//! the reconcile with an error (the failure backoff) or `Stalled` ([`decide::Next::Backoff`]).
//!
//! Deletion (finalizer `finalizers.fluxcd.io`): uninstall per `spec.uninstall` unless suspended
//! or never installed (`status.storageNamespace` empty), delete the generated HelmChart.
//!
//! Remote clusters (`spec.kubeConfig.secretRef`, Flux's `buildRESTClientGetter`): after the
//! chart is loaded, the kubeconfig Secret (the HelmRelease's namespace, local cluster) gives the
//! release's cluster through [`crate::gitops::target`], shared with the kustomize controller
//! (Flux's key defaults, the kubeconfig sanitised, clients cached per Secret version,
//! `serviceAccountName`/`--default-service-account` impersonated on the remote cluster). Every
//! operation on the release goes there: the `helm` actions (the sanitised kubeconfig in a 0600
//! file, `--kube-as-user`), Helm storage reads and unlock, drift detection and correction, the
//! Canary-owned fields and the uninstall on deletion; `targetNamespace` is a namespace of that
//! cluster. The HelmRelease, its HelmChart and sources, `valuesFrom`, the Secret and the Events
//! stay on the local cluster. A Secret or key missing, a kubeconfig refused or a server not
//! answering: `Ready=False`, helm-controller's `RESTClientError` and its messages (never the
//! Secret's content), a Warning Event, retried with the failure backoff; on deletion a missing
//! Secret skips the uninstall (a Warning says so), as Flux.
//!
//! Refused (`Stalled=True`, reason `UnsupportedField`, a Warning Event, no Helm action):
//! `spec.kubeConfig.configMapRef` (workload identity). Drift detection ([`super::drift`],
//! `warn`/`enabled`) runs on a deployed release the history verifies, with the controller's own
//! identity (the remote client's with `spec.kubeConfig`); the fields the Canary controller owns
//! (the Canaries of the release namespace, none where the cluster has no Canary CRD) are left
//! out of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::chart::{self, TargetChange};
use super::decide::{
    self, Action, ActionResult, AlreadyRun, Counters, Desired, Next, Observed, OutcomeContext,
    ReleaseInfo, SnapshotMatch, TargetCheck,
};
use super::engine::{
    Cascade, Crds, Engine, HelmCli, HelmCliOptions, InstallRequest, ReleaseRef, RollbackRequest,
    ServerSide, Target, TestFilter, TestRequest, UninstallRequest, UpgradeRequest, Wait,
    WaitStrategy,
};
use super::postrender;
use super::storage::Release;
use super::values::{ValuesKind, ValuesRef};
use crate::api::helm_release::{
    FORCE_REQUESTED_AT_ANNOTATION, GROUP, HelmRelease, HelmReleaseStatus,
    RESET_REQUESTED_AT_ANNOTATION, Snapshot,
};
use crate::api::kustomization::Kustomization;
use crate::api::source::{Artifact, ExternalArtifact, FINALIZER, HelmChart, OCIRepository, Source};
use crate::gitops::conditions::{self, reasons, types};
use crate::gitops::depends_on::{DEPENDENCY_CYCLE, check_dependencies, find_cycle};
use crate::gitops::reconcile_request::requested_at;
use crate::gitops::target::{
    Cluster, Flavour, Options as TargetOptions, TargetError, TargetSpec, Targets, kubeconfig_yaml,
};
use crate::health::expr::eval_ready_expr;

/// `source.component` of the Events: Flux's, so tools filtering on it read pennant's.
pub const EVENT_SOURCE: &str = "helm-controller";
/// Field manager of the controller's own writes (status, finalizers, events, HelmCharts).
const FIELD_MANAGER: &str = crate::apply::ssa::FIELD_MANAGER;
/// Condition type of the fields accepted but not acted on.
pub const UNSUPPORTED: &str = "Unsupported";
/// Its reason.
pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";
/// Reason of a spec pennant refuses (`Stalled=True`).
pub const UNSUPPORTED_FIELD: &str = "UnsupportedField";
/// Flux's reasons of the prelude.
pub const SOURCE_NOT_READY: &str = "SourceNotReady";
pub const VALUES_ERROR: &str = "ValuesError";
pub const STATE_ERROR: &str = "StateError";
pub const RECONCILE_ERROR: &str = "ReconcileError";
pub const UNINSTALL_SUCCEEDED: &str = "UninstallSucceeded";
pub const UNINSTALL_FAILED: &str = "UninstallFailed";

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Wait before the next attempt when a dependency or the chart source is not ready
    /// (Flux's `--requeue-dependency`, 30 s).
    pub requeue_dependency: Duration,
    /// Flux's `--default-service-account` (impersonated by HelmReleases without
    /// `serviceAccountName`) and `--insecure-kubeconfig-exec`/`-tls` (for `spec.kubeConfig`).
    pub target: TargetOptions,
    /// Flux's `DefaultToRetryOnFailure` feature gate.
    pub default_to_retry_on_failure: bool,
    pub helm: HelmCliOptions,
    /// The Canary controller's default router (`--mesh-provider`), for the Canaries whose
    /// owned fields drift detection leaves alone ([`crate::apply::ownership`]).
    pub mesh_provider: String,
    /// HelmReleases reconciled at once (Flux's `--concurrent`, 4); the `helm` processes they
    /// run (tens of MiB each) are bounded by `helm.max_processes`.
    pub concurrent: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            requeue_dependency: Duration::from_secs(30),
            target: TargetOptions::default(),
            default_to_retry_on_failure: false,
            helm: HelmCliOptions::default(),
            mesh_provider: "istio".into(),
            concurrent: 4,
        }
    }
}

/// Why a reconcile failed (the status says more).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(String),
}

struct Ctx {
    client: Client,
    engine: HelmCli,
    /// Drift detection's dry-runs and corrections (the controller's own identity).
    applier: crate::apply::ssa::Applier,
    /// The remote clusters of `spec.kubeConfig` (the local cluster keeps `client`/`applier`).
    targets: Targets<ReleaseTarget>,
    settings: Settings,
    instance: String,
    failures: Mutex<BTreeMap<(String, String), u32>>,
    /// Every Canary in scope, from the watch (revision-aware readiness, [`canary_gate`]; the
    /// fields they own in a local release namespace, [`canaries_of`]).
    canaries: Store<crate::api::Canary>,
    /// The controller's namespace scope (`--namespace`): where the Canary watch looks.
    scope_namespace: Option<String>,
    /// The HelmReleases whose gate waits for a Canary.
    gate_waiters: Arc<crate::gitops::canary_gate::Waiters>,
    /// Watches of the local cluster's kinds a release's objects have, for the engine's own
    /// wait ([`crate::helm::engine::Target::watches`]).
    watches: Arc<crate::health::watch::Watches>,
}

/// The fields of a spec accepted but not acted on yet, as `spec.<field> (<why>)`. PURE.
pub fn unsupported_fields(hr: &HelmRelease) -> Vec<String> {
    let mut out = vec![];
    if hr
        .spec
        .storage_namespace
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != hr.release_namespace())
    {
        out.push(
            "spec.storageNamespace (the helm CLI stores releases in the release namespace)"
                .to_string(),
        );
    }
    if !hr.spec.health_check_exprs.is_empty() {
        out.push("spec.healthCheckExprs (Helm's own wait judges readiness)".to_string());
    }
    if hr
        .spec
        .post_render_strategy
        .as_deref()
        .is_some_and(|s| s != "combined")
    {
        out.push(
            "spec.postRenderStrategy (post-renderers run as Helm 4's default, combined)"
                .to_string(),
        );
    }
    out
}

/// Why the spec must not be acted on at all, or `None`: `spec.kubeConfig.configMapRef`
/// (Flux 2.6 workload identity) is not implemented, and releasing to the local cluster
/// instead would be wrong. (`spec.kubeConfig.secretRef` is: [`crate::gitops::target`].) PURE.
pub fn refused(hr: &HelmRelease) -> Option<String> {
    crate::gitops::target::refused(hr.spec.kube_config.as_ref(), Flavour::Helm).map(String::from)
}

/// Where a HelmRelease's release lives: the engine's target (client, kubeconfig for the `helm`
/// CLI, impersonated user) and the applier of drift detection and the Canary-owned fields on
/// that cluster.
#[derive(Clone)]
pub struct ReleaseTarget {
    pub engine: Target,
    pub applier: crate::apply::ssa::Applier,
}

impl ReleaseTarget {
    /// The target of a [`Cluster`] of [`crate::gitops::target`]: its client (impersonating when
    /// a user is set), its sanitised kubeconfig serialised for `--kubeconfig`, the user for
    /// `--kube-as-user`.
    pub fn of_cluster(c: Cluster) -> Self {
        ReleaseTarget {
            applier: crate::apply::ssa::Applier::new(c.client.clone()),
            engine: Target {
                client: c.client,
                kubeconfig: c.kubeconfig.as_ref().map(kubeconfig_yaml),
                as_user: c.user,
                watches: None,
            },
        }
    }
}

/// What of `hr` decides its cluster and identity. PURE.
pub fn target_spec(hr: &HelmRelease) -> TargetSpec<'_> {
    TargetSpec {
        namespace: hr.metadata.namespace.as_deref().unwrap_or_default(),
        kube_config: hr.spec.kube_config.as_ref(),
        service_account_name: hr.spec.service_account_name.as_deref(),
    }
}

/// The user Helm runs as: `system:serviceaccount:<ns>:<spec.serviceAccountName>`, else the
/// default service account when set, else `None` (the controller's own); on the remote
/// cluster with `spec.kubeConfig`, as Flux. PURE.
pub fn impersonated_user(hr: &HelmRelease, default: Option<&str>) -> Option<String> {
    let spec = target_spec(hr);
    crate::gitops::target::impersonated_user(spec.namespace, spec.service_account_name, default)
}

/// `(kind, namespace, name)` of the chart source: the generated HelmChart, or `chartRef`. PURE.
pub fn chart_source_key(hr: &HelmRelease) -> (String, String, String) {
    if let Some(r) = &hr.spec.chart_ref {
        let ns = r
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| hr.namespace())
            .unwrap_or_default();
        return (r.kind.clone(), ns, r.name.clone());
    }
    (
        "HelmChart".into(),
        hr.helm_chart_namespace().unwrap_or_default(),
        hr.helm_chart_name(),
    )
}

/// Whether a watched HelmRelease change deserves a reconcile: Flux's predicate (generation,
/// the `requestedAt`, `forceAt` and `resetAt` tokens, deletion) as a hash. PURE.
fn wanted(o: &HelmRelease) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    o.metadata.generation.hash(&mut h);
    let a = o.metadata.annotations.as_ref();
    requested_at(a).hash(&mut h);
    for k in [FORCE_REQUESTED_AT_ANNOTATION, RESET_REQUESTED_AT_ANNOTATION] {
        a.and_then(|a| a.get(k)).hash(&mut h);
    }
    o.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// The HelmReleases using `source` whose last attempt is not its artifact's revision.
/// The label selector of the ConfigMaps and Secrets whose changes trigger the HelmReleases
/// referencing them in `valuesFrom` (Flux's `--watch-configs-label-selector` default).
pub const WATCH_CONFIGS_SELECTOR: &str = "reconcile.fluxcd.io/watch=Enabled";

/// The HelmReleases of the object's namespace whose `valuesFrom` names it (`kind` ConfigMap
/// or Secret). PURE over the store.
fn using_values_from<K: Resource>(
    store: &Store<HelmRelease>,
    kind: &str,
    obj: &K,
) -> Vec<ObjectRef<HelmRelease>> {
    let (ns, name) = (obj.meta().namespace.as_deref(), obj.meta().name.as_deref());
    store
        .state()
        .iter()
        .filter(|h| h.metadata.namespace.as_deref() == ns)
        .filter(|h| {
            h.spec
                .values_from
                .iter()
                .any(|v| v.kind == kind && Some(v.name.as_str()) == name)
        })
        .map(|h| ObjectRef::from_obj(h.as_ref()))
        .collect()
}

fn for_source<S: Source + Resource<DynamicType = ()>>(
    store: &Store<HelmRelease>,
    source: &S,
) -> Vec<ObjectRef<HelmRelease>> {
    // a source without an artifact or not Ready (a failed fetch, a chart gone) wakes every
    // release using it, so their SourceNotReady message follows the source's — also when the
    // failure lands before the release has written its own status
    let artifact = source.artifact();
    let source_failing = !conditions::is_true(source.conditions(), types::READY);
    let key = (
        S::kind(&()).into_owned(),
        source.namespace().unwrap_or_default(),
        source.name_any(),
    );
    store
        .state()
        .iter()
        .filter(|h| chart_source_key(h) == key)
        .filter(|h| {
            if source_failing {
                return true;
            }
            let last = h
                .status
                .as_ref()
                .and_then(|s| s.last_attempted_revision.as_deref());
            // OCI versions carry the digest: compare the version part
            artifact.is_some_and(|a| {
                last.is_none_or(|l| {
                    !l.starts_with(a.revision.split('@').next().unwrap_or_default())
                })
            }) || !conditions::is_true(
                h.status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default(),
                types::READY,
            )
        })
        .map(|h| ObjectRef::from_obj(&**h))
        .collect()
}

/// The HelmReleases among `all` waiting (`DependencyNotReady`) for the object `(kind, ns,
/// name)` in a `dependsOn` entry, when `ready`. PURE.
pub fn dependents_to_wake(
    all: &[Arc<HelmRelease>],
    kind: &str,
    ns: &str,
    name: &str,
    ready: bool,
) -> Vec<ObjectRef<HelmRelease>> {
    if !ready {
        return vec![];
    }
    all.iter()
        .filter(|h| {
            h.status.as_ref().is_some_and(|s| {
                conditions::get(&s.conditions, types::READY)
                    .is_some_and(|c| c.reason == reasons::DEPENDENCY_NOT_READY)
            })
        })
        .filter(|h| {
            let own = h.namespace().unwrap_or_default();
            h.spec.depends_on.iter().any(|d| {
                d.kind_or("HelmRelease") == kind
                    && d.name == name
                    && d.namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(&own)
                        == ns
            })
        })
        .map(|h| ObjectRef::from_obj(&**h))
        .collect()
}

/// The HelmChart to apply for `hr` ahead of its reconcile ([`charts_ahead`]), or `None` when
/// its reconcile would not apply one (deleting, suspended, refused, `chartRef`) or already
/// applied this generation's (`status.helmChart` names it and the generation was attempted or
/// observed: nothing to gain, and a restart costs no write per HelmRelease). PURE.
pub fn chart_ahead(hr: &HelmRelease) -> Option<Value> {
    if hr.metadata.deletion_timestamp.is_some() || hr.suspended() || refused(hr).is_some() {
        return None;
    }
    let generation = hr.metadata.generation;
    let reconciled = hr.status.as_ref().is_some_and(|s| {
        generation.is_some()
            && (s.last_attempted_generation == generation || s.observed_generation == generation)
            && s.helm_chart.as_deref().is_some_and(|c| {
                let ns = hr.helm_chart_namespace().unwrap_or_default();
                c.split_once('/') == Some((ns.as_str(), hr.helm_chart_name().as_str()))
            })
    });
    if reconciled {
        return None;
    }
    chart::helm_chart(hr)
}

/// Whether a HelmChart labelled as the deleted `hr`'s and still there is a leftover to delete
/// ([`charts_ahead`]): one no reconcile recorded in `status.helmChart` (applied ahead, so no
/// finalizer deletes it), or one the finalizer should have deleted but an apply ahead still in
/// flight wrote again; not the recorded one of a suspended HelmRelease, which Flux keeps. PURE.
pub fn chart_ahead_leftover(hr: &HelmRelease) -> bool {
    let recorded = hr
        .status
        .as_ref()
        .and_then(|s| s.helm_chart.as_deref())
        .is_some_and(|c| !c.is_empty());
    hr.spec.chart.is_some() && (!recorded || !hr.suspended())
}

/// Work for [`charts_ahead`].
enum ChartWork {
    /// A HelmRelease seen by the watch (its current copy is read from the store).
    Seen(ObjectRef<HelmRelease>),
    /// A HelmRelease gone (the watch's last copy of it).
    Deleted(Box<HelmRelease>),
}

/// What [`charts_ahead`] knows per HelmRelease (namespace, name).
#[derive(Default)]
struct ChartsAheadState {
    /// (uid, generation) whose HelmChart was applied: a status write or a repeated event
    /// applies nothing again.
    done: BTreeMap<(String, String), (String, i64)>,
    /// An apply in flight, and whether the HelmRelease was deleted meanwhile (its cleanup then
    /// runs after the apply, which could otherwise write the HelmChart again after it).
    in_flight: BTreeMap<(String, String), bool>,
}

/// HelmCharts ahead of the installs (issue 17): the generated HelmChart of every HelmRelease
/// the watch shows is applied here, a few at once and outside the reconcile workers, so the
/// source controller fetches the charts while those workers are busy in `helm install --wait`;
/// the reconcile's own apply (Flux's `reconcileChartTemplate`) then finds it in place. The same
/// object as the reconcile's ([`chart::helm_chart`], server-side applied as `pennant`, forced),
/// for the HelmReleases the reconcile would apply it for ([`chart_ahead`]). A deleted
/// HelmRelease takes a HelmChart left over by this pass with it ([`chart_ahead_leftover`]).
/// Failures are logged only: the reconcile applies the HelmChart anyway.
async fn charts_ahead(
    client: Client,
    store: Store<HelmRelease>,
    work: tokio::sync::mpsc::UnboundedReceiver<ChartWork>,
) {
    /// HelmCharts applied at once: a handful of API requests, next to the reconcile workers.
    const AT_ONCE: usize = 4;
    let state = Mutex::new(ChartsAheadState::default());
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let key = |hr: &HelmRelease| (hr.namespace().unwrap_or_default(), hr.name_any());
    let version = |hr: &HelmRelease| {
        (
            hr.uid().unwrap_or_default(),
            hr.metadata.generation.unwrap_or_default(),
        )
    };
    let work = futures::stream::unfold(
        work,
        |mut rx| async move { rx.recv().await.map(|w| (w, rx)) },
    );
    work.for_each_concurrent(AT_ONCE, |w| {
        let client = client.clone();
        let store = &store;
        async move {
            match w {
                ChartWork::Seen(r) => {
                    let Some(current) = store.get(&r) else { return };
                    let hr: &HelmRelease = &current;
                    let k = key(hr);
                    let Some(obj) = chart_ahead(hr) else { return };
                    {
                        let mut st = lock();
                        if st.done.get(&k) == Some(&version(hr)) || st.in_flight.contains_key(&k) {
                            return;
                        }
                        st.in_flight.insert(k.clone(), false);
                    }
                    let (cns, cname) = (
                        hr.helm_chart_namespace().unwrap_or_default(),
                        hr.helm_chart_name(),
                    );
                    let pp = PatchParams::apply(FIELD_MANAGER).force();
                    let applied = Api::<HelmChart>::namespaced(client.clone(), &cns)
                        .patch(&cname, &pp, &Patch::Apply(&obj))
                        .await;
                    let deleted = {
                        let mut st = lock();
                        let deleted = st.in_flight.remove(&k).unwrap_or(false);
                        if applied.is_ok() && !deleted {
                            st.done.insert(k.clone(), version(hr));
                        }
                        deleted
                    };
                    match applied {
                        Ok(_) => tracing::debug!(helmrelease = %hr.name_any(), helmchart = %cname,
                            "HelmChart applied ahead of the release"),
                        Err(e) => tracing::debug!(helmrelease = %hr.name_any(),
                            "applying HelmChart {cns}/{cname} ahead: {e}"),
                    }
                    if deleted {
                        delete_chart_left_over(&client, hr).await;
                    }
                }
                ChartWork::Deleted(gone) => {
                    let hr: &HelmRelease = &gone;
                    let k = key(hr);
                    {
                        let mut st = lock();
                        st.done.remove(&k);
                        if let Some(deleted) = st.in_flight.get_mut(&k) {
                            // the apply in flight cleans up after itself
                            *deleted = true;
                            return;
                        }
                    }
                    delete_chart_left_over(&client, hr).await;
                }
            }
        }
    })
    .await;
}

/// Delete the HelmChart of the deleted `hr` when it is a leftover ([`chart_ahead_leftover`])
/// and still labelled as `hr`'s (the uid read is a precondition of the delete).
async fn delete_chart_left_over(client: &Client, hr: &HelmRelease) {
    use crate::api::helm_release::{NAME_LABEL, NAMESPACE_LABEL};
    if !chart_ahead_leftover(hr) {
        return;
    }
    let (ns, name) = (hr.namespace().unwrap_or_default(), hr.name_any());
    let (cns, cname) = (
        hr.helm_chart_namespace().unwrap_or_default(),
        hr.helm_chart_name(),
    );
    let api = Api::<HelmChart>::namespaced(client.clone(), &cns);
    let Ok(Some(c)) = api.get_opt(&cname).await else {
        return;
    };
    let labels = c.labels();
    if labels.get(NAME_LABEL) != Some(&name) || labels.get(NAMESPACE_LABEL) != Some(&ns) {
        return;
    }
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: c.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&cname, &dp).await {
        Ok(_) => info!(helmrelease = %name,
            "deleted HelmChart {cns}/{cname}, applied ahead of the release and left over at its deletion"),
        Err(kube::Error::Api(a)) if a.code == 404 || a.code == 409 => {}
        Err(e) => warn!(helmrelease = %name, "deleting HelmChart {cns}/{cname}: {e}"),
    }
}

fn ready_now(generation: Option<i64>, observed: Option<i64>, conds: &[Condition]) -> bool {
    generation == observed && conditions::is_true(conds, types::READY)
}

/// Watch and reconcile HelmReleases until the process's shutdown.
pub async fn run(process: crate::runtime::Process, settings: Settings) -> anyhow::Result<()> {
    let crate::runtime::Process {
        client,
        scope,
        shutdown,
        ..
    } = process.clone();
    let engine = HelmCli::new(settings.helm.clone())?;
    let (store, writer) = reflector::store::<HelmRelease>();
    let first_list = std::sync::Once::new();
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let (deps_store, wake_deps) = (store.clone(), wake.clone());
    let (chart_work, chart_worked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(charts_ahead(client.clone(), store.clone(), chart_worked));
    let (chart_seen, chart_deleted) = (chart_work.clone(), chart_work);
    let trigger = reflector::reflector(
        writer,
        watcher(scope.api::<HelmRelease>(&client), scope.watcher_config()),
    )
    .backoff(crate::runtime::watch_backoff())
    .inspect(move |e| {
        if matches!(e, Ok(watcher::Event::InitDone)) {
            first_list.call_once(|| {
                process.synced();
                info!("helm controller: caches synced");
            });
        }
        if let Ok(watcher::Event::Delete(h)) = e {
            let _ = chart_deleted.send(ChartWork::Deleted(Box::new(h.clone())));
        }
    })
    .applied_objects()
    .inspect(move |r| {
        if let Ok(h) = r {
            if chart_ahead(h).is_some() {
                let _ = chart_seen.send(ChartWork::Seen(ObjectRef::from_obj(h)));
            }
            let s = h.status.clone().unwrap_or_default();
            let ready = ready_now(h.metadata.generation, s.observed_generation, &s.conditions);
            let (ns, name) = (h.namespace().unwrap_or_default(), h.name_any());
            for d in dependents_to_wake(&deps_store.state(), "HelmRelease", &ns, &name, ready) {
                let _ = wake_deps.send(d);
            }
        }
    })
    .predicate_filter(wanted, PredicateConfig::default());
    // a Kustomization turning Ready wakes the HelmReleases waiting for it (any Kustomization:
    // a dependency may belong to another shard)
    let (ks_store, wake_ks) = (store.clone(), wake.clone());
    let every_shards_ks = watcher::Config::default().any_semantic();
    tokio::spawn(
        watcher(scope.api::<Kustomization>(&client), every_shards_ks)
            .backoff(crate::runtime::watch_backoff())
            .applied_objects()
            .for_each(move |r| {
                if let Ok(k) = r {
                    let s = k.status.clone().unwrap_or_default();
                    let ready =
                        ready_now(k.metadata.generation, s.observed_generation, &s.conditions);
                    let (ns, name) = (k.namespace().unwrap_or_default(), k.name_any());
                    for d in
                        dependents_to_wake(&ks_store.state(), "Kustomization", &ns, &name, ready)
                    {
                        let _ = wake_ks.send(d);
                    }
                }
                futures::future::ready(())
            }),
    );
    // a Canary's status change wakes the HelmReleases waiting for its run (every Canary,
    // whatever its shard label: a release of this shard may hold a Canary another analyses)
    let gate_waiters = Arc::new(crate::gitops::canary_gate::Waiters::default());
    let (waiters, wake_gated) = (gate_waiters.clone(), wake.clone());
    let (canaries, canary_writer) = reflector::store::<crate::api::Canary>();
    tokio::spawn(
        reflector::reflector(
            canary_writer,
            watcher(
                scope.api::<crate::api::Canary>(&client),
                watcher::Config::default().any_semantic(),
            ),
        )
        .backoff(crate::runtime::watch_backoff())
        // a deleted Canary too: its HelmRelease stops waiting for it
        .touched_objects()
        .for_each(move |r| {
            match r {
                Ok(c) => {
                    for (ns, name) in waiters.waiting_for(&c) {
                        let _ = wake_gated.send(ObjectRef::new(&name).within(&ns));
                    }
                }
                Err(e) => tracing::debug!("helm controller: canary watch: {e}"),
            }
            futures::future::ready(())
        }),
    );
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    let any = || watcher::Config::default().any_semantic();
    let (watches, mut changed) =
        crate::health::watch::Watches::new(client.clone(), scope.namespace.clone());
    // the engine's waits read the caches on a short tick; the changes are not needed, but a
    // watch stops when nobody receives them
    tokio::spawn(async move { while changed.recv().await.is_some() {} });
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        engine,
        applier: crate::apply::ssa::Applier::new(client.clone()),
        targets: Targets::new(
            client.clone(),
            settings.target.clone(),
            Flavour::Helm,
            ReleaseTarget::of_cluster,
        ),
        settings,
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into()),
        failures: Mutex::default(),
        canaries,
        scope_namespace: scope.namespace.clone(),
        gate_waiters,
        watches,
    });
    let concurrency = ctx.settings.concurrent;
    let (s4, s5) = (store.clone(), store.clone());
    // Flux's --watch-configs-label-selector: a labelled valuesFrom object changing upgrades
    // its releases at once instead of at the next interval
    let labelled = || watcher::Config::default().labels(WATCH_CONFIGS_SELECTOR);
    // a short shared backoff: kube pauses all of a controller's watches on any one's error
    Controller::for_stream(trigger, store)
        .trigger_backoff(crate::runtime::watch_backoff())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches(scope.api::<HelmChart>(&client), any(), move |r| {
            for_source(&s1, &r)
        })
        .watches(scope.api::<OCIRepository>(&client), any(), move |r| {
            for_source(&s2, &r)
        })
        .watches(scope.api::<ExternalArtifact>(&client), any(), move |r| {
            for_source(&s3, &r)
        })
        .watches(
            scope.api::<k8s_openapi::api::core::v1::ConfigMap>(&client),
            labelled(),
            move |r| using_values_from(&s4, "ConfigMap", &r),
        )
        .watches(
            scope.api::<k8s_openapi::api::core::v1::Secret>(&client),
            labelled(),
            move |r| using_values_from(&s5, "Secret", &r),
        )
        .reconcile_on(crate::runtime::received(woken))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("helm reconcile: {e}");
            }
        })
        .await;
    Ok(())
}

fn error_policy(hr: Arc<HelmRelease>, err: &Error, ctx: Arc<Ctx>) -> Requeue {
    warn!(helmrelease = %hr.name_any(), "reconcile failed: {err}");
    let key = (hr.namespace().unwrap_or_default(), hr.name_any());
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key).or_default();
        *n += 1;
        *n
    };
    Requeue::requeue(crate::gitops::reconcile_request::failure_backoff(
        n,
        hr.interval().unwrap_or(Duration::from_secs(60)),
    ))
}

async fn reconcile(hr: Arc<HelmRelease>, ctx: Arc<Ctx>) -> Result<Requeue, Error> {
    use futures::FutureExt;
    let name = hr.name_any();
    std::panic::AssertUnwindSafe(reconcile_one(hr, ctx.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(Error::Kube(format!(
                "reconcile of {name} panicked (see the log)"
            )))
        })
}

fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Kube(format!("{what}: {e}"))
}

fn cause_of(e: kube::Error) -> String {
    match e {
        kube::Error::Api(a) => a.message,
        e => e.to_string(),
    }
}

/// A failed prelude step: Flux's reason and message; `terminal`: `Stalled`; `waiting`: retried
/// after that without a Warning Event, unless `warn` (the chart source itself failed: a Warning
/// each time the message changes, so `flux events --for HelmRelease/…` shows why — Flux leaves
/// the Warning on the HelmChart only).
struct Failure {
    reason: &'static str,
    message: String,
    terminal: bool,
    waiting: Option<Duration>,
    warn: bool,
    /// Retried with the failure backoff (Flux returns the error), not at `spec.interval`.
    backoff: bool,
}

fn failure(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        terminal: false,
        waiting: None,
        warn: false,
        backoff: false,
    }
}

impl From<TargetError> for Failure {
    /// helm-controller's `RESTClientError` (retried with backoff), or the refused
    /// `configMapRef` (`Stalled`); a Warning Event either way.
    fn from(e: TargetError) -> Self {
        Failure {
            terminal: e.terminal,
            backoff: !e.terminal,
            ..failure(e.reason, e.message)
        }
    }
}

fn waiting(reason: &'static str, message: impl Into<String>, after: Duration) -> Failure {
    Failure {
        waiting: Some(after),
        ..failure(reason, message)
    }
}

fn terminal(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        terminal: true,
        ..failure(reason, message)
    }
}

/// An event to emit after the status write: (warning, reason, message).
type Note = (bool, String, String);

/// What the prelude resolved: the chart on disk and what the next release is made of.
struct Prepared {
    _work: tempfile::TempDir,
    /// The cluster of the release (remote with `spec.kubeConfig`).
    target: ReleaseTarget,
    chart_path: std::path::PathBuf,
    chart_name: String,
    /// `lastAttemptedRevision`: the chart's version, `+<12 hex>` for OCI.
    chart_version: String,
    /// The chart's own version, as Helm records it.
    release_version: String,
    oci_digest: Option<String>,
    values: Value,
    config_digest: String,
}

async fn reconcile_one(hr: Arc<HelmRelease>, ctx: Arc<Ctx>) -> Result<Requeue, Error> {
    let ns = hr.namespace().unwrap_or_default();
    let api: Api<HelmRelease> = Api::namespaced(ctx.client.clone(), &ns);
    // Read our own writes: a wake queued while the last status was being written runs on the
    // watch cache's object, which may predate that write. Its history then lacks the release
    // just installed, and the release in storage reads as unmanaged: a needless upgrade to
    // revision 2 (seen in CI). One GET per reconcile, next to the Helm work, gives the object
    // as it is now.
    let hr = match api
        .get_opt(&hr.name_any())
        .await
        .map_err(kube_err("get HelmRelease"))?
    {
        Some(now) => Arc::new(now),
        None => return Ok(Requeue::await_change()),
    };
    if hr.metadata.deletion_timestamp.is_some() || hr.suspended() {
        ctx.gate_waiters.remove(&(ns.clone(), hr.name_any()));
    }
    if hr.metadata.deletion_timestamp.is_some() {
        return finalize(&hr, &api, &ctx).await;
    }
    let mut hr = hr;
    if !hr.finalizers().iter().any(|f| f == FINALIZER) {
        let op = if hr.finalizers().is_empty() {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        };
        hr = Arc::new(patch_json(&api, &hr, op).await?);
    }
    if hr.suspended() {
        return Ok(Requeue::await_change());
    }
    let now = Time(Timestamp::now());
    let generation = hr.metadata.generation.unwrap_or_default();
    let old = hr.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut written = old.clone();
    let mut events: Vec<Note> = vec![];
    if let Some(token) = requested_at(hr.metadata.annotations.as_ref()) {
        status.last_handled_reconcile_at = Some(token.to_string());
    }
    let unsupported = unsupported_fields(&hr);
    if unsupported.is_empty() {
        conditions::remove_condition(&mut status.conditions, UNSUPPORTED);
    } else {
        let message = format!(
            "accepted but not acted on, ignored: {}",
            unsupported.join(", ")
        );
        if conditions::get(&status.conditions, UNSUPPORTED).is_none_or(|c| c.message != message) {
            events.push((true, UNSUPPORTED_FIELDS.into(), message.clone()));
        }
        conditions::mark_true(
            &mut status.conditions,
            UNSUPPORTED,
            UNSUPPORTED_FIELDS,
            &message,
            generation,
            &now,
        );
    }
    let prepared = match refused(&hr) {
        Some(m) => Err(terminal(UNSUPPORTED_FIELD, m)),
        None => prelude(&hr, &ctx, &mut status).await,
    };
    let requeue = match prepared {
        Err(f) => {
            conditions::mark_false(
                &mut status.conditions,
                types::READY,
                f.reason,
                &f.message,
                generation,
                &now,
            );
            if f.terminal {
                conditions::remove_condition(&mut status.conditions, types::RECONCILING);
                conditions::mark_true(
                    &mut status.conditions,
                    types::STALLED,
                    f.reason,
                    &f.message,
                    generation,
                    &now,
                );
                status.observed_generation = Some(generation);
            } else {
                conditions::remove_condition(&mut status.conditions, types::STALLED);
            }
            let changed = conditions::get(&old.conditions, types::READY)
                .is_none_or(|c| c.message != f.message);
            if f.waiting.is_none()
                || (changed && (f.warn || f.reason == reasons::DEPENDENCY_NOT_READY))
            {
                events.push((
                    f.waiting.is_none() || f.warn,
                    f.reason.into(),
                    f.message.clone(),
                ));
            }
            if f.backoff {
                write_status(&api, &hr, &written, &status).await?;
                emit_all(&ctx, &hr, events, status.last_attempted_revision.as_deref()).await;
                return Err(Error::Kube(f.message));
            }
            if f.terminal {
                Requeue::await_change()
            } else if let Some(after) = f.waiting {
                Requeue::requeue(after)
            } else {
                hr.interval()
                    .map_or(Requeue::await_change(), Requeue::requeue)
            }
        }
        Ok(p) => {
            match release(
                &hr,
                &ctx,
                &api,
                &mut status,
                &mut written,
                &mut events,
                &p,
                &now,
            )
            .await
            {
                Ok(r) => canary_gate(&hr, &ctx, &old, &mut status, &mut events, &now, r).await,
                Err(e) => {
                    write_status(&api, &hr, &written, &status).await?;
                    emit_all(&ctx, &hr, events, status.last_attempted_revision.as_deref()).await;
                    return Err(e);
                }
            }
        }
    };
    if conditions::get(&status.conditions, types::READY)
        .is_none_or(|c| c.reason != crate::gitops::canary_gate::CANARY_PROGRESSING)
    {
        ctx.gate_waiters.remove(&(ns.clone(), hr.name_any()));
    }
    write_status(&api, &hr, &written, &status).await?;
    emit_all(&ctx, &hr, events, status.last_attempted_revision.as_deref()).await;
    Ok(requeue)
}

async fn emit_all(ctx: &Ctx, hr: &HelmRelease, events: Vec<Note>, revision: Option<&str>) {
    for (warning, reason, message) in events {
        emit_event(ctx, hr, warning, &reason, &message, revision).await;
    }
}

/// Flux's preliminaries up to the release loop: the HelmChart, dependencies, the source's
/// artifact, values, the chart on disk.
async fn prelude(
    hr: &HelmRelease,
    ctx: &Ctx,
    status: &mut HelmReleaseStatus,
) -> Result<Prepared, Failure> {
    let wait = ctx.settings.requeue_dependency;
    // the generated HelmChart (or the stale one gone with chartRef)
    match chart::helm_chart(hr) {
        Some(obj) => {
            let (cns, cname) = (
                hr.helm_chart_namespace().unwrap_or_default(),
                hr.helm_chart_name(),
            );
            let hc: Api<HelmChart> = Api::namespaced(ctx.client.clone(), &cns);
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            hc.patch(&cname, &pp, &Patch::Apply(&obj))
                .await
                .map_err(|e| {
                    failure(
                        reasons::ARTIFACT_FAILED,
                        format!(
                            "failed to create HelmChart '{cns}/{cname}': {}",
                            cause_of(e)
                        ),
                    )
                })?;
            status.helm_chart = Some(format!("{cns}/{cname}"));
        }
        None => {
            if let Some((cns, cname)) = hr.status_helm_chart() {
                let hc: Api<HelmChart> = Api::namespaced(ctx.client.clone(), cns);
                match hc.delete(cname, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(a)) if a.code == 404 => {}
                    Err(e) => {
                        return Err(failure(
                            reasons::ARTIFACT_FAILED,
                            format!(
                                "failed to delete HelmChart '{cns}/{cname}': {}",
                                cause_of(e)
                            ),
                        ));
                    }
                }
            }
            status.helm_chart = None;
        }
    }
    dependencies(hr, &ctx.client, wait).await?;
    let (artifact, is_oci) = source_artifact(hr, &ctx.client, wait).await?;
    // values
    let refs = values_refs(hr);
    let ns = hr.namespace().unwrap_or_default();
    let values = super::values::fetch_and_compose(&ctx.client, &ns, &refs, hr.spec.values.as_ref())
        .await
        .map_err(|e| failure(VALUES_ERROR, e.to_string()))?;
    let config_digest = super::values::config_digest(&values);
    // the chart
    let work = tempfile::Builder::new()
        .prefix("pennant-hr-")
        .tempdir()
        .map_err(|e| failure(reasons::ARTIFACT_FAILED, e.to_string()))?;
    let chart_path = work.path().join("chart.tgz");
    crate::source::fetch::download(&artifact, &chart_path)
        .await
        .map_err(|m| failure(reasons::ARTIFACT_FAILED, m))?;
    let (chart_name, version) = read_chart_meta(&chart_path).map_err(|m| {
        failure(
            reasons::ARTIFACT_FAILED,
            format!("failed to load chart: {m}"),
        )
    })?;
    let oci_digest = is_oci.then(|| chart::oci_revision_digest(&artifact.revision).to_string());
    let chart_version = chart::chart_version(&version, oci_digest.as_deref());
    // Flux's order: the REST client getter after the chart is loaded, before any release
    // action; sources, values and status stay on the local cluster
    let target = target_of(hr, ctx).await?;
    Ok(Prepared {
        _work: work,
        target,
        chart_path,
        chart_name,
        chart_version,
        release_version: version,
        oci_digest,
        values,
        config_digest,
    })
}

/// `spec.valuesFrom` as [`super::values`] reads it (entries of an unknown kind left out).
pub fn values_refs(hr: &HelmRelease) -> Vec<ValuesRef<'_>> {
    hr.spec
        .values_from
        .iter()
        .filter_map(|v| {
            Some(ValuesRef {
                kind: ValuesKind::parse(&v.kind)?,
                name: &v.name,
                values_key: v.values_key.as_deref(),
                target_path: v.target_path.as_deref(),
                optional: v.optional.unwrap_or(false),
                literal: v.literal.unwrap_or(false),
            })
        })
        .collect()
}

/// The chart source's ready artifact (and whether it is an OCIRepository's), read only; else
/// `(reason, message)`: `SourceNotReady` (missing, not ready) or `ArtifactFailed`.
pub async fn chart_artifact(
    hr: &HelmRelease,
    client: &Client,
) -> Result<(Artifact, bool), (&'static str, String)> {
    source_artifact(hr, client, Duration::ZERO)
        .await
        .map_err(|f| (f.reason, f.message))
}

/// `name` and `version` of the chart packaged at `tgz` (its top-level `*/Chart.yaml`).
pub fn read_chart_meta(tgz: &Path) -> Result<(String, String), String> {
    use std::io::Read;
    let f = std::fs::File::open(tgz).map_err(|e| e.to_string())?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() == 2 && path.file_name().is_some_and(|n| n == "Chart.yaml") {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| e.to_string())?;
            let meta: Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
            let get = |k: &str| match &meta[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            return Ok((get("name"), get("version")));
        }
    }
    Err("Chart.yaml file is missing".into())
}

/// The chart source's artifact (and whether it is an OCIRepository's), or `SourceNotReady`.
async fn source_artifact(
    hr: &HelmRelease,
    client: &Client,
    wait: Duration,
) -> Result<(Artifact, bool), Failure> {
    let (kind, ns, name) = chart_source_key(hr);
    async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        Api::<K>::namespaced(client.clone(), ns).get_opt(name).await
    }
    /// `(artifact, ready, message, failed)`; `failed`: `Ready=False` for the generation it
    /// describes (not merely in progress).
    fn state<S: Source + Resource>(s: &S) -> (Option<Artifact>, bool, String, bool) {
        let ready = ready_now(
            s.meta().generation,
            source_observed_generation(s),
            s.conditions(),
        );
        // A generation the source has not reconciled yet: its Ready message describes the old
        // spec (Flux repeats it, e.g. "pulled 'app' chart with version '1.0.0'" for a chart
        // just renamed), so say what is happening instead; its next status wakes us.
        let generation = s.meta().generation;
        let (message, failed) =
            if generation.is_some_and(|g| Some(g) != source_observed_generation(s)) {
                let m = format!(
                    "generation {} not reconciled yet",
                    generation.unwrap_or_default()
                );
                (m, false)
            } else {
                conditions::get(s.conditions(), types::READY).map_or_else(
                    || (String::new(), false),
                    |c| (c.message.clone(), c.status == conditions::FALSE),
                )
            };
        (s.artifact().cloned(), ready, message, failed)
    }
    let got = match kind.as_str() {
        "HelmChart" => get::<HelmChart>(client, &ns, &name)
            .await
            .map(|o| o.map(|s| state(&s))),
        "OCIRepository" => get::<OCIRepository>(client, &ns, &name)
            .await
            .map(|o| o.map(|s| state(&s))),
        "ExternalArtifact" => get::<ExternalArtifact>(client, &ns, &name)
            .await
            .map(|o| o.map(|s| state(&s))),
        other => {
            return Err(terminal(
                reasons::ARTIFACT_FAILED,
                format!("unsupported source kind '{other}'"),
            ));
        }
    }
    .map_err(|e| {
        failure(
            reasons::ARTIFACT_FAILED,
            format!("could not get {kind} '{ns}/{name}': {}", cause_of(e)),
        )
    })?;
    let after = crate::util::go_duration(wait.as_millis() as f64);
    match got {
        None => Err(waiting(
            SOURCE_NOT_READY,
            format!("{kind} '{ns}/{name}' not found, retrying in {after}"),
            wait,
        )),
        Some((Some(a), true, _, _)) => Ok((a, kind == "OCIRepository")),
        Some((_, _, m, failed)) => Err(Failure {
            warn: failed,
            ..waiting(
                SOURCE_NOT_READY,
                format!("{kind} '{ns}/{name}' is not ready: {m}"),
                wait,
            )
        }),
    }
}

fn source_observed_generation<S: Source + Resource>(s: &S) -> Option<i64> {
    Some(s.observed_generation())
}

/// `spec.dependsOn` (HelmReleases, and Kustomizations with pennant's `kind`), as Flux's
/// `checkDependencies`; a cycle is `Stalled` ([`DEPENDENCY_CYCLE`]).
async fn dependencies(hr: &HelmRelease, client: &Client, wait: Duration) -> Result<(), Failure> {
    use crate::gitops::depends_on::{Dependency, DependencyId, DependencyKind};
    if hr.spec.depends_on.is_empty() {
        return Ok(());
    }
    let refs = |owner: &DependencyId, k: &Value| -> Vec<DependencyId> {
        k["spec"]["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let kind = match d["kind"].as_str().filter(|k| !k.is_empty()) {
                    Some("HelmRelease") => DependencyKind::HelmRelease,
                    Some("Kustomization") => DependencyKind::Kustomization,
                    _ => owner.kind,
                };
                let name = d["name"].as_str().unwrap_or_default();
                DependencyId::of_reference(owner, kind, d["namespace"].as_str(), name)
            })
            .collect()
    };
    let me = DependencyId::new(
        DependencyKind::HelmRelease,
        &hr.namespace().unwrap_or_default(),
        &hr.name_any(),
    );
    let dependent = serde_json::to_value(hr).unwrap_or_default();
    let mine = refs(&me, &dependent);
    let mut graph = BTreeMap::from([(me.clone(), mine.clone())]);
    let mut objects: BTreeMap<DependencyId, Option<Value>> = BTreeMap::new();
    let mut queue: std::collections::VecDeque<DependencyId> = mine.clone().into();
    while let Some(id) = queue.pop_front() {
        if id == me || objects.contains_key(&id) || objects.len() >= 64 {
            continue;
        }
        let got = match id.kind {
            DependencyKind::Kustomization => {
                Api::<Kustomization>::namespaced(client.clone(), &id.namespace)
                    .get_opt(&id.name)
                    .await
                    .map(|k| k.map(|k| serde_json::to_value(k).unwrap_or_default()))
            }
            DependencyKind::HelmRelease => {
                Api::<HelmRelease>::namespaced(client.clone(), &id.namespace)
                    .get_opt(&id.name)
                    .await
                    .map(|k| k.map(|k| serde_json::to_value(k).unwrap_or_default()))
            }
        }
        .map_err(|e| {
            waiting(
                reasons::DEPENDENCY_NOT_READY,
                format!("unable to get dependency '{id}': {}", cause_of(e)),
                wait,
            )
        })?;
        if let Some(k) = &got {
            let next = refs(&id, k);
            queue.extend(next.iter().cloned());
            graph.insert(id.clone(), next);
        }
        objects.insert(id, got);
    }
    if let Some(cycle) = find_cycle(&graph, &me) {
        return Err(terminal(DEPENDENCY_CYCLE, cycle.to_string()));
    }
    let deps: Vec<Dependency<'_>> = hr
        .spec
        .depends_on
        .iter()
        .zip(mine)
        .map(|(d, id)| Dependency {
            object: objects.get(&id).and_then(Option::as_ref),
            id,
            ready_expr: d.ready_expr.as_deref().filter(|e| !e.is_empty()),
        })
        .collect();
    check_dependencies(&dependent, None, &deps, &eval_ready_expr, false)
        .map_err(|m| waiting(reasons::DEPENDENCY_NOT_READY, m, wait))
}

/// The release target of `hr`: without `spec.kubeConfig` the local cluster (helm as the
/// impersonated account when one is set; storage, drift and the Canaries read with the
/// controller's identity); with it the remote cluster of the kubeconfig Secret, everything
/// through the impersonating remote client ([`crate::gitops::target::Targets::target`]).
async fn target_of(hr: &HelmRelease, ctx: &Ctx) -> Result<ReleaseTarget, TargetError> {
    if hr.spec.kube_config.is_some() {
        return ctx.targets.target(&target_spec(hr)).await;
    }
    Ok(ReleaseTarget {
        engine: Target {
            client: ctx.client.clone(),
            kubeconfig: None,
            as_user: impersonated_user(hr, ctx.settings.target.default_service_account.as_deref()),
            watches: Some(ctx.watches.clone()),
        },
        applier: ctx.applier.clone(),
    })
}

/// The release `hr` manages (name and namespace; the helm CLI stores it there).
pub fn release_ref(hr: &HelmRelease) -> ReleaseRef {
    ReleaseRef {
        name: hr.release_name(),
        namespace: hr.release_namespace(),
    }
}

fn token(hr: &HelmRelease, key: &str) -> Option<String> {
    hr.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

fn counters_of(s: &HelmReleaseStatus) -> Counters {
    Counters {
        failures: s.failures.unwrap_or(0),
        install_failures: s.install_failures.unwrap_or(0),
        upgrade_failures: s.upgrade_failures.unwrap_or(0),
    }
}

fn set_counters(s: &mut HelmReleaseStatus, c: Counters) {
    let opt = |n: i64| (n != 0).then_some(n);
    s.failures = opt(c.failures);
    s.install_failures = opt(c.install_failures);
    s.upgrade_failures = opt(c.upgrade_failures);
}

fn last_action(s: &HelmReleaseStatus) -> Option<decide::ReleaseAction> {
    match s.last_attempted_release_action.as_deref() {
        Some("install") => Some(decide::ReleaseAction::Install),
        Some("upgrade") => Some(decide::ReleaseAction::Upgrade),
        _ => None,
    }
}

/// Record `r` as the newest `status.history` entry (replacing the entry of the same version),
/// keeping at most `max` entries (0: unlimited). PURE.
pub fn record_snapshot(history: &mut Vec<Snapshot>, snap: Snapshot, max: usize) {
    history.retain(|s| !(s.version == snap.version && s.name == snap.name));
    history.insert(0, snap);
    history.sort_by_key(|s| std::cmp::Reverse(s.version));
    if max > 0 {
        history.truncate(max);
    }
}

/// Update the status of the `history` entries whose revision Helm storage still holds (the
/// newest entry keeps its digest: it is what the next reconcile verifies). PURE.
pub fn refresh_history(history: &mut [Snapshot], stored: &[Release]) {
    for (i, s) in history.iter_mut().enumerate() {
        if let Some(r) = stored
            .iter()
            .find(|r| r.version as i64 == s.version && r.name == s.name)
        {
            s.status = r.info.status.as_str().to_string();
            s.deleted = r.info.deleted.map(Time);
            if i > 0 {
                s.digest = chart::release_digest(r);
            }
        }
    }
}

/// Apply a decision's history edit to the API snapshots (by version). PURE.
pub fn apply_history_edit(history: &mut Vec<Snapshot>, edit: decide::HistoryEdit) {
    let mut ds: Vec<decide::Snapshot> = history.iter().map(chart::to_decide).collect();
    edit.apply(&mut ds);
    let keep: Vec<u32> = ds.iter().map(|s| s.revision).collect();
    let mut out: Vec<Snapshot> = keep
        .iter()
        .filter_map(|v| history.iter().find(|s| s.version == *v as i64).cloned())
        .collect();
    if edit == decide::HistoryEdit::Keep {
        out = history.clone();
    }
    *history = out;
}

/// The release: target check, counters, `lastAttempted*`, then the AtomicRelease loop.
#[allow(clippy::too_many_arguments)]
async fn release(
    hr: &HelmRelease,
    ctx: &Ctx,
    api: &Api<HelmRelease>,
    status: &mut HelmReleaseStatus,
    written: &mut HelmReleaseStatus,
    events: &mut Vec<Note>,
    p: &Prepared,
    now: &Time,
) -> Result<Requeue, Error> {
    let generation = hr.metadata.generation.unwrap_or_default();
    let rt = &p.target;
    let target = rt.engine.clone();
    let rref = release_ref(hr);
    let policy = chart::policy(hr, ctx.settings.default_to_retry_on_failure);
    let interval = hr.interval().unwrap_or(Duration::from_secs(600));
    // Flux's step 8: the release moved (or its chart was renamed): the old one goes first
    if let Some(change) = chart::target_change(hr, &p.chart_name) {
        let (TargetChange::Moved(message) | TargetChange::ChartRenamed(message)) = &change;
        let cur = &status.history[0];
        let old = ReleaseRef {
            name: cur.name.clone(),
            namespace: cur.namespace.clone(),
        };
        events.push((false, "ReleaseTargetChanged".into(), message.clone()));
        let req = uninstall_request(hr, old, &policy);
        if let Err(e) = ctx.engine.uninstall(&target, &req).await
            && !e.to_string().contains("not found")
        {
            let m = format!("failed to uninstall old release: {e}");
            events.push((true, UNINSTALL_FAILED.into(), m.clone()));
            conditions::mark_false(
                &mut status.conditions,
                types::READY,
                UNINSTALL_FAILED,
                &m,
                generation,
                now,
            );
            return Ok(Requeue::requeue(Duration::from_secs(30)));
        }
        status.history.clear();
        status.storage_namespace = None;
        set_counters(status, Counters::default());
        for t in [
            decide::condition_types::RELEASED,
            decide::condition_types::REMEDIATED,
            decide::condition_types::TEST_SUCCESS,
        ] {
            conditions::remove_condition(&mut status.conditions, t);
        }
        return Ok(Requeue::requeue(Duration::ZERO));
    }
    // counters
    let reset_token = token(hr, RESET_REQUESTED_AT_ANNOTATION);
    let force_token = token(hr, FORCE_REQUESTED_AT_ANNOTATION);
    let inputs = decide::AttemptInputs {
        generation,
        last_attempted_generation: status.last_attempted_generation.unwrap_or_default(),
        chart_version: p.chart_version.clone(),
        last_attempted_revision: status.last_attempted_revision.clone().unwrap_or_default(),
        config_digest: p.config_digest.clone(),
        last_attempted_config_digest: status
            .last_attempted_config_digest
            .clone()
            .unwrap_or_default(),
        reset_requested: reset_token.is_some() && reset_token != status.last_handled_reset_at,
    };
    let reset = decide::reset_counters_needed(&inputs);
    let force_requested = force_token.is_some() && force_token != status.last_handled_force_at;
    if reset.is_some() {
        set_counters(status, Counters::default());
    }
    if reset_token.is_some() {
        status.last_handled_reset_at = reset_token;
    }
    if force_token.is_some() {
        status.last_handled_force_at = force_token;
    }
    let was_stalled = conditions::is_true(&status.conditions, types::STALLED);
    status.last_attempted_generation = Some(generation);
    status.last_attempted_revision = Some(p.chart_version.clone());
    status.last_attempted_revision_digest = p.oci_digest.clone();
    status.last_attempted_config_digest = Some(p.config_digest.clone());
    if !decide::resume_after_stall(was_stalled, reset, force_requested) {
        return Ok(Requeue::requeue(interval));
    }
    conditions::remove_condition(&mut status.conditions, types::STALLED);
    let desired = Desired {
        chart_name: p.chart_name.clone(),
        chart_version: chart::desired_chart_version(
            &p.release_version,
            &p.chart_version,
            p.oci_digest.as_deref(),
            status.history.first().and_then(|s| s.oci_digest.as_deref()),
        ),
        config_digest: p.config_digest.clone(),
    };
    let max_history = hr.max_history().max(0) as usize;
    let mut run = AlreadyRun::default();
    let mut force = force_requested;
    // Helm storage as read right after the last action (for its history, below): the next
    // step starts from it instead of listing and decoding the same Secrets again
    let mut read_after_action: Option<Option<Release>> = None;
    let next = loop {
        let latest = match read_after_action.take() {
            Some(latest) => latest,
            None => ctx
                .engine
                .latest(&target, &rref)
                .await
                .map_err(|e| Error::Kube(format!("read release storage: {e}")))?,
        };
        let (obs, drift_report) =
            observe(hr, status, latest.as_ref(), &desired, force, &rref, rt, ctx).await?;
        let step = decide::next_step(&obs, &policy, &run);
        info!(helmrelease = %hr.name_any(), state = ?step.state.kind, next = ?step.next,
            "determined next Helm action based on state");
        apply_history_edit(&mut status.history, step.history);
        let newest = status.history.first().map(chart::to_decide);
        decide::apply_state_effect(
            &mut status.conditions,
            &step.effect,
            newest.as_ref(),
            &policy,
            generation,
            now,
        );
        if let decide::StateEffect::Drifted { message } = &step.effect {
            // Flux's Warning in `warn` and `enabled` mode alike, for alerting
            events.push((
                true,
                decide::reasons::DRIFT_DETECTED.into(),
                message.clone(),
            ));
        }
        let action = match step.next {
            Next::Run(a) => a,
            other => break other,
        };
        let prep = decide::prepare(&action, &policy);
        conditions::mark_true(
            &mut status.conditions,
            types::RECONCILING,
            reasons::PROGRESSING,
            &prep.reconciling_message,
            generation,
            now,
        );
        if let Some(m) = &prep.ready_unknown {
            conditions::set_condition(
                &mut status.conditions,
                types::READY,
                conditions::UNKNOWN,
                reasons::PROGRESSING,
                m,
                generation,
                now,
            );
        }
        if let Some(a) = prep.last_action {
            status.last_attempted_release_action = Some(a.as_str().to_string());
        }
        if prep.clear_history {
            status.history.clear();
        }
        for t in prep.remove_conditions {
            conditions::remove_condition(&mut status.conditions, t);
        }
        if write_status(api, hr, written, status).await.is_ok() {
            *written = status.clone();
        }
        let counters = counters_of(status);
        let started = Instant::now();
        if let Action::CorrectDrift = action {
            let full = status
                .history
                .first()
                .map(|s| format!("{}/{}.v{}", s.namespace, s.name, s.version))
                .unwrap_or_default();
            if let Some(report) = &drift_report {
                let c =
                    super::drift::correct(&rt.applier, report, super::drift::HELM_FIELD_MANAGER)
                        .await;
                let changes = crate::apply::ssa::change_set_message(&c.applied);
                if c.errors.is_empty() {
                    events.push((
                        false,
                        super::drift::DRIFT_CORRECTED_REASON.into(),
                        decide::drift_corrected_message(&full, &changes),
                    ));
                } else {
                    events.push((
                        true,
                        super::drift::DRIFT_CORRECTION_FAILED_REASON.into(),
                        decide::drift_correction_failed_message(
                            &full,
                            &c.errors.join("\n"),
                            &changes,
                        ),
                    ));
                }
            }
            run.insert(action.kind());
            continue;
        }
        let (result, rls, logs) =
            run_action(hr, ctx, rt, &rref, &action, &policy, p, latest.as_ref()).await;
        if matches!(action, Action::Install | Action::Upgrade) {
            status.last_attempted_release_action_duration = Some(crate::util::go_duration(
                started.elapsed().as_millis() as f64,
            ));
        }
        let tested = matches!(action, Action::Test);
        let mut unlocked = None;
        if let Some(r) = &rls {
            let keep_tests = !matches!(action, Action::Install | Action::Upgrade)
                && status
                    .history
                    .iter()
                    .find(|s| s.version == r.version as i64)
                    .is_some_and(|s| s.test_hooks.is_some());
            let mut snap = chart::snapshot_of(r, p.oci_digest.as_deref(), tested || keep_tests);
            snap.action = Some(action.name().to_string());
            if matches!(action, Action::Unlock { .. }) {
                unlocked = Some(chart::to_decide(&snap));
            }
            if !matches!(action, Action::UninstallRemediation)
                || r.info.status.as_str() == "uninstalled"
            {
                record_snapshot(&mut status.history, snap, max_history.max(1));
            }
            status.storage_namespace = Some(rref.namespace.clone());
        }
        // the objects of the release now deployed (none once uninstalled)
        match &rls {
            Some(r) if r.info.status.as_str() == "deployed" => {
                if let Ok(objs) =
                    super::drift::desired_objects(&rt.applier, &r.manifest, &r.name, &r.namespace)
                        .await
                {
                    status.inventory = Some(chart::inventory_of(&objs));
                }
            }
            Some(r) if r.info.status.as_str() == "uninstalled" => status.inventory = None,
            None if matches!(action, Action::UninstallRemediation) => status.inventory = None,
            _ => {}
        }
        // Helm rewrote the older revisions (superseded): the history follows, as Flux's
        // release observer
        if let Ok(all) = ctx.engine.history(&target, &rref).await {
            refresh_history(&mut status.history, &all);
            read_after_action = Some(all.into_iter().next());
        }
        let newest = status.history.first().map(chart::to_decide);
        let octx = OutcomeContext {
            policy: &policy,
            release_name: &rref.name,
            release_namespace: &rref.namespace,
            desired: &desired,
            counters,
            last_action: last_action(status),
            latest: newest.as_ref(),
            unlocked: unlocked.as_ref(),
        };
        let out = decide::outcome(&action, &result, &octx);
        set_counters(status, out.counters);
        out.apply_conditions(&mut status.conditions, &policy, generation, now);
        // after every action, as Flux's summarize: a changed post-renderer is acted on once
        record_post_render_digests(status, hr);
        if let Some(e) = &out.event {
            let message = if e.warning && !logs.is_empty() {
                decide::with_logs(&e.message, &logs)
            } else {
                e.message.clone()
            };
            events.push((e.warning, e.reason.to_string(), message));
        }
        run.insert(action.kind());
        if matches!(action, Action::Install | Action::Upgrade) {
            force = false;
        }
        if let Some(n) = out.stop {
            break n;
        }
        if out.retry_error {
            match decide::on_action_error(&policy, last_action(status)) {
                Some(n) => break n,
                None => {
                    let m = match &result {
                        ActionResult::Failed { error, .. } => error.clone(),
                        ActionResult::Succeeded => String::new(),
                    };
                    if conditions::is_true(&status.conditions, types::READY) {
                        conditions::mark_false(
                            &mut status.conditions,
                            types::READY,
                            RECONCILE_ERROR,
                            &m,
                            generation,
                            now,
                        );
                    }
                    conditions::remove_condition(&mut status.conditions, types::RECONCILING);
                    return Err(Error::Kube(m));
                }
            }
        }
    };
    // the loop's end
    let ready_message = conditions::get(&status.conditions, types::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    match decide::reconciling_for(&next, &ready_message) {
        Some((reason, message)) => conditions::mark_true(
            &mut status.conditions,
            types::RECONCILING,
            reason,
            &message,
            generation,
            now,
        ),
        None => conditions::remove_condition(&mut status.conditions, types::RECONCILING),
    }
    match &next {
        Next::Stalled { reason, message } => {
            conditions::mark_false(
                &mut status.conditions,
                types::READY,
                reason.as_str(),
                message,
                generation,
                now,
            );
            conditions::mark_true(
                &mut status.conditions,
                types::STALLED,
                reason.as_str(),
                message,
                generation,
                now,
            );
            status.observed_generation = Some(generation);
            events.push((true, reason.as_str().to_string(), message.clone()));
        }
        Next::StateError(m) => {
            let message = format!("Could not determine release state: {m}");
            conditions::mark_false(
                &mut status.conditions,
                types::READY,
                STATE_ERROR,
                &message,
                generation,
                now,
            );
            events.push((true, STATE_ERROR.into(), message.clone()));
            return Err(Error::Kube(message));
        }
        // a failed remediation: the error's backoff, never at once (error_policy)
        Next::Backoff(m) => return Err(Error::Kube(m.clone())),
        Next::Done => {
            decide::summarize(&mut status.conditions, &policy, generation, now);
            status.observed_generation = Some(generation);
            record_post_render_digests(status, hr);
            if conditions::is_true(&status.conditions, types::READY) {
                conditions::remove_condition(&mut status.conditions, types::STALLED);
            }
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(hr.namespace().unwrap_or_default(), hr.name_any()));
        }
        _ => {}
    }
    let after = decide::requeue_after(&next, interval);
    Ok(match after {
        Some(d) if d.is_zero() => Requeue::requeue(Duration::from_millis(100)),
        Some(d) => Requeue::requeue(d),
        None => Requeue::requeue(Duration::from_secs(5)),
    })
}

/// Build the decision's view of storage and status.
#[allow(clippy::too_many_arguments)]
async fn observe(
    hr: &HelmRelease,
    status: &HelmReleaseStatus,
    latest: Option<&Release>,
    desired: &Desired,
    force: bool,
    rref: &ReleaseRef,
    rt: &ReleaseTarget,
    ctx: &Ctx,
) -> Result<(Observed, Option<super::drift::DriftReport>), Error> {
    let target = &rt.engine;
    let history: Vec<decide::Snapshot> = status.history.iter().map(chart::to_decide).collect();
    let latest_match = match (latest, status.history.first()) {
        (Some(r), Some(s)) if s.version == r.version as i64 => {
            if s.digest == chart::release_digest(r) || s.test_hooks.is_some() {
                SnapshotMatch::Matches
            } else {
                SnapshotMatch::NotObserved
            }
        }
        (Some(_), Some(_)) => SnapshotMatch::NotObserved,
        _ => SnapshotMatch::Matches,
    };
    let policy = chart::policy(hr, ctx.settings.default_to_retry_on_failure);
    let mut rollback_target = TargetCheck::Verified;
    if let Some(c) = decide::rollback_candidate(&history, &policy, last_action(status)) {
        let all = ctx.engine.history(target, rref).await.unwrap_or_default();
        rollback_target = match all.iter().find(|r| r.version == c.revision) {
            None => TargetCheck::Disappeared,
            Some(_) => TargetCheck::Verified,
        };
    }
    let generation = hr.metadata.generation.unwrap_or_default();
    let mut report = None;
    if policy.drift != decide::DriftMode::Disabled
        && latest_match == SnapshotMatch::Matches
        && !status.history.is_empty()
        && let Some(r) = latest.filter(|r| r.info.status.as_str() == "deployed")
    {
        report = detect_drift(hr, r, rt, ctx).await;
    }
    let drift = report
        .as_ref()
        .filter(|r| r.has_drift())
        .map(|r| r.summary());
    let obs = Observed {
        release_name: rref.name.clone(),
        release_namespace: rref.namespace.clone(),
        latest: latest.map(|r| ReleaseInfo {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            revision: r.version,
            status: decide::ReleaseStatus::parse(r.info.status.as_str()),
            chart_name: r.chart.name.clone(),
            chart_version: r.chart.version.clone(),
            last_deployed: r.info.last_deployed,
        }),
        latest_match,
        history,
        rollback_target,
        desired: desired.clone(),
        new_generation: status.observed_generation != Some(generation),
        post_renderers_changed: postrender::post_renderers_digest(&hr.spec.post_renderers)
            != status.observed_post_renderers_digest,
        common_metadata_changed: postrender::common_metadata_digest(
            hr.spec.common_metadata.as_ref(),
        ) != status.observed_common_metadata_digest,
        drift,
        counters: counters_of(status),
        last_action: last_action(status),
        force_requested: force,
        in_flight: decide::in_flight_action(&status.conditions),
        now: Timestamp::now(),
    };
    Ok((obs, report))
}

/// The drift of the release `r` ([`super::drift::detect`] with `spec.driftDetection`); `None`
/// when it could not be computed (logged; the release is then taken as in sync, as Flux's
/// graceful detection).
async fn detect_drift(
    hr: &HelmRelease,
    r: &Release,
    rt: &ReleaseTarget,
    ctx: &Ctx,
) -> Option<super::drift::DriftReport> {
    use super::drift;
    let settings: drift::DriftDetection = hr
        .spec
        .drift_detection
        .as_ref()
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let objects = drift::desired_objects(&rt.applier, &r.manifest, &r.name, &r.namespace)
        .await
        .inspect_err(|e| warn!(helmrelease = %hr.name_any(), "drift detection: {e}"))
        .ok()?;
    // The Canaries of the release namespace: the fields their controller owns (the parked
    // replicas, the apex Service selector, the routes) are neither drift nor corrected. Without
    // them drift detection would undo a Canary (flagger#1407, flagger#1121), so no list, no
    // detection.
    let canaries = canaries_of(ctx, hr, &rt.engine.client, &r.namespace)
        .await
        .inspect_err(
            |e| warn!(helmrelease = %hr.name_any(), "drift detection: listing Canaries: {e}"),
        )
        .ok()?;
    let owned =
        crate::apply::ownership::Ownership::of_canaries(&canaries, &ctx.settings.mesh_provider);
    drift::detect(
        &rt.applier,
        &objects,
        &settings,
        &owned,
        drift::HELM_FIELD_MANAGER,
    )
    .await
    .inspect_err(|e| warn!(helmrelease = %hr.name_any(), "drift detection: {e}"))
    .ok()
}

fn crds(policy: Option<&str>, default: Crds, skip: bool) -> Crds {
    match policy {
        Some("Skip") => Crds::Skip,
        Some("Create") => Crds::Create,
        Some("CreateReplace") => Crds::CreateReplace,
        _ if skip => Crds::Skip,
        _ => default,
    }
}

fn server_side(s: Option<&str>) -> ServerSide {
    match s {
        Some("enabled") => ServerSide::Enabled,
        Some("disabled") => ServerSide::Disabled,
        _ => ServerSide::Auto,
    }
}

fn wait_of(hr: &HelmRelease, disable: Option<bool>, disable_jobs: Option<bool>) -> Wait {
    if disable == Some(true) {
        return Wait::disabled();
    }
    let legacy = hr
        .spec
        .wait_strategy
        .as_ref()
        .is_some_and(|w| w.name == "legacy");
    Wait {
        strategy: if legacy {
            WaitStrategy::Legacy
        } else {
            WaitStrategy::Watcher
        },
        for_jobs: disable_jobs != Some(true),
    }
}

/// Record the post-render inputs of `hr` as observed (`status.observedPostRenderersDigest`,
/// `status.observedCommonMetadataDigest`), as Flux's `summarize` does after every action and at
/// the end of a reconcile: a change of either alone upgrades once ([`decide::release_state`]).
fn record_post_render_digests(status: &mut HelmReleaseStatus, hr: &HelmRelease) {
    status.observed_post_renderers_digest =
        postrender::post_renderers_digest(&hr.spec.post_renderers);
    status.observed_common_metadata_digest =
        postrender::common_metadata_digest(hr.spec.common_metadata.as_ref());
}

/// Revision-aware readiness ([`gate`], the Kustomization's rule): after a reconcile that left
/// the release `Ready=True` on the local cluster, the Canaries of the release namespace that
/// target a Deployment or DaemonSet of `status.inventory` decide: `Ready=Unknown`
/// `CanaryProgressing` while one analyses the released pod template (requeued at the interval;
/// the Canary's status changes wake it sooner), `Ready=False` `CanaryFailed` with
/// `status.rejectedRevision` once one rolled it back, else `status.lastPromotedRevision` = the
/// Helm release revision (`<release>.v<N>`). `old` is the status before this reconcile (for
/// the Events, one per new state).
async fn canary_gate(
    hr: &HelmRelease,
    ctx: &Ctx,
    old: &HelmReleaseStatus,
    status: &mut HelmReleaseStatus,
    events: &mut Vec<Note>,
    now: &Time,
    requeue: Requeue,
) -> Requeue {
    use crate::gitops::canary_gate::{self as gate, Gate};
    if hr.spec.kube_config.is_some() || !conditions::is_true(&status.conditions, types::READY) {
        return requeue;
    }
    let Some(inventory) = status.inventory.clone() else {
        return requeue;
    };
    let release_ns = hr.release_namespace();
    ctx.gate_waiters.register(
        (hr.namespace().unwrap_or_default(), hr.name_any()),
        &inventory,
    );
    let canaries = ctx.canaries.state();
    let refs: Vec<&crate::api::Canary> = canaries
        .iter()
        .map(|c| &**c)
        .filter(|c| c.metadata.namespace.as_deref() == Some(release_ns.as_str()))
        .collect();
    if refs.is_empty() {
        return requeue;
    }
    let applied = gate::observe(&ctx.client, &refs, &inventory).await;
    let Some(revision) = status
        .history
        .first()
        .map(|s| format!("{}.v{}", s.name, s.version))
    else {
        return requeue;
    };
    let decided = gate::decide(&revision, &applied, &refs);
    let generation = hr.metadata.generation.unwrap_or_default();
    let was = conditions::get(&old.conditions, types::READY).map(|c| c.reason.clone());
    match &decided {
        Gate::NoCanary => requeue,
        Gate::Promoted { canaries } => {
            if old.last_promoted_revision.as_deref() != Some(revision.as_str()) {
                events.push((
                    false,
                    "CanaryPromoted".into(),
                    format!(
                        "revision {revision} promoted by Canary {}",
                        canaries.join(", ")
                    ),
                ));
            }
            status.last_promoted_revision = Some(revision);
            requeue
        }
        Gate::Progressing { message } | Gate::Failed { message } => {
            gate::mark(&mut status.conditions, &decided, generation, now);
            let reason = match decided {
                Gate::Failed { .. } => {
                    status.rejected_revision = Some(revision);
                    gate::CANARY_FAILED
                }
                _ => gate::CANARY_PROGRESSING,
            };
            if was.as_deref() != Some(reason) {
                events.push((
                    reason == gate::CANARY_FAILED,
                    reason.into(),
                    message.clone(),
                ));
            }
            hr.interval()
                .map_or(Requeue::await_change(), Requeue::requeue)
        }
    }
}

/// The Canaries of the release namespace `ns` of `hr`: on the local cluster, from the
/// controller's Canary watch when it covers `ns` and has listed once (within 5 s); else (a
/// remote cluster, a namespace outside the scope) listed through `client`. Two LISTs per
/// release fewer (drift detection, the install or upgrade's kept fields): at 300 releases they
/// were 624 of 21 190 requests, 44 ms each on the API server.
async fn canaries_of(
    ctx: &Ctx,
    hr: &HelmRelease,
    client: &Client,
    ns: &str,
) -> Result<Vec<crate::api::Canary>, kube::Error> {
    let local = hr.spec.kube_config.is_none();
    let covered = ctx.scope_namespace.as_deref().is_none_or(|s| s == ns);
    let ready = tokio::time::timeout(Duration::from_secs(5), ctx.canaries.wait_until_ready());
    if local && covered && matches!(ready.await, Ok(Ok(()))) {
        return Ok(ctx
            .canaries
            .state()
            .iter()
            .filter(|c| c.metadata.namespace.as_deref() == Some(ns))
            .map(|c| (**c).clone())
            .collect());
    }
    list_canaries(client, ns).await
}

/// The Canaries of namespace `ns` (through `client`: the release's cluster, which may be a
/// remote one without the Canary CRD: no Canaries there).
pub async fn list_canaries(
    client: &Client,
    ns: &str,
) -> Result<Vec<crate::api::Canary>, kube::Error> {
    match Api::<crate::api::Canary>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
    {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// The fields the Canary controller owns in the release namespace `ns` (of `canaries`, the
/// Canaries there or the error listing them), with their live
/// values ([`super::postrender::KeptField`]), for an install or upgrade to keep. Objects the
/// Canary owns whole are its own (never in a chart) and skipped; an object not in the cluster
/// keeps nothing. A failed Canary list or read is logged and keeps nothing (the upgrade then
/// may conflict with `pennant` and fail, which says why).
pub async fn canary_kept_fields(
    client: &Client,
    applier: &crate::apply::ssa::Applier,
    mesh_provider: &str,
    ns: &str,
    canaries: Result<Vec<crate::api::Canary>, kube::Error>,
) -> Vec<super::postrender::KeptField> {
    use crate::apply::ownership::{Ownership, WHOLE};
    let canaries = match canaries {
        Ok(l) => l,
        Err(e) => {
            warn!(namespace = ns, "listing Canaries: {e}");
            return vec![];
        }
    };
    let owned = Ownership::of_canaries(&canaries, mesh_provider);
    let mut out = vec![];
    for (id, fields) in owned.iter() {
        if fields.paths.contains(WHOLE) {
            continue;
        }
        let resource = if id.group.is_empty() {
            let gvk = kube::api::GroupVersionKind::gvk("", "v1", &id.kind);
            applier.resolve(&gvk).await.ok().map(|r| r.0)
        } else {
            match kube::discovery::group(client, &id.group).await {
                Ok(g) => g.recommended_kind(&id.kind).map(|r| r.0),
                Err(_) => None,
            }
        };
        let Some(ar) = resource else { continue };
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), &id.namespace, &ar);
        let live = match api.get_opt(&id.name).await {
            Ok(Some(o)) => serde_json::to_value(o).unwrap_or_default(),
            Ok(None) => continue,
            Err(e) => {
                warn!(namespace = ns, object = %id.name, "reading a Canary-owned object: {e}");
                continue;
            }
        };
        for p in &fields.paths {
            out.push(super::postrender::KeptField {
                group: id.group.clone(),
                kind: id.kind.clone(),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                pointer: p.clone(),
                value: live.pointer(p).cloned(),
            });
        }
    }
    out
}

fn post_render(
    hr: &HelmRelease,
    rref: &ReleaseRef,
    keep: &[super::postrender::KeptField],
) -> Option<super::postrender::PostRenderConfig> {
    let cm = hr.spec.common_metadata.as_ref();
    Some(super::postrender::PostRenderConfig {
        kustomize: hr
            .spec
            .post_renderers
            .iter()
            .filter_map(|p| serde_json::to_value(&p.kustomize).ok())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        common_labels: cm.map(|c| c.labels.clone()).unwrap_or_default(),
        common_annotations: cm.map(|c| c.annotations.clone()).unwrap_or_default(),
        origin_name: hr.name_any(),
        origin_namespace: hr.namespace().unwrap_or_default(),
        kustomize_binary: String::new(),
        keep: keep.to_vec(),
        release_namespace: rref.namespace.clone(),
    })
}

fn uninstall_request(
    hr: &HelmRelease,
    release: ReleaseRef,
    policy: &decide::Policy,
) -> UninstallRequest {
    let u = hr.spec.uninstall.as_ref();
    UninstallRequest {
        release,
        timeout: policy.uninstall_timeout,
        disable_hooks: u.and_then(|u| u.disable_hooks).unwrap_or(false),
        keep_history: u.and_then(|u| u.keep_history).unwrap_or(false),
        wait: u.and_then(|u| u.disable_wait) != Some(true),
        cascade: match hr.deletion_propagation() {
            "foreground" => Cascade::Foreground,
            "orphan" => Cascade::Orphan,
            _ => Cascade::Background,
        },
        description: None,
    }
}

/// The `helm install` the controller runs for `hr` (Flux's `install` options).
pub fn install_request(
    hr: &HelmRelease,
    rref: &ReleaseRef,
    policy: &decide::Policy,
    chart: &Path,
    values: &Value,
    keep: &[super::postrender::KeptField],
) -> InstallRequest {
    let i = hr.spec.install.as_ref();
    InstallRequest {
        release: rref.clone(),
        chart: chart.to_path_buf(),
        values: values.clone(),
        timeout: policy.install.timeout,
        wait: wait_of(
            hr,
            i.and_then(|i| i.disable_wait),
            i.and_then(|i| i.disable_wait_for_jobs),
        ),
        disable_hooks: i.and_then(|i| i.disable_hooks).unwrap_or(false),
        disable_openapi_validation: i
            .and_then(|i| i.disable_openapi_validation)
            .unwrap_or(false),
        disable_schema_validation: i.and_then(|i| i.disable_schema_validation).unwrap_or(false),
        crds: crds(
            i.and_then(|i| i.crds.as_deref()),
            Crds::Create,
            i.and_then(|i| i.skip_crds) == Some(true),
        ),
        create_namespace: i.and_then(|i| i.create_namespace).unwrap_or(false),
        replace: i.and_then(|i| i.replace).unwrap_or(false),
        take_ownership: i.and_then(|i| i.disable_take_ownership) != Some(true),
        server_side: i.and_then(|i| i.server_side_apply).unwrap_or(true),
        description: None,
        post_render: post_render(hr, rref, keep),
    }
}

/// The `helm upgrade` the controller runs for `hr` (Flux's `upgrade` options).
pub fn upgrade_request(
    hr: &HelmRelease,
    rref: &ReleaseRef,
    policy: &decide::Policy,
    chart: &Path,
    values: &Value,
    keep: &[super::postrender::KeptField],
) -> UpgradeRequest {
    let u = hr.spec.upgrade.as_ref();
    let history_max = hr.max_history().max(0) as u32;
    UpgradeRequest {
        release: rref.clone(),
        chart: chart.to_path_buf(),
        values: values.clone(),
        timeout: policy.upgrade.timeout,
        wait: wait_of(
            hr,
            u.and_then(|u| u.disable_wait),
            u.and_then(|u| u.disable_wait_for_jobs),
        ),
        disable_hooks: u.and_then(|u| u.disable_hooks).unwrap_or(false),
        disable_openapi_validation: u
            .and_then(|u| u.disable_openapi_validation)
            .unwrap_or(false),
        disable_schema_validation: u.and_then(|u| u.disable_schema_validation).unwrap_or(false),
        crds: crds(u.and_then(|u| u.crds.as_deref()), Crds::Skip, false),
        force: u.and_then(|u| u.force).unwrap_or(false),
        cleanup_on_fail: u.and_then(|u| u.cleanup_on_fail).unwrap_or(false),
        take_ownership: u.and_then(|u| u.disable_take_ownership) != Some(true),
        server_side: server_side(u.and_then(|u| u.server_side_apply.as_deref())),
        history_max,
        preserve_values: u.and_then(|u| u.preserve_values).unwrap_or(false),
        description: None,
        post_render: post_render(hr, rref, keep),
    }
}

/// `--server-side` of an upgrade: `auto` is the apply method of the release it replaces,
/// `latest` (Helm 4's rule, which the engine applies by reading storage when left `auto`:
/// resolved from the revision the controller just read, one storage read fewer). PURE.
pub fn resolved_server_side(side: ServerSide, latest: Option<&Release>) -> ServerSide {
    match (side, latest) {
        (ServerSide::Auto, Some(r)) if r.apply_method == "ssa" => ServerSide::Enabled,
        (ServerSide::Auto, Some(_)) => ServerSide::Disabled,
        (side, _) => side,
    }
}

/// Run `action` through the engine: the result for [`decide::outcome`], the release it left
/// in storage, and Helm's log lines of a failure. `latest`: the newest stored revision, as the
/// step that chose `action` read it.
#[allow(clippy::too_many_arguments)]
async fn run_action(
    hr: &HelmRelease,
    ctx: &Ctx,
    rt: &ReleaseTarget,
    rref: &ReleaseRef,
    action: &Action,
    policy: &decide::Policy,
    p: &Prepared,
    latest: Option<&Release>,
) -> (ActionResult, Option<Release>, String) {
    let target = &rt.engine;
    let rb = hr.spec.rollback.as_ref();
    let history_max = hr.max_history().max(0) as u32;
    let keep = match action {
        Action::Install | Action::Upgrade => {
            let canaries = canaries_of(ctx, hr, &rt.engine.client, &rref.namespace).await;
            canary_kept_fields(
                &rt.engine.client,
                &rt.applier,
                &ctx.settings.mesh_provider,
                &rref.namespace,
                canaries,
            )
            .await
        }
        _ => vec![],
    };
    let r = match action {
        Action::Install => ctx
            .engine
            .install(
                target,
                &install_request(hr, rref, policy, &p.chart_path, &p.values, &keep),
            )
            .await
            .map(Some),
        Action::Upgrade => {
            let mut req = upgrade_request(hr, rref, policy, &p.chart_path, &p.values, &keep);
            req.server_side = resolved_server_side(req.server_side, latest);
            ctx.engine.upgrade(target, &req).await.map(Some)
        }
        Action::Test => ctx
            .engine
            .test(
                target,
                &TestRequest {
                    release: rref.clone(),
                    timeout: policy.test.timeout,
                    filters: hr
                        .spec
                        .test
                        .as_ref()
                        .and_then(|t| t.filters.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|f| TestFilter {
                            name: f.name,
                            exclude: f.exclude.unwrap_or(false),
                        })
                        .collect(),
                },
            )
            .await
            .map(Some),
        Action::RollbackRemediation { target: to } => ctx
            .engine
            .rollback(
                target,
                &RollbackRequest {
                    release: rref.clone(),
                    revision: Some(to.revision),
                    timeout: policy.rollback_timeout,
                    wait: wait_of(
                        hr,
                        rb.and_then(|r| r.disable_wait),
                        rb.and_then(|r| r.disable_wait_for_jobs),
                    ),
                    disable_hooks: rb.and_then(|r| r.disable_hooks).unwrap_or(false),
                    force: rb.and_then(|r| r.force).unwrap_or(false),
                    cleanup_on_fail: rb.and_then(|r| r.cleanup_on_fail).unwrap_or(false),
                    server_side: server_side(rb.and_then(|r| r.server_side_apply.as_deref())),
                    history_max,
                    description: None,
                },
            )
            .await
            .map(Some),
        Action::UninstallRemediation => {
            ctx.engine
                .uninstall(target, &uninstall_request(hr, rref.clone(), policy))
                .await
        }
        Action::Unlock { .. } => {
            let latest = ctx.engine.latest(target, rref).await.ok().flatten();
            match latest {
                Some(l) => ctx
                    .engine
                    .unlock(target, rref, l.version, Timestamp::now())
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
        Action::CorrectDrift => Ok(None),
    };
    match r {
        Ok(rls) => {
            // uninstall without history: storage has nothing; read what is left otherwise
            let rls = match rls {
                Some(r) => Some(r),
                None => ctx.engine.latest(target, rref).await.ok().flatten(),
            };
            (ActionResult::Succeeded, rls, String::new())
        }
        Err(e) => {
            let (message, logs) = match &e {
                super::engine::EngineError::Helm(h) => (h.message.clone(), h.stderr.clone()),
                e => (e.to_string(), String::new()),
            };
            // what storage holds now tells whether the attempt was recorded
            let after = ctx.engine.latest(target, rref).await.ok().flatten();
            let stored = match (action, &after) {
                (Action::Install | Action::Upgrade, Some(a)) => {
                    hr.status
                        .as_ref()
                        .and_then(|s| s.history.first())
                        .is_none_or(|s| s.version != a.version as i64)
                        || matches!(action, Action::Install)
                }
                (Action::Test, Some(_)) => true,
                (Action::RollbackRemediation { .. }, Some(_)) => true,
                (Action::UninstallRemediation, _) => true,
                _ => false,
            };
            (
                ActionResult::Failed {
                    error: message,
                    stored,
                },
                after,
                logs,
            )
        }
    }
}

/// Deletion: uninstall per `spec.uninstall` unless suspended or never installed, delete the
/// generated HelmChart, release the finalizer.
async fn finalize(hr: &HelmRelease, api: &Api<HelmRelease>, ctx: &Ctx) -> Result<Requeue, Error> {
    let installed = hr
        .status
        .as_ref()
        .and_then(|s| s.storage_namespace.as_deref())
        .is_some_and(|s| !s.is_empty());
    if !hr.suspended() && installed {
        let policy = chart::policy(hr, ctx.settings.default_to_retry_on_failure);
        let target = match target_of(hr, ctx).await {
            Ok(t) => Some(t.engine),
            // helm-controller: without its kubeconfig Secret the release cannot be reached;
            // the uninstall is skipped (and said, as a Warning)
            Err(e) if e.gone => {
                let m = format!("skipping Helm release uninstallation: {}", e.message);
                emit_event(ctx, hr, true, UNINSTALL_FAILED, &m, None).await;
                None
            }
            Err(e) => {
                let m = format!(
                    "failed to build REST client getter to uninstall release: {}",
                    e.message
                );
                emit_event(ctx, hr, true, UNINSTALL_FAILED, &m, None).await;
                return Err(Error::Kube(m));
            }
        };
        let rref = release_ref(hr);
        let present = match target {
            Some(t) => ctx
                .engine
                .latest(&t, &rref)
                .await
                .ok()
                .flatten()
                .filter(|r| r.info.status.as_str() != "uninstalled")
                .map(|_| t),
            None => None,
        };
        if let Some(target) = present {
            let req = uninstall_request(hr, rref.clone(), &policy);
            match ctx.engine.uninstall(&target, &req).await {
                Ok(_) => {
                    let m = format!(
                        "Helm uninstall succeeded for release {}/{}",
                        rref.namespace, rref.name
                    );
                    emit_event(ctx, hr, false, UNINSTALL_SUCCEEDED, &m, None).await;
                }
                Err(e) => {
                    let m = format!(
                        "Helm uninstall failed for release {}/{}: {e}",
                        rref.namespace, rref.name
                    );
                    emit_event(ctx, hr, true, UNINSTALL_FAILED, &m, None).await;
                    return Err(Error::Kube(m));
                }
            }
        }
    }
    if !hr.suspended()
        && let Some((cns, cname)) = hr.status_helm_chart()
    {
        let hc: Api<HelmChart> = Api::namespaced(ctx.client.clone(), cns);
        match hc.delete(cname, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(a)) if a.code == 404 => {}
            Err(e) => return Err(kube_err("delete HelmChart")(e)),
        }
    }
    crate::gitops::object::remove_finalizer(api, hr, FINALIZER, FIELD_MANAGER)
        .await
        .map_err(kube_err("remove the finalizer"))?;
    Ok(Requeue::await_change())
}

/// A JSON patch guarded by a `test` of the resourceVersion.
async fn patch_json(
    api: &Api<HelmRelease>,
    hr: &HelmRelease,
    op: Value,
) -> Result<HelmRelease, Error> {
    crate::gitops::object::patch_json(api, hr, op, FIELD_MANAGER)
        .await
        .map_err(kube_err("patch finalizers"))
}

/// Merge-patch `/status` when it changed ([`crate::gitops::object::write_status`]).
async fn write_status(
    api: &Api<HelmRelease>,
    hr: &HelmRelease,
    old: &HelmReleaseStatus,
    status: &HelmReleaseStatus,
) -> Result<(), Error> {
    crate::gitops::object::write_status(api, &hr.name_any(), old, status, FIELD_MANAGER)
        .await
        .map_err(kube_err("patch status"))
}

/// A core/v1 Event on the HelmRelease as Flux's recorder writes it (`source.component:
/// helm-controller`, annotation `helm.toolkit.fluxcd.io/revision`), also logged.
async fn emit_event(
    ctx: &Ctx,
    hr: &HelmRelease,
    warning: bool,
    reason: &str,
    message: &str,
    revision: Option<&str>,
) {
    let annotations: BTreeMap<String, String> = revision
        .map(|r| ("revision".to_string(), r.to_string()))
        .into_iter()
        .collect();
    let note = crate::gitops::events::Note {
        warning,
        reason,
        message,
        annotations: &annotations,
    };
    let reporter = crate::gitops::events::Reporter {
        component: EVENT_SOURCE,
        reporting_component: "pennant.dev/helm",
        instance: &ctx.instance,
        group: GROUP,
        field_manager: FIELD_MANAGER,
    };
    crate::gitops::events::emit(&ctx.client, hr, &note, &reporter).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr(spec: Value) -> HelmRelease {
        serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    fn base() -> Value {
        json!({"interval": "5m", "chart": {"spec": {
            "chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}})
    }

    fn snap(v: i64, status: &str) -> Snapshot {
        Snapshot {
            api_version: None,
            digest: format!("sha256:{v}"),
            name: "web".into(),
            namespace: "apps".into(),
            version: v,
            status: status.into(),
            action: None,
            chart_name: "app".into(),
            chart_version: "1.0.0".into(),
            app_version: None,
            config_digest: "sha256:c".into(),
            first_deployed: Time(Timestamp::UNIX_EPOCH),
            last_deployed: Time(Timestamp::UNIX_EPOCH),
            deleted: None,
            test_hooks: None,
            oci_digest: None,
        }
    }

    #[test]
    fn history_is_newest_first_bounded_and_replaces_the_same_version() {
        let mut h = vec![];
        record_snapshot(&mut h, snap(1, "deployed"), 2);
        record_snapshot(&mut h, snap(2, "failed"), 2);
        assert_eq!(h.iter().map(|s| s.version).collect::<Vec<_>>(), [2, 1]);
        record_snapshot(&mut h, snap(2, "deployed"), 2);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].status, "deployed");
        record_snapshot(&mut h, snap(3, "deployed"), 2);
        assert_eq!(h.iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2]);
        record_snapshot(&mut h, snap(4, "deployed"), 0);
        assert_eq!(h.len(), 3, "0: unlimited");
    }

    #[test]
    fn history_edits_of_the_decision_apply_by_version() {
        let mut h = vec![
            snap(3, "failed"),
            snap(2, "superseded"),
            snap(1, "superseded"),
        ];
        apply_history_edit(&mut h, decide::HistoryEdit::Keep);
        assert_eq!(h.len(), 3);
        apply_history_edit(
            &mut h,
            decide::HistoryEdit::Truncate {
                ignore_tests: false,
            },
        );
        assert_eq!(h.iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2]);
        apply_history_edit(&mut h, decide::HistoryEdit::Clear);
        assert!(h.is_empty());
    }

    #[test]
    fn the_watch_predicate_sees_generation_tokens_and_deletion() {
        let a = hr(base());
        let mut b = a.clone();
        assert_eq!(wanted(&a), wanted(&b));
        b.metadata.annotations = Some(BTreeMap::from([(
            FORCE_REQUESTED_AT_ANNOTATION.to_string(),
            "t1".to_string(),
        )]));
        assert_ne!(wanted(&a), wanted(&b));
        let mut c = a.clone();
        c.metadata.annotations = Some(BTreeMap::from([(
            RESET_REQUESTED_AT_ANNOTATION.to_string(),
            "t1".to_string(),
        )]));
        assert_ne!(wanted(&a), wanted(&c));
        let mut d = a.clone();
        d.metadata.generation = Some(2);
        assert_ne!(wanted(&a), wanted(&d));
        let mut e = a.clone();
        e.status = Some(HelmReleaseStatus {
            failures: Some(3),
            ..Default::default()
        });
        assert_eq!(wanted(&a), wanted(&e), "status writes do not wake");
    }

    #[test]
    fn a_ready_dependency_wakes_only_its_waiting_dependents() {
        let mut waiting = hr(base());
        waiting.spec.depends_on = vec![serde_json::from_value(json!({"name": "back"})).unwrap()];
        waiting.status = Some(HelmReleaseStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reasons::DEPENDENCY_NOT_READY.into(),
                message: String::new(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        let mut other = waiting.clone();
        other.metadata.name = Some("other".into());
        other.spec.depends_on = vec![serde_json::from_value(json!({"name": "elsewhere"})).unwrap()];
        let all = vec![Arc::new(waiting), Arc::new(other)];
        let woken = dependents_to_wake(&all, "HelmRelease", "apps", "back", true);
        assert_eq!(woken.len(), 1);
        assert_eq!(woken[0].name, "web");
        assert!(dependents_to_wake(&all, "HelmRelease", "apps", "back", false).is_empty());
        assert!(dependents_to_wake(&all, "Kustomization", "apps", "back", true).is_empty());
        assert!(dependents_to_wake(&all, "HelmRelease", "other-ns", "back", true).is_empty());
    }

    /// A remote cluster's target hands helm the sanitised kubeconfig and the impersonated user
    /// (`--kubeconfig`, `--kube-as-user`); the local one neither.
    #[tokio::test]
    async fn a_remote_cluster_gives_helm_its_kubeconfig_and_user() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
        let kc = crate::gitops::target::parse_kubeconfig(
            b"clusters: [{name: r, cluster: {server: 'https://10.0.0.1:6443'}}]\n\
              users: [{name: u, user: {token: t0k3n}}]\n\
              contexts: [{name: c, context: {cluster: r, user: u}}]\ncurrent-context: c\n",
            &TargetOptions::default(),
        )
        .unwrap();
        let user = "system:serviceaccount:apps:deployer".to_string();
        let remote = ReleaseTarget::of_cluster(Cluster {
            client: client.clone(),
            kubeconfig: Some(kc),
            user: Some(user.clone()),
        });
        let text = remote.engine.kubeconfig.expect("a kubeconfig for helm");
        let back = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            back.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://10.0.0.1:6443")
        );
        assert!(text.contains("t0k3n"), "helm needs the credentials");
        assert_eq!(remote.engine.as_user, Some(user));
        let local = ReleaseTarget::of_cluster(Cluster {
            client,
            kubeconfig: None,
            user: None,
        });
        assert!(local.engine.kubeconfig.is_none() && local.engine.as_user.is_none());
    }

    #[test]
    fn impersonation_refusal_and_unsupported_fields() {
        let mut h = hr(base());
        assert_eq!(impersonated_user(&h, None), None);
        assert_eq!(
            impersonated_user(&h, Some("tenant")).as_deref(),
            Some("system:serviceaccount:apps:tenant")
        );
        h.spec.service_account_name = Some("deployer".into());
        assert_eq!(
            impersonated_user(&h, Some("tenant")).as_deref(),
            Some("system:serviceaccount:apps:deployer")
        );
        assert_eq!(refused(&h), None);
        assert!(unsupported_fields(&h).is_empty());
        h.spec.kube_config =
            Some(serde_json::from_value(json!({"secretRef": {"name": "kc"}})).unwrap());
        assert_eq!(refused(&h), None, "a kubeconfig Secret is released to");
        let spec = target_spec(&h);
        assert_eq!(
            (spec.namespace, spec.service_account_name),
            ("apps", Some("deployer"))
        );
        assert_eq!(
            spec.kube_config
                .and_then(|k| k.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
            Some("kc")
        );
        h.spec.kube_config =
            Some(serde_json::from_value(json!({"configMapRef": {"name": "wi"}})).unwrap());
        assert!(
            refused(&h).unwrap().starts_with(
                "spec.kubeConfig.configMapRef is not supported yet: nothing is released"
            )
        );
        h.spec.drift_detection = Some(serde_json::from_value(json!({"mode": "warn"})).unwrap());
        assert!(
            unsupported_fields(&h).is_empty(),
            "drift detection is implemented"
        );
        h.spec.storage_namespace = Some("elsewhere".into());
        let u = unsupported_fields(&h);
        assert_eq!(u.len(), 1);
        assert!(u[0].starts_with("spec.storageNamespace"), "{u:?}");
        h.spec.post_render_strategy = Some("combined".into());
        assert_eq!(
            unsupported_fields(&h).len(),
            1,
            "the default is what Helm 4 does"
        );
        h.spec.post_render_strategy = Some("nohooks".into());
        h.spec.health_check_exprs =
            serde_json::from_value(json!([{"apiVersion": "v1", "kind": "X", "current": "true"}]))
                .unwrap();
        let u = unsupported_fields(&h);
        assert!(u[1].starts_with("spec.healthCheckExprs"), "{u:?}");
        assert!(u[2].starts_with("spec.postRenderStrategy"), "{u:?}");
    }

    #[test]
    fn the_chart_source_is_the_generated_chart_or_chart_ref() {
        assert_eq!(
            chart_source_key(&hr(base())),
            ("HelmChart".into(), "apps".into(), "apps-web".into())
        );
        let r = hr(json!({"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "x"}}));
        assert_eq!(
            chart_source_key(&r),
            ("OCIRepository".into(), "apps".into(), "x".into())
        );
    }

    #[test]
    fn a_helm_chart_is_applied_ahead_until_a_reconcile_applied_this_generations() {
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": "web", "namespace": "apps", "generation": 2},
                "spec": base(),
            });
            f(&mut v);
            serde_json::from_value::<HelmRelease>(v).unwrap()
        };
        // new: the reconcile's own object
        let fresh = with(&|_| {});
        assert_eq!(chart_ahead(&fresh), chart::helm_chart(&fresh));
        assert_eq!(chart_ahead(&fresh).unwrap()["metadata"]["name"], "apps-web");
        // the reconcile would apply none: deleting, suspended, refused, chartRef
        for (what, f) in [
            (
                "deleting",
                &(|v: &mut Value| {
                    v["metadata"]["deletionTimestamp"] = json!("2026-12-06T00:00:00Z")
                }) as &dyn Fn(&mut Value),
            ),
            ("suspended", &|v: &mut Value| {
                v["spec"]["suspend"] = json!(true)
            }),
            ("refused", &|v: &mut Value| {
                v["spec"]["kubeConfig"] = json!({"configMapRef": {"name": "wi"}})
            }),
            (
                "chartRef",
                &|v: &mut Value| {
                    v["spec"] = json!({"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "x"}})
                },
            ),
        ] {
            assert_eq!(chart_ahead(&with(f)), None, "{what}");
        }
        // a reconcile applied this generation's: nothing ahead (no write per HelmRelease at a
        // restart); an older generation's, or another chart's name: ahead again
        let attempted = |generation: i64, chart: &str| {
            let chart = chart.to_string();
            with(&move |v: &mut Value| {
                v["status"] = json!({"helmChart": chart, "lastAttemptedGeneration": generation})
            })
        };
        assert_eq!(chart_ahead(&attempted(2, "apps/apps-web")), None);
        let observed = with(&|v: &mut Value| {
            v["status"] = json!({"helmChart": "apps/apps-web", "observedGeneration": 2})
        });
        assert_eq!(chart_ahead(&observed), None);
        assert!(chart_ahead(&attempted(1, "apps/apps-web")).is_some());
        assert!(chart_ahead(&attempted(2, "other/apps-web")).is_some());
        // a waiting reconcile (SourceNotReady) records the chart but no generation
        let waiting = with(&|v: &mut Value| v["status"] = json!({"helmChart": "apps/apps-web"}));
        assert!(chart_ahead(&waiting).is_some());
    }

    #[test]
    fn a_deleted_release_takes_a_helm_chart_left_over_but_not_a_suspended_ones() {
        // never recorded by a reconcile (applied ahead): goes, suspended or not
        assert!(chart_ahead_leftover(&hr(base())));
        let mut suspended = base();
        suspended["suspend"] = json!(true);
        assert!(chart_ahead_leftover(&hr(suspended.clone())));
        // recorded: the finalizer deleted it, a copy written again after that goes; a
        // suspended HelmRelease's is kept, as Flux
        let recorded = |spec: Value| {
            let mut h = hr(spec);
            h.status = Some(HelmReleaseStatus {
                helm_chart: Some("apps/apps-web".into()),
                ..Default::default()
            });
            h
        };
        assert!(chart_ahead_leftover(&recorded(base())));
        assert!(!chart_ahead_leftover(&recorded(suspended)));
        let chart_ref =
            hr(json!({"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "x"}}));
        assert!(!chart_ahead_leftover(&chart_ref));
    }

    #[test]
    fn auto_server_side_follows_the_release_read_before_the_upgrade() {
        let rel = |method: &str| {
            Release::from_json(json!({"name": "web", "namespace": "apps", "version": 1,
                "info": {"status": "deployed"}, "apply_method": method}))
        };
        let (ssa, csa, helm3) = (rel("ssa"), rel("csa"), rel(""));
        assert_eq!(
            resolved_server_side(ServerSide::Auto, Some(&ssa)),
            ServerSide::Enabled
        );
        assert_eq!(
            resolved_server_side(ServerSide::Auto, Some(&csa)),
            ServerSide::Disabled
        );
        assert_eq!(
            resolved_server_side(ServerSide::Auto, Some(&helm3)),
            ServerSide::Disabled
        );
        // nothing stored: left to the engine (and Helm)
        assert_eq!(
            resolved_server_side(ServerSide::Auto, None),
            ServerSide::Auto
        );
        // the user's choice stands
        assert_eq!(
            resolved_server_side(ServerSide::Disabled, Some(&ssa)),
            ServerSide::Disabled
        );
        assert_eq!(
            resolved_server_side(ServerSide::Enabled, Some(&csa)),
            ServerSide::Enabled
        );
    }
}
