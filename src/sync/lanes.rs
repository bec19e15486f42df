//! Parallel APPEND sessions ("lanes") for a target without LITERAL+.
//!
//! Why: without LITERAL+ (Gmail offers only LITERAL-, which stops at 4096
//! bytes) every literal waits for the server's "+", so one connection moves
//! at most about one message per round trip however well it pipelines (see
//! `crate::imap`'s pipeline). Only more connections go further: with
//! `[accounts.target] connections` sessions logged in, the APPENDs are
//! spread over them, each session keeping its own window.
//!
//! How exactly-once (guarantee 2) is kept: nothing changes for a message.
//! The coordinator (the [`Appender`]) records each batch's intents, and only
//! then hands the messages to a shared work queue; whichever lane takes one
//! writes its APPEND, and every answer comes back to the coordinator, which
//! records the OKs (with their APPENDUIDs) as they arrive. The ledger is
//! written by the coordinator alone. A lane whose connection fails hands
//! back the answers it knows and drops out; only the APPENDs it had in
//! flight stay unresolved (their intents are settled by the usual lookup on
//! the next pass), and the other lanes go on with the queue. When every lane
//! is gone the pass fails as one connection failing did before.
//!
//! Bounded (guarantee 6): the work queue holds a few messages per lane, each
//! lane at most [`LANE_WINDOW`] APPENDs and [`LANE_BYTES`] of literals; the
//! messages are the fetch stage's spools (the queue's bounds travel with
//! them), streamed as they are written.

use std::collections::VecDeque;

use futures::future::join_all;
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::append::{Appender, PipeEnd, Tag, receive};
use super::failure::{Failure, imap_failure, ledger_failure};
use super::fetch::Item;
use super::pass::intent;
use crate::config::Account;
use crate::imap::{self, AppendResult, ImapError};
use crate::ledger::Intent;
use crate::spool::SpooledMessage;

/// APPENDs pending on one lane.
const LANE_WINDOW: usize = 32;
/// Literal bytes in flight on one lane.
const LANE_BYTES: u64 = 4 << 20;
/// Messages waiting in the work queue, per lane.
const QUEUED_PER_LANE: usize = 2;

/// One message for a lane: its intent is on disk.
struct Work {
    tag: Tag,
    msg: SpooledMessage,
    date: Option<String>,
    /// Its share of the fetch queue's bounds, held until it is written.
    _permit: Option<OwnedSemaphorePermit>,
}

/// What a lane tells the coordinator.
enum Event {
    Answer(AppendResult<Tag>),
    /// The lane's connection failed; `unknown` APPENDs had no answer.
    Died {
        lane: usize,
        error: ImapError,
        unknown: usize,
    },
}

/// The sessions to open besides `main` for `messages` to append: none when
/// the server has LITERAL+ (one session already reaches its limit) or one
/// connection is asked for, else up to `connections - 1`, opened at once. A
/// server that refuses some (too many connections, a BYE after login) is
/// not an error: the pass goes on with the sessions it got.
pub(super) async fn more_sessions(
    acc: &Account,
    main: &imap::Session,
    messages: usize,
) -> Vec<imap::Session> {
    let want = acc.target.connections.min(messages);
    if want <= 1 || main.capabilities().literal_plus() {
        return Vec::new();
    }
    let tries = join_all((1..want).map(|_| imap::connect(&acc.target.server))).await;
    let mut got = Vec::new();
    let mut refused: Option<ImapError> = None;
    for t in tries {
        match t {
            Ok(s) => got.push(s),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => info!(
            wanted = want,
            sessions = got.len() + 1,
            "The target refused some of the connections asked for ({e}); going on with fewer"
        ),
        None => debug!(
            sessions = want,
            "The target lacks LITERAL+: appending over several sessions"
        ),
    }
    got
}

/// Logs the extra sessions out, all at once.
pub(super) async fn log_out(sessions: Vec<imap::Session>) {
    join_all(sessions.into_iter().map(imap::Session::logout)).await;
}

/// How a run over the lanes ended, and which lanes' sessions are broken.
pub(super) struct LanesEnd {
    pub end: Result<PipeEnd, Failure>,
    /// Indexes into the sessions given to [`Appender::lanes_run`].
    pub dead: Vec<usize>,
}

/// What the lanes share.
struct Shared<'s> {
    mailbox: &'s str,
    flags: &'s [String],
    work: Mutex<mpsc::Receiver<Work>>,
    /// Set when nothing more may be written (a refusal that hits every
    /// message, a shutdown): lanes collect what they owe and stop.
    halt: CancellationToken,
}

