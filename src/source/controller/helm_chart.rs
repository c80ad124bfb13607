//! HelmCharts: one reconcile ([`decide`] → finalizer / deletion / build from the source →
//! store → [`outcome`] → status → Events → GC), wired by [`super::kind`]; a change of a
//! HelmRepository or GitRepository reconciles the HelmCharts that use it ([`charts_of`]).
//!
//! Builds: from a `type: default` HelmRepository, the chart version selected in its stored
//! index (parsed once per revision, [`IndexCache`]) is downloaded with the repository's
//! credentials; from a `type: oci` HelmRepository (no artifact: a static object, as Flux's),
//! the version is resolved against the registry's tags of `<spec.url>/<chart>` and the
//! `application/vnd.cncf.helm.chart.content.v1.tar+gzip` layer pulled ([`oci::Client`]). The
//! package is checked as a hostile archive ([`check_chart`]), then stored as it is, or unpacked
//! and re-packaged with the merged `valuesFiles`. From a GitRepository or an OCIRepository (a
//! pennant extension), its artifact is extracted and the chart directory at `spec.chart`
//! packaged by pennant itself ([`helm_package`], Helm's layout), not by the `helm` CLI, after
//! its missing dependencies are vendored into `charts/` as Flux's `DependencyManager` does:
//! `file://` ones from the same artifact, `http(s)://` / `oci://` ones downloaded (with the
//! credentials of the namespace's HelmRepository of that URL, if there is one; else
//! anonymously); one that cannot be had is `BuildFailed`/`DependencyBuildError`.

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
use crate::api::source::{Artifact, HelmChart, HelmRepository, OCIRepository, parse_interval};
use crate::gitops::conditions::{self, reasons, types};
use crate::source::artifact::{UntarLimits, untar_gz};
use crate::source::git_repository::Plan;
use crate::source::helm_chart::{
    Attempt, Built, ChartPlan, ChartSource, PACKAGED, PULLED, artifact_file, build_reasons,
    build_summary, chart_revision, decide, outcome, reusable,
};
use crate::source::helm_index::{ChartIndex, HelmError, parse_index};
use crate::source::helm_index::{
    ChartRepo, DEFAULT_MAX_CHART_FILE_SIZE, DEFAULT_MAX_CHART_SIZE, HelmAuth, IndexCache,
    IndexLimits, check_chart,
};
use crate::source::helm_package::{
    self, Dependency, DependencySource, Edits, dependency_source, merge_values,
    missing_dependencies, read_chart, vendor_local,
};
use crate::source::helm_repository::{basic_auth, tls_config};
use crate::source::http::TlsConfig;
use crate::source::oci::{
    self, HELM_CHART_MEDIA_TYPE, LayerOperation, LayerSelector, OciAuth, OciError,
    docker_config_auth,
};

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

/// The source object `kind`/`name` of the namespace, or the `FetchFailed` attempt saying it is
/// not there.
fn lookup<K>(store: Option<&Store<K>>, kind: &str, ns: &str, name: &str) -> Result<Arc<K>, Attempt>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        .ok_or_else(|| {
            fail(
                types::FETCH_FAILED,
                "SourceUnavailable",
                format!("failed to get source: {kind} '{ns}/{name}' not found"),
            )
        })
}

/// Flux's `NoSourceArtifact` failure.
fn no_artifact(kind: &str, name: &str) -> Attempt {
    fail(
        types::FETCH_FAILED,
        "NoSourceArtifact",
        format!("no artifact available for {kind} source '{name}'"),
    )
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
    let obj = lookup(store, kind, ns, name)?;
    let artifact = ready_artifact(&obj).ok_or_else(|| no_artifact(kind, name))?;
    Ok((obj, artifact))
}

