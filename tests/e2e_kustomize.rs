//! The kustomize controller end to end: the real Git server, pennant's source controller and
//! kustomize controller in one process (`--controllers source,kustomize`), the real `kustomize`
//! and the `flux` CLI as the client. A repository with `apps/base` and
//! `apps/overlays/production` (a replica patch) is applied, changed, pruned and broken.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use pennant::api::kustomization::Kustomization;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::kustomize::*;
use support::sources::{cleanup, flux_ok, start_source_and_kustomize_controllers};
use support::*;

#[tokio::test]
async fn kustomization_applies_updates_prunes_and_survives_a_broken_commit() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-life", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha1 = commit_apps(&repo, 3);
    git_repository(&ns, "apps", &server.url("apps")).await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    api.create(&Default::default(), &ks("apps", &ns.name))
        .await
        .unwrap();

    // applied: the production replicas, the owner labels, the inventory in status
    let k = wait_ks(&ns, "apps", &sha1, "ReconciliationSucceeded").await;
    let status = k.status.clone().unwrap();
    assert_eq!(
        ready(&k).unwrap().2,
        format!("Applied revision: main@sha1:{sha1}")
    );
    assert_eq!(
        status.last_applied_revision,
        Some(format!("main@sha1:{sha1}"))
    );
    assert_eq!(
        inventory_ids(&k),
        [
            format!("{}_web-config__ConfigMap", ns.name),
            format!("{}_web_apps_Deployment", ns.name),
        ]
    );
    assert_eq!(status.history.len(), 1);
    let d = ns.deployment("web").await.expect("the Deployment");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    let labels = d.metadata.labels.clone().unwrap();
    assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "apps");
    assert_eq!(labels["kustomize.toolkit.fluxcd.io/namespace"], ns.name);
    let created = format!("Deployment/{}/web created", ns.name);
    let events = ns.event_messages_with("apps", &created).await;
    assert!(events.iter().any(|m| m.contains(&created)), "{events:?}");

    // a new commit changing the patch: picked up from the source's new revision
    let sha2 = repo.commit(
        "main",
        &[("apps/overlays/production/kustomization.yaml", &overlay(5))],
        "production at 5",
    );
    flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    wait_ks(&ns, "apps", &sha2, "ReconciliationSucceeded").await;
    let d = ns.deployment("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));

    // a file removed: its object pruned, the inventory shrinks
    let sha3 = remove_config(&repo);
    flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    let k = wait_ks(&ns, "apps", &sha3, "ReconciliationSucceeded").await;
    assert!(
        ns.get("v1", "ConfigMap", "web-config").await.is_none(),
        "pruned"
    );
    assert_eq!(k.status.unwrap().inventory.unwrap().entries.len(), 1);

    // the flux CLI reads the status and the inventory
    let get = flux_ok(&ns.name, &["get", "ks", "apps"]);
    assert!(
        get.contains(&format!("Applied revision: main@sha1:{}", &sha3[..8])),
        "{get}"
    );
    assert!(get.contains("True"), "{get}");
    let tree = flux_ok(&ns.name, &["tree", "ks", "apps"]);
    assert!(
        tree.contains(&format!("Deployment/{}/web", ns.name)),
        "{tree}"
    );
    assert!(!tree.contains("web-config"), "{tree}");
    // an on-demand reconcile: the token echoed, the revision reported
    let out = flux_ok(&ns.name, &["reconcile", "ks", "apps"]);
    assert!(
        out.contains(&format!("applied revision main@sha1:{sha3}")),
        "{out}"
    );
    let finished = |m: &str| {
        m.starts_with("Reconciliation finished in ") && m.ends_with(", next run in 10m0s")
    };
    let events = ns
        .events_until("apps", |events| events.iter().any(|(_, m)| finished(m)))
        .await;
    assert!(events.iter().any(|(_, m)| finished(m)), "{events:?}");

    // a broken YAML commit: BuildFailed, the previous objects stay
    let sha4 = repo.commit(
        "main",
        &[(
            "apps/base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: [unclosed\n",
        )],
        "broken",
    );
    flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    let k = wait_ks(&ns, "apps", &sha4, "BuildFailed").await;
    let (st, _, message) = ready(&k).unwrap();
    assert_eq!(st, "False");
    assert!(message.contains("deployment.yaml"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    let status = k.status.unwrap();
    assert_eq!(
        status.last_applied_revision,
        Some(format!("main@sha1:{sha3}"))
    );
    assert_eq!(status.inventory.unwrap().entries.len(), 1);
    let d = ns.deployment("web").await.expect("still there");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));
    let warnings = ns.events_with("apps", &[&message]).await;
    assert!(
        warnings
            .iter()
            .any(|(t, m)| t == "Warning" && *m == message),
        "{warnings:?}"
    );

    // deletion prunes (MirrorPrune with prune: true) and releases the finalizer
    api.delete("apps", &Default::default()).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "Kustomization finalized",
        || async { api.get_opt("apps").await.is_ok_and(|k| k.is_none()) },
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_until(Duration::from_secs(30), "Deployment pruned", || async {
        deps.get_opt("web").await.is_ok_and(|d| d.is_none())
    })
    .await;
    cleanup(ns).await;
}

