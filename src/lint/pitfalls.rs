//! Five common GitOps pitfalls, each a setting that works until the day something fails:
//! What a patch of the object in an overlay sets (same kind and name) counts as set.
//!
//! 1. a Kustomization with an `interval` of an hour or more and neither `retryInterval` nor
//!    `timeout`: a failed apply is retried only after the whole interval (Flux retries at
//!    `retryInterval`, defaulting to `interval`), and a health check may wait that long
//!    (`timeout` defaults to `interval`);
//! 2. a HelmRelease without remediation on install or upgrade (`install.remediation` /
//!    `install.strategy`, `upgrade.remediation` / `upgrade.strategy`): Flux's defaults leave a
//!    failed install or upgrade failed, without retry or rollback;
//! 3. a plaintext `Secret` (`data`/`stringData` without SOPS' `sops:` key): anyone who can read
//!    the repository reads it (values that are only `${var}` substitutions are not secrets);
//! 4. a Kustomization with `prune: true` and neither `wait: true` nor `healthChecks`, whose
//!    files (under `spec.path`, when in the repository) hold workloads: its `Ready` then means
//!    "applied", so a revision that prunes working objects and applies broken ones is reported
//!    Ready and its dependents go on. The bootstrap's own `flux-system` Kustomization (generated
//!    by `flux bootstrap`) is left alone, and so is one whose files are not in the repository;
//! 5. a GitRepository whose ssh URL has no `secretRef` (the clone needs an identity), or whose
//!    http(s) URL carries a password (credentials in Git). An https URL without auth is a public
//!    repository and fine.

use std::time::Duration;

use serde_json::Value;

use super::{Doc, Findings, Repo};
use crate::api::{helm_release, kustomization, parse_duration, source};

/// An `interval` from which a failure waiting a whole interval hurts (the issue's `1h`).
pub const LONG_INTERVAL: Duration = Duration::from_secs(3600);

/// Kinds whose health a Kustomization's `wait` would check and a dependent would wait on.
const WORKLOADS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    (helm_release::GROUP, "HelmRelease"),
    (kustomization::GROUP, "Kustomization"),
];

pub fn check(repo: &Repo, out: &mut Findings) {
    for d in &repo.docs {
        if d.is(kustomization::GROUP, "Kustomization") {
            long_interval(repo, d, out);
            prune_without_health(repo, d, out);
        } else if d.is(helm_release::GROUP, "HelmRelease") {
            no_remediation(repo, d, out);
        } else if d.is("", "Secret") {
            plaintext_secret(d, out);
        } else if d.is(source::GROUP, "GitRepository") {
            git_credentials(d, out);
        }
    }
}

fn set(v: &Value) -> bool {
    !v.is_null()
}

