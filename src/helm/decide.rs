//! The HelmRelease decision table (flux.md §2.3, §2.6, §2.7): the state of a release compared
//! with its HelmRelease, the next Helm action, the failure counters, and the conditions and
//! events each action leaves. Same behaviour as Flux's helm-controller `internal/reconcile`
//! (`DetermineReleaseState`, `AtomicRelease`, the action reconcilers and `summarize`), with its
//! known bugs fixed where flux.md §8 lists them (each fix names its issue below).
//!
//! PURE: no I/O and no kube client. The controller observes Helm storage and the HelmRelease,
//! maps them into [`Observed`] and [`Policy`] (plain data, independent of the API types), and
//! drives the loop:
//!
//! ```text
//! let mut run = AlreadyRun::default();
//! loop {
//!     let obs = observe();                          // I/O: Helm storage + status
//!     let step = next_step(&obs, &policy, &run);
//!     step.history.apply(&mut status.history);      // before anything else
//!     apply_state_effect(&mut conds, &step.effect, ...);
//!     match step.next {
//!         Next::Run(action) => {
//!             let prep = prepare(&action, &policy); // Reconciling/Ready=Unknown, clear history
//!             ... patch status, run the action through the engine ...
//!             let out = outcome(&action, &result, &ctx);   // counters, conditions, event
//!             run.insert(action.kind());
//!             if out.retry_error { stop: on_action_error(...) }
//!             if let Some(n) = out.stop { break n }     // a failed remediation: backoff/stall
//!         }
//!         other => break other,                     // Done, MustRequeue, RetryAfter, Stalled, …
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::gitops::conditions::{
    FALSE, TRUE, UNKNOWN, get, is_true, remove_condition, set_condition, types as meta_types,
};
use crate::util::go_duration;

/// Condition types owned by the HelmRelease besides `Ready`, `Reconciling`, `Stalled`
/// (helm-controller `api/v2/condition_types.go`).
pub mod condition_types {
    pub const RELEASED: &str = "Released";
    pub const TEST_SUCCESS: &str = "TestSuccess";
    pub const REMEDIATED: &str = "Remediated";
    pub const DRIFTED: &str = "Drifted";
}

/// Condition and event reasons, Flux's spelling.
pub mod reasons {
    pub const INSTALL_SUCCEEDED: &str = "InstallSucceeded";
    pub const INSTALL_FAILED: &str = "InstallFailed";
    pub const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
    pub const TEST_SUCCEEDED: &str = "TestSucceeded";
    pub const TEST_FAILED: &str = "TestFailed";
    pub const AWAITING_TESTS: &str = "AwaitingTests";
    pub const ROLLBACK_SUCCEEDED: &str = "RollbackSucceeded";
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const UNINSTALL_SUCCEEDED: &str = "UninstallSucceeded";
    pub const UNINSTALL_FAILED: &str = "UninstallFailed";
    pub const PENDING_RELEASE: &str = "PendingRelease";
    pub const RETRIES_EXCEEDED: &str = "RetriesExceeded";
    pub const MISSING_ROLLBACK_TARGET: &str = "MissingRollbackTarget";
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const NO_DRIFT_DETECTED: &str = "NoDriftDetected";
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    pub const DRIFT_CORRECTION_FAILED: &str = "DriftCorrectionFailed";
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    pub const STATE_ERROR: &str = "StateError";
    pub const PROGRESSING: &str = "Progressing";
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    /// pennant: a pending release younger than its action's timeout is left alone (see
    /// [`Next::WaitForLock`]).
    pub const RELEASE_LOCKED: &str = "ReleaseLocked";
}

/// Flux's `defaultMaxHistory`: snapshots kept in `status.history` when truncating.
pub const MAX_HISTORY_SNAPSHOTS: usize = 5;

/// The default `retryInterval` of the `RetryOnFailure` strategy (5 minutes).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Helm storage and history

/// A Helm release status (`info.status` in storage), Helm's spelling via [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReleaseStatus {
    Deployed,
    Superseded,
    Failed,
    Uninstalled,
    Uninstalling,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    Unknown,
}

impl ReleaseStatus {
    /// Helm's string: `deployed`, `pending-upgrade`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
            Self::Uninstalled => "uninstalled",
            Self::Uninstalling => "uninstalling",
            Self::PendingInstall => "pending-install",
            Self::PendingUpgrade => "pending-upgrade",
            Self::PendingRollback => "pending-rollback",
            Self::Unknown => "unknown",
        }
    }

    /// From Helm's string; anything unrecognised is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "deployed" => Self::Deployed,
            "superseded" => Self::Superseded,
            "failed" => Self::Failed,
            "uninstalled" => Self::Uninstalled,
            "uninstalling" => Self::Uninstalling,
            "pending-install" => Self::PendingInstall,
            "pending-upgrade" => Self::PendingUpgrade,
            "pending-rollback" => Self::PendingRollback,
            _ => Self::Unknown,
        }
    }

    /// A `pending-*` status: Helm's lock ("another operation is in progress").
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::PendingInstall | Self::PendingUpgrade | Self::PendingRollback
        )
    }
}

/// The phase of a Helm test hook (`last_run.phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestPhase {
    Unknown,
    Running,
    Succeeded,
    Failed,
}

/// One entry of `status.history` (Flux's `Snapshot`), reduced to what decisions read. The
/// controller maps the API snapshot into it and back (by `revision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Release name and namespace.
    pub name: String,
    pub namespace: String,
    /// Helm revision (`version`), 1-based.
    pub revision: u32,
    pub status: ReleaseStatus,
    pub chart_name: String,
    pub chart_version: String,
    /// `configDigest`: digest of the values the release was made with.
    pub config_digest: String,
    /// Test hooks by name; `None` = tests never ran on this release, `Some(empty)` = tested, the
    /// chart has no test hook.
    pub test_hooks: Option<BTreeMap<String, TestPhase>>,
}

impl Snapshot {
    /// `ns/name.vN`, Flux's `FullReleaseName`.
    pub fn full_release_name(&self) -> String {
        format!("{}/{}.v{}", self.namespace, self.name, self.revision)
    }

    /// `chart@version`, Flux's `VersionedChartName`.
    pub fn versioned_chart_name(&self) -> String {
        format!("{}@{}", self.chart_name, self.chart_version)
    }

    /// Tests ran to an end: no hooks, any hook failed (Helm stops at the first failure), or all
    /// succeeded. Same as Flux's `HasBeenTested`.
    pub fn has_been_tested(&self) -> bool {
        match &self.test_hooks {
            None => false,
            Some(h) if h.is_empty() => true,
            Some(h) => {
                h.values().any(|p| *p == TestPhase::Failed)
                    || h.values().all(|p| *p == TestPhase::Succeeded)
            }
        }
    }

    /// Any test hook in `phase`.
    pub fn has_test_in_phase(&self, phase: TestPhase) -> bool {
        self.test_hooks
            .as_ref()
            .is_some_and(|h| h.values().any(|p| *p == phase))
    }

    fn good(&self, ignore_tests: bool) -> bool {
        matches!(
            self.status,
            ReleaseStatus::Deployed | ReleaseStatus::Superseded
        ) && (ignore_tests || !self.has_test_in_phase(TestPhase::Failed))
    }
}

fn sort_newest_first(history: &mut [Snapshot]) {
    history.sort_by_key(|s| std::cmp::Reverse(s.revision));
}

/// The newest snapshot (highest revision).
pub fn latest_snapshot(history: &[Snapshot]) -> Option<&Snapshot> {
    history.iter().max_by_key(|s| s.revision)
}

/// The rollback target: the newest snapshot older than the latest that was deployed
/// successfully and, unless `ignore_tests`, has no failed test. `None` when there is none.
///
/// Flux's `Snapshots.Previous` takes the newest `deployed` or `superseded` one. pennant fix:
/// when a rollback's apply fails, Helm relabels the release it rolled back *from* (a failed
/// upgrade or an earlier failed rollback) `superseded` (`pkg/action/rollback.go`, Helm 3 and
/// 4), so Flux's rule then rolls back to a release that never worked (the next rollback is
/// "Rollback to <the failed one>" and the chart alternates). Helm never leaves a release
/// `deployed` below a newer one that deployed successfully (a successful upgrade or rollback
/// supersedes the deployed ones), so a `superseded` snapshot newer than the newest `deployed`
/// one (the latest excluded) never deployed and is skipped. Without a `deployed` one older
/// than the latest, Flux's rule applies.
pub fn previous_snapshot(history: &[Snapshot], ignore_tests: bool) -> Option<&Snapshot> {
    let mut sorted: Vec<&Snapshot> = history.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.revision));
    let deployed = sorted
        .iter()
        .skip(1)
        .find(|s| s.status == ReleaseStatus::Deployed)
        .map(|s| s.revision);
    sorted
        .into_iter()
        .skip(1)
        .filter(|s| deployed.is_none_or(|d| s.revision <= d))
        .find(|s| s.good(ignore_tests))
}

