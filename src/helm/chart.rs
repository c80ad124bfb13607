//! PURE helpers of the HelmRelease controller ([`super::controller`]): the generated HelmChart
//! (Flux's `HelmChartTemplate` → `HelmChart`), the chart version recorded for an artifact, the
//! decision [`Policy`] read from the spec, the mapping between Helm's stored releases and
//! `status.history` snapshots, and the release-target change check (Flux's step 8, with
//! helm-controller#864/#234 fixed).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::decide::{self, Policy};
use super::storage::Release;
use crate::api::helm_release::{
    ActionStrategy, HelmRelease, NAME_LABEL, NAMESPACE_LABEL, RemediationStrategy, Snapshot,
    TestHookStatus,
};

/// The HelmChart `spec.chart` asks for, as the server-side apply body (`None` with
/// `chartRef`): named [`HelmRelease::helm_chart_name`] in [`HelmRelease::helm_chart_namespace`],
/// labelled `helm.toolkit.fluxcd.io/name|namespace` (plus `chart.metadata` labels and
/// annotations), with the template's chart, version (default `*`), sourceRef (kind, name),
/// interval (the HelmRelease's when unset), reconcileStrategy (default `ChartVersion`),
/// valuesFiles, ignoreMissingValuesFiles and verify. Same as Flux's `buildHelmChartFromTemplate`.
pub fn helm_chart(hr: &HelmRelease) -> Option<Value> {
    let t = hr.spec.chart.as_ref()?;
    let s = &t.spec;
    let mut labels: BTreeMap<String, String> = t
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(NAME_LABEL.into(), hr.name_any());
    labels.insert(NAMESPACE_LABEL.into(), hr.namespace().unwrap_or_default());
    let annotations: BTreeMap<String, String> = t
        .metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    let mut metadata = json!({
        "name": hr.helm_chart_name(),
        "namespace": hr.helm_chart_namespace(),
        "labels": labels,
    });
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    let mut spec = json!({
        "chart": s.chart,
        "version": s.version.as_deref().filter(|v| !v.is_empty()).unwrap_or("*"),
        "sourceRef": {"kind": s.source_ref.kind, "name": s.source_ref.name},
        "interval": hr.helm_chart_interval(),
        "reconcileStrategy": s.reconcile_strategy.as_deref().filter(|v| !v.is_empty())
            .unwrap_or("ChartVersion"),
    });
    if !s.values_files.is_empty() {
        spec["valuesFiles"] = json!(s.values_files);
    }
    if s.ignore_missing_values_files == Some(true) {
        spec["ignoreMissingValuesFiles"] = json!(true);
    }
    if let Some(v) = &s.verify {
        spec["verify"] = serde_json::to_value(v).unwrap_or_default();
    }
    Some(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmChart",
        "metadata": metadata,
        "spec": spec,
    }))
}

/// The OCI digest of an OCIRepository artifact's revision (`<tag>@sha256:<hex>` or
/// `sha256:<hex>`): the manifest digest, not the digest of the stored file, as Flux's
/// `mutateChartWithSourceRevision` takes it for the chart version and
/// `status.lastAttemptedRevisionDigest`. PURE.
pub fn oci_revision_digest(revision: &str) -> &str {
    revision.rsplit_once('@').map_or(revision, |(_, d)| d)
}

/// The chart version recorded for an artifact (`status.lastAttemptedRevision`): the chart's
/// own version; for an OCIRepository (or a chart whose artifact revision carries an OCI
/// digest) `<version>+<first 12 hex of the digest>`, so a re-pushed tag is a change (Flux's
/// `mutateChartWithSourceRevision`). `oci_digest` is the artifact's `sha256:<hex>`. A leading
/// `v` (`v1.21.2`, as cert-manager's and envoy-gateway's charts are versioned) is dropped with
/// the digest appended: Flux writes the version back from its parsed semver, which has none
/// (`1.21.2+<12 hex>`).
pub fn chart_version(version: &str, oci_digest: Option<&str>) -> String {
    match oci_digest.and_then(|d| d.split_once(':')).map(|(_, h)| h) {
        Some(hex) if hex.len() >= 12 => {
            let version = version
                .strip_prefix('v')
                .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                .unwrap_or(version);
            // a version already carrying build metadata keeps it, the digest is appended
            let sep = if version.contains('+') { "." } else { "+" };
            format!("{version}{sep}{}", &hex[..12])
        }
        _ => version.to_string(),
    }
}

