//! Canaries the Canary controller would refuse: the controller's own validation
//! ([`crate::canary::validate::invalid`], what it reports as `Stalled=True`), with the default
//! provider of `--mesh-provider`. A Canary that does not even read as pennant's type (a field of
//! the wrong type) is reported with the decoder's message. Each message is put on the line of
//! the first field it names (`targetRef.kind`, `service.port`, ...), else on `spec:`.
//!
//! MetricTemplates whose count-signal annotations the sequential judge would refuse
//! ([`crate::analysis::count_metric::declaration`]) are reported on their `annotations:` line.

use super::{Doc, Findings, Options, Repo};
use crate::analysis::count_metric;
use crate::api::{Canary, MetricTemplate};
use crate::canary::validate;

/// The Canary's API group (`flagger.app`).
fn group() -> String {
    <Canary as kube::Resource>::group(&()).into_owned()
}

pub fn check(repo: &Repo, options: &Options, out: &mut Findings) {
    let group = group();
    for d in repo.docs.iter().filter(|d| d.is(&group, "Canary")) {
        match serde_json::from_value::<Canary>(d.json.clone()) {
            Err(e) => out.push(
                d.file,
                d.line(&["spec"]),
                format!("Canary {} cannot be read: {e}", d.name()),
            ),
            Ok(canary) => {
                for message in validate::invalid(&canary.spec, &options.mesh_provider) {
                    out.push(
                        d.file,
                        line_of_message(d, &message),
                        format!("Canary {} would be refused: {message}", d.name()),
                    );
                }
            }
        }
    }
    for d in repo.docs.iter().filter(|d| d.is(&group, "MetricTemplate")) {
        let Ok(t) = serde_json::from_value::<MetricTemplate>(d.json.clone()) else {
            continue;
        };
        if let Err(e) = count_metric::declaration(&t) {
            out.push(
                d.file,
                d.line(&["metadata", "annotations"]),
                format!(
                    "MetricTemplate {} cannot be judged as a count signal: {e}",
                    d.name()
                ),
            );
        }
    }
}

/// The line of the first field under `spec` that a word of `message` names (`service.port`,
/// `provider`), the deepest part of it that exists; else the line of `spec`.
fn line_of_message(d: &Doc, message: &str) -> usize {
    let spec = d.node.get("spec");
    for word in message.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_')) {
        let path: Vec<&str> = word.trim_matches('.').split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            continue;
        }
        if let Some(line) = (1..=path.len())
            .rev()
            .find_map(|n| spec.and_then(|s| s.line_of(&path[..n])))
        {
            return line;
        }
    }
    d.line(&["spec"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::{lint, tests::lint_one};
    use std::path::PathBuf;

    const CANARY: &str = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  provider: istio\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: web\n  service:\n    port: 80\n  analysis:\n    interval: 1m\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n";

    #[test]
    fn a_valid_canary_passes() {
        assert_eq!(lint_one(CANARY), Vec::<String>::new());
    }

    #[test]
    fn the_controllers_messages_come_with_the_line_of_their_field() {
        let cases = [
            (
                CANARY.replace("kind: Deployment", "kind: StatefulSet"),
                10,
                "targetRef.kind",
            ),
            (
                CANARY.replace("provider: istio", "provider: gatewayapi"),
                7,
                "unknown provider",
            ),
            (CANARY.replace("port: 80", "port: 70000"), 13, "port"),
        ];
        for (text, line, needle) in cases {
            let found = lint_one(&text);
            assert_eq!(found.len(), 1, "{needle}: {found:?}");
            assert!(
                found[0].starts_with(&format!("{line}: Canary web would be refused: ")),
                "{found:?}"
            );
            assert!(found[0].contains(needle), "{found:?}");
            // the very message the controller reports
            let canary: Canary = serde_json::from_value(
                crate::lint::yaml::parse_documents(&text).unwrap()[0].to_json(),
            )
            .unwrap();
            let messages = validate::invalid(&canary.spec, "istio");
            assert!(found[0].ends_with(&messages[0]), "{found:?} {messages:?}");
        }
    }

    #[test]
    fn the_default_provider_is_the_controllers() {
        let text = CANARY.replace("  provider: istio\n", "");
        let files = vec![(PathBuf::from("c.yaml"), text)];
        assert_eq!(lint(&files), vec![]);
        let options = Options {
            mesh_provider: "linkerd".into(),
        };
        let found = crate::lint::lint_with(&files, &options);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("linkerd"), "{found:?}");
    }

    #[test]
    fn a_bad_count_declaration_is_reported_on_its_annotations() {
        let t = "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: jobs\n  annotations:\n    judge.pennant.dev/bad: 'jobs_total{status=\"failed\"}'\nspec:\n  provider:\n    type: prometheus\n  query: x\n";
        let found = lint_one(t);
        assert_eq!(
            found,
            vec![
                "5: MetricTemplate jobs cannot be judged as a count signal: annotation judge.pennant.dev/total is missing or empty: a count signal needs both judge.pennant.dev/bad and judge.pennant.dev/total"
            ]
        );
        let ok = t.replace(
            "spec:",
            "    judge.pennant.dev/total: 'jobs_total{}'\nspec:",
        );
        assert_eq!(lint_one(&ok), Vec::<String>::new());
    }

    #[test]
    fn an_unreadable_canary_is_reported() {
        let found = lint_one(&CANARY.replace("port: 80", "port: eighty"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("6: Canary web cannot be read: "),
            "{found:?}"
        );
    }
}
