//! Explaining a verdict (§4.9): counts, estimate, anytime-valid 95 % confidence sequence, and
//! the e-values against the levels needed. PURE.

use super::{Judgement, PASS_FRACTIONS, SignalEvidence, Table, Verdict};

/// Grid step of β for the confidence sequence.
const STEP: f64 = 0.05;
/// β0 range of the confidence sequence: [−4, 6] (odds ratios e^-4 … e^6).
const LO: f64 = -4.0;
const HI: f64 = 6.0;
/// Symmetric mixture offsets ±STEP·2^k, k = 0..=6 (±0.05 … ±3.2), equal weights.
const OFFSETS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// A signal's evidence in numbers and words.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalReport {
    pub name: String,
    pub verdict: Verdict,
    pub totals: Table,
    /// Observed canary minus primary event rate, percentage points.
    pub diff_pp: f64,
    /// Conditional maximum-likelihood odds ratio (canary vs primary), on the β grid.
    pub odds_ratio: f64,
    /// 95 % confidence sequence for the canary minus primary rate, percentage points, at the
    /// primary's observed rate (smoothed: (x + ½)/(n + 1)); `None` before any informative
    /// step. An end at the β grid's edge (odds ratio e^±4..6) is printed as unbounded.
    pub cs_pp: Option<(f64, f64)>,
    pub log10_e_fail: f64,
    pub log10_fail_needed: f64,
    pub log10_e_pass: f64,
    pub log10_pass_needed: f64,
    /// For CONTINUE: about how many more canary requests a PASS needs if the effect stays at
    /// the current estimate ([`requests_for_pass`]); `None` when PASS is not expected there.
    pub more_requests: Option<u64>,
    /// One line, e.g. `errors: canary 41/3210 (1.28%) vs primary 212/29904 (0.71%); difference
    /// +0.57pp, 95% CS [+0.18, +1.02]pp; FAIL evidence 10^2.9 ≥ 10^2.8 needed → rollback`.
    pub text: String,
}

/// ℓ_t(β) = Σ_k β·x_k − ln Z_k(β) over `tables`, at each β of `betas`.
pub fn log_likelihood(tables: &[Table], betas: &[f64]) -> Vec<f64> {
    let mut ll = vec![0.0; betas.len()];
    for t in tables {
        let mg = t.margins();
        if !mg.informative() {
            continue;
        }
        for (l, &b) in ll.iter_mut().zip(betas) {
            *l += b * t.xc as f64 - mg.ln_norm(b);
        }
    }
    ll
}

/// The 1 − α confidence sequence for β from `tables`: every β0 on [−4, 6] (step 0.05) whose
/// symmetric mixture e-value stays below 1/α, as (lo, hi); `None` if no grid point survives.
/// Also returns the conditional MLE of β on the grid.
pub fn confidence_sequence(tables: &[Table], alpha: f64) -> (Option<(f64, f64)>, f64) {
    let pad = *OFFSETS.last().unwrap();
    let n0 = ((HI - LO) / STEP).round() as usize + 1;
    let betas: Vec<f64> = (0..n0 + 2 * pad)
        .map(|i| LO + (i as f64 - pad as f64) * STEP)
        .collect();
    let ll = log_likelihood(tables, &betas);
    let needed = (1.0 / alpha).ln();
    let w = (1.0 / (2 * OFFSETS.len()) as f64).ln();
    let mut inside: Option<(f64, f64)> = None;
    let mut best = (f64::NEG_INFINITY, 0.0);
    for j in pad..pad + n0 {
        if ll[j] > best.0 {
            best = (ll[j], betas[j]);
        }
        let terms = OFFSETS
            .iter()
            .flat_map(|&o| [ll[j + o] - ll[j] + w, ll[j - o] - ll[j] + w]);
        if super::fnch::log_sum_exp(terms) < needed {
            let b = betas[j];
            inside = Some(match inside {
                None => (b, b),
                Some((lo, _)) => (lo, b),
            });
        }
    }
    (inside, best.1)
}

