//! Flux-compatible notifications end to end, against the real local control plane: one
//! `pennant controller --controllers canary,source,kustomize,helm,notification` process, a real
//! Git server, a real HTTP Helm repository and `helm`, and HTTP receivers in the test answering
//! the shapes of Slack's incoming webhooks, a generic-hmac webhook and GitHub's commit-status
//! API.
//!
//! [`one_alert_carries_kustomization_helm_release_and_canary_events`]: one Alert with
//! `eventSources` Kustomization, HelmRelease and Canary `*` delivers the events of all three
//! to a Slack-shaped receiver (author_name, color, the revision and `eventMetadata` as fields);
//! a `generic-hmac` Provider's `X-Signature` verifies over the exact body; a `github` Provider
//! sets a commit status on the Kustomization's commit (Flux's default context); `matchLabels`
//! reads the live object's labels; a Provider that answers 403 makes a Warning Event on its
//! Alert naming the Provider, without the secret path or token; a Provider type pennant does
//! not deliver to (`pagerduty`) and an ignored field (`certSecretRef`) are a Warning each, once.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use kube::Api;
use pennant::api::kustomization::Kustomization;
use serde_json::Value;
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::helmrepo::HelmRepo;
use support::hr::{delete_releases, helm_repository, hr_yaml, ready_reason, wait_hr};
use support::kustomize::{commit_apps, git_repository, ks, wait_ks};
use support::sources::cleanup;
use support::*;

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    raw: Vec<u8>,
    body: Value,
}

impl Hit {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// An HTTP receiver on 127.0.0.1 recording every request; paths under `/fail/` answer 403,
/// the rest 200 `ok` (what Slack's incoming webhooks answer).
async fn receiver() -> (String, Hits) {
    async fn record(
        State(hits): State<Hits>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        hits.lock().unwrap().push(Hit {
            path: uri.path().to_string(),
            headers,
            raw: body.to_vec(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        if uri.path().starts_with("/fail/") {
            (StatusCode::FORBIDDEN, "invalid_token")
        } else {
            (StatusCode::OK, "ok")
        }
    }
    let hits: Hits = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

fn hits_at(hits: &Hits, prefix: &str) -> Vec<Hit> {
    hits.lock()
        .unwrap()
        .iter()
        .filter(|h| h.path.starts_with(prefix))
        .cloned()
        .collect()
}

/// The first Slack attachment received with `author_name` and a text containing `needle`.
fn slack_attachment(hits: &Hits, author: &str, needle: &str) -> Option<Value> {
    hits_at(hits, "/slack/")
        .into_iter()
        .map(|h| h.body["attachments"][0].clone())
        .find(|a| a["author_name"] == author && a["text"].as_str().unwrap_or("").contains(needle))
}

fn field(attachment: &Value, title: &str) -> Option<String> {
    attachment["fields"]
        .as_array()?
        .iter()
        .find(|f| f["title"] == title)
        .and_then(|f| f["value"].as_str().map(str::to_string))
}

#[tokio::test]
async fn one_alert_carries_kustomization_helm_release_and_canary_events() {
    let client = client().await;
    let ns = TestNs::new(&client, "notif-e2e", 0).await;
    let (base, hits) = receiver().await;

    // Providers and Alerts first: they are in the cache when the first event comes
    ns.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: slack-url, namespace: NAMESPACE}}
stringData:
  address: {base}/slack/T000/B000/XXXX
---
apiVersion: v1
kind: Secret
metadata: {{name: hmac, namespace: NAMESPACE}}
stringData:
  token: hmac-key-1
  headers: |
    X-Team: platform
---
apiVersion: v1
kind: Secret
metadata: {{name: github-token, namespace: NAMESPACE}}
stringData:
  token: ghp_SECRETTOKEN
---
apiVersion: v1
kind: Secret
metadata: {{name: failing-url, namespace: NAMESPACE}}
stringData:
  address: {base}/fail/SECRETPATH
  token: FAILTOKEN
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: slack, namespace: NAMESPACE}}
spec: {{type: slack, channel: deploys, secretRef: {{name: slack-url}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: signed, namespace: NAMESPACE}}
spec: {{type: generic-hmac, address: "{base}/hmac", secretRef: {{name: hmac}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: github, namespace: NAMESPACE}}
spec: {{type: github, address: "{base}/org/app", secretRef: {{name: github-token}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: failing, namespace: NAMESPACE}}
spec: {{type: generic, secretRef: {{name: failing-url}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: everything, namespace: NAMESPACE}}
spec:
  providerRef: {{name: slack}}
  eventMetadata: {{cluster: dev-eu}}
  eventSources:
    - {{kind: Kustomization, name: "*"}}
    - {{kind: HelmRelease, name: "*"}}
    - {{kind: Canary, name: "*"}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: signed, namespace: NAMESPACE}}
spec:
  providerRef: {{name: signed}}
  eventSources: [{{kind: Kustomization, name: apps}}]
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: commit-status, namespace: NAMESPACE}}
spec:
  providerRef: {{name: github}}
  eventSources: [{{kind: Kustomization, name: apps}}]
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: labelled, namespace: NAMESPACE}}
spec: {{type: slack, address: "{base}/labelled/hook"}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: labelled, namespace: NAMESPACE}}
spec:
  providerRef: {{name: labelled}}
  eventSources:
    - {{kind: Kustomization, name: "*", matchLabels: {{team: platform}}}}
    - {{kind: HelmRelease, name: "*", matchLabels: {{team: platform}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: pager, namespace: NAMESPACE}}
spec: {{type: pagerduty, address: "{base}/pager"}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: paged, namespace: NAMESPACE}}
spec:
  providerRef: {{name: pager}}
  eventSources: [{{kind: Kustomization, name: apps}}]
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: tls, namespace: NAMESPACE}}
spec: {{type: generic, address: "{base}/tls", certSecretRef: {{name: ca}}}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: tls, namespace: NAMESPACE}}
spec:
  providerRef: {{name: tls}}
  eventSources: [{{kind: Kustomization, name: apps}}]
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: broken, namespace: NAMESPACE}}
spec:
  providerRef: {{name: failing}}
  eventSources: [{{kind: Kustomization, name: "*"}}]
