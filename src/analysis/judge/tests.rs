//! Appendix A vectors, golden values cross-checked by full enumeration, and the §4.7 properties.
//!
//! The golden log-pmf values were computed independently by exact enumeration of the whole
//! support with Python's `math.lgamma` (no truncation):
//! `lnpmf = lnC(nc,x) + lnC(np,m−x) + βx − ln Σ_y lnC(nc,y) lnC(np,m−y) e^{βy}`.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};
use statrs::distribution::{Discrete, Hypergeometric};

use super::fnch::Margins;
use super::*;

fn errors_signal(bf: f64, bp: f64) -> Signal {
    Signal {
        name: "errors".into(),
        kind: SignalKind::Errors,
        baseline: 0.01,
        beta_fail: bf,
        beta_pass: bp,
        tolerance: None,
        dispersion: None,
    }
}

/// Appendix A set-up: b̂ = 1 %, tolerance 0.5 pp.
fn appendix_signal() -> Signal {
    let lookback = Lookback {
        requests: 100_000,
        errors: 1_000,
        ..Default::default()
    };
    let policy = Policy {
        latency: false,
        track_rate: false,
        ..Policy::default()
    };
    let p = plan(&policy, &lookback).unwrap();
    p.signals[0].clone()
}

fn table(nc: u64, np: u64, xc: u64, xp: u64) -> Table {
    Table { xc, nc, xp, np }
}

