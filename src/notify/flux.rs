//! Notifications of Flux Events: the deliveries of `notification.toolkit.fluxcd.io/v1beta3`
//! Providers, through the same transport as the Canary alerts ([`super::transport`]: per-attempt
//! timeout, bounded retries on 429/5xx and transport errors, errors naming only
//! `kind scheme://host/…`). The payloads are Flux notification-controller's
//! (`internal/notifier`), from an Event whose metadata the Alert already combined (keys
//! unprefixed, see `crate::notification::matching::combine_metadata`):
//!
//! - `slack`: `{channel, username, icon_url, icon_emoji, attachments: [{fallback, color,
//!   author_name, text, mrkdwn_in, fields}]}`, `author_name` = `<kind lowercased>/<name>.<ns>`,
//!   `color` `good` (info) or `danger` (error), one field `{title, value, short: false}` per
//!   metadata key (sorted by key here; Flux's map order is random), `username` defaulting to the
//!   reporting controller, `Authorization: Bearer <token>` when the Secret has a token, Slack's
//!   `{"ok": false}` answer an error;
//! - `discord`: the Slack shape (no fallback, no channel) at `<address>/slack`;
//! - `rocket`: the Slack shape with colors `#0076D7` / `#FF0000`;
//! - `msteams`: an Adaptive Card 1.4 message (title, message in `attention` color for errors,
//!   a FactSet with `summary` first then the other keys sorted); to a deprecated Office 365
//!   connector (`*.webhook.office.com`) a MessageCard (`themeColor` `0076D7` / `FF0000`), as
//!   Flux chooses;
//! - `googlechat`: a card with header `<kind>/<name>.<ns>` / reporting controller, the message
//!   (red for errors) and one keyValue widget per metadata key;
//! - `generic`: the Event JSON, header `gotk-component: <reportingController>` plus the Secret's
//!   `headers`; `generic-hmac`: the same plus `X-Signature: sha256=<hex HMAC-SHA256 of the body
//!   keyed with the Secret's token>`;
//! - `github`: `POST <api>/repos/<owner>/<repo>/statuses/<sha>` with `{state: success|failure,
//!   context: <status id>, description: <reason split into lowercase words>}` and
//!   `Authorization: Bearer <token>`; `<api>` is `https://api.github.com` for github.com and
//!   `<scheme>://<host>/api/v3` otherwise (GitHub Enterprise), as go-github;
//! - `gitlab`: `POST <scheme>://<host>/api/v4/projects/<owner%2Frepo>/statuses/<sha>` with
//!   `{state: success|failed, name: <status id>, description}` and `PRIVATE-TOKEN: <token>`.
//!
//! For the commit-status types, `address` is the repository's URL (https, ssh or scp-like) and
//! the sha comes from the `revision` metadata (`main@sha1:<hex>`, `sha1:<hex>`, `main/<hex>`);
//! Flux also lists the commit's statuses first to skip a duplicate, pennant relies on the 5-minute
//! de-duplication of equal events instead.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use kube::ResourceExt;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::transport::{self, DeliveryPolicy, Endpoint};
use super::{NotifyError, slack};
use crate::api::notification::{Event, IMPLEMENTED_PROVIDER_TYPES, Provider};

/// `<kind lowercased>/<name>.<namespace>`: how every chat payload names the object.
pub fn object_title(event: &Event) -> String {
    let o = &event.involved_object;
    format!(
        "{}/{}.{}",
        o.kind.as_deref().unwrap_or("").to_lowercase(),
        o.name.as_deref().unwrap_or(""),
        o.namespace.as_deref().unwrap_or("")
    )
}

/// The Slack message of `event` (see the module docs). PURE.
pub fn slack_payload(event: &Event, channel: &str, username: &str) -> Value {
    let title = object_title(event);
    let first_line = event.message.lines().next().unwrap_or("");
    let mut attachment = slack_attachment(event, &title, color(event, "good", "danger"));
    attachment["fallback"] = json!(format!("{title}: {first_line}"));
    json!({
        "channel": channel,
        "username": username,
        "icon_url": "",
        "icon_emoji": "",
        "attachments": [attachment],
    })
}

fn color<'a>(event: &Event, info: &'a str, error: &'a str) -> &'a str {
    if event.is_error() { error } else { info }
}

fn slack_attachment(event: &Event, title: &str, color: &str) -> Value {
    let fields: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v, "short": false}))
        .collect();
    json!({
        "color": color,
        "author_name": title,
        "text": event.message,
        "mrkdwn_in": ["text"],
        "fields": fields,
    })
}

