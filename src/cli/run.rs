//! `popferry run`: the daemon. Owns the process-level concerns: signals
//! (SIGTERM/SIGINT stop at a safe point, SIGHUP reloads the configuration,
//! SIGUSR1 makes every account due now), the metrics recorder and the HTTP
//! endpoint. Scheduling is in
//! `popferry::scheduler`, the pass in `popferry::sync`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use popferry::config::{self, Config};
use popferry::daemon::{self, Access, Health, SyncRunner};
use popferry::scheduler::{Backoff, Scheduler};

use super::Outcome;

/// How long reading `[daemon] status_token` may take (a command).
const STATUS_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop waits for passes to reach a safe point.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Test knob, not a user setting: a humantime duration that replaces the
/// first wait after a failed pass (30 s); the longer waits keep their ratio
/// to it (see `Backoff::scaled`). The end-to-end tests set it so that an
/// account fails several passes in a row within seconds.
pub const BACKOFF_BASE_ENV: &str = "POPFERRY_BACKOFF_BASE";

/// The waits after failures: the production schedule unless the test knob
/// [`BACKOFF_BASE_ENV`] is set.
fn backoff() -> anyhow::Result<Backoff> {
    match std::env::var(BACKOFF_BASE_ENV) {
        Err(_) => Ok(Backoff::default()),
        Ok(v) => {
            let base = humantime::parse_duration(v.trim())
                .map_err(|e| anyhow::anyhow!("{BACKOFF_BASE_ENV}={v:?}: {e}"))?;
            if base.is_zero() {
                anyhow::bail!("{BACKOFF_BASE_ENV} must be longer than zero");
            }
            warn!(
                "{BACKOFF_BASE_ENV}={v}: retry waits shortened (a test setting, not for production)"
            );
            Ok(Backoff::scaled(base))
        }
    }
}

/// `flag` is the `-c` given, if any: a reload looks for the configuration
/// as the start did (the file, or the environment).
pub async fn execute(cfg: Config, flag: Option<PathBuf>) -> Outcome {
    match run(cfg, flag).await {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            error!("{e:#}");
            eprintln!("popferry: {e:#}");
            Outcome::Failed
        }
    }
}

async fn run(cfg: Config, flag: Option<PathBuf>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let backoff = backoff()?;

    let ledger = super::open_ledger(&cfg).await?;
    let metrics = daemon::install_metrics()?;
    let health = Health::new(ledger.clone(), metrics);
    let names: Vec<String> = cfg.accounts.iter().map(|a| a.name.clone()).collect();
    health.retain(&names);
    let stop_http = CancellationToken::new();
    let http = match cfg.daemon.listen {
        Some(addr) => {
            // Read once: the page compares every request with it.
            let token = match &cfg.daemon.status_token {
                Some(source) => Some(
                    source
                        .resolve_within(STATUS_TOKEN_TIMEOUT)
                        .await
                        .map_err(|m| anyhow::anyhow!("daemon.status_token: {m}"))?,
                ),
                None => None,
            };
            let access = Access::for_listen(addr, token);
            Some(daemon::serve(addr, health.clone(), access, stop_http.clone()).await?)
        }
        None => None,
    };
    let mut scheduler = Scheduler::new(
        Arc::new(SyncRunner {
            ledger: ledger.clone(),
        }),
        health.clone(),
        cfg.daemon.max_concurrent_accounts,
    )
    .with_backoff(backoff);
    scheduler.apply(&cfg.accounts);
    info!(accounts = cfg.accounts.len(), config = %cfg.source_path.display(), "popferry daemon started");

    let mut current = cfg;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping at the next safe point"); break; }
            _ = int.recv() => { info!("SIGINT: stopping at the next safe point"); break; }
            _ = usr1.recv() => {
                // Noted before the tasks wake: a pass that starts at once
                // must count as the answer (it starts after the request).
                health.check_requested();
                let asked = scheduler.check_now();
                info!(accounts = asked.len(), "SIGUSR1: every account is due now");
            }
            _ = hup.recv() => {
                let loaded = match config::load(flag.as_deref(), true) {
                    Ok(mut new) => super::accounts::merge_from(&mut new, &ledger, true)
                        .await
                        .map(|()| new)
                        .map_err(|e| format!("{e:#}")),
                    Err(e) => Err(e.to_string()),
                };
                match loaded {
                    Ok(new) => {
                        if new.ledger_path != current.ledger_path
                            || new.ledger_url != current.ledger_url
                            || new.lease_ttl != current.lease_ttl
                            || new.spool != current.spool
                            || new.daemon.listen != current.daemon.listen
                            || new.daemon.status_token != current.daemon.status_token
                            || new.daemon.max_concurrent_accounts != current.daemon.max_concurrent_accounts
                        {
                            warn!("Changes to [ledger], [daemon] and [spool] take effect after a restart");
                        }
                        let changes = scheduler.apply(&new.accounts);
                        let names: Vec<String> = new.accounts.iter().map(|a| a.name.clone()).collect();
                        health.retain(&names);
                        info!(added = ?changes.added, removed = ?changes.removed, changed = ?changes.changed,
                            "Configuration reloaded");
                        current = new;
                    }
                    Err(e) => error!("Configuration reload refused, still running the previous one: {e}"),
                }
            }
        }
    }
    let clean = scheduler.shutdown(SHUTDOWN_DEADLINE).await;
    if !clean {
        warn!(
            "Some passes did not stop within {SHUTDOWN_DEADLINE:?} and were dropped; their unfinished APPENDs are settled at the next start"
        );
        // Their leases were not given back by the passes themselves: give
        // back every one this process may hold (a lease of another holder
        // is left alone), so that another replica can go on at once.
        for account in &current.accounts {
            if let Err(e) = ledger
                .release_lease(&account.name, popferry::sync::lease_holder())
                .await
            {
                warn!(account = %account.name, "Cannot give the lease back: {e:#}");
            }
        }
        // The dropped passes never counted their leases down.
        metrics::gauge!(popferry::sync::lease_metric::LEASES_HELD).set(0.0);
    }
    stop_http.cancel();
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    // Closing waits for connections a stuck pass may still hold: bounded.
    if tokio::time::timeout(Duration::from_secs(5), ledger.close())
        .await
        .is_err()
    {
        warn!("The ledger did not close within 5 s");
    }
    info!("popferry daemon stopped");
    Ok(())
}
