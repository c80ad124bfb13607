//! The command-line layer: the verbs of the `pennant` binary, one file each. The top of the
//! layering (DESIGN.md, "Layout"): only `main.rs` uses it.
//!
//! Controller flags mirror Flagger's names (`-mesh-provider`, `-metrics-server`, `-namespace`,
//! ...) and Flux's (`--watch-all-namespaces`, `--watch-label-selector`); Flagger's single-dash
//! spelling is accepted too, so an existing Deployment's args keep working.

pub mod analyze;
pub mod controller;
pub mod crds;
pub mod diff;
pub mod events;
pub mod gate;
pub mod get;
pub mod helm_post_render;
pub mod helm_release;
pub mod kustomization;
pub mod lint;
pub mod reconcile;
pub mod replay;
pub mod tree;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub use analyze::AnalyzeArgs;
pub use controller::ControllerArgs;
pub use events::EventsArgs;
pub use gate::{GateAction, GateArgs};
pub use get::GetArgs;
pub use kustomization::{BuildKind, DiffKind, KsArgs};
pub use lint::LintArgs;
pub use reconcile::ReconcileArgs;
pub use replay::ReplayArgs;
pub use tree::TreeArgs;

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
    /// Build a Kustomization as the controller would, Secret values masked (`flux build`).
    Build {
        #[command(subcommand)]
        kind: BuildKind,
    },
    /// Server-side dry-run of a Kustomization and its differences with the cluster
    /// (`flux diff`). Exit status: 0 no differences, 1 differences, 2 an error.
    Diff {
        #[command(subcommand)]
        kind: DiffKind,
    },
    /// Check a GitOps repository offline: `file:line: message` per finding, exit 1 when any
    /// (common pitfalls, wrong apiVersions, undefined sources, dependsOn cycles, Canaries
    /// pennant would refuse, undefined postBuild variables).
    #[command(long_about = lint::LONG_ABOUT)]
    Lint(LintArgs),
    /// List Canaries, sources, Kustomizations and HelmReleases at a glance: `get
    /// canaries|sources|kustomizations|helmreleases|all` (columns as `flux get` and `kubectl
    /// get canaries`; `--watch` prints a row per change).
    Get(GetArgs),
    /// A Kustomization's inventory as a tree, HelmReleases and Canaries with their own objects
    /// and state beneath it (`flux tree ks`).
    Tree(TreeArgs),
    /// Events of pennant's objects (Canaries and Flux's kinds), oldest first (`flux events`).
    Events(EventsArgs),
    /// Open a Canary's promotion gate (`pennant gate open`): a run waiting at a
    /// `confirm-promotion` hook on `/gate/check` promotes.
    Promote(CanaryArgs),
    /// Request a Canary's rollback (`pennant rollback open`): a run with a `rollback` hook on
    /// `/rollback/check` rolls back at its next step.
    Abort(CanaryArgs),
    /// Reconcile a source, Kustomization, HelmRelease, Receiver or ArtifactGenerator now and
    /// wait for the result (`flux reconcile`: the `reconcile.fluxcd.io/requestedAt` annotation).
    Reconcile(ReconcileArgs),
    /// Helm post-renderer plugin (run by `helm`, not by people): rendered manifests on stdin,
    /// post-rendered on stdout.
    #[command(hide = true)]
    HelmPostRender(helm_post_render::PostRenderArgs),
}

