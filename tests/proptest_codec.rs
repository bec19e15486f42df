//! Property tests for the sans-IO codecs (guarantee 1 of DESIGN.md: byte for
//! byte, whatever the server's bytes and however they are split across reads).
//!
//! - Dot-stuffing any bytes as a POP3 server does, then decoding them with
//!   [`DotDecoder`] fed in arbitrary chunks, gives the original bytes back
//!   (plus the CRLF a server adds when the data does not end in a line end),
//!   consumes exactly the reply and leaves a pipelined next reply untouched.
//! - The decoder never panics and keeps its output bound on arbitrary input.
//! - The spool's LF → CRLF normalisation is chunking-independent,
//!   idempotent and only ever inserts a CR before a bare LF; the async
//!   [`Spool`] stores exactly that, in memory and on disk.
//! - Status-line, listing, APOP, capability and header parsers never panic
//!   on arbitrary bytes, and round-trip well-formed lines.
//! - A command argument holding CR, LF or NUL is always refused.
//!
//! More cases: `PROPTEST_CASES=100000 cargo test --test proptest_codec`.

use popferry::pop3::proto::{
    self, Capa, Command, DotDecoder, MAX_LISTING_LINE, MAX_STATUS_LINE, MAX_UIDL_LEN, ProtoError,
    StatusKind,
};
use popferry::spool::{Spool, normalize_crlf};
use popferry::sync::headers::HeaderFacts;
use proptest::prelude::*;

/// Bytes biased towards the ones that matter to line-based codecs.
fn wire_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        3 => Just(b'.'),
        3 => Just(b'\r'),
        3 => Just(b'\n'),
        1 => Just(0u8),
        1 => Just(b' '),
    ]
}

fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(wire_byte(), 0..max)
}

/// Split points (any number, any place) for a buffer of `len` bytes.
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..12)
}

/// The chunks of `data` cut at `cuts` (taken modulo the length), in order;
/// empty chunks included, which the decoder must accept too.
fn chunked<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % data.len().saturating_add(1))
        .collect();
    points.sort_unstable();
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        out.push(data.get(start..p).unwrap_or_default());
        start = p;
    }
    out.push(data.get(start..).unwrap_or_default());
    out
}

/// What a POP3 server sends for a message: every line that starts with "."
/// gets another "."; a line end is added when the data does not end in one
/// (CRLF, or LF for a bare-LF server); then the terminating "." line.
/// Lines are what a server sees as lines: separated by LF.
fn stuff(data: &[u8], bare_lf: bool) -> Vec<u8> {
    let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 8);
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

/// What the decoder must give back for `data`: the data, plus the line end
/// the server added when it did not end in one.
fn expected_decoded(data: &[u8], bare_lf: bool) -> Vec<u8> {
    let mut want = data.to_vec();
    if !data.is_empty() && data.last() != Some(&b'\n') {
        want.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
    }
    want
}

/// Feeds `chunks` to a fresh decoder. Returns the output, the bytes consumed
/// in total, and whether it finished; checks the per-call bounds the
/// decoder documents on the way.
fn decode_chunks(chunks: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), TestCaseError> {
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    let mut consumed = 0usize;
    for piece in chunks {
        let before = out.len();
        let n = d.decode(piece, &mut out);
        prop_assert!(n <= piece.len(), "consumed more than given");
        prop_assert!(
            out.len() - before <= piece.len() + 1,
            "output grew by {} for {} input bytes",
            out.len() - before,
            piece.len()
        );
        consumed += n;
        if n < piece.len() {
            prop_assert!(d.is_done(), "stopped early without the terminator");
        }
        if d.is_done() {
            break;
        }
    }
    Ok((out, consumed, d.is_done()))
}

