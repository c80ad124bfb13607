//! NGINX ingress router: the `<ingress>-canary` Ingress cloned from the user's Ingress
//! (`spec.ingressRef`), with ingress-nginx's canary annotations (Flagger §3.3).
//!
//! The user's Ingress is never modified. The clone keeps its labels, its annotations minus every
//! `<prefix>/canary*` key and the kubectl last-applied annotation, and its spec with every path
//! backend `<apex>` renamed to `<apex>-canary`. pennant then owns these annotations:
//! - canary / blue-green: `<prefix>/canary: "true"`, `<prefix>/canary-weight: "<canary weight>"`;
//! - A/B (`analysis.match` set) while the canary weight is > 0: `<prefix>/canary: "true"`,
//!   `<prefix>/canary-weight: "0"` (requests that match no condition stay on the primary) and
//!   `canary-by-header` + `canary-by-header-value` | `canary-by-header-pattern` and/or
//!   `canary-by-cookie` from the conditions' `headers`; at weight 0 only the base pair.
//!
//! Differences from Flagger, all deliberate:
//! - the clone is rebuilt from the user's Ingress and the weights at every reconcile, so stale
//!   `canary-by-*` annotations never survive (Flagger filters on annotation *values*, §2.16-12);
//! - a header condition other than `exact`/`regex` (or a cookie condition other than `exact`) is
//!   an error instead of a `canary-by-header` without a value (which ingress-nginx reads as
//!   "route `always`");
//! - conditions are read in order and header names in sorted order, so "the last header and
//!   cookie win" (ingress-nginx supports one of each) is deterministic;
//! - the clone also gets the Flux "disabled" annotations, like every routing object.
//!
//! Mirroring is not supported by this provider (`weights.mirror` is ignored, read back `false`).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::ApiResource;
use serde_json::Value;

use super::Router;
use crate::api::Canary;
use crate::api::meta::{owner_reference, routing_metadata};
use crate::router::Weights;

/// Flagger's default `-ingress-annotations-prefix`.
pub const DEFAULT_ANNOTATIONS_PREFIX: &str = "nginx.ingress.kubernetes.io";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Flagger's `IngressRouter` for ingress-nginx. `build` needs the user's Ingress
/// (`spec.ingressRef`), which it names in `inputs`; `read_weights` needs only the live canary
/// Ingress.
#[derive(Clone, Debug, Default)]
pub struct NginxRouter {
    /// Annotation prefix, e.g. `nginx.ingress.kubernetes.io`.
    pub prefix: String,
}

impl NginxRouter {
    /// A router with `prefix` (empty: [`DEFAULT_ANNOTATIONS_PREFIX`]).
    pub fn new(prefix: &str) -> Self {
        let prefix = if prefix.is_empty() {
            DEFAULT_ANNOTATIONS_PREFIX
        } else {
            prefix
        };
        NginxRouter {
            prefix: prefix.to_string(),
        }
    }
}

/// Name of the canary Ingress for the user's Ingress `name`.
pub fn canary_ingress_name(name: &str) -> String {
    format!("{name}-canary")
}

/// The A/B routing of `analysis.match`: the last header (other than `cookie`) and the last
/// cookie seen, as ingress-nginx supports one of each.
#[derive(Debug, Default, PartialEq)]
struct HeaderRouting {
    header: Option<String>,
    value: Option<String>,
    pattern: Option<String>,
    cookie: Option<String>,
}

