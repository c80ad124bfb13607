//! The apex, `-primary` and `-canary` Services, PURE (Flagger §2.6).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::meta::{owner_reference, routing_metadata};
use crate::api::{Canary, CustomMetadata};

/// The three ClusterIP Services, in order `[<apex>, <apex>-primary, <apex>-canary]`.
///
/// `label`/`value` are the target's selector label and its value (`workload::selector_label`).
/// Each Service: one port `{name: portName|http, port, targetPort: targetPort|port, protocol: TCP,
/// appProtocol?}`, `clusterIP: None` when `headless`, `trafficDistribution` when set; selector
/// `<label>: <value>-primary` (apex, primary) or `<label>: <value>` (canary); labels and
/// annotations from `service.apex` / `primary` / `canary` plus `<label>: <service name>` and the
/// Flux "disabled" annotations; controller owner: the Canary. `discovered` ports
/// ([`discovered_ports`]) follow the main port on every Service.
pub fn build_services(canary: &Canary, label: &str, value: &str) -> Vec<Service> {
    build_services_with_ports(canary, label, value, &[])
}

/// Containers of service-mesh proxies, whose ports are never discovered (Flagger's list).
const SIDECARS: &[&str] = &["istio-proxy", "envoy", "linkerd-proxy", "appmesh-proxy"];

