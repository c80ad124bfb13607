//! One object → one [`Summary`]: the fields `flux get` prints for Flux's kinds (revision,
//! suspended, Ready status and message, `flux2/cmd/flux/get_*.go`) and those `kubectl get
//! canaries` prints for Canaries (Flagger's printer columns: status, weight, last transition
//! time), with the age `kubectl get` prints. PURE: `now` is passed in.

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde::Serialize;

use crate::api::Canary;
use crate::api::helm_release::HelmRelease;
use crate::api::kustomization::Kustomization;
use crate::api::source::{
    Condition, GitRepository, HelmChart, HelmRepository, OCIRepository, Source,
};

/// The kinds `pennant get` lists, in the order `get all` prints them (Flux's `get all` order:
/// sources, HelmReleases, Kustomizations; then Canaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    GitRepository,
    OCIRepository,
    HelmRepository,
    HelmChart,
    HelmRelease,
    Kustomization,
    Canary,
}

impl Kind {
    /// Every kind, in `get all` order.
    pub const ALL: [Kind; 7] = [
        Kind::GitRepository,
        Kind::OCIRepository,
        Kind::HelmRepository,
        Kind::HelmChart,
        Kind::HelmRelease,
        Kind::Kustomization,
        Kind::Canary,
    ];
    /// The source kinds (`pennant get sources`, as `flux get sources all`; pennant serves no
    /// Bucket).
    pub const SOURCES: [Kind; 4] = [
        Kind::GitRepository,
        Kind::OCIRepository,
        Kind::HelmRepository,
        Kind::HelmChart,
    ];

    /// The Kubernetes kind, e.g. `GitRepository`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GitRepository => "GitRepository",
            Kind::OCIRepository => "OCIRepository",
            Kind::HelmRepository => "HelmRepository",
            Kind::HelmChart => "HelmChart",
            Kind::HelmRelease => "HelmRelease",
            Kind::Kustomization => "Kustomization",
            Kind::Canary => "Canary",
        }
    }

    /// `apiVersion` of the kind as pennant serves it.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::GitRepository | Kind::OCIRepository | Kind::HelmRepository | Kind::HelmChart => {
                crate::api::source::API_VERSION
            }
            Kind::HelmRelease => "helm.toolkit.fluxcd.io/v2",
            Kind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
            Kind::Canary => "flagger.app/v1beta1",
        }
    }

    /// The kind a name on the command line means: the kind, its plural, or the short names of
    /// `kubectl` and `flux` (`ks`, `hr`, `git`, `oci`, `helmrepo`, `chart`, `canary`), any case.
    /// `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let k = match s.trim_end_matches('s') {
            "gitrepository" | "gitrepositorie" | "git" | "gitrepo" => Kind::GitRepository,
            "ocirepository" | "ocirepositorie" | "oci" | "ocirepo" => Kind::OCIRepository,
            "helmrepository" | "helmrepositorie" | "helmrepo" | "helm" => Kind::HelmRepository,
            "helmchart" | "chart" | "hc" => Kind::HelmChart,
            "helmrelease" | "hr" => Kind::HelmRelease,
            "kustomization" | "k" => Kind::Kustomization,
            "canary" | "canarie" | "cd" => Kind::Canary,
            _ => return None,
        };
        Some(k)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object at a glance. Strings are as printed (empty when unknown); `-o json|yaml` prints
/// this shape (camelCase keys).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The Ready condition's status (`True`, `False`, `Unknown`) for Flux's kinds; for a
    /// Canary, its `Promoted` condition's. `False` before the first reconcile, as `flux get`.
    pub ready: String,
    /// A Canary's `status.phase` (`Progressing`, `Succeeded`, ...); empty for other kinds.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// A Canary's `status.canaryWeight`, percent 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// A Canary's `status.failedChecks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    /// The revision, hex digests of 40 to 128 digits cut to 8 as `flux get` does: the
    /// artifact's for sources, `lastAppliedRevision` for Kustomizations, the latest history
    /// entry's chart version (else `lastAttemptedRevision`) for HelmReleases, the pod template
    /// hash running on the primary (`lastPromotedSpec`) for Canaries.
    pub revision: String,
    /// `spec.suspend`.
    pub suspended: bool,
    /// A Canary's `status.lastTransitionTime` (RFC 3339), as `kubectl get canaries` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// `metadata.creationTimestamp` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Time since `created` as `kubectl get` prints it ([`human_age`]), at the `now` given.
    pub age: String,
    /// The Ready (Canary: `Promoted`) condition's message, hex digests cut as for `revision`;
    /// `waiting to be reconciled` without one, as `flux get`.
    pub message: String,
}

