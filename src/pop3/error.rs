//! What can go wrong talking to a POP3 server, sorted by what the caller
//! should do about it.
//!
//! Why this shape: the sync engine must tell a failure that goes away by
//! itself (timeout, dropped connection, [IN-USE], [LOGIN-DELAY],
//! [SYS/TEMP]: back off and retry, guarantee 5) from one that needs a person
//! (bad password, [AUTH], a refused plaintext login). Every message names
//! the server, because a daemon syncing many accounts logs them side by
//! side; so the server is a field of [`Pop3Error`] itself, once, and the
//! [`Pop3ErrorKind`] says only what happened. No kind ever carries a secret.

use std::fmt;
use std::time::Duration;

use super::proto::RespCode;
use crate::net::NetError;

/// A failure on one POP3 server: which server, and what happened.
#[derive(Debug)]
pub struct Pop3Error {
    server: String,
    kind: Pop3ErrorKind,
}

/// What happened; see [`Pop3Error`] for the server.
#[derive(Debug)]
pub enum Pop3ErrorKind {
    /// Connecting or the TLS handshake failed.
    Net(NetError),

    /// The server did not answer within the deadline.
    Timeout {
        what: &'static str,
        timeout: Duration,
    },

    /// A reply came slower than [`MIN_RATE`](super::MIN_RATE)
    /// bytes a second (after the timeout's grace): each read was within the
    /// timeout, but the reply as a whole was not.
    TooSlow {
        what: &'static str,
        bytes: u64,
        waited: Duration,
        min_rate: u64,
    },

    /// Reading or writing failed.
    Io {
        what: &'static str,
        source: std::io::Error,
    },

    /// The server closed the connection.
    Closed { what: &'static str },

    /// The credentials were refused: permanent until someone fixes them.
    Auth { text: String },

    /// The server refused an OAuth2 access token (XOAUTH2, OAUTHBEARER):
    /// a fresh token may do (the caller refreshes once and tries again).
    /// `detail` is what the server's error challenge said (status, scope),
    /// bounded.
    TokenRefused {
        mechanism: &'static str,
        text: String,
        detail: Option<String>,
    },

    /// The credential is of the wrong kind for the mechanism (a password
    /// for `auth = "xoauth2"`, a token for `auth = "plain"`).
    WrongCredential {
        auth: &'static str,
        got: &'static str,
    },

    /// `[IN-USE]`: another session holds the mailbox.
    InUse { text: String },

    /// `[LOGIN-DELAY]`: logged in again too soon.
    LoginDelay { text: String },

    /// `[SYS/TEMP]`.
    SysTemp { text: String },

    /// Any other -ERR.
    Server {
        command: &'static str,
        code: Option<RespCode>,
        text: String,
    },

    /// The server sent something that is not POP3 (or too much of it).
    Protocol { what: String },

    /// The configuration would send a password over a connection without
    /// TLS and does not allow it.
    PlaintextRefused { mechanism: &'static str },

    /// The password could not be read at login, though it could when the
    /// configuration was loaded (a file rotated away, a command failing).
    Credential {
        source: crate::config::CredentialError,
    },

    /// The server lacks something this configuration needs.
    Unsupported { what: String },

    /// A message read into memory exceeded its limit.
    TooLarge { limit: usize },

    /// An earlier body was dropped unread or an earlier reply failed halfway:
    /// the session no longer knows where the server's replies begin.
    Poisoned,
}

impl Pop3Error {
    /// A failure of `kind` on `server` (`host:port`).
    pub(crate) fn new(server: impl Into<String>, kind: Pop3ErrorKind) -> Pop3Error {
        Pop3Error {
            server: server.into(),
            kind,
        }
    }

    /// The server as `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// What happened.
    pub fn kind(&self) -> &Pop3ErrorKind {
        &self.kind
    }

    /// True when retrying later (with a new connection) may succeed.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            Pop3ErrorKind::Net(e) => e.is_transient(),
            Pop3ErrorKind::Credential { source } => source.is_transient(),
            Pop3ErrorKind::Timeout { .. }
            | Pop3ErrorKind::TooSlow { .. }
            | Pop3ErrorKind::Io { .. }
            | Pop3ErrorKind::Closed { .. }
            | Pop3ErrorKind::InUse { .. }
            | Pop3ErrorKind::LoginDelay { .. }
            | Pop3ErrorKind::SysTemp { .. } => true,
            Pop3ErrorKind::Auth { .. }
            | Pop3ErrorKind::TokenRefused { .. }
            | Pop3ErrorKind::WrongCredential { .. }
            | Pop3ErrorKind::Server { .. }
            | Pop3ErrorKind::Protocol { .. }
            | Pop3ErrorKind::PlaintextRefused { .. }
            | Pop3ErrorKind::Unsupported { .. }
            | Pop3ErrorKind::TooLarge { .. }
            | Pop3ErrorKind::Poisoned => false,
        }
    }

