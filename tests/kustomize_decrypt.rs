//! `kustomize::decrypt` against documents encrypted by the real `sops` CLI (v3.11.0, built by
//! `e2e/cluster build`; `$PENNANT_SOPS` or the cache) for age keys made by the real
//! `age-keygen` (v1.3.2; `$PENNANT_AGE_KEYGEN`), so the format is the one users commit. No
//! cluster needed. Every test checks that no error message carries a plaintext value.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pennant::kustomize::decrypt::{
    DecryptError, Format, Keys, decrypt_document, decrypt_object, decrypt_sources,
};
use serde_json::{Value, json};

use support::{AgeKey, age_key as keygen, sops_encrypt};

/// `sops --decrypt` with `key`, the reference output.
fn sops_decrypt(dir: &Path, name: &str, enc: &[u8], key: &AgeKey) -> Vec<u8> {
    let path = dir.join(format!("enc-{name}"));
    std::fs::write(&path, enc).unwrap();
    let kf = dir.join("sops-decrypt.agekey");
    std::fs::write(&kf, &key.file).unwrap();
    let out = Command::new(support::sops())
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", &kf)
        .args(["--decrypt"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sops --decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`SECRET`] encrypted for `key` the way Flux's docs advise: only `data` and `stringData`.
fn regex_encrypted_secret(dir: &Path, key: &AgeKey) -> Vec<u8> {
    let flags = ["--encrypted-regex", "^(data|stringData)$"];
    sops_encrypt(dir, "secret.yaml", SECRET.as_bytes(), &[key], &flags)
}

fn keys(ks: &[&AgeKey]) -> Keys {
    let data: BTreeMap<String, Vec<u8>> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("k{i}.agekey"), k.file.clone().into_bytes()))
        .collect();
    Keys::from_secret("flux-system/sops-age", &data).unwrap()
}

fn yaml(text: &[u8]) -> Value {
    serde_saphyr::from_str(std::str::from_utf8(text).unwrap()).unwrap()
}

/// The error's message contains none of `secrets`.
fn assert_no_plaintext(e: &DecryptError, secrets: &[&str]) {
    let msg = format!("{e} {e:?}");
    for s in secrets {
        assert!(!msg.contains(s), "error leaks {s:?}: {msg}");
    }
}

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: apps
  labels:
    app: db
type: Opaque
# the database password
stringData:
  password: hunter2-very-secret
  port: \"5432\"
  empty: \"\"
data:
  token: c2VjcmV0LXRva2Vu
";

#[test]
fn secret_manifest_default_encryption_decrypts_to_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let enc = sops_encrypt(dir.path(), "secret.yaml", SECRET.as_bytes(), &[&k1], &[]);
    assert!(!String::from_utf8_lossy(&enc).contains("hunter2"));
    let plain = decrypt_document(&enc, Format::Yaml, Format::Yaml, &keys(&[&k1]), true).unwrap();
    assert_eq!(yaml(&plain.0), yaml(SECRET.as_bytes()));
    // same document as sops' own decryption
    let reference = sops_decrypt(dir.path(), "secret.yaml", &enc, &k1);
    assert_eq!(yaml(&plain.0), yaml(&reference));
    // YAML in, JSON out (what Flux does for built objects)
    let as_json = decrypt_document(&enc, Format::Yaml, Format::Json, &keys(&[&k1]), true).unwrap();
    let v: Value = serde_json::from_slice(&as_json.0).unwrap();
    assert_eq!(v, yaml(SECRET.as_bytes()));
}

