//! The dashboard's pages as HTML, and the values they show. PURE: the handlers in
//! [`super`] fetch the objects, Events and Prometheus series; everything here is a function of
//! them and of `now`. Every text that comes from the cluster goes through [`esc`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::{Kustomization, ResourceInventory};
use crate::gate::{Gate, GateState};
use crate::view::events::{self, EventRow};
use crate::view::summary::Summarize;
use crate::view::tree::{Node, ObjectRef, parse_inventory_id, state_text};
use crate::view::{Kind, Summary};

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");

/// `s` with `&`, `<`, `>`, `"` and `'` written as character references: safe in element
/// content and in quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether an object is failing: a Canary in phase `Failed`, any other kind whose Ready
/// condition is `False` (a never reconciled object included, as `flux get` shows it).
pub fn is_failing(s: &Summary) -> bool {
    match s.kind {
        // a run that failed, or one that cannot start (`Stalled`: no target, invalid spec)
        Kind::Canary => s.phase == "Failed" || s.ready == "False",
        _ => s.ready == "False",
    }
}

/// `rows` with the failing ones ([`is_failing`]) first; otherwise by namespace and name.
pub fn failing_first<T>(mut rows: Vec<T>, summary: impl Fn(&T) -> &Summary) -> Vec<T> {
    rows.sort_by(|a, b| {
        let (a, b) = (summary(a), summary(b));
        (!is_failing(a), &a.namespace, &a.name, a.kind.as_str()).cmp(&(
            !is_failing(b),
            &b.namespace,
            &b.name,
            b.kind.as_str(),
        ))
    });
    rows
}

/// A source on the overview: its row and `status.artifact.size` (bytes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceRow {
    pub summary: Summary,
    pub size: Option<i64>,
}

/// What the overview shows. `errors`: the kinds that could not be listed, with why (e.g. no
/// RBAC for a controller that is not enabled).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Overview {
    pub canaries: Vec<Summary>,
    pub sources: Vec<SourceRow>,
    /// Kustomizations and HelmReleases.
    pub appliers: Vec<Summary>,
    pub errors: Vec<String>,
}

/// Bytes as a short size: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_size(bytes: i64) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · pennant</title><style>{CSS}</style></head>\
         <body><header><a href=\"/ui\">pennant</a></header><main>{body}</main>\
         <script>{JS}</script></body></html>\n",
        esc(title)
    )
}

