//! The wrong `apiVersion` for a kind pennant serves: a Flux or Flagger kind under another
//! Flux/Flagger group (a HelmRelease in `source.toolkit.fluxcd.io/v1`, as some tutorials write
//! it) or under a version pennant does not serve (`helm.toolkit.fluxcd.io/v2beta1`). The table
//! is pennant's own CRDs ([`crate::api::crds::all`]). A kind of the same name in a group that is
//! neither Flux's nor Flagger's (kustomize's `kustomize.config.k8s.io` Kustomization) is another
//! kind and is left alone.

use std::cmp::Ordering;

use super::{Findings, Repo};

/// (kind, group, served version) of every kind pennant serves.
pub fn served() -> Vec<(String, String, String)> {
    crate::api::crds::all()
        .into_iter()
        .flat_map(|crd| {
            let (kind, group) = (crd.spec.names.kind, crd.spec.group);
            crd.spec
                .versions
                .into_iter()
                .filter(|v| v.served)
                .map(move |v| (kind.clone(), group.clone(), v.name))
        })
        .collect()
}

/// Flux's groups (`*.fluxcd.io`) and Flagger's (`flagger.app`).
fn flux_or_flagger(group: &str) -> bool {
    group.ends_with(".fluxcd.io") || group == "flagger.app"
}

pub fn check(repo: &Repo, out: &mut Findings) {
    let table = served();
    for d in &repo.docs {
        let (kind, api_version) = (d.kind(), d.api_version());
        let mine: Vec<_> = table.iter().filter(|(k, _, _)| k == kind).collect();
        let Some((_, group, version)) = mine.first() else {
            continue;
        };
        if mine
            .iter()
            .any(|(_, g, v)| api_version == format!("{g}/{v}"))
        {
            continue;
        }
        let right = format!("{group}/{version}");
        let (g, v) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let message = if g == group {
            let age = if older(v, version) {
                "an older, deprecated version"
            } else {
                "not a version pennant serves"
            };
            format!("{kind} {api_version} is {age}: use apiVersion {right}")
        } else if flux_or_flagger(g) {
            format!("{kind} is {right}, not {api_version} ({g} has no {kind})")
        } else {
            continue;
        };
        out.push(d.file, d.line(&["apiVersion"]), message);
    }
}

/// Whether Kubernetes version `a` sorts before `b` (`v1beta1` < `v1beta2` < `v1` < `v2`);
/// unparsable versions never do.
pub fn older(a: &str, b: &str) -> bool {
    fn key(v: &str) -> Option<(u32, u32, u32)> {
        let rest = v.strip_prefix('v')?;
        let major_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major = rest[..major_end].parse().ok()?;
        let rest = &rest[major_end..];
        let (stage, n) = if rest.is_empty() {
            (2, 0)
        } else if let Some(n) = rest.strip_prefix("beta") {
            (1, n.parse().ok()?)
        } else if let Some(n) = rest.strip_prefix("alpha") {
            (0, n.parse().ok()?)
        } else {
            return None;
        };
        Some((major, stage, n))
    }
    matches!((key(a), key(b)), (Some(a), Some(b)) if a.cmp(&b) == Ordering::Less)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_one;
    use super::*;

    #[test]
    fn the_table_is_pennants_crds() {
        let t = served();
        for (kind, api) in [
            ("HelmRelease", "helm.toolkit.fluxcd.io/v2"),
            ("Kustomization", "kustomize.toolkit.fluxcd.io/v1"),
            ("GitRepository", "source.toolkit.fluxcd.io/v1"),
            ("Canary", "flagger.app/v1beta1"),
            ("ArtifactGenerator", "source.extensions.fluxcd.io/v1beta1"),
        ] {
            assert!(
                t.iter()
                    .any(|(k, g, v)| k == kind && format!("{g}/{v}") == api),
                "{kind} {api} in {t:?}"
            );
        }
    }

    #[test]
    fn versions_sort_as_kubernetes_does() {
        for (a, b, want) in [
            ("v2beta1", "v2", true),
            ("v1beta2", "v1", true),
            ("v1alpha3", "v1beta1", true),
            ("v1beta1", "v1beta2", true),
            ("v3", "v2", false),
            ("v2", "v2", false),
            ("vX", "v2", false),
        ] {
            assert_eq!(older(a, b), want, "{a} < {b}");
        }
    }

    #[test]
    fn wrong_groups_and_versions_are_named_with_the_served_one() {
        let cases = [
            (
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRelease\n",
                vec![
                    "1: HelmRelease is helm.toolkit.fluxcd.io/v2, not source.toolkit.fluxcd.io/v1 \
                     (source.toolkit.fluxcd.io has no HelmRelease)",
                ],
            ),
            (
                "kind: GitRepository\napiVersion: source.toolkit.fluxcd.io/v1beta2\n",
                vec![
                    "2: GitRepository source.toolkit.fluxcd.io/v1beta2 is an older, deprecated \
                     version: use apiVersion source.toolkit.fluxcd.io/v1",
                ],
            ),
            (
                "apiVersion: flagger.app/v2\nkind: Canary\n",
                vec![
                    "1: Canary flagger.app/v2 is not a version pennant serves: use apiVersion \
                     flagger.app/v1beta1",
                ],
            ),
            // kustomize's own Kustomization, Flux kinds pennant does not serve, core kinds
            (
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
                vec![],
            ),
            (
                "apiVersion: notification.toolkit.fluxcd.io/v1beta3\nkind: Alert\n",
                vec![],
            ),
            ("apiVersion: v1\nkind: ConfigMap\n", vec![]),
            (
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\n",
                vec![],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(check_one(text, check), want, "{text}");
        }
    }
}
