//! Leader election on a `coordination.k8s.io/v1` Lease (library: `kube-lease-manager`), so
//! several replicas can run and only one of them reconciles.
//!
//! Semantics (Flagger's `-enable-leader-election`, client-go's leaderelection, adapted):
//! - every replica serves `/healthz`, `/metrics` and the gating API all the time;
//! - a follower only watches the Lease; it reports ready (`/readyz` 200) once it has reached the
//!   Lease, so a rolling update of the replicas is never blocked by followers;
//! - on acquiring the Lease a replica becomes not-ready, starts the enabled controllers, and is
//!   ready again once every one of them has synced its caches (`runtime::Process::synced`);
//! - a leader that loses the Lease (renewal failed past the lease duration, another holder)
//!   exits with an error at once, as Flagger does: the pod restarts as a follower, and nothing it
//!   had in flight can write after another replica took over;
//! - on SIGTERM/SIGINT the leader stops taking new reconciles, lets the running ones finish (no
//!   half-written step: status is written last in a reconcile), then releases the Lease so a
//!   follower takes over at once instead of after the lease duration.
//!
//! A dead leader (killed, node lost) is replaced once its Lease expires: within the lease
//! duration of its last renewal, plus up to a second. A released Lease is taken by a waiting
//! standby within about [`FOLLOWER_POLL`] (each standby reads the Lease once per poll).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

/// How often a standby checks whether the Lease is free (one GET of the Lease).
pub const FOLLOWER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per process: `<pod or host name>_<random hex>` (Flagger: `<hostname>_<uuid>`).
    pub identity: String,
    /// Seconds a Lease stays valid after its last renewal.
    pub lease_duration: u64,
}

impl Election {
    /// The Lease namespace, as Flagger chooses it: the explicit flag, else the watched
    /// namespace, else `kube-system`.
    pub fn namespace_for(flag: &str, watched: &str) -> String {
        [flag, watched]
            .into_iter()
            .find(|n| !n.is_empty())
            .unwrap_or("kube-system")
            .to_string()
    }

    /// `<name>_<16 random hex digits>`, with `name` from `POD_NAME`, else `HOSTNAME`, else
    /// `pennant`.
    pub fn identity_from_env() -> String {
        let name = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "pennant".into());
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        format!("{name}_{:016x}", h.finish())
    }

    /// Seconds before expiry at which the holder renews: two thirds of the duration (at least
    /// 1, below the duration), so it renews once a third has passed and a slow API server has
    /// the other two thirds to answer before a standby may take over (15 s: renewed every 5 s,
    /// 10 s of slack; a grace of 5 s lost the Lease to a standby under CI load). client-go's
    /// defaults (15 s lease, 10 s renew deadline, 2 s retry) leave about as much.
    pub fn grace(&self) -> u64 {
        let d = self.lease_duration;
        (d - d / 3).clamp(1, d.saturating_sub(1).max(1))
    }
}

