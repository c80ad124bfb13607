//! Analysis webhooks (Flagger §5.1): payload, the HTTP call with timeout and retries, and the
//! pass/fail semantics per hook kind (§2.11).
//!
//! Each hook is a `POST <url>` with `Content-Type: application/json` and the body
//! `{"name", "namespace", "phase", "checksum", "metadata"}` ([`Payload`]), exactly the fields
//! Flagger sends (its loadtester and third-party gates decode this shape).
//!
//! Differences from Flagger, on purpose:
//! - **Any 2xx is success.** Flagger counts only status ≤ 202 (so 204 fails, §2.16-6).
//! - `timeout: 0s` means the default 10 s, not "no timeout".
//! - Failure messages carry the status code and the start of the body, or the transport error.
//! - `checksum` identifies the same thing as Flagger's (the revision under test plus its tracked
//!   ConfigMaps/Secrets, stable across the ticks of one run) but is computed differently, so
//!   its value differs from the one Flagger would send for the same canary. See [`checksum`].
//! - `disableTLS: true` (skip certificate verification) is **not supported**: the hook is called
//!   with normal verification. The controller reports the field as unsupported.
//!
//! Retries (`retries`, default 0) follow Flagger's client (go-retryablehttp): exponential backoff
//! from 1 s doubling up to 30 s, on connection errors, timeouts, 429 and 5xx except 501, honouring
//! a `Retry-After: <seconds>` header (capped at the maximum delay). The timeout is per attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{Canary, CanaryPhase, CanaryStatus, CanaryWebhook, parse_duration};
use crate::http_post::{self, PostError, Retries};

/// Webhook kinds, with Flagger's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookKind {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmRollout => "confirm-rollout",
            Self::PreRollout => "pre-rollout",
            Self::Rollout => "rollout",
            Self::ConfirmTrafficIncrease => "confirm-traffic-increase",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::PostRollout => "post-rollout",
            Self::Rollback => "rollback",
            Self::Event => "event",
        }
    }
}

/// The combined answer of all webhooks of one kind.
///
/// For checks and gates `pass` means every hook answered 2xx; for `rollback` hooks it means at
/// least one hook *asked* for a rollback (answered 2xx), as in Flagger.
#[derive(Clone, Debug, PartialEq)]
pub struct HookVerdict {
    pub pass: bool,
    pub message: String,
}

/// Per-attempt timeout when the hook sets none (or `0s`), as Flagger.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body POSTed to a webhook, Flagger's `CanaryWebhookPayload`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payload {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// The phase passed by the caller (§2.11: `Progressing` for the analysis hooks, the current
    /// phase for `confirm-rollout` and `rollback`, `Succeeded`/`Failed` for `post-rollout`).
    pub phase: CanaryPhase,
    /// See [`checksum`].
    pub checksum: String,
    /// The hook's `metadata`; omitted when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Payload {
    /// The payload for `hook` of `canary` in `phase`.
    pub fn new(canary: &Canary, phase: CanaryPhase, hook: &CanaryWebhook) -> Self {
        Payload {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            phase,
            checksum: checksum(canary.status.as_ref()),
            metadata: hook.metadata.clone().unwrap_or_default(),
        }
    }

    /// The payload for an `event` hook (Flagger §5.2): the current status phase and the metadata
    /// `eventMessage`, `eventType` (`Normal` / `Warning`) and `timestamp` (Unix milliseconds),
    /// merged with the hook's own metadata; the reserved keys win.
    pub fn event(
        canary: &Canary,
        hook: &CanaryWebhook,
        message: &str,
        event_type: &str,
        timestamp_ms: i64,
    ) -> Self {
        let phase = canary
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(CanaryPhase::Initializing);
        let mut p = Payload::new(canary, phase, hook);
        p.metadata.insert("eventMessage".into(), message.into());
        p.metadata.insert("eventType".into(), event_type.into());
        p.metadata
            .insert("timestamp".into(), timestamp_ms.to_string());
        p
    }
}

