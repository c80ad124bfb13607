//! pennant's source and Kustomization CRDs and types accept what Flux's accept.
//!
//! Input: Flux source-controller's own CRDs and samples (`config/crd/bases`, `config/samples` of
//! the `github.com/fluxcd/source-controller` module zip), fetched into the Go module cache by
//! `e2e/tools/flux-crds` (through the Go proxy the first time, offline afterwards).
//!
//! - [`schema_covers_flux`]: every property path, type and enum value of Flux's
//!   `openAPIV3Schema` for GitRepository, OCIRepository, HelmRepository and HelmChart, in every
//!   version Flux serves, is accepted by pennant's schema (the walker of `tests/compat.rs`), and
//!   pennant adds no constraint Flux lacks except the ones allow-listed below.
//!   [`walker_catches_a_removed_flux_field`] is the negative control.
//! - [`defaults_names_and_columns_match_flux`]: same defaults (`timeout: 60s`,
//!   `status.observedGeneration: -1`, ...), short names, categories and printer columns.
//! - [`flux_samples_round_trip`]: Flux's sample manifests parse into pennant's Rust types and
//!   serialise back without losing a field.
//!
//! The same for Kustomization against kustomize-controller v1.9.5 (the version Flux v2.9.5 pins;
//! `e2e/tools/flux-crds kustomize-controller`): [`kustomization_schema_covers_flux`] (negative
//! control [`walker_catches_a_removed_kustomization_field`]),
//! [`kustomization_defaults_names_and_columns_match_flux`] (with the
//! `kustomize.toolkit.fluxcd.io/substitute: disabled` annotation),
//! [`flux_kustomization_sample_round_trips`] and [`example_fleet_kustomizations_are_accepted`]:
//! Flux's example fleet's Kustomizations parse, round-trip and validate under pennant's schema
//! ([`validate`], negative control [`validation_rejects_what_flux_rejects`]).
//!
//! The same for HelmRelease against helm-controller v1.6.4 (the version Flux v2.9.5 pins;
//! `e2e/tools/flux-crds helm-controller`): [`helm_release_schema_covers_flux`] (negative control
//! [`walker_catches_a_removed_helm_release_field`]),
//! [`helm_release_defaults_names_and_columns_match_flux`], [`flux_helm_release_samples_round_trip`]
//! and [`example_fleet_helm_releases_are_accepted`] (the fleet's HelmReleases, and the staging
//! and production ones its kustomize patches make, parse, round-trip and validate; negative
//! control [`helm_release_validation_rejects_what_flux_rejects`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pennant::api::crds;
use pennant::api::helm_release::HelmRelease;
use pennant::api::kustomization::Kustomization;
use pennant::api::source::{
    ArtifactGenerator, GitRepository, HelmChart, HelmRepository, OCIRepository,
};
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{
    Allow, Used, defaults, flux_module, flux_samples, lossy, node_mut, pennant_crd, read_docs,
    round_trip, served,
};

const KINDS: [&str; 5] = [
    "GitRepository",
    "OCIRepository",
    "HelmRepository",
    "HelmChart",
    "ExternalArtifact",
];

/// Required properties pennant adds: kube-derive requires `spec` at the root. Flux's schema
/// would accept an object without one, which neither Flux (its `interval`/`url` are required
/// inside) nor pennant can act on.
const EXTRA_REQUIRED: [(&str, &str, &str); 5] = [
    ("GitRepository", "", "spec"),
    ("OCIRepository", "", "spec"),
    ("HelmRepository", "", "spec"),
    ("HelmChart", "", "spec"),
    ("ExternalArtifact", "", "spec"),
];

const FLUX: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