/// The `spec` of `d` and of the patches of it in the repository (same kind and name, the
/// namespaces compared when both are written): an overlay may add what the base lacks.
fn specs<'r>(repo: &'r Repo, d: &'r Doc) -> Vec<&'r Value> {
    let patches = repo.docs.iter().filter(|p| {
        p.patch
            && p.kind() == d.kind()
            && p.name() == d.name()
            && match (p.namespace(), d.namespace()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    });
    std::iter::once(d)
        .chain(patches)
        .map(|x| &x.json["spec"])
        .collect()
}

fn long_interval(repo: &Repo, d: &Doc, out: &mut Findings) {
    let Some(interval) = d.json["spec"]["interval"].as_str() else {
        return;
    };
    if specs(repo, d)
        .iter()
        .any(|s| set(&s["retryInterval"]) || set(&s["timeout"]))
    {
        return;
    }
    if parse_duration(interval).is_some_and(|i| i >= LONG_INTERVAL) {
        out.push(
            d.file,
            d.line(&["spec", "interval"]),
            format!(
                "interval {interval} without retryInterval or timeout: a failed apply is retried \
                 only after the whole interval, and a health check may wait that long (timeout \
                 defaults to the interval)"
            ),
        );
    }
}

fn no_remediation(repo: &Repo, d: &Doc, out: &mut Findings) {
    let specs = specs(repo, d);
    let has = |action: &str| {
        specs
            .iter()
            .any(|s| set(&s[action]["remediation"]) || set(&s[action]["strategy"]))
    };
    let line = |action: &str| d.line(&["spec", action]);
    match (has("install"), has("upgrade")) {
        (true, true) => {}
        (false, false) => out.push(
            d.file,
            d.line(&["spec"]),
            "HelmRelease without install or upgrade remediation (install.remediation or \
             install.strategy, upgrade.remediation or upgrade.strategy): a failed install or \
             upgrade is left failed"
                .into(),
        ),
        (false, true) => out.push(
            d.file,
            line("install"),
            "HelmRelease without install remediation (install.remediation or install.strategy): \
             a failed install is left failed"
                .into(),
        ),
        (true, false) => out.push(
            d.file,
            line("upgrade"),
            "HelmRelease without upgrade remediation (upgrade.remediation or upgrade.strategy): \
             a failed upgrade is left failed"
                .into(),
        ),
    }
}

fn plaintext_secret(d: &Doc, out: &mut Findings) {
    if d.api_version() != "v1" || set(&d.json["sops"]) {
        return;
    }
    for field in ["data", "stringData"] {
        let Some(values) = d.json[field].as_object() else {
            continue;
        };
        let secret = values.values().any(|v| match v {
            Value::String(s) => !s.is_empty() && !s.contains("${"),
            Value::Null => false,
            _ => true,
        });
        if secret {
            out.push(
                d.file,
                d.line(&[field]),
                format!(
                    "plaintext Secret ({field}): anyone who can read the repository reads it; \
                     encrypt it with SOPS (spec.decryption of the Kustomization) or keep it out \
                     of Git"
                ),
            );
        }
    }
}

fn prune_without_health(repo: &Repo, d: &Doc, out: &mut Findings) {
    let spec = &d.json["spec"];
    let health = |s: &&Value| {
        s["wait"] == true || s["healthChecks"].as_array().is_some_and(|h| !h.is_empty())
    };
    if spec["prune"] != true || specs(repo, d).iter().any(health) || d.name() == "flux-system" {
        return;
    }
    let Some(docs) = repo.docs_under(spec["path"].as_str().unwrap_or("")) else {
        return;
    };
    // a patch of a workload counts: the workload is in the build
    let workload = docs.iter().find(|o| {
        WORKLOADS
            .iter()
            .any(|(g, k)| o.group() == *g && o.kind() == *k)
            && !std::ptr::eq(**o, d)
    });
    if let Some(w) = workload {
        out.push(
            d.file,
            d.line(&["spec", "prune"]),
            format!(
                "prune: true without wait or healthChecks: Ready then only means applied, so a \
                 revision that prunes working objects and applies broken ones (e.g. {} {}) is \
                 reported Ready and dependents go on",
                w.kind(),
                w.name()
            ),
        );
    }
}

fn git_credentials(d: &Doc, out: &mut Findings) {
    let Some(url) = d.json["spec"]["url"].as_str() else {
        return;
    };
    let line = d.line(&["spec", "url"]);
    if is_ssh(url) {
        if !set(&d.json["spec"]["secretRef"]["name"]) {
            out.push(
                d.file,
                line,
                "ssh URL without secretRef: the clone needs a Secret with the identity and \
                 known_hosts"
                    .into(),
            );
        }
    } else if password_in_url(url) {
        out.push(
            d.file,
            line,
            "password in the URL: it is in Git for anyone who can read the repository; put \
             username and password in a Secret named by secretRef"
                .into(),
        );
    }
}

/// `ssh://...` or scp-like `user@host:path`.
pub fn is_ssh(url: &str) -> bool {
    if url.starts_with("ssh://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    match url.split_once(':') {
        Some((user_host, _)) => user_host.contains('@') && !user_host.contains('/'),
        None => false,
    }
}

/// `scheme://user:password@host/...` with a password that is not a `${var}` substitution.
pub fn password_in_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return false;
    };
    matches!(userinfo.split_once(':'), Some((_, pw)) if !pw.is_empty() && !pw.contains("${"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_files, check_one};
    use super::*;

    const KS: &str = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\nspec:\n";

    #[test]
    fn a_long_interval_needs_a_retry_interval_or_a_timeout() {
        for (spec, want) in [
            ("  interval: 1h\n", 1),
            ("  interval: 2h30m\n", 1),
            ("  interval: 59m\n", 0),
            ("  interval: 1h\n  retryInterval: 2m\n", 0),
            ("  interval: 1h\n  timeout: 5m\n", 0),
        ] {
            let found = check_one(&format!("{KS}{spec}"), check);
            assert_eq!(found.len(), want, "{spec}: {found:?}");
            if want == 1 {
                assert!(found[0].starts_with("6: interval "), "{found:?}");
            }
        }
    }

    #[test]
    fn helm_release_remediation_is_needed_on_both_actions() {
        let hr = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: x\nspec:\n  interval: 5m\n";
        for (extra, want) in [
            (
                "",
                Some("5: HelmRelease without install or upgrade remediation"),
            ),
            (
                "  install:\n    remediation:\n      retries: 3\n",
                Some("5: HelmRelease without upgrade remediation"),
            ),
            (
                "  install:\n    createNamespace: true\n  upgrade:\n    strategy:\n      name: RetryOnFailure\n",
                Some("7: HelmRelease without install remediation"),
            ),
            (
                "  install:\n    strategy:\n      name: RetryOnFailure\n  upgrade:\n    remediation:\n      retries: 3\n",
                None,
            ),
        ] {
            let found = check_one(&format!("{hr}{extra}"), check);
            match want {
                None => assert_eq!(found, Vec::<String>::new(), "{extra}"),
                Some(w) => {
                    assert_eq!(found.len(), 1, "{extra}: {found:?}");
                    assert!(found[0].starts_with(w), "{extra}: {found:?}");
                }
            }
        }
    }

    #[test]
    fn what_an_overlay_patches_in_counts() {
        let hr = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: x\nspec:\n  interval: 5m\n";
        let patch = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: x\nspec:\n  install:\n    strategy:\n      name: RetryOnFailure\n  upgrade:\n    strategy:\n      name: RetryOnFailure\n";
        let overlay = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\npatches:\n  - path: patch.yaml\n";
        let base = [("base/hr.yaml", hr)];
        assert_eq!(check_files(&base, check).len(), 1);
        let with_overlay = [
            ("base/hr.yaml", hr),
            ("prod/kustomization.yaml", overlay),
            ("prod/patch.yaml", patch),
        ];
        assert_eq!(check_files(&with_overlay, check), Vec::<String>::new());
        let other = patch.replace("name: x", "name: y");
        let other_overlay = [
            ("base/hr.yaml", hr),
            ("prod/kustomization.yaml", overlay),
            ("prod/patch.yaml", other.as_str()),
        ];
        assert_eq!(check_files(&other_overlay, check).len(), 1);
    }

    #[test]
    fn plaintext_secrets_are_found_and_sops_ones_are_not() {
        let s = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n";
        for (extra, want) in [
            ("stringData:\n  password: hunter2\n", vec![5]),
            ("data:\n  password: aHVudGVyMg==\n", vec![5]),
            ("data:\n  a: YQ==\nstringData:\n  b: c\n", vec![5, 7]),
            (
                "data:\n  password: ENC[AES256_GCM,data:x]\nsops:\n  mac: y\n",
                vec![],
            ),
            ("stringData:\n  password: ${DB_PASSWORD}\n", vec![]),
            ("type: Opaque\n", vec![]),
        ] {
            let lines: Vec<String> = check_one(&format!("{s}{extra}"), check);
            let lines: Vec<usize> = lines
                .iter()
                .map(|f| f.split(':').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(lines, want, "{extra}");
        }
    }

    #[test]
    fn pruning_workloads_needs_health_checks() {
        let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        for (spec, content, want) in [
            ("  path: ./apps\n  prune: true\n", deploy, 1),
            ("  path: ./apps\n  prune: true\n  wait: true\n", deploy, 0),
            (
                "  path: ./apps\n  prune: true\n  healthChecks:\n    - kind: Deployment\n      name: web\n",
                deploy,
                0,
            ),
            ("  path: ./apps\n  prune: false\n", deploy, 0),
            ("  path: ./apps\n  prune: true\n", cm, 0),
            ("  path: ./elsewhere\n  prune: true\n", deploy, 0),
        ] {
            let found = check_files(
                &[
                    ("clusters/apps.yaml", &format!("{KS}{spec}")),
                    ("apps/web.yaml", content),
                ],
                check,
            );
            assert_eq!(found.len(), want, "{spec}{content}: {found:?}");
            if want == 1 {
                assert!(
                    found[0].starts_with("clusters/apps.yaml:7: prune: true"),
                    "{found:?}"
                );
                assert!(found[0].contains("Deployment web"), "{found:?}");
            }
        }
    }

    #[test]
    fn git_urls_need_their_credentials_where_they_belong() {
        for (url, want) in [
            ("ssh://git@github.com/org/repo", true),
            ("git@github.com:org/repo.git", true),
            ("https://github.com/org/repo", false),
            ("https://x-token:ghp_abc@github.com/org/repo", true),
            ("https://user:${TOKEN}@github.com/org/repo", false),
            ("https://user@github.com/org/repo", false),
        ] {
            let doc = format!(
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: r\nspec:\n  url: {url}\n"
            );
            let found = check_one(&doc, check);
            assert_eq!(found.len(), usize::from(want), "{url}: {found:?}");
            let with_secret = format!("{doc}  secretRef:\n    name: auth\n");
            let found = check_one(&with_secret, check);
            let leak = want && !is_ssh(url);
            assert_eq!(
                found.len(),
                usize::from(leak),
                "{url} + secretRef: {found:?}"
            );
        }
    }
}