#[test]
fn secret_manifest_with_encrypted_regex_decrypts_as_a_built_object() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let enc = regex_encrypted_secret(dir.path(), &k1);
    let mut obj = yaml(&enc);
    assert_eq!(obj["metadata"]["name"], "db", "metadata stays plain");
    assert!(
        obj["stringData"]["password"]
            .as_str()
            .unwrap()
            .starts_with("ENC[AES256_GCM,")
    );
    let out = decrypt_object(&obj, &keys(&[&k1]))
        .unwrap()
        .expect("decrypted");
    assert_eq!(
        out,
        yaml(SECRET.as_bytes()),
        "plain Secret, `sops` key removed"
    );
    // kustomize rewrote metadata (namespace, a label): still decrypts, as in Flux (no MAC check)
    obj["metadata"]["namespace"] = json!("prod");
    obj["metadata"]["labels"]["env"] = json!("prod");
    let out = decrypt_object(&obj, &keys(&[&k1])).unwrap().unwrap();
    assert_eq!(out["stringData"]["password"], "hunter2-very-secret");
    assert_eq!(out["metadata"]["namespace"], "prod");
    // the same change in the file is caught by the MAC when the document is decrypted whole
    let tampered = String::from_utf8(enc.clone())
        .unwrap()
        .replace("namespace: apps", "namespace: prod");
    let e = decrypt_document(
        tampered.as_bytes(),
        Format::Yaml,
        Format::Yaml,
        &keys(&[&k1]),
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DecryptError::Mac(_)), "{e}");
    assert_no_plaintext(&e, &["hunter2", "c2VjcmV0LXRva2Vu", "secret-token"]);
}

#[test]
fn two_recipients_either_key_decrypts_and_a_secret_entry_holds_several_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, k3) = (
        keygen(dir.path(), "k1.txt"),
        keygen(dir.path(), "k2.txt"),
        keygen(dir.path(), "k3.txt"),
    );
    let enc = sops_encrypt(
        dir.path(),
        "secret.yaml",
        SECRET.as_bytes(),
        &[&k1, &k2],
        &[],
    );
    for k in [&k1, &k2] {
        let plain = decrypt_document(&enc, Format::Yaml, Format::Yaml, &keys(&[k]), true).unwrap();
        assert_eq!(yaml(&plain.0), yaml(SECRET.as_bytes()));
    }
    // one `.agekey` entry with an unrelated key first, comments and blank lines between
    let entry = format!("{}\n\n# the second one\n{}", k3.file, k2.file);
    let data = BTreeMap::from([("identity.agekey".to_string(), entry.into_bytes())]);
    let ks = Keys::from_secret("flux-system/sops", &data).unwrap();
    assert_eq!(ks.len(), 2);
    let plain = decrypt_document(&enc, Format::Yaml, Format::Yaml, &ks, true).unwrap();
    assert_eq!(
        yaml(&plain.0)["stringData"]["password"],
        "hunter2-very-secret"
    );
    assert!(
        !format!("{plain:?} {ks:?}").contains("hunter2"),
        "Debug redacts"
    );
    assert!(!format!("{ks:?}").contains("AGE-SECRET-KEY"));
}

#[test]
fn wrong_key_is_a_clear_error_naming_the_recipients_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (keygen(dir.path(), "k1.txt"), keygen(dir.path(), "k2.txt"));
    let enc = regex_encrypted_secret(dir.path(), &k1);
    let e = decrypt_document(&enc, Format::Yaml, Format::Yaml, &keys(&[&k2]), true).unwrap_err();
    assert!(matches!(e, DecryptError::DataKey(_)), "{e}");
    assert!(e.to_string().contains(&k1.recipient), "{e}");
    let e = decrypt_object(&yaml(&enc), &keys(&[&k2])).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "failed to decrypt and format 'apps/db' Secret data: cannot get sops data key: "
        ),
        "{msg}"
    );
    assert_no_plaintext(&e, &["hunter2", "c2VjcmV0LXRva2Vu"]);
    // no keys at all
    let e = decrypt_object(&yaml(&enc), &keys(&[])).unwrap_err();
    assert!(e.to_string().contains("no age identity"), "{e}");
    // a malformed key in the Secret names the entry, not the key
    let data = BTreeMap::from([(
        "bad.agekey".to_string(),
        b"AGE-SECRET-KEY-1NOTAKEY".to_vec(),
    )]);
    let e = Keys::from_secret("flux-system/sops", &data).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("failed to import 'bad.agekey' data from sops decryption Secret 'flux-system/sops': line 1:"),
        "{e}"
    );
    assert!(!e.to_string().contains("NOTAKEY"), "{e}");
}

