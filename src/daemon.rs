//! `popferry run`: the long-lived service around the scheduler — the sync
//! runner, Prometheus metrics, the health endpoint, the per-account health
//! that `/readyz` reports, and the status page at `/` (`page.rs`; who may
//! read it: `access.rs`).
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

mod access;
pub mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::Account;
use crate::ledger::{Ledger, now};
use crate::scheduler::{BoxFuture, Observer, Runner};
use crate::status::State as AccountState;
use crate::sync::{self, FailureKind, Options, Report};

pub use access::Access;

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
        .inspect(|_| {
            // Which replica this is, in the words `popferry status` uses
            // for a lease holder; the lease metrics start at zero.
            metrics::gauge!("popferry_replica_info", "holder" => sync::lease_holder()).set(1.0);
            metrics::gauge!(sync::lease_metric::LEASES_HELD).set(0.0);
            metrics::counter!(sync::lease_metric::PASSES).absolute(0);
            metrics::counter!(sync::lease_metric::HELD_ELSEWHERE).absolute(0);
            metrics::counter!(sync::lease_metric::TAKEOVERS).absolute(0);
        })
}

/// What the HTTP endpoint and the observer share.
pub struct Health {
    ledger: Ledger,
    metrics: PrometheusHandle,
    /// What only this process knows about each account.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// The configured accounts, in the configuration's order (the page's).
    order: Vec<String>,
    accounts: BTreeMap<String, SeenAccount>,
}

#[derive(Default)]
struct SeenAccount {
    /// Failed passes in a row.
    failures: u32,
    /// The kind of the last pass's failure, if it failed.
    last_failure: Option<FailureKind>,
    /// The last "check now": when it was asked, and whether a pass that
    /// started after it has ended.
    check_requested: Option<(Instant, page::CheckRequest)>,
}

impl Health {
    pub fn new(ledger: Ledger, metrics: PrometheusHandle) -> Arc<Health> {
        Arc::new(Health {
            ledger,
            metrics,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// The configured accounts (at start and after each reload): the page
    /// shows these, in this order, and forgets the others.
    pub fn retain(&self, names: &[String]) {
        if let Ok(mut s) = self.seen.lock() {
            s.order = names.to_vec();
            s.accounts.retain(|k, _| names.contains(k));
        }
    }

    /// Notes that every account was asked to run now (SIGUSR1), for the page.
    pub fn check_requested(&self) {
        let at = (
            Instant::now(),
            page::CheckRequest {
                at: now(),
                answered: false,
            },
        );
        if let Ok(mut s) = self.seen.lock() {
            let names = s.order.clone();
            for name in names {
                s.accounts.entry(name).or_default().check_requested = Some(at);
            }
        }
    }

    /// Whether some account has failed [`STUCK_AFTER_FAILURES`] passes in
    /// a row (a poisoned lock counts as stuck: something panicked).
    fn any_stuck(&self) -> bool {
        self.seen.lock().map_or(true, |s| {
            s.accounts
                .values()
                .any(|a| a.failures >= STUCK_AFTER_FAILURES)
        })
    }

    /// Every configured account as the status page shows it: the ledger's
    /// status and recovery mark, and what this process saw.
    pub async fn page_views(&self) -> anyhow::Result<Vec<page::AccountView>> {
        let names = self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("The daemon's account state is poisoned"))?
            .order
            .clone();
        let statuses = self.ledger.status(&names).await?;
        let mut views = Vec::with_capacity(statuses.len());
        for status in statuses {
            let recovering = self.ledger.is_recovering(&status.account).await?;
            let (last_failure, check_requested) = self
                .seen
                .lock()
                .ok()
                .and_then(|s| {
                    s.accounts
                        .get(&status.account)
                        .map(|a| (a.last_failure, a.check_requested.map(|(_, c)| c)))
                })
                .unwrap_or_default();
            views.push(page::AccountView {
                state: AccountState::of(&status, recovering, last_failure),
                status,
                check_requested,
            });
        }
        Ok(views)
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
    // When appending resumes after an upload budget was spent (unix
    // seconds); 0 while no budget holds it back.
    let resumes = r.paused.as_ref().map_or(0.0, |p| p.resumes_at as f64);
    metrics::gauge!("popferry_budget_resumes_at_timestamp_seconds", "account" => a.clone())
        .set(resumes);
    let result = match (&r.error, r.interrupted, &r.paused) {
        (Some(_), _, _) => "failure",
        (None, true, _) => "interrupted",
        (None, false, Some(_)) => "budget_spent",
        (None, false, None) => "success",
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
        report: Report,
        failures: u32,
        next_in: Duration,
    ) -> BoxFuture<()> {
        if let Ok(mut s) = self.seen.lock() {
            let seen = s.accounts.entry(account.name.clone()).or_default();
            seen.failures = failures;
            seen.last_failure = report.error.as_ref().and(report.error_kind);
            // A check asked for before this pass started is answered by it.
            let started = Instant::now().checked_sub(report.duration);
            if let (Some((asked, check)), Some(started)) = (&mut seen.check_requested, started)
                && *asked <= started
            {
                check.answered = true;
            }
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

/// Serves `/healthz`, `/readyz`, `/metrics` and the status page at `/`
/// (as `access` allows) until `stop` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    access: Access,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (daemon.listen): {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let page_access = Arc::new(access);
    let described = page_access.describe();
    let app = Router::new()
        .route(
            "/",
            get(move |state, uri, headers| status_page(state, page_access.clone(), uri, headers)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health);
    tracing::info!(addr = %bound, page = described, "Serving /healthz, /readyz, /metrics and the status page at /");
    Ok(tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!("The HTTP endpoint stopped: {e}");
        }
    }))
}

/// How long the page may wait for the ledger.
const PAGE_LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

/// `/`: the status page, or 401/404 as [`Access`] decides. Every answer is
/// kept out of caches and sends no referrer (a `?token=` is in the URL).
async fn status_page(
    State(h): State<Arc<Health>>,
    access: Arc<Access>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let private = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    match access.decide(&uri, &headers) {
        access::Decision::Allow => {}
        access::Decision::Off => {
            return (
                StatusCode::NOT_FOUND,
                private,
                "The status page is off: daemon.listen is not a loopback address and no [daemon] status_token is set.\n",
            )
                .into_response();
        }
        access::Decision::Deny => {
            return (
                StatusCode::UNAUTHORIZED,
                private,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"popferry\"")],
                "The status page needs the [daemon] status_token: send it as Authorization: Bearer <token>, or add ?token=<token> to the address.\n",
            )
                .into_response();
        }
    }
    let views = match tokio::time::timeout(PAGE_LEDGER_TIMEOUT, h.page_views()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!("The status page cannot read the ledger: {e:#}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                private,
                "The ledger does not answer.\n",
            )
                .into_response();
        }
        Err(_) => {
            tracing::warn!("The status page gave up waiting for the ledger");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                private,
                "The ledger does not answer.\n",
            )
                .into_response();
        }
    };
    (
        StatusCode::OK,
        private,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        page::render(&views, now()),
    )
        .into_response()
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