#[test]
fn appendix_a_hypotheses() {
    let s = appendix_signal();
    assert!((s.beta_pass - 0.410528).abs() < 1e-6, "{}", s.beta_pass);
    assert!((s.beta_fail - 0.205264).abs() < 1e-6);
    let (lf, lp) = thresholds(&Policy::default(), 3);
    assert!((lf - 5.7038).abs() < 1e-4 && (lp - 2.9957).abs() < 1e-4);
    let p = Process::new(&s);
    let want_fail = [
        0.41053, 0.53771, 0.74369, 1.07729, 1.61759, 2.49266, 3.90990, 6.20526,
    ];
    for (got, want) in p.betas()[1..9].iter().zip(want_fail) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    let want_pass = [0.20526, 0.10263, 0.0, -0.20526, -0.41053];
    for (got, want) in p.betas()[10..].iter().zip(want_pass) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

fn run_vectors(rows: &[(u64, u64, u64, u64, f64, f64, Verdict)]) {
    let s = appendix_signal();
    let th = thresholds(&Policy::default(), 3);
    let mut p = Process::new(&s);
    for &(nc, np, xc, xp, ef, ep, v) in rows {
        p.push(table(nc, np, xc, xp));
        let (lf, lp) = (p.ln_e_fail(), p.ln_e_pass());
        assert!((lf - ef).abs() < 1e-4, "ln E_fail {lf} vs {ef}");
        assert!((lp - ep).abs() < 1e-4, "ln E_pass {lp} vs {ep}");
        assert_eq!(signal_verdict(lf, lp, th), v);
    }
}

#[test]
fn appendix_a_bad_canary_fails_at_step_4() {
    use Verdict::*;
    run_vectors(&[
        (600, 5400, 9, 52, -0.8210, -0.7514, Continue),
        (1200, 4800, 25, 47, 1.0852, -3.0054, Continue),
        (1800, 4200, 41, 40, 4.8878, -5.6927, Continue),
        (1800, 4200, 44, 41, 9.7545, -8.4007, Fail),
    ]);
}

#[test]
fn appendix_a_good_canary_passes_at_step_2() {
    use Verdict::*;
    run_vectors(&[
        (3000, 27000, 31, 268, -3.6044, 1.6969, Continue),
        (6000, 24000, 58, 243, -7.5024, 6.5973, Pass),
    ]);
}

#[test]
fn golden_log_pmf() {
    // (nc, np, m, x, β, exact ln pmf by full enumeration)
    let cases = [
        (600, 5400, 61, 9, 0.0, -2.626224081668738),
        (600, 5400, 61, 9, 0.5, -1.9502022273671287),
        (600, 5400, 61, 9, 1.0, -3.2400032023681433),
        (15000, 15000, 14000, 7100, 0.3, -61.286506133928924),
        (12000, 18000, 9000, 3650, -0.2, -45.46764079188506),
        (3, 4, 5, 2, 2.0, -1.5535788148810443),
    ];
    for (nc, np, m, x, b, want) in cases {
        let got = Margins { nc, np, m }.ln_pmf(x, b);
        assert!(
            (got - want).abs() < 1e-8 * want.abs().max(1.0),
            "({nc},{np},{m},{x},{b}): {got} vs {want}"
        );
    }
}

#[test]
fn release_verdict_combines_signals() {
    use Verdict::*;
    assert_eq!(combine([Pass, Continue, Fail]), Fail);
    assert_eq!(combine([Pass, Pass]), Pass);
    assert_eq!(combine([Pass, Continue]), Continue);
    assert_eq!(combine([]), Continue);
}

#[test]
fn uninformative_steps_change_nothing() {
    let s = appendix_signal();
    let mut p = Process::new(&s);
    for t in [
        table(0, 100, 0, 3),
        table(100, 0, 3, 0),
        table(100, 100, 0, 0),
        table(5, 5, 5, 5),
    ] {
        p.push(t);
    }
    assert_eq!(p.steps, 0);
    assert_eq!(p.ln_e_fail(), 0.0);
    assert!(p.ln_e_pass().abs() < 1e-12);
}

#[test]
fn plan_picks_edges_and_rejects_bad_input() {
    // Primary lookback: 10 000 requests, exceedance 80 % at 25ms, 55 % at 50, 30 % at 100,
    // 9 % at 250, 1 % at 500.
    let counts = [
        (25.0, 2000),
        (50.0, 4500),
        (100.0, 7000),
        (250.0, 9100),
        (500.0, 9900),
    ];
    let lb = Lookback {
        requests: 10_000,
        errors: 50,
        buckets: counts.to_vec(),
        timed: 10_000,
        pods: Vec::new(),
        counts: Vec::new(),
    };
    let p = plan(&Policy::default(), &lb).unwrap();
    let names: Vec<&str> = p.signals.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["errors", "latency>50ms", "latency>250ms"]);
    assert_eq!(p.edges_ms, [50.0, 250.0]);
    for s in &p.signals {
        assert!(s.beta_pass > s.beta_fail && s.beta_fail > 0.0, "{s:?}");
    }
    let pinned = Policy {
        latency_edges: vec![300.0],
        ..Policy::default()
    };
    let e = plan(&pinned, &lb).unwrap_err();
    assert!(
        e.0.contains("latency edge 300ms is not a bucket edge"),
        "{e}"
    );
    let bad = Policy {
        error_tolerance: 0.0,
        ..Policy::default()
    };
    assert!(plan(&bad, &lb).unwrap_err().0.contains("errorTolerance 0"));
    let no_hist = Lookback {
        buckets: vec![],
        timed: 0,
        ..lb.clone()
    };
    assert!(
        plan(&Policy::default(), &no_hist)
            .unwrap_err()
            .0
            .starts_with("latency:")
    );
}

#[test]
fn progression_follows_the_verdict() {
    use Progress::*;
    let p = Policy::default();
    assert_eq!(progress(&p, Verdict::Fail, 10, 50, 1), Rollback);
    assert_eq!(progress(&p, Verdict::Pass, 10, 50, 1), Advance);
    assert_eq!(progress(&p, Verdict::Pass, 50, 50, 5), Promote);
    assert_eq!(progress(&p, Verdict::Continue, 50, 50, 5), Hold);
    assert_eq!(
        progress(&p, Verdict::Continue, 50, 50, 30),
        Inconclusive(OnInconclusive::Hold)
    );
    let fast = Policy {
        fast_promotion: true,
        ..Policy::default()
    };
    assert_eq!(progress(&fast, Verdict::Pass, 10, 50, 1), Promote);
}

