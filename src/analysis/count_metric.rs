//! MetricTemplates judged as count signals by the sequential judge (issue 19,
//! `sequential-judge.md` §4.8).
//!
//! Flagger's MetricTemplate returns one number for a threshold. A template can instead declare,
//! in pennant's own annotations (the spec stays Flagger's), a pair of Prometheus counters:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     judge.pennant.dev/bad: 'jobs_total{namespace="{{ namespace }}",workload="{{ target }}",status="failed"}'
//!     judge.pennant.dev/total: 'jobs_total{namespace="{{ namespace }}",workload="{{ target }}"}'
//!     judge.pennant.dev/tolerance: "1"   # optional, pp; default: the policy's errorTolerance
//! ```
//!
//! - Each annotation is a PromQL **series selector** of counters (`name{matchers}`, no
//!   functions, no range): the bad events and all events.
//! - Each is rendered twice with the Canary's template model ([`super::template`], the same
//!   variables as `spec.query`, `templateVariables` included): once with `{{ target }}` =
//!   `targetRef.name` (the canary's series) and once with `{{ target }}` =
//!   `<targetRef.name>-primary` (the primary's). The two renderings must differ, so the
//!   selector has to use `{{ target }}`. With pod-name labels, anchor the regex as Flagger's
//!   builtins do (`pod=~"{{ target }}-[0-9a-zA-Z]+-[0-9a-zA-Z]+"` does not match
//!   `<target>-primary-<hash>-<id>`).
//! - Counts per step are read as the builtins' (`super::counts`, method B: raw samples of the
//!   step, reset-aware increase per series, summed per version). A version with no `total`
//!   series is an error naming the signal; no `bad` series is 0 bad events (counters that
//!   appear with the first failure).
//! - Only `spec.provider.type: prometheus` templates can declare counts; their `address`,
//!   `headers` and `secretRef` are used as for `spec.query`.
//!
//! When the Canary uses the sequential judge (`judge.pennant.dev/mode: sequential`) a
//! `templateRef` metric whose template declares counts is judged by the judge as a signal of
//! its own, named after the metric, and is not checked per window (its `spec.query` and
//! `thresholdRange` are not used). Without the judge, or without the annotations, the template
//! keeps Flagger's threshold rule.

use std::collections::BTreeMap;

use super::PrometheusProvider;
use super::counts::{
    InputError, MARGIN_SECS, RawSeries, Version, incomplete, increase, raw_series,
};
use super::http::Credentials;
use super::judge::CountSignal;
use super::metric_interval;
use super::template::{TemplateModel, collapse_whitespace, render};
use super::templates::TemplateSource;
use crate::api::{Canary, CanaryMetric, EventCounts, MetricTemplate};

/// Annotation on a MetricTemplate: series selector of the bad-event counters.
pub const BAD_ANNOTATION: &str = "judge.pennant.dev/bad";
/// Annotation on a MetricTemplate: series selector of all events' counters.
pub const TOTAL_ANNOTATION: &str = "judge.pennant.dev/total";
/// Annotation on a MetricTemplate: the count signal's tolerance, percentage points.
pub const TOLERANCE_ANNOTATION: &str = "judge.pennant.dev/tolerance";

/// A template's count declaration, unrendered.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    /// [`BAD_ANNOTATION`], a template string.
    pub bad: String,
    /// [`TOTAL_ANNOTATION`], a template string.
    pub total: String,
    /// [`TOLERANCE_ANNOTATION`], percentage points in (0, 50].
    pub tolerance_pp: Option<f64>,
}

/// Whether `template` carries any of the count annotations (valid or not): the judge, not
/// Flagger's threshold rule, owns such a metric when the Canary uses the judge.
pub fn declares(template: &MetricTemplate) -> bool {
    let a = template.metadata.annotations.as_ref();
    [BAD_ANNOTATION, TOTAL_ANNOTATION, TOLERANCE_ANNOTATION]
        .iter()
        .any(|k| a.is_some_and(|a| a.contains_key(*k)))
}