/// About how many more canary requests the PASS e-process needs to reach `ln_needed` if the
/// log odds ratio stays at the estimate `beta_hat` (§4.9), from ℓ_t's curvature there.
///
/// With Fisher information `I = −ℓ''(β̂)` so far (over `canary_requests` canary requests), the
/// PASS component at `β_a = β_P(1 − f)` grows in expectation by `I·[(β_P − β̂)² − (β_a − β̂)²]/2`
/// (the normal approximation of ℓ); it reaches `ln_needed − ln v_a` once `I` is large enough.
/// The smallest such `I` over the components, scaled linearly in canary requests (same traffic
/// mix), minus the requests already seen. `None` when `β̂ ≥ β_P` (at this estimate the canary
/// is not within the tolerance), or the data carry no information yet.
pub fn requests_for_pass(
    tables: &[Table],
    beta_pass: f64,
    beta_hat: f64,
    ln_needed: f64,
    canary_requests: u64,
) -> Option<u64> {
    if beta_hat >= beta_pass || canary_requests == 0 {
        return None;
    }
    let h = STEP;
    let ll = log_likelihood(tables, &[beta_hat - h, beta_hat, beta_hat + h]);
    let info = -(ll[0] - 2.0 * ll[1] + ll[2]) / (h * h);
    if !info.is_finite() || info <= 0.0 {
        return None;
    }
    let needed_info = PASS_FRACTIONS
        .iter()
        .filter_map(|&(f, v)| {
            let alt = beta_pass * (1.0 - f);
            let gain = ((beta_pass - beta_hat).powi(2) - (alt - beta_hat).powi(2)) / 2.0;
            (gain > 0.0).then(|| (ln_needed - v.ln()) / gain)
        })
        .min_by(f64::total_cmp)?;
    let more = canary_requests as f64 * (needed_info / info - 1.0);
    Some(more.max(0.0).ceil() as u64)
}

/// The final look in words: `final look at 29 steps p 0.80% ≤ 2.5% needed`.
fn look_clause(l: super::final_look::FinalLook) -> String {
    let p = 100.0 * l.p;
    let p = if p < 0.01 {
        "<0.01".to_string()
    } else {
        format!("{p:.2}")
    };
    // the level to 2 decimals without trailing zeros: 2.5, 3.5, 4.5 (not 3.4999999999999996)
    let level = format!("{:.2}", 100.0 * l.alpha);
    let level = level.trim_end_matches('0').trim_end_matches('.');
    format!(
        "final look at {} steps p {p}% {} {level}% needed",
        l.steps,
        if l.passed() { "≤" } else { ">" },
    )
}

fn rate(x: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { x as f64 / n as f64 }
}

/// Canary rate at odds ratio e^β against a primary rate `qp`, minus `qp`, in pp.
fn pp_at(qp: f64, beta: f64) -> f64 {
    let qp = qp.clamp(1e-6, 1.0 - 1e-6);
    let l = (qp / (1.0 - qp)).ln() + beta;
    100.0 * (1.0 / (1.0 + (-l).exp()) - qp)
}

