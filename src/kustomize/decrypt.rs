//! SOPS decryption for Kustomizations (`spec.decryption.provider: sops`), as kustomize-controller
//! v1.9.x's `internal/decryptor` does it, with the data key unwrapped natively for age keys.
//!
//! The SOPS format (getsops/sops v3.11, `sops.go`, `aes/cipher.go`, `stores/`):
//! * Every encrypted leaf is `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`, AES-256-GCM
//!   with a 32-byte nonce under the file's 32-byte data key; the additional data is the leaf's
//!   key path joined with `:` plus a trailing `:` (list indices are not part of the path), e.g.
//!   `data:password:`. `type` is `str`, `int`, `float`, `bool`, `bytes`, `time` or `comment`.
//! * Which leaves are encrypted: all, unless `unencrypted_suffix`, `encrypted_suffix`,
//!   `unencrypted_regex` or `encrypted_regex` (matched against every key of the path) say
//!   otherwise. With `*_comment_regex` (comments are not kept here) a leaf is taken as encrypted
//!   when it has the `ENC[...]` shape. Empty strings are never encrypted.
//! * The data key is age-encrypted (armored) once per recipient in `sops.age[]` (or
//!   `sops.key_groups[0].age[]`); any identity of the decryption Secret may open it.
//! * The MAC: SHA-512 over the plain leaves in document order (strings as is, ints and floats in
//!   Go's shortest form, bools `True`/`False`, comments and nulls skipped; with
//!   `mac_only_encrypted` only the encrypted leaves, after a fixed 32-byte prefix), upper-case
//!   hex, stored encrypted in `sops.mac` with `sops.lastmodified` as additional data.
//!
//! What pennant does with it (Flux's behaviour, its messages):
//! * [`decrypt_sources`]: before the build, secretGenerator `files`/`envs` (and patch files)
//!   reachable from the kustomization are decrypted in place, in the temporary build directory
//!   (the caller's copy, never the artifact store). The MAC is verified (Flux skips it; a file
//!   is untouched between `sops -e` and here, so a mismatch is tampering).
//! * [`decrypt_object`]: after the build, an object carrying a `sops.mac` is decrypted leaf
//!   by leaf (each leaf is authenticated by GCM with its path); the MAC is not checked, as in
//!   Flux, because kustomize rewrites metadata (namespace, labels, prefixes). A Secret whose
//!   `data` values are whole SOPS files (a secretGenerator over encrypted files that were not
//!   decrypted before) has those values decrypted, the output format chosen from the key name.
//! * Key types: age X25519 identities (`*.agekey` entries, several per entry, `#` comments).
//!   PGP (`*.asc`), AWS KMS, GCP KMS, Azure Key Vault and HashiCorp Vault entries of the Secret
//!   are ignored; a document only those could open fails with "decryption provider key type X
//!   is not supported", as do age plugin and post-quantum identities, and Shamir key groups.
//! * Output of a decrypted file is written as sops writes it (YAML: 4-space indent, indented
//!   lists; JSON: tabs; dotenv; binary: the raw `data`), except that YAML comments are dropped
//!   and a list directly inside a list is written one level deeper. INI files are not
//!   supported (clear error); a multi-document YAML file is decrypted as sops does (metadata
//!   of the first document, one MAC over all).
//!
//! Decrypted values are held in [`Plain`], whose `Debug` redacts; no error carries a value.
//! The caller (the Kustomization controller) prefixes object errors with Flux's
//! `decryption failed for '<gvk>/<name>': `.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use regex::Regex;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha512};

/// Annotation that opts an object out of decryption (`disabled`, case-insensitive).
pub const DECRYPT_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/decrypt";

/// Largest encrypted file [`decrypt_sources`] reads (Flux's `maxEncryptedFileSize`, 5 MiB).
pub const MAX_FILE_SIZE: u64 = 5 << 20;

/// The prefix sops hashes first when `mac_only_encrypted` is set (sops.go).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Decrypted bytes. `Debug` prints only the length, so a plaintext never reaches a log line
/// through `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain(pub Vec<u8>);

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plain(<redacted {} bytes>)", self.0.len())
    }
}

