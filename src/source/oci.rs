//! Pulling OCI artifacts the way Flux's source-controller does for OCIRepository (flux.md §1.5):
//! resolve a tag, a semver range over the tags or a digest to a manifest digest, and download the
//! selected layer only when that digest is not the one of the last revision.
//!
//! Async (reqwest). The registry API used is the distribution spec's pull side: `GET /v2/<repo>/
//! tags/list` (paginated by `Link`), `HEAD`/`GET /v2/<repo>/manifests/<ref>` and `GET /v2/<repo>/
//! blobs/<digest>`. Authentication: anonymous first; on `401` the `WWW-Authenticate` challenge is
//! answered — `Basic` with the credentials, `Bearer realm=…,service=…,scope=…` by fetching a token
//! from the realm (with the credentials, if any) — and the answer reused for the next requests.
//!
//! Why not the `oci-client` crate: it shares our reqwest 0.13, but brings chrono (pennant keeps
//! jiff as its one time library), a second sha2/digest stack (0.11) and oci-spec's builder macros,
//! for the few calls above.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

pub use crate::api::source::OciSelector;
use crate::api::source::{DEFAULT_TAG, OCILayerSelector};
use crate::source::artifact::{UntarLimits, UntarSummary, untar_gz};
use crate::source::http::{self, DownloadError, TlsConfig};
use crate::source::semver::Constraint;
use crate::util::chain;

/// Media type of the layer `flux push artifact` writes (a `tar.gz` of the pushed directory).
pub const FLUX_ARTIFACT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// Media type of a Helm chart's layer in an OCI registry (`helm push`).
pub const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Manifests accepted: OCI image manifest and Docker's v2 schema 2 (what `flux push` and
/// `helm push` write). Image indexes (multi-platform images) are not artifacts and are refused.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest read (distribution's own limit is 4 MiB).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest token response and tag-list page read.
const MAX_SMALL_BODY: u64 = 4 << 20;
/// At most this many tag-list pages are followed (with `n=1000`, one million tags).
const MAX_TAG_PAGES: usize = 1000;
/// Default for [`PullRequest::max_layer_size`]: Flux's 100 MiB artifact limit.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 100 << 20;

/// Registry credentials, from the `.dockerconfigjson` of a `secretRef` ([`docker_config_auth`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum OciAuth {
    #[default]
    Anonymous,
    /// `username`/`password` (or `auth`, their base64): sent as HTTP basic auth when the
    /// registry asks for `Basic`, or to the token realm when it asks for `Bearer`.
    Basic { username: String, password: String },
    /// A docker config `registrytoken`: sent as `Authorization: Bearer` as is.
    Bearer(String),
}

impl std::fmt::Debug for OciAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OciAuth::Anonymous => "Anonymous",
            OciAuth::Basic { .. } => "Basic(***)",
            OciAuth::Bearer(_) => "Bearer(***)",
        })
    }
}

/// Why a pull failed. [`OciError::reason`] is the `FetchFailed` condition reason Flux uses;
/// messages never contain credentials or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// Not `oci://<host>/<repo>`, or a malformed digest/semver filter (Flux: Stalled).
    #[error("URL validation failed for '{url}': {msg}")]
    UrlInvalid { url: String, msg: String },
    /// The registry refused the credentials (or there were none), or the docker config is bad.
    #[error("{0}")]
    AuthenticationFailed(String),
    /// Listing tags or picking one failed (no tag matches a semver range, bad constraint).
    #[error("{0}")]
    ReadOperationFailed(String),
    /// Resolving, fetching the manifest or a blob failed (network, 404, digest mismatch, size).
    #[error("{0}")]
    PullFailed(String),
    /// Selecting, copying or extracting the layer failed (no layer of the media type,
    /// hostile tarball).
    #[error("{0}")]
    LayerOperationFailed(String),
}

impl OciError {
    /// `URLInvalid`, `AuthenticationFailed`, `ReadOperationFailed`, `OCIArtifactPullFailed` or
    /// `OCIArtifactLayerOperationFailed` (Flux's reasons for the same failures).
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::UrlInvalid { .. } => "URLInvalid",
            OciError::AuthenticationFailed(_) => "AuthenticationFailed",
            OciError::ReadOperationFailed(_) => "ReadOperationFailed",
            OciError::PullFailed(_) => "OCIArtifactPullFailed",
            OciError::LayerOperationFailed(_) => "OCIArtifactLayerOperationFailed",
        }
    }

    /// Whether retrying cannot help without a spec change (Flux's Stalled): an invalid URL.
    pub fn is_stalling(&self) -> bool {
        matches!(self, OciError::UrlInvalid { .. })
    }
}

/// `oci://<host>[:port]/<repository>` split; no tag or digest (those come from `spec.ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRepoUrl {
    /// `host[:port]`, lowercased.
    pub registry: String,
    /// `org/app`.
    pub repository: String,
}

