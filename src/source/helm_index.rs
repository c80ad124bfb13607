//! Helm chart repositories (`HelmRepository` `type: default`) the way Flux's source-controller
//! reads them (flux.md §1.3, §1.4): download `<url>/index.yaml`, parse it once per revision into
//! a small index of what chart selection needs, pick a chart version by a Masterminds
//! constraint, download and check the chart package.
//!
//! - [`ChartRepo::fetch_index`] (async) streams the index into a file with a size limit,
//!   hashing while it writes: revision `sha256:<hex>` of the bytes (Flux's). With the `ETag` /
//!   `Last-Modified` of the last download it asks conditionally, and a `304` downloads nothing.
//! - [`parse_index`] (blocking; CPU) reads that file with a streaming YAML parser into
//!   [`ChartIndex`], keeping per chart only version, URLs, digest and creation time — never the
//!   YAML tree — so memory follows the number of versions, not the file size (Flux #303: a
//!   100 MB index cost Flux gigabytes). [`IndexCache`] keeps the parsed index per revision, so a
//!   repository's charts share one parse.
//! - [`ChartIndex::select`]: Flux's `GetChartVersion` (exact string match first, then the
//!   highest version matching the constraint; `*` or empty is the latest stable).
//! - [`ChartRepo::download_chart`] (async) and [`check_chart`] (blocking): the package from the
//!   entry's first URL (relative ones resolved against the repository URL), credentials only to
//!   the repository's own scheme+host unless `passCredentials`, digest checked against the
//!   index's, then read as a hostile archive to find `Chart.yaml`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use crate::source::artifact::{UntarLimits, untar_gz};
use crate::source::http::{self, DownloadError, TlsConfig};
use crate::source::semver::{Constraint, Version};
use crate::util::chain;

/// Flux's `--helm-index-max-size` default: 50 MiB.
pub const DEFAULT_MAX_INDEX_SIZE: u64 = 50 << 20;
/// Flux's `--helm-chart-max-size` default (the `.tgz`): 10 MiB.
pub const DEFAULT_MAX_CHART_SIZE: u64 = 10 << 20;
/// Flux's `--helm-chart-file-max-size` default (one file inside a chart): 5 MiB.
pub const DEFAULT_MAX_CHART_FILE_SIZE: u64 = 5 << 20;

/// Why a repository or chart operation failed. [`HelmError::reason`] is Flux's condition reason;
/// messages never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelmError {
    /// Not an `http(s)://` URL (an `oci://` URL with `type: default` is Stalled in Flux).
    #[error("invalid Helm repository URL: {0}")]
    UrlInvalid(String),
    /// 401/403 from the repository.
    #[error("{0}")]
    AuthenticationFailed(String),
    /// Downloading, reading or validating `index.yaml` failed.
    #[error("{0}")]
    IndexationFailed(String),
    /// No such chart or no version matching the constraint (or an invalid constraint).
    #[error("{0}")]
    InvalidChartReference(String),
    /// Downloading or checking the chart package failed.
    #[error("{0}")]
    ChartPullError(String),
}

impl HelmError {
    /// `URLInvalid`, `AuthenticationFailed`, `IndexationFailed` (HelmRepository),
    /// `InvalidChartReference`, `ChartPullError` (HelmChart's build error reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            HelmError::UrlInvalid(_) => "URLInvalid",
            HelmError::AuthenticationFailed(_) => "AuthenticationFailed",
            HelmError::IndexationFailed(_) => "IndexationFailed",
            HelmError::InvalidChartReference(_) => "InvalidChartReference",
            HelmError::ChartPullError(_) => "ChartPullError",
        }
    }
}

/// `secretRef` credentials of a HelmRepository (`username`/`password`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum HelmAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for HelmAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HelmAuth::None => "None",
            HelmAuth::Basic { .. } => "Basic(***)",
        })
    }
}

