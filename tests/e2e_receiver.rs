//! Flux's Receiver against the real local control plane (`e2e/cluster up`), a real Git server
//! (`git http-backend`, as `tests/e2e_sources.rs`) and the real `pennant controller
//! --controllers source,notification` process, its HTTP server (`/hook/<digest>`) on a free
//! port. A GitRepository checks its remote every hour; only the webhooks make it fetch.
//!
//! [`a_signed_push_fetches_at_once_and_a_forged_one_changes_nothing`]: the Receivers become
//! Ready at Flux's path; a GitHub-signed push after a commit brings the new revision within
//! seconds (the latency is printed); a forged, unsigned or wrongly typed request is refused with
//! 400 and writes no `reconcile.fluxcd.io/requestedAt`; a signed `ping` is answered without a
//! reconcile; the GitLab token and generic-hmac variants (the latter by `*` + matchLabels)
//! fetch too; a suspended Receiver answers 503, an unknown path 404, a body above 3 MiB 413; a
//! Receiver whose Secret is missing is `Ready=False TokenNotFound` until the Secret appears.
//!
//! [`a_kustomization_handles_the_request_a_webhook_writes`]: with `--controllers
//! source,kustomize,notification`, a `generic` webhook naming a Kustomization is handled by the
//! kustomize controller (`status.lastHandledReconcileAt`) within seconds.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::receiver::{Receiver, webhook_path};
use pennant::api::source::GitRepository;
use ring::hmac;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::sources::{cleanup, revision, wait_revision};
use support::*;

const TOKEN: &str = "e2e-receiver-token-0f3c9a";
const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