#[test]
fn tampered_value_mac_or_swapped_values_are_errors_without_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let enc = String::from_utf8(sops_encrypt(
        dir.path(),
        "secret.yaml",
        SECRET.as_bytes(),
        &[&k1],
        &[],
    ))
    .unwrap();
    let ks = keys(&[&k1]);
    let secrets = ["hunter2", "c2VjcmV0LXRva2Vu", "secret-token"];
    let value_of = |doc: &str, key: &str| -> String {
        doc.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap()
            .to_string()
    };
    // flip the first character of the password's ciphertext
    let pw = value_of(&enc, "password");
    let data_start = "ENC[AES256_GCM,data:".len();
    let mut bad = pw.clone();
    let c = if &pw[data_start..data_start + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad.replace_range(data_start..data_start + 1, c);
    let e = decrypt_document(
        enc.replace(&pw, &bad).as_bytes(),
        Format::Yaml,
        Format::Yaml,
        &ks,
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DecryptError::Tree(_)), "{e}");
    assert!(e.to_string().contains("'stringData:password:'"), "{e}");
    assert_no_plaintext(&e, &secrets);
    // moving a ciphertext to another key fails: the key path is the additional data
    let port = value_of(&enc, "port");
    let swapped = enc
        .replace(&port, "PORT")
        .replace(&pw, &port)
        .replace("PORT", &pw);
    let e =
        decrypt_document(swapped.as_bytes(), Format::Yaml, Format::Yaml, &ks, false).unwrap_err();
    assert!(matches!(e, DecryptError::Tree(_)), "{e}");
    // a MAC of another document
    let other = String::from_utf8(sops_encrypt(
        dir.path(),
        "other.yaml",
        b"stringData:\n  password: other\n",
        &[&k1],
        &[],
    ))
    .unwrap();
    let e = decrypt_document(
        enc.replace(&value_of(&enc, "mac"), &value_of(&other, "mac"))
            .as_bytes(),
        Format::Yaml,
        Format::Yaml,
        &ks,
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DecryptError::Mac(_)), "{e}");
    assert_no_plaintext(&e, &secrets);
    // a removed entry changes the MAC
    let removed: String = enc
        .lines()
        .filter(|l| !l.contains("port:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e =
        decrypt_document(removed.as_bytes(), Format::Yaml, Format::Yaml, &ks, true).unwrap_err();
    assert!(matches!(e, DecryptError::Mac(_)), "{e}");
    // a value that is not sops' format is redacted in the message
    let e = decrypt_document(
        enc.replace(&pw, "hunter2-plain").as_bytes(),
        Format::Yaml,
        Format::Yaml,
        &ks,
        true,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("Input string <redacted> does not match sops' data format"),
        "{e}"
    );
    assert_no_plaintext(&e, &secrets);
}

/// Value types through a YAML and a JSON document: (flags, document).
#[test]
fn value_types_nested_maps_lists_and_comments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let doc = "# top comment
str: hello
int: 42
negative: -7
float: 1.5
bool_t: true
bool_f: false
empty: \"\"
nothing: null
quoted_number: \"0755\"
multi: |
  line one
  line two
unicode: \"gr\u{fc}\u{df}e \u{1f511}\"
nested:
  # a nested comment
  map:
    deep: value
    list: [1, two, 3.25, false]
list:
  - a
  - key: v
    other: 9
  - - inner
kept_unencrypted: plain
";
    let table: [(&str, &[&str]); 5] = [
        ("default", &[]),
        ("mac_only_encrypted", &["--mac-only-encrypted"]),
        (
            "unencrypted_suffix",
            &["--unencrypted-suffix", "_unencrypted"],
        ),
        ("encrypted_suffix", &["--encrypted-suffix", "ested"]),
        (
            "unencrypted_regex",
            &["--unencrypted-regex", "^(list|str)$"],
        ),
    ];
    let want = yaml(doc.as_bytes());
    for (name, flags) in table {
        for (ext, format) in [("yaml", Format::Yaml), ("json", Format::Json)] {
            let input = if format == Format::Json {
                serde_json::to_vec(&want).unwrap()
            } else {
                doc.as_bytes().to_vec()
            };
            let enc = sops_encrypt(dir.path(), &format!("doc.{ext}"), &input, &[&k1], flags);
            let plain = decrypt_document(&enc, format, Format::Json, &keys(&[&k1]), true)
                .unwrap_or_else(|e| panic!("{name}/{ext}: {e}"));
            let got: Value = serde_json::from_slice(&plain.0).unwrap();
            assert_eq!(got, want, "{name}/{ext}");
            // emitted in its own format, it reads back the same (quoting of "0755", block strings)
            let same = decrypt_document(&enc, format, format, &keys(&[&k1]), true).unwrap();
            let same: Value = if format == Format::Json {
                serde_json::from_slice(&same.0).unwrap()
            } else {
                yaml(&same.0)
            };
            assert_eq!(same, want, "{name}/{ext} emitted as {ext}");
            let reference = sops_decrypt(dir.path(), &format!("doc.{ext}"), &enc, &k1);
            let reference: Value = if format == Format::Json {
                serde_json::from_slice(&reference).unwrap()
            } else {
                yaml(&reference)
            };
            assert_eq!(got, reference, "{name}/{ext} against sops -d");
        }
    }
}

