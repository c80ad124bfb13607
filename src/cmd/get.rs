//! `pennant get canaries|sources|kustomizations|helmreleases|all [-n NS | -A] [--watch]
//! [-o table|json|yaml]`: list through the Kubernetes API, summarise and print with
//! [`crate::view`]. With `--watch`, the table, then one row per change (as `kubectl get -w`).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::Kustomization;
use crate::api::source::{GitRepository, HelmChart, HelmRepository, OCIRepository};
use crate::view::summary::Summarize;
use crate::view::table::{Table, columns, render_get, render_row};
use crate::view::{Kind, Summary};

/// `-o`: how `get`, `tree` and `events` print.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned columns (colour on a terminal).
    #[default]
    Table,
    Json,
    Yaml,
}

/// The namespace flags shared by `get`, `tree`, `events`, `reconcile`, `promote`, `abort`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Scope {
    /// Namespace (default: the kubeconfig context's namespace, as kubectl).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

impl Scope {
    /// The namespace to list in (`None`: all), and the one to use for a single object.
    pub fn resolve(&self, client: &Client) -> Option<String> {
        if self.all_namespaces {
            None
        } else {
            Some(
                self.namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string()),
            )
        }
    }
}

/// `pennant get …`.
#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    /// `canaries`, `sources`, `kustomizations` (`ks`), `helmreleases` (`hr`) or `all`; or one
    /// source kind (`gitrepositories`/`git`, `ocirepositories`/`oci`, `helmrepositories`/
    /// `helmrepo`, `helmcharts`/`chart`).
    pub what: String,
    /// After `sources`: one source kind (`git`, `oci`, `helm`, `chart`) or `all`, as `flux get
    /// sources git`; then (or after any other kind) the name of one object, as `flux get ks
    /// apps`.
    #[arg(num_args = 0..=2, value_name = "KIND|NAME")]
    pub rest: Vec<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// After listing, print a row each time one changes (Ctrl-C ends).
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// What `pennant get` lists: the kinds, whether they print in sections (more than one kind),
/// and the one name asked for, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub kinds: Vec<Kind>,
    pub sections: bool,
    pub name: Option<String>,
}

