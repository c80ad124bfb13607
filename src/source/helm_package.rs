//! Packaging a Helm chart from a directory (HelmChart from a GitRepository path, or a
//! downloaded chart whose values are replaced by `valuesFiles`), the way Flux's chart builders
//! do, without the `helm` CLI: `Chart.yaml` is read (name, version) and its version optionally
//! rewritten, `values.yaml` optionally replaced by merged values, and the tree archived with
//! Helm's layout (every entry under `<chart name>/`, `.helmignore` honoured) by the
//! deterministic [`Storage::archive_dir`]. Blocking (file I/O); run it off the async runtime.
//!
//! Chart dependencies of a chart built from a path ([`missing_dependencies`],
//! [`dependency_source`], [`vendor_local`]), as Flux's `DependencyManager`: the requirements
//! are `Chart.lock`'s (else `Chart.yaml`'s) `dependencies`; one already in `charts/` (a
//! directory or a `.tgz` with that chart name) is kept; a missing `file://` (or
//! repository-less) dependency is copied from the same source tree into `charts/<name>/`; a
//! missing `http(s)://` or `oci://` one is downloaded by the caller into
//! `charts/<name>-<version>.tgz` (the `helm dependency build` layout; Helm applies aliases
//! when it renders).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::helm_index::{ChartMetadata, check_chart};
use super::ignore::IgnoreRules;
use super::semver::{Constraint, Version};
use super::storage::{Storage, StoredArtifact};

/// Reads `<dir>/Chart.yaml`: name and version (Helm's validation: a name, a semver version).
/// Errors name the file and field.
pub fn read_chart(dir: &Path) -> Result<ChartMetadata, String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml"))
        .map_err(|e| format!("failed to read Chart.yaml in '{}': {e}", dir.display()))?;
    let v: Value = serde_saphyr::from_str(&text).map_err(|e| format!("invalid Chart.yaml: {e}"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let name = field("name")
        .filter(|n| !n.is_empty())
        .ok_or("Chart.yaml: chart.metadata.name is required")?;
    let version = field("version").unwrap_or_default();
    if Version::parse(&version).is_none() {
        return Err(format!(
            "Chart.yaml: chart.metadata.version '{version}' is invalid"
        ));
    }
    Ok(ChartMetadata {
        name,
        version,
        app_version: field("appVersion"),
        files: 0,
    })
}

/// Deep merge of YAML documents in order, the last winning (Flux's `valuesFiles` merge and
/// Helm's `MergeMaps`: maps merge key by key, anything else is replaced). An empty document
/// counts as an empty map. Errors name the document's index.
pub fn merge_values(docs: &[(String, String)]) -> Result<Value, String> {
    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    match b.get_mut(&k) {
                        Some(existing) if existing.is_object() && v.is_object() => {
                            merge(existing, v)
                        }
                        _ => {
                            b.insert(k, v);
                        }
                    }
                }
            }
            (b, o) => *b = o,
        }
    }
    let mut out = Value::Object(Default::default());
    for (name, text) in docs {
        let v: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| format!("failed to parse values file '{name}': {e}"))?
        };
        if !(v.is_object() || v.is_null()) {
            return Err(format!("values file '{name}' is not a map"));
        }
        if v.is_object() {
            merge(&mut out, v);
        }
    }
    Ok(out)
}

/// What to change in the chart before packaging.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// Written as `Chart.yaml`'s `version` (e.g. `6.5.0+3`).
    pub version: Option<String>,
    /// Written as the chart's `values.yaml`.
    pub values: Option<Value>,
}

