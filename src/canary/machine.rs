//! The canary state machine: a pure function from (Canary, observations, now) to the next
//! status, the ordered side effects and when to look again.
//!
//! Behaviour follows Flagger's `advanceCanary` (reference/flagger.md §2.3) with its known bugs
//! fixed:
//! - weights never exceed `maxWeight` (Flagger overshoots: 20, 40, 60 with maxWeight 50);
//! - the progress deadline is measured from pennant's own clock (`status.unreadySince`), not only
//!   from the Deployment's conditions (Flagger #1247, #1578);
//! - every transition to `Failed` raises an error alert with its reason (Flagger #1663);
//! - a failed promotion (primary unhealthy after Promote) keeps traffic on the healthy canary and
//!   does not scale it down (Flagger #1932);
//! - a primary that never becomes ready during initialisation never receives traffic: the target
//!   keeps serving and the Canary reports it (instead of Flagger's rollback-to-broken-primary);
//! - `skipAnalysis` still waits for the new primary before scaling the canary down;
//! - routing objects are always rebuilt from the weights in status, so editing the Canary mid-run
//!   never resets traffic (Flagger #929).
//!
//! Observations that cost a network call (webhooks, metric queries) are asked for on demand:
//! `decide` returns [`Step::Need`] with the probe it needs, the caller runs it, records the result
//! in [`Observed::probes`] and calls `decide` again. The same inputs always give the same output.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::analysis::{MetricCheck, MetricOutcome};
use crate::api::condition::{has_message, remove_condition, set_condition, types};
use crate::api::{Canary, CanaryAnalysis, CanaryPhase, CanaryStatus, Strategy, TargetReference};
use crate::notify::Severity;
use crate::router::Weights;
use crate::webhook::{HookKind, HookVerdict};

/// Readiness of a workload as judged by `workload::Workload::readiness` (Deployment or DaemonSet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Still rolling out; the message says what is missing.
    NotReady(String),
    /// Will not become ready by itself (e.g. `ProgressDeadlineExceeded`).
    Failed(String),
}

/// What `observe` read about the target workload.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    /// Canonical revision hash of the pod template (`tracker::revision`).
    pub revision: String,
    /// Tracked ConfigMaps/Secrets: `configmap/<name>` → checksum.
    pub configs: BTreeMap<String, String>,
    pub readiness: Readiness,
    /// Replicas to scale the canary up to (Flagger's `ScaleFromZero` choice).
    pub scale_up_replicas: i32,
    /// Ready replicas of the target (`status.readyReplicas`; 0 for a DaemonSet): the primary is
    /// scaled to at least this many before it gets the canary's traffic back (Flagger #1600).
    pub ready_replicas: i32,
}

/// What `observe` read about the primary workload.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryState {
    pub readiness: Readiness,
    /// The revision id stamped on the primary's pod template (`flagger-id`), if any.
    pub revision_id: Option<String>,
    /// The primary's `spec.replicas` (`None` for a DaemonSet).
    pub replicas: Option<i32>,
}

/// Results of on-demand probes gathered so far in this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    pub hooks: BTreeMap<HookKind, HookVerdict>,
    pub metrics: Option<Vec<MetricCheck>>,
    /// The sequential judge's counts for the step (opted-in Canaries only).
    pub judge: Option<super::judged::JudgeObservation>,
    /// The count signals the Canary's MetricTemplates declare, or why a declaration is
    /// invalid (naming template, metric and annotation), as `JudgeObservation::count_signals`:
    /// read at the start tick of an opted-in Canary, before any traffic moves.
    pub count_signals: Option<Result<Vec<crate::analysis::judge::CountSignal>, String>>,
}

/// A probe `decide` needs before it can finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Hooks(HookKind),
    Metrics,
    /// The sequential judge's step counts (and lookback) from the metrics server.
    Judge,
    /// The count signals the MetricTemplates declare (templates read, selectors rendered and
    /// checked; no metrics query), for an opted-in Canary's start tick.
    CountSignals,
}

/// Everything `decide` looks at besides the Canary itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub now: Timestamp,
    /// `None` when the target does not exist.
    pub target: Option<TargetState>,
    /// `None` when the primary does not exist (yet).
    pub primary: Option<PrimaryState>,
    pub probes: Probes,
    /// Spec problems found by `validate` (empty when valid).
    pub invalid: Vec<String>,
    /// Accepted-but-not-acted-on fields (`validate::unsupported`).
    pub unsupported: Vec<String>,
    /// Whether the primary's pod template is what promoting the target now would write (flagger-id
    /// aside); `None` when unknown (no primary or no target). Used to adopt a status written by
    /// another controller without losing a change made meanwhile.
    pub target_matches_primary: Option<bool>,
    /// Why the routing objects may not carry the last split yet (`Router::pending`, e.g. a
    /// Gateway that has not accepted the HTTPRoute's generation): the analysis waits, without
    /// counting a failure.
    pub routes_pending: Option<String>,
    /// The concurrency limits that apply to this Canary, with the other Canaries they count
    /// (`concurrency`); empty when there is none.
    pub concurrency: Vec<super::concurrency::ConcurrencyLimit>,
}

/// Side effects, in the order they must be applied (before the status write).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the primary workload and its config copies if missing (never updates one).
    EnsurePrimary,
    /// Create or update the `-canary` and `-primary` Services.
    EnsureServices,
    /// Create or update the apex Service and the routing objects with these weights.
    EnsureRoutes(Weights),
    /// Set the target's replicas (0 = scale to zero).
    ScaleTarget(i32),
    /// Copy the target's pod template and tracked configs to the primary, stamped with
    /// `revision_id`, which starts the primary's rolling update.
    Promote { revision_id: String },
    /// Fire-and-forget hooks (`post-rollout`), with the phase reported in the payload.
    RunHooks(HookKind, CanaryPhase),
    /// Raise the primary's replicas to at least this many (never lowers them; an autoscaler may
    /// scale it down later), through the scale subresource as an HPA does.
    ScalePrimary(i32),
    /// `targetRef` changed: send the routing objects built for this old target back to its
    /// primary (100/0) before the new target is initialised.
    RetireTarget(TargetReference),
}

/// A Kubernetes Event (reason `Synced`, as Flagger) and, when `alert` is set, an alert message.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub severity: Severity,
    pub message: String,
    pub alert: Option<String>,
}

/// The outcome of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: CanaryStatus,
    pub actions: Vec<Action>,
    pub notices: Vec<Notice>,
    /// Look again after this long even if nothing changes (time-gated steps, deadlines).
    pub requeue_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per reconcile; boxing buys nothing
pub enum Step {
    Need(Probe),
    Done(Decision),
}

/// Hash format pennant writes to `lastAppliedSpec` (`tracker::revision`). A status written by
/// another tool (Flagger's FNV hashes) is adopted without starting a run.
pub use crate::api::revision::REVISION_PREFIX;

/// Decide the next step for `canary` given what was observed.
pub fn decide(canary: &Canary, obs: &Observed) -> Step {
    let mut m = Machine::new(canary, obs);
    match m.run() {
        Flow::Need(p) => Step::Need(p),
        Flow::Done => {
            m.finish_routes();
            Step::Done(m.finish())
        }
    }
}

/// The weights the routing objects must carry for a status, derived from status alone so a
/// restarted controller (or an edited Canary) rebuilds exactly the same routes.
pub fn routes_for(status: &CanaryStatus, analysis: Option<&CanaryAnalysis>) -> Weights {
    let w = status.canary_weight.clamp(0, 100);
    let split = |c: i32| Weights {
        primary: 100 - c,
        canary: c,
        mirror: false,
    };
    match status.phase {
        Some(CanaryPhase::Progressing | CanaryPhase::WaitingPromotion | CanaryPhase::Promoting) => {
            let mut s = split(w);
            if let Some(a) = analysis
                && w == 0
            {
                // Blue/green mirrors for every iteration; a canary release mirrors for its
                // first interval only (status.iterations 1 marks that interval, see
                // `step_canary`).
                s.mirror = match a.strategy() {
                    Strategy::BlueGreen => a.mirror(),
                    Strategy::Canary => a.mirror() && status.iterations > 0,
                    Strategy::ABTesting => false,
                };
            }
            s
        }
        // A failed promotion keeps traffic on the canary (weight 100); a rollback has weight 0.
        Some(CanaryPhase::Failed) => split(w),
        _ => split(0),
    }
}

enum Flow {
    Need(Probe),
    Done,
}

struct Machine<'a> {
    canary: &'a Canary,
    obs: &'a Observed,
    now: Timestamp,
    before: CanaryStatus,
    st: CanaryStatus,
    actions: Vec<Action>,
    notices: Vec<Notice>,
    requeue: Option<Duration>,
    /// The decision writes the routing objects for the status it writes ([`Self::finish_routes`]):
    /// every reconcile of a run's phase, and the steps that set the routes outside a run
    /// (initialisation, idle, a run's start, a target gone mid-run).
    routes: bool,
}

impl<'a> Machine<'a> {
    fn new(canary: &'a Canary, obs: &'a Observed) -> Self {
        let before = canary.status.clone().unwrap_or_default();
        Self {
            canary,
            obs,
            now: obs.now,
            st: before.clone(),
            before,
            actions: vec![],
            notices: vec![],
            requeue: None,
            routes: false,
        }
    }

    fn analysis(&self) -> CanaryAnalysis {
        self.canary.spec.analysis().cloned().unwrap_or_default()
    }

