//! The IMAP conversation: tagged commands written by us, responses parsed by
//! async-imap (imap-proto), every step bounded in time and size.
//!
//! Why our own command layer on top of async-imap: its `Session` methods
//! report NO and BAD as formatted strings (no TRYCREATE, no OVERQUOTA), its
//! `append` drops APPENDUID and needs the whole message in memory, and its
//! `login`/`authenticate` pass the password through its own trace logging.
//! So we keep an `async_imap::Client` only as the buffered reader and parser
//! of server responses (`read_response`), and write each command ourselves
//! on the raw stream (`get_mut`): the password never reaches async-imap, a
//! message is streamed into its literal from the spool, and every tagged
//! completion comes back with its response code.
//!
//! Bounds: every read and write is under the endpoint's timeout (here with
//! `tokio::time::timeout`, and the stream itself is a `TimeoutStream` once
//! connected), and the bytes a single command may read are capped by
//! [`Budgeted`], because async-imap alone would buffer up to 512 MiB for one
//! response. A command that is interrupted (timeout, I/O error, or its future
//! dropped) leaves the connection marked unusable.
//!
//! The module is generic over the stream so that the same code runs on the
//! plain connection before STARTTLS, on TLS afterwards, and on an in-memory
//! duplex in the unit tests.

use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::rfc4315::UidSetMember;
use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, NameAttribute, Response, ResponseCode, Status, StatusAttribute,
};
use base64::Engine as _;
use futures::FutureExt as _;
use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::caps::Capabilities;
use super::encode::{self, Arg};
use super::error::ImapError;
use super::{Appended, MailboxStatus};
use crate::config::{Credential, ImapAuth, ServerSettings};
use crate::spool::SpooledMessage;

/// What one ordinary command may read in total.
pub(crate) const COMMAND_BUDGET: u64 = 1024 * 1024;
/// The greeting.
pub(crate) const GREETING_BUDGET: u64 = 64 * 1024;
/// UID SEARCH and UID FETCH of candidates.
pub(crate) const SEARCH_BUDGET: u64 = 8 * 1024 * 1024;
/// At most this many candidate UIDs are fetched by `find_message`.
pub(crate) const MAX_CANDIDATES: usize = 1000;
/// Chunk size when streaming a message into its literal.
const CHUNK: usize = 64 * 1024;

/// Any byte stream a connection can run on.
pub(crate) trait ImapIo: AsyncRead + AsyncWrite + Unpin + Debug + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Debug + Send> ImapIo for T {}

/// The error carried inside an `io::Error` when a command reads too much.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response too large")
    }
}

impl std::error::Error for OverBudget {}

/// A stream that fails reads once a per-command byte budget is spent.
#[derive(Debug)]
pub(crate) struct Budgeted<S> {
    inner: S,
    remaining: u64,
}

impl<S> Budgeted<S> {
    fn new(inner: S) -> Self {
        Budgeted {
            inner,
            remaining: GREETING_BUDGET,
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, OverBudget)));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = buf.filled().len().saturating_sub(before);
            this.remaining = this.remaining.saturating_sub(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a tagged command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Ok,
    No,
    Bad,
}

/// A tagged completion, with what we care about from its response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    pub state: State,
    /// Upper-cased response code name (`TRYCREATE`, `APPENDUID`, ...).
    pub code: Option<String>,
    /// Bounded, printable text after the code.
    pub text: String,
    /// APPENDUID: UIDVALIDITY and the UID when it is a single one.
    pub append_uid: Option<(u32, Option<u32>)>,
    /// A CAPABILITY response code (often in the OK of a login).
    pub caps: Option<Capabilities>,
}

impl Done {
    /// Builds a completion from what imap-proto parsed. Codes imap-proto
    /// does not know stay in the text; they are split off here.
    pub(crate) fn from_outcome(
        status: &Status,
        code: Option<&ResponseCode<'_>>,
        information: Option<&str>,
    ) -> Done {
        let state = match status {
            Status::Ok => State::Ok,
            Status::No => State::No,
            _ => State::Bad,
        };
        let info = information.unwrap_or_default();
        let mut append_uid = None;
        let mut caps = None;
        let (code, text) = match code {
            Some(c) => {
                match c {
                    ResponseCode::AppendUid(validity, members) => {
                        append_uid = Some((*validity, single_uid(members)));
                    }
                    ResponseCode::Capabilities(list) => caps = Some(Capabilities::from_proto(list)),
                    _ => {}
                }
                (Some(code_name(c).to_owned()), info)
            }
            None => encode::split_code(info),
        };
        Done {
            state,
            code,
            text: encode::bounded_text(text),
            append_uid,
            caps,
        }
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.state == State::Ok
    }

    pub(crate) fn code_is(&self, code: &str) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(code))
    }

    /// The error for a NO or BAD completion.
    pub(crate) fn into_error(self, server: &str) -> ImapError {
        match self.state {
            State::Bad => ImapError::Bad {
                server: server.to_owned(),
                text: self.text,
            },
            State::Ok | State::No => ImapError::No {
                server: server.to_owned(),
                code: self.code,
                text: self.text,
            },
        }
    }

    /// `Ok(())` for OK, the error otherwise.
    pub(crate) fn ok_or_error(self, server: &str) -> Result<(), ImapError> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(self.into_error(server))
        }
    }
}

fn single_uid(members: &[UidSetMember]) -> Option<u32> {
    match members {
        [UidSetMember::Uid(u)] => Some(*u),
        [UidSetMember::UidRange(r)] if r.start() == r.end() => Some(*r.start()),
        _ => None,
    }
}

fn code_name(code: &ResponseCode<'_>) -> &'static str {
    match code {
        ResponseCode::Alert => "ALERT",
        ResponseCode::BadCharset(_) => "BADCHARSET",
        ResponseCode::Capabilities(_) => "CAPABILITY",
        ResponseCode::HighestModSeq(_) => "HIGHESTMODSEQ",
        ResponseCode::Parse => "PARSE",
        ResponseCode::PermanentFlags(_) => "PERMANENTFLAGS",
        ResponseCode::ReadOnly => "READ-ONLY",
        ResponseCode::ReadWrite => "READ-WRITE",
        ResponseCode::TryCreate => "TRYCREATE",
        ResponseCode::UidNext(_) => "UIDNEXT",
        ResponseCode::UidValidity(_) => "UIDVALIDITY",
        ResponseCode::Unseen(_) => "UNSEEN",
        ResponseCode::AppendUid(..) => "APPENDUID",
        ResponseCode::CopyUid(..) => "COPYUID",
        ResponseCode::UidNotSticky => "UIDNOTSTICKY",
        _ => "METADATA",
    }
}

/// One piece of a command line.
pub(crate) enum Piece<'a> {
    /// Bytes written as they are (may hold a secret: zeroed on drop).
    Text(Zeroizing<Vec<u8>>),
    /// A small literal held in memory.
    Literal(Zeroizing<Vec<u8>>),
    /// The message of an APPEND, streamed from the spool.
    Message {
        msg: &'a SpooledMessage,
        binary: bool,
    },
}

impl Piece<'_> {
    pub(crate) fn text(s: impl AsRef<[u8]>) -> Self {
        Piece::Text(Zeroizing::new(s.as_ref().to_vec()))
    }

    pub(crate) fn arg(arg: Arg) -> Self {
        match arg {
            Arg::Quoted(q) => Piece::Text(Zeroizing::new(q.into_bytes())),
            Arg::Literal(l) => Piece::Literal(Zeroizing::new(l)),
        }
    }
}

/// What the greeting said.
pub(crate) struct Greeting {
    pub preauth: bool,
    pub caps: Option<Capabilities>,
}

/// What one response means for the command in progress.
enum Event {
    Continue,
    Tagged { tag: String, done: Done },
    Untagged,
}

