//! The range judgement of one metric value, Flagger's rules (`scheduler_metrics.go`). Pure.
//!
//! | Kind | Unit | `thresholdRange` | legacy `threshold` (no range) |
//! |---|---|---|---|
//! | `request-success-rate` | percent 0-100 | fail if `< min` or `> max` | fail if `value < threshold` |
//! | `request-duration` | ms, truncated to an integer | fail if `< min` or `> max` (bounds in ms, truncated) | fail if `value > threshold` |
//! | any other metric | as the query returns | fail if `< min` or `> max` | fail if `value > threshold` |
//!
//! A missing legacy `threshold` counts as 0, as in Flagger, so with neither a range nor a
//! threshold `request-success-rate` never fails and every other metric fails as soon as its value
//! is above 0 (Flagger quirk §2.16-5, kept for compatibility). An empty `thresholdRange: {}`
//! never fails.

use crate::analysis::MetricOutcome;
use crate::api::ThresholdRange;

/// How a metric value is judged and worded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Builtin `request-success-rate`: percent.
    SuccessRate,
    /// Builtin `request-duration`: milliseconds.
    Duration,
    /// Inline `query` or MetricTemplate metric.
    Custom,
}

/// Judge `value` for the metric `name`. Returns `Pass` or `OutOfRange`, carrying the value as
/// judged (percent; whole milliseconds for `Duration`; raw otherwise).
///
/// Messages, word for word Flagger's (`Halt <canary>.<ns> advancement <message>`): `success rate
/// 80.00% < 99%`, `request duration 612ms > 1.5s` (Go's durations), `error-rate 3.20 > 1` (bounds
/// as Go's `%v`, e.g. `1e+06`).
pub fn judge(
    kind: MetricKind,
    name: &str,
    value: f64,
    range: Option<&ThresholdRange>,
    threshold: Option<f64>,
) -> MetricOutcome {
    match kind {
        MetricKind::Duration => judge_duration(value, range, threshold),
        MetricKind::SuccessRate | MetricKind::Custom => {
            let (name, unit) = if kind == MetricKind::SuccessRate {
                ("success rate", "%")
            } else {
                (name, "")
            };
            let word = |op: &str, bound: f64| {
                format!("{name} {value:.2}{unit} {op} {}{unit}", go_float(bound))
            };
            let below = |bound: f64| word("<", bound);
            let above = |bound: f64| word(">", bound);
            if let Some(r) = range {
                if let Some(min) = r.min
                    && value < min
                {
                    return MetricOutcome::OutOfRange(value, below(min));
                }
                if let Some(max) = r.max
                    && value > max
                {
                    return MetricOutcome::OutOfRange(value, above(max));
                }
                return MetricOutcome::Pass(value);
            }
            let t = threshold.unwrap_or(0.0);
            match kind {
                MetricKind::SuccessRate if value < t => MetricOutcome::OutOfRange(value, below(t)),
                MetricKind::Custom if value > t => MetricOutcome::OutOfRange(value, above(t)),
                _ => MetricOutcome::Pass(value),
            }
        }
    }
}

/// Flagger converts the query result and the bounds with `time.Duration(x) * time.Millisecond`,
/// which truncates both to whole milliseconds.
fn judge_duration(
    value: f64,
    range: Option<&ThresholdRange>,
    threshold: Option<f64>,
) -> MetricOutcome {
    let ms = value.trunc();
    let name = "request duration";
    let fmt_ms = crate::util::go_duration;
    if let Some(r) = range {
        if let Some(min) = r.min.map(f64::trunc)
            && ms < min
        {
            return MetricOutcome::OutOfRange(
                ms,
                format!("{name} {} < {}", fmt_ms(ms), fmt_ms(min)),
            );
        }
        if let Some(max) = r.max.map(f64::trunc)
            && ms > max
        {
            return MetricOutcome::OutOfRange(
                ms,
                format!("{name} {} > {}", fmt_ms(ms), fmt_ms(max)),
            );
        }
        return MetricOutcome::Pass(ms);
    }
    let t = threshold.unwrap_or(0.0).trunc();
    if ms > t {
        return MetricOutcome::OutOfRange(ms, format!("{name} {} > {}", fmt_ms(ms), fmt_ms(t)));
    }
    MetricOutcome::Pass(ms)
}

