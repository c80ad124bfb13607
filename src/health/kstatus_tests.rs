//! Facts from kstatus' own tables (`status_compute_test.go`, `core_test.go`), one row per case:
//! the object's YAML, the status and kstatus' message.

use super::*;

pub(crate) fn obj(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).expect("test YAML")
}

fn now() -> Timestamp {
    "2026-12-05T12:00:00Z".parse().unwrap()
}

#[track_caller]
fn check(cases: &[(&str, &str, Status, &str)]) {
    for (name, yaml, status, message) in cases {
        let h = compute(&obj(yaml), now());
        assert_eq!(
            (h.status, h.message.as_str()),
            (*status, *message),
            "case {name}"
        );
    }
}

#[test]
fn generic_properties_come_before_the_kind_rules() {
    check(&[
        (
            "terminating",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, deletionTimestamp: '2026-12-05T11:00:00Z'}",
            Status::Terminating,
            "Resource scheduled for deletion",
        ),
        (
            "generation not observed",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, generation: 2}\nstatus: {observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1}",
            Status::InProgress,
            "Deployment generation is 2, but latest observed generation is 1",
        ),
        (
            "reconciling condition",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\nstatus: {conditions: [{type: Reconciling, status: 'True', reason: Working, message: still working}]}",
            Status::InProgress,
            "still working",
        ),
        (
            "stalled condition",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\nstatus: {conditions: [{type: Stalled, status: 'True', reason: Broken, message: it broke}]}",
            Status::Failed,
            "it broke",
        ),
        (
            "stalled false is not a failure",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\nstatus: {conditions: [{type: Stalled, status: 'False'}]}",
            Status::Current,
            "Resource is current",
        ),
    ]);
}

const DEP_OK: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: test, generation: 1}\nspec: {progressDeadlineSeconds: 45, replicas: 1}\nstatus:\n  observedGeneration: 1\n  updatedReplicas: 1\n  readyReplicas: 1\n  availableReplicas: 1\n  replicas: 1\n  conditions:\n  - {type: Progressing, status: 'True', reason: NewReplicaSetAvailable}\n  - {type: Available, status: 'True'}\n";

#[test]
fn deployment_table() {
    check(&[
        (
            "no status",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: test, generation: 1}",
            Status::InProgress,
            "Replicas: 0/1",
        ),
        (
            "ok",
            DEP_OK,
            Status::Current,
            "Deployment is available. Replicas: 1",
        ),
        (
            "not progressing",
            &DEP_OK.replace(
                "reason: NewReplicaSetAvailable",
                "reason: ReplicaSetUpdated",
            ),
            Status::InProgress,
            "ReplicaSet not Available",
        ),
        (
            "no progress deadline: Progressing says nothing",
            &DEP_OK.replace("progressDeadlineSeconds: 45, ", "").replace(
                "reason: NewReplicaSetAvailable",
                "reason: ReplicaSetUpdated",
            ),
            Status::Current,
            "Deployment is available. Replicas: 1",
        ),
        (
            "not available",
            &DEP_OK.replace(
                "{type: Available, status: 'True'}",
                "{type: Available, status: 'False'}",
            ),
            Status::InProgress,
            "Deployment not Available",
        ),
        (
            "progress deadline exceeded",
            &DEP_OK.replace(
                "status: 'True', reason: NewReplicaSetAvailable",
                "status: 'False', reason: ProgressDeadlineExceeded",
            ),
            Status::Failed,
            "Progress deadline exceeded",
        ),
        (
            "too few updated",
            &DEP_OK.replace("updatedReplicas: 1", "updatedReplicas: 0"),
            Status::InProgress,
            "Updated: 0/1",
        ),
        (
            "extra pods",
            &DEP_OK.replace("  replicas: 1\n", "  replicas: 2\n"),
            Status::InProgress,
            "Pending termination: 1",
        ),
        (
            "too few available",
            &DEP_OK.replace("availableReplicas: 1", "availableReplicas: 0"),
            Status::InProgress,
            "Available: 0/1",
        ),
        (
            "too few ready",
            &DEP_OK.replace("readyReplicas: 1", "readyReplicas: 0"),
            Status::InProgress,
            "Ready: 0/1",
        ),
    ]);
}

const STS_OK: &str = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: test, generation: 1}\nspec: {replicas: 4}\nstatus: {observedGeneration: 1, currentReplicas: 4, readyReplicas: 4, replicas: 4, updatedReplicas: 4, currentRevision: r1, updateRevision: r1}";