fn hex_hmac(alg: hmac::Algorithm, key: &str, body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(alg, key.as_bytes()), body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn receiver_yaml(name: &str, type_: &str, secret: &str, extra: &str, resources: &str) -> String {
    format!(
        "apiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata:\n  name: {name}\n  namespace: NAMESPACE\nspec:\n  type: {type_}\n  secretRef:\n    name: {secret}\n{extra}  resources:\n{resources}"
    )
}

const APP_BY_NAME: &str =
    "    - apiVersion: source.toolkit.fluxcd.io/v1\n      kind: GitRepository\n      name: app\n";

async fn requested_at(repos: &Api<GitRepository>) -> Option<String> {
    let r = repos.get("app").await.unwrap();
    r.metadata
        .annotations
        .and_then(|a| a.get(REQUESTED_AT).cloned())
}

/// Polls every 50 ms until `app` stores `rev`; the time it took.
async fn time_to_revision(repos: &Api<GitRepository>, rev: &str, start: Instant) -> Duration {
    loop {
        let r = repos.get("app").await.unwrap();
        if revision(&r).as_deref() == Some(rev) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "app never fetched {rev}: {:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the Receiver is Ready at Flux's path for `TOKEN`; returns the path.
async fn wait_ready(receivers: &Api<Receiver>, name: &str, ns: &str) -> String {
    let want = webhook_path(TOKEN, name, ns);
    let mut last = None;
    for _ in 0..120 {
        let r = receivers.get(name).await.unwrap();
        let st = r.status.clone().unwrap_or_default();
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        if st.webhook_path.as_deref() == Some(want.as_str())
            && ready.is_some_and(|c| {
                c.status == "True"
                    && c.reason == "Succeeded"
                    && c.message == format!("Receiver initialized for path: {want}")
            })
        {
            return want;
        }
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Receiver {name} never Ready at {want}: {last:#?}");
}

#[tokio::test]
async fn a_signed_push_fetches_at_once_and_a_forged_one_changes_nothing() {
    let client = client().await;
    let ns = TestNs::new(&client, "receiver-e2e", 0).await;
    let storage = TempDir::new("pennant-storage");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _ctl = ControllerProcess::start_with(
        &ns.name,
        &format!("receiver-{}", ns.name),
        &kubeconfig_path(),
        &[
            "--controllers",
            "source,notification",
            "--storage-path",
            storage.path().to_str().unwrap(),
            "--listen",
            &listen,
            "--log-level",
            "info,pennant=debug",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30)).await;

    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("app");
    let c1 = repo.commit("main", &[("deploy/app.yaml", "v: 1\n")], "first");
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: app\n  namespace: NAMESPACE\n  labels:\n    fleet: receiver-e2e\nspec:\n  url: {}\n  interval: 1h\n  ref:\n    branch: main\n",
        server.url("app")
    ))
    .await;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    wait_revision::<GitRepository>(&ns, "app", &format!("main@sha1:{c1}")).await;

    // a Receiver whose Secret does not exist yet: not Ready, no path
    ns.apply_yaml(&receiver_yaml(
        "github",
        "github",
        "webhook-token",
        "  events:\n    - push\n",
        APP_BY_NAME,
    ))
    .await;
    wait_until(Duration::from_secs(30), "github TokenNotFound", || async {
        let st = receivers
            .get("github")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        st.webhook_path.is_none()
            && st.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.status == "False"
                    && c.reason == "TokenNotFound"
                    && c.message.contains("webhook-token")
            })
    })
    .await;
    // the Secret appears: the Receiver is Ready at once (the Secret watch, not the 10m interval)
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook-token\n  namespace: NAMESPACE\nstringData:\n  token: {TOKEN}\n"
    ))
    .await;
    let secret_at = Instant::now();
    let gh_path = wait_ready(&receivers, "github", &ns.name).await;
    assert!(
        secret_at.elapsed() < Duration::from_secs(10),
        "Ready {:?} after the Secret",
        secret_at.elapsed()
    );
    ns.apply_yaml(&receiver_yaml(
        "gitlab",
        "gitlab",
        "webhook-token",
        "  events:\n    - Push Hook\n",
        APP_BY_NAME,
    ))
    .await;
    ns.apply_yaml(&receiver_yaml(
        "hmac",
        "generic-hmac",
        "webhook-token",
        "",
        "    - kind: GitRepository\n      name: \"*\"\n      matchLabels:\n        fleet: receiver-e2e\n",
    ))
    .await;
    let gl_path = wait_ready(&receivers, "gitlab", &ns.name).await;
    let hmac_path = wait_ready(&receivers, "hmac", &ns.name).await;
    // the token is nowhere in the Receivers' status or Events
    let all = serde_json::to_string(&receivers.list(&Default::default()).await.unwrap()).unwrap();
    assert!(!all.contains(TOKEN));
    let events = ns.events("github").await;
    assert!(!format!("{events:?}").contains(TOKEN), "{events:?}");

    let http = reqwest::Client::new();
    let github_post = |body: &'static str, event: &str, signature: Option<String>| {
        let mut req = http
            .post(format!("{base}{gh_path}"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .body(body);
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        req.send()
    };
    let push_body = r#"{"ref":"refs/heads/main"}"#;
    let signed = |body: &str| {
        format!(
            "sha256={}",
            hex_hmac(hmac::HMAC_SHA256, TOKEN, body.as_bytes())
        )
    };

    // 1. a signed GitHub push after a commit: the new revision within seconds
    let c2 = repo.commit("main", &[("deploy/app.yaml", "v: 2\n")], "second");
    let start = Instant::now();
    let resp = github_post(push_body, "push", Some(signed(push_body)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let latency = time_to_revision(&repos, &format!("main@sha1:{c2}"), start).await;
    println!("github push → GitRepository artifact {c2}: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{latency:?}");

    // 2. forged, unsigned, wrong algorithm, filtered event: 400 and no reconcile request
    let c3 = repo.commit("main", &[("deploy/app.yaml", "v: 3\n")], "third");
    let before = requested_at(&repos).await;
    assert!(before.is_some(), "the push wrote a request");
    let forged = format!(
        "sha256={}",
        hex_hmac(hmac::HMAC_SHA256, "guessed-token", push_body.as_bytes())
    );
    let md5 = signed(push_body).replace("sha256=", "md5=");
    for (what, event, sig) in [
        ("forged", "push", Some(forged)),
        ("unsigned", "push", None),
        ("unknown algorithm", "push", Some(md5)),
        (
            "event not in spec.events",
            "issues",
            Some(signed(push_body)),
        ),
    ] {
        let resp = github_post(push_body, event, sig).await.unwrap();
        assert_eq!(resp.status(), 400, "{what}");
    }
    // a signed ping: 200, nothing requested
    let resp = github_post("{}", "ping", Some(signed("{}"))).await.unwrap();
    assert_eq!(resp.status(), 200, "ping");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(requested_at(&repos).await, before, "nothing was requested");
    assert_eq!(
        revision(&repos.get("app").await.unwrap()),
        Some(format!("main@sha1:{c2}")),
        "nothing was fetched"
    );

    // 3. GitLab: the token header
    let gitlab_post = |token: &str| {
        http.post(format!("{base}{gl_path}"))
            .header("x-gitlab-token", token)
            .header("x-gitlab-event", "Push Hook")
            .body("{}")
            .send()
    };
    let resp = gitlab_post("wrong-token").await.unwrap();
    assert_eq!(resp.status(), 400, "wrong GitLab token");
    assert_eq!(requested_at(&repos).await, before);
    let start = Instant::now();
    let resp = gitlab_post(TOKEN).await.unwrap();
    assert_eq!(resp.status(), 200);
    let latency = time_to_revision(&repos, &format!("main@sha1:{c3}"), start).await;
    println!("gitlab push → GitRepository artifact {c3}: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{latency:?}");

    // 4. generic-hmac, the GitRepository selected by `*` + matchLabels
    let c4 = repo.commit("main", &[("deploy/app.yaml", "v: 4\n")], "fourth");
    let body = r#"{"commit":"x"}"#;
    let hmac_post = |sig: String| {
        http.post(format!("{base}{hmac_path}"))
            .header("x-signature", sig)
            .body(body)
            .send()
    };
    let before = requested_at(&repos).await;
    let resp = hmac_post(format!(
        "sha1={}",
        hex_hmac(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            "guessed",
            body.as_bytes()
        )
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 400, "forged X-Signature");
    assert_eq!(requested_at(&repos).await, before);
    let start = Instant::now();
    let resp = hmac_post(format!(
        "sha1={}",
        hex_hmac(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TOKEN, body.as_bytes())
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let latency = time_to_revision(&repos, &format!("main@sha1:{c4}"), start).await;
    println!("generic-hmac → GitRepository artifact {c4}: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{latency:?}");

    // 5. unknown path 404; suspended 503 and nothing requested
    let unknown = webhook_path("other-token", "github", &ns.name);
    let resp = http
        .post(format!("{base}{unknown}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http
        .post(format!("{base}{hmac_path}"))
        .body(vec![b'x'; 3 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "above Flux's 3 MiB");
    receivers
        .patch(
            "github",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let before = requested_at(&repos).await;
    let resp = github_post(push_body, "push", Some(signed(push_body)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "suspended");
    assert_eq!(requested_at(&repos).await, before);

    cleanup(ns).await;
}

/// A Kustomization named by a Receiver (its `apiVersion` left out: pennant's default) handles
/// the request: `status.lastHandledReconcileAt` echoes the `requestedAt` the webhook wrote, with
/// no new commit and an interval of an hour.
#[tokio::test]
async fn a_kustomization_handles_the_request_a_webhook_writes() {
    let client = client().await;
    let ns = TestNs::new(&client, "receiver-ks", 0).await;
    let storage = TempDir::new("pennant-storage");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _ctl = ControllerProcess::start_with(
        &ns.name,
        &format!("receiver-{}", ns.name),
        &kubeconfig_path(),
        &[
            "--controllers",
            "source,kustomize,notification",
            "--storage-path",
            storage.path().to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[("PENNANT_KUSTOMIZE", &kustomize())],
    );
    let base = format!("http://{listen}");
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("cfg");
    let sha = repo.commit(
        "main",
        &[(
            "deploy/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: test\n",
        )],
        "config",
    );
    ns.apply_yaml(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: cfg\n  namespace: NAMESPACE\nspec:\n  url: {}\n  interval: 1h\n  ref:\n    branch: main\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: cfg\n  namespace: NAMESPACE\nspec:\n  interval: 1h\n  path: ./deploy\n  prune: true\n  targetNamespace: NAMESPACE\n  sourceRef:\n    kind: GitRepository\n    name: cfg\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook-token\n  namespace: NAMESPACE\nstringData:\n  token: {TOKEN}\n",
        server.url("cfg")
    ))
    .await;
    ns.apply_yaml(&receiver_yaml(
        "generic",
        "generic",
        "webhook-token",
        "",
        "    - kind: Kustomization\n      name: cfg\n",
    ))
    .await;
    let kss: Api<pennant::api::kustomization::Kustomization> =
        Api::namespaced(client.clone(), &ns.name);
    let applied = format!("main@sha1:{sha}");
    wait_until(Duration::from_secs(60), "cfg applied", || async {
        kss.get("cfg")
            .await
            .ok()
            .and_then(|k| k.status)
            .and_then(|s| s.last_applied_revision)
            == Some(applied.clone())
    })
    .await;
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    let path = wait_ready(&receivers, "generic", &ns.name).await;

    let start = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let k = kss.get("cfg").await.unwrap();
    let token = k.metadata.annotations.unwrap_or_default()[REQUESTED_AT].clone();
    loop {
        let st = kss.get("cfg").await.unwrap().status.unwrap_or_default();
        if st.last_handled_reconcile_at.as_deref() == Some(token.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the request {token} was never handled: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "generic webhook → Kustomization handled {token}: {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    let ks: Api<pennant::api::kustomization::Kustomization> =
        Api::namespaced(client.clone(), &ns.name);
    let _ = ks.delete("cfg", &Default::default()).await;
    wait_until(Duration::from_secs(30), "cfg finalized", || async {
        ks.get_opt("cfg").await.is_ok_and(|k| k.is_none())
    })
    .await;
    cleanup(ns).await;
}
