//! The IMAP target: connect and log in, make sure the mailbox exists, APPEND
//! spooled messages exactly (pipelined where the server allows), and find a
//! message again by Message-ID and size.
//!
//! Why this module exists: the sync engine needs a small API whose errors say
//! what to do next (retry, reject the message, settle an unknown APPEND), and
//! an APPEND that keeps the bytes exact (guarantee 1: literal8 for a message
//! with a NUL when the server offers BINARY), reports APPENDUID (guarantee 2:
//! the ledger records it), streams the message from its spool file instead of
//! holding it in memory (guarantee 6) and uses LITERAL+ when offered.
//!
//! # Parser
//!
//! Server bytes are parsed by imap-codec 1.0 (the stable release; sans-IO,
//! fuzzed upstream, what io-imap builds on, a small tree: nom, abnf-core,
//! chrono, no TLS), behind our own framing and reduction in [`proto`]. It
//! replaced async-imap 0.12, whose imap-proto panics on hostile text (`* OK
//! [ALERT]\u{e9}`, see fuzz/README.md; we had to `catch_unwind` it), reports
//! parse failures only as error text we had to match, and buffers up to
//! 512 MiB for one response. imap-codec returns `Incomplete` or `Failed`
//! instead, and we only ever used async-imap to parse replies anyway.
//!
//! # Layout
//!
//! - [`proto`]: sans-IO: command encoding, reply decoding, the
//!   tag/continuation state machine; tested on scripted bytes and fuzzed.
//! - `conn`: the connection: socket, read budget, deadlines, broken state.
//! - `auth`: logging in (the only reader of `auth` and `password`).
//! - `mailbox`: STATUS, CREATE, LIST, EXAMINE.
//! - `pipeline`: APPENDs in flight, on [`crate::window`].
//! - `lookup`: finding a message again (SEARCH, FETCH, content digest).
//! - `caps`, `error`: the capability set and the one error type.
//!
//! # Secrets (guarantee 7)
//!
//! The password is only ever written to the socket by our own code, from
//! zeroed-on-drop buffers; nothing in this module logs a command line, a
//! password or its base64, and errors carry only (bounded) server text. No
//! third-party code sees a command of ours.
//!
//! # Pipelining
//!
//! [`Session::append_pipeline`] keeps several APPENDs in flight with
//! non-synchronizing literals and hands the results back in order (see
//! `pipeline`); without LITERAL+ (or LITERAL- for a large message) each
//! command line still goes out behind the others and only its literal waits
//! for the "+".
//! The connection has `TCP_NODELAY` (set in [`crate::net`]), so small
//! commands are not held back by Nagle's algorithm.
//!
//! # Timeouts and bounds
//!
//! Every read and write is bounded by the endpoint's timeout (one deadline
//! per socket operation, [`crate::deadline`]); one command may read at most
//! a few MiB of responses; server text kept in errors is cut to a
//! few hundred printable characters. Any error for which
//! connection error (timeout, BYE, I/O, a protocol error) leaves the session unusable.

mod auth;
mod caps;
mod conn;
mod error;
mod lookup;
mod mailbox;
mod pipeline;
pub mod proto;

#[cfg(test)]
mod tests;

pub use caps::Capabilities;
pub use error::{ImapError, ImapErrorKind};
pub use lookup::MailboxListing;
pub use pipeline::{AppendPipeline, AppendResult, MAX_WINDOW as MAX_APPEND_WINDOW};

use crate::config::{Credential, ImapAuth, ServerSettings};
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

/// The connection a session runs on (after TLS, if any).
type MainStream = MaybeTls;

fn net_error(server: &str, e: net::NetError) -> ImapError {
    ImapError::new(server, ImapErrorKind::Net(e))
}

