//! The next release of a HelmRelease, rendered and never applied (for `pennant diff hr`,
//! flux2#2808: Flux has no such command): the chart resolved as the controller resolves it
//! (the generated HelmChart's artifact or `chartRef`'s, downloaded with its digest checked,
//! [`super::controller::chart_artifact`]), the values composed with `valuesFrom`
//! ([`super::values::fetch_and_compose`]), then the controller's own install or upgrade
//! request ([`super::controller::install_request`] / [`super::controller::upgrade_request`]:
//! same flags, same post-renderer) simulated by the engine with `--dry-run=server`
//! ([`Engine::dry_run`]). Nothing is written: the generated HelmChart is read, not applied
//! (a HelmChart that does not match `spec.chart` yet is an error, not a silent stale diff),
//! no release Secret, no object, no CRD.
//!
//! Identity: the caller's own (its kubeconfig), as `flux diff ks`; `serviceAccountName` is not
//! impersonated. Cluster: the sources, values and HelmChart are read through `client` (the
//! HelmRelease's cluster), Helm storage, the Canary-owned fields and the dry-run go to
//! `target` (the release's cluster: another one with `spec.kubeConfig`).

use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::chart;
use super::controller::{self, SOURCE_NOT_READY};
use super::engine::{DryRunRequest, Engine, EngineError, Target};
use super::storage::{self, Release, Status};
use crate::api::helm_release::HelmRelease;
use crate::api::source::HelmChart;

/// Why the next release could not be rendered; each displays as one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The chart's source (or the generated HelmChart) is missing, not ready or stale.
    #[error("source not ready: {0}")]
    SourceNotReady(String),
    /// The artifact could not be downloaded, verified or read.
    #[error("chart artifact: {0}")]
    Artifact(String),
    /// `values`/`valuesFrom` (Flux's `ValuesError`).
    #[error("values error: {0}")]
    Values(String),
    /// helm refused to render or the API server to accept the manifest (a template that
    /// fails, a schema violation); helm's error line.
    #[error("render failed: {0}")]
    Render(String),
    /// Release storage could not be read.
    #[error("release storage: {0}")]
    Storage(String),
}

/// The next release and what it replaces.
#[derive(Debug)]
pub struct NextRelease {
    pub chart_name: String,
    /// The chart's own version (what `status.history[].chartVersion` records).
    pub chart_version: String,
    /// `sha256:<hex>` of the composed values ([`super::values::config_digest`]).
    pub config_digest: String,
    /// The release helm would store: its `manifest` is what would be applied.
    pub rendered: Release,
    /// The release in storage the next action replaces (the newest `deployed` revision, else
    /// the newest one); `None`: the next action is an install.
    pub current: Option<Release>,
}

/// The keys of the desired generated HelmChart `spec` ([`chart::helm_chart`]) whose live
/// value differs (`spec.version`, …); empty when the live HelmChart is up to date. PURE.
pub fn stale_chart_fields(desired: &Value, live: &Value) -> Vec<String> {
    desired["spec"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| live["spec"].get(k.as_str()) != Some(*v))
                .map(|(k, _)| format!("spec.{k}"))
                .collect()
        })
        .unwrap_or_default()
}

/// helm's error of a dry-run without the "UPGRADE FAILED: " / "INSTALLATION FAILED: " it
/// puts first (nothing was upgraded or installed). PURE.
pub fn render_message(m: &str) -> String {
    ["UPGRADE FAILED: ", "INSTALLATION FAILED: "]
        .iter()
        .find_map(|p| m.strip_prefix(p))
        .unwrap_or(m)
        .to_string()
}

/// The release the next install or upgrade replaces, from the stored revisions (newest
/// first): the newest `deployed`, else the newest that is not `uninstalled`. PURE.
pub fn current_release(history: Vec<Release>) -> Option<Release> {
    let deployed = history
        .iter()
        .position(|r| r.info.status == Status::Deployed);
    match deployed {
        Some(i) => history.into_iter().nth(i),
        None => history
            .into_iter()
            .find(|r| r.info.status != Status::Uninstalled),
    }
}

