//! Build a Kustomization's directory with the real `kustomize` CLI, as kustomize-controller
//! v1.9.5 does with `fluxcd/pkg/kustomize` v1.35.6 (`Generator` + `SecureBuild`).
//!
//! 1. `spec.path` is resolved inside the artifact root; a path that leaves it (`../..`), or one
//!    through a symlink that leaves it, is an error (Flux clamps `..` to the root silently).
//! 2. When the directory has no kustomization file (`kustomization.yaml`, `kustomization.yml`,
//!    `Kustomization`), one is generated ([`generate_kustomization`]) listing, in path order,
//!    every `*.yaml`/`*.yml` below it — a subdirectory with its own kustomization file is listed
//!    as a directory and not descended — as Flux does; `.json` files are not listed (nor by
//!    Flux). Beyond Flux, a file none of whose documents is a Kubernetes object (`apiVersion` and
//!    `kind`), e.g. a Helm `values.yaml`, is skipped instead of failing the build; a file that is
//!    not YAML fails it naming the file.
//! 3. The spec-level fields are written into that kustomization file, as Flux's generator does
//!    ([`apply_spec`]): `targetNamespace` → `namespace`, `namePrefix`, `nameSuffix` (replace),
//!    `patches` and `components` (appended; a component must be a local relative path; with
//!    `ignoreMissingComponents` a missing one is dropped), `images` (merged by name),
//!    `buildMetadata` (replace).
//! 4. The sandbox ([`check_sandbox`]): every symlink in the artifact must resolve inside it;
//!    every local path referenced by the kustomization and the local ones it reaches
//!    (resources, components, patches, generators' files, ...) must resolve inside the root; remote references
//!    (`http(s)://`, `git::`, `github.com/`, `gh:`, `ssh://`, `git@`) are refused naming the
//!    file unless remote bases are allowed; `helmCharts` is refused (no Helm inflation).
//! 5. `kustomize build --load-restrictor LoadRestrictionsNone` (Flux's setting: files anywhere
//!    inside the artifact, the root itself enforced by step 4), with no plugin flag (exec and
//!    KRM function plugins stay disabled), an empty environment but `PATH`, and `HOME` set to
//!    the root. Output: the objects in document order; an object without `apiVersion`, `kind`
//!    or `metadata.name` fails the build (Flux's message).
//!
//! `commonMetadata` is applied after substitution, as Flux applies it at apply time
//! ([`set_common_metadata`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::api::kustomization::{CommonMetadata, KustomizationSpec, Patch};

/// File names kustomize recognises as a kustomization, in its order of preference.
pub const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Prefixes of remote references (kustomize's `repospec` list, as Flux's `IsLocalRelativePath`).
const REMOTE_PREFIXES: [&str; 8] = [
    "git::",
    "gh:",
    "ssh://",
    "https://",
    "http://",
    "git@",
    "github.com:",
    "github.com/",
];

/// Why a build failed. Paths in messages are relative to the artifact root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("spec.path '{0}' points outside the artifact")]
    PathEscapes(String),
    #[error("kustomization path not found: {0}")]
    PathNotFound(String),
    #[error("{file}: symlink points outside the artifact")]
    SymlinkEscapes { file: String },
    #[error("{file}: '{reference}' points outside the artifact")]
    ReferenceEscapes { file: String, reference: String },
    #[error("{file}: remote reference '{reference}' is not allowed (remote bases are disabled)")]
    RemoteReference { file: String, reference: String },
    #[error("{file}: helmCharts is not supported (no Helm chart inflation in a Kustomization)")]
    HelmCharts { file: String },
    #[error("component path '{0}' must be local and relative")]
    ComponentNotLocal(String),
    #[error("failed to decode Kubernetes YAML from {file}: {error}")]
    BadManifest { file: String, error: String },
    #[error("kustomize build failed: {0}")]
    Kustomize(String),
    #[error("failed to decode Kubernetes apiVersion, kind and name from: {0}")]
    NotAnObject(String),
    #[error("{path}: {error}")]
    Io { path: String, error: String },
}

/// How to run the build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The `kustomize` binary (v5; [`kustomize_binary`]).
    pub kustomize: PathBuf,
    /// Let kustomize fetch remote bases (Flux's default is to allow them; pennant's is not).
    pub allow_remote_bases: bool,
}

