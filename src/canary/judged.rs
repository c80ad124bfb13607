//! The sequential judge inside the Canary state machine (`sequential-judge.md` §4.6). PURE.
//!
//! Opt-in per Canary without changing Flagger's CRD: the annotation
//! `judge.pennant.dev/mode: sequential`, and optionally `judge.pennant.dev/policy: <ConfigMap>`
//! naming a ConfigMap in the Canary's namespace whose key `policy` (YAML or JSON) holds a
//! [`Policy`] (every field optional; §4.5 defaults). Without the annotation Flagger's rule runs
//! unchanged.
//!
//! Each analysis step the observer brings a [`JudgeObservation`]: the policy, the step's counts
//! per version from Prometheus, and (until the plan is frozen) the primary's lookback. [`tick`]
//! records the step in `status.judge`, judges all judged steps and says what to do.

pub use crate::analysis::counts::{InputError, StepSample, VersionSample};
use crate::analysis::judge::{
    self, OnInconclusive, Plan, Policy, Progress, StepCounts, Verdict, report,
};
use crate::api::{Canary, CanaryAnalysis, JudgeStatus};

/// `judge.pennant.dev/mode`: `sequential` opts the Canary in.
pub const MODE_ANNOTATION: &str = "judge.pennant.dev/mode";
/// `judge.pennant.dev/policy`: name of a ConfigMap (key `policy`) holding the [`Policy`].
pub const POLICY_ANNOTATION: &str = "judge.pennant.dev/policy";
/// The ConfigMap key holding the policy.
pub const POLICY_KEY: &str = "policy";

/// Whether `canary` opted in to the sequential judge.
pub fn opted_in(canary: &Canary) -> bool {
    canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MODE_ANNOTATION))
        .is_some_and(|m| m == "sequential")
}

/// The policy ConfigMap `canary` names, if any.
pub fn policy_ref(canary: &Canary) -> Option<&str> {
    canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POLICY_ANNOTATION))
        .map(String::as_str)
}

/// Parse a policy document (YAML or JSON). Errors name the ConfigMap key.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let p: Policy = serde_saphyr::from_str(text).map_err(|e| format!("policy: {e}"))?;
    p.validate().map_err(|e| format!("policy: {e}"))?;
    Ok(p)
}

/// A builtin metric the judge replaces when opted in: Flagger's per-window
/// `request-success-rate` / `request-duration` threshold checks (no template, no query).
pub fn replaces(analysis: &CanaryAnalysis, name: &str) -> bool {
    analysis.metrics.iter().any(|m| {
        m.name == name
            && m.template_ref.is_none()
            && m.query.is_none()
            && matches!(name, "request-success-rate" | "request-duration")
    })
}

/// What the observer brings for one judged step.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeObservation {
    /// The policy (defaults when the Canary names no ConfigMap), or why it is unusable.
    pub policy: Result<Policy, String>,
    /// The step that just ended: from `from` to now.
    pub step: Result<StepSample, InputError>,
    /// Start of the step's window (Unix seconds): the last step time, or the start of the
    /// first deferred step.
    pub from: i64,
    /// The primary's lookback; asked for only until the plan is frozen.
    pub lookback: Option<Result<VersionSample, InputError>>,
}

/// What the machine does after a judged tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Tick {
    /// A scrape gap: the step is merged into the next one (hold, no failed check).
    Deferred(String),
    /// The judge cannot judge: a failed check (Flagger's `threshold` semantics), the
    /// `JudgeReady` condition False with this message, no advance.
    Broken(String),
    /// A step was judged.
    Judged {
        verdict: Verdict,
        progress: Progress,
        /// The evidence, one clause per signal (§4.9).
        evidence: String,
        /// Warnings: measured traffic share far from the configured weight, no canary traffic.
        warnings: Vec<String>,
    },
}

/// Steps in a row with no canary request (primary > 20, weight > 0) before "router not
/// honouring weight" holds the weight (§3.4).
pub const STARVED_STEPS: usize = 3;

/// Where in the run the judged step was (§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A canary release: the step ran at canary `weight`; the ramp stops at `max_weight`.
    Ramp { weight: i32, max_weight: i32 },
    /// Blue/green or A/B (`analysis.iterations`): the step was iteration `iteration` of
    /// `iterations`, with status weight `weight` (0 for blue/green, 100 for A/B). The canary
    /// gets whatever share the router or the load gives it, so the measured share is not
    /// compared with the weight; promotion needs PASS at the last iteration (or
    /// `onInconclusive`).
    Iteration {
        weight: i32,
        iteration: i32,
        iterations: i32,
    },
}

impl Stage {
    /// The status weight the step ran at.
    pub fn weight(self) -> i32 {
        match self {
            Stage::Ramp { weight, .. } | Stage::Iteration { weight, .. } => weight,
        }
    }

