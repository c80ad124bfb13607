//! Operating pennant as the chart installs it, against the real local control plane
//! (`e2e/cluster up`): the chart's RBAC is enough for a canary release (the controller
//! authenticated as the chart's ServiceAccount), and leader election hands a release in flight
//! from a killed leader, and from a gracefully stopped one, to another process; Flux's sharding
//! flag (`--watch-label-selector`) splits the Canaries of a namespace between two processes.
//!
//! The RBAC and leader-election tests read the Kubernetes API requests each controller made from its own JSON debug log
//! (`kube_client=debug` logs every request's method and URL).

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use pennant::api::CanaryPhase;
use pennant::rbac::{CANARY_RULES, LEADER_ELECTION_RULES, RequestAttributes};
use serde_json::{Value, json};
use support::*;

const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const V3: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(m * 60);
/// JSON logs with every API request (method and URL) of the controller.
const LOG_ARGS: [&str; 4] = [
    "--log-format",
    "json",
    "--log-level",
    "info,pennant=debug,kube_client=debug",
];

/// The API requests in a controller's JSON log: (method, url), in order.
fn requests_in_log(path: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "requesting")
        .filter_map(|v| {
            let span = &v["span"];
            Some((
                span["http.method"].as_str()?.to_string(),
                span["http.url"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn attributes(requests: &[(String, String)]) -> BTreeSet<RequestAttributes> {
    requests
        .iter()
        .filter_map(|(m, u)| pennant::rbac::request_attributes(m, u))
        .collect()
}

/// A kubeconfig for the local cluster authenticating with `token` (same server and CA).
fn token_kubeconfig(token: &str, path: &str) {
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let cluster = admin["clusters"][0].clone();
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
        "current-context": "sa",
    });
    std::fs::write(path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

/// The chart installed in namespace-scoped mode (a Role in the test namespace: the stricter of
/// its two modes) with leader election, the controller authenticated as its ServiceAccount, one
/// release promoted.
/// Every request the controller made is granted by the chart, and none was refused.
#[tokio::test]
async fn canary_release_succeeds_as_the_charts_service_account() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-rbac", 50).await;
    // The chart's ServiceAccount, Role and RoleBinding, applied for real.
    let mut helm = Command::new(helm());
    helm.args([
        "template",
        "ship",
        &format!("{}/charts/pennant", env!("CARGO_MANIFEST_DIR")),
        "--namespace",
        &ns.name,
        "--set",
        &format!("namespace={}", ns.name),
        "--set",
        "leaderElection.enabled=true",
        // the chart's own rules, not the cluster-admin bindings a Kustomization's or a
        // HelmRelease's objects need
        "--set",
        "rbac.kustomizeClusterAdmin=false",
        "--set",
        "rbac.helmClusterAdmin=false",
    ]);
    let rendered = yaml_docs(&run(&mut helm));
    let mut kinds = vec![];
    for doc in &rendered {
        let kind = doc["kind"].as_str().unwrap();
        if ["ServiceAccount", "Role", "RoleBinding"].contains(&kind) {
            apply(&client, doc).await;
            kinds.push(kind.to_string());
        }
    }
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding"
        ],
        "controller and Lease Roles"
    );
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let tr = sa
        .create_token_request(
            "ship-pennant",
            &Default::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("token for the chart's ServiceAccount");
    let token = tr
        .status
        .and_then(|s| s.token)
        .expect("token in the TokenRequest status");
    let kubeconfig = format!("{}/kubeconfig-{}", state_dir(), ns.name);
    token_kubeconfig(&token, &kubeconfig);

    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let log_name = format!("{}-sa", ns.name);
    let prom = prometheus_url();
    // with leader election, as the chart runs it: the Lease permissions are proven too
    let mut args = vec![
        "--metrics-server",
        prom.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--leader-election",
        "--leader-election-namespace",
        ns.name.as_str(),
    ];
    args.extend(LOG_ARGS);
    let _ctl = ControllerProcess::start_with(&ns.name, &log_name, &kubeconfig, &args, &[]);
    ns.apply_yaml(&podinfo_canary(3, 25, 50, 120)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    set_image(&ns, V2, 0.0).await;
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert!(weights.contains(&50), "{weights:?}");
    let primary = ns.deployment("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), V2);
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));
    assert!(
        ns.event_messages_with("podinfo", "Promotion completed!")
            .await
            .iter()
            .any(|m| m.contains("Promotion completed!")),
        "Events written as the ServiceAccount"
    );

    let log_path = ControllerProcess::log_path(&log_name);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was refused; see {log_path}"
    );
    let requests = requests_in_log(&log_path);
    assert!(requests.len() > 20, "requests logged: {requests:?}");
    let used = attributes(&requests);
    let ungranted: Vec<_> = used
        .iter()
        .filter(|a| {
            !pennant::rbac::allows(CANARY_RULES, a)
                && !pennant::rbac::allows(LEADER_ELECTION_RULES, a)
        })
        .collect();
    assert!(
        ungranted.is_empty(),
        "requests the chart does not grant: {ungranted:?}"
    );
    for (g, r, v) in [
        ("flagger.app", "canaries", "watch"),
        ("flagger.app", "canaries/status", "patch"),
        ("apps", "deployments", "patch"),
        ("", "events", "create"),
        ("networking.istio.io", "virtualservices", "patch"),
        ("coordination.k8s.io", "leases", "get"),
    ] {
        let a = RequestAttributes {
            group: g.into(),
            resource: r.into(),
            verb: v.into(),
        };
        assert!(used.contains(&a), "{a:?} exercised: {used:?}");
    }
    println!("permissions exercised by one release: {used:#?}");
    let _ = std::fs::remove_file(&kubeconfig);
    ns.cleanup().await;
}

/// The holder of the Lease, if any.
async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Wait until the Lease is held by a process whose identity starts with one of `names`; returns
/// that name.
async fn wait_holder(leases: &Api<Lease>, names: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(h) = holder(leases, LEASE).await
            && let Some(n) = names.iter().find(|n| h.starts_with(&format!("{n}_")))
        {
            return n.to_string();
        }
        assert!(
            start.elapsed() < timeout,
            "no holder among {names:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const LEASE: &str = "pennant-leader-election";
const LEASE_SECONDS: u64 = 8;

fn elected(ns: &str, name: &str, port: u16) -> ControllerProcess {
    let listen = format!("127.0.0.1:{port}");
    let prom = prometheus_url();
    let mut args = vec![
        "--metrics-server",
        prom.as_str(),
        "--listen",
        listen.as_str(),
        "--leader-election",
        "--leader-election-lease-duration",
        "8s",
    ];
    args.extend(LOG_ARGS);
    ControllerProcess::start_with(
        ns,
        &format!("{ns}-{name}"),
        &kubeconfig_path(),
        &args,
        &[("POD_NAME", name)],
    )
}

/// Requests other than to the Lease: what a follower must never make.
fn non_lease_writes(ns: &str, name: &str) -> Vec<(String, String)> {
    requests_in_log(&ControllerProcess::log_path(&format!("{ns}-{name}")))
        .into_iter()
        .filter(|(m, u)| m != "GET" && !u.contains("/leases"))
        .collect()
}

async fn wait_weight_above_zero(ns: &TestNs) {
    wait_until(MINUTES(2), "canary traffic", || async {
        let st = ns.canary("podinfo").await.status.unwrap_or_default();
        st.phase == Some(CanaryPhase::Progressing) && st.canary_weight > 0
    })
    .await;
}

/// Two controllers, one Lease: only the leader writes; a killed leader is replaced within the
/// lease duration and its release in flight finishes; a leader stopped with SIGTERM exits 0,
/// releases the Lease at once, and a new process takes over the next release in flight.
#[tokio::test]
async fn leader_election_hands_releases_in_flight_to_the_next_leader() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-leader", 50).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    ns.apply_yaml(&podinfo(V1, 0.0, "")).await;
    let ports = [free_port(), free_port(), free_port()];
    let mut procs = vec![
        ("ctl-a", elected(&ns.name, "ctl-a", ports[0])),
        ("ctl-b", elected(&ns.name, "ctl-b", ports[1])),
    ];
    for p in &ports[..2] {
        wait_http(
            &format!("http://127.0.0.1:{p}/healthz"),
            Duration::from_secs(30),
        )
        .await;
    }
    let first = wait_holder(&leases, &["ctl-a", "ctl-b"], Duration::from_secs(30)).await;
    let (leader_i, follower_i) = if first == "ctl-a" { (0, 1) } else { (1, 0) };
    let follower = procs[follower_i].0;
    // followers are healthy and ready (a rolling update is never blocked by them)
    wait_http(
        &format!("http://127.0.0.1:{}/readyz", ports[follower_i]),
        Duration::from_secs(10),
    )
    .await;

    ns.apply_yaml(&podinfo_canary(3, 25, 50, 120)).await;
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    set_image(&ns, V2, 0.0).await;
    wait_weight_above_zero(&ns).await;
    assert_eq!(
        non_lease_writes(&ns.name, follower),
        vec![],
        "the follower wrote"
    );
    let leader_writes = non_lease_writes(&ns.name, procs[leader_i].0);
    assert!(
        leader_writes.iter().any(|(_, u)| u.contains("/canaries/")),
        "the leader writes: {leader_writes:?}"
    );

    // crash the leader mid-analysis
    let killed = Instant::now();
    procs[leader_i].1.kill();
    let next = wait_holder(&leases, &[follower], Duration::from_secs(LEASE_SECONDS + 5)).await;
    let takeover = killed.elapsed();
    println!("takeover after a crash: {takeover:?} (lease {LEASE_SECONDS}s)");
    assert_eq!(next, follower);
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 3),
        "{takeover:?}"
    );
    let weights = wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    println!("release 1 after the takeover: weights {weights:?}");
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V2
    );
    assert_eq!(ns.vs_weights("podinfo").await, Some((100, 0)));

    // a new standby, as a rollout of the controller starts one; then a graceful stop of the
    // leader mid-analysis
    let ctl_c = elected(&ns.name, "ctl-c", ports[2]);
    wait_http(
        &format!("http://127.0.0.1:{}/readyz", ports[2]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        wait_holder(&leases, &[follower], Duration::from_secs(1)).await,
        follower,
        "the standby waits"
    );
    set_image(&ns, V3, 0.0).await;
    wait_weight_above_zero(&ns).await;
    let stopped = Instant::now();
    let code = procs[follower_i].1.terminate(Duration::from_secs(20));
    let exited = Instant::now();
    println!("graceful stop took {:?}", stopped.elapsed());
    assert_eq!(code, Some(0), "SIGTERM: clean exit");
    assert_eq!(
        holder(&leases, LEASE).await,
        None,
        "Lease released on SIGTERM"
    );
    let log = std::fs::read_to_string(ControllerProcess::log_path(&format!(
        "{}-{follower}",
        ns.name
    )))
    .unwrap();
    assert!(log.contains("lease released"), "{log}");
    let c = ns.canary("podinfo").await.status.unwrap();
    assert_eq!(c.phase, Some(CanaryPhase::Progressing));
    let (p, w) = ns.vs_weights("podinfo").await.unwrap();
    assert_eq!(
        (p + w, w),
        (100, i64::from(c.canary_weight)),
        "status and routes agree after the stop: no half-written step"
    );
    let next = wait_holder(&leases, &["ctl-c"], Duration::from_secs(LEASE_SECONDS)).await;
    let takeover = exited.elapsed();
    println!(
        "takeover by a waiting standby after the leader exited: {takeover:?} (lease {LEASE_SECONDS}s)"
    );
    // Waiting for the released Lease's expiry instead would take at least the grace (6 s of
    // the 8 s Lease are left at a renewal).
    assert!(
        takeover < pennant::leader::FOLLOWER_POLL + Duration::from_millis(900),
        "a released Lease is taken at the standby's next poll: {takeover:?}"
    );
    assert_eq!(next, "ctl-c");
    wait_phase(
        &ns,
        "podinfo",
        CanaryPhase::Succeeded,
        Some(CanaryPhase::Failed),
        MINUTES(3),
    )
    .await;
    assert_eq!(
        image_of(&ns.deployment("podinfo-primary").await.unwrap()),
        V3
    );
    drop(ctl_c);
    drop(procs);
    // what the election asked the API for is what the chart's Lease Role grants
    let mut lease_requests = vec![];
    for name in ["ctl-a", "ctl-b", "ctl-c"] {
        lease_requests.extend(
            requests_in_log(&ControllerProcess::log_path(&format!("{}-{name}", ns.name)))
                .into_iter()
                .filter(|(_, u)| u.contains("/leases")),
        );
    }
    let used = attributes(&lease_requests);
    assert!(
        used.iter().any(|a| a.verb == "patch"),
        "lease renewals seen: {used:?}"
    );
    for a in &used {
        assert!(
            pennant::rbac::allows(LEADER_ELECTION_RULES, a),
            "{a:?} not granted"
        );
    }
    ns.cleanup().await;
}

/// Two candidates that find the Lease free at once both apply it (the Lease library applies an
/// orphaned Lease without force). Each applies under its own field manager, so the second apply
/// conflicts and only the first leads; under the one manager they shared before, the second
/// apply silently won and both led until the next renewal (the follower's writes once seen in
/// `leader_election_hands_releases_in_flight_to_the_next_leader` in CI).
#[tokio::test]
async fn a_candidate_cannot_take_a_lease_another_has_just_applied() {
    use kube::api::{Patch, PatchParams};
    use pennant::leader::field_manager;
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-race", 0).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let take = |lease: &str, manager: String, who: &str| {
        let leases = leases.clone();
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease},
            "spec": {"holderIdentity": who, "leaseDurationSeconds": LEASE_SECONDS},
        });
        let lease = lease.to_string();
        async move {
            leases
                .patch(&lease, &PatchParams::apply(&manager), &Patch::Apply(body))
                .await
        }
    };
    let (a, b) = ("ctl-a_00000000000000aa", "ctl-b_00000000000000bb");
    take("race", field_manager(a), a).await.unwrap();
    match take("race", field_manager(b), b).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("the second candidate's apply must conflict: {other:?}"),
    }
    assert_eq!(holder(&leases, "race").await.as_deref(), Some(a));
    // the shared manager of before: the second apply wins without a word
    let shared = || "pennant-leader-election".to_string();
    take("race-shared", shared(), a).await.unwrap();
    take("race-shared", shared(), b).await.unwrap();
    assert_eq!(holder(&leases, "race-shared").await.as_deref(), Some(b));
    ns.cleanup().await;
}

