//! pennant's Receiver CRD and type accept what Flux's accept.
//!
//! Input: Flux notification-controller's own CRD and sample (`config/crd/bases`,
//! `config/samples` of the `github.com/fluxcd/notification-controller` v1.9.3 module zip, the
//! newest the Go proxy serves), fetched into the Go module cache by
//! `e2e/tools/flux-crds notification-controller` (through the proxy the first time, offline
//! afterwards).
//!
//! - [`receiver_schema_covers_flux`]: every property path, type and enum value of Flux's
//!   `openAPIV3Schema` for Receiver (every version Flux serves: `v1`) is accepted by pennant's
//!   schema (the walker of `tests/support/schema_walk.rs`), with no constraint Flux lacks;
//!   [`walker_catches_a_removed_receiver_field`] is the negative control.
//! - [`receiver_defaults_names_and_columns_match_flux`]: same defaults (`interval: 10m`,
//!   `status.observedGeneration: -1`), names, categories, printer columns and CEL rules.
//! - [`flux_receiver_sample_round_trips`]: Flux's sample parses into pennant's type and
//!   serialises back without losing a field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use pennant::api::crds;
use pennant::api::receiver::Receiver;
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{Allow, Used, lossy, node_mut};

const KINDS: [&str; 1] = ["Receiver"];

/// kube-derive requires `spec` at the root; Flux's schema would accept an object without one,
/// which neither controller can act on (`type` and `resources` are required inside).
const EXTRA_REQUIRED: [(&str, &str, &str); 1] = [("Receiver", "", "spec")];

const FLUX: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

/// The notification-controller module directory in the Go module cache.
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

fn read_docs(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap()
}

fn flux_crd() -> Value {
    let path = flux_module().join("config/crd/bases/notification.toolkit.fluxcd.io_receivers.yaml");
    let doc = read_docs(&path).remove(0);
    assert_eq!(doc["spec"]["names"]["kind"], "Receiver");
    doc
}

fn pennant_crd() -> Value {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Receiver")
        .expect("pennant serves Receiver");
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

fn v1(crd: &Value) -> BTreeMap<String, Value> {
    BTreeMap::from([("Receiver".to_string(), served(crd)["v1"].clone())])
}

#[test]
fn receiver_schema_covers_flux() {
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
        "pennant's Receiver CRD would reject or lose what Flux's accepts:\n  {}",
        found.join("\n  ")
    );
    assert_eq!(
        used.extra_required.len(),
        EXTRA_REQUIRED.len(),
        "stale EXTRA_REQUIRED"
    );
}

/// Negative controls: a field, an enum value or a bound changed in pennant's schema is
/// reported.
#[test]
fn walker_catches_a_removed_receiver_field() {
    let flux = v1(&flux_crd());
    let check = |edit: &dyn Fn(&mut Value), expect: &str| {
        let mut ours = v1(&pennant_crd());
        edit(ours.get_mut("Receiver").unwrap());
        let found = schema_walk::problems(&KINDS, &flux, &ours, &FLUX, &mut Used::default());
        assert!(
            found.iter().any(|p| p == expect),
            "expected {expect:?}, the walker reported {found:#?}"
        );
    };
    check(
        &|s| {
            let r = node_mut(s, ".spec.resources");
            r["items"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("filter");
        },
        "Receiver .spec.resources[].filter: missing in pennant's schema",
    );
    check(
        &|s| {
            let t = node_mut(s, ".spec.type");
            t["enum"].as_array_mut().unwrap().retain(|v| v != "gitlab");
        },
        "Receiver .spec.type: Flux allows \"gitlab\", pennant's enum does not",
    );
    check(
        &|s| node_mut(s, ".spec.resources")["items"]["properties"]["name"]["maxLength"] = json!(63),
        "Receiver .spec.resources[].name: pennant adds `maxLength: 63`",
    );
    check(
        &|s| {
            node_mut(s, ".status")["properties"]
                .as_object_mut()
                .unwrap()
                .remove("webhookPath");
        },
        "Receiver .status.webhookPath: missing in pennant's schema",
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
fn receiver_defaults_names_and_columns_match_flux() {
    let (f, o) = (flux_crd(), pennant_crd());
    let (mut fd, mut od) = (BTreeMap::new(), BTreeMap::new());
    defaults(&served(&f)["v1"], "", &mut fd);
    defaults(&served(&o)["v1"], "", &mut od);
    assert_eq!(od, fd, "schema defaults");
    assert_eq!(fd[".spec.interval"], "10m", "{fd:?}");
    for key in ["plural", "singular", "shortNames", "categories", "listKind"] {
        assert_eq!(
            o["spec"]["names"][key], f["spec"]["names"][key],
            "names.{key}"
        );
    }
    assert_eq!(o["spec"]["scope"], f["spec"]["scope"]);
    let columns = |crd: &Value| crd["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    assert_eq!(columns(&o), columns(&f), "printer columns");
    let rules =
        |crd: &Value| served(crd)["v1"]["properties"]["spec"]["x-kubernetes-validations"].clone();
    assert_eq!(rules(&o), rules(&f), "the spec's CEL rules and messages");
    let list_type = |crd: &Value| {
        let p = &served(crd)["v1"]["properties"]["spec"]["properties"]["oidcProviders"];
        (
            p["x-kubernetes-list-type"].clone(),
            p["x-kubernetes-list-map-keys"].clone(),
        )
    };
    assert_eq!(list_type(&o), list_type(&f), "oidcProviders is a map list");
    let key = "kustomize.toolkit.fluxcd.io/substitute";
    assert_eq!(f["metadata"]["annotations"][key], "disabled");
    assert_eq!(o["metadata"]["annotations"][key], "disabled");
}

#[test]
fn flux_receiver_sample_round_trips() {
    let path = flux_module().join("config/samples/notification_v1_receiver.yaml");
    let mut n = 0;
    for doc in read_docs(&path) {
        if doc["kind"] != "Receiver" {
            continue; // the sample's Secret
        }
        let typed: Receiver = serde_json::from_value(doc.clone()).unwrap();
        let mut lost = vec![];
        lossy(&doc, &serde_json::to_value(&typed).unwrap(), "", &mut lost);
        assert!(lost.is_empty(), "{}: {lost:?}", path.display());
        n += 1;
    }
    assert!(n > 0, "no Receiver in {}", path.display());
}