/// Flux's CRDs by kind.
fn flux_crds() -> BTreeMap<String, Value> {
    let bases = flux_module("source-controller").join("config/crd/bases");
    KINDS
        .iter()
        .map(|kind| {
            let plural = match *kind {
                "HelmChart" | "ExternalArtifact" => format!("{}s", kind.to_lowercase()),
                k => format!("{}ies", k.to_lowercase().trim_end_matches('y')),
            };
            let path = bases.join(format!("source.toolkit.fluxcd.io_{plural}.yaml"));
            let doc = read_docs(&path).remove(0);
            assert_eq!(doc["spec"]["names"]["kind"], *kind, "{}", path.display());
            (kind.to_string(), doc)
        })
        .collect()
}

/// pennant's source CRDs by kind, exactly as `crds::all()` generates them.
fn pennant_crds() -> BTreeMap<String, Value> {
    crds::all()
        .iter()
        .filter(|crd| crd.spec.group == "source.toolkit.fluxcd.io")
        .map(|crd| {
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(crd).unwrap(),
            )
        })
        .collect()
}

/// Schemas by `Kind` for one version (`v1`, or `v1beta2` if Flux serves it).
fn schemas(crds: &BTreeMap<String, Value>, version: &str) -> BTreeMap<String, Value> {
    crds.iter()
        .filter_map(|(k, crd)| served(crd).remove(version).map(|s| (k.clone(), s)))
        .collect()
}

fn problems(flux: &BTreeMap<String, Value>, ours: &BTreeMap<String, Value>) -> Vec<String> {
    let mut used = Used::default();
    schema_walk::problems(&KINDS, flux, ours, &FLUX, &mut used)
}

#[test]
fn schema_covers_flux() {
    let (flux, ours) = (flux_crds(), pennant_crds());
    for kind in KINDS {
        let theirs: Vec<_> = served(&flux[kind]).into_keys().collect();
        let mine: Vec<_> = served(&ours[kind]).into_keys().collect();
        assert_eq!(
            mine, theirs,
            "{kind}: pennant must serve every version Flux serves (and only those)"
        );
    }
    let versions: Vec<_> = served(&flux["GitRepository"]).into_keys().collect();
    let mut used = Used::default();
    for v in &versions {
        let found = schema_walk::problems(
            &KINDS,
            &schemas(&flux, v),
            &schemas(&ours, v),
            &FLUX,
            &mut used,
        );
        assert!(
            found.is_empty(),
            "pennant's {v} source CRDs would reject or lose what Flux's accept:\n  {}",
            found.join("\n  ")
        );
    }
    assert_eq!(
        used.extra_required.len(),
        EXTRA_REQUIRED.len(),
        "stale EXTRA_REQUIRED entries"
    );
}

