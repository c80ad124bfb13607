//! The HelmChart reconciler's decisions, PURE (`now` passed in): what to do with an object
//! ([`decide`]), the revision of a build ([`chart_revision`]), whether the stored chart is still
//! the one to serve ([`reusable`]), and the status and Events after an attempt ([`outcome`]).
//! The I/O around them is in [`super::controller`].
//!
//! Same flow as Flux's source-controller `HelmChartReconciler` (flux.md §1.4): the source
//! (a HelmRepository's index, or a GitRepository's artifact) must have an artifact, except a
//! `type: oci` HelmRepository (a static object: the chart is pulled from the registry); the
//! chart version is the newest matching `spec.version` in the index or the registry's tags
//! (latest stable for `*`), or the `Chart.yaml` version at the path in the source tree; the
//! revision is that version (no digest suffix, as Flux's), with `+<generation>` when
//! `valuesFiles` are merged into a chart from a HelmRepository and `+<first 12 hex of the
//! source digest>` for `reconcileStrategy: Revision` on a path source; the artifact is
//! `<chart>-<revision>.tgz`; nothing is downloaded or packaged again when the stored artifact
//! already has that revision, chart name and values files. Ready says Flux's build summary
//! ("pulled 'podinfo' chart with version '6.5.0'"). Differences, on purpose: a `Bucket` source
//! or `verify` stalls (pennant has no Bucket, and serving an unverified chart in place of a
//! verified one would be worse than none); as on every source, the final status is written.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::git_repository::{NEW_ARTIFACT, Plan, Settled, lifecycle, settle};
use crate::api::source::{Artifact, HelmChart, HelmChartStatus, parse_interval};
use crate::gitops::conditions::{HELM_CHART_READY, mark_true, reasons, summarize, types};
use crate::gitops::reconcile_request::requested_at;

pub use super::git_repository::INVALID_SPEC;

/// Where the chart comes from (`spec.sourceRef`, same namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChartSource {
    /// A chart name in a repository (`type: default` index or `type: oci` registry).
    HelmRepository(String),
    /// A chart directory in the GitRepository's artifact.
    GitRepository(String),
    /// A chart directory in the OCIRepository's artifact (a pennant extension: Flux's
    /// `sourceRef.kind` is HelmRepository, GitRepository or Bucket).
    OCIRepository(String),
}

impl ChartSource {
    /// `spec.sourceRef.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChartSource::HelmRepository(_) => "HelmRepository",
            ChartSource::GitRepository(_) => "GitRepository",
            ChartSource::OCIRepository(_) => "OCIRepository",
        }
    }
}

/// A build to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartPlan {
    pub source: ChartSource,
    /// `spec.chart`: a chart name (HelmRepository) or a path in the tree (GitRepository).
    pub chart: String,
    /// `spec.version`, `*` when empty (HelmRepository only).
    pub version: String,
    /// `spec.valuesFiles`, merged in order.
    pub values_files: Vec<String>,
    /// `spec.ignoreMissingValuesFiles`.
    pub ignore_missing_values_files: bool,
    /// `reconcileStrategy: Revision`.
    pub on_revision: bool,
    /// `spec.interval`.
    pub interval: Duration,
}

