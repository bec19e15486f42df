//! One IMAP connection: it owns the socket, the read budget and the
//! deadlines, and moves bytes between the socket and the sans-IO protocol
//! (`super::proto`): commands are encoded there, replies decoded there, and
//! the tag/continuation rules live in `proto::flow`.
//!
//! Bounds: every reply must arrive, and every write finish, within the
//! endpoint's timeout (one deadline each, [`crate::deadline::within`]; as
//! before, a whole reply, not each socket read); the bytes one command may read are capped
//! (the `*_BUDGET` constants), so a hostile server cannot make us buffer
//! without end. A command that is interrupted (timeout, I/O error, a reply
//! out of step, or its future dropped) leaves the connection marked broken:
//! every later command is refused and the session must be dropped.
//!
//! Generic over the stream so that the same code runs on the plain
//! connection before STARTTLS, on TLS afterwards, and on an in-memory duplex
//! in the unit tests.

use std::fmt::Debug;
use std::io;
use std::time::Duration;

use secrecy::zeroize::Zeroizing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::caps::Capabilities;
use super::error::{self, ImapError, ImapErrorKind};
use super::proto::command::{self, Part, Segment};
use super::proto::decode::Decoder;
use super::proto::flow::{self, Flow, Pipelined, Step};
use super::proto::reply::{Done, Greeting, Reply, Untagged};
use crate::deadline;
use crate::spool::SpooledMessage;

/// What one ordinary command may read in total.
pub(crate) const COMMAND_BUDGET: u64 = 1024 * 1024;
/// The greeting.
pub(crate) const GREETING_BUDGET: u64 = 64 * 1024;
/// UID SEARCH and UID FETCH of candidates.
pub(crate) const SEARCH_BUDGET: u64 = 8 * 1024 * 1024;
/// Chunk size when streaming a message into its literal, and of reads.
const CHUNK: usize = 64 * 1024;

/// Any byte stream a connection can run on.
pub(crate) trait ImapIo: AsyncRead + AsyncWrite + Unpin + Debug + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Debug + Send> ImapIo for T {}

/// Where a command's untagged data goes.
pub(crate) type OnData<'f> = &'f mut (dyn FnMut(Untagged) + Send);

/// For commands whose untagged data does not matter.
pub(crate) fn ignore(_: Untagged) {}

/// Where the completions of earlier pipelined commands go while a command
/// behind them waits for its "+": false when the tag is not one in flight.
pub(crate) type OnOther<'f> = &'f mut (dyn FnMut(String, Done) -> bool + Send);

/// For a command that is alone on the connection.
fn no_others(_: String, _: Done) -> bool {
    false
}

/// What the greeting said (a BYE greeting is an error).
pub(crate) struct Greeted {
    pub preauth: bool,
    pub caps: Option<Capabilities>,
}

/// One IMAP connection.
pub(crate) struct Conn<S: ImapIo> {
    stream: S,
    decoder: Decoder,
    read_buf: Vec<u8>,
    pub(crate) server: String,
    timeout: Duration,
    next_tag: u64,
    /// Set while a command runs; still set if it was interrupted.
    broken: bool,
    /// Text of an untagged BYE seen during the current command.
    bye: Option<String>,
    /// Bytes the current command may still read.
    remaining: u64,
    pub(crate) caps: Capabilities,
}

impl<S: ImapIo> Conn<S> {
    pub(crate) fn new(stream: S, server: String, timeout: Duration) -> Self {
        Conn {
            stream,
            decoder: Decoder::new(),
            read_buf: vec![0; CHUNK],
            server,
            timeout,
            next_tag: 0,
            broken: false,
            bye: None,
            remaining: GREETING_BUDGET,
            caps: Capabilities::default(),
        }
    }

    /// The raw stream, dropping whatever the server sent beyond the last
    /// reply (after STARTTLS that must be discarded anyway).
    pub(crate) fn into_inner(self) -> S {
        self.stream
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    pub(crate) fn protocol(&self, what: impl Into<String>) -> ImapError {
        ImapError::new(
            self.server.clone(),
            ImapErrorKind::Protocol { what: what.into() },
        )
    }

    pub(crate) fn invalid(&self, what: impl Into<String>) -> ImapError {
        ImapError::new(
            self.server.clone(),
            ImapErrorKind::InvalidArgument { what: what.into() },
        )
    }

    fn timed_out(&self, what: &'static str) -> ImapError {
        ImapError::new(
            self.server.clone(),
            ImapErrorKind::Timeout {
                what,
                timeout: self.timeout,
            },
        )
    }

    /// The server went away: BYE with its last words, if it said any.
    fn gone(&mut self, fallback: String) -> ImapError {
        ImapError::new(
            self.server.clone(),
            ImapErrorKind::Bye {
                text: self.bye.take().unwrap_or(fallback),
            },
        )
    }

    fn io_error(&mut self, e: io::Error, what: &'static str) -> ImapError {
        if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        ) {
            return self.gone(format!("connection lost while {what}"));
        }
        let msg = super::proto::encode::bounded_text(&e.to_string());
        ImapError::new(
            self.server.clone(),
            ImapErrorKind::Io {
                source: io::Error::new(e.kind(), msg),
            },
        )
    }

