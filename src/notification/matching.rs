//! Which Alerts an Event goes to and what they send (PURE, `now` passed in), as Flux
//! notification-controller's event server (`internal/server/event_handlers.go`,
//! `event_server.go`):
//!
//! - [`alert_matches`]: a suspended Alert matches nothing; an event matches a source when the
//!   namespaces (the source's, else the Alert's) and kinds are equal, the severity passes
//!   (`info` lets everything through, `error` only errors), and the name is equal or `*`; with
//!   `matchLabels` (name `*`) the live object's labels must carry them all. Then at least one
//!   `inclusionList` regex must match the message (when the list is set) and no
//!   `exclusionList` regex may; an invalid regex is skipped and reported ([`Problem`]).
//! - [`combine_metadata`]: Flux's RFC 0008 precedence, lowest first: `event.toolkit.fluxcd.io/`
//!   keys (stripped), `eventMetadata`, `summary`, the involved object's group keys (stripped);
//!   other keys are dropped whenever the result is not empty. Keys set by two sources are
//!   reported (`MetadataAppendFailed`).
//! - [`dedup_key`] / [`Dedup`] / [`admit`]: equal events (same object, message and `revision`,
//!   `originRevision`, `token` metadata, read before the token is stripped) within
//!   [`DEDUP_WINDOW`] are sent once.
//! - [`provider_wants`]: the commit-status gating of Flux's `dispatchNotification`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::api::notification::{
    AlertSpec, COMMIT_STATUS_TYPES, CrossNamespaceObjectReference, EVENT_GROUP, Event, META_COMMIT,
    META_COMMIT_STATUS, META_ORIGIN_REVISION, META_REVISION, META_TOKEN,
};

/// How long an equal event is not sent again: Flux's `--rate-limit-interval` default, 5 min.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Something wrong with an Alert found while matching: a Warning Event on the Alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Flux's reason: `InvalidConfig`, `SourceFetchFailed`, `MetadataAppendFailed`.
    pub reason: &'static str,
    pub message: String,
}

/// The labels of the live involved object: `Ok(None)` when it does not exist or cannot be read
/// (Flux: `SourceFetchFailed`), given by the caller's cache or GET.
pub type Labels = Option<BTreeMap<String, String>>;

/// Whether the Alert (in `alert_namespace`) sends `event`, and the problems found on the way.
/// `labels` is called only for a source with `matchLabels` that otherwise matches.
pub fn alert_matches(
    alert_namespace: &str,
    spec: &AlertSpec,
    event: &Event,
    labels: &mut dyn FnMut() -> Labels,
) -> (bool, Vec<Problem>) {
    let mut problems = vec![];
    if spec.suspended() {
        return (false, problems);
    }
    let sourced = spec
        .event_sources
        .iter()
        .any(|s| source_matches(alert_namespace, spec, s, event, labels, &mut problems));
    if !sourced {
        return (false, problems);
    }
    let included = spec.inclusion_list.is_empty()
        || spec
            .inclusion_list
            .iter()
            .any(|re| regex_matches(re, "inclusion", &event.message, &mut problems));
    if !included {
        return (false, problems);
    }
    let excluded = spec
        .exclusion_list
        .iter()
        .any(|re| regex_matches(re, "exclusion", &event.message, &mut problems));
    (!excluded, problems)
}

fn source_matches(
    alert_namespace: &str,
    spec: &AlertSpec,
    source: &CrossNamespaceObjectReference,
    event: &Event,
    labels: &mut dyn FnMut() -> Labels,
    problems: &mut Vec<Problem>,
) -> bool {
    let o = &event.involved_object;
    let namespace = source.namespace.as_deref().unwrap_or(alert_namespace);
    if o.namespace.as_deref().unwrap_or("") != namespace
        || o.kind.as_deref().unwrap_or("") != source.kind
    {
        return false;
    }
    if spec.event_severity != "info" && spec.event_severity != event.severity {
        return false;
    }
    if source.name != "*" && Some(source.name.as_str()) != o.name.as_deref() {
        return false;
    }
    if source.match_labels.is_empty() {
        return true;
    }
    match labels() {
        Some(have) => source
            .match_labels
            .iter()
            .all(|(k, v)| have.get(k) == Some(v)),
        None => {
            problems.push(Problem {
                reason: "SourceFetchFailed",
                message: format!("error getting source object {}", event.object_string()),
            });
            false
        }
    }
}