/// How `status.history` changes before an action runs (Flux mutates it in `actionForState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryEdit {
    Keep,
    /// Drop everything (the stored release is no longer the one we recorded: Unmanaged).
    Clear,
    /// Keep the latest and everything down to the previous good release
    /// ([`previous_snapshot`], the rollback target); without one, keep at most
    /// [`MAX_HISTORY_SNAPSHOTS`]. Flux's `Truncate(ignoreTests)`.
    Truncate {
        ignore_tests: bool,
    },
    /// Keep the newest [`MAX_HISTORY_SNAPSHOTS`]. Flux's `TruncateIgnoringPreviousSnapshots`.
    TruncateIgnoringPrevious,
}

impl HistoryEdit {
    /// Apply to a history (sorted newest first afterwards, except for `Keep`).
    pub fn apply(&self, history: &mut Vec<Snapshot>) {
        match *self {
            Self::Keep => {}
            Self::Clear => history.clear(),
            Self::Truncate { ignore_tests } => {
                if history.len() < 2 {
                    return;
                }
                sort_newest_first(history);
                match previous_snapshot(history, ignore_tests).map(|s| s.revision) {
                    Some(keep) => history.retain(|s| s.revision >= keep),
                    None => history.truncate(MAX_HISTORY_SNAPSHOTS),
                }
            }
            Self::TruncateIgnoringPrevious => {
                sort_newest_first(history);
                history.truncate(MAX_HISTORY_SNAPSHOTS);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policy (from the spec)

/// `status.lastAttemptedReleaseAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReleaseAction {
    Install,
    Upgrade,
}

impl ReleaseAction {
    /// `install` / `upgrade`, as in status and in Flux's "Failed to install after …".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Upgrade => "upgrade",
        }
    }
}

/// `spec.<install|upgrade>.strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Remediate (uninstall / roll back) between attempts, bounded by `remediation.retries`.
    RemediateOnFailure,
    /// No remediation: retry as an upgrade every `retry_interval`, forever.
    RetryOnFailure { retry_interval: Duration },
}

/// `spec.upgrade.remediation.strategy` (install remediation is always `Uninstall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemediationStrategy {
    #[default]
    Rollback,
    Uninstall,
}

/// `spec.<install|upgrade>.remediation` as written (unset fields `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Remediation {
    /// Attempts after the first; negative = unlimited. Default 0.
    pub retries: i64,
    /// Default: `test.ignoreFailures`.
    pub ignore_test_failures: Option<bool>,
    /// Default: false for install; `retries > 0` for upgrade.
    pub remediate_last_failure: Option<bool>,
}

/// One of `spec.install` / `spec.upgrade`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionPolicy {
    /// The action's timeout (`spec.<action>.timeout`, else `spec.timeout`).
    pub timeout: Duration,
    /// `strategy.name` (+ `retryInterval`); `None` when unset (see
    /// [`Policy::default_to_retry_on_failure`]).
    pub strategy: Option<FailureStrategy>,
    pub remediation: Remediation,
    /// Upgrade only; ignored for install.
    pub remediation_strategy: RemediationStrategy,
}

impl Default for ActionPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            strategy: None,
            remediation: Remediation::default(),
            remediation_strategy: RemediationStrategy::Rollback,
        }
    }
}

/// `spec.test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestPolicy {
    pub enabled: bool,
    pub ignore_failures: bool,
    pub timeout: Duration,
}

impl Default for TestPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            ignore_failures: false,
            timeout: Duration::from_secs(300),
        }
    }
}

/// `spec.driftDetection.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DriftMode {
    #[default]
    Disabled,
    Warn,
    Enabled,
}

/// The parts of a HelmRelease spec (and controller options) decisions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `spec.timeout` (default 5m): unlock and drift correction use it.
    pub timeout: Duration,
    pub install: ActionPolicy,
    pub upgrade: ActionPolicy,
    pub test: TestPolicy,
    /// `spec.rollback.timeout` / `spec.uninstall.timeout`, resolved.
    pub rollback_timeout: Duration,
    pub uninstall_timeout: Duration,
    pub drift: DriftMode,
    /// Flux's `DefaultToRetryOnFailure` feature gate: an unset strategy means `RetryOnFailure`.
    /// Default false (`RemediateOnFailure`, as Flux documents). flux2#5916: users were surprised
    /// by the gate, so the effective strategy is exposed ([`Policy::effective_strategy`]) for
    /// status and events.
    pub default_to_retry_on_failure: bool,
    /// pennant (helm#11863, helm-controller#644): a `pending-*` release someone else started
    /// is unlocked only once it is older than its action's timeout, so an operation still in
    /// flight (someone's `helm upgrade --wait`) is not flipped to `failed` under it; one this
    /// controller started and died in ([`pending_is_ours`]) is unlocked at once. False = unlock
    /// every lock at once, as Flux does.
    pub unlock_only_stale: bool,
}

impl Default for Policy {
    fn default() -> Self {
        let five = Duration::from_secs(300);
        Self {
            timeout: five,
            install: ActionPolicy::default(),
            upgrade: ActionPolicy::default(),
            test: TestPolicy::default(),
            rollback_timeout: five,
            uninstall_timeout: five,
            drift: DriftMode::Disabled,
            default_to_retry_on_failure: false,
            unlock_only_stale: true,
        }
    }
}

/// The remediation in force for the last attempted release action, defaults resolved
/// (Flux's `GetActiveRemediation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveRemediation {
    pub action: ReleaseAction,
    pub retries: i64,
    pub ignore_test_failures: bool,
    pub remediate_last_failure: bool,
    pub strategy: RemediationStrategy,
}

impl ActiveRemediation {
    /// `installFailures` or `upgradeFailures`.
    pub fn failure_count(&self, c: &Counters) -> i64 {
        match self.action {
            ReleaseAction::Install => c.install_failures,
            ReleaseAction::Upgrade => c.upgrade_failures,
        }
    }

    pub fn retries_exhausted(&self, c: &Counters) -> bool {
        retries_exhausted(self.retries, self.failure_count(c))
    }

    /// Flux's `IsUninstallAfterUpgrade`.
    pub fn is_uninstall_after_upgrade(&self) -> bool {
        self.action == ReleaseAction::Upgrade && self.strategy == RemediationStrategy::Uninstall
    }
}

impl Policy {
    /// `spec.install` or `spec.upgrade`.
    pub fn action(&self, a: ReleaseAction) -> &ActionPolicy {
        match a {
            ReleaseAction::Install => &self.install,
            ReleaseAction::Upgrade => &self.upgrade,
        }
    }

    /// The remediation config of `a`, defaults resolved.
    pub fn remediation(&self, a: ReleaseAction) -> ActiveRemediation {
        let p = self.action(a);
        let r = p.remediation;
        ActiveRemediation {
            action: a,
            retries: r.retries,
            ignore_test_failures: r.ignore_test_failures.unwrap_or(self.test.ignore_failures),
            remediate_last_failure: r.remediate_last_failure.unwrap_or(match a {
                ReleaseAction::Install => false,
                ReleaseAction::Upgrade => r.retries > 0,
            }),
            strategy: match a {
                ReleaseAction::Install => RemediationStrategy::Uninstall,
                ReleaseAction::Upgrade => p.remediation_strategy,
            },
        }
    }

    /// The remediation of the last attempted action; `None` before any install/upgrade.
    pub fn active_remediation(&self, last: Option<ReleaseAction>) -> Option<ActiveRemediation> {
        last.map(|a| self.remediation(a))
    }

    /// The strategy in force for `a`: the spec's, else `RetryOnFailure` (5m) under the
    /// `DefaultToRetryOnFailure` gate, else `RemediateOnFailure` (flux2#5916).
    pub fn effective_strategy(&self, a: ReleaseAction) -> FailureStrategy {
        match self.action(a).strategy {
            Some(s) => s,
            None if self.default_to_retry_on_failure => FailureStrategy::RetryOnFailure {
                retry_interval: DEFAULT_RETRY_INTERVAL,
            },
            None => FailureStrategy::RemediateOnFailure,
        }
    }

