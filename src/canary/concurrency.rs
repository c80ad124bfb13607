//! Limit on concurrent analyses (Flagger #1069), as pure functions.
//!
//! A Canary whose target changed may start its run only while fewer than `max` Canaries of the
//! limit's scope are running (Progressing, WaitingPromotion, Promoting, Finalising; neither
//! suspended nor Stalled, which make no progress) and no
//! Canary that detected its revision earlier still waits: strict FIFO by queue time, ties
//! broken by name, so a shared ConfigMap change starts the Canaries
//! one after the other instead of all at once. The queue time is the `lastTransitionTime` of
//! the `Queued` condition: status, so it survives restarts, and no field Flagger's CRD (or a
//! CRD Helm did not upgrade) would prune. Two limits exist: the controller's
//! `--max-concurrent-canaries` (every watched Canary) and the namespace annotation
//! [`NAMESPACE_ANNOTATION`] (the Canaries of that namespace); both apply, each strictly FIFO:
//! a Canary held by its namespace's limit keeps its place ahead in the controller-wide queue.
//!
//! The controller builds the [`ConcurrencyLimit`]s (the other Canaries' states from its cache,
//! overlaid with what it decided itself and has not seen come back yet) and passes them to
//! `machine::decide` through `Observed::concurrency`; [`admit`] is the decision.

use k8s_openapi::jiff::Timestamp;

use crate::api::condition::types;
use crate::api::{CanaryPhase, CanaryStatus, find_condition};

/// Namespace annotation: the most Canaries of the namespace that may run at once (≥ 1).
pub const NAMESPACE_ANNOTATION: &str = "canary.pennant.dev/max-concurrent-canaries";

/// Where a Canary stands for the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// A run holds a slot.
    Running,
    /// Waits for a slot since this time.
    Queued(Timestamp),
    /// Neither (idle, or waiting for confirm-rollout approval).
    Idle,
}

/// Another Canary in a limit's scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `<name>.<namespace>`, the tie-breaker of equal queue times.
    pub id: String,
    pub state: PeerState,
}

/// One limit and the other Canaries it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    /// The most Canaries running at once (≥ 1).
    pub max: u32,
    /// Where the limit is set, for messages: `--max-concurrent-canaries` or
    /// `namespace <ns> annotation canary.pennant.dev/max-concurrent-canaries`.
    pub source: String,
    pub others: Vec<Peer>,
}

/// The answer of [`admit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Start,
    /// Wait; the message says which limit holds and how full it is.
    Wait(String),
}

/// Whether the Canary `id`, queued since `queued_at`, may start its run now.
pub fn admit(id: &str, queued_at: Timestamp, limits: &[ConcurrencyLimit]) -> Admission {
    for l in limits {
        let running = l
            .others
            .iter()
            .filter(|p| p.state == PeerState::Running)
            .count();
        let ahead = l
            .others
            .iter()
            .filter(|p| match p.state {
                PeerState::Queued(t) => (t, p.id.as_str()) < (queued_at, id),
                _ => false,
            })
            .count();
        if running + ahead >= l.max as usize {
            let mut holders: Vec<&str> = l
                .others
                .iter()
                .filter(|p| p.state == PeerState::Running)
                .map(|p| p.id.as_str())
                .collect();
            holders.sort_unstable();
            let holders = match holders.is_empty() {
                true => String::new(),
                false => format!("; running: {}", holders.join(", ")),
            };
            return Admission::Wait(format!(
                "{running} of at most {} Canaries running ({}), {ahead} waiting ahead{holders}",
                l.max, l.source
            ));
        }
    }
    Admission::Start
}

