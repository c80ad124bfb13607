//! `pennant controller`: the process hosting the controllers ([`crate::runtime`]), and the
//! registry of the controllers this build has ([`BUILT`]).
//!
//! A controller plugs in with one [`Entry`]: its name (for `--controllers`), its RBAC rules
//! (from [`crate::rbac`], the chart grants the union of the enabled ones), the routes it adds to
//! the shared HTTP server, and its run future.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use anyhow::Context as _;
use futures::future::BoxFuture;

use super::parse_seconds;
use crate::leader::{self, Election};
use crate::metrics::Metrics;
use crate::rbac::Permission;
use crate::runtime::{Process, Scope, Shutdown};
use crate::server::{ServerState, router};

/// One controller the process can host.
pub struct Entry {
    /// Its name in `--controllers`.
    pub name: &'static str,
    /// What it needs granted in the watched namespaces (`src/rbac.rs`).
    pub rules: &'static [Permission],
    /// The routes it adds to the process's HTTP server.
    pub routes: fn(&Process, &ControllerArgs) -> axum::Router,
    /// The controller itself, until the process's shutdown.
    pub run: fn(Process, &ControllerArgs) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// The controllers this build has, in start order.
pub const BUILT: &[Entry] = &[
    Entry {
        name: "canary",
        rules: crate::rbac::CANARY_RULES,
        routes: |p, _| crate::gate::routes(Some(p.client.clone()), p.scope.namespace.clone()),
        run: |p, args| Box::pin(crate::canary::controller::run(p, canary_settings(args))),
    },
    Entry {
        name: "source",
        rules: crate::rbac::SOURCE_RULES,
        routes: |_, args| source_settings(args).storage().routes(),
        run: |p, args| Box::pin(crate::source::controller::run(p, source_settings(args))),
    },
    Entry {
        name: "kustomize",
        rules: crate::rbac::KUSTOMIZE_RULES,
        routes: |_, _| axum::Router::new(),
        run: |p, args| {
            Box::pin(crate::kustomize::controller::run(
                p,
                crate::kustomize::controller::Settings {
                    requeue_dependency: std::time::Duration::from_secs(args.requeue_dependency),
                    target: target_options(args),
                    concurrent: args.concurrent,
                    mesh_provider: args.mesh_provider.clone(),
                    ..Default::default()
                },
            ))
        },
    },
    Entry {
        name: "helm",
        rules: crate::rbac::HELM_RULES,
        routes: |_, _| axum::Router::new(),
        run: |p, args| {
            Box::pin(crate::helm::controller::run(
                p,
                crate::helm::controller::Settings {
                    requeue_dependency: std::time::Duration::from_secs(args.requeue_dependency),
                    target: target_options(args),
                    mesh_provider: args.mesh_provider.clone(),
                    concurrent: args.concurrent,
                    helm: crate::helm::engine::HelmCliOptions {
                        max_processes: args.helm_max_processes,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ))
        },
    },
    Entry {
        name: "notification",
        rules: crate::rbac::NOTIFICATION_RULES,
        routes: |p, _| crate::notification::receiver::routes(p.client.clone(), p.scope.clone()),
        run: |p, _| {
            Box::pin(crate::notification::run(
                p,
                crate::notification::controller::Settings::default(),
            ))
        },
    },
];

/// `--default-service-account` and `--insecure-kubeconfig-*`: where Kustomizations and
/// HelmReleases act ([`crate::gitops::target`]).
fn target_options(args: &ControllerArgs) -> crate::gitops::target::Options {
    crate::gitops::target::Options {
        default_service_account: Some(args.default_service_account.clone())
            .filter(|n| !n.is_empty()),
        insecure_exec: args.insecure_kubeconfig_exec,
        insecure_tls: args.insecure_kubeconfig_tls,
    }
}

/// Controllers pennant will host but this build does not have yet.
pub const NOT_BUILT: &[&str] = &[];

fn built_names() -> String {
    BUILT.iter().map(|e| e.name).collect::<Vec<_>>().join(",")
}

/// The entries named by `--controllers` (comma-separated, in [`BUILT`] order, each once).
pub fn select(list: &str) -> Result<Vec<&'static Entry>, String> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "--controllers: name at least one of {}",
            built_names()
        ));
    }
    for n in &names {
        if NOT_BUILT.contains(n) {
            return Err(format!(
                "--controllers: the {n} controller is not built yet (this build has: {})",
                built_names()
            ));
        }
        if !BUILT.iter().any(|e| e.name == *n) {
            return Err(format!(
                "--controllers: unknown controller {n:?} (known: {})",
                built_names()
            ));
        }
    }
    Ok(BUILT.iter().filter(|e| names.contains(&e.name)).collect())
}

