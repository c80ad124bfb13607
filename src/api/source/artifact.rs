//! `status.artifact`: what a source stored and where consumers download it. Same fields as
//! Flux's `meta.Artifact` (`fluxcd/pkg/apis/meta`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Flux's pattern for `digest`: `<algorithm>:<encoded>` (OCI digest grammar).
pub const DIGEST_PATTERN: &str = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$";

/// One stored artifact, as in Flux's `meta.Artifact`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Path relative to the storage root: `<kind-lowercase>/<namespace>/<name>/<file>`.
    pub path: String,
    /// HTTP address consumers download it from: `http://<advertised address>/<path>`.
    pub url: String,
    /// Upstream id, e.g. `main@sha1:<40 hex>` (Git), `latest@sha256:<hex>` (OCI),
    /// `sha256:<hex>` (Helm index), `6.0.3` (chart version).
    pub revision: String,
    /// `<algorithm>:<hex>` of the file's bytes, `sha256` by default.
    #[schemars(extend("pattern" = DIGEST_PATTERN))]
    pub digest: String,
    /// When the artifact was (re)written.
    pub last_update_time: Time,
    /// Size of the file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Extra data, e.g. an OCI artifact's manifest annotations
    /// (`org.opencontainers.image.revision`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Artifact {
    /// True when `other` is the same content: same revision and digest (Flux's
    /// `Artifact.HasRevision` / `HasDigest`, as the controllers compare before writing).
    pub fn same_content(&self, other: &Artifact) -> bool {
        self.revision == other.revision && self.digest == other.digest
    }

    /// The file name part of `path`.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_round_trips_in_fluxs_shape() {
        let json = serde_json::json!({
            "path": "gitrepository/flux-system/podinfo/5394cb7f.tar.gz",
            "url": "http://source-controller.flux-system.svc/gitrepository/flux-system/podinfo/5394cb7f.tar.gz",
            "revision": "main@sha1:5394cb7f48332b2de7c17dd8b8384bbc84b7e738",
            "digest": "sha256:d4d1ab08f8e4c5b1a8e7b1b4fd0c2b4a1a3e7b0c9f3a0f7e6c3c2b1a0f9e8d7c",
            "lastUpdateTime": "2026-12-04T23:00:00Z",
            "size": 1234,
            "metadata": {"org.opencontainers.image.revision": "v1"}
        });
        let a: Artifact = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(a.file_name(), "5394cb7f.tar.gz");
        assert_eq!(serde_json::to_value(&a).unwrap(), json);
        assert!(a.same_content(&a.clone()));
        assert!(
            regex::Regex::new(DIGEST_PATTERN)
                .unwrap()
                .is_match(&a.digest)
        );
        assert!(
            !regex::Regex::new(DIGEST_PATTERN)
                .unwrap()
                .is_match("d4d1ab08")
        );
    }
}