/// A leader whose Lease was taken over (here: written by another holder, as after a partition)
/// stops at its next renewal, with an error, instead of reconciling on.
#[tokio::test]
async fn leader_that_loses_its_lease_exits() {
    let client = client().await;
    let ns = TestNs::new(&client, "e2e-lease-lost", 0).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let port = free_port();
    let mut ctl = elected(&ns.name, "ctl-a", port);
    wait_holder(&leases, &["ctl-a"], Duration::from_secs(30)).await;
    // The Lease names ctl-a as soon as it creates it, a moment before ctl-a has confirmed its
    // leadership: take the Lease only from a leader (taken earlier, ctl-a rightly stays a
    // standby; seen once in CI under load).
    let log_path = ControllerProcess::log_path(&format!("{}-ctl-a", ns.name));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("became leader")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ctl-a did not become leader within 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let patch = json!({"spec": {"holderIdentity": "intruder_0", "renewTime": now,
        "acquireTime": now, "leaseDurationSeconds": 60}});
    leases
        .patch(
            LEASE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("take the lease");
    // Its next renewal comes within a lease duration; twice that, for a loaded machine (seen
    // once with two test binaries at nice 19: no request at all for 13 s).
    let code = ctl.wait_exit(Duration::from_secs(2 * LEASE_SECONDS + 10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "the old leader must exit with an error, got {code:?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("lost leadership"), "{log}");
    assert_eq!(
        holder(&leases, LEASE).await.as_deref(),
        Some("intruder_0"),
        "the Lease is left to its new holder"
    );
    ns.cleanup().await;
}

/// Flux's sharding (`--watch-label-selector`): two Canaries in one namespace, one labelled
/// `sharding.fluxcd.io/key=shard1`. A controller started with that selector initialises only the
/// labelled one; one started with `!sharding.fluxcd.io/key` (the main instance) only the other.
#[tokio::test]
async fn label_selector_shards_the_canaries() {
    const SHARD: &str = "sharding.fluxcd.io/key";
    let client = client().await;
    let ns = TestNs::new(&client, "shards", 20).await;
    let canary = |name: &str, shard: Option<&str>| {
        let mut doc = yaml_docs(
            &podinfo_canary(5, 25, 50, 120)
                .replace("podinfo", name)
                .replace("NAMESPACE", &ns.name),
        )
        .remove(0);
        if let Some(s) = shard {
            doc["metadata"]["labels"] = json!({ SHARD: s });
        }
        doc
    };
    for name in ["sharded", "main"] {
        ns.apply_yaml(&podinfo(V1, 0.0, "").replace("podinfo", name))
            .await;
    }
    apply(&client, &canary("sharded", Some("shard1"))).await;
    apply(&client, &canary("main", None)).await;
    let phase = |name: &'static str| {
        let ns = &ns;
        async move { ns.canary(name).await.status.and_then(|s| s.phase) }
    };
    let start = |selector: &str, log: &str| {
        let prom = prometheus_url();
        let mut args = vec![
            "--metrics-server",
            prom.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--watch-label-selector",
            selector,
        ];
        args.extend(LOG_ARGS);
        ControllerProcess::start_with(
            &ns.name,
            &format!("{}-{log}", ns.name),
            &kubeconfig_path(),
            &args,
            &[],
        )
    };

    // the shard: the labelled Canary only
    let mut shard = start(&format!("{SHARD}=shard1"), "shard1");
    wait_phase(
        &ns,
        "sharded",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        phase("main").await,
        None,
        "the shard left the unlabelled Canary alone"
    );
    assert!(
        ns.deployment("main-primary").await.is_none(),
        "nor built its primary"
    );
    shard.terminate(Duration::from_secs(30));
    // forget the shard's work, so the main instance could be seen redoing it
    let api = ns.canaries();
    api.patch_status(
        "sharded",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": null})),
    )
    .await
    .unwrap();
    assert_eq!(phase("sharded").await, None);

    // the main instance: every Canary without the shard label
    let _main = start(&format!("!{SHARD}"), "main");
    wait_phase(
        &ns,
        "main",
        CanaryPhase::Initialized,
        Some(CanaryPhase::Failed),
        MINUTES(2),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        phase("sharded").await,
        None,
        "the main instance left the shard's Canary alone"
    );
    ns.cleanup().await;
}