impl Appender<'_, '_> {
    /// Appends what the fetch stage queues over several sessions (see the
    /// module documentation) until the queue is done, a message must first
    /// be looked up in the target, or nothing more may be sent.
    pub(super) async fn lanes_run(
        &mut self,
        sessions: &mut [&mut imap::Session],
        rx: &mut mpsc::Receiver<Item>,
        queue: &mut VecDeque<Item>,
    ) -> LanesEnd {
        let acc = self.cx.account;
        let lanes = sessions.len();
        let (work_tx, work_rx) = mpsc::channel::<Work>(lanes.saturating_mul(QUEUED_PER_LANE));
        let shared = Shared {
            mailbox: acc.target.mailbox.as_str(),
            flags: &acc.target.flags,
            work: Mutex::new(work_rx),
            halt: CancellationToken::new(),
        };
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let running = join_all(
            sessions
                .iter_mut()
                .enumerate()
                .map(|(i, s)| lane(i, s, &shared, ev_tx.clone())),
        );
        drop(ev_tx);
        let mut state = Coordinator {
            alive: lanes,
            dead: Vec::new(),
            lost: None,
        };
        let coordinating = self.coordinate(rx, queue, work_tx, &mut ev_rx, &shared, &mut state);
        let (end, _) = tokio::join!(coordinating, running);
        let end = match (end, state.lost) {
            (Err(f), _) => Err(f),
            (Ok(_), Some(e)) if state.alive == 0 => {
                Err(imap_failure(acc, "APPEND failed on every connection", e))
            }
            (Ok(end), _) => Ok(end),
        };
        LanesEnd {
            end,
            dead: state.dead,
        }
    }

    async fn coordinate(
        &mut self,
        rx: &mut mpsc::Receiver<Item>,
        queue: &mut VecDeque<Item>,
        work_tx: mpsc::Sender<Work>,
        events: &mut mpsc::UnboundedReceiver<Event>,
        shared: &Shared<'_>,
        state: &mut Coordinator,
    ) -> Result<PipeEnd, Failure> {
        let cx = self.cx;
        let acc = cx.account;
        let mailbox = acc.target.mailbox.as_str();
        let mut lookup: Option<Box<Item>> = None;
        // Messages whose intents are on disk, for the work queue.
        let mut ready: VecDeque<Work> = VecDeque::new();
        let mut closed = false;
        loop {
            let cancelled = cx.stop.is_cancelled();
            if cancelled && !self.report.interrupted {
                info!("Stopping early: shutting down");
                self.report.interrupted = true;
            }
            if cancelled || self.stopping() || state.alive == 0 {
                // Whatever is still queued keeps its intent, unsent: the
                // next pass settles it (not found, appended).
                shared.halt.cancel();
                break;
            }
            // A lookup waits for the lanes to be idle; a spent budget lets
            // what it admitted go, then ends the run.
            if (lookup.is_some() || self.report.paused.is_some()) && ready.is_empty() {
                break;
            }
            if ready.is_empty() {
                if queue.is_empty() {
                    if closed {
                        break;
                    }
                    tokio::select! {
                        biased;
                        ev = events.recv() => self.on_event(ev, shared, state).await?,
                        item = rx.recv() => match item {
                            Some(item) => queue.push_back(item),
                            None => closed = true,
                        },
                    }
                    if !closed {
                        closed = receive(rx, queue, false).await;
                    }
                    continue;
                }
                let next = self.next_batch(queue, &mut lookup, true).await?;
                if next.is_empty() {
                    continue;
                }
                let intents: Vec<Intent<'_>> = next
                    .iter()
                    .map(|r| intent(r.fetch.listed, &r.msg, &r.facts, &r.sha, mailbox))
                    .collect();
                cx.ledger
                    .record_intents(&acc.name, &intents)
                    .await
                    .map_err(ledger_failure)?;
                drop(intents);
                ready.extend(next.into_iter().map(|r| Work {
                    tag: (r.index, r.msg.len()),
                    date: r.facts.internal_date(acc.target.internal_date),
                    msg: r.msg,
                    _permit: r._permit,
                }));
                continue;
            }
            tokio::select! {
                biased;
                ev = events.recv() => self.on_event(ev, shared, state).await?,
                permit = work_tx.reserve() => match (permit, ready.pop_front()) {
                    (Ok(p), Some(w)) => p.send(w),
                    (Ok(_), None) => {}
                    (Err(_), _) => state.alive = 0,
                },
            }
            if self.done_len() >= LANE_WINDOW {
                self.flush().await?;
            }
        }
        drop(work_tx);
        drop(ready);
        // Every answer still owed, recorded as it comes.
        while let Some(ev) = events.recv().await {
            self.on_event(Some(ev), shared, state).await?;
        }
        self.flush().await?;
        match (self.take_stop(), lookup) {
            (Some(f), _) => Err(f),
            (None, Some(item)) => Ok(PipeEnd::Lookup(item)),
            (None, None) => Ok(PipeEnd::Done),
        }
    }

