//! Every manifest in `examples/` and every YAML block in `docs/` parses, deserializes into
//! pennant's types where it is one of pennant's kinds, passes pennant's validation (for the
//! providers this build implements), and is accepted by the real apiserver (server-side dry-run
//! against `e2e/cluster`, with the CRDs of pennant, Istio and the Gateway API installed there).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pennant::api::{AlertProvider, Canary, MetricTemplate};
use pennant::canary::validate;
use serde_json::Value;
use support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files under `dir` ending in `.<ext>`, except `*.replay.yaml` (inputs of `pennant replay`,
/// checked by [`every_replay_example_replays`]).
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) && !is_replay(&p) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn is_replay(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".replay.yaml")
}

#[test]
fn every_replay_example_replays() {
    let mut found = 0;
    let mut stack = vec![root().join("examples")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_replay(&p) {
                found += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                let file: pennant::cmd::replay::ReplayFile = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not a replay file: {e}", p.display()));
                let r = pennant::cmd::replay::replay(&file);
                assert!(!r.ticks.is_empty(), "{}: no step replayed", p.display());
                // The file's name says what its release must end as (`replay-bad` rolls back).
                if p.to_string_lossy().contains("bad") {
                    assert_eq!(r.outcome, "rolled back", "{}", p.display());
                }
            }
        }
    }
    assert!(found > 0, "examples/ has a replay file");
}

/// Check one Kubernetes object: identity fields, and pennant's kinds through pennant's types.
fn check_object(doc: &Value, at: &str) {
    let kind = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: no kind"));
    assert!(doc["apiVersion"].is_string(), "{at}: no apiVersion");
    assert!(
        doc["metadata"]["name"].is_string(),
        "{at}: no metadata.name"
    );
    if doc["apiVersion"] != "flagger.app/v1beta1" {
        return;
    }
    match kind {
        "Canary" => {
            let c: Canary = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{at}: not a Canary: {e}"));
            // Features still being built (a provider, A/B testing) are reported by pennant as
            // "not implemented ... yet"; everything else must be valid. Once implemented, the
            // message goes away and the example is fully validated.
            let (pending, problems): (Vec<String>, Vec<String>) =
                validate::invalid(&c.spec, "istio")
                    .into_iter()
                    .partition(|p| p.contains("not implemented by pennant yet"));
            if !pending.is_empty() {
                println!("{at}: not implemented yet: {pending:?}");
            }
            let unsupported = validate::unsupported(&c.spec, validate::provider(&c.spec, "istio"));
            assert!(
                unsupported.is_empty(),
                "{at}: uses fields pennant reports as unsupported: {unsupported:?}"
            );
            assert!(problems.is_empty(), "{at}: invalid Canary: {problems:?}");
        }
        "MetricTemplate" => {
            serde_json::from_value::<MetricTemplate>(doc.clone())
                .unwrap_or_else(|e| panic!("{at}: not a MetricTemplate: {e}"));
        }
        "AlertProvider" => {
            serde_json::from_value::<AlertProvider>(doc.clone())
                .unwrap_or_else(|e| panic!("{at}: not an AlertProvider: {e}"));
        }
        other => panic!("{at}: unknown flagger.app kind {other}"),
    }
}

fn example_docs() -> Vec<(String, Value)> {
    let mut out = vec![];
    for f in files(&root().join("examples"), "yaml") {
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, doc) in yaml_docs(&text).into_iter().enumerate() {
            out.push((format!("{rel}#{i}"), doc));
        }
    }
    out
}

#[test]
fn every_example_parses_and_validates() {
    let docs = example_docs();
    let mut providers = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for (at, doc) in &docs {
        check_object(doc, at);
        kinds.insert(doc["kind"].as_str().unwrap().to_string());
        if doc["kind"] == "Canary" {
            let p = doc["spec"]["provider"].as_str().unwrap_or("istio");
            let strategy = if doc["spec"]["analysis"]["match"].is_array() {
                "ab"
            } else if doc["spec"]["analysis"]["iterations"].is_number() {
                "blue-green"
            } else {
                "canary"
            };
            providers.insert(format!("{p}/{strategy}"));
        }
    }
    for want in [
        "istio/canary",
        "istio/ab",
        "istio/blue-green",
        "nginx/canary",
        "nginx/ab",
        "gatewayapi:v1/canary",
        "gatewayapi:v1/ab",
        "kubernetes/blue-green",
    ] {
        assert!(
            providers.contains(want),
            "no example for {want}: {providers:?}"
        );
    }
    for k in ["MetricTemplate", "AlertProvider", "Ingress", "Deployment"] {
        assert!(kinds.contains(k), "no {k} example");
    }
}

