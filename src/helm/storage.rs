//! Helm release storage, natively: the `sh.helm.release.v1.<name>.v<revision>` Secrets that the
//! `helm` CLI (Helm 4, Secret driver) writes in the storage namespace (flux.md §2.8).
//!
//! PURE: [`decode`] / [`encode`] of a Secret's `data.release` and [`Release::from_secret`];
//! thin I/O: [`history`], [`latest`] and [`unlock`] (Flux's Unlock action).
//!
//! The payload is `base64(gzip(JSON))`; that base64 string is the Secret *value*, so on the
//! Kubernetes wire it is base64-encoded a second time (k8s-openapi's `ByteString` removes the
//! outer layer). Payloads without the gzip magic (`1f 8b`) are read as plain JSON, as Helm's
//! `decodeRelease` does for releases older than compression. A [`Release`] keeps the whole
//! decoded JSON ([`Release::raw`]), so [`encode`] writes back every field Helm wrote (chart
//! templates, values, schema, lock…) with the typed fields changed.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// The Secret type of a Helm release (`helm.sh/release.v1`).
pub const SECRET_TYPE: &str = "helm.sh/release.v1";

/// The name of the Secret of `release` at `revision`: `sh.helm.release.v1.<release>.v<revision>`.
pub fn secret_name(release: &str, revision: u32) -> String {
    format!("sh.helm.release.v1.{release}.v{revision}")
}

/// A release's status (Helm's `common.Status`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Unknown,
    Deployed,
    Uninstalled,
    Superseded,
    Failed,
    Uninstalling,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    /// A status this version does not know, kept verbatim.
    Other(String),
}

impl Status {
    /// Helm's spelling (`pending-upgrade`).
    pub fn as_str(&self) -> &str {
        match self {
            Status::Unknown => "unknown",
            Status::Deployed => "deployed",
            Status::Uninstalled => "uninstalled",
            Status::Superseded => "superseded",
            Status::Failed => "failed",
            Status::Uninstalling => "uninstalling",
            Status::PendingInstall => "pending-install",
            Status::PendingUpgrade => "pending-upgrade",
            Status::PendingRollback => "pending-rollback",
            Status::Other(s) => s,
        }
    }

    /// From Helm's spelling; an empty string is `Unknown`.
    pub fn parse(s: &str) -> Status {
        match s {
            "" | "unknown" => Status::Unknown,
            "deployed" => Status::Deployed,
            "uninstalled" => Status::Uninstalled,
            "superseded" => Status::Superseded,
            "failed" => Status::Failed,
            "uninstalling" => Status::Uninstalling,
            "pending-install" => Status::PendingInstall,
            "pending-upgrade" => Status::PendingUpgrade,
            "pending-rollback" => Status::PendingRollback,
            other => Status::Other(other.to_string()),
        }
    }

    /// `pending-install`, `pending-upgrade` or `pending-rollback`: the lock Helm refuses to
    /// act under ("another operation (install/upgrade/rollback) is in progress").
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Status::PendingInstall | Status::PendingUpgrade | Status::PendingRollback
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `info` of a release. Times are `None` when Helm left them out (Go's zero time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub status: Status,
    pub description: String,
    pub first_deployed: Option<Timestamp>,
    pub last_deployed: Option<Timestamp>,
    pub deleted: Option<Timestamp>,
    pub notes: String,
}

/// The chart's metadata a release records (from `Chart.yaml`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChartMetadata {
    pub name: String,
    pub version: String,
    /// `appVersion`; empty when the chart has none.
    pub app_version: String,
}

/// The last run of a hook: `phase` is Helm's `Unknown`, `Running`, `Succeeded` or `Failed`
/// (empty when it never ran).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HookRun {
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub phase: String,
}

/// A hook of the release (`helm.sh/hook` objects).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hook {
    pub name: String,
    pub kind: String,
    /// The template it came from (`<chart>/templates/<file>`).
    pub path: String,
    /// `pre-install`, `post-upgrade`, `test`...
    pub events: Vec<String>,
    pub last_run: HookRun,
    pub weight: i64,
    pub delete_policies: Vec<String>,
}

impl Hook {
    /// A `test` hook.
    pub fn is_test(&self) -> bool {
        self.events.iter().any(|e| e == "test")
    }
}