/// Why decryption failed. Messages name files, objects, key paths and key types, never a
/// plaintext value nor key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    /// An entry of the decryption Secret that is not a usable key.
    #[error("failed to import '{entry}' data from sops decryption Secret '{secret}': {reason}")]
    Import {
        entry: String,
        secret: String,
        reason: String,
    },
    /// The document is not a SOPS document of its format.
    #[error("failed to load encrypted {format} data: {reason}")]
    Load { format: Format, reason: String },
    /// No key of the decryption Secret opens the data key.
    #[error("cannot get sops data key: {0}")]
    DataKey(String),
    /// A leaf did not decrypt (wrong data key, tampered value, malformed `ENC[...]`).
    #[error("error decrypting sops tree: {0}")]
    Tree(String),
    /// The MAC does not match the decrypted document.
    #[error("failed to verify sops data integrity: {0}")]
    Mac(String),
    /// The decrypted document cannot be written in the output format.
    #[error("failed to emit encrypted {input} file as decrypted {output}: {reason}")]
    Emit {
        input: Format,
        output: Format,
        reason: String,
    },
    /// A built object failed (Flux's message shape, `'<namespace>/<name>' <Kind>`).
    #[error("failed to decrypt and format '{namespace}/{name}' {kind} data: {source}")]
    Object {
        namespace: String,
        name: String,
        kind: String,
        source: Box<DecryptError>,
    },
    /// A `data` entry of a built Secret failed.
    #[error("failed to decrypt and format '{namespace}/{name}' Secret field '{field}': {source}")]
    SecretField {
        namespace: String,
        name: String,
        field: String,
        source: Box<DecryptError>,
    },
    /// A file referenced by a kustomization failed (path relative to the build root).
    #[error("error decrypting sources: failed to decrypt '{file}': {source}")]
    File {
        file: String,
        source: Box<DecryptError>,
    },
    /// Reading the kustomization tree failed.
    #[error("error decrypting sources: {0}")]
    Sources(String),
}

/// SOPS file formats (sops' `formats` package).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
    Binary,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
            Format::Binary => "binary",
        })
    }
}

impl Format {
    /// The format sops infers from a file name (Flux's `formatForPath`: a name ending in
    /// `.dockerconfigjson` is JSON); anything unknown is binary.
    pub fn for_path(path: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".dockerconfigjson") || lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if lower.ends_with(".env") {
            Format::Dotenv
        } else if lower.ends_with(".ini") {
            Format::Ini
        } else {
            Format::Binary
        }
    }

    /// The bytes whose presence marks an encrypted file of this format (Flux's
    /// `sopsFormatToMarkerBytes`).
    pub fn marker(self) -> &'static [u8] {
        match self {
            Format::Binary | Format::Json => b"\"mac\": \"ENC[",
            Format::Dotenv => b"sops_mac=ENC[",
            Format::Ini => b"[sops]",
            Format::Yaml => b"mac: ENC[",
        }
    }

    /// The format whose marker `data` contains (JSON before YAML, as the JSON marker is the
    /// more specific), if any.
    pub fn detect(data: &[u8]) -> Option<Format> {
        [Format::Json, Format::Dotenv, Format::Yaml, Format::Ini]
            .into_iter()
            .find(|f| contains(data, f.marker()))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A key type of the decryption Secret or of a SOPS document other than age X25519.
fn unsupported(kind: &str) -> String {
    format!("decryption provider key type {kind} is not supported")
}

/// The keys of a Kustomization's decryption Secret.
pub struct Keys {
    age: Vec<age::x25519::Identity>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys(<{} age identities>)", self.age.len())
    }
}

