//! The source controller against the real local control plane (`e2e/cluster up`), a real Git
//! server (`git http-backend`, `e2e/tools/gitserver.py`) and the real `flux` CLI (v2.9, built
//! by `e2e/cluster build`) as the client: `flux get sources git`, `flux reconcile source git`,
//! `flux suspend|resume`, `flux export`, `flux events`. Each test runs `pennant controller
//! --controllers source` scoped to its own namespace with its own storage directory.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pennant::api::source::GitRepository;
use sha2::Digest;
use support::gitserver::{GitServer, ServerOptions, TempDir, noise};
use support::sources::{
    cleanup, flux, flux_ok, get_source, ready, revision, start_source_controller,
};
use support::*;

async fn git_repo(ns: &TestNs, name: &str) -> GitRepository {
    get_source(ns, name).await
}

async fn wait_revision(ns: &TestNs, name: &str, rev: &str) -> GitRepository {
    support::sources::wait_revision(ns, name, rev).await
}

/// GET the artifact; asserts its digest is status's; returns its files (path → content).
async fn download(r: &GitRepository) -> BTreeMap<String, String> {
    let a = r.status.as_ref().unwrap().artifact.as_ref().unwrap();
    let resp = reqwest::get(&a.url).await.expect("GET artifact");
    assert_eq!(resp.status(), 200, "{}", a.url);
    let bytes = resp.bytes().await.unwrap();
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(
        digest, a.digest,
        "served bytes match status.artifact.digest"
    );
    assert_eq!(a.size, Some(bytes.len() as i64));
    let mut files = BTreeMap::new();
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

fn artifact_files(storage: &Path, ns: &str, name: &str) -> Vec<String> {
    let dir: PathBuf = storage.join("gitrepository").join(ns).join(name);
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn git_repository_yaml(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  url: {url}\n  interval: 10m\n{extra}"
    )
}

/// The whole life of a GitRepository through the `flux` CLI: Ready with Flux's revision, the
/// served artifact (digest, files, ignore rules), `flux reconcile` of a new commit, Events,
/// suspend/resume, export round trip, GC keeping the configured records, deletion.
#[tokio::test]
async fn git_repository_lifecycle_through_the_flux_cli() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-life", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _port) = start_source_controller(
        &ns.name,
        storage.path(),
        &["--artifact-retention-records", "2"],
    );
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha1 = repo.commit(
        "main",
        &[
            ("deploy/app.yaml", "kind: ConfigMap\n"),
            ("README.md", "docs\n"),
            ("logo.png", "png\n"),
            ("private/key.txt", "not for the cluster\n"),
            (".sourceignore", "/private/\n"),
        ],
        "first commit\n\nwith a body",
    );
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  ignore: |\n    *.md\n",
    ))
    .await;

    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha1}")).await;
    let out = flux_ok(&ns.name, &["get", "sources", "git"]);
    // `flux get` shortens the hash to 8 digits, in the revision and the message
    let short = format!("main@sha1:{}", &sha1[..8]);
    let line = out.lines().find(|l| l.starts_with("app")).expect(&out);
    assert!(line.contains(&short), "{line}");
    assert!(line.contains("True"), "{line}");
    assert!(
        line.contains(&format!("stored artifact for revision '{short}'")),
        "{line}"
    );
    assert!(
        r.metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .contains(&"finalizers.fluxcd.io".to_string())
    );
    assert_eq!(
        r.status.as_ref().unwrap().observed_ignore.as_deref(),
        Some("*.md\n")
    );

    let files = download(&r).await;
    assert_eq!(
        files.get("deploy/app.yaml").map(String::as_str),
        Some("kind: ConfigMap\n")
    );
    assert!(!files.contains_key("README.md"), "spec.ignore: {files:?}");
    assert!(
        !files.contains_key("private/key.txt"),
        ".sourceignore: {files:?}"
    );
    assert!(
        files.contains_key("logo.png"),
        "with a pattern, Flux's default exclusions do not apply: {files:?}"
    );
    assert!(!files.keys().any(|f| f.starts_with(".git")), "{files:?}");

    // a new commit, picked up on request: `flux reconcile` returns once pennant handled it
    let sha2 = repo.commit("main", &[("deploy/app.yaml", "kind: Secret\n")], "second");
    let out = flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    assert!(out.contains(&format!("main@sha1:{sha2}")), "{out}");
    let r = git_repo(&ns, "app").await;
    assert_eq!(revision(&r), Some(format!("main@sha1:{sha2}")));
    let token = r.metadata.annotations.as_ref().unwrap()["reconcile.fluxcd.io/requestedAt"].clone();
    assert_eq!(
        r.status
            .as_ref()
            .unwrap()
            .last_handled_reconcile_at
            .as_deref(),
        Some(token.as_str())
    );
    assert_eq!(download(&r).await["deploy/app.yaml"], "kind: Secret\n");

    // the artifact disappears from storage: the next reconcile stores it again (Flux's
    // reconcileStorage), same digest
    let a = r.status.as_ref().unwrap().artifact.clone().unwrap();
    std::fs::remove_file(storage.path().join(&a.path)).unwrap();
    assert_eq!(reqwest::get(&a.url).await.unwrap().status(), 404);
    flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    let r = git_repo(&ns, "app").await;
    assert_eq!(
        r.status.as_ref().unwrap().artifact.as_ref().unwrap().digest,
        a.digest
    );
    assert_eq!(download(&r).await["deploy/app.yaml"], "kind: Secret\n");

    // Events: NewArtifact with the commit's first line
    let out = flux_ok(&ns.name, &["events", "--for", "GitRepository/app"]);
    assert!(out.contains("NewArtifact"), "{out}");
    assert!(
        out.contains("stored artifact for commit 'first commit'"),
        "{out}"
    );
    assert!(out.contains("stored artifact for commit 'second'"), "{out}");

    // suspend: nothing happens (flux reconcile refuses); resume picks up the new commit
    flux_ok(&ns.name, &["suspend", "source", "git", "app"]);
    assert_eq!(git_repo(&ns, "app").await.spec.suspend, Some(true));
    let sha3 = repo.commit("main", &[("deploy/extra.yaml", "kind: Service\n")], "third");
    let (ok, out) = flux(&ns.name, &["reconcile", "source", "git", "app"]);
    assert!(!ok && out.contains("suspended"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        revision(&git_repo(&ns, "app").await),
        Some(format!("main@sha1:{sha2}"))
    );
    let out = flux_ok(&ns.name, &["resume", "source", "git", "app"]);
    assert!(out.contains(&format!("main@sha1:{sha3}")), "{out}");

    // GC: three artifacts written, two kept (--artifact-retention-records 2)
    let r = git_repo(&ns, "app").await;
    let kept = artifact_files(storage.path(), &ns.name, "app");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.contains(&format!("{sha3}.tar.gz")) && kept.contains(&format!("{sha2}.tar.gz")));
    assert!(download(&r).await.contains_key("deploy/extra.yaml"));

    // export round trip: what flux exports applies back unchanged
    let exported = flux_ok(&ns.name, &["export", "source", "git", "app"]);
    let doc = yaml_docs(&exported).remove(0);
    assert_eq!(doc["spec"]["url"], server.url("app"));
    assert_eq!(doc["spec"]["ref"]["branch"], "main");
    assert_eq!(doc["spec"]["ignore"], "*.md\n");
    assert_eq!(doc["spec"]["interval"], "10m0s");
    assert_eq!(
        doc["spec"]["timeout"], "1m0s",
        "the CRD's default, in Go's spelling"
    );
    // applied back (Go's duration spellings make it a new generation): same source, reconciled
    let mut again = doc.clone();
    again["metadata"]["namespace"] = ns.name.clone().into();
    apply(&client, &again).await;
    let back = git_repo(&ns, "app").await;
    assert_eq!(back.spec.url, r.spec.url);
    assert_eq!(back.spec.reference, r.spec.reference);
    assert_eq!(back.spec.ignore, r.spec.ignore);
    wait_until(
        Duration::from_secs(30),
        "the exported spec reconciled",
        || async {
            let b = git_repo(&ns, "app").await;
            b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
                && ready(&b).is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    assert_eq!(
        revision(&git_repo(&ns, "app").await),
        Some(format!("main@sha1:{sha3}"))
    );
    assert_eq!(
        artifact_files(storage.path(), &ns.name, "app").len(),
        2,
        "nothing rebuilt"
    );

    // deletion: the storage directory goes, then the finalizer
    let api: kube::Api<GitRepository> = kube::Api::namespaced(client.clone(), &ns.name);
    api.delete("app", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(30), "GitRepository deleted", || async {
        api.get_opt("app").await.unwrap().is_none()
    })
    .await;
    assert!(
        !storage
            .path()
            .join("gitrepository")
            .join(&ns.name)
            .join("app")
            .exists()
    );
    cleanup(ns).await;
}

/// `ref.semver` picks the newest matching tag and moves when a newer one is pushed.
#[tokio::test]
async fn semver_ref_moves_to_the_newest_matching_tag() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-semver", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    repo.commit("main", &[("v", "1.0.0")], "one");
    repo.tag("v1.0.0", false);
    let sha11 = repo.commit("main", &[("v", "1.1.0")], "one one");
    repo.tag("v1.1.0", true);
    repo.commit("main", &[("v", "2.0.0")], "two");
    repo.tag("v2.0.0", false);
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    semver: '>=1.0.0 <2.0.0'\n",
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("v1.1.0@sha1:{sha11}")).await;
    assert_eq!(download(&r).await["v"], "1.1.0");
    let sha12 = repo.commit("main", &[("v", "1.2.0")], "one two");
    repo.tag("v1.2.0", false);
    let out = flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    assert!(out.contains(&format!("v1.2.0@sha1:{sha12}")), "{out}");
    let out = flux_ok(&ns.name, &["get", "sources", "git", "app"]);
    assert!(
        out.contains(&format!("v1.2.0@sha1:{}", &sha12[..8])),
        "{out}"
    );

    // unchanged remote: a request lists the refs and downloads nothing; status writes do not
    // wake the controller (Flux's predicate), so a steady state makes no request at all
    let (packs, requests) = (server.fetch_count(), server.requests().len());
    flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    assert_eq!(server.fetch_count(), packs, "{:?}", server.requests());
    assert!(server.requests().len() > requests, "the refs were listed");
    let requests = server.requests().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.requests().len(), requests, "{:?}", server.requests());
    cleanup(ns).await;
}

