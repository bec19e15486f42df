//! The IMAP target: connect and log in, make sure the mailbox exists, APPEND
//! a spooled message exactly, and find a message again by Message-ID and size.
//!
//! Why this module exists: the sync engine needs a small API whose errors say
//! what to do next (retry, reject the message, settle an unknown APPEND), and
//! an APPEND that keeps the bytes exact (guarantee 1: literal8 for a message
//! with a NUL when the server offers BINARY), reports APPENDUID (guarantee 2:
//! the ledger records it), streams the message from its spool file instead of
//! holding it in memory (guarantee 6) and uses LITERAL+ when offered. It is
//! built on async-imap 0.12, whose response reader and parser we use, while
//! the commands are written by our `conn` module (see there why).
//!
//! # Secrets (guarantee 7)
//!
//! The password is only ever written to the socket by our own code, from
//! zeroed-on-drop buffers; nothing in this module logs a command line, a
//! password or its base64, and errors carry only (bounded) server text.
//! async-imap never sees our commands (we write them on the raw stream), so
//! its `log`-crate trace output (`async_imap::imap_stream`, which prints every
//! command it encodes, LOGIN included, and every response it decodes) only
//! ever shows server responses here. Keep it capped at `info` in the
//! subscriber anyway (`async_imap=info,imap_proto=info`): that is the
//! safeguard should anyone ever call async-imap's own `login`/`authenticate`.
//!
//! # Pipelining
//!
//! [`Session::append_pipeline`] keeps several APPENDs in flight with
//! non-synchronizing literals and hands the results back in order (see
//! `pipeline`), falling back to one at a time without LITERAL+/LITERAL-.
//! The connection has `TCP_NODELAY` (set in [`crate::net`]), so small
//! commands are not held back by Nagle's algorithm.
//!
//! # TRYCREATE
//!
//! When an APPEND is answered NO `[TRYCREATE]`, [`Session::append`] creates the
//! mailbox and retries once; a second refusal is returned as it is.
//!
//! # Timeouts and bounds
//!
//! Every read and write is bounded by the endpoint's timeout; one command may
//! read at most a few MiB of responses; server text kept in errors is cut to a
//! few hundred printable characters. Any error for which
//! [`ImapError::needs_reconnect`] is true leaves the session unusable.

mod caps;
mod conn;
mod encode;
mod error;
mod lookup;
mod pipeline;

use std::pin::Pin;
use std::time::Duration;

use tokio_io_timeout::TimeoutStream;

pub use caps::Capabilities;
pub use error::ImapError;
pub use pipeline::{AppendPipeline, AppendResult, MAX_WINDOW as MAX_APPEND_WINDOW};

use crate::config::{ImapAuth, ServerSettings};
use crate::net::{self, MaybeTls, TlsMode};
use crate::spool::SpooledMessage;
use conn::Conn;

/// What STATUS (or a CREATE and STATUS) found out about a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStatus {
    pub uidvalidity: Option<u32>,
    /// Number of messages in the mailbox.
    pub exists: u32,
}

/// The server's APPENDUID (RFC 4315), when it gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    pub uidvalidity: Option<u32>,
    pub uid: Option<u32>,
}

/// The connection after TLS: reads and writes time out by themselves.
type MainStream = Pin<Box<TimeoutStream<MaybeTls>>>;

fn with_timeouts(stream: MaybeTls, timeout: Duration) -> MainStream {
    let mut s = TimeoutStream::new(stream);
    s.set_read_timeout(Some(timeout));
    s.set_write_timeout(Some(timeout));
    Box::pin(s)
}

/// A logged-in IMAP session.
pub struct Session {
    conn: Conn<MainStream>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.conn.server)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

/// Connects (implicit TLS, STARTTLS or plain, as configured), logs in and
/// reads the capabilities of the logged-in state.
///
/// STARTTLS is mandatory when configured: a server that does not offer it,
/// refuses it or greets with PREAUTH in plain text is an error, never a
/// downgrade. A password is never sent without TLS unless
/// `allow_plaintext_password` is set. `auth = auto` uses AUTHENTICATE PLAIN
/// when offered, else LOGIN (unless the server says LOGINDISABLED).
pub async fn connect(settings: &ServerSettings<ImapAuth>) -> Result<Session, ImapError> {
    let ep = &settings.endpoint;
    let server = ep.to_string();
    let (mut conn, preauth) = match ep.tls {
        TlsMode::Starttls => {
            let tcp = net::connect_tcp(ep).await?;
            let mut plain = Conn::new(tcp, server.clone(), ep.timeout);
            let greeting = plain.greeting().await?;
            if greeting.preauth {
                return Err(ImapError::Protocol {
                    server,
                    what: "the server greets with PREAUTH on a plain connection, so STARTTLS is impossible; refusing to continue without TLS".into(),
                });
            }
            match greeting.caps {
                Some(caps) => plain.caps = caps,
                None => plain.capability().await?,
            }
            if !plain.caps.starttls() {
                return Err(ImapError::Protocol {
                    server,
                    what: "the server does not offer STARTTLS; refusing to continue without TLS (use tls = \"implicit\" if it has a TLS port)".into(),
                });
            }
            plain.starttls().await?;
            // Anything the server sent after its OK is dropped here, unread.
            let tls = net::start_tls(plain.into_inner(), ep).await?;
            let mut conn = Conn::new(with_timeouts(tls, ep.timeout), server, ep.timeout);
            conn.capability().await?;
            (conn, false)
        }
        TlsMode::Implicit | TlsMode::None => {
            let stream = net::connect(ep).await?;
            let mut conn = Conn::new(with_timeouts(stream, ep.timeout), server, ep.timeout);
            let greeting = conn.greeting().await?;
            match greeting.caps {
                Some(caps) => conn.caps = caps,
                None => conn.capability().await?,
            }
            (conn, greeting.preauth)
        }
    };
    let tls = conn.stream().get_ref().is_tls();
    if preauth {
        tracing::debug!(server = %conn.server, "IMAP server pre-authenticated the connection");
        conn.capability().await?;
    } else {
        conn.authenticate(settings, tls).await?;
    }
    Ok(Session { conn })
}

