//! GitOps sources (same as Flux's source-controller). The shared, controller-free parts: which
//! files of a tree go into an artifact ([`ignore`]), the deterministic `tar.gz` and a
//! hostile-archive safe extraction ([`artifact`]), the storage directory with atomic writes and
//! garbage collection ([`storage`]) and its HTTP routes ([`serve`]); fetching ([`git`], OCI
//! registries in [`oci`], Helm repositories in [`helm_index`], the HTTP client they share in
//! [`http`]) and versions ([`semver`]); artifacts composed from other sources ([`generator`]). The source controller ([`controller`], decisions in
//! [`git_repository`]) fetches trees and turns these plain results into `status.artifact`.

pub mod artifact;
pub mod controller;
pub mod fetch;
pub mod generator;
pub mod git;
pub mod git_repository;
pub mod helm_chart;
pub mod helm_index;
pub mod helm_package;
pub mod helm_repository;
pub mod http;
pub mod ignore;
pub mod oci;
pub mod oci_repository;
pub mod semver;
pub mod serve;
pub mod storage;