/// The Canary controller's settings from the flags.
fn canary_settings(args: &ControllerArgs) -> crate::canary::controller::Settings {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    crate::canary::controller::Settings {
        default_provider: args.mesh_provider.clone(),
        metrics_server: args.metrics_server.clone(),
        selector_labels: list(&args.selector_labels),
        config_tracking: args.enable_config_tracking,
        ingress_prefix: args.ingress_annotations_prefix.clone(),
        include_label_prefix: list(&args.include_label_prefix),
        namespace: Some(args.namespace.clone()).filter(|n| !n.is_empty()),
        notify: crate::notify::GlobalSettings {
            slack_url: args.slack_url.clone(),
            slack_token: args.slack_token.clone(),
            slack_proxy_url: args.slack_proxy_url.clone(),
            slack_user: Some(args.slack_user.clone()),
            slack_channel: args.slack_channel.clone(),
            msteams_url: args.msteams_url.clone(),
            msteams_proxy_url: args.msteams_proxy_url.clone(),
            event_webhook: args.event_webhook.clone(),
        },
        cluster_name: args.cluster_name.clone(),
        max_concurrent_canaries: args.max_concurrent_canaries,
        concurrent: args.canary_concurrent,
    }
}

/// The source controller's settings from the flags (Flux's source-controller flags). Without
/// `--storage-adv-addr` the artifact URLs name the HTTP server's own address (`--listen`, with
/// `0.0.0.0`/`[::]` read as `127.0.0.1`/`[::1]`): right for a process on a developer machine;
/// in a cluster the chart sets the Service's DNS name.
fn source_settings(args: &ControllerArgs) -> crate::source::controller::Settings {
    let adv = match args.storage_adv_addr.trim() {
        "" => local_address(&args.listen),
        a => a.to_string(),
    };
    crate::source::controller::Settings {
        storage_path: args.storage_path.clone().into(),
        storage_adv_addr: adv,
        retention: crate::source::storage::Retention {
            records: args.artifact_retention_records,
            ttl: std::time::Duration::from_secs(args.artifact_retention_ttl),
        },
        helm_index_max_size: args.helm_index_max_size,
    }
}

/// `listen` as a local client reaches it: an unspecified host becomes loopback.
fn local_address(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else if let Some(port) = listen.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        listen.to_string()
    }
}

/// The default `--leader-election-lease-name`.
pub const DEFAULT_LEASE_NAME: &str = "pennant-leader-election";

/// The Lease a shard elects its leader on: `name` as given, except that the default name on a
/// shard (a `--watch-label-selector`) gets the shard's suffix, so that shards never wait for
/// each other's Lease: `<name>-<value>` for a selector `key=value` whose value can end a
/// Lease name (lower-case letters, digits, `-`, `.`), else `<name>-<8 hex digits>` of the
/// selector's SHA-256 (e.g. the main instance's `!sharding.fluxcd.io/key`). Flux derives its
/// Lease name from the selector likewise (one Lease per shard).
pub fn shard_lease_name(name: &str, selector: Option<&str>) -> String {
    use sha2::Digest as _;
    let Some(sel) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
        return name.to_string();
    };
    if name != DEFAULT_LEASE_NAME {
        return name.to_string();
    }
    let value = sel
        .split_once("==")
        .or_else(|| sel.split_once('='))
        .filter(|(k, _)| !k.contains([',', '!', '(']))
        .map(|(_, v)| v.trim());
    let suffix = match value {
        Some(v)
            if !v.is_empty()
                && v.len() <= 63
                && v.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                })
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()) =>
        {
            v.to_string()
        }
        _ => {
            let h = sha2::Sha256::digest(sel.as_bytes());
            h.iter().take(4).map(|b| format!("{b:02x}")).collect()
        }
    };
    format!("{name}-{suffix}")
}

