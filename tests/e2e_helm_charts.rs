//! The chart factory of tests/support/charts.rs, proved knob by knob with the real `helm`: what
//! `helm template` renders, that charts published to the test Helm repository and pushed to the
//! OCI registry are pullable, and (on the local cluster, kwok nodes) that hook Jobs succeed or
//! fail as asked and pods can be kept un-Ready.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use support::charts::{ChartSpec, Hook, RENDER_FAILURE_MESSAGE, helm_template};
use support::helmrepo::{HelmRepo, helm_in};
use support::{TestNs, client, kubeconfig_path, registry_addr, run};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pennant-charts-")
        .tempdir()
        .unwrap()
}

fn docs_of_kind(manifest: &str, kind: &str) -> Vec<serde_json::Value> {
    support::yaml_docs(manifest)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn chart_knobs_render_as_asked() {
    let tmp = scratch();
    let work = tmp.path();
    let plain = ChartSpec::new("app", "1.2.3")
        .app_version("9.9.9")
        .image("registry.example/app:v7")
        .replicas(3)
        .message("hi there");
    let dir = plain.write(&work.join("src"));
    let out = helm_template(work, dir.to_str().unwrap(), &[]).unwrap();
    let deploy = &docs_of_kind(&out, "Deployment")[0];
    assert_eq!(deploy["metadata"]["name"], "rel");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/app:v7"
    );
    assert_eq!(
        deploy["metadata"]["labels"]["app.kubernetes.io/version"],
        "9.9.9"
    );
    assert!(
        deploy["spec"]["template"]["metadata"]["annotations"].is_null(),
        "no never-ready annotation by default"
    );
    let cm = &docs_of_kind(&out, "ConfigMap")[0];
    assert_eq!(cm["data"]["message"], "hi there");
    assert_eq!(cm["data"]["chartVersion"], "1.2.3");
    assert!(docs_of_kind(&out, "Job").is_empty(), "no hooks by default");
    // values override the knobs' defaults
    let out = helm_template(
        work,
        dir.to_str().unwrap(),
        &["--set", "neverReady=true,replicaCount=0"],
    )
    .unwrap();
    let deploy = &docs_of_kind(&out, "Deployment")[0];
    assert_eq!(deploy["spec"]["replicas"], 0);
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["annotations"]["e2e.pennant.dev/never-ready"],
        "true"
    );

    // hooks: a passing pre-install, a failing pre-upgrade, a test hook
    let hooked = ChartSpec::new("app", "1.0.0")
        .pre_install_hook(Hook::Succeeds)
        .pre_upgrade_hook(Hook::Fails)
        .test_hook(Hook::Succeeds);
    let dir = hooked.write(&work.join("src"));
    let out = helm_template(work, dir.to_str().unwrap(), &[]).unwrap();
    let jobs = docs_of_kind(&out, "Job");
    let by_hook = |h: &str| {
        jobs.iter()
            .find(|j| j["metadata"]["annotations"]["helm.sh/hook"] == h)
            .unwrap_or_else(|| panic!("no {h} hook in\n{out}"))
    };
    let pre_install = by_hook("pre-install");
    assert!(pre_install["spec"]["activeDeadlineSeconds"].is_null());
    assert!(pre_install["spec"]["template"]["spec"]["nodeSelector"].is_null());
    let pre_upgrade = by_hook("pre-upgrade");
    assert_eq!(pre_upgrade["spec"]["activeDeadlineSeconds"], 1);
    assert_eq!(
        pre_upgrade["spec"]["template"]["spec"]["nodeSelector"]["e2e.pennant.dev/no-such-node"],
        "true"
    );
    assert_eq!(by_hook("test")["metadata"]["name"], "rel-test");
    // a failing hook can be switched off by a value, a passing one on
    let out = helm_template(
        work,
        dir.to_str().unwrap(),
        &["--set", "hooks.preUpgrade.fail=false,hooks.test.fail=true"],
    )
    .unwrap();
    let jobs = docs_of_kind(&out, "Job");
    let hook = |h: &str| {
        jobs.iter()
            .find(|j| j["metadata"]["annotations"]["helm.sh/hook"] == h)
            .unwrap()
            .clone()
    };
    assert!(hook("pre-upgrade")["spec"]["activeDeadlineSeconds"].is_null());
    assert_eq!(hook("test")["spec"]["activeDeadlineSeconds"], 1);

    // a template that fails to render, unless the value says otherwise
    let broken = ChartSpec::new("app", "1.0.1").broken_template();
    let dir = broken.write(&work.join("src"));
    let err = helm_template(work, dir.to_str().unwrap(), &[]).unwrap_err();
    assert!(err.contains(RENDER_FAILURE_MESSAGE), "{err}");
    helm_template(work, dir.to_str().unwrap(), &["--set", "failRender=false"]).unwrap();

    // values.schema.json: valid values render, a wrong type is refused
    let schema = ChartSpec::new("app", "1.0.2").schema();
    let dir = schema.write(&work.join("src"));
    assert!(dir.join("values.schema.json").is_file());
    helm_template(work, dir.to_str().unwrap(), &["--set", "replicaCount=2"]).unwrap();
    let err = helm_template(
        work,
        dir.to_str().unwrap(),
        &["--set-string", "replicaCount=many"],
    )
    .unwrap_err();
    assert!(err.contains("replicaCount"), "{err}");
    assert!(
        helm_template(
            work,
            ChartSpec::new("app", "1.0.3")
                .write(&work.join("src"))
                .to_str()
                .unwrap(),
            &["--set-string", "replicaCount=many"]
        )
        .is_ok(),
        "without the knob there is no schema"
    );
}

