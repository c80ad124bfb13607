//! Corpus benchmark of canary judges (`sequential-judge.md` §5): a seeded corpus of releases
//! (§5.1), scored per traffic stratum (§5.2), judged by Flagger's rule as specified and by the
//! sequential judge (ramp and fast promotion), plus the A/A suite (§5.4). Prints figures; asserts
//! nothing (the correctness properties are tests in `src/analysis/judge/tests.rs`).
//!
//! Run: `cargo bench --bench judge_corpus` (or `e2e/bench --judge`). Options after `--`:
//! `--releases N` (default 2000), `--aa N` (default 10000), `--seed S` (default 20261129),
//! `--strict` (errors +0.2 pp, latency +5 %).

use pennant::analysis::judge::{
    self, ISTIO_EDGES_MS, Lookback, Plan, Policy, Process, Progress, StepCounts, Table,
    VersionCounts,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};
use statrs::function::erf::erfc;

const MAX_WEIGHT: i32 = 50;
const STEP_WEIGHT: i32 = 10;
/// Ticks after which a Flagger run with neither verdict counts as held.
const FLAGGER_MAX_TICKS: u32 = 60;
const GAP_PROB: f64 = 0.03;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stratum {
    Low,
    Mid,
    High,
}

#[derive(Clone, Debug)]
struct Release {
    seed: u64,
    rps: f64,
    /// Primary error probability.
    b: f64,
    /// Lognormal latency: ln-median (ms) and σ.
    mu: f64,
    sigma: f64,
    /// Canary error increase (probability) and latency factor.
    err_delta: f64,
    lat_factor: f64,
    drift_a: f64,
    drift_p: f64,
    drift_phi: f64,
    couple_err: f64,
    couple_lat: f64,
    /// (first minute, minutes, error ×, latency ×, traffic ×)
    bursts: Vec<(u32, u32, f64, f64, f64)>,
    drift: bool,
}

impl Release {
    fn stratum(&self) -> Stratum {
        if self.rps < 5.0 {
            Stratum::Low
        } else if self.rps < 50.0 {
            Stratum::Mid
        } else {
            Stratum::High
        }
    }
    fn bad(&self) -> bool {
        self.err_delta > 0.0 || self.lat_factor > 1.0
    }
    /// Worse than the declared tolerance (errors ≥ δ, or latency ≥ 1 + τ).
    fn beyond(&self, policy: &Policy) -> bool {
        self.err_delta >= policy.error_tolerance / 100.0
            || self.lat_factor >= 1.0 + policy.latency_tolerance / 100.0
    }
}

fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

/// One release of the corpus (§5.1). `aa`: no regression; `drift`: load cycle and bursts on.
fn release(seed: u64, aa: bool, drift: bool) -> Release {
    let mut rng = StdRng::seed_from_u64(seed);
    let rps = log_uniform(&mut rng, 0.5, 500.0);
    let b = log_uniform(&mut rng, 0.001, 0.02);
    let sigma: f64 = rng.random_range(0.3..0.7);
    let p99 = log_uniform(&mut rng, 60.0, 450.0);
    let mu = (p99 / (2.326 * sigma).exp()).ln();
    let (mut err_delta, mut lat_factor) = (0.0, 1.0);
    if !aa && rng.random::<f64>() >= 0.5 {
        let u: f64 = rng.random();
        if u < 0.6 {
            err_delta = log_uniform(&mut rng, 0.002, 0.05);
        }
        if u >= 0.4 {
            lat_factor = log_uniform(&mut rng, 1.05, 1.5);
        }
    }
    let drift_a = rng.random_range(0.0..0.5);
    let drift_p = rng.random_range(60.0..240.0);
    let drift_phi = rng.random_range(0.0..std::f64::consts::TAU);
    let couple_err = rng.random_range(0.0..1.5);
    let couple_lat = rng.random_range(0.0..0.5);
    let mut bursts = Vec::new();
    if rng.random::<f64>() < 0.3 {
        let n = if rng.random::<f64>() < 0.5 { 1 } else { 2 };
        for _ in 0..n {
            bursts.push((
                rng.random_range(1..30),
                rng.random_range(1..=3),
                rng.random_range(3.0..10.0),
                rng.random_range(1.3..2.5),
                rng.random_range(1.0..3.0),
            ));
        }
    }
    Release {
        seed,
        rps,
        b,
        mu,
        sigma,
        err_delta,
        lat_factor,
        drift_a,
        drift_p,
        drift_phi,
        couple_err,
        couple_lat,
        bursts,
        drift,
    }
}

