//! One process per account (guarantee 9): a pass runs only while its
//! process holds the account's lease in the ledger, and renews it as it
//! goes. Two processes on one account (a `sync` beside `run`, replicas on a
//! shared ledger) would otherwise both append the same messages: POP3
//! servers do not reliably lock a mailbox (Dovecot's default
//! `pop3_lock_session = no`).
//!
//! A process that dies loses its leases when they expire. One that was
//! killed on this very host is known dead at once (its process id is gone),
//! so that `popferry sync` run again right after a crash does not wait for
//! the expiry.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ledger::{Lease, Ledger, now};

/// How often a running pass renews its lease: a quarter of its time to
/// live (`[ledger] lease_ttl`, 60 s by default), so that a slow ledger
/// write or two do not lose it.
fn renew_every(ledger: &Ledger) -> Duration {
    ledger.lease_ttl() / 4
}

/// This process's name as a lease holder: host, process id and a random
/// tag (process ids are reused). `status` shows it for each account held.
pub fn holder() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| {
        use std::hash::BuildHasher;
        let tag = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        format!(
            "{} pid {} {:08x}",
            host_name(),
            std::process::id(),
            tag & 0xffff_ffff
        )
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "localhost".into())
}

/// Is `holder` a process of this host that no longer runs?
fn is_dead_here(holder: &str) -> bool {
    let mut words = holder.split(' ');
    let (Some(host), Some("pid"), Some(pid)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && pid != std::process::id()
        && std::fs::metadata("/proc/self").is_ok()
        && std::fs::metadata(format!("/proc/{pid}")).is_err()
}

/// Who holds an account another process has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldBy {
    pub holder: String,
    /// Unix seconds.
    pub until: i64,
}

/// The metrics of this process's leases (per replica: `/metrics` of
/// `popferry run`; recorded nowhere in a `popferry sync`).
pub mod metric {
    /// Gauge: the leases this process holds now (passes in progress).
    pub const LEASES_HELD: &str = "popferry_leases_held";
    /// Counter: passes this process ran under a lease it held.
    pub const PASSES: &str = "popferry_passes_total";
    /// Counter: passes not run because another process held the account.
    pub const HELD_ELSEWHERE: &str = "popferry_passes_held_elsewhere_total";
    /// Counter: claims of an account whose previous lease was never given
    /// back (its holder died or was cut off: it expired, or its process
    /// is gone from this host).
    pub const TAKEOVERS: &str = "popferry_lease_takeovers_total";
}

/// Takes the lease on `account`, or says who has it. A lease held by a
/// process of this host that is gone is taken over.
pub(super) async fn take(ledger: &Ledger, account: &str) -> anyhow::Result<Result<(), HeldBy>> {
    let ttl = ledger.lease_ttl();
    let taken = match ledger.take_lease(account, holder(), ttl).await? {
        Lease::Held { took_over, .. } => Ok(took_over),
        Lease::HeldBy { holder: other, .. } if is_dead_here(&other) => {
            warn!(holder = %other, "Taking over the lease of a popferry process that is gone");
            ledger.release_lease(account, &other).await?;
            let ttl = ledger.lease_ttl();
            match ledger.take_lease(account, holder(), ttl).await? {
                Lease::Held { .. } => Ok(Some(other)),
                Lease::HeldBy { holder, until } => Err(HeldBy { holder, until }),
            }
        }
        Lease::HeldBy { holder, until } => Err(HeldBy { holder, until }),
    };
    match taken {
        Ok(took_over) => {
            if let Some(previous) = took_over {
                info!(previous = %previous, "Took the account over: its previous lease expired without being given back");
                metrics::counter!(metric::TAKEOVERS).increment(1);
            }
            metrics::gauge!(metric::LEASES_HELD).increment(1.0);
            metrics::counter!(metric::PASSES).increment(1);
            Ok(Ok(()))
        }
        Err(held) => {
            metrics::counter!(metric::HELD_ELSEWHERE).increment(1);
            Ok(Err(held))
        }
    }
}

/// Gives the lease back at the end of a pass (every [`take`] that
/// succeeded is followed by one).
pub(super) async fn release(ledger: &Ledger, account: &str) {
    metrics::gauge!(metric::LEASES_HELD).decrement(1.0);
    if let Err(e) = ledger.release_lease(account, holder()).await {
        // It expires by itself.
        warn!("Cannot release the account's lease: {e:#}");
    }
}

/// Renews the lease until it is lost to another process, or cannot be
/// renewed for half its time to live (the ledger unreachable: another
/// process may take it over once it expires); then cancels `stop` (the
/// pass stops at its next safe point, before its next APPEND) and returns
/// who took it. Runs for as long as it is polled otherwise.
pub(super) async fn keep(ledger: &Ledger, account: &str, stop: &CancellationToken) -> HeldBy {
    let ttl = ledger.lease_ttl();
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(renew_every(ledger)).await;
        match ledger.take_lease(account, holder(), ttl).await {
            Ok(Lease::Held { .. }) => {
                renewed = std::time::Instant::now();
                debug!("Lease renewed");
            }
            Ok(Lease::HeldBy { holder, until }) => {
                stop.cancel();
                return HeldBy { holder, until };
            }
            // Tried again at the next turn; the lease outlives a few misses.
            Err(e) if renewed.elapsed() < ttl / 2 => {
                warn!("Cannot renew the account's lease: {e:#}")
            }
            Err(e) => {
                warn!(
                    "Cannot renew the account's lease, stopping the pass before it expires: {e:#}"
                );
                stop.cancel();
                return HeldBy {
                    holder: "nobody known (the ledger does not answer)".into(),
                    until: now(),
                };
            }
        }
    }
}

/// "held by H until T", for messages.
pub(super) fn describe(h: &HeldBy) -> String {
    let left = h.until.saturating_sub(now()).max(0);
    format!("{} (for at most {left} s more unless renewed)", h.holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_names_this_host_and_process() {
        let h = holder();
        assert!(h.contains(&format!("pid {} ", std::process::id())), "{h}");
        assert_eq!(h, holder(), "stable within a process");
        assert!(!is_dead_here(h), "this process is alive");
    }

    #[test]
    fn a_gone_process_of_this_host_is_dead_and_others_are_not_judged() {
        let host = host_name();
        // Above the kernel's pid_max (4194304 at most): never a live process.
        assert!(is_dead_here(&format!("{host} pid 4194305 0000abcd")));
        assert!(!is_dead_here("other-host pid 4194305 0000abcd"));
        assert!(
            !is_dead_here(&format!("{host} pid 1 0000abcd")),
            "init runs"
        );
        assert!(!is_dead_here("garbage"));
        assert!(!is_dead_here(&format!("{host} pid x y")));
    }
}
