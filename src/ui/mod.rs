//! The dashboard (issue 18): read-mostly pages at `/ui` on the controller's HTTP server, off by
//! default (`pennant controller --ui`, the chart's `ui.enabled`).
//!
//! | Path | What |
//! |---|---|
//! | `GET /ui` | overview: Canaries, sources, Kustomizations and HelmReleases, failing first |
//! | `GET /ui/canaries/{ns}/{name}` | a Canary's run: plot, timeline with success rate and latency of canary and primary per step, conditions, the sequential judge, Events; live |
//! | `GET /ui/api/canaries/{ns}/{name}` | the parts of that page that change, JSON ([`page::LiveParts`]); the page polls it every 1.5 s |
//! | `GET /ui/kustomizations/{ns}/{name}`, `GET /ui/helmreleases/{ns}/{name}` | inventory tree, history, canary gate, conditions, Events |
//! | `POST /ui/api/canaries/{ns}/{name}/promote` | opens the promotion gate ([`crate::gate`], as `pennant promote`) |
//! | `POST /ui/api/canaries/{ns}/{name}/abort` | requests a rollback (as `pennant abort`) |
//! | `POST /ui/api/kustomizations/{ns}/{name}/reconcile` (and `helmreleases`) | writes `reconcile.fluxcd.io/requestedAt` (as `pennant reconcile`, without waiting) |
//!
//! Pages need no token. An action needs `Authorization: Bearer <token>` whose user may `patch`
//! the object ([`auth`]); otherwise `403` and nothing is written. A browser never adds that
//! header by itself, so another site cannot make a visitor's browser act (no CSRF). Pages are built by the pure
//! functions of [`page`] from objects read with the controller's client at each request
//! (observe → build → answer); a controller scoped to one namespace (`--namespace`) shows that
//! namespace only. CSS and script are embedded (no CDN, no internet).

pub mod auth;
pub mod page;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::{Kustomization, ResourceInventory};
use crate::api::source::{GitRepository, HelmChart, HelmRepository, OCIRepository, Source};
use crate::gate::{CanaryRef, Gate, GateState, Request};
use crate::view::summary::Summarize;
use crate::view::{Kind, Summary};
use page::{Overview, Series, SourceRow};

/// How long a page waits for the Kubernetes API or Prometheus.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the dashboard reads with and where.
#[derive(Clone)]
pub struct Settings {
    pub client: Client,
    /// `--namespace`: the only namespace shown; `None` for all.
    pub namespace: Option<String>,
    /// `--metrics-server`: Prometheus for the per-step success rate and latency (a Canary's
    /// `spec.metricsServer` wins); empty for none.
    pub metrics_server: String,
    /// `--mesh-provider`: the provider of Canaries without `spec.provider` (picks the builtin
    /// queries).
    pub mesh_provider: String,
}

/// The dashboard's routes, for the process's HTTP server.
pub fn routes(settings: Settings) -> axum::Router {
    axum::Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/canaries/{ns}/{name}", get(canary_page))
        .route("/ui/api/canaries/{ns}/{name}", get(canary_api))
        .route("/ui/kustomizations/{ns}/{name}", get(kustomization_page))
        .route("/ui/helmreleases/{ns}/{name}", get(helm_release_page))
        .route("/ui/api/canaries/{ns}/{name}/{action}", post(canary_action))
        .route(
            "/ui/api/{kind}/{ns}/{name}/reconcile",
            post(reconcile_action),
        )
        .with_state(settings)
        .layer(axum::middleware::map_response(secure))
}

/// Every answer: not framed by another site (clickjacking of the action buttons), its content
/// type taken as sent.
async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether `ns/name` can be an object the dashboard serves: both valid Kubernetes names
/// (lower-case alphanumerics, `-` and `.`, at most 253), and `ns` watched. Anything else is
/// answered 404 before it reaches an API path.
fn in_scope(s: &Settings, ns: &str, name: &str) -> bool {
    let valid = |n: &str| {
        !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    valid(ns)
        && valid(name)
        && s.namespace
            .as_deref()
            .is_none_or(|w| w.is_empty() || w == ns)
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, format!("{what} not found")).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Kubernetes API unavailable: {e}"),
    )
        .into_response()
}

