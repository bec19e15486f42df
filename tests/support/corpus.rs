//! Deterministic test messages, one or two of every awkward kind.
//!
//! Every message has a `Date:` header, an `X-Corpus-Kind: <kind>` header and an
//! `X-Corpus-Index: <n>` header (0-based position in [`corpus()`]). Line endings are
//! CRLF except for `bare-lf` (LF only) and `mixed-eol` (both).
//!
//! | kind | what |
//! |---|---|
//! | plain | ASCII text/plain |
//! | attachment | multipart/mixed with a 24 KiB random binary attachment in base64 |
//! | utf8-8bit | raw UTF-8 body, `Content-Transfer-Encoding: 8bit` |
//! | utf8-header | raw UTF-8 in `Subject:` and `From:` |
//! | dot-lines | body lines `.`, `..`, `. x`, `.\tx`, `...x`; the last line is `.` |
//! | bare-lf | LF line endings only |
//! | mixed-eol | CRLF and bare LF alternating |
//! | dup-msgid | two messages (different bodies) sharing [`DUP_MESSAGE_ID`] |
//! | no-msgid | no `Message-ID:` header |
//! | long-line | a 5,000-character body line and a folded header of ~2,400 characters |
//! | headers-only | header section only, no empty line, no body |
//! | empty-body | header section and the empty line, nothing after |
//! | big | ~10.3 MB: multipart with a 7.5 MiB binary attachment in base64 |
//! | nul-byte | a NUL byte inside a body line |
//! | bare-cr | a lone CR inside a body line |
//! | received-date | two `Received:` headers whose dates differ from `Date:` (see the constants) |

use base64::Engine;
use std::sync::OnceLock;

/// The Message-ID both `dup-msgid` messages carry.
pub const DUP_MESSAGE_ID: &str = "<dup-msgid@corpus.popferry.test>";

/// `received-date`: the date of its topmost (newest) `Received:` header, as IMAP INTERNALDATE in UTC.
pub const RECEIVED_NEWEST_INTERNALDATE: &str = "14-Nov-2023 10:00:05 +0000";
/// `received-date`: the date of its lower (older) `Received:` header, as IMAP INTERNALDATE in UTC.
pub const RECEIVED_OLDEST_INTERNALDATE: &str = "14-Nov-2023 09:58:30 +0000";
/// `received-date`: its `Date:` header, as IMAP INTERNALDATE in UTC.
pub const RECEIVED_DATE_HEADER_INTERNALDATE: &str = "13-Nov-2023 08:00:00 +0000";

/// Every kind, in the order of [`corpus()`] (`dup-msgid` twice).
pub const KINDS: &[&str] = &[
    "plain",
    "attachment",
    "utf8-8bit",
    "utf8-header",
    "dot-lines",
    "bare-lf",
    "mixed-eol",
    "dup-msgid",
    "dup-msgid",
    "no-msgid",
    "long-line",
    "headers-only",
    "empty-body",
    "big",
    "nul-byte",
    "bare-cr",
    "received-date",
];

const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "labore",
    "magna",
    "aliqua",
    "enim",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "ullamco",
    "laboris",
    "nisi",
    "commodo",
    "mail",
    "bridge",
    "pop3",
    "imap",
    "sync",
    "ferry",
    "harbour",
    "message",
    "copy",
    "exactly",
    "once",
];

const UTF8_LINES: &[&str] = &[
    "Grüße aus Köln – naïve café, façade, smørrebrød.",
    "Ελληνικά: Καλημέρα κόσμε. Русский: Привет, мир!",
    "日本語のテキスト。中文：你好，世界。한국어: 안녕하세요",
    "Emoji: \u{1F4EC} \u{1F680} \u{2709}\u{FE0F}; math: \u{2200}x\u{2208}\u{211D}, x\u{B2}\u{2265}0; À la carte €5",
];

/// splitmix64: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn text_lines(rng: &mut Rng, approx_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut size = 0;
    while size < approx_bytes {
        let n = 6 + rng.below(7);
        let line: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
        let line = line.join(" ");
        size += line.len() + 2;
        out.push(line);
    }
    out
}

