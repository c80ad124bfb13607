//! kstatus: the health of one live object, as `sigs.k8s.io/cli-utils` `pkg/kstatus/status`
//! (`Compute`) computes it, which is what Flux's health checks and `flux` CLI waits use. PURE:
//! the object is JSON as the API server returns it; `now` is passed in (only a Pending,
//! unschedulable Pod reads it).
//!
//! Order, as kstatus:
//! 1. `metadata.deletionTimestamp` set → `Terminating`;
//! 2. `status.observedGeneration` present and ≠ `metadata.generation` → `InProgress`;
//! 3. a `Reconciling=True` condition → `InProgress`; a `Stalled=True` condition → `Failed`;
//! 4. the rules of the built-in kinds (Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod, PVC,
//!    Service, Job, CRD, PodDisruptionBudget; Secret, ConfigMap and CronJob are always Current);
//! 5. a `Ready` condition: `True` → `Current`, `False`/`Unknown` → `InProgress`;
//! 6. otherwise `Current` ("Resource is current").
//!
//! [`flux`] is what Flux's health checks use: the same, with Flux's own Job reader.
//!
//! Beyond kstatus (kustomize-controller#387, "an unknown custom resource is Current"): a
//! Flagger/pennant `Canary` (`flagger.app`) is judged by the `Promoted` condition pennant
//! writes: `True` → Current, `False` → Failed, `Unknown` or missing → InProgress.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// A kstatus status. `NotFound` is for an object that is not in the cluster (the aggregate
/// decides it, not [`compute`]); `Unknown` is for an object whose status could not be read
/// (a malformed field, an unknown Pod phase, a CEL evaluation error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    InProgress,
    Failed,
    Current,
    Terminating,
    NotFound,
    Unknown,
}

impl Status {
    /// The name kstatus and Flux's messages use (`InProgress`, `Current`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "InProgress",
            Status::Failed => "Failed",
            Status::Current => "Current",
            Status::Terminating => "Terminating",
            Status::NotFound => "NotFound",
            Status::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health of one object: a status and kstatus' human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    pub message: String,
}

impl Health {
    pub fn new(status: Status, message: impl Into<String>) -> Health {
        Health {
            status,
            message: message.into(),
        }
    }
    fn current(message: impl Into<String>) -> Health {
        Health::new(Status::Current, message)
    }
    fn in_progress(message: impl Into<String>) -> Health {
        Health::new(Status::InProgress, message)
    }
    fn failed(message: impl Into<String>) -> Health {
        Health::new(Status::Failed, message)
    }
}

/// How long a Pod may be unschedulable before kstatus calls it Failed (`ScheduleWindow`).
pub const SCHEDULE_WINDOW: SignedDuration = SignedDuration::from_secs(15);

/// The health Flux's health checks compute: kstatus, except that a Job is read by Flux's own
/// reader (`fluxcd/pkg` `runtime/statusreaders` `jobConditions`, used by kustomize-controller
/// and helm-controller) which waits for the Job to finish: `spec.suspend` → Current,
/// `Complete=True` → Current, `Failed=True` → Failed, not started ("Job not started. active:
/// 0/<parallelism>") or running → InProgress.
pub fn flux(obj: &Value, now: Timestamp) -> Health {
    match group_kind(obj) {
        ("batch", "Job") => flux_job(obj),
        _ => compute(obj, now),
    }
}

fn flux_job(obj: &Value) -> Health {
    if obj["spec"]["suspend"].as_bool() == Some(true) {
        return Health::current("Job is suspended");
    }
    let parallelism = int(obj, &["spec", "parallelism"], 1);
    let completions = int(obj, &["spec", "completions"], parallelism);
    let succeeded = int(obj, &["status", "succeeded"], 0);
    let active = int(obj, &["status", "active"], 0);
    let failed = int(obj, &["status", "failed"], 0);
    for c in conditions(obj) {
        match (c.type_, c.status) {
            ("Complete", "True") => {
                return Health::current(format!(
                    "Job Completed. succeeded: {succeeded}/{completions}"
                ));
            }
            ("Failed", "True") => {
                return Health::failed(format!("Job Failed. failed: {failed}/{completions}"));
            }
            _ => {}
        }
    }
    if string(obj, &["status", "startTime"], "").is_empty() {
        return Health::in_progress(format!("Job not started. active: 0/{parallelism}"));
    }
    Health::in_progress(format!(
        "Job in progress. success:{succeeded}, active: {active}, failed: {failed}"
    ))
}