/// The validators of the last index download, to ask the server whether it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexValidators {
    /// The revision (`sha256:<hex>`) these validators belong to.
    pub revision: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What [`ChartRepo::fetch_index`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexFetched {
    /// The server answered `304 Not Modified` to the validators: nothing downloaded, `dest`
    /// untouched; the revision is the validators'.
    NotModified { revision: String },
    /// The index is in `dest`.
    Downloaded {
        /// `sha256:<hex>` of the file (Flux's HelmRepository revision and artifact digest).
        revision: String,
        /// Bytes.
        size: u64,
        /// For the next conditional request.
        validators: IndexValidators,
    },
}

impl IndexFetched {
    pub fn revision(&self) -> &str {
        match self {
            IndexFetched::NotModified { revision } | IndexFetched::Downloaded { revision, .. } => {
                revision
            }
        }
    }
}

/// A chart repository at an `http(s)://` URL.
pub struct ChartRepo {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: HelmAuth,
    pass_credentials: bool,
}

impl ChartRepo {
    /// `url` is `spec.url`; `timeout` bounds each request (Flux's `spec.timeout`, default 60 s);
    /// `pass_credentials` (`spec.passCredentials`) sends the credentials to chart URLs on other
    /// hosts too.
    pub fn new(
        url: &str,
        auth: HelmAuth,
        tls: &TlsConfig,
        timeout: Duration,
        pass_credentials: bool,
    ) -> Result<ChartRepo, HelmError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| HelmError::UrlInvalid(format!("'{}': {e}", redact_url(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(HelmError::UrlInvalid(format!(
                "'{}': scheme must be http or https (an oci:// URL needs type: oci)",
                redact_url(url)
            )));
        }
        let mut parsed = parsed;
        let mut auth = auth;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Go's HTTP client sends URL userinfo as basic auth; keep that, but as our own
            // credentials (so they follow the same-host rule) and out of the URL (and messages).
            if auth == HelmAuth::None {
                auth = HelmAuth::Basic {
                    username: pct_decode(parsed.username()),
                    password: pct_decode(parsed.password().unwrap_or_default()),
                };
            }
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
        }
        let http = http::client(tls, timeout).map_err(HelmError::IndexationFailed)?;
        Ok(ChartRepo {
            http,
            url: parsed,
            auth,
            pass_credentials,
        })
    }

    /// `<url>/index.yaml`, the query of `url` kept (Flux's).
    pub fn index_url(&self) -> reqwest::Url {
        let mut u = self.url.clone();
        let path = format!("{}/index.yaml", u.path().trim_end_matches('/'));
        u.set_path(&path);
        u
    }

    /// Downloads the index into `dest` (through a temporary file beside it, renamed into place
    /// when complete), at most `max_size` bytes (Flux's `--helm-index-max-size`,
    /// [`DEFAULT_MAX_INDEX_SIZE`]). With `last`, asks with `If-None-Match`/`If-Modified-Since`
    /// and returns [`IndexFetched::NotModified`] on `304`. Not parsed here: see [`parse_index`].
    pub async fn fetch_index(
        &self,
        dest: &Path,
        max_size: u64,
        last: Option<&IndexValidators>,
    ) -> Result<IndexFetched, HelmError> {
        let url = self.index_url();
        let mut rb = self.authorize(self.http.get(url.clone()), &url);
        if let Some(v) = last {
            if let Some(e) = &v.etag {
                rb = rb.header(IF_NONE_MATCH, e);
            }
            if let Some(m) = &v.last_modified {
                rb = rb.header(IF_MODIFIED_SINCE, m);
            }
        }
        let shown = redact_url(url.as_str());
        let resp = rb.send().await.map_err(|e| {
            HelmError::IndexationFailed(format!(
                "failed to fetch Helm repository index from {shown}: {}",
                chain(&e.without_url())
            ))
        })?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED
            && let Some(v) = last
        {
            return Ok(IndexFetched::NotModified {
                revision: v.revision.clone(),
            });
        }
        let what = format!("failed to fetch Helm repository index from {shown}");
        let resp = check_status(resp, &what, HelmError::IndexationFailed)?;
        let header = |h| {
            resp.headers()
                .get(h)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let got = download_beside(resp, dest, max_size)
            .await
            .map_err(|e| HelmError::IndexationFailed(format!("{what}: {e}")))?;
        Ok(IndexFetched::Downloaded {
            revision: got.digest.clone(),
            size: got.size,
            validators: IndexValidators {
                revision: got.digest,
                etag,
                last_modified,
            },
        })
    }

    /// Where the package of `version` is: its first URL, resolved against the repository URL
    /// (with a trailing `/`, its query kept) when relative, as Flux's `DownloadChart`.
    pub fn chart_url(&self, version: &ChartVersion) -> Result<reqwest::Url, HelmError> {
        let first = version.urls.first().ok_or_else(|| {
            HelmError::ChartPullError(format!(
                "chart version '{}' has no downloadable URLs",
                version.version
            ))
        })?;
        if let Ok(absolute) = reqwest::Url::parse(first) {
            return Ok(absolute);
        }
        let mut base = self.url.clone();
        let path = format!("{}/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        let query = base.query().map(str::to_string);
        let mut u = base.join(first).map_err(|e| {
            HelmError::ChartPullError(format!("invalid chart URL '{}': {e}", redact_url(first)))
        })?;
        if u.query().is_none() {
            u.set_query(query.as_deref());
        }
        Ok(u)
    }

    /// Downloads the package of `version` into `dest` (temporary file renamed into place), at
    /// most `max_size` bytes ([`DEFAULT_MAX_CHART_SIZE`]); when the index has a digest for it,
    /// the file's sha256 must match. Returns the file's `sha256:<hex>` and size. Run
    /// [`check_chart`] on the file before using it.
    pub async fn download_chart(
        &self,
        version: &ChartVersion,
        dest: &Path,
        max_size: u64,
    ) -> Result<http::Downloaded, HelmError> {
        let url = self.chart_url(version)?;
        let shown = redact_url(url.as_str());
        let what = format!("failed to download chart from '{shown}'");
        let resp = self
            .authorize(self.http.get(url.clone()), &url)
            .send()
            .await
            .map_err(|e| {
                HelmError::ChartPullError(format!("{what}: {}", chain(&e.without_url())))
            })?;
        let resp = check_status(resp, &what, HelmError::ChartPullError)?;
        let got = download_beside(resp, dest, max_size)
            .await
            .map_err(|e| HelmError::ChartPullError(format!("{what}: {e}")))?;
        if let Some(want) = version.digest.as_deref().filter(|d| !d.is_empty()) {
            let want = want.strip_prefix("sha256:").unwrap_or(want);
            if got.digest.strip_prefix("sha256:") != Some(want) {
                let _ = std::fs::remove_file(dest);
                return Err(HelmError::ChartPullError(format!(
                    "{what}: digest mismatch: index says sha256:{want}, downloaded {}",
                    got.digest
                )));
            }
        }
        Ok(got)
    }

    /// Basic auth on `rb` when `url` is on the repository's scheme+host+port, or always with
    /// `passCredentials` (Helm's getter rule, which Flux follows).
    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        url: &reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let same = url.scheme() == self.url.scheme()
            && url.host_str() == self.url.host_str()
            && url.port_or_known_default() == self.url.port_or_known_default();
        match &self.auth {
            HelmAuth::Basic { username, password } if same || self.pass_credentials => {
                rb.basic_auth(username, Some(password))
            }
            _ => rb,
        }
    }
}

fn check_status(
    resp: reqwest::Response,
    what: &str,
    other: fn(String) -> HelmError,
) -> Result<reqwest::Response, HelmError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let msg = format!("{what}: {status}");
    Err(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HelmError::AuthenticationFailed(msg),
        _ => other(msg),
    })
}

