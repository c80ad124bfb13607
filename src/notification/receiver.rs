//! Flux's `Receiver` (`notification.toolkit.fluxcd.io/v1`): a webhook that requests a reconcile
//! of Flux objects, served by pennant's HTTP server at `POST /hook/<digest>`. Same behaviour as
//! Flux notification-controller v1.9 (`internal/controller/receiver_controller.go`,
//! `internal/server/receiver_handlers.go`), differences named below.
//!
//! **The controller** ([`run`]; observe → [`decide`] (PURE) → status): reads the Secret of
//! `spec.secretRef`, writes `status.webhookPath` = `/hook/` + hex SHA-256 of token + name +
//! namespace ([`webhook_path`]) and `Ready=True`, reason `Succeeded`, message `Receiver
//! initialized for path: <path>`; a missing Secret or `token` key is `Ready=False`, reason
//! `TokenNotFound`, with a Warning Event, retried with backoff (5 s doubling, up to the
//! interval). An invalid `resourceFilter`/`filter` CEL expression is terminal (`Stalled`,
//! `InvalidCELExpression`), as is a spec breaking the CRD's `generic-oidc` rules
//! (`ValidationFailed`) or a type pennant does not verify (`gcr`, `generic-oidc`, `cdevents`:
//! reason `UnsupportedType`). A resource of a kind pennant does not serve (`Bucket`,
//! `ImageRepository`, `ImagePolicy`, `ImageUpdateAutomation`, `ExternalArtifact`) is named in
//! the Ready message and a Warning Event. The token never appears in status, Events or logs.
//! A Secret change re-reads it at once (a watch of Secrets' metadata), else every
//! `spec.interval` (default 10 m).
//!
//! **The handler** ([`routes`]): finds the Receiver whose `status.webhookPath` is the request's
//! path (404 otherwise; 503 when suspended or not Ready), re-reads the token, verifies the
//! request ([`verify`], constant-time comparisons) and refuses a forged, unsigned or filtered
//! one with 400 (Flux's status for every validation failure) before touching anything. Then,
//! for each resource (name, or `*` with `matchLabels`) that passes the CEL filters, it merge-patches
//! the annotation `reconcile.fluxcd.io/requestedAt` with a fresh RFC 3339 timestamp, which
//! pennant's source, kustomize and helm controllers watch (a reconcile within the second). 200
//! when every request was written, 500 when one failed, 413 above 3 MiB of body.
//!
//! Differences from Flux: a signed GitHub `ping` is answered 200 without a reconcile (Flux
//! reconciles on it, or answers 400 when `events` omits it); an empty `token` is `Ready=False`
//! (Flux accepts it: the path becomes guessable and a `github` Receiver then skips the
//! signature check); only POST is served (Flux answers any method); `Kustomization` and
//! `HelmRelease` default their `apiVersion` (Flux requires it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use ring::hmac;
use serde_json::{Value, json};
use sha2::Digest;
use tracing::{info, warn};

use crate::api::receiver::{
    Receiver, ReceiverResource, ReceiverStatus, TOKEN_NOT_FOUND_REASON, VALIDATION_FAILED_REASON,
};
use crate::gitops::conditions::{self, mark_false, mark_true, reasons, remove_condition, types};
use crate::gitops::events;
use crate::gitops::reconcile_request::{
    RECONCILE_REQUESTED_AT_ANNOTATION, failure_backoff, requested_at,
};

pub use crate::api::receiver::webhook_path;

/// Field manager of pennant's writes.
const FIELD_MANAGER: &str = "pennant";
/// `source.component` of the Events: Flux's, so tools filtering on it read pennant's.
pub const EVENT_SOURCE: &str = "notification-controller";
/// Largest request body read, bytes (Flux's `maxRequestSizeBytes`, 3 MiB); larger: 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Reason of the terminal condition for a type pennant does not verify.
pub const UNSUPPORTED_TYPE_REASON: &str = "UnsupportedType";
/// The receiver types pennant verifies.
pub const SUPPORTED_TYPES: [&str; 10] = [
    "generic",
    "generic-hmac",
    "github",
    "gitlab",
    "bitbucket",
    "harbor",
    "nexus",
    "quay",
    "dockerhub",
    "acr",
];

// ---------------------------------------------------------------------------------------------
// Verification (PURE)

/// A verified request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Request a reconcile of the resources; `event` is the sender's event type when it has one.
    Reconcile { event: Option<String> },
    /// A signed GitHub `ping` (sent when the webhook is created): answered 200, nothing done.
    Ping,
}

