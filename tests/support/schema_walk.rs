//! The schema walker shared by the compatibility tests (`tests/compat.rs` for Flagger's CRDs,
//! `tests/compat_flux.rs` for Flux's): it compares an upstream CRD's `openAPIV3Schema` with
//! pennant's node by node and reports every field or value the upstream schema accepts and
//! pennant's would reject or prune (a missing property, another type, a narrower enum, an added
//! bound, pattern, format, CEL rule or required field), except the differences an [`Allow`]
//! list names with their reason. Also the helpers the Flux walks share: the Flux module's
//! directory, YAML documents, pennant's CRD of a kind, served versions, defaults, round trips.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Deliberate differences from one upstream, each entry a reason written where it is declared.
pub struct Allow {
    /// Upstream name in messages (`Flagger`, `Flux`).
    pub upstream: &'static str,
    /// (kind, path) typed `number` upstream and `integer` in pennant.
    pub number_as_integer: &'static [(&'static str, &'static str)],
    /// (kind, path of the object, property) pennant requires and upstream does not.
    pub extra_required: &'static [(&'static str, &'static str, &'static str)],
    /// (kind, path, rule) CEL rules pennant adds.
    pub extra_cel_rules: &'static [(&'static str, &'static str, &'static str)],
}

/// Root properties every CRD object has, served by the API server itself whatever the schema
/// says; upstream schemas list them, kube-derive's does not.
pub const IMPLICIT_ROOT_PROPERTIES: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Keywords that narrow what a schema accepts. pennant's schema may use them only where
/// upstream's has the same (or a wider) constraint; checked one by one in [`compare`].
pub const NARROWING_KEYWORDS: [&str; 16] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
];

/// What the walker uses from the allow-lists, so that unused entries can be reported.
#[derive(Default)]
pub struct Used {
    pub number_as_integer: BTreeSet<(String, String)>,
    pub extra_required: BTreeSet<(String, String, String)>,
    pub cel: BTreeSet<(String, String, String)>,
}

