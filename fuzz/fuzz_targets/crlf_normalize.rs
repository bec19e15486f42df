//! The spool's bare LF -> CRLF step: chunking-independent, idempotent, and
//! it only ever inserts a CR before a bare LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::spool::normalize_crlf;

fn normalize(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev_cr = false;
    for c in data.chunks(chunk.max(1)) {
        normalize_crlf(c, &mut prev_cr, &mut out);
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let (&chunk, data) = input.split_first().unwrap_or((&1, &[]));
    let once = normalize(data, data.len());
    assert_eq!(normalize(data, usize::from(chunk)), once);
    assert_eq!(normalize(&once, usize::from(chunk) + 1), once, "not idempotent");
    let mut i = 0usize;
    let mut prev = None;
    for &b in data {
        if b == b'\n' && prev != Some(b'\r') {
            assert_eq!(once.get(i), Some(&b'\r'));
            i += 1;
        }
        assert_eq!(once.get(i), Some(&b));
        i += 1;
        prev = Some(b);
    }
    assert_eq!(i, once.len());
});