impl Keys {
    /// Import the keys from the Secret `secret` (`namespace/name`, for messages) `data`, as
    /// Flux's `ImportKeys`: every `*.agekey` entry holds age identities, one per line, blank
    /// lines and `#` comments skipped. Other entries are ignored: `*.asc` (PGP),
    /// `sops.vault-token`, `sops.aws-kms`, `sops.azure-kv` and `sops.gcp-kms` are not supported,
    /// and a document encrypted only for those key types fails with "decryption provider key
    /// type X is not supported" when it is decrypted.
    pub fn from_secret(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Keys, DecryptError> {
        let mut age = vec![];
        for (entry, value) in data {
            let err = |reason: String| DecryptError::Import {
                entry: entry.clone(),
                secret: secret.to_string(),
                reason,
            };
            if !entry.ends_with(".agekey") {
                continue;
            }
            let text = std::str::from_utf8(value).map_err(|_| err("not UTF-8 text".into()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line.starts_with("AGE-PLUGIN-") || line.starts_with("AGE-SECRET-KEY-PQ-") {
                    return Err(err(format!(
                        "line {}: {}",
                        n + 1,
                        unsupported("age plugin")
                    )));
                }
                let id = line
                    .parse::<age::x25519::Identity>()
                    .map_err(|e| err(format!("line {}: not an age X25519 identity: {e}", n + 1)))?;
                age.push(id);
            }
        }
        Ok(Keys { age })
    }

    /// Keys from age identities given as text (an age key file).
    pub fn from_age_text(text: &str) -> Result<Keys, DecryptError> {
        let data = BTreeMap::from([("identity.agekey".to_string(), text.as_bytes().to_vec())]);
        Keys::from_secret("-", &data)
    }

    /// Number of age identities.
    pub fn len(&self) -> usize {
        self.age.len()
    }

    /// True when no identity was imported.
    pub fn is_empty(&self) -> bool {
        self.age.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The ordered tree (sops' TreeBranch): maps keep document order, which the MAC depends on.

#[derive(Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML or JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map_or(Node::UInt(v), Node::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut out = vec![];
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Node::List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut out: Vec<(String, Node)> = vec![];
                while let Some(k) = map.next_key::<Node>()? {
                    let Node::Str(k) = k else {
                        return Err(de::Error::custom(
                            "tree contains a non-string key; only string keys are supported",
                        ));
                    };
                    let v = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Node::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::UInt(u) => s.serialize_u64(*u),
            // Go's encoders write an integral float64 without a fraction
            Node::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => s.serialize_i64(*f as i64),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(v) => s.serialize_str(v),
            Node::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Node::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl Node {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata (sops' `stores.Metadata`).

struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<Regex>,
    encrypted_regex: Option<Regex>,
    comment_regex: bool,
    mac_only_encrypted: bool,
}

struct Metadata {
    rules: Rules,
    lastmodified: String,
    mac: String,
    /// Armored age stanzas of the (first) key group, with their recipients.
    age: Vec<(String, String)>,
    /// Non-age master key types present in the key group.
    others: Vec<&'static str>,
}

fn str_field(md: &Value, key: &str) -> Option<String> {
    match &md[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl Metadata {
    fn parse(md: &Value) -> Result<Metadata, String> {
        if !md.is_object() {
            return Err("sops metadata not found".into());
        }
        let regex = |key: &str| -> Result<Option<Regex>, String> {
            str_field(md, key)
                .map(|r| Regex::new(&r).map_err(|e| format!("invalid {key}: {e}")))
                .transpose()
        };
        let mac_only_encrypted = match &md["mac_only_encrypted"] {
            Value::Bool(b) => *b,
            Value::String(s) => s == "true",
            _ => false,
        };
        let rules = Rules {
            unencrypted_suffix: str_field(md, "unencrypted_suffix"),
            encrypted_suffix: str_field(md, "encrypted_suffix"),
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
            comment_regex: str_field(md, "unencrypted_comment_regex").is_some()
                || str_field(md, "encrypted_comment_regex").is_some(),
            mac_only_encrypted,
        };
        let groups = md["key_groups"].as_array().cloned().unwrap_or_default();
        if groups.len() > 1 {
            return Err(format!(
                "{} key groups (Shamir secret sharing): {}",
                groups.len(),
                unsupported("key_groups")
            ));
        }
        let group = groups.first().unwrap_or(md);
        let mut age = vec![];
        for a in group["age"].as_array().into_iter().flatten() {
            let enc = a["enc"].as_str().unwrap_or_default().to_string();
            age.push((a["recipient"].as_str().unwrap_or_default().to_string(), enc));
        }
        let others = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"]
            .into_iter()
            .filter(|k| group[*k].as_array().is_some_and(|a| !a.is_empty()))
            .collect();
        Ok(Metadata {
            rules,
            lastmodified: str_field(md, "lastmodified").unwrap_or_default(),
            mac: str_field(md, "mac").unwrap_or_default(),
            age,
            others,
        })
    }

    /// The data key, from the first age stanza one of `keys` opens.
    fn data_key(&self, keys: &Keys) -> Result<[u8; 32], DecryptError> {
        let ids: Vec<&dyn age::Identity> =
            keys.age.iter().map(|i| i as &dyn age::Identity).collect();
        for (_, enc) in &self.age {
            let reader = age::armor::ArmoredReader::new(enc.as_bytes());
            let Ok(dec) = age::Decryptor::new(reader) else {
                continue;
            };
            let Ok(mut stream) = dec.decrypt(ids.iter().copied()) else {
                continue;
            };
            let mut key = vec![];
            if stream.read_to_end(&mut key).is_err() {
                continue;
            }
            return <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
                DecryptError::DataKey("the age-decrypted data key is not 32 bytes".into())
            });
        }
        let recipients: Vec<&str> = self.age.iter().map(|(r, _)| r.as_str()).collect();
        let mut msg = if recipients.is_empty() {
            "the document has no age recipient".to_string()
        } else if keys.is_empty() {
            format!(
                "no age identity to decrypt with (recipients: {})",
                recipients.join(", ")
            )
        } else {
            format!(
                "none of the {} age identities of the decryption Secret is a recipient ({})",
                keys.len(),
                recipients.join(", ")
            )
        };
        for o in &self.others {
            msg.push_str("; ");
            msg.push_str(&unsupported(o));
        }
        Err(DecryptError::DataKey(msg))
    }
}

impl Rules {
    /// sops' `shouldBeEncrypted` over the path's keys.
    fn should_be_encrypted(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(s) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(s.as_str()))
        {
            encrypted = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|p| r.is_match(p))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| r.is_match(p));
        }
        encrypted
    }
}

// ---------------------------------------------------------------------------------------------
// Leaf decryption and the MAC.

type Gcm = AesGcm<Aes256, U32>;

static ENC_RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]").expect("valid regex")
});

/// One decrypted leaf: its plain bytes and sops type.
struct Leaf {
    plain: Plain,
    ty: String,
}

fn decrypt_leaf(value: &str, key: &[u8; 32], aad: &str) -> Result<Leaf, String> {
    let caps = ENC_RE
        .captures(value)
        .ok_or("Input string <redacted> does not match sops' data format")?;
    let b64 = |i: usize, what: &str| {
        B64.decode(&caps[i])
            .map_err(|e| format!("Error base64-decoding {what}: {e}"))
    };
    let (data, iv, tag) = (b64(1, "data")?, b64(2, "iv")?, b64(3, "tag")?);
    if iv.len() != 32 {
        return Err(format!(
            "unsupported iv length {} (sops writes 32 bytes)",
            iv.len()
        ));
    }
    let cipher = Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
    let nonce = Nonce::<U32>::try_from(iv.as_slice()).map_err(|_| "bad iv".to_string())?;
    let mut msg = data;
    msg.extend_from_slice(&tag);
    let plain = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &msg,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| {
            "Could not decrypt with AES_GCM: cipher: message authentication failed".to_string()
        })?;
    Ok(Leaf {
        plain: Plain(plain),
        ty: caps[4].to_string(),
    })
}