/// The Discord message (Slack-compatible webhook format). PURE.
pub fn discord_payload(event: &Event, username: &str) -> Value {
    let a = slack_attachment(event, &object_title(event), color(event, "good", "danger"));
    json!({"channel": "", "username": username, "icon_url": "", "icon_emoji": "", "attachments": [a]})
}

/// The Rocket.Chat message (Slack format, Rocket's colors). PURE.
pub fn rocket_payload(event: &Event, channel: &str, username: &str) -> Value {
    let a = slack_attachment(
        event,
        &object_title(event),
        color(event, "#0076D7", "#FF0000"),
    );
    json!({"channel": channel, "username": username, "icon_url": "", "icon_emoji": "", "attachments": [a]})
}

/// The Microsoft Teams Adaptive Card message. PURE.
pub fn msteams_payload(event: &Event) -> Value {
    let mut facts: Vec<Value> = vec![];
    if let Some(s) = event.metadata.get("summary") {
        facts.push(json!({"title": "summary", "value": s}));
    }
    facts.extend(
        event
            .metadata
            .iter()
            .filter(|(k, _)| *k != "summary")
            .map(|(k, v)| json!({"title": k, "value": v})),
    );
    let mut message = json!({"type": "TextBlock", "text": event.message, "wrap": true});
    if event.is_error() {
        message["color"] = json!("attention");
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{
                    "type": "Container",
                    "items": [
                        {"type": "TextBlock", "text": object_title(event), "size": "large",
                         "weight": "bolder", "wrap": true},
                        message,
                        {"type": "FactSet", "facts": facts}
                    ]
                }],
                "msteams": {"width": "Full"}
            }
        }]
    })
}

/// The MessageCard of a deprecated Office 365 connector (`*.webhook.office.com`). PURE.
pub fn msteams_connector_payload(event: &Event) -> Value {
    let title = object_title(event);
    let facts: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": color(event, "0076D7", "FF0000"),
        "summary": title,
        "sections": [{"activityTitle": event.message, "activitySubtitle": title, "facts": facts}]
    })
}

/// Whether a Teams webhook URL is a deprecated Office 365 connector (Flux's check on the host).
fn is_office_connector(url: &Url) -> bool {
    url.host_str()
        .is_some_and(|h| h.ends_with(".webhook.office.com"))
}

/// The Google Chat card. PURE.
pub fn googlechat_payload(event: &Event) -> Value {
    let text = if event.is_error() {
        format!("<font color=\"#ff0000\">{}</font>", event.message)
    } else {
        event.message.clone()
    };
    let mut sections = vec![json!({"widgets": [{"textParagraph": {"text": text}}]})];
    if !event.metadata.is_empty() {
        let kv: Vec<Value> = event
            .metadata
            .iter()
            .map(|(k, v)| {
                json!({"keyValue": {"topLabel": k, "content": v, "contentMultiline": false}})
            })
            .collect();
        sections.push(json!({"widgets": kv}));
    }
    json!({"cards": [{
        "header": {"title": object_title(event), "subtitle": event.reporting_controller},
        "sections": sections
    }]})
}

/// HMAC-SHA256 (RFC 2104) of `message` keyed with `key`. PURE.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `sha256=<hex>`: the `X-Signature` of a `generic-hmac` body. PURE.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(key, body)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The commit sha of a source revision: `main@sha1:<hex>`, `sha1:<hex>`, `sha256:<hex>`,
/// the legacy `main/<hex>`, or a bare 40/64-hex sha; `None` for anything else (an OCI digest
/// with a tag is `sha256:` too, as in Flux). PURE.
pub fn commit_of(revision: &str) -> Option<String> {
    let tail = revision.rsplit_once('@').map_or(revision, |(_, t)| t);
    let hash = if let Some((algo, h)) = tail.split_once(':') {
        matches!(algo, "sha1" | "sha256").then_some(h)?
    } else {
        tail.rsplit_once('/').map_or(tail, |(_, h)| h)
    };
    let ok = matches!(hash.len(), 40 | 64) && hash.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| hash.to_lowercase())
}

