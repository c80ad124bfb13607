//! Kustomizations applied elsewhere or as someone else, end to end: `spec.kubeConfig` applies to
//! the second control plane started by `e2e/cluster up` (its admin kubeconfig in a Secret), and
//! `spec.serviceAccountName` impersonates a ServiceAccount whose Role decides what may be
//! applied. The real Git server, pennant's source and kustomize controllers in one process,
//! `kustomize` and the `flux` CLI.

mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use pennant::api::kustomization::Kustomization;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::kustomize::{
    CONFIG, commit_apps, get_ks, git_repository, inventory_ids, ready, remove_config,
    request_reconcile, wait_ready,
};
use support::sources::{
    cleanup, flux_ok, start_source_and_kustomize_controllers,
    start_source_and_kustomize_controllers_with,
};
use support::*;

/// Deletes the Kustomizations `names` and waits (30 s) until their finalizers are released.
async fn delete_all(api: &Api<Kustomization>, names: &[&str]) {
    for name in names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until(
        Duration::from_secs(30),
        "Kustomizations finalized",
        || async {
            let mut left = 0;
            for name in names {
                left += usize::from(api.get_opt(name).await.ok().flatten().is_some());
            }
            left == 0
        },
    )
    .await;
}

async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
        "data": {key: ByteString(value.as_bytes().to_vec())}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&s))
        .await
        .unwrap();
}