pub fn required_set(s: &Value) -> BTreeSet<String> {
    s["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Properties a node requires for sure: its `required`, plus those every `oneOf` (or `anyOf`)
/// branch requires.
pub fn effective_required(s: &Value) -> BTreeSet<String> {
    let mut req = required_set(s);
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = s[key].as_array() {
            let mut common: Option<BTreeSet<String>> = None;
            for b in branches {
                let r = required_set(b);
                common = Some(match common {
                    None => r,
                    Some(c) => c.intersection(&r).cloned().collect(),
                });
            }
            req.extend(common.unwrap_or_default());
        }
    }
    req
}

pub fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// Compare the upstream schema node `f` with pennant's `o` at `path`; push one line per problem.
pub fn compare(
    kind: &str,
    f: &Value,
    o: &Value,
    path: &str,
    allow: &Allow,
    used: &mut Used,
    out: &mut Vec<String>,
) {
    let up = allow.upstream;
    // type
    let (ft, ot) = (f["type"].as_str(), o["type"].as_str());
    let int_or_string = is_true(&f["x-kubernetes-int-or-string"]);
    if int_or_string {
        if !is_true(&o["x-kubernetes-int-or-string"]) {
            out.push(format!(
                "{path}: {up} takes an int or a string, pennant {ot:?}"
            ));
        }
    } else if ft != ot {
        let key = (kind.to_string(), path.to_string());
        if ft == Some("number")
            && ot == Some("integer")
            && allow.number_as_integer.contains(&(kind, path))
        {
            used.number_as_integer.insert(key);
        } else {
            out.push(format!("{path}: type is {ft:?} in {up}, {ot:?} in pennant"));
        }
    }

    // constraints pennant adds
    for kw in NARROWING_KEYWORDS {
        if o.get(kw).is_some() && o.get(kw) != f.get(kw) {
            out.push(format!("{path}: pennant adds `{kw}: {}`", o[kw]));
        }
    }
    if let Some(p) = o["pattern"].as_str()
        && f["pattern"].as_str() != Some(p)
    {
        out.push(format!(
            "{path}: pennant's pattern {p:?} differs from {up}'s {}",
            f["pattern"]
        ));
    }
    if let Some(ours) = o["enum"].as_array() {
        match f["enum"].as_array() {
            None => out.push(format!(
                "{path}: pennant has an enum, {up} accepts any value"
            )),
            Some(theirs) => {
                for v in theirs.iter().filter(|v| !ours.contains(v)) {
                    out.push(format!("{path}: {up} allows {v}, pennant's enum does not"));
                }
            }
        }
    }
    if ot == Some("string")
        && let Some(fmt) = o["format"].as_str()
        && f["format"].as_str() != Some(fmt)
    {
        out.push(format!("{path}: pennant adds string format {fmt:?}"));
    }
    if let Some(rules) = o["x-kubernetes-validations"].as_array() {
        for r in rules {
            let rule = r["rule"].as_str().unwrap_or_default();
            let upstream_has = f["x-kubernetes-validations"]
                .as_array()
                .is_some_and(|theirs| theirs.iter().any(|t| t["rule"] == r["rule"]));
            if upstream_has {
            } else if allow.extra_cel_rules.contains(&(kind, path, rule)) {
                used.cel.insert((kind.into(), path.into(), rule.into()));
            } else {
                out.push(format!("{path}: pennant adds CEL rule {rule:?}"));
            }
        }
    }
    let theirs = effective_required(f);
    for r in effective_required(o).difference(&theirs) {
        if allow.extra_required.contains(&(kind, path, r.as_str())) {
            used.extra_required
                .insert((kind.into(), path.into(), r.clone()));
        } else {
            out.push(format!("{path}: pennant requires `{r}`, {up} does not"));
        }
    }

    // below this node pennant accepts anything
    if is_true(&o["x-kubernetes-preserve-unknown-fields"]) {
        return;
    }

    // children
    if let Some(props) = f["properties"].as_object() {
        for (name, fchild) in props {
            let child = format!("{path}.{name}");
            match o["properties"].get(name) {
                Some(ochild) => compare(kind, fchild, ochild, &child, allow, used, out),
                None if path.is_empty() && IMPLICIT_ROOT_PROPERTIES.contains(&name.as_str()) => {}
                None => out.push(format!("{child}: missing in pennant's schema")),
            }
        }
    }
    if f.get("items").is_some() {
        match o.get("items") {
            Some(oi) => compare(
                kind,
                &f["items"],
                oi,
                &format!("{path}[]"),
                allow,
                used,
                out,
            ),
            None => out.push(format!("{path}[]: missing in pennant's schema")),
        }
    }
    if f["additionalProperties"].is_object() {
        match o.get("additionalProperties") {
            Some(oa) if oa.is_object() => compare(
                kind,
                &f["additionalProperties"],
                oa,
                &format!("{path}.*"),
                allow,
                used,
                out,
            ),
            _ => out.push(format!("{path}.*: map values missing in pennant's schema")),
        }
    }
}

/// Compare the upstream schemas with pennant's for every kind in `kinds`; one line per problem,
/// prefixed with the kind.
pub fn problems(
    kinds: &[&str],
    upstream: &BTreeMap<String, Value>,
    ours: &BTreeMap<String, Value>,
    allow: &Allow,
    used: &mut Used,
) -> Vec<String> {
    let mut out = vec![];
    for kind in kinds {
        let f = upstream
            .get(*kind)
            .unwrap_or_else(|| panic!("{}'s CRDs have no {kind}", allow.upstream));
        let o = ours
            .get(*kind)
            .unwrap_or_else(|| panic!("pennant's CRDs have no {kind}"));
        let mut p = vec![];
        compare(kind, f, o, "", allow, used, &mut p);
        out.extend(p.into_iter().map(|line| format!("{kind} {line}")));
    }
    out
}

/// A JSON pointer-ish path (`.spec.analysis.stepWeights`) to the schema node.
pub fn node_mut<'a>(schema: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = schema;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        cur = &mut cur["properties"][seg];
    }
    cur
}

/// Differences between `before` and `after` (ignoring key order and integer/float spelling).
pub fn lossy(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lossy(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: lost")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lossy(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// The directory of a Flux controller's module (`source-controller`, `kustomize-controller`,
/// `helm-controller`, `notification-controller`) in the Go module cache:
/// `e2e/tools/flux-crds CONTROLLER` prints `<module>/config/crd/bases`, fetching the module
/// zip through the Go module proxy the first time and offline afterwards.
///
/// Panics when the script fails (no Go, or no proxy on a cold cache).
pub fn flux_module(controller: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/tools/flux-crds");
    let out = Command::new(&script)
        .arg(controller)
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

/// Every YAML document of a file, as JSON values. Panics when the file is unreadable.
pub fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap()
}

/// Every YAML document of a Flux controller's `config/samples` (see [`flux_module`]), with its
/// file.
pub fn flux_samples(controller: &str) -> Vec<(PathBuf, Value)> {
    let dir = flux_module(controller).join("config/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|path| read_docs(&path).into_iter().map(move |d| (path.clone(), d)))
        .collect()
}

/// pennant's CRD of `kind` in API `group`, exactly as `crds::all()` generates it.
pub fn pennant_crd(group: &str, kind: &str) -> Value {
    let crd = pennant::api::crds::all()
        .into_iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("pennant serves no {kind} in {group}"));
    serde_json::to_value(crd).unwrap()
}

/// The served versions of a CRD (as JSON) with their `openAPIV3Schema`, by version name.
pub fn served(crd: &Value) -> BTreeMap<String, Value> {
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

/// Every `default` in a schema, by path (`.spec.interval`, `.spec.items[].name`).
pub fn defaults(s: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
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

/// What `doc` loses (or gains) when parsed into `T` and serialised back, as [`lossy`] lines.
/// Panics when `doc` does not parse.
pub fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let mut out = vec![];
    lossy(doc, &serde_json::to_value(&typed).unwrap(), "", &mut out);
    out
}