    async fn on_event(
        &mut self,
        ev: Option<Event>,
        shared: &Shared<'_>,
        state: &mut Coordinator,
    ) -> Result<(), Failure> {
        match ev {
            None => state.alive = 0,
            Some(Event::Answer(r)) => {
                self.take_result(r).await?;
                if self.stopping() {
                    shared.halt.cancel();
                }
            }
            Some(Event::Died {
                lane,
                error,
                unknown,
            }) => {
                state.alive = state.alive.saturating_sub(1);
                state.dead.push(lane);
                warn!(
                    lane,
                    unknown,
                    left = state.alive,
                    "A connection to the target failed ({error}); its APPENDs in flight are settled by the next pass, the other connections go on"
                );
                state.lost.get_or_insert(error);
            }
        }
        Ok(())
    }
}

/// The coordinator's view of the lanes.
struct Coordinator {
    alive: usize,
    dead: Vec<usize>,
    /// The first lane failure (the pass's error if every lane fails).
    lost: Option<ImapError>,
}

/// One lane: takes messages from the shared queue and writes their
/// APPENDs, keeping its own window, and sends every answer back.
async fn lane(
    index: usize,
    session: &mut imap::Session,
    shared: &Shared<'_>,
    events: mpsc::UnboundedSender<Event>,
) {
    let died = |error: ImapError, unknown: usize| Event::Died {
        lane: index,
        error,
        unknown,
    };
    let mut pipe =
        match session.append_pipeline::<Tag>(shared.mailbox, shared.flags, LANE_WINDOW, LANE_BYTES)
        {
            Ok(p) => p,
            Err(e) => {
                let _ = events.send(died(e, 0));
                return;
            }
        };
    let mut closed = false;
    let failed = loop {
        while let Some(r) = pipe.ready_result() {
            let _ = events.send(Event::Answer(r));
        }
        let pending = !pipe.is_empty();
        let halted = shared.halt.is_cancelled();
        let work = if halted || closed || pipe.is_full() {
            None
        } else if pending {
            // Answers are owed: take a message only if one is there now.
            match shared.work.try_lock() {
                Ok(mut w) => match w.try_recv() {
                    Ok(work) => Some(work),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                },
                Err(_) => None,
            }
        } else {
            let next = tokio::select! {
                next = async { shared.work.lock().await.recv().await } => next,
                _ = shared.halt.cancelled() => None,
            };
            closed = next.is_none();
            next
        };
        match work {
            Some(w) if !shared.halt.is_cancelled() => {
                if let Err(e) = pipe.push(w.tag, &w.msg, w.date.as_deref()).await {
                    break Some(e);
                }
                debug!(lane = index, bytes = w.msg.len(), "APPEND sent");
            }
            // Halted while it waited: it stays unsent.
            Some(_) => {}
            None if pending => match pipe.next_result().await {
                Ok(Some(r)) => {
                    let _ = events.send(Event::Answer(r));
                }
                Ok(None) => {}
                Err(e) => break Some(e),
            },
            None => break None,
        }
    };
    if let Some(e) = failed {
        let (known, unknown) = pipe.abandon();
        for r in known {
            let _ = events.send(Event::Answer(r));
        }
        let _ = events.send(died(e, unknown.len()));
    }
}
