//! Alerts: the chat messages Flagger sends about a canary (reference/flagger.md §6), to the
//! services of `AlertProvider`s routed by `analysis.alerts`, or to the global notifier set by
//! flags when a Canary has no `analysis.alerts`.
//!
//! - [`Alert`] is one message: canary, phase, severity, text and Flagger's metadata fields.
//! - [`Notifier`] posts it; one implementation per service, each sending exactly the JSON
//!   Flagger sends (`pkg/notifier/*.go`): `slack`, `msteams` (MessageCard), `discord` (Slack
//!   format at `<address>/slack`), `rocket`, `gchat` (Google Chat card), and `generic`, which
//!   posts Flagger's event-webhook payload (§5.2) and also serves the global `-event-webhook`.
//! - [`notifier_for`] builds the notifier of an AlertProvider; [`routes`] / [`wanted`] decide,
//!   purely, who receives which severity; [`dispatch`] does all of it for one alert.
//! - [`GlobalNotifiers`] holds the notifiers built from the `-slack-*`, `-msteams-*` and
//!   `-event-webhook` flags.
//! - [`flux`] delivers Flux Events for `notification.toolkit.fluxcd.io` Providers (Flux's
//!   payloads, commit statuses) through the same transport: one delivery path for Canary and
//!   GitOps notifications.
//!
//! Differences from Flagger, on purpose:
//! - an alert without `severity` means `info` (receives everything), as Flagger documents;
//!   Flagger's code drops such alerts (§2.16-1);
//! - any 2xx is success (Flagger: only 200); each attempt times out after 10 s (Flagger: 5 s)
//!   and transport errors, 429 and 5xx are retried, 3 attempts in all (Flagger: none);
//! - Slack's Web API answering `200 {"ok": false, "error": ...}` (bot tokens with
//!   `chat.postMessage`) is an error, not a success;
//! - `Traffic routing` describes the strategy pennant runs ([`crate::api::CanaryAnalysis::strategy`]) and the
//!   effective `maxWeight` (100 when unset), where Flagger prints the raw field (`max: 0`);
//! - errors never contain the webhook URL's path or the token (the path is the secret).

mod discord;
pub mod flux;
mod generic;
mod global;
mod googlechat;
mod msteams;
mod rocket;
mod route;
mod slack;
#[cfg(test)]
mod testutil;
mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::{BoxFuture, join_all};
use k8s_openapi::ByteString;
use kube::ResourceExt;

use crate::api::{
    AlertProvider, AlertProviderError, AlertProviderSpec, Canary, CanaryPhase, Strategy,
};

pub use global::{GlobalNotifiers, GlobalSettings};
pub use route::{
    PROGRESS_ANNOTATION, Route, alert_text, alert_threshold, progress_alerts, routes, wanted,
};
pub use transport::{DeliveryPolicy, redact};

/// Severity of a notice: the Event type and the alert severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// One alert message about a canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// The canary's phase (only the `generic` payload carries it).
    pub phase: CanaryPhase,
    /// [`crate::webhook::checksum`] of the canary's status (only the `generic` payload carries it).
    pub checksum: String,
    /// The text, e.g. "New revision detected, progressing canary analysis."
    pub message: String,
    /// Picks the color (`error` is red) and who receives it (see [`wanted`]).
    pub severity: Severity,
    /// Titled values shown under the text, in order (Flagger's `Cluster`, `Target`,
    /// `Failed checks threshold`, `Progress deadline`, `Traffic routing`).
    pub fields: Vec<(String, String)>,
}

impl Alert {
    /// An alert about `canary` without fields. `phase` and `checksum` come from
    /// `canary.status`: pass the Canary carrying the status just decided.
    pub fn new(canary: &Canary, severity: Severity, message: impl Into<String>) -> Self {
        let status = canary.status.as_ref();
        Alert {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            phase: status
                .and_then(|s| s.phase)
                .unwrap_or(CanaryPhase::Initializing),
            checksum: crate::webhook::checksum(status),
            message: message.into(),
            severity,
            fields: Vec::new(),
        }
    }

