//! The Canary controller: observe → decide → build → apply → write status.
//!
//! - `validate`  PURE: spec problems (invalid / unsupported fields)
//! - `machine`   PURE: `decide(canary, observed) -> Step` (status, ordered actions, notices)
//! - `workload`  PURE: primary Deployment builder, readiness predicate, scale-up choice
//! - `services`  PURE: apex / `-primary` / `-canary` Services
//! - `build`     PURE: `build(canary, decision, observation) -> Desired`, every object a decision writes
//! - `tracker`   PURE: revision hash of the pod template, tracked ConfigMaps/Secrets
//! - `judged`    PURE: the sequential judge's step inside the machine (opt-in annotation)
//! - `concurrency`, `rollback_window` PURE: the limit on concurrent analyses and the rollback
//!   window (opt-in annotations)
//! - `index`     PURE: the maps from referenced objects (workloads, routes, configs, claims) to
//!   the Canaries, fed by the watches
//! - `context`   the shared state, settings and error of the I/O steps
//! - `observe`, `execute`, `controller`: the I/O around them

pub mod build;
pub mod concurrency;
pub mod context;
pub mod controller;
pub mod execute;
pub mod index;
pub mod judge_probe;
pub mod judged;
pub mod machine;
pub mod observe;
pub mod rollback_window;
pub mod services;
pub mod tracker;
pub mod validate;
pub mod workload;
