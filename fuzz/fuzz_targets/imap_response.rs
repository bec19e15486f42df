//! IMAP server output, read the way popferry reads it: bytes fed to
//! `imap::proto::decode::Decoder` (framing ours, parsing imap-codec's), a
//! greeting first when the first input byte has its high bit set, then
//! replies until the input ends or is refused.
//!
//! Checks besides "no panic": the same bytes fed in chunks (sizes taken
//! from the first input byte's low bits) give exactly the same replies as
//! in one piece, and the same verdict, except that fed in chunks a refusal
//! may wait for the next line feed (a reply can only end at one, so the
//! decoder does not parse again before it: then bytes are still pending);
//! every reply consumes bytes; what is left buffered never exceeds the
//! input; a refused input's quoted line is bounded and printable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::imap::proto::decode::{Decoder, Unparsable};
use popferry::imap::proto::encode::MAX_TEXT;
use popferry::imap::proto::reply::{Greeting, Reply};

#[derive(Debug, PartialEq)]
struct Outcome {
    greeting: Option<Greeting>,
    replies: Vec<Reply>,
    refused: Option<Unparsable>,
    /// Bytes buffered at the end, not yet a reply.
    pending: usize,
}

/// Feeds `data` in chunks of `chunk` bytes (0: all at once).
fn run(data: &[u8], chunk: usize, greeting_first: bool) -> Outcome {
    let mut d = Decoder::new();
    let mut greeted = !greeting_first;
    let mut out = Outcome {
        greeting: None,
        replies: Vec::new(),
        refused: None,
        pending: 0,
    };
    let pieces: Vec<&[u8]> = if chunk == 0 {
        vec![data]
    } else {
        data.chunks(chunk).collect()
    };
    let mut fed = 0usize;
    for piece in pieces {
        d.feed(piece);
        fed += piece.len();
        loop {
            let before = d.buffered();
            let step = if !greeted {
                d.greeting().map(|g| {
                    g.map(|g| {
                        greeted = true;
                        out.greeting = Some(g);
                    })
                })
            } else {
                d.reply().map(|r| r.map(|r| out.replies.push(r)))
            };
            match step {
                Ok(Some(())) => assert!(d.buffered() < before, "a reply consumed nothing"),
                Ok(None) => break,
                Err(e) => {
                    assert!(e.line.chars().count() <= MAX_TEXT + 1);
                    assert!(!e.line.chars().any(char::is_control));
                    out.refused = Some(e);
                    return out;
                }
            }
            assert!(d.buffered() <= fed);
        }
    }
    out.pending = d.buffered();
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let greeting_first = first & 0x80 != 0;
    let whole = run(rest, 0, greeting_first);
    let chunked = run(rest, usize::from(first % 17) + 1, greeting_first);
    assert_eq!(whole.greeting, chunked.greeting, "chunking changed the greeting");
    assert_eq!(whole.replies, chunked.replies, "chunking changed the replies");
    match (&whole.refused, &chunked.refused) {
        (Some(a), Some(b)) => assert_eq!(a, b),
        (None, None) => assert_eq!(whole.pending, chunked.pending),
        (Some(_), None) => assert!(chunked.pending > 0, "a refusal lost"),
        (None, Some(_)) => panic!("refused only when fed in chunks"),
    }
});