fn badge(text: &str, bad: bool, good: bool) -> String {
    let class = if bad {
        "bad"
    } else if good {
        "good"
    } else {
        "neutral"
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

fn ready_badge(s: &Summary) -> String {
    let text = if s.suspended {
        format!("{} (suspended)", s.ready)
    } else {
        s.ready.clone()
    };
    badge(&text, is_failing(s), s.ready == "True")
}

fn phase_text(s: &Summary) -> &str {
    if s.phase.is_empty() {
        "Initializing"
    } else {
        &s.phase
    }
}

fn phase_badge(s: &Summary) -> String {
    let p = phase_text(s);
    badge(p, is_failing(s), matches!(p, "Succeeded" | "Initialized"))
}

fn table(class: &str, header: &[&str], rows: &[String]) -> String {
    let mut out = format!("<div class=\"scroll\"><table class=\"{class}\"><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">none</td></tr>",
            header.len()
        );
    }
    for r in rows {
        out.push_str(r);
    }
    out.push_str("</tbody></table></div>");
    out
}

fn link(path: &str, s: &Summary) -> String {
    format!(
        "<a href=\"/ui/{path}/{}/{}\">{}</a>",
        esc(&s.namespace),
        esc(&s.name),
        esc(&s.name)
    )
}

/// The overview page `/ui`: Canaries, sources, Kustomizations and HelmReleases, each list with
/// its failing objects first.
pub fn overview_html(o: &Overview) -> String {
    let mut body = String::from("<h1>Overview</h1>");
    for e in &o.errors {
        let _ = write!(body, "<p class=\"warn\">{}</p>", esc(e));
    }
    let canaries: Vec<String> = failing_first(o.canaries.clone(), |s| s)
        .iter()
        .map(|s| {
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td></tr>",
                if is_failing(s) { "failing" } else { "" },
                link("canaries", s),
                esc(&s.namespace),
                phase_badge(s),
                s.weight.unwrap_or(0),
                esc(&s.message)
            )
        })
        .collect();
    body.push_str("<section><h2>Canaries</h2>");
    body.push_str(&table(
        "canaries",
        &["Name", "Namespace", "Phase", "Weight", "Last message"],
        &canaries,
    ));
    body.push_str("</section><section><h2>Sources</h2>");
    let sources: Vec<String> = failing_first(o.sources.clone(), |r| &r.summary)
        .iter()
        .map(|r| {
            let s = &r.summary;
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                if is_failing(s) { "failing" } else { "" },
                esc(s.kind.as_str()),
                esc(&s.name),
                esc(&s.namespace),
                ready_badge(s),
                esc(&s.revision),
                r.size.map(human_size).unwrap_or_default(),
                esc(&s.message)
            )
        })
        .collect();
    body.push_str(&table(
        "sources",
        &[
            "Kind",
            "Name",
            "Namespace",
            "Ready",
            "Revision",
            "Artifact",
            "Message",
        ],
        &sources,
    ));
    body.push_str("</section><section><h2>Kustomizations and HelmReleases</h2>");
    let appliers: Vec<String> = failing_first(o.appliers.clone(), |s| s)
        .iter()
        .map(|s| {
            let path = if s.kind == Kind::Kustomization {
                "kustomizations"
            } else {
                "helmreleases"
            };
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                if is_failing(s) { "failing" } else { "" },
                esc(s.kind.as_str()),
                link(path, s),
                esc(&s.namespace),
                ready_badge(s),
                esc(&s.revision),
                esc(&s.message)
            )
        })
        .collect();
    body.push_str(&table(
        "appliers",
        &["Kind", "Name", "Namespace", "Ready", "Revision", "Message"],
        &appliers,
    ));
    body.push_str("</section>");
    page("Overview", &body)
}

/// One point of a Canary run's timeline, from its Events: the weight after the Event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// When the Event was last seen, Unix seconds.
    pub at: i64,
    /// Canary weight from then on, percent 0-100.
    pub weight: i32,
    pub message: String,
    /// A Warning Event (a failed check, a rollback).
    pub warning: bool,
}

/// The weight an Event's message sets, from the messages the Canary controller writes
/// (Flagger's): `Advance <id> canary weight N` → N; `Routing all traffic to canary` → 100;
/// `Routing all traffic to primary…`, `Rolling back…`, `Canary failed!…` → 0; other messages
/// set none.
pub fn weight_of(message: &str) -> Option<i32> {
    if let Some(rest) = message.strip_prefix("Advance ")
        && let Some((_, w)) = rest.rsplit_once(" canary weight ")
    {
        return w.trim().parse().ok();
    }
    if message.starts_with("Routing all traffic to canary") {
        Some(100)
    } else if message.starts_with("Routing all traffic to primary")
        || message.starts_with("Rolling back")
        || message.starts_with("Canary failed!")
    {
        Some(0)
    } else {
        None
    }
}

/// The current run's timeline from the Canary's Event rows (oldest first, as
/// [`events::rows`] orders them): from the last `New revision detected` Event on (all rows
/// without one), each with the weight carried forward from 0.
pub fn timeline(rows: &[EventRow]) -> Vec<Step> {
    let start = rows
        .iter()
        .rposition(|r| r.message.starts_with("New revision detected"))
        .unwrap_or(0);
    let mut weight = 0;
    rows[start..]
        .iter()
        .map(|r| {
            if let Some(w) = weight_of(&r.message) {
                weight = w;
            }
            Step {
                at: r
                    .last_seen
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map_or(0, |t| t.as_second()),
                weight,
                message: r.message.clone(),
                warning: r.type_ == "Warning",
            }
        })
        .collect()
}

/// When the current run of Canary `name` started (its first timeline step, Unix seconds),
/// from its namespace's `events`; `None` without Events.
pub fn run_start(name: &str, events: &[Event], now: Timestamp) -> Option<i64> {
    timeline(&events::rows(events, Some(("Canary", name)), now))
        .first()
        .map(|s| s.at)
}