/// Prefix of pennant's judge annotations. On a MetricTemplate only [`BAD_ANNOTATION`],
/// [`TOTAL_ANNOTATION`] and [`TOLERANCE_ANNOTATION`] mean something (`mode` and `policy` go on
/// the Canary).
pub const PREFIX: &str = "judge.pennant.dev/";

/// The template's declaration: `Ok(None)` without any count annotation. Errors (message
/// without the template's name, several joined with `; `): as [`declaration_errors`].
pub fn declaration(template: &MetricTemplate) -> Result<Option<Declaration>, String> {
    declaration_errors(template).map_err(|e| e.join("; "))
}

/// The template's declaration: `Ok(None)` without any count annotation. Errors, every one
/// found (messages without the template's name): bad or total missing or empty, a tolerance
/// that is not a number in (0, 50], a provider other than `prometheus`. The selectors are not
/// rendered here ([`render_one`]).
pub fn declaration_errors(template: &MetricTemplate) -> Result<Option<Declaration>, Vec<String>> {
    if !declares(template) {
        return Ok(None);
    }
    let a = template.metadata.annotations.clone().unwrap_or_default();
    let mut errors = Vec::new();
    let mut get = |k: &str| {
        let v = a
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if v.is_none() {
            errors.push(format!(
                "annotation {k} is missing or empty: a count signal needs both {BAD_ANNOTATION} and {TOTAL_ANNOTATION}"
            ));
        }
        v
    };
    let (bad, total) = (get(BAD_ANNOTATION), get(TOTAL_ANNOTATION));
    let tolerance_pp = match a.get(TOLERANCE_ANNOTATION) {
        None => None,
        Some(t) => match t.trim().parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 50.0 => Some(x),
            _ => {
                errors.push(format!(
                    "annotation {TOLERANCE_ANNOTATION} {t:?} is not a number of percentage points in (0, 50]"
                ));
                None
            }
        },
    };
    let kind = template.spec.provider.type_.as_str();
    if kind != "prometheus" {
        errors.push(format!(
            "count annotations need spec.provider.type prometheus, not {kind:?}"
        ));
    }
    match (bad, total) {
        (Some(bad), Some(total)) if errors.is_empty() => Ok(Some(Declaration {
            bad,
            total,
            tolerance_pp,
        })),
        _ => Err(errors),
    }
}

/// Annotations under [`PREFIX`] on a MetricTemplate that pennant does not know (a misspelled
/// `judge.pennant.dev/tolrance` is otherwise ignored), one message each.
pub fn unknown_annotations(template: &MetricTemplate) -> Vec<String> {
    let known = [BAD_ANNOTATION, TOTAL_ANNOTATION, TOLERANCE_ANNOTATION];
    template
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(PREFIX) && !known.contains(&k.as_str()))
        .map(|(k, _)| {
            format!(
                "unknown annotation {k} is ignored: a MetricTemplate knows {BAD_ANNOTATION}, {TOTAL_ANNOTATION} and {TOLERANCE_ANNOTATION} ({PREFIX}mode and {PREFIX}policy go on the Canary)"
            )
        })
        .collect()
}

/// Every problem of `template`'s count declaration, checked without a Canary (`pennant
/// lint`): [`declaration_errors`], then each selector present rendered by [`render_one`] with
/// placeholder values (`target` = `target` and `target-primary`, each `variables.<key>` the
/// selector uses = `<key>`). The same rules as the controller's,
/// except the Canary's `templateVariables`, which only the Canary knows.
pub fn problems(template: &MetricTemplate) -> Vec<String> {
    let mut out = declaration_errors(template).err().unwrap_or_default();
    if declares(template) {
        let a = template.metadata.annotations.clone().unwrap_or_default();
        for key in [BAD_ANNOTATION, TOTAL_ANNOTATION] {
            let Some(text) = a.get(key).filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            let variables: BTreeMap<String, String> = used_variables(text)
                .into_iter()
                .map(|k| (k.clone(), k))
                .collect();
            let model = TemplateModel {
                name: "canary".into(),
                namespace: "namespace".into(),
                target: "target",
                service: "service",
                ingress: "ingress",
                route: "route",
                interval: "1m",
                variables: Some(&variables),
            };
            let primary = TemplateModel {
                target: "target-primary",
                ..model.clone()
            };
            if let Err(e) = render_one(key, text, &model, &primary) {
                out.push(e);
            }
        }
    }
    out
}