    /// The retry interval when the last attempted action's strategy is `RetryOnFailure`
    /// (Flux's `GetActiveRetry`).
    pub fn active_retry(&self, last: Option<ReleaseAction>) -> Option<Duration> {
        match self.effective_strategy(last?) {
            FailureStrategy::RetryOnFailure { retry_interval } => Some(retry_interval),
            FailureStrategy::RemediateOnFailure => None,
        }
    }

    fn drift_detection(&self) -> bool {
        self.drift != DriftMode::Disabled
    }
}

/// Retries are exhausted when `retries >= 0 && failures > retries`: `retries: N` allows N+1
/// attempts; negative is unlimited. Same as Flux's `RetriesExhausted`.
pub fn retries_exhausted(retries: i64, failures: i64) -> bool {
    retries >= 0 && failures > retries
}

// ---------------------------------------------------------------------------------------------
// Counters

/// `status.failures`, `installFailures`, `upgradeFailures`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Every failed action (install, upgrade, test, rollback, uninstall, unlock).
    pub failures: i64,
    pub install_failures: i64,
    pub upgrade_failures: i64,
}

/// Why the counters are reset before the loop (Flux's `MustResetFailures`); the strings are
/// Flux's log reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    Generation,
    ChartVersion,
    Values,
    ResetRequested,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generation => "generation differs from last attempt",
            Self::ChartVersion => "chart version differs from last attempt",
            Self::Values => "values differ from last attempt",
            Self::ResetRequested => "reset requested through annotation",
        }
    }
}

/// What [`reset_counters_needed`] compares: this reconcile's inputs against `status.lastAttempted*`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AttemptInputs {
    pub generation: i64,
    pub last_attempted_generation: i64,
    /// The chart version about to be used (OCI: `version+digest12`).
    pub chart_version: String,
    pub last_attempted_revision: String,
    pub config_digest: String,
    /// Empty when never recorded (then values are not compared, as Flux).
    pub last_attempted_config_digest: String,
    /// A `resetAt` token not yet handled.
    pub reset_requested: bool,
}

/// Whether the failure counters must be cleared before the loop, and why; in Flux's order
/// (generation, chart version, values, reset request). helm-controller#1031: a values change
/// (e.g. a `valuesFrom` ConfigMap) resets the counters, so a stalled release is retried; Flux
/// never looked again after a stall (terminal error), see [`requeue_after`].
pub fn reset_counters_needed(i: &AttemptInputs) -> Option<ResetReason> {
    if i.last_attempted_generation != i.generation {
        Some(ResetReason::Generation)
    } else if i.last_attempted_revision != i.chart_version {
        Some(ResetReason::ChartVersion)
    } else if !i.last_attempted_config_digest.is_empty()
        && i.last_attempted_config_digest != i.config_digest
    {
        Some(ResetReason::Values)
    } else if i.reset_requested {
        Some(ResetReason::ResetRequested)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Observation and state

/// The latest release in Helm storage (`helm history` top entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub name: String,
    pub namespace: String,
    pub revision: u32,
    pub status: ReleaseStatus,
    pub chart_name: String,
    pub chart_version: String,
    /// `info.last_deployed` (set when the revision is written, also for pending ones).
    pub last_deployed: Option<Timestamp>,
}

/// How the latest stored release compares with the newest history snapshot (Flux's
/// `VerifyReleaseObject`; computed by the controller with pennant's own digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SnapshotMatch {
    #[default]
    Matches,
    /// A different release than we recorded (someone ran `helm upgrade`/`rollback`).
    NotObserved,
    /// The snapshot's digest is unreadable.
    DigestError,
}

/// The stored state of the rollback target, [`rollback_candidate`], checked by the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetCheck {
    #[default]
    Verified,
    /// The revision is gone from storage (Flux's `ErrReleaseDisappeared`).
    Disappeared,
    /// It is there but not the release we recorded (`ErrReleaseNotObserved`/`ErrReleaseDigest`).
    Modified,
}

/// What the next release would be made of.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Desired {
    pub chart_name: String,
    /// Chart version as recorded (OCI: `version+digest12`).
    pub chart_version: String,
    /// Digest of the composed values (`lastAttemptedConfigDigest`).
    pub config_digest: String,
}

/// Everything observed for one decision. Built by the controller after each action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Release name (after shortening) and namespace the HelmRelease targets.
    pub release_name: String,
    pub release_namespace: String,
    /// Latest release in storage; `None` when storage has none.
    pub latest: Option<ReleaseInfo>,
    /// `latest` against the newest snapshot of `history` (ignored when history is empty).
    pub latest_match: SnapshotMatch,
    /// `status.history`.
    pub history: Vec<Snapshot>,
    /// The stored state of [`rollback_candidate`] (only read when a rollback is due).
    pub rollback_target: TargetCheck,
    pub desired: Desired,
    /// `status.observedGeneration != metadata.generation`.
    pub new_generation: bool,
    /// Digest of `spec.postRenderers` / `spec.commonMetadata` differs from the observed one.
    pub post_renderers_changed: bool,
    pub common_metadata_changed: bool,
    /// Drift found by the dry-run diff (only computed when detection is on): the summary text
    /// (one line per object), `None` when none.
    pub drift: Option<String>,
    pub counters: Counters,
    /// `status.lastAttemptedReleaseAction`.
    pub last_action: Option<ReleaseAction>,
    /// A `forceAt` token not yet handled.
    pub force_requested: bool,
    /// The action this controller marked as running in status and never marked as ended
    /// ([`in_flight_action`]): read at the start of a reconcile, it is one a previous process
    /// started and died in (kube-rs never runs two reconciles of one object, leader election
    /// keeps one process), so a pending release it wrote is unlocked at once ([`next_step`]).
    pub in_flight: Option<InFlight>,
    pub now: Timestamp,
}

/// An action marked running in status: `Reconciling=True` reason `Progressing` "Running
/// '<action>' action with timeout of …" (written before the action runs, replaced when the
/// loop ends), and since when (its `lastTransitionTime`, whole seconds, at or before the start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// [`Action::name`]: `install`, `upgrade`, `rollback`, `uninstall`, ….
    pub action: String,
    pub since: Timestamp,
}

/// The action the status says is running ([`Prepare::reconciling_message`]), `None` when the
/// last loop ended (its end replaces or removes `Reconciling`).
pub fn in_flight_action(conditions: &[Condition]) -> Option<InFlight> {
    let c = get(conditions, meta_types::RECONCILING)?;
    if c.status != TRUE || c.reason != reasons::PROGRESSING {
        return None;
    }
    let rest = c.message.strip_prefix("Running '")?;
    let (action, tail) = rest.split_once('\'')?;
    tail.starts_with(" action with timeout of ")
        .then(|| InFlight {
            action: action.to_string(),
            since: c.last_transition_time.0,
        })
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            release_name: String::new(),
            release_namespace: String::new(),
            latest: None,
            latest_match: SnapshotMatch::Matches,
            history: vec![],
            rollback_target: TargetCheck::Verified,
            desired: Desired::default(),
            new_generation: false,
            post_renderers_changed: false,
            common_metadata_changed: false,
            drift: None,
            counters: Counters::default(),
            last_action: None,
            force_requested: false,
            in_flight: None,
            now: Timestamp::UNIX_EPOCH,
        }
    }
}

/// The revision the controller must check in storage for [`Observed::rollback_target`]: the
/// previous good snapshot under the active remediation's test-failure rule.
pub fn rollback_candidate<'a>(
    history: &'a [Snapshot],
    policy: &Policy,
    last: Option<ReleaseAction>,
) -> Option<&'a Snapshot> {
    previous_snapshot(history, ignore_tests(policy, last))
}

fn ignore_tests(policy: &Policy, last: Option<ReleaseAction>) -> bool {
    policy
        .active_remediation(last)
        .map(|r| r.ignore_test_failures)
        .unwrap_or(policy.test.ignore_failures)
}

/// Flux's `ReleaseStatus` of `DetermineReleaseState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    Absent,
    Locked,
    Unmanaged,
    Failed,
    OutOfSync,
    Untested,
    Drifted,
    InSync,
    /// Undecidable (`unknown` or `superseded` as latest): a state error.
    Unknown,
}

/// A release state and Flux's reason text (empty when Flux gives none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseState {
    pub kind: StateKind,
    pub reason: String,
}

fn st(kind: StateKind, reason: impl Into<String>) -> ReleaseState {
    ReleaseState {
        kind,
        reason: reason.into(),
    }
}