/// Run the command the line asked for.
/// `e` as one line for the command line: its chain joined by `: `, an API server's refusal by
/// its message only (kube's own text adds the whole `Status` struct), e.g. `Kustomization
/// apps/web: kustomizations.kustomize.toolkit.fluxcd.io "web" not found`.
pub fn describe(e: &anyhow::Error) -> String {
    let mut parts = vec![];
    for cause in e.chain() {
        if let Some(kube::Error::Api(s)) = cause.downcast_ref::<kube::Error>() {
            parts.push(s.message.clone());
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds => crds::command(),
        Command::Gate(args) => gate::command(crate::gate::Gate::Promotion, args).await,
        Command::Rollback(args) => gate::command(crate::gate::Gate::Rollback, args).await,
        Command::Replay(args) => replay::command(&args),
        Command::Analyze(args) => analyze::command(&args).await,
        Command::Controller(args) => controller::command(*args).await,
        Command::Build { kind } => kustomization::build_command(kind).await,
        Command::Diff { kind } => kustomization::diff_command(kind).await,
        Command::HelmPostRender(args) => helm_post_render::command(&args),
        Command::Lint(args) => lint::command(&args),
        Command::Get(args) => get::command(args).await,
        Command::Tree(args) => tree::command(args).await,
        Command::Events(args) => events::command(args).await,
        Command::Promote(c) => gate::command(crate::gate::Gate::Promotion, c.open()).await,
        Command::Abort(c) => gate::command(crate::gate::Gate::Rollback, c.open()).await,
        Command::Reconcile(args) => reconcile::command(args).await,
    }
}

/// `pennant promote|abort CANARY [-n NS]`.
#[derive(clap::Args, Debug, Clone)]
pub struct CanaryArgs {
    /// Name of the Canary.
    pub canary: String,
    /// Namespace of the Canary (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

impl CanaryArgs {
    fn open(self) -> GateArgs {
        GateArgs {
            action: GateAction::Open,
            canary: self.canary,
            namespace: self.namespace,
        }
    }
}

/// The name a kubectl plugin's binary has: `kubectl pennant …` runs `kubectl-pennant …`.
pub const KUBECTL_PLUGIN: &str = "kubectl-pennant";

/// Whether `argv0` (the program's path as run) is the kubectl plugin: its file name is
/// [`KUBECTL_PLUGIN`] (a symbolic link to `pennant` on the PATH).
pub fn is_kubectl_plugin(argv0: &str) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == KUBECTL_PLUGIN)
}

