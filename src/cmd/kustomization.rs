//! `pennant build ks <name>` and `pennant diff ks <name>`: what the kustomize controller would
//! apply, and how it differs from the cluster, as `flux build ks` / `flux diff ks` do.
//!
//! Both read the Kustomization from the cluster (`-n`, default `flux-system` as Flux's CLI) and
//! render it with the controller's own code ([`crate::kustomize::render`]): decryption with the
//! keys of `spec.decryption`, postBuild with the cluster's `substituteFrom` values,
//! `commonMetadata`, then the owner labels. The manifests come from:
//! - `--path DIR`: a local directory that matches `spec.path`; the git work tree holding it
//!   (its nearest ancestor with a `.git`, else DIR itself) is packed as the source controller
//!   packs an artifact (`.sourceignore` files, Flux's default exclusions, `--ignore-paths`:
//!   gitignore lines relative to that tree, which replace the defaults as `spec.ignore` does) and
//!   DIR is built inside it, so `../base` references work as in the artifact;
//! - otherwise the source's current artifact (`status.artifact.url`, digest verified): what the
//!   next reconcile would apply.
//!
//! Secret values are never printed: in `build`, every `data` value becomes the base64 of
//! `**SOPS**` and every `stringData` value `**SOPS**` (Flux's mask; Flux masks only SOPS
//! ciphertext because its build does not decrypt, pennant's does, so it masks every Secret).
//! In `diff`, Secret values are `***`, and `*** (before)` / `*** (after)` where they differ
//! (kubectl diff's convention).
//!
//! `diff`: every object is dry-run applied server-side in the controller's stage order
//! ([`crate::apply::ssa::Applier::dry_run_one`], the controller's field manager), then one line
//! per object that would change, Flux's wording: `► Kind/ns/name created`, `► … drifted`
//! followed by a unified diff of the live object against the dry-run result (status,
//! managedFields, resourceVersion, generation, uid and creationTimestamp left out), `► …
//! skipped`; with `spec.prune`, `► … deleted` for each inventory entry absent from the build
//! that the next prune would delete (owner labels match, no prune opt-out). Exit status as
//! Flux's: 0 no difference, 1 differences, 2 an error (objects whose dry-run failed are named on
//! stderr; the others are still shown). A Kustomization with `spec.kubeConfig` (objects in
//! another cluster) is refused by `diff`, as Flux's CLI skips it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::kustomization::Kustomization;
use crate::apply::inventory::{inventory_of, owner_labels, stale};
use crate::apply::order::stages;
use crate::apply::ssa::{Applier, stamp_labels};

pub use super::diff::{
    DiffOutput, format_dry_run, mask_secret_pair, print_and_exit, shown_pair, unified_diff,
};
use super::diff::{drop_last_applied, is_secret, yaml};
use crate::kustomize::render::{SourceState, fetch_artifact, render, source_key, source_state};
use crate::source::artifact::{ArchiveLimits, UntarLimits, archive_dir, untar_gz};
use crate::source::ignore::IgnoreRules;

/// Flux's mask of a secret value in `build` output.
pub const MASK: &str = "**SOPS**";

/// `build|diff ks <name> [-n <ns>] [--path DIR] [--ignore-paths P,...]`.
#[derive(clap::Args, Debug, Clone)]
pub struct KsArgs {
    /// Name of the Kustomization.
    pub name: String,
    /// Namespace of the Kustomization.
    #[arg(
        short,
        long,
        default_value = "flux-system",
        env = "FLUX_SYSTEM_NAMESPACE"
    )]
    pub namespace: String,
    /// A local directory that matches the Kustomization's spec.path (default: the source's
    /// current artifact).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// With --path: paths to leave out, gitignore lines relative to the work tree
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ignore_paths: Vec<String>,
}

/// `pennant build <kind>`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BuildKind {
    /// Print the objects a Kustomization would apply (multi-document YAML; Secret values
    /// masked).
    #[command(visible_alias = "ks")]
    Kustomization(KsArgs),
    /// Print the objects the next upgrade of a HelmRelease would apply, rendered by helm
    /// with the controller's flags and post-renderer (multi-document YAML; Secret values
    /// masked; hooks left out).
    #[command(visible_alias = "hr")]
    HelmRelease(super::helm_release::HrArgs),
}

