//! The Kubernetes client the controller uses: kube's default stack plus a client-side rate limit
//! (Flagger's `-kubeconfig-qps` / `-kubeconfig-burst`).

use std::time::Duration;

use anyhow::Context as _;

/// A client limited to `qps` requests per second on average, in bursts of up to `burst`:
/// tower's fixed-window limit of `burst` requests per `burst / qps` seconds. A watch counts once,
/// when it starts.
///
/// Errors: `qps` not positive and finite, `burst` zero, or a `config` kube cannot build a client
/// from.
pub fn rate_limited(config: kube::Config, qps: f64, burst: u32) -> anyhow::Result<kube::Client> {
    anyhow::ensure!(
        qps > 0.0 && qps.is_finite() && burst > 0,
        "--kubeconfig-qps and --kubeconfig-burst must be positive"
    );
    let window = Duration::from_secs_f64(f64::from(burst) / qps);
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("kubernetes client")?
        .with_layer(&tower::limit::RateLimitLayer::new(u64::from(burst), window))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        let client = rate_limited(kube::Config::new(url.parse().unwrap()), 6.0, 3).unwrap();
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
        let fast = rate_limited(kube::Config::new(url.parse().unwrap()), 1000.0, 100).unwrap();
        futures::future::join_all((0..60).map(|_| fast.apiserver_version())).await;
        assert_eq!(hits.load(Ordering::SeqCst), 66);
        assert!(unlimited.elapsed() < Duration::from_secs(4));
        assert!(rate_limited(kube::Config::new(url.parse().unwrap()), 0.0, 1).is_err());
    }
}
