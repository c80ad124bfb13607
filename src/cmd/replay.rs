//! Replay a release against recorded per-step counts through the controller's own
//! [`decide`](crate::canary::machine::decide). PURE and deterministic: the same file gives the same
//! steps, weights, verdicts and outcome.
//!
//! The file (YAML or JSON):
//!
//! ```yaml
//! analysis: {interval: 1m, stepWeight: 10, maxWeight: 50}   # Flagger's analysis; optional
//! policy: {errorTolerance: 0.5}                             # judge policy; optional (§4.5)
//! lookback: {requests: 360000, errors: 3600,                 # primary before the run; optional
//!            buckets: [[100, 180000], [250, 324000]], timed: 360000}
//! steps:                                                     # one per analysis interval
//!   - canary:  {requests: 600, errors: 9,  buckets: [[100, 300], [250, 540]], timed: 600}
//!     primary: {requests: 5400, errors: 52, buckets: [[100, 2700], [250, 4860]], timed: 5400}
//! ```
//!
//! `buckets` are cumulative `[edge ms, requests ≤ edge]`; omit them (and set `policy.latency:
//! false`) to judge errors only. A step may be `gap: true` (a scrape gap: merged into the next).
//!
//! Count signals (MetricTemplates declared with `judge.pennant.dev/bad` and `/total`,
//! `analysis::count_metric`) are replayed from `countSignals` and, per version, `counts` — one
//! `{bad, total}` per declared signal, in order (the lookback's set each signal's baseline):
//!
//! ```yaml
//! countSignals: [{name: jobs, tolerance: 1}]                 # tolerance in pp; optional
//! steps:
//!   - canary:  {requests: 600, errors: 9, counts: [{bad: 12, total: 200}]}
//!     primary: {requests: 5400, errors: 52, counts: [{bad: 2, total: 200}]}
//! ```

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;
use serde::Deserialize;

use crate::analysis::judge::{CountSignal, Policy};
use crate::analysis::{MetricCheck, MetricOutcome};
use crate::api::{
    Canary, CanaryAnalysis, CanaryMetric, CanaryPhase, CanaryService, CanarySpec, CanaryStatus,
    CrossNamespaceReference, EventCounts, TargetReference,
};
use crate::canary::judged::{
    InputError, JudgeObservation, MODE_ANNOTATION, StepSample, VersionSample,
};
use crate::canary::machine::{
    Action, Observed, PrimaryState, Probe, Probes, Readiness, Step, TargetState, decide,
};
use crate::webhook::HookVerdict;

/// One version in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct FileVersion {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<(f64, u64)>,
    pub timed: u64,
    /// Events of each of the file's `countSignals`, in order.
    pub counts: Vec<EventCounts>,
}

impl From<&FileVersion> for VersionSample {
    fn from(v: &FileVersion) -> Self {
        VersionSample {
            requests: v.requests,
            errors: v.errors,
            buckets: v.buckets.clone(),
            timed: if v.timed == 0 && !v.buckets.is_empty() {
                v.requests
            } else {
                v.timed
            },
            pods: Vec::new(),
            counts: v.counts.clone(),
            load_test: None,
        }
    }
}

/// One step in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct FileStep {
    pub canary: FileVersion,
    pub primary: FileVersion,
    /// A scrape gap: the judge defers the step.
    pub gap: bool,
}

/// The replay file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ReplayFile {
    pub analysis: Option<CanaryAnalysis>,
    pub policy: Option<Policy>,
    pub lookback: Option<FileVersion>,
    /// Count signals, as a MetricTemplate's judge annotations declare them.
    pub count_signals: Vec<FileCountSignal>,
    pub steps: Vec<FileStep>,
}

/// A count signal in the file: the Canary metric's name and its tolerance (pp; `None`: the
/// policy's `errorTolerance`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct FileCountSignal {
    pub name: String,
    pub tolerance: Option<f64>,
}

/// One analysis tick of the replay.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayTick {
    /// Tick number (1 = the first judged step).
    pub tick: usize,
    /// Canary weight during the step (percent).
    pub weight: i32,
    /// Judge verdict after the step (`PASS`/`FAIL`/`CONTINUE`), or what happened instead.
    pub verdict: String,
    /// Canary weight after the tick.
    pub next_weight: i32,
    pub phase: Option<CanaryPhase>,
    /// The judge's evidence after the step.
    pub evidence: String,
    /// Events emitted on this tick.
    pub events: Vec<String>,
}

/// The replay's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub ticks: Vec<ReplayTick>,
    /// `promoted`, `rolled back`, `held (not enough evidence)` or `undecided`.
    pub outcome: String,
}