/// The [`Query`] of `what` and the words after it (`sources`' sub-kind, a name). PURE.
pub fn query(what: &str, rest: &[String]) -> anyhow::Result<Query> {
    let source = |s: &str| match Kind::parse(s) {
        Some(k) if Kind::SOURCES.contains(&k) => Ok(k),
        _ => bail!("{s:?}: not a source kind (git, oci, helm, chart, all)"),
    };
    let q = |kinds: Vec<Kind>, name: Option<&String>| Query {
        sections: kinds.len() > 1,
        kinds,
        name: name.cloned(),
    };
    let rest: Vec<&String> = rest.iter().collect();
    match (what.to_ascii_lowercase().as_str(), rest.as_slice()) {
        ("all", []) => Ok(q(Kind::ALL.to_vec(), None)),
        ("all", [name]) => Ok(q(Kind::ALL.to_vec(), Some(name))),
        ("sources" | "source", []) => Ok(q(Kind::SOURCES.to_vec(), None)),
        ("sources" | "source", [k, name @ ..]) if k.as_str() == "all" => {
            Ok(q(Kind::SOURCES.to_vec(), name.first().copied()))
        }
        ("sources" | "source", [k, name @ ..]) => Ok(q(vec![source(k)?], name.first().copied())),
        (w, rest) => match (Kind::parse(w), rest) {
            (Some(k), []) => Ok(q(vec![k], None)),
            (Some(k), [name]) => Ok(q(vec![k], Some(name))),
            (Some(_), _) => bail!("unexpected arguments {rest:?} after {what:?}"),
            (None, _) => bail!(
                "{what:?}: expected canaries, sources, kustomizations, helmreleases or all \
                 (or a source kind: git, oci, helmrepo, chart)"
            ),
        },
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (no-color.org).
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A Kubernetes client from the environment (`KUBECONFIG`, `~/.kube/config` or in-cluster).
pub async fn client() -> anyhow::Result<Client> {
    super::install_rustls()?;
    Client::try_default()
        .await
        .context("kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster)")
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn list_kind<K>(
    client: &Client,
    ns: Option<&str>,
    now: Timestamp,
) -> kube::Result<Vec<Summary>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Summarize
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let list = api::<K>(client, ns).list(&ListParams::default()).await?;
    Ok(list.items.iter().map(|o| o.summarize(now)).collect())
}

/// The summaries of `kind`'s objects in `ns` (`None`: every namespace), at `now`.
pub async fn list(
    client: &Client,
    kind: Kind,
    ns: Option<&str>,
    now: Timestamp,
) -> kube::Result<Vec<Summary>> {
    match kind {
        Kind::GitRepository => list_kind::<GitRepository>(client, ns, now).await,
        Kind::OCIRepository => list_kind::<OCIRepository>(client, ns, now).await,
        Kind::HelmRepository => list_kind::<HelmRepository>(client, ns, now).await,
        Kind::HelmChart => list_kind::<HelmChart>(client, ns, now).await,
        Kind::HelmRelease => list_kind::<HelmRelease>(client, ns, now).await,
        Kind::Kustomization => list_kind::<Kustomization>(client, ns, now).await,
        Kind::Canary => list_kind::<Canary>(client, ns, now).await,
    }
}

type SummaryStream = futures::stream::BoxStream<'static, anyhow::Result<Summary>>;

fn watch_kind<K>(client: &Client, ns: Option<&str>) -> SummaryStream
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Summarize
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    // errors (a restarted API server, a CRD removed) are retried with the watcher's backoff
    watcher(api::<K>(client, ns), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map_ok(|o| o.summarize(Timestamp::now()))
        .map_err(anyhow::Error::from)
        .boxed()
}

fn watch(client: &Client, kind: Kind, ns: Option<&str>) -> SummaryStream {
    match kind {
        Kind::GitRepository => watch_kind::<GitRepository>(client, ns),
        Kind::OCIRepository => watch_kind::<OCIRepository>(client, ns),
        Kind::HelmRepository => watch_kind::<HelmRepository>(client, ns),
        Kind::HelmChart => watch_kind::<HelmChart>(client, ns),
        Kind::HelmRelease => watch_kind::<HelmRelease>(client, ns),
        Kind::Kustomization => watch_kind::<Kustomization>(client, ns),
        Kind::Canary => watch_kind::<Canary>(client, ns),
    }
}

/// `value` as `-o json` (pretty) or `-o yaml` prints it.
pub fn to_text<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        _ => serde_saphyr::to_string(value)?,
    })
}

