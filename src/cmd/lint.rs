//! `pennant lint PATH...`: read the YAML files of a GitOps repository and print the findings of
//! [`crate::lint`], one `file:line: message` a line. Exit status: 0 clean (nothing printed), 1
//! findings, 2 a usage or I/O error (one line on stderr).

use std::path::{Path, PathBuf};

use crate::lint::{self, Options};

/// `pennant lint --help`.
pub const LONG_ABOUT: &str = "\
Check a GitOps repository offline. Prints one `file:line: message` per finding and exits 1 when \
there is one (0 and nothing printed when clean, 2 on a usage or I/O error).

A directory is walked for *.yaml and *.yml files (hidden directories and Helm charts, \
directories with a Chart.yaml, skipped); its files are named relative to it, and a \
Kustomization's spec.path is read relative to it (the repository root). A file is named as \
given. All PATHs are checked together.

Findings:
  - a Kustomization with an interval of 1h or more and neither retryInterval nor timeout;
  - a HelmRelease without install or upgrade remediation (remediation or strategy);
  - a plaintext Secret (data/stringData without SOPS encryption);
  - a Kustomization with prune: true and neither wait nor healthChecks, over workloads;
  - a GitRepository over ssh without secretRef, or with a password in its URL;
  - the wrong apiVersion for a kind pennant serves (e.g. a HelmRelease in \
source.toolkit.fluxcd.io/v1, or helm.toolkit.fluxcd.io/v2beta1);
  - a sourceRef or chartRef to a source no file defines (a source named flux-system, created \
by flux bootstrap, is never reported);
  - dependsOn cycles among Kustomizations and HelmReleases;
  - a Canary the Canary controller would refuse (its own validation and messages);
  - a postBuild variable ${var} without definition or default (judged only when every \
substituteFrom ConfigMap/Secret is in the repository).";

/// `pennant lint`.
#[derive(clap::Args, Debug, Clone)]
pub struct LintArgs {
    /// Files and directories of the repository.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Router of Canaries without spec.provider, as the controller's --mesh-provider.
    #[arg(long, env = "PENNANT_MESH_PROVIDER", default_value = crate::api::canary::DEFAULT_MESH_PROVIDER)]
    pub mesh_provider: String,
}

/// Run `pennant lint`; never returns.
pub fn command(args: &LintArgs) -> ! {
    let files = match read(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("pennant lint: {e}");
            std::process::exit(2)
        }
    };
    let options = Options {
        mesh_provider: args.mesh_provider.clone(),
    };
    let found = lint::lint_with(&files, &options);
    for f in &found {
        println!("{f}");
    }
    std::process::exit(if found.is_empty() { 0 } else { 1 })
}

/// The YAML files of `paths`: (path relative to its directory argument, or as given for a
/// file, text). Sorted within a directory.
pub fn read(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = vec![];
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut found = vec![];
            walk(p, p, &mut found)?;
            found.sort();
            for rel in found {
                let text = read_text(&p.join(&rel))?;
                out.push((rel, text));
            }
        } else {
            out.push((p.clone(), read_text(p)?));
        }
    }
    Ok(out)
}

fn read_text(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The YAML files under `dir`, relative to `root`. Hidden directories are skipped, and so are
/// Helm charts (a directory holding a `Chart.yaml`): their templates are not manifests.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if dir != root && dir.join("Chart.yaml").is_file() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = e
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            if !name.starts_with('.') {
                walk(root, &path, out)?;
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push(rel);
        }
    }
    Ok(())
}
