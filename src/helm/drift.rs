//! Drift detection and correction of a Helm release, as Flux's helm-controller does it
//! (`spec.driftDetection`, reference/flux.md §2.4; helm-controller `internal/action/diff.go`,
//! `internal/reconcile/correct_cluster_drift.go`, fluxcd/pkg `ssa/jsondiff`), with three of its
//! known problems fixed:
//!
//! - fields pennant's Canary controller owns ([`crate::apply::ownership`]: the replicas of a
//!   target it parked at zero, the apex Service selector, the routes) are never drift and never
//!   reverted, without ignore rules (flagger#1407, flagger#1121); the
//!   `helm.toolkit.fluxcd.io/driftDetection: disabled` annotation Flagger puts on an apex Service
//!   it takes over excludes nothing then: pennant knows exactly which of its fields are the
//!   Canary's, so the user's other edits of that Service are still drift;
//! - a Secret's `data`/`stringData` values are masked in every report, log and event, and the
//!   correction applies the desired object itself, never a diff text (helm-controller#925 wrote
//!   the masked `*** (after)` into a ConfigMap);
//! - drift in `warn` mode is in the `Drifted` condition and a Warning event
//!   ([`DriftReport::status`]), not only in debug logs (helm-controller#1241).
//!
//! Per object of the release manifest ([`parse_manifest`], completed by [`release_objects`]),
//! in manifest order: excluded when it carries the `driftDetection: disabled` label or
//! annotation, when an ignore rule's paths hold `""` for it, when the Canary controller owns it
//! whole, or when the live object carries the opt-out (unless the Canary controller wrote it);
//! `removed` when it is not in the cluster; else a server-side dry-run apply (field manager
//! [`HELM_FIELD_MANAGER`], force) compared with the live object, both without the ignored
//! paths (the user's rules whose `target` selects the object, and the Canary-owned fields):
//! labels and annotations by additions and changes only (controllers add their own), the rest
//! without `metadata` and `status`.

use std::fmt;

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::kustomization::Selector;
use crate::apply::inventory::ObjectId;
use crate::apply::ownership::{Ownership, annotation_pointer, carry_over, without_paths};
use crate::apply::ssa::{Action, Applier, Change, api_failure, comparable, subject};

/// Label or annotation that excludes an object from drift detection (value [`DISABLED`]).
pub const DRIFT_DETECTION_KEY: &str = "helm.toolkit.fluxcd.io/driftDetection";
/// The value of [`DRIFT_DETECTION_KEY`] that excludes an object.
pub const DISABLED: &str = "disabled";
/// Field manager of the dry-run and of the correction: the one the `helm` CLI (Helm 4,
/// server-side apply) writes release objects with, so a correction's fields are the release's
/// and the next upgrade meets no conflict (Flux uses its own name for both, `helm-controller`).
pub const HELM_FIELD_MANAGER: &str = "helm";
/// Condition type of drift (`Drifted`), its reasons and the message without drift (Flux's).
pub const DRIFTED_CONDITION: &str = "Drifted";
pub const DRIFT_DETECTED_REASON: &str = "DriftDetected";
pub const NO_DRIFT_DETECTED_REASON: &str = "NoDriftDetected";
pub const NO_DRIFT_MESSAGE: &str = "No drift detected against the cluster state";
/// Event reasons of a correction (Flux's).
pub const DRIFT_CORRECTED_REASON: &str = "DriftCorrected";
pub const DRIFT_CORRECTION_FAILED_REASON: &str = "DriftCorrectionFailed";

/// Mask of a Secret value added or removed; of the old and the new value when changed.
const MASK: &str = "***";
const MASK_BEFORE: &str = "*** (before)";
const MASK_AFTER: &str = "*** (after)";

/// `spec.driftDetection.mode`: `disabled` (the default), `warn` (report only) or `enabled`
/// (report and correct).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    #[default]
    Disabled,
    Warn,
    Enabled,
}

/// `spec.driftDetection` of a HelmRelease (Flux's `DriftDetection`), field names as Flux's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DriftDetection {
    #[serde(default)]
    pub mode: DriftMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
}

impl DriftDetection {
    /// `warn` or `enabled`: the release is compared with the cluster.
    pub fn must_detect(&self) -> bool {
        self.mode != DriftMode::Disabled
    }
}

/// One `spec.driftDetection.ignore[]` rule (Flux's `IgnoreRule`): JSON Pointers (RFC 6901)
/// left out of the comparison, on every object or on those `target` selects; `""` ignores the
/// whole object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreRule {
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Selector>,
}

/// A release's identity, for messages: `<namespace>/<name>.v<version>` (Flux's
/// `FullReleaseName`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub version: u64,
}

impl Release {
    pub fn full_name(&self) -> String {
        format!("{}/{}.v{}", self.namespace, self.name, self.version)
    }
}

// ---------------------------------------------------------------------------------------------
// The release manifest

/// A release manifest that is not YAML objects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to read objects from release manifest: {0}")]
pub struct ManifestError(pub String);

/// The objects of a Helm release manifest (Helm's stored `manifest`: YAML documents separated
/// by `---` lines, each usually preceded by a `# Source: <chart>/templates/<file>` comment),
/// in order. Empty documents are skipped; a `kind: List` is expanded into its `items`. Errors
/// name the document (its `# Source:` when there is one) and say what is wrong. PURE.
pub fn parse_manifest(manifest: &str) -> Result<Vec<Value>, ManifestError> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in manifest.lines() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---#") {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().expect("one document at least");
            d.push_str(line);
            d.push('\n');
        }
    }
    let mut out = vec![];
    for (i, doc) in docs.iter().enumerate() {
        let source = doc
            .lines()
            .find_map(|l| l.trim().strip_prefix("# Source:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| format!("document {}", i + 1));
        if doc.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            continue;
        }
        let v: Value =
            serde_saphyr::from_str(doc).map_err(|e| ManifestError(format!("{source}: {e}")))?;
        let items = match v {
            Value::Null => continue,
            Value::Object(ref m)
                if m.get("kind").and_then(Value::as_str) == Some("List")
                    && m.get("items").is_some_and(Value::is_array) =>
            {
                m["items"].as_array().cloned().unwrap_or_default()
            }
            v => vec![v],
        };
        for item in items {
            if !item.is_object()
                || item["kind"].as_str().is_none_or(str::is_empty)
                || item["apiVersion"].as_str().is_none_or(str::is_empty)
            {
                return Err(ManifestError(format!(
                    "{source}: not a Kubernetes object (apiVersion and kind are required)"
                )));
            }
            if item["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                return Err(ManifestError(format!(
                    "{source}: {} without metadata.name",
                    item["kind"].as_str().unwrap_or_default()
                )));
            }
            out.push(item);
        }
    }
    Ok(out)
}

