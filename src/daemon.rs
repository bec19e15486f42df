//! `popferry run`: the long-lived service around the scheduler — the sync
//! runner, Prometheus metrics, the health endpoint and the per-account
//! health that `/readyz` reports.
//!
//! `/readyz` answers with its status only (`ready` or `not ready`): the
//! endpoint listens on every interface in a container, and an error's text
//! names users, hosts and what a server said. Why an account is failing is
//! for `popferry status` (the ledger keeps the last error) and the logs.
//!
//! Why here and not in the scheduler: the scheduler is pure timing (tested
//! with paused time); this module is where the real pass, the ledger, the
//! metrics and HTTP meet. Signals and reloading stay in the binary's
//! `cli/run.rs`, which owns the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::Account;
use crate::ledger::{Ledger, now};
use crate::scheduler::{BoxFuture, Observer, Runner};
use crate::sync::{self, Options, Report};

/// `/readyz` turns unhealthy once an account has failed this many passes in a row.
pub const STUCK_AFTER_FAILURES: u32 = 3;

/// Installs the process-wide Prometheus recorder.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("popferry_run_duration_seconds".into()),
            &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
        )?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot set up metrics: {e}"))
}

/// What the HTTP endpoint and the observer share.
pub struct Health {
    ledger: Ledger,
    metrics: PrometheusHandle,
    /// Failed passes in a row, per account.
    failures: Mutex<BTreeMap<String, u32>>,
}

impl Health {
    pub fn new(ledger: Ledger, metrics: PrometheusHandle) -> Arc<Health> {
        Arc::new(Health {
            ledger,
            metrics,
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// Forgets accounts no longer configured.
    pub fn retain(&self, names: &[String]) {
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| names.contains(k));
        }
    }

    /// Whether some account has failed [`STUCK_AFTER_FAILURES`] passes in
    /// a row (a poisoned lock counts as stuck: something panicked).
    fn any_stuck(&self) -> bool {
        self.failures
            .lock()
            .map_or(true, |f| f.values().any(|n| *n >= STUCK_AFTER_FAILURES))
    }
}

/// Runs the real sync pass and records its metrics.
pub struct SyncRunner {
    pub ledger: Ledger,
}

impl Runner for SyncRunner {
    fn run(&self, account: Arc<Account>, cancel: CancellationToken) -> BoxFuture<Report> {
        let ledger = self.ledger.clone();
        Box::pin(async move {
            let opts = Options {
                cancel: Some(cancel),
                ..Options::default()
            };
            let report = sync::run_once(&account, Some(&ledger), &opts, &sync::NoProgress).await;
            record_metrics(&report);
            if let Ok(st) = ledger.status(std::slice::from_ref(&account.name)).await
                && let Some(s) = st.first()
            {
                let a = account.name.clone();
                metrics::gauge!("popferry_pending_intents", "account" => a.clone())
                    .set((s.unresolved + s.pending) as f64);
                if let Some(t) = s.last_success {
                    metrics::gauge!("popferry_last_success_timestamp_seconds", "account" => a)
                        .set(t as f64);
                }
            }
            report
        })
    }
}

fn record_metrics(r: &Report) {
    let a = r.account.clone();
    metrics::counter!("popferry_messages_copied_total", "account" => a.clone()).increment(r.copied);
    metrics::counter!("popferry_bytes_copied_total", "account" => a.clone()).increment(r.bytes);
    metrics::counter!("popferry_messages_skipped_total", "account" => a.clone())
        .increment(r.skipped);
    metrics::counter!("popferry_messages_rejected_total", "account" => a.clone())
        .increment(r.rejected);
    metrics::counter!("popferry_messages_deleted_total", "account" => a.clone())
        .increment(r.deleted);
    let result = match (&r.error, r.interrupted) {
        (Some(_), _) => "failure",
        (None, true) => "interrupted",
        (None, false) => "success",
    };
    metrics::counter!("popferry_runs_total", "account" => a.clone(), "result" => result)
        .increment(1);
    metrics::histogram!("popferry_run_duration_seconds", "account" => a)
        .record(r.duration.as_secs_f64());
}

impl Observer for Health {
    fn finished(
        &self,
        account: Arc<Account>,
        _report: Report,
        failures: u32,
        next_in: Duration,
    ) -> BoxFuture<()> {
        if let Ok(mut f) = self.failures.lock() {
            f.insert(account.name.clone(), failures);
        }
        metrics::gauge!("popferry_consecutive_failures", "account" => account.name.clone())
            .set(f64::from(failures));
        let ledger = self.ledger.clone();
        Box::pin(async move {
            let at = now().saturating_add(i64::try_from(next_in.as_secs()).unwrap_or(i64::MAX));
            if let Err(e) = ledger.set_next_run(&account.name, at).await {
                tracing::warn!(account = %account.name, "Cannot record the next run: {e:#}");
            }
        })
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `stop` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (daemon.listen): {e}"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health);
    tracing::info!(%addr, "Serving /healthz, /readyz and /metrics");
    Ok(tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!("The HTTP endpoint stopped: {e}");
        }
    }))
}

/// The body of a `/readyz` answer: the status and nothing else.
pub const READY: &str = "ready\n";
/// See [`READY`].
pub const NOT_READY: &str = "not ready\n";

/// 200 when the ledger answers and no account is stuck, 503 otherwise; the
/// body says only that (see the module's doc for why).
async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if let Err(e) = h.ledger.ping().await {
        tracing::warn!("/readyz: the ledger does not answer: {e:#}");
        return (StatusCode::SERVICE_UNAVAILABLE, NOT_READY);
    }
    if h.any_stuck() {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
    } else {
        (StatusCode::OK, READY)
    }
}

async fn metrics_text(State(h): State<Arc<Health>>) -> String {
    h.metrics.render()
}
