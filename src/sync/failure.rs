//! Why a pass stopped, in words that name the account's server and user,
//! and whether trying again later may help.

use std::time::Duration;

use super::FailureKind;
use crate::config::{Account, ServerSettings};
use crate::imap::{ImapError, ImapErrorKind};
use crate::pop3::{Pop3Error, Pop3ErrorKind};

/// Why a pass stopped early.
pub(super) struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure that may pass by itself (back off and retry).
    pub(super) fn transient(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Transient,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// "what (user u): error", naming the server unless the error already does.
pub(super) fn describe<A>(
    side: &str,
    s: &ServerSettings<A>,
    what: &str,
    e: &dyn std::fmt::Display,
) -> String {
    let text = e.to_string();
    let endpoint = s.endpoint.to_string();
    if text.contains(side) && text.contains(&endpoint) {
        format!("{what} (user {}): {text}", s.username)
    } else {
        format!(
            "{side} server {endpoint} (user {}): {what}: {text}",
            s.username
        )
    }
}

/// How long a POP3 server asks us to stay away after [LOGIN-DELAY] when it
/// did not announce the delay (RFC 2449 suggests values around 15 minutes).
const DEFAULT_LOGIN_DELAY: Duration = Duration::from_secs(900);

pub(super) fn pop_failure(account: &Account, what: &str, e: Pop3Error) -> Failure {
    let kind = if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    };
    // A token endpoint's Retry-After (clamped by `oauth`) is a floor too.
    let retry_after = match e.kind() {
        Pop3ErrorKind::Credential { source } => source.retry_after(),
        _ => e.is_login_delay().then_some(DEFAULT_LOGIN_DELAY),
    };
    Failure {
        kind,
        message: describe("POP3", &account.source, what, &e),
        retry_after,
    }
}

pub(super) fn imap_failure(account: &Account, what: &str, e: ImapError) -> Failure {
    let kind = if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    };
    let hint = if matches!(e.kind(), ImapErrorKind::Auth { .. }) {
        " (check the username and password in [accounts.target])"
    } else {
        ""
    };
    Failure {
        message: format!(
            "{}{hint}",
            describe("IMAP", &account.target.server, what, &e)
        ),
        kind,
        retry_after: match e.kind() {
            ImapErrorKind::Credential { source } => source.retry_after(),
            _ => None,
        },
    }
}

pub(super) fn ledger_failure(e: anyhow::Error) -> Failure {
    Failure::transient(format!("ledger: {e:#}"))
}

pub(super) fn spool_failure(e: std::io::Error) -> Failure {
    Failure::transient(format!("cannot spool a message to a temporary file: {e}"))
}

/// The IMAP session is gone (a stage needed it and it was not there).
pub(super) fn session_lost() -> Failure {
    Failure::transient("IMAP session lost")
}