    /// Starts a command: refuses a connection left broken, sets the read
    /// budget and returns a fresh tag.
    pub(crate) fn begin(&mut self, budget: u64) -> Result<String, ImapError> {
        self.mark_busy(budget)?;
        Ok(self.fresh_tag())
    }

    /// Refuses a connection left broken, else marks it busy (broken until
    /// [`Conn::end`]) with a fresh read budget.
    fn mark_busy(&mut self, budget: u64) -> Result<(), ImapError> {
        if self.broken {
            return Err(
                self.protocol("the connection is unusable after an interrupted command; reconnect")
            );
        }
        self.broken = true;
        self.bye = None;
        self.remaining = budget;
        Ok(())
    }

    fn fresh_tag(&mut self) -> String {
        self.next_tag = self.next_tag.saturating_add(1);
        format!("pf{}", self.next_tag)
    }

    /// The command is over and the connection in step.
    pub(crate) fn end(&mut self) {
        self.broken = false;
    }

    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<(), ImapError> {
        let stream = &mut self.stream;
        let res = deadline::within(
            self.timeout,
            async { stream.write_all(bytes).await.map_err(Some) },
            || None,
        )
        .await;
        match res {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(self.io_error(e, what)),
            Err(None) => Err(self.timed_out(what)),
        }
    }

    pub(crate) async fn flush(&mut self, what: &'static str) -> Result<(), ImapError> {
        let stream = &mut self.stream;
        let res = deadline::within(
            self.timeout,
            async { stream.flush().await.map_err(Some) },
            || None,
        )
        .await;
        match res {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(self.io_error(e, what)),
            Err(None) => Err(self.timed_out(what)),
        }
    }

    /// Reads more bytes into the decoder, within the budget. No deadline
    /// of its own: the callers put one on the whole reply.
    async fn fill(&mut self, what: &'static str) -> Result<(), ImapError> {
        if self.remaining == 0 {
            return Err(self.protocol(format!("the response while {what} is too large; giving up")));
        }
        let want = usize::try_from(self.remaining).unwrap_or(CHUNK).min(CHUNK);
        let Some(space) = self.read_buf.get_mut(..want) else {
            return Err(self.protocol("read buffer smaller than a chunk"));
        };
        match self.stream.read(space).await {
            Ok(0) => Err(self.gone(format!("connection closed while {what}"))),
            Ok(n) => {
                self.remaining = self.remaining.saturating_sub(n as u64);
                let got = self.read_buf.get(..n).unwrap_or_default();
                self.decoder.feed(got);
                Ok(())
            }
            Err(e) => Err(self.io_error(e, what)),
        }
    }

    /// The next reply, reading as needed; the whole reply must arrive
    /// within the timeout.
    async fn read_reply(&mut self, what: &'static str) -> Result<Reply, ImapError> {
        let timeout = self.timeout;
        let read = async {
            loop {
                match self.decoder.reply() {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => self.fill(what).await.map_err(Some)?,
                    Err(bad) => {
                        let e = self.protocol(format!("unparsable response while {what}: {bad}"));
                        return Err(Some(e));
                    }
                }
            }
        };
        match deadline::within(timeout, read, || None).await {
            Ok(reply) => Ok(reply),
            Err(Some(e)) => Err(e),
            Err(None) => Err(self.timed_out(what)),
        }
    }

    /// Reads until `flow` has a step for the caller: the "+" it waits for
    /// or its completion. Untagged data goes to `on_data`; a BYE is kept for
    /// the error that follows when the server hangs up.
    pub(crate) async fn next_step(
        &mut self,
        flow: &mut Flow,
        what: &'static str,
        on_data: OnData<'_>,
    ) -> Result<Step, ImapError> {
        loop {
            let reply = self.read_reply(what).await?;
            match flow.on_reply(reply) {
                Ok(Step::Data(data)) => on_data(data),
                Ok(Step::Bye(text)) => self.bye = Some(text),
                Ok(step) => return Ok(step),
                Err(misstep) => return Err(self.protocol(format!("{misstep} while {what}"))),
            }
        }
    }