fn kustomization(name: &str, path: &str, ns: &str, extra: serde_json::Value) -> Kustomization {
    let mut spec = serde_json::json!({"interval": "10m", "retryInterval": "2s", "path": path,
        "prune": true, "targetNamespace": ns,
        "sourceRef": {"kind": "GitRepository", "name": "apps"}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// The overlay goes to the second cluster through `spec.kubeConfig.secretRef` (nothing local,
/// the inventory on the local Kustomization, the Deployment available there); a removed file
/// is pruned there; a kubeconfig pointing nowhere, a missing Secret and an `exec` plugin fail
/// with messages naming the Secret and leave the applied objects alone; a service account
/// is impersonated on the remote cluster; deleting the Kustomization prunes there.
#[tokio::test]
async fn kube_config_applies_prunes_and_deletes_on_the_second_cluster() {
    let client = client().await;
    let (remote, kubeconfig) = remote_client().await;
    let ns = TestNs::new(&client, "ks-remote", 0).await;
    let remote_ns: Api<Namespace> = Api::all(remote.clone());
    let ns_obj: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns.name}})).unwrap();
    remote_ns
        .patch(&ns.name, &PatchParams::apply("e2e"), &Patch::Apply(&ns_obj))
        .await
        .unwrap();
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha1 = commit_apps(&repo, 3);
    git_repository(&ns, "apps", &server.url("apps")).await;
    // Flux's default key: `value`
    put_secret(&client, &ns.name, "remote-kc", "value", &kubeconfig).await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    // wait: true: the health of the objects is read on the second cluster too
    let remote_spec =
        serde_json::json!({"kubeConfig": {"secretRef": {"name": "remote-kc"}}, "wait": true});
    api.create(
        &Default::default(),
        &kustomization("apps", "./apps/overlays/production", &ns.name, remote_spec),
    )
    .await
    .unwrap();

    let k = wait_ready(&ns, "apps", "ReconciliationSucceeded", &sha1).await;
    assert_eq!(
        inventory_ids(&k),
        [
            format!("{}_web-config__ConfigMap", ns.name),
            format!("{}_web_apps_Deployment", ns.name),
        ]
    );
    let healthy = k
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"));
    assert!(
        healthy.is_some_and(|c| c.status == "True" && c.message.starts_with("Health check passed")),
        "read on the second cluster (locally the Deployment does not exist): {healthy:?}"
    );
    let remote_deps: Api<Deployment> = Api::namespaced(remote.clone(), &ns.name);
    let d = remote_deps.get("web").await.expect("on the second cluster");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        d.metadata.labels.as_ref().unwrap()["kustomize.toolkit.fluxcd.io/name"],
        "apps"
    );
    assert!(
        ns.deployment("web").await.is_none(),
        "nothing applied locally"
    );
    assert!(ns.get("v1", "ConfigMap", "web-config").await.is_none());
    // the second plane runs pods: the Deployment becomes available there
    wait_until(
        Duration::from_secs(30),
        "remote Deployment available",
        || async {
            remote_deps
                .get("web")
                .await
                .is_ok_and(|d| d.status.and_then(|s| s.available_replicas) == Some(3))
        },
    )
    .await;
    let get = flux_ok(&ns.name, &["get", "ks", "apps"]);
    assert!(
        get.contains(&format!("Applied revision: main@sha1:{}", &sha1[..8])),
        "{get}"
    );

    // a file removed: pruned on the second cluster
    let sha2 = remove_config(&repo);
    flux_ok(&ns.name, &["reconcile", "source", "git", "apps"]);
    let k = wait_ready(&ns, "apps", "ReconciliationSucceeded", &sha2).await;
    assert_eq!(k.status.unwrap().inventory.unwrap().entries.len(), 1);
    let remote_cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(remote.clone(), &ns.name);
    assert!(
        remote_cms.get_opt("web-config").await.unwrap().is_none(),
        "pruned there"
    );

    // the Secret now points at a closed port: ReconciliationFailed naming it, nothing lost
    let closed = free_port();
    let server_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap();
    let nowhere = kubeconfig.replace(
        server_line,
        &format!("    server: https://127.0.0.1:{closed}"),
    );
    put_secret(&client, &ns.name, "remote-kc", "value", &nowhere).await;
    request_reconcile(&api, "apps", "nowhere").await;
    let k = wait_ready(&ns, "apps", "ReconciliationFailed", "remote-kc").await;
    let (st, _, message) = ready(&k).unwrap();
    assert_eq!(st, "False");
    assert!(
        message.starts_with(&format!(
            "unable to reach the cluster https://127.0.0.1:{closed} of KubeConfig secret '{}/remote-kc'",
            ns.name
        )),
        "{message}"
    );
    let status = k.status.unwrap();
    assert_eq!(status.inventory.unwrap().entries.len(), 1, "inventory kept");
    assert!(
        remote_deps.get_opt("web").await.unwrap().is_some(),
        "untouched"
    );
    let events = ns.events_with("apps", &[&message]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning" && *m == message),
        "{events:?}"
    );
    let key_data = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-key-data: "))
        .unwrap();
    for (_, m) in &events {
        assert!(
            !m.contains(&key_data[..40]),
            "secret content in an event: {m}"
        );
    }
    // back to the real kubeconfig: Ready again (a new resourceVersion, a new client)
    put_secret(&client, &ns.name, "remote-kc", "value", &kubeconfig).await;
    request_reconcile(&api, "apps", "back").await;
    wait_ready(&ns, "apps", "ReconciliationSucceeded", &sha2).await;

    // a missing Secret, a key that is not there, an exec plugin: clear failures, nothing applied
    put_secret(&client, &ns.name, "exec-kc", "value.yaml", &kubeconfig.replace(
        "    client-key-data:",
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/true\n    client-key-data:",
    ))
    .await;
    for (name, spec, want) in [
        (
            "absent",
            serde_json::json!({"kubeConfig": {"secretRef": {"name": "nope"}}}),
            format!(
                "unable to read KubeConfig secret '{}/nope' error: secrets \"nope\" not found",
                ns.name
            ),
        ),
        (
            "wrong-key",
            serde_json::json!({"kubeConfig": {"secretRef": {"name": "remote-kc", "key": "config"}}}),
            format!(
                "KubeConfig secret '{}/remote-kc' does not contain a 'config' key with a kubeconfig",
                ns.name
            ),
        ),
        (
            "plugin",
            serde_json::json!({"kubeConfig": {"secretRef": {"name": "exec-kc"}}}),
            format!(
                "KubeConfig secret '{}/exec-kc': kubeconfig refused: exec (allowed with \
                 --insecure-kubeconfig-exec) of the current context",
                ns.name
            ),
        ),
    ] {
        let mut k = kustomization(name, "./apps/overlays/production", &ns.name, spec);
        k.spec.target_namespace = Some(format!("{}-{name}", ns.name));
        api.create(&Default::default(), &k).await.unwrap();
        let k = wait_ready(&ns, name, "ReconciliationFailed", &want).await;
        assert_eq!(ready(&k).unwrap().2, want);
        let events = ns.events_with(name, &[&want]).await;
        assert!(
            events.iter().any(|(t, m)| t == "Warning" && *m == want),
            "{events:?}"
        );
        assert!(
            k.status
                .unwrap()
                .inventory
                .is_none_or(|i| i.entries.is_empty())
        );
    }

    // impersonation on the remote cluster: an account without rights there is forbidden
    let mut k = kustomization(
        "as-nobody",
        "./apps/overlays/production",
        &ns.name,
        serde_json::json!({"kubeConfig": {"secretRef": {"name": "remote-kc"}},
            "serviceAccountName": "nobody"}),
    );
    k.spec.target_namespace = Some(ns.name.clone());
    k.spec.name_prefix = Some("nobody-".into());
    api.create(&Default::default(), &k).await.unwrap();
    let k = wait_ready(&ns, "as-nobody", "ReconciliationFailed", "forbidden").await;
    let message = ready(&k).unwrap().2;
    assert!(
        message.contains(&format!("Deployment/{}/nobody-web", ns.name)),
        "{message}"
    );
    assert!(
        message.contains(&format!("system:serviceaccount:{}:nobody", ns.name)),
        "{message}"
    );
    assert!(remote_deps.get_opt("nobody-web").await.unwrap().is_none());

    // deletion prunes on the second cluster
    delete_all(
        &api,
        &["absent", "wrong-key", "plugin", "as-nobody", "apps"],
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "remote Deployment pruned",
        || async { remote_deps.get_opt("web").await.is_ok_and(|d| d.is_none()) },
    )
    .await;
    let _ = remote_ns.delete(&ns.name, &DeleteParams::default()).await;
    cleanup(ns).await;
}

