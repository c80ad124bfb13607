//! `pennant::apply::ssa` against the real local control plane (`e2e/cluster up`): staged
//! server-side apply with the change set, writes only on diff, `ssa` policies, `force`
//! recreation of an immutable field, CRD stage waited for, and prune with Flux's rule.

mod support;

use std::time::Duration;

use pennant::api::kustomization::ResourceInventory;
use pennant::apply::inventory::{inventory_of, stale};
use pennant::apply::ssa::{Action, Applier, ApplyOptions};
use serde_json::{Value, json};
use support::*;

fn cm(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": data})
}

fn opts(ns: &str) -> ApplyOptions {
    ApplyOptions {
        owner: Some(("app".into(), ns.into())),
        wait_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn actions(changes: &[pennant::apply::ssa::Change]) -> Vec<String> {
    changes.iter().map(|c| c.to_string()).collect()
}

async fn resource_version(ns: &TestNs, name: &str) -> String {
    ns.get("v1", "ConfigMap", name).await.unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn apply_writes_only_on_diff_and_prunes_owned_objects() {
    let client = client().await;
    let ns = TestNs::new(&client, "ssa", 0).await;
    let n = ns.name.as_str();
    let applier = Applier::new(client.clone());
    let objects = vec![
        cm(n, "b", json!({"k": "1"})),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": n},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}], "clusterIP": "None"}}),
        cm(n, "a", json!({"k": "1"})),
    ];
    let first = applier.apply_all(objects.clone(), &opts(n)).await.unwrap();
    assert_eq!(
        actions(&first),
        [
            format!("ConfigMap/{n}/a created"),
            format!("ConfigMap/{n}/b created"),
            format!("Service/{n}/svc created"),
        ]
    );
    let live = ns.get("v1", "ConfigMap", "a").await.unwrap();
    assert_eq!(
        live["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
        "app"
    );
    assert_eq!(
        live["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"],
        n
    );
    let managers: Vec<_> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["manager"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(managers, ["pennant"]);

    // the same set again: no write at all
    let rv = resource_version(&ns, "a").await;
    let again = applier.apply_all(objects.clone(), &opts(n)).await.unwrap();
    assert!(
        again.iter().all(|c| c.action == Action::Unchanged),
        "{again:?}"
    );
    assert_eq!(resource_version(&ns, "a").await, rv);

    // one change: only that object configured
    let mut changed = objects.clone();
    changed[0] = cm(n, "b", json!({"k": "2"}));
    let third = applier.apply_all(changed.clone(), &opts(n)).await.unwrap();
    let moved: Vec<_> = third
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].to_string(), format!("ConfigMap/{n}/b configured"));
    assert_eq!(
        ns.get("v1", "ConfigMap", "b").await.unwrap()["data"]["k"],
        "2"
    );

    // Ignore and IfNotPresent: a live object is left as it is
    let mut ignored = cm(n, "a", json!({"k": "ignored"}));
    ignored["metadata"]["annotations"] = json!({"kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"});
    let c = applier.apply_one(&ignored, false).await.unwrap();
    assert_eq!(c.action, Action::Skipped);
    assert_eq!(
        ns.get("v1", "ConfigMap", "a").await.unwrap()["data"]["k"],
        "1"
    );

    // an immutable field: an error naming the object, recreated with force
    let mut frozen = cm(n, "frozen", json!({"k": "1"}));
    frozen["immutable"] = json!(true);
    applier.apply_one(&frozen, false).await.unwrap();
    frozen["data"]["k"] = json!("2");
    let err = applier.apply_one(&frozen, false).await.unwrap_err();
    assert_eq!(err.object, format!("ConfigMap/{n}/frozen"));
    assert!(err.message.contains("dry-run failed"), "{}", err.message);
    assert_eq!(
        ns.get("v1", "ConfigMap", "frozen").await.unwrap()["data"]["k"],
        "1"
    );
    let c = applier.apply_one(&frozen, true).await.unwrap();
    assert_eq!(c.action, Action::Created);
    assert_eq!(
        ns.get("v1", "ConfigMap", "frozen").await.unwrap()["data"]["k"],
        "2"
    );

    // prune: the object left out of the set is deleted; one not ours is kept
    let old = inventory_of(&changed);
    let mut kept = cm(n, "foreign", json!({}));
    kept["metadata"]["labels"] = json!({"kustomize.toolkit.fluxcd.io/name": "other",
        "kustomize.toolkit.fluxcd.io/namespace": n});
    support::apply(&client, &kept).await;
    let old = ResourceInventory {
        entries: [old.entries, inventory_of(&[kept]).entries].concat(),
    };
    let new = inventory_of(&changed[1..]);
    let stale = stale(&old, &new).unwrap();
    assert_eq!(stale.len(), 2);
    let (deleted, failed) = applier
        .prune(&stale, ("app", n), Some(Duration::from_secs(30)))
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(actions(&deleted), [format!("ConfigMap/{n}/b deleted")]);
    assert!(ns.get("v1", "ConfigMap", "b").await.is_none());
    assert!(ns.get("v1", "ConfigMap", "foreign").await.is_some());
    ns.cleanup().await;
}

#[tokio::test]
async fn a_crd_and_its_objects_apply_in_one_set() {
    let client = client().await;
    let ns = TestNs::new(&client, "ssacrd", 0).await;
    let n = ns.name.as_str();
    let group = format!("{n}.pennant.dev");
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let widget = json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w", "namespace": n}, "spec": {"size": 3}});
    let applier = Applier::new(client.clone());
    // the custom resource first in the input: the stages put the CRD before it
    let changes = applier
        .apply_all(vec![widget.clone(), crd.clone()], &opts(n))
        .await
        .unwrap();
    assert_eq!(
        actions(&changes),
        [
            format!("CustomResourceDefinition/widgets.{group} created"),
            format!("Widget/{n}/w created"),
        ]
    );
    let inv = inventory_of(std::slice::from_ref(&crd));
    let (deleted, failed) = applier
        .prune(
            &stale(&inv, &ResourceInventory::default()).unwrap(),
            ("app", n),
            None,
        )
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(deleted.len(), 1);
    ns.cleanup().await;
}

/// Flux's `ApplyAll`: every object of a stage is dry-run before any is applied, so an object
/// of a kind the cluster does not serve (a HelmRelease without its CRD) leaves the ConfigMap
/// sorted before it in the same stage unapplied; the Namespace stage before it stays applied.
#[tokio::test]
async fn a_refused_dry_run_applies_nothing_of_its_stage() {
    let client = client().await;
    let ns = TestNs::new(&client, "ssastage", 0).await;
    let n = ns.name.as_str();
    let group = format!("{n}.pennant.dev");
    let release = json!({"apiVersion": format!("{group}/v1"), "kind": "Release",
        "metadata": {"name": "podinfo", "namespace": n}, "spec": {}});
    let extra = format!("{n}-extra");
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra}});
    let err = Applier::new(client.clone())
        .apply_all(
            vec![release, cm(n, "a", json!({"k": "1"})), namespace],
            &opts(n),
        )
        .await
        .unwrap_err();
    // the Namespace stage was applied before the failure, and the error says so (for the
    // inventory)
    assert_eq!(
        actions(&err.applied),
        [format!("Namespace/{extra} created")]
    );
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    assert!(namespaces.get_opt(&extra).await.unwrap().is_some());
    namespaces
        .delete(&extra, &Default::default())
        .await
        .unwrap();
    assert_eq!(err.object, format!("Release/{n}/podinfo"));
    assert_eq!(
        err.message,
        format!(
            "Release/{n}/podinfo dry-run failed: no matches for kind \"Release\" in version \"{group}/v1\""
        )
    );
    assert!(
        ns.get("v1", "ConfigMap", "a").await.is_none(),
        "nothing of the refused stage is applied"
    );
    ns.cleanup().await;
}
