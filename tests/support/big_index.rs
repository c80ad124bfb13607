//! A large Helm repository `index.yaml`, written streaming (constant memory) in the shape
//! `helm repo index` writes: `charts` charts with `versions` versions each, every entry with the
//! usual fields (description, maintainers, keywords, annotations…) so that one entry is about
//! 1 KiB, like a public repository's. Used by tests/source_helm.rs (tens of MB) and
//! benches/helm_index.rs (100 MB, Flux #303).

use std::io::Write;
use std::path::Path;

/// Writes the index to `path`; returns its size in bytes.
pub fn write_big_index(path: &Path, charts: usize, versions: usize) -> u64 {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "apiVersion: v1\nentries:").unwrap();
    for c in 0..charts {
        writeln!(w, "  chart-{c}:").unwrap();
        for v in 0..versions {
            let (major, minor) = (v / 100, v % 100);
            writeln!(
                w,
                "  - annotations:\n      category: Infrastructure\n      licenses: Apache-2.0\n      \
                 images: |\n        - name: app\n          image: registry.example/app:{major}.{minor}.0\n    \
                 apiVersion: v2\n    appVersion: {major}.{minor}.0\n    created: \"2026-01-01T00:00:{:02}Z\"\n    \
                 dependencies:\n    - name: common\n      repository: oci://registry.example/charts\n      \
                 tags:\n      - app-common\n      version: 2.x.x\n    \
                 description: Chart {c} deploys the application with sensible defaults for a production \
                 cluster, including autoscaling, monitoring, network policies and persistence options.\n    \
                 digest: {:064x}\n    home: https://example.com/charts/chart-{c}\n    \
                 icon: https://example.com/icons/chart-{c}.svg\n    keywords:\n    - application\n    \
                 - http\n    - web\n    maintainers:\n    - name: Example Maintainers\n      \
                 url: https://github.com/example/charts\n    name: chart-{c}\n    sources:\n    \
                 - https://github.com/example/charts/tree/main/chart-{c}\n    urls:\n    \
                 - https://charts.example.com/chart-{c}-{major}.{minor}.0.tgz\n    version: {major}.{minor}.0",
                v % 60,
                c * 100_000 + v
            )
            .unwrap();
        }
    }
    writeln!(w, "generated: \"2026-01-01T00:00:00Z\"").unwrap();
    w.flush().unwrap();
    drop(w);
    std::fs::metadata(path).unwrap().len()
}