/// Parses an OCIRepository / HelmRepository `type: oci` URL. Errors as Flux's ("URL must be in
/// format `oci://<domain>/<org>/<repo>`").
pub fn parse_url(url: &str) -> Result<OciRepoUrl, OciError> {
    let invalid = |msg: &str| OciError::UrlInvalid {
        url: url.to_string(),
        msg: msg.to_string(),
    };
    let rest = url
        .strip_prefix("oci://")
        .ok_or_else(|| invalid("URL must be in format 'oci://<domain>/<org>/<repo>'"))?;
    let (registry, repository) = rest
        .split_once('/')
        .ok_or_else(|| invalid("URL must be in format 'oci://<domain>/<org>/<repo>'"))?;
    let repository = repository.trim_end_matches('/');
    let host_ok = !registry.is_empty()
        && !registry.contains('@')
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    // distribution's repository grammar: lowercase path components of [a-z0-9] separated by
    // `.`, `_`, `__` or `-`; a tag (`:`) or digest (`@`) does not belong in the URL.
    let repo_ok = !repository.is_empty()
        && repository.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        });
    if !host_ok || !repo_ok {
        return Err(invalid(
            "URL must be in format 'oci://<domain>/<org>/<repo>' with a lowercase repository and no tag or digest",
        ));
    }
    Ok(OciRepoUrl {
        registry: registry.to_ascii_lowercase(),
        repository: repository.to_string(),
    })
}

