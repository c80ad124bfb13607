//! Kubernetes Events of pennant's objects as `flux events` lists them: `LAST SEEN TYPE REASON
//! OBJECT MESSAGE` (`NAMESPACE` first with `-A`), oldest first. PURE: `now` is passed in.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::summary::human_age;
use super::table::{Cell, Table, Tone};

/// API groups of the objects pennant reconciles: Flagger's and Flux's.
pub const GROUPS: [&str; 6] = [
    "flagger.app",
    "source.toolkit.fluxcd.io",
    "source.extensions.fluxcd.io",
    "kustomize.toolkit.fluxcd.io",
    "helm.toolkit.fluxcd.io",
    "notification.toolkit.fluxcd.io",
];

/// One Event at a glance; `-o json|yaml` prints this shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub namespace: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object the Event is about.
    pub object: String,
    pub message: String,
    /// When it was last seen (RFC 3339): `lastTimestamp`, else `eventTime`, `firstTimestamp`,
    /// the Event's creation.
    pub last_seen: Option<String>,
    /// `now - last_seen` as `kubectl get` ages ([`human_age`]).
    pub age: String,
    /// How many times it was seen (`count`, 1 when absent).
    pub count: i32,
    #[serde(skip)]
    seen_at: Option<Timestamp>,
}

/// Whether `e` is about one of pennant's objects (its `involvedObject.apiVersion`'s group is in
/// [`GROUPS`]) and, with `kind_name`, about that object (`Kind/name`, the kind any case or a
/// short name already expanded by the caller).
pub fn is_about(e: &Event, kind_name: Option<(&str, &str)>) -> bool {
    let o = &e.involved_object;
    let group = o
        .api_version
        .as_deref()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    if !GROUPS.contains(&group) {
        return false;
    }
    match kind_name {
        None => true,
        Some((kind, name)) => {
            o.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(kind))
                && o.name.as_deref() == Some(name)
        }
    }
}

/// The row of `e` at `now`.
pub fn row(e: &Event, now: Timestamp) -> EventRow {
    // `lastTimestamp` has whole seconds: within its second, the `eventTime` (microseconds) of
    // an Event seen once orders Events written in the same second as they were written
    let precise = |last: Timestamp| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .filter(|t| t.as_second() == last.as_second() && e.count.unwrap_or(1) <= 1)
            .unwrap_or(last)
    };
    let seen_at = e
        .last_timestamp
        .as_ref()
        .map(|t| precise(t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let o = &e.involved_object;
    EventRow {
        namespace: e.metadata.namespace.clone().unwrap_or_default(),
        type_: e.type_.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        object: format!(
            "{}/{}",
            o.kind.as_deref().unwrap_or(""),
            o.name.as_deref().unwrap_or("")
        ),
        message: e.message.clone().unwrap_or_default(),
        last_seen: seen_at.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        age: seen_at.map(|t| human_age(now, t)).unwrap_or_default(),
        count: e.count.unwrap_or(1),
        seen_at,
    }
}

/// Rows of the Events about pennant's objects (see [`is_about`]), oldest first (within a
/// second by `eventTime` for an Event seen once; ties by object, then reason, so the order is
/// stable).
pub fn rows(events: &[Event], kind_name: Option<(&str, &str)>, now: Timestamp) -> Vec<EventRow> {
    let mut out: Vec<EventRow> = events
        .iter()
        .filter(|e| is_about(e, kind_name))
        .map(|e| row(e, now))
        .collect();
    out.sort_by(|a, b| {
        (a.seen_at, &a.object, &a.reason, &a.message)
            .cmp(&(b.seen_at, &b.object, &b.reason, &b.message))
    });
    out
}

/// The Events as a table (Warning types in red on a terminal).
pub fn table(rows: &[EventRow], all_namespaces: bool) -> Table {
    let plain = |s: &str| Cell {
        text: s.to_string(),
        tone: Tone::Plain,
    };
    let mut header = vec![];
    if all_namespaces {
        header.push("NAMESPACE".to_string());
    }
    header.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(String::from));
    Table {
        header,
        rows: rows
            .iter()
            .map(|r| {
                let mut cells = vec![];
                if all_namespaces {
                    cells.push(plain(&r.namespace));
                }
                cells.extend([
                    plain(&r.age),
                    Cell {
                        text: r.type_.clone(),
                        tone: if r.type_ == "Warning" {
                            Tone::Bad
                        } else {
                            Tone::Plain
                        },
                    },
                    plain(&r.reason),
                    plain(&r.object),
                    plain(&r.message.replace(['\r', '\n'], " ")),
                ]);
                cells
            })
            .collect(),
    }
}
