//! postBuild variables without a definition: a `${var}` (no default) in the files under a
//! Kustomization's `spec.path` that neither its `postBuild.substitute` nor its
//! `postBuild.substituteFrom` defines. Flux fails such a build in strict mode (its default) and
//! substitutes `""` otherwise. Judged by the kustomize controller's own envsubst
//! ([`crate::kustomize::substitute::eval`], strict), so defaults (`${var:=x}`, `${var:-x}`, ...),
//! `$${var}` escapes and parse errors are Flux's.
//!
//! Sound, not complete: a Kustomization is judged only when its variables are all known, i.e.
//! every `substituteFrom` ConfigMap or Secret is in the repository (and not SOPS-encrypted),
//! and its `spec.path` is a directory of the repository. As in Flux, nothing is substituted
//! when no variable is defined (unless `substituteStrategy: Always`), and an object labelled or
//! annotated `kustomize.toolkit.fluxcd.io/substitute: disabled` is skipped. Only the files
//! under `spec.path` are scanned (bases elsewhere that its `kustomization.yaml` pulls in are
//! not).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::yaml::{Node, NodeKind};
use super::{Doc, Findings, Repo};
use crate::api::kustomization;
use crate::kustomize::substitute::{EnvsubstError, eval, merge_variables, substitution_disabled};

pub fn check(repo: &Repo, out: &mut Findings) {
    for k in repo
        .docs
        .iter()
        .filter(|d| d.is(kustomization::GROUP, "Kustomization"))
    {
        let post_build = &k.json["spec"]["postBuild"];
        if !post_build.is_object() {
            continue;
        }
        let Some(vars) = variables(repo, k, post_build) else {
            continue;
        };
        if vars.is_empty() && post_build["substituteStrategy"] != "Always" {
            continue;
        }
        let Some(docs) = repo.docs_under(k.json["spec"]["path"].as_str().unwrap_or("")) else {
            continue;
        };
        for d in docs {
            if !substitution_disabled(&d.json) {
                scan(&d.node, &vars, &mut |line, message| {
                    out.push(
                        d.file,
                        line,
                        format!("{message}, in the postBuild of Kustomization {}", k.id()),
                    )
                });
            }
        }
    }
}

/// The Kustomization's variables, merged as Flux does, or `None` when a `substituteFrom`
/// source is not in the repository (its keys are unknown).
fn variables(repo: &Repo, k: &Doc, post_build: &Value) -> Option<BTreeMap<String, String>> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut sources = vec![];
    for from in post_build["substituteFrom"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (kind, name) = (from["kind"].as_str()?, from["name"].as_str()?);
        let source = repo.docs.iter().find(|d| {
            d.is("", kind)
                && d.name() == name
                && match (d.namespace(), k.namespace()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })?;
        if !source.json["sops"].is_null() {
            return None;
        }
        let mut vars = BTreeMap::new();
        for (key, v) in source.json["data"].as_object().into_iter().flatten() {
            let value = if kind == "Secret" {
                let bytes = B64.decode(text(v)).ok()?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                text(v)
            };
            vars.insert(key.clone(), value);
        }
        for (key, v) in source.json["stringData"].as_object().into_iter().flatten() {
            vars.insert(key.clone(), text(v));
        }
        sources.push(vars);
    }
    let inline: BTreeMap<String, String> = post_build["substitute"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    Some(merge_variables(&sources, &inline))
}

/// Report every undefined variable and parse error in the strings (keys and values) of `node`.
fn scan(node: &Node, vars: &BTreeMap<String, String>, report: &mut dyn FnMut(usize, String)) {
    match &node.kind {
        NodeKind::Scalar { text, literal, .. } => {
            for (name, message) in undefined(text, vars) {
                let line = match name {
                    Some(n) if *literal => {
                        let at = text.find(&format!("${{{n}")).unwrap_or(0);
                        node.line + text[..at].matches('\n').count()
                    }
                    _ => node.line,
                };
                report(line, message);
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|n| scan(n, vars, report)),
        NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
            scan(k, vars, report);
            scan(v, vars, report);
        }),
    }
}

