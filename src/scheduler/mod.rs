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
//! - The delay rules are pure functions ([`Backoff::next_delay`],
//!   [`jitter`]); the waits after failures are a value ([`Backoff`]) so that
//!   end-to-end tests can shorten them without touching the schedule.
//! - Every delay a server gives (LOGIN-DELAY, `Report::retry_after`) is
//!   clamped to [`MAX_SERVER_DELAY`], and the delay arithmetic saturates:
//!   no value from a server or the configuration can panic an account's
//!   task (which would stop its polling for good).
//! - Two passes of one account never overlap: when a reload restarts an
//!   account (or removes and re-adds it), the new task waits until the old
//!   one has finished its pass, and a pass cut short by a stop or a reload
//!   is not reported to the [`Observer`].
//! - A "check now" ([`Scheduler::check_now`], SIGUSR1) wakes every account
//!   from its wait at once; an account in the middle of a pass keeps the
//!   wake-up and starts its next pass as soon as this one ends (mail that
//!   came in meanwhile may not be in the listing it is working on). It
//!   does not touch the backoff count, and the concurrency limit still holds.
//! - A reload restarts only the accounts whose settings changed, by
//!   comparing the settings themselves (`Account`'s equality), not a digest
//!   of their debug output: passwords compare by their source (the variable,
//!   the file, the command), because every login reads the secret anew, so
//!   rotating a password file restarts nothing and no secret is hashed.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Account;
use crate::sync::{FailureKind, Report};

/// After the shutdown deadline, how long dropped passes may take to go.
const ABORT_WAIT: Duration = Duration::from_secs(5);

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
/// The longest wait a server may ask for (LOGIN-DELAY, [IN-USE]): a day.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(86_400);

/// A server-given floor on the next delay, clamped to [`MAX_SERVER_DELAY`].
pub fn server_floor(asked: Option<Duration>) -> Option<Duration> {
    asked.map(|d| d.min(MAX_SERVER_DELAY))
}

/// `d × factor`, saturating at [`Duration::MAX`] (and at zero), for any
/// input: `Duration::mul_f64` panics on overflow.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(if factor > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

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

/// The waits after failures. [`Backoff::default`] is the production
/// schedule ([`BACKOFF_BASE`], [`BACKOFF_CAP`], [`PERMANENT_RETRY`]);
/// [`Backoff::scaled`] keeps its shape with a shorter base, for tests of the
/// whole daemon (see `POPFERRY_BACKOFF_BASE` in `cli/run.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry after a transient failure; doubles with each one after.
    pub base: Duration,
    /// Longest wait after transient failures.
    pub cap: Duration,
    /// Wait after a permanent failure (never shorter than the interval).
    pub permanent: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
            permanent: PERMANENT_RETRY,
        }
    }
}

impl Backoff {
    /// The production schedule scaled so that its base is `base`: the cap
    /// and the wait after a permanent failure keep their ratio to it.
    pub fn scaled(base: Duration) -> Backoff {
        let ratio = |d: Duration| d.as_secs_f64() / BACKOFF_BASE.as_secs_f64();
        Backoff {
            base,
            cap: scale(base, ratio(BACKOFF_CAP)),
            permanent: scale(base, ratio(PERMANENT_RETRY)),
        }
    }

    /// How long to wait before the next pass, before jitter.
    pub fn next_delay(
        &self,
        interval: Duration,
        report: &Report,
        consecutive_failures: u32,
    ) -> Duration {
        let base = match (report.error_kind, report.error.is_some()) {
            (_, false) => interval,
            (Some(FailureKind::Permanent), true) => self.permanent.max(interval),
            (_, true) => {
                let exp = consecutive_failures.saturating_sub(1).min(16);
                self.base.saturating_mul(1u32 << exp).min(self.cap)
            }
        };
        // A POP3 LOGIN-DELAY (announced in CAPA, or a [LOGIN-DELAY]
        // refusal) sets a floor. [IN-USE] sets none: it is a transient
        // failure like a timeout and backs off as above.
        server_floor(report.retry_after).map_or(base, |floor| base.max(floor))
    }
}

/// How long to wait before the next pass, before jitter, on the production
/// schedule ([`Backoff::default`]).
pub fn next_delay(interval: Duration, report: &Report, consecutive_failures: u32) -> Duration {
    Backoff::default().next_delay(interval, report, consecutive_failures)
}

