//! `Receiver` (`notification.toolkit.fluxcd.io/v1`): an incoming webhook (a GitHub or GitLab
//! push, a registry's image push, any signed POST) that requests a reconcile of the Flux objects
//! in `spec.resources`. Same schema as Flux notification-controller v1.9's `Receiver`
//! (`config/crd/bases/notification.toolkit.fluxcd.io_receivers.yaml`; `tests/compat_flux.rs`
//! walks it against ours): field names, enums, defaults, CEL rules, categories and printer
//! columns. Plain data plus pure helpers (the webhook path); the controller and the HTTP handler
//! are `crate::notification::receiver`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::source::{Condition, INTERVAL_PATTERN, LocalObjectReference};

/// API group of the notification kinds.
pub const GROUP: &str = "notification.toolkit.fluxcd.io";
/// Prefix of every webhook path, Flux's `ReceiverWebhookPath`.
pub const WEBHOOK_PATH_PREFIX: &str = "/hook/";
/// `spec.interval` when absent: 10 minutes (Flux's CRD default and `GetInterval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
/// Reason of `Ready=False` when the Secret or its `token` key is missing, Flux's
/// `TokenNotFoundReason`.
pub const TOKEN_NOT_FOUND_REASON: &str = "TokenNotFound";
/// Reason of a terminal spec error other than CEL, Flux's `ValidationFailedReason`.
pub const VALIDATION_FAILED_REASON: &str = "ValidationFailed";

/// Values of `spec.type`, Flux's enum.
pub const RECEIVER_TYPES: [&str; 13] = [
    "generic",
    "generic-hmac",
    "generic-oidc",
    "github",
    "gitlab",
    "bitbucket",
    "harbor",
    "dockerhub",
    "quay",
    "gcr",
    "nexus",
    "acr",
    "cdevents",
];

/// Values of `spec.resources[].kind`, Flux's enum.
pub const RESOURCE_KINDS: [&str; 12] = [
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
    "ArtifactGenerator",
    "ExternalArtifact",
];

/// Spec of a Receiver. Same fields as Flux's `ReceiverSpec`, with its four CEL rules
/// (`generic-oidc` takes `oidcProviders` and no `secretRef`; every other type the reverse).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "notification.toolkit.fluxcd.io",
    version = "v1",
    kind = "Receiver",
    namespaced,
    status = "ReceiverStatus",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-notifications",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "generic-oidc receivers must define at least one oidcProvider",
     "rule": "self.type != 'generic-oidc' || (has(self.oidcProviders) && size(self.oidcProviders) > 0)"},
    {"message": "oidcProviders can only be set when type is generic-oidc",
     "rule": "self.type == 'generic-oidc' || !has(self.oidcProviders) || size(self.oidcProviders) == 0"},
    {"message": "secretRef cannot be set when type is generic-oidc",
     "rule": "self.type != 'generic-oidc' || !has(self.secretRef)"},
    {"message": "secretRef is required when type is not generic-oidc",
     "rule": "self.type == 'generic-oidc' || has(self.secretRef)"},
]))]
pub struct ReceiverSpec {
    /// Who sends the webhook, which decides how it is verified: `generic` (the path is the
    /// secret), `generic-hmac` (`X-Signature`), `github`, `gitlab`, `bitbucket`, `harbor`,
    /// `nexus`, `quay`, `dockerhub`, `acr`, `gcr`, `generic-oidc`, `cdevents`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = RECEIVER_TYPES))]
    pub type_: String,
    /// How often the Secret is re-read, a Go duration; default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = INTERVAL_PATTERN, "default" = "10m"))]
    pub interval: Option<String>,
    /// Event types handled (`push` for GitHub, `Push Hook` for GitLab), compared without case;
    /// empty: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The objects a verified webhook requests a reconcile of.
    pub resources: Vec<ReceiverResource>,
    /// CEL over `res` (the object's metadata) and `req` (the JSON body): a resource is
    /// reconciled only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_filter: Option<String>,
    /// Secret with the `token` key (HMAC key, shared token, and part of the webhook path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// OIDC issuers of a `generic-oidc` Receiver (not served by pennant: the Receiver is not
    /// Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["issuerURL"]))]
    pub oidc_providers: Option<Vec<OidcProvider>>,
    /// Refuse webhooks (503) while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// One entry of `spec.resources`: Flux's `CrossNamespaceObjectReference` plus `filter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverResource {
    /// API version of the referent; Flux's default for its kind when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[schemars(extend("enum" = RESOURCE_KINDS))]
    pub kind: String,
    /// Name of the referent, or `*` with `matchLabels` for every object of the kind whose
    /// labels match.
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub name: String,
    /// Namespace of the referent; the Receiver's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minLength" = 1, "maxLength" = 253))]
    pub namespace: Option<String>,
    /// Labels the objects must carry (with name `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// CEL over `res` and `req`, ANDed with `spec.resourceFilter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// One issuer of a `generic-oidc` Receiver, Flux's `OIDCProvider` (kept for schema
/// compatibility; pennant does not verify OIDC tokens).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProvider {
    /// Issuer URL, the tokens' `iss`.
    #[serde(rename = "issuerURL")]
    #[schemars(extend("pattern" = "^https?://"))]
    pub issuer_url: String,
    /// Expected `aud`; `notification-controller` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Named CEL expressions over the claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<OidcVariable>>,
    /// CEL expressions that must all be true.
    #[schemars(extend("minItems" = 1))]
    pub validations: Vec<OidcValidation>,
}

