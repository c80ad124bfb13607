//! Gateway API router (`gatewayapi:v1`): the HTTPRoute `<apex>` (`gateway.networking.k8s.io/v1`)
//! as Flagger's `GatewayAPIRouter` writes it (Flagger §3.4).
//!
//! Differences from Flagger, all deliberate:
//! - the whole spec is rebuilt from the weights at every reconcile (the state machine derives
//!   the weights from status), so a mid-run Canary edit changes the route without resetting
//!   traffic;
//! - parentRefs get the API server's defaults (`group: gateway.networking.k8s.io`,
//!   `kind: Gateway`) so the desired and live specs compare equal;
//! - match headers and query params are written sorted by name (Flagger iterates a Go map);
//! - the A/B fallback rule always sends 100 to the primary;
//! - the route also gets the Flux "disabled" annotations, like every routing object;
//! - `service.corsPolicy` becomes a `CORS` filter (exact origins only; other kinds are an error)
//!   and `service.backendTimeout` becomes `timeouts.backendRequest`;
//! - a same-named HTTPRoute the user wrote keeps all its rules, those routing the apex Service
//!   split between primary and canary ([`take_over`], #1857).
//!
//! Weights are read back only once every parent accepted the route's generation
//! ([`route_accepted`], as Flagger after #1732). `analysis.mirrorWeight` is not read: reported
//! as Unsupported (Flagger ignores it silently).
//!
//! Session affinity (`analysis.sessionAffinity`) is built from the cookies in the Canary's status
//! (`sessionAffinityCookie`, `primarySessionAffinityCookie`, `previousSessionAffinityCookie`,
//! each `<name>=<value>`), which the state machine must generate and rotate before `build`:
//! the builder stays pure. With `canaryWeight > 0` and a cookie: `Set-Cookie` on the canary
//! backendRef and a sticky rule (header `Cookie` regex `.*<name>.*<value>.*`) sending 100 to the
//! canary first; with a primary cookie, the same towards the primary (its `Set-Cookie` lives for
//! one analysis interval). At weight 0, a sticky rule on the previous (or still current) cookie
//! expires it (`Max-Age=-1`). Unlike Flagger, no sticky rule is written when there is no cookie
//! (Flagger then writes a duplicate of the weighted rule).

use kube::Resource;
use kube::api::ApiResource;
use serde_json::{Map, Value, json};

use super::{Router, set_cookie_value};
use crate::api::meta::{original_spec, owned_by, owner_reference, routing_metadata};
use crate::api::{Canary, SessionAffinity};
use crate::ext::gateway_api::{
    BackendObjectReference, GATEWAY_GROUP, HTTPRoute, HttpBackendRef, HttpNameMatch, HttpPathMatch,
    HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, HttpRouteTimeouts,
    ParentReference, RequestMirror,
};
use crate::router::Weights;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Flagger's `GatewayAPIRouter` for `gateway.networking.k8s.io/v1`. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct GatewayApiRouter;

/// Flagger's error for a match it cannot translate.
const INVALID_MATCH: &str = "Invalid request matching selectors";

fn names(canary: &Canary) -> (String, String, String) {
    let apex = canary.spec.apex_name().to_string();
    (
        apex.clone(),
        format!("{apex}-primary"),
        format!("{apex}-canary"),
    )
}

/// An Istio `StringMatch` (`exact`/`prefix`/`regex`) as a Gateway API `(type, value)`; `prefix`
/// only where `allow_prefix` (paths).
fn string_match(m: &Value, allow_prefix: bool) -> Result<(&'static str, String), String> {
    let obj = m
        .as_object()
        .ok_or_else(|| format!("{INVALID_MATCH}: {m}"))?;
    let get = |k: &str| obj.get(k).and_then(Value::as_str);
    if let Some(v) = get("exact") {
        Ok(("Exact", v.to_string()))
    } else if let Some(v) = get("regex") {
        Ok(("RegularExpression", v.to_string()))
    } else if let (true, Some(v)) = (allow_prefix, get("prefix")) {
        Ok(("PathPrefix", v.to_string()))
    } else {
        Err(format!("{INVALID_MATCH}: {m}"))
    }
}

