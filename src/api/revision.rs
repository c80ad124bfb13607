//! The revision hash of a pod template, shared by the Canary controller (`lastAppliedSpec`,
//! `lastPromotedSpec`) and the appliers (Kustomization, HelmRelease), which compute it from the
//! workload they applied to tie a source revision to a Canary run. PURE.
//!
//! Unlike Flagger's FNV hash over the Go struct (which changes whenever the Kubernetes library
//! adds a field, Flagger #1673, #1799, #1201), it hashes *canonical JSON*: keys sorted, and every
//! `null`, `{}` and `[]` dropped, so a field that is unset, or added by a newer k8s-openapi,
//! never changes it.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hash format pennant writes to a Canary's `lastAppliedSpec` ([`revision`]). A status written
/// by another tool (Flagger's FNV hashes) has another form.
pub const REVISION_PREFIX: &str = "sha256:";

/// nodeSelector key Flagger's DaemonSet scale-to-zero adds to the target; never part of a revision.
pub const SCALE_TO_ZERO_NODE_SELECTOR: &str = "flagger.app/scale-to-zero";

/// Revision hash of a pod template: `sha256:` + the first 16 hex digits of the SHA-256 of its
/// canonical JSON (see [`canonical_json`]). The DaemonSet scale-to-zero nodeSelector key is
/// removed first. Replicas are not part of a template, so scaling never starts a run.
pub fn revision(template: &PodTemplateSpec) -> String {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(sel) = v
        .pointer_mut("/spec/nodeSelector")
        .and_then(Value::as_object_mut)
    {
        sel.remove(SCALE_TO_ZERO_NODE_SELECTOR);
    }
    format!("{REVISION_PREFIX}{}", canonical_digest(&v))
}

/// First 16 hex digits of the SHA-256 of [`canonical_json`]: a stable digest of any object.
pub fn canonical_digest(v: &Value) -> String {
    hex(&Sha256::digest(canonical_json(v).as_bytes()))[..16].to_string()
}

/// Canonical JSON of a value: object keys sorted (byte order), no whitespace, and, recursively,
/// every `null`, `{}` and `[]` removed (an object or array that only held such values is removed
/// too). A top-level value that prunes away entirely is written as `null`.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    match prune(v) {
        Some(p) => write_sorted(&p, &mut out),
        None => out.push_str("null"),
    }
    out
}

/// `None` when the value is null or an empty object/array after pruning its children.
fn prune(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(prune).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

/// Write JSON with object keys sorted, whatever order `serde_json::Map` keeps.
fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