/// The host URL (`https://github.com`) and repository path (`owner/repo`) of a Git address:
/// `https://host/owner/repo(.git)`, `ssh://git@host/owner/repo`, `git@host:owner/repo`. ssh
/// becomes https, as Flux. PURE.
pub fn parse_git_address(address: &str) -> Result<(String, String), String> {
    let a = address.trim();
    let normalized = if !a.contains("://") {
        match a.split_once(':') {
            Some((userhost, path)) if userhost.contains('@') => {
                format!("ssh://{userhost}/{path}")
            }
            _ => return Err("is not a Git repository URL".into()),
        }
    } else {
        a.to_string()
    };
    let url = Url::parse(&normalized).map_err(|e| format!("is not a valid URL: {e}"))?;
    let scheme = match url.scheme() {
        "ssh" => "https",
        s @ ("http" | "https") => s,
        s => return Err(format!("has scheme {s:?}; http, https or ssh is required")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_matches('/').trim_end_matches(".git");
    if path.is_empty() {
        return Err("names no repository".into());
    }
    Ok((format!("{scheme}://{host}{port}"), path.to_string()))
}

/// Flux's default commit-status id: `<kind>/<name>/<first segment of the Provider UID>`,
/// lowercased. PURE.
pub fn commit_status_id(event: &Event, provider_uid: &str) -> String {
    let o = &event.involved_object;
    format!(
        "{}/{}/{}",
        o.kind.as_deref().unwrap_or(""),
        o.name.as_deref().unwrap_or(""),
        provider_uid.split('-').next().unwrap_or("")
    )
    .to_lowercase()
}

/// The reason as lowercase words (`ReconciliationSucceeded` → `reconciliation succeeded`),
/// the commit status's description, as Flux. PURE.
pub fn describe_reason(reason: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in reason.chars() {
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_lowercase());
    }
    out
}

/// The commit-status request of `type_` (`github`, `gitlab`) for `event` (PURE): URL and JSON
/// body. `host` and `repo` come from [`parse_git_address`]. `None` when the event carries no
/// commit in its `revision` metadata.
pub fn commit_status_request(
    type_: &str,
    host: &str,
    repo: &str,
    event: &Event,
    id: &str,
) -> Option<(String, Value)> {
    let sha = commit_of(event.metadata.get("revision")?)?;
    let description = describe_reason(&event.reason);
    Some(match type_ {
        "github" => {
            let api = if host == "https://github.com" {
                "https://api.github.com".to_string()
            } else {
                format!("{host}/api/v3")
            };
            let state = if event.is_error() {
                "failure"
            } else {
                "success"
            };
            (
                format!("{api}/repos/{repo}/statuses/{sha}"),
                json!({"state": state, "context": id, "description": description}),
            )
        }
        _ => {
            let state = if event.is_error() {
                "failed"
            } else {
                "success"
            };
            (
                format!(
                    "{host}/api/v4/projects/{}/statuses/{sha}",
                    repo.replace('/', "%2F")
                ),
                json!({"state": state, "name": id, "description": description}),
            )
        }
    })
}

/// The extra headers of a Provider Secret's `headers` key: a YAML map of names to values.
/// A YAML error names the position only: the parser's message and snippet would quote the
/// Secret (an `Authorization` value) into the Alert's Events and the log.
pub fn parse_headers(yaml: &str) -> Result<HeaderMap, String> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let map: BTreeMap<String, String> = serde_saphyr::from_str_with_options(yaml, options)
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {} column {})", l.line(), l.column()))
                .unwrap_or_default();
            format!("is not a YAML map of strings{at}")
        })?;
    let mut out = HeaderMap::new();
    for (k, v) in map {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("has an invalid header name {k:?}"))?;
        let mut value = HeaderValue::from_str(&v)
            .map_err(|_| format!("has an invalid value for header {k:?}"))?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}

/// Where and how one Provider delivers, built by [`flux_notifier_for`].
pub struct FluxNotifier {
    type_: &'static str,
    endpoint: Endpoint,
    /// The Secret's `headers`.
    headers: HeaderMap,
    channel: String,
    username: String,
    provider_uid: String,
    /// `github`/`gitlab`: host URL and `owner/repo`.
    git: Option<(String, String)>,
}

