//! `Provider` (`notification.toolkit.fluxcd.io/v1beta3`): where an Alert's notifications go.
//! Same schema as Flux notification-controller v1.9.3's
//! (`config/crd/bases/notification.toolkit.fluxcd.io_providers.yaml`).

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::source::{INTERVAL_PATTERN, LocalObjectReference, TIMEOUT_PATTERN};

/// Every `spec.type` Flux's CRD accepts, in Flux's order.
pub const PROVIDER_TYPES: &[&str] = &[
    "slack",
    "discord",
    "msteams",
    "rocket",
    "generic",
    "generic-hmac",
    "github",
    "gitlab",
    "gitea",
    "giteapullrequestcomment",
    "bitbucketserver",
    "bitbucket",
    "azuredevops",
    "googlechat",
    "googlepubsub",
    "webex",
    "sentry",
    "azureeventhub",
    "telegram",
    "lark",
    "matrix",
    "opsgenie",
    "alertmanager",
    "grafana",
    "githubdispatch",
    "githubpullrequestcomment",
    "gitlabmergerequestcomment",
    "pagerduty",
    "datadog",
    "nats",
    "zulip",
    "otel",
];

/// The types pennant delivers to; any other type in [`PROVIDER_TYPES`] is accepted by the schema
/// and reported (a Warning Event on the Alert naming the Provider and its type).
pub const IMPLEMENTED_PROVIDER_TYPES: &[&str] = &[
    "slack",
    "discord",
    "msteams",
    "rocket",
    "googlechat",
    "generic",
    "generic-hmac",
    "github",
    "gitlab",
];

/// Types that set commit statuses (Flux's `isCommitStatusProvider`).
pub const COMMIT_STATUS_TYPES: &[&str] = &[
    "github",
    "gitlab",
    "gitea",
    "bitbucketserver",
    "bitbucket",
    "azuredevops",
];

/// The default of `spec.timeout`, as Flux's: 15 s per delivery.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// Flux's CEL rule: `commitStatusExpr` only on commit-status types.
const COMMIT_STATUS_EXPR_RULE: &str = "self.type == 'github' || self.type == 'gitlab' || \
    self.type == 'gitea' || self.type == 'bitbucketserver' || self.type == 'bitbucket' || \
    self.type == 'azuredevops' || !has(self.commitStatusExpr)";

/// Spec of a Provider. Same fields as Flux's `ProviderSpec` (v1beta3).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "notification.toolkit.fluxcd.io",
    version = "v1beta3",
    kind = "Provider",
    namespaced,
    category = "all",
    category = "fluxcd",
    category = "fluxcd-notifications",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": COMMIT_STATUS_EXPR_RULE,
    "message": "spec.commitStatusExpr is only supported for the 'github', 'gitlab', 'gitea', 'bitbucketserver', 'bitbucket', 'azuredevops' provider types"
}]))]
pub struct ProviderSpec {
    /// Which service: one of [`PROVIDER_TYPES`] (pennant delivers to
    /// [`IMPLEMENTED_PROVIDER_TYPES`]).
    #[serde(rename = "type")]
    #[schemars(extend("enum" = PROVIDER_TYPES))]
    pub type_: String,
    /// Deprecated and not used in v1beta3 (as Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: Option<String>,
    /// Channel to post to (chat services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 2048))]
    pub channel: Option<String>,
    /// Name the messages are posted under; default: the reporting controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 2048))]
    pub username: Option<String>,
    /// The endpoint: a webhook URL, or for `github`/`gitlab` the repository's URL. The Secret's
    /// `address` key overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 2048))]
    pub address: Option<String>,
    /// Per-delivery timeout, a Go duration; [`DEFAULT_PROVIDER_TIMEOUT`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = TIMEOUT_PATTERN))]
    pub timeout: Option<String>,
    /// Deprecated HTTP(S) proxy URL (use `proxySecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^(http|https)://.*$", "maxLength" = 2048))]
    pub proxy: Option<String>,
    /// Secret with the proxy's `address` (and `username`/`password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// Secret with `address`, `token` (bearer token, HMAC key of `generic-hmac`, API token of
    /// `github`/`gitlab`) and `headers` (a YAML map of extra HTTP headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret with `ca.crt`, `tls.crt`, `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// Workload identity of cloud providers (Flux: feature-gated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// CEL expression producing the commit status id (commit-status types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status_expr: Option<String>,
    /// Stop delivering to this Provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

impl ProviderSpec {
    /// `spec.timeout` parsed; [`DEFAULT_PROVIDER_TIMEOUT`] when unset or unparsable.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(super::super::parse_duration)
            .unwrap_or(DEFAULT_PROVIDER_TIMEOUT)
    }

    /// Whether `spec.suspend` is true.
    pub fn suspended(&self) -> bool {
        self.suspend == Some(true)
    }

    /// Fields set that pennant accepts but does not act on, as `spec.<field>` names (each is
    /// reported as a Warning Event): `certSecretRef`, `proxySecretRef`, `serviceAccountName`,
    /// `commitStatusExpr`. (`interval` is deprecated and unused in Flux too; `proxy` is used.)
    pub fn unimplemented_fields(&self) -> Vec<&'static str> {
        let mut out = vec![];
        if self.cert_secret_ref.is_some() {
            out.push("spec.certSecretRef");
        }
        if self.proxy_secret_ref.is_some() {
            out.push("spec.proxySecretRef");
        }
        if self.service_account_name.is_some() {
            out.push("spec.serviceAccountName");
        }
        if self.commit_status_expr.is_some() {
            out.push("spec.commitStatusExpr");
        }
        out
    }

    /// Whether pennant delivers to this `spec.type`.
    pub fn implemented(&self) -> bool {
        IMPLEMENTED_PROVIDER_TYPES.contains(&self.type_.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_to_fifteen_seconds() {
        let mut s = ProviderSpec::default();
        assert_eq!(s.timeout(), Duration::from_secs(15));
        s.timeout = Some("1m30s".into());
        assert_eq!(s.timeout(), Duration::from_secs(90));
        s.timeout = Some("500ms".into());
        assert_eq!(s.timeout(), Duration::from_millis(500));
    }

    #[test]
    fn unimplemented_fields_are_named() {
        let s: ProviderSpec = serde_json::from_value(serde_json::json!({
            "type": "github", "certSecretRef": {"name": "ca"}, "commitStatusExpr": "'x'",
            "interval": "5m"
        }))
        .unwrap();
        assert_eq!(
            s.unimplemented_fields(),
            ["spec.certSecretRef", "spec.commitStatusExpr"]
        );
        assert!(s.implemented());
        let s = ProviderSpec {
            type_: "pagerduty".into(),
            ..Default::default()
        };
        assert!(!s.implemented());
        assert!(PROVIDER_TYPES.iter().all(|t| !t.is_empty()));
        for t in IMPLEMENTED_PROVIDER_TYPES {
            assert!(PROVIDER_TYPES.contains(t), "{t}");
        }
    }
}