/// The build: what [`outcome`] is told.
async fn build(
    chart: &HelmChart,
    plan: &ChartPlan,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Attempt {
    let ns = chart.namespace().unwrap_or_default();
    let built = match &plan.source {
        ChartSource::HelmRepository(name) => {
            match lookup(ctx.sources.helm_repos.as_ref(), "HelmRepository", &ns, name) {
                Ok(repo) if repo.spec.is_oci() => {
                    from_oci_registry(chart, plan, &repo, kept, ctx).await
                }
                Ok(repo) => from_helm_repository(chart, plan, &repo, kept, ctx).await,
                Err(a) => Err(a),
            }
        }
        ChartSource::GitRepository(name) | ChartSource::OCIRepository(name) => {
            let kind = plan.source.kind();
            let source = if matches!(plan.source, ChartSource::GitRepository(_)) {
                source_artifact(ctx.sources.git_repos.as_ref(), kind, &ns, name, |r| {
                    r.status.as_ref()?.artifact.clone()
                })
                .map(|(_, a)| a)
            } else {
                source_artifact(
                    ctx.sources.oci_repos.as_ref(),
                    kind,
                    &ns,
                    name,
                    |r: &OCIRepository| r.status.as_ref()?.artifact.clone(),
                )
                .map(|(_, a)| a)
            };
            match source {
                Ok(source) => from_tarball(chart, plan, kind, source, kept, ctx).await,
                Err(a) => Err(a),
            }
        }
    };
    built.unwrap_or_else(|a| a)
}

/// Whether the build repackages the chart (values files merged): Flux's `Packaged`, which
/// makes the reason `ChartPackageSucceeded` and the summary "packaged".
fn repository_build(plan: &ChartPlan, revision: &str, source_revision: String) -> Built {
    let packaged = !plan.values_files.is_empty();
    Built {
        reason: if packaged { PACKAGED } else { PULLED },
        summary: build_summary(packaged, &plan.chart, revision, &plan.values_files),
        source_revision,
    }
}

async fn from_helm_repository(
    chart: &HelmChart,
    plan: &ChartPlan,
    repo: &HelmRepository,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Result<Attempt, Attempt> {
    let ns = chart.namespace().unwrap_or_default();
    let index_artifact =
        ready_index(repo).ok_or_else(|| no_artifact("HelmRepository", &repo.name_any()))?;
    let index = stored_index(ctx, &index_artifact).await?;
    let version = index
        .select(&plan.chart, &plan.version)
        .map_err(|e| fail(types::BUILD_FAILED, e.reason(), e.to_string()))?
        .clone();
    let generation = chart.metadata.generation.unwrap_or(0);
    let revision = chart_revision(plan, &version.version, generation, &index_artifact.revision);
    let built = repository_build(plan, &revision, index_artifact.revision.clone());
    if reusable(chart, kept, &revision) {
        return Ok(Attempt::Unchanged { built });
    }
    let client = http_repo_client(ctx, &ns, repo).await?;
    let work = tempdir()?;
    let tgz = work.path().join("chart.tgz");
    client
        .download_chart(&version, &tgz, DEFAULT_MAX_CHART_SIZE)
        .await
        .map_err(|e| fail(types::BUILD_FAILED, e.reason(), e.to_string()))?;
    store_package(chart, plan, ctx, work, tgz, revision, built).await
}

/// A chart from a `type: oci` HelmRepository (Flux's `OCIChartRepository`): the version
/// resolved against the tags of `<spec.url>/<chart>` (an exact version is used as the tag),
/// the chart layer pulled (digest and size checked, at most [`DEFAULT_MAX_CHART_SIZE`]).
/// The revision is the chart version (`+<generation>` with values files), no digest suffix,
/// as Flux's; `observedSourceArtifactRevision` stays unset (the repository has no artifact).
async fn from_oci_registry(
    chart: &HelmChart,
    plan: &ChartPlan,
    repo: &HelmRepository,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Result<Attempt, Attempt> {
    let ns = chart.namespace().unwrap_or_default();
    if !valid_chart_name(&plan.chart) {
        return Err(Attempt::Stalled {
            reason: build_reasons::INVALID_CHART_REFERENCE.into(),
            message: format!(
                "invalid chart reference: chart name '{}' must be a single path segment \
                 ([A-Za-z0-9._-])",
                plan.chart
            ),
        });
    }
    let url = format!("{}/{}", repo.spec.url.trim_end_matches('/'), plan.chart);
    let timeout = crate::api::source::parse_timeout(repo.spec.timeout.as_deref())
        .unwrap_or(crate::api::source::DEFAULT_TIMEOUT);
    let (auth, tls) = oci_credentials(ctx, &ns, repo, &url).await?;
    let client = oci::Client::new(
        &url,
        auth,
        repo.spec.insecure.unwrap_or(false),
        &tls,
        timeout,
    )
    .map_err(oci_attempt)?;
    let (version, resolved) = bounded(timeout, client.resolve_chart(&plan.version))
        .await
        .map_err(oci_attempt)?;
    let generation = chart.metadata.generation.unwrap_or(0);
    let revision = chart_revision(plan, &version, generation, "");
    let built = repository_build(plan, &revision, String::new());
    if reusable(chart, kept, &revision) {
        return Ok(Attempt::Unchanged { built });
    }
    let work = tempdir()?;
    let tgz = work.path().join("chart.tgz");
    bounded(
        timeout * 2,
        pull_chart_layer(&client, &resolved.digest, &tgz),
    )
    .await
    .map_err(oci_attempt)?;
    store_package(chart, plan, ctx, work, tgz, revision, built).await
}

/// Helm's chart names as a path segment of the registry URL: no `/`, no `..`.
fn valid_chart_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `fut` bounded by `limit` (a timeout is a pull error).
async fn bounded<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, OciError>>,
) -> Result<T, OciError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(OciError::PullFailed(format!(
            "failed to pull chart: timed out after {limit:?}"
        )))
    })
}