/// Streams `resp` into a temporary file in `dest`'s directory, renamed to `dest` when complete.
async fn download_beside(
    resp: reqwest::Response,
    dest: &Path,
    max_size: u64,
) -> Result<http::Downloaded, DownloadError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(DownloadError::Write)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(DownloadError::Write)?;
    let got = http::download_to(resp, std::io::BufWriter::new(tmp.as_file()), max_size).await?;
    tmp.persist(dest)
        .map_err(|e| DownloadError::Write(e.error))?;
    Ok(got)
}

/// Percent-decoding of URL userinfo (`p%40ss` is `p@ss`); invalid sequences are kept as is.
fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://host[:port]/path` of `url`: no userinfo, no query (which may hold tokens).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => url
            .rsplit_once('@')
            .map_or(url, |(_, rest)| rest)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// One chart version of an index entry: what selection and download need.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChartVersion {
    /// As written in the index (`1.2.3`, `v1.2.3-rc.1`).
    #[serde(default)]
    pub version: String,
    /// Package URLs, absolute or relative to the repository URL; the first is used.
    #[serde(default)]
    pub urls: Vec<String>,
    /// sha256 hex of the package (Helm's `digest`), when the index has it.
    #[serde(default)]
    pub digest: Option<String>,
    /// RFC 3339 creation time; orders equal versions (Flux's tie-break).
    #[serde(default)]
    pub created: Option<String>,
}

