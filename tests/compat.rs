//! pennant's CRDs and types accept what Flagger's accept.
//!
//! Inputs, all under `tests/fixtures/` (see its README): Flagger v1.44.0's CRD
//! (`flagger/artifacts_flagger_crd.yaml`), Flagger's example manifests, the reference article's
//! Canary, and manifests written for pennant that set every field of Flagger's schema.
//!
//! - (a) [`schema_covers_flagger`]: every property path of Flagger's `openAPIV3Schema` for Canary,
//!   MetricTemplate and AlertProvider exists in pennant's generated schema (or sits under a node
//!   of ours with `x-kubernetes-preserve-unknown-fields: true`), with a compatible type, and
//!   pennant's schema adds no constraint Flagger's lacks (required fields, enums, patterns,
//!   bounds, CEL rules) except the ones allow-listed below with their reason.
//!   [`walker_catches_divergences`] is the negative control.
//! - (b) [`fixtures_round_trip`]: every Canary / MetricTemplate / AlertProvider document in the
//!   fixtures parses into pennant's Rust types and serialises back without losing a field.
//!   [`fixtures_set_every_flagger_field`] proves the fixtures exercise the whole schema;
//!   [`round_trip_check_catches_loss`] is the negative control of the comparison.
//! - (c) [`flagger_enum_values_are_accepted`]: every enum value Flagger's schema allows is
//!   accepted by pennant's schema (and, for the Canary phase, by the Rust type).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pennant::api::{
    AlertProvider, Canary, CanaryAnalysis, CanaryPhase, CanaryStatus, MetricTemplate, crds,
};
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{Allow, Used, is_true, node_mut};

const KINDS: [&str; 3] = ["Canary", "MetricTemplate", "AlertProvider"];

/// Paths Flagger types as `number` and pennant as `integer` (Flagger's Go fields are all `int`).
///
/// Deliberate difference: a non-integral value such as `stepWeight: 10.5` passes Flagger's schema
/// but cannot be decoded into Flagger's Go `int` field (Go's JSON decoder rejects `10.5` for an
/// `int`), so Flagger cannot act on it; pennant rejects it at apply time with a schema error
/// instead. Integral values (`10`, and `10.0`, which kubectl sends as `10`) are accepted by both.
const NUMBER_AS_INTEGER: [(&str, &str); 16] = [
    ("Canary", ".spec.progressDeadlineSeconds"),
    ("Canary", ".spec.service.port"),
    ("Canary", ".spec.analysis.iterations"),
    ("Canary", ".spec.analysis.threshold"),
    ("Canary", ".spec.analysis.maxWeight"),
    ("Canary", ".spec.analysis.stepWeight"),
    ("Canary", ".spec.analysis.stepWeights[]"),
    ("Canary", ".spec.analysis.stepWeightPromotion"),
    ("Canary", ".spec.analysis.mirrorWeight"),
    ("Canary", ".spec.analysis.primaryReadyThreshold"),
    ("Canary", ".spec.analysis.canaryReadyThreshold"),
    ("Canary", ".spec.analysis.webhooks[].retries"),
    ("Canary", ".spec.analysis.sessionAffinity.maxAge"),
    ("Canary", ".status.failedChecks"),
    ("Canary", ".status.canaryWeight"),
    ("Canary", ".status.iterations"),
];

/// Required properties pennant adds, per (kind, path of the object): kube-derive requires `spec`
/// at the root. Flagger's schema would accept an object with no spec at all, which neither
/// Flagger nor pennant can act on; rejecting it beats failing to decode it in the watcher.
const EXTRA_REQUIRED: [(&str, &str, &str); 3] = [
    ("Canary", "", "spec"),
    ("MetricTemplate", "", "spec"),
    ("AlertProvider", "", "spec"),
];

/// CEL rules pennant adds, per (kind, path). AlertProvider: Flagger's `oneOf` wants exactly one
/// of `address` / `secretRef`; pennant wants at least one (so it rejects only what Flagger
/// rejects for lacking both, and also accepts both, the Secret's address winning).
const EXTRA_CEL_RULES: [(&str, &str, &str); 1] = [(
    "AlertProvider",
    ".spec",
    "has(self.address) || has(self.secretRef)",
)];

