//! The command line of issue 18 end to end: the built `pennant` binary against the dev cluster,
//! pennant's controllers (`--controllers canary,source,kustomize`) and the real Git server. A GitRepository and a Kustomization applying a ConfigMap, a Deployment and a
//! Canary: `get all` lists them, `tree ks` shows the inventory with the Canary's objects,
//! `reconcile ks --with-source` waits for `lastHandledReconcileAt`, `promote`/`abort` write
//! the annotations the gate endpoints answer from, `events --for` lists the Kustomization's
//! Events, `kubectl pennant` is the same binary, and `get --watch` prints a row when an
//! object changes, in colour on a pseudo-terminal and plain when piped or with `NO_COLOR`.

mod support;

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use pennant::api::kustomization::Kustomization;
use pennant::gate::{CanaryRef, Gate, GateState};
use serde_json::{Value, json};
use support::gitserver::{GitServer, ServerOptions, TempDir};
use support::helmrepo::HelmRepo;
use support::hr::{delete_releases, hr_yaml, is_ready, wait_hr};
use support::sources::{cleanup, delete_all};
use support::*;

const CONFIG: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  level: info\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: podinfo\n          image: ghcr.io/stefanprodan/podinfo:6.1.0\n";
const CANARY: &str = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  provider: kubernetes\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 10s\n    threshold: 2\n    iterations: 2\n";

/// A HelmRepository `charts` at `url` and a HelmRelease `web` of its chart `hello`.
fn helm_release(url: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\nspec:\n  url: {url}\n  interval: 10m\n---\n{}",
        hr_yaml("web", "hello", "1.0.0", "").replace("  namespace: NAMESPACE\n", "")
    )
}

/// `pennant <args>` with the cluster's kubeconfig: (exit code, stdout, stderr).
fn pennant(args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[])
}

/// Runs its arguments in a pseudo-terminal and copies what they print to stdout (raw).
const PTY_DRIVER: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"#;

/// A running `pennant get … --watch` whose output is collected as it comes.
struct Watch {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    what: &'static str,
}

