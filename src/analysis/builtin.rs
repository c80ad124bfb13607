//! The builtin metrics `request-success-rate` and `request-duration`: Flagger's PromQL per
//! mesh/ingress provider (Flagger `pkg/metrics/observers`), as templates for
//! [`super::template::render`].
//!
//! - `request-success-rate` returns the percentage (0-100) of non-5xx requests.
//! - `request-duration` returns the P99 latency (nginx: the average), in milliseconds after
//!   multiplying by [`duration_to_ms`].
//!
//! Provider selection follows Flagger's observer factory: `istio`; `nginx`; `gatewayapi*` and
//! `kubernetes` use the HttpObserver (metrics exported by the application itself, as podinfo
//! does). Flagger sends everything else to the Istio queries; pennant returns `None` instead so
//! the caller can report it. Flagger's overrides (a Service-kind target always gets the Istio
//! queries, §2.16-8) are the caller's choice of `provider`.
//!
//! Deliberate difference from Flagger: for a DaemonSet target the HttpObserver's pod-name regex
//! is `{{ target }}-[0-9a-zA-Z]+` (one suffix: DaemonSet pods are `<ds>-<id>`), not Flagger's
//! `{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)` (two suffixes, `<deployment>-<rs hash>-<id>`),
//! which matches no canary pod of a DaemonSet (its analysis finds "no values") but does match
//! the primary's `<ds>-primary-<id>` pods. The one-suffix regex excludes those: `-` is not in
//! the class and the match is anchored.

/// Name of the builtin success-rate metric.
pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
/// Name of the builtin duration metric.
pub const REQUEST_DURATION: &str = "request-duration";