/// Why a request is refused (answered 400, as Flux; logged, never sent back). No variant
/// carries the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("missing signature header {0}")]
    MissingSignature(&'static str),
    #[error("error parsing signature {0:?}: expected <algorithm>=<hex digest>")]
    MalformedSignature(String),
    #[error("unknown hash type prefix: {0:?}")]
    UnknownAlgorithm(String),
    #[error("payload signature check failed")]
    BadSignature,
    #[error("the {0} header value does not match the receiver token")]
    BadToken(&'static str),
    #[error("the {sender} event {event:?} is not authorised")]
    EventNotAllowed { sender: &'static str, event: String },
    #[error("webhook request has unsupported Content-Type {0:?}")]
    ContentType(String),
    #[error("cannot decode {0} webhook payload: not a JSON object")]
    Payload(&'static str),
    #[error("receiver type {0:?} is not supported by pennant")]
    UnsupportedType(String),
}

/// `headers[name]` as text (`None` when absent or not visible ASCII).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// True when `events` is empty or names `event`, ignoring case (Flux's `strings.EqualFold`).
pub fn event_allowed(events: &[String], event: &str) -> bool {
    events.is_empty()
        || events
            .iter()
            .any(|e| e.to_lowercase() == event.to_lowercase())
}

/// `a == b` in time independent of where they differ: both are hashed (SHA-256) and the
/// digests compared with no early exit.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    let diff = da
        .iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check a `<algorithm>=<hex>` signature (`sha1`, `sha256` or `sha512`) of `body` keyed with
/// `key`, in constant time: the format of GitHub's `X-Hub-Signature(-256)` and Flux's
/// `generic-hmac` `X-Signature` (go-github's `ValidateSignature`).
pub fn check_signature(signature: &str, body: &[u8], key: &[u8]) -> Result<(), Refused> {
    let (alg, hex) = signature
        .split_once('=')
        .ok_or_else(|| Refused::MalformedSignature(signature.into()))?;
    let alg = match alg {
        "sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "sha256" => hmac::HMAC_SHA256,
        "sha512" => hmac::HMAC_SHA512,
        other => return Err(Refused::UnknownAlgorithm(other.into())),
    };
    let tag = hex_decode(hex).ok_or_else(|| Refused::MalformedSignature(signature.into()))?;
    hmac::verify(&hmac::Key::new(alg, key), body, &tag).map_err(|_| Refused::BadSignature)
}

/// The media type of `Content-Type`, lowercase, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    header(headers, "content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// go-github's `ValidatePayload`, used by Flux for `github` and `bitbucket`: a JSON or form
/// body, signed in `X-Hub-Signature-256` (preferred) or `X-Hub-Signature`.
fn check_hub(headers: &HeaderMap, body: &[u8], token: &[u8]) -> Result<(), Refused> {
    let media = media_type(headers);
    if media != "application/json" && media != "application/x-www-form-urlencoded" {
        return Err(Refused::ContentType(
            header(headers, "content-type").unwrap_or_default().into(),
        ));
    }
    let signature = header(headers, "x-hub-signature-256")
        .or_else(|| header(headers, "x-hub-signature"))
        .filter(|s| !s.is_empty())
        .ok_or(Refused::MissingSignature("X-Hub-Signature-256"))?;
    check_signature(signature, body, token)
}

fn filtered(
    events: &[String],
    sender: &'static str,
    event: Option<&str>,
) -> Result<Accepted, Refused> {
    let event = event.unwrap_or_default();
    if !event_allowed(events, event) {
        return Err(Refused::EventNotAllowed {
            sender,
            event: event.into(),
        });
    }
    Ok(Accepted::Reconcile {
        event: Some(event.to_string()).filter(|e| !e.is_empty()),
    })
}

fn json_object(body: &[u8], sender: &'static str) -> Result<(), Refused> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err(Refused::Payload(sender)),
    }
}

/// Verify a webhook request for a Receiver of type `type_` with `events` (`spec.events`) and
/// the Secret's `token`, as Flux's handler does per type:
/// - `generic`: nothing (the path is the secret);
/// - `generic-hmac`: `X-Signature: sha1|sha256|sha512=<hex HMAC of the body>`;
/// - `github`: a JSON or form body, `X-Hub-Signature-256` (or `X-Hub-Signature`), then
///   `X-GitHub-Event` filtered by `events`; a signed `ping` is [`Accepted::Ping`];
/// - `gitlab`: `X-Gitlab-Token` equal to the token, `X-Gitlab-Event` filtered;
/// - `bitbucket` (Bitbucket Server): as `github`, the event in `X-Event-Key`;
/// - `harbor`: `Authorization` equal to the token;
/// - `nexus`: `X-Nexus-Webhook-Signature: <hex HMAC-SHA1>` and a JSON object body;
/// - `quay`, `dockerhub`, `acr`: a JSON object body (the path is the secret, as in Flux).
///
/// Every comparison with the token or a MAC takes constant time. PURE.
pub fn verify(
    type_: &str,
    events: &[String],
    token: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Refused> {
    match type_ {
        "generic" => Ok(Accepted::Reconcile { event: None }),
        "generic-hmac" => {
            let sig = header(headers, "x-signature")
                .filter(|s| !s.is_empty())
                .ok_or(Refused::MissingSignature("X-Signature"))?;
            check_signature(sig, body, token)?;
            Ok(Accepted::Reconcile { event: None })
        }
        "github" => {
            check_hub(headers, body, token)?;
            let event = header(headers, "x-github-event");
            if event == Some("ping") {
                return Ok(Accepted::Ping);
            }
            filtered(events, "GitHub", event)
        }
        "bitbucket" => {
            check_hub(headers, body, token)?;
            filtered(events, "Bitbucket server", header(headers, "x-event-key"))
        }
        "gitlab" => {
            let given = header(headers, "x-gitlab-token").unwrap_or_default();
            if !same_secret(given.as_bytes(), token) {
                return Err(Refused::BadToken("X-Gitlab-Token"));
            }
            filtered(events, "GitLab", header(headers, "x-gitlab-event"))
        }
        "harbor" => {
            let given = header(headers, "authorization").unwrap_or_default();
            if !same_secret(given.as_bytes(), token) {
                return Err(Refused::BadToken("Authorization"));
            }
            Ok(Accepted::Reconcile { event: None })
        }
        "nexus" => {
            let sig = header(headers, "x-nexus-webhook-signature")
                .filter(|s| !s.is_empty())
                .ok_or(Refused::MissingSignature("X-Nexus-Webhook-Signature"))?;
            check_signature(&format!("sha1={sig}"), body, token)?;
            json_object(body, "Nexus")?;
            Ok(Accepted::Reconcile { event: None })
        }
        "quay" => json_object(body, "Quay").map(|_| Accepted::Reconcile { event: None }),
        "dockerhub" => json_object(body, "DockerHub").map(|_| Accepted::Reconcile { event: None }),
        "acr" => json_object(body, "ACR").map(|_| Accepted::Reconcile { event: None }),
        other => Err(Refused::UnsupportedType(other.into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Resources (PURE)

/// The kinds pennant reconciles and reacts to `reconcile.fluxcd.io/requestedAt` on, with the
/// `apiVersion` used when a resource names none.
pub const SERVED_KINDS: [(&str, &str); 7] = [
    ("GitRepository", "source.toolkit.fluxcd.io/v1"),
    ("OCIRepository", "source.toolkit.fluxcd.io/v1"),
    ("HelmRepository", "source.toolkit.fluxcd.io/v1"),
    ("HelmChart", "source.toolkit.fluxcd.io/v1"),
    ("Kustomization", "kustomize.toolkit.fluxcd.io/v1"),
    ("HelmRelease", "helm.toolkit.fluxcd.io/v2"),
    ("ArtifactGenerator", "source.extensions.fluxcd.io/v1beta1"),
];

/// Which objects of one resource entry receive the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// One object by name.
    Name(String),
    /// Every object of the kind in the namespace whose labels match (`k=v,...`; empty: all).
    Labels(String),
}

/// Where one `spec.resources[]` entry points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub gvk: GroupVersionKind,
    pub namespace: String,
    pub selection: Selection,
}

/// Resolve `resource` of a Receiver in `namespace`: its namespace (the Receiver's when empty),
/// `apiVersion` (the kind's default, [`SERVED_KINDS`]), and name or label selector (name `*`
/// needs `matchLabels`, Flux's rule). Errors name the entry; a kind pennant does not serve is
/// one. PURE.
pub fn target(resource: &ReceiverResource, namespace: &str) -> Result<Target, String> {
    let kind = resource.kind.as_str();
    let Some((_, default_version)) = SERVED_KINDS.iter().find(|(k, _)| *k == kind) else {
        return Err(format!(
            "pennant does not serve {kind}: no controller would handle its reconcile request"
        ));
    };
    let api_version = resource
        .api_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or(default_version);
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let selection = if resource.name == "*" {
        let labels = resource.match_labels.as_ref().ok_or_else(|| {
            "matchLabels field not set when using wildcard '*' as name".to_string()
        })?;
        Selection::Labels(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        )
    } else {
        Selection::Name(resource.name.clone())
    };
    Ok(Target {
        gvk: GroupVersionKind::gvk(group, version, kind),
        namespace: resource
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| namespace.to_string()),
        selection,
    })
}

/// The merge patch requesting a reconcile: `reconcile.fluxcd.io/requestedAt` set to `now`
/// (RFC 3339, nanoseconds; a new value on every request). PURE.
pub fn request_patch(now: Timestamp) -> Value {
    json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT_ANNOTATION: now.to_string()}}})
}

