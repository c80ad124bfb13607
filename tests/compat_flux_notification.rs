//! pennant's notification CRDs and types accept what Flux's accept.
//!
//! Input: Flux notification-controller v1.9.3's own CRDs and samples (`config/crd/bases`,
//! `config/samples` of the `github.com/fluxcd/notification-controller` module zip, the newest
//! the Go module proxy serves), fetched into the Go module cache by
//! `e2e/tools/flux-crds notification-controller`.
//!
//! - [`notification_schemas_cover_flux`]: every property path, type, enum value and bound of
//!   Flux's `openAPIV3Schema` for each kind of [`KINDS`] is accepted by pennant's schema (the
//!   walker of `tests/support/schema_walk.rs`), and pennant adds no constraint Flux lacks except
//!   the allow-listed ones; pennant serves the same versions.
//!   [`walker_catches_a_removed_notification_field`] is the negative control.
//! - [`notification_defaults_names_and_columns_match_flux`]: same defaults
//!   (`eventSeverity: info`), names, categories, scope, printer columns and the
//!   `kustomize.toolkit.fluxcd.io/substitute: disabled` annotation.
//! - [`flux_notification_samples_round_trip`]: Flux's sample Alert and Providers parse into
//!   pennant's types and serialise back without losing a field.
//!
//! Receiver (`v1`) joins by adding `("Receiver", "receivers", "v1")` to [`KINDS`] and its type to
//! [`pennant_crd`]'s group filter (already the whole group) and the samples' match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pennant::api::crds;
use pennant::api::notification::{Alert, Provider};
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{Allow, Used, lossy, node_mut};

/// The notification kinds pennant serves: (kind, plural, served version).
const KINDS: [(&str, &str, &str); 2] = [
    ("Provider", "providers", "v1beta3"),
    ("Alert", "alerts", "v1beta3"),
];

/// Required properties pennant adds: kube-derive requires `spec` at the root (Flux's schema
/// accepts an object without one, which neither controller can act on).
const EXTRA_REQUIRED: [(&str, &str, &str); 2] = [("Provider", "", "spec"), ("Alert", "", "spec")];

const FLUX: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(k, _, _)| *k).collect()
}

/// The module directory of notification-controller in the Go module cache.
fn flux_module() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/tools/flux-crds");
    let out = Command::new(&script)
        .arg("notification-controller")
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
    serde_saphyr::from_multiple(&text).unwrap()
}

fn flux_crd(plural: &str) -> Value {
    let path = flux_module().join(format!(
        "config/crd/bases/notification.toolkit.fluxcd.io_{plural}.yaml"
    ));
    read_docs(&path).remove(0)
}

fn pennant_crd(kind: &str) -> Value {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.spec.group == "notification.toolkit.fluxcd.io" && c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("pennant serves no {kind}"));
    serde_json::to_value(crd).unwrap()
}

/// The served versions of a CRD with their schemas.
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

/// Schemas by kind, Flux's and pennant's, at each kind's served version.
fn schemas() -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let (mut flux, mut ours) = (BTreeMap::new(), BTreeMap::new());
    for (kind, plural, version) in KINDS {
        let (f, o) = (flux_crd(plural), pennant_crd(kind));
        assert_eq!(
            served(&o).into_keys().collect::<Vec<_>>(),
            served(&f).into_keys().collect::<Vec<_>>(),
            "{kind}: pennant serves every version Flux serves, and only those"
        );
        flux.insert(kind.to_string(), served(&f)[version].clone());
        ours.insert(kind.to_string(), served(&o)[version].clone());
    }
    (flux, ours)
}

#[test]
fn notification_schemas_cover_flux() {
    let (flux, ours) = schemas();
    let mut used = Used::default();
    let found = schema_walk::problems(&kind_names(), &flux, &ours, &FLUX, &mut used);
    assert!(
        found.is_empty(),
        "pennant's notification CRDs would reject or lose what Flux's accept:\n  {}",
        found.join("\n  ")
    );
    assert_eq!(
        used.extra_required.len(),
        EXTRA_REQUIRED.len(),
        "stale EXTRA_REQUIRED"
    );
    // pennant's Alert also takes Canary sources
    let mut alert = ours["Alert"].clone();
    let kinds = &node_mut(&mut alert, ".spec.eventSources")["items"]["properties"]["kind"]["enum"];
    assert!(
        kinds.as_array().unwrap().contains(&json!("Canary")),
        "{kinds}"
    );
}