    fn ns(&self) -> &str {
        self.canary
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    /// `<target>.<namespace>`, as Flagger words its messages.
    fn target_id(&self) -> String {
        format!("{}.{}", self.canary.spec.target_ref.name, self.ns())
    }

    fn canary_id(&self) -> String {
        format!(
            "{}.{}",
            self.canary.metadata.name.as_deref().unwrap_or(""),
            self.ns()
        )
    }

    fn primary_id(&self) -> String {
        format!("{}-primary.{}", self.canary.spec.target_ref.name, self.ns())
    }

    /// Flagger's rollback event for a canary that is not ready past its deadline (or failed),
    /// with its wording per kind (`damonset` is Flagger's spelling).
    fn canary_deadline_message(&self, msg: &str) -> String {
        let (id, tid) = (self.canary_id(), self.target_id());
        let why = match self.kind() {
            "DaemonSet" => format!("canary damonset {tid} not ready with retryable false: {msg}"),
            _ => format!("canary deployment {tid} not ready: {msg}"),
        };
        format!("Rolling back {id} progress deadline exceeded {why}")
    }

    fn before_halted_on(&self, message: &str) -> bool {
        crate::api::find_condition(&self.before.conditions, types::HALTED)
            .is_some_and(|c| has_message(c, message))
    }

    fn halted(&mut self, reason: &str, message: String) {
        let now = self.time();
        let since = self.halted_since();
        set_condition(
            &mut self.st.conditions,
            types::HALTED,
            "True",
            reason,
            &message,
            &now,
        );
        // A halt that goes on keeps its start, also when `run` cleared the condition first.
        if let Some(c) = self
            .st
            .conditions
            .iter_mut()
            .find(|c| c.type_ == types::HALTED)
        {
            c.last_transition_time = Some(since);
        }
    }

    /// Since when the Canary has been halted: the `Halted` condition as read (whatever its
    /// reason), else now.
    fn halted_since(&self) -> Time {
        crate::api::find_condition(&self.before.conditions, types::HALTED)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.time())
    }

    /// True once the halt has lasted the progress deadline: a halt never outlives it silently.
    /// Schedules a look at the moment it expires.
    fn halt_outlived_deadline(&mut self) -> bool {
        let elapsed = self.elapsed_since(&self.halted_since());
        let deadline = self.canary.spec.progress_deadline();
        if elapsed >= deadline {
            true
        } else {
            self.requeue_in(deadline - elapsed);
            false
        }
    }

    /// Wait without stepping or counting a failure: one Warning event when the reason is new,
    /// the `Halted` condition, a look again in 5 s.
    fn halt(&mut self, reason: &str, message: String) -> Flow {
        self.halt_alerting(reason, message, None)
    }

    /// [`Self::halt`], the Warning event also sent as `alert` when the reason is new.
    fn halt_alerting(&mut self, reason: &str, message: String, alert: Option<String>) -> Flow {
        if !self.before_halted_on(&message) {
            self.notice(Severity::Warn, message.clone(), alert);
        }
        self.halted(reason, message);
        self.requeue_in(Duration::from_secs(5));
        Flow::Done
    }

    fn clear_halted(&mut self) {
        remove_condition(&mut self.st.conditions, types::HALTED);
    }

    fn kind(&self) -> &str {
        &self.canary.spec.target_ref.kind
    }

    fn time(&self) -> Time {
        Time(self.now)
    }

    fn info(&mut self, message: String) {
        self.notices.push(Notice {
            severity: Severity::Info,
            message,
            alert: None,
        });
    }

    fn notice(&mut self, severity: Severity, message: String, alert: Option<String>) {
        self.notices.push(Notice {
            severity,
            message,
            alert,
        });
    }

    fn requeue_in(&mut self, d: Duration) {
        // Never sooner than 200 ms, never later than an hour (huge intervals or deadlines in a
        // spec must not overflow a timer; looking again costs no writes).
        let d = d.clamp(Duration::from_millis(200), Duration::from_secs(3600));
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn elapsed_since(&self, t: &Time) -> Duration {
        let d: SignedDuration = self.now.duration_since(t.0);
        d.try_into().unwrap_or(Duration::ZERO)
    }

    /// Set the phase with Flagger's `SetStatusPhase` side effects on weight and iterations.
    fn set_phase(&mut self, phase: CanaryPhase) {
        if self.st.phase != Some(phase) {
            self.st.unready_since = None;
        }
        self.st.phase = Some(phase);
        if !matches!(
            phase,
            CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::Promoting
        ) && !(phase == CanaryPhase::WaitingPromotion)
        {
            self.st.canary_weight = 0;
            self.st.iterations = 0;
        }
        if matches!(phase, CanaryPhase::Initialized | CanaryPhase::Succeeded) {
            self.st.last_promoted_spec = self.st.last_applied_spec.clone();
        }
        if !phase.is_running() {
            self.clear_halted();
        }
    }

    fn run(&mut self) -> Flow {
        // First, also for an invalid spec: the old target's routes must not stay on its canary.
        self.follow_target_ref();
        if !self.obs.invalid.is_empty() {
            let msg = format!("invalid Canary: {}", self.obs.invalid.join("; "));
            self.stall("InvalidSpec", msg);
            return self.invalid_mid_run();
        }
        let Some(target) = self.obs.target.clone() else {
            let msg = format!(
                "target {} {}/{} not found",
                self.kind(),
                self.ns(),
                self.canary.spec.target_ref.name
            );
            self.stall("TargetNotFound", msg);
            // Mid-run, the canary's pods went with their Deployment: give the traffic back.
            if self.st.phase.is_some_and(CanaryPhase::is_running) && self.st.canary_weight > 0 {
                self.st.canary_weight = 0;
                self.routes = true;
            }
            return Flow::Done;
        };
        self.clear_stall();
        self.report_unsupported();

        if self.canary.spec.suspend {
            return Flow::Done;
        }
        // Whatever a run's phase decides (a step, a halt, a rollback, a promotion), the routes
        // follow the status it writes.
        self.routes = self.st.phase.is_some_and(|p| {
            matches!(
                p,
                CanaryPhase::Waiting
                    | CanaryPhase::Progressing
                    | CanaryPhase::WaitingPromotion
                    | CanaryPhase::Promoting
                    | CanaryPhase::Finalising
            )
        });
        match self.st.phase {
            None | Some(CanaryPhase::Initializing) => self.initialize(&target),
            Some(CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed) => {
                self.idle(&target)
            }
            Some(CanaryPhase::Waiting) => self.waiting(&target),
            Some(CanaryPhase::Progressing | CanaryPhase::WaitingPromotion) => self.analyse(&target),
            Some(CanaryPhase::Promoting) => self.promoting(&target),
            Some(CanaryPhase::Finalising) => self.finalising(),
            Some(CanaryPhase::Terminating | CanaryPhase::Terminated) => Flow::Done,
        }
    }

    /// `status.targetRef` names the target the status belongs to (adopted from the spec when
    /// unset). When `spec.targetRef` names another one, the old target's routes go back to its
    /// primary (a run in flight ends there: its canary is unverified) and the new target is
    /// initialised from a fresh status, as a new Canary would be.
    fn follow_target_ref(&mut self) {
        let new = self.canary.spec.target_ref.clone();
        let Some(old) = self
            .st
            .target_ref
            .clone()
            .filter(|old| old.kind != new.kind || old.name != new.name)
        else {
            self.st.target_ref = Some(new);
            return;
        };
        let running = self.st.phase.is_some_and(CanaryPhase::is_running);
        if self.st.phase.is_some() {
            self.actions.push(Action::RetireTarget(old.clone()));
        }
        let msg = format!(
            "targetRef changed from {} {} to {} {}: traffic of {} goes back to {}-primary, {} is initialised",
            old.kind, old.name, new.kind, new.name, old.name, old.name, new.name
        );
        let alert = running.then(|| format!("Canary run interrupted: {msg}"));
        self.notice(Severity::Warn, msg, alert);
        self.st = CanaryStatus {
            routing_provider: self.st.routing_provider.clone(),
            target_ref: Some(new),
            ..Default::default()
        };
    }

    fn stall(&mut self, reason: &str, message: String) {
        // Compared with the status as read: `run` clears the condition before re-deciding.
        let changed = crate::api::find_condition(&self.before.conditions, types::STALLED)
            .is_none_or(|c| !has_message(c, &message));
        let now = self.time();
        set_condition(
            &mut self.st.conditions,
            types::STALLED,
            "True",
            reason,
            &message,
            &now,
        );
        if changed {
            self.notice(Severity::Warn, message, None);
        }
    }

    /// An invalid spec mid-analysis holds no traffic on the unverified canary past the progress
    /// deadline, measured (as halts) from the `Stalled` condition's start: then it rolls back.
    /// The rollback's routes come first: if the router cannot build them from this spec, the
    /// apply stops there and the canary, which still has its share, is not scaled down.
    fn invalid_mid_run(&mut self) -> Flow {
        let analysing = matches!(
            self.st.phase,
            Some(CanaryPhase::Progressing | CanaryPhase::WaitingPromotion)
        );
        if !analysing || self.st.canary_weight == 0 {
            return Flow::Done;
        }
        let since = crate::api::find_condition(&self.st.conditions, types::STALLED)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.time());
        let elapsed = self.elapsed_since(&since);
        let deadline = self.canary.spec.progress_deadline();
        if elapsed < deadline {
            self.requeue_in(deadline - elapsed);
            return Flow::Done;
        }
        let m = format!(
            "Rolling back {} invalid Canary for longer than the progress deadline: {}",
            self.canary_id(),
            self.obs.invalid.join("; ")
        );
        self.routes = true;
        self.rollback(m)
    }

