//! HTTP server of the process: `/metrics` (Prometheus text), `/healthz` (process alive),
//! `/readyz` (caches synced), plus the routes each enabled controller contributes (the Canary
//! controller's loadtester-compatible `/gate/*` and `/rollback/*`, see [`crate::gate`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// The process's own routes; each controller merges its routes into them (the Canary
/// controller: the gate endpoints, [`crate::gate::routes`]).
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<ServerState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<ServerState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_cache_sync_and_metrics_are_served() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = ServerState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        state.ready.store(true, Ordering::SeqCst);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        state.metrics.writes.inc();
        let body = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(body.contains("pennant_api_writes_total 1"), "{body}");
    }

    /// A fake Kubernetes API serving GET and merge-PATCH of Canaries held in memory.
    async fn fake_apiserver(
        canaries: Vec<serde_json::Value>,
    ) -> (kube::Client, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        use axum::body::Bytes;
        use axum::extract::Path;
        use axum::http::Method;
        use axum::routing::any;
        use serde_json::json;
        let store = Arc::new(std::sync::Mutex::new(canaries));
        let s2 = store.clone();
        let app = Router::new().route(
            "/apis/flagger.app/v1beta1/namespaces/{ns}/canaries/{name}",
            any(
                move |method: Method, Path((ns, name)): Path<(String, String)>, body: Bytes| {
                    let store = s2.clone();
                    async move {
                        let mut all = store.lock().unwrap();
                        let Some(c) = all.iter_mut().find(|c| {
                            c["metadata"]["name"] == name.as_str()
                                && c["metadata"]["namespace"] == ns.as_str()
                        }) else {
                            let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": format!("canaries.flagger.app \"{name}\" not found"),
                                "reason": "NotFound", "code": 404});
                            return (StatusCode::NOT_FOUND, st.to_string());
                        };
                        if method == Method::PATCH {
                            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            for (k, v) in patch["metadata"]["annotations"].as_object().unwrap() {
                                c["metadata"]["annotations"][k] = v.clone();
                            }
                        }
                        (StatusCode::OK, c.to_string())
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let cfg = kube::Config::new(url.parse().unwrap());
        (kube::Client::try_from(cfg).unwrap(), store)
    }

    async fn serve(client: Option<kube::Client>) -> String {
        serve_ns(client, None).await
    }

    async fn serve_ns(client: Option<kube::Client>, namespace: Option<&str>) -> String {
        let state = ServerState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
        };
        let gates = crate::gate::routes(client, namespace.map(String::from));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(state).merge(gates)).into_future());
        format!("http://{addr}")
    }

    async fn post(base: &str, path: &str, body: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn gates_are_annotations_on_the_canary() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let canary = serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "annotations": {"team": "web"}},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 80}}
        });
        let (client, store) = fake_apiserver(vec![canary]).await;
        let base = serve(Some(client)).await;
        let hook = r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"x","metadata":{"a":"b"}}"#;
        let id = r#"{"name":"podinfo","namespace":"test"}"#;

        assert_eq!(post(&base, "/gate/approve", "").await.0, 200);
        assert_eq!(
            post(&base, "/gate/halt", hook).await,
            (403, "Forbidden".into())
        );
        // closed by default
        assert_eq!(
            post(&base, "/gate/check", hook).await,
            (403, "Forbidden".into())
        );
        assert_eq!(post(&base, "/rollback/check", hook).await.0, 403);

        let (code, body) = post(&base, "/gate/open", id).await;
        assert_eq!(code, 202, "{body}");
        assert!(body.contains("gate.pennant.dev/promotion=open"), "{body}");
        assert_eq!(
            store.lock().unwrap()[0]["metadata"]["annotations"],
            serde_json::json!({"team": "web", "gate.pennant.dev/promotion": "open"}),
            "one annotation added, the others kept"
        );
        assert_eq!(
            post(&base, "/gate/check", hook).await,
            (200, "Approved".into())
        );
        // stays open until closed
        assert_eq!(post(&base, "/gate/check", hook).await.0, 200);
        assert_eq!(
            post(&base, "/rollback/check", hook).await.0,
            403,
            "independent"
        );
        assert_eq!(post(&base, "/gate/close", id).await.0, 202);
        assert_eq!(post(&base, "/gate/check", hook).await.0, 403);
        assert_eq!(
            store.lock().unwrap()[0]["metadata"]["annotations"]["gate.pennant.dev/promotion"],
            "closed"
        );

        assert_eq!(post(&base, "/rollback/open", id).await.0, 202);
        assert_eq!(post(&base, "/rollback/check", hook).await.0, 200);
        assert_eq!(post(&base, "/rollback/close", id).await.0, 202);
        assert_eq!(post(&base, "/rollback/check", hook).await.0, 403);

        let (code, body) = post(&base, "/gate/check", r#"{"namespace":"test"}"#).await;
        assert_eq!(
            (code, body.as_str()),
            (400, "missing field \"name\" in payload")
        );
        let (code, body) = post(&base, "/gate/open", r#"{"name":"podinfo"}"#).await;
        assert_eq!(
            (code, body.as_str()),
            (400, "missing field \"namespace\" in payload")
        );
        assert_eq!(post(&base, "/gate/check", "not json").await.0, 400);
        let (code, body) = post(&base, "/gate/open", r#"{"name":"nope","namespace":"test"}"#).await;
        assert_eq!((code, body.as_str()), (404, "canary nope.test not found"));
        // any method, as the loadtester
        let get = reqwest::get(format!("{base}/gate/approve")).await.unwrap();
        assert_eq!(get.status(), 200);

        // a controller scoped to one namespace serves that namespace's gates only
        let closed = store.lock().unwrap()[0].clone();
        let (client, store) = fake_apiserver(vec![closed]).await;
        let base = serve_ns(Some(client), Some("prod")).await;
        let (code, body) = post(&base, "/gate/open", id).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(
            store.lock().unwrap()[0]["metadata"]["annotations"]["gate.pennant.dev/promotion"],
            "closed",
            "untouched"
        );
        assert_eq!(post(&base, "/gate/approve", "").await.0, 200);
    }

    #[tokio::test]
    async fn gates_without_an_api_answer_503() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hook = r#"{"name":"podinfo","namespace":"test"}"#;
        let base = serve(None).await;
        let (code, body) = post(&base, "/gate/check", hook).await;
        assert_eq!(code, 503);
        assert!(body.contains("no Kubernetes client"), "{body}");
        assert_eq!(
            post(&base, "/gate/approve", "").await.0,
            200,
            "constant answers still work"
        );
        assert_eq!(post(&base, "/gate/halt", "").await.0, 403);

        // an API server that refuses connections
        let dead = kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
            .unwrap();
        let base = serve(Some(dead)).await;
        for path in [
            "/gate/check",
            "/gate/open",
            "/rollback/check",
            "/rollback/close",
        ] {
            let (code, body) = post(&base, path, hook).await;
            assert_eq!(code, 503, "{path}: {body}");
            assert!(body.starts_with("Kubernetes API unavailable: "), "{body}");
        }
    }
}
