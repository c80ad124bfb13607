//! `OCIRepository` (`source.toolkit.fluxcd.io/v1`, short name `ocirepo`): an OCI artifact (e.g.
//! pushed by `flux push artifact`) pulled at a tag, semver range or digest. Same schema as Flux
//! source-controller v1.9's `OCIRepository`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Artifact, Condition, INTERVAL_PATTERN, LocalObjectReference, OidcIdentityMatch,
    TIMEOUT_PATTERN, set,
};

/// Values of `spec.provider` (also HelmRepository's).
pub const OCI_PROVIDERS: [&str; 4] = ["generic", "aws", "azure", "gcp"];
/// Values of `spec.layerSelector.operation`.
pub const LAYER_OPERATIONS: [&str; 2] = ["extract", "copy"];
/// The tag pulled when `spec.ref` names nothing, as Flux's.
pub const DEFAULT_TAG: &str = "latest";

/// Spec of an OCIRepository. Same fields as Flux's `OCIRepositorySpec`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    namespaced,
    status = "OCIRepositoryStatus",
    shortname = "ocirepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// `oci://<registry>/<repository>`.
    #[schemars(extend("pattern" = "^oci://.*$"))]
    pub url: String,
    /// Which artifact: digest, semver range or tag (default `latest`). See
    /// [`OCIRepositoryRef::selector`].
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub reference: Option<OCIRepositoryRef>,
    /// Which layer to take and how; the first layer, extracted, by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_selector: Option<OCILayerSelector>,
    /// Registry login: `generic` (default, `secretRef`), `aws`, `azure`, `gcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = OCI_PROVIDERS, "default" = "generic"))]
    pub provider: Option<String>,
    /// Docker config Secret (`.dockerconfigjson`) for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Signature verification (cosign or notation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<OCIRepositoryVerification>,
    /// Service account whose image pull secrets log in to the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Secret with `tls.crt`, `tls.key`, `ca.crt` for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// Secret with the proxy's `address`, `username`, `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// How often to check the registry, a Go duration.
    #[schemars(extend("pattern" = INTERVAL_PATTERN))]
    pub interval: String,
    /// Bound of one pull, a Go duration; default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = TIMEOUT_PATTERN, "default" = "60s"))]
    pub timeout: Option<String>,
    /// Extra `.gitignore`-style patterns applied to the extracted layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,
    /// Plain HTTP to the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Stop reconciling (the last artifact stays served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// `spec.ref`: Flux's `OCIRepositoryRef`. Empty strings count as absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryRef {
    /// Manifest digest, `sha256:<hex>`; wins over everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Masterminds semver constraint over the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Regular expression the tags must match before `semver` is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_filter: Option<String>,
    /// Tag; `latest` when nothing is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// What to pull, resolved from [`OCIRepositoryRef`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciSelector {
    /// A manifest digest. Revision `sha256:<hex>`.
    Digest(String),
    /// The newest tag matching `constraint` (among tags matching `filter`, a regex). Revision
    /// `<tag>@sha256:<hex>`.
    Semver {
        constraint: String,
        filter: Option<String>,
    },
    /// A tag. Revision `<tag>@sha256:<hex>`.
    Tag(String),
}

impl OCIRepositoryRef {
    /// What to pull, with Flux's precedence: `digest` > `semver` (with `semverFilter`) > `tag` >
    /// `latest`. The second value lists the fields set but overridden (to be reported).
    pub fn selector(reference: Option<&OCIRepositoryRef>) -> (OciSelector, Vec<&'static str>) {
        let empty = OCIRepositoryRef::default();
        let r = reference.unwrap_or(&empty);
        let (digest, semver, filter, tag) = (
            set(&r.digest),
            set(&r.semver),
            set(&r.semver_filter),
            set(&r.tag),
        );
        let mut ignored = vec![];
        let selector = if let Some(d) = digest {
            ignored.extend(semver.map(|_| "ref.semver"));
            ignored.extend(filter.map(|_| "ref.semverFilter"));
            ignored.extend(tag.map(|_| "ref.tag"));
            OciSelector::Digest(d.into())
        } else if let Some(s) = semver {
            ignored.extend(tag.map(|_| "ref.tag"));
            OciSelector::Semver {
                constraint: s.into(),
                filter: filter.map(str::to_string),
            }
        } else {
            ignored.extend(filter.map(|_| "ref.semverFilter"));
            OciSelector::Tag(tag.unwrap_or(DEFAULT_TAG).into())
        };
        (selector, ignored)
    }
}

/// `spec.layerSelector`: Flux's `OCILayerSelector`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCILayerSelector {
    /// Media type of the layer to take; the first layer when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `extract` (default: untar the layer) or `copy` (keep the layer's tarball as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = LAYER_OPERATIONS))]
    pub operation: Option<String>,
}

/// `spec.verify` of an OCIRepository: Flux's `OCIRepositoryVerification` with the
/// `trustedRootSecretRef` OCIRepository adds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryVerification {
    /// `cosign` (default) or `notation`.
    #[schemars(extend("enum" = ["cosign", "notation"], "default" = "cosign"))]
    pub provider: String,
    /// Secret with the public keys (cosign) or the trust policy and CA (notation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Keyless verification: identities a signature must match (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "matchOIDCIdentity")]
    pub match_oidc_identity: Vec<OidcIdentityMatch>,
    /// Secret with a Sigstore trusted root (private Sigstore instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root_secret_ref: Option<LocalObjectReference>,
}

/// Status of an OCIRepository. Same fields as Flux's `OCIRepositoryStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct OCIRepositoryStatus {
    /// The last generation reconciled to completion; `-1` before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `metav1.Condition`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Download address of the last artifact (best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// `spec.ignore` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ignore: Option<String>,
    /// `spec.layerSelector` used for the stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_layer_selector: Option<OCILayerSelector>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_precedence_as_flux() {
        let r = |digest: &str, semver: &str, filter: &str, tag: &str| OCIRepositoryRef {
            digest: Some(digest.into()),
            semver: Some(semver.into()),
            semver_filter: Some(filter.into()),
            tag: Some(tag.into()),
        };
        assert_eq!(
            OCIRepositoryRef::selector(None),
            (OciSelector::Tag("latest".into()), vec![])
        );
        assert_eq!(
            OCIRepositoryRef::selector(Some(&r("sha256:ab", "1.x", "", "v1"))),
            (
                OciSelector::Digest("sha256:ab".into()),
                vec!["ref.semver", "ref.tag"]
            )
        );
        assert_eq!(
            OCIRepositoryRef::selector(Some(&r("", "1.x", ".*-rc", "v1"))),
            (
                OciSelector::Semver {
                    constraint: "1.x".into(),
                    filter: Some(".*-rc".into())
                },
                vec!["ref.tag"]
            )
        );
        assert_eq!(
            OCIRepositoryRef::selector(Some(&r("", "", "", "v1"))),
            (OciSelector::Tag("v1".into()), vec![])
        );
    }
}
