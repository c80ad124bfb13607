//! The artifact client of the GitOps appliers (Kustomization, HelmRelease): a source's
//! artifact downloaded from its `url`, its `sha256:` digest verified, and (for tarballs of
//! manifests) unpacked. Same checks as Flux's `fluxcd/pkg/http/fetch` archive fetcher. Here,
//! below both controllers, rather than in `gitops` (which refers to `api` only).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::artifact::{UntarLimits, untar_gz};
use crate::api::source::Artifact;

/// Largest artifact downloaded (1 GiB).
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// Download `a` into the file `dest` and verify its digest. Errors are Flux's messages:
/// `failed to download artifact from <url>: <cause>`, `failed to verify artifact: computed
/// digest doesn't match '<digest>'`.
pub async fn download(a: &Artifact, dest: &Path) -> Result<(), String> {
    let client = crate::source::http::client(&Default::default(), Duration::from_secs(60))?;
    let resp = client
        .get(&a.url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("failed to download artifact from {}: {e}", a.url))?;
    let f = std::fs::File::create(dest).map_err(|e| e.to_string())?;
    let got = crate::source::http::download_to(resp, f, MAX_DOWNLOAD)
        .await
        .map_err(|e| format!("failed to download artifact from {}: {e}", a.url))?;
    if got.digest != a.digest {
        return Err(format!(
            "failed to verify artifact: computed digest doesn't match '{}'",
            a.digest
        ));
    }
    Ok(())
}

/// [`download`] into `work/artifact.tar.gz`, then unpack it into `work/src` (returned).
/// Unpacking errors: `failed to extract artifact: <cause>`.
pub async fn fetch_and_unpack(a: &Artifact, work: &Path) -> Result<PathBuf, String> {
    let file = work.join("artifact.tar.gz");
    download(a, &file).await?;
    let dest = work.join("src");
    let into = dest.clone();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&file).map_err(|e| e.to_string())?;
        untar_gz(f, &into, &UntarLimits::default()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("failed to extract artifact: {e}"))?;
    Ok(dest)
}
