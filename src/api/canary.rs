//! `Canary` (`flagger.app/v1beta1`): the release definition, wire-compatible with Flagger's CRD.
//!
//! Field names, defaults and semantics follow Flagger 1.44 (`artifacts/flagger/crd.yaml` and
//! `pkg/apis/flagger/v1beta1`). Istio-shaped sub-objects that pennant copies into generated
//! routing objects without interpreting them are kept as raw JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::condition::Condition;
use super::duration::parse_duration;
use super::{preserve_unknown_array, preserve_unknown_object};

/// The controller's `--mesh-provider` default (also `PENNANT_MESH_PROVIDER`): Flagger's.
pub const DEFAULT_MESH_PROVIDER: &str = "istio";

/// Spec of a Canary. Same fields as Flagger's `CanarySpec`.
// kube-derive's `printcolumn(name = .., ..)` repeats keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    namespaced,
    status = "CanaryStatus",
    category = "all",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = "1"
    ),
    printcolumn(
        name = "FailedChecks",
        type_ = "string",
        json_path = ".status.failedChecks",
        priority = "1"
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = "1"
    ),
    printcolumn(
        name = "Mirror",
        type_ = "boolean",
        json_path = ".spec.analysis.mirror",
        priority = "1"
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "string",
        json_path = ".spec.analysis.stepWeight",
        priority = "1"
    ),
    printcolumn(
        name = "StepWeights",
        type_ = "string",
        json_path = ".spec.analysis.stepWeights",
        priority = "1"
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "string",
        json_path = ".spec.analysis.maxWeight",
        priority = "1"
    ),
    printcolumn(
        name = "LastTransitionTime",
        type_ = "string",
        json_path = ".status.lastTransitionTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Router for this canary (`istio`, `nginx`, `gatewayapi:v1`, `kubernetes`, ...); defaults to
    /// the controller's `--mesh-provider`. Unlike Flagger, an unknown value is an error, never a
    /// silent fallback to Istio (Flagger issue #1872).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Prometheus URL for the builtin metrics of this canary; defaults to `--metrics-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// Seconds the canary (or the primary during promotion) may stay unready before pennant
    /// gives up. Default 600. Measured from pennant's own clock (see `CanaryStatus::unready_since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// The workload under test: `Deployment`, `DaemonSet` or `Service`.
    pub target_ref: TargetReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<TypedLocalReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<TypedLocalReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<CrossNamespaceReference>,
    /// How the apex, `-primary` and `-canary` Services and the routing objects are generated.
    /// Optional in the schema, as in Flagger's (Flagger's Knative Canary has none); when absent
    /// it reads as the default (port 0), which the controller reports as an invalid `service.port`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub service: CanaryService,
    /// Promote without running hooks or metrics (the canary must still become ready).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_analysis: bool,
    /// On deletion, give traffic back to the target and restore it before removing the Canary.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revert_on_deletion: bool,
    /// Pause all reconciliation; an in-flight run keeps its weights.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// The analysis: interval, threshold, weights or iterations, metrics, webhooks, alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
    /// Deprecated alias of `analysis` (used only when `analysis` is absent), as in Flagger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<CanaryAnalysis>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `targetRef`: the workload to release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Deployment`, `DaemonSet` or `Service`.
    pub kind: String,
    pub name: String,
}

/// A reference by kind and name in the Canary's namespace (`ingressRef`, `routeRef`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