fn base64_lines(data: &[u8]) -> Vec<String> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    enc.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// "Tue, 14 Nov 2023 10:00:05 +0000" for day/hour offsets from 2023-11-01 00:00 UTC (a Wednesday).
fn rfc5322_date(index: usize) -> String {
    let day = 1 + index % 28;
    let hour = (index * 7) % 24;
    let minute = (index * 13) % 60;
    const DAYS: [&str; 7] = ["Wed", "Thu", "Fri", "Sat", "Sun", "Mon", "Tue"];
    format!(
        "{}, {day:02} Nov 2023 {hour:02}:{minute:02}:00 +0000",
        DAYS[(day - 1) % 7]
    )
}

fn build(index: usize, kind: &str, rng: &mut Rng) -> Vec<u8> {
    let mut h: Vec<String> = Vec::new();
    let mut date = rfc5322_date(index);
    let mut from = format!("Sender {index} <sender{index}@corpus.popferry.test>");
    let mut subject = format!("Corpus message {index} ({kind})");
    if kind == "received-date" {
        h.push("Received: from mx2.corpus.popferry.test (mx2 [192.0.2.2])\r\n\tby pop.corpus.popferry.test with ESMTPS id abc123;\r\n\tTue, 14 Nov 2023 11:00:05 +0100".to_string());
        h.push("Received: from client.corpus.popferry.test (client [192.0.2.1])\r\n\tby mx2.corpus.popferry.test with ESMTP id def456;\r\n\tTue, 14 Nov 2023 09:58:30 +0000".to_string());
        date = "Mon, 13 Nov 2023 08:00:00 +0000".to_string();
    }
    if kind == "utf8-header" {
        from = "Jürgen Müller <juergen@corpus.popferry.test>".to_string();
        subject = format!("Grüße – 日本語 – Привет {index}");
    }
    h.push(format!("Return-Path: <sender{index}@corpus.popferry.test>"));
    h.push(format!("From: {from}"));
    h.push("To: Alice <alice@corpus.popferry.test>".to_string());
    h.push(format!("Subject: {subject}"));
    h.push(format!("Date: {date}"));
    match kind {
        "no-msgid" => {}
        "dup-msgid" => h.push(format!("Message-ID: {DUP_MESSAGE_ID}")),
        _ => h.push(format!(
            "Message-ID: <corpus-{index}-{kind}@corpus.popferry.test>"
        )),
    }
    h.push(format!("X-Corpus-Kind: {kind}"));
    h.push(format!("X-Corpus-Index: {index}"));
    if kind == "long-line" {
        let folded: Vec<String> = (0..30)
            .map(|_| {
                let words: Vec<&str> = (0..12).map(|_| WORDS[rng.below(WORDS.len())]).collect();
                words.join(" ")
            })
            .collect();
        h.push(format!("X-Long-Header: {}", folded.join("\r\n ")));
    }
    h.push("MIME-Version: 1.0".to_string());

    let mut body: Option<Vec<String>> = None;
    match kind {
        "attachment" | "big" => {
            let boundary = format!("=_corpus_{index}_{:012x}", rng.next() & 0xFFFF_FFFF_FFFF);
            let payload_len = if kind == "big" {
                7_500_000 + 1
            } else {
                24 * 1024
            };
            let payload = rng.bytes(payload_len);
            h.push(format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\""
            ));
            let mut b = vec![
                "This is a multi-part message in MIME format.".to_string(),
                String::new(),
            ];
            b.push(format!("--{boundary}"));
            b.push("Content-Type: text/plain; charset=us-ascii".to_string());
            b.push(String::new());
            b.extend(text_lines(rng, 400));
            b.push(format!("--{boundary}"));
            b.push(format!(
                "Content-Type: application/octet-stream; name=\"blob{index}.bin\""
            ));
            b.push("Content-Transfer-Encoding: base64".to_string());
            b.push(format!(
                "Content-Disposition: attachment; filename=\"blob{index}.bin\""
            ));
            b.push(String::new());
            b.extend(base64_lines(&payload));
            b.push(format!("--{boundary}--"));
            body = Some(b);
        }
        "utf8-8bit" | "utf8-header" => {
            h.push("Content-Type: text/plain; charset=utf-8".to_string());
            h.push("Content-Transfer-Encoding: 8bit".to_string());
            let n = 8 + rng.below(20);
            body = Some(
                (0..n)
                    .map(|_| UTF8_LINES[rng.below(UTF8_LINES.len())].to_string())
                    .collect(),
            );
        }
        "dot-lines" => {
            h.push("Content-Type: text/plain; charset=us-ascii".to_string());
            let mut b = text_lines(rng, 200);
            for l in [
                ".",
                "..",
                ". x",
                ".\tx",
                "...x",
                ". leading dot and space",
                "..double",
            ] {
                b.push(l.to_string());
            }
            b.extend(text_lines(rng, 200));
            b.push(".".to_string());
            body = Some(b);
        }
        "headers-only" | "empty-body" => {}
        "long-line" => {
            h.push("Content-Type: text/plain; charset=us-ascii".to_string());
            let mut b = text_lines(rng, 300);
            b.push("x".repeat(4990) + "0123456789");
            b.extend(text_lines(rng, 300));
            body = Some(b);
        }
        "nul-byte" | "bare-cr" => {
            h.push("Content-Type: text/plain; charset=us-ascii".to_string());
            let mut b = text_lines(rng, 300);
            b.push(
                if kind == "nul-byte" {
                    "NUL>\0<NUL"
                } else {
                    "CR>\r<CR"
                }
                .to_string(),
            );
            b.extend(text_lines(rng, 300));
            body = Some(b);
        }
        _ => {
            h.push("Content-Type: text/plain; charset=us-ascii".to_string());
            let n = 300 + rng.below(3000);
            body = Some(text_lines(rng, n));
        }
    }

    let mut text = String::new();
    for line in &h {
        text.push_str(line);
        text.push_str("\r\n");
    }
    match (kind, body) {
        ("headers-only", _) => {}
        ("empty-body", _) => text.push_str("\r\n"),
        (_, Some(lines)) => {
            text.push_str("\r\n");
            for line in lines {
                text.push_str(&line);
                text.push_str("\r\n");
            }
        }
        (_, None) => text.push_str("\r\n"),
    }
    let bytes = text.into_bytes();
    match kind {
        "bare-lf" => {
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                    continue;
                }
                out.push(bytes[i]);
                i += 1;
            }
            out
        }
        "mixed-eol" => {
            // every other line ends in a bare LF
            let mut out = Vec::with_capacity(bytes.len());
            let mut line_no = 0;
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    if line_no % 2 == 1 {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    line_no += 1;
                    i += 2;
                    continue;
                }
                out.push(bytes[i]);
                i += 1;
            }
            out
        }
        _ => bytes,
    }
}

