//! Logging in: which mechanism is chosen, and how each is spoken.
//!
//! Why apart from `client`: the login is the one place that handles the
//! secret (a password or an OAuth2 access token), the choice of mechanism
//! (`auth = auto | user | apop | plain | xoauth2 | oauthbearer`) and the
//! refusal to send a secret without TLS belong together, and the SASL
//! exchange has rounds of its own.
//!
//! SASL (RFC 5034) is always sent without an initial response: `AUTH mech`,
//! the server's `+ `, then the base64 line. Microsoft 365 requires this for
//! XOAUTH2 (a one-line `AUTH XOAUTH2 <response>` fails there), and a token's
//! response exceeds the 255 octets RFC 5034 allows on the command line
//! anyway. An OAuth2 server that refuses the token sends one more `+ ` with a
//! base64 JSON error; it is acknowledged as [`crate::sasl`] says (XOAUTH2: an
//! empty line; OAUTHBEARER: `%x01`), the final `-ERR` read, and the JSON's
//! status and scope put in the error, a [`Pop3ErrorKind::TokenRefused`] that
//! the caller can tell from a refused password (it refreshes the token once
//! and tries again). The response lines are [`Command::SaslResponse`],
//! which the connection logs as `<SASL response redacted>` at every level.

use std::fmt::Write as _;

use md5::{Digest, Md5};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::{Session, enable_utf8, err_reply, expect_ok, read_ok};
use super::connection::Connection;
use super::error::{Pop3Error, Pop3ErrorKind};
use super::proto::{self, Capa, Command, StatusKind};
use crate::config::{Credential, Mechanism as _, Pop3Auth, ServerSettings};
use crate::sasl;

/// Most `+ ` challenges one SASL exchange may send; a server asking for more
/// is not speaking any mechanism we run.
const MAX_SASL_ROUNDS: usize = 4;

/// Which login is used, for logs and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    User,
    Apop,
    Plain,
    XOAuth2,
    OAuthBearer,
}

impl Login {
    fn name(self) -> &'static str {
        match self {
            Login::User => "USER/PASS",
            Login::Apop => "APOP",
            Login::Plain => "SASL PLAIN",
            Login::XOAuth2 => "SASL XOAUTH2",
            Login::OAuthBearer => "SASL OAUTHBEARER",
        }
    }

    /// The `auth` value that chose it, for messages.
    fn auth(self) -> Pop3Auth {
        match self {
            Login::User => Pop3Auth::User,
            Login::Apop => Pop3Auth::Apop,
            Login::Plain => Pop3Auth::Plain,
            Login::XOAuth2 => Pop3Auth::XOAuth2,
            Login::OAuthBearer => Pop3Auth::OAuthBearer,
        }
    }
}

fn hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(bytes.len().saturating_mul(2)));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The APOP digest: MD5 of the greeting's timestamp followed by the secret,
/// in lower-case hex (RFC 1939 section 7).
pub(super) fn apop_digest(timestamp: &[u8], secret: &str) -> Zeroizing<String> {
    let mut md5 = Md5::new();
    md5.update(timestamp);
    md5.update(secret.as_bytes());
    hex(&md5.finalize())
}

