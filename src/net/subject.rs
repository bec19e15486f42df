//! A certificate's subject as text (`CN=mail.example.org, O=Example`), for
//! error messages only: the user reads it to decide whether to pin a
//! certificate (guarantee 7). Nothing is decided on it.
//!
//! Why our own small DER reader: rustls and webpki verify certificates but
//! give no printable subject, and a whole X.509 crate for one line of an
//! error is not worth it. The certificate is untrusted input: every length
//! is checked, nothing can panic, the text is bounded and stripped of
//! control characters (it goes to a terminal), and anything unexpected
//! gives `None` ("subject unreadable"), never an error.

/// Longest subject text we print, in characters.
const MAX_CHARS: usize = 256;

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The contents of the element with `tag` at the start of `input`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = element(input)?;
    (t == tag).then_some((contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of a DER certificate, as `CN=…, O=…` in certificate order.
pub(super) fn subject(cert_der: &[u8]) -> Option<String> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    // version [0] EXPLICIT, optional
    if let Some((0xa0, _, rest)) = element(tbs) {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        let (_, _, rest) = element(tbs)?;
        tbs = rest;
    }
    let (name, _) = expect(tbs, SEQUENCE)?;
    render_name(name)
}

fn render_name(mut name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (mut rdn, rest) = expect(name, SET)?;
        name = rest;
        while !rdn.is_empty() {
            let (atv, rest) = expect(rdn, SEQUENCE)?;
            rdn = rest;
            let (oid, value) = expect(atv, OID)?;
            let (tag, bytes, _) = element(value)?;
            parts.push(format!(
                "{}={}",
                attribute_name(oid),
                value_text(tag, bytes)
            ));
        }
    }
    let text = parts.join(", ");
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        out.push('…');
    }
    Some(out)
}

/// The short name of a well-known attribute, else its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    let known = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        _ => return dotted(oid),
    };
    known.to_owned()
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.saturating_mul(128).saturating_add(u64::from(b & 0x7f));
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let mut out = Vec::new();
    if let Some((&first, rest)) = arcs.split_first() {
        let (a, b) = match first {
            0..40 => (0, first),
            40..80 => (1, first - 40),
            _ => (2, first - 80),
        };
        out.push(a.to_string());
        out.push(b.to_string());
        out.extend(rest.iter().map(u64::to_string));
    }
    out.join(".")
}

/// A string value as text: UTF-8 and the one-byte types directly, BMPString
/// as UTF-16; control characters escaped, since this goes to a terminal.
fn value_text(tag: u8, bytes: &[u8]) -> String {
    let text = match tag {
        // BMPString
        0x1e => {
            let units = bytes
                .chunks(2)
                .map(|c| match c {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0xfffd,
                })
                .collect::<Vec<_>>();
            String::from_utf16_lossy(&units)
        }
        // UTF8String, PrintableString, TeletexString, IA5String, ...
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Control and bidirectional-override characters could rewrite what
        // the terminal shows: escaped. `é` stays `é`.
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Name with CN=a\x1bb and O=Ex (PrintableString / UTF8String).
    fn name() -> Vec<u8> {
        let cn = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', 0x1b, b'b',
        ];
        let o = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x02, b'E', b'x',
        ];
        [&cn[..], &o[..]].concat()
    }

    #[test]
    fn names_render_in_order_with_control_characters_escaped() {
        assert_eq!(render_name(&name()).as_deref(), Some("CN=a\\u{1b}b, O=Ex"));
    }

    #[test]
    fn truncated_or_hostile_input_never_panics() {
        let n = name();
        for cut in 0..n.len() {
            let _ = render_name(&n[..cut]);
            let _ = subject(&n[..cut]);
        }
        assert_eq!(element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(element(&[0x30, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(subject(&[]), None);
    }

    #[test]
    fn unknown_attributes_show_their_oid() {
        assert_eq!(
            attribute_name(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
    }
}
