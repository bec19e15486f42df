//! Commands out: a tagged command made of [`Part`]s becomes the
//! [`Segment`]s the connection writes, with the points where it must wait
//! for the server's "+" (synchronizing literals), and no I/O.
//!
//! A literal is non-synchronizing (`{n+}`) when the server allows it
//! (LITERAL+, or LITERAL- up to 4096 bytes), else synchronizing (`{n}`,
//! then wait). A message with a NUL goes as a literal8 (`~{n}`, RFC 3516)
//! when the caller asks for it. Every byte that may hold a secret (a LOGIN
//! password, a SASL response) is in a zeroed-on-drop buffer.

use secrecy::zeroize::Zeroizing;

use super::encode::Arg;
use crate::imap::Capabilities;
use crate::spool::SpooledMessage;

/// One piece of a command line.
pub enum Part<'a> {
    /// Bytes written as they are (may hold a secret: zeroed on drop).
    Text(Zeroizing<Vec<u8>>),
    /// A small literal held in memory (may hold a secret).
    Literal(Zeroizing<Vec<u8>>),
    /// The message of an APPEND, streamed from the spool.
    Message {
        msg: &'a SpooledMessage,
        binary: bool,
    },
}

impl Part<'_> {
    pub fn text(s: impl AsRef<[u8]>) -> Self {
        Part::Text(Zeroizing::new(s.as_ref().to_vec()))
    }

    pub fn arg(arg: Arg) -> Self {
        match arg {
            Arg::Quoted(q) => Part::Text(Zeroizing::new(q.into_bytes())),
            Arg::Literal(l) => Part::Literal(Zeroizing::new(l)),
        }
    }
}

/// What the connection does, in order, to send one command.
pub enum Segment<'a> {
    /// Write these bytes.
    Bytes(Zeroizing<Vec<u8>>),
    /// Flush, then read until the server's "+" (or an early completion,
    /// which ends the command: a refusal before the literal).
    AwaitContinue,
    /// Write the message's bytes from its spool.
    Message(&'a SpooledMessage),
}

/// Turns `tag` and `parts` into segments; consecutive bytes are merged into
/// one segment, and the command ends with CRLF.
pub fn encode<'a>(tag: &str, parts: Vec<Part<'a>>, caps: &Capabilities) -> Vec<Segment<'a>> {
    let mut out: Vec<Segment<'a>> = Vec::new();
    let mut line: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(256));
    line.extend_from_slice(tag.as_bytes());
    line.push(b' ');
    for part in parts {
        let (len, binary) = match &part {
            Part::Text(t) => {
                line.extend_from_slice(t);
                continue;
            }
            Part::Literal(data) => (data.len() as u64, false),
            Part::Message { msg, binary } => (msg.len(), *binary),
        };
        let non_sync = caps.non_sync_literal(len);
        if binary {
            line.push(b'~');
        }
        line.extend_from_slice(
            format!("{{{len}{}}}\r\n", if non_sync { "+" } else { "" }).as_bytes(),
        );
        if !non_sync {
            out.push(Segment::Bytes(std::mem::take(&mut line)));
            out.push(Segment::AwaitContinue);
        }
        match part {
            Part::Literal(data) => line.extend_from_slice(&data),
            Part::Message { msg, .. } => {
                if !line.is_empty() {
                    out.push(Segment::Bytes(std::mem::take(&mut line)));
                }
                out.push(Segment::Message(msg));
            }
            Part::Text(_) => {}
        }
    }
    line.extend_from_slice(b"\r\n");
    out.push(Segment::Bytes(line));
    out
}