/// `flux get`'s message for an object with no Ready condition yet.
pub const NOT_RECONCILED: &str = "waiting to be reconciled";

/// Summaries of any kind pennant lists: implemented by every [`Kind`]'s type.
pub trait Summarize {
    /// The row of this object at `now`.
    fn summarize(&self, now: Timestamp) -> Summary;
}

fn base<K: Resource>(kind: Kind, o: &K, now: Timestamp) -> Summary {
    let meta = o.meta();
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    Summary {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        ready: "False".into(),
        phase: String::new(),
        weight: None,
        failed_checks: None,
        revision: String::new(),
        suspended: false,
        last_transition_time: None,
        created: created.map(rfc3339),
        age: created.map(|c| human_age(now, c)).unwrap_or_default(),
        message: NOT_RECONCILED.into(),
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Ready status and message as `flux get`'s `statusAndMessage`: `False`, `waiting to be
/// reconciled` without a Ready condition.
fn ready_of(conditions: &[Condition]) -> (String, String) {
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) => (c.status.clone(), truncate_hex(&c.message)),
        None => ("False".into(), NOT_RECONCILED.into()),
    }
}

fn source_summary<S: Source + Resource>(kind: Kind, s: &S, now: Timestamp) -> Summary {
    let (ready, message) = ready_of(s.conditions());
    let revision = s.artifact().map(|a| a.revision.as_str()).unwrap_or("");
    Summary {
        ready,
        message,
        // a chart's revision is a SemVer: `flux get sources chart` does not cut it
        revision: if kind == Kind::HelmChart {
            revision.to_string()
        } else {
            truncate_hex(revision)
        },
        suspended: s.suspended(),
        ..base(kind, s, now)
    }
}

impl Summarize for GitRepository {
    fn summarize(&self, now: Timestamp) -> Summary {
        source_summary(Kind::GitRepository, self, now)
    }
}

impl Summarize for OCIRepository {
    fn summarize(&self, now: Timestamp) -> Summary {
        source_summary(Kind::OCIRepository, self, now)
    }
}

impl Summarize for HelmRepository {
    /// An OCI HelmRepository is static (no reconciler, no status): Ready, as `flux get sources
    /// helm` prints it.
    fn summarize(&self, now: Timestamp) -> Summary {
        let mut s = source_summary(Kind::HelmRepository, self, now);
        if self.spec.type_.as_deref() == Some("oci") {
            s.ready = "True".into();
            s.message = "Helm repository is Ready".into();
        }
        s
    }
}

impl Summarize for HelmChart {
    fn summarize(&self, now: Timestamp) -> Summary {
        source_summary(Kind::HelmChart, self, now)
    }
}

impl Summarize for Kustomization {
    fn summarize(&self, now: Timestamp) -> Summary {
        let status = self.status.as_ref();
        let (ready, message) = ready_of(status.map_or(&[][..], |s| &s.conditions));
        Summary {
            ready,
            message,
            revision: truncate_hex(
                status
                    .and_then(|s| s.last_applied_revision.as_deref())
                    .unwrap_or(""),
            ),
            suspended: self.spec.suspend.unwrap_or(false),
            ..base(Kind::Kustomization, self, now)
        }
    }
}

impl Summarize for HelmRelease {
    fn summarize(&self, now: Timestamp) -> Summary {
        let status = self.status.as_ref();
        let (ready, message) = ready_of(status.map_or(&[][..], |s| &s.conditions));
        let revision = status
            .and_then(|s| s.history.first().map(|h| h.chart_version.clone()))
            .or_else(|| status.and_then(|s| s.last_attempted_revision.clone()))
            .unwrap_or_default();
        Summary {
            ready,
            message,
            revision,
            suspended: self.spec.suspend.unwrap_or(false),
            ..base(Kind::HelmRelease, self, now)
        }
    }
}

