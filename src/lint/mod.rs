//! `pennant lint`: offline checks of a GitOps repository. PURE: the files are read by the
//! caller (`cmd::lint`); [`lint`] returns one [`Finding`] per problem, `file:line: message`.
//!
//! The checks, one file each:
//! - [`pitfalls`]: five common mistakes (a Kustomization whose failures wait a whole long
//!   interval, a HelmRelease without remediation, a plaintext Secret, pruning without health
//!   checks, a GitRepository without the credentials its URL needs or with them in the URL);
//! - [`api_version`]: a pennant kind under the wrong `apiVersion`, from pennant's own CRDs;
//! - [`references`]: `sourceRef`/`chartRef` to a source no file defines;
//! - [`depends_on`]: `dependsOn` cycles (the controllers' own cycle search);
//! - [`canary`]: Canaries the Canary controller would refuse (its own validation);
//! - [`substitute`]: postBuild variables without a definition (the kustomize controller's own
//!   envsubst).
//!
//! Paths are relative to the repository root: a Kustomization's `spec.path` names the files
//! under it. Files that kustomize overlays use as patches (`patches[].path`,
//! `patchesStrategicMerge`, `patchesJson6902[].path` of a `kustomization.yaml`) hold partial
//! objects: only their `apiVersion` is checked.

pub mod api_version;
pub mod canary;
pub mod depends_on;
pub mod pitfalls;
pub mod references;
pub mod substitute;
pub mod yaml;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use yaml::Node;

/// One problem: the file (as passed to [`lint`]), the 1-based line of the offending field and
/// what is wrong and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// `file:line: message`, the form compilers and editors jump to.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// How [`lint_with`] judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The router of Canaries without `spec.provider`: the controller's `--mesh-provider`.
    pub mesh_provider: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mesh_provider: crate::api::canary::DEFAULT_MESH_PROVIDER.into(),
        }
    }
}

/// Lint `files` ((path relative to the repository root, YAML text), multi-document) with the
/// default [`Options`]. Findings are sorted by file (in the order given), line and message.
pub fn lint(files: &[(PathBuf, String)]) -> Vec<Finding> {
    lint_with(files, &Options::default())
}

/// [`lint`] with options.
pub fn lint_with(files: &[(PathBuf, String)], options: &Options) -> Vec<Finding> {
    let mut out = Findings::default();
    let mut docs = vec![];
    for (file, text) in files {
        match yaml::parse_documents(text) {
            Ok(nodes) => docs.extend(nodes.into_iter().map(|node| Doc::new(file, node))),
            Err(e) => out.push(file, e.line, format!("YAML syntax error: {}", e.message)),
        }
    }
    let patches = patch_files(&docs);
    for d in &mut docs {
        d.patch = patches.contains(&normalize(d.file));
    }
    let repo = Repo { docs };
    api_version::check(&repo, &mut out);
    pitfalls::check(&repo, &mut out);
    references::check(&repo, &mut out);
    depends_on::check(&repo, &mut out);
    canary::check(&repo, options, &mut out);
    substitute::check(&repo, &mut out);
    let order = |f: &Path| files.iter().position(|(p, _)| p == f).unwrap_or(usize::MAX);
    let mut found: Vec<Finding> = out.0.into_iter().collect();
    found.sort_by(|a, b| {
        (order(&a.file), a.line, &a.message).cmp(&(order(&b.file), b.line, &b.message))
    });
    found
}

/// The findings so far (a set: two checks reaching the same line say it once).
#[derive(Default)]
pub struct Findings(BTreeSet<Finding>);

impl Findings {
    pub fn push(&mut self, file: &Path, line: usize, message: String) {
        self.0.insert(Finding {
            file: file.to_path_buf(),
            line,
            message,
        });
    }
}

/// Every document of the repository.
pub struct Repo<'a> {
    pub docs: Vec<Doc<'a>>,
}

/// One YAML document: where it is, its nodes and its JSON.
pub struct Doc<'a> {
    pub file: &'a Path,
    pub node: Node,
    pub json: Value,
    /// In a file a `kustomization.yaml` uses as a patch: a partial object.
    pub patch: bool,
}

impl<'a> Doc<'a> {
    fn new(file: &'a Path, node: Node) -> Doc<'a> {
        Doc {
            file,
            json: node.to_json(),
            node,
            patch: false,
        }
    }

    pub fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or_default()
    }

    pub fn api_version(&self) -> &str {
        self.json["apiVersion"].as_str().unwrap_or_default()
    }

