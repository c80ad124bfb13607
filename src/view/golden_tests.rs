//! Golden output of `pennant get`, `tree` and `events` for fixed objects at a fixed `now`
//! (snapshots under `src/view/snapshots/`): tables with and without `-A`, the `get all`
//! sections, colour codes, `-o json|yaml`, a tree with a HelmRelease and a Canary beneath.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;

use super::events;
use super::summary::{Summarize, Summary};
use super::table::render_get;
use super::tree::{Node, canary_objects, parse_inventory_id, render, state_text};
use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::Kustomization;
use crate::api::source::{GitRepository, HelmChart, HelmRepository, OCIRepository};

const NOW: &str = "2026-12-06T12:00:00Z";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_saphyr::from_str(&s.replace("SHA", SHA)).unwrap()
}

fn git() -> GitRepository {
    yaml(
        r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: apps, namespace: prod, creationTimestamp: "2026-12-06T11:00:00Z"}
spec: {url: "http://git/apps", interval: 1m, ref: {branch: main}}
status:
  artifact: {revision: "main@sha1:SHA", path: p, url: u, digest: "sha256:x", lastUpdateTime: "2026-12-06T11:59:00Z"}
  conditions:
  - {type: Ready, status: "True", reason: Succeeded, message: "stored artifact for revision 'main@sha1:SHA'", lastTransitionTime: "2026-12-06T11:59:00Z"}
"#,
    )
}

fn oci_failing() -> OCIRepository {
    yaml(
        r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: manifests, namespace: prod, creationTimestamp: "2026-12-05T09:30:00Z"}
spec: {url: "oci://registry/manifests", interval: 5m, suspend: true}
status:
  conditions:
  - {type: Ready, status: "False", reason: OCIArtifactPullFailed, message: "failed to pull\nartifact: 401", lastTransitionTime: "2026-12-06T11:00:00Z"}
"#,
    )
}

fn helm_repo_oci() -> HelmRepository {
    yaml(
        r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: prod, creationTimestamp: "2026-12-06T11:58:30Z"}
spec: {url: "oci://registry/charts", type: oci}
"#,
    )
}

fn chart() -> HelmChart {
    yaml(
        r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: prod-web, namespace: prod, creationTimestamp: "2026-12-06T11:00:00Z"}
spec: {chart: web, version: "*", interval: 1m, sourceRef: {kind: HelmRepository, name: charts}}
status:
  artifact: {revision: "6.1.0+SHA", path: p, url: u, digest: "sha256:x", lastUpdateTime: "2026-12-06T11:59:00Z"}
  conditions:
  - {type: Ready, status: "True", reason: ChartPullSucceeded, message: "pulled 'web' chart with version '6.1.0'", lastTransitionTime: "2026-12-06T11:59:00Z"}
"#,
    )
}

fn ks() -> Kustomization {
    yaml(
        r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: prod, creationTimestamp: "2026-12-06T08:00:00Z"}
spec: {interval: 10m, path: ./apps, prune: true, sourceRef: {kind: GitRepository, name: apps}}
status:
  lastAppliedRevision: "main@sha1:SHA"
  conditions:
  - {type: Ready, status: "True", reason: ReconciliationSucceeded, message: "Applied revision: main@sha1:SHA", lastTransitionTime: "2026-12-06T11:59:00Z"}
  inventory:
    entries:
    - {id: "_prod__Namespace", v: v1}
    - {id: "prod_web_helm.toolkit.fluxcd.io_HelmRelease", v: v2}
    - {id: "prod_podinfo_flagger.app_Canary", v: v1beta1}
    - {id: "prod_podinfo_apps_Deployment", v: v1}
"#,
    )
}

fn ks_new() -> Kustomization {
    yaml(
        r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra, namespace: ops, creationTimestamp: "2026-12-06T11:59:58Z"}
spec: {interval: 10m, path: ./infra, prune: true, sourceRef: {kind: GitRepository, name: apps, namespace: prod}}
"#,
    )
}

fn hr() -> HelmRelease {
    yaml(
        r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: prod, creationTimestamp: "2026-12-04T12:00:00Z"}
spec: {interval: 10m, chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}}
status:
  lastAttemptedRevision: 6.1.0
  history:
  - {digest: "sha256:a", name: web, namespace: prod, version: 2, status: deployed, chartName: web, chartVersion: 6.1.0, configDigest: "sha256:b", firstDeployed: "2026-12-04T12:00:00Z", lastDeployed: "2026-12-06T11:00:00Z"}
  conditions:
  - {type: Ready, status: "Unknown", reason: Progressing, message: "Running 'upgrade' action with timeout of 5m0s", lastTransitionTime: "2026-12-06T11:59:00Z"}
  inventory:
    entries:
    - {id: "prod_web_apps_Deployment", v: v1}
    - {id: "prod_web__Service", v: v1}
"#,
    )
}

fn canary(phase: &str, weight: i32, failed: i32, promoted: &str, message: &str) -> Canary {
    let lower = phase.to_lowercase();
    yaml(&format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: "podinfo-{lower}", namespace: prod, creationTimestamp: "2026-12-06T10:00:00Z"}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service: {{port: 9898}}
  analysis: {{interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10}}
status:
  phase: {phase}
  canaryWeight: {weight}
  failedChecks: {failed}
  iterations: 0
  lastPromotedSpec: 5d8f7c9b6
  lastTransitionTime: "2026-12-06T11:58:00Z"
  conditions:
  - {{type: Promoted, status: "{promoted}", reason: x, message: "{message}", lastTransitionTime: "2026-12-06T11:58:00Z"}}
"#
    ))
}

