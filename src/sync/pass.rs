//! One pass over one account: the order of the stages. Each POP3 session
//! lists the mailbox, plans ([`super::plan`]), skips what is too large,
//! fetches and appends at once (two stages joined by a bounded queue),
//! then deletes and quits. With a delete policy a pass is several sessions,
//! one per batch, so that DELEs are committed as it goes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::append::Appender;
use super::budget::Budget;
use super::failure::{Failure, ledger_failure, pop_failure, session_lost};
use super::fetch::{self, Bounds, Produced};
use super::headers::HeaderFacts;
use super::plan::{self, Listed};
use super::settle::{self, TargetState};
use super::{FailureKind, Options, Progress, Report, delete, dry, lanes, lease, listing, outcome};
use crate::config::Account;
use crate::imap;
use crate::ledger::{Intent, Ledger};
use crate::pop3;
use crate::spool::SpooledMessage;

/// A LOGIN-DELAY up to this long is waited out between two batches of a
/// pass; a longer one ends the pass (the next one goes on).
const MAX_LOGIN_DELAY_WAIT: Duration = Duration::from_secs(60);

/// What every stage of a (non-dry) pass reads.
pub(super) struct Ctx<'a> {
    pub account: &'a Account,
    pub ledger: &'a Ledger,
    pub opts: &'a Options,
    pub progress: &'a dyn Progress,
    /// Cancelled when the pass must stop at its next safe point: a
    /// shutdown, or the account's lease lost to another process.
    pub stop: CancellationToken,
}

/// The intent row for a message about to be appended.
pub(super) fn intent<'x>(
    m: &'x Listed,
    msg: &SpooledMessage,
    facts: &'x HeaderFacts,
    sha: &'x str,
    mailbox: &'x str,
) -> Intent<'x> {
    Intent {
        uidl: m.key(),
        uidl_derived: m.derived,
        listed_size: m.size,
        size: msg.len(),
        sha256: sha,
        header_sha256: Some(&facts.header_sha256),
        message_id: facts.message_id.as_deref(),
        message_date: facts.arrival().map(|d| d.to_timestamp()),
        mailbox,
    }
}

/// What the ledger knows of the messages with these UIDLs (and how many
/// rows the account has, and which appended ones are no longer listed).
pub(super) async fn known<'u>(
    ledger: &Ledger,
    account: &str,
    uidls: impl Iterator<Item = &'u str>,
) -> Result<crate::ledger::KnownRows, Failure> {
    let listed: HashSet<&str> = uidls.collect();
    ledger.known(account, &listed).await.map_err(ledger_failure)
}

/// Runs one pass for one account and reports what it did. Never panics on
/// server input and never returns early without a report: errors are in
/// [`Report::error`]. `ledger` may be `None` only for a dry run (which then
/// reads nothing from it; it never writes).
pub async fn run_once(
    account: &Account,
    ledger: Option<&Ledger>,
    opts: &Options,
    progress: &dyn Progress,
) -> Report {
    let started = Instant::now();
    let mut report = Report {
        account: account.name.clone(),
        ..Report::default()
    };
    let span = info_span!("sync", account = %account.name);
    async {
        match ledger {
            _ if opts.dry_run => {
                if let Err(f) = dry::run(account, ledger, &mut report).await {
                    fail(&mut report, account, f);
                }
            }
            Some(ledger) => {
                let stop = opts
                    .cancel
                    .as_ref()
                    .map_or_else(CancellationToken::new, CancellationToken::child_token);
                let cx = Ctx {
                    account,
                    ledger,
                    opts,
                    progress,
                    stop,
                };
                sync(&cx, &mut report).await;
            }
            None => fail(
                &mut report,
                account,
                Failure {
                    kind: FailureKind::Permanent,
                    message: "no ledger to record the copies in".into(),
                    retry_after: None,
                },
            ),
        }
    }
    .instrument(span)
    .await;
    report.duration = started.elapsed();
    log_report(&report, opts.dry_run);
    report
}

/// Puts a pass's failure in its report.
fn fail(report: &mut Report, account: &Account, f: Failure) {
    report.error = Some(format!("account {:?}: {}", account.name, f.message));
    report.error_kind = Some(f.kind);
    report.retry_after = f.retry_after.or(report.retry_after);
}

