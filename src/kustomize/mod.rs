//! Flux's Kustomization (`kustomize.toolkit.fluxcd.io/v1`): build an artifact directory with
//! the real `kustomize` CLI ([`build`]), substitute postBuild variables ([`substitute`]), then
//! apply through [`crate::apply`]. The pure steps live here; the controller comes on top.

pub mod build;
pub mod controller;
pub mod decrypt;
pub mod health_wait;
pub mod render;
pub mod substitute;
pub mod target;
pub mod wake;
