//! The CustomResourceDefinitions pennant installs: `canaries`, `metrictemplates` and
//! `alertproviders` in `flagger.app/v1beta1`, generated from the Rust types.
//!
//! They replace Flagger's CRDs in place (same group, names, scope, version, printer columns and
//! `helm.sh/resource-policy: keep`). The schemas accept every object Flagger's schemas accept
//! (`tests/compat.rs` checks it). Flagger's `oneOf` on `spec.analysis` (interval + threshold +
//! exactly one of iterations / stepWeight / stepWeights) is deliberately not mirrored: the
//! controller reports a Canary with none of the three as `Stalled=True` with a message naming the
//! fields, and a missing interval or threshold takes Flagger's code defaults (60s, 1). The
//! committed copy is `crds/pennant.yaml`, which `tests/crds.rs` keeps equal to [`to_yaml`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{AlertProvider, Canary, MetricTemplate};

const CANARY_DESCRIPTION: &str = "Canary: progressive delivery of a Deployment, DaemonSet or \
    Service (traffic shifting, metric analysis, webhooks, alerts), Flagger-compatible.";
const METRIC_TEMPLATE_DESCRIPTION: &str =
    "MetricTemplate: a reusable metric query and the provider that runs it, Flagger-compatible.";
const ALERT_PROVIDER_DESCRIPTION: &str =
    "AlertProvider: a chat destination for canary alerts, Flagger-compatible.";

/// The CRDs, in a fixed order: Canary, MetricTemplate, AlertProvider.
///
/// On top of what `#[derive(CustomResource)]` generates, each gets a root schema description,
/// Flagger's `listKind` (`<Kind>List`) and the annotation `helm.sh/resource-policy: keep`, so
/// that uninstalling a Helm release never deletes the CRDs (and with them every Canary).
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        (Canary::crd(), CANARY_DESCRIPTION),
        (MetricTemplate::crd(), METRIC_TEMPLATE_DESCRIPTION),
        (AlertProvider::crd(), ALERT_PROVIDER_DESCRIPTION),
    ]
    .into_iter()
    .map(|(mut crd, description)| {
        for v in &mut crd.spec.versions {
            if let Some(s) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                s.description = Some(description.into());
            }
        }
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("helm.sh/resource-policy".into(), "keep".into());
        let names = &mut crd.spec.names;
        names.list_kind = Some(format!("{}List", names.kind));
        crd
    })
    .collect()
}

/// [`all`] as one multi-document YAML stream (`---` between documents, trailing newline).
/// Deterministic: same types, same bytes. Printed by `pennant crds`.
pub fn to_yaml() -> String {
    let docs: Vec<serde_json::Value> = all()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serialises to JSON"))
        .collect();
    serde_saphyr::to_string_multiple(&docs).expect("a CRD serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_flagger() {
        let crds = all();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "canaries.flagger.app",
                "metrictemplates.flagger.app",
                "alertproviders.flagger.app"
            ]
        );
        for crd in &crds {
            let n = &crd.spec.names;
            assert_eq!(crd.spec.group, "flagger.app");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(n.categories.as_deref(), Some(&["all".to_string()][..]));
            assert_eq!(n.short_names, None);
            assert_eq!(
                n.list_kind.as_deref(),
                Some(format!("{}List", n.kind).as_str())
            );
            assert_eq!(n.singular.as_deref(), Some(n.kind.to_lowercase().as_str()));
        }
    }

    #[test]
    fn yaml_is_deterministic() {
        assert_eq!(to_yaml(), to_yaml());
        assert_eq!(to_yaml().matches("\n---\n").count(), 2);
    }
}