/// A wrong password: `Ready=False` with `AuthenticationFailed`, the password nowhere in status
/// or Events; a missing Secret says so; fixing the Secret makes it Ready without waiting for
/// the interval (the Secret is watched).
#[tokio::test]
async fn auth_failure_is_fetch_failed_and_recovers_when_the_secret_is_fixed() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-auth", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, port) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions {
        user: Some("git:right-pass".into()),
        ..Default::default()
    });
    let repo = server.create_repo("app");
    let sha = repo.commit("main", &[("a.yaml", "a: 1\n")], "first");

    // no Secret yet
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  secretRef:\n    name: creds\n",
    ))
    .await;
    wait_until(
        Duration::from_secs(30),
        "FetchFailed for the missing Secret",
        || async {
            let r = git_repo(&ns, "app").await;
            ready(&r).is_some_and(|(s, reason, m)| {
                s == "False"
                    && reason == "AuthenticationFailed"
                    && m.contains("secrets \"creds\" not found")
            })
        },
    )
    .await;

    let secret = |password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: NAMESPACE\nstringData:\n  username: git\n  password: {password}\n"
        )
    };
    ns.apply_yaml(&secret("Wr0ng-Pa55word")).await;
    wait_until(Duration::from_secs(30), "AuthenticationFailed", || async {
        let r = git_repo(&ns, "app").await;
        ready(&r).is_some_and(|(s, reason, m)| {
            s == "False" && reason == "AuthenticationFailed" && !m.contains("not found")
        })
    })
    .await;
    let r = git_repo(&ns, "app").await;
    let status = serde_json::to_string(&r.status).unwrap();
    assert!(!status.contains("Wr0ng-Pa55word"), "{status}");
    let fetch_failed = r
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "FetchFailed");
    assert!(fetch_failed.is_some_and(|c| c.status == "True"), "{status}");
    // Flux's retry state: Reconciling=True ProgressingWithRetry; the generation never
    // reconciled is not observed
    let st = r.status.as_ref().unwrap();
    assert!(
        st.conditions.iter().any(|c| c.type_ == "Reconciling"
            && c.status == "True"
            && c.reason == "ProgressingWithRetry"),
        "{status}"
    );
    assert_ne!(st.observed_generation, r.metadata.generation, "{status}");
    let out = flux_ok(&ns.name, &["get", "sources", "git", "app"]);
    assert!(out.contains("False"), "{out}");
    let events = ns.event_messages_with("app", "authentication").await;
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|m| !m.contains("Wr0ng-Pa55word")),
        "{events:?}"
    );
    // As with Flux, kstatus reads Ready=False as InProgress: `flux reconcile` waits for its
    // timeout, then fails.
    let (ok, out) = flux(
        &ns.name,
        &["reconcile", "source", "git", "app", "--timeout", "5s"],
    );
    assert!(!ok, "{out}");
    assert!(!out.contains("Wr0ng-Pa55word"));

    // Counted by the error policy, after the status is written.
    let failed = r#"pennant_reconcile_errors_total{controller="source",reason="source"}"#;
    let metrics = wait_http_until(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(30),
        |m| m.contains(failed),
    )
    .await;
    assert!(metrics.contains(failed), "{metrics}");

    // fixed: Ready within seconds (the interval is 10m)
    ns.apply_yaml(&secret("right-pass")).await;
    wait_revision(&ns, "app", &format!("main@sha1:{sha}")).await;
    let r = git_repo(&ns, "app").await;
    assert!(
        !r.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "FetchFailed")
    );
    cleanup(ns).await;
}