    fn clear_stall(&mut self) {
        remove_condition(&mut self.st.conditions, types::STALLED);
    }

    fn report_unsupported(&mut self) {
        if self.obs.unsupported.is_empty() {
            remove_condition(&mut self.st.conditions, types::UNSUPPORTED);
            return;
        }
        let message = format!(
            "accepted but not acted on, ignored: {}",
            self.obs.unsupported.join(", ")
        );
        let changed = crate::api::find_condition(&self.st.conditions, types::UNSUPPORTED)
            .is_none_or(|c| !has_message(c, &message));
        let now = self.time();
        set_condition(
            &mut self.st.conditions,
            types::UNSUPPORTED,
            "True",
            "UnsupportedFields",
            &message,
            &now,
        );
        if changed {
            self.notice(Severity::Warn, message, None);
        }
    }

    /// Bootstrap: primary, services, then (once the primary is ready) routes and target to zero.
    fn initialize(&mut self, target: &TargetState) -> Flow {
        if self.st.phase.is_none() {
            self.st.phase = Some(CanaryPhase::Initializing);
        }
        self.actions.push(Action::EnsurePrimary);
        self.actions.push(Action::EnsureServices);
        let readiness = self
            .obs
            .primary
            .as_ref()
            .map(|p| p.readiness.clone())
            .unwrap_or_else(|| Readiness::NotReady("primary is being created".into()));
        if !self.canary.spec.skip_analysis() {
            match readiness {
                Readiness::Ready => {}
                Readiness::NotReady(msg) | Readiness::Failed(msg) => {
                    // Flagger's Warning, once, when the wait starts
                    if self.before.unready_since.is_none() {
                        let pid = self.primary_id();
                        let m = match self.kind() {
                            "DaemonSet" => format!("primary daemonset {pid} not ready: {msg}"),
                            _ => format!("{pid} not ready: {msg}"),
                        };
                        self.notice(Severity::Warn, m, None);
                    }
                    // Never route to a primary that is not ready: the target keeps serving.
                    if self.deadline_passed() {
                        let m = format!(
                            "primary {}-primary.{} not ready after the progress deadline: {msg}; traffic stays on the target",
                            self.canary.spec.target_ref.name,
                            self.ns()
                        );
                        self.stall("PrimaryNotReady", m);
                    }
                    return Flow::Done;
                }
            }
        }
        if !self.canary.spec.skip_analysis() && !self.analysis().metrics.is_empty() {
            // Flagger's provider check at initialisation: an error only warns
            let Some(results) = &self.obs.probes.metrics else {
                return Flow::Need(Probe::Metrics);
            };
            match results.iter().find_map(|r| match &r.outcome {
                MetricOutcome::Error(m) => Some(format!("Metric query failed for {}: {m}", r.name)),
                _ => None,
            }) {
                None => self.info("all the metrics providers are available!".into()),
                Some(e) => self.notice(
                    Severity::Warn,
                    format!("Error checking metric providers: {e}"),
                    None,
                ),
            }
        }
        self.st.unready_since = None;
        // An existing primary that runs another revision (e.g. `targetRef` switched away
        // mid-run and back): the target's revision was never promoted, it is analysed next.
        let pending = self.primary_runs_another_revision(target);
        self.st.last_applied_spec = (!pending).then(|| target.revision.clone());
        self.st.tracked_configs = Some(target.configs.clone());
        self.st.failed_checks = 0;
        self.set_phase(CanaryPhase::Initialized);
        self.routes = true;
        if pending {
            let (pid, tid) = (self.primary_id(), self.target_id());
            self.info(format!(
                "{pid} runs another revision than {tid}: {tid} revision {} is analysed",
                target.revision
            ));
            self.requeue_in(Duration::from_secs(1));
        } else {
            self.actions.push(Action::ScaleTarget(0));
        }
        let id = self.canary_id();
        self.notice(
            Severity::Info,
            format!("Initialization done! {id}"),
            Some(format!(
                "New {} detected, initialization completed.",
                self.kind()
            )),
        );
        Flow::Done
    }

    /// Whether the primary's `flagger-id` stamp names another revision than the target's (it
    /// was not created from the target now, nor promoted from it).
    fn primary_runs_another_revision(&self, target: &TargetState) -> bool {
        let id = revision_id(&target.revision, &target.configs);
        self.obs
            .primary
            .as_ref()
            .and_then(|p| p.revision_id.as_deref())
            .is_some_and(|p| p != id)
    }

    /// Track how long the awaited workload has been unready; true once past the deadline.
    /// Schedules a look at the moment the deadline expires.
    fn deadline_passed(&mut self) -> bool {
        let since = self.st.unready_since.get_or_insert(Time(self.now)).clone();
        let deadline = self.canary.spec.progress_deadline();
        let elapsed = self.elapsed_since(&since);
        if elapsed >= deadline {
            true
        } else {
            self.requeue_in(deadline - elapsed);
            false
        }
    }

    fn target_changed(&self, target: &TargetState) -> bool {
        let rev = Some(&target.revision);
        let spec_changed =
            self.st.last_applied_spec.as_ref() != rev && self.st.last_promoted_spec.as_ref() != rev;
        let configs_changed = self.st.tracked_configs.as_ref() != Some(&target.configs);
        spec_changed || configs_changed
    }

    /// Steady state: keep objects in shape; start a run when the target changes.
    fn idle(&mut self, target: &TargetState) -> Flow {
        // A deleted primary is recreated from the target only when the target still runs the
        // promoted revision; after a rollback it runs the rejected one.
        let promoted = self.st.last_promoted_spec.as_ref() == Some(&target.revision);
        if self.obs.primary.is_none() && !promoted {
            let m = format!(
                "primary {} not found and {} runs an unpromoted revision {}: not recreating it from the target",
                self.primary_id(),
                self.target_id(),
                target.revision
            );
            // once per revision: the message names it
            if crate::api::find_condition(&self.before.conditions, types::STALLED)
                .is_none_or(|c| !has_message(c, &m))
            {
                self.alert_unanalysed_on_canary(target);
            }
            self.stall("PrimaryNotFound", m);
            return Flow::Done;
        }
        self.return_to_primary();
        self.actions.push(Action::EnsurePrimary);
        self.actions.push(Action::EnsureServices);
        self.routes = true;

        // Adopt a status written by another tool (e.g. Flagger's FNV hashes): re-baseline
        // instead of starting a run for an unchanged workload (Flagger #1673, #1799).
        let foreign = |s: &Option<String>| {
            s.as_deref()
                .is_some_and(|h| !h.starts_with(REVISION_PREFIX))
        };
        if foreign(&self.st.last_applied_spec) || foreign(&self.st.last_promoted_spec) {
            // The target was changed while no controller ran: that change still deserves a run
            // (a failed revision stays failed: its target never matches the primary).
            if self.obs.target_matches_primary == Some(false)
                && self.st.phase != Some(CanaryPhase::Failed)
            {
                self.st.last_applied_spec = None;
                self.st.last_promoted_spec = None;
                self.info(format!(
                    "Adopted {} from another controller's status; its target differs from the primary",
                    self.canary_id()
                ));
                return self.start_run(target);
            }
            self.st.last_applied_spec = Some(target.revision.clone());
            if self.st.phase != Some(CanaryPhase::Failed) {
                self.st.last_promoted_spec = Some(target.revision.clone());
            }
            if self.st.tracked_configs.is_none() {
                self.st.tracked_configs = Some(target.configs.clone());
            }
            self.info(format!(
                "Adopted {} revision {} without a run (status written by another controller)",
                self.target_id(),
                target.revision
            ));
            return Flow::Done;
        }
        if !self.target_changed(target) {
            return Flow::Done;
        }
        self.start_run(target)
    }

    /// Failed with the traffic on the canary and no primary: the Deployment controller rolls a
    /// new revision of the target onto that traffic, unanalysed. pennant cannot stop it, but says
    /// so (once per revision, see `idle`) as an error alert, with the way back.
    fn alert_unanalysed_on_canary(&mut self, target: &TargetState) {
        let on_canary = self.st.phase == Some(CanaryPhase::Failed) && self.st.canary_weight > 0;
        let new_revision = self.st.last_applied_spec.as_ref() != Some(&target.revision)
            || self.st.tracked_configs.as_ref() != Some(&target.configs);
        if !(on_canary && new_revision) {
            return;
        }
        let (tid, pid) = (self.target_id(), self.primary_id());
        let promoted = self.st.last_promoted_spec.as_deref().unwrap_or("unknown");
        let m = format!(
            "{tid} rolled to revision {} while primary {pid} is missing: the unanalysed revision serves all traffic; roll {tid} back to the promoted revision {promoted} and pennant recreates the primary from it, then routes the traffic back to it",
            target.revision
        );
        self.notice(Severity::Error, m.clone(), Some(m));
    }

