//! References to sources that no file defines: a Kustomization's `spec.sourceRef`, a
//! HelmRelease's `spec.chart.spec.sourceRef` and `spec.chartRef`.
//!
//! A reference matches a defined object of the same kind and name; the namespaces are compared
//! only when both are written (the reference's namespace defaults to its object's, and a
//! kustomize overlay's `namespace:` may set the rest). Defined are the documents of the
//! repository, the ExternalArtifacts of its ArtifactGenerators (`spec.artifacts[].name`) and
//! the HelmCharts of its HelmReleases' `spec.chart` (`<namespace>-<name>`, Flux's name). A
//! source named `flux-system` is never reported: `flux bootstrap` creates it outside the
//! repository (or in a `gotk-sync.yaml` that is only a placeholder until then).

use super::{Doc, Findings, Repo};
use crate::api::source::EXTENSIONS_GROUP;
use crate::api::{helm_release, kustomization};

/// The name of the source `flux bootstrap` creates.
pub const BOOTSTRAP_SOURCE: &str = "flux-system";

struct Defined {
    kind: String,
    namespace: Option<String>,
    name: String,
}

pub fn check(repo: &Repo, out: &mut Findings) {
    let mut defined: Vec<Defined> = vec![];
    let mut charts_unknown = false;
    for d in repo.docs.iter().filter(|d| !d.patch) {
        let ns = d.namespace().map(str::to_string);
        if !d.kind().is_empty() && !d.name().is_empty() {
            defined.push(Defined {
                kind: d.kind().into(),
                namespace: ns.clone(),
                name: d.name().into(),
            });
        }
        if d.is(EXTENSIONS_GROUP, "ArtifactGenerator") {
            for a in d.json["spec"]["artifacts"].as_array().into_iter().flatten() {
                if let Some(name) = a["name"].as_str() {
                    defined.push(Defined {
                        kind: "ExternalArtifact".into(),
                        namespace: ns.clone(),
                        name: name.into(),
                    });
                }
            }
        }
        if d.is(helm_release::GROUP, "HelmRelease") && d.json["spec"]["chart"].is_object() {
            match &ns {
                Some(ns) => defined.push(Defined {
                    kind: "HelmChart".into(),
                    namespace: d.json["spec"]["chart"]["spec"]["sourceRef"]["namespace"]
                        .as_str()
                        .map(str::to_string)
                        .or(Some(ns.clone())),
                    name: format!("{ns}-{}", d.name()),
                }),
                None => charts_unknown = true,
            }
        }
    }
    for d in &repo.docs {
        let refs: &[(&str, &[&str])] = if d.is(kustomization::GROUP, "Kustomization") {
            &[("sourceRef", &["spec", "sourceRef"])]
        } else if d.is(helm_release::GROUP, "HelmRelease") {
            &[
                (
                    "chart.spec.sourceRef",
                    &["spec", "chart", "spec", "sourceRef"],
                ),
                ("chartRef", &["spec", "chartRef"]),
            ]
        } else {
            continue;
        };
        for (field, path) in refs {
            reference(d, field, path, &defined, charts_unknown, out);
        }
    }
}

fn reference(
    d: &Doc,
    field: &str,
    path: &[&str],
    defined: &[Defined],
    charts_unknown: bool,
    out: &mut Findings,
) {
    let r = path.iter().fold(&d.json, |v, k| &v[k]);
    let (Some(kind), Some(name)) = (r["kind"].as_str(), r["name"].as_str()) else {
        return;
    };
    if name == BOOTSTRAP_SOURCE || (kind == "HelmChart" && charts_unknown) {
        return;
    }
    let namespace = r["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or(d.namespace());
    let found = defined.iter().any(|o| {
        o.kind == kind
            && o.name == name
            && match (&o.namespace, namespace) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    });
    if !found {
        let id = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        let mut name_path = path.to_vec();
        name_path.push("name");
        out.push(
            d.file,
            d.line(&name_path),
            format!("{field} {kind} {id} is not defined in any file"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_files;
    use super::*;

    const KS: &str = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  sourceRef:\n    kind: GitRepository\n    name: fleet\n";
    const HR: &str = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: web\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n";

    fn source(kind: &str, name: &str, ns: Option<&str>) -> String {
        let ns = ns
            .map(|n| format!("  namespace: {n}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{ns}"
        )
    }

    #[test]
    fn a_source_ref_must_name_a_defined_source() {
        let missing = vec![
            "k.yaml:9: sourceRef GitRepository flux-system/fleet is not defined in any file"
                .to_string(),
        ];
        for (src, want) in [
            (
                source("GitRepository", "fleet", Some("flux-system")),
                vec![],
            ),
            (source("GitRepository", "fleet", None), vec![]),
            (
                source("GitRepository", "fleet", Some("other")),
                missing.clone(),
            ),
            (
                source("OCIRepository", "fleet", Some("flux-system")),
                missing.clone(),
            ),
            (source("GitRepository", "fleet2", None), missing.clone()),
        ] {
            assert_eq!(
                check_files(&[("k.yaml", KS), ("s.yaml", &src)], check),
                want,
                "{src}"
            );
        }
        let bootstrap = KS.replace("name: fleet", "name: flux-system");
        assert_eq!(
            check_files(&[("k.yaml", &bootstrap)], check),
            Vec::<String>::new()
        );
    }

    #[test]
    fn helm_release_sources_and_chart_refs_are_resolved() {
        assert_eq!(
            check_files(&[("hr.yaml", HR)], check),
            [
                "hr.yaml:12: chart.spec.sourceRef HelmRepository apps/charts is not defined in any file"
            ]
        );
        let repo = source("HelmRepository", "charts", Some("apps"));
        assert_eq!(
            check_files(&[("hr.yaml", HR), ("r.yaml", &repo)], check),
            Vec::<String>::new()
        );
        // chartRef to the HelmChart another HelmRelease generates, or to a missing one
        let by_ref = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web2\n  namespace: apps\nspec:\n  chartRef:\n    kind: HelmChart\n    name: apps-web\n";
        assert_eq!(
            check_files(
                &[("hr.yaml", HR), ("r.yaml", &repo), ("hr2.yaml", by_ref)],
                check
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            check_files(&[("hr2.yaml", by_ref)], check),
            ["hr2.yaml:9: chartRef HelmChart apps/apps-web is not defined in any file"]
        );
    }

    #[test]
    fn artifact_generators_define_external_artifacts() {
        let ks = KS.replace(
            "kind: GitRepository\n    name: fleet",
            "kind: ExternalArtifact\n    name: apps",
        );
        let generator = "apiVersion: source.extensions.fluxcd.io/v1beta1\nkind: ArtifactGenerator\nmetadata:\n  name: g\n  namespace: flux-system\nspec:\n  artifacts:\n    - name: apps\n";
        assert_eq!(
            check_files(&[("k.yaml", &ks), ("g.yaml", generator)], check),
            Vec::<String>::new()
        );
        assert_eq!(check_files(&[("k.yaml", &ks)], check).len(), 1);
    }
}
