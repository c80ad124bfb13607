//! The GitOps Toolkit contract shared by the Flux-compatible controllers (sources now;
//! Kustomization, HelmRelease and notifications next): condition types, reasons and the Ready
//! summary ([`conditions`]), and on-demand reconcile requests ([`reconcile_request`]). PURE:
//! `now` is passed in. Refers to `api` only.

pub mod conditions;
pub mod depends_on;
pub mod reconcile_request;