    /// True when the server refused the credentials (a password or a
    /// token).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.kind,
            Pop3ErrorKind::Auth { .. } | Pop3ErrorKind::TokenRefused { .. }
        )
    }

    /// True when the server refused an OAuth2 access token: the one failure
    /// a fresh token may cure.
    pub fn is_token_refused(&self) -> bool {
        matches!(self.kind, Pop3ErrorKind::TokenRefused { .. })
    }

    /// True when the server answered `[LOGIN-DELAY]`: it wants more time
    /// between two logins than it got.
    pub fn is_login_delay(&self) -> bool {
        matches!(self.kind, Pop3ErrorKind::LoginDelay { .. })
    }

    /// The error for a -ERR reply to `command`, classified by its response
    /// code. `auth_default` makes a -ERR without a code an
    /// [`Pop3ErrorKind::Auth`] (used for the login commands, where that is
    /// what -ERR means).
    pub(crate) fn from_err_reply(
        server: &str,
        command: &'static str,
        code: Option<RespCode>,
        text: String,
        auth_default: bool,
    ) -> Pop3Error {
        let kind = match code {
            Some(RespCode::InUse) => Pop3ErrorKind::InUse { text },
            Some(RespCode::LoginDelay) => Pop3ErrorKind::LoginDelay { text },
            Some(RespCode::SysTemp) => Pop3ErrorKind::SysTemp { text },
            Some(RespCode::Auth) => Pop3ErrorKind::Auth { text },
            None if auth_default => Pop3ErrorKind::Auth { text },
            code => Pop3ErrorKind::Server {
                command,
                code,
                text,
            },
        };
        Pop3Error::new(server, kind)
    }
}

impl fmt::Display for Pop3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = &self.server;
        match &self.kind {
            // The network error names the endpoint itself.
            Pop3ErrorKind::Net(e) => fmt::Display::fmt(e, f),
            Pop3ErrorKind::Timeout { what, timeout } => write!(
                f,
                "POP3 server {server} did not answer within {timeout:?} while {what}"
            ),
            Pop3ErrorKind::TooSlow {
                what,
                bytes,
                waited,
                min_rate,
            } => write!(
                f,
                "POP3 server {server} sent {bytes} bytes in {:.1}s while {what}: slower than the floor of {} KiB/s (after the timeout's grace); given up",
                waited.as_secs_f64(),
                min_rate / 1024
            ),
            Pop3ErrorKind::Io { what, source } => write!(
                f,
                "connection to POP3 server {server} failed while {what}: {source}"
            ),
            Pop3ErrorKind::Closed { what } => {
                write!(f, "POP3 server {server} closed the connection while {what}")
            }
            Pop3ErrorKind::Auth { text } => write!(
                f,
                "POP3 server {server} refused the login: {text} (check username, password and auth)"
            ),
            Pop3ErrorKind::TokenRefused {
                mechanism,
                text,
                detail,
            } => crate::sasl::write_token_refused(
                f,
                "POP3",
                server,
                mechanism,
                text,
                detail.as_deref(),
            ),
            Pop3ErrorKind::WrongCredential { auth, got } => {
                crate::sasl::write_wrong_credential(f, "POP3", server, "source", auth, got)
            }
            Pop3ErrorKind::InUse { text } => write!(
                f,
                "the mailbox on POP3 server {server} is in use by another session: {text}"
            ),
            Pop3ErrorKind::LoginDelay { text } => write!(
                f,
                "POP3 server {server} asks to wait before logging in again: {text}"
            ),
            Pop3ErrorKind::SysTemp { text } => {
                write!(f, "POP3 server {server} has a temporary problem: {text}")
            }
            Pop3ErrorKind::Server {
                command,
                code,
                text,
            } => {
                write!(f, "POP3 server {server} answered {command} with -ERR")?;
                if let Some(code) = code {
                    write!(f, " [{code}]")?;
                }
                write!(f, ": {text}")
            }
            Pop3ErrorKind::Protocol { what } => {
                write!(f, "POP3 server {server} sent a malformed reply: {what}")
            }
            Pop3ErrorKind::PlaintextRefused { mechanism } => write!(
                f,
                "refusing to send the password for POP3 server {server} over a connection without TLS ({mechanism}); set tls = \"implicit\" or \"starttls\" for this server, or allow_plaintext_password = true to accept the risk"
            ),
            Pop3ErrorKind::Credential { source } => write!(f, "POP3 server {server}: {source}"),
            Pop3ErrorKind::Unsupported { what } => write!(f, "POP3 server {server}: {what}"),
            Pop3ErrorKind::TooLarge { limit } => write!(
                f,
                "message on POP3 server {server} is larger than the limit of {limit} bytes"
            ),
            Pop3ErrorKind::Poisoned => write!(
                f,
                "POP3 session with {server} is out of step (a message was not read to its end, or an earlier reply failed); reconnect"
            ),
        }
    }
}

