//! A server's status line (greeting, +OK/-ERR, SASL "+ " continuation), as
//! the connection reads it: a bounded line, then `parse_status`; plus the
//! APOP timestamp taken from a greeting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::pop3::proto::{self, MAX_STATUS_LINE, ProtoError, StatusKind};

fn check_status(line: &[u8]) {
    let Ok(s) = proto::parse_status(line) else {
        return;
    };
    assert!(s.text.len() <= line.len());
    let _ = s.text_lossy();
    if let Some(code) = &s.code {
        assert!(!code.to_string().is_empty());
    }
    let head = |n: usize| line.get(..n).unwrap_or_default();
    match s.kind {
        StatusKind::Ok => assert!(head(3).eq_ignore_ascii_case(b"+OK")),
        StatusKind::Err => assert!(head(4).eq_ignore_ascii_case(b"-ERR")),
        StatusKind::Continue => assert!(line.starts_with(b"+")),
    }
}

fuzz_target!(|data: &[u8]| {
    match proto::find_line(data, MAX_STATUS_LINE) {
        Ok(Some(n)) => {
            assert!(n >= 1 && n <= data.len() && n <= MAX_STATUS_LINE + 2);
            assert_eq!(data.get(n - 1), Some(&b'\n'));
            check_status(proto::strip_line_end(data.get(..n).unwrap_or_default()));
        }
        Ok(None) => assert!(data.len() < MAX_STATUS_LINE + 2 && !data.contains(&b'\n')),
        Err(ProtoError::LineTooLong { max }) => assert_eq!(max, MAX_STATUS_LINE),
        Err(e) => panic!("find_line: unexpected error {e:?}"),
    }
    check_status(data);
    if let Some(ts) = proto::apop_timestamp(data) {
        assert!(ts.starts_with(b"<") && ts.ends_with(b">") && ts.contains(&b'@'));
    }
});