/// Run the enabled controllers in one process until shutdown (or, with leader election, while
/// this replica holds the Lease).
pub async fn command(mut args: ControllerArgs) -> anyhow::Result<()> {
    let enabled = select(&args.controllers).map_err(|e| anyhow::anyhow!(e))?;
    let scope = Scope::from_flags(
        args.watch_all_namespaces,
        &args.namespace,
        std::env::var("RUNTIME_NAMESPACE").ok().as_deref(),
        &args.watch_label_selector,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // the controllers read the namespace from the flags, so the scope's choice is written back
    args.namespace = scope.namespace.clone().unwrap_or_default();
    let log_control = crate::logging::init(&args.log_level, &args.log_format)?;
    super::install_rustls()?;
    let config = kube::Config::infer().await.context("kubernetes client")?;
    let limits = crate::kube_client::Limits::from_flags(
        args.kubeconfig_qps,
        args.kubeconfig_burst,
        args.kubeconfig_max_in_flight,
    )?;
    let client = crate::kube_client::limited(config, limits)?;
    let metrics = Arc::new(Metrics::default());
    metrics.set_info(env!("CARGO_PKG_VERSION"), &args.mesh_provider);
    let ready = Arc::new(AtomicBool::new(false));
    let process = Process {
        client: client.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        unsynced: Arc::new(AtomicUsize::new(enabled.len())),
        scope,
        shutdown: Shutdown::on_signal(),
    };

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| args.listen.clone());
    let mut app = router(ServerState {
        metrics,
        ready: ready.clone(),
    })
    .merge(log_control.router());
    // `--listen 127.0.0.1:0` picks a port: the artifact URLs name the bound one
    if args.storage_adv_addr.trim().is_empty() {
        args.listen = bound.clone();
    }
    for e in &enabled {
        app = app.merge((e.routes)(&process, &args));
    }
    if args.ui {
        app = app.merge(crate::ui::routes(crate::ui::Settings {
            client: process.client.clone(),
            namespace: process.scope.namespace.clone(),
            metrics_server: args.metrics_server.clone(),
            mesh_provider: args.mesh_provider.clone(),
        }));
    }
    let names: Vec<&str> = enabled.iter().map(|e| e.name).collect();
    tracing::info!(
        listen = %bound,
        controllers = %names.join(","),
        namespace = process.scope.namespace.as_deref().unwrap_or("(all)"),
        label_selector = process.scope.label_selector.as_deref().unwrap_or(""),
        "serving /metrics /healthz /readyz /log-level and the controllers' routes"
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let election = args.leader_election.then(|| Election {
        namespace: Election::namespace_for(&args.leader_election_namespace, &args.namespace),
        lease_name: shard_lease_name(
            &args.leader_election_lease_name,
            process.scope.label_selector.as_deref(),
        ),
        identity: Election::identity_from_env(),
        lease_duration: args.leader_election_lease_duration,
    });
    let shutdown = process.shutdown.clone();
    let grace = std::time::Duration::from_secs(args.shutdown_grace);
    let run_all = move || async move {
        futures::future::try_join_all(enabled.iter().map(|e| (e.run)(process.clone(), &args)))
            .await
            .map(|_| ())
    };
    let work = async move {
        match election {
            None => run_all().await,
            Some(e) => leader::run_when_leader(client, e, ready, run_all).await,
        }
    };
    // in-flight reconciles get `--shutdown-grace` to finish; a Helm action can run for its
    // whole timeout (minutes), longer than a pod's termination grace period, so pennant exits
    // first (its helm processes die with it) and the next start recovers the release
    tokio::select! {
        r = work => r,
        _ = async {
            shutdown.signalled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace = ?grace,
                "reconciles still in flight after the shutdown grace period: exiting without them \
                 (a Helm release left pending is unlocked on the next start)"
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Default router for Canaries without `spec.provider`.
    #[arg(long, env = "PENNANT_MESH_PROVIDER", default_value = crate::api::canary::DEFAULT_MESH_PROVIDER)]
    pub mesh_provider: String,
    /// Default Prometheus URL for the builtin metrics.
    #[arg(
        long,
        env = "PENNANT_METRICS_SERVER",
        default_value = "http://prometheus:9090"
    )]
    pub metrics_server: String,
    /// The controllers to run, comma-separated (default: every controller this build has).
    #[arg(long, env = "PENNANT_CONTROLLERS", default_value_t = built_names())]
    pub controllers: String,
    /// Watch only this namespace (all namespaces when empty).
    #[arg(long, env = "PENNANT_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Watch every namespace (Flux's flag; default true). `=false` without `--namespace`
    /// watches the namespace in `RUNTIME_NAMESPACE`, as Flux.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub watch_all_namespaces: Option<bool>,
    /// Reconcile only the objects whose labels match this selector (Flux's sharding, e.g.
    /// `sharding.fluxcd.io/key=shard1`, or `!sharding.fluxcd.io/key` on the main instance).
    #[arg(long, env = "PENNANT_WATCH_LABEL_SELECTOR", default_value = "")]
    pub watch_label_selector: String,
    /// Annotation prefix of the NGINX canary Ingress (Flagger's `-ingress-annotations-prefix`).
    #[arg(long, default_value = "nginx.ingress.kubernetes.io")]
    pub ingress_annotations_prefix: String,
    /// Comma-separated label prefixes copied from the target to its primary (`*` = all; Flagger's
    /// `-include-label-prefix`, default none).
    #[arg(long, default_value = "")]
    pub include_label_prefix: String,
    /// Comma-separated labels tried in order to find the target's selector label.
    #[arg(long, default_value = "app,name,app.kubernetes.io/name")]
    pub selector_labels: String,
    /// Track ConfigMaps and Secrets referenced by the target's pods.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_config_tracking: bool,
    /// Slack incoming webhook (or `https://slack.com/api/chat.postMessage` with a token) for
    /// Canaries without `analysis.alerts`.
    #[arg(long, env = "SLACK_URL")]
    pub slack_url: Option<String>,
    #[arg(long, env = "SLACK_TOKEN")]
    pub slack_token: Option<String>,
    #[arg(long, env = "SLACK_PROXY_URL")]
    pub slack_proxy_url: Option<String>,
    #[arg(long, default_value = "flagger")]
    pub slack_user: String,
    #[arg(long)]
    pub slack_channel: Option<String>,
    /// Microsoft Teams webhook for Canaries without `analysis.alerts` (wins over Slack).
    #[arg(long, env = "MSTEAMS_URL")]
    pub msteams_url: Option<String>,
    #[arg(long, env = "MSTEAMS_PROXY_URL")]
    pub msteams_proxy_url: Option<String>,
    /// Receives every canary event as Flagger's event-webhook JSON.
    #[arg(long, env = "EVENT_WEBHOOK_URL")]
    pub event_webhook: Option<String>,
    /// Cluster name added to alerts.
    #[arg(long, default_value = "")]
    pub cluster_name: String,
    /// The most Canaries analysed at once (Progressing through Finalising); the others wait in
    /// `Waiting`, first detected first started. 0 = no limit. A namespace can set a lower one
    /// with the annotation `canary.pennant.dev/max-concurrent-canaries`.
    #[arg(long, env = "PENNANT_MAX_CONCURRENT_CANARIES", default_value_t = 0)]
    pub max_concurrent_canaries: u32,
    /// Canary controller: Canaries reconciled at once; the others queue, each once, and start
    /// as one ends. 0 (the default) = no bound: every Canary of a fleet is reconciled at once
    /// at the start. At 1000 Canaries a bound of 128 halved the start's peak RSS (205 → 106
    /// MiB) but made their initialisation 1.6× slower (185 → 301 s); unbounded at 10 000, the
    /// start held 1.26 GiB and API requests timed out in the process's queue
    /// (docs/bench/canary.md).
    #[arg(long, env = "PENNANT_CANARY_CONCURRENT", default_value_t = 0)]
    pub canary_concurrent: u16,
    /// After SIGTERM/SIGINT, how long reconciles in flight may finish before the process exits
    /// anyway (below the chart's 30 s `terminationGracePeriodSeconds`).
    #[arg(long, default_value = "20s", value_parser = parse_seconds)]
    pub shutdown_grace: u64,
    /// Kustomize and helm controllers: objects reconciled at once, each (Flux's `--concurrent`,
    /// default 4; a HelmRelease's reconcile runs a `helm` process). At least 1.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent: u16,
    /// Helm controller: the most `helm` processes running at once (installs, upgrades, tests,
    /// rollbacks, uninstalls, each with its post-renderer), whatever `--concurrent` is; the
    /// other HelmReleases wait for one to end. A `helm install --wait` holds ~30 MiB (PSS) for
    /// as long as it waits, so this bounds the controller's memory; 4 is Flux's default
    /// `--concurrent`, and more than a few only queue for the CPU (docs/bench/gitops.md).
    /// 0 = no cap.
    #[arg(long, env = "PENNANT_HELM_MAX_PROCESSES", default_value_t = 4)]
    pub helm_max_processes: usize,
    /// Source controller: where artifacts are stored (Flux's `--storage-path`).
    #[arg(long, env = "PENNANT_STORAGE_PATH", default_value = "/data")]
    pub storage_path: String,
    /// Source controller: host[:port] (or `http(s)://` URL prefix) written in artifact URLs
    /// (Flux's `--storage-adv-addr`). Default: the HTTP server's address as a local client
    /// reaches it (`--listen` with `0.0.0.0` read as `127.0.0.1`); the chart sets the Service.
    #[arg(long, env = "PENNANT_STORAGE_ADV_ADDR", default_value = "")]
    pub storage_adv_addr: String,
    /// Source controller: artifacts other than the current one older than this are removed,
    /// seconds or a duration (`60s`, `1m`; Flux's `--artifact-retention-ttl`).
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    pub artifact_retention_ttl: u64,
    /// Source controller: artifacts kept per object, the current one included (Flux's
    /// `--artifact-retention-records`).
    #[arg(long, default_value_t = 2)]
    pub artifact_retention_records: usize,
    /// Source controller: the largest Helm repository `index.yaml` downloaded and parsed, bytes
    /// (Flux's `--helm-index-max-size`, default 50 MiB); a larger one fails the HelmRepository
    /// (and its HelmCharts) with `IndexationFailed`.
    #[arg(long, default_value_t = crate::source::helm_index::DEFAULT_MAX_INDEX_SIZE)]
    pub helm_index_max_size: u64,
    /// Kustomize controller: wait before retrying a Kustomization whose dependency is not ready
    /// or whose source has no artifact yet, seconds or a duration (Flux's
    /// `--requeue-dependency`, default `30s`).
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    pub requeue_dependency: u64,
    /// Kustomize and helm controllers: the service account impersonated when a Kustomization
    /// or HelmRelease sets no `spec.serviceAccountName` (Flux's `--default-service-account`; empty: the controller's
    /// own rights).
    #[arg(long, default_value = "")]
    pub default_service_account: String,
    /// Kustomize and helm controllers: allow `exec` credential plugins in the kubeconfigs of
    /// `spec.kubeConfig` (Flux's `--insecure-kubeconfig-exec`).
    #[arg(long)]
    pub insecure_kubeconfig_exec: bool,
    /// Kustomize and helm controllers: allow `insecure-skip-tls-verify` in the kubeconfigs of
    /// `spec.kubeConfig` (Flux's `--insecure-kubeconfig-tls`).
    #[arg(long)]
    pub insecure_kubeconfig_tls: bool,
    /// Serve the dashboard at `/ui` on the HTTP server (off by default; the chart's
    /// `ui.enabled`): read-only pages for everyone who reaches the port, actions only for a
    /// bearer token allowed to `patch` the object ([`crate::ui`]).
    #[arg(long, env = "PENNANT_UI")]
    pub ui: bool,
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`, artifacts).
    #[arg(long, env = "PENNANT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Log level filter (e.g. `info`, `pennant=debug`).
    #[arg(long, env = "PENNANT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PENNANT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Kubernetes client rate limit, requests per second on average (Flagger's
    /// `-kubeconfig-qps`, whose default is 100). 0 or below (the default): no client-side rate
    /// limit, the API server's Priority and Fairness guards it (controller-runtime's default
    /// since kubernetes-sigs/controller-runtime#3119, on SIG API Machinery's advice); Flagger's
    /// 100 made initialising 100 Canaries take 16 s where the API server absorbs the same writes
    /// in 4 s (docs/bench/canary.md).
    #[arg(long, env = "PENNANT_KUBECONFIG_QPS", default_value_t = -1.0, allow_negative_numbers = true)]
    pub kubeconfig_qps: f64,
    /// Kubernetes client burst: requests allowed at once before the QPS limit applies
    /// (Flagger's `-kubeconfig-burst`; only with a `--kubeconfig-qps`).
    #[arg(long, env = "PENNANT_KUBECONFIG_BURST", default_value_t = 250)]
    pub kubeconfig_burst: u32,
    /// Kubernetes client: requests waiting for their answer at once, the others queue in the
    /// process (one HTTP/1.1 connection each; a watch counts only until its answer starts).
    #[arg(long, env = "PENNANT_KUBECONFIG_MAX_IN_FLIGHT", default_value_t = crate::kube_client::DEFAULT_MAX_IN_FLIGHT)]
    pub kubeconfig_max_in_flight: usize,
    /// Run the controller only while holding a `coordination.k8s.io/v1` Lease (Flagger's
    /// `-enable-leader-election`).
    #[arg(
        long,
        alias = "enable-leader-election",
        env = "PENNANT_LEADER_ELECTION"
    )]
    pub leader_election: bool,
    /// Namespace of the Lease (default: `--namespace`, else `kube-system`, as Flagger).
    #[arg(long, env = "PENNANT_LEADER_ELECTION_NAMESPACE", default_value = "")]
    pub leader_election_namespace: String,
    /// Name of the Lease. Left at its default on a shard (`--watch-label-selector`), it gets
    /// the shard's suffix ([`shard_lease_name`]).
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub leader_election_lease_name: String,
    /// Lease duration: a leader that stops renewing loses the Lease after this long
    /// (`15s`, `1m` or seconds).
    #[arg(long, default_value = "15s", value_parser = parse_seconds)]
    pub leader_election_lease_duration: u64,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cmd::{Cli, Command, normalize_args};

    fn parse(args: &[&str]) -> Result<ControllerArgs, clap::Error> {
        let argv = normalize_args(
            ["pennant", "controller"]
                .iter()
                .chain(args)
                .map(|a| a.to_string()),
        );
        match Cli::try_parse_from(argv)?.command {
            Command::Controller(c) => Ok(*c),
            _ => panic!(),
        }
    }

    #[test]
    fn the_dashboard_is_off_unless_asked_for() {
        assert!(!parse(&[]).unwrap().ui);
        assert!(parse(&["--ui"]).unwrap().ui);
    }

    #[test]
    fn controllers_default_to_every_built_one() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.controllers, "canary,source,kustomize,helm,notification");
        let names = |l: &str| -> Result<Vec<&str>, String> {
            select(l).map(|v| v.iter().map(|e| e.name).collect())
        };
        assert_eq!(
            names(&c.controllers),
            Ok(vec![
                "canary",
                "source",
                "kustomize",
                "helm",
                "notification"
            ])
        );
        assert_eq!(names(" canary, canary "), Ok(vec!["canary"]), "once");
        assert_eq!(
            names("source,canary"),
            Ok(vec!["canary", "source"]),
            "start order"
        );
        assert_eq!(names("helm,canary"), Ok(vec!["canary", "helm"]));
        assert_eq!(
            names("notification,canary"),
            Ok(vec!["canary", "notification"])
        );
        for planned in NOT_BUILT {
            assert!(names(planned).unwrap_err().contains("not built yet"));
        }
        let e = names("canary,flagger").unwrap_err();
        assert_eq!(
            e,
            "--controllers: unknown controller \"flagger\" (known: canary,source,kustomize,helm,notification)"
        );
        assert!(names("").unwrap_err().contains("at least one"));
        assert!(names(" , ").is_err());
        let c = parse(&["--controllers", "canary"]).unwrap();
        assert_eq!(c.controllers, "canary");
    }

    /// The process's server is its own routes plus each enabled controller's: the Canary
    /// controller brings the gate endpoints, scoped to the watched namespace; the source controller
    /// serves its artifacts.
    #[tokio::test]
    async fn each_controller_adds_its_routes_to_the_one_server() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let process = Process {
            client,
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            unsynced: Arc::new(AtomicUsize::new(0)),
            scope: Scope {
                namespace: Some("apps".into()),
                label_selector: None,
            },
            shutdown: Shutdown::on_signal(),
        };
        let serve = |app: axum::Router| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(axum::serve(listener, app).into_future());
            format!("http://{addr}")
        };
        let base = || {
            router(ServerState {
                metrics: process.metrics.clone(),
                ready: process.ready.clone(),
            })
        };
        let http = reqwest::Client::new();
        let without = serve(base()).await;
        let mut app = base();
        let storage = tempfile::tempdir().unwrap();
        let args = parse(&["--storage-path", storage.path().to_str().unwrap()]).unwrap();
        for e in select("canary,source,notification").unwrap() {
            app = app.merge((e.routes)(&process, &args));
        }
        let with = serve(app).await;
        source_settings(&args)
            .storage()
            .store_bytes("GitRepository", "apps", "app", "abc.tar.gz", b"tgz")
            .unwrap();
        let get = |url: String| http.get(url).send();
        let artifact = get(format!("{with}/gitrepository/apps/app/abc.tar.gz"))
            .await
            .unwrap();
        assert_eq!(
            artifact.status(),
            200,
            "the source controller serves its storage"
        );
        assert_eq!(&artifact.bytes().await.unwrap()[..], b"tgz");
        assert_eq!(
            get(format!("{without}/gitrepository/apps/app/abc.tar.gz"))
                .await
                .unwrap()
                .status(),
            404
        );
        let post = |url: String, body: &'static str| http.post(url).body(body).send();
        assert_eq!(
            post(format!("{without}/gate/approve"), "")
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            post(format!("{with}/gate/approve"), "")
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            post(format!("{with}/readyz"), "").await.unwrap().status(),
            405
        );
        let other = post(
            format!("{with}/gate/check"),
            r#"{"name": "web", "namespace": "prod"}"#,
        )
        .await
        .unwrap();
        assert_eq!(other.status(), 403, "outside the process's scope");
        // the notification controller serves the Receivers' webhooks (here the API is down)
        let hook = post(format!("{with}/hook/0123abcd"), "{}").await.unwrap();
        assert_eq!(hook.status(), 500, "the Receivers are listed from the API");
        assert_eq!(
            post(format!("{without}/hook/0123abcd"), "{}")
                .await
                .unwrap()
                .status(),
            404
        );
    }

    #[test]
    fn every_built_controller_has_its_rbac_table() {
        for e in BUILT {
            assert!(!e.rules.is_empty(), "{}", e.name);
            assert!(!NOT_BUILT.contains(&e.name));
        }
        assert_eq!(BUILT[0].rules, crate::rbac::CANARY_RULES);
        assert_eq!(BUILT[1].rules, crate::rbac::SOURCE_RULES);
    }

    /// Flux's source-controller flags and defaults; without `--storage-adv-addr` the artifact
    /// URLs name the HTTP server as a local client reaches it.
    #[test]
    fn source_flags_are_fluxs() {
        let s = source_settings(&parse(&[]).unwrap());
        assert_eq!(s.storage_path, std::path::PathBuf::from("/data"));
        assert_eq!(s.storage_adv_addr, "127.0.0.1:8080");
        assert_eq!(s.retention.records, 2);
        assert_eq!(s.retention.ttl, std::time::Duration::from_secs(60));
        assert_eq!(s.helm_index_max_size, 50 << 20);
        let s = source_settings(
            &parse(&[
                "--storage-path=/var/lib/pennant",
                "--storage-adv-addr=pennant.flux-system.svc.cluster.local.",
                "--artifact-retention-ttl=2m",
                "--artifact-retention-records=5",
                "--helm-index-max-size=209715200",
                "--listen=[::]:9090",
            ])
            .unwrap(),
        );
        assert_eq!(s.storage_path, std::path::PathBuf::from("/var/lib/pennant"));
        assert_eq!(s.storage_adv_addr, "pennant.flux-system.svc.cluster.local.");
        assert_eq!(
            s.storage().url_for("gitrepository/ns/app/abc.tar.gz"),
            "http://pennant.flux-system.svc.cluster.local./gitrepository/ns/app/abc.tar.gz"
        );
        assert_eq!((s.retention.records, s.retention.ttl.as_secs()), (5, 120));
        assert_eq!(s.helm_index_max_size, 200 << 20);
        assert_eq!(local_address("[::]:9090"), "[::1]:9090");
        assert_eq!(local_address(":9090"), "127.0.0.1:9090");
        assert_eq!(local_address("10.0.0.1:80"), "10.0.0.1:80");
    }

    #[test]
    fn scoping_and_sharding_flags_use_fluxs_names() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.watch_all_namespaces, c.watch_label_selector.as_str()),
            (None, "")
        );
        let c = parse(&["--watch-all-namespaces"]).unwrap();
        assert_eq!(c.watch_all_namespaces, Some(true));
        let c = parse(&["--watch-all-namespaces=false", "--namespace", "apps"]).unwrap();
        assert_eq!(c.watch_all_namespaces, Some(false));
        assert_eq!(c.namespace, "apps");
        assert!(
            parse(&["--watch-all-namespaces", "false"]).is_err(),
            "a bool flag takes its value after `=`, as Go's flag package"
        );
        let c = parse(&["--watch-label-selector", "!sharding.fluxcd.io/key"]).unwrap();
        assert_eq!(c.watch_label_selector, "!sharding.fluxcd.io/key");
        let c = parse(&["-watch-label-selector=sharding.fluxcd.io/key=shard1"]).unwrap();
        assert_eq!(c.watch_label_selector, "sharding.fluxcd.io/key=shard1");
        let scope = |c: &ControllerArgs| {
            Scope::from_flags(
                c.watch_all_namespaces,
                &c.namespace,
                None,
                &c.watch_label_selector,
            )
        };
        assert_eq!(
            scope(&c).unwrap().label_selector.as_deref(),
            Some("sharding.fluxcd.io/key=shard1")
        );
        let c = parse(&["--watch-label-selector", "shard in (a"]).unwrap();
        assert!(scope(&c).is_err(), "checked before anything starts");
    }

    #[test]
    fn each_shard_elects_on_its_own_lease() {
        let d = DEFAULT_LEASE_NAME;
        assert_eq!(shard_lease_name(d, None), d, "unsharded: as before");
        assert_eq!(shard_lease_name(d, Some(" ")), d);
        assert_eq!(
            shard_lease_name(d, Some("sharding.fluxcd.io/key=shard1")),
            "pennant-leader-election-shard1"
        );
        assert_eq!(
            shard_lease_name(d, Some("sharding.fluxcd.io/key==shard2")),
            "pennant-leader-election-shard2"
        );
        let main = shard_lease_name(d, Some("!sharding.fluxcd.io/key"));
        assert!(main.starts_with("pennant-leader-election-"), "{main}");
        assert_eq!(main.len(), d.len() + 9, "8 hex digits: {main}");
        assert_ne!(main, shard_lease_name(d, Some("!other/key")));
        // a value that cannot end a Lease name, or a selector of several terms: hashed
        let upper = shard_lease_name(d, Some("sharding.fluxcd.io/key=Shard_1"));
        assert_eq!(upper.len(), d.len() + 9, "{upper}");
        let two = shard_lease_name(d, Some("a=b,c=d"));
        assert_eq!(two.len(), d.len() + 9, "{two}");
        assert_eq!(
            shard_lease_name("mine", Some("sharding.fluxcd.io/key=shard1")),
            "mine",
            "a name given is kept"
        );
        let c = parse(&["--leader-election"]).unwrap();
        assert_eq!(c.leader_election_lease_name, d);
    }
}