/// A pass that copies, with its start and end recorded in the ledger.
async fn sync(cx: &Ctx<'_>, report: &mut Report) {
    let acc = cx.account;
    match lease::take(cx.ledger, &acc.name).await {
        Ok(Ok(())) => {}
        Ok(Err(held)) => {
            let wait = held.until.saturating_sub(crate::ledger::now()).max(1);
            let retry_after = Some(Duration::from_secs(u64::try_from(wait).unwrap_or(1)));
            if !cx.opts.held_is_failure {
                // A replica's turn: not a failure, and no pass.
                debug!(holder = %held.holder, "Another process holds the account; not passing it now");
                report.held_by = Some(lease::describe(&held));
                report.retry_after = retry_after;
                return;
            }
            let message = format!(
                "skipped: another popferry process works on this account: {}",
                lease::describe(&held)
            );
            let f = Failure {
                retry_after,
                ..Failure::transient(message)
            };
            return fail(report, acc, f);
        }
        Err(e) => return fail(report, acc, Failure::transient(format!("{e:#}"))),
    }
    locked(cx, report).await;
    lease::release(cx.ledger, &acc.name).await;
}

/// A pass while this process holds the account's lease.
async fn locked(cx: &Ctx<'_>, report: &mut Report) {
    let acc = cx.account;
    if let Err(e) = cx.ledger.start_run(&acc.name).await {
        return fail(report, acc, Failure::transient(format!("{e:#}")));
    }
    let mut pass = Pass {
        cx,
        target: None,
        extra: Vec::new(),
        extra_tried: false,
        recovering: false,
        attempted: HashSet::new(),
        login_delay: None,
        went_through_all: true,
        listed: Vec::new(),
        resessioned: false,
        budget: Budget::unlimited(),
        report,
    };
    let result = {
        let keeping = lease::keep(cx.ledger, &acc.name, &cx.stop);
        let running = pass.run();
        tokio::pin!(keeping, running);
        tokio::select! {
            r = &mut running => r,
            lost = &mut keeping => {
                let r = running.await;
                r.and(Err(Failure::transient(format!(
                        "lost the account's lease to {}; stopped at a safe point",
                        lease::describe(&lost)
                    ))))
            }
        }
    };
    if let Some((session, _)) = pass.target.take() {
        let _ = session.logout().await;
    }
    lanes::log_out(std::mem::take(&mut pass.extra)).await;
    let report = pass.report;
    if let Err(f) = result {
        fail(report, acc, f);
    }
    record_pause(cx, report).await;
    // An interrupted pass leaves last success and the failure count alone.
    if !(report.interrupted && report.error.is_none()) {
        let err = report
            .error
            .clone()
            .or_else(|| (!report.problems.is_empty()).then(|| report.problems.join("; ")));
        if let Err(e) = cx.ledger.finish_run(&acc.name, err.as_deref()).await {
            warn!("Cannot record the end of the run: {e:#}");
        }
    }
}

/// A budget that stopped appending sets the next pass's earliest time (the
/// daemon waits for it) and is recorded for `status`; a pass it did not
/// stop clears the record.
async fn record_pause(cx: &Ctx<'_>, report: &mut Report) {
    let paused = report
        .paused
        .as_ref()
        .map(|p| (p.resumes_at, p.reason.as_str()));
    if let Some((until, _)) = paused {
        let wait = until.saturating_sub(crate::ledger::now()).max(1);
        let wait = Duration::from_secs(u64::try_from(wait).unwrap_or(1));
        report.retry_after = Some(report.retry_after.map_or(wait, |d| d.max(wait)));
    }
    if let Err(e) = cx.ledger.set_paused(&cx.account.name, paused).await {
        warn!("Cannot record the upload budget's pause: {e:#}");
    }
}