fn regex_matches(re: &str, list: &str, message: &str, problems: &mut Vec<Problem>) -> bool {
    match regex::Regex::new(re) {
        Ok(r) => r.is_match(message),
        Err(_) => {
            problems.push(Problem {
                reason: "InvalidConfig",
                message: format!("failed to compile {list} regex: {re}"),
            });
            false
        }
    }
}

/// The metadata the Alert sends for `event` (Flux's `combineEventMetadata`), and a
/// `MetadataAppendFailed` problem naming the keys two sources set. PURE.
pub fn combine_metadata(
    event: &Event,
    spec: &AlertSpec,
) -> (BTreeMap<String, String>, Option<Problem>) {
    let mut out = BTreeMap::new();
    let mut sources: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut put = |k: &str, v: &str, from: &'static str, out: &mut BTreeMap<String, String>| {
        out.insert(k.to_string(), v.to_string());
        sources.entry(k.to_string()).or_default().push(from);
    };
    let event_prefix = format!("{EVENT_GROUP}/");
    for (k, v) in &event.metadata {
        if let Some(k) = k.strip_prefix(&event_prefix) {
            put(k, v, "involved object annotations", &mut out);
        }
    }
    for (k, v) in &spec.event_metadata {
        put(k, v, "Alert object .spec.eventMetadata", &mut out);
    }
    if let Some(s) = spec.summary.as_deref().filter(|s| !s.is_empty()) {
        put("summary", s, "Alert object .spec.summary", &mut out);
    }
    let object_prefix = format!("{}/", event.group());
    for (k, v) in &event.metadata {
        if let Some(k) = k.strip_prefix(&object_prefix) {
            put(k, v, "involved object controller metadata", &mut out);
        }
    }
    let conflicts: Vec<String> = sources
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(k, s)| format!("{k} ({})", s.join(", ")))
        .collect();
    let problem = (!conflicts.is_empty()).then(|| Problem {
        reason: "MetadataAppendFailed",
        message: format!(
            "metadata key conflicts detected (please refer to the Alert API docs and Flux RFC \
             0008 for more information): {}",
            conflicts.join("; ")
        ),
    });
    if out.is_empty() {
        out = event.metadata.clone();
    }
    (out, problem)
}

/// `event` with its `<group>/token` metadata removed (Flux's `excludeInternalMetadata`). PURE.
pub fn without_internal_metadata(mut event: Event) -> Event {
    let key = format!("{}/{META_TOKEN}", event.group());
    event.metadata.remove(&key);
    event
}

