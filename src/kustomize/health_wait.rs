//! The health step of a Kustomization (`spec.wait`, `spec.healthChecks`,
//! `spec.healthCheckExprs`) as a state, not a blocking wait: kustomize-controller's
//! `checkHealth` polls inside the reconcile for up to `spec.timeout` and holds a worker
//! (flux2#5622); here the reconcile returns after the apply, the wait is remembered in memory
//! ([`Waits`], keyed by namespace/name) and re-evaluated when a checked object changes (a
//! dynamic watch per kind, [`crate::health::watch`]), every [`RECHECK`] and at the deadline.
//! A re-evaluation re-applies nothing; a new source revision, a new generation, a new
//! `reconcile.fluxcd.io/requestedAt` token or the elapsed interval supersedes the wait (new
//! apply, new wait).
//!
//! Flux's visible behaviour is kept ([`health_step`]): while waiting `Ready=Unknown`
//! (`Progressing`), `Reconciling=True` and `Healthy=Unknown` with "Running health checks for
//! revision <rev> with a timeout of <timeout>"; then `Healthy=True` ("Health check passed in
//! <elapsed>", an Event when it was not healthy before or a new revision changed something),
//! or `Healthy=False` with the verdict and `Ready=False` `HealthCheckFailed` "health check
//! failed after <elapsed>: <verdict>", `lastAppliedRevision` left at the previous revision.
//! After a restart the wait resumes from the `Healthy=Unknown` condition's transition time
//! (status is the only memory).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use serde_json::Value;

use crate::api::kustomization::Kustomization;
use crate::apply::inventory::ObjectId;
use crate::apply::ssa::{Action, Change};
use crate::gitops::conditions::{self, types};
use crate::gitops::reconcile_request::requested_at;
use crate::health::assess::{Verdict, WaitOptions, assess, objects_to_check};
use crate::health::expr::HealthExprs;
use crate::health::watch::{Watches, observe, split_api_version};
use crate::util::go_duration;

/// How often a running wait is re-evaluated without an event (bounds a missed watch event;
/// Flux polls every 5 s).
pub const RECHECK: Duration = Duration::from_secs(5);

/// `(namespace, name)` of a Kustomization.
pub type Key = (String, String);

/// A running health wait.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitState {
    /// The source revision applied.
    pub revision: String,
    /// `metadata.generation` applied.
    pub generation: i64,
    /// `reconcile.fluxcd.io/requestedAt` token of the apply.
    pub requested_at: Option<String>,
    /// `status.history` digest of the applied manifests.
    pub digest: String,
    /// When the wait began (after the apply).
    pub started: Timestamp,
    /// `spec.timeout` (or its default).
    pub timeout: SignedDuration,
    /// The objects checked, with the version of their `apiVersion`.
    pub objects: Vec<(ObjectId, String)>,
    /// Jobs with a TTL (gone = done).
    pub jobs_with_ttl: BTreeSet<ObjectId>,
    /// Emit "Health check passed" (Flux: not healthy before, or a new revision that changed
    /// something).
    pub announce: bool,
}

impl WaitState {
    /// The ids checked.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.objects.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// What the health step concluded.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing to check: the `Healthy` condition is removed.
    NoChecks,
    /// Every object is Current: `Healthy=True` with `message`.
    Passed { message: String, announce: bool },
    /// Still waiting: the in-progress `message`; evaluate again after `after` at the latest;
    /// `pending` are the objects not Current (their kinds get watched).
    Waiting {
        message: String,
        after: Duration,
        pending: Vec<ObjectId>,
    },
    /// Timed out or failed: `Ready=False` `HealthCheckFailed` with `ready`, `Healthy=False`
    /// with `healthy`.
    Failed { ready: String, healthy: String },
}

/// Flux's in-progress message of the health step.
pub fn running_message(revision: &str, timeout: SignedDuration) -> String {
    format!(
        "Running health checks for revision {revision} with a timeout of {}",
        go_duration(timeout.as_millis() as f64)
    )
}