impl std::error::Error for Pop3Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            // As `#[error(transparent)]` did: the network error's own source.
            Pop3ErrorKind::Net(e) => std::error::Error::source(e),
            Pop3ErrorKind::Io { source, .. } => Some(source),
            Pop3ErrorKind::Credential { source } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The texts are what users (and the integration tests) read: each one
    //! is pinned here, word for word, as it was before the server moved out
    //! of the variants.

    use super::*;

    fn text(kind: Pop3ErrorKind) -> String {
        Pop3Error::new("pop.test:110", kind).to_string()
    }

    #[test]
    fn every_kind_reads_as_before() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cases = [
            (
                Pop3ErrorKind::Timeout {
                    what: "waiting for a reply",
                    timeout: Duration::from_secs(60),
                },
                "POP3 server pop.test:110 did not answer within 60s while waiting for a reply",
            ),
            (
                Pop3ErrorKind::Io {
                    what: "sending a command",
                    source: io,
                },
                "connection to POP3 server pop.test:110 failed while sending a command: reset",
            ),
            (
                Pop3ErrorKind::Closed {
                    what: "reading a message",
                },
                "POP3 server pop.test:110 closed the connection while reading a message",
            ),
            (
                Pop3ErrorKind::Auth { text: "no".into() },
                "POP3 server pop.test:110 refused the login: no (check username, password and auth)",
            ),
            (
                Pop3ErrorKind::TokenRefused {
                    mechanism: "SASL XOAUTH2",
                    text: "[AUTH] no".into(),
                    detail: Some("status 401".into()),
                },
                "POP3 server pop.test:110 refused the OAuth2 access token (SASL XOAUTH2): [AUTH] no (status 401); check the username, that the token is for this mailbox and its scope allows POP3",
            ),
            (
                Pop3ErrorKind::WrongCredential {
                    auth: "xoauth2",
                    got: "a password",
                },
                "POP3 server pop.test:110: auth = \"xoauth2\" cannot log in with a password; it needs an OAuth2 access token ([accounts.source.oauth2])",
            ),
            (
                Pop3ErrorKind::InUse { text: "x".into() },
                "the mailbox on POP3 server pop.test:110 is in use by another session: x",
            ),
            (
                Pop3ErrorKind::LoginDelay { text: "x".into() },
                "POP3 server pop.test:110 asks to wait before logging in again: x",
            ),
            (
                Pop3ErrorKind::SysTemp { text: "x".into() },
                "POP3 server pop.test:110 has a temporary problem: x",
            ),
            (
                Pop3ErrorKind::Server {
                    command: "RETR",
                    code: Some(RespCode::SysPerm),
                    text: "gone".into(),
                },
                "POP3 server pop.test:110 answered RETR with -ERR [SYS/PERM]: gone",
            ),
            (
                Pop3ErrorKind::Server {
                    command: "QUIT",
                    code: None,
                    text: "no".into(),
                },
                "POP3 server pop.test:110 answered QUIT with -ERR: no",
            ),
            (
                Pop3ErrorKind::Protocol { what: "w".into() },
                "POP3 server pop.test:110 sent a malformed reply: w",
            ),
            (
                Pop3ErrorKind::PlaintextRefused {
                    mechanism: "USER/PASS",
                },
                "refusing to send the password for POP3 server pop.test:110 over a connection without TLS (USER/PASS); set tls = \"implicit\" or \"starttls\" for this server, or allow_plaintext_password = true to accept the risk",
            ),
            (
                Pop3ErrorKind::Unsupported { what: "w".into() },
                "POP3 server pop.test:110: w",
            ),
            (
                Pop3ErrorKind::TooLarge { limit: 5 },
                "message on POP3 server pop.test:110 is larger than the limit of 5 bytes",
            ),
            (
                Pop3ErrorKind::Poisoned,
                "POP3 session with pop.test:110 is out of step (a message was not read to its end, or an earlier reply failed); reconnect",
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(text(kind), want);
        }
    }

    #[test]
    fn a_network_error_reads_as_itself_and_keeps_its_source() {
        let e = Pop3Error::new(
            "pop.test:110",
            Pop3ErrorKind::Net(NetError::Connect {
                endpoint: "pop.test:110".into(),
                source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            }),
        );
        assert_eq!(e.to_string(), "cannot connect to pop.test:110: refused");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused"));
        assert!(e.is_transient() && !e.is_auth() && !e.is_login_delay());
        assert_eq!(e.server(), "pop.test:110");
    }

    #[test]
    fn err_replies_are_classified_by_their_code() {
        let kind = |code, auth| Pop3Error::from_err_reply("s:1", "PASS", code, "t".into(), auth);
        assert!(kind(Some(RespCode::LoginDelay), false).is_login_delay());
        assert!(kind(Some(RespCode::Auth), false).is_auth());
        assert!(kind(None, true).is_auth());
        assert!(matches!(
            kind(None, false).kind(),
            Pop3ErrorKind::Server {
                command: "PASS",
                code: None,
                ..
            }
        ));
        assert!(kind(Some(RespCode::InUse), true).is_transient());
        assert!(kind(Some(RespCode::SysTemp), false).is_transient());
        assert!(!kind(Some(RespCode::SysPerm), false).is_transient());
    }
}