    /// The group of `apiVersion` (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version().rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// A whole (not patch) object of `kind` in API group `group`, any version.
    pub fn is(&self, group: &str, kind: &str) -> bool {
        !self.patch && self.kind() == kind && self.group() == group
    }

    pub fn name(&self) -> &str {
        self.json["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace` when written (an overlay may still set it).
    pub fn namespace(&self) -> Option<&str> {
        self.json["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }

    /// The line of the field at `path`, else of the deepest field of it that exists, else 1.
    pub fn line(&self, path: &[&str]) -> usize {
        (1..=path.len())
            .rev()
            .find_map(|n| self.node.line_of(&path[..n]))
            .unwrap_or(self.node.line)
    }

    /// `namespace/name`, or `name` when the namespace is not written.
    pub fn id(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{ns}/{}", self.name()),
            None => self.name().to_string(),
        }
    }
}

impl Repo<'_> {
    /// The documents of files under `dir` (relative to the root; `""` is the whole
    /// repository), or `None` when no file is there. kustomize's own files
    /// (`kustomize.config.k8s.io`) are left out: they are not objects.
    pub fn docs_under(&self, dir: &str) -> Option<Vec<&Doc<'_>>> {
        let dir = normalize(Path::new(dir));
        let files: Vec<&Doc> = self
            .docs
            .iter()
            .filter(|d| normalize(d.file).starts_with(&dir))
            .collect();
        (!files.is_empty()).then(|| {
            files
                .into_iter()
                .filter(|d| d.group() != "kustomize.config.k8s.io")
                .collect()
        })
    }
}

/// A path without `.` and with `..` applied (lexically).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The files `kustomization.yaml`s use as patches, normalised.
fn patch_files(docs: &[Doc]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in docs
        .iter()
        .filter(|d| d.group() == "kustomize.config.k8s.io")
    {
        let dir = d.file.parent().unwrap_or(Path::new(""));
        let j = &d.json;
        let paths = j["patches"]
            .as_array()
            .into_iter()
            .chain(j["patchesJson6902"].as_array())
            .flatten()
            .filter_map(|p| p["path"].as_str())
            .chain(
                j["patchesStrategicMerge"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|p| !p.contains('\n')),
            );
        out.extend(paths.map(|p| normalize(&dir.join(p))));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Lint one file `f.yaml` and give its findings as `line: message`.
    pub fn lint_one(text: &str) -> Vec<String> {
        lint_files(&[("f.yaml", text)])
    }

    /// Lint files given as (path, text) and give the findings as `file:line: message`, or
    /// `line: message` for `f.yaml`.
    pub fn lint_files(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        lint(&files)
            .iter()
            .map(|f| {
                if f.file == Path::new("f.yaml") {
                    format!("{}: {}", f.line, f.message)
                } else {
                    f.to_string()
                }
            })
            .collect()
    }

    /// Run one check on one file `f.yaml`: its findings as `line: message`.
    pub fn check_one(text: &str, check: fn(&Repo, &mut Findings)) -> Vec<String> {
        check_files(&[("f.yaml", text)], check)
    }

    /// Run one check on files (path, text): findings as `file:line: message` (`line: message`
    /// for `f.yaml`), in order.
    pub fn check_files(files: &[(&str, &str)], check: fn(&Repo, &mut Findings)) -> Vec<String> {
        let mut docs = vec![];
        for (file, text) in files {
            let nodes = yaml::parse_documents(text).unwrap();
            docs.extend(nodes.into_iter().map(|n| Doc::new(Path::new(file), n)));
        }
        let patches = patch_files(&docs);
        for d in &mut docs {
            d.patch = patches.contains(&normalize(d.file));
        }
        let mut out = Findings::default();
        check(&Repo { docs }, &mut out);
        out.0
            .iter()
            .map(|f| {
                if f.file == Path::new("f.yaml") {
                    format!("{}: {}", f.line, f.message)
                } else {
                    f.to_string()
                }
            })
            .collect()
    }

    #[test]
    fn a_syntax_error_is_a_finding() {
        assert_eq!(lint_one("a: b\nc: [d\n").len(), 1);
    }

    #[test]
    fn patch_files_are_checked_only_for_their_api_version() {
        let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\npatches:\n  - path: p.yaml\n";
        let patch = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: x\nspec:\n  values: {}\n";
        assert_eq!(
            lint_files(&[("o/kustomization.yaml", kustomization), ("o/p.yaml", patch)]),
            Vec::<String>::new()
        );
        let found = lint_files(&[("o/p.yaml", patch)]);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("./a/../b/./c")), PathBuf::from("b/c"));
        assert_eq!(normalize(Path::new("./")), PathBuf::new());
    }
}
