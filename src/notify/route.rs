//! Who receives an alert (Flagger's `alert()`, §6.1), as pure functions.
//!
//! A Canary without `analysis.alerts` sends every alert to the global notifier. Otherwise each
//! `analysis.alerts[]` entry receives the alerts at or above its severity: `info` everything,
//! `warn` warnings and errors, `error` errors only. An entry without `severity` means `info`, as
//! Flagger documents (Flagger's code drops it instead, §2.16-1). An unknown severity receives
//! nothing; validation reports it ([`alert_threshold`] gives the message).
//!
//! Progress alerts (Flagger #737): with the Canary annotation [`PROGRESS_ANNOTATION`]
//! `"true"`, the notices Flagger only records as Events (each weight advance, each halt, the
//! start of the analysis, ...) are posted too, on the same routes and with the same severity
//! filter ([`alert_text`]).

use kube::ResourceExt;

use crate::api::Canary;
use crate::notify::Severity;

/// The lowest notice severity an `analysis.alerts[].severity` receives: `None` or `""` → info.
/// The error is a message for a status condition / Warning Event.
pub fn alert_threshold(severity: Option<&str>) -> Result<Severity, String> {
    match severity.unwrap_or("") {
        "" | "info" => Ok(Severity::Info),
        "warn" => Ok(Severity::Warn),
        "error" => Ok(Severity::Error),
        other => Err(format!(
            "unknown alert severity {other:?}: expected info, warn or error"
        )),
    }
}

/// Whether an alert with `severity` (`analysis.alerts[].severity`) receives a notice of
/// severity `notice`.
pub fn wanted(alert_severity: Option<&str>, notice: Severity) -> bool {
    alert_threshold(alert_severity).is_ok_and(|min| notice >= min)
}

/// Canary annotation: `"true"` also posts each weight advance and each halt as an alert.
/// Flagger's CRD allows only `info`, `warn` and `error` as `alerts[].severity`, so the opt-in
/// cannot be a severity.
pub const PROGRESS_ANNOTATION: &str = "canary.pennant.dev/progress-alerts";

/// The Canary's progress-alerts setting: `Ok(false)` without the annotation, `Err` with a
/// message for a value other than `true` or `false`.
pub fn progress_alerts(canary: &Canary) -> Result<bool, String> {
    match canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROGRESS_ANNOTATION))
        .map(|v| v.trim())
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(format!(
            "annotation {PROGRESS_ANNOTATION}: {v:?} is neither \"true\" nor \"false\""
        )),
    }
}

/// The alert text of a notice (an Event `message` and maybe an `alert`): its alert, else, with
/// progress alerts on, the Event's message; `None` when nothing is posted.
pub fn alert_text(canary: &Canary, alert: Option<&str>, message: &str) -> Option<String> {
    match alert {
        Some(a) => Some(a.to_string()),
        None => progress_alerts(canary)
            .unwrap_or(false)
            .then(|| message.to_string()),
    }
}

/// One destination of an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The notifier from the `-slack-*` / `-msteams-*` flags.
    Global,
    /// The AlertProvider `namespace/name` of `analysis.alerts[]` entry `alert`; `namespace` is
    /// `providerRef.namespace`, else the Canary's.
    Provider {
        alert: String,
        namespace: String,
        name: String,
    },
}

