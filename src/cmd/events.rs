//! `pennant events [--for KIND/NAME] [-n NS | -A] [-o table|json|yaml]`: the Kubernetes Events
//! of pennant's objects (Canaries and Flux's kinds), oldest first, as `flux events` lists them
//! ([`crate::view::events`]).

use anyhow::bail;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;

use super::get::{Output, Scope, client, colour_stdout, to_text};
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
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let list = api.list(&ListParams::default()).await?;
    let rows = events::rows(
        &list.items,
        for_object.as_ref().map(|(k, n)| (k.as_str(), n.as_str())),
        Timestamp::now(),
    );
    match args.output {
        Output::Table if rows.is_empty() => eprintln!("no events found"),
        Output::Table => print!(
            "{}",
            events::table(&rows, ns.is_none()).render(colour_stdout())
        ),
        o => print!("{}", to_text(&rows, o)?),
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
