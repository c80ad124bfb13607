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

/// Formats the API server recognises in a CRD schema, by type (kube-apiserver's
/// `apiextensions-apiserver/pkg/apiserver/validation/formats.go`, `GetUnrecognizedFormats`):
/// `integer` takes `int32`/`int64`, `number` `float`/`double`, `string` the listed names (compared
/// without `-`, as the API server does); any other format makes `kubectl apply` print
/// "unrecognized format".
fn unrecognized_formats(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "quantity",
        "k8sshortname",
        "k8slongname",
    ];
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(|f| f.as_str()) {
                let ok = match map.get("type").and_then(|t| t.as_str()).unwrap_or("") {
                    "integer" => matches!(format, "int32" | "int64"),
                    "number" => matches!(format, "float" | "double"),
                    "" | "string" => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
                    _ => false,
                };
                if !ok {
                    out.push(format!("{path}: {format}"));
                }
            }
            for (k, v) in map {
                unrecognized_formats(v, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                unrecognized_formats(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The formats of every `openAPIV3Schema` in a multi-document CRD file that the API server
/// does not recognise.
fn unrecognized_in(yaml: &str) -> Vec<String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
    let mut out = vec![];
    for doc in &docs {
        let kind = doc["spec"]["names"]["kind"].as_str().unwrap_or("?");
        for v in doc["spec"]["versions"].as_array().into_iter().flatten() {
            let path = format!("{kind}/{}", v["name"].as_str().unwrap_or("?"));
            unrecognized_formats(&v["schema"]["openAPIV3Schema"], &path, &mut out);
        }
    }
    out
}

/// No schema carries a format the API server warns about on every apply (unsigned Rust integers
/// gave `format: uint64`; they are written as `int64`, `minimum: 0`), in the generated CRDs and
/// in both committed copies.
#[test]
fn crds_carry_only_formats_the_api_server_recognises() {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/pennant/crds/pennant.yaml");
    for (what, yaml) in [
        ("generated".to_string(), crds::to_yaml()),
        (
            committed_path().display().to_string(),
            std::fs::read_to_string(committed_path()).unwrap(),
        ),
        (
            chart.display().to_string(),
            std::fs::read_to_string(&chart).unwrap(),
        ),
    ] {
        assert_eq!(unrecognized_in(&yaml), Vec::<String>::new(), "{what}");
    }
    // negative control: the check finds what the API server warns about
    let planted = "spec:\n  names: {kind: Planted}\n  versions:\n  - name: v1\n    schema:\n      \
                   openAPIV3Schema:\n        type: object\n        properties:\n          \
                   count: {type: integer, format: uint64, minimum: 0}\n          \
                   ratio: {type: number, format: int32}\n          \
                   at: {type: string, format: date-time}\n          \
                   format: {type: string, format: hostname}\n";
    assert_eq!(
        unrecognized_in(planted),
        [
            "Planted/v1.properties.count: uint64",
            "Planted/v1.properties.ratio: int32"
        ]
    );
}