async fn timed<T>(fut: impl Future<Output = kube::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}

async fn list<K>(s: &Settings) -> Result<Vec<K>, String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match s.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced(s.client.clone(), ns),
        None => Api::all(s.client.clone()),
    };
    timed(api.list(&ListParams::default()))
        .await
        .map(|l| l.items)
}

async fn get_opt<K>(s: &Settings, ns: &str, name: &str) -> Result<Option<K>, String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(s.client.clone(), ns);
    timed(api.get_opt(name)).await
}

/// The Events of `kind` `ns/name` (a field selector on the involved object).
async fn events_of(s: &Settings, kind: &str, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(s.client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    timed(api.list(&lp))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn summaries<K: Summarize>(
    what: &str,
    r: Result<Vec<K>, String>,
    now: Timestamp,
    errors: &mut Vec<String>,
) -> Vec<Summary> {
    match r {
        Ok(v) => v.iter().map(|o| o.summarize(now)).collect(),
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            vec![]
        }
    }
}

fn source_rows<K: Summarize + Source>(
    what: &str,
    r: Result<Vec<K>, String>,
    now: Timestamp,
    errors: &mut Vec<String>,
) -> Vec<SourceRow> {
    match r {
        Ok(v) => v
            .iter()
            .map(|o| SourceRow {
                summary: o.summarize(now),
                size: o.artifact().and_then(|a| a.size),
            })
            .collect(),
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            vec![]
        }
    }
}

/// Every object the overview lists (observe), with the kinds that could not be listed.
async fn observe_overview(
    s: &Settings,
    now: Timestamp,
) -> (Overview, Vec<Kustomization>, Vec<HelmRelease>) {
    let (cd, git, oci, hrepo, chart, ks, hr) = futures::join!(
        list::<Canary>(s),
        list::<GitRepository>(s),
        list::<OCIRepository>(s),
        list::<HelmRepository>(s),
        list::<HelmChart>(s),
        list::<Kustomization>(s),
        list::<HelmRelease>(s),
    );
    let mut errors = vec![];
    let canaries = summaries("Canaries", cd, now, &mut errors);
    let mut sources = source_rows("GitRepositories", git, now, &mut errors);
    sources.extend(source_rows("OCIRepositories", oci, now, &mut errors));
    sources.extend(source_rows("HelmRepositories", hrepo, now, &mut errors));
    sources.extend(source_rows("HelmCharts", chart, now, &mut errors));
    let ks = ks.unwrap_or_else(|e| {
        errors.push(format!("Kustomizations: {e}"));
        vec![]
    });
    let hr = hr.unwrap_or_else(|e| {
        errors.push(format!("HelmReleases: {e}"));
        vec![]
    });
    let mut appliers: Vec<Summary> = ks.iter().map(|k| k.summarize(now)).collect();
    appliers.extend(hr.iter().map(|h| h.summarize(now)));
    (
        Overview {
            canaries,
            sources,
            appliers,
            errors,
        },
        ks,
        hr,
    )
}

async fn overview(State(s): State<Settings>) -> Html<String> {
    let (o, _, _) = observe_overview(&s, Timestamp::now()).await;
    Html(page::overview_html(&o))
}