/// The chart version the decision table compares with the stored release. Helm records the
/// chart's own version (`version`); for an OCI chart (`oci_digest`) whose digest differs from
/// the one the newest release was made from (`recorded_digest`) it is `recorded` (the
/// `<version>+<12 hex>` form), which no stored release has, so a re-pushed tag is an upgrade
/// (Flux rewrites the chart's version instead). PURE.
pub fn desired_chart_version(
    version: &str,
    recorded: &str,
    oci_digest: Option<&str>,
    recorded_digest: Option<&str>,
) -> String {
    match (oci_digest, recorded_digest) {
        (Some(now), Some(before)) if now != before => recorded.to_string(),
        _ => version.to_string(),
    }
}

/// The decision [`Policy`] of `hr`: timeouts (each action's, else `spec.timeout`, else 5m),
/// strategies, remediation (defaults as Flux's), tests, drift mode.
pub fn policy(hr: &HelmRelease, default_to_retry_on_failure: bool) -> Policy {
    let timeout = hr.timeout().unwrap_or(Duration::from_secs(300));
    let strat = |s: ActionStrategy| match s {
        ActionStrategy::RemediateOnFailure => decide::FailureStrategy::RemediateOnFailure,
        ActionStrategy::RetryOnFailure { retry_interval } => {
            decide::FailureStrategy::RetryOnFailure { retry_interval }
        }
    };
    let has_strategy = |set: bool, s: ActionStrategy| set.then(|| strat(s));
    let install = hr.spec.install.as_ref();
    let upgrade = hr.spec.upgrade.as_ref();
    let ir = install.and_then(|i| i.remediation.as_ref());
    let ur = upgrade.and_then(|u| u.remediation.as_ref());
    let irem = hr.install_remediation();
    let urem = hr.upgrade_remediation();
    let test = hr.spec.test.as_ref();
    Policy {
        timeout,
        install: decide::ActionPolicy {
            timeout: hr.install_timeout().unwrap_or(timeout),
            strategy: has_strategy(
                install.and_then(|i| i.strategy.as_ref()).is_some(),
                hr.install_strategy(false),
            ),
            remediation: decide::Remediation {
                retries: irem.retries,
                ignore_test_failures: irem.ignore_test_failures,
                remediate_last_failure: ir.and_then(|r| r.remediate_last_failure),
            },
            remediation_strategy: decide::RemediationStrategy::Uninstall,
        },
        upgrade: decide::ActionPolicy {
            timeout: hr.upgrade_timeout().unwrap_or(timeout),
            strategy: has_strategy(
                upgrade.and_then(|u| u.strategy.as_ref()).is_some(),
                hr.upgrade_strategy(false),
            ),
            remediation: decide::Remediation {
                retries: urem.retries,
                ignore_test_failures: urem.ignore_test_failures,
                remediate_last_failure: ur.and_then(|r| r.remediate_last_failure),
            },
            remediation_strategy: match urem.strategy {
                RemediationStrategy::Rollback => decide::RemediationStrategy::Rollback,
                RemediationStrategy::Uninstall => decide::RemediationStrategy::Uninstall,
            },
        },
        test: decide::TestPolicy {
            enabled: hr.test_enabled(),
            ignore_failures: test.and_then(|t| t.ignore_failures).unwrap_or(false),
            timeout: hr.test_timeout().unwrap_or(timeout),
        },
        rollback_timeout: hr.rollback_timeout().unwrap_or(timeout),
        uninstall_timeout: hr.uninstall_timeout().unwrap_or(timeout),
        drift: match hr.drift_mode() {
            crate::api::helm_release::DriftMode::Enabled => decide::DriftMode::Enabled,
            crate::api::helm_release::DriftMode::Warn => decide::DriftMode::Warn,
            crate::api::helm_release::DriftMode::Disabled => decide::DriftMode::Disabled,
        },
        default_to_retry_on_failure,
        unlock_only_stale: true,
    }
}

/// `sha256:<hex>` of a stored release: the observation Flux digests (name, version, info,
/// chart metadata, config, manifest, non-test hooks, namespace). A release changed in storage
/// by someone else (`helm upgrade` by hand) no longer matches its snapshot.
pub fn release_digest(r: &Release) -> String {
    let hooks: Vec<Value> = r
        .hooks
        .iter()
        .filter(|h| !h.is_test())
        .map(|h| json!({"name": h.name, "kind": h.kind, "path": h.path, "events": h.events}))
        .collect();
    let obs = json!({
        "name": r.name,
        "version": r.version,
        "status": r.info.status.as_str(),
        "description": r.info.description,
        "chart": {"name": r.chart.name, "version": r.chart.version, "appVersion": r.chart.app_version},
        "config": r.config,
        "manifest": r.manifest,
        "hooks": hooks,
        "namespace": r.namespace,
    });
    format!(
        "sha256:{:x}",
        Sha256::digest(serde_json::to_vec(&obs).unwrap_or_default())
    )
}