/// The release's objects as Helm writes them (Flux's `setHelmMetadata`): label
/// `app.kubernetes.io/managed-by: Helm`, annotations `meta.helm.sh/release-name` and
/// `meta.helm.sh/release-namespace`, and the release namespace on a namespaced object without
/// one (`namespaced` tells, from discovery). PURE.
pub fn release_objects(
    objects: Vec<Value>,
    release_name: &str,
    release_namespace: &str,
    namespaced: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            let meta = &mut o["metadata"];
            if !meta["labels"].is_object() {
                meta["labels"] = json!({});
            }
            meta["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
            if !meta["annotations"].is_object() {
                meta["annotations"] = json!({});
            }
            meta["annotations"]["meta.helm.sh/release-name"] = json!(release_name);
            meta["annotations"]["meta.helm.sh/release-namespace"] = json!(release_namespace);
            if o["metadata"]["namespace"]
                .as_str()
                .is_none_or(str::is_empty)
                && namespaced(&o)
            {
                o["metadata"]["namespace"] = json!(release_namespace);
            }
            o
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Ignore rules and selectors

/// One requirement of a label selector (the API server's syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// Parse a label selector (`a=b,c!=d,e in (f,g),!h,i`); errors name the requirement.
fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    let mut parts = vec![];
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    let bad = |r: &str| format!("invalid selector requirement {r:?}");
    let mut out = vec![];
    for part in parts {
        let r = part.trim();
        if r.is_empty() {
            if selector.trim().is_empty() {
                continue;
            }
            return Err(bad(r));
        }
        let set = |s: &str| -> Result<Vec<String>, String> {
            let inner = s
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| bad(r))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                Err(bad(r))
            } else {
                Ok(k.to_string())
            }
        };
        out.push(if let Some((k, s)) = r.split_once(" notin ") {
            Requirement::NotIn(key(k)?, set(s)?)
        } else if let Some((k, s)) = r.split_once(" in ") {
            Requirement::In(key(k)?, set(s)?)
        } else if let Some(k) = r.strip_prefix('!') {
            Requirement::NotExists(key(k)?)
        } else if let Some((k, v)) = r.split_once("!=") {
            Requirement::NotEq(key(k)?, v.trim().to_string())
        } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            Requirement::Eq(key(k)?, v.trim().to_string())
        } else {
            Requirement::Exists(key(r)?)
        });
    }
    Ok(out)
}

/// A compiled `target` selector: anchored regular expressions for group, version, kind, name
/// and namespace (as kustomize and Flux), label and annotation selectors.
#[derive(Clone, Debug)]
struct CompiledSelector {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Vec<Requirement>,
    annotations: Vec<Requirement>,
}

impl CompiledSelector {
    fn new(s: &Selector) -> Result<Self, String> {
        let re = |what: &str, v: &Option<String>| -> Result<Option<Regex>, String> {
            match v.as_deref().filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => Regex::new(&format!("^(?:{v})$"))
                    .map(Some)
                    .map_err(|e| format!("invalid {what} regex: {e}")),
            }
        };
        let sel = |what: &str, v: &Option<String>| -> Result<Vec<Requirement>, String> {
            parse_selector(v.as_deref().unwrap_or_default())
                .map_err(|e| format!("invalid {what} selector: {e}"))
        };
        Ok(CompiledSelector {
            group: re("group", &s.group)?,
            version: re("version", &s.version)?,
            kind: re("kind", &s.kind)?,
            name: re("name", &s.name)?,
            namespace: re("namespace", &s.namespace)?,
            labels: sel("label", &s.label_selector)?,
            annotations: sel("annotation", &s.annotation_selector)?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let m = |re: &Option<Regex>, v: &str| re.as_ref().is_none_or(|re| re.is_match(v));
        let empty = Map::new();
        let map = |k: &str| obj["metadata"][k].as_object().unwrap_or(&empty);
        m(&self.group, group)
            && m(&self.version, version)
            && m(&self.kind, obj["kind"].as_str().unwrap_or_default())
            && m(
                &self.name,
                obj["metadata"]["name"].as_str().unwrap_or_default(),
            )
            && m(
                &self.namespace,
                obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            )
            && self.labels.iter().all(|r| r.matches(map("labels")))
            && self
                .annotations
                .iter()
                .all(|r| r.matches(map("annotations")))
    }
}

/// The ignore rules of a [`DriftDetection`], their selectors compiled.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<(Option<CompiledSelector>, Vec<String>)>,
}

impl IgnoreRules {
    /// Compile `rules`. Errors as Flux's: `failed to create ignore rule selector: invalid name
    /// regex: …`, or a path that is not a JSON Pointer.
    pub fn compile(rules: &[IgnoreRule]) -> Result<Self, String> {
        let mut out = vec![];
        for r in rules {
            for p in &r.paths {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(format!(
                        "invalid ignore rule path {p:?}: a JSON Pointer starts with '/'"
                    ));
                }
            }
            let sel = r
                .target
                .as_ref()
                .map(CompiledSelector::new)
                .transpose()
                .map_err(|e| format!("failed to create ignore rule selector: {e}"))?;
            out.push((sel, r.paths.clone()));
        }
        Ok(IgnoreRules { rules: out })
    }

    /// The paths ignored on `obj` (a release object): those of every rule without a target or
    /// whose target selects it.
    pub fn paths_for(&self, obj: &Value) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for (sel, paths) in &self.rules {
            if sel.as_ref().is_none_or(|s| s.matches(obj)) {
                for p in paths {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
        }
        out
    }
}

/// True when `obj` opts out of drift detection (`helm.toolkit.fluxcd.io/driftDetection:
/// disabled` as a label or an annotation, Flux's exclusion selector). PURE.
pub fn opted_out(obj: &Value) -> bool {
    ["labels", "annotations"]
        .iter()
        .any(|m| obj["metadata"][m][DRIFT_DETECTION_KEY].as_str() == Some(DISABLED))
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// One change that would bring the live object back to the release's (a JSON Patch operation
/// from live to desired): `op` is `add`, `replace` or `remove`; `value` the desired value (not
/// for `remove`), `oldValue` the live one (not for `add`). A Secret's `data`/`stringData`
/// values are masked ([`mask_secret_ops`]).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftOp {
    pub op: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_value: Option<Value>,
}

fn push_op(
    out: &mut Vec<DriftOp>,
    op: &'static str,
    path: String,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    out.push(DriftOp {
        op,
        path,
        value: new.cloned(),
        old_value: old.cloned(),
    });
}

/// The operations from `live` to `desired` below `path`: objects key by key, lists of the same
/// length item by item, anything else replaced whole.
fn diff_values(path: &str, live: &Value, desired: &Value, out: &mut Vec<DriftOp>) {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            for (k, dv) in d {
                let p = format!("{path}/{}", crate::apply::ownership::escape(k));
                match l.get(k) {
                    None => push_op(out, "add", p, None, Some(dv)),
                    Some(lv) => diff_values(&p, lv, dv, out),
                }
            }
            for (k, lv) in l {
                if !d.contains_key(k) {
                    let p = format!("{path}/{}", crate::apply::ownership::escape(k));
                    push_op(out, "remove", p, Some(lv), None);
                }
            }
        }
        (Value::Array(l), Value::Array(d)) if l.len() == d.len() => {
            for (i, (lv, dv)) in l.iter().zip(d).enumerate() {
                diff_values(&format!("{path}/{i}"), lv, dv, out);
            }
        }
        (Value::Number(l), Value::Number(d)) if l.as_f64() == d.as_f64() => {}
        (l, d) if l == d => {}
        (l, d) => push_op(out, "replace", path.to_string(), Some(l), Some(d)),
    }
}