/// The keys of the `variables.<key>` a template text names.
fn used_variables(text: &str) -> Vec<String> {
    text.match_indices("variables.")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .filter(|k| !k.is_empty())
        .collect()
}

/// One version's rendered selectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Selectors {
    pub bad: String,
    pub total: String,
}

/// Both versions' selectors of one declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionSelectors {
    pub canary: Selectors,
    pub primary: Selectors,
}

/// Render `decl` for both versions of `canary` (module docs): the template model of `metric`
/// (its `interval`, `templateVariables`) with `target` = the canary workload, then its
/// `-primary`. Errors ([`render_one`], both annotations', joined with `; `) name the
/// annotation.
pub fn render_versions(
    canary: &Canary,
    metric: &CanaryMetric,
    decl: &Declaration,
) -> Result<VersionSelectors, String> {
    let interval = metric_interval(metric);
    let target = canary.spec.target_ref.name.as_str();
    let primary_name = format!("{target}-primary");
    let canary_model = TemplateModel::new(canary, interval, metric.template_variables.as_ref());
    let primary_model = TemplateModel {
        target: &primary_name,
        ..canary_model.clone()
    };
    let bad = render_one(BAD_ANNOTATION, &decl.bad, &canary_model, &primary_model);
    let total = render_one(TOTAL_ANNOTATION, &decl.total, &canary_model, &primary_model);
    match (bad, total) {
        (Ok((cb, pb)), Ok((ct, pt))) => Ok(VersionSelectors {
            canary: Selectors { bad: cb, total: ct },
            primary: Selectors { bad: pb, total: pt },
        }),
        (b, t) => Err([b.err(), t.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// One annotation's selector `text` (key `key`) rendered with the canary's `model` and the
/// primary's, as (canary, primary). The one rule set of a selector, for the controller and
/// `pennant lint`. Errors name the annotation: a render error (unknown variable, unclosed
/// `{{`), a rendering that is not a series selector ([`check_selector`]), or one that is the
/// same for both versions (no `{{ target }}`).
pub fn render_one(
    key: &str,
    text: &str,
    model: &TemplateModel,
    primary: &TemplateModel,
) -> Result<(String, String), String> {
    let r = |m: &TemplateModel| {
        let q = render(text, m).map_err(|e| format!("annotation {key}: {e}"))?;
        let q = collapse_whitespace(&q);
        check_selector(&q).map_err(|e| format!("annotation {key}: {e}: {q}"))?;
        Ok::<_, String>(q)
    };
    let (c, p) = (r(model)?, r(primary)?);
    if c == p {
        return Err(format!(
            "annotation {key} renders the same selector for the canary and the primary ({c}): use {{{{ target }}}} to tell their series apart"
        ));
    }
    Ok((c, p))
}

/// `Ok` when `q` is one PromQL series selector: an optional metric name
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`) then an optional `{…}` of `label op "value"` matchers
/// (`=`, `!=`, `=~`, `!~`, comma-separated), at least one of the two. A function, an
/// operator or a range (`[5m]`) is refused: the judge reads the series' raw samples itself.
pub fn check_selector(q: &str) -> Result<(), String> {
    let q = q.trim();
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_len = if q.starts_with(is_start) {
        q.find(|c: char| !is_name(c)).unwrap_or(q.len())
    } else {
        0
    };
    let rest = &q[name_len..];
    if rest.is_empty() {
        return if name_len > 0 {
            Ok(())
        } else {
            Err("empty selector".into())
        };
    }
    let not =
        "not a series selector (metric{label=\"value\",…}; no functions, operators or ranges)";
    let inner = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| not.to_string())?;
    // matchers: label op "string", separated by commas (a trailing comma is allowed)
    let mut s = inner.trim_start();
    let mut matchers = 0;
    while !s.is_empty() {
        let l = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if l == 0 || !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(not.into());
        }
        s = s[l..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .iter()
            .find(|o| s.starts_with(**o))
            .ok_or_else(|| not.to_string())?;
        s = s[op.len()..].trim_start();
        let quote = s.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'));
        let Some(qc) = quote else {
            return Err(not.into());
        };
        // the closing quote: the first unescaped one
        let body = &s[1..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && qc != '`' {
                escaped = true;
            } else if c == qc {
                end = Some(i);
                break;
            }
        }
        let end = end.ok_or_else(|| "unterminated string in selector".to_string())?;
        s = body[end + 1..].trim_start();
        matchers += 1;
        match s.strip_prefix(',') {
            Some(r) => s = r.trim_start(),
            None if s.is_empty() => {}
            None => return Err(not.into()),
        }
    }
    if name_len == 0 && matchers == 0 {
        return Err("empty selector".into());
    }
    Ok(())
}