/// The step at `now`, given the latest copies of the checked objects. PURE.
pub fn health_step(
    wait: &WaitState,
    observed: &BTreeMap<ObjectId, Value>,
    exprs: &HealthExprs,
    now: Timestamp,
) -> Outcome {
    let opts = WaitOptions {
        started: wait.started,
        timeout: wait.timeout,
        fail_fast: true,
        jobs_with_ttl: wait.jobs_with_ttl.clone(),
    };
    let elapsed = || go_duration(now.duration_since(wait.started).as_millis().max(0) as f64);
    let verdict = assess(&wait.ids(), observed, exprs, &opts, now);
    match &verdict {
        Verdict::Healthy => Outcome::Passed {
            message: format!("Health check passed in {}", elapsed()),
            announce: wait.announce,
        },
        Verdict::Waiting { pending, deadline } => {
            // just past the deadline, so that the evaluation then times out
            let to_deadline = deadline.duration_since(now) + SignedDuration::from_millis(50);
            let to_deadline = Duration::try_from(to_deadline).unwrap_or_default();
            Outcome::Waiting {
                message: running_message(&wait.revision, wait.timeout),
                after: RECHECK.min(to_deadline),
                pending: pending.iter().map(|p| p.id.clone()).collect(),
            }
        }
        Verdict::Failed { .. } | Verdict::TimedOut { .. } => {
            let healthy = verdict.message().unwrap_or_default();
            Outcome::Failed {
                ready: format!("health check failed after {}: {healthy}", elapsed()),
                healthy,
            }
        }
    }
}

/// Whether a reconcile re-evaluates the running `wait` instead of applying again: same
/// revision, generation and `requestedAt` token, and the interval since the wait began has
/// not elapsed. PURE.
pub fn resumes(
    wait: Option<&WaitState>,
    revision: &str,
    generation: i64,
    requested_at: Option<&str>,
    interval: Option<Duration>,
    now: Timestamp,
) -> bool {
    wait.is_some_and(|w| {
        w.revision == revision
            && w.generation == generation
            && w.requested_at.as_deref() == requested_at
            && interval.is_none_or(|i| {
                now < w.started + SignedDuration::try_from(i).unwrap_or(SignedDuration::MAX)
            })
    })
}

/// When a new wait for `revision` begins: now, unless the status already shows this very wait
/// running (`Healthy=Unknown` with the same in-progress message and generation, e.g. before a
/// restart or a re-apply at the interval), then its transition time. PURE.
pub fn wait_started(
    conds: &[Condition],
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Timestamp {
    conditions::get(conds, types::HEALTHY)
        .filter(|c| {
            c.status == conditions::UNKNOWN
                && c.message == message
                && c.observed_generation == Some(generation)
        })
        .map_or(now, |c| c.last_transition_time.0.min(now))
}

/// The objects to check after an apply (Flux's `checkHealth` selection, skipped objects left
/// out), with the version of their `apiVersion`: `changes` for `wait`, else the
/// `healthChecks` references (an empty `apiVersion` is `apps/v1`). PURE.
pub fn objects_of(ks: &Kustomization, changes: &[Change]) -> Vec<(ObjectId, String)> {
    let applied: Vec<ObjectId> = changes
        .iter()
        .filter(|c| !matches!(c.action, Action::Skipped | Action::Deleted))
        .map(|c| c.id.clone())
        .collect();
    let name = ks.metadata.name.clone().unwrap_or_default();
    let ns = ks.metadata.namespace.clone().unwrap_or_default();
    let ids = objects_to_check(
        ks.spec.wait == Some(true),
        &ks.spec.health_checks,
        &applied,
        (&name, &ns),
    );
    let mut versions: BTreeMap<ObjectId, String> = changes
        .iter()
        .map(|c| (c.id.clone(), c.version.clone()))
        .collect();
    if ks.spec.wait != Some(true) {
        for hc in &ks.spec.health_checks {
            let api_version = hc
                .api_version
                .as_deref()
                .filter(|v| !v.is_empty())
                .unwrap_or("apps/v1");
            let (group, version) = split_api_version(api_version);
            let id = ObjectId {
                namespace: hc.namespace.clone().unwrap_or_default(),
                name: hc.name.clone(),
                group: group.into(),
                kind: hc.kind.clone(),
            };
            versions.insert(id, version.to_string());
        }
    }
    ids.into_iter()
        .map(|id| {
            let v = versions.get(&id).cloned().unwrap_or_default();
            (id, v)
        })
        .collect()
}

/// Whether a change set changed anything (Flux's `drifted`: the apply log is not empty).
pub fn drifted(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.action != Action::Unchanged)
}

