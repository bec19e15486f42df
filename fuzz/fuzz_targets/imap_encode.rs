//! popferry's own IMAP argument encoding and server-text handling
//! (`imap::proto::encode`) on arbitrary input: what goes on a command line
//! must never be able to break it, and server text kept in errors must be
//! bounded and printable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::imap::proto::encode::{self, Arg, MAX_TEXT};

fn no_line_break(s: &str) {
    assert!(!s.contains('\r') && !s.contains('\n'), "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    // A string argument: quoted only when that is safe.
    match encode::string_arg(data) {
        Arg::Quoted(q) => {
            assert!(q.len() == data.len() + 2 && q.starts_with('"') && q.ends_with('"'));
            let inner = q.get(1..q.len() - 1).unwrap_or_default();
            assert!(!inner.contains('"') && !inner.contains('\\'));
            no_line_break(&q);
        }
        Arg::Literal(l) => assert_eq!(l, data),
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Mailbox names: modified UTF-7 is printable ASCII, never empty.
    if let Ok(m) = encode::mailbox_utf7(text) {
        assert!(!m.is_empty() && m.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{m:?}");
    }
    // Dates: always the canonical quoted 28 bytes.
    if let Ok(d) = encode::internal_date_arg(text) {
        assert_eq!(d.len(), 28, "{d:?}");
        no_line_break(&d);
    }
    // Flags: one parenthesised list on one line.
    let flags: Vec<String> = text.split(' ').map(str::to_owned).collect();
    if let Ok(Some(list)) = encode::flag_list(&flags) {
        assert!(list.starts_with('(') && list.ends_with(')'));
        no_line_break(&list);
    }
    // Server text: bounded, printable.
    let b = encode::bounded_text(text);
    assert!(b.chars().count() <= MAX_TEXT + 1 && !b.chars().any(char::is_control));
    let (code, rest) = encode::split_code(text);
    if let Some(c) = code {
        assert!(!c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic()));
    }
    assert!(rest.len() <= text.len());
});
