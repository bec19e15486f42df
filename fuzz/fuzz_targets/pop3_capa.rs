//! A CAPA listing: the lines go into `Capa`, then every question the
//! client asks of it (with the first line also used as a capability name).
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::pop3::proto::{self, Capa, MAX_LOGIN_DELAY};

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .map(proto::strip_line_end)
        .filter_map(proto::listing_line)
        .collect();
    let caps = Capa::from_lines(&lines);
    assert!(caps.announced());
    assert!(caps.raw().len() <= lines.len());
    let probe = String::from_utf8_lossy(lines.first().copied().unwrap_or_default()).into_owned();
    for name in [probe.as_str(), "SASL", "USER", "STLS", "PIPELINING", "UIDL", "TOP", ""] {
        let _ = (caps.has(name), caps.args(name), caps.sasl(name));
    }
    for m in caps.args("SASL") {
        assert!(caps.sasl(m));
    }
    let _ = (caps.pipelining(), caps.user());
    if let Some(delay) = caps.login_delay() {
        assert!(delay <= MAX_LOGIN_DELAY);
    }
});
