//! The process that hosts the controllers (`pennant controller`): what they share, and the
//! scope they watch.
//!
//! One kube client, one metrics registry, one readiness (`/readyz`: every enabled controller
//! has synced its caches), one HTTP server (to which each
//! controller adds its routes), one leader-election Lease for all, one shutdown. Which
//! controllers run is chosen on the command line (`--controllers`, `cmd::controller`); a
//! disabled controller starts no watch.
//!
//! Scope and sharding use Flux's flags: `--watch-all-namespaces` (default true) or
//! `--namespace` (one namespace), and `--watch-label-selector`, applied to the objects each
//! controller reconciles (for the Canary controller: the Canary watch, and only it: the
//! Deployments, Services, routes, ConfigMaps and Secrets a selected Canary uses are watched
//! whatever their labels), e.g. `sharding.fluxcd.io/key=shard1` on a shard and
//! `!sharding.fluxcd.io/key` on the main instance.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kube::Client;
use kube::runtime::watcher;

use crate::metrics::Metrics;

/// What every hosted controller is given.
#[derive(Clone)]
pub struct Process {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// `/readyz`: true once every enabled controller has synced its caches ([`Process::synced`]);
    /// also true while a standby waits for the Lease (`leader`).
    pub ready: Arc<AtomicBool>,
    /// How many enabled controllers have not called [`Process::synced`] yet.
    pub unsynced: Arc<AtomicUsize>,
    pub scope: Scope,
    pub shutdown: Shutdown,
}

impl Process {
    /// A controller's caches have their initial lists: each enabled controller calls this once,
    /// and `/readyz` turns true with the last of them (a second call of one controller counts
    /// for nothing more).
    pub fn synced(&self) {
        let before = self
            .unsynced
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.ready.store(true, Ordering::SeqCst);
        }
    }
}

/// The objects a controller reconciles: one namespace or all, optionally only those whose
/// labels match a selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// A Kubernetes label selector (`key=value`, `!key`, `key in (a,b)`, ...).
    pub label_selector: Option<String>,
}

impl Scope {
    /// From the flags: `--watch-all-namespaces` (`None` when not given: true, as Flux, unless
    /// `--namespace` is set), `--namespace` (empty: not set), `--watch-label-selector` (empty:
    /// none). `runtime_namespace` is where the process runs (`RUNTIME_NAMESPACE`, as Flux),
    /// watched alone with `--watch-all-namespaces=false` and no `--namespace`.
    pub fn from_flags(
        watch_all_namespaces: Option<bool>,
        namespace: &str,
        runtime_namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Self, String> {
        let namespace = match (watch_all_namespaces, namespace.trim()) {
            (Some(true), ns) if !ns.is_empty() => {
                return Err(format!(
                    "--watch-all-namespaces=true and --namespace={ns} contradict each other: \
                     give one"
                ));
            }
            (_, ns) if !ns.is_empty() => Some(ns.to_string()),
            (Some(false), _) => match runtime_namespace.map(str::trim) {
                Some(ns) if !ns.is_empty() => Some(ns.to_string()),
                _ => {
                    return Err("--watch-all-namespaces=false needs --namespace or the \
                                RUNTIME_NAMESPACE environment variable"
                        .into());
                }
            },
            _ => None,
        };
        let label_selector = match label_selector.trim() {
            "" => None,
            s => {
                validate_label_selector(s).map_err(|e| format!("--watch-label-selector: {e}"))?;
                Some(s.to_string())
            }
        };
        Ok(Self {
            namespace,
            label_selector,
        })
    }

    /// The watch configuration for the objects a controller reconciles.
    pub fn watcher_config(&self) -> watcher::Config {
        let wc = watcher::Config::default().any_semantic();
        match &self.label_selector {
            Some(s) => wc.labels(s),
            None => wc,
        }
    }

    /// `K`'s API in the watched namespace, or in all namespaces.
    pub fn api<K>(&self, client: &Client) -> kube::Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        }
    }
}

