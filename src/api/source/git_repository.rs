//! `GitRepository` (`source.toolkit.fluxcd.io/v1`, short name `gitrepo`): a Git repository
//! checked out at a ref and stored as a tarball artifact. Same schema as Flux source-controller
//! v1.9's `GitRepository`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Artifact, Condition, INTERVAL_PATTERN, LocalObjectReference, TIMEOUT_PATTERN, set};

/// Values of `spec.provider`.
pub const GIT_PROVIDERS: [&str; 4] = ["generic", "aws", "azure", "github"];
/// Values of `spec.verify.mode` (`head` is the deprecated spelling of `HEAD`).
pub const GIT_VERIFY_MODES: [&str; 4] = ["head", "HEAD", "Tag", "TagAndHEAD"];
/// The branch checked out when `spec.ref` names nothing, as Flux's `DefaultBranch`.
pub const DEFAULT_BRANCH: &str = "master";

/// Spec of a GitRepository. Same fields as Flux's `GitRepositorySpec`.
// kube-derive's `printcolumn(name = .., ..)` repeats keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    namespaced,
    status = "GitRepositoryStatus",
    shortname = "gitrepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "serviceAccountName can only be set when provider is 'azure' or 'aws'",
    "rule": "!has(self.serviceAccountName) || (has(self.provider) && (self.provider == 'azure' || self.provider == 'aws'))"
}]))]
pub struct GitRepositorySpec {
    /// Repository address: `http://`, `https://` or `ssh://` (the scp form `git@host:path` is
    /// refused by the schema, as Flux's).
    #[schemars(extend("pattern" = "^(http|https|ssh)://.*$"))]
    pub url: String,
    /// Secret with the credentials: `username` + `password` or `bearerToken` (HTTPS),
    /// `identity` + `known_hosts` (+ `password`) (SSH), `ca.crt` (TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// `generic` (default, credentials from `secretRef`), `aws`, `azure` or `github`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = GIT_PROVIDERS))]
    pub provider: Option<String>,
    /// Service account for workload identity (`azure`, `aws` only; CEL rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How often to check the remote, a Go duration (`1m`, `10m30s`).
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: String,
    /// Bound of one Git operation, a Go duration; default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = TIMEOUT_PATTERN, "default" = "60s"))]
    pub timeout: Option<String>,
    /// What to check out; branch `master` when empty. See [`GitRepositoryRef::checkout`].
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub reference: Option<GitRepositoryRef>,
    /// Signature verification of the commit and/or tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<GitRepositoryVerification>,
    /// Secret with the proxy's `address`, `username`, `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// Extra `.gitignore`-style patterns, appended to the repository's `.sourceignore` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,
    /// Stop reconciling (the last artifact stays served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Check out submodules too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurse_submodules: Option<bool>,
    /// Other GitRepositories whose artifacts are copied into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<GitRepositoryInclude>,
    /// Directories to check out (sparse checkout); everything when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse_checkout: Vec<String>,
}

/// `spec.ref`: Flux's `GitRepositoryRef`. Empty strings count as absent, as in Flux.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryRef {
    /// Branch name, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag name, e.g. `v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Masterminds semver constraint over the tags, e.g. `>=1.0.0 <2.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Full reference name, e.g. `refs/heads/main`, `refs/tags/v1`, `refs/pull/420/head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Commit SHA; with `branch`, the branch is fetched (shallow) and the commit checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What to check out, resolved from [`GitRepositoryRef`] with Flux's precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitCheckout {
    /// A commit, fetched through `branch` when given. Revision `<branch>@sha1:<hex>` with a
    /// branch, `sha1:<hex>` without.
    Commit {
        commit: String,
        branch: Option<String>,
    },
    /// A full reference name (`refs/...`). Revision `<name>@sha1:<hex>`.
    Name(String),
    /// The newest tag matching a semver constraint. Revision `<tag>@sha1:<hex>`.
    Semver(String),
    /// A tag. Revision `<tag>@sha1:<hex>`.
    Tag(String),
    /// A branch's head. Revision `<branch>@sha1:<hex>`.
    Branch(String),
}

/// A resolved checkout plus the `spec.ref` fields it leaves unused (to be reported, never
/// silently dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRef {
    pub checkout: GitCheckout,
    /// Fields set but overridden by a field of higher precedence, e.g. `["ref.branch"]` beside
    /// `ref.tag`.
    pub ignored: Vec<&'static str>,
}