/// The notifier of a v1beta3 `provider`. `secret_data` is the `.data` of the Secret its
/// `spec.secretRef` names (`None` when unset or missing); its `address` key replaces
/// `spec.address`, `token` is the bearer token (`slack`), HMAC key (`generic-hmac`) or API token
/// (`github`, `gitlab`), `headers` extra headers, `proxy` a proxy URL. The timeout of each
/// attempt is `spec.timeout` (default 15 s); retries follow `policy`.
///
/// Errors name the Provider and the field, never the address or token.
pub fn flux_notifier_for(
    provider: &Provider,
    secret_data: Option<&BTreeMap<String, ByteString>>,
    http: &reqwest::Client,
    policy: &DeliveryPolicy,
) -> Result<FluxNotifier, NotifyError> {
    let object = format!(
        "Provider {}/{}",
        provider.namespace().unwrap_or_default(),
        provider.name_any()
    );
    let invalid = |field: &str, reason: String| NotifyError::Invalid {
        object: object.clone(),
        field: field.to_string(),
        reason,
    };
    let spec = &provider.spec;
    let type_ = IMPLEMENTED_PROVIDER_TYPES
        .iter()
        .copied()
        .find(|t| *t == spec.type_)
        .ok_or_else(|| {
            invalid(
                "spec.type",
                format!(
                    "is {:?}, which pennant does not deliver to (it does: {})",
                    spec.type_,
                    IMPLEMENTED_PROVIDER_TYPES.join(", ")
                ),
            )
        })?;
    let secret_name = spec.secret_ref.as_ref().map(|r| r.name.clone());
    let key = |k: &str| -> Result<Option<String>, NotifyError> {
        match secret_data.and_then(|d| d.get(k)) {
            None => Ok(None),
            Some(v) => String::from_utf8(v.0.clone())
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| {
                    invalid(
                        "spec.secretRef.name",
                        format!(
                            "names Secret {:?}, whose key {k:?} is not valid UTF-8",
                            secret_name.clone().unwrap_or_default()
                        ),
                    )
                }),
        }
    };
    if let (Some(s), None) = (&secret_name, secret_data) {
        return Err(invalid(
            "spec.secretRef.name",
            format!("names Secret {s:?}, which does not exist in the Provider's namespace"),
        ));
    }
    let (address, address_field) = match key("address")? {
        Some(a) => (
            a,
            format!(
                "spec.secretRef (Secret {:?} key `address`)",
                secret_name.clone().unwrap_or_default()
            ),
        ),
        None => (
            spec.address.clone().unwrap_or_default(),
            "spec.address".to_string(),
        ),
    };
    if address.trim().is_empty() {
        return Err(invalid(
            "spec.address",
            "is not set and the Secret has no `address` key".into(),
        ));
    }
    let token = key("token")?.filter(|t| !t.is_empty());
    let headers = match key("headers")? {
        Some(h) => parse_headers(&h).map_err(|r| {
            invalid(
                "spec.secretRef.name",
                format!(
                    "names Secret {:?}, whose key `headers` {r}",
                    secret_name.clone().unwrap_or_default()
                ),
            )
        })?,
        None => HeaderMap::new(),
    };
    let needs_token = matches!(type_, "generic-hmac" | "github" | "gitlab");
    if needs_token && token.is_none() {
        return Err(invalid(
            "spec.secretRef",
            format!("must name a Secret with a `token` key for type {type_}"),
        ));
    }
    let (url, git) = if matches!(type_, "github" | "gitlab") {
        let (host, repo) = parse_git_address(&address).map_err(|r| invalid(&address_field, r))?;
        if type_ == "github" && repo.split('/').count() != 2 {
            return Err(invalid(
                &address_field,
                "must name a repository as <host>/<owner>/<repo>".into(),
            ));
        }
        let url = transport::parse_http_url(&host).map_err(|r| invalid(&address_field, r))?;
        (url, Some((host, repo)))
    } else {
        let mut url =
            transport::parse_http_url(&address).map_err(|r| invalid(&address_field, r))?;
        if type_ == "discord" && !url.path().ends_with("/slack") {
            let path = format!("{}/slack", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        (url, None)
    };
    let proxy = key("proxy")?.or_else(|| spec.proxy.clone());
    let policy = DeliveryPolicy {
        timeout: spec.timeout(),
        ..policy.clone()
    };
    let endpoint = Endpoint::new(type_, http, url, token, proxy.as_deref(), policy)
        .map_err(|r| invalid("spec.proxy", r))?;
    Ok(FluxNotifier {
        type_,
        endpoint,
        headers,
        channel: spec.channel.clone().unwrap_or_default(),
        username: spec.username.clone().unwrap_or_default(),
        provider_uid: provider.metadata.uid.clone().unwrap_or_default(),
        git,
    })
}

impl FluxNotifier {
    /// `type scheme://host/…`, for logs and messages (no secret path).
    pub fn describe(&self) -> String {
        self.endpoint.describe()
    }

    /// The Provider's type.
    pub fn kind(&self) -> &'static str {
        self.type_
    }

    /// POST `event` (metadata already combined by the Alert). `Ok(false)` when the type has
    /// nothing to send for it: a commit-status type and an event without a commit in its
    /// `revision`, or a `Progressing` event (Flux's GitHub notifier skips those too).
    pub async fn post(&self, event: &Event) -> Result<bool, NotifyError> {
        let username = if self.username.is_empty() {
            event.reporting_controller.as_str()
        } else {
            self.username.as_str()
        };
        let mut headers = self.headers.clone();
        let bearer = |headers: &mut HeaderMap, scheme: &str| -> Result<(), NotifyError> {
            if let Some(t) = self.endpoint.token() {
                let mut v = HeaderValue::from_str(&format!("{scheme}{t}")).map_err(|_| {
                    NotifyError::Transport {
                        notifier: self.describe(),
                        error: "the token is not a valid HTTP header value".into(),
                        attempts: 0,
                    }
                })?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
            Ok(())
        };
        let json_body = |v: &Value| serde_json::to_vec(v).expect("payloads serialise");
        let url = self.endpoint.url().clone();
        let (url, body) = match self.type_ {
            "slack" => {
                bearer(&mut headers, "Bearer ")?;
                let body = json_body(&slack_payload(event, &self.channel, username));
                let answer = self
                    .endpoint
                    .post_with_headers(&url, &body, &headers)
                    .await?;
                if let Some(error) = slack::refusal(&answer) {
                    return Err(NotifyError::Rejected {
                        notifier: self.describe(),
                        error,
                    });
                }
                return Ok(true);
            }
            "discord" => (url, json_body(&discord_payload(event, username))),
            "rocket" => (
                url,
                json_body(&rocket_payload(event, &self.channel, username)),
            ),
            "msteams" if is_office_connector(&url) => {
                (url, json_body(&msteams_connector_payload(event)))
            }
            "msteams" => (url, json_body(&msteams_payload(event))),
            "googlechat" => (url, json_body(&googlechat_payload(event))),
            "generic" | "generic-hmac" => {
                let body = serde_json::to_vec(event).expect("events serialise");
                if let Ok(v) = HeaderValue::from_str(&event.reporting_controller) {
                    headers.insert("gotk-component", v);
                }
                if self.type_ == "generic-hmac" {
                    let key = self.endpoint.token().unwrap_or_default();
                    let sig = signature(key.as_bytes(), &body);
                    headers.insert(
                        "X-Signature",
                        HeaderValue::from_str(&sig).expect("hex is a header value"),
                    );
                }
                (url, body)
            }
            "github" | "gitlab" => {
                if event.reason == "Progressing" {
                    return Ok(false);
                }
                let (host, repo) = self.git.as_ref().expect("git providers have a repository");
                let id = commit_status_id(event, &self.provider_uid);
                let Some((api, body)) = commit_status_request(self.type_, host, repo, event, &id)
                else {
                    return Ok(false);
                };
                if self.type_ == "github" {
                    bearer(&mut headers, "Bearer ")?;
                    headers.insert(
                        "Accept",
                        HeaderValue::from_static("application/vnd.github+json"),
                    );
                } else if let Some(t) = self.endpoint.token() {
                    let mut v = HeaderValue::from_str(t).map_err(|_| NotifyError::Transport {
                        notifier: self.describe(),
                        error: "the token is not a valid HTTP header value".into(),
                        attempts: 0,
                    })?;
                    v.set_sensitive(true);
                    headers.insert("PRIVATE-TOKEN", v);
                }
                let url = Url::parse(&api).map_err(|e| NotifyError::Transport {
                    notifier: self.describe(),
                    error: format!("commit status URL: {e}"),
                    attempts: 0,
                })?;
                (url, json_body(&body))
            }
            other => unreachable!("{other} is not an implemented type"),
        };
        self.endpoint
            .post_with_headers(&url, &body, &headers)
            .await
            .map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::jiff::Timestamp;

    use super::super::testutil::{Receiver, client, fast};
    use super::*;

    fn event(severity: &str, metadata: &[(&str, &str)]) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: Some("Kustomization".into()),
                namespace: Some("flux-system".into()),
                name: Some("apps".into()),
                api_version: Some("kustomize.toolkit.fluxcd.io/v1".into()),
                ..Default::default()
            },
            severity: severity.into(),
            timestamp: Timestamp::from_second(1_700_000_000).unwrap(),
            message: "Deployment/default/podinfo configured\nService/default/podinfo created"
                .into(),
            reason: "ReconciliationSucceeded".into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reporting_controller: "kustomize-controller".into(),
            reporting_instance: "pennant-0".into(),
        }
    }

    fn provider(spec: Value) -> Provider {
        serde_json::from_value(json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1beta3",
            "kind": "Provider",
            "metadata": {"name": "chat", "namespace": "flux-system",
                         "uid": "8a0b4c2e-1111-2222-3333-444455556666"},
            "spec": spec
        }))
        .unwrap()
    }

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn slack_payload_is_fluxs() {
        let e = event(
            "error",
            &[("revision", "main@sha1:abc"), ("summary", "prod")],
        );
        assert_eq!(
            slack_payload(&e, "ops", "flux"),
            json!({
                "channel": "ops", "username": "flux", "icon_url": "", "icon_emoji": "",
                "attachments": [{
                    "fallback": "kustomization/apps.flux-system: Deployment/default/podinfo configured",
                    "color": "danger",
                    "author_name": "kustomization/apps.flux-system",
                    "text": e.message,
                    "mrkdwn_in": ["text"],
                    "fields": [
                        {"title": "revision", "value": "main@sha1:abc", "short": false},
                        {"title": "summary", "value": "prod", "short": false}
                    ]
                }]
            })
        );
        let info = event("info", &[]);
        assert_eq!(
            slack_payload(&info, "", "x")["attachments"][0]["color"],
            "good"
        );
        assert_eq!(
            rocket_payload(&info, "", "x")["attachments"][0]["color"],
            "#0076D7"
        );
        assert_eq!(
            rocket_payload(&e, "", "x")["attachments"][0]["color"],
            "#FF0000"
        );
        assert_eq!(
            discord_payload(&e, "x")["attachments"][0]["author_name"],
            "kustomization/apps.flux-system"
        );
    }

    #[test]
    fn teams_and_google_chat_cards() {
        let e = event(
            "error",
            &[("revision", "r1"), ("summary", "prod"), ("a", "1")],
        );
        let t = msteams_payload(&e);
        let items = &t["attachments"][0]["content"]["body"][0]["items"];
        assert_eq!(items[0]["text"], "kustomization/apps.flux-system");
        assert_eq!(items[1]["color"], "attention");
        let facts: Vec<&str> = items[2]["facts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["title"].as_str().unwrap())
            .collect();
        assert_eq!(facts, ["summary", "a", "revision"]);
        let c = msteams_connector_payload(&e);
        assert_eq!(c["@type"], "MessageCard");
        assert_eq!(c["themeColor"], "FF0000");
        assert_eq!(c["summary"], "kustomization/apps.flux-system");
        assert_eq!(c["sections"][0]["facts"].as_array().unwrap().len(), 3);
        assert!(is_office_connector(
            &Url::parse("https://org.webhook.office.com/x").unwrap()
        ));
        assert!(!is_office_connector(
            &Url::parse("https://prod.logic.azure.com/x").unwrap()
        ));
        let g = googlechat_payload(&e);
        assert_eq!(
            g["cards"][0]["header"],
            json!({"title": "kustomization/apps.flux-system", "subtitle": "kustomize-controller"})
        );
        assert!(
            g["cards"][0]["sections"][0]["widgets"][0]["textParagraph"]["text"]
                .as_str()
                .unwrap()
                .starts_with("<font color=\"#ff0000\">")
        );
        assert_eq!(
            g["cards"][0]["sections"][1]["widgets"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test cases 1 and 2, and case 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert!(signature(b"k", b"{}").starts_with("sha256="));
    }

    #[test]
    fn commits_from_revisions() {
        for (rev, want) in [
            (format!("main@sha1:{SHA}"), Some(SHA)),
            (format!("sha1:{SHA}"), Some(SHA)),
            (format!("main/{SHA}"), Some(SHA)),
            (SHA.to_string(), Some(SHA)),
            (
                format!("refs/tags/v1@sha1:{}", SHA.to_uppercase()),
                Some(SHA),
            ),
            ("main@sha1:abc".to_string(), None),
            ("6.5.4".to_string(), None),
            (format!("md5:{SHA}"), None),
            (String::new(), None),
        ] {
            assert_eq!(commit_of(&rev).as_deref(), want, "{rev}");
        }
    }

    #[test]
    fn git_addresses() {
        for (a, want) in [
            (
                "https://github.com/org/app",
                Ok(("https://github.com", "org/app")),
            ),
            (
                "https://github.com/org/app.git",
                Ok(("https://github.com", "org/app")),
            ),
            (
                "ssh://git@github.com/org/app",
                Ok(("https://github.com", "org/app")),
            ),
            (
                "git@gitlab.com:group/sub/app.git",
                Ok(("https://gitlab.com", "group/sub/app")),
            ),
            (
                "http://127.0.0.1:8080/org/app",
                Ok(("http://127.0.0.1:8080", "org/app")),
            ),
            ("https://github.com/", Err("names no repository")),
            (
                "ftp://x/y",
                Err("has scheme \"ftp\"; http, https or ssh is required"),
            ),
        ] {
            let got = parse_git_address(a);
            let got = got
                .as_ref()
                .map(|(h, r)| (h.as_str(), r.as_str()))
                .map_err(String::as_str);
            assert_eq!(got, want, "{a}");
        }
    }

    #[test]
    fn commit_status_ids_and_requests() {
        let e = event("info", &[("revision", &format!("main@sha1:{SHA}"))]);
        let id = commit_status_id(&e, "8A0B4C2E-1111-2222");
        assert_eq!(id, "kustomization/apps/8a0b4c2e");
        assert_eq!(
            describe_reason("ReconciliationSucceeded"),
            "reconciliation succeeded"
        );
        assert_eq!(describe_reason("HealthCheckFailed"), "health check failed");
        let (url, body) =
            commit_status_request("github", "https://github.com", "org/app", &e, &id).unwrap();
        assert_eq!(
            url,
            format!("https://api.github.com/repos/org/app/statuses/{SHA}")
        );
        assert_eq!(
            body,
            json!({"state": "success", "context": id, "description": "reconciliation succeeded"})
        );
        let (url, _) =
            commit_status_request("github", "http://127.0.0.1:9", "org/app", &e, &id).unwrap();
        assert_eq!(
            url,
            format!("http://127.0.0.1:9/api/v3/repos/org/app/statuses/{SHA}")
        );
        let err = event("error", &[("revision", &format!("main@sha1:{SHA}"))]);
        let (url, body) =
            commit_status_request("gitlab", "https://gitlab.com", "g/s/app", &err, &id).unwrap();
        assert_eq!(
            url,
            format!("https://gitlab.com/api/v4/projects/g%2Fs%2Fapp/statuses/{SHA}")
        );
        assert_eq!(body["state"], "failed");
        assert_eq!(body["name"], id);
        let no_commit = event("info", &[("revision", "6.5.4")]);
        assert_eq!(
            commit_status_request("github", "h", "o/r", &no_commit, &id),
            None
        );
        assert_eq!(
            commit_status_request("github", "h", "o/r", &event("info", &[]), &id),
            None
        );
    }

    #[test]
    fn provider_errors_name_the_field_not_the_secret() {
        let http = client();
        let err = |spec: Value, data: Option<&[(&str, &str)]>| {
            let data = data.map(secret);
            flux_notifier_for(&provider(spec), data.as_ref(), &http, &fast())
                .err()
                .expect("an error")
                .to_string()
        };
        assert_eq!(
            err(json!({"type": "pagerduty", "address": "https://x"}), None),
            "Provider flux-system/chat: spec.type is \"pagerduty\", which pennant does not \
             deliver to (it does: slack, discord, msteams, rocket, googlechat, generic, \
             generic-hmac, github, gitlab)"
        );
        assert_eq!(
            err(json!({"type": "slack"}), None),
            "Provider flux-system/chat: spec.address is not set and the Secret has no `address` key"
        );
        assert_eq!(
            err(
                json!({"type": "slack", "secretRef": {"name": "hook"}}),
                None
            ),
            "Provider flux-system/chat: spec.secretRef.name names Secret \"hook\", which does \
             not exist in the Provider's namespace"
        );
        let m = err(
            json!({"type": "generic-hmac", "address": "https://h/SECRET", "secretRef": {"name": "k"}}),
            Some(&[("headers", "x: y")]),
        );
        assert_eq!(
            m,
            "Provider flux-system/chat: spec.secretRef must name a Secret with a `token` key \
             for type generic-hmac"
        );
        let m = err(
            json!({"type": "slack", "secretRef": {"name": "hook"}}),
            Some(&[("address", "hooks.slack.com/services/SECRET")]),
        );
        assert!(
            m.contains("spec.secretRef (Secret \"hook\" key `address`) is not a valid URL"),
            "{m}"
        );
        assert!(!m.contains("SECRET"), "{m}");
        let m = err(
            json!({"type": "generic", "address": "https://h/x", "secretRef": {"name": "h"}}),
            Some(&[("headers", "- a list")]),
        );
        assert!(
            m.contains("whose key `headers` is not a YAML map of strings"),
            "{m}"
        );
        // a YAML error names the place, never the Secret's text
        for (headers, at) in [
            ("Authorization: [Bearer SECRET", "line 1 column 16"),
            ("Bearer SECRET", "line 1 column 1"),
        ] {
            let m = err(
                json!({"type": "generic", "address": "https://h/x", "secretRef": {"name": "h"}}),
                Some(&[("headers", headers)]),
            );
            assert!(m.contains(at), "{m}");
            assert!(!m.contains("SECRET"), "{m}");
        }
    }

    #[tokio::test]
    async fn slack_posts_with_token_and_username_default() {
        let r = Receiver::start().await;
        let p = provider(json!({"type": "slack", "channel": "ops", "secretRef": {"name": "s"}}));
        let data = secret(&[
            ("address", &r.url("/services/T/B/SECRET")),
            ("token", "xoxb"),
        ]);
        let n = flux_notifier_for(&p, Some(&data), &client(), &fast()).unwrap();
        assert!(n.post(&event("info", &[("revision", "r")])).await.unwrap());
        let hit = &r.hits()[0];
        assert_eq!(hit.path, "/services/T/B/SECRET");
        assert_eq!(hit.header("authorization"), "Bearer xoxb");
        assert_eq!(hit.body["username"], "kustomize-controller");
        assert_eq!(hit.body["channel"], "ops");
        assert_eq!(hit.body["attachments"][0]["fields"][0]["value"], "r");
        r.answer(&[(200, r#"{"ok":false,"error":"not_in_channel"}"#)]);
        let e = n.post(&event("info", &[])).await.unwrap_err().to_string();
        assert!(e.ends_with("refused the message: not_in_channel"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[tokio::test]
    async fn generic_hmac_signs_the_exact_body_and_sends_secret_headers() {
        let r = Receiver::start().await;
        let p = provider(json!({"type": "generic-hmac", "address": r.url("/hook"),
                                "secretRef": {"name": "s"}}));
        let data = secret(&[
            ("token", "s3cr3t"),
            ("headers", "X-Team: platform\nX-Env: prod"),
        ]);
        let n = flux_notifier_for(&p, Some(&data), &client(), &fast()).unwrap();
        let e = event("error", &[("revision", "r")]);
        assert!(n.post(&e).await.unwrap());
        let hit = &r.hits()[0];
        assert_eq!(hit.header("x-signature"), signature(b"s3cr3t", &hit.raw));
        assert_eq!(hit.header("gotk-component"), "kustomize-controller");
        assert_eq!(hit.header("x-team"), "platform");
        assert_eq!(hit.header("x-env"), "prod");
        assert_eq!(
            hit.header("authorization"),
            "",
            "the HMAC key is not a bearer token"
        );
        let back: Event = serde_json::from_slice(&hit.raw).unwrap();
        assert_eq!(back, e);
    }

    #[tokio::test]
    async fn github_and_gitlab_commit_statuses() {
        let r = Receiver::start().await;
        let data = secret(&[("token", "ghp_x")]);
        let gh = provider(json!({"type": "github", "address": r.url("/org/app.git"),
                                 "secretRef": {"name": "s"}}));
        let n = flux_notifier_for(&gh, Some(&data), &client(), &fast()).unwrap();
        let e = event("info", &[("revision", &format!("main@sha1:{SHA}"))]);
        assert!(n.post(&e).await.unwrap());
        let mut progressing = e.clone();
        progressing.reason = "Progressing".into();
        assert!(
            !n.post(&progressing).await.unwrap(),
            "Progressing is skipped"
        );
        assert!(!n.post(&event("info", &[("revision", "v1")])).await.unwrap());
        let gl = provider(json!({"type": "gitlab", "address": r.url("/group/app"),
                                 "secretRef": {"name": "s"}}));
        let n = flux_notifier_for(&gl, Some(&data), &client(), &fast()).unwrap();
        assert!(n.post(&e).await.unwrap());
        let hits = r.hits();
        assert_eq!(hits.len(), 2);
        assert_eq!(
            hits[0].path,
            format!("/api/v3/repos/org/app/statuses/{SHA}")
        );
        assert_eq!(hits[0].header("authorization"), "Bearer ghp_x");
        assert_eq!(hits[0].body["context"], "kustomization/apps/8a0b4c2e");
        assert_eq!(hits[0].body["state"], "success");
        assert_eq!(
            hits[1].uri,
            format!("/api/v4/projects/group%2Fapp/statuses/{SHA}")
        );
        assert_eq!(hits[1].header("private-token"), "ghp_x");
        assert_eq!(hits[1].body["name"], "kustomization/apps/8a0b4c2e");
    }

    #[tokio::test]
    async fn discord_posts_to_the_slack_path_and_timeout_is_the_providers() {
        let r = Receiver::start().await;
        let p = provider(
            json!({"type": "discord", "address": r.url("/api/webhooks/1/T"),
                                "timeout": "300ms"}),
        );
        let n = flux_notifier_for(&p, None, &client(), &fast()).unwrap();
        assert!(n.post(&event("info", &[])).await.unwrap());
        assert_eq!(r.hits()[0].path, "/api/webhooks/1/T/slack");
        r.delay(std::time::Duration::from_secs(2));
        let started = std::time::Instant::now();
        let once = DeliveryPolicy {
            attempts: 1,
            ..fast()
        };
        let n = flux_notifier_for(&p, None, &client(), &once).unwrap();
        let e = n.post(&event("info", &[])).await.unwrap_err().to_string();
        assert!(e.contains("timed out after 300ms"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
