//! HelmReleases released to another cluster, end to end: `spec.kubeConfig.secretRef` names a
//! Secret holding the admin kubeconfig of the second control plane started by `e2e/cluster up`;
//! pennant's source and helm controllers in one process on the local cluster, a real HTTP Helm
//! repository, the real `helm` CLI (v4) as the engine and, with the remote kubeconfig, as the
//! witness (`helm history`, `helm list`).

mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use pennant::api::helm_release::HelmRelease;
use serde_json::{Value, json};
use support::helmrepo::HelmRepo;
use support::hr::{
    cond, delete_releases, get_hr, helm_history_at, helm_json_at, helm_repository, history,
    hr_yaml, is_ready, request_reconcile, start_controllers, wait_hr, warnings_with,
};
use support::sources::cleanup;
use support::*;

async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
        "data": {key: ByteString(value.as_bytes().to_vec())}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&s))
        .await
        .unwrap();
}

/// The release names `helm list` shows in `ns` with `kubeconfig`.
fn helm_list(kubeconfig: &str, ns: &str) -> Vec<String> {
    helm_json_at(kubeconfig, ns, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// `pennant <args>` with the local cluster's kubeconfig: (exit code, stdout, stderr).
fn pennant(args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[("PENNANT_HELM", helm())])
}

/// The names of Helm's release Secrets (`owner=helm`) in `ns` through `client`.
async fn release_secrets(client: &Client, ns: &str) -> Vec<String> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect()
}

async fn remote_namespace(remote: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(remote.clone())
        .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&ns))
        .await
        .unwrap();
}

async fn remote_message(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("web-app")
        .await
        .unwrap()
        .and_then(|c| c.data)
        .and_then(|d| d.get("message").cloned())
}