/// `spec.serviceAccountName`: the account's Role allows ConfigMaps, so a ConfigMap is applied
/// (and pruned on deletion) as that account; a Secret it may not create is Ready=False
/// `ReconciliationFailed` naming the object and `forbidden`, nothing of it applied, and the
/// allowed Kustomization unaffected; `flux get ks` shows both. An account deleted before its
/// Kustomization: nothing pruned with the controller's rights, a Warning naming the objects.
#[tokio::test]
async fn service_account_impersonation_applies_what_it_may_and_names_what_it_may_not() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-sa", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers(&ns.name, storage.path());
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    repo.commit(
        "main",
        &[
            ("allowed/config.yaml", CONFIG),
            (
                "forbidden/config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other-config\ndata:\n  a: b\n",
            ),
            (
                "forbidden/secret.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: x\n",
            ),
        ],
        "a config and a secret",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n  namespace: NAMESPACE\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: configmaps\n  namespace: NAMESPACE\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"configmaps\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"update\", \"patch\", \"delete\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer-configmaps\n  namespace: NAMESPACE\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: configmaps\nsubjects:\n  - kind: ServiceAccount\n    name: deployer\n    namespace: NAMESPACE\n",
    )
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let sa = serde_json::json!({"serviceAccountName": "deployer"});
    api.create(
        &Default::default(),
        &kustomization("allowed", "./allowed", &ns.name, sa.clone()),
    )
    .await
    .unwrap();
    api.create(
        &Default::default(),
        &kustomization("forbidden", "./forbidden", &ns.name, sa),
    )
    .await
    .unwrap();

    wait_ready(
        &ns,
        "allowed",
        "ReconciliationSucceeded",
        "Applied revision",
    )
    .await;
    let cm = ns
        .get("v1", "ConfigMap", "web-config")
        .await
        .expect("applied");
    assert_eq!(cm["data"]["level"], "info");
    let k = wait_ready(&ns, "forbidden", "ReconciliationFailed", "forbidden").await;
    let (st, _, message) = ready(&k).unwrap();
    assert_eq!(st, "False");
    assert!(
        message.contains(&format!("Secret/{}/db", ns.name)),
        "names the object: {message}"
    );
    assert!(
        message.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(ns.get("v1", "Secret", "db").await.is_none());
    let events = ns.events_with("forbidden", &[&message]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning" && *m == message),
        "{events:?}"
    );
    // the allowed one is not affected
    let (st, reason, _) = ready(&get_ks(&ns, "allowed").await).unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("True", "ReconciliationSucceeded")
    );
    let get = flux_ok(&ns.name, &["get", "ks"]);
    let line = |name: &str| {
        get.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {get}"))
            .to_string()
    };
    assert!(line("allowed").contains("True"), "{get}");
    assert!(line("forbidden").contains("False"), "{get}");
    assert!(line("forbidden").contains("forbidden"), "{get}");

    // an account gone before the deletion: nothing pruned, the objects named (Flux's
    // CanImpersonate), the finalizer released
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: leaving\n  namespace: NAMESPACE\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: leaving-configmaps\n  namespace: NAMESPACE\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: configmaps\nsubjects:\n  - kind: ServiceAccount\n    name: leaving\n    namespace: NAMESPACE\n",
    )
    .await;
    let mut k = kustomization(
        "leaving",
        "./allowed",
        &ns.name,
        serde_json::json!({"serviceAccountName": "leaving"}),
    );
    k.spec.name_prefix = Some("left-".into());
    api.create(&Default::default(), &k).await.unwrap();
    wait_ready(
        &ns,
        "leaving",
        "ReconciliationSucceeded",
        "Applied revision",
    )
    .await;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns.name)
        .delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    delete_all(&api, &["leaving"]).await;
    assert!(
        ns.get("v1", "ConfigMap", "left-web-config").await.is_some(),
        "not pruned with the controller's own rights"
    );
    let want = format!(
        "unable to prune objects: \n{}_left-web-config__ConfigMap",
        ns.name
    );
    let events = ns.events_with("leaving", &[&want]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning" && *m == want),
        "{events:?}"
    );

    // deletion prunes as the account (it may delete ConfigMaps)
    delete_all(&api, &["allowed", "forbidden"]).await;
    assert!(
        ns.get("v1", "ConfigMap", "web-config").await.is_none(),
        "pruned on deletion"
    );
    cleanup(ns).await;
}