// ---------------------------------------------------------------------------------------------
// fixtures

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every `flagger.app/v1beta1` Canary / MetricTemplate / AlertProvider in the fixtures, with
/// `file#index` names. Panics on any other `flagger.app` kind (a fixture nobody checks).
fn flagger_objects() -> Vec<(String, String, Value)> {
    let root = fixtures_dir();
    let mut files = vec![];
    yaml_files(&root, &mut files);
    let mut out = vec![];
    for f in files {
        for (i, doc) in read_docs(&f).into_iter().enumerate() {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            let kind = doc["kind"].as_str().unwrap_or_default();
            if !api.starts_with("flagger.app/") {
                continue;
            }
            assert_eq!(api, "flagger.app/v1beta1", "{}#{i}", f.display());
            assert!(
                KINDS.contains(&kind),
                "{}#{i}: unexpected kind {kind}",
                f.display()
            );
            let name = format!("{}#{i}", f.strip_prefix(&root).unwrap().display());
            out.push((kind.to_string(), name, doc));
        }
    }
    out
}

fn schema_of(crd: &Value) -> Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v = versions
        .iter()
        .find(|v| v["name"] == "v1beta1")
        .expect("a v1beta1 version");
    v["schema"]["openAPIV3Schema"].clone()
}

/// Flagger's schemas by kind.
fn flagger_schemas() -> BTreeMap<String, Value> {
    let path = fixtures_dir()
        .join("flagger")
        .join("artifacts_flagger_crd.yaml");
    read_docs(&path)
        .iter()
        .map(|crd| {
            (
                crd["spec"]["names"]["kind"].as_str().unwrap().to_string(),
                schema_of(crd),
            )
        })
        .collect()
}

