//! The bond between the halves (issue 16, "Revision-aware readiness"): one `pennant controller
//! --controllers canary,source,kustomize` process, the real Git server, the real Prometheus and
//! the mesh simulator (`e2e/cluster up`). A fleet repository holds a podinfo-like Deployment and
//! its Canary (Istio, the simulator's error-rate annotation decides the success rate) twice:
//! `staging/` and `production/`, applied by the Kustomizations `staging` and `production`
//! (interval 5 s, `production` dependsOn `staging`).
//!
//! What is checked, commit by commit:
//! - a good image: `staging` is `Ready=Unknown` `CanaryProgressing` while its Canary analyses,
//!   `production` waits (`DependencyNotReady`, its Deployment still on the old image), then
//!   both are promoted in turn and `Ready=True` with `lastPromotedRevision` = the commit;
//!   `kubectl wait --for=condition=Ready` started mid-analysis returns only after promotion;
//!   the `flux` CLI reads every state;
//! - a bad image: staging's Canary rolls back, `staging` is `Ready=False` `CanaryFailed` with
//!   `rejectedRevision` = the commit; production never sees it; over 5 intervals and across a
//!   restart of the pennant process the Deployment's spec is not written again (its
//!   `metadata.generation` is counted from a watch) and nothing is fetched or applied;
//! - the next good commit is applied and promoted in both environments, which
//!   `kubectl wait --for=jsonpath={.status.lastPromotedRevision}=<commit>` confirms;
//! - one owner per field, across the three releases: in the steady windows (2 × 5 intervals,
//!   plus the rejected one) neither target nor apex Service (in Git, taken over by the Canary)
//!   is written, the apex points at the primary, and each target went from parked to running
//!   exactly once per analysed image (no writer scaled a parked target back up, flagger#1121).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use pennant::api::CanaryPhase;
use pennant::api::kustomization::Kustomization;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::kustomize::*;
use support::sources::{cleanup, flux, flux_ok};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const V3: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const V4: &str = "ghcr.io/stefanprodan/podinfo:6.0.3";
const INTERVAL: Duration = Duration::from_secs(5);

/// The Deployment `name` (image, simulated error rate), its Service (the apex the Canary
/// takes over) and its Canary, in namespace `ns`.
fn app(ns: &str, name: &str, image: &str, error_rate: f64) -> String {
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 9898\n"
    );
    let deploy = podinfo(image, error_rate, "")
        .replace("name: podinfo\n", &format!("name: {name}\n"))
        .replace("app: podinfo", &format!("app: {name}"));
    let canary = podinfo_canary(2, 25, 50, 120).replace("name: podinfo", &format!("name: {name}"));
    format!("{deploy}\n---\n{service}---\n{canary}").replace("NAMESPACE", ns)
}

/// Commit both environments at `image` (the error rate: 0 good, 0.3 bad).
fn commit(repo: &support::gitserver::Repo, ns: &str, image: &str, error_rate: f64) -> String {
    repo.commit(
        "main",
        &[
            (
                "staging/app.yaml",
                &app(ns, "web-staging", image, error_rate),
            ),
            (
                "production/app.yaml",
                &app(ns, "web-production", image, error_rate),
            ),
        ],
        &format!("{image} at {error_rate}"),
    )
}

fn kustomization(name: &str, depends_on: Option<&str>) -> String {
    let deps = depends_on.map_or(String::new(), |d| format!("  dependsOn:\n  - name: {d}\n"));
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  interval: 5s\n  path: ./{name}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: fleet\n{deps}"
    )
}

/// The pennant process: canary, source and kustomize controllers on a fixed port (a restart
/// serves the same artifact URLs).
fn start(ns: &str, storage: &std::path::Path, port: u16, run: u32) -> ControllerProcess {
    let listen = format!("127.0.0.1:{port}");
    let prom = prometheus_url();
    ControllerProcess::start_with(
        ns,
        &format!("{ns}-{run}"),
        &kubeconfig_path(),
        &[
            "--controllers",
            "canary,source,kustomize",
            "--storage-path",
            storage.to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-server",
            &prom,
            "--log-level",
            "info,pennant=debug",
        ],
        &[],
    )
}

