//! Packaging a Helm chart from a directory (HelmChart from a GitRepository path, or a
//! downloaded chart whose values are replaced by `valuesFiles`), the way Flux's chart builders
//! do, without the `helm` CLI: `Chart.yaml` is read (name, version) and its version optionally
//! rewritten, `values.yaml` optionally replaced by merged values, and the tree archived with
//! Helm's layout (every entry under `<chart name>/`, `.helmignore` honoured) by the
//! deterministic [`Storage::archive_dir`]. Blocking (file I/O); run it off the async runtime.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::helm_index::ChartMetadata;
use super::ignore::IgnoreRules;
use super::semver::Version;
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
}