#[test]
fn dotenv_and_binary_files_decrypt_byte_for_byte_as_sops() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (keygen(dir.path(), "k1.txt"), keygen(dir.path(), "k2.txt"));
    let env = "# database settings\nDB_USER=admin\nDB_PASSWORD=s3cr3t=with=equals\nMULTI=line1\\nline2\nEMPTY=\nKEY_unencrypted=visible\n";
    let enc = sops_encrypt(dir.path(), "app.env", env.as_bytes(), &[&k1, &k2], &[]);
    assert!(!String::from_utf8_lossy(&enc).contains("s3cr3t"));
    let plain =
        decrypt_document(&enc, Format::Dotenv, Format::Dotenv, &keys(&[&k2]), true).unwrap();
    assert_eq!(String::from_utf8(plain.0.clone()).unwrap(), env);
    assert_eq!(plain.0, sops_decrypt(dir.path(), "app.env", &enc, &k2));
    // tampered dotenv MAC
    let text = String::from_utf8(enc.clone()).unwrap();
    let tampered = text.replace("KEY_unencrypted=visible", "KEY_unencrypted=changed");
    let e = decrypt_document(
        tampered.as_bytes(),
        Format::Dotenv,
        Format::Dotenv,
        &keys(&[&k1]),
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DecryptError::Mac(_)), "{e}");

    let bin = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHHIG...\n-----END CERTIFICATE-----\n\ttabs and \"quotes\" \u{e9}\n";
    let enc = sops_encrypt(dir.path(), "tls.crt", bin.as_bytes(), &[&k1], &[]);
    assert!(enc.starts_with(b"{"), "binary files are a JSON envelope");
    let plain =
        decrypt_document(&enc, Format::Binary, Format::Binary, &keys(&[&k1]), true).unwrap();
    assert_eq!(plain.0, bin.as_bytes());
    assert_eq!(plain.0, sops_decrypt(dir.path(), "tls.crt", &enc, &k1));
}

fn kustomize_build(dir: &Path) -> Vec<Value> {
    let out = Command::new(support::kustomize())
        .arg("build")
        .arg(dir)
        .output()
        .expect("kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n").map(|d| yaml(d.as_bytes())).collect()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap().replace('\n', ""))
            .unwrap(),
    )
    .unwrap()
}

