//! `pennant lint` on the test repositories of `tests/fixtures/lint/` (one per family of
//! findings, and a mixed one), run as the real binary: the exact `file:line: message` lines and
//! the exit status. Negative controls: Flux's example fleet (Flux's own best practice) lints
//! clean, and so do Flagger's example Canaries and workloads, but for the one plaintext Secret
//! Flagger's end-to-end tests commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Run `pennant lint ARGS` in `dir`: (stdout lines, stderr, exit status).
fn lint_in(dir: &Path, args: &[&str]) -> (Vec<String>, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_pennant"))
        .arg("lint")
        .args(args)
        .current_dir(dir)
        .env_remove("PENNANT_MESH_PROVIDER")
        .output()
        .expect("run pennant lint");
    (
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().expect("an exit status"),
    )
}

/// Lint the repository `tests/fixtures/lint/<case>` from its root; assert exit 1 and `want`.
fn assert_findings(case: &str, want: &[&str]) {
    let (found, stderr, code) = lint_in(&fixtures().join("lint").join(case), &["."]);
    assert_eq!(found, want, "{case}: stderr {stderr}");
    assert_eq!(code, 1, "{case}: exit status with findings");
}

const SSH: &str = "ssh URL without secretRef: the clone needs a Secret with the identity and \
                   known_hosts";
const SECRET: &str = "anyone who can read the repository reads it; encrypt it with SOPS \
                      (spec.decryption of the Kustomization) or keep it out of Git";
const INTERVAL: &str = "interval 1h without retryInterval or timeout: a failed apply is retried \
                        only after the whole interval, and a health check may wait that long \
                        (timeout defaults to the interval)";

#[test]
fn a_long_interval_without_retry_interval_or_timeout() {
    assert_findings("interval", &[&format!("kustomizations.yaml:8: {INTERVAL}")]);
}

#[test]
fn helm_releases_without_remediation() {
    assert_findings(
        "remediation",
        &[
            "releases.yaml:16: HelmRelease without install or upgrade remediation \
             (install.remediation or install.strategy, upgrade.remediation or upgrade.strategy): \
             a failed install or upgrade is left failed",
            "releases.yaml:42: HelmRelease without upgrade remediation (upgrade.remediation or \
             upgrade.strategy): a failed upgrade is left failed",
        ],
    );
}

#[test]
fn plaintext_secrets() {
    assert_findings(
        "secret",
        &[
            &format!("secrets.yaml:7: plaintext Secret (stringData): {SECRET}"),
            &format!("secrets.yaml:15: plaintext Secret (data): {SECRET}"),
        ],
    );
}

#[test]
fn pruning_workloads_without_health_checks() {
    assert_findings(
        "prune",
        &[
            "clusters/apps.yaml:12: prune: true without wait or healthChecks: Ready then only \
           means applied, so a revision that prunes working objects and applies broken ones \
           (e.g. Deployment web) is reported Ready and dependents go on",
        ],
    );
}

#[test]
fn git_repositories_without_or_with_leaked_credentials() {
    assert_findings(
        "git",
        &[
            &format!("sources.yaml:8: {SSH}"),
            &format!("sources.yaml:19: {SSH}"),
            "sources.yaml:30: password in the URL: it is in Git for anyone who can read the \
             repository; put username and password in a Secret named by secretRef",
        ],
    );
}

#[test]
fn wrong_api_versions_name_the_served_one() {
    assert_findings(
        "api-version",
        &[
            "deprecated.yaml:1: GitRepository source.toolkit.fluxcd.io/v1beta2 is an older, \
             deprecated version: use apiVersion source.toolkit.fluxcd.io/v1",
            "deprecated.yaml:10: HelmRelease helm.toolkit.fluxcd.io/v2beta1 is an older, \
             deprecated version: use apiVersion helm.toolkit.fluxcd.io/v2",
            "deprecated.yaml:30: Kustomization kustomize.toolkit.fluxcd.io/v1beta2 is an older, \
             deprecated version: use apiVersion kustomize.toolkit.fluxcd.io/v1",
            "tutorial.yaml:2: HelmRelease is helm.toolkit.fluxcd.io/v2, not \
             source.toolkit.fluxcd.io/v1 (source.toolkit.fluxcd.io has no HelmRelease)",
        ],
    );
}

#[test]
fn references_to_sources_no_file_defines() {
    assert_findings(
        "references",
        &[
            "apps.yaml:10: sourceRef GitRepository flux-system/fleet is not defined in any file",
            "apps.yaml:38: chart.spec.sourceRef HelmRepository shared/charts is not defined in \
             any file",
            "apps.yaml:56: chartRef OCIRepository apps/cache is not defined in any file",
        ],
    );
}

#[test]
fn depends_on_cycles() {
    assert_findings(
        "cycles",
        &[
            "kustomizations.yaml:9: dependsOn cycle: flux-system/infra -> flux-system/apps -> \
             flux-system/infra (none of them will ever be applied)",
            "releases.yaml:9: dependsOn cycle: apps/frontend -> apps/backend -> apps/frontend \
             (none of them will ever be applied)",
        ],
    );
}

#[test]
fn canaries_the_controller_would_refuse() {
    assert_findings(
        "canary",
        &[
            "canaries.yaml:10: Canary podinfo would be refused: targetRef.kind \"StatefulSet\" \
             must be Deployment, DaemonSet or Service",
            "canaries.yaml:26: Canary frontend would be refused: provider \"linkerd\" is not \
             implemented by pennant yet (implemented: istio, nginx, gatewayapi:v1, \
             gatewayapi:v1beta1, kubernetes)",
        ],
    );
}

