//! Per-step counts for the sequential judge from Prometheus (`sequential-judge.md` §3).
//!
//! Method B of §3.2: the raw samples of each counter series (a range selector evaluated as an
//! instant query at the step's end), differenced in Rust:
//!
//! - an increment `v_i − v_{i−1}` is attributed to the step when `t_i ∈ (from, to]`;
//! - a decrease is a counter reset: the increment is `v_i` (what happened before the reset is
//!   lost, as in Prometheus);
//! - a series with no sample before `from` (a new pod, a new `response_code`) counts from 0;
//! - counts are summed per version after differencing (never sum-then-difference), rounded;
//! - the step is incomplete when a live series has no sample within 1.5 scrape intervals of
//!   `to` (the interval is the median spacing of the samples): [`InputError::Incomplete`];
//! - cumulative `le` counts are made monotone after aggregation; `+Inf` is the histogram total.
//!
//! Builtin series per provider: [`builtin`] (Istio today; NGINX and Gateway API slot in as
//! more [`CountQueries`]).

use std::collections::BTreeMap;

use prometheus_http_query::response::Data;

use super::PrometheusProvider;
use super::judge::{self, JudgeError, Lookback, VersionCounts};

/// One version's raw counts for a step, as read from the provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionSample {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative latency histogram (edge ms, requests ≤ edge), ascending finite edges.
    pub buckets: Vec<(f64, u64)>,
    /// Requests in the histogram (`+Inf`); 0 when there is no histogram.
    pub timed: u64,
}

impl VersionSample {
    /// The counts the judge keeps: requests slower than each of `edges`. Errors when the
    /// histogram has requests but no bucket at an edge.
    pub fn counts(&self, edges: &[f64], who: &str) -> Result<VersionCounts, JudgeError> {
        let mut slow = Vec::with_capacity(edges.len());
        for &e in edges {
            match self
                .buckets
                .iter()
                .find(|(le, _)| (le - e).abs() <= 1e-9 * e.max(1.0))
            {
                Some((_, c)) => slow.push(self.timed.saturating_sub(*c)),
                None if self.timed == 0 => slow.push(0),
                None => {
                    return Err(JudgeError(format!(
                        "latency>{}: the {who}'s histogram has no bucket le=\"{}\"",
                        judge::fmt_ms(e),
                        e
                    )));
                }
            }
        }
        Ok(VersionCounts {
            requests: self.requests,
            errors: self.errors.min(self.requests),
            timed: self.timed,
            slow,
        })
    }

    /// This sample as a primary lookback.
    pub fn as_lookback(&self) -> Lookback {
        Lookback {
            requests: self.requests,
            errors: self.errors,
            buckets: self.buckets.clone(),
            timed: self.timed,
        }
    }
}

/// The step's counts per version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepSample {
    pub canary: VersionSample,
    pub primary: VersionSample,
}

/// Why there is no step to judge (§3.4). "Zero canary requests in the step" is not an error:
/// it is a sample with `canary.requests == 0`, which carries no evidence.
#[derive(Clone, Debug, PartialEq)]
pub enum InputError {
    /// A live series has no sample near the end of the step (scrape gap): merge the step into
    /// the next one for both versions (§3.3), never fill it with zeros.
    Incomplete(String),
    /// The provider could not be queried (HTTP error, timeout, bad query): counts as a failed
    /// check, as Flagger does.
    Provider(String),
    /// The query worked but a signal's series do not exist for a version (mislabelled
    /// workload, missing sidecar); the message names the signal and the series.
    NoSeries(String),
}

/// The builtin count series of one provider for one Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct CountQueries {
    /// Range-selector body of the request counter, e.g. `istio_requests_total{…}`.
    pub requests: String,
    /// Range-selector body of the latency histogram buckets.
    pub histogram: String,
    /// Label naming the version (`destination_workload`).
    pub version_label: String,
    /// Label holding the HTTP status code (`response_code`).
    pub code_label: String,
    /// Label values of the canary and the primary.
    pub canary: String,
    pub primary: String,
    /// Factor from the histogram's unit to ms (1 for ms, 1000 for seconds).
    pub to_ms: f64,
    /// Names for messages: the request and histogram metrics.
    pub requests_metric: String,
    pub histogram_metric: String,
}

