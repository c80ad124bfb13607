//! What `pennant diff ks` and `pennant diff hr` share: the per-object output of a server-side
//! dry-run (Flux's `► Kind/ns/name created|drifted|deleted` lines and a unified diff of the
//! live object against the dry-run result, server-owned fields left out, Secret values masked
//! as kubectl diff masks them) and the exit status (Flux's: 0 no difference, 1 differences,
//! 2 an error).

use serde_json::{Value, json};

use crate::apply::ssa::{Action, DryRun, comparable};

/// `v` as YAML (a comment line when it cannot be).
pub fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# not serialisable: {e}\n"))
}

/// A core `v1` Secret.
pub fn is_secret(obj: &Value) -> bool {
    obj["kind"] == "Secret" && obj["apiVersion"] == "v1"
}

/// Remove kubectl's last-applied annotation (it may hold Secret values).
pub fn drop_last_applied(o: &mut Value) {
    // (`get_mut`, not `[]`: indexing a missing key would add it as null)
    if let Some(a) = o
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Two copies of a Secret with their values masked as kubectl diff does: `***` where both
/// sides hold the same value (or only one side has the key), `*** (before)` / `*** (after)`
/// where they differ. `data` and `stringData` alike. PURE.
pub fn mask_secret_pair(before: &Value, after: &Value) -> (Value, Value) {
    let (mut b, mut a) = (before.clone(), after.clone());
    for field in ["data", "stringData"] {
        mask_values(&mut b, field, after[field].as_object(), "*** (before)");
        mask_values(&mut a, field, before[field].as_object(), "*** (after)");
    }
    drop_last_applied(&mut b);
    drop_last_applied(&mut a);
    (b, a)
}

/// Every value of `obj[field]` masked: `changed` where `other` holds the key with another
/// value, else `***`.
fn mask_values(
    obj: &mut Value,
    field: &str,
    other: Option<&serde_json::Map<String, Value>>,
    changed: &str,
) {
    if let Some(m) = obj.get_mut(field).and_then(Value::as_object_mut) {
        for (k, v) in m.iter_mut() {
            let differs = other.and_then(|o| o.get(k)).is_some_and(|o| o != v);
            *v = json!(if differs { changed } else { "***" });
        }
    }
}

/// The live object and the dry-run result as compared and shown: server-owned noise removed
/// ([`comparable`]), Secret values masked ([`mask_secret_pair`]). PURE.
pub fn shown_pair(live: &Value, merged: &Value) -> (Value, Value) {
    let (l, m) = (comparable(live), comparable(merged));
    if is_secret(&l) || is_secret(&m) {
        mask_secret_pair(&l, &m)
    } else {
        (l, m)
    }
}

/// A unified diff (3 lines of context) of two YAML texts, headed `--- <subject> (live)` /
/// `+++ <subject> (merged)`; empty when they are equal. PURE.
pub fn unified_diff(subject: &str, live: &str, merged: &str) -> String {
    if live == merged {
        return String::new();
    }
    similar::TextDiff::from_lines(live, merged)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{subject} (live)"), &format!("{subject} (merged)"))
        .to_string()
}

/// The output of a dry-run of one object (`flux diff ks` wording: a configured object is
/// `drifted`) and whether it is a change. PURE.
pub fn format_dry_run(d: &DryRun) -> (String, bool) {
    format_change(d, "drifted")
}

/// The output of a dry-run of one object and whether it is a change: `► <subject> created`,
/// `skipped`, `deleted`, nothing when unchanged, else `► <subject> <configured>` and the
/// unified diff of the live object against the dry-run result ([`shown_pair`]). PURE.
pub fn format_change(d: &DryRun, configured: &str) -> (String, bool) {
    let subject = d.change.subject();
    match d.change.action {
        Action::Created => (format!("► {subject} created\n"), true),
        Action::Skipped => (format!("► {subject} skipped\n"), false),
        Action::Deleted => (format!("► {subject} deleted\n"), true),
        Action::Unchanged => (String::new(), false),
        Action::Configured => {
            let (live, merged) = match (&d.live, &d.merged) {
                (Some(l), Some(m)) => shown_pair(l, m),
                _ => return (format!("► {subject} {configured}\n"), true),
            };
            let (live, merged) = (yaml(&live), yaml(&merged));
            let diff = unified_diff(&subject, &live, &merged);
            // equal once masked and stripped: a difference the server keeps (none shown)
            (format!("► {subject} {configured}\n{diff}"), true)
        }
    }
}

/// What `diff` prints and whether anything would change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiffOutput {
    pub text: String,
    pub changed: bool,
}

/// Print a diff's result and exit: `Ok((output, errors))` prints the output, each error on
/// stderr (`✗ …`), and exits 2 with errors, 1 with changes, else 0; `Err` prints its one line
/// on stderr and exits 2. Never returns.
pub fn print_and_exit(result: anyhow::Result<(DiffOutput, Vec<String>)>) -> ! {
    let code = match result {
        Ok((out, errors)) => {
            print!("{}", out.text);
            for e in &errors {
                eprintln!("✗ {e}");
            }
            exit_code(&out, &errors)
        }
        Err(e) => {
            eprintln!("✗ {e:#}");
            2
        }
    };
    if code == 1 {
        eprintln!("✗ identified at least one change, exiting with non-zero exit code");
    }
    std::process::exit(code)
}

/// The exit status of a diff: 2 with errors, 1 with changes, else 0. PURE.
pub fn exit_code(out: &DiffOutput, errors: &[String]) -> i32 {
    if !errors.is_empty() {
        2
    } else if out.changed {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_fluxs() {
        let out = |changed| DiffOutput {
            text: String::new(),
            changed,
        };
        assert_eq!(exit_code(&out(false), &[]), 0);
        assert_eq!(exit_code(&out(true), &[]), 1);
        assert_eq!(exit_code(&out(false), &["x".into()]), 2);
        assert_eq!(exit_code(&out(true), &["x".into()]), 2, "an error wins");
    }
}
