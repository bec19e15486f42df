//! The append stage: the IMAP side of a session. It takes what the fetch
//! stage queues, in order, and appends it through a pipeline (a window of
//! APPENDs in flight where the server offers LITERAL+), recording each
//! batch's intents before its APPENDs and the OKs as they come back.
//!
//! The order of durable writes is the heart of guarantee 2: an intent is on
//! disk before its APPEND is sent (batch k+1's intents are committed while
//! batch k is written, so the fsync overlaps the network), and an
//! `appended` row only after the server's OK. A message that may already be
//! in the target (see [`super::plan::must_look_up`]) leaves the pipeline
//! for [`super::settle`], which needs the session to itself.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{debug, info, warn};

use super::budget::{Admit, Budget};
use super::failure::{Failure, imap_failure, ledger_failure};
use super::fetch::{Fetched, Item};
use super::headers::HeaderFacts;
use super::lanes::LanesEnd;
use super::outcome::{self, Refused};
use super::pass::{Ctx, intent};
use super::plan::{Fetch, must_look_up};
use super::settle;
use super::{Paused, Report};
use crate::imap::{self, ImapError};
use crate::ledger::{AppendOk, Attempt, Intent};
use crate::spool::SpooledMessage;

/// APPENDs in flight on the IMAP side (with LITERAL+; one without).
const APPEND_WINDOW: usize = 256;
/// Literal bytes in flight on the IMAP side.
const APPEND_BYTES_IN_FLIGHT: u64 = 16 << 20;

/// What the pipeline carries for each APPEND: the index into the session's
/// fetch list and the message's length.
pub(super) type Tag = (usize, u64);

/// A message ready for the pipeline, its intent about to be (or already)
/// on disk.
pub(super) struct Ready<'l> {
    pub index: usize,
    pub fetch: Fetch<'l>,
    pub msg: SpooledMessage,
    pub facts: HeaderFacts,
    pub sha: String,
    /// Its share of the queue's bounds, held until it is written.
    pub _permit: Option<OwnedSemaphorePermit>,
}

/// Why one pipeline ended.
pub(super) enum PipeEnd {
    Done,
    /// This message must be looked up in the target before it is appended.
    Lookup(Box<Item>),
}

/// The IMAP side of one session.
pub(super) struct Appender<'p, 'a> {
    pub cx: &'p Ctx<'a>,
    pub report: &'p mut Report,
    /// What the session fetches, in order (queue items index into it).
    pub fetch: &'p [Fetch<'p>],
    pub recovering: bool,
    pub target: &'p mut settle::TargetState,
    /// OKs not yet recorded (flushed in one transaction).
    done: Vec<AppendOk>,
    /// A refusal that will hit every message (over quota, mailbox gone):
    /// nothing more is sent, and the session ends with it.
    stop: Option<Failure>,
    /// The target's APPENDLIMIT: larger messages are skipped, never sent.
    append_limit: Option<u64>,
    /// What the account may still append (asked before each intent).
    budget: &'p mut Budget,
}