#[test]
fn stateful_set_table() {
    check(&[
        (
            "no status",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: test, generation: 1}",
            Status::InProgress,
            "Replicas: 0/1",
        ),
        (
            "ok",
            STS_OK,
            Status::Current,
            "All replicas scheduled as expected. Replicas: 4",
        ),
        (
            "on delete",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: test, generation: 1}\nspec: {updateStrategy: {type: OnDelete}}",
            Status::Current,
            "StatefulSet is using the ondelete update strategy",
        ),
        (
            "less ready",
            &STS_OK.replace("readyReplicas: 4", "readyReplicas: 2"),
            Status::InProgress,
            "Ready: 2/4",
        ),
        (
            "less current",
            &STS_OK.replace("currentReplicas: 4", "currentReplicas: 3"),
            Status::InProgress,
            "current: 3/4",
        ),
        (
            "revision mismatch",
            &STS_OK.replace("updateRevision: r1", "updateRevision: r2"),
            Status::InProgress,
            "Waiting for updated revision to match current",
        ),
        (
            "partition in progress",
            &STS_OK
                .replace(
                    "spec: {replicas: 4}",
                    "spec: {replicas: 4, updateStrategy: {rollingUpdate: {partition: 2}}}",
                )
                .replace("updatedReplicas: 4", "updatedReplicas: 1"),
            Status::InProgress,
            "updated: 1/2",
        ),
        (
            "partition complete",
            &STS_OK
                .replace(
                    "spec: {replicas: 4}",
                    "spec: {replicas: 4, updateStrategy: {rollingUpdate: {partition: 2}}}",
                )
                .replace("updatedReplicas: 4", "updatedReplicas: 2"),
            Status::Current,
            "Partition rollout complete. updated: 2",
        ),
    ]);
}

const DS_OK: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: test, generation: 1}\nstatus: {observedGeneration: 1, desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberAvailable: 4, numberReady: 4}";

#[test]
fn daemon_set_table() {
    check(&[
        (
            "no status",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: test, generation: 1}",
            Status::InProgress,
            "DaemonSet status.observedGeneration not found",
        ),
        (
            "no generation",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: test}",
            Status::InProgress,
            "DaemonSet metadata.generation not found",
        ),
        (
            "no desired number",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: test, generation: 1}\nstatus: {observedGeneration: 1}",
            Status::InProgress,
            "Missing .status.desiredNumberScheduled",
        ),
        (
            "ok",
            DS_OK,
            Status::Current,
            "All replicas scheduled as expected. Replicas: 4",
        ),
        (
            "less current",
            &DS_OK.replace("currentNumberScheduled: 4", "currentNumberScheduled: 2"),
            Status::InProgress,
            "Current: 2/4",
        ),
        (
            "less updated",
            &DS_OK.replace("updatedNumberScheduled: 4", "updatedNumberScheduled: 2"),
            Status::InProgress,
            "Updated: 2/4",
        ),
        (
            "less available",
            &DS_OK.replace("numberAvailable: 4", "numberAvailable: 2"),
            Status::InProgress,
            "Available: 2/4",
        ),
        (
            "less ready",
            &DS_OK.replace("numberReady: 4", "numberReady: 2"),
            Status::InProgress,
            "Ready: 2/4",
        ),
    ]);
}

const RS_OK: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: test, generation: 1}\nspec: {replicas: 2}\nstatus: {observedGeneration: 1, replicas: 2, readyReplicas: 2, availableReplicas: 2, fullyLabeledReplicas: 2}";

#[test]
fn replica_set_table() {
    check(&[
        (
            "no status",
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: test, generation: 1}",
            Status::InProgress,
            "Labelled: 0/1",
        ),
        (
            "ok",
            RS_OK,
            Status::Current,
            "ReplicaSet is available. Replicas: 2",
        ),
        (
            "less available",
            &RS_OK.replace("availableReplicas: 2", "availableReplicas: 1"),
            Status::InProgress,
            "Available: 1/2",
        ),
        (
            "less ready",
            &RS_OK.replace("readyReplicas: 2", "readyReplicas: 1"),
            Status::InProgress,
            "Ready: 1/2",
        ),
        (
            "replica failure",
            &RS_OK.replace(
                "fullyLabeledReplicas: 2}",
                "fullyLabeledReplicas: 2, conditions: [{type: ReplicaFailure, status: 'True'}]}",
            ),
            Status::InProgress,
            "Replica Failure condition. Check Pods",
        ),
    ]);
}