/// The running waits, and which wait each checked object belongs to (an index kept with
/// them, so that a watch event finds its Kustomizations without a scan).
#[derive(Default)]
pub struct Waits {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    states: BTreeMap<Key, WaitState>,
    index: BTreeMap<ObjectId, BTreeSet<Key>>,
    /// The last wait of each Kustomization that passed ([`Waits::settle`]).
    settled: BTreeMap<Key, Settled>,
}

impl Inner {
    fn unindex(&mut self, key: &Key) {
        if let Some(old) = self.states.remove(key) {
            for (id, _) in &old.objects {
                if let Some(keys) = self.index.get_mut(id) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.index.remove(id);
                    }
                }
            }
        }
    }
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running wait of `key`.
    pub fn get(&self, key: &Key) -> Option<WaitState> {
        self.lock().states.get(key).cloned()
    }

    /// Start (or replace) the wait of `key`.
    pub fn insert(&self, key: Key, state: WaitState) {
        let mut inner = self.lock();
        inner.unindex(&key);
        inner.settled.remove(&key);
        for (id, _) in &state.objects {
            inner
                .index
                .entry(id.clone())
                .or_default()
                .insert(key.clone());
        }
        inner.states.insert(key, state);
    }

    /// End the wait of `key` (failed, suspended, deleted) and forget its last passed one.
    pub fn remove(&self, key: &Key) {
        let mut inner = self.lock();
        inner.unindex(key);
        inner.settled.remove(key);
    }

    /// End the wait of `key` as passed with `message` (`Healthy=True`'s), keeping its identity
    /// (revision, generation, token, start, digest; not its objects) for [`Waits::settled`].
    pub fn settle(&self, key: Key, wait: &WaitState, message: &str) {
        let mut inner = self.lock();
        inner.unindex(&key);
        let wait = WaitState {
            objects: vec![],
            jobs_with_ttl: BTreeSet::new(),
            ..wait.clone()
        };
        let message = message.to_string();
        inner.settled.insert(key, Settled { wait, message });
    }

    /// Forget the last passed wait of `key` (its status could not be written: the next
    /// reconcile evaluates again rather than trusting a status that is not there).
    pub fn unsettle(&self, key: &Key) {
        self.lock().settled.remove(key);
    }

    /// The last wait of `key` that passed, when none runs: a reconcile that would have
    /// [`resumes`] it has nothing to do (a wake queued by a second event of a checked object
    /// while the wait was being passed), rather than applying again ahead of the interval.
    pub fn settled(&self, key: &Key) -> Option<Settled> {
        let inner = self.lock();
        match inner.states.contains_key(key) {
            true => None,
            false => inner.settled.get(key).cloned(),
        }
    }

    /// The Kustomizations waiting on `id`.
    pub fn waiting_on(&self, id: &ObjectId) -> Vec<Key> {
        self.lock()
            .index
            .get(id)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many waits are running.
    pub fn len(&self) -> usize {
        self.lock().states.len()
    }

    /// No wait is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A passed wait ([`Waits::settle`]): its identity and the `Healthy=True` message it wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub wait: WaitState,
    pub message: String,
}

/// What the apply step hands to the health step. `client` is the target's client when it is
/// not the controller's own (a remote cluster or an impersonated account): its objects are
/// read with a GET per evaluation, not from the controller's watches.
pub enum Attempted {
    /// Applied now: the change set, the manifests' digest and the Jobs with a TTL.
    Applied {
        changes: Vec<Change>,
        digest: String,
        jobs_with_ttl: BTreeSet<ObjectId>,
        client: Option<Client>,
    },
    /// Nothing applied: the running wait is re-evaluated ([`resumes`]).
    Resumed(WaitState, Option<Client>),
    /// Nothing applied, nothing read: the wait this apply had passed, nothing changed since.
    Settled(Settled),
}

