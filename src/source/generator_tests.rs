use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::api::source::ArtifactGeneratorStatus;
use crate::api::source::{
    ArtifactGeneratorSpec, CopyOperation, GeneratorSourceReference, OutputArtifact,
};

fn op(from: &str, to: &str) -> CopyOperation {
    CopyOperation {
        from: from.into(),
        to: to.into(),
        ..Default::default()
    }
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (p, content) in files {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// The staged files (directories left out), as `path=content`.
fn staged(root: &Path) -> Vec<String> {
    walk(root)
        .unwrap()
        .into_iter()
        .filter(|(_, d)| !d)
        .map(|(p, _)| format!("{p}={}", std::fs::read_to_string(root.join(&p)).unwrap()))
        .collect()
}

fn monorepo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            ("apps/a/deploy.yaml", "a"),
            ("apps/a/README.md", "doc"),
            ("apps/a/sub/svc.yaml", "a-svc"),
            ("apps/b/deploy.yaml", "b"),
            ("apps/b-extra/x.yaml", "bx"),
            (
                "infra/values.yaml",
                "replicas: 1\nimage:\n  tag: v1\n  repo: r\nlist: [1, 2]\n",
            ),
            ("infra/values-prod.yaml", "image:\n  tag: v2\nlist: [3]\n"),
            ("top.yaml", "t"),
        ],
    );
    d
}

