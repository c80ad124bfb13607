//! Canaries the Canary controller would refuse: the controller's own validation
//! ([`crate::canary::validate::invalid`], what it reports as `Stalled=True`), with the default
//! provider of `--mesh-provider`. A Canary that does not even read as pennant's type (a field of
//! the wrong type) is reported with the decoder's message. Each message is put on the line of
//! the first field it names (`targetRef.kind`, `service.port`, ...), else on `spec:`.
//!
//! MetricTemplates whose count-signal annotations the sequential judge would refuse
//! ([`crate::analysis::count_metric::problems`]: the controller's own rules, the selectors
//! rendered with placeholder values), and unknown `judge.pennant.dev/` annotations on them,
//! are reported on their `annotations:` line, every problem of a template.

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
        for e in count_metric::problems(&t) {
            out.push(
                d.file,
                d.line(&["metadata", "annotations"]),
                format!(
                    "MetricTemplate {} cannot be judged as a count signal: {e}",
                    d.name()
                ),
            );
        }
        for e in count_metric::unknown_annotations(&t) {
            out.push(
                d.file,
                d.line(&["metadata", "annotations"]),
                format!("MetricTemplate {}: {e}", d.name()),
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

    /// A MetricTemplate with `annotations` (YAML lines under `annotations:`, line 5).
    fn jobs_template(annotations: &str) -> String {
        format!(
            "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: jobs\n  annotations:\n{annotations}spec:\n  provider:\n    type: prometheus\n  query: x\n"
        )
    }

    const BAD: &str = "    judge.pennant.dev/bad: 'jobs_total{w=\"{{ target }}\",s=\"failed\"}'\n";
    const TOTAL: &str = "    judge.pennant.dev/total: 'jobs_total{w=\"{{ target }}\"}'\n";

    #[test]
    fn a_valid_count_declaration_passes() {
        for a in [
            format!("{BAD}{TOTAL}"),
            format!("{BAD}{TOTAL}    judge.pennant.dev/tolerance: \"2\"\n"),
            // a templateVariables key: only the Canary knows its value
            format!(
                "{BAD}    judge.pennant.dev/total: 'jobs_total{{w=\"{{{{ target }}}}\",q=\"{{{{ variables.queue }}}}\"}}'\n"
            ),
            // multi-line, the dot form, a pod regex
            "    judge.pennant.dev/bad: >-\n      jobs_total{pod=~\"{{ .target }}-[0-9a-z]+-[0-9a-z]+\",\n      s=\"failed\"}\n    judge.pennant.dev/total: 'jobs_total{pod=~\"{{ target }}-[0-9a-z]+-[0-9a-z]+\"}'\n".to_string(),
            "    other.io/x: y\n".to_string(),
        ] {
            assert_eq!(lint_one(&jobs_template(&a)), Vec::<String>::new(), "{a}");
        }
    }

    #[test]
    fn every_problem_of_a_count_declaration_is_reported_on_its_annotations() {
        let p = "5: MetricTemplate jobs cannot be judged as a count signal: annotation judge.pennant.dev/";
        let bad = |v: &str| format!("    judge.pennant.dev/bad: '{v}'\n{TOTAL}");
        // (annotations, the messages, each after `p`)
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                bad("rate(x{w=\"{{ target }}\"}[5m])"),
                vec![
                    "bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): rate(x{w=\"target\"}[5m])",
                ],
            ),
            (
                format!("{BAD}    judge.pennant.dev/total: 'sum(x{{w=\"{{{{ target }}}}\"}})'\n"),
                vec![
                    "total: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): sum(x{w=\"target\"})",
                ],
            ),
            (
                bad("x{w=\"{{ target }}\"} or on() vector(1e9)"),
                vec![
                    "bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): x{w=\"target\"} or on() vector(1e9)",
                ],
            ),
            (
                bad("x{w=\"{{ target }}\"} offset 1h"),
                vec![
                    "bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): x{w=\"target\"} offset 1h",
                ],
            ),
            (
                bad("x{s=\"failed\"}"),
                vec![
                    "bad renders the same selector for the canary and the primary (x{s=\"failed\"}): use {{ target }} to tell their series apart",
                ],
            ),
            (
                bad("x{w=\"{{ target }}\""),
                vec![
                    "bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): x{w=\"target\"",
                ],
            ),
            (
                bad("x{w=\"{{ target }\"}"),
                vec!["bad: unclosed template action starting at byte 5"],
            ),
            (
                bad("x{w=\"{{ targt }}\"}"),
                vec![
                    "bad: unknown template variable \"targt\" (known: name, namespace, target, service, ingress, route, interval, variables.<key>)",
                ],
            ),
            // every problem, not the first only
            (
                "    judge.pennant.dev/bad: 'sum(x)'\n    judge.pennant.dev/tolerance: \"0\"\n"
                    .to_string(),
                vec![
                    "bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): sum(x)",
                    "tolerance \"0\" is not a number of percentage points in (0, 50]",
                    "total is missing or empty: a count signal needs both judge.pennant.dev/bad and judge.pennant.dev/total",
                ],
            ),
        ];
        for (a, want) in cases {
            let want: Vec<String> = want.iter().map(|w| format!("{p}{w}")).collect();
            assert_eq!(lint_one(&jobs_template(&a)), want, "{a}");
        }
        // the controller refuses the very same selector with the very same message
        let (canary, metric): (Canary, _) = {
            let c: Canary = serde_json::from_value(
                crate::lint::yaml::parse_documents(CANARY).unwrap()[0].to_json(),
            )
            .unwrap();
            let m: crate::api::CanaryMetric = serde_json::from_value(
                serde_json::json!({"name": "jobs", "templateRef": {"name": "jobs"}}),
            )
            .unwrap();
            (c, m)
        };
        let decl = count_metric::Declaration {
            bad: "rate(x{w=\"{{ target }}\"}[5m])".into(),
            total: "x{w=\"{{ target }}\"}".into(),
            tolerance_pp: None,
        };
        let e = count_metric::render_versions(&canary, &metric, &decl).unwrap_err();
        assert_eq!(
            e,
            "annotation judge.pennant.dev/bad: not a series selector (metric{label=\"value\",…}; no functions, operators or ranges): rate(x{w=\"web\"}[5m])"
        );
    }

    #[test]
    fn unknown_judge_annotations_on_a_metric_template_are_reported() {
        let a = format!(
            "{BAD}{TOTAL}    judge.pennant.dev/tolrance: \"1\"\n    judge.pennant.dev/mode: sequential\n    judge.pennantdev/x: y\n"
        );
        let found = lint_one(&jobs_template(&a));
        let known = "a MetricTemplate knows judge.pennant.dev/bad, judge.pennant.dev/total and judge.pennant.dev/tolerance (judge.pennant.dev/mode and judge.pennant.dev/policy go on the Canary)";
        assert_eq!(
            found,
            vec![
                format!(
                    "5: MetricTemplate jobs: unknown annotation judge.pennant.dev/mode is ignored: {known}"
                ),
                format!(
                    "5: MetricTemplate jobs: unknown annotation judge.pennant.dev/tolrance is ignored: {known}"
                ),
            ]
        );
        // the known ones, on a Canary, are not this check's business
        assert_eq!(
            lint_one(&CANARY.replace(
                "  namespace: apps\n",
                "  namespace: apps\n  annotations:\n    judge.pennant.dev/mode: sequential\n    judge.pennant.dev/policy: p\n"
            )),
            Vec::<String>::new()
        );
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
