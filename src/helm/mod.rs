//! The HelmRelease controller (`helm.toolkit.fluxcd.io/v2`, flux.md §2) and its parts: the
//! controller ([`controller`]) and its pure helpers ([`chart`]), the pure action table
//! ([`decide`]), the `helm` CLI behind a trait ([`engine`]), Helm's release storage read
//! natively ([`storage`]), the post-renderer Helm runs as a plugin ([`postrender`]), values
//! composition ([`values`]), drift detection ([`drift`]) and the next release rendered without
//! applying it ([`render`], for `pennant diff hr`).

pub mod chart;
pub mod controller;
pub mod decide;
pub mod drift;
pub mod engine;
pub mod postrender;
pub mod render;
pub mod storage;
pub mod values;
