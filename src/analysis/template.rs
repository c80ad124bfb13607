//! Rendering of metric query templates (builtin queries, inline `query`, MetricTemplate `query`).
//!
//! Flagger renders these with Go's `text/template`, `missingkey=error` and *no data object*: the
//! canary's values are exposed as zero-argument functions, so `{{ namespace }}` and
//! `{{ variables.key }}` work and `{{ .namespace }}` does not (Flagger quirk §2.16-9).
//! pennant accepts both: the function form (`{{ namespace }}`) and the dot form
//! (`{{ .namespace }}`, `{{ .variables.key }}`), so a query written either way renders the same.
//!
//! Supported inside `{{ }}`: one variable, with any whitespace around it; Go's trim markers
//! (`{{- x -}}` drop the whitespace before/after the action) and comments (`{{/* ... */}}`).
//! Not supported: pipelines and other template functions (`printf`, `if`, ...); such an action is
//! an error that quotes it, never passed through silently.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::Canary;

/// The values a query template can use, Flagger's `MetricTemplateModel`.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateModel<'a> {
    /// `name`: the Canary's name.
    pub name: String,
    /// `namespace`: the Canary's namespace.
    pub namespace: String,
    /// `target`: `targetRef.name`.
    pub target: &'a str,
    /// `service`: `service.name`, else the target's name.
    pub service: &'a str,
    /// `ingress`: `ingressRef.name`, else the target's name.
    pub ingress: &'a str,
    /// `route`: `routeRef.name`, else the target's name.
    pub route: &'a str,
    /// `interval`: the metric's range-vector window, e.g. `1m`.
    pub interval: &'a str,
    /// `variables.<key>`: the metric's `templateVariables`.
    pub variables: Option<&'a BTreeMap<String, String>>,
}

impl<'a> TemplateModel<'a> {
    /// The model for one metric of `canary`, as Flagger's `toMetricModel`.
    pub fn new(
        canary: &'a Canary,
        interval: &'a str,
        variables: Option<&'a BTreeMap<String, String>>,
    ) -> Self {
        let spec = &canary.spec;
        let target = spec.target_ref.name.as_str();
        TemplateModel {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            target,
            service: spec.apex_name(),
            ingress: spec
                .ingress_ref
                .as_ref()
                .map_or(target, |r| r.name.as_str()),
            route: spec.route_ref.as_ref().map_or(target, |r| r.name.as_str()),
            interval,
            variables,
        }
    }

    fn lookup(&self, var: &str) -> Result<&str, RenderError> {
        if let Some(key) = var.strip_prefix("variables.") {
            return self
                .variables
                .and_then(|v| v.get(key))
                .map(String::as_str)
                .ok_or_else(|| RenderError::UnknownVariable(var.to_string()));
        }
        Ok(match var {
            "name" => &self.name,
            "namespace" => &self.namespace,
            "target" => self.target,
            "service" => self.service,
            "ingress" => self.ingress,
            "route" => self.route,
            "interval" => self.interval,
            _ => return Err(RenderError::UnknownVariable(var.to_string())),
        })
    }
}

/// Why a template could not be rendered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A variable that is not in the model, or a `variables.<key>` missing from
    /// `templateVariables` (Go's `missingkey=error`).
    #[error(
        "unknown template variable {0:?} (known: name, namespace, target, service, ingress, route, interval, variables.<key>)"
    )]
    UnknownVariable(String),
    /// `{{` without a matching `}}`; the number is the byte offset of the `{{`.
    #[error("unclosed template action starting at byte {0}")]
    Unclosed(usize),
    /// An action that is not a single variable (pipelines, functions, control structures).
    #[error(
        "unsupported template action {{{{{0}}}}}: only variables such as {{{{ namespace }}}} are supported"
    )]
    Unsupported(String),
}