/// The HelmChart's decision from the object alone (Flux's order: deletion, finalizer,
/// suspend; then a spec that cannot be acted on stalls).
pub fn decide(chart: &HelmChart) -> Plan<ChartPlan> {
    let spec = &chart.spec;
    if let Some(p) = lifecycle(&chart.metadata, spec.suspend) {
        return p;
    }
    let stall = |message: String| Plan::Stall {
        reason: INVALID_SPEC.into(),
        message,
    };
    let Some(interval) = parse_interval(&spec.interval) else {
        return stall(format!("invalid spec.interval '{}'", spec.interval));
    };
    if spec.verify.is_some() {
        return stall(
            "spec.verify is not supported by pennant yet: signature verification cannot be \
             done, so no chart is served"
                .into(),
        );
    }
    let name = spec.source_ref.name.clone();
    let source = match spec.source_ref.kind.as_str() {
        "HelmRepository" => ChartSource::HelmRepository(name),
        "GitRepository" => ChartSource::GitRepository(name),
        "OCIRepository" => ChartSource::OCIRepository(name),
        other => {
            return stall(format!(
                "spec.sourceRef.kind '{other}' is not supported by pennant yet (HelmRepository, \
                 GitRepository and OCIRepository are)"
            ));
        }
    };
    Plan::Fetch(ChartPlan {
        source,
        chart: spec.chart.clone(),
        version: spec.version().to_string(),
        values_files: spec.values_files.clone(),
        ignore_missing_values_files: spec.ignore_missing_values_files.unwrap_or(false),
        on_revision: spec.reconciles_on_revision(),
        interval,
    })
}

/// The revision (and packaged version) of a build of `version`: `<version>+<generation>` for a
/// HelmRepository source with values files, `<version>+<first 12 hex of the source
/// revision's digest>` for a GitRepository or OCIRepository source (`<tag>@sha256:<hex>`) with
/// `reconcileStrategy: Revision`, else `version` (Flux's; a chart from a `type: oci`
/// HelmRepository has no digest suffix either).
pub fn chart_revision(
    plan: &ChartPlan,
    version: &str,
    generation: i64,
    source_revision: &str,
) -> String {
    match &plan.source {
        ChartSource::HelmRepository(_) if !plan.values_files.is_empty() => {
            format!("{version}+{generation}")
        }
        ChartSource::GitRepository(_) | ChartSource::OCIRepository(_) if plan.on_revision => {
            let digest = source_revision
                .rsplit_once(':')
                .map_or(source_revision, |(_, hex)| hex);
            format!("{version}+{}", &digest[..digest.len().min(12)])
        }
        _ => version.to_string(),
    }
}

/// Whether the stored artifact (`kept`, verified) is the build of `revision` for the current
/// chart name and values files: then nothing is downloaded or packaged.
pub fn reusable(chart: &HelmChart, kept: Option<&Artifact>, revision: &str) -> bool {
    let Some(st) = chart.status.as_ref() else {
        return false;
    };
    kept.is_some_and(|a| a.revision == revision)
        && st.observed_chart_name.as_deref() == Some(chart.spec.chart.as_str())
        && st.observed_values_files == chart.spec.values_files
}

/// The artifact file of a build: `<chart name>-<revision>.tgz` (Flux's).
pub fn artifact_file(name: &str, revision: &str) -> String {
    format!("{name}-{revision}.tgz")
}

/// Flux's build summary: "pulled|packaged '<name>' chart with version '<version>'", plus
/// " and merged values files [a.yaml b.yaml]" when values files were merged.
pub fn build_summary(packaged: bool, name: &str, version: &str, values_files: &[String]) -> String {
    let mut s = format!(
        "{} '{name}' chart with version '{version}'",
        if packaged { "packaged" } else { "pulled" }
    );
    if !values_files.is_empty() {
        s.push_str(&format!(
            " and merged values files [{}]",
            values_files.join(" ")
        ));
    }
    s
}

/// A successful build (or the stored one, still good): Flux's reason and summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    /// `ChartPullSucceeded` or `ChartPackageSucceeded`.
    pub reason: &'static str,
    /// [`build_summary`].
    pub summary: String,
    /// The source artifact's revision it was built from.
    pub source_revision: String,
}

/// What the attempt did (the I/O's result, fed to [`outcome`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The stored artifact is the build to serve.
    Unchanged { built: Built },
    /// A new chart was stored; `url` is the `latest.tar.gz` link's URL (`status.url`).
    Stored {
        artifact: Artifact,
        url: String,
        built: Built,
    },
    /// It failed: `FetchFailed` (source or repository), `BuildFailed` (`InvalidChartReference`,
    /// `ChartPullError`, `ChartPackageError`, `ValuesFilesError`) or `StorageOperationFailed`.
    Failed {
        condition: &'static str,
        reason: String,
        message: String,
    },
    /// Retrying cannot help without a spec change.
    Stalled { reason: String, message: String },
}

