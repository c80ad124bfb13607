//! Plumbing shared by the MetricTemplate providers that speak HTTP (Prometheus with credentials,
//! Datadog, Graphite, InfluxDB, New Relic, Dynatrace, Splunk): addresses, credentials from the
//! template's Secret, custom headers, the TLS choice, one request with a timeout, and the same
//! failure classes everywhere.
//!
//! | What happened | [`QueryError`] |
//! |---|---|
//! | connection refused, DNS, TLS, timeout, HTTP 5xx or 429 | `Unavailable` |
//! | HTTP 4xx (bad query, bad credentials) | `Rejected` |
//! | a 2xx answer that is not the service's format | `Invalid` |

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use super::QueryError;
use super::template::collapse_whitespace;
use crate::api::MetricTemplateProvider;
use crate::util::chain;

/// Longest piece of an answer quoted in messages, in characters.
const BODY_QUOTE: usize = 200;

/// Why a provider cannot be built from a MetricTemplate. The text names the field or the
/// Secret key and the problem; callers prefix it with `MetricTemplate <ns>/<name>: `.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// `spec.provider.type` is not one of [`super::SUPPORTED_PROVIDER_TYPES`].
    #[error(
        "spec.provider.type {0:?} is not supported by pennant (supported: prometheus, influxdb, datadog, newrelic, graphite, dynatrace, splunk)"
    )]
    Unsupported(String),
    /// The provider has no default address and `spec.provider.address` is unset.
    #[error("spec.provider.address is required for provider type {0}")]
    MissingAddress(String),
    /// `spec.provider.address` is not an absolute http(s) URL.
    #[error("spec.provider.address {address:?} is not a valid URL: {why}")]
    BadAddress { address: String, why: String },
    /// The provider needs credentials and `spec.provider.secretRef` is unset.
    #[error("spec.provider.secretRef is required for provider type {kind} (keys: {keys})")]
    MissingSecretRef { kind: String, keys: String },
    /// The Secret lacks a key the provider needs.
    #[error("secret {secret:?} has no key {key:?}")]
    MissingSecretKey { secret: String, key: String },
    /// The Secret lacks every accepted set of keys; `want` lists them.
    #[error("secret {secret:?} has {want}")]
    MissingSecretKeys { secret: String, want: String },
    /// A Secret value that cannot be used (not UTF-8, not a number, ...).
    #[error("secret {secret:?} key {key:?} is {problem}")]
    BadSecretKey {
        secret: String,
        key: String,
        problem: String,
    },
    /// A `spec.provider.headers` entry that is not a valid HTTP header.
    #[error("spec.provider.headers[{name:?}]: {why}")]
    BadHeader { name: String, why: String },
    /// The metric `interval` is not a duration (providers that derive a time window from it).
    #[error(
        "metric interval {0:?} is not a duration such as 30s, 1m or 1h30m (provider type {1} derives its time window from it)"
    )]
    BadInterval(String, String),
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Http(String),
}

/// The credentials Secret of a MetricTemplate: its name (for messages) and its `data`.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// Name of the Secret (`spec.provider.secretRef.name`).
    pub name: &'a str,
    /// The Secret's `data`, decoded (raw bytes per key).
    pub data: &'a BTreeMap<String, Vec<u8>>,
}

impl Credentials<'_> {
    /// The value of `key` as text, trimmed of surrounding whitespace (a token stored with
    /// `echo` carries a trailing newline that no HTTP header accepts). `Ok(None)` when the
    /// key is absent; an error when it is not UTF-8.
    pub fn get(&self, key: &str) -> Result<Option<String>, ProviderError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(raw) => match std::str::from_utf8(raw) {
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(_) => Err(ProviderError::BadSecretKey {
                    secret: self.name.to_string(),
                    key: key.to_string(),
                    problem: "not UTF-8 text".into(),
                }),
            },
        }
    }

    /// The value of `key`, which must be present.
    pub fn require(&self, key: &str) -> Result<String, ProviderError> {
        self.get(key)?
            .ok_or_else(|| ProviderError::MissingSecretKey {
                secret: self.name.to_string(),
                key: key.to_string(),
            })
    }
}

/// `provider.address` parsed as an absolute http(s) URL, or `default` when it is unset.
/// The path is kept (a reverse-proxy prefix); a trailing `/` is dropped so endpoint paths can
/// be appended.
pub(crate) fn address(
    spec: &MetricTemplateProvider,
    default: Option<&str>,
) -> Result<Url, ProviderError> {
    let raw = match (spec.address(), default) {
        (Some(a), _) => a,
        (None, Some(d)) => d,
        (None, None) => return Err(ProviderError::MissingAddress(spec.type_.clone())),
    };
    parse_url(raw)
}