    /// Failed with the traffic on the canary (`fail_to_canary`, `failed_promotion`): once the
    /// primary is ready again and does not run the revision on the canary (scaled back up,
    /// recreated from the promoted revision), the traffic goes back to it; the canary is scaled
    /// down after the drain (`lastStepTime` marks its start).
    fn return_to_primary(&mut self) {
        if self.st.phase != Some(CanaryPhase::Failed) {
            return;
        }
        let analysis = self.analysis();
        if self.st.canary_weight == 0 {
            let Some(since) = self.st.last_step_time.clone() else {
                return;
            };
            let (elapsed, drain) = (self.elapsed_since(&since), drain_time(&analysis));
            if elapsed < drain {
                self.requeue_in(drain - elapsed);
                return;
            }
            self.st.last_step_time = None;
            self.actions.push(Action::ScaleTarget(0));
            let tid = self.target_id();
            self.info(format!(
                "Scaling down {tid}: traffic is back on the primary"
            ));
            return;
        }
        let Some(p) = &self.obs.primary else { return };
        let on_canary = revision_id(
            self.st.last_applied_spec.as_deref().unwrap_or_default(),
            &self.st.tracked_configs.clone().unwrap_or_default(),
        );
        if p.readiness != Readiness::Ready || p.revision_id.as_deref() == Some(&on_canary) {
            return;
        }
        self.st.canary_weight = 0;
        self.st.last_step_time = Some(self.time());
        self.requeue_in(drain_time(&analysis));
        let (pid, tid) = (self.primary_id(), self.target_id());
        self.notice(
            Severity::Info,
            format!("Routing all traffic to primary {pid}: it is ready again and runs the promoted revision; scaling down {tid} after the drain"),
            None,
        );
    }

    /// New revision: confirm-rollout gate, then scale the canary up and enter Progressing.
    fn start_run(&mut self, target: &TargetState) -> Flow {
        if let Some(flow) = self.concurrency_gate(target) {
            return flow;
        }
        let analysis = self.analysis();
        match self.hook(&analysis, HookKind::ConfirmRollout) {
            Err(p) => return Flow::Need(p),
            Ok(Some(v)) if !v.pass => {
                let first = self.st.phase != Some(CanaryPhase::Waiting);
                self.set_phase(CanaryPhase::Waiting);
                self.st.last_step_time = Some(self.time());
                self.requeue_in(analysis.interval());
                if first {
                    let muted = analysis
                        .webhooks_of(HookKind::ConfirmRollout.as_str())
                        .all(|w| w.mute_alert.unwrap_or(false));
                    let id = self.canary_id();
                    let msg = format!("Halt {id} advancement waiting for approval {}", v.message);
                    let alert = (!muted).then(|| "Canary is waiting for approval.".to_string());
                    self.notice(Severity::Warn, msg, alert);
                }
                return Flow::Done;
            }
            Ok(_) => {}
        }
        self.actions
            .push(Action::ScaleTarget(target.scale_up_replicas.max(1)));
        self.reset_run(target);
        self.set_phase(CanaryPhase::Progressing);
        self.announce_rollback_window(target);
        let tid = self.target_id();
        self.notice(
            Severity::Info,
            format!("New revision detected! Scaling up {tid}"),
            Some("New revision detected, progressing canary analysis.".into()),
        );
        self.routes = true;
        self.requeue_in(Duration::from_secs(1));
        Flow::Done
    }

    /// The concurrency limit (`Observed::concurrency`): `None` when the run may start now,
    /// else the Canary waits in `Waiting` with the `Queued` condition (its lastTransitionTime
    /// is the place in the FIFO queue) and one event on entering the queue. A revision inside the
    /// rollback window never waits.
    fn concurrency_gate(&mut self, target: &TargetState) -> Option<Flow> {
        use super::concurrency::{Admission, admit, queued_since};
        let queued = queued_since(&self.st);
        // whole seconds, as the status keeps it: the order is the same before and after a write
        let queued_at = queued
            .unwrap_or_else(|| Timestamp::from_second(self.now.as_second()).unwrap_or(self.now));
        let admission = if self.obs.concurrency.is_empty() || self.rollback_window_hit(target) {
            Admission::Start
        } else {
            admit(&self.canary_id(), queued_at, &self.obs.concurrency)
        };
        let why = match admission {
            Admission::Start => {
                remove_condition(&mut self.st.conditions, types::QUEUED);
                return None;
            }
            Admission::Wait(why) => why,
        };
        let first = queued.is_none();
        self.set_phase(CanaryPhase::Waiting);
        let msg = format!(
            "Waiting for a free slot to analyse {}: {why}",
            self.target_id()
        );
        // the condition's lastTransitionTime is the place in the queue
        set_condition(
            &mut self.st.conditions,
            types::QUEUED,
            "True",
            "ConcurrencyLimit",
            &msg,
            &Time(queued_at),
        );
        if first {
            self.info(msg);
        }
        // The controller wakes waiting Canaries when a slot frees; this is only a backstop
        // (a running Canary deleted, a namespace annotation changed).
        self.requeue_in(Duration::from_secs(30));
        Some(Flow::Done)
    }

    /// Waiting for a slot: try to start; leave the queue when the target went back to the
    /// revision the Canary already had.
    fn queued(&mut self, target: &TargetState) -> Flow {
        if self.target_changed(target) {
            return self.start_run(target);
        }
        remove_condition(&mut self.st.conditions, types::QUEUED);
        let back = if self.st.last_applied_spec == self.st.last_promoted_spec {
            CanaryPhase::Succeeded
        } else {
            CanaryPhase::Failed
        };
        // in Failed, a step time marks a drain before scaling down (`return_to_primary`)
        self.st.last_step_time = None;
        self.set_phase(back);
        Flow::Done
    }

    /// Whether `target` is one of the revisions promoted before that the Canary's rollback
    /// window (`rollback_window::ANNOTATION`) promotes again without analysis.
    fn rollback_window_hit(&self, target: &TargetState) -> bool {
        use super::rollback_window::{window, within};
        let Ok(Some(n)) = window(self.canary) else {
            return false;
        };
        let id = revision_id(&target.revision, &target.configs);
        within(&super::rollback_window::history(&self.st), &id, n)
    }

    fn announce_rollback_window(&mut self, target: &TargetState) {
        if self.rollback_window_hit(target) {
            let tid = self.target_id();
            self.info(format!(
                "Rollback window: {tid} goes back to a revision promoted before, promoting without analysis"
            ));
        }
    }

    /// With a rollback window, record the promoted revision (Initialized, Succeeded) in the
    /// `RollbackWindow` condition.
    fn remember_promoted(&mut self) {
        if !matches!(super::rollback_window::window(self.canary), Ok(Some(_)))
            || !matches!(
                self.st.phase,
                Some(CanaryPhase::Initialized | CanaryPhase::Succeeded)
            )
        {
            return;
        }
        let (Some(spec), Some(configs)) = (&self.st.last_promoted_spec, &self.st.tracked_configs)
        else {
            return;
        };
        let id = revision_id(spec, configs);
        let history = super::rollback_window::history(&self.st);
        if history.last() != Some(&id) {
            let history = super::rollback_window::remember(&history, &id);
            let now = self.time();
            set_condition(
                &mut self.st.conditions,
                types::ROLLBACK_WINDOW,
                "True",
                "PromotedRevisions",
                &super::rollback_window::history_message(&history),
                &now,
            );
        }
    }

    fn reset_run(&mut self, target: &TargetState) {
        self.st.canary_weight = 0;
        self.st.failed_checks = 0;
        self.st.iterations = 0;
        self.st.last_applied_spec = Some(target.revision.clone());
        self.st.tracked_configs = Some(target.configs.clone());
        self.st.last_step_time = None;
        self.st.unready_since = None;
        self.st.judge = None;
        self.clear_halted();
    }

    /// Waiting for confirm-rollout: re-ask each interval. A rollback hook that fires meanwhile
    /// ends the run (Flagger documents this but never checks it in Waiting, §2.16-3).
    fn waiting(&mut self, target: &TargetState) -> Flow {
        if super::concurrency::queued_since(&self.st).is_some() {
            return self.queued(target);
        }
        let analysis = self.analysis();
        if let Some(wait) = self.until_due(&analysis) {
            self.requeue_in(wait);
            return Flow::Done;
        }
        if let Some(flow) = self.rollback_hook_or_routes_pending(&analysis, false) {
            return flow;
        }
        self.start_run(target)
    }

    /// Before a run starts (`Waiting`) and before each of its steps: a rollback hook that
    /// fires ends the run, and routes the router has not applied yet hold it, since the
    /// metrics of a step mean nothing until the router applied its split (Flagger's GetRoutes
    /// error after #1732). Past the progress deadline a run in progress (`running`) rolls
    /// back; one not started yet (its canary has no traffic) waits on, said again as an alert.
    /// `None`: go on.
    fn rollback_hook_or_routes_pending(
        &mut self,
        analysis: &CanaryAnalysis,
        running: bool,
    ) -> Option<Flow> {
        match self.hook(analysis, HookKind::Rollback) {
            Err(p) => return Some(Flow::Need(p)),
            Ok(Some(v)) if v.pass => {
                let m = format!("Rolling back {} manual webhook invoked", self.canary_id());
                return Some(self.rollback(m));
            }
            Ok(_) => {}
        }
        let why = self.obs.routes_pending.clone()?;
        let id = self.canary_id();
        let m = format!("Halt {id} advancement {why}");
        if !self.halt_outlived_deadline() {
            return Some(self.halt("RoutesPending", m));
        }
        Some(if running {
            self.rollback(format!(
                "Rolling back {id} routes not accepted within the progress deadline: {why}"
            ))
        } else {
            let m = format!("{m} (longer than the progress deadline)");
            self.halt_alerting("RoutesPending", m.clone(), Some(m))
        })
    }