/// The command line parsed, exiting with clap's message on an error. Invoked as
/// [`KUBECTL_PLUGIN`], the verbs are the same and help and errors say `kubectl pennant`.
pub fn parse(args: Vec<String>) -> Cli {
    let mut command = Cli::command();
    if args.first().is_some_and(|a| is_kubectl_plugin(a)) {
        command = command.bin_name("kubectl pennant");
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The process-wide TLS provider (ring), for the Kubernetes client, Prometheus and webhooks.
pub fn install_rustls() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("rustls provider already installed"))
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
    #[test]
    fn errors_read_as_one_line_with_the_api_servers_message() {
        let status = kube::core::Status {
            code: 404,
            message: "kustomizations.kustomize.toolkit.fluxcd.io \"web\" not found".into(),
            reason: "NotFound".into(),
            ..Default::default()
        };
        let e = anyhow::Error::from(kube::Error::Api(Box::new(status)))
            .context("Kustomization apps/web");
        assert_eq!(
            describe(&e),
            "Kustomization apps/web: kustomizations.kustomize.toolkit.fluxcd.io \"web\" not found"
        );
        let plain = anyhow::anyhow!("no such file").context("read config");
        assert_eq!(describe(&plain), "read config: no such file");
    }

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
        assert_eq!((d.kubeconfig_qps, d.kubeconfig_burst), (-1.0, 250));
        assert_eq!(
            d.kubeconfig_max_in_flight,
            crate::kube_client::DEFAULT_MAX_IN_FLIGHT
        );
        assert_eq!(d.leader_election_lease_duration, 15);
        assert_eq!(
            d.requeue_dependency, 30,
            "Flux's --requeue-dependency default"
        );
        let Command::Controller(r) =
            Cli::try_parse_from(["pennant", "controller", "--requeue-dependency=1m"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(r.requeue_dependency, 60);
        assert_eq!(d.default_service_account, "", "no impersonation by default");
        assert!(!d.insecure_kubeconfig_exec && !d.insecure_kubeconfig_tls);
        let Command::Controller(f) = Cli::try_parse_from([
            "pennant",
            "controller",
            "--default-service-account=deployer",
            "--insecure-kubeconfig-exec",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(f.default_service_account, "deployer");
        assert!(f.insecure_kubeconfig_exec && !f.insecure_kubeconfig_tls);
        assert_eq!(parse_seconds("30"), Ok(30));
        assert!(parse_seconds("0s").is_err() && parse_seconds("fast").is_err());
    }

    #[test]
    fn build_and_diff_ks_parse_like_flux() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().map(|a| a.to_string()));
        let cli = parse(&[
            "pennant", "build", "ks", "apps", "-n", "prod", "--path", "./deploy",
        ])
        .unwrap();
        let Command::Build {
            kind: BuildKind::Kustomization(a),
        } = cli.command
        else {
            panic!()
        };
        assert_eq!((a.name.as_str(), a.namespace.as_str()), ("apps", "prod"));
        assert_eq!(a.path, Some(std::path::PathBuf::from("./deploy")));
        let cli = parse(&[
            "pennant",
            "diff",
            "kustomization",
            "apps",
            "--ignore-paths",
            "a/**,b.yaml",
        ])
        .unwrap();
        let Command::Diff {
            kind: DiffKind::Kustomization(a),
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(a.ignore_paths, ["a/**", "b.yaml"]);
        assert_eq!(a.path, None, "default: the source's artifact");
        if std::env::var_os("FLUX_SYSTEM_NAMESPACE").is_none() {
            assert_eq!(a.namespace, "flux-system", "Flux's default namespace");
        }
        assert!(parse(&["pennant", "diff", "ks"]).is_err(), "name required");
        let cli = parse(&["pennant", "diff", "hr", "web", "-n", "apps"]).unwrap();
        let Command::Diff {
            kind: DiffKind::HelmRelease(a),
        } = cli.command
        else {
            panic!()
        };
        assert_eq!((a.name.as_str(), a.namespace.as_str()), ("web", "apps"));
        assert!(
            parse(&["pennant", "diff", "helmrelease"]).is_err(),
            "name required"
        );
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

    #[test]
    fn the_kubectl_plugin_is_the_same_binary_under_another_name() {
        assert!(is_kubectl_plugin("kubectl-pennant"));
        assert!(is_kubectl_plugin("/usr/local/bin/kubectl-pennant"));
        assert!(!is_kubectl_plugin("/usr/local/bin/pennant"));
        assert!(!is_kubectl_plugin("kubectl-pennant-old"));
        let cli = parse(
            ["kubectl-pennant", "get", "all", "-A", "--watch"]
                .map(String::from)
                .to_vec(),
        );
        let Command::Get(g) = cli.command else {
            panic!()
        };
        assert_eq!(g.what, "all");
        assert!(g.scope.all_namespaces && g.watch);
        let mut help = Cli::command().bin_name("kubectl pennant");
        let usage = help.render_usage().to_string();
        assert!(usage.contains("kubectl pennant"), "{usage}");
    }

    #[test]
    fn the_reading_verbs_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().map(|a| a.to_string()));
        let Command::Get(g) = parse(&[
            "pennant", "get", "sources", "git", "-n", "prod", "-o", "json",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(
            (
                g.what.as_str(),
                g.rest.as_slice(),
                g.scope.namespace.as_deref()
            ),
            ("sources", &["git".to_string()][..], Some("prod"))
        );
        assert_eq!(g.output, get::Output::Json);
        assert!(
            parse(&["pennant", "get", "ks", "-n", "a", "-A"]).is_err(),
            "-n and -A exclude each other"
        );
        let Command::Reconcile(r) = parse(&[
            "pennant",
            "reconcile",
            "source",
            "git",
            "apps",
            "--with-source",
            "--timeout",
            "2m",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!((r.words.len(), r.with_source, r.timeout), (3, true, 120));
        let Command::Reconcile(r) = parse(&["pennant", "reconcile", "ks", "apps"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(r.timeout, 300, "flux's default timeout");
        assert!(
            parse(&["pennant", "reconcile", "ks"]).is_err(),
            "name required"
        );
        let Command::Promote(p) = parse(&["pennant", "promote", "podinfo", "-n", "test"])
            .unwrap()
            .command
        else {
            panic!()
        };
        let g = p.open();
        assert_eq!(
            (g.action, g.canary.as_str(), g.namespace.as_deref()),
            (GateAction::Open, "podinfo", Some("test"))
        );
        let Command::Events(e) = parse(&["pennant", "events", "--for", "ks/apps", "-A"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(e.for_object.as_deref(), Some("ks/apps"));
        assert!(e.scope.all_namespaces);
        let Command::Tree(t) = parse(&["pennant", "tree", "ks", "apps", "-o", "yaml"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!((t.kind.as_str(), t.name.as_str()), ("ks", "apps"));
    }
}