/// Why a `spec.ref` cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// `tag` and `semver` together: Flux documents semver winning but its code checks out the
    /// tag (flux.md §1.2), so pennant refuses to guess.
    #[error(
        "invalid spec.ref: `tag` ({tag:?}) and `semver` ({semver:?}) are both set; Flux's \
         documentation and code disagree on which wins, so set only one"
    )]
    TagAndSemver { tag: String, semver: String },
}

impl GitRepositoryRef {
    /// What to check out. Precedence as Flux's code and documentation agree: `commit` >
    /// `name` > (`semver` | `tag`) > `branch`; `branch` stays in use beside `commit` (shallow
    /// fetch of that branch). Both `tag` and `semver` set is [`RefError::TagAndSemver`]
    /// (where Flux silently takes the tag). The other overridden fields are listed in
    /// [`ResolvedRef::ignored`]. No ref at all is branch [`DEFAULT_BRANCH`].
    pub fn checkout(reference: Option<&GitRepositoryRef>) -> Result<ResolvedRef, RefError> {
        let empty = GitRepositoryRef::default();
        let r = reference.unwrap_or(&empty);
        let (commit, name, semver, tag, branch) = (
            set(&r.commit),
            set(&r.name),
            set(&r.semver),
            set(&r.tag),
            set(&r.branch),
        );
        if let (Some(tag), Some(semver)) = (tag, semver) {
            return Err(RefError::TagAndSemver {
                tag: tag.into(),
                semver: semver.into(),
            });
        }
        let fields = [
            ("ref.name", name),
            ("ref.semver", semver),
            ("ref.tag", tag),
            ("ref.branch", branch),
        ];
        // index (in `fields`) of the first field that is used; later ones are ignored
        let (checkout, used) = if let Some(commit) = commit {
            let checkout = GitCheckout::Commit {
                commit: commit.into(),
                branch: branch.map(str::to_string),
            };
            // branch is used with a commit; name/semver/tag are not
            let ignored = fields[..3]
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(f, _)| *f)
                .collect();
            return Ok(ResolvedRef { checkout, ignored });
        } else if let Some(name) = name {
            (GitCheckout::Name(name.into()), 0)
        } else if let Some(semver) = semver {
            (GitCheckout::Semver(semver.into()), 1)
        } else if let Some(tag) = tag {
            (GitCheckout::Tag(tag.into()), 2)
        } else {
            (
                GitCheckout::Branch(branch.unwrap_or(DEFAULT_BRANCH).into()),
                3,
            )
        };
        let ignored = fields[used + 1..]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(f, _)| *f)
            .collect();
        Ok(ResolvedRef { checkout, ignored })
    }
}

/// `spec.verify`: Flux's `GitRepositoryVerification`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryVerification {
    /// `HEAD` (default; `head` is its deprecated spelling), `Tag` or `TagAndHEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = GIT_VERIFY_MODES, "default" = "HEAD"))]
    pub mode: Option<String>,
    /// Secret with the public keys (`*.asc` PGP, `*.sshpub` SSH).
    pub secret_ref: LocalObjectReference,
}

/// `spec.include[]`: Flux's `GitRepositoryInclude`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryInclude {
    /// The GitRepository (same namespace) whose artifact is copied.
    pub repository: LocalObjectReference,
    /// Path inside the included artifact to copy from; its root when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_path: Option<String>,
    /// Path inside this artifact to copy to; the included repository's name when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_path: Option<String>,
}

impl GitRepositoryInclude {
    /// `fromPath`, or the artifact's root (`""`).
    pub fn from_path(&self) -> &str {
        set(&self.from_path).unwrap_or("")
    }
    /// `toPath`, or the included repository's name (Flux's `GetToPath`).
    pub fn to_path(&self) -> &str {
        set(&self.to_path).unwrap_or(&self.repository.name)
    }
}