/// A Prometheus range query over `[start, end]`: the first series' samples.
async fn range(
    prom: &prometheus_http_query::Client,
    query: &str,
    start: i64,
    end: i64,
    step: f64,
) -> Result<Vec<(i64, f64)>, String> {
    let q = crate::analysis::template::collapse_whitespace(query);
    let r = tokio::time::timeout(TIMEOUT, prom.query_range(q, start, end, step).get())
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    Ok(match r.data() {
        prometheus_http_query::response::Data::Matrix(m) => m
            .first()
            .map(|v| {
                v.samples()
                    .iter()
                    .filter(|s| s.value().is_finite())
                    .map(|s| (s.timestamp() as i64, s.value()))
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    })
}

/// Success rate and latency of canary and primary from the builtin queries of the Canary's
/// provider, over `[start, now]`; or why there are none.
async fn canary_series(
    s: &Settings,
    c: &Canary,
    start: Option<i64>,
    now: i64,
) -> (Vec<Series>, Option<String>) {
    use crate::analysis::builtin::{
        REQUEST_DURATION, REQUEST_SUCCESS_RATE, builtin_query, duration_to_ms,
    };
    let Some(start) = start else {
        return (vec![], None);
    };
    let server = c
        .spec
        .metrics_server
        .clone()
        .unwrap_or_else(|| s.metrics_server.clone());
    if server.trim().is_empty() {
        return (vec![], Some("no metrics server configured".into()));
    }
    let provider = c
        .spec
        .provider
        .clone()
        .unwrap_or_else(|| s.mesh_provider.clone());
    let kind = c.spec.target_ref.kind.as_str();
    let prom = match server.parse::<prometheus_http_query::Client>() {
        Ok(p) => p,
        Err(e) => return (vec![], Some(format!("metrics server {server}: {e}"))),
    };
    let metrics = c
        .spec
        .analysis
        .as_ref()
        .map(|a| a.metrics.clone())
        .unwrap_or_default();
    let window = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.interval.clone())
            .unwrap_or_else(|| "1m".into())
    };
    let primary = format!("{}-primary", c.spec.target_ref.name);
    let step = ((now - start) as f64 / 120.0).max(2.0);
    let mut jobs = vec![];
    for (metric, label, factor) in [
        (REQUEST_SUCCESS_RATE, "success rate", 1.0),
        (REQUEST_DURATION, "latency", duration_to_ms(&provider)),
    ] {
        let Some(template) = builtin_query(&provider, metric, kind) else {
            return (
                vec![],
                Some(format!("no builtin metrics for provider {provider}")),
            );
        };
        let interval = window(metric);
        for (version, target) in [
            ("canary", c.spec.target_ref.name.as_str()),
            ("primary", primary.as_str()),
        ] {
            let mut model = crate::analysis::template::TemplateModel::new(c, &interval, None);
            model.target = target;
            let query = crate::analysis::template::render(template, &model);
            let prom = prom.clone();
            jobs.push(async move {
                let query = query.map_err(|e| e.to_string())?;
                let points = range(&prom, &query, start, now, step).await?;
                Ok::<Series, String>(Series {
                    metric: label.into(),
                    version: version.into(),
                    points: points.into_iter().map(|(t, v)| (t, v * factor)).collect(),
                })
            });
        }
    }
    let mut series = vec![];
    let mut note = None;
    for r in join_all(jobs).await {
        match r {
            Ok(s) => series.push(s),
            Err(e) => note = Some(format!("metrics: {e}")),
        }
    }
    (series, note)
}

/// Observe a Canary and build its page values; `Err` is the answer to send.
async fn canary_view(s: &Settings, ns: &str, name: &str) -> Result<page::CanaryView, Response> {
    if !in_scope(s, ns, name) {
        return Err(not_found(format!("canary {name}.{ns}")));
    }
    let c: Canary = match get_opt(s, ns, name).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(not_found(format!("canary {name}.{ns}"))),
        Err(e) => return Err(unavailable(e)),
    };
    let events = events_of(s, "Canary", ns, name).await;
    let now = Timestamp::now();
    let first = page::run_start(name, &events, now);
    let (series, note) = canary_series(s, &c, first, now.as_second()).await;
    Ok(page::canary_view(&c, &events, series, note, now))
}

async fn canary_page(
    State(s): State<Settings>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match canary_view(&s, &ns, &name).await {
        Ok(v) => Html(page::canary_html(&v)).into_response(),
        Err(r) => r,
    }
}

