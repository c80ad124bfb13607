//! Which files of a source tree go into its artifact: Flux's `sourceignore` rules.
//!
//! Same as Flux's `fluxcd/pkg/sourceignore` used by source-controller's GitRepository (and
//! OCIRepository/Bucket) reconcilers:
//! - the VCS patterns (`.git/`, `.gitignore`, `.gitmodules`, `.gitattributes`) always apply;
//! - every `.sourceignore` file in the tree (not inside `.git/`) is read; a nested one applies to
//!   its own directory only, relative to it (Flux's pattern "domain");
//! - `spec.ignore` is appended after them, relative to the root;
//! - Flux's built-in default exclusions (images, archives, CI files, `.sops.yaml`, …) apply only
//!   when there is no pattern at all, from either place.
//!
//! Patterns are gitignore syntax, matched with the `ignore` crate's gitignore matcher. As in
//! Flux (go-git's matcher), the last matching pattern wins across all files (a later
//! `.sourceignore` or `spec.ignore` overrides an earlier one), and a path is matched together
//! with its parent directories: `dir/` excludes everything below `dir`, and a later
//! `!dir/keep.yaml` re-includes that one file. `.gitignore` files are *not* read (Flux neither).
//!
//! Known differences from Flux: within one file, a pattern matching the path itself beats one
//! matching only a parent directory whatever their order (`!dir/keep.yaml` then `dir/` keeps
//! `dir/keep.yaml`; go-git's last-match rule drops it); a `.sourceignore` that is not a regular
//! file (a symlink) is not read, and one over [`MAX_IGNORE_FILE_SIZE`] is an error.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The file name Flux reads ignore patterns from, at any depth.
pub const IGNORE_FILE: &str = ".sourceignore";

/// Flux's `ExcludeVCS`: always excluded.
pub const VCS_PATTERNS: &[&str] = &[".git/", ".gitignore", ".gitmodules", ".gitattributes"];

/// Flux's `ExcludeExt`, `ExcludeCI` and `ExcludeExtra`: excluded only when no `.sourceignore` and
/// no `spec.ignore` gives a pattern. (Flux's `ExcludeCI` spells out `codeship-services.yml` and
/// `codeship-steps.yml`.)
pub const DEFAULT_PATTERNS: &[&str] = &[
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

/// One set of patterns and the directory (relative to the root, `""` for the root) they apply in.
#[derive(Debug)]
struct Scoped {
    dir: PathBuf,
    matcher: Gitignore,
}

/// The ignore rules of one source tree, in Flux's order of precedence (later wins).
#[derive(Debug)]
pub struct IgnoreRules {
    /// VCS patterns, defaults (only without user patterns), the root's `.sourceignore`, nested
    /// ones (depth first, names sorted, as Flux walks), `spec.ignore`.
    scopes: Vec<Scoped>,
    /// Whether any pattern re-includes (`!…`): without one, nothing under an ignored directory
    /// can be included, so a walk may skip the directory.
    has_negation: bool,
}

impl IgnoreRules {
    /// Reads every `.sourceignore` under `root` (skipping `.git/` and symlinks) and appends
    /// `spec_ignore` (the object's `spec.ignore`, gitignore lines relative to `root`).
    ///
    /// Errors: a `.sourceignore` or directory that cannot be read; an invalid glob (the line is
    /// named).
    pub fn load(root: &Path, spec_ignore: Option<&str>) -> io::Result<IgnoreRules> {
        let mut user: Vec<(PathBuf, Vec<String>)> = vec![];
        collect_ignore_files(root, Path::new(""), &mut user)?;
        if let Some(spec) = spec_ignore {
            user.push((PathBuf::new(), pattern_lines(spec)));
        }
        user.retain(|(_, lines)| !lines.is_empty());
        Self::from_scoped(user)
    }

    /// The rules for patterns given as text (e.g. `spec.ignore` of an object whose tree is not on
    /// disk yet), all relative to the root; `None` or no pattern gives Flux's defaults.
    pub fn from_patterns(patterns: Option<&str>) -> io::Result<IgnoreRules> {
        let lines = patterns.map(pattern_lines).unwrap_or_default();
        let user = if lines.is_empty() {
            vec![]
        } else {
            vec![(PathBuf::new(), lines)]
        };
        Self::from_scoped(user)
    }

    /// The rules of a Helm chart package: the VCS patterns and the chart's `.helmignore` lines
    /// (scoped to `dir`, the chart's directory under the root), never Flux's default
    /// exclusions (a chart may hold images or archives, which `helm package` keeps).
    pub fn for_chart(dir: &Path, helmignore: Option<&str>) -> io::Result<IgnoreRules> {
        let lines = helmignore.map(pattern_lines).unwrap_or_default();
        // a user scope, even empty, turns the default exclusions off
        Self::from_scoped(vec![(dir.to_path_buf(), lines)])
    }

    fn from_scoped(user: Vec<(PathBuf, Vec<String>)>) -> io::Result<IgnoreRules> {
        let mut base: Vec<String> = VCS_PATTERNS.iter().map(|s| s.to_string()).collect();
        if user.is_empty() {
            base.extend(DEFAULT_PATTERNS.iter().map(|s| s.to_string()));
        }
        let mut scopes = vec![Scoped {
            dir: PathBuf::new(),
            matcher: build(&base)?,
        }];
        let mut has_negation = false;
        for (dir, lines) in user {
            has_negation |= lines.iter().any(|l| l.starts_with('!'));
            scopes.push(Scoped {
                dir,
                matcher: build(&lines)?,
            });
        }
        Ok(IgnoreRules {
            scopes,
            has_negation,
        })
    }

    /// Whether `rel_path` (relative to the root, `/`-separated, e.g. `deploy/app.yaml`) is left
    /// out of the artifact. `is_dir` says whether it is a directory (for `dir/` patterns). The
    /// root itself (`""`) is never ignored.
    pub fn is_ignored(&self, rel_path: &Path, is_dir: bool) -> bool {
        for scope in self.scopes.iter().rev() {
            // Flux's domain: a pattern of `a/.sourceignore` sees only paths strictly below `a`.
            let Ok(inner) = rel_path.strip_prefix(&scope.dir) else {
                continue;
            };
            if inner.as_os_str().is_empty() {
                continue;
            }
            match scope.matcher.matched_path_or_any_parents(inner, is_dir) {
                Match::None => {}
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
            }
        }
        false
    }

    /// Whether a walk may skip everything below an ignored directory: true unless some pattern
    /// re-includes (`!…`), in which case a file below it may still be included (as in Flux,
    /// whose walk visits every file).
    pub fn prunes_ignored_dirs(&self) -> bool {
        !self.has_negation
    }
}

/// Flux's `ReadPatterns`: every line that is not blank and does not start with `#`.
fn pattern_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn build(lines: &[String]) -> io::Result<Gitignore> {
    // Root "." makes the matcher take our relative paths as they are.
    let mut b = GitignoreBuilder::new(".");
    for line in lines {
        b.add_line(None, line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid ignore pattern {line:?}: {e}"),
            )
        })?;
    }
    b.build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The largest `.sourceignore` read, in bytes.