/// A Prometheus series: `(Unix seconds, value)` samples in time order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// What it measures: `success rate` (percent) or `latency` (ms).
    pub metric: String,
    /// `canary` or `primary`.
    pub version: String,
    pub points: Vec<(i64, f64)>,
}

/// The last sample of `points` at or before `t` (`None` before the first).
pub fn value_at(points: &[(i64, f64)], t: i64) -> Option<f64> {
    points.iter().rev().find(|(ts, _)| *ts <= t).map(|p| p.1)
}

/// A condition as the pages show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Everything the Canary page shows, at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryView {
    pub summary: Summary,
    pub conditions: Vec<ConditionRow>,
    pub steps: Vec<Step>,
    /// Success rate and latency of canary and primary (empty without a metrics server).
    pub series: Vec<Series>,
    /// Why there are no series, when a query failed.
    pub metrics_note: Option<String>,
    /// The sequential judge's `verdict` and `message` (`status.judge`).
    pub judge: Option<(String, String)>,
    /// The judge's per-step counts: (weight, canary requests, errors, primary requests, errors).
    pub judge_steps: Vec<(i32, u64, u64, u64, u64)>,
    pub events: Vec<EventRow>,
    /// The promotion gate and the rollback request ([`crate::gate`]).
    pub gate: GateState,
    pub rollback: GateState,
    /// `now`, Unix seconds: the end of the last step.
    pub now: i64,
    /// The analysis webhooks: (name, type, URL, the last Event of the run naming the hook).
    pub webhooks: Vec<(String, String, String, Option<String>)>,
}

/// The judge's state when it has no verdict yet: `NOT READY` with `JudgeReady=False`'s message
/// (e.g. a count MetricTemplate it refuses), else `WAITING` when the Canary opted in; `None`
/// when the judge is off.
fn judge_state(c: &Canary) -> Option<(String, String)> {
    let ready = c.status.as_ref().and_then(|s| {
        crate::api::find_condition(&s.conditions, crate::api::condition::types::JUDGE_READY)
    });
    match ready {
        Some(r) if r.status == "False" => {
            Some(("NOT READY".into(), r.message.clone().unwrap_or_default()))
        }
        Some(r) => Some(("WAITING".into(), r.message.clone().unwrap_or_default())),
        None if crate::analysis::judge::opted_in(c) => Some((
            "WAITING".into(),
            "the judge is on; no step judged yet".into(),
        )),
        None => None,
    }
}

