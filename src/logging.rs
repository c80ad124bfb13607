//! Logs: text or JSON lines on stderr, with a filter (`info`, `info,pennant=debug`, ...) that can
//! be changed while the controller runs through `GET`/`PUT /log-level` on its HTTP server.
//!
//! JSON lines carry the current span's fields, so with `kube_client=debug` every Kubernetes API
//! request appears with its `http.method` and `http.url` (what `tests/e2e_operate.rs` reads to
//! derive the permissions the controller uses).

use std::io::IsTerminal as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Changes the active log filter. Cloned into the HTTP server.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Arc<std::sync::Mutex<String>>,
}

impl LogControl {
    /// Replace the filter; the old one stays on error (an unparsable directive).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?}: {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        *self.current.lock().expect("lock") = directives.to_string();
        Ok(())
    }

    /// The filter in force, as given.
    pub fn current(&self) -> String {
        self.current.lock().expect("lock").clone()
    }

    /// `GET /log-level` answers the filter; `PUT /log-level` with the new filter as the body
    /// sets it (200 with the new filter, 400 when it does not parse).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/log-level", get(get_level).put(put_level))
            .with_state(self.clone())
    }
}

async fn get_level(State(c): State<LogControl>) -> String {
    c.current()
}

async fn put_level(State(c): State<LogControl>, body: String) -> (StatusCode, String) {
    match c.set(body.trim()) {
        Ok(()) => {
            tracing::info!(filter = body.trim(), "log filter changed");
            (StatusCode::OK, c.current())
        }
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

/// Install the global subscriber: `format` is `json` or `text`.
///
/// Errors: an unparsable `level`, an unknown `format`, or a subscriber already installed.
pub fn init(level: &str, format: &str) -> anyhow::Result<LogControl> {
    let filter = EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("--log-level: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        "json" => registry
            .with(tracing_subscriber::fmt::layer().json())
            .try_init()?,
        // colours only on a terminal: a log file or a collector gets plain text
        "text" => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()?,
        other => anyhow::bail!("--log-format {other:?}: expected json or text"),
    }
    Ok(LogControl {
        handle,
        current: Arc::new(std::sync::Mutex::new(level.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reloadable filter on a local subscriber: the level changes what is recorded.
    #[tokio::test]
    async fn log_level_changes_at_runtime_through_http() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        let recorder = tracing_subscriber::fmt::layer()
            .with_writer(move || Recorder(s2.clone()))
            .without_time();
        let subscriber = tracing_subscriber::registry().with(filter).with(recorder);
        let _guard = tracing::subscriber::set_default(subscriber);
        let control = LogControl {
            handle,
            current: Arc::new(std::sync::Mutex::new("info".into())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, control.router()).into_future());
        let url = format!("http://{addr}/log-level");
        let http = reqwest::Client::new();

        tracing::debug!("hidden");
        assert_eq!(
            http.get(&url).send().await.unwrap().text().await.unwrap(),
            "info"
        );
        let r = http.put(&url).body("debug\n").send().await.unwrap();
        assert_eq!(r.status(), 200);
        tracing::debug!("shown");
        let r = http.put(&url).body("pennant=[").send().await.unwrap();
        assert_eq!(r.status(), 400, "bad filter refused");
        assert_eq!(control.current(), "debug", "old filter kept");
        let lines = seen.lock().unwrap().join("");
        assert!(!lines.contains("hidden"), "{lines}");
        assert!(lines.contains("shown"), "{lines}");
    }

    struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);
    impl std::io::Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