fn name_matches(m: Option<&Value>) -> Result<Vec<HttpNameMatch>, String> {
    let Some(m) = m else { return Ok(vec![]) };
    let obj = m
        .as_object()
        .ok_or_else(|| format!("{INVALID_MATCH}: {m}"))?;
    let mut out = obj
        .iter()
        .map(|(name, sm)| {
            let (t, value) = string_match(sm, false)?;
            Ok(HttpNameMatch {
                type_: Some(t.to_string()),
                name: name.clone(),
                value,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Flagger's match mapping from the Istio `HTTPMatchRequest` shape: `uri` exact/prefix/regex →
/// path Exact/PathPrefix/RegularExpression, `method.exact` → method, `headers` and `queryParams`
/// exact/regex → Exact/RegularExpression. Other keys (`sourceLabels`, `port`, …) are ignored and
/// a match left empty is dropped, as in Flagger; any other string match kind is an error.
pub fn map_matches(matches: &[Value]) -> Result<Vec<HttpRouteMatch>, String> {
    matches
        .iter()
        .map(|m| {
            let path = match m.get("uri") {
                Some(uri) => {
                    let (t, value) = string_match(uri, true)?;
                    Some(HttpPathMatch {
                        type_: Some(t.to_string()),
                        value: Some(value),
                    })
                }
                None => None,
            };
            let method = match m.get("method") {
                Some(method) => Some(
                    method
                        .get("exact")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("{INVALID_MATCH}: {method}"))?
                        .to_string(),
                ),
                None => None,
            };
            Ok(HttpRouteMatch {
                path,
                headers: name_matches(m.get("headers"))?,
                query_params: name_matches(m.get("queryParams"))?,
                method,
            })
        })
        .filter(|m| m.as_ref() != Ok(&HttpRouteMatch::default()))
        .collect()
}

/// Flagger's `mergeMatchConditions`: for each analysis match, for each service match, the service
/// match with its headers (query params) replaced by the analysis match's, when it has any.
fn merge_matches(analysis: &[HttpRouteMatch], service: &[HttpRouteMatch]) -> Vec<HttpRouteMatch> {
    if service.is_empty() {
        return analysis.to_vec();
    }
    let mut out = vec![];
    for a in analysis {
        for s in service {
            let mut m = s.clone();
            if !a.headers.is_empty() {
                m.headers = a.headers.clone();
            }
            if !a.query_params.is_empty() {
                m.query_params = a.query_params.clone();
            }
            out.push(m);
        }
    }
    out
}

/// Istio `Headers.request|response` (`set`/`add` maps, `remove` list) as a Gateway API header
/// modifier (`set`/`add` lists sorted by name); `None` when empty.
fn header_modifier(ops: Option<&Value>) -> Option<Value> {
    let ops = ops?.as_object()?;
    let mut out = Map::new();
    for key in ["set", "add"] {
        if let Some(m) = ops.get(key).and_then(Value::as_object) {
            let mut list: Vec<(&String, &Value)> = m.iter().collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            if !list.is_empty() {
                out.insert(
                    key.into(),
                    list.into_iter()
                        .map(|(n, v)| json!({"name": n, "value": v}))
                        .collect(),
                );
            }
        }
    }
    if let Some(r) = ops
        .get("remove")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    {
        out.insert("remove".into(), Value::Array(r.clone()));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Seconds of a duration `[0-9]+(h|m|s|ms)` repeated (`24h`, `1h30m`, `90s`); `None` if invalid.
/// Sub-second remainders are truncated.
fn duration_seconds(d: &str) -> Option<i64> {
    let mut total_ms: i64 = 0;
    let mut rest = d.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        total_ms = total_ms.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[len..];
    }
    Some(total_ms / 1000)
}

/// Istio `CorsPolicy` as a Gateway API `CORS` filter body: `allowOrigins` (exact matches only, or
/// the deprecated `allowOrigin` strings), `allowMethods`, `allowHeaders`, `exposeHeaders`,
/// `allowCredentials`, `maxAge` in seconds. A prefix/regex origin or an unparsable `maxAge` is an
/// error (Gateway API origins are plain strings with `*` wildcards).
fn cors_filter(cors: &Value) -> Result<Option<Value>, String> {
    let Some(c) = cors.as_object() else {
        return Err(format!("invalid service.corsPolicy {cors}"));
    };
    let mut out = Map::new();
    let mut origins = vec![];
    for o in c
        .get("allowOrigins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match o.get("exact").and_then(Value::as_str) {
            Some(exact) => origins.push(json!(exact)),
            None => {
                return Err(format!(
                    "Gateway API CORS supports only exact allowOrigins, got {o}"
                ));
            }
        }
    }
    for o in c
        .get("allowOrigin")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        origins.push(o.clone());
    }
    if !origins.is_empty() {
        out.insert("allowOrigins".into(), Value::Array(origins));
    }
    for key in ["allowMethods", "allowHeaders", "exposeHeaders"] {
        if let Some(v) = c
            .get(key)
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = c.get("allowCredentials").filter(|v| v.is_boolean()) {
        out.insert("allowCredentials".into(), v.clone());
    }
    if let Some(age) = c.get("maxAge").and_then(Value::as_str) {
        let secs = duration_seconds(age)
            .ok_or_else(|| format!("invalid service.corsPolicy.maxAge {age:?}"))?;
        out.insert("maxAge".into(), json!(secs));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// The rule filters from `service.headers`, `service.rewrite`, `service.mirror` and
/// `service.corsPolicy`, in Flagger's order.
fn service_filters(canary: &Canary) -> Result<Vec<HttpRouteFilter>, String> {
    let s = &canary.spec.service;
    let mut out = vec![];
    if let Some(h) = s.headers.as_ref() {
        if let Some(m) = header_modifier(h.get("request")) {
            out.push(HttpRouteFilter {
                type_: "RequestHeaderModifier".into(),
                request_header_modifier: Some(m),
                ..Default::default()
            });
        }
        if let Some(m) = header_modifier(h.get("response")) {
            out.push(HttpRouteFilter {
                type_: "ResponseHeaderModifier".into(),
                response_header_modifier: Some(m),
                ..Default::default()
            });
        }
    }
    if let Some(r) = s.rewrite.as_ref() {
        let get = |k: &str| r.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let mut rewrite = Map::new();
        if let Some(host) = get("authority") {
            rewrite.insert("hostname".into(), json!(host));
        }
        if let Some(uri) = get("uri") {
            rewrite.insert(
                "path".into(),
                if get("type") == Some("ReplaceFullPath") {
                    json!({"type": "ReplaceFullPath", "replaceFullPath": uri})
                } else {
                    json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": uri})
                },
            );
        }
        if !rewrite.is_empty() {
            out.push(HttpRouteFilter {
                type_: "URLRewrite".into(),
                url_rewrite: Some(Value::Object(rewrite)),
                ..Default::default()
            });
        }
    }
    for m in &s.mirror {
        let mirror: RequestMirror = serde_json::from_value(m.clone())
            .map_err(|e| format!("invalid service.mirror entry {m}: {e}"))?;
        out.push(HttpRouteFilter {
            type_: "RequestMirror".into(),
            request_mirror: Some(mirror),
            ..Default::default()
        });
    }
    if let Some(cors) = s
        .cors_policy
        .as_ref()
        .map(cors_filter)
        .transpose()?
        .flatten()
    {
        out.push(HttpRouteFilter {
            type_: "CORS".into(),
            cors: Some(cors),
            ..Default::default()
        });
    }
    Ok(out)
}

fn parent_ref(canary: &Canary) -> Vec<ParentReference> {
    canary
        .spec
        .service
        .gateway_refs
        .iter()
        .map(|g| ParentReference {
            group: Some(g.group.clone().unwrap_or_else(|| GATEWAY_GROUP.into())),
            kind: Some(g.kind.clone().unwrap_or_else(|| "Gateway".into())),
            name: g.name.clone(),
            namespace: g.namespace.clone(),
            section_name: g.section_name.clone(),
            port: g.port,
        })
        .collect()
}

impl GatewayApiRouter {
    /// The HTTPRoute `<apex>` for `weights`.
    ///
    /// parentRefs: `service.gatewayRefs` (required; group/kind defaulted); hostnames:
    /// `service.hosts`. One rule matching `service.match` (default `PathPrefix /`) with the
    /// `service.headers`/`rewrite`/`mirror`/`corsPolicy` filters, `timeouts` from `service.timeout` /
    /// `backendTimeout`, and backendRefs `<apex>-primary` / `<apex>-canary` on `service.port`
    /// weighted `weights.primary` / `weights.canary`; when `weights.mirror` and
    /// `analysis.iterations > 0` (blue/green), a `RequestMirror` filter to `<apex>-canary` (all
    /// requests: `analysis.mirrorWeight` is ignored, as in Flagger, since `percent` needs Gateway
    /// API ≥ 1.2). A/B mode (`analysis.match` set): that rule matches `analysis.match × service
    /// matches`, then a fallback rule sends the service matches to the primary alone. Session
    /// affinity prepends sticky rules (module docs).
    pub fn http_route(&self, canary: &Canary, weights: Weights) -> Result<HTTPRoute, String> {
        let (apex, _, _) = names(canary);
        let s = &canary.spec.service;
        if s.gateway_refs.is_empty() {
            return Err(
                "GatewayRefs must be specified when using Gateway API as a provider.".into(),
            );
        }

        let mut matches = map_matches(&s.r#match)?;
        if matches.is_empty() {
            matches = vec![HttpRouteMatch {
                path: Some(HttpPathMatch {
                    type_: Some("PathPrefix".into()),
                    value: Some("/".into()),
                }),
                ..Default::default()
            }];
        }
        let base = ApexRule {
            name: None,
            matches,
            filters: service_filters(canary)?,
            timeouts: service_timeouts(canary),
            port: s.port,
            backend_filters: vec![],
            combine: |extra, service| Ok(merge_matches(extra, service)),
        };
        let rules = split_rule(canary, weights, base)?;

        let (labels, annotations) = routing_metadata(s.apex.as_ref());
        Ok(HTTPRoute {
            metadata: ObjectMeta {
                name: Some(apex),
                namespace: canary.metadata.namespace.clone(),
                labels: (!labels.is_empty()).then_some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_reference(canary)]),
                ..Default::default()
            },
            spec: HttpRouteSpec {
                parent_refs: parent_ref(canary),
                hostnames: s.hosts.clone(),
                rules,
            },
            status: None,
        })
    }
}

/// One rule routing the apex, before the split: the rule pennant generates from `service.*`,
/// or a user's rule of a taken-over HTTPRoute ([`take_over`]).
struct ApexRule {
    /// The rule's `name`, kept on one rule only (names are unique in a route): the weighted
    /// rule, or in A/B mode the fallback, which has the rule's own matches.
    name: Option<String>,
    matches: Vec<HttpRouteMatch>,
    filters: Vec<HttpRouteFilter>,
    timeouts: Option<HttpRouteTimeouts>,
    /// Port of the `<apex>-primary` and `<apex>-canary` backendRefs.
    port: i32,
    /// Filters of the user's backendRef to the apex, copied onto both backendRefs.
    backend_filters: Vec<HttpRouteFilter>,
    /// How an A/B or cookie match combines with `matches`: Flagger's `mergeMatchConditions`
    /// for the generated rule, [`and_matches`] for a user's rule.
    combine: CombineMatches,
}

/// `(extra, rule's matches) -> matches` (see [`ApexRule::combine`]).
type CombineMatches =
    fn(&[HttpRouteMatch], &[HttpRouteMatch]) -> Result<Vec<HttpRouteMatch>, String>;

/// `rule` split between `<apex>-primary` and `<apex>-canary` at `weights`: the weighted rule
/// (with a `RequestMirror` filter to the canary when `weights.mirror` in blue/green), preceded
/// by the sticky rules under session affinity and, in A/B mode (`analysis.match`), matching the
/// A/B matches combined with the rule's and followed by the rule sending its own matches to the
/// primary alone.
fn split_rule(
    canary: &Canary,
    weights: Weights,
    rule: ApexRule,
) -> Result<Vec<HttpRouteRule>, String> {
    let (_, primary, canary_svc) = names(canary);
    let analysis = canary.spec.analysis();
    let backend = |name: &str, weight: i32| HttpBackendRef {
        group: Some(String::new()),
        kind: Some("Service".into()),
        name: name.to_string(),
        port: Some(rule.port),
        weight: Some(weight),
        filters: rule.backend_filters.clone(),
        ..Default::default()
    };
    let mut weighted_filters = rule.filters.clone();
    if weights.mirror && analysis.and_then(|a| a.iterations).unwrap_or(0) > 0 {
        weighted_filters.push(HttpRouteFilter {
            type_: "RequestMirror".into(),
            request_mirror: Some(RequestMirror {
                backend_ref: BackendObjectReference {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: canary_svc.clone(),
                    namespace: None,
                    port: Some(rule.port),
                },
                percent: None,
                fraction: None,
            }),
            ..Default::default()
        });
    }
    let ab = analysis.map(|a| a.r#match.as_slice()).unwrap_or_default();
    let weighted_matches = if ab.is_empty() {
        rule.matches.clone()
    } else {
        (rule.combine)(&map_matches(ab)?, &rule.matches)?
    };
    let weighted = HttpRouteRule {
        // The name stays on the rule with the rule's own matches: the A/B fallback, if any.
        name: rule.name.clone().filter(|_| ab.is_empty()),
        matches: weighted_matches,
        filters: weighted_filters,
        backend_refs: vec![
            backend(&primary, weights.primary),
            backend(&canary_svc, weights.canary),
        ],
        timeouts: rule.timeouts.clone(),
    };
    let mut rules = match analysis.and_then(|a| a.session_affinity.as_ref()) {
        Some(sa) => sticky_rules(canary, sa, weights, weighted, &rule, &backend)?,
        None => vec![weighted],
    };
    if !ab.is_empty() {
        rules.push(HttpRouteRule {
            name: rule.name.clone(),
            matches: rule.matches.clone(),
            filters: rule.filters.clone(),
            backend_refs: vec![backend(&primary, 100)],
            timeouts: rule.timeouts.clone(),
        });
    }
    Ok(rules)
}

/// Every `extra` match AND every `user` match, for a user's rule: the request must satisfy
/// both, so the user's match gets the extra headers, query params, path and method added
/// (Flagger's merge, for the generated rule, replaces the headers instead and would widen a
/// user's rule). A rule without matches matches everything. A header, query param, path or
/// method both sides constrain differently cannot be one match: an error naming it.
fn and_matches(
    extra: &[HttpRouteMatch],
    user: &[HttpRouteMatch],
) -> Result<Vec<HttpRouteMatch>, String> {
    if user.is_empty() {
        return Ok(extra.to_vec());
    }
    let exact = |t: &Option<String>| t.clone().unwrap_or_else(|| "Exact".into());
    let add = |to: &mut Vec<HttpNameMatch>, what: &str, extra: &[HttpNameMatch], ci: bool| {
        for x in extra {
            let same_name = |t: &&HttpNameMatch| {
                if ci {
                    t.name.eq_ignore_ascii_case(&x.name)
                } else {
                    t.name == x.name
                }
            };
            match to.iter().find(same_name) {
                None => to.push(x.clone()),
                Some(t) if exact(&t.type_) == exact(&x.type_) && t.value == x.value => {}
                Some(t) => {
                    return Err(format!(
                        "{what} {} is matched both {} {:?} and {} {:?}",
                        x.name,
                        exact(&t.type_),
                        t.value,
                        exact(&x.type_),
                        x.value
                    ));
                }
            }
        }
        Ok(())
    };
    let mut out = vec![];
    for e in extra {
        for u in user {
            let mut m = u.clone();
            add(&mut m.headers, "header", &e.headers, true)?;
            add(&mut m.query_params, "query param", &e.query_params, false)?;
            match (&m.path, &e.path) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("the path is matched both {a:?} and {b:?}"));
                }
                (None, Some(b)) => m.path = Some(b.clone()),
                _ => {}
            }
            match (&m.method, &e.method) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("the method is matched both {a} and {b}"));
                }
                (None, Some(b)) => m.method = Some(b.clone()),
                _ => {}
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// `Cookie` header regex match for the cookie `<name>=<value>`, combined with the rule's matches.
fn cookie_matches(cookie: &str, rule: &ApexRule) -> Result<Vec<HttpRouteMatch>, String> {
    let (name, value) = cookie.split_once('=').unwrap_or((cookie, ""));
    let m = HttpRouteMatch {
        headers: vec![HttpNameMatch {
            type_: Some("RegularExpression".into()),
            name: COOKIE_HEADER.into(),
            value: format!(".*{name}.*{value}.*"),
        }],
        ..Default::default()
    };
    (rule.combine)(&[m], &rule.matches)
}

const COOKIE_HEADER: &str = "Cookie";

fn set_cookie_filter(value: String) -> HttpRouteFilter {
    HttpRouteFilter {
        type_: "ResponseHeaderModifier".into(),
        response_header_modifier: Some(json!({"add": [{"name": "Set-Cookie", "value": value}]})),
        ..Default::default()
    }
}

/// The rules under session affinity: sticky rules first, then `weighted` (see the module docs).
fn sticky_rules(
    canary: &Canary,
    sa: &SessionAffinity,
    weights: Weights,
    mut weighted: HttpRouteRule,
    rule: &ApexRule,
    backend: &dyn Fn(&str, i32) -> HttpBackendRef,
) -> Result<Vec<HttpRouteRule>, String> {
    let (_, primary, canary_svc) = names(canary);
    let status = canary.status.as_ref();
    let cookie_of = |f: fn(&crate::api::CanaryStatus) -> &Option<String>| {
        status.and_then(|s| f(s).clone()).filter(|c| !c.is_empty())
    };
    let current = cookie_of(|s| &s.session_affinity_cookie);
    let mut sticky = vec![];
    if weights.canary > 0 {
        if let Some(cookie) = current {
            let max_age = i64::from(sa.max_age.unwrap_or(86_400));
            for b in weighted
                .backend_refs
                .iter_mut()
                .filter(|b| b.name == canary_svc)
            {
                b.filters
                    .push(set_cookie_filter(set_cookie_value(&cookie, sa, max_age)));
            }
            sticky.push(HttpRouteRule {
                name: None,
                matches: cookie_matches(&cookie, rule)?,
                backend_refs: vec![backend(&primary, 0), backend(&canary_svc, 100)],
                ..weighted.clone()
            });
        }
        let primary_cookie = cookie_of(|s| &s.primary_session_affinity_cookie);
        if let (Some(_), Some(cookie)) = (sa.primary_cookie_name.as_ref(), primary_cookie) {
            let interval = canary
                .spec
                .analysis()
                .and_then(|a| a.interval.as_deref())
                .and_then(duration_seconds)
                .unwrap_or(60);
            for b in weighted
                .backend_refs
                .iter_mut()
                .filter(|b| b.name == primary)
            {
                b.filters
                    .push(set_cookie_filter(set_cookie_value(&cookie, sa, interval)));
            }
            sticky.push(HttpRouteRule {
                name: None,
                matches: cookie_matches(&cookie, rule)?,
                backend_refs: vec![backend(&primary, 100), backend(&canary_svc, 0)],
                ..weighted.clone()
            });
        }
    } else if let Some(previous) =
        current.or_else(|| cookie_of(|s| &s.previous_session_affinity_cookie))
    {
        let mut expire = HttpRouteRule {
            name: None,
            matches: cookie_matches(&previous, rule)?,
            ..weighted.clone()
        };
        expire
            .filters
            .push(set_cookie_filter(format!("{previous}; Max-Age=-1")));
        sticky.push(expire);
    }
    sticky.push(weighted);
    Ok(sticky)
}

/// A rule sending requests that carry the session-affinity cookie (`Cookie` header regex naming
/// `sa.cookieName` or `sa.primaryCookieName`): not the weighted rule.
fn is_sticky(rule: &HttpRouteRule, sa: &SessionAffinity) -> bool {
    let names = [
        Some(sa.cookie_name.as_str()),
        sa.primary_cookie_name.as_deref(),
    ];
    rule.matches.iter().any(|m| {
        m.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case(COOKIE_HEADER)
                && h.type_.as_deref() == Some("RegularExpression")
                && names
                    .iter()
                    .flatten()
                    .any(|n| !n.is_empty() && h.value.contains(n))
        })
    })
}

/// True when `b` is the apex Service of `canary` (kind Service in the core group, in the
/// route's namespace).
fn is_apex(b: &HttpBackendRef, apex: &str, ns: Option<&str>) -> bool {
    b.name == apex
        && b.kind.as_deref().is_none_or(|k| k == "Service")
        && b.group.as_deref().is_none_or(str::is_empty)
        && (b.namespace.is_none() || b.namespace.as_deref() == ns)
}

/// The HTTPRoute spec as the user wrote it: pennant's record of the spec first seen
/// ([`original_spec`]), else (not taken over yet) the live spec — never kubectl's last-applied
/// record, which a `kubectl patch` leaves behind; `None` for a route pennant created. An error when a rule has a field pennant's types do not carry.
fn user_spec(canary: &Canary, live: &Value) -> Result<Option<HttpRouteSpec>, String> {
    if owned_by(canary, live) {
        return Ok(None);
    }
    let apex = canary.spec.apex_name();
    let raw = original_spec(live).unwrap_or_else(|| live["spec"].clone());
    let spec: HttpRouteSpec = serde_json::from_value(raw.clone())
        .map_err(|e| format!("HTTPRoute {apex}: cannot read the user's spec: {e}"))?;
    // A rule field pennant does not model (retry, sessionPersistence, a newer filter) would be
    // dropped while the route is taken over: refuse rather than lose it silently.
    let typed = serde_json::to_value(&spec.rules).unwrap_or_default();
    if let Some(path) = dropped(&raw["rules"], &typed, "spec.rules".into()) {
        return Err(format!(
            "HTTPRoute {apex}: pennant cannot carry {path} through a takeover; remove it or let the Canary generate the route"
        ));
    }
    Ok(Some(spec))
}

/// The path of the first field of `raw` that `typed` (its round trip through pennant's types)
/// lost; empty values do not count.
fn dropped(raw: &Value, typed: &Value, path: String) -> Option<String> {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (raw, typed) {
        (Value::Object(r), t) => r.iter().find_map(|(k, v)| match t.get(k) {
            Some(tv) => dropped(v, tv, format!("{path}.{k}")),
            None => (!empty(v)).then(|| format!("{path}.{k}")),
        }),
        (Value::Array(r), Value::Array(t)) => r
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (rv, tv))| dropped(rv, tv, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Takeover of a same-named HTTPRoute the user wrote, `live` (Flagger replaces the whole spec,
/// #1857). Every rule of the user's spec (`user_spec`) is kept, in order, with its matches,
/// filters and timeouts. A rule whose one backendRef is the apex Service is split between
/// `<apex>-primary` and `<apex>-canary` (`split_rule`) as the generated rule would be —
/// weights, mirror, sticky rules and A/B, whose matches are added to the rule's own
/// (`and_matches`) — on its backendRef's port, with that backendRef's filters on both, the
/// `service` filters it does not have and the `service` timeouts it does not set; these rules
/// then replace `desired`'s generated rule. Without such a rule, the user's rules follow the
/// generated one. A route pennant created is `desired` as is.
///
/// Errors (nothing is written): a rule field pennant's types would drop (`user_spec`); a rule
/// that sends traffic to the apex and to other backends (which share of it would the canary
/// get?); `service.match` (the user's rules have their own
/// matches); a filter type (other than `RequestMirror`) or a timeout set both on the rule and in
/// `service`; an A/B or cookie match that contradicts the rule's.
pub fn take_over(
    canary: &Canary,
    weights: Weights,
    mut desired: HTTPRoute,
    live: &Value,
) -> Result<HTTPRoute, String> {
    let Some(user) = user_spec(canary, live)? else {
        return Ok(desired);
    };
    let apex = canary.spec.apex_name();
    let ns = canary.metadata.namespace.as_deref();
    let routes_apex = |r: &HttpRouteRule| r.backend_refs.iter().any(|b| is_apex(b, apex, ns));
    if !user.rules.iter().any(routes_apex) {
        desired.spec.rules.extend(user.rules);
        return Ok(desired);
    }
    let s = &canary.spec.service;
    if !s.r#match.is_empty() {
        return Err(format!(
            "HTTPRoute {apex} has rules of its own for Service {apex}: service.match cannot narrow them; put the matches in the route's rules or remove service.match"
        ));
    }
    let service = service_filters(canary)?;
    let mut rules = vec![];
    for (i, r) in user.rules.into_iter().enumerate() {
        if !routes_apex(&r) {
            rules.push(r);
            continue;
        }
        let here = format!("HTTPRoute {apex} spec.rules[{i}]");
        let [b] = r.backend_refs.as_slice() else {
            let all: Vec<&str> = r.backend_refs.iter().map(|b| b.name.as_str()).collect();
            return Err(format!(
                "{here} sends traffic to Service {apex} and to other backends ({}): pennant splits only a rule whose one backendRef is Service {apex}; give the apex a rule of its own",
                all.join(", ")
            ));
        };
        let port = b.port.unwrap_or(s.port);
        if !exposed(canary, port) {
            return Err(format!(
                "{here} sends traffic to Service {apex} port {port}, which {apex}-primary and {apex}-canary do not expose (they serve service.port {}): point the rule at port {} or set service.port to {port}",
                s.port, s.port
            ));
        }
        let mut filters = r.filters.clone();
        for f in &service {
            if f.type_ != "RequestMirror" && filters.iter().any(|u| u.type_ == f.type_) {
                return Err(format!(
                    "{here} has a {} filter and the Canary's service sets one too; keep one of them",
                    f.type_
                ));
            }
            filters.push(f.clone());
        }
        let timeouts = merge_timeouts(r.timeouts.clone(), service_timeouts(canary))
            .map_err(|e| format!("{here} {e}"))?;
        // Sticky rules appear only once a cookie exists (weight > 0): refuse now, not mid-run.
        let sticky = canary
            .spec
            .analysis()
            .is_some_and(|a| a.session_affinity.is_some());
        if sticky
            && r.matches.iter().any(|m| {
                m.headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(COOKIE_HEADER))
            })
        {
            return Err(format!(
                "{here} matches the Cookie header, which analysis.sessionAffinity matches on"
            ));
        }
        let rule = ApexRule {
            name: r.name.clone(),
            matches: r.matches.clone(),
            filters,
            timeouts,
            port,
            backend_filters: b.filters.clone(),
            combine: and_matches,
        };
        let split = split_rule(canary, weights, rule)
            .map_err(|e| format!("{here} cannot take the analysis or cookie matches: {e}"))?;
        rules.extend(split);
    }
    desired.spec.rules = rules;
    Ok(desired)
}

/// True when `port` may be a port of the `-primary`/`-canary` Services (`canary::services`):
/// `service.port`, or with `service.portDiscovery` a container port other than the main one
/// (`targetPort`), which the pure builder cannot see and so trusts.
fn exposed(canary: &Canary, port: i32) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let s = &canary.spec.service;
    let main_target = matches!(s.target_port, Some(IntOrString::Int(t)) if t == port);
    port == s.port || s.port_discovery == Some(true) && !main_target
}

/// `timeouts.request` / `backendRequest` from `service.timeout` / `service.backendTimeout`.
fn service_timeouts(canary: &Canary) -> Option<HttpRouteTimeouts> {
    let s = &canary.spec.service;
    let non_empty = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
    let t = HttpRouteTimeouts {
        request: non_empty(&s.timeout),
        backend_request: non_empty(&s.backend_timeout),
    };
    (t != HttpRouteTimeouts::default()).then_some(t)
}

/// A user's rule timeouts with the `service` ones it does not set; an error when both set one
/// differently.
fn merge_timeouts(
    user: Option<HttpRouteTimeouts>,
    service: Option<HttpRouteTimeouts>,
) -> Result<Option<HttpRouteTimeouts>, String> {
    let (Some(u), Some(s)) = (&user, &service) else {
        return Ok(user.or(service));
    };
    let field = |what: &str, a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "has timeouts.{what} {a} and the Canary's service sets {b}; keep one of them"
        )),
        _ => Ok(a.clone().or_else(|| b.clone())),
    };
    Ok(Some(HttpRouteTimeouts {
        request: field("request", &u.request, &s.request)?,
        backend_request: field("backendRequest", &u.backend_request, &s.backend_request)?,
    }))
}