/// One version's counts in one minute: requests, errors, cumulative Istio buckets.
#[derive(Clone, Debug, Default)]
struct Minute {
    n: u64,
    e: u64,
    cum: Vec<u64>,
}

impl Minute {
    fn add(&mut self, o: &Minute) {
        self.n += o.n;
        self.e += o.e;
        if self.cum.is_empty() {
            self.cum = vec![0; o.cum.len()];
        }
        for (a, b) in self.cum.iter_mut().zip(&o.cum) {
            *a += b;
        }
    }
}

fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `n` lognormal(mu, sigma) latencies into cumulative Istio buckets (multinomial).
fn buckets(rng: &mut StdRng, n: u64, mu: f64, sigma: f64) -> Vec<u64> {
    let mut cum = Vec::with_capacity(ISTIO_EDGES_MS.len());
    let (mut rem_n, mut prev_p, mut acc) = (n, 0.0, 0u64);
    for &edge in &ISTIO_EDGES_MS {
        let p = phi((edge.ln() - mu) / sigma);
        let rem_p = 1.0 - prev_p;
        let c = if rem_n == 0 || rem_p <= 0.0 {
            0
        } else {
            let q = ((p - prev_p) / rem_p).clamp(0.0, 1.0);
            Binomial::new(rem_n, q).unwrap().sample(rng)
        };
        rem_n -= c;
        acc += c;
        cum.push(acc);
        prev_p = p;
    }
    cum
}

fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        0
    } else {
        Poisson::new(mean).unwrap().sample(rng) as u64
    }
}

/// The release's world: one RNG stream, minute by minute.
struct World<'a> {
    r: &'a Release,
    rng: StdRng,
}

impl World<'_> {
    fn new(r: &Release, stream: u64) -> World<'_> {
        World {
            r,
            rng: StdRng::seed_from_u64(r.seed ^ (stream << 48) ^ 0x9e37_79b9),
        }
    }

    /// Minute `k` (1-based) at canary weight `w` percent: (canary, primary, data missing).
    fn minute(&mut self, k: u32, w: i32) -> (Minute, Minute, bool) {
        let r = self.r;
        let (mut load, mut em, mut lm, mut tm) = (1.0, 1.0, 1.0, 1.0);
        if r.drift {
            load = 1.0
                + r.drift_a * (std::f64::consts::TAU * k as f64 / r.drift_p + r.drift_phi).sin();
            for &(s, len, e, l, t) in &r.bursts {
                if k >= s && k < s + len {
                    em *= e;
                    lm *= l;
                    tm *= t;
                }
            }
        }
        let rate = r.rps * load * tm * 60.0;
        let qp = (r.b * (1.0 + r.couple_err * (load - 1.0)) * em).clamp(0.0, 0.5);
        let qc = (qp + r.err_delta).min(0.95);
        let lat = ((1.0 + r.couple_lat * (load - 1.0)) * lm).ln();
        let wf = w as f64 / 100.0;
        let mut version = |share: f64, q: f64, f: f64| {
            let n = poisson(&mut self.rng, rate * share);
            let e = if n == 0 {
                0
            } else {
                Binomial::new(n, q).unwrap().sample(&mut self.rng)
            };
            let cum = buckets(&mut self.rng, n, r.mu + lat + f.ln(), r.sigma);
            Minute { n, e, cum }
        };
        let c = version(wf, qc, r.lat_factor);
        let p = version(1.0 - wf, qp, 1.0);
        let gap = self.rng.random::<f64>() < GAP_PROB;
        (c, p, gap)
    }

    /// The primary alone for `minutes` at full traffic, no drift (§3.5).
    fn lookback(&mut self, minutes: u64) -> Lookback {
        let r = self.r;
        let n = poisson(&mut self.rng, r.rps * 60.0 * minutes as f64);
        let e = Binomial::new(n, r.b).unwrap().sample(&mut self.rng);
        let cum = buckets(&mut self.rng, n, r.mu, r.sigma);
        Lookback {
            requests: n,
            errors: e,
            buckets: ISTIO_EDGES_MS.iter().copied().zip(cum).collect(),
            timed: n,
        }
    }
}