    /// Time left before the next analysis step is due; `None` when it is due now.
    fn until_due(&self, analysis: &CanaryAnalysis) -> Option<Duration> {
        let last = self.st.last_step_time.as_ref()?;
        let elapsed = self.elapsed_since(last);
        let interval = analysis.interval();
        (elapsed < interval).then(|| interval - elapsed)
    }

    /// The time a step taken now is recorded at, and the wait until the next one: the time it
    /// was due (`lastStepTime` + interval) when that is less than an interval ago, so a late
    /// reconcile does not push every later step back; otherwise (the first step, or after the
    /// controller was away for more than an interval) now. Never later than now, so the next
    /// step is never early: it is due an interval after the recorded time.
    fn step_slot(&self, analysis: &CanaryAnalysis) -> (Time, Duration) {
        let interval = analysis.interval();
        let due = self.st.last_step_time.as_ref().and_then(|last| {
            let due = last
                .0
                .checked_add(SignedDuration::try_from(interval).ok()?)
                .ok()?;
            let late: Duration = self.now.duration_since(due).try_into().ok()?;
            (late < interval).then(|| (Time(due), interval - late))
        });
        due.unwrap_or_else(|| (self.time(), interval))
    }

    /// Progressing / WaitingPromotion: one analysis step per interval.
    fn analyse(&mut self, target: &TargetState) -> Flow {
        let analysis = self.analysis();
        self.actions.push(Action::EnsureServices);

        if self.st.last_applied_spec.as_ref() != Some(&target.revision)
            || self.st.tracked_configs.as_ref() != Some(&target.configs)
        {
            self.reset_run(target);
            self.set_phase(CanaryPhase::Progressing);
            self.actions
                .push(Action::ScaleTarget(target.scale_up_replicas.max(1)));
            let tid = self.target_id();
            self.info(format!(
                "New revision detected! Restarting analysis for {tid}"
            ));
            self.requeue_in(Duration::from_secs(1));
            return Flow::Done;
        }

        // A threshold reached by an earlier step (whose status write may have been retried)
        // rolls back before anything else is looked at.
        if !self.canary.spec.skip_analysis() && self.st.failed_checks >= analysis.threshold() {
            let m = format!(
                "Rolling back {} failed checks threshold reached {}",
                self.canary_id(),
                self.st.failed_checks
            );
            return self.rollback(m);
        }

        match self.obs.primary.as_ref().map(|p| &p.readiness) {
            Some(Readiness::Failed(msg)) => {
                let msg = format!("primary {} failed: {msg}", self.primary_id());
                return self.rollback(msg);
            }
            // Deleted: it will not come back by itself (its last promoted template went with
            // it, and the target runs the unverified revision), and the canary's pods are the
            // only ones left.
            None => {
                let m = format!(
                    "primary {} not found: all traffic routed to the canary {}",
                    self.primary_id(),
                    self.target_id()
                );
                return self.fail_to_canary(m);
            }
            // The primary carries the rest of the traffic: never step while it is not ready
            // (someone scaled it, its pods are evicted); wait, and say so once. Past the
            // progress deadline the traffic goes to whatever is ready.
            Some(Readiness::NotReady(why)) => {
                let m = format!(
                    "Halt {} advancement primary {} {why}",
                    self.canary_id(),
                    self.primary_id()
                );
                if self.halt_outlived_deadline() {
                    let m = format!(
                        "primary {} not ready within the progress deadline: {why}",
                        self.primary_id()
                    );
                    if target.readiness == Readiness::Ready {
                        let m =
                            format!("{m}; all traffic routed to the canary {}", self.target_id());
                        return self.fail_to_canary(m);
                    }
                    return self.rollback(m);
                }
                return self.halt("PrimaryNotReady", m);
            }
            Some(Readiness::Ready) => self.clear_halted(),
        }

        match &target.readiness {
            Readiness::Ready => self.st.unready_since = None,
            Readiness::NotReady(msg) => {
                let msg = msg.clone();
                if self.deadline_passed() {
                    let m = self.canary_deadline_message(&msg);
                    return self.rollback(m);
                }
                return Flow::Done;
            }
            Readiness::Failed(msg) => {
                let m = self.canary_deadline_message(msg);
                return self.rollback(m);
            }
        }

        if self.rollback_window_hit(target) {
            self.promote(target);
            return Flow::Done;
        }
        if self.canary.spec.skip_analysis() {
            self.promote(target);
            return Flow::Done;
        }

        if let Some(wait) = self.until_due(&analysis) {
            self.requeue_in(wait);
            return Flow::Done;
        }

        if let Some(flow) = self.rollback_hook_or_routes_pending(&analysis, true) {
            return flow;
        }

        // A step happens now, whatever its outcome. It is recorded at the time it was due, so
        // the steps keep to the interval's grid (Flagger's ticker) instead of drifting by the
        // reconcile's latency and the one-second rounding of `lastStepTime` at every step.
        let (at, next_in) = self.step_slot(&analysis);
        self.st.last_step_time = Some(at);
        self.requeue_in(next_in);

        let starting = self.st.canary_weight == 0 && self.st.iterations == 0;
        let checks = if starting {
            self.pre_rollout(&analysis)
        } else {
            self.run_checks(&analysis)
        };
        if let Some(flow) = checks {
            return flow;
        }

        let judged = !starting && super::judged::opted_in(self.canary);
        match analysis.strategy() {
            // blue/green after its switch to the canary: the verdict is in, promote
            Strategy::BlueGreen if judged && self.st.canary_weight >= 100 => {
                self.finish_blue_green(target, &analysis)
            }
            Strategy::Canary | Strategy::ABTesting | Strategy::BlueGreen if judged => {
                self.judge_step(target, &analysis)
            }
            Strategy::Canary => self.step_canary(target, &analysis),
            Strategy::ABTesting => self.step_ab(target, &analysis),
            Strategy::BlueGreen => self.step_blue_green(target, &analysis),
        }
    }

    /// The start tick: pre-rollout hooks, and a metrics provider that answers. `None` = passed,
    /// go on to the first step.
    fn pre_rollout(&mut self, analysis: &CanaryAnalysis) -> Option<Flow> {
        match self.hook(analysis, HookKind::PreRollout) {
            Err(p) => return Some(Flow::Need(p)),
            Ok(Some(v)) if !v.pass => {
                let id = self.canary_id();
                self.fail_check(format!(
                    "Halt advancement {id} pre-rollout check failed: {}",
                    v.message
                ));
                return Some(Flow::Done);
            }
            Ok(_) => {}
        }
        // No traffic moves before the metrics provider has answered. At weight 0 the canary
        // has no traffic, so only provider errors count here, not values or empty results.
        if let Some(flow) = self.check_metrics(analysis, false) {
            return Some(flow);
        }
        // The judge's count declarations are checked before the first traffic shift: an
        // invalid one stops the judge at weight 0 (a failed check), never after an advance.
        let declares = analysis.metrics.iter().any(|m| m.template_ref.is_some());
        if declares && super::judged::opted_in(self.canary) {
            let Some(declared) = self.obs.probes.count_signals.clone() else {
                return Some(Flow::Need(Probe::CountSignals));
            };
            let now = self.time();
            match declared {
                Err(e) => {
                    let m = format!("sequential judge: {e}");
                    set_condition(
                        &mut self.st.conditions,
                        types::JUDGE_READY,
                        "False",
                        "CannotJudge",
                        &m,
                        &now,
                    );
                    self.fail_check(format!("Halt {} advancement {m}", self.canary_id()));
                    return Some(Flow::Done);
                }
                Ok(_) => remove_condition(&mut self.st.conditions, types::JUDGE_READY),
            }
        }
        let tid = self.target_id();
        self.info(format!("Starting canary analysis for {tid}"));
        None
    }

    /// Rollout hooks, then metrics; the first failure counts one failed check.
    fn run_checks(&mut self, analysis: &CanaryAnalysis) -> Option<Flow> {
        match self.hook(analysis, HookKind::Rollout) {
            Err(p) => return Some(Flow::Need(p)),
            Ok(Some(v)) if !v.pass => {
                let id = self.canary_id();
                self.fail_check(format!(
                    "Halt {id} advancement external check failed: {}",
                    v.message
                ));
                return Some(Flow::Done);
            }
            Ok(_) => {}
        }
        self.check_metrics(analysis, true)
    }

    /// Metric checks: ask for them, record whether the provider answered (`MetricsAvailable`),
    /// count the first failure. With `judge_values` false only provider errors fail.
    fn check_metrics(&mut self, analysis: &CanaryAnalysis, judge_values: bool) -> Option<Flow> {
        if analysis.metrics.is_empty() {
            return None;
        }
        let Some(results) = self.obs.probes.metrics.clone() else {
            return Some(Flow::Need(Probe::Metrics));
        };
        let judged = super::judged::opted_in(self.canary);
        let failure = |r: &MetricCheck| match &r.outcome {
            MetricOutcome::Pass(_) => None,
            // the sequential judge replaces Flagger's per-window builtin thresholds
            MetricOutcome::OutOfRange(..) | MetricOutcome::NoValues(_)
                if judged && super::judged::replaces(analysis, &r.name) =>
            {
                None
            }
            MetricOutcome::Error(m) => Some(format!("Metric query failed for {}: {m}", r.name)),
            _ if !judge_values => None,
            MetricOutcome::OutOfRange(_, m) => {
                Some(format!("Halt {} advancement {m}", self.canary_id()))
            }
            MetricOutcome::NoValues(m) => Some(format!("Halt advancement {m}")),
        };
        let first_failure = results.iter().find_map(failure);
        let provider_error = results.iter().find_map(|r| match &r.outcome {
            MetricOutcome::Error(m) => Some(format!("Metric query failed for {}: {m}", r.name)),
            _ => None,
        });
        let now = self.time();
        match &provider_error {
            Some(e) => set_condition(
                &mut self.st.conditions,
                types::METRICS_AVAILABLE,
                "False",
                "QueryFailed",
                e,
                &now,
            ),
            None => remove_condition(&mut self.st.conditions, types::METRICS_AVAILABLE),
        }
        let msg = first_failure?;
        self.fail_check(msg);
        Some(Flow::Done)
    }

