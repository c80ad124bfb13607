//! `pennant diff hr <name>` (and `pennant build hr <name>`, the next release's objects): what
//! the next install or upgrade of a HelmRelease would apply,
//! against the live cluster, without writing anything (flux2#2808, open since 2022: Flux has
//! no such command).
//!
//! The next release is rendered by the controller's own steps ([`crate::helm::render`]: the
//! chart artifact the controller would use, the values with `valuesFrom`, `helm upgrade` (or
//! `install`) `--dry-run=server` with the controller's flags and post-renderer). The first line
//! says what changes in the release itself:
//! `► HelmRelease/<ns>/<name> <chart>@<old> → <chart>@<new>, values <old digest> → <new digest>`
//! (`unchanged` where equal; `install <chart>@<version>` with nothing in storage). Then every
//! object of the new manifest is dry-run applied server-side with Helm's field manager (`helm`,
//! force, as Helm 4 applies them) and shown as `pennant diff ks` shows it
//! ([`super::diff::format_change`]): `► Kind/ns/name created`, `► … configured` and a unified
//! diff against the live object, nothing when unchanged, Secret values masked; the objects of
//! the current release's manifest the new one drops are `► … deleted` (unless already gone or
//! annotated `helm.sh/resource-policy: keep`, which Helm leaves). Hooks and CRDs are not
//! diffed (hooks run, they are not applied; the upgrade default skips CRDs).
//!
//! With `spec.kubeConfig` the release's cluster is the one of the kubeconfig Secret (read with
//! the caller's rights): storage, the dry-run and the diff go there.
//!
//! Exit status as `flux diff ks`: 0 no change, 1 changes (an object, or a new chart version or
//! values digest: the controller would make a new revision), 2 an error, one line on stderr
//! (HelmRelease not found, source not ready, values error, render failed with helm's message).

use std::collections::BTreeSet;

use kube::{Api, ResourceExt};
use serde_json::Value;

use super::diff::{DiffOutput, format_change, print_and_exit};
use crate::api::helm_release::HelmRelease;
use crate::apply::inventory::ObjectId;
use crate::apply::ssa::{Applier, subject};
use crate::gitops::target::{Flavour, Options as TargetOptions, TargetSpec, Targets};
use crate::helm::controller::{ReleaseTarget, target_spec};
use crate::helm::drift::{HELM_FIELD_MANAGER, desired_objects};
use crate::helm::engine::{HelmCli, HelmCliOptions};
use crate::helm::render::{NextRelease, next_release};

/// `diff hr <name> [-n <ns>]`.
#[derive(clap::Args, Debug, Clone)]
pub struct HrArgs {
    /// Name of the HelmRelease.
    pub name: String,
    /// Namespace of the HelmRelease.
    #[arg(
        short,
        long,
        default_value = "flux-system",
        env = "FLUX_SYSTEM_NAMESPACE"
    )]
    pub namespace: String,
}

/// Helm's annotation that keeps an object when a release drops it.
const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// The first line: the chart and values digest of the current release (`name`, `version`,
/// `config digest`; `None`: not installed) against the next one. PURE.
pub fn summary_line(
    subject: &str,
    current: Option<(&str, &str, &str)>,
    next: (&str, &str, &str),
) -> (String, bool) {
    let (name, version, digest) = next;
    let Some((cname, cversion, cdigest)) = current else {
        return (
            format!("► {subject} install {name}@{version}, values {digest}\n"),
            true,
        );
    };
    let chart = if (cname, cversion) == (name, version) {
        format!("{name}@{version} unchanged")
    } else {
        format!("{cname}@{cversion} → {name}@{version}")
    };
    let values = if cdigest == digest {
        format!("values {digest} unchanged")
    } else {
        format!("values {cdigest} → {digest}")
    };
    let changed = (cname, cversion, cdigest) != next;
    (format!("► {subject} {chart}, {values}\n"), changed)
}

/// The objects of `old` that `new` does not hold (by group, kind, namespace, name), in `old`'s
/// order, without those Helm keeps (`helm.sh/resource-policy: keep`). PURE.
pub fn dropped(old: &[Value], new: &[Value]) -> Vec<Value> {
    let kept: BTreeSet<ObjectId> = new.iter().map(ObjectId::of).collect();
    old.iter()
        .filter(|o| !kept.contains(&ObjectId::of(o)))
        .filter(|o| o["metadata"]["annotations"][RESOURCE_POLICY] != "keep")
        .cloned()
        .collect()
}