/// Checks a label selector the way the API server parses it (equality- and set-based
/// requirements separated by commas), so a typo fails at start instead of in every watch.
pub fn validate_label_selector(selector: &str) -> Result<(), String> {
    // split on the commas outside parentheses
    let mut parts = vec![];
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("{selector:?}: unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(format!("{selector:?}: unbalanced parentheses"));
    }
    parts.push(&selector[start..]);
    for part in parts {
        let r = part.trim();
        if let Some(key) = r.strip_prefix('!') {
            label_key(key.trim())?;
        } else if let Some((key, value)) = r.split_once("!=").or_else(|| r.split_once("==")) {
            label_key(key.trim())?;
            label_value(value.trim())?;
        } else if let Some((key, value)) = r.split_once('=') {
            label_key(key.trim())?;
            label_value(value.trim())?;
        } else if let Some((key, set)) = r.split_once(" notin ").or_else(|| r.split_once(" in ")) {
            label_key(key.trim())?;
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{r:?}: expected a set like (a,b)"))?;
            for v in inner.split(',') {
                label_value(v.trim())?;
            }
        } else {
            label_key(r)?;
        }
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("{key:?}: the prefix must be a DNS subdomain"));
        }
    }
    if name.is_empty() || !label_name(name) {
        return Err(format!(
            "{key:?}: a label key is an optional prefix/ and a name of at most 63 letters, \
             digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?}: a label value is at most 63 letters, digits, '-', '_' or '.', starting \
             and ending with a letter or digit"
        ))
    }
}

fn label_name(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The one shutdown of the process: SIGTERM or SIGINT, seen by every controller.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening for SIGTERM/SIGINT.
    pub fn on_signal() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::leader::shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Completes when the process is asked to stop.
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// The backoff of every watch stream after an error: 0.5 s doubling up to 4 s, with jitter (so
/// at most 8 s), back to 0.5 s after 60 s without an error.
///
/// Not kube's `default_backoff` (client-go's 0.8 s doubling to 30 s, reset after 2 min, which
/// with kube's jitter reaches 60 s): kube counts the `410 Gone` every watch gets from a
/// restarted API server as one more error, so after a 10 s API server restart the watches came
/// back only 40-60 s later, with the caches stale meanwhile (the Deployments one kept a
/// pre-promotion primary until the progress deadline rolled the release back;
/// `tests/e2e_faults.rs`, `restart_of_the_api_server_mid_release_recovers`). client-go relists
/// at once on `410`; a low ceiling is the nearest kube allows.
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(500))
                .with_max_delay(std::time::Duration::from_secs(4))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        ),
        std::time::Duration::from_secs(60),
    )
}

/// The backoff of a kube `Controller`'s merged trigger streams: none. kube wraps all of a
/// controller's watches in one backoff, so one stream's error pauses every watch of the
/// controller, and each further error (from any of them) lengthens the pause: after an API
/// server restart, the dozen watches of the Canary controller each returned an error or two
/// (connection refused, `410 Gone`) and the Deployments watch was not polled again for minutes,
/// the cache kept the pre-promotion primary and the release missed its progress deadline
/// (`tests/e2e_faults.rs`, `restart_of_the_api_server_mid_release_recovers`). Only for a
/// controller whose every stream has its own [`watch_backoff`] (`watches_stream`, not
/// `watches`), else a failing watch would retry in a hot loop.
pub struct NoSharedBackoff;

impl Iterator for NoSharedBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoSharedBackoff {
    fn reset(&mut self) {}
}