/// `helm pull` of `chart` into a fresh directory; returns the bytes of the pulled `.tgz`.
fn helm_pull(work: &Path, args: &[&str]) -> Vec<u8> {
    let dest = work.join(format!("pulled-{}", support::free_port()));
    std::fs::create_dir_all(&dest).unwrap();
    run(helm_in(work)
        .arg("pull")
        .args(args)
        .arg("--destination")
        .arg(&dest));
    let files: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{args:?} pulled {files:?}");
    std::fs::read(files[0].path()).unwrap()
}

#[test]
fn charts_published_to_the_helm_repository_and_pushed_to_oci_are_pullable() {
    let repo = HelmRepo::start(None);
    let v1 = ChartSpec::new("hrv-app", "1.0.0").publish(&repo);
    let v2 = ChartSpec::new("hrv-app", "1.1.0")
        .app_version("2.0")
        .publish(&repo);
    let index = std::fs::read_to_string(repo.dir.join("index.yaml")).unwrap();
    assert!(
        index.contains("1.0.0") && index.contains("1.1.0"),
        "{index}"
    );
    let pulled = helm_pull(
        &repo.work,
        &["--repo", &repo.url, "hrv-app", "--version", "1.1.0"],
    );
    assert_eq!(pulled, std::fs::read(&v2).unwrap());
    let pulled = helm_pull(
        &repo.work,
        &["--repo", &repo.url, "hrv-app", "--version", "1.0.0"],
    );
    assert_eq!(pulled, std::fs::read(&v1).unwrap());
    let shown = run(helm_in(&repo.work).args(["show", "chart"]).arg(&v2));
    assert!(shown.contains("appVersion: \"2.0\""), "{shown}");

    // OCI: the cluster's registry, a path unique to this run
    let path = format!("hr-values-{}/charts", std::process::id());
    let spec = ChartSpec::new("hrv-oci", "0.3.0").test_hook(Hook::Succeeds);
    let url = spec.push_oci(&repo.work, &registry_addr(), &path);
    assert_eq!(url, format!("oci://{}/{path}/hrv-oci", registry_addr()));
    let pushed = std::fs::read(repo.work.join("oci-packages/hrv-oci-0.3.0.tgz")).unwrap();
    let pulled = helm_pull(&repo.work, &[&url, "--version", "0.3.0", "--plain-http"]);
    assert_eq!(
        pulled, pushed,
        "the registry serves the package helm pushed"
    );
}

