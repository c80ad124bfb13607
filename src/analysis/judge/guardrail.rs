//! The canary's cumulative counts for the absolute guardrails (`sequential-judge.md` §4.4).
//! PURE.
//!
//! With the sequential judge, Flagger's builtin `request-success-rate` / `request-duration`
//! `thresholdRange` keep their meaning as *absolute* SLOs, judged on the canary's cumulative
//! counts over the run's judged steps rather than per window: [`CanaryTotals`] holds the
//! requests, 5xx errors and the full cumulative latency histogram, and
//! [`histogram_quantile`] reads its p99 as Prometheus does. The thresholds themselves are
//! judged in [`crate::canary::judged`], and a breach needs anytime-valid evidence
//! ([`ln_evidence`]), not just an observed value past the threshold.

use crate::analysis::counts::VersionSample;
use crate::api::judge::{Bucket, CanaryTotals};

/// Alternatives in the [`ln_evidence`] mixture: odds ratios over the SLO's, log-spaced
/// from 1.25 to 20 (1.25 · 16^(i/(n−1))).
pub const ALTERNATIVES: usize = 8;

/// ln of a test martingale against H0 "each request is an event with probability ≤ `q0`",
/// on `n` requests of which `k` were events (cumulative counts).
///
/// The mixture, with equal weights, over alternatives `q1` whose odds are r ×
/// `q0`'s for [`ALTERNATIVES`] r log-spaced from 1.25 to 20 (for a small `q0`, `q1 ≈ r·q0`;
/// always in `(q0, 1)`, where `r·q0` would pass 1 for a lax SLO), of the likelihood ratios
/// `(q1/q0)^k ((1−q1)/(1−q0))^(n−k)`, in log space. Each ratio is a product over requests
/// whose factors have expectation ≤ 1 under any `q ≤ q0`, so the mixture is a nonnegative
/// supermartingale and `P(ever ≥ 1/α) ≤ α` (Ville): evaluating it on the cumulative counts at
/// every tick is valid however often it is looked at. Few events cannot reach `1/α`: against
/// an SLO of 99 % (`q0` 0.01) with 1/α = 100 one error in 50 requests is 10^−0.2, and 3
/// errors are enough only within about the first 13 requests.
///
/// `k` may be fractional (an estimate from a histogram). `q0 ≥ 1`: no evidence (0). `q0 ≤ 0`
/// (no event allowed at all): infinite once there is an event.
pub fn ln_evidence(n: f64, k: f64, q0: f64) -> f64 {
    if n <= 0.0 || q0 >= 1.0 || q0.is_nan() {
        return 0.0;
    }
    let k = k.clamp(0.0, n);
    if q0 <= 0.0 {
        return if k > 0.0 { f64::INFINITY } else { 0.0 };
    }
    let lr: Vec<f64> = (0..ALTERNATIVES)
        .map(|i| {
            let r = 1.25 * 16f64.powf(i as f64 / (ALTERNATIVES - 1) as f64);
            let q1 = q0 * r / (1.0 - q0 + q0 * r);
            k * (q1 / q0).ln() + (n - k) * ((1.0 - q1) / (1.0 - q0)).ln()
        })
        .collect();
    let top = lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = lr.iter().map(|l| (l - top).exp()).sum::<f64>() / lr.len() as f64;
    top + mean.ln()
}

impl CanaryTotals {
    /// Add one step's canary sample. Histogram edges are intersected across the steps that
    /// have a histogram (`timed > 0` and finite buckets); a step without leaves them.
    pub fn add(&mut self, v: &VersionSample) {
        self.requests += v.requests;
        self.errors += v.errors.min(v.requests);
        self.steps += 1;
        // a step without finite buckets would leave nothing to intersect with: not counted in
        // the histogram at all (its requests still count for the success rate)
        if v.timed == 0 || v.buckets.is_empty() {
            return;
        }
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        if self.timed == 0 {
            self.buckets = v
                .buckets
                .iter()
                .map(|&(le_ms, count)| Bucket { le_ms, count })
                .collect();
        } else {
            self.buckets.retain_mut(|b| {
                match v.buckets.iter().find(|(le, _)| same(*le, b.le_ms)) {
                    Some((_, c)) => {
                        b.count += c;
                        true
                    }
                    None => false,
                }
            });
        }
        self.timed += v.timed;
    }

