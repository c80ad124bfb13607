//! ArtifactGenerators (`source.extensions.fluxcd.io/v1beta1`, Flux's source-watcher), wired by
//! [`super::kind`]: one reconcile is finalizer / deletion → [`validate`] → observe the sources
//! (their `status.artifact`) → [`drift`] → extract the sources (from storage, else their URL) → per output
//! artifact: stage ([`apply_copy`]), archive (`externalartifact/<ns>/<name>/<hash>.tar.gz`),
//! apply the `ExternalArtifact` and its status → delete the ExternalArtifacts no longer in the
//! spec → status ([`apply_step`]) → Events → GC.
//!
//! A change of a GitRepository, OCIRepository, HelmChart or ExternalArtifact reconciles the
//! generators naming it (the watch maps it), so a new source revision regenerates at once; an
//! unchanged copied content keeps the artifact's file, digest and `latest@<digest>` revision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::kind::{Ctx, Source};
use super::{Error, blocking, emit_event, kube_err, patch_finalizers, write_status};
use crate::api::source::{
    Artifact, ArtifactGenerator, ExternalArtifact, ExternalArtifactReference, GENERATOR_FINALIZER,
    GENERATOR_LABEL, GENERATOR_RECONCILE_ANNOTATION, GitRepository, HelmChart, OCIRepository,
};
use crate::gitops::conditions::{self, reasons, types};
use crate::gitops::reconcile_request::requested_at;
use crate::source::artifact::{UntarLimits, untar_gz};
use crate::source::generator::{
    EXTERNAL_ARTIFACT_KIND, MSG_DISABLED, ObservedSource, RECONCILIATION_DISABLED,
    SOURCE_FETCH_FAILED, Step, apply_copy, apply_step, changed_message, contents_hash, drift,
    observed_sources_digest, orphans, parse_copy, revisions, staging_dir, validate,
};
use crate::source::git_repository::Notice;
use crate::source::ignore::IgnoreRules;

/// source-watcher's `GetRequeueAfter`: a generator is re-checked hourly.
const REQUEUE: Duration = Duration::from_secs(3600);
/// source-watcher's `--requeue-dependency` default: a source not ready is asked again after 5 s
/// (its own change wakes the generator sooner).
const DEPENDENCY_REQUEUE: Duration = Duration::from_secs(5);
/// `app.kubernetes.io/managed-by` of the generated ExternalArtifacts.
const MANAGED_BY: &str = "pennant";

impl Source for ArtifactGenerator {
    const KIND: &'static str = "ArtifactGenerator";
    const READS_SECRETS: bool = false;
    fn interval(&self) -> Option<Duration> {
        Some(REQUEUE)
    }
    fn secret_names(&self) -> Vec<&str> {
        vec![]
    }
}

/// The generators of the cache naming the source `kind` `ns`/`name`.
fn generators_of(
    store: &Store<ArtifactGenerator>,
    kind: &str,
    ns: Option<String>,
    name: &str,
) -> Vec<ObjectRef<ArtifactGenerator>> {
    store
        .state()
        .iter()
        .filter(|g| {
            g.spec.sources.iter().any(|s| {
                s.kind == kind
                    && s.name == name
                    && s.namespace
                        .clone()
                        .filter(|n| !n.is_empty())
                        .or(g.namespace())
                        == ns
            })
        })
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
}

/// The ArtifactGenerator controller: its watch (its first list counted by `gate` for
/// `/readyz`), the source kinds' watches mapped to the generators naming them, run until
/// `shutdown`.
pub(super) fn controller(
    ctx: Ctx<ArtifactGenerator>,
    scope: &crate::runtime::Scope,
    shutdown: crate::runtime::Shutdown,
    gate: Option<&super::kind::SyncGate>,
) -> impl std::future::Future<Output = ()> + Send {
    let client = ctx.client.clone();
    let (store, watch) =
        super::kind::watch_counted::<ArtifactGenerator>(&client, scope, gate, None);
    let cfg = || watcher::Config::default().any_semantic();
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store);
    let watch = watch
        .watches(
            super::scoped_api::<GitRepository>(&client, scope),
            cfg(),
            move |r| generators_of(&s1, "GitRepository", r.namespace(), &r.name_any()),
        )
        .watches(
            super::scoped_api::<OCIRepository>(&client, scope),
            cfg(),
            move |r| generators_of(&s2, "OCIRepository", r.namespace(), &r.name_any()),
        )
        .watches(
            super::scoped_api::<HelmChart>(&client, scope),
            cfg(),
            move |r| generators_of(&s3, "HelmChart", r.namespace(), &r.name_any()),
        )
        .watches(
            super::scoped_api::<ExternalArtifact>(&client, scope),
            cfg(),
            move |r| generators_of(&s4, "ExternalArtifact", r.namespace(), &r.name_any()),
        );
    super::kind::run(watch, shutdown, Arc::new(ctx), reconcile)
}