/// The builtin series of `provider` for target `target` in `ns` (§3.1). Errors name the
/// provider when it has no count series yet.
pub fn builtin(provider: &str, ns: &str, target: &str) -> Result<CountQueries, String> {
    match provider.split(':').next().unwrap_or_default() {
        "istio" | "" => {
            let sel = format!(
                "reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"{target}|{target}-primary\""
            );
            Ok(CountQueries {
                requests: format!("istio_requests_total{{{sel}}}"),
                histogram: format!("istio_request_duration_milliseconds_bucket{{{sel}}}"),
                version_label: "destination_workload".into(),
                code_label: "response_code".into(),
                canary: target.into(),
                primary: format!("{target}-primary"),
                to_ms: 1.0,
                requests_metric: "istio_requests_total".into(),
                histogram_metric: "istio_request_duration_milliseconds_bucket".into(),
            })
        }
        other => Err(format!(
            "sequential judge: provider {other:?} has no builtin count series yet (istio only)"
        )),
    }
}

/// One series: labels and raw samples `(t seconds, value)`, ascending in time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawSeries {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(f64, f64)>,
}

/// Reset-aware increase of one counter series over `(from, to]`.
pub fn increase(samples: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    for &(t, v) in samples {
        if t > to {
            break;
        }
        if t > from {
            total += match prev {
                Some(p) if v >= p => v - p,
                Some(_) => v, // counter reset
                None => v,    // new series: counts from 0
            };
        }
        prev = Some(v);
    }
    total
}

/// Median spacing of consecutive samples over all series (the scrape interval), if any.
pub fn scrape_interval(series: &[RawSeries]) -> Option<f64> {
    let mut d: Vec<f64> = series
        .iter()
        .flat_map(|s| s.samples.windows(2).map(|w| w[1].0 - w[0].0))
        .filter(|x| *x > 0.0)
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// The step is complete when every series with a sample in `(from, to]` also has one within
/// 1.5 scrape intervals of `to`. Returns the first late series' description otherwise.
pub fn incomplete(series: &[RawSeries], from: f64, to: f64) -> Option<String> {
    let si = scrape_interval(series)?;
    series.iter().find_map(|s| {
        let last = s.samples.iter().rev().find(|(t, _)| *t <= to)?.0;
        let live = s.samples.iter().any(|(t, _)| *t > from && *t <= to);
        (live && last < to - 1.5 * si).then(|| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!(
                "scrape gap: series {{{}}} has no sample in the last {:.0}s of the step",
                labels.join(","),
                to - last
            )
        })
    })
}

/// Sum the request series of one version over `(from, to]`: (requests, 5xx errors, series seen).
pub fn request_counts(
    series: &[RawSeries],
    q: &CountQueries,
    version: &str,
    from: f64,
    to: f64,
) -> (u64, u64, usize) {
    let (mut n, mut e, mut seen) = (0.0, 0.0, 0);
    for s in series
        .iter()
        .filter(|s| s.labels.get(&q.version_label).map(String::as_str) == Some(version))
    {
        seen += 1;
        let inc = increase(&s.samples, from, to);
        n += inc;
        if s.labels
            .get(&q.code_label)
            .is_some_and(|c| c.starts_with('5'))
        {
            e += inc;
        }
    }
    (n.round() as u64, e.round() as u64, seen)
}

