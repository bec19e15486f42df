//! The multi-line decoder (RETR, TOP, LIST, UIDL, CAPA data) on arbitrary
//! bytes split at arbitrary places. The first 8 input bytes choose the
//! chunking; the rest is the data. Checks:
//! - the server's bytes as they are: chunking never changes the result,
//!   output never grows by more than input + 1 per call, consumption stops
//!   exactly at the terminator;
//! - the data dot-stuffed as a server would send it: decoding returns it
//!   (plus the line end a server adds when the data lacks a final one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::pop3::proto::DotDecoder;

/// Chunk lengths from a seed (xorshift), 1 to 64 bytes, sometimes 0.
struct Chunks(u64);

impl Chunks {
    fn next_len(&mut self) -> usize {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % 65) as usize
    }
}

/// Decodes `input` in chunks; returns (output, consumed, done).
fn decode(input: &[u8], seed: u64) -> (Vec<u8>, usize, bool) {
    let mut chunks = Chunks(seed);
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    let mut at = 0usize;
    // Bounded: at most input.len() + 64 empty chunks are harmless, so cap.
    for _ in 0..input.len().saturating_mul(2).saturating_add(64) {
        if d.is_done() || at >= input.len() {
            break;
        }
        let len = chunks.next_len().min(input.len() - at);
        let piece = input.get(at..at + len).unwrap_or_default();
        let before = out.len();
        let n = d.decode(piece, &mut out);
        assert!(n <= piece.len());
        assert!(out.len() - before <= piece.len() + 1, "output bound broken");
        if n < piece.len() {
            assert!(d.is_done(), "stopped consuming without the terminator");
        }
        at += n;
    }
    if at < input.len() && !d.is_done() {
        // Finish in one piece (the chunk loop hit its cap on empty chunks).
        let n = d.decode(input.get(at..).unwrap_or_default(), &mut out);
        at += n;
    }
    (out, at, d.is_done())
}

fn stuff(data: &[u8], bare_lf: bool) -> Vec<u8> {
    let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
    let mut out = Vec::with_capacity(data.len() + 8);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !line_start {
        out.extend_from_slice(eol);
    }
    out.push(b'.');
    out.extend_from_slice(eol);
    out
}

fuzz_target!(|input: &[u8]| {
    let (seed_bytes, data) = input.split_at(input.len().min(8));
    let mut seed = [0u8; 8];
    seed.get_mut(..seed_bytes.len())
        .unwrap_or_default()
        .copy_from_slice(seed_bytes);
    let seed = u64::from_le_bytes(seed);

    // The bytes as a (possibly hostile) server sent them.
    let (out, consumed, done) = decode(data, seed);
    let (whole, whole_consumed, whole_done) = decode(data, u64::MAX);
    assert_eq!((consumed, done), (whole_consumed, whole_done));
    if done {
        assert_eq!(out, whole);
    } else {
        assert_eq!(consumed, data.len());
    }

    // The data as a server would stuff it: round trip.
    let bare_lf = seed & 1 == 1;
    let mut wire = stuff(data, bare_lf);
    let reply = wire.len();
    wire.extend_from_slice(b"+OK next\r\n");
    let (out, consumed, done) = decode(&wire, seed.rotate_left(17));
    assert!(done);
    assert_eq!(consumed, reply);
    let mut want = data.to_vec();
    if !data.is_empty() && data.last() != Some(&b'\n') {
        want.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
    }
    assert_eq!(out, want);
});