#[test]
fn copy_operations_stage_like_source_watcher() {
    let cases: &[(&str, Vec<CopyOperation>, &[&str])] = &[
        (
            "dir/** copies the directory's content, recursively",
            vec![op("@s/apps/a/**", "@artifact/")],
            &["README.md=doc", "deploy.yaml=a", "sub/svc.yaml=a-svc"],
        ),
        (
            "a plain directory lands as a sub-directory",
            vec![op("@s/apps/a", "@artifact/out")],
            &[
                "out/a/README.md=doc",
                "out/a/deploy.yaml=a",
                "out/a/sub/svc.yaml=a-svc",
            ],
        ),
        (
            "a file to a name, then to a directory",
            vec![
                op("@s/top.yaml", "@artifact/x.yaml"),
                op("@s/top.yaml", "@artifact/d/"),
            ],
            &["d/top.yaml=t", "x.yaml=t"],
        ),
        (
            "a one-segment glob keeps the match path (fs.Glob: * stays in its segment)",
            vec![op("@s/apps/*/deploy.yaml", "@artifact/")],
            &["apps/a/deploy.yaml=a", "apps/b/deploy.yaml=b"],
        ),
        (
            "later copies overwrite earlier ones",
            vec![
                op("@s/apps/a/deploy.yaml", "@artifact/f"),
                op("@s/apps/b/deploy.yaml", "@artifact/f"),
            ],
            &["f=b"],
        ),
    ];
    let src = monorepo();
    for (what, ops, want) in cases {
        let staging = tempfile::tempdir().unwrap();
        for o in ops {
            apply_copy(&parse_copy(o).unwrap(), src.path(), staging.path())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert_eq!(staged(staging.path()), *want, "{what}");
    }
}

#[test]
fn excludes_match_names_paths_and_the_selection_root() {
    let src = monorepo();
    let cases: &[(&[&str], &[&str])] = &[
        (&["*.md"], &["deploy.yaml=a", "sub/svc.yaml=a-svc"]),
        (&["sub/**"], &["README.md=doc", "deploy.yaml=a"]),
        (&["apps/a/sub"], &["README.md=doc", "deploy.yaml=a"]),
        (&["**/deploy.yaml", "README.md"], &["sub/svc.yaml=a-svc"]),
    ];
    for (exclude, want) in cases {
        let staging = tempfile::tempdir().unwrap();
        let mut o = op("@s/apps/a/**", "@artifact/");
        o.exclude = Some(exclude.iter().map(|s| s.to_string()).collect());
        apply_copy(&parse_copy(&o).unwrap(), src.path(), staging.path()).unwrap();
        assert_eq!(staged(staging.path()), *want, "{exclude:?}");
    }
    // everything excluded is an error, as source-watcher's
    let mut o = op("@s/apps/a/*.md", "@artifact/");
    o.exclude = Some(vec!["*.md".into()]);
    let e = apply_copy(
        &parse_copy(&o).unwrap(),
        src.path(),
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "all files matching pattern 'apps/a/*.md' in source 's' were excluded"
    );
}

#[test]
fn merge_deep_merges_yaml_and_replaces_lists() {
    let src = monorepo();
    let staging = tempfile::tempdir().unwrap();
    let mut merge = op("@s/infra/values-prod.yaml", "@artifact/values.yaml");
    merge.strategy = Some("Merge".into());
    for o in [op("@s/infra/values.yaml", "@artifact/values.yaml"), merge] {
        apply_copy(&parse_copy(&o).unwrap(), src.path(), staging.path()).unwrap();
    }
    let v: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(staging.path().join("values.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"replicas": 1, "image": {"tag": "v2", "repo": "r"}, "list": [3]})
    );
}

#[test]
fn extract_unpacks_tarballs_and_refuses_other_files() {
    let src = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    write(tree.path(), &[("chart/Chart.yaml", "name: c")]);
    let mut out = Vec::new();
    crate::source::artifact::archive_dir(
        tree.path(),
        &crate::source::ignore::IgnoreRules::from_patterns(None).unwrap(),
        &Default::default(),
        &mut out,
    )
    .unwrap();
    write(src.path(), &[("pkgs/c.tgz", ""), ("pkgs/notes.txt", "n")]);
    std::fs::write(src.path().join("pkgs/c.tgz"), &out).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut o = op("@s/**/*", "@artifact/charts/");
    o.strategy = Some("Extract".into());
    apply_copy(&parse_copy(&o).unwrap(), src.path(), staging.path()).unwrap();
    assert_eq!(staged(staging.path()), ["charts/chart/Chart.yaml=name: c"]);
    let mut o = op("@s/pkgs/notes.txt", "@artifact/");
    o.strategy = Some("Extract".into());
    let e = apply_copy(&parse_copy(&o).unwrap(), src.path(), staging.path()).unwrap_err();
    assert!(
        e.starts_with("extract strategy requires tarball file"),
        "{e}"
    );
}

#[test]
fn hostile_paths_are_refused_before_anything_is_written() {
    for (from, to, want) in [
        ("@s/../etc/passwd", "@artifact/x", "must not contain '..'"),
        ("@s/apps/../../x", "@artifact/x", "must not contain '..'"),
        ("@s//etc/passwd", "@artifact/x", "must be relative"),
        (
            "@s/apps/**",
            "@artifact/../../tmp/x",
            "must not contain '..'",
        ),
        ("@s/apps/**", "@artifact//tmp/x", "must be relative"),
        (
            "@s/apps/**",
            "/tmp/x",
            "destination must start with '@artifact/'",
        ),
        ("s/apps", "@artifact/", "source must start with '@'"),
        ("@s", "@artifact/", "source format must be '@alias/pattern'"),
        ("@s/apps/[a", "@artifact/", "invalid glob pattern"),
    ] {
        let e = parse_copy(&op(from, to)).unwrap_err();
        assert!(e.contains(want), "{from} -> {to}: {e}");
    }
}

#[test]
fn missing_sources_and_empty_globs_fail_with_source_watchers_messages() {
    let src = monorepo();
    let staging = tempfile::tempdir().unwrap();
    let e = apply_copy(
        &parse_copy(&op("@s/nope", "@artifact/")).unwrap(),
        src.path(),
        staging.path(),
    )
    .unwrap_err();
    assert_eq!(e, "source 'nope' does not exist");
    let e = apply_copy(
        &parse_copy(&op("@s/nope/*", "@artifact/")).unwrap(),
        src.path(),
        staging.path(),
    )
    .unwrap_err();
    assert_eq!(e, "no files match pattern 'nope/*' in source 's'");
}

#[test]
fn globs_follow_path_match_and_doublestar() {
    for (pat, path, ds, want) in [
        ("apps/*", "apps/a", false, true),
        ("apps/*", "apps/a/b", false, false),
        ("apps/**", "apps/a/b", false, false),
        ("apps/**", "apps/a/b", true, true),
        ("**/*.tgz", "c.tgz", true, true),
        ("**/*.tgz", "x/y/c.tgz", true, true),
        ("a?c", "abc", false, true),
        ("[a-c]x", "bx", false, true),
        ("[^a-c]x", "bx", false, false),
        ("[!a-c]x", "dx", false, true),
        ("*.md", "README.md", false, true),
        ("*.md", "d/README.md", true, false),
    ] {
        assert_eq!(glob_match(pat, path, ds), want, "{pat} {path} {ds}");
    }
}

fn observed(rev: &str, digest: &str, origin: Option<&str>) -> ObservedSource {
    ObservedSource {
        digest: digest.into(),
        revision: rev.into(),
        origin_revision: origin.map(String::from),
        url: "http://s/x.tar.gz".into(),
    }
}

#[test]
fn observed_sources_digest_is_source_watchers_hash() {
    let one = BTreeMap::from([("a".to_string(), observed("main@sha1:1", "sha256:d", None))]);
    // sha256 of exactly "a=[digest=sha256:d,revision=main@sha1:1,url=http://s/x.tar.gz]"
    let want = format!(
        "sha256:{:x}",
        Sha256::digest(b"a=[digest=sha256:d,revision=main@sha1:1,url=http://s/x.tar.gz]")
    );
    assert_eq!(observed_sources_digest(&one), want);
    let mut two = one.clone();
    two.insert("b".into(), observed("main@sha1:2", "sha256:e", None));
    assert_ne!(observed_sources_digest(&two), want);
    // the origin revision is not part of the hash (as upstream)
    let mut three = one.clone();
    three.get_mut("a").unwrap().origin_revision = Some("x".into());
    assert_eq!(observed_sources_digest(&three), want);
}

#[test]
fn revisions_default_to_the_content_digest() {
    let sources = BTreeMap::from([
        (
            "git".to_string(),
            observed("main@sha1:abc", "sha256:1", None),
        ),
        (
            "oci".to_string(),
            observed("v1@sha256:f", "sha256:2", Some("main@sha1:def")),
        ),
    ]);
    for (rev, origin, want_rev, want_origin) in [
        (None, None, "latest@sha256:aa", None),
        (Some("@git"), None, "main@sha1:abc", None),
        (
            None,
            Some("@git"),
            "latest@sha256:aa",
            Some("main@sha1:abc"),
        ),
        (
            None,
            Some("@oci"),
            "latest@sha256:aa",
            Some("main@sha1:def"),
        ),
    ] {
        let (r, m) = revisions("sha256:aa", rev, origin, &sources);
        assert_eq!(r, want_rev);
        assert_eq!(
            m.and_then(|m| m.get(ORIGIN_REVISION_KEY).cloned())
                .as_deref(),
            want_origin
        );
    }
}

#[test]
fn contents_hash_moves_only_with_the_content() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), &[("x/deploy.yaml", "a"), ("y", "b")]);
    let h1 = contents_hash(a.path(), "app").unwrap();
    assert!(h1.parse::<u32>().is_ok(), "{h1}");
    let b = tempfile::tempdir().unwrap();
    write(b.path(), &[("y", "b"), ("x/deploy.yaml", "a")]);
    assert_eq!(contents_hash(b.path(), "app").unwrap(), h1);
    assert_ne!(contents_hash(b.path(), "other").unwrap(), h1);
    write(b.path(), &[("y", "c")]);
    assert_ne!(contents_hash(b.path(), "app").unwrap(), h1);
    // Adler-32 of "Wikipedia" is 0x11E60398 (the algorithm's usual check value)
    assert_eq!(adler32(&b"Wikipedia"[..]).unwrap(), 0x11E6_0398);
}