/// The Git server goes away: the last artifact stays served and the status says both.
#[tokio::test]
async fn an_unreachable_server_keeps_the_last_artifact_served() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-down", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha = repo.commit("main", &[("a.yaml", "a: 1\n")], "first");
    let url = server.url("app");
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &url,
        "  ref:\n    branch: main\n",
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha}")).await;
    drop(server);
    let (ok, out) = flux(
        &ns.name,
        &["reconcile", "source", "git", "app", "--timeout", "5s"],
    );
    assert!(!ok, "{out}");
    let r2 = git_repo(&ns, "app").await;
    let conds = &r2.status.as_ref().unwrap().conditions;
    let is = |t: &str, s: &str| conds.iter().any(|c| c.type_ == t && c.status == s);
    assert!(
        is("Ready", "False") && is("FetchFailed", "True") && is("ArtifactInStorage", "True"),
        "{conds:#?}"
    );
    assert_eq!(revision(&r2), revision(&r));
    assert_eq!(download(&r2).await["a.yaml"], "a: 1\n", "still served");
    cleanup(ns).await;
}

/// `spec.include`: another GitRepository's artifact (its `fromPath`) is copied to `toPath`; a
/// missing one is `IncludeUnavailable`, and the include's new revision is picked up.
#[tokio::test]
async fn include_copies_another_repositorys_artifact() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-include", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions::default());
    let app = server.create_repo("app");
    let app_sha = app.commit("main", &[("app.yaml", "app: 1\n")], "app");
    let lib = server.create_repo("lib");
    let lib_sha = lib.commit(
        "main",
        &[("manifests/lib.yaml", "lib: 1\n"), ("other/x.yaml", "x\n")],
        "lib",
    );
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  include:\n  - repository:\n      name: lib\n    fromPath: manifests\n    toPath: vendor/lib\n",
    ))
    .await;
    wait_until(Duration::from_secs(30), "IncludeUnavailable", || async {
        let r = git_repo(&ns, "app").await;
        ready(&r).is_some_and(|(s, _, m)| s == "False" && m.contains("include 'lib'"))
    })
    .await;
    let conds = git_repo(&ns, "app").await.status.unwrap().conditions;
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "IncludeUnavailable" && c.status == "True"),
        "{conds:#?}"
    );

    ns.apply_yaml(&git_repository_yaml(
        "lib",
        &server.url("lib"),
        "  ref:\n    branch: main\n",
    ))
    .await;
    wait_revision(&ns, "lib", &format!("main@sha1:{lib_sha}")).await;
    // lib's new artifact wakes app (no request, no interval)
    let r = wait_revision(&ns, "app", &format!("main@sha1:{app_sha}")).await;
    let files = download(&r).await;
    assert_eq!(
        files.get("vendor/lib/lib.yaml").map(String::as_str),
        Some("lib: 1\n"),
        "{files:?}"
    );
    assert!(files.contains_key("app.yaml"));
    assert!(
        !files.keys().any(|f| f.contains("other/")),
        "only fromPath: {files:?}"
    );
    let st = r.status.as_ref().unwrap();
    assert_eq!(st.included_artifacts.len(), 1);
    assert_eq!(st.observed_include.len(), 1);

    // a new revision of the include rebuilds the artifact (same commit of app), at once
    let lib_sha2 = lib.commit("main", &[("manifests/lib.yaml", "lib: 2\n")], "lib 2");
    flux_ok(&ns.name, &["reconcile", "source", "git", "lib"]);
    let digest = st.artifact.as_ref().unwrap().digest.clone();
    wait_until(
        Duration::from_secs(20),
        "app rebuilt with lib 2",
        || async {
            let r = git_repo(&ns, "app").await;
            r.status
                .as_ref()
                .and_then(|s| s.included_artifacts.first())
                .is_some_and(|a| a.revision == format!("main@sha1:{lib_sha2}"))
                && r.status.as_ref().unwrap().artifact.as_ref().unwrap().digest != digest
        },
    )
    .await;
    let r = git_repo(&ns, "app").await;
    assert_eq!(download(&r).await["vendor/lib/lib.yaml"], "lib: 2\n");
    cleanup(ns).await;
}

