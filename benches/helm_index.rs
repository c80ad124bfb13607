//! Helm repository index at scale (Flux #303: a 100 MB `index.yaml` cost source-controller
//! gigabytes): writes an index of about `--mb` MB (default 100) in `helm repo index`'s shape
//! (tests/support/big_index.rs), then parses it with `pennant::source::helm_index::parse_index`
//! and prints the size, the versions kept, the parse time and the process's peak RSS (VmHWM)
//! before and after the parse. Prints figures; asserts only that every version was kept.
//!
//! Run: `e2e/bench-helm-index [--mb N]` (release build), or `BENCH_PROFILE=dev
//! e2e/bench-helm-index` for a quick unoptimised run.

#[path = "../tests/support/big_index.rs"]
mod big_index;

use std::time::Instant;

use pennant::source::helm_index::{IndexLimits, parse_index};

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (CI) a 2 MB index only
    // checks that the benchmark still runs.
    let full = args.iter().any(|a| a == "--bench");
    let mb: u64 = args
        .iter()
        .position(|a| a == "--mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100 } else { 2 });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.yaml");
    // One entry is ~1040 bytes; 50 charts.
    let charts = 50;
    let versions = ((mb << 20) / 1040 / charts as u64).max(1) as usize;
    let t = Instant::now();
    let size = big_index::write_big_index(&path, charts, versions);
    println!(
        "wrote index.yaml: {:.1} MB, {charts} charts x {versions} versions in {:.1}s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let before = peak_rss_kib();
    let t = Instant::now();
    let index = parse_index(
        &path,
        &IndexLimits {
            max_size: size + 1,
            ..IndexLimits::default()
        },
    )
    .expect("parse");
    let secs = t.elapsed().as_secs_f64();
    let after = peak_rss_kib();
    assert_eq!(index.versions(), charts * versions);
    println!(
        "parsed: {} charts, {} versions kept in {secs:.2}s ({:.0} MB/s)",
        index.charts(),
        index.versions(),
        size as f64 / 1e6 / secs
    );
    println!(
        "peak RSS: {:.1} MiB before the parse, {:.1} MiB after (index file {:.1} MiB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        size as f64 / 1048576.0
    );
}
