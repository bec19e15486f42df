//! Pipelined APPEND: several APPENDs in flight on one connection, each
//! tagged completion matched to its message by tag, results handed back in
//! the order the messages were pushed.
//!
//! Why: one APPEND at a time costs a round trip per message (plus one more
//! for each synchronizing literal); over a 40 ms link that caps a migration
//! at about 25 messages a second whatever the server could do. With
//! non-synchronizing literals (RFC 7888 LITERAL+, or LITERAL- for literals up
//! to 4096 bytes) the next APPEND can be written while the server still works
//! on the previous ones.
//!
//! How it keeps the guarantees of DESIGN.md:
//! - Exactly once (2): results come back one by one, in push order, each as
//!   soon as its completion (and those of every earlier push) has arrived, so
//!   the caller records each OK (with its APPENDUID) as it arrives and never
//!   before. The caller writes its intent row before [`AppendPipeline::push`].
//!   If the connection fails, [`AppendPipeline::abandon`] separates the
//!   results that are known from the tokens whose outcome is unknown (their
//!   intents stay unresolved and are settled by a search, as today).
//! - One bad message never blocks the rest (4): a NO or BAD completes one
//!   tag only; it is that message's result and the others go on. A NO
//!   `[TRYCREATE]` is returned as it is: call [`super::Session::ensure_mailbox`]
//!   before pipelining, and retry such a message with
//!   [`super::Session::append`] (which creates the mailbox) once the pipeline
//!   is finished.
//! - Byte for byte (1): each message goes out exactly as the single APPEND
//!   sends it (literal8 when it holds a NUL and the server offers BINARY).
//! - Bounded (6): at most `window` APPENDs (at most [`MAX_WINDOW`]) and about
//!   `max_bytes` of literals are in flight; messages are streamed from their
//!   spool as they are written and the pipeline keeps none of them (a caller
//!   who wants a message back for a retry keeps it in the token).
//!
//! Without LITERAL+ (and LITERAL- for a large message) a literal must wait
//! for the server's "+": the pipeline then first collects every completion in
//! flight and sends that message alone, which is the old one-at-a-time
//! behaviour. MULTIAPPEND (RFC 3502) is deliberately not used: it is all or
//! nothing (one refused message fails the whole batch, against guarantee 4),
//! and its APPENDUID is a range that cannot be matched to messages when the
//! server gives no single UIDs; pipelined single APPENDs save the same round
//! trips.

use std::collections::{HashMap, VecDeque};

use super::conn::{Conn, Done, ImapIo};
use super::encode::{self, Arg};
use super::error::ImapError;
use super::{Appended, MainStream};
use crate::spool::SpooledMessage;

/// Most APPENDs in flight at once.
pub const MAX_WINDOW: usize = 256;

/// One result: the token given to `push` and the APPEND's outcome (`Err` is
/// that message's NO or BAD; the connection goes on).
pub type AppendResult<T> = (T, Result<Appended, ImapError>);

struct InFlight<T> {
    tag: String,
    token: T,
    len: u64,
}

/// The engine, generic over the stream so that unit tests run it on a pipe.
pub(crate) struct Pipe<'c, T, S: ImapIo> {
    conn: &'c mut Conn<S>,
    mailbox: Arg,
    flags: Option<String>,
    window: usize,
    max_bytes: u64,
    /// Pushed, completion not read yet, oldest first.
    in_flight: VecDeque<InFlight<T>>,
    in_flight_bytes: u64,
    /// Completions that arrived before an older one's (servers may complete
    /// commands out of order); at most `window` of them.
    early: HashMap<String, Done>,
    /// Results known, not yet handed out, in push order.
    ready: VecDeque<AppendResult<T>>,
    /// The connection failed: every in-flight outcome is unknown.
    failed: bool,
}

fn appended(done: Done, server: &str) -> Result<Appended, ImapError> {
    if done.is_ok() {
        let (uidvalidity, uid) = match done.append_uid {
            Some((v, u)) => (Some(v), u),
            None => (None, None),
        };
        Ok(Appended { uidvalidity, uid })
    } else {
        Err(done.into_error(server))
    }
}