/// The typed node for a decrypted leaf (sops' `Cipher.Decrypt` conversions).
fn typed(leaf: Leaf) -> Result<Node, String> {
    let text = String::from_utf8_lossy(&leaf.plain.0).into_owned();
    let bad = |t: &str| format!("decrypted value is not a valid {t}");
    Ok(match leaf.ty.as_str() {
        "str" | "bytes" | "time" | "comment" => Node::Str(text),
        "int" => Node::Int(text.parse().map_err(|_| bad("int"))?),
        "float" => Node::Float(text.parse().map_err(|_| bad("float"))?),
        "bool" => Node::Bool(match text.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(bad("bool")),
        }),
        other => return Err(format!("Unknown datatype: {other}")),
    })
}

/// sops' `ToBytes` of a plain leaf, for the MAC; `None` for nulls (not walked).
fn mac_bytes(n: &Node) -> Option<Vec<u8>> {
    Some(match n {
        Node::Null | Node::Map(_) | Node::List(_) => return None,
        Node::Str(s) => s.as_bytes().to_vec(),
        Node::Int(i) => i.to_string().into_bytes(),
        Node::UInt(u) => u.to_string().into_bytes(),
        // Go's FormatFloat(f, 'f', -1, 64) and Rust's Display agree on finite values
        Node::Float(f) => f.to_string().into_bytes(),
        Node::Bool(true) => b"True".to_vec(),
        Node::Bool(false) => b"False".to_vec(),
    })
}

struct Walk<'a> {
    rules: &'a Rules,
    key: &'a [u8; 32],
    mac: Sha512,
}

impl Walk<'_> {
    fn node(&mut self, n: &mut Node, path: &mut Vec<String>) -> Result<(), String> {
        match n {
            Node::Map(m) => {
                for (k, v) in m.iter_mut() {
                    path.push(k.clone());
                    let r = self.node(v, path);
                    path.pop();
                    r?;
                }
            }
            Node::List(l) => {
                for v in l.iter_mut() {
                    self.node(v, path)?;
                }
            }
            Node::Null => {}
            leaf => {
                let encrypted = if self.rules.comment_regex {
                    matches!(leaf, Node::Str(s) if s.starts_with("ENC[AES256_GCM,"))
                } else {
                    self.rules.should_be_encrypted(path)
                };
                if encrypted {
                    match leaf {
                        Node::Str(s) if s.is_empty() => {}
                        Node::Str(s) => {
                            let aad = format!("{}:", path.join(":"));
                            let l = decrypt_leaf(s, self.key, &aad)
                                .map_err(|e| format!("could not decrypt value at '{aad}': {e}"))?;
                            *leaf = typed(l).map_err(|e| format!("value at '{aad}': {e}"))?;
                        }
                        _ => {
                            return Err(format!(
                                "value at '{}:' should be encrypted but is not a string",
                                path.join(":")
                            ));
                        }
                    }
                }
                if (!self.rules.mac_only_encrypted || encrypted)
                    && let Some(b) = mac_bytes(leaf)
                {
                    self.mac.update(&b);
                }
            }
        }
        Ok(())
    }
}

/// Decrypt `tree` (the document without its `sops` key) in place; returns the computed MAC.
fn decrypt_tree(
    branches: &mut [Node],
    md: &Metadata,
    key: &[u8; 32],
) -> Result<String, DecryptError> {
    let mut w = Walk {
        rules: &md.rules,
        key,
        mac: Sha512::new(),
    };
    if md.rules.mac_only_encrypted {
        w.mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for tree in branches {
        w.node(tree, &mut vec![])
            .map_err(|e| DecryptError::Tree(format!("Error walking tree: {e}")))?;
    }
    let digest = w.mac.finalize();
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect())
}

