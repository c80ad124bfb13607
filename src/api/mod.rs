//! pennant's custom resource types: plain data plus pure helpers, no I/O.
//!
//! Wire-compatible with Flagger's `flagger.app/v1beta1` (Canary, MetricTemplate, AlertProvider):
//! same field names, same defaults. Where a field takes a third-party shape that pennant passes
//! through unchanged (Istio `HTTPMatchRequest`, `TrafficPolicy`, ...) it is kept as raw JSON and
//! its schema preserves unknown fields.

pub mod alert_provider;
pub mod canary;
pub mod condition;
pub mod crds;
pub mod duration;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod helm_release;
pub mod judge;
pub mod kustomization;
pub mod meta;
pub mod metric_template;
pub mod notification;
pub mod receiver;
pub mod revision;
pub mod source;

pub use alert_provider::*;
pub use canary::*;
pub use condition::*;
pub use duration::parse_duration;
pub use judge::*;
pub use metric_template::*;

/// Schema for a field kept as raw JSON: any object, unknown fields preserved.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Schema for a list of raw JSON objects, unknown fields preserved.
pub(crate) fn preserve_unknown_array(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}
