//! The HelmRelease controller (`helm.toolkit.fluxcd.io/v2`, reference/flux.md §2).

pub mod chart;
pub mod controller;
pub mod decide;
pub mod engine;
pub mod postrender;
pub mod storage;
pub mod values;
