//! `pennant events [--for KIND/NAME] [-n NS | -A] [-o table|json|yaml] [--watch]`: the
//! Kubernetes Events of pennant's objects (Canaries and Flux's kinds), oldest first, as `flux
//! events` lists them ([`crate::view::events`]); with `--watch`, then each new or repeated
//! Event as it arrives (`flux events --watch`, `kubectl get events -w`).

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};

use super::get::{Output, Scope, client, colour_stdout, to_text};
use crate::view::table::render_row;
use crate::view::{Kind, events};

/// `pennant events`.
#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    /// Only the Events of this object: `Kind/name` (`ks/apps`, `canary/podinfo`,
    /// `HelmRelease/web`).
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// After the list, print each new or repeated Event as it arrives.
    #[arg(short, long)]
    pub watch: bool,
}

/// `Kind/name` with the kind's short names expanded (`ks/apps` → `Kustomization`, `apps`).
/// PURE.
pub fn parse_for(s: &str) -> anyhow::Result<(Kind, String)> {
    let Some((kind, name)) = s.split_once('/').filter(|(_, n)| !n.is_empty()) else {
        bail!("--for {s:?}: expected KIND/NAME, e.g. ks/apps or canary/podinfo");
    };
    match Kind::parse(kind) {
        Some(k) => Ok((k, name.to_string())),
        None => bail!("--for {s:?}: {kind:?} is not a kind pennant reconciles"),
    }
}

/// `pennant events`: lists the namespace's (or every namespace's) Events and prints pennant's.
pub async fn command(args: EventsArgs) -> anyhow::Result<()> {
    let for_object = args.for_object.as_deref().map(parse_for).transpose()?;
    let client = client().await?;
    let ns = args.scope.resolve(&client);
    let api: Api<Event> = match &ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let (Some((kind, name)), Some(ns)) = (&for_object, &ns) {
        // a missing object fails, as `flux events --for`
        let (group, version) = kind.api_version().rsplit_once('/').unwrap_or_default();
        let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
            .get(name)
            .await
            .with_context(|| format!("{kind} {ns}/{name}"))?;
    }
    let list = api.list(&ListParams::default()).await?;
    let about = for_object.as_ref().map(|(k, n)| (k.as_str(), n.as_str()));
    let rows = events::rows(&list.items, about, Timestamp::now());
    let (all_ns, colour) = (ns.is_none(), colour_stdout());
    let table = events::table(&rows, all_ns);
    match args.output {
        Output::Table if rows.is_empty() && !args.watch => eprintln!("no events found"),
        Output::Table if rows.is_empty() => {}
        Output::Table => print!("{}", table.render(colour)),
        o => print!("{}", to_text(&rows, o)?),
    }
    if !args.watch {
        return Ok(());
    }

    // each Event once per version: a repeated Event (its count raised) prints again
    let mut seen: HashMap<String, String> = list
        .items
        .iter()
        .map(|e| {
            (
                e.uid().unwrap_or_default(),
                e.resource_version().unwrap_or_default(),
            )
        })
        .collect();
    let mut widths = table.widths();
    let mut header = !rows.is_empty();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(e) = stream.next().await {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                eprintln!("✗ watch: {err:#} (retrying)");
                continue;
            }
        };
        let version = e.resource_version().unwrap_or_default();
        if seen.insert(e.uid().unwrap_or_default(), version.clone()) == Some(version)
            || !events::is_about(&e, about)
        {
            continue;
        }
        let row = events::row(&e, Timestamp::now());
        let text = match args.output {
            Output::Table => {
                let t = events::table(std::slice::from_ref(&row), all_ns);
                for (w, n) in widths.iter_mut().zip(t.widths()) {
                    *w = (*w).max(n);
                }
                let mut text = String::new();
                if !header {
                    header = true;
                    let head = t.render(false);
                    text.push_str(head.lines().next().unwrap_or_default());
                    text.push('\n');
                }
                text + &render_row(&t.rows[0], &widths, colour)
            }
            Output::Json => serde_json::to_string(&row)? + "\n",
            Output::Yaml => format!("---\n{}", serde_saphyr::to_string(&row)?),
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
    fn for_takes_kind_slash_name_with_short_kinds() {
        assert_eq!(
            parse_for("ks/apps").unwrap(),
            (Kind::Kustomization, "apps".into())
        );
        assert_eq!(
            parse_for("Canary/podinfo").unwrap(),
            (Kind::Canary, "podinfo".into())
        );
        assert!(parse_for("apps").is_err());
        assert!(parse_for("ks/").is_err());
        assert!(parse_for("pod/web").is_err());
    }
}