fn header_routing(conditions: &[Value]) -> Result<HeaderRouting, String> {
    let mut out = HeaderRouting::default();
    for c in conditions {
        let Some(headers) = c.get("headers").and_then(Value::as_object) else {
            continue;
        };
        let mut names: Vec<&String> = headers.keys().collect();
        names.sort();
        for name in names {
            let m = &headers[name.as_str()];
            let exact = m.get("exact").and_then(Value::as_str);
            let regex = m.get("regex").and_then(Value::as_str);
            if name.eq_ignore_ascii_case("cookie") {
                let Some(cookie) = exact.filter(|c| !c.is_empty()) else {
                    return Err(format!(
                        "nginx canary-by-cookie needs an exact cookie name, got {m}"
                    ));
                };
                out.cookie = Some(cookie.to_string());
            } else {
                let exact = exact.filter(|v| !v.is_empty());
                let regex = regex.filter(|v| !v.is_empty());
                if exact.is_none() && regex.is_none() {
                    return Err(format!(
                        "nginx canary-by-header supports only exact and regex matches, got {name}: {m}"
                    ));
                }
                out.header = Some(name.clone());
                out.value = exact.map(str::to_string);
                out.pattern = if exact.is_some() {
                    None
                } else {
                    regex.map(str::to_string)
                };
            }
        }
    }
    Ok(out)
}