impl<'c, T, S: ImapIo> Pipe<'c, T, S> {
    pub(crate) fn new(
        conn: &'c mut Conn<S>,
        mailbox: &str,
        flags: &[String],
        window: usize,
        max_bytes: u64,
    ) -> Result<Self, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| conn.invalid(w))?;
        let flags = encode::flag_list(flags).map_err(|w| conn.invalid(w))?;
        let pipelined = conn.caps.literal_plus() || conn.caps.literal_minus();
        let window = if pipelined {
            window.clamp(1, MAX_WINDOW)
        } else {
            1
        };
        conn.pipe_begin()?;
        Ok(Pipe {
            conn,
            mailbox: arg,
            flags,
            window,
            max_bytes: max_bytes.max(1),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            early: HashMap::new(),
            ready: VecDeque::new(),
            failed: false,
        })
    }

    pub(crate) fn window(&self) -> usize {
        self.window
    }

    pub(crate) fn pending(&self) -> usize {
        self.in_flight.len().saturating_add(self.ready.len())
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pending() >= self.window || self.in_flight_bytes >= self.max_bytes
    }

    fn check(&self) -> Result<(), ImapError> {
        if self.failed {
            return Err(ImapError::Protocol {
                server: self.conn.server.clone(),
                what: "the connection failed during pipelined APPENDs; reconnect".into(),
            });
        }
        Ok(())
    }

    /// Whether this message's literals may go without waiting for "+".
    fn non_sync(&self, msg: &SpooledMessage) -> bool {
        let caps = &self.conn.caps;
        let mailbox_ok = match &self.mailbox {
            Arg::Quoted(_) => true,
            Arg::Literal(l) => caps.non_sync_literal(l.len() as u64),
        };
        mailbox_ok && caps.non_sync_literal(msg.len())
    }

    fn fail<E>(&mut self, e: E) -> E {
        self.failed = true;
        e
    }

    pub(crate) async fn push(
        &mut self,
        token: T,
        msg: &SpooledMessage,
        internal_date: Option<&str>,
    ) -> Result<(), ImapError> {
        self.check()?;
        if self.is_full() {
            return Err(self.conn.invalid(
                "APPEND pipeline is full: take a result with next_result() before pushing",
            ));
        }
        let date = internal_date
            .map(encode::internal_date_arg)
            .transpose()
            .map_err(|w| self.conn.invalid(w))?;
        let non_sync = self.non_sync(msg);
        if !non_sync {
            // A synchronizing literal: nothing else may be in flight.
            while !self.in_flight.is_empty() {
                self.read_one().await?;
            }
        }
        let tag = self.conn.pipe_tag();
        let written = self
            .conn
            .pipe_write_append(
                &tag,
                &self.mailbox,
                self.flags.as_deref(),
                date.as_deref(),
                msg,
            )
            .await;
        match written {
            Ok(Some(done)) => {
                // Refused before its literal was sent.
                let result = appended(done, &self.conn.server);
                self.ready.push_back((token, result));
            }
            Ok(None) => {
                self.in_flight_bytes = self.in_flight_bytes.saturating_add(msg.len());
                self.in_flight.push_back(InFlight {
                    tag,
                    token,
                    len: msg.len(),
                });
                if !non_sync {
                    self.read_one().await?;
                }
            }
            Err(e) => {
                // Whether the server took this one is unknown: keep its token
                // with the unresolved ones.
                self.in_flight.push_back(InFlight {
                    tag,
                    token,
                    len: msg.len(),
                });
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Reads completions until the oldest in-flight APPEND's is known and
    /// moves it to `ready`.
    async fn read_one(&mut self) -> Result<(), ImapError> {
        let Some(oldest) = self.in_flight.front() else {
            return Ok(());
        };
        let oldest_tag = oldest.tag.clone();
        let done = match self.early.remove(&oldest_tag) {
            Some(done) => done,
            None => loop {
                let (tag, done) = match self.conn.pipe_next_done().await {
                    Ok(x) => x,
                    Err(e) => return Err(self.fail(e)),
                };
                if tag == oldest_tag {
                    break done;
                }
                let ours = self.in_flight.iter().any(|f| f.tag == tag);
                if !ours || self.early.contains_key(&tag) {
                    let e = self.conn.unknown_tag("appending messages");
                    return Err(self.fail(e));
                }
                self.early.insert(tag, done);
            },
        };
        if let Some(f) = self.in_flight.pop_front() {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(f.len);
            let result = appended(done, &self.conn.server);
            self.ready.push_back((f.token, result));
        }
        Ok(())
    }

    pub(crate) async fn next_result(&mut self) -> Result<Option<AppendResult<T>>, ImapError> {
        if let Some(r) = self.ready.pop_front() {
            self.settle();
            return Ok(Some(r));
        }
        self.check()?;
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        self.read_one().await?;
        let r = self.ready.pop_front();
        self.settle();
        Ok(r)
    }

    /// Once nothing is in flight, the connection is in step again.
    fn settle(&mut self) {
        if self.in_flight.is_empty() && !self.failed {
            self.conn.pipe_end();
        }
    }

    pub(crate) fn abandon(mut self) -> (Vec<AppendResult<T>>, Vec<T>) {
        let known: Vec<_> = self.ready.drain(..).collect();
        let unknown: Vec<_> = self.in_flight.drain(..).map(|f| f.token).collect();
        if !unknown.is_empty() {
            // Completions are still owed: the connection must not be reused
            // (Drop leaves it marked busy).
            self.failed = true;
        }
        (known, unknown)
    }
}

impl<T, S: ImapIo> Drop for Pipe<'_, T, S> {
    fn drop(&mut self) {
        // Completions still owed by the server: the connection stays marked
        // busy (the `broken` flag set by `pipe_begin`), so it refuses every
        // later command instead of reading them as its own.
        if self.in_flight.is_empty() && !self.failed {
            self.conn.pipe_end();
        }
    }
}

/// Pipelined APPENDs to one mailbox on a [`super::Session`]; see the module
/// documentation. `T` is the caller's token for each message (its UIDL, the
/// ledger key, or the spooled message itself if it wants it back).
///
/// Use:
/// ```text
/// let mut pipe = session.append_pipeline::<Token>(mailbox, &flags, 32, 16 << 20)?;
/// for (token, msg, date) in messages {
///     while pipe.is_full() { record(pipe.next_result().await?) }
///     ledger.record_intent(..);               // before the APPEND is written
///     pipe.push(token, &msg, date).await?;
/// }
/// while let Some(r) = pipe.next_result().await? { record(r) }
/// ```
pub struct AppendPipeline<'s, T> {
    pipe: Pipe<'s, T, MainStream>,
}