/// Normalises `data` fed in `chunks`, carrying the CR state across them.
fn normalize_chunks(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev_cr = false;
    for c in chunks {
        normalize_crlf(c, &mut prev_cr, &mut out);
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn dot_stuffing_then_decoding_returns_the_bytes(
        data in wire_bytes(400),
        bare_lf in any::<bool>(),
        cuts in cuts(),
    ) {
        let wire = stuff(&data, bare_lf);
        let reply_len = wire.len();
        // A pipelined reply follows: it must be left alone.
        let mut input = wire;
        input.extend_from_slice(b"+OK next\r\n");
        let chunks = chunked(&input, &cuts);
        let (out, consumed, done) = decode_chunks(&chunks)?;
        prop_assert!(done, "the terminator was not recognised");
        prop_assert_eq!(out, expected_decoded(&data, bare_lf));
        prop_assert_eq!(consumed, reply_len, "consumed past or short of the terminator");
    }

    #[test]
    fn a_reply_cut_short_is_never_done(
        data in wire_bytes(300),
        bare_lf in any::<bool>(),
        cut in any::<usize>(),
        cuts in cuts(),
    ) {
        // Any strict prefix of a reply leaves the decoder unfinished.
        let wire = stuff(&data, bare_lf);
        let end = cut % wire.len();
        let prefix = wire.get(..end).unwrap_or_default();
        let chunks = chunked(prefix, &cuts);
        let (_, consumed, done) = decode_chunks(&chunks)?;
        prop_assert!(!done, "a truncated reply was taken as complete");
        prop_assert_eq!(consumed, prefix.len());
        let mut d = DotDecoder::new();
        prop_assert_eq!(d.decode(prefix, &mut Vec::new()), prefix.len());
        prop_assert!(!d.is_done(), "a truncated reply was taken as complete in one piece");
    }

    #[test]
    fn the_decoder_survives_any_bytes(input in wire_bytes(600), cuts in cuts()) {
        let chunks = chunked(&input, &cuts);
        let (out, consumed, done) = decode_chunks(&chunks)?;
        prop_assert!(consumed <= input.len());
        prop_assert!(out.len() <= consumed + 1);
        if !done {
            prop_assert_eq!(consumed, input.len());
        }
        // Chunking never changes the result.
        let (whole, whole_consumed, whole_done) = decode_chunks(&[&input])?;
        prop_assert_eq!(done, whole_done);
        prop_assert_eq!(consumed, whole_consumed);
        if done {
            prop_assert_eq!(out, whole);
        }
    }

    #[test]
    fn crlf_normalisation_is_chunking_independent_and_idempotent(
        data in wire_bytes(400),
        cuts1 in cuts(),
        cuts2 in cuts(),
    ) {
        let once = normalize_chunks(&[&data]);
        prop_assert_eq!(&normalize_chunks(&chunked(&data, &cuts1)), &once);
        let twice = normalize_chunks(&chunked(&once, &cuts2));
        prop_assert_eq!(&twice, &once, "normalising twice changed the bytes");
    }

    #[test]
    fn crlf_normalisation_only_inserts_cr_before_bare_lf(
        data in wire_bytes(400),
        cuts in cuts(),
    ) {
        let out = normalize_chunks(&chunked(&data, &cuts));
        let mut i = 0usize;
        let mut prev: Option<u8> = None;
        for &b in &data {
            if b == b'\n' && prev != Some(b'\r') {
                prop_assert_eq!(out.get(i).copied(), Some(b'\r'), "no CR inserted at {}", i);
                i += 1;
            }
            prop_assert_eq!(out.get(i).copied(), Some(b), "byte changed at {}", i);
            i += 1;
            prev = Some(b);
        }
        prop_assert_eq!(i, out.len(), "bytes added at the end");
        for (k, &b) in out.iter().enumerate() {
            if b == b'\n' {
                prop_assert!(k > 0 && out.get(k - 1) == Some(&b'\r'), "bare LF left at {}", k);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_spool_stores_exactly_the_normalised_bytes(
        data in wire_bytes(3000),
        cuts in cuts(),
        threshold in prop_oneof![Just(0usize), Just(64), Just(1 << 20)],
    ) {
        let chunks = chunked(&data, &cuts);
        let want = normalize_chunks(&[&data]);
        let rt = runtime();
        let stored = rt.block_on(async {
            let mut s = Spool::new(threshold);
            for c in &chunks {
                s.write(c).await?;
            }
            let m = s.finish().await?;
            let bytes = m.to_vec().await?;
            Ok::<_, std::io::Error>((m.len(), m.has_nul(), m.sha256(), bytes))
        });
        let (len, has_nul, sha, bytes) = match stored {
            Ok(v) => v,
            Err(e) => return Err(TestCaseError::fail(format!("spool I/O: {e}"))),
        };
        prop_assert_eq!(len, want.len() as u64);
        prop_assert_eq!(has_nul, want.contains(&0));
        use sha2::Digest as _;
        let want_sha: [u8; 32] = sha2::Sha256::digest(&want).into();
        prop_assert_eq!(sha, want_sha);
        prop_assert_eq!(bytes, want);
    }
}

/// A UIDL as RFC 1939 allows it: 1 to 70 characters in 0x21..=0x7E.
fn uidl() -> impl Strategy<Value = String> {
    prop::collection::vec(0x21u8..=0x7e, 1..=MAX_UIDL_LEN)
        .prop_map(|v| v.into_iter().map(char::from).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn line_parsers_never_panic(line in wire_bytes(200)) {
        let _ = proto::parse_status(&line);
        let _ = proto::parse_uidl_line(&line);
        let _ = proto::parse_list_line(&line);
        let _ = proto::parse_stat(&line);
        let _ = proto::listing_line(&line);
        let _ = proto::apop_timestamp(&line);
        let _ = proto::strip_line_end(&line);
        let _ = HeaderFacts::parse(&line);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(line in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(s) = proto::parse_status(&line) {
            let _ = s.text_lossy();
            prop_assert!(s.text.len() <= line.len());
        }
        if let Ok((n, uid)) = proto::parse_uidl_line(&line) {
            prop_assert!(n >= 1);
            prop_assert!(!uid.is_empty() && uid.len() <= MAX_UIDL_LEN);
            prop_assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
        if let Ok((n, _)) = proto::parse_list_line(&line) {
            prop_assert!(n >= 1);
        }
        if let Some(ts) = proto::apop_timestamp(&line) {
            prop_assert!(ts.starts_with(b"<") && ts.ends_with(b">") && ts.contains(&b'@'));
        }
        let facts = HeaderFacts::parse(&line);
        for policy in [
            popferry::config::InternalDate::Received,
            popferry::config::InternalDate::Date,
            popferry::config::InternalDate::Now,
        ] {
            let _ = facts.internal_date(policy);
        }
    }

    #[test]
    fn find_line_is_bounded(data in wire_bytes(300), max in 0usize..64) {
        match proto::find_line(&data, max) {
            Ok(Some(n)) => {
                prop_assert!(n >= 1 && n <= data.len());
                prop_assert!(n <= max + 2, "a line of {} bytes passed the bound {}", n, max);
                prop_assert_eq!(data.get(n - 1).copied(), Some(b'\n'));
                prop_assert!(!data.get(..n - 1).unwrap_or_default().contains(&b'\n'));
            }
            Ok(None) => {
                prop_assert!(!data.contains(&b'\n'));
                prop_assert!(data.len() < max + 2);
            }
            Err(ProtoError::LineTooLong { max: m }) => prop_assert_eq!(m, max),
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }

    #[test]
    fn the_real_bounds_hold_for_long_lines(extra in 0usize..4, lf in any::<bool>()) {
        for max in [MAX_STATUS_LINE, MAX_LISTING_LINE] {
            let mut data = vec![b'a'; max + extra];
            if lf {
                data.extend_from_slice(b"\r\n");
            }
            let r = proto::find_line(&data, max);
            match (lf, extra) {
                (true, 0) => prop_assert_eq!(r, Ok(Some(max + 2))),
                (true, _) | (false, 2..) => prop_assert!(
                    r.is_err(),
                    "a {}-byte line passed the bound {}", max + extra, max
                ),
                // Without a line end yet, up to max + 1 bytes may still be
                // a line of max bytes and its CR: more bytes are needed.
                (false, _) => prop_assert_eq!(r, Ok(None)),
            }
        }
    }

    #[test]
    fn well_formed_listing_lines_round_trip(n in 1u32.., size in any::<u64>(), uid in uidl(), sep in "[ \t]{1,3}") {
        let line = format!("{n}{sep}{uid}");
        prop_assert_eq!(proto::parse_uidl_line(line.as_bytes()), Ok((n, uid.clone())));
        let line = format!("{n}{sep}{size}");
        prop_assert_eq!(proto::parse_list_line(line.as_bytes()), Ok((n, size)));
    }

    #[test]
    fn status_lines_round_trip(text in prop::collection::vec(any::<u8>(), 0..100), ok in any::<bool>()) {
        // Text that does not start with a "[": no response code to split off.
        prop_assume!(text.first() != Some(&b'['));
        let mut line = if ok { b"+OK ".to_vec() } else { b"-ERR ".to_vec() };
        line.extend_from_slice(&text);
        let s = proto::parse_status(&line);
        prop_assert!(s.is_ok(), "{:?}", s);
        if let Ok(s) = s {
            prop_assert_eq!(s.kind, if ok { StatusKind::Ok } else { StatusKind::Err });
            prop_assert_eq!(s.code, None);
            prop_assert_eq!(s.text, text);
        }
    }

    #[test]
    fn capability_lines_never_panic(lines in prop::collection::vec(wire_bytes(60), 0..12), name in "[ -~]{0,12}") {
        let caps = Capa::from_lines(&lines);
        let _ = (caps.has(&name), caps.args(&name), caps.sasl(&name));
        let _ = (caps.pipelining(), caps.user(), caps.raw(), caps.login_delay());
        for m in caps.args("SASL") {
            prop_assert!(caps.sasl(m));
        }
        if let Some(d) = caps.login_delay() {
            prop_assert!(d <= popferry::pop3::proto::MAX_LOGIN_DELAY);
        }
        prop_assert!(caps.announced());
    }

    #[test]
    fn command_arguments_cannot_smuggle_a_second_command(arg in "\\PC{0,20}[\r\n\u{0}]?\\PC{0,20}") {
        let hostile = arg.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        for cmd in [
            Command::User(&arg),
            Command::Pass(&arg),
            Command::Apop { user: &arg, digest: "d" },
            Command::Apop { user: "u", digest: &arg },
            Command::Auth(&arg),
            Command::SaslResponse(&arg),
        ] {
            let mut out = Vec::new();
            let r = cmd.encode(&mut out);
            if hostile {
                prop_assert_eq!(r, Err(ProtoError::BadArgument), "{:?} accepted", cmd);
            } else {
                prop_assert!(r.is_ok());
                prop_assert!(out.ends_with(b"\r\n"));
                let body = out.get(..out.len() - 2).unwrap_or_default();
                prop_assert!(!body.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)));
            }
            // The Debug form used in logs never shows a secret.
            let shown = format!("{cmd:?}");
            match cmd {
                Command::Pass(_) => prop_assert_eq!(shown, "PASS <redacted>"),
                Command::SaslResponse(_) => prop_assert_eq!(shown, "<SASL response redacted>"),
                Command::Apop { user: "u", .. } => prop_assert_eq!(shown, "APOP u <redacted>"),
                _ => {}
            }
        }
    }
}