/// The other `secretRef` shapes end to end: ssh (`identity` + `known_hosts`, Debian's sshd) and
/// https with a private CA (`ca.crt`) and a bearer token; without the CA the fetch fails.
#[tokio::test]
async fn ssh_and_https_with_a_private_ca_from_the_secret() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let client = client().await;
    let ns = TestNs::new(&client, "src-creds", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns.name);
    let put = |name: &str, data: Vec<(&str, Vec<u8>)>| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    };

    // ssh
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha = repo.commit("main", &[("a.yaml", "a: ssh\n")], "over ssh");
    let sshd = support::gitserver::SshServer::start(&server.root);
    secrets
        .create(
            &Default::default(),
            &put(
                "ssh",
                vec![
                    ("identity", sshd.identity.clone()),
                    ("known_hosts", sshd.known_hosts.clone()),
                ],
            ),
        )
        .await
        .unwrap();
    ns.apply_yaml(&git_repository_yaml(
        "over-ssh",
        &sshd.url("app"),
        "  ref:\n    branch: main\n  secretRef:\n    name: ssh\n",
    ))
    .await;
    let r = wait_revision(&ns, "over-ssh", &format!("main@sha1:{sha}")).await;
    assert_eq!(download(&r).await["a.yaml"], "a: ssh\n");

    // https with a private CA and a bearer token
    let tls_dir = TempDir::new("pennant-tls");
    let (ca, cert, key) = support::gitserver::make_tls(tls_dir.path());
    let https = GitServer::start(ServerOptions {
        token: Some("t0ken".into()),
        tls: Some((cert, key)),
        ..Default::default()
    });
    let repo = https.create_repo("app");
    let sha = repo.commit("main", &[("a.yaml", "a: tls\n")], "over https");
    secrets
        .create(
            &Default::default(),
            &put("tls", vec![("bearerToken", b"t0ken".to_vec())]),
        )
        .await
        .unwrap();
    ns.apply_yaml(&git_repository_yaml(
        "over-https",
        &https.url("app"),
        "  ref:\n    branch: main\n  secretRef:\n    name: tls\n",
    ))
    .await;
    wait_until(Duration::from_secs(30), "unknown CA refused", || async {
        let r = git_repo(&ns, "over-https").await;
        ready(&r).is_some_and(|(s, reason, _)| s == "False" && reason == "GitOperationFailed")
    })
    .await;
    // the CA added to the Secret: picked up through the Secret watch
    secrets
        .replace(
            "tls",
            &Default::default(),
            &put(
                "tls",
                vec![
                    ("bearerToken", b"t0ken".to_vec()),
                    ("ca.crt", std::fs::read(ca).unwrap()),
                ],
            ),
        )
        .await
        .unwrap();
    let r = wait_revision(&ns, "over-https", &format!("main@sha1:{sha}")).await;
    assert_eq!(download(&r).await["a.yaml"], "a: tls\n");
    cleanup(ns).await;
}

