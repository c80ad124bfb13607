//! Flux-compatible sources (same as Flux's source-controller): fetching and versions.

pub mod git;
pub mod semver;