/// The kstatus health of `obj` (see the module docs for the order of the rules).
pub fn compute(obj: &Value, now: Timestamp) -> Health {
    if let Some(h) = generic_properties(obj) {
        return h;
    }
    let (group, kind) = group_kind(obj);
    let rule: Option<fn(&Value, Timestamp) -> Health> = match (group, kind) {
        ("", "Service") => Some(service),
        ("", "Pod") => Some(pod),
        ("", "Secret") | ("", "ConfigMap") | ("batch", "CronJob") => Some(always_ready),
        ("", "PersistentVolumeClaim") => Some(pvc),
        ("apps", "StatefulSet") => Some(stateful_set),
        ("apps" | "extensions", "DaemonSet") => Some(daemon_set),
        ("apps" | "extensions", "Deployment") => Some(deployment),
        ("apps" | "extensions", "ReplicaSet") => Some(replica_set),
        ("policy", "PodDisruptionBudget") => Some(pdb),
        ("batch", "Job") => Some(job),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(crd),
        ("flagger.app", "Canary") => Some(canary),
        _ => None,
    };
    if let Some(rule) = rule {
        return rule(obj, now);
    }
    if let Some(ready) = conditions(obj).find(|c| c.type_ == "Ready") {
        match ready.status {
            "True" => return Health::current("Resource is Ready"),
            "False" | "Unknown" => return Health::in_progress(ready.message),
            _ => {}
        }
    }
    Health::current("Resource is current")
}

/// `(group, kind)` of an object from its `apiVersion` and `kind`.
pub fn group_kind(obj: &Value) -> (&str, &str) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (group, obj["kind"].as_str().unwrap_or_default())
}

/// A condition as kstatus reads it (missing fields are empty).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cond<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

pub(crate) fn conditions(obj: &Value) -> impl Iterator<Item = Cond<'_>> {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Cond {
            type_: c["type"].as_str().unwrap_or_default(),
            status: c["status"].as_str().unwrap_or_default(),
            reason: c["reason"].as_str().unwrap_or_default(),
            message: c["message"].as_str().unwrap_or_default(),
        })
}

/// kstatus' `GetIntField`: the integer at `path`, else `default` (missing or not an integer).
fn int(obj: &Value, path: &[&str], default: i64) -> i64 {
    path.iter()
        .fold(obj, |v, k| &v[*k])
        .as_i64()
        .unwrap_or(default)
}

fn string<'a>(obj: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    path.iter()
        .fold(obj, |v, k| &v[*k])
        .as_str()
        .unwrap_or(default)
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