/// A parsed index: chart name → versions (in index order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChartIndex {
    pub api_version: String,
    entries: HashMap<String, Vec<ChartVersion>>,
    /// Entries dropped as invalid (no version), as Helm's `loadIndex` does.
    pub skipped: usize,
}

impl ChartIndex {
    /// Number of charts.
    pub fn charts(&self) -> usize {
        self.entries.len()
    }

    /// Number of chart versions, all charts together.
    pub fn versions(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// The versions of `chart`, in index order.
    pub fn chart(&self, chart: &str) -> Option<&[ChartVersion]> {
        self.entries.get(chart).map(Vec::as_slice)
    }

    /// The version of `chart` that `constraint` (`HelmChart.spec.version`) selects, as Flux's
    /// `GetChartVersion`: a version whose string equals `constraint` wins; otherwise the highest
    /// version (SemVer precedence, build metadata ignored; equal ones ordered by `created`)
    /// matching the Masterminds constraint, where empty or `*` means the latest stable release
    /// (pre-releases only match a constraint that has a pre-release itself). Errors
    /// ([`HelmError::InvalidChartReference`]) as Flux's: "no chart name found", `no '<chart>'
    /// chart with version matching '<constraint>' found`, an invalid constraint.
    pub fn select(&self, chart: &str, constraint: &str) -> Result<&ChartVersion, HelmError> {
        let versions = self.entries.get(chart).ok_or_else(|| {
            HelmError::InvalidChartReference(format!(
                "no chart name found: '{chart}' is not in the repository index"
            ))
        })?;
        let constraint = constraint.trim();
        if !constraint.is_empty()
            && let Some(exact) = versions.iter().find(|v| v.version == constraint)
        {
            return Ok(exact);
        }
        let c = Constraint::parse(if constraint.is_empty() {
            "*"
        } else {
            constraint
        })
        .map_err(|e| HelmError::InvalidChartReference(e.to_string()))?;
        versions
            .iter()
            .filter_map(|cv| Version::parse(&cv.version).map(|v| (cv, v)))
            .filter(|(_, v)| c.matches(v))
            .max_by(|(a, x), (b, y)| x.cmp_precedence(y).then_with(|| a.created.cmp(&b.created)))
            .map(|(cv, _)| cv)
            .ok_or_else(|| {
                HelmError::InvalidChartReference(format!(
                    "no '{chart}' chart with version matching '{constraint}' found"
                ))
            })
    }
}

/// Limits of [`parse_index`]: the file size (also the bound of the YAML parser's budget) and
/// how many chart versions are kept.
#[derive(Debug, Clone)]
pub struct IndexLimits {
    /// Bytes ([`DEFAULT_MAX_INDEX_SIZE`]).
    pub max_size: u64,
    /// Chart versions kept, all charts together.
    pub max_versions: usize,
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_size: DEFAULT_MAX_INDEX_SIZE,
            max_versions: 1_000_000,
        }
    }
}