    /// Append Flagger's metadata fields ([`metadata_fields`]); Flagger adds them to the
    /// initialization and new-revision alerts (see [`wants_metadata`]).
    pub fn with_metadata(mut self, canary: &Canary) -> Self {
        self.fields.extend(metadata_fields(canary));
        self
    }

    /// Put `Cluster: <name>` first, as Flagger does for every alert when `-cluster-name` is
    /// set. An empty name adds nothing.
    pub fn with_cluster(mut self, cluster_name: &str) -> Self {
        if !cluster_name.is_empty() {
            self.fields
                .insert(0, ("Cluster".into(), cluster_name.to_string()));
        }
        self
    }

    /// `<name>.<namespace>`, the title every service shows.
    pub fn subject(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// Flagger's severity names: `info`, `warn`, `error`.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warn => "warn",
        Severity::Error => "error",
    }
}

/// Flagger's `alertMetadata`: `Target` (`Kind/name.namespace`), `Failed checks threshold`,
/// `Progress deadline` (`<seconds>s`) and, for analyses that shift traffic, `Traffic routing`:
/// `Weight step: 10 max: 50`, `Weight steps: 1,10,50 max: 50`, `A/B Testing` or `Blue/Green`.
pub fn metadata_fields(canary: &Canary) -> Vec<(String, String)> {
    let t = &canary.spec.target_ref;
    let analysis = canary.spec.analysis();
    let mut fields = vec![
        (
            "Target".to_string(),
            format!(
                "{}/{}.{}",
                t.kind,
                t.name,
                canary.namespace().unwrap_or_default()
            ),
        ),
        (
            "Failed checks threshold".to_string(),
            analysis.map_or(1, |a| a.threshold()).to_string(),
        ),
        (
            "Progress deadline".to_string(),
            format!("{}s", canary.spec.progress_deadline().as_secs()),
        ),
    ];
    let routing = analysis.and_then(|a| match a.strategy() {
        Strategy::ABTesting => Some("A/B Testing".to_string()),
        Strategy::BlueGreen => Some("Blue/Green".to_string()),
        Strategy::Canary if a.step_weight.unwrap_or(0) > 0 => Some(format!(
            "Weight step: {} max: {}",
            a.step_weight.unwrap_or(0),
            a.max_weight()
        )),
        Strategy::Canary if !a.step_weights.is_empty() => {
            let steps: Vec<String> = a.step_weights.iter().map(i32::to_string).collect();
            Some(format!(
                "Weight steps: {} max: {}",
                steps.join(","),
                a.max_weight()
            ))
        }
        Strategy::Canary => None,
    });
    if let Some(r) = routing {
        fields.push(("Traffic routing".to_string(), r));
    }
    fields
}

/// Whether Flagger attaches the metadata fields to this alert text: the initialization alert
/// ("New Deployment detected, initialization completed.") and the new-revision alert ("New
/// revision detected, progressing canary analysis."), the texts `canary::machine` produces.
pub fn wants_metadata(alert_text: &str) -> bool {
    alert_text == "New revision detected, progressing canary analysis."
        || (alert_text.starts_with("New ")
            && alert_text.ends_with(" detected, initialization completed."))
}

/// Why an alert was not delivered. Variant names are stable (see [`NotifyError::reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A configuration problem, naming the object (`AlertProvider ns/name`, `Canary ns/name`,
    /// `flag`) and the field (`spec.address`, `spec.type`, `-slack-channel`, ...).
    #[error("{object}: {field} {reason}")]
    Invalid {
        object: String,
        field: String,
        reason: String,
    },
    /// The service answered a non-2xx status; `body` is the start of its response.
    #[error("{notifier} returned {status}{}{}", colon(body), attempts_note(*attempts))]
    Status {
        /// `kind scheme://host/…`
        notifier: String,
        status: u16,
        body: String,
        attempts: usize,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("{notifier} failed: {error}{}", attempts_note(*attempts))]
    Transport {
        notifier: String,
        error: String,
        attempts: usize,
    },
    /// A 2xx answer that says the message was refused (Slack's `{"ok": false, "error": ...}`).
    #[error("{notifier} refused the message: {error}")]
    Rejected { notifier: String, error: String },
}

