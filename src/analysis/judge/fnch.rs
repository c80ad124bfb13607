//! Fisher's non-central hypergeometric distribution (FNCH): the exact law of one step's 2×2
//! table given its margins. PURE, log space throughout.
//!
//! For a step with `nc` canary and `np` primary requests and `m` events in both versions, the
//! canary's event count `y` has, whatever the primary's per-request event probability,
//!
//! ```text
//! P(y | nc, np, m; β) = C(nc, y) · C(np, m − y) · e^{βy} / Z(β),   y ∈ [max(0, m − np), min(nc, m)]
//! ```
//!
//! where `β` is the log odds ratio (canary vs primary). Design: `sequential-judge.md` §4.2.
//!
//! The normaliser is a log-sum-exp over the support, summed outward from the mode and cut once
//! a term falls [`CUTOFF`] nats below the mode's (the terms are log-concave in `y`, so every
//! later term is smaller still): a few hundred terms even for tens of thousands of requests.

use statrs::function::factorial::ln_binomial;

/// Terms more than this many nats below the mode's are dropped (relative error < e^-36 · S).
pub const CUTOFF: f64 = 36.0;

/// The margins of one step's 2×2 table for one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Margins {
    /// Canary requests (`n_c`).
    pub nc: u64,
    /// Primary requests (`n_p`).
    pub np: u64,
    /// Events in both versions (`m = x_c + x_p`).
    pub m: u64,
}

impl Margins {
    /// The support `[lo, hi]` of the canary's event count.
    pub fn support(&self) -> (u64, u64) {
        (self.m.saturating_sub(self.np), self.nc.min(self.m))
    }

    /// A table with a single point of support (no canary or primary requests, no events, or
    /// every request an event) carries no information about `β`.
    pub fn informative(&self) -> bool {
        let (lo, hi) = self.support();
        lo < hi
    }

    /// ln of the β-free part of the ratio term(y) / term(y − 1), for lo < y ≤ hi:
    /// ln[(nc − y + 1)(m − y + 1)] − ln[y (np − m + y)].
    fn ln_ratio0(&self, y: u64) -> f64 {
        let (nc, np, m) = (self.nc as f64, self.np as f64, self.m as f64);
        let y = y as f64;
        // One ln per term: the ratio stays within f64 range for any realistic count.
        (((nc - y + 1.0) * (m - y + 1.0)) / (y * (np - m + y))).ln()
    }

    /// The mode of the FNCH at `beta`: the largest `y` whose ratio to `y − 1` is ≥ 1 (the
    /// ratio decreases in `y`), by bisection.
    pub fn mode(&self, beta: f64) -> u64 {
        let (lo, hi) = self.support();
        let (mut a, mut b) = (lo, hi); // invariant: mode ∈ [a, b]
        while a < b {
            let mid = a + (b - a).div_ceil(2);
            if self.ln_ratio0(mid) + beta >= 0.0 {
                a = mid;
            } else {
                b = mid - 1;
            }
        }
        a
    }

    /// ln C(nc, y) + ln C(np, m − y): the β-free log weight of `y`.
    pub fn ln_weight(&self, y: u64) -> f64 {
        ln_binomial(self.nc, y) + ln_binomial(self.np, self.m - y)
    }

    /// Walk the support outward from the mode at `beta`, up then down, calling `visit(y, t)`
    /// with `t` = ln(term(y) / term(mode)) for every term within [`CUTOFF`] nats of the mode's
    /// (the mode itself excluded: t = 0). Returns the mode.
    fn walk(&self, beta: f64, mut visit: impl FnMut(u64, f64)) -> u64 {
        let (lo, hi) = self.support();
        let mode = self.mode(beta);
        let (mut t, mut y) = (0.0, mode);
        while y < hi {
            y += 1;
            t += self.ln_ratio0(y) + beta;
            if t < -CUTOFF {
                break;
            }
            visit(y, t);
        }
        let (mut t, mut y) = (0.0, mode);
        while y > lo {
            t -= self.ln_ratio0(y) + beta;
            y -= 1;
            if t < -CUTOFF {
                break;
            }
            visit(y, t);
        }
        mode
    }

    /// ln Z(β) = ln Σ_y C(nc, y) C(np, m − y) e^{βy}.
    pub fn ln_norm(&self, beta: f64) -> f64 {
        // Sum exp(t(y) − t(mode)) outward from the mode, by the ratio recurrence.
        let mut sum = 1.0;
        let mode = self.walk(beta, |_, t| sum += t.exp());
        self.ln_weight(mode) + beta * mode as f64 + sum.ln()
    }

    /// The probabilities of the support at `beta`, as (first `y`, P(y), P(y + 1), …): the
    /// terms within [`CUTOFF`] nats of the mode's, normalised to sum to 1 (what is cut is below
    /// e^-36 of the mode's mass per term).
    pub fn pmf(&self, beta: f64) -> (u64, Vec<f64>) {
        let mut terms = vec![(0, 0.0)];
        let mode = self.walk(beta, |y, t| terms.push((y, t.exp())));
        terms[0] = (mode, 1.0);
        terms.sort_unstable_by_key(|(y, _)| *y);
        let sum: f64 = terms.iter().map(|(_, p)| p).sum();
        (terms[0].0, terms.iter().map(|(_, p)| p / sum).collect())
    }

    /// ln P(y | margins; β), including the binomial constants. `-inf` outside the support.
    pub fn ln_pmf(&self, y: u64, beta: f64) -> f64 {
        let (lo, hi) = self.support();
        if y < lo || y > hi {
            return f64::NEG_INFINITY;
        }
        self.ln_weight(y) + beta * y as f64 - self.ln_norm(beta)
    }
}

/// ln Σ exp(a_i) with max subtraction; `-inf` for an empty slice.
pub fn log_sum_exp(terms: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = terms.into_iter().collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + v.iter().map(|a| (a - max).exp()).sum::<f64>().ln()
}
