//! The layering of `src/` (DESIGN.md, "Layout"): arrows point down only. A scan of the sources
//! (like the RBAC scan in `tests/chart.rs`) fails when a module refers to one above it:
//!
//! - `api` (our CRD types) and `util` are the bottom: they refer to no other pennant module;
//! - the modules the controllers are built from (`analysis`, `notify`, `router`, `webhook`,
//!   `metrics`, `ext`, `gate`, `http_post`, `source`, `apply`, `health`) and the process that hosts them
//!   (`runtime`, `server`, `leader`, `logging`, `kube_client`, `rbac`), and `view` (what people
//!   read of the objects: `pennant get`'s rows) and `ui` (the dashboard) never refer to a
//!   controller (`canary`, `kustomize`, `helm`, `notification`);
//! - `gitops` (the GitOps Toolkit contract shared by the Flux-compatible controllers) refers to
//!   `api` and `util` only;
//! - the command-line layer (`cmd`) is the top: no module refers to it (only `main.rs`, which is
//!   not a module);
//! - `lint` (the offline checks of `pennant lint`) sits just below it: it may use the
//!   controllers' pure parts, and only `cmd` refers to it.
//!
//! A reference is any path into the crate, in code or in an attribute string (`crate::x`,
//! `super::…` resolved against the file's module and its inline `mod`s, `use crate::{x, y}`);
//! comments and other string literals are not. Test code counts too: a test that needs a
//! controller's fixture belongs with the controller, or its fixture below it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules that refer to no other pennant module.
const BOTTOM: &[&str] = &["api", "util"];
/// Controllers: only the command-line layer (`cmd`) and themselves refer to them.
const CONTROLLERS: &[&str] = &["canary", "kustomize", "helm", "notification"];
/// The command-line layer: referred to by `main.rs` only.
const TOP: &[&str] = &["cmd"];
/// Modules below every controller.
const BELOW_CONTROLLERS: &[&str] = &[
    "analysis",
    "gitops",
    "notify",
    "router",
    "webhook",
    "metrics",
    "ext",
    "gate",
    "http_post",
    "api",
    "util",
    "runtime",
    "server",
    "leader",
    "logging",
    "kube_client",
    "rbac",
    "source",
    "apply",
    "health",
    "notification",
    "view",
    "ui",
];

/// Why module `from` may not refer to module `to` (top-level modules of the crate), or `None`.
fn forbidden(from: &str, to: &str) -> Option<&'static str> {
    if from == to {
        None
    } else if BOTTOM.contains(&from) {
        Some("refers to no other pennant module")
    } else if TOP.contains(&to) {
        Some("may not use the command-line layer, which only main.rs uses")
    } else if to == "lint" && from != "cmd" {
        Some("may not use `lint`, which only the command-line layer uses")
    } else if from == "gitops" && !BOTTOM.contains(&to) {
        Some("is the GitOps Toolkit contract: it refers to `api` and `util` only")
    } else if BELOW_CONTROLLERS.contains(&from) && CONTROLLERS.contains(&to) {
        Some("is below the controllers")
    } else {
        None
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    /// A string literal's contents.
    Str(String),
    Other,
}

/// Rust tokens, enough to find paths: comments dropped, string and char literals (raw ones too)
/// skipped whole, each token with its line.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = vec![];
    let (mut i, mut line) = (0, 1);
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or('\0');
        let start_line = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            let mut s = String::new();
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    s.push(c[i]);
                    i += 1;
                }
                line += usize::from(c[i] == '\n');
                s.push(c[i]);
                i += 1;
            }
            i += 1;
            out.push((Tok::Str(s), start_line));
        } else if ch == '\'' {
            // a char literal ('x', '\n', '\u{1F600}') or a lifetime ('a)
            if next == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push((Tok::Other, start_line));
        } else if ident_char(ch) {
            let s = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            let raw_string = matches!(word.as_str(), "r" | "br" | "cr")
                && (c.get(i) == Some(&'"')
                    || (c.get(i) == Some(&'#')
                        && c[i..].iter().find(|&&x| x != '#') == Some(&'"')));
            if raw_string {
                let hashes = c[i..].iter().take_while(|&&x| x == '#').count();
                i += hashes + 1;
                let s = i;
                while i < c.len()
                    && !(c[i] == '"' && c[i + 1..].iter().take(hashes).all(|&x| x == '#'))
                {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
                out.push((Tok::Str(c[s..i].iter().collect()), start_line));
                i += 1 + hashes;
            } else if word == "r" && c.get(i) == Some(&'#') {
                i += 1; // raw identifier r#name: the name follows
            } else if ch.is_ascii_digit() {
                out.push((Tok::Other, start_line));
            } else {
                out.push((Tok::Ident(word), start_line));
            }
        } else if ch == ':' && next == ':' {
            out.push((Tok::PathSep, start_line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    _ => Tok::Other,
                },
                start_line,
            ));
            i += 1;
        }
    }
    out
}

