//! The GitOps Toolkit contract shared by the Flux-compatible controllers (sources,
//! Kustomization, HelmRelease, notifications): condition types, reasons and the Ready
//! summary ([`conditions`]), `dependsOn` checks with cycle detection ([`depends_on`]), on-demand
//! reconcile requests ([`reconcile_request`]), the Events Flux's recorder writes and posts
//! (Kubernetes Events, and Flux Events on the process's bus for notifications: [`events`]) and
//! the status and finalizer writes on a controller's own objects ([`object`]) and the cluster
//! and identity an object acts on (`spec.kubeConfig`, `spec.serviceAccountName`: [`target`]).
//! PURE (`now` is passed in), but for [`events::emit`], [`events::publish`], [`object`]'s writes and
//! [`target::Targets`]. Refers to `api` only.

pub mod canary_gate;
pub mod conditions;
pub mod depends_on;
pub mod events;
pub mod object;
pub mod reconcile_request;
pub mod target;
