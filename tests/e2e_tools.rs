//! The real parts the GitOps tests use work together, before pennant is put between them: the
//! `flux` CLI and the OCI registry that `e2e/cluster up` starts (push, then pull back the same
//! files, in Flux's artifact format), the Helm repository of `tests/support/helmrepo.rs` (read by
//! the real `helm` through basic auth), and `kustomize`, `sops` and `age` as built by
//! `e2e/cluster build`. A failure here is a broken setup, not a pennant bug.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::gitserver::files;
use support::helmrepo::{HelmRepo, helm_in};
use support::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pennant-e2e-tools-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The version `e2e/cluster` builds (its `FLUX_V` default), so a stale binary is noticed.
fn flux_version_in_script() -> String {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster"))
        .expect("e2e/cluster");
    let line = script
        .lines()
        .find(|l| l.starts_with("FLUX_V=${FLUX_VERSION:-"))
        .expect("FLUX_V line in e2e/cluster");
    line["FLUX_V=${FLUX_VERSION:-".len()..]
        .split('}')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn flux_cli_reports_the_version_built() {
    let out = run(Command::new(flux()).args(["version", "--client"]));
    let want = std::env::var("FLUX_VERSION").unwrap_or_else(|_| flux_version_in_script());
    assert_eq!(out.trim(), format!("flux: {want}"), "{}", flux());
}

#[tokio::test]
async fn flux_push_artifact_to_the_local_registry_then_pull_gives_the_same_files() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = scratch("oci");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("apps/podinfo")).unwrap();
    std::fs::write(
        src.join("kustomization.yaml"),
        "resources:\n- apps/podinfo/deploy.yaml\n",
    )
    .unwrap();
    std::fs::write(
        src.join("apps/podinfo/deploy.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo\n",
    )
    .unwrap();
    let repo = format!("e2e-tools/{}-{}", std::process::id(), free_port());
    let url = format!("oci://{}/{repo}:v1", registry_addr());
    let revision = "main@sha1:0123456789abcdef0123456789abcdef01234567";

    let pushed: Value = serde_json::from_str(&run(Command::new(flux()).args([
        "push",
        "artifact",
        &url,
        &format!("--path={}", src.display()),
        "--source=https://git.example.com/fleet.git",
        &format!("--revision={revision}"),
        "--insecure-registry",
        "--output=json",
    ])))
    .expect("flux push artifact -o json");
    let digest = pushed["digest"].as_str().unwrap_or_default().to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");

    // What the registry holds is Flux's artifact format, which OCIRepository reads.
    let manifest: Value = reqwest::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/v1", registry_addr()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("registry answers")
        .error_for_status()
        .expect("manifest pushed")
        .json()
        .await
        .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cncf.flux.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.cncf.flux.content.v1.tar+gzip"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.revision"],
        revision
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        "https://git.example.com/fleet.git"
    );

    let out = dir.join("pulled");
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new(flux()).args([
        "pull",
        "artifact",
        &url,
        &format!("--output={}", out.display()),
        "--insecure-registry",
    ]));
    let (want, got) = (files(&src), files(&out));
    assert_eq!(want.len(), 2);
    assert_eq!(got, want);

    // The tag resolves to the pushed digest (what OCIRepository's status.artifact.revision ends with).
    let by_digest = format!("oci://{}/{repo}@{digest}", registry_addr());
    let out2 = dir.join("by-digest");
    std::fs::create_dir_all(&out2).unwrap();
    run(Command::new(flux()).args([
        "pull",
        "artifact",
        &by_digest,
        &format!("--output={}", out2.display()),
        "--insecure-registry",
    ]));
    assert_eq!(files(&out2), want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn helm_reads_the_served_repository_through_basic_auth() {
    let repo = HelmRepo::start(Some(("chartuser", "s3cret:pw")));
    let tgz = repo.add_chart("demo", "1.2.3");
    assert!(tgz.ends_with("demo-1.2.3.tgz") && tgz.is_file(), "{tgz:?}");
    repo.add_chart("demo", "1.3.0");
    let index = std::fs::read_to_string(repo.dir.join("index.yaml")).unwrap();
    assert!(
        index.contains(&format!("{}/demo-1.3.0.tgz", repo.url)),
        "{index}"
    );
    let home = repo.work.join("client");

    // Wrong password: helm repo add fails on the 401 and nothing is added.
    let bad = helm_in(&home)
        .args(["repo", "add", "bad", &repo.url])
        .args(["--username", "chartuser", "--password", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    run(helm_in(&home)
        .args(["repo", "add", "e2e", &repo.url])
        .args(["--username", "chartuser", "--password", "s3cret:pw"]));
    let found: Value = serde_json::from_str(&run(helm_in(&home).args([
        "search",
        "repo",
        "e2e/demo",
        "--versions",
        "--output",
        "json",
    ])))
    .unwrap();
    let versions: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.3.0", "1.2.3"]);

    let pulled = home.join("pulled");
    run(helm_in(&home)
        .args([
            "pull",
            "e2e/demo",
            "--version",
            "1.2.3",
            "--untar",
            "--untardir",
        ])
        .arg(&pulled));
    let chart = std::fs::read_to_string(pulled.join("demo/Chart.yaml")).unwrap();
    assert!(chart.contains("version: 1.2.3"), "{chart}");
    let rendered = run(helm_in(&home)
        .args(["template", "r1"])
        .arg(pulled.join("demo")));
    assert!(rendered.contains("name: r1-demo"), "{rendered}");
    assert!(rendered.contains("chartVersion: \"1.2.3\""), "{rendered}");

    let log = repo.requests();
    assert!(log.contains(&"GET /index.yaml 401".to_string()), "{log:?}");
    assert!(log.contains(&"GET /index.yaml 200".to_string()), "{log:?}");
    assert!(
        log.contains(&"GET /demo-1.2.3.tgz 200".to_string()),
        "{log:?}"
    );
}

#[test]
fn helm_repository_without_auth_serves_anyone_and_nothing_outside_its_directory() {
    let repo = HelmRepo::start(None);
    repo.add_chart("plain", "0.1.0");
    let home = repo.work.join("client");
    run(helm_in(&home).args(["repo", "add", "plain", &repo.url]));
    let found = run(helm_in(&home).args(["search", "repo", "plain/plain"]));
    assert!(found.contains("0.1.0"), "{found}");
    let get = |path: &str| {
        run(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--path-as-is",
            &format!("{}{path}", repo.url),
        ]))
    };
    assert_eq!(get("/index.yaml"), "200");
    assert_eq!(get("/../work/charts/plain-0.1.0/Chart.yaml"), "404");
    assert_eq!(get("/missing-1.0.0.tgz"), "404");
}

#[test]
fn sops_encrypts_with_an_age_key_and_kustomize_builds() {
    let dir = scratch("sops");
    run(Command::new(age_keygen())
        .arg("-o")
        .arg(dir.join("key.agekey")));
    let key = std::fs::read_to_string(dir.join("key.agekey")).unwrap();
    let recipient = key
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_string();
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n";
    std::fs::write(dir.join("secret.yaml"), secret).unwrap();
    let encrypted = run(Command::new(sops())
        .args(["--disable-version-check", "--encrypt", "--age", &recipient])
        .args(["--encrypted-regex", "^(data|stringData)$"])
        .arg(dir.join("secret.yaml")));
    assert!(!encrypted.contains("hunter2"), "{encrypted}");
    assert!(encrypted.contains("ENC[AES256_GCM,"), "{encrypted}");
    assert!(encrypted.contains(&recipient), "{encrypted}");
    std::fs::write(dir.join("secret.enc.yaml"), &encrypted).unwrap();
    let decrypted = run(Command::new(sops())
        .env("SOPS_AGE_KEY_FILE", dir.join("key.agekey"))
        .args(["--disable-version-check", "--decrypt"])
        .arg(dir.join("secret.enc.yaml")));
    assert!(decrypted.contains("password: hunter2"), "{decrypted}");

    // age alone round-trips too (what sops' age key type is made of).
    std::fs::write(dir.join("plain.txt"), "s3cret").unwrap();
    run(Command::new(age())
        .args(["-r", &recipient, "-o"])
        .arg(dir.join("plain.age"))
        .arg(dir.join("plain.txt")));
    let back = run(Command::new(age())
        .arg("-d")
        .arg("-i")
        .arg(dir.join("key.agekey"))
        .arg(dir.join("plain.age")));
    assert_eq!(back, "s3cret");

    let kdir = dir.join("overlay");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(
        kdir.join("kustomization.yaml"),
        "namePrefix: prod-\nresources:\n- cm.yaml\n",
    )
    .unwrap();
    std::fs::write(
        kdir.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  k: v\n",
    )
    .unwrap();
    let built = run(Command::new(kustomize()).arg("build").arg(&kdir));
    assert!(built.contains("name: prod-app"), "{built}");
    let _ = std::fs::remove_dir_all(&dir);
}