#[test]
fn warmup_skips_first_steps_with_canary_traffic() {
    let step = |n: u64| StepCounts {
        weight: 10,
        canary: VersionCounts {
            requests: n,
            ..Default::default()
        },
        primary: VersionCounts::default(),
    };
    let steps = [step(0), step(5), step(7)];
    let p = Policy::default();
    assert_eq!(judged_steps(&p, &steps), &steps[2..]);
    let none = Policy {
        warmup_steps: 0,
        ..Policy::default()
    };
    assert_eq!(judged_steps(&none, &steps).len(), 3);
}

#[test]
fn report_words_the_evidence() {
    let s = appendix_signal();
    let p = Policy {
        latency: false,
        ..Policy::default()
    };
    let steps: Vec<StepCounts> = [
        (600, 5400, 9, 52),
        (1200, 4800, 25, 47),
        (1800, 4200, 41, 40),
        (1800, 4200, 44, 41),
    ]
    .iter()
    .map(|&(nc, np, xc, xp)| StepCounts {
        weight: 10,
        canary: VersionCounts {
            requests: nc,
            errors: xc,
            ..Default::default()
        },
        primary: VersionCounts {
            requests: np,
            errors: xp,
            ..Default::default()
        },
    })
    .collect();
    let j = evaluate(&p, std::slice::from_ref(&s), &steps);
    // one signal: α_F,sig = 0.01 → FAIL needs ln 100
    assert_eq!(j.verdict, Verdict::Fail);
    let r = &report::report(&j, &steps)[0];
    assert!(r.text.starts_with("errors: canary 119/5400 (2.20%) vs primary 180/18600 (0.97%); difference +1.24pp, 95% CS ["), "{}", r.text);
    assert!(r.text.ends_with("needed → rollback"), "{}", r.text);
    let (lo, hi) = r.cs_pp.unwrap();
    assert!(lo > 0.0 && lo < 1.24 && hi > 1.24, "{lo} {hi}");
    assert!((r.odds_ratio - 2.3).abs() < 0.3, "{}", r.odds_ratio);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// At β = 0 the FNCH is the central hypergeometric (statrs).
    #[test]
    fn central_case_is_hypergeometric(nc in 1u64..400, np in 1u64..400, frac in 0.0f64..1.0, pick in 0.0f64..1.0) {
        let m = ((nc + np) as f64 * frac) as u64;
        let mg = Margins { nc, np, m };
        let (lo, hi) = mg.support();
        let x = lo + ((hi - lo) as f64 * pick) as u64;
        let h = Hypergeometric::new(nc + np, m, nc).unwrap();
        let want = h.ln_pmf(x);
        let got = mg.ln_pmf(x, 0.0);
        prop_assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    }

    /// The pmf sums to 1 over the support, at any β.
    #[test]
    fn pmf_sums_to_one(nc in 1u64..300, np in 1u64..300, frac in 0.0f64..1.0, beta in -4.0f64..6.0) {
        let m = ((nc + np) as f64 * frac) as u64;
        let mg = Margins { nc, np, m };
        let (lo, hi) = mg.support();
        let total: f64 = (lo..=hi).map(|y| mg.ln_pmf(y, beta).exp()).sum();
        prop_assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    /// More canary events (moved from the primary, or added) never lower the FAIL evidence nor
    /// raise the PASS evidence.
    #[test]
    fn evidence_is_monotone_in_canary_events(nc in 50u64..3000, np in 50u64..3000, xc in 0u64..40, xp in 1u64..40) {
        let s = appendix_signal();
        let e = |t: Table| { let mut p = Process::new(&s); p.push(t); (p.ln_e_fail(), p.ln_e_pass()) };
        let base = e(table(nc, np, xc, xp));
        let moved = e(table(nc, np, xc + 1, xp - 1));
        let added = e(table(nc, np, xc + 1, xp));
        prop_assert!(moved.0 >= base.0 - 1e-9 && moved.1 <= base.1 + 1e-9);
        prop_assert!(added.0 >= base.0 - 1e-9 && added.1 <= base.1 + 1e-9);
    }

    /// Evidence depends only on the tables, not on step order or on how they were computed:
    /// pushing the same steps in another order gives the same e-values (ℓ_t is a sum).
    #[test]
    fn order_of_steps_does_not_matter(rows in proptest::collection::vec((10u64..500, 10u64..500, 0u64..10, 0u64..10), 1..6)) {
        let s = appendix_signal();
        let run = |rows: &[(u64, u64, u64, u64)]| {
            let mut p = Process::new(&s);
            for &(nc, np, xc, xp) in rows { p.push(table(nc, np, xc, xp)); }
            (p.ln_e_fail(), p.ln_e_pass())
        };
        let a = run(&rows);
        let mut rev = rows.clone();
        rev.reverse();
        let b = run(&rev);
        prop_assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
    }
}

/// A/A Monte-Carlo: identical versions, the primary's rate drifting step to step (both share
/// it), canary share 10 %, 50 % and 90 % (scaling the primary's traffic changes only the
/// share), 20 steps each. The false-FAIL frequency must stay ≤ α_F + 3 standard errors. One
/// signal at α_F = 0.05 (larger than the default, so the bound is tight enough to bite).
#[test]
fn aa_false_fail_stays_below_alpha() {
    let policy = Policy {
        alpha_fail: 0.05,
        latency: false,
        ..Policy::default()
    };
    let th = thresholds(&policy, 1);
    let mut rng = StdRng::seed_from_u64(20261129);
    let runs = 600;
    for share in [0.1, 0.5, 0.9] {
        let mut fails = 0;
        for i in 0..runs {
            let rps: f64 = [2.0, 20.0, 200.0][i % 3];
            let b: f64 = rng.random_range(0.002..0.02);
            let s = errors_signal(0.5 * 0.41, 0.41);
            let mut p = Process::new(&s);
            for k in 0..20 {
                let q = b * (1.0 + 0.5 * (k as f64 / 3.0).sin());
                let n = Poisson::new(rps * 60.0).unwrap().sample(&mut rng) as u64;
                let nc = Binomial::new(n, share).unwrap().sample(&mut rng);
                let np = n - nc;
                let xc = Binomial::new(nc, q).unwrap().sample(&mut rng);
                let xp = Binomial::new(np, q).unwrap().sample(&mut rng);
                p.push(table(nc, np, xc, xp));
                if signal_verdict(p.ln_e_fail(), p.ln_e_pass(), th) == Verdict::Fail {
                    fails += 1;
                    break;
                }
            }
        }
        let rate = fails as f64 / runs as f64;
        let se = (0.05f64 * 0.95 / runs as f64).sqrt();
        assert!(rate <= 0.05 + 3.0 * se, "share {share}: false FAIL {rate}");
    }
}

/// Detection is monotone in effect size: at 20 rps and 50 % share over 20 steps, a +3 pp
/// regression is caught at least as often as +1 pp, which is caught more often than +0.3 pp.
#[test]
fn detection_grows_with_effect_size() {
    let policy = Policy {
        latency: false,
        ..Policy::default()
    };
    let th = thresholds(&policy, 1);
    let s = errors_signal(0.205264, 0.410528);
    let detect = |delta: f64, seed: u64| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut caught = 0;
        for _ in 0..200 {
            let mut p = Process::new(&s);
            for _ in 0..20 {
                let nc = Poisson::new(600.0).unwrap().sample(&mut rng) as u64;
                let np = Poisson::new(600.0).unwrap().sample(&mut rng) as u64;
                let xc = Binomial::new(nc, 0.01 + delta).unwrap().sample(&mut rng);
                let xp = Binomial::new(np, 0.01).unwrap().sample(&mut rng);
                p.push(table(nc, np, xc, xp));
                if signal_verdict(p.ln_e_fail(), p.ln_e_pass(), th) == Verdict::Fail {
                    caught += 1;
                    break;
                }
            }
        }
        caught
    };
    let (small, mid, big) = (detect(0.003, 1), detect(0.01, 1), detect(0.03, 1));
    assert!(
        small < mid && mid <= big && big >= 190,
        "{small} {mid} {big}"
    );
}