const REV: &str = "sha256:replayreplayrepl";

fn canary(analysis: CanaryAnalysis) -> Canary {
    let mut c = Canary::new(
        "replay",
        CanarySpec {
            target_ref: TargetReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "replay".into(),
            },
            service: CanaryService {
                port: 80,
                ..Default::default()
            },
            analysis: Some(analysis),
            ..Default::default()
        },
    );
    c.metadata = ObjectMeta {
        name: Some("replay".into()),
        namespace: Some("replay".into()),
        annotations: Some(BTreeMap::from([(
            MODE_ANNOTATION.to_string(),
            "sequential".to_string(),
        )])),
        ..Default::default()
    };
    c
}

/// Default analysis when the file has none: 1m interval, stepWeight 10, maxWeight 50.
pub fn default_analysis() -> CanaryAnalysis {
    CanaryAnalysis {
        interval: Some("1m".into()),
        threshold: Some(5),
        max_weight: Some(50),
        step_weight: Some(10),
        ..Default::default()
    }
}

/// Run the release: a started run (phase Progressing, weight 0), then one reconcile per
/// interval, each fed the next recorded step, until the run ends or the steps run out.
/// Hooks pass, other metrics pass, workloads are ready.
pub fn replay(file: &ReplayFile) -> Replay {
    let analysis = file.analysis.clone().unwrap_or_else(default_analysis);
    let interval =
        SignedDuration::try_from(analysis.interval()).unwrap_or(SignedDuration::from_mins(1));
    let mut analysis = analysis;
    let counts: Vec<CountSignal> = file
        .count_signals
        .iter()
        .map(|s| CountSignal {
            name: s.name.clone(),
            tolerance_pp: s.tolerance,
        })
        .collect();
    for s in &counts {
        analysis.metrics.push(CanaryMetric {
            name: s.name.clone(),
            template_ref: Some(CrossNamespaceReference {
                name: s.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut c = canary(analysis);
    let policy = file.policy.clone().unwrap_or_default();
    c.status = Some(CanaryStatus {
        phase: Some(CanaryPhase::Progressing),
        last_applied_spec: Some(REV.into()),
        tracked_configs: Some(BTreeMap::new()),
        ..Default::default()
    });
    let mut now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut ticks = Vec::new();
    let mut steps = file.steps.iter();
    let mut pending_from = None;
    let mut tick_no = 0;
    // the starting tick (weight 0 → first step) plus one per recorded step
    for _ in 0..=file.steps.len() {
        let st = c.status.clone().unwrap_or_default();
        let weight = st.canary_weight;
        let from = st
            .last_step_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        let mut probes = Probes::default();
        let mut used_step = false;
        let decision = loop {
            let obs = Observed {
                now,
                target: Some(TargetState {
                    revision: REV.into(),
                    configs: BTreeMap::new(),
                    readiness: Readiness::Ready,
                    scale_up_replicas: 1,
                    ready_replicas: 1,
                }),
                primary: Some(PrimaryState {
                    readiness: Readiness::Ready,
                    revision_id: None,
                    replicas: Some(1),
                }),
                probes: probes.clone(),
                invalid: vec![],
                unsupported: vec![],
                target_matches_primary: Some(false),
                routes_pending: None,
                concurrency: vec![],
            };
            match decide(&c, &obs) {
                Step::Done(d) => break d,
                Step::Need(Probe::Hooks(k)) => {
                    probes.hooks.insert(
                        k,
                        HookVerdict {
                            pass: true,
                            message: String::new(),
                        },
                    );
                }
                Step::Need(Probe::Metrics) => {
                    let metrics = c.spec.analysis.as_ref().map(|a| a.metrics.clone());
                    probes.metrics = Some(
                        metrics
                            .unwrap_or_default()
                            .iter()
                            .map(|m| MetricCheck {
                                name: m.name.clone(),
                                outcome: MetricOutcome::Pass(0.0),
                            })
                            .collect(),
                    );
                }
                Step::Need(Probe::CountSignals) => {
                    probes.count_signals = Some(Ok(counts.clone()));
                }
                Step::Need(Probe::Judge) => {
                    used_step = true;
                    let s = steps.next();
                    let start = st
                        .judge
                        .as_ref()
                        .and_then(|j| j.window_start)
                        .or(pending_from)
                        .unwrap_or(from);
                    probes.judge = Some(JudgeObservation {
                        policy: policy
                            .validate()
                            .map(|_| policy.clone())
                            .map_err(|e| format!("policy: {e}")),
                        step: match s {
                            None => Err(InputError::Provider("no more recorded steps".into())),
                            Some(s) if s.gap => {
                                Err(InputError::Incomplete("scrape gap (recorded)".into()))
                            }
                            Some(s) => Ok(StepSample {
                                canary: (&s.canary).into(),
                                primary: (&s.primary).into(),
                            }),
                        },
                        from: start,
                        lookback: file.lookback.as_ref().map(|l| Ok(l.into())),
                        count_signals: Ok(counts.clone()),
                        load_tests: Default::default(),
                    });
                }
            }
        };
        if used_step {
            tick_no += 1;
        }
        let js = decision.status.judge.clone().unwrap_or_default();
        pending_from = js.window_start;
        let events: Vec<String> = decision.notices.iter().map(|n| n.message.clone()).collect();
        let promoted = decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }));
        if used_step {
            ticks.push(ReplayTick {
                tick: tick_no,
                weight,
                verdict: js.verdict.clone().unwrap_or_else(|| "-".into()),
                next_weight: decision.status.canary_weight,
                phase: decision.status.phase,
                evidence: js.message.clone().unwrap_or_default(),
                events,
            });
        }
        let phase = decision.status.phase;
        c.status = Some(decision.status);
        if promoted || phase == Some(CanaryPhase::Promoting) {
            return Replay {
                ticks,
                outcome: "promoted".into(),
            };
        }
        if phase == Some(CanaryPhase::Failed) {
            return Replay {
                ticks,
                outcome: "rolled back".into(),
            };
        }
        if phase == Some(CanaryPhase::WaitingPromotion) {
            return Replay {
                ticks,
                outcome: "held (not enough evidence)".into(),
            };
        }
        now = now.checked_add(interval).unwrap();
    }
    Replay {
        ticks,
        outcome: "undecided (recorded steps ran out)".into(),
    }
}

/// The replay as a table: one line per tick, then the outcome.
pub fn render(r: &Replay) -> String {
    let mut out = String::from("tick  weight  verdict   next  phase\n");
    for t in &r.ticks {
        out += &format!(
            "{:>4}  {:>5}%  {:<8}  {:>3}%  {}\n",
            t.tick,
            t.weight,
            t.verdict,
            t.next_weight,
            t.phase.map(|p| format!("{p:?}")).unwrap_or_default()
        );
        if !t.evidence.is_empty() {
            out += &format!("      {}\n", t.evidence);
        }
    }
    out += &format!("outcome: {}\n", r.outcome);
    out
}

/// `pennant replay FILE`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Recorded per-step counts (YAML/JSON; see `cmd::replay`).
    pub file: std::path::PathBuf,
}

/// `pennant replay`: read the file, replay it, print the steps and the outcome.
pub fn command(args: &ReplayArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let file: ReplayFile = serde_saphyr::from_str(&text)
        .with_context(|| format!("parsing {}", args.file.display()))?;
    print!("{}", render(&replay(&file)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(nc: u64, xc: u64, np: u64, xp: u64) -> FileStep {
        FileStep {
            canary: FileVersion {
                requests: nc,
                errors: xc,
                ..Default::default()
            },
            primary: FileVersion {
                requests: np,
                errors: xp,
                ..Default::default()
            },
            gap: false,
        }
    }

    fn file(steps: Vec<FileStep>) -> ReplayFile {
        ReplayFile {
            policy: Some(Policy {
                latency: false,
                ..Policy::default()
            }),
            lookback: Some(FileVersion {
                requests: 360_000,
                errors: 3_600,
                ..Default::default()
            }),
            steps,
            ..Default::default()
        }
    }

    #[test]
    fn a_bad_release_is_rolled_back_by_decide() {
        // ~3 % canary errors against 1 %, 100 rps, weights 10, 20, 30 …
        let steps = (1..=10)
            .map(|k| {
                let nc = 600 * k.min(5);
                step(nc, nc * 3 / 100, 6000 - nc, (6000 - nc) / 100)
            })
            .collect();
        let r = replay(&file(steps));
        assert_eq!(r.outcome, "rolled back", "{}", render(&r));
        let last = r.ticks.last().unwrap();
        assert_eq!(last.verdict, "FAIL");
        assert!(
            last.events
                .iter()
                .any(|e| e.contains("sequential judge FAIL: errors: canary")),
            "{:?}",
            last.events
        );
        // weights ramp 10, 20, … while CONTINUE
        assert_eq!(r.ticks[0].weight, 10);
        assert!(
            r.ticks.len() >= 2 && r.ticks[1].weight == 20,
            "{}",
            render(&r)
        );
    }

    #[test]
    fn a_good_release_is_promoted_and_replay_is_deterministic() {
        let steps: Vec<FileStep> = (1..=30)
            .map(|k| {
                let nc = 3000 * k.min(5);
                step(nc, nc / 100, 30000 - nc, (30000 - nc) / 100)
            })
            .collect();
        let f = file(steps);
        let r = replay(&f);
        assert_eq!(r.outcome, "promoted", "{}", render(&r));
        assert_eq!(r.ticks.last().unwrap().weight, 50);
        assert_eq!(replay(&f), r);
    }

    /// A replay file with one count signal `jobs`: 1 % errors on both versions (the builtin
    /// signal sees nothing), `canary_bad` of every 200 canary jobs failing against 1 of 200.
    fn jobs_file(canary_bad: u64, with_counts: bool) -> ReplayFile {
        let jobs = |bad| vec![EventCounts { bad, total: 200 }];
        let steps = (1..=10)
            .map(|k| {
                let mut s = step(600 * k.min(5), 6 * k.min(5), 6000, 60);
                if with_counts {
                    s.canary.counts = jobs(canary_bad);
                    s.primary.counts = jobs(1);
                }
                s
            })
            .collect();
        let mut f = file(steps);
        f.count_signals = vec![FileCountSignal {
            name: "jobs".into(),
            tolerance: Some(1.0),
        }];
        f.lookback.as_mut().unwrap().counts = jobs(1);
        f
    }

    #[test]
    fn a_regression_only_a_count_signal_sees_is_rolled_back() {
        let r = replay(&jobs_file(20, true));
        assert_eq!(r.outcome, "rolled back", "{}", render(&r));
        let fail = r
            .ticks
            .iter()
            .flat_map(|t| &t.events)
            .find(|e| e.contains("FAIL"));
        let fail = fail.unwrap_or_else(|| panic!("{}", render(&r)));
        let part = |name: &str| {
            let p = fail
                .split(" | ")
                .find(|p| p.contains(&format!("{name}: canary")));
            p.unwrap_or_else(|| panic!("{name} in {fail}")).to_string()
        };
        assert!(part("jobs").contains("20/200") && part("jobs").ends_with("→ rollback"));
        // the builtin errors signal sees the same 1 % on both versions
        assert!(part("errors").contains("not enough evidence"), "{fail}");
        // the same file with the canary's jobs as good as the primary's is not rolled back
        let r = replay(&jobs_file(1, true));
        assert_ne!(r.outcome, "rolled back", "{}", render(&r));
    }

    #[test]
    fn a_step_without_the_declared_counts_stops_the_judge() {
        let r = replay(&jobs_file(20, false));
        assert_ne!(r.outcome, "promoted", "{}", render(&r));
        assert!(
            r.ticks
                .iter()
                .flat_map(|t| &t.events)
                .any(|e| e.contains("0 count signal events for the canary, 1 signals declared")),
            "{}",
            render(&r)
        );
    }

    #[test]
    fn a_judge_that_cannot_judge_never_advances() {
        let steps: Vec<FileStep> = (1..=10).map(|_| step(600, 6, 5400, 54)).collect();
        let mut f = file(steps);
        f.policy.as_mut().unwrap().error_tolerance = 0.0;
        let r = replay(&f);
        assert!(
            r.ticks
                .iter()
                .all(|t| t.weight == 10 && t.next_weight <= 10),
            "{}",
            render(&r)
        );
        assert!(
            r.ticks[0]
                .events
                .iter()
                .any(|e| e.contains("Halt replay.replay advancement sequential judge policy: errorTolerance 0 out of range")),
            "{:?}",
            r.ticks[0].events
        );
        // Flagger's threshold (5 failed checks) then rolls back
        assert_eq!(r.outcome, "rolled back", "{}", render(&r));
    }

    #[test]
    fn low_traffic_ends_inconclusive_and_holds() {
        let steps: Vec<FileStep> = (1..=40).map(|_| step(12, 0, 108, 1)).collect();
        let mut f = file(steps);
        f.policy.as_mut().unwrap().max_steps = 8;
        let r = replay(&f);
        assert_eq!(r.outcome, "held (not enough evidence)", "{}", render(&r));
        assert_eq!(r.ticks.len(), 8);
        assert!(
            r.ticks
                .last()
                .unwrap()
                .events
                .iter()
                .any(|e| e.contains("not enough evidence after 8 steps, holding"))
        );
    }

    #[test]
    fn an_absolute_slo_breach_rolls_back_through_decide() {
        // both versions fail 2 %: no regression for the judge, but below the 99 % SLO
        let steps: Vec<FileStep> = (1..=10).map(|_| step(600, 12, 5400, 108)).collect();
        let mut f = file(steps);
        let mut a = default_analysis();
        a.metrics = serde_json::from_value(serde_json::json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}}
        ]))
        .unwrap();
        f.analysis = Some(a);
        let r = replay(&f);
        assert_eq!(r.outcome, "rolled back", "{}", render(&r));
        // step 1 is the warm-up; 98 % < 99 % from step 2 on, but up to 36 errors in 1800 are
        // not yet evidence against 99 % at the guardrail's half of alphaFail (beside the one
        // judged signal); 48 in 2400 are (10^3.1 ≥ 10^2.3)
        assert_eq!(r.ticks.len(), 5, "{}", render(&r));
        let last = r.ticks.last().unwrap();
        assert_eq!(last.verdict, "FAIL");
        assert!(
            last.events.iter().any(|e| e
                == "Rolling back replay.replay: absolute SLO breached: success rate 98.00% < 99% over 2400 canary requests (evidence 10^3.1 ≥ 10^2.3 needed)"),
            "{:?}",
            last.events
        );
        // without the guardrail the same release is not rolled back
        f.analysis = None;
        assert_ne!(replay(&f).outcome, "rolled back");
    }

    fn blue_green(steps: Vec<FileStep>, iterations: i32) -> ReplayFile {
        ReplayFile {
            analysis: Some(CanaryAnalysis {
                interval: Some("1m".into()),
                threshold: Some(5),
                iterations: Some(iterations),
                ..Default::default()
            }),
            ..file(steps)
        }
    }

    #[test]
    fn blue_green_bad_release_is_rolled_back_by_the_judge() {
        // The judge replaces the builtin thresholds; it used to run for stepWeight canaries
        // only, so a judged blue/green release was promoted after its iterations unjudged.
        let steps = (1..=10).map(|_| step(2000, 60, 4000, 40)).collect();
        let r = replay(&blue_green(steps, 10));
        assert_eq!(r.outcome, "rolled back", "{}", render(&r));
        let last = r.ticks.last().unwrap();
        assert_eq!(last.verdict, "FAIL");
        assert!(r.ticks.len() < 10, "{}", render(&r));
        assert!(
            last.events
                .iter()
                .any(|e| e.contains("sequential judge FAIL: errors: canary")),
            "{:?}",
            last.events
        );
        // a third of the traffic on the canary at weight 0 is blue/green, not a router fault
        assert!(
            r.ticks
                .iter()
                .flat_map(|t| &t.events)
                .all(|e| !e.contains("measured canary traffic share")),
            "{}",
            render(&r)
        );
    }

    #[test]
    fn blue_green_good_release_is_promoted_on_pass_at_the_last_iteration() {
        let steps = (1..=10).map(|_| step(30000, 300, 60000, 600)).collect();
        let r = replay(&blue_green(steps, 3));
        assert_eq!(r.outcome, "promoted", "{}", render(&r));
        // PASS before the last iteration only advances the iterations
        assert_eq!(r.ticks.len(), 3, "{}", render(&r));
        assert_eq!(r.ticks[1].verdict, "PASS", "{}", render(&r));
        assert!(
            r.ticks[1]
                .events
                .iter()
                .any(|e| e.contains("canary iteration 3/3")),
            "{:?}",
            r.ticks[1].events
        );
        let last = &r.ticks[2];
        assert_eq!(last.verdict, "PASS");
        assert!(
            last.events
                .iter()
                .any(|e| e.contains("Sequential judge PASS for replay.replay")),
            "{:?}",
            last.events
        );
        // the switch to the canary before the primary's update
        assert_eq!(last.next_weight, 100);
        assert!(
            last.events
                .iter()
                .any(|e| e.contains("Routing all traffic to canary")),
            "{:?}",
            last.events
        );
    }

    #[test]
    fn blue_green_continue_at_the_last_iteration_holds_until_max_steps() {
        let steps: Vec<FileStep> = (1..=10).map(|_| step(40, 0, 80, 1)).collect();
        let mut f = blue_green(steps, 2);
        let p = f.policy.as_mut().unwrap();
        p.max_steps = 5;
        p.on_inconclusive = crate::analysis::judge::OnInconclusive::Promote;
        let r = replay(&f);
        assert_eq!(r.outcome, "promoted", "{}", render(&r));
        assert_eq!(r.ticks.len(), 5, "{}", render(&r));
        assert!(r.ticks.iter().all(|t| t.verdict == "CONTINUE"));
        assert!(
            r.ticks[4]
                .events
                .iter()
                .any(|e| e.contains("not enough evidence after 5 steps, promoting")),
            "{:?}",
            r.ticks[4].events
        );
    }
}