/// Packages the chart at `root/<name>` (the only entry that counts: `root` holds the chart
/// directory named after the chart) with `edits`, into the storage as
/// `<kind>/<ns>/<obj>/<file>`. Returns the stored artifact and the chart's metadata (after the
/// edits).
pub fn package(
    storage: &Storage,
    (kind, ns, obj, file): (&str, &str, &str, &str),
    root: &Path,
    name: &str,
    edits: &Edits,
) -> Result<(StoredArtifact, ChartMetadata), String> {
    let dir: PathBuf = root.join(name);
    if edits.version.is_some() {
        let path = dir.join("Chart.yaml");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("Chart.yaml: {e}"))?;
        let mut v: Value =
            serde_saphyr::from_str(&text).map_err(|e| format!("invalid Chart.yaml: {e}"))?;
        if let (Some(m), Some(ver)) = (v.as_object_mut(), &edits.version) {
            m.insert("version".into(), Value::String(ver.clone()));
        }
        let out = serde_saphyr::to_string(&v).map_err(|e| format!("Chart.yaml: {e}"))?;
        std::fs::write(&path, out).map_err(|e| format!("Chart.yaml: {e}"))?;
    }
    if let Some(values) = &edits.values {
        let out = serde_saphyr::to_string(values).map_err(|e| format!("values.yaml: {e}"))?;
        std::fs::write(dir.join("values.yaml"), out).map_err(|e| format!("values.yaml: {e}"))?;
    }
    let meta = read_chart(&dir)?;
    let helmignore = std::fs::read_to_string(dir.join(".helmignore")).ok();
    let rules = IgnoreRules::for_chart(Path::new(name), helmignore.as_deref())
        .map_err(|e| format!("invalid .helmignore: {e}"))?;
    let stored = storage
        .archive_dir(kind, ns, obj, file, root, &rules)
        .map_err(|e| format!("failed to package chart: {e}"))?;
    Ok((stored, meta))
}

/// One entry of `dependencies` (Helm's `chart.Dependency`, the fields a build reads).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Dependency {
    pub name: String,
    /// A version or Masterminds constraint.
    #[serde(default)]
    pub version: String,
    /// `file://<path>`, `http(s)://…`, `oci://…`, empty (the chart's own `charts/<name>`),
    /// or a Helm repository name (`@name`, `alias:name`, refused as Flux does).
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub alias: Option<String>,
}

/// Where a missing dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencySource {
    /// A chart directory in the same source tree (relative to the tree's root, inside it).
    Local(PathBuf),
    /// A repository URL (no trailing `/`): `http(s)://` (an index) or `oci://`.
    Remote(String),
}