fn generator(
    sources: &[(&str, Option<&str>)],
    artifacts: Vec<OutputArtifact>,
) -> ArtifactGenerator {
    let mut g = ArtifactGenerator::new(
        "gen",
        ArtifactGeneratorSpec {
            sources: sources
                .iter()
                .map(|(a, ns)| GeneratorSourceReference {
                    alias: a.to_string(),
                    name: "repo".into(),
                    namespace: ns.map(String::from),
                    kind: "GitRepository".into(),
                })
                .collect(),
            artifacts,
            ..Default::default()
        },
    );
    g.metadata.namespace = Some("ns".into());
    g
}

fn artifact(name: &str, from: &str) -> OutputArtifact {
    OutputArtifact {
        name: name.into(),
        copy: vec![op(from, "@artifact/")],
        ..Default::default()
    }
}

#[test]
fn validation_stalls_on_specs_that_cannot_work() {
    let ok = generator(&[("s", None)], vec![artifact("a", "@s/apps/**")]);
    assert_eq!(validate(&ok, false), Ok(()));
    let mut with_rev = artifact("a", "@s/x");
    with_rev.revision = Some("@t".into());
    let cases = [
        (
            generator(&[("s", None), ("s", None)], vec![artifact("a", "@s/x")]),
            "duplicate source alias 's' found",
        ),
        (
            generator(
                &[("s", None)],
                vec![artifact("a", "@s/x"), artifact("a", "@s/y")],
            ),
            "duplicate artifact name 'a' found",
        ),
        (
            generator(&[("s", None)], vec![artifact("A_b", "@s/x")]),
            "artifact name \"A_b\" is not a valid Kubernetes object name",
        ),
        (
            generator(&[("s", None)], vec![with_rev]),
            "artifact a revision source alias 't' not found",
        ),
        (
            generator(&[("s", None)], vec![artifact("a", "@t/x")]),
            "artifact a: copy source alias 't' not found",
        ),
        (
            generator(&[("s", None)], vec![artifact("a", "@s/../x")]),
            "artifact a: invalid copy source '@s/../x': the path must not contain '..'",
        ),
    ];
    for (g, want) in cases {
        let (reason, msg) = validate(&g, false).unwrap_err();
        assert_eq!(reason, VALIDATION_FAILED);
        assert!(msg.starts_with(want), "{msg}");
    }
    let cross = generator(&[("s", Some("other"))], vec![artifact("a", "@s/x")]);
    assert_eq!(validate(&cross, false), Ok(()));
    assert_eq!(
        validate(&cross, true),
        Err((
            ACCESS_DENIED,
            "cross-namespace reference to source GitRepository/other/repo is not allowed".into()
        ))
    );
}

