//! The HelmRelease controller's parts: the `helm` CLI behind a trait ([`engine`]), Helm's
//! release storage read natively ([`storage`]) and the post-renderer Helm runs as a plugin
//! ([`postrender`]).

pub mod engine;
pub mod postrender;
pub mod storage;