/// Prometheus `histogram_quantile` on cumulative Istio buckets (+Inf = n).
fn histogram_quantile(q: f64, cum: &[u64], n: u64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let rank = q * n as f64;
    let mut prev = (0.0, 0u64);
    for (i, &c) in cum.iter().enumerate() {
        let edge = ISTIO_EDGES_MS[i];
        if c as f64 >= rank {
            let inb = (c - prev.1) as f64;
            return prev.0 + (edge - prev.0) * (rank - prev.1 as f64) / inb.max(1e-12);
        }
        prev = (edge, c);
    }
    prev.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Promoted(u32),
    RolledBack(u32),
    Held,
}

/// Flagger as configured (§5.3-1): success rate ≥ 99 %, p99 ≤ 500 ms on each 1 m window,
/// threshold 5, stepWeight 10, maxWeight 50; no values = failed check.
fn flagger(r: &Release) -> Outcome {
    let mut world = World::new(r, 1);
    let (mut w, mut failed) = (STEP_WEIGHT, 0);
    for k in 1..=FLAGGER_MAX_TICKS {
        if failed >= 5 {
            return Outcome::RolledBack(k);
        }
        let (c, _, gap) = world.minute(k, w);
        let ok = !gap && c.n > 0 && {
            let sr = 100.0 * (1.0 - c.e as f64 / c.n as f64);
            let p99 = histogram_quantile(0.99, &c.cum, c.n);
            sr >= 99.0 && p99 <= 500.0
        };
        if !ok {
            failed += 1;
        } else if w >= MAX_WEIGHT {
            return Outcome::Promoted(k);
        } else {
            w += STEP_WEIGHT;
        }
    }
    Outcome::Held
}

fn counts(m: &Minute, edges: &[f64]) -> VersionCounts {
    let slow = edges
        .iter()
        .map(|e| {
            let i = ISTIO_EDGES_MS.iter().position(|x| x == e).unwrap();
            m.n - m.cum[i]
        })
        .collect();
    VersionCounts {
        requests: m.n,
        errors: m.e,
        timed: m.n,
        slow,
    }
}

/// The sequential judge with the §4.6 progression (`judge::progress`). Returns the outcome
/// and whether any FAIL happened (for A/A).
fn sequential(r: &Release, policy: &Policy) -> Outcome {
    let mut world = World::new(r, 2);
    let lb = world.lookback(60);
    let Plan { signals, edges_ms } = judge::plan(policy, &lb).expect("plan");
    let th = judge::thresholds(policy, signals.len());
    let mut procs: Vec<Process> = signals.iter().map(Process::new).collect();
    let mut w = STEP_WEIGHT;
    let mut pending: Option<(Minute, Minute)> = None;
    let mut warm = 0;
    for k in 1..=policy.max_steps {
        let (c, p, gap) = world.minute(k, w);
        let (mut c0, mut p0) = pending.take().unwrap_or_default();
        c0.add(&c);
        p0.add(&p);
        if gap {
            // incomplete step: merge into the next, hold the weight (§3.3)
            pending = Some((c0, p0));
            continue;
        }
        let step = StepCounts {
            weight: w,
            canary: counts(&c0, &edges_ms),
            primary: counts(&p0, &edges_ms),
        };
        if warm < policy.warmup_steps {
            if step.canary.requests > 0 {
                warm += 1;
            }
        } else {
            for (pr, s) in procs.iter_mut().zip(&signals) {
                pr.push(Table::of(s, &step));
            }
        }
        let verdict = judge::combine(procs.iter().map(|p| p.verdict(th)));
        match judge::progress(policy, verdict, w, MAX_WEIGHT, k) {
            Progress::Rollback => return Outcome::RolledBack(k),
            Progress::Promote => return Outcome::Promoted(k),
            Progress::Advance => w = (w + STEP_WEIGHT).min(MAX_WEIGHT),
            Progress::Hold => {}
            Progress::Inconclusive(_) => return Outcome::Held,
        }
    }
    Outcome::Held
}