#[test]
fn orphans_are_inventory_entries_no_longer_generated() {
    let r = |n: &str, d: &str| ExternalArtifactReference {
        name: n.into(),
        namespace: "ns".into(),
        digest: d.into(),
        filename: "1.tar.gz".into(),
    };
    let got = orphans(&[r("a", "1"), r("b", "1")], &[r("a", "2")]);
    assert_eq!(got, vec![r("b", "1")]);
}

fn now(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn cond<'a>(st: &'a ArtifactGeneratorStatus, t: &str) -> Option<(&'a str, &'a str, &'a str)> {
    conditions::get(&st.conditions, t)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

#[test]
fn status_follows_source_watchers_condition_flow() {
    let t = now("2026-12-05T10:00:00Z");
    let mut st = ArtifactGeneratorStatus::default();
    apply_step(&mut st, Step::Progressing, 1, None, &t);
    assert_eq!(
        cond(&st, "Reconciling"),
        Some(("True", "Progressing", "Reconciliation in progress"))
    );
    assert_eq!(
        cond(&st, "Ready"),
        Some(("Unknown", "Progressing", "Reconciliation in progress"))
    );
    // a failure after progressing: Reconciling turns ProgressingWithRetry
    apply_step(
        &mut st,
        Step::Failed {
            reason: "SourceFetchFailed".into(),
            message: "get sources failed: x".into(),
        },
        1,
        Some("tok"),
        &t,
    );
    assert_eq!(cond(&st, "Reconciling").unwrap().1, "ProgressingWithRetry");
    assert_eq!(
        cond(&st, "Ready"),
        Some(("False", "SourceFetchFailed", "get sources failed: x"))
    );
    assert_eq!(st.last_handled_reconcile_at.as_deref(), Some("tok"));
    let inv = vec![ExternalArtifactReference {
        name: "a".into(),
        namespace: "ns".into(),
        digest: "sha256:1".into(),
        filename: "1.tar.gz".into(),
    }];
    apply_step(
        &mut st,
        Step::Succeeded {
            inventory: inv.clone(),
            sources_digest: "sha256:s".into(),
        },
        1,
        None,
        &t,
    );
    assert_eq!(cond(&st, "Reconciling"), None);
    assert_eq!(
        cond(&st, "Ready"),
        Some((
            "True",
            "Succeeded",
            "reconciliation succeeded, generated 1 artifact(s)"
        ))
    );
    assert_eq!(st.inventory, inv);
    // a bad spec stalls; a later success clears Stalled
    apply_step(
        &mut st,
        Step::Stalled {
            reason: "ValidationFailed".into(),
            message: "m".into(),
        },
        2,
        None,
        &t,
    );
    assert_eq!(
        cond(&st, "Stalled"),
        Some(("True", "ValidationFailed", "m"))
    );
    assert_eq!(cond(&st, "Ready").unwrap().0, "False");
    apply_step(&mut st, Step::Progressing, 3, None, &t);
    assert_eq!(cond(&st, "Stalled"), None);
}

#[test]
fn drift_is_detected_in_source_watchers_order() {
    let t = now("2026-12-05T10:00:00Z");
    let mut g = generator(&[("s", None)], vec![artifact("a", "@s/apps/**")]);
    g.metadata.generation = Some(1);
    assert_eq!(drift(&g, "d", |_| true, |_| true), Some("NotReady"));
    let mut st = ArtifactGeneratorStatus::default();
    let inv = vec![ExternalArtifactReference {
        name: "a".into(),
        namespace: "ns".into(),
        digest: "sha256:1".into(),
        filename: "1.tar.gz".into(),
    }];
    apply_step(
        &mut st,
        Step::Succeeded {
            inventory: inv,
            sources_digest: "d".into(),
        },
        1,
        None,
        &t,
    );
    g.status = Some(st);
    assert_eq!(drift(&g, "d", |_| true, |_| true), None);
    assert_eq!(drift(&g, "e", |_| true, |_| true), Some("SourcesChanged"));
    assert_eq!(drift(&g, "d", |_| false, |_| true), Some("ArtifactMissing"));
    assert_eq!(
        drift(&g, "d", |_| true, |_| false),
        Some("ExternalArtifactsChanged")
    );
    g.spec.artifacts.push(artifact("b", "@s/x"));
    assert_eq!(drift(&g, "d", |_| true, |_| true), Some("ArtifactsChanged"));
    g.metadata.generation = Some(2);
    assert_eq!(
        drift(&g, "d", |_| true, |_| true),
        Some("GenerationChanged")
    );
}

#[test]
fn the_changed_event_lists_only_new_digests() {
    let r = |n: &str, d: &str| ExternalArtifactReference {
        name: n.into(),
        namespace: "ns".into(),
        digest: d.into(),
        filename: "f".into(),
    };
    assert_eq!(
        changed_message(&[r("a", "1"), r("b", "1")], &[r("a", "1"), r("b", "1")]),
        None
    );
    assert_eq!(
        changed_message(&[r("a", "1"), r("b", "1")], &[r("a", "1"), r("b", "2")]).as_deref(),
        Some("external artifacts reconciled: ns/b (2)")
    );
}

/// The point of the feature: a commit touching `apps/b` and the root leaves the artifact of
/// `apps/a` byte for byte the same (file name, digest, `latest@<digest>` revision), while `b`'s
/// moves; staged, hashed and archived as the controller does, into a real [`Storage`].
#[test]
fn a_commit_elsewhere_leaves_the_artifact_unchanged() {
    use crate::source::storage::Storage;
    let root = tempfile::tempdir().unwrap();
    let storage = Storage::new(root.path(), "localhost", Default::default());
    let rules = crate::source::ignore::IgnoreRules::from_patterns(None).unwrap();
    let build = |src: &Path, name: &str, from: &str| {
        let staging = tempfile::tempdir().unwrap();
        apply_copy(
            &parse_copy(&op(from, "@artifact/")).unwrap(),
            src,
            staging.path(),
        )
        .unwrap();
        let hash = contents_hash(staging.path(), name).unwrap();
        let stored = storage
            .archive_dir(
                EXTERNAL_ARTIFACT_KIND,
                "ns",
                name,
                &format!("{hash}.tar.gz"),
                staging.path(),
                &rules,
            )
            .unwrap();
        let (rev, _) = revisions(&stored.digest, None, None, &BTreeMap::new());
        (stored.path, stored.digest, rev)
    };
    let v1 = monorepo();
    let a1 = build(v1.path(), "app-a", "@s/apps/a/**");
    let b1 = build(v1.path(), "app-b", "@s/apps/b/**");
    assert!(a1.0.starts_with("externalartifact/ns/app-a/"), "{}", a1.0);
    assert_eq!(a1.2, format!("latest@{}", a1.1));
    // a later checkout: apps/b and the root changed, apps/a's files rewritten identically
    let v2 = monorepo();
    write(
        v2.path(),
        &[
            ("apps/b/deploy.yaml", "b2"),
            ("top.yaml", "t2"),
            ("apps/a/deploy.yaml", "a"),
        ],
    );
    assert_eq!(build(v2.path(), "app-a", "@s/apps/a/**"), a1);
    let b2 = build(v2.path(), "app-b", "@s/apps/b/**");
    assert_ne!(b2.1, b1.1);
    assert_ne!(b2.2, b1.2);
    assert_ne!(b2.0, b1.0);
}