pub(crate) fn parse_url(raw: &str) -> Result<Url, ProviderError> {
    let bad = |why: String| ProviderError::BadAddress {
        address: raw.to_string(),
        why,
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("expected http(s)://host[:port][/path]".into()));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// `base` with `path` (starting with `/`) appended to its own path.
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// `spec.provider.headers` as a header map (every value of a name is sent, as Go's
/// `http.Header`).
pub(crate) fn custom_headers(spec: &MetricTemplateProvider) -> Result<HeaderMap, ProviderError> {
    let mut map = HeaderMap::new();
    for (name, value) in spec.header_pairs() {
        let bad = |why: &str| ProviderError::BadHeader {
            name: name.to_string(),
            why: why.to_string(),
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let v = HeaderValue::from_str(value).map_err(|_| bad("invalid header value"))?;
        map.append(n, v);
    }
    Ok(map)
}

/// A header value built from a secret (a token): the error names the key, never the value.
pub(crate) fn secret_header(
    creds: &Credentials<'_>,
    key: &str,
    value: &str,
) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ProviderError::BadSecretKey {
        secret: creds.name.to_string(),
        key: key.to_string(),
        problem: "not usable in an HTTP header (control characters)".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The client to use: `shared` unless the template asks for `insecureSkipVerify`, in which
/// case a process-wide client that accepts any certificate (built on first use).
pub(crate) fn client(
    shared: &reqwest::Client,
    spec: &MetricTemplateProvider,
) -> Result<reqwest::Client, ProviderError> {
    if !spec.insecure_skip_verify() {
        return Ok(shared.clone());
    }
    static INSECURE: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = INSECURE.get() {
        return Ok(c.clone());
    }
    let c = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| ProviderError::Http(chain(&e)))?;
    Ok(INSECURE.get_or_init(|| c).clone())
}

/// A received answer, body read in full.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: String,
}

/// Send `req` and read the body, all within `timeout`.
pub(crate) async fn fetch(
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Answer, QueryError> {
    let run = async {
        let resp = req
            .send()
            .await
            .map_err(|e| QueryError::Unavailable(transport_error(&e)))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| {
            QueryError::Unavailable(format!("reading the response: {}", transport_error(&e)))
        })?;
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| QueryError::Unavailable(format!("timed out after {timeout:?}")))?
}

/// `Err` for a non-2xx status: 5xx and 429 are `Unavailable` (the service cannot answer now),
/// other 4xx are `Rejected` (the query or the credentials are wrong). `what` is the service's
/// own error text, quoted after the status.
pub(crate) fn check_status(status: StatusCode, what: &str) -> Result<(), QueryError> {
    if status.is_success() {
        return Ok(());
    }
    let msg = if what.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {what}", status.as_u16())
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(QueryError::Unavailable(msg))
    } else if status.is_client_error() {
        Err(QueryError::Rejected(msg))
    } else {
        Err(QueryError::Invalid(msg))
    }
}

/// The cause of a failed request, without the request URL (it may carry the query, and the
/// caller names the server already).
pub(crate) fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    match std::error::Error::source(e) {
        Some(cause) if e.is_request() || e.is_connect() => {
            format!("error sending request: {}", chain(cause))
        }
        Some(cause) => chain(cause),
        None => e.to_string(),
    }
}

/// `body` on one line, cut to [`BODY_QUOTE`] characters, for messages.
pub(crate) fn quote(body: &str) -> String {
    let one_line = collapse_whitespace(body);
    match one_line.char_indices().nth(BODY_QUOTE) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Parse the metric interval for providers that derive a time window from it.
pub(crate) fn parse_interval(
    interval: &str,
    kind: &str,
) -> Result<std::time::Duration, ProviderError> {
    crate::api::parse_duration(interval)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ProviderError::BadInterval(interval.to_string(), kind.to_string()))
}

