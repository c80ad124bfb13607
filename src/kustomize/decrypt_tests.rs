//! Pure parts of `kustomize::decrypt`; decryption of real `sops` output is in
//! `tests/kustomize_decrypt.rs`.

use super::*;
use serde_json::json;

#[test]
fn format_from_path_and_marker() {
    let table = [
        ("config.yaml", Format::Yaml),
        ("a/b.YML", Format::Yaml),
        ("app.json", Format::Json),
        (".dockerconfigjson", Format::Json),
        ("app.env", Format::Dotenv),
        ("x.ini", Format::Ini),
        ("tls.crt", Format::Binary),
        ("token", Format::Binary),
    ];
    for (path, want) in table {
        assert_eq!(Format::for_path(path), want, "{path}");
    }
    let detect = [
        (
            &b"{\n\t\"sops\": {\n\t\t\"mac\": \"ENC[AES"[..],
            Some(Format::Json),
        ),
        (b"A=1\nsops_mac=ENC[AES", Some(Format::Dotenv)),
        (b"sops:\n    mac: ENC[AES", Some(Format::Yaml)),
        (b"[sops]\nmac = x", Some(Format::Ini)),
        (b"mac: plain", None),
    ];
    for (data, want) in detect {
        assert_eq!(
            Format::detect(data),
            want,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

fn rules(md: Value) -> Rules {
    Metadata::parse(&md).map(|m| m.rules).unwrap()
}

#[test]
fn which_paths_are_encrypted() {
    let p = |s: &str| s.split(':').map(String::from).collect::<Vec<_>>();
    // (metadata, path, encrypted)
    let table = [
        (json!({}), "data:password", true),
        (
            json!({"unencrypted_suffix": "_unencrypted"}),
            "a_unencrypted:b",
            false,
        ),
        (json!({"unencrypted_suffix": "_unencrypted"}), "a:b", true),
        (json!({"encrypted_suffix": "_secret"}), "a:b", false),
        (json!({"encrypted_suffix": "_secret"}), "x_secret:b", true),
        (
            json!({"encrypted_regex": "^(data|stringData)$"}),
            "stringData:password",
            true,
        ),
        (
            json!({"encrypted_regex": "^(data|stringData)$"}),
            "metadata:name",
            false,
        ),
        // unanchored, as Go's regexp.Match
        (
            json!({"encrypted_regex": "data"}),
            "metadata:database",
            true,
        ),
        (
            json!({"unencrypted_regex": "^meta"}),
            "metadata:name",
            false,
        ),
        (json!({"unencrypted_regex": "^meta"}), "spec:name", true),
    ];
    for (md, path, want) in table {
        assert_eq!(
            rules(md.clone()).should_be_encrypted(&p(path)),
            want,
            "{md} {path}"
        );
    }
}

#[test]
fn dotenv_metadata_unflattens() {
    let flat: BTreeMap<String, String> = [
        ("age__list_0__map_recipient", "age1a"),
        ("age__list_0__map_enc", "E0"),
        ("age__list_1__map_recipient", "age1b"),
        ("lastmodified", "2026-12-05T22:32:42Z"),
        ("mac_only_encrypted", "true"),
        ("unencrypted_suffix", "_unencrypted"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let v = unflatten(&flat);
    assert_eq!(
        v,
        json!({"age": [{"recipient": "age1a", "enc": "E0"}, {"recipient": "age1b"}],
               "lastmodified": "2026-12-05T22:32:42Z", "mac_only_encrypted": "true",
               "unencrypted_suffix": "_unencrypted"})
    );
    let md = Metadata::parse(&v).unwrap();
    assert!(md.rules.mac_only_encrypted);
    assert_eq!(md.age.len(), 2);
}

#[test]
fn lastmodified_as_go_formats_it() {
    assert_eq!(
        strip_fraction("2026-12-05T22:32:42Z"),
        "2026-12-05T22:32:42Z"
    );
    assert_eq!(
        strip_fraction("2026-12-05T22:32:42.123456Z"),
        "2026-12-05T22:32:42Z"
    );
    assert_eq!(
        strip_fraction("2026-12-05T22:32:42.5+02:00"),
        "2026-12-05T22:32:42+02:00"
    );
}

const LEAF: &str = "ENC[AES256_GCM,data:AAAA,iv:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]";

/// Documents encrypted for key types other than age: a clear error naming the type.
#[test]
fn other_key_types_are_not_supported() {
    let keys = Keys::from_age_text("").unwrap();
    for kind in ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"] {
        let doc = json!({"password": LEAF, "sops": {
            kind: [{"enc": "opaque", "fp": "F00"}],
            "lastmodified": "2026-12-05T22:32:42Z", "mac": LEAF, "version": "3.11.0"}});
        let data = serde_json::to_vec(&doc).unwrap();
        let e = decrypt_document(&data, Format::Json, Format::Json, &keys, true).unwrap_err();
        let want = format!("decryption provider key type {kind} is not supported");
        assert!(
            matches!(e, DecryptError::DataKey(_)) && e.to_string().contains(&want),
            "{e}"
        );
    }
    let doc = json!({"password": LEAF, "sops": {
        "key_groups": [{"age": []}, {"age": []}], "shamir_threshold": 2,
        "lastmodified": "2026-12-05T22:32:42Z", "mac": LEAF}});
    let e = decrypt_document(
        &serde_json::to_vec(&doc).unwrap(),
        Format::Json,
        Format::Json,
        &keys,
        true,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("key type key_groups is not supported"),
        "{e}"
    );
    let e =
        decrypt_document(b"[sops]\nmac = x\n", Format::Ini, Format::Ini, &keys, true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to load encrypted ini data: decryption provider key type ini format is not supported"
    );
    // the Secret entries of other key types are skipped at import, not fatal
    let data = BTreeMap::from([
        (
            "key.asc".to_string(),
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----".to_vec(),
        ),
        ("sops.aws-kms".to_string(), b"aws_access_key_id: x".to_vec()),
    ]);
    assert!(Keys::from_secret("ns/s", &data).unwrap().is_empty());
}

#[test]
fn not_a_sops_document() {
    let keys = Keys::from_age_text("").unwrap();
    let table = [
        (
            &b"a: 1\n"[..],
            Format::Yaml,
            "failed to load encrypted yaml data: sops metadata not found",
        ),
        (
            b"A=1\n",
            Format::Dotenv,
            "failed to load encrypted dotenv data: sops metadata not found",
        ),
        (
            b"A\n",
            Format::Dotenv,
            "failed to load encrypted dotenv data: invalid dotenv input line",
        ),
        (
            b"[1]",
            Format::Json,
            "failed to load encrypted json data: the document is not a map",
        ),
    ];
    for (data, format, want) in table {
        let e = decrypt_document(data, format, format, &keys, true).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
}

#[test]
fn plain_debug_is_redacted() {
    let p = Plain(b"hunter2".to_vec());
    assert_eq!(format!("{p:?}"), "Plain(<redacted 7 bytes>)");
}

#[test]
fn age_plugin_identities_are_refused_naming_the_line() {
    let e = Keys::from_age_text("# c\nAGE-PLUGIN-YUBIKEY-1XYZ\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to import 'identity.agekey' data from sops decryption Secret '-': line 2: decryption provider key type age plugin is not supported"
    );
}

#[test]
fn yaml_scalars_resolve_as_go_yaml_v3() {
    let (docs, _) = load(
        b"a: y\nb: yes\nc: 0755\nd: 'x'\ne: 1.0\nf: ~\ng: 9223372036854775808\nsops: {}\n",
        Format::Yaml,
    )
    .unwrap();
    let want = Node::Map(vec![
        ("a".into(), Node::Str("y".into())),
        ("b".into(), Node::Str("yes".into())),
        ("c".into(), Node::Int(0o755)),
        ("d".into(), Node::Str("x".into())),
        ("e".into(), Node::Float(1.0)),
        ("f".into(), Node::Null),
        ("g".into(), Node::UInt(9223372036854775808)),
    ]);
    assert!(docs == [want], "{}", docs[0].to_json());
    // the MAC bytes of a float as Go's FormatFloat(f, 'f', -1, 64)
    assert_eq!(mac_bytes(&Node::Float(1.0)).unwrap(), b"1");
    assert_eq!(mac_bytes(&Node::Float(0.1)).unwrap(), b"0.1");
    assert_eq!(
        mac_bytes(&Node::Float(1e21)).unwrap(),
        b"1000000000000000000000"
    );
}

#[test]
fn res_id_is_kustomizes() {
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "apps"}});
    assert_eq!(res_id(&s), "Secret.v1.[noGrp]/db.apps");
    let c = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}});
    assert_eq!(
        res_id(&c),
        "ClusterRole.v1.rbac.authorization.k8s.io/r.[noNs]"
    );
}

#[test]
fn ciphertext_without_decryption_is_refused_not_applied() {
    let enc = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "apps"},
        "data": {"password": "ENC[AES256_GCM,data:xx,iv:yy,tag:zz,type:str]"},
        "sops": {"mac": "ENC[AES256_GCM,data:m,iv:i,tag:t,type:str]", "age": []}});
    let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let err = decrypt_objects(vec![plain.clone(), enc.clone()], None).unwrap_err();
    assert!(
        err.starts_with("decryption failed for 'Secret.v1.[noGrp]/db.apps': "),
        "{err}"
    );
    assert!(err.contains("spec.decryption is not set"), "{err}");
    assert_eq!(
        decrypt_objects(vec![plain.clone()], None).unwrap(),
        vec![plain]
    );
    let mut opted_out = enc;
    opted_out["metadata"]["annotations"] = json!({DECRYPT_ANNOTATION: "disabled"});
    assert_eq!(
        decrypt_objects(vec![opted_out.clone()], None).unwrap(),
        vec![opted_out]
    );
}