/// Render the next release of `hr` (see the module doc) with `engine`, as the caller, on
/// `target`.
pub async fn next_release<E: Engine>(
    client: &Client,
    target: &Target,
    engine: &E,
    hr: &HelmRelease,
) -> Result<NextRelease, RenderError> {
    // the generated HelmChart, read only: the controller would apply it first
    if let Some(desired) = chart::helm_chart(hr) {
        let (cns, cname) = (
            hr.helm_chart_namespace().unwrap_or_default(),
            hr.helm_chart_name(),
        );
        let live = Api::<HelmChart>::namespaced(client.clone(), &cns)
            .get_opt(&cname)
            .await
            .map_err(|e| RenderError::SourceNotReady(format!("HelmChart '{cns}/{cname}': {e}")))?
            .ok_or_else(|| {
                RenderError::SourceNotReady(format!(
                    "HelmChart '{cns}/{cname}' not found (the controller creates it when it \
                     reconciles the HelmRelease)"
                ))
            })?;
        let stale = stale_chart_fields(&desired, &serde_json::to_value(&live).unwrap_or_default());
        if !stale.is_empty() {
            return Err(RenderError::SourceNotReady(format!(
                "HelmChart '{cns}/{cname}' does not match spec.chart yet ({}): the \
                 controller updates it when it reconciles the HelmRelease",
                stale.join(", ")
            )));
        }
    }
    let (artifact, _) = controller::chart_artifact(hr, client)
        .await
        .map_err(|(reason, m)| {
            // the controller's "…, retrying in 30s" is not the CLI's
            let m = m
                .split(", retrying in")
                .next()
                .unwrap_or_default()
                .to_string();
            if reason == SOURCE_NOT_READY {
                RenderError::SourceNotReady(m)
            } else {
                RenderError::Artifact(m)
            }
        })?;
    let ns = hr.namespace().unwrap_or_default();
    let values = super::values::fetch_and_compose(
        client,
        &ns,
        &controller::values_refs(hr),
        hr.spec.values.as_ref(),
    )
    .await
    .map_err(|e| RenderError::Values(e.to_string()))?;
    let config_digest = super::values::config_digest(&values);
    let work = tempfile::Builder::new()
        .prefix("pennant-diff-hr-")
        .tempdir()
        .map_err(|e| RenderError::Artifact(e.to_string()))?;
    let chart_path = work.path().join("chart.tgz");
    crate::source::fetch::download(&artifact, &chart_path)
        .await
        .map_err(RenderError::Artifact)?;
    let (chart_name, chart_version) = controller::read_chart_meta(&chart_path)
        .map_err(|m| RenderError::Artifact(format!("failed to load chart: {m}")))?;
    let rref = controller::release_ref(hr);
    let history = storage::history(&target.client, &rref.namespace, &rref.name)
        .await
        .map_err(|e| RenderError::Storage(e.to_string()))?;
    let current = current_release(history);
    let policy = chart::policy(hr, false);
    // the Canary-owned fields the controller would keep at their live values
    let keep = controller::canary_kept_fields(
        &target.client,
        &crate::apply::ssa::Applier::new(target.client.clone()),
        &std::env::var("PENNANT_MESH_PROVIDER")
            .unwrap_or_else(|_| crate::api::canary::DEFAULT_MESH_PROVIDER.into()),
        &rref.namespace,
        controller::list_canaries(&target.client, &rref.namespace).await,
    )
    .await;
    let request = match &current {
        Some(_) => DryRunRequest::Upgrade(controller::upgrade_request(
            hr,
            &rref,
            &policy,
            &chart_path,
            &values,
            &keep,
        )),
        None => DryRunRequest::Install(controller::install_request(
            hr,
            &rref,
            &policy,
            &chart_path,
            &values,
            &keep,
        )),
    };
    let rendered = engine
        .dry_run(target, &request)
        .await
        .map_err(|e| match e {
            EngineError::Helm(h) => RenderError::Render(render_message(&h.message)),
            e => RenderError::Render(e.to_string()),
        })?;
    Ok(NextRelease {
        chart_name,
        chart_version,
        config_digest,
        rendered,
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_helm_chart_is_stale_when_a_desired_spec_field_differs() {
        let desired = json!({"spec": {"chart": "app", "version": "1.1.0", "interval": "10m"}});
        let cases = [
            (
                json!({"spec": {"chart": "app", "version": "1.1.0", "interval": "10m", "suspend": false}}),
                vec![],
            ),
            (
                json!({"spec": {"chart": "app", "version": "1.0.0", "interval": "10m"}}),
                vec!["spec.version"],
            ),
            (
                json!({"spec": {"chart": "other", "interval": "10m"}}),
                vec!["spec.chart", "spec.version"],
            ),
            (
                json!({}),
                vec!["spec.chart", "spec.interval", "spec.version"],
            ),
        ];
        for (live, want) in cases {
            assert_eq!(stale_chart_fields(&desired, &live), want, "{live}");
        }
    }

    #[test]
    fn helms_action_prefix_is_left_out_of_a_render_error() {
        for (m, want) in [
            (
                "UPGRADE FAILED: execution error at (a/t.yaml:2:4): no",
                "execution error at (a/t.yaml:2:4): no",
            ),
            ("INSTALLATION FAILED: x", "x"),
            (
                "unable to build kubernetes objects",
                "unable to build kubernetes objects",
            ),
        ] {
            assert_eq!(render_message(m), want);
        }
    }

    fn rel(version: u32, status: &str) -> Release {
        Release::from_json(
            json!({"name": "web", "namespace": "apps", "version": version,
            "info": {"status": status}}),
        )
    }

    #[test]
    fn the_current_release_is_the_newest_deployed_else_the_newest_kept() {
        let pick = |h: Vec<Release>| current_release(h).map(|r| r.version);
        assert_eq!(
            pick(vec![
                rel(3, "failed"),
                rel(2, "deployed"),
                rel(1, "superseded")
            ]),
            Some(2)
        );
        assert_eq!(pick(vec![rel(2, "failed"), rel(1, "failed")]), Some(2));
        assert_eq!(pick(vec![rel(1, "uninstalled")]), None, "install next");
        assert_eq!(pick(vec![]), None);
    }
}