fn time(t: Option<k8s_openapi::jiff::Timestamp>) -> Time {
    Time(t.unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

/// The `status.history` entry of a stored release. `tested`: the test hooks ran on this
/// revision (then `testHooks` holds each with its last run; an empty map = no test hooks).
pub fn snapshot_of(r: &Release, oci_digest: Option<&str>, tested: bool) -> Snapshot {
    let test_hooks = tested.then(|| {
        r.test_hooks()
            .map(|h| {
                let ts = |t: Option<k8s_openapi::jiff::Timestamp>| t.map(Time);
                (
                    h.name.clone(),
                    TestHookStatus {
                        last_started: ts(h.last_run.started_at),
                        last_completed: ts(h.last_run.completed_at),
                        phase: Some(h.last_run.phase.clone()).filter(|p| !p.is_empty()),
                    },
                )
            })
            .collect()
    });
    Snapshot {
        api_version: Some("v2".into()),
        digest: release_digest(r),
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        version: r.version as i64,
        status: r.info.status.as_str().to_string(),
        action: None,
        chart_name: r.chart.name.clone(),
        chart_version: r.chart.version.clone(),
        app_version: Some(r.chart.app_version.clone()).filter(|a| !a.is_empty()),
        config_digest: super::values::config_digest(&r.config),
        first_deployed: time(r.info.first_deployed),
        last_deployed: time(r.info.last_deployed),
        deleted: r.info.deleted.map(Time),
        test_hooks,
        oci_digest: oci_digest.map(str::to_string),
    }
}

/// A `status.history` entry as the decision table reads it.
pub fn to_decide(s: &Snapshot) -> decide::Snapshot {
    decide::Snapshot {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        revision: s.version.max(0) as u32,
        status: decide::ReleaseStatus::parse(&s.status),
        chart_name: s.chart_name.clone(),
        chart_version: s.chart_version.clone(),
        config_digest: s.config_digest.clone(),
        test_hooks: s.test_hooks.as_ref().map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let phase = match v.phase.as_deref() {
                        Some("Succeeded") => decide::TestPhase::Succeeded,
                        Some("Failed") => decide::TestPhase::Failed,
                        Some("Running") => decide::TestPhase::Running,
                        _ => decide::TestPhase::Unknown,
                    };
                    (k.clone(), phase)
                })
                .collect()
        }),
    }
}

/// What moved since the newest snapshot (Flux's release-target check, step 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetChange {
    /// Release name, release namespace or storage namespace changed: the old release must be
    /// uninstalled first (the new target is a new release). The message names both.
    Moved(String),
    /// Only the chart name changed, with `chartNameChangeStrategy: Reinstall` (the default):
    /// uninstall, then install, announced by an Event (helm-controller#864/#234: Flux did this
    /// silently).
    ChartRenamed(String),
}

/// The release-target change of `hr` against `status.history[0]` and `status.storageNamespace`
/// for the chart `chart_name` about to be used; `None` when nothing moved, or only the chart
/// name with `InPlaceUpdate` (then an ordinary upgrade follows). PURE.
pub fn target_change(hr: &HelmRelease, chart_name: &str) -> Option<TargetChange> {
    let status = hr.status.as_ref()?;
    let storage = status
        .storage_namespace
        .as_deref()
        .filter(|s| !s.is_empty())?;
    let cur = status.history.first()?;
    let (name, ns) = (hr.release_name(), hr.release_namespace());
    let want_storage = ns.clone(); // the helm CLI stores in the release namespace
    if cur.name != name || cur.namespace != ns || storage != want_storage {
        return Some(TargetChange::Moved(format!(
            "release target changed from {}/{} (storage {storage}) to {ns}/{name} (storage \
             {want_storage}): uninstalling the old release",
            cur.namespace, cur.name
        )));
    }
    if cur.chart_name != chart_name && !hr.chart_name_change_in_place() {
        return Some(TargetChange::ChartRenamed(format!(
            "chart name changed from {} to {chart_name} (upgrade.chartNameChangeStrategy: \
             Reinstall): uninstalling release {}/{} to install the new chart",
            cur.chart_name, cur.namespace, cur.name
        )));
    }
    None
}

