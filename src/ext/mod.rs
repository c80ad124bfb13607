//! Minimal third-party types pennant reads and writes (never shipped as CRDs).

pub mod istio;