/// One revision of a Helm release, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    pub name: String,
    /// The release namespace (the objects' namespace).
    pub namespace: String,
    /// The revision, from 1.
    pub version: u32,
    pub info: Info,
    pub chart: ChartMetadata,
    /// The user-supplied values (what `helm get values` prints), `{}` when none.
    pub config: Value,
    /// The rendered manifest, documents prefixed `---\n# Source: <chart>/templates/<file>`.
    pub manifest: String,
    pub hooks: Vec<Hook>,
    /// `ssa` or `csa` (Helm 4); empty for a release written by Helm 3.
    pub apply_method: String,
    /// The whole decoded JSON, for [`encode`] to keep what is not typed here.
    pub raw: Value,
}

/// A Secret that is not a readable Helm release.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("release payload is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("release payload is not gzip: {0}")]
    Gzip(std::io::Error),
    #[error("release payload is not a release JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Secret {0} has no data.release")]
    NoPayload(String),
}

/// A storage read or write that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("Helm storage: {0}")]
    Kube(#[from] kube::Error),
    #[error("release {0} revision {1} is not in storage")]
    NotFound(String, u32),
    #[error("release {name} revision {version} is '{status}', not pending: nothing to unlock")]
    NotPending {
        name: String,
        version: u32,
        status: String,
    },
    /// A rewrite found another status than the one it was to replace.
    #[error("release {name} revision {version} is '{status}' now: left as it is")]
    Changed {
        name: String,
        version: u32,
        status: String,
    },
}

fn time(v: &Value) -> Option<Timestamp> {
    let t: Timestamp = v.as_str()?.parse().ok()?;
    // Go's zero time (Helm 3 writes it; Helm 4 omits it)
    (t.as_second() > -62_000_000_000).then_some(t)
}