/// Install on the second cluster (status = the remote `helm history`, nothing local but the
/// HelmRelease and its HelmChart), `pennant diff hr` diffs against the remote release and
/// objects, a values change upgrades there, drift of a remote object is
/// corrected there, and deleting the HelmRelease uninstalls there.
#[tokio::test]
async fn kube_config_installs_upgrades_corrects_and_uninstalls_on_the_second_cluster() {
    let client = client().await;
    let (remote, kubeconfig) = remote_client().await;
    let ns = TestNs::new(&client, "hrkc-remote", 0).await;
    remote_namespace(&remote, &ns.name).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    // Flux's default key: `value`
    put_secret(&client, &ns.name, "remote-kc", "value", &kubeconfig).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  kubeConfig:\n    secretRef:\n      name: remote-kc\n  driftDetection:\n    mode: enabled\n",
    ))
    .await;

    let h = wait_hr(&ns, "web", "installed on the second cluster", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;
    assert_eq!(
        cond(&h, "Ready").unwrap().2,
        format!(
            "Helm install succeeded for release {}/web.v1 with chart app@1.0.0",
            ns.name
        )
    );
    assert_eq!(
        h.status.as_ref().unwrap().storage_namespace.as_deref(),
        Some(ns.name.as_str())
    );
    assert_eq!(history(&h), vec![(1, "deployed".to_string())]);
    assert_eq!(
        helm_history_at(&remote_kubeconfig_path(), &ns.name, "web"),
        vec![(1, "deployed".to_string())],
        "the remote helm storage has the release"
    );
    assert_eq!(
        release_secrets(&remote, &ns.name).await,
        ["sh.helm.release.v1.web.v1"]
    );
    assert!(
        release_secrets(&client, &ns.name).await.is_empty(),
        "no release stored locally"
    );
    assert!(
        helm_list(&kubeconfig_path(), &ns.name).is_empty(),
        "local helm list is empty"
    );
    assert!(
        ns.get("v1", "ConfigMap", "web-app").await.is_none(),
        "the chart's ConfigMap is not on the local cluster"
    );
    let cms: Api<ConfigMap> = Api::namespaced(remote.clone(), &ns.name);
    assert_eq!(remote_message(&cms).await.as_deref(), Some("hello"));
    assert!(
        ns.get(
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            &format!("{}-web", ns.name)
        )
        .await
        .is_some(),
        "the generated HelmChart stays on the local cluster"
    );

    // `pennant diff hr` reads storage and dry-runs on the second cluster: nothing changed,
    // then (suspended) a values change shows as the remote ConfigMap configured
    let n = ns.name.as_str();
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("► HelmRelease/{n}/web app@1.0.0 unchanged")),
        "{out}"
    );
    let hrs = Api::<HelmRelease>::namespaced(client.clone(), &ns.name);
    let patch = |p: Value| {
        let hrs = hrs.clone();
        async move {
            hrs.patch("web", &PatchParams::default(), &Patch::Merge(&p))
                .await
                .unwrap();
        }
    };
    patch(json!({"spec": {"suspend": true, "values": {"message": "changed"}}})).await;
    let (code, out, err) = pennant(&["diff", "hr", "web", "-n", n]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("► ConfigMap/{n}/web-app configured"))
            && out.contains("+  message: changed"),
        "the live object is the remote one: {out}"
    );
    assert_eq!(
        helm_history_at(&remote_kubeconfig_path(), n, "web").len(),
        1,
        "the diff wrote nothing"
    );

    // a values change upgrades on the second cluster
    patch(json!({"spec": {"suspend": false}})).await;
    let h = wait_hr(&ns, "web", "upgraded on the second cluster", |h| {
        is_ready(h, "True", "UpgradeSucceeded")
    })
    .await;
    assert_eq!(
        history(&h),
        vec![(2, "deployed".to_string()), (1, "superseded".to_string())]
    );
    assert_eq!(
        helm_history_at(&remote_kubeconfig_path(), &ns.name, "web"),
        vec![(1, "superseded".to_string()), (2, "deployed".to_string())]
    );
    assert_eq!(remote_message(&cms).await.as_deref(), Some("changed"));
    assert!(release_secrets(&client, &ns.name).await.is_empty());

    // drift of the remote ConfigMap is corrected there, without a new revision
    cms.patch(
        "web-app",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"message": "tampered"}})),
    )
    .await
    .unwrap();
    request_reconcile(&ns, "web").await;
    wait_until(
        Duration::from_secs(60),
        "remote drift corrected",
        || async { remote_message(&cms).await.as_deref() == Some("changed") },
    )
    .await;
    let events = ns.events_with("web", &["has been corrected"]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Normal"
            && m.starts_with(&format!(
                "Cluster state of release {}/web.v2 has been corrected",
                ns.name
            ))
            && m.contains("web-app")),
        "{events:?}"
    );
    assert_eq!(
        helm_history_at(&remote_kubeconfig_path(), &ns.name, "web").len(),
        2,
        "no new revision"
    );

    // deletion uninstalls on the second cluster
    delete_releases(&ns).await;
    assert!(
        helm_list(&remote_kubeconfig_path(), &ns.name).is_empty(),
        "uninstalled there"
    );
    assert!(release_secrets(&remote, &ns.name).await.is_empty());
    wait_until(Duration::from_secs(30), "remote ConfigMap gone", || async {
        cms.get_opt("web-app").await.unwrap().is_none()
    })
    .await;
    let events = ns.events_with("web", &["Helm uninstall succeeded"]).await;
    assert!(
        events.iter().any(|(t, m)| t == "Normal"
            && m == &format!("Helm uninstall succeeded for release {}/web", ns.name)),
        "{events:?}"
    );
    let _ = Api::<Namespace>::all(remote)
        .delete(&ns.name, &DeleteParams::default())
        .await;
    cleanup(ns).await;
}