/// The `flux` CLI's write commands on a pennant Kustomization: `suspend ks` stops applies (a new
/// source revision is not applied), `resume ks` applies it and waits for Ready, `reconcile ks
/// --with-source` fetches a new commit and applies it in one command, and `events` lists the
/// Kustomization's Events.
#[tokio::test]
async fn flux_cli_suspends_resumes_and_reconciles_with_source() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-cli", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha1 = commit_apps(&repo, 2);
    git_repository(&ns, "apps", &server.url("apps")).await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    api.create(&Default::default(), &ks("apps", &ns.name))
        .await
        .unwrap();
    wait_ks(&ns, "apps", &sha1, "ReconciliationSucceeded").await;

    // suspended: the source moves on, the Kustomization does not
    let out = flux_ok(&ns.name, &["suspend", "ks", "apps"]);
    assert!(out.contains("suspend"), "{out}");
    assert_eq!(get_ks(&ns, "apps").await.spec.suspend, Some(true));
    let sha2 = repo.commit(
        "main",
        &[("apps/overlays/production/kustomization.yaml", &overlay(4))],
        "production at 4",
    );
    let out = flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    assert!(out.contains(&sha2[..8]), "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let k = get_ks(&ns, "apps").await;
    assert_eq!(
        k.status.unwrap().last_applied_revision,
        Some(format!("main@sha1:{sha1}")),
        "a suspended Kustomization applies nothing"
    );
    assert_eq!(
        ns.deployment("web").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );
    let get = flux_ok(&ns.name, &["get", "ks", "apps"]);
    let row: Vec<&str> = get
        .lines()
        .find(|l| l.starts_with("apps\t") || l.starts_with("apps "))
        .unwrap_or_else(|| panic!("{get}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2], "True", "SUSPENDED column: {get}");

    // resumed: the waiting revision applied before `flux resume` returns
    let out = flux_ok(&ns.name, &["resume", "ks", "apps"]);
    assert!(
        out.contains(&format!("applied revision main@sha1:{sha2}")),
        "{out}"
    );
    assert_eq!(
        ns.deployment("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );

    // one command: the source fetched, then the Kustomization applied
    let sha3 = repo.commit(
        "main",
        &[("apps/overlays/production/kustomization.yaml", &overlay(6))],
        "production at 6",
    );
    let out = flux_ok(&ns.name, &["reconcile", "ks", "apps", "--with-source"]);
    assert!(
        out.contains(&format!("applied revision main@sha1:{sha3}")),
        "{out}"
    );
    assert_eq!(
        ns.deployment("web").await.unwrap().spec.unwrap().replicas,
        Some(6)
    );

    // `flux events` lists this Kustomization's Events (the change set of the last apply)
    wait_until(Duration::from_secs(30), "flux events", || async {
        let out = flux_ok(&ns.name, &["events", "--for", "Kustomization/apps"]);
        out.contains(&format!("Deployment/{}/web configured", ns.name))
    })
    .await;
    cleanup(ns).await;
}

/// A Kustomization naming a missing source is `ArtifactFailed` with Flux's message; once the
/// source exists it applies within moments of the source's first artifact, with postBuild
/// variables from a ConfigMap (an `optional` missing one skipped); fields not implemented yet
/// give `Unsupported=True` and a Warning Event without blocking the apply.
#[tokio::test]
async fn missing_source_substitution_and_unsupported_fields() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-subst", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("cfg");
    let sha = repo.commit(
        "main",
        &[
            (
                "deploy/config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: ${cluster_env}\n  region: ${region:=eu}\n",
            ),
            (
                "refused/config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: refused\ndata:\n  a: b\n",
            ),
        ],
        "templated config",
    );
    ns.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster-vars\n  namespace: NAMESPACE\ndata:\n  cluster_env: staging\n",
    )
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let k: Kustomization = serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "cfg"},
        "spec": {"interval": "10m", "retryInterval": "1m", "path": "./deploy", "prune": true,
            "targetNamespace": ns.name, "wait": true,
            "decryption": {"provider": "sops", "serviceAccountName": "kms"},
            "commonMetadata": {"labels": {"team": "web"}, "annotations": {"owner": "${cluster_env}"}},
            "sourceRef": {"kind": "GitRepository", "name": "cfg"},
            "postBuild": {"substituteFrom": [
                {"kind": "ConfigMap", "name": "cluster-vars"},
                {"kind": "Secret", "name": "absent", "optional": true}]}}
    }))
    .unwrap();
    api.create(&Default::default(), &k).await.unwrap();
    let want = format!("Source 'GitRepository/{}/cfg' not found", ns.name);
    wait_until(Duration::from_secs(30), "ArtifactFailed", || async {
        get_ks(&ns, "cfg").await.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "ArtifactFailed" && c.message == want)
        })
    })
    .await;

    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: cfg\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n",
        server.url("cfg")
    ))
    .await;
    // from the source's new artifact to the Kustomization's attempt (the retry interval is 1m)
    let git: Api<pennant::api::source::GitRepository> = Api::namespaced(client.clone(), &ns.name);
    wait_until(Duration::from_secs(30), "artifact", || async {
        git.get("cfg")
            .await
            .is_ok_and(|g| g.status.and_then(|s| s.artifact).is_some())
    })
    .await;
    let t0 = std::time::Instant::now();
    let k = wait_ks(&ns, "cfg", &sha, "ReconciliationSucceeded").await;
    let lag = t0.elapsed();
    println!("source artifact -> Kustomization applied: {lag:?}");
    assert!(lag < Duration::from_secs(5), "{lag:?}");
    let cm = ns
        .get("v1", "ConfigMap", "settings")
        .await
        .expect("applied");
    assert_eq!(cm["data"]["env"], "staging");
    assert_eq!(cm["data"]["region"], "eu");
    // commonMetadata is added after substitution: its values are not substituted
    assert_eq!(cm["metadata"]["labels"]["team"], "web");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "${cluster_env}");
    // wait: true over ConfigMaps (always Current): healthy at once
    let healthy = k
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Healthy");
    assert!(
        healthy.is_some_and(|c| c.status == "True" && c.message.starts_with("Health check passed in ")),
        "{healthy:?}"
    );
    let unsupported = k
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Unsupported")
        .expect("Unsupported condition");
    assert_eq!(unsupported.status, "True");
    assert!(
        unsupported
            .message
            .contains("spec.decryption.serviceAccountName"),
        "{}",
        unsupported.message
    );
    let events = ns.events_with("cfg", &[&unsupported.message]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && *m == unsupported.message),
        "{events:?}"
    );
    // kubeConfig.configMapRef (workload identity): refused, never applied locally instead
    for (name, field, extra) in [(
        "workload-identity",
        "spec.kubeConfig.configMapRef",
        serde_json::json!({"kubeConfig": {"configMapRef": {"name": "cluster"}}}),
    )] {
        let mut spec = serde_json::json!({"interval": "10m", "path": "./refused", "prune": true,
            "targetNamespace": ns.name,
            "sourceRef": {"kind": "GitRepository", "name": "cfg"}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let k: Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        api.create(&Default::default(), &k).await.unwrap();
        wait_until(Duration::from_secs(30), "Stalled", || async {
            get_ks(&ns, name).await.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
            })
        })
        .await;
        let (status, reason, message) = ready(&get_ks(&ns, name).await).expect("Ready");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "UnsupportedField")
        );
        assert!(
            message.starts_with(&format!("{field} is not supported yet: nothing is applied")),
            "{message}"
        );
        let events = ns.events_with(name, &[&message]).await;
        assert!(
            events.iter().any(|(t, m)| t == "Warning" && *m == message),
            "{events:?}"
        );
        assert!(
            ns.get("v1", "ConfigMap", "refused").await.is_none(),
            "{field}: nothing applied"
        );
        api.delete(name, &Default::default()).await.unwrap();
    }
    api.delete("cfg", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(30), "finalized", || async {
        api.get_opt("cfg").await.is_ok_and(|k| k.is_none())
    })
    .await;
    assert!(
        ns.get("v1", "ConfigMap", "settings").await.is_none(),
        "pruned on deletion"
    );
    cleanup(ns).await;
}

