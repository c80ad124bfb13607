//! The committed CRDs (`crds/pennant.yaml`) must be exactly what the Rust types generate.
//!
//! After changing a type in `src/api/`, regenerate with either of:
//!
//! ```text
//! PENNANT_UPDATE_CRDS=1 cargo test --test crds
//! cargo run -- crds > crds/pennant.yaml
//! ```

use std::path::PathBuf;

use pennant::api::crds;

const REGENERATE: &str = "regenerate with `PENNANT_UPDATE_CRDS=1 cargo test --test crds` \
                          (or `cargo run -- crds > crds/pennant.yaml`) and commit the result";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crds")
        .join("pennant.yaml")
}

#[test]
fn committed_crds_match_generated() {
    let generated = crds::to_yaml();
    let path = committed_path();
    if std::env::var_os("PENNANT_UPDATE_CRDS").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old != generated {
            std::fs::write(&path, &generated).unwrap();
            eprintln!("rewrote {}", path.display());
        }
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        let line = |s: &str| {
            s.lines()
                .nth(first_diff)
                .unwrap_or("<end of file>")
                .to_string()
        };
        panic!(
            "{} is out of date with the types in src/api/ (first difference at line {}:\n  \
             committed: {}\n  generated: {}\n); {REGENERATE}",
            path.display(),
            first_diff + 1,
            line(&committed),
            line(&generated),
        );
    }
}

/// The committed file parses back into the three CRDs, so `kubectl apply -f crds/` sees exactly
/// them (guards against an emitter change that produces YAML other tools read differently).
#[test]
fn committed_crds_parse_back() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = crds::to_yaml();
    let parsed: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(parsed, crds::all());
}
