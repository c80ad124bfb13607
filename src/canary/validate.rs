//! Pure validation of a Canary spec, run before anything is touched.
//!
//! Two lists come out: `invalid` (the Canary cannot run: reported as `Stalled=True` with a
//! Warning event, and no object is created or changed) and `unsupported` (fields Flagger's
//! schema accepts that pennant does not implement yet, or that the Canary's provider does not
//! read: reported as `Unsupported=True` with a Warning event, never silently ignored).

use crate::api::{AutoscalerReference, CanarySpec, parse_duration};

/// The `autoscalerRef` pennant acts on: one of kind `HorizontalPodAutoscaler` (`autoscaling/v2`).
/// Another kind (KEDA `ScaledObject`) is reported by [`unsupported`] and otherwise ignored: the
/// primary's replicas are then copied from the target as without an autoscaler.
pub fn hpa_ref(spec: &CanarySpec) -> Option<&AutoscalerReference> {
    spec.autoscaler_ref
        .as_ref()
        .filter(|r| r.kind == "HorizontalPodAutoscaler")
}

/// Every provider string Flagger's CRD accepts.
pub const KNOWN_PROVIDERS: &[&str] = &[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
];

/// Providers this build can route with.
pub const IMPLEMENTED_PROVIDERS: &[&str] = &[
    "istio",
    "nginx",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "kubernetes",
];

/// Providers that can mirror traffic (`analysis.mirror`).
const MIRRORING_PROVIDERS: &[&str] = &["istio", "gatewayapi:v1", "gatewayapi:v1beta1"];

/// Providers that can pin a user to the canary with a cookie (`analysis.sessionAffinity`).
const SESSION_AFFINITY_PROVIDERS: &[&str] = &["istio", "gatewayapi:v1", "gatewayapi:v1beta1"];

/// The provider for a canary: `spec.provider`, else the controller default.
pub fn provider<'a>(spec: &'a CanarySpec, default_provider: &'a str) -> &'a str {
    spec.provider
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(default_provider)
}

