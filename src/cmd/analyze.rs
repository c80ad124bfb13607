//! `pennant analyze`: judge a past time window with the sequential judge, from Prometheus.

use kube::Api;

use crate::analysis::PrometheusProvider;
use crate::analysis::counts;
use crate::analysis::judge::Policy;
use crate::api::Canary;
use crate::canary::judged::{self, InputError};
use crate::canary::validate;

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

/// The command: run [`analyze`] and print its table (rustls installed first, for Prometheus
/// over TLS).
pub async fn command(args: &AnalyzeArgs) -> anyhow::Result<()> {
    super::install_rustls()?;
    let out = analyze(args).await.map_err(|e| anyhow::anyhow!(e))?;
    print!("{out}");
    Ok(())
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("time {s:?}: {e} (RFC 3339 or Unix seconds)"))
}

/// `pennant analyze`: judge `(from, to]` step by step from Prometheus, as the controller
/// would (without the progression: the weight is whatever the router gave). Returns the
/// printed table and verdict.
pub async fn analyze(args: &AnalyzeArgs) -> Result<String, String> {
    let mut target = args.target.clone();
    let mut interval = args
        .interval
        .as_deref()
        .map(|i| {
            crate::api::parse_duration(i).ok_or_else(|| format!("--interval {i:?}: not a duration"))
        })
        .transpose()?;
    let mut provider = args.provider.clone();
    let mut kind = args.kind.clone();
    let mut ingress = args.ingress.clone();
    let mut server = args.prometheus.clone();
    let mut analysis = None;
    if let Some(name) = &args.canary {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("kubernetes client: {e}"))?;
        let c = Api::<Canary>::namespaced(client, &args.namespace)
            .get(name)
            .await
            .map_err(|e| format!("Canary {}/{name}: {e}", args.namespace))?;
        target = Some(c.spec.target_ref.name.clone());
        kind = c.spec.target_ref.kind.clone();
        ingress = ingress.or(c.spec.ingress_ref.as_ref().map(|r| r.name.clone()));
        interval = interval.or(Some(c.spec.analysis.clone().unwrap_or_default().interval()));
        provider = validate::provider(&c.spec, &provider).to_string();
        server = server.or(c.spec.metrics_server.clone());
        analysis = c.spec.analysis().cloned();
    }
    let target = target.ok_or("one of --canary or --target is required")?;
    let step = interval
        .unwrap_or(std::time::Duration::from_secs(60))
        .as_secs()
        .max(1) as i64;
    let server = server.unwrap_or_else(|| "http://127.0.0.1:9090".into());
    let policy = match &args.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            judged::parse_policy(&text)?
        }
        None => Policy::default(),
    };
    let (from, to) = (parse_time(&args.from)?, parse_time(&args.to)?);
    if to <= from {
        return Err("--to must be after --from".into());
    }
    // the policy's loadTestWorkloads, else the Canary's load-generating webhooks
    let load_tests = judged::LoadTests::of(
        &provider,
        judged::load_test_workloads(analysis.as_ref(), &policy),
    );
    let q = counts::builtin(
        &provider,
        &args.namespace,
        counts::Target {
            name: &target,
            kind: &kind,
            ingress: ingress.as_deref(),
        },
    )?
    .with_load_tests(load_tests.counted());
    let prom = PrometheusProvider::new(&server).map_err(|e| format!("{server}: {e}"))?;
    let err = |e: InputError| format!("{e:?}");
    let lb = counts::lookback(
        &prom,
        &q,
        from,
        policy.lookback_seconds as i64,
        policy.latency,
    )
    .await
    .map_err(err)?;
    let mut out = format!(
        "sequential judge: {}/{target} vs {target}-primary, {} steps of {step}s from {from} to {to} ({server})\n",
        args.namespace,
        (to - from) / step
    );
    out += "step  end         canary err/req      primary err/req     share  verdict\n";
    let mut plan = None;
    let mut steps = Vec::new();
    let mut start = from;
    let mut last = None;
    let mut k = 0;
    let mut end = from + step;
    while end <= to {
        let sample = match counts::step_sample(&prom, &q, start, end, policy.latency).await {
            Ok(s) => s,
            Err(InputError::Incomplete(m)) => {
                out += &format!("      {end}  deferred: {m}\n");
                end += step;
                continue;
            }
            Err(InputError::NoSeries(m)) => {
                // before the canary (or primary) existed: nothing to judge in this step
                out += &format!("      {end}  skipped: {m}\n");
                start = end;
                end += step;
                continue;
            }
            Err(e) => return Err(err(e)),
        };
        k += 1;
        let mut skip = false;
        if plan.is_none() {
            let base = if lb.requests > 0 {
                lb.as_lookback()
            } else {
                skip = true;
                sample.primary.as_lookback()
            };
            plan = Some(crate::analysis::judge::plan(&policy, &base).map_err(|e| e.0)?);
        }
        let p = plan.as_ref().unwrap();
        let n = sample.canary.requests + sample.primary.requests;
        let share = if n > 0 {
            100.0 * sample.canary.requests as f64 / n as f64
        } else {
            0.0
        };
        let counts = crate::api::StepCounts {
            weight: share.round() as i32,
            canary: sample
                .canary
                .counts(&p.edges_ms, "canary")
                .map_err(|e| e.0)?,
            primary: sample
                .primary
                .counts(&p.edges_ms, "primary")
                .map_err(|e| e.0)?,
        };
        if !skip {
            steps.push(counts);
        }
        let j = crate::analysis::judge::evaluate_run(&policy, p, &steps, 0);
        let judged = crate::analysis::judge::judged_steps(&policy, &steps);
        out += &format!(
            "{k:>4}  {end}  {:>8}/{:<9} {:>8}/{:<9} {share:>5.1}%  {}{}\n",
            sample.canary.errors,
            sample.canary.requests,
            sample.primary.errors,
            sample.primary.requests,
            j.verdict.as_str(),
            if skip { " (baseline step)" } else { "" }
        );
        let done = j.verdict != crate::analysis::judge::Verdict::Continue;
        last = Some((j, judged.to_vec()));
        start = end;
        end += step;
        if done {
            break;
        }
    }
    match last {
        None => out += "no complete step in the window\n",
        Some((j, judged)) => {
            out += &format!("verdict: {}\n", j.verdict.as_str());
            for r in crate::analysis::judge::report::report(&j, &judged) {
                out += &format!("  {}\n", r.text);
            }
            if let Some(c) = load_tests.clause(&judged) {
                out += &format!("  {c}\n");
            }
        }
    }
    Ok(out)
}