/// The `kustomize` binary: `$PENNANT_KUSTOMIZE` (set by `e2e/cluster env`; the chart's image
/// sets it too), else `kustomize` on `PATH`.
pub fn kustomize_binary() -> PathBuf {
    std::env::var_os("PENNANT_KUSTOMIZE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("kustomize"), PathBuf::from)
}

/// Build `spec.path` of the artifact tree at `root` and return the objects in document order.
/// `root` must be a scratch copy of the artifact: the kustomization file in the path is
/// written (generated or extended with the spec's fields).
pub fn build(
    root: &Path,
    spec: &KustomizationSpec,
    options: &BuildOptions,
) -> Result<Vec<Value>, BuildError> {
    let root = root
        .canonicalize()
        .map_err(|e| io_error(Path::new("."), e))?;
    let dir = resolve_path(&root, spec.path.as_deref().unwrap_or(""))?;
    check_symlinks(&root, &root)?;
    let exists = |c: &str| dir.join(c).exists();
    match existing_kustomization(&dir) {
        Some(kfile) => {
            let text = fs::read_to_string(&kfile).map_err(|e| io_error(&kfile, e))?;
            let mut original = read_yaml(&root, &kfile)?;
            // every field of a kustomize image is a string: a plain `newTag: 1.10` is "1.10"
            #[derive(serde::Deserialize)]
            struct Images {
                images: Option<Vec<BTreeMap<String, String>>>,
            }
            if let Ok(Images { images: Some(i) }) = serde_saphyr::from_str::<Images>(&text) {
                original["images"] = json!(i);
            }
            let mut kus = original.clone();
            apply_spec(&mut kus, spec, exists)?;
            let changed: Vec<(&str, &Value)> = SPEC_KEYS
                .iter()
                .filter(|k| kus.get(**k) != original.get(**k))
                .map(|k| (*k, &kus[*k]))
                .collect();
            if !changed.is_empty() {
                let text = replace_top_level_keys(&text, &changed);
                fs::write(&kfile, text).map_err(|e| io_error(&kfile, e))?;
            }
        }
        None => {
            let mut kus = generate_kustomization(&root, &dir)?;
            apply_spec(&mut kus, spec, exists)?;
            write_yaml(&root, &dir.join(KUSTOMIZATION_FILE_NAMES[0]), &kus)?;
        }
    }
    check_sandbox(&root, &dir, options.allow_remote_bases)?;
    run_kustomize(&root, &dir, options)
}

/// The top-level keys of a kustomization file [`apply_spec`] may change.
const SPEC_KEYS: [&str; 7] = [
    "namespace",
    "namePrefix",
    "nameSuffix",
    "patches",
    "components",
    "images",
    "buildMetadata",
];

/// The user's kustomization file with the top-level `keys` replaced by the given values, every
/// other line kept verbatim: re-serialising the whole file would change what kustomize reads
/// (a plain `newTag: 1.10` read back as the number 1.1). A key's block is its line and the
/// following indented, list (`- `), comment or blank lines.
pub fn replace_top_level_keys(text: &str, keys: &[(&str, &Value)]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let top_level = !line.is_empty() && !line.starts_with([' ', '\t', '-', '#']);
        if top_level {
            skipping = keys.iter().any(|(k, _)| {
                line.strip_prefix(k)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            });
        } else if line.starts_with("---") || line.starts_with("...") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (k, v) in keys {
        if v.is_null() {
            continue;
        }
        let block = serde_saphyr::to_string(&json!({ *k: v })).expect("JSON serialises as YAML");
        out.push_str(&block);
        if !block.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `spec.path` joined to `root`, refusing a path that leaves it (lexically or through a
/// symlink) and one that does not exist.
pub fn resolve_path(root: &Path, path: &str) -> Result<PathBuf, BuildError> {
    let rel = Path::new(path);
    let mut joined = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => joined.push(p),
            Component::ParentDir => {
                if !joined.pop() {
                    return Err(BuildError::PathEscapes(path.into()));
                }
            }
            Component::CurDir => {}
            // an absolute spec.path is read relative to the root, as Flux's SecureJoin does
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let full = root.join(&joined);
    let real = full
        .canonicalize()
        .map_err(|_| BuildError::PathNotFound(path.into()))?;
    if !real.starts_with(root) {
        return Err(BuildError::PathEscapes(path.into()));
    }
    if !real.is_dir() {
        return Err(BuildError::PathNotFound(path.into()));
    }
    Ok(real)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

fn io_error(p: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io {
        path: p.display().to_string(),
        error: e.to_string(),
    }
}

fn existing_kustomization(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Every symlink below `dir` must resolve inside `root`.
fn check_symlinks(root: &Path, dir: &Path) -> Result<(), BuildError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| io_error(&path, e))?;
        if ty.is_symlink() {
            let inside = path.canonicalize().is_ok_and(|t| t.starts_with(root));
            if !inside {
                return Err(BuildError::SymlinkEscapes {
                    file: rel(root, &path),
                });
            }
        } else if ty.is_dir() {
            check_symlinks(root, &path)?;
        }
    }
    Ok(())
}

/// The kustomization Flux generates for a directory without one: `resources` lists the
/// manifests below `dir` (see the module docs), as `./<relative path>`.
pub fn generate_kustomization(root: &Path, dir: &Path) -> Result<Value, BuildError> {
    let mut resources = vec![];
    scan_manifests(root, dir, dir, &mut resources)?;
    Ok(json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }))
}

fn scan_manifests(
    root: &Path,
    base: &Path,
    dir: &Path,
    out: &mut Vec<String>,
) -> Result<(), BuildError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| io_error(dir, e))?;
    entries.sort();
    for path in entries {
        let relative = format!("./{}", path.strip_prefix(base).unwrap_or(&path).display());
        if path.is_dir() {
            if existing_kustomization(&path).is_some() {
                out.push(relative);
            } else {
                scan_manifests(root, base, &path, out)?;
            }
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("yaml" | "yml")) {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| bad_manifest(root, &path, e))?;
        let is_object = |d: &Value| d["apiVersion"].is_string() && d["kind"].is_string();
        if docs.iter().any(is_object) {
            out.push(relative);
        }
    }
    Ok(())
}