/// Spreads `delay` by ± [`JITTER`], using `random` as the random source.
pub fn jitter(delay: Duration, random: u64) -> Duration {
    let unit = (random % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
    scale(delay, 1.0 + JITTER * unit)
}

/// When an account's first pass starts: spread over a few seconds so that
/// accounts do not all connect at the same instant.
pub fn first_delay(interval: Duration, random: u64) -> Duration {
    let spread = FIRST_RUN_SPREAD.min(interval);
    scale(spread, (random % 1001) as f64 / 1000.0)
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

struct Running {
    /// The settings the task runs with, to compare with a reloaded
    /// configuration: an account whose settings are equal keeps its task
    /// and its schedule (see `Account`'s equality: passwords compare by
    /// their source, and a rotated password file is read at the next login
    /// anyway).
    account: Arc<Account>,
    cancel: CancellationToken,
    /// Cancelled when the task has ended (its last pass is over).
    exited: CancellationToken,
    /// Wakes the task from its wait ("check now").
    wake: Arc<Notify>,
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
    /// Cancelled when the shutdown deadline has passed: a pass still
    /// running (stuck in a server read, not at a safe point) is dropped,
    /// so that its lease can be given back before the process exits.
    abort: CancellationToken,
    tracker: TaskTracker,
    running: BTreeMap<String, Running>,
    /// Tasks of removed or changed accounts that may still be finishing a
    /// pass: a new task for the same name waits for them, so that two passes
    /// of one account never overlap (they would both settle and append the
    /// same message).
    exiting: BTreeMap<String, CancellationToken>,
    backoff: Backoff,
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
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            running: BTreeMap::new(),
            exiting: BTreeMap::new(),
            backoff: Backoff::default(),
        }
    }

    /// Uses `backoff` instead of the production waits after failures, for
    /// the account tasks started from now on.
    pub fn with_backoff(mut self, backoff: Backoff) -> Scheduler {
        self.backoff = backoff;
        self
    }

    /// Starts, stops and restarts account tasks so that exactly `accounts`
    /// run. Unchanged accounts keep their schedule.
    pub fn apply(&mut self, accounts: &[Account]) -> Changes {
        let mut changes = Changes::default();
        let wanted: BTreeMap<&str, &Account> =
            accounts.iter().map(|a| (a.name.as_str(), a)).collect();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let keep = wanted
                .get(name.as_str())
                .is_some_and(|a| self.running.get(&name).is_some_and(|r| *r.account == **a));
            if !keep && let Some(r) = self.running.remove(&name) {
                r.cancel.cancel();
                self.exiting.insert(name.clone(), r.exited);
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
            let exited = CancellationToken::new();
            let wake = Arc::new(Notify::new());
            let account = Arc::new(a.clone());
            self.running.insert(
                a.name.clone(),
                Running {
                    account: account.clone(),
                    cancel: cancel.clone(),
                    exited: exited.clone(),
                    wake: wake.clone(),
                },
            );
            let previous = self.exiting.remove(&a.name);
            let task = AccountTask {
                account,
                runner: self.runner.clone(),
                observer: self.observer.clone(),
                limit: self.limit.clone(),
                backoff: self.backoff,
                cancel,
                abort: self.abort.clone(),
                wake,
            };
            self.tracker.spawn(async move {
                // Cancelled when this future ends or is dropped.
                let _exited = exited.drop_guard();
                // Not cancellable: the previous task stops at its next safe
                // point (or runs into its timeouts), and until it has, this
                // account must not start a pass. If this task is itself
                // cancelled meanwhile, whoever waits on it waits for both.
                if let Some(previous) = previous {
                    previous.cancelled().await;
                }
                task.run().await;
            });
        }
        self.exiting.retain(|_, t| !t.is_cancelled());
        changes
    }

    /// Makes every account due now: each one waiting starts its pass (as
    /// the concurrency limit allows), each one in a pass starts the next as
    /// soon as it ends. Returns the accounts asked.
    pub fn check_now(&self) -> Vec<String> {
        for r in self.running.values() {
            // Stores the wake-up when the task is not waiting right now.
            r.wake.notify_one();
        }
        self.running.keys().cloned().collect()
    }

    /// Asks every account to stop at its next safe point and waits up to
    /// `deadline`. Returns false if some pass was still running then: it is
    /// dropped at whatever await it has reached (stuck in a server read,
    /// say), and waited for a few seconds more, so that the caller can give
    /// back the leases of such passes (a replica's accounts then move at
    /// once instead of after `lease_ttl`). An APPEND it had in flight keeps
    /// its intent row, which the account's next pass settles by looking in
    /// the target (guarantee 2).
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        // Past the deadline: drop the passes still running (each at the
        // await it is stuck in), and wait for them to be gone, so that the
        // caller may give their leases back knowing nothing of theirs runs.
        self.abort.cancel();
        let _ = tokio::time::timeout(ABORT_WAIT, self.tracker.wait()).await;
        false
    }
}

struct AccountTask {
    account: Arc<Account>,
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    limit: Arc<Semaphore>,
    backoff: Backoff,
    cancel: CancellationToken,
    abort: CancellationToken,
    wake: Arc<Notify>,
}

impl AccountTask {
    async fn run(self) {
        let AccountTask {
            account,
            runner,
            observer,
            limit,
            backoff,
            cancel,
            abort,
            wake,
        } = self;
        let mut failures: u32 = 0;
        let mut delay = first_delay(account.poll_interval, random());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
                _ = wake.notified() => {
                    info!(account = %account.name, "Check now: starting a pass");
                }
            }
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            // Dropping a pass mid-way is safe for the ledger (an APPEND whose
            // answer was not recorded keeps its intent and is settled by the
            // next pass); it only happens past the shutdown deadline.
            let report = tokio::select! {
                r = runner.run(account.clone(), cancel.clone()) => r,
                () = abort.cancelled() => {
                    warn!(account = %account.name, "The pass did not stop within the shutdown deadline; dropped");
                    return;
                }
            };
            drop(permit);
            if cancel.is_cancelled() {
                // Stopped (shutdown, or the account was removed or changed):
                // there is no next pass of this task to announce, and a
                // removed account must not come back into the health report.
                info!(account = %account.name, "Stopped");
                return;
            }
            failures = if report.error.is_some() {
                failures.saturating_add(1)
            } else {
                0
            };
            // Jitter first, then the server's floor: LOGIN-DELAY is a minimum.
            delay = jitter(
                backoff.next_delay(account.poll_interval, &report, failures),
                random(),
            )
            .max(server_floor(report.retry_after).unwrap_or_default());
            if report.error.is_some() {
                warn!(account = %account.name, failures, retry_in = %humantime::format_duration(round(delay)), "Will retry");
            }
            observer
                .finished(account.clone(), report, failures, delay)
                .await;
        }
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