/// The state of the release against the HelmRelease, same as Flux's `DetermineReleaseState`:
///
/// - no release → Absent; `pending-*` → Locked; no history → Absent (`uninstalled`) or
///   Unmanaged; latest ≠ newest snapshot → Unmanaged;
/// - `failed` → Failed; `uninstalled` → Absent; `deployed` → OutOfSync (chart or values; on a
///   new generation, post-renderers or common metadata), Untested, Failed (a failed test not
///   ignored by the active remediation), Drifted, else InSync.
///
/// pennant fix (helm-controller#149/#857 family): `uninstalling` left by a crashed uninstall is
/// Locked (unlocked to `failed`, then remediated or upgraded); Flux fails with "unable to
/// determine state" on every reconcile.
pub fn release_state(obs: &Observed, policy: &Policy) -> ReleaseState {
    use StateKind::*;
    let Some(rls) = &obs.latest else {
        return st(Absent, "no release in storage for object");
    };
    if rls.status.is_pending() || rls.status == ReleaseStatus::Uninstalling {
        return st(
            Locked,
            format!("release with status '{}'", rls.status.as_str()),
        );
    }
    let Some(cur) = latest_snapshot(&obs.history) else {
        if rls.status == ReleaseStatus::Uninstalled {
            return st(Absent, "found uninstalled release in storage");
        }
        return st(Unmanaged, "found existing release in storage");
    };
    match obs.latest_match {
        SnapshotMatch::Matches => {}
        SnapshotMatch::NotObserved => {
            return st(Unmanaged, "release not observed to be made for object");
        }
        SnapshotMatch::DigestError => return st(Unmanaged, "release digest verification error"),
    }
    match rls.status {
        ReleaseStatus::Failed => st(Failed, ""),
        ReleaseStatus::Uninstalled => st(Absent, "found uninstalled release in storage"),
        ReleaseStatus::Deployed => {
            if rls.chart_name != obs.desired.chart_name
                || rls.chart_version != obs.desired.chart_version
            {
                return st(OutOfSync, "release chart changed");
            }
            if cur.config_digest != obs.desired.config_digest {
                return st(OutOfSync, "release config values changed");
            }
            if obs.new_generation {
                if obs.post_renderers_changed {
                    return st(OutOfSync, "postrenderers digest has changed");
                }
                if obs.common_metadata_changed {
                    return st(OutOfSync, "common metadata digest has changed");
                }
            }
            if policy.test.enabled {
                if !cur.has_been_tested() {
                    return st(Untested, "");
                }
                if let Some(r) = policy.active_remediation(obs.last_action)
                    && !r.ignore_test_failures
                    && cur.has_test_in_phase(TestPhase::Failed)
                {
                    return st(Failed, "release has test in failed phase");
                }
            }
            if policy.drift_detection()
                && let Some(summary) = &obs.drift
            {
                return st(Drifted, summary.clone());
            }
            st(InSync, "")
        }
        other => st(
            Unknown,
            format!(
                "unable to determine state for release with status '{}'",
                other.as_str()
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Actions and the loop

/// A Helm action the loop can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Install,
    Upgrade,
    Test,
    /// Roll back to `target` (a snapshot of the history, verified in storage).
    RollbackRemediation {
        target: Snapshot,
    },
    /// Uninstall the failed release (install remediation, or upgrade with `strategy: uninstall`).
    UninstallRemediation,
    /// Rewrite the pending latest release to `failed` ([`unlock_description`]).
    Unlock {
        from: ReleaseStatus,
    },
    /// Re-apply the drifted objects (no new Helm revision).
    CorrectDrift,
}

/// Flux's `ReconcilerType`: each runs at most once per reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Release,
    Remediate,
    Test,
    Unlock,
    DriftCorrection,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Install | Self::Upgrade => ActionKind::Release,
            Self::RollbackRemediation { .. } | Self::UninstallRemediation => ActionKind::Remediate,
            Self::Test => ActionKind::Test,
            Self::Unlock { .. } => ActionKind::Unlock,
            Self::CorrectDrift => ActionKind::DriftCorrection,
        }
    }

    /// Flux's action name: `install`, `upgrade`, `test`, `rollback`, `uninstall`, `unlock`,
    /// `correct cluster drift`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Upgrade => "upgrade",
            Self::Test => "test",
            Self::RollbackRemediation { .. } => "rollback",
            Self::UninstallRemediation => "uninstall",
            Self::Unlock { .. } => "unlock",
            Self::CorrectDrift => "correct cluster drift",
        }
    }

    /// The timeout the action runs with (Flux's `timeoutForAction`).
    pub fn timeout(&self, policy: &Policy) -> Duration {
        match self {
            Self::Install => policy.install.timeout,
            Self::Upgrade => policy.upgrade.timeout,
            Self::Test => policy.test.timeout,
            Self::RollbackRemediation { .. } => policy.rollback_timeout,
            Self::UninstallRemediation => policy.uninstall_timeout,
            Self::Unlock { .. } | Self::CorrectDrift => policy.timeout,
        }
    }

    /// `Running 'upgrade' action with timeout of 5m0s` (Reconciling, and Ready=Unknown for
    /// release actions).
    pub fn running_message(&self, policy: &Policy) -> String {
        format!(
            "Running '{}' action with timeout of {}",
            self.name(),
            go_duration(self.timeout(policy).as_millis() as f64)
        )
    }
}

/// The action kinds already run in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AlreadyRun(Vec<ActionKind>);

impl AlreadyRun {
    pub fn insert(&mut self, k: ActionKind) {
        if !self.0.contains(&k) {
            self.0.push(k);
        }
    }

    pub fn contains(&self, k: ActionKind) -> bool {
        self.0.contains(&k)
    }
}

/// Why the release stalled (`Stalled=True`, terminal in Flux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallReason {
    RetriesExceeded,
    MissingRollbackTarget,
}

impl StallReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExceeded => reasons::RETRIES_EXCEEDED,
            Self::MissingRollbackTarget => reasons::MISSING_ROLLBACK_TARGET,
        }
    }
}

/// What the loop does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run this action, then observe and call [`next_step`] again.
    Run(Action),
    /// Nothing left: remove `Reconciling`, [`summarize`], requeue after `spec.interval`.
    Done,
    /// Stop and requeue at once (after a remediation, or an action already run this
    /// reconcile): `Reconciling=True` reason `ProgressingWithRetry` with Ready's message.
    MustRequeue,
    /// `RetryOnFailure`: `Reconciling=True` `ProgressingWithRetry` "retrying after 5m0s";
    /// requeue after the interval.
    RetryAfter(Duration),
    /// `Stalled=True` with `reason` and `message`; no action. See [`requeue_after`].
    Stalled {
        reason: StallReason,
        message: String,
    },
    /// pennant: the release is locked by an operation younger than its timeout; requeue after
    /// the given time and look again.
    WaitForLock(Duration),
    /// The state cannot be determined: `Ready=False` reason `StateError` with message
    /// "Could not determine release state: <message>", retry with backoff.
    StateError(String),
    /// A remediation failed (its message) and retries are left: `Reconciling=True`
    /// `ProgressingWithRetry` with Ready's message; the reconcile ends with this error, so the
    /// next one waits the failure backoff (`gitops::reconcile_request::failure_backoff`). Flux
    /// requeues with its rate limiter; pennant requeued at once, a rollback per second.
    Backoff(String),
}

/// Condition edits the state calls for before the action (Flux does them in `actionForState`);
/// apply with [`apply_state_effect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEffect {
    None,
    /// In sync: a stale `Remediated=True` becomes `Released=True UpgradeSucceeded`; a stale
    /// `Released=False Install/UpgradeFailed` becomes the matching success (then summarize);
    /// `Drifted=False` when detection is on.
    InSync,
    /// Untested: a stale `Remediated=True` becomes `Released=True UpgradeSucceeded`.
    Untested,
    /// `Drifted=True DriftDetected` with `message`, and a Warning event with the same reason and
    /// message.
    Drifted {
        message: String,
    },
}

/// One decision of the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The state it was made from (for logs: "determining next Helm action based on state").
    pub state: ReleaseState,
    pub history: HistoryEdit,
    pub effect: StateEffect,
    pub next: Next,
}

fn retries_exceeded(obs: &Observed, policy: &Policy) -> Next {
    retries_exceeded_with(policy, obs.last_action, &obs.counters)
}