#[derive(Default, Clone)]
struct Score {
    bad: u32,
    bad_rb: u32,
    bad_held: u32,
    bad_pr: u32,
    beyond: u32,
    beyond_pr: u32,
    good: u32,
    good_rb: u32,
    good_held: u32,
    good_pr: u32,
    rb_ticks: u64,
    pr_ticks: u64,
}

impl Score {
    fn add(&mut self, r: &Release, o: Outcome, policy: &Policy) {
        if r.bad() {
            self.bad += 1;
            let beyond = r.beyond(policy);
            self.beyond += beyond as u32;
            match o {
                Outcome::RolledBack(k) => {
                    self.bad_rb += 1;
                    self.rb_ticks += k as u64;
                }
                Outcome::Promoted(_) => {
                    self.bad_pr += 1;
                    self.beyond_pr += beyond as u32;
                }
                Outcome::Held => self.bad_held += 1,
            }
        } else {
            self.good += 1;
            match o {
                Outcome::RolledBack(_) => self.good_rb += 1,
                Outcome::Promoted(k) => {
                    self.good_pr += 1;
                    self.pr_ticks += k as u64;
                }
                Outcome::Held => self.good_held += 1,
            }
        }
    }
}

fn pct(a: u32, b: u32) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}", 100.0 * a as f64 / b as f64)
    }
}

fn mean(sum: u64, n: u32) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:.1}", sum as f64 / n as f64)
    }
}

