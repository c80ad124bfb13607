//! `pennant::helm::drift` against the real local control plane (`e2e/cluster up`): a small
//! release (Deployment, Service, ConfigMap, Secret) applied as Helm 4 would (no helm needed: a
//! server-side apply of each manifest object as `helm`), then edited by hand. Drift is found with its paths,
//! a Secret's values are masked in the report and its real value restored by the correction,
//! ignore rules and the `driftDetection: disabled` opt-out hide what they name, the fields a
//! Canary owns (target replicas parked at zero, the apex Service selector) are neither drift
//! nor reverted while other edits of the same objects are, and a correction writes only the
//! drifted objects (resourceVersions of the others unchanged).
//!
//! The Canary's writes are made as pennant's Canary controller makes them (a merge patch of
//! the target's replicas, a server-side apply of the apex Service as `pennant` with Flagger's
//! opt-out annotations); the Canary object itself is real (its status read back for the
//! ownership map).

mod support;

use base64::Engine;
use kube::api::{Patch, PatchParams};
use pennant::api::Canary;
use pennant::apply::ownership::Ownership;
use pennant::apply::ssa::Applier;
use pennant::helm::drift::{
    self, DriftDetection, DriftMode, DriftReport, DriftState, HELM_FIELD_MANAGER, IgnoreRule,
    Release,
};
use serde_json::{Value, json};
use support::*;

const MANIFEST: &str = r#"---
# Source: podinfo/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: podinfo-config
data:
  greeting: hello
---
# Source: podinfo/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: podinfo-secret
type: Opaque
stringData:
  password: s3cr3t-real
---
# Source: podinfo/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  labels:
    app: podinfo
spec:
  type: ClusterIP
  selector:
    app: podinfo
  ports:
    - name: http
      port: 9898
      targetPort: 9898
---
# Source: podinfo/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  labels:
    app: podinfo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
    spec:
      containers:
        - name: podinfod
          image: ghcr.io/stefanprodan/podinfo:6.0.0
          ports:
            - containerPort: 9898
"#;

fn settings(mode: DriftMode, ignore: Vec<IgnoreRule>) -> DriftDetection {
    DriftDetection { mode, ignore }
}

/// `(subject, state as text, changed paths)` of the objects not unchanged.
fn drifted(report: &DriftReport) -> Vec<(String, String, Vec<String>)> {
    report
        .objects
        .iter()
        .filter(|o| o.state != DriftState::Unchanged)
        .map(|o| {
            let (state, paths) = match &o.state {
                DriftState::Changed(ops) => {
                    ("changed", ops.iter().map(|op| op.path.clone()).collect())
                }
                DriftState::Missing => ("removed", vec![]),
                DriftState::Excluded => ("excluded", vec![]),
                DriftState::Unchanged => unreachable!(),
            };
            (o.subject(), state.to_string(), paths)
        })
        .collect()
}

fn row(subject: String, state: &str, paths: &[&str]) -> (String, String, Vec<String>) {
    (
        subject,
        state.into(),
        paths.iter().map(|p| p.to_string()).collect(),
    )
}

async fn rv(ns: &TestNs, api_version: &str, kind: &str, name: &str) -> String {
    ns.get(api_version, kind, name).await.unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A hand edit (`kubectl patch`-like, strategic merge, its own field manager).
async fn edit(ns: &TestNs, api_version: &str, kind: &str, name: &str, patch: Value) {
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let p = if kind == "Deployment" || kind == "Service" {
        Patch::Strategic(patch)
    } else {
        Patch::Merge(patch)
    };
    ns.api(api_version, kind)
        .patch(name, &params, &p)
        .await
        .unwrap_or_else(|e| panic!("edit {kind}/{name}: {e}"));
}

fn secret_value(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default(),
    )
    .unwrap()
}