/// secretGenerator inputs in a base reached through `resources`: decrypted before the build in
/// the build directory; built without that step, the Secret's `data` holds the encrypted files
/// and `decrypt_object` decrypts them (Flux's second path).
#[test]
fn secret_generator_inputs_decrypt_before_the_build_and_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("build");
    let base = root.join("apps/base");
    std::fs::create_dir_all(&base).unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let env = "USER=admin\nPASSWORD=generator-secret\n";
    let cfg = "server:\n  token: yaml-file-secret\n";
    let txt = "raw-file-secret\n";
    std::fs::write(
        base.join("app.env"),
        sops_encrypt(dir.path(), "app.env", env.as_bytes(), &[&k1], &[]),
    )
    .unwrap();
    std::fs::write(
        base.join("config.yaml"),
        sops_encrypt(dir.path(), "config.yaml", cfg.as_bytes(), &[&k1], &[]),
    )
    .unwrap();
    std::fs::write(
        base.join("raw.txt"),
        sops_encrypt(dir.path(), "raw.txt", txt.as_bytes(), &[&k1], &[]),
    )
    .unwrap();
    std::fs::write(base.join("plain.txt"), "not encrypted\n").unwrap();
    std::fs::write(
        base.join("kustomization.yaml"),
        "secretGenerator:\n- name: app\n  envs: [app.env]\n  files: [config.yaml, token=raw.txt, plain.txt]\ngeneratorOptions:\n  disableNameSuffixHash: true\n",
    )
    .unwrap();
    std::fs::write(root.join("kustomization.yaml"), "resources: [apps/base]\n").unwrap();
    let copy = dir.path().join("copy");
    Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&copy)
        .status()
        .unwrap();

    // after the build: data values are whole SOPS files
    let objs = kustomize_build(&copy);
    let secret = &objs[0];
    assert!(b64(&secret["data"]["token"]).contains("\"mac\": \"ENC["));
    let out = decrypt_object(secret, &keys(&[&k1]))
        .unwrap()
        .expect("changed");
    assert_eq!(b64(&out["data"]["token"]), txt);
    assert_eq!(
        yaml(b64(&out["data"]["config.yaml"]).as_bytes()),
        yaml(cfg.as_bytes())
    );
    assert_eq!(b64(&out["data"]["plain.txt"]), "not encrypted\n");

    // before the build
    let done = decrypt_sources(&root, &root, &keys(&[&k1])).unwrap();
    assert_eq!(
        done,
        [
            "apps/base/app.env",
            "apps/base/config.yaml",
            "apps/base/raw.txt"
        ]
    );
    assert_eq!(std::fs::read_to_string(base.join("app.env")).unwrap(), env);
    assert_eq!(std::fs::read_to_string(base.join("raw.txt")).unwrap(), txt);
    let objs = kustomize_build(&root);
    assert_eq!(b64(&objs[0]["data"]["PASSWORD"]), "generator-secret");
    assert_eq!(b64(&objs[0]["data"]["token"]), txt);
    assert_eq!(
        decrypt_object(&objs[0], &keys(&[&k1])).unwrap(),
        None,
        "nothing left to decrypt"
    );

    // a wrong key names the file, not its contents
    let k2 = keygen(dir.path(), "k2.txt");
    let e = decrypt_sources(&copy, &copy, &keys(&[&k2])).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("error decrypting sources: failed to decrypt 'apps/base/"),
        "{msg}"
    );
    assert!(msg.contains("cannot get sops data key"), "{msg}");
    assert_no_plaintext(
        &e,
        &["generator-secret", "yaml-file-secret", "raw-file-secret"],
    );
    // a reference leaving the build directory
    std::fs::write(
        copy.join("kustomization.yaml"),
        "secretGenerator:\n- name: x\n  files: [../k1.txt]\n",
    )
    .unwrap();
    let e = decrypt_sources(&copy, &copy, &keys(&[&k1])).unwrap_err();
    assert!(e.to_string().contains("outside the build directory"), "{e}");
}

