//! The POP3 wire format, with no I/O: commands out, status lines, listings
//! and multi-line data in.
//!
//! Why sans-IO: every byte a POP3 server sends is untrusted and may arrive
//! split anywhere across reads. Keeping the parsing in pure functions and a
//! small state machine ([`DotDecoder`]) lets the tests feed scripted bytes in
//! every possible split and prove the decoding exact (guarantee 1 of
//! DESIGN.md: byte for byte) without a socket, and keeps `connection` down to
//! reading, writing and deadlines. Nothing in here is async or touches a
//! socket.
//!
//! One file per job:
//! - `command`: [`Command`], encoded with its CRLF, secrets redacted in logs;
//! - `status`: `+OK` / `-ERR [CODE]` / `+ ` lines ([`parse_status`]) and the
//!   APOP timestamp of a greeting;
//! - `line`: finding a bounded line in buffered bytes ([`find_line`]);
//! - `listing`: the lines of LIST, UIDL and STAT;
//! - `capa`: what a CAPA listing announced ([`Capa`]);
//! - `multiline`: the streaming dot-unstuffing decoder for message data.
//!
//! Shape of the rules:
//! - Status lines and listing lines are short by nature and are bounded
//!   ([`MAX_STATUS_LINE`], [`MAX_LISTING_LINE`]); exceeding a bound is an
//!   error, never an allocation.
//! - Message data (RETR, TOP) is never buffered whole and has no line bound:
//!   the decoder turns whatever bytes arrive into decoded bytes and keeps only
//!   a few bits of state between calls (guarantee 6: bounded memory).
//! - Whether a reply is multi-line is decided by the command that was sent
//!   (the client reads a listing or a body after `+OK` only to the commands
//!   that have one), never guessed from the reply's text.
//! - Lines may end in CRLF or in a bare LF (liberal in what we accept); data
//!   lines are passed through unchanged, so a bare LF stays a bare LF for a
//!   later stage to turn into CRLF.

mod capa;
mod command;
mod line;
mod listing;
mod multiline;
mod status;

pub use capa::{Capa, MAX_LOGIN_DELAY};
pub use command::Command;
pub use line::{find_line, strip_line_end};
pub use listing::{
    BadUidl, listing_line, parse_list_line, parse_stat, parse_uidl_entry, parse_uidl_line,
};
pub use multiline::DotDecoder;
pub use status::{RespCode, Status, StatusKind, apop_timestamp, parse_status};

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