/// Reads the `index.yaml` at `path` (blocking) into a [`ChartIndex`], streaming: the YAML
/// parser reads the file through a buffer and only the fields of [`ChartVersion`] are kept;
/// every other field is skipped as it is parsed. Validation as Helm's `loadIndex`: the document
/// must be a mapping with an `apiVersion` ("no API version specified"); entries without a
/// version are dropped (counted in `skipped`). Anchors and aliases are bounded by the parser's
/// budget (a YAML bomb fails).
pub fn parse_index(path: &Path, limits: &IndexLimits) -> Result<ChartIndex, HelmError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "apiVersion", default)]
        api_version: Option<String>,
        #[serde(default)]
        entries: Option<HashMap<String, Option<Vec<Option<ChartVersion>>>>>,
    }
    let fail = |m: String| {
        HelmError::IndexationFailed(format!("failed to load Helm repository index: {m}"))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    if size > limits.max_size {
        return Err(fail(format!(
            "index is {size} bytes, over the limit of {} bytes",
            limits.max_size
        )));
    }
    let max = usize::try_from(limits.max_size).unwrap_or(usize::MAX);
    let mut budget = serde_saphyr::Budget::default();
    // Every event and node costs at least one byte of input, so the file size bounds them; the
    // defaults (1M events) are for configuration files, not a repository index.
    budget.max_reader_input_bytes = Some(max);
    budget.max_events = budget.max_events.max(max);
    budget.max_nodes = budget.max_nodes.max(max);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(max);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let raw: Raw = serde_saphyr::from_reader_with_options(
        std::io::BufReader::with_capacity(64 << 10, file),
        options,
    )
    .map_err(|e| fail(e.to_string()))?;
    let api_version = raw
        .api_version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| fail("no API version specified".into()))?;
    let mut index = ChartIndex {
        api_version,
        ..ChartIndex::default()
    };
    let mut kept = 0usize;
    for (name, versions) in raw.entries.unwrap_or_default() {
        let mut out = Vec::new();
        for v in versions.unwrap_or_default() {
            match v {
                Some(v) if !v.version.is_empty() => out.push(v),
                _ => index.skipped += 1,
            }
        }
        kept += out.len();
        if kept > limits.max_versions {
            return Err(fail(format!(
                "more than {} chart versions",
                limits.max_versions
            )));
        }
        index.entries.insert(name, out);
    }
    Ok(index)
}

/// Parsed indexes by revision (`sha256:<hex>`), at most `capacity`, least recently used
/// dropped first. One per process: the HelmRepository reconciler parses a new revision (which
/// validates it), and every HelmChart of that repository selects from the same parse.
pub struct IndexCache {
    capacity: usize,
    entries: Mutex<VecDeque<(String, Arc<ChartIndex>)>>,
}