type OnData<'f> = &'f mut (dyn FnMut(&Response<'_>) + Send);

fn ignore(_: &Response<'_>) {}

/// One IMAP connection.
pub(crate) struct Conn<S: ImapIo> {
    client: async_imap::Client<Budgeted<S>>,
    pub(crate) server: String,
    timeout: Duration,
    next_tag: u64,
    /// Set while a command runs; still set if it was interrupted.
    broken: bool,
    /// Text of an untagged BYE seen during the current command.
    bye: Option<String>,
    pub(crate) caps: Capabilities,
}

impl<S: ImapIo> Conn<S> {
    pub(crate) fn new(stream: S, server: String, timeout: Duration) -> Self {
        Conn {
            client: async_imap::Client::new(Budgeted::new(stream)),
            server,
            timeout,
            next_tag: 0,
            broken: false,
            bye: None,
            caps: Capabilities::default(),
        }
    }

    /// The raw stream, dropping whatever the server sent beyond the last
    /// response (after STARTTLS that must be discarded anyway).
    pub(crate) fn into_inner(self) -> S {
        self.client.into_inner().inner
    }

    pub(crate) fn stream(&self) -> &S {
        self.client.get_ref().get_ref()
    }

    fn protocol(&self, what: impl Into<String>) -> ImapError {
        ImapError::Protocol {
            server: self.server.clone(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(&self, what: impl Into<String>) -> ImapError {
        ImapError::InvalidArgument {
            server: self.server.clone(),
            what: what.into(),
        }
    }

    fn io_error(&mut self, e: io::Error, what: &'static str) -> ImapError {
        let server = self.server.clone();
        if e.kind() == io::ErrorKind::TimedOut {
            return ImapError::Timeout {
                server,
                what,
                timeout: self.timeout,
            };
        }
        if e.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) {
            return ImapError::Protocol {
                server,
                what: format!("the response while {what} is too large; giving up"),
            };
        }
        let msg = e.to_string();
        if msg.contains("during parsing of") {
            return ImapError::Protocol {
                server,
                what: format!(
                    "unparsable response while {what}: {}",
                    encode::bounded_text(&msg)
                ),
            };
        }
        if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        ) {
            return ImapError::Bye {
                server,
                text: self
                    .bye
                    .take()
                    .unwrap_or_else(|| format!("connection lost while {what}")),
            };
        }
        ImapError::Io {
            server,
            source: io::Error::new(e.kind(), encode::bounded_text(&msg)),
        }
    }

    fn timed_out(&self, what: &'static str) -> ImapError {
        ImapError::Timeout {
            server: self.server.clone(),
            what,
            timeout: self.timeout,
        }
    }

    /// Starts a command: refuses a connection left broken, sets the read
    /// budget and returns a fresh tag.
    fn begin(&mut self, budget: u64) -> Result<String, ImapError> {
        if self.broken {
            return Err(
                self.protocol("the connection is unusable after an interrupted command; reconnect")
            );
        }
        self.broken = true;
        self.bye = None;
        self.client.get_mut().remaining = budget;
        self.next_tag += 1;
        Ok(format!("pf{}", self.next_tag))
    }

    fn end(&mut self) {
        self.broken = false;
    }

    async fn write(&mut self, bytes: &[u8], what: &'static str) -> Result<(), ImapError> {
        let stream = self.client.get_mut();
        match tokio::time::timeout(self.timeout, stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error(e, what)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    async fn flush(&mut self, what: &'static str) -> Result<(), ImapError> {
        let stream = self.client.get_mut();
        match tokio::time::timeout(self.timeout, stream.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error(e, what)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Reads one response and turns it into an [`Event`]; untagged data goes
    /// to `on_data`, an untagged BYE is remembered.
    async fn next_event(
        &mut self,
        what: &'static str,
        on_data: OnData<'_>,
    ) -> Result<Event, ImapError> {
        // imap-proto can panic on some malformed server text (seen: a
        // response code followed by a non-ASCII byte). Server bytes must
        // never crash the process: a panic in the parser is a protocol
        // error, and the connection is not used again.
        let read = std::panic::AssertUnwindSafe(self.client.read_response()).catch_unwind();
        let res = match tokio::time::timeout(self.timeout, read).await {
            Ok(Err(_)) => {
                self.broken = true;
                return Err(self.protocol(format!(
                    "a response the IMAP parser could not handle while {what}"
                )));
            }
            Ok(Ok(Ok(Some(res)))) => res,
            Ok(Ok(Ok(None))) => {
                return Err(ImapError::Bye {
                    server: self.server.clone(),
                    text: self
                        .bye
                        .take()
                        .unwrap_or_else(|| format!("connection closed while {what}")),
                });
            }
            Ok(Ok(Err(e))) => return Err(self.io_error(e, what)),
            Err(_) => return Err(self.timed_out(what)),
        };
        let event = match res.parsed() {
            Response::Continue(_) => Event::Continue,
            Response::Done {
                tag,
                status,
                outcome,
            } => Event::Tagged {
                tag: tag.0.clone(),
                done: Done::from_outcome(
                    status,
                    outcome.code.as_ref(),
                    outcome.information.as_deref(),
                ),
            },
            Response::Data {
                status: Status::Bye,
                outcome,
            } => {
                let info = outcome.information.as_deref().unwrap_or_default();
                self.bye = Some(encode::bounded_text(encode::split_code(info).1));
                Event::Untagged
            }
            other => {
                on_data(other);
                Event::Untagged
            }
        };
        Ok(event)
    }

    /// Reads until the completion of `tag`.
    async fn read_done(
        &mut self,
        tag: &str,
        what: &'static str,
        on_data: OnData<'_>,
    ) -> Result<Done, ImapError> {
        loop {
            match self.next_event(what, &mut *on_data).await? {
                Event::Tagged { tag: t, done } if t == tag => return Ok(done),
                Event::Tagged { .. } => {
                    return Err(self.protocol(format!(
                        "completion of a command we did not send while {what}"
                    )));
                }
                Event::Continue => {
                    return Err(
                        self.protocol(format!("unexpected continuation request while {what}"))
                    );
                }
                Event::Untagged => {}
            }
        }
    }

    /// Reads until the server asks for a literal (`None`) or completes the
    /// command early, refusing it (`Some`).
    async fn wait_continue(
        &mut self,
        tag: &str,
        what: &'static str,
        on_data: OnData<'_>,
    ) -> Result<Option<Done>, ImapError> {
        loop {
            match self.next_event(what, &mut *on_data).await? {
                Event::Continue => return Ok(None),
                Event::Tagged { tag: t, done } if t == tag => return Ok(Some(done)),
                Event::Tagged { .. } => {
                    return Err(self.protocol(format!(
                        "completion of a command we did not send while {what}"
                    )));
                }
                Event::Untagged => {}
            }
        }
    }

    /// Reads the greeting.
    pub(crate) async fn greeting(&mut self) -> Result<Greeting, ImapError> {
        self.begin(GREETING_BUDGET)?;
        let mut greeting: Option<Result<Greeting, ImapError>> = None;
        let server = self.server.clone();
        let mut on_data = |r: &Response<'_>| {
            if let Response::Data { status, outcome } = r {
                let caps = match &outcome.code {
                    Some(ResponseCode::Capabilities(list)) => Some(Capabilities::from_proto(list)),
                    _ => None,
                };
                greeting = Some(match status {
                    Status::Ok => Ok(Greeting {
                        preauth: false,
                        caps,
                    }),
                    Status::PreAuth => Ok(Greeting {
                        preauth: true,
                        caps,
                    }),
                    _ => Err(ImapError::Protocol {
                        server: server.clone(),
                        what: format!(
                            "unexpected greeting: {}",
                            encode::bounded_text(
                                outcome.information.as_deref().unwrap_or_default()
                            )
                        ),
                    }),
                });
            }
        };
        let event = self
            .next_event("reading the greeting", &mut on_data)
            .await?;
        if let Some(bye) = self.bye.take() {
            return Err(ImapError::Bye {
                server: self.server.clone(),
                text: bye,
            });
        }
        match (event, greeting) {
            (Event::Untagged, Some(g)) => {
                self.end();
                g
            }
            _ => Err(self.protocol("the server did not send an IMAP greeting")),
        }
    }

    /// Runs one command made of `pieces`; literals are synchronizing unless
    /// the server allows otherwise. Returns the tagged completion, OK or not.
    pub(crate) async fn exec(
        &mut self,
        what: &'static str,
        pieces: Vec<Piece<'_>>,
        budget: u64,
        on_data: OnData<'_>,
    ) -> Result<Done, ImapError> {
        let tag = self.begin(budget)?;
        if let Some(done) = self
            .write_command(&tag, what, pieces, &mut *on_data)
            .await?
        {
            // Refused before a literal: the command is over and the
            // connection is in step.
            self.end();
            return Ok(done);
        }
        let done = self.read_done(&tag, what, on_data).await?;
        self.end();
        Ok(done)
    }

    /// Writes one tagged command made of `pieces`. A synchronizing literal
    /// waits for the server's "+" (no other command may be in flight then);
    /// a non-synchronizing one (LITERAL+, or LITERAL- up to 4096 bytes) is
    /// written at once. Returns `Some` when the server completed the command
    /// before its literal (a refusal), `None` once everything is written.
    /// Small pieces and message chunks are coalesced into writes of about
    /// [`CHUNK`] bytes.
    async fn write_command(
        &mut self,
        tag: &str,
        what: &'static str,
        pieces: Vec<Piece<'_>>,
        on_data: OnData<'_>,
    ) -> Result<Option<Done>, ImapError> {
        let mut line: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(256));
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        for piece in pieces {
            let (len, binary) = match &piece {
                Piece::Text(t) => {
                    line.extend_from_slice(t);
                    continue;
                }
                Piece::Literal(data) => (data.len() as u64, false),
                Piece::Message { msg, binary } => (msg.len(), *binary),
            };
            let non_sync = self.caps.non_sync_literal(len);
            if binary {
                line.push(b'~');
            }
            line.extend_from_slice(
                format!("{{{len}{}}}\r\n", if non_sync { "+" } else { "" }).as_bytes(),
            );
            if !non_sync {
                self.write(&line, what).await?;
                self.flush(what).await?;
                line.clear();
                if let Some(done) = self.wait_continue(tag, what, &mut *on_data).await? {
                    return Ok(Some(done));
                }
            }
            match piece {
                Piece::Literal(data) => line.extend_from_slice(&data),
                Piece::Message { msg, .. } => self.stream_message(msg, &mut line, what).await?,
                Piece::Text(_) => {}
            }
        }
        line.extend_from_slice(b"\r\n");
        self.write(&line, what).await?;
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
        let spool_err = |server: &str, source: io::Error| ImapError::Spool {
            server: server.to_owned(),
            source,
        };
        let total = msg.len();
        let mut reader = msg.reader().await.map_err(|e| spool_err(&self.server, e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut sent: u64 = 0;
        while sent < total {
            let want = usize::try_from(total - sent).unwrap_or(CHUNK).min(CHUNK);
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
            sent += n as u64;
            if out.len() >= CHUNK {
                self.write(out, what).await?;
                out.clear();
            }
        }
        Ok(())
    }

    /// Marks the connection busy with a pipeline of commands (see
    /// [`super::pipeline`]); it stays unusable for anything else until
    /// [`Conn::pipe_end`], and for good if the pipeline is abandoned.
    pub(crate) fn pipe_begin(&mut self) -> Result<(), ImapError> {
        if self.broken {
            return Err(
                self.protocol("the connection is unusable after an interrupted command; reconnect")
            );
        }
        self.broken = true;
        self.bye = None;
        self.client.get_mut().remaining = COMMAND_BUDGET;
        Ok(())
    }

    /// A fresh tag for the next pipelined command.
    pub(crate) fn pipe_tag(&mut self) -> String {
        self.next_tag += 1;
        format!("pf{}", self.next_tag)
    }

    /// Every pipelined command has completed: the connection is in step.
    pub(crate) fn pipe_end(&mut self) {
        self.end();
    }

    /// Writes one APPEND of `msg` under `tag` while other commands may be in
    /// flight. With a synchronizing literal the caller must have no command
    /// in flight; `Some` is then a refusal before the literal.
    pub(crate) async fn pipe_write_append(
        &mut self,
        tag: &str,
        mailbox: &Arg,
        flags: Option<&str>,
        date: Option<&str>,
        msg: &SpooledMessage,
    ) -> Result<Option<Done>, ImapError> {
        let pieces = self.append_pieces(mailbox.clone(), flags, date, msg);
        self.write_command(tag, "appending messages", pieces, &mut ignore)
            .await
    }

    /// Reads responses until the next tagged completion (whichever tag);
    /// untagged data is skipped, at most [`COMMAND_BUDGET`] bytes of it.
    pub(crate) async fn pipe_next_done(&mut self) -> Result<(String, Done), ImapError> {
        const WHAT: &str = "waiting for APPEND results";
        self.client.get_mut().remaining = COMMAND_BUDGET;
        loop {
            match self.next_event(WHAT, &mut ignore).await? {
                Event::Tagged { tag, done } => return Ok((tag, done)),
                Event::Continue => {
                    return Err(
                        self.protocol(format!("unexpected continuation request while {WHAT}"))
                    );
                }
                Event::Untagged => {}
            }
        }
    }

    /// The caller's check that a tag is one of its own.
    pub(crate) fn unknown_tag(&self, what: &'static str) -> ImapError {
        self.protocol(format!(
            "completion of a command we did not send while {what}"
        ))
    }

    /// A simple command without literals whose OK is all that matters.
    async fn simple(
        &mut self,
        what: &'static str,
        pieces: Vec<Piece<'_>>,
    ) -> Result<Done, ImapError> {
        self.exec(what, pieces, COMMAND_BUDGET, &mut ignore).await
    }

    /// CAPABILITY; stores the list in `self.caps`.
    pub(crate) async fn capability(&mut self) -> Result<(), ImapError> {
        let mut caps: Option<Capabilities> = None;
        let done = self
            .exec(
                "asking for capabilities",
                vec![Piece::text("CAPABILITY")],
                COMMAND_BUDGET,
                &mut |r: &Response<'_>| {
                    if let Response::Capabilities(list) = r {
                        caps = Some(Capabilities::from_proto(list));
                    }
                },
            )
            .await?;
        done.ok_or_error(&self.server)?;
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
            .simple("starting TLS", vec![Piece::text("STARTTLS")])
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

    /// Logs in as configured. Refuses to send a password without TLS unless
    /// allowed; picks AUTHENTICATE PLAIN or LOGIN; refreshes capabilities.
    pub(crate) async fn authenticate(
        &mut self,
        settings: &ServerSettings<ImapAuth>,
        tls: bool,
    ) -> Result<(), ImapError> {
        if !tls && !settings.allow_plaintext_password {
            return Err(ImapError::PlaintextRefused {
                server: self.server.clone(),
            });
        }
        let plain = match settings.auth {
            ImapAuth::Plain => true,
            ImapAuth::Login => false,
            ImapAuth::Auto => self.caps.auth("PLAIN"),
        };
        if !plain && self.caps.login_disabled() {
            return Err(ImapError::Auth {
                server: self.server.clone(),
                text: "the server disables LOGIN here (LOGINDISABLED) and PLAIN was not chosen or offered"
                    .into(),
            });
        }
        let user = settings.username.as_bytes();
        let Credential::Password(password) =
            settings
                .credential()
                .await
                .map_err(|source| ImapError::Credential {
                    server: self.server.clone(),
                    source,
                })?;
        let password = password.expose_secret().as_bytes();
        let done = if plain {
            self.auth_plain(user, password).await?
        } else {
            let pieces = vec![
                Piece::text("LOGIN "),
                Piece::arg(encode::string_arg(user)),
                Piece::text(" "),
                Piece::arg(encode::string_arg(password)),
            ];
            self.simple("logging in", pieces).await?
        };
        match done.state {
            State::Ok => {
                tracing::debug!(
                    server = %self.server,
                    user = %settings.username,
                    mechanism = if plain { "AUTHENTICATE PLAIN" } else { "LOGIN" },
                    "IMAP login succeeded"
                );
                match done.caps {
                    // Only trust a list that reflects the logged-in state.
                    Some(caps) if !caps.is_empty() => self.caps = caps,
                    _ => self.capability().await?,
                }
                Ok(())
            }
            _ => {
                let err = done.into_error(&self.server);
                if err.is_transient() {
                    Err(err)
                } else {
                    let text = match &err {
                        ImapError::No {
                            code: Some(c),
                            text,
                            ..
                        } => format!("[{c}] {text}"),
                        ImapError::No { text, .. } | ImapError::Bad { text, .. } => text.clone(),
                        other => other.to_string(),
                    };
                    Err(ImapError::Auth {
                        server: self.server.clone(),
                        text,
                    })
                }
            }
        }
    }

    /// AUTHENTICATE PLAIN (RFC 4616), with SASL-IR when offered.
    async fn auth_plain(&mut self, user: &[u8], password: &[u8]) -> Result<Done, ImapError> {
        const WHAT: &str = "authenticating";
        let mut raw: Zeroizing<Vec<u8>> =
            Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 2));
        raw.push(0);
        raw.extend_from_slice(user);
        raw.push(0);
        raw.extend_from_slice(password);
        let mut response: Zeroizing<Vec<u8>> = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .encode(&*raw)
                .into_bytes(),
        );
        drop(raw);
        response.extend_from_slice(b"\r\n");

        let tag = self.begin(COMMAND_BUDGET)?;
        let mut line: Zeroizing<Vec<u8>> =
            Zeroizing::new(format!("{tag} AUTHENTICATE PLAIN").into_bytes());
        let mut sent = false;
        if self.caps.sasl_ir() {
            line.push(b' ');
            line.extend_from_slice(&response);
            sent = true;
        } else {
            line.extend_from_slice(b"\r\n");
        }
        self.write(&line, WHAT).await?;
        self.flush(WHAT).await?;
        drop(line);
        loop {
            match self.next_event(WHAT, &mut ignore).await? {
                Event::Continue => {
                    if sent {
                        // A second challenge: PLAIN has none. Cancel.
                        self.write(b"*\r\n", WHAT).await?;
                    } else {
                        self.write(&response, WHAT).await?;
                        sent = true;
                    }
                    self.flush(WHAT).await?;
                }
                Event::Tagged { tag: t, done } if t == tag => {
                    self.end();
                    return Ok(done);
                }
                Event::Tagged { .. } => {
                    return Err(self
                        .protocol("completion of a command we did not send while authenticating"));
                }
                Event::Untagged => {}
            }
        }
    }

    /// STATUS (MESSAGES UIDVALIDITY).
    pub(crate) async fn status(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let mut exists: Option<u32> = None;
        let mut uidvalidity: Option<u32> = None;
        let done = self
            .exec(
                "asking for the mailbox status",
                vec![
                    Piece::text("STATUS "),
                    Piece::arg(arg),
                    Piece::text(" (MESSAGES UIDVALIDITY)"),
                ],
                COMMAND_BUDGET,
                &mut |r: &Response<'_>| {
                    if let Response::MailboxData(MailboxDatum::Status { status, .. }) = r {
                        for attr in status {
                            match attr {
                                StatusAttribute::Messages(n) => exists = Some(*n),
                                StatusAttribute::UidValidity(v) => uidvalidity = Some(*v),
                                _ => {}
                            }
                        }
                    }
                },
            )
            .await?;
        done.ok_or_error(&self.server)?;
        match exists {
            Some(exists) => Ok(MailboxStatus {
                uidvalidity,
                exists,
            }),
            None => Err(self.protocol("STATUS answered without the number of messages")),
        }
    }

    /// CREATE; an existing mailbox (`[ALREADYEXISTS]`) counts as success.
    pub(crate) async fn create(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let done = self
            .simple(
                "creating the mailbox",
                vec![Piece::text("CREATE "), Piece::arg(arg)],
            )
            .await?;
        if done.is_ok() || done.code_is("ALREADYEXISTS") {
            tracing::info!(server = %self.server, mailbox, "created IMAP mailbox");
            Ok(())
        } else {
            Err(done.into_error(&self.server))
        }
    }

    /// STATUS, creating the mailbox when STATUS says NO.
    pub(crate) async fn ensure_mailbox(
        &mut self,
        mailbox: &str,
    ) -> Result<MailboxStatus, ImapError> {
        match self.status(mailbox).await {
            Err(ImapError::No { .. }) => {
                self.create(mailbox).await?;
                self.status(mailbox).await
            }
            other => other,
        }
    }

    /// Whether LIST shows `mailbox` (exactly; INBOX in any case) as existing.
    pub(crate) async fn mailbox_listed(&mut self, mailbox: &str) -> Result<bool, ImapError> {
        let encoded = encode::mailbox_utf7(mailbox).map_err(|w| self.invalid(w))?;
        let mut found = false;
        let done = self
            .exec(
                "listing the mailbox",
                vec![
                    Piece::text("LIST \"\" "),
                    Piece::arg(encode::string_arg(encoded.as_bytes())),
                ],
                SEARCH_BUDGET,
                &mut |r: &Response<'_>| {
                    if let Response::MailboxData(MailboxDatum::List(data)) = r {
                        let same = data.name == encoded
                            || (data.name.eq_ignore_ascii_case("INBOX")
                                && encoded.eq_ignore_ascii_case("INBOX"));
                        let absent = data.name_attributes.iter().any(|a| {
                            matches!(a, NameAttribute::Extension(x) if x.eq_ignore_ascii_case("\\NonExistent"))
                        });
                        found |= same && !absent;
                    }
                },
            )
            .await?;
        done.ok_or_error(&self.server)?;
        Ok(found)
    }

    /// The pieces of one APPEND: literal8 for a message with a NUL when the
    /// server offers BINARY, else a plain literal.
    fn append_pieces<'m>(
        &self,
        mailbox: Arg,
        flags: Option<&str>,
        date: Option<&str>,
        msg: &'m SpooledMessage,
    ) -> Vec<Piece<'m>> {
        let binary = msg.has_nul() && self.caps.binary();
        let mut pieces = vec![Piece::text("APPEND "), Piece::arg(mailbox)];
        if let Some(flags) = flags {
            pieces.push(Piece::text(format!(" {flags}")));
        }
        if let Some(date) = date {
            pieces.push(Piece::text(format!(" {date}")));
        }
        pieces.push(Piece::text(" "));
        pieces.push(Piece::Message { msg, binary });
        pieces
    }

    /// One APPEND attempt.
    async fn append_once(
        &mut self,
        mailbox: Arg,
        flags: Option<&str>,
        date: Option<&str>,
        msg: &SpooledMessage,
    ) -> Result<Done, ImapError> {
        let pieces = self.append_pieces(mailbox, flags, date, msg);
        self.exec("appending a message", pieces, COMMAND_BUDGET, &mut ignore)
            .await
    }

    /// APPEND with our own literal handling; on NO `[TRYCREATE]` the mailbox is
    /// created and the APPEND retried once.
    pub(crate) async fn append(
        &mut self,
        mailbox: &str,
        flags: &[String],
        internal_date: Option<&str>,
        msg: &SpooledMessage,
    ) -> Result<Appended, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let flags = encode::flag_list(flags).map_err(|w| self.invalid(w))?;
        let date = internal_date
            .map(encode::internal_date_arg)
            .transpose()
            .map_err(|w| self.invalid(w))?;
        let mut done = self
            .append_once(arg.clone(), flags.as_deref(), date.as_deref(), msg)
            .await?;
        if done.state == State::No && done.code_is("TRYCREATE") {
            self.create(mailbox).await?;
            done = self
                .append_once(arg, flags.as_deref(), date.as_deref(), msg)
                .await?;
        }
        if done.is_ok() {
            let (uidvalidity, uid) = match done.append_uid {
                Some((v, u)) => (Some(v), u),
                None => (None, None),
            };
            Ok(Appended { uidvalidity, uid })
        } else {
            Err(done.into_error(&self.server))
        }
    }

    /// Looks for a message by Message-ID and exact size; the UID of one that
    /// matches (the highest if several do).
    pub(crate) async fn find_message(
        &mut self,
        mailbox: &str,
        message_id: &str,
        size: u64,
    ) -> Result<Vec<u32>, ImapError> {
        if message_id.trim().is_empty() {
            return Err(self.invalid("cannot search for an empty Message-ID"));
        }
        if !self.examine(mailbox).await? {
            return Ok(Vec::new());
        }

        let mut pieces = vec![Piece::text("UID SEARCH ")];
        if !message_id.is_ascii() {
            pieces.push(Piece::text("CHARSET UTF-8 "));
        }
        pieces.push(Piece::text("HEADER Message-ID "));
        pieces.push(Piece::arg(encode::string_arg(message_id.as_bytes())));
        let uids = self.uid_search("searching by Message-ID", pieces).await?;
        if uids.is_empty() {
            return Ok(Vec::new());
        }

        self.uid_fetch_matching(
            "fetching candidate sizes",
            &uids,
            "RFC822.SIZE",
            &|a: &AttributeValue<'_>| matches!(a, AttributeValue::Rfc822Size(s) if u64::from(*s) == size),
        )
        .await
    }

    /// LOGOUT, then a clean TLS close. A server that hangs up first is fine.
    pub(crate) async fn logout(&mut self) -> Result<(), ImapError> {
        match self
            .simple("logging out", vec![Piece::text("LOGOUT")])
            .await
        {
            Ok(done) => done.ok_or_error(&self.server)?,
            Err(ImapError::Bye { .. }) => {}
            Err(e) => return Err(e),
        }
        let stream = self.client.get_mut();
        let _ = tokio::time::timeout(self.timeout, stream.shutdown()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoint, ImapAuth, ServerSettings, TlsMode};
    use async_imap::imap_proto::Response;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

    /// One step of a scripted server.
    enum Step {
        /// Expect exactly this line from the client (CRLF added here).
        Expect(&'static str),
        /// Expect exactly these bytes (a literal's content).
        ExpectBytes(Vec<u8>),
        /// Send this to the client.
        Send(&'static str),
        /// Send this many bytes of `x` (no CRLF).
        Flood(usize),
        /// Close the connection.
        Close,
    }
    use Step::*;

    /// Runs `script` as the server side; returns an error naming the first mismatch.
    fn fake(script: Vec<Step>) -> (DuplexStream, tokio::task::JoinHandle<Result<(), String>>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let handle = tokio::spawn(async move {
            let mut server = BufReader::new(server);
            for step in script {
                match step {
                    Expect(want) => {
                        let mut got = Vec::new();
                        server
                            .read_until(b'\n', &mut got)
                            .await
                            .map_err(|e| e.to_string())?;
                        let want = format!("{want}\r\n");
                        if got != want.as_bytes() {
                            return Err(format!(
                                "expected {want:?}, got {:?}",
                                String::from_utf8_lossy(&got)
                            ));
                        }
                    }
                    ExpectBytes(want) => {
                        let mut got = vec![0u8; want.len()];
                        server
                            .read_exact(&mut got)
                            .await
                            .map_err(|e| e.to_string())?;
                        if got != want {
                            return Err(format!(
                                "literal differs: {:?}",
                                String::from_utf8_lossy(&got)
                            ));
                        }
                    }
                    Send(text) => {
                        server
                            .get_mut()
                            .write_all(text.as_bytes())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Flood(n) => {
                        let junk = vec![b'x'; n];
                        // The client may give up and hang up half-way.
                        let _ = server.get_mut().write_all(&junk).await;
                    }
                    Close => return Ok(()),
                }
            }
            // Keep the connection open until the client is done.
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            Ok(())
        });
        (client, handle)
    }

    fn conn(stream: DuplexStream, caps: &[&str]) -> Conn<DuplexStream> {
        let mut c = Conn::new(stream, "imap.test:143".into(), Duration::from_secs(5));
        c.caps = Capabilities::from_names(caps);
        c
    }

    fn settings(auth: ImapAuth, password: &str) -> ServerSettings<ImapAuth> {
        ServerSettings {
            endpoint: Endpoint {
                host: "imap.test".into(),
                port: 143,
                tls: TlsMode::None,
                ca_file: None,
                tls_fingerprint: None,
                timeout: Duration::from_secs(5),
            },
            username: "alice".into(),
            password: password.into(),
            auth,
            allow_plaintext_password: true,
        }
    }

    async fn finish(c: Conn<DuplexStream>, h: tokio::task::JoinHandle<Result<(), String>>) {
        drop(c);
        h.await.expect("server task").expect("server script");
    }

    fn parse_done(line: &str) -> Done {
        match Response::parse(line.as_bytes()).expect("parses") {
            (
                _,
                Response::Done {
                    status, outcome, ..
                },
            ) => Done::from_outcome(
                &status,
                outcome.code.as_ref(),
                outcome.information.as_deref(),
            ),
            (_, other) => panic!("not a tagged response: {other:?}"),
        }
    }

    #[test]
    fn tagged_responses_are_classified() {
        let d = parse_done("A3 OK [APPENDUID 38505 3955] APPEND completed\r\n");
        assert_eq!(d.state, State::Ok);
        assert_eq!(d.code.as_deref(), Some("APPENDUID"));
        assert_eq!(d.append_uid, Some((38505, Some(3955))));
        assert_eq!(d.text, "APPEND completed");

        let d = parse_done("A4 NO [TRYCREATE] Mailbox doesn't exist: X\r\n");
        assert_eq!((d.state, d.code.as_deref()), (State::No, Some("TRYCREATE")));
        assert_eq!(d.text, "Mailbox doesn't exist: X");

        // Codes imap-proto does not know stay in its text; we split them off.
        let d = parse_done("A5 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n");
        assert_eq!(d.code.as_deref(), Some("OVERQUOTA"));
        assert_eq!(d.text, "Quota exceeded (mailbox for user is full)");
        assert!(d.clone().into_error("h:1").is_overquota());
        assert!(d.into_error("h:1").is_transient());

        let d = parse_done("A6 NO [LIMIT] Message too large\r\n");
        assert!(d.into_error("h:1").is_permanent_rejection());

        let d = parse_done("A7 BAD Error in IMAP command APPEND: 8bit data in atom\r\n");
        assert_eq!(d.state, State::Bad);
        let e = d.into_error("h:1");
        assert!(matches!(e, ImapError::Bad { .. }) && e.is_permanent_rejection());

        let d = parse_done("A8 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] Logged in\r\n");
        assert!(
            d.caps
                .as_ref()
                .is_some_and(|c| c.literal_plus() && c.uidplus())
        );

        let d = parse_done("A9 NO Mailbox is locked\r\n");
        assert_eq!((d.code, d.text.as_str()), (None, "Mailbox is locked"));

        // A UID range of one, and a real range (MULTIAPPEND) without a single UID.
        let d = parse_done("B1 OK [APPENDUID 7 9:9] done\r\n");
        assert_eq!(d.append_uid, Some((7, Some(9))));
        let d = parse_done("B2 OK [APPENDUID 7 9:11] done\r\n");
        assert_eq!(d.append_uid, Some((7, None)));
    }

    #[tokio::test]
    async fn append_with_literal_plus_sends_everything_at_once() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {6+}"),
            ExpectBytes(b"a\r\nb\r\n\r\n".to_vec()),
            Send("* 3 EXISTS\r\n* 1 RECENT\r\npf1 OK [APPENDUID 38505 3955] Append completed.\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
        let msg = SpooledMessage::from_bytes(b"a\nb\r\n");
        let got = c
            .append(
                "INBOX",
                &["\\seen".into()],
                Some("5-Jan-2024 10:00:00 +0100"),
                &msg,
            )
            .await
            .expect("append");
        assert_eq!(
            got,
            Appended {
                uidvalidity: Some(38505),
                uid: Some(3955)
            }
        );
        finish(c, h).await;
    }

    #[tokio::test]
    async fn append_without_literal_plus_waits_for_continuation() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"Bo&AO4-te\" {5}"),
            Send("+ OK\r\n"),
            ExpectBytes(b"hello\r\n".to_vec()),
            Send("pf1 OK Append completed.\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1"]);
        let msg = SpooledMessage::from_bytes(b"hello");
        let got = c.append("Boîte", &[], None, &msg).await.expect("append");
        assert_eq!(got, Appended::default());
        finish(c, h).await;
    }

    #[tokio::test]
    async fn refusal_before_the_literal_keeps_the_session_usable() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {5}"),
            Send("pf1 NO [TOOBIG] Message too big\r\n"),
            Expect("pf2 APPEND \"INBOX\" {2}"),
            Send("+ go\r\n"),
            ExpectBytes(b"ok\r\n".to_vec()),
            Send("pf2 OK done\r\n"),
        ]);
        let mut c = conn(s, &[]);
        let err = c
            .append("INBOX", &[], None, &SpooledMessage::from_bytes(b"hello"))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some("TOOBIG"));
        assert!(err.is_permanent_rejection() && !err.needs_reconnect());
        c.append("INBOX", &[], None, &SpooledMessage::from_bytes(b"ok"))
            .await
            .expect("second append");
        finish(c, h).await;
    }

    #[tokio::test]
    async fn nul_message_goes_as_literal8_when_binary_is_offered() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" ~{3+}"),
            ExpectBytes(b"a\0b\r\n".to_vec()),
            Send("pf1 OK [APPENDUID 1 2] done\r\n"),
            Expect("pf2 APPEND \"INBOX\" {3+}"),
            ExpectBytes(b"a\0b\r\n".to_vec()),
            Send("pf2 NO Invalid NUL byte\r\n"),
        ]);
        let mut c = conn(s, &["LITERAL+", "BINARY"]);
        let msg = SpooledMessage::from_bytes(b"a\0b");
        assert!(msg.has_nul());
        let got = c.append("INBOX", &[], None, &msg).await.expect("append");
        assert_eq!(got.uid, Some(2));
        // Without BINARY: a plain literal, and the NO is an ordinary rejection.
        c.caps = Capabilities::from_names(["LITERAL+"]);
        let err = c.append("INBOX", &[], None, &msg).await.expect_err("no");
        assert!(err.is_permanent_rejection());
        finish(c, h).await;
    }

    #[tokio::test]
    async fn trycreate_creates_the_mailbox_and_retries_once() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"New\" {1+}"),
            ExpectBytes(b"x\r\n".to_vec()),
            Send("pf1 NO [TRYCREATE] Mailbox doesn't exist: New\r\n"),
            Expect("pf2 CREATE \"New\""),
            Send("pf2 OK Create completed.\r\n"),
            Expect("pf3 APPEND \"New\" {1+}"),
            ExpectBytes(b"x\r\n".to_vec()),
            Send("pf3 OK [APPENDUID 5 1] Append completed.\r\n"),
        ]);
        let mut c = conn(s, &["LITERAL+"]);
        let got = c
            .append("New", &[], None, &SpooledMessage::from_bytes(b"x"))
            .await
            .expect("append");
        assert_eq!(got.uidvalidity, Some(5));
        finish(c, h).await;
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_anything_is_sent() {
        let (s, h) = fake(vec![]);
        let mut c = conn(s, &["LITERAL+"]);
        let msg = SpooledMessage::from_bytes(b"x");
        let e = c
            .append("INBOX", &["\\Recent".into()], None, &msg)
            .await
            .expect_err("flag");
        assert!(matches!(e, ImapError::InvalidArgument { .. }));
        let e = c
            .append("INBOX", &[], Some("yesterday"), &msg)
            .await
            .expect_err("date");
        assert!(matches!(e, ImapError::InvalidArgument { .. }));
        finish(c, h).await;
    }

    #[tokio::test]
    async fn bye_then_close_is_transient_and_breaks_the_session() {
        let (s, h) = fake(vec![
            Expect("pf1 STATUS \"INBOX\" (MESSAGES UIDVALIDITY)"),
            Send("* BYE Server shutting down.\r\n"),
            Close,
        ]);
        let mut c = conn(s, &[]);
        let e = c.status("INBOX").await.expect_err("bye");
        assert!(
            matches!(&e, ImapError::Bye { text, .. } if text == "Server shutting down."),
            "{e}"
        );
        assert!(e.is_transient() && e.needs_reconnect());
        let e = c.status("INBOX").await.expect_err("broken");
        assert!(matches!(e, ImapError::Protocol { .. }), "{e}");
        finish(c, h).await;
    }

    #[tokio::test]
    async fn a_reply_that_panics_the_parser_is_a_protocol_error() {
        // imap-proto 0.17 slices inside a character after a response code.
        let (s, h) = fake(vec![
            Expect("pf1 STATUS \"INBOX\" (MESSAGES UIDVALIDITY)"),
            Send("* OK [ALERT]\u{e9} hello\r\npf1 OK done\r\n"),
            Close,
        ]);
        let mut c = conn(s, &[]);
        let e = c.status("INBOX").await.expect_err("parser panic");
        assert!(
            matches!(&e, ImapError::Protocol { what, .. } if what.contains("could not handle")),
            "{e}"
        );
        let e = c.status("INBOX").await.expect_err("broken");
        assert!(matches!(e, ImapError::Protocol { .. }), "{e}");
        drop(c);
        let _ = h.await;
    }

    #[tokio::test]
    async fn oversized_greeting_is_refused() {
        let (s, h) = fake(vec![Send("* OK "), Flood(GREETING_BUDGET as usize * 2)]);
        let mut c = conn(s, &[]);
        let e = c.greeting().await.err().expect("too large");
        assert!(
            matches!(&e, ImapError::Protocol { what, .. } if what.contains("too large")),
            "{e}"
        );
        drop(c);
        h.abort();
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (s, h) = fake(vec![Expect("pf1 CAPABILITY")]);
        let mut c = Conn::new(s, "imap.test:143".into(), Duration::from_millis(100));
        let e = c.capability().await.expect_err("timeout");
        assert!(matches!(e, ImapError::Timeout { .. }), "{e}");
        assert!(e.is_transient() && e.append_outcome_unknown());
        finish(c, h).await;
    }

    #[tokio::test]
    async fn greeting_capabilities_and_preauth() {
        let (s, h) = fake(vec![Send(
            "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.\r\n",
        )]);
        let mut c = conn(s, &[]);
        let g = c.greeting().await.expect("greeting");
        assert!(!g.preauth);
        assert!(g.caps.is_some_and(|c| c.starttls() && c.login_disabled()));
        finish(c, h).await;

        let (s, h) = fake(vec![Send("* PREAUTH ready\r\n")]);
        let mut c = conn(s, &[]);
        assert!(c.greeting().await.expect("greeting").preauth);
        finish(c, h).await;

        let (s, h) = fake(vec![Send("* BYE Too many connections\r\n"), Close]);
        let mut c = conn(s, &[]);
        let e = c.greeting().await.err().expect("bye");
        assert!(matches!(e, ImapError::Bye { .. }), "{e}");
        finish(c, h).await;
    }

    #[tokio::test]
    async fn login_sends_an_unusual_password_as_a_literal_and_refreshes_caps() {
        let (s, h) = fake(vec![
            Expect("pf1 LOGIN \"alice\" {6}"),
            Send("+ OK\r\n"),
            ExpectBytes("pä\"ss\r\n".as_bytes().to_vec()),
            Send("pf1 OK Logged in\r\n"),
            Expect("pf2 CAPABILITY"),
            Send("* CAPABILITY IMAP4rev1 UIDPLUS BINARY\r\npf2 OK done\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "AUTH=PLAIN"]);
        c.authenticate(&settings(ImapAuth::Login, "pä\"ss"), false)
            .await
            .expect("login");
        assert!(c.caps.binary() && c.caps.uidplus());
        finish(c, h).await;
    }

    #[tokio::test]
    async fn auto_uses_authenticate_plain_with_or_without_sasl_ir() {
        // base64("\0alice\0secret")
        let (s, h) = fake(vec![
            Expect("pf1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA=="),
            Send("pf1 OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n"),
        ]);
        let mut c = conn(s, &["AUTH=PLAIN", "SASL-IR"]);
        c.authenticate(&settings(ImapAuth::Auto, "secret"), true)
            .await
            .expect("auth");
        assert!(c.caps.literal_plus());
        finish(c, h).await;

        let (s, h) = fake(vec![
            Expect("pf1 AUTHENTICATE PLAIN"),
            Send("+ \r\n"),
            Expect("AGFsaWNlAHNlY3JldA=="),
            Send("pf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
        ]);
        let mut c = conn(s, &["AUTH=PLAIN"]);
        let e = c
            .authenticate(&settings(ImapAuth::Auto, "secret"), true)
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, ImapError::Auth { text, .. } if text.contains("AUTHENTICATIONFAILED")),
            "{e}"
        );
        assert!(!e.is_transient());
        assert!(!e.to_string().contains("secret") && !e.to_string().contains("AGFsaWNl"));
        finish(c, h).await;
    }

    #[tokio::test]
    async fn login_refusals() {
        let (s, h) = fake(vec![]);
        let mut c = conn(s, &["LOGINDISABLED"]);
        let e = c
            .authenticate(&settings(ImapAuth::Auto, "secret"), true)
            .await
            .expect_err("disabled");
        assert!(matches!(e, ImapError::Auth { .. }), "{e}");
        let mut plain = settings(ImapAuth::Login, "secret");
        plain.allow_plaintext_password = false;
        let e = c.authenticate(&plain, false).await.expect_err("plaintext");
        assert!(matches!(e, ImapError::PlaintextRefused { .. }), "{e}");
        finish(c, h).await;

        // A temporary refusal stays transient rather than "bad password".
        let (s, h) = fake(vec![
            Expect("pf1 LOGIN \"alice\" \"secret\""),
            Send("pf1 NO [UNAVAILABLE] Temporary authentication failure.\r\n"),
        ]);
        let mut c = conn(s, &[]);
        let e = c
            .authenticate(&settings(ImapAuth::Auto, "secret"), true)
            .await
            .expect_err("unavailable");
        assert!(e.is_transient(), "{e}");
        finish(c, h).await;
    }

    #[tokio::test]
    async fn ensure_mailbox_creates_a_missing_one() {
        let (s, h) = fake(vec![
            Expect("pf1 STATUS \"Archive/POP\" (MESSAGES UIDVALIDITY)"),
            Send("pf1 NO [NONEXISTENT] Mailbox doesn't exist: Archive/POP\r\n"),
            Expect("pf2 CREATE \"Archive/POP\""),
            Send("pf2 OK Create completed.\r\n"),
            Expect("pf3 STATUS \"Archive/POP\" (MESSAGES UIDVALIDITY)"),
            Send("* STATUS Archive/POP (MESSAGES 0 UIDVALIDITY 1700000000)\r\npf3 OK done\r\n"),
        ]);
        let mut c = conn(s, &[]);
        let st = c.ensure_mailbox("Archive/POP").await.expect("ensure");
        assert_eq!(
            st,
            MailboxStatus {
                uidvalidity: Some(1_700_000_000),
                exists: 0
            }
        );
        finish(c, h).await;
    }

    #[tokio::test]
    async fn find_message_searches_then_checks_sizes() {
        let (s, h) = fake(vec![
            Expect("pf1 EXAMINE \"INBOX\""),
            Send(
                "* 3 EXISTS\r\n* OK [UIDVALIDITY 9] UIDs valid\r\npf1 OK [READ-ONLY] Examine completed\r\n",
            ),
            Expect("pf2 UID SEARCH HEADER Message-ID \"<a@b>\""),
            Send("* SEARCH 4 7\r\npf2 OK Search completed\r\n"),
            Expect("pf3 UID FETCH 7,4 (UID RFC822.SIZE)"),
            Send(
                "* 1 FETCH (UID 4 RFC822.SIZE 100)\r\n* 2 FETCH (UID 7 RFC822.SIZE 120)\r\npf3 OK done\r\n",
            ),
            Expect("pf4 EXAMINE \"INBOX\""),
            Send("pf4 OK done\r\n"),
            Expect("pf5 UID SEARCH CHARSET UTF-8 HEADER Message-ID {7}"),
            Send("+ go\r\n"),
            ExpectBytes("<ü\"@b>\r\n".as_bytes().to_vec()),
            Send("* SEARCH\r\npf5 OK done\r\n"),
            Expect("pf6 EXAMINE \"Gone\""),
            Send("pf6 NO [NONEXISTENT] Mailbox doesn't exist: Gone\r\n"),
            Expect("pf7 EXAMINE \"Gone\""),
            Send("pf7 NO Mailbox doesn't exist: Gone\r\n"),
            Expect("pf8 LIST \"\" \"Gone\""),
            Send("* LIST (\\HasNoChildren) \"/\" Gone2\r\npf8 OK done\r\n"),
            Expect("pf9 EXAMINE \"Locked\""),
            Send("pf9 NO Permission denied\r\n"),
            Expect("pf10 LIST \"\" \"Locked\""),
            Send("* LIST (\\HasNoChildren) \"/\" Locked\r\npf10 OK done\r\n"),
        ]);
        let mut c = conn(s, &[]);
        assert_eq!(
            c.find_message("INBOX", "<a@b>", 100).await.expect("find"),
            vec![4]
        );
        assert_eq!(
            c.find_message("INBOX", "<ü\"@b>", 100).await.expect("find"),
            Vec::<u32>::new()
        );
        assert_eq!(
            c.find_message("Gone", "<a@b>", 1).await.expect("find"),
            Vec::<u32>::new()
        );
        assert_eq!(
            c.find_message("Gone", "<a@b>", 1).await.expect("find"),
            Vec::<u32>::new()
        );
        let e = c
            .find_message("Locked", "<a@b>", 1)
            .await
            .expect_err("exists but refused");
        assert!(matches!(e, ImapError::No { .. }), "{e}");
        assert!(matches!(
            c.find_message("INBOX", " ", 1).await,
            Err(ImapError::InvalidArgument { .. })
        ));
        finish(c, h).await;
    }

    #[tokio::test]
    async fn unparsable_reply_is_an_error() {
        let (s, h) = fake(vec![Expect("pf1 CAPABILITY"), Send("pf1 ((( garbage\r\n")]);
        let mut c = conn(s, &[]);
        let e = c.capability().await.expect_err("garbage");
        assert!(
            matches!(e, ImapError::Protocol { .. } | ImapError::Bad { .. }),
            "{e}"
        );
        finish(c, h).await;
    }

    // ---- pipelined APPEND (super::super::pipeline) ----

    use super::super::pipeline::Pipe;

    type Results = Vec<(u32, Result<Appended, ImapError>)>;

    async fn drain(p: &mut Pipe<'_, u32, DuplexStream>) -> Results {
        let mut out = Vec::new();
        while let Some(r) = p.next_result().await.expect("next_result") {
            out.push(r);
        }
        out
    }

    fn uid(r: &Result<Appended, ImapError>) -> Option<u32> {
        r.as_ref().ok().and_then(|a| a.uid)
    }

    #[tokio::test]
    async fn pipelined_appends_are_written_ahead_and_a_no_affects_only_its_message() {
        // The server reads all three APPENDs before answering any: a client
        // that waited for a completion between them would hang here.
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" (\\Seen) {3+}"),
            ExpectBytes(b"one\r\n".to_vec()),
            Expect("pf2 APPEND \"INBOX\" (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {3+}"),
            ExpectBytes(b"two\r\n".to_vec()),
            Expect("pf3 APPEND \"INBOX\" (\\Seen) {5+}"),
            ExpectBytes(b"three\r\n".to_vec()),
            Send(
                "* 1 EXISTS\r\npf1 OK [APPENDUID 7 1] ok\r\npf2 NO [LIMIT] too big\r\n* 2 EXISTS\r\npf3 OK [APPENDUID 7 2] ok\r\n",
            ),
            // Afterwards the connection is in step for ordinary commands.
            Expect("pf4 NOOP"),
            Send("pf4 OK done\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
        let msgs = [b"one".as_slice(), b"two", b"three"].map(SpooledMessage::from_bytes);
        let results = tokio::time::timeout(Duration::from_secs(5), async {
            let mut p = Pipe::new(&mut c, "INBOX", &["\\Seen".into()], 8, 1 << 20).expect("pipe");
            assert_eq!(p.window(), 8);
            p.push(1, &msgs[0], None).await.expect("push 1");
            p.push(2, &msgs[1], Some("5-Jan-2024 10:00:00 +0100"))
                .await
                .expect("push 2");
            p.push(3, &msgs[2], None).await.expect("push 3");
            assert_eq!(p.pending(), 3);
            drain(&mut p).await
        })
        .await
        .expect("APPENDs were not pipelined");
        assert_eq!(results.len(), 3);
        assert_eq!((results[0].0, uid(&results[0].1)), (1, Some(1)));
        assert_eq!(results[1].0, 2);
        let e = results[1].1.as_ref().expect_err("NO");
        assert!(e.is_permanent_rejection(), "{e}");
        assert_eq!((results[2].0, uid(&results[2].1)), (3, Some(2)));
        c.simple("noop", vec![Piece::text("NOOP")])
            .await
            .expect("noop")
            .ok_or_error("x")
            .expect("ok");
        finish(c, h).await;
    }

    #[tokio::test]
    async fn completions_out_of_order_are_handed_back_in_push_order() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"a\r\n".to_vec()),
            Expect("pf2 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"b\r\n".to_vec()),
            Send("pf2 OK [APPENDUID 9 20] ok\r\npf1 OK [APPENDUID 9 10] ok\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
        let (a, b) = (
            SpooledMessage::from_bytes(b"a"),
            SpooledMessage::from_bytes(b"b"),
        );
        let mut p = Pipe::new(&mut c, "INBOX", &[], 4, 1 << 20).expect("pipe");
        p.push(1, &a, None).await.expect("push");
        p.push(2, &b, None).await.expect("push");
        let got: Vec<(u32, Option<u32>)> = drain(&mut p)
            .await
            .iter()
            .map(|(t, r)| (*t, uid(r)))
            .collect();
        assert_eq!(got, vec![(1, Some(10)), (2, Some(20))]);
        drop(p);
        finish(c, h).await;
    }

    #[tokio::test]
    async fn without_literal_plus_each_append_waits_for_its_continuation() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {1}"),
            Send("+ go\r\n"),
            ExpectBytes(b"a\r\n".to_vec()),
            Send("pf1 OK [APPENDUID 9 1] ok\r\n"),
            Expect("pf2 APPEND \"INBOX\" {1}"),
            Send("pf2 NO [OVERQUOTA] full\r\n"),
            Expect("pf3 APPEND \"INBOX\" {1}"),
            Send("+ go\r\n"),
            ExpectBytes(b"c\r\n".to_vec()),
            Send("pf3 OK [APPENDUID 9 2] ok\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "UIDPLUS"]);
        let msgs = [b"a".as_slice(), b"b", b"c"].map(SpooledMessage::from_bytes);
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
        assert_eq!(p.window(), 1);
        let mut results = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            while p.is_full() {
                results.push(p.next_result().await.expect("result").expect("some"));
            }
            p.push(i as u32, m, None).await.expect("push");
        }
        results.extend(drain(&mut p).await);
        assert_eq!(uid(&results[0].1), Some(1));
        assert!(results[1].1.as_ref().is_err_and(ImapError::is_overquota));
        assert_eq!(uid(&results[2].1), Some(2));
        drop(p);
        finish(c, h).await;
    }

    #[tokio::test]
    async fn literal_minus_pipelines_small_messages_and_syncs_large_ones() {
        let big = vec![b'x'; 5000];
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"a\r\n".to_vec()),
            // A synchronizing literal goes alone: the small one's completion
            // is collected before the large one's command line is written.
            Send("pf1 OK done\r\n"),
            Expect("pf2 APPEND \"INBOX\" {5000}"),
            Send("+ go\r\n"),
            ExpectBytes([big.as_slice(), b"\r\n"].concat()),
            Send("pf2 OK done\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL-"]);
        let (a, b) = (
            SpooledMessage::from_bytes(b"a"),
            SpooledMessage::from_bytes(&big),
        );
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
        p.push(1, &a, None).await.expect("push");
        p.push(2, &b, None).await.expect("push");
        let got = drain(&mut p).await;
        assert!(got.iter().all(|(_, r)| r.is_ok()) && got.len() == 2);
        drop(p);
        finish(c, h).await;
    }

    #[tokio::test]
    async fn a_full_window_refuses_a_push_and_bytes_count() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {3+}"),
            ExpectBytes(b"abc\r\n".to_vec()),
            Send("pf1 OK ok\r\n"),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
        let m = SpooledMessage::from_bytes(b"abc");
        {
            // By bytes: 3 bytes in flight reach the limit of 2.
            let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 2).expect("pipe");
            assert!(!p.is_full());
            p.push(1, &m, None).await.expect("push");
            assert!(p.is_full());
            assert!(matches!(
                p.push(2, &m, None).await,
                Err(ImapError::InvalidArgument { .. })
            ));
            assert_eq!(drain(&mut p).await.len(), 1);
            assert!(!p.is_full());
        }
        assert_eq!(
            Pipe::<u32, _>::new(&mut c, "INBOX", &[], 1000, 1)
                .expect("pipe")
                .window(),
            super::super::pipeline::MAX_WINDOW
        );
        finish(c, h).await;
    }

    #[tokio::test]
    async fn a_dropped_connection_leaves_the_unanswered_ones_unknown() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"a\r\n".to_vec()),
            Expect("pf2 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"b\r\n".to_vec()),
            Expect("pf3 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"c\r\n".to_vec()),
            Send("pf1 OK [APPENDUID 3 1] ok\r\n"),
            Close,
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
        let msgs = [b"a".as_slice(), b"b", b"c"].map(SpooledMessage::from_bytes);
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
        for (i, m) in msgs.iter().enumerate() {
            p.push(i as u32 + 1, m, None).await.expect("push");
        }
        let first = p.next_result().await.expect("first").expect("some");
        assert_eq!((first.0, uid(&first.1)), (1, Some(1)));
        let e = p.next_result().await.expect_err("connection lost");
        assert!(e.is_transient(), "{e}");
        let (known, unknown) = p.abandon();
        assert!(known.is_empty());
        assert_eq!(unknown, vec![2, 3]);
        // The session refuses to go on: its replies are out of step.
        assert!(c.simple("noop", vec![Piece::text("NOOP")]).await.is_err());
        finish(c, h).await;
    }

    #[tokio::test]
    async fn an_abandoned_pipeline_with_appends_in_flight_breaks_the_session() {
        let (s, h) = fake(vec![
            Expect("pf1 APPEND \"INBOX\" {1+}"),
            ExpectBytes(b"a\r\n".to_vec()),
        ]);
        let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
        let m = SpooledMessage::from_bytes(b"a");
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
        p.push(7, &m, None).await.expect("push");
        drop(p);
        assert!(c.simple("noop", vec![Piece::text("NOOP")]).await.is_err());
        finish(c, h).await;
    }
}
