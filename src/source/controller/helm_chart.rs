//! HelmCharts: one reconcile ([`decide`] → finalizer / deletion / build from the source →
//! store → [`outcome`] → status → Events → GC), wired by [`super::kind`]; a change of a
//! HelmRepository or GitRepository reconciles the HelmCharts that use it ([`charts_of`]).
//!
//! Builds: from a HelmRepository, the chart version selected in its stored index (parsed once
//! per revision, [`IndexCache`]) is downloaded with the repository's credentials and checked;
//! stored as it is, or unpacked and re-packaged with the merged `valuesFiles`. From a
//! GitRepository, its artifact is extracted and the chart directory at `spec.chart` packaged
//! by pennant itself ([`helm_package`], Helm's layout), not by the `helm` CLI. Chart
//! dependencies (`charts/`, `Chart.lock`) are packaged as they are in the tree, never fetched.

// The `Err` of the build steps is the failed [`Attempt`] itself (returned as is by `?`), large
// only because its `Stored` variant is; once per reconcile, never in a loop.
#![allow(clippy::result_large_err)]

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use super::kind::{Ctx, Source, finish, prepare};
use super::oci::secret_data;
use super::{Error, blocking, emit_event, kept_artifact, write_status};
use crate::api::source::{Artifact, HelmChart, HelmRepository, parse_interval};
use crate::gitops::conditions::{self, reasons, types};
use crate::source::artifact::{UntarLimits, untar_gz};
use crate::source::git_repository::Plan;
use crate::source::helm_chart::{
    Attempt, Built, ChartPlan, ChartSource, PACKAGED, PULLED, artifact_file, build_reasons,
    build_summary, chart_revision, decide, outcome, reusable,
};
use crate::source::helm_index::{
    ChartRepo, DEFAULT_MAX_CHART_FILE_SIZE, DEFAULT_MAX_CHART_SIZE, HelmAuth, IndexCache,
    IndexLimits, check_chart,
};
use crate::source::helm_package::{self, Edits, merge_values, read_chart};
use crate::source::helm_repository::{basic_auth, tls_config};

impl Source for HelmChart {
    const KIND: &'static str = "HelmChart";
    fn interval(&self) -> Option<std::time::Duration> {
        parse_interval(&self.spec.interval)
    }
    fn secret_names(&self) -> Vec<&str> {
        vec![]
    }
    // a chart reads its HelmRepository's Secrets; a change of the repository (its status
    // after a Secret change too) reconciles the chart through the source watch
    const READS_SECRETS: bool = false;
}

/// The HelmCharts of the namespace whose `sourceRef` is `kind`/`name`.
pub(super) fn charts_of(
    charts: &Store<HelmChart>,
    kind: &str,
    ns: Option<String>,
    name: &str,
) -> Vec<ObjectRef<HelmChart>> {
    charts
        .state()
        .iter()
        .filter(|c| {
            c.namespace() == ns && c.spec.source_ref.kind == kind && c.spec.source_ref.name == name
        })
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// One reconcile of one HelmChart.
pub(super) async fn reconcile(
    chart: Arc<HelmChart>,
    ctx: Arc<Ctx<HelmChart>>,
) -> Result<Action, Error> {
    let (chart, plan) = match prepare(chart, &ctx, decide).await? {
        Ok(p) => p,
        Err(done) => return Ok(done),
    };
    let kept = kept_artifact(
        chart.status.as_ref().and_then(|s| s.artifact.as_ref()),
        &ctx.storage,
    )
    .await;
    let attempt = match plan {
        Plan::Fetch(plan) => build(&chart, &plan, kept.as_ref(), &ctx).await,
        Plan::Stall { reason, message } => Attempt::Stalled { reason, message },
        _ => return Ok(Action::await_change()),
    };
    let now = Time(Timestamp::now());
    let out = outcome(&chart, kept, attempt, &now);
    let api: Api<HelmChart> =
        Api::namespaced(ctx.client.clone(), &chart.namespace().unwrap_or_default());
    write_status(&*chart, chart.status.as_ref(), &out.status, &api).await?;
    for n in &out.notices {
        emit_event(&*chart, n, &ctx.client, &ctx.instance).await;
    }
    let current = out
        .status
        .artifact
        .as_ref()
        .map(|a| a.file_name().to_string());
    finish(&*chart, &ctx, current, &out.status.conditions, out.result).await
}

fn fail(condition: &'static str, reason: &str, message: impl Into<String>) -> Attempt {
    Attempt::Failed {
        condition,
        reason: reason.into(),
        message: message.into(),
    }
}

/// A ready source's artifact, or the `FetchFailed` attempt saying why not.
fn source_artifact<K>(
    store: Option<&Store<K>>,
    kind: &str,
    ns: &str,
    name: &str,
    ready_artifact: impl Fn(&K) -> Option<Artifact>,
) -> Result<(Arc<K>, Artifact), Attempt>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let obj = store
        .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        .ok_or_else(|| {
            fail(
                types::FETCH_FAILED,
                "SourceUnavailable",
                format!("failed to get source: {kind} '{ns}/{name}' not found"),
            )
        })?;
    let artifact = ready_artifact(&obj).ok_or_else(|| {
        fail(
            types::FETCH_FAILED,
            "NoSourceArtifact",
            format!("no artifact available for {kind} source '{name}'"),
        )
    })?;
    Ok((obj, artifact))
}

