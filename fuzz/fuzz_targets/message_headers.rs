//! A message's header section as the sync engine reads it (mail-parser):
//! Message-ID and dates. Whatever the bytes, the INTERNALDATE that goes on
//! the APPEND command line must be a well-formed RFC 3501 date-time, never
//! anything that could break the command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::config::InternalDate;
use popferry::sync::headers::HeaderFacts;

fuzz_target!(|data: &[u8]| {
    let facts = HeaderFacts::parse(data);
    if let Some(id) = &facts.message_id {
        assert!(!id.is_empty() && id.len() <= 998);
    }
    for policy in [InternalDate::Received, InternalDate::Date, InternalDate::Now] {
        if let Some(d) = facts.internal_date(policy) {
            // "dd-Mon-yyyy hh:mm:ss +zzzz"
            assert_eq!(d.len(), 26, "{d:?}");
            assert!(
                d.bytes().all(|b| b.is_ascii_alphanumeric() || b" :+-".contains(&b)),
                "{d:?}"
            );
        }
    }
});