fn string(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Release {
    /// The typed view of a release JSON.
    pub fn from_json(raw: Value) -> Release {
        let info = &raw["info"];
        let meta = &raw["chart"]["metadata"];
        let hooks = raw["hooks"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| Hook {
                        name: string(&h["name"]),
                        kind: string(&h["kind"]),
                        path: string(&h["path"]),
                        events: strings(&h["events"]),
                        last_run: HookRun {
                            started_at: time(&h["last_run"]["started_at"]),
                            completed_at: time(&h["last_run"]["completed_at"]),
                            phase: string(&h["last_run"]["phase"]),
                        },
                        weight: h["weight"].as_i64().unwrap_or(0),
                        delete_policies: strings(&h["delete_policies"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Release {
            name: string(&raw["name"]),
            namespace: string(&raw["namespace"]),
            version: raw["version"].as_u64().unwrap_or(0) as u32,
            info: Info {
                status: Status::parse(info["status"].as_str().unwrap_or_default()),
                description: string(&info["description"]),
                first_deployed: time(&info["first_deployed"]),
                last_deployed: time(&info["last_deployed"]),
                deleted: time(&info["deleted"]),
                notes: string(&info["notes"]),
            },
            chart: ChartMetadata {
                name: string(&meta["name"]),
                version: string(&meta["version"]),
                app_version: string(&meta["appVersion"]),
            },
            config: match &raw["config"] {
                Value::Null => json!({}),
                c => c.clone(),
            },
            manifest: string(&raw["manifest"]),
            hooks,
            apply_method: string(&raw["apply_method"]),
            raw,
        }
    }

    /// The release JSON: [`Release::raw`] with the typed fields written over it (Helm's keys;
    /// empty strings and absent times left out, as Helm's `omitempty`).
    pub fn to_json(&self) -> Value {
        let mut raw = match &self.raw {
            Value::Object(_) => self.raw.clone(),
            _ => json!({}),
        };
        let set = |o: &mut Value, k: &str, v: Value| {
            if let Value::Object(m) = o {
                match v {
                    Value::Null => {
                        m.remove(k);
                    }
                    Value::String(s) if s.is_empty() => {
                        m.remove(k);
                    }
                    v => {
                        m.insert(k.to_string(), v);
                    }
                }
            }
        };
        let ts = |t: &Option<Timestamp>| t.map_or(Value::Null, |t| Value::String(t.to_string()));
        set(&mut raw, "name", json!(self.name));
        set(&mut raw, "namespace", json!(self.namespace));
        set(&mut raw, "version", json!(self.version));
        set(&mut raw, "manifest", json!(self.manifest));
        set(&mut raw, "apply_method", json!(self.apply_method));
        set(&mut raw, "config", self.config.clone());
        if !raw["info"].is_object() {
            set(&mut raw, "info", json!({}));
        }
        let i = &self.info;
        let info = &mut raw["info"];
        // a time Helm wrote is kept verbatim when unchanged (Go's format, nanoseconds, offset)
        for (k, t) in [
            ("first_deployed", &i.first_deployed),
            ("last_deployed", &i.last_deployed),
            ("deleted", &i.deleted),
        ] {
            if time(&info[k]) != *t {
                set(info, k, ts(t));
            }
        }
        set(info, "status", json!(i.status.as_str()));
        set(info, "description", json!(i.description));
        set(info, "notes", json!(i.notes));
        if !raw["chart"]["metadata"].is_object() && !self.chart.name.is_empty() {
            raw["chart"] = json!({"metadata": {}});
        }
        if raw["chart"]["metadata"].is_object() {
            let m = &mut raw["chart"]["metadata"];
            set(m, "name", json!(self.chart.name));
            set(m, "version", json!(self.chart.version));
            set(m, "appVersion", json!(self.chart.app_version));
        }
        let mut hooks: Vec<Value> = raw["hooks"].as_array().cloned().unwrap_or_default();
        hooks.resize(self.hooks.len(), json!({}));
        for (h, typed) in hooks.iter_mut().zip(&self.hooks) {
            set(h, "name", json!(typed.name));
            set(h, "kind", json!(typed.kind));
            set(h, "path", json!(typed.path));
            set(h, "events", json!(typed.events));
            set(h, "weight", json!(typed.weight));
            if typed.weight == 0 {
                set(h, "weight", Value::Null);
            }
            if !typed.delete_policies.is_empty() || h.get("delete_policies").is_some() {
                set(h, "delete_policies", json!(typed.delete_policies));
            }
            let mut run = h["last_run"].clone();
            if !run.is_object() {
                run = json!({});
            }
            for (k, t) in [
                ("started_at", &typed.last_run.started_at),
                ("completed_at", &typed.last_run.completed_at),
            ] {
                if time(&run[k]) != *t {
                    set(&mut run, k, ts(t));
                }
            }
            run["phase"] = json!(typed.last_run.phase);
            set(h, "last_run", run);
        }
        if hooks.is_empty() {
            set(&mut raw, "hooks", Value::Null);
        } else {
            set(&mut raw, "hooks", Value::Array(hooks));
        }
        raw
    }

    /// The release in a Secret (`data.release`).
    pub fn from_secret(secret: &Secret) -> Result<Release, DecodeError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let payload = secret
            .data
            .as_ref()
            .and_then(|d| d.get("release"))
            .ok_or(DecodeError::NoPayload(name))?;
        decode(&payload.0)
    }

    /// The test hooks.
    pub fn test_hooks(&self) -> impl Iterator<Item = &Hook> {
        self.hooks.iter().filter(|h| h.is_test())
    }
}

/// Decode the value of `data.release` (the bytes after the Kubernetes base64 layer): base64,
/// then gzip when the gzip magic is there, then JSON.
pub fn decode(payload: &[u8]) -> Result<Release, DecodeError> {
    let text: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = B64.decode(text)?;
    let json = if bytes.len() > 3 && bytes[..2] == [0x1f, 0x8b] {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(DecodeError::Gzip)?;
        out
    } else {
        bytes
    };
    Ok(Release::from_json(serde_json::from_slice(&json)?))
}

/// Encode a release as Helm does: JSON, gzip (best compression), base64: the value of
/// `data.release` (before the Kubernetes base64 layer).
pub fn encode(release: &Release) -> Vec<u8> {
    let json = serde_json::to_vec(&release.to_json()).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // writing to a Vec cannot fail
    let _ = gz.write_all(&json);
    let bytes = gz.finish().unwrap_or_default();
    B64.encode(bytes).into_bytes()
}

/// The labels Helm's Secret driver puts on a release Secret (`owner`, `name`, `status`,
/// `version`), over `extra` (custom release labels; the system keys win).
pub fn labels(release: &Release, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = extra.clone();
    l.insert("owner".into(), "helm".into());
    l.insert("name".into(), release.name.clone());
    l.insert("status".into(), release.info.status.as_str().into());
    l.insert("version".into(), release.version.to_string());
    l
}

/// A new Secret holding `release` in `storage_namespace`, as Helm's Secret driver creates it
/// (labels incl. `createdAt` = `now` in Unix seconds, type `helm.sh/release.v1`).
pub fn to_secret(release: &Release, storage_namespace: &str, now: Timestamp) -> Secret {
    let mut l = labels(release, &BTreeMap::new());
    l.insert("createdAt".into(), now.as_second().to_string());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name(&release.name, release.version)),
            namespace: Some(storage_namespace.to_string()),
            labels: Some(l),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(BTreeMap::from([(
            "release".to_string(),
            ByteString(encode(release)),
        )])),
        ..Default::default()
    }
}

/// Every stored revision of `release` in `storage_namespace`, newest first (by revision).
/// Secrets that do not decode are skipped (Helm's driver fails on them; history must not).
pub async fn history(
    client: &Client,
    storage_namespace: &str,
    release: &str,
) -> Result<Vec<Release>, StorageError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), storage_namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("owner=helm,name={release}")))
        .await?;
    let mut out: Vec<Release> = list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some(SECRET_TYPE))
        .filter_map(|s| Release::from_secret(s).ok())
        .filter(|r| r.name == release)
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.version));
    Ok(out)
}