/// kstatus' `checkGenericProperties`: deletion, generation, Reconciling and Stalled.
fn generic_properties(obj: &Value) -> Option<Health> {
    if obj["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
    {
        return Some(Health::new(
            Status::Terminating,
            "Resource scheduled for deletion",
        ));
    }
    if let (Some(generation), Some(observed)) = (
        obj["metadata"]["generation"].as_i64(),
        obj["status"]["observedGeneration"].as_i64(),
    ) && generation != observed
    {
        return Some(Health::in_progress(format!(
            "{} generation is {generation}, but latest observed generation is {observed}",
            kind(obj)
        )));
    }
    for c in conditions(obj) {
        if c.type_ == "Reconciling" && c.status == "True" {
            return Some(Health::in_progress(c.message));
        }
        if c.type_ == "Stalled" && c.status == "True" {
            return Some(Health::failed(c.message));
        }
    }
    None
}

fn always_ready(_: &Value, _: Timestamp) -> Health {
    Health::current("Resource is always ready")
}

fn stateful_set(obj: &Value, _: Timestamp) -> Health {
    if string(obj, &["spec", "updateStrategy", "type"], "") == "OnDelete" {
        return Health::current("StatefulSet is using the ondelete update strategy");
    }
    let spec = int(obj, &["spec", "replicas"], 1);
    let ready = int(obj, &["status", "readyReplicas"], 0);
    let current = int(obj, &["status", "currentReplicas"], 0);
    let updated = int(obj, &["status", "updatedReplicas"], 0);
    let replicas = int(obj, &["status", "replicas"], 0);
    let partition = int(
        obj,
        &["spec", "updateStrategy", "rollingUpdate", "partition"],
        -1,
    );
    if spec > replicas {
        return Health::in_progress(format!("Replicas: {replicas}/{spec}"));
    }
    if spec > ready {
        return Health::in_progress(format!("Ready: {ready}/{spec}"));
    }
    if replicas > spec {
        return Health::in_progress(format!("Pending termination: {}", replicas - spec));
    }
    if partition != -1 {
        if updated < spec - partition {
            return Health::in_progress(format!("updated: {updated}/{}", spec - partition));
        }
        return Health::current(format!("Partition rollout complete. updated: {updated}"));
    }
    if spec > current {
        return Health::in_progress(format!("current: {current}/{spec}"));
    }
    if string(obj, &["status", "currentRevision"], "")
        != string(obj, &["status", "updateRevision"], "")
    {
        return Health::in_progress("Waiting for updated revision to match current");
    }
    Health::current(format!(
        "All replicas scheduled as expected. Replicas: {replicas}"
    ))
}

fn deployment(obj: &Value, _: Timestamp) -> Health {
    // Without a progress deadline the Progressing condition says nothing: count it as progressing.
    let mut progressing = obj["spec"]["progressDeadlineSeconds"].as_i64().is_none();
    let mut available = false;
    for c in conditions(obj) {
        match c.type_ {
            "Progressing" => {
                if c.reason == "ProgressDeadlineExceeded" {
                    return Health::failed("Progress deadline exceeded");
                }
                if c.status == "True" && c.reason == "NewReplicaSetAvailable" {
                    progressing = true;
                }
            }
            "Available" if c.status == "True" => available = true,
            _ => {}
        }
    }
    let spec = int(obj, &["spec", "replicas"], 1);
    let replicas = int(obj, &["status", "replicas"], 0);
    let updated = int(obj, &["status", "updatedReplicas"], 0);
    let ready = int(obj, &["status", "readyReplicas"], 0);
    let avail = int(obj, &["status", "availableReplicas"], 0);
    if spec > replicas {
        return Health::in_progress(format!("Replicas: {replicas}/{spec}"));
    }
    if spec > updated {
        return Health::in_progress(format!("Updated: {updated}/{spec}"));
    }
    if replicas > spec {
        return Health::in_progress(format!("Pending termination: {}", replicas - spec));
    }
    if updated > avail {
        return Health::in_progress(format!("Available: {avail}/{updated}"));
    }
    if spec > ready {
        return Health::in_progress(format!("Ready: {ready}/{spec}"));
    }
    if !progressing {
        return Health::in_progress("ReplicaSet not Available");
    }
    if !available {
        return Health::in_progress("Deployment not Available");
    }
    Health::current(format!("Deployment is available. Replicas: {replicas}"))
}

fn replica_set(obj: &Value, _: Timestamp) -> Health {
    if conditions(obj).any(|c| c.type_ == "ReplicaFailure" && c.status == "True") {
        return Health::in_progress("Replica Failure condition. Check Pods");
    }
    let spec = int(obj, &["spec", "replicas"], 1);
    let replicas = int(obj, &["status", "replicas"], 0);
    let ready = int(obj, &["status", "readyReplicas"], 0);
    let avail = int(obj, &["status", "availableReplicas"], 0);
    let labelled = int(obj, &["status", "fullyLabeledReplicas"], 0);
    if spec > labelled {
        return Health::in_progress(format!("Labelled: {labelled}/{spec}"));
    }
    if spec > avail {
        return Health::in_progress(format!("Available: {avail}/{spec}"));
    }
    if spec > ready {
        return Health::in_progress(format!("Ready: {ready}/{spec}"));
    }
    if replicas > spec {
        return Health::in_progress(format!("Pending termination: {}", replicas - spec));
    }
    Health::current(format!("ReplicaSet is available. Replicas: {replicas}"))
}

fn daemon_set(obj: &Value, _: Timestamp) -> Health {
    // kstatus' checkGenerationSet: a DaemonSet must carry both generations.
    if obj["metadata"]["generation"].as_i64().is_none() {
        return Health::in_progress("DaemonSet metadata.generation not found");
    }
    if obj["status"]["observedGeneration"].as_i64().is_none() {
        return Health::in_progress("DaemonSet status.observedGeneration not found");
    }
    let desired = int(obj, &["status", "desiredNumberScheduled"], -1);
    let current = int(obj, &["status", "currentNumberScheduled"], 0);
    let updated = int(obj, &["status", "updatedNumberScheduled"], 0);
    let avail = int(obj, &["status", "numberAvailable"], 0);
    let ready = int(obj, &["status", "numberReady"], 0);
    if desired == -1 {
        return Health::in_progress("Missing .status.desiredNumberScheduled");
    }
    if desired > current {
        return Health::in_progress(format!("Current: {current}/{desired}"));
    }
    if desired > updated {
        return Health::in_progress(format!("Updated: {updated}/{desired}"));
    }
    if desired > avail {
        return Health::in_progress(format!("Available: {avail}/{desired}"));
    }
    if desired > ready {
        return Health::in_progress(format!("Ready: {ready}/{desired}"));
    }
    Health::current(format!(
        "All replicas scheduled as expected. Replicas: {desired}"
    ))
}

fn pvc(obj: &Value, _: Timestamp) -> Health {
    let phase = string(obj, &["status", "phase"], "unknown");
    if phase != "Bound" {
        return Health::in_progress(format!("PVC is not Bound. phase: {phase}"));
    }
    Health::current("PVC is Bound")
}

fn pod(obj: &Value, now: Timestamp) -> Health {
    match string(obj, &["status", "phase"], "") {
        "Succeeded" => Health::current("Pod has completed successfully"),
        // kstatus: a finished Pod is Current even when it failed (it will not change any more).
        "Failed" => Health::current("Pod has completed, but not successfully"),
        "Running" => {
            if conditions(obj).any(|c| c.type_ == "Ready" && c.status == "True") {
                return Health::current("Pod is Ready");
            }
            let crash_looping: Vec<&str> = obj["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|cs| cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .filter_map(|cs| cs["name"].as_str())
                .collect();
            if !crash_looping.is_empty() {
                return Health::failed(format!(
                    "Containers in CrashLoop state: {}",
                    crash_looping.join(",")
                ));
            }
            Health::in_progress("Pod is running but is not Ready")
        }
        "Pending" => {
            let unschedulable = conditions(obj).any(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason == "Unschedulable"
            });
            if unschedulable {
                let created = obj["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok());
                // kstatus: still within the window after creation → not yet a failure.
                if created.is_some_and(|c| now - SCHEDULE_WINDOW < c) {
                    return Health::in_progress("Pod has not been scheduled");
                }
                return Health::failed("Pod could not be scheduled");
            }
            Health::in_progress("Pod is in the Pending phase")
        }
        "" => Health::in_progress("Pod phase not available"),
        other => Health::new(Status::Unknown, format!("unknown phase {other}")),
    }
}

fn pdb(_: &Value, _: Timestamp) -> Health {
    Health::current("AllowedDisruptions has been computed.")
}

fn job(obj: &Value, _: Timestamp) -> Health {
    let parallelism = int(obj, &["spec", "parallelism"], 1);
    let completions = int(obj, &["spec", "completions"], parallelism);
    let succeeded = int(obj, &["status", "succeeded"], 0);
    let active = int(obj, &["status", "active"], 0);
    let failed = int(obj, &["status", "failed"], 0);
    let suspended = obj["spec"]["suspend"].as_bool().unwrap_or(false);
    for c in conditions(obj) {
        match (c.type_, c.status) {
            ("Complete", "True") => {
                return Health::current(format!(
                    "Job Completed. succeeded: {succeeded}/{completions}"
                ));
            }
            ("Failed", "True") => {
                return Health::failed(format!("Job Failed. failed: {failed}/{completions}"));
            }
            ("Suspended", "True") if suspended => return Health::current("Job is suspended"),
            _ => {}
        }
    }
    if string(obj, &["status", "startTime"], "").is_empty() {
        return Health::in_progress("Job not started");
    }
    Health::current(format!(
        "Job in progress. success:{succeeded}, active: {active}, failed: {failed}"
    ))
}

fn service(obj: &Value, _: Timestamp) -> Health {
    if string(obj, &["spec", "type"], "ClusterIP") == "LoadBalancer"
        && string(obj, &["spec", "clusterIP"], "").is_empty()
    {
        return Health::in_progress("ClusterIP not set. Service type: LoadBalancer");
    }
    Health::current("Service is ready")
}

fn crd(obj: &Value, _: Timestamp) -> Health {
    for c in conditions(obj) {
        if c.type_ == "NamesAccepted" && c.status == "False" {
            return Health::failed(c.message);
        }
        if c.type_ == "Established" {
            if c.status == "False" && c.reason != "Installing" {
                return Health::failed(c.message);
            }
            if c.status == "True" {
                return Health::current("CRD is established");
            }
        }
    }
    Health::in_progress("Install in progress")
}

/// pennant: a Canary's `Promoted` condition (Flagger's: True when Initialized or Succeeded,
/// False when Failed, Unknown while an analysis runs).
fn canary(obj: &Value, _: Timestamp) -> Health {
    match conditions(obj).find(|c| c.type_ == "Promoted") {
        Some(c) if c.status == "True" => Health::current(c.message),
        Some(c) if c.status == "False" => Health::failed(c.message),
        Some(c) => Health::in_progress(c.message),
        None => Health::in_progress("Canary not initialized"),
    }
}

#[cfg(test)]
#[path = "kstatus_tests.rs"]
pub(crate) mod tests;