/// A reference that may name another namespace (`upstreamRef`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Optional: Flagger's `templateRef` and `providerRef` carry only `name` and `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `autoscalerRef`: an HPA (`autoscaling/v2`) or KEDA ScaledObject cloned for the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds that override the target scaler's on the primary clone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// `spec.service`: ports, names and the mesh settings copied into routing objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// Apex Service name; default `targetRef.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Service port (required).
    pub port: i32,
    /// Name of the main port; default `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Copied to `Service.spec.trafficDistribution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Container port number or name; default `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_discovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headless: Option<bool>,
    /// HTTP request timeout on the generated route, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// Istio VirtualService hosts / HTTPRoute hostnames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<bool>,
    /// Istio `HTTPMatchRequest` list for the generated route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserve_unknown_array")]
    pub r#match: Vec<Value>,
    /// Istio `HTTPRetry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub retries: Option<Value>,
    /// Istio `HTTPRewrite` (`uri`, `authority`, `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub rewrite: Option<Value>,
    /// Gateway API request-mirror filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserve_unknown_array")]
    pub mirror: Vec<Value>,
    /// Istio `Headers` (`request`/`response` with `set`/`add`/`remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub headers: Option<Value>,
    /// Istio VirtualService gateways; default `["mesh"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Gateway API parent references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_refs: Vec<GatewayRef>,
    /// Istio `CorsPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub cors_policy: Option<Value>,
    /// Istio `TrafficPolicy`, copied into both DestinationRules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub traffic_policy: Option<Value>,
    /// Labels and annotations for the apex Service and the routing objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// A Gateway API `ParentReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// Labels and annotations pennant sets on a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Label and annotation keys pennant never touches on generated objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

/// `spec.analysis`. Same fields and defaults as Flagger's `CanaryAnalysis`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between analysis steps, `^[0-9]+(m|s)`; default 60s, minimum 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Number of blue/green or A/B iterations (selects those strategies when > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Failed checks before rollback (cumulative over the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    /// Canary weight (percent) at which promotion starts; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    /// Linear weight increment per step (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Explicit weight ladder (percent), used when `stepWeight` is not set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_weights: Vec<i32>,
    /// Primary weight increment per step during promotion; 0 = all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i32>,
    /// Percent of the primary's updated replicas that must be available; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i32>,
    /// Percent of the canary's updated replicas that must be available; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i32>,
    /// A/B conditions (Istio `HTTPMatchRequest` shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserve_unknown_array")]
    pub r#match: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CanaryMetric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<CanaryWebhook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<CanaryAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
}

/// One metric check of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// `request-success-rate` and `request-duration` are the builtins.
    pub name: String,
    /// Range vector window, `^[0-9]+(m|s)`; default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Deprecated single threshold (see Flagger's legacy semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated inline PromQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
}

/// Accepted range of a metric value (inclusive).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One webhook of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    pub name: String,
    /// `confirm-rollout`, `pre-rollout`, `rollout` (or empty), `confirm-traffic-increase`,
    /// `confirm-promotion`, `post-rollout`, `rollback`, `event`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    /// Per-call timeout, `^[0-9]+(m|s)`; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    #[serde(
        default,
        rename = "disableTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One alert route of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    pub name: String,
    /// `info` (default, unlike Flagger which drops alerts with no severity), `warn`, `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub provider_ref: CrossNamespaceReference,
}

/// Cookie-based session affinity (Istio and Gateway API).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    pub cookie_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Seconds; default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// Phase of a Canary, as Flagger names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CanaryPhase {
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl CanaryPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initializing => "Initializing",
            Self::Initialized => "Initialized",
            Self::Waiting => "Waiting",
            Self::Progressing => "Progressing",
            Self::WaitingPromotion => "WaitingPromotion",
            Self::Promoting => "Promoting",
            Self::Finalising => "Finalising",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
        }
    }

    /// A run is in flight (traffic may be on the canary or being moved).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Self::Waiting
                | Self::Progressing
                | Self::WaitingPromotion
                | Self::Promoting
                | Self::Finalising
        )
    }
}