/// The drift of one object: the operations that bring `live` back to `merged` (the release
/// object server-side dry-run applied onto it), both without the `ignored` pointers. Labels
/// and annotations count only when added or changed (controllers add their own); the rest of
/// `metadata`, `status` and what [`comparable`] drops are the server's. A Secret's values are
/// masked. PURE.
pub fn diff_object(live: &Value, merged: &Value, ignored: &[String]) -> Vec<DriftOp> {
    let live = without_paths(live, ignored);
    let merged = without_paths(merged, ignored);
    let mut ops = vec![];
    for m in ["labels", "annotations"] {
        let (l, d) = (&live["metadata"][m], &merged["metadata"][m]);
        let Some(d) = d.as_object() else { continue };
        let empty = Map::new();
        let l = l.as_object().unwrap_or(&empty);
        for (k, dv) in d {
            let p = format!("/metadata/{m}/{}", crate::apply::ownership::escape(k));
            match l.get(k) {
                None => push_op(&mut ops, "add", p, None, Some(dv)),
                Some(lv) if lv != dv => push_op(&mut ops, "replace", p, Some(lv), Some(dv)),
                Some(_) => {}
            }
        }
    }
    let strip = |o: &Value| {
        let mut o = comparable(o);
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
        }
        o
    };
    diff_values("", &strip(&live), &strip(&merged), &mut ops);
    if is_secret(merged_or(&merged, &live)) {
        mask_secret_ops(&mut ops);
    }
    ops
}

fn merged_or<'a>(a: &'a Value, b: &'a Value) -> &'a Value {
    if a.is_object() { a } else { b }
}

fn is_secret(obj: &Value) -> bool {
    obj["kind"] == "Secret" && obj["apiVersion"] == "v1"
}