/// Sum the histogram series of one version over `(from, to]`: cumulative buckets (edge ms,
/// count), made monotone, and the `+Inf` total; plus the number of series seen.
pub fn histogram_counts(
    series: &[RawSeries],
    q: &CountQueries,
    version: &str,
    from: f64,
    to: f64,
) -> (Vec<(f64, u64)>, u64, usize) {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // key: f64 bits of edge
    let mut inf = 0.0;
    let mut seen = 0;
    for s in series
        .iter()
        .filter(|s| s.labels.get(&q.version_label).map(String::as_str) == Some(version))
    {
        seen += 1;
        let Some(le) = s.labels.get("le") else {
            continue;
        };
        let inc = increase(&s.samples, from, to);
        if le == "+Inf" {
            inf += inc;
            continue;
        }
        let Ok(edge) = le.parse::<f64>() else {
            continue;
        };
        let ms = edge * q.to_ms;
        by_le.entry(ms.to_bits()).or_insert((ms, 0.0)).1 += inc;
    }
    let mut edges: Vec<(f64, f64)> = by_le.into_values().collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut run = 0u64;
    let buckets = edges
        .into_iter()
        .map(|(e, c)| {
            run = run.max(c.round() as u64);
            (e, run)
        })
        .collect();
    (buckets, (inf.round() as u64).max(run), seen)
}

/// Turn a Prometheus answer into raw series (a matrix; a vector counts as one sample each).
pub fn raw_series(data: Data) -> Vec<RawSeries> {
    match data {
        Data::Matrix(m) => m
            .into_iter()
            .map(|r| RawSeries {
                labels: r
                    .metric()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                samples: r
                    .samples()
                    .iter()
                    .map(|s| (s.timestamp(), s.value()))
                    .collect(),
            })
            .collect(),
        Data::Vector(v) => v
            .into_iter()
            .map(|r| RawSeries {
                labels: r
                    .metric()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                samples: vec![(r.sample().timestamp(), r.sample().value())],
            })
            .collect(),
        Data::Scalar(_) => Vec::new(),
    }
}

/// Margin before `from` in the range selector, so each series' previous sample is included.
pub const MARGIN_SECS: i64 = 120;

/// Read both versions' counts for `(from, to]` (Unix seconds) from Prometheus. `latency`:
/// also read the histogram. Errors: [`InputError::Provider`] for a failed query,
/// [`InputError::NoSeries`] naming the signal and series when a version has none,
/// [`InputError::Incomplete`] on a scrape gap.
pub async fn step_sample(
    prom: &PrometheusProvider,
    q: &CountQueries,
    from: i64,
    to: i64,
    latency: bool,
) -> Result<StepSample, InputError> {
    let span = (to - from).max(1) + MARGIN_SECS;
    let fetch = |body: &str| format!("{body}[{span}s]");
    let req = prom
        .data_at(&fetch(&q.requests), Some(to))
        .await
        .map_err(|e| InputError::Provider(format!("{}: {e}", q.requests_metric)))?;
    let req = raw_series(req);
    let hist = if latency {
        let h = prom
            .data_at(&fetch(&q.histogram), Some(to))
            .await
            .map_err(|e| InputError::Provider(format!("{}: {e}", q.histogram_metric)))?;
        raw_series(h)
    } else {
        Vec::new()
    };
    let (f, t) = (from as f64, to as f64);
    let mut sample = StepSample::default();
    for (who, version, out) in [
        ("canary", &q.canary, &mut sample.canary),
        ("primary", &q.primary, &mut sample.primary),
    ] {
        let (n, e, seen) = request_counts(&req, q, version, f, t);
        if seen == 0 {
            return Err(InputError::NoSeries(format!(
                "errors: no {} series for the {who} {version}",
                q.requests_metric
            )));
        }
        out.requests = n;
        out.errors = e;
        if latency {
            let (buckets, timed, seen) = histogram_counts(&hist, q, version, f, t);
            if seen == 0 {
                return Err(InputError::NoSeries(format!(
                    "latency: no {} series for the {who} {version}",
                    q.histogram_metric
                )));
            }
            out.buckets = buckets;
            out.timed = timed;
        }
    }
    let all: Vec<RawSeries> = req.into_iter().chain(hist).collect();
    if let Some(m) = incomplete(&all, f, t) {
        return Err(InputError::Incomplete(m));
    }
    Ok(sample)
}