/// Status is the only memory: a new process with the same storage serves the stored artifact
/// without fetching the tree again; one with an empty storage (a restarted pod's emptyDir)
/// rebuilds the very same bytes, and the URL follows the new address.
#[tokio::test]
async fn a_restarted_controller_resumes_from_status_and_storage() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-restart", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (mut ctl, port) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let sha = repo.commit("main", &[("a.yaml", "a: 1\n")], "first");
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n",
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha}")).await;
    let a = r.status.as_ref().unwrap().artifact.clone().unwrap();
    assert!(a.url.contains(&format!("127.0.0.1:{port}/")), "{}", a.url);
    // the Event follows the status: wait for it, or the kill can come in between
    let first = ns.event_messages_with("app", "stored artifact").await;
    assert!(
        first.iter().any(|m| m.starts_with("stored artifact")),
        "the first artifact is news: {first:?}"
    );
    ctl.kill();

    // same storage: verified, nothing downloaded, nothing new
    let packs = server.fetch_count();
    let (mut ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    assert_eq!(
        server.fetch_count(),
        packs,
        "the stored artifact was reused"
    );
    let r = git_repo(&ns, "app").await;
    assert_eq!(
        r.status.as_ref().unwrap().artifact.as_ref().unwrap().digest,
        a.digest
    );
    ctl.kill();

    // empty storage: rebuilt, byte for byte, served at the new address
    let empty = TempDir::new("pennant-storage");
    let (_ctl, port2) = start_source_controller(&ns.name, empty.path(), &[]);
    flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    let r = git_repo(&ns, "app").await;
    let b = r.status.as_ref().unwrap().artifact.clone().unwrap();
    assert_eq!(
        (b.digest.as_str(), b.path.as_str()),
        (a.digest.as_str(), a.path.as_str())
    );
    assert!(b.url.contains(&format!("127.0.0.1:{port2}/")), "{}", b.url);
    assert_eq!(download(&r).await["a.yaml"], "a: 1\n");
    let log_path = ControllerProcess::log_path(&format!("source-{}", ns.name));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("caches synced") && !log.contains('\u{1b}'),
        "a text log written to a file has no colour codes: {log_path}"
    );
    assert_eq!(
        ns.event_messages_with("app", "stored artifact")
            .await
            .iter()
            .filter(|m| m.starts_with("stored artifact"))
            .count(),
        1,
        "the same artifact again is no news"
    );
    cleanup(ns).await;
}

