//! The one error type of the IMAP target, classified for the sync engine.
//!
//! Why its own file: the engine decides between "retry later" (guarantee 5,
//! [`ImapError::is_transient`], with OVERQUOTA and TRYCREATE told apart) and
//! "this message was refused" (guarantee 4) from this type alone, so the
//! classification lives next to the variants and is unit-tested. (Whether an
//! APPEND's outcome is unknown is not a property of an error: the pipeline
//! says it, by handing back the tokens it has no answer for.) Every variant names the server (host:port) so that a log
//! line or a `status` entry is actionable on its own. No variant ever carries
//! a password: server text is sanitised and bounded before it is stored here.

use std::io;
use std::time::Duration;

use super::proto::reply::{Done, State};
use crate::net::NetError;

/// Response codes (RFC 5530 and friends) after which trying again later may
/// succeed without anything changing on our side.
const TRANSIENT_CODES: &[&str] = &[
    "OVERQUOTA",
    "INUSE",
    "UNAVAILABLE",
    "SERVERBUG",
    "LIMIT-TEMP",
];

/// Why an IMAP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The TCP connection or the TLS handshake failed (the error names the server).
    #[error(transparent)]
    Net(#[from] NetError),

    /// A read or write took longer than the endpoint's timeout.
    #[error("IMAP server {server}: no progress within {timeout:?} while {what}")]
    Timeout {
        server: String,
        what: &'static str,
        timeout: Duration,
    },

    /// The server refused the credentials (or offers no mechanism we may
    /// use). Permanent: fix the configuration.
    #[error(
        "IMAP server {server} refused the login: {text} (check the username, password and `auth` setting)"
    )]
    Auth { server: String, text: String },

    /// A tagged NO. `code` is the bracketed response code, upper-cased
    /// (TRYCREATE, OVERQUOTA, LIMIT, TOOBIG, NONEXISTENT, ...).
    #[error("IMAP server {server} said NO{}: {text}", fmt_code(.code))]
    No {
        server: String,
        code: Option<String>,
        text: String,
    },

    /// A tagged BAD: the server did not accept the command or its arguments.
    #[error("IMAP server {server} said BAD: {text}")]
    Bad { server: String, text: String },

    /// The server said BYE or closed the connection. Transient: reconnect.
    #[error("IMAP server {server} closed the connection: {text}")]
    Bye { server: String, text: String },

    /// The server sent something we cannot accept (unparsable, too large,
    /// out of order), or refused a mandatory step such as STARTTLS.
    #[error("IMAP server {server}: {what}")]
    Protocol { server: String, what: String },

    /// A password would have crossed a connection without TLS.
    #[error(
        "refusing to send a password to IMAP server {server} without TLS (use tls = \"implicit\" or \"starttls\", or set allow_plaintext_password = true)"
    )]
    PlaintextRefused { server: String },

    /// Reading from or writing to the connection failed.
    #[error("IMAP server {server}: connection failed: {source}")]
    Io {
        server: String,
        #[source]
        source: io::Error,
    },

    /// An argument cannot be expressed in IMAP (a bad flag, date or name).
    #[error("cannot send to IMAP server {server}: {what}")]
    InvalidArgument { server: String, what: String },

    /// The local spool could not be read while a message was being sent.
    #[error("IMAP server {server}: reading the spooled message failed: {source}")]
    Spool {
        server: String,
        #[source]
        source: io::Error,
    },
}

fn fmt_code(code: &Option<String>) -> String {
    match code {
        Some(c) => format!(" [{c}]"),
        None => String::new(),
    }
}

/// The error for a NO or BAD completion from `server`.
pub(crate) fn refusal(server: &str, done: Done) -> ImapError {
    match done.state {
        State::Bad => ImapError::Bad {
            server: server.to_owned(),
            text: done.text,
        },
        State::Ok | State::No => ImapError::No {
            server: server.to_owned(),
            code: done.code,
            text: done.text,
        },
    }
}

/// `Ok(())` for an OK completion, the refusal otherwise.
pub(crate) fn check(server: &str, done: Done) -> Result<(), ImapError> {
    if done.is_ok() {
        Ok(())
    } else {
        Err(refusal(server, done))
    }
}

