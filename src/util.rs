//! Small helpers shared across modules that own no domain type. Imports no other pennant
//! module, so any module may use it.

/// A whole number of milliseconds as Go's `time.Duration.String()`: `0s`, `612ms`, `1.5s`,
/// `1m0.25s`, `2h0m0s`.
pub fn go_duration(ms: f64) -> String {
    let ms = ms.trunc() as i64;
    let u = ms.unsigned_abs();
    let text = if u == 0 {
        "0s".to_string()
    } else if u < 1000 {
        format!("{u}ms")
    } else {
        let (h, m) = (u / 3_600_000, u / 60_000 % 60);
        let (sec, frac) = (u / 1000 % 60, u % 1000);
        let mut secs = sec.to_string();
        if frac > 0 {
            secs += format!(".{frac:03}").trim_end_matches('0');
        }
        match (h, m) {
            (0, 0) => format!("{secs}s"),
            (0, m) => format!("{m}m{secs}s"),
            (h, m) => format!("{h}h{m}m{secs}s"),
        }
    };
    if ms < 0 { format!("-{text}") } else { text }
}

/// An error and its sources, `outer: inner: root`, skipping repeats.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        src = s.source();
    }
    parts.join(": ")
}
