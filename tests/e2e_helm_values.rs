//! `pennant::helm::values::fetch` / `fetch_and_compose` against the local cluster: values from
//! real ConfigMaps (`data` and `binaryData`) and Secrets, `targetPath`, optional and missing
//! references, content that is not YAML, and Flux's error messages.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use pennant::helm::values::{
    Fetched, ValuesKind, ValuesRef, config_digest, fetch, fetch_and_compose,
};
use serde_json::json;
use support::{TestNs, client};

fn r<'a>(kind: ValuesKind, name: &'a str, key: Option<&'a str>) -> ValuesRef<'a> {
    ValuesRef {
        kind,
        name,
        values_key: key,
        target_path: None,
        optional: false,
        literal: false,
    }
}

async fn setup(ns: &TestNs) {
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("base".into());
    cm.data = Some(BTreeMap::from([
        (
            "values.yaml".into(),
            "replicaCount: 2\nimage: {repository: nginx, tag: '1.0'}\nmessage: from-cm\n".into(),
        ),
        (
            "prod.yaml".into(),
            "replicaCount: 5\nimage: {tag: '2.0'}\n".into(),
        ),
        ("broken.yaml".into(), "image: [unclosed\n".into()),
    ]));
    cm.binary_data = Some(BTreeMap::from([(
        "binary.yaml".into(),
        ByteString(b"fromBinary: true\n".to_vec()),
    )]));
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut s = Secret::default();
    s.metadata.name = Some("creds".into());
    s.data = Some(BTreeMap::from([
        (
            "values.yaml".into(),
            ByteString(b"db: {user: app}\n".to_vec()),
        ),
        ("password".into(), ByteString(b"s3cr3t,pass".to_vec())),
        (
            "broken.yaml".into(),
            ByteString(b"token: hunter2\n  x: [".to_vec()),
        ),
    ]));
    secrets.create(&PostParams::default(), &s).await.unwrap();
}

#[tokio::test]
async fn values_from_configmaps_and_secrets_compose_in_fluxs_order() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-values-compose", 0).await;
    setup(&ns).await;
    let refs = [
        r(ValuesKind::ConfigMap, "base", None),
        r(ValuesKind::ConfigMap, "base", Some("prod.yaml")),
        r(ValuesKind::ConfigMap, "base", Some("binary.yaml")),
        r(ValuesKind::Secret, "creds", None),
        ValuesRef {
            target_path: Some("db.password"),
            literal: true,
            ..r(ValuesKind::Secret, "creds", Some("password"))
        },
        ValuesRef {
            optional: true,
            ..r(ValuesKind::ConfigMap, "absent", None)
        },
        ValuesRef {
            optional: true,
            ..r(ValuesKind::Secret, "creds", Some("absent-key"))
        },
    ];
    let fetched = fetch(&client, &ns.name, &refs).await.unwrap();
    assert_eq!(fetched[5], Fetched::ObjectNotFound);
    assert_eq!(fetched[6], Fetched::KeyNotFound);
    assert_eq!(fetched[2], Fetched::Data("fromBinary: true\n".into()));
    let inline = json!({"message": "inline wins", "image": {"repository": "custom"}});
    let values = fetch_and_compose(&client, &ns.name, &refs, Some(&inline))
        .await
        .unwrap();
    let want = json!({
        "replicaCount": 5,
        "image": {"repository": "custom", "tag": "2.0"},
        "message": "inline wins",
        "fromBinary": true,
        "db": {"user": "app", "password": "s3cr3t,pass"},
    });
    assert_eq!(values, want);
    assert_eq!(config_digest(&values), config_digest(&want));
    assert!(config_digest(&values).starts_with("sha256:"));
    ns.cleanup().await;
}

#[tokio::test]
async fn missing_and_unreadable_values_fail_with_fluxs_messages() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-values-errors", 0).await;
    setup(&ns).await;
    let n = &ns.name;
    let cases: Vec<(ValuesRef, String)> = vec![
        (
            r(ValuesKind::ConfigMap, "absent", None),
            format!(
                "could not resolve ConfigMap chart values reference '{n}/absent' with key 'values.yaml': configmaps \"absent\" not found"
            ),
        ),
        (
            r(ValuesKind::Secret, "absent", None),
            format!(
                "could not resolve Secret chart values reference '{n}/absent' with key 'values.yaml': secrets \"absent\" not found"
            ),
        ),
        (
            r(ValuesKind::ConfigMap, "base", Some("nope.yaml")),
            format!(
                "could not resolve ConfigMap chart values reference '{n}/base' with key 'nope.yaml': key not found"
            ),
        ),
        (
            ValuesRef {
                optional: true,
                ..r(ValuesKind::ConfigMap, "base", Some("broken.yaml"))
            },
            format!(
                "could not resolve optional ConfigMap chart values reference '{n}/base' with key 'broken.yaml': failed to read values data:"
            ),
        ),
        (
            r(ValuesKind::Secret, "creds", Some("broken.yaml")),
            format!(
                "could not resolve Secret chart values reference '{n}/creds' with key 'broken.yaml': failed to read values data: invalid YAML at line"
            ),
        ),
        (
            ValuesRef {
                target_path: Some("db.password"),
                ..r(ValuesKind::Secret, "creds", Some("password"))
            },
            format!(
                "could not resolve Secret chart values reference '{n}/creds' with key 'password': key has no value"
            ),
        ),
    ];
    for (reference, want) in cases {
        let err = fetch_and_compose(&client, n, &[reference], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&want), "got  {err}\nwant {want}");
        for secret in ["hunter2", "s3cr3t", "pass\""] {
            assert!(
                !err.contains(secret),
                "an error quotes Secret content: {err}"
            );
        }
    }
    ns.cleanup().await;
}