/// `pennant get …`: prints the table (or JSON/YAML); with `--watch`, then a row per change.
pub async fn command(args: GetArgs) -> anyhow::Result<()> {
    let Query {
        kinds,
        sections,
        name,
    } = query(&args.what, &args.rest)?;
    let client = client().await?;
    let ns = args.scope.resolve(&client);
    let all_ns = ns.is_none();
    let now = Timestamp::now();
    let mut rows = vec![];
    for &kind in &kinds {
        match list(&client, kind, ns.as_deref(), now).await {
            Ok(r) => rows.extend(r),
            // `get all` goes on past a kind the cluster does not serve, as `flux get all`
            Err(e) if kinds.len() > 1 => eprintln!("✗ {kind}: {e}"),
            Err(e) => return Err(e).with_context(|| format!("list {kind}")),
        }
    }
    if let Some(name) = &name {
        rows.retain(|s| &s.name == name);
    }
    let what = if kinds.len() == 1 {
        kinds[0].as_str()
    } else {
        "pennant"
    };
    let in_ns = ns.as_deref().map_or("any".into(), |n| format!("{n:?}"));
    // a named object that is not there fails, as `flux get ks NAME` does
    if let Some(name) = name.as_ref().filter(|_| rows.is_empty() && !args.watch) {
        bail!("no {name:?} {what} objects found in {in_ns} namespace");
    }
    let colour = colour_stdout();
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Table if rows.is_empty() => {
            let name = name.as_ref().map_or(String::new(), |n| format!("{n:?} "));
            eprintln!("no {name}{what} objects found in {in_ns} namespace")
        }
        Output::Table => out.write_all(render_get(&rows, all_ns, sections, colour).as_bytes())?,
        o => out.write_all(to_text(&rows, o)?.as_bytes())?,
    }
    out.flush()?;
    drop(out);
    if !args.watch {
        return Ok(());
    }

    // One row per change: widths from what was printed (growing when a cell is wider), a row
    // printed only when a cell other than AGE changed.
    let mut widths: HashMap<Kind, Vec<usize>> = HashMap::new();
    let mut last: HashMap<(Kind, String, String), Vec<String>> = HashMap::new();
    for kind in &kinds {
        let of_kind: Vec<&Summary> = rows.iter().filter(|s| s.kind == *kind).collect();
        let t = Table::of(*kind, &of_kind, all_ns, sections);
        widths.insert(*kind, t.widths());
    }
    let key_cells = |s: &Summary| -> Vec<String> {
        let mut c = s.clone();
        c.age.clear();
        let t = Table::of(s.kind, &[&c], all_ns, sections);
        t.rows[0].iter().map(|c| c.text.clone()).collect()
    };
    for s in &rows {
        last.insert((s.kind, s.namespace.clone(), s.name.clone()), key_cells(s));
    }
    let mut stream =
        futures::stream::select_all(kinds.iter().map(|&k| watch(&client, k, ns.as_deref())));
    while let Some(s) = stream.next().await {
        let s = match s {
            Ok(s) if name.as_ref().is_none_or(|n| *n == s.name) => s,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("✗ watch: {e:#} (retrying)");
                continue;
            }
        };
        let key = (s.kind, s.namespace.clone(), s.name.clone());
        let cells = key_cells(&s);
        if last.get(&key) == Some(&cells) {
            continue;
        }
        last.insert(key, cells);
        let text = match args.output {
            Output::Table => {
                let t = Table::of(s.kind, &[&s], all_ns, sections);
                let w = widths
                    .entry(s.kind)
                    .or_insert_with(|| vec![0; columns(s.kind, all_ns).len()]);
                for (i, n) in t.widths().into_iter().enumerate() {
                    w[i] = w[i].max(n);
                }
                render_row(&t.rows[0], w, colour)
            }
            Output::Json => serde_json::to_string(&s)? + "\n",
            Output::Yaml => format!("---\n{}", serde_saphyr::to_string(&s)?),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_names_kinds_and_names_as_flux_get_does() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let q = |kinds: &[Kind], name: Option<&str>| Query {
            kinds: kinds.to_vec(),
            sections: kinds.len() > 1,
            name: name.map(String::from),
        };
        assert_eq!(query("all", &[]).unwrap(), q(&Kind::ALL, None));
        assert_eq!(query("sources", &[]).unwrap(), q(&Kind::SOURCES, None));
        assert_eq!(
            query("sources", &w(&["all", "apps"])).unwrap(),
            q(&Kind::SOURCES, Some("apps"))
        );
        assert_eq!(
            query("sources", &w(&["git"])).unwrap(),
            q(&[Kind::GitRepository], None)
        );
        assert_eq!(
            query("source", &w(&["git", "apps"])).unwrap(),
            q(&[Kind::GitRepository], Some("apps"))
        );
        assert_eq!(query("ks", &[]).unwrap(), q(&[Kind::Kustomization], None));
        assert_eq!(
            query("ks", &w(&["apps"])).unwrap(),
            q(&[Kind::Kustomization], Some("apps"))
        );
        assert_eq!(query("canaries", &[]).unwrap(), q(&[Kind::Canary], None));
        assert!(query("sources", &w(&["hr"])).is_err(), "not a source");
        assert!(query("pods", &[]).is_err());
        assert!(query("ks", &w(&["a", "b"])).is_err());
    }
}