/// `service.portDiscovery` (Flagger's `getPorts`): every container port of the target's pods
/// except the main one (`targetPort` by number or name, else `port`) and the mesh proxies',
/// as `{name: <port name>|tcp-<container>-<index>, port = targetPort = containerPort, TCP}`,
/// sorted by name. Empty when discovery is off.
pub fn discovered_ports(
    canary: &Canary,
    pod: &k8s_openapi::api::core::v1::PodSpec,
) -> Vec<ServicePort> {
    let s = &canary.spec.service;
    if !s.port_discovery.unwrap_or(false) {
        return vec![];
    }
    let main = |p: &k8s_openapi::api::core::v1::ContainerPort| match &s.target_port {
        Some(IntOrString::Int(t)) if *t != 0 => p.container_port == *t,
        Some(IntOrString::String(n)) if !n.is_empty() => p.name.as_deref() == Some(n.as_str()),
        _ => p.container_port == s.port,
    };
    let mut out: Vec<ServicePort> = pod
        .containers
        .iter()
        .filter(|c| !SIDECARS.contains(&c.name.as_str()))
        .flat_map(|c| {
            c.ports
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, p)| !main(p))
                .map(|(i, p)| ServicePort {
                    name: Some(
                        p.name
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| format!("tcp-{}-{i}", c.name)),
                    ),
                    port: p.container_port,
                    target_port: Some(IntOrString::Int(p.container_port)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// [`build_services`] with the `discovered` ports after the main one.
pub fn build_services_with_ports(
    canary: &Canary,
    label: &str,
    value: &str,
    discovered: &[ServicePort],
) -> Vec<Service> {
    let Services {
        apex,
        primary,
        canary,
    } = services(canary, label, value, discovered);
    vec![apex, primary, canary]
}

/// The three Services of a Canary, by role.
#[derive(Clone, Debug, PartialEq)]
pub struct Services {
    /// `<apex>`: selects the primary's pods; the routers send the traffic through it.
    pub apex: Service,
    /// `<apex>-primary`: the primary's pods.
    pub primary: Service,
    /// `<apex>-canary`: the target's pods.
    pub canary: Service,
}

/// The apex, `-primary` and `-canary` Services (see [`build_services`]), with the
/// `discovered` ports after the main one.
pub fn services(canary: &Canary, label: &str, value: &str, discovered: &[ServicePort]) -> Services {
    let apex = canary.spec.apex_name();
    let s = &canary.spec.service;
    let primary_value = format!("{value}-primary");
    let build = |name: String, selects: &str, custom| {
        let mut svc = service(canary, name, label, selects, custom);
        if let Some(ports) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            ports.extend(discovered.iter().cloned());
        }
        svc
    };
    Services {
        apex: build(apex.to_string(), &primary_value, s.apex.as_ref()),
        primary: build(
            format!("{apex}-primary"),
            &primary_value,
            s.primary.as_ref(),
        ),
        canary: build(format!("{apex}-canary"), value, s.canary.as_ref()),
    }
}

fn service(
    canary: &Canary,
    name: String,
    label: &str,
    selects: &str,
    custom: Option<&CustomMetadata>,
) -> Service {
    let s = &canary.spec.service;
    let (mut labels, annotations) = routing_metadata(custom);
    labels.insert(label.to_string(), name.clone());
    let port = ServicePort {
        name: Some(
            s.port_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "http".into()),
        ),
        port: s.port,
        target_port: Some(match &s.target_port {
            Some(IntOrString::Int(0)) | None => IntOrString::Int(s.port),
            Some(IntOrString::String(p)) if p.is_empty() => IntOrString::Int(s.port),
            Some(t) => t.clone(),
        }),
        protocol: Some("TCP".into()),
        app_protocol: s.app_protocol.clone().filter(|p| !p.is_empty()),
        node_port: None,
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: canary.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(canary)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: s.headless.unwrap_or(false).then(|| "None".into()),
            selector: Some(BTreeMap::from([(label.to_string(), selects.to_string())])),
            ports: Some(vec![port]),
            traffic_distribution: s.traffic_distribution.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::*;
    use serde_json::json;

    #[test]
    fn port_discovery_adds_every_other_container_port() {
        let mut c = flagger_istio_canary();
        c.spec.service.port_discovery = Some(true);
        let pod: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
            "containers": [
                {"name": "podinfod", "image": "x", "ports": [
                    {"name": "http", "containerPort": 9898},
                    {"name": "http-metrics", "containerPort": 9797},
                    {"containerPort": 9999}]},
                {"name": "istio-proxy", "image": "y", "ports": [{"containerPort": 15090}]}
            ]
        }))
        .unwrap();
        let ports = discovered_ports(&c, &pod);
        let got: Vec<(String, i32)> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        // targetPort 9898 is the main port; the sidecar's port is never exposed.
        assert_eq!(
            got,
            [
                ("http-metrics".into(), 9797),
                ("tcp-podinfod-2".into(), 9999)
            ]
        );
        let svcs = build_services_with_ports(&c, "app", "podinfo", &ports);
        for s in &svcs {
            let names: Vec<_> = s
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.name.clone().unwrap())
                .collect();
            assert_eq!(names, ["http", "http-metrics", "tcp-podinfod-2"]);
        }
        c.spec.service.port_discovery = None;
        assert!(discovered_ports(&c, &pod).is_empty());
    }

    #[test]
    fn article_services_golden() {
        insta::assert_yaml_snapshot!(build_services(&article_canary(), "app", "web-app"));
    }

    #[test]
    fn flagger_istio_example_services_golden() {
        insta::assert_yaml_snapshot!(build_services(&flagger_istio_canary(), "app", "podinfo"));
    }

    #[test]
    fn defaults_headless_custom_metadata_and_app_protocol() {
        let mut c = article_canary();
        let s = &mut c.spec.service;
        s.name = Some("web".into());
        s.target_port = None;
        s.port_name = Some("grpc".into());
        s.app_protocol = Some("grpc".into());
        s.headless = Some(true);
        s.traffic_distribution = Some("PreferClose".into());
        s.canary = Some(CustomMetadata {
            labels: BTreeMap::from([("tier".into(), "canary".into())]),
            annotations: BTreeMap::from([("note".into(), "hi".into())]),
        });
        let svcs = build_services(&c, "app.kubernetes.io/name", "web-app");
        let names: Vec<_> = svcs
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web", "web-primary", "web-canary"]);
        let canary = serde_json::to_value(&svcs[2]).unwrap();
        assert_eq!(
            canary["spec"],
            json!({
                "type": "ClusterIP",
                "clusterIP": "None",
                "selector": {"app.kubernetes.io/name": "web-app"},
                "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080, "protocol": "TCP", "appProtocol": "grpc"}],
                "trafficDistribution": "PreferClose"
            })
        );
        assert_eq!(
            canary["metadata"]["labels"],
            json!({"tier": "canary", "app.kubernetes.io/name": "web-canary"})
        );
        assert_eq!(
            canary["metadata"]["annotations"],
            json!({"note": "hi", "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
                   "helm.toolkit.fluxcd.io/driftDetection": "disabled"})
        );
        let primary = serde_json::to_value(&svcs[1]).unwrap();
        assert_eq!(
            primary["spec"]["selector"],
            json!({"app.kubernetes.io/name": "web-app-primary"})
        );
        assert_eq!(
            primary["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "web-primary"})
        );
    }

    #[test]
    fn named_target_port_is_kept() {
        let mut c = article_canary();
        c.spec.service.target_port = Some(IntOrString::String("http".into()));
        let svcs = build_services(&c, "app", "web-app");
        let v = serde_json::to_value(&svcs[0]).unwrap();
        assert_eq!(v["spec"]["ports"][0]["targetPort"], "http");
    }
}
