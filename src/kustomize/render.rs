//! The render half of a Kustomization's reconcile, shared by the controller
//! ([`super::controller`]) and `pennant build|diff ks` ([`crate::cmd::kustomization`]): the
//! source's artifact, downloaded and unpacked ([`fetch_artifact`]), then [`render`]: SOPS
//! decryption of the generator/patch files ([`super::decrypt`], age keys of
//! `spec.decryption.secretRef`) → [`build`] (the real `kustomize`) → decryption of the built
//! objects → postBuild substitution ([`post_build`], variables from `substituteFrom`
//! ConfigMaps/Secrets) → `spec.commonMetadata`. Flux's order (kustomize-controller's `build`).
//!
//! Errors carry Flux's reason (`ArtifactFailed`, `BuildFailed`) and message; none carries a
//! decrypted value or key material.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::build::{BuildOptions, build, resolve_path, set_common_metadata};
use super::decrypt::{Keys, decrypt_objects, decrypt_sources};
use super::substitute::{Options as SubstituteOptions, merge_variables, substitute_object};
use crate::api::kustomization::Kustomization;
use crate::api::source::{Artifact, ExternalArtifact, GitRepository, OCIRepository};
use crate::gitops::conditions::reasons;

/// A failed render step: Flux's reason and message; `terminal` when retrying cannot help
/// without a spec change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub reason: &'static str,
    pub message: String,
    pub terminal: bool,
}

fn fail(reason: &'static str, message: impl Into<String>) -> RenderError {
    RenderError {
        reason,
        message: message.into(),
        terminal: false,
    }
}

/// The API server's message of an error (never the Debug form of its `Status`).
pub fn cause_of(e: kube::Error) -> String {
    match e {
        kube::Error::Api(a) => a.message,
        e => e.to_string(),
    }
}

/// `(kind, namespace, name)` of the Kustomization's source (namespace defaulting to its own).
pub fn source_key(ks: &Kustomization) -> (String, String, String) {
    let r = &ks.spec.source_ref;
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| ks.namespace())
        .unwrap_or_default();
    (r.kind.clone(), ns, r.name.clone())
}

/// What reading the source found.
#[derive(Debug)]
pub enum SourceState {
    /// No such source object.
    Missing,
    /// The source exists but has no artifact yet.
    NoArtifact,
    Ready(Artifact),
    /// `sourceRef.kind` is none of GitRepository, OCIRepository, ExternalArtifact.
    UnsupportedKind(String),
}

/// Read the Kustomization's source object and its `status.artifact`.
pub async fn source_state(ks: &Kustomization, client: &Client) -> Result<SourceState, kube::Error> {
    let (kind, ns, name) = source_key(ks);
    let artifact = match kind.as_str() {
        "GitRepository" => {
            artifact_of::<GitRepository>(client, &ns, &name, |s| s.status?.artifact).await?
        }
        "OCIRepository" => {
            artifact_of::<OCIRepository>(client, &ns, &name, |s| s.status?.artifact).await?
        }
        "ExternalArtifact" => {
            artifact_of::<ExternalArtifact>(client, &ns, &name, |s| s.status?.artifact).await?
        }
        _ => return Ok(SourceState::UnsupportedKind(kind)),
    };
    Ok(match artifact {
        None => SourceState::Missing,
        Some(None) => SourceState::NoArtifact,
        Some(Some(a)) => SourceState::Ready(a),
    })
}

/// `Some(artifact)` of the source `ns/name`, `None` when the source does not exist.
async fn artifact_of<K>(
    client: &Client,
    ns: &str,
    name: &str,
    artifact: fn(K) -> Option<Artifact>,
) -> Result<Option<Option<Artifact>>, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .map(artifact))
}

/// Download the artifact, verify its digest, unpack it into `work/src`; returns that directory
/// (`ArtifactFailed` with Flux's messages).
pub async fn fetch_artifact(a: &Artifact, work: &Path) -> Result<PathBuf, RenderError> {
    crate::source::fetch::fetch_and_unpack(a, work)
        .await
        .map_err(|m| fail(reasons::ARTIFACT_FAILED, m))
}