impl Attempted {
    /// The target's client when it is not the controller's own.
    pub fn client(&self) -> Option<&Client> {
        match self {
            Attempted::Applied { client, .. } | Attempted::Resumed(_, client) => client.as_ref(),
            Attempted::Settled(_) => None,
        }
    }
}

/// The targets of a health evaluation: the client of the cluster the objects were applied to,
/// the watches the objects are read from (`None` for a remote cluster or an impersonated
/// account: GET per evaluation with that client, so reads keep its rights, as Flux's health
/// check reads with the impersonated client) and the watches whose events wake the wait
/// (`None` for a remote cluster only: then just the periodic re-check). An impersonated wait on
/// the controller's own cluster is thus woken by the controller's watch of the pending object
/// and re-read as the account; before, it waited for the next [`RECHECK`] (5 s after every
/// apply).
pub struct Target<'a> {
    pub client: &'a Client,
    pub watches: Option<&'a Watches>,
    pub wake: Option<&'a Watches>,
}

/// The health step after an apply or for a resumed wait (I/O: reads the checked objects):
/// the change set, the digest and the [`Outcome`]. A waiting outcome is remembered in `waits`
/// (and the kinds of the objects not yet Current get watched by `target.wake`); any other ends
/// the wait.
/// `conds` and `last_applied` are the status before this reconcile.
#[allow(clippy::too_many_arguments)]
pub async fn step(
    waits: &Waits,
    target: Target<'_>,
    ks: &Kustomization,
    attempted: Attempted,
    revision: &str,
    conds: &[Condition],
    last_applied: Option<&str>,
    now: Timestamp,
) -> (Vec<Change>, String, Outcome) {
    let key: Key = (
        ks.metadata.namespace.clone().unwrap_or_default(),
        ks.metadata.name.clone().unwrap_or_default(),
    );
    let (changes, wait) = match attempted {
        // as it passed: the status of this very object may predate that pass in the watch
        // cache, so its `Healthy=True` message comes from the settled wait, not from `conds`
        Attempted::Settled(Settled { wait, message }) => {
            let announce = false;
            return (vec![], wait.digest, Outcome::Passed { message, announce });
        }
        Attempted::Resumed(w, _) => (vec![], w),
        Attempted::Applied {
            changes,
            digest,
            jobs_with_ttl,
            ..
        } => {
            let objects = objects_of(ks, &changes);
            if objects.is_empty() {
                waits.remove(&key);
                return (changes, digest, Outcome::NoChecks);
            }
            let generation = ks.metadata.generation.unwrap_or_default();
            let timeout = ks.timeout().unwrap_or(Duration::from_secs(300));
            let timeout = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX);
            let message = running_message(revision, timeout);
            let was_healthy = conditions::is_true(conds, types::HEALTHY);
            let announce = !was_healthy || (last_applied != Some(revision) && drifted(&changes));
            let wait = WaitState {
                revision: revision.to_string(),
                generation,
                requested_at: requested_at(ks.metadata.annotations.as_ref()).map(Into::into),
                digest,
                started: wait_started(conds, &message, generation, now),
                timeout,
                objects,
                jobs_with_ttl,
                announce,
            };
            (changes, wait)
        }
    };
    let observed = observe(target.client, target.watches, target.wake, &wait.objects).await;
    let outcome = {
        let exprs = HealthExprs::compile(&ks.spec.health_check_exprs).unwrap_or_default();
        health_step(&wait, &observed, &exprs, now)
    };
    let digest = wait.digest.clone();
    match &outcome {
        Outcome::Waiting { pending, .. } => {
            if let Some(w) = target.wake {
                for id in pending {
                    let version = wait
                        .objects
                        .iter()
                        .find(|(o, _)| o == id)
                        .map_or("", |(_, v)| v.as_str());
                    w.ensure(id, version).await;
                }
            }
            waits.insert(key, wait);
        }
        Outcome::Passed { message, .. } => waits.settle(key, &wait, message),
        _ => waits.remove(&key),
    }
    (changes, digest, outcome)
}

#[cfg(test)]
#[path = "health_wait_tests.rs"]
mod tests;
