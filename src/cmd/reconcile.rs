//! `pennant reconcile KIND NAME [-n NS] [--with-source] [--timeout 5m]`, as `flux reconcile`:
//! writes `reconcile.fluxcd.io/requestedAt: <now>` on the object
//! ([`crate::gitops::reconcile_request`]), waits until the controller echoes it to
//! `status.lastHandledReconcileAt`, then reports the Ready condition (exit 1 when it is not
//! True, or on timeout). `--with-source` first reconciles the object's source (a
//! Kustomization's `sourceRef`, a HelmRelease's HelmChart or `chartRef`, a HelmChart's
//! `sourceRef`), as `flux reconcile ks|hr|chart --with-source`. A HelmRelease takes `--force`
//! (`reconcile.fluxcd.io/forceAt`: a one-off upgrade even without a change) and `--reset`
//! (`reconcile.fluxcd.io/resetAt`: the failure counters reset), as `flux reconcile hr`; the
//! wait then also covers `status.lastHandledForceAt` / `lastHandledResetAt`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::get::client;
use crate::api::helm_release::{FORCE_REQUESTED_AT_ANNOTATION, RESET_REQUESTED_AT_ANNOTATION};
use crate::gitops::reconcile_request;
use crate::view::Kind;

/// `pennant reconcile`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// `KIND NAME`, or `source KIND NAME` as `flux reconcile source git apps`. Kinds:
    /// `gitrepository` (`git`), `ocirepository` (`oci`), `helmrepository` (`helmrepo`),
    /// `helmchart` (`chart`), `kustomization` (`ks`), `helmrelease` (`hr`), `receiver`,
    /// `artifactgenerator` (`ag`).
    #[arg(num_args = 2..=3, required = true, value_name = "KIND NAME")]
    pub words: Vec<String>,
    /// Namespace (default: the kubeconfig context's namespace, as kubectl).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Reconcile the object's source first.
    #[arg(long)]
    pub with_source: bool,
    /// How long to wait for each reconcile: `30s`, `5m` (default 5m, as `flux`).
    #[arg(long, default_value = "5m", value_parser = super::parse_seconds)]
    pub timeout: u64,
    /// HelmRelease only: force a one-off upgrade (or install) even without a change.
    #[arg(long)]
    pub force: bool,
    /// HelmRelease only: reset the install/upgrade failure counters.
    #[arg(long)]
    pub reset: bool,
}

/// The extra requests of a reconcile beside `requestedAt`: the annotations written with the
/// same token and the status fields that echo them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub force: bool,
    pub reset: bool,
}

impl Extra {
    /// (annotation, status field) of each extra request.
    fn requests(self) -> Vec<(&'static str, &'static str)> {
        let mut r = vec![];
        if self.force {
            r.push((FORCE_REQUESTED_AT_ANNOTATION, "lastHandledForceAt"));
        }
        if self.reset {
            r.push((RESET_REQUESTED_AT_ANNOTATION, "lastHandledResetAt"));
        }
        r
    }
}

/// The merge patch of a reconcile request: `requestedAt`
/// ([`reconcile_request::request_patch`]) and the `extra` annotations, all `token`. PURE.
pub fn request_patch(token: &str, extra: Extra) -> Value {
    let mut patch = reconcile_request::request_patch(token);
    for (a, _) in extra.requests() {
        patch["metadata"]["annotations"][a] = token.into();
    }
    patch
}

/// Whether `status` shows the request of `token` handled: `lastHandledReconcileAt` and the
/// `extra` requests' fields equal `token`. PURE.
pub fn handled(status: &Value, token: &str, extra: Extra) -> bool {
    std::iter::once("lastHandledReconcileAt")
        .chain(extra.requests().into_iter().map(|(_, f)| f))
        .all(|f| status[f].as_str() == Some(token))
}

/// A kind `pennant reconcile` can request: its kind and `apiVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconcilable {
    pub kind: &'static str,
    pub api_version: &'static str,
}