/// Problems that stop the Canary from running. Empty when valid.
pub fn invalid(spec: &CanarySpec, default_provider: &str) -> Vec<String> {
    let mut errs = vec![];
    let p = provider(spec, default_provider);
    if !KNOWN_PROVIDERS.contains(&p) {
        let hint = if p.starts_with("gatewayapi") {
            " (did you mean gatewayapi:v1?)"
        } else {
            ""
        };
        errs.push(format!(
            "unknown provider {p:?}{hint}; pennant routes with {}",
            IMPLEMENTED_PROVIDERS.join(", ")
        ));
    } else if !IMPLEMENTED_PROVIDERS.contains(&p) {
        errs.push(format!(
            "provider {p:?} is not implemented by pennant yet (implemented: {})",
            IMPLEMENTED_PROVIDERS.join(", ")
        ));
    }
    match spec.target_ref.kind.as_str() {
        "Deployment" => {}
        "DaemonSet" => {
            if spec.autoscaler_ref.is_some() {
                errs.push("a DaemonSet cannot have an autoscalerRef (it runs one pod per node)".into());
            }
        }
        "Service" => errs.push(format!(
            "targetRef.kind {} is not implemented by pennant yet (implemented: Deployment, DaemonSet)",
            spec.target_ref.kind
        )),
        k => errs.push(format!(
            "targetRef.kind {k:?} must be Deployment, DaemonSet or Service"
        )),
    }
    if spec.target_ref.name.is_empty() {
        errs.push("targetRef.name must not be empty".into());
    }
    if spec.service.delegation.unwrap_or(false)
        && (!spec.service.hosts.is_empty() || !spec.service.gateways.is_empty())
    {
        errs.push(
            "service.delegation cannot be combined with service.hosts or service.gateways".into(),
        );
    }
    if !(1..=65535).contains(&spec.service.port) {
        errs.push(format!(
            "service.port {} must be between 1 and 65535",
            spec.service.port
        ));
    }
    if let Some(d) = spec.progress_deadline_seconds
        && d <= 0
    {
        errs.push(format!(
            "progressDeadlineSeconds {d} must be greater than 0"
        ));
    }
    let Some(a) = spec.analysis() else {
        return errs;
    };
    if let Some(i) = &a.interval
        && parse_duration(i).is_none()
    {
        errs.push(format!(
            "analysis.interval {i:?} is not a duration like 30s or 1m"
        ));
    }
    if let Some(t) = a.threshold
        && t < 1
    {
        errs.push(format!("analysis.threshold {t} must be at least 1"));
    }
    if let Some(w) = a.max_weight
        && !(1..=100).contains(&w)
    {
        errs.push(format!("analysis.maxWeight {w} must be between 1 and 100"));
    }
    if let Some(s) = a.step_weight
        && !(1..=100).contains(&s)
    {
        errs.push(format!("analysis.stepWeight {s} must be between 1 and 100"));
    }
    if !a.step_weights.is_empty() {
        let ok = a.step_weights.iter().all(|w| (1..=100).contains(w))
            && a.step_weights.windows(2).all(|p| p[0] < p[1]);
        if !ok {
            errs.push(format!(
                "analysis.stepWeights {:?} must be increasing values between 1 and 100",
                a.step_weights
            ));
        }
    }
    if let Some(i) = a.iterations
        && i < 0
    {
        errs.push(format!("analysis.iterations {i} must not be negative"));
    }
    if !spec.skip_analysis
        && a.step_weight.unwrap_or(0) <= 0
        && a.step_weights.is_empty()
        && a.iterations.unwrap_or(0) <= 0
    {
        errs.push("analysis needs one of stepWeight, stepWeights or iterations".into());
    }
    // Conflicting settings, each named (Flagger silently ignores or rewrites them).
    let iterations = a.iterations.unwrap_or(0) > 0;
    let stepping = a.step_weight.unwrap_or(0) > 0 || !a.step_weights.is_empty();
    if !a.r#match.is_empty() && !iterations && !spec.skip_analysis {
        errs.push(
            "analysis.match (A/B testing) needs analysis.iterations: it cannot progress by stepWeight"
                .into(),
        );
    }
    if p == "kubernetes" {
        if !a.r#match.is_empty() {
            errs.push("provider \"kubernetes\" cannot route by analysis.match (A/B testing needs a mesh or an ingress)".into());
        }
        if stepping && !iterations {
            errs.push("provider \"kubernetes\" shifts no traffic (blue/green only): set analysis.iterations instead of stepWeight/stepWeights".into());
        }
    }
    if a.mirror.unwrap_or(false) && !MIRRORING_PROVIDERS.contains(&p) {
        errs.push(format!(
            "analysis.mirror needs a provider that mirrors traffic ({}), not {p:?}",
            MIRRORING_PROVIDERS.join(", ")
        ));
    }
    if a.mirror.unwrap_or(false) && !iterations && p != "istio" {
        errs.push(format!(
            "analysis.mirror with stepWeight (mirror the first interval) needs provider istio; {p:?} mirrors in blue/green (analysis.iterations) only"
        ));
    }
    if let Some(w) = a.mirror_weight
        && !(0..=100).contains(&w)
    {
        errs.push(format!(
            "analysis.mirrorWeight {w} must be between 0 and 100"
        ));
    }
    if a.session_affinity.is_some() {
        if !SESSION_AFFINITY_PROVIDERS.contains(&p) {
            errs.push(format!(
                "analysis.sessionAffinity needs a provider that can route by cookie ({}), not {p:?}",
                SESSION_AFFINITY_PROVIDERS.join(", ")
            ));
        }
        if !stepping || iterations {
            errs.push("analysis.sessionAffinity is for canary releases (stepWeight), not blue/green or A/B".into());
        }
    }
    for m in &a.metrics {
        if let Some(i) = &m.interval
            && parse_duration(i).is_none()
        {
            errs.push(format!(
                "analysis.metrics[{}].interval {i:?} is not a duration",
                m.name
            ));
        }
        let builtin = matches!(m.name.as_str(), "request-success-rate" | "request-duration");
        if !builtin && m.query.is_none() && m.template_ref.is_none() {
            errs.push(format!(
                "analysis.metrics[{}] has no templateRef or query and is not a builtin metric",
                m.name
            ));
        }
        if let Some(r) = &m.threshold_range
            && let (Some(min), Some(max)) = (r.min, r.max)
            && min > max
        {
            errs.push(format!(
                "analysis.metrics[{}].thresholdRange min {min} > max {max}",
                m.name
            ));
        }
    }
    for w in &a.webhooks {
        let t = w.type_.as_deref().unwrap_or("");
        let known = [
            "",
            "confirm-rollout",
            "pre-rollout",
            "rollout",
            "confirm-promotion",
            "post-rollout",
            "event",
            "rollback",
            "confirm-traffic-increase",
        ];
        if !known.contains(&t) {
            errs.push(format!(
                "analysis.webhooks[{}].type {t:?} is not a webhook type",
                w.name
            ));
        }
        if let Some(d) = &w.timeout
            && parse_duration(d).is_none()
        {
            errs.push(format!(
                "analysis.webhooks[{}].timeout {d:?} is not a duration",
                w.name
            ));
        }
        if w.url.is_empty() {
            errs.push(format!(
                "analysis.webhooks[{}].url must not be empty",
                w.name
            ));
        }
    }
    if let Some(sa) = &a.session_affinity {
        if sa.cookie_name.is_empty() {
            errs.push("analysis.sessionAffinity.cookieName must not be empty".into());
        }
        if sa.primary_cookie_name.as_deref() == Some(sa.cookie_name.as_str()) {
            errs.push(
                "analysis.sessionAffinity.cookieName must differ from primaryCookieName".into(),
            );
        }
    }
    errs
}

