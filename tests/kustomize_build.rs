//! `kustomize::build` with the real `kustomize` CLI (v5.8.2, built by `e2e/cluster build`;
//! `$PENNANT_KUSTOMIZE` or the cache) on a fleet layout (`tests/fixtures/kustomize/fleet`:
//! `apps/base` + `apps/overlays/production|staging` with replica and resource patches,
//! `infrastructure/configs` without a kustomization.yaml), then postBuild substitution, as a
//! Kustomization's reconcile chains them. Each build runs on a scratch copy of the tree.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pennant::api::kustomization::KustomizationSpec;
use pennant::kustomize::build::{BuildError, BuildOptions, build};
use pennant::kustomize::substitute::{Options, merge_variables, substitute_object};
use serde_json::{Value, json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A scratch copy of the fleet tree.
fn artifact() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fleet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize/fleet");
    copy_dir(&fleet, dir.path());
    dir
}

fn options() -> BuildOptions {
    let kustomize = PathBuf::from(support::kustomize());
    let version = std::process::Command::new(&kustomize)
        .arg("version")
        .output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "no kustomize at {} (run `e2e/cluster build`, or set PENNANT_KUSTOMIZE): {version:?}",
        kustomize.display()
    );
    BuildOptions {
        kustomize,
        allow_remote_bases: false,
    }
}

fn spec(v: Value) -> KustomizationSpec {
    let mut base = json!({"interval": "10m", "prune": true,
                          "sourceRef": {"kind": "GitRepository", "name": "fleet"}});
    base.as_object_mut()
        .unwrap()
        .extend(v.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {objects:#?}"))
}

fn ids(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn overlays_carry_their_patches() {
    let opts = options();
    let a = artifact();
    let prod = build(
        a.path(),
        &spec(json!({"path": "./apps/overlays/production"})),
        &opts,
    )
    .unwrap();
    assert_eq!(
        ids(&prod),
        [
            "Namespace//podinfo",
            "ConfigMap/podinfo/region",
            "Service/podinfo/podinfo",
            "Deployment/podinfo/podinfo"
        ]
    );
    let d = find(&prod, "Deployment", "podinfo");
    assert_eq!(d["spec"]["replicas"], 3);
    let res = &d["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"], json!({"cpu": "2", "memory": "512Mi"}));
    assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "64Mi"}));

    let a = artifact();
    let staging = build(
        a.path(),
        &spec(json!({"path": "apps/overlays/staging"})),
        &opts,
    )
    .unwrap();
    let d = find(&staging, "Deployment", "podinfo");
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].is_null());
}

/// targetNamespace, namePrefix/nameSuffix, patches and images from the Kustomization's spec.
#[test]
fn spec_fields_transform_the_build_as_flux() {
    let a = artifact();
    let s = spec(json!({
        "path": "./apps/overlays/production",
        "targetNamespace": "podinfo-prod",
        "namePrefix": "eu-",
        "nameSuffix": "-v2",
        "images": [{"name": "ghcr.io/stefanprodan/podinfo", "newTag": "6.7.1"}],
        "patches": [{
            "patch": "- op: add\n  path: /metadata/annotations\n  value: {tier: frontend}\n",
            "target": {"kind": "Service"},
        }],
    }));
    let objects = build(a.path(), &s, &options()).unwrap();
    let d = find(&objects, "Deployment", "eu-podinfo-v2");
    assert_eq!(d["metadata"]["namespace"], "podinfo-prod");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.7.1"
    );
    assert_eq!(
        d["spec"]["replicas"], 3,
        "the overlay's patch still applies"
    );
    let svc = find(&objects, "Service", "eu-podinfo-v2");
    assert_eq!(svc["metadata"]["annotations"], json!({"tier": "frontend"}));
    // kustomize's namespace transformer renames the Namespace object too (flux2 #3949)
    let ns: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .collect();
    assert_eq!(ns.len(), 1);
    assert!(
        ns[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .contains("podinfo-prod"),
        "{}",
        ns[0]
    );
}