/// How a Canary with `spec.suspend` `suspended` and `status` counts for the limit. A suspended
/// Canary, or one `Stalled` (its target gone, its spec invalid, a write rejected), makes no
/// progress: it holds no slot and no place in the queue, whatever its phase.
pub fn peer_state(suspended: bool, status: Option<&CanaryStatus>) -> PeerState {
    let Some(st) = status else {
        return PeerState::Idle;
    };
    let stalled =
        find_condition(&st.conditions, types::STALLED).is_some_and(|c| c.status == "True");
    if suspended || stalled {
        return PeerState::Idle;
    }
    match st.phase {
        Some(
            CanaryPhase::Progressing
            | CanaryPhase::WaitingPromotion
            | CanaryPhase::Promoting
            | CanaryPhase::Finalising,
        ) => PeerState::Running,
        Some(CanaryPhase::Waiting) => match queued_since(st) {
            Some(t) => PeerState::Queued(t),
            None => PeerState::Idle,
        },
        _ => PeerState::Idle,
    }
}

/// Since when a Canary waits for a slot: the `Queued` condition's `lastTransitionTime`.
pub fn queued_since(st: &CanaryStatus) -> Option<Timestamp> {
    find_condition(&st.conditions, types::QUEUED)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// A limit's value: a positive integer up to `u32::MAX`; `Err` with a message for anything
/// else.
pub fn parse_max(value: &str) -> Result<u32, String> {
    let v = value.trim();
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ if !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && !v.trim_start_matches('0').is_empty() =>
        {
            Err(format!(
                "{NAMESPACE_ANNOTATION}: {value:?} is too large (at most {})",
                u32::MAX
            ))
        }
        _ => Err(format!(
            "{NAMESPACE_ANNOTATION}: {value:?} is not a positive integer"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn limit(max: u32, others: Vec<(&str, PeerState)>) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max,
            source: "--max-concurrent-canaries".into(),
            others: others
                .into_iter()
                .map(|(id, state)| Peer {
                    id: id.into(),
                    state,
                })
                .collect(),
        }
    }

    #[test]
    fn admission_table() {
        use PeerState::{Idle, Queued, Running};
        type Others = Vec<(&'static str, PeerState)>;
        // (limit, others, my queue time, start?)
        let table: Vec<(u32, Others, i64, bool)> = vec![
            (1, vec![], 0, true),
            (1, vec![("b.t", Idle)], 0, true),
            (1, vec![("b.t", Running)], 0, false),
            (2, vec![("b.t", Running)], 0, true),
            (2, vec![("b.t", Running), ("c.t", Running)], 0, false),
            // FIFO: an earlier waiter takes the free slot first
            (1, vec![("b.t", Queued(t(-5)))], 0, false),
            (1, vec![("b.t", Queued(t(5)))], 0, true),
            (2, vec![("b.t", Running), ("c.t", Queued(t(-5)))], 0, false),
            (2, vec![("b.t", Running), ("c.t", Queued(t(5)))], 0, true),
            // equal times: by name ("a.t" is me)
            (1, vec![("b.t", Queued(t(0)))], 0, true),
            (1, vec![("0.t", Queued(t(0)))], 0, false),
        ];
        for (max, others, at, want) in table {
            let l = limit(max, others.clone());
            let got = admit("a.t", t(at), &[l]);
            assert_eq!(
                got == Admission::Start,
                want,
                "{max} {others:?} {at}: {got:?}"
            );
        }
    }

    #[test]
    fn every_limit_applies_and_the_message_names_the_full_one() {
        let global = limit(3, vec![("b.x", PeerState::Running)]);
        let mut ns = limit(1, vec![("c.t", PeerState::Running)]);
        ns.source = "namespace t annotation canary.pennant.dev/max-concurrent-canaries".into();
        assert_eq!(
            admit("a.t", t(0), &[global.clone(), ns]),
            Admission::Wait(
                "1 of at most 1 Canaries running (namespace t annotation \
                 canary.pennant.dev/max-concurrent-canaries), 0 waiting ahead; running: c.t"
                    .into()
            )
        );
        assert_eq!(admit("a.t", t(0), &[global]), Admission::Start);
    }

    /// Issue 11: the wait message names the Canaries holding the slots.
    #[test]
    fn the_wait_message_names_the_running_canaries() {
        let l = limit(
            2,
            vec![
                ("d.t", PeerState::Running),
                ("b.t", PeerState::Running),
                ("c.t", PeerState::Idle),
            ],
        );
        assert_eq!(
            admit("a.t", t(0), &[l]),
            Admission::Wait(
                "2 of at most 2 Canaries running (--max-concurrent-canaries), 0 waiting ahead; \
                 running: b.t, d.t"
                    .into()
            )
        );
    }

    /// Issue 11: a Canary whose target was deleted mid-run (Stalled), or suspended, held its
    /// slot for ever.
    #[test]
    fn stalled_or_suspended_canaries_hold_no_slot() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0));
        let mut st = CanaryStatus {
            phase: Some(CanaryPhase::Progressing),
            canary_weight: 20,
            ..Default::default()
        };
        assert_eq!(peer_state(false, Some(&st)), PeerState::Running);
        assert_eq!(peer_state(true, Some(&st)), PeerState::Idle, "suspended");
        crate::api::condition::set_condition(
            &mut st.conditions,
            types::STALLED,
            "True",
            "TargetNotFound",
            "target Deployment t/b not found",
            &now,
        );
        assert_eq!(peer_state(false, Some(&st)), PeerState::Idle, "stalled");
        // Queued but suspended: no place in the queue either.
        let mut queued = CanaryStatus {
            phase: Some(CanaryPhase::Waiting),
            ..Default::default()
        };
        crate::api::condition::set_condition(
            &mut queued.conditions,
            types::QUEUED,
            "True",
            "ConcurrencyLimit",
            "waiting",
            &now,
        );
        assert_eq!(peer_state(false, Some(&queued)), PeerState::Queued(t(0)));
        assert_eq!(peer_state(true, Some(&queued)), PeerState::Idle);
    }

    #[test]
    fn running_phases_hold_a_slot_and_queued_ones_wait() {
        let st = |phase, queued: Option<i64>| {
            let mut st = CanaryStatus {
                phase: Some(phase),
                ..Default::default()
            };
            if let Some(s) = queued {
                let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(s));
                crate::api::condition::set_condition(
                    &mut st.conditions,
                    types::QUEUED,
                    "True",
                    "ConcurrencyLimit",
                    "waiting",
                    &at,
                );
            }
            st
        };
        for p in [
            CanaryPhase::Progressing,
            CanaryPhase::WaitingPromotion,
            CanaryPhase::Promoting,
            CanaryPhase::Finalising,
        ] {
            assert_eq!(
                peer_state(false, Some(&st(p, None))),
                PeerState::Running,
                "{p}"
            );
        }
        assert_eq!(
            peer_state(false, Some(&st(CanaryPhase::Waiting, Some(3)))),
            PeerState::Queued(t(3))
        );
        // waiting for confirm-rollout approval holds no slot and queues nobody
        assert_eq!(
            peer_state(false, Some(&st(CanaryPhase::Waiting, None))),
            PeerState::Idle
        );
        assert_eq!(
            peer_state(false, Some(&st(CanaryPhase::Succeeded, None))),
            PeerState::Idle
        );
        // a left-over condition on a Canary no longer waiting queues nobody
        assert_eq!(
            peer_state(false, Some(&st(CanaryPhase::Succeeded, Some(3)))),
            PeerState::Idle
        );
        assert_eq!(peer_state(false, None), PeerState::Idle);
    }

    #[test]
    fn limit_values() {
        assert_eq!(parse_max("2"), Ok(2));
        assert_eq!(parse_max(" 1 "), Ok(1));
        assert!(
            parse_max("0")
                .unwrap_err()
                .contains("not a positive integer")
        );
        assert!(parse_max("two").is_err());
        assert_eq!(parse_max("4294967295"), Ok(u32::MAX));
        assert_eq!(
            parse_max("99999999999999999999").unwrap_err(),
            "canary.pennant.dev/max-concurrent-canaries: \"99999999999999999999\" is too large \
             (at most 4294967295)"
        );
        assert!(
            parse_max("-1")
                .unwrap_err()
                .contains("not a positive integer")
        );
        assert!(
            parse_max("000")
                .unwrap_err()
                .contains("not a positive integer")
        );
    }
}
