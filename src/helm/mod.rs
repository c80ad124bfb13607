//! The HelmRelease controller (`helm.toolkit.fluxcd.io/v2`, reference/flux.md §2).

pub mod drift;