/// The variables of `text` that `vars` lacks and no default covers (name, message), and a
/// parse error (no name), as Flux's strict envsubst finds them one by one.
fn undefined(text: &str, vars: &BTreeMap<String, String>) -> Vec<(Option<String>, String)> {
    if !text.contains("${") {
        return vec![];
    }
    let mut vars = vars.clone();
    let mut out = vec![];
    loop {
        match eval(text, &vars, true) {
            Ok(_) => return out,
            Err(EnvsubstError::NotSet(name)) => {
                out.push((
                    Some(name.clone()),
                    format!(
                        "variable {name} is not defined and has no default (${{{name}:=default}})"
                    ),
                ));
                vars.insert(name, String::new());
            }
            Err(e) => {
                out.push((None, format!("substitution fails: {e}")));
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_files;
    use super::*;

    const KS: &str = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  path: ./apps\n  postBuild:\n";
    const APP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  region: ${region}\n  zone: ${zone:=a}\n  env: ${env:-dev}\n  literal: $${cluster}\n  script: |\n    echo one\n    echo ${cluster}\n";

    fn run(post_build: &str, extra: &[(&str, &str)]) -> Vec<String> {
        let ks = format!("{KS}{post_build}");
        let mut files = vec![("clusters/apps.yaml", ks.as_str()), ("apps/app.yaml", APP)];
        files.extend_from_slice(extra);
        check_files(&files, check)
    }

    #[test]
    fn variables_without_definition_or_default_are_found_on_their_line() {
        assert_eq!(
            run("    substitute:\n      other: x\n", &[]),
            [
                "apps/app.yaml:6: variable region is not defined and has no default (${region:=default}), in the postBuild of Kustomization flux-system/apps",
                "apps/app.yaml:12: variable cluster is not defined and has no default (${cluster:=default}), in the postBuild of Kustomization flux-system/apps",
            ]
        );
        assert_eq!(
            run(
                "    substitute:\n      region: eu\n      cluster: c1\n",
                &[]
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn substitute_from_counts_only_when_every_source_is_known() {
        let from = "    substituteFrom:\n      - kind: ConfigMap\n        name: vars\n      - kind: Secret\n        name: creds\n";
        let vars = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vars\n  namespace: flux-system\ndata:\n  region: eu\n";
        let creds =
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ndata:\n  cluster: YzE=\n";
        // one source unknown: the variables are unknown, nothing is reported
        assert_eq!(run(from, &[("v.yaml", vars)]), Vec::<String>::new());
        // both known: region and cluster (base64 in the Secret) are defined
        assert_eq!(
            run(from, &[("v.yaml", vars), ("s.yaml", creds)]),
            Vec::<String>::new()
        );
        let no_cluster = creds.replace("cluster", "other");
        assert_eq!(
            run(from, &[("v.yaml", vars), ("s.yaml", &no_cluster)]).len(),
            1
        );
    }

    #[test]
    fn no_variables_no_substitution_unless_always_and_opt_outs_are_respected() {
        assert_eq!(run("    substitute: {}\n", &[]), Vec::<String>::new());
        assert_eq!(run("    substituteStrategy: Always\n", &[]).len(), 2);
        let disabled = APP.replace(
            "  name: app\n",
            "  name: app\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\n",
        );
        let ks = format!("{KS}    substitute:\n      other: x\n");
        assert_eq!(
            check_files(
                &[("clusters/apps.yaml", &ks), ("apps/app.yaml", &disabled)],
                check
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_parse_error_is_flux_s() {
        let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  a: ${oops\n";
        assert_eq!(
            run(
                "    substitute:\n      region: eu\n      cluster: c\n",
                &[("apps/b.yaml", bad)]
            ),
            [
                "apps/b.yaml:6: substitution fails: missing closing brace, in the postBuild of Kustomization flux-system/apps"
            ]
        );
    }
}