impl std::fmt::Display for CanaryPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flagger writes `""` for "no phase yet"; read that as `None`.
fn phase_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CanaryPhase>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(p) => serde_json::from_value(Value::String(p.to_string()))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Status of a Canary. Flagger's fields, plus pennant's clocks (`lastStepTime`, `unreadySince`),
/// which make the controller stateless: everything it needs to resume is here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(
        default,
        deserialize_with = "phase_or_empty",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub phase: Option<CanaryPhase>,
    /// Failed checks in the current run.
    #[serde(default)]
    pub failed_checks: i32,
    /// Canary traffic weight (percent) pennant last set.
    #[serde(default)]
    pub canary_weight: i32,
    /// Blue/green or A/B iteration counter.
    #[serde(default)]
    pub iterations: i32,
    /// `"configmap/<name>"` / `"secret/<name>"` → checksum of the data, for the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Revision hash of the target's pod template at the last status sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Revision hash running on the primary (set at Initialized and Succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// pennant: when the last analysis step ran; the next one is due `interval` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_time: Option<Time>,
    /// pennant: since when the workload this phase waits on (the canary while analysing, the
    /// primary while initialising or promoting) has been seen unready; the progress deadline
    /// counts from here, independent of the Deployment's own conditions (Flagger #1247).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unready_since: Option<Time>,
    /// pennant: the provider whose routing objects carry the current split, so that changing
    /// `spec.provider` (or the default) first sends the old router's traffic back to the
    /// primary (or gives a taken-over object its original spec back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_provider: Option<String>,
    /// pennant: the sequential judge's memory (annotation `judge.pennant.dev/mode: sequential`):
    /// per-step counts, frozen signals, last verdict and evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::api::JudgeStatus>,
    /// pennant: the target (kind and name) this status, the primary and the routes belong to,
    /// so that a `targetRef` changed mid-run first sends the old target's traffic back to its
    /// primary, then initialises the new target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetReference>,
}

/// Release strategy chosen by the analysis, as Flagger's `DeploymentStrategy()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted traffic shifting by `stepWeight`/`stepWeights` up to `maxWeight`.
    Canary,
    /// `iterations` with no `match`: all traffic stays on the primary, then switches at once.
    BlueGreen,
    /// `iterations` with `match`: matching requests go to the canary.
    ABTesting,
}

impl CanaryAnalysis {
    /// Step period. Flagger: default 60s, values under 10s raised to 10s, unparsable → 60s.
    pub fn interval(&self) -> Duration {
        let d = self
            .interval
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(Duration::from_secs(60));
        d.max(Duration::from_secs(10))
    }

    /// Failed checks that trigger a rollback; Flagger treats ≤ 0 as 1.
    pub fn threshold(&self) -> i32 {
        self.threshold.filter(|t| *t > 0).unwrap_or(1)
    }

    pub fn iterations(&self) -> i32 {
        self.iterations.unwrap_or(0).max(0)
    }

    pub fn strategy(&self) -> Strategy {
        match (self.iterations() > 0, self.r#match.is_empty()) {
            (true, false) => Strategy::ABTesting,
            (true, true) => Strategy::BlueGreen,
            _ => Strategy::Canary,
        }
    }

    /// Weight at which promotion starts: last `stepWeights` entry (capped at 100) when the
    /// ladder is used, else `maxWeight`, else 100.
    pub fn max_weight(&self) -> i32 {
        if self.step_weight.unwrap_or(0) <= 0
            && let Some(last) = self.step_weights.last()
        {
            return (*last).min(100);
        }
        match self.max_weight {
            Some(w) if w > 0 => w,
            _ => 100,
        }
    }

    /// Increment from canary weight `w` to the next step; Flagger's `nextStepWeight`.
    /// 0 means the analysis never advances by weight.
    pub fn next_step_weight(&self, w: i32) -> i32 {
        let step = self.step_weight.unwrap_or(0);
        if step > 0 || self.step_weights.is_empty() {
            return step;
        }
        let max_step = 100 - w;
        if max_step <= 0 {
            return 1;
        }
        if w == 0 {
            return max_step.min(self.step_weights[0]);
        }
        match self.step_weights.iter().position(|s| *s == w) {
            Some(i) if i + 1 < self.step_weights.len() => {
                max_step.min(self.step_weights[i + 1] - w)
            }
            _ => max_step,
        }
    }

    pub fn primary_ready_threshold(&self) -> i32 {
        self.primary_ready_threshold.unwrap_or(100)
    }

    pub fn canary_ready_threshold(&self) -> i32 {
        self.canary_ready_threshold.unwrap_or(100)
    }

    pub fn mirror(&self) -> bool {
        self.mirror.unwrap_or(false)
    }