/// Write the Kustomization's spec-level fields into a kustomization file (as JSON), as Flux's
/// generator does. `exists(component)` tells whether a component path exists relative to the
/// kustomization's directory.
pub fn apply_spec(
    kus: &mut Value,
    spec: &KustomizationSpec,
    exists: impl Fn(&str) -> bool,
) -> Result<(), BuildError> {
    if !kus.is_object() {
        *kus = json!({});
    }
    let set = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(String::from);
    for (field, value) in [
        ("namespace", set(&spec.target_namespace)),
        ("namePrefix", set(&spec.name_prefix)),
        ("nameSuffix", set(&spec.name_suffix)),
    ] {
        if let Some(v) = value {
            kus[field] = json!(v);
        }
    }
    let push = |kus: &mut Value, field: &str, v: Value| {
        if !kus[field].is_array() {
            kus[field] = json!([]);
        }
        kus[field].as_array_mut().expect("an array").push(v);
    };
    for Patch { patch, target } in &spec.patches {
        let mut p = json!({"patch": patch});
        if let Some(t) = target {
            let t = serde_json::to_value(t).expect("a selector serialises");
            if t.as_object().is_some_and(|m| !m.is_empty()) {
                p["target"] = t;
            }
        }
        push(kus, "patches", p);
    }
    for c in &spec.components {
        if !is_local_relative(c) {
            return Err(BuildError::ComponentNotLocal(c.clone()));
        }
        if spec.ignore_missing_components == Some(true) && !exists(c) {
            continue;
        }
        push(kus, "components", json!(c));
    }
    for image in &spec.images {
        let existing = kus["images"]
            .as_array_mut()
            .and_then(|a| a.iter_mut().find(|i| i["name"] == image.name.as_str()));
        match existing {
            Some(i) => {
                if let Some(n) = set(&image.new_name) {
                    i["newName"] = json!(n);
                }
                if set(&image.new_tag).is_some() || set(&image.digest).is_some() {
                    let m = i.as_object_mut().expect("an image is an object");
                    m.remove("newTag");
                    m.remove("digest");
                    if let Some(t) = set(&image.new_tag) {
                        m.insert("newTag".into(), json!(t));
                    }
                    if let Some(d) = set(&image.digest) {
                        m.insert("digest".into(), json!(d));
                    }
                }
            }
            None => push(
                kus,
                "images",
                serde_json::to_value(image).expect("an image serialises"),
            ),
        }
    }
    if !spec.build_metadata.is_empty() {
        kus["buildMetadata"] = json!(spec.build_metadata);
    }
    Ok(())
}

/// Flux's `IsLocalRelativePath`: not remote, not absolute (`file://` stripped).
fn is_local_relative(p: &str) -> bool {
    !is_remote(p)
        && !Path::new(p).is_absolute()
        && !Path::new(&p.to_lowercase().trim_start_matches("file://").to_string()).is_absolute()
}

fn is_remote(p: &str) -> bool {
    let lower = p.to_lowercase();
    REMOTE_PREFIXES
        .iter()
        .any(|r| r.len() < lower.len() && lower.starts_with(r))
}

/// Check the kustomization in `dir` and every local kustomization directory it reaches
/// (resources, components, bases), see the module docs, step 4.
pub fn check_sandbox(root: &Path, dir: &Path, allow_remote: bool) -> Result<(), BuildError> {
    let mut queue = vec![dir.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(dir) = queue.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Some(file) = existing_kustomization(&dir) else {
            continue;
        };
        let kus = read_yaml(root, &file)?;
        let name = rel(root, &file);
        if kus.get("helmCharts").is_some() || kus.get("helmChartInflationGenerator").is_some() {
            return Err(BuildError::HelmCharts { file: name });
        }
        for reference in referenced_paths(&kus) {
            if is_remote(&reference) {
                if allow_remote {
                    continue;
                }
                return Err(BuildError::RemoteReference {
                    file: name,
                    reference,
                });
            }
            let target = dir.join(reference.trim_start_matches("file://"));
            // a missing file is kustomize's error to report; an existing one must be inside
            match target.canonicalize() {
                Ok(real) if real.starts_with(root) => {
                    if real.is_dir() {
                        queue.push(real);
                    }
                }
                Err(_) if lexically_inside(root, &target) => {}
                _ => {
                    return Err(BuildError::ReferenceEscapes {
                        file: name,
                        reference,
                    });
                }
            }
        }
    }
    Ok(())
}

