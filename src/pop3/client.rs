//! The POP3 conversation: connect, greet, CAPA, STLS, log in, then the
//! TRANSACTION commands the sync engine needs.
//!
//! Why shaped so: a [`Session`] only exists once the login succeeded
//! (typestate: [`connect`] is the only way to get one), so the sync engine
//! cannot issue RETR on an unauthenticated connection. A message arrives as
//! a streaming [`Body`] that borrows the session, so no other command can be
//! sent while it is being read, and a body dropped before its end poisons the
//! session rather than letting the next reply be read from the middle of a
//! message. The password leaves its `SecretString` only while a login
//! command (or the SASL response, built by [`crate::sasl`]) is being
//! encoded, into buffers wiped on drop, and never travels over a connection
//! without TLS unless the configuration explicitly allows it (guarantee 7).

use tokio::io::{AsyncRead, AsyncWrite};

use super::body::Body;
use super::connection::Connection;
use super::error::{Pop3Error, Pop3ErrorKind};
use super::proto::{self, BadUidl, Capa, Command, RespCode, Status, StatusKind};
use crate::config::{Credential, Pop3Auth, ServerSettings};
use crate::net::{self, MaybeTls, TlsMode};

/// Most entries a LIST or UIDL listing may have; beyond that the server is
/// taken to be hostile rather than holding that many messages.
const MAX_LISTING_ENTRIES: usize = 2_000_000;
/// Most lines a CAPA listing may have.
const MAX_CAPA_LINES: usize = 1_000;