    /// Reads the greeting.
    pub(crate) async fn greeting(&mut self) -> Result<Greeted, ImapError> {
        const WHAT: &str = "reading the greeting";
        self.begin(GREETING_BUDGET)?;
        let timeout = self.timeout;
        let read = async {
            loop {
                match self.decoder.greeting() {
                    Ok(Some(g)) => return Ok(g),
                    Ok(None) => self.fill(WHAT).await.map_err(Some)?,
                    Err(bad) => {
                        let e = self
                            .protocol(format!("the server did not send an IMAP greeting: {bad}"));
                        return Err(Some(e));
                    }
                }
            }
        };
        let greeting = match deadline::within(timeout, read, || None).await {
            Ok(g) => g,
            Err(Some(e)) => return Err(e),
            Err(None) => return Err(self.timed_out(WHAT)),
        };
        match greeting {
            Greeting::Ok { caps } => {
                self.end();
                Ok(Greeted {
                    preauth: false,
                    caps,
                })
            }
            Greeting::PreAuth { caps } => {
                self.end();
                Ok(Greeted {
                    preauth: true,
                    caps,
                })
            }
            Greeting::Bye { text } => Err(ImapError::new(
                self.server.clone(),
                ImapErrorKind::Bye { text },
            )),
        }
    }

    /// Runs one command made of `parts`; literals are synchronizing unless
    /// the server allows otherwise. Returns the tagged completion, OK or not.
    pub(crate) async fn exec(
        &mut self,
        what: &'static str,
        parts: Vec<Part<'_>>,
        budget: u64,
        on_data: OnData<'_>,
    ) -> Result<Done, ImapError> {
        let tag = self.begin(budget)?;
        let mut flow = Flow::new(&tag);
        let segments = command::encode(&tag, parts, &self.caps);
        let sent = self
            .send(&mut flow, what, segments, &mut *on_data, &mut no_others)
            .await?;
        if let Some(done) = sent {
            // Refused before a literal: the command is over and the
            // connection is in step.
            self.end();
            return Ok(done);
        }
        let done = loop {
            if let Step::Done(done) = self.next_step(&mut flow, what, &mut *on_data).await? {
                break done;
            }
        };
        self.end();
        Ok(done)
    }

    /// A command without literals whose untagged data does not matter.
    pub(crate) async fn simple(
        &mut self,
        what: &'static str,
        parts: Vec<Part<'_>>,
    ) -> Result<Done, ImapError> {
        self.exec(what, parts, COMMAND_BUDGET, &mut ignore).await
    }

