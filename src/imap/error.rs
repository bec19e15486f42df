//! The one error type of the IMAP target, classified for the sync engine.
//!
//! Why its own file: the engine decides between "retry later" (guarantee 5,
//! [`ImapError::is_transient`], with OVERQUOTA and TRYCREATE told apart) and
//! "this message was refused" (guarantee 4) from this type alone, so the
//! classification lives next to the variants and is unit-tested. (Whether an
//! APPEND's outcome is unknown is not a property of an error: the pipeline
//! says it, by handing back the tokens it has no answer for.)
//! Every error names the server (host:port, one field for every kind) so
//! that a log line or a `status` entry is actionable on its own. No variant ever carries
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

/// Why an IMAP operation failed, and with which server (`host:port`).
///
/// The server is in one place for every kind; what happened is
/// [`ImapError::kind`]. `Display` gives the user-facing sentence (the same
/// words as before the split: tests and users grep for them).
#[derive(Debug)]
pub struct ImapError {
    server: String,
    kind: ImapErrorKind,
}

/// What went wrong (see [`ImapError`] for the server).
#[derive(Debug)]
pub enum ImapErrorKind {
    /// The TCP connection or the TLS handshake failed (the error names the
    /// server itself).
    Net(NetError),

    /// A reply or a write took longer than the endpoint's timeout.
    Timeout {
        what: &'static str,
        timeout: Duration,
    },

    /// The server refused the credentials (or offers no mechanism we may
    /// use). Permanent: fix the configuration.
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

    /// A tagged NO. `code` is the bracketed response code, upper-cased
    /// (TRYCREATE, OVERQUOTA, LIMIT, TOOBIG, NONEXISTENT, ...).
    No { code: Option<String>, text: String },

    /// A tagged BAD: the server did not accept the command or its arguments.
    Bad { text: String },

    /// The server said BYE or closed the connection. Transient: reconnect.
    Bye { text: String },

    /// The server sent something we cannot accept (unparsable, too large,
    /// out of order), or refused a mandatory step such as STARTTLS.
    Protocol { what: String },

    /// A password would have crossed a connection without TLS.
    PlaintextRefused,

    /// Reading from or writing to the connection failed.
    Io { source: io::Error },

    /// The password could not be read at login, though it could when the
    /// configuration was loaded (a file rotated away, a command failing).
    Credential {
        source: crate::config::CredentialError,
    },

    /// An argument cannot be expressed in IMAP (a bad flag, date or name).
    InvalidArgument { what: String },

    /// The local spool could not be read while a message was being sent.
    Spool { source: io::Error },
}

impl ImapError {
    pub(crate) fn new(server: impl Into<String>, kind: ImapErrorKind) -> Self {
        ImapError {
            server: server.into(),
            kind,
        }
    }

    /// `host:port` of the server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// What went wrong.
    pub fn kind(&self) -> &ImapErrorKind {
        &self.kind
    }
}

impl std::fmt::Display for ImapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = &self.server;
        match &self.kind {
            ImapErrorKind::Net(e) => write!(f, "{e}"),
            ImapErrorKind::Timeout { what, timeout } => write!(
                f,
                "IMAP server {server}: no progress within {timeout:?} while {what}"
            ),
            ImapErrorKind::Auth { text } => write!(
                f,
                "IMAP server {server} refused the login: {text} (check the username, password and `auth` setting)"
            ),
            ImapErrorKind::TokenRefused {
                mechanism,
                text,
                detail,
            } => crate::sasl::write_token_refused(
                f,
                "IMAP",
                server,
                &format!("AUTHENTICATE {mechanism}"),
                text,
                detail.as_deref(),
            ),
            ImapErrorKind::WrongCredential { auth, got } => {
                crate::sasl::write_wrong_credential(f, "IMAP", server, "target", auth, got)
            }
            ImapErrorKind::No { code, text } => {
                write!(f, "IMAP server {server} said NO{}: {text}", fmt_code(code))
            }
            ImapErrorKind::Bad { text } => write!(f, "IMAP server {server} said BAD: {text}"),
            ImapErrorKind::Bye { text } => {
                write!(f, "IMAP server {server} closed the connection: {text}")
            }
            ImapErrorKind::Protocol { what } => write!(f, "IMAP server {server}: {what}"),
            ImapErrorKind::PlaintextRefused => write!(
                f,
                "refusing to send a password to IMAP server {server} without TLS (use tls = \"implicit\" or \"starttls\", or set allow_plaintext_password = true)"
            ),
            ImapErrorKind::Io { source } => {
                write!(f, "IMAP server {server}: connection failed: {source}")
            }
            ImapErrorKind::Credential { source } => write!(f, "IMAP server {server}: {source}"),
            ImapErrorKind::InvalidArgument { what } => {
                write!(f, "cannot send to IMAP server {server}: {what}")
            }
            ImapErrorKind::Spool { source } => write!(
                f,
                "IMAP server {server}: reading the spooled message failed: {source}"
            ),
        }
    }
}

