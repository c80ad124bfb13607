//! The canary's cumulative counts for the absolute guardrails (`sequential-judge.md` §4.4).
//! PURE.
//!
//! With the sequential judge, Flagger's builtin `request-success-rate` / `request-duration`
//! `thresholdRange` keep their meaning as *absolute* SLOs, judged on the canary's cumulative
//! counts over the run's judged steps rather than per window: [`CanaryTotals`] holds the
//! requests, 5xx errors and the full cumulative latency histogram, and
//! [`histogram_quantile`] reads its p99 as Prometheus does. The thresholds themselves are
//! judged in [`crate::canary::judged`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::counts::VersionSample;

/// Fewest canary requests (for `request-duration`: requests in the histogram) before a
/// guardrail is judged. Below that one slow or failed request moves the percentage by more
/// than a typical SLO's slack (1 of 50 is 2 pp), so a breach would be noise.
pub const MIN_GUARDRAIL_REQUESTS: u64 = 50;

/// One cumulative latency bucket: requests no slower than `leMs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Upper edge, ms.
    pub le_ms: f64,
    /// Requests no slower than the edge.
    pub count: u64,
}

/// The canary's counts summed over the judged steps of the run (those after the warm-up, as
/// [`super::judged_steps`] picks them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryTotals {
    /// Requests served.
    pub requests: u64,
    /// 5xx responses.
    pub errors: u64,
    /// Requests in the latency histogram (its `+Inf` bucket).
    #[serde(default)]
    pub timed: u64,
    /// Cumulative histogram, ascending finite edges: only the edges every added step had
    /// (a step without an edge cannot say how many of its requests were below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<Bucket>,
    /// Steps added.
    #[serde(default)]
    pub steps: u32,
}

impl CanaryTotals {
    /// Add one step's canary sample. Histogram edges are intersected across the steps that
    /// have a histogram (`timed > 0`); a step without requests in the histogram leaves them.
    pub fn add(&mut self, v: &VersionSample) {
        self.requests += v.requests;
        self.errors += v.errors.min(v.requests);
        self.steps += 1;
        if v.timed == 0 {
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
        };
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
}
