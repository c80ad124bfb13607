//! Minimal third-party types pennant reads and writes (never shipped as CRDs).

pub mod gateway_api;
pub mod istio;