    /// Success rate in percent (non-5xx among requests), as Flagger's builtin query.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| {
            100.0 * (self.requests - self.errors.min(self.requests)) as f64 / self.requests as f64
        })
    }

    /// Requests no slower than a bucket edge near `ms` in the cumulative histogram, chosen so
    /// the count is on the safe side for a guardrail: with `upper`, at the smallest edge ≥ `ms`
    /// (all timed requests beyond the largest finite edge), which over-counts requests no
    /// slower than `ms` and so never over-counts slower ones; without, at the largest edge ≤
    /// `ms` (0 below the first edge), which under-counts them. Exact when `ms` is an edge.
    /// `None` without a histogram.
    pub fn no_slower_than(&self, ms: f64, upper: bool) -> Option<f64> {
        if self.timed == 0 || self.buckets.is_empty() || ms.is_nan() {
            return None;
        }
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        let count = if upper {
            self.buckets
                .iter()
                .find(|x| x.le_ms >= ms || same(x.le_ms, ms))
                .map_or(self.timed, |x| x.count)
        } else {
            self.buckets
                .iter()
                .rev()
                .find(|x| x.le_ms <= ms || same(x.le_ms, ms))
                .map_or(0, |x| x.count)
        };
        Some(count as f64)
    }

    /// The `q` quantile of the cumulative histogram, ms ([`histogram_quantile`]).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let b: Vec<(f64, u64)> = self.buckets.iter().map(|b| (b.le_ms, b.count)).collect();
        histogram_quantile(q, &b, self.timed)
    }
}

