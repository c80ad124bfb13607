//! I/O for the sequential judge's probe: the policy ConfigMap and the step's counts (and, until
//! the plan is frozen, the primary's lookback) from the metrics server.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::context::Context;
use super::judged::{self, InputError, JudgeObservation};
use super::validate;
use crate::analysis::PrometheusProvider;
use crate::analysis::counts;
use crate::analysis::judge::Policy;
use crate::api::Canary;

/// Read the policy named by the Canary (or the defaults).
pub async fn policy(canary: &Canary, client: &kube::Client) -> Result<Policy, String> {
    let Some(name) = judged::policy_ref(canary) else {
        return Ok(Policy::default());
    };
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("policy ConfigMap {name}: {e}"))?
        .ok_or_else(|| format!("policy ConfigMap {name} not found"))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(judged::POLICY_KEY))
        .ok_or_else(|| {
            format!(
                "policy ConfigMap {name} has no key {:?}",
                judged::POLICY_KEY
            )
        })?;
    judged::parse_policy(text).map_err(|e| format!("ConfigMap {name} {e}"))
}

/// Everything `judged::tick` needs for the step ending now.
pub async fn observe(canary: &Canary, ctx: &Context) -> JudgeObservation {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let status = canary.status.clone().unwrap_or_default();
    let js = status.judge.clone().unwrap_or_default();
    let from = js
        .window_start
        .or(status.last_step_time.as_ref().map(|t| t.0.as_second()))
        .unwrap_or(now - 60);
    let policy = policy(canary, &ctx.client).await;
    // the histogram is also needed for a request-duration guardrail (p99 of the run)
    let duration_guard = canary.spec.analysis.as_ref().is_some_and(|a| {
        judged::guardrails(a)
            .iter()
            .any(|g| g.kind == crate::analysis::MetricKind::Duration)
    });
    let latency = policy.as_ref().map(|p| p.latency).unwrap_or(true) || duration_guard;
    let lookback_secs = policy
        .as_ref()
        .map(|p| p.lookback_seconds as i64)
        .unwrap_or(3600);
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let provider = validate::provider(&canary.spec, &ctx.settings.default_provider);
    let server = canary
        .spec
        .metrics_server
        .clone()
        .unwrap_or_else(|| ctx.settings.metrics_server.clone());
    let inputs = async {
        let target = counts::Target {
            name: &canary.spec.target_ref.name,
            kind: &canary.spec.target_ref.kind,
            ingress: canary.spec.ingress_ref.as_ref().map(|r| r.name.as_str()),
        };
        let q = counts::builtin(provider, &ns, target).map_err(InputError::NoSeries)?;
        let prom = PrometheusProvider::with_client(ctx.http.clone(), &server)
            .map_err(|e| InputError::Provider(format!("metrics server {server:?}: {e}")))?;
        let step = counts::step_sample(&prom, &q, from, now, latency).await;
        let lookback = if js.plan.is_none() {
            // the lookback ends where the run's first step began
            Some(counts::lookback(&prom, &q, from, lookback_secs, latency).await)
        } else {
            None
        };
        Ok::<_, InputError>((step, lookback))
    };
    let (step, lookback) = match inputs.await {
        Ok(v) => v,
        Err(e) => (Err(e), None),
    };
    JudgeObservation {
        policy,
        step,
        from,
        lookback,
    }
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
pub async fn analyze(args: &crate::cli::AnalyzeArgs) -> Result<String, String> {
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
    let q = counts::builtin(
        &provider,
        &args.namespace,
        counts::Target {
            name: &target,
            kind: &kind,
            ingress: ingress.as_deref(),
        },
    )?;
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
        let judged = crate::analysis::judge::judged_steps(&policy, &steps);
        let j = crate::analysis::judge::evaluate(&policy, &p.signals, judged);
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
        }
    }
    Ok(out)
}