#[test]
fn pod_table() {
    let pod = |status: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: test, creationTimestamp: '2026-12-05T11:59:50Z'}}\nstatus: {status}"
        )
    };
    check(&[
        (
            "no status",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: test}",
            Status::InProgress,
            "Pod phase not available",
        ),
        (
            "running ready",
            &pod("{phase: Running, conditions: [{type: Ready, status: 'True'}]}"),
            Status::Current,
            "Pod is Ready",
        ),
        (
            "succeeded",
            &pod("{phase: Succeeded}"),
            Status::Current,
            "Pod has completed successfully",
        ),
        (
            "failed phase is Current (the Pod is done)",
            &pod("{phase: Failed}"),
            Status::Current,
            "Pod has completed, but not successfully",
        ),
        (
            "running not ready",
            &pod("{phase: Running, conditions: [{type: Ready, status: 'False'}]}"),
            Status::InProgress,
            "Pod is running but is not Ready",
        ),
        (
            "crash looping",
            &pod("{phase: Running, containerStatuses: [{name: app, state: {waiting: {reason: CrashLoopBackOff}}}, {name: side, state: {running: {}}}]}"),
            Status::Failed,
            "Containers in CrashLoop state: app",
        ),
        (
            "unschedulable inside the window",
            &pod("{phase: Pending, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]}"),
            Status::InProgress,
            "Pod has not been scheduled",
        ),
        (
            "unschedulable after the window",
            &pod("{phase: Pending, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]}")
                .replace("11:59:50", "11:59:40"),
            Status::Failed,
            "Pod could not be scheduled",
        ),
        (
            "pending",
            &pod("{phase: Pending}"),
            Status::InProgress,
            "Pod is in the Pending phase",
        ),
        (
            "unknown phase",
            &pod("{phase: Lost}"),
            Status::Unknown,
            "unknown phase Lost",
        ),
    ]);
}

#[test]
fn job_table() {
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: test, generation: 1}\nspec: {completions: 3}\n";
    check(&[
        ("not started", job, Status::InProgress, "Job not started"),
        (
            "complete",
            &format!(
                "{job}status: {{succeeded: 3, startTime: '2026-12-05T11:00:00Z', conditions: [{{type: Complete, status: 'True'}}]}}"
            ),
            Status::Current,
            "Job Completed. succeeded: 3/3",
        ),
        (
            "failed",
            &format!(
                "{job}status: {{failed: 1, startTime: '2026-12-05T11:00:00Z', conditions: [{{type: Failed, status: 'True'}}]}}"
            ),
            Status::Failed,
            "Job Failed. failed: 1/3",
        ),
        (
            "running is Current (kstatus does not wait for completion)",
            &format!("{job}status: {{succeeded: 1, active: 2, startTime: '2026-12-05T11:00:00Z'}}"),
            Status::Current,
            "Job in progress. success:1, active: 2, failed: 0",
        ),
        (
            "suspended",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: test}\nspec: {suspend: true}\nstatus: {conditions: [{type: Suspended, status: 'True'}]}",
            Status::Current,
            "Job is suspended",
        ),
    ]);
}

#[test]
fn simple_kinds_table() {
    check(&[
        (
            "pvc pending",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: test}\nstatus: {phase: Pending}",
            Status::InProgress,
            "PVC is not Bound. phase: Pending",
        ),
        (
            "pvc no status",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: test}",
            Status::InProgress,
            "PVC is not Bound. phase: unknown",
        ),
        (
            "pvc bound",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: test}\nstatus: {phase: Bound}",
            Status::Current,
            "PVC is Bound",
        ),
        (
            "service cluster ip",
            "apiVersion: v1\nkind: Service\nmetadata: {name: test}\nspec: {}",
            Status::Current,
            "Service is ready",
        ),
        (
            "load balancer without ip",
            "apiVersion: v1\nkind: Service\nmetadata: {name: test}\nspec: {type: LoadBalancer}",
            Status::InProgress,
            "ClusterIP not set. Service type: LoadBalancer",
        ),
        (
            "load balancer with ip",
            "apiVersion: v1\nkind: Service\nmetadata: {name: test}\nspec: {type: LoadBalancer, clusterIP: 10.0.0.1}",
            Status::Current,
            "Service is ready",
        ),
        (
            "pdb",
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: test}",
            Status::Current,
            "AllowedDisruptions has been computed.",
        ),
        (
            "configmap",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: test}",
            Status::Current,
            "Resource is always ready",
        ),
        (
            "namespace active (generic)",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: test}\nstatus: {phase: Active}",
            Status::Current,
            "Resource is current",
        ),
        (
            "namespace being deleted",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: test, deletionTimestamp: '2026-12-05T11:00:00Z'}\nstatus: {phase: Terminating}",
            Status::Terminating,
            "Resource scheduled for deletion",
        ),
    ]);
}