    fn fail_check(&mut self, message: String) {
        self.st.failed_checks += 1;
        self.notice(Severity::Warn, message, None);
    }

    /// One step of the sequential judge (`judged::tick`), then the §4.6 progression: FAIL rolls
    /// back at once, PASS at `maxWeight` (or `fastPromotion`) promotes after the gates, else
    /// the ramp goes on; at `maxWeight` CONTINUE holds until a verdict or `maxSteps`. With
    /// `iterations` (blue/green, A/B) the last iteration plays `maxWeight`'s part: the
    /// iterations go on while PASS or CONTINUE, promotion needs PASS at the last one (or
    /// `onInconclusive`).
    fn judge_step(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        use super::judged::{Stage, Tick, guardrails, inconclusive_message, tick};
        use crate::analysis::judge::{OnInconclusive, Progress};
        let Some(obs) = self.obs.probes.judge.clone() else {
            return Flow::Need(Probe::Judge);
        };
        let strategy = analysis.strategy();
        let stage = match strategy {
            Strategy::Canary => Stage::Ramp {
                weight: self.st.canary_weight,
                max_weight: analysis.max_weight(),
            },
            Strategy::ABTesting | Strategy::BlueGreen => Stage::Iteration {
                weight: self.st.canary_weight,
                iteration: self.st.iterations,
                iterations: analysis.iterations(),
            },
        };
        let mut js = self.st.judge.clone().unwrap_or_default();
        let out = tick(&mut js, &obs, stage, &guardrails(analysis));
        self.st.judge = Some(js.clone());
        let now = self.time();
        let id = self.canary_id();
        let (progress, evidence) = match out {
            Tick::Deferred(m) => {
                self.info(format!("{}: step deferred, {m}", self.canary_id()));
                return Flow::Done;
            }
            Tick::Broken(m) => {
                set_condition(
                    &mut self.st.conditions,
                    types::JUDGE_READY,
                    "False",
                    "CannotJudge",
                    &m,
                    &now,
                );
                // a judge that cannot judge never advances the canary
                self.fail_check(format!("Halt {} advancement {m}", self.canary_id()));
                return Flow::Done;
            }
            // an absolute SLO breach is a FAIL reason of its own (§4.4)
            Tick::Breached(m) => {
                remove_condition(&mut self.st.conditions, types::JUDGE_READY);
                (Progress::Rollback, m)
            }
            Tick::Judged {
                progress,
                evidence,
                warnings,
                ..
            } => {
                remove_condition(&mut self.st.conditions, types::JUDGE_READY);
                for w in warnings {
                    self.notice(Severity::Warn, format!("{id}: {w}"), None);
                }
                let evidence = match progress {
                    Progress::Rollback => format!("sequential judge FAIL: {evidence}"),
                    _ => evidence,
                };
                (progress, evidence)
            }
        };
        match progress {
            Progress::Rollback => {
                let m = format!("Rolling back {id}: {evidence}");
                self.rollback(m)
            }
            Progress::Promote => {
                if self.st.phase != Some(CanaryPhase::WaitingPromotion) {
                    self.info(format!("Sequential judge PASS for {id}: {evidence}"));
                }
                self.judged_promotion(target, analysis)
            }
            Progress::Advance | Progress::Hold if strategy == Strategy::Canary => {
                // `weights: adaptive`: the weight from the evidence (issue 19)
                let w = self.st.canary_weight;
                let fixed_next = if progress == Progress::Advance {
                    (w + analysis.next_step_weight(w))
                        .min(analysis.max_weight())
                        .min(100)
                } else {
                    w
                };
                let choice = adaptive_choice(&js, &obs, analysis, w, fixed_next);
                match (choice, progress) {
                    (Some(c), _) => self.step_canary_to(analysis, c),
                    (None, Progress::Advance) => self.step_canary(target, analysis),
                    (None, _) => Flow::Done,
                }
            }
            Progress::Advance => match strategy {
                Strategy::Canary => self.step_canary(target, analysis),
                Strategy::ABTesting => self.step_ab(target, analysis),
                Strategy::BlueGreen => self.step_blue_green(target, analysis),
            },
            Progress::Hold => Flow::Done,
            Progress::Inconclusive(on) => {
                let m = format!("{id}: {}", inconclusive_message(&js, on));
                match on {
                    OnInconclusive::Rollback => self.rollback(m),
                    OnInconclusive::Promote => {
                        self.info(m);
                        self.judged_promotion(target, analysis)
                    }
                    OnInconclusive::Hold => {
                        // WaitingPromotion semantics: an open confirm-promotion gate promotes
                        if self.st.phase != Some(CanaryPhase::WaitingPromotion) {
                            self.notice(
                                Severity::Warn,
                                m,
                                Some("Canary analysis inconclusive: not enough evidence.".into()),
                            );
                        }
                        if analysis
                            .webhooks_of(HookKind::ConfirmPromotion.as_str())
                            .next()
                            .is_some()
                        {
                            self.judged_promotion(target, analysis)
                        } else {
                            self.st.phase = Some(CanaryPhase::WaitingPromotion);
                            // `weights: adaptive`: held is no licence to exceed the harm
                            // budget. A canary that turns suspicious past `maxSteps` is pulled
                            // back as before them (below maxWeight the judge then advances,
                            // within the budget, until a verdict)
                            let w = self.st.canary_weight;
                            match adaptive_choice(&js, &obs, analysis, w, w) {
                                Some(c) if strategy == Strategy::Canary && c.weight < w => {
                                    self.step_canary_to(analysis, c)
                                }
                                _ => Flow::Done,
                            }
                        }
                    }
                }
            }
        }
    }

    /// The judge's promotion: the confirm-promotion gate, then promotion — for blue/green
    /// first the switch of all traffic to the canary ([`Self::finish_blue_green`]).
    fn judged_promotion(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        match analysis.strategy() {
            Strategy::BlueGreen => self.finish_blue_green(target, analysis),
            Strategy::Canary | Strategy::ABTesting => self.confirm_promotion(target, analysis),
        }
    }

    fn step_canary(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        let max = analysis.max_weight();
        let w = self.st.canary_weight;
        // With `mirror`, the first interval copies the primary's traffic to the canary at
        // weight 0 (Istio, as Flagger), analysed before any user request reaches the canary.
        if w == 0 && analysis.mirror() && self.st.iterations == 0 {
            self.st.iterations = 1;
            let id = self.canary_id();
            self.info(format!("Mirroring traffic to canary {id}"));
            return Flow::Done;
        }
        if w < max {
            if let Some(halted) = self.confirm_traffic_increase(analysis) {
                return halted;
            }
            let next = (w + analysis.next_step_weight(w)).min(max).min(100);
            self.st.canary_weight = next;
            let id = self.canary_id();
            self.info(format!("Advance {id} canary weight {next}"));
            return Flow::Done;
        }
        self.confirm_promotion(target, analysis)
    }

    /// The confirm-traffic-increase gate before more canary traffic: `None` to go on, else the
    /// flow to return (the webhook's answer awaited, or the advance halted with a Warning).
    fn confirm_traffic_increase(&mut self, analysis: &CanaryAnalysis) -> Option<Flow> {
        match self.hook(analysis, HookKind::ConfirmTrafficIncrease) {
            Err(p) => Some(Flow::Need(p)),
            Ok(Some(v)) if !v.pass => {
                let id = self.canary_id();
                let msg = format!(
                    "Halt {id} advancement waiting for traffic increase approval {}",
                    v.message
                );
                self.notice(Severity::Warn, msg, None);
                Some(Flow::Done)
            }
            Ok(_) => None,
        }
    }

    /// `weights: adaptive`: move the canary to the judge's [`Choice`] weight. More traffic asks
    /// the confirm-traffic-increase gate first, as [`Self::step_canary`]; the same weight or
    /// less (a suspicious canary held or pulled back) does not.
    ///
    /// [`Choice`]: crate::analysis::judge::weights::Choice
    fn step_canary_to(
        &mut self,
        analysis: &CanaryAnalysis,
        c: crate::analysis::judge::weights::Choice,
    ) -> Flow {
        use crate::analysis::judge::weights::Reason;
        let w = self.st.canary_weight;
        let next = c.weight.clamp(0, 100);
        if next > w
            && let Some(halted) = self.confirm_traffic_increase(analysis)
        {
            return halted;
        }
        if next == w {
            return Flow::Done;
        }
        self.st.canary_weight = next;
        let id = self.canary_id();
        let harm = c.harm;
        let m = match c.reason {
            Reason::PulledBack => format!(
                "Pull back {id} canary weight {next}: suspicious, worst case {harm:.1} extra failed requests per interval at this weight"
            ),
            Reason::Budgeted => format!(
                "Advance {id} canary weight {next} (adaptive: worst case {harm:.1} extra failed requests per interval)"
            ),
            Reason::Schedule | Reason::Held => format!("Advance {id} canary weight {next}"),
        };
        self.info(m);
        Flow::Done
    }