fn print_row(stratum: &str, judge: &str, s: &Score) {
    println!(
        "| {stratum} ({}/{}) | {judge} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        s.good,
        s.bad,
        pct(s.bad_rb, s.bad),
        pct(s.bad_held, s.bad),
        pct(s.bad_pr, s.bad),
        pct(s.beyond_pr, s.beyond),
        pct(s.good_rb, s.good),
        pct(s.good_held, s.good),
        pct(s.good_pr, s.good),
        mean(s.rb_ticks, s.bad_rb),
        mean(s.pr_ticks, s.good_pr),
    );
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_f(name: &str) -> Option<f64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (CI) a small corpus only
    // checks that the benchmark still runs.
    let full = std::env::args().any(|a| a == "--bench");
    let n = arg("--releases", if full { 2000 } else { 100 });
    let aa_n = arg("--aa", if full { 10000 } else { 200 });
    let seed = arg("--seed", 20261129);
    let strict = std::env::args().any(|a| a == "--strict");
    let mut policy = Policy::default();
    if strict {
        policy.error_tolerance = 0.2;
        policy.latency_tolerance = 5.0;
    }
    // Overrides, for exploring the policy (percent values as in the Policy fields).
    let f = |name: &str, d: f64| arg_f(name).unwrap_or(d);
    policy.fail_margin = f("--fail-margin", policy.fail_margin);
    policy.alpha_pass = f("--alpha-pass", policy.alpha_pass);
    policy.alpha_fail = f("--alpha-fail", policy.alpha_fail);
    policy.error_tolerance = f("--error-tolerance", policy.error_tolerance);
    policy.latency_tolerance = f("--latency-tolerance", policy.latency_tolerance);
    policy.warmup_steps = f("--warmup", policy.warmup_steps as f64) as u32;
    policy.max_steps = f("--max-steps", policy.max_steps as f64) as u32;
    let fast = Policy {
        fast_promotion: true,
        ..policy.clone()
    };
    let t0 = std::time::Instant::now();
    let corpus: Vec<Release> = (0..n).map(|i| release(seed + i, false, true)).collect();
    type Judge<'a> = (&'a str, Box<dyn Fn(&Release) -> Outcome + 'a>);
    let judges: Vec<Judge> = vec![
        ("Flagger as configured", Box::new(flagger)),
        ("sequential, ramp", Box::new(|r| sequential(r, &policy))),
        ("sequential, fast", Box::new(|r| sequential(r, &fast))),
    ];
    let outcomes: Vec<Vec<Outcome>> = judges
        .iter()
        .map(|(_, j)| corpus.iter().map(j).collect())
        .collect();
    println!(
        "# judge corpus: {n} releases, seed {seed}, tolerances errors +{} pp, latency +{} %, alphaFail {}, alphaPass {}, failMargin {}, warmupSteps {}, maxSteps {}",
        policy.error_tolerance,
        policy.latency_tolerance,
        policy.alpha_fail,
        policy.alpha_pass,
        policy.fail_margin,
        policy.warmup_steps,
        policy.max_steps
    );
    println!();
    println!(
        "| stratum (good/bad) | judge | bad rolled back % | bad held % | bad promoted % | bad beyond tolerance promoted % | good rolled back % | good held % | good promoted % | mean tick of rollback (bad) | mean tick of promotion (good) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let strata: [(&str, Option<Stratum>); 4] = [
        ("all", None),
        ("low <5 rps", Some(Stratum::Low)),
        ("mid 5-50", Some(Stratum::Mid)),
        ("high 50-500", Some(Stratum::High)),
    ];
    for (label, st) in strata {
        for ((name, _), outs) in judges.iter().zip(&outcomes) {
            let mut s = Score::default();
            for (r, o) in corpus.iter().zip(outs) {
                if st.is_none_or(|x| x == r.stratum()) {
                    s.add(r, *o, &policy);
                }
            }
            print_row(label, name, &s);
        }
    }
    // Bad releases beyond the tolerance that were promoted, by kind (sequential, ramp).
    println!();
    for (kind, pick) in [
        ("errors only", (true, false)),
        ("latency only", (false, true)),
        ("both", (true, true)),
    ] {
        let (mut n, mut pr) = (0u32, 0u32);
        for (r, o) in corpus.iter().zip(&outcomes[1]) {
            if (r.err_delta > 0.0, r.lat_factor > 1.0) == pick && r.beyond(&policy) {
                n += 1;
                pr += matches!(o, Outcome::Promoted(_)) as u32;
            }
        }
        println!("beyond tolerance, {kind}: {pr}/{n} promoted by the sequential judge (ramp)");
    }
    // Paired rollback speed: bad releases both Flagger and the sequential judge rolled back.
    println!();
    for (label, st) in strata {
        let (mut both, mut tf, mut ts) = (0u32, 0u64, 0u64);
        for (i, r) in corpus.iter().enumerate() {
            if !st.is_none_or(|x| x == r.stratum()) || !r.bad() {
                continue;
            }
            if let (Outcome::RolledBack(a), Outcome::RolledBack(b)) =
                (outcomes[0][i], outcomes[1][i])
            {
                both += 1;
                tf += a as u64;
                ts += b as u64;
            }
        }
        let ratio = if tf > 0 {
            ts as f64 / tf as f64
        } else {
            f64::NAN
        };
        println!(
            "paired rollbacks, {label}: {both} bad releases rolled back by both; mean tick Flagger {} vs sequential {} (ratio {ratio:.2})",
            mean(tf, both),
            mean(ts, both)
        );
    }
    // A/A suite (§5.4): identical versions, with and without drift/bursts.
    println!();
    for drift in [true, false] {
        let mut by: [(u32, u32); 3] = [(0, 0); 3];
        for i in 0..aa_n {
            let r = release(seed + 1_000_000 + i, true, drift);
            let idx = r.stratum() as usize;
            by[idx].0 += 1;
            if matches!(sequential(&r, &policy), Outcome::RolledBack(_)) {
                by[idx].1 += 1;
            }
        }
        let (tot, f) = by.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!(
            "A/A {} ({tot} releases): false FAIL {:.2} % (alphaFail {} %); low {}/{}, mid {}/{}, high {}/{}",
            if drift {
                "base (drift + bursts)"
            } else {
                "nodrift"
            },
            100.0 * f as f64 / tot.max(1) as f64,
            100.0 * policy.alpha_fail,
            by[0].1,
            by[0].0,
            by[1].1,
            by[1].0,
            by[2].1,
            by[2].0
        );
    }
    eprintln!("({:.1} s)", t0.elapsed().as_secs_f64());
}