/// Connects, negotiates TLS as configured, reads the capabilities and logs
/// in. The result is an authorized session (RFC 1939 TRANSACTION state).
///
/// With an `oauth2` table, a refused access token is refreshed once (even
/// if the cached one had time left) and the login tried again: a token
/// revoked or rotated early by the provider costs one round, not a pass.
pub async fn connect(settings: &ServerSettings<Pop3Auth>) -> Result<Session, Pop3Error> {
    match connect_as(settings, None).await {
        Err(e) if e.is_token_refused() && settings.oauth2.is_some() => {
            tracing::info!(server = %e.server(), "The OAuth2 access token was refused; refreshing it and logging in again");
            let credential = settings.fresh_credential().await.map_err(|source| {
                Pop3Error::new(
                    settings.endpoint.to_string(),
                    Pop3ErrorKind::Credential { source },
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
    settings: &ServerSettings<Pop3Auth>,
    credential: Credential,
) -> Result<Session, Pop3Error> {
    connect_as(settings, Some(credential)).await
}

async fn connect_as(
    settings: &ServerSettings<Pop3Auth>,
    credential: Option<Credential>,
) -> Result<Session, Pop3Error> {
    let ep = &settings.endpoint;
    let net_error = |e| Pop3Error::new(ep.to_string(), Pop3ErrorKind::Net(e));
    let stream = net::connect(ep).await.map_err(net_error)?;
    let mut is_tls = stream.is_tls();
    let mut conn = Connection::new(stream, ep.to_string(), ep.timeout);
    let greeting = read_greeting(&mut conn).await?;
    let mut caps = capa(&mut conn).await?;
    if ep.tls == TlsMode::Starttls {
        // Tried even when CAPA does not list STLS: the server decides, and a
        // refusal is an error, never a silent downgrade.
        conn.send(&Command::Stls).await?;
        let st = conn.read_status("STLS").await?;
        match st.kind {
            StatusKind::Ok => {}
            StatusKind::Err => {
                return Err(conn.error(Pop3ErrorKind::Unsupported {
                    what: format!(
                        "STLS refused ({}); set tls = \"implicit\" (usually port 995) if the server offers POP3S",
                        st.text_lossy()
                    ),
                }));
            }
            StatusKind::Continue => return Err(unexpected_continue(&mut conn, "STLS")),
        }
        let server = conn.server().to_owned();
        let tcp = match conn.into_inner()? {
            MaybeTls::Plain(tcp) => tcp,
            MaybeTls::Tls(_) => {
                return Err(Pop3Error::new(
                    server,
                    Pop3ErrorKind::Protocol {
                        what: "STLS on a connection that is already TLS".into(),
                    },
                ));
            }
        };
        let tls = net::start_tls(tcp, ep).await.map_err(net_error)?;
        is_tls = tls.is_tls();
        conn = Connection::new(tls, server, ep.timeout);
        // RFC 2595: capabilities may differ after TLS; forget the old ones.
        caps = capa(&mut conn).await?;
    }
    Session::login(conn, &greeting, caps, is_tls, settings, credential).await
}

/// An authorized POP3 session. `S` is the transport; it is
/// [`MaybeTls`] except in the unit tests, which script the server.
pub struct Session<S = MaybeTls> {
    pub(super) conn: Connection<S>,
    pub(super) caps: Capa,
    pub(super) tls: bool,
    /// Several commands may be written before their replies are read: the
    /// server announced PIPELINING and nobody turned it off.
    pub(super) pipelining: bool,
    /// The server took our UTF8 command (RFC 6856): it serves messages with
    /// 8-bit headers as they are, not downgraded.
    pub(super) utf8: bool,
    /// How the session logged in ("SASL XOAUTH2", "USER/PASS"...), for
    /// `check` and the logs.
    pub(super) mechanism: &'static str,
}

/// The server's answer to UIDL.
#[derive(Debug)]
pub enum UidlReply {
    /// The listing: the ids RFC 1939 allows, and apart the messages whose id
    /// it does not (each affects only its own message).
    Listed {
        ids: Vec<(u32, String)>,
        invalid: Vec<(u32, BadUidl)>,
    },
    /// A -ERR without a response code that says why (`[SYS/TEMP]`,
    /// `[IN-USE]` and the like are errors, not this): the server may lack
    /// UIDL, or may have failed this once. The caller decides which, from
    /// CAPA and what it knows of earlier sessions; `text` is the server's.
    Refused { text: String },
}

pub(super) async fn read_greeting<S>(conn: &mut Connection<S>) -> Result<Vec<u8>, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let st = conn.read_status("greeting").await?;
    match st.kind {
        StatusKind::Ok => Ok(st.text),
        StatusKind::Err => Err(err_reply(conn, "greeting", st, false)),
        StatusKind::Continue => Err(unexpected_continue(conn, "greeting")),
    }
}

/// CAPA; a server without it (-ERR) has unknown capabilities.
pub(super) async fn capa<S>(conn: &mut Connection<S>) -> Result<Capa, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    conn.send(&Command::Capa).await?;
    let st = conn.read_status("CAPA").await?;
    match st.kind {
        StatusKind::Ok => {}
        StatusKind::Err => return Ok(Capa::unknown()),
        StatusKind::Continue => return Err(unexpected_continue(conn, "CAPA")),
    }
    let lines = read_listing(conn, "CAPA", MAX_CAPA_LINES, |l| Ok(l.to_vec())).await?;
    let caps = Capa::from_lines(lines);
    tracing::debug!(server = %conn.server(), capabilities = ?caps.raw(), "POP3 capabilities");
    Ok(caps)
}

/// Reads a multi-line listing to its end, parsing each line. A line that
/// does not parse is reported after the listing has been read, so the
/// session stays in step.
pub(super) async fn read_listing<S, T>(
    conn: &mut Connection<S>,
    what: &'static str,
    max_entries: usize,
    mut parse: impl FnMut(&[u8]) -> Result<T, proto::ProtoError>,
) -> Result<Vec<T>, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut items = Vec::new();
    let mut first_error = None;
    while let Some(line) = conn.read_listing_line().await? {
        if items.len() >= max_entries {
            conn.poison();
            return Err(conn.error(Pop3ErrorKind::Protocol {
                what: format!("{what} listing longer than {max_entries} lines"),
            }));
        }
        match parse(&line) {
            Ok(item) => items.push(item),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(items),
        Some(e) => Err(conn.error(Pop3ErrorKind::Protocol {
            what: e.to_string(),
        })),
    }
}

pub(super) fn err_reply<S>(
    conn: &Connection<S>,
    command: &'static str,
    st: Status,
    auth: bool,
) -> Pop3Error {
    let text = st.text_lossy();
    Pop3Error::from_err_reply(conn.server(), command, st.code, text, auth)
}

pub(super) fn unexpected_continue<S>(conn: &mut Connection<S>, command: &'static str) -> Pop3Error {
    conn.poison();
    conn.error(Pop3ErrorKind::Protocol {
        what: format!("a SASL continuation (\"+ \") in answer to {command}"),
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// How the session logged in: "USER/PASS", "APOP", "SASL PLAIN",
    /// "SASL XOAUTH2" or "SASL OAUTHBEARER".
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// True when the server took UTF8 (RFC 6856): messages come as they are,
    /// 8-bit headers included.
    pub fn utf8(&self) -> bool {
        self.utf8
    }

    /// What the server announced (after STLS, the post-TLS announcement).
    pub fn capabilities(&self) -> &Capa {
        &self.caps
    }

    /// The least time the server wants between two logins, from its CAPA
    /// `LOGIN-DELAY` (RFC 2449), at most a day whatever it announced; `None`
    /// when it announced none (or nothing that reads as seconds).
    pub fn login_delay(&self) -> Option<std::time::Duration> {
        self.caps.login_delay()
    }

    /// True when the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    #[cfg(test)]
    pub(super) fn set_timeout_for_tests(&mut self, timeout: std::time::Duration) {
        self.conn.set_timeout(timeout);
    }

    /// True once the session is out of step and refuses every command.
    pub fn is_poisoned(&self) -> bool {
        self.conn.is_poisoned()
    }

    /// STAT: number of messages and their total size in octets.
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        let st = expect_ok(&mut self.conn, &Command::Stat, false).await?;
        proto::parse_stat(&st.text).map_err(|e| {
            self.conn.error(Pop3ErrorKind::Protocol {
                what: e.to_string(),
            })
        })
    }

    /// LIST (no argument): message number and size of every message.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.conn.send(&Command::List).await?;
        read_list_reply(&mut self.conn).await
    }

    /// UIDL (no argument): message number and unique id of every message;
    /// `None` when the server does not support UIDL (-ERR without a code
    /// that says otherwise).
    pub async fn uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        self.conn.send(&Command::Uidl).await?;
        read_uidl_reply(&mut self.conn).await
    }

    /// UIDL (no argument), keeping what [`Session::uidl`] turns into `None`
    /// or an error apart: a refusal without a known response code, and
    /// entries whose id RFC 1939 does not allow.
    pub async fn uidl_entries(&mut self) -> Result<UidlReply, Pop3Error> {
        self.conn.send(&Command::Uidl).await?;
        read_uidl_entries(&mut self.conn).await
    }

    /// RETR: the whole message, as a stream of decoded bytes.
    pub async fn retr(&mut self, msg: u32) -> Result<Body<'_, S>, Pop3Error> {
        expect_ok(&mut self.conn, &Command::Retr(msg), false).await?;
        Ok(Body::new(&mut self.conn))
    }

    /// TOP: the headers and the first `lines` lines of the body.
    pub async fn top(&mut self, msg: u32, lines: u32) -> Result<Body<'_, S>, Pop3Error> {
        expect_ok(&mut self.conn, &Command::Top(msg, lines), false).await?;
        Ok(Body::new(&mut self.conn))
    }

    /// QUIT: ends the session and commits the DELEs. Only `Ok` means they
    /// were committed; a poisoned session does not send QUIT at all (the
    /// server then rolls the deletions back).
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        let result = expect_ok(&mut self.conn, &Command::Quit, false).await;
        self.conn.shutdown().await;
        result.map(drop)
    }
}

