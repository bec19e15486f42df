//! The POP3 wire format, with no I/O: commands out, status lines, listings
//! and multi-line data in.
//!
//! Why sans-IO: every byte a POP3 server sends is untrusted and may arrive
//! split anywhere across reads. Keeping the parsing in pure functions and a
//! small state machine ([`DotDecoder`]) lets the tests feed scripted bytes in
//! every possible split and prove the decoding exact (guarantee 1 of
//! DESIGN.md: byte for byte) without a socket, and keeps [`super::connection`]
//! down to reading, writing and deadlines.
//!
//! Shape of the rules:
//! - Status lines and listing lines are short by nature and are bounded
//!   ([`MAX_STATUS_LINE`], [`MAX_LISTING_LINE`]); exceeding a bound is an
//!   error, never an allocation.
//! - Message data (RETR, TOP) is never buffered whole and has no line bound:
//!   the decoder turns whatever bytes arrive into decoded bytes and keeps only
//!   two bits of state between calls (guarantee 6: bounded memory).
//! - Whether a reply is multi-line is decided by the command that was sent
//!   ([`Command::is_multiline`]), never guessed from the reply's text.
//! - Lines may end in CRLF or in a bare LF (liberal in what we accept); data
//!   lines are passed through unchanged, so a bare LF stays a bare LF for a
//!   later stage to turn into CRLF.

use std::fmt;

/// Longest status line (the greeting included), without its line end.
pub const MAX_STATUS_LINE: usize = 8 * 1024;
/// Longest line of a LIST, UIDL or CAPA listing, without its line end.
pub const MAX_LISTING_LINE: usize = 1024;
/// Longest unique-id RFC 1939 allows.
pub const MAX_UIDL_LEN: usize = 70;

/// What is wrong with bytes a server sent (or with a command argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("malformed status line {0:?}")]
    BadStatus(String),
    #[error("malformed {what} line {line:?}")]
    BadListing { what: &'static str, line: String },
    #[error("multi-line reply ended before its terminating \".\" line")]
    Truncated,
    #[error("command argument contains CR, LF or NUL")]
    BadArgument,
}

/// A short, printable excerpt of untrusted bytes for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let head = bytes.get(..bytes.len().min(80)).unwrap_or(bytes);
    let mut s = head.escape_ascii().to_string();
    if bytes.len() > head.len() {
        s.push('…');
    }
    s
}

