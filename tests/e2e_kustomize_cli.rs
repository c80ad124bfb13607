//! `pennant build ks` and `pennant diff ks` end to end: the built `pennant` binary against the
//! real Git server, pennant's source and kustomize controllers (`--controllers
//! source,kustomize`), the real `kustomize`. What `build` prints is what the controller
//! applied; a commit read by the source but not applied yet (the Kustomization suspended) is
//! exactly what `diff` shows (exit 1), and nothing once it is applied (exit 0); Secret values
//! never appear; a removed file shows as deleted.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::kustomization::Kustomization;
use pennant::api::source::GitRepository;
use serde_json::{Value, json};
use support::gitserver::{GitServer, ServerOptions, TempDir, git};
use support::sources::{cleanup, flux_ok, start_source_and_kustomize_controllers, wait_revision};
use support::*;

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.27\n"
    )
}
const CONFIG: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  level: info\n";
const EXTRA: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  removed: soon\n";

fn secret(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-secret\nstringData:\n  password: {password}\n"
    )
}

/// `pennant <args>` with the cluster's kubeconfig: (exit code, stdout, stderr).
fn pennant(args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[])
}

/// `<namespace>_<name>_<group>_<kind>` of an object, as in the inventory.
fn inventory_id(o: &Value) -> String {
    let api_version = o["apiVersion"].as_str().unwrap();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    format!(
        "{}_{}_{group}_{}",
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap(),
        o["kind"].as_str().unwrap()
    )
}

async fn suspend(ns: &TestNs, on: bool) {
    Api::<Kustomization>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": on}})),
        )
        .await
        .unwrap();
}