// ---------------------------------------------------------------------------------------------
// CEL filters (PURE)

static CEL: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
    let mut env = cel::Env::stdlib().with_optional_support(true);
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension declares once");
    Arc::new(env)
});

/// A compiled `resourceFilter` or `resources[].filter`: CEL over `res` (the object:
/// `apiVersion`, `kind`, `metadata`) and `req` (the request's JSON body, `{}` when not JSON),
/// true to reconcile. Same variables as Flux's.
pub struct Filter {
    source: String,
    program: cel::Program,
}

impl Filter {
    /// Compile `source`; the error is the message of the `InvalidCELExpression` condition.
    pub fn compile(source: &str) -> Result<Filter, String> {
        CEL.compile(source)
            .map(|program| Filter {
                source: source.into(),
                program,
            })
            .map_err(|e| format!("failed to parse the CEL expression '{source}': {e}"))
    }

    /// Evaluate for `res` and `req`: a boolean, else an error.
    pub fn accepts(&self, res: &Value, req: &Value) -> Result<bool, String> {
        let mut ctx = cel::Context::with_env(Arc::clone(&CEL));
        for (name, v) in [("res", res), ("req", req)] {
            let v = cel::to_value(v).map_err(|e| format!("'{name}' as a CEL value: {e}"))?;
            ctx.add_variable_from_value(name, v);
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(_) => Err(format!(
                "failed to evaluate CEL expression as boolean: '{}'",
                self.source
            )),
            Err(e) => Err(format!(
                "failed to evaluate the CEL expression '{}': {e}",
                self.source
            )),
        }
    }
}

/// `res` of a filter: the object's `apiVersion`, `kind` and `metadata` (Flux passes the
/// object's metadata only). PURE.
pub fn filter_res(obj: &Value) -> Value {
    json!({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": obj["metadata"]})
}

// ---------------------------------------------------------------------------------------------
// The controller's decision (PURE)

/// What a reconcile writes and records.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ReceiverStatus,
    /// Events to record: (warning, reason, message).
    pub events: Vec<(bool, String, String)>,
    /// `None`: wait for a change (terminal); `Some(Ok(d))`: check again after `d`;
    /// `Some(Err(()))`: a failure, retried with backoff.
    pub next: Option<Result<Duration, ()>>,
}

const TERMINAL_PREFIX: &str = "Reconciliation failed terminally due to configuration error";

/// Flux's `validateOIDCSpec`: the CRD's four rules, for API servers that skip CEL.
fn oidc_spec_error(r: &Receiver) -> Option<&'static str> {
    let oidc = r.spec.type_ == "generic-oidc";
    let providers = r
        .spec
        .oidc_providers
        .as_ref()
        .is_some_and(|p| !p.is_empty());
    let secret = r.spec.secret_ref.is_some();
    match (oidc, providers, secret) {
        (true, false, _) => Some("generic-oidc receiver requires at least one oidcProvider"),
        (false, true, _) => Some("oidcProviders can only be set when type is generic-oidc"),
        (true, _, true) => Some("secretRef cannot be set when type is generic-oidc"),
        (false, _, false) => Some("secretRef is required when type is not generic-oidc"),
        _ => None,
    }
}

/// The first invalid CEL expression of `r`, as Flux words it.
fn cel_error(r: &Receiver) -> Option<String> {
    if let Some(f) = r.spec.resource_filter.as_deref().filter(|f| !f.is_empty())
        && let Err(e) = Filter::compile(f)
    {
        return Some(format!("invalid resourceFilter expression: {e}"));
    }
    r.spec.resources.iter().enumerate().find_map(|(i, res)| {
        let f = res.filter.as_deref().filter(|f| !f.is_empty())?;
        Filter::compile(f).err().map(|e| {
            format!(
                "invalid filter expression for resources[{i}] (kind={:?}, name={:?}): {e}",
                res.kind, res.name
            )
        })
    })
}