/// What `rx` receives, as a stream (for kube's `Controller::reconcile_on`: the objects a
/// reconcile, or another kind's watch, wakes); it ends when every sender is dropped.
pub fn received<T>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send
where
    T: Send,
{
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_stays_under_eight_seconds() {
        use kube::runtime::utils::Backoff;
        let mut b = watch_backoff();
        let delays: Vec<_> = (0..50).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] <= std::time::Duration::from_secs(1), "{delays:?}");
        assert!(
            delays
                .iter()
                .all(|d| *d <= std::time::Duration::from_secs(8)),
            "{delays:?}"
        );
        assert!(
            delays[10..]
                .iter()
                .all(|d| *d >= std::time::Duration::from_secs(4)),
            "{delays:?}"
        );
        b.reset();
        assert!(b.next().unwrap() <= std::time::Duration::from_secs(1));
    }

    #[test]
    fn scope_follows_fluxs_flags() {
        let scope = |all, ns, rt, sel| Scope::from_flags(all, ns, rt, sel);
        assert_eq!(
            scope(None, "", None, ""),
            Ok(Scope::default()),
            "all, as Flux"
        );
        assert_eq!(scope(Some(true), "", None, ""), Ok(Scope::default()));
        assert_eq!(
            scope(None, "apps", None, "").unwrap().namespace.as_deref(),
            Some("apps"),
            "--namespace alone (Flagger's flag) watches one"
        );
        assert_eq!(
            scope(Some(false), "apps", Some("flux-system"), "")
                .unwrap()
                .namespace
                .as_deref(),
            Some("apps")
        );
        assert_eq!(
            scope(Some(false), "", Some("flux-system"), "")
                .unwrap()
                .namespace
                .as_deref(),
            Some("flux-system"),
            "Flux: the runtime namespace"
        );
        let e = scope(Some(false), "", None, "").unwrap_err();
        assert!(e.contains("RUNTIME_NAMESPACE"), "{e}");
        let e = scope(Some(true), "apps", None, "").unwrap_err();
        assert!(e.contains("contradict"), "{e}");
        let s = scope(None, "", None, " sharding.fluxcd.io/key=shard1 ").unwrap();
        assert_eq!(
            s.label_selector.as_deref(),
            Some("sharding.fluxcd.io/key=shard1")
        );
        let e = scope(None, "", None, "sharding.fluxcd.io/key=shard 1").unwrap_err();
        assert!(e.starts_with("--watch-label-selector: "), "{e}");
    }

    #[test]
    fn label_selectors_are_checked_as_the_api_server_parses_them() {
        for ok in [
            "sharding.fluxcd.io/key=shard1",
            "!sharding.fluxcd.io/key",
            "sharding.fluxcd.io/key",
            "app==web,tier!=db",
            "env in (prod, staging),!canary",
            "env notin (dev)",
            "app=",
        ] {
            assert_eq!(validate_label_selector(ok), Ok(()), "{ok}");
        }
        for bad in [
            "=shard1",
            "key=a b",
            "-key=x",
            "Sharding.Fluxcd.IO/key=x",
            "env in prod",
            "env in (a,b",
            "a)(",
            "k=v,",
            &format!("{}=x", "k".repeat(64)),
        ] {
            assert!(validate_label_selector(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn ready_only_when_every_enabled_controller_has_synced() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let p = Process {
            client,
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
            unsynced: Arc::new(AtomicUsize::new(2)),
            scope: Scope::default(),
            shutdown: Shutdown::on_signal(),
        };
        let ready = || p.ready.load(Ordering::SeqCst);
        p.synced();
        assert!(!ready(), "one of two controllers synced");
        p.clone().synced();
        assert!(ready());
        p.ready.store(false, Ordering::SeqCst);
        p.synced();
        assert!(!ready(), "no third controller to wait for");
        assert_eq!(p.unsynced.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_watch_carries_the_selector() {
        let s = Scope {
            namespace: None,
            label_selector: Some("!sharding.fluxcd.io/key".into()),
        };
        assert_eq!(
            s.watcher_config().label_selector.as_deref(),
            Some("!sharding.fluxcd.io/key")
        );
        assert_eq!(Scope::default().watcher_config().label_selector, None);
    }
}
