//! pennant binary: parse flags, set up logs, install the rustls provider, then run.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Parser;
use pennant::canary::controller::{self, Settings};
use pennant::cli::{Cli, Command, GateAction, GateArgs, normalize_args};
use pennant::gate::{CanaryRef, Gate, GateState};
use pennant::leader::{self, Election};
use pennant::metrics::Metrics;
use pennant::server::{ServerState, router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    match cli.command {
        Command::Crds => {
            print!("{}", pennant::api::crds::to_yaml());
            Ok(())
        }
        Command::Gate(args) => gate_command(Gate::Promotion, args).await,
        Command::Rollback(args) => gate_command(Gate::Rollback, args).await,
        Command::Replay(args) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let file: pennant::canary::replay::ReplayFile = serde_saphyr::from_str(&text)
                .with_context(|| format!("parsing {}", args.file.display()))?;
            let r = pennant::canary::replay::replay(&file);
            print!("{}", pennant::canary::replay::render(&r));
            Ok(())
        }
        Command::Analyze(args) => {
            rustls::crypto::ring::default_provider()
                .install_default()
                .map_err(|_| anyhow::anyhow!("rustls provider already installed"))?;
            let out = pennant::canary::judge_probe::analyze(&args)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            print!("{out}");
            Ok(())
        }
        Command::Controller(args) => {
            let log_control = pennant::logging::init(&args.log_level, &args.log_format)?;
            rustls::crypto::ring::default_provider()
                .install_default()
                .map_err(|_| anyhow::anyhow!("rustls provider already installed"))?;
            let config = kube::Config::infer().await.context("kubernetes client")?;
            let client = pennant::kube_client::rate_limited(
                config,
                args.kubeconfig_qps,
                args.kubeconfig_burst,
            )?;
            let metrics = Arc::new(Metrics::default());
            metrics.set_info(env!("CARGO_PKG_VERSION"), &args.mesh_provider);
            let ready = Arc::new(AtomicBool::new(false));
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("listen on {}", args.listen))?;
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| args.listen.clone());
            tracing::info!(listen = %bound, "serving /metrics /healthz /readyz /log-level /gate/* /rollback/*");
            let app = router(ServerState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                client: Some(client.clone()),
                namespace: Some(args.namespace.clone()).filter(|n| !n.is_empty()),
            })
            .merge(log_control.router());
            let election = args.leader_election.then(|| Election {
                namespace: Election::namespace_for(
                    &args.leader_election_namespace,
                    &args.namespace,
                ),
                lease_name: args.leader_election_lease_name.clone(),
                identity: Election::identity_from_env(),
                lease_duration: args.leader_election_lease_duration,
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            let settings = Settings {
                default_provider: args.mesh_provider,
                metrics_server: args.metrics_server,
                selector_labels: args
                    .selector_labels
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                config_tracking: args.enable_config_tracking,
                ingress_prefix: args.ingress_annotations_prefix,
                include_label_prefix: args
                    .include_label_prefix
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                namespace: Some(args.namespace).filter(|n| !n.is_empty()),
                notify: pennant::notify::GlobalSettings {
                    slack_url: args.slack_url,
                    slack_token: args.slack_token,
                    slack_proxy_url: args.slack_proxy_url,
                    slack_user: Some(args.slack_user),
                    slack_channel: args.slack_channel,
                    msteams_url: args.msteams_url,
                    msteams_proxy_url: args.msteams_proxy_url,
                    event_webhook: args.event_webhook,
                },
                cluster_name: args.cluster_name,
                max_concurrent_canaries: args.max_concurrent_canaries,
            };
            match election {
                None => controller::run(client, settings, metrics, ready).await,
                Some(e) => {
                    let r = ready.clone();
                    leader::run_when_leader(client.clone(), e, ready, move || {
                        controller::run(client, settings, metrics, r)
                    })
                    .await
                }
            }
        }
    }
}

/// `pennant gate|rollback open|close|check <canary> -n <ns>`: the same annotations the gate
/// endpoints write, patched directly through the Kubernetes API. Prints the resulting state.
async fn gate_command(gate: Gate, args: GateArgs) -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("rustls provider already installed"))?;
    let client = kube::Client::try_default()
        .await
        .context("kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let canary = CanaryRef {
        namespace: args
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_string()),
        name: args.canary,
    };
    let state = match args.action {
        GateAction::Open => pennant::gate::write(&client, &canary, gate, GateState::Open).await,
        GateAction::Close => pennant::gate::write(&client, &canary, gate, GateState::Closed).await,
        GateAction::Check => pennant::gate::read(&client, &canary, gate).await,
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "{} of canary {}/{}: {e}",
            gate.describe(),
            canary.namespace,
            canary.name
        )
    })?;
    println!(
        "canary {}/{}: {}={}",
        canary.namespace,
        canary.name,
        gate.annotation(),
        state.as_str()
    );
    Ok(())
}