impl IndexCache {
    pub fn new(capacity: usize) -> IndexCache {
        IndexCache {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The parsed index of `revision`, if cached (marks it recently used).
    pub fn get(&self, revision: &str) -> Option<Arc<ChartIndex>> {
        let mut e = self.entries.lock().unwrap();
        let i = e.iter().position(|(r, _)| r == revision)?;
        let hit = e.remove(i)?;
        let index = hit.1.clone();
        e.push_front(hit);
        Some(index)
    }

    /// The index of `revision`: from the cache, else [`parse_index`] of `path` (blocking),
    /// cached. The flag says whether it was parsed now. The lock is not held while parsing (two
    /// callers racing on a new revision may both parse; the second result is dropped).
    pub fn get_or_parse(
        &self,
        revision: &str,
        path: &Path,
        limits: &IndexLimits,
    ) -> Result<(Arc<ChartIndex>, bool), HelmError> {
        if let Some(hit) = self.get(revision) {
            return Ok((hit, false));
        }
        let parsed = Arc::new(parse_index(path, limits)?);
        let mut e = self.entries.lock().unwrap();
        if let Some((_, existing)) = e.iter().find(|(r, _)| r == revision) {
            return Ok((existing.clone(), false));
        }
        e.push_front((revision.to_string(), parsed.clone()));
        e.truncate(self.capacity);
        Ok((parsed, true))
    }

    /// Number of cached indexes.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`check_chart`] read from a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMetadata {
    /// `Chart.yaml` `name`.
    pub name: String,
    /// `Chart.yaml` `version`.
    pub version: String,
    /// `Chart.yaml` `appVersion`, if any.
    pub app_version: Option<String>,
    /// Files in the package.
    pub files: u64,
}

/// Checks the chart package (`.tgz`) at `path` (blocking) by extracting it into a private
/// temporary directory (removed afterwards) as a hostile archive: at most `max_file_size` bytes
/// per file ([`DEFAULT_MAX_CHART_FILE_SIZE`]) and 100 MiB in all, no links, no path outside
/// the directory ([`untar_gz`]). The package must hold one top directory with a `Chart.yaml`
/// that names the chart and its version (Helm's `LoadArchive` + `Validate`, which Flux runs
/// before storing a chart).
pub fn check_chart(path: &Path, max_file_size: u64) -> Result<ChartMetadata, HelmError> {
    let fail = |m: String| HelmError::ChartPullError(format!("invalid chart package: {m}"));
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let limits = UntarLimits {
        max_file_size,
        ..UntarLimits::default()
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let summary = untar_gz(std::io::BufReader::new(file), tmp.path(), &limits)
        .map_err(|e| fail(e.to_string()))?;
    let tops: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .map_err(|e| fail(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let [top] = tops.as_slice() else {
        return Err(fail(format!(
            "expected one top-level chart directory, found {} entries",
            tops.len()
        )));
    };
    let chart_yaml = top.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml)
        .map_err(|_| fail("Chart.yaml file is missing".into()))?;
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
        #[serde(rename = "appVersion", default)]
        app_version: Option<String>,
    }
    let m: Meta = serde_saphyr::from_str(&text).map_err(|e| fail(format!("Chart.yaml: {e}")))?;
    if m.name.is_empty() {
        return Err(fail("Chart.yaml: chart.metadata.name is required".into()));
    }
    if Version::parse(&m.version).is_none() {
        return Err(fail(format!(
            "Chart.yaml: chart.metadata.version '{}' is invalid",
            m.version
        )));
    }
    Ok(ChartMetadata {
        name: m.name,
        version: m.version,
        app_version: m.app_version,
        files: summary.files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(yaml: &str) -> Result<ChartIndex, HelmError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        parse_index(f.path(), &IndexLimits::default())
    }

    const INDEX: &str = r#"apiVersion: v1
entries:
  app:
  - version: 1.0.0
    urls: [app-1.0.0.tgz]
    digest: aa
    description: ignored
    maintainers: [{name: x}]
  - version: 1.1.0
    urls: [app-1.1.0.tgz]
  - version: 2.0.0-rc.1
    urls: [app-2.0.0-rc.1.tgz]
  - version: 1.1.0+build.2
    urls: [app-1.1.0+build.2.tgz]
    created: "2026-01-02T00:00:00Z"
  - version: not-semver
    urls: [x.tgz]
  - urls: [no-version.tgz]
  other:
  - version: "0.1.0"
    urls: [https://charts.example/other-0.1.0.tgz]
  empty: []
generated: "2026-01-01T00:00:00Z"
"#;

    #[test]
    fn selection_as_flux() {
        let ix = index(INDEX).unwrap();
        assert_eq!((ix.charts(), ix.versions(), ix.skipped), (3, 6, 1));
        for (constraint, want) in [
            ("", "1.1.0+build.2"),
            ("*", "1.1.0+build.2"),
            ("1.0.0", "1.0.0"),
            ("1.0.x", "1.0.0"),
            ("<1.1.0", "1.0.0"),
            ("~1.1", "1.1.0+build.2"),
            (">=1.0.0 <2.0.0", "1.1.0+build.2"),
            (">=2.0.0-0", "2.0.0-rc.1"),
            ("2.0.0-rc.1", "2.0.0-rc.1"),
            ("not-semver", "not-semver"),
            ("^1.0 || >=3", "1.1.0+build.2"),
        ] {
            assert_eq!(
                ix.select("app", constraint).unwrap().version,
                want,
                "{constraint:?}"
            );
        }
        for (chart, constraint, msg) in [
            ("nope", "*", "no chart name found"),
            (
                "app",
                ">=3.0.0",
                "no 'app' chart with version matching '>=3.0.0' found",
            ),
            (
                "app",
                "2.0.0",
                "no 'app' chart with version matching '2.0.0' found",
            ),
            (
                "empty",
                "",
                "no 'empty' chart with version matching '' found",
            ),
            ("app", ">=foo", "improper constraint"),
        ] {
            let e = ix.select(chart, constraint).unwrap_err();
            assert_eq!(e.reason(), "InvalidChartReference");
            assert!(e.to_string().contains(msg), "{chart} {constraint}: {e}");
        }
    }

    #[test]
    fn invalid_indexes() {
        for (yaml, msg) in [
            ("entries: {}\n", "no API version specified"),
            ("- a\n- b\n", "failed to load"),
            ("apiVersion: v1\nentries: [1, 2]\n", "failed to load"),
            (
                "apiVersion: v1\nentries:\n  a: &x [{version: 1.0.0}]\n  b: *x\n  c: *x\n",
                "",
            ),
        ] {
            match index(yaml) {
                Err(e) => {
                    assert_eq!(e.reason(), "IndexationFailed");
                    assert!(e.to_string().contains(msg), "{yaml}: {e}");
                }
                Ok(ix) => assert!(msg.is_empty(), "{yaml} parsed: {ix:?}"),
            }
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), INDEX).unwrap();
        let small = IndexLimits {
            max_size: 100,
            ..IndexLimits::default()
        };
        assert!(
            parse_index(f.path(), &small)
                .unwrap_err()
                .to_string()
                .contains("over the limit")
        );
    }

    #[test]
    fn cache_parses_once_per_revision_and_drops_the_least_recently_used() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), INDEX).unwrap();
        let cache = IndexCache::new(2);
        let l = IndexLimits::default();
        assert!(cache.get_or_parse("sha256:a", f.path(), &l).unwrap().1);
        assert!(!cache.get_or_parse("sha256:a", f.path(), &l).unwrap().1);
        assert!(cache.get_or_parse("sha256:b", f.path(), &l).unwrap().1);
        assert!(cache.get("sha256:a").is_some());
        assert!(cache.get_or_parse("sha256:c", f.path(), &l).unwrap().1);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("sha256:b").is_none());
        assert!(cache.get("sha256:a").is_some());
    }

