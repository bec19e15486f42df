//! Why no access token could be had, in words a person can act on.
//!
//! Every message names the account and the side, and none holds a token:
//! what a token endpoint says is reduced to its `error` code and a bounded
//! `error_description` (an error body may echo what was sent), with any
//! secret of the request scrubbed out of it all the same.

use std::fmt;
use std::time::Duration;

/// No access token for one side of one account.
#[derive(Debug)]
pub struct OAuthError {
    pub(super) account: String,
    pub(super) side: &'static str,
    pub(super) kind: OAuthErrorKind,
}

#[derive(Debug)]
pub enum OAuthErrorKind {
    /// The provider refused the refresh token (`invalid_grant`): expired,
    /// revoked, or rotated away. Only a new sign-in helps.
    Revoked { words: String },
    /// The provider refused the request for another reason (a wrong client
    /// id or secret, a scope not granted): the configuration must change.
    Refused { words: String },
    /// The token endpoint could not be reached or said to come back later
    /// (timeouts, 5xx, 429).
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The answer could not be used (not JSON, no token in it).
    Garbled { reason: String },
    /// A secret of the table (client secret, refresh token) or the
    /// access-token command could not be read now.
    Secret { key: &'static str, reason: String },
}

impl OAuthError {
    pub fn new(account: &str, side: &'static str, kind: OAuthErrorKind) -> OAuthError {
        OAuthError {
            account: account.to_owned(),
            side,
            kind,
        }
    }

    pub fn kind(&self) -> &OAuthErrorKind {
        &self.kind
    }

    /// True when trying again later may help.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            OAuthErrorKind::Unavailable { .. }
            | OAuthErrorKind::Garbled { .. }
            | OAuthErrorKind::Secret { .. } => true,
            OAuthErrorKind::Revoked { .. } | OAuthErrorKind::Refused { .. } => false,
        }
    }

    /// How long the token endpoint asked us to wait (clamped).
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            OAuthErrorKind::Unavailable { retry_after, .. } => retry_after,
            _ => None,
        }
    }

    /// True when the refresh token was refused and a new sign-in is needed.
    pub fn needs_login(&self) -> bool {
        matches!(self.kind, OAuthErrorKind::Revoked { .. })
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OAuthError {
            account,
            side,
            kind,
        } = self;
        write!(f, "account {account:?}, [accounts.{side}.oauth2]: {kind}")?;
        if self.needs_login() {
            write!(
                f,
                " with `popferry oauth login --account {account} --side {side}`"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}

impl fmt::Display for OAuthErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `Display for OAuthError` adds the command, which needs the
            // account.
            OAuthErrorKind::Revoked { words } => write!(
                f,
                "the token endpoint refused the refresh token ({words}); it expired, was revoked or was replaced: sign in again"
            ),
            OAuthErrorKind::Refused { words } => write!(
                f,
                "the token endpoint refused the request ({words}); check client_id, client_secret and scope"
            ),
            OAuthErrorKind::Unavailable {
                reason,
                retry_after,
            } => {
                write!(f, "no access token: {reason}")?;
                if let Some(d) = retry_after {
                    write!(f, " (retry after {})", humantime::format_duration(*d))?;
                }
                Ok(())
            }
            OAuthErrorKind::Garbled { reason } => {
                write!(f, "the token endpoint's answer is unusable: {reason}")
            }
            OAuthErrorKind::Secret { key, reason } => write!(f, "{key}: {reason}"),
        }
    }
}

/// The longest `error_description` kept.
const MAX_WORDS: usize = 300;

/// `error` and `error_description` of a token endpoint's error answer, for
/// a message: bounded, printable, and with any of `secrets` replaced.
pub(super) fn server_words(error: &str, description: Option<&str>, secrets: &[&str]) -> String {
    let mut words = bounded(error, 64);
    if let Some(d) = description
        .map(|d| bounded(d, MAX_WORDS))
        .filter(|d| !d.is_empty())
    {
        words.push_str(": ");
        words.push_str(&d);
    }
    scrub(words, secrets)
}

fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

/// Replaces every secret (of a useful length) found in `text`.
pub(super) fn scrub(mut text: String, secrets: &[&str]) -> String {
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(*s) {
            text = text.replace(*s, "[REDACTED]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_bounded_and_scrubbed() {
        let long = "x".repeat(5000);
        let w = server_words("invalid_grant", Some(&long), &[]);
        assert!(w.len() < 400, "{}", w.len());
        let w = server_words(
            "invalid_grant",
            Some("bad token rt-SECRET-1\r\nInjected: yes"),
            &["rt-SECRET-1"],
        );
        assert_eq!(w, "invalid_grant: bad token [REDACTED]  Injected: yes");
    }

    #[test]
    fn refused_tokens_are_permanent_and_outages_transient() {
        let revoked = OAuthError::new(
            "a",
            "source",
            OAuthErrorKind::Revoked {
                words: "invalid_grant".into(),
            },
        );
        assert!(!revoked.is_transient() && revoked.needs_login());
        let busy = OAuthError::new(
            "a",
            "target",
            OAuthErrorKind::Unavailable {
                reason: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(5)),
            },
        );
        assert!(busy.is_transient());
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(5)));
        let shown = busy.to_string();
        assert!(
            shown.contains("account \"a\", [accounts.target.oauth2]") && shown.contains("5s"),
            "{shown}"
        );
    }
}