#[test]
fn continue_estimates_the_requests_a_pass_needs() {
    let s = appendix_signal();
    let policy = Policy {
        latency: false,
        ..Policy::default()
    };
    let step = |nc, xc, np, xp| StepCounts {
        weight: 10,
        canary: VersionCounts {
            requests: nc,
            errors: xc,
            ..Default::default()
        },
        primary: VersionCounts {
            requests: np,
            errors: xp,
            ..Default::default()
        },
    };
    // equal rates (1 %): CONTINUE after two steps, with an estimate
    let good = step(300, 3, 2700, 27);
    let steps = vec![good.clone(); 2];
    let j = evaluate(&policy, std::slice::from_ref(&s), &steps);
    assert_eq!(j.verdict, Verdict::Continue);
    let r = &report::report(&j, &steps)[0];
    let more = r
        .more_requests
        .expect("an estimate for an equal-rate canary");
    assert!(
        r.text
            .contains(&format!("about {more} more canary requests")),
        "{}",
        r.text
    );
    // the same step repeated until PASS: the estimate is right within a factor of 2
    let mut k = 2;
    loop {
        k += 1;
        assert!(k < 1000, "never passed");
        let steps = vec![good.clone(); k];
        if evaluate(&policy, std::slice::from_ref(&s), &steps).verdict == Verdict::Pass {
            break;
        }
    }
    let actual = ((k - 2) * 300) as f64;
    assert!(
        actual >= more as f64 / 2.0 && actual <= more as f64 * 2.0,
        "estimated {more}, needed {actual}"
    );
    // the estimate shrinks as evidence accumulates
    let later = vec![good.clone(); 2 + (k - 2) / 2];
    let j = evaluate(&policy, std::slice::from_ref(&s), &later);
    let r = &report::report(&j, &later)[0];
    assert!(r.more_requests.unwrap() < more);
    // a canary at 2.5 × the primary's rate: no PASS expected
    let bad = vec![step(400, 10, 3600, 36)];
    let j = evaluate(&policy, std::slice::from_ref(&s), &bad);
    let r = &report::report(&j, &bad)[0];
    assert_eq!((j.verdict, r.more_requests), (Verdict::Continue, None));
    assert!(r.text.contains("no PASS expected"), "{}", r.text);
}