impl Summarize for Canary {
    /// Ready and message from the `Promoted` condition (Flagger's only condition), or from
    /// pennant's `Stalled=True` (a run that cannot start: no target, an invalid spec) as
    /// `False`; the phase `Initializing` before the first status, as Flagger's printer shows
    /// nothing there.
    fn summarize(&self, now: Timestamp) -> Summary {
        use crate::api::condition::types;
        let status = self.status.as_ref();
        let find = |t: &str| status.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
        let stalled = find(types::STALLED)
            .filter(|c| c.status == "True")
            .map(|c| {
                let mut c = c.clone();
                c.status = "False".into();
                c
            });
        let promoted = stalled.as_ref().or(find(types::PROMOTED));
        Summary {
            ready: promoted.map_or("Unknown".into(), |c| c.status.clone()),
            message: promoted
                .and_then(|c| c.message.as_deref())
                .map_or_else(|| NOT_RECONCILED.into(), truncate_hex),
            phase: status
                .and_then(|s| s.phase)
                .map_or("", |p| p.as_str())
                .to_string(),
            weight: Some(status.map_or(0, |s| s.canary_weight)),
            failed_checks: Some(status.map_or(0, |s| s.failed_checks)),
            revision: status
                .and_then(|s| s.last_promoted_spec.as_deref())
                .unwrap_or("")
                .to_string(),
            suspended: self.spec.suspend,
            last_transition_time: status
                .and_then(|s| s.last_transition_time.as_ref())
                .map(|t| rfc3339(t.0)),
            ..base(Kind::Canary, self, now)
        }
    }
}

/// Hex runs of 40 to 128 digits (SHA-1 to SHA-512) cut to their first 8, as Flux's
/// `utils.TruncateHex` (`main@sha1:0a1b2c3d…` → `main@sha1:0a1b2c3d`). A run must stand alone
/// (word boundaries, lower-case digits), as Flux's `\b[a-f0-9]{40,128}\b`.
pub fn truncate_hex(s: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !word(chars[i - 1]);
        if boundary && hex(chars[i]) {
            let end = (i..chars.len())
                .find(|&j| !hex(chars[j]))
                .unwrap_or(chars.len());
            let closed = end == chars.len() || !word(chars[end]);
            if closed && (40..=128).contains(&(end - i)) {
                out.extend(&chars[i..i + 8]);
                i = end;
                continue;
            }
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `now - then` as `kubectl get` prints ages (apimachinery's `duration.HumanDuration`): `45s`
/// under 2 minutes, `5m3s` under 10, `42m` under 3 hours, `4h12m` under 8, `30h` under 48,
/// `3d4h` under 8 days, `120d` under 2 years, `3y20d` under 8, then `9y`. `<invalid>` for a
/// time more than a second ahead of `now` (clock skew), `0s` for up to a second.
pub fn human_age(now: Timestamp, then: Timestamp) -> String {
    let secs = now.as_second() - then.as_second();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ages_print_as_kubectl_prints_them() {
        let now = at("2026-12-06T12:00:00Z");
        let table = [
            (0, "0s"),
            (-1, "0s"),
            (-5, "<invalid>"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (303, "5m3s"),
            (600, "10m"),
            (42 * 60 + 59, "42m"),
            (3 * 3600, "3h"),
            (4 * 3600 + 12 * 60, "4h12m"),
            (30 * 3600 + 59 * 60, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (2 * 86400, "2d"),
            (120 * 86400, "120d"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (ago, want) in table {
            let then = Timestamp::from_second(now.as_second() - ago).unwrap();
            assert_eq!(human_age(now, then), want, "{ago} s ago");
        }
    }

    #[test]
    fn hex_digests_are_cut_to_eight_as_flux_does() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let sha256 = "a".repeat(64);
        assert_eq!(
            truncate_hex(&format!("main@sha1:{sha1}")),
            "main@sha1:01234567"
        );
        assert_eq!(
            truncate_hex(&format!("Applied revision: main@sha1:{sha1}, ok {sha256}")),
            "Applied revision: main@sha1:01234567, ok aaaaaaaa"
        );
        assert_eq!(
            truncate_hex(&sha1[..39]),
            &sha1[..39],
            "39 digits: not a digest"
        );
        assert_eq!(truncate_hex(&"b".repeat(129)), "b".repeat(129), "too long");
        assert_eq!(
            truncate_hex(&format!("x{sha1}")),
            format!("x{sha1}"),
            "not at a word boundary"
        );
        assert_eq!(truncate_hex("6.1.0"), "6.1.0");
        assert_eq!(truncate_hex(""), "");
    }

    #[test]
    fn kinds_parse_from_flux_and_kubectl_names() {
        for (s, k) in [
            ("ks", Kind::Kustomization),
            ("Kustomizations", Kind::Kustomization),
            ("hr", Kind::HelmRelease),
            ("helmreleases", Kind::HelmRelease),
            ("git", Kind::GitRepository),
            ("gitrepositories", Kind::GitRepository),
            ("oci", Kind::OCIRepository),
            ("helmrepo", Kind::HelmRepository),
            ("chart", Kind::HelmChart),
            ("canaries", Kind::Canary),
            ("Canary", Kind::Canary),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse("bucket"), None, "pennant serves no Bucket");
        assert_eq!(Kind::parse("pods"), None);
    }
}