"#
    ))
    .await;

    let storage = TempDir::new("pennant-storage");
    let listen = format!("127.0.0.1:{}", free_port());
    let (helm, kustomize) = (helm(), kustomize());
    let prometheus = prometheus_url();
    let _ctl = ControllerProcess::start_with(
        &ns.name,
        &format!("notif-{}", ns.name),
        &kubeconfig_path(),
        &[
            "--controllers",
            "canary,source,kustomize,helm,notification",
            "--storage-path",
            storage.path().to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-server",
            &prometheus,
            "--log-level",
            "info,pennant=debug",
        ],
        &[("PENNANT_HELM", &helm), ("PENNANT_KUSTOMIZE", &kustomize)],
    );
    wait_http(&format!("http://{listen}/readyz"), Duration::from_secs(30)).await;

    // a Kustomization from Git, a HelmRelease from a Helm repository and a Canary, at once
    let git = GitServer::start(ServerOptions::default());
    let repo = git.create_repo("apps");
    let sha = commit_apps(&repo, 1);
    git_repository(&ns, "apps", &git.url("apps")).await;
    let mut apps = ks("apps", &ns.name);
    apps.metadata.labels = Some([("team".to_string(), "platform".to_string())].into());
    Api::<Kustomization>::namespaced(client.clone(), &ns.name)
        .create(&Default::default(), &apps)
        .await
        .unwrap();
    let charts = HelmRepo::start(None);
    charts.add_chart("app", "1.0.0");
    helm_repository(&ns, &charts.url).await;
    ns.apply_yaml(&hr_yaml("web", "app", "1.0.0", "")).await;
    ns.apply_yaml(&podinfo("ghcr.io/stefanprodan/podinfo:6.0.0", 0.0, ""))
        .await;
    ns.apply_yaml(&podinfo_canary(2, 25, 50, 120)).await;

    wait_ks(&ns, "apps", &sha, "ReconciliationSucceeded").await;
    wait_hr(&ns, "web", "installed", |h| {
        ready_reason(h) == Some(("True".into(), "InstallSucceeded".into()))
    })
    .await;
    wait_initialized(&ns, "podinfo").await;

    // Slack: one Alert, three kinds
    let ks_author = format!("kustomization/apps.{}", ns.name);
    let hr_author = format!("helmrelease/web.{}", ns.name);
    let canary_author = format!("canary/podinfo.{}", ns.name);
    let expected = [
        (&ks_author, "created"),
        (&hr_author, "Helm install succeeded"),
        (&canary_author, "Initialization done"),
    ];
    wait_until(
        Duration::from_secs(30),
        "Slack gets all three kinds",
        || async {
            expected
                .iter()
                .all(|(a, n)| slack_attachment(&hits, a, n).is_some())
        },
    )
    .await;
    let slack = hits_at(&hits, "/slack/");
    assert!(slack.iter().all(|h| h.path == "/slack/T000/B000/XXXX"));
    assert!(slack.iter().all(|h| h.body["channel"] == "deploys"));
    let k = slack_attachment(&hits, &ks_author, "created").unwrap();
    println!("Kustomization on Slack: {k}");
    assert_eq!(k["color"], "good");
    assert_eq!(
        field(&k, "revision").as_deref(),
        Some(format!("main@sha1:{sha}").as_str())
    );
    assert_eq!(field(&k, "cluster").as_deref(), Some("dev-eu"));
    let ks_hit = slack
        .iter()
        .find(|h| h.body["attachments"][0]["author_name"] == ks_author.as_str())
        .unwrap();
    assert_eq!(ks_hit.body["username"], "kustomize-controller");
    let h = slack_attachment(&hits, &hr_author, "Helm install succeeded").unwrap();
    println!("HelmRelease on Slack: {h}");
    assert_eq!(h["color"], "good");
    assert_eq!(field(&h, "revision").as_deref(), Some("1.0.0"));
    let c = slack_attachment(&hits, &canary_author, "Initialization done").unwrap();
    println!("Canary on Slack: {c}");
    assert_eq!(c["color"], "good");
    assert_eq!(field(&c, "cluster").as_deref(), Some("dev-eu"));
    assert_eq!(field(&c, "phase").as_deref(), Some("Initialized"));
    assert!(field(&c, "revision").is_some_and(|r| !r.is_empty()), "{c}");
    // a Warning notice (the primary not ready yet) is an error: `danger`
    if let Some(w) = slack_attachment(&hits, &canary_author, "not ready") {
        assert_eq!(w["color"], "danger");
    }
    // a commit-status update is not for chat providers (Flux's routing)
    assert!(
        slack.iter().all(|h| h.body["attachments"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["title"] != "commit_status")),
        "no commit_status event on Slack"
    );

    // generic-hmac: the signature covers the exact body
    wait_until(Duration::from_secs(20), "a signed event", || async {
        !hits_at(&hits, "/hmac").is_empty()
    })
    .await;
    for hit in hits_at(&hits, "/hmac") {
        let want = format!(
            "sha256={}",
            pennant::notify::flux::hmac_sha256(b"hmac-key-1", &hit.raw)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(hit.header("x-signature"), want);
        assert_eq!(hit.header("gotk-component"), "kustomize-controller");
        assert_eq!(hit.header("x-team"), "platform");
        assert_eq!(hit.body["involvedObject"]["kind"], "Kustomization");
        assert_eq!(hit.body["involvedObject"]["name"], "apps");
        assert_eq!(hit.body["severity"], "info");
        assert_eq!(hit.body["reportingController"], "kustomize-controller");
    }

    // GitHub: a commit status on the applied commit, Flux's default context
    let status_path = format!("/api/v3/repos/org/app/statuses/{sha}");
    wait_until(Duration::from_secs(20), "a commit status", || async {
        !hits_at(&hits, &status_path).is_empty()
    })
    .await;
    let provider: Value = ns
        .get(
            "notification.toolkit.fluxcd.io/v1beta3",
            "Provider",
            "github",
        )
        .await
        .unwrap();
    let uid = provider["metadata"]["uid"].as_str().unwrap();
    let status = &hits_at(&hits, &status_path)[0];
    println!("commit status: {}", status.body);
    assert_eq!(status.header("authorization"), "Bearer ghp_SECRETTOKEN");
    assert_eq!(status.body["state"], "success");
    assert_eq!(
        status.body["context"],
        format!("kustomization/apps/{}", uid.split('-').next().unwrap())
    );
    assert_eq!(status.body["description"], "reconciliation succeeded");

    // a failing Provider: a Warning Event on its Alert naming the Provider, no secret in it
    assert!(
        !hits_at(&hits, "/fail/").is_empty(),
        "the failing provider was called"
    );
    let events = ns
        .events_until("broken", |evs| {
            evs.iter()
                .any(|(t, m)| t == "Warning" && m.contains("failed to dispatch"))
        })
        .await;
    let (_, message) = events
        .iter()
        .find(|(t, m)| t == "Warning" && m.contains("failed to dispatch"))
        .unwrap_or_else(|| panic!("no Warning on the Alert: {events:?}"));
    println!("Warning on the Alert: {message}");
    assert!(
        message.contains(&format!("Provider {}/failing", ns.name)),
        "{message}"
    );
    assert!(message.contains("returned 403: invalid_token"), "{message}");
    assert!(
        !message.contains("SECRETPATH") && !message.contains("FAILTOKEN"),
        "{message}"
    );
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("broken"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "NotificationDispatchFailed"),
        "{reasons:?}"
    );
    // matchLabels: the labelled Kustomization's events, not the unlabelled HelmRelease's
    let labelled = hits_at(&hits, "/labelled/");
    assert!(
        !labelled.is_empty(),
        "matchLabels let the labelled Kustomization through"
    );
    assert!(
        labelled
            .iter()
            .all(|h| h.body["attachments"][0]["author_name"] == ks_author.as_str()),
        "{labelled:?}"
    );

    // accepted but not implemented: a Warning on the Alert naming the Provider (once), and
    // an ignored field does not stop the delivery
    let not_implemented = |alert: &'static str, needle: &'static str| {
        let ns = &ns;
        async move {
            let evs = ns
                .events_until(alert, |evs| evs.iter().any(|(_, m)| m.contains(needle)))
                .await;
            let w: Vec<_> = evs
                .into_iter()
                .filter(|(t, m)| t == "Warning" && m.contains(needle))
                .collect();
            assert_eq!(w.len(), 1, "{alert}: {w:?}");
            w[0].1.clone()
        }
    };
    let m = not_implemented("paged", "pagerduty").await;
    assert!(m.contains(&format!("Provider {}/pager", ns.name)), "{m}");
    assert!(hits_at(&hits, "/pager").is_empty());
    let m = not_implemented("tls", "spec.certSecretRef").await;
    assert!(m.contains(&format!("Provider {}/tls", ns.name)), "{m}");
    assert!(!hits_at(&hits, "/tls").is_empty());

    // the Alerts that work have no Warning
    for alert in ["everything", "signed", "commit-status", "labelled"] {
        let w: Vec<_> = ns
            .events(alert)
            .await
            .into_iter()
            .filter(|(t, _)| t == "Warning")
            .collect();
        assert!(w.is_empty(), "{alert}: {w:?}");
    }
    // finalizers first (the controller is still running), then the namespace
    support::sources::delete_all::<Kustomization>(&ns, "Kustomizations").await;
    delete_releases(&ns).await;
    cleanup(ns).await;
}
