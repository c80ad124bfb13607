//! The one HTTP call every notifier makes: `POST <address>` with a JSON body, an optional
//! `Authorization: Bearer <token>`, an optional proxy, a per-attempt timeout and bounded retries.
//!
//! Flagger (`pkg/notifier/client.go`) posts once with a 5 s timeout and counts only `200` as
//! success. pennant: any 2xx is success; a per-attempt timeout of 10 s; up to 3 attempts with
//! exponential backoff (1 s doubling, at most 4 s) on connection errors, timeouts, 429 and 5xx
//! except 501, honouring `Retry-After: <seconds>` (capped at the maximum delay). A 4xx is final:
//! retrying a message the service refused does not make it acceptable.
//!
//! Webhook URLs of chat services carry their secret in the path, so messages and `Debug` output
//! show only `scheme://host[:port]/…` (see [`redact`]).

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Serialize;

use super::NotifyError;
use crate::http_post::{self, PostError, Retries};

/// Timeout and retries of one alert delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Per attempt, connection included. Default 10 s.
    pub timeout: Duration,
    /// Attempts in all, at least 1. Default 3.
    pub attempts: usize,
    /// First backoff delay; doubles after each attempt. Default 1 s.
    pub min_delay: Duration,
    /// Longest backoff delay, also the cap on `Retry-After`. Default 4 s.
    pub max_delay: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            timeout: Duration::from_secs(10),
            attempts: 3,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
        }
    }
}

/// Where a notifier posts: the URL, the token, and the client (a dedicated one when the
/// provider sets a proxy).
#[derive(Clone)]
pub(crate) struct Endpoint {
    kind: &'static str,
    client: reqwest::Client,
    url: Url,
    token: Option<String>,
    policy: DeliveryPolicy,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("kind", &self.kind)
            .field("url", &redact(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish()
    }
}

/// `scheme://host[:port]/…`: enough to tell services apart in logs, without the secret path.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}/…", url.scheme())
}