/// `pennant diff <kind>`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DiffKind {
    /// Server-side dry-run of a Kustomization's objects and the differences with the cluster.
    /// Exit status: 0 no differences, 1 differences, 2 an error.
    #[command(visible_alias = "ks")]
    Kustomization(KsArgs),
    /// What the next upgrade of a HelmRelease would apply: rendered by helm with the
    /// controller's flags, server-side dry-run, diffed per object. Exit status: 0 no
    /// differences, 1 differences, 2 an error.
    #[command(visible_alias = "hr")]
    HelmRelease(super::helm_release::HrArgs),
}

/// `pennant build ks`: prints the masked objects.
pub async fn build_command(kind: BuildKind) -> anyhow::Result<()> {
    let args = match kind {
        BuildKind::Kustomization(args) => args,
        BuildKind::HelmRelease(args) => return super::helm_release::build_command(args).await,
    };
    let client = connect().await?;
    let (_, objects) = rendered(&client, &args).await?;
    print!(
        "{}",
        to_yaml(&objects.iter().map(mask_secret).collect::<Vec<_>>())
    );
    Ok(())
}

/// `pennant diff ks|hr`: prints the differences and exits 0, 1 or 2 (never returns an error).
pub async fn diff_command(kind: DiffKind) -> anyhow::Result<()> {
    match kind {
        DiffKind::Kustomization(args) => print_and_exit(diff(&args).await),
        DiffKind::HelmRelease(args) => super::helm_release::diff_command(args).await,
    }
}

/// A client from the user's kubeconfig (or in-cluster).
pub async fn connect() -> anyhow::Result<Client> {
    super::install_rustls()?;
    kube::Client::try_default()
        .await
        .context("kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster)")
}

/// The Kustomization and its rendered objects with the owner labels, in build order.
async fn rendered(client: &Client, args: &KsArgs) -> anyhow::Result<(Kustomization, Vec<Value>)> {
    let ks = Api::<Kustomization>::namespaced(client.clone(), &args.namespace)
        .get(&args.name)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "failed to get kustomization object: {}",
                crate::kustomize::render::cause_of(e)
            )
        })?;
    let work = tempfile::Builder::new()
        .prefix("pennant-build-")
        .tempdir()
        .context("tmp dir")?;
    let mut spec_ks = ks.clone();
    let root = match &args.path {
        Some(dir) => {
            let (root, path) = local_tree(dir, &args.ignore_paths, work.path())?;
            spec_ks.spec.path = Some(path);
            root
        }
        None => {
            if !args.ignore_paths.is_empty() {
                anyhow::bail!("--ignore-paths needs --path");
            }
            let (kind, ns, name) = source_key(&ks);
            let source = format!("{kind}/{ns}/{name}");
            match source_state(&ks, client).await.map_err(|e| {
                anyhow::anyhow!(
                    "unable to get source '{source}': {}",
                    crate::kustomize::render::cause_of(e)
                )
            })? {
                SourceState::Ready(a) => fetch_artifact(&a, work.path()).await?,
                SourceState::NoArtifact => anyhow::bail!("source '{source}' has no artifact yet"),
                SourceState::Missing => anyhow::bail!("Source '{source}' not found"),
                SourceState::UnsupportedKind(k) => {
                    anyhow::bail!("source `{k}` kind is not supported")
                }
            }
        }
    };
    let options = crate::kustomize::controller::Settings::default().build;
    let mut objects = render(&spec_ks, client, root, &options).await?;
    let labels = owner_labels(&ks.name_any(), &args.namespace);
    for o in &mut objects {
        stamp_labels(o, &labels);
    }
    Ok((ks, objects))
}

/// The work tree holding `dir` (nearest ancestor with `.git`, else `dir`), packed and unpacked
/// into `work/src` as an artifact would be, and `dir` relative to it (`./` form).
fn local_tree(dir: &Path, ignore: &[String], work: &Path) -> anyhow::Result<(PathBuf, String)> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("invalid resource path {:?}", dir.display().to_string()))?;
    anyhow::ensure!(
        dir.is_dir(),
        "invalid resource path {:?}",
        dir.display().to_string()
    );
    let root = tree_root(&dir);
    let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
    let patterns = (!ignore.is_empty()).then(|| ignore.join("\n"));
    let rules = IgnoreRules::load(&root, patterns.as_deref())
        .with_context(|| format!("ignore rules of {}", root.display()))?;
    let (tgz, _) = archive_dir(&root, &rules, &ArchiveLimits::default(), Vec::new())
        .with_context(|| format!("packing {}", root.display()))?;
    let dest = work.join("src");
    untar_gz(&tgz[..], &dest, &UntarLimits::default())
        .with_context(|| format!("unpacking {}", root.display()))?;
    Ok((dest, format!("./{}", rel.display())))
}