fn lexically_inside(root: &Path, p: &Path) -> bool {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root)
}

/// Every path-like string a kustomization references: resources, components, bases, crds,
/// configurations, generators/transformers/validators given as paths, patch files, generator
/// inputs (`files` as `key=path` or `path`, `envs`, `env`), `openapi.path`, replacement files.
pub fn referenced_paths(kus: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    // inline YAML (a patch or a plugin config) is not a path
                    .filter(|s| !s.contains('\n'))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    for field in [
        "resources",
        "components",
        "bases",
        "crds",
        "configurations",
        "generators",
        "transformers",
        "validators",
        "patchesStrategicMerge",
    ] {
        out.extend(strings(&kus[field]));
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        if let Some(a) = kus[field].as_array() {
            out.extend(
                a.iter()
                    .filter_map(|p| p["path"].as_str())
                    .map(String::from),
            );
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for g in kus[field].as_array().into_iter().flatten() {
            for f in strings(&g["files"]) {
                let path = f.split_once('=').map_or(f.as_str(), |(_, p)| p);
                out.insert(path.to_string());
            }
            out.extend(strings(&g["envs"]));
            out.extend(g["env"].as_str().map(String::from));
        }
    }
    out.extend(kus["openapi"]["path"].as_str().map(String::from));
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn read_yaml(root: &Path, path: &Path) -> Result<Value, BuildError> {
    let text = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let v: Value = serde_saphyr::from_str(&text).map_err(|e| bad_manifest(root, path, e))?;
    Ok(if v.is_null() { json!({}) } else { v })
}

/// [`BuildError::BadManifest`] on one line: the YAML parser renders a numbered snippet of the
/// file under its first line, which would split `Ready`'s message (and `flux get ks`'s table).
fn bad_manifest(root: &Path, path: &Path, e: impl std::fmt::Display) -> BuildError {
    let error = e.to_string();
    BuildError::BadManifest {
        file: rel(root, path),
        error: error.lines().next().unwrap_or_default().trim().to_string(),
    }
}

fn write_yaml(root: &Path, path: &Path, v: &Value) -> Result<(), BuildError> {
    let text = serde_saphyr::to_string(v).map_err(|e| BuildError::Io {
        path: rel(root, path),
        error: e.to_string(),
    })?;
    fs::write(path, text).map_err(|e| io_error(path, e))
}

fn run_kustomize(
    root: &Path,
    dir: &Path,
    options: &BuildOptions,
) -> Result<Vec<Value>, BuildError> {
    let mut cmd = Command::new(&options.kustomize);
    cmd.arg("build")
        .arg("--load-restrictor")
        .arg("LoadRestrictionsNone")
        .arg(dir)
        .current_dir(root)
        .env_clear()
        .env("HOME", root);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().map_err(|e| {
        BuildError::Kustomize(format!("cannot run {}: {e}", options.kustomize.display()))
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // temporary paths mean nothing to the user: relative to the artifact root
        let root_prefix = format!("{}/", root.display());
        let msg = stderr
            .trim()
            .trim_start_matches("Error: ")
            .replace(&root_prefix, "")
            .replace(&root.display().to_string(), ".");
        return Err(BuildError::Kustomize(one_line(&msg)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| BuildError::Kustomize(format!("unreadable output: {e}")))?;
    let objects: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    for o in &objects {
        let named = ["apiVersion", "kind"].iter().all(|k| o[k].is_string())
            && o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
        if !named {
            return Err(BuildError::NotAnObject(o.to_string()));
        }
    }
    Ok(objects)
}

/// A multi-line error (kustomize's, a YAML parser's) as one line for a status condition:
/// the trimmed non-empty lines joined with `; ` (the file name kustomize gives is kept). PURE.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Add `commonMetadata` labels and annotations to every object (existing keys replaced), as
/// Flux's `SetCommonMetadata`; selectors are not touched.
pub fn set_common_metadata(objects: &mut [Value], common: &CommonMetadata) {
    for o in objects {
        for (field, values) in [
            ("labels", &common.labels),
            ("annotations", &common.annotations),
        ] {
            for (k, v) in values {
                o["metadata"][field][k.as_str()] = json!(v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
