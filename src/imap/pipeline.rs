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
//!   `[TRYCREATE]` is returned as it is (see [`ImapError::is_trycreate`]):
//!   call [`super::Session::ensure_mailbox`] before pipelining, and again
//!   before a later pass retries such a message.
//! - Byte for byte (1): each message goes out exactly as spooled (literal8
//!   when it holds a NUL and the server offers BINARY).
//! - Bounded (6): at most `window` APPENDs (at most [`MAX_WINDOW`]) and about
//!   `max_bytes` of literals are in flight; messages are streamed from their
//!   spool as they are written and the pipeline keeps none of them (a caller
//!   who wants a message back for a retry keeps it in the token).
//!
//! Without LITERAL+ (and LITERAL- for a message over 4096 bytes) a literal
//! must wait for the server's "+". The APPEND's command line still goes out
//! at once, behind the APPENDs in flight, and only its literal waits: the
//! completions that arrive before the "+" are recorded against their tags
//! (a server answers the previous APPEND, then asks for the next literal,
//! in one round trip). That is about one message per round trip on one
//! connection, instead of two round trips per message; more takes several
//! connections (`crate::sync`'s lanes). MULTIAPPEND (RFC 3502) is deliberately not used: it is all or
//! nothing (one refused message fails the whole batch, against guarantee 4),
//! and its APPENDUID is a range that cannot be matched to messages when the
//! server gives no single UIDs; pipelined single APPENDs save the same round
//! trips.

//!
//! The bookkeeping (window, bytes in flight, completions matched by tag and
//! handed back in push order, the split on failure) is [`crate::window`]'s;
//! this file writes the APPENDs and reads their completions.

use super::conn::{Conn, ImapIo};
use super::error::{self, ImapError};
use super::proto::command::Part;
use super::proto::encode::{self, Arg};
use super::proto::reply::Done;
use super::{Appended, MainStream};
use crate::spool::SpooledMessage;
use crate::window::{Window, WindowError};

/// Most APPENDs in flight at once (the one bound of [`crate::window`]).
pub use crate::window::MAX_WINDOW;

/// One result: the token given to `push` and the APPEND's outcome (`Err` is
/// that message's NO or BAD; the connection goes on).
pub type AppendResult<T> = (T, Result<Appended, ImapError>);

/// What the server answered one APPEND.
fn appended(done: Done, server: &str) -> Result<Appended, ImapError> {
    if done.is_ok() {
        let (uidvalidity, uid) = match done.append_uid {
            Some((v, u)) => (Some(v), u),
            None => (None, None),
        };
        Ok(Appended { uidvalidity, uid })
    } else {
        Err(error::refusal(server, done))
    }
}

/// The engine, generic over the stream so that unit tests run it on a pipe.
pub(crate) struct Pipe<'c, T, S: ImapIo> {
    conn: &'c mut Conn<S>,
    mailbox: Arg,
    flags: Option<String>,
    /// Keyed by tag; the cost of an entry is its message's size.
    window: Window<String, T, Result<Appended, ImapError>>,
}