/// The errors signal with its tolerance tracked per step (`trackRate`, the default).
fn tracked_signal() -> Signal {
    let lookback = Lookback {
        requests: 100_000,
        errors: 1_000,
        ..Default::default()
    };
    let policy = Policy {
        latency: false,
        ..Policy::default()
    };
    let s = plan(&policy, &lookback).unwrap().signals[0].clone();
    assert_eq!(s.tolerance, Some(0.005));
    s
}

/// An incident raises both versions' error rate to 10 %: the canary's +0.6 pp (beyond the
/// 0.5 pp tolerance) is an odds ratio of only 1.07 there. Hypotheses fixed at the 1 % lookback
/// (odds ratio 1.5) PASS it; tracked at the step's rate they do not.
#[test]
fn an_additive_regression_during_an_incident_does_not_pass() {
    let policy = Policy {
        latency: false,
        ..Policy::default()
    };
    let th = thresholds(&policy, 1);
    let tracked = tracked_signal();
    let fixed = Signal {
        tolerance: None,
        ..tracked.clone()
    };
    let step = table(50_000, 50_000, 5_300, 5_000);
    let (bf, bp) = tracked.hypotheses(&step);
    assert!(bp < 0.1 && (bf / bp - 0.5).abs() < 1e-9, "{bf} {bp}");
    assert_eq!(fixed.hypotheses(&step), (fixed.beta_fail, fixed.beta_pass));
    let run = |s: &Signal| {
        let mut p = Process::new(s);
        for _ in 0..5 {
            p.push(step);
        }
        p.verdict(th)
    };
    assert_eq!(run(&fixed), Verdict::Pass);
    assert_ne!(run(&tracked), Verdict::Pass);
}