impl Watch {
    /// Started in a pseudo-terminal (`pty`) or with stdout piped; `no_color` sets `NO_COLOR=1`.
    fn start(what: &'static str, args: &[&str], pty: bool, no_color: bool) -> Watch {
        let bin = env!("CARGO_BIN_EXE_pennant");
        let mut cmd = if pty {
            let mut c = Command::new("python3");
            c.args(["-c", PTY_DRIVER, bin]);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let mut child = cmd.spawn().expect("start the watch");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(vec![]));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Watch { child, out, what }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits (60 s) until a line of the output, colour codes removed, satisfies `line`.
    async fn wait_line(&self, what: &str, line: impl Fn(&[&str]) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if plain(&text).lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                line(&cells)
            }) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} never printed {what}:\n{text}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without ANSI colour codes (and the pty's carriage returns).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

async fn set_suspend(client: &kube::Client, ns: &str, on: bool) {
    Api::<Kustomization>::namespaced(client.clone(), ns)
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": on}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn get_tree_reconcile_promote_abort_events_and_watch_against_the_cluster() {
    let client = client().await;
    let ns = TestNs::new(&client, "cli", 0).await;
    let n = ns.name.clone();
    let n = n.as_str();
    let storage = TempDir::new("pennant-storage");
    // the canary controller too: the Kustomization is Ready once its Canary is initialised
    let listen = format!("127.0.0.1:{}", free_port());
    let prom = prometheus_url();
    let _ctl = ControllerProcess::start_with(
        n,
        &format!("cli-{n}"),
        &kubeconfig_path(),
        &[
            "--controllers",
            "canary,source,kustomize,helm",
            "--storage-path",
            storage.path().to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-server",
            &prom,
            "--log-level",
            "info,pennant=debug",
        ],
        &[("PENNANT_HELM", &helm())],
    );
    let charts = HelmRepo::start(None);
    charts.add_chart("hello", "1.0.0");
    let server = GitServer::start(ServerOptions::default());
    let repo = server.create_repo("apps");
    let sha = repo.commit(
        "main",
        &[
            ("apps/config.yaml", CONFIG),
            ("apps/deployment.yaml", DEPLOYMENT),
            ("apps/canary.yaml", CANARY),
            ("apps/helm.yaml", &helm_release(&charts.url)),
        ],
        "podinfo and its canary",
    );
    support::kustomize::git_repository(&ns, "apps", &server.url("apps")).await;
    ns.apply_yaml(&format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: NAMESPACE\nspec:\n  interval: 10m\n  path: ./apps\n  prune: true\n  targetNamespace: {n}\n  sourceRef:\n    kind: GitRepository\n    name: apps\n"
    ))
    .await;
    // interval 10m: only the Canary's status changes wake the Kustomization's gate (a lost
    // wake-up held it at `not started` until the interval before gitops::canary_gate::Waiters)
    let rev = format!("main@sha1:{sha}");
    support::kustomize::wait_applied(&ns, "apps", &sha).await;
    wait_hr(&ns, "web", "released", |h| {
        is_ready(h, "True", "InstallSucceeded")
    })
    .await;
    let short = format!("main@sha1:{}", &sha[..8]);

    // get all: a section per kind, the Flux columns, the revision cut as flux cuts it
    let (code, out, err) = pennant(&["get", "all", "-n", n]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "no colour when piped:\n{out}");
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let git = row("gitrepository/apps");
    assert_eq!(&git[1..4], [short.as_str(), "False", "True"], "{out}");
    let ks = row("kustomization/apps");
    assert_eq!(&ks[1..4], [short.as_str(), "False", "True"], "{out}");
    assert!(out.contains(&format!("Applied revision: {short}")), "{out}");
    let cd = row("canary/podinfo");
    assert!(
        out.contains("NAME             STATUS") || out.contains("STATUS   WEIGHT"),
        "Flagger's columns:\n{out}"
    );
    assert_eq!(&cd[1..3], ["Initialized", "0"], "phase and weight: {out}");
    let hr = row("helmrelease/web");
    assert_eq!(&hr[1..4], ["1.0.0", "False", "True"], "{out}");
    let chart = row(&format!("helmchart/{n}-web"));
    assert_eq!(&chart[1..4], ["1.0.0", "False", "True"], "{out}");
    assert_eq!(row("helmrepository/charts")[3], "True", "{out}");
    assert!(
        out.find("gitrepository/apps") < out.find("kustomization/apps")
            && out.find("kustomization/apps") < out.find("canary/podinfo"),
        "sources, then Kustomizations, then Canaries:\n{out}"
    );

    // -o json: the summaries
    let (code, out, err) = pennant(&["get", "ks", "-n", n, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["kind"], "Kustomization");
    assert_eq!(rows[0]["name"], "apps");
    assert_eq!(rows[0]["ready"], "True");
    assert_eq!(rows[0]["revision"], short.as_str());
    // one object by name, as `flux get ks apps`
    let (code, out, _) = pennant(&["get", "sources", "helm", "charts", "-n", n]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "header and one row:\n{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("charts "), "{out}");
    let (code, out, err) = pennant(&["get", "ks", "missing", "-n", n]);
    assert_eq!(
        (code, out.as_str()),
        (1, ""),
        "a named object missing fails, as flux get"
    );
    assert!(
        err.contains("no \"missing\" Kustomization objects found"),
        "{err}"
    );
    let (code, out, _) = pennant(&["get", "sources", "git", "-n", n, "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("kind: GitRepository") && out.contains("name: apps"),
        "{out}"
    );

    // tree ks: the inventory, the Canary with its state and its objects beneath
    let (code, out, err) = pennant(&["tree", "ks", "apps", "-n", n]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("Kustomization/{n}/apps [Ready=True {short}]")
    );
    for want in [
        format!("── ConfigMap/{n}/web-config"),
        format!("── Deployment/{n}/podinfo"),
        format!("── Canary/{n}/podinfo ["),
        format!("── Deployment/{n}/podinfo-primary"),
        format!("── Service/{n}/podinfo-canary"),
        format!("── HelmRelease/{n}/web [Ready=True 1.0.0]"),
        format!("── ConfigMap/{n}/web-hello"),
        format!("── HelmRepository/{n}/charts [Ready=True"),
    ] {
        assert!(out.contains(&want), "{want:?} missing:\n{out}");
    }
    let (code, out, _) = pennant(&["tree", "ks", "apps", "-n", n, "-o", "json"]);
    assert_eq!(code, 0);
    let tree: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tree["items"].as_array().unwrap().len(), 5, "{out}");

    // reconcile ks --with-source: the source first, then the Kustomization, each waited for
    let before = Api::<Kustomization>::namespaced(client.clone(), n)
        .get("apps")
        .await
        .unwrap();
    let (code, out, err) = pennant(&[
        "reconcile",
        "ks",
        "apps",
        "-n",
        n,
        "--with-source",
        "--timeout",
        "60s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "Kustomization {n}/apps reconciled: Applied revision: {rev}"
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!("✔ GitRepository {n}/apps")),
        "source first: {err}"
    );
    let after = Api::<Kustomization>::namespaced(client.clone(), n)
        .get("apps")
        .await
        .unwrap();
    let token =
        after.metadata.annotations.as_ref().unwrap()["reconcile.fluxcd.io/requestedAt"].clone();
    let handled = after
        .status
        .as_ref()
        .unwrap()
        .last_handled_reconcile_at
        .clone();
    assert_eq!(handled.as_deref(), Some(token.as_str()));
    assert_ne!(
        before.status.unwrap().last_handled_reconcile_at,
        handled,
        "a new request was handled"
    );
    let git: Value = ns
        .get("source.toolkit.fluxcd.io/v1", "GitRepository", "apps")
        .await
        .unwrap();
    assert_eq!(
        git["status"]["lastHandledReconcileAt"],
        git["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
    );
    // a Canary has nothing to request; a missing object fails
    let (code, _, err) = pennant(&["reconcile", "canary", "podinfo", "-n", n]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing to request"), "{err}");
    let (code, _, err) = pennant(&["reconcile", "hr", "missing", "-n", n, "--timeout", "5s"]);
    assert_ne!(code, 0);
    assert_eq!(
        err.trim(),
        format!(
            "Error: HelmRelease {n}/missing: helmreleases.helm.toolkit.fluxcd.io \"missing\" not found"
        ),
        "one line, the API server's message"
    );
    let (code, _, err) = pennant(&["events", "--for", "ks/missing", "-n", n]);
    assert_ne!(code, 0);
    assert!(err.contains("\"missing\" not found"), "{err}");
    // reconcile hr --force --reset: a one-off upgrade without a change and the failure counters
    // reset, as `flux reconcile hr`; both echoed in status with the request's token. `events
    // --watch` prints the upgrade's Event as it comes.
    let events = Watch::start(
        "events --watch",
        &["events", "--for", "hr/web", "-n", n, "--watch"],
        false,
        false,
    );
    events
        .wait_line("the install's Event", |c| c.contains(&"InstallSucceeded"))
        .await;
    let (code, out, err) = pennant(&[
        "reconcile",
        "hr",
        "web",
        "-n",
        n,
        "--force",
        "--reset",
        "--timeout",
        "60s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("HelmRelease {n}/web reconciled")),
        "{out}"
    );
    let hr: Value = ns
        .get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "web")
        .await
        .unwrap();
    let token = &hr["metadata"]["annotations"]["reconcile.fluxcd.io/forceAt"];
    assert!(token.is_string(), "{hr}");
    assert_eq!(&hr["status"]["lastHandledForceAt"], token);
    assert_eq!(&hr["status"]["lastHandledResetAt"], token);
    assert_eq!(
        hr["status"]["history"][0]["version"], 2,
        "the forced upgrade is release 2: {}",
        hr["status"]["history"]
    );
    let text = events
        .wait_line("the upgrade's Event", |c| {
            c.contains(&"UpgradeSucceeded") && c.contains(&"HelmRelease/web")
        })
        .await;
    assert_eq!(
        plain(&text).matches("LAST SEEN").count(),
        1,
        "one header:\n{text}"
    );
    drop(events);
    let (code, _, err) = pennant(&["reconcile", "ks", "apps", "-n", n, "--force"]);
    assert_ne!(code, 0);
    assert!(err.contains("HelmRelease only"), "{err}");

    // promote / abort: the annotations the gate endpoints read
    let canary = CanaryRef {
        namespace: n.into(),
        name: "podinfo".into(),
    };
    assert_eq!(
        pennant::gate::read(&client, &canary, Gate::Promotion)
            .await
            .unwrap(),
        GateState::Closed
    );
    let (code, out, err) = pennant(&["promote", "podinfo", "-n", n]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gate.pennant.dev/promotion=open"), "{out}");
    assert_eq!(
        pennant::gate::read(&client, &canary, Gate::Promotion)
            .await
            .unwrap(),
        GateState::Open
    );
    assert_eq!(
        pennant::gate::read(&client, &canary, Gate::Rollback)
            .await
            .unwrap(),
        GateState::Closed
    );
    let (code, out, err) = pennant(&["abort", "podinfo", "-n", n]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gate.pennant.dev/rollback=open"), "{out}");
    assert_eq!(
        pennant::gate::read(&client, &canary, Gate::Rollback)
            .await
            .unwrap(),
        GateState::Open
    );
    let (code, _, _) = pennant(&["promote", "missing", "-n", n]);
    assert_ne!(code, 0, "a missing Canary fails");

    // events --for: the Kustomization's Events, oldest first
    let (code, out, err) = pennant(&["events", "--for", "ks/apps", "-n", n]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("LAST SEEN   TYPE"), "{out}");
    assert!(lines.len() > 1, "{out}");
    assert!(
        lines[1..].iter().all(|l| l.contains("Kustomization/apps")),
        "{out}"
    );
    let (_, all, _) = pennant(&["events", "-n", n]);
    assert!(all.contains("GitRepository/apps"), "{all}");

    // kubectl pennant: the same binary under the plugin's name, found on the PATH
    let bin_dir = TempDir::new("pennant-plugin");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_pennant"),
        bin_dir.path().join("kubectl-pennant"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl())
        .args(["pennant", "get", "ks", "-n", n])
        .env("KUBECONFIG", kubeconfig_path())
        .env("PATH", &path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("NAME   REVISION") && text.contains(&short),
        "{text}"
    );
    let out = Command::new(kubectl())
        .args(["pennant", "get"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage: kubectl pennant get"), "{err}");

    // get --watch: a row when the Kustomization changes; colour only on the pseudo-terminal
    let args = ["get", "ks", "-n", n, "--watch"];
    let tty = Watch::start("pty", &args, true, false);
    let piped = Watch::start("piped", &args, false, false);
    let no_color = Watch::start("pty NO_COLOR", &args, true, true);
    for w in [&tty, &piped, &no_color] {
        w.wait_line("the table", |c| {
            c.first() == Some(&"apps") && c.get(2) == Some(&"False")
        })
        .await;
    }
    set_suspend(&client, n, true).await;
    for w in [&tty, &piped, &no_color] {
        let text = w
            .wait_line("the suspended row", |c| {
                c.first() == Some(&"apps") && c.get(2) == Some(&"True")
            })
            .await;
        let header_count = plain(&text).matches("NAME").count();
        assert_eq!(
            header_count, 1,
            "{}: one header, then rows:\n{text}",
            w.what
        );
    }
    assert!(
        tty.text().contains("\x1b[32mTrue\x1b[0m"),
        "colour on a terminal:\n{}",
        tty.text()
    );
    assert!(
        !piped.text().contains('\x1b'),
        "no colour when piped:\n{}",
        piped.text()
    );
    assert!(
        !no_color.text().contains('\x1b'),
        "NO_COLOR:\n{}",
        no_color.text()
    );
    drop((tty, piped, no_color));
    set_suspend(&client, n, false).await;

    delete_all::<Kustomization>(&ns, "Kustomizations").await;
    delete_releases(&ns).await;
    cleanup(ns).await;
}