    /// A/B testing: for `iterations` steps the requests matching `analysis.match` go to the
    /// canary (status weight 100: the routers send the matching rule to the canary and every
    /// other request to the primary), then promotion. As Flagger's `runAB`, except that the
    /// weight is kept in status so the routes can be rebuilt from it.
    fn step_ab(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        let n = analysis.iterations();
        if self.st.iterations < n {
            self.st.iterations += 1;
            self.st.canary_weight = 100;
            let id = self.canary_id();
            let i = self.st.iterations;
            self.info(format!("Advance {id} canary iteration {i}/{n}"));
            return Flow::Done;
        }
        self.confirm_promotion(target, analysis)
    }

    fn step_blue_green(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        let n = analysis.iterations();
        if self.st.iterations < n {
            self.st.iterations += 1;
            let id = self.canary_id();
            let i = self.st.iterations;
            self.info(format!("Advance {id} canary iteration {i}/{n}"));
            return Flow::Done;
        }
        self.finish_blue_green(target, analysis)
    }

    /// After the last iteration: the promotion gate, all traffic to the canary (one tick),
    /// then promotion.
    fn finish_blue_green(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        if self.st.canary_weight < 100 {
            // After the last iteration, switch all traffic to the canary before promoting, so
            // the primary's rolling update never serves mixed versions (as Flagger).
            match self.promotion_gate(analysis) {
                Err(p) => return Flow::Need(p),
                Ok(false) => return Flow::Done,
                Ok(true) => {}
            }
            self.st.canary_weight = 100;
            self.info(if analysis.mirror() {
                "Stop traffic mirroring and route all traffic to canary".into()
            } else {
                "Routing all traffic to canary".into()
            });
            return Flow::Done;
        }
        self.promote(target);
        Flow::Done
    }

    /// The verdict of the Canary's `kind` hooks: `Ok(None)` when it has none, `Err(probe)` when
    /// they have not been called yet in this reconcile.
    fn hook(
        &self,
        analysis: &CanaryAnalysis,
        kind: HookKind,
    ) -> Result<Option<HookVerdict>, Probe> {
        if analysis.webhooks_of(kind.as_str()).next().is_none() {
            return Ok(None);
        }
        match self.obs.probes.hooks.get(&kind) {
            Some(v) => Ok(Some(v.clone())),
            None => Err(Probe::Hooks(kind)),
        }
    }

    /// confirm-promotion gates: `Ok(true)` when open (or none). When closed, the canary waits
    /// in WaitingPromotion (one alert on entering it) while the analysis goes on.
    fn promotion_gate(&mut self, analysis: &CanaryAnalysis) -> Result<bool, Probe> {
        let Some(v) = self.hook(analysis, HookKind::ConfirmPromotion)? else {
            return Ok(true);
        };
        if !v.pass && self.st.phase != Some(CanaryPhase::WaitingPromotion) {
            self.st.phase = Some(CanaryPhase::WaitingPromotion);
            let muted = analysis
                .webhooks_of(HookKind::ConfirmPromotion.as_str())
                .all(|w| w.mute_alert.unwrap_or(false));
            let id = self.canary_id();
            let msg = format!(
                "Halt {id} advancement waiting for promotion approval {}",
                v.message
            );
            let alert = (!muted).then(|| "Canary is waiting for promotion approval.".to_string());
            self.notice(Severity::Warn, msg, alert);
        }
        Ok(v.pass)
    }

    fn confirm_promotion(&mut self, target: &TargetState, analysis: &CanaryAnalysis) -> Flow {
        match self.promotion_gate(analysis) {
            Err(p) => Flow::Need(p),
            Ok(false) => Flow::Done,
            Ok(true) => {
                self.promote(target);
                Flow::Done
            }
        }
    }

    fn promote(&mut self, target: &TargetState) {
        let revision_id = revision_id(&target.revision, &target.configs);
        self.actions.push(Action::Promote { revision_id });
        self.set_phase(CanaryPhase::Promoting);
        self.st.last_step_time = Some(self.time());
        let tid = self.target_id();
        let pid = self.primary_id();
        self.info(format!("Copying {tid} template spec to {pid}"));
        self.requeue_in(Duration::from_secs(1));
    }

    /// Promoting: wait for the primary's rolling update, then give it the traffic back.
    fn promoting(&mut self, target: &TargetState) -> Flow {
        let analysis = self.analysis();
        self.actions.push(Action::EnsureServices);
        // The revision being promoted is the one analysed (status), not whatever the target
        // runs now: if the target changed meanwhile, its pods run an unanalysed version, so
        // they get no traffic; the primary finishes its promotion and the change starts a new
        // run afterwards.
        let analysed = self.st.last_applied_spec.clone().unwrap_or_default();
        let analysed_configs = self.st.tracked_configs.clone().unwrap_or_default();
        let expected = revision_id(&analysed, &analysed_configs);
        let target_moved = target.revision != analysed || target.configs != analysed_configs;
        if target_moved && self.st.canary_weight > 0 {
            self.st.canary_weight = 0;
            let tid = self.target_id();
            self.notice(
                Severity::Warn,
                format!("{tid} changed during promotion: traffic moved off the canary; the new revision is analysed after this promotion"),
                None,
            );
        }
        let readiness = match &self.obs.primary {
            None => {
                // Deleted: recreated with the revision being promoted (the analysed one).
                if !target_moved {
                    self.actions.push(Action::Promote {
                        revision_id: expected.clone(),
                    });
                }
                Readiness::NotReady("primary not found".into())
            }
            // The cache may still hold the pre-promotion primary: ready only once it runs
            // the promoted revision.
            Some(p) if p.revision_id.as_deref() != Some(expected.as_str()) => {
                if !target_moved {
                    // Promote again (idempotent): the copy may not have been applied.
                    self.actions.push(Action::Promote {
                        revision_id: expected.clone(),
                    });
                }
                Readiness::NotReady("primary does not run the promoted revision yet".into())
            }
            // The primary takes the canary's traffic: first as many pods as serve it now (an
            // autoscaler may have scaled the canary up, and the primary's HPA owns its
            // replicas; it may scale them down later), Flagger #1600.
            Some(p)
                if p.replicas
                    .is_some_and(|r| r < target.ready_replicas && self.st.canary_weight > 0) =>
            {
                self.actions
                    .push(Action::ScalePrimary(target.ready_replicas));
                Readiness::NotReady(format!(
                    "scaling the primary to the canary's {} ready replicas",
                    target.ready_replicas
                ))
            }
            Some(p) => p.readiness.clone(),
        };
        match readiness {
            Readiness::Ready => {}
            Readiness::NotReady(msg) => {
                if self.deadline_passed() {
                    return self.failed_promotion(msg);
                }
                return Flow::Done;
            }
            Readiness::Failed(msg) => return self.failed_promotion(msg),
        }
        self.st.unready_since = None;
        let step = analysis.step_weight_promotion.unwrap_or(0);
        if step > 0 && self.st.canary_weight > 0 {
            if let Some(wait) = self.until_due(&analysis) {
                self.requeue_in(wait);
                return Flow::Done;
            }
            self.st.last_step_time = Some(self.time());
            self.st.canary_weight = (self.st.canary_weight - step).max(0);
            let id = self.canary_id();
            let pw = 100 - self.st.canary_weight;
            self.info(format!("Advance {id} primary weight {pw}"));
            if self.st.canary_weight > 0 {
                self.requeue_in(analysis.interval());
                return Flow::Done;
            }
        }
        // (the kubernetes provider routes nothing: Flagger says nothing either)
        if step == 0 && self.canary.spec.provider.as_deref() != Some("kubernetes") {
            self.info("Routing all traffic to primary".into());
        }
        self.set_phase(CanaryPhase::Finalising);
        self.st.last_step_time = Some(self.time());
        // Let in-flight requests on the canary drain before scaling it down.
        self.requeue_in(drain_time(&analysis));
        Flow::Done
    }

    /// Finalising: traffic is on the new primary; scale the canary down and finish.
    fn finalising(&mut self) -> Flow {
        let analysis = self.analysis();
        if let Some(Readiness::Failed(msg)) = self.obs.primary.as_ref().map(|p| &p.readiness) {
            let msg = msg.clone();
            return self.failed_promotion(msg);
        }
        if self.obs.primary.is_none() {
            // Deleted after it got the traffic back: the canary, still up, takes it again and
            // the promotion starts over (recreating the primary).
            self.st.phase = Some(CanaryPhase::Promoting);
            self.st.canary_weight = 100;
            self.st.unready_since = None;
            let m = format!(
                "primary {} not found while finalising: all traffic routed to the canary {} until it is recreated",
                self.primary_id(),
                self.target_id()
            );
            self.notice(Severity::Warn, m, None);
            self.requeue_in(Duration::from_secs(1));
            return Flow::Done;
        }
        if let Some(last) = &self.st.last_step_time {
            let elapsed = self.elapsed_since(last);
            let drain = drain_time(&analysis);
            if elapsed < drain {
                self.requeue_in(drain - elapsed);
                return Flow::Done;
            }
        }
        self.actions.push(Action::ScaleTarget(0));
        self.set_phase(CanaryPhase::Succeeded);
        self.st.last_step_time = None;
        self.actions.push(Action::RunHooks(
            HookKind::PostRollout,
            CanaryPhase::Succeeded,
        ));
        let tid = self.target_id();
        self.notice(
            Severity::Info,
            format!("Promotion completed! Scaling down {tid}"),
            Some("Canary analysis completed successfully, promotion finished.".into()),
        );
        Flow::Done
    }