impl Session {
    /// The capabilities of the logged-in state.
    pub fn capabilities(&self) -> &Capabilities {
        &self.conn.caps
    }

    /// Whether the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.stream().get_ref().is_tls()
    }

    /// `host:port` of the server, for messages.
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    /// STATUS of `mailbox` (a UTF-8 name, sent as modified UTF-7); when the
    /// server says NO, CREATE it (an `[ALREADYEXISTS]` answer is fine) and ask
    /// again.
    pub async fn ensure_mailbox(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        self.conn.ensure_mailbox(mailbox).await
    }

    /// STATUS of `mailbox` without creating it: `None` when LIST does not
    /// show it. For `popferry check`, which must change nothing.
    pub async fn mailbox_status(
        &mut self,
        mailbox: &str,
    ) -> Result<Option<MailboxStatus>, ImapError> {
        if !self.conn.mailbox_listed(mailbox).await? {
            return Ok(None);
        }
        self.conn.status(mailbox).await.map(Some)
    }

    /// Appends `msg` to `mailbox` with `flags` (e.g. `\Seen`) and an optional
    /// INTERNALDATE ("dd-Mon-yyyy hh:mm:ss +zzzz").
    ///
    /// The message is streamed from its spool as a literal: `~{n}` (literal8)
    /// when it holds a NUL and the server offers BINARY, `{n+}` when the
    /// server offers LITERAL+ (or LITERAL- and n <= 4096), else `{n}` after
    /// the server's "+". A NO `[TRYCREATE]` creates the mailbox and retries
    /// once. On NO the error carries the response code; see
    /// [`ImapError::is_permanent_rejection`], [`ImapError::is_transient`] and
    /// [`ImapError::append_outcome_unknown`].
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: &[String],
        internal_date: Option<&str>,
        msg: &SpooledMessage,
    ) -> Result<Appended, ImapError> {
        self.conn.append(mailbox, flags, internal_date, msg).await
    }

    /// Pipelined APPENDs to `mailbox` with `flags`: up to `window` APPENDs
    /// (clamped to `1..=`[`MAX_APPEND_WINDOW`]) and about `max_bytes` of
    /// literals in flight when the server offers LITERAL+ or LITERAL-, one at
    /// a time otherwise. Results come back in push order, each with its
    /// APPENDUID; see [`AppendPipeline`]. The session is busy until every
    /// result was taken (or the pipeline abandoned after a failure).
    pub fn append_pipeline<T>(
        &mut self,
        mailbox: &str,
        flags: &[String],
        window: usize,
        max_bytes: u64,
    ) -> Result<AppendPipeline<'_, T>, ImapError> {
        pipeline::Pipe::new(&mut self.conn, mailbox, flags, window, max_bytes)
            .map(AppendPipeline::new)
    }

    /// The UIDs (highest first) of the messages in `mailbox` whose
    /// Message-ID header contains `message_id` (UID SEARCH HEADER, at most
    /// 1000 candidates) and whose RFC822.SIZE is `size`. A mailbox that
    /// certainly does not exist (`[NONEXISTENT]`, or absent from LIST after
    /// a NO) holds nothing; any other refusal is an error, never a "not
    /// found". Leaves the mailbox selected read-only (EXAMINE), which does
    /// not disturb APPEND; see [`Session::content_sha256`] to tell
    /// same-sized messages with one Message-ID apart.
    pub async fn find_message(
        &mut self,
        mailbox: &str,
        message_id: &str,
        size: u64,
    ) -> Result<Vec<u32>, ImapError> {
        self.conn.find_message(mailbox, message_id, size).await
    }

    /// The UIDs (highest first) of the messages in `mailbox` of exactly
    /// `size` bytes whose header section has the SHA-256 `header_sha256`:
    /// how a message without a Message-ID is recognised when an APPEND must
    /// be settled. Leaves the mailbox selected read-only.
    pub async fn find_by_header(
        &mut self,
        mailbox: &str,
        header_sha256: [u8; 32],
        size: u64,
    ) -> Result<Vec<u32>, ImapError> {
        self.conn.find_by_header(mailbox, header_sha256, size).await
    }

    /// SHA-256 of message `uid` of the mailbox selected by the last
    /// [`Session::find_message`] or [`Session::find_by_header`], as
    /// `BODY[]`, read in 1 MiB slices; `None` if it is not `size` bytes.
    pub async fn content_sha256(
        &mut self,
        uid: u32,
        size: u64,
    ) -> Result<Option<[u8; 32]>, ImapError> {
        self.conn.content_sha256(uid, size).await
    }

    /// LOGOUT and close the connection.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.conn.logout().await
    }
}