/// The Helm chart layer of the manifest `digest` downloaded into `dest`.
async fn pull_chart_layer(client: &oci::Client, digest: &str, dest: &Path) -> Result<(), OciError> {
    let manifest = client.manifest(digest).await?;
    let layer = manifest.select_layer(&LayerSelector {
        media_type: Some(HELM_CHART_MEDIA_TYPE.into()),
        operation: LayerOperation::Copy,
    })?;
    let file = std::fs::File::create(dest)
        .map_err(|e| OciError::LayerOperationFailed(format!("failed to create chart file: {e}")))?;
    client
        .download_blob(layer, std::io::BufWriter::new(file), DEFAULT_MAX_CHART_SIZE)
        .await?;
    Ok(())
}

/// Flux's conditions for a registry failure: an invalid URL stalls, a refused login is
/// `FetchFailed`/`AuthenticationFailed`, no matching version `InvalidChartReference`, the
/// rest `ChartPullError`.
fn oci_attempt(e: OciError) -> Attempt {
    match e {
        OciError::UrlInvalid { .. } => Attempt::Stalled {
            reason: e.reason().into(),
            message: e.to_string(),
        },
        OciError::AuthenticationFailed(m) => fail(
            types::FETCH_FAILED,
            reasons::AUTHENTICATION_FAILED,
            format!("failed to authenticate with the Helm repository: {m}"),
        ),
        OciError::ReadOperationFailed(m) => fail(
            types::BUILD_FAILED,
            build_reasons::INVALID_CHART_REFERENCE,
            m,
        ),
        e => fail(
            types::BUILD_FAILED,
            build_reasons::CHART_PULL_ERROR,
            e.to_string(),
        ),
    }
}

/// A `type: oci` HelmRepository's registry credentials for `url` (Flux's
/// `GetClientOpts`/`KeychainFromSecret`): `secretRef` is a docker config
/// (`.dockerconfigjson`) or `username`/`password`; TLS from `certSecretRef` (else, deprecated,
/// from `secretRef`). `spec.provider` other than `generic` (cloud login) is not implemented:
/// without a `secretRef` it is a `FetchFailed` saying so.
async fn oci_credentials(
    ctx: &Ctx<HelmChart>,
    ns: &str,
    repo: &HelmRepository,
    url: &str,
) -> Result<(OciAuth, TlsConfig), Attempt> {
    let auth_failed = |m: String| fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m);
    let registry = oci::parse_url(url).map_err(oci_attempt)?.registry;
    let (mut auth, mut tls) = (OciAuth::Anonymous, TlsConfig::default());
    if let Some(s) = &repo.spec.secret_ref {
        let data = secret_data(&ctx.client, ns, &s.name)
            .await
            .map_err(auth_failed)?;
        let named = |e: String| auth_failed(format!("secret '{ns}/{}': {e}", s.name));
        auth = match data.get(".dockerconfigjson") {
            Some(json) => docker_config_auth(json, &registry).map_err(|e| named(e.to_string()))?,
            None => match basic_auth(&data).map_err(named)? {
                HelmAuth::Basic { username, password } => OciAuth::Basic { username, password },
                HelmAuth::None => OciAuth::Anonymous,
            },
        };
        if repo.spec.cert_secret_ref.is_none() {
            tls = tls_config(&data).unwrap_or_default();
        }
    } else if let Some(p) = repo
        .spec
        .provider
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "generic")
    {
        return Err(auth_failed(format!(
            "HelmRepository '{}': spec.provider '{p}' is not supported by pennant yet (no \
             credentials from the cloud provider); use a secretRef",
            repo.name_any()
        )));
    }
    if let Some(s) = &repo.spec.cert_secret_ref {
        let data = secret_data(&ctx.client, ns, &s.name)
            .await
            .map_err(auth_failed)?;
        tls = tls_config(&data).unwrap_or_default();
    }
    Ok((auth, tls))
}