impl std::error::Error for ImapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            // Transparent, as before: the chain is the network error's.
            ImapErrorKind::Net(e) => e.source(),
            ImapErrorKind::Io { source } | ImapErrorKind::Spool { source } => Some(source),
            _ => None,
        }
    }
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
        State::Bad => ImapError::new(server, ImapErrorKind::Bad { text: done.text }),
        State::Ok | State::No => ImapError::new(
            server,
            ImapErrorKind::No {
                code: done.code,
                text: done.text,
            },
        ),
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
        match &self.kind {
            ImapErrorKind::No { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn code_is(&self, wanted: &str) -> bool {
        self.code().is_some_and(|c| c.eq_ignore_ascii_case(wanted))
    }

    /// True when the server refused the credentials (a password or a
    /// token).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.kind,
            ImapErrorKind::Auth { .. } | ImapErrorKind::TokenRefused { .. }
        )
    }

    /// True when the server refused an OAuth2 access token: the one failure
    /// a fresh token may cure.
    pub fn is_token_refused(&self) -> bool {
        matches!(self.kind, ImapErrorKind::TokenRefused { .. })
    }

    /// NO `[TRYCREATE]`: the mailbox does not exist and could be created.
    pub fn is_trycreate(&self) -> bool {
        self.code_is("TRYCREATE")
    }

    /// NO `[OVERQUOTA]`: the account is full; transient (back off and retry).
    pub fn is_overquota(&self) -> bool {
        self.code_is("OVERQUOTA")
    }

    /// The provider limits this account for now, whatever the message: a
    /// NO `[LIMIT]` or `[ALERT]` whose words say so (Gmail's `NO [ALERT]
    /// Account exceeded command or bandwidth limits`, "too many uploads", "rate
    /// limit", "try again later"). The whole account backs off; no
    /// message's attempts are counted. A `[LIMIT]` about the message itself
    /// (Cyrus: too many copies of it; "message too large") stays a refusal
    /// of that message, counted against its attempts, so that one message
    /// can never hold the account back for good (guarantee 4).
    pub fn is_rate_limited(&self) -> bool {
        const ACCOUNT_LIMIT_WORDS: [&str; 11] = [
            "account exceeded",
            "bandwidth",
            "rate limit",
            "too many connections",
            "too many uploads",
            "too many requests",
            "too many commands",
            "try again later",
            "throttl",
            "per day",
            "daily",
        ];
        let ImapErrorKind::No { code, text } = &self.kind else {
            return false;
        };
        let limit_code = code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("LIMIT") || c.eq_ignore_ascii_case("ALERT"));
        let t = text.to_ascii_lowercase();
        limit_code && ACCOUNT_LIMIT_WORDS.iter().any(|w| t.contains(w))
    }

    /// Trying again later, without changing anything, may succeed: network
    /// trouble, timeouts, BYE, and NO with OVERQUOTA / INUSE / UNAVAILABLE /
    /// SERVERBUG.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            ImapErrorKind::Net(e) => e.is_transient(),
            ImapErrorKind::Credential { source } => source.is_transient(),
            ImapErrorKind::Timeout { .. }
            | ImapErrorKind::Bye { .. }
            | ImapErrorKind::Io { .. } => true,
            ImapErrorKind::No { code, .. } => {
                self.is_rate_limited()
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.iter().any(|t| t.eq_ignore_ascii_case(c)))
            }
            ImapErrorKind::Auth { .. }
            | ImapErrorKind::TokenRefused { .. }
            | ImapErrorKind::WrongCredential { .. }
            | ImapErrorKind::Bad { .. }
            | ImapErrorKind::Protocol { .. }
            | ImapErrorKind::PlaintextRefused
            | ImapErrorKind::InvalidArgument { .. }
            | ImapErrorKind::Spool { .. } => false,
        }
    }

    /// For an APPEND: the server refused this message (TOOBIG, CANNOT, a
    /// plain NO, a BAD for its arguments or content). Count it against the
    /// message's bounded retries (guarantee 4); other messages can go on.
    /// Not true for TRYCREATE or transient refusals.
    #[cfg(test)]
    pub(crate) fn is_permanent_rejection(&self) -> bool {
        match &self.kind {
            ImapErrorKind::No { .. } => !self.is_transient() && !self.is_trycreate(),
            ImapErrorKind::Bad { .. } | ImapErrorKind::InvalidArgument { .. } => true,
            _ => false,
        }
    }

    /// The session can no longer be used: reconnect before the next command.
    /// (After NO, BAD or an invalid argument the session is still fine.)
    #[cfg(test)]
    pub(crate) fn needs_reconnect(&self) -> bool {
        !matches!(
            self.kind,
            ImapErrorKind::No { .. }
                | ImapErrorKind::Bad { .. }
                | ImapErrorKind::InvalidArgument { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(code: Option<&str>) -> ImapError {
        ImapError::new(
            "imap.example:993",
            ImapErrorKind::No {
                code: code.map(str::to_owned),
                text: "nope".into(),
            },
        )
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

        for permanent in [
            Some("LIMIT"),
            Some("TOOBIG"),
            Some("CANNOT"),
            Some("ALERT"),
            None,
        ] {
            let e = no(permanent);
            assert!(e.is_permanent_rejection(), "{permanent:?}");
            assert!(!e.is_transient(), "{permanent:?}");
            assert!(!e.needs_reconnect());
        }
    }

    #[test]
    fn provider_limits_back_the_account_off_rather_than_count_against_a_message() {
        let no = |code: &str, text: &str| {
            ImapError::new(
                "imap.gmail.com:993",
                ImapErrorKind::No {
                    code: Some(code.into()),
                    text: text.into(),
                },
            )
        };
        for e in [
            no("LIMIT", "Too many uploads today, try again later"),
            no(
                "ALERT",
                "Account exceeded command or bandwidth limits. (Failure)",
            ),
            no("limit", "Upload rate limit reached"),
        ] {
            assert!(e.is_rate_limited() && e.is_transient(), "{e}");
            assert!(!e.is_permanent_rejection(), "{e}");
        }
        for e in [
            no("ALERT", "Your password expires soon"),
            no("LIMIT", "Message too large for this server"),
            no("LIMIT", "Too many copies of this message"),
        ] {
            assert!(!e.is_rate_limited() && e.is_permanent_rejection(), "{e}");
        }
        assert!(!no("TOOBIG", "Message too big").is_rate_limited());
        assert!(!no("OVERQUOTA", "full").is_rate_limited());
    }

    #[test]
    fn connection_errors_are_transient_and_leave_append_unknown() {
        let e = ImapError::new(
            "h:1",
            ImapErrorKind::Timeout {
                what: "appending",
                timeout: Duration::from_secs(1),
            },
        );
        assert!(e.is_transient() && e.needs_reconnect());
        let e = ImapError::new(
            "h:1",
            ImapErrorKind::Bye {
                text: "shutting down".into(),
            },
        );
        assert!(e.is_transient() && !e.is_permanent_rejection());
        let e = ImapError::new("h:1", ImapErrorKind::Auth { text: "bad".into() });
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

    #[test]
    fn a_refused_token_is_an_auth_failure_of_its_own() {
        let e = ImapError::new(
            "imap.example:993",
            ImapErrorKind::TokenRefused {
                mechanism: "XOAUTH2",
                text: "[AUTHENTICATIONFAILED] no".into(),
                detail: Some("status 401".into()),
            },
        );
        assert!(e.is_auth() && e.is_token_refused() && !e.is_transient());
        assert_eq!(
            e.to_string(),
            "IMAP server imap.example:993 refused the OAuth2 access token (AUTHENTICATE XOAUTH2): [AUTHENTICATIONFAILED] no (status 401); check the username, that the token is for this mailbox and its scope allows IMAP"
        );
        let e = ImapError::new("h:1", ImapErrorKind::Auth { text: "bad".into() });
        assert!(e.is_auth() && !e.is_token_refused());
        let e = ImapError::new(
            "h:1",
            ImapErrorKind::WrongCredential {
                auth: "oauthbearer",
                got: "a password",
            },
        );
        assert!(!e.is_auth() && !e.is_transient());
        assert!(e.to_string().contains("[accounts.target.oauth2]"), "{e}");
    }
}