/// Prometheus's `histogram_quantile(q, …)` on cumulative `buckets` (ascending finite edges)
/// with `total` in `+Inf`: the rank `q·total` is located in the first bucket whose cumulative
/// count reaches it, and interpolated linearly between that bucket's lower edge (0 for the
/// first bucket) and its upper edge. A rank in the `+Inf` bucket gives the largest finite
/// edge. `None` (Prometheus: NaN) without observations or without a finite bucket.
pub fn histogram_quantile(q: f64, buckets: &[(f64, u64)], total: u64) -> Option<f64> {
    if total == 0 || buckets.is_empty() || q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let rank = q * total as f64;
    let Some(b) = buckets.iter().position(|&(_, c)| c as f64 >= rank) else {
        return Some(buckets[buckets.len() - 1].0);
    };
    let (end, count) = buckets[b];
    if b == 0 && end <= 0.0 {
        return Some(end);
    }
    let (start, below) = if b > 0 { buckets[b - 1] } else { (0.0, 0) };
    let in_bucket = count.saturating_sub(below) as f64;
    if in_bucket == 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * (rank - below as f64) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        // 1000 requests: 900 ≤ 100ms, 980 ≤ 250ms, 995 ≤ 500ms, 5 above
        let b = [(100.0, 900), (250.0, 980), (500.0, 995)];
        // rank 990 lies in (250, 500]: 250 + 250·(990−980)/(995−980)
        let p99 = histogram_quantile(0.99, &b, 1000).unwrap();
        assert!((p99 - (250.0 + 250.0 * 10.0 / 15.0)).abs() < 1e-9, "{p99}");
        // rank 450 in the first bucket: from 0
        assert_eq!(histogram_quantile(0.45, &b, 1000), Some(50.0));
        // rank 999 beyond the last finite edge: that edge
        assert_eq!(histogram_quantile(0.999, &b, 1000), Some(500.0));
        assert_eq!(histogram_quantile(0.99, &b, 0), None);
        assert_eq!(histogram_quantile(0.99, &[], 10), None);
    }

    #[test]
    fn totals_add_steps_and_keep_only_the_edges_every_step_had() {
        let v = |n, x, buckets: Vec<(f64, u64)>| VersionSample {
            requests: n,
            errors: x,
            timed: n,
            buckets,
            pods: Vec::new(),
            counts: Vec::new(),
            load_test: None,
        };
        let mut t = CanaryTotals::default();
        // a first step timed but without finite buckets does not switch the histogram off
        t.add(&v(50, 0, vec![]));
        assert_eq!((t.requests, t.timed), (50, 0));
        let mut t = CanaryTotals::default();
        t.add(&v(100, 2, vec![(100.0, 50), (250.0, 90), (500.0, 99)]));
        // a step without canary requests changes no edge
        t.add(&VersionSample::default());
        t.add(&v(200, 300, vec![(100.0, 100), (500.0, 190)]));
        assert_eq!((t.requests, t.errors, t.timed, t.steps), (300, 202, 300, 3));
        assert_eq!(
            t.buckets,
            [
                Bucket {
                    le_ms: 100.0,
                    count: 150
                },
                Bucket {
                    le_ms: 500.0,
                    count: 289
                }
            ]
        );
        let sr = t.success_rate().unwrap();
        assert!((sr - 100.0 * 98.0 / 300.0).abs() < 1e-9, "{sr}");
    }

    #[test]
    fn evidence_needs_more_than_one_unlucky_request() {
        let log10 = |n: f64, k: f64, q0| ln_evidence(n, k, q0) / std::f64::consts::LN_10;
        // SLO 99 %, 1/α = 100
        assert!(log10(50.0, 1.0, 0.01) < 0.0);
        assert!(log10(50.0, 2.0, 0.01) < 1.0);
        assert!(log10(1000.0, 30.0, 0.01) > 4.0);
        // at the SLO, and just past it, the evidence is against a breach
        assert!(log10(100_000.0, 1000.0, 0.01) < -10.0);
        assert!(log10(100_000.0, 1010.0, 0.01) < -10.0);
        // three errors in a row are already rare at 1 %, two are not
        assert!(log10(3.0, 3.0, 0.01) > 2.0);
        assert!(log10(2.0, 2.0, 0.01) < 2.0);
        // grows with the evidence: more events at the same n, same rate over more n
        assert!(log10(1000.0, 31.0, 0.01) > log10(1000.0, 30.0, 0.01));
        assert!(log10(2000.0, 60.0, 0.01) > log10(1000.0, 30.0, 0.01));
        // a lax SLO (q0 0.5): the alternatives stay below 1
        let e = log10(60.0, 60.0, 0.5);
        assert!(e.is_finite() && e > 10.0, "{e}");
        // no event allowed at all; an SLO nothing can breach
        assert_eq!(ln_evidence(10.0, 1.0, 0.0), f64::INFINITY);
        assert_eq!(ln_evidence(10.0, 0.0, 0.0), 0.0);
        assert_eq!(ln_evidence(10.0, 10.0, 1.0), 0.0);
        assert_eq!(ln_evidence(0.0, 0.0, 0.01), 0.0);
    }

    #[test]
    fn requests_below_a_bound_are_exact_at_an_edge_and_on_the_safe_side_inside_a_bucket() {
        let t = CanaryTotals {
            requests: 1000,
            errors: 0,
            timed: 1000,
            buckets: [(100.0, 900), (250.0, 980), (500.0, 995)]
                .map(|(le_ms, count)| Bucket { le_ms, count })
                .to_vec(),
            steps: 1,
        };
        for upper in [true, false] {
            assert_eq!(t.no_slower_than(250.0, upper), Some(980.0));
            assert_eq!(t.no_slower_than(500.0, upper), Some(995.0));
            assert_eq!(CanaryTotals::default().no_slower_than(100.0, upper), None);
        }
        // 400 inside (250, 500]: the edge above or the edge below
        assert_eq!(t.no_slower_than(400.0, true), Some(995.0));
        assert_eq!(t.no_slower_than(400.0, false), Some(980.0));
        // below the first edge: 900 above, 0 below; beyond the last: all timed, or 995
        assert_eq!(t.no_slower_than(50.0, true), Some(900.0));
        assert_eq!(t.no_slower_than(50.0, false), Some(0.0));
        assert_eq!(t.no_slower_than(900.0, true), Some(1000.0));
        assert_eq!(t.no_slower_than(900.0, false), Some(995.0));
    }
}
