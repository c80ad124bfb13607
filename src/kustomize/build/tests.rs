//! The parts of the build that need no `kustomize` binary: path resolution, the generated
//! kustomization, the spec fields written into it, the sandbox. The full build with the real
//! CLI is `tests/kustomize_build.rs`.

use super::*;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";

#[test]
fn spec_path_stays_inside_the_artifact() {
    let t = tree(&[("apps/base/cm.yaml", CM), ("apps/x.txt", "")]);
    let root = t.path().canonicalize().unwrap();
    for (path, want) in [
        ("", Ok(root.clone())),
        ("./", Ok(root.clone())),
        ("./apps/base", Ok(root.join("apps/base"))),
        ("apps/../apps/base/", Ok(root.join("apps/base"))),
        ("/apps", Ok(root.join("apps"))),
        ("../..", Err(BuildError::PathEscapes("../..".into()))),
        (
            "apps/../../x",
            Err(BuildError::PathEscapes("apps/../../x".into())),
        ),
        (
            "./missing",
            Err(BuildError::PathNotFound("./missing".into())),
        ),
        (
            "apps/x.txt",
            Err(BuildError::PathNotFound("apps/x.txt".into())),
        ),
    ] {
        assert_eq!(resolve_path(&root, path), want, "{path:?}");
    }
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("apps/escape")).unwrap();
    assert_eq!(
        resolve_path(&root, "apps/escape"),
        Err(BuildError::PathEscapes("apps/escape".into()))
    );
    assert_eq!(
        check_symlinks(&root, &root),
        Err(BuildError::SymlinkEscapes {
            file: "apps/escape".into()
        })
    );
    fs::remove_file(root.join("apps/escape")).unwrap();
    std::os::unix::fs::symlink(root.join("apps/base"), root.join("apps/inside")).unwrap();
    assert_eq!(check_symlinks(&root, &root), Ok(()));
}

#[test]
fn generated_kustomization_lists_manifests_as_flux() {
    let t = tree(&[
        ("deploy/b.yaml", CM),
        ("deploy/a.yml", CM),
        ("deploy/notes.md", "# not a manifest"),
        (
            "deploy/data.json",
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\"}",
        ),
        ("deploy/values.yaml", "replicas: 3\n"),
        (
            "deploy/nested/deep/svc.yaml",
            "---\n# comment\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n",
        ),
        ("deploy/overlay/kustomization.yaml", "resources: []\n"),
        ("deploy/overlay/skipped.yaml", CM),
    ]);
    let root = t.path().canonicalize().unwrap();
    let k = generate_kustomization(&root, &root.join("deploy")).unwrap();
    assert_eq!(
        k,
        json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["./a.yml", "./b.yaml", "./nested/deep/svc.yaml", "./overlay"],
        })
    );
    fs::write(root.join("deploy/broken.yaml"), "a: [unclosed\n").unwrap();
    let err = generate_kustomization(&root, &root.join("deploy")).unwrap_err();
    assert!(
        matches!(&err, BuildError::BadManifest { file, .. } if file == "deploy/broken.yaml"),
        "{err}"
    );
}

