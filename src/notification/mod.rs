//! The `notification` controller: Flux-compatible Alerts and Providers
//! (`notification.toolkit.fluxcd.io/v1beta3`) for the events of every pennant controller
//! (GitRepository, OCIRepository, HelmRepository, HelmChart, Kustomization, HelmRelease and
//! Canary).
//!
//! Events come from the process's event bus (`crate::gitops::events::publish`, fed by each
//! controller's event recorder), not over HTTP: pennant's controllers share one process, so the
//! hop Flux makes to notification-controller's `--events-addr` is a channel here. The event
//! flow is Flux's (reference/flux.md §4.1): internal metadata stripped, equal events within
//! 5 minutes sent once, every Alert of the watched namespaces matched ([`matching`], PURE), the
//! metadata combined per Alert, then one delivery per matching Alert through `crate::notify`'s
//! Flux notifiers (the transport the Canary alerts use), in the background with the Provider's
//! timeout. A failed delivery, an invalid regex, a missing Provider or a Provider type or
//! field pennant does not implement is a Warning Event on the Alert naming the Provider.

pub mod controller;
pub mod matching;