#[test]
fn post_build_variables_without_definition() {
    assert_findings(
        "substitute",
        &[
            "apps/app.yaml:9: variable zone is not defined and has no default \
             (${zone:=default}), in the postBuild of Kustomization flux-system/apps",
            "apps/app.yaml:14: variable domain is not defined and has no default \
             (${domain:=default}), in the postBuild of Kustomization flux-system/apps",
        ],
    );
}

#[test]
fn a_mixed_repository_reports_every_family_in_file_order() {
    assert_findings(
        "mixed",
        &[
            "apps/base/release.yaml:1: HelmRelease helm.toolkit.fluxcd.io/v2beta2 is an older, \
             deprecated version: use apiVersion helm.toolkit.fluxcd.io/v2",
            "apps/base/release.yaml:5: HelmRelease without install or upgrade remediation \
             (install.remediation or install.strategy, upgrade.remediation or upgrade.strategy): \
             a failed install or upgrade is left failed",
            "apps/base/release.yaml:12: chart.spec.sourceRef HelmRepository podinfo is not \
             defined in any file",
            &format!("apps/base/secret.yaml:5: plaintext Secret (stringData): {SECRET}"),
            "apps/prod/canary.yaml:12: Canary podinfo would be refused: service.delegation \
             cannot be combined with service.hosts or service.gateways",
            "apps/prod/values.yaml:10: variable domain is not defined and has no default \
             (${domain:=default}), in the postBuild of Kustomization flux-system/apps",
            &format!("clusters/prod/apps.yaml:7: {INTERVAL}"),
            "clusters/prod/apps.yaml:12: prune: true without wait or healthChecks: Ready then \
             only means applied, so a revision that prunes working objects and applies broken \
             ones (e.g. HelmRelease podinfo) is reported Ready and dependents go on",
            &format!("clusters/prod/apps.yaml:24: {SSH}"),
        ],
    );
}

/// Files are named relative to a directory argument, or as given; several arguments are one
/// repository (a reference resolves across them).
#[test]
fn paths_are_named_as_given_and_checked_together() {
    let lint = fixtures().join("lint");
    let (found, _, code) = lint_in(&lint, &["references/apps.yaml", "git"]);
    assert_eq!(code, 1);
    assert!(
        found.contains(
            &"references/apps.yaml:10: sourceRef GitRepository flux-system/fleet is \
                         not defined in any file"
                .to_string()
        ),
        "{found:?}"
    );
    assert!(
        found.contains(&format!("sources.yaml:8: {SSH}")),
        "{found:?}"
    );
    // the HelmRepository of references/sources.yaml is not given: the namespace-matched
    // reference is now missing too, and the other one still is
    assert_eq!(found.len(), 3 + 3, "{found:?}");
}

/// A Helm chart's templates are not manifests: the walk skips a directory with a `Chart.yaml`
/// (`mixed` above reports nothing from `charts/web`), though the template read on its own is a
/// plaintext Secret.
#[test]
fn helm_charts_are_skipped_by_the_walk() {
    let mixed = fixtures().join("lint/mixed");
    let (found, _, _) = lint_in(&mixed, &["."]);
    assert!(!found.iter().any(|f| f.starts_with("charts/")), "{found:?}");
    let (found, _, code) = lint_in(&mixed, &["charts/web/templates/secret.yaml"]);
    assert_eq!(
        (found, code),
        (
            vec![format!(
                "charts/web/templates/secret.yaml:6: plaintext Secret (stringData): {SECRET}"
            )],
            1
        )
    );
}

#[test]
fn flux_example_fleet_lints_clean() {
    let (found, stderr, code) = lint_in(&fixtures().join("flux2-kustomize-helm-example"), &["."]);
    assert_eq!(found, Vec::<String>::new(), "stderr: {stderr}");
    assert_eq!(code, 0);
    // and each cluster directory on its own (its ExternalArtifacts come from its generator)
    for cluster in ["clusters/production", "clusters/staging"] {
        let (found, _, code) =
            lint_in(&fixtures().join("flux2-kustomize-helm-example"), &[cluster]);
        assert_eq!((found, code), (vec![], 0), "{cluster}");
    }
}

/// Flagger's example Canaries (and the reference article's) pass the controller's validation;
/// the only finding in Flagger's workloads is a true one: `test/workloads/secret.yaml` commits
/// `s3cr3t` in plaintext (fine for its end-to-end tests, a leak in a GitOps repository).
#[test]
fn flagger_examples_lint_clean_but_for_their_plaintext_secret() {
    let (found, stderr, code) = lint_in(&fixtures(), &["flagger", "article-canary.yaml"]);
    assert_eq!(
        found,
        [format!(
            "test_workloads_secret.yaml:5: plaintext Secret (stringData): {SECRET}"
        )],
        "stderr: {stderr}"
    );
    assert_eq!(code, 1);
}

#[test]
fn usage_and_io_errors_exit_2() {
    let (found, stderr, code) = lint_in(&fixtures(), &["no-such-dir"]);
    assert_eq!((found, code), (vec![], 2));
    assert!(
        stderr.starts_with("pennant lint: no-such-dir: "),
        "{stderr}"
    );
    let (_, stderr, code) = lint_in(&fixtures(), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("<PATH>"), "{stderr}");
}

#[test]
fn help_names_every_family() {
    let out = Command::new(env!("CARGO_BIN_EXE_pennant"))
        .args(["lint", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "file:line: message",
        "retryInterval",
        "remediation",
        "plaintext Secret",
        "prune: true",
        "secretRef",
        "apiVersion",
        "flux-system",
        "dependsOn cycles",
        "Canary",
        "postBuild",
    ] {
        assert!(help.contains(needle), "{needle} not in:\n{help}");
    }
}
