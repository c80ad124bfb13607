//! Istio router: the `<apex>-primary` / `<apex>-canary` DestinationRules and the `<apex>`
//! VirtualService, as Flagger's `IstioRouter` writes them (Flagger §3.2).
//!
//! Differences from Flagger, all deliberate:
//! - the whole VirtualService is rebuilt from the weights at every reconcile (the state machine
//!   derives the weights from status), so editing the Canary mid-run changes the route without
//!   resetting traffic (Flagger #929);
//! - in A/B mode (`analysis.match`) the fallback rule always sends 100 to the primary (Flagger
//!   writes the current primary weight there, which is 0 during A/B iterations);
//! - the DestinationRules also get the Flux "disabled" annotations, like every routing object.
//!
//! Session affinity: sticky routes from the cookies in the Canary's status ([`sticky_routes`]).

use kube::Resource;
use kube::api::ApiResource;
use serde_json::{Map, Value, json};

use super::Router;
use crate::api::Canary;
use crate::api::meta::{owner_reference, routing_metadata};
use crate::ext::istio::{
    Destination, DestinationRule, DestinationRuleSpec, HttpRoute, Percent, PortSelector,
    RouteDestination, TcpRoute, VirtualService, VirtualServiceSpec,
};
use crate::router::Weights;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Flagger's Istio router. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct IstioRouter;

/// `appProtocol: tcp` (any case) selects TCP routes, as in Flagger.
pub fn is_tcp(canary: &Canary) -> bool {
    canary
        .spec
        .service
        .app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
}

fn names(canary: &Canary) -> (String, String, String) {
    let apex = canary.spec.apex_name().to_string();
    (
        apex.clone(),
        format!("{apex}-primary"),
        format!("{apex}-canary"),
    )
}

impl IstioRouter {
    /// The two DestinationRules, `[<apex>-canary, <apex>-primary]` (Flagger's order):
    /// `spec: {host: <name>, trafficPolicy: service.trafficPolicy}`, no subsets.
    pub fn destination_rules(&self, canary: &Canary) -> Vec<DestinationRule> {
        let (_, primary, canary_host) = names(canary);
        let (_, annotations) = routing_metadata(None);
        [canary_host, primary]
            .into_iter()
            .map(|host| DestinationRule {
                metadata: ObjectMeta {
                    name: Some(host.clone()),
                    namespace: canary.metadata.namespace.clone(),
                    annotations: Some(annotations.clone()),
                    owner_references: Some(vec![owner_reference(canary)]),
                    ..Default::default()
                },
                spec: DestinationRuleSpec {
                    host,
                    traffic_policy: canary.spec.service.traffic_policy.clone(),
                },
            })
            .collect()
    }