/// Report one signal's evidence; `tables` are its per-step tables (judged steps only).
pub fn signal_report(e: &SignalEvidence, tables: &[Table]) -> SignalReport {
    let t = e.totals;
    let (qc, qp) = (rate(t.xc, t.nc), rate(t.xp, t.np));
    let (cs, mle) = confidence_sequence(tables, 0.05);
    // the primary's rate for the pp scale, smoothed so a primary without events still maps
    let qp_s = (t.xp as f64 + 0.5) / (t.np as f64 + 1.0);
    let cs_pp = cs.map(|(lo, hi)| (pp_at(qp_s, lo), pp_at(qp_s, hi)));
    let open_hi = cs.is_some_and(|(_, hi)| hi >= HI - STEP / 2.0);
    let open_lo = cs.is_some_and(|(lo, _)| lo <= LO + STEP / 2.0);
    let l10 = std::f64::consts::LN_10;
    let (ef, nf, ep, np) = (
        e.ln_e_fail / l10,
        e.ln_fail_needed / l10,
        e.ln_e_pass / l10,
        e.ln_pass_needed / l10,
    );
    let diff = 100.0 * (qc - qp);
    let report = SignalReport {
        name: e.signal.name.clone(),
        verdict: e.verdict,
        totals: t,
        diff_pp: diff,
        odds_ratio: mle.exp(),
        cs_pp,
        log10_e_fail: ef,
        log10_fail_needed: nf,
        log10_e_pass: ep,
        log10_pass_needed: np,
        more_requests: None,
        text: String::new(),
    };
    // PASS by the e-process, else by the final look (§ final_look)
    let pass_clause = if ep >= np {
        format!("PASS evidence 10^{ep:.1} ≥ 10^{np:.1} needed")
    } else {
        e.final_look.map(look_clause).unwrap_or_default()
    };
    if e.steps == 0 {
        let text = if e.verdict == Verdict::Pass {
            format!(
                "{}: no events on either side to compare; the canary's own rate is below the tolerance ({pass_clause}) → pass",
                e.signal.name
            )
        } else {
            format!(
                "{}: no informative step judged yet (warm-up, no traffic or no events) → not enough evidence",
                e.signal.name
            )
        };
        return SignalReport {
            diff_pp: 0.0,
            odds_ratio: 1.0,
            cs_pp: None,
            more_requests: None,
            text,
            ..report
        };
    }
    let mut text = format!(
        "{}: canary {}/{} ({:.2}%) vs primary {}/{} ({:.2}%); difference {:+.2}pp",
        e.signal.name,
        t.xc,
        t.nc,
        100.0 * qc,
        t.xp,
        t.np,
        100.0 * qp,
        diff
    );
    match cs_pp {
        Some((lo, hi)) => {
            let lo = if open_lo {
                "(-∞".to_string()
            } else {
                format!("[{lo:+.2}")
            };
            let hi = if open_hi {
                "+∞)".to_string()
            } else {
                format!("{hi:+.2}]")
            };
            text += &format!(", 95% CS {lo}, {hi}pp");
        }
        None => text += ", 95% CS empty",
    }
    let more_requests = (e.verdict == Verdict::Continue)
        .then(|| requests_for_pass(tables, e.signal.beta_pass, mle, e.ln_pass_needed, t.nc))
        .flatten();
    text += &match e.verdict {
        Verdict::Fail => format!("; FAIL evidence 10^{ef:.1} ≥ 10^{nf:.1} needed → rollback"),
        Verdict::Pass => format!("; {pass_clause} → pass"),
        Verdict::Continue => {
            let look = e
                .final_look
                .map(|l| format!(", {}", look_clause(l)))
                .unwrap_or_default();
            format!(
                "; FAIL evidence 10^{ef:.1} of 10^{nf:.1} needed, PASS evidence 10^{ep:.1} of 10^{np:.1} needed{look} → not enough evidence"
            ) + &match more_requests {
                Some(more) => {
                    let per_step = t.nc as f64 / e.steps.max(1) as f64;
                    format!(
                        " (about {more} more canary requests for a PASS at the current estimate, ~{} steps at this rate)",
                        (more as f64 / per_step.max(1.0)).ceil()
                    )
                }
                None => " (no PASS expected at the current estimate)".to_string(),
            }
        }
    };
    SignalReport {
        more_requests,
        text,
        ..report
    }
}

/// Reports for every signal of `judgement`, from the judged `steps`.
pub fn report(judgement: &Judgement, steps: &[super::StepCounts]) -> Vec<SignalReport> {
    judgement
        .signals
        .iter()
        .map(|e| {
            let tables: Vec<Table> = steps.iter().map(|s| Table::of(&e.signal, s)).collect();
            signal_report(e, &tables)
        })
        .collect()
}

/// The whole judgement in one line per signal, joined with `; `… as the status/event message.
pub fn summary(judgement: &Judgement, steps: &[super::StepCounts]) -> String {
    report(judgement, steps)
        .into_iter()
        .map(|r| r.text)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The canary's requests from load tests over `steps` (the judged steps): (load-test requests,
/// canary requests), summed over the steps that counted them (`VersionCounts::load_test`);
/// `None` when no step did.
pub fn load_test_share(steps: &[super::StepCounts]) -> Option<(u64, u64)> {
    steps
        .iter()
        .filter_map(|s| {
            let c = &s.canary;
            c.load_test.map(|l| (l.min(c.requests), c.requests))
        })
        .reduce(|a, b| (a.0 + b.0, a.1 + b.1))
}

/// A share in whole percent, never rounded to 0 % or 100 % when it is not: `38%`, `<1%`,
/// `>99%`.
pub fn fmt_share(part: u64, whole: u64) -> String {
    let pct = 100.0 * part as f64 / whole.max(1) as f64;
    match part {
        0 => "0%".into(),
        p if p >= whole => "100%".into(),
        _ if pct < 0.5 => "<1%".into(),
        _ if pct >= 99.5 => ">99%".into(),
        // half away from zero (`{:.0}` would round 0.5 to even, to 0)
        _ => format!("{}%", pct.round()),
    }
}

/// The share of the evidence load tests make, for the report (issue 19):
/// `38% of the canary's requests from load tests (flagger-loadtester)`. `None` when no judged
/// step counted them or the canary had no request.
pub fn load_test_phrase(steps: &[super::StepCounts], workloads: &[String]) -> Option<String> {
    let (l, n) = load_test_share(steps)?;
    (n > 0).then(|| {
        format!(
            "{} of the canary's requests from load tests ({})",
            fmt_share(l, n),
            workloads.join(", ")
        )
    })
}
