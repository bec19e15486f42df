//! LIST / UIDL / STAT lines as the client reads a listing: each line bounded
//! by find_line, dot-unstuffed by listing_line, then parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::pop3::proto::{self, MAX_LISTING_LINE, MAX_UIDL_LEN};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Every iteration consumes at least one byte.
    while !rest.is_empty() {
        let n = match proto::find_line(rest, MAX_LISTING_LINE) {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => rest.len(),
        };
        assert!(n >= 1 && n <= rest.len());
        let line = proto::strip_line_end(rest.get(..n).unwrap_or_default());
        rest = rest.get(n..).unwrap_or_default();
        let Some(line) = proto::listing_line(line) else {
            assert_eq!(line, b".");
            continue;
        };
        if let Ok((n, uid)) = proto::parse_uidl_line(line) {
            assert!(n >= 1);
            assert!(!uid.is_empty() && uid.len() <= MAX_UIDL_LEN);
            assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
        if let Ok((n, _size)) = proto::parse_list_line(line) {
            assert!(n >= 1);
        }
        let _ = proto::parse_stat(line);
    }
});