fn retries_exceeded_with(
    policy: &Policy,
    last_action: Option<ReleaseAction>,
    counters: &Counters,
) -> Next {
    let action = last_action.unwrap_or(ReleaseAction::Install);
    let count = policy
        .active_remediation(last_action)
        .map(|r| r.failure_count(counters))
        .unwrap_or(0);
    Next::Stalled {
        reason: StallReason::RetriesExceeded,
        message: format!("Failed to {} after {count} attempt(s)", action.as_str()),
    }
}

/// Flux's "instructed to stop after running a remediation".
fn stop_after_remediation(obs: &Observed, policy: &Policy) -> Next {
    if let Some(d) = policy.active_retry(obs.last_action) {
        return Next::RetryAfter(d);
    }
    match policy.active_remediation(obs.last_action) {
        Some(r) if r.retries_exhausted(&obs.counters) && !r.is_uninstall_after_upgrade() => {
            retries_exceeded(obs, policy)
        }
        _ => Next::MustRequeue,
    }
}

/// Flux's "instructed to stop before running" (the action kind already ran).
fn stop_before(obs: &Observed, policy: &Policy) -> Next {
    if let Some(d) = policy.active_retry(obs.last_action) {
        return Next::RetryAfter(d);
    }
    match policy.active_remediation(obs.last_action) {
        Some(r) if r.retries_exhausted(&obs.counters) => Next::Done,
        _ => Next::MustRequeue,
    }
}

