//! Status lines: `+OK text`, `-ERR [CODE] text`, and the `+ ` of a SASL
//! exchange; and the APOP timestamp a greeting may carry.
//!
//! Why apart: a status line is the one reply every command gets, and the
//! only one whose text decides what the sync engine does next (an
//! `[IN-USE]` backs off, an `[AUTH]` needs a person). Parsing it is strict
//! about the indicator ("+OKAY" is not "+OK") and lenient about the rest: a
//! malformed response code is kept as text, never an error.

use std::fmt;

use super::{ProtoError, excerpt};

/// A response code (RFC 2449 RESP-CODES, RFC 3206 SYS and AUTH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session (transient).
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently (transient).
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary system problem (transient).
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem.
    SysPerm,
    /// `[AUTH]`: the credentials are wrong (permanent).
    Auth,
    /// Any other code, as the server wrote it.
    Other(String),
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
            RespCode::Other(s) => s,
        })
    }
}

impl RespCode {
    fn parse(code: &[u8]) -> Option<RespCode> {
        // resp-code = "[" resp-level *("/" resp-level) "]", case-insensitive.
        let valid = !code.is_empty()
            && code
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/');
        if !valid {
            return None;
        }
        let upper = code.to_ascii_uppercase();
        Some(match upper.as_slice() {
            b"IN-USE" => RespCode::InUse,
            b"LOGIN-DELAY" => RespCode::LoginDelay,
            b"SYS/TEMP" => RespCode::SysTemp,
            b"SYS/PERM" => RespCode::SysPerm,
            b"AUTH" => RespCode::Auth,
            _ => RespCode::Other(String::from_utf8_lossy(&upper).into_owned()),
        })
    }
}

/// What kind of status line a server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Ok,
    Err,
    /// `+ challenge`: a SASL continuation (only valid during AUTH).
    Continue,
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    /// The response code, when the text starts with a well-formed one.
    pub code: Option<RespCode>,
    /// The text after the indicator (and after the response code), as sent.
    pub text: Vec<u8>,
}

impl Status {
    /// The text for humans (lossy for non-UTF-8 bytes).
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// Parses one status line (without its line end): `+OK text`,
/// `-ERR [CODE] text` or `+ challenge`. Indicators are matched without
/// regard to case.
pub fn parse_status(line: &[u8]) -> Result<Status, ProtoError> {
    let (kind, rest) = if let Some(rest) = strip_prefix_ci(line, b"+OK") {
        (StatusKind::Ok, rest)
    } else if let Some(rest) = strip_prefix_ci(line, b"-ERR") {
        (StatusKind::Err, rest)
    } else if line == b"+" {
        (StatusKind::Continue, &b""[..])
    } else if let Some(rest) = line.strip_prefix(b"+ ") {
        return Ok(Status {
            kind: StatusKind::Continue,
            code: None,
            text: rest.to_vec(),
        });
    } else {
        return Err(ProtoError::BadStatus(excerpt(line)));
    };
    // The indicator must stand alone: "+OKAY" is not "+OK".
    let text = match rest.first() {
        None => &b""[..],
        Some(b' ' | b'\t') => rest.get(1..).unwrap_or_default(),
        Some(_) => return Err(ProtoError::BadStatus(excerpt(line))),
    };
    let (code, text) = split_resp_code(text);
    Ok(Status {
        kind,
        code,
        text: text.to_vec(),
    })
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        line.get(prefix.len()..)
    } else {
        None
    }
}

fn split_resp_code(text: &[u8]) -> (Option<RespCode>, &[u8]) {
    if text.first() != Some(&b'[') {
        return (None, text);
    }
    let Some(close) = text.iter().position(|&b| b == b']') else {
        return (None, text);
    };
    let Some(code) = text.get(1..close).and_then(RespCode::parse) else {
        return (None, text);
    };
    let mut rest = text.get(close.saturating_add(1)..).unwrap_or_default();
    while let Some(r) = rest.strip_prefix(b" ") {
        rest = r;
    }
    (Some(code), rest)
}