/// Where a notice of `severity` about `canary` goes: `[Global]` when the Canary has no
/// `analysis.alerts`, else the providers of the entries that want it, in spec order (possibly
/// none).
pub fn routes(canary: &Canary, severity: Severity) -> Vec<Route> {
    let alerts = canary
        .spec
        .analysis()
        .map(|a| a.alerts.as_slice())
        .unwrap_or_default();
    if alerts.is_empty() {
        return vec![Route::Global];
    }
    let canary_ns = canary.namespace().unwrap_or_default();
    alerts
        .iter()
        .filter(|a| wanted(a.severity.as_deref(), severity))
        .map(|a| Route::Provider {
            alert: a.name.clone(),
            namespace: a
                .provider_ref
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| canary_ns.clone()),
            name: a.provider_ref.name.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::canary;
    use super::*;
    use Severity::{Error, Info, Warn};

    #[test]
    fn severity_table() {
        // (analysis.alerts[].severity, notice severity, delivered)
        let table: &[(Option<&str>, Severity, bool)] = &[
            (None, Info, true),
            (None, Warn, true),
            (None, Error, true),
            (Some(""), Info, true),
            (Some(""), Error, true),
            (Some("info"), Info, true),
            (Some("info"), Warn, true),
            (Some("info"), Error, true),
            (Some("warn"), Info, false),
            (Some("warn"), Warn, true),
            (Some("warn"), Error, true),
            (Some("error"), Info, false),
            (Some("error"), Warn, false),
            (Some("error"), Error, true),
            (Some("critical"), Error, false),
            (Some("Error"), Error, false),
        ];
        for (alert, notice, want) in table {
            assert_eq!(wanted(*alert, *notice), *want, "{alert:?} / {notice:?}");
        }
    }

    #[test]
    fn progress_alerts_post_event_only_notices_when_opted_in() {
        let mut c = canary(json!({"interval": "1m"}));
        let advance = "Advance podinfo.test canary weight 20";
        let done = "Canary analysis completed successfully, promotion finished.";
        assert_eq!(alert_text(&c, None, advance), None, "Flagger: events only");
        assert_eq!(
            alert_text(&c, Some(done), "Promotion completed!").as_deref(),
            Some(done)
        );
        c.metadata.annotations = Some([(PROGRESS_ANNOTATION.into(), "true".into())].into());
        assert_eq!(alert_text(&c, None, advance).as_deref(), Some(advance));
        assert_eq!(
            alert_text(&c, Some(done), "Promotion completed!").as_deref(),
            Some(done)
        );
        c.metadata.annotations = Some([(PROGRESS_ANNOTATION.into(), "false".into())].into());
        assert_eq!(alert_text(&c, None, advance), None);
        c.metadata.annotations = Some([(PROGRESS_ANNOTATION.into(), "yes".into())].into());
        assert_eq!(alert_text(&c, None, advance), None);
        assert_eq!(
            progress_alerts(&c),
            Err("annotation canary.pennant.dev/progress-alerts: \"yes\" is neither \"true\" nor \"false\"".into())
        );
    }

    #[test]
    fn progress_alerts_keep_the_severity_filter() {
        // an advance (info) reaches the info entry only; a halt (warn) the info and warn ones
        let mut c = canary(json!({"alerts": [
            {"name": "all", "severity": "info", "providerRef": {"name": "team"}},
            {"name": "pager", "severity": "warn", "providerRef": {"name": "oncall"}}
        ]}));
        c.metadata.annotations = Some([(PROGRESS_ANNOTATION.into(), "true".into())].into());
        let names = |s| -> Vec<String> {
            routes(&c, s)
                .into_iter()
                .map(|r| match r {
                    Route::Provider { name, .. } => name,
                    Route::Global => "global".into(),
                })
                .collect()
        };
        assert!(alert_text(&c, None, "Advance podinfo.test canary weight 20").is_some());
        assert_eq!(names(Info), vec!["team"]);
        assert!(alert_text(&c, None, "Halt podinfo.test advancement success rate 80%").is_some());
        assert_eq!(names(Warn), vec!["team", "oncall"]);
    }

    #[test]
    fn unknown_severity_has_a_message() {
        assert_eq!(
            alert_threshold(Some("critical")),
            Err("unknown alert severity \"critical\": expected info, warn or error".into())
        );
        assert_eq!(alert_threshold(None), Ok(Info));
    }

    #[test]
    fn no_alerts_means_global() {
        let c = canary(json!({"stepWeight": 10}));
        for s in [Info, Warn, Error] {
            assert_eq!(routes(&c, s), vec![Route::Global]);
        }
        let mut none = c.clone();
        none.spec.analysis = None;
        assert_eq!(routes(&none, Info), vec![Route::Global]);
    }

    #[test]
    fn alerts_route_to_providers_by_severity_and_namespace() {
        let c = canary(json!({
            "alerts": [
                {"name": "all", "providerRef": {"name": "slack"}},
                {"name": "warnings", "severity": "warn", "providerRef": {"name": "teams", "namespace": "ops"}},
                {"name": "pages", "severity": "error", "providerRef": {"name": "pager", "namespace": ""}}
            ]
        }));
        let p = |alert: &str, ns: &str, name: &str| Route::Provider {
            alert: alert.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(routes(&c, Info), vec![p("all", "test", "slack")]);
        assert_eq!(
            routes(&c, Warn),
            vec![p("all", "test", "slack"), p("warnings", "ops", "teams")]
        );
        assert_eq!(
            routes(&c, Error),
            vec![
                p("all", "test", "slack"),
                p("warnings", "ops", "teams"),
                p("pages", "test", "pager")
            ]
        );

        let only_errors = canary(json!({
            "alerts": [{"name": "pages", "severity": "error", "providerRef": {"name": "pager"}}]
        }));
        assert_eq!(
            routes(&only_errors, Info),
            vec![],
            "never the global notifier"
        );
    }
}