/// The credentials for `registry` (`host[:port]`) in a docker config JSON (a Secret's
/// `.dockerconfigjson`): `auths[<key>]` where the key names that host (`host`, `https://host`,
/// `https://host/v1/`; `docker.io`/`index.docker.io`/`registry-1.docker.io` are one), using
/// `auth` (base64 `user:password`), else `username`/`password`, else `registrytoken`. No entry
/// for the host is anonymous, as Flux's keychain. Errors (invalid JSON, bad base64) never quote
/// the content.
pub fn docker_config_auth(config_json: &[u8], registry: &str) -> Result<OciAuth, OciError> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        registrytoken: Option<String>,
    }
    let cfg: Config = serde_json::from_slice(config_json).map_err(|e| {
        OciError::AuthenticationFailed(format!(
            "invalid docker config (.dockerconfigjson): not JSON of the expected shape at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let canon = |h: &str| {
        let h = h.trim();
        let h = h
            .strip_prefix("https://")
            .or_else(|| h.strip_prefix("http://"))
            .unwrap_or(h);
        let h = h.split('/').next().unwrap_or(h).to_ascii_lowercase();
        match h.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            _ => h,
        }
    };
    let want = canon(registry);
    let Some(entry) = cfg.auths.into_iter().find(|(k, _)| canon(k) == want) else {
        return Ok(OciAuth::Anonymous);
    };
    let e = entry.1;
    if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
        use base64::Engine;
        let bad = || {
            OciError::AuthenticationFailed(format!(
                "invalid docker config (.dockerconfigjson): auths[{}].auth is not base64 of 'username:password'",
                entry.0
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = s.split_once(':').ok_or_else(bad)?;
        return Ok(OciAuth::Basic {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    if let Some(u) = e.username.filter(|u| !u.is_empty()) {
        return Ok(OciAuth::Basic {
            username: u,
            password: e.password.unwrap_or_default(),
        });
    }
    if let Some(t) = e.registrytoken.filter(|t| !t.is_empty()) {
        return Ok(OciAuth::Bearer(t));
    }
    Ok(OciAuth::Anonymous)
}

/// `spec.layerSelector.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerOperation {
    /// Untar the (gzip) layer into the destination directory.
    #[default]
    Extract,
    /// Keep the layer's bytes as they are, in the destination file.
    Copy,
}

/// `spec.layerSelector`, resolved: which layer (`media_type`, else the first) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerSelector {
    pub media_type: Option<String>,
    pub operation: LayerOperation,
}

impl LayerSelector {
    /// From the spec; empty strings count as absent, an unknown operation is an error (the CRD
    /// enum normally rejects it first).
    pub fn from_spec(spec: Option<&OCILayerSelector>) -> Result<LayerSelector, OciError> {
        let Some(s) = spec else {
            return Ok(LayerSelector::default());
        };
        let operation = match s.operation.as_deref().unwrap_or_default() {
            "" | "extract" => LayerOperation::Extract,
            "copy" => LayerOperation::Copy,
            other => {
                return Err(OciError::LayerOperationFailed(format!(
                    "unsupported layer operation: {other}"
                )));
            }
        };
        Ok(LayerSelector {
            media_type: s.media_type.clone().filter(|m| !m.is_empty()),
            operation,
        })
    }
}

/// A content descriptor of a manifest (config or layer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker v2), the parts an artifact pull needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Manifest annotations: `org.opencontainers.image.source`, `…revision`, `…created`
    /// (what `flux push artifact --source --revision` writes); Flux copies them into
    /// `status.artifact.metadata`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The layer `selector` picks: the first with its media type, else the first layer. Errors
    /// as Flux's: "no layers found in artifact", "failed to find layer with media type '…' in
    /// artifact".
    pub fn select_layer(&self, selector: &LayerSelector) -> Result<&Descriptor, OciError> {
        if self.layers.is_empty() {
            return Err(OciError::LayerOperationFailed(
                "no layers found in artifact".into(),
            ));
        }
        match &selector.media_type {
            Some(mt) => self
                .layers
                .iter()
                .find(|l| &l.media_type == mt)
                .ok_or_else(|| {
                    let have: Vec<&str> =
                        self.layers.iter().map(|l| l.media_type.as_str()).collect();
                    OciError::LayerOperationFailed(format!(
                        "failed to find layer with media type '{mt}' in artifact (layers: {})",
                        have.join(", ")
                    ))
                }),
            None => Ok(&self.layers[0]),
        }
    }
}

/// A resolved reference: the tag it came from (none for a digest ref) and the manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Resolved {
    /// Flux's revision: `<tag>@sha256:<hex>`, or `sha256:<hex>` for a digest ref.
    pub fn revision(&self) -> String {
        match &self.tag {
            Some(t) => format!("{t}@{}", self.digest),
            None => self.digest.clone(),
        }
    }
}

/// Whether `registry` (`host[:port]`) may be read over plain http without `insecure`, by
/// go-containerregistry's rule (the OCI client of Flux's source-controller): `localhost:<port>`,
/// a name ending in `.local` or `.localhost` (with an optional port), one containing `127.0.0.1`
/// or `::1`, or an IPv4 address in 10/8, 172.16/12 or 192.168/16. Such a registry is still
/// tried over https first ([`Client::new`]).
pub fn plain_http_fallback(registry: &str) -> bool {
    let host = registry.split(':').next().unwrap_or_default();
    let private = host
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_private());
    let without_port = match registry.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    private
        || registry.starts_with("localhost:")
        || without_port.ends_with(".local")
        || without_port.ends_with(".localhost")
        || registry.contains("127.0.0.1")
        || registry.contains("::1")
}

/// The digest in a revision (`v1@sha256:<hex>` → `sha256:<hex>`; `sha256:<hex>` as is), as
/// Flux's `digestFromRevision`.
pub fn revision_digest(revision: &str) -> &str {
    revision.rsplit_once('@').map_or(revision, |(_, d)| d)
}

/// A registry client for one repository. Cheap to create per reconcile; it remembers the
/// `Authorization` that answered the last challenge.
pub struct Client {
    http: reqwest::Client,
    /// `http(s)://host[:port]`: `https` (`http` with `insecure`), settled on the first request
    /// for a [`plain_http_fallback`] registry.
    base: String,
    /// For a [`plain_http_fallback`] registry without `insecure`: the scheme probed once.
    settled: tokio::sync::OnceCell<String>,
    fallback: bool,
    url: OciRepoUrl,
    auth: OciAuth,
    authorization: Mutex<Option<String>>,
}

impl Client {
    /// A client for `url` (`oci://host/repo`): https, or plain http with `insecure` (Flux's
    /// `spec.insecure`); `tls` for a custom CA / client certificate; `timeout` per request. A
    /// [`plain_http_fallback`] registry (loopback, `localhost`, `*.local`, RFC 1918) is tried
    /// over https first and, when that fails to connect while plain http answers as a registry
    /// (`/v2/` with 200 or 401), read over http, as Flux's OCI client (go-containerregistry's
    /// scheme rule and ping) does without `insecure`.
    pub fn new(
        url: &str,
        auth: OciAuth,
        insecure: bool,
        tls: &TlsConfig,
        timeout: Duration,
    ) -> Result<Client, OciError> {
        let parsed = parse_url(url)?;
        let http = http::client(tls, timeout).map_err(OciError::PullFailed)?;
        let scheme = if insecure { "http" } else { "https" };
        Ok(Client {
            http,
            base: format!("{scheme}://{}", parsed.registry),
            settled: tokio::sync::OnceCell::new(),
            fallback: !insecure && plain_http_fallback(&parsed.registry),
            url: parsed,
            auth,
            authorization: Mutex::new(None),
        })
    }

    /// The repository this client reads.
    pub fn repo_url(&self) -> &OciRepoUrl {
        &self.url
    }

    /// Every tag of the repository (all pages, in the registry's order).
    pub async fn tags(&self) -> Result<Vec<String>, OciError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut next = format!("/v2/{}/tags/list?n=1000", self.url.repository);
        for _ in 0..MAX_TAG_PAGES {
            let resp = self.send(Method::GET, &next, None).await?;
            let resp = self.check(resp, "list tags").await?;
            let link = next_link(resp.headers());
            let body = read_small(resp, MAX_SMALL_BODY)
                .await
                .map_err(|e| OciError::ReadOperationFailed(format!("list tags: {e}")))?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| {
                OciError::ReadOperationFailed(format!("list tags: invalid response: {e}"))
            })?;
            out.extend(page.tags.unwrap_or_default());
            match link {
                Some(l) => next = l,
                None => return Ok(out),
            }
        }
        Err(OciError::ReadOperationFailed(format!(
            "list tags: more than {MAX_TAG_PAGES} pages"
        )))
    }

    /// The manifest digest `selector` names: a digest ref is checked to exist (HEAD); a tag is
    /// resolved with HEAD (GET and hash when the registry sends no `Docker-Content-Digest`);
    /// a semver range picks the highest matching tag (among those matching the filter regex)
    /// with [`Constraint::highest`], then resolves it. No blob is downloaded.
    pub async fn resolve(&self, selector: &OciSelector) -> Result<Resolved, OciError> {
        match selector {
            OciSelector::Digest(d) => {
                check_digest(d).map_err(|msg| OciError::UrlInvalid {
                    url: format!("oci://{}/{}", self.url.registry, self.url.repository),
                    msg,
                })?;
                let digest = self.manifest_digest(d).await?;
                Ok(Resolved { tag: None, digest })
            }
            OciSelector::Tag(t) => {
                let tag = if t.is_empty() { DEFAULT_TAG } else { t };
                let digest = self.manifest_digest(tag).await?;
                Ok(Resolved {
                    tag: Some(tag.to_string()),
                    digest,
                })
            }
            OciSelector::Semver { constraint, filter } => {
                let tag = self.semver_tag(constraint, filter.as_deref()).await?;
                let digest = self.manifest_digest(&tag).await?;
                Ok(Resolved {
                    tag: Some(tag),
                    digest,
                })
            }
        }
    }

    /// A chart version in a Helm OCI repository (`HelmRepository` `type: oci`; this client's
    /// URL is `<spec.url>/<chart>`), as Flux's `OCIChartRepository.GetChartVersion`: an exact
    /// version (`1.2.3`, `1.2.3+b`) is used as the tag directly, no listing; otherwise the tags
    /// are listed, Helm's `_` read as `+` (OCI tags cannot hold `+`), and the highest matching
    /// the constraint (empty or `*`: the latest stable) is taken. Returns the chart version and
    /// the resolved tag/digest (the layer to pull is [`HELM_CHART_MEDIA_TYPE`]).
    pub async fn resolve_chart(&self, constraint: &str) -> Result<(String, Resolved), OciError> {
        let constraint = constraint.trim();
        let version = match crate::source::semver::Version::parse(constraint) {
            Some(_) if !constraint.starts_with('v') => constraint.to_string(),
            _ => {
                let c = Constraint::parse(if constraint.is_empty() {
                    "*"
                } else {
                    constraint
                })
                .map_err(|e| OciError::ReadOperationFailed(e.to_string()))?;
                let tags: Vec<String> = self
                    .tags()
                    .await?
                    .iter()
                    .map(|t| t.replace('_', "+"))
                    .collect();
                c.highest(tags.iter().map(String::as_str))
                    .map(|(t, _)| t.to_string())
                    .ok_or_else(|| {
                        OciError::ReadOperationFailed(format!(
                            "could not locate a version matching provided version string {constraint}"
                        ))
                    })?
            }
        };
        let tag = version.replace('+', "_");
        let digest = self.manifest_digest(&tag).await?;
        Ok((
            version,
            Resolved {
                tag: Some(tag),
                digest,
            },
        ))
    }

    async fn semver_tag(&self, constraint: &str, filter: Option<&str>) -> Result<String, OciError> {
        let c = Constraint::parse(constraint).map_err(|e| {
            OciError::ReadOperationFailed(format!("semver '{constraint}' parse error: {e}"))
        })?;
        let re = match filter {
            Some(f) => Some(regex::Regex::new(f).map_err(|e| OciError::UrlInvalid {
                url: format!("oci://{}/{}", self.url.registry, self.url.repository),
                msg: format!("failed to parse semverFilter '{f}': {e}"),
            })?),
            None => None,
        };
        let tags = self.tags().await?;
        let candidates = tags
            .iter()
            .map(String::as_str)
            .filter(|t| re.as_ref().is_none_or(|re| re.is_match(t)));
        c.highest(candidates)
            .map(|(t, _)| t.to_string())
            .ok_or_else(|| {
                OciError::ReadOperationFailed(format!(
                    "failed to determine the artifact tag for 'oci://{}/{}': no match found for semver: {constraint}",
                    self.url.registry, self.url.repository
                ))
            })
    }

    /// The digest of the manifest at `reference` (tag or digest), by HEAD.
    async fn manifest_digest(&self, reference: &str) -> Result<String, OciError> {
        let path = format!("/v2/{}/manifests/{reference}", self.url.repository);
        let resp = self
            .send(Method::HEAD, &path, Some(MANIFEST_ACCEPT))
            .await?;
        let resp = self
            .check(
                resp,
                &format!("failed to determine artifact digest of '{reference}'"),
            )
            .await?;
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match header {
            Some(d) if check_digest(&d).is_ok() => Ok(d),
            _ => Ok(self.manifest_bytes(reference).await?.0),
        }
    }

    /// GET the manifest at `reference`: its digest (sha256 of the bytes, checked against a
    /// digest reference) and bytes.
    async fn manifest_bytes(&self, reference: &str) -> Result<(String, Vec<u8>), OciError> {
        let path = format!("/v2/{}/manifests/{reference}", self.url.repository);
        let resp = self.send(Method::GET, &path, Some(MANIFEST_ACCEPT)).await?;
        let resp = self
            .check(resp, &format!("failed to fetch manifest '{reference}'"))
            .await?;
        let body = read_small(resp, MAX_MANIFEST_SIZE)
            .await
            .map_err(|e| OciError::PullFailed(format!("failed to fetch manifest: {e}")))?;
        let digest = crate::source::artifact::sha256_digest(body.as_slice())
            .map_err(|e| OciError::PullFailed(e.to_string()))?;
        if reference.starts_with("sha256:") && digest != reference {
            return Err(OciError::PullFailed(format!(
                "manifest digest mismatch: asked for {reference}, got {digest}"
            )));
        }
        Ok((digest, body))
    }

    /// The manifest with `digest` (verified). An image index or a schema 1 manifest is an
    /// error naming its media type.
    pub async fn manifest(&self, digest: &str) -> Result<Manifest, OciError> {
        let (_, body) = self.manifest_bytes(digest).await?;
        let m: Manifest = serde_json::from_slice(&body).map_err(|e| {
            OciError::LayerOperationFailed(format!("failed to parse artifact manifest: {e}"))
        })?;
        match m.media_type.as_deref() {
            None
            | Some("application/vnd.oci.image.manifest.v1+json")
            | Some("application/vnd.docker.distribution.manifest.v2+json") => Ok(m),
            Some(other) => Err(OciError::PullFailed(format!(
                "unsupported manifest media type '{other}': an artifact needs an image manifest"
            ))),
        }
    }

    /// Downloads the blob of `desc` into `out`, streaming: refused before any byte when
    /// `desc.size` is over `max_size`, stopped past `max_size`, and its sha256 checked against
    /// `desc.digest` (and its size against `desc.size`).
    pub async fn download_blob(
        &self,
        desc: &Descriptor,
        out: impl Write,
        max_size: u64,
    ) -> Result<http::Downloaded, OciError> {
        check_digest(&desc.digest).map_err(OciError::PullFailed)?;
        if desc.size > max_size {
            return Err(OciError::PullFailed(format!(
                "layer {} is {} bytes, over the limit of {max_size} bytes",
                desc.digest, desc.size
            )));
        }
        let path = format!("/v2/{}/blobs/{}", self.url.repository, desc.digest);
        let resp = self.send(Method::GET, &path, None).await?;
        let resp = self
            .check(resp, &format!("failed to fetch layer {}", desc.digest))
            .await?;
        let got = http::download_to(resp, out, max_size)
            .await
            .map_err(|e| match e {
                DownloadError::Write(e) => OciError::LayerOperationFailed(format!(
                    "failed to copy layer from artifact: {e}"
                )),
                e => OciError::PullFailed(format!("failed to fetch layer {}: {e}", desc.digest)),
            })?;
        if got.digest != desc.digest || (desc.size > 0 && got.size != desc.size) {
            return Err(OciError::PullFailed(format!(
                "layer digest mismatch: expected {} ({} bytes), got {} ({} bytes)",
                desc.digest, desc.size, got.digest, got.size
            )));
        }
        Ok(got)
    }

    /// `http(s)://host[:port]` of the registry: [`Client::new`]'s choice, or for a
    /// [`plain_http_fallback`] registry the scheme one probe of `/v2/` settles (https unless it
    /// fails to connect and plain http answers 200 or 401).
    async fn base(&self) -> &str {
        if !self.fallback {
            return &self.base;
        }
        self.settled
            .get_or_init(|| async {
                let registry = &self.url.registry;
                let probe =
                    |scheme: &str| self.http.get(format!("{scheme}://{registry}/v2/")).send();
                if probe("https").await.is_err()
                    && let Ok(r) = probe("http").await
                    && (r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED)
                {
                    return format!("http://{registry}");
                }
                self.base.clone()
            })
            .await
    }

    /// Sends a request, answering one `401` challenge (module docs). The path is relative to
    /// the registry (`/v2/…`); an absolute URL (a `Link` to another host) is used as is.
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, OciError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base().await)
        };
        let mut answered = false;
        loop {
            let mut rb = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            let authorization = self.authorization.lock().unwrap().clone();
            if let Some(h) = authorization {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = rb.send().await.map_err(|e| {
                OciError::PullFailed(format!(
                    "{method} {}: {}",
                    strip_query(&url),
                    chain(&e.without_url())
                ))
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(resp);
            }
            answered = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let header = self.answer(&challenge).await?;
            *self.authorization.lock().unwrap() = Some(header);
        }
    }

    /// The `Authorization` value answering `challenge`.
    async fn answer(&self, challenge: &str) -> Result<String, OciError> {
        let (scheme, params) = parse_challenge(challenge);
        let who = &self.url.registry;
        match (scheme.to_ascii_lowercase().as_str(), &self.auth) {
            (_, OciAuth::Bearer(token)) => Ok(format!("Bearer {token}")),
            ("basic", OciAuth::Basic { username, password }) => {
                Ok(format!("Basic {}", basic(username, password)))
            }
            ("basic", OciAuth::Anonymous) => Err(OciError::AuthenticationFailed(format!(
                "registry '{who}' requires authentication and no credentials were given (secretRef)"
            ))),
            ("bearer", _) => {
                let realm = params.get("realm").ok_or_else(|| {
                    OciError::AuthenticationFailed(format!(
                        "registry '{who}' sent a Bearer challenge without a realm"
                    ))
                })?;
                let mut token_url = reqwest::Url::parse(realm).map_err(|_| {
                    OciError::AuthenticationFailed(format!(
                        "registry '{who}' sent an invalid token realm"
                    ))
                })?;
                {
                    let mut q = token_url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    let default_scope = format!("repository:{}:pull", self.url.repository);
                    q.append_pair("scope", params.get("scope").map_or(&default_scope, |s| s));
                }
                let mut rb = self.http.get(token_url.clone());
                if let OciAuth::Basic { username, password } = &self.auth {
                    rb = rb.basic_auth(username, Some(password));
                }
                let realm_shown = format!(
                    "{}://{}{}",
                    token_url.scheme(),
                    token_url.host_str().unwrap_or_default(),
                    token_url.path()
                );
                let resp = rb.send().await.map_err(|e| {
                    OciError::AuthenticationFailed(format!(
                        "token request to {realm_shown}: {}",
                        chain(&e.without_url())
                    ))
                })?;
                if !resp.status().is_success() {
                    return Err(OciError::AuthenticationFailed(format!(
                        "token request to {realm_shown}: {}",
                        resp.status()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_small(resp, MAX_SMALL_BODY).await.map_err(|e| {
                    OciError::AuthenticationFailed(format!("token request to {realm_shown}: {e}"))
                })?;
                let t: Token = serde_json::from_slice(&body).map_err(|_| {
                    OciError::AuthenticationFailed(format!(
                        "token request to {realm_shown}: the response has no token"
                    ))
                })?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        OciError::AuthenticationFailed(format!(
                            "token request to {realm_shown}: the response has no token"
                        ))
                    })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(OciError::AuthenticationFailed(format!(
                "registry '{who}' answered 401 with an unsupported challenge '{scheme}'"
            ))),
        }
    }

    /// `resp` when 2xx; otherwise an error for `what` with the status and the registry's error
    /// code/message (401/403 are AuthenticationFailed).
    async fn check(&self, resp: Response, what: &str) -> Result<Response, OciError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let detail = read_small(resp, 64 << 10)
            .await
            .ok()
            .and_then(|b| registry_error(&b))
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let repo = format!("oci://{}/{}", self.url.registry, self.url.repository);
        let msg = format!("{what} in '{repo}': {status}{detail}");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => OciError::AuthenticationFailed(msg),
            _ => OciError::PullFailed(msg),
        })
    }
}