/// The nearest ancestor of `dir` (itself included) holding `.git`, else `dir`.
pub fn tree_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir)
        .to_path_buf()
}

/// The objects as multi-document YAML, each document opened by `---` (Flux's `ObjectsToYAML`).
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", yaml(o)))
        .collect()
}

/// A Secret with every `data` value replaced by the base64 of [`MASK`] and every `stringData`
/// value by [`MASK`] (and no last-applied annotation, which may hold them); any other object
/// unchanged. PURE.
pub fn mask_secret(obj: &Value) -> Value {
    let mut o = obj.clone();
    if !is_secret(obj) {
        return o;
    }
    let masked = base64::engine::general_purpose::STANDARD.encode(MASK);
    for (field, mask) in [("data", masked.as_str()), ("stringData", MASK)] {
        if let Some(m) = o.get_mut(field).and_then(Value::as_object_mut) {
            m.values_mut().for_each(|v| *v = json!(mask));
        }
    }
    drop_last_applied(&mut o);
    o
}

/// The dry-run of every object and the prune preview; errors of single objects are returned
/// beside the output (the other objects are still diffed, as Flux).
async fn diff(args: &KsArgs) -> anyhow::Result<(DiffOutput, Vec<String>)> {
    let client = connect().await?;
    let (ks, objects) = rendered(&client, args).await?;
    // its objects live in another cluster: a dry-run here would compare the wrong ones
    anyhow::ensure!(
        ks.spec.kube_config.is_none(),
        "diff not supported for remote clusters (spec.kubeConfig is set)"
    );
    let applier = Applier::new(client);
    let force = ks.spec.force == Some(true);
    let new_inventory = inventory_of(&objects);
    let mut out = DiffOutput::default();
    let mut errors = vec![];
    for (_, objs) in stages(objects, &[]) {
        for o in &objs {
            match applier.dry_run_one(o, force).await {
                Ok(d) => {
                    let (text, changed) = format_dry_run(&d);
                    out.text.push_str(&text);
                    out.changed |= changed;
                }
                Err(e) => errors.push(e.message),
            }
        }
    }
    if ks.spec.prune && errors.is_empty() {
        let old = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.clone())
            .unwrap_or_default();
        let stale = stale(&old, &new_inventory).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ns = ks.namespace().unwrap_or_default();
        for c in applier
            .prune_preview(&stale, (&ks.name_any(), &ns))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            out.text.push_str(&format!("► {} deleted\n", c.subject()));
            out.changed = true;
        }
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::inventory::ObjectId;
    use crate::apply::ssa::{Action, Change, DryRun};

    fn secret() -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "apps",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}, "stringData": {"token": "t0ps3cret"}})
    }

    #[test]
    fn build_masks_every_secret_value_and_nothing_else() {
        let m = mask_secret(&secret());
        assert_eq!(m["data"]["password"], "KipTT1BTKio=", "base64 of **SOPS**");
        assert_eq!(m["data"]["user"], "KipTT1BTKio=");
        assert_eq!(m["stringData"]["token"], MASK);
        let text = to_yaml(&[m]);
        for plain in ["aHVudGVyMg==", "YWRtaW4=", "t0ps3cret", "hunter2"] {
            assert!(!text.contains(plain), "{plain} leaked: {text}");
        }
        assert!(text.starts_with("---\n"), "{text}");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        assert_eq!(mask_secret(&cm), cm, "only Secrets are masked");
        let bare = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}});
        let (b, a) = mask_secret_pair(&bare, &bare);
        let only_masked = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "***"}});
        assert_eq!((&b, &a), (&only_masked, &only_masked), "no field added");
        assert!(mask_secret(&bare)["metadata"].get("annotations").is_none());
    }

    #[test]
    fn diff_masks_secrets_and_marks_the_changed_values() {
        let live = secret();
        let mut merged = secret();
        merged["data"]["password"] = json!("bmV3LXBhc3M=");
        merged["data"]["extra"] = json!("eA==");
        let (l, m) = mask_secret_pair(&live, &merged);
        assert_eq!(l["data"]["password"], "*** (before)");
        assert_eq!(m["data"]["password"], "*** (after)");
        assert_eq!(
            (&l["data"]["user"], &m["data"]["user"]),
            (&json!("***"), &json!("***"))
        );
        assert_eq!(m["data"]["extra"], "***", "a new key: no value shown");
        assert!(
            l["metadata"]["annotations"]
                .get("kubectl.kubernetes.io/last-applied-configuration")
                .is_none()
        );
        let d = DryRun {
            change: change("Secret", Action::Configured),
            live: Some(live),
            merged: Some(merged),
        };
        let (text, changed) = format_dry_run(&d);
        assert!(changed);
        for plain in [
            "aHVudGVyMg==",
            "bmV3LXBhc3M=",
            "YWRtaW4=",
            "eA==",
            "t0ps3cret",
        ] {
            assert!(!text.contains(plain), "{plain} leaked: {text}");
        }
        assert!(
            text.contains("-  password: '*** (before)'")
                || text.contains("-  password: \"*** (before)\""),
            "{text}"
        );
        assert!(text.contains("+  extra: "), "{text}");
    }

    fn change(kind: &str, action: Action) -> Change {
        Change {
            id: ObjectId {
                group: if kind == "Deployment" {
                    "apps".into()
                } else {
                    String::new()
                },
                kind: kind.into(),
                namespace: "apps".into(),
                name: if kind == "Secret" {
                    "db".into()
                } else {
                    "web".into()
                },
            },
            version: "v1".into(),
            action,
        }
    }

    fn deployment(replicas: i64, generation: i64, rv: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "generation": generation, "resourceVersion": rv,
                "uid": "u-1", "creationTimestamp": "2026-12-06T00:00:00Z",
                "managedFields": [{"manager": "pennant", "operation": "Apply"}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 1, "observedGeneration": generation}})
    }

    #[test]
    fn a_drift_shows_only_the_changed_field_without_server_noise() {
        let d = DryRun {
            change: change("Deployment", Action::Configured),
            live: Some(deployment(1, 1, "100")),
            merged: Some(deployment(2, 2, "101")),
        };
        let (text, changed) = format_dry_run(&d);
        assert!(changed);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "► Deployment/apps/web drifted");
        assert_eq!(lines[1], "--- Deployment/apps/web (live)");
        assert_eq!(lines[2], "+++ Deployment/apps/web (merged)");
        let changes: Vec<&str> = lines[3..]
            .iter()
            .copied()
            .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("@@"))
            .collect();
        assert_eq!(changes, ["-  replicas: 1", "+  replicas: 2"], "{text}");
        for noise in [
            "resourceVersion",
            "managedFields",
            "generation",
            "uid",
            "status",
            "creationTimestamp",
        ] {
            assert!(!text.contains(noise), "{noise} in {text}");
        }
    }

    #[test]
    fn created_skipped_unchanged_and_deleted_lines_are_fluxs() {
        let d = |action| DryRun {
            change: change("Deployment", action),
            live: None,
            merged: None,
        };
        assert_eq!(
            format_dry_run(&d(Action::Created)),
            ("► Deployment/apps/web created\n".to_string(), true)
        );
        assert_eq!(
            format_dry_run(&d(Action::Skipped)),
            ("► Deployment/apps/web skipped\n".to_string(), false)
        );
        assert_eq!(
            format_dry_run(&d(Action::Unchanged)),
            (String::new(), false)
        );
        assert_eq!(
            format_dry_run(&d(Action::Deleted)),
            ("► Deployment/apps/web deleted\n".to_string(), true)
        );
        assert_eq!(
            unified_diff("x", "a: 1\n", "a: 1\n"),
            "",
            "equal texts: no diff"
        );
    }

    #[test]
    fn a_local_path_is_built_inside_its_work_tree() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let app = repo.join("apps/prod");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::write(app.join("cm.yaml"), "kind: ConfigMap\n").unwrap();
        std::fs::write(repo.join("apps/skip.yaml"), "kind: ConfigMap\n").unwrap();
        let repo = repo.canonicalize().unwrap();
        assert_eq!(tree_root(&repo.join("apps/prod")), repo);
        let work = t.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let (root, path) = local_tree(&app, &["apps/skip.yaml".into()], &work).unwrap();
        assert_eq!(path, "./apps/prod");
        assert!(root.join("apps/prod/cm.yaml").is_file());
        assert!(
            !root.join("apps/skip.yaml").exists(),
            "--ignore-paths left out"
        );
        assert!(
            !root.join(".git").exists(),
            "VCS files left out, as in an artifact"
        );
        let lone = t.path().join("lone");
        std::fs::create_dir(&lone).unwrap();
        let lone = lone.canonicalize().unwrap();
        assert_eq!(tree_root(&lone), lone, "no work tree: the directory itself");
        assert!(local_tree(&t.path().join("missing"), &[], &work).is_err());
    }
}