/// Negative controls: a field or an enum value removed from pennant's schema is reported.
#[test]
fn walker_catches_a_removed_flux_field() {
    let flux = schemas(&flux_crds(), "v1");
    let check = |edit: &dyn Fn(&mut BTreeMap<String, Value>), expect: &str| {
        let mut ours = schemas(&pennant_crds(), "v1");
        edit(&mut ours);
        let found = problems(&flux, &ours);
        assert!(
            found.iter().any(|p| p == expect),
            "expected the walker to report {expect:?}, it reported {found:#?}"
        );
    };
    check(
        &|s| {
            let r = node_mut(s.get_mut("GitRepository").unwrap(), ".spec.ref");
            r["properties"].as_object_mut().unwrap().remove("semver");
        },
        "GitRepository .spec.ref.semver: missing in pennant's schema",
    );
    check(
        &|s| {
            let st = node_mut(s.get_mut("HelmChart").unwrap(), ".status");
            st["properties"]
                .as_object_mut()
                .unwrap()
                .remove("observedValuesFiles");
        },
        "HelmChart .status.observedValuesFiles: missing in pennant's schema",
    );
    check(
        &|s| {
            let c = node_mut(s.get_mut("GitRepository").unwrap(), ".status.conditions");
            c["items"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("observedGeneration");
        },
        "GitRepository .status.conditions[].observedGeneration: missing in pennant's schema",
    );
    check(
        &|s| {
            let r = node_mut(s.get_mut("ExternalArtifact").unwrap(), ".spec.sourceRef");
            r["properties"].as_object_mut().unwrap().remove("namespace");
        },
        "ExternalArtifact .spec.sourceRef.namespace: missing in pennant's schema",
    );
    check(
        &|s| {
            let p = node_mut(s.get_mut("OCIRepository").unwrap(), ".spec.provider");
            p["enum"].as_array_mut().unwrap().retain(|v| v != "gcp");
        },
        "OCIRepository .spec.provider: Flux allows \"gcp\", pennant's enum does not",
    );
    check(
        &|s| {
            *node_mut(s.get_mut("HelmRepository").unwrap(), ".spec.interval") =
                json!({"type": "string", "pattern": "^[0-9]+s$"})
        },
        "HelmRepository .spec.interval: pennant's pattern \"^[0-9]+s$\" differs from Flux's \"^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$\"",
    );
}

#[test]
fn defaults_names_and_columns_match_flux() {
    let (flux, ours) = (flux_crds(), pennant_crds());
    for kind in KINDS {
        let (f, o) = (&flux[kind], &ours[kind]);
        let (mut fd, mut od) = (BTreeMap::new(), BTreeMap::new());
        defaults(&served(f)["v1"], "", &mut fd);
        defaults(&served(o)["v1"], "", &mut od);
        assert_eq!(od, fd, "{kind}: schema defaults");
        for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
            assert_eq!(
                o["spec"]["names"][key], f["spec"]["names"][key],
                "{kind}: names.{key}"
            );
        }
        assert_eq!(o["spec"]["scope"], f["spec"]["scope"], "{kind}: scope");
        let columns = |crd: &Value| {
            crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "v1")
                .unwrap()["additionalPrinterColumns"]
                .clone()
        };
        assert_eq!(columns(o), columns(f), "{kind}: printer columns");
        // pennant's CRDs never pose as Flux's own (`app.kubernetes.io/part-of: flux`)
        let labels = o["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(!labels.values().any(|v| v == "flux"), "{kind}: {labels:?}");
    }
}

#[test]
fn flux_samples_round_trip() {
    let mut seen = BTreeMap::<String, usize>::new();
    for (path, doc) in flux_samples("source-controller") {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let lost = match kind.as_str() {
            "GitRepository" => round_trip::<GitRepository>(&doc),
            "OCIRepository" => round_trip::<OCIRepository>(&doc),
            "HelmRepository" => round_trip::<HelmRepository>(&doc),
            "HelmChart" => round_trip::<HelmChart>(&doc),
            _ => continue, // Bucket: not served by pennant
        };
        assert!(lost.is_empty(), "{}: {lost:?}", path.display());
        *seen.entry(kind).or_default() += 1;
    }
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "GitRepository",
            "HelmChart",
            "HelmRepository",
            "OCIRepository"
        ],
        "every kind has a sample: {seen:?}"
    );
    // negative control of the comparison
    let mut lost = vec![];
    lossy(
        &json!({"spec": {"a": 1, "b": [1]}}),
        &json!({"spec": {"b": [2]}}),
        "",
        &mut lost,
    );
    assert_eq!(lost, [".spec.a: lost", ".spec.b[0]: 1 became 2"]);
}

