//! Bytes in, replies out: the framing of server output, with no I/O.
//!
//! The connection feeds whatever it read ([`Decoder::feed`]) and asks for the
//! next reply ([`Decoder::reply`], or [`Decoder::greeting`] first); `None`
//! means "read more". Parsing is imap-codec's, which never panics on hostile
//! input and says when a response is incomplete (a literal included), so a
//! reply split anywhere decodes the same. What it refuses is an error that
//! quotes (bounded) the offending line.
//!
//! Cost stays linear: a reply can only end at a line feed, so after an
//! incomplete attempt the buffer is parsed again only once a new LF has
//! arrived (a long literal is skipped by its length, not scanned). The
//! buffer itself is bounded by the connection's per-command read budget.

use imap_codec::decode::{Decoder as _, GreetingDecodeError, ResponseDecodeError};
use imap_codec::imap_types::response::{Response, Status};
use imap_codec::{GreetingCodec, ResponseCodec};

use super::encode;
use super::reply::{self, Greeting, Reply, State, Untagged};

/// The server sent something that is not IMAP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}")]
pub struct Unparsable {
    /// The start of the offending line, bounded and printable.
    pub line: String,
}

/// Buffered server output not yet turned into replies.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// `buf[..checked]` was tried and holds no complete reply.
    checked: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Adds bytes read from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a reply.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a reply may be complete: there is a line feed not yet tried.
    fn worth_trying(&self) -> bool {
        self.buf
            .get(self.checked..)
            .is_some_and(|new| new.contains(&b'\n'))
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.checked = 0;
    }

    fn incomplete<T>(&mut self) -> Result<Option<T>, Unparsable> {
        self.checked = self.buf.len();
        Ok(None)
    }

    fn unparsable(&self) -> Unparsable {
        let line = self.buf.split(|&b| b == b'\n').next().unwrap_or_default();
        Unparsable {
            line: encode::bounded_text(&String::from_utf8_lossy(line)),
        }
    }

    /// The greeting, the first thing a server sends.
    pub fn greeting(&mut self) -> Result<Option<Greeting>, Unparsable> {
        if !self.worth_trying() {
            return Ok(None);
        }
        let (used, greeting) = match GreetingCodec::default().decode(&self.buf) {
            Ok((rest, g)) => (
                self.buf.len().saturating_sub(rest.len()),
                reply::greeting(&g),
            ),
            Err(GreetingDecodeError::Incomplete) => return self.incomplete(),
            Err(GreetingDecodeError::Failed) => return Err(self.unparsable()),
        };
        self.consume(used);
        Ok(Some(greeting))
    }

    /// The next reply, once it has fully arrived.
    pub fn reply(&mut self) -> Result<Option<Reply>, Unparsable> {
        if !self.worth_trying() {
            return Ok(None);
        }
        // A continuation request is one line, taken as is, so that "+",
        // "+ " and "+ text" are all understood; its text (a SASL challenge:
        // an OAuth2 server's error report) is kept, bounded.
        if self.buf.first() == Some(&b'+') {
            let end = self
                .buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.buf.len(), |i| i.saturating_add(1));
            let text = continue_text(self.buf.get(..end).unwrap_or_default());
            self.consume(end);
            return Ok(Some(Reply::Continue(text)));
        }
        let (used, reply) = match ResponseCodec::default().decode(&self.buf) {
            Ok((rest, r)) => (self.buf.len().saturating_sub(rest.len()), convert(&r)),
            Err(ResponseDecodeError::Incomplete | ResponseDecodeError::LiteralFound { .. }) => {
                return self.incomplete();
            }
            Err(ResponseDecodeError::Failed) => return Err(self.unparsable()),
        };
        self.consume(used);
        Ok(Some(reply))
    }
}

/// The text of a continuation line: after "+" and one space, without the
/// line end, at most [`reply::MAX_CONTINUE_TEXT`] bytes.
fn continue_text(line: &[u8]) -> Vec<u8> {
    let text = line.strip_prefix(b"+").unwrap_or(line);
    let text = text.strip_prefix(b" ").unwrap_or(text);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    text.iter()
        .take(reply::MAX_CONTINUE_TEXT)
        .copied()
        .collect()
}

fn convert(r: &Response<'_>) -> Reply {
    match r {
        // Not reached (a "+" line is taken before imap-codec sees it).
        Response::CommandContinuationRequest(_) => Reply::Continue(Vec::new()),
        Response::Data(d) => Reply::Untagged(reply::data(d)),
        Response::Status(s) => {
            let (state, tag, code, text) = match s {
                Status::Ok { tag, code, text } => (State::Ok, tag, code, text),
                Status::No { tag, code, text } => (State::No, tag, code, text),
                Status::Bad { tag, code, text } => (State::Bad, tag, code, text),
                Status::Bye { text, .. } => {
                    return Reply::Untagged(Untagged::Bye(encode::bounded_text(text.inner())));
                }
            };
            match tag {
                Some(tag) => Reply::Tagged {
                    tag: tag.inner().to_owned(),
                    done: reply::done(state, code.as_ref(), text.inner()),
                },
                None => Reply::Untagged(Untagged::Other),
            }
        }
    }
}