/// Status of a GitRepository. Same fields as Flux's `GitRepositoryStatus`; the CRD defaults it
/// to `{observedGeneration: -1}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct GitRepositoryStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `metav1.Condition`s: Ready, Reconciling, Stalled, ArtifactInStorage, FetchFailed, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Artifacts of `spec.include`, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_artifacts: Vec<Artifact>,
    /// `spec.ignore` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ignore: Option<String>,
    /// `spec.recurseSubmodules` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_recurse_submodules: Option<bool>,
    /// `spec.include` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_include: Vec<GitRepositoryInclude>,
    /// `spec.sparseCheckout` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_sparse_checkout: Vec<String>,
    /// Verification mode used for the stored artifact's commit/tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_verification_mode: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, &str)]) -> GitRepositoryRef {
        let mut r = GitRepositoryRef::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "branch" => r.branch = v,
                "tag" => r.tag = v,
                "semver" => r.semver = v,
                "name" => r.name = v,
                "commit" => r.commit = v,
                _ => unreachable!(),
            }
        }
        r
    }

    #[test]
    fn ref_precedence_as_flux() {
        use GitCheckout::*;
        type Case<'a> = (&'a [(&'a str, &'a str)], GitCheckout, &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], Branch("master".into()), &[]),
            (&[("branch", "")], Branch("master".into()), &[]),
            (&[("branch", "main")], Branch("main".into()), &[]),
            (
                &[("tag", "v1"), ("branch", "main")],
                Tag("v1".into()),
                &["ref.branch"],
            ),
            (
                &[("semver", ">=1"), ("branch", "main")],
                Semver(">=1".into()),
                &["ref.branch"],
            ),
            (
                &[("name", "refs/pull/1/head"), ("tag", "v1")],
                Name("refs/pull/1/head".into()),
                &["ref.tag"],
            ),
            (
                &[("commit", "abc"), ("branch", "main")],
                Commit {
                    commit: "abc".into(),
                    branch: Some("main".into()),
                },
                &[],
            ),
            (
                &[("commit", "abc"), ("name", "refs/heads/x"), ("tag", "v1")],
                Commit {
                    commit: "abc".into(),
                    branch: None,
                },
                &["ref.name", "ref.tag"],
            ),
            // an empty string is absent, as in Flux
            (&[("tag", ""), ("semver", "1.x")], Semver("1.x".into()), &[]),
        ];
        for (pairs, want, ignored) in cases {
            let got = GitRepositoryRef::checkout(Some(&r(pairs))).unwrap();
            assert_eq!(got.checkout, *want, "{pairs:?}");
            assert_eq!(got.ignored, *ignored, "{pairs:?}");
        }
        assert_eq!(
            GitRepositoryRef::checkout(None).unwrap().checkout,
            Branch("master".into())
        );
    }

    #[test]
    fn tag_and_semver_together_is_refused_with_a_clear_message() {
        let err =
            GitRepositoryRef::checkout(Some(&r(&[("tag", "v1"), ("semver", ">=1")]))).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`tag` (\"v1\") and `semver` (\">=1\")"),
            "{msg}"
        );
        // with a commit, too: the combination is still ambiguous to whoever wrote it
        assert!(
            GitRepositoryRef::checkout(Some(&r(&[
                ("commit", "a"),
                ("tag", "v1"),
                ("semver", "1")
            ])))
            .is_err()
        );
    }

    #[test]
    fn include_paths_default_as_flux() {
        let mut i = GitRepositoryInclude {
            repository: LocalObjectReference { name: "lib".into() },
            ..Default::default()
        };
        assert_eq!((i.from_path(), i.to_path()), ("", "lib"));
        i.from_path = Some("deploy".into());
        i.to_path = Some("vendor/lib".into());
        assert_eq!((i.from_path(), i.to_path()), ("deploy", "vendor/lib"));
    }

    #[test]
    fn fluxs_example_parses_and_round_trips() {
        let json = serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {
                "interval": "5m0s",
                "url": "https://github.com/stefanprodan/podinfo",
                "ref": {"branch": "master"},
                "ignore": "/*\n!/deploy\n",
                "include": [{"repository": {"name": "lib"}, "toPath": "lib"}],
                "verify": {"mode": "HEAD", "secretRef": {"name": "pgp"}}
            },
            "status": {
                "observedGeneration": 1,
                "lastHandledReconcileAt": "2026-12-04T23:00:00Z",
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Succeeded",
                    "message": "stored artifact for revision 'master@sha1:5394'",
                    "lastTransitionTime": "2026-12-04T23:00:00Z", "observedGeneration": 1
                }]
            }
        });
        let g: GitRepository = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&g).unwrap(), json);
    }
}
