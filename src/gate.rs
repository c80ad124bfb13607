//! Manual gating: the endpoints of Flagger's loadtester (`/gate/*`, `/rollback/*`, reference
//! §5.3) served by the controller itself, with the gate state stored on the Canary.
//!
//! A Canary manifest written for Flagger points its confirm hooks at the loadtester, e.g.
//! `url: http://flagger-loadtester.test/gate/check`; pointing the same hooks at pennant's HTTP
//! server (`http://pennant.<ns>:8080/gate/check`) works unchanged.
//!
//! # Endpoints
//!
//! | Path | Body | Answer |
//! |---|---|---|
//! | `/gate/approve` | any (ignored) | always `200 Approved` |
//! | `/gate/halt` | any (ignored) | always `403 Forbidden` |
//! | `/gate/check` | webhook payload | `200 Approved` if the canary's gate is open, else `403 Forbidden` |
//! | `/gate/open`, `/gate/close` | `{"name": .., "namespace": ..}` | `202`; the gate is now open / closed |
//! | `/rollback/check` | webhook payload | `200 Approved` if a rollback was requested, else `403 Forbidden` |
//! | `/rollback/open`, `/rollback/close` | `{"name": .., "namespace": ..}` | `202`; rollback requested / withdrawn |
//!
//! The webhook payload is the JSON pennant (and Flagger) POSTs to hooks:
//! `{"name", "namespace", "phase", "checksum", "metadata"}`; only `name` and `namespace` are
//! read, other fields are ignored. A body that is not a JSON object, or lacks a non-empty string
//! `name` or `namespace`, or names something that cannot be a Kubernetes object, is answered
//! `400` with a message naming the field. The `Content-Type` is not checked (`curl -d` works).
//!
//! Every answer other than 2xx keeps a gate closed for the caller, so the other failures below
//! never open a gate by accident:
//! - `403` when the controller runs with `--namespace` and the Canary is in another namespace
//!   (this controller does not run it; the API is not called);
//! - `404` when the Canary does not exist;
//! - `503` when the Kubernetes API cannot be reached or refuses the request (the message says
//!   which), or when the server runs without a Kubernetes client.
//!
//! # Which hook each gate guards
//!
//! - **`/gate/check`** answers whichever *confirm* hook points at it. Typically a
//!   `confirm-promotion` hook: the canary reaches `maxWeight` (or its last iteration) and waits in
//!   `WaitingPromotion`, analysis still running each interval, until the gate is opened. A
//!   `confirm-rollout` hook on it holds a new revision in `Waiting` before any scale-up; a
//!   `confirm-traffic-increase` hook holds each weight step. One gate per Canary, as in the
//!   loadtester: every confirm hook of the Canary that points at `/gate/check` sees the same state.
//! - **`/rollback/check`** is meant for a `rollback` hook: pennant calls it at each analysis step
//!   (`Progressing`, `WaitingPromotion`), before the other checks, and a `200` (rollback
//!   requested) rolls the canary back at once.
//! - **`/gate/approve`** and **`/gate/halt`** are constant answers, for manifests that wire a
//!   hook to "always pass" or "always wait".
//!
//! # State: annotations on the Canary
//!
//! Unlike the loadtester, which keeps gates in memory (lost on restart, invisible to
//! `kubectl`), pennant stores them as annotations on the Canary:
//!
//! - [`PROMOTION_ANNOTATION`] `gate.pennant.dev/promotion`: the gate `/gate/check` answers;
//! - [`ROLLBACK_ANNOTATION`] `gate.pennant.dev/rollback`: the request `/rollback/check` answers.
//!
//! `open`/`close` write the value `open` or `closed` with a JSON merge patch on the Canary's
//! metadata (nothing else is touched); `check` reads the Canary with a GET. A gate is open only
//! when its annotation is `open` (case and surrounding spaces ignored); a missing annotation or
//! any other value is closed, so the default is **closed**, as in the loadtester. The same
//! annotations can be set with `kubectl annotate` or with `pennant gate|rollback open|close`.
//!
//! **An open gate stays open until it is closed**, exactly like the loadtester's: after a
//! promotion the gate is still open, and the next revision will be promoted without waiting
//! unless someone closes it first (`/gate/close`, `pennant gate close`). Likewise an open
//! rollback request rolls back every new run until it is closed. The gate is per Canary, not per
//! revision.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::Canary;

