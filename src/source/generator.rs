//! ArtifactGenerators (Flux's source-watcher): the pure and file-level parts of one
//! generation. [`validate`] checks a spec (Stalled with `ValidationFailed` when it fails,
//! `..` and absolute paths included); [`observed_sources_digest`] says whether the sources
//! moved; [`apply_copy`] stages the files of one output artifact from the extracted sources
//! (cp-like, as source-watcher's builder: a glob copies each match, `dir/**` copies the
//! directory's content, a plain directory is copied as a sub-directory, `Merge` deep-merges
//! YAML, `Extract` unpacks tarballs), never writing outside the staging directory;
//! [`contents_hash`] names the tarball; [`revisions`] sets the artifact's revision
//! (`latest@<digest>`, so it moves only when the copied content does) and its origin revision.
//!
//! The reconciler (`controller::generator`) downloads the sources, archives the staging
//! directory with the storage's deterministic tarball and publishes the ExternalArtifacts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::source::{
    Artifact, ArtifactGenerator, ArtifactGeneratorStatus, CopyOperation, ExternalArtifactReference,
    ORIGIN_REVISION_KEY,
};
use crate::gitops::conditions::{self, reasons, types};

/// Reason of a spec that cannot work (Stalled).
pub const VALIDATION_FAILED: &str = "ValidationFailed";
/// Reason of a source that is missing, not ready or not downloadable (retried).
pub const SOURCE_FETCH_FAILED: &str = "SourceFetchFailed";
/// Reason of a cross-namespace source refused.
pub const ACCESS_DENIED: &str = "AccessDenied";
/// Reason (and Event) of a generator paused by `source.extensions.fluxcd.io/reconcile: disabled`.
pub const RECONCILIATION_DISABLED: &str = "ReconciliationDisabled";
/// Message while a generation runs, source-watcher's.
pub const MSG_IN_PROGRESS: &str = "Reconciliation in progress";
/// Message of a paused generator, source-watcher's.
pub const MSG_DISABLED: &str = "Reconciliation is disabled";
/// ExternalArtifacts kind: the storage directory (`externalartifact/<ns>/<name>/`).
pub const EXTERNAL_ARTIFACT_KIND: &str = "ExternalArtifact";

/// The copy strategies of `copy[].strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Later files replace earlier ones (default).
    Overwrite,
    /// A YAML file merged into one already staged at the destination (Helm values merge).
    Merge,
    /// `.tar.gz`/`.tgz` files unpacked at the destination; other matches skipped.
    Extract,
}

/// One parsed copy operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySpec {
    /// The source alias (`@<alias>/…`).
    pub alias: String,
    /// The path or glob inside the source (`/`-separated, relative, no `..`).
    pub pattern: String,
    /// The destination inside the artifact (`/`-separated, relative, no `..`; `""` the root).
    pub dest: String,
    /// `to` ends with `/`: the destination is a directory.
    pub dest_is_dir: bool,
    pub exclude: Vec<String>,
    pub strategy: Strategy,
}

