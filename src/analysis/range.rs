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

use crate::api::ThresholdRange;
use crate::canary::machine::MetricOutcome;

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
/// Messages: `request-success-rate 80.00% < 99%`, `request-duration 612ms > 500ms`,
/// `error-rate 3.20 > 1`.
pub fn judge(
    kind: MetricKind,
    name: &str,
    value: f64,
    range: Option<&ThresholdRange>,
    threshold: Option<f64>,
) -> MetricOutcome {
    match kind {
        MetricKind::Duration => judge_duration(name, value, range, threshold),
        MetricKind::SuccessRate | MetricKind::Custom => {
            let unit = if kind == MetricKind::SuccessRate {
                "%"
            } else {
                ""
            };
            let below = |bound: f64| format!("{name} {value:.2}{unit} < {bound}{unit}");
            let above = |bound: f64| format!("{name} {value:.2}{unit} > {bound}{unit}");
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
    name: &str,
    value: f64,
    range: Option<&ThresholdRange>,
    threshold: Option<f64>,
) -> MetricOutcome {
    let ms = value.trunc();
    let fmt_ms = |v: f64| format!("{}ms", v.trunc());
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
                OutOfRange(80.0, "request-success-rate 80.00% < 99%".into()),
            ),
            (
                SuccessRate,
                "request-success-rate",
                100.0,
                r(None, Some(99.5)),
                None,
                OutOfRange(100.0, "request-success-rate 100.00% > 99.5%".into()),
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
                OutOfRange(98.123, "request-success-rate 98.12% < 99%".into()),
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
                OutOfRange(612.0, "request-duration 612ms > 500ms".into()),
            ),
            (
                Duration,
                "request-duration",
                5.0,
                r(Some(10.0), Some(500.0)),
                None,
                OutOfRange(5.0, "request-duration 5ms < 10ms".into()),
            ),
            (
                Duration,
                "request-duration",
                700.0,
                r(None, Some(500.9)),
                None,
                OutOfRange(700.0, "request-duration 700ms > 500ms".into()),
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
                OutOfRange(501.0, "request-duration 501ms > 500ms".into()),
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
                OutOfRange(1.0, "request-duration 1ms > 0ms".into()),
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
        ];
        for (kind, name, value, range, threshold, want) in cases {
            assert_eq!(
                judge(kind, name, value, range.as_ref(), threshold),
                want,
                "{kind:?} {name} {value} {range:?} {threshold:?}"
            );
        }
    }
}