/// The ArtifactGenerators of `flux2-kustomize-helm-example` (`tests/fixtures/`, unchanged)
/// parse without losing a field and pass the generator's validation, each copy operation
/// included.
#[test]
fn flux_example_generators_are_accepted() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flux2-kustomize-helm-example/clusters");
    for cluster in ["staging", "production"] {
        let path = dir.join(cluster).join("artifacts.yaml");
        let docs = read_docs(&path);
        assert_eq!(docs.len(), 1, "{}", path.display());
        let lost = round_trip::<ArtifactGenerator>(&docs[0]);
        assert!(lost.is_empty(), "{}: {lost:?}", path.display());
        let g: ArtifactGenerator = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(
            pennant::source::generator::validate(&g, false),
            Ok(()),
            "{}",
            path.display()
        );
        assert_eq!(g.spec.artifacts.len(), 2);
    }
    // negative control: the same generator with a `..` in a copy source is refused
    let mut g: ArtifactGenerator =
        serde_json::from_value(read_docs(&dir.join("staging/artifacts.yaml")).remove(0)).unwrap();
    g.spec.artifacts[0].copy[0].from = "@monorepo/../infrastructure/**".into();
    let (reason, _) = pennant::source::generator::validate(&g, false).unwrap_err();
    assert_eq!(reason, "ValidationFailed");
}

/// source-watcher's ArtifactGenerator CRD (`e2e/tools/source-watcher-crd`: generated by
/// controller-gen from the `github.com/fluxcd/source-watcher/api/v2` module zip).
fn source_watcher_crd() -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/tools/source-watcher-crd");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (needs Go and, the first time, the Go module proxy): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    read_docs(&path).remove(0)
}

const SOURCE_WATCHER: Allow = Allow {
    upstream: "source-watcher",
    number_as_integer: &[],
    extra_required: &[("ArtifactGenerator", "", "spec")],
    extra_cel_rules: &[],
};