    /// (where the run is, where promotion may start) for [`judge::progress`].
    fn position(self) -> (i32, i32) {
        match self {
            Stage::Ramp { weight, max_weight } => (weight, max_weight),
            Stage::Iteration {
                iteration,
                iterations,
                ..
            } => (iteration, iterations),
        }
    }
}

/// Record the step in `status` and judge (§4.6 steps 2–7) at `stage`.
pub fn tick(status: &mut JudgeStatus, obs: &JudgeObservation, stage: Stage) -> Tick {
    let weight = stage.weight();
    let policy = match &obs.policy {
        Ok(p) => p,
        Err(e) => return Tick::Broken(format!("sequential judge {e}")),
    };
    let sample = match &obs.step {
        Ok(s) => s,
        Err(InputError::Provider(m)) => {
            return Tick::Broken(format!("Metric query failed for sequential judge: {m}"));
        }
        Err(InputError::NoSeries(m)) => return Tick::Broken(m.clone()),
        Err(InputError::Incomplete(m)) => {
            if status.window_start.is_none() {
                status.window_start = Some(obs.from);
            }
            return Tick::Deferred(m.clone());
        }
    };
    status.window_start = None;
    let mut skip_step = false;
    let plan = match &status.plan {
        Some(p) => p.clone(),
        None => {
            // The primary's lookback; without one (first release), this step's primary data,
            // and the step is then not judged (§3.5).
            let lookback = match &obs.lookback {
                Some(Ok(lb)) if lb.requests > 0 => lb.as_lookback(),
                Some(Err(InputError::Provider(m))) => {
                    return Tick::Broken(format!("Metric query failed for sequential judge: {m}"));
                }
                _ => {
                    skip_step = true;
                    sample.primary.as_lookback()
                }
            };
            match judge::plan(policy, &lookback) {
                Ok(p) => p,
                Err(e) if skip_step && lookback.requests == 0 => {
                    // nothing to set the baseline from yet: wait for primary traffic
                    return Tick::Broken(format!("sequential judge: {e}"));
                }
                Err(e) => return Tick::Broken(format!("sequential judge: {e}")),
            }
        }
    };
    let counts = |v: &VersionSample, who| v.counts(&plan.edges_ms, who);
    let step = match (
        counts(&sample.canary, "canary"),
        counts(&sample.primary, "primary"),
    ) {
        (Ok(c), Ok(p)) => StepCounts {
            weight,
            canary: c,
            primary: p,
        },
        (Err(e), _) | (_, Err(e)) => return Tick::Broken(format!("sequential judge: {e}")),
    };
    status.plan = Some(plan.clone());
    let ramp = matches!(stage, Stage::Ramp { .. });
    let mut warnings = if ramp {
        share_warnings(policy, &step)
    } else {
        Vec::new()
    };
    if !skip_step {
        status.steps.push(step);
    }
    let judged = judge::judged_steps(policy, &status.steps);
    let j = judge::evaluate(policy, &plan.signals, judged);
    let evidence = report::summary(&j, judged);
    status.verdict = Some(j.verdict.as_str().to_string());
    status.message = Some(evidence.clone());
    let (at, promote_at) = stage.position();
    let mut progress =
        judge::progress(policy, j.verdict, at, promote_at, status.steps.len() as u32);
    if ramp && starved(&status.steps) && progress == Progress::Advance {
        warnings.push(format!(
            "canary got no requests for {STARVED_STEPS} steps while the primary did: router not honouring weight {weight}%; holding"
        ));
        progress = Progress::Hold;
    }
    Tick::Judged {
        verdict: j.verdict,
        progress,
        evidence,
        warnings,
    }
}

/// Measured canary share of the step against the configured weight (§1): a Warning when they
/// differ by more than `shareTolerance` pp (with at least 20 requests in the step).
pub fn share_warnings(policy: &Policy, step: &StepCounts) -> Vec<String> {
    let n = step.canary.requests + step.primary.requests;
    if n < 20 {
        return Vec::new();
    }
    let share = 100.0 * step.canary.requests as f64 / n as f64;
    if (share - step.weight as f64).abs() > policy.share_tolerance {
        vec![format!(
            "measured canary traffic share {share:.1}% differs from the configured weight {}% by more than {}pp",
            step.weight, policy.share_tolerance
        )]
    } else {
        Vec::new()
    }
}

fn starved(steps: &[StepCounts]) -> bool {
    steps.len() >= STARVED_STEPS
        && steps[steps.len() - STARVED_STEPS..]
            .iter()
            .all(|s| s.weight > 0 && s.canary.requests == 0 && s.primary.requests > 20)
}