/// The canary Ingress `<ingress>-canary` for `weights`, cloned from the user's `ingress` (see the
/// module docs for the annotations). `prefix` is the annotation prefix, e.g.
/// [`DEFAULT_ANNOTATIONS_PREFIX`].
///
/// Errors, as Flagger's: no path backend names the apex Service (`backend <apex> not found in
/// ingress <name>`); an A/B condition ingress-nginx cannot express.
pub fn canary_ingress(
    canary: &Canary,
    ingress: &Ingress,
    weights: Weights,
    prefix: &str,
) -> Result<Ingress, String> {
    let apex = canary.spec.apex_name();
    let canary_svc = format!("{apex}-canary");
    let name = ingress.metadata.name.clone().unwrap_or_default();
    let key = |suffix: &str| format!("{prefix}/{suffix}");

    let mut spec = ingress.spec.clone().unwrap_or_default();
    let mut found = false;
    for rule in spec.rules.iter_mut().flatten() {
        for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
            if let Some(svc) = path.backend.service.as_mut()
                && svc.name == apex
            {
                svc.name = canary_svc.clone();
                found = true;
            }
        }
    }
    if !found {
        return Err(format!("backend {apex} not found in ingress {name}"));
    }

    let canary_prefix = key("canary");
    let mut annotations: BTreeMap<String, String> = ingress
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(&canary_prefix) && k.as_str() != LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (_, flux) = routing_metadata(None);
    annotations.extend(flux);
    annotations.insert(key("canary"), "true".into());

    let conditions = canary
        .spec
        .analysis()
        .map(|a| a.r#match.as_slice())
        .unwrap_or_default();
    if conditions.is_empty() {
        annotations.insert(key("canary-weight"), weights.canary.to_string());
    } else {
        let routing = header_routing(conditions)?;
        annotations.insert(key("canary-weight"), "0".into());
        if weights.canary > 0 {
            let pairs = [
                ("canary-by-header", routing.header),
                ("canary-by-header-value", routing.value),
                ("canary-by-header-pattern", routing.pattern),
                ("canary-by-cookie", routing.cookie),
            ];
            for (suffix, v) in pairs {
                if let Some(v) = v {
                    annotations.insert(key(suffix), v);
                }
            }
        }
    }

    Ok(Ingress {
        metadata: ObjectMeta {
            name: Some(canary_ingress_name(&name)),
            namespace: canary.metadata.namespace.clone(),
            labels: ingress.metadata.labels.clone().filter(|l| !l.is_empty()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(canary)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The split the canary Ingress `live` carries: in A/B mode (`analysis.match` set), (0, 100) when
/// a `canary-by-header` or `canary-by-cookie` annotation is set; else (100 − w, w) from
/// `canary-weight`. `None` when `canary-weight` is missing or not an integer in 0..=100.
pub fn read_canary_ingress_weights(
    canary: &Canary,
    live: &Ingress,
    prefix: &str,
) -> Option<Weights> {
    let ab = canary
        .spec
        .analysis()
        .is_some_and(|a| !a.r#match.is_empty());
    let ann = live.metadata.annotations.as_ref()?;
    let get = |suffix: &str| {
        ann.get(&format!("{prefix}/{suffix}"))
            .filter(|v| !v.is_empty())
    };
    if ab && (get("canary-by-header").is_some() || get("canary-by-cookie").is_some()) {
        return Some(Weights {
            primary: 0,
            canary: 100,
            mirror: false,
        });
    }
    let w: i32 = get("canary-weight")?.trim().parse().ok()?;
    (0..=100).contains(&w).then_some(Weights {
        primary: 100 - w,
        canary: w,
        mirror: false,
    })
}

impl Router for NginxRouter {
    fn resources(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<Ingress>(&())]
    }

    /// Only the user's Ingress: hosts, paths, timeouts and retries are the Ingress's own
    /// (as in Flagger; `analysis.match` is read too, for A/B testing).
    fn reads(&self) -> &'static [&'static str] {
        &["ingressRef"]
    }

    /// The user's Ingress named by `spec.ingressRef`.
    fn inputs(&self, canary: &Canary) -> Vec<(&'static str, String)> {
        canary
            .spec
            .ingress_ref
            .iter()
            .map(|r| ("Ingress", r.name.clone()))
            .collect()
    }

    /// `[Ingress <ingressRef>-canary]`. Errors without `spec.ingressRef` or when the user's
    /// Ingress it names is not among `inputs`.
    fn build(
        &self,
        canary: &Canary,
        weights: Weights,
        inputs: &[Value],
    ) -> Result<Vec<Value>, String> {
        let Some(reference) = canary.spec.ingress_ref.as_ref() else {
            return Err("spec.ingressRef is required for the nginx provider".into());
        };
        let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
        let ingress: Ingress = super::find(
            inputs,
            &Ingress::group(&()),
            &Ingress::kind(&()),
            &reference.name,
        )
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .ok_or_else(|| format!("ingress {}.{ns} not found", reference.name))?;
        let obj = canary_ingress(canary, &ingress, weights, &self.prefix)?;
        let v = serde_json::to_value(&obj).map_err(|e| format!("serializing Ingress: {e}"))?;
        Ok(vec![v])
    }

    /// The Ingress `<ingressRef>-canary` of `live`, read by [`read_canary_ingress_weights`].
    fn read_weights(&self, canary: &Canary, live: &[Value]) -> Option<Weights> {
        let name = canary_ingress_name(&canary.spec.ingress_ref.as_ref()?.name);
        let obj = super::find(live, &Ingress::group(&()), &Ingress::kind(&()), &name)?;
        let ingress: Ingress = serde_json::from_value(obj.clone()).ok()?;
        read_canary_ingress_weights(canary, &ingress, &self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryAnalysis;
    use proptest::prelude::*;
    use serde_json::json;

    fn split(canary: i32) -> Weights {
        Weights {
            primary: 100 - canary,
            canary,
            mirror: false,
        }
    }

    /// Flagger's NGINX example Canary (`docs/gitbook/tutorials/nginx-progressive-delivery.md`).
    fn nginx_canary() -> Canary {
        let mut c: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "nginx",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
                "progressDeadlineSeconds": 60,
                "service": {"port": 80, "targetPort": 9898},
                "analysis": {"interval": "10s", "threshold": 10, "maxWeight": 50, "stepWeight": 5,
                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]}
            }
        }))
        .unwrap();
        c.metadata.uid = Some("6f1c0a4e-0000-4000-8000-000000000001".into());
        c
    }

    fn ab_canary(conditions: Value) -> Canary {
        let mut c = nginx_canary();
        c.spec.analysis = Some(CanaryAnalysis {
            interval: Some("1m".into()),
            iterations: Some(10),
            threshold: Some(2),
            r#match: serde_json::from_value(conditions).unwrap(),
            ..Default::default()
        });
        c
    }

    /// The user's Ingress of Flagger's NGINX tutorial, as read back from the cluster, with a
    /// stale canary annotation and a last-applied one that must not be copied.
    fn user_ingress() -> Ingress {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {
                "name": "podinfo", "namespace": "test", "resourceVersion": "42", "uid": "u-1",
                "labels": {"app": "podinfo"},
                "annotations": {
                    "kubernetes.io/ingress.class": "nginx",
                    "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                    "nginx.ingress.kubernetes.io/canary-by-header": "stale",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"
                }
            },
            "spec": {"rules": [
                {"host": "app.example.com", "http": {"paths": [
                    {"pathType": "Prefix", "path": "/", "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}},
                    {"pathType": "Prefix", "path": "/other", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}}
            ]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap()
    }

    fn router() -> NginxRouter {
        NginxRouter::new("")
    }

    fn inputs() -> Vec<Value> {
        vec![serde_json::to_value(user_ingress()).unwrap()]
    }

    fn build(c: &Canary, w: Weights) -> Vec<Value> {
        router().build(c, w, &inputs()).unwrap()
    }

    fn annotations(c: &Canary, w: Weights) -> Value {
        build(c, w)[0]["metadata"]["annotations"].clone()
    }

    #[test]
    fn flagger_nginx_example_100_0() {
        insta::assert_yaml_snapshot!(build(&nginx_canary(), split(0)));
    }

    #[test]
    fn flagger_nginx_example_70_30() {
        insta::assert_yaml_snapshot!(build(&nginx_canary(), split(30)));
    }

    #[test]
    fn ab_header_and_cookie_during_iterations() {
        let c = ab_canary(json!([
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"exact": "canary"}}}
        ]));
        insta::assert_yaml_snapshot!(build(&c, split(100)));
    }

    #[test]
    fn ab_pattern_and_reset_at_weight_zero() {
        let c = ab_canary(json!([{"headers": {"user-agent": {"regex": ".*Firefox.*"}}}]));
        let ann = annotations(&c, split(100));
        assert_eq!(
            ann["nginx.ingress.kubernetes.io/canary-by-header"],
            "user-agent"
        );
        assert_eq!(
            ann["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
            ".*Firefox.*"
        );
        assert!(
            ann.get("nginx.ingress.kubernetes.io/canary-by-header-value")
                .is_none()
        );
        assert_eq!(ann["nginx.ingress.kubernetes.io/canary-weight"], "0");
        let ann = annotations(&c, split(0));
        let canary_keys: Vec<&String> = ann
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("nginx.ingress.kubernetes.io/canary"))
            .collect();
        assert_eq!(
            canary_keys,
            [
                "nginx.ingress.kubernetes.io/canary",
                "nginx.ingress.kubernetes.io/canary-weight"
            ]
        );
    }

    #[test]
    fn ab_last_header_wins_and_unsupported_matches_are_errors() {
        let c = ab_canary(json!([
            {"headers": {"x-a": {"exact": "1"}}},
            {"headers": {"x-b": {"regex": "^2$"}}}
        ]));
        let ann = annotations(&c, split(100));
        assert_eq!(ann["nginx.ingress.kubernetes.io/canary-by-header"], "x-b");
        assert_eq!(
            ann["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
            "^2$"
        );
        assert!(
            ann.get("nginx.ingress.kubernetes.io/canary-by-header-value")
                .is_none()
        );

        let c = ab_canary(json!([{"headers": {"x-a": {"prefix": "1"}}}]));
        assert_eq!(
            router().build(&c, split(100), &inputs()).unwrap_err(),
            r#"nginx canary-by-header supports only exact and regex matches, got x-a: {"prefix":"1"}"#
        );
        let c = ab_canary(json!([{"headers": {"cookie": {"regex": "c.*"}}}]));
        assert!(router().build(&c, split(0), &inputs()).is_err());
    }

    #[test]
    fn stale_canary_annotations_and_last_applied_are_dropped() {
        let ann = annotations(&nginx_canary(), split(30));
        assert_eq!(
            ann,
            json!({
                "helm.toolkit.fluxcd.io/driftDetection": "disabled",
                "kubernetes.io/ingress.class": "nginx",
                "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "30",
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m"
            })
        );
    }

    #[test]
    fn custom_prefix() {
        let r = NginxRouter::new("custom.ingress.kubernetes.io");
        let c = nginx_canary();
        let objs = r.build(&c, split(30), &inputs()).unwrap();
        let ann = &objs[0]["metadata"]["annotations"];
        assert_eq!(ann["custom.ingress.kubernetes.io/canary-weight"], "30");
        // The user's nginx.* annotations are not the canary's under another prefix.
        assert_eq!(ann["nginx.ingress.kubernetes.io/canary-by-header"], "stale");
        assert_eq!(r.read_weights(&c, &objs), Some(split(30)));
        assert_eq!(router().read_weights(&c, &objs), None);
    }

    #[test]
    fn missing_backend_ingress_or_ref_are_errors() {
        let mut c = nginx_canary();
        c.spec.service.name = Some("web".into());
        assert_eq!(
            router().build(&c, split(0), &inputs()).unwrap_err(),
            "backend web not found in ingress podinfo"
        );
        let c = nginx_canary();
        assert_eq!(
            router().build(&c, split(0), &[]).unwrap_err(),
            "ingress podinfo.test not found"
        );
        let mut other = user_ingress();
        other.metadata.name = Some("other".into());
        let other = serde_json::to_value(other).unwrap();
        assert!(router().build(&c, split(0), &[other]).is_err());
        let mut c = nginx_canary();
        c.spec.ingress_ref = None;
        assert!(router().build(&c, split(0), &inputs()).is_err());
        assert_eq!(router().read_weights(&c, &[]), None);
    }

    #[test]
    fn read_weights_needs_the_canary_ingress() {
        let c = nginx_canary();
        let objs = build(&c, split(30));
        assert_eq!(router().read_weights(&c, &[]), None);
        let mut other = objs[0].clone();
        other["metadata"]["name"] = json!("podinfo");
        assert_eq!(router().read_weights(&c, &[other]), None);
        let mut bad = objs[0].clone();
        bad["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] = json!("x");
        assert_eq!(router().read_weights(&c, &[bad]), None);
        let mut by_cookie = objs[0].clone();
        by_cookie["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-cookie"] =
            json!("canary");
        // A by-cookie annotation means A/B only when the Canary is an A/B one.
        assert_eq!(
            router().read_weights(&c, std::slice::from_ref(&by_cookie)),
            Some(split(30))
        );
        let ab = ab_canary(json!([{"headers": {"cookie": {"exact": "canary"}}}]));
        assert_eq!(router().read_weights(&ab, &[by_cookie]), Some(split(100)));
    }

    #[test]
    fn round_trip_canary_and_ab() {
        let c = nginx_canary();
        for w in [0, 5, 30, 50, 100] {
            assert_eq!(
                router().read_weights(&c, &build(&c, split(w))),
                Some(split(w))
            );
        }
        // Mirroring is not supported: ignored.
        let mirrored = Weights {
            primary: 100,
            canary: 0,
            mirror: true,
        };
        assert_eq!(
            router().read_weights(&c, &build(&c, mirrored)),
            Some(split(0))
        );
        let ab = ab_canary(json!([{"headers": {"x-canary": {"exact": "insider"}}}]));
        for w in [0, 100] {
            assert_eq!(
                router().read_weights(&ab, &build(&ab, split(w))),
                Some(split(w))
            );
        }
    }

    proptest! {
        #[test]
        fn read_weights_inverts_build(canary in 0..=100i32) {
            let c = nginx_canary();
            let objs = router().build(&c, split(canary), &inputs()).unwrap();
            prop_assert_eq!(router().read_weights(&c, &objs), Some(split(canary)));
        }
    }
}
