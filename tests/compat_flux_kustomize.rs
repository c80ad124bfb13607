//! pennant's Kustomization CRD and type accept what Flux's accept.
//!
//! Input: Flux kustomize-controller's own CRD and sample (`config/crd/bases`, `config/samples` of
//! the `github.com/fluxcd/kustomize-controller` module zip, v1.9.5 as Flux v2.9.5 pins), fetched
//! into the Go module cache by `e2e/tools/flux-crds kustomize-controller`, and Flux's example fleet
//! (`tests/fixtures/flux2-kustomize-helm-example`).
//!
//! - [`schema_covers_flux`]: every property path, type, enum value, pattern and CEL rule of Flux's
//!   `openAPIV3Schema` is accepted by pennant's, and pennant adds no constraint Flux lacks
//!   (the walker of `tests/support/schema_walk.rs`); [`walker_catches_a_removed_flux_field`] is
//!   the negative control.
//! - [`defaults_names_and_columns_match_flux`]: same defaults, names, printer columns and the
//!   `kustomize.toolkit.fluxcd.io/substitute: disabled` annotation.
//! - [`flux_sample_round_trips`] and [`example_fleet_kustomizations_are_accepted`]: real
//!   manifests parse into pennant's type, serialise back without loss, and validate under
//!   pennant's schema ([`validate`], with its own negative control).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pennant::api::crds;
use pennant::api::kustomization::Kustomization;
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{Allow, Used, lossy, node_mut};

const KINDS: [&str; 1] = ["Kustomization"];

/// kube-derive requires `spec` at the root; Flux's schema would accept an object without one,
/// which neither Flux (its `interval`/`prune`/`sourceRef` are required inside) nor pennant can
/// act on.
const EXTRA_REQUIRED: [(&str, &str, &str); 1] = [("Kustomization", "", "spec")];

const FLUX: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kustomize-controller's module directory in the Go module cache.
fn flux_module() -> PathBuf {
    let script = root().join("e2e/tools/flux-crds");
    let out = Command::new(&script)
        .arg("kustomize-controller")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (needs Go and, the first time, the Go module proxy): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bases = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    bases.join("../../..").canonicalize().unwrap()
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn flux_crd() -> Value {
    let path =
        flux_module().join("config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml");
    read_docs(&path).remove(0)
}

fn pennant_crd() -> Value {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.spec.group == "kustomize.toolkit.fluxcd.io")
        .expect("pennant serves Kustomization");
    serde_json::to_value(crd).unwrap()
}

/// Served versions with their schemas.
fn served(crd: &Value) -> BTreeMap<String, Value> {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}

fn v1(crd: &Value) -> BTreeMap<String, Value> {
    BTreeMap::from([("Kustomization".to_string(), served(crd)["v1"].clone())])
}

#[test]
fn schema_covers_flux() {
    let (flux, ours) = (flux_crd(), pennant_crd());
    assert_eq!(
        served(&ours).into_keys().collect::<Vec<_>>(),
        served(&flux).into_keys().collect::<Vec<_>>(),
        "pennant serves every version Flux serves, and only those"
    );
    let mut used = Used::default();
    let found = schema_walk::problems(&KINDS, &v1(&flux), &v1(&ours), &FLUX, &mut used);
    assert!(
        found.is_empty(),
        "pennant's Kustomization CRD would reject or lose what Flux's accepts:\n  {}",
        found.join("\n  ")
    );
    assert_eq!(
        used.extra_required.len(),
        EXTRA_REQUIRED.len(),
        "stale EXTRA_REQUIRED"
    );
}