fn canaries() -> Vec<Canary> {
    vec![
        canary(
            "Progressing",
            20,
            1,
            "Unknown",
            "New revision detected, progressing canary analysis.",
        ),
        canary(
            "Succeeded",
            0,
            0,
            "True",
            "Canary analysis completed successfully, promotion finished.",
        ),
        canary(
            "Failed",
            0,
            5,
            "False",
            "Canary analysis failed, Deployment scaled to zero.",
        ),
    ]
}

fn all() -> Vec<Summary> {
    let n = now();
    let mut v = vec![
        git().summarize(n),
        oci_failing().summarize(n),
        helm_repo_oci().summarize(n),
        chart().summarize(n),
        hr().summarize(n),
        ks().summarize(n),
        ks_new().summarize(n),
    ];
    v.extend(canaries().iter().map(|c| c.summarize(n)));
    v
}

#[test]
fn get_kustomizations_table() {
    let n = now();
    let rows = [ks().summarize(n), ks_new().summarize(n)];
    insta::assert_snapshot!(render_get(&rows[..1], false, false, false));
    insta::assert_snapshot!(
        "get_kustomizations_all_namespaces",
        render_get(&rows, true, false, false)
    );
}

#[test]
fn get_canaries_table() {
    let rows: Vec<Summary> = canaries().iter().map(|c| c.summarize(now())).collect();
    insta::assert_snapshot!(render_get(&rows, false, false, false));
}

#[test]
fn get_all_sections() {
    insta::assert_snapshot!(render_get(&all(), false, true, false));
}

#[test]
fn get_all_coloured() {
    let out = render_get(&all(), false, true, true);
    assert!(out.contains("\x1b[32mTrue\x1b[0m"), "{out}");
    assert!(out.contains("\x1b[31mFailed\x1b[0m"), "{out}");
    let plain = render_get(&all(), false, true, false);
    assert!(!plain.contains('\x1b'), "no colour when asked for none");
    // the same text once the codes are gone: colour never moves a column
    let stripped = out
        .replace("\x1b[32m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn get_all_json_and_yaml() {
    let rows = all();
    insta::assert_snapshot!("get_all_json", serde_json::to_string_pretty(&rows).unwrap());
    insta::assert_snapshot!("get_all_yaml", serde_saphyr::to_string(&rows).unwrap());
}

#[test]
fn tree_of_a_kustomization() {
    let n = now();
    let k = ks();
    let (h, c) = (hr(), canaries().remove(0));
    let root_ref =
        parse_inventory_id("prod_apps_kustomize.toolkit.fluxcd.io_Kustomization").unwrap();
    let mut root = Node::leaf(state_text(&root_ref, &k.summarize(n)));
    for e in &k
        .status
        .as_ref()
        .unwrap()
        .inventory
        .as_ref()
        .unwrap()
        .entries
    {
        let r = parse_inventory_id(&e.id).unwrap();
        let node = match r.pennant_kind() {
            Some(crate::view::Kind::HelmRelease) => Node {
                text: state_text(&r, &h.summarize(n)),
                items: h
                    .status
                    .as_ref()
                    .unwrap()
                    .inventory
                    .as_ref()
                    .unwrap()
                    .entries
                    .iter()
                    .map(|e| Node::leaf(parse_inventory_id(&e.id).unwrap().text()))
                    .collect(),
            },
            Some(crate::view::Kind::Canary) => Node {
                text: state_text(&r, &c.summarize(n)),
                items: canary_objects(&c)
                    .iter()
                    .map(|o| Node::leaf(o.text()))
                    .collect(),
            },
            _ => Node::leaf(r.text()),
        };
        root.items.push(node);
    }
    insta::assert_snapshot!(render(&root));
    insta::assert_snapshot!("tree_json", serde_json::to_string_pretty(&root).unwrap());
}

fn event(ns: &str, kind: &str, api: &str, name: &str, ty: &str, reason: &str, at: &str) -> Event {
    yaml(&format!(
        r#"
metadata: {{name: {name}.{reason}, namespace: {ns}}}
involvedObject: {{apiVersion: {api}, kind: {kind}, name: {name}, namespace: {ns}}}
type: {ty}
reason: {reason}
message: "{kind} {name}: {reason}"
lastTimestamp: "{at}"
count: 2
"#
    ))
}

#[test]
fn events_sorted_oldest_first() {
    let evs = vec![
        event(
            "prod",
            "Canary",
            "flagger.app/v1beta1",
            "podinfo",
            "Warning",
            "Synced",
            "2026-12-06T11:59:30Z",
        ),
        event(
            "prod",
            "Kustomization",
            "kustomize.toolkit.fluxcd.io/v1",
            "apps",
            "Normal",
            "ReconciliationSucceeded",
            "2026-12-06T11:00:00Z",
        ),
        event(
            "prod",
            "Pod",
            "v1",
            "web-1",
            "Normal",
            "Pulled",
            "2026-12-06T11:30:00Z",
        ),
        event(
            "ops",
            "GitRepository",
            "source.toolkit.fluxcd.io/v1",
            "apps",
            "Normal",
            "NewArtifact",
            "2026-12-06T11:58:00Z",
        ),
    ];
    let rows = events::rows(&evs, None, now());
    assert_eq!(rows.len(), 3, "the Pod's Event is not pennant's");
    insta::assert_snapshot!(events::table(&rows, true).render(false));
    let one = events::rows(&evs, Some(("canary", "podinfo")), now());
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].object, "Canary/podinfo");
    assert!(events::rows(&evs, Some(("Kustomization", "podinfo")), now()).is_empty());
}