/// A `type: default` HelmRepository's Ready index artifact.
fn ready_index(repo: &HelmRepository) -> Option<Artifact> {
    let st = repo.status.as_ref()?;
    st.artifact
        .clone()
        .filter(|_| conditions::is_true(&st.conditions, types::READY))
}

/// The stored index of `artifact`, parsed once per revision.
async fn stored_index(
    ctx: &Ctx<HelmChart>,
    artifact: &Artifact,
) -> Result<Arc<ChartIndex>, Attempt> {
    let Some(index_path) = ctx.storage.local_path(&artifact.path) else {
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
    let revision = artifact.revision.clone();
    Ok(
        blocking(move || cache.get_or_parse(&revision, &index_path, &IndexLimits::default()))
            .await
            .map_err(|e| fail(types::FETCH_FAILED, "IndexationFailed", e))?
            .map_err(|e| fail(types::FETCH_FAILED, e.reason(), e.to_string()))?
            .0,
    )
}

/// A client of a `type: default` HelmRepository with its credentials and TLS material.
async fn http_repo_client(
    ctx: &Ctx<HelmChart>,
    ns: &str,
    repo: &HelmRepository,
) -> Result<ChartRepo, Attempt> {
    let (mut auth, mut tls) = (HelmAuth::None, Default::default());
    if let Some(s) = &repo.spec.secret_ref {
        let data = secret_data(&ctx.client, ns, &s.name)
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
        let data = secret_data(&ctx.client, ns, &s.name)
            .await
            .map_err(|m| fail(types::FETCH_FAILED, reasons::AUTHENTICATION_FAILED, m))?;
        tls = tls_config(&data).unwrap_or_default();
    }
    let timeout = crate::api::source::parse_timeout(repo.spec.timeout.as_deref())
        .unwrap_or(crate::api::source::DEFAULT_TIMEOUT);
    ChartRepo::new(
        &repo.spec.url,
        auth,
        &tls,
        timeout,
        repo.spec.pass_credentials.unwrap_or(false),
    )
    .map_err(|e| fail(types::FETCH_FAILED, e.reason(), e.to_string()))
}

/// Checks the downloaded package `tgz` (a hostile archive: no links, no path leaving it,
/// bounded sizes) and stores it as it is, or unpacked and re-packaged with the merged values
/// files and the revision as its version.
async fn store_package(
    chart: &HelmChart,
    plan: &ChartPlan,
    ctx: &Ctx<HelmChart>,
    work: tempfile::TempDir,
    tgz: PathBuf,
    revision: String,
    built: Built,
) -> Result<Attempt, Attempt> {
    const KIND: &str = HelmChart::KIND;
    let (storage, n, nm) = (
        ctx.storage.clone(),
        chart.namespace().unwrap_or_default(),
        chart.name_any(),
    );
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

/// What the first (blocking) step of a path build found.
enum Extracted {
    /// The stored chart is the build.
    Unchanged(Built),
    /// A build to finish: the remote dependencies to download into `<dir>/charts/`.
    Build {
        work: tempfile::TempDir,
        tree: PathBuf,
        dir: PathBuf,
        name: String,
        version: String,
        revision: String,
        built: Built,
        remote: Vec<(Dependency, String)>,
    },
}

fn dependency_failed(message: String) -> Attempt {
    fail(
        types::BUILD_FAILED,
        build_reasons::DEPENDENCY_BUILD_ERROR,
        format!("dependency build error: {message}"),
    )
}

/// A chart packaged from the directory `spec.chart` of a GitRepository's or OCIRepository's
/// artifact (Flux's `buildFromTarballArtifact` with its local builder): extracted (no links,
/// no path leaving the tree), `Chart.yaml` read, missing dependencies vendored, values files
/// (paths in the source) merged, packaged.
async fn from_tarball(
    chart: &HelmChart,
    plan: &ChartPlan,
    kind: &'static str,
    source: Artifact,
    kept: Option<&Artifact>,
    ctx: &Ctx<HelmChart>,
) -> Result<Attempt, Attempt> {
    const KIND: &str = HelmChart::KIND;
    let ns = chart.namespace().unwrap_or_default();
    let Some(archive) = ctx.storage.local_path(&source.path) else {
        return Err(fail(
            types::FETCH_FAILED,
            "NoSourceArtifact",
            format!("the {kind}'s artifact is not in storage"),
        ));
    };
    let rel = clean_path(&plan.chart).ok_or_else(|| Attempt::Stalled {
        reason: super::super::git_repository::INVALID_SPEC.into(),
        message: format!("spec.chart '{}' leaves the source", plan.chart),
    })?;
    let work = tempdir()?;
    let generation = chart.metadata.generation.unwrap_or(0);
    let source_revision = source.revision.clone();
    let extracted = {
        let (plan, reuse_of, kept) = (plan.clone(), chart.clone(), kept.cloned());
        blocking(move || -> Result<Extracted, Attempt> {
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
                source_revision,
            };
            if reusable(&reuse_of, kept.as_ref(), &revision) {
                return Ok(Extracted::Unchanged(built));
            }
            let mut remote = vec![];
            for dep in missing_dependencies(&dir).map_err(dependency_failed)? {
                let added = |e: String| {
                    dependency_failed(format!("failed to add dependency '{}': {e}", dep.name))
                };
                match dependency_source(&rel, &dep).map_err(added)? {
                    DependencySource::Local(from) => vendor_local(&tree, &from, &dir, &dep)
                        .map_err(|e| {
                            dependency_failed(format!(
                                "failed to add local dependency '{}': {e}",
                                dep.name
                            ))
                        })?,
                    DependencySource::Remote(url) => remote.push((dep, url)),
                }
            }
            Ok(Extracted::Build {
                work,
                tree,
                dir,
                name: meta.name,
                version: meta.version,
                revision,
                built,
                remote,
            })
        })
        .await
        .map_err(storage_failed)??
    };
    let (work, tree, dir, name, version, revision, built, remote) = match extracted {
        Extracted::Unchanged(built) => return Ok(Attempt::Unchanged { built }),
        Extracted::Build {
            work,
            tree,
            dir,
            name,
            version,
            revision,
            built,
            remote,
        } => (work, tree, dir, name, version, revision, built, remote),
    };
    for (dep, url) in &remote {
        fetch_dependency(ctx, &ns, dep, url, &dir.join("charts"))
            .await
            .map_err(|e| {
                dependency_failed(format!(
                    "failed to add remote dependency '{}': {e}",
                    dep.name
                ))
            })?;
    }
    let (storage, nm, plan) = (ctx.storage.clone(), chart.name_any(), plan.clone());
    blocking(move || -> Result<Attempt, Attempt> {
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
        std::fs::rename(&dir, root.join(&name)).map_err(|e| storage_failed(e.to_string()))?;
        let edits = Edits {
            version: (revision != version).then(|| revision.clone()),
            values,
        };
        let file = artifact_file(&name, &revision);
        let (s, _) = helm_package::package(&storage, (KIND, &ns, &nm, &file), &root, &name, &edits)
            .map_err(|e| fail(types::BUILD_FAILED, build_reasons::CHART_PACKAGE_ERROR, e))?;
        let url = storage
            .symlink(KIND, &ns, &nm, &file, "latest.tar.gz")
            .map_err(|e| storage_failed(format!("failed to update status URL symlink: {e}")))?;
        Ok(stored_attempt((s, url), revision, built))
    })
    .await
    .map_err(storage_failed)?
}

/// The message of a failed step (for a dependency's error).
fn message_of(a: Attempt) -> String {
    match a {
        Attempt::Failed { message, .. } | Attempt::Stalled { message, .. } => message,
        other => format!("{other:?}"),
    }
}

/// Downloads the remote dependency `dep` from `url` into `charts/<name>-<version>.tgz` (the
/// `helm dependency build` layout), as Flux's `addRemoteDependency`: with the credentials of
/// the namespace's HelmRepository whose `spec.url` is `url` (its stored index when it is a
/// Ready `type: default` one, its `insecure` for `oci://`), else anonymously over https (or
/// http for an `http://` index); the version is the newest matching `dep.version`; the
/// package is checked ([`check_chart`]) and must be the named chart.
async fn fetch_dependency(
    ctx: &Ctx<HelmChart>,
    ns: &str,
    dep: &Dependency,
    url: &str,
    charts: &Path,
) -> Result<(), String> {
    let repo = ctx.sources.helm_repos.as_ref().and_then(|s| {
        s.state().into_iter().find(|r| {
            r.namespace().as_deref() == Some(ns) && r.spec.url.trim_end_matches('/') == url
        })
    });
    std::fs::create_dir_all(charts).map_err(|e| format!("failed to create charts/: {e}"))?;
    let timeout = repo
        .as_ref()
        .and_then(|r| crate::api::source::parse_timeout(r.spec.timeout.as_deref()))
        .unwrap_or(crate::api::source::DEFAULT_TIMEOUT);
    let dest = if url.starts_with("oci://") {
        let full = format!("{url}/{}", dep.name);
        let (auth, tls, insecure) = match &repo {
            Some(r) => {
                let (a, t) = oci_credentials(ctx, ns, r, &full)
                    .await
                    .map_err(message_of)?;
                (a, t, r.spec.insecure.unwrap_or(false))
            }
            None => (OciAuth::Anonymous, TlsConfig::default(), false),
        };
        let client =
            oci::Client::new(&full, auth, insecure, &tls, timeout).map_err(|e| e.to_string())?;
        let (version, resolved) = bounded(timeout, client.resolve_chart(&dep.version))
            .await
            .map_err(|e| {
                format!(
                    "failed to get chart '{}' version '{}' from '{url}': {e}",
                    dep.name, dep.version
                )
            })?;
        let dest = charts.join(format!("{}-{version}.tgz", dep.name));
        bounded(
            timeout * 2,
            pull_chart_layer(&client, &resolved.digest, &dest),
        )
        .await
        .map_err(|e| format!("chart download of version '{version}' failed: {e}"))?;
        dest
    } else {
        let client = match &repo {
            Some(r) => http_repo_client(ctx, ns, r).await.map_err(message_of)?,
            None => ChartRepo::new(url, HelmAuth::None, &TlsConfig::default(), timeout, false)
                .map_err(|e| e.to_string())?,
        };
        let index = match repo
            .as_deref()
            .filter(|r| !r.spec.is_oci())
            .and_then(ready_index)
        {
            Some(a) => stored_index(ctx, &a).await.map_err(message_of)?,
            None => fetch_index(&client).await.map_err(|e| e.to_string())?,
        };
        let version = index
            .select(&dep.name, &dep.version)
            .map_err(|e| {
                format!(
                    "failed to get chart '{}' version '{}' from '{url}': {e}",
                    dep.name, dep.version
                )
            })?
            .clone();
        let dest = charts.join(format!("{}-{}.tgz", dep.name, version.version));
        client
            .download_chart(&version, &dest, DEFAULT_MAX_CHART_SIZE)
            .await
            .map_err(|e| {
                format!(
                    "chart download of version '{}' failed: {e}",
                    version.version
                )
            })?;
        dest
    };
    let checked = dest.clone();
    let meta = blocking(move || check_chart(&checked, DEFAULT_MAX_CHART_FILE_SIZE))
        .await?
        .map_err(|e| format!("failed to load downloaded archive: {e}"))?;
    if meta.name != dep.name {
        let _ = std::fs::remove_file(&dest);
        return Err(format!(
            "the downloaded chart is '{}', not '{}'",
            meta.name, dep.name
        ));
    }
    Ok(())
}

/// The index of a repository no HelmRepository stores: downloaded and parsed now.
async fn fetch_index(client: &ChartRepo) -> Result<Arc<ChartIndex>, HelmError> {
    let work = tempfile::Builder::new()
        .prefix("pennant-depindex-")
        .tempdir()
        .map_err(|e| HelmError::IndexationFailed(e.to_string()))?;
    let dest = work.path().join("index.yaml");
    client
        .fetch_index(
            &dest,
            crate::source::helm_index::DEFAULT_MAX_INDEX_SIZE,
            None,
        )
        .await?;
    let index = blocking(move || {
        let parsed = parse_index(&dest, &IndexLimits::default());
        drop(work);
        parsed
    })
    .await
    .map_err(HelmError::IndexationFailed)??;
    Ok(Arc::new(index))
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