/// A Secret without the kubeconfig key, a missing Secret and a kubeconfig pointing at a closed
/// port: `Ready=False` with helm-controller's `RESTClientError` and a Warning naming the Secret
/// (never its content); a `configMapRef` is refused (`Stalled`); no release on either cluster; a HelmRelease of the local cluster in
/// the same namespace is released meanwhile, and the broken ones are deleted without blocking.
#[tokio::test]
async fn a_broken_kube_config_fails_with_fluxs_reason_and_releases_nothing() {
    let client = client().await;
    let (remote, kubeconfig) = remote_client().await;
    let ns = TestNs::new(&client, "hrkc-broken", 0).await;
    remote_namespace(&remote, &ns.name).await;
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    put_secret(&client, &ns.name, "no-key", "config", &kubeconfig).await;
    let closed = free_port();
    let server_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap();
    let nowhere = kubeconfig.replace(
        server_line,
        &format!("    server: https://127.0.0.1:{closed}"),
    );
    put_secret(&client, &ns.name, "nowhere", "value.yaml", &nowhere).await;
    let kc = |secret: &str| format!("  kubeConfig:\n    secretRef:\n      name: {secret}\n");
    ns.apply_yaml(&hr_yaml("nokey", "app", "1.0.0", &kc("no-key")))
        .await;
    ns.apply_yaml(&hr_yaml("absent", "app", "1.0.0", &kc("absent")))
        .await;
    ns.apply_yaml(&hr_yaml("unreachable", "app", "1.0.0", &kc("nowhere")))
        .await;
    ns.apply_yaml(&hr_yaml(
        "identity",
        "app",
        "1.0.0",
        "  kubeConfig:\n    configMapRef:\n      name: cluster\n",
    ))
    .await;
    ns.apply_yaml(&hr_yaml("local", "app", "1.0.0", "")).await;

    let secret = |name: &str| format!("{}/{name}", ns.name);
    let cases = [
        (
            "nokey",
            format!(
                "KubeConfig secret '{}' does not contain a 'value' or 'value.yaml' key with data",
                secret("no-key")
            ),
        ),
        (
            "absent",
            format!(
                "could not get KubeConfig secret '{}': secrets \"absent\" not found",
                secret("absent")
            ),
        ),
        (
            "unreachable",
            format!(
                "unable to reach the cluster https://127.0.0.1:{closed} of KubeConfig secret '{}'",
                secret("nowhere")
            ),
        ),
    ];
    // the key material of the kubeconfig, never in a message
    let key_data = kubeconfig
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("client-key-data:"))
        .and_then(|k| k.trim().get(40..72).map(String::from));
    for (name, message) in &cases {
        let h = wait_hr(&ns, name, "RESTClientError", |h| {
            is_ready(h, "False", "RESTClientError")
        })
        .await;
        let got = cond(&h, "Ready").unwrap().2;
        assert!(got.starts_with(message.as_str()), "{name}: {got}");
        assert!(
            cond(&h, "Stalled").is_none(),
            "{name}: retried, not stalled"
        );
        if let Some(k) = &key_data {
            assert!(!got.contains(k.as_str()), "{name}: {got}");
        }
        let warnings = warnings_with(&ns, name, message).await;
        assert!(
            !warnings.is_empty(),
            "{name}: a Warning Event names the Secret"
        );
        assert!(history(&h).is_empty(), "{name}: nothing released");
    }
    // workload identity: refused (Stalled), never released locally instead
    let h = wait_hr(&ns, "identity", "configMapRef refused", |h| {
        is_ready(h, "False", "UnsupportedField")
    })
    .await;
    let (_, _, m) = cond(&h, "Stalled").expect("Stalled");
    assert!(
        m.starts_with("spec.kubeConfig.configMapRef is not supported yet: nothing is released"),
        "{m}"
    );
    assert!(
        !warnings_with(&ns, "identity", "configMapRef")
            .await
            .is_empty()
    );
    // the local HelmRelease of the same controller is served meanwhile
    wait_hr(&ns, "local", "local release installed", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;
    assert_eq!(helm_list(&kubeconfig_path(), &ns.name), ["local"]);
    assert!(
        helm_list(&remote_kubeconfig_path(), &ns.name).is_empty(),
        "nothing on the second cluster"
    );
    assert!(release_secrets(&remote, &ns.name).await.is_empty());
    assert_eq!(
        release_secrets(&client, &ns.name).await,
        ["sh.helm.release.v1.local.v1"]
    );
    for name in ["nokey", "absent", "unreachable", "identity"] {
        assert!(
            get_hr(&ns, name)
                .await
                .unwrap()
                .status
                .unwrap()
                .storage_namespace
                .is_none(),
            "{name}: never installed"
        );
    }
    // never installed: the deletion releases the finalizers at once
    delete_releases(&ns).await;
    assert!(helm_list(&kubeconfig_path(), &ns.name).is_empty());
    let _ = Api::<Namespace>::all(remote)
        .delete(&ns.name, &DeleteParams::default())
        .await;
    cleanup(ns).await;
}