/// A logged-in IMAP session.
pub struct Session {
    conn: Conn<MainStream>,
    /// How it logged in ("AUTHENTICATE XOAUTH2", "LOGIN", "PREAUTH"...).
    mechanism: &'static str,
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
///
/// With an `oauth2` table, a refused access token is refreshed once and
/// the login tried again (as [`crate::pop3::connect`] does).
pub async fn connect(settings: &ServerSettings<ImapAuth>) -> Result<Session, ImapError> {
    match connect_as(settings, None).await {
        Err(e) if e.is_token_refused() && settings.oauth2.is_some() => {
            tracing::info!(server = %settings.endpoint, "The OAuth2 access token was refused; refreshing it and logging in again");
            let credential = settings.fresh_credential().await.map_err(|source| {
                ImapError::new(
                    settings.endpoint.to_string(),
                    ImapErrorKind::Credential { source },
                )
            })?;
            connect_as(settings, Some(credential)).await
        }
        r => r,
    }
}

/// [`connect`] with a credential the caller resolved (an OAuth2 access
/// token it fetched, say) instead of the settings' password source.
pub async fn connect_with(
    settings: &ServerSettings<ImapAuth>,
    credential: Credential,
) -> Result<Session, ImapError> {
    connect_as(settings, Some(credential)).await
}

async fn connect_as(
    settings: &ServerSettings<ImapAuth>,
    credential: Option<Credential>,
) -> Result<Session, ImapError> {
    let ep = &settings.endpoint;
    let server = ep.to_string();
    let (mut conn, preauth) = match ep.tls {
        TlsMode::Starttls => {
            let tcp = net::connect_tcp(ep)
                .await
                .map_err(|e| net_error(&server, e))?;
            let mut plain = Conn::new(tcp, server.clone(), ep.timeout);
            let greeting = plain.greeting().await?;
            if greeting.preauth {
                return Err(ImapError::new(server, ImapErrorKind::Protocol { what: "the server greets with PREAUTH on a plain connection, so STARTTLS is impossible; refusing to continue without TLS".into() }));
            }
            match greeting.caps {
                Some(caps) => plain.caps = caps,
                None => plain.capability().await?,
            }
            if !plain.caps.starttls() {
                return Err(ImapError::new(server, ImapErrorKind::Protocol { what: "the server does not offer STARTTLS; refusing to continue without TLS (use tls = \"implicit\" if it has a TLS port)".into() }));
            }
            plain.starttls().await?;
            // Anything the server sent after its OK is dropped here, unread.
            let tls = net::start_tls(plain.into_inner(), ep)
                .await
                .map_err(|e| net_error(&server, e))?;
            let mut conn = Conn::new(tls, server, ep.timeout);
            conn.capability().await?;
            (conn, false)
        }
        TlsMode::Implicit | TlsMode::None => {
            let stream = net::connect(ep).await.map_err(|e| net_error(&server, e))?;
            let mut conn = Conn::new(stream, server, ep.timeout);
            let greeting = conn.greeting().await?;
            match greeting.caps {
                Some(caps) => conn.caps = caps,
                None => conn.capability().await?,
            }
            (conn, greeting.preauth)
        }
    };
    let tls = conn.stream().is_tls();
    let mechanism = if preauth {
        tracing::debug!(server = %conn.server, "IMAP server pre-authenticated the connection");
        conn.capability().await?;
        "PREAUTH"
    } else {
        conn.authenticate(settings, tls, credential).await?
    };
    Ok(Session { conn, mechanism })
}

impl Session {
    /// How the session logged in: "LOGIN", "AUTHENTICATE PLAIN",
    /// "AUTHENTICATE XOAUTH2", "AUTHENTICATE OAUTHBEARER", or "PREAUTH"
    /// when the server greeted it as logged in already.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The capabilities of the logged-in state.
    pub fn capabilities(&self) -> &Capabilities {
        &self.conn.caps
    }

    /// Whether the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.stream().is_tls()
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

    /// Every message of `mailbox` as (UID, RFC822.SIZE) with its
    /// UIDVALIDITY, read without changing anything (STATUS, EXAMINE, FETCH
    /// of sizes only); `None` when the mailbox does not exist. Leaves the
    /// mailbox selected read-only, so [`Session::content_sha256`] may
    /// follow. For `popferry verify`.
    pub async fn list_messages(
        &mut self,
        mailbox: &str,
    ) -> Result<Option<MailboxListing>, ImapError> {
        self.conn.list_messages(mailbox).await
    }

    /// Pipelined APPENDs to `mailbox` with `flags`: up to `window` APPENDs
    /// (clamped to `1..=`[`MAX_APPEND_WINDOW`]) and about `max_bytes` of
    /// literals in flight (each synchronizing literal waits for its "+",
    /// the command line behind the others). Results come back in push order, each with its
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

    /// The first of `candidates` (UIDs in the mailbox selected by the last
    /// lookup) whose content is exactly `msg`. A message with a NUL also
    /// matches as Dovecot stores it without BINARY, each NUL shown as 0x80
    /// under `BODY[]` (that server knowledge belongs here, not in sync).
    pub async fn find_copy(
        &mut self,
        candidates: impl IntoIterator<Item = u32>,
        msg: &SpooledMessage,
    ) -> Result<Option<u32>, ImapError> {
        let want = msg.sha256();
        let mut shown: Option<[u8; 32]> = None;
        for uid in candidates {
            let Some(got) = self.content_sha256(uid, msg.len()).await? else {
                continue;
            };
            if got == want {
                return Ok(Some(uid));
            }
            if msg.has_nul() {
                if shown.is_none() {
                    let digest = msg.sha256_nul_as_0x80().await.map_err(|source| {
                        ImapError::new(
                            self.conn.server.clone(),
                            error::ImapErrorKind::Spool { source },
                        )
                    })?;
                    shown = Some(digest);
                }
                if shown == Some(got) {
                    return Ok(Some(uid));
                }
            }
        }
        Ok(None)
    }

    /// LOGOUT and close the connection.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.conn.logout().await
    }
}