/// No errors on either side: the comparative test has nothing to condition on, but a canary
/// with 0 errors in 2500 requests is below the 0.5 pp tolerance on its own: PASS.
#[test]
fn a_canary_without_errors_passes_on_its_own_counts() {
    let th = thresholds(&Policy::default(), 1);
    let tracked = tracked_signal();
    let fixed = Signal {
        tolerance: None,
        ..tracked.clone()
    };
    let run = |s: &Signal| {
        let mut p = Process::new(s);
        for _ in 0..5 {
            p.push(table(500, 500, 0, 0));
        }
        p.verdict(th)
    };
    assert_eq!(run(&fixed), Verdict::Continue);
    assert_eq!(run(&tracked), Verdict::Pass);
}

/// The PASS guarantee with both tests averaged: a canary exactly 0.5 pp worse than a primary
/// without errors (so its own rate is the tolerance) PASSes in at most α_P of 400 seeded runs
/// of 30 steps, at 20 and 200 rps.
#[test]
fn a_canary_at_the_tolerance_rarely_passes() {
    let policy = Policy::default();
    let th = thresholds(&policy, 1);
    let s = tracked_signal();
    let mut rng = StdRng::seed_from_u64(7);
    let runs = 400;
    let mut passes = 0;
    for i in 0..runs {
        let rps = [20.0, 200.0][i % 2];
        let mut p = Process::new(&s);
        for _ in 0..30 {
            let nc = Poisson::new(rps * 30.0).unwrap().sample(&mut rng) as u64;
            let np = Poisson::new(rps * 30.0).unwrap().sample(&mut rng) as u64;
            let xc = Binomial::new(nc, 0.005).unwrap().sample(&mut rng);
            p.push(table(nc, np, xc, 0));
            // the PASS e-process alone (the comparative FAIL would usually win first)
            if p.max_ln_e_pass >= th.1 {
                passes += 1;
                break;
            }
        }
    }
    let se = (0.05f64 * 0.95 / runs as f64).sqrt();
    assert!(
        passes as f64 / runs as f64 <= 0.05 + 3.0 * se,
        "{passes}/{runs} passed"
    );
}

/// Over-dispersion φ divides each step's evidence: the same bad steps need about φ times as
/// many steps to FAIL, and φ outside [1, 10] is refused.
#[test]
fn dispersion_divides_the_evidence() {
    let s = errors_signal(0.5 * 0.41, 0.41);
    let th = thresholds(&Policy::default(), 1);
    let steps_to_fail = |phi: Option<f64>| {
        let mut p = Process::new(&Signal {
            dispersion: phi,
            ..s.clone()
        });
        (1..100)
            .find(|_| {
                p.push(table(1000, 9000, 25, 90));
                p.verdict(th) == Verdict::Fail
            })
            .unwrap()
    };
    let (one, two) = (steps_to_fail(None), steps_to_fail(Some(2.0)));
    assert!(two >= 2 * one - 1 && two <= 2 * one + 1, "{one} {two}");
    let bad = Policy {
        dispersion: Some(0.5),
        ..Policy::default()
    };
    assert!(bad.validate().unwrap_err().0.contains("dispersion 0.5"));
}