fn notice(warning: bool, reason: &str, message: String) -> Notice {
    Notice {
        warning,
        reason: reason.into(),
        message,
        annotations: BTreeMap::new(),
    }
}

/// One reconcile of one ArtifactGenerator.
async fn reconcile(
    generator: Arc<ArtifactGenerator>,
    ctx: Arc<Ctx<ArtifactGenerator>>,
) -> Result<Action, Error> {
    let ns = generator.namespace().unwrap_or_default();
    let api: Api<ArtifactGenerator> = Api::namespaced(ctx.client.clone(), &ns);
    if generator.metadata.deletion_timestamp.is_some() {
        return finalize(&generator, &ctx, &api).await;
    }
    let mut generator = generator;
    if !generator
        .finalizers()
        .iter()
        .any(|f| f == GENERATOR_FINALIZER)
    {
        let op = if generator.finalizers().is_empty() {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [GENERATOR_FINALIZER]})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": GENERATOR_FINALIZER})
        };
        generator = Arc::new(patch_finalizers(&*generator, &api, op).await?);
    }
    let disabled = generator
        .annotations()
        .get(GENERATOR_RECONCILE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled"));
    if disabled {
        info!(kind = "ArtifactGenerator", name = %generator.name_any(), reason = RECONCILIATION_DISABLED, "{MSG_DISABLED}");
        return Ok(Action::await_change());
    }
    let generation = generator.metadata.generation.unwrap_or_default();
    let requested = requested_at(generator.metadata.annotations.as_ref()).map(String::from);
    let old_status = generator.status.clone();
    let mut status = old_status.clone().unwrap_or_default();
    let record = |status: &crate::api::source::ArtifactGeneratorStatus| {
        let (g, api, status) = (generator.clone(), api.clone(), status.clone());
        async move { write_status(&*g, g.status.as_ref(), &status, &api).await }
    };
    let now = || Time(Timestamp::now());
    // a stop before any generation: the status written, its Warning recorded once per new
    // condition (not at each source change or retry)
    let stop = |step: Step| {
        let mut st = status.clone();
        let (reason, message) = match &step {
            Step::Stalled { reason, message } | Step::Failed { reason, message } => {
                (reason.clone(), message.clone())
            }
            _ => Default::default(),
        };
        apply_step(&mut st, step, generation, requested.as_deref(), &now());
        let (changed, g, ctx) = (
            old_status.as_ref() != Some(&st),
            generator.clone(),
            ctx.clone(),
        );
        let write = record(&st);
        async move {
            write.await?;
            if changed {
                emit_event(
                    &*g,
                    &notice(true, &reason, message),
                    &ctx.client,
                    &ctx.instance,
                )
                .await;
            }
            Ok::<(), Error>(())
        }
    };
    let stalled = |reason: &str, message: String| Step::Stalled {
        reason: reason.into(),
        message,
    };
    if let Err((reason, message)) = validate(&generator, false) {
        stop(stalled(reason, message)).await?;
        return Ok(Action::await_change());
    }
    if let Some(p) = generator
        .spec
        .path_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let message = format!("spec.pathPattern '{p}' is not supported by pennant yet");
        stop(stalled("UnsupportedField", message)).await?;
        return Ok(Action::await_change());
    }
    // the sources' artifacts
    let observed = match observe(&generator, &ctx).await {
        Ok(o) => o,
        Err(e) => {
            stop(Step::Failed {
                reason: SOURCE_FETCH_FAILED.into(),
                message: format!("get sources failed: {e}"),
            })
            .await?;
            return Ok(Action::requeue(DEPENDENCY_REQUEUE));
        }
    };
    let digest = observed_sources_digest(
        &observed
            .iter()
            .map(|(k, (o, _))| (k.clone(), o.clone()))
            .collect(),
    );
    let ea_api: Api<ExternalArtifact> = Api::namespaced(ctx.client.clone(), &ns);
    let published: BTreeMap<String, Option<Artifact>> = {
        let mut m = BTreeMap::new();
        for r in generator.status.iter().flat_map(|s| &s.inventory) {
            let ea = ea_api
                .get_opt(&r.name)
                .await
                .map_err(kube_err("get ExternalArtifact"))?;
            m.insert(r.name.clone(), ea.and_then(|e| e.status?.artifact));
        }
        m
    };
    // the stored files re-hashed off the runtime
    let (storage, inventory) = (
        ctx.storage.clone(),
        generator
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default(),
    );
    let stored: BTreeMap<String, bool> = blocking(move || {
        inventory
            .iter()
            .map(|r| {
                let ok = crate::source::storage::Storage::artifact_path(
                    EXTERNAL_ARTIFACT_KIND,
                    &r.namespace,
                    &r.name,
                    &r.filename,
                )
                .is_ok_and(|p| storage.verify(&p, &r.digest));
                (r.name.clone(), ok)
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let drifted = drift(
        &generator,
        &digest,
        |r| stored.get(&r.name).copied().unwrap_or(false),
        |r| {
            published
                .get(&r.name)
                .and_then(|a| a.as_ref())
                .is_some_and(|a| a.digest == r.digest)
        },
    );
    let Some(why) = drifted else {
        if requested.is_some() && status.last_handled_reconcile_at != requested {
            status.last_handled_reconcile_at = requested.clone();
            record(&status).await?;
        }
        return Ok(Action::requeue(REQUEUE));
    };
    info!(kind = "ArtifactGenerator", name = %generator.name_any(), namespace = %ns, reason = why, "generating artifacts");
    apply_step(&mut status, Step::Progressing, generation, None, &now());
    write_status(&*generator, old_status.as_ref(), &status, &api).await?;
    let written = status.clone();
    // extract, stage, archive: blocking file work
    let built = match fetch_sources(&observed, &ctx.storage).await {
        Err(m) => Err((SOURCE_FETCH_FAILED, format!("fetch sources failed: {m}"))),
        Ok((work, archives)) => {
            let (gen2, storage, ns2) = (generator.clone(), ctx.storage.clone(), ns.clone());
            let sources = observed.clone();
            blocking(move || build(&gen2, &sources, &archives, work.path(), &storage, &ns2))
                .await
                .unwrap_or_else(|e| Err((reasons::BUILD_FAILED, e)))
        }
    };
    let finish_failed = |status: &mut crate::api::source::ArtifactGeneratorStatus,
                         reason: &str,
                         message: String| {
        apply_step(
            status,
            Step::Failed {
                reason: reason.into(),
                message,
            },
            generation,
            requested.as_deref(),
            &Time(Timestamp::now()),
        );
    };
    let built = match built {
        Ok(b) => b,
        Err((reason, message)) => {
            finish_failed(&mut status, reason, message.clone());
            write_status(&*generator, Some(&written), &status, &api).await?;
            emit_event(
                &*generator,
                &notice(true, reason, message.clone()),
                &ctx.client,
                &ctx.instance,
            )
            .await;
            return Err(Error::Failed(message));
        }
    };
    // publish
    let mut inventory = vec![];
    for (name, artifact) in built {
        let reference = ExternalArtifactReference {
            name: name.clone(),
            namespace: ns.clone(),
            digest: artifact.digest.clone(),
            filename: artifact.file_name().to_string(),
        };
        if let Err(e) = publish(
            &generator,
            &ea_api,
            &name,
            &artifact,
            published.get(&name).cloned().flatten(),
        )
        .await
        {
            let message = format!("{name} reconcile failed: {e}");
            finish_failed(&mut status, reasons::RECONCILIATION_FAILED, message.clone());
            write_status(&*generator, Some(&written), &status, &api).await?;
            emit_event(
                &*generator,
                &notice(true, reasons::RECONCILIATION_FAILED, message.clone()),
                &ctx.client,
                &ctx.instance,
            )
            .await;
            return Err(Error::Failed(message));
        }
        let (storage, ns2, n2, file) = (
            ctx.storage.clone(),
            ns.clone(),
            name.clone(),
            reference.filename.clone(),
        );
        if let Err(e) = blocking(move || {
            storage
                .gc(
                    EXTERNAL_ARTIFACT_KIND,
                    &ns2,
                    &n2,
                    Some(&file),
                    SystemTime::now(),
                )
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r)
        {
            warn!(kind = "ArtifactGenerator", name = %name, "garbage collection: {e}");
        }
        inventory.push(reference);
    }
    // garbage: the ExternalArtifacts no longer in the spec
    let old_inventory = generator
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    for orphan in orphans(&old_inventory, &inventory) {
        delete_artifact(&ctx, &orphan).await;
    }
    let changed = changed_message(&old_inventory, &inventory);
    apply_step(
        &mut status,
        Step::Succeeded {
            inventory,
            sources_digest: digest,
        },
        generation,
        requested.as_deref(),
        &now(),
    );
    write_status(&*generator, Some(&written), &status, &api).await?;
    if let Some(m) = changed {
        emit_event(
            &*generator,
            &notice(false, types::READY, m),
            &ctx.client,
            &ctx.instance,
        )
        .await;
    }
    let seed = Timestamp::now().subsec_nanosecond().unsigned_abs() as u64;
    Ok(Action::requeue(
        crate::source::git_repository::next_interval(REQUEUE, seed),
    ))
}

/// Each source's observed artifact and its storage path, by alias. Errors name the source
/// (source-watcher's messages: the API's not-found, `source '<Kind>/<ns>/<name>' is not ready`).
async fn observe(
    generator: &ArtifactGenerator,
    ctx: &Ctx<ArtifactGenerator>,
) -> Result<BTreeMap<String, (ObservedSource, String)>, String> {
    let own = generator.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    for s in &generator.spec.sources {
        let ns = s
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own.clone());
        let c = ctx.client.clone();
        let get_err = |e: kube::Error| match &e {
            kube::Error::Api(s) if s.code == 404 => s.message.clone(),
            _ => format!("unable to get source '{ns}/{}': {e}", s.name),
        };
        let artifact = match s.kind.as_str() {
            "GitRepository" => artifact_of::<GitRepository>(c, &ns, &s.name).await,
            "OCIRepository" => artifact_of::<OCIRepository>(c, &ns, &s.name).await,
            "HelmChart" => artifact_of::<HelmChart>(c, &ns, &s.name).await,
            "ExternalArtifact" => artifact_of::<ExternalArtifact>(c, &ns, &s.name).await,
            k => return Err(format!("source `{}` kind '{k}' not supported", s.name)),
        };
        let Some(a) = artifact.map_err(get_err)? else {
            return Err(format!("source '{}/{ns}/{}' is not ready", s.kind, s.name));
        };
        out.insert(s.alias.clone(), (ObservedSource::of(&a), a.path.clone()));
    }
    Ok(out)
}

/// The source's `status.artifact`.
async fn artifact_of<K>(
    client: kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<Artifact>, kube::Error>
where
    K: crate::api::source::Source
        + kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let obj: K = Api::namespaced(client, ns).get(name).await?;
    Ok(obj.artifact().cloned())
}

/// Largest source artifact downloaded over HTTP (Flux's fetcher: unlimited; here 1 GiB).
const MAX_DOWNLOAD: u64 = 1 << 30;

/// The sources' tarballs by alias: this process's stored file when it is there with the
/// observed digest, else downloaded from the artifact's URL into a temp directory (returned,
/// removed on drop) and checked against the digest.
async fn fetch_sources(
    sources: &BTreeMap<String, (ObservedSource, String)>,
    storage: &crate::source::storage::Storage,
) -> Result<(tempfile::TempDir, BTreeMap<String, PathBuf>), String> {
    let work = tempfile::Builder::new()
        .prefix("pennant-ag-")
        .tempdir()
        .map_err(|e| format!("failed to create tmp dir: {e}"))?;
    let mut out = BTreeMap::new();
    for (alias, (o, path)) in sources {
        let (st, p, d) = (storage.clone(), path.clone(), o.digest.clone());
        let local = blocking(move || st.local_path(&p).filter(|_| st.verify(&p, &d)))
            .await
            .ok()
            .flatten();
        if let Some(l) = local {
            out.insert(alias.clone(), l);
            continue;
        }
        let client = crate::source::http::client(&Default::default(), Duration::from_secs(60))?;
        let resp = client
            .get(&o.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("failed to download artifact from '{}': {e}", o.url))?;
        let file = work.path().join(format!("{alias}.tar.gz"));
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        let got = crate::source::http::download_to(resp, f, MAX_DOWNLOAD)
            .await
            .map_err(|e| format!("failed to download artifact from '{}': {e}", o.url))?;
        if got.digest != o.digest {
            return Err(format!(
                "failed to verify artifact: computed digest doesn't match '{}'",
                o.digest
            ));
        }
        out.insert(alias.clone(), file);
    }
    Ok((work, out))
}

/// Extracts the sources' tarballs ([`fetch_sources`]) under `work` and builds every
/// output artifact: `(name, stored artifact)` in spec order, or `(reason, message)`.
fn build(
    generator: &ArtifactGenerator,
    sources: &BTreeMap<String, (ObservedSource, String)>,
    archives: &BTreeMap<String, PathBuf>,
    work: &Path,
    storage: &crate::source::storage::Storage,
    ns: &str,
) -> Result<Vec<(String, Artifact)>, (&'static str, String)> {
    let fetch_failed = |m: String| (SOURCE_FETCH_FAILED, format!("fetch sources failed: {m}"));
    let mut dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (alias, archive) in archives {
        let dir = work.join("sources").join(alias);
        let f = std::fs::File::open(archive).map_err(|e| fetch_failed(e.to_string()))?;
        untar_gz(f, &dir, &UntarLimits::default()).map_err(|e| fetch_failed(e.to_string()))?;
        dirs.insert(alias.clone(), dir);
    }
    let observed: BTreeMap<String, ObservedSource> = sources
        .iter()
        .map(|(k, (o, _))| (k.clone(), o.clone()))
        .collect();
    let rules =
        IgnoreRules::from_patterns(None).map_err(|e| (reasons::BUILD_FAILED, e.to_string()))?;
    let mut out = vec![];
    for a in &generator.spec.artifacts {
        let fail = |e: String| {
            (
                reasons::BUILD_FAILED,
                format!("{} build failed: {e}", a.name),
            )
        };
        let staging = staging_dir(work, &a.name);
        std::fs::create_dir_all(&staging)
            .map_err(|e| fail(format!("failed to create staging dir: {e}")))?;
        for op in &a.copy {
            let c = parse_copy(op).map_err(&fail)?;
            let src: &Path = dirs
                .get(&c.alias)
                .ok_or_else(|| fail(format!("source alias '{}' not found", c.alias)))?;
            apply_copy(&c, src, &staging).map_err(|e| {
                fail(format!(
                    "failed to apply copy operations: failed to apply copy operation from '{}' to '{}': {e}",
                    op.from, op.to
                ))
            })?;
        }
        let hash = contents_hash(&staging, &a.name)
            .map_err(|e| fail(format!("failed to hash staging dir: {e}")))?;
        let stored = storage
            .archive_dir(
                EXTERNAL_ARTIFACT_KIND,
                ns,
                &a.name,
                &format!("{hash}.tar.gz"),
                &staging,
                &rules,
            )
            .map_err(|e| fail(format!("failed to create artifact: {e}")))?;
        let (revision, metadata) = revisions(
            &stored.digest,
            a.revision.as_deref(),
            a.origin_revision.as_deref(),
            &observed,
        );
        out.push((
            a.name.clone(),
            Artifact {
                path: stored.path,
                url: stored.url,
                revision,
                digest: stored.digest,
                last_update_time: Time(stored.last_update_time),
                size: i64::try_from(stored.size).ok(),
                metadata,
            },
        ));
    }
    Ok(out)
}

/// Server-side applies the ExternalArtifact (labels, annotations, `spec.sourceRef`) and writes
/// its status when the artifact changed (`Ready=True`, `Artifact is ready`); an unchanged
/// artifact keeps its `lastUpdateTime`.
async fn publish(
    generator: &ArtifactGenerator,
    api: &Api<ExternalArtifact>,
    name: &str,
    artifact: &Artifact,
    current: Option<Artifact>,
) -> Result<(), String> {
    let mut labels = generator
        .spec
        .common_metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels.insert(GENERATOR_LABEL.into(), generator.uid().unwrap_or_default());
    let annotations = generator
        .spec
        .common_metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());
    let ns = generator.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": crate::api::source::API_VERSION,
        "kind": "ExternalArtifact",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"sourceRef": {
            "apiVersion": crate::api::source::EXTENSIONS_API_VERSION,
            "kind": "ArtifactGenerator",
            "name": generator.name_any(),
            "namespace": ns,
        }},
    });
    let pp = PatchParams::apply(super::FIELD_MANAGER).force();
    let ea = api
        .patch(name, &pp, &Patch::Apply(&body))
        .await
        .map_err(|e| format!("failed to apply ExternalArtifact: {e}"))?;
    let ready = ea
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, types::READY));
    let same = current
        .as_ref()
        .is_some_and(|c| c.same_content(artifact) && c.metadata == artifact.metadata);
    if same && ready {
        return Ok(());
    }
    let mut conds = ea.status.map(|s| s.conditions).unwrap_or_default();
    conditions::mark_true(
        &mut conds,
        types::READY,
        reasons::SUCCEEDED,
        "Artifact is ready",
        ea.metadata.generation.unwrap_or_default(),
        &Time(Timestamp::now()),
    );
    let artifact = match current.filter(|c| c.same_content(artifact)) {
        Some(c) => Artifact {
            metadata: artifact.metadata.clone(),
            ..c
        },
        None => artifact.clone(),
    };
    api.patch_status(
        name,
        &super::patch_params(),
        &Patch::Merge(&json!({"status": {"artifact": artifact, "conditions": conds}})),
    )
    .await
    .map_err(|e| format!("failed to patchStatus ExternalArtifact status: {e}"))?;
    Ok(())
}