fn normalized(p: &ParentReference, route_ns: Option<&str>) -> ParentReference {
    ParentReference {
        group: Some(p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.into())),
        kind: Some(p.kind.clone().unwrap_or_else(|| "Gateway".into())),
        namespace: p.namespace.clone().or(route_ns.map(str::to_string)),
        ..p.clone()
    }
}

/// Flagger's check before reading weights: every parent status whose `parentRef` is one of the
/// spec's must have its `Accepted` condition `True` with `observedGeneration` ≥ the route's
/// generation. Parents without a status pass (the gateway has not reported yet). The error names
/// the first parent that fails.
pub fn route_accepted(route: &HTTPRoute) -> Result<(), String> {
    let ns = route.metadata.namespace.as_deref();
    let generation = route.metadata.generation.unwrap_or(0);
    let parents = route.status.iter().flat_map(|s| s.parents.iter());
    for status in parents {
        let status_ref = normalized(&status.parent_ref, ns);
        if !route
            .spec
            .parent_refs
            .iter()
            .any(|p| normalized(p, ns) == status_ref)
        {
            continue;
        }
        for c in status.conditions.iter().filter(|c| c.type_ == "Accepted") {
            if c.status != "True" || c.observed_generation.unwrap_or(0) < generation {
                return Err(format!(
                    "HTTPRoute {}.{} parent {} not accepted at generation {generation}: {}",
                    route.metadata.name.as_deref().unwrap_or(""),
                    ns.unwrap_or(""),
                    status.parent_ref.name,
                    c.message
                        .as_deref()
                        .or(c.reason.as_deref())
                        .unwrap_or(&c.status)
                ));
            }
        }
    }
    Ok(())
}