/// The status and Events of a reconcile of `r` given the outcome of reading its token
/// (`Err`: the message, which names the Secret and never the token), at `now`. Flux's order:
/// CEL filters, the `generic-oidc` rules, then (pennant) the type, then the token. `None` when
/// the Receiver is suspended (nothing changes). PURE.
pub fn decide(r: &Receiver, token: Result<&[u8], String>, now: &Time) -> Option<Decision> {
    if r.suspended() {
        return None;
    }
    let old = r.status.clone().unwrap_or_default();
    let generation = r.metadata.generation.unwrap_or(0);
    let mut st = old.clone();
    if let Some(t) = requested_at(r.metadata.annotations.as_ref()) {
        st.last_handled_reconcile_at = Some(t.to_string());
    }
    let conds = &mut st.conditions;
    let terminal = cel_error(r)
        .map(|e| (reasons::INVALID_CEL_EXPRESSION, e))
        .or_else(|| oidc_spec_error(r).map(|e| (VALIDATION_FAILED_REASON, e.to_string())))
        .or_else(|| {
            (!SUPPORTED_TYPES.contains(&r.spec.type_.as_str())).then(|| {
                (
                    UNSUPPORTED_TYPE_REASON,
                    format!(
                        "receiver type {:?} is not supported by pennant (supported: {})",
                        r.spec.type_,
                        SUPPORTED_TYPES.join(", ")
                    ),
                )
            })
        });
    if let Some((reason, err)) = terminal {
        let message = format!("{TERMINAL_PREFIX}: {err}");
        mark_false(conds, types::READY, reason, &message, generation, now);
        mark_true(conds, types::STALLED, reason, &message, generation, now);
        remove_condition(conds, types::RECONCILING);
        st.webhook_path = None;
        st.observed_generation = Some(generation);
        let events = if st != old {
            vec![(true, reason.to_string(), message)]
        } else {
            vec![]
        };
        return Some(Decision {
            status: st,
            events,
            next: None,
        });
    }
    remove_condition(conds, types::STALLED);
    let namespace = r.namespace().unwrap_or_default();
    let token = token.and_then(|t| {
        if t.is_empty() {
            let secret = r.spec.secret_ref.as_ref().map(|s| s.name.as_str());
            Err(format!(
                "invalid '{namespace}/{}' secret data: the 'token' key is empty",
                secret.unwrap_or_default()
            ))
        } else {
            Ok(t)
        }
    });
    match token {
        Err(message) => {
            mark_false(
                conds,
                types::READY,
                TOKEN_NOT_FOUND_REASON,
                &message,
                generation,
                now,
            );
            mark_true(
                conds,
                types::RECONCILING,
                reasons::PROGRESSING_WITH_RETRY,
                "Reconciliation in progress",
                generation,
                now,
            );
            st.webhook_path = None;
            Some(Decision {
                status: st,
                events: vec![(true, reasons::FAILED.to_string(), message)],
                next: Some(Err(())),
            })
        }
        Ok(token) => {
            let path = webhook_path(token, &r.name_any(), &namespace);
            let mut message = format!("Receiver initialized for path: {path}");
            let unserved: Vec<String> = r
                .spec
                .resources
                .iter()
                .enumerate()
                .filter_map(|(i, res)| {
                    target(res, &namespace)
                        .err()
                        .map(|e| format!("resources[{i}] ({} {}): {e}", res.kind, res.name))
                })
                .collect();
            if !unserved.is_empty() {
                message = format!("{message}; {}", unserved.join("; "));
            }
            mark_true(
                conds,
                types::READY,
                reasons::SUCCEEDED,
                &message,
                generation,
                now,
            );
            remove_condition(conds, types::RECONCILING);
            st.webhook_path = Some(path);
            st.observed_generation = Some(generation);
            let mut events = vec![];
            if st != old {
                for u in &unserved {
                    events.push((true, "UnsupportedResource".to_string(), u.clone()));
                }
                let next = crate::util::go_duration(r.interval().as_millis() as f64);
                events.push((
                    false,
                    reasons::SUCCEEDED.to_string(),
                    format!("Reconciliation finished, next run in {next}"),
                ));
            }
            Some(Decision {
                status: st,
                events,
                next: Some(Ok(r.interval())),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// I/O: the controller

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(String),
    #[error("{0}")]
    Token(String),
}

struct Ctx {
    client: Client,
    metrics: Arc<crate::metrics::Metrics>,
    instance: String,
    failures: Mutex<HashMap<ObjectRef<Receiver>, u32>>,
}

/// The token of `r`'s Secret: `Err` with Flux's message (naming the Secret, never a value)
/// when the Secret or its `token` key is missing.
async fn read_token(client: &Client, r: &Receiver) -> Result<Vec<u8>, String> {
    let ns = r.namespace().unwrap_or_default();
    let Some(secret_ref) = &r.spec.secret_ref else {
        return Ok(vec![]);
    };
    let name = format!("{ns}/{}", secret_ref.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api.get(&secret_ref.name).await.map_err(|e| {
        let e = match e {
            kube::Error::Api(a) => a.message,
            e => e.to_string(),
        };
        format!("unable to read token from secret '{name}' error: {e}")
    })?;
    secret
        .data
        .and_then(|mut d| d.remove("token"))
        .map(|b| b.0)
        .ok_or_else(|| format!("invalid '{name}' secret data: required fields 'token'"))
}

/// The Receivers naming the Secret `s` in `secretRef`.
fn receivers_of(
    store: &Store<Receiver>,
    s: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Receiver>> {
    let (ns, name) = (s.namespace(), s.name_any());
    store
        .state()
        .iter()
        .filter(|r| {
            r.namespace() == ns && r.spec.secret_ref.as_ref().is_some_and(|x| x.name == name)
        })
        .map(|r| ObjectRef::from_obj(&**r))
        .collect()
}

/// Watch and reconcile Receivers until the process's shutdown: a new generation, a new
/// `reconcile.fluxcd.io/requestedAt` token or a change of a referenced Secret reconciles at
/// once; otherwise every `spec.interval`.
pub async fn run(process: crate::runtime::Process) -> anyhow::Result<()> {
    let crate::runtime::Process {
        client,
        metrics,
        scope,
        shutdown,
        ..
    } = process.clone();
    let api: Api<Receiver> = scope.api(&client);
    let secrets: Api<PartialObjectMeta<Secret>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store::<Receiver>();
    let wanted = |o: &Receiver| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        o.metadata.generation.hash(&mut h);
        requested_at(o.metadata.annotations.as_ref()).hash(&mut h);
        Some(h.finish())
    };
    let synced = Arc::new(std::sync::Once::new());
    let trigger = reflector::reflector(writer, watcher(api, scope.watcher_config()))
        .backoff(crate::runtime::watch_backoff())
        .inspect(move |e| {
            if let Ok(watcher::Event::InitDone) = e {
                synced.call_once(|| {
                    process.synced();
                    info!("notification controller: caches synced");
                });
            }
        })
        .applied_objects()
        .predicate_filter(wanted, Default::default());
    let secret_events = watcher(secrets, watcher::Config::default().any_semantic())
        .backoff(crate::runtime::watch_backoff())
        .touched_objects();
    let index = store.clone();
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "pennant".into());
    let ctx = Arc::new(Ctx {
        client,
        metrics,
        instance,
        failures: Mutex::default(),
    });
    // a short shared backoff: kube pauses all of a controller's watches on any one's error
    Controller::for_stream(trigger, store)
        .trigger_backoff(crate::runtime::watch_backoff())
        .watches_stream(secret_events, move |s| receivers_of(&index, &s))
        .graceful_shutdown_on(shutdown.signalled())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("Receiver reconcile: {e}");
            }
        })
        .await;
    Ok(())
}

async fn reconcile(r: Arc<Receiver>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let token = if r.suspended() {
        Ok(vec![])
    } else {
        read_token(&ctx.client, &r).await
    };
    let now = Time(Timestamp::now());
    let Some(d) = decide(&r, token.as_deref().map_err(Clone::clone), &now) else {
        info!(name = %r.name_any(), "Reconciliation is suspended for this object");
        return Ok(Action::await_change());
    };
    let ns = r.namespace().unwrap_or_default();
    let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &ns);
    let old = r.status.clone().unwrap_or_default();
    crate::gitops::object::write_status(&api, &r.name_any(), &old, &d.status, FIELD_MANAGER)
        .await
        .map_err(|e| Error::Kube(format!("patch status: {e}")))?;
    let reporter = events::Reporter {
        component: EVENT_SOURCE,
        reporting_component: "pennant.dev/notification",
        instance: &ctx.instance,
        group: crate::api::receiver::GROUP,
        field_manager: FIELD_MANAGER,
    };
    let none = BTreeMap::new();
    for (warning, reason, message) in &d.events {
        let note = events::Note {
            warning: *warning,
            reason,
            message,
            annotations: &none,
        };
        events::emit(&ctx.client, &*r, &note, &reporter).await;
    }
    match d.next {
        None => Ok(Action::await_change()),
        Some(Ok(after)) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ObjectRef::from_obj(&*r));
            Ok(Action::requeue(after))
        }
        Some(Err(())) => Err(Error::Token(
            d.status
                .conditions
                .iter()
                .find(|c| c.type_ == types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )),
    }
}