/// The wording of an inconclusive end.
pub fn inconclusive_message(status: &JudgeStatus, on: OnInconclusive) -> String {
    let what = match on {
        OnInconclusive::Hold => "holding (onInconclusive: hold)",
        OnInconclusive::Rollback => "rolling back (onInconclusive: rollback)",
        OnInconclusive::Promote => "promoting (onInconclusive: promote)",
    };
    format!(
        "not enough evidence after {} steps, {what}: {}",
        status.steps.len(),
        status.message.as_deref().unwrap_or_default()
    )
}

/// Judge a whole recorded release for `replay`/`analyze`: the plan plus steps, evaluated after
/// each step with the progression, without the Kubernetes machine.
pub fn verdicts(policy: &Policy, plan: &Plan, steps: &[StepCounts]) -> Vec<judge::Judgement> {
    (1..=steps.len())
        .map(|k| {
            let judged = judge::judged_steps(policy, &steps[..k]);
            judge::evaluate(policy, &plan.signals, judged)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAMP_10: Stage = Stage::Ramp {
        weight: 10,
        max_weight: 50,
    };

    fn sample(nc: u64, xc: u64, np: u64, xp: u64) -> StepSample {
        let v = |n, x| VersionSample {
            requests: n,
            errors: x,
            buckets: vec![(100.0, n / 2), (250.0, n * 9 / 10)],
            timed: n,
        };
        StepSample {
            canary: v(nc, xc),
            primary: v(np, xp),
        }
    }

    fn obs(step: StepSample) -> JudgeObservation {
        JudgeObservation {
            policy: Ok(Policy::default()),
            step: Ok(step),
            lookback: Some(Ok(sample(0, 0, 100_000, 1_000).primary)),
            from: 0,
        }
    }

    #[test]
    fn a_bad_canary_rolls_back_with_evidence() {
        let mut st = JudgeStatus::default();
        let mut last = None;
        for _ in 0..6 {
            last = Some(tick(&mut st, &obs(sample(3000, 90, 27000, 270)), RAMP_10));
        }
        let Some(Tick::Judged {
            verdict,
            progress,
            evidence,
            ..
        }) = last
        else {
            panic!("{last:?}")
        };
        assert_eq!((verdict, progress), (Verdict::Fail, Progress::Rollback));
        assert!(evidence.starts_with("errors: canary "), "{evidence}");
        assert!(evidence.contains("FAIL evidence"), "{evidence}");
        assert_eq!(st.steps.len(), 6);
        assert_eq!(st.plan.as_ref().unwrap().edges_ms, [100.0, 250.0]);
    }

    #[test]
    fn missing_edge_and_provider_errors_break_the_judge() {
        let mut st = JudgeStatus::default();
        let mut s = sample(3000, 30, 27000, 270);
        s.canary.buckets.retain(|(le, _)| *le != 250.0);
        let Tick::Broken(m) = tick(&mut st, &obs(s), RAMP_10) else {
            panic!()
        };
        assert!(
            m.contains("latency>250ms: the canary's histogram has no bucket"),
            "{m}"
        );
        assert!(st.steps.is_empty());
        let o = JudgeObservation {
            step: Err(InputError::NoSeries(
                "errors: no istio_requests_total series for canary podinfo".into(),
            )),
            ..obs(sample(1, 0, 1, 0))
        };
        assert_eq!(
            tick(&mut st, &o, RAMP_10),
            Tick::Broken("errors: no istio_requests_total series for canary podinfo".into())
        );
        let o = JudgeObservation {
            policy: Err("policy: errorTolerance 0 out of range (0, 50] pp".into()),
            ..obs(sample(1, 0, 1, 0))
        };
        let Tick::Broken(m) = tick(&mut st, &o, RAMP_10) else {
            panic!()
        };
        assert!(m.contains("errorTolerance"), "{m}");
    }

    #[test]
    fn a_router_ignoring_weights_is_caught() {
        let mut st = JudgeStatus::default();
        let mut warned = false;
        let mut progress = None;
        for _ in 0..4 {
            if let Tick::Judged {
                warnings,
                progress: p,
                ..
            } = tick(
                &mut st,
                &obs(sample(0, 0, 6000, 60)),
                Stage::Ramp {
                    weight: 20,
                    max_weight: 50,
                },
            ) {
                warned |= warnings
                    .iter()
                    .any(|w| w.contains("measured canary traffic share 0.0%"));
                progress = Some(p);
            }
        }
        assert!(warned);
        assert_eq!(progress, Some(Progress::Hold));
    }

    #[test]
    fn policy_parses_with_defaults_and_rejects_out_of_range() {
        let p = parse_policy("errorTolerance: 1\nonInconclusive: rollback\n").unwrap();
        assert_eq!(p.error_tolerance, 1.0);
        assert_eq!(p.on_inconclusive, OnInconclusive::Rollback);
        assert_eq!(p.alpha_fail, 0.01);
        let e = parse_policy("latencyTolerance: -3").unwrap_err();
        assert!(e.contains("latencyTolerance -3 out of range"), "{e}");
    }
}