#[test]
fn opt_out_annotation_and_plain_objects_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let enc = regex_encrypted_secret(dir.path(), &k1);
    let mut obj = yaml(&enc);
    obj["metadata"]["annotations"] = json!({"kustomize.toolkit.fluxcd.io/decrypt": "Disabled"});
    assert_eq!(decrypt_object(&obj, &keys(&[&k1])).unwrap(), None);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
    assert_eq!(decrypt_object(&cm, &keys(&[&k1])).unwrap(), None);
}

/// A decrypted secretGenerator file becomes a Secret value: written as sops writes it (YAML
/// with 4-space indent, JSON with tabs), byte for byte for these documents.
#[test]
fn yaml_and_json_files_are_emitted_as_sops_does() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let doc = "str: hello
int: 42
float: 1.5
bool_t: true
empty: \"\"
nothing: null
quoted_number: \"0755\"
long: \"aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk llll mmmm nnnn oooo pppp qqqq rrrr\"
multi: |
  line one
  line two
nested:
  map:
    deep: value
    list: [1, two, 3.25, false]
list:
  - a
  - key: v
    other: 9
";
    let json = r#"{"a": 1, "b": {"c": [1, "x", true, null], "d": 2.5}, "e": ""}"#;
    for (name, plain, format) in [
        ("f.yaml", doc, Format::Yaml),
        ("f.json", json, Format::Json),
    ] {
        let enc = sops_encrypt(dir.path(), name, plain.as_bytes(), &[&k1], &[]);
        let ours = decrypt_document(&enc, format, format, &keys(&[&k1]), true).unwrap();
        let theirs = sops_decrypt(dir.path(), name, &enc, &k1);
        assert_eq!(
            String::from_utf8(ours.0).unwrap(),
            String::from_utf8(theirs).unwrap(),
            "{name}"
        );
    }
}

/// A multi-document YAML file: sops keeps one `sops` block per document and one MAC over all.
#[test]
fn multi_document_yaml_decrypts_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let doc = "a: first-secret\nn: 1\n---\nb: second-secret\nlist: [x, z]\n";
    let enc = sops_encrypt(dir.path(), "multi.yaml", doc.as_bytes(), &[&k1], &[]);
    let plain = decrypt_document(&enc, Format::Yaml, Format::Yaml, &keys(&[&k1]), true).unwrap();
    let theirs = sops_decrypt(dir.path(), "multi.yaml", &enc, &k1);
    let docs = |b: &[u8]| -> Vec<Value> {
        serde_saphyr::from_str_multiple(std::str::from_utf8(b).unwrap()).unwrap()
    };
    assert_eq!(docs(&plain.0), docs(doc.as_bytes()));
    assert_eq!(docs(&plain.0), docs(&theirs));
    // dropping the second document breaks the MAC
    let text = String::from_utf8(enc).unwrap();
    let first = text.split("\n---\n").next().unwrap();
    let e = decrypt_document(
        first.as_bytes(),
        Format::Yaml,
        Format::Yaml,
        &keys(&[&k1]),
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DecryptError::Mac(_)), "{e}");
}

/// Plain (not encrypted) scalars count in the MAC: sops rewrites them on encryption (`yes`
/// quoted, `0755` → `493`, `1_000` → `1000`, a date → an RFC 3339 timestamp) and the MAC only
/// matches when each is read back with the type and bytes sops hashed.
#[test]
fn plain_scalars_in_the_mac_are_typed_as_sops_types_them() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1.txt");
    let doc = "secret: s3cr3t-value
plain:
  yes_word: yes
  y: y
  on: on
  octal: 0755
  octal12: 0o17
  hex: 0x1F
  under: 1_000
  tilde: ~
  exp: 1e3
  neg_float: -0.5
  date: 2026-12-05
  text: \"quoted\"
";
    let enc = sops_encrypt(
        dir.path(),
        "t.yaml",
        doc.as_bytes(),
        &[&k1],
        &["--encrypted-regex", "^secret$"],
    );
    let plain = decrypt_document(&enc, Format::Yaml, Format::Json, &keys(&[&k1]), true).unwrap();
    let v: Value = serde_json::from_slice(&plain.0).unwrap();
    assert_eq!(v["secret"], "s3cr3t-value");
}