/// `serviceAccountName` with `kubeConfig`: Helm acts as the account on the second cluster (it
/// exists only there). A Role on Secrets only (Helm's storage) fails the install of the chart's
/// ConfigMap naming the account; bound
/// to `admin`, the next attempt installs.
#[tokio::test]
async fn the_service_account_is_impersonated_on_the_second_cluster() {
    let client = client().await;
    let (remote, kubeconfig) = remote_client().await;
    let ns = TestNs::new(&client, "hrkc-sa", 0).await;
    remote_namespace(&remote, &ns.name).await;
    let user = format!("system:serviceaccount:{}:deployer", ns.name);
    let rbac: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "deployer", "namespace": ns.name}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "storage-only", "namespace": ns.name},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "deployer", "namespace": ns.name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "storage-only"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                             "namespace": ns.name}]}),
    ];
    for o in &rbac {
        let (ar, _) = kube::discovery::pinned_kind(
            &remote,
            &kube::api::GroupVersionKind::try_from(
                &serde_json::from_value::<kube::api::TypeMeta>(o.clone()).unwrap(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        let obj: kube::api::DynamicObject = serde_json::from_value(o.clone()).unwrap();
        Api::<kube::api::DynamicObject>::namespaced_with(remote.clone(), &ns.name, &ar)
            .patch(
                obj.metadata.name.as_deref().unwrap(),
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap();
    }
    let storage = tempfile::tempdir().unwrap();
    let _ctl = start_controllers(&ns.name, &ns.name, "source,helm", storage.path(), &[]);
    let repo = HelmRepo::start(None);
    repo.add_chart("app", "1.0.0");
    helm_repository(&ns, &repo.url).await;
    put_secret(&client, &ns.name, "remote-kc", "value", &kubeconfig).await;
    ns.apply_yaml(&hr_yaml(
        "web",
        "app",
        "1.0.0",
        "  serviceAccountName: deployer\n  kubeConfig:\n    secretRef:\n      name: remote-kc\n",
    ))
    .await;
    let h = wait_hr(&ns, "web", "install forbidden for the account", |h| {
        cond(h, "Ready").is_some_and(|(s, _, m)| s == "False" && m.contains(&user))
    })
    .await;
    let (_, reason, message) = cond(&h, "Ready").unwrap();
    assert!(
        message.contains("configmaps") && message.contains("forbidden"),
        "{reason}: {message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(remote.clone(), &ns.name);
    assert!(cms.get_opt("web-app").await.unwrap().is_none());

    // bound to `admin` in the namespace: installed as the account
    let admin = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer-admin", "namespace": ns.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns.name}]});
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(admin).unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(remote.clone(), &ns.name)
        .patch(
            "deployer-admin",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&rb),
        )
        .await
        .unwrap();
    Api::<HelmRelease>::namespaced(client.clone(), &ns.name)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"values": {"message": "as deployer"}}})),
        )
        .await
        .unwrap();
    wait_hr(&ns, "web", "installed as the account", |h| {
        cond(h, "Ready").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(remote_message(&cms).await.as_deref(), Some("as deployer"));
    assert!(
        ns.get("v1", "ConfigMap", "web-app").await.is_none(),
        "nothing local"
    );
    delete_releases(&ns).await;
    assert!(helm_list(&remote_kubeconfig_path(), &ns.name).is_empty());
    let _ = Api::<Namespace>::all(remote)
        .delete(&ns.name, &DeleteParams::default())
        .await;
    cleanup(ns).await;
}
