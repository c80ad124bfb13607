//! The GitOps Toolkit contract shared by the Flux-compatible controllers (sources now;
//! Kustomization, HelmRelease and notifications next): condition types, reasons and the Ready
//! summary ([`conditions`]), on-demand reconcile requests ([`reconcile_request`]) and the
//! Events Flux's recorder writes ([`events`]). PURE (`now` is passed in), but for
//! [`events::emit`], which posts the Event it builds. Refers to `api` only.

pub mod conditions;
pub mod depends_on;
pub mod events;
pub mod reconcile_request;