/// The top-level pennant modules a file refers to, with the line, for the file at module path
/// `module` (e.g. `["router", "istio"]`).
fn references(src: &str, module: &[String]) -> Vec<(String, usize)> {
    let toks = tokens(src);
    let ident = |j: usize| match toks.get(j) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |j: usize, t: Tok| toks.get(j).is_some_and(|(x, _)| *x == t);
    let mut out = vec![];
    // inline modules: (name, brace depth outside it)
    let mut inline: Vec<(String, usize)> = vec![];
    let mut depth = 0;
    for i in 0..toks.len() {
        let line = toks[i].1;
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = usize::saturating_sub(depth, 1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Str(s) => {
                // attribute paths: `schema_with = "crate::api::x"`, `default = "crate::x"`
                if let Some(rest) = s.strip_prefix("crate::")
                    && rest
                        .chars()
                        .all(|ch| ch.is_alphanumeric() || ch == '_' || ch == ':')
                {
                    out.push((rest.split("::").next().unwrap().to_string(), line));
                }
            }
            Tok::Ident(w) => {
                if w == "mod" && is(i + 2, Tok::Open) {
                    if let Some(name) = ident(i + 1) {
                        inline.push((name.to_string(), depth));
                    }
                    continue;
                }
                let path_start = !is(i.wrapping_sub(1), Tok::PathSep) && is(i + 1, Tok::PathSep);
                if !path_start || !matches!(w.as_str(), "crate" | "pennant" | "super" | "self") {
                    continue;
                }
                let mut current: Vec<&str> = module.iter().map(String::as_str).collect();
                current.extend(inline.iter().map(|(n, _)| n.as_str()));
                let (base, mut j): (Vec<&str>, usize) = match w.as_str() {
                    "super" => {
                        let mut j = i;
                        let mut up = 0;
                        while ident(j) == Some("super") && is(j + 1, Tok::PathSep) {
                            up += 1;
                            j += 2;
                        }
                        (current[..current.len().saturating_sub(up)].to_vec(), j)
                    }
                    "self" => (current, i + 2),
                    _ => (vec![], i + 2),
                };
                if let Some(top) = base.first() {
                    out.push((top.to_string(), line));
                } else if let Some(name) = ident(j) {
                    out.push((name.to_string(), line));
                } else if is(j, Tok::Open) {
                    // `crate::{a::x, b}`: the first segment of each item at the group's level
                    let mut level = 0;
                    let mut item_start = true;
                    while j < toks.len() {
                        match &toks[j].0 {
                            Tok::Open => {
                                level += 1;
                                item_start = level == 1;
                            }
                            Tok::Close => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            Tok::Comma => item_start = level == 1,
                            Tok::Ident(n) if item_start => {
                                out.push((n.clone(), toks[j].1));
                                item_start = false;
                            }
                            _ => item_start = false,
                        }
                        j += 1;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Module path of a file under `src/`: `router/istio.rs` → `["router", "istio"]`,
/// `notify/mod.rs` → `["notify"]`. `None` for the crate roots.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (!(parts.is_empty() || parts == ["lib"] || parts == ["main"])).then_some(parts)
}

/// Every arrow back up in `files` (path under `src/`, source), as `file:line: from → to (why)`.
fn violations<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut out = vec![];
    for (rel, src) in files {
        let Some(module) = module_path(Path::new(rel)) else {
            continue;
        };
        for (to, line) in references(src, &module) {
            if let Some(why) = forbidden(&module[0], &to) {
                out.push(format!(
                    "src/{rel}:{line}: {} → {to} ({} {why})",
                    module[0], module[0]
                ));
            }
        }
    }
    out
}

fn src_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = vec![];
    walk(&root, &root, &mut out);
    out.sort();
    out
}

#[test]
fn no_module_refers_to_one_above_it() {
    let files = src_files();
    let found = violations(files.iter().map(|(p, s)| (p.as_str(), s.as_str())));
    assert!(
        found.is_empty(),
        "arrows back up the layers (DESIGN.md, Layout):\n{}",
        found.join("\n")
    );
}

/// The scan sees the arrows that do exist (so an empty result above is not a blind scan), and
/// every module the rules name is a module of the crate.
#[test]
fn the_scan_sees_the_real_arrows_down() {
    let files = src_files();
    let mut arrows = BTreeSet::new();
    for (rel, src) in &files {
        if let Some(m) = module_path(Path::new(rel)) {
            for (to, _) in references(src, &m) {
                arrows.insert((m[0].clone(), to));
            }
        }
    }
    for (from, to) in [
        ("canary", "router"),
        ("canary", "analysis"),
        ("canary", "notify"),
        ("canary", "webhook"),
        ("router", "api"),
        ("analysis", "api"),
        ("notify", "api"),
        ("webhook", "http_post"),
        ("analysis", "util"),
        ("cmd", "canary"),
        ("cmd", "runtime"),
        ("canary", "runtime"),
        ("cmd", "lint"),
        ("lint", "canary"),
    ] {
        assert!(
            arrows.contains(&(from.to_string(), to.to_string())),
            "{from} → {to} not seen; arrows: {arrows:?}"
        );
    }
    let lib = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap();
    for m in BOTTOM
        .iter()
        .chain(CONTROLLERS)
        .chain(BELOW_CONTROLLERS)
        .chain(TOP)
    {
        assert!(
            lib.contains(&format!("pub mod {m};")),
            "{m} is not a module of the crate"
        );
    }
}

/// Negative controls: planted arrows back up are found, in every form a path takes; arrows
/// down, comments, messages and inline modules' own `super` are not.
#[test]
fn planted_arrows_back_up_are_found() {
    let bad = [
        (
            "router/planted.rs",
            "use crate::canary::machine::Weights;\n",
        ),
        ("api/planted.rs", "use crate::analysis::judge::Plan;\n"),
        (
            "notify/planted.rs",
            "use crate::{\n    api::Canary,\n    canary::execute::{self, x},\n};\n",
        ),
        (
            "analysis/planted.rs",
            "fn f() { super::super::canary::f() }\n",
        ),
        (
            "webhook.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::canary::workload::fixtures::*;\n}\n",
        ),
        (
            "api/planted.rs",
            "#[derive(JsonSchema)]\nstruct S {\n    #[schemars(schema_with = \"crate::router::s\")]\n    \
             a: u8,\n}\n",
        ),
        ("util.rs", "pub fn f() -> crate::api::Canary { todo!() }\n"),
        ("canary/planted.rs", "use crate::cmd::replay::ReplayFile;\n"),
        ("kustomize/planted.rs", "use crate::lint::Finding;\n"),
        ("runtime.rs", "fn f() { crate::canary::controller::run }\n"),
    ];
    for (rel, src) in bad {
        assert_eq!(violations([(rel, src)]).len(), 1, "{rel}: {src}");
    }
    assert_eq!(
        violations([(
            "notify/planted.rs",
            "use crate::{\n    api::Canary,\n    canary::execute::{self, x},\n};\n"
        )]),
        ["src/notify/planted.rs:3: notify → canary (notify is below the controllers)"]
    );
    let good = [
        (
            "router/planted.rs",
            "use crate::api::Canary;\nuse super::Weights;\n",
        ),
        (
            "router/planted.rs",
            "// see crate::canary::execute\n/* crate::canary::x */\nfn f() { let _ = \"crate::canary is above\"; }\n",
        ),
        (
            "router/planted.rs",
            "mod tests {\n    use super::super::canary::x;\n}\nuse super::Weights;\n",
        ),
        (
            "canary/planted.rs",
            "use crate::router::Weights;\nuse crate::api::Canary;\n",
        ),
        (
            "lint/planted.rs",
            "use crate::canary::validate;\nuse crate::kustomize::substitute;\n",
        ),
        (
            "cmd/planted.rs",
            "use crate::canary::machine;\nuse super::replay;\nuse crate::runtime::Scope;\n",
        ),
        (
            "api/planted.rs",
            "use super::{Canary, condition};\nfn f() -> char { let _ = r#\"see crate::canary\"#; '{' }\n",
        ),
    ];
    for (rel, src) in good {
        assert_eq!(
            violations([(rel, src)]),
            Vec::<String>::new(),
            "{rel}: {src}"
        );
    }
}