/// A POP3 command. Arguments are borrowed; secrets are exposed only for the
/// time it takes to encode them, and the `Debug` form never shows them.
#[derive(Clone, Copy)]
pub enum Command<'a> {
    User(&'a str),
    Pass(&'a str),
    Apop {
        user: &'a str,
        digest: &'a str,
    },
    /// `AUTH <mechanism>` without an initial response.
    Auth(&'a str),
    /// A line answering a SASL challenge (base64; may hold credentials).
    SaslResponse(&'a str),
    Capa,
    Stls,
    Stat,
    /// `LIST` with no argument: a multi-line scan listing.
    List,
    /// `UIDL` with no argument: a multi-line unique-id listing.
    Uidl,
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    Rset,
    Noop,
    Quit,
}

impl Command<'_> {
    /// The command's keyword, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth(_) => "AUTH",
            Command::SaslResponse(_) => "AUTH (response)",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Stat => "STAT",
            Command::List => "LIST",
            Command::Uidl => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
        }
    }

    /// True when the encoded command holds a secret (or something derived
    /// from one): it is then logged by name only and its buffer wiped.
    pub fn is_sensitive(&self) -> bool {
        matches!(
            self,
            Command::Pass(_) | Command::Apop { .. } | Command::SaslResponse(_)
        )
    }

    /// True when a `+OK` to this command is followed by multi-line data.
    /// Decided by what was sent, never by the reply's text.
    pub fn is_multiline(&self) -> bool {
        matches!(
            self,
            Command::Capa | Command::List | Command::Uidl | Command::Retr(_) | Command::Top(..)
        )
    }

    /// Appends the command and its CRLF to `out`. Arguments holding CR, LF
    /// or NUL are refused: they would smuggle a second command.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        fn arg(out: &mut Vec<u8>, a: &str) -> Result<(), ProtoError> {
            if a.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(ProtoError::BadArgument);
            }
            out.push(b' ');
            out.extend_from_slice(a.as_bytes());
            Ok(())
        }
        let num = |out: &mut Vec<u8>, n: u32| {
            out.push(b' ');
            out.extend_from_slice(n.to_string().as_bytes());
        };
        match self {
            Command::User(u) => {
                out.extend_from_slice(b"USER");
                arg(out, u)?;
            }
            Command::Pass(p) => {
                out.extend_from_slice(b"PASS");
                arg(out, p)?;
            }
            Command::Apop { user, digest } => {
                out.extend_from_slice(b"APOP");
                arg(out, user)?;
                arg(out, digest)?;
            }
            Command::Auth(mech) => {
                out.extend_from_slice(b"AUTH");
                arg(out, mech)?;
            }
            Command::SaslResponse(r) => {
                if r.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Err(ProtoError::BadArgument);
                }
                out.extend_from_slice(r.as_bytes());
            }
            Command::Capa => out.extend_from_slice(b"CAPA"),
            Command::Stls => out.extend_from_slice(b"STLS"),
            Command::Stat => out.extend_from_slice(b"STAT"),
            Command::List => out.extend_from_slice(b"LIST"),
            Command::Uidl => out.extend_from_slice(b"UIDL"),
            Command::Retr(n) => {
                out.extend_from_slice(b"RETR");
                num(out, *n);
            }
            Command::Top(n, lines) => {
                out.extend_from_slice(b"TOP");
                num(out, *n);
                num(out, *lines);
            }
            Command::Dele(n) => {
                out.extend_from_slice(b"DELE");
                num(out, *n);
            }
            Command::Rset => out.extend_from_slice(b"RSET"),
            Command::Noop => out.extend_from_slice(b"NOOP"),
            Command::Quit => out.extend_from_slice(b"QUIT"),
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(u) => write!(f, "USER {u}"),
            Command::Pass(_) => f.write_str("PASS <redacted>"),
            Command::Apop { user, .. } => write!(f, "APOP {user} <redacted>"),
            Command::Auth(m) => write!(f, "AUTH {m}"),
            Command::SaslResponse(_) => f.write_str("<SASL response redacted>"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Top(n, l) => write!(f, "TOP {n} {l}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            other => f.write_str(other.name()),
        }
    }
}

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
    pub fn is_ok(&self) -> bool {
        self.kind == StatusKind::Ok
    }

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

/// Looks for a complete line at the start of `data`. Returns the length of
/// the line including its line end (LF or CRLF), `None` when more bytes are
/// needed, or an error once `max` bytes of content have gone by without a
/// line end — so a hostile server cannot make us buffer more than `max + 2`.
pub fn find_line(data: &[u8], max: usize) -> Result<Option<usize>, ProtoError> {
    let window_len = data.len().min(max.saturating_add(2));
    let window = data.get(..window_len).unwrap_or(data);
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let content = strip_line_end(window.get(..lf).unwrap_or_default());
            if content.len() > max {
                return Err(ProtoError::LineTooLong { max });
            }
            Ok(Some(lf.saturating_add(1)))
        }
        None if window_len >= max.saturating_add(2) => Err(ProtoError::LineTooLong { max }),
        None => Ok(None),
    }
}

/// Removes a trailing CR (the LF is already gone) or a trailing CRLF / LF.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A line of a multi-line listing, after dot-unstuffing: `None` for the
/// terminating "." line.
pub fn listing_line(line: &[u8]) -> Option<&[u8]> {
    if line == b"." {
        return None;
    }
    Some(line.strip_prefix(b".").unwrap_or(line))
}

fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|f| !f.is_empty())
}

/// Parses a decimal number of ASCII digits only (no sign), without overflow.
fn parse_num(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_msg_num(digits: &[u8]) -> Option<u32> {
    let n = u32::try_from(parse_num(digits)?).ok()?;
    (n >= 1).then_some(n)
}

/// Parses a UIDL listing line: `n unique-id`, the id 1 to 70 characters in
/// 0x21..=0x7E.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "UIDL",
        line: excerpt(line),
    };
    let mut f = fields(line);
    let n = f.next().and_then(parse_msg_num).ok_or_else(bad)?;
    let uid = f.next().ok_or_else(bad)?;
    if f.next().is_some()
        || uid.len() > MAX_UIDL_LEN
        || !uid.iter().all(|&b| (0x21..=0x7e).contains(&b))
    {
        return Err(bad());
    }
    let uid = std::str::from_utf8(uid).map_err(|_| bad())?;
    Ok((n, uid.to_owned()))
}

