//! OCIRepositories reconciled by the source controller against the real local control plane,
//! the cluster's OCI registry (distribution, `e2e/cluster up`) and the real `flux` CLI: artifacts
//! pushed with `flux push artifact`, `flux get sources oci`, `flux reconcile source oci`.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use pennant::api::source::OCIRepository;
use sha2::Digest;
use support::gitserver::TempDir;
use support::registry::{flux_push, flux_push_version};
use support::sources::{cleanup, flux_ok, get_source, ready, revision, start_source_controller};
use support::*;

async fn oci_repo(ns: &TestNs, name: &str) -> OCIRepository {
    get_source(ns, name).await
}

async fn wait_revision(ns: &TestNs, name: &str, rev: &str) -> OCIRepository {
    support::sources::wait_revision(ns, name, rev).await
}

/// GET the artifact; asserts the served bytes hash to status's digest; returns the bytes.
async fn download(r: &OCIRepository) -> Vec<u8> {
    let a = r.status.as_ref().unwrap().artifact.as_ref().unwrap();
    let resp = reqwest::get(&a.url).await.expect("GET artifact");
    assert_eq!(resp.status(), 200, "{}", a.url);
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(&bytes)),
        a.digest,
        "served bytes match status.artifact.digest"
    );
    bytes
}

/// Files of a `tar.gz` (path → content).
fn files(tgz: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            out.insert(path, s);
        }
    }
    out
}

fn oci_repository_yaml(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n  insecure: true\n{extra}"
    )
}

/// The life of OCIRepositories through the `flux` CLI: a pushed artifact becomes Ready with
/// Flux's revision, file name and metadata; `flux get sources oci`; a tag re-pushed and
/// `flux reconcile source oci` gives the new revision; nothing is stored again when the digest
/// did not change; a semver ref moves to the newest tag; `copy` serves the layer as pushed.
#[tokio::test]
async fn oci_repository_lifecycle_through_the_flux_cli() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-oci", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    let push_dir = TempDir::new("pennant-oci-push");
    let addr = registry_addr();
    let repo = format!("{}/app", ns.name);
    let url = format!("oci://{addr}/{repo}");

    let d1 = flux_push(&addr, &repo, "v1", push_dir.path(), None);
    ns.apply_yaml(&oci_repository_yaml("app", &url, "  ref:\n    tag: v1\n"))
        .await;
    let rev1 = format!("v1@{d1}");
    let r = wait_revision(&ns, "app", &rev1).await;
    let st = r.status.clone().unwrap();
    let a = st.artifact.clone().unwrap();
    assert_eq!(
        a.path,
        format!("ocirepository/{}/app/{d1}.tar.gz", ns.name),
        "Flux's file name: the digest, colon included"
    );
    let meta = a.metadata.clone().unwrap_or_default();
    assert_eq!(
        meta.get("org.opencontainers.image.source")
            .map(String::as_str),
        Some("https://git.example.com/fleet.git"),
        "{meta:?}"
    );
    assert_eq!(
        meta.get("org.opencontainers.image.revision")
            .map(String::as_str),
        Some("v1@sha1:0123456789abcdef0123456789abcdef01234567")
    );
    assert!(
        st.url
            .as_deref()
            .unwrap_or_default()
            .ends_with("/latest.tar.gz"),
        "{:?}",
        st.url
    );
    assert!(
        r.metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .contains(&"finalizers.fluxcd.io".to_string())
    );
    let f = files(&download(&r).await);
    assert!(f["apps/cm.yaml"].contains("version: v1"), "{f:?}");
    assert!(f.contains_key("kustomization.yaml"), "{f:?}");

    let out = flux_ok(&ns.name, &["get", "sources", "oci"]);
    let line = out.lines().find(|l| l.starts_with("app")).expect(&out);
    assert!(line.contains("True"), "{line}");
    assert!(
        line.contains("stored artifact for revision 'v1@sha256:"),
        "{line}"
    );
    let stored = format!("stored artifact with revision '{rev1}' from '{url}'");
    let events = ns.event_messages_with("app", &stored).await;
    assert!(events.iter().any(|m| m.starts_with(&stored)), "{events:?}");

    // nothing new: reconciled on request, the same file, not stored again
    let before = a.last_update_time.clone();
    flux_ok(&ns.name, &["reconcile", "source", "oci", "app"]);
    let r = oci_repo(&ns, "app").await;
    assert_eq!(revision(&r).as_deref(), Some(rev1.as_str()));
    assert_eq!(
        r.status
            .as_ref()
            .unwrap()
            .artifact
            .as_ref()
            .unwrap()
            .last_update_time,
        before,
        "an unchanged digest is not downloaded or stored again"
    );

    // the tag re-pushed with new content: `flux reconcile` returns with the new revision
    let d2 = flux_push_version(&addr, &repo, "v1", "two", push_dir.path(), None);
    assert_ne!(d1, d2);
    let out = flux_ok(&ns.name, &["reconcile", "source", "oci", "app"]);
    assert!(out.contains(&format!("v1@{d2}")), "{out}");
    let r = wait_revision(&ns, "app", &format!("v1@{d2}")).await;
    assert!(files(&download(&r).await)["apps/cm.yaml"].contains("version: two"));

    // semver: the newest matching tag, moving when a newer one is pushed
    let s1 = flux_push(&addr, &repo, "1.0.0", push_dir.path(), None);
    flux_push(&addr, &repo, "2.0.0-rc.1", push_dir.path(), None);
    ns.apply_yaml(&oci_repository_yaml(
        "ranged",
        &url,
        "  ref:\n    semver: '>=1.0.0'\n",
    ))
    .await;
    wait_revision(&ns, "ranged", &format!("1.0.0@{s1}")).await;
    let s2 = flux_push(&addr, &repo, "1.1.0", push_dir.path(), None);
    flux_ok(&ns.name, &["reconcile", "source", "oci", "ranged"]);
    wait_revision(&ns, "ranged", &format!("1.1.0@{s2}")).await;

    // copy: the layer as pushed (its digest is the manifest's layer digest)
    ns.apply_yaml(&oci_repository_yaml(
        "copied",
        &url,
        "  ref:\n    tag: 1.1.0\n  layerSelector:\n    mediaType: application/vnd.cncf.flux.content.v1.tar+gzip\n    operation: copy\n",
    ))
    .await;
    let r = wait_revision(&ns, "copied", &format!("1.1.0@{s2}")).await;
    let manifest: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/v2/{repo}/manifests/1.1.0"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        r.status.as_ref().unwrap().artifact.as_ref().unwrap().digest,
        layer_digest,
        "copy keeps the layer's bytes"
    );
    assert!(files(&download(&r).await)["apps/cm.yaml"].contains("version: 1.1.0"));

    cleanup(ns).await;
}