    /// Roll back: all traffic to the primary, canary to zero, `Failed`, error alert.
    fn rollback(&mut self, reason: String) -> Flow {
        self.notice(Severity::Warn, reason.clone(), None);
        self.set_phase(CanaryPhase::Failed);
        self.st.last_step_time = None;
        self.actions.push(Action::ScaleTarget(0));
        self.actions
            .push(Action::RunHooks(HookKind::PostRollout, CanaryPhase::Failed));
        let id = self.canary_id();
        let prefix = format!("Rolling back {id} ");
        let why = reason.strip_prefix(&prefix).unwrap_or(&reason);
        self.notice(
            Severity::Error,
            format!("Canary failed! Scaling down {id}"),
            Some(format!("Canary analysis failed, rolled back: {why}")),
        );
        Flow::Done
    }

    /// The primary did not come up with the promoted revision: keep serving from the canary
    /// (routes 0/100, canary not scaled down), `Failed` (Flagger 1.44 `handleFailedPromotion`).
    fn failed_promotion(&mut self, msg: String) -> Flow {
        let event = format!(
            "Promotion of {} failed, primary not ready: {msg}",
            self.target_id()
        );
        let alert = format!("Promotion failed, primary not ready: {msg}");
        self.st.phase = Some(CanaryPhase::Failed);
        // Keep serving from the analysed canary, unless it has moved on to another revision.
        let target_moved = self.obs.target.as_ref().is_some_and(|t| {
            Some(&t.revision) != self.st.last_applied_spec.as_ref()
                || Some(&t.configs) != self.st.tracked_configs.as_ref()
        });
        self.st.canary_weight = if target_moved { 0 } else { 100 };
        self.st.iterations = 0;
        self.st.unready_since = None;
        self.st.last_step_time = None;
        self.actions
            .push(Action::RunHooks(HookKind::PostRollout, CanaryPhase::Failed));
        self.notice(Severity::Error, event, Some(alert));
        Flow::Done
    }

    /// The primary is gone or not ready and the canary is all that is left: `Failed` with all
    /// traffic on the canary (not scaled down), an error alert.
    fn fail_to_canary(&mut self, reason: String) -> Flow {
        self.st.phase = Some(CanaryPhase::Failed);
        self.st.canary_weight = 100;
        self.st.iterations = 0;
        self.st.unready_since = None;
        self.st.last_step_time = None;
        self.clear_halted();
        self.actions
            .push(Action::RunHooks(HookKind::PostRollout, CanaryPhase::Failed));
        self.notice(Severity::Error, reason.clone(), Some(reason));
        Flow::Done
    }

    /// The one `EnsureRoutes` of a decision, when it writes the routes (`self.routes`): the
    /// weights of the status being written, applied after the canary is scaled up and before
    /// it is scaled down or the post-rollout hooks run.
    fn finish_routes(&mut self) {
        if !self.routes {
            return;
        }
        let analysis = self.analysis();
        let at = self
            .actions
            .iter()
            .position(|a| matches!(a, Action::ScaleTarget(0) | Action::RunHooks(..)))
            .unwrap_or(self.actions.len());
        self.actions.insert(
            at,
            Action::EnsureRoutes(routes_for(&self.st, Some(&analysis))),
        );
    }

    fn finish(mut self) -> Decision {
        // `lastStepTime` is written with one-second resolution: a step time is rounded up, so
        // the next step, due an interval after it, is never early.
        if self.st.last_step_time != self.before.last_step_time
            && let Some(t) = &mut self.st.last_step_time
            && t.0.subsec_nanosecond() != 0
        {
            t.0 = Timestamp::from_second(t.0.as_second() + 1).unwrap_or(t.0);
        }
        self.remember_promoted();
        self.rotate_cookies();
        self.sync_promoted_condition();
        let mut without_time = self.st.clone();
        without_time.last_transition_time = self.before.last_transition_time.clone();
        if without_time != self.before {
            self.st.last_transition_time = Some(self.time());
        }
        Decision {
            status: self.st,
            actions: self.actions,
            notices: self.notices,
            requeue_after: self.requeue,
        }
    }

    /// Session affinity (Flagger's routers' `SetRoutes`): while the canary gets traffic, status
    /// holds `<cookieName>=<10 letters>` (and `<primaryCookieName>=…`), which the routers turn
    /// into `Set-Cookie` headers and sticky rules; when its weight returns to 0 the cookie moves
    /// to `previousSessionAffinityCookie`, which the routers expire. The letters are derived
    /// from the Canary's uid, revision and the time, so `decide` stays a pure function.
    fn rotate_cookies(&mut self) {
        let Some(sa) = self
            .canary
            .spec
            .analysis()
            .and_then(|a| a.session_affinity.clone())
        else {
            return;
        };
        if routes_for(&self.st, self.canary.spec.analysis()).canary > 0 {
            if self.st.session_affinity_cookie.is_none() {
                let v = self.token("canary");
                self.st.session_affinity_cookie = Some(format!("{}={v}", sa.cookie_name));
            }
            if let Some(p) = sa.primary_cookie_name.filter(|p| !p.is_empty())
                && self.st.primary_session_affinity_cookie.is_none()
            {
                let v = self.token("primary");
                self.st.primary_session_affinity_cookie = Some(format!("{p}={v}"));
            }
        } else if let Some(c) = self.st.session_affinity_cookie.take() {
            self.st.previous_session_affinity_cookie = Some(c);
            self.st.primary_session_affinity_cookie = None;
        }
    }

    /// Ten letters, a deterministic function of the Canary's uid, revision, the time and `salt`.
    fn token(&self, salt: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.canary.metadata.uid.as_deref().unwrap_or_default(),
            self.st.last_applied_spec.as_deref().unwrap_or_default(),
            &self.now.to_string(),
            salt,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        h.finalize()
            .iter()
            .take(10)
            .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
            .collect()
    }

    /// Flagger's `Promoted` condition, derived from the phase.
    fn sync_promoted_condition(&mut self) {
        let Some(phase) = self.st.phase else { return };
        let kind = self.kind().to_string();
        let (status, message) = match phase {
            CanaryPhase::Initializing => (
                "Unknown",
                format!("New {kind} detected, starting initialization."),
            ),
            CanaryPhase::Initialized => ("True", format!("{kind} initialization completed.")),
            CanaryPhase::Waiting => ("Unknown", "Waiting for approval.".to_string()),
            CanaryPhase::Progressing => (
                "Unknown",
                "New revision detected, progressing canary analysis.".to_string(),
            ),
            CanaryPhase::WaitingPromotion => ("Unknown", "Waiting for approval.".to_string()),
            CanaryPhase::Promoting => (
                "Unknown",
                "Canary analysis completed, starting primary rolling update.".to_string(),
            ),
            CanaryPhase::Finalising => (
                "Unknown",
                "Canary analysis completed, routing all traffic to primary.".to_string(),
            ),
            CanaryPhase::Succeeded => (
                "True",
                "Canary analysis completed successfully, promotion finished.".to_string(),
            ),
            CanaryPhase::Failed if self.st.canary_weight > 0 => (
                "False",
                "Canary analysis failed, all traffic on the canary until the primary is ready."
                    .to_string(),
            ),
            CanaryPhase::Failed => (
                "False",
                format!("Canary analysis failed, {kind} scaled to zero."),
            ),
            CanaryPhase::Terminating | CanaryPhase::Terminated => return,
        };
        let now = self.time();
        set_condition(
            &mut self.st.conditions,
            types::PROMOTED,
            status,
            phase.as_str(),
            &message,
            &now,
        );
    }
}

/// Time the canary keeps running after traffic left it: one interval (Flagger's Finalising tick).
fn drain_time(analysis: &CanaryAnalysis) -> Duration {
    analysis.interval()
}

/// Id stamped on the primary's pod template (`flagger-id`) for a promoted revision: changes
/// with the pod template or any tracked config, so config-only releases roll the primary too.
pub fn revision_id(revision: &str, configs: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(revision.as_bytes());
    for (k, v) in configs {
        h.update(b"\0");
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `weights: adaptive` (issue 19): the judge's weight for the next interval from `current`,
/// the fixed schedule's being `fixed_next`, on the user's ladder up to `maxWeight`, with the
/// guardrails' bounds sharing `alphaFail` ([`super::judged::adaptive_next`]). `None` with fixed
/// weights, an unusable policy or before a plan.
fn adaptive_choice(
    js: &crate::api::JudgeStatus,
    obs: &super::judged::JudgeObservation,
    analysis: &CanaryAnalysis,
    current: i32,
    fixed_next: i32,
) -> Option<crate::analysis::judge::weights::Choice> {
    let ladder = crate::analysis::judge::weights::ladder(analysis.max_weight(), |x| {
        analysis.next_step_weight(x)
    });
    let guard_tests = super::judged::guardrails(analysis)
        .iter()
        .map(|g| g.bounds().tests())
        .sum();
    let policy = obs.policy.as_ref().ok()?;
    super::judged::adaptive_next(js, policy, &ladder, current, fixed_next, guard_tests)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
