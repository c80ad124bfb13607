//! GitOps sources' shared, controller-free parts (Flux's source-controller storage): which files
//! of a tree go into an artifact ([`ignore`]), the deterministic `tar.gz` and a hostile-archive
//! safe extraction ([`artifact`]), the storage directory with atomic writes and garbage
//! collection ([`storage`]) and its HTTP routes ([`serve`]). The source controllers fetch trees
//! and turn these plain results into `status.artifact`.

pub mod artifact;
pub mod ignore;
pub mod serve;
pub mod storage;