/// Parse a webhook or proxy address: an absolute `http` or `https` URL with a host (Flagger uses
/// Go's `url.ParseRequestURI`). The error is the reason, without the address (it may be secret).
pub(crate) fn parse_http_url(address: &str) -> Result<Url, String> {
    let url = Url::parse(address.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has scheme {:?}; an http or https URL is required",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

/// A client that sends everything through `proxy` (an `http`, `https` or `socks5` URL).
fn proxied_client(proxy: &str) -> Result<reqwest::Client, String> {
    let proxy_url = Url::parse(proxy.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
    let proxy = reqwest::Proxy::all(proxy_url)
        .map_err(|e| format!("is not a usable proxy: {}", crate::util::chain(&e)))?;
    reqwest::Client::builder()
        .proxy(proxy)
        .build()
        .map_err(|e| {
            format!(
                "could not build an HTTP client with this proxy: {}",
                crate::util::chain(&e)
            )
        })
}

impl Endpoint {
    /// `proxy`: when set, calls go through a dedicated client with that proxy; otherwise through
    /// `http`. The error is the reason the proxy is unusable.
    pub(crate) fn new(
        kind: &'static str,
        http: &reqwest::Client,
        url: Url,
        token: Option<String>,
        proxy: Option<&str>,
        policy: DeliveryPolicy,
    ) -> Result<Self, String> {
        let client = match proxy.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => proxied_client(p)?,
            None => http.clone(),
        };
        Ok(Endpoint {
            kind,
            client,
            url,
            token: token.filter(|t| !t.is_empty()),
            policy,
        })
    }

    /// The endpoint's URL (it may carry a secret path: never put it in a message).
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The token, if any (never put it in a message).
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `kind redacted-url`, for logs.
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.kind, redact(&self.url))
    }

    /// POST `payload` as JSON. `Ok` carries the start of the 2xx response body (Slack's Web
    /// API answers 200 with `{"ok": false}` on errors; the caller may look).
    pub(crate) async fn post_json<T: Serialize + ?Sized>(
        &self,
        payload: &T,
    ) -> Result<String, NotifyError> {
        let body = serde_json::to_vec(payload).expect("alert payloads serialise");
        let authorization = match &self.token {
            Some(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    NotifyError::Transport {
                        notifier: self.describe(),
                        error: "the token is not a valid HTTP header value".into(),
                        attempts: 0,
                    }
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut headers = HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert(AUTHORIZATION, a);
        }
        self.post_with_headers(&self.url, &body, &headers).await
    }

    /// POST the JSON `body` (already serialised: a signature covers these bytes) to `url` (the
    /// endpoint's, or one derived from it, e.g. a commit-status API) with exactly `headers` (the
    /// endpoint's token is not added). Retries and errors as [`Endpoint::post_json`]; errors
    /// name only `kind scheme://host/…` of the endpoint.
    pub(crate) async fn post_with_headers(
        &self,
        url: &Url,
        body: &[u8],
        headers: &HeaderMap,
    ) -> Result<String, NotifyError> {
        let p = &self.policy;
        let retries = Retries {
            min_delay: p.min_delay,
            max_delay: p.max_delay,
            retries: p.attempts.max(1) - 1,
        };
        match http_post::post_json_with_headers(
            &self.client,
            url.clone(),
            headers,
            body,
            p.timeout,
            retries,
        )
        .await
        {
            Ok((_, text)) => Ok(text),
            Err(PostError::Status {
                status,
                body,
                attempts,
            }) => Err(NotifyError::Status {
                notifier: self.describe(),
                status: status.as_u16(),
                body,
                attempts,
            }),
            Err(PostError::Transport { error, attempts }) => Err(NotifyError::Transport {
                notifier: self.describe(),
                error,
                attempts,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::super::testutil::{Receiver, client, fast};
    use super::*;

    fn endpoint(url: &str, token: Option<&str>, proxy: Option<&str>) -> Endpoint {
        Endpoint::new(
            "slack",
            &client(),
            parse_http_url(url).unwrap(),
            token.map(Into::into),
            proxy,
            fast(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn posts_json_with_bearer_token() {
        let r = Receiver::start().await;
        let e = endpoint(&r.url("/services/T0/B0/secret"), Some("xoxb-1"), None);
        e.post_json(&json!({"a": 1})).await.unwrap();
        let hits = r.hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].method, "POST");
        assert_eq!(hits[0].path, "/services/T0/B0/secret");
        assert_eq!(hits[0].header("content-type"), "application/json");
        assert_eq!(hits[0].header("authorization"), "Bearer xoxb-1");
        assert_eq!(hits[0].body, json!({"a": 1}));
    }

    #[tokio::test]
    async fn no_token_no_authorization_header() {
        let r = Receiver::start().await;
        endpoint(&r.url("/x"), Some(""), None)
            .post_json(&json!({}))
            .await
            .unwrap();
        assert_eq!(r.hits()[0].header("authorization"), "");
    }

    #[tokio::test]
    async fn retries_on_500_then_succeeds() {
        let r = Receiver::start().await;
        r.answer(&[(500, "boom"), (503, "busy")]);
        endpoint(&r.url("/x"), None, None)
            .post_json(&json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!(r.hits().len(), 3, "two failures, then the 200");
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_naming_status_and_body_not_the_secret_path() {
        let r = Receiver::start().await;
        r.answer(&[(500, "a"), (502, "b"), (503, "no capacity\n right now")]);
        let err = endpoint(&r.url("/hooks/SECRET"), None, None)
            .post_json(&json!({}))
            .await
            .unwrap_err();
        assert_eq!(r.hits().len(), 3);
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "slack http://{}/… returned 503: no capacity right now (after 3 attempts)",
                r.addr
            )
        );
        assert!(!msg.contains("SECRET"));
    }

    #[tokio::test]
    async fn client_error_is_final() {
        let r = Receiver::start().await;
        r.answer(&[(404, "no_team")]);
        let err = endpoint(&r.url("/x"), None, None)
            .post_json(&json!({}))
            .await
            .unwrap_err();
        assert_eq!(r.hits().len(), 1, "a 4xx is not retried");
        assert!(matches!(
            err,
            NotifyError::Status { status: 404, ref body, attempts: 1, .. } if body == "no_team"
        ));
        assert_eq!(
            err.to_string(),
            format!("slack http://{}/… returned 404: no_team", r.addr)
        );
    }

    #[tokio::test]
    async fn not_implemented_is_final_too_many_requests_is_retried() {
        let r = Receiver::start().await;
        r.answer(&[(501, "")]);
        assert!(
            endpoint(&r.url("/x"), None, None)
                .post_json(&json!({}))
                .await
                .is_err()
        );
        assert_eq!(r.hits().len(), 1);

        let r = Receiver::start().await;
        r.answer(&[(429, "slow down")]);
        endpoint(&r.url("/x"), None, None)
            .post_json(&json!({}))
            .await
            .unwrap();
        assert_eq!(r.hits().len(), 2);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        // Bind then drop: nothing listens on this port any more.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = endpoint(&format!("http://{addr}/hook/SECRET"), None, None)
            .post_json(&json!({}))
            .await
            .unwrap_err();
        let NotifyError::Transport {
            attempts, error, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*attempts, 3);
        assert!(!error.contains("SECRET"), "{error}");
        assert!(err.to_string().ends_with("(after 3 attempts)"), "{err}");
    }

    #[tokio::test]
    async fn timeout_per_attempt() {
        let r = Receiver::start().await;
        r.delay(Duration::from_secs(2));
        let e = Endpoint::new(
            "msteams",
            &client(),
            parse_http_url(&r.url("/slow")).unwrap(),
            None,
            None,
            DeliveryPolicy {
                timeout: Duration::from_millis(200),
                attempts: 1,
                ..fast()
            },
        )
        .unwrap();
        let started = Instant::now();
        let err = e.post_json(&json!({})).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            format!("msteams http://{}/… failed: timed out after 200ms", r.addr)
        );
    }

    #[tokio::test]
    async fn goes_through_the_proxy() {
        // The receiver plays an HTTP proxy: a request for an http:// URL through a proxy is sent
        // to the proxy in absolute form. The target host does not exist.
        let proxy = Receiver::start().await;
        let e = endpoint(
            "http://hooks.example.invalid/services/T0",
            Some("t"),
            Some(&proxy.url("")),
        );
        e.post_json(&json!({"via": "proxy"})).await.unwrap();
        let hits = proxy.hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].uri, "http://hooks.example.invalid/services/T0");
        assert_eq!(hits[0].header("authorization"), "Bearer t");
        assert_eq!(hits[0].body, json!({"via": "proxy"}));
    }

    #[test]
    fn addresses_are_validated_without_echoing_them() {
        assert!(parse_http_url("https://hooks.slack.com/services/x").is_ok());
        assert_eq!(
            parse_http_url("hooks.slack.com/services/x").unwrap_err(),
            "is not a valid URL: relative URL without a base"
        );
        assert_eq!(
            parse_http_url("ftp://example.com/x").unwrap_err(),
            "has scheme \"ftp\"; an http or https URL is required"
        );
        assert!(parse_http_url("").is_err());
    }

    #[test]
    fn redact_keeps_scheme_host_and_port() {
        let u = Url::parse("https://hooks.slack.com/services/T/B/SECRET?x=1").unwrap();
        assert_eq!(redact(&u), "https://hooks.slack.com/…");
        let u = Url::parse("http://127.0.0.1:8080/SECRET").unwrap();
        assert_eq!(redact(&u), "http://127.0.0.1:8080/…");
    }

    #[test]
    fn debug_hides_token_and_path() {
        let e = endpoint(
            "https://hooks.slack.com/services/SECRET",
            Some("xoxb"),
            None,
        );
        let d = format!("{e:?}");
        assert!(!d.contains("SECRET") && !d.contains("xoxb"), "{d}");
    }
}
