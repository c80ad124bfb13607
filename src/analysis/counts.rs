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
//! - cumulative `le` counts are made monotone after aggregation (a running maximum: negative
//!   per-bucket differences are clipped to 0); `+Inf` is the histogram total, at least the
//!   largest finite bucket;
//! - where the histogram and the request counter are separate metrics of the same requests
//!   (Istio), the `+Inf` bucket must match the counter: [`histogram_mismatch`].
//!
//! Builtin series per provider: [`builtin`] (Istio, NGINX, and the app-exported series
//! Gateway API and `kubernetes` use); [`Versions`] tells a series' version.

use std::collections::BTreeMap;

use prometheus_http_query::response::Data;

use super::PrometheusProvider;
use super::judge::{self, JudgeError, Lookback};
use crate::api::{EventCounts, VersionCounts};

/// One version's raw counts for a step, as read from the provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionSample {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative latency histogram (edge ms, requests ≤ edge), ascending finite edges.
    pub buckets: Vec<(f64, u64)>,
    /// Requests in the histogram (`+Inf`); 0 when there is no histogram.
    pub timed: u64,
    /// Lookback only: per [`POD_SLICE_SECS`] slice, each pod's (errors, requests)
    /// ([`pod_slices`]); empty when the series do not tell pods apart.
    pub pods: Vec<Vec<(u64, u64)>>,
    /// Events of each count signal a MetricTemplate declares, in declared order
    /// ([`super::count_metric`]).
    pub counts: Vec<EventCounts>,
    /// Of `requests`, those from the load-test workloads ([`load_test_requests`]); `None`
    /// when not counted (no load-test workloads, a provider whose series do not name the
    /// source, or the primary).
    pub load_test: Option<u64>,
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
            counts: self.counts.clone(),
            load_test: self.load_test.map(|l| l.min(self.requests)),
        })
    }

    /// This sample as a primary lookback.
    pub fn as_lookback(&self) -> Lookback {
        Lookback {
            requests: self.requests,
            errors: self.errors,
            buckets: self.buckets.clone(),
            timed: self.timed,
            pods: self.pods.clone(),
            counts: self.counts.clone(),
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
    /// The series exist but contradict each other: the histogram's `+Inf` bucket and the
    /// request counter disagree ([`histogram_mismatch`]); the message names the signal.
    Inconsistent(String),
}

/// Slack between a version's `+Inf` bucket and its request counter in a step before they are
/// taken to disagree: the larger of [`TOTAL_SLACK_REQUESTS`] requests and
/// [`TOTAL_SLACK_FRACTION`] of the larger count. Both are increments of separately scraped
/// series, so a request finishing between the two scrapes of a step edge lands in different
/// steps; a few requests, or ~1 % at high rates, is that; more is not.
pub const TOTAL_SLACK_REQUESTS: u64 = 5;
/// See [`TOTAL_SLACK_REQUESTS`].
pub const TOTAL_SLACK_FRACTION: f64 = 0.02;

/// Histogram hygiene (§3.4): the `+Inf` bucket must count the requests the request counter
/// counts. `None` when they agree within the slack, when there is no histogram (`timed` and
/// `buckets` empty: latency not read) or no request; otherwise the message, naming the signal:
/// `latency: the canary's histogram istio_request_duration_milliseconds_bucket counts 512
/// requests (+Inf bucket) but its request counter istio_requests_total 1034 — …`.
///
/// Only meaningful where the two are separate metrics of the same requests
/// ([`CountQueries::check_totals`]).
pub fn histogram_mismatch(v: &VersionSample, who: &str, q: &CountQueries) -> Option<String> {
    if v.timed == 0 && v.buckets.is_empty() {
        return None;
    }
    let (a, b) = (v.timed, v.requests);
    let slack = TOTAL_SLACK_REQUESTS.max((TOTAL_SLACK_FRACTION * a.max(b) as f64).ceil() as u64);
    (a.abs_diff(b) > slack).then(|| {
        format!(
            "latency: the {who}'s histogram {} counts {a} requests (+Inf bucket) but its request counter {} {b} — the histogram and the counter do not describe the same requests",
            q.histogram_metric, q.requests_metric
        )
    })
}

/// Which version of the workload a series belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Canary,
    Primary,
}

impl Version {
    /// `"canary"` or `"primary"`, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Canary => "canary",
            Version::Primary => "primary",
        }
    }
}