/// Each example file, in a namespace of its own making, through `kubectl apply
/// --dry-run=server`: the apiserver checks every object against its (CRD) schema.
#[tokio::test]
async fn every_example_passes_server_side_dry_run() {
    let client = client().await;
    let ns = TestNs::new(&client, "examples-dry-run", 0).await;
    for f in files(&root().join("examples"), "yaml") {
        let mut manifest = String::new();
        for mut doc in yaml_docs(&std::fs::read_to_string(&f).unwrap()) {
            doc["metadata"]["namespace"] = Value::String(ns.name.clone());
            manifest.push_str("---\n");
            manifest.push_str(&serde_json::to_string(&doc).unwrap());
            manifest.push('\n');
        }
        let out = server_dry_run(&manifest);
        assert!(out.contains("(server dry run)"), "{}: {out}", f.display());
    }
    ns.cleanup().await;
}

/// The fenced ```yaml blocks of a Markdown file, with their line numbers.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```yaml") || fence.starts_with("```yml") => {
                current = Some((n + 1, String::new()))
            }
            Some(_) if fence.starts_with("```") => out.push(current.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unterminated ```yaml block");
    out
}

/// Keys of a values snippet that `charts/pennant/values.yaml` does not have.
fn unknown_keys(snippet: &Value, values: &Value, prefix: &str, out: &mut Vec<String>) {
    let Some(map) = snippet.as_object() else {
        return;
    };
    for (k, v) in map {
        let path = format!("{prefix}{k}");
        match values.get(k) {
            None => out.push(path),
            Some(inner) if inner.is_object() && !inner.as_object().unwrap().is_empty() => {
                unknown_keys(v, inner, &format!("{path}."), out)
            }
            Some(_) => {}
        }
    }
}

/// Every YAML block in `docs/` parses; Kubernetes objects are checked like the examples (and
/// dry-run); a block of Helm values (no `kind`) may only use keys the chart's values.yaml has.
#[tokio::test]
async fn every_yaml_block_in_the_docs_is_valid() {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("charts/pennant/values.yaml")).unwrap(),
    )
    .unwrap();
    let mut objects = vec![];
    let mut blocks = 0;
    for f in files(&root().join("docs"), "md") {
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        for (line, block) in yaml_blocks(&std::fs::read_to_string(&f).unwrap()) {
            blocks += 1;
            let at = format!("{rel}:{line}");
            let docs = serde_saphyr::from_multiple::<Value>(&block)
                .unwrap_or_else(|e| panic!("{at}: YAML does not parse: {e}"));
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                if doc.get("kind").is_some() {
                    check_object(&doc, &at);
                    objects.push((at.clone(), doc));
                } else {
                    let mut unknown = vec![];
                    unknown_keys(&doc, &values, "", &mut unknown);
                    assert!(
                        unknown.is_empty(),
                        "{at}: keys not in charts/pennant/values.yaml: {unknown:?}"
                    );
                }
            }
        }
    }
    assert!(blocks >= 5, "docs have {blocks} YAML blocks");
    // The READMEs' YAML blocks are fragments (a webhook entry, ...): they must parse.
    for f in [root().join("README.md"), root().join("e2e/README.md")] {
        for (line, block) in yaml_blocks(&std::fs::read_to_string(&f).unwrap()) {
            serde_saphyr::from_multiple::<Value>(&block)
                .unwrap_or_else(|e| panic!("{}:{line}: YAML does not parse: {e}", f.display()));
        }
    }
    let client = client().await;
    let ns = TestNs::new(&client, "docs-dry-run", 0).await;
    let mut manifest = String::new();
    for (_, mut doc) in objects {
        doc["metadata"]["namespace"] = Value::String(ns.name.clone());
        manifest.push_str("---\n");
        manifest.push_str(&serde_json::to_string(&doc).unwrap());
        manifest.push('\n');
    }
    server_dry_run(&manifest);
    ns.cleanup().await;
}