/// Annotation holding the gate answered by `/gate/check`.
pub const PROMOTION_ANNOTATION: &str = "gate.pennant.dev/promotion";
/// Annotation holding the rollback request answered by `/rollback/check`.
pub const ROLLBACK_ANNOTATION: &str = "gate.pennant.dev/rollback";

/// How long a gate endpoint waits for the Kubernetes API before answering 503 (hooks time out
/// after 10 s by default).
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The two gates of a Canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// `/gate/*`, annotation `gate.pennant.dev/promotion`.
    Promotion,
    /// `/rollback/*`, annotation `gate.pennant.dev/rollback`.
    Rollback,
}

impl Gate {
    pub fn annotation(self) -> &'static str {
        match self {
            Gate::Promotion => PROMOTION_ANNOTATION,
            Gate::Rollback => ROLLBACK_ANNOTATION,
        }
    }

    /// Human name used in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Gate::Promotion => "gate",
            Gate::Rollback => "rollback request",
        }
    }
    /// The endpoint a hook reads this gate from: `/gate/check`, `/rollback/check`.
    pub fn check_path(self) -> &'static str {
        match self {
            Gate::Promotion => "/gate/check",
            Gate::Rollback => "/rollback/check",
        }
    }
}

/// Whether a webhook of `canary` reads `gate` (its URL's path is [`Gate::check_path`]), that
/// is whether opening the gate acts on a run; opening it otherwise changes nothing but the
/// annotation, which a later hook would still find open. PURE.
pub fn read_by_a_hook(canary: &Canary, gate: Gate) -> bool {
    let path_of = |url: &str| {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        path.split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    canary.spec.analysis.as_ref().is_some_and(|a| {
        a.webhooks
            .iter()
            .any(|w| path_of(&w.url) == gate.check_path())
    })
}

/// The warning for opening `gate` on `canary` when no hook reads it ([`read_by_a_hook`]).
pub fn unread_warning(canary: &Canary, gate: Gate) -> Option<String> {
    (!read_by_a_hook(canary, gate)).then(|| {
        format!(
            "no webhook of this Canary points at {}: no run reads the {} (it stays open for a later \
             hook to find)",
            gate.check_path(),
            gate.describe()
        )
    })
}

/// Whether a gate is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    Open,
    Closed,
}

impl GateState {
    /// The annotation value written for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Open => "open",
            GateState::Closed => "closed",
        }
    }

    /// Parse an annotation value: `open` (any case, spaces trimmed) is open, anything else closed.
    pub fn from_value(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("open") => GateState::Open,
            _ => GateState::Closed,
        }
    }

    /// The state of `gate` given a Canary's annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>, gate: Gate) -> Self {
        Self::from_value(annotations.get(gate.annotation()).map(String::as_str))
    }
}

/// What one request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `/gate/approve`: always 200.
    Approve,
    /// `/gate/halt`: always 403.
    Halt,
    /// `/gate/check`, `/rollback/check`.
    Check(Gate),
    /// `/gate/open|close`, `/rollback/open|close`.
    Set(Gate, GateState),
}

impl Request {
    /// The request served at `path`, if it is one of the gate endpoints.
    pub fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            "/gate/approve" => Request::Approve,
            "/gate/halt" => Request::Halt,
            "/gate/check" => Request::Check(Gate::Promotion),
            "/gate/open" => Request::Set(Gate::Promotion, GateState::Open),
            "/gate/close" => Request::Set(Gate::Promotion, GateState::Closed),
            "/rollback/check" => Request::Check(Gate::Rollback),
            "/rollback/open" => Request::Set(Gate::Rollback, GateState::Open),
            "/rollback/close" => Request::Set(Gate::Rollback, GateState::Closed),
            _ => return None,
        })
    }

    /// The state `/gate/approve` (always open) and `/gate/halt` (always closed) stand for;
    /// `None` for the requests that read or write a Canary's gate.
    pub fn fixed_state(self) -> Option<GateState> {
        match self {
            Request::Approve => Some(GateState::Open),
            Request::Halt => Some(GateState::Closed),
            Request::Check(_) | Request::Set(..) => None,
        }
    }
}

/// The Canary a request is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryRef {
    pub name: String,
    pub namespace: String,
}

