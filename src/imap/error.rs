//! The one error type of the IMAP target, classified for the sync engine.
//!
//! Why its own file: the engine decides between "retry later" (guarantee 5),
//! "reject this message after bounded retries" (guarantee 4) and "this APPEND
//! may or may not have happened, look before appending again" (guarantee 2)
//! from this type alone, so the classification lives next to the variants and
//! is unit-tested. Every variant names the server (host:port) so that a log
//! line or a `status` entry is actionable on its own. No variant ever carries
//! a password: server text is sanitised and bounded before it is stored here.

use std::io;
use std::time::Duration;

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

/// Response codes that say the message itself (or its size) is the problem.
const MESSAGE_CODES: &[&str] = &["LIMIT", "TOOBIG", "PARSE", "CANNOT", "CLIENTBUG"];

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

    /// The password could not be read at login, though it could when the
    /// configuration was loaded (a file rotated away, a command failing).
    #[error("IMAP server {server}: {source}")]
    Credential {
        server: String,
        #[source]
        source: crate::config::CredentialError,
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

impl ImapError {
    /// The bracketed response code of a NO, if any.
    pub fn code(&self) -> Option<&str> {
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
            ImapError::Timeout { .. }
            | ImapError::Bye { .. }
            | ImapError::Io { .. }
            | ImapError::Credential { .. } => true,
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

    /// The server named the message itself as the problem (LIMIT, TOOBIG,
    /// PARSE, ...), as opposed to a refusal without a reason.
    pub fn is_message_problem(&self) -> bool {
        MESSAGE_CODES.iter().any(|c| self.code_is(c))
    }

    /// The session can no longer be used: reconnect before the next command.
    /// (After NO, BAD or an invalid argument the session is still fine.)
    pub fn needs_reconnect(&self) -> bool {
        !matches!(
            self,
            ImapError::No { .. } | ImapError::Bad { .. } | ImapError::InvalidArgument { .. }
        )
    }

    /// For an APPEND: the server may or may not have stored the message (the
    /// connection failed after the command started). Settle it with
    /// `Session::find_message` on a new connection before appending again.
    pub fn append_outcome_unknown(&self) -> bool {
        matches!(
            self,
            ImapError::Timeout { .. }
                | ImapError::Bye { .. }
                | ImapError::Io { .. }
                | ImapError::Protocol { .. }
                | ImapError::Spool { .. }
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
            assert!(!e.append_outcome_unknown());
        }
        assert!(no(Some("TOOBIG")).is_message_problem());
        assert!(!no(None).is_message_problem());
    }

    #[test]
    fn connection_errors_are_transient_and_leave_append_unknown() {
        let e = ImapError::Timeout {
            server: "h:1".into(),
            what: "appending",
            timeout: Duration::from_secs(1),
        };
        assert!(e.is_transient() && e.needs_reconnect() && e.append_outcome_unknown());
        let e = ImapError::Bye {
            server: "h:1".into(),
            text: "shutting down".into(),
        };
        assert!(e.is_transient() && !e.is_permanent_rejection());
        let e = ImapError::Auth {
            server: "h:1".into(),
            text: "bad".into(),
        };
        assert!(!e.is_transient() && !e.append_outcome_unknown());
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