/// The kind a word names for `reconcile` (see [`Kind::parse`], plus `receiver` and
/// `artifactgenerator`/`ag`, source-watcher's). A Canary is
/// refused: it is reconciled on every change and each analysis interval, with nothing to
/// request; `promote`, `abort` and `gate` act on it. PURE.
pub fn reconcilable(word: &str) -> anyhow::Result<Reconcilable> {
    match word.to_ascii_lowercase().as_str() {
        "receiver" | "receivers" => {
            return Ok(Reconcilable {
                kind: "Receiver",
                api_version: "notification.toolkit.fluxcd.io/v1",
            });
        }
        "artifactgenerator" | "artifactgenerators" | "ag" => {
            return Ok(Reconcilable {
                kind: "ArtifactGenerator",
                api_version: "source.extensions.fluxcd.io/v1beta1",
            });
        }
        _ => {}
    }
    match Kind::parse(word) {
        Some(Kind::Canary) => bail!(
            "a Canary is reconciled on every change and at each analysis interval: there is \
             nothing to request (to act on a run: pennant promote|abort CANARY)"
        ),
        Some(k) => Ok(Reconcilable {
            kind: k.as_str(),
            api_version: k.api_version(),
        }),
        None => bail!(
            "{word:?}: expected a kind: git, oci, helmrepo, chart, ks, hr, receiver or ag \
             (or `source git|oci|helm|chart`)"
        ),
    }
}

/// `words` (`KIND NAME` or `source KIND NAME`) as the kind and name. PURE.
pub fn parse_words(words: &[String]) -> anyhow::Result<(Reconcilable, String)> {
    match words {
        [kind, name] => Ok((reconcilable(kind)?, name.clone())),
        [source, kind, name] if source == "source" || source == "sources" => {
            let r = reconcilable(kind)?;
            if !Kind::SOURCES.iter().any(|k| k.as_str() == r.kind) {
                bail!("{kind:?} is not a source kind (git, oci, helm, chart)");
            }
            Ok((r, name.clone()))
        }
        _ => bail!("expected KIND NAME or source KIND NAME, got {words:?}"),
    }
}

/// The source a `--with-source` reconcile visits first: kind, namespace, name. `None` when the
/// object names none (a source itself, or a HelmRelease whose chart is not generated yet).
/// PURE.
pub fn source_of(kind: &str, obj: &Value) -> Option<(String, String, String)> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let of_ref = |r: &Value| {
        Some((
            r["kind"].as_str()?.to_string(),
            r["namespace"].as_str().unwrap_or(ns).to_string(),
            r["name"].as_str()?.to_string(),
        ))
    };
    match kind {
        "Kustomization" | "HelmChart" => of_ref(&obj["spec"]["sourceRef"]),
        "HelmRelease" => of_ref(&obj["spec"]["chartRef"]).or_else(|| {
            let (cns, name) = obj["status"]["helmChart"].as_str()?.split_once('/')?;
            Some(("HelmChart".into(), cns.into(), name.into()))
        }),
        _ => None,
    }
}