/// The `-`/`+` lines of the unified diff under `► <subject> drifted`.
fn changed_lines(out: &str, subject: &str) -> Vec<String> {
    let head = format!("► {subject} drifted");
    let section = out
        .split_once(&head)
        .unwrap_or_else(|| panic!("no {head} in:\n{out}"))
        .1;
    let section = section.split("\n►").next().unwrap();
    section
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn build_prints_what_was_applied_and_diff_shows_exactly_the_next_commit() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-cli", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha1 = repo.commit(
        "main",
        &[
            ("apps/deployment.yaml", &deployment(1)),
            ("apps/config.yaml", CONFIG),
            ("apps/extra.yaml", EXTRA),
            ("apps/secret.yaml", &secret("hunter2-first")),
        ],
        "web at 1 replica",
    );
    support::kustomize::git_repository(&ns, "apps", &server.url("apps")).await;
    ns.apply_yaml(&format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  path: ./apps\n  prune: true\n  targetNamespace: {}\n  sourceRef:\n    kind: GitRepository\n    name: apps\n",
        ns.name
    ))
    .await;
    let k = support::kustomize::wait_applied(&ns, "apps", &sha1).await;
    let n = ns.name.as_str();

    // build: the objects of the inventory, as applied, the Secret masked
    let (code, built, err) = pennant(&["build", "ks", "apps", "-n", n]);
    assert_eq!(code, 0, "{err}");
    assert!(!built.contains("hunter2"), "secret value printed:\n{built}");
    let docs = yaml_docs(&built);
    let ids: BTreeSet<String> = docs.iter().map(inventory_id).collect();
    let inventory: BTreeSet<String> = k
        .status
        .unwrap()
        .inventory
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, inventory);
    for d in &docs {
        let labels = &d["metadata"]["labels"];
        assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "apps", "{d}");
        assert_eq!(labels["kustomize.toolkit.fluxcd.io/namespace"], n, "{d}");
        let kind = d["kind"].as_str().unwrap();
        let name = d["metadata"]["name"].as_str().unwrap();
        let live = ns
            .get(d["apiVersion"].as_str().unwrap(), kind, name)
            .await
            .unwrap();
        match kind {
            "ConfigMap" => assert_eq!(d["data"], live["data"], "{name}"),
            "Deployment" => assert_eq!(d["spec"]["replicas"], live["spec"]["replicas"]),
            "Secret" => {
                assert_eq!(d["stringData"]["password"], "**SOPS**", "{d}");
                assert!(live["data"]["password"].is_string(), "applied unmasked");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // the same build from a local checkout (--path), and nothing to diff
    let local = repo.work.join("apps");
    let (code, from_path, err) = pennant(&[
        "build",
        "ks",
        "apps",
        "-n",
        n,
        "--path",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_path, built, "--path builds what the artifact builds");
    let (code, out, err) = pennant(&["diff", "ks", "apps", "-n", n]);
    assert_eq!((code, out.as_str()), (0, ""), "nothing to apply: {err}");

    // a commit read by the source, not applied (suspended): replicas, a password, a file gone
    suspend(&ns, true).await;
    git(&repo.work, &["rm", "-q", "apps/extra.yaml"]);
    let sha2 = repo.commit(
        "main",
        &[
            ("apps/deployment.yaml", &deployment(3)),
            ("apps/secret.yaml", &secret("hunter2-second")),
        ],
        "web at 3 replicas",
    );
    flux_ok(n, &["reconcile", "source", "git", "apps"]);
    wait_revision::<GitRepository>(&ns, "apps", &format!("main@sha1:{sha2}")).await;
    let (code, out, err) = pennant(&["diff", "ks", "apps", "-n", n]);
    assert_eq!(code, 1, "a difference: {err}");
    assert!(
        err.contains("identified at least one change"),
        "Flux's message: {err}"
    );
    assert_eq!(
        changed_lines(&out, &format!("Deployment/{n}/web")),
        ["-  replicas: 1", "+  replicas: 3"],
        "exactly the replica change:\n{out}"
    );
    let secret_lines = changed_lines(&out, &format!("Secret/{n}/web-secret"));
    assert_eq!(
        secret_lines.len(),
        2,
        "one changed value, masked: {secret_lines:?}"
    );
    assert!(
        secret_lines[0].contains("password") && secret_lines[0].contains("*** (before)"),
        "{secret_lines:?}"
    );
    assert!(secret_lines[1].contains("*** (after)"), "{secret_lines:?}");
    assert!(!out.contains("hunter2"), "secret value printed:\n{out}");
    assert!(!out.contains(": null"), "no field added by masking:\n{out}");
    let heads: Vec<&str> = out.lines().filter(|l| l.starts_with('►')).collect();
    assert_eq!(
        heads,
        [
            format!("► Secret/{n}/web-secret drifted"),
            format!("► Deployment/{n}/web drifted"),
            format!("► ConfigMap/{n}/extra deleted"),
        ],
        "{out}"
    );
    // nothing was applied by the diff
    let d = ns.deployment("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    assert!(ns.get("v1", "ConfigMap", "extra").await.is_some());

    // applied by the controller: no difference left
    suspend(&ns, false).await;
    support::kustomize::wait_applied(&ns, "apps", &sha2).await;
    let d = ns.deployment("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let (code, out, err) = pennant(&["diff", "ks", "apps", "-n", n]);
    assert_eq!((code, out.as_str()), (0, ""), "applied: {err}");

    // errors exit 2 (not 1: no difference is claimed)
    let (code, _, err) = pennant(&["diff", "ks", "missing", "-n", n]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("failed to get kustomization object"), "{err}");

    // objects in another cluster: no dry-run against this one
    ns.apply_yaml(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: elsewhere\n  namespace: NAMESPACE\nspec:\n  suspend: true\n  interval: 10m\n  path: ./apps\n  prune: true\n  kubeConfig:\n    secretRef:\n      name: remote-kubeconfig\n  sourceRef:\n    kind: GitRepository\n    name: apps\n",
    )
    .await;
    let (code, out, err) = pennant(&["diff", "ks", "elsewhere", "-n", n]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("diff not supported for remote clusters"),
        "{err}"
    );

    for name in ["apps", "elsewhere"] {
        Api::<Kustomization>::namespaced(client.clone(), n)
            .delete(name, &Default::default())
            .await
            .unwrap();
        wait_until(
            Duration::from_secs(30),
            "Kustomization finalized",
            || async {
                Api::<Kustomization>::namespaced(client.clone(), n)
                    .get_opt(name)
                    .await
                    .is_ok_and(|k| k.is_none())
            },
        )
        .await;
    }
    cleanup(ns).await;
}