#[test]
fn a_directory_without_kustomization_yaml_is_generated() {
    let a = artifact();
    let objects = build(
        a.path(),
        &spec(json!({"path": "./infrastructure/configs"})),
        &options(),
    )
    .unwrap();
    assert_eq!(
        ids(&objects),
        ["Namespace//infra", "ResourceQuota/infra/compute"]
    );
}

#[test]
fn postbuild_substitutes_the_built_objects() {
    let a = artifact();
    let objects = build(
        a.path(),
        &spec(json!({"path": "./apps/overlays/production"})),
        &options(),
    )
    .unwrap();
    let from_cm = BTreeMap::from([("CLUSTER_REGION".to_string(), "eu-central-1".to_string())]);
    let vars = merge_variables([&from_cm], &BTreeMap::new());
    let out: Vec<Value> = objects
        .iter()
        .map(|o| substitute_object(o, &vars, Options::default()).unwrap())
        .collect();
    let cm = find(&out, "ConfigMap", "region");
    assert_eq!(
        cm["data"],
        json!({"region": "eu-central-1", "replicas": 1, "dashboard": "${__interval}"})
    );
    // strict mode: the same tree without CLUSTER_REGION fails naming the object and variable
    let other = BTreeMap::from([("OTHER".to_string(), "x".to_string())]);
    let err = objects
        .iter()
        .map(|o| substitute_object(o, &other, Options::default()))
        .find_map(Result::err)
        .unwrap();
    assert_eq!(
        err.to_string(),
        "post build failed for 'ConfigMap.v1.[noGrp]/region': envsubst error: variable \
         substitution failed: variable not set (strict mode): \"CLUSTER_REGION\""
    );
}

#[test]
fn bad_trees_fail_with_a_clear_error() {
    let opts = options();
    let a = artifact();
    let root = a.path();
    assert_eq!(
        build(root, &spec(json!({"path": "../.."})), &opts),
        Err(BuildError::PathEscapes("../..".into()))
    );
    assert_eq!(
        build(root, &spec(json!({"path": "./clusters/missing"})), &opts),
        Err(BuildError::PathNotFound("./clusters/missing".into()))
    );

    let prod = root.join("apps/overlays/production/kustomization.yaml");
    std::fs::write(
        &prod,
        "resources:\n- ../../base\n- https://raw.githubusercontent.com/fluxcd/flux2/main/x.yaml\n",
    )
    .unwrap();
    assert_eq!(
        build(
            root,
            &spec(json!({"path": "apps/overlays/production"})),
            &opts
        ),
        Err(BuildError::RemoteReference {
            file: "apps/overlays/production/kustomization.yaml".into(),
            reference: "https://raw.githubusercontent.com/fluxcd/flux2/main/x.yaml".into(),
        })
    );

    // kustomize's own error, with the scratch directory removed from the message
    std::fs::write(&prod, "resources:\n- ../../base\n- missing.yaml\n").unwrap();
    let err = build(
        root,
        &spec(json!({"path": "apps/overlays/production"})),
        &opts,
    )
    .unwrap_err();
    let BuildError::Kustomize(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("missing.yaml"), "{msg}");
    let scratch = root.canonicalize().unwrap().display().to_string();
    assert!(!msg.contains(&scratch), "{msg}");

    let cfg = root.join("infrastructure/configs/broken.yaml");
    for text in ["kind: [ConfigMap\n", "a: [unclosed\nb: : x\n"] {
        std::fs::write(&cfg, text).unwrap();
        let err = build(
            root,
            &spec(json!({"path": "infrastructure/configs"})),
            &opts,
        )
        .unwrap_err();
        assert!(
            matches!(&err, BuildError::BadManifest { file, .. } if file == "infrastructure/configs/broken.yaml"),
            "{err:?}"
        );
        // one line: the parser's snippet would split Ready's message and `flux get ks`
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("line "), "where in the file: {msg}");
    }
}
