//! The daemon's clock: every account on its own schedule, with jitter,
//! backoff after failures, a limit on how many run at once, and a clean
//! stop.
//!
//! Why it is shaped so:
//! - The pass itself is behind [`Runner`], so the timing logic can be tested
//!   with paused tokio time and a scripted runner, and the daemon uses the
//!   very same `sync::run_once` as `popferry sync`.
//! - Each account is its own task; the only thing they share is the
//!   concurrency [`Semaphore`], so one account's trouble (a hung server that
//!   runs into its timeouts, a bad password) never delays another beyond
//!   holding one permit.
//! - Cancellation is a [`CancellationToken`] handed to the pass, which stops
//!   only between messages (a safe point); shutdown waits with a deadline.
//! - The delay rules are pure functions ([`next_delay`], [`jitter`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Account;
use crate::sync::{FailureKind, Report};

/// First retry after a transient failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest wait between retries after transient failures.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Wait after a permanent failure (bad password): slow, not hammering.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(3600);
/// The first pass of each account starts within this (spread by jitter).
pub const FIRST_RUN_SPREAD: Duration = Duration::from_secs(10);
/// Jitter applied to every delay: ± this fraction.
pub const JITTER: f64 = 0.1;

/// Runs one pass of one account.
pub trait Runner: Send + Sync + 'static {
    fn run(&self, account: Arc<Account>, cancel: CancellationToken) -> BoxFuture<Report>;
}

/// Told about every finished pass (health, metrics, the ledger's next run).
pub trait Observer: Send + Sync + 'static {
    fn finished(
        &self,
        account: Arc<Account>,
        report: Report,
        consecutive_failures: u32,
        next_in: Duration,
    ) -> BoxFuture<()>;
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How long to wait before the next pass, before jitter.
pub fn next_delay(interval: Duration, report: &Report, consecutive_failures: u32) -> Duration {
    let base = match (report.error_kind, report.error.is_some()) {
        (_, false) => interval,
        (Some(FailureKind::Permanent), true) => PERMANENT_RETRY.max(interval),
        (_, true) => {
            let exp = consecutive_failures.saturating_sub(1).min(16);
            BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
        }
    };
    // A server's LOGIN-DELAY or [IN-USE] sets a floor.
    report.retry_after.map_or(base, |floor| base.max(floor))
}

/// Spreads `delay` by ± [`JITTER`], using `random` as the random source.
pub fn jitter(delay: Duration, random: u64) -> Duration {
    let unit = (random % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
    delay.mul_f64(1.0 + JITTER * unit)
}

/// When an account's first pass starts: spread over a few seconds so that
/// accounts do not all connect at the same instant.
pub fn first_delay(interval: Duration, random: u64) -> Duration {
    let spread = FIRST_RUN_SPREAD.min(interval);
    spread.mul_f64((random % 1001) as f64 / 1000.0)
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fingerprint of everything about an account, secrets included (hashed),
/// to tell a changed account from an unchanged one on reload.
fn fingerprint(a: &Account) -> String {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{a:?}"));
    h.update(a.source.password.expose_secret());
    h.update([0]);
    h.update(a.target.server.password.expose_secret());
    crate::spool::hex(&h.finalize())
}

struct Running {
    fingerprint: String,
    cancel: CancellationToken,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

pub struct Scheduler {
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    running: BTreeMap<String, Running>,
}

impl Scheduler {
    pub fn new(
        runner: Arc<dyn Runner>,
        observer: Arc<dyn Observer>,
        max_concurrent: usize,
    ) -> Scheduler {
        Scheduler {
            runner,
            observer,
            limit: Arc::new(Semaphore::new(max_concurrent.max(1))),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            running: BTreeMap::new(),
        }
    }

    /// Starts, stops and restarts account tasks so that exactly `accounts`
    /// run. Unchanged accounts keep their schedule.
    pub fn apply(&mut self, accounts: &[Account]) -> Changes {
        let mut changes = Changes::default();
        let wanted: BTreeMap<&str, &Account> =
            accounts.iter().map(|a| (a.name.as_str(), a)).collect();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let keep = wanted.get(name.as_str()).is_some_and(|a| {
                self.running
                    .get(&name)
                    .is_some_and(|r| r.fingerprint == fingerprint(a))
            });
            if !keep && let Some(r) = self.running.remove(&name) {
                r.cancel.cancel();
                if wanted.contains_key(name.as_str()) {
                    changes.changed.push(name);
                } else {
                    changes.removed.push(name);
                }
            }
        }
        for a in accounts {
            if self.running.contains_key(&a.name) {
                continue;
            }
            if !changes.changed.contains(&a.name) {
                changes.added.push(a.name.clone());
            }
            let cancel = self.shutdown.child_token();
            self.running.insert(
                a.name.clone(),
                Running {
                    fingerprint: fingerprint(a),
                    cancel: cancel.clone(),
                },
            );
            let task = account_loop(
                Arc::new(a.clone()),
                self.runner.clone(),
                self.observer.clone(),
                self.limit.clone(),
                cancel,
            );
            self.tracker.spawn(task);
        }
        changes
    }

    /// Asks every account to stop at its next safe point and waits up to
    /// `deadline`. Returns false if some pass was still running then (it is
    /// dropped; an APPEND it had in flight is settled by the next start).
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

async fn account_loop(
    account: Arc<Account>,
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut delay = first_delay(account.poll_interval, random());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let report = runner.run(account.clone(), cancel.clone()).await;
        drop(permit);
        failures = if report.error.is_some() {
            failures.saturating_add(1)
        } else {
            0
        };
        // Jitter first, then the server's floor: LOGIN-DELAY is a minimum.
        delay = jitter(
            next_delay(account.poll_interval, &report, failures),
            random(),
        )
        .max(report.retry_after.unwrap_or_default());
        if report.error.is_some() {
            warn!(account = %account.name, failures, retry_in = %humantime::format_duration(round(delay)), "Will retry");
        }
        observer
            .finished(account.clone(), report, failures, delay)
            .await;
        if cancel.is_cancelled() {
            info!(account = %account.name, "Stopped");
            return;
        }
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