/// The newest stored revision of `release`, if any.
pub async fn latest(
    client: &Client,
    storage_namespace: &str,
    release: &str,
) -> Result<Option<Release>, StorageError> {
    Ok(history(client, storage_namespace, release)
        .await?
        .into_iter()
        .next())
}

/// The description Flux's Unlock writes: `Release unlocked from stale '<status>' state`.
pub fn unlock_description(status: &Status) -> String {
    format!("Release unlocked from stale '{status}' state")
}

/// Flux's Unlock action: rewrite revision `revision` of `release`, which must be
/// `pending-install|upgrade|rollback`, to `failed` with `description` (use
/// [`unlock_description`] for Flux's). See [`set_status`] for the write. Returns the new
/// release.
pub async fn unlock(
    client: &Client,
    storage_namespace: &str,
    release: &str,
    revision: u32,
    description: &str,
    now: Timestamp,
) -> Result<Release, StorageError> {
    set_status(
        client,
        storage_namespace,
        (release, revision),
        Status::Failed,
        Some(description),
        now,
        |rel| {
            if rel.info.status.is_pending() {
                return Ok(());
            }
            Err(StorageError::NotPending {
                name: release.into(),
                version: revision,
                status: rel.info.status.to_string(),
            })
        },
    )
    .await
}

