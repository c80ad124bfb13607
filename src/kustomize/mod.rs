//! Flux's Kustomization (`kustomize.toolkit.fluxcd.io/v1`): substitute postBuild variables
//! ([`substitute`]). The pure steps live here; the controller comes on top.

pub mod substitute;