/// Reads the reply to LIST (status and listing).
pub(super) async fn read_list_reply<S>(
    conn: &mut Connection<S>,
) -> Result<Vec<(u32, u64)>, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    read_ok(conn, "LIST", false).await?;
    read_listing(conn, "LIST", MAX_LISTING_ENTRIES, proto::parse_list_line).await
}

/// Reads the reply to UIDL; `None` when the server does not support UIDL
/// (-ERR without a code that says otherwise), an error when an id is not one
/// RFC 1939 allows.
pub(super) async fn read_uidl_reply<S>(
    conn: &mut Connection<S>,
) -> Result<Option<Vec<(u32, String)>>, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match read_uidl_entries(conn).await? {
        UidlReply::Refused { .. } => Ok(None),
        UidlReply::Listed { ids, invalid } => match invalid.first() {
            None => Ok(Some(ids)),
            Some((n, bad)) => Err(conn.error(Pop3ErrorKind::Protocol {
                what: format!("UIDL of message {n} {}: {}", bad.reason, bad.shown),
            })),
        },
    }
}

/// Reads the reply to UIDL, bad ids kept apart (see [`UidlReply`]).
pub(super) async fn read_uidl_entries<S>(conn: &mut Connection<S>) -> Result<UidlReply, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let st = conn.read_status("UIDL").await?;
    match st.kind {
        StatusKind::Ok => {}
        StatusKind::Err => {
            return match st.code {
                None | Some(RespCode::Other(_)) => {
                    let text = st.text_lossy();
                    tracing::debug!(server = %conn.server(), "UIDL refused: {text}");
                    Ok(UidlReply::Refused { text })
                }
                Some(_) => Err(err_reply(conn, "UIDL", st, false)),
            };
        }
        StatusKind::Continue => return Err(unexpected_continue(conn, "UIDL")),
    }
    let entries = read_listing(conn, "UIDL", MAX_LISTING_ENTRIES, proto::parse_uidl_entry).await?;
    let mut ids = Vec::with_capacity(entries.len());
    let mut invalid = Vec::new();
    for (n, id) in entries {
        match id {
            Ok(id) => ids.push((n, id)),
            Err(bad) => invalid.push((n, bad)),
        }
    }
    Ok(UidlReply::Listed { ids, invalid })
}