impl<'p, 'a> Appender<'p, 'a> {
    pub(super) fn new(
        cx: &'p Ctx<'a>,
        report: &'p mut Report,
        fetch: &'p [Fetch<'p>],
        recovering: bool,
        target: &'p mut settle::TargetState,
        budget: &'p mut Budget,
    ) -> Self {
        Appender {
            budget,
            cx,
            report,
            fetch,
            recovering,
            target,
            done: Vec::new(),
            stop: None,
            append_limit: None,
        }
    }

    /// Appends what the fetch stage queues, until it is done: through one
    /// pipeline on `session`, or spread over it and the `extra` sessions
    /// ([`super::lanes`]; a session that fails there is dropped, and if it
    /// was `session`, an extra one takes its place).
    pub(super) async fn run(
        &mut self,
        session: &mut imap::Session,
        extra: &mut Vec<imap::Session>,
        mut rx: mpsc::Receiver<Item>,
    ) -> Result<(), Failure> {
        let mut queue: VecDeque<Item> = VecDeque::new();
        self.append_limit = session.capabilities().append_limit();
        loop {
            let end = if extra.is_empty() {
                self.pipe_run(session, &mut rx, &mut queue).await?
            } else {
                let mut all: Vec<&mut imap::Session> = std::iter::once(&mut *session)
                    .chain(extra.iter_mut())
                    .collect();
                let LanesEnd { end, dead } = self.lanes_run(&mut all, &mut rx, &mut queue).await;
                drop(all);
                drop_dead(session, extra, dead);
                end?
            };
            match end {
                PipeEnd::Done => return Ok(()),
                PipeEnd::Lookup(mut item) => {
                    let Some(f) = self.fetch.get(item.index).copied() else {
                        continue;
                    };
                    let Fetched::Message(msg) = &item.fetched else {
                        continue;
                    };
                    if settle::settle(self.cx, self.target, session, &f, msg, &item.sha).await? {
                        self.report.copied += 1;
                        self.cx
                            .progress
                            .advanced(&self.cx.account.name, f.listed.size);
                    } else {
                        item.looked_up = true;
                        queue.push_front(*item);
                    }
                }
            }
        }
    }

    /// Appends through one pipeline until the queue is done, or until a
    /// message must first be looked up in the target.
    async fn pipe_run(
        &mut self,
        session: &mut imap::Session,
        rx: &mut mpsc::Receiver<Item>,
        queue: &mut VecDeque<Item>,
    ) -> Result<PipeEnd, Failure> {
        let cx = self.cx;
        let acc = cx.account;
        let mailbox = acc.target.mailbox.as_str();
        let mut pipe = session
            .append_pipeline::<Tag>(
                mailbox,
                &acc.target.flags,
                APPEND_WINDOW,
                APPEND_BYTES_IN_FLIGHT,
            )
            .map_err(|e| imap_failure(acc, "APPEND failed", e))?;
        let mut lookup: Option<Box<Item>> = None;
        // Messages whose intents are on disk, to be written next.
        let mut ready: Vec<Ready<'p>> = Vec::new();
        let mut closed = false;
        loop {
            // A safe point: every message handed to the pipeline so far is
            // either answered and recorded below, or still owed an answer.
            let cancelled = cx.stop.is_cancelled();
            if cancelled && !self.report.interrupted {
                info!("Stopping early: shutting down");
                self.report.interrupted = true;
            }
            let gathering = !cancelled
                && self.stop.is_none()
                && lookup.is_none()
                && self.report.paused.is_none();
            if gathering && !closed && queue.is_empty() {
                closed = receive(rx, queue, ready.is_empty()).await;
            }
            let next = if gathering {
                self.next_batch(queue, &mut lookup, ready.is_empty())
                    .await?
            } else {
                Vec::new()
            };
            if next.is_empty() && ready.is_empty() {
                if !gathering || lookup.is_some() || (closed && queue.is_empty()) {
                    break;
                }
                continue;
            }
            // Commit `next`'s intents while `ready` is written.
            let intents: Vec<Intent<'_>> = next
                .iter()
                .map(|r| intent(r.fetch.listed, &r.msg, &r.facts, &r.sha, mailbox))
                .collect();
            let writing = std::mem::take(&mut ready);
            let (recorded, pushed) = tokio::join!(
                cx.ledger.record_intents(&acc.name, &intents),
                self.push_batch(&mut pipe, writing)
            );
            drop(intents);
            if let Some(e) = pushed? {
                return self.abandon(pipe, e).await;
            }
            recorded.map_err(ledger_failure)?;
            ready = next;
            if self.done.len() >= APPEND_WINDOW {
                self.flush().await?;
            }
        }
        // Every answer still owed, recorded before the pipeline closes.
        loop {
            match pipe.next_result().await {
                Ok(Some(r)) => self.take_result(r).await?,
                Ok(None) => break,
                Err(e) => return self.abandon(pipe, e).await,
            }
        }
        drop(pipe);
        self.flush().await?;
        match (self.stop.take(), lookup) {
            (Some(f), _) => Err(f),
            (None, Some(item)) => Ok(PipeEnd::Lookup(item)),
            (None, None) => Ok(PipeEnd::Done),
        }
    }

    /// The next batch: queued messages that can go straight to the
    /// pipeline. A message to be looked up first ends the batch; it becomes
    /// `lookup` once nothing else is on its way (`idle`).
    pub(super) async fn next_batch(
        &mut self,
        queue: &mut VecDeque<Item>,
        lookup: &mut Option<Box<Item>>,
        idle: bool,
    ) -> Result<Vec<Ready<'p>>, Failure> {
        let cx = self.cx;
        let acc = cx.account;
        let mut next = Vec::new();
        while next.len() < APPEND_WINDOW {
            let Some(item) = queue.pop_front() else { break };
            let Some(f) = self.fetch.get(item.index).copied() else {
                continue;
            };
            let needs_lookup = matches!(item.fetched, Fetched::Message(_))
                && !item.looked_up
                && must_look_up(&f, self.recovering, self.target.messages);
            if needs_lookup {
                if next.is_empty() && idle {
                    *lookup = Some(Box::new(item));
                } else {
                    queue.push_front(item);
                }
                break;
            }
            let Item {
                index,
                fetched,
                sha,
                permit,
                looked_up: item_looked_up,
            } = item;
            match fetched {
                Fetched::TooBig => {
                    // The LIST size lied: larger than announced.
                    let seen = acc.policy.max_message_size.saturating_add(1);
                    outcome::skip(cx, self.report, f.listed, seen, f.was_skipped()).await?;
                    cx.progress.advanced(&acc.name, f.listed.size);
                }
                Fetched::Failed(text) => {
                    outcome::retr_refused(cx, self.report, f.listed, &text).await?;
                    cx.progress.advanced(&acc.name, f.listed.size);
                }
                Fetched::Message(msg) if self.append_limit.is_some_and(|l| msg.len() > l) => {
                    let limit = self.append_limit.unwrap_or(u64::MAX);
                    outcome::skip_over_append_limit(
                        cx,
                        self.report,
                        f.listed,
                        msg.len(),
                        limit,
                        f.was_skipped(),
                    )
                    .await?;
                    cx.progress.advanced(&acc.name, f.listed.size);
                }
                Fetched::Message(msg) => {
                    match self
                        .budget
                        .admit(msg.len(), crate::ledger::now(), Instant::now())
                    {
                        Admit::Go => {}
                        Admit::Wait(wait) if next.is_empty() && idle => {
                            // Nothing else to write meanwhile: wait here.
                            info!(
                                seconds = wait.as_secs_f64(),
                                "max_messages_per_minute reached; appending waits"
                            );
                            let item = Item {
                                index,
                                fetched: Fetched::Message(msg),
                                sha,
                                permit,
                                looked_up: item_looked_up,
                            };
                            queue.push_front(item);
                            tokio::select! {
                                () = tokio::time::sleep(wait) => continue,
                                () = cx.stop.cancelled() => break,
                            }
                        }
                        Admit::Wait(_) => {
                            queue.push_front(Item {
                                index,
                                fetched: Fetched::Message(msg),
                                sha,
                                permit,
                                looked_up: item_looked_up,
                            });
                            break;
                        }
                        Admit::Spent { resumes_at, reason } => {
                            info!(resumes_at, "{reason}; appending stops until then");
                            self.report.paused = Some(Paused { resumes_at, reason });
                            break;
                        }
                    }
                    let facts = HeaderFacts::parse(msg.header());
                    next.push(Ready {
                        index,
                        fetch: f,
                        msg: *msg,
                        facts,
                        sha,
                        _permit: permit,
                    });
                }
            }
        }
        Ok(next)
    }

    /// Writes the APPENDs of `batch` (whose intents are on disk), taking
    /// answers whenever the window is full. `Ok(Some(e))` when the
    /// connection failed and the pipeline must be abandoned.
    async fn push_batch(
        &mut self,
        pipe: &mut imap::AppendPipeline<'_, Tag>,
        batch: Vec<Ready<'_>>,
    ) -> Result<Option<ImapError>, Failure> {
        let acc = self.cx.account;
        for r in batch {
            while pipe.is_full() && self.stop.is_none() {
                match pipe.next_result().await {
                    Ok(Some(answer)) => self.take_result(answer).await?,
                    Ok(None) => break,
                    Err(e) => return Ok(Some(e)),
                }
            }
            if self.stop.is_some() {
                // The intent stays unresolved-but-unsent: settled (not
                // found, appended) by the next run.
                continue;
            }
            let date = r.facts.internal_date(acc.target.internal_date);
            if let Err(e) = pipe
                .push((r.index, r.msg.len()), &r.msg, date.as_deref())
                .await
            {
                return Ok(Some(e));
            }
            debug!(uidl = %r.fetch.listed.key(), bytes = r.msg.len(), "APPEND sent");
        }
        Ok(None)
    }

    /// OKs not recorded yet.
    pub(super) fn done_len(&self) -> usize {
        self.done.len()
    }

    /// Whether a refusal that hits every message stopped the session.
    pub(super) fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    pub(super) fn take_stop(&mut self) -> Option<Failure> {
        self.stop.take()
    }

    /// Records the APPENDs answered OK so far, in one transaction.
    pub(super) async fn flush(&mut self) -> Result<(), Failure> {
        if let Some(c) = self.target.claimed.as_mut() {
            c.extend(self.done.iter().filter_map(|ok| ok.uid));
        }
        self.cx
            .ledger
            .record_appended_many(&self.cx.account.name, &self.done)
            .await
            .map_err(ledger_failure)?;
        self.done.clear();
        Ok(())
    }

    /// One APPEND's answer. An OK waits in `done` for [`Self::flush`]; a
    /// refusal is recorded at once; a refusal that will hit every message
    /// sets `stop`.
    pub(super) async fn take_result(
        &mut self,
        ((index, len), result): imap::AppendResult<Tag>,
    ) -> Result<(), Failure> {
        let cx = self.cx;
        let acc = cx.account;
        let Some(f) = self.fetch.get(index) else {
            return Ok(());
        };
        let uidl = f.listed.key();
        cx.progress.advanced(&acc.name, f.listed.size);
        let e = match result {
            Ok(a) => {
                self.done.push(AppendOk {
                    uidl: uidl.to_owned(),
                    uidvalidity: a.uidvalidity,
                    uid: a.uid,
                });
                self.report.copied += 1;
                self.report.bytes += len;
                return Ok(());
            }
            Err(e) => e,
        };
        let text = e.to_string();
        let max = acc.policy.max_attempts;
        if e.is_overquota() || e.is_trycreate() || e.is_transient() {
            // Not this message's fault: it is retried later, unpenalised.
            cx.ledger
                .record_failure(&acc.name, uidl, &text, Attempt::Free, max)
                .await
                .map_err(ledger_failure)?;
            if self.stop.is_none() {
                let what = if e.is_overquota() {
                    "the target mailbox is over quota; will retry later"
                } else if e.is_rate_limited() {
                    "the target limits this account's uploads for now (rate, bandwidth or a daily cap); the account backs off and retries later (set max_upload_per_day / max_messages_per_minute to stay under the provider's limits)"
                } else if e.is_trycreate() {
                    "the target mailbox has vanished; it is created again on the next run"
                } else {
                    "APPEND failed; will retry later"
                };
                self.stop = Some(imap_failure(acc, what, e));
            }
            return Ok(());
        }
        let state = cx
            .ledger
            .record_failure(&acc.name, uidl, &text, Attempt::Counts, max)
            .await
            .map_err(ledger_failure)?;
        outcome::note_refusal(cx, self.report, uidl, state, Refused::Append, &text);
        Ok(())
    }

    /// The IMAP connection failed with APPENDs in flight: record what is
    /// known; the others keep their intent (unresolved) and are settled by
    /// the next run, which looks for them in the target first.
    async fn abandon(
        &mut self,
        pipe: imap::AppendPipeline<'_, Tag>,
        e: ImapError,
    ) -> Result<PipeEnd, Failure> {
        let (known, unknown) = pipe.abandon();
        for r in known {
            self.take_result(r).await?;
        }
        self.flush().await?;
        if !unknown.is_empty() {
            warn!(
                count = unknown.len(),
                "APPENDs in flight when the connection failed; the next run settles them"
            );
        }
        Err(imap_failure(self.cx.account, "APPEND failed", e))
    }
}

