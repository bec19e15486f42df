//! The multi-line data of RETR and TOP: dot-unstuffing, and the end of a
//! reply found exactly.
//!
//! Why a state machine: message data is the only part of a reply with no
//! line bound, so it is decoded as it arrives, chunk by chunk, and the
//! decoder remembers only where in a line it stands. It stops right after
//! the terminating "." line, so the next pipelined reply stays in the
//! buffer for whoever reads it.

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
    fn a_truncated_reply_is_not_done() {
        for input in [&b"abc\r\n"[..], b"abc", b"abc\r\n.", b"abc\r\n.\r", b""] {
            let mut d = DotDecoder::new();
            let mut out = Vec::new();
            assert_eq!(d.decode(input, &mut out), input.len(), "{input:?}");
            assert!(!d.is_done(), "{input:?}");
        }
        let mut d = DotDecoder::new();
        d.decode(b"abc\r\n.\r\n", &mut Vec::new());
        assert!(d.is_done());
    }

    #[test]
    fn long_line_is_streamed() {
        let mut input = vec![b'A'; 3 * 1024 * 1024];
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, _, done) = decode_chunked(&input, 64 * 1024);
        assert!(done);
        assert_eq!(out.len(), 3 * 1024 * 1024 + 2);
    }
}