/// RFC 6856: where CAPA lists UTF8, UTF8 is sent in the AUTHORIZATION state
/// (the only state it is valid in), so before the login and after STLS;
/// without it some servers (Courier) serve every message with 8-bit headers
/// as a notice that it "cannot display" the message. Returns whether UTF-8
/// mode is on. A -ERR without a response code leaves the session as one with
/// a server that lacks UTF8 (a warning says so); one with a code (say
/// `[SYS/TEMP]`) is that error.
pub(super) async fn enable_utf8<S>(conn: &mut Connection<S>, caps: &Capa) -> Result<bool, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if !caps.utf8() {
        return Ok(false);
    }
    conn.send(&Command::Utf8).await?;
    let st = conn.read_status("UTF8").await?;
    match st.kind {
        StatusKind::Ok => {
            tracing::debug!(server = %conn.server(), "POP3 UTF-8 mode on");
            Ok(true)
        }
        StatusKind::Err => match st.code {
            None | Some(RespCode::Other(_)) => {
                tracing::warn!(
                    server = %conn.server(),
                    "The POP3 server announced UTF8 but refused it ({}); messages with 8-bit headers may arrive as the server's downgraded form",
                    st.text_lossy()
                );
                Ok(false)
            }
            Some(_) => Err(err_reply(conn, "UTF8", st, false)),
        },
        StatusKind::Continue => Err(unexpected_continue(conn, "UTF8")),
    }
}

/// Reads one status line and requires `+OK`.
pub(super) async fn read_ok<S>(
    conn: &mut Connection<S>,
    command: &'static str,
    auth: bool,
) -> Result<Status, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let st = conn.read_status(command).await?;
    match st.kind {
        StatusKind::Ok => Ok(st),
        StatusKind::Err => Err(err_reply(conn, command, st, auth)),
        StatusKind::Continue => Err(unexpected_continue(conn, command)),
    }
}

/// Sends a single-line command and requires `+OK`.
pub(super) async fn expect_ok<S>(
    conn: &mut Connection<S>,
    cmd: &Command<'_>,
    auth: bool,
) -> Result<Status, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    conn.send(cmd).await?;
    read_ok(conn, cmd.name(), auth).await
}