/// The status to write, the Events and the result (as the GitRepository's
/// [`super::git_repository::Outcome`]).
pub type Outcome = super::git_repository::Outcome<HelmChartStatus>;

fn stored_message(revision: &str) -> String {
    format!("stored artifact: revision '{revision}'")
}

/// The status after `attempt`, from the object's current status. `kept` is the stored artifact
/// still served (verified, URL refreshed), `None` when there is none or it is gone.
pub fn outcome(chart: &HelmChart, kept: Option<Artifact>, attempt: Attempt, now: &Time) -> Outcome {
    let old = chart.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = chart.metadata.generation.unwrap_or(0);
    st.observed_generation = Some(generation);
    if let Some(token) = requested_at(chart.metadata.annotations.as_ref()) {
        st.last_handled_reconcile_at = Some(token.to_string());
    }
    let mut success = None;
    let core = match attempt {
        Attempt::Unchanged { built } => {
            let revision = kept
                .as_ref()
                .map(|a| a.revision.clone())
                .unwrap_or_default();
            success = Some(built);
            Settled::Unchanged { revision }
        }
        Attempt::Stored {
            artifact,
            url,
            built,
        } => {
            st.url = Some(url);
            let message = built.summary.clone();
            success = Some(built);
            Settled::Stored { artifact, message }
        }
        Attempt::Failed {
            condition,
            reason,
            message,
        } => Settled::Failed {
            condition,
            reason,
            message,
        },
        Attempt::Stalled { reason, message } => Settled::Stalled { reason, message },
    };
    st.artifact = kept;
    let (mut notices, result) = settle(
        &mut st.conditions,
        &mut st.artifact,
        old.artifact.as_ref(),
        core,
        &[],
        &HELM_CHART_READY,
        stored_message,
        generation,
        now,
    );
    if let Some(built) = success {
        // none for a `type: oci` HelmRepository, which has no artifact (Flux's)
        st.observed_source_artifact_revision =
            Some(built.source_revision.clone()).filter(|r| !r.is_empty());
        st.observed_chart_name = Some(chart.spec.chart.clone());
        st.observed_values_files = chart.spec.values_files.clone();
        // Flux's ArtifactInStorage (and so Ready): the build's reason and summary
        mark_true(
            &mut st.conditions,
            types::ARTIFACT_IN_STORAGE,
            built.reason,
            &built.summary,
            generation,
            now,
        );
        summarize(&mut st.conditions, &HELM_CHART_READY, generation, now);
        for n in notices.iter_mut().filter(|n| n.reason == NEW_ARTIFACT) {
            n.reason = built.reason.to_string();
        }
    }
    if st.artifact.is_none() {
        st.url = None;
    }
    Outcome {
        status: st,
        notices,
        result,
    }
}

/// Flux's reasons of a build failure (`BuildFailed`).
pub mod build_reasons {
    pub const INVALID_CHART_REFERENCE: &str = "InvalidChartReference";
    pub const CHART_PULL_ERROR: &str = "ChartPullError";
    pub const CHART_PACKAGE_ERROR: &str = "ChartPackageError";
    pub const VALUES_FILES_ERROR: &str = "ValuesFilesError";
    pub const DEPENDENCY_BUILD_ERROR: &str = "DependencyBuildError";
}

/// The successful build reasons.
pub const PULLED: &str = reasons::CHART_PULL_SUCCEEDED;
/// See [`PULLED`].
pub const PACKAGED: &str = reasons::CHART_PACKAGE_SUCCEEDED;

#[cfg(test)]
#[path = "helm_chart_tests.rs"]
mod tests;