/// `helm <args> --kubeconfig … -n <ns>`; `(success, stdout+stderr, elapsed)`.
fn helm_on_cluster(work: &Path, ns: &str, args: &[&str]) -> (bool, String, Duration) {
    let start = Instant::now();
    let out = helm_in(work)
        .args(args)
        .args(["--kubeconfig", &kubeconfig_path(), "-n", ns])
        .output()
        .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, start.elapsed())
}

async fn job_condition(jobs: &Api<Job>, name: &str) -> Option<(String, String)> {
    let job = jobs.get_opt(name).await.ok()??;
    job.status?.conditions?.into_iter().find_map(|c| {
        (c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"))
            .then(|| (c.type_, c.reason.unwrap_or_default()))
    })
}

#[tokio::test]
async fn hook_jobs_complete_or_fail_on_purpose_and_pods_can_stay_unready() {
    let client = client().await;
    let ns = TestNs::new(&client, "hr-values-hooks", 0).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let tmp = scratch();
    let work = tmp.path();
    let chart = ChartSpec::new("hooked", "1.0.0")
        .pre_install_hook(Hook::Succeeds)
        .pre_upgrade_hook(Hook::Fails)
        .test_hook(Hook::Succeeds)
        .package(work, &work.join("pkg"));
    let chart = chart.to_str().unwrap();

    // install: the pre-install Job completes (kwok runs Job pods to Succeeded)
    let (ok, out, _) = helm_on_cluster(
        work,
        &ns.name,
        &["install", "rel", chart, "--wait", "--timeout", "90s"],
    );
    assert!(ok, "install: {out}");
    assert_eq!(
        job_condition(&jobs, "rel-pre-install").await,
        Some(("Complete".into(), "CompletionsReached".into()))
    );
    let (ok, out, _) = helm_on_cluster(work, &ns.name, &["test", "rel", "--timeout", "60s"]);
    assert!(ok, "test hook passes: {out}");
    assert!(out.contains("Succeeded"), "{out}");

    // upgrade: the pre-upgrade Job fails (unschedulable, 1 s deadline) well before the timeout
    let (ok, out, took) = helm_on_cluster(
        work,
        &ns.name,
        &["upgrade", "rel", chart, "--wait", "--timeout", "120s"],
    );
    assert!(!ok, "the pre-upgrade hook must fail the upgrade: {out}");
    assert!(out.contains("pre-upgrade"), "{out}");
    assert!(
        took < Duration::from_secs(60),
        "failed after {took:?}, not by the deadline"
    );
    assert_eq!(
        job_condition(&jobs, "rel-pre-upgrade").await,
        Some(("Failed".into(), "DeadlineExceeded".into()))
    );
    let history = helm_on_cluster(work, &ns.name, &["history", "rel"]).1;
    assert!(history.contains("failed"), "{history}");

    // the same chart with the hook switched off by a value upgrades; a failing test hook fails
    let (ok, out, _) = helm_on_cluster(
        work,
        &ns.name,
        &[
            "upgrade",
            "rel",
            chart,
            "--wait",
            "--timeout",
            "90s",
            "--set",
            "hooks.preUpgrade.fail=false,hooks.test.fail=true",
        ],
    );
    assert!(ok, "upgrade without the failing hook: {out}");
    let (ok, out, took) = helm_on_cluster(work, &ns.name, &["test", "rel", "--timeout", "120s"]);
    assert!(!ok, "the failing test hook fails `helm test`: {out}");
    assert!(took < Duration::from_secs(60), "test failed after {took:?}");
    assert_eq!(
        job_condition(&jobs, "rel-test").await.map(|c| c.0),
        Some("Failed".into())
    );

    // neverReady: the Deployment's pods stay un-Ready, so --wait times out
    let (ok, out, _) = helm_on_cluster(
        work,
        &ns.name,
        &[
            "upgrade",
            "rel",
            chart,
            "--reuse-values",
            "--set",
            "neverReady=true,hooks.preUpgrade.fail=false",
            "--wait",
            "--timeout",
            "10s",
        ],
    );
    assert!(!ok, "never-ready pods must time the upgrade out: {out}");
    ns.cleanup().await;
}