pub const MAX_IGNORE_FILE_SIZE: u64 = 1 << 20;

/// A `.sourceignore`'s text; `None` when there is none. Unlike Flux, which opens whatever the
/// name points at, only a regular file is read (a symlink is skipped, as the archive skips it:
/// a hostile repository cannot make us read `/dev/zero` or a file outside the tree), and one
/// over [`MAX_IGNORE_FILE_SIZE`] is an error.
fn read_ignore_file(path: &Path) -> io::Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_IGNORE_FILE_SIZE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_IGNORE_FILE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is over {MAX_IGNORE_FILE_SIZE} bytes", path.display()),
        ));
    }
    Ok(Some(text))
}

/// Flux's `LoadIgnorePatterns`: the `.sourceignore` of `dir`, then each subdirectory's (sorted by
/// name, `.git` skipped, symlinks not followed), depth first.
fn collect_ignore_files(
    root: &Path,
    rel: &Path,
    out: &mut Vec<(PathBuf, Vec<String>)>,
) -> io::Result<()> {
    let dir = root.join(rel);
    if let Some(text) = read_ignore_file(&dir.join(IGNORE_FILE))? {
        out.push((rel.to_path_buf(), pattern_lines(&text)));
    }
    let mut subdirs = vec![];
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name() != ".git" {
            subdirs.push(entry.file_name());
        }
    }
    subdirs.sort();
    for name in subdirs {
        collect_ignore_files(root, &rel.join(name), out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(rules: &IgnoreRules, p: &str) -> bool {
        rules.is_ignored(Path::new(p), false)
    }

    /// The cases of Flux's `sourceignore_test.go` (`TestReadPatterns`, `TestVCSPatterns`,
    /// `TestDefaultPatterns`) and go-git's matcher test, as (patterns, ignored, kept).
    /// (case, patterns, ignored paths, kept paths).
    type Case<'a> = (&'a str, Option<&'a str>, &'a [&'a str], &'a [&'a str]);

    #[test]
    fn flux_sourceignore_cases() {
        let cases: &[Case] = &[
            (
                "simple",
                Some("ignore-dir/*\n!ignore-dir/include\n"),
                &["ignore-dir/file.yaml"],
                &["file.yaml", "ignore-dir/include"],
            ),
            (
                "with comments",
                Some("ignore-dir/*\n# !ignore-dir/include"),
                &["ignore-dir/file.yaml", "ignore-dir/include"],
                &[],
            ),
            (
                "vcs always",
                Some("foo"),
                &[
                    ".git/config",
                    ".gitignore",
                    "d/.gitignore",
                    "foo",
                    "a/foo/b",
                ],
                &["workload.yaml", "workload.yml", "simple.txt", "image.jpg"],
            ),
            (
                "defaults without patterns",
                None,
                &[
                    ".git/config",
                    ".gitignore",
                    "image.jpg",
                    "archive.tar.gz",
                    ".github/workflows/workflow.yaml",
                    "subdir/.flux.yaml",
                    "subdir2/.sops.yaml",
                    "codeship-steps.yml",
                ],
                &["workload.yaml", "workload.yml", "simple.txt", "sops.yaml"],
            ),
            (
                "a pattern drops the defaults",
                Some("!*.jpg"),
                &[".git/config"],
                &["image.jpg", ".github/workflows/workflow.yaml"],
            ),
            (
                "go-git matcher: last pattern wins",
                Some("**/middle/v[uo]l?ano\n!volcano"),
                &["head/middle/vulkano"],
                &["head/middle/volcano"],
            ),
            (
                "a directory pattern covers its files",
                Some("value/\n/anchored\n"),
                &["value/tail", "head/value/tail", "anchored/x"],
                &["head/anchored/x", "head/value"],
            ),
            (
                "flux's own example: everything but deploy",
                Some("/*\n!/deploy\n"),
                &["README.md", "src/main.go"],
                &["deploy/app.yaml", "deploy/base/kustomization.yaml"],
            ),
        ];
        for (name, patterns, ignored_paths, kept) in cases {
            let rules = IgnoreRules::from_patterns(*patterns).unwrap();
            for p in *ignored_paths {
                assert!(ignored(&rules, p), "{name}: {p} should be ignored");
            }
            for p in *kept {
                assert!(!ignored(&rules, p), "{name}: {p} should be kept");
            }
        }
    }

    #[test]
    fn dir_only_pattern_matches_directories_not_files() {
        let rules = IgnoreRules::from_patterns(Some("value/")).unwrap();
        assert!(rules.is_ignored(Path::new("head/value"), true));
        assert!(!rules.is_ignored(Path::new("head/value"), false));
    }

    /// Flux's `TestLoadExcludePatterns` tree: `.gitignore` files are not read, nested
    /// `.sourceignore` files apply below their own directory only.
    #[test]
    fn load_reads_nested_sourceignore_files_in_their_domain() {
        let tmp = tempfile::tempdir().unwrap();
        for (n, c) in [
            (".sourceignore", "root.txt"),
            ("d/.gitignore", "ignored"),
            ("z/.sourceignore", "last.txt"),
            ("a/b/.sourceignore", "subdir.txt"),
            ("e/last.txt", "foo"),
            ("a/c/subdir.txt", "bar"),
        ] {
            let p = tmp.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        let rules = IgnoreRules::load(tmp.path(), Some("extra/")).unwrap();
        for p in [
            "root.txt",
            "e/root.txt",
            "a/b/subdir.txt",
            "a/b/x/subdir.txt",
        ] {
            assert!(ignored(&rules, p), "{p}");
            assert!(ignored(&rules, "z/last.txt"));
        }
        assert!(rules.is_ignored(Path::new("extra"), true));
        assert!(ignored(&rules, "extra/file"));
        for p in ["e/last.txt", "a/c/subdir.txt", "d/ignored", "image.png"] {
            assert!(!ignored(&rules, p), "{p} kept");
        }
        // The VCS patterns still hold next to user patterns.
        assert!(ignored(&rules, "d/.gitignore"));
        assert!(rules.prunes_ignored_dirs());
    }

    /// Later patterns override earlier ones across files: `spec.ignore` re-includes what a
    /// `.sourceignore` excluded, and a nested file overrides the root's within its directory.
    #[test]
    fn later_sources_override_earlier_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".sourceignore"), "*.yaml\n").unwrap();
        std::fs::create_dir(tmp.path().join("keep")).unwrap();
        std::fs::write(tmp.path().join("keep/.sourceignore"), "!*.yaml\n").unwrap();
        let rules = IgnoreRules::load(tmp.path(), Some("!crd.yaml")).unwrap();
        assert!(ignored(&rules, "app.yaml"));
        assert!(!ignored(&rules, "keep/app.yaml"));
        assert!(!ignored(&rules, "crd.yaml"));
        assert!(!rules.prunes_ignored_dirs());
    }

    #[test]
    fn symlinked_or_huge_sourceignore_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("patterns"), "*.yaml\n").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("patterns"),
            tmp.path().join(IGNORE_FILE),
        )
        .unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("sub").join(IGNORE_FILE)).unwrap();
        let rules = IgnoreRules::load(tmp.path(), None).unwrap();
        assert!(!ignored(&rules, "app.yaml"));
        assert!(ignored(&rules, "logo.png"), "no patterns read: defaults");

        let big = "x\n".repeat(MAX_IGNORE_FILE_SIZE as usize);
        std::fs::write(tmp.path().join("sub/x"), "").unwrap();
        std::fs::create_dir(tmp.path().join("big")).unwrap();
        std::fs::write(tmp.path().join("big").join(IGNORE_FILE), big).unwrap();
        let err = IgnoreRules::load(tmp.path(), None).unwrap_err();
        assert!(err.to_string().contains("is over 1048576 bytes"), "{err}");
    }

    #[test]
    fn empty_patterns_count_as_none() {
        let rules = IgnoreRules::from_patterns(Some("# only a comment\n\n")).unwrap();
        assert!(ignored(&rules, "logo.png"), "defaults apply");
    }
}