impl<'s, T> AppendPipeline<'s, T> {
    pub(super) fn new(pipe: Pipe<'s, T, MainStream>) -> Self {
        AppendPipeline { pipe }
    }

    /// How many APPENDs may be pending at once: the window asked for
    /// (clamped to `1..=`[`MAX_WINDOW`]) with LITERAL+ or LITERAL-, 1 without.
    pub fn window(&self) -> usize {
        self.pipe.window()
    }

    /// Pushed messages whose result has not been handed out yet.
    pub fn pending(&self) -> usize {
        self.pipe.pending()
    }

    /// True when [`AppendPipeline::push`] must wait for a
    /// [`AppendPipeline::next_result`] first (window or bytes in flight).
    pub fn is_full(&self) -> bool {
        self.pipe.is_full()
    }

    /// Writes the APPEND of `msg` (with this pipeline's mailbox and flags and
    /// `internal_date`, "dd-Mon-yyyy hh:mm:ss +zzzz"). Returns once it is
    /// written, not once it is answered; an error here means the connection
    /// failed (see [`AppendPipeline::abandon`]) or the pipeline was full or
    /// the date malformed.
    pub async fn push(
        &mut self,
        token: T,
        msg: &SpooledMessage,
        internal_date: Option<&str>,
    ) -> Result<(), ImapError> {
        self.pipe.push(token, msg, internal_date).await
    }

    /// The next result in push order, waiting for its completion if needed;
    /// `None` when every pushed message has been answered. An `Err` means the
    /// connection failed: see [`AppendPipeline::abandon`].
    pub async fn next_result(&mut self) -> Result<Option<AppendResult<T>>, ImapError> {
        self.pipe.next_result().await
    }

    /// Gives up: the results already known but not handed out, and the
    /// tokens whose APPEND may or may not have reached the server. After a
    /// failure the session must be dropped (it refuses every command).
    pub fn abandon(self) -> (Vec<AppendResult<T>>, Vec<T>) {
        self.pipe.abandon()
    }
}