impl std::fmt::Display for CanaryRef {
    /// `name.namespace`, as Flagger names canaries in its messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// Why a payload was refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload must be a JSON object with \"name\" and \"namespace\"")]
    NotObject,
    #[error("missing field \"{0}\" in payload")]
    Missing(&'static str),
    #[error("field \"{0}\" in payload must be a string")]
    NotString(&'static str),
    #[error("field \"{0}\" in payload is empty")]
    Empty(&'static str),
    #[error("field \"{0}\" in payload is not a valid Kubernetes name: {1:?}")]
    InvalidName(&'static str, String),
}

/// Read `name` and `namespace` from a webhook payload (or a `{"name", "namespace"}` body).
pub fn parse_payload(body: &[u8]) -> Result<CanaryRef, PayloadError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(PayloadError::NotObject);
    };
    let field = |key: &'static str, valid: fn(&str) -> bool| -> Result<String, PayloadError> {
        let s = match obj.get(key) {
            None | Some(Value::Null) => return Err(PayloadError::Missing(key)),
            Some(Value::String(s)) => s.trim(),
            Some(_) => return Err(PayloadError::NotString(key)),
        };
        if s.is_empty() {
            return Err(PayloadError::Empty(key));
        }
        if !valid(s) {
            return Err(PayloadError::InvalidName(key, s.to_string()));
        }
        Ok(s.to_string())
    };
    Ok(CanaryRef {
        name: field("name", is_subdomain)?,
        namespace: field("namespace", is_label)?,
    })
}

/// RFC 1123 label: what a namespace name must be.
fn is_label(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what a Canary name must be. Rejecting anything else also keeps names
/// such as `../secrets/x` out of the API paths built from them.
fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && is_label(l))
}

/// A controller started with `--namespace` serves the gates of that namespace only (the
/// loadtester's `-namespace-regexp` in spirit): a request for another namespace is answered 403
/// without touching the API. `None` when the request is in scope.
pub fn out_of_scope(canary: &CanaryRef, watched: Option<&str>) -> Option<Answer> {
    let ns = watched.filter(|w| !w.is_empty())?;
    (canary.namespace != ns).then(|| {
        Answer::new(
            403,
            format!(
                "Forbidden: canary {canary} is not in namespace {ns}, the only one this controller watches"
            ),
        )
    })
}

/// An HTTP answer: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Answer {
            status,
            body: body.into(),
        }
    }
}

/// Why the gate state could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("canary {0} not found")]
    NotFound(CanaryRef),
    /// The API could not be reached, timed out, or refused the request.
    #[error("{0}")]
    Unavailable(String),
}

/// The answer to `request` given the outcome of reading (`Check`) or writing (`Set`) the gate.
/// `Approve` and `Halt` ignore `outcome`.
pub fn answer(
    request: Request,
    canary: Option<&CanaryRef>,
    outcome: Result<GateState, StoreError>,
) -> Answer {
    match (request, outcome) {
        (Request::Approve, _) => Answer::new(200, "Approved"),
        (Request::Halt, _) => Answer::new(403, "Forbidden"),
        (_, Err(e @ StoreError::NotFound(_))) => Answer::new(404, e.to_string()),
        (_, Err(StoreError::Unavailable(e))) => {
            Answer::new(503, format!("Kubernetes API unavailable: {e}"))
        }
        (Request::Check(_), Ok(GateState::Open)) => Answer::new(200, "Approved"),
        (Request::Check(_), Ok(GateState::Closed)) => Answer::new(403, "Forbidden"),
        (Request::Set(gate, _), Ok(state)) => {
            let who = canary.map(|c| format!(" for {c}")).unwrap_or_default();
            let state = state.as_str();
            Answer::new(
                202,
                format!(
                    "{}{who} {state} ({}={state})",
                    gate.describe(),
                    gate.annotation()
                ),
            )
        }
    }
}

/// The JSON merge patch that sets `gate` to `state` on a Canary.
pub fn merge_patch(gate: Gate, state: GateState) -> Value {
    json!({"metadata": {"annotations": {gate.annotation(): state.as_str()}}})
}

fn store_error(canary: &CanaryRef, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 404 => StoreError::NotFound(canary.clone()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

async fn with_timeout<T>(
    canary: &CanaryRef,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| store_error(canary, e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {}s",
            API_TIMEOUT.as_secs()
        ))),
    }
}

/// Carry out `request` for `canary`: read the gate (`Check`), write it (`Set`). `Approve` is a
/// gate that is always open and `Halt` one that is always closed; neither touches the API.
pub async fn perform(
    client: &Client,
    request: Request,
    canary: &CanaryRef,
) -> Result<GateState, StoreError> {
    match request {
        Request::Approve | Request::Halt => Ok(request.fixed_state().expect("fixed")),
        Request::Check(gate) => read(client, canary, gate).await,
        Request::Set(gate, state) => write(client, canary, gate, state).await,
    }
}