/// Sum of the reset-aware increases of `series` over `(from, to]`, rounded.
fn sum_increase(series: &[RawSeries], from: f64, to: f64) -> u64 {
    series
        .iter()
        .map(|s| increase(&s.samples, from, to))
        .sum::<f64>()
        .round() as u64
}

/// The events of one version from the raw series of its `bad` and `total` selectors over
/// `(from, to]`. PURE. Errors: [`InputError::NoSeries`] when `total` has no series (naming
/// `signal`, the version and the selector), [`InputError::Incomplete`] on a scrape gap
/// ([`incomplete`]).
pub fn version_counts(
    signal: &str,
    who: Version,
    sel: &Selectors,
    bad: &[RawSeries],
    total: &[RawSeries],
    from: f64,
    to: f64,
) -> Result<EventCounts, InputError> {
    if total.is_empty() {
        return Err(InputError::NoSeries(format!(
            "{signal}: no series {} for the {}",
            sel.total,
            who.as_str()
        )));
    }
    let all: Vec<RawSeries> = bad.iter().chain(total).cloned().collect();
    if let Some(m) = incomplete(&all, from, to) {
        return Err(InputError::Incomplete(format!("{signal}: {m}")));
    }
    Ok(EventCounts {
        bad: sum_increase(bad, from, to),
        total: sum_increase(total, from, to),
    })
}

/// One declared count signal ready to read: the signal, its Prometheus, its selectors.
#[derive(Clone)]
pub struct CountSource {
    pub signal: CountSignal,
    pub prom: PrometheusProvider,
    pub selectors: VersionSelectors,
}

impl CountSource {
    /// One version's events over `(from, to]` (Unix seconds); errors as [`version_counts`],
    /// [`InputError::Provider`] when a query fails.
    pub async fn read(&self, who: Version, from: i64, to: i64) -> Result<EventCounts, InputError> {
        let sel = match who {
            Version::Canary => &self.selectors.canary,
            Version::Primary => &self.selectors.primary,
        };
        let span = (to - from).max(1) + MARGIN_SECS;
        let fetch = |q: &str| {
            let query = format!("{q}[{span}s]");
            async move {
                self.prom
                    .data_at(&query, Some(to))
                    .await
                    .map(raw_series)
                    .map_err(|e| {
                        InputError::Provider(format!("{}: {query}: {e}", self.signal.name))
                    })
            }
        };
        let total = fetch(&sel.total).await?;
        let bad = fetch(&sel.bad).await?;
        let name = &self.signal.name;
        version_counts(name, who, sel, &bad, &total, from as f64, to as f64)
    }

    /// The primary's events over the `seconds` before `at` (the lookback): no series or a
    /// scrape gap give zeros (no history yet), a failed query an error.
    pub async fn lookback(&self, at: i64, seconds: i64) -> Result<EventCounts, InputError> {
        match self.read(Version::Primary, at - seconds, at).await {
            Err(InputError::NoSeries(_)) | Err(InputError::Incomplete(_)) => {
                Ok(EventCounts::default())
            }
            r => r,
        }
    }
}

