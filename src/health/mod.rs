//! Health of applied objects, below every controller (Kustomization now; HelmRelease's
//! `poller` wait and `dependsOn` next): kstatus rules ([`kstatus`]), Flux's CEL health
//! expressions and `readyExpr` ([`expr`]), and the verdict over a set of objects with a
//! deadline ([`assess`]). PURE: objects are the latest copies a watch delivered and `now` is
//! passed in, so a Kustomization waiting for health holds no worker (flux2#5622).

pub mod assess;
pub mod expr;
pub mod kstatus;
pub mod watch;

pub use kstatus::{Health, Status};