/// Read the state of `gate` from the Canary (a GET).
pub async fn read(
    client: &Client,
    canary: &CanaryRef,
    gate: Gate,
) -> Result<GateState, StoreError> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &canary.namespace);
    let c = with_timeout(canary, api.get(&canary.name)).await?;
    Ok(GateState::from_annotations(c.annotations(), gate))
}

/// Set `gate` to `state` on the Canary (a merge patch of one annotation) and return the state
/// read back from the patched object.
pub async fn write(
    client: &Client,
    canary: &CanaryRef,
    gate: Gate,
    state: GateState,
) -> Result<GateState, StoreError> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &canary.namespace);
    let patch = merge_patch(gate, state);
    // the controllers' field manager (`canary::execute::FIELD_MANAGER`), never `unknown`
    let params = PatchParams {
        field_manager: Some("pennant".into()),
        ..Default::default()
    };
    let c = with_timeout(
        canary,
        api.patch(&canary.name, &params, &Patch::Merge(&patch)),
    )
    .await?;
    Ok(GateState::from_annotations(c.annotations(), gate))
}

/// The loadtester's gate endpoints (any method, as the loadtester).
pub const GATE_PATHS: [&str; 8] = [
    "/gate/approve",
    "/gate/halt",
    "/gate/check",
    "/gate/open",
    "/gate/close",
    "/rollback/check",
    "/rollback/open",
    "/rollback/close",
];

/// Who the gate endpoints act for.
#[derive(Clone)]
struct Endpoints {
    /// Client for the endpoints that read and annotate Canaries. Without one they answer 503
    /// (`/gate/approve` and `/gate/halt` still work).
    client: Option<Client>,
    /// The namespace the controller watches (`--namespace`); requests for Canaries elsewhere are
    /// refused with 403. `None` for all namespaces.
    namespace: Option<String>,
}

/// The gate endpoints ([`GATE_PATHS`], any method), for the process's HTTP server.
pub fn routes(client: Option<Client>, namespace: Option<String>) -> axum::Router {
    let mut r = axum::Router::new();
    for path in GATE_PATHS {
        r = r.route(path, axum::routing::any(gate_endpoint));
    }
    r.with_state(Endpoints { client, namespace })
}

