//! `pennant gate|rollback open|close|check <canary> -n <ns>`.

use anyhow::Context as _;

use crate::gate::{CanaryRef, Gate, GateState};

/// `pennant gate|rollback <open|close|check> <canary> [-n <namespace>]`. Talks to the
/// Kubernetes API with the kubeconfig from the environment (`KUBECONFIG`, `~/.kube/config` or
/// in-cluster), like kubectl.
#[derive(clap::Args, Debug, Clone)]
pub struct GateArgs {
    pub action: GateAction,
    /// Name of the Canary.
    pub canary: String,
    /// Namespace of the Canary (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    Open,
    Close,
    Check,
}

/// `pennant gate|rollback open|close|check <canary> -n <ns>`: the same annotations the gate
/// endpoints write, patched directly through the Kubernetes API. Prints the resulting state.
pub async fn command(gate: Gate, args: GateArgs) -> anyhow::Result<()> {
    super::install_rustls()?;
    let client = kube::Client::try_default()
        .await
        .context("kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let canary = CanaryRef {
        namespace: args
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_string()),
        name: args.canary,
    };
    let state = match args.action {
        GateAction::Open => crate::gate::write(&client, &canary, gate, GateState::Open).await,
        GateAction::Close => crate::gate::write(&client, &canary, gate, GateState::Closed).await,
        GateAction::Check => crate::gate::read(&client, &canary, gate).await,
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "{} of canary {}/{}: {e}",
            gate.describe(),
            canary.namespace,
            canary.name
        )
    })?;
    println!(
        "canary {}/{}: {}={}",
        canary.namespace,
        canary.name,
        gate.annotation(),
        state.as_str()
    );
    if args.action == GateAction::Open {
        let api: kube::Api<crate::api::Canary> = kube::Api::namespaced(client, &canary.namespace);
        if let Some(w) = api
            .get(&canary.name)
            .await
            .ok()
            .and_then(|c| crate::gate::unread_warning(&c, gate))
        {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}