fn spec(v: Value) -> KustomizationSpec {
    let mut base = json!({"interval": "1m", "prune": true,
                          "sourceRef": {"kind": "GitRepository", "name": "repo"}});
    base.as_object_mut()
        .unwrap()
        .extend(v.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

#[test]
fn spec_fields_are_written_into_the_kustomization_as_flux() {
    let mut kus = json!({
        "resources": ["../base"],
        "namespace": "from-file",
        "patches": [{"path": "replicas.yaml"}],
        "images": [{"name": "podinfo", "newTag": "6.0.0"}, {"name": "redis", "digest": "sha256:aa"}],
        "components": ["../components/a"],
    });
    let s = spec(json!({
        "targetNamespace": "production",
        "namePrefix": "prod-",
        "patches": [
            {"patch": "- op: replace\n  path: /spec/replicas\n  value: 3\n",
             "target": {"kind": "Deployment", "name": "web"}},
            {"patch": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"},
        ],
        "images": [
            {"name": "podinfo", "newName": "ghcr.io/stefanprodan/podinfo"},
            {"name": "redis", "newTag": "7"},
            {"name": "nginx", "newTag": "1.27", "digest": "sha256:bb"},
        ],
        "components": ["../components/b", "../components/missing"],
        "ignoreMissingComponents": true,
        "buildMetadata": ["originAnnotations"],
    }));
    apply_spec(&mut kus, &s, |c| !c.ends_with("missing")).unwrap();
    assert_eq!(
        kus,
        json!({
            "resources": ["../base"],
            "namespace": "production",
            "namePrefix": "prod-",
            "patches": [
                {"path": "replicas.yaml"},
                {"patch": "- op: replace\n  path: /spec/replicas\n  value: 3\n",
                 "target": {"kind": "Deployment", "name": "web"}},
                {"patch": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"},
            ],
            "images": [
                // newName added, the tag kept
                {"name": "podinfo", "newTag": "6.0.0", "newName": "ghcr.io/stefanprodan/podinfo"},
                // a new tag replaces tag and digest together
                {"name": "redis", "newTag": "7"},
                {"name": "nginx", "newTag": "1.27", "digest": "sha256:bb"},
            ],
            "components": ["../components/a", "../components/b"],
            "buildMetadata": ["originAnnotations"],
        })
    );
    for bad in [
        "https://github.com/x/y//c",
        "git::https://x",
        "/abs/c",
        "file:///abs",
    ] {
        let s = spec(json!({"components": [bad]}));
        assert_eq!(
            apply_spec(&mut json!({}), &s, |_| true),
            Err(BuildError::ComponentNotLocal(bad.into())),
            "{bad}"
        );
    }
    // without ignoreMissingComponents a missing component is kept (kustomize reports it)
    let s = spec(json!({"components": ["../gone"]}));
    let mut k = json!({});
    apply_spec(&mut k, &s, |_| false).unwrap();
    assert_eq!(k["components"], json!(["../gone"]));
}

#[test]
fn sandbox_refuses_remote_and_escaping_references() {
    let t = tree(&[
        ("apps/base/kustomization.yaml", "resources: [cm.yaml]\n"),
        ("apps/base/cm.yaml", CM),
        (
            "apps/prod/kustomization.yaml",
            "resources: [../base]\npatches:\n- path: ../shared/p.yaml\n",
        ),
        ("apps/shared/p.yaml", CM),
        (
            "unrelated/kustomization.yaml",
            "resources: [https://example.com/x.yaml]\n",
        ),
    ]);
    let root = t.path().canonicalize().unwrap();
    let prod = root.join("apps/prod");
    // a patch elsewhere in the artifact is fine (Flux allows it); an unrelated tree is not read
    assert_eq!(check_sandbox(&root, &prod, false), Ok(()));
    let cases = [
        (
            "resources:\n- ../base\n- https://raw.githubusercontent.com/x/y/main/z.yaml\n",
            BuildError::RemoteReference {
                file: "apps/prod/kustomization.yaml".into(),
                reference: "https://raw.githubusercontent.com/x/y/main/z.yaml".into(),
            },
        ),
        (
            "resources:\n- github.com/fluxcd/flux2/manifests/install?ref=v2.9.5\n",
            BuildError::RemoteReference {
                file: "apps/prod/kustomization.yaml".into(),
                reference: "github.com/fluxcd/flux2/manifests/install?ref=v2.9.5".into(),
            },
        ),
        (
            "resources:\n- ../../../etc\n",
            BuildError::ReferenceEscapes {
                file: "apps/prod/kustomization.yaml".into(),
                reference: "../../../etc".into(),
            },
        ),
        (
            "configMapGenerator:\n- name: x\n  files:\n  - passwd=../../../../../../etc/passwd\n",
            BuildError::ReferenceEscapes {
                file: "apps/prod/kustomization.yaml".into(),
                reference: "../../../../../../etc/passwd".into(),
            },
        ),
        (
            "helmCharts:\n- name: podinfo\n",
            BuildError::HelmCharts {
                file: "apps/prod/kustomization.yaml".into(),
            },
        ),
    ];
    for (text, want) in cases {
        fs::write(prod.join("kustomization.yaml"), text).unwrap();
        assert_eq!(check_sandbox(&root, &prod, false), Err(want), "{text}");
    }
    // a remote reference in a base reached from the path is found too
    fs::write(prod.join("kustomization.yaml"), "resources: [../base]\n").unwrap();
    fs::write(
        root.join("apps/base/kustomization.yaml"),
        "resources:\n- git::https://example.com/repo//base\n",
    )
    .unwrap();
    assert!(matches!(
        check_sandbox(&root, &prod, false),
        Err(BuildError::RemoteReference { file, .. }) if file == "apps/base/kustomization.yaml"
    ));
    assert_eq!(check_sandbox(&root, &prod, true), Ok(()));
}

#[test]
fn referenced_paths_cover_kustomize_fields() {
    let kus: Value = serde_saphyr::from_str(
        "resources: [a.yaml, ../b]\ncomponents: [../c]\ncrds: [crd.yaml]\n\
         patches:\n- path: p.yaml\n- patch: |\n    inline\n\
         patchesStrategicMerge:\n- psm.yaml\n- |\n  apiVersion: v1\n  kind: X\n\
         patchesJson6902:\n- path: j.yaml\n\
         configMapGenerator:\n- name: x\n  files: [k=f1.txt, f2.txt]\n  envs: [e.env]\n\
         secretGenerator:\n- name: s\n  env: s.env\n\
         replacements:\n- path: r.yaml\n\
         openapi:\n  path: schema.json\n\
         transformers: [t.yaml]\n",
    )
    .unwrap();
    let got: BTreeSet<String> = referenced_paths(&kus).into_iter().collect();
    let want: BTreeSet<String> = [
        "a.yaml",
        "../b",
        "../c",
        "crd.yaml",
        "p.yaml",
        "psm.yaml",
        "j.yaml",
        "f1.txt",
        "f2.txt",
        "e.env",
        "s.env",
        "r.yaml",
        "schema.json",
        "t.yaml",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
}

#[test]
fn common_metadata_is_added_to_every_object() {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"team": "old", "keep": "x"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"},
               "spec": {"selector": {"matchLabels": {"app": "b"}}}}),
    ];
    let common = CommonMetadata {
        labels: [("team".to_string(), "platform".to_string())].into(),
        annotations: [("owner".to_string(), "sre".to_string())].into(),
    };
    set_common_metadata(&mut objects, &common);
    assert_eq!(
        objects[0]["metadata"]["labels"],
        json!({"team": "platform", "keep": "x"})
    );
    assert_eq!(
        objects[1]["metadata"]["labels"],
        json!({"team": "platform"})
    );
    assert_eq!(
        objects[1]["metadata"]["annotations"],
        json!({"owner": "sre"})
    );
    assert_eq!(
        objects[1]["spec"]["selector"],
        json!({"matchLabels": {"app": "b"}})
    );
}

/// The user's kustomization file keeps its other lines verbatim; images keep their tags as
/// written (`1.10` is not the number 1.1).
#[test]
fn the_users_kustomization_is_edited_in_place() {
    let t = tree(&[
        (
            "app/kustomization.yaml",
            "# fleet app\nresources:\n- cm.yaml\nnamespace: old\nimages:\n- name: podinfo\n  newTag: 1.10\nreplicas:\n- name: web\n  count: 3\nconfigMapGenerator:\n- name: v\n  literals:\n  - version=1.10\n",
        ),
        ("app/cm.yaml", CM),
    ]);
    let root = t.path().canonicalize().unwrap();
    let s = spec(json!({"path": "app", "targetNamespace": "prod",
                        "images": [{"name": "podinfo", "newName": "ghcr.io/x/podinfo"}]}));
    // no kustomize binary needed to see the file: the build fails after writing it
    let opts = BuildOptions {
        kustomize: PathBuf::from("/nonexistent/kustomize"),
        allow_remote_bases: false,
    };
    assert!(matches!(
        build(&root, &s, &opts),
        Err(BuildError::Kustomize(_))
    ));
    let text = fs::read_to_string(root.join("app/kustomization.yaml")).unwrap();
    assert!(text.starts_with("# fleet app\nresources:\n- cm.yaml\nreplicas:\n- name: web\n  count: 3\nconfigMapGenerator:\n- name: v\n  literals:\n  - version=1.10\n"), "{text}");
    let kus: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(kus["namespace"], "prod");
    assert_eq!(
        kus["images"],
        json!([{"name": "podinfo", "newTag": "1.10", "newName": "ghcr.io/x/podinfo"}])
    );
    assert_eq!(kus["replicas"][0]["count"], 3);
}

#[test]
fn multi_line_errors_become_one_line_keeping_the_file() {
    let m = "accumulating resources: accumulation err='accumulating resources from 'bad.yaml':\n  yaml: line 3: mapping values are not allowed in this context'\n\n";
    let got = one_line(m);
    assert!(!got.contains('\n'), "{got}");
    assert_eq!(
        got,
        "accumulating resources: accumulation err='accumulating resources from 'bad.yaml':; yaml: line 3: mapping values are not allowed in this context'"
    );
}