/// The build: what [`outcome`] is told.
async fn build(
    chart: &HelmChart,
    plan: &ChartPlan,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Attempt {
    match &plan.source {
        ChartSource::HelmRepository(name) => from_helm_repository(chart, plan, name, kept, ctx)
            .await
            .unwrap_or_else(|a| a),
        ChartSource::GitRepository(name) => from_git_repository(chart, plan, name, kept, ctx)
            .await
            .unwrap_or_else(|a| a),
    }
}

async fn from_helm_repository(
    chart: &HelmChart,
    plan: &ChartPlan,
    repo_name: &str,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Result<Attempt, Attempt> {
    const KIND: &str = HelmChart::KIND;
    let ns = chart.namespace().unwrap_or_default();
    let (repo, index_artifact) = source_artifact(
        ctx.sources.helm_repos.as_ref(),
        "HelmRepository",
        &ns,
        repo_name,
        |r: &HelmRepository| {
            let st = r.status.as_ref()?;
            st.artifact
                .clone()
                .filter(|_| conditions::is_true(&st.conditions, types::READY))
        },
    )?;
    if repo.spec.is_oci() {
        return Err(Attempt::Stalled {
            reason: super::super::git_repository::INVALID_SPEC.into(),
            message: format!(
                "HelmRepository '{repo_name}' is of type oci: charts from OCI registries are not \
                 supported by pennant's HelmChart yet"
            ),
        });
    }
    // the stored index, parsed once per revision
    let Some(index_path) = ctx.storage.local_path(&index_artifact.path) else {
        return Err(fail(
            types::FETCH_FAILED,
            "NoSourceArtifact",
            "the HelmRepository's index is not in storage",
        ));
    };
    let cache = ctx
        .sources
        .indexes
        .clone()
        .unwrap_or_else(|| Arc::new(IndexCache::new(1)));
    let revision = index_artifact.revision.clone();
    let limits = IndexLimits {
        max_size: ctx.helm_index_max_size,
        ..IndexLimits::default()
    };
    let index = blocking(move || cache.get_or_parse(&revision, &index_path, &limits))
        .await
        .map_err(|e| fail(types::FETCH_FAILED, "IndexationFailed", e))?
        .map_err(|e| fail(types::FETCH_FAILED, e.reason(), e.to_string()))?
        .0;
    let version = index
        .select(&plan.chart, &plan.version)
        .map_err(|e| fail(types::BUILD_FAILED, e.reason(), e.to_string()))?
        .clone();
    let generation = chart.metadata.generation.unwrap_or(0);
    let revision = chart_revision(plan, &version.version, generation, &index_artifact.revision);
    let built = Built {
        reason: PULLED,
        summary: build_summary(false, &plan.chart, &revision, &plan.values_files),
        source_revision: index_artifact.revision.clone(),
    };
    if reusable(chart, kept, &revision) {
        return Ok(Attempt::Unchanged { built });
    }
    // the repository's credentials
    let (mut auth, mut tls) = (HelmAuth::None, Default::default());
    if let Some(s) = &repo.spec.secret_ref {
        let data = secret_data(&ctx.client, &ns, &s.name)
            .await
            .map_err(|m| fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m))?;
        auth = basic_auth(&data).map_err(|e| {
            fail(
                types::FETCH_FAILED,
                reasons::AUTHENTICATION_FAILED,
                format!("secret '{ns}/{}': {e}", s.name),
            )
        })?;
        if repo.spec.cert_secret_ref.is_none() {
            tls = tls_config(&data).unwrap_or_default();
        }
    }
    if let Some(s) = &repo.spec.cert_secret_ref {
        let data = secret_data(&ctx.client, &ns, &s.name)
            .await
            .map_err(|m| fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m))?;
        tls = tls_config(&data).unwrap_or_default();
    }
    let timeout = crate::api::source::parse_timeout(repo.spec.timeout.as_deref())
        .unwrap_or(crate::api::source::DEFAULT_TIMEOUT);
    let client = ChartRepo::new(
        &repo.spec.url,
        auth,
        &tls,
        timeout,
        repo.spec.pass_credentials.unwrap_or(false),
    )
    .map_err(|e| fail(types::FETCH_FAILED, e.reason(), e.to_string()))?;
    let work = tempdir()?;
    let tgz = work.path().join("chart.tgz");
    client
        .download_chart(&version, &tgz, DEFAULT_MAX_CHART_SIZE)
        .await
        .map_err(|e| fail(types::BUILD_FAILED, e.reason(), e.to_string()))?;
    let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), chart.name_any());
    let values_files = plan.values_files.clone();
    let ignore_missing = plan.ignore_missing_values_files;
    let rev = revision.clone();
    let stored = blocking(move || -> Result<_, Attempt> {
        let meta = check_chart(&tgz, DEFAULT_MAX_CHART_FILE_SIZE)
            .map_err(|e| fail(types::BUILD_FAILED, e.reason(), e.to_string()))?;
        let file = artifact_file(&meta.name, &rev);
        let s = if values_files.is_empty() {
            storage
                .store_file(KIND, &n, &nm, &file, &tgz)
                .map_err(|e| storage_failed(format!("unable to copy chart to storage: {e}")))?
        } else {
            let root = work.path().join("unpacked");
            let f = std::fs::File::open(&tgz).map_err(|e| storage_failed(e.to_string()))?;
            untar_gz(
                std::io::BufReader::new(f),
                &root,
                &UntarLimits {
                    max_file_size: DEFAULT_MAX_CHART_FILE_SIZE,
                    ..UntarLimits::default()
                },
            )
            .map_err(|e| {
                fail(
                    types::BUILD_FAILED,
                    build_reasons::CHART_PULL_ERROR,
                    e.to_string(),
                )
            })?;
            let chart_dir = root.join(&meta.name);
            let values = values_of(&chart_dir, &values_files, ignore_missing)?;
            let edits = Edits {
                version: Some(rev.clone()),
                values: Some(values),
            };
            helm_package::package(&storage, (KIND, &n, &nm, &file), &root, &meta.name, &edits)
                .map_err(|e| fail(types::BUILD_FAILED, build_reasons::CHART_PACKAGE_ERROR, e))?
                .0
        };
        let url = storage
            .symlink(KIND, &n, &nm, &file, "latest.tar.gz")
            .map_err(|e| storage_failed(format!("failed to update status URL symlink: {e}")))?;
        drop(work);
        Ok((s, url))
    })
    .await
    .map_err(storage_failed)??;
    Ok(stored_attempt(stored, revision, built))
}