/// Identifies the revision under test and its configuration: the first 16 hex digits of the
/// SHA-256 of `{"lastAppliedSpec": ..., "trackedConfigs": {...}}` (keys sorted; a missing map
/// and an empty one are the same). Same inputs as Flagger's `canaryChecksum`, so it changes
/// exactly when Flagger's does, but a different hash (Flagger hashes a Go struct dump with
/// FNV-32a), so the value is not Flagger's.
pub fn checksum(status: Option<&CanaryStatus>) -> String {
    let empty = BTreeMap::new();
    let canonical = serde_json::json!({
        "lastAppliedSpec": status.and_then(|s| s.last_applied_spec.as_deref()).unwrap_or(""),
        "trackedConfigs": status.and_then(|s| s.tracked_configs.as_ref()).unwrap_or(&empty),
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    format!("{digest:x}")[..16].to_string()
}

/// Backoff between attempts of one hook. Flagger's (go-retryablehttp) is 1 s doubling to 30 s.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Why one hook did not answer 2xx. `Display` is the tail of the verdict message, after
/// `webhook <kind> "<name>" <url> `.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HookFailure {
    /// The hook answered a non-2xx status; `body` is the start of the response body.
    #[error("returned {status}{}{}", colon(body), attempts_note(*attempts))]
    Status {
        status: u16,
        body: String,
        attempts: usize,
    },
    /// No answer: connection refused, DNS, TLS, timeout, bad URL.
    #[error("failed: {error}{}", attempts_note(*attempts))]
    Transport { error: String, attempts: usize },
    /// The hook's `timeout` is not a duration; the hook is not called.
    #[error("has an invalid timeout {0:?}")]
    InvalidTimeout(String),
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

/// The per-attempt timeout of `hook`: `timeout`, default (and for `0s`) [`DEFAULT_TIMEOUT`].
pub fn timeout_of(hook: &CanaryWebhook) -> Result<Duration, HookFailure> {
    match hook.timeout.as_deref().map(str::trim) {
        None | Some("") => Ok(DEFAULT_TIMEOUT),
        Some(t) => match parse_duration(t) {
            Some(d) if d.is_zero() => Ok(DEFAULT_TIMEOUT),
            Some(d) => Ok(d),
            None => Err(HookFailure::InvalidTimeout(t.to_string())),
        },
    }
}

/// POST `payload` to `hook.url`, with the hook's timeout per attempt and up to `hook.retries`
/// retries. `Ok` carries the 2xx status code.
pub async fn call(
    client: &reqwest::Client,
    hook: &CanaryWebhook,
    payload: &Payload,
    retry: &RetryPolicy,
) -> Result<u16, HookFailure> {
    let timeout = timeout_of(hook)?;
    let body = serde_json::to_vec(payload).expect("payload serialises");
    let retries = Retries {
        min_delay: retry.min_delay,
        max_delay: retry.max_delay,
        retries: hook.retries.unwrap_or(0).max(0) as usize,
    };
    match http_post::post_json(client, hook.url.as_str(), None, &body, timeout, retries).await {
        Ok((status, _)) => Ok(status.as_u16()),
        Err(PostError::Status {
            status,
            body,
            attempts,
        }) => Err(HookFailure::Status {
            status: status.as_u16(),
            body,
            attempts,
        }),
        Err(PostError::Transport { error, attempts }) => {
            Err(HookFailure::Transport { error, attempts })
        }
    }
}

/// Run every webhook of `kind` (`CanaryAnalysis::webhooks_of`) sequentially in spec order and
/// combine their answers (Flagger §2.11, §5.1), with the default [`RetryPolicy`].
///
/// - Checks and gates (every kind but `rollback`): `pass` iff every hook answered 2xx; the first
///   failure stops the run and the message names it:
///   `webhook pre-rollout "acceptance" http://x returned 500: <start of body>` or
///   `webhook rollout "load" http://x failed: timed out after 10s`. No hooks of that kind: pass.
/// - `rollback`: `pass` (roll back now) iff *any* hook answered 2xx; the first 2xx stops the run.
///   No hooks: no rollback.
///
/// `phase` goes into the payload. Post-rollout and event hooks use the same rule as checks; the
/// caller only logs their verdict.
pub async fn run_hooks(
    client: &reqwest::Client,
    canary: &Canary,
    kind: HookKind,
    phase: CanaryPhase,
) -> HookVerdict {
    run_hooks_with(client, canary, kind, phase, &RetryPolicy::default()).await
}

/// [`run_hooks`] with an explicit backoff.
pub async fn run_hooks_with(
    client: &reqwest::Client,
    canary: &Canary,
    kind: HookKind,
    phase: CanaryPhase,
    retry: &RetryPolicy,
) -> HookVerdict {
    let k = kind.as_str();
    let hooks: Vec<&CanaryWebhook> = canary
        .spec
        .analysis()
        .map(|a| a.webhooks_of(k).collect())
        .unwrap_or_default();
    let rollback = kind == HookKind::Rollback;
    if hooks.is_empty() {
        return HookVerdict {
            pass: !rollback,
            message: format!("no {k} webhooks"),
        };
    }

    let mut last_refusal = String::new();
    for hook in &hooks {
        let payload = Payload::new(canary, phase, hook);
        // the URL without userinfo or query, which may hold credentials (Events, status, logs)
        let url = crate::source::helm_index::redact_url(&hook.url);
        let who = format!("webhook {k} {:?} {url}", hook.name);
        match call(client, hook, &payload, retry).await {
            Ok(status) => {
                tracing::debug!(canary = %canary.name_any(), hook = %hook.name, status, "{who} passed");
                if rollback {
                    return HookVerdict {
                        pass: true,
                        message: format!("{who} returned {status}: rollback requested"),
                    };
                }
            }
            Err(failure) => {
                let message = format!("{who} {failure}");
                tracing::debug!(canary = %canary.name_any(), hook = %hook.name, "{message}");
                if !rollback {
                    return HookVerdict {
                        pass: false,
                        message,
                    };
                }
                last_refusal = message;
            }
        }
    }
    if rollback {
        return HookVerdict {
            pass: false,
            message: format!("no rollback webhook asked for a rollback (last: {last_refusal})"),
        };
    }
    let names: Vec<String> = hooks.iter().map(|h| format!("{:?}", h.name)).collect();
    HookVerdict {
        pass: true,
        message: format!("{k} webhooks passed: {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    use super::*;

    #[derive(Clone, Debug)]
    struct Hit {
        path: String,
        content_type: String,
        body: Value,
    }

    type Hits = Arc<Mutex<Vec<Hit>>>;

    async fn receiver(
        State(hits): State<Hits>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_string();
        let n = {
            let mut h = hits.lock().unwrap();
            h.push(Hit {
                path: path.clone(),
                content_type: headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            h.iter().filter(|x| x.path == path).count()
        };
        match path.as_str() {
            "/ok" | "/ok2" => (AxStatus::OK, "ok").into_response(),
            "/created" => AxStatus::CREATED.into_response(),
            "/accepted" => AxStatus::ACCEPTED.into_response(),
            "/no-content" => AxStatus::NO_CONTENT.into_response(),
            "/forbidden" => (AxStatus::FORBIDDEN, "Forbidden").into_response(),
            "/fail" => (
                AxStatus::INTERNAL_SERVER_ERROR,
                format!("boom\n{}", "x".repeat(300)),
            )
                .into_response(),
            "/not-implemented" => AxStatus::NOT_IMPLEMENTED.into_response(),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                AxStatus::OK.into_response()
            }
            "/flaky" if n < 3 => (AxStatus::SERVICE_UNAVAILABLE, "warming up").into_response(),
            "/flaky" => AxStatus::OK.into_response(),
            _ => AxStatus::NOT_FOUND.into_response(),
        }
    }

    async fn serve() -> (SocketAddr, Hits) {
        let hits: Hits = Arc::default();
        let app = Router::new().fallback(receiver).with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, hits)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        }
    }

    fn hook(name: &str, kind: &str, url: String) -> Value {
        json!({"name": name, "type": kind, "url": url})
    }

    fn canary(hooks: Vec<Value>) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "webhooks": hooks}
            },
            "status": {
                "phase": "Progressing",
                "lastAppliedSpec": "5d8f7c9b4",
                "trackedConfigs": {"configmap/podinfo-config": "abc123"}
            }
        }))
        .unwrap()
    }

    fn paths(hits: &Hits) -> Vec<String> {
        hits.lock()
            .unwrap()
            .iter()
            .map(|h| h.path.clone())
            .collect()
    }

    #[tokio::test]
    async fn payload_is_flaggers() {
        let (addr, hits) = serve().await;
        let mut with_meta = hook("acceptance", "pre-rollout", format!("http://{addr}/ok"));
        with_meta["metadata"] =
            json!({"type": "bash", "cmd": "curl -s http://podinfo-canary.test:9898/token"});
        let c = canary(vec![
            with_meta,
            hook("plain", "pre-rollout", format!("http://{addr}/no-content")),
        ]);

        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::PreRollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert_eq!(
            v,
            HookVerdict {
                pass: true,
                message: "pre-rollout webhooks passed: \"acceptance\", \"plain\"".into()
            }
        );

        let sum = checksum(c.status.as_ref());
        let h = hits.lock().unwrap().clone();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].content_type, "application/json");
        assert_eq!(
            h[0].body,
            json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": sum,
                "metadata": {"type": "bash", "cmd": "curl -s http://podinfo-canary.test:9898/token"}
            })
        );
        assert_eq!(
            h[1].body,
            json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": sum})
        );
    }

    #[tokio::test]
    async fn any_2xx_passes() {
        let (addr, hits) = serve().await;
        let c = canary(vec![
            hook("a", "", format!("http://{addr}/ok")),
            hook("b", "rollout", format!("http://{addr}/created")),
            hook("c", "rollout", format!("http://{addr}/accepted")),
            hook("d", "rollout", format!("http://{addr}/no-content")),
        ]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::Rollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert!(v.pass, "{v:?}");
        assert_eq!(
            paths(&hits),
            ["/ok", "/created", "/accepted", "/no-content"]
        );
    }

    #[tokio::test]
    async fn first_failure_stops_and_is_named() {
        let (addr, hits) = serve().await;
        let c = canary(vec![
            hook("a", "confirm-promotion", format!("http://{addr}/ok")),
            hook("gate", "confirm-promotion", format!("http://{addr}/fail")),
            hook("c", "confirm-promotion", format!("http://{addr}/ok2")),
        ]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::ConfirmPromotion,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        let body = format!("boom {}", "x".repeat(195));
        assert_eq!(
            v,
            HookVerdict {
                pass: false,
                message: format!(
                    "webhook confirm-promotion \"gate\" http://{addr}/fail returned 500: {body}…"
                ),
            }
        );
        assert_eq!(
            paths(&hits),
            ["/ok", "/fail"],
            "the third hook is not called"
        );
    }

    #[tokio::test]
    async fn gate_refusal_is_not_retried() {
        let (addr, hits) = serve().await;
        let mut h = hook(
            "gate",
            "confirm-rollout",
            format!("http://{addr}/forbidden"),
        );
        h["retries"] = json!(3);
        let c = canary(vec![h]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::ConfirmRollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert_eq!(
            v,
            HookVerdict {
                pass: false,
                message: format!(
                    "webhook confirm-rollout \"gate\" http://{addr}/forbidden returned 403: Forbidden"
                ),
            }
        );
        assert_eq!(paths(&hits).len(), 1);
    }

    #[tokio::test]
    async fn slow_hook_times_out() {
        let (addr, _) = serve().await;
        let mut h = hook("load", "rollout", format!("http://{addr}/slow"));
        h["timeout"] = json!("1s");
        let c = canary(vec![h]);
        let start = Instant::now();
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::Rollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            v,
            HookVerdict {
                pass: false,
                message: format!(
                    "webhook rollout \"load\" http://{addr}/slow failed: timed out after 1s"
                )
            }
        );
    }

    #[tokio::test]
    async fn connection_refused_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = canary(vec![hook("load", "rollout", format!("http://{addr}/"))]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::Rollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert!(!v.pass);
        let prefix = format!("webhook rollout \"load\" http://{addr}/ failed: ");
        assert!(v.message.starts_with(&prefix), "{}", v.message);
        assert!(
            v.message.to_lowercase().contains("connect"),
            "{}",
            v.message
        );
    }

    #[tokio::test]
    async fn retries_until_success() {
        let (addr, hits) = serve().await;
        let mut h = hook("warm", "pre-rollout", format!("http://{addr}/flaky"));
        h["retries"] = json!(3);
        let c = canary(vec![h]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::PreRollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert!(v.pass, "{v:?}");
        assert_eq!(paths(&hits), ["/flaky", "/flaky", "/flaky"]);
        let h = hits.lock().unwrap();
        assert!(
            h.iter().all(|x| x.body == h[0].body),
            "same payload on every attempt"
        );
    }

    #[tokio::test]
    async fn retries_run_out_and_501_is_not_retried() {
        let (addr, hits) = serve().await;
        let mut a = hook("a", "rollout", format!("http://{addr}/fail"));
        a["retries"] = json!(2);
        let v = run_hooks_with(
            &client(),
            &canary(vec![a]),
            HookKind::Rollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert!(!v.pass);
        assert!(v.message.ends_with("(after 3 attempts)"), "{}", v.message);
        assert_eq!(paths(&hits).len(), 3);

        hits.lock().unwrap().clear();
        let mut b = hook("b", "rollout", format!("http://{addr}/not-implemented"));
        b["retries"] = json!(2);
        let v = run_hooks_with(
            &client(),
            &canary(vec![b]),
            HookKind::Rollout,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert_eq!(
            v.message,
            format!("webhook rollout \"b\" http://{addr}/not-implemented returned 501")
        );
        assert_eq!(paths(&hits).len(), 1);
    }

    #[tokio::test]
    async fn rollback_passes_on_any_2xx() {
        let (addr, hits) = serve().await;
        let c = canary(vec![
            hook("closed", "rollback", format!("http://{addr}/forbidden")),
            hook("open", "rollback", format!("http://{addr}/ok")),
            hook("never", "rollback", format!("http://{addr}/ok2")),
        ]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::Rollback,
            CanaryPhase::Progressing,
            &fast(),
        )
        .await;
        assert_eq!(
            v,
            HookVerdict {
                pass: true,
                message: format!(
                    "webhook rollback \"open\" http://{addr}/ok returned 200: rollback requested"
                )
            }
        );
        assert_eq!(
            paths(&hits),
            ["/forbidden", "/ok"],
            "the first 2xx stops the run"
        );
        assert_eq!(hits.lock().unwrap()[0].body["phase"], "Progressing");

        let c = canary(vec![hook(
            "closed",
            "rollback",
            format!("http://{addr}/forbidden"),
        )]);
        let v = run_hooks_with(
            &client(),
            &c,
            HookKind::Rollback,
            CanaryPhase::WaitingPromotion,
            &fast(),
        )
        .await;
        assert!(!v.pass);
        assert_eq!(
            v.message,
            format!(
                "no rollback webhook asked for a rollback (last: webhook rollback \"closed\" http://{addr}/forbidden returned 403: Forbidden)"
            )
        );
    }

    #[tokio::test]
    async fn no_hooks_of_a_kind() {
        let c = canary(vec![hook("a", "rollout", "http://127.0.0.1:1/".into())]);
        let v = run_hooks(
            &client(),
            &c,
            HookKind::PreRollout,
            CanaryPhase::Progressing,
        )
        .await;
        assert_eq!(
            v,
            HookVerdict {
                pass: true,
                message: "no pre-rollout webhooks".into()
            }
        );
        let v = run_hooks(&client(), &c, HookKind::Rollback, CanaryPhase::Progressing).await;
        assert_eq!(
            v,
            HookVerdict {
                pass: false,
                message: "no rollback webhooks".into()
            }
        );
    }

    #[tokio::test]
    async fn invalid_timeout_fails_without_calling() {
        let (addr, hits) = serve().await;
        let mut h = hook("a", "rollout", format!("http://{addr}/ok"));
        h["timeout"] = json!("soon");
        let v = run_hooks(
            &client(),
            &canary(vec![h]),
            HookKind::Rollout,
            CanaryPhase::Progressing,
        )
        .await;
        assert_eq!(
            v.message,
            format!("webhook rollout \"a\" http://{addr}/ok has an invalid timeout \"soon\"")
        );
        assert!(paths(&hits).is_empty());
    }

    #[test]
    fn timeouts() {
        let h = |t: Option<&str>| CanaryWebhook {
            timeout: t.map(String::from),
            ..Default::default()
        };
        assert_eq!(timeout_of(&h(None)), Ok(DEFAULT_TIMEOUT));
        assert_eq!(timeout_of(&h(Some(""))), Ok(DEFAULT_TIMEOUT));
        assert_eq!(timeout_of(&h(Some("0s"))), Ok(DEFAULT_TIMEOUT));
        assert_eq!(timeout_of(&h(Some("30s"))), Ok(Duration::from_secs(30)));
        assert_eq!(timeout_of(&h(Some("2m"))), Ok(Duration::from_secs(120)));
        assert_eq!(
            timeout_of(&h(Some("x"))),
            Err(HookFailure::InvalidTimeout("x".into()))
        );
    }

    #[test]
    fn checksum_tracks_revision_and_configs() {
        let st = |spec: &str, cfg: Option<&[(&str, &str)]>| CanaryStatus {
            last_applied_spec: Some(spec.into()),
            tracked_configs: cfg.map(|c| {
                c.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        };
        let a = checksum(Some(&st("rev1", Some(&[("configmap/a", "1")]))));
        assert_eq!(a.len(), 16);
        assert_eq!(
            a,
            checksum(Some(&st("rev1", Some(&[("configmap/a", "1")])))),
            "stable"
        );
        assert_ne!(
            a,
            checksum(Some(&st("rev2", Some(&[("configmap/a", "1")]))))
        );
        assert_ne!(
            a,
            checksum(Some(&st("rev1", Some(&[("configmap/a", "2")]))))
        );
        assert_eq!(
            checksum(Some(&st("rev1", None))),
            checksum(Some(&st("rev1", Some(&[]))))
        );
        let mut other = st("rev1", None);
        other.failed_checks = 3;
        other.canary_weight = 40;
        assert_eq!(
            checksum(Some(&st("rev1", None))),
            checksum(Some(&other)),
            "only revision + configs count"
        );
    }

    #[test]
    fn event_payload_merges_metadata_reserved_keys_win() {
        let c = canary(vec![]);
        let h = CanaryWebhook {
            name: "ev".into(),
            type_: Some("event".into()),
            url: "http://x".into(),
            metadata: Some(BTreeMap::from([
                ("eventType".to_string(), "mine".to_string()),
                ("team".to_string(), "a".to_string()),
            ])),
            ..Default::default()
        };
        let p = Payload::event(&c, &h, "New revision detected", "Normal", 1_700_000_000_000);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": checksum(c.status.as_ref()),
                "metadata": {
                    "eventMessage": "New revision detected",
                    "eventType": "Normal",
                    "timestamp": "1700000000000",
                    "team": "a"
                }
            })
        );
    }
}