/// The Canary fields whose use depends on the provider (Flagger's CRD reference, "Used by"),
/// each with whether `spec` sets it. Each router declares those it reads ([`Router::reads`]).
///
/// `ingressRef` also fills the `{{ ingress }}` variable of metric queries (as in Flagger), so it
/// counts as set only when no metric can read it: none has a `templateRef` (the template is not
/// read here) or an inline `query` mentioning `ingress`.
///
/// [`Router::reads`]: crate::router::Router::reads
pub fn provider_fields(spec: &CanarySpec) -> Vec<(&'static str, bool)> {
    let s = &spec.service;
    let value = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let text = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
    let analysis = spec.analysis();
    let ingress_variable = analysis.is_some_and(|a| {
        a.metrics.iter().any(|m| {
            m.template_ref.is_some() || m.query.as_deref().is_some_and(|q| q.contains("ingress"))
        })
    });
    vec![
        (
            "ingressRef",
            spec.ingress_ref.is_some() && !ingress_variable,
        ),
        ("service.gatewayRefs", !s.gateway_refs.is_empty()),
        ("service.gateways", !s.gateways.is_empty()),
        ("service.hosts", !s.hosts.is_empty()),
        ("service.delegation", s.delegation.unwrap_or(false)),
        ("service.trafficPolicy", value(&s.traffic_policy)),
        ("service.match", !s.r#match.is_empty()),
        ("service.rewrite", value(&s.rewrite)),
        ("service.retries", value(&s.retries)),
        ("service.timeout", text(&s.timeout)),
        ("service.backendTimeout", text(&s.backend_timeout)),
        ("service.headers", value(&s.headers)),
        ("service.corsPolicy", value(&s.cors_policy)),
        ("service.mirror", !s.mirror.is_empty()),
        (
            "analysis.mirrorWeight",
            analysis.is_some_and(|a| a.mirror_weight.is_some()),
        ),
    ]
}

/// Fields accepted (Flagger's schema allows them) but not acted on for `provider`: those this
/// build does not implement, and the [`provider_fields`] set that the provider's router does not
/// read (`service.retries (not read by provider "nginx")`), where Flagger ignores them silently.
pub fn unsupported(spec: &CanarySpec, provider: &str) -> Vec<String> {
    let mut out = vec![];
    if let Some(r) = &spec.autoscaler_ref
        && hpa_ref(spec).is_none()
    {
        out.push(format!(
            "autoscalerRef (kind {}: only HorizontalPodAutoscaler is implemented)",
            r.kind
        ));
    }
    let mut flag = |set: bool, name: &str| {
        if set {
            out.push(name.to_string());
        }
    };
    flag(spec.route_ref.is_some(), "routeRef");
    flag(spec.upstream_ref.is_some(), "upstreamRef");
    let s = &spec.service;
    flag(s.mesh_name.is_some(), "service.meshName");
    flag(!s.backends.is_empty(), "service.backends");
    flag(s.unmanaged_metadata.is_some(), "service.unmanagedMetadata");
    if let Some(a) = spec.analysis() {
        for w in &a.webhooks {
            flag(
                w.disable_tls.unwrap_or(false),
                &format!("analysis.webhooks[{}].disableTLS", w.name),
            );
        }
    }
    // An unknown provider has no router: `invalid` stalls the Canary.
    if let Some(router) = crate::router::router_for(provider, "") {
        let reads = router.reads();
        for (field, set) in provider_fields(spec) {
            if set && !reads.contains(&field) {
                out.push(format!("{field} (not read by provider {provider:?})"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, TargetReference};

    fn spec(a: CanaryAnalysis) -> CanarySpec {
        CanarySpec {
            target_ref: TargetReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            service: CanaryService {
                port: 9898,
                ..Default::default()
            },
            analysis: Some(a),
            ..Default::default()
        }
    }

    fn good() -> CanaryAnalysis {
        CanaryAnalysis {
            interval: Some("10s".into()),
            threshold: Some(5),
            max_weight: Some(50),
            step_weight: Some(10),
            ..Default::default()
        }
    }

    #[test]
    fn valid_canary_has_no_errors() {
        assert!(invalid(&spec(good()), "istio").is_empty());
    }

    #[test]
    fn unknown_provider_is_an_error_not_a_fallback_to_istio() {
        let mut s = spec(good());
        s.provider = Some("istoi".into());
        let e = invalid(&s, "istio");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown provider \"istoi\""), "{e:?}");
    }

    #[test]
    fn bad_analysis_values_are_named() {
        let cases: Vec<(CanaryAnalysis, &str)> = vec![
            (
                CanaryAnalysis {
                    max_weight: Some(150),
                    ..good()
                },
                "maxWeight 150",
            ),
            (
                CanaryAnalysis {
                    step_weight: Some(0),
                    ..good()
                },
                "stepWeight 0",
            ),
            (
                CanaryAnalysis {
                    step_weight: Some(-5),
                    ..good()
                },
                "stepWeight -5",
            ),
            (
                CanaryAnalysis {
                    threshold: Some(0),
                    ..good()
                },
                "threshold 0",
            ),
            (
                CanaryAnalysis {
                    interval: Some("soon".into()),
                    ..good()
                },
                "interval \"soon\"",
            ),
        ];
        for (a, needle) in cases {
            let e = invalid(&spec(a), "istio");
            assert!(e.iter().any(|m| m.contains(needle)), "{needle}: {e:?}");
        }
    }

    #[test]
    fn analysis_without_any_progression_is_invalid() {
        let a = CanaryAnalysis {
            step_weight: None,
            ..good()
        };
        let e = invalid(&spec(a), "istio");
        assert!(
            e.iter().any(|m| m.contains("needs one of stepWeight")),
            "{e:?}"
        );
    }

    #[test]
    fn unimplemented_fields_are_listed() {
        let mut s = spec(CanaryAnalysis {
            mirror_weight: Some(50),
            ..good()
        });
        s.service.backend_timeout = Some("5s".into());
        assert_eq!(
            unsupported(&s, "gatewayapi:v1"),
            vec!["analysis.mirrorWeight (not read by provider \"gatewayapi:v1\")"]
        );
        assert_eq!(
            unsupported(&s, "istio"),
            vec!["service.backendTimeout (not read by provider \"istio\")"]
        );
    }

    /// `(provider, fields set)` → what is reported; a field the provider reads never is.
    #[test]
    fn fields_the_provider_does_not_read_are_named_with_it() {
        use serde_json::json;
        let set = |field: &str, s: &mut CanarySpec| match field {
            "ingressRef" => {
                s.ingress_ref = Some(crate::api::TypedLocalReference {
                    api_version: Some("networking.k8s.io/v1".into()),
                    kind: "Ingress".into(),
                    name: "podinfo".into(),
                })
            }
            "service.gatewayRefs" => {
                s.service.gateway_refs = vec![crate::api::GatewayRef {
                    name: "gw".into(),
                    ..Default::default()
                }]
            }
            "service.gateways" => s.service.gateways = vec!["public-gateway".into()],
            "service.hosts" => s.service.hosts = vec!["app.example.com".into()],
            "service.delegation" => s.service.delegation = Some(true),
            "service.trafficPolicy" => {
                s.service.traffic_policy = Some(json!({"tls": {"mode": "ISTIO_MUTUAL"}}))
            }
            "service.match" => s.service.r#match = vec![json!({"uri": {"prefix": "/"}})],
            "service.rewrite" => s.service.rewrite = Some(json!({"uri": "/"})),
            "service.retries" => s.service.retries = Some(json!({"attempts": 3})),
            "service.timeout" => s.service.timeout = Some("30s".into()),
            "service.backendTimeout" => s.service.backend_timeout = Some("5s".into()),
            "service.headers" => {
                s.service.headers = Some(json!({"request": {"set": {"x-a": "1"}}}))
            }
            "service.corsPolicy" => {
                s.service.cors_policy = Some(json!({"allowOrigins": [{"exact": "a"}]}))
            }
            "service.mirror" => {
                s.service.mirror = vec![json!({"backendRef": {"name": "shadow", "port": 80}})]
            }
            "analysis.mirrorWeight" => s.analysis.as_mut().unwrap().mirror_weight = Some(10),
            f => panic!("no setter for {f}"),
        };
        let reported = |provider: &str, fields: &[&str]| {
            let mut s = spec(good());
            s.provider = Some(provider.into());
            for f in fields {
                set(f, &mut s);
            }
            unsupported(&s, provider)
        };
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "nginx",
                &["service.retries", "service.gateways", "ingressRef"],
                &[
                    "service.gateways (not read by provider \"nginx\")",
                    "service.retries (not read by provider \"nginx\")",
                ],
            ),
            (
                "kubernetes",
                &["service.trafficPolicy", "service.hosts"],
                &[
                    "service.hosts (not read by provider \"kubernetes\")",
                    "service.trafficPolicy (not read by provider \"kubernetes\")",
                ],
            ),
            (
                "gatewayapi:v1",
                &["service.gatewayRefs", "service.retries", "service.gateways"],
                &[
                    "service.gateways (not read by provider \"gatewayapi:v1\")",
                    "service.retries (not read by provider \"gatewayapi:v1\")",
                ],
            ),
            (
                "gatewayapi:v1beta1",
                &[
                    "service.trafficPolicy",
                    "service.delegation",
                    "service.hosts",
                ],
                &[
                    "service.delegation (not read by provider \"gatewayapi:v1beta1\")",
                    "service.trafficPolicy (not read by provider \"gatewayapi:v1beta1\")",
                ],
            ),
            (
                "istio",
                &["ingressRef", "service.gatewayRefs", "service.retries"],
                &[
                    "ingressRef (not read by provider \"istio\")",
                    "service.gatewayRefs (not read by provider \"istio\")",
                ],
            ),
            (
                "nginx",
                &["service.match", "service.corsPolicy", "service.timeout"],
                &[
                    "service.match (not read by provider \"nginx\")",
                    "service.timeout (not read by provider \"nginx\")",
                    "service.corsPolicy (not read by provider \"nginx\")",
                ],
            ),
        ];
        for (provider, fields, want) in cases {
            assert_eq!(reported(provider, fields), *want, "{provider} {fields:?}");
        }
        // Negative controls: every field a router reads, all set at once, is reported by none.
        for p in IMPLEMENTED_PROVIDERS {
            let reads = crate::router::router_for(p, "").unwrap().reads();
            let fields: Vec<&str> = reads
                .iter()
                .copied()
                .filter(|f| *f != "service.delegation") // excludes hosts and gateways
                .collect();
            assert_eq!(reported(p, &fields), Vec::<String>::new(), "{p}");
        }
        // Every declared field is a known one with a setter (no typo hides a field).
        let known: Vec<&str> = provider_fields(&spec(good())).iter().map(|f| f.0).collect();
        for p in IMPLEMENTED_PROVIDERS {
            for f in crate::router::router_for(p, "").unwrap().reads() {
                assert!(known.contains(f), "{p} reads unknown field {f}");
            }
        }
        for f in &known {
            let mut s = spec(good());
            set(f, &mut s);
            assert!(provider_fields(&s).contains(&(*f, true)), "{f}");
        }
    }

    #[test]
    fn ingress_ref_outside_nginx_is_read_by_metric_queries_that_may_use_it() {
        let mut s = spec(CanaryAnalysis {
            metrics: vec![crate::api::CanaryMetric {
                name: "errors".into(),
                query: Some("sum(rate(x{ingress=\"{{ ingress }}\"}[1m]))".into()),
                ..Default::default()
            }],
            ..good()
        });
        s.ingress_ref = Some(crate::api::TypedLocalReference {
            kind: "Ingress".into(),
            name: "web".into(),
            ..Default::default()
        });
        assert!(unsupported(&s, "istio").is_empty());
        s.analysis.as_mut().unwrap().metrics[0].query = Some("up".into());
        assert_eq!(
            unsupported(&s, "istio"),
            vec!["ingressRef (not read by provider \"istio\")"]
        );
    }

    #[test]
    fn conflicting_settings_are_named_per_provider() {
        let with = |provider: &str, a: CanaryAnalysis| {
            let mut s = spec(a);
            s.provider = Some(provider.into());
            invalid(&s, "istio")
        };
        let ab = |iterations| CanaryAnalysis {
            iterations,
            r#match: vec![serde_json::json!({"headers": {"x-canary": {"exact": "1"}}})],
            ..good()
        };
        let cases: Vec<(&str, CanaryAnalysis, &str)> = vec![
            ("istio", ab(None), "needs analysis.iterations"),
            ("kubernetes", ab(Some(5)), "cannot route by analysis.match"),
            ("kubernetes", good(), "blue/green only"),
            (
                "nginx",
                CanaryAnalysis {
                    iterations: Some(5),
                    mirror: Some(true),
                    ..good()
                },
                "analysis.mirror needs a provider that mirrors",
            ),
            (
                "gatewayapi:v1",
                CanaryAnalysis {
                    mirror: Some(true),
                    ..good()
                },
                "mirrors in blue/green (analysis.iterations) only",
            ),
            (
                "nginx",
                CanaryAnalysis {
                    session_affinity: Some(crate::api::SessionAffinity {
                        cookie_name: "canary".into(),
                        ..Default::default()
                    }),
                    ..good()
                },
                "sessionAffinity needs a provider",
            ),
            (
                "gatewayapi:v1",
                CanaryAnalysis {
                    session_affinity: Some(crate::api::SessionAffinity {
                        cookie_name: "same".into(),
                        primary_cookie_name: Some("same".into()),
                        ..Default::default()
                    }),
                    ..good()
                },
                "cookieName must differ",
            ),
        ];
        for (provider, a, needle) in cases {
            let e = with(provider, a);
            assert!(
                e.iter().any(|m| m.contains(needle)),
                "{provider} {needle}: {e:?}"
            );
        }
        // The valid shapes of each strategy pass.
        assert!(with("istio", ab(Some(5))).is_empty());
        assert!(with("nginx", ab(Some(5))).is_empty());
        let bg = CanaryAnalysis {
            iterations: Some(5),
            step_weight: None,
            ..good()
        };
        assert!(with("kubernetes", bg.clone()).is_empty());
        let mirrored = CanaryAnalysis {
            mirror: Some(true),
            ..bg
        };
        assert!(with("gatewayapi:v1", mirrored).is_empty());
    }

    #[test]
    fn workload_kinds_and_autoscalers() {
        let with = |kind: &str, scaler: Option<&str>| {
            let mut s = spec(good());
            s.target_ref.kind = kind.into();
            s.autoscaler_ref = scaler.map(|k| crate::api::AutoscalerReference {
                kind: k.into(),
                name: "podinfo".into(),
                ..Default::default()
            });
            (
                invalid(&s, "istio"),
                unsupported(&s, "istio"),
                hpa_ref(&s).is_some(),
            )
        };
        assert_eq!(with("DaemonSet", None), (vec![], vec![], false));
        assert_eq!(
            with("Deployment", Some("HorizontalPodAutoscaler")),
            (vec![], vec![], true)
        );
        let (e, _, _) = with("DaemonSet", Some("HorizontalPodAutoscaler"));
        assert_eq!(
            e,
            vec!["a DaemonSet cannot have an autoscalerRef (it runs one pod per node)"]
        );
        let (e, _, _) = with("Service", None);
        assert!(
            e[0].contains("targetRef.kind Service is not implemented"),
            "{e:?}"
        );
        // KEDA is accepted but reported, and not acted on.
        let (e, u, hpa) = with("Deployment", Some("ScaledObject"));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            u,
            vec!["autoscalerRef (kind ScaledObject: only HorizontalPodAutoscaler is implemented)"]
        );
        assert!(!hpa);
    }
}