async fn gate_endpoint(State(s): State<Endpoints>, uri: Uri, body: Bytes) -> (StatusCode, String) {
    let Some(request) = Request::from_path(uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found".into());
    };
    let (canary, answer) = match request.fixed_state() {
        // approve/halt: constant answers, no payload, no API call
        Some(state) => (None, answer(request, None, Ok(state))),
        None => {
            let canary = match parse_payload(&body) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(path = uri.path(), "gate request refused: {e}");
                    return (StatusCode::BAD_REQUEST, e.to_string());
                }
            };
            let answer = match out_of_scope(&canary, s.namespace.as_deref()) {
                Some(refused) => refused,
                None => {
                    let outcome = match &s.client {
                        Some(client) => perform(client, request, &canary).await,
                        None => Err(StoreError::Unavailable(
                            "this server has no Kubernetes client".into(),
                        )),
                    };
                    answer(request, Some(&canary), outcome)
                }
            };
            (Some(canary), answer)
        }
    };
    let who = canary.map(|c| c.to_string()).unwrap_or_default();
    match request {
        Request::Set(..) if answer.status < 300 => {
            tracing::info!(canary = %who, path = uri.path(), "{}", answer.body)
        }
        _ => {
            tracing::debug!(canary = %who, path = uri.path(), status = answer.status, "{}", answer.body)
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use GateState::{Closed, Open};

    fn cref(name: &str, ns: &str) -> CanaryRef {
        CanaryRef {
            name: name.into(),
            namespace: ns.into(),
        }
    }

    /// Break-it finding: `pennant promote` on a Canary whose hooks never read the gate
    /// reported success, and nothing happened.
    #[test]
    fn a_gate_is_read_only_by_a_hook_at_its_check_path() {
        let with = |urls: &[&str]| -> Canary {
            let hooks: Vec<serde_json::Value> = urls
                .iter()
                .map(|u| json!({"name": "h", "type": "confirm-promotion", "url": u}))
                .collect();
            serde_json::from_value(json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "service": {"port": 80}, "analysis": {"webhooks": hooks}}
            }))
            .unwrap()
        };
        let gated = with(&["http://pennant.apps:8080/gate/check?x=1"]);
        assert!(read_by_a_hook(&gated, Gate::Promotion));
        assert_eq!(unread_warning(&gated, Gate::Promotion), None);
        assert!(!read_by_a_hook(&gated, Gate::Rollback));
        let other = with(&["http://tester/gate/checked", "http://tester/approve"]);
        let w = unread_warning(&other, Gate::Promotion).unwrap();
        assert!(w.contains("/gate/check"), "{w}");
        assert!(read_by_a_hook(
            &with(&["http://p/rollback/check"]),
            Gate::Rollback
        ));
    }

    #[test]
    fn payloads() {
        let ok = |n: &str, ns: &str| Ok(cref(n, ns));
        let cases: Vec<(&str, Result<CanaryRef, PayloadError>)> = vec![
            (
                r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"abc","metadata":{"k":"v"}}"#,
                ok("podinfo", "test"),
            ),
            (
                r#"{"name":"podinfo","namespace":"test"}"#,
                ok("podinfo", "test"),
            ),
            (
                r#"{"name":" web.v2 ","namespace":"prod-1"}"#,
                ok("web.v2", "prod-1"),
            ),
            (
                r#"{"namespace":"test"}"#,
                Err(PayloadError::Missing("name")),
            ),
            (
                r#"{"name":"podinfo"}"#,
                Err(PayloadError::Missing("namespace")),
            ),
            (
                r#"{"name":null,"namespace":"test"}"#,
                Err(PayloadError::Missing("name")),
            ),
            (r#"{}"#, Err(PayloadError::Missing("name"))),
            (
                r#"{"name":"","namespace":"test"}"#,
                Err(PayloadError::Empty("name")),
            ),
            (
                r#"{"name":"a","namespace":"  "}"#,
                Err(PayloadError::Empty("namespace")),
            ),
            (
                r#"{"name":1,"namespace":"test"}"#,
                Err(PayloadError::NotString("name")),
            ),
            (
                r#"{"name":"a","namespace":["x"]}"#,
                Err(PayloadError::NotString("namespace")),
            ),
            (
                r#"{"name":"../secrets/x","namespace":"test"}"#,
                Err(PayloadError::InvalidName("name", "../secrets/x".into())),
            ),
            (
                r#"{"name":"Podinfo","namespace":"test"}"#,
                Err(PayloadError::InvalidName("name", "Podinfo".into())),
            ),
            (
                r#"{"name":"a","namespace":"a.b"}"#,
                Err(PayloadError::InvalidName("namespace", "a.b".into())),
            ),
            (r#"["podinfo","test"]"#, Err(PayloadError::NotObject)),
        ];
        for (body, want) in cases {
            assert_eq!(parse_payload(body.as_bytes()), want, "{body}");
        }
        assert!(matches!(
            parse_payload(b"name=podinfo"),
            Err(PayloadError::NotJson(_))
        ));
        assert!(matches!(parse_payload(b""), Err(PayloadError::NotJson(_))));
        assert_eq!(
            PayloadError::Missing("namespace").to_string(),
            "missing field \"namespace\" in payload"
        );
    }

    #[test]
    fn state_from_annotations() {
        type Case = (Vec<(&'static str, &'static str)>, Gate, GateState);
        let cases: Vec<Case> = vec![
            (vec![], Gate::Promotion, Closed),
            (vec![], Gate::Rollback, Closed),
            (vec![(PROMOTION_ANNOTATION, "open")], Gate::Promotion, Open),
            (
                vec![(PROMOTION_ANNOTATION, " Open ")],
                Gate::Promotion,
                Open,
            ),
            (vec![(PROMOTION_ANNOTATION, "OPEN")], Gate::Promotion, Open),
            (
                vec![(PROMOTION_ANNOTATION, "closed")],
                Gate::Promotion,
                Closed,
            ),
            (
                vec![(PROMOTION_ANNOTATION, "true")],
                Gate::Promotion,
                Closed,
            ),
            (vec![(PROMOTION_ANNOTATION, "")], Gate::Promotion, Closed),
            (vec![(PROMOTION_ANNOTATION, "open")], Gate::Rollback, Closed),
            (vec![(ROLLBACK_ANNOTATION, "open")], Gate::Rollback, Open),
            (vec![(ROLLBACK_ANNOTATION, "open")], Gate::Promotion, Closed),
            (
                vec![
                    (ROLLBACK_ANNOTATION, "closed"),
                    (PROMOTION_ANNOTATION, "open"),
                ],
                Gate::Promotion,
                Open,
            ),
        ];
        for (annotations, gate, want) in cases {
            let a: BTreeMap<String, String> = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                GateState::from_annotations(&a, gate),
                want,
                "{annotations:?} {gate:?}"
            );
        }
    }

    #[test]
    fn routes() {
        use Request::*;
        let cases = [
            ("/gate/approve", Some(Approve)),
            ("/gate/halt", Some(Halt)),
            ("/gate/check", Some(Check(Gate::Promotion))),
            ("/gate/open", Some(Set(Gate::Promotion, Open))),
            ("/gate/close", Some(Set(Gate::Promotion, Closed))),
            ("/rollback/check", Some(Check(Gate::Rollback))),
            ("/rollback/open", Some(Set(Gate::Rollback, Open))),
            ("/rollback/close", Some(Set(Gate::Rollback, Closed))),
            ("/gate", None),
            ("/rollback/approve", None),
        ];
        for (path, want) in cases {
            assert_eq!(Request::from_path(path), want, "{path}");
        }
        assert_eq!(Approve.fixed_state(), Some(Open));
        assert_eq!(Halt.fixed_state(), Some(Closed));
        assert_eq!(Check(Gate::Rollback).fixed_state(), None);
        assert_eq!(Set(Gate::Promotion, Open).fixed_state(), None);
    }

    #[test]
    fn answers() {
        use Request::*;
        let c = cref("podinfo", "test");
        let down = || Err(StoreError::Unavailable("connection refused".into()));
        let missing = || Err(StoreError::NotFound(cref("podinfo", "test")));
        let cases: Vec<(Request, Result<GateState, StoreError>, u16, &str)> = vec![
            (Approve, down(), 200, "Approved"),
            (Halt, Ok(Open), 403, "Forbidden"),
            (Check(Gate::Promotion), Ok(Open), 200, "Approved"),
            (Check(Gate::Promotion), Ok(Closed), 403, "Forbidden"),
            (Check(Gate::Rollback), Ok(Open), 200, "Approved"),
            (Check(Gate::Rollback), Ok(Closed), 403, "Forbidden"),
            (
                Check(Gate::Promotion),
                missing(),
                404,
                "canary podinfo.test not found",
            ),
            (
                Check(Gate::Promotion),
                down(),
                503,
                "Kubernetes API unavailable: connection refused",
            ),
            (
                Set(Gate::Promotion, Open),
                Ok(Open),
                202,
                "gate for podinfo.test open (gate.pennant.dev/promotion=open)",
            ),
            (
                Set(Gate::Rollback, Closed),
                Ok(Closed),
                202,
                "rollback request for podinfo.test closed (gate.pennant.dev/rollback=closed)",
            ),
            (
                Set(Gate::Rollback, Open),
                down(),
                503,
                "Kubernetes API unavailable: connection refused",
            ),
            (
                Set(Gate::Promotion, Open),
                missing(),
                404,
                "canary podinfo.test not found",
            ),
        ];
        for (req, outcome, status, body) in cases {
            let a = answer(req, Some(&c), outcome.clone());
            assert_eq!(
                (a.status, a.body.as_str()),
                (status, body),
                "{req:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn namespace_scope() {
        let c = cref("podinfo", "test");
        assert_eq!(out_of_scope(&c, None), None);
        assert_eq!(out_of_scope(&c, Some("")), None, "empty = all namespaces");
        assert_eq!(out_of_scope(&c, Some("test")), None);
        let a = out_of_scope(&c, Some("prod")).expect("refused");
        assert_eq!(a.status, 403);
        assert!(
            a.body
                .starts_with("Forbidden: canary podinfo.test is not in namespace prod")
        );
    }

    #[test]
    fn patches_touch_one_annotation() {
        assert_eq!(
            merge_patch(Gate::Promotion, Open),
            json!({"metadata": {"annotations": {"gate.pennant.dev/promotion": "open"}}})
        );
        assert_eq!(
            merge_patch(Gate::Rollback, Closed),
            json!({"metadata": {"annotations": {"gate.pennant.dev/rollback": "closed"}}})
        );
    }
}