/// Deleted while its fetch runs: the finished fetch records nothing (no status, no
/// `NewArtifact` Event) and the deletion removes the object.
#[tokio::test]
async fn deleted_mid_fetch_records_no_new_artifact() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-delmid", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions {
        rate: Some(100_000),
        ..Default::default()
    });
    let repo = server.create_repo("big");
    repo.commit("main", &[("blob.txt", &noise(2_000_000))], "big");
    ns.apply_yaml(&git_repository_yaml(
        "big",
        &server.url("big"),
        "  ref:\n    branch: main\n",
    ))
    .await;
    // the progress write comes just before the fetch
    wait_until(Duration::from_secs(30), "Reconciling", || async {
        let r = git_repo(&ns, "big").await;
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.reason == "Progressing")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api: kube::Api<GitRepository> = kube::Api::namespaced(client.clone(), &ns.name);
    api.delete("big", &Default::default())
        .await
        .expect("delete");
    wait_until(Duration::from_secs(90), "the object gone", || async {
        api.get_opt("big").await.expect("get").is_none()
    })
    .await;
    let events = ns.events("big").await;
    assert!(
        events.iter().all(|(_, m)| !m.contains("stored artifact")),
        "{events:?}"
    );
}

/// SIGTERM during a slow fetch: the fetch is interrupted, the process exits at once and its
/// temporary checkout is gone.
#[tokio::test]
async fn shutdown_interrupts_a_fetch_and_leaves_no_temporary_files() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-stop", 0).await;
    let storage = TempDir::new("pennant-storage");
    let tmp = TempDir::new("pennant-tmpdir");
    let args = [
        "--controllers",
        "source",
        "--storage-path",
        storage.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let mut ctl = ControllerProcess::start_with(
        &ns.name,
        &format!("source-{}", ns.name),
        &kubeconfig_path(),
        &args,
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let server = GitServer::start(ServerOptions {
        rate: Some(50_000),
        ..Default::default()
    });
    let repo = server.create_repo("big");
    repo.commit("main", &[("blob.txt", &noise(2_000_000))], "big");
    ns.apply_yaml(&git_repository_yaml(
        "big",
        &server.url("big"),
        "  ref:\n    branch: main\n",
    ))
    .await;
    wait_until(Duration::from_secs(30), "Reconciling", || async {
        let r = git_repo(&ns, "big").await;
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.reason == "Progressing")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pennant-git"))
            .collect::<Vec<_>>()
    };
    assert!(!left().is_empty(), "the fetch works under TMPDIR");
    let start = std::time::Instant::now();
    let code = ctl.terminate(Duration::from_secs(10));
    assert!(
        code.is_some(),
        "had to be killed after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(left().is_empty(), "{:?}", left());
    // a controller again, to release the finalizer: the object deleted first, or the new
    // controller may start the slow fetch (about 40 s) again before it sees the deletion
    let api: kube::Api<GitRepository> = kube::Api::namespaced(client.clone(), &ns.name);
    api.delete("big", &Default::default())
        .await
        .expect("delete");
    let (_ctl, _port) = start_source_controller(&ns.name, storage.path(), &[]);
    cleanup(ns).await;
}

/// `spec.recurseSubmodules`: the artifact holds each submodule's files at the commit the parent
/// records (relative and absolute URLs, basic auth on both from the parent's Secret), the
/// revision stays the parent's; bumping the submodule pointer is a new revision; a submodule
/// that cannot be fetched is `FetchFailed` naming it, and the last artifact stays served.
#[tokio::test]
async fn recurse_submodules_serves_each_submodule_at_its_recorded_commit() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-submod", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions {
        user: Some("git:sub-pass".into()),
        ..Default::default()
    });
    let lib = server.create_repo("lib");
    let lib_v1 = lib.commit("main", &[("lib.yaml", "lib: 1\n")], "lib 1");
    let lib_v2 = lib.commit("main", &[("lib.yaml", "lib: 2\n")], "lib 2");
    let tools = server.create_repo("tools");
    let tools_sha = tools.commit("main", &[("tool.yaml", "tool: 1\n")], "tools");
    let app = server.create_repo("app");
    app.set_submodule("libs/lib", "../lib.git", &lib_v1);
    app.set_submodule("vendor/tools", &server.url("tools"), &tools_sha);
    let sha1 = app.commit("main", &[("app.yaml", "app: 1\n")], "app with lib 1");
    ns.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: NAMESPACE\nstringData:\n  username: git\n  password: sub-pass\n",
    )
    .await;
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  secretRef:\n    name: creds\n  recurseSubmodules: true\n",
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha1}")).await;
    let st = r.status.as_ref().unwrap();
    assert_eq!(st.observed_recurse_submodules, Some(true));
    assert!(
        !st.conditions.iter().any(|c| c.type_ == "Unsupported"),
        "{:#?}",
        st.conditions
    );
    let files = download(&r).await;
    assert_eq!(
        files.get("libs/lib/lib.yaml").map(String::as_str),
        Some("lib: 1\n"),
        "the recorded commit, not lib's HEAD: {files:?}"
    );
    assert_eq!(
        files.get("vendor/tools/tool.yaml").map(String::as_str),
        Some("tool: 1\n"),
        "{files:?}"
    );
    assert!(files.contains_key("app.yaml"));

    // the parent now records lib 2: a new revision with lib 2's files
    app.set_submodule("libs/lib", "../lib.git", &lib_v2);
    let sha2 = app.commit("main", &[], "bump lib to 2");
    flux_ok(&ns.name, &["reconcile", "source", "git", "app"]);
    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha2}")).await;
    let files = download(&r).await;
    assert_eq!(files["libs/lib/lib.yaml"], "lib: 2\n");
    // poll for this artifact's Event: the first one is there already
    let new_artifacts = ns.event_messages_with("app", "bump lib to 2").await;
    assert!(
        new_artifacts.iter().any(|m| m.contains("bump lib to 2")),
        "{new_artifacts:?}"
    );

    // a submodule that does not exist: FetchFailed naming it; lib 2's artifact stays served
    app.set_submodule("libs/gone", "../gone.git", &lib_v1);
    app.commit("main", &[], "a submodule that does not exist");
    let (ok, out) = flux(
        &ns.name,
        &["reconcile", "source", "git", "app", "--timeout", "10s"],
    );
    assert!(!ok, "{out}");
    wait_until(
        Duration::from_secs(30),
        "FetchFailed for the submodule",
        || async {
            let r = git_repo(&ns, "app").await;
            ready(&r).is_some_and(|(s, reason, m)| {
                s == "False"
                    && reason == "GitOperationFailed"
                    && m.contains("failed to update submodule 'libs/gone' from '../gone.git'")
            })
        },
    )
    .await;
    let r = git_repo(&ns, "app").await;
    let st = r.status.as_ref().unwrap();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "FetchFailed" && c.status == "True"),
        "{:#?}",
        st.conditions
    );
    assert_eq!(revision(&r), Some(format!("main@sha1:{sha2}")));
    assert_eq!(download(&r).await["libs/lib/lib.yaml"], "lib: 2\n");
    let status = serde_json::to_string(&r.status).unwrap();
    assert!(!status.contains("sub-pass"), "{status}");
    cleanup(ns).await;
}