    /// Webhooks of one type; an empty type means `rollout`.
    pub fn webhooks_of(&self, kind: &str) -> impl Iterator<Item = &CanaryWebhook> {
        self.webhooks.iter().filter(move |w| {
            w.type_
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("rollout")
                == kind
        })
    }
}

impl CanarySpec {
    /// `analysis`, or its deprecated alias `canaryAnalysis`.
    pub fn analysis(&self) -> Option<&CanaryAnalysis> {
        self.analysis.as_ref().or(self.canary_analysis.as_ref())
    }

    /// Promote without analysis: `skipAnalysis`, or no analysis at all (as Flagger).
    pub fn skip_analysis(&self) -> bool {
        self.skip_analysis || self.analysis().is_none()
    }

    /// Apex Service name: `service.name`, else the target's name.
    pub fn apex_name(&self) -> &str {
        self.service
            .name
            .as_deref()
            .unwrap_or(&self.target_ref.name)
    }

    /// Progress deadline; default 600 s.
    pub fn progress_deadline(&self) -> Duration {
        Duration::from_secs(
            self.progress_deadline_seconds
                .filter(|s| *s > 0)
                .unwrap_or(600) as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(step: Option<i32>, steps: &[i32], max: Option<i32>) -> CanaryAnalysis {
        CanaryAnalysis {
            step_weight: step,
            step_weights: steps.to_vec(),
            max_weight: max,
            ..Default::default()
        }
    }

    #[test]
    fn interval_defaults_and_floor_as_flagger() {
        let mut a = CanaryAnalysis::default();
        assert_eq!(a.interval(), Duration::from_secs(60));
        a.interval = Some("5s".into());
        assert_eq!(a.interval(), Duration::from_secs(10));
        a.interval = Some("2m".into());
        assert_eq!(a.interval(), Duration::from_secs(120));
        a.interval = Some("garbage".into());
        assert_eq!(a.interval(), Duration::from_secs(60));
    }

    #[test]
    fn step_weights_ladder_matches_flagger() {
        let a = analysis(None, &[1, 2, 10, 80], None);
        assert_eq!(a.max_weight(), 80);
        let mut w = 0;
        let mut seen = vec![];
        while w < a.max_weight() {
            w += a.next_step_weight(w);
            seen.push(w);
        }
        assert_eq!(seen, vec![1, 2, 10, 80]);
        // off-ladder weight jumps straight to 100
        assert_eq!(a.next_step_weight(5), 95);
    }

    #[test]
    fn linear_step_can_overshoot_max_weight() {
        let a = analysis(Some(20), &[], Some(50));
        assert_eq!(a.max_weight(), 50);
        assert_eq!(a.next_step_weight(40), 20); // 60 > 50, then promotion, as Flagger
    }

    #[test]
    fn strategy_from_iterations_and_match() {
        let mut a = CanaryAnalysis {
            iterations: Some(3),
            ..Default::default()
        };
        assert_eq!(a.strategy(), Strategy::BlueGreen);
        a.r#match = vec![serde_json::json!({"headers": {"x": {"exact": "1"}}})];
        assert_eq!(a.strategy(), Strategy::ABTesting);
        a.iterations = None;
        assert_eq!(a.strategy(), Strategy::Canary);
    }

    #[test]
    fn empty_phase_reads_as_none() {
        let s: CanaryStatus = serde_json::from_value(serde_json::json!({"phase": ""})).unwrap();
        assert_eq!(s.phase, None);
        let s: CanaryStatus =
            serde_json::from_value(serde_json::json!({"phase": "WaitingPromotion"})).unwrap();
        assert_eq!(s.phase, Some(CanaryPhase::WaitingPromotion));
    }

    #[test]
    fn empty_webhook_type_is_rollout() {
        let a = CanaryAnalysis {
            webhooks: vec![
                CanaryWebhook {
                    name: "a".into(),
                    url: "u".into(),
                    ..Default::default()
                },
                CanaryWebhook {
                    name: "b".into(),
                    type_: Some("pre-rollout".into()),
                    url: "u".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let names: Vec<_> = a.webhooks_of("rollout").map(|w| w.name.as_str()).collect();
        assert_eq!(names, vec!["a"]);
    }
}