    /// The VirtualService `<apex>` for `weights`.
    ///
    /// hosts: `service.hosts` plus `<apex>` (unless it or `*` is listed); gateways:
    /// `service.gateways`, or `["mesh"]`; with `delegation` both empty (an error if either is set).
    /// HTTP mode: one rule with `service.match/rewrite(uri, authority)/timeout/retries/corsPolicy/
    /// headers` routing `weights.primary` to `<apex>-primary` and `weights.canary` to
    /// `<apex>-canary`, plus `mirror: {host: <apex>-canary}` (and `mirrorPercentage` when
    /// `analysis.mirrorWeight > 0`) when `weights.mirror`. A/B mode (`analysis.match` set): the
    /// weighted rule matches `analysis.match × service.match`, then a fallback rule sends
    /// `service.match` to the primary. TCP mode: one `tcp` rule matching the ports of
    /// `service.match`.
    pub fn virtual_service(
        &self,
        canary: &Canary,
        weights: Weights,
    ) -> Result<VirtualService, String> {
        let (apex, primary, canary_host) = names(canary);
        let s = &canary.spec.service;
        let delegation = s.delegation.unwrap_or(false);
        let ns = canary.metadata.namespace.as_deref().unwrap_or("");
        if delegation && (!s.hosts.is_empty() || !s.gateways.is_empty()) {
            return Err(format!(
                "VirtualService {apex}.{ns} cannot have hosts and gateways when delegation enabled"
            ));
        }
        let (hosts, gateways) = if delegation {
            (vec![], vec![])
        } else {
            let mut hosts = s.hosts.clone();
            if !hosts.iter().any(|h| *h == apex || h == "*") {
                hosts.push(apex.clone());
            }
            let gateways = if s.gateways.is_empty() {
                vec!["mesh".to_string()]
            } else {
                s.gateways.clone()
            };
            (hosts, gateways)
        };

        // Flagger sets the destination port when port discovery adds ports and the route is
        // used by an ingress gateway (first gateway not `mesh`) or by a delegating VS.
        let port = (s.port_discovery.unwrap_or(false)
            && (s.gateways.first().is_some_and(|g| g != "mesh") || delegation))
            .then(|| PortSelector {
                number: u32::try_from(s.port).ok(),
            });
        let dest = |host: &str, weight: i32| RouteDestination {
            destination: Destination {
                host: host.to_string(),
                subset: None,
                port: port.clone(),
            },
            weight,
            headers: None,
        };
        let weighted = vec![
            dest(&primary, weights.primary),
            dest(&canary_host, weights.canary),
        ];

        let mut spec = VirtualServiceSpec {
            hosts,
            gateways,
            http: vec![],
            tcp: vec![],
        };
        if is_tcp(canary) {
            let ports = s
                .r#match
                .iter()
                .map(|m| match m.get("port") {
                    Some(p) => json!({ "port": p }),
                    None => json!({}),
                })
                .collect();
            spec.tcp = vec![TcpRoute {
                match_: ports,
                route: weighted,
            }];
        } else {
            let rule = |match_: Vec<Value>, route: Vec<RouteDestination>| HttpRoute {
                match_,
                route,
                rewrite: istio_rewrite(s.rewrite.as_ref()),
                timeout: s.timeout.clone().filter(|t| !t.is_empty()),
                retries: s.retries.clone(),
                cors_policy: s.cors_policy.clone(),
                headers: s.headers.clone(),
                ..Default::default()
            };
            let analysis = canary.spec.analysis();
            let ab_match = analysis.map(|a| a.r#match.as_slice()).unwrap_or_default();
            if let Some(sa) = analysis.and_then(|a| a.session_affinity.as_ref()) {
                let weighted = rule(s.r#match.clone(), weighted);
                spec.http = sticky_routes(canary, sa, weights, weighted, &s.r#match);
            } else if ab_match.is_empty() {
                let mut r = rule(s.r#match.clone(), weighted);
                if weights.mirror {
                    r.mirror = Some(Destination {
                        host: canary_host.clone(),
                        subset: None,
                        port: None,
                    });
                    r.mirror_percentage = analysis
                        .and_then(|a| a.mirror_weight)
                        .filter(|w| *w > 0)
                        .map(|w| Percent { value: w.into() });
                }
                spec.http = vec![r];
            } else {
                spec.http = vec![
                    rule(merge_match_conditions(ab_match, &s.r#match), weighted),
                    rule(s.r#match.clone(), vec![dest(&primary, 100)]),
                ];
            }
        }

        let (labels, annotations) = routing_metadata(s.apex.as_ref());
        Ok(VirtualService {
            metadata: ObjectMeta {
                name: Some(apex),
                namespace: canary.metadata.namespace.clone(),
                labels: (!labels.is_empty()).then_some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_reference(canary)]),
                ..Default::default()
            },
            spec,
        })
    }
}

/// The http routes under session affinity (Flagger §3.2), from the cookies the state machine
/// keeps in the Canary's status (`<name>=<value>`):
/// - canary weight > 0: the canary destination of `weighted` sets the canary cookie
///   (`Max-Age=<maxAge|86400>` and the configured attributes), the primary destination the
///   primary cookie if any (`Max-Age=<analysis interval>`); sticky routes first send requests
///   carrying a cookie (`Cookie` header regex `.*<name>.*<value>.*`, merged with
///   `service.match`) to its side alone;
/// - weight 0: a route matching the current (or previous) cookie expires it (`Max-Age=-1`)
///   and routes like `weighted`.
///
/// Without a cookie in status nothing sticky is written.
fn sticky_routes(
    canary: &Canary,
    sa: &crate::api::SessionAffinity,
    weights: Weights,
    mut weighted: HttpRoute,
    service_match: &[Value],
) -> Vec<HttpRoute> {
    let (_, primary, canary_host) = names(canary);
    let status = canary.status.as_ref();
    let cookie_of = |f: fn(&crate::api::CanaryStatus) -> &Option<String>| {
        status.and_then(|s| f(s).clone()).filter(|c| !c.is_empty())
    };
    let matching = |cookie: &str| {
        let (name, value) = cookie.split_once('=').unwrap_or((cookie, ""));
        let m = json!({"headers": {"Cookie": {"regex": format!(".*{name}.*{value}.*")}}});
        merge_match_conditions(&[m], service_match)
    };
    let set_cookie = |v: String| Some(json!({"response": {"add": {"Set-Cookie": v}}}));
    let only = |host: &str| {
        weighted
            .route
            .iter()
            .map(|d| RouteDestination {
                weight: if d.destination.host == host { 100 } else { 0 },
                headers: None,
                ..d.clone()
            })
            .collect::<Vec<_>>()
    };
    let mut routes = vec![];
    let current = cookie_of(|s| &s.session_affinity_cookie);
    if weights.canary > 0 {
        if let Some(cookie) = &current {
            routes.push(HttpRoute {
                match_: matching(cookie),
                route: only(&canary_host),
                ..weighted.clone()
            });
        }
        let primary_cookie = cookie_of(|s| &s.primary_session_affinity_cookie)
            .filter(|_| sa.primary_cookie_name.is_some());
        if let Some(cookie) = &primary_cookie {
            routes.push(HttpRoute {
                match_: matching(cookie),
                route: only(&primary),
                ..weighted.clone()
            });
        }
        let interval = canary
            .spec
            .analysis()
            .and_then(|a| a.interval.as_deref())
            .and_then(crate::api::parse_duration)
            .map_or(60, |d| d.as_secs() as i64);
        for d in &mut weighted.route {
            if d.destination.host == canary_host
                && let Some(c) = &current
            {
                let age = i64::from(sa.max_age.unwrap_or(86_400));
                d.headers = set_cookie(super::set_cookie_value(c, sa, age));
            } else if d.destination.host == primary
                && let Some(c) = &primary_cookie
            {
                d.headers = set_cookie(super::set_cookie_value(c, sa, interval));
            }
        }
    } else if let Some(previous) =
        current.or_else(|| cookie_of(|s| &s.previous_session_affinity_cookie))
    {
        routes.push(HttpRoute {
            match_: matching(&previous),
            headers: set_cookie(format!("{previous}; Max-Age=-1")),
            ..weighted.clone()
        });
    }
    routes.push(weighted);
    routes
}

/// Flagger's `GetIstioRewrite`: only `uri` and `authority` (the `type` field is Gateway API's).
fn istio_rewrite(rewrite: Option<&Value>) -> Option<Value> {
    let r = rewrite?.as_object()?;
    let kept: Map<String, Value> = ["uri", "authority"]
        .into_iter()
        .filter_map(|k| {
            r.get(k)
                .filter(|v| v.as_str() != Some(""))
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// Flagger's `mergeMatchConditions`: every analysis condition × every service match; each merged
/// entry is the service match with the condition's `headers` and `sourceLabels` put over it.
fn merge_match_conditions(conditions: &[Value], defaults: &[Value]) -> Vec<Value> {
    if defaults.is_empty() {
        return conditions.to_vec();
    }
    let mut out = vec![];
    for c in conditions {
        for d in defaults {
            let mut m = d.clone();
            if let (Some(m), Some(c)) = (m.as_object_mut(), c.as_object()) {
                for key in ["headers", "sourceLabels"] {
                    if let Some(v) = c.get(key) {
                        m.insert(key.to_string(), v.clone());
                    }
                }
            }
            out.push(m);
        }
    }
    out
}

fn to_json<T: serde::Serialize>(obj: &T) -> Result<Value, String> {
    serde_json::to_value(obj).map_err(|e| format!("serializing routing object: {e}"))
}

impl Router for IstioRouter {
    fn resources(&self) -> Vec<ApiResource> {
        vec![
            ApiResource::erase::<DestinationRule>(&()),
            ApiResource::erase::<VirtualService>(&()),
        ]
    }

    /// The VirtualService's and DestinationRules' fields (`service.rewrite`: `uri` and
    /// `authority` only, as in Flagger).
    fn reads(&self) -> &'static [&'static str] {
        &[
            "service.gateways",
            "service.hosts",
            "service.delegation",
            "service.trafficPolicy",
            "service.match",
            "service.rewrite",
            "service.retries",
            "service.timeout",
            "service.headers",
            "service.corsPolicy",
            "analysis.mirrorWeight",
        ]
    }

    /// `[DestinationRule <apex>-canary, DestinationRule <apex>-primary, VirtualService <apex>]`:
    /// the rules first, so the VirtualService never points at a host without its rule.
    fn build(&self, canary: &Canary, weights: Weights, _: &[Value]) -> Result<Vec<Value>, String> {
        let mut out = self
            .destination_rules(canary)
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(to_json(&self.virtual_service(canary, weights)?)?);
        Ok(out)
    }

    /// Flagger's `GetRoutes`: the first `http` (TCP mode: `tcp`) rule of VirtualService `<apex>`
    /// with a `<apex>-canary` destination gives both weights; `mirror` is that rule's mirror host
    /// being set. `None` if there is no such VirtualService or both weights are 0.
    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights> {
        let (apex, primary, canary_host) = names(canary);
        let vs = super::find(
            live,
            &VirtualService::group(&()),
            &VirtualService::kind(&()),
            &apex,
        )?;
        let spec: VirtualServiceSpec = serde_json::from_value(vs.get("spec")?.clone()).ok()?;
        let has_canary =
            |route: &[RouteDestination]| route.iter().any(|d| d.destination.host == canary_host);
        let (route, mirror) = if is_tcp(canary) {
            let rule = spec.tcp.iter().find(|r| has_canary(&r.route))?;
            (&rule.route, false)
        } else {
            // Under session affinity the sticky routes come first; the weighted one is last.
            let sticky = canary
                .spec
                .analysis()
                .is_some_and(|a| a.session_affinity.is_some());
            let mut rules = spec.http.iter().filter(|r| has_canary(&r.route));
            let rule = if sticky {
                rules.next_back()?
            } else {
                rules.next()?
            };
            let mirror = rule.mirror.as_ref().is_some_and(|m| !m.host.is_empty());
            (&rule.route, mirror)
        };
        let weight_of = |host: &str| {
            route
                .iter()
                .find(|d| d.destination.host == host)
                .map_or(0, |d| d.weight)
        };
        let w = Weights {
            primary: weight_of(&primary),
            canary: weight_of(&canary_host),
            mirror,
        };
        (w.primary != 0 || w.canary != 0).then_some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryAnalysis;
    use crate::api::fixtures::*;
    use proptest::prelude::*;

    fn split(canary: i32) -> Weights {
        Weights {
            primary: 100 - canary,
            canary,
            mirror: false,
        }
    }

    fn build(c: &Canary, w: Weights) -> Vec<Value> {
        IstioRouter.build(c, w, &[]).unwrap()
    }

    #[test]
    fn article_canary_100_0() {
        insta::assert_yaml_snapshot!(build(&article_canary(), split(0)));
    }

    #[test]
    fn article_canary_70_30() {
        insta::assert_yaml_snapshot!(build(&article_canary(), split(30)));
    }

    #[test]
    fn flagger_istio_example_100_0() {
        insta::assert_yaml_snapshot!(build(&flagger_istio_canary(), split(0)));
    }

    #[test]
    fn flagger_istio_example_70_30() {
        insta::assert_yaml_snapshot!(build(&flagger_istio_canary(), split(30)));
    }

    fn vs_spec(c: &Canary, w: Weights) -> Value {
        serde_json::to_value(IstioRouter.virtual_service(c, w).unwrap().spec).unwrap()
    }

    #[test]
    fn default_gateway_is_mesh_and_apex_host_is_added_once() {
        let mut c = article_canary();
        c.spec.service.gateways.clear();
        c.spec.service.hosts = vec!["web-app".into(), "a.example.com".into()];
        let spec = vs_spec(&c, split(0));
        assert_eq!(spec["gateways"], json!(["mesh"]));
        assert_eq!(spec["hosts"], json!(["web-app", "a.example.com"]));
        c.spec.service.hosts = vec!["*".into()];
        assert_eq!(vs_spec(&c, split(0))["hosts"], json!(["*"]));
    }

    #[test]
    fn mirror_only_when_mirrored_with_percentage_from_mirror_weight() {
        let mut c = article_canary();
        assert!(vs_spec(&c, split(0))["http"][0].get("mirror").is_none());
        let mirrored = Weights {
            primary: 100,
            canary: 0,
            mirror: true,
        };
        let spec = vs_spec(&c, mirrored);
        assert_eq!(spec["http"][0]["mirror"], json!({"host": "web-app-canary"}));
        assert!(spec["http"][0].get("mirrorPercentage").is_none());
        c.spec.analysis.as_mut().unwrap().mirror_weight = Some(50);
        let spec = vs_spec(&c, mirrored);
        assert_eq!(spec["http"][0]["mirrorPercentage"], json!({"value": 50}));
    }

    #[test]
    fn tcp_mode_when_app_protocol_is_tcp() {
        let mut c = flagger_istio_canary();
        c.spec.service.app_protocol = Some("TCP".into());
        c.spec.service.r#match = vec![json!({"port": 9000}), json!({"uri": {"prefix": "/"}})];
        let spec = vs_spec(&c, split(30));
        assert!(spec.get("http").is_none());
        assert_eq!(
            spec["tcp"],
            json!([{"match": [{"port": 9000}, {}],
                    "route": [{"destination": {"host": "podinfo-primary", "port": {"number": 80}}, "weight": 70},
                              {"destination": {"host": "podinfo-canary", "port": {"number": 80}}, "weight": 30}]}])
        );
        let objs = build(&c, split(30));
        assert_eq!(IstioRouter.read_weights(&c, &objs), Some(split(30)));
    }

    #[test]
    fn ab_mode_merges_conditions_and_falls_back_to_primary() {
        let mut c = flagger_istio_canary();
        c.spec.analysis = Some(CanaryAnalysis {
            r#match: vec![
                json!({"headers": {"x-canary": {"exact": "insider"}}}),
                json!({"sourceLabels": {"app": "tester"}}),
            ],
            ..Default::default()
        });
        let spec = vs_spec(&c, split(100));
        assert_eq!(
            spec["http"][0]["match"],
            json!([{"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "insider"}}},
                   {"uri": {"prefix": "/"}, "sourceLabels": {"app": "tester"}}])
        );
        assert_eq!(spec["http"][1]["match"], json!([{"uri": {"prefix": "/"}}]));
        assert_eq!(spec["http"][1]["route"].as_array().unwrap().len(), 1);
        assert_eq!(spec["http"][1]["route"][0]["weight"], 100);
        assert_eq!(
            IstioRouter.read_weights(&c, &build(&c, split(100))),
            Some(split(100))
        );
    }

    fn sticky_canary() -> Canary {
        let mut c = article_canary();
        c.spec.analysis.as_mut().unwrap().session_affinity = Some(crate::api::SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            primary_cookie_name: Some("primary-cookie".into()),
            max_age: Some(3600),
            path: Some("/".into()),
            ..Default::default()
        });
        c.status = Some(crate::api::CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=abcdefghij".into()),
            primary_session_affinity_cookie: Some("primary-cookie=klmnopqrst".into()),
            ..Default::default()
        });
        c
    }

    #[test]
    fn session_affinity_sticky_routes_while_the_canary_has_traffic() {
        let c = sticky_canary();
        insta::assert_yaml_snapshot!(vs_spec(&c, split(30)));
        let spec = vs_spec(&c, split(30));
        assert_eq!(
            spec["http"][0]["match"][0]["headers"]["Cookie"]["regex"],
            ".*flagger-cookie.*abcdefghij.*"
        );
        assert_eq!(spec["http"][0]["route"][1]["weight"], 100);
        assert_eq!(spec["http"][1]["route"][0]["weight"], 100);
        assert_eq!(
            spec["http"][2]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "flagger-cookie=abcdefghij; Max-Age=3600; Path=/"
        );
        // The weights read back from the weighted route, not the sticky ones.
        assert_eq!(
            IstioRouter.read_weights(&c, &build(&c, split(30))),
            Some(split(30))
        );
    }

    #[test]
    fn session_affinity_expires_the_previous_cookie_at_weight_zero() {
        let mut c = sticky_canary();
        c.status = Some(crate::api::CanaryStatus {
            previous_session_affinity_cookie: Some("flagger-cookie=abcdefghij".into()),
            ..Default::default()
        });
        let spec = vs_spec(&c, split(0));
        let http = spec["http"].as_array().unwrap();
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["headers"]["response"]["add"]["Set-Cookie"],
            "flagger-cookie=abcdefghij; Max-Age=-1"
        );
        assert_eq!(http[0]["route"][0]["weight"], 100);
        assert!(http[1].get("headers").is_none());
        // No cookie at all: nothing sticky.
        c.status = None;
        assert_eq!(vs_spec(&c, split(30))["http"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn delegation_empties_hosts_and_gateways_or_errors() {
        let mut c = flagger_istio_canary();
        c.spec.service.delegation = Some(true);
        let err = IstioRouter.build(&c, split(0), &[]).unwrap_err();
        assert_eq!(
            err,
            "VirtualService podinfo.test cannot have hosts and gateways when delegation enabled"
        );
        c.spec.service.hosts.clear();
        c.spec.service.gateways.clear();
        let spec = vs_spec(&c, split(0));
        assert!(spec.get("hosts").is_none() && spec.get("gateways").is_none());
        assert_eq!(
            spec["http"][0]["route"][0]["destination"]["port"],
            json!({"number": 80})
        );
    }

    #[test]
    fn rewrite_keeps_only_uri_and_authority() {
        let mut c = article_canary();
        c.spec.service.rewrite =
            Some(json!({"uri": "/", "authority": "x", "type": "ReplacePrefixMatch"}));
        assert_eq!(
            vs_spec(&c, split(0))["http"][0]["rewrite"],
            json!({"uri": "/", "authority": "x"})
        );
        c.spec.service.rewrite = Some(json!({"type": "ReplaceFullPath"}));
        assert!(vs_spec(&c, split(0))["http"][0].get("rewrite").is_none());
    }

    #[test]
    fn read_weights_needs_the_virtual_service() {
        let c = article_canary();
        let objs = build(&c, split(30));
        assert_eq!(IstioRouter.read_weights(&c, &objs[..2]), None);
        assert_eq!(IstioRouter.read_weights(&c, &[]), None);
        let mut other = objs[2].clone();
        other["metadata"]["name"] = json!("other");
        assert_eq!(IstioRouter.read_weights(&c, &[other]), None);
    }

    #[test]
    fn read_weights_of_a_hand_written_virtual_service() {
        let c = article_canary();
        let live = json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "web-app", "namespace": "production"},
            "spec": {"hosts": ["web-app"], "http": [
                {"match": [{"uri": {"prefix": "/admin"}}], "route": [{"destination": {"host": "admin"}}]},
                {"route": [{"destination": {"host": "web-app-primary"}, "weight": 90},
                           {"destination": {"host": "web-app-canary"}, "weight": 10}],
                 "mirror": {"host": "web-app-canary"}}]}
        });
        assert_eq!(
            IstioRouter.read_weights(&c, std::slice::from_ref(&live)),
            Some(Weights {
                primary: 90,
                canary: 10,
                mirror: true
            })
        );
        let mut zero = live;
        zero["spec"]["http"][1]["route"][0]["weight"] = json!(0);
        zero["spec"]["http"][1]["route"][1]["weight"] = json!(0);
        assert_eq!(IstioRouter.read_weights(&c, &[zero]), None);
    }

    #[test]
    fn round_trip_both_fixtures() {
        for c in [article_canary(), flagger_istio_canary()] {
            for w in [
                split(0),
                split(30),
                split(100),
                Weights {
                    primary: 100,
                    canary: 0,
                    mirror: true,
                },
            ] {
                assert_eq!(IstioRouter.read_weights(&c, &build(&c, w)), Some(w));
            }
        }
    }

    proptest! {
        #[test]
        fn read_weights_inverts_build(canary in 0..=100i32, mirror: bool, tcp: bool) {
            let mut c = flagger_istio_canary();
            if tcp {
                c.spec.service.app_protocol = Some("tcp".into());
            }
            let w = Weights { primary: 100 - canary, canary, mirror: mirror && !tcp };
            let objs = IstioRouter.build(&c, w, &[]).unwrap();
            prop_assert_eq!(IstioRouter.read_weights(&c, &objs), Some(w));
        }
    }
}