/// No spec write to the Deployments `names` nor any write to their apex Services over `n`
/// Kustomization intervals (steady state: the Kustomization re-applies at every interval, the
/// Canary parks its target and owns the apex selector; neither undoes the other). The apex
/// Services point at the primaries.
async fn no_spec_writes(ns: &TestNs, writes: &SpecWrites, names: &[&str], n: u32) {
    let services = ns.api("v1", "Service");
    let apex = async || {
        let mut out = vec![];
        for name in names {
            let s = services.get(name).await.expect("apex Service");
            let selector = s.data["spec"]["selector"].clone();
            out.push((s.metadata.resource_version.clone(), selector));
        }
        out
    };
    let before: Vec<Option<i64>> = names.iter().map(|d| writes.generation(d)).collect();
    let services_before = apex().await;
    for ((_, selector), name) in services_before.iter().zip(names) {
        assert_eq!(
            selector["app"],
            format!("{name}-primary"),
            "the apex Service points at the primary"
        );
    }
    tokio::time::sleep(INTERVAL * n + Duration::from_secs(1)).await;
    let after: Vec<Option<i64>> = names.iter().map(|d| writes.generation(d)).collect();
    assert_eq!(
        after,
        before,
        "spec writes to {names:?} over {n} intervals: {:?}",
        writes.0.lock().unwrap()
    );
    assert_eq!(apex().await, services_before, "apex Services written");
}

/// Every spec change of the namespace's Deployments, from a watch: name → (generation,
/// `spec.replicas`, image) per generation seen, in order (a write of the spec is a new
/// generation; status updates are not).
#[derive(Clone, Default)]
struct SpecWrites(Arc<Mutex<BTreeMap<String, Vec<Generation>>>>);

/// One generation of a Deployment: (generation, `spec.replicas`, image).
type Generation = (i64, i32, String);

impl SpecWrites {
    fn start(ns: &TestNs) -> Self {
        let w = SpecWrites::default();
        let seen = w.0.clone();
        let api: Api<Deployment> = ns.deployments();
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(d)) = s.next().await {
                let name = d.metadata.name.clone().unwrap_or_default();
                let g = d.metadata.generation.unwrap_or_default();
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let image = image_of(&d);
                let mut seen = seen.lock().unwrap();
                let gens = seen.entry(name).or_default();
                if gens.last().map(|l| l.0) != Some(g) {
                    gens.push((g, replicas, image));
                }
            }
        });
        w
    }

    fn generation(&self, name: &str) -> Option<i64> {
        self.0.lock().unwrap().get(name)?.last().map(|l| l.0)
    }

    /// How often `name` went from parked (0 replicas) to running again with the same image:
    /// per image. Once per analysis (the Canary scales its target up for a run); more is a
    /// writer undoing the Canary's parking (flagger#1121's fight).
    fn unparked(&self, name: &str) -> BTreeMap<String, usize> {
        let seen = self.0.lock().unwrap();
        let mut out = BTreeMap::new();
        for w in seen
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .windows(2)
        {
            if w[0].1 == 0 && w[1].1 > 0 && w[0].2 == w[1].2 {
                *out.entry(w[1].2.clone()).or_default() += 1;
            }
        }
        out
    }
}

fn rev(sha: &str) -> String {
    format!("main@sha1:{sha}")
}

fn status_of(k: &Kustomization) -> pennant::api::kustomization::KustomizationStatus {
    k.status.clone().unwrap_or_default()
}