/// A Secret encrypted by the real `sops` for an age key, and an encrypted dotenv input of a
/// secretGenerator, are applied decrypted with the key in `spec.decryption.secretRef`; with a wrong key the run is `BuildFailed` with Flux's
/// `decryption failed for '<res id>'` message, the Secret applied before stays, and neither
/// the plaintext nor any key material shows in status or Events. The first run is seen in
/// progress (Ready=Unknown, Reconciling "Fetching/Building manifests ..."), never Stalled.
#[tokio::test]
async fn sops_encrypted_secret_is_decrypted_with_the_age_key() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-sops", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let work = TempDir::new("pennant-sops");
    let key = age_key(work.path(), "right.agekey");
    let wrong = age_key(work.path(), "wrong.agekey");
    let plaintext = "s3cr3t-PLAINTEXT-value";
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {plaintext}\n"
    );
    let flags = ["--encrypted-regex", "^(data|stringData)$"];
    let out = sops_encrypt(
        work.path(),
        "secret.yaml",
        secret.as_bytes(),
        &[&key],
        &flags,
    );
    let encrypted = String::from_utf8(out).unwrap();
    // a secretGenerator input (dotenv) encrypted too, decrypted in the build's temp copy; for
    // both keys, so that with the "wrong" one the Secret's own decryption is what fails
    let env_plain = format!("API_TOKEN=gen-{plaintext}\n");
    let env = sops_encrypt(
        work.path(),
        "app.env",
        env_plain.as_bytes(),
        &[&key, &wrong],
        &[],
    );
    let env = String::from_utf8(env).unwrap();
    assert!(!env.contains(plaintext));
    const GENERATOR: &str = "resources:\n  - secret.yaml\nsecretGenerator:\n  - name: generated\n    envs:\n      - app.env\ngeneratorOptions:\n  disableNameSuffixHash: true\n";
    assert!(!encrypted.contains(plaintext));

    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("secrets");
    let sha = repo.commit(
        "main",
        &[
            ("deploy/secret.yaml", encrypted.as_str()),
            ("deploy/app.env", env.as_str()),
            ("deploy/kustomization.yaml", GENERATOR),
        ],
        "encrypted secret",
    );
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: secrets\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n",
        server.url("secrets")
    ))
    .await;
    let key_secret = |k: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-age"},
            "stringData": {"identity.agekey": k}
        }))
        .unwrap()
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(&Default::default(), &key_secret(&key.file))
        .await
        .unwrap();
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let k: Kustomization = serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "secrets"},
        "spec": {"interval": "10m", "retryInterval": "2s", "path": "./deploy", "prune": true,
            "targetNamespace": ns.name,
            "sourceRef": {"kind": "GitRepository", "name": "secrets"},
            "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}
    }))
    .unwrap();
    // every status version the API server holds, to see the in-progress conditions
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        use futures::StreamExt;
        let seen = seen.clone();
        use kube::runtime::watcher::Event;
        let stream = kube::runtime::watcher(
            api.clone(),
            kube::runtime::watcher::Config::default().fields("metadata.name=secrets"),
        );
        let (listed, wait_listed) = tokio::sync::oneshot::channel();
        let mut listed = Some(listed);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(e) = stream.next().await {
                let k = match e {
                    Ok(Event::Apply(k) | Event::InitApply(k)) => k,
                    Ok(Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let _ = l.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let conds: Vec<(String, String, String)> = k
                    .status
                    .map(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (c.type_, c.status, c.message))
                    .collect();
                seen.lock().unwrap().push(conds);
            }
        });
        wait_listed.await.expect("watch started");
        task
    };
    api.create(&Default::default(), &k).await.unwrap();
    let k = wait_ks(&ns, "secrets", &sha, "ReconciliationSucceeded").await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    for step in ["Fetching", "Building"] {
        let want = format!("{step} manifests for revision main@sha1:{sha} with a timeout of 9m30s");
        assert!(
            seen.iter().any(
                |c| c.contains(&("Reconciling".into(), "True".into(), want.clone()))
                    && c.iter().any(|(t, s, _)| t == "Ready" && s == "Unknown")
            ),
            "no {want:?} with Ready=Unknown in {seen:?}"
        );
    }
    assert!(
        !seen
            .iter()
            .any(|c| c.iter().any(|(t, _, _)| t == "Reconciling")
                && c.iter().any(|(t, _, _)| t == "Stalled")),
        "{seen:?}"
    );
    assert!(
        !k.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Unsupported"),
        "decryption is no longer reported unsupported"
    );
    let applied = ns.get("v1", "Secret", "db").await.expect("applied");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let password = b64
        .decode(applied["data"]["password"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(password).unwrap(), plaintext);
    assert!(applied.get("sops").is_none());
    let generated = ns
        .get("v1", "Secret", "generated")
        .await
        .expect("generated");
    let token = b64
        .decode(generated["data"]["API_TOKEN"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(token).unwrap(),
        format!("gen-{plaintext}")
    );

    // a wrong key: BuildFailed naming the object, the Secret stays, no secret anywhere
    secrets
        .replace("sops-age", &Default::default(), &{
            let mut s = key_secret(&wrong.file);
            s.metadata.resource_version = secrets
                .get("sops-age")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    request_reconcile(&api, "secrets", "wrong-key").await;
    let k = wait_ks(&ns, "secrets", &sha, "BuildFailed").await;
    let (status, _, message) = ready(&k).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.starts_with(&format!(
            "decryption failed for 'Secret.v1.[noGrp]/db.{}': ",
            ns.name
        )),
        "{message}"
    );
    let applied = ns.get("v1", "Secret", "db").await.expect("not pruned");
    assert_eq!(
        b64.decode(applied["data"]["password"].as_str().unwrap())
            .unwrap(),
        plaintext.as_bytes()
    );
    let events = ns.events_with("secrets", &["decryption failed for"]).await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Warning" && m.starts_with("decryption failed for")),
        "{events:?}"
    );
    let everything = format!("{}{events:?}", serde_json::to_string(&k.status).unwrap());
    for needle in [plaintext, "AGE-SECRET-KEY-"] {
        assert!(
            !everything.contains(needle),
            "{needle} leaked: {everything}"
        );
    }

    // the decryption Secret missing: Flux's message, still nothing pruned
    secrets
        .delete("sops-age", &Default::default())
        .await
        .unwrap();
    request_reconcile(&api, "secrets", "no-secret").await;
    let want = format!(
        "cannot get sops decryption Secret '{}/sops-age': secrets \"sops-age\" not found",
        ns.name
    );
    wait_until(Duration::from_secs(30), "missing key Secret", || async {
        ready(&get_ks(&ns, "secrets").await)
            .is_some_and(|(_, r, m)| r == "BuildFailed" && m == want)
    })
    .await;
    assert!(ns.get("v1", "Secret", "db").await.is_some(), "not pruned");
    cleanup(ns).await;
}

/// `spec.dependsOn`: a Kustomization whose dependency is missing or not Ready is
/// `DependencyNotReady` with Flux's message and applies nothing; once the dependency is Ready
/// it is applied (woken by the dependency turning Ready, not the 30 s requeue). A dependency
/// cycle is `Stalled` naming the cycle.
#[tokio::test]
async fn depends_on_waits_for_the_dependency_and_names_a_cycle() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-deps", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("deps");
    repo.commit(
        "main",
        &[
            (
                "a/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-a\ndata:\n  a: \"1\"\n",
            ),
            (
                "b/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-b\ndata:\n  b: \"1\"\n",
            ),
        ],
        "two layers",
    );
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: deps\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 10m\n  ref:\n    branch: main\n",
        server.url("deps")
    ))
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let mk = |name: &str, path: &str, deps: &[&str]| -> Kustomization {
        let deps: Vec<_> = deps
            .iter()
            .map(|d| serde_json::json!({"name": d}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name},
            "spec": {"interval": "10m", "path": path, "prune": true, "targetNamespace": ns.name,
                "dependsOn": deps, "sourceRef": {"kind": "GitRepository", "name": "deps"}}
        }))
        .unwrap()
    };
    api.create(&Default::default(), &mk("b", "./b", &["a"]))
        .await
        .unwrap();
    let want = format!(
        "dependency '{}/a' not found: kustomizations.kustomize.toolkit.fluxcd.io \"a\" not found",
        ns.name
    );
    wait_until(Duration::from_secs(60), "DependencyNotReady", || async {
        ready(&get_ks(&ns, "b").await)
            .is_some_and(|(s, r, m)| s == "False" && r == "DependencyNotReady" && m == want)
    })
    .await;
    assert!(
        ns.get("v1", "ConfigMap", "from-b").await.is_none(),
        "nothing applied while the dependency is missing"
    );
    api.create(&Default::default(), &mk("a", "./a", &[]))
        .await
        .unwrap();
    wait_until(Duration::from_secs(70), "b applied", || async {
        ns.get("v1", "ConfigMap", "from-b").await.is_some()
    })
    .await;
    let a = get_ks(&ns, "a").await;
    assert_eq!(
        ready(&a).map(|(s, r, _)| (s, r)),
        Some(("True".into(), "ReconciliationSucceeded".into())),
        "b applied only after a is Ready"
    );
    assert!(ns.get("v1", "ConfigMap", "from-a").await.is_some());
    wait_until(Duration::from_secs(30), "b Ready", || async {
        ready(&get_ks(&ns, "b").await).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    // a cycle: c -> d -> c is Stalled, named
    api.create(&Default::default(), &mk("c", "./a", &["d"]))
        .await
        .unwrap();
    api.create(&Default::default(), &mk("d", "./a", &["c"]))
        .await
        .unwrap();
    let want = format!("dependency cycle: {0}/c -> {0}/d -> {0}/c", ns.name);
    wait_until(Duration::from_secs(30), "cycle", || async {
        let k = get_ks(&ns, "c").await;
        let stalled = k.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True" && c.message == want)
        });
        stalled && ready(&k).is_some_and(|(s, r, _)| s == "False" && r == "DependencyCycle")
    })
    .await;
    for n in ["a", "b", "c", "d"] {
        api.delete(n, &Default::default()).await.unwrap();
    }
    cleanup(ns).await;
}