/// How a provider's series tell the canary's traffic from the primary's.
#[derive(Clone, Debug, PartialEq)]
pub enum Versions {
    /// Each version has its own exact value of one label (Istio: `destination_workload` =
    /// `<target>` / `<target>-primary`).
    Label {
        name: String,
        canary: String,
        primary: String,
    },
    /// The canary's series carry the label with a non-empty value, the primary's have it empty
    /// or — as Prometheus stores them, since it drops empty labels — not at all (ingress-nginx:
    /// `canary="<ns>-<svc>-<port>"` for traffic the canary Ingress took).
    LabelPresence { name: String },
    /// Versions told by a pod-name label (app-exported series per pod): a version's pods are
    /// `<workload>` followed by `suffixes` `-[0-9a-zA-Z]+` segments (Deployment: 2,
    /// `<workload>-<rs hash>-<id>`; DaemonSet: 1, `<workload>-<id>`), with workload `canary`
    /// (`<target>`) or `primary` (`<target>-primary`); Flagger's HttpObserver regex. The counts
    /// of a version are summed over its pods.
    PodName {
        label: String,
        canary: String,
        primary: String,
        suffixes: usize,
    },
}

/// Whether `pod` is `<workload>` then exactly `suffixes` `-[0-9a-zA-Z]+` segments.
fn pod_of(pod: &str, workload: &str, suffixes: usize) -> bool {
    pod.strip_prefix(workload)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|r| {
            let segs: Vec<&str> = r.split('-').collect();
            segs.len() == suffixes
                && segs
                    .iter()
                    .all(|g| !g.is_empty() && g.chars().all(|c| c.is_ascii_alphanumeric()))
        })
}

impl Versions {
    /// Whether series `labels` belong to version `v`.
    pub fn matches(&self, labels: &BTreeMap<String, String>, v: Version) -> bool {
        match self {
            Versions::Label {
                name,
                canary,
                primary,
            } => {
                let want = match v {
                    Version::Canary => canary,
                    Version::Primary => primary,
                };
                labels.get(name) == Some(want)
            }
            Versions::LabelPresence { name } => {
                let present = labels.get(name).is_some_and(|x| !x.is_empty());
                present == (v == Version::Canary)
            }
            Versions::PodName {
                label,
                canary,
                primary,
                suffixes,
            } => {
                let Some(pod) = labels.get(label) else {
                    return false;
                };
                match v {
                    // a `<target>-primary-<id>` pod (a DaemonSet primary's) has the shape of a
                    // Deployment canary's, but no ReplicaSet hash is "primary" (no vowels)
                    Version::Canary => {
                        pod_of(pod, canary, *suffixes) && !(1..=2).any(|n| pod_of(pod, primary, n))
                    }
                    Version::Primary => pod_of(pod, primary, *suffixes),
                }
            }
        }
    }

    /// The version as messages name it: the label value (`app-primary`), or the rule
    /// (`with canary!=""`, `with kubernetes_pod_name=~"…"`).
    pub fn describe(&self, v: Version) -> String {
        match (self, v) {
            (Versions::Label { canary, .. }, Version::Canary) => canary.clone(),
            (Versions::Label { primary, .. }, Version::Primary) => primary.clone(),
            (Versions::LabelPresence { name }, Version::Canary) => format!("with {name}!=\"\""),
            (Versions::LabelPresence { name }, Version::Primary) => {
                format!("without a {name} label")
            }
            (
                Versions::PodName {
                    label,
                    canary: w,
                    suffixes,
                    ..
                },
                Version::Canary,
            )
            | (
                Versions::PodName {
                    label,
                    primary: w,
                    suffixes,
                    ..
                },
                Version::Primary,
            ) => format!("with {label}=~\"{}\"", pod_promql(w, *suffixes)),
        }
    }
}

/// The builtin count series of one provider for one Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct CountQueries {
    /// Range-selector body of the request counter, e.g. `istio_requests_total{…}`.
    pub requests: String,
    /// Range-selector body of the latency histogram buckets.
    pub histogram: String,
    /// How the series tell the versions apart.
    pub versions: Versions,
    /// Label holding the HTTP status code (`response_code`, `status`).
    pub code_label: String,
    /// Factor from the histogram's unit to ms (1 for ms, 1000 for seconds).
    pub to_ms: f64,
    /// Names for messages: the request and histogram metrics.
    pub requests_metric: String,
    pub histogram_metric: String,
    /// Whether the histogram's `+Inf` must equal the request counter ([`histogram_mismatch`]):
    /// Istio, where both are recorded by the proxy for every request with the same labels.
    /// Not the app-exported series (Gateway API, `kubernetes`): the counter *is* the
    /// histogram's `_count`, equal by construction. Not NGINX: its response-duration histogram
    /// observes only requests with an upstream response, so requests NGINX answers itself
    /// (a 503 without endpoints) are in the counter only.
    pub check_totals: bool,
    /// Label naming the workload that sent a request ([`source_label`]), if the series have one.
    pub source_label: Option<String>,
    /// The load-test workloads whose requests to the canary [`load_test_requests`] counts
    /// ([`CountQueries::with_load_tests`]); empty: none counted.
    pub load_tests: Vec<String>,
}