#[test]
fn crd_table() {
    let crd = |conds: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: a.example.com}}\nstatus: {{conditions: {conds}}}"
        )
    };
    check(&[
        (
            "no conditions",
            &crd("[]"),
            Status::InProgress,
            "Install in progress",
        ),
        (
            "installing",
            &crd("[{type: Established, status: 'False', reason: Installing}]"),
            Status::InProgress,
            "Install in progress",
        ),
        (
            "names not accepted",
            &crd(
                "[{type: NamesAccepted, status: 'False', reason: NameConflict, message: 'plural is taken'}]",
            ),
            Status::Failed,
            "plural is taken",
        ),
        (
            "established",
            &crd("[{type: NamesAccepted, status: 'True'}, {type: Established, status: 'True'}]"),
            Status::Current,
            "CRD is established",
        ),
    ]);
}

#[test]
fn custom_resources_by_ready_condition() {
    let cr = |conds: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: a, generation: 3}}\nstatus: {{observedGeneration: 3, conditions: {conds}}}"
        )
    };
    check(&[
        (
            "ready true",
            &cr("[{type: Ready, status: 'True'}]"),
            Status::Current,
            "Resource is Ready",
        ),
        (
            "ready false",
            &cr("[{type: Ready, status: 'False', reason: Nope, message: not yet}]"),
            Status::InProgress,
            "not yet",
        ),
        (
            "ready unknown",
            &cr("[{type: Ready, status: 'Unknown', message: checking}]"),
            Status::InProgress,
            "checking",
        ),
        (
            "no ready condition: Current (kstatus)",
            &cr("[]"),
            Status::Current,
            "Resource is current",
        ),
    ]);
}

#[test]
fn canary_judged_by_promoted_condition() {
    let canary = |conds: &str| {
        format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, generation: 1}}\nstatus: {{conditions: {conds}}}"
        )
    };
    check(&[
        (
            "new canary",
            &canary("[]"),
            Status::InProgress,
            "Canary not initialized",
        ),
        (
            "initialized",
            &canary(
                "[{type: Promoted, status: 'True', message: 'Deployment initialization completed.'}]",
            ),
            Status::Current,
            "Deployment initialization completed.",
        ),
        (
            "analysis running",
            &canary(
                "[{type: Promoted, status: 'Unknown', message: 'New revision detected, progressing canary analysis.'}]",
            ),
            Status::InProgress,
            "New revision detected, progressing canary analysis.",
        ),
        (
            "rolled back",
            &canary(
                "[{type: Promoted, status: 'False', message: 'Canary analysis failed, Deployment scaled to zero.'}]",
            ),
            Status::Failed,
            "Canary analysis failed, Deployment scaled to zero.",
        ),
        (
            "stalled wins",
            &canary(
                "[{type: Promoted, status: 'True'}, {type: Stalled, status: 'True', message: target missing}]",
            ),
            Status::Failed,
            "target missing",
        ),
    ]);
}

#[test]
fn flux_job_reader_waits_for_completion() {
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, generation: 1}\nspec: {parallelism: 2, completions: 4}\n";
    let cases = [
        ("not started", String::new(), Status::InProgress, "Job not started. active: 0/2"),
        (
            "running: kstatus says Current, Flux waits",
            "status: {succeeded: 1, active: 2, startTime: '2026-12-05T11:00:00Z'}".into(),
            Status::InProgress,
            "Job in progress. success:1, active: 2, failed: 0",
        ),
        (
            "complete",
            "status: {succeeded: 4, startTime: '2026-12-05T11:00:00Z', conditions: [{type: Complete, status: 'True'}]}".into(),
            Status::Current,
            "Job Completed. succeeded: 4/4",
        ),
        (
            "failed",
            "status: {failed: 2, startTime: '2026-12-05T11:00:00Z', conditions: [{type: Failed, status: 'True'}]}".into(),
            Status::Failed,
            "Job Failed. failed: 2/4",
        ),
    ];
    for (name, status, want, message) in cases {
        let h = flux(&obj(&format!("{job}{status}")), now());
        assert_eq!(
            (h.status, h.message.as_str()),
            (want, message),
            "case {name}"
        );
    }
    let suspended =
        obj("apiVersion: batch/v1\nkind: Job\nmetadata: {name: m}\nspec: {suspend: true}");
    assert_eq!(
        flux(&suspended, now()).status,
        Status::Current,
        "suspended without condition"
    );
    assert_eq!(
        compute(&suspended, now()).status,
        Status::InProgress,
        "kstatus needs the condition"
    );
    // Other kinds: kstatus.
    let dep = obj("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}");
    assert_eq!(flux(&dep, now()), compute(&dep, now()));
}
