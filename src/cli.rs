//! Command line. Controller flags mirror Flagger's names (`-mesh-provider`, `-metrics-server`,
//! `-namespace`, ...); Flagger's single-dash spelling is accepted too, so an existing Deployment's
//! args keep working.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pennant",
    version,
    about = "Progressive delivery for Kubernetes, Flagger-compatible"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers.
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions pennant serves (YAML).
    Crds,
    /// Open, close or check a Canary's manual gate: the one `/gate/check` answers
    /// (annotation `gate.pennant.dev/promotion`).
    Gate(GateArgs),
    /// Request (open), withdraw (close) or check a rollback of a Canary: what `/rollback/check`
    /// answers (annotation `gate.pennant.dev/rollback`).
    Rollback(GateArgs),
    /// Judge a past time window with the sequential judge: per-step counts of canary and
    /// primary from Prometheus, a per-step table and the verdict.
    Analyze(Box<AnalyzeArgs>),
    /// Replay a release from a file of per-step counts through the controller's own `decide`:
    /// each step's weight and verdict, and the outcome. Deterministic.
    Replay(ReplayArgs),
}

/// `pennant analyze (--canary NAME | --target NAME) -n NS --from T --to T [--interval 1m]`.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalyzeArgs {
    /// A Canary to read target, interval, provider and metrics server from (needs a kubeconfig).
    #[arg(long, conflicts_with = "target")]
    pub canary: Option<String>,
    /// The target workload: canary `NAME` against primary `NAME-primary`.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Prometheus URL (default: the Canary's metricsServer, else http://127.0.0.1:9090).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus: Option<String>,
    /// Router whose builtin series to read.
    #[arg(long, default_value = "istio")]
    pub provider: String,
    /// Target kind, `Deployment` or `DaemonSet` (pod names for gatewayapi/kubernetes; always,
    /// with --canary, the Canary's targetRef.kind).
    #[arg(long, default_value = "Deployment")]
    pub kind: String,
    /// Ingress whose series to read (nginx; default: the Canary's ingressRef).
    #[arg(long)]
    pub ingress: Option<String>,
    /// Window start and end: RFC 3339 or Unix seconds.
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    /// Step length (default: the Canary's interval, else 1m).
    #[arg(long)]
    pub interval: Option<String>,
    /// Judge policy file (YAML/JSON, the §4.5 fields); defaults otherwise.
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
}

/// `pennant replay FILE`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Recorded per-step counts (YAML/JSON; see `canary::replay`).
    pub file: std::path::PathBuf,
}

/// `pennant gate|rollback <open|close|check> <canary> [-n <namespace>]`. Talks to the
/// Kubernetes API with the kubeconfig from the environment (`KUBECONFIG`, `~/.kube/config` or
/// in-cluster), like kubectl.
#[derive(clap::Args, Debug, Clone)]
pub struct GateArgs {
    pub action: GateAction,
    /// Name of the Canary.
    pub canary: String,
    /// Namespace of the Canary (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    Open,
    Close,
    Check,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Default router for Canaries without `spec.provider`.
    #[arg(long, env = "PENNANT_MESH_PROVIDER", default_value = "istio")]
    pub mesh_provider: String,
    /// Default Prometheus URL for the builtin metrics.
    #[arg(
        long,
        env = "PENNANT_METRICS_SERVER",
        default_value = "http://prometheus:9090"
    )]
    pub metrics_server: String,
    /// Watch only this namespace (all namespaces when empty).
    #[arg(long, env = "PENNANT_NAMESPACE", default_value = "")]
    pub namespace: String,
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
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "PENNANT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Log level filter (e.g. `info`, `pennant=debug`).
    #[arg(long, env = "PENNANT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PENNANT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Kubernetes client rate limit, requests per second on average (Flagger's
    /// `-kubeconfig-qps`).
    #[arg(long, env = "PENNANT_KUBECONFIG_QPS", default_value_t = 100.0)]
    pub kubeconfig_qps: f64,
    /// Kubernetes client burst: requests allowed at once before the QPS limit applies
    /// (Flagger's `-kubeconfig-burst`).
    #[arg(long, env = "PENNANT_KUBECONFIG_BURST", default_value_t = 250)]
    pub kubeconfig_burst: u32,
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
    /// Name of the Lease.
    #[arg(long, default_value = "pennant-leader-election")]
    pub leader_election_lease_name: String,
    /// Lease duration: a leader that stops renewing loses the Lease after this long
    /// (`15s`, `1m` or seconds).
    #[arg(long, default_value = "15s", value_parser = parse_seconds)]
    pub leader_election_lease_duration: u64,
}