/// Takes what the fetch stage has queued: waits for one message when
/// nothing else is ready to be written (`wait`), then takes whatever else
/// is there without waiting. Returns true once the fetch stage is done.
pub(super) async fn receive(
    rx: &mut mpsc::Receiver<Item>,
    queue: &mut VecDeque<Item>,
    wait: bool,
) -> bool {
    if wait {
        match rx.recv().await {
            Some(item) => queue.push_back(item),
            None => return true,
        }
    }
    while queue.len() < APPEND_WINDOW {
        match rx.try_recv() {
            Ok(item) => queue.push_back(item),
            Err(mpsc::error::TryRecvError::Disconnected) => return true,
            Err(mpsc::error::TryRecvError::Empty) => break,
        }
    }
    false
}

/// Drops the sessions that failed in a run over lanes (`dead` indexes
/// `session` as 0, then `extra`); a failed `session` is replaced by the
/// first extra one still alive.
fn drop_dead(session: &mut imap::Session, extra: &mut Vec<imap::Session>, mut dead: Vec<usize>) {
    dead.sort_unstable();
    dead.dedup();
    let main_dead = dead.first() == Some(&0);
    for i in dead.into_iter().rev().filter(|&i| i > 0) {
        if i <= extra.len() {
            drop(extra.remove(i - 1));
        }
    }
    if main_dead && !extra.is_empty() {
        *session = extra.remove(0);
    }
}
