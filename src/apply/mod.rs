//! Applying a set of objects the way Flux's `ssa` ResourceManager does, below every controller
//! (Kustomization now; HelmRelease drift detection and the Canary controller later): the apply
//! order in stages ([`order`]), the inventory and the prune set ([`inventory`]), the fields the
//! Canary controller owns and appliers leave alone ([`ownership`]).

pub mod inventory;
pub mod order;
pub mod ownership;
pub mod ssa;