/// The split of HTTPRoute `route` for `canary` (every split rule of a taken-over route carries
/// the same weights): the first rule with a `<apex>-canary` backendRef
/// (under session affinity, that is not a sticky `Cookie` rule) gives both weights (an absent weight is Gateway API's default 1); `mirror` is a `RequestMirror`
/// filter of that rule targeting `<apex>-canary`. `None` when no rule has the canary backend,
/// both weights are 0, or a parent has not accepted the route ([`route_accepted`]).
pub fn read_route_weights(canary: &Canary, route: &HTTPRoute) -> Option<Weights> {
    let (_, primary, canary_svc) = names(canary);
    route_accepted(route).ok()?;
    let sa = canary
        .spec
        .analysis()
        .and_then(|a| a.session_affinity.as_ref());
    let rule = route.spec.rules.iter().find(|r| {
        r.backend_refs.iter().any(|b| b.name == canary_svc)
            && !sa.is_some_and(|sa| is_sticky(r, sa))
    })?;
    let weight_of = |name: &str| {
        rule.backend_refs
            .iter()
            .find(|b| b.name == name)
            .map_or(0, |b| b.weight.unwrap_or(1))
    };
    let mirror = rule.filters.iter().any(|f| {
        f.type_ == "RequestMirror"
            && f.request_mirror
                .as_ref()
                .is_some_and(|m| m.backend_ref.name == canary_svc)
    });
    let w = Weights {
        primary: weight_of(&primary),
        canary: weight_of(&canary_svc),
        mirror,
    };
    (w.primary != 0 || w.canary != 0).then_some(w)
}