impl NotifyError {
    /// A short label for metrics and logs: `invalid`, `status`, `transport`, `rejected`.
    pub fn reason(&self) -> &'static str {
        match self {
            NotifyError::Invalid { .. } => "invalid",
            NotifyError::Status { .. } => "status",
            NotifyError::Transport { .. } => "transport",
            NotifyError::Rejected { .. } => "rejected",
        }
    }
}

fn colon(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

fn attempts_note(n: usize) -> String {
    if n > 1 {
        format!(" (after {n} attempts)")
    } else {
        String::new()
    }
}

/// Posts [`Alert`]s to one destination.
pub trait Notifier: Send + Sync {
    /// The service, as AlertProvider `spec.type` names it (`slack`, `msteams`, ...).
    fn kind(&self) -> &'static str;
    /// `kind scheme://host/…`, for logs (no secret path).
    fn describe(&self) -> String;
    /// POST the alert; `Ok` once the service accepted it.
    fn post<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// The services [`notifier_for`] knows, as `spec.type` spells them.
pub const NOTIFIER_TYPES: &[&str] = &[
    "slack",
    "msteams",
    "discord",
    "rocket",
    "gchat",
    "googlechat",
    "generic",
];

/// How to reach the service, once the address is known.
pub(crate) struct Target<'a> {
    pub url: reqwest::Url,
    pub token: Option<String>,
    pub proxy: Option<&'a str>,
    pub username: &'a str,
    pub channel: &'a str,
}

/// Build the notifier for `type_`; `Ok(None)` for an unknown type. The error is the reason the
/// proxy is unusable.
pub(crate) fn build(
    type_: &str,
    t: Target<'_>,
    http: &reqwest::Client,
    policy: &DeliveryPolicy,
) -> Result<Option<Box<dyn Notifier>>, String> {
    let endpoint = |kind: &'static str, url: reqwest::Url| {
        transport::Endpoint::new(kind, http, url, t.token.clone(), t.proxy, policy.clone())
    };
    let (user, chan) = (t.username.to_string(), t.channel.to_string());
    Ok(Some(match type_ {
        "slack" => Box::new(slack::Slack::new(endpoint("slack", t.url)?, user, chan)),
        "discord" => Box::new(discord::Discord::new(
            endpoint("discord", discord::slack_compatible(t.url))?,
            user,
            chan,
        )),
        "rocket" => Box::new(rocket::Rocket::new(endpoint("rocket", t.url)?, user, chan)),
        "msteams" => Box::new(msteams::MsTeams::new(endpoint("msteams", t.url)?)),
        "gchat" | "googlechat" => Box::new(googlechat::GoogleChat::new(endpoint("gchat", t.url)?)),
        "generic" => Box::new(generic::Generic::new(endpoint("generic", t.url)?)),
        _ => return Ok(None),
    }))
}

/// The notifier of `provider` ([`notifier_for_with`] with the default [`DeliveryPolicy`]).
pub fn notifier_for(
    provider: &AlertProvider,
    secret_data: Option<&BTreeMap<String, ByteString>>,
    http: &reqwest::Client,
) -> Result<Box<dyn Notifier>, NotifyError> {
    notifier_for_with(provider, secret_data, http, &DeliveryPolicy::default())
}