/// `--default-service-account` (Flux's multi-tenancy lockdown): a Kustomization without
/// `spec.serviceAccountName` applies as that account, which may not create a Secret here
/// (forbidden, named); one naming an account bound to `admin` applies as that one instead.
#[tokio::test]
async fn the_default_service_account_is_impersonated_unless_the_spec_names_one() {
    let client = client().await;
    let ns = TestNs::new(&client, "ks-defsa", 0).await;
    let storage = TempDir::new("pennant-storage");
    let (_ctl, _) = start_source_and_kustomize_controllers_with(
        &ns.name,
        storage.path(),
        &["--default-service-account", "tenant"],
    );
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    repo.commit(
        "main",
        &[(
            "secret/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: x\n",
        )],
        "a secret",
    );
    git_repository(&ns, "apps", &server.url("apps")).await;
    ns.apply_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ops\n  namespace: NAMESPACE\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: ops-admin\n  namespace: NAMESPACE\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: admin\nsubjects:\n  - kind: ServiceAccount\n    name: ops\n    namespace: NAMESPACE\n",
    )
    .await;
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let none = serde_json::json!({});
    api.create(
        &Default::default(),
        &kustomization("as-default", "./secret", &ns.name, none),
    )
    .await
    .unwrap();
    let k = wait_ready(&ns, "as-default", "ReconciliationFailed", "forbidden").await;
    let message = ready(&k).unwrap().2;
    assert!(
        message.contains(&format!("Secret/{}/db", ns.name))
            && message.contains(&format!("system:serviceaccount:{}:tenant", ns.name)),
        "{message}"
    );
    assert!(ns.get("v1", "Secret", "db").await.is_none());
    let ops = serde_json::json!({"serviceAccountName": "ops"});
    api.create(
        &Default::default(),
        &kustomization("as-ops", "./secret", &ns.name, ops),
    )
    .await
    .unwrap();
    wait_ready(&ns, "as-ops", "ReconciliationSucceeded", "Applied revision").await;
    assert!(ns.get("v1", "Secret", "db").await.is_some());
    delete_all(&api, &["as-default", "as-ops"]).await;
    cleanup(ns).await;
}