/// Rewrite the status (and, when given, the description) of revision `revision` of `release`
/// as Helm's driver does, updating the `status` and `modifiedAt` labels too, after `check`
/// accepted the stored revision. The write is a replace with the read's `resourceVersion`, so
/// a concurrent writer (a `helm` still running) makes it fail with a 409 instead of being
/// overwritten. Returns the new release.
pub async fn set_status(
    client: &Client,
    storage_namespace: &str,
    (release, revision): (&str, u32),
    status: Status,
    description: Option<&str>,
    now: Timestamp,
    check: impl FnOnce(&Release) -> Result<(), StorageError>,
) -> Result<Release, StorageError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), storage_namespace);
    let name = secret_name(release, revision);
    let mut secret = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| StorageError::NotFound(release.into(), revision))?;
    let mut rel = Release::from_secret(&secret)?;
    check(&rel)?;
    rel.info.status = status.clone();
    if let Some(d) = description {
        rel.info.description = d.to_string();
    }
    let labels = secret.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert("status".into(), status.as_str().into());
    labels.insert("modifiedAt".into(), now.as_second().to_string());
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert("release".into(), ByteString(encode(&rel)));
    // metadata.resourceVersion from the read: the precondition
    api.replace(&name, &PostParams::default(), &secret).await?;
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release as `helm install --dry-run=client -o json` (Helm v4.3.2) prints it for a
    /// `helm create` chart (`--set replicaCount=2`), with `info.status`/`description` set to
    /// what a real install ends with (a dry run stops at `pending-install`).
    fn fixture() -> Value {
        serde_json::from_str(include_str!("testdata/release-v4.json")).unwrap()
    }

    fn gzip_b64(json: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(json).unwrap();
        B64.encode(gz.finish().unwrap()).into_bytes()
    }

    #[test]
    fn decodes_a_helm_4_release_payload() {
        let json = serde_json::to_vec(&fixture()).unwrap();
        let r = decode(&gzip_b64(&json)).unwrap();
        assert_eq!(r.name, "demo");
        assert_eq!(r.namespace, "default");
        assert_eq!(r.version, 1);
        assert_eq!(r.info.status, Status::Deployed);
        assert_eq!(r.info.description, "Install complete");
        assert!(r.info.first_deployed.is_some() && r.info.last_deployed.is_some());
        assert_eq!(r.info.deleted, None);
        assert_eq!(
            r.chart,
            ChartMetadata {
                name: "demo".into(),
                version: "0.1.0".into(),
                app_version: "1.16.0".into()
            }
        );
        assert_eq!(r.config, json!({"replicaCount": 2}));
        assert!(
            r.manifest
                .contains("# Source: demo/templates/deployment.yaml")
        );
        assert_eq!(r.apply_method, "ssa");
        let test = r.test_hooks().next().expect("a test hook");
        assert_eq!(test.events, vec!["test"]);
        assert_eq!(test.kind, "Pod");
    }

    #[test]
    fn plain_json_payloads_are_accepted() {
        let json = serde_json::to_vec(&fixture()).unwrap();
        let r = decode(B64.encode(&json).as_bytes()).unwrap();
        assert_eq!(r.name, "demo");
    }

    #[test]
    fn double_base64_is_an_error_not_garbage() {
        // the Kubernetes layer left on: base64 of the base64 string
        let json = serde_json::to_vec(&fixture()).unwrap();
        let twice = B64.encode(gzip_b64(&json)).into_bytes();
        assert!(decode(&twice).is_err());
    }

    #[test]
    fn encode_round_trips_and_keeps_untyped_fields() {
        let r = Release::from_json(fixture());
        let back = decode(&encode(&r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.raw["chart"]["templates"],
            fixture()["chart"]["templates"],
            "chart templates kept"
        );
        assert_eq!(
            back.raw["info"]["first_deployed"],
            fixture()["info"]["first_deployed"]
        );
        let mut changed = r.clone();
        changed.info.status = Status::Failed;
        changed.info.description = unlock_description(&Status::PendingUpgrade);
        let back = decode(&encode(&changed)).unwrap();
        assert_eq!(back.info.status, Status::Failed);
        assert_eq!(
            back.info.description,
            "Release unlocked from stale 'pending-upgrade' state"
        );
        assert_eq!(back.raw["info"]["status"], "failed");
    }

    #[test]
    fn statuses_parse_and_print_helms_spelling() {
        for s in [
            "unknown",
            "deployed",
            "uninstalled",
            "superseded",
            "failed",
            "uninstalling",
            "pending-install",
            "pending-upgrade",
            "pending-rollback",
            "something-new",
        ] {
            assert_eq!(Status::parse(s).as_str(), s);
        }
        assert!(Status::parse("pending-rollback").is_pending());
        assert!(!Status::parse("failed").is_pending());
    }

    #[test]
    fn secrets_are_named_and_labelled_as_helms_driver() {
        let r = Release::from_json(fixture());
        let s = to_secret(&r, "store", Timestamp::from_second(1_700_000_000).unwrap());
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("sh.helm.release.v1.demo.v1")
        );
        let l = s.metadata.labels.clone().unwrap();
        assert_eq!(l["owner"], "helm");
        assert_eq!(l["name"], "demo");
        assert_eq!(l["status"], "deployed");
        assert_eq!(l["version"], "1");
        assert_eq!(l["createdAt"], "1700000000");
        assert_eq!(s.type_.as_deref(), Some("helm.sh/release.v1"));
        assert_eq!(Release::from_secret(&s).unwrap(), r);
    }

    #[test]
    fn go_zero_times_are_none() {
        let mut raw = fixture();
        raw["info"]["deleted"] = json!("0001-01-01T00:00:00Z");
        assert_eq!(Release::from_json(raw).info.deleted, None);
    }
}