async fn canary_api(
    State(s): State<Settings>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match canary_view(&s, &ns, &name).await {
        Ok(v) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(page::canary_live(&v)),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Summaries of every GitOps object and Canary (for the state on the tree's lines) and the
/// HelmReleases' inventories.
async fn known(
    s: &Settings,
    now: Timestamp,
) -> (
    BTreeMap<(Kind, String, String), Summary>,
    BTreeMap<(String, String), ResourceInventory>,
) {
    let (o, _, hr) = observe_overview(s, now).await;
    let known = o
        .canaries
        .into_iter()
        .chain(o.sources.into_iter().map(|r| r.summary))
        .chain(o.appliers)
        .map(|s| ((s.kind, s.namespace.clone(), s.name.clone()), s))
        .collect();
    let inventories = hr
        .into_iter()
        .filter_map(|h| {
            let inv = h.status?.inventory?;
            Some((
                (h.metadata.namespace.unwrap_or_default(), h.metadata.name?),
                inv,
            ))
        })
        .collect();
    (known, inventories)
}

async fn kustomization_page(
    State(s): State<Settings>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if !in_scope(&s, &ns, &name) {
        return not_found(format!("Kustomization {ns}/{name}"));
    }
    let k: Kustomization = match get_opt(&s, &ns, &name).await {
        Ok(Some(k)) => k,
        Ok(None) => return not_found(format!("Kustomization {ns}/{name}")),
        Err(e) => return unavailable(e),
    };
    let now = Timestamp::now();
    let events = events_of(&s, "Kustomization", &ns, &name).await;
    let (known, inventories) = known(&s, now).await;
    let v = page::kustomization_view(&k, &known, &inventories, &events, now);
    Html(page::applier_html(&v)).into_response()
}

async fn helm_release_page(
    State(s): State<Settings>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if !in_scope(&s, &ns, &name) {
        return not_found(format!("HelmRelease {ns}/{name}"));
    }
    let hr: HelmRelease = match get_opt(&s, &ns, &name).await {
        Ok(Some(h)) => h,
        Ok(None) => return not_found(format!("HelmRelease {ns}/{name}")),
        Err(e) => return unavailable(e),
    };
    let now = Timestamp::now();
    let events = events_of(&s, "HelmRelease", &ns, &name).await;
    let (known, _) = known(&s, now).await;
    let v = page::helm_release_view(&hr, &known, &events, now);
    Html(page::applier_html(&v)).into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The gate an action on a Canary opens: `promote` the promotion gate, `abort` the rollback
/// request (as `pennant promote|abort`). PURE.
pub fn canary_action_gate(action: &str) -> Option<Gate> {
    match action {
        "promote" => Some(Gate::Promotion),
        "abort" => Some(Gate::Rollback),
        _ => None,
    }
}

async fn canary_action(
    State(s): State<Settings>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(gate) = canary_action_gate(&action) else {
        return not_found(format!("action {action:?}"));
    };
    if !in_scope(&s, &ns, &name) {
        return not_found(format!("canary {name}.{ns}"));
    }
    let target = auth::Target {
        group: "flagger.app",
        resource: "canaries",
        namespace: ns.clone(),
        name: name.clone(),
    };
    let user = match auth::authorize(&s.client, authorization(&headers), &target).await {
        Ok(u) => u,
        Err(e) => return (StatusCode::FORBIDDEN, e.to_string()).into_response(),
    };
    let canary = CanaryRef {
        name: name.clone(),
        namespace: ns.clone(),
    };
    let outcome = crate::gate::write(&s.client, &canary, gate, GateState::Open).await;
    let mut answer =
        crate::gate::answer(Request::Set(gate, GateState::Open), Some(&canary), outcome);
    if answer.status < 300 {
        tracing::info!(canary = %canary, user = %user, "dashboard: {}", answer.body);
        let api: kube::Api<Canary> = kube::Api::namespaced(s.client.clone(), &ns);
        if let Some(w) = api
            .get(&name)
            .await
            .ok()
            .and_then(|c| crate::gate::unread_warning(&c, gate))
        {
            answer.body = format!("{} (warning: {w})", answer.body);
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, answer.body).into_response()
}

async fn reconcile_action(
    State(s): State<Settings>,
    Path((kind, ns, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (group, resource, kind_name) = match kind.as_str() {
        "kustomizations" => (
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "Kustomization",
        ),
        "helmreleases" => ("helm.toolkit.fluxcd.io", "helmreleases", "HelmRelease"),
        _ => return not_found(format!("{kind:?}")),
    };
    if !in_scope(&s, &ns, &name) {
        return not_found(format!("{kind_name} {ns}/{name}"));
    }
    let target = auth::Target {
        group,
        resource,
        namespace: ns.clone(),
        name: name.clone(),
    };
    let user = match auth::authorize(&s.client, authorization(&headers), &target).await {
        Ok(u) => u,
        Err(e) => return (StatusCode::FORBIDDEN, e.to_string()).into_response(),
    };
    // a suspended object is not reconciled on request, as `pennant reconcile` refuses it
    let suspended = if kind_name == "Kustomization" {
        get_opt::<Kustomization>(&s, &ns, &name)
            .await
            .map(|k| k.map(|k| k.spec.suspend == Some(true)))
    } else {
        get_opt::<HelmRelease>(&s, &ns, &name)
            .await
            .map(|h| h.map(|h| h.spec.suspend == Some(true)))
    };
    match suspended {
        Ok(Some(false)) => {}
        Ok(Some(true)) => {
            let message = format!("{kind_name} {ns}/{name} is suspended: resume it first");
            return (StatusCode::CONFLICT, message).into_response();
        }
        Ok(None) => return not_found(format!("{kind_name} {ns}/{name}")),
        Err(e) => return unavailable(e),
    }
    let token = Timestamp::now().to_string();
    let patch = crate::gitops::reconcile_request::request_patch(&token);
    let params = PatchParams {
        field_manager: Some("pennant".into()),
        ..Default::default()
    };
    let r = if kind_name == "Kustomization" {
        let api: Api<Kustomization> = Api::namespaced(s.client.clone(), &ns);
        timed(api.patch(&name, &params, &Patch::Merge(&patch)))
            .await
            .map(|_| ())
    } else {
        let api: Api<HelmRelease> = Api::namespaced(s.client.clone(), &ns);
        timed(api.patch(&name, &params, &Patch::Merge(&patch)))
            .await
            .map(|_| ())
    };
    match r {
        Ok(()) => {
            tracing::info!(object = %format!("{kind_name}/{ns}/{name}"), user = %user, "dashboard: reconcile requested");
            (
                StatusCode::ACCEPTED,
                format!("{kind_name} {ns}/{name}: reconcile requested at {token}"),
            )
                .into_response()
        }
        Err(e) if e.contains("404") || e.contains("not found") => {
            not_found(format!("{kind_name} {ns}/{name}"))
        }
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard on a client whose API server refuses connections: every answer that
    /// needs the API degrades (503, or the overview naming what it could not list), and an
    /// action is refused before any write.
    #[tokio::test]
    async fn without_an_api_pages_degrade_and_actions_are_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dead =
            Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let app = routes(Settings {
            client: dead,
            namespace: Some("apps".into()),
            metrics_server: String::new(),
            mesh_provider: "istio".into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let http = reqwest::Client::new();

        let r = http.get(format!("{base}/ui")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body.contains("Canaries: "), "{body}");
        assert!(body.contains("<meta name=\"viewport\""));

        let r = http
            .get(format!("{base}/ui/canaries/apps/web"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        // not framed by another site, content type as sent
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            r.headers()["content-security-policy"],
            "frame-ancestors 'none'"
        );
        // a name that cannot be an object's: 404, the API not asked (it would answer 503)
        for bad in ["%3Cscript%3E", "Web", "a%2Fb", "a_b"] {
            let r = http
                .get(format!("{base}/ui/canaries/apps/{bad}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{bad}");
        }
        // another namespace than the controller's: not shown, the API not asked
        let r = http
            .get(format!("{base}/ui/api/canaries/prod/web"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        let promote = format!("{base}/ui/api/canaries/apps/web/promote");
        let r = http.post(&promote).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("no bearer token"));
        let r = http
            .post(&promote)
            .bearer_auth("secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "a review that cannot be made refuses");
        let body = r.text().await.unwrap();
        assert!(body.starts_with("the access review failed"), "{body}");
        assert!(!body.contains("secret-token"));
        let r = http
            .post(format!("{base}/ui/api/canaries/apps/web/delete"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "only promote and abort");
        let r = http
            .post(format!("{base}/ui/api/gitrepositories/apps/repo/reconcile"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(canary_action_gate("abort"), Some(Gate::Rollback));
    }
}
