//! `pennant tree ks NAME [-n NS] [-o table|json|yaml]`: a Kustomization's inventory as a tree
//! (as `flux tree ks`), with each HelmRelease's inventory and each Canary's objects beneath
//! them and the state of the GitOps objects (sources too) and Canaries on their line
//! ([`crate::view::tree`]).
//! Nested Kustomizations (same cluster) are expanded as `flux tree` does.

use std::collections::BTreeSet;

use anyhow::bail;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

use super::get::{Output, client, to_text};
use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::{Kustomization, ResourceRef};
use crate::view::Kind;
use crate::view::summary::Summarize;
use crate::view::tree::{Node, ObjectRef, canary_objects, parse_inventory_id, render, state_text};

/// `pennant tree ks NAME`.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    /// `ks` or `kustomization`.
    pub kind: String,
    /// Name of the Kustomization.
    pub name: String,
    /// Namespace (default: the kubeconfig context's namespace, as kubectl).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

fn entries(inv: Option<&crate::api::kustomization::ResourceInventory>) -> &[ResourceRef] {
    inv.map_or(&[], |i| &i.entries)
}

/// The tree of Kustomization `ns/name`; `seen` stops a Kustomization that lists itself (or an
/// ancestor) from recursing.
async fn kustomization_tree(
    client: &Client,
    ns: &str,
    name: &str,
    now: Timestamp,
    seen: &mut BTreeSet<(String, String)>,
) -> anyhow::Result<Node> {
    let k: Kustomization = Api::namespaced(client.clone(), ns).get(name).await?;
    let me = ObjectRef {
        group: "kustomize.toolkit.fluxcd.io".into(),
        kind: "Kustomization".into(),
        namespace: ns.into(),
        name: name.into(),
    };
    seen.insert((ns.to_string(), name.to_string()));
    let mut root = Node::leaf(state_text(&me, &k.summarize(now)));
    let status = k.status.as_ref();
    for e in entries(status.and_then(|s| s.inventory.as_ref())) {
        let Some(r) = parse_inventory_id(&e.id) else {
            root.items.push(Node::leaf(e.id.clone()));
            continue;
        };
        let node = match r.pennant_kind() {
            Some(Kind::Kustomization) => {
                let key = (r.namespace.clone(), r.name.clone());
                if seen.contains(&key) || k.spec.kube_config.is_some() {
                    Node::leaf(r.text())
                } else {
                    Box::pin(kustomization_tree(client, &r.namespace, &r.name, now, seen))
                        .await
                        .unwrap_or_else(|e| Node::leaf(format!("{} [{e}]", r.text())))
                }
            }
            Some(Kind::HelmRelease) => {
                match Api::<HelmRelease>::namespaced(client.clone(), &r.namespace)
                    .get_opt(&r.name)
                    .await?
                {
                    Some(hr) => Node {
                        text: state_text(&r, &hr.summarize(now)),
                        items: entries(hr.status.as_ref().and_then(|s| s.inventory.as_ref()))
                            .iter()
                            .map(|e| {
                                Node::leaf(
                                    parse_inventory_id(&e.id).map_or(e.id.clone(), |r| r.text()),
                                )
                            })
                            .collect(),
                    },
                    None => Node::leaf(format!("{} [not found]", r.text())),
                }
            }
            Some(Kind::Canary) => {
                match Api::<Canary>::namespaced(client.clone(), &r.namespace)
                    .get_opt(&r.name)
                    .await?
                {
                    Some(c) => Node {
                        text: state_text(&r, &c.summarize(now)),
                        items: canary_objects(&c)
                            .iter()
                            .map(|o| Node::leaf(o.text()))
                            .collect(),
                    },
                    None => Node::leaf(format!("{} [not found]", r.text())),
                }
            }
            Some(kind) => match source_summary(client, kind, &r.namespace, &r.name, now).await? {
                Some(s) => Node::leaf(state_text(&r, &s)),
                None => Node::leaf(format!("{} [not found]", r.text())),
            },
            None => Node::leaf(r.text()),
        };
        root.items.push(node);
    }
    Ok(root)
}

async fn summary_of<K>(
    client: &Client,
    ns: &str,
    name: &str,
    now: Timestamp,
) -> kube::Result<Option<crate::view::Summary>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Summarize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let o = Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(o.map(|o| o.summarize(now)))
}

/// The summary of a source (the kinds without objects of their own beneath them).
async fn source_summary(
    client: &Client,
    kind: Kind,
    ns: &str,
    name: &str,
    now: Timestamp,
) -> kube::Result<Option<crate::view::Summary>> {
    use crate::api::source::{GitRepository, HelmChart, HelmRepository, OCIRepository};
    match kind {
        Kind::GitRepository => summary_of::<GitRepository>(client, ns, name, now).await,
        Kind::OCIRepository => summary_of::<OCIRepository>(client, ns, name, now).await,
        Kind::HelmRepository => summary_of::<HelmRepository>(client, ns, name, now).await,
        Kind::HelmChart => summary_of::<HelmChart>(client, ns, name, now).await,
        Kind::HelmRelease => summary_of::<HelmRelease>(client, ns, name, now).await,
        Kind::Kustomization => summary_of::<Kustomization>(client, ns, name, now).await,
        Kind::Canary => summary_of::<Canary>(client, ns, name, now).await,
    }
}

/// `pennant tree ks NAME`: prints the tree (or its JSON/YAML: `{text, items}` nodes).
pub async fn command(args: TreeArgs) -> anyhow::Result<()> {
    if Kind::parse(&args.kind) != Some(Kind::Kustomization) {
        bail!("{:?}: `pennant tree` shows Kustomizations (ks)", args.kind);
    }
    let client = client().await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let tree = kustomization_tree(
        &client,
        &ns,
        &args.name,
        Timestamp::now(),
        &mut BTreeSet::new(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("Kustomization {ns}/{}: {e}", args.name))?;
    print!(
        "{}",
        match args.output {
            Output::Table => render(&tree),
            o => to_text(&tree, o)?,
        }
    );
    Ok(())
}