/// φ from the primary's pods in the lookback (§4.3): ≈ 1 for independent requests, large when
/// one pod fails much more than its siblings at the same time, `None` without enough pods
/// and slices; a policy's own `dispersion` wins, and only the errors signal takes it.
#[test]
fn dispersion_is_estimated_from_the_primarys_pods() {
    let mut rng = StdRng::seed_from_u64(43);
    // 60 one-minute slices, 3 pods of 400 requests each
    let slices = |bad_pod: f64, rng: &mut StdRng| -> Vec<Vec<(u64, u64)>> {
        (0..60)
            .map(|t| {
                // drift: the rate of every pod moves together, which must not count
                let q = 0.01 * (1.0 + 0.8 * (t as f64 / 9.0).sin());
                (0..3)
                    .map(|i| {
                        let qi = if i == 0 { q * bad_pod } else { q };
                        let x = Binomial::new(400, qi.min(1.0)).unwrap().sample(rng);
                        (x, 400)
                    })
                    .collect()
            })
            .collect()
    };
    let iid = pod_dispersion(&slices(1.0, &mut rng)).unwrap();
    assert!(iid < 1.4, "{iid}");
    let skewed = pod_dispersion(&slices(3.0, &mut rng)).unwrap();
    assert!(skewed > 2.0, "{skewed}");
    // one pod, or a handful of slices: no estimate
    assert_eq!(pod_dispersion(&vec![vec![(3, 100)]; 60]), None);
    assert_eq!(pod_dispersion(&vec![vec![(3, 100), (9, 100)]; 5]), None);
    // hand-computed: p̂ = 0.05, n·p̂(1 − p̂) = 4.75 per pod; 10 slices of 1 df each
    // 3 and 7 of 100: X² = (2² + 2²)/4.75 per slice
    let p = pod_dispersion(&vec![vec![(3, 100), (7, 100)]; 10]).unwrap();
    assert!((p - 8.0 / 4.75).abs() < 1e-9, "{p}");
    // 0 and 10: 50/4.75 = 10.5, clamped to 10; 4 and 6: 2/4.75, clamped to 1
    assert_eq!(
        pod_dispersion(&vec![vec![(0, 100), (10, 100)]; 10]),
        Some(10.0)
    );
    assert_eq!(
        pod_dispersion(&vec![vec![(4, 100), (6, 100)]; 10]),
        Some(1.0)
    );
    // into the plan: the errors signal only; the policy's own value wins
    let lookback = Lookback {
        requests: 2000,
        errors: 100,
        pods: vec![vec![(3, 100), (7, 100)]; 10],
        counts: Vec::new(),
        ..Default::default()
    };
    let quiet = Policy {
        latency: false,
        ..Policy::default()
    };
    let est = plan(&quiet, &lookback).unwrap().signals[0]
        .dispersion
        .unwrap();
    assert!((est - 8.0 / 4.75).abs() < 1e-9, "{est}");
    let set = Policy {
        dispersion: Some(1.0),
        ..quiet
    };
    assert_eq!(plan(&set, &lookback).unwrap().signals[0].dispersion, None);
}