async fn from_git_repository(
    chart: &HelmChart,
    plan: &ChartPlan,
    repo_name: &str,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Result<Attempt, Attempt> {
    const KIND: &str = HelmChart::KIND;
    let ns = chart.namespace().unwrap_or_default();
    let (_, source) = source_artifact(
        ctx.sources.git_repos.as_ref(),
        "GitRepository",
        &ns,
        repo_name,
        |r: &crate::api::source::GitRepository| r.status.as_ref()?.artifact.clone(),
    )?;
    let Some(archive) = ctx.storage.local_path(&source.path) else {
        return Err(fail(
            types::FETCH_FAILED,
            "NoSourceArtifact",
            "the GitRepository's artifact is not in storage",
        ));
    };
    let rel = clean_path(&plan.chart).ok_or_else(|| Attempt::Stalled {
        reason: super::super::git_repository::INVALID_SPEC.into(),
        message: format!("spec.chart '{}' leaves the source", plan.chart),
    })?;
    let work = tempdir()?;
    let (storage, n, nm) = (ctx.storage.clone(), ns.clone(), chart.name_any());
    let plan = plan.clone();
    let generation = chart.metadata.generation.unwrap_or(0);
    let reuse_of = chart.clone();
    let kept = kept.cloned();
    let source_revision = source.revision.clone();
    blocking(move || -> Result<Attempt, Attempt> {
        let tree = work.path().join("tree");
        let f = std::fs::File::open(&archive).map_err(|e| storage_failed(e.to_string()))?;
        untar_gz(std::io::BufReader::new(f), &tree, &UntarLimits::default()).map_err(|e| {
            fail(
                types::FETCH_FAILED,
                "NoSourceArtifact",
                format!("failed to extract the source artifact: {e}"),
            )
        })?;
        let dir = tree.join(&rel);
        let meta = read_chart(&dir).map_err(|e| {
            fail(
                types::BUILD_FAILED,
                build_reasons::CHART_PACKAGE_ERROR,
                format!("path '{}': {e}", plan.chart),
            )
        })?;
        let revision = chart_revision(&plan, &meta.version, generation, &source_revision);
        let built = Built {
            reason: PACKAGED,
            summary: build_summary(true, &meta.name, &revision, &plan.values_files),
            source_revision: source_revision.clone(),
        };
        if reusable(&reuse_of, kept.as_ref(), &revision) {
            return Ok(Attempt::Unchanged { built });
        }
        // values files are paths in the source, as Flux's
        let values = if plan.values_files.is_empty() {
            None
        } else {
            Some(values_of(
                &tree,
                &plan.values_files,
                plan.ignore_missing_values_files,
            )?)
        };
        let root = work.path().join("package");
        std::fs::create_dir_all(&root).map_err(|e| storage_failed(e.to_string()))?;
        std::fs::rename(&dir, root.join(&meta.name)).map_err(|e| storage_failed(e.to_string()))?;
        let edits = Edits {
            version: (revision != meta.version).then(|| revision.clone()),
            values,
        };
        let file = artifact_file(&meta.name, &revision);
        let (s, _) =
            helm_package::package(&storage, (KIND, &n, &nm, &file), &root, &meta.name, &edits)
                .map_err(|e| fail(types::BUILD_FAILED, build_reasons::CHART_PACKAGE_ERROR, e))?;
        let url = storage
            .symlink(KIND, &n, &nm, &file, "latest.tar.gz")
            .map_err(|e| storage_failed(format!("failed to update status URL symlink: {e}")))?;
        Ok(stored_attempt((s, url), revision, built))
    })
    .await
    .map_err(storage_failed)?
}

/// The merged values of `files` (paths under `root`); a missing file is an error unless
/// `ignore_missing` (Flux's `ignoreMissingValuesFiles`).
fn values_of(
    root: &Path,
    files: &[String],
    ignore_missing: bool,
) -> Result<serde_json::Value, Attempt> {
    let values_error = |m: String| fail(types::BUILD_FAILED, build_reasons::VALUES_FILES_ERROR, m);
    let mut docs = vec![];
    for f in files {
        let Some(rel) = clean_path(f) else {
            return Err(values_error(format!("values file '{f}' leaves the chart")));
        };
        match std::fs::read_to_string(root.join(rel)) {
            Ok(text) => docs.push((f.clone(), text)),
            Err(_) if ignore_missing => {}
            Err(e) => {
                return Err(values_error(format!(
                    "no values file found at path '{f}': {e}"
                )));
            }
        }
    }
    merge_values(&docs).map_err(values_error)
}

/// `p` as plain components (no `..`, no root); `None` when it would leave the tree.
fn clean_path(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir | Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn tempdir() -> Result<tempfile::TempDir, Attempt> {
    tempfile::Builder::new()
        .prefix("pennant-chart-")
        .tempdir()
        .map_err(|e| {
            fail(
                types::STORAGE_OPERATION_FAILED,
                reasons::DIR_CREATION_FAILED,
                format!("failed to create temporary working directory: {e}"),
            )
        })
}

fn storage_failed(message: String) -> Attempt {
    fail(
        types::STORAGE_OPERATION_FAILED,
        reasons::ARCHIVE_OPERATION_FAILED,
        message,
    )
}

fn stored_attempt(
    (s, url): (crate::source::storage::StoredArtifact, String),
    revision: String,
    built: Built,
) -> Attempt {
    Attempt::Stored {
        artifact: Artifact {
            path: s.path,
            url: s.url,
            revision,
            digest: s.digest,
            last_update_time: Time(s.last_update_time),
            size: i64::try_from(s.size).ok(),
            metadata: None,
        },
        url,
        built,
    }
}