fn api_for(client: &Client, r: Reconcilable, ns: &str) -> Api<DynamicObject> {
    let (group, version) = r
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", r.api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, r.kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Requests a reconcile of `kind` `ns/name` (its source first with `with_source`, with the
/// `extra` requests of a HelmRelease), waits up to `timeout` for it to be handled, and returns
/// the Ready message; an error when the object is suspended, Ready is not True afterwards, or
/// the wait times out.
pub async fn reconcile(
    client: &Client,
    r: Reconcilable,
    ns: &str,
    name: &str,
    with_source: bool,
    extra: Extra,
    timeout: Duration,
) -> anyhow::Result<String> {
    let api = api_for(client, r, ns);
    let obj = api
        .get(name)
        .await
        .with_context(|| format!("{} {ns}/{name}", r.kind))?;
    let obj = serde_json::to_value(&obj)?;
    if obj["spec"]["suspend"].as_bool() == Some(true) {
        bail!("{} {ns}/{name} is suspended", r.kind);
    }
    if with_source {
        match source_of(r.kind, &obj) {
            Some((kind, sns, sname)) => {
                let sr = reconcilable(&kind)?;
                let no = Extra::default();
                let msg = Box::pin(reconcile(client, sr, &sns, &sname, false, no, timeout)).await?;
                eprintln!("✔ {kind} {sns}/{sname}: {msg}");
            }
            None => eprintln!("✗ {} {ns}/{name} names no source to reconcile", r.kind),
        }
    }
    let token = Timestamp::now().to_string();
    eprintln!("► annotating {} {name} in {ns} namespace", r.kind);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(request_patch(&token, extra)),
    )
    .await
    .with_context(|| format!("annotate {} {ns}/{name}", r.kind))?;
    eprintln!("◎ waiting for {} reconciliation", r.kind);
    let deadline = Instant::now() + timeout;
    loop {
        let o = serde_json::to_value(api.get(name).await?)?;
        match outcome(&o["status"], &token, extra) {
            Some(Ok(message)) => return Ok(message),
            Some(Err(message)) => bail!("{} reconciliation failed: {message}", r.kind),
            None => {}
        }
        if Instant::now() >= deadline {
            let why = unfinished(&o["status"], &token, extra);
            bail!(
                "{} {ns}/{name}: after {} s, {why}",
                r.kind,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The outcome of the request of `token` as `status` shows it: `None` while it is not handled
/// or its Ready condition is still `Unknown` (an install or upgrade running: the helm
/// controller echoes the token when it starts the action), else the Ready message, `Ok` when
/// True. As `flux reconcile` waits: handled, then Ready settled. PURE.
pub fn outcome(status: &Value, token: &str, extra: Extra) -> Option<Result<String, String>> {
    if !handled(status, token, extra) {
        return None;
    }
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let message = ready
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_string();
    match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => Some(Ok(message)),
        Some("Unknown") => None,
        _ => Some(Err(message)),
    }
}

/// Why the request of `token` is not finished, as `status` shows it (for a timeout): the
/// first `lastHandled…` field not yet at `token`, or Ready still `Unknown` with its message.
/// PURE.
pub fn unfinished(status: &Value, token: &str, extra: Extra) -> String {
    let fields = std::iter::once("lastHandledReconcileAt")
        .chain(extra.requests().into_iter().map(|(_, f)| f));
    for f in fields {
        if status[f].as_str() != Some(token) {
            return format!(
                "the controller has not handled the request (status.{f} is {}, waiting for {token:?})",
                status[f]
            );
        }
    }
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let message = ready.and_then(|c| c["message"].as_str()).unwrap_or("");
    format!("the request was handled but Ready is still Unknown: {message}")
}

/// `pennant reconcile …`.
pub async fn command(args: ReconcileArgs) -> anyhow::Result<()> {
    let (r, name) = parse_words(&args.words)?;
    let extra = Extra {
        force: args.force,
        reset: args.reset,
    };
    if extra != Extra::default() && r.kind != "HelmRelease" {
        bail!("--force and --reset apply to a HelmRelease only");
    }
    let client = client().await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let msg = reconcile(
        &client,
        r,
        &ns,
        &name,
        args.with_source,
        extra,
        Duration::from_secs(args.timeout),
    )
    .await?;
    println!("✔ {} {ns}/{name} reconciled: {msg}", r.kind);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kinds_and_names_read_as_flux_reconcile() {
        let (r, n) = parse_words(&words(&["ks", "apps"])).unwrap();
        assert_eq!(
            (r.kind, r.api_version, n.as_str()),
            ("Kustomization", "kustomize.toolkit.fluxcd.io/v1", "apps")
        );
        let (r, _) = parse_words(&words(&["source", "git", "apps"])).unwrap();
        assert_eq!(r.kind, "GitRepository");
        let (r, _) = parse_words(&words(&["receiver", "hook"])).unwrap();
        assert_eq!(r.api_version, "notification.toolkit.fluxcd.io/v1");
        let (r, _) = parse_words(&words(&["ag", "gen"])).unwrap();
        assert_eq!(
            (r.kind, r.api_version),
            ("ArtifactGenerator", "source.extensions.fluxcd.io/v1beta1")
        );
        assert!(parse_words(&words(&["source", "ks", "apps"])).is_err());
        assert!(parse_words(&words(&["canary", "podinfo"])).is_err());
        assert!(parse_words(&words(&["pods", "web"])).is_err());
    }

    #[test]
    fn force_and_reset_are_annotated_and_waited_for_with_the_same_token() {
        let both = Extra {
            force: true,
            reset: true,
        };
        assert_eq!(
            request_patch("t1", both),
            json!({"metadata": {"annotations": {
                "reconcile.fluxcd.io/requestedAt": "t1",
                "reconcile.fluxcd.io/forceAt": "t1",
                "reconcile.fluxcd.io/resetAt": "t1",
            }}})
        );
        assert_eq!(
            request_patch("t1", Extra::default()),
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "t1"}}})
        );
        let reconciled = json!({"lastHandledReconcileAt": "t1", "lastHandledForceAt": "t0"});
        assert!(handled(&reconciled, "t1", Extra::default()));
        assert!(
            !handled(&reconciled, "t1", both),
            "the force not yet handled"
        );
        let forced = json!({"lastHandledReconcileAt": "t1", "lastHandledForceAt": "t1"});
        let force = Extra {
            force: true,
            reset: false,
        };
        assert!(handled(&forced, "t1", force));
        assert!(!handled(&forced, "t1", both), "the reset not yet handled");
        assert!(!handled(&json!({}), "t1", Extra::default()));
    }

    #[test]
    fn a_timeout_says_what_is_still_awaited() {
        let force = Extra {
            force: true,
            reset: false,
        };
        let st = json!({"lastHandledReconcileAt": "t1", "lastHandledForceAt": "t0",
            "conditions": [{"type": "Ready", "status": "Unknown", "message": "Running health checks"}]});
        assert_eq!(
            unfinished(&st, "t1", force),
            "the controller has not handled the request (status.lastHandledForceAt is \"t0\", \
             waiting for \"t1\")"
        );
        assert_eq!(
            unfinished(&st, "t1", Extra::default()),
            "the request was handled but Ready is still Unknown: Running health checks"
        );
        assert!(
            unfinished(&json!({}), "t1", force).contains("status.lastHandledReconcileAt is null")
        );
    }

    #[test]
    fn the_outcome_waits_for_ready_to_settle_after_the_request_is_handled() {
        let st = |h: &str, ready: &str| {
            json!({"lastHandledReconcileAt": h, "conditions": [
                {"type": "Ready", "status": ready, "message": format!("m-{ready}")}]})
        };
        let no = Extra::default();
        assert_eq!(
            outcome(&st("t0", "True"), "t1", no),
            None,
            "not handled yet"
        );
        assert_eq!(
            outcome(&st("t1", "Unknown"), "t1", no),
            None,
            "upgrade running"
        );
        assert_eq!(
            outcome(&st("t1", "True"), "t1", no),
            Some(Ok("m-True".into()))
        );
        assert_eq!(
            outcome(&st("t1", "False"), "t1", no),
            Some(Err("m-False".into()))
        );
        let none = json!({"lastHandledReconcileAt": "t1"});
        assert_eq!(outcome(&none, "t1", no), Some(Err(String::new())));
    }

    #[test]
    fn sources_for_with_source() {
        let ks = json!({"metadata": {"namespace": "apps"}, "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}}});
        assert_eq!(
            source_of("Kustomization", &ks),
            Some(("GitRepository".into(), "apps".into(), "repo".into()))
        );
        let hr = json!({"metadata": {"namespace": "apps"}, "spec": {}, "status": {"helmChart": "flux/apps-web"}});
        assert_eq!(
            source_of("HelmRelease", &hr),
            Some(("HelmChart".into(), "flux".into(), "apps-web".into()))
        );
        let hr_ref = json!({"metadata": {"namespace": "apps"}, "spec": {"chartRef": {"kind": "OCIRepository", "name": "web", "namespace": "oci"}}});
        assert_eq!(
            source_of("HelmRelease", &hr_ref),
            Some(("OCIRepository".into(), "oci".into(), "web".into()))
        );
        assert_eq!(source_of("HelmRelease", &json!({"spec": {}})), None);
        assert_eq!(source_of("GitRepository", &ks), None);
    }
}