/// A count signal declared by a MetricTemplate (issue 19): canary and primary jobs fail at
/// the same 2 %; the requests too. 400 runs of 20 steps, 300 canary and 2700 primary jobs per
/// step: the count signal's false FAILs stay within its share of α_F (¼ of 1 %: 4 signals
/// without latency: errors, jobs, and two more count signals), and a +3 pp regression on the
/// jobs fails nearly always while the errors signal does not.
#[test]
fn count_signals_keep_alpha_on_a_a_and_catch_a_regression() {
    use crate::api::EventCounts;
    let policy = Policy {
        latency: false,
        ..Policy::default()
    };
    let lookback = Lookback {
        requests: 100_000,
        errors: 2_000,
        counts: vec![
            EventCounts {
                bad: 400,
                total: 20_000,
            };
            3
        ],
        ..Default::default()
    };
    let count = |name: &str| CountSignal {
        name: name.into(),
        tolerance_pp: Some(1.0),
    };
    let p = plan_with_counts(&policy, &lookback, &[count("jobs"), count("a"), count("b")]).unwrap();
    assert_eq!(p.signals.len(), 4);
    assert_eq!(p.signals[1].kind, SignalKind::Count { index: 0 });
    assert_eq!(p.signals[3].kind, SignalKind::Count { index: 2 });
    assert!((p.signals[1].baseline - 0.02).abs() < 1e-12);
    let mut rng = StdRng::seed_from_u64(19);
    let mut run = |canary_jobs: f64| {
        let mut draw = |n: u64, q: f64| Binomial::new(n, q).unwrap().sample(&mut rng);
        let steps: Vec<StepCounts> = (0..20)
            .map(|_| {
                let v = |n: u64, jq: f64, draw: &mut dyn FnMut(u64, f64) -> u64| VersionCounts {
                    requests: n * 10,
                    errors: draw(n * 10, 0.02),
                    counts: (0..3)
                        .map(|_| EventCounts {
                            bad: draw(n, jq),
                            total: n,
                        })
                        .collect(),
                    ..Default::default()
                };
                StepCounts {
                    weight: 10,
                    canary: v(300, canary_jobs, &mut draw),
                    primary: v(2700, 0.02, &mut draw),
                }
            })
            .collect();
        evaluate(&policy, &p.signals, &steps)
    };
    let mut false_fails = 0;
    for _ in 0..400 {
        let j = run(0.02);
        false_fails += (j.signals[1].verdict == Verdict::Fail) as u32;
    }
    // expected ≤ 400 × 0.25 % = 1
    assert!(
        false_fails <= 4,
        "{false_fails} false FAILs of the count signal in 400 A/A runs"
    );
    let mut caught = 0;
    for _ in 0..50 {
        let j = run(0.05);
        assert_ne!(j.signals[0].verdict, Verdict::Fail, "the errors signal");
        caught += (j.signals[1].verdict == Verdict::Fail) as u32;
    }
    assert!(caught >= 48, "{caught} of 50 regressions caught");
}

#[test]
fn a_count_signal_tolerance_out_of_range_is_refused() {
    let lookback = Lookback {
        requests: 100,
        ..Default::default()
    };
    let c = CountSignal {
        name: "jobs".into(),
        tolerance_pp: Some(60.0),
    };
    let p = Policy {
        latency: false,
        ..Policy::default()
    };
    let e = plan_with_counts(&p, &lookback, &[c]).unwrap_err();
    assert_eq!(e.0, "jobs: tolerance 60 out of range (0, 50] pp");
}

#[test]
fn load_test_share_sums_the_steps_that_counted_them_and_never_rounds_to_0_or_100() {
    let step = |n: u64, load: Option<u64>| StepCounts {
        weight: 10,
        canary: VersionCounts {
            requests: n,
            load_test: load,
            ..Default::default()
        },
        primary: VersionCounts::default(),
    };
    // a step recorded before the load tests were counted is left out, not taken as 0
    let steps = [
        step(500, None),
        step(1000, Some(300)),
        step(1000, Some(460)),
    ];
    assert_eq!(report::load_test_share(&steps), Some((760, 2000)));
    let w = ["flagger-loadtester".to_string()];
    assert_eq!(
        report::load_test_phrase(&steps, &w).as_deref(),
        Some("38% of the canary's requests from load tests (flagger-loadtester)")
    );
    assert_eq!(report::load_test_share(&steps[..1]), None);
    assert_eq!(report::load_test_phrase(&steps[..1], &w), None);
    // counted, but no canary request yet: nothing to share
    assert_eq!(report::load_test_phrase(&[step(0, Some(0))], &w), None);
    // a count above the requests (scrape skew) is clipped
    assert_eq!(
        report::load_test_share(&[step(10, Some(12))]),
        Some((10, 10))
    );
    let f = report::fmt_share;
    assert_eq!(
        [
            f(0, 10),
            f(10, 10),
            f(1, 1000),
            f(999, 1000),
            f(5, 1000),
            f(1, 3)
        ],
        ["0%", "100%", "<1%", ">99%", "1%", "33%"]
    );
}