/// `pennant build hr`: prints the objects of the next release, Secret values masked as
/// `pennant build ks` masks them.
pub async fn build_command(args: HrArgs) -> anyhow::Result<()> {
    let client = super::kustomization::connect().await?;
    let (_, next, target) = next_of(&client, &args).await?;
    let objects = desired_objects(
        &target.applier,
        &next.rendered.manifest,
        &next.rendered.name,
        &next.rendered.namespace,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let masked: Vec<Value> = objects
        .iter()
        .map(super::kustomization::mask_secret)
        .collect();
    print!("{}", super::kustomization::to_yaml(&masked));
    Ok(())
}

/// The HelmRelease `args` names, its next release and the release's cluster.
async fn next_of(
    client: &kube::Client,
    args: &HrArgs,
) -> anyhow::Result<(HelmRelease, NextRelease, ReleaseTarget)> {
    let hr = Api::<HelmRelease>::namespaced(client.clone(), &args.namespace)
        .get_opt(&args.name)
        .await
        .map_err(|e| anyhow::anyhow!("failed to get HelmRelease: {e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!("HelmRelease '{}/{}' not found", args.namespace, args.name)
        })?;
    let target = release_target(client, &hr).await?;
    let engine = HelmCli::new(HelmCliOptions::default())?;
    let next = next_release(client, &target.engine, &engine, &hr).await?;
    Ok((hr, next, target))
}

/// The cluster of `hr`'s release, as the caller: the caller's cluster, or with
/// `spec.kubeConfig` the one of the kubeconfig Secret (read with the caller's rights,
/// sanitised as the controller does, [`crate::gitops::target`]; `serviceAccountName` is not
/// impersonated, as on the local cluster).
async fn release_target(client: &kube::Client, hr: &HelmRelease) -> anyhow::Result<ReleaseTarget> {
    let spec = TargetSpec {
        service_account_name: None,
        ..target_spec(hr)
    };
    Targets::new(
        client.clone(),
        TargetOptions::default(),
        Flavour::Helm,
        ReleaseTarget::of_cluster,
    )
    .target(&spec)
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// `pennant diff hr`: prints the differences and exits 0, 1 or 2 (never returns).
pub async fn diff_command(args: HrArgs) -> anyhow::Result<()> {
    print_and_exit(diff(&args).await)
}

async fn diff(args: &HrArgs) -> anyhow::Result<(DiffOutput, Vec<String>)> {
    let client = super::kustomization::connect().await?;
    let (hr, next, target) = next_of(&client, args).await?;
    object_diff(&target.applier, &hr, &next).await
}

async fn object_diff(
    applier: &Applier,
    hr: &HelmRelease,
    next: &NextRelease,
) -> anyhow::Result<(DiffOutput, Vec<String>)> {
    let who = format!(
        "HelmRelease/{}/{}",
        hr.namespace().unwrap_or_default(),
        hr.name_any()
    );
    let current = next.current.as_ref().map(|c| {
        (
            c.chart.name.as_str(),
            c.chart.version.as_str(),
            crate::helm::values::config_digest(&c.config),
        )
    });
    let (line, changed) = summary_line(
        &who,
        current.as_ref().map(|(n, v, d)| (*n, *v, d.as_str())),
        (&next.chart_name, &next.chart_version, &next.config_digest),
    );
    let mut out = DiffOutput {
        text: line,
        changed,
    };
    let (name, ns) = (&next.rendered.name, &next.rendered.namespace);
    let objects = desired_objects(applier, &next.rendered.manifest, name, ns)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut errors = vec![];
    for o in &objects {
        match applier.dry_run_one_as(o, false, HELM_FIELD_MANAGER).await {
            Ok(d) => {
                let (text, changed) = format_change(&d, "configured");
                out.text.push_str(&text);
                out.changed |= changed;
            }
            Err(e) => errors.push(e.message),
        }
    }
    if let Some(cur) = &next.current {
        let old = desired_objects(applier, &cur.manifest, name, ns)
            .await
            .map_err(|e| anyhow::anyhow!("current release: {e}"))?;
        for o in dropped(&old, &objects) {
            match applier.dry_run_one_as(&o, false, HELM_FIELD_MANAGER).await {
                // gone already: nothing to delete
                Ok(d) if d.live.is_none() => {}
                _ => {
                    out.text
                        .push_str(&format!("► {} deleted\n", subject(&ObjectId::of(&o))));
                    out.changed = true;
                }
            }
        }
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_names_what_changes_in_the_release() {
        let s = "HelmRelease/apps/web";
        let cases = [
            (
                Some(("app", "1.0.0", "sha256:a")),
                ("app", "1.0.0", "sha256:a"),
                "► HelmRelease/apps/web app@1.0.0 unchanged, values sha256:a unchanged\n",
                false,
            ),
            (
                Some(("app", "1.0.0", "sha256:a")),
                ("app", "1.1.0", "sha256:a"),
                "► HelmRelease/apps/web app@1.0.0 → app@1.1.0, values sha256:a unchanged\n",
                true,
            ),
            (
                Some(("app", "1.0.0", "sha256:a")),
                ("app", "1.0.0", "sha256:b"),
                "► HelmRelease/apps/web app@1.0.0 unchanged, values sha256:a → sha256:b\n",
                true,
            ),
            (
                None,
                ("app", "1.0.0", "sha256:a"),
                "► HelmRelease/apps/web install app@1.0.0, values sha256:a\n",
                true,
            ),
        ];
        for (cur, next, text, changed) in cases {
            assert_eq!(
                summary_line(s, cur, next),
                (text.to_string(), changed),
                "{cur:?}"
            );
        }
    }

    fn obj(kind: &str, name: &str, keep: bool) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": "apps"}});
        if keep {
            o["metadata"]["annotations"] = json!({RESOURCE_POLICY: "keep"});
        }
        o
    }

    #[test]
    fn objects_the_new_manifest_drops_are_deleted_unless_helm_keeps_them() {
        let old = [
            obj("ConfigMap", "a", false),
            obj("ConfigMap", "b", false),
            obj("Secret", "a", false),
            obj("ConfigMap", "kept", true),
        ];
        let new = [obj("ConfigMap", "a", false)];
        let names: Vec<String> = dropped(&old, &new)
            .iter()
            .map(|o| subject(&ObjectId::of(o)))
            .collect();
        assert_eq!(names, ["ConfigMap/apps/b", "Secret/apps/a"]);
        assert!(dropped(&new, &new).is_empty());
    }
}
