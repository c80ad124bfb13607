//! The notification controller (`--controllers notification`): Flux's notification-controller
//! kinds in `notification.toolkit.fluxcd.io`, for the events of every pennant controller
//! (GitRepository, OCIRepository, HelmRepository, HelmChart, Kustomization, HelmRelease and
//! Canary).
//!
//! - [`controller`]: Alerts and Providers (`v1beta3`). Events come from the process's event bus
//!   (`crate::gitops::events::publish`, fed by each controller's event recorder), not over HTTP:
//!   pennant's controllers share one process, so the hop Flux makes to notification-controller's
//!   `--events-addr` is a channel here. The event flow is Flux's (reference/flux.md §4.1):
//!   internal metadata stripped, equal events within 5 minutes sent once, every Alert of the
//!   watched namespaces matched ([`matching`], PURE), the metadata combined per Alert, then one
//!   delivery per matching Alert through `crate::notify`'s Flux notifiers (the transport the
//!   Canary alerts use), in the background with the Provider's timeout. A failed delivery, an
//!   invalid regex, a missing Provider or a Provider type or field pennant does not implement
//!   is a Warning Event on the Alert naming the Provider.
//! - [`receiver`]: incoming webhooks (`Receiver` v1) served by the process's HTTP server at
//!   `/hook/<digest>`, verified per sender type, each requesting a reconcile of the Receiver's
//!   resources.

pub mod controller;
pub mod matching;
pub mod receiver;

use std::sync::atomic::Ordering;

/// Run the Alert/Provider dispatcher and the Receiver controller until shutdown. The process
/// counts this as one controller; each half reports its caches synced, so the count is raised
/// by one first and `/readyz` waits for both.
pub async fn run(
    process: crate::runtime::Process,
    settings: controller::Settings,
) -> anyhow::Result<()> {
    process.unsynced.fetch_add(1, Ordering::SeqCst);
    tokio::try_join!(
        controller::run(process.clone(), settings),
        receiver::run(process)
    )?;
    Ok(())
}
