//! Differential test of `kustomize::substitute::eval` against Flux's own envsubst
//! (`github.com/fluxcd/pkg/envsubst` v1.7.1, built from `e2e/tools/envsubst-check` with the local
//! Go; the module comes from the Go proxy the first time, the cache afterwards): 20,000
//! generated expressions — well-formed, malformed, escaped, nested — must give the same text, or
//! the same error, in strict and non-strict mode.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use pennant::kustomize::substitute::eval;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// Build the Go filter into the target directory.
fn flux_envsubst() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/envsubst-check");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(root.join("e2e/tools/envsubst-check"))
        .env("GOWORK", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-modcacherw")
        .status()
        .expect("go is installed");
    assert!(
        status.success(),
        "go build of e2e/tools/envsubst-check failed"
    );
    out
}

/// Pieces the generator strings together: every operator character of the grammar, escapes,
/// variable names (defined, empty, undefined) and plain text.
const PIECES: &[&str] = &[
    "${", "${", "${", "}", "}", "$", "$$", "var", "empty", "nope", "n", ":", ":", "=", "-", "+",
    "?", "#", "##", "%", "%%", "/", "//", "^", "^^", ",", ",,", "\\", "\\/", "*", "?", "[a-c]",
    "[^.]", "a", "b.c", "1", "2", "-1", " ", "x/y", "_",
];

#[test]
fn expressions_evaluate_as_fluxs_envsubst() {
    let vars = BTreeMap::from([
        ("var".to_string(), "abcABC.a/b.c-1".to_string()),
        ("empty".to_string(), String::new()),
        ("n".to_string(), "12345".to_string()),
    ]);
    let mut rng = StdRng::seed_from_u64(14);
    let mut cases = vec![];
    for _ in 0..20000 {
        let len = rng.random_range(1..10);
        let input: String = (0..len)
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect();
        cases.push((input, rng.random::<bool>()));
    }
    let request: Vec<Value> = cases
        .iter()
        .map(|(input, strict)| json!({"vars": vars, "input": input, "strict": strict}))
        .collect();
    let mut child = Command::new(flux_envsubst())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&request).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answers: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), cases.len());
    let (mut errors, mut differ) = (0, vec![]);
    for ((input, strict), (go_out, go_err)) in cases.iter().zip(&answers) {
        let mine = match eval(input, &vars, *strict) {
            Ok(s) => (s, String::new()),
            Err(e) => (String::new(), e.to_string()),
        };
        errors += usize::from(!go_err.is_empty());
        if mine != (go_out.clone(), go_err.clone()) {
            differ.push(format!(
                "{input:?} strict={strict}: Flux {:?}, pennant {mine:?}",
                (go_out, go_err)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
    // the corpus exercises both outcomes
    assert!(
        errors > cases.len() / 10 && errors < cases.len() * 9 / 10,
        "{errors} errors"
    );
}
