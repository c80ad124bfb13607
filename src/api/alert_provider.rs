//! `AlertProvider` (`flagger.app/v1beta1`): a chat destination for canary alerts, wire-compatible
//! with Flagger's CRD.
//!
//! Field names, defaults and semantics follow Flagger 1.44 (`artifacts/flagger/crd.yaml`,
//! `pkg/apis/flagger/v1beta1` and `pkg/controller/events.go`). A Canary routes alerts to a
//! provider with `analysis.alerts[].providerRef`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::metric_template::SecretReference;

/// Spec of an AlertProvider. Same fields as Flagger's `AlertProviderSpec`.
///
/// Flagger's schema wants exactly one of `address` / `secretRef` (`oneOf`). pennant's schema
/// wants at least one (a CEL rule, so the message is readable): everything Flagger accepts is
/// accepted, and a provider with both is accepted too, the Secret's `address` winning, as
/// Flagger's code does.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    namespaced,
    status = "AlertProviderStatus",
    category = "all",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.address) || has(self.secretRef)",
    "message": "an AlertProvider needs spec.address or spec.secretRef (a Secret with an `address` key)"
}]))]
pub struct AlertProviderSpec {
    /// Chat system: `slack`, `msteams`, `discord`, `rocket` or `gchat` (Flagger's list, enforced
    /// by the schema as Flagger's is; see `ALERT_PROVIDER_TYPES`).
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ALERT_PROVIDER_TYPES))]
    pub type_: String,
    /// Channel to post to; default `general`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Bot user name; default `flagger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Incoming-webhook URL. Overridden by the Secret's `address` key when `secretRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy URL for the calls to `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret in the provider's namespace with an `address` key (required) and an optional
    /// `token` key (sent as `Authorization: Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// Status of an AlertProvider: conditions only, as Flagger's `AlertProviderStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Every `spec.type` Flagger's CRD accepts, in Flagger's order.
pub const ALERT_PROVIDER_TYPES: &[&str] = &["slack", "msteams", "discord", "rocket", "gchat"];

/// Default `channel`, as Flagger.
pub const DEFAULT_ALERT_CHANNEL: &str = "general";
/// Default `username`, as Flagger.
pub const DEFAULT_ALERT_USERNAME: &str = "flagger";

/// Where and how to post, once `secretRef` is resolved. See [`AlertProviderSpec::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertEndpoint {
    /// Webhook URL.
    pub address: String,
    /// Bearer token from the Secret's `token` key.
    pub token: Option<String>,
    pub proxy: Option<String>,
    pub username: String,
    pub channel: String,
}

/// Why an AlertProvider cannot be used. Flagger logs these and skips the alert; so does pennant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertProviderError {
    /// `secretRef` is set but the caller had no Secret data for it.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// The Secret has no `address` key (Flagger: "secret does not contain an address").
    #[error("secret {0:?} does not contain an address")]
    SecretWithoutAddress(String),
    /// Neither `spec.address` nor `secretRef` gives an address.
    #[error("no address in spec.address nor in spec.secretRef")]
    NoAddress,
    /// A Secret value is not UTF-8.
    #[error("secret {secret:?} key {key:?} is not valid UTF-8")]
    NotUtf8 { secret: String, key: String },
}

impl AlertProviderSpec {
    /// `channel`, or `general` when unset or empty (as Flagger).
    pub fn channel(&self) -> &str {
        self.channel
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_ALERT_CHANNEL)
    }

    /// `username`, or `flagger` when unset or empty (as Flagger).
    pub fn username(&self) -> &str {
        self.username
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_ALERT_USERNAME)
    }

    /// `proxy` when set and non-empty.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref().filter(|p| !p.is_empty())
    }

    /// Name of the Secret to read, when `secretRef` is set.
    pub fn secret_name(&self) -> Option<&str> {
        self.secret_ref.as_ref().map(|r| r.name.as_str())
    }

    /// The endpoint to post to, same rules as Flagger's `alert()`: with `secretRef`, the
    /// Secret's `address` key replaces `spec.address` and must exist; its `token` key is
    /// optional. `secret_data` is the referenced Secret's `.data` (`None` when it was not found
    /// or `secretRef` is unset).
    pub fn resolve(
        &self,
        secret_data: Option<&BTreeMap<String, ByteString>>,
    ) -> Result<AlertEndpoint, AlertProviderError> {
        let mut address = self.address.clone().filter(|a| !a.is_empty());
        let mut token = None;
        if let Some(name) = self.secret_name() {
            let data =
                secret_data.ok_or_else(|| AlertProviderError::SecretNotFound(name.into()))?;
            let text = |key: &str| -> Result<Option<String>, AlertProviderError> {
                data.get(key)
                    .map(|v| {
                        String::from_utf8(v.0.clone()).map_err(|_| AlertProviderError::NotUtf8 {
                            secret: name.into(),
                            key: key.into(),
                        })
                    })
                    .transpose()
            };
            address = Some(
                text("address")?
                    .ok_or_else(|| AlertProviderError::SecretWithoutAddress(name.into()))?,
            );
            token = text("token")?.filter(|t| !t.is_empty());
        }
        Ok(AlertEndpoint {
            address: address.ok_or(AlertProviderError::NoAddress)?,
            token,
            proxy: self.proxy().map(str::to_string),
            username: self.username().to_string(),
            channel: self.channel().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: Option<&str>, secret: Option<&str>) -> AlertProviderSpec {
        AlertProviderSpec {
            type_: "slack".into(),
            address: address.map(Into::into),
            secret_ref: secret.map(|n| SecretReference { name: n.into() }),
            ..Default::default()
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn defaults_as_flagger() {
        let mut s = spec(Some("https://hooks.example/x"), None);
        assert_eq!(s.channel(), "general");
        assert_eq!(s.username(), "flagger");
        s.channel = Some(String::new());
        s.username = Some("bot".into());
        assert_eq!(s.channel(), "general");
        assert_eq!(s.username(), "bot");
        let e = s.resolve(None).unwrap();
        assert_eq!(e.address, "https://hooks.example/x");
        assert_eq!(e.token, None);
        assert_eq!(e.username, "bot");
    }

    #[test]
    fn secret_address_wins_and_is_required() {
        let s = spec(Some("https://spec"), Some("hook"));
        let e = s
            .resolve(Some(&data(&[
                ("address", "https://secret"),
                ("token", "t"),
            ])))
            .unwrap();
        assert_eq!(e.address, "https://secret");
        assert_eq!(e.token.as_deref(), Some("t"));
        assert_eq!(
            s.resolve(Some(&data(&[("token", "t")]))),
            Err(AlertProviderError::SecretWithoutAddress("hook".into()))
        );
        assert_eq!(
            s.resolve(None),
            Err(AlertProviderError::SecretNotFound("hook".into()))
        );
        assert_eq!(
            spec(None, None).resolve(None),
            Err(AlertProviderError::NoAddress)
        );
    }
}
