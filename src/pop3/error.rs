//! What can go wrong talking to a POP3 server, sorted by what the caller
//! should do about it.
//!
//! Why an enum of its own with these variants: the sync engine must tell a
//! failure that goes away by itself (timeout, dropped connection, [IN-USE],
//! [LOGIN-DELAY], [SYS/TEMP]: back off and retry, guarantee 5) from one that
//! needs a person (bad password, [AUTH], a refused plaintext login). Every
//! message names the server, because a daemon syncing many accounts logs
//! them side by side. No variant ever carries a secret.

use std::time::Duration;

use super::proto::RespCode;
use crate::net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    /// Connecting or the TLS handshake failed.
    #[error(transparent)]
    Net(#[from] NetError),

    #[error("POP3 server {server} did not answer within {timeout:?} while {what}")]
    Timeout {
        server: String,
        what: &'static str,
        timeout: Duration,
    },

    #[error("connection to POP3 server {server} failed while {what}: {source}")]
    Io {
        server: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("POP3 server {server} closed the connection while {what}")]
    Closed { server: String, what: &'static str },

    /// The credentials were refused: permanent until someone fixes them.
    #[error("POP3 server {server} refused the login: {text} (check username, password and auth)")]
    Auth { server: String, text: String },

    #[error("the mailbox on POP3 server {server} is in use by another session: {text}")]
    InUse { server: String, text: String },

    #[error("POP3 server {server} asks to wait before logging in again: {text}")]
    LoginDelay { server: String, text: String },

    #[error("POP3 server {server} has a temporary problem: {text}")]
    SysTemp { server: String, text: String },

    /// Any other -ERR.
    #[error("POP3 server {server} answered {command} with -ERR{}: {text}", code.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default())]
    Server {
        server: String,
        command: &'static str,
        code: Option<RespCode>,
        text: String,
    },

    /// The server sent something that is not POP3 (or too much of it).
    #[error("POP3 server {server} sent a malformed reply: {what}")]
    Protocol { server: String, what: String },

    #[error(
        "refusing to send the password for POP3 server {server} over a connection without TLS ({mechanism}); set tls = \"implicit\" or \"starttls\" for this server, or allow_plaintext_password = true to accept the risk"
    )]
    PlaintextRefused {
        server: String,
        mechanism: &'static str,
    },

    /// The password could not be read at login, though it could when the
    /// configuration was loaded (a file rotated away, a command failing).
    #[error("POP3 server {server}: {source}")]
    Credential {
        server: String,
        #[source]
        source: crate::config::CredentialError,
    },

    /// The server lacks something this configuration needs.
    #[error("POP3 server {server}: {what}")]
    Unsupported { server: String, what: String },

    #[error("message on POP3 server {server} is larger than the limit of {limit} bytes")]
    TooLarge { server: String, limit: usize },

    /// An earlier body was dropped unread or an earlier reply failed halfway:
    /// the session no longer knows where the server's replies begin.
    #[error(
        "POP3 session with {server} is out of step (a message was not read to its end, or an earlier reply failed); reconnect"
    )]
    Poisoned { server: String },
}

impl Pop3Error {
    /// True when retrying later (with a new connection) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Pop3Error::Net(e) => e.is_transient(),
            Pop3Error::Timeout { .. }
            | Pop3Error::Io { .. }
            | Pop3Error::Closed { .. }
            | Pop3Error::InUse { .. }
            | Pop3Error::LoginDelay { .. }
            | Pop3Error::SysTemp { .. }
            | Pop3Error::Credential { .. } => true,
            Pop3Error::Auth { .. }
            | Pop3Error::Server { .. }
            | Pop3Error::Protocol { .. }
            | Pop3Error::PlaintextRefused { .. }
            | Pop3Error::Unsupported { .. }
            | Pop3Error::TooLarge { .. }
            | Pop3Error::Poisoned { .. } => false,
        }
    }

    /// True when the server refused the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, Pop3Error::Auth { .. })
    }

    /// The error for a -ERR reply to `command`, classified by its response
    /// code. `auth_default` makes a -ERR without a code an [`Pop3Error::Auth`]
    /// (used for the login commands, where that is what -ERR means).
    pub(crate) fn from_err_reply(
        server: &str,
        command: &'static str,
        code: Option<RespCode>,
        text: String,
        auth_default: bool,
    ) -> Pop3Error {
        let server = server.to_owned();
        match code {
            Some(RespCode::InUse) => Pop3Error::InUse { server, text },
            Some(RespCode::LoginDelay) => Pop3Error::LoginDelay { server, text },
            Some(RespCode::SysTemp) => Pop3Error::SysTemp { server, text },
            Some(RespCode::Auth) => Pop3Error::Auth { server, text },
            None if auth_default => Pop3Error::Auth { server, text },
            code => Pop3Error::Server {
                server,
                command,
                code,
                text,
            },
        }
    }
}