/// Mask the values of a Secret's `data` and `stringData` in `ops` (Flux's
/// `MaskSecretPatchData`): `***` for a key added or removed, `*** (before)` / `*** (after)` for
/// one changed; `/data` or `/stringData` as a whole are masked key by key. PURE.
pub fn mask_secret_ops(ops: &mut [DriftOp]) {
    for op in ops {
        let whole = op.path == "/data" || op.path == "/stringData";
        let below = op.path.starts_with("/data/") || op.path.starts_with("/stringData/");
        if whole {
            let empty = Map::new();
            let old = op
                .old_value
                .as_ref()
                .and_then(Value::as_object)
                .unwrap_or(&empty)
                .clone();
            let new = op
                .value
                .as_ref()
                .and_then(Value::as_object)
                .unwrap_or(&empty)
                .clone();
            let mask = |m: &Map<String, Value>, other: &Map<String, Value>, changed: &str| {
                m.iter()
                    .map(|(k, v)| {
                        let s = match other.get(k) {
                            Some(o) if o != v => changed,
                            _ => MASK,
                        };
                        (k.clone(), Value::String(s.into()))
                    })
                    .collect::<Map<_, _>>()
            };
            if op.old_value.is_some() {
                op.old_value = Some(Value::Object(mask(&old, &new, MASK_BEFORE)));
            }
            if op.value.is_some() {
                op.value = Some(Value::Object(mask(&new, &old, MASK_AFTER)));
            }
        } else if below {
            let both = op.old_value.is_some() && op.value.is_some();
            let (before, after) = if both {
                (MASK_BEFORE, MASK_AFTER)
            } else {
                (MASK, MASK)
            };
            if op.old_value.is_some() {
                op.old_value = Some(Value::String(before.into()));
            }
            if op.value.is_some() {
                op.value = Some(Value::String(after.into()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report

/// What the comparison found for one object.
#[derive(Clone, Debug, PartialEq)]
pub enum DriftState {
    /// The cluster has the release's object.
    Unchanged,
    /// Left out: opt-out label or annotation, an ignore rule for `""`, or owned whole by the
    /// Canary controller.
    Excluded,
    /// Not in the cluster (Flux's summary says `removed`).
    Missing,
    /// Differs; the operations that bring it back (Secret values masked).
    Changed(Vec<DriftOp>),
}

/// One object of the release and its drift.
#[derive(Clone, PartialEq)]
pub struct ObjectDrift {
    pub id: ObjectId,
    /// The object's `apiVersion`.
    pub api_version: String,
    pub state: DriftState,
    /// The pointers left out of the comparison: the user's ignore rules, then the Canary
    /// controller's fields.
    pub ignored: Vec<String>,
    /// The object a correction applies: the release's own (never the masked diff), with the
    /// ignored fields' live values carried over. `None` when there is nothing to correct.
    correction: Option<Value>,
}

impl fmt::Debug for ObjectDrift {
    /// Without the correction object (it holds a Secret's values).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectDrift")
            .field("id", &self.id)
            .field("api_version", &self.api_version)
            .field("state", &self.state)
            .field("ignored", &self.ignored)
            .finish_non_exhaustive()
    }
}

impl ObjectDrift {
    /// `Kind/namespace/name`.
    pub fn subject(&self) -> String {
        subject(&self.id)
    }

    /// The summary line (Flux's `SummarizeDiffSet`): `… removed`, `… excluded`, `… changed (A
    /// additions, C changes, R removals)`; `None` when unchanged.
    pub fn summary(&self) -> Option<String> {
        let s = self.subject();
        match &self.state {
            DriftState::Unchanged => None,
            DriftState::Excluded => Some(format!("{s} excluded")),
            DriftState::Missing => Some(format!("{s} removed")),
            DriftState::Changed(ops) => {
                let n = |op| ops.iter().filter(|o| o.op == op).count();
                Some(format!(
                    "{s} changed ({} additions, {} changes, {} removals)",
                    n("add"),
                    n("replace"),
                    n("remove")
                ))
            }
        }
    }

    /// True when missing or changed.
    pub fn drifted(&self) -> bool {
        matches!(self.state, DriftState::Missing | DriftState::Changed(_))
    }
}

/// The drift of a release: one entry per object, in manifest order, and the objects that could
/// not be compared (`Deployment/ns/x dry-run failed (Invalid): …`; a Secret's API message cut
/// to its reason, as Flux masks it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriftReport {
    pub objects: Vec<ObjectDrift>,
    pub errors: Vec<String>,
}

/// What the controller writes for a drift detection: the `Drifted` condition (`True` with
/// reason `DriftDetected`, or `False` with `NoDriftDetected`) and, when drifted, a Warning event
/// with the same reason and message, in `warn` and `enabled` mode alike (helm-controller#1241).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftStatus {
    pub drifted: bool,
    pub reason: &'static str,
    pub message: String,
}

impl DriftReport {
    /// True when an object is missing or changed.
    pub fn has_drift(&self) -> bool {
        self.objects.iter().any(ObjectDrift::drifted)
    }

    /// One line per object not unchanged (Flux's `SummarizeDiffSet`).
    pub fn summary(&self) -> String {
        self.objects
            .iter()
            .filter_map(ObjectDrift::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `removed: R, changed: C, excluded: E` (Flux's `SummarizeDiffSetBrief`, for the info log).
    pub fn brief(&self) -> String {
        let n = |f: fn(&DriftState) -> bool| self.objects.iter().filter(|o| f(&o.state)).count();
        format!(
            "removed: {}, changed: {}, excluded: {}",
            n(|s| matches!(s, DriftState::Missing)),
            n(|s| matches!(s, DriftState::Changed(_))),
            n(|s| matches!(s, DriftState::Excluded)),
        )
    }

    /// The condition and event (see [`DriftStatus`]); `None` when comparisons failed and
    /// nothing drifted: the cluster state is unknown then (Flux: "unable to determine cluster
    /// state", the errors in [`Self::errors`]).
    pub fn status(&self, release: &Release) -> Option<DriftStatus> {
        if self.has_drift() {
            Some(DriftStatus {
                drifted: true,
                reason: DRIFT_DETECTED_REASON,
                message: format!(
                    "Cluster state of release {} has drifted from the desired state:\n{}",
                    release.full_name(),
                    self.summary()
                ),
            })
        } else if self.errors.is_empty() {
            Some(DriftStatus {
                drifted: false,
                reason: NO_DRIFT_DETECTED_REASON,
                message: NO_DRIFT_MESSAGE.into(),
            })
        } else {
            None
        }
    }

    /// The masked patch of every changed object, for the debug log:
    /// `[{"resource": "Kind/ns/name", "patch": [...]}, {"resource": …, "removed": true}]`.
    pub fn patches(&self) -> Value {
        Value::Array(
            self.objects
                .iter()
                .filter_map(|o| match &o.state {
                    DriftState::Changed(ops) => {
                        Some(json!({"resource": o.subject(), "patch": ops}))
                    }
                    DriftState::Missing => Some(json!({"resource": o.subject(), "removed": true})),
                    _ => None,
                })
                .collect(),
        )
    }
}

/// The outcome of a correction: what was applied (`created` or `configured`) and what failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Correction {
    pub applied: Vec<Change>,
    pub errors: Vec<String>,
}

impl Correction {
    /// The event of a correction (type, reason, message), as Flux's: `Normal`/`DriftCorrected`
    /// "Cluster state of release ns/name.vN has been corrected:\n<change set>", or
    /// `Warning`/`DriftCorrectionFailed` "Failed to [partially ]correct cluster state of release
    /// …:\n<errors>[\n\nSuccessful corrections:\n<change set>]". `None` when nothing was done.
    pub fn event(&self, release: &Release) -> Option<(&'static str, &'static str, String)> {
        let changes = self
            .applied
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        if !self.errors.is_empty() {
            let partially = if self.applied.is_empty() {
                ""
            } else {
                "partially "
            };
            let mut m = format!(
                "Failed to {partially}correct cluster state of release {}:\n{}",
                release.full_name(),
                self.errors.join("\n")
            );
            if !self.applied.is_empty() {
                m.push_str("\n\nSuccessful corrections:\n");
                m.push_str(&changes);
            }
            Some(("Warning", DRIFT_CORRECTION_FAILED_REASON, m))
        } else if !self.applied.is_empty() {
            Some((
                "Normal",
                DRIFT_CORRECTED_REASON,
                format!(
                    "Cluster state of release {} has been corrected:\n{changes}",
                    release.full_name()
                ),
            ))
        } else {
            None
        }
    }
}

/// The live object opts out of drift detection, and not through the annotation the Canary
/// controller writes on the objects it takes over (Flagger adds it so Flux leaves them alone;
/// pennant knows exactly which of their fields are the Canary's, `owned`).
fn live_opted_out(live: &Value, owned: &[String]) -> bool {
    opted_out(live) && !owned.contains(&annotation_pointer(DRIFT_DETECTION_KEY))
}

/// Decide one object from its live copy and dry-run result (PURE): the state, the ignored
/// pointers and the correction object. `desired` is the release object, `user_ignored` the
/// paths the user's rules ignore on it, `owned` the Canary controller's fields of it.
pub fn judge(
    desired: &Value,
    live: Option<&Value>,
    merged: Option<&Value>,
    user_ignored: &[String],
    owned: &[String],
) -> (DriftState, Vec<String>, Option<Value>) {
    let mut ignored: Vec<String> = user_ignored.to_vec();
    for p in owned {
        if !ignored.contains(p) {
            ignored.push(p.clone());
        }
    }
    if opted_out(desired) || ignored.iter().any(String::is_empty) {
        return (DriftState::Excluded, ignored, None);
    }
    let Some(live) = live else {
        return (DriftState::Missing, ignored, Some(desired.clone()));
    };
    if live_opted_out(live, owned) {
        return (DriftState::Excluded, ignored, None);
    }
    let Some(merged) = merged else {
        return (DriftState::Unchanged, ignored, None);
    };
    let ops = diff_object(live, merged, &ignored);
    if ops.is_empty() {
        (DriftState::Unchanged, ignored, None)
    } else {
        let correction = carry_over(desired, live, &ignored);
        (DriftState::Changed(ops), ignored, Some(correction))
    }
}

// ---------------------------------------------------------------------------------------------
// I/O

/// The dynamic API of `obj` (discovered through the applier's cache) and whether its kind is
/// namespaced.
async fn api_of(applier: &Applier, obj: &Value) -> Result<(Api<DynamicObject>, bool), String> {
    let id = ObjectId::of(obj);
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
    let gvk = GroupVersionKind::gvk(&id.group, version, &id.kind);
    let (ar, caps) = applier.resolve(&gvk).await.map_err(|e| {
        crate::apply::ssa::discovery_failure(&subject(&id), &id.kind, api_version, &e)
    })?;
    Ok(match caps.scope {
        Scope::Cluster => (Api::all_with(applier.client().clone(), &ar), false),
        Scope::Namespaced => (
            Api::namespaced_with(applier.client().clone(), &id.namespace, &ar),
            true,
        ),
    })
}

/// A failed call's message; for a Secret only the API server's reason after the last `:`
/// (Flux's `maskSensitiveErrData`: an `Invalid` message may quote the values).
fn failure(obj: &Value, what: &str, e: &kube::Error) -> String {
    let s = subject(&ObjectId::of(obj));
    if is_secret(obj)
        && let kube::Error::Api(status) = e
    {
        let reason = status
            .message
            .rsplit_once(':')
            .map_or(status.message.as_str(), |(_, r)| r)
            .trim();
        return format!("{s} {what}: {reason}");
    }
    api_failure(&s, what, e)
}

/// The release manifest's objects as Helm wrote them: [`parse_manifest`], then
/// [`release_objects`] with the kinds' scope from discovery (a kind discovery does not know
/// counts as namespaced: its dry-run names the problem).
pub async fn desired_objects(
    applier: &Applier,
    manifest: &str,
    release_name: &str,
    release_namespace: &str,
) -> Result<Vec<Value>, ManifestError> {
    let objects = parse_manifest(manifest)?;
    let mut namespaced = std::collections::HashMap::new();
    for o in &objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        if namespaced.contains_key(&(api_version.clone(), kind.clone())) {
            continue;
        }
        let (group, version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let scoped = match applier.resolve(&gvk).await {
            Ok((_, caps)) => !matches!(caps.scope, Scope::Cluster),
            Err(_) => true,
        };
        namespaced.insert((api_version, kind), scoped);
    }
    Ok(release_objects(
        objects,
        release_name,
        release_namespace,
        |o| {
            let key = (
                o["apiVersion"].as_str().unwrap_or_default().to_string(),
                o["kind"].as_str().unwrap_or_default().to_string(),
            );
            namespaced.get(&key).copied().unwrap_or(true)
        },
    ))
}

/// Compare the release `objects` ([`desired_objects`]) with the cluster (see the module doc):
/// per object a GET and, when it exists and is not excluded, a server-side dry-run apply as
/// `field_manager` ([`HELM_FIELD_MANAGER`]). Never writes. An object that cannot be compared
/// is in [`DriftReport::errors`] and the others are still compared (Flux's `Graceful`).
/// Errors: invalid ignore rules.
pub async fn detect(
    applier: &Applier,
    objects: &[Value],
    settings: &DriftDetection,
    ownership: &Ownership,
    field_manager: &str,
) -> Result<DriftReport, String> {
    use futures::StreamExt;
    let rules = IgnoreRules::compile(&settings.ignore)?;
    // the objects are compared side by side (the round trips of one object stay in order):
    // a release's drift check holds its reconcile worker for a few round trips, not for a few
    // per object; the report keeps the objects' order
    // (the futures are made before the stream: a closure in the stream's type makes the
    // reconcile's future not provably `Send`)
    let pending: Vec<_> = objects
        .iter()
        .map(|obj| detect_one(applier, obj, &rules, ownership, field_manager))
        .collect();
    let checks: Vec<Result<ObjectDrift, String>> = futures::stream::iter(pending)
        .buffered(CHECKS_AT_ONCE)
        .collect()
        .await;
    let mut report = DriftReport::default();
    for c in checks {
        match c {
            Ok(o) => report.objects.push(o),
            Err(e) => report.errors.push(e),
        }
    }
    Ok(report)
}

/// Objects [`detect`] compares at once (Flux's `--concurrent-ssa` default).
const CHECKS_AT_ONCE: usize = 4;

/// [`detect`] of one object: its drift, or why it could not be compared.
async fn detect_one(
    applier: &Applier,
    obj: &Value,
    rules: &IgnoreRules,
    ownership: &Ownership,
    field_manager: &str,
) -> Result<ObjectDrift, String> {
    let id = ObjectId::of(obj);
    let user = rules.paths_for(obj);
    let owned = ownership.paths(&id);
    let entry = |state, ignored, correction| ObjectDrift {
        id: id.clone(),
        api_version: obj["apiVersion"].as_str().unwrap_or_default().to_string(),
        state,
        ignored,
        correction,
    };
    // Excluded before any call.
    if let (s @ DriftState::Excluded, ignored, _) = judge(obj, None, None, &user, &owned) {
        return Ok(entry(s, ignored, None));
    }
    let (api, _) = api_of(applier, obj).await?;
    let live = match api.get_opt(&id.name).await {
        Ok(l) => l.map(|l| serde_json::to_value(l).unwrap_or_default()),
        Err(e) => return Err(failure(obj, "read failed", &e)),
    };
    let merged = match &live {
        Some(l) if !live_opted_out(l, &owned) => {
            let params = PatchParams {
                dry_run: true,
                ..PatchParams::apply(field_manager).force()
            };
            match api.patch(&id.name, &params, &Patch::Apply(obj)).await {
                Ok(m) => Some(serde_json::to_value(m).unwrap_or_default()),
                Err(e) => return Err(failure(obj, "dry-run failed", &e)),
            }
        }
        _ => None,
    };
    let (mut state, mut ignored, mut correction) =
        judge(obj, live.as_ref(), merged.as_ref(), &user, &owned);
    // The live copy was read before the dry-run: a field another controller wrote in
    // between (kube-controller-manager's `deployment.kubernetes.io/revision`) is in the
    // dry-run result only and would look like drift. Judge again against a copy read
    // after the dry-run.
    if matches!(state, DriftState::Changed(_))
        && merged.is_some()
        && let Ok(Some(l)) = api.get_opt(&id.name).await
    {
        let l = serde_json::to_value(l).unwrap_or_default();
        (state, ignored, correction) = judge(obj, Some(&l), merged.as_ref(), &user, &owned);
    }
    Ok(entry(state, ignored, correction))
}

/// Correct the drift `report` found (`enabled` mode, Flux's CorrectClusterDrift): apply the
/// release's own object of each missing or changed object, and only those, with server-side
/// apply as `field_manager`, force (the release takes back fields another manager changed),
/// the ignored and Canary-owned fields carrying their live values so nothing the Canary
/// controller or the user's ignore rules keep is reverted. No new Helm revision. Unchanged and
/// excluded objects get no write. Continues past a failed object.
pub async fn correct(applier: &Applier, report: &DriftReport, field_manager: &str) -> Correction {
    let mut out = Correction::default();
    for o in &report.objects {
        let Some(desired) = o.correction.as_ref().filter(|_| o.drifted()) else {
            continue;
        };
        let (api, _) = match api_of(applier, desired).await {
            Ok(a) => a,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        let action = if matches!(o.state, DriftState::Missing) {
            Action::Created
        } else {
            Action::Configured
        };
        let params = PatchParams::apply(field_manager).force();
        match api.patch(&o.id.name, &params, &Patch::Apply(desired)).await {
            Ok(_) => out.applied.push(Change {
                id: o.id.clone(),
                version: o
                    .api_version
                    .rsplit_once('/')
                    .map_or(o.api_version.as_str(), |(_, v)| v)
                    .to_string(),
                action,
            }),
            Err(e) => {
                let what = if action == Action::Created {
                    "creation failure"
                } else {
                    "patch failure"
                };
                out.errors.push(failure(desired, what, &e));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::flagger_istio_canary;
    use crate::api::{CanaryPhase, CanaryStatus};

    const MANIFEST: &str = r#"---
# Source: podinfo/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: podinfo
spec:
  selector:
    app: podinfo
  ports:
    - port: 9898
---
# Source: podinfo/templates/empty.yaml
# nothing rendered here
---
# Source: podinfo/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: other
spec:
  replicas: 2
--- # a comment after the separator
# Source: podinfo/templates/list.yaml
apiVersion: v1
kind: List
items:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata:
      name: podinfo-reader
  - apiVersion: v1
    kind: ConfigMap
    metadata:
      name: podinfo-cm
    data:
      k: "v"
"#;

    #[test]
    fn manifests_parse_as_helm_writes_them() {
        let objs = parse_manifest(MANIFEST).unwrap();
        let ids: Vec<String> = objs.iter().map(|o| subject(&ObjectId::of(o))).collect();
        assert_eq!(
            ids,
            [
                "Service/podinfo",
                "Deployment/other/podinfo",
                "ClusterRole/podinfo-reader",
                "ConfigMap/podinfo-cm"
            ]
        );
        assert_eq!(objs[1]["spec"]["replicas"], 2);
        assert_eq!(parse_manifest("").unwrap(), Vec::<Value>::new());
        assert_eq!(
            parse_manifest("---\n# only\n---\n").unwrap(),
            Vec::<Value>::new()
        );

        for (manifest, want) in [
            (
                "---\n# Source: c/templates/bad.yaml\napiVersion: v1\nkind: [\n",
                "failed to read objects from release manifest: c/templates/bad.yaml: ",
            ),
            (
                "---\n# Source: c/templates/x.yaml\nfoo: bar\n",
                "c/templates/x.yaml: not a Kubernetes object (apiVersion and kind are required)",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                "document 1: ConfigMap without metadata.name",
            ),
        ] {
            let e = parse_manifest(manifest).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn release_objects_carry_helms_metadata_and_the_release_namespace() {
        let objs = release_objects(parse_manifest(MANIFEST).unwrap(), "web", "apps", |o| {
            o["kind"] != "ClusterRole"
        });
        let svc = &objs[0];
        assert_eq!(svc["metadata"]["namespace"], "apps");
        assert_eq!(
            svc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        assert_eq!(
            svc["metadata"]["annotations"]["meta.helm.sh/release-name"],
            "web"
        );
        assert_eq!(
            svc["metadata"]["annotations"]["meta.helm.sh/release-namespace"],
            "apps"
        );
        assert_eq!(objs[1]["metadata"]["namespace"], "other", "kept");
        assert_eq!(objs[2]["metadata"].get("namespace"), None, "cluster-scoped");
    }

    fn rule(paths: &[&str], target: Option<Value>) -> IgnoreRule {
        IgnoreRule {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            target: target.map(|t| serde_json::from_value(t).unwrap()),
        }
    }

    #[test]
    fn ignore_rules_select_objects_as_flux() {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "apps",
                "labels": {"app": "podinfo", "tier": "web"},
                "annotations": {"team": "a"}}});
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "apps", "labels": {"legacy": "yes"}}});
        // (case, target, selects deploy, selects svc)
        let cases: Vec<(&str, Option<Value>, bool, bool)> = vec![
            ("no target: everything", None, true, true),
            ("kind", Some(json!({"kind": "Deployment"})), true, false),
            (
                "kind is anchored",
                Some(json!({"kind": "Deploy"})),
                false,
                false,
            ),
            (
                "kind regex",
                Some(json!({"kind": "Deployment|Service"})),
                true,
                true,
            ),
            ("group", Some(json!({"group": "apps"})), true, false),
            ("version", Some(json!({"version": "v1"})), true, true),
            ("name regex", Some(json!({"name": "pod.*"})), true, true),
            (
                "namespace",
                Some(json!({"namespace": "other"})),
                false,
                false,
            ),
            (
                "label equality and set",
                Some(json!({"labelSelector": "app=podinfo,tier in (web,api)"})),
                true,
                false,
            ),
            (
                "label not-equal matches absent",
                Some(json!({"labelSelector": "tier!=db"})),
                true,
                true,
            ),
            (
                "label notin",
                Some(json!({"labelSelector": "tier notin (web)"})),
                false,
                true,
            ),
            (
                "label does not exist",
                Some(json!({"labelSelector": "!legacy"})),
                true,
                false,
            ),
            (
                "label exists",
                Some(json!({"labelSelector": "legacy"})),
                false,
                true,
            ),
            (
                "annotation selector",
                Some(json!({"annotationSelector": "team==a"})),
                true,
                false,
            ),
            (
                "all must match",
                Some(json!({"kind": "Deployment", "name": "other"})),
                false,
                false,
            ),
        ];
        for (case, target, on_deploy, on_svc) in cases {
            let rules = IgnoreRules::compile(&[rule(&["/spec/replicas"], target)]).unwrap();
            let hit = |o: &Value| rules.paths_for(o) == ["/spec/replicas"];
            assert_eq!(hit(&deploy), on_deploy, "{case}: Deployment");
            assert_eq!(hit(&svc), on_svc, "{case}: Service");
        }
        // paths of several rules add up, once each
        let rules = IgnoreRules::compile(&[
            rule(&["/spec/replicas", "/metadata/labels/x"], None),
            rule(
                &["/spec/replicas", "/spec/selector"],
                Some(json!({"kind": "Deployment"})),
            ),
        ])
        .unwrap();
        assert_eq!(
            rules.paths_for(&deploy),
            ["/spec/replicas", "/metadata/labels/x", "/spec/selector"]
        );
        for (bad, want) in [
            (
                rule(&["/x"], Some(json!({"name": "("}))),
                "failed to create ignore rule selector: invalid name regex",
            ),
            (
                rule(&["spec/replicas"], None),
                "a JSON Pointer starts with '/'",
            ),
            (
                rule(&["/x"], Some(json!({"labelSelector": "a b"}))),
                "invalid label selector",
            ),
        ] {
            let e = IgnoreRules::compile(&[bad]).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "apps", "labels": {"app": "podinfo"},
                "resourceVersion": "7", "generation": 3, "managedFields": [{"manager": "helm"}]},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "podinfod", "image": image, "ports": [{"containerPort": 9898}]}]}}},
            "status": {"readyReplicas": replicas}})
    }

    #[test]
    fn diffs_count_what_the_release_sets_not_what_the_server_or_controllers_add() {
        let live = deployment(2, "podinfo:6.0");
        assert_eq!(diff_object(&live, &live, &[]), vec![]);
        // server-owned metadata, status and a label a controller added: no drift
        let mut merged = live.clone();
        merged["metadata"]["resourceVersion"] = json!("8");
        merged["status"] = json!({});
        let mut live2 = live.clone();
        live2["metadata"]["labels"]["added-by-a-controller"] = json!("x");
        assert_eq!(diff_object(&live2, &merged, &[]), vec![]);

        let merged = deployment(3, "podinfo:6.1");
        let mut live = live.clone();
        live["metadata"]["labels"]["app"] = json!("edited");
        live["spec"]["paused"] = json!(true);
        let ops = diff_object(&live, &merged, &[]);
        let got: Vec<(&str, &str)> = ops.iter().map(|o| (o.op, o.path.as_str())).collect();
        assert_eq!(
            got,
            [
                ("replace", "/metadata/labels/app"),
                ("replace", "/spec/replicas"),
                ("replace", "/spec/template/spec/containers/0/image"),
                ("remove", "/spec/paused"),
            ]
        );
        assert_eq!(ops[1].old_value, Some(json!(2)));
        assert_eq!(ops[1].value, Some(json!(3)));
        // ignored paths are neither side's
        let ignored = vec!["/spec/replicas".to_string(), "/spec/paused".to_string()];
        let got: Vec<String> = diff_object(&live, &merged, &ignored)
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(
            got,
            [
                "/metadata/labels/app",
                "/spec/template/spec/containers/0/image"
            ]
        );
        // a list of another length is replaced whole; 1 and 1.0 are equal
        let a = json!({"spec": {"ports": [{"port": 1}], "n": 1}});
        let b = json!({"spec": {"ports": [{"port": 1}, {"port": 2}], "n": 1.0}});
        let ops = diff_object(&a, &b, &[]);
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].op, ops[0].path.as_str()),
            ("replace", "/spec/ports")
        );
    }

    fn secret(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "apps"}, "type": "Opaque", "data": data})
    }

    /// helm-controller#925: masks are for humans only; the correction is the release's object.
    #[test]
    fn secret_values_are_masked_in_reports_but_never_in_the_correction() {
        let desired = secret(json!({"password": "cmVhbA==", "user": "YWRtaW4="}));
        let live = secret(json!({"password": "aGFja2Vk", "extra": "eA=="}));
        let (state, _, correction) = judge(&desired, Some(&live), Some(&desired), &[], &[]);
        let DriftState::Changed(ops) = &state else {
            panic!("{state:?}")
        };
        let got: Vec<(&str, &str, Option<Value>, Option<Value>)> = ops
            .iter()
            .map(|o| (o.op, o.path.as_str(), o.old_value.clone(), o.value.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "replace",
                    "/data/password",
                    Some(json!(MASK_BEFORE)),
                    Some(json!(MASK_AFTER))
                ),
                ("add", "/data/user", None, Some(json!(MASK))),
                ("remove", "/data/extra", Some(json!(MASK)), None),
            ]
        );
        assert_eq!(correction.unwrap()["data"]["password"], "cmVhbA==");
        let report = DriftReport {
            objects: vec![ObjectDrift {
                id: ObjectId::of(&desired),
                api_version: "v1".into(),
                state,
                ignored: vec![],
                correction: Some(desired.clone()),
            }],
            errors: vec![],
        };
        let shown = format!(
            "{} {} {:?} {}",
            report.summary(),
            report.patches(),
            report,
            report.status(&Release::default()).unwrap().message
        );
        for secret in ["cmVhbA==", "aGFja2Vk", "YWRtaW4=", "eA=="] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("*** (after)"), "{shown}");

        // a whole `data` map, and stringData, are masked key by key
        let mut ops = vec![
            DriftOp {
                op: "add",
                path: "/data".into(),
                value: Some(json!({"a": "c2Vj"})),
                old_value: None,
            },
            DriftOp {
                op: "replace",
                path: "/stringData".into(),
                value: Some(json!({"a": "new", "b": "same"})),
                old_value: Some(json!({"a": "old", "b": "same"})),
            },
            DriftOp {
                op: "replace",
                path: "/type".into(),
                value: Some(json!("Opaque")),
                old_value: Some(json!("x")),
            },
        ];
        mask_secret_ops(&mut ops);
        assert_eq!(ops[0].value, Some(json!({"a": MASK})));
        assert_eq!(ops[1].value, Some(json!({"a": MASK_AFTER, "b": MASK})));
        assert_eq!(ops[1].old_value, Some(json!({"a": MASK_BEFORE, "b": MASK})));
        assert_eq!(ops[2].value, Some(json!("Opaque")), "not data");
        // a ConfigMap is not masked
        let cm = |v| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
        let ops = diff_object(&cm("a"), &cm("b"), &[]);
        assert_eq!(ops[0].value, Some(json!("b")));
    }

    fn apex(selector: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "test", "annotations": annotations},
            "spec": {"type": "ClusterIP", "selector": {"app": selector},
                "ports": [{"name": "http", "port": 9898}]}})
    }

    /// flagger#1407 and #1121: the fields the Canary controller owns are not drift, and the
    /// correction keeps their live values; the user's other edits of the same objects are.
    #[test]
    fn canary_owned_fields_are_neither_drift_nor_reverted() {
        let mut canary = flagger_istio_canary();
        canary.status = Some(CanaryStatus {
            phase: Some(CanaryPhase::Succeeded),
            ..Default::default()
        });
        let owned = Ownership::of_canaries([&canary], "kubernetes");
        let deploy_id = ObjectId {
            namespace: "test".into(),
            ..ObjectId::of(&deployment(0, ""))
        };
        let owned_deploy = owned.paths(&deploy_id);
        let mut desired = deployment(2, "podinfo:6.0");
        desired["metadata"]["namespace"] = json!("test");
        let mut parked = desired.clone();
        parked["spec"]["replicas"] = json!(0);
        // the dry-run puts the release's replicas back: ignored
        let (state, ignored, _) =
            judge(&desired, Some(&parked), Some(&desired), &[], &owned_deploy);
        assert_eq!(state, DriftState::Unchanged);
        assert_eq!(ignored, ["/spec/replicas"]);
        // an image edited by hand on the parked target: drift, corrected with replicas still 0
        let mut edited = parked.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
        let (state, _, correction) =
            judge(&desired, Some(&edited), Some(&desired), &[], &owned_deploy);
        let DriftState::Changed(ops) = state else {
            panic!()
        };
        assert_eq!(
            ops.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
            ["/spec/template/spec/containers/0/image"]
        );
        let correction = correction.unwrap();
        assert_eq!(correction["spec"]["replicas"], 0, "never scaled back up");
        assert_eq!(
            correction["spec"]["template"]["spec"]["containers"][0]["image"],
            "podinfo:6.0"
        );

        // the apex Service: selector and the opt-out annotation are the Canary's
        let svc_id = ObjectId::of(&apex("podinfo", json!({})));
        let owned_svc = owned.paths(&svc_id);
        let desired = apex("podinfo", json!({}));
        let opt_out = json!({DRIFT_DETECTION_KEY: DISABLED, "kustomize.toolkit.fluxcd.io/reconcile": "disabled"});
        let taken = apex("podinfo-primary", opt_out.clone());
        let (state, _, _) = judge(
            &desired,
            Some(&taken),
            Some(&apex("podinfo", opt_out.clone())),
            &[],
            &owned_svc,
        );
        assert_eq!(
            state,
            DriftState::Unchanged,
            "opt-out written by the Canary does not exclude"
        );
        let mut retyped = taken.clone();
        retyped["spec"]["type"] = json!("NodePort");
        let mut merged = apex("podinfo", opt_out.clone());
        merged["spec"]["type"] = json!("ClusterIP");
        let (state, _, correction) =
            judge(&desired, Some(&retyped), Some(&merged), &[], &owned_svc);
        let DriftState::Changed(ops) = state else {
            panic!()
        };
        assert_eq!(
            ops.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
            ["/spec/type"]
        );
        assert_eq!(
            correction.unwrap()["spec"]["selector"]["app"],
            "podinfo-primary"
        );
        // without the Canary, the same opt-out excludes the Service (Flux's behaviour)
        let (state, _, _) = judge(&desired, Some(&retyped), Some(&merged), &[], &[]);
        assert_eq!(state, DriftState::Excluded);
        // generated objects are the Canary's whole
        let primary_id = ObjectId {
            name: "podinfo-primary".into(),
            ..svc_id.clone()
        };
        let (state, _, _) = judge(&desired, None, None, &[], &owned.paths(&primary_id));
        assert_eq!(state, DriftState::Excluded);
    }

    #[test]
    fn exclusions_missing_objects_and_user_ignores() {
        let desired = deployment(2, "a");
        let mut opted = desired.clone();
        opted["metadata"]["labels"][DRIFT_DETECTION_KEY] = json!(DISABLED);
        // (case, desired, live, ignored paths, state)
        type Case<'a> = (&'a str, &'a Value, Option<&'a Value>, Vec<String>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "desired opts out",
                &opted,
                Some(&desired),
                vec![],
                "Excluded",
            ),
            ("live opts out", &desired, Some(&opted), vec![], "Excluded"),
            (
                "ignore rule for the root",
                &desired,
                Some(&desired),
                vec!["".into()],
                "Excluded",
            ),
            ("missing", &desired, None, vec![], "Missing"),
            ("same", &desired, Some(&desired), vec![], "Unchanged"),
        ];
        for (case, d, live, user, want) in cases {
            let (state, _, correction) = judge(d, live, live.map(|_| d), &user, &[]);
            let got = format!("{state:?}");
            assert!(got.starts_with(want), "{case}: {got}");
            assert_eq!(correction.is_some(), want == "Missing", "{case}");
        }
        // a user rule hides the path and keeps its live value on correction
        let live = deployment(5, "b");
        let (state, _, correction) = judge(
            &desired,
            Some(&live),
            Some(&desired),
            &["/spec/replicas".into()],
            &[],
        );
        let DriftState::Changed(ops) = state else {
            panic!()
        };
        assert_eq!(ops.len(), 1);
        assert_eq!(correction.unwrap()["spec"]["replicas"], 5);
    }

    #[test]
    fn messages_are_fluxs() {
        let release = Release {
            name: "podinfo".into(),
            namespace: "apps".into(),
            version: 3,
        };
        let obj = |name: &str, kind: &str, state| ObjectDrift {
            id: ObjectId {
                namespace: "apps".into(),
                name: name.into(),
                group: String::new(),
                kind: kind.into(),
            },
            api_version: "v1".into(),
            state,
            ignored: vec![],
            correction: None,
        };
        let op = |op| DriftOp {
            op,
            path: "/x".into(),
            value: None,
            old_value: None,
        };
        let report = DriftReport {
            objects: vec![
                obj("a", "ConfigMap", DriftState::Unchanged),
                obj(
                    "b",
                    "Service",
                    DriftState::Changed(vec![
                        op("add"),
                        op("replace"),
                        op("replace"),
                        op("remove"),
                    ]),
                ),
                obj("c", "Secret", DriftState::Missing),
                obj("d", "ConfigMap", DriftState::Excluded),
            ],
            errors: vec![],
        };
        let s = report.status(&release).unwrap();
        assert!(s.drifted);
        assert_eq!(s.reason, "DriftDetected");
        assert_eq!(
            s.message,
            "Cluster state of release apps/podinfo.v3 has drifted from the desired state:\n\
             Service/apps/b changed (1 additions, 2 changes, 1 removals)\n\
             Secret/apps/c removed\n\
             ConfigMap/apps/d excluded"
        );
        assert_eq!(report.brief(), "removed: 1, changed: 1, excluded: 1");
        let calm = DriftReport {
            objects: vec![obj("a", "ConfigMap", DriftState::Excluded)],
            errors: vec![],
        };
        assert_eq!(
            calm.status(&release),
            Some(DriftStatus {
                drifted: false,
                reason: "NoDriftDetected",
                message: NO_DRIFT_MESSAGE.into()
            })
        );
        let unknown = DriftReport {
            objects: vec![],
            errors: vec!["x".into()],
        };
        assert_eq!(unknown.status(&release), None);

        let change = |name: &str, action| Change {
            id: ObjectId {
                namespace: "apps".into(),
                name: name.into(),
                group: "apps".into(),
                kind: "Deployment".into(),
            },
            version: "v1".into(),
            action,
        };
        let ok = Correction {
            applied: vec![
                change("a", Action::Configured),
                change("b", Action::Created),
            ],
            errors: vec![],
        };
        assert_eq!(
            ok.event(&release).unwrap(),
            ("Normal", "DriftCorrected", "Cluster state of release apps/podinfo.v3 has been corrected:\nDeployment/apps/a configured\nDeployment/apps/b created".to_string())
        );
        let partial = Correction {
            applied: vec![change("a", Action::Configured)],
            errors: vec!["Deployment/apps/b patch failure: boom".into()],
        };
        assert_eq!(
            partial.event(&release).unwrap().2,
            "Failed to partially correct cluster state of release apps/podinfo.v3:\nDeployment/apps/b patch failure: boom\n\nSuccessful corrections:\nDeployment/apps/a configured"
        );
        let failed = Correction {
            applied: vec![],
            errors: vec!["e".into()],
        };
        assert_eq!(failed.event(&release).unwrap().0, "Warning");
        assert!(
            failed
                .event(&release)
                .unwrap()
                .2
                .starts_with("Failed to correct cluster state")
        );
        assert_eq!(Correction::default().event(&release), None);
    }

    #[test]
    fn settings_read_fluxs_fields() {
        let d: DriftDetection = serde_json::from_value(json!({"mode": "warn", "ignore": [
            {"paths": ["/spec/replicas"], "target": {"kind": "Deployment", "labelSelector": "a=b"}}]}))
        .unwrap();
        assert_eq!(d.mode, DriftMode::Warn);
        assert!(d.must_detect());
        assert_eq!(
            d.ignore[0]
                .target
                .as_ref()
                .unwrap()
                .label_selector
                .as_deref(),
            Some("a=b")
        );
        assert!(!DriftDetection::default().must_detect());
        let e: DriftDetection = serde_json::from_value(json!({"mode": "enabled"})).unwrap();
        assert_eq!(e.mode, DriftMode::Enabled);
    }
}