/// The login chosen for `auth` on a server with `caps`.
fn choose<S>(
    conn: &Connection<S>,
    auth: Pop3Auth,
    caps: &Capa,
    timestamp: Option<&[u8]>,
    plaintext_ok: bool,
) -> Result<Login, Pop3Error> {
    Ok(match auth {
        Pop3Auth::Auto => {
            let password = if caps.sasl("PLAIN") {
                Some(Login::Plain)
            } else if caps.user() || !caps.announced() {
                Some(Login::User)
            } else {
                None
            };
            match (password, timestamp) {
                // Where the password may not travel, a digest still may.
                (Some(_), Some(_)) if !plaintext_ok => Login::Apop,
                (Some(p), _) => p,
                (None, Some(_)) => Login::Apop,
                (None, None) => {
                    return Err(conn.error(Pop3ErrorKind::Unsupported {
                        what: "offers none of SASL PLAIN, USER/PASS or APOP".into(),
                    }));
                }
            }
        }
        Pop3Auth::User => Login::User,
        Pop3Auth::Plain => Login::Plain,
        Pop3Auth::Apop => Login::Apop,
        Pop3Auth::XOAuth2 => Login::XOAuth2,
        Pop3Auth::OAuthBearer => Login::OAuthBearer,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Greets, reads CAPA and logs in over an already open stream. STLS is
    /// not negotiated here (use [`super::connect`]); `is_tls` tells whether
    /// the stream is protected, which decides whether a secret may be sent.
    /// The unit tests' way in, over scripted streams.
    #[cfg(test)]
    pub(super) async fn establish(
        stream: S,
        is_tls: bool,
        settings: &ServerSettings<Pop3Auth>,
    ) -> Result<Session<S>, Pop3Error> {
        Session::establish_as(stream, is_tls, settings, None).await
    }

    /// [`Session::establish`] with a credential given by the caller.
    #[cfg(test)]
    pub(super) async fn establish_as(
        stream: S,
        is_tls: bool,
        settings: &ServerSettings<Pop3Auth>,
        credential: Option<Credential>,
    ) -> Result<Session<S>, Pop3Error> {
        let ep = &settings.endpoint;
        let mut conn = Connection::new(stream, ep.to_string(), ep.timeout);
        let greeting = super::client::read_greeting(&mut conn).await?;
        let caps = super::client::capa(&mut conn).await?;
        Session::login(conn, &greeting, caps, is_tls, settings, credential).await
    }

    /// Logs in with `credential`, or without one with the settings' own
    /// (resolved now, as late as possible).
    pub(super) async fn login(
        mut conn: Connection<S>,
        greeting: &[u8],
        caps: Capa,
        tls: bool,
        settings: &ServerSettings<Pop3Auth>,
        credential: Option<Credential>,
    ) -> Result<Session<S>, Pop3Error> {
        let timestamp = proto::apop_timestamp(greeting);
        let plaintext_ok = tls || settings.allow_plaintext_password;
        let login = choose(&conn, settings.auth, &caps, timestamp, plaintext_ok)?;
        if login != Login::Apop && !plaintext_ok {
            return Err(conn.error(Pop3ErrorKind::PlaintextRefused {
                mechanism: login.name(),
            }));
        }
        let utf8 = enable_utf8(&mut conn, &caps).await?;
        let user = settings.username.as_str();
        let credential = match credential {
            Some(c) => c,
            None => settings
                .credential()
                .await
                .map_err(|source| conn.error(Pop3ErrorKind::Credential { source }))?,
        };
        let secret = secret_for(&conn, login, credential)?;
        let secret = secret.expose_secret();
        tracing::debug!(server = %conn.server(), user, mechanism = login.name(), tls, "POP3 login");
        match login {
            Login::User => {
                expect_ok(&mut conn, &Command::User(user), true).await?;
                expect_ok(&mut conn, &Command::Pass(secret), true).await?;
            }
            Login::Apop => {
                let Some(ts) = timestamp else {
                    return Err(conn.error(Pop3ErrorKind::Unsupported {
                        what: "APOP needs a timestamp in the greeting and this server sent none; use auth = \"user\" or \"plain\" over TLS".into(),
                    }));
                };
                let digest = apop_digest(ts, secret);
                expect_ok(
                    &mut conn,
                    &Command::Apop {
                        user,
                        digest: &digest,
                    },
                    true,
                )
                .await?;
            }
            Login::Plain => sasl(&mut conn, sasl::Exchange::plain(user, secret)).await?,
            Login::XOAuth2 => sasl(&mut conn, sasl::Exchange::xoauth2(user, secret)).await?,
            Login::OAuthBearer => {
                let ep = &settings.endpoint;
                let exchange = sasl::Exchange::oauthbearer(user, &ep.host, ep.port, secret);
                sasl(&mut conn, exchange).await?;
            }
        }
        tracing::debug!(server = %conn.server(), mechanism = login.name(), "POP3 logged in");
        let pipelining = caps.pipelining();
        Ok(Session {
            conn,
            caps,
            tls,
            pipelining,
            utf8,
            mechanism: login.name(),
        })
    }
}

/// The secret `login` presents: a password for the password mechanisms, an
/// access token for the OAuth2 ones; the other kind is a configuration
/// error, said in words.
fn secret_for<S>(
    conn: &Connection<S>,
    login: Login,
    credential: Credential,
) -> Result<SecretString, Pop3Error> {
    let needs_bearer = login.auth().needs_bearer();
    match credential {
        Credential::Password(p) if !needs_bearer => Ok(p),
        Credential::Bearer(t) if needs_bearer => Ok(t),
        other => Err(conn.error(Pop3ErrorKind::WrongCredential {
            auth: login.auth().name(),
            got: other.kind(),
        })),
    }
}

/// One SASL exchange (RFC 5034): `AUTH mech`, then a response after each
/// `+ ` until the server's `+OK` or `-ERR`.
async fn sasl<S>(conn: &mut Connection<S>, mut exchange: sasl::Exchange) -> Result<(), Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mechanism = exchange.mechanism();
    conn.send(&Command::Auth(mechanism.name())).await?;
    let mut rounds = 0usize;
    loop {
        let st = conn.read_status("AUTH").await?;
        match st.kind {
            StatusKind::Continue => {}
            StatusKind::Ok if rounds > 0 => return Ok(()),
            StatusKind::Ok => {
                conn.poison();
                return Err(conn.error(Pop3ErrorKind::Protocol {
                    what: format!("+OK to AUTH {} before any credentials", mechanism.name()),
                }));
            }
            StatusKind::Err => {
                let e = err_reply(conn, "AUTH", st, true);
                return Err(refused_token(conn, e, &exchange));
            }
        }
        rounds = rounds.saturating_add(1);
        if rounds > MAX_SASL_ROUNDS {
            conn.poison();
            return Err(conn.error(Pop3ErrorKind::Protocol {
                what: format!(
                    "more than {MAX_SASL_ROUNDS} SASL challenges to AUTH {}",
                    mechanism.name()
                ),
            }));
        }
        match exchange.respond(&st.text) {
            sasl::Step::Respond(response) => {
                conn.send(&Command::SaslResponse(&response)).await?;
            }
            sasl::Step::Abort => {
                // RFC 5034 section 4: "*" cancels; the server answers -ERR.
                conn.send(&Command::SaslResponse("*")).await?;
                let e = match read_ok(conn, "AUTH", true).await {
                    Ok(_) => conn.error(Pop3ErrorKind::Protocol {
                        what: format!("+OK to a cancelled AUTH {}", mechanism.name()),
                    }),
                    Err(e) => e,
                };
                return Err(refused_token(conn, e, &exchange));
            }
        }
    }
}

/// An authentication refusal of an OAuth2 mechanism is a refused token,
/// with what the server's error challenge said; any other error is kept.
fn refused_token<S>(conn: &Connection<S>, e: Pop3Error, exchange: &sasl::Exchange) -> Pop3Error {
    if !e.is_auth() || !exchange.mechanism().is_oauth() {
        return e;
    }
    let Pop3ErrorKind::Auth { text } = e.kind() else {
        return e;
    };
    conn.error(Pop3ErrorKind::TokenRefused {
        mechanism: exchange.mechanism().name(),
        text: text.clone(),
        detail: exchange.server_error().map(ToString::to_string),
    })
}
