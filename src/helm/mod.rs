//! The HelmRelease controller (`helm.toolkit.fluxcd.io/v2`, flux.md §2).

pub mod decide;