/// The APOP timestamp of a greeting's text: the first `<...>` that holds an
/// `@`, angle brackets included, as RFC 1939 uses it in the digest.
pub fn apop_timestamp(greeting_text: &[u8]) -> Option<&[u8]> {
    let mut rest = greeting_text;
    loop {
        let open = rest.iter().position(|&b| b == b'<')?;
        let from_open = rest.get(open..)?;
        let close = from_open.iter().position(|&b| b == b'>')?;
        let candidate = from_open.get(..=close)?;
        let inner = candidate.get(1..close)?;
        if inner.contains(&b'@')
            && !inner.contains(&b'<')
            && inner.iter().all(|&b| (0x21..=0x7e).contains(&b))
        {
            return Some(candidate);
        }
        rest = from_open.get(1..)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = parse_status(b"+OK POP3 ready <1.2@host>").unwrap();
        assert_eq!(s.kind, StatusKind::Ok);
        assert_eq!(s.code, None);
        assert_eq!(s.text, b"POP3 ready <1.2@host>");
        assert_eq!(parse_status(b"+OK").unwrap().text, b"");
        assert_eq!(parse_status(b"+ok fine").unwrap().kind, StatusKind::Ok);
        let e = parse_status(b"-ERR no such message").unwrap();
        assert_eq!(e.kind, StatusKind::Err);
        assert_eq!(e.text_lossy(), "no such message");
        assert_eq!(parse_status(b"-ERR").unwrap().kind, StatusKind::Err);
        assert_eq!(parse_status(b"+ ").unwrap().kind, StatusKind::Continue);
        assert_eq!(parse_status(b"+").unwrap().kind, StatusKind::Continue);
        assert_eq!(parse_status(b"+ abc=").unwrap().text, b"abc=");
        for bad in [&b"OK"[..], b"", b"+OKAY", b"-ERRor", b"* OK imap", b"\xff"] {
            assert!(
                matches!(parse_status(bad), Err(ProtoError::BadStatus(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn resp_codes() {
        let code = |l: &[u8]| parse_status(l).unwrap().code;
        assert_eq!(code(b"-ERR [IN-USE] locked"), Some(RespCode::InUse));
        assert_eq!(code(b"-ERR [LOGIN-DELAY] wait"), Some(RespCode::LoginDelay));
        assert_eq!(code(b"-ERR [SYS/TEMP] later"), Some(RespCode::SysTemp));
        assert_eq!(code(b"-ERR [sys/perm] never"), Some(RespCode::SysPerm));
        assert_eq!(
            code(b"-ERR [AUTH] Authentication failed."),
            Some(RespCode::Auth)
        );
        assert_eq!(
            code(b"-ERR [FOO/BAR] x"),
            Some(RespCode::Other("FOO/BAR".into()))
        );
        assert_eq!(code(b"-ERR [not a code] x"), None);
        assert_eq!(code(b"-ERR [unclosed"), None);
        let s = parse_status(b"-ERR [AUTH] Authentication failed.").unwrap();
        assert_eq!(s.text, b"Authentication failed.");
        let s = parse_status(b"-ERR [weird code] x").unwrap();
        assert_eq!(s.text, b"[weird code] x");
    }

    #[test]
    fn apop_timestamps() {
        assert_eq!(
            apop_timestamp(b"POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some(&b"<1896.697170952@dbc.mtview.ca.us>"[..])
        );
        assert_eq!(apop_timestamp(b"Dovecot ready."), None);
        assert_eq!(apop_timestamp(b"<no-at> then <a@b>"), Some(&b"<a@b>"[..]));
        assert_eq!(apop_timestamp(b"<a@b"), None);
        assert_eq!(apop_timestamp(b"<a <x@y>"), Some(&b"<x@y>"[..]));
        assert_eq!(apop_timestamp(b"<a b@c>"), None);
    }
}