    /// Writes one command's segments. At a synchronizing literal it flushes
    /// and waits for the server's "+"; returns `Some` when the server
    /// completed the command instead (a refusal), `None` once everything is
    /// written. Small segments and message chunks are coalesced into writes
    /// of about [`CHUNK`] bytes.
    async fn send(
        &mut self,
        flow: &mut Flow,
        what: &'static str,
        segments: Vec<Segment<'_>>,
        on_data: OnData<'_>,
        on_other: OnOther<'_>,
    ) -> Result<Option<Done>, ImapError> {
        let mut out: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(CHUNK));
        for segment in segments {
            match segment {
                Segment::Bytes(bytes) => {
                    out.extend_from_slice(&bytes);
                    if out.len() >= CHUNK {
                        self.write(&out, what).await?;
                        out.clear();
                    }
                }
                Segment::AwaitContinue => {
                    self.write(&out, what).await?;
                    self.flush(what).await?;
                    out.clear();
                    flow.expect_continue();
                    while flow.waits_for_continue() {
                        match self.next_step(flow, what, &mut *on_data).await? {
                            Step::Done(done) => return Ok(Some(done)),
                            Step::Other(tag, done) => {
                                if !on_other(tag, done) {
                                    return Err(self.protocol(format!(
                                        "completion of a command we did not send while {what}"
                                    )));
                                }
                            }
                            Step::Proceed(_) | Step::Data(_) | Step::Bye(_) => {}
                        }
                    }
                }
                Segment::Message(msg) => self.stream_message(msg, &mut out, what).await?,
            }
        }
        if !out.is_empty() {
            self.write(&out, what).await?;
        }
        self.flush(what).await?;
        Ok(None)
    }

    /// Appends exactly `msg.len()` bytes of the message to `out`, writing
    /// `out` whenever it holds [`CHUNK`] bytes or more; the tail stays in
    /// `out` for the caller to finish and write.
    async fn stream_message(
        &mut self,
        msg: &SpooledMessage,
        out: &mut Zeroizing<Vec<u8>>,
        what: &'static str,
    ) -> Result<(), ImapError> {
        let spool_err = |server: &str, source: io::Error| {
            ImapError::new(server.to_owned(), ImapErrorKind::Spool { source })
        };
        let total = msg.len();
        let mut reader = msg.reader().await.map_err(|e| spool_err(&self.server, e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut sent: u64 = 0;
        while sent < total {
            let want = usize::try_from(total.saturating_sub(sent))
                .unwrap_or(CHUNK)
                .min(CHUNK);
            let n = match buf.get_mut(..want) {
                Some(chunk) => reader
                    .read(chunk)
                    .await
                    .map_err(|e| spool_err(&self.server, e))?,
                None => 0,
            };
            if n == 0 {
                return Err(spool_err(
                    &self.server,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the spool ended after {sent} of {total} bytes"),
                    ),
                ));
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
            sent = sent.saturating_add(n as u64);
            if out.len() >= CHUNK {
                self.write(out, what).await?;
                out.clear();
            }
        }
        Ok(())
    }

    /// Marks the connection busy with a pipeline of commands (see
    /// `super::pipeline`); it stays unusable for anything else until
    /// [`Conn::end`], and for good if the pipeline is abandoned.
    pub(crate) fn pipe_begin(&mut self) -> Result<(), ImapError> {
        self.mark_busy(COMMAND_BUDGET)
    }

    /// A fresh tag for the next pipelined command.
    pub(crate) fn pipe_tag(&mut self) -> String {
        self.fresh_tag()
    }

    /// Writes one pipelined command made of `parts` under `tag` while
    /// other commands may be in flight. At a synchronizing literal it waits
    /// for the "+"; the completions of earlier commands that arrive
    /// meanwhile go to `on_other`, and `Some` is this command's refusal
    /// before its literal.
    pub(crate) async fn pipe_write(
        &mut self,
        tag: &str,
        what: &'static str,
        parts: Vec<Part<'_>>,
        on_other: OnOther<'_>,
    ) -> Result<Option<Done>, ImapError> {
        // Replies are read here too (while waiting for "+"): a fresh budget
        // per command, as `pipe_next_done` has.
        self.remaining = COMMAND_BUDGET;
        let mut flow = Flow::behind_others(tag);
        let segments = command::encode(tag, parts, &self.caps);
        self.send(&mut flow, what, segments, &mut ignore, on_other)
            .await
    }

    /// Reads replies until the next tagged completion (whichever tag);
    /// untagged data is skipped, at most [`COMMAND_BUDGET`] bytes of it.
    pub(crate) async fn pipe_next_done(
        &mut self,
        what: &'static str,
    ) -> Result<(String, Done), ImapError> {
        self.remaining = COMMAND_BUDGET;
        loop {
            let reply = self.read_reply(what).await?;
            match flow::pipelined(reply) {
                Ok(Pipelined::Done(tag, done)) => return Ok((tag, done)),
                Ok(Pipelined::Bye(text)) => self.bye = Some(text),
                Ok(Pipelined::Data) => {}
                Err(misstep) => return Err(self.protocol(format!("{misstep} while {what}"))),
            }
        }
    }

    /// CAPABILITY; stores the list in `self.caps`.
    pub(crate) async fn capability(&mut self) -> Result<(), ImapError> {
        let mut caps: Option<Capabilities> = None;
        let done = self
            .exec(
                "asking for capabilities",
                vec![Part::text("CAPABILITY")],
                COMMAND_BUDGET,
                &mut |u| {
                    if let Untagged::Capability(c) = u {
                        caps = Some(c);
                    }
                },
            )
            .await?;
        error::check(&self.server, done)?;
        match caps {
            Some(c) => {
                self.caps = c;
                Ok(())
            }
            None => Err(self.protocol("CAPABILITY answered without a capability list")),
        }
    }

    /// STARTTLS; an error unless the server agrees.
    pub(crate) async fn starttls(&mut self) -> Result<(), ImapError> {
        let done = self
            .simple("starting TLS", vec![Part::text("STARTTLS")])
            .await?;
        if done.is_ok() {
            Ok(())
        } else {
            Err(self.protocol(format!(
                "STARTTLS refused ({}); refusing to continue without TLS",
                done.text
            )))
        }
    }

    /// LOGOUT, then a clean TLS close. A server that hangs up first is fine.
    pub(crate) async fn logout(&mut self) -> Result<(), ImapError> {
        match self.simple("logging out", vec![Part::text("LOGOUT")]).await {
            Ok(done) => error::check(&self.server, done)?,
            Err(e) if matches!(e.kind(), ImapErrorKind::Bye { .. }) => {}
            Err(e) => return Err(e),
        }
        let _ = deadline::within_or_none(self.timeout, self.stream.shutdown()).await;
        Ok(())
    }
}
