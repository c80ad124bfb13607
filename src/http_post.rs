//! JSON POST with a timeout per attempt and bounded, backed-off retries (backon): the one
//! transport under webhooks (`webhook.rs`) and notifiers (`notify/`).
//!
//! Any 2xx is success. Retried: transport errors (connect, timeout), 429 and 5xx except 501,
//! honouring a `Retry-After: <seconds>` (capped at the maximum delay). Final: 4xx and 501.
//! Error texts never contain the URL (a webhook URL's path is often its secret) and quote at
//! most [`BODY_QUOTE`] characters of a response body, on one line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{IntoUrl, StatusCode};

/// Longest piece of a response body quoted in messages, in characters.
pub const BODY_QUOTE: usize = 200;
/// Most bytes of a response body read.
const BODY_LIMIT: usize = 64 * 1024;

/// Delays between attempts and how many retries follow the first attempt.
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub retries: usize,
}

/// Why a POST failed, after `attempts` attempts.
#[derive(Debug)]
pub enum PostError {
    /// A non-2xx answer; `body` is quoted on one line.
    Status {
        status: StatusCode,
        body: String,
        attempts: usize,
    },
    /// No answer: connection refused, timed out (`"timed out after 10s"`), ...
    Transport { error: String, attempts: usize },
}

/// One failed attempt, with what the retry policy needs.
enum AttemptError {
    Status {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    Transport {
        error: String,
        retryable: bool,
    },
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS
                    || (status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED)
            }
            AttemptError::Transport { retryable, .. } => *retryable,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            AttemptError::Transport { .. } => None,
        }
    }
}

/// POST `body` (JSON) to `url`, with `authorization` if given. `Ok` carries the 2xx status and
/// the start of the response body (Slack's Web API answers 200 `{"ok": false}` on errors).
pub async fn post_json(
    client: &reqwest::Client,
    url: impl IntoUrl + Clone,
    authorization: Option<&HeaderValue>,
    body: &[u8],
    timeout: Duration,
    retries: Retries,
) -> Result<(StatusCode, String), PostError> {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(AUTHORIZATION, a.clone());
    }
    post_json_with_headers(client, url, &headers, body, timeout, retries).await
}

/// [`post_json`] with any extra `headers` (`Authorization`, `X-Signature`, a Provider Secret's
/// `headers`); `Content-Type: application/json` unless `headers` sets one.
pub async fn post_json_with_headers(
    client: &reqwest::Client,
    url: impl IntoUrl + Clone,
    headers: &HeaderMap,
    body: &[u8],
    timeout: Duration,
    retries: Retries,
) -> Result<(StatusCode, String), PostError> {
    let attempts = AtomicUsize::new(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(retries.min_delay)
        .with_max_delay(retries.max_delay)
        .with_max_times(retries.retries);
    let max_delay = retries.max_delay;
    let result = (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt(client, url.clone(), headers, body, timeout).await
    })
    .retry(backoff)
    .when(AttemptError::retryable)
    .adjust(|e, next| next.map(|d| e.retry_after().map_or(d, |ra| ra.min(max_delay))))
    .await;
    let attempts = attempts.load(Ordering::Relaxed);
    result.map_err(|e| match e {
        AttemptError::Status { status, body, .. } => PostError::Status {
            status,
            body,
            attempts,
        },
        AttemptError::Transport { error, .. } => PostError::Transport { error, attempts },
    })
}

async fn attempt(
    client: &reqwest::Client,
    url: impl IntoUrl,
    headers: &HeaderMap,
    body: &[u8],
    timeout: Duration,
) -> Result<(StatusCode, String), AttemptError> {
    let transport = |e: reqwest::Error| {
        let retryable = !e.is_builder();
        let error = if e.is_timeout() {
            format!("timed out after {}", duration_text(timeout))
        } else {
            crate::util::chain(&e.without_url())
        };
        AttemptError::Transport { error, retryable }
    };
    let mut req = client.post(url).timeout(timeout).body(body.to_vec());
    if !headers.contains_key(CONTENT_TYPE) {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    req = req.headers(headers.clone());
    let mut resp = req.send().await.map_err(transport)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut raw = Vec::new();
    // The body is only quoted: a read error or a huge body just shortens it.
    while raw.len() < BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    if status.is_success() {
        return Ok((status, text));
    }
    Err(AttemptError::Status {
        status,
        body: quote(&text),
        retry_after,
    })
}

/// `10s`, or `1500ms` below whole seconds.
pub fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The body on one line, at most [`BODY_QUOTE`] characters.
pub fn quote(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(BODY_QUOTE) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}