/// The dependencies of the chart at `dir` that are not in its `charts/` directory (by chart
/// name, from the `Chart.yaml` of each directory or package there), in the file's order.
/// Errors: an unreadable `Chart.yaml` / `Chart.lock`, a package in `charts/` that is not a
/// valid chart.
pub fn missing_dependencies(dir: &Path) -> Result<Vec<Dependency>, String> {
    #[derive(serde::Deserialize)]
    struct Deps {
        #[serde(default)]
        dependencies: Option<Vec<Dependency>>,
    }
    let read = |file: &str| -> Result<Option<Vec<Dependency>>, String> {
        match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => serde_saphyr::from_str::<Deps>(&text)
                .map(|d| Some(d.dependencies.unwrap_or_default()))
                .map_err(|e| format!("invalid {file}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("failed to read {file}: {e}")),
        }
    };
    let reqs = match read("Chart.lock")? {
        Some(locked) => locked,
        None => read("Chart.yaml")?.unwrap_or_default(),
    };
    if reqs.is_empty() {
        return Ok(vec![]);
    }
    let mut present = vec![];
    if let Ok(entries) = std::fs::read_dir(dir.join("charts")) {
        for e in entries.flatten() {
            let path = e.path();
            let ty = e.file_type().map_err(|e| e.to_string())?;
            if ty.is_dir() {
                if let Ok(meta) = read_chart(&path) {
                    present.push(meta.name);
                }
            } else if ty.is_file() && path.extension().is_some_and(|x| x == "tgz") {
                let meta = check_chart(&path, super::helm_index::DEFAULT_MAX_CHART_FILE_SIZE)
                    .map_err(|e| format!("invalid chart '{}' in charts/: {e}", e_name(&path)))?;
                present.push(meta.name);
            }
        }
    }
    Ok(reqs
        .into_iter()
        .filter(|d| !present.contains(&d.name))
        .collect())
}

fn e_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where `dep` of the chart at `chart` (relative to the source tree's root) comes from, as
/// Flux's `secureLocalChartPath` / `ValidateDepURL`: empty repository → `<chart>/charts/<name>`;
/// `file://<path>` → `<chart>/<path>`, which must stay inside the tree; `http(s)://` and
/// `oci://` → the URL without trailing `/`. Errors: a path leaving the tree, a Helm repository
/// name (`@repo`, `alias:repo`) or another scheme.
pub fn dependency_source(chart: &Path, dep: &Dependency) -> Result<DependencySource, String> {
    let repo = dep.repository.trim();
    let local = |rel: &Path| -> Result<DependencySource, String> {
        let mut out = PathBuf::new();
        for c in chart.join(rel).components() {
            match c {
                std::path::Component::Normal(s) => out.push(s),
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir if out.pop() => {}
                _ => {
                    return Err(format!(
                        "local dependency '{}' ({repo}) leaves the source",
                        dep.name
                    ));
                }
            }
        }
        Ok(DependencySource::Local(out))
    };
    if repo.is_empty() {
        return local(&Path::new("charts").join(&dep.name));
    }
    if let Some(path) = repo.strip_prefix("file://") {
        if Path::new(path).is_absolute() {
            return Err(format!(
                "local dependency '{}' ({repo}): an absolute path leaves the source",
                dep.name
            ));
        }
        return local(Path::new(path));
    }
    if ["http://", "https://", "oci://"]
        .iter()
        .any(|s| repo.starts_with(s))
    {
        return Ok(DependencySource::Remote(
            repo.trim_end_matches('/').to_string(),
        ));
    }
    if repo.starts_with('@') || repo.starts_with("alias:") {
        return Err(format!(
            "dependency '{}': aliased repository '{repo}' is not supported, use its URL",
            dep.name
        ));
    }
    Err(format!(
        "dependency '{}': invalid repository URL '{repo}' (file://, http(s):// or oci://)",
        dep.name
    ))
}

/// Copies the local dependency chart at `root/rel` ([`DependencySource::Local`]) into
/// `chart_dir/charts/<name>/` after checking its `Chart.yaml` (name, version) against
/// `dep.version` (Flux: "can't get a valid version for constraint"). Links are not followed
/// (source trees hold none: extraction refuses them).
pub fn vendor_local(
    root: &Path,
    rel: &Path,
    chart_dir: &Path,
    dep: &Dependency,
) -> Result<(), String> {
    let from = root.join(rel);
    let from = from.as_path();
    if !from.join("Chart.yaml").is_file() {
        return Err(format!(
            "no chart found at '{}' (reference '{}')",
            rel.display(),
            dep.repository
        ));
    }
    let meta = read_chart(from)?;
    let constraint = Constraint::parse(&dep.version)
        .map_err(|e| format!("invalid version/constraint format '{}': {e}", dep.version))?;
    let v = Version::parse(&meta.version).ok_or("invalid chart version")?;
    if !constraint.matches(&v) {
        return Err(format!(
            "can't get a valid version for constraint '{}'",
            dep.version
        ));
    }
    let to = chart_dir.join("charts").join(&meta.name);
    if to.as_path() == from {
        return Ok(());
    }
    if to.starts_with(from) {
        return Err(format!(
            "local dependency '{}' ({}) is the chart itself or holds it",
            dep.name, dep.repository
        ));
    }
    copy_tree(from, &to).map_err(|e| format!("failed to copy '{}': {e}", meta.name))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ty = e.file_type()?;
        let dest = to.join(e.file_name());
        if ty.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else if ty.is_file() {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_merge_deeply_in_order_last_wins() {
        let v = merge_values(&[
            (
                "values.yaml".into(),
                "a: 1\nnested: {x: 1, y: [1, 2]}\nkeep: k\n".into(),
            ),
            ("prod.yaml".into(), "a: 2\nnested: {y: [3], z: 9}\n".into()),
            ("empty.yaml".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 2, "nested": {"x": 1, "y": [3], "z": 9}, "keep": "k"})
        );
        assert!(merge_values(&[("bad.yaml".into(), "- a\n".into())]).is_err());
    }

    #[test]
    fn a_chart_directory_is_packaged_with_helms_layout_edits_and_helmignore() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let chart = root.join("app");
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            "apiVersion: v2\nname: app\nversion: 1.2.3\n",
        )
        .unwrap();
        std::fs::write(chart.join("values.yaml"), "a: 1\n").unwrap();
        std::fs::write(chart.join("templates/cm.yaml"), "kind: ConfigMap\n").unwrap();
        std::fs::write(chart.join("logo.png"), "png").unwrap();
        std::fs::write(chart.join("secret.txt"), "x").unwrap();
        std::fs::write(chart.join(".helmignore"), "secret.txt\n").unwrap();
        let storage = Storage::new(tmp.path().join("storage"), "h", Default::default());
        let edits = Edits {
            version: Some("1.2.3+4".into()),
            values: Some(serde_json::json!({"a": 2})),
        };
        let (stored, meta) = package(
            &storage,
            ("HelmChart", "ns", "app", "app-1.2.3+4.tgz"),
            &root,
            "app",
            &edits,
        )
        .unwrap();
        assert_eq!(meta.version, "1.2.3+4");
        let f = std::fs::File::open(storage.local_path(&stored.path).unwrap()).unwrap();
        let mut names = vec![];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in tar.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_file() {
                names.push(e.path().unwrap().to_string_lossy().into_owned());
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "app/.helmignore",
                "app/Chart.yaml",
                "app/logo.png",
                "app/templates/cm.yaml",
                "app/values.yaml"
            ]
        );
        let checked = super::super::helm_index::check_chart(
            &storage.local_path(&stored.path).unwrap(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            (checked.name.as_str(), checked.version.as_str()),
            ("app", "1.2.3+4")
        );
        assert!(read_chart(&root).is_err(), "no Chart.yaml at the root");
    }

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (p, text) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    fn dep(name: &str, version: &str, repository: &str) -> Dependency {
        Dependency {
            name: name.into(),
            version: version.into(),
            repository: repository.into(),
            alias: None,
        }
    }

    #[test]
    fn missing_dependencies_are_the_requirements_not_in_charts() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        write(
            &app,
            &[
                (
                    "Chart.yaml",
                    "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  version: 1.x\n  repository: file://../lib\n- name: vendored\n  version: '*'\n- name: redis\n  version: ~17.0\n  repository: https://charts.example.com/\n  alias: cache\n",
                ),
                (
                    "charts/vendored/Chart.yaml",
                    "apiVersion: v2\nname: vendored\nversion: 0.1.0\n",
                ),
            ],
        );
        let missing = missing_dependencies(&app).unwrap();
        let names: Vec<_> = missing.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["lib", "redis"]);
        assert_eq!(missing[1].alias.as_deref(), Some("cache"));
        // Chart.lock wins over Chart.yaml (the locked versions)
        write(
            &app,
            &[(
                "Chart.lock",
                "dependencies:\n- name: lib\n  version: 1.2.0\n  repository: file://../lib\n",
            )],
        );
        let missing = missing_dependencies(&app).unwrap();
        assert_eq!(missing, [dep("lib", "1.2.0", "file://../lib")]);
        // none at all
        let plain = tmp.path().join("plain");
        write(&plain, &[("Chart.yaml", "name: plain\nversion: 1.0.0\n")]);
        assert!(missing_dependencies(&plain).unwrap().is_empty());
        write(
            &plain,
            &[(
                "Chart.yaml",
                "name: plain\nversion: 1.0.0\ndependencies: 3\n",
            )],
        );
        assert!(missing_dependencies(&plain).is_err());
    }

    #[test]
    fn dependency_sources_stay_in_the_tree_and_refuse_repository_names() {
        let chart = Path::new("charts/app");
        let src = |r: &str| dependency_source(chart, &dep("lib", "1.x", r));
        assert_eq!(
            src("file://../lib"),
            Ok(DependencySource::Local("charts/lib".into()))
        );
        assert_eq!(
            src(""),
            Ok(DependencySource::Local("charts/app/charts/lib".into()))
        );
        assert_eq!(
            src("https://charts.example.com/stable/"),
            Ok(DependencySource::Remote(
                "https://charts.example.com/stable".into()
            ))
        );
        assert_eq!(
            src("oci://reg.example.com/charts"),
            Ok(DependencySource::Remote(
                "oci://reg.example.com/charts".into()
            ))
        );
        for bad in [
            "file://../../../etc",
            "file:///etc",
            "@stable",
            "alias:stable",
            "s3://b",
        ] {
            assert!(src(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_local_dependency_is_copied_when_its_version_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(
            root,
            &[
                (
                    "app/Chart.yaml",
                    "name: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  version: 1.x\n  repository: file://../lib\n",
                ),
                ("lib/Chart.yaml", "name: lib\nversion: 1.2.0\n"),
                (
                    "lib/templates/_h.tpl",
                    "{{- define \"lib.x\" }}x{{ end }}\n",
                ),
            ],
        );
        let app = root.join("app");
        assert_eq!(missing_dependencies(&app).unwrap().len(), 1);
        let e = vendor_local(
            root,
            Path::new("lib"),
            &app,
            &dep("lib", ">=2.0", "file://../lib"),
        );
        assert_eq!(
            e.unwrap_err(),
            "can't get a valid version for constraint '>=2.0'"
        );
        assert!(!app.join("charts").exists(), "nothing written on failure");
        vendor_local(
            root,
            Path::new("lib"),
            &app,
            &dep("lib", "1.x", "file://../lib"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(app.join("charts/lib/templates/_h.tpl")).unwrap(),
            "{{- define \"lib.x\" }}x{{ end }}\n"
        );
        assert!(missing_dependencies(&app).unwrap().is_empty());
        let e = vendor_local(
            root,
            Path::new("nope"),
            &app,
            &dep("nope", "1.x", "file://../nope"),
        );
        assert!(e.unwrap_err().starts_with("no chart found"));
        let e = vendor_local(root, Path::new("app"), &app, &dep("app", "*", "file://."));
        assert!(e.unwrap_err().contains("is the chart itself"));
    }

    /// A package with raw (unchecked) entry names; `None` content is a symlink to /etc/passwd.
    fn raw_tgz(path: &Path, entries: &[(&str, Option<&str>)]) {
        let f = std::fs::File::create(path).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::default(),
        ));
        for (name, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_mode(0o644);
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_cksum();
                    tar.append(&h, c.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name("/etc/passwd").unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    tar.append(&h, std::io::empty()).unwrap();
                }
            }
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn hostile_chart_packages_are_refused_and_write_nothing_outside() {
        // the guard every pulled package goes through (index download, OCI layer, a vendored
        // dependency): `check_chart`
        let tmp = tempfile::tempdir().unwrap();
        let unique = format!("pennant-escaped-{}", std::process::id());
        let chart = (
            "evil/Chart.yaml",
            Some("apiVersion: v2\nname: evil\nversion: 1.0.0\n"),
        );
        let dotdot = format!("../{unique}");
        let deep = format!("evil/../../{unique}");
        let abs = format!("/tmp/{unique}-abs");
        for (i, bad) in [
            (dotdot.as_str(), Some("x")),
            (deep.as_str(), Some("x")),
            (abs.as_str(), Some("x")),
            ("evil/templates/passwd", None),
        ]
        .into_iter()
        .enumerate()
        {
            let tgz = tmp.path().join(format!("evil-{i}.tgz"));
            raw_tgz(&tgz, &[chart, bad]);
            let e = check_chart(&tgz, 1 << 20).expect_err(bad.0);
            assert_eq!(e.reason(), "ChartPullError", "{}: {e}", bad.0);
        }
        for dir in [
            std::env::temp_dir(),
            tmp.path().to_path_buf(),
            "/tmp".into(),
        ] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(&unique))
                .collect();
            assert!(left.is_empty(), "{left:?} in {}", dir.display());
        }
        // the same package without the bad entry is a chart
        let good = tmp.path().join("good.tgz");
        raw_tgz(&good, &[chart]);
        assert_eq!(check_chart(&good, 1 << 20).unwrap().name, "evil");
    }
}