/// Parses a LIST scan listing line: `n size` (anything after is ignored, as
/// RFC 1939 allows).
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "LIST",
        line: excerpt(line),
    };
    let mut f = fields(line);
    let n = f.next().and_then(parse_msg_num).ok_or_else(bad)?;
    let size = f.next().and_then(parse_num).ok_or_else(bad)?;
    Ok((n, size))
}

/// Parses the text of a `+OK` to STAT: `count size` (anything after is
/// ignored).
pub fn parse_stat(text: &[u8]) -> Result<(u32, u64), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "STAT",
        line: excerpt(text),
    };
    let mut f = fields(text);
    let count = f
        .next()
        .and_then(parse_num)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    let size = f.next().and_then(parse_num).ok_or_else(bad)?;
    Ok((count, size))
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

/// What a server announced in its CAPA listing (RFC 2449).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    lines: Vec<String>,
    /// False when the server answered CAPA with -ERR (an RFC 1939-only
    /// server): nothing is known, which is not the same as nothing offered.
    announced: bool,
}

impl Capabilities {
    /// Capabilities from the lines of a CAPA listing (already unstuffed).
    pub fn from_lines<I, L>(lines: I) -> Capabilities
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        Capabilities {
            lines: lines
                .into_iter()
                .map(|l| String::from_utf8_lossy(l.as_ref()).trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            announced: true,
        }
    }

    /// A server that does not support CAPA.
    pub fn unknown() -> Capabilities {
        Capabilities::default()
    }

    /// True when the server answered CAPA at all.
    pub fn announced(&self) -> bool {
        self.announced
    }

    /// The lines as the server sent them.
    pub fn raw(&self) -> &[String] {
        &self.lines
    }

    fn line(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let mut it = l.splitn(2, [' ', '\t']);
            let tag = it.next()?;
            tag.eq_ignore_ascii_case(name)
                .then(|| it.next().unwrap_or("").trim())
        })
    }

    /// True when a capability of this name (case-insensitive) was listed.
    pub fn has(&self, name: &str) -> bool {
        self.line(name).is_some()
    }

    /// The arguments of a capability (e.g. `SASL PLAIN LOGIN` → `["PLAIN", "LOGIN"]`).
    pub fn args(&self, name: &str) -> Vec<&str> {
        self.line(name)
            .map(|a| a.split_ascii_whitespace().collect())
            .unwrap_or_default()
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }
    pub fn uidl(&self) -> bool {
        self.has("UIDL")
    }
    pub fn top(&self) -> bool {
        self.has("TOP")
    }
    pub fn resp_codes(&self) -> bool {
        self.has("RESP-CODES")
    }
    pub fn stls(&self) -> bool {
        self.has("STLS")
    }
    pub fn user(&self) -> bool {
        self.has("USER")
    }

    /// The SASL mechanisms offered, upper-cased.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.args("SASL")
            .into_iter()
            .map(str::to_ascii_uppercase)
            .collect()
    }

    pub fn sasl(&self, mechanism: &str) -> bool {
        self.args("SASL")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// Where the decoder stands in the multi-line data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    /// At the start of a line.
    LineStart,
    /// Inside a line (its leading "." already handled).
    InLine,
    /// Read a "." at the start of a line.
    Dot,
    /// Read ".\r" at the start of a line.
    DotCr,
    /// Read the terminating line; nothing more belongs to this reply.
    Done,
}

/// A streaming decoder for multi-line data (RFC 1939 section 3).
///
/// Feed it bytes as they arrive; it writes the message bytes (dot-unstuffed,
/// line ends untouched, the last data line's line end kept) to `out` and
/// stops consuming right after the terminating line, leaving whatever
/// follows (a pipelined reply) to the caller. Its state is a single enum, so
/// memory does not depend on line or message length.
#[derive(Debug, Clone)]
pub struct DotDecoder {
    state: DotState,
}

impl Default for DotDecoder {
    fn default() -> Self {
        DotDecoder::new()
    }
}

