//! Revision and config tracking, PURE (Flagger §2.4, with its hashing bug fixed).
//!
//! - [`revision`]: the revision hash of a pod template. Unlike Flagger's FNV hash over the Go
//!   struct (which changes whenever the Kubernetes library adds a field, Flagger #1673, #1799,
//!   #1201), it hashes *canonical JSON*: keys sorted, and every `null`, `{}` and `[]` dropped, so a
//!   field that is unset, or added by a newer k8s-openapi, never changes it.
//! - [`config_refs`] / [`tracked_configs`]: which ConfigMaps and Secrets the pod template uses and
//!   the checksum of each, written to `status.trackedConfigs` (`configmap/<name>` → checksum).
//! - [`primary_config_map`] / [`primary_secret`] / [`rewrite_config_refs`]: the `-primary` copies
//!   the primary workload mounts instead, so it does not see a config change before promotion.

use std::collections::BTreeMap;
use std::ops::Deref;

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

pub use crate::api::revision::SCALE_TO_ZERO_NODE_SELECTOR;

/// Annotation on a ConfigMap/Secret that opts it out of tracking (any value starting with
/// `disable`), as in Flagger: it is neither checksummed nor copied, the primary uses the original.
pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

/// Secret types that are tracked (Flagger: docker registry and service-account token secrets are
/// not). An empty type is Opaque.
pub const TRACKED_SECRET_TYPES: &[&str] = &[
    "",
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// Marker of Flux-owned label/annotation keys, dropped from workload-side copies (Flagger §1.7).
pub const FLUX_TOOLKIT_MARKER: &str = "toolkit.fluxcd.io";

const PRIMARY_SUFFIX: &str = "-primary";

pub use crate::api::revision::{canonical_digest, canonical_json, revision};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// ConfigMaps and Secrets a pod spec references, by name → `optional`.
///
/// A name referenced several times is optional only if every reference is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigRefs {
    pub config_maps: BTreeMap<String, bool>,
    pub secrets: BTreeMap<String, bool>,
}

impl ConfigRefs {
    fn add(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
        if name.is_empty() {
            return;
        }
        let optional = optional.unwrap_or(false);
        map.entry(name.to_string())
            .and_modify(|o| *o = *o && optional)
            .or_insert(optional);
    }

    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

/// Scan a pod spec for ConfigMap/Secret references, as Flagger's config tracker: volumes
/// (`configMap`, `secret`, `projected.sources[].configMap/secret`) and, in containers **and**
/// initContainers, `env[].valueFrom.configMapKeyRef/secretKeyRef` and
/// `envFrom[].configMapRef/secretRef`.
pub fn config_refs(pod: &PodSpec) -> ConfigRefs {
    let mut r = ConfigRefs::default();
    for v in pod.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            ConfigRefs::add(&mut r.config_maps, &cm.name, cm.optional);
        }
        if let Some(s) = &v.secret {
            ConfigRefs::add(
                &mut r.secrets,
                s.secret_name.as_deref().unwrap_or(""),
                s.optional,
            );
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    ConfigRefs::add(&mut r.config_maps, &cm.name, cm.optional);
                }
                if let Some(s) = &src.secret {
                    ConfigRefs::add(&mut r.secrets, &s.name, s.optional);
                }
            }
        }
    }
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(k) = &from.config_map_key_ref {
                ConfigRefs::add(&mut r.config_maps, &k.name, k.optional);
            }
            if let Some(k) = &from.secret_key_ref {
                ConfigRefs::add(&mut r.secrets, &k.name, k.optional);
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(k) = &e.config_map_ref {
                ConfigRefs::add(&mut r.config_maps, &k.name, k.optional);
            }
            if let Some(k) = &e.secret_ref {
                ConfigRefs::add(&mut r.secrets, &k.name, k.optional);
            }
        }
    }
    r
}

/// Status key of a tracked ConfigMap: `configmap/<name>`.
pub fn config_map_key(name: &str) -> String {
    format!("configmap/{name}")
}