/// A float as Go's `%v`: the shortest decimal that reads back, in exponent form (`1e+06`,
/// `1.5e-05`) when the exponent is below -4 or at least 6.
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return match f {
            f if f.is_nan() => "NaN".into(),
            f if f > 0.0 => "+Inf".into(),
            _ => "-Inf".into(),
        };
    }
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricKind::*;
    use MetricOutcome::{OutOfRange, Pass};

    fn r(min: Option<f64>, max: Option<f64>) -> Option<ThresholdRange> {
        Some(ThresholdRange { min, max })
    }

    /// kind, name, value, thresholdRange, threshold, expected outcome
    type Case = (
        MetricKind,
        &'static str,
        f64,
        Option<ThresholdRange>,
        Option<f64>,
        MetricOutcome,
    );

    #[test]
    fn table() {
        let none = None;
        let cases: Vec<Case> = vec![
            // success rate, range
            (
                SuccessRate,
                "request-success-rate",
                99.5,
                r(Some(99.0), None),
                None,
                Pass(99.5),
            ),
            (
                SuccessRate,
                "request-success-rate",
                99.0,
                r(Some(99.0), None),
                None,
                Pass(99.0),
            ),
            (
                SuccessRate,
                "request-success-rate",
                80.0,
                r(Some(99.0), None),
                None,
                OutOfRange(80.0, "success rate 80.00% < 99%".into()),
            ),
            (
                SuccessRate,
                "request-success-rate",
                100.0,
                r(None, Some(99.5)),
                None,
                OutOfRange(100.0, "success rate 100.00% > 99.5%".into()),
            ),
            // range wins over the legacy threshold
            (
                SuccessRate,
                "request-success-rate",
                50.0,
                r(None, None),
                Some(99.0),
                Pass(50.0),
            ),
            // success rate, legacy
            (
                SuccessRate,
                "request-success-rate",
                98.123,
                none.clone(),
                Some(99.0),
                OutOfRange(98.123, "success rate 98.12% < 99%".into()),
            ),
            (
                SuccessRate,
                "request-success-rate",
                99.0,
                none.clone(),
                Some(99.0),
                Pass(99.0),
            ),
            // quirk §2.16-5: no range, no threshold: success rate never fails
            (
                SuccessRate,
                "request-success-rate",
                0.0,
                none.clone(),
                None,
                Pass(0.0),
            ),
            // duration: truncated ms, bounds in ms
            (
                Duration,
                "request-duration",
                499.9,
                r(None, Some(500.0)),
                None,
                Pass(499.0),
            ),
            (
                Duration,
                "request-duration",
                500.7,
                r(None, Some(500.0)),
                None,
                Pass(500.0),
            ),
            (
                Duration,
                "request-duration",
                612.4,
                r(None, Some(500.0)),
                None,
                OutOfRange(612.0, "request duration 612ms > 500ms".into()),
            ),
            (
                Duration,
                "request-duration",
                5.0,
                r(Some(10.0), Some(500.0)),
                None,
                OutOfRange(5.0, "request duration 5ms < 10ms".into()),
            ),
            (
                Duration,
                "request-duration",
                700.0,
                r(None, Some(500.9)),
                None,
                OutOfRange(700.0, "request duration 700ms > 500ms".into()),
            ),
            // duration, legacy
            (
                Duration,
                "request-duration",
                400.0,
                none.clone(),
                Some(500.0),
                Pass(400.0),
            ),
            (
                Duration,
                "request-duration",
                501.0,
                none.clone(),
                Some(500.0),
                OutOfRange(501.0, "request duration 501ms > 500ms".into()),
            ),
            // quirk §2.16-5: no range, no threshold: fails above 0 (after truncation)
            (
                Duration,
                "request-duration",
                0.9,
                none.clone(),
                None,
                Pass(0.0),
            ),
            (
                Duration,
                "request-duration",
                1.0,
                none.clone(),
                None,
                OutOfRange(1.0, "request duration 1ms > 0s".into()),
            ),
            // custom
            (
                Custom,
                "error-rate",
                0.5,
                r(None, Some(1.0)),
                None,
                Pass(0.5),
            ),
            (
                Custom,
                "error-rate",
                3.2,
                r(None, Some(1.0)),
                None,
                OutOfRange(3.2, "error-rate 3.20 > 1".into()),
            ),
            (
                Custom,
                "rps",
                3.0,
                r(Some(10.0), None),
                None,
                OutOfRange(3.0, "rps 3.00 < 10".into()),
            ),
            (
                Custom,
                "error-rate",
                1.0,
                none.clone(),
                Some(1.0),
                Pass(1.0),
            ),
            (
                Custom,
                "error-rate",
                1.5,
                none.clone(),
                Some(1.0),
                OutOfRange(1.5, "error-rate 1.50 > 1".into()),
            ),
            (Custom, "error-rate", 0.0, none.clone(), None, Pass(0.0)),
            (
                Custom,
                "error-rate",
                0.01,
                none.clone(),
                None,
                OutOfRange(0.01, "error-rate 0.01 > 0".into()),
            ),
            (Custom, "error-rate", 5.0, r(None, None), None, Pass(5.0)),
            // Go's formatting of durations and `%v` bounds (scheduler_metrics.go)
            (
                Duration,
                "request-duration",
                1500.0,
                r(None, Some(1000.0)),
                None,
                OutOfRange(1500.0, "request duration 1.5s > 1s".into()),
            ),
            (
                Duration,
                "request-duration",
                61250.0,
                none.clone(),
                Some(60000.0),
                OutOfRange(61250.0, "request duration 1m1.25s > 1m0s".into()),
            ),
            (
                Custom,
                "bytes",
                2e6,
                r(None, Some(1e6)),
                None,
                OutOfRange(2e6, "bytes 2000000.00 > 1e+06".into()),
            ),
            (
                Custom,
                "ratio",
                0.0,
                r(Some(0.00001), None),
                None,
                OutOfRange(0.0, "ratio 0.00 < 1e-05".into()),
            ),
        ];
        for (kind, name, value, range, threshold, want) in cases {
            assert_eq!(
                judge(kind, name, value, range.as_ref(), threshold),
                want,
                "{kind:?} {name} {value} {range:?} {threshold:?}"
            );
        }
    }

    #[test]
    fn go_formatting() {
        for (ms, want) in [
            (0.0, "0s"),
            (1.0, "1ms"),
            (999.0, "999ms"),
            (1000.0, "1s"),
            (1010.0, "1.01s"),
            (60000.0, "1m0s"),
            (3_600_000.0, "1h0m0s"),
            (3_723_400.0, "1h2m3.4s"),
        ] {
            assert_eq!(crate::util::go_duration(ms), want);
        }
        for (f, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (99.5, "99.5"),
            (0.0001, "0.0001"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (-1e21, "-1e+21"),
            (1.5e-7, "1.5e-07"),
        ] {
            assert_eq!(go_float(f), want);
        }
    }
}
