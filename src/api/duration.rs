//! Go durations (`time.ParseDuration`) as Flagger and Flux write them: `30s`, `1m30s`, `500ms`,
//! `1.5h`. PURE.

use std::time::Duration;

/// Parse a Go-style duration: a sequence of `<number><unit>` with the units `ms`, `s`, `m`, `h`
/// and an optional fraction (`1.5m` is 90 s), as Go's `time.ParseDuration` reads the forms the
/// Flagger and Flux schemas allow (Flux's `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`). `None` when
/// malformed or when the total overflows (a manifest must never be able to crash the controller).
/// Fractions finer than a nanosecond are dropped.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    // nanoseconds; at most u64::MAX (584 years; Go's own limit is 292)
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let mut fraction = "";
        if let Some(after) = rest.strip_prefix('.') {
            let len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if len == 0 {
                return None;
            }
            fraction = &after[..len];
            rest = &after[len..];
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        // digits past the 18th are below a nanosecond of an hour
        let fraction = &fraction[..fraction.len().min(18)];
        let part = if fraction.is_empty() {
            0
        } else {
            unit * fraction.parse::<u128>().ok()? / 10u128.pow(fraction.len() as u32)
        };
        total = total.checked_add(n.checked_mul(unit)?)?.checked_add(part)?;
    }
    Some(Duration::from_nanos(u64::try_from(total).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_go_forms() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("1.m"), None);
        assert_eq!(parse_duration(".5m"), None);
        assert_eq!(parse_duration(""), None);
        // overflow is "malformed", never a panic
        assert_eq!(parse_duration("18446744073709551615s1s"), None);
        assert_eq!(parse_duration("18446744073709551615m"), None);
        assert_eq!(parse_duration("18446744073709551615h"), None);
    }
}
