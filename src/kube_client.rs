//! The Kubernetes client the controller uses: kube's default stack plus a bound on the requests
//! in flight ([`DEFAULT_MAX_IN_FLIGHT`]), an optional client-side rate limit (Flagger's
//! `-kubeconfig-qps` / `-kubeconfig-burst`, off unless set) and a bound on the wait for a
//! response's headers ([`RESPONSE_HEADERS_TIMEOUT`]).

use std::time::Duration;

/// How long a request waits for its response's headers before it fails. A watch's body may then
/// stream for its whole `timeoutSeconds`: only the wait for the answer is bounded.
///
/// Why: kube sets no read timeout (watch streams have the watcher's idle timeout instead), so a
/// request sent while the API server restarts could wait forever for an answer. Seen in
/// `tests/e2e_faults.rs` (API server killed mid-release): the Deployments watch issued as the
/// server died never returned, the watcher never re-listed, and the Canary's primary stayed
/// "not ready" in the cache until the progress deadline rolled the release back. Failed, the
/// request is retried by the watcher's backoff. client-go bounds the same wait with HTTP/2
/// health-check pings (`ReadIdleTimeout` 30 s); 30 s here.
pub const RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests waiting for their answer at once (`--kubeconfig-max-in-flight`'s default); the
/// others wait in the client. kube's client speaks HTTP/1.1, one connection per request in
/// flight, so this also bounds the connections opened and kept idle (and their TLS buffers). A
/// watch holds its place only until its response's headers arrive, not while its body streams.
/// 32 is what `e2e/tools/ssa-loop.py` keeps in flight: the local API server's floor
/// (docs/bench/canary.md) is measured with it.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

use anyhow::Context as _;

/// The client's limits, from the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Requests per second on average; `None`: no client-side rate limit (the API server's
    /// Priority and Fairness protects it, as controller-runtime ≥ 0.21 assumes by default).
    pub qps: Option<f64>,
    /// With `qps`: requests allowed at once before the rate applies.
    pub burst: u32,
    /// Requests waiting for their answer at once (at least 1).
    pub max_in_flight: usize,
}

impl Limits {
    /// From the flags: a `qps` of 0 or below means no rate limit (client-go's convention for a
    /// negative QPS; Flagger's `-kubeconfig-qps 100` keeps its meaning when given).
    ///
    /// Errors: a `qps` that is not finite, a `burst` of 0 with a rate, `max_in_flight` 0.
    pub fn from_flags(qps: f64, burst: u32, max_in_flight: usize) -> anyhow::Result<Limits> {
        anyhow::ensure!(qps.is_finite(), "--kubeconfig-qps must be a number");
        let qps = (qps > 0.0).then_some(qps);
        anyhow::ensure!(
            qps.is_none() || burst > 0,
            "--kubeconfig-burst must be positive with a --kubeconfig-qps"
        );
        anyhow::ensure!(
            max_in_flight > 0,
            "--kubeconfig-max-in-flight must be positive"
        );
        Ok(Limits {
            qps,
            burst,
            max_in_flight,
        })
    }
}

/// A client with `limits`: at most `max_in_flight` requests waiting for their answers and,
/// with a `qps`, tower's fixed-window limit of `burst` requests per `burst / qps` seconds (a
/// watch counts once, when it starts). Each request waits at most [`RESPONSE_HEADERS_TIMEOUT`]
/// for its answer (the wait for the limits not counted).
///
/// Errors: a `config` kube cannot build a client from.
pub fn limited(config: kube::Config, limits: Limits) -> anyhow::Result<kube::Client> {
    build(config, limits, RESPONSE_HEADERS_TIMEOUT)
}