/// `spec.sparseCheckout`: only the named directories are in the artifact; a directory that
/// is not in the repository is `FetchFailed` with Flux's message.
#[tokio::test]
async fn sparse_checkout_serves_only_the_named_directories() {
    let client = client().await;
    let ns = TestNs::new(&client, "src-sparse", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_controller(&ns.name, storage.path(), &[]);
    let server = GitServer::start(ServerOptions::default());
    let app = server.create_repo("app");
    let sha = app.commit(
        "main",
        &[
            ("apps/a.yaml", "a\n"),
            ("infra/b.yaml", "b\n"),
            ("README.md", "hi\n"),
        ],
        "first",
    );
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  sparseCheckout:\n  - ./apps\n",
    ))
    .await;
    let r = wait_revision(&ns, "app", &format!("main@sha1:{sha}")).await;
    let files: Vec<String> = download(&r).await.into_keys().collect();
    assert_eq!(files, ["apps/a.yaml"]);
    assert_eq!(
        r.status.as_ref().unwrap().observed_sparse_checkout,
        ["./apps"]
    );
    ns.apply_yaml(&git_repository_yaml(
        "app",
        &server.url("app"),
        "  ref:\n    branch: main\n  sparseCheckout:\n  - ./apps\n  - nope\n",
    ))
    .await;
    wait_until(Duration::from_secs(30), "FetchFailed for 'nope'", || async {
        let r = git_repo(&ns, "app").await;
        ready(&r).is_some_and(|(s, _, m)| {
            s == "False"
                && m == "failed to sparse checkout directories : sparse checkout dir 'nope' does not exist in repository"
        })
    })
    .await;
    assert_eq!(
        revision(&git_repo(&ns, "app").await),
        Some(format!("main@sha1:{sha}"))
    );
    cleanup(ns).await;
}