/// The notifier of `provider`. `secret_data` is the `.data` of the Secret named by
/// `spec.secretRef`, looked up in the provider's namespace (`None` when it does not exist or
/// `secretRef` is unset); its `address` key replaces `spec.address` and its optional `token` is
/// sent as `Authorization: Bearer <token>` (see [`AlertProviderSpec::resolve`]). `http` is used
/// unless `spec.proxy` is set, in which case a dedicated client goes through that proxy.
///
/// Errors name the AlertProvider and the field: an unknown `spec.type`, no address, a missing
/// Secret or `address` key, an address or proxy that is not an http(s) URL.
pub fn notifier_for_with(
    provider: &AlertProvider,
    secret_data: Option<&BTreeMap<String, ByteString>>,
    http: &reqwest::Client,
    policy: &DeliveryPolicy,
) -> Result<Box<dyn Notifier>, NotifyError> {
    let object = format!(
        "AlertProvider {}/{}",
        provider.namespace().unwrap_or_default(),
        provider.name_any()
    );
    let invalid = |field: &str, reason: String| NotifyError::Invalid {
        object: object.clone(),
        field: field.to_string(),
        reason,
    };
    let spec: &AlertProviderSpec = &provider.spec;
    let type_ = spec.type_.as_str();
    if !NOTIFIER_TYPES.contains(&type_) {
        return Err(invalid(
            "spec.type",
            format!(
                "is {type_:?}; expected one of {}",
                NOTIFIER_TYPES.join(", ")
            ),
        ));
    }
    let endpoint = spec.resolve(secret_data).map_err(|e| match e {
        AlertProviderError::SecretNotFound(s) => invalid(
            "spec.secretRef.name",
            format!("names Secret {s:?}, which does not exist in the provider's namespace"),
        ),
        AlertProviderError::SecretWithoutAddress(s) => invalid(
            "spec.secretRef.name",
            format!("names Secret {s:?}, which has no `address` key"),
        ),
        AlertProviderError::NoAddress => invalid(
            "spec.address",
            "is not set and there is no spec.secretRef".into(),
        ),
        AlertProviderError::NotUtf8 { secret, key } => invalid(
            "spec.secretRef.name",
            format!("names Secret {secret:?}, whose key {key:?} is not valid UTF-8"),
        ),
    })?;
    let address_field = match spec.secret_name() {
        Some(s) => format!("spec.secretRef (Secret {s:?} key `address`)"),
        None => "spec.address".to_string(),
    };
    let url =
        transport::parse_http_url(&endpoint.address).map_err(|r| invalid(&address_field, r))?;
    let target = Target {
        url,
        token: endpoint.token.clone(),
        proxy: endpoint.proxy.as_deref(),
        username: &endpoint.username,
        channel: &endpoint.channel,
    };
    match build(type_, target, http, policy) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => unreachable!("type checked against NOTIFIER_TYPES"),
        Err(reason) => Err(invalid("spec.proxy", reason)),
    }
}

/// An AlertProvider and the `.data` of the Secret its `spec.secretRef` names (from the
/// provider's namespace; `None` when absent or unset), as the caller's caches hold them.
#[derive(Clone, Debug)]
pub struct ResolvedProvider {
    pub provider: Arc<AlertProvider>,
    pub secret_data: Option<BTreeMap<String, ByteString>>,
}

/// Where one alert went and how it ended.
#[derive(Debug)]
pub struct Delivery {
    /// The route taken.
    pub route: Route,
    /// `slack https://hooks.slack.com/…` once a notifier was built.
    pub notifier: Option<String>,
    pub result: Result<(), NotifyError>,
}

/// Send `alert` about `canary` everywhere it should go (Flagger's `alert()`): to the global
/// notifier when the Canary has no `analysis.alerts`, otherwise to each alert's provider whose
/// severity wants it ([`routes`]). `lookup(namespace, name)` returns an AlertProvider and its
/// Secret's data from the caller's caches, `None` when the provider does not exist. Deliveries
/// run concurrently; failures are returned, never retried beyond the [`DeliveryPolicy`], and
/// must not affect the canary (Flagger logs them).
pub async fn dispatch<F>(
    canary: &Canary,
    alert: &Alert,
    global: &GlobalNotifiers,
    http: &reqwest::Client,
    lookup: F,
) -> Vec<Delivery>
where
    F: Fn(&str, &str) -> Option<ResolvedProvider>,
{
    dispatch_with(
        canary,
        alert,
        global,
        http,
        lookup,
        &DeliveryPolicy::default(),
    )
    .await
}