fn build(
    config: kube::Config,
    limits: Limits,
    headers_timeout: Duration,
) -> anyhow::Result<kube::Client> {
    let builder = kube::client::ClientBuilder::try_from(config)
        .context("kubernetes client")?
        .with_layer(&tower::timeout::TimeoutLayer::new(headers_timeout))
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(
            limits.max_in_flight,
        ));
    Ok(match limits.qps {
        Some(qps) => {
            let window = Duration::from_secs_f64(f64::from(limits.burst) / qps);
            builder
                .with_layer(&tower::limit::RateLimitLayer::new(
                    u64::from(limits.burst),
                    window,
                ))
                .build()
        }
        None => builder.build(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn test_limits() -> Limits {
        Limits::from_flags(100.0, 10, 8).unwrap()
    }

    /// A client with Flagger's rate limit flags and the default bound in flight.
    fn rate_limited(url: &str, qps: f64, burst: u32) -> kube::Client {
        let limits = Limits::from_flags(qps, burst, DEFAULT_MAX_IN_FLIGHT).unwrap();
        limited(kube::Config::new(url.parse().unwrap()), limits).unwrap()
    }

    /// A server that accepts the connection and never answers (an API server going away, as
    /// `tests/e2e_faults.rs` restarts it): the request fails after the headers timeout, while a
    /// watch whose answer came streams on past it.
    #[tokio::test]
    async fn an_unanswered_request_fails_after_the_headers_timeout() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let held = Arc::new(std::sync::Mutex::new(vec![]));
        let h = held.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = silent.accept().await {
                h.lock().unwrap().push(sock);
            }
        });
        let timeout = Duration::from_millis(700);
        let client = build(
            kube::Config::new(url.parse().unwrap()),
            test_limits(),
            timeout,
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = client.apiserver_version().await.unwrap_err();
        let took = start.elapsed();
        assert!(
            took >= timeout && took < Duration::from_secs(5),
            "failed after {took:?}: {err}"
        );
        assert_eq!(
            held.lock().unwrap().len(),
            1,
            "the request reached the server"
        );

        // a streaming answer (a watch) outlives the timeout: only the headers are timed
        let app = axum::Router::new().route(
            "/stream",
            axum::routing::get(|| async {
                let chunks = futures::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Some((Ok::<_, std::io::Error>(format!("chunk{i}\n")), i + 1))
                });
                axum::body::Body::from_stream(chunks)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let client = build(
            kube::Config::new(url.parse().unwrap()),
            test_limits(),
            timeout,
        )
        .unwrap();
        let req = axum::http::Request::get("/stream").body(vec![]).unwrap();
        let start = std::time::Instant::now();
        let body = client.request_text(req).await.unwrap();
        assert_eq!(body, "chunk0\nchunk1\nchunk2\n");
        assert!(start.elapsed() > timeout, "{:?}", start.elapsed());
    }

    /// Burst 3 at 6 QPS: three requests at once, then the next window 0.5 s later.
    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_the_next_window() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/version",
            axum::routing::get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"# }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let client = rate_limited(&url, 6.0, 3);
        let start = std::time::Instant::now();
        let calls = (0..6).map(|_| client.apiserver_version());
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let took = start.elapsed();
        assert_eq!(hits.load(Ordering::SeqCst), 6);
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "6 requests at burst 3 / 6 QPS took {took:?}"
        );
        // 60 requests within a burst of 100 wait for no window (at 6 QPS they would take 9.5 s);
        // the bound leaves room for a loaded machine.
        let unlimited = std::time::Instant::now();
        let fast = rate_limited(&url, 1000.0, 100);
        futures::future::join_all((0..60).map(|_| fast.apiserver_version())).await;
        assert_eq!(hits.load(Ordering::SeqCst), 66);
        assert!(unlimited.elapsed() < Duration::from_secs(4));
    }

    /// 12 requests at once through a client with `max_in_flight` 3 and no rate: the server never
    /// sees more than 3 at a time, and all 12 are answered.
    #[tokio::test]
    async fn no_more_requests_in_flight_than_the_bound() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (n, m) = (now.clone(), most.clone());
        let app = axum::Router::new().route(
            "/version",
            axum::routing::get(move || {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let limits = Limits::from_flags(-1.0, 250, 3).unwrap();
        assert_eq!(limits.qps, None, "a negative QPS: no rate limit");
        let client = limited(kube::Config::new(url.parse().unwrap()), limits).unwrap();
        let results = futures::future::join_all((0..12).map(|_| client.apiserver_version())).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn limits_from_the_flags() {
        let flagger = Limits::from_flags(100.0, 250, 32).unwrap();
        assert_eq!((flagger.qps, flagger.burst), (Some(100.0), 250));
        assert_eq!(Limits::from_flags(0.0, 0, 1).unwrap().qps, None);
        assert!(
            Limits::from_flags(100.0, 0, 32).is_err(),
            "a rate needs a burst"
        );
        assert!(Limits::from_flags(-1.0, 250, 0).is_err());
        assert!(Limits::from_flags(f64::NAN, 250, 32).is_err());
    }
}