/// One artifact pull (OCIRepository): owned, so it can move into a task.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// `oci://host/repo`.
    pub url: String,
    pub selector: OciSelector,
    pub layer: LayerSelector,
    pub auth: OciAuth,
    /// Plain HTTP (`spec.insecure`).
    pub insecure: bool,
    pub tls: TlsConfig,
    /// Per request (Flux's `spec.timeout`, default 60 s).
    pub timeout: Duration,
    /// `status.artifact.revision` of the stored artifact: when its digest is the resolved one,
    /// nothing is downloaded ([`Pulled::Unchanged`]).
    pub last_revision: Option<String>,
    /// Largest layer downloaded, bytes ([`DEFAULT_MAX_LAYER_SIZE`]).
    pub max_layer_size: u64,
    /// Limits of the extraction (symlinks are skipped, as Flux's `WithSkipSymlinks`).
    pub untar: UntarLimits,
    /// `Extract`: the directory the layer is untarred into (created; should be empty).
    /// `Copy`: the file the layer's bytes are written to (Flux names it `<digest>.tgz`).
    /// Untouched when unchanged or on error before the layer download.
    pub dest: PathBuf,
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The resolved digest is the last revision's; only manifests were HEADed (and the tag list
    /// read for a semver ref). `revision` is the current one (the tag may differ).
    Unchanged { revision: String },
    /// The layer is in `dest`.
    Pulled {
        /// `<tag>@sha256:<hex>` or `sha256:<hex>`.
        revision: String,
        /// The manifest's annotations (for `status.artifact.metadata`).
        annotations: BTreeMap<String, String>,
        /// The layer taken.
        layer: Descriptor,
        /// What was extracted (`None` for `Copy`).
        extracted: Option<UntarSummary>,
    },
}

