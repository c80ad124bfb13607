//! Flux's notification API (`notification.toolkit.fluxcd.io`): [`Provider`] and [`Alert`] in
//! `v1beta3`, and the Event every controller publishes ([`Event`], `event.toolkit.fluxcd.io`
//! v1beta1 JSON). Same field names, defaults and enums as Flux notification-controller v1.9.3's
//! CRDs (`config/crd/bases`, walked by `tests/compat_flux_notification.rs`), so Alerts and
//! Providers written for Flux work unchanged. Plain data plus pure helpers.
//!
//! As in Flux, Provider and Alert are static objects: no status, no reconcile; a problem shows
//! as a Warning Event on the Alert (or Provider).

pub mod alert;
pub mod event;
pub mod provider;

pub use alert::*;
pub use event::*;
pub use provider::*;

/// API group of Provider, Alert and Receiver.
pub const GROUP: &str = "notification.toolkit.fluxcd.io";
/// Categories of the CRDs, as Flux's (`kubectl get fluxcd-notifications`).
pub const CATEGORIES: [&str; 3] = ["all", "fluxcd", "fluxcd-notifications"];