/// `status.inventory` of a release: one entry per object of its manifest (`objects` as
/// [`super::drift::desired_objects`] completes them), the Kustomization inventory's format
/// (`<ns>_<name>_<group>_<Kind>`, `v` the API version without the group). PURE.
pub fn inventory_of(objects: &[Value]) -> crate::api::kustomization::ResourceInventory {
    let mut entries: Vec<crate::api::kustomization::ResourceRef> = objects
        .iter()
        .map(|o| crate::api::kustomization::ResourceRef {
            id: crate::apply::inventory::ObjectId::of(o).to_id(),
            v: o["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    entries.dedup();
    crate::api::kustomization::ResourceInventory { entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::helm_release::HelmReleaseStatus;

    fn hr(spec: Value) -> HelmRelease {
        let mut h: HelmRelease = serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": spec,
        }))
        .unwrap();
        h.metadata.generation = Some(1);
        h
    }

    fn chart_spec() -> Value {
        json!({"interval": "5m", "chart": {"spec": {
            "chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}})
    }

    #[test]
    fn the_generated_helm_chart_is_fluxs() {
        let c = helm_chart(&hr(chart_spec())).unwrap();
        assert_eq!(c["metadata"]["name"], "apps-web");
        assert_eq!(c["metadata"]["namespace"], "apps");
        assert_eq!(c["metadata"]["labels"][NAME_LABEL], "web");
        assert_eq!(c["metadata"]["labels"][NAMESPACE_LABEL], "apps");
        assert_eq!(c["spec"]["version"], "*");
        assert_eq!(c["spec"]["interval"], "5m");
        assert_eq!(c["spec"]["reconcileStrategy"], "ChartVersion");
        assert_eq!(
            c["spec"]["sourceRef"],
            json!({"kind": "HelmRepository", "name": "charts"})
        );
        assert!(c["spec"].get("valuesFiles").is_none());
        let mut spec = chart_spec();
        spec["chart"]["spec"]["version"] = json!("1.x");
        spec["chart"]["spec"]["interval"] = json!("1m");
        spec["chart"]["spec"]["sourceRef"]["namespace"] = json!("flux-system");
        spec["chart"]["spec"]["reconcileStrategy"] = json!("Revision");
        spec["chart"]["spec"]["valuesFiles"] = json!(["values-prod.yaml"]);
        spec["chart"]["metadata"] = json!({"labels": {"team": "a"}, "annotations": {"x": "y"}});
        let c = helm_chart(&hr(spec)).unwrap();
        assert_eq!(c["metadata"]["namespace"], "flux-system");
        assert_eq!(c["metadata"]["labels"]["team"], "a");
        assert_eq!(c["metadata"]["annotations"]["x"], "y");
        assert_eq!(c["spec"]["version"], "1.x");
        assert_eq!(c["spec"]["interval"], "1m");
        assert_eq!(c["spec"]["reconcileStrategy"], "Revision");
        assert_eq!(c["spec"]["valuesFiles"], json!(["values-prod.yaml"]));
        let r = hr(json!({"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "x"}}));
        assert!(helm_chart(&r).is_none(), "chartRef generates none");
    }

    #[test]
    fn oci_chart_versions_carry_the_digest() {
        let d = "sha256:0123456789abcdef0123";
        assert_eq!(chart_version("1.2.3", Some(d)), "1.2.3+0123456789ab");
        assert_eq!(
            chart_version("1.2.3+build", Some(d)),
            "1.2.3+build.0123456789ab"
        );
        assert_eq!(chart_version("v1.21.2", Some(d)), "1.21.2+0123456789ab");
        for (revision, digest) in [
            ("v1.21.2@sha256:66fca23ecb6b00", "sha256:66fca23ecb6b00"),
            ("sha256:54ce79ea52fb00", "sha256:54ce79ea52fb00"),
        ] {
            assert_eq!(oci_revision_digest(revision), digest, "{revision}");
        }
        assert_eq!(chart_version("v1.21.2", None), "v1.21.2");
        assert_eq!(chart_version("vnext", Some(d)), "vnext+0123456789ab");
        assert_eq!(chart_version("1.2.3", None), "1.2.3");
        assert_eq!(chart_version("1.2.3", Some("bogus")), "1.2.3");
    }

    #[test]
    fn the_inventory_names_the_manifest_objects() {
        let objs = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "apps"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "apps"}}),
        ];
        let inv = inventory_of(&objs);
        let ids: Vec<(&str, &str)> = inv
            .entries
            .iter()
            .map(|e| (e.id.as_str(), e.v.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("apps_cfg__ConfigMap", "v1"),
                ("apps_web_apps_Deployment", "v1")
            ]
        );
    }

    #[test]
    fn a_re_pushed_oci_chart_is_a_chart_change() {
        let d1 = Some("sha256:aaa");
        let d2 = Some("sha256:bbb");
        assert_eq!(desired_chart_version("1.0.0", "1.0.0+aaa", d1, d1), "1.0.0");
        assert_eq!(
            desired_chart_version("1.0.0", "1.0.0+bbb", d2, d1),
            "1.0.0+bbb"
        );
        assert_eq!(
            desired_chart_version("1.0.0", "1.0.0+aaa", d1, None),
            "1.0.0"
        );
        assert_eq!(desired_chart_version("1.0.0", "1.0.0", None, None), "1.0.0");
    }

    #[test]
    fn the_policy_follows_the_spec() {
        let mut spec = chart_spec();
        spec["timeout"] = json!("2m");
        spec["upgrade"] =
            json!({"timeout": "7m", "remediation": {"retries": 2, "strategy": "uninstall"}});
        spec["install"] = json!({"strategy": {"name": "RetryOnFailure", "retryInterval": "1m"}});
        spec["test"] = json!({"enable": true});
        let p = policy(&hr(spec), false);
        assert_eq!(p.timeout, Duration::from_secs(120));
        assert_eq!(p.install.timeout, Duration::from_secs(120));
        assert_eq!(p.upgrade.timeout, Duration::from_secs(420));
        assert_eq!(p.upgrade.remediation.retries, 2);
        assert_eq!(
            p.upgrade.remediation_strategy,
            decide::RemediationStrategy::Uninstall
        );
        assert_eq!(
            p.install.strategy,
            Some(decide::FailureStrategy::RetryOnFailure {
                retry_interval: Duration::from_secs(60)
            })
        );
        assert_eq!(p.upgrade.strategy, None, "unset stays unset for the gate");
        assert!(p.test.enabled);
        let p = policy(&hr(chart_spec()), false);
        assert_eq!(p.timeout, Duration::from_secs(300));
        assert_eq!(p.install.remediation.retries, 0);
        assert!(!p.test.enabled);
    }

    fn snap(name: &str, ns: &str, chart: &str) -> Snapshot {
        Snapshot {
            api_version: Some("v2".into()),
            digest: "sha256:x".into(),
            name: name.into(),
            namespace: ns.into(),
            version: 1,
            status: "deployed".into(),
            action: None,
            chart_name: chart.into(),
            chart_version: "1.0.0".into(),
            app_version: None,
            config_digest: "sha256:c".into(),
            first_deployed: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            last_deployed: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            deleted: None,
            test_hooks: None,
            oci_digest: None,
        }
    }

    #[test]
    fn target_changes_uninstall_only_when_the_release_moved_or_reinstall_is_asked() {
        let mut h = hr(chart_spec());
        assert_eq!(target_change(&h, "podinfo"), None, "never installed");
        h.status = Some(HelmReleaseStatus {
            storage_namespace: Some("apps".into()),
            history: vec![snap("web", "apps", "podinfo")],
            ..Default::default()
        });
        assert_eq!(target_change(&h, "podinfo"), None);
        // a new target namespace: a new release, the old one goes
        h.spec.target_namespace = Some("prod".into());
        match target_change(&h, "podinfo") {
            Some(TargetChange::Moved(m)) => {
                assert!(m.contains("apps/web") && m.contains("prod/prod-web"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        h.spec.target_namespace = None;
        // chart renamed: Reinstall (default) is announced, InPlaceUpdate upgrades
        match target_change(&h, "podinfo2") {
            Some(TargetChange::ChartRenamed(m)) => {
                assert!(m.contains("from podinfo to podinfo2"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        h.spec.upgrade = Some(
            serde_json::from_value(json!({"chartNameChangeStrategy": "InPlaceUpdate"})).unwrap(),
        );
        assert_eq!(target_change(&h, "podinfo2"), None);
    }

    #[test]
    fn snapshots_map_to_the_decision_table() {
        let mut s = snap("web", "apps", "podinfo");
        s.version = 3;
        s.status = "failed".into();
        let d = to_decide(&s);
        assert_eq!(d.revision, 3);
        assert_eq!(d.status, decide::ReleaseStatus::Failed);
        assert_eq!(d.test_hooks, None);
        s.test_hooks = Some(BTreeMap::from([(
            "t".to_string(),
            TestHookStatus {
                phase: Some("Failed".into()),
                ..Default::default()
            },
        )]));
        let d = to_decide(&s);
        assert!(d.has_test_in_phase(decide::TestPhase::Failed));
    }
}