fn log_report(r: &Report, dry_run: bool) {
    if dry_run {
        info!(account = %r.account, would_copy = r.would_copy, would_copy_bytes = r.would_copy_bytes,
            would_delete = r.would_delete, "Dry run finished");
    } else if let Some(h) = &r.held_by {
        debug!(account = %r.account, "Not passed: the account is held by {h}");
    } else if r.interrupted && r.error.is_none() {
        info!(account = %r.account, copied = r.copied, skipped = r.skipped, rejected = r.rejected,
            failed = r.failed, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync interrupted by shutdown");
    } else if let Some(e) = &r.error {
        tracing::error!(account = %r.account, copied = r.copied, skipped = r.skipped,
            rejected = r.rejected, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync failed: {e}");
    } else {
        info!(account = %r.account, copied = r.copied, skipped = r.skipped, rejected = r.rejected,
            failed = r.failed, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync finished");
    }
}

struct Pass<'p, 'a> {
    cx: &'p Ctx<'a>,
    /// The IMAP session, connected on first use.
    target: Option<(imap::Session, TargetState)>,
    /// More sessions to the target, for a server without LITERAL+
    /// ([`super::lanes`]); opened once per pass.
    extra: Vec<imap::Session>,
    extra_tried: bool,
    /// A lost ledger is being recovered: look in the target before every
    /// APPEND.
    recovering: bool,
    /// UIDLs handed to an earlier session of this pass: a later session
    /// (delete batches) does not try a refused message again at once.
    attempted: HashSet<String>,
    /// The POP3 server's LOGIN-DELAY, if it announced one.
    login_delay: Option<Duration>,
    /// False once the pass stopped before going through the whole mailbox.
    went_through_all: bool,
    /// While recovering: the latest listing (moved here, not copied: it
    /// may hold 100,000 entries).
    listed: Vec<Listed>,
    /// A session found a message listed under the UIDL of another and
    /// asked for one more session to copy it (once per pass).
    resessioned: bool,
    /// What the account may still append (`max_upload_per_day`,
    /// `max_messages_per_minute`), for every session of the pass.
    budget: Budget,
    report: &'p mut Report,
}

impl Pass<'_, '_> {
    async fn run(&mut self) -> Result<(), Failure> {
        let name = &self.cx.account.name;
        self.recovering = self
            .cx
            .ledger
            .is_recovering(name)
            .await
            .map_err(ledger_failure)?;
        self.budget = Budget::load(self.cx.ledger, name, self.cx.account.target.budget)
            .await
            .map_err(ledger_failure)?;
        // One POP3 session, or several when a delete policy asks for DELEs
        // to be committed in batches.
        while self.session().await? {}
        if !self.recovering {
            return Ok(());
        }
        let uidls = self.listed.iter().map(|m| m.uidl.as_str());
        let rows = known(self.cx.ledger, name, uidls).await?.rows;
        let (all, interrupted) = (self.went_through_all, self.report.interrupted);
        if plan::recovery_complete(&self.listed, &rows, all, interrupted) {
            self.cx
                .ledger
                .set_recovering(name, false)
                .await
                .map_err(ledger_failure)?;
            info!("Recovery finished: the ledger again knows every message of this account");
        } else {
            debug!("Recovery goes on: some messages were not looked up in the target yet");
        }
        Ok(())
    }

    /// One POP3 session. Returns true when another session is needed.
    async fn session(&mut self) -> Result<bool, Failure> {
        let mut listing = Vec::new();
        let more = self.session_listing(&mut listing).await;
        if self.recovering {
            self.listed = listing;
        }
        more
    }

    /// [`Self::session`], leaving its listing in `listing`.
    async fn session_listing(&mut self, listing: &mut Vec<Listed>) -> Result<bool, Failure> {
        let cx = self.cx;
        let acc = cx.account;
        let mut pop = pop3::connect(&acc.source)
            .await
            .map_err(|e| pop_failure(acc, "cannot log in", e))?;
        if let Some(delay) = pop.login_delay() {
            self.login_delay = Some(delay);
            self.report.retry_after = Some(self.report.retry_after.map_or(delay, |d| d.max(delay)));
        }
        *listing = listing::list(acc, &mut pop, Some(cx.ledger), true, self.report).await?;
        let listing = &mut *listing;
        let known = known(
            cx.ledger,
            &acc.name,
            listing.iter().map(|m| m.uidl.as_str()),
        )
        .await?;
        let rekeyed = plan::resolve_keys(listing, &known.rows);
        // Said once, when the ledger first meets the message.
        for r in rekeyed.iter().filter(|r| !known.rows.contains_key(&r.key)) {
            if r.twice_listed {
                warn!(uidl = %r.uidl, n = r.number, key = %r.key, "The POP3 server lists this UIDL for more than one message; each is copied, this one as {:?}", r.key);
            } else {
                warn!(uidl = %r.uidl, n = r.number, key = %r.key, "The POP3 server gives this UIDL to another message than the one copied under it (its size differs): a new message, copied as {:?}", r.key);
            }
        }
        let rows = known.rows;
        if !self.recovering && plan::starts_recovery(known.total, listing) {
            // Durably, before anything is appended: a recovery cut short
            // must go on recovering.
            cx.ledger
                .set_recovering(&acc.name, true)
                .await
                .map_err(ledger_failure)?;
            self.recovering = true;
        }
        let gone = plan::gone(&known.unlisted_appended, &acc.policy.delete);
        if !gone.is_empty() {
            cx.ledger
                .record_deleted(&acc.name, &gone)
                .await
                .map_err(ledger_failure)?;
        }

        let plan = plan::session(&plan::Inputs {
            listing,
            rows: &rows,
            policy: &acc.policy,
            attempted: &self.attempted,
            delete_batch: cx.opts.delete_batch,
        });
        debug!(
            listed = listing.len(),
            new = plan.todo,
            "Listed the POP3 mailbox"
        );
        cx.progress.listed(&acc.name, plan.todo, plan.todo_bytes);
        for f in &plan.skip {
            outcome::skip(cx, self.report, f.listed, f.listed.size, f.was_skipped()).await?;
            cx.progress.advanced(&acc.name, f.listed.size);
        }
        // Only a later session of this pass needs to know (delete batches).
        if plan.more {
            self.attempted
                .extend(plan.fetch.iter().map(|f| f.listed.key().to_owned()));
        }
        // Every pass logs in to the target, with or without anything to
        // copy: a broken target credential is reported at once, not when the
        // next message arrives.
        if self.target.is_none() {
            self.target = Some(settle::connect(acc, self.recovering).await?);
        }
        if plan.fetch.is_empty() {
            let superseded =
                delete::delete_and_quit(cx, self.report, pop, listing, &HashSet::new()).await?;
            return Ok(plan.more || self.once_more(superseded));
        }

        // The POP3 side reads (RETR, pipelined where offered) while the IMAP
        // side appends (LITERAL+ where offered); a bounded queue joins them.
        let Some((session, target)) = self.target.as_mut() else {
            return Err(session_lost());
        };
        if !self.extra_tried {
            self.extra_tried = true;
            self.extra = lanes::more_sessions(acc, session, plan.fetch.len()).await;
        }
        let numbers: Vec<u32> = plan.fetch.iter().map(|f| f.listed.number).collect();
        let (tx, rx) = mpsc::channel(fetch::QUEUE);
        let bounds = Bounds::new();
        let threshold = cx.opts.spool_threshold;
        let mut appender = Appender::new(
            cx,
            self.report,
            &plan.fetch,
            self.recovering,
            target,
            &mut self.budget,
        );
        let (produced, consumed) = tokio::join!(
            fetch::produce(&mut pop, acc, &numbers, threshold, tx, &bounds),
            appender.run(session, &mut self.extra, rx)
        );
        consumed?;
        if produced? == Produced::SessionLost {
            // The POP3 session is out of step (a message that never ended):
            // no DELE, no QUIT; the next session goes on (unless stopping),
            // without this batch.
            if !plan.more {
                self.attempted
                    .extend(plan.fetch.iter().map(|f| f.listed.key().to_owned()));
            }
            return Ok(!self.report.interrupted);
        }
        let interrupted = self.report.interrupted;
        if self.report.paused.is_some() {
            // The rest of the mailbox waits for the budget.
            self.went_through_all = false;
        }
        let paused = self.report.paused.is_some();
        let seen: HashSet<&str> = plan.fetch.iter().map(|f| f.listed.key()).collect();
        let superseded = delete::delete_and_quit(cx, self.report, pop, listing, &seen).await?;
        if !(plan.more || self.once_more(superseded)) || interrupted || paused {
            return Ok(false);
        }
        self.wait_login_delay().await
    }

    /// After a session found a message under the UIDL (and size) of one
    /// copied earlier: one more session copies it in this pass, rather than
    /// on the next (only once per pass, whatever the server does).
    fn once_more(&mut self, superseded: bool) -> bool {
        if !superseded || self.resessioned {
            return false;
        }
        self.resessioned = true;
        true
    }

    /// Another batch means another login: LOGIN-DELAY is waited out, or,
    /// when longer than [`MAX_LOGIN_DELAY_WAIT`], ends the pass. Returns
    /// whether the pass goes on.
    async fn wait_login_delay(&mut self) -> Result<bool, Failure> {
        let Some(delay) = self.login_delay.filter(|d| !d.is_zero()) else {
            return Ok(true);
        };
        if delay > MAX_LOGIN_DELAY_WAIT {
            info!(
                login_delay = delay.as_secs(),
                "The POP3 server's LOGIN-DELAY stops this pass after a batch; the next pass goes on"
            );
            self.went_through_all = false;
            return Ok(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = self.cx.stop.cancelled() => {
                self.report.interrupted = true;
                Ok(false)
            }
        }
    }
}