/// Every property path, type, enum value, pattern and CEL rule of source-watcher's
/// ArtifactGenerator schema is pennant's too, with the same names, scope and columns; a field
/// removed from pennant's schema is reported (negative control).
#[test]
fn artifact_generator_schema_covers_source_watcher() {
    let theirs = source_watcher_crd();
    let ours = crds::all()
        .iter()
        .find(|c| c.spec.names.kind == "ArtifactGenerator")
        .map(|c| serde_json::to_value(c).unwrap())
        .expect("pennant serves ArtifactGenerator");
    assert_eq!(ours["spec"]["group"], theirs["spec"]["group"]);
    for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
        assert_eq!(
            ours["spec"]["names"][key], theirs["spec"]["names"][key],
            "names.{key}"
        );
    }
    assert_eq!(ours["spec"]["scope"], theirs["spec"]["scope"]);
    let (t, o) = (served(&theirs), served(&ours));
    assert_eq!(o.keys().collect::<Vec<_>>(), t.keys().collect::<Vec<_>>());
    let one = |m: &BTreeMap<String, Value>| {
        BTreeMap::from([("ArtifactGenerator".to_string(), m["v1beta1"].clone())])
    };
    let mut used = Used::default();
    let found = schema_walk::problems(
        &["ArtifactGenerator"],
        &one(&t),
        &one(&o),
        &SOURCE_WATCHER,
        &mut used,
    );
    assert!(
        found.is_empty(),
        "pennant's ArtifactGenerator would reject or lose what source-watcher's accepts:\n  {}",
        found.join("\n  ")
    );
    let columns = |crd: &Value| crd["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    assert_eq!(columns(&ours), columns(&theirs), "printer columns");
    // negative control
    let mut broken = one(&o);
    let artifacts = node_mut(
        broken.get_mut("ArtifactGenerator").unwrap(),
        ".spec.artifacts",
    );
    artifacts["items"]["properties"]["copy"]["items"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("exclude");
    let found = schema_walk::problems(
        &["ArtifactGenerator"],
        &one(&t),
        &broken,
        &SOURCE_WATCHER,
        &mut Used::default(),
    );
    assert!(
        found.iter().any(|p| p
            == "ArtifactGenerator .spec.artifacts[].copy[].exclude: missing in pennant's schema"),
        "{found:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kustomization (`kustomize.toolkit.fluxcd.io/v1`) against kustomize-controller v1.9.5's CRD and
// sample, and the Kustomizations of Flux's example fleet (`tests/fixtures/flux2-kustomize-helm-example`).

const KS_KINDS: [&str; 1] = ["Kustomization"];

/// kube-derive requires `spec` at the root; Flux's schema would accept an object without one,
/// which neither Flux (its `interval`/`prune`/`sourceRef` are required inside) nor pennant can
/// act on.
///
/// pennant extensions (extra optional properties: the walker reports only what pennant would
/// reject or prune, so they need no allow-list entry): `spec.dependsOn[].kind`
/// (`Kustomization`, the default, or `HelmRelease`; flux2#3364). Flux's CRD would prune it, so
/// a manifest using it needs pennant's CRD.
const KS_EXTRA_REQUIRED: [(&str, &str, &str); 1] = [("Kustomization", "", "spec")];

const FLUX_KS: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &KS_EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

fn flux_ks_crd() -> Value {
    let path = flux_module("kustomize-controller")
        .join("config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml");
    read_docs(&path).remove(0)
}

fn pennant_ks_crd() -> Value {
    pennant_crd("kustomize.toolkit.fluxcd.io", "Kustomization")
}

fn ks_v1(crd: &Value) -> BTreeMap<String, Value> {
    BTreeMap::from([("Kustomization".to_string(), served(crd)["v1"].clone())])
}

#[test]
fn kustomization_schema_covers_flux() {
    let (flux, ours) = (flux_ks_crd(), pennant_ks_crd());
    assert_eq!(
        served(&ours).into_keys().collect::<Vec<_>>(),
        served(&flux).into_keys().collect::<Vec<_>>(),
        "pennant serves every version Flux serves, and only those"
    );
    let mut used = Used::default();
    let found = schema_walk::problems(&KS_KINDS, &ks_v1(&flux), &ks_v1(&ours), &FLUX_KS, &mut used);
    assert!(
        found.is_empty(),
        "pennant's Kustomization CRD would reject or lose what Flux's accepts:\n  {}",
        found.join("\n  ")
    );
    assert_eq!(
        used.extra_required.len(),
        KS_EXTRA_REQUIRED.len(),
        "stale KS_EXTRA_REQUIRED"
    );
}

/// Negative controls: a field, an enum value, a bound or a CEL rule removed from pennant's
/// schema is reported.
#[test]
fn walker_catches_a_removed_kustomization_field() {
    let flux = ks_v1(&flux_ks_crd());
    let check = |edit: &dyn Fn(&mut Value), expect: &str| {
        let mut ours = ks_v1(&pennant_ks_crd());
        edit(ours.get_mut("Kustomization").unwrap());
        let found = schema_walk::problems(&KS_KINDS, &flux, &ours, &FLUX_KS, &mut Used::default());
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

#[test]
fn kustomization_defaults_names_and_columns_match_flux() {
    let (f, o) = (flux_ks_crd(), pennant_ks_crd());
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
fn flux_kustomization_sample_round_trips() {
    let schema = served(&pennant_ks_crd())["v1"].clone();
    let path =
        flux_module("kustomize-controller").join("config/samples/kustomize_v1_kustomization.yaml");
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
    let schema = served(&pennant_ks_crd())["v1"].clone();
    let mut files = vec![];
    yaml_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/flux2-kustomize-helm-example"),
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
    let schema = served(&pennant_ks_crd())["v1"].clone();
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

// ---------------------------------------------------------------------------------------------
// HelmRelease (`helm.toolkit.fluxcd.io/v2`) against helm-controller v1.6.4's CRD and samples, and
// the HelmReleases of Flux's example fleet.

const HR_KINDS: [&str; 1] = ["HelmRelease"];

/// kube-derive requires `spec` at the root; Flux's schema would accept an object without one,
/// which neither Flux (its `interval` is required inside) nor pennant can act on.
///
/// pennant extensions (extra optional properties or enum values: the walker reports only what
/// pennant would reject or prune, so they need no allow-list entry): `spec.dependsOn[].kind`
/// (`HelmRelease`, the default, or `Kustomization`; flux2#3364), `OCIRepository` in
/// `spec.chart.spec.sourceRef.kind` (as pennant's HelmChart) and
/// `spec.chart.spec.verify.matchOIDCIdentity` (the HelmChart's verification, passed through).
const HR_EXTRA_REQUIRED: [(&str, &str, &str); 1] = [("HelmRelease", "", "spec")];

const FLUX_HR: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &HR_EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

fn flux_hr_crd() -> Value {
    let path = flux_module("helm-controller")
        .join("config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml");
    read_docs(&path).remove(0)
}

fn pennant_hr_crd() -> Value {
    pennant_crd("helm.toolkit.fluxcd.io", "HelmRelease")
}

/// Schemas by kind for one served version.
fn hr_schemas(crd: &Value, version: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([("HelmRelease".to_string(), served(crd)[version].clone())])
}

#[test]
fn helm_release_schema_covers_flux() {
    let (flux, ours) = (flux_hr_crd(), pennant_hr_crd());
    let versions: Vec<_> = served(&flux).into_keys().collect();
    assert_eq!(
        served(&ours).into_keys().collect::<Vec<_>>(),
        versions,
        "pennant serves every version Flux serves, and only those"
    );
    assert_eq!(versions, ["v2"]);
    let mut used = Used::default();
    for v in &versions {
        let found = schema_walk::problems(
            &HR_KINDS,
            &hr_schemas(&flux, v),
            &hr_schemas(&ours, v),
            &FLUX_HR,
            &mut used,
        );
        assert!(
            found.is_empty(),
            "pennant's {v} HelmRelease CRD would reject or lose what Flux's accepts:\n  {}",
            found.join("\n  ")
        );
    }
    assert_eq!(
        used.extra_required.len(),
        HR_EXTRA_REQUIRED.len(),
        "stale HR_EXTRA_REQUIRED"
    );
}

/// Negative controls: a field, an enum value, a bound, a CEL rule or a map's values removed
/// from pennant's schema is reported.
#[test]
fn walker_catches_a_removed_helm_release_field() {
    let flux = hr_schemas(&flux_hr_crd(), "v2");
    let check = |edit: &dyn Fn(&mut Value), expect: &str| {
        let mut ours = hr_schemas(&pennant_hr_crd(), "v2");
        edit(ours.get_mut("HelmRelease").unwrap());
        let found = schema_walk::problems(&HR_KINDS, &flux, &ours, &FLUX_HR, &mut Used::default());
        assert!(
            found.iter().any(|p| p == expect),
            "expected {expect:?}, the walker reported {found:#?}"
        );
    };
    check(
        &|s| {
            let r = node_mut(s, ".spec.upgrade.remediation");
            r["properties"].as_object_mut().unwrap().remove("strategy");
        },
        "HelmRelease .spec.upgrade.remediation.strategy: missing in pennant's schema",
    );
    check(
        &|s| {
            let k = node_mut(s, ".spec.chartRef.kind");
            k["enum"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "ExternalArtifact");
        },
        "HelmRelease .spec.chartRef.kind: Flux allows \"ExternalArtifact\", pennant's enum does not",
    );
    check(
        &|s| {
            let h = node_mut(s, ".status.history");
            h["items"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("testHooks");
        },
        "HelmRelease .status.history[].testHooks: missing in pennant's schema",
    );
    check(
        &|s| node_mut(s, ".spec.releaseName")["maxLength"] = json!(40),
        "HelmRelease .spec.releaseName: pennant adds `maxLength: 40`",
    );
    check(
        &|s| {
            node_mut(s, ".spec.install.strategy")["x-kubernetes-validations"][0]["rule"] =
                json!("self.name == 'RetryOnFailure'")
        },
        "HelmRelease .spec.install.strategy: pennant adds CEL rule \"self.name == 'RetryOnFailure'\"",
    );
    check(
        &|s| {
            let v = node_mut(s, ".spec");
            v["properties"]["values"] = json!({"type": "object"});
        },
        "HelmRelease .spec.values: type is None in Flux, Some(\"object\") in pennant",
    );
}

#[test]
fn helm_release_defaults_names_and_columns_match_flux() {
    let (f, o) = (flux_hr_crd(), pennant_hr_crd());
    let (mut fd, mut od) = (BTreeMap::new(), BTreeMap::new());
    defaults(&served(&f)["v2"], "", &mut fd);
    defaults(&served(&o)["v2"], "", &mut od);
    assert_eq!(od, fd, "schema defaults");
    for path in [
        ".spec.chart.spec.version",
        ".spec.uninstall.deletionPropagation",
        ".status",
    ] {
        assert!(fd.contains_key(path), "{path}: {fd:?}");
    }
    for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
        assert_eq!(
            o["spec"]["names"][key], f["spec"]["names"][key],
            "names.{key}"
        );
    }
    assert_eq!(o["spec"]["names"]["shortNames"], json!(["hr"]));
    assert_eq!(o["spec"]["scope"], f["spec"]["scope"]);
    let columns = |crd: &Value| crd["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    assert_eq!(columns(&o), columns(&f), "printer columns");
    let version = |crd: &Value| {
        let v = &crd["spec"]["versions"][0];
        (
            v["served"].clone(),
            v["storage"].clone(),
            v["subresources"].clone(),
        )
    };
    assert_eq!(
        version(&o),
        version(&f),
        "served, storage, status subresource"
    );
    let key = "kustomize.toolkit.fluxcd.io/substitute";
    assert_eq!(f["metadata"]["annotations"][key], "disabled");
    assert_eq!(o["metadata"]["annotations"][key], "disabled");
    let labels = o["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!labels.values().any(|v| v == "flux"), "{labels:?}");
}

/// Parse, round-trip and validate one HelmRelease; the problems found.
fn check_helm_release(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out = vec![];
    validate(doc, schema, "", &mut out);
    match serde_json::from_value::<HelmRelease>(doc.clone()) {
        Ok(typed) => lossy(doc, &serde_json::to_value(&typed).unwrap(), "", &mut out),
        Err(e) => out.push(format!("does not deserialize: {e}")),
    }
    out
}

#[test]
fn flux_helm_release_samples_round_trip() {
    let schema = served(&pennant_hr_crd())["v2"].clone();
    let mut seen = vec![];
    for (path, doc) in flux_samples("helm-controller") {
        if doc["kind"] != "HelmRelease" {
            continue;
        }
        assert_eq!(doc["apiVersion"], "helm.toolkit.fluxcd.io/v2");
        let problems = check_helm_release(&doc, &schema);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(
        seen,
        [
            "helm_v2_helmrelease_gitrepository.yaml",
            "helm_v2_helmrelease_helmrepository.yaml",
            "helm_v2_helmrelease_ocirepository.yaml"
        ]
    );
}

/// Kustomize's strategic merge of the fleet's value patches, for what they hold: maps merge,
/// anything else (scalars, lists of scalars) is replaced.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[test]
fn example_fleet_helm_releases_are_accepted() {
    let schema = served(&pennant_hr_crd())["v2"].clone();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flux2-kustomize-helm-example");
    let mut files = vec![];
    yaml_files(&root, &mut files);
    let mut seen = vec![];
    let mut patches = BTreeMap::new();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for doc in read_docs(path) {
            if doc["kind"] != "HelmRelease" {
                continue;
            }
            assert_eq!(doc["apiVersion"], "helm.toolkit.fluxcd.io/v2", "{rel}");
            // apps/<env>/podinfo-values.yaml: a kustomize patch of the base release
            if rel.ends_with("podinfo-values.yaml") {
                patches.insert(rel.clone(), doc);
                continue;
            }
            let problems = check_helm_release(&doc, &schema);
            assert!(problems.is_empty(), "{rel}: {problems:#?}");
            seen.push(format!(
                "{}/{}",
                doc["metadata"]["namespace"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    assert_eq!(
        seen,
        [
            "podinfo/podinfo",
            "cert-manager/cert-manager",
            "envoy-gateway-system/envoy-gateway"
        ]
    );
    // the staging and production releases the apps overlays build
    let base = read_docs(&root.join("apps/base/podinfo/release.yaml")).remove(0);
    assert_eq!(
        patches.keys().collect::<Vec<_>>(),
        [
            "apps/production/podinfo-values.yaml",
            "apps/staging/podinfo-values.yaml"
        ]
    );
    for (rel, patch) in &patches {
        let mut doc = base.clone();
        merge(&mut doc, patch);
        let problems = check_helm_release(&doc, &schema);
        assert!(problems.is_empty(), "{rel} on the base: {problems:#?}");
        let hr: HelmRelease = serde_json::from_value(doc).unwrap();
        let spec = hr.spec.chart.as_ref().unwrap();
        assert_eq!(spec.spec.chart, "podinfo");
        assert!(spec.spec.version.is_some(), "{rel}");
        assert_eq!(hr.release_name(), "podinfo");
        assert_eq!(hr.helm_chart_name(), "podinfo-podinfo");
    }
    // the same fleet as shared with the other tests, when present: byte for byte
    let shared = Path::new("/work/shared/compat/flux2-kustomize-helm-example");
    if shared.is_dir() {
        for path in &files {
            let rel = path.strip_prefix(&root).unwrap();
            assert_eq!(
                std::fs::read(shared.join(rel)).ok(),
                std::fs::read(path).ok(),
                "{}",
                rel.display()
            );
        }
    }
}

/// Negative control of [`validate`] and of the round trip for HelmRelease: each broken
/// manifest is reported.
#[test]
fn helm_release_validation_rejects_what_flux_rejects() {
    let schema = served(&pennant_hr_crd())["v2"].clone();
    let good = json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "podinfo", "namespace": "podinfo"},
        "spec": {"interval": "10m", "releaseName": "podinfo",
                 "chart": {"spec": {"chart": "podinfo",
                     "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}},
                 "valuesFrom": [{"kind": "ConfigMap", "name": "values"}],
                 "values": {"replicaCount": 2, "any": [{"thing": null}]}},
    });
    assert_eq!(check_helm_release(&good, &schema), Vec::<String>::new());
    let cases: [(&str, Value, &str); 7] = [
        ("/spec/interval", Value::Null, ".spec.interval: required"),
        (
            "/spec/releaseName",
            json!("x".repeat(54)),
            ".spec.releaseName: length 54 out of bounds",
        ),
        (
            "/spec/chart/spec/sourceRef/kind",
            json!("Bucketful"),
            ".spec.chart.spec.sourceRef.kind: \"Bucketful\" is not one of",
        ),
        (
            "/spec/upgrade",
            json!({"remediation": {"strategy": "reinstall"}}),
            ".spec.upgrade.remediation.strategy: \"reinstall\" is not one of",
        ),
        (
            "/spec/valuesFrom",
            json!([{"kind": "Secret", "name": "v", "valuesKey": "a b"}]),
            ".spec.valuesFrom[0].valuesKey: \"a b\" does not match",
        ),
        (
            "/spec/install",
            json!({"remediation": {"retries": "3"}}),
            ".spec.install.remediation.retries: \"3\" is not of type",
        ),
        ("/spec/wait", json!(true), ".spec.wait: unknown field"),
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
        let found = check_helm_release(&doc, &schema);
        assert!(
            found.iter().any(|p| p.starts_with(expect)),
            "{pointer}: expected {expect:?}, found {found:#?}"
        );
    }
}
