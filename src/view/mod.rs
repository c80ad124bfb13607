//! What a person reads about pennant's objects: one summary row per object (ready, phase,
//! weight, revision, age, message), the tables, trees and event lists `pennant get`, `tree` and
//! `events` print, and later the dashboard's lists. PURE: every function takes the objects and
//! `now` and returns values or text; listing and watching live in `cmd`.
//!
//! Below the controllers in the layering (DESIGN.md, "Layout"): refers to `api` and `gitops`
//! only, so the HTTP server can serve the same summaries.

pub mod events;
pub mod summary;
pub mod table;
pub mod tree;

pub use summary::{Kind, Summary};

#[cfg(test)]
mod golden_tests;