impl Router for GatewayApiRouter {
    fn resources(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<HTTPRoute>(&())]
    }

    /// The HTTPRoute's fields ([`GatewayApiRouter::http_route`]); not `analysis.mirrorWeight`
    /// (a mirror filter's `percent` needs Gateway API 1.2, Flagger ignores it too).
    fn reads(&self) -> &'static [&'static str] {
        &[
            "service.gatewayRefs",
            "service.hosts",
            "service.match",
            "service.rewrite",
            "service.timeout",
            "service.backendTimeout",
            "service.headers",
            "service.corsPolicy",
            "service.mirror",
        ]
    }

    /// The live HTTPRoute `<apex>`: a user's route is taken over with its rules ([`take_over`]).
    fn inputs(&self, canary: &Canary) -> Vec<(&'static str, String)> {
        vec![("HTTPRoute", canary.spec.apex_name().to_string())]
    }

    /// `[HTTPRoute <apex>]`; a user's same-named route keeps its rules ([`take_over`]).
    fn build(
        &self,
        canary: &Canary,
        weights: Weights,
        inputs: &[Value],
    ) -> Result<Vec<Value>, String> {
        let mut route = self.http_route(canary, weights)?;
        if let Some(live) = live_value(canary, inputs) {
            route = take_over(canary, weights, route, live)?;
        }
        let v = serde_json::to_value(&route).map_err(|e| format!("serializing HTTPRoute: {e}"))?;
        Ok(vec![v])
    }

    /// The HTTPRoute `<apex>` of `live`, read by [`read_route_weights`].
    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights> {
        read_route_weights(canary, &live_route(canary, live)?)
    }

    /// A parent that has not accepted the route's generation ([`route_accepted`]).
    fn pending(&self, canary: &Canary, live: &[Value]) -> Option<String> {
        route_accepted(&live_route(canary, live)?).err()
    }
}

/// `gatewayapi:v1beta1`: [`GatewayApiRouter`]'s HTTPRoute written as
/// `gateway.networking.k8s.io/v1beta1` (the API server stores one object and serves both
/// versions, so reading goes through v1).
#[derive(Clone, Copy, Debug, Default)]
pub struct GatewayApiV1beta1Router;

/// API version of HTTPRoutes written for `gatewayapi:v1beta1`.
pub const V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";

impl Router for GatewayApiV1beta1Router {
    fn resources(&self) -> Vec<ApiResource> {
        GatewayApiRouter.resources()
    }

    fn reads(&self) -> &'static [&'static str] {
        GatewayApiRouter.reads()
    }

    fn inputs(&self, canary: &Canary) -> Vec<(&'static str, String)> {
        GatewayApiRouter.inputs(canary)
    }

    fn build(
        &self,
        canary: &Canary,
        weights: Weights,
        inputs: &[Value],
    ) -> Result<Vec<Value>, String> {
        let mut objs = GatewayApiRouter.build(canary, weights, inputs)?;
        for o in &mut objs {
            o["apiVersion"] = Value::String(V1BETA1.into());
        }
        Ok(objs)
    }

    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights> {
        GatewayApiRouter.read_weights(canary, live)
    }

    fn pending(&self, canary: &Canary, live: &[Value]) -> Option<String> {
        GatewayApiRouter.pending(canary, live)
    }
}

/// The HTTPRoute `<apex>` among `objs`.
fn live_value<'a>(canary: &Canary, objs: &'a [Value]) -> Option<&'a Value> {
    super::find(
        objs,
        &HTTPRoute::group(&()),
        &HTTPRoute::kind(&()),
        canary.spec.apex_name(),
    )
}