/// The primary's counts over the `seconds` before `at` (the lookback, §3.5).
pub async fn lookback(
    prom: &PrometheusProvider,
    q: &CountQueries,
    at: i64,
    seconds: i64,
    latency: bool,
) -> Result<VersionSample, InputError> {
    let only_primary = CountQueries {
        canary: String::new(),
        ..q.clone()
    };
    match step_sample(prom, &only_primary, at - seconds, at, latency).await {
        Ok(s) => Ok(s.primary),
        // a primary with no history yet is "no lookback", not an error
        Err(InputError::NoSeries(_)) | Err(InputError::Incomplete(_)) => {
            Ok(VersionSample::default())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(f64, f64)]) -> RawSeries {
        RawSeries {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn increase_handles_resets_and_new_series() {
        let s = [
            (0.0, 10.0),
            (15.0, 20.0),
            (30.0, 5.0),
            (45.0, 8.0),
            (60.0, 100.0),
        ];
        // (15, 45]: 20→5 is a reset (+5), 5→8 (+3)
        assert_eq!(increase(&s, 15.0, 45.0), 8.0);
        // new series: first sample in the window counts from 0
        assert_eq!(increase(&[(20.0, 7.0), (35.0, 9.0)], 15.0, 45.0), 9.0);
        assert_eq!(increase(&s, 60.0, 90.0), 0.0);
    }

    #[test]
    fn counts_per_version_and_histogram() {
        let q = builtin("istio", "ns", "app").unwrap();
        let w = "destination_workload";
        let req = vec![
            series(
                &[(w, "app"), ("response_code", "200")],
                &[(0.0, 0.0), (60.0, 90.0)],
            ),
            series(
                &[(w, "app"), ("response_code", "500")],
                &[(0.0, 0.0), (60.0, 10.0)],
            ),
            series(
                &[(w, "app-primary"), ("response_code", "200")],
                &[(0.0, 50.0), (60.0, 950.0)],
            ),
            series(
                &[(w, "other"), ("response_code", "200")],
                &[(0.0, 0.0), (60.0, 5.0)],
            ),
        ];
        assert_eq!(request_counts(&req, &q, "app", 0.0, 60.0), (100, 10, 2));
        assert_eq!(
            request_counts(&req, &q, "app-primary", 0.0, 60.0),
            (900, 0, 1)
        );
        let hist = vec![
            series(&[(w, "app"), ("le", "100")], &[(0.0, 0.0), (60.0, 40.0)]),
            series(&[(w, "app"), ("le", "250")], &[(0.0, 0.0), (60.0, 39.0)]), // non-monotone
            series(&[(w, "app"), ("le", "+Inf")], &[(0.0, 0.0), (60.0, 100.0)]),
        ];
        let (b, timed, _) = histogram_counts(&hist, &q, "app", 0.0, 60.0);
        assert_eq!(b, vec![(100.0, 40), (250.0, 40)]);
        assert_eq!(timed, 100);
        assert!(builtin("nginx", "ns", "app").unwrap_err().contains("nginx"));
    }

    #[test]
    fn a_scrape_gap_makes_the_step_incomplete() {
        let ok = series(
            &[("a", "1")],
            &[
                (0.0, 0.0),
                (15.0, 1.0),
                (30.0, 2.0),
                (45.0, 3.0),
                (60.0, 4.0),
            ],
        );
        let late = series(&[("a", "2")], &[(0.0, 0.0), (15.0, 1.0), (30.0, 2.0)]);
        assert_eq!(incomplete(std::slice::from_ref(&ok), 0.0, 60.0), None);
        let m = incomplete(&[ok, late], 0.0, 60.0).unwrap();
        assert!(m.starts_with("scrape gap: series {a=\"2\"}"), "{m}");
    }
}