impl CountQueries {
    /// These queries counting the canary's requests from `workloads` (sources named by the
    /// series' [`CountQueries::source_label`]). No extra query: the request series already
    /// carry the label.
    pub fn with_load_tests(self, workloads: Vec<String>) -> CountQueries {
        CountQueries {
            load_tests: workloads,
            ..self
        }
    }
}

/// The label of `provider`'s builtin request series naming the workload that sent each request:
/// Istio's destination reporter has `source_workload` (`unknown` for a source without a
/// sidecar). NGINX, Gateway API and the app-exported series (`kubernetes`) have none, so the
/// share of load tests is unknown there.
pub fn source_label(provider: &str) -> Option<&'static str> {
    match provider.split(':').next().unwrap_or_default() {
        "istio" | "" => Some("source_workload"),
        _ => None,
    }
}

/// The Canary's target as the count series need it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target<'a> {
    /// `targetRef.name`: the canary workload; the primary is `<name>-primary`.
    pub name: &'a str,
    /// `targetRef.kind`: `Deployment` or `DaemonSet` (pod names differ).
    pub kind: &'a str,
    /// `ingressRef.name` (nginx only).
    pub ingress: Option<&'a str>,
}

/// Pod-name suffix segments: Deployment pods are `<name>-<rs hash>-<id>`, DaemonSet pods
/// `<name>-<id>`.
fn pod_suffixes(kind: &str) -> usize {
    if kind == "DaemonSet" { 1 } else { 2 }
}

/// PromQL regex (inside a string literal) for the pods of `name` ([`pod_of`]): `.` escaped.
fn pod_promql(name: &str, suffixes: usize) -> String {
    format!(
        "{}{}",
        name.replace('.', "\\\\."),
        "-[0-9a-zA-Z]+".repeat(suffixes)
    )
}