impl Pulled {
    pub fn revision(&self) -> &str {
        match self {
            Pulled::Unchanged { revision } | Pulled::Pulled { revision, .. } => revision,
        }
    }
}

/// Pulls `req` (module docs): resolve, stop if unchanged, fetch the manifest, select the
/// layer, download it (verified, bounded) to a temporary file beside `dest`, then extract it
/// into `dest` or move it to `dest`.
pub async fn pull(req: &PullRequest) -> Result<Pulled, OciError> {
    let secrets = secrets_of(&req.auth);
    pull_inner(req).await.map_err(|e| redact(e, &secrets))
}

async fn pull_inner(req: &PullRequest) -> Result<Pulled, OciError> {
    let client = Client::new(
        &req.url,
        req.auth.clone(),
        req.insecure,
        &req.tls,
        req.timeout,
    )?;
    let resolved = client.resolve(&req.selector).await?;
    let revision = resolved.revision();
    if req
        .last_revision
        .as_deref()
        .is_some_and(|last| revision_digest(last) == resolved.digest)
    {
        return Ok(Pulled::Unchanged { revision });
    }
    let manifest = client.manifest(&resolved.digest).await?;
    let layer = manifest.select_layer(&req.layer)?.clone();
    let parent = req
        .dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp_dir = if req.layer.operation == LayerOperation::Copy {
        parent.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    std::fs::create_dir_all(&tmp_dir).map_err(|e| {
        OciError::LayerOperationFailed(format!("failed to create {}: {e}", tmp_dir.display()))
    })?;
    let tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| {
        OciError::LayerOperationFailed(format!("failed to create file to copy layer to: {e}"))
    })?;
    client
        .download_blob(&layer, tmp.as_file(), req.max_layer_size)
        .await?;
    let extracted = match req.layer.operation {
        LayerOperation::Copy => {
            tmp.persist(&req.dest).map_err(|e| {
                OciError::LayerOperationFailed(format!("failed to copy layer from artifact: {e}"))
            })?;
            None
        }
        LayerOperation::Extract => {
            let dest = req.dest.clone();
            let limits = UntarLimits {
                skip_links: true,
                ..req.untar.clone()
            };
            let summary = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(tmp.path())?;
                Ok::<_, std::io::Error>(untar_gz(std::io::BufReader::new(file), &dest, &limits))
            })
            .await
            .map_err(|e| OciError::LayerOperationFailed(e.to_string()))?
            .map_err(|e| OciError::LayerOperationFailed(e.to_string()))?
            .map_err(|e| {
                OciError::LayerOperationFailed(format!(
                    "failed to extract layer contents from artifact: {e}"
                ))
            })?;
            Some(summary)
        }
    };
    Ok(Pulled::Pulled {
        revision,
        annotations: manifest.annotations,
        layer,
        extracted,
    })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// `sha256:<64 lowercase hex>`.
fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!("'{d}' is not a sha256 digest (sha256:<64 hex>)")),
    }
}

/// `Bearer realm="…",service="…"` → ("Bearer", {realm, service}). Quoted values may hold commas.
fn parse_challenge(h: &str) -> (String, BTreeMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_string(), params)
}

/// The target of `Link: <…>; rel="next"`.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(LINK)?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// A body of at most `max` bytes.
async fn read_small(resp: Response, max: u64) -> Result<Vec<u8>, DownloadError> {
    let mut buf = Vec::new();
    http::download_to(resp, &mut buf, max).await?;
    Ok(buf)
}

/// `CODE: message` of a distribution error body (`{"errors":[{"code","message"}]}`).
fn registry_error(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let first = e.errors.first()?;
    Some(format!(
        "{}: {}",
        first.code.as_deref().unwrap_or("UNKNOWN"),
        first.message.as_deref().unwrap_or_default()
    ))
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn secrets_of(auth: &OciAuth) -> Vec<String> {
    let mut s = match auth {
        OciAuth::Anonymous => vec![],
        OciAuth::Basic { username, password } => vec![password.clone(), basic(username, password)],
        OciAuth::Bearer(t) => vec![t.clone()],
    };
    s.retain(|x| x.len() >= 3);
    s
}

fn redact(e: OciError, secrets: &[String]) -> OciError {
    let scrub = |m: String| secrets.iter().fold(m, |m, s| m.replace(s.as_str(), "***"));
    match e {
        OciError::UrlInvalid { url, msg } => OciError::UrlInvalid {
            url: scrub(url),
            msg: scrub(msg),
        },
        OciError::AuthenticationFailed(m) => OciError::AuthenticationFailed(scrub(m)),
        OciError::ReadOperationFailed(m) => OciError::ReadOperationFailed(scrub(m)),
        OciError::PullFailed(m) => OciError::PullFailed(scrub(m)),
        OciError::LayerOperationFailed(m) => OciError::LayerOperationFailed(scrub(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_fallback_is_go_containerregistrys_rule() {
        for (registry, fallback) in [
            ("127.0.0.1:5000", true),
            ("127.0.0.1", true),
            ("[::1]:5000", true),
            ("localhost:5000", true),
            ("localhost", false), // the rule wants a port after `localhost`
            ("registry.local", true),
            ("registry.local:5000", true),
            ("kind-registry.localhost:5000", true),
            ("10.1.2.3:5000", true),
            ("172.16.0.1", true),
            ("172.31.255.255:443", true),
            ("172.32.0.1", false),
            ("192.168.1.10:5000", true),
            ("192.169.1.10", false),
            ("8.8.8.8", false),
            ("ghcr.io", false),
            ("quay.io", false),
            ("registry.localdomain", false),
            ("local.example.com", false),
        ] {
            assert_eq!(plain_http_fallback(registry), fallback, "{registry}");
        }
    }

    #[test]
    fn urls_as_flux() {
        assert_eq!(
            parse_url("oci://127.0.0.1:5000/org/app").unwrap(),
            OciRepoUrl {
                registry: "127.0.0.1:5000".into(),
                repository: "org/app".into()
            }
        );
        for bad in [
            "https://ghcr.io/org/app",
            "oci://ghcr.io",
            "oci://ghcr.io/",
            "oci://ghcr.io/org/App",
            "oci://ghcr.io/org/app:v1",
            "oci://ghcr.io/org/app@sha256:ab",
            "oci://user:pw@ghcr.io/org/app",
            "oci://ghcr.io/org//app",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.reason(), "URLInvalid", "{bad}");
            assert!(e.is_stalling());
        }
    }

    #[test]
    fn revisions_as_flux() {
        let d = format!("sha256:{}", "a".repeat(64));
        let tagged = Resolved {
            tag: Some("v1.0.0".into()),
            digest: d.clone(),
        };
        assert_eq!(tagged.revision(), format!("v1.0.0@{d}"));
        assert_eq!(
            Resolved {
                tag: None,
                digest: d.clone()
            }
            .revision(),
            d
        );
        assert_eq!(revision_digest(&tagged.revision()), d);
        assert_eq!(revision_digest(&d), d);
    }

    #[test]
    fn docker_config_entries() {
        let cfg = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dTpw"},
            "ghcr.io":{"username":"bot","password":"tok"},
            "quay.io":{"registrytoken":"rt"},
            "empty.io":{}}}"#;
        let basic = |u: &str, p: &str| OciAuth::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            docker_config_auth(cfg, "docker.io").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            docker_config_auth(cfg, "registry-1.docker.io").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            docker_config_auth(cfg, "GHCR.io").unwrap(),
            basic("bot", "tok")
        );
        assert_eq!(
            docker_config_auth(cfg, "quay.io").unwrap(),
            OciAuth::Bearer("rt".into())
        );
        assert_eq!(
            docker_config_auth(cfg, "empty.io").unwrap(),
            OciAuth::Anonymous
        );
        assert_eq!(
            docker_config_auth(cfg, "other.io").unwrap(),
            OciAuth::Anonymous
        );
        let e =
            docker_config_auth(br#"{"auths":{"x.io":{"auth":"!!hunter2"}}}"#, "x.io").unwrap_err();
        assert_eq!(e.reason(), "AuthenticationFailed");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = docker_config_auth(b"{\"auths\": hunter2", "x.io").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "reg.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("Basic", "Registry Realm")
        );
    }

    #[test]
    fn layer_selection_as_flux() {
        let l = |mt: &str| Descriptor {
            media_type: mt.into(),
            digest: String::new(),
            size: 0,
            annotations: BTreeMap::new(),
        };
        let m = Manifest {
            media_type: None,
            config: None,
            layers: vec![l("a/first"), l(FLUX_ARTIFACT_MEDIA_TYPE)],
            annotations: BTreeMap::new(),
        };
        let sel = |mt: Option<&str>| LayerSelector {
            media_type: mt.map(str::to_string),
            operation: LayerOperation::Extract,
        };
        assert_eq!(m.select_layer(&sel(None)).unwrap().media_type, "a/first");
        assert_eq!(
            m.select_layer(&sel(Some(FLUX_ARTIFACT_MEDIA_TYPE)))
                .unwrap()
                .media_type,
            FLUX_ARTIFACT_MEDIA_TYPE
        );
        let e = m.select_layer(&sel(Some("x/missing"))).unwrap_err();
        assert_eq!(e.reason(), "OCIArtifactLayerOperationFailed");
        assert!(e.to_string().contains("media type 'x/missing'"), "{e}");
        let spec = OCILayerSelector {
            media_type: Some(String::new()),
            operation: Some("copy".into()),
        };
        assert_eq!(
            LayerSelector::from_spec(Some(&spec)).unwrap(),
            LayerSelector {
                media_type: None,
                operation: LayerOperation::Copy
            }
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let auth = OciAuth::Basic {
            username: "bot".into(),
            password: "hunter2".into(),
        };
        let e = redact(
            OciError::PullFailed(format!("x hunter2 {}", basic("bot", "hunter2"))),
            &secrets_of(&auth),
        );
        assert_eq!(e.to_string(), "x *** ***");
    }
}