/// Deletes an ExternalArtifact the generator made and its stored files (errors logged: the
/// next reconcile does not retry them, as source-watcher).
async fn delete_artifact(ctx: &Ctx<ArtifactGenerator>, r: &ExternalArtifactReference) {
    let api: Api<ExternalArtifact> = Api::namespaced(ctx.client.clone(), &r.namespace);
    match api.delete(&r.name, &DeleteParams::default()).await {
        Ok(_) => info!(externalartifact = %r.name, namespace = %r.namespace, "deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => warn!(externalartifact = %r.name, "delete: {e}"),
    }
    let (storage, ns, name) = (ctx.storage.clone(), r.namespace.clone(), r.name.clone());
    let removed = blocking(move || {
        storage
            .remove_all(EXTERNAL_ARTIFACT_KIND, &ns, &name)
            .map_err(|e| e.to_string())
    })
    .await
    .and_then(|r| r);
    if let Err(e) = removed {
        warn!(externalartifact = %r.name, "removing the artifacts: {e}");
    }
}

/// Deletion: the inventory's ExternalArtifacts and files go, then the finalizer.
async fn finalize(
    generator: &ArtifactGenerator,
    ctx: &Ctx<ArtifactGenerator>,
    api: &Api<ArtifactGenerator>,
) -> Result<Action, Error> {
    let Some(i) = generator
        .finalizers()
        .iter()
        .position(|f| f == GENERATOR_FINALIZER)
    else {
        return Ok(Action::await_change());
    };
    for r in generator.status.iter().flat_map(|s| &s.inventory) {
        delete_artifact(ctx, r).await;
    }
    let op = json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")});
    match patch_finalizers(generator, api, op).await {
        Err(Error::Kube(m)) if m.contains("NotFound") || m.contains("not found") => {}
        r => {
            r?;
        }
    }
    info!(kind = "ArtifactGenerator", name = %generator.name_any(), "artifacts removed, finalizer released");
    Ok(Action::await_change())
}