fn verify_mac(md: &Metadata, key: &[u8; 32], computed: &str) -> Result<(), DecryptError> {
    // Go's time.Format(time.RFC3339) drops fractional seconds
    let lm = strip_fraction(&md.lastmodified);
    let stored = if md.mac.is_empty() {
        return Err(DecryptError::Mac("the document has no MAC".into()));
    } else {
        decrypt_leaf(&md.mac, key, &lm).map_err(DecryptError::Mac)?
    };
    if stored.plain.0 != computed.as_bytes() {
        return Err(DecryptError::Mac(
            "the MAC does not match the decrypted values (the document was modified after encryption)"
                .into(),
        ));
    }
    Ok(())
}

fn strip_fraction(ts: &str) -> String {
    match ts.find('.') {
        Some(dot) => {
            let rest = &ts[dot + 1..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            format!("{}{}", &ts[..dot], &rest[end..])
        }
        None => ts.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Stores: load a document into (tree, metadata) and emit the plain document.

/// Scalars resolved as sops' YAML library (go-yaml v3) resolves them into untyped values, so
/// the MAC over plain values matches: only `true`/`false` spellings are booleans (`yes`, `y`,
/// `on` stay strings) and a leading `0` is octal.
fn yaml_v3_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.legacy_octal_numbers = true;
    o
}

/// The document's branches (several for a multi-document YAML file, each without its `sops`
/// key) and the metadata (of the first document, as sops reads it).
fn load(data: &[u8], format: Format) -> Result<(Vec<Node>, Value), DecryptError> {
    let load_err = |reason: String| DecryptError::Load { format, reason };
    match format {
        Format::Yaml | Format::Json | Format::Binary => {
            let docs: Vec<Node> = if format == Format::Yaml {
                let text = std::str::from_utf8(data).map_err(|_| load_err("not UTF-8".into()))?;
                serde_saphyr::from_str_multiple_with_options(text, yaml_v3_options())
                    .map_err(|e| load_err(format!("invalid YAML: {e}")))?
            } else {
                vec![
                    serde_json::from_slice(data)
                        .map_err(|e| load_err(format!("invalid JSON: {e}")))?,
                ]
            };
            let mut metadata = None;
            let mut branches = vec![];
            for doc in docs {
                let Node::Map(mut m) = doc else {
                    return Err(load_err("the document is not a map".into()));
                };
                if let Some(pos) = m.iter().position(|(k, _)| k == "sops") {
                    let (_, md) = m.remove(pos);
                    if branches.is_empty() {
                        metadata = Some(md.to_json());
                    }
                }
                branches.push(Node::Map(m));
            }
            let metadata = metadata.ok_or_else(|| load_err("sops metadata not found".into()))?;
            Ok((branches, metadata))
        }
        Format::Dotenv => {
            let text = std::str::from_utf8(data).map_err(|_| load_err("not UTF-8".into()))?;
            let mut items = vec![];
            let mut flat = BTreeMap::new();
            for line in text.split('\n') {
                if line.is_empty() {
                    continue;
                }
                if let Some(c) = line.strip_prefix('#') {
                    // a comment: kept under a key no dotenv key can have
                    items.push((format!("#{c}"), Node::Null));
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| load_err("invalid dotenv input line".into()))?;
                let v = v.replace("\\n", "\n");
                match k.strip_prefix("sops_") {
                    Some(mk) => {
                        flat.insert(mk.to_string(), v);
                    }
                    None => items.push((k.to_string(), Node::Str(v))),
                }
            }
            if flat.is_empty() {
                return Err(load_err("sops metadata not found".into()));
            }
            Ok((vec![Node::Map(items)], unflatten(&flat)))
        }
        Format::Ini => Err(load_err(unsupported("ini format"))),
    }
}

/// sops' `UnflattenMetadata`: `age__list_0__map_enc` → `{"age": [{"enc": …}]}`.
fn unflatten(flat: &BTreeMap<String, String>) -> Value {
    let mut root = Value::Object(Default::default());
    for (k, v) in flat {
        let mut tokens: Vec<Result<usize, String>> = vec![];
        let mut rest = k.as_str();
        let first_end = rest.find("__").unwrap_or(rest.len());
        tokens.push(Err(rest[..first_end].to_string()));
        rest = &rest[first_end..];
        while !rest.is_empty() {
            let (is_list, body) = if let Some(b) = rest.strip_prefix("__list_") {
                (true, b)
            } else if let Some(b) = rest.strip_prefix("__map_") {
                (false, b)
            } else {
                break;
            };
            let end = ["__list_", "__map_"]
                .iter()
                .filter_map(|s| body.find(s))
                .min()
                .unwrap_or(body.len());
            let t = &body[..end];
            tokens.push(if is_list {
                Ok(t.parse().unwrap_or(0))
            } else {
                Err(t.to_string())
            });
            rest = &body[end..];
        }
        let mut cur = &mut root;
        for t in tokens {
            cur = match t {
                Err(name) => {
                    if !cur.is_object() {
                        *cur = Value::Object(Default::default());
                    }
                    cur.as_object_mut()
                        .expect("object")
                        .entry(name)
                        .or_insert(Value::Null)
                }
                Ok(i) => {
                    if !cur.is_array() {
                        *cur = Value::Array(vec![]);
                    }
                    let a = cur.as_array_mut().expect("array");
                    while a.len() <= i {
                        a.push(Value::Null);
                    }
                    &mut a[i]
                }
            };
        }
        *cur = Value::String(v.clone());
    }
    root
}

fn emit(branches: &[Node], input: Format, output: Format) -> Result<Plain, DecryptError> {
    let err = |reason: String| DecryptError::Emit {
        input,
        output,
        reason,
    };
    let Some(tree @ Node::Map(m)) = branches.first() else {
        return Err(err("not a map".into()));
    };
    match output {
        // sops' emitters: yaml.v3 with 4-space indent and indented lists, JSON with tabs
        Format::Yaml => {
            let mut options = serde_saphyr::SerializerOptions::default();
            options.indent_step = 4;
            options.compact_list_indent = false;
            options.folded_wrap_chars = usize::MAX;
            let mut docs = vec![];
            for b in branches {
                docs.push(
                    serde_saphyr::to_string_with_options(b, options.clone())
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            Ok(Plain(docs.join("---\n").into_bytes()))
        }
        Format::Json => {
            let mut out = vec![];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            tree.serialize(&mut ser).map_err(|e| err(e.to_string()))?;
            out.push(b'\n');
            Ok(Plain(out))
        }
        Format::Binary => match m.iter().find(|(k, _)| k == "data") {
            Some((_, Node::Str(s))) => Ok(Plain(s.as_bytes().to_vec())),
            _ => Err(err("no 'data' key holding a string".into())),
        },
        Format::Dotenv => {
            let mut out = String::new();
            for (k, v) in m {
                if k.starts_with('#') {
                    out.push_str(k);
                    out.push('\n');
                    continue;
                }
                let value = match v {
                    Node::Str(s) => s.replace('\n', "\\n"),
                    Node::Map(_) | Node::List(_) => {
                        return Err(err(format!(
                            "cannot use complex value in dotenv file; offending key {k}"
                        )));
                    }
                    other => mac_bytes(other)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                };
                out.push_str(&format!("{k}={value}\n"));
            }
            Ok(Plain(out.into_bytes()))
        }
        Format::Ini => Err(err(unsupported("ini format"))),
    }
}

/// Decrypt a dotenv tree's encrypted comments (sops keeps a comment that does not decrypt).
fn decrypt_dotenv_comments(tree: &mut Node, md: &Metadata, key: &[u8; 32]) {
    let Node::Map(m) = tree else { return };
    // a comment's path is the empty path (sops walks comment keys at the parent's path)
    if !md.rules.should_be_encrypted(&[]) && !md.rules.comment_regex {
        return;
    }
    for (k, _) in m.iter_mut() {
        if let Some(c) = k.strip_prefix('#')
            && let Ok(l) = decrypt_leaf(c, key, ":")
        {
            *k = format!("#{}", String::from_utf8_lossy(&l.plain.0));
        }
    }
}

/// Decrypt one SOPS document (sops' `decrypt.DataWithFormat`, Flux's `SopsDecryptWithFormat`):
/// load it as `input`, unwrap the data key with `keys`, decrypt every leaf, verify the MAC when
/// `check_mac`, and emit the plain document as `output` (`binary`: the raw `data` bytes).
///
/// Errors: [`DecryptError::Load`], [`DecryptError::DataKey`] (wrong key, unsupported key type),
/// [`DecryptError::Tree`] (tampered value), [`DecryptError::Mac`], [`DecryptError::Emit`].
pub fn decrypt_document(
    data: &[u8],
    input: Format,
    output: Format,
    keys: &Keys,
    check_mac: bool,
) -> Result<Plain, DecryptError> {
    let (mut branches, md) = load(data, input)?;
    let md = Metadata::parse(&md).map_err(|reason| DecryptError::Load {
        format: input,
        reason,
    })?;
    let key = md.data_key(keys)?;
    let mac = decrypt_tree(&mut branches, &md, &key)?;
    if check_mac {
        verify_mac(&md, &key, &mac)?;
    }
    if input == Format::Dotenv {
        decrypt_dotenv_comments(&mut branches[0], &md, &key);
    }
    emit(&branches, input, output)
}

// ---------------------------------------------------------------------------------------------
// Built objects.

/// True when the object opts out with `kustomize.toolkit.fluxcd.io/decrypt: disabled`.
pub fn decryption_disabled(obj: &Value) -> bool {
    obj["metadata"]["annotations"][DECRYPT_ANNOTATION]
        .as_str()
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
}

/// True when the object carries SOPS metadata with a MAC (Flux's `isSOPSEncryptedResource`).
pub fn is_encrypted(obj: &Value) -> bool {
    obj["sops"]["mac"].as_str().is_some_and(|m| !m.is_empty())
}

/// Decrypt one built object (Flux's `DecryptResource`). Returns `Ok(None)` when nothing was
/// to decrypt (opted out, not encrypted, not a Secret with encrypted `data` values), else the
/// decrypted object without its `sops` key. See the module docs for what is decrypted and why
/// the MAC is not checked here.
pub fn decrypt_object(obj: &Value, keys: &Keys) -> Result<Option<Value>, DecryptError> {
    if decryption_disabled(obj) {
        return Ok(None);
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (namespace, name, kind) = (
        s(&obj["metadata"]["namespace"]),
        s(&obj["metadata"]["name"]),
        s(&obj["kind"]),
    );
    if is_encrypted(obj) {
        let wrap = |e: DecryptError| DecryptError::Object {
            namespace: namespace.clone(),
            name: name.clone(),
            kind: kind.clone(),
            source: Box::new(e),
        };
        let mut tree: Node = serde_json::from_value(obj.clone()).map_err(|e| {
            wrap(DecryptError::Load {
                format: Format::Json,
                reason: e.to_string(),
            })
        })?;
        let Node::Map(m) = &mut tree else {
            return Ok(None);
        };
        let pos = m
            .iter()
            .position(|(k, _)| k == "sops")
            .expect("checked above");
        let (_, md) = m.remove(pos);
        let md = Metadata::parse(&md.to_json()).map_err(|reason| {
            wrap(DecryptError::Load {
                format: Format::Json,
                reason,
            })
        })?;
        let key = md.data_key(keys).map_err(wrap)?;
        decrypt_tree(std::slice::from_mut(&mut tree), &md, &key).map_err(wrap)?;
        return Ok(Some(tree.to_json()));
    }
    if kind != "Secret" {
        return Ok(None);
    }
    let Some(data) = obj["data"].as_object() else {
        return Ok(None);
    };
    let mut out = obj.clone();
    let mut changed = false;
    for (field, value) in data {
        // a value that is not base64 is left for the apply to reject, as in Flux
        // Go's decoder skips line breaks, which kustomize writes into long values
        let Some(bytes) = value.as_str().and_then(|v| {
            let v: String = v.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            B64.decode(v).ok()
        }) else {
            continue;
        };
        let Some(input) = Format::detect(&bytes) else {
            continue;
        };
        let plain =
            decrypt_document(&bytes, input, Format::for_path(field), keys, false).map_err(|e| {
                DecryptError::SecretField {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    field: field.clone(),
                    source: Box::new(e),
                }
            })?;
        out["data"][field] = Value::String(B64.encode(&plain.0));
        changed = true;
    }
    Ok(changed.then_some(out))
}

// ---------------------------------------------------------------------------------------------
// Sources before the build.

/// Decrypt, in place under `root` (the temporary build directory, never the artifact store),
/// every SOPS-encrypted file the kustomization in `dir` and the local kustomizations it reaches
/// through `resources`/`components`/`bases` refer to as secretGenerator `files` (format from the
/// key name) and `envs`/`env` (dotenv unless the name says otherwise), and as patch files
/// (Flux's `DecryptSources`). A file without the format's marker is left alone; a path leaving
/// `root`, a non-regular file or one above [`MAX_FILE_SIZE`] is an error. Returns the decrypted
/// files, relative to `root`. The MAC of every file is verified.
pub fn decrypt_sources(root: &Path, dir: &Path, keys: &Keys) -> Result<Vec<String>, DecryptError> {
    let root = root
        .canonicalize()
        .map_err(|e| DecryptError::Sources(format!("{}: {e}", root.display())))?;
    let mut visited_dirs = std::collections::BTreeSet::new();
    let mut done = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let rel = |p: &Path| {
        p.strip_prefix(&root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    while let Some(d) = stack.pop() {
        let Ok(d) = d.canonicalize() else { continue };
        if !d.starts_with(&root) || !d.is_dir() || !visited_dirs.insert(d.clone()) {
            continue;
        }
        let Some(kfile) = super::build::KUSTOMIZATION_FILE_NAMES
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.is_file())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&kfile)
            .map_err(|e| DecryptError::Sources(format!("{}: {e}", rel(&kfile))))?;
        let kus: Value = serde_saphyr::from_str(&text).map_err(|e| {
            DecryptError::Sources(format!(
                "failed to unmarshal kustomization file from '{}': {e}",
                rel(&kfile)
            ))
        })?;
        let mut refs: Vec<(String, Format)> = vec![];
        for g in kus["secretGenerator"].as_array().into_iter().flatten() {
            for f in g["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
            {
                let (key, path) = f.split_once('=').unwrap_or((f, f));
                refs.push((path.to_string(), Format::for_path(key)));
            }
            let envs = g["envs"].as_array().cloned().unwrap_or_default();
            for e in envs
                .iter()
                .chain(std::iter::once(&g["env"]))
                .filter_map(|e| e.as_str())
            {
                let f = match Format::for_path(e) {
                    Format::Binary => Format::Dotenv,
                    f => f,
                };
                refs.push((e.to_string(), f));
            }
        }
        for p in kus["patches"].as_array().into_iter().flatten() {
            if let Some(path) = p["path"].as_str()
                && !path.contains("://")
            {
                refs.push((path.to_string(), Format::for_path(path)));
            }
        }
        for (path, format) in refs {
            let full = d.join(path.trim_start_matches('/'));
            let file = rel(&full);
            let ferr = |e: DecryptError| DecryptError::File {
                file: file.clone(),
                source: Box::new(e),
            };
            let src = |reason: String| ferr(DecryptError::Sources(reason));
            let real = full.canonicalize().map_err(|e| src(e.to_string()))?;
            if !real.starts_with(&root) {
                return Err(src("path points outside the build directory".into()));
            }
            if done.contains(&real) {
                continue;
            }
            let meta = std::fs::metadata(&real).map_err(|e| src(e.to_string()))?;
            if !meta.is_file() {
                return Err(src(
                    "cannot decrypt irregular file as it has file mode type bits set".into(),
                ));
            }
            if meta.len() > MAX_FILE_SIZE {
                return Err(src(format!(
                    "cannot decrypt file with size ({} bytes) exceeding limit ({MAX_FILE_SIZE})",
                    meta.len()
                )));
            }
            let data = std::fs::read(&real).map_err(|e| src(e.to_string()))?;
            if !contains(&data, format.marker()) {
                continue;
            }
            let plain = decrypt_document(&data, format, format, keys, true).map_err(ferr)?;
            write_private(&real, &plain).map_err(|e| src(e.to_string()))?;
            done.insert(real.clone());
        }
        for field in ["resources", "components", "bases"] {
            for r in kus[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
            {
                let p: PathBuf = d.join(r);
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    Ok(done.iter().map(|p| rel(p)).collect())
}

/// Replace `path` with `plain`, mode 0600, through a temporary file in the same directory.
fn write_private(path: &Path, plain: &Plain) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&plain.0)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// kustomize's `ResId` string of a built object, as Flux names it in decryption errors:
/// `<Kind>.<version>.<group>/<name>.<namespace>`, with `[noGrp]` for the core group and
/// `[noNs]` for a cluster-scoped object (e.g. `Secret.v1.[noGrp]/db.apps`). PURE.
pub fn res_id(obj: &Value) -> String {
    let s = |v: &Value, none: &str| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(none)
            .to_string()
    };
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let group = if group.is_empty() { "[noGrp]" } else { group };
    let version = if version.is_empty() {
        "[noVer]"
    } else {
        version
    };
    format!(
        "{}.{version}.{group}/{}.{}",
        s(&obj["kind"], "[noKind]"),
        s(&obj["metadata"]["name"], "[noName]"),
        s(&obj["metadata"]["namespace"], "[noNs]")
    )
}

/// The decryption step on the built objects (Flux's per-resource `DecryptResource`): with
/// `keys` (`spec.decryption` set) every SOPS-encrypted object, or Secret with encrypted `data`
/// values, is replaced by its plain form; without, an object that still carries SOPS metadata
/// is an error rather than ciphertext applied to the cluster. Errors are Flux's
/// `decryption failed for '<res id>': <cause>` ([`res_id`]); they never carry a plaintext
/// value or key material. PURE.
pub fn decrypt_objects(objects: Vec<Value>, keys: Option<&Keys>) -> Result<Vec<Value>, String> {
    objects
        .into_iter()
        .map(|o| match keys {
            Some(keys) => match decrypt_object(&o, keys) {
                Ok(Some(plain)) => Ok(plain),
                Ok(None) => Ok(o),
                Err(e) => Err(format!("decryption failed for '{}': {e}", res_id(&o))),
            },
            None if is_encrypted(&o) && !decryption_disabled(&o) => Err(format!(
                "decryption failed for '{}': the object is SOPS-encrypted but spec.decryption \
                 is not set (set spec.decryption.provider: sops and a secretRef holding the \
                 age key, or annotate it {DECRYPT_ANNOTATION}: disabled)",
                res_id(&o)
            )),
            None => Ok(o),
        })
        .collect()
}

#[cfg(test)]
#[path = "decrypt_tests.rs"]
mod tests;
