//! pennant's notification CRDs and types accept what Flux's accept: Provider and Alert
//! (`v1beta3`) and Receiver (`v1`).
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
//!   (`eventSeverity: info`, Receiver `interval: 10m`), names, categories, scope, printer
//!   columns, the Receiver spec's CEL rules and the
//!   `kustomize.toolkit.fluxcd.io/substitute: disabled` annotation.
//! - [`flux_notification_samples_round_trip`]: Flux's sample Alert, Providers and Receiver parse
//!   into pennant's types and serialise back without losing a field.

use std::collections::BTreeMap;

use pennant::api::notification::{Alert, Provider};
use pennant::api::receiver::Receiver;
use serde_json::{Value, json};

#[path = "support/schema_walk.rs"]
mod schema_walk;
use schema_walk::{
    Allow, Used, defaults, flux_module, flux_samples, node_mut, pennant_crd, read_docs, round_trip,
    served,
};

/// The notification kinds pennant serves: (kind, plural, served version).
const KINDS: [(&str, &str, &str); 3] = [
    ("Provider", "providers", "v1beta3"),
    ("Alert", "alerts", "v1beta3"),
    ("Receiver", "receivers", "v1"),
];

/// Required properties pennant adds: kube-derive requires `spec` at the root (Flux's schema
/// accepts an object without one, which neither controller can act on).
const EXTRA_REQUIRED: [(&str, &str, &str); 3] = [
    ("Provider", "", "spec"),
    ("Alert", "", "spec"),
    ("Receiver", "", "spec"),
];

const FLUX: Allow = Allow {
    upstream: "Flux",
    number_as_integer: &[],
    extra_required: &EXTRA_REQUIRED,
    extra_cel_rules: &[],
};

fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(k, _, _)| *k).collect()
}

const GROUP: &str = "notification.toolkit.fluxcd.io";

/// Flux's CRD of a kind, by its plural.
fn flux_crd(plural: &str) -> Value {
    let path = flux_module("notification-controller")
        .join(format!("config/crd/bases/{GROUP}_{plural}.yaml"));
    read_docs(&path).remove(0)
}

/// Schemas by kind, Flux's and pennant's, at each kind's served version.
fn schemas() -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let (mut flux, mut ours) = (BTreeMap::new(), BTreeMap::new());
    for (kind, plural, version) in KINDS {
        let (f, o) = (flux_crd(plural), pennant_crd(GROUP, kind));
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
    check(
        "Receiver",
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
        "Receiver",
        &|s| {
            let t = node_mut(s, ".spec.type");
            t["enum"].as_array_mut().unwrap().retain(|v| v != "gitlab");
        },
        "Receiver .spec.type: Flux allows \"gitlab\", pennant's enum does not",
    );
    check(
        "Receiver",
        &|s| node_mut(s, ".spec.resources")["items"]["properties"]["name"]["maxLength"] = json!(63),
        "Receiver .spec.resources[].name: pennant adds `maxLength: 63`",
    );
    check(
        "Receiver",
        &|s| {
            node_mut(s, ".status")["properties"]
                .as_object_mut()
                .unwrap()
                .remove("webhookPath");
        },
        "Receiver .status.webhookPath: missing in pennant's schema",
    );
}

#[test]
fn notification_defaults_names_and_columns_match_flux() {
    for (kind, plural, version) in KINDS {
        let (f, o) = (flux_crd(plural), pennant_crd(GROUP, kind));
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
    let mut fd = BTreeMap::new();
    defaults(&f["Receiver"], "", &mut fd);
    assert_eq!(fd[".spec.interval"], "10m", "{fd:?}");

    // Receiver: the spec's CEL rules, with their messages, and oidcProviders as a map list
    let (f, o) = (flux_crd("receivers"), pennant_crd(GROUP, "Receiver"));
    let rules =
        |crd: &Value| served(crd)["v1"]["properties"]["spec"]["x-kubernetes-validations"].clone();
    assert!(rules(&f).is_array(), "Flux's Receiver has CEL rules");
    assert_eq!(
        rules(&o),
        rules(&f),
        "the Receiver spec's CEL rules and messages"
    );
    let list_type = |crd: &Value| {
        let p = &served(crd)["v1"]["properties"]["spec"]["properties"]["oidcProviders"];
        (
            p["x-kubernetes-list-type"].clone(),
            p["x-kubernetes-list-map-keys"].clone(),
        )
    };
    assert_eq!(list_type(&o), list_type(&f), "oidcProviders is a map list");
}

#[test]
fn flux_notification_samples_round_trip() {
    let mut seen = BTreeMap::<String, usize>::new();
    for (path, doc) in flux_samples("notification-controller") {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let lost = match kind.as_str() {
            "Provider" => round_trip::<Provider>(&doc),
            "Alert" => round_trip::<Alert>(&doc),
            "Receiver" => round_trip::<Receiver>(&doc),
            _ => continue, // the samples' Secrets
        };
        assert!(lost.is_empty(), "{}: {lost:?}", path.display());
        *seen.entry(kind).or_default() += 1;
    }
    assert_eq!(seen.get("Alert"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("Provider"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("Receiver"), Some(&1), "{seen:?}");
}