/// Status key of a tracked Secret: `secret/<name>`.
pub fn secret_key(name: &str) -> String {
    format!("secret/{name}")
}

fn tracking_disabled(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_TRACKING_ANNOTATION))
        .is_some_and(|v| v.starts_with("disable"))
}

/// Whether a Secret of this type is tracked (see [`TRACKED_SECRET_TYPES`]).
pub fn secret_type_tracked(secret: &Secret) -> bool {
    TRACKED_SECRET_TYPES.contains(&secret.type_.as_deref().unwrap_or(""))
}

/// The tracked configs of a pod template: `configmap/<name>` / `secret/<name>` → checksum.
///
/// `get_config_map` / `get_secret` look an object up by name in the Canary's namespace (e.g. from
/// a reflector store; anything that derefs to the object will do: `&ConfigMap`, `Arc<ConfigMap>`).
/// Skipped: objects annotated `flagger.app/config-tracking: disabled*`, Secrets of an untracked
/// type, and missing refs marked `optional`. A missing required ref is an error naming every
/// missing object (`configmap/<name>`, `secret/<name>`).
///
/// Checksum: hex of the first 8 bytes of the SHA-256 of the JSON of `data` (Secrets: `data` with
/// base64 values), encoded as Go's `encoding/json` does, so the values equal Flagger's and a
/// status written by Flagger is adopted without a spurious run. A ConfigMap with `binaryData` hashes
/// `{"binaryData":…,"data":…}` instead (Flagger ignores `binaryData`, so its changes never rolled).
pub fn tracked_configs<CM, S>(
    refs: &ConfigRefs,
    get_config_map: impl Fn(&str) -> Option<CM>,
    get_secret: impl Fn(&str) -> Option<S>,
) -> Result<BTreeMap<String, String>, String>
where
    CM: Deref<Target = ConfigMap>,
    S: Deref<Target = Secret>,
{
    let mut out = BTreeMap::new();
    let mut missing = vec![];
    for (name, optional) in &refs.config_maps {
        match get_config_map(name) {
            Some(cm) if tracking_disabled(&cm.metadata) => {}
            Some(cm) => {
                out.insert(config_map_key(name), config_map_checksum(&cm));
            }
            None if *optional => {}
            None => missing.push(config_map_key(name)),
        }
    }
    for (name, optional) in &refs.secrets {
        match get_secret(name) {
            Some(s) if tracking_disabled(&s.metadata) || !secret_type_tracked(&s) => {}
            Some(s) => {
                out.insert(secret_key(name), secret_checksum(&s));
            }
            None if *optional => {}
            None => missing.push(secret_key(name)),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "referenced by the pod template but not found (and not optional): {}",
            missing.join(", ")
        ))
    }
}

/// Checksum of a ConfigMap's data (see [`tracked_configs`]).
pub fn config_map_checksum(cm: &ConfigMap) -> String {
    let data = non_empty(&cm.data);
    let json = match non_empty(&cm.binary_data) {
        None => go_json(&data),
        Some(bin) => go_json(&serde_json::json!({ "binaryData": bin, "data": data })),
    };
    checksum(&json)
}

/// Checksum of a Secret's data (see [`tracked_configs`]).
pub fn secret_checksum(secret: &Secret) -> String {
    checksum(&go_json(&non_empty(&secret.data)))
}

fn non_empty<T>(m: &Option<BTreeMap<String, T>>) -> Option<&BTreeMap<String, T>> {
    m.as_ref().filter(|m| !m.is_empty())
}

fn checksum(json: &str) -> String {
    hex(&Sha256::digest(json.as_bytes())[..8])
}

