//! I/O for the sequential judge's probe: the policy ConfigMap and the step's counts (and, until
//! the plan is frozen, the primary's lookback) from the metrics server.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::context::Context;
use super::judged::{self, InputError, JudgeObservation};
use super::validate;
use crate::analysis::PrometheusProvider;
use crate::analysis::count_metric;
use crate::analysis::counts::{self, Version};
use crate::analysis::judge::{CountSignal, Policy};
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

/// The count signals `canary`'s MetricTemplates declare ([`count_metric::sources`]: the
/// templates and their Secrets read, the selectors rendered and checked; nothing is asked of
/// Prometheus), or why one is invalid, naming template, metric and annotation.
pub async fn count_signals(canary: &Canary, ctx: &Context) -> Result<Vec<CountSignal>, String> {
    count_sources(canary, ctx, &metrics_server(canary, ctx))
        .await
        .map(|v| v.into_iter().map(|s| s.signal).collect())
}

/// The Canary's `metricsServer`, else the controller's.
fn metrics_server(canary: &Canary, ctx: &Context) -> String {
    canary
        .spec
        .metrics_server
        .clone()
        .unwrap_or_else(|| ctx.settings.metrics_server.clone())
}

/// The declared count signals' sources on `server` ([`count_metric::sources`]).
async fn count_sources(
    canary: &Canary,
    ctx: &Context,
    server: &str,
) -> Result<Vec<count_metric::CountSource>, String> {
    let templates = super::observe::ApiTemplates {
        client: ctx.client.clone(),
    };
    count_metric::sources(canary, &templates, server, &ctx.http).await
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
    let server = metrics_server(canary, ctx);
    let sources = count_sources(canary, ctx, &server).await;
    let count_signals = sources
        .as_ref()
        .map(|v| v.iter().map(|s| s.signal.clone()).collect())
        .map_err(Clone::clone);
    // counted from the request series already read (their source label): no extra query
    let load_tests = judged::LoadTests::of(
        provider,
        policy
            .as_ref()
            .map(|p| judged::load_test_workloads(canary.spec.analysis(), p))
            .unwrap_or_default(),
    );
    let inputs = async {
        let target = counts::Target {
            name: &canary.spec.target_ref.name,
            kind: &canary.spec.target_ref.kind,
            ingress: canary.spec.ingress_ref.as_ref().map(|r| r.name.as_str()),
        };
        let q = counts::builtin(provider, &ns, target)
            .map_err(InputError::NoSeries)?
            .with_load_tests(load_tests.counted());
        let prom = PrometheusProvider::with_client(ctx.http.clone(), &server)
            .map_err(|e| InputError::Provider(format!("metrics server {server:?}: {e}")))?;
        let mut step = counts::step_sample(&prom, &q, from, now, latency).await;
        let mut lookback = if js.plan.is_none() {
            // the lookback ends where the run's first step began
            Some(counts::lookback(&prom, &q, from, lookback_secs, latency).await)
        } else {
            None
        };
        // the declared count signals' events, in declared order, beside the builtin counts
        for src in sources.as_deref().unwrap_or_default() {
            if let Ok(s) = &mut step {
                match (
                    src.read(Version::Canary, from, now).await,
                    src.read(Version::Primary, from, now).await,
                ) {
                    (Ok(c), Ok(p)) => {
                        s.canary.counts.push(c);
                        s.primary.counts.push(p);
                    }
                    (Err(e), _) | (_, Err(e)) => step = Err(e),
                }
            }
            if let Some(Ok(lb)) = &mut lookback {
                match src.lookback(from, lookback_secs).await {
                    Ok(c) => lb.counts.push(c),
                    Err(e) => lookback = Some(Err(e)),
                }
            }
        }
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
        count_signals,
        load_tests,
    }
}