#[tokio::test]
async fn drift_is_found_masked_ignored_and_corrected_without_undoing_the_canary() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-drift", 0).await;
    let n = ns.name.clone();
    let applier = Applier::new(client.clone());
    let objects = drift::desired_objects(&applier, MANIFEST, "podinfo", &n)
        .await
        .unwrap();
    assert_eq!(objects.len(), 4);
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == n.as_str())
    );
    // The release, as Helm 4 installs it: a server-side apply per object as `helm`. (Not with
    // the Applier: its manager is `pennant`, the Canary controller's, and two appliers under one
    // manager remove each other's fields.)
    for o in &objects {
        let (api_version, kind) = (
            o["apiVersion"].as_str().unwrap(),
            o["kind"].as_str().unwrap(),
        );
        ns.api(api_version, kind)
            .patch(
                o["metadata"]["name"].as_str().unwrap(),
                &PatchParams::apply(HELM_FIELD_MANAGER).force(),
                &Patch::Apply(o),
            )
            .await
            .unwrap_or_else(|e| panic!("install {kind}: {e}"));
    }
    let release = Release {
        name: "podinfo".into(),
        namespace: n.clone(),
        version: 1,
    };
    let none = Ownership::default();
    let warn = settings(DriftMode::Warn, vec![]);
    let detect = |s: DriftDetection, own: Ownership| {
        let (applier, objects) = (applier.clone(), objects.clone());
        async move {
            drift::detect(&applier, &objects, &s, &own, HELM_FIELD_MANAGER)
                .await
                .unwrap()
        }
    };

    // 1. In sync.
    let report = detect(warn.clone(), none.clone()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(drifted(&report), vec![]);
    let status = report.status(&release).unwrap();
    assert_eq!((status.drifted, status.reason), (false, "NoDriftDetected"));

    // 2. Hand edits: an image, a ConfigMap value, a Secret value.
    edit(
        &ns,
        "apps/v1",
        "Deployment",
        "podinfo",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.9.9"}]}}}}),
    )
    .await;
    edit(
        &ns,
        "v1",
        "ConfigMap",
        "podinfo-config",
        json!({"data": {"greeting": "hacked"}}),
    )
    .await;
    let hacked = base64::engine::general_purpose::STANDARD.encode("hacked-value");
    edit(
        &ns,
        "v1",
        "Secret",
        "podinfo-secret",
        json!({"data": {"password": hacked}}),
    )
    .await;
    let service_rv = rv(&ns, "v1", "Service", "podinfo").await;

    let report = detect(warn.clone(), none.clone()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        drifted(&report),
        vec![
            row(
                format!("ConfigMap/{n}/podinfo-config"),
                "changed",
                &["/data/greeting"]
            ),
            row(
                format!("Secret/{n}/podinfo-secret"),
                "changed",
                &["/data/password"]
            ),
            row(
                format!("Deployment/{n}/podinfo"),
                "changed",
                &["/spec/template/spec/containers/0/image"]
            ),
        ]
    );
    let status = report.status(&release).unwrap();
    assert_eq!((status.drifted, status.reason), (true, "DriftDetected"));
    assert_eq!(
        status.message,
        format!(
            "Cluster state of release {n}/podinfo.v1 has drifted from the desired state:\n\
             ConfigMap/{n}/podinfo-config changed (0 additions, 1 changes, 0 removals)\n\
             Secret/{n}/podinfo-secret changed (0 additions, 1 changes, 0 removals)\n\
             Deployment/{n}/podinfo changed (0 additions, 1 changes, 0 removals)"
        )
    );
    // The Secret's values are masked everywhere a human may see them.
    let shown = format!("{} {} {report:?}", status.message, report.patches());
    let real = base64::engine::general_purpose::STANDARD.encode("s3cr3t-real");
    for secret in [
        hacked.as_str(),
        real.as_str(),
        "s3cr3t-real",
        "hacked-value",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(shown.contains("*** (after)"), "{shown}");
    // the ConfigMap's are not secret
    assert!(shown.contains("hacked"), "{shown}");

    // 3. An ignore rule hides the ConfigMap path (and only on ConfigMaps).
    let rule = IgnoreRule {
        paths: vec!["/data/greeting".into()],
        target: Some(serde_json::from_value(json!({"kind": "ConfigMap"})).unwrap()),
    };
    let ignoring = detect(settings(DriftMode::Warn, vec![rule.clone()]), none.clone()).await;
    assert_eq!(
        drifted(&ignoring)
            .iter()
            .map(|r| r.0.clone())
            .collect::<Vec<_>>(),
        [
            format!("Secret/{n}/podinfo-secret"),
            format!("Deployment/{n}/podinfo")
        ]
    );

    // 4. Correction (`enabled`): the real Secret value comes back, unchanged objects get no write.
    let fixed = drift::correct(&applier, &report, HELM_FIELD_MANAGER).await;
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    let (kind, reason, message) = fixed.event(&release).unwrap();
    assert_eq!((kind, reason), ("Normal", "DriftCorrected"));
    assert_eq!(
        message,
        format!(
            "Cluster state of release {n}/podinfo.v1 has been corrected:\n\
             ConfigMap/{n}/podinfo-config configured\n\
             Secret/{n}/podinfo-secret configured\n\
             Deployment/{n}/podinfo configured"
        )
    );
    let secret = ns.get("v1", "Secret", "podinfo-secret").await.unwrap();
    assert_eq!(secret_value(&secret, "password"), "s3cr3t-real");
    let cm = ns.get("v1", "ConfigMap", "podinfo-config").await.unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");
    let d = ns.get("apps/v1", "Deployment", "podinfo").await.unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    assert_eq!(
        rv(&ns, "v1", "Service", "podinfo").await,
        service_rv,
        "no write"
    );
    assert_eq!(drifted(&detect(warn.clone(), none.clone()).await), vec![]);

    // 5. A Canary owns the target's replicas (parked at zero) and the apex Service selector.
    ns.apply_yaml(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
"#,
    )
    .await;
    ns.canaries()
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    // The Canary controller's writes: the target scaled to zero, the apex Service taken over.
    let pennant = PatchParams {
        field_manager: Some("pennant".into()),
        ..Default::default()
    };
    ns.api("apps/v1", "Deployment")
        .patch(
            "podinfo",
            &pennant,
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let apex = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": n, "annotations": {
            "helm.toolkit.fluxcd.io/driftDetection": "disabled",
            "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
            "flagger.kubernetes.io/original-configuration": "{\"selector\":{\"app\":\"podinfo\"}}",
            "pennant.dev/applied": "abc"}},
        "spec": {"type": "ClusterIP", "selector": {"app": "podinfo-primary"},
            "ports": [{"name": "http", "port": 9898, "targetPort": 9898, "protocol": "TCP"}]}});
    ns.api("v1", "Service")
        .patch(
            "podinfo",
            &PatchParams::apply("pennant").force(),
            &Patch::Apply(&apex),
        )
        .await
        .unwrap();
    let canary: Canary = ns.canary("podinfo").await;
    let owned = Ownership::of_canaries([&canary], "kubernetes");

    // Without the ownership map this is Flux's fight (flagger#1121): replicas are drift, and
    // the Service is excluded whole by the opt-out Flagger wrote on it.
    let fight = detect(warn.clone(), none.clone()).await;
    assert_eq!(
        drifted(&fight),
        vec![
            row(format!("Service/{n}/podinfo"), "excluded", &[]),
            row(
                format!("Deployment/{n}/podinfo"),
                "changed",
                &["/spec/replicas"]
            ),
        ]
    );
    // With it: nothing drifted.
    let report = detect(warn.clone(), owned.clone()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(drifted(&report), vec![]);
    assert!(!report.has_drift());

    // Other edits of the same objects are still drift.
    edit(
        &ns,
        "apps/v1",
        "Deployment",
        "podinfo",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.9.9"}]}}}}),
    )
    .await;
    edit(
        &ns,
        "v1",
        "Service",
        "podinfo",
        json!({"metadata": {"labels": {"app": "hacked"}}}),
    )
    .await;
    // The Deployment controller answers the template edit by bumping the
    // `deployment.kubernetes.io/revision` annotation; let it, so the drift read (a GET and a
    // dry-run apply) does not race it (a CI run saw the annotation in the diff).
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), &ns.name);
    wait_until(
        std::time::Duration::from_secs(30),
        "the Deployment controller",
        || async {
            let d = deployments.get("podinfo").await.unwrap();
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            observed.is_some() && observed == d.metadata.generation
        },
    )
    .await;
    let (cm_rv, secret_rv) = (
        rv(&ns, "v1", "ConfigMap", "podinfo-config").await,
        rv(&ns, "v1", "Secret", "podinfo-secret").await,
    );
    let enabled = settings(DriftMode::Enabled, vec![]);
    let report = detect(enabled.clone(), owned.clone()).await;
    assert_eq!(
        drifted(&report),
        vec![
            row(
                format!("Service/{n}/podinfo"),
                "changed",
                &["/metadata/labels/app"]
            ),
            row(
                format!("Deployment/{n}/podinfo"),
                "changed",
                &["/spec/template/spec/containers/0/image"]
            ),
        ]
    );
    let fixed = drift::correct(&applier, &report, HELM_FIELD_MANAGER).await;
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(fixed.applied.len(), 2);
    let d = ns.get("apps/v1", "Deployment", "podinfo").await.unwrap();
    assert_eq!(d["spec"]["replicas"], 0, "the Canary's zero stays");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    let svc = ns.get("v1", "Service", "podinfo").await.unwrap();
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "podinfo-primary"}),
        "the Canary's selector stays"
    );
    assert_eq!(svc["metadata"]["labels"]["app"], "podinfo");
    assert_eq!(svc["metadata"]["annotations"]["pennant.dev/applied"], "abc");
    // only the drifted objects were written
    assert_eq!(rv(&ns, "v1", "ConfigMap", "podinfo-config").await, cm_rv);
    assert_eq!(rv(&ns, "v1", "Secret", "podinfo-secret").await, secret_rv);
    assert_eq!(
        drifted(&detect(enabled.clone(), owned.clone()).await),
        vec![]
    );

    // 6. `driftDetection: disabled` on the live ConfigMap excludes it: reported as excluded,
    // never written. A deleted Secret is `removed`, and the correction creates it again.
    edit(
        &ns,
        "v1",
        "ConfigMap",
        "podinfo-config",
        json!({
        "metadata": {"annotations": {"helm.toolkit.fluxcd.io/driftDetection": "disabled"}},
        "data": {"greeting": "mine"}}),
    )
    .await;
    let cm_rv = rv(&ns, "v1", "ConfigMap", "podinfo-config").await;
    ns.api("v1", "Secret")
        .delete("podinfo-secret", &Default::default())
        .await
        .unwrap();
    let report = detect(enabled.clone(), owned.clone()).await;
    assert_eq!(
        drifted(&report),
        vec![
            row(format!("ConfigMap/{n}/podinfo-config"), "excluded", &[]),
            row(format!("Secret/{n}/podinfo-secret"), "removed", &[]),
        ]
    );
    assert!(report.status(&release).unwrap().message.ends_with(&format!(
        "ConfigMap/{n}/podinfo-config excluded\nSecret/{n}/podinfo-secret removed"
    )));
    let fixed = drift::correct(&applier, &report, HELM_FIELD_MANAGER).await;
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(
        fixed
            .applied
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        [format!("Secret/{n}/podinfo-secret created")]
    );
    let secret = ns.get("v1", "Secret", "podinfo-secret").await.unwrap();
    assert_eq!(secret_value(&secret, "password"), "s3cr3t-real");
    let cm = ns.get("v1", "ConfigMap", "podinfo-config").await.unwrap();
    assert_eq!(cm["data"]["greeting"], "mine");
    assert_eq!(rv(&ns, "v1", "ConfigMap", "podinfo-config").await, cm_rv);

    ns.cleanup().await;
}
