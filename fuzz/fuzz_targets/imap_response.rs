//! IMAP server responses, parsed the way popferry reads them: by async-imap's
//! imap-proto (popferry's own IMAP helpers are private to the crate). A
//! stream of responses is parsed one after the other; every success must
//! consume bytes.
#![no_main]

use async_imap::imap_proto::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match Response::parse(rest) {
            Ok((left, _response)) => {
                assert!(left.len() < rest.len(), "a response consumed nothing");
                rest = left;
            }
            Err(_) => break,
        }
    }
});