/// JSON as Go's `encoding/json` writes it for a map: keys sorted (a `BTreeMap` already is), an
/// absent map is `null`, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c` etc.
fn go_json<T: serde::Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    // These characters can only occur inside JSON strings, so a textual replace is exact.
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn without_flux_keys(m: &Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m
        .iter()
        .flatten()
        .filter(|(k, _)| !k.contains(FLUX_TOOLKIT_MARKER))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!m.is_empty()).then_some(m)
}

fn primary_meta(meta: &ObjectMeta, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(format!(
            "{}{PRIMARY_SUFFIX}",
            meta.name.as_deref().unwrap_or("")
        )),
        namespace: meta.namespace.clone(),
        labels: without_flux_keys(&meta.labels),
        annotations: Some(
            crate::api::meta::FLUX_DISABLED_ANNOTATIONS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

/// The primary's copy of a tracked ConfigMap: `<name>-primary`, same `data` and `binaryData`,
/// labels without Flux keys (`*toolkit.fluxcd.io*`), annotations: only the Flux opt-outs
/// (`api::meta::FLUX_DISABLED_ANNOTATIONS`), controller owner `owner`
/// (the Canary). `immutable` is not copied: the copy is rewritten at every promotion.
pub fn primary_config_map(cm: &ConfigMap, owner: OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: primary_meta(&cm.metadata, owner),
        data: non_empty(&cm.data).cloned(),
        binary_data: non_empty(&cm.binary_data).cloned(),
        immutable: None,
    }
}

/// The primary's copy of a tracked Secret: `<name>-primary`, same `type` and `data`, labels
/// without Flux keys, annotations: only the Flux opt-outs, controller owner `owner`. `immutable` is not copied.
pub fn primary_secret(secret: &Secret, owner: OwnerReference) -> Secret {
    Secret {
        metadata: primary_meta(&secret.metadata, owner),
        data: non_empty(&secret.data).cloned(),
        type_: secret.type_.clone().filter(|t| !t.is_empty()),
        immutable: None,
        string_data: None,
    }
}

/// Point every reference to a tracked ConfigMap/Secret (keys of `tracked`, as returned by
/// [`tracked_configs`]) at its `-primary` copy, in the same places [`config_refs`] scans.
/// References to untracked objects (disabled, untracked Secret type, missing optional) are kept.
pub fn rewrite_config_refs(pod: &mut PodSpec, tracked: &BTreeMap<String, String>) {
    let cm = |name: &mut String| {
        if tracked.contains_key(&config_map_key(name)) {
            name.push_str(PRIMARY_SUFFIX);
        }
    };
    let secret = |name: &mut String| {
        if tracked.contains_key(&secret_key(name)) {
            name.push_str(PRIMARY_SUFFIX);
        }
    };
    for v in pod.volumes.iter_mut().flatten() {
        if let Some(c) = &mut v.config_map {
            cm(&mut c.name);
        }
        if let Some(s) = &mut v.secret
            && let Some(n) = &mut s.secret_name
        {
            secret(n);
        }
        if let Some(p) = &mut v.projected {
            for src in p.sources.iter_mut().flatten() {
                if let Some(c) = &mut src.config_map {
                    cm(&mut c.name);
                }
                if let Some(s) = &mut src.secret {
                    secret(&mut s.name);
                }
            }
        }
    }
    let containers = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten());
    for c in containers {
        for e in c.env.iter_mut().flatten() {
            let Some(from) = &mut e.value_from else {
                continue;
            };
            if let Some(k) = &mut from.config_map_key_ref {
                cm(&mut k.name);
            }
            if let Some(k) = &mut from.secret_key_ref {
                secret(&mut k.name);
            }
        }
        for e in c.env_from.iter_mut().flatten() {
            if let Some(k) = &mut e.config_map_ref {
                cm(&mut k.name);
            }
            if let Some(k) = &mut e.secret_ref {
                secret(&mut k.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use serde_json::{Value, json};

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({
            "metadata": {"labels": {"app": "podinfo"}, "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"containers": [{"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                                     "ports": [{"containerPort": 9898, "name": "http"}]}]}
        })
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "flagger.app/v1beta1".into(),
            kind: "Canary".into(),
            name: "podinfo".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn revision_has_prefix_and_16_hex_digits() {
        let r = revision(&template(base()));
        assert!(r.starts_with("sha256:"), "{r}");
        assert_eq!(r.len(), "sha256:".len() + 16);
        assert!(r["sha256:".len()..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn revision_ignores_empty_fields_nulls_and_key_order() {
        let r = revision(&template(base()));
        // Empty collections and explicit nulls, as a newer library or a defaulting webhook may add.
        let padded = json!({
            "metadata": {"annotations": {"prometheus.io/scrape": "true"}, "labels": {"app": "podinfo"},
                         "finalizers": [], "ownerReferences": null},
            "spec": {"volumes": [], "nodeSelector": {}, "tolerations": null,
                     "containers": [{"ports": [{"name": "http", "containerPort": 9898}],
                                     "image": "ghcr.io/stefanprodan/podinfo:6.0.0", "name": "podinfod",
                                     "env": [], "resources": {}}]}
        });
        assert_eq!(revision(&template(padded)), r);
    }

    #[test]
    fn canonical_json_sorts_and_prunes() {
        let v = json!({"b": 1, "a": {"z": null, "y": [], "x": {}}, "c": [{}, 2, null], "d": false, "e": ""});
        assert_eq!(canonical_json(&v), r#"{"b":1,"c":[2],"d":false,"e":""}"#);
        assert_eq!(canonical_json(&json!({"a": {}})), "null");
    }

    #[test]
    fn revision_changes_with_the_image() {
        let mut v = base();
        v["spec"]["containers"][0]["image"] = json!("ghcr.io/stefanprodan/podinfo:6.0.1");
        assert_ne!(revision(&template(v)), revision(&template(base())));
    }

    #[test]
    fn revision_changes_with_template_labels() {
        let mut v = base();
        v["metadata"]["labels"]["track"] = json!("stable");
        assert_ne!(revision(&template(v)), revision(&template(base())));
    }

    #[test]
    fn revision_ignores_daemonset_scale_to_zero_node_selector() {
        let mut v = base();
        v["spec"]["nodeSelector"] = json!({"flagger.app/scale-to-zero": "true"});
        assert_eq!(revision(&template(v.clone())), revision(&template(base())));
        v["spec"]["nodeSelector"]["disk"] = json!("ssd");
        assert_ne!(revision(&template(v)), revision(&template(base())));
    }

    #[test]
    fn replicas_are_not_part_of_the_revision() {
        use k8s_openapi::api::apps::v1::Deployment;
        let mk = |replicas: i32| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "podinfo"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "podinfo"}},
                         "template": base()}
            }))
            .unwrap()
        };
        let a = mk(1);
        let b = mk(5);
        assert_eq!(
            revision(&a.spec.unwrap().template),
            revision(&b.spec.unwrap().template)
        );
    }

    fn pod_with_all_refs() -> PodSpec {
        serde_json::from_value(json!({
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "sec-vol", "optional": true}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "cm-proj"}},
                    {"secret": {"name": "sec-proj"}},
                    {"downwardAPI": {"items": []}}
                ]}},
                {"name": "d", "emptyDir": {}}
            ],
            "initContainers": [{"name": "init", "image": "busybox",
                "envFrom": [{"configMapRef": {"name": "cm-init", "optional": true}}]}],
            "containers": [{"name": "app", "image": "app",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec-env", "key": "k", "optional": true}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "D", "value": "plain"}
                ],
                "envFrom": [{"secretRef": {"name": "sec-envfrom"}}, {"configMapRef": {"name": "cm-vol", "optional": true}}]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn config_refs_scans_volumes_projected_env_envfrom_and_init_containers() {
        let r = config_refs(&pod_with_all_refs());
        let cms: Vec<(&str, bool)> = r
            .config_maps
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let secrets: Vec<(&str, bool)> = r.secrets.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        // cm-vol is required by the volume and optional in envFrom: required wins.
        assert_eq!(
            cms,
            vec![
                ("cm-env", false),
                ("cm-init", true),
                ("cm-proj", false),
                ("cm-vol", false)
            ]
        );
        assert_eq!(
            secrets,
            vec![
                ("sec-env", true),
                ("sec-envfrom", false),
                ("sec-proj", false),
                ("sec-vol", true)
            ]
        );
    }

    fn cm(name: &str, data: &[(&str, &str)], annotations: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("test".into()),
                annotations: (!annotations.is_empty()).then(|| {
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, type_: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("test".into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn checksums_match_flaggers_go_json_encoding() {
        // sha256(`{"color":"blue"}`)[..8] and sha256(`{"value":"czNjcjN0"}`)[..8]
        // (Go's json.Marshal of map[string]string / map[string][]byte).
        let c = cm("c", &[("color", "blue")], &[]);
        assert_eq!(
            config_map_checksum(&c),
            hex(&Sha256::digest(br#"{"color":"blue"}"#)[..8])
        );
        let s = secret("s", "Opaque", &[("value", b"s3cr3t")]);
        assert_eq!(
            secret_checksum(&s),
            hex(&Sha256::digest(br#"{"value":"czNjcjN0"}"#)[..8])
        );
        // Go escapes HTML characters; a URL with a query string must hash as Flagger hashes it.
        let u = cm("u", &[("url", "http://a/?x=1&y=<2>")], &[]);
        assert_eq!(
            config_map_checksum(&u),
            hex(&Sha256::digest(br#"{"url":"http://a/?x=1\u0026y=\u003c2\u003e"}"#)[..8])
        );
        // No data at all is Go's nil map: `null`.
        let empty = ConfigMap::default();
        assert_eq!(
            config_map_checksum(&empty),
            hex(&Sha256::digest(b"null")[..8])
        );
        assert_eq!(config_map_checksum(&empty).len(), 16);
    }

    #[test]
    fn binary_data_changes_the_config_map_checksum() {
        let mut c = cm("c", &[("a", "b")], &[]);
        let before = config_map_checksum(&c);
        c.binary_data = Some(BTreeMap::from([(
            "bin".to_string(),
            ByteString(vec![1, 2, 3]),
        )]));
        let with_bin = config_map_checksum(&c);
        assert_ne!(before, with_bin);
        c.binary_data
            .as_mut()
            .unwrap()
            .insert("bin".into(), ByteString(vec![1, 2, 4]));
        assert_ne!(config_map_checksum(&c), with_bin);
    }

    #[test]
    fn tracked_configs_filters_and_keys_like_flagger() {
        let refs = config_refs(&pod_with_all_refs());
        let cms = [
            cm("cm-vol", &[("a", "1")], &[]),
            cm(
                "cm-env",
                &[("a", "2")],
                &[(CONFIG_TRACKING_ANNOTATION, "disabled")],
            ),
            cm(
                "cm-proj",
                &[("a", "3")],
                &[(CONFIG_TRACKING_ANNOTATION, "enabled")],
            ),
            // cm-init is optional and missing.
        ];
        let secrets = [
            secret("sec-vol", "kubernetes.io/dockerconfigjson", &[("x", b"1")]),
            secret("sec-env", "kubernetes.io/tls", &[("x", b"2")]),
            secret("sec-proj", "", &[("x", b"3")]),
            secret("sec-envfrom", "Opaque", &[("x", b"4")]),
        ];
        let got = tracked_configs(
            &refs,
            |n| cms.iter().find(|c| c.metadata.name.as_deref() == Some(n)),
            |n| {
                secrets
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(n))
            },
        )
        .unwrap();
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "configmap/cm-proj",
                "configmap/cm-vol",
                "secret/sec-env",
                "secret/sec-envfrom",
                "secret/sec-proj"
            ]
        );
        assert_eq!(got["configmap/cm-vol"], config_map_checksum(&cms[0]));
        assert_eq!(got["secret/sec-env"], secret_checksum(&secrets[1]));
    }

    #[test]
    fn tracked_configs_accepts_arc_lookups() {
        use std::sync::Arc;
        let refs = ConfigRefs {
            config_maps: BTreeMap::from([("a".to_string(), false)]),
            secrets: BTreeMap::new(),
        };
        let store = [Arc::new(cm("a", &[("k", "v")], &[]))];
        let got = tracked_configs(
            &refs,
            |n| {
                store
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(n))
                    .cloned()
            },
            |_| None::<Arc<Secret>>,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn missing_required_ref_is_an_error_naming_it() {
        let refs = config_refs(&pod_with_all_refs());
        let err = tracked_configs(&refs, |_| None::<&ConfigMap>, |_| None::<&Secret>).unwrap_err();
        assert!(err.contains("configmap/cm-vol"), "{err}");
        assert!(err.contains("configmap/cm-env"), "{err}");
        assert!(err.contains("secret/sec-envfrom"), "{err}");
        // Optional ones are not reported.
        assert!(!err.contains("cm-init"), "{err}");
        assert!(!err.contains("sec-vol"), "{err}");
    }

    #[test]
    fn rewrite_config_refs_suffixes_only_tracked_refs() {
        let mut pod = pod_with_all_refs();
        let tracked: BTreeMap<String, String> = [
            "configmap/cm-vol",
            "configmap/cm-init",
            "secret/sec-proj",
            "secret/sec-env",
        ]
        .iter()
        .map(|k| (k.to_string(), "x".to_string()))
        .collect();
        rewrite_config_refs(&mut pod, &tracked);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["volumes"][0]["configMap"]["name"], "cm-vol-primary");
        assert_eq!(v["volumes"][1]["secret"]["secretName"], "sec-vol");
        assert_eq!(
            v["volumes"][2]["projected"]["sources"][0]["configMap"]["name"],
            "cm-proj"
        );
        assert_eq!(
            v["volumes"][2]["projected"]["sources"][1]["secret"]["name"],
            "sec-proj-primary"
        );
        assert_eq!(
            v["initContainers"][0]["envFrom"][0]["configMapRef"]["name"],
            "cm-init-primary"
        );
        let env = &v["containers"][0]["env"];
        assert_eq!(env[0]["valueFrom"]["configMapKeyRef"]["name"], "cm-env");
        assert_eq!(
            env[1]["valueFrom"]["secretKeyRef"]["name"],
            "sec-env-primary"
        );
        let env_from = &v["containers"][0]["envFrom"];
        assert_eq!(env_from[0]["secretRef"]["name"], "sec-envfrom");
        assert_eq!(env_from[1]["configMapRef"]["name"], "cm-vol-primary");
    }

    #[test]
    fn primary_config_map_copy() {
        let mut c = cm(
            "podinfo-config-env",
            &[("color", "blue")],
            &[("note", "not copied")],
        );
        c.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            (
                "kustomize.toolkit.fluxcd.io/name".to_string(),
                "apps".to_string(),
            ),
        ]));
        c.metadata.resource_version = Some("42".into());
        c.immutable = Some(true);
        c.binary_data = Some(BTreeMap::from([(
            "bin".to_string(),
            ByteString(b"\x00\x01".to_vec()),
        )]));
        insta::assert_yaml_snapshot!(primary_config_map(&c, owner()));
    }

    #[test]
    fn primary_secret_copy() {
        let mut s = secret(
            "podinfo-secret",
            "kubernetes.io/tls",
            &[("tls.crt", b"cert"), ("tls.key", b"key")],
        );
        s.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            (
                "helm.toolkit.fluxcd.io/name".to_string(),
                "podinfo".to_string(),
            ),
        ]));
        insta::assert_yaml_snapshot!(primary_secret(&s, owner()));
    }
}