/// A duration in whole seconds: `15`, `15s`, `2m`. At least one second.
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match s.strip_suffix('m') {
            Some(n) => (n, 60),
            None => (s, 1),
        },
    };
    match n.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => Err(format!(
            "{s:?}: expected a positive duration like 15s, 2m or 30"
        )),
    }
}

/// Flagger's single-dash long flags (`-mesh-provider=istio`) rewritten to clap's `--` form.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            // `-name`, `-name=value` (Go's flag package): a single dash before a word longer
            // than one letter. `-n`, `-v` and negative numbers are left alone.
            let long = a.len() > 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].starts_with(|c: char| c.is_ascii_alphabetic())
                && a[1..].split('=').next().is_some_and(|n| n.len() > 1);
            if i > 0 && long { format!("-{a}") } else { a }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagger_single_dash_flags_are_accepted() {
        let args = normalize_args(
            [
                "pennant",
                "controller",
                "-mesh-provider=istio",
                "-metrics-server",
                "http://prom:9090",
                "-v",
                "-namespace",
                "test",
            ]
            .map(String::from),
        );
        assert_eq!(args[6], "--namespace", "Go's space-separated form too");
        assert_eq!(args[2], "--mesh-provider=istio");
        assert_eq!(args[3], "--metrics-server");
        assert_eq!(args[5], "-v", "short flags untouched");
        let cli = Cli::try_parse_from(&args[..5]).unwrap();
        let Command::Controller(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.metrics_server, "http://prom:9090");
    }

    #[test]
    fn operator_flags_parse_with_flagger_spellings() {
        let args = normalize_args(
            [
                "pennant",
                "controller",
                "-enable-leader-election",
                "-leader-election-namespace=ops",
                "-kubeconfig-qps=20",
                "-kubeconfig-burst",
                "40",
                "--leader-election-lease-duration=1m",
            ]
            .map(String::from),
        );
        let Command::Controller(c) = Cli::try_parse_from(&args).unwrap().command else {
            panic!()
        };
        assert!(c.leader_election);
        assert_eq!(c.leader_election_namespace, "ops");
        assert_eq!((c.kubeconfig_qps, c.kubeconfig_burst), (20.0, 40));
        assert_eq!(c.leader_election_lease_duration, 60);
        let Command::Controller(d) = Cli::try_parse_from(["pennant", "controller"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(!d.leader_election, "off by default");
        assert_eq!((d.kubeconfig_qps, d.kubeconfig_burst), (100.0, 250));
        assert_eq!(d.leader_election_lease_duration, 15);
        assert_eq!(parse_seconds("30"), Ok(30));
        assert!(parse_seconds("0s").is_err() && parse_seconds("fast").is_err());
    }

    #[test]
    fn gate_and_rollback_verbs() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(normalize_args(args.iter().map(|a| a.to_string())));
        let cli = parse(&["pennant", "gate", "open", "podinfo", "-n", "test"]).unwrap();
        let Command::Gate(g) = cli.command else {
            panic!()
        };
        assert_eq!(
            (g.action, g.canary.as_str(), g.namespace.as_deref()),
            (GateAction::Open, "podinfo", Some("test"))
        );
        let cli = parse(&["pennant", "rollback", "close", "web", "--namespace", "prod"]).unwrap();
        let Command::Rollback(g) = cli.command else {
            panic!()
        };
        assert_eq!(
            (g.action, g.namespace.as_deref()),
            (GateAction::Close, Some("prod"))
        );
        let cli = parse(&["pennant", "gate", "check", "podinfo"]).unwrap();
        let Command::Gate(g) = cli.command else {
            panic!()
        };
        assert_eq!((g.action, g.namespace), (GateAction::Check, None));
        assert!(parse(&["pennant", "gate", "approve", "podinfo"]).is_err());
        assert!(
            parse(&["pennant", "gate", "open"]).is_err(),
            "canary name required"
        );
    }
}