/// Render the Kustomization from the artifact tree at `root` (a scratch copy: generated
/// kustomization files and decrypted inputs are written into it): the objects as the
/// controller applies them, before the owner labels (see the module doc). `BuildFailed` on
/// any step's error.
pub async fn render(
    ks: &Kustomization,
    client: &Client,
    root: PathBuf,
    options: &BuildOptions,
) -> Result<Vec<Value>, RenderError> {
    let keys = decryption_keys(ks, client).await?;
    let (spec, opts) = (ks.spec.clone(), options.clone());
    let (built, keys) = tokio::task::spawn_blocking(move || {
        if let Some(keys) = &keys {
            // the tree is this run's own copy: decrypted files never reach the artifact store
            let dir = resolve_path(&root, spec.path.as_deref().unwrap_or(""))
                .map_err(|e| e.to_string())?;
            decrypt_sources(&root, &dir, keys).map_err(|e| e.to_string())?;
        }
        build(&root, &spec, &opts)
            .map(|b| (b, keys))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| fail(reasons::BUILD_FAILED, format!("build task failed: {e}")))?
    .map_err(|e| fail(reasons::BUILD_FAILED, e))?;
    // Flux's order: decryption, then postBuild substitution
    let objects =
        decrypt_objects(built, keys.as_ref()).map_err(|e| fail(reasons::BUILD_FAILED, e))?;
    drop(keys);
    let mut objects = post_build(ks, objects, client).await?;
    // Flux: spec.commonMetadata labels and annotations on every object, after substitution
    if let Some(common) = &ks.spec.common_metadata {
        set_common_metadata(&mut objects, common);
    }
    Ok(objects)
}

/// The keys of `spec.decryption` (`None` when unset), as Flux's `ImportKeys`: the `*.agekey`
/// entries of the `secretRef` Secret in the Kustomization's namespace (no `secretRef`: no
/// keys, so only unencrypted objects pass). `BuildFailed` with Flux's
/// `cannot get sops decryption Secret '<ns>/<name>': ...` when it cannot be read, or the
/// import error naming the entry (never its content).
pub async fn decryption_keys(
    ks: &Kustomization,
    client: &Client,
) -> Result<Option<Keys>, RenderError> {
    let Some(d) = &ks.spec.decryption else {
        return Ok(None);
    };
    if d.provider != "sops" {
        return Err(RenderError {
            terminal: true,
            ..fail(
                reasons::BUILD_FAILED,
                format!("not supported decryption provider '{}'", d.provider),
            )
        });
    }
    let Some(r) = &d.secret_ref else {
        return Ok(Some(
            Keys::from_secret("-", &BTreeMap::new()).expect("no entries"),
        ));
    };
    let ns = ks.namespace().unwrap_or_default();
    let secret_name = format!("{ns}/{}", r.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&r.name)
        .await
        .map_err(|e| {
            let cause = cause_of(e);
            fail(
                reasons::BUILD_FAILED,
                format!(
                    "cannot get {} decryption Secret '{secret_name}': {cause}",
                    d.provider
                ),
            )
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Keys::from_secret(&secret_name, &data)
        .map(Some)
        .map_err(|e| fail(reasons::BUILD_FAILED, e.to_string()))
}

/// postBuild substitution: variables from `substituteFrom` (in order; a missing `optional`
/// source is skipped) and `substitute`, applied to every object (`BuildFailed` on error).
pub async fn post_build(
    ks: &Kustomization,
    objects: Vec<Value>,
    client: &Client,
) -> Result<Vec<Value>, RenderError> {
    let Some(pb) = &ks.spec.post_build else {
        return Ok(objects);
    };
    let ns = ks.namespace().unwrap_or_default();
    let mut sources: Vec<BTreeMap<String, String>> = vec![];
    for r in &pb.substitute_from {
        let optional = r.optional == Some(true);
        let data = match r.kind.as_str() {
            "ConfigMap" => Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
                .map(|c| c.map(|c| c.data.unwrap_or_default())),
            "Secret" => Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
                .map(|s| {
                    s.map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect()
                    })
                }),
            other => {
                return Err(fail(
                    reasons::BUILD_FAILED,
                    format!(
                        "substitute from '{other}/{}' error: unsupported kind",
                        r.name
                    ),
                ));
            }
        };
        match data {
            Ok(Some(d)) => sources.push(d),
            Ok(None) if optional => {}
            Ok(None) => {
                return Err(fail(
                    reasons::BUILD_FAILED,
                    format!(
                        "substitute from '{}/{}' error: {}s \"{}\" not found",
                        r.kind,
                        r.name,
                        r.kind.to_lowercase(),
                        r.name
                    ),
                ));
            }
            Err(e) => {
                return Err(fail(
                    reasons::BUILD_FAILED,
                    format!(
                        "substitute from '{}/{}' error: {}",
                        r.kind,
                        r.name,
                        cause_of(e)
                    ),
                ));
            }
        }
    }
    let vars = merge_variables(sources.iter(), &pb.substitute);
    let options = SubstituteOptions {
        always: pb.substitute_strategy.as_deref() == Some("Always"),
        ..Default::default()
    };
    objects
        .iter()
        .map(|o| {
            substitute_object(o, &vars, options)
                .map_err(|e| fail(reasons::BUILD_FAILED, e.to_string()))
        })
        .collect()
}