const ISTIO_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const ISTIO_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const NGINX_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			nginx_ingress_controller_requests{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!="",
				status!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			nginx_ingress_controller_requests{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	* 100"#;

const NGINX_DURATION: &str = r#"
	sum(
		rate(
			nginx_ingress_controller_response_duration_seconds_sum{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			nginx_ingress_controller_response_duration_seconds_count{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	* 1000"#;

const HTTP_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
				status!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const HTTP_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				http_request_duration_seconds_bucket{
					kubernetes_namespace="{{ namespace }}",
					kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const HTTP_DS_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+",
				status!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const HTTP_DS_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				http_request_duration_seconds_bucket{
					kubernetes_namespace="{{ namespace }}",
					kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observer {
    Istio,
    Nginx,
    Http,
}

fn observer(provider: &str) -> Option<Observer> {
    match provider {
        "istio" => Some(Observer::Istio),
        "nginx" => Some(Observer::Nginx),
        "kubernetes" => Some(Observer::Http),
        p if p.starts_with("gatewayapi") => Some(Observer::Http),
        _ => None,
    }
}

/// Whether `name` is one of the builtin metric names.
pub fn is_builtin(name: &str) -> bool {
    name == REQUEST_SUCCESS_RATE || name == REQUEST_DURATION
}

/// The PromQL template of builtin `metric` for `provider` and a target of `target_kind`
/// (`targetRef.kind`), exactly Flagger's text (multi-line; collapse whitespace before sending),
/// except the DaemonSet pod-name regex of the HttpObserver (see the module docs). `None` for a
/// metric that is not a builtin or a provider pennant has no builtin queries for.
pub fn builtin_query(provider: &str, metric: &str, target_kind: &str) -> Option<&'static str> {
    let ob = observer(provider)?;
    let daemon_set = target_kind == "DaemonSet";
    Some(match (ob, metric) {
        (Observer::Http, REQUEST_SUCCESS_RATE) if daemon_set => HTTP_DS_SUCCESS_RATE,
        (Observer::Http, REQUEST_DURATION) if daemon_set => HTTP_DS_DURATION,
        (Observer::Istio, REQUEST_SUCCESS_RATE) => ISTIO_SUCCESS_RATE,
        (Observer::Istio, REQUEST_DURATION) => ISTIO_DURATION,
        (Observer::Nginx, REQUEST_SUCCESS_RATE) => NGINX_SUCCESS_RATE,
        (Observer::Nginx, REQUEST_DURATION) => NGINX_DURATION,
        (Observer::Http, REQUEST_SUCCESS_RATE) => HTTP_SUCCESS_RATE,
        (Observer::Http, REQUEST_DURATION) => HTTP_DURATION,
        _ => return None,
    })
}

/// Factor that turns the `request-duration` query result of `provider` into milliseconds:
/// 1000 for the HttpObserver providers (`gatewayapi*`, `kubernetes`), whose query returns
/// seconds (Flagger multiplies in code), and 1 for the others (their query returns ms).
pub fn duration_to_ms(provider: &str) -> f64 {
    match observer(provider) {
        Some(Observer::Http) => 1000.0,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::template::collapse_whitespace;

    #[test]
    fn istio_queries_are_flaggers() {
        assert_eq!(
            collapse_whitespace(
                builtin_query("istio", REQUEST_SUCCESS_RATE, "Deployment").unwrap()
            ),
            r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}", response_code!~"5.*" }[{{ interval }}] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}" }[{{ interval }}] ) ) * 100"#
        );
        assert_eq!(
            collapse_whitespace(builtin_query("istio", REQUEST_DURATION, "Deployment").unwrap()),
            r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}" }[{{ interval }}] ) ) by (le) )"#
        );
    }

    #[test]
    fn provider_selection() {
        let cases = [
            ("istio", Some(ISTIO_SUCCESS_RATE), Some(ISTIO_DURATION), 1.0),
            ("nginx", Some(NGINX_SUCCESS_RATE), Some(NGINX_DURATION), 1.0),
            (
                "gatewayapi:v1",
                Some(HTTP_SUCCESS_RATE),
                Some(HTTP_DURATION),
                1000.0,
            ),
            (
                "gatewayapi:v1beta1",
                Some(HTTP_SUCCESS_RATE),
                Some(HTTP_DURATION),
                1000.0,
            ),
            (
                "kubernetes",
                Some(HTTP_SUCCESS_RATE),
                Some(HTTP_DURATION),
                1000.0,
            ),
            ("linkerd", None, None, 1.0),
            ("", None, None, 1.0),
        ];
        for (p, sr, d, f) in cases {
            assert_eq!(
                builtin_query(p, REQUEST_SUCCESS_RATE, "Deployment"),
                sr,
                "{p}"
            );
            assert_eq!(builtin_query(p, REQUEST_DURATION, "Deployment"), d, "{p}");
            assert_eq!(duration_to_ms(p), f, "{p}");
        }
        assert_eq!(builtin_query("istio", "error-rate", "Deployment"), None);
    }

    #[test]
    fn every_builtin_renders_with_the_model_variables_only() {
        use crate::analysis::template::{TemplateModel, render};
        let m = TemplateModel {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo",
            service: "podinfo",
            ingress: "podinfo",
            route: "podinfo",
            interval: "1m",
            variables: None,
        };
        for q in [
            ISTIO_SUCCESS_RATE,
            ISTIO_DURATION,
            NGINX_SUCCESS_RATE,
            NGINX_DURATION,
            HTTP_SUCCESS_RATE,
            HTTP_DURATION,
            HTTP_DS_SUCCESS_RATE,
            HTTP_DS_DURATION,
        ] {
            let r = render(q, &m).unwrap();
            assert!(!r.contains("{{"), "{r}");
            assert!(r.contains("[1m]"), "{r}");
        }
    }

    /// Prometheus regex match is anchored (`^(?:re)$`): the same anchoring with `regex`.
    fn pod_matches(query: &str, target: &str, pod: &str) -> bool {
        let q = query.replace("{{ target }}", target);
        let start = q.find("kubernetes_pod_name=~\"").unwrap() + "kubernetes_pod_name=~\"".len();
        let re = &q[start..start + q[start..].find('"').unwrap()];
        regex::Regex::new(&format!("^(?:{re})$"))
            .unwrap()
            .is_match(pod)
    }

    #[test]
    fn daemon_set_pods_match_with_one_suffix_and_primary_pods_do_not() {
        for metric in [REQUEST_SUCCESS_RATE, REQUEST_DURATION] {
            let ds = builtin_query("kubernetes", metric, "DaemonSet").unwrap();
            let dep = builtin_query("kubernetes", metric, "Deployment").unwrap();
            assert_eq!(
                builtin_query("gatewayapi:v1", metric, "DaemonSet"),
                Some(ds)
            );
            // Istio keys on the workload name, not pods: the same for both kinds.
            assert_eq!(
                builtin_query("istio", metric, "DaemonSet"),
                builtin_query("istio", metric, "Deployment")
            );
            assert!(pod_matches(ds, "podinfo", "podinfo-x7k2p"));
            assert!(!pod_matches(ds, "podinfo", "podinfo-primary-x7k2p"));
            assert!(!pod_matches(ds, "podinfo", "podinfo-6d8f9c7b5-x7k2p"));
            // Flagger's regex misses the DaemonSet's canary pods and takes its primary's instead.
            assert!(!pod_matches(dep, "podinfo", "podinfo-x7k2p"));
            assert!(pod_matches(dep, "podinfo", "podinfo-primary-x7k2p"));
            assert!(pod_matches(dep, "podinfo", "podinfo-6d8f9c7b5-x7k2p"));
            assert!(!pod_matches(
                dep,
                "podinfo",
                "podinfo-primary-6d8f9c7b5-x7k2p"
            ));
            assert_eq!(
                collapse_whitespace(ds),
                collapse_whitespace(dep).replace("-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", "-[0-9a-zA-Z]+")
            );
        }
    }
}