/// Flux's de-duplication key: hex sha256 over `event/name=…/namespace=…/kind=…/message=…`
/// followed by `originRevision=…`, `revision=…`, `token=…` when the event carries those
/// (group-prefixed) metadata keys. PURE.
pub fn dedup_key(event: &Event) -> String {
    let o = &event.involved_object;
    let mut parts = vec![
        "event".to_string(),
        format!("name={}", o.name.as_deref().unwrap_or("")),
        format!("namespace={}", o.namespace.as_deref().unwrap_or("")),
        format!("kind={}", o.kind.as_deref().unwrap_or("")),
        format!("message={}", event.message),
    ];
    let group = event.group();
    for key in [META_ORIGIN_REVISION, META_REVISION, META_TOKEN] {
        if let Some(v) = event.metadata.get(&format!("{group}/{key}")) {
            parts.push(format!("{key}={v}"));
        }
    }
    Sha256::digest(parts.join("/").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `event` as the Alerts see it ([`without_internal_metadata`]) when it is new at `now`,
/// `None` for a repeat. The key is taken before the token is stripped: Flux's rate limiter
/// reads the event as posted (its `token` tells apart equal messages of different
/// configurations), its handler strips the token after. PURE.
pub fn admit(dedup: &mut Dedup, event: Event, now: Timestamp) -> Option<Event> {
    dedup
        .admit(&event, now)
        .then(|| without_internal_metadata(event))
}

/// The events sent in the last [`DEDUP_WINDOW`], by [`dedup_key`].
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashMap<String, Timestamp>,
}

impl Dedup {
    /// Whether `event` is new at `now` (and remember it); `false` for an equal event admitted
    /// less than [`DEDUP_WINDOW`] ago. Forgets entries older than the window.
    pub fn admit(&mut self, event: &Event, now: Timestamp) -> bool {
        let window =
            k8s_openapi::jiff::SignedDuration::try_from(DEDUP_WINDOW).expect("the window fits");
        let fresh = |t: &Timestamp| now.duration_since(*t) < window;
        self.seen.retain(|_, t| fresh(t));
        let key = dedup_key(event);
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        true
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Whether a Provider of `provider_type` is sent `event` (Flux's `dispatchNotification`):
/// events marking a commit-status update (`<group>/commit_status: update`) go only to
/// commit-status and generic types; commit-status types get only those, events naming a commit
/// (`event.toolkit.fluxcd.io/commit`) and errors. PURE.
pub fn provider_wants(provider_type: &str, event: &Event) -> bool {
    let group = event.group();
    let status_update = event
        .metadata
        .get(&format!("{group}/{META_COMMIT_STATUS}"))
        .is_some_and(|v| v == "update");
    let commit_status_type = COMMIT_STATUS_TYPES.contains(&provider_type);
    let generic = matches!(provider_type, "generic" | "generic-hmac");
    if status_update && !commit_status_type && !generic {
        return false;
    }
    if commit_status_type {
        let has_commit = event
            .metadata
            .get(&format!("{EVENT_GROUP}/{META_COMMIT}"))
            .is_some_and(|c| !c.is_empty());
        return has_commit || status_update || event.is_error();
    }
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use serde_json::json;

    use super::*;

    fn event(kind: &str, ns: &str, name: &str, severity: &str, message: &str) -> Event {
        let api_version = match kind {
            "Kustomization" => "kustomize.toolkit.fluxcd.io/v1",
            "HelmRelease" => "helm.toolkit.fluxcd.io/v2",
            "Canary" => "flagger.app/v1beta1",
            _ => "source.toolkit.fluxcd.io/v1",
        };
        Event {
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                namespace: Some(ns.into()),
                name: Some(name.into()),
                api_version: Some(api_version.into()),
                ..Default::default()
            },
            severity: severity.into(),
            timestamp: Timestamp::UNIX_EPOCH,
            message: message.into(),
            reason: "ReconciliationSucceeded".into(),
            metadata: BTreeMap::new(),
            reporting_controller: "kustomize-controller".into(),
            reporting_instance: String::new(),
        }
    }

    fn spec(v: serde_json::Value) -> AlertSpec {
        let mut base = json!({"providerRef": {"name": "slack"}});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn matching_table() {
        let ks = |sev| {
            event(
                "Kustomization",
                "apps",
                "podinfo",
                sev,
                "Applied revision: main@sha1:1",
            )
        };
        let labelled = || Some(BTreeMap::from([("team".to_string(), "a".to_string())]));
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, serde_json::Value, Event, fn() -> Labels, bool)> = vec![
            (
                "name matches",
                json!({"eventSources": [{"kind": "Kustomization", "name": "podinfo"}]}),
                ks("info"),
                || None,
                true,
            ),
            (
                "wildcard",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                ks("info"),
                || None,
                true,
            ),
            (
                "other name",
                json!({"eventSources": [{"kind": "Kustomization", "name": "other"}]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "other kind",
                json!({"eventSources": [{"kind": "HelmRelease", "name": "*"}]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "namespace defaults to the Alert's",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                event("Kustomization", "other", "podinfo", "info", "m"),
                || None,
                false,
            ),
            (
                "explicit namespace",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*", "namespace": "other"}]}),
                event("Kustomization", "other", "podinfo", "info", "m"),
                || None,
                true,
            ),
            (
                "info lets errors through",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                ks("error"),
                || None,
                true,
            ),
            (
                "error drops info",
                json!({"eventSeverity": "error", "eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "error passes errors",
                json!({"eventSeverity": "error", "eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                ks("error"),
                || None,
                true,
            ),
            (
                "suspended",
                json!({"suspend": true, "eventSources": [{"kind": "Kustomization", "name": "*"}]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "labels match",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*", "matchLabels": {"team": "a"}}]}),
                ks("info"),
                labelled,
                true,
            ),
            (
                "labels differ",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*", "matchLabels": {"team": "b"}}]}),
                ks("info"),
                labelled,
                false,
            ),
            (
                "second source matches",
                json!({"eventSources": [{"kind": "HelmRelease", "name": "*"}, {"kind": "Kustomization", "name": "podinfo"}]}),
                ks("info"),
                || None,
                true,
            ),
            (
                "canary",
                json!({"eventSources": [{"kind": "Canary", "name": "*"}]}),
                event("Canary", "apps", "podinfo", "info", "New revision detected"),
                || None,
                true,
            ),
            (
                "inclusion matches",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}], "inclusionList": ["^nope", "Applied revision"]}),
                ks("info"),
                || None,
                true,
            ),
            (
                "inclusion misses",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}], "inclusionList": ["^nope"]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "exclusion matches",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}], "exclusionList": ["main@sha1:\\d"]}),
                ks("info"),
                || None,
                false,
            ),
            (
                "exclusion misses",
                json!({"eventSources": [{"kind": "Kustomization", "name": "*"}], "exclusionList": ["^Dependencies"]}),
                ks("info"),
                || None,
                true,
            ),
        ];
        for (name, s, e, labels, want) in cases {
            let mut l = labels;
            let (got, problems) = alert_matches("apps", &spec(s), &e, &mut l);
            assert_eq!(got, want, "{name}");
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
    }

    #[test]
    fn labels_are_read_only_when_needed_and_a_missing_object_is_reported() {
        let e = event("Kustomization", "apps", "podinfo", "info", "m");
        let s = spec(
            json!({"eventSources": [{"kind": "HelmRelease", "name": "*", "matchLabels": {"a": "b"}}]}),
        );
        let mut calls = 0;
        let (m, _) = alert_matches("apps", &s, &e, &mut || {
            calls += 1;
            None
        });
        assert!(!m);
        assert_eq!(calls, 0);
        let s = spec(
            json!({"eventSources": [{"kind": "Kustomization", "name": "*", "matchLabels": {"a": "b"}}]}),
        );
        let (m, p) = alert_matches("apps", &s, &e, &mut || None);
        assert!(!m);
        assert_eq!(
            p,
            [Problem {
                reason: "SourceFetchFailed",
                message: "error getting source object Kustomization/apps/podinfo".into()
            }]
        );
    }

    #[test]
    fn invalid_regexes_are_skipped_and_reported() {
        let e = event(
            "Kustomization",
            "apps",
            "podinfo",
            "info",
            "Applied revision",
        );
        let s = spec(
            json!({"eventSources": [{"kind": "Kustomization", "name": "*"}],
                            "inclusionList": ["(unclosed", "Applied"], "exclusionList": ["[z-a]"]}),
        );
        let (m, p) = alert_matches("apps", &s, &e, &mut || None);
        assert!(m);
        let msgs: Vec<_> = p.iter().map(|p| (p.reason, p.message.as_str())).collect();
        assert_eq!(
            msgs,
            [
                (
                    "InvalidConfig",
                    "failed to compile inclusion regex: (unclosed"
                ),
                ("InvalidConfig", "failed to compile exclusion regex: [z-a]")
            ]
        );
    }

    #[test]
    fn metadata_precedence_is_rfc_0008() {
        let mut e = event("Kustomization", "apps", "podinfo", "info", "m");
        e.metadata = BTreeMap::from([
            (
                "event.toolkit.fluxcd.io/env".into(),
                "from-event-group".into(),
            ),
            (
                "event.toolkit.fluxcd.io/summary".into(),
                "from-event-group".into(),
            ),
            (
                "event.toolkit.fluxcd.io/revision".into(),
                "from-event-group".into(),
            ),
            (
                "kustomize.toolkit.fluxcd.io/revision".into(),
                "main@sha1:1".into(),
            ),
            (
                "helm.toolkit.fluxcd.io/revision".into(),
                "other group".into(),
            ),
            ("unprefixed".into(), "dropped".into()),
        ]);
        let s = spec(json!({"eventSources": [], "summary": "from-summary",
                            "eventMetadata": {"env": "prod", "summary": "from-metadata",
                                              "cluster": "eu-1", "revision": "from-metadata"}}));
        let (m, problem) = combine_metadata(&e, &s);
        assert_eq!(
            m,
            BTreeMap::from([
                ("cluster".to_string(), "eu-1".to_string()),
                ("env".to_string(), "prod".to_string()),
                ("revision".to_string(), "main@sha1:1".to_string()),
                ("summary".to_string(), "from-summary".to_string()),
            ])
        );
        let p = problem.unwrap();
        assert_eq!(p.reason, "MetadataAppendFailed");
        for k in ["env (", "revision (", "summary ("] {
            assert!(p.message.contains(k), "{k}: {}", p.message);
        }
        assert!(!p.message.contains("cluster ("));

        // nothing prefixed, no Alert metadata: the event's own map is kept
        let mut plain = event("Kustomization", "apps", "podinfo", "info", "m");
        plain.metadata = BTreeMap::from([("k".into(), "v".into())]);
        let (m, p) = combine_metadata(&plain, &spec(json!({"eventSources": []})));
        assert_eq!(m, plain.metadata);
        assert_eq!(p, None);
    }

    /// Flux keys its rate limiter on the event as posted, token included, and strips the token
    /// only after: two events that differ only by token are both sent, without it.
    #[test]
    fn the_token_counts_for_dedup_before_it_is_stripped() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let with_token = |t: &str| {
            let mut e = event(
                "HelmRelease",
                "apps",
                "podinfo",
                "info",
                "upgrade succeeded",
            );
            e.metadata
                .insert("helm.toolkit.fluxcd.io/token".into(), t.into());
            e
        };
        let mut d = Dedup::default();
        for (token, sent) in [("t1", true), ("t1", false), ("t2", true), ("t1", false)] {
            let out = admit(&mut d, with_token(token), t0);
            assert_eq!(out.is_some(), sent, "token {token}");
            if let Some(e) = out {
                assert!(
                    e.metadata.is_empty(),
                    "the token is not sent: {:?}",
                    e.metadata
                );
            }
        }
    }

    #[test]
    fn the_token_is_internal() {
        let mut e = event("Kustomization", "apps", "podinfo", "info", "m");
        e.metadata
            .insert("kustomize.toolkit.fluxcd.io/token".into(), "t".into());
        e.metadata
            .insert("kustomize.toolkit.fluxcd.io/revision".into(), "r".into());
        let e = without_internal_metadata(e);
        assert_eq!(
            e.metadata.keys().collect::<Vec<_>>(),
            ["kustomize.toolkit.fluxcd.io/revision"]
        );
    }

    #[test]
    fn dedup_key_is_fluxs_and_the_window_is_five_minutes() {
        let e = event("Kustomization", "apps", "podinfo", "info", "m");
        let expect = |s: &str| -> String {
            Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(
            dedup_key(&e),
            expect("event/name=podinfo/namespace=apps/kind=Kustomization/message=m")
        );
        let mut r = e.clone();
        r.metadata
            .insert("kustomize.toolkit.fluxcd.io/revision".into(), "r1".into());
        r.metadata.insert(
            "kustomize.toolkit.fluxcd.io/originRevision".into(),
            "o1".into(),
        );
        r.metadata
            .insert("kustomize.toolkit.fluxcd.io/token".into(), "t1".into());
        r.metadata
            .insert("kustomize.toolkit.fluxcd.io/other".into(), "ignored".into());
        assert_eq!(
            dedup_key(&r),
            expect(
                "event/name=podinfo/namespace=apps/kind=Kustomization/message=m/originRevision=o1/revision=r1/token=t1"
            )
        );
        let mut severity = e.clone();
        severity.severity = "error".into();
        assert_eq!(
            dedup_key(&severity),
            dedup_key(&e),
            "severity is not in the key, as Flux"
        );

        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |s: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let mut d = Dedup::default();
        assert!(d.admit(&e, t0));
        assert!(!d.admit(&e, at(10)), "a repeat within 5 min");
        assert!(d.admit(&r, at(10)), "another revision is another event");
        assert!(!d.admit(&e, at(299)));
        assert!(d.admit(&e, at(300)), "after 5 min it is sent again");
        assert!(!d.admit(&e, at(301)));
        assert!(d.admit(&r, at(400)));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn commit_status_gating() {
        let base = event("Kustomization", "apps", "podinfo", "info", "m");
        let with = |k: &str, v: &str, sev: &str| {
            let mut e = base.clone();
            e.severity = sev.into();
            if !k.is_empty() {
                e.metadata.insert(k.into(), v.into());
            }
            e
        };
        let update = with(
            "kustomize.toolkit.fluxcd.io/commit_status",
            "update",
            "info",
        );
        let commit = with("event.toolkit.fluxcd.io/commit", "abc", "info");
        let error = with("", "", "error");
        let plain = with("", "", "info");
        for (t, e, want) in [
            ("slack", &update, false),
            ("slack", &plain, true),
            ("slack", &error, true),
            ("generic", &update, true),
            ("generic-hmac", &update, true),
            ("github", &update, true),
            ("github", &commit, true),
            ("github", &error, true),
            ("github", &plain, false),
            ("gitlab", &plain, false),
            ("msteams", &commit, true),
        ] {
            assert_eq!(provider_wants(t, e), want, "{t} {:?}", e.metadata);
        }
    }
}
