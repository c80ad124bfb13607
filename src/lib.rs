//! pennant: progressive delivery (Flagger-compatible canaries) for Kubernetes.
//!
//! Each controller is a pipeline: observe (I/O) → decide (pure) → build desired objects (pure)
//! → apply (I/O) → write status (I/O). See `DESIGN.md` for the map.

pub mod analysis;
pub mod api;
pub mod apply;
pub mod canary;
pub mod cmd;
pub mod ext;
pub mod gate;
pub mod gitops;
pub mod health;
pub mod helm;
pub mod http_post;
pub mod kube_client;
pub mod kustomize;
pub mod leader;
pub mod lint;
pub mod logging;
pub mod metrics;
pub mod notification;
pub mod notify;
pub mod rbac;
pub mod router;
pub mod runtime;
pub mod server;
pub mod source;
pub mod ui;
pub mod util;
pub mod view;
pub mod webhook;