/// A private registry: without the Secret the pull fails (`FetchFailed`), a
/// `.dockerconfigjson` Secret fixes it at once; a provider pennant cannot serve stalls.
#[tokio::test]
async fn oci_repository_auth_failure_recovers_and_unsupported_provider_stalls() {
    use support::registry::{REGISTRY_USER, Registry};
    let client = client().await;
    let ns = TestNs::new(&client, "src-oci-auth", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    let reg = Registry::start(Some(REGISTRY_USER));
    let (user, password) = REGISTRY_USER;
    let push_dir = TempDir::new("pennant-oci-push");
    let d1 = flux_push(
        &reg.addr,
        "team/app",
        "v1",
        push_dir.path(),
        Some(&format!("{user}:{password}")),
    );
    let url = format!("oci://{}/team/app", reg.addr);
    ns.apply_yaml(&oci_repository_yaml(
        "app",
        &url,
        "  ref:\n    tag: v1\n  secretRef:\n    name: regcred\n",
    ))
    .await;
    let mut last = None;
    for _ in 0..60 {
        let r = oci_repo(&ns, "app").await;
        if ready(&r).is_some_and(|(s, _, _)| s == "False") {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = last.expect("Ready=False without the Secret");
    let (_, reason, message) = ready(&r).unwrap();
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(message.contains("regcred"), "{message}");

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string();
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: NAMESPACE\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n"
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("v1@{d1}")).await;
    let (_, _, message) = ready(&r).unwrap();
    assert!(!message.contains(password));

    ns.apply_yaml(&oci_repository_yaml("aws", &url, "  provider: aws\n"))
        .await;
    wait_until(Duration::from_secs(30), "provider aws stalls", || async {
        oci_repo(&ns, "aws").await.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
    })
    .await;
    cleanup(ns).await;
}