fn error_policy(r: Arc<Receiver>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(ObjectRef::from_obj(&*r)).or_default();
        *n += 1;
        *n
    };
    let reason = match err {
        Error::Kube(_) => "kube",
        // already logged with its Warning Event
        Error::Token(_) => "token",
    };
    if let Error::Kube(_) = err {
        warn!(name = %r.name_any(), namespace = %r.namespace().unwrap_or_default(), "Receiver reconcile failed: {err}");
    }
    ctx.metrics.reconcile_error("notification", reason);
    Action::requeue(failure_backoff(n, r.interval()))
}

// ---------------------------------------------------------------------------------------------
// I/O: the webhook handler

#[derive(Clone)]
struct HookState {
    client: Client,
    scope: crate::runtime::Scope,
}

/// `POST /hook/{digest}` on the process's HTTP server, for the Receivers in `scope` (bodies up
/// to [`MAX_BODY_BYTES`]).
pub fn routes(client: Client, scope: crate::runtime::Scope) -> Router {
    Router::new()
        .route("/hook/{digest}", post(hook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(HookState { client, scope })
}

async fn hook(
    State(s): State<HookState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let path = format!("{}{digest}", crate::api::receiver::WEBHOOK_PATH_PREFIX);
    info!("handling request: {digest}");
    let api: Api<Receiver> = s.scope.api(&s.client);
    let lp = match &s.scope.label_selector {
        Some(l) => ListParams::default().labels(l),
        None => ListParams::default(),
    };
    let receivers = match api.list(&lp).await {
        Ok(l) => l.items,
        Err(e) => {
            warn!("unable to list receivers: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unable to list receivers\n",
            );
        }
    };
    let Some(r) = receivers.into_iter().find(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.webhook_path.as_deref())
            .is_some_and(|p| same_secret(p.as_bytes(), path.as_bytes()))
    }) else {
        return (StatusCode::NOT_FOUND, "not found\n");
    };
    let (name, ns) = (r.name_any(), r.namespace().unwrap_or_default());
    let ready = conditions::is_true(
        r.status.as_ref().map_or(&[][..], |s| &s.conditions),
        types::READY,
    );
    if r.suspended() || !ready {
        let why = if r.suspended() {
            "receiver is suspended"
        } else {
            "receiver is not ready"
        };
        warn!(name = %name, namespace = %ns, "unable to process request: {why}");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "unable to process request\n",
        );
    }
    let token = match read_token(&s.client, &r).await {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => {
            warn!(name = %name, namespace = %ns, "unable to validate payload: empty token");
            return (StatusCode::BAD_REQUEST, "unable to validate payload\n");
        }
        Err(e) => {
            warn!(name = %name, namespace = %ns, "unable to validate payload: {e}");
            return (StatusCode::BAD_REQUEST, "unable to validate payload\n");
        }
    };
    match verify(&r.spec.type_, r.events(), &token, &headers, &body) {
        Err(e) => {
            warn!(name = %name, namespace = %ns, "unable to validate payload: {e}");
            return (StatusCode::BAD_REQUEST, "unable to validate payload\n");
        }
        Ok(Accepted::Ping) => {
            info!(name = %name, namespace = %ns, "handling GitHub event: ping (nothing to reconcile)");
            return (StatusCode::OK, "pong\n");
        }
        Ok(Accepted::Reconcile { event }) => {
            if let Some(e) = event {
                info!(name = %name, namespace = %ns, "handling {} event: {e}", r.spec.type_);
            }
        }
    }
    let req = if media_type(&headers) == "application/json" {
        serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| json!({}))
    } else {
        json!({})
    };
    let global = match r.spec.resource_filter.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => match Filter::compile(f) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(name = %name, namespace = %ns, "unable to create resource filters: {e}");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid resource filter\n",
                );
            }
        },
        None => None,
    };
    let mut failed = false;
    for (i, res) in r.spec.resources.iter().enumerate() {
        let own = match res
            .filter
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(Filter::compile)
        {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                warn!(name = %name, namespace = %ns, "resources[{i}]: {e}");
                failed = true;
                continue;
            }
        };
        let filters: Vec<&Filter> = global.iter().chain(own.iter()).collect();
        if let Err(e) = request_reconcile(&s.client, res, &ns, &filters, &req).await {
            warn!(name = %name, namespace = %ns, "unable to request reconciliation of resources[{i}] ({} {}): {e}", res.kind, res.name);
            failed = true;
        }
    }
    if failed {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "some reconcile requests failed\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Annotate the objects of one `spec.resources[]` entry that every filter accepts.
async fn request_reconcile(
    client: &Client,
    res: &ReceiverResource,
    namespace: &str,
    filters: &[&Filter],
    req: &Value,
) -> Result<(), String> {
    let t = target(res, namespace)?;
    let ar = ApiResource::from_gvk(&t.gvk);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &t.namespace, &ar);
    let objects: Vec<Value> = match &t.selection {
        Selection::Name(n) if filters.is_empty() => vec![json!({"metadata": {"name": n}})],
        Selection::Name(n) => {
            let o = api
                .get(n)
                .await
                .map_err(|e| format!("unable to read {} '{}/{n}': {e}", t.gvk.kind, t.namespace))?;
            vec![serde_json::to_value(o).map_err(|e| e.to_string())?]
        }
        Selection::Labels(l) => {
            let list = api
                .list(&ListParams::default().labels(l))
                .await
                .map_err(|e| {
                    format!(
                        "failed listing {} in namespace {:?} by matching labels {l:?}: {e}",
                        t.gvk.kind, t.namespace
                    )
                })?;
            if list.items.is_empty() {
                warn!(
                    "no {:?} resources found with matching labels {l:?} in {:?} namespace",
                    t.gvk.kind, t.namespace
                );
            }
            list.items
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap_or_default())
                .collect()
        }
    };
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for o in objects {
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut accepted = true;
        for f in filters {
            accepted &= f.accepts(&filter_res(&o), req)?;
        }
        if !accepted {
            info!(
                "resource '{}/{name}.{}' NOT annotated because CEL expression returned false",
                t.gvk.kind, t.namespace
            );
            continue;
        }
        api.patch(&name, &pp, &Patch::Merge(request_patch(Timestamp::now())))
            .await
            .map_err(|e| {
                format!(
                    "unable to annotate {} '{}/{name}': {e}",
                    t.gvk.kind, t.namespace
                )
            })?;
        info!("resource '{}/{name}.{}' annotated", t.gvk.kind, t.namespace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::receiver::ReceiverSpec;
    use crate::api::source::LocalObjectReference;

    const TOKEN: &[u8] = b"s3cr3t-token";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    fn sign(alg: hmac::Algorithm, prefix: &str, key: &[u8], body: &[u8]) -> String {
        let tag = hmac::sign(&hmac::Key::new(alg, key), body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}")
    }

    fn sha256(key: &[u8], body: &[u8]) -> String {
        sign(hmac::HMAC_SHA256, "sha256=", key, body)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// `<alg>=<hex>` signatures: the three algorithms go-github accepts, and every way a
    /// signature can be wrong.
    #[test]
    fn signatures_are_checked_per_algorithm() {
        let ok = |s: &str| check_signature(s, BODY, TOKEN);
        assert_eq!(ok(&sha256(TOKEN, BODY)), Ok(()));
        assert_eq!(
            ok(&sign(
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                "sha1=",
                TOKEN,
                BODY
            )),
            Ok(())
        );
        assert_eq!(ok(&sign(hmac::HMAC_SHA512, "sha512=", TOKEN, BODY)), Ok(()));
        assert_eq!(
            ok(&sha256(TOKEN, BODY)
                .to_uppercase()
                .replace("SHA256=", "sha256=")),
            Ok(()),
            "hex digits of either case, as Go's hex.DecodeString"
        );
        let cases: Vec<(String, Refused)> = vec![
            (sha256(b"other-token", BODY), Refused::BadSignature),
            (sha256(TOKEN, b"{}"), Refused::BadSignature),
            (
                sign(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, "sha256=", TOKEN, BODY),
                Refused::BadSignature,
            ),
            (
                sha256(TOKEN, BODY).replace("sha256=", "md5="),
                Refused::UnknownAlgorithm("md5".into()),
            ),
            (
                "sha256".into(),
                Refused::MalformedSignature("sha256".into()),
            ),
            (
                "sha256=zz".into(),
                Refused::MalformedSignature("sha256=zz".into()),
            ),
            (
                "sha256=abc".into(),
                Refused::MalformedSignature("sha256=abc".into()),
            ),
            ("sha256=".into(), Refused::BadSignature),
        ];
        for (sig, want) in cases {
            assert_eq!(ok(&sig), Err(want), "{sig}");
        }
    }

    /// One row per sender type and way to be right or wrong.
    #[test]
    fn requests_are_verified_per_type() {
        let push = vec!["push".to_string()];
        let none: Vec<String> = vec![];
        let gh_sig = sha256(TOKEN, BODY);
        let gh_sha1 = sign(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, "sha1=", TOKEN, BODY);
        let forged = sha256(b"guess", BODY);
        let nexus_sig = sign(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, "", TOKEN, BODY);
        let nexus_forged = sign(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, "", b"guess", BODY);
        let md5 = gh_sig.replace("sha256=", "md5=");
        let json = ("content-type", "application/json");
        let reconcile = |e: Option<&str>| {
            Ok(Accepted::Reconcile {
                event: e.map(String::from),
            })
        };
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            &str,
            &str,
            &[String],
            Vec<(&str, &str)>,
            &[u8],
            Result<Accepted, Refused>,
        )> = vec![
            (
                "generic, anything",
                "generic",
                &none,
                vec![],
                b"x",
                reconcile(None),
            ),
            (
                "hmac signed",
                "generic-hmac",
                &none,
                vec![("x-signature", &gh_sig)],
                BODY,
                reconcile(None),
            ),
            (
                "hmac sha1",
                "generic-hmac",
                &none,
                vec![("x-signature", &gh_sha1)],
                BODY,
                reconcile(None),
            ),
            (
                "hmac forged",
                "generic-hmac",
                &none,
                vec![("x-signature", &forged)],
                BODY,
                Err(Refused::BadSignature),
            ),
            (
                "hmac unsigned",
                "generic-hmac",
                &none,
                vec![],
                BODY,
                Err(Refused::MissingSignature("X-Signature")),
            ),
            (
                "github push",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "push"),
                ],
                BODY,
                reconcile(Some("push")),
            ),
            (
                "github event names ignore case",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "PUSH"),
                ],
                BODY,
                reconcile(Some("PUSH")),
            ),
            (
                "github sha1 header",
                "github",
                &none,
                vec![
                    ("content-type", "application/json; charset=utf-8"),
                    ("x-hub-signature", &gh_sha1),
                    ("x-github-event", "push"),
                ],
                BODY,
                reconcile(Some("push")),
            ),
            (
                "github sha256 preferred over a wrong sha1",
                "github",
                &none,
                vec![
                    json,
                    ("x-hub-signature-256", &gh_sig),
                    ("x-hub-signature", "sha1=00"),
                    ("x-github-event", "push"),
                ],
                BODY,
                reconcile(Some("push")),
            ),
            (
                "github form body",
                "github",
                &none,
                vec![
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "push"),
                ],
                BODY,
                reconcile(Some("push")),
            ),
            (
                "github ping, even when events omits it",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "ping"),
                ],
                BODY,
                Ok(Accepted::Ping),
            ),
            (
                "github forged ping",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &forged),
                    ("x-github-event", "ping"),
                ],
                BODY,
                Err(Refused::BadSignature),
            ),
            (
                "github forged",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &forged),
                    ("x-github-event", "push"),
                ],
                BODY,
                Err(Refused::BadSignature),
            ),
            (
                "github unsigned",
                "github",
                &push,
                vec![json, ("x-github-event", "push")],
                BODY,
                Err(Refused::MissingSignature("X-Hub-Signature-256")),
            ),
            (
                "github wrong algorithm",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &md5),
                    ("x-github-event", "push"),
                ],
                BODY,
                Err(Refused::UnknownAlgorithm("md5".into())),
            ),
            (
                "github event filtered",
                "github",
                &push,
                vec![
                    json,
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "issues"),
                ],
                BODY,
                Err(Refused::EventNotAllowed {
                    sender: "GitHub",
                    event: "issues".into(),
                }),
            ),
            (
                "github without a content type",
                "github",
                &push,
                vec![("x-hub-signature-256", &gh_sig), ("x-github-event", "push")],
                BODY,
                Err(Refused::ContentType(String::new())),
            ),
            (
                "github text body",
                "github",
                &push,
                vec![
                    ("content-type", "text/plain"),
                    ("x-hub-signature-256", &gh_sig),
                    ("x-github-event", "push"),
                ],
                BODY,
                Err(Refused::ContentType("text/plain".into())),
            ),
            (
                "gitlab push",
                "gitlab",
                &[],
                vec![
                    ("x-gitlab-token", "s3cr3t-token"),
                    ("x-gitlab-event", "Push Hook"),
                ],
                b"",
                reconcile(Some("Push Hook")),
            ),
            (
                "gitlab wrong token",
                "gitlab",
                &[],
                vec![
                    ("x-gitlab-token", "s3cr3t-tokem"),
                    ("x-gitlab-event", "Push Hook"),
                ],
                b"",
                Err(Refused::BadToken("X-Gitlab-Token")),
            ),
            (
                "gitlab token prefix",
                "gitlab",
                &[],
                vec![
                    ("x-gitlab-token", "s3cr3t"),
                    ("x-gitlab-event", "Push Hook"),
                ],
                b"",
                Err(Refused::BadToken("X-Gitlab-Token")),
            ),
            (
                "gitlab no token",
                "gitlab",
                &[],
                vec![("x-gitlab-event", "Push Hook")],
                b"",
                Err(Refused::BadToken("X-Gitlab-Token")),
            ),
            (
                "bitbucket signed",
                "bitbucket",
                &[],
                vec![
                    json,
                    ("x-hub-signature", &gh_sig),
                    ("x-event-key", "repo:refs_changed"),
                ],
                BODY,
                reconcile(Some("repo:refs_changed")),
            ),
            (
                "harbor token",
                "harbor",
                &[],
                vec![("authorization", "s3cr3t-token")],
                b"{}",
                reconcile(None),
            ),
            (
                "harbor wrong token",
                "harbor",
                &[],
                vec![("authorization", "Bearer s3cr3t-token")],
                b"{}",
                Err(Refused::BadToken("Authorization")),
            ),
            (
                "nexus signed",
                "nexus",
                &[],
                vec![("x-nexus-webhook-signature", &nexus_sig)],
                BODY,
                reconcile(None),
            ),
            (
                "nexus forged",
                "nexus",
                &[],
                vec![("x-nexus-webhook-signature", &nexus_forged)],
                BODY,
                Err(Refused::BadSignature),
            ),
            ("quay JSON", "quay", &[], vec![], BODY, reconcile(None)),
            (
                "quay not JSON",
                "quay",
                &[],
                vec![],
                b"hello",
                Err(Refused::Payload("Quay")),
            ),
            (
                "gcr",
                "gcr",
                &[],
                vec![],
                BODY,
                Err(Refused::UnsupportedType("gcr".into())),
            ),
        ];
        for (what, type_, events, h, body, want) in rows {
            let got = verify(type_, events, TOKEN, &headers(&h), body);
            assert_eq!(got, want, "{what}");
        }
        // the body signed is the body received
        let h = headers(&[
            json,
            ("x-hub-signature-256", &gh_sig),
            ("x-github-event", "push"),
        ]);
        let tampered = br#"{"ref":"refs/heads/evil","after":"abc"}"#;
        assert_eq!(
            verify("github", &push, TOKEN, &h, tampered),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn events_filter_ignoring_case_and_empty_allows_all() {
        let ev = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(event_allowed(&[], "anything"));
        assert!(event_allowed(&ev(&["push", "ping"]), "push"));
        assert!(event_allowed(&ev(&["Push Hook"]), "push hook"));
        assert!(!event_allowed(&ev(&["push"]), "pull_request"));
        assert!(!event_allowed(&ev(&["push"]), ""), "a missing event header");
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"abc"));
    }

    fn res(kind: &str, name: &str) -> ReceiverResource {
        ReceiverResource {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn resources_resolve_to_served_kinds() {
        let t = target(&res("GitRepository", "app"), "flux-system").unwrap();
        assert_eq!(
            t,
            Target {
                gvk: GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
                namespace: "flux-system".into(),
                selection: Selection::Name("app".into()),
            }
        );
        assert_eq!(ApiResource::from_gvk(&t.gvk).plural, "gitrepositories");
        let ks = target(&res("Kustomization", "apps"), "ns").unwrap();
        assert_eq!(ks.gvk.group, "kustomize.toolkit.fluxcd.io");
        let hr = target(&res("HelmRelease", "podinfo"), "ns").unwrap();
        assert_eq!(
            (hr.gvk.group.as_str(), hr.gvk.version.as_str()),
            ("helm.toolkit.fluxcd.io", "v2")
        );
        assert_eq!(ApiResource::from_gvk(&hr.gvk).plural, "helmreleases");
        let mut other = res("OCIRepository", "*");
        other.namespace = Some("apps".into());
        other.match_labels = Some(BTreeMap::from([
            ("team".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]));
        other.api_version = Some("source.toolkit.fluxcd.io/v1beta2".into());
        let t = target(&other, "flux-system").unwrap();
        assert_eq!(t.namespace, "apps");
        assert_eq!(t.gvk.version, "v1beta2", "an explicit apiVersion is used");
        assert_eq!(t.selection, Selection::Labels("team=web,tier=front".into()));
        assert_eq!(
            target(&res("HelmChart", "*"), "ns").unwrap_err(),
            "matchLabels field not set when using wildcard '*' as name"
        );
        for kind in [
            "Bucket",
            "ImageRepository",
            "ImagePolicy",
            "ExternalArtifact",
        ] {
            let e = target(&res(kind, "x"), "ns").unwrap_err();
            assert!(
                e.starts_with(&format!("pennant does not serve {kind}")),
                "{e}"
            );
        }
        let p = request_patch(Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2027-01-15T08:00:00Z"}}})
        );
    }

    #[test]
    fn filters_read_res_and_req() {
        let obj = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app", "labels": {"team": "web"}}, "spec": {"url": "x"}});
        let req = json!({"ref": "refs/heads/main"});
        let f = Filter::compile("res.metadata.name == 'app' && req.ref.endsWith('/main')").unwrap();
        assert_eq!(f.accepts(&filter_res(&obj), &req), Ok(true));
        let f = Filter::compile("req.ref == 'refs/heads/dev'").unwrap();
        assert_eq!(f.accepts(&filter_res(&obj), &req), Ok(false));
        let f = Filter::compile("has(res.spec)").unwrap();
        assert_eq!(
            f.accepts(&filter_res(&obj), &req),
            Ok(false),
            "metadata only"
        );
        let f = Filter::compile("res.metadata.name").unwrap();
        assert!(
            f.accepts(&filter_res(&obj), &req)
                .unwrap_err()
                .contains("as boolean")
        );
        assert!(Filter::compile("res.metadata.name ==").is_err());
    }

    fn receiver(type_: &str) -> Receiver {
        let mut r = Receiver::new(
            "hook",
            ReceiverSpec {
                type_: type_.into(),
                resources: vec![res("GitRepository", "app")],
                secret_ref: Some(LocalObjectReference {
                    name: "webhook-token".into(),
                }),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("flux-system".into());
        r.metadata.generation = Some(2);
        r
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn ready(st: &ReceiverStatus) -> (String, String, String) {
        let c = conditions::get(&st.conditions, types::READY).expect("Ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_readable_token_makes_the_receiver_ready_at_fluxs_path() {
        let r = receiver("github");
        let d = decide(&r, Ok(b"tok"), &now()).unwrap();
        let path = webhook_path("tok", "hook", "flux-system");
        assert_eq!(d.status.webhook_path.as_deref(), Some(path.as_str()));
        assert_eq!(
            ready(&d.status),
            (
                "True".into(),
                "Succeeded".into(),
                format!("Receiver initialized for path: {path}")
            )
        );
        assert_eq!(d.status.observed_generation, Some(2));
        assert_eq!(d.next, Some(Ok(Duration::from_secs(600))));
        assert_eq!(
            d.events,
            vec![(
                false,
                "Succeeded".to_string(),
                "Reconciliation finished, next run in 10m0s".to_string()
            )]
        );
        // steady state: same status, no Event
        let mut again = r.clone();
        again.status = Some(d.status.clone());
        let d2 = decide(&again, Ok(b"tok"), &now()).unwrap();
        assert_eq!(d2.status, d.status);
        assert!(d2.events.is_empty());
        // a new token moves the path
        let d3 = decide(&again, Ok(b"rotated"), &now()).unwrap();
        assert_ne!(d3.status.webhook_path, d.status.webhook_path);
        // a reconcile request is echoed
        again.metadata.annotations = Some(BTreeMap::from([(
            RECONCILE_REQUESTED_AT_ANNOTATION.to_string(),
            "t1".to_string(),
        )]));
        let d4 = decide(&again, Ok(b"tok"), &now()).unwrap();
        assert_eq!(d4.status.last_handled_reconcile_at.as_deref(), Some("t1"));
    }

    #[test]
    fn a_missing_token_is_not_ready_and_retried() {
        let r = receiver("github");
        let mut was_ready = r.clone();
        was_ready.status = Some(decide(&r, Ok(b"tok"), &now()).unwrap().status);
        for (token, message) in [
            (
                Err(
                    "unable to read token from secret 'flux-system/webhook-token' error: not found"
                        .to_string(),
                ),
                "unable to read token from secret 'flux-system/webhook-token' error: not found",
            ),
            (
                Ok(&b""[..]),
                "invalid 'flux-system/webhook-token' secret data: the 'token' key is empty",
            ),
        ] {
            let d = decide(&was_ready, token, &now()).unwrap();
            assert_eq!(
                ready(&d.status),
                ("False".into(), "TokenNotFound".into(), message.into())
            );
            assert_eq!(d.status.webhook_path, None, "no path to serve");
            let rec = conditions::get(&d.status.conditions, types::RECONCILING).unwrap();
            assert_eq!(rec.reason, "ProgressingWithRetry");
            assert_eq!(d.next, Some(Err(())));
            assert_eq!(
                d.events,
                vec![(true, "Failed".to_string(), message.to_string())]
            );
        }
    }

    #[test]
    fn configuration_errors_are_terminal() {
        let mut bad_cel = receiver("github");
        bad_cel.spec.resource_filter = Some("res.metadata.name ==".into());
        let mut bad_res_cel = receiver("github");
        bad_res_cel.spec.resources[0].filter = Some("(".into());
        let mut oidc = receiver("generic-oidc");
        oidc.spec.secret_ref = None;
        let mut no_secret = receiver("generic");
        no_secret.spec.secret_ref = None;
        for (r, reason, needle) in [
            (
                bad_cel,
                "InvalidCELExpression",
                "invalid resourceFilter expression",
            ),
            (
                bad_res_cel,
                "InvalidCELExpression",
                "invalid filter expression for resources[0] (kind=\"GitRepository\", name=\"app\")",
            ),
            (
                oidc,
                "ValidationFailed",
                "requires at least one oidcProvider",
            ),
            (no_secret, "ValidationFailed", "secretRef is required"),
            (
                receiver("gcr"),
                "UnsupportedType",
                "receiver type \"gcr\" is not supported by pennant",
            ),
        ] {
            let d = decide(&r, Ok(b"tok"), &now()).unwrap();
            let (status, got_reason, message) = ready(&d.status);
            assert_eq!((status.as_str(), got_reason.as_str()), ("False", reason));
            assert!(
                message.starts_with(TERMINAL_PREFIX) && message.contains(needle),
                "{message}"
            );
            let stalled = conditions::get(&d.status.conditions, types::STALLED).unwrap();
            assert_eq!(
                (stalled.status.as_str(), stalled.reason.as_str()),
                ("True", reason)
            );
            assert_eq!(d.next, None, "waits for a new generation");
            assert_eq!(d.status.webhook_path, None);
            assert_eq!(d.events.len(), 1);
            assert!(d.events[0].0, "a Warning");
        }
    }

    #[test]
    fn suspended_changes_nothing_and_unserved_kinds_are_named() {
        let mut r = receiver("github");
        r.spec.suspend = Some(true);
        assert_eq!(decide(&r, Ok(b"tok"), &now()), None);
        let mut r = receiver("github");
        r.spec.resources.push(res("Bucket", "assets"));
        let d = decide(&r, Ok(b"tok"), &now()).unwrap();
        let (status, _, message) = ready(&d.status);
        assert_eq!(status, "True", "the served resources still work");
        assert!(
            message.contains("resources[1] (Bucket assets): pennant does not serve Bucket"),
            "{message}"
        );
        assert!(
            d.events.iter().any(|(w, reason, m)| *w
                && reason == "UnsupportedResource"
                && m.contains("Bucket"))
        );
    }

    /// No message of a decision carries the token.
    #[test]
    fn the_token_is_never_written() {
        let secret = b"do-not-leak-0123456789";
        let mut r = receiver("github");
        r.spec.resources.push(res("Bucket", "assets"));
        let d = decide(&r, Ok(secret), &now()).unwrap();
        let text = format!("{:?} {:?}", d.status, d.events);
        assert!(!text.contains("do-not-leak"), "{text}");
    }
}
