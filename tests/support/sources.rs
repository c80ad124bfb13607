//! The source controller's test harness shared by the `e2e_sources*` files: `pennant controller
//! --controllers source` scoped to a test namespace, the `flux` CLI as the client, and a
//! cleanup that lets the controller release its finalizers before the namespace goes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pennant::api::source::{GitRepository, HelmChart, HelmRepository, OCIRepository, Source};

use super::*;

/// `pennant controller --controllers source` in `ns`, its storage under `storage`, its HTTP
/// server (artifacts) on a free port.
pub fn start_source_controller(
    ns: &str,
    storage: &Path,
    extra: &[&str],
) -> (ControllerProcess, u16) {
    start_source_controller_env(ns, storage, extra, &[])
}

/// [`start_source_controller`] with extra environment variables (e.g. its `TMPDIR`).
pub fn start_source_controller_env(
    ns: &str,
    storage: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (ControllerProcess, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--controllers",
        "source",
        "--storage-path",
        storage.to_str().unwrap(),
        "--listen",
        &listen,
        "--log-level",
        "info,pennant=debug",
    ];
    args.extend_from_slice(extra);
    let p =
        ControllerProcess::start_with(ns, &format!("source-{ns}"), &kubeconfig_path(), &args, env);
    (p, port)
}

/// `pennant controller --controllers source,kustomize` in `ns` (the source controller's
/// storage under `storage`, its artifacts served on a free port the kustomize controller
/// downloads from).
pub fn start_source_and_kustomize_controllers(
    ns: &str,
    storage: &Path,
) -> (ControllerProcess, u16) {
    start_source_and_kustomize_controllers_with(ns, storage, &[])
}

/// [`start_source_and_kustomize_controllers`] with more controller flags.
pub fn start_source_and_kustomize_controllers_with(
    ns: &str,
    storage: &Path,
    extra: &[&str],
) -> (ControllerProcess, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--controllers",
        "source,kustomize",
        "--storage-path",
        storage.to_str().unwrap(),
        "--listen",
        &listen,
        "--log-level",
        "info,pennant=debug",
    ];
    args.extend_from_slice(extra);
    let p = ControllerProcess::start_with(
        ns,
        &format!("kustomize-{ns}"),
        &kubeconfig_path(),
        &args,
        &[],
    );
    (p, port)
}

/// Deletes the namespace's GitRepositories while the controller still runs (it releases their
/// finalizers), then the namespace: a namespace left with finalized objects and no controller
/// would stay Terminating.
pub async fn cleanup(ns: TestNs) {
    delete_all::<HelmChart>(&ns, "HelmCharts").await;
    delete_all::<GitRepository>(&ns, "GitRepositories").await;
    delete_all::<OCIRepository>(&ns, "OCIRepositories").await;
    delete_all::<HelmRepository>(&ns, "HelmRepositories").await;
    ns.cleanup().await;
}

/// Deletes every `K` of the namespace and waits (30 s) until the controller has released their
/// finalizers; `what` names them in the timeout message.
pub async fn delete_all<K>(ns: &TestNs, what: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: kube::Api<K> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let _ = api
        .delete_collection(&Default::default(), &Default::default())
        .await;
    wait_until(
        Duration::from_secs(30),
        &format!("{what} finalized"),
        || async {
            api.list(&Default::default())
                .await
                .is_ok_and(|l| l.items.is_empty())
        },
    )
    .await;
}

/// `flux <args> --kubeconfig <cluster> -n <ns>`: (success, stdout + stderr).
pub fn flux(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(super::flux())
        .args([
            "--kubeconfig",
            &kubeconfig_path(),
            "-n",
            ns,
            "--timeout",
            "60s",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("flux: {e} (run `e2e/cluster build`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ flux {} -n {ns}\n{text}", args.join(" "));
    (out.status.success(), text)
}

pub fn flux_ok(ns: &str, args: &[&str]) -> String {
    let (ok, text) = flux(ns, args);
    assert!(ok, "flux {args:?} failed:\n{text}");
    text
}

/// The source object `name` in the test namespace.
pub async fn get_source<K>(ns: &TestNs, name: &str) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `Ready` condition as (status, reason, message).
pub fn ready<K: Source>(r: &K) -> Option<(String, String, String)> {
    ready_of(r.conditions())
}

/// The `Ready` condition of `conditions` as (status, reason, message).
pub fn ready_of(
    conditions: &[pennant::api::source::Condition],
) -> Option<(String, String, String)> {
    let c = conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// An ArtifactGenerator's `Ready` condition as (status, reason, message).
pub fn generator_ready(
    g: &pennant::api::source::ArtifactGenerator,
) -> Option<(String, String, String)> {
    ready_of(&g.status.as_ref()?.conditions)
}

/// `status.artifact.revision`.
pub fn revision<K: Source>(r: &K) -> Option<String> {
    Some(r.artifact()?.revision.clone())
}

/// Waits (up to 60 s) until the source is Ready with an artifact of revision `rev`.
pub async fn wait_revision<K>(ns: &TestNs, name: &str, rev: &str) -> K
where
    K: Source
        + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let mut last = None;
    for _ in 0..120 {
        let r: K = get_source(ns, name).await;
        if revision(&r).as_deref() == Some(rev) && ready(&r).is_some_and(|(s, _, _)| s == "True") {
            return r;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{name} never stored {rev}: {last:#?}");
}

/// GETs a source's artifact from its URL; asserts the served bytes hash to `digest` and weigh
/// `size`; returns its regular files (path → UTF-8 content).
pub async fn download_artifact(
    a: &pennant::api::source::Artifact,
) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    use std::io::Read;
    let resp = reqwest::get(&a.url).await.expect("GET artifact");
    assert_eq!(resp.status(), 200, "{}", a.url);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(&bytes)),
        a.digest,
        "served bytes match status.artifact.digest"
    );
    assert_eq!(a.size, Some(bytes.len() as i64));
    let mut files = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            files.insert(path, s);
        }
    }
    files
}