/// The credentials a provider requires, or the error naming `keys`.
pub(crate) fn required_secret<'a>(
    secret: Option<Credentials<'a>>,
    kind: &str,
    keys: &str,
) -> Result<Credentials<'a>, ProviderError> {
    secret.ok_or_else(|| ProviderError::MissingSecretRef {
        kind: kind.to_string(),
        keys: keys.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A local axum server for provider tests.

    use std::net::SocketAddr;

    pub fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    pub fn http() -> reqwest::Client {
        install_crypto();
        reqwest::Client::new()
    }

    /// Serve `app` on 127.0.0.1 and return `http://addr`.
    pub async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A self-signed certificate for `127.0.0.1` / `localhost` and its key (test fixture only).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUb7R/uAM04KsOWyBo4uKR/oFwTvswCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyOTE1MTE0NVoYDzIxMjYxMTA1
MTUxMTQ1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQVnyXHiickTgly7mGsD1gtTxj2XHx3IKTk1ZiiLrXe8BB9zwarObgT
pdZXYN23UhDceYxR36YMCjjf8uqrqFfko28wbTAdBgNVHQ4EFgQUovWk/vFiUwQZ
mIig6BhKyWXPOYUwHwYDVR0jBBgwFoAUovWk/vFiUwQZmIig6BhKyWXPOYUwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI
zj0EAwIDSAAwRQIgVzRSoQqDvlxEe5jtbTKBqJmT908TGXMelNLIsTKl9RQCIQDh
xa1mJ/R/AbvGzUwdg1tlrOPWNVak7GF7OJQxYRBD2w==
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOh1RKdEG6TY7CW5b
BtVtDL2bm71RXBkBziaVBvEG9nGhRANCAAQVnyXHiickTgly7mGsD1gtTxj2XHx3
IKTk1ZiiLrXe8BB9zwarObgTpdZXYN23UhDceYxR36YMCjjf8uqrqFfk
-----END PRIVATE KEY-----
";

    /// An HTTPS server with a self-signed certificate answering every request with `body`
    /// as JSON; returns `https://127.0.0.1:port`. Plain rustls over blocking sockets, one
    /// thread per connection.
    pub fn serve_tls_json(body: &'static str) -> String {
        use std::io::{Read, Write};

        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        install_crypto();
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        format!("https://127.0.0.1:{port}")
    }

    /// An address where nothing listens.
    pub fn refused() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_their_path_without_trailing_slash() {
        let spec = |a: &str| MetricTemplateProvider {
            type_: "graphite".into(),
            address: Some(a.into()),
            ..Default::default()
        };
        let u = address(&spec("http://graphite:8080/proxy/"), None).unwrap();
        assert_eq!(
            endpoint(&u, "/render").as_str(),
            "http://graphite:8080/proxy/render"
        );
        let u = address(&spec("https://api.datadoghq.com"), None).unwrap();
        assert_eq!(
            endpoint(&u, "/api/v1/query").as_str(),
            "https://api.datadoghq.com/api/v1/query"
        );
        assert!(matches!(
            address(&spec("graphite:8080"), None),
            Err(ProviderError::BadAddress { .. })
        ));
        let none = MetricTemplateProvider {
            type_: "graphite".into(),
            ..Default::default()
        };
        assert_eq!(
            address(&none, None),
            Err(ProviderError::MissingAddress("graphite".into()))
        );
        assert_eq!(
            address(&none, Some("http://d")).unwrap().as_str(),
            "http://d/"
        );
    }

    #[test]
    fn credentials_are_trimmed_and_named_in_errors() {
        let data = BTreeMap::from([
            ("token".to_string(), b"abc\n".to_vec()),
            ("bin".to_string(), vec![0xff, 0xfe]),
        ]);
        let c = Credentials {
            name: "auth",
            data: &data,
        };
        assert_eq!(c.get("token"), Ok(Some("abc".into())));
        assert_eq!(c.get("nope"), Ok(None));
        assert_eq!(
            c.require("nope").unwrap_err().to_string(),
            "secret \"auth\" has no key \"nope\""
        );
        assert_eq!(
            c.get("bin").unwrap_err().to_string(),
            "secret \"auth\" key \"bin\" is not UTF-8 text"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(check_status(StatusCode::OK, "x"), Ok(()));
        assert_eq!(
            check_status(StatusCode::BAD_REQUEST, "bad query"),
            Err(QueryError::Rejected("HTTP 400: bad query".into()))
        );
        assert_eq!(
            check_status(StatusCode::FORBIDDEN, ""),
            Err(QueryError::Rejected("HTTP 403".into()))
        );
        assert_eq!(
            check_status(StatusCode::TOO_MANY_REQUESTS, "slow down"),
            Err(QueryError::Unavailable("HTTP 429: slow down".into()))
        );
        assert_eq!(
            check_status(StatusCode::BAD_GATEWAY, ""),
            Err(QueryError::Unavailable("HTTP 502".into()))
        );
    }

    #[test]
    fn custom_headers_follow_go_http_header() {
        let spec: MetricTemplateProvider = serde_json::from_value(serde_json::json!({
            "type": "prometheus",
            "headers": {"X-Scope-OrgID": ["a", "b"]}
        }))
        .unwrap();
        let h = custom_headers(&spec).unwrap();
        let v: Vec<_> = h.get_all("x-scope-orgid").iter().collect();
        assert_eq!(v, vec!["a", "b"]);
        let spec: MetricTemplateProvider = serde_json::from_value(serde_json::json!({
            "type": "prometheus",
            "headers": {"Bad Name": ["a"]}
        }))
        .unwrap();
        assert_eq!(
            custom_headers(&spec).unwrap_err().to_string(),
            "spec.provider.headers[\"Bad Name\"]: invalid header name"
        );
    }
}