/// [`dispatch`] with an explicit [`DeliveryPolicy`] for the AlertProviders' notifiers.
pub async fn dispatch_with<F>(
    canary: &Canary,
    alert: &Alert,
    global: &GlobalNotifiers,
    http: &reqwest::Client,
    lookup: F,
    policy: &DeliveryPolicy,
) -> Vec<Delivery>
where
    F: Fn(&str, &str) -> Option<ResolvedProvider>,
{
    let canary_id = || {
        format!(
            "Canary {}/{}",
            canary.namespace().unwrap_or_default(),
            canary.name_any()
        )
    };
    let deliveries = routes(canary, alert.severity)
        .into_iter()
        .filter_map(|route| {
            let notifier: Result<Arc<dyn Notifier>, NotifyError> = match &route {
                Route::Global => Ok(global.alerts()?),
                Route::Provider {
                    alert: alert_name,
                    namespace,
                    name,
                } => match lookup(namespace, name) {
                    None => Err(NotifyError::Invalid {
                        object: canary_id(),
                        field: format!("spec.analysis.alerts[{alert_name:?}].providerRef"),
                        reason: format!(
                            "names AlertProvider {namespace}/{name}, which does not exist"
                        ),
                    }),
                    Some(p) => notifier_for_with(&p.provider, p.secret_data.as_ref(), http, policy)
                        .map(Arc::from),
                },
            };
            Some(async move {
                match notifier {
                    Ok(n) => Delivery {
                        route,
                        notifier: Some(n.describe()),
                        result: n.post(alert).await,
                    },
                    Err(e) => Delivery {
                        route,
                        notifier: None,
                        result: Err(e),
                    },
                }
            })
        });
    join_all(deliveries).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testutil::{Receiver, client, fast};
    use super::*;

    pub(super) fn canary(analysis: serde_json::Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "progressDeadlineSeconds": 60,
                "service": {"port": 9898},
                "analysis": analysis
            },
            "status": {"phase": "Progressing", "lastAppliedSpec": "5d8f7c9b4"}
        }))
        .unwrap()
    }

    fn provider(ns: &str, name: &str, spec: serde_json::Value) -> AlertProvider {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "AlertProvider",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec
        }))
        .unwrap()
    }

    fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
        fields
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    #[test]
    fn metadata_as_flagger_for_each_strategy() {
        let c =
            canary(json!({"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50}));
        assert_eq!(
            pairs(&metadata_fields(&c)),
            vec![
                ("Target", "Deployment/podinfo.test"),
                ("Failed checks threshold", "5"),
                ("Progress deadline", "60s"),
                ("Traffic routing", "Weight step: 10 max: 50"),
            ]
        );
        let routing = |a| {
            metadata_fields(&canary(a))
                .into_iter()
                .find(|(k, _)| k == "Traffic routing")
                .map(|(_, v)| v)
        };
        assert_eq!(
            routing(json!({"stepWeights": [1, 10, 50]})).as_deref(),
            Some("Weight steps: 1,10,50 max: 50")
        );
        assert_eq!(
            routing(json!({"stepWeight": 20})).as_deref(),
            Some("Weight step: 20 max: 100"),
            "effective maxWeight, not Flagger's raw 0"
        );
        assert_eq!(
            routing(json!({"iterations": 10, "match": [{"headers": {"x": {"exact": "1"}}}]}))
                .as_deref(),
            Some("A/B Testing")
        );
        assert_eq!(
            routing(json!({"iterations": 10})).as_deref(),
            Some("Blue/Green")
        );
        assert_eq!(
            routing(json!({"iterations": 10, "stepWeight": 5})).as_deref(),
            Some("Blue/Green"),
            "the strategy pennant runs"
        );
        assert_eq!(routing(json!({"interval": "1m"})), None);

        let mut no_analysis = canary(json!({}));
        no_analysis.spec.analysis = None;
        no_analysis.spec.progress_deadline_seconds = None;
        assert_eq!(
            pairs(&metadata_fields(&no_analysis)),
            vec![
                ("Target", "Deployment/podinfo.test"),
                ("Failed checks threshold", "1"),
                ("Progress deadline", "600s"),
            ]
        );
    }

    #[test]
    fn alert_from_canary_with_cluster_first() {
        let c = canary(json!({"stepWeight": 10, "maxWeight": 50, "threshold": 2}));
        let a = Alert::new(
            &c,
            Severity::Info,
            "New revision detected, progressing canary analysis.",
        )
        .with_metadata(&c)
        .with_cluster("prod-eu");
        assert_eq!(a.name, "podinfo");
        assert_eq!(a.namespace, "test");
        assert_eq!(a.subject(), "podinfo.test");
        assert_eq!(a.phase, CanaryPhase::Progressing);
        assert_eq!(a.checksum, crate::webhook::checksum(c.status.as_ref()));
        assert_eq!(a.fields[0], ("Cluster".into(), "prod-eu".into()));
        assert_eq!(a.fields[1].0, "Target");
        assert_eq!(a.fields.len(), 5);
        assert_eq!(
            Alert::new(&c, Severity::Warn, "x").with_cluster("").fields,
            vec![]
        );
    }

    #[test]
    fn metadata_goes_with_initialization_and_new_revision_alerts_only() {
        for (text, want) in [
            ("New Deployment detected, initialization completed.", true),
            ("New DaemonSet detected, initialization completed.", true),
            ("New revision detected, progressing canary analysis.", true),
            (
                "Canary analysis completed successfully, promotion finished.",
                false,
            ),
            ("Canary is waiting for approval.", false),
            (
                "Canary analysis failed, rolled back: Failed checks threshold reached 5",
                false,
            ),
        ] {
            assert_eq!(wants_metadata(text), want, "{text}");
        }
    }

    #[test]
    fn provider_errors_name_object_and_field() {
        let http = client();
        let err = |p: AlertProvider, data: Option<&[(&str, &str)]>| {
            let data: Option<BTreeMap<String, ByteString>> = data.map(|d| {
                d.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect()
            });
            notifier_for(&p, data.as_ref(), &http)
                .err()
                .expect("an error")
                .to_string()
        };
        assert_eq!(
            err(
                provider(
                    "ops",
                    "chat",
                    json!({"type": "hipchat", "address": "https://x"})
                ),
                None
            ),
            "AlertProvider ops/chat: spec.type is \"hipchat\"; expected one of slack, msteams, \
             discord, rocket, gchat, googlechat, generic"
        );
        assert_eq!(
            err(provider("ops", "chat", json!({"type": "slack"})), None),
            "AlertProvider ops/chat: spec.address is not set and there is no spec.secretRef"
        );
        assert_eq!(
            err(
                provider(
                    "ops",
                    "chat",
                    json!({"type": "slack", "address": "hooks.slack.com/x"})
                ),
                None
            ),
            "AlertProvider ops/chat: spec.address is not a valid URL: relative URL without a base"
        );
        let with_secret = json!({"type": "slack", "secretRef": {"name": "hook"}});
        assert_eq!(
            err(provider("ops", "chat", with_secret.clone()), None),
            "AlertProvider ops/chat: spec.secretRef.name names Secret \"hook\", which does not \
             exist in the provider's namespace"
        );
        assert_eq!(
            err(
                provider("ops", "chat", with_secret.clone()),
                Some(&[("token", "t")])
            ),
            "AlertProvider ops/chat: spec.secretRef.name names Secret \"hook\", which has no \
             `address` key"
        );
        assert_eq!(
            err(
                provider("ops", "chat", with_secret),
                Some(&[("address", "mailto:a@b")])
            ),
            "AlertProvider ops/chat: spec.secretRef (Secret \"hook\" key `address`) has scheme \
             \"mailto\"; an http or https URL is required"
        );
        assert_eq!(
            err(
                provider(
                    "ops",
                    "chat",
                    json!({"type": "msteams", "address": "https://x", "proxy": "::"})
                ),
                None
            ),
            "AlertProvider ops/chat: spec.proxy is not a valid URL: relative URL without a base"
        );
        for t in NOTIFIER_TYPES {
            let p = provider(
                "ops",
                "chat",
                json!({"type": t, "address": "https://hooks.example/x"}),
            );
            assert!(notifier_for(&p, None, &http).is_ok(), "{t}");
        }
    }

    #[tokio::test]
    async fn dispatch_routes_by_severity_and_reports_missing_providers() {
        let slack = Receiver::start().await;
        let teams = Receiver::start().await;
        let c = canary(json!({
            "stepWeight": 10,
            "alerts": [
                {"name": "everything", "providerRef": {"name": "slack"}},
                {"name": "on-call", "severity": "error", "providerRef": {"name": "teams", "namespace": "ops"}},
                {"name": "gone", "severity": "warn", "providerRef": {"name": "nope"}}
            ]
        }));
        let providers = [
            provider(
                "test",
                "slack",
                json!({"type": "slack", "secretRef": {"name": "slack-url"}}),
            ),
            provider(
                "ops",
                "teams",
                json!({"type": "msteams", "address": teams.url("/teams")}),
            ),
        ];
        let secret: BTreeMap<String, ByteString> = [
            (
                "address".to_string(),
                ByteString(slack.url("/slack").into_bytes()),
            ),
            ("token".to_string(), ByteString(b"xoxb".to_vec())),
        ]
        .into();
        let lookup = |ns: &str, name: &str| {
            providers
                .iter()
                .find(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == name)
                .map(|p| ResolvedProvider {
                    provider: Arc::new(p.clone()),
                    secret_data: p.spec.secret_ref.as_ref().map(|_| secret.clone()),
                })
        };
        let global = GlobalNotifiers::default();
        let http = client();

        let info = Alert::new(
            &c,
            Severity::Info,
            "Canary analysis completed successfully, promotion finished.",
        );
        let d = dispatch_with(&c, &info, &global, &http, lookup, &fast()).await;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].result, Ok(()));
        assert_eq!(slack.hits().len(), 1);
        assert_eq!(slack.hits()[0].header("authorization"), "Bearer xoxb");
        assert_eq!(teams.hits().len(), 0);

        let error = Alert::new(
            &c,
            Severity::Error,
            "Canary analysis failed, rolled back: x",
        );
        let d = dispatch_with(&c, &error, &global, &http, lookup, &fast()).await;
        assert_eq!(d.len(), 3);
        assert_eq!(slack.hits().len(), 2);
        assert_eq!(teams.hits().len(), 1);
        let gone = d
            .iter()
            .find(|d| matches!(&d.route, Route::Provider { name, .. } if name == "nope"))
            .unwrap();
        assert_eq!(
            gone.result.as_ref().unwrap_err().to_string(),
            "Canary test/podinfo: spec.analysis.alerts[\"gone\"].providerRef names \
             AlertProvider test/nope, which does not exist"
        );
        assert_eq!(
            d.iter().filter(|d| d.result.is_ok()).count(),
            2,
            "one failure does not stop the others"
        );
    }

    #[tokio::test]
    async fn dispatch_uses_the_global_notifier_without_alerts() {
        let r = Receiver::start().await;
        let c = canary(json!({"stepWeight": 10}));
        let (global, problems) = GlobalNotifiers::from_settings_with(
            &GlobalSettings {
                slack_url: Some(r.url("/global")),
                slack_channel: Some("deploys".into()),
                ..Default::default()
            },
            &client(),
            &fast(),
        );
        assert!(problems.is_empty());
        let a = Alert::new(&c, Severity::Info, "hello");
        let d = dispatch(&c, &a, &global, &client(), |_: &str, _: &str| None).await;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].route, Route::Global);
        assert_eq!(d[0].result, Ok(()));
        assert_eq!(r.hits()[0].body["channel"], "deploys");

        let none = GlobalNotifiers::default();
        assert!(
            dispatch(&c, &a, &none, &client(), |_: &str, _: &str| None)
                .await
                .is_empty()
        );
    }
}