/// Waits (up to `timeout`) until `done` holds for the Kustomization `name`; prints each new
/// Ready state on the way.
async fn wait_for(
    ns: &TestNs,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Kustomization) -> bool,
) -> Kustomization {
    let start = Instant::now();
    let mut last = None;
    loop {
        let k = get_ks(ns, name).await;
        let r = ready(&k);
        if r != last {
            println!("[{:>5.1}s] {name}: {r:?}", start.elapsed().as_secs_f32());
            last = r;
        }
        if done(&k) {
            return k;
        }
        assert!(
            start.elapsed() < timeout,
            "{name}: no {what} after {timeout:?}: {:#?}",
            k.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is(k: &Kustomization, status: &str, reason: &str) -> bool {
    ready(k).is_some_and(|(s, r, _)| s == status && r == reason)
}

const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);

#[tokio::test]
async fn a_commit_is_ready_when_its_canary_promoted_it_and_a_rolled_back_one_is_not_applied_again()
{
    let client = client().await;
    let ns = TestNs::new(&client, "bond-e2e", 50).await;
    let storage = TempDir::new("pennant-bond-storage");
    let port = free_port();
    let mut ctl = Some(start(&ns.name, storage.path(), port, 1));
    let writes = SpecWrites::start(&ns);
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("fleet");
    let sha1 = commit(&repo, &ns.name, V1, 0.0);
    git_repository(&ns, "fleet", &server.url("fleet")).await;
    ns.apply_yaml(&kustomization("staging", None)).await;
    ns.apply_yaml(&kustomization("production", Some("staging")))
        .await;

    // first commit: the Canaries initialise from it, both environments promoted it
    for env in ["staging", "production"] {
        let k = wait_for(&ns, env, "promotion of the first commit", MINUTES(3), |k| {
            is(k, "True", "ReconciliationSucceeded")
                && status_of(k).last_promoted_revision == Some(rev(&sha1))
        })
        .await;
        assert_eq!(status_of(&k).last_applied_revision, Some(rev(&sha1)));
        assert_eq!(
            ns.canary(&format!("web-{env}")).await.status.unwrap().phase,
            Some(CanaryPhase::Initialized)
        );
    }

    // a good image: staging analyses it while production waits
    let sha2 = commit(&repo, &ns.name, V2, 0.0);
    flux_ok(&ns.name, &["reconcile", "source", "git", "fleet"]);
    let k = wait_for(&ns, "staging", "CanaryProgressing", MINUTES(1), |k| {
        is(k, "Unknown", "CanaryProgressing")
            && status_of(k).last_attempted_revision == Some(rev(&sha2))
    })
    .await;
    let (_, _, message) = ready(&k).unwrap();
    assert!(
        message.contains(&format!("Canary {}/web-staging", ns.name)) && message.contains(&sha2),
        "{message}"
    );
    assert_eq!(
        status_of(&k).last_applied_revision,
        Some(rev(&sha1)),
        "not applied for dependents before promotion"
    );
    // the CI question, asked mid-analysis: returns once the commit is promoted
    let kubectl_wait = std::process::Command::new(kubectl())
        .args([
            "--kubeconfig",
            &kubeconfig_path(),
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            "--timeout=240s",
            "kustomization/staging",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    let get = flux_ok(&ns.name, &["get", "ks", "staging"]);
    assert!(
        get.contains("Unknown") && get.contains("waiting for the canary analysis"),
        "{get}"
    );
    let prod = wait_for(&ns, "production", "DependencyNotReady", MINUTES(1), |k| {
        is(k, "False", "DependencyNotReady")
    })
    .await;
    let (_, _, message) = ready(&prod).unwrap();
    assert!(
        message.contains(&format!("dependency '{}/staging'", ns.name)),
        "{message}"
    );
    assert_eq!(
        image_of(&ns.deployment("web-production").await.unwrap()),
        V1,
        "production waits for staging's analysis"
    );
    let out = kubectl_wait.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let staging_canary = ns.canary("web-staging").await.status.unwrap();
    assert_eq!(
        staging_canary.phase,
        Some(CanaryPhase::Succeeded),
        "kubectl wait returned on promotion"
    );
    let k = get_ks(&ns, "staging").await;
    assert_eq!(status_of(&k).last_promoted_revision, Some(rev(&sha2)));
    assert_eq!(status_of(&k).last_applied_revision, Some(rev(&sha2)));
    assert_eq!(
        image_of(&ns.deployment("web-staging-primary").await.unwrap()),
        V2
    );
    // production goes next, through its own analysis
    wait_for(&ns, "production", "CanaryProgressing", MINUTES(1), |k| {
        is(k, "Unknown", "CanaryProgressing")
    })
    .await;
    let k = wait_for(&ns, "production", "promotion", MINUTES(3), |k| {
        is(k, "True", "ReconciliationSucceeded")
            && status_of(k).last_promoted_revision == Some(rev(&sha2))
    })
    .await;
    assert_eq!(status_of(&k).last_applied_revision, Some(rev(&sha2)));
    assert_eq!(
        image_of(&ns.deployment("web-production-primary").await.unwrap()),
        V2
    );
    let (ok, text) = flux(&ns.name, &["get", "ks", "production"]);
    assert!(ok && text.contains("True"), "{text}");
    // steady state: the Kustomizations re-apply every 5 s, the targets stay parked
    no_spec_writes(&ns, &writes, &["web-staging", "web-production"], 5).await;

    // a bad image: staging's Canary rolls it back; the revision is rejected, production never
    // sees it
    let sha3 = commit(&repo, &ns.name, V3, 0.3);
    flux_ok(&ns.name, &["reconcile", "source", "git", "fleet"]);
    let k = wait_for(&ns, "staging", "CanaryFailed", MINUTES(4), |k| {
        is(k, "False", "CanaryFailed")
    })
    .await;
    let st = status_of(&k);
    assert_eq!(st.rejected_revision, Some(rev(&sha3)));
    assert_eq!(st.last_promoted_revision, Some(rev(&sha2)));
    assert_eq!(st.last_attempted_revision, Some(rev(&sha3)));
    let (_, _, message) = ready(&k).unwrap();
    assert!(
        message.contains(&sha3) && message.contains("web-staging failed"),
        "{message}"
    );
    let (ok, text) = flux(&ns.name, &["get", "ks", "staging"]);
    assert!(!ok || text.contains("False"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(
        image_of(&ns.deployment("web-staging-primary").await.unwrap()),
        V2,
        "the primary still runs the promoted image"
    );
    // settle (the Canary parks the target after its status), then count spec writes
    tokio::time::sleep(Duration::from_secs(3)).await;
    let generation = writes.generation("web-staging");
    let history = st.history.clone();
    tokio::time::sleep(INTERVAL * 5 + Duration::from_secs(2)).await;
    assert_eq!(
        writes.generation("web-staging"),
        generation,
        "the rejected revision was not applied again over 5 intervals"
    );
    let k = get_ks(&ns, "staging").await;
    assert!(is(&k, "False", "CanaryFailed"), "{:?}", ready(&k));
    assert_eq!(
        status_of(&k).history,
        history,
        "nothing built or applied while rejected"
    );
    // ... nor after a restart of the pennant process
    drop(ctl.take());
    ctl = Some(start(&ns.name, storage.path(), port, 2));
    tokio::time::sleep(INTERVAL * 3 + Duration::from_secs(5)).await;
    assert_eq!(
        writes.generation("web-staging"),
        generation,
        "the rejected revision was not applied again after a restart"
    );
    let k = get_ks(&ns, "staging").await;
    assert!(is(&k, "False", "CanaryFailed"), "{:?}", ready(&k));
    assert_eq!(status_of(&k).history, history);
    assert_eq!(
        image_of(&ns.deployment("web-production").await.unwrap()),
        V2,
        "production never applied the rejected revision"
    );
    let prod = get_ks(&ns, "production").await;
    assert!(
        is(&prod, "False", "DependencyNotReady"),
        "{:?}",
        ready(&prod)
    );

    // the next good commit starts a new run and is promoted in both environments
    let sha4 = commit(&repo, &ns.name, V4, 0.0);
    flux_ok(&ns.name, &["reconcile", "source", "git", "fleet"]);
    for env in ["staging", "production"] {
        let k = wait_for(&ns, env, "promotion of the next commit", MINUTES(4), |k| {
            is(k, "True", "ReconciliationSucceeded")
                && status_of(k).last_promoted_revision == Some(rev(&sha4))
        })
        .await;
        assert_eq!(status_of(&k).last_applied_revision, Some(rev(&sha4)));
        assert_eq!(
            image_of(&ns.deployment(&format!("web-{env}-primary")).await.unwrap()),
            V4
        );
    }
    // the other CI question: exactly this commit promoted
    let out = std::process::Command::new(kubectl())
        .args([
            "--kubeconfig",
            &kubeconfig_path(),
            "-n",
            &ns.name,
            "wait",
            &format!(
                "--for=jsonpath={{.status.lastPromotedRevision}}={}",
                rev(&sha4)
            ),
            "--timeout=10s",
            "kustomization/production",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_spec_writes(&ns, &writes, &["web-staging", "web-production"], 5).await;
    // across the releases no writer undid the parking: one scale-up per analysed image
    // (staging: V2, V3 rolled back, V4; production never saw V3)
    let unparked = |name| writes.unparked(name);
    assert_eq!(
        unparked("web-staging"),
        BTreeMap::from([(V2.into(), 1), (V3.into(), 1), (V4.into(), 1)]),
        "{:?}",
        writes.0.lock().unwrap()
    );
    assert_eq!(
        unparked("web-production"),
        BTreeMap::from([(V2.into(), 1), (V4.into(), 1)]),
        "{:?}",
        writes.0.lock().unwrap()
    );
    let events = ns.event_messages("staging").await;
    assert!(
        events
            .iter()
            .any(|m| m.contains(&format!("revision {} promoted by Canary", rev(&sha4)))),
        "{events:#?}"
    );
    // the controller releases the finalizers before the namespace goes
    let api = Api::<Kustomization>::namespaced(client.clone(), &ns.name);
    let _ = api
        .delete_collection(&Default::default(), &Default::default())
        .await;
    wait_until(MINUTES(1), "Kustomizations deleted", || async {
        api.list(&Default::default())
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await;
    cleanup(ns).await;
    drop(ctl);
}