/// Negative controls: a field, an enum value, a bound or a CEL rule removed from pennant's
/// schema is reported.
#[test]
fn walker_catches_a_removed_flux_field() {
    let flux = v1(&flux_crd());
    let check = |edit: &dyn Fn(&mut Value), expect: &str| {
        let mut ours = v1(&pennant_crd());
        edit(ours.get_mut("Kustomization").unwrap());
        let found = schema_walk::problems(&KINDS, &flux, &ours, &FLUX, &mut Used::default());
        assert!(
            found.iter().any(|p| p == expect),
            "expected {expect:?}, the walker reported {found:#?}"
        );
    };
    check(
        &|s| {
            let p = node_mut(s, ".spec.postBuild.substituteFrom");
            p["items"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("optional");
        },
        "Kustomization .spec.postBuild.substituteFrom[].optional: missing in pennant's schema",
    );
    check(
        &|s| {
            let k = node_mut(s, ".spec.sourceRef.kind");
            k["enum"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "ExternalArtifact");
        },
        "Kustomization .spec.sourceRef.kind: Flux allows \"ExternalArtifact\", pennant's enum does not",
    );
    check(
        &|s| {
            let e = node_mut(s, ".status.inventory.entries");
            e["items"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("v");
        },
        "Kustomization .status.inventory.entries[].v: missing in pennant's schema",
    );
    check(
        &|s| node_mut(s, ".spec.targetNamespace")["maxLength"] = json!(40),
        "Kustomization .spec.targetNamespace: pennant adds `maxLength: 40`",
    );
}

fn defaults(s: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    if let Some(d) = s.get("default") {
        out.insert(path.to_string(), d.clone());
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, v) in props {
            defaults(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = s.get("items") {
        defaults(items, &format!("{path}[]"), out);
    }
}

#[test]
fn defaults_names_and_columns_match_flux() {
    let (f, o) = (flux_crd(), pennant_crd());
    let (mut fd, mut od) = (BTreeMap::new(), BTreeMap::new());
    defaults(&served(&f)["v1"], "", &mut fd);
    defaults(&served(&o)["v1"], "", &mut od);
    assert_eq!(od, fd, "schema defaults");
    assert!(fd.contains_key(".spec.force"), "{fd:?}");
    for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
        assert_eq!(
            o["spec"]["names"][key], f["spec"]["names"][key],
            "names.{key}"
        );
    }
    assert_eq!(o["spec"]["scope"], f["spec"]["scope"]);
    let columns = |crd: &Value| crd["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    assert_eq!(columns(&o), columns(&f), "printer columns");
    let key = "kustomize.toolkit.fluxcd.io/substitute";
    assert_eq!(f["metadata"]["annotations"][key], "disabled");
    assert_eq!(o["metadata"]["annotations"][key], "disabled");
}

/// A structural-schema check of `doc` against `schema`, the subset the API server enforces
/// that matters here: types, unknown fields (pruned), required, enums, patterns and lengths.
fn validate(doc: &Value, s: &Value, path: &str, out: &mut Vec<String>) {
    if s["x-kubernetes-preserve-unknown-fields"] == true && s.get("properties").is_none() {
        return;
    }
    if doc.is_null() && s["nullable"] == true {
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    let ok = match s["type"].as_str() {
        _ if int_or_string => doc.is_string() || doc.is_i64() || doc.is_u64(),
        Some("object") => doc.is_object(),
        Some("array") => doc.is_array(),
        Some("string") => doc.is_string(),
        Some("boolean") => doc.is_boolean(),
        Some("integer") => doc.is_i64() || doc.is_u64(),
        Some("number") => doc.is_number(),
        _ => true,
    };
    if !ok {
        out.push(format!("{path}: {doc} is not of type {}", s["type"]));
        return;
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(doc)
    {
        out.push(format!("{path}: {doc} is not one of {}", s["enum"]));
    }
    if let (Some(p), Some(v)) = (s["pattern"].as_str(), doc.as_str())
        && !regex::Regex::new(p).unwrap().is_match(v)
    {
        out.push(format!("{path}: {v:?} does not match {p:?}"));
    }
    if let Some(v) = doc.as_str() {
        let n = v.chars().count() as u64;
        if s["minLength"].as_u64().is_some_and(|m| n < m)
            || s["maxLength"].as_u64().is_some_and(|m| n > m)
        {
            out.push(format!("{path}: length {n} out of bounds"));
        }
    }
    if let Some(obj) = doc.as_object() {
        for r in schema_walk::required_set(s) {
            if !obj.contains_key(&r) {
                out.push(format!("{path}.{r}: required"));
            }
        }
        for (k, v) in obj {
            let child = format!("{path}.{k}");
            if let Some(cs) = s["properties"].get(k) {
                validate(v, cs, &child, out);
            } else if s["additionalProperties"].is_object() {
                validate(v, &s["additionalProperties"], &child, out);
            } else if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
            } else if s["x-kubernetes-preserve-unknown-fields"] != true {
                out.push(format!(
                    "{child}: unknown field (the API server would prune it)"
                ));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), doc.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(v, items, &format!("{path}[{i}]"), out);
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Parse, round-trip and validate one Kustomization; the problems found.
fn check_kustomization(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out = vec![];
    validate(doc, schema, "", &mut out);
    match serde_json::from_value::<Kustomization>(doc.clone()) {
        Ok(typed) => lossy(doc, &serde_json::to_value(&typed).unwrap(), "", &mut out),
        Err(e) => out.push(format!("does not deserialize: {e}")),
    }
    out
}

#[test]
fn flux_sample_round_trips() {
    let schema = served(&pennant_crd())["v1"].clone();
    let path = flux_module().join("config/samples/kustomize_v1_kustomization.yaml");
    let docs: Vec<_> = read_docs(&path)
        .into_iter()
        .filter(|d| d["kind"] == "Kustomization")
        .collect();
    assert!(!docs.is_empty(), "{}", path.display());
    for doc in docs {
        let problems = check_kustomization(&doc, &schema);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
    }
}

#[test]
fn example_fleet_kustomizations_are_accepted() {
    let schema = served(&pennant_crd())["v1"].clone();
    let mut files = vec![];
    yaml_files(
        &root().join("tests/fixtures/flux2-kustomize-helm-example"),
        &mut files,
    );
    let mut seen = vec![];
    for path in &files {
        for doc in read_docs(path) {
            if doc["apiVersion"] != "kustomize.toolkit.fluxcd.io/v1"
                || doc["kind"] != "Kustomization"
            {
                continue;
            }
            let problems = check_kustomization(&doc, &schema);
            assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
            seen.push(format!(
                "{}/{}",
                doc["metadata"]["namespace"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    // clusters/{production,staging}: infra-controllers, infra-configs, apps (gotk-sync.yaml is a
    // placeholder until bootstrap; the README's snippets are abridged, not manifests)
    assert_eq!(seen.len(), 6, "{seen:?}");
    for name in [
        "flux-system/apps",
        "flux-system/infra-configs",
        "flux-system/infra-controllers",
    ] {
        assert_eq!(
            seen.iter().filter(|s| *s == name).count(),
            2,
            "{name}: {seen:?}"
        );
    }
}

/// Negative control of [`validate`] and of the round trip: each broken manifest is reported.
#[test]
fn validation_rejects_what_flux_rejects() {
    let schema = served(&pennant_crd())["v1"].clone();
    let good = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"interval": "10m", "prune": true, "path": "./apps",
                 "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
    });
    assert_eq!(check_kustomization(&good, &schema), Vec::<String>::new());
    let cases: [(&str, Value, &str); 6] = [
        ("/spec/prune", Value::Null, ".spec.prune: required"),
        (
            "/spec/interval",
            json!("10 minutes"),
            ".spec.interval: \"10 minutes\" does not match",
        ),
        (
            "/spec/sourceRef/kind",
            json!("HelmRepository"),
            ".spec.sourceRef.kind: \"HelmRepository\" is not one of",
        ),
        (
            "/spec/targetNamespace",
            json!(""),
            ".spec.targetNamespace: length 0 out of bounds",
        ),
        (
            "/spec/pruneAll",
            json!(true),
            ".spec.pruneAll: unknown field",
        ),
        (
            "/spec/postBuild",
            json!({"substituteFrom": [{"kind": "ConfigMap"}]}),
            ".spec.postBuild.substituteFrom[0].name: required",
        ),
    ];
    for (pointer, value, expect) in cases {
        let mut doc = good.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let obj = doc.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        if value.is_null() {
            obj.remove(key);
        } else {
            obj.insert(key.into(), value);
        }
        let found = check_kustomization(&doc, &schema);
        assert!(
            found.iter().any(|p| p.starts_with(expect)),
            "{pointer}: expected {expect:?}, found {found:#?}"
        );
    }
}