impl ImapError {
    /// The bracketed response code of a NO, if any.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            ImapError::No { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn code_is(&self, wanted: &str) -> bool {
        self.code().is_some_and(|c| c.eq_ignore_ascii_case(wanted))
    }

    /// NO `[TRYCREATE]`: the mailbox does not exist and could be created.
    pub fn is_trycreate(&self) -> bool {
        self.code_is("TRYCREATE")
    }

    /// NO `[OVERQUOTA]`: the account is full; transient (back off and retry).
    pub fn is_overquota(&self) -> bool {
        self.code_is("OVERQUOTA")
    }

    /// Trying again later, without changing anything, may succeed: network
    /// trouble, timeouts, BYE, and NO with OVERQUOTA / INUSE / UNAVAILABLE /
    /// SERVERBUG.
    pub fn is_transient(&self) -> bool {
        match self {
            ImapError::Net(e) => e.is_transient(),
            ImapError::Timeout { .. } | ImapError::Bye { .. } | ImapError::Io { .. } => true,
            ImapError::No { code, .. } => code
                .as_deref()
                .is_some_and(|c| TRANSIENT_CODES.iter().any(|t| t.eq_ignore_ascii_case(c))),
            ImapError::Auth { .. }
            | ImapError::Bad { .. }
            | ImapError::Protocol { .. }
            | ImapError::PlaintextRefused { .. }
            | ImapError::InvalidArgument { .. }
            | ImapError::Spool { .. } => false,
        }
    }

    /// For an APPEND: the server refused this message (LIMIT, TOOBIG, a
    /// plain NO, a BAD for its arguments or content). Count it against the
    /// message's bounded retries (guarantee 4); other messages can go on.
    /// Not true for TRYCREATE or transient refusals.
    pub fn is_permanent_rejection(&self) -> bool {
        match self {
            ImapError::No { .. } => !self.is_transient() && !self.is_trycreate(),
            ImapError::Bad { .. } | ImapError::InvalidArgument { .. } => true,
            _ => false,
        }
    }

    /// The session can no longer be used: reconnect before the next command.
    /// (After NO, BAD or an invalid argument the session is still fine.)
    pub fn needs_reconnect(&self) -> bool {
        !matches!(
            self,
            ImapError::No { .. } | ImapError::Bad { .. } | ImapError::InvalidArgument { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(code: Option<&str>) -> ImapError {
        ImapError::No {
            server: "imap.example:993".into(),
            code: code.map(str::to_owned),
            text: "nope".into(),
        }
    }

    #[test]
    fn classification_of_no_codes() {
        assert!(no(Some("TRYCREATE")).is_trycreate());
        assert!(!no(Some("TRYCREATE")).is_permanent_rejection());
        assert!(!no(Some("TRYCREATE")).is_transient());

        assert!(no(Some("OVERQUOTA")).is_overquota());
        assert!(no(Some("OVERQUOTA")).is_transient());
        assert!(!no(Some("OVERQUOTA")).is_permanent_rejection());
        assert!(no(Some("UNAVAILABLE")).is_transient());

        for permanent in [Some("LIMIT"), Some("TOOBIG"), Some("CANNOT"), None] {
            let e = no(permanent);
            assert!(e.is_permanent_rejection(), "{permanent:?}");
            assert!(!e.is_transient(), "{permanent:?}");
            assert!(!e.needs_reconnect());
        }
    }

    #[test]
    fn connection_errors_are_transient_and_leave_append_unknown() {
        let e = ImapError::Timeout {
            server: "h:1".into(),
            what: "appending",
            timeout: Duration::from_secs(1),
        };
        assert!(e.is_transient() && e.needs_reconnect());
        let e = ImapError::Bye {
            server: "h:1".into(),
            text: "shutting down".into(),
        };
        assert!(e.is_transient() && !e.is_permanent_rejection());
        let e = ImapError::Auth {
            server: "h:1".into(),
            text: "bad".into(),
        };
        assert!(!e.is_transient() && e.needs_reconnect());
    }

    #[test]
    fn messages_name_the_server_and_the_code() {
        let s = no(Some("OVERQUOTA")).to_string();
        assert!(
            s.contains("imap.example:993") && s.contains("[OVERQUOTA]"),
            "{s}"
        );
        let s = no(None).to_string();
        assert!(s.contains("said NO: nope"), "{s}");
    }
}