/// Render `template` with `model`. Pure.
pub fn render(template: &str, model: &TemplateModel<'_>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let start = offset + open;
        let after_open = &rest[open + 2..];
        let close = after_open.find("}}").ok_or(RenderError::Unclosed(start))?;
        let raw = &after_open[..close];

        let (trim_left, inner) = match raw.strip_prefix('-') {
            Some(r) if r.starts_with(char::is_whitespace) => (true, r),
            _ => (false, raw),
        };
        let (trim_right, inner) = match inner.strip_suffix('-') {
            Some(r) if r.ends_with(char::is_whitespace) => (true, r),
            _ => (false, inner),
        };

        out.push_str(&rest[..open]);
        if trim_left {
            out.truncate(out.trim_end().len());
        }

        let inner = inner.trim();
        let is_comment = inner.starts_with("/*") && inner.ends_with("*/") && inner.len() >= 4;
        if !is_comment {
            let var = inner.strip_prefix('.').unwrap_or(inner);
            if var.is_empty()
                || var.contains(char::is_whitespace)
                || var.contains(['|', '(', '"', '$'])
            {
                return Err(RenderError::Unsupported(raw.to_string()));
            }
            out.push_str(model.lookup(var)?);
        }

        let consumed = open + 2 + close + 2;
        rest = &rest[consumed..];
        offset += consumed;
        if trim_right {
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            rest = trimmed;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Collapse every run of whitespace into one space and trim the ends, as Flagger's Prometheus
/// provider does before sending a query (multi-line templates become one-line PromQL).
pub fn collapse_whitespace(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            ("le".to_string(), "0.5".to_string()),
        ])
    }

    fn model(vars: &BTreeMap<String, String>) -> TemplateModel<'_> {
        TemplateModel {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo-deploy",
            service: "podinfo-svc",
            ingress: "podinfo-ing",
            route: "podinfo-route",
            interval: "1m",
            variables: Some(vars),
        }
    }

    #[test]
    fn renders_function_and_dot_forms() {
        let v = vars();
        let m = model(&v);
        let cases = [
            ("{{ name }}", "podinfo"),
            ("{{namespace}}", "test"),
            ("{{   target\t}}", "podinfo-deploy"),
            ("{{ .service }}", "podinfo-svc"),
            ("{{.ingress}}", "podinfo-ing"),
            ("{{ route }}", "podinfo-route"),
            ("[{{ interval }}]", "[1m]"),
            ("{{ variables.app }}", "podinfo"),
            ("{{ .variables.le }}", "0.5"),
            ("no actions at all", "no actions at all"),
            ("", ""),
            (
                r#"rate(x{ns="{{ namespace }}",pod=~"{{ target }}-.*"}[{{ interval }}])"#,
                r#"rate(x{ns="test",pod=~"podinfo-deploy-.*"}[1m])"#,
            ),
            ("a {{- name }}", "apodinfo"),
            ("{{ name -}}  \n b", "podinfob"),
            ("a  {{- name -}}  b", "apodinfob"),
            ("{{-3 }}", "ERR"),
            ("x{{/* a comment */}}y", "xy"),
            ("{{ name }}{{ namespace }}", "podinfotest"),
        ];
        for (tpl, want) in cases {
            let got = render(tpl, &m);
            if want == "ERR" {
                assert!(got.is_err(), "{tpl:?} -> {got:?}");
            } else {
                assert_eq!(got.as_deref(), Ok(want), "{tpl:?}");
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let v = vars();
        let m = model(&v);
        let cases = [
            ("{{ nope }}", RenderError::UnknownVariable("nope".into())),
            (
                "{{ .Namespace }}",
                RenderError::UnknownVariable("Namespace".into()),
            ),
            (
                "{{ variables.missing }}",
                RenderError::UnknownVariable("variables.missing".into()),
            ),
            ("x {{ name ", RenderError::Unclosed(2)),
            (
                r#"{{ printf "%s" name }}"#,
                RenderError::Unsupported(r#" printf "%s" name "#.into()),
            ),
            (
                "{{ name | upper }}",
                RenderError::Unsupported(" name | upper ".into()),
            ),
            ("{{ }}", RenderError::Unsupported(" ".into())),
        ];
        for (tpl, want) in cases {
            assert_eq!(render(tpl, &m), Err(want), "{tpl:?}");
        }
        let e = render("{{ nope }}", &m).unwrap_err().to_string();
        assert!(e.starts_with("unknown template variable \"nope\""), "{e}");
    }

    #[test]
    fn variables_without_template_variables_is_an_error() {
        let empty = BTreeMap::new();
        let mut m = model(&empty);
        m.variables = None;
        assert_eq!(
            render("{{ variables.app }}", &m),
            Err(RenderError::UnknownVariable("variables.app".into()))
        );
    }

    #[test]
    fn model_defaults_follow_flagger() {
        let c: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo-app"}, "service": {"port": 9898}}
        }))
        .unwrap();
        let m = TemplateModel::new(&c, "2m", None);
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.target,
                m.service,
                m.ingress,
                m.route,
                m.interval
            ),
            (
                "podinfo",
                "test",
                "podinfo-app",
                "podinfo-app",
                "podinfo-app",
                "podinfo-app",
                "2m"
            )
        );
        let c: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo-app"},
                "ingressRef": {"kind": "Ingress", "name": "ing"},
                "routeRef": {"kind": "HTTPRoute", "name": "rt"},
                "service": {"port": 9898, "name": "svc"}
            }
        }))
        .unwrap();
        let m = TemplateModel::new(&c, "1m", None);
        assert_eq!((m.service, m.ingress, m.route), ("svc", "ing", "rt"));
    }

    #[test]
    fn collapse_whitespace_makes_one_line() {
        assert_eq!(
            collapse_whitespace("\n\tsum(\n\t\trate(x[1m])\n\t) \n\t* 100"),
            "sum( rate(x[1m]) ) * 100"
        );
        assert_eq!(collapse_whitespace("vector(1)"), "vector(1)");
    }
}