/// The [`CanaryView`] of `c` from its namespace's `events` and the `series` queried for it.
pub fn canary_view(
    c: &Canary,
    events: &[Event],
    series: Vec<Series>,
    metrics_note: Option<String>,
    now: Timestamp,
) -> CanaryView {
    let summary = c.summarize(now);
    let status = c.status.as_ref();
    let rows = events::rows(events, Some(("Canary", &summary.name)), now);
    let judge = status.and_then(|s| s.judge.as_ref());
    let annotations = c.metadata.annotations.clone().unwrap_or_default();
    CanaryView {
        conditions: status
            .map(|s| {
                s.conditions
                    .iter()
                    .map(|c| ConditionRow {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone().unwrap_or_default(),
                        message: c.message.clone().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        steps: timeline(&rows),
        series,
        metrics_note,
        judge: judge
            .and_then(|j| {
                j.verdict
                    .clone()
                    .map(|v| (v, j.message.clone().unwrap_or_default()))
            })
            .or_else(|| judge_state(c)),
        judge_steps: judge
            .map(|j| {
                j.steps
                    .iter()
                    .map(|s| {
                        (
                            s.weight,
                            s.canary.requests,
                            s.canary.errors,
                            s.primary.requests,
                            s.primary.errors,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        webhooks: c
            .spec
            .analysis
            .as_ref()
            .map_or(&[][..], |a| &a.webhooks)
            .iter()
            .map(|h| {
                let last = rows
                    .iter()
                    .rev()
                    .find(|r| mentions(&r.message, &h.name))
                    .map(|r| r.message.clone());
                (
                    h.name.clone(),
                    h.type_.clone().unwrap_or_else(|| "rollout".into()),
                    // without userinfo or query: the page needs no token to read
                    crate::source::helm_index::redact_url(&h.url),
                    last,
                )
            })
            .collect(),
        events: rows,
        gate: GateState::from_annotations(&annotations, Gate::Promotion),
        rollback: GateState::from_annotations(&annotations, Gate::Rollback),
        now: now.as_second(),
        summary,
    }
}

/// Whether `message` names `word` as a whole word (not inside a longer name).
fn mentions(message: &str, word: &str) -> bool {
    let part = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    !word.is_empty()
        && message.match_indices(word).any(|(i, _)| {
            !message[..i].chars().next_back().is_some_and(part)
                && !message[i + word.len()..].chars().next().is_some_and(part)
        })
}

/// Plot size (SVG user units).
const W: f64 = 600.0;
const H: f64 = 200.0;
const PAD: f64 = 30.0;

/// An inline SVG plot of the run: the canary weight (a step line, class `weight`) and, when
/// given, the success rate of canary and primary (classes `sr-canary`, `sr-primary`), all on
/// one 0-100 % axis over time from the first step to `now`. The weights are listed in order in
/// the `data-weights` attribute. Empty steps: a plot saying "no steps yet".
pub fn plot_svg(steps: &[Step], series: &[Series], now: i64) -> String {
    let mut out = format!(
        "<svg class=\"plot\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"canary weight over time\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let (x0, y0, x1, y1) = (PAD, H - PAD, W - 10.0, 10.0);
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\"/>"
    );
    for pct in [0, 50, 100] {
        let y = y0 - (y0 - y1) * f64::from(pct) / 100.0;
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{}\" y=\"{:.1}\">{pct}%</text>",
            x0 - 4.0,
            y + 4.0
        );
    }
    if steps.is_empty() {
        let _ = write!(
            out,
            "<text class=\"none\" x=\"{}\" y=\"{}\">no steps yet</text></svg>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let start = steps[0].at;
    let end = now.max(steps.last().map_or(start, |s| s.at)).max(start + 1);
    let x = |t: i64| x0 + (x1 - x0) * (t - start) as f64 / (end - start) as f64;
    let y = |v: f64| y0 - (y0 - y1) * v.clamp(0.0, 100.0) / 100.0;
    let mut pts = vec![];
    for (i, s) in steps.iter().enumerate() {
        if i > 0 {
            pts.push(format!(
                "{:.1},{:.1}",
                x(s.at),
                y(f64::from(steps[i - 1].weight))
            ));
        }
        pts.push(format!("{:.1},{:.1}", x(s.at), y(f64::from(s.weight))));
    }
    pts.push(format!(
        "{:.1},{:.1}",
        x(end),
        y(f64::from(steps.last().unwrap().weight))
    ));
    let weights: Vec<String> = steps.iter().map(|s| s.weight.to_string()).collect();
    let _ = write!(
        out,
        "<polyline class=\"weight\" data-weights=\"{}\" points=\"{}\"><title>canary weight {}</title></polyline>",
        weights.join(" "),
        pts.join(" "),
        weights.join(" → ")
    );
    let mut legend = vec![("weight", "canary weight")];
    for s in series.iter().filter(|s| s.metric == "success rate") {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|(t, _)| *t >= start && *t <= end)
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        if !pts.is_empty() {
            let _ = write!(
                out,
                "<polyline class=\"sr-{}\" points=\"{}\"><title>{} success rate</title></polyline>",
                esc(&s.version),
                pts.join(" "),
                esc(&s.version)
            );
            legend.push(if s.version == "canary" {
                ("sr-canary", "canary success rate")
            } else {
                ("sr-primary", "primary success rate")
            });
        }
    }
    for (i, (class, label)) in legend.iter().enumerate() {
        let lx = x0 + 10.0 + 150.0 * i as f64;
        let _ = write!(
            out,
            "<line class=\"{class}\" x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\"/>\
             <text class=\"legend\" x=\"{}\" y=\"{}\">{label}</text>",
            lx + 18.0,
            lx + 22.0,
            H - 6.0,
            ly = H - 10.0,
        );
    }
    out.push_str("</svg>");
    out
}

fn fmt_value(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.1}{unit}"))
}

fn time_of(at: i64) -> String {
    Timestamp::from_second(at)
        .map(|t| t.strftime("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The parts of the Canary page that change as the run advances, by element id: the page
/// renders them in place, and the JSON endpoint sends them to the page's script. `text` parts
/// are plain text, `html` parts are markup (already escaped).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveParts {
    pub text: BTreeMap<&'static str, String>,
    pub html: BTreeMap<&'static str, String>,
}

/// The live parts of `v`: `phase`, `weight`, `failed`, `message`, `gate`, `rollback` (text);
/// The conditions as a table: type, status (a badge), reason, message.
fn conditions_table(conditions: &[ConditionRow]) -> String {
    let rows: Vec<String> = conditions
        .iter()
        .map(|c| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.type_),
                badge(&c.status, c.status == "False", c.status == "True"),
                esc(&c.reason),
                esc(&c.message)
            )
        })
        .collect();
    table(
        "conditions",
        &["Type", "Status", "Reason", "Message"],
        &rows,
    )
}

/// `plot`, `timeline`, `conditions`, `judge`, `webhooks`, `events` (markup).
pub fn canary_live(v: &CanaryView) -> LiveParts {
    let s = &v.summary;
    let mut text = BTreeMap::new();
    text.insert("phase", phase_text(s).to_string());
    text.insert("weight", format!("{}%", s.weight.unwrap_or(0)));
    text.insert("failed", s.failed_checks.unwrap_or(0).to_string());
    text.insert("message", s.message.clone());
    text.insert("gate", v.gate.as_str().to_string());
    text.insert("rollback", v.rollback.as_str().to_string());
    let mut html = BTreeMap::new();
    html.insert("plot", plot_svg(&v.steps, &v.series, v.now));
    let find = |metric: &str, version: &str| {
        v.series
            .iter()
            .find(|s| s.metric == metric && s.version == version)
    };
    let cols = [
        ("success rate", "canary", "%"),
        ("success rate", "primary", "%"),
        ("latency", "canary", " ms"),
        ("latency", "primary", " ms"),
    ];
    let rows: Vec<String> = v
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            // a step's metrics: the samples at its end (the next step, or now)
            let end = v.steps.get(i + 1).map_or(v.now, |n| n.at);
            let mut r = format!(
                "<tr class=\"{}\"><td>{}</td><td class=\"w\">{}%</td>",
                if st.warning { "failing" } else { "" },
                time_of(st.at),
                st.weight
            );
            for (m, ver, unit) in cols {
                let val = find(m, ver).and_then(|s| value_at(&s.points, end));
                let _ = write!(r, "<td>{}</td>", fmt_value(val, unit));
            }
            let _ = write!(r, "<td>{}</td></tr>", esc(&st.message));
            r
        })
        .collect();
    let mut timeline = table(
        "timeline",
        &[
            "Time",
            "Weight",
            "Canary SR",
            "Primary SR",
            "Canary latency",
            "Primary latency",
            "Event",
        ],
        &rows,
    );
    if let Some(note) = &v.metrics_note {
        let _ = write!(timeline, "<p class=\"note\">{}</p>", esc(note));
    }
    html.insert("timeline", timeline);
    html.insert("conditions", conditions_table(&v.conditions));
    let judge = match &v.judge {
        None => "<p class=\"note\">no sequential judge on this Canary</p>".to_string(),
        Some((verdict, message)) => {
            let rows: Vec<String> = v
                .judge_steps
                .iter()
                .enumerate()
                .map(|(i, (w, cr, ce, pr, pe))| {
                    format!(
                        "<tr><td>{}</td><td>{w}%</td><td>{cr}</td><td>{ce}</td><td>{pr}</td><td>{pe}</td></tr>",
                        i + 1
                    )
                })
                .collect();
            format!(
                "<p>Verdict {} <span class=\"evidence\">{}</span></p>{}",
                badge(
                    verdict,
                    verdict == "FAIL" || verdict == "NOT READY",
                    verdict == "PASS"
                ),
                esc(message),
                table(
                    "judge",
                    &[
                        "Step",
                        "Weight",
                        "Canary requests",
                        "Canary errors",
                        "Primary requests",
                        "Primary errors"
                    ],
                    &rows
                )
            )
        }
    };
    html.insert("judge", judge);
    html.insert("events", events_table(&v.events));
    let hooks: Vec<String> = v
        .webhooks
        .iter()
        .map(|(name, ty, url, last)| {
            format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(name),
                esc(ty),
                esc(url),
                last.as_deref().map_or_else(|| "–".to_string(), esc)
            )
        })
        .collect();
    html.insert(
        "webhooks",
        table(
            "webhooks",
            &["Name", "Type", "URL", "Last Event naming it"],
            &hooks,
        ),
    );
    LiveParts { text, html }
}

fn events_table(rows: &[EventRow]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .rev()
        .map(|e| {
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if e.type_ == "Warning" { "failing" } else { "" },
                esc(&e.age),
                esc(&e.type_),
                esc(&e.reason),
                esc(&e.message)
            )
        })
        .collect();
    table("events", &["Age", "Type", "Reason", "Message"], &rows)
}

fn action_box(api: &str, actions: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<section class=\"actions\" data-api=\"{}\"><h2>Actions</h2>\
         <p class=\"note\">Need a bearer token whose user may <code>patch</code> this object.</p>\
         <input type=\"password\" id=\"token\" placeholder=\"bearer token\" autocomplete=\"off\">",
        esc(api)
    );
    for (action, label) in actions {
        let _ = write!(
            out,
            "<button type=\"button\" data-action=\"{action}\">{}</button>",
            esc(label)
        );
    }
    out.push_str("<p id=\"action-result\" class=\"note\"></p></section>");
    out
}

/// The Canary page `/ui/canaries/{ns}/{name}`: state, plot, timeline, conditions, judge,
/// events, actions. The script polls `/ui/api/canaries/{ns}/{name}` and replaces the
/// [`canary_live`] parts; `#updates` counts the updates applied.
pub fn canary_html(v: &CanaryView) -> String {
    let s = &v.summary;
    let live = canary_live(v);
    let t = |id: &str| esc(live.text.get(id).map_or("", String::as_str));
    let h = |id: &str| live.html.get(id).cloned().unwrap_or_default();
    let api = format!("/ui/api/canaries/{}/{}", s.namespace, s.name);
    let mut body = format!(
        "<h1>Canary {ns}/{name}</h1>\
         <div class=\"live\" data-poll=\"{poll}\">\
         <dl class=\"state\"><dt>Phase</dt><dd id=\"phase\">{phase}</dd>\
         <dt>Weight</dt><dd id=\"weight\">{weight}</dd>\
         <dt>Failed checks</dt><dd id=\"failed\">{failed}</dd>\
         <dt>Gate</dt><dd id=\"gate\">{gate}</dd><dt>Rollback request</dt><dd id=\"rollback\">{rollback}</dd>\
         <dt>Message</dt><dd id=\"message\">{message}</dd>\
         <dt>Updates</dt><dd><span id=\"updates\">0</span> <span id=\"stale\"></span></dd></dl>\
         <section><h2>Run</h2><div id=\"plot\">{plot}</div><div id=\"timeline\">{timeline}</div></section>\
         <section><h2>Conditions</h2><div id=\"conditions\">{conditions}</div></section>\
         <section><h2>Sequential judge</h2><div id=\"judge\">{judge}</div></section>\
         <section><h2>Webhooks and gates</h2><div id=\"webhooks\">{webhooks}</div></section>\
         <section><h2>Events</h2><div id=\"events\">{events}</div></section></div>",
        ns = esc(&s.namespace),
        name = esc(&s.name),
        poll = esc(&api),
        phase = t("phase"),
        weight = t("weight"),
        failed = t("failed"),
        gate = t("gate"),
        rollback = t("rollback"),
        message = t("message"),
        plot = h("plot"),
        timeline = h("timeline"),
        conditions = h("conditions"),
        judge = h("judge"),
        webhooks = h("webhooks"),
        events = h("events"),
    );
    body.push_str(&action_box(
        &api,
        &[
            ("promote", "Promote (open the gate)"),
            ("abort", "Abort (roll back)"),
        ],
    ));
    page(&format!("Canary {}/{}", s.namespace, s.name), &body)
}

/// A Kustomization's or HelmRelease's page values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApplierView {
    pub summary: Summary,
    pub conditions: Vec<ConditionRow>,
    /// The inventory tree ([`inventory_tree`]).
    pub tree: Node,
    /// History, newest first: one line of cells per entry.
    pub history: Vec<Vec<String>>,
    pub history_header: Vec<&'static str>,
    /// `status.lastPromotedRevision` / `status.rejectedRevision` (Kustomizations).
    pub promoted: Option<String>,
    pub rejected: Option<String>,
    pub events: Vec<EventRow>,
}

/// The tree of an applier's inventory ([`crate::view::tree`]): one line per entry, the state of
/// the GitOps objects and Canaries found in `known` (by kind, namespace, name) on their line,
/// and a HelmRelease's own inventory beneath it (from `inventories`).
pub fn inventory_tree(
    root: String,
    inventory: Option<&ResourceInventory>,
    known: &BTreeMap<(Kind, String, String), Summary>,
    inventories: &BTreeMap<(String, String), ResourceInventory>,
) -> Node {
    let mut node = Node::leaf(root);
    for e in inventory.map_or(&[][..], |i| &i.entries) {
        let Some(r) = parse_inventory_id(&e.id) else {
            node.items.push(Node::leaf(e.id.clone()));
            continue;
        };
        let state = r
            .pennant_kind()
            .and_then(|k| known.get(&(k, r.namespace.clone(), r.name.clone())))
            .map_or_else(|| r.text(), |s| state_text(&r, s));
        let mut child = Node::leaf(state);
        if r.pennant_kind() == Some(Kind::HelmRelease)
            && let Some(inv) = inventories.get(&(r.namespace.clone(), r.name.clone()))
        {
            child.items = inv
                .entries
                .iter()
                .map(|e| Node::leaf(parse_inventory_id(&e.id).map_or(e.id.clone(), |r| r.text())))
                .collect();
        }
        node.items.push(child);
    }
    node
}

fn rfc(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn flux_conditions(
    cs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Vec<ConditionRow> {
    cs.iter()
        .map(|c| ConditionRow {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

fn me(kind: Kind, ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        group: kind
            .api_version()
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .into(),
        kind: kind.as_str().into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

/// The page values of Kustomization `k`.
pub fn kustomization_view(
    k: &Kustomization,
    known: &BTreeMap<(Kind, String, String), Summary>,
    inventories: &BTreeMap<(String, String), ResourceInventory>,
    events: &[Event],
    now: Timestamp,
) -> ApplierView {
    let summary = k.summarize(now);
    let st = k.status.as_ref();
    let r = me(Kind::Kustomization, &summary.namespace, &summary.name);
    ApplierView {
        conditions: flux_conditions(st.map_or(&[][..], |s| &s.conditions)),
        tree: inventory_tree(
            state_text(&r, &summary),
            st.and_then(|s| s.inventory.as_ref()),
            known,
            inventories,
        ),
        history_header: vec!["Revision", "Status", "Reconciles", "Last", "Duration"],
        history: st
            .map(|s| {
                s.history
                    .iter()
                    .map(|h| {
                        vec![
                            crate::view::summary::truncate_hex(
                                h.metadata.get("revision").map_or("", String::as_str),
                            ),
                            h.last_reconciled_status.clone(),
                            h.total_reconciliations.to_string(),
                            rfc(&h.last_reconciled),
                            h.last_reconciled_duration.clone(),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
        promoted: st.and_then(|s| s.last_promoted_revision.clone()),
        rejected: st.and_then(|s| s.rejected_revision.clone()),
        events: events::rows(events, Some(("Kustomization", &summary.name)), now),
        summary,
    }
}

/// The page values of HelmRelease `hr`.
pub fn helm_release_view(
    hr: &HelmRelease,
    known: &BTreeMap<(Kind, String, String), Summary>,
    events: &[Event],
    now: Timestamp,
) -> ApplierView {
    let summary = hr.summarize(now);
    let st = hr.status.as_ref();
    let r = me(Kind::HelmRelease, &summary.namespace, &summary.name);
    ApplierView {
        conditions: flux_conditions(st.map_or(&[][..], |s| &s.conditions)),
        tree: inventory_tree(
            state_text(&r, &summary),
            st.and_then(|s| s.inventory.as_ref()),
            known,
            &BTreeMap::new(),
        ),
        history_header: vec!["Revision", "Chart", "Status", "Action", "Deployed"],
        history: st
            .map(|s| {
                s.history
                    .iter()
                    .map(|h| {
                        vec![
                            h.version.to_string(),
                            format!("{}@{}", h.chart_name, h.chart_version),
                            h.status.clone(),
                            h.action.clone().unwrap_or_default(),
                            rfc(&h.last_deployed),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
        promoted: None,
        rejected: None,
        events: events::rows(events, Some(("HelmRelease", &summary.name)), now),
        summary,
    }
}

/// The canary gate of an applier (revision-aware readiness, [`crate::gitops::canary_gate`]):
/// its Ready condition's reason when it is one of the gate's (`CanaryProgressing`,
/// `CanaryFailed`, `CanaryPromoted`), with the message.
pub fn canary_gate(conditions: &[ConditionRow]) -> Option<&ConditionRow> {
    conditions.iter().find(|c| {
        c.type_ == "Ready"
            && matches!(
                c.reason.as_str(),
                crate::gitops::canary_gate::CANARY_PROGRESSING
                    | crate::gitops::canary_gate::CANARY_FAILED
                    | "CanaryPromoted"
            )
    })
}

fn tree_html(n: &Node) -> String {
    let mut out = format!("<li>{}", esc(&n.text));
    if !n.items.is_empty() {
        out.push_str("<ul>");
        for c in &n.items {
            out.push_str(&tree_html(c));
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
    out
}

/// The page of a Kustomization (`/ui/kustomizations/{ns}/{name}`) or HelmRelease
/// (`/ui/helmreleases/{ns}/{name}`): state, canary gate, inventory tree, history, conditions,
/// events, and the reconcile action.
pub fn applier_html(v: &ApplierView) -> String {
    let s = &v.summary;
    let path = if s.kind == Kind::Kustomization {
        "kustomizations"
    } else {
        "helmreleases"
    };
    let gate = match canary_gate(&v.conditions) {
        Some(c) => format!(
            "{} {}",
            badge(
                &c.reason,
                c.reason == crate::gitops::canary_gate::CANARY_FAILED,
                c.reason == "CanaryPromoted"
            ),
            esc(&c.message)
        ),
        None => "no Canary gates this revision".to_string(),
    };
    let mut body = format!(
        "<h1>{kind} {ns}/{name}</h1><dl class=\"state\"><dt>Ready</dt><dd>{ready}</dd>\
         <dt>Revision</dt><dd><code>{rev}</code></dd><dt>Message</dt><dd>{msg}</dd>\
         <dt>Canary gate</dt><dd id=\"canary-gate\">{gate}</dd>",
        kind = esc(s.kind.as_str()),
        ns = esc(&s.namespace),
        name = esc(&s.name),
        ready = ready_badge(s),
        rev = esc(&s.revision),
        msg = esc(&s.message),
    );
    if let Some(p) = &v.promoted {
        let _ = write!(
            body,
            "<dt>Last promoted</dt><dd><code>{}</code></dd>",
            esc(p)
        );
    }
    if let Some(p) = &v.rejected {
        let _ = write!(body, "<dt>Rejected</dt><dd><code>{}</code></dd>", esc(p));
    }
    body.push_str("</dl><section><h2>Inventory</h2><ul class=\"tree\">");
    body.push_str(&tree_html(&v.tree));
    body.push_str("</ul></section><section><h2>History</h2>");
    let rows: Vec<String> = v
        .history
        .iter()
        .map(|cells| {
            let mut r = String::from("<tr>");
            for c in cells {
                let _ = write!(r, "<td>{}</td>", esc(c));
            }
            r.push_str("</tr>");
            r
        })
        .collect();
    body.push_str(&table("history", &v.history_header, &rows));
    body.push_str("</section><section><h2>Conditions</h2>");
    body.push_str(&conditions_table(&v.conditions));
    body.push_str("</section><section><h2>Events</h2>");
    body.push_str(&events_table(&v.events));
    body.push_str("</section>");
    body.push_str(&action_box(
        &format!("/ui/api/{path}/{}/{}", s.namespace, s.name),
        &[("reconcile", "Reconcile now")],
    ));
    page(&format!("{} {}/{}", s.kind, s.namespace, s.name), &body)
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