/// The HTTPRoute `<apex>` among `objs`, if it parses.
fn live_route(canary: &Canary, objs: &[Value]) -> Option<HTTPRoute> {
    serde_json::from_value(live_value(canary, objs)?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryStatus};
    use proptest::prelude::*;

    fn split(canary: i32) -> Weights {
        Weights {
            primary: 100 - canary,
            canary,
            mirror: false,
        }
    }

    /// Flagger's Gateway API tutorial Canary
    /// (`docs/gitbook/tutorials/gatewayapi-progressive-delivery.md`).
    fn gw_canary() -> Canary {
        let mut c: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "gatewayapi:v1",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "progressDeadlineSeconds": 60,
                "service": {"port": 9898, "targetPort": 9898, "hosts": ["www.example.com"],
                            "gatewayRefs": [{"name": "gateway", "namespace": "istio-ingress"}]},
                "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]}
            }
        }))
        .unwrap();
        c.metadata.uid = Some("6f1c0a4e-0000-4000-8000-000000000001".into());
        c
    }

    /// The same, with every `service` option the router translates.
    fn full_canary() -> Canary {
        let mut c = gw_canary();
        let s = &mut c.spec.service;
        s.timeout = Some("30s".into());
        s.backend_timeout = Some("10s".into());
        s.r#match = vec![
            json!({"uri": {"prefix": "/api"}, "method": {"exact": "GET"},
                   "headers": {"x-b": {"regex": "b.*"}, "x-a": {"exact": "a"}},
                   "queryParams": {"debug": {"exact": "1"}}}),
            json!({"uri": {"exact": "/healthz"}}),
        ];
        s.headers = Some(json!({
            "request": {"set": {"x-z": "z", "x-y": "y"}, "remove": ["x-internal"]},
            "response": {"add": {"x-served-by": "pennant"}}
        }));
        s.rewrite = Some(json!({"uri": "/", "authority": "backend.local"}));
        s.mirror = vec![json!({"backendRef": {"name": "shadow", "port": 80}})];
        s.cors_policy = Some(json!({
            "allowOrigins": [{"exact": "https://example.com"}],
            "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom"],
            "exposeHeaders": [], "allowCredentials": true, "maxAge": "24h"
        }));
        s.apex = Some(crate::api::CustomMetadata {
            labels: [("tier".to_string(), "web".to_string())].into(),
            annotations: Default::default(),
        });
        c
    }

    fn ab_canary() -> Canary {
        let mut c = gw_canary();
        c.spec.analysis = Some(CanaryAnalysis {
            interval: Some("1m".into()),
            iterations: Some(10),
            threshold: Some(2),
            r#match: vec![
                json!({"headers": {"x-canary": {"exact": "insider"}}}),
                json!({"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}),
            ],
            ..Default::default()
        });
        c
    }

    fn bg_mirror_canary() -> Canary {
        let mut c = gw_canary();
        c.spec.analysis = Some(CanaryAnalysis {
            interval: Some("1m".into()),
            iterations: Some(10),
            threshold: Some(2),
            mirror: Some(true),
            mirror_weight: Some(50),
            ..Default::default()
        });
        c
    }

    fn build(c: &Canary, w: Weights) -> Vec<Value> {
        GatewayApiRouter.build(c, w, &[]).unwrap()
    }

    fn spec(c: &Canary, w: Weights) -> Value {
        serde_json::to_value(GatewayApiRouter.http_route(c, w).unwrap().spec).unwrap()
    }

    #[test]
    fn flagger_gatewayapi_example_100_0() {
        insta::assert_yaml_snapshot!(build(&gw_canary(), split(0)));
    }

    #[test]
    fn flagger_gatewayapi_example_70_30() {
        insta::assert_yaml_snapshot!(build(&gw_canary(), split(30)));
    }

    #[test]
    fn all_service_options_70_30() {
        insta::assert_yaml_snapshot!(build(&full_canary(), split(30)));
    }

    #[test]
    fn ab_during_iterations() {
        insta::assert_yaml_snapshot!(build(&ab_canary(), split(100)));
    }

    #[test]
    fn blue_green_mirror() {
        let mirrored = Weights {
            primary: 100,
            canary: 0,
            mirror: true,
        };
        insta::assert_yaml_snapshot!(build(&bg_mirror_canary(), mirrored));
    }

    #[test]
    fn mirror_only_in_blue_green() {
        let mirrored = Weights {
            primary: 100,
            canary: 0,
            mirror: true,
        };
        let s = spec(&gw_canary(), mirrored);
        assert!(s["rules"][0].get("filters").is_none());
        assert_eq!(
            GatewayApiRouter.read_weights(&gw_canary(), &build(&gw_canary(), mirrored)),
            Some(split(0))
        );
        let s = spec(&bg_mirror_canary(), split(0));
        assert!(s["rules"][0].get("filters").is_none());
    }

    #[test]
    fn ab_merges_service_matches_with_conditions() {
        let mut c = ab_canary();
        c.spec.service.r#match = vec![
            json!({"uri": {"prefix": "/api"}, "headers": {"x-service": {"exact": "replaced"}}}),
            json!({"sourceLabels": {"app": "dropped"}}),
        ];
        let s = spec(&c, split(100));
        assert_eq!(
            s["rules"][0]["matches"],
            json!([
                {"path": {"type": "PathPrefix", "value": "/api"},
                 "headers": [{"type": "Exact", "name": "x-canary", "value": "insider"}]},
                {"path": {"type": "PathPrefix", "value": "/api"},
                 "headers": [{"type": "RegularExpression", "name": "cookie", "value": "^(.*?;)?(canary=always)(;.*)?$"}]}
            ])
        );
        assert_eq!(
            s["rules"][1],
            json!({"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                                "headers": [{"type": "Exact", "name": "x-service", "value": "replaced"}]}],
                   "backendRefs": [{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100}]})
        );
    }

    #[test]
    fn invalid_matches_and_missing_gateway_refs_are_errors() {
        let mut c = gw_canary();
        c.spec.service.r#match = vec![json!({"uri": {"suffix": ".png"}})];
        assert_eq!(
            GatewayApiRouter.build(&c, split(0), &[]).unwrap_err(),
            r#"Invalid request matching selectors: {"suffix":".png"}"#
        );
        c.spec.service.r#match = vec![json!({"headers": {"x": {"prefix": "a"}}})];
        assert!(GatewayApiRouter.build(&c, split(0), &[]).is_err());
        c.spec.service.r#match = vec![json!({"method": {"regex": "G.*"}})];
        assert!(GatewayApiRouter.build(&c, split(0), &[]).is_err());
        let mut c = gw_canary();
        c.spec.service.gateway_refs.clear();
        assert_eq!(
            GatewayApiRouter.build(&c, split(0), &[]).unwrap_err(),
            "GatewayRefs must be specified when using Gateway API as a provider."
        );
        let mut c = gw_canary();
        c.spec.service.cors_policy = Some(json!({"allowOrigins": [{"regex": ".*"}]}));
        assert_eq!(
            GatewayApiRouter.build(&c, split(0), &[]).unwrap_err(),
            r#"Gateway API CORS supports only exact allowOrigins, got {"regex":".*"}"#
        );
        c.spec.service.cors_policy = Some(json!({"maxAge": "1d"}));
        assert!(GatewayApiRouter.build(&c, split(0), &[]).is_err());
    }

    #[test]
    fn rewrite_full_path_and_prefix() {
        let mut c = gw_canary();
        c.spec.service.rewrite = Some(json!({"uri": "/v2", "type": "ReplaceFullPath"}));
        assert_eq!(
            spec(&c, split(0))["rules"][0]["filters"],
            json!([{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2"}}}])
        );
        c.spec.service.rewrite = Some(json!({"type": "ReplaceFullPath"}));
        assert!(spec(&c, split(0))["rules"][0].get("filters").is_none());
    }

    fn sticky_canary(primary_cookie: bool) -> Canary {
        let mut c = gw_canary();
        c.spec.analysis.as_mut().unwrap().session_affinity = Some(SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            primary_cookie_name: primary_cookie.then(|| "flagger-primary".into()),
            max_age: Some(3600),
            path: Some("/".into()),
            http_only: Some(true),
            ..Default::default()
        });
        c.status = Some(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=LpsIaLdoNZ".into()),
            primary_session_affinity_cookie: primary_cookie
                .then(|| "flagger-primary=XkAbCdEfGh".into()),
            ..Default::default()
        });
        c
    }

    #[test]
    fn session_affinity_70_30() {
        insta::assert_yaml_snapshot!(spec(&sticky_canary(true), split(30)));
    }

    #[test]
    fn session_affinity_expires_the_previous_cookie_at_weight_0() {
        let mut c = sticky_canary(false);
        let status = c.status.as_mut().unwrap();
        status.previous_session_affinity_cookie = status.session_affinity_cookie.take();
        let s = spec(&c, split(0));
        assert_eq!(s["rules"].as_array().unwrap().len(), 2);
        assert_eq!(
            s["rules"][0]["matches"],
            json!([{"headers": [{"type": "RegularExpression", "name": "Cookie",
                                 "value": ".*flagger-cookie.*LpsIaLdoNZ.*"}],
                    "path": {"type": "PathPrefix", "value": "/"}}])
        );
        assert_eq!(
            s["rules"][0]["filters"],
            json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier":
                     {"add": [{"name": "Set-Cookie", "value": "flagger-cookie=LpsIaLdoNZ; Max-Age=-1"}]}}])
        );
        assert_eq!(s["rules"][0]["backendRefs"][0]["weight"], 100);
        // No cookie at all: only the weighted rule.
        c.status = None;
        assert_eq!(spec(&c, split(0))["rules"].as_array().unwrap().len(), 1);
        assert_eq!(spec(&c, split(30))["rules"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn session_affinity_round_trip_skips_sticky_rules() {
        for primary in [false, true] {
            let c = sticky_canary(primary);
            for w in [split(0), split(10), split(50), split(100)] {
                assert_eq!(GatewayApiRouter.read_weights(&c, &build(&c, w)), Some(w));
            }
        }
    }

    #[test]
    fn takeover_keeps_the_users_other_rules() {
        let c = gw_canary();
        let live = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"parentRefs": [{"name": "gateway", "namespace": "istio-ingress"}],
                     "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]}]}
        });
        let desired = GatewayApiRouter.http_route(&c, split(30)).unwrap();
        let merged = take_over(&c, split(30), desired.clone(), &live).unwrap();
        assert_eq!(merged.spec.rules.len(), 2);
        assert_eq!(merged.spec.rules[0], desired.spec.rules[0]);
        assert_eq!(
            serde_json::to_value(&merged.spec.rules[1]).unwrap(),
            live["spec"]["rules"][0]
        );
        let v = serde_json::to_value(&merged).unwrap();
        assert_eq!(GatewayApiRouter.read_weights(&c, &[v]), Some(split(30)));
        // A route pennant created has no user rules.
        let mut ours = serde_json::to_value(&merged).unwrap();
        ours["spec"]["rules"]
            .as_array_mut()
            .unwrap()
            .push(live["spec"]["rules"][0].clone());
        assert_eq!(
            take_over(&c, split(30), desired.clone(), &ours)
                .unwrap()
                .spec,
            desired.spec
        );
    }

    /// Flagger #1857: the user's `httpbin` route, all three rules to the apex Service.
    fn users_three_rules() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"parentRefs": [{"name": "gateway", "namespace": "istio-ingress"}],
                     "hostnames": ["www.example.com"],
                     "rules": [
                {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"set": [{"name": "x-probe", "value": "health"}]}}],
                 "backendRefs": [{"group": "", "kind": "Service", "name": "podinfo", "port": 9898, "weight": 1}]},
                {"matches": [{"path": {"type": "Exact", "value": "/readyz"}}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"remove": ["x-debug"]}}],
                 "backendRefs": [{"name": "podinfo", "port": 9898}]},
                {"name": "api",
                 "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                              "headers": [{"type": "Exact", "name": "x-tenant", "value": "blue"}]}],
                 "timeouts": {"request": "5s"},
                 "backendRefs": [{"name": "podinfo", "port": 9898}]}]}
        })
    }

    fn taken_over(c: &Canary, w: Weights, live: &Value) -> Result<Vec<Value>, String> {
        GatewayApiRouter.build(c, w, std::slice::from_ref(live))
    }

    #[test]
    fn takeover_of_three_rules_to_the_apex_100_0() {
        let live = users_three_rules();
        insta::assert_yaml_snapshot!(taken_over(&gw_canary(), split(0), &live).unwrap());
    }

    /// Issue 11: `kubectl apply` then `kubectl patch` (rule 0 `/healthz` → `/livez`): the
    /// takeover keeps the live rules, not kubectl's older last-applied record.
    #[test]
    fn takeover_keeps_the_live_rules_not_kubectls_last_applied_record() {
        let mut live = users_three_rules();
        let applied = json!({"spec": live["spec"]}).to_string();
        live["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
        live["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("/livez");
        let built = taken_over(&gw_canary(), split(30), &live).unwrap();
        assert_eq!(
            built[0]["spec"]["rules"][0]["matches"],
            json!([{"path": {"type": "Exact", "value": "/livez"}}])
        );
    }

    /// Issue 11: a rule to `podinfo:9898` with `service.port` 80 was re-pointed at
    /// `podinfo-primary:9898`, a port that Service does not expose.
    #[test]
    fn takeover_refuses_a_rule_port_the_services_do_not_expose() {
        let live = users_three_rules();
        let mut c = gw_canary();
        c.spec.service.port = 80;
        let err = taken_over(&c, split(0), &live).unwrap_err();
        assert_eq!(
            err,
            "HTTPRoute podinfo spec.rules[0] sends traffic to Service podinfo port 9898, which podinfo-primary and podinfo-canary do not expose (they serve service.port 80): point the rule at port 80 or set service.port to 9898"
        );
        // 9898 is the main container port (targetPort): never discovered either.
        c.spec.service.port_discovery = Some(true);
        assert!(taken_over(&c, split(0), &live).is_err());
        // Another container port is, with portDiscovery.
        c.spec.service.target_port = None;
        assert!(taken_over(&c, split(0), &live).is_ok());
    }

    #[test]
    fn takeover_of_three_rules_to_the_apex_70_30() {
        let live = users_three_rules();
        let built = taken_over(&gw_canary(), split(30), &live).unwrap();
        let rules = built[0]["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3, "no PathPrefix / rule added: {rules:#?}");
        for (rule, user) in rules.iter().zip(live["spec"]["rules"].as_array().unwrap()) {
            assert_eq!(rule["matches"], user["matches"]);
            assert_eq!(rule["filters"], user["filters"]);
            assert_eq!(rule["timeouts"], user["timeouts"]);
            assert_eq!(rule["name"], user["name"]);
            let w: Vec<(&str, i64)> = rule["backendRefs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| (b["name"].as_str().unwrap(), b["weight"].as_i64().unwrap()))
                .collect();
            assert_eq!(w, [("podinfo-primary", 70), ("podinfo-canary", 30)]);
        }
        insta::assert_yaml_snapshot!(built);
    }

    #[test]
    fn takeover_round_trip_and_idempotence() {
        let live = users_three_rules();
        for c in [
            gw_canary(),
            ab_canary(),
            sticky_canary(true),
            bg_mirror_canary(),
        ] {
            let ws = if c.spec.analysis().unwrap().mirror == Some(true) {
                vec![
                    Weights {
                        primary: 100,
                        canary: 0,
                        mirror: true,
                    },
                    split(0),
                ]
            } else {
                vec![split(0), split(30), split(100)]
            };
            for w in ws {
                let built = taken_over(&c, w, &live).unwrap();
                assert_eq!(GatewayApiRouter.read_weights(&c, &built), Some(w));
                // Once applied, the route carries the user's spec in the original-configuration
                // annotation: rebuilding from it gives the same route.
                let mut applied = built[0].clone();
                applied["metadata"]["ownerReferences"] = Value::Null;
                applied["metadata"]["annotations"][crate::api::meta::ORIGINAL_CONFIGURATION] =
                    json!(live["spec"].to_string());
                assert_eq!(taken_over(&c, w, &applied).unwrap(), built);
            }
        }
    }

    #[test]
    fn takeover_ab_and_sticky_rules_narrow_the_users_matches() {
        let live = users_three_rules();
        let s = &taken_over(&ab_canary(), split(100), &live).unwrap()[0]["spec"];
        // Each user rule: the A/B rule (its matches AND each analysis match), then its own
        // matches to the primary.
        assert_eq!(s["rules"].as_array().unwrap().len(), 6);
        assert_eq!(
            s["rules"][4]["matches"],
            json!([
                {"path": {"type": "PathPrefix", "value": "/api"},
                 "headers": [{"type": "Exact", "name": "x-tenant", "value": "blue"},
                             {"type": "Exact", "name": "x-canary", "value": "insider"}]},
                {"path": {"type": "PathPrefix", "value": "/api"},
                 "headers": [{"type": "Exact", "name": "x-tenant", "value": "blue"},
                             {"type": "RegularExpression", "name": "cookie", "value": "^(.*?;)?(canary=always)(;.*)?$"}]}
            ])
        );
        assert!(s["rules"][4].get("name").is_none());
        assert_eq!(s["rules"][5]["name"], "api");
        assert_eq!(
            s["rules"][5]["matches"],
            live["spec"]["rules"][2]["matches"]
        );
        assert_eq!(
            s["rules"][5]["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100}])
        );
        let s = &taken_over(&sticky_canary(false), split(30), &live).unwrap()[0]["spec"];
        assert_eq!(s["rules"].as_array().unwrap().len(), 6);
        assert_eq!(
            s["rules"][0]["matches"],
            json!([{"path": {"type": "Exact", "value": "/healthz"},
                    "headers": [{"type": "RegularExpression", "name": "Cookie",
                                 "value": ".*flagger-cookie.*LpsIaLdoNZ.*"}]}])
        );
        assert_eq!(s["rules"][0]["backendRefs"][1]["weight"], 100);
        let mut cookie_rule = live.clone();
        cookie_rule["spec"]["rules"][1]["matches"][0]["headers"] =
            json!([{"name": "cookie", "value": "x"}]);
        assert_eq!(
            taken_over(&sticky_canary(false), split(0), &cookie_rule).unwrap_err(),
            "HTTPRoute podinfo spec.rules[1] matches the Cookie header, which analysis.sessionAffinity matches on"
        );
        // An A/B header the user's rule already matches otherwise cannot be combined.
        let mut c = ab_canary();
        c.spec.analysis.as_mut().unwrap().r#match =
            vec![json!({"headers": {"x-tenant": {"exact": "green"}}})];
        assert_eq!(
            taken_over(&c, split(100), &live).unwrap_err(),
            r#"HTTPRoute podinfo spec.rules[2] cannot take the analysis or cookie matches: header x-tenant is matched both Exact "blue" and Exact "green""#
        );
    }

    #[test]
    fn takeover_refuses_a_rule_field_it_would_drop() {
        let mut live = users_three_rules();
        live["spec"]["rules"][2]["retry"] = json!({"attempts": 3});
        assert_eq!(
            taken_over(&gw_canary(), split(0), &live).unwrap_err(),
            "HTTPRoute podinfo: pennant cannot carry spec.rules[2].retry through a takeover; remove it or let the Canary generate the route"
        );
        let mut live = users_three_rules();
        live["spec"]["rules"][0]["filters"][0]["extensionRef"] = json!(null);
        live["spec"]["rules"][1]["matches"][0]["queryParams"] = json!([]);
        assert!(taken_over(&gw_canary(), split(0), &live).is_ok());
    }

    #[test]
    fn takeover_refuses_a_rule_it_cannot_split() {
        let mut live = users_three_rules();
        live["spec"]["rules"][1]["backendRefs"] = json!([
            {"name": "podinfo", "port": 9898, "weight": 90},
            {"name": "legacy", "port": 80, "weight": 10}
        ]);
        assert_eq!(
            taken_over(&gw_canary(), split(0), &live).unwrap_err(),
            "HTTPRoute podinfo spec.rules[1] sends traffic to Service podinfo and to other backends (podinfo, legacy): pennant splits only a rule whose one backendRef is Service podinfo; give the apex a rule of its own"
        );
        let live = users_three_rules();
        let mut c = gw_canary();
        c.spec.service.r#match = vec![json!({"uri": {"prefix": "/"}})];
        assert!(
            taken_over(&c, split(0), &live)
                .unwrap_err()
                .contains("service.match cannot narrow them")
        );
        let mut c = gw_canary();
        c.spec.service.headers = Some(json!({"request": {"set": {"x-a": "a"}}}));
        assert_eq!(
            taken_over(&c, split(0), &live).unwrap_err(),
            "HTTPRoute podinfo spec.rules[0] has a RequestHeaderModifier filter and the Canary's service sets one too; keep one of them"
        );
        let mut c = gw_canary();
        c.spec.service.timeout = Some("30s".into());
        assert_eq!(
            taken_over(&c, split(0), &live).unwrap_err(),
            "HTTPRoute podinfo spec.rules[2] has timeouts.request 5s and the Canary's service sets 30s; keep one of them"
        );
        // Filters and timeouts the rules do not set are added, as on the generated rule.
        c.spec.service.timeout = None;
        c.spec.service.backend_timeout = Some("2s".into());
        c.spec.service.headers = Some(json!({"response": {"set": {"x-b": "b"}}}));
        let s = &taken_over(&c, split(0), &live).unwrap()[0]["spec"];
        assert_eq!(
            s["rules"][2]["timeouts"],
            json!({"request": "5s", "backendRequest": "2s"})
        );
        assert_eq!(
            s["rules"][1]["filters"][1]["type"],
            "ResponseHeaderModifier"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_seconds("24h"), Some(86_400));
        assert_eq!(duration_seconds("1h30m5s"), Some(5_405));
        assert_eq!(duration_seconds("1500ms"), Some(1));
        assert_eq!(duration_seconds(""), None);
        assert_eq!(duration_seconds("5"), None);
        assert_eq!(duration_seconds("1d"), None);
    }

    fn live_with_status(c: &Canary, w: Weights, status: &str, observed: i64) -> Value {
        let mut v = build(c, w).remove(0);
        v["metadata"]["generation"] = json!(2);
        v["status"] = json!({"parents": [{
        "parentRef": {"name": "gateway", "namespace": "istio-ingress"},
        "controllerName": "istio.io/gateway-controller",
        "conditions": [
            {"type": "Accepted", "status": status, "observedGeneration": observed,
             "reason": "NotAllowedByListeners", "message": "no listener"},
            {"type": "ResolvedRefs", "status": "True", "observedGeneration": observed}
        ]}]});
        v
    }

    #[test]
    fn read_weights_waits_for_the_parent_to_accept_the_last_generation() {
        let c = gw_canary();
        let ok = live_with_status(&c, split(30), "True", 2);
        assert_eq!(GatewayApiRouter.read_weights(&c, &[ok]), Some(split(30)));
        let stale = live_with_status(&c, split(30), "True", 1);
        assert_eq!(
            GatewayApiRouter.read_weights(&c, std::slice::from_ref(&stale)),
            None
        );
        let route: HTTPRoute = serde_json::from_value(stale).unwrap();
        assert_eq!(
            route_accepted(&route).unwrap_err(),
            "HTTPRoute podinfo.test parent gateway not accepted at generation 2: no listener"
        );
        let refused = live_with_status(&c, split(30), "False", 2);
        assert_eq!(GatewayApiRouter.read_weights(&c, &[refused]), None);
        // A parent that is not one of the spec's does not count.
        let mut other = live_with_status(&c, split(30), "False", 2);
        other["status"]["parents"][0]["parentRef"]["name"] = json!("other");
        assert_eq!(GatewayApiRouter.read_weights(&c, &[other]), Some(split(30)));
    }

    #[test]
    fn read_weights_of_a_hand_written_route() {
        let c = gw_canary();
        let live = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]},
                {"backendRefs": [{"name": "podinfo-primary", "port": 9898},
                                 {"name": "podinfo-canary", "port": 9898, "weight": 0}]}]}
        });
        assert_eq!(
            GatewayApiRouter.read_weights(&c, std::slice::from_ref(&live)),
            Some(Weights {
                primary: 1,
                canary: 0,
                mirror: false
            })
        );
        assert_eq!(GatewayApiRouter.read_weights(&c, &[]), None);
        let mut other = live;
        other["metadata"]["name"] = json!("other");
        assert_eq!(GatewayApiRouter.read_weights(&c, &[other]), None);
    }

    #[test]
    fn round_trip_all_fixtures() {
        let mirrored = Weights {
            primary: 100,
            canary: 0,
            mirror: true,
        };
        for c in [gw_canary(), full_canary(), ab_canary()] {
            for w in [split(0), split(30), split(100)] {
                assert_eq!(GatewayApiRouter.read_weights(&c, &build(&c, w)), Some(w));
            }
        }
        let c = bg_mirror_canary();
        assert_eq!(
            GatewayApiRouter.read_weights(&c, &build(&c, mirrored)),
            Some(mirrored)
        );
    }

    proptest! {
        #[test]
        fn read_weights_inverts_build(canary in 0..=100i32, mirror: bool, full: bool, ab: bool) {
            let c = if ab { ab_canary() } else if full { full_canary() } else { bg_mirror_canary() };
            // Mirroring only exists in blue/green (`bg_mirror_canary`).
            let w = Weights { primary: 100 - canary, canary, mirror: mirror && !ab && !full };
            let objs = GatewayApiRouter.build(&c, w, &[]).unwrap();
            prop_assert_eq!(GatewayApiRouter.read_weights(&c, &objs), Some(w));
        }
    }

    #[test]
    fn v1beta1_writes_the_same_route_under_the_older_version() {
        let c = gw_canary();
        let v1 = GatewayApiRouter.build(&c, split(30), &[]).unwrap();
        let beta = GatewayApiV1beta1Router.build(&c, split(30), &[]).unwrap();
        assert_eq!(beta[0]["apiVersion"], V1BETA1);
        assert_eq!(beta[0]["spec"], v1[0]["spec"]);
        assert_eq!(
            GatewayApiV1beta1Router.read_weights(&c, &beta),
            Some(split(30))
        );
    }
}