impl DotDecoder {
    pub fn new() -> DotDecoder {
        DotDecoder {
            state: DotState::LineStart,
        }
    }

    /// True once the terminating "." line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == DotState::Done
    }

    /// Decodes as much of `input` as belongs to this reply, appending the
    /// data to `out`, and returns how many bytes of `input` were consumed
    /// (all of them unless the terminator was reached). `out` grows by at
    /// most `input.len() + 1` bytes (the one held-back CR of a ".\r" line
    /// start may come out with the next input).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0usize;
        while let Some(&b) = input.get(i) {
            match self.state {
                DotState::Done => return i,
                DotState::LineStart => {
                    i = i.saturating_add(1);
                    if b == b'.' {
                        self.state = DotState::Dot;
                    } else {
                        out.push(b);
                        if b != b'\n' {
                            self.state = DotState::InLine;
                        }
                    }
                }
                DotState::InLine => {
                    // Copy up to and including the next LF in one go.
                    let rest = input.get(i..).unwrap_or_default();
                    match rest.iter().position(|&c| c == b'\n') {
                        Some(lf) => {
                            let n = lf.saturating_add(1);
                            out.extend_from_slice(rest.get(..n).unwrap_or_default());
                            i = i.saturating_add(n);
                            self.state = DotState::LineStart;
                        }
                        None => {
                            out.extend_from_slice(rest);
                            i = input.len();
                        }
                    }
                }
                DotState::Dot => {
                    i = i.saturating_add(1);
                    match b {
                        b'\n' => self.state = DotState::Done,
                        b'\r' => self.state = DotState::DotCr,
                        _ => {
                            // A stuffed line: the leading "." is dropped.
                            out.push(b);
                            self.state = DotState::InLine;
                        }
                    }
                }
                DotState::DotCr => {
                    if b == b'\n' {
                        i = i.saturating_add(1);
                        self.state = DotState::Done;
                    } else {
                        // ".\r" followed by something else: a stuffed line
                        // whose content starts with CR. Keep the CR and
                        // look at this byte again inside the line.
                        out.push(b'\r');
                        self.state = DotState::InLine;
                    }
                }
            }
        }
        i
    }

    /// Call at end of input: an error unless the terminator was seen.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(ProtoError::Truncated)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Decodes `input` fed in chunks of `chunk` bytes; returns the data, the
    /// number of bytes consumed and whether the decoder finished.
    fn decode_chunked(input: &[u8], chunk: usize) -> (Vec<u8>, usize, bool) {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(chunk) {
            let before = out.len();
            let n = d.decode(piece, &mut out);
            assert!(out.len() - before <= piece.len() + 1);
            consumed += n;
            if n < piece.len() {
                assert!(d.is_done());
                break;
            }
        }
        (out, consumed, d.is_done())
    }

    fn decode_all(input: &[u8]) -> Vec<u8> {
        let (out, _, done) = decode_chunked(input, input.len().max(1));
        assert!(done, "not terminated: {input:?}");
        out
    }

    #[test]
    fn empty_message() {
        assert_eq!(decode_all(b".\r\n"), b"");
        assert_eq!(decode_all(b".\n"), b"");
    }

    #[test]
    fn final_crlf_kept() {
        assert_eq!(decode_all(b"a\r\nb\r\n.\r\n"), b"a\r\nb\r\n");
    }

    #[test]
    fn dot_stuffing_undone() {
        // A line that is only "." is sent as "..".
        assert_eq!(decode_all(b"..\r\n.\r\n"), b".\r\n");
        assert_eq!(decode_all(b"..x\r\n.\r\n"), b".x\r\n");
        assert_eq!(decode_all(b"...\r\n.\r\n"), b"..\r\n");
        assert_eq!(
            decode_all(b"a\r\n..\r\n..\r\nb\r\n.\r\n"),
            b"a\r\n.\r\n.\r\nb\r\n"
        );
        // A dot inside a line is data.
        assert_eq!(decode_all(b"a.b\r\n.x.\r\n.\r\n"), b"a.b\r\nx.\r\n");
        // ".\r" followed by other bytes is not a terminator.
        assert_eq!(decode_all(b".\rx\r\n.\r\n"), b"\rx\r\n");
    }

    #[test]
    fn empty_lines_and_non_utf8() {
        let body = b"\r\n\r\n\xff\xfe\x00\x80 caf\xe9\r\n\r\n.\r\n";
        assert_eq!(
            decode_all(body),
            b"\r\n\r\n\xff\xfe\x00\x80 caf\xe9\r\n\r\n"
        );
    }

    #[test]
    fn bare_lf_server() {
        assert_eq!(decode_all(b"data\n.\n"), b"data\n");
        assert_eq!(decode_all(b"a\n..b\n\nc\n.\r\n"), b"a\n.b\n\nc\n");
        assert_eq!(decode_all(b"mixed\r\nlf\n.\n"), b"mixed\r\nlf\n");
    }

    #[test]
    fn stops_at_terminator_leaving_the_rest() {
        let input = b"x\r\n.\r\n+OK next\r\n";
        let (out, consumed, done) = decode_chunked(input, input.len());
        assert!(done);
        assert_eq!(out, b"x\r\n");
        assert_eq!(&input[consumed..], b"+OK next\r\n");
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let reply: &[u8] = b"Subject: x\r\n\r\n..\r\n...dots\r\n.\rz\r\nlf only\n\n..\n\xff\xc3\x28\r\n.a\r\nend\r\n.\r\n+OK";
        let expected: &[u8] =
            b"Subject: x\r\n\r\n.\r\n..dots\r\n\rz\r\nlf only\n\n.\n\xff\xc3\x28\r\na\r\nend\r\n";
        let body_len = reply.len() - 3;
        for chunk in 1..=reply.len() {
            let (out, consumed, done) = decode_chunked(reply, chunk);
            assert!(done, "chunk {chunk}");
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(consumed, body_len, "chunk {chunk}");
        }
        // And every single split point in two pieces.
        for at in 0..=reply.len() {
            let mut d = DotDecoder::new();
            let mut out = Vec::new();
            let n1 = d.decode(&reply[..at], &mut out);
            let n2 = if n1 == at {
                d.decode(&reply[at..], &mut out)
            } else {
                0
            };
            assert!(d.is_done(), "split {at}");
            assert_eq!(out, expected, "split {at}");
            assert_eq!(n1 + n2, body_len, "split {at}");
        }
    }

    #[test]
    fn terminator_split_across_reads() {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"abc\r", &mut out), 4);
        assert_eq!(d.decode(b"\n.", &mut out), 2);
        assert!(!d.is_done());
        assert_eq!(d.decode(b"\r", &mut out), 1);
        assert!(!d.is_done());
        assert_eq!(d.decode(b"\n+OK", &mut out), 1);
        assert!(d.is_done());
        assert_eq!(out, b"abc\r\n");
    }

    #[test]
    fn truncated_is_an_error() {
        for input in [&b"abc\r\n"[..], b"abc", b"abc\r\n.", b"abc\r\n.\r", b""] {
            let mut d = DotDecoder::new();
            let mut out = Vec::new();
            d.decode(input, &mut out);
            assert_eq!(d.finish(), Err(ProtoError::Truncated), "{input:?}");
        }
        let mut d = DotDecoder::new();
        d.decode(b"abc\r\n.\r\n", &mut Vec::new());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn long_line_is_streamed() {
        let mut input = vec![b'A'; 3 * 1024 * 1024];
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, _, done) = decode_chunked(&input, 64 * 1024);
        assert!(done);
        assert_eq!(out.len(), 3 * 1024 * 1024 + 2);
    }

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
    fn find_line_bounds() {
        assert_eq!(find_line(b"+OK\r\nrest", 10), Ok(Some(5)));
        assert_eq!(find_line(b"+OK\nrest", 10), Ok(Some(4)));
        assert_eq!(find_line(b"+OK", 10), Ok(None));
        assert_eq!(find_line(&[b'a'; 10], 10), Ok(None));
        assert_eq!(find_line(b"aaaaaaaaaa\r\n", 10), Ok(Some(12)));
        assert_eq!(
            find_line(b"aaaaaaaaaaa\r\n", 10),
            Err(ProtoError::LineTooLong { max: 10 })
        );
        assert_eq!(
            find_line(&[b'a'; 12], 10),
            Err(ProtoError::LineTooLong { max: 10 })
        );
        let huge = vec![b'x'; MAX_STATUS_LINE * 4];
        assert!(find_line(&huge, MAX_STATUS_LINE).is_err());
        assert_eq!(strip_line_end(b"abc\r\n"), b"abc");
        assert_eq!(strip_line_end(b"abc\n"), b"abc");
    }

    #[test]
    fn listings() {
        assert_eq!(
            parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ"),
            Ok((1, "whqtswO00WBw418f9t5JxYwZ".into()))
        );
        assert_eq!(parse_uidl_line(b"12  abc "), Ok((12, "abc".into())));
        let uid70 = "x".repeat(70);
        assert_eq!(
            parse_uidl_line(format!("3 {uid70}").as_bytes()),
            Ok((3, uid70))
        );
        for bad in [
            &b""[..],
            b"1",
            b"0 abc",
            b"-1 abc",
            b"+1 abc",
            b"x abc",
            b"1 abc def",
            b"1 ab\xffc",
            b"99999999999 abc",
            b"1 \x7f",
        ] {
            assert!(parse_uidl_line(bad).is_err(), "{bad:?}");
        }
        let uid71 = format!("1 {}", "x".repeat(71));
        assert!(parse_uidl_line(uid71.as_bytes()).is_err());

        assert_eq!(parse_list_line(b"2 200"), Ok((2, 200)));
        assert_eq!(parse_list_line(b"2 200 extra"), Ok((2, 200)));
        assert!(parse_list_line(b"2").is_err());
        assert!(parse_list_line(b"2 -5").is_err());
        assert!(parse_list_line(b"2 99999999999999999999999").is_err());
        assert_eq!(parse_stat(b"2 320"), Ok((2, 320)));
        assert_eq!(parse_stat(b"0 0 messages"), Ok((0, 0)));
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"two 320").is_err());

        assert_eq!(listing_line(b"."), None);
        assert_eq!(listing_line(b"..x"), Some(&b".x"[..]));
        assert_eq!(listing_line(b"1 2"), Some(&b"1 2"[..]));
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

    #[test]
    fn capabilities() {
        let c = Capabilities::from_lines([
            &b"TOP"[..],
            b"UIDL",
            b"RESP-CODES",
            b"PIPELINING",
            b"sasl PLAIN login",
            b"USER",
            b"STLS",
            b"IMPLEMENTATION Test server",
        ]);
        assert!(c.announced());
        assert!(c.top() && c.uidl() && c.resp_codes() && c.pipelining() && c.user() && c.stls());
        assert!(c.has("implementation"));
        assert!(!c.has("IMPL"));
        assert_eq!(c.sasl_mechanisms(), vec!["PLAIN", "LOGIN"]);
        assert!(c.sasl("plain"));
        assert!(!c.sasl("CRAM-MD5"));
        assert_eq!(c.raw().len(), 8);
        let u = Capabilities::unknown();
        assert!(!u.announced() && !u.has("USER") && u.sasl_mechanisms().is_empty());
    }

    #[test]
    fn command_encoding() {
        let enc = |c: Command<'_>| {
            let mut v = Vec::new();
            c.encode(&mut v).unwrap();
            v
        };
        assert_eq!(enc(Command::User("me@x")), b"USER me@x\r\n");
        assert_eq!(enc(Command::Pass("p w")), b"PASS p w\r\n");
        assert_eq!(enc(Command::Retr(7)), b"RETR 7\r\n");
        assert_eq!(enc(Command::Top(7, 0)), b"TOP 7 0\r\n");
        assert_eq!(enc(Command::List), b"LIST\r\n");
        assert_eq!(
            enc(Command::Apop {
                user: "mrose",
                digest: "c4c9"
            }),
            b"APOP mrose c4c9\r\n"
        );
        assert_eq!(enc(Command::SaslResponse("AGEAYg==")), b"AGEAYg==\r\n");
        assert_eq!(
            Command::User("a\r\nDELE 1").encode(&mut Vec::new()),
            Err(ProtoError::BadArgument)
        );
        assert_eq!(format!("{:?}", Command::Pass("hunter2")), "PASS <redacted>");
        assert!(
            !format!(
                "{:?}",
                Command::Apop {
                    user: "u",
                    digest: "d1g"
                }
            )
            .contains("d1g")
        );
        assert!(Command::List.is_multiline() && !Command::Stat.is_multiline());
    }
}