const WHAT: &str = "appending messages";
const WAITING: &str = "waiting for APPEND results";

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
        conn.pipe_begin()?;
        Ok(Pipe {
            conn,
            mailbox: arg,
            flags,
            window: Window::with_max_cost(window, max_bytes),
        })
    }

    pub(crate) fn window(&self) -> usize {
        self.window.limit()
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.window.len()
    }

    #[cfg(test)]
    pub(crate) fn pending_in_flight(&self) -> usize {
        self.window.in_flight()
    }

    #[cfg(test)]
    pub(crate) async fn read_one_for_test(&mut self) -> Result<(), ImapError> {
        self.read_one().await
    }

    pub(crate) fn is_full(&self) -> bool {
        self.window.is_full()
    }

    fn check(&self) -> Result<(), ImapError> {
        if self.window.is_broken() {
            return Err(self
                .conn
                .protocol("the connection failed during pipelined APPENDs; reconnect"));
        }
        Ok(())
    }

    fn fail<E>(&mut self, e: E) -> E {
        self.window.set_broken();
        e
    }

    /// The parts of one APPEND: literal8 for a message with a NUL when the
    /// server offers BINARY, else a plain literal.
    fn parts<'m>(&self, date: Option<&str>, msg: &'m SpooledMessage) -> Vec<Part<'m>> {
        let binary = msg.has_nul() && self.conn.caps.binary();
        let mut parts = vec![Part::text("APPEND "), Part::arg(self.mailbox.clone())];
        if let Some(flags) = &self.flags {
            parts.push(Part::text(format!(" {flags}")));
        }
        if let Some(date) = date {
            parts.push(Part::text(format!(" {date}")));
        }
        parts.push(Part::text(" "));
        parts.push(Part::Message { msg, binary });
        parts
    }

    pub(crate) async fn push(
        &mut self,
        token: T,
        msg: &SpooledMessage,
        internal_date: Option<&str>,
    ) -> Result<(), ImapError>
    where
        T: Send,
    {
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
        let tag = self.conn.pipe_tag();
        let parts = self.parts(date.as_deref(), msg);
        // With a synchronizing literal the command line goes out at once,
        // behind the APPENDs still in flight, and the write waits for the
        // "+": the completions that come first are theirs.
        let server = self.conn.server.clone();
        let Pipe { conn, window, .. } = self;
        let mut on_other = |tag: String, done: Done| {
            window
                .complete(tag.as_str(), appended(done, &server))
                .is_ok()
        };
        let written = conn.pipe_write(&tag, WHAT, parts, &mut on_other).await;
        let server = &self.conn.server;
        let recorded = match written {
            // Refused before its literal was sent.
            Ok(Some(done)) => self
                .window
                .push_answered(tag, token, appended(done, server)),
            Ok(None) => self.window.push(tag, token, msg.len()),
            // Whether the server took this one is unknown: keep its token
            // with the unresolved ones.
            Err(e) => {
                let _ = self.window.push(tag, token, msg.len());
                return Err(self.fail(e));
            }
        };
        self.recorded(recorded)?;
        Ok(())
    }

    fn recorded(&mut self, r: Result<(), WindowError>) -> Result<(), ImapError> {
        r.map_err(|e| {
            let e = self.conn.protocol(format!("pipelined APPEND: {e}"));
            self.fail(e)
        })
    }

    /// Reads one completion and records it against its tag.
    async fn read_one(&mut self) -> Result<(), ImapError> {
        if self.window.in_flight() == 0 {
            return Ok(());
        }
        let (tag, done) = match self.conn.pipe_next_done(WAITING).await {
            Ok(x) => x,
            Err(e) => return Err(self.fail(e)),
        };
        let result = appended(done, &self.conn.server);
        if self.window.complete(tag.as_str(), result).is_err() {
            let e = self.conn.protocol(format!(
                "completion of a command we did not send while {WHAT}"
            ));
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// The next result in push order if it is known already (no I/O).
    pub(crate) fn ready_result(&mut self) -> Option<AppendResult<T>> {
        let (_, token, result) = self.window.pop()?;
        self.settle();
        Some((token, result))
    }

    /// Pushed and not handed back yet.
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }

    pub(crate) async fn next_result(&mut self) -> Result<Option<AppendResult<T>>, ImapError> {
        loop {
            if let Some((_, token, result)) = self.window.pop() {
                self.settle();
                return Ok(Some((token, result)));
            }
            self.check()?;
            if self.window.is_empty() {
                return Ok(None);
            }
            self.read_one().await?;
        }
    }

    /// Once nothing is in flight, the connection is in step again.
    fn settle(&mut self) {
        if self.window.in_flight() == 0 && !self.window.is_broken() {
            self.conn.end();
        }
    }

    pub(crate) fn abandon(mut self) -> (Vec<AppendResult<T>>, Vec<T>) {
        // With completions still owed (or after a failure) the connection
        // must not be reused: the window left for Drop says so, and Drop
        // leaves it marked busy.
        let mut left = Window::new(1);
        if self.window.in_flight() > 0 || self.window.is_broken() {
            left.set_broken();
        }
        let window = std::mem::replace(&mut self.window, left);
        let (known, unknown) = window.abandon();
        (
            known.into_iter().map(|(_, t, r)| (t, r)).collect(),
            unknown.into_iter().map(|(_, t)| t).collect(),
        )
    }
}

impl<T, S: ImapIo> Drop for Pipe<'_, T, S> {
    fn drop(&mut self) {
        // Completions still owed by the server: the connection stays marked
        // busy (set by `pipe_begin`), so it refuses every later command
        // instead of reading them as its own.
        if self.window.in_flight() == 0 && !self.window.is_broken() {
            self.conn.end();
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
    /// (clamped to `1..=`[`MAX_WINDOW`]). Without LITERAL+ each push waits
    /// for its "+", so few are ever really in flight.
    pub fn window(&self) -> usize {
        self.pipe.window()
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
    ) -> Result<(), ImapError>
    where
        T: Send,
    {
        self.pipe.push(token, msg, internal_date).await
    }

    /// The next result in push order, waiting for its completion if needed;
    /// `None` when every pushed message has been answered. An `Err` means the
    /// connection failed: see [`AppendPipeline::abandon`].
    pub async fn next_result(&mut self) -> Result<Option<AppendResult<T>>, ImapError> {
        self.pipe.next_result().await
    }

    /// The next result in push order if it is already known (its
    /// completion and those of every earlier push were read), without
    /// reading from the connection.
    pub fn ready_result(&mut self) -> Option<AppendResult<T>> {
        self.pipe.ready_result()
    }

    /// APPENDs pushed whose results were not handed back yet.
    pub fn len(&self) -> usize {
        self.pipe.len()
    }

    /// Nothing pushed is waiting to be handed back.
    pub fn is_empty(&self) -> bool {
        self.pipe.len() == 0
    }

    /// Gives up: the results already known but not handed out, and the
    /// tokens whose APPEND may or may not have reached the server. After a
    /// failure the session must be dropped (it refuses every command).
    pub fn abandon(self) -> (Vec<AppendResult<T>>, Vec<T>) {
        self.pipe.abandon()
    }
}