/// pennant's schemas by kind, exactly as `crds::all()` generates them.
fn pennant_schemas() -> BTreeMap<String, Value> {
    crds::all()
        .iter()
        .filter(|crd| crd.spec.group == "flagger.app")
        .map(|crd| {
            let v = serde_json::to_value(crd).unwrap();
            (crd.spec.names.kind.clone(), schema_of(&v))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (a) the schema walker

/// Flagger's allow-lists for the shared walker.
const FLAGGER: Allow = Allow {
    upstream: "Flagger",
    number_as_integer: &NUMBER_AS_INTEGER,
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &EXTRA_CEL_RULES,
};

fn problems(
    flagger: &BTreeMap<String, Value>,
    ours: &BTreeMap<String, Value>,
    used: &mut Used,
) -> Vec<String> {
    schema_walk::problems(&KINDS, flagger, ours, &FLAGGER, used)
}

#[test]
fn schema_covers_flagger() {
    let mut used = Used::default();
    let problems = problems(&flagger_schemas(), &pennant_schemas(), &mut used);
    assert!(
        problems.is_empty(),
        "pennant's CRDs would reject or lose what Flagger's accept:\n  {}",
        problems.join("\n  ")
    );
    // allow-lists are tight: every entry is needed
    let unused_numbers: Vec<_> = NUMBER_AS_INTEGER
        .iter()
        .filter(|(k, p)| {
            !used
                .number_as_integer
                .contains(&(k.to_string(), p.to_string()))
        })
        .collect();
    assert!(
        unused_numbers.is_empty(),
        "stale NUMBER_AS_INTEGER entries: {unused_numbers:?}"
    );
    assert_eq!(
        used.extra_required.len(),
        EXTRA_REQUIRED.len(),
        "stale EXTRA_REQUIRED entries"
    );
    assert_eq!(
        used.cel.len(),
        EXTRA_CEL_RULES.len(),
        "stale EXTRA_CEL_RULES entries"
    );
}

/// Negative controls: the walker must notice each kind of divergence.
#[test]
fn walker_catches_divergences() {
    let flagger = flagger_schemas();
    let check = |edit: &dyn Fn(&mut BTreeMap<String, Value>), expect: &str| {
        let mut ours = pennant_schemas();
        edit(&mut ours);
        let found = problems(&flagger, &ours, &mut Used::default());
        assert!(
            found.iter().any(|p| p == expect),
            "expected the walker to report {expect:?}, it reported {found:#?}"
        );
    };
    // a property removed
    check(
        &|s| {
            let a = node_mut(s.get_mut("Canary").unwrap(), ".spec.analysis");
            a["properties"]
                .as_object_mut()
                .unwrap()
                .remove("stepWeights");
        },
        "Canary .spec.analysis.stepWeights: missing in pennant's schema",
    );
    // a nested one, in another kind
    check(
        &|s| {
            let p = node_mut(s.get_mut("MetricTemplate").unwrap(), ".spec.provider");
            p["properties"].as_object_mut().unwrap().remove("headers");
        },
        "MetricTemplate .spec.provider.headers: missing in pennant's schema",
    );
    // map values lost
    check(
        &|s| {
            let p = node_mut(s.get_mut("Canary").unwrap(), ".spec.analysis.metrics");
            p["items"]["properties"]["templateVariables"]
                .as_object_mut()
                .unwrap()
                .remove("additionalProperties");
        },
        "Canary .spec.analysis.metrics[].templateVariables.*: map values missing in pennant's schema",
    );
    // a type changed
    check(
        &|s| *node_mut(s.get_mut("Canary").unwrap(), ".spec.suspend") = json!({"type": "string"}),
        "Canary .spec.suspend: type is Some(\"boolean\") in Flagger, Some(\"string\") in pennant",
    );
    // a required field added
    check(
        &|s| {
            let spec = node_mut(s.get_mut("Canary").unwrap(), ".spec");
            spec["required"]
                .as_array_mut()
                .unwrap()
                .push(json!("metricsServer"));
        },
        "Canary .spec: pennant requires `metricsServer`, Flagger does not",
    );
    // an enum narrowed
    check(
        &|s| {
            let t = node_mut(s.get_mut("MetricTemplate").unwrap(), ".spec.provider.type");
            t["enum"].as_array_mut().unwrap().retain(|v| v != "splunk");
        },
        "MetricTemplate .spec.provider.type: Flagger allows \"splunk\", pennant's enum does not",
    );
    // a bound added
    check(
        &|s| node_mut(s.get_mut("Canary").unwrap(), ".spec.service.port")["maximum"] = json!(65535),
        "Canary .spec.service.port: pennant adds `maximum: 65535`",
    );
    // positive control: under a preserve-unknown-fields node nothing is missing
    let mut ours = pennant_schemas();
    *node_mut(ours.get_mut("Canary").unwrap(), ".spec.service") =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let found = problems(&flagger, &ours, &mut Used::default());
    assert!(
        !found.iter().any(|p| p.starts_with("Canary .spec.service")),
        "preserve-unknown-fields must cover its subtree: {found:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) round trip

/// A Go zero value, which Flagger's `omitempty` fields drop too: dropping or adding one is not a
/// change (e.g. `skipAnalysis: false`, `status.failedChecks: 0`).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Differences between `before` and `after`, ignoring key order, integer/float spelling of the
/// same number, and zero values present on one side only.
fn lossy(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => lossy(bv, av, &p, out),
                    None if is_zero(bv) => {}
                    None => out.push(format!("{p}: lost ({bv})")),
                }
            }
            for (k, av) in a {
                if !b.contains_key(k) && !is_zero(av) {
                    out.push(format!("{path}.{k}: added ({av})"));
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                lossy(bv, av, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(b), Value::Number(a)) if b.as_f64() == a.as_f64() => {}
        (b, a) if b == a => {}
        (b, a) => out.push(format!("{path}: {b} became {a}")),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
) -> Result<Value, String> {
    let typed: T =
        serde_json::from_value(doc.clone()).map_err(|e| format!("does not parse: {e}"))?;
    serde_json::to_value(&typed).map_err(|e| format!("does not serialise: {e}"))
}

#[test]
fn fixtures_round_trip() {
    let mut failures = vec![];
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, name, doc) in flagger_objects() {
        *count.entry(kind.clone()).or_default() += 1;
        let back = match kind.as_str() {
            "Canary" => round_trip::<Canary>(&doc),
            "MetricTemplate" => round_trip::<MetricTemplate>(&doc),
            "AlertProvider" => round_trip::<AlertProvider>(&doc),
            _ => unreachable!(),
        };
        match back {
            Err(e) => failures.push(format!("{name} ({kind}): {e}")),
            Ok(back) => {
                let mut diffs = vec![];
                lossy(&doc, &back, "", &mut diffs);
                failures.extend(diffs.into_iter().map(|d| format!("{name} ({kind}) {d}")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "round trip through pennant's types:\n  {}",
        failures.join("\n  ")
    );
    // the fixtures are really there (and the walk found them)
    assert!(count["Canary"] >= 9, "{count:?}");
    assert!(count["MetricTemplate"] >= 11, "{count:?}");
    assert!(count["AlertProvider"] >= 5, "{count:?}");
}

/// Negative control for the round-trip comparison.
#[test]
fn round_trip_check_catches_loss() {
    let before = json!({"spec": {"port": 80, "skipAnalysis": false, "hosts": ["a"], "w": 99}});
    let after = json!({"spec": {"hosts": ["b"], "w": 99.0, "extra": 1, "failedChecks": 0}});
    let mut diffs = vec![];
    lossy(&before, &after, "", &mut diffs);
    assert_eq!(
        diffs,
        [
            ".spec.hosts[0]: \"a\" became \"b\"",
            ".spec.port: lost (80)",
            ".spec.extra: added (1)"
        ]
    );
}

#[derive(Clone, Debug)]
enum Seg {
    Prop(String),
    Item,
    AnyKey,
}

/// Every property path of a schema, as segments, with its display form.
fn schema_paths(s: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    if let Some(props) = s["properties"].as_object() {
        for (k, v) in props {
            prefix.push(Seg::Prop(k.clone()));
            out.push(prefix.clone());
            schema_paths(v, prefix, out);
            prefix.pop();
        }
    }
    if s.get("items").is_some() {
        prefix.push(Seg::Item);
        schema_paths(&s["items"], prefix, out);
        prefix.pop();
    }
    if s["additionalProperties"].is_object() {
        prefix.push(Seg::AnyKey);
        out.push(prefix.clone());
        schema_paths(&s["additionalProperties"], prefix, out);
        prefix.pop();
    }
}

fn display(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Prop(p) => format!(".{p}"),
            Seg::Item => "[]".into(),
            Seg::AnyKey => ".*".into(),
        })
        .collect()
}

/// Some value sits at `path` in `doc` (any element of a list, any key of a map).
fn has_path(doc: &Value, path: &[Seg]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match first {
        Seg::Prop(p) => doc.get(p).is_some_and(|v| has_path(v, rest)),
        Seg::Item => doc
            .as_array()
            .is_some_and(|a| a.iter().any(|v| has_path(v, rest))),
        Seg::AnyKey => doc
            .as_object()
            .is_some_and(|o| o.values().any(|v| has_path(v, rest))),
    }
}

/// The fixtures set every property path of Flagger's schema at least once, so the round trip
/// above covers every field.
#[test]
fn fixtures_set_every_flagger_field() {
    let objects = flagger_objects();
    let mut missing = vec![];
    for (kind, schema) in flagger_schemas() {
        let mut paths = vec![];
        schema_paths(&schema, &mut vec![], &mut paths);
        for p in paths {
            if !objects
                .iter()
                .any(|(k, _, doc)| *k == kind && has_path(doc, &p))
            {
                missing.push(format!("{kind} {}", display(&p)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no fixture sets these fields of Flagger's schema (add them to tests/fixtures/pennant/):\n  {}",
        missing.join("\n  ")
    );
}

/// Deliberate difference (see [`NUMBER_AS_INTEGER`]): a non-integral number where Flagger's Go
/// type is an `int` is rejected, an integral one accepted.
#[test]
fn non_integral_weights_are_rejected() {
    assert!(serde_json::from_value::<CanaryAnalysis>(json!({"stepWeight": 10.5})).is_err());
    let a: CanaryAnalysis = serde_json::from_value(json!({"stepWeight": 10})).unwrap();
    assert_eq!(a.step_weight, Some(10));
    let schema = pennant_schemas();
    let step = our_node(&schema["Canary"], ".spec.analysis.stepWeight").unwrap();
    assert_eq!(step["type"], "integer");
}

// ---------------------------------------------------------------------------------------------
// (c) enums

/// Every enum in Flagger's schema, by kind and path.
fn flagger_enums(kind: &str, s: &Value, path: &str, out: &mut Vec<(String, String, Vec<Value>)>) {
    if let Some(e) = s["enum"].as_array() {
        out.push((kind.into(), path.into(), e.clone()));
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, v) in props {
            flagger_enums(kind, v, &format!("{path}.{k}"), out);
        }
    }
    if s.get("items").is_some() {
        flagger_enums(kind, &s["items"], &format!("{path}[]"), out);
    }
    if s["additionalProperties"].is_object() {
        flagger_enums(kind, &s["additionalProperties"], &format!("{path}.*"), out);
    }
}

/// pennant's schema node for a Flagger path, or the preserve-unknown-fields node above it.
fn our_node<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    let mut rest = path;
    while !rest.is_empty() {
        if is_true(&cur["x-kubernetes-preserve-unknown-fields"]) {
            return Some(cur);
        }
        if let Some(r) = rest.strip_prefix("[]") {
            cur = cur.get("items")?;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(".*") {
            cur = cur.get("additionalProperties")?;
            rest = r;
        } else {
            let r = rest.strip_prefix('.')?;
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get("properties")?.get(&r[..end])?;
            rest = &r[end..];
        }
    }
    Some(cur)
}

#[test]
fn flagger_enum_values_are_accepted() {
    let ours = pennant_schemas();
    let mut enums = vec![];
    for (kind, s) in flagger_schemas() {
        flagger_enums(&kind, &s, "", &mut enums);
    }
    // the ones the brief names, so a Flagger refresh that drops or moves one is noticed
    for (kind, path) in [
        ("Canary", ".spec.provider"),
        ("Canary", ".spec.targetRef.kind"),
        ("Canary", ".spec.analysis.webhooks[].type"),
        ("Canary", ".spec.analysis.alerts[].severity"),
        ("Canary", ".status.phase"),
        ("MetricTemplate", ".spec.provider.type"),
        ("AlertProvider", ".spec.type"),
    ] {
        assert!(
            enums.iter().any(|(k, p, _)| k == kind && p == path),
            "Flagger has no enum at {kind} {path}"
        );
    }
    let mut rejected = vec![];
    for (kind, path, values) in &enums {
        let Some(node) = our_node(&ours[kind], path) else {
            rejected.push(format!("{kind} {path}: no such field in pennant's schema"));
            continue;
        };
        if is_true(&node["x-kubernetes-preserve-unknown-fields"]) {
            continue;
        }
        if node["type"] != "string" {
            rejected.push(format!("{kind} {path}: pennant's type is {}", node["type"]));
        }
        if let Some(ours) = node["enum"].as_array() {
            for v in values.iter().filter(|v| !ours.contains(v)) {
                rejected.push(format!("{kind} {path}: {v}"));
            }
        }
    }
    assert!(
        rejected.is_empty(),
        "Flagger enum values pennant's schema rejects:\n  {}",
        rejected.join("\n  ")
    );

    // the phase is a Rust enum too: every Flagger phase (and "") must parse
    let (_, _, phases) = enums
        .iter()
        .find(|(k, p, _)| k == "Canary" && p == ".status.phase")
        .unwrap();
    for phase in phases {
        let st: CanaryStatus = serde_json::from_value(json!({ "phase": phase }))
            .unwrap_or_else(|e| panic!("phase {phase}: {e}"));
        match phase.as_str().unwrap() {
            "" => assert_eq!(st.phase, None),
            p => assert_eq!(st.phase.map(CanaryPhase::as_str), Some(p)),
        }
    }
}