/// The count signals `canary`'s `templateRef` metrics declare, in `analysis.metrics` order,
/// each with its Prometheus (the template's `address`, else `metrics_server`; its headers and
/// `secretRef` credentials) and rendered selectors. Errors start `MetricTemplate <ns>/<name>
/// (metric <metric>): ` and name the problem: the template or its Secret missing or
/// unreadable, an invalid declaration ([`declaration`], [`render_versions`]).
pub async fn sources(
    canary: &Canary,
    templates: &dyn TemplateSource,
    metrics_server: &str,
    http: &reqwest::Client,
) -> Result<Vec<CountSource>, String> {
    let Some(analysis) = canary.spec.analysis() else {
        return Ok(Vec::new());
    };
    let canary_ns = canary.metadata.namespace.clone().unwrap_or_default();
    let mut out = Vec::new();
    for metric in &analysis.metrics {
        let Some(tref) = &metric.template_ref else {
            continue;
        };
        let ns = tref
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&canary_ns);
        let id = format!("MetricTemplate {ns}/{} (metric {})", tref.name, metric.name);
        let template = match templates.template(ns, &tref.name).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(format!("{id} not found")),
            Err(e) => return Err(format!("{id} cannot be read: {e}")),
        };
        let Some(decl) = declaration(&template).map_err(|e| format!("{id}: {e}"))? else {
            continue;
        };
        let selectors = render_versions(canary, metric, &decl).map_err(|e| format!("{id}: {e}"))?;
        let spec = &template.spec.provider;
        let data = match spec.secret_name() {
            None => None,
            Some(name) => match templates.secret(ns, name).await {
                Ok(Some(d)) => Some((name, d)),
                Ok(None) => {
                    return Err(format!(
                        "{id}: secret {name:?} (spec.provider.secretRef) not found in namespace {ns}"
                    ));
                }
                Err(e) => return Err(format!("{id}: secret {name:?} cannot be read: {e}")),
            },
        };
        let creds = data.as_ref().map(|(name, data)| Credentials { name, data });
        let prom = PrometheusProvider::from_template(spec, creds, metrics_server, http)
            .map_err(|e| format!("{id}: {e}"))?;
        out.push(CountSource {
            signal: CountSignal {
                name: metric.name.clone(),
                tolerance_pp: decl.tolerance_pp,
            },
            prom,
            selectors,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(annotations: &[(&str, &str)], provider: &str) -> MetricTemplate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {
                "name": "jobs", "namespace": "test",
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            },
            "spec": {"provider": {"type": provider}, "query": "sum(rate(jobs_total[1m]))"}
        }))
        .unwrap()
    }

    const BAD: &str =
        r#"jobs_total{namespace="{{ namespace }}",workload="{{ target }}",status="failed"}"#;
    const TOTAL: &str = r#"jobs_total{namespace="{{ namespace }}",workload="{{ target }}"}"#;

    #[test]
    fn declarations_parse_or_say_what_is_wrong() {
        let ok = |a: &[(&str, &str)]| declaration(&template(a, "prometheus"));
        let err = |a: &[(&str, &str)], p: &str| declaration(&template(a, p)).unwrap_err();
        // no annotation: Flagger's threshold rule
        assert_eq!(ok(&[]), Ok(None));
        assert!(!declares(&template(&[("other", "x")], "prometheus")));
        let d = ok(&[(BAD_ANNOTATION, BAD), (TOTAL_ANNOTATION, TOTAL)])
            .unwrap()
            .unwrap();
        assert_eq!((d.bad.as_str(), d.tolerance_pp), (BAD, None));
        let d = ok(&[
            (BAD_ANNOTATION, BAD),
            (TOTAL_ANNOTATION, TOTAL),
            (TOLERANCE_ANNOTATION, " 2.5 "),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(d.tolerance_pp, Some(2.5));
        type Annotations<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Annotations, &str, &str)] = &[
            (
                &[(BAD_ANNOTATION, BAD)],
                "prometheus",
                "annotation judge.pennant.dev/total is missing or empty",
            ),
            (
                &[(BAD_ANNOTATION, " "), (TOTAL_ANNOTATION, TOTAL)],
                "prometheus",
                "annotation judge.pennant.dev/bad is missing or empty",
            ),
            (
                &[(TOLERANCE_ANNOTATION, "1")],
                "prometheus",
                "annotation judge.pennant.dev/bad is missing",
            ),
            (
                &[
                    (BAD_ANNOTATION, BAD),
                    (TOTAL_ANNOTATION, TOTAL),
                    (TOLERANCE_ANNOTATION, "0"),
                ],
                "prometheus",
                "annotation judge.pennant.dev/tolerance \"0\" is not a number",
            ),
            (
                &[
                    (BAD_ANNOTATION, BAD),
                    (TOTAL_ANNOTATION, TOTAL),
                    (TOLERANCE_ANNOTATION, "1pp"),
                ],
                "prometheus",
                "\"1pp\" is not a number",
            ),
            (
                &[(BAD_ANNOTATION, BAD), (TOTAL_ANNOTATION, TOTAL)],
                "datadog",
                "need spec.provider.type prometheus, not \"datadog\"",
            ),
        ];
        for (a, p, want) in cases {
            let e = err(a, p);
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }

    #[test]
    fn selectors_are_checked() {
        for ok in [
            "jobs_total",
            "jobs_total{}",
            r#"jobs_total{a="b"}"#,
            r#"{__name__="jobs_total", pod=~"app-[0-9a-z]+-[0-9a-z]+", s!="x",}"#,
            r#"ns:jobs:total{a!~'x\'y', b=`c`}"#,
            r#"jobs_total{a="}{,"}"#,
        ] {
            assert_eq!(check_selector(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "{}",
            "sum(jobs_total)",
            "jobs_total[5m]",
            r#"jobs_total{a="b"}[5m]"#,
            r#"rate(jobs_total{a="b"}[1m])"#,
            "jobs_total / requests_total",
            r#"jobs_total{a="b}"#,
            r#"jobs_total{a=b}"#,
            r#"jobs_total{a="b" c="d"}"#,
            "9jobs",
        ] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
    }

    fn canary() -> (Canary, CanaryMetric) {
        let c: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "metrics": [
                    {"name": "jobs", "templateRef": {"name": "jobs"},
                     "templateVariables": {"queue": "emails"}}
                ]}
            }
        }))
        .unwrap();
        let m = c.spec.analysis().unwrap().metrics[0].clone();
        (c, m)
    }

    #[test]
    fn selectors_render_once_per_version() {
        let (c, m) = canary();
        let decl = |bad: &str, total: &str| Declaration {
            bad: bad.into(),
            total: total.into(),
            tolerance_pp: None,
        };
        let v = render_versions(
            &c,
            &m,
            &decl(
                r#"jobs_total{namespace="{{ namespace }}", workload="{{ target }}", queue="{{ variables.queue }}", status="failed"}"#,
                "jobs_total{namespace=\"{{ namespace }}\",\n  pod=~\"{{ target }}-[0-9a-zA-Z]+-[0-9a-zA-Z]+\"}",
            ),
        )
        .unwrap();
        assert_eq!(
            v.canary.bad,
            r#"jobs_total{namespace="test", workload="podinfo", queue="emails", status="failed"}"#
        );
        assert_eq!(
            v.primary.bad,
            r#"jobs_total{namespace="test", workload="podinfo-primary", queue="emails", status="failed"}"#
        );
        assert_eq!(
            v.primary.total,
            r#"jobs_total{namespace="test", pod=~"podinfo-primary-[0-9a-zA-Z]+-[0-9a-zA-Z]+"}"#
        );
        // no {{ target }}: both versions would read the same series
        let e =
            render_versions(&c, &m, &decl(r#"jobs_total{status="failed"}"#, TOTAL)).unwrap_err();
        assert!(
            e.starts_with("annotation judge.pennant.dev/bad renders the same selector"),
            "{e}"
        );
        // a rate is not a selector; an unknown variable is named
        let e = render_versions(
            &c,
            &m,
            &decl(BAD, "sum(rate(jobs_total{workload=\"{{ target }}\"}[1m]))"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("annotation judge.pennant.dev/total: not a series selector"),
            "{e}"
        );
        let e =
            render_versions(&c, &m, &decl("jobs{a=\"{{ variables.nope }}\"}", TOTAL)).unwrap_err();
        assert!(
            e.contains("unknown template variable \"variables.nope\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn sources_name_the_template_and_metric_of_a_bad_declaration() {
        use crate::analysis::TemplateSnapshot;
        let (c, _) = canary();
        let http = crate::analysis::http::testing::http();
        let run = |src: TemplateSnapshot| {
            let (c, http) = (c.clone(), http.clone());
            async move {
                sources(&c, &src, "http://prom:9090", &http).await.map(|v| {
                    v.into_iter()
                        .map(|s| {
                            (
                                s.signal,
                                s.selectors.primary.total,
                                s.prom.url().to_string(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            }
        };
        let e = run(TemplateSnapshot::default()).await.unwrap_err();
        assert_eq!(e, "MetricTemplate test/jobs (metric jobs) not found");
        // a template without the annotations is not a count signal
        let src = TemplateSnapshot::default().with_template(template(&[], "prometheus"));
        assert_eq!(run(src).await, Ok(vec![]));
        let src = TemplateSnapshot::default()
            .with_template(template(&[(BAD_ANNOTATION, BAD)], "prometheus"));
        let e = run(src).await.unwrap_err();
        assert!(
            e.starts_with("MetricTemplate test/jobs (metric jobs): annotation judge.pennant.dev/total is missing"),
            "{e}"
        );
        let src = TemplateSnapshot::default().with_template(template(
            &[
                (BAD_ANNOTATION, BAD),
                (TOTAL_ANNOTATION, TOTAL),
                (TOLERANCE_ANNOTATION, "2"),
            ],
            "prometheus",
        ));
        let got = run(src).await.unwrap();
        assert_eq!(
            got,
            vec![(
                CountSignal {
                    name: "jobs".into(),
                    tolerance_pp: Some(2.0)
                },
                r#"jobs_total{namespace="test",workload="podinfo-primary"}"#.to_string(),
                "http://prom:9090".to_string()
            )]
        );
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, f64)]) -> RawSeries {
        RawSeries {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn version_counts_sum_increases_and_need_the_total() {
        let sel = Selectors {
            bad: "b".into(),
            total: "t".into(),
        };
        let grid = |a: f64, b: f64| -> Vec<(f64, f64)> {
            (0..=4)
                .map(|i| (i as f64 * 15.0, a + (b - a) * i as f64 / 4.0))
                .collect()
        };
        let total = vec![
            series(&[("pod", "a")], &grid(100.0, 160.0)),
            // 5 + 5, a reset (50 → 10 counts 10), then 10
            series(
                &[("pod", "b")],
                &[
                    (0.0, 40.0),
                    (15.0, 45.0),
                    (30.0, 50.0),
                    (45.0, 10.0),
                    (60.0, 20.0),
                ],
            ),
        ];
        let bad = vec![series(&[("pod", "a")], &grid(0.0, 6.0))];
        let c = version_counts("jobs", Version::Canary, &sel, &bad, &total, 0.0, 60.0).unwrap();
        assert_eq!(c, EventCounts { bad: 6, total: 90 });
        // no bad series yet: 0 bad events
        let c = version_counts("jobs", Version::Canary, &sel, &[], &total, 0.0, 60.0).unwrap();
        assert_eq!(c, EventCounts { bad: 0, total: 90 });
        // no total series: the signal and the selector are named
        let e = version_counts("jobs", Version::Primary, &sel, &bad, &[], 0.0, 60.0).unwrap_err();
        assert_eq!(
            e,
            InputError::NoSeries("jobs: no series t for the primary".into())
        );
        // a scrape gap defers the step
        let late = vec![series(
            &[("pod", "a")],
            &[(0.0, 1.0), (15.0, 2.0), (20.0, 3.0)],
        )];
        let mut all = total.clone();
        all.extend(late);
        let e = version_counts("jobs", Version::Canary, &sel, &bad, &all, 0.0, 60.0).unwrap_err();
        assert!(
            matches!(e, InputError::Incomplete(ref m) if m.starts_with("jobs: scrape gap")),
            "{e:?}"
        );
    }
}