/// A path of the spec is `..`-free and relative (a leading `/` of a glob is refused too).
fn check_relative(what: &str, full: &str, path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.contains('\\') {
        return Err(format!(
            "invalid copy {what} '{full}': the path must be relative to its root"
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(format!(
            "invalid copy {what} '{full}': the path must not contain '..'"
        ));
    }
    Ok(())
}

/// Parses and checks a copy operation: `from` is `@<alias>/<pattern>`, `to` is
/// `@artifact/<path>`, no `..` or absolute path, valid exclude globs, a known strategy.
pub fn parse_copy(op: &CopyOperation) -> Result<CopySpec, String> {
    let rest = op.from.strip_prefix('@').ok_or_else(|| {
        format!(
            "invalid copy source '{}': source must start with '@'",
            op.from
        )
    })?;
    let (alias, pattern) = rest.split_once('/').ok_or_else(|| {
        format!(
            "invalid copy source '{}': source format must be '@alias/pattern'",
            op.from
        )
    })?;
    check_relative("source", &op.from, pattern)?;
    let dest = op.to.strip_prefix("@artifact/").ok_or_else(|| {
        format!(
            "invalid copy destination '{}': destination must start with '@artifact/'",
            op.to
        )
    })?;
    check_relative("destination", &op.to, dest)?;
    let strategy = match op.strategy.as_deref() {
        None | Some("") | Some("Overwrite") => Strategy::Overwrite,
        Some("Merge") => Strategy::Merge,
        Some("Extract") => Strategy::Extract,
        Some(s) => return Err(format!("unknown copy strategy '{s}'")),
    };
    let exclude = op.exclude.clone().unwrap_or_default();
    for p in &exclude {
        if !valid_glob(p) {
            return Err(format!("invalid exclude pattern '{p}'"));
        }
    }
    if !valid_glob(pattern) {
        return Err(format!("invalid glob pattern '{pattern}'"));
    }
    Ok(CopySpec {
        alias: alias.to_string(),
        pattern: pattern.to_string(),
        dest: clean(dest),
        dest_is_dir: op.to.ends_with('/'),
        exclude,
        strategy,
    })
}

/// `path` without `.` and empty segments (`""` for the root).
fn clean(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A DNS subdomain (RFC 1123, at most 253 characters): what an ExternalArtifact name must be.
fn dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// Why a spec cannot be generated: `(reason, message)` for `Ready=False`/`Stalled=True`.
/// Checks, in source-watcher's order: duplicate aliases, cross-namespace sources when
/// `no_cross_namespace`, duplicate artifact names, names that are no object names, a
/// `revision`/`originRevision` naming no alias; then (pennant) every copy operation parses
/// ([`parse_copy`]) and names a declared alias.
pub fn validate(
    generator: &ArtifactGenerator,
    no_cross_namespace: bool,
) -> Result<(), (&'static str, String)> {
    let ns = generator.metadata.namespace.as_deref().unwrap_or_default();
    let mut aliases = BTreeSet::new();
    for s in &generator.spec.sources {
        if !aliases.insert(s.alias.as_str()) {
            return Err((
                VALIDATION_FAILED,
                format!("duplicate source alias '{}' found", s.alias),
            ));
        }
        if no_cross_namespace
            && s.namespace
                .as_deref()
                .is_some_and(|n| !n.is_empty() && n != ns)
        {
            return Err((
                ACCESS_DENIED,
                format!(
                    "cross-namespace reference to source {}/{}/{} is not allowed",
                    s.kind,
                    s.namespace.as_deref().unwrap_or_default(),
                    s.name
                ),
            ));
        }
    }
    let mut names = BTreeSet::new();
    for a in &generator.spec.artifacts {
        if !names.insert(a.name.as_str()) {
            return Err((
                VALIDATION_FAILED,
                format!("duplicate artifact name '{}' found", a.name),
            ));
        }
        if !dns_subdomain(&a.name) {
            return Err((
                VALIDATION_FAILED,
                format!(
                    "artifact name \"{}\" is not a valid Kubernetes object name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    a.name
                ),
            ));
        }
        for (field, r) in [
            ("revision", &a.revision),
            ("originRevision", &a.origin_revision),
        ] {
            if let Some(r) = r.as_deref().filter(|r| !r.is_empty()) {
                let alias = r.trim_start_matches('@');
                if !aliases.contains(alias) {
                    let what = if field == "revision" {
                        "revision"
                    } else {
                        "origin revision"
                    };
                    return Err((
                        VALIDATION_FAILED,
                        format!(
                            "artifact {} {what} source alias '{alias}' not found",
                            a.name
                        ),
                    ));
                }
            }
        }
        for op in &a.copy {
            let c = parse_copy(op)
                .map_err(|e| (VALIDATION_FAILED, format!("artifact {}: {e}", a.name)))?;
            if !aliases.contains(c.alias.as_str()) {
                return Err((
                    VALIDATION_FAILED,
                    format!(
                        "artifact {}: copy source alias '{}' not found",
                        a.name, c.alias
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A source's artifact as the generator observed it (source-watcher's `ObservedSource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSource {
    pub digest: String,
    pub revision: String,
    /// `org.opencontainers.image.revision` of the artifact's metadata, if any.
    pub origin_revision: Option<String>,
    pub url: String,
}

impl ObservedSource {
    /// What the generator reads of a source's `status.artifact`.
    pub fn of(a: &Artifact) -> ObservedSource {
        ObservedSource {
            digest: a.digest.clone(),
            revision: a.revision.clone(),
            origin_revision: a
                .metadata
                .as_ref()
                .and_then(|m| m.get(ORIGIN_REVISION_KEY))
                .cloned(),
            url: a.url.clone(),
        }
    }
}

/// `status.observedSourcesDigest`: `sha256:<hex>` of the sorted
/// `<alias>=[digest=<d>,revision=<r>,url=<u>]` joined by `|` (source-watcher's
/// `HashObservedSources`, byte for byte).
pub fn observed_sources_digest(sources: &BTreeMap<String, ObservedSource>) -> String {
    let mut parts: Vec<String> = sources
        .iter()
        .map(|(alias, s)| {
            format!(
                "{alias}=[digest={},revision={},url={}]",
                s.digest, s.revision, s.url
            )
        })
        .collect();
    parts.sort();
    format!("sha256:{:x}", Sha256::digest(parts.join("|").as_bytes()))
}

/// The artifact's revision and metadata: `latest@<digest>` (the tarball's digest: it moves
/// only when the copied content does), or the `revision` alias's revision; `originRevision`
/// puts that source's origin revision (else its revision) under
/// `org.opencontainers.image.revision` (source-watcher's `setArtifactRevisions`).
pub fn revisions(
    digest: &str,
    revision: Option<&str>,
    origin_revision: Option<&str>,
    sources: &BTreeMap<String, ObservedSource>,
) -> (String, Option<BTreeMap<String, String>>) {
    let alias = |r: Option<&str>| {
        r.filter(|r| !r.is_empty())
            .and_then(|r| sources.get(r.trim_start_matches('@')))
    };
    let rev = alias(revision).map_or_else(|| format!("latest@{digest}"), |s| s.revision.clone());
    let meta = origin_revision.filter(|r| !r.is_empty()).map(|_| {
        alias(origin_revision)
            .map(|s| {
                let v = s
                    .origin_revision
                    .clone()
                    .unwrap_or_else(|| s.revision.clone());
                BTreeMap::from([(ORIGIN_REVISION_KEY.to_string(), v)])
            })
            .unwrap_or_default()
    });
    (rev, meta.filter(|m| !m.is_empty()))
}

/// The inventory entries no longer generated (by namespace and name): their ExternalArtifacts
/// and stored files are deleted.
pub fn orphans(
    inventory: &[ExternalArtifactReference],
    current: &[ExternalArtifactReference],
) -> Vec<ExternalArtifactReference> {
    inventory
        .iter()
        .filter(|o| {
            !current
                .iter()
                .any(|c| c.name == o.name && c.namespace == o.namespace)
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Globs

/// Whether the glob's brackets are balanced (Go's `path.Match` and doublestar refuse the rest).
fn valid_glob(p: &str) -> bool {
    let mut chars = p.chars().collect::<Vec<_>>().into_iter();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '[' => {
                let mut first = true;
                let mut closed = false;
                let mut rest = chars.clone().peekable();
                if matches!(rest.peek(), Some('^' | '!')) {
                    rest.next();
                }
                for c in rest.by_ref() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                }
                if !closed {
                    return false;
                }
                chars = rest
                    .collect::<String>()
                    .chars()
                    .collect::<Vec<_>>()
                    .into_iter();
            }
            ']' => return false,
            _ => {}
        }
    }
    true
}

/// Whether the path has glob characters (`*?[]`), as source-watcher's `containsGlobChars`.
pub fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', ']'])
}

/// One path segment against one pattern segment (Go's `path.Match` within a segment: `*` any
/// run, `?` one character, `[a-z]`/`[^…]`/`[!…]` classes, `\` escapes).
fn match_segment(pat: &[char], s: &[char]) -> bool {
    match pat.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| match_segment(&pat[1..], &s[i..])),
        Some('?') => !s.is_empty() && match_segment(&pat[1..], &s[1..]),
        Some('\\') if pat.len() > 1 => {
            !s.is_empty() && s[0] == pat[1] && match_segment(&pat[2..], &s[1..])
        }
        Some('[') => {
            let Some(c) = s.first() else { return false };
            let mut i = 1;
            let negate = matches!(pat.get(1), Some('^' | '!'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < pat.len() && (pat[i] != ']' || first) {
                first = false;
                let lo = pat[i];
                if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|&h| h != ']') {
                    if lo <= *c && *c <= pat[i + 2] {
                        matched = true;
                    }
                    i += 3;
                } else {
                    if lo == *c {
                        matched = true;
                    }
                    i += 1;
                }
            }
            if i >= pat.len() {
                return false;
            }
            matched != negate && match_segment(&pat[i + 1..], &s[1..])
        }
        Some(p) => !s.is_empty() && s[0] == *p && match_segment(&pat[1..], &s[1..]),
    }
}

/// A `/`-separated path against a glob. With `doublestar`, a `**` segment matches any number
/// of segments (zero included), as `doublestar.Match`; without, it is a `*` (Go's `fs.Glob`:
/// one segment per pattern segment).
pub fn glob_match(pattern: &str, path: &str, doublestar: bool) -> bool {
    let pat: Vec<Vec<char>> = pattern.split('/').map(|s| s.chars().collect()).collect();
    let segs: Vec<Vec<char>> = path.split('/').map(|s| s.chars().collect()).collect();
    fn go(pat: &[Vec<char>], segs: &[Vec<char>], ds: bool) -> bool {
        match pat.first() {
            None => segs.is_empty(),
            Some(p) if ds && p.iter().collect::<String>() == "**" => {
                (0..=segs.len()).any(|i| go(&pat[1..], &segs[i..], ds))
            }
            Some(p) => {
                !segs.is_empty() && match_segment(p, &segs[0]) && go(&pat[1..], &segs[1..], ds)
            }
        }
    }
    go(&pat, &segs, doublestar)
}

/// Whether an excluded pattern matches the path (relative to the source root) or the path
/// relative to `base` (the literal prefix of `from`); a pattern without `/` also matches the
/// file name (source-watcher's `shouldExcludePath`).
pub fn excluded(path: &str, base: &str, patterns: &[String]) -> bool {
    let hit = |p: &str| {
        let name = p.rsplit('/').next().unwrap_or(p);
        patterns.iter().any(|pat| {
            glob_match(pat, p, true) || (!pat.contains('/') && glob_match(pat, name, true))
        })
    };
    if patterns.is_empty() {
        return false;
    }
    if hit(path) {
        return true;
    }
    let base = clean(base);
    if base.is_empty() {
        return false;
    }
    match path.strip_prefix(&format!("{base}/")) {
        Some(rel) if !rel.is_empty() => hit(rel),
        _ => false,
    }
}

/// The literal directories before the first glob segment (`"."`-free; `""` the root).
pub fn selection_root(pattern: &str) -> String {
    clean(pattern)
        .split('/')
        .take_while(|s| !has_glob(s))
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a glob match goes: `dir/**` patterns strip `dir/` from the match, other patterns keep
/// the whole match path (source-watcher's `calculateGlobDestination`).
pub fn glob_destination(pattern: &str, matched: &str, dest: &str) -> String {
    let rel = pattern
        .strip_suffix("/**")
        .and_then(|prefix| matched.strip_prefix(&format!("{prefix}/")))
        .unwrap_or(matched);
    join(dest, rel)
}

fn join(a: &str, b: &str) -> String {
    clean(&format!("{a}/{b}"))
}

/// The relative paths (files and directories) under `root`, symlinks and special files left
/// out, in Go's walk order (by segment).
fn walk(root: &Path) -> io::Result<Vec<(String, bool)>> {
    fn go(root: &Path, rel: &str, out: &mut Vec<(String, bool)>) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            let ty = e.file_type()?;
            let p = join(rel, &name);
            if ty.is_dir() {
                out.push((p.clone(), true));
                go(root, &p, out)?;
            } else if ty.is_file() {
                out.push((p, false));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    go(root, "", &mut out)?;
    Ok(out)
}

/// Segment-wise order (Go lists each directory sorted).
fn by_segments(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

// ---------------------------------------------------------------------------------------------
// Staging

/// Applies one copy operation from the extracted source `src` into `staging`.
///
/// Errors (source-watcher's messages): a plain path that does not exist, a glob matching
/// nothing or only excluded paths, `Extract` of a directory or of a non-tarball file, a YAML
/// file that does not parse for `Merge`, an I/O failure. Nothing is written outside `staging`:
/// the paths were checked by [`parse_copy`] and only regular files and directories are read.
pub fn apply_copy(c: &CopySpec, src: &Path, staging: &Path) -> Result<(), String> {
    if !has_glob(&c.pattern) {
        return single_copy(c, src, staging);
    }
    let doublestar = c.strategy == Strategy::Extract;
    let mut matches: Vec<(String, bool)> = walk(src)
        .map_err(|e| format!("failed to list source '{}': {e}", c.alias))?
        .into_iter()
        .filter(|(p, _)| glob_match(&clean(&c.pattern), p, doublestar))
        .collect();
    matches.sort_by(|a, b| by_segments(&a.0, &b.0));
    if matches.is_empty() {
        return Err(format!(
            "no files match pattern '{}' in source '{}'",
            c.pattern, c.alias
        ));
    }
    let base = selection_root(&c.pattern);
    let kept: Vec<_> = matches
        .into_iter()
        .filter(|(p, _)| !excluded(p, &base, &c.exclude))
        .collect();
    if kept.is_empty() {
        return Err(format!(
            "all files matching pattern '{}' in source '{}' were excluded",
            c.pattern, c.alias
        ));
    }
    for (m, is_dir) in kept {
        if c.strategy == Strategy::Extract {
            if !is_dir && is_tarball(&m) {
                extract(src, &m, staging, &c.dest)?;
            }
            continue;
        }
        let dest = glob_destination(&clean(&c.pattern), &m, &c.dest);
        copy_entry(c, src, &m, is_dir, staging, &dest, &base)
            .map_err(|e| format!("failed to copy file '{m}' to '{dest}': {e}"))?;
    }
    Ok(())
}

fn is_tarball(p: &str) -> bool {
    let l = p.to_lowercase();
    l.ends_with(".tar.gz") || l.ends_with(".tgz")
}

/// A plain (non-glob) path: a directory is copied as `<dest>/<dir name>`, a file to `dest`
/// (or `dest/<file name>` when `dest` ends with `/` or is a staged directory).
fn single_copy(c: &CopySpec, src: &Path, staging: &Path) -> Result<(), String> {
    let rel = clean(&c.pattern);
    let meta = std::fs::symlink_metadata(src.join(&rel));
    let meta = match meta {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("source '{}' does not exist", c.pattern));
        }
        Err(e) => return Err(format!("failed to stat source '{}': {e}", c.pattern)),
        Ok(m) if !m.is_dir() && !m.is_file() => {
            return Err(format!(
                "source '{}' is not a regular file or directory",
                c.pattern
            ));
        }
        Ok(m) => m,
    };
    let base_name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
    if meta.is_dir() {
        if c.strategy == Strategy::Extract {
            return Err(format!(
                "extract strategy is not supported for directories, got '{}'",
                c.pattern
            ));
        }
        let dest = join(&c.dest, &base_name);
        return copy_entry(c, src, &rel, true, staging, &dest, &rel)
            .map_err(|e| format!("failed to copy '{rel}' to '{dest}': {e}"));
    }
    if excluded(&rel, "", &c.exclude) {
        return Ok(());
    }
    if c.strategy == Strategy::Extract {
        if !is_tarball(&rel) {
            return Err(format!(
                "extract strategy requires tarball file (.tar.gz or .tgz), got '{rel}'"
            ));
        }
        return extract(src, &rel, staging, &c.dest);
    }
    let dest = if c.dest_is_dir || staging.join(&c.dest).is_dir() {
        join(&c.dest, &base_name)
    } else {
        c.dest.clone()
    };
    if dest.is_empty() {
        return Err(format!("destination '@artifact/{}' names no file", c.dest));
    }
    copy_entry(c, src, &rel, false, staging, &dest, "")
        .map_err(|e| format!("failed to copy '{rel}' to '{dest}': {e}"))
}

/// Copies a file (merging under `Merge` when the destination is staged) or a directory tree
/// (excluded paths skipped, relative to the source root and to `base`).
fn copy_entry(
    c: &CopySpec,
    src: &Path,
    rel: &str,
    is_dir: bool,
    staging: &Path,
    dest: &str,
    base: &str,
) -> Result<(), String> {
    if !is_dir {
        return copy_file(c, src, rel, staging, dest);
    }
    std::fs::create_dir_all(staging.join(dest)).map_err(|e| e.to_string())?;
    let tree = walk(&src.join(rel)).map_err(|e| e.to_string())?;
    let mut skipped: Vec<String> = vec![];
    for (sub, sub_is_dir) in tree {
        let full = join(rel, &sub);
        if skipped.iter().any(|s| sub.starts_with(&format!("{s}/"))) {
            continue;
        }
        if excluded(&full, base, &c.exclude) {
            if sub_is_dir {
                skipped.push(sub);
            }
            continue;
        }
        let to = join(dest, &sub);
        if sub_is_dir {
            std::fs::create_dir_all(staging.join(&to)).map_err(|e| e.to_string())?;
        } else {
            copy_plain(&src.join(&full), &staging.join(&to))?;
        }
    }
    Ok(())
}

fn copy_file(
    c: &CopySpec,
    src: &Path,
    rel: &str,
    staging: &Path,
    dest: &str,
) -> Result<(), String> {
    let to = staging.join(dest);
    if c.strategy == Strategy::Merge && to.is_file() {
        let merged = merge_yaml_files(&to, &src.join(rel))?;
        return std::fs::write(&to, merged).map_err(|e| e.to_string());
    }
    copy_plain(&src.join(rel), &to)
}

fn copy_plain(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    if to.is_dir() {
        return Err(format!("'{}' is a directory", to.display()));
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn extract(src: &Path, rel: &str, staging: &Path, dest: &str) -> Result<(), String> {
    let to = staging.join(dest);
    let err = |e: String| format!("failed to extract tarball '{rel}' to '{dest}': {e}");
    std::fs::create_dir_all(&to).map_err(|e| err(e.to_string()))?;
    let f = std::fs::File::open(src.join(rel)).map_err(|e| err(e.to_string()))?;
    super::artifact::untar_gz(f, &to, &Default::default())
        .map(|_| ())
        .map_err(|e| err(e.to_string()))
}

/// Reads a multi-document YAML file as one mapping (documents merged in order).
fn load_yaml(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| format!("cannot unmarshal YAML document: {e}"))?;
    let mut out = serde_json::Map::new();
    for d in docs {
        match d {
            serde_json::Value::Object(m) => out = merge_maps(out, m),
            serde_json::Value::Null => {}
            _ => return Err("cannot unmarshal YAML document: not a mapping".into()),
        }
    }
    Ok(out)
}

/// Helm's values merge: nested mappings merged recursively, anything else (lists included)
/// replaced by the overlay's.
pub fn merge_maps(
    mut base: serde_json::Map<String, serde_json::Value>,
    overlay: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    for (k, v) in overlay {
        match (base.remove(&k), v) {
            (Some(serde_json::Value::Object(b)), serde_json::Value::Object(o)) => {
                base.insert(k, serde_json::Value::Object(merge_maps(b, o)));
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

fn merge_yaml_files(base: &Path, overlay: &Path) -> Result<String, String> {
    let merged = merge_maps(load_yaml(base)?, load_yaml(overlay)?);
    serde_saphyr::to_string(&merged).map_err(|e| format!("failed to merged YAML: {e}"))
}

/// Adler-32 (RFC 1950).
fn adler32(data: impl Read) -> io::Result<u32> {
    let (mut a, mut b) = (1u32, 0u32);
    for byte in io::BufReader::new(data).bytes() {
        a = (a + u32::from(byte?)) % 65521;
        b = (b + a) % 65521;
    }
    Ok((b << 16) | a)
}

/// The tarball's name stem: source-watcher's contents hash of the staged files, the decimal
/// Adler-32 of the sorted lines `<adler32 hex of the file>  <name>/<path>\n` (Go's
/// `dirhash.HashDir` with an Adler-32 hash). The file is `<hash>.tar.gz`.
pub fn contents_hash(staging: &Path, name: &str) -> io::Result<String> {
    let mut files: Vec<String> = walk(staging)?
        .into_iter()
        .filter(|(_, d)| !d)
        .map(|(p, _)| p)
        .collect();
    files.sort_by(|a, b| format!("{name}/{a}").cmp(&format!("{name}/{b}")));
    let mut lines = Vec::new();
    for f in files {
        let h = adler32(std::fs::File::open(staging.join(&f))?)?;
        lines.extend_from_slice(format!("{h:x}  {name}/{f}\n").as_bytes());
    }
    Ok(adler32(&lines[..])?.to_string())
}

/// Whether a path stays inside its root: relative, no `..` (for paths read back from status).
pub fn inside(path: &str) -> bool {
    Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The per-artifact staging directory under `work`.
pub fn staging_dir(work: &Path, name: &str) -> PathBuf {
    work.join("artifacts").join(name)
}

// ---------------------------------------------------------------------------------------------
// Status

/// What one reconcile of a generator came to, for [`apply_step`].
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The spec cannot work (validation): `Ready=False` and `Stalled=True`, wait for a change.
    Stalled { reason: String, message: String },
    /// A retryable failure (sources, build, ExternalArtifact writes): `Ready=False`.
    Failed { reason: String, message: String },
    /// Generation started: `Reconciling=True`, `Ready=Unknown` (`Reconciliation in progress`).
    Progressing,
    /// Every artifact generated: the inventory and sources digest recorded, `Ready=True`.
    Succeeded {
        inventory: Vec<ExternalArtifactReference>,
        sources_digest: String,
    },
}

/// The status after `step` (source-watcher's conditions and messages), then its end-of-reconcile
/// summary: `lastHandledReconcileAt` from `requested_at`; `Reconciling` turns
/// `ProgressingWithRetry` when `Ready` is False, and goes once `Ready` or `Stalled` is True.
/// A success or a new attempt also clears a `Stalled` left by an earlier spec (source-watcher
/// keeps it; a fixed spec would stay Stalled).
pub fn apply_step(
    status: &mut ArtifactGeneratorStatus,
    step: Step,
    generation: i64,
    requested_at: Option<&str>,
    now: &Time,
) {
    let c = &mut status.conditions;
    match step {
        Step::Stalled { reason, message } => {
            conditions::mark_false(c, types::READY, &reason, &message, generation, now);
            conditions::mark_true(c, types::STALLED, &reason, &message, generation, now);
        }
        Step::Failed { reason, message } => {
            conditions::mark_false(c, types::READY, &reason, &message, generation, now);
        }
        Step::Progressing => {
            conditions::remove_condition(c, types::STALLED);
            conditions::mark_true(
                c,
                types::RECONCILING,
                reasons::PROGRESSING,
                MSG_IN_PROGRESS,
                generation,
                now,
            );
            conditions::set_condition(
                c,
                types::READY,
                conditions::UNKNOWN,
                reasons::PROGRESSING,
                MSG_IN_PROGRESS,
                generation,
                now,
            );
        }
        Step::Succeeded {
            inventory,
            sources_digest,
        } => {
            let message = format!(
                "reconciliation succeeded, generated {} artifact(s)",
                inventory.len()
            );
            status.inventory = inventory;
            status.observed_sources_digest = Some(sources_digest);
            conditions::remove_condition(c, types::STALLED);
            conditions::mark_true(
                c,
                types::READY,
                reasons::SUCCEEDED,
                &message,
                generation,
                now,
            );
        }
    }
    if let Some(r) = requested_at {
        status.last_handled_reconcile_at = Some(r.to_string());
    }
    let c = &mut status.conditions;
    if conditions::is_false(c, types::READY)
        && let Some(r) = c.iter_mut().find(|x| x.type_ == types::RECONCILING)
    {
        r.reason = reasons::PROGRESSING_WITH_RETRY.into();
    }
    if conditions::is_true(c, types::READY) || conditions::is_true(c, types::STALLED) {
        conditions::remove_condition(c, types::RECONCILING);
    }
}

/// Why the generator must regenerate (source-watcher's drift reasons), or `None` when its
/// inventory is current: `NotReady` (last attempt failed), `GenerationChanged`,
/// `SourcesChanged`, `ArtifactsChanged` (count differs), `ArtifactMissing` (a stored file is gone or
/// does not match its digest, per `stored`), `ExternalArtifactsChanged` (per `published`: an
/// ExternalArtifact is missing or carries another digest).
pub fn drift(
    generator: &ArtifactGenerator,
    sources_digest: &str,
    stored: impl Fn(&ExternalArtifactReference) -> bool,
    published: impl Fn(&ExternalArtifactReference) -> bool,
) -> Option<&'static str> {
    let empty = ArtifactGeneratorStatus::default();
    let status = generator.status.as_ref().unwrap_or(&empty);
    let ready = conditions::get(&status.conditions, types::READY);
    if ready.is_none_or(|r| r.status != conditions::TRUE) {
        return Some("NotReady");
    }
    if ready.and_then(|r| r.observed_generation) != generator.metadata.generation {
        return Some("GenerationChanged");
    }
    if status.observed_sources_digest.as_deref() != Some(sources_digest) {
        return Some("SourcesChanged");
    }
    if status.inventory.len() != generator.spec.artifacts.len() {
        return Some("ArtifactsChanged");
    }
    if !status.inventory.iter().all(stored) {
        return Some("ArtifactMissing");
    }
    if !status.inventory.iter().all(published) {
        return Some("ExternalArtifactsChanged");
    }
    None
}

/// The Normal Event message listing the artifacts whose digest changed since `old` (none:
/// no Event), source-watcher's `external artifacts reconciled: <ns>/<name> (<digest>)…`.
pub fn changed_message(
    old: &[ExternalArtifactReference],
    current: &[ExternalArtifactReference],
) -> Option<String> {
    let changed: Vec<String> = current
        .iter()
        .filter(|c| {
            !old.iter()
                .any(|o| o.name == c.name && o.namespace == c.namespace && o.digest == c.digest)
        })
        .map(|c| format!("{}/{} ({})", c.namespace, c.name, c.digest))
        .collect();
    (!changed.is_empty()).then(|| format!("external artifacts reconciled: {}", changed.join("\n")))
}

#[cfg(test)]
#[path = "generator_tests.rs"]
mod tests;