/// The next step of the release loop: Flux's `AtomicRelease` with its clean-release strategy
/// and `actionForState` table.
///
/// - After a remediation in this reconcile: stop (RetryAfter with `RetryOnFailure`; Stalled
///   `RetriesExceeded` when retries are exhausted, unless the remediation was an uninstall after
///   an upgrade; else MustRequeue). A failed one never gets here: [`Outcome::stop`] ends the
///   loop with the error backoff or the stall.
/// - InSync: truncate history; force → Upgrade; else Done.
/// - Locked: Unlock (pennant: at once when the lock is ours, [`pending_is_ours`], else only
///   once stale, see [`Policy::unlock_only_stale`]).
/// - Absent: Install; install retries exhausted → Stalled unless forced.
/// - Unmanaged: clear history, Upgrade.
/// - OutOfSync: Upgrade; upgrade retries exhausted → Stalled unless forced.
/// - Drifted: `Drifted=True`; CorrectDrift when mode is `enabled`, else Done.
/// - Untested: Test.
/// - Failed, in order: (a) RetryOnFailure → Upgrade; (b) no install/upgrade attempted yet →
///   Upgrade; (c) active failure count 0 (conditions changed) → Upgrade; (d) forced → Upgrade;
///   (e) exhausted and not `remediateLastFailure` → Stalled; (f) truncate history, then
///   Rollback to the previous good snapshot (none → Stalled `MissingRollbackTarget`; gone or
///   modified in storage → Upgrade) or UninstallRemediation.
/// - An action whose kind already ran this reconcile is not run again: RetryAfter, MustRequeue,
///   or Done when retries are exhausted.
pub fn next_step(obs: &Observed, policy: &Policy, run: &AlreadyRun) -> Step {
    let state = release_state(obs, policy);
    let mut step = Step {
        state: state.clone(),
        history: HistoryEdit::Keep,
        effect: StateEffect::None,
        next: Next::Done,
    };
    if run.contains(ActionKind::Remediate) {
        step.next = stop_after_remediation(obs, policy);
        return step;
    }
    let force = obs.force_requested;
    let retry = policy.active_retry(obs.last_action);
    let remediation = policy.active_remediation(obs.last_action);
    step.next = match state.kind {
        StateKind::InSync => {
            step.history = if retry.is_some() {
                HistoryEdit::TruncateIgnoringPrevious
            } else {
                HistoryEdit::Truncate {
                    ignore_tests: ignore_tests(policy, obs.last_action),
                }
            };
            if force {
                Next::Run(Action::Upgrade)
            } else {
                step.effect = StateEffect::InSync;
                Next::Done
            }
        }
        StateKind::Locked => {
            let rls = obs.latest.as_ref().expect("Locked has a latest release");
            match lock_wait(rls, policy, obs.in_flight.as_ref(), obs.now) {
                Some(wait) => Next::WaitForLock(wait),
                None => Next::Run(Action::Unlock { from: rls.status }),
            }
        }
        StateKind::Absent => {
            let r = policy.remediation(ReleaseAction::Install);
            if r.retries_exhausted(&obs.counters) && !force {
                retries_exceeded(obs, policy)
            } else {
                Next::Run(Action::Install)
            }
        }
        StateKind::Unmanaged => {
            step.history = HistoryEdit::Clear;
            Next::Run(Action::Upgrade)
        }
        StateKind::OutOfSync => {
            let r = policy.remediation(ReleaseAction::Upgrade);
            if r.retries_exhausted(&obs.counters) && !force {
                retries_exceeded(obs, policy)
            } else {
                Next::Run(Action::Upgrade)
            }
        }
        StateKind::Drifted => {
            let latest = latest_snapshot(&obs.history)
                .map(Snapshot::full_release_name)
                .unwrap_or_default();
            step.effect = StateEffect::Drifted {
                message: format!(
                    "Cluster state of release {latest} has drifted from the desired state:\n{}",
                    state.reason
                ),
            };
            if policy.drift == DriftMode::Enabled {
                Next::Run(Action::CorrectDrift)
            } else {
                Next::Done
            }
        }
        StateKind::Untested => {
            step.effect = StateEffect::Untested;
            Next::Run(Action::Test)
        }
        StateKind::Failed => {
            if retry.is_some() {
                step.history = HistoryEdit::TruncateIgnoringPrevious;
                Next::Run(Action::Upgrade)
            } else {
                match remediation {
                    None => Next::Run(Action::Upgrade),
                    Some(r) if r.failure_count(&obs.counters) <= 0 => Next::Run(Action::Upgrade),
                    Some(_) if force => Next::Run(Action::Upgrade),
                    Some(r) if r.retries_exhausted(&obs.counters) && !r.remediate_last_failure => {
                        retries_exceeded(obs, policy)
                    }
                    Some(r) => {
                        step.history = HistoryEdit::Truncate {
                            ignore_tests: r.ignore_test_failures,
                        };
                        match r.strategy {
                            RemediationStrategy::Uninstall => {
                                Next::Run(Action::UninstallRemediation)
                            }
                            RemediationStrategy::Rollback => {
                                match previous_snapshot(&obs.history, r.ignore_test_failures) {
                                    None => Next::Stalled {
                                        reason: StallReason::MissingRollbackTarget,
                                        message: "Failed to perform remediation: missing target \
                                                  release for rollback: cannot remediate failed \
                                                  release"
                                            .into(),
                                    },
                                    Some(prev) => match obs.rollback_target {
                                        TargetCheck::Verified => {
                                            Next::Run(Action::RollbackRemediation {
                                                target: prev.clone(),
                                            })
                                        }
                                        TargetCheck::Disappeared | TargetCheck::Modified => {
                                            Next::Run(Action::Upgrade)
                                        }
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
        StateKind::Unknown => Next::StateError(state.reason.clone()),
    };
    if let Next::Run(a) = &step.next
        && run.contains(a.kind())
    {
        step.next = if *a == Action::CorrectDrift {
            // pennant: drift the correction could not fix is reported (Drifted=True) and looked
            // at again after the interval; Flux requeues at once and spins on it.
            Next::Done
        } else {
            stop_before(obs, policy)
        };
    }
    step
}

/// pennant: how long to leave a pending release alone. `None` = unlock now (Flux always does).
/// A lock this controller left ([`pending_is_ours`]) is unlocked at once; any other is stale
/// once `last_deployed + timeout of the pending action` has passed.
fn lock_wait(
    rls: &ReleaseInfo,
    policy: &Policy,
    in_flight: Option<&InFlight>,
    now: Timestamp,
) -> Option<Duration> {
    if !policy.unlock_only_stale || pending_is_ours(rls, in_flight) {
        return None;
    }
    let since = rls.last_deployed?;
    let timeout = match rls.status {
        ReleaseStatus::PendingInstall => policy.install.timeout,
        ReleaseStatus::PendingUpgrade => policy.upgrade.timeout,
        ReleaseStatus::PendingRollback => policy.rollback_timeout,
        ReleaseStatus::Uninstalling => policy.uninstall_timeout,
        _ => policy.timeout,
    };
    let age = now.duration_since(since);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    timeout.checked_sub(age).filter(|d| !d.is_zero())
}

/// Whether the pending release `rls` was written by the action [`in_flight_action`] reports:
/// same action (`pending-install` ↔ `install`, `pending-upgrade` ↔ `upgrade`,
/// `pending-rollback` ↔ `rollback`, `uninstalling` ↔ `uninstall`) and Helm wrote it
/// (`info.last_deployed`, set when the pending revision is created) at or after the status
/// said the action started. Helm runs only as this controller's child, killed with it
/// (`engine.rs`), so nothing still holds that lock. A `helm` someone started by hand after
/// the crash, while the status still shows our action, is the one lock this takes for ours.
pub fn pending_is_ours(rls: &ReleaseInfo, in_flight: Option<&InFlight>) -> bool {
    let (Some(f), Some(written)) = (in_flight, rls.last_deployed) else {
        return false;
    };
    let action = match rls.status {
        ReleaseStatus::PendingInstall => "install",
        ReleaseStatus::PendingUpgrade => "upgrade",
        ReleaseStatus::PendingRollback => "rollback",
        ReleaseStatus::Uninstalling => "uninstall",
        _ => return false,
    };
    // the condition's time has whole seconds: compare from the start of its second
    let since = f.since.as_second();
    f.action == action && written.as_second() >= since
}

/// The description Helm storage gets when a release is unlocked: `Release unlocked from stale
/// 'pending-upgrade' state`.
pub fn unlock_description(from: ReleaseStatus) -> String {
    format!("Release unlocked from stale '{}' state", from.as_str())
}

/// When to reconcile again after the loop ended with `next`, given `spec.interval`: Done →
/// interval; MustRequeue → at once (zero); RetryAfter / WaitForLock → its duration; StateError,
/// Backoff → `None` (error backoff). helm-controller#1031 fix: Stalled → interval too. Flux returns a
/// terminal error and never looks again, so a changed `valuesFrom` ConfigMap (which resets the
/// counters, [`reset_counters_needed`]) was never noticed while Ready=False.
pub fn requeue_after(next: &Next, interval: Duration) -> Option<Duration> {
    match next {
        Next::Done | Next::Stalled { .. } => Some(interval),
        Next::MustRequeue | Next::Run(_) => Some(Duration::ZERO),
        Next::RetryAfter(d) | Next::WaitForLock(d) => Some(*d),
        Next::StateError(_) | Next::Backoff(_) => None,
    }
}

/// Whether a HelmRelease that ended its last reconcile `Stalled=True` runs the release loop
/// again: only when something that resets the counters changed ([`reset_counters_needed`]:
/// generation, chart version, values, `resetAt`) or a `forceAt` is pending. Otherwise it stays
/// stalled and waits another interval, without Helm actions (a failed rollback is not retried
/// every interval). Together with [`requeue_after`] this is the helm-controller#1031 fix.
pub fn resume_after_stall(
    was_stalled: bool,
    reset: Option<ResetReason>,
    force_requested: bool,
) -> bool {
    !was_stalled || reset.is_some() || force_requested
}

/// `Reconciling` (reason, message) to set when the loop ends with `next`; `None` = remove
/// `Reconciling`. `ready_message` is the current `Ready` message (Flux copies it).
pub fn reconciling_for(next: &Next, ready_message: &str) -> Option<(&'static str, String)> {
    match next {
        Next::MustRequeue | Next::Backoff(_) => {
            Some((reasons::PROGRESSING_WITH_RETRY, ready_message.to_string()))
        }
        Next::RetryAfter(d) => Some((
            reasons::PROGRESSING_WITH_RETRY,
            format!("retrying after {}", go_duration(d.as_millis() as f64)),
        )),
        Next::WaitForLock(d) => Some((
            reasons::PROGRESSING_WITH_RETRY,
            format!(
                "release locked by another operation; unlocking in {}",
                go_duration(d.as_millis() as f64)
            ),
        )),
        Next::Run(_) | Next::StateError(_) => None,
        Next::Done | Next::Stalled { .. } => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Before and after an action

/// What to do just before running an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// `Reconciling=True` reason `Progressing` with this message ("Running 'upgrade' action
    /// with timeout of 5m0s"). Patch the status before running.
    pub reconciling_message: String,
    /// `Ready=Unknown` reason `Progressing` with this message: release actions (the running
    /// message) and drift correction ("correcting cluster drift"); other actions leave `Ready`.
    pub ready_unknown: Option<String>,
    /// Set `status.lastAttemptedReleaseAction`.
    pub last_action: Option<ReleaseAction>,
    /// Install: clear the history (a new release lifecycle; never roll back past an install).
    pub clear_history: bool,
    /// Install/Upgrade: delete these conditions (`TestSuccess`, `Remediated`).
    pub remove_conditions: &'static [&'static str],
}

/// The effects due before `action` runs (Flux's loop and the action reconcilers' first lines).
pub fn prepare(action: &Action, policy: &Policy) -> Prepare {
    let release = action.kind() == ActionKind::Release;
    let running = action.running_message(policy);
    Prepare {
        ready_unknown: match action {
            Action::CorrectDrift => Some("correcting cluster drift".to_string()),
            _ if release => Some(running.clone()),
            _ => None,
        },
        reconciling_message: running,
        last_action: match action {
            Action::Install => Some(ReleaseAction::Install),
            Action::Upgrade => Some(ReleaseAction::Upgrade),
            _ => None,
        },
        clear_history: *action == Action::Install,
        remove_conditions: if release {
            &[condition_types::TEST_SUCCESS, condition_types::REMEDIATED]
        } else {
            &[]
        },
    }
}

/// How an action ended, as reported by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionResult {
    Succeeded,
    /// `error`: Helm's message (trimmed). `stored`: the attempt changed Helm storage (a new
    /// or updated release; for Test: results recorded on the latest snapshot). Only such
    /// failures count for remediation; others are retried with backoff.
    Failed {
        error: String,
        stored: bool,
    },
}

/// Context for [`outcome`]: the state after the action ran.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeContext<'a> {
    pub policy: &'a Policy,
    pub release_name: &'a str,
    pub release_namespace: &'a str,
    pub desired: &'a Desired,
    /// Counters before the action.
    pub counters: Counters,
    /// `lastAttemptedReleaseAction` after [`prepare`].
    pub last_action: Option<ReleaseAction>,
    /// The newest history snapshot after the action was recorded (install/upgrade: the new
    /// release; test: with its hooks; uninstall/unlock: the release acted on).
    pub latest: Option<&'a Snapshot>,
    /// For Unlock: the release as read from storage (Flux's `processCurrentSnapshot`).
    pub unlocked: Option<&'a Snapshot>,
}

/// A condition to mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub type_: &'static str,
    /// `True`/`False`/`Unknown`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// A Kubernetes Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What an action's result does to the status (Flux's `success`/`failure` of each action).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub counters: Counters,
    pub marks: Vec<Mark>,
    pub event: Option<EventNote>,
    /// Flux's summarize after the action (all but drift correction).
    pub summarize: bool,
    /// The attempt changed nothing in storage: stop the loop and retry ([`on_action_error`]).
    pub retry_error: bool,
    /// End the loop here with this (a failed remediation that changed storage: `Stalled`
    /// `RetriesExceeded` once retries are exhausted, else [`Next::Backoff`]); never at once.
    pub stop: Option<Next>,
}

impl Outcome {
    /// Apply the marks, then summarize when due.
    pub fn apply_conditions(
        &self,
        conditions: &mut Vec<Condition>,
        policy: &Policy,
        generation: i64,
        now: &Time,
    ) {
        for m in &self.marks {
            set_condition(
                conditions, m.type_, m.status, m.reason, &m.message, generation, now,
            );
        }
        if self.summarize {
            summarize(conditions, policy, generation, now);
        }
    }
}

/// `msg` with Helm's debug log appended, as Flux's warning events: `msg\n\nLast Helm logs:\n\n…`.
pub fn with_logs(msg: &str, logs: &str) -> String {
    if logs.is_empty() {
        msg.to_string()
    } else {
        format!("{msg}\n\nLast Helm logs:\n\n{logs}")
    }
}

/// Counter rules (Flux's `IncrementFailureCount` and `ClearFailures` calls): every failed action
/// adds to `failures`; a failed install/upgrade that changed storage adds to its own counter; a
/// test failure recorded on the release adds to the active remediation's counter unless test
/// failures are ignored; a successful install/upgrade under `RetryOnFailure` clears all three.
/// pennant: a failed remediation (rollback, uninstall) that changed storage also adds to the
/// active remediation's counter, so `retries` bounds it and the release stalls
/// (`RetriesExceeded`) once they are spent. Flux counts it in `failures` only and retries the
/// remediation forever.
pub fn record_outcome(
    counters: Counters,
    action: &Action,
    result: &ActionResult,
    policy: &Policy,
    last_action: Option<ReleaseAction>,
) -> Counters {
    let mut c = counters;
    match (action, result) {
        (Action::CorrectDrift, _) => {}
        (Action::Install | Action::Upgrade, ActionResult::Succeeded) => {
            let a = if *action == Action::Install {
                ReleaseAction::Install
            } else {
                ReleaseAction::Upgrade
            };
            if matches!(
                policy.effective_strategy(a),
                FailureStrategy::RetryOnFailure { .. }
            ) {
                c = Counters::default();
            }
        }
        (_, ActionResult::Succeeded) => {}
        (a, ActionResult::Failed { stored, .. }) => {
            c.failures += 1;
            match a {
                Action::Install if *stored => c.install_failures += 1,
                Action::Upgrade if *stored => c.upgrade_failures += 1,
                Action::Test if *stored => {
                    if let Some(r) = policy.active_remediation(last_action)
                        && !r.ignore_test_failures
                    {
                        match r.action {
                            ReleaseAction::Install => c.install_failures += 1,
                            ReleaseAction::Upgrade => c.upgrade_failures += 1,
                        }
                    }
                }
                Action::RollbackRemediation { .. } | Action::UninstallRemediation if *stored => {
                    match policy.active_remediation(last_action).map(|r| r.action) {
                        Some(ReleaseAction::Install) => c.install_failures += 1,
                        Some(ReleaseAction::Upgrade) => c.upgrade_failures += 1,
                        None => {}
                    }
                }
                _ => {}
            }
        }
    }
    c
}

fn mark(type_: &'static str, status: &'static str, reason: &'static str, message: String) -> Mark {
    Mark {
        type_,
        status,
        reason,
        message,
    }
}

fn event(warning: bool, reason: &'static str, message: &str) -> Option<EventNote> {
    Some(EventNote {
        warning,
        reason,
        message: message.to_string(),
    })
}

/// The status effects of `action` ending with `result`, with Flux's reasons and messages:
///
/// - install/upgrade success: `Released=True InstallSucceeded|UpgradeSucceeded` "Helm install
///   succeeded for release ns/name.vN with chart c@v"; with tests enabled and not yet run,
///   `TestSuccess=Unknown AwaitingTests`;
/// - install/upgrade failure: `Released=False InstallFailed|UpgradeFailed` "Helm install failed
///   for release ns/name with chart c@v: err";
/// - test: `TestSuccess=True TestSucceeded` "Helm test succeeded for release … with chart …:
///   N test hooks completed successfully" / `False TestFailed`;
/// - rollback: `Remediated=True RollbackSucceeded` "Helm rollback to previous release ns/name.vN
///   with chart c@v succeeded" / `False RollbackFailed` "… failed: err";
/// - uninstall remediation: `Remediated=True UninstallSucceeded` / `False UninstallFailed`;
/// - unlock: `Released=False PendingRelease` "Unlocked Helm release … in pending-upgrade state"
///   / "Unlock of Helm release … in … state failed: err" (always a retry error);
/// - drift correction: events only (`DriftCorrected` / `DriftCorrectionFailed`; the controller
///   writes those with the change set, see [`drift_corrected_message`]).
pub fn outcome(action: &Action, result: &ActionResult, ctx: &OutcomeContext) -> Outcome {
    use condition_types::*;
    use reasons::*;
    let counters = record_outcome(ctx.counters, action, result, ctx.policy, ctx.last_action);
    let cur_name = ctx
        .latest
        .map(Snapshot::full_release_name)
        .unwrap_or_default();
    let cur_chart = ctx
        .latest
        .map(Snapshot::versioned_chart_name)
        .unwrap_or_default();
    let mut out = Outcome {
        counters,
        marks: vec![],
        event: None,
        summarize: true,
        retry_error: false,
        stop: None,
    };
    match (action, result) {
        (Action::Install | Action::Upgrade, ActionResult::Succeeded) => {
            let (reason, verb) = if *action == Action::Install {
                (INSTALL_SUCCEEDED, "install")
            } else {
                (UPGRADE_SUCCEEDED, "upgrade")
            };
            let msg =
                format!("Helm {verb} succeeded for release {cur_name} with chart {cur_chart}");
            out.marks.push(mark(RELEASED, TRUE, reason, msg.clone()));
            if ctx.policy.test.enabled && !ctx.latest.is_some_and(Snapshot::has_been_tested) {
                out.marks.push(mark(
                    TEST_SUCCESS,
                    UNKNOWN,
                    AWAITING_TESTS,
                    test_pending_message(&cur_name, &cur_chart),
                ));
            }
            out.event = event(false, reason, &msg);
        }
        (Action::Install | Action::Upgrade, ActionResult::Failed { error, stored }) => {
            let (reason, verb) = if *action == Action::Install {
                (INSTALL_FAILED, "install")
            } else {
                (UPGRADE_FAILED, "upgrade")
            };
            let msg = format!(
                "Helm {verb} failed for release {}/{} with chart {}@{}: {}",
                ctx.release_namespace,
                ctx.release_name,
                ctx.desired.chart_name,
                ctx.desired.chart_version,
                error.trim()
            );
            out.marks.push(mark(RELEASED, FALSE, reason, msg.clone()));
            out.event = event(true, reason, &msg);
            out.retry_error = !stored;
        }
        (Action::Test, ActionResult::Succeeded) => {
            let n = ctx
                .latest
                .and_then(|s| s.test_hooks.as_ref())
                .map_or(0, BTreeMap::len);
            let hooks = match n {
                0 => "no test hooks".to_string(),
                1 => "1 test hook completed successfully".to_string(),
                n => format!("{n} test hooks completed successfully"),
            };
            let msg = format!(
                "Helm test succeeded for release {cur_name} with chart {cur_chart}: {hooks}"
            );
            out.marks
                .push(mark(TEST_SUCCESS, TRUE, TEST_SUCCEEDED, msg.clone()));
            out.event = event(false, TEST_SUCCEEDED, &msg);
        }
        (Action::Test, ActionResult::Failed { error, stored }) => {
            let msg = format!(
                "Helm test failed for release {cur_name} with chart {cur_chart}: {}",
                error.trim()
            );
            out.marks
                .push(mark(TEST_SUCCESS, FALSE, TEST_FAILED, msg.clone()));
            out.event = event(true, TEST_FAILED, &msg);
            out.retry_error = !stored;
        }
        (Action::RollbackRemediation { target }, r) => {
            let (name, chart) = (target.full_release_name(), target.versioned_chart_name());
            match r {
                ActionResult::Succeeded => {
                    let msg = format!(
                        "Helm rollback to previous release {name} with chart {chart} succeeded"
                    );
                    out.marks
                        .push(mark(REMEDIATED, TRUE, ROLLBACK_SUCCEEDED, msg.clone()));
                    out.event = event(false, ROLLBACK_SUCCEEDED, &msg);
                }
                ActionResult::Failed { error, stored } => {
                    let msg = format!(
                        "Helm rollback to previous release {name} with chart {chart} failed: {}",
                        error.trim()
                    );
                    out.marks
                        .push(mark(REMEDIATED, FALSE, ROLLBACK_FAILED, msg.clone()));
                    out.event = event(true, ROLLBACK_FAILED, &msg);
                    out.retry_error = !stored;
                    if *stored {
                        out.stop = Some(after_failed_remediation(ctx, counters, msg));
                    }
                }
            }
        }
        (Action::UninstallRemediation, r) => match r {
            ActionResult::Succeeded => {
                let msg = format!(
                    "Helm uninstall remediation for release {cur_name} with chart {cur_chart} succeeded"
                );
                out.marks
                    .push(mark(REMEDIATED, TRUE, UNINSTALL_SUCCEEDED, msg.clone()));
                out.event = event(false, UNINSTALL_SUCCEEDED, &msg);
            }
            ActionResult::Failed { error, stored } => {
                let msg = format!(
                    "Helm uninstall remediation for release {cur_name} with chart {cur_chart} failed: {}",
                    error.trim()
                );
                out.marks
                    .push(mark(REMEDIATED, FALSE, UNINSTALL_FAILED, msg.clone()));
                out.event = event(true, UNINSTALL_FAILED, &msg);
                out.retry_error = !stored;
                if *stored {
                    out.stop = Some(after_failed_remediation(ctx, counters, msg));
                }
            }
        },
        (Action::Unlock { from }, r) => {
            let snap = ctx.unlocked.or(ctx.latest);
            let name = snap.map(Snapshot::full_release_name).unwrap_or_default();
            let chart = snap.map(Snapshot::versioned_chart_name).unwrap_or_default();
            match r {
                ActionResult::Succeeded => {
                    let msg = format!(
                        "Unlocked Helm release {name} with chart {chart} in {} state",
                        from.as_str()
                    );
                    out.marks
                        .push(mark(RELEASED, FALSE, PENDING_RELEASE, msg.clone()));
                    out.event = event(false, PENDING_RELEASE, &msg);
                }
                ActionResult::Failed { error, .. } => {
                    let msg = format!(
                        "Unlock of Helm release {name} with chart {chart} in {} state failed: {}",
                        from.as_str(),
                        error.trim()
                    );
                    out.marks
                        .push(mark(RELEASED, FALSE, PENDING_RELEASE, msg.clone()));
                    out.event = event(true, PENDING_RELEASE, &msg);
                    out.retry_error = true;
                }
            }
        }
        (Action::CorrectDrift, _) => {
            out.summarize = false;
        }
    }
    out
}

/// How the loop ends after a remediation failed and changed storage (`counters`: after it
/// counted, [`record_outcome`]): `Stalled` `RetriesExceeded` once the active remediation's
/// retries are exhausted (also after an uninstall, which Flux exempts when it succeeds),
/// `RetryAfter` under `RetryOnFailure`, else [`Next::Backoff`]. Never `MustRequeue`: pennant
/// requeued at once and rolled back about once a second, forever.
fn after_failed_remediation(ctx: &OutcomeContext, counters: Counters, message: String) -> Next {
    if let Some(d) = ctx.policy.active_retry(ctx.last_action) {
        return Next::RetryAfter(d);
    }
    match ctx.policy.active_remediation(ctx.last_action) {
        Some(r) if r.retries_exhausted(&counters) => {
            retries_exceeded_with(ctx.policy, ctx.last_action, &counters)
        }
        _ => Next::Backoff(message),
    }
}

/// `Helm release ns/name.vN with chart c@v is awaiting tests`.
pub fn test_pending_message(full_release_name: &str, versioned_chart: &str) -> String {
    format!("Helm release {full_release_name} with chart {versioned_chart} is awaiting tests")
}

/// The `DriftCorrected` event: `Cluster state of release ns/name.vN has been corrected:\n<changes>`.
pub fn drift_corrected_message(full_release_name: &str, change_set: &str) -> String {
    format!("Cluster state of release {full_release_name} has been corrected:\n{change_set}")
}

/// The `DriftCorrectionFailed` event: `Failed to [partially ]correct cluster state of release
/// …:\n<errors>[\n\nSuccessful corrections:\n<changes>]`.
pub fn drift_correction_failed_message(
    full_release_name: &str,
    errors: &str,
    change_set: &str,
) -> String {
    let partial = if change_set.is_empty() {
        ""
    } else {
        "partially "
    };
    let mut msg = format!(
        "Failed to {partial}correct cluster state of release {full_release_name}:\n{errors}"
    );
    if !change_set.is_empty() {
        msg.push_str("\n\nSuccessful corrections:\n");
        msg.push_str(change_set);
    }
    msg
}

/// How the loop ends after an action returned a retry error (nothing changed in storage):
/// `RetryAfter` under `RetryOnFailure`, else `None` = return the error (backoff), and when
/// `Ready` is True mark it `False ReconcileError` with the error (Flux).
pub fn on_action_error(policy: &Policy, last_action: Option<ReleaseAction>) -> Option<Next> {
    policy.active_retry(last_action).map(Next::RetryAfter)
}

// ---------------------------------------------------------------------------------------------
// Conditions

/// Apply the condition edits of a [`StateEffect`]. `latest` is the newest history snapshot.
pub fn apply_state_effect(
    conditions: &mut Vec<Condition>,
    effect: &StateEffect,
    latest: Option<&Snapshot>,
    policy: &Policy,
    generation: i64,
    now: &Time,
) {
    use condition_types::*;
    let name = latest.map(Snapshot::full_release_name).unwrap_or_default();
    let chart = latest
        .map(Snapshot::versioned_chart_name)
        .unwrap_or_default();
    let upgrade_ok = format!("Helm upgrade succeeded for release {name} with chart {chart}");
    match effect {
        StateEffect::None => {}
        StateEffect::Untested => {
            if is_true(conditions, REMEDIATED) {
                replace_condition(conditions, REMEDIATED, RELEASED, &upgrade_ok, generation);
            }
        }
        StateEffect::InSync => {
            if is_true(conditions, REMEDIATED) {
                replace_condition(conditions, REMEDIATED, RELEASED, &upgrade_ok, generation);
            }
            if !is_true(conditions, meta_types::READY) || !is_true(conditions, RELEASED) {
                let reason = get(conditions, RELEASED).map(|c| c.reason.as_str());
                let restored = match reason {
                    Some(reasons::INSTALL_FAILED) => Some((
                        reasons::INSTALL_SUCCEEDED,
                        format!("Helm install succeeded for release {name} with chart {chart}"),
                    )),
                    Some(reasons::UPGRADE_FAILED) => Some((reasons::UPGRADE_SUCCEEDED, upgrade_ok)),
                    _ => None,
                };
                if let Some((reason, msg)) = restored {
                    set_condition(conditions, RELEASED, TRUE, reason, &msg, generation, now);
                    summarize(conditions, policy, generation, now);
                }
            }
            if policy.drift_detection() {
                set_condition(
                    conditions,
                    DRIFTED,
                    FALSE,
                    reasons::NO_DRIFT_DETECTED,
                    "No drift detected against the cluster state",
                    generation,
                    now,
                );
            }
        }
        StateEffect::Drifted { message } => {
            set_condition(
                conditions,
                DRIFTED,
                TRUE,
                reasons::DRIFT_DETECTED,
                message,
                generation,
                now,
            );
        }
    }
}

/// Flux's `replaceCondition`: `target` becomes `replacement` (True, `UpgradeSucceeded`,
/// `message`), keeping the target's `lastTransitionTime`.
fn replace_condition(
    conditions: &mut Vec<Condition>,
    target: &str,
    replacement: &str,
    message: &str,
    generation: i64,
) {
    let Some(old) = get(conditions, target).cloned() else {
        return;
    };
    remove_condition(conditions, replacement);
    remove_condition(conditions, target);
    set_condition(
        conditions,
        replacement,
        TRUE,
        reasons::UPGRADE_SUCCEEDED,
        message,
        generation,
        &old.last_transition_time,
    );
}

/// Flux's HelmRelease `summarize`: `Ready` copied from the first of `Remediated`, `TestSuccess`
/// (only when tests are enabled and failures not ignored), `Released`, preferring the newest
/// `observedGeneration`; `Ready=False` when that is `Remediated`, even a successful rollback;
/// `Ready=True` removes `Stalled`; `TestSuccess` is deleted when tests are disabled. With none
/// of them present `Ready` is left as it is. (The observed post-renderer/common-metadata
/// digests Flux also updates here are the controller's.)
pub fn summarize(conditions: &mut Vec<Condition>, policy: &Policy, generation: i64, now: &Time) {
    use condition_types::*;
    let order: &[&str] = if policy.test.enabled && !policy.test.ignore_failures {
        &[REMEDIATED, TEST_SUCCESS, RELEASED]
    } else {
        &[REMEDIATED, RELEASED]
    };
    if !policy.test.enabled {
        remove_condition(conditions, TEST_SUCCESS);
    }
    let top = order
        .iter()
        .enumerate()
        .filter_map(|(i, t)| get(conditions, t).map(|c| (i, c)))
        .max_by(|(ia, a), (ib, b)| {
            a.observed_generation
                .unwrap_or(0)
                .cmp(&b.observed_generation.unwrap_or(0))
                .then(ib.cmp(ia))
        })
        .map(|(_, c)| c.clone());
    let Some(top) = top else { return };
    let status = if top.type_ == REMEDIATED {
        FALSE
    } else {
        match top.status.as_str() {
            TRUE => TRUE,
            FALSE => FALSE,
            _ => UNKNOWN,
        }
    };
    if status == TRUE {
        remove_condition(conditions, meta_types::STALLED);
    }
    set_condition(
        conditions,
        meta_types::READY,
        status,
        &top.reason,
        &top.message,
        generation,
        now,
    );
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