    #[test]
    fn chart_urls_as_flux() {
        let repo = |u: &str| {
            ChartRepo::new(
                u,
                HelmAuth::None,
                &TlsConfig::default(),
                Duration::from_secs(1),
                false,
            )
            .unwrap()
        };
        let v = |u: &str| ChartVersion {
            version: "1.0.0".into(),
            urls: vec![u.into()],
            digest: None,
            created: None,
        };
        let r = repo("https://charts.example/sub?token=t");
        assert_eq!(
            r.index_url().as_str(),
            "https://charts.example/sub/index.yaml?token=t"
        );
        assert_eq!(
            r.chart_url(&v("app-1.0.0.tgz")).unwrap().as_str(),
            "https://charts.example/sub/app-1.0.0.tgz?token=t"
        );
        assert_eq!(
            r.chart_url(&v("https://cdn.example/app.tgz"))
                .unwrap()
                .as_str(),
            "https://cdn.example/app.tgz"
        );
        assert_eq!(
            repo("http://127.0.0.1:8080/")
                .chart_url(&v("charts/a.tgz"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/charts/a.tgz"
        );
        for bad in [
            "oci://ghcr.io/org/charts",
            "ftp://x/y",
            "https://user:hunter2@/y",
        ] {
            let e = ChartRepo::new(
                bad,
                HelmAuth::None,
                &TlsConfig::default(),
                Duration::from_secs(1),
                false,
            )
            .err()
            .unwrap();
            assert_eq!(e.reason(), "URLInvalid", "{bad}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        // Userinfo becomes the credentials (Go's client sends it as basic auth), out of the URL.
        let r = repo("https://bot:p%40ss@charts.example/sub");
        assert_eq!(
            r.index_url().as_str(),
            "https://charts.example/sub/index.yaml"
        );
        assert_eq!(
            r.auth,
            HelmAuth::Basic {
                username: "bot".into(),
                password: "p@ss".into()
            }
        );
    }
}