/// Run `leading` only while holding the Lease; see the module docs for the exact semantics.
///
/// `leading` must return when the process is asked to stop (the Canary controller does, on
/// SIGTERM/SIGINT). Returns `Ok` after a graceful stop (Lease released); an error when the Lease
/// cannot be reached at start, or when leadership is lost.
pub async fn run_when_leader<F, Fut>(
    client: Client,
    election: Election,
    ready: Arc<AtomicBool>,
    leading: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let lease = format!("{}/{}", election.namespace, election.lease_name);
    let build = || {
        LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.lease_duration)
            .with_grace(election.grace())
            // one field manager per candidate: two that read the Lease free at once both
            // apply it, and only a distinct manager makes the second apply a conflict (with a
            // shared one, both would believe they lead until the next renewal)
            .with_field_manager(field_manager(&election.identity))
            .build()
    };
    // Fail fast when the Lease cannot be reached at all (RBAC, namespace).
    let mut manager = build().await.with_context(|| format!("lease {lease}"))?;
    info!(identity = %election.identity, %lease, "waiting for leadership");
    ready.store(true, Ordering::SeqCst);

    // Standby: every FOLLOWER_POLL, a fresh look at the Lease and an attempt to take it. (A
    // LeaseManager trusts the expiry it last read until it passes, so one kept across polls
    // would notice a Lease released early only at that expiry.)
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let manager = loop {
        tokio::select! {
            r = tokio::time::timeout(FOLLOWER_POLL, manager.changed()) => match r {
                Ok(Ok(true)) => break manager,
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(e)) => {
                    warn!("lease {lease}: {e}");
                    tokio::time::sleep(FOLLOWER_POLL).await;
                }
            },
            _ = &mut shutdown => {
                info!("shutting down before becoming leader");
                return Ok(());
            }
        }
        match build().await {
            Ok(m) => manager = m,
            Err(e) => warn!("lease {lease}: {e}"),
        }
    };

    // Leader: the library renews in the background and reports a loss on the channel.
    let (leader, task) = manager.watch().await;
    let release = |leader: tokio::sync::watch::Receiver<bool>| async move {
        // Closing the channel makes the lease task release the Lease (if held) and end.
        drop(leader);
        match task.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(e)) => warn!("releasing the lease: {e}"),
            Err(e) => warn!("lease task: {e}"),
        }
    };
    info!(identity = %election.identity, "became leader; starting the controller");
    ready.store(false, Ordering::SeqCst);
    let mut lost = leader.clone();
    let outcome = tokio::select! {
        r = leading() => Some(r),
        _ = lost.wait_for(|l| !*l) => None,
    };
    drop(lost);
    let Some(outcome) = outcome else {
        // Another replica may already be writing: stop now, never finish a step.
        anyhow::bail!(
            "lost leadership of lease {}/{}; exiting",
            election.namespace,
            election.lease_name
        );
    };
    release(leader).await;
    outcome
}

/// The Lease's field manager of one candidate: `pennant-leader-election/<identity>`, at most
/// 128 characters (the API server's limit), keeping the identity's random suffix.
pub fn field_manager(identity: &str) -> String {
    let prefix = "pennant-leader-election/";
    let room = 128 - prefix.len();
    let skip = identity.chars().count().saturating_sub(room);
    format!(
        "{prefix}{}",
        identity.chars().skip(skip).collect::<String>()
    )
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_namespace_follows_flaggers_rule() {
        assert_eq!(Election::namespace_for("ops", "apps"), "ops");
        assert_eq!(Election::namespace_for("", "apps"), "apps");
        assert_eq!(Election::namespace_for("", ""), "kube-system");
    }

    #[test]
    fn identities_are_unique_and_name_the_pod() {
        let a = Election::identity_from_env();
        let b = Election::identity_from_env();
        assert_ne!(a, b);
        let (_, suffix) = a.rsplit_once('_').unwrap();
        assert_eq!(suffix.len(), 16);
    }

    #[test]
    fn each_candidate_applies_the_lease_under_its_own_field_manager() {
        let a = field_manager("pennant-7d9f_00000000000000aa");
        assert_eq!(a, "pennant-leader-election/pennant-7d9f_00000000000000aa");
        assert_ne!(a, field_manager("pennant-7d9f_00000000000000ab"));
        let long = format!("{}_0123456789abcdef", "p".repeat(300));
        let m = field_manager(&long);
        assert_eq!(m.len(), 128);
        assert!(m.ends_with("_0123456789abcdef"), "{m}");
    }

    #[test]
    fn renewal_comes_once_a_third_of_the_duration_has_passed() {
        let e = |d| Election {
            namespace: "n".into(),
            lease_name: "l".into(),
            identity: "i".into(),
            lease_duration: d,
        };
        assert_eq!(e(15).grace(), 10);
        assert_eq!(e(8).grace(), 6);
        assert_eq!(e(6).grace(), 4);
        assert_eq!(e(2).grace(), 1);
        assert_eq!(e(60).grace(), 40);
    }
}