/// The builtin series of `provider` for `target` in `ns` (§3.1), after Flagger's observers:
///
/// - `istio` (and no provider): `istio_requests_total` / `istio_request_duration_milliseconds_bucket`
///   (ms), reporter `destination`, versions by `destination_workload`;
/// - `nginx`: `nginx_ingress_controller_requests` / `…_response_duration_seconds_bucket`
///   (s) of `ingressRef`, versions by the presence of the `canary` label;
/// - `gatewayapi*`, `kubernetes`: the app's own `http_request_duration_seconds_count` /
///   `…_bucket` (s) per pod, versions by `kubernetes_pod_name`.
///
/// Errors name the provider when it has no count series, or nginx without an `ingressRef`.
pub fn builtin(provider: &str, ns: &str, target: Target) -> Result<CountQueries, String> {
    let t = target.name;
    match provider.split(':').next().unwrap_or_default() {
        "istio" | "" => {
            let sel = format!(
                "reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"{t}|{t}-primary\""
            );
            Ok(CountQueries {
                requests: format!("istio_requests_total{{{sel}}}"),
                histogram: format!("istio_request_duration_milliseconds_bucket{{{sel}}}"),
                versions: Versions::Label {
                    name: "destination_workload".into(),
                    canary: t.into(),
                    primary: format!("{t}-primary"),
                },
                code_label: "response_code".into(),
                to_ms: 1.0,
                requests_metric: "istio_requests_total".into(),
                histogram_metric: "istio_request_duration_milliseconds_bucket".into(),
                check_totals: true,
                source_label: source_label(provider).map(Into::into),
                load_tests: Vec::new(),
            })
        }
        "nginx" => {
            let ing = target.ingress.filter(|i| !i.is_empty()).ok_or_else(|| {
                "sequential judge: provider \"nginx\" needs spec.ingressRef (the Ingress whose series to read)"
                    .to_string()
            })?;
            let sel = format!("namespace=\"{ns}\",ingress=\"{ing}\"");
            Ok(CountQueries {
                requests: format!("nginx_ingress_controller_requests{{{sel}}}"),
                histogram: format!(
                    "nginx_ingress_controller_response_duration_seconds_bucket{{{sel}}}"
                ),
                versions: Versions::LabelPresence {
                    name: "canary".into(),
                },
                code_label: "status".into(),
                to_ms: 1000.0,
                requests_metric: "nginx_ingress_controller_requests".into(),
                histogram_metric: "nginx_ingress_controller_response_duration_seconds_bucket"
                    .into(),
                check_totals: false,
                source_label: source_label(provider).map(Into::into),
                load_tests: Vec::new(),
            })
        }
        "gatewayapi" | "kubernetes" => {
            let suffixes = pod_suffixes(target.kind);
            let primary = format!("{t}-primary");
            let promql = format!(
                "{}|{}",
                pod_promql(t, suffixes),
                pod_promql(&primary, suffixes)
            );
            // Prometheus anchors the regex
            let sel = format!("kubernetes_namespace=\"{ns}\",kubernetes_pod_name=~\"{promql}\"");
            Ok(CountQueries {
                requests: format!("http_request_duration_seconds_count{{{sel}}}"),
                histogram: format!("http_request_duration_seconds_bucket{{{sel}}}"),
                versions: Versions::PodName {
                    label: "kubernetes_pod_name".into(),
                    canary: t.into(),
                    primary,
                    suffixes,
                },
                code_label: "status".into(),
                to_ms: 1000.0,
                requests_metric: "http_request_duration_seconds_count".into(),
                histogram_metric: "http_request_duration_seconds_bucket".into(),
                check_totals: false,
                source_label: source_label(provider).map(Into::into),
                load_tests: Vec::new(),
            })
        }
        other => Err(format!(
            "sequential judge: provider {other:?} has no builtin count series yet (istio, nginx, gatewayapi, kubernetes)"
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
    version: Version,
    from: f64,
    to: f64,
) -> (u64, u64, usize) {
    let (mut n, mut e, mut seen) = (0.0, 0.0, 0);
    for s in series
        .iter()
        .filter(|s| q.versions.matches(&s.labels, version))
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

/// Requests of `version` over `(from, to]` sent by the load-test workloads: the series whose
/// [`CountQueries::source_label`] is one of [`CountQueries::load_tests`], summed after
/// differencing as [`request_counts`] does. `None` when the series name no source or no
/// load-test workload is given (not counted, as opposed to counted and 0).
pub fn load_test_requests(
    series: &[RawSeries],
    q: &CountQueries,
    version: Version,
    from: f64,
    to: f64,
) -> Option<u64> {
    let label = q.source_label.as_ref()?;
    if q.load_tests.is_empty() {
        return None;
    }
    let n: f64 = series
        .iter()
        .filter(|s| q.versions.matches(&s.labels, version))
        .filter(|s| {
            s.labels
                .get(label)
                .is_some_and(|w| q.load_tests.contains(w))
        })
        .map(|s| increase(&s.samples, from, to))
        .sum();
    Some(n.round() as u64)
}

/// Length of the lookback's slices for [`pod_slices`], seconds.
pub const POD_SLICE_SECS: f64 = 60.0;

/// Labels that name a series' pod when the versions are not told by pod name (Prometheus'
/// usual Kubernetes relabelling: `pod`, or `kubernetes_pod_name`).
pub const POD_LABELS: [&str; 2] = ["pod", "kubernetes_pod_name"];

/// Per `slice`-second slice of `(from, to]`, each pod's (errors, requests) of `version`, from
/// the request series (reset-aware [`increase`] per series and slice, summed per pod, rounded);
/// pods with no request in a slice are left out. The pod is the [`Versions::PodName`] label, or
/// the first of [`POD_LABELS`] a series has; series without one are left out, and with fewer
/// than two pods the answer is empty. For the dispersion estimate (`judge::pod_dispersion`).
pub fn pod_slices(
    series: &[RawSeries],
    q: &CountQueries,
    version: Version,
    from: f64,
    to: f64,
    slice: f64,
) -> Vec<Vec<(u64, u64)>> {
    let pod_label = |labels: &BTreeMap<String, String>| -> Option<String> {
        match &q.versions {
            Versions::PodName { label, .. } => labels.get(label).cloned(),
            _ => POD_LABELS.iter().find_map(|l| labels.get(*l).cloned()),
        }
    };
    let slices = (((to - from) / slice).ceil().max(0.0) as usize).min(10_000);
    let mut cells: Vec<BTreeMap<String, (f64, f64)>> = vec![BTreeMap::new(); slices];
    for s in series
        .iter()
        .filter(|s| q.versions.matches(&s.labels, version))
    {
        let Some(pod) = pod_label(&s.labels) else {
            continue;
        };
        let bad = s
            .labels
            .get(&q.code_label)
            .is_some_and(|c| c.starts_with('5'));
        for (i, cell) in cells.iter_mut().enumerate() {
            let a = from + i as f64 * slice;
            let inc = increase(&s.samples, a, (a + slice).min(to));
            let c = cell.entry(pod.clone()).or_default();
            c.1 += inc;
            if bad {
                c.0 += inc;
            }
        }
    }
    let pods: std::collections::BTreeSet<&String> = cells.iter().flat_map(|c| c.keys()).collect();
    if pods.len() < 2 {
        return Vec::new();
    }
    cells
        .into_iter()
        .map(|c| {
            c.into_values()
                .map(|(e, n)| (e.round() as u64, n.round() as u64))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .collect()
}

/// Sum the histogram series of one version over `(from, to]`: cumulative buckets (edge ms,
/// count), made monotone, and the `+Inf` total; plus the number of series seen.
pub fn histogram_counts(
    series: &[RawSeries],
    q: &CountQueries,
    version: Version,
    from: f64,
    to: f64,
) -> (Vec<(f64, u64)>, u64, usize) {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // key: f64 bits of edge
    let mut inf = 0.0;
    let mut seen = 0;
    for s in series
        .iter()
        .filter(|s| q.versions.matches(&s.labels, version))
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
/// [`InputError::Incomplete`] on a scrape gap, [`InputError::Inconsistent`] when a version's
/// histogram and request counter disagree ([`checked`]).
pub async fn step_sample(
    prom: &PrometheusProvider,
    q: &CountQueries,
    from: i64,
    to: i64,
    latency: bool,
) -> Result<StepSample, InputError> {
    let s = read(
        prom,
        q,
        from,
        to,
        latency,
        &[Version::Canary, Version::Primary],
    )
    .await?;
    checked(s, q)
}

/// `sample` unless a version's `+Inf` bucket and request counter disagree where they must
/// agree ([`CountQueries::check_totals`], [`histogram_mismatch`]); the canary is checked first.
pub fn checked(sample: StepSample, q: &CountQueries) -> Result<StepSample, InputError> {
    if q.check_totals {
        for (v, who) in [(&sample.canary, "canary"), (&sample.primary, "primary")] {
            if let Some(m) = histogram_mismatch(v, who, q) {
                return Err(InputError::Inconsistent(m));
            }
        }
    }
    Ok(sample)
}

/// Counts of `versions` (the others stay default) for `(from, to]`; errors as [`step_sample`].
async fn read(
    prom: &PrometheusProvider,
    q: &CountQueries,
    from: i64,
    to: i64,
    latency: bool,
    versions: &[Version],
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
    for &v in versions {
        let out = match v {
            Version::Canary => &mut sample.canary,
            Version::Primary => &mut sample.primary,
        };
        let (who, name) = (v.as_str(), q.versions.describe(v));
        let (n, e, seen) = request_counts(&req, q, v, f, t);
        if seen == 0 {
            return Err(InputError::NoSeries(format!(
                "errors: no {} series for the {who} {name}",
                q.requests_metric
            )));
        }
        out.requests = n;
        out.errors = e;
        if v == Version::Canary {
            out.load_test = load_test_requests(&req, q, v, f, t);
        }
        if latency {
            let (buckets, timed, seen) = histogram_counts(&hist, q, v, f, t);
            if seen == 0 {
                return Err(InputError::NoSeries(format!(
                    "latency: no {} series for the {who} {name}",
                    q.histogram_metric
                )));
            }
            out.buckets = buckets;
            out.timed = timed;
        }
    }
    if versions == [Version::Primary] {
        // the lookback: the primary's pods, for the dispersion estimate
        sample.primary.pods = pod_slices(&req, q, Version::Primary, f, t, POD_SLICE_SECS);
    }
    let all: Vec<RawSeries> = req
        .into_iter()
        .chain(hist)
        .filter(|s| versions.iter().any(|&v| q.versions.matches(&s.labels, v)))
        .collect();
    if let Some(m) = incomplete(&all, f, t) {
        return Err(InputError::Incomplete(m));
    }
    Ok(sample)
}

/// The primary's counts over the `seconds` before `at` (the lookback, §3.5): only the
/// primary's series are read, so a canary without history does not void it. No series or a
/// scrape gap give an empty sample (a first release has no lookback).
pub async fn lookback(
    prom: &PrometheusProvider,
    q: &CountQueries,
    at: i64,
    seconds: i64,
    latency: bool,
) -> Result<VersionSample, InputError> {
    match read(prom, q, at - seconds, at, latency, &[Version::Primary]).await {
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
    fn pod_slices_split_the_lookback_per_pod_and_minute() {
        let q = builtin("kubernetes", "ns", deploy("app")).unwrap();
        let l = "kubernetes_pod_name";
        let req = vec![
            series(
                &[(l, "app-primary-6c7d8e9f0-abcde"), ("status", "200")],
                &[(0.0, 0.0), (60.0, 100.0), (120.0, 190.0)],
            ),
            series(
                &[(l, "app-primary-6c7d8e9f0-abcde"), ("status", "500")],
                &[(0.0, 0.0), (60.0, 2.0), (120.0, 2.0)],
            ),
            // a reset in the second minute: 5 → 3 counts 3
            series(
                &[(l, "app-primary-6c7d8e9f0-fghij"), ("status", "200")],
                &[(0.0, 0.0), (60.0, 5.0), (120.0, 3.0)],
            ),
            // the canary's pods are not the primary's
            series(
                &[(l, "app-5d8f7c9b4-x2k9q"), ("status", "500")],
                &[(0.0, 0.0), (60.0, 50.0)],
            ),
        ];
        let s = pod_slices(&req, &q, Version::Primary, 0.0, 120.0, 60.0);
        assert_eq!(s, vec![vec![(2, 102), (0, 5)], vec![(0, 90), (0, 3)]]);
        // one pod only: nothing to compare
        assert!(pod_slices(&req[..2], &q, Version::Primary, 0.0, 120.0, 60.0).is_empty());
        // Istio series with a `pod` label
        let q = builtin("istio", "ns", deploy("app")).unwrap();
        let w = "destination_workload";
        let pod = |p: &str, n: f64| {
            series(
                &[(w, "app-primary"), ("pod", p), ("response_code", "200")],
                &[(0.0, 0.0), (60.0, n)],
            )
        };
        let s = pod_slices(
            &[pod("a", 7.0), pod("b", 9.0)],
            &q,
            Version::Primary,
            0.0,
            60.0,
            60.0,
        );
        assert_eq!(s, vec![vec![(0, 7), (0, 9)]]);
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
        let q = builtin("istio", "ns", deploy("app")).unwrap();
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
        assert_eq!(
            request_counts(&req, &q, Version::Canary, 0.0, 60.0),
            (100, 10, 2)
        );
        assert_eq!(
            request_counts(&req, &q, Version::Primary, 0.0, 60.0),
            (900, 0, 1)
        );
        let hist = vec![
            series(&[(w, "app"), ("le", "100")], &[(0.0, 0.0), (60.0, 40.0)]),
            series(&[(w, "app"), ("le", "250")], &[(0.0, 0.0), (60.0, 39.0)]), // non-monotone
            series(&[(w, "app"), ("le", "+Inf")], &[(0.0, 0.0), (60.0, 100.0)]),
        ];
        let (b, timed, _) = histogram_counts(&hist, &q, Version::Canary, 0.0, 60.0);
        assert_eq!(b, vec![(100.0, 40), (250.0, 40)]);
        assert_eq!(timed, 100);
        assert_eq!(q.versions.describe(Version::Primary), "app-primary");
        let e = builtin("contour", "ns", deploy("app")).unwrap_err();
        assert!(e.contains("\"contour\""), "{e}");
    }

    fn deploy(name: &str) -> Target<'_> {
        Target {
            name,
            kind: "Deployment",
            ingress: None,
        }
    }

    #[test]
    fn nginx_tells_versions_by_the_canary_label_absent_for_the_primary() {
        // nginx needs the Ingress
        let e = builtin("nginx", "ns", deploy("app")).unwrap_err();
        assert!(e.contains("ingressRef"), "{e}");
        let q = builtin(
            "nginx",
            "ns",
            Target {
                ingress: Some("app"),
                ..deploy("app")
            },
        )
        .unwrap();
        assert_eq!(
            q.requests,
            "nginx_ingress_controller_requests{namespace=\"ns\",ingress=\"app\"}"
        );
        assert_eq!(q.to_ms, 1000.0);
        let c = ("canary", "ns-app-canary-9898");
        let req = vec![
            series(&[c, ("status", "200")], &[(0.0, 0.0), (60.0, 95.0)]),
            series(&[c, ("status", "500")], &[(0.0, 0.0), (60.0, 5.0)]),
            // the primary's series: Prometheus dropped the empty canary label
            series(&[("status", "200")], &[(0.0, 100.0), (60.0, 1000.0)]),
            series(&[("status", "503")], &[(0.0, 0.0), (60.0, 100.0)]),
            // an explicitly empty label is the primary too
            series(
                &[("canary", ""), ("status", "200")],
                &[(0.0, 0.0), (60.0, 10.0)],
            ),
        ];
        assert_eq!(
            request_counts(&req, &q, Version::Canary, 0.0, 60.0),
            (100, 5, 2)
        );
        assert_eq!(
            request_counts(&req, &q, Version::Primary, 0.0, 60.0),
            (1010, 100, 3)
        );
        // seconds → ms
        let hist = vec![
            series(&[c, ("le", "0.1")], &[(0.0, 0.0), (60.0, 80.0)]),
            series(&[c, ("le", "+Inf")], &[(0.0, 0.0), (60.0, 100.0)]),
            series(&[("le", "0.1")], &[(0.0, 0.0), (60.0, 900.0)]),
            series(&[("le", "+Inf")], &[(0.0, 0.0), (60.0, 1000.0)]),
        ];
        assert_eq!(
            histogram_counts(&hist, &q, Version::Canary, 0.0, 60.0),
            (vec![(100.0, 80)], 100, 2)
        );
        assert_eq!(
            histogram_counts(&hist, &q, Version::Primary, 0.0, 60.0),
            (vec![(100.0, 900)], 1000, 2)
        );
        assert_eq!(
            q.versions.describe(Version::Primary),
            "without a canary label"
        );
    }

    #[test]
    fn app_series_tell_versions_by_pod_name_and_sum_over_pods() {
        for provider in ["gatewayapi:v1", "kubernetes"] {
            let q = builtin(provider, "ns", deploy("app")).unwrap();
            assert_eq!(q.requests_metric, "http_request_duration_seconds_count");
            assert!(
                q.requests.contains("kubernetes_namespace=\"ns\""),
                "{}",
                q.requests
            );
            let pod = |p: &str, code: &str, n: f64| {
                series(
                    &[("kubernetes_pod_name", p), ("status", code)],
                    &[(0.0, 0.0), (60.0, n)],
                )
            };
            let req = vec![
                pod("app-5d8f7c9b4-x2k9q", "200", 40.0),
                pod("app-5d8f7c9b4-7hj2m", "200", 50.0),
                pod("app-5d8f7c9b4-7hj2m", "500", 10.0),
                // primary pods are not the canary's, though they start with "app-"
                pod("app-primary-6c7d8e9f0-abcde", "200", 500.0),
                pod("app-primary-6c7d8e9f0-fghij", "200", 400.0),
                // another workload's pods are neither
                pod("app-other-6c7d8e9f0-zzzzz", "200", 7.0),
                pod("app-primary-x2k9q", "200", 3.0),
            ];
            assert_eq!(
                request_counts(&req, &q, Version::Canary, 0.0, 60.0),
                (100, 10, 3)
            );
            assert_eq!(
                request_counts(&req, &q, Version::Primary, 0.0, 60.0),
                (900, 0, 2)
            );
        }
    }

    #[test]
    fn daemon_set_pods_have_one_suffix() {
        let q = builtin(
            "kubernetes",
            "ns",
            Target {
                kind: "DaemonSet",
                ..deploy("app")
            },
        )
        .unwrap();
        let pod = |p: &str, n: f64| {
            series(
                &[("kubernetes_pod_name", p), ("status", "200")],
                &[(0.0, 0.0), (60.0, n)],
            )
        };
        let req = vec![
            pod("app-x2k9q", 10.0),
            pod("app-7hj2m", 20.0),
            pod("app-primary-abcde", 300.0),
            // a Deployment-shaped pod is not this DaemonSet's
            pod("app-5d8f7c9b4-x2k9q", 5.0),
        ];
        assert_eq!(
            request_counts(&req, &q, Version::Canary, 0.0, 60.0),
            (30, 0, 2)
        );
        assert_eq!(
            request_counts(&req, &q, Version::Primary, 0.0, 60.0),
            (300, 0, 1)
        );
        assert!(
            q.requests
                .ends_with("kubernetes_pod_name=~\"app-[0-9a-zA-Z]+|app-primary-[0-9a-zA-Z]+\"}"),
            "{}",
            q.requests
        );
        assert_eq!(
            q.versions.describe(Version::Canary),
            "with kubernetes_pod_name=~\"app-[0-9a-zA-Z]+\""
        );
    }

    #[test]
    fn pod_name_regexes_escape_the_target() {
        let q = builtin("kubernetes", "ns", deploy("a.b")).unwrap();
        assert!(
            q.requests.contains(
                "kubernetes_pod_name=~\"a\\\\.b-[0-9a-zA-Z]+-[0-9a-zA-Z]+|a\\\\.b-primary-"
            ),
            "{}",
            q.requests
        );
        let l = |p: &str| BTreeMap::from([("kubernetes_pod_name".to_string(), p.to_string())]);
        assert!(q.versions.matches(&l("a.b-1-2"), Version::Canary));
        assert!(!q.versions.matches(&l("axb-1-2"), Version::Canary));
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

    #[test]
    fn the_inf_bucket_must_match_the_request_counter_where_they_are_separate_metrics() {
        let istio = builtin("istio", "ns", deploy("app")).unwrap();
        let v = |requests, timed| VersionSample {
            requests,
            errors: 0,
            buckets: vec![(100.0, timed / 2)],
            timed,
            pods: Vec::new(),
            counts: Vec::new(),
            load_test: None,
        };
        assert_eq!(
            histogram_mismatch(&v(1034, 512), "canary", &istio).as_deref(),
            Some(
                "latency: the canary's histogram istio_request_duration_milliseconds_bucket counts 512 requests (+Inf bucket) but its request counter istio_requests_total 1034 — the histogram and the counter do not describe the same requests"
            )
        );
        // within max(5, 2 %): scrape skew between the two series
        assert_eq!(histogram_mismatch(&v(1015, 1000), "canary", &istio), None);
        assert_eq!(histogram_mismatch(&v(8, 3), "canary", &istio), None);
        assert!(histogram_mismatch(&v(1025, 1000), "canary", &istio).is_some());
        assert!(histogram_mismatch(&v(8, 20), "canary", &istio).is_some());
        // no histogram read (latency off): nothing to compare
        let off = VersionSample {
            requests: 100,
            ..Default::default()
        };
        assert_eq!(histogram_mismatch(&off, "canary", &istio), None);
        // the primary is checked too
        let step = StepSample {
            canary: v(100, 100),
            primary: v(900, 300),
        };
        let Err(InputError::Inconsistent(m)) = checked(step.clone(), &istio) else {
            panic!()
        };
        assert!(m.starts_with("latency: the primary's histogram"), "{m}");
        // app metrics: the counter is the histogram's _count; NGINX: the histogram skips
        // requests without an upstream — not checked
        for provider in ["kubernetes", "gatewayapi"] {
            let q = builtin(provider, "ns", deploy("app")).unwrap();
            assert!(!q.check_totals);
            assert_eq!(checked(step.clone(), &q), Ok(step.clone()));
        }
        let nginx = Target {
            ingress: Some("app"),
            ..deploy("app")
        };
        assert!(!builtin("nginx", "ns", nginx).unwrap().check_totals);
    }
    #[test]
    fn load_tests_are_the_canary_requests_whose_source_is_a_load_test_workload() {
        let q = builtin("istio", "ns", deploy("app"))
            .unwrap()
            .with_load_tests(vec!["flagger-loadtester".into()]);
        let row = |src: &str, w: &str, code: &str, n: f64| {
            series(
                &[
                    ("source_workload", src),
                    ("destination_workload", w),
                    ("response_code", code),
                ],
                &[(0.0, 10.0), (60.0, 10.0 + n)],
            )
        };
        let req = vec![
            row("flagger-loadtester", "app", "200", 30.0),
            row("flagger-loadtester", "app", "500", 2.0),
            row("frontend", "app", "200", 68.0),
            // the load tester's requests to the primary are not the canary's
            row("flagger-loadtester", "app-primary", "200", 500.0),
            // a source without a sidecar is `unknown`, not a load test
            row("unknown", "app", "200", 7.0),
        ];
        assert_eq!(
            request_counts(&req, &q, Version::Canary, 0.0, 60.0),
            (107, 2, 4)
        );
        assert_eq!(
            load_test_requests(&req, &q, Version::Canary, 0.0, 60.0),
            Some(32)
        );
        // no load-test workload: not counted (None), which is not 0
        let none = builtin("istio", "ns", deploy("app")).unwrap();
        assert_eq!(
            load_test_requests(&req, &none, Version::Canary, 0.0, 60.0),
            None
        );
        let other = q.clone().with_load_tests(vec!["k6".into()]);
        assert_eq!(
            load_test_requests(&req, &other, Version::Canary, 0.0, 60.0),
            Some(0)
        );
        // series that do not name the source: unknown, whatever the workloads
        for provider in ["kubernetes", "gatewayapi:v1"] {
            let q = builtin(provider, "ns", deploy("app"))
                .unwrap()
                .with_load_tests(vec!["flagger-loadtester".into()]);
            assert_eq!(q.source_label, None);
            assert_eq!(
                load_test_requests(&req, &q, Version::Canary, 0.0, 60.0),
                None
            );
        }
        assert_eq!(source_label("nginx"), None);
        assert_eq!(source_label(""), Some("source_workload"));
        // the judge keeps the count, never above the requests
        let v = VersionSample {
            requests: 20,
            load_test: Some(25),
            ..Default::default()
        };
        assert_eq!(v.counts(&[], "canary").unwrap().load_test, Some(20));
    }
}
