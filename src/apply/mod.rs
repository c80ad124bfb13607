//! Applying a set of objects the way Flux's `ssa` ResourceManager does, below every controller
//! (Kustomization now; HelmRelease drift detection and the Canary controller later): the apply
//! order in stages ([`order`]), the inventory and the prune set ([`inventory`]).

pub mod inventory;
pub mod order;
pub mod ssa;