/// Flux's `OIDCVariable`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OidcVariable {
    /// A CEL identifier.
    pub name: String,
    /// Its CEL expression.
    pub expression: String,
}

/// Flux's `OIDCValidation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OidcValidation {
    /// A CEL boolean expression.
    pub expression: String,
    /// Returned to the caller when false.
    pub message: String,
}

/// Status of a Receiver. Same fields as Flux's `ReceiverStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct ReceiverStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `metav1.Condition`s: Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `/hook/<sha256 hex of token + name + namespace>`: where the webhook is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The webhook path of a Receiver: [`WEBHOOK_PATH_PREFIX`] + the lowercase hex SHA-256 of
/// `token` (the Secret's bytes), `name` and `namespace` concatenated (64 hex digits). Same as Flux's
/// `Receiver.GetWebhookPath`, so a path registered at GitHub keeps working when pennant replaces
/// notification-controller.
pub fn webhook_path(token: impl AsRef<[u8]>, name: &str, namespace: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(token.as_ref());
    h.update(name.as_bytes());
    h.update(namespace.as_bytes());
    format!("{WEBHOOK_PATH_PREFIX}{:x}", h.finalize())
}

impl Receiver {
    /// `spec.interval`, [`DEFAULT_INTERVAL`] when absent, malformed or zero.
    pub fn interval(&self) -> Duration {
        self.spec
            .interval
            .as_deref()
            .and_then(super::source::parse_interval)
            .unwrap_or(DEFAULT_INTERVAL)
    }

    /// `spec.suspend`.
    pub fn suspended(&self) -> bool {
        self.spec.suspend.unwrap_or(false)
    }

    /// `spec.events`, empty when absent.
    pub fn events(&self) -> &[String] {
        self.spec.events.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest Flux computes for token `token`, Receiver `app` in `flux-system`
    /// (`printf tokenappflux-system | sha256sum`).
    #[test]
    fn the_webhook_path_is_fluxs() {
        let p = webhook_path("token", "app", "flux-system");
        assert_eq!(
            p,
            "/hook/3abdcd363ade7e61ed68975052bd1a75d8eeb1efa71fc6201901c8b575c159b9"
        );
        assert_eq!(p.len(), "/hook/".len() + 64);
        assert_ne!(
            p,
            webhook_path("token", "app", "default"),
            "namespace counts"
        );
        assert_ne!(
            p,
            webhook_path("other", "app", "flux-system"),
            "token counts"
        );
    }

    #[test]
    fn defaults_are_fluxs() {
        let r: Receiver = serde_json::from_value(serde_json::json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"type": "github", "resources": [{"kind": "GitRepository", "name": "app"}],
                     "secretRef": {"name": "token"}}
        }))
        .unwrap();
        assert_eq!(r.interval(), Duration::from_secs(600));
        assert!(!r.suspended());
        assert!(r.events().is_empty());
    }
}