fn generate() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng(0x5EED_F0E5_2023_1114);
    KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| (*kind, build(i, kind, &mut rng)))
        .collect()
}

/// Every kind (see the module docs), deterministic, in a fixed order; `dup-msgid` appears twice.
pub fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    static CORPUS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(generate).clone()
}

/// The corpus without `big` (fast tests).
pub fn corpus_small() -> Vec<(&'static str, Vec<u8>)> {
    corpus().into_iter().filter(|(k, _)| *k != "big").collect()
}

/// The (first) message of one kind; panics on an unknown kind.
pub fn corpus_kind(kind: &str) -> Vec<u8> {
    corpus()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no corpus kind {kind:?}; kinds: {KINDS:?}"))
}

/// Just the bytes, in corpus order (what [`super::Dovecot::seed`] takes).
pub fn messages(corpus: &[(&'static str, Vec<u8>)]) -> Vec<Vec<u8>> {
    corpus.iter().map(|(_, m)| m.clone()).collect()
}

/// `n` small distinct messages with a Message-ID, tagged so that no two
/// share bytes (also across tags).
pub fn small_messages(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "From: sender@example.test\r\n\
                 To: someone@example.test\r\n\
                 Subject: {tag} {i}\r\n\
                 Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n\
                 Message-ID: <{tag}-{i}@small.popferry.test>\r\n\
                 \r\n\
                 Message {i} of {n} ({tag}).\r\n"
            )
            .into_bytes()
        })
        .collect()
}