/// Negative controls: a field, an enum value or a bound removed from pennant's schema is
/// reported.
#[test]
fn walker_catches_a_removed_notification_field() {
    let (flux, ours) = schemas();
    let check = |kind: &str, edit: &dyn Fn(&mut Value), expect: &str| {
        let mut ours = ours.clone();
        edit(ours.get_mut(kind).unwrap());
        let found = schema_walk::problems(&kind_names(), &flux, &ours, &FLUX, &mut Used::default());
        assert!(
            found.iter().any(|p| p == expect),
            "expected {expect:?}, the walker reported {found:#?}"
        );
    };
    check(
        "Alert",
        &|s| {
            node_mut(s, ".spec")["properties"]
                .as_object_mut()
                .unwrap()
                .remove("inclusionList");
        },
        "Alert .spec.inclusionList: missing in pennant's schema",
    );
    check(
        "Alert",
        &|s| {
            let k = &mut node_mut(s, ".spec.eventSources")["items"]["properties"]["kind"];
            k["enum"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "ArtifactGenerator");
        },
        "Alert .spec.eventSources[].kind: Flux allows \"ArtifactGenerator\", pennant's enum does not",
    );
    check(
        "Provider",
        &|s| {
            node_mut(s, ".spec.type")["enum"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "otel");
        },
        "Provider .spec.type: Flux allows \"otel\", pennant's enum does not",
    );
    check(
        "Provider",
        &|s| node_mut(s, ".spec.channel")["maxLength"] = json!(40),
        "Provider .spec.channel: pennant adds `maxLength: 40`",
    );
}

/// Every `default` in a schema, by path.
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
fn notification_defaults_names_and_columns_match_flux() {
    for (kind, plural, version) in KINDS {
        let (f, o) = (flux_crd(plural), pennant_crd(kind));
        let (mut fd, mut od) = (BTreeMap::new(), BTreeMap::new());
        defaults(&served(&f)[version], "", &mut fd);
        defaults(&served(&o)[version], "", &mut od);
        assert_eq!(od, fd, "{kind}: schema defaults");
        for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
            assert_eq!(
                o["spec"]["names"][key], f["spec"]["names"][key],
                "{kind}: names.{key}"
            );
        }
        assert_eq!(o["spec"]["scope"], f["spec"]["scope"], "{kind}: scope");
        let columns = |crd: &Value| crd["spec"]["versions"][0]["additionalPrinterColumns"].clone();
        assert_eq!(columns(&o), columns(&f), "{kind}: printer columns");
        let key = "kustomize.toolkit.fluxcd.io/substitute";
        assert_eq!(f["metadata"]["annotations"][key], "disabled");
        assert_eq!(o["metadata"]["annotations"][key], "disabled", "{kind}");
        let labels = o["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(!labels.values().any(|v| v == "flux"), "{kind}: {labels:?}");
    }
    let (f, _) = schemas();
    let mut fd = BTreeMap::new();
    defaults(&f["Alert"], "", &mut fd);
    assert_eq!(fd[".spec.eventSeverity"], "info");
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let mut out = vec![];
    lossy(doc, &serde_json::to_value(&typed).unwrap(), "", &mut out);
    out
}

#[test]
fn flux_notification_samples_round_trip() {
    let dir = flux_module().join("config/samples");
    let mut seen = BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        for doc in read_docs(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let lost = match kind.as_str() {
                "Provider" => round_trip::<Provider>(&doc),
                "Alert" => round_trip::<Alert>(&doc),
                _ => continue, // Secrets, and Receiver (another type)
            };
            assert!(lost.is_empty(), "{}: {lost:?}", path.display());
            *seen.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(seen.get("Alert"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("Provider"), Some(&2), "{seen:?}");
}
