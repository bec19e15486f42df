//! The lines of the LIST and UIDL listings and the text of a STAT answer.
//!
//! Why strict: these numbers pick which message is fetched and deleted, so a
//! message number is 1 or more and fits a `u32`, a size fits a `u64`, and a
//! unique id is what RFC 1939 allows (1 to 70 characters in 0x21..=0x7E);
//! anything else is an error naming the line, never a guess.

use super::{MAX_UIDL_LEN, ProtoError, excerpt};

/// A line of a multi-line listing, after dot-unstuffing: `None` for the
/// terminating "." line.
pub fn listing_line(line: &[u8]) -> Option<&[u8]> {
    if line == b"." {
        return None;
    }
    Some(line.strip_prefix(b".").unwrap_or(line))
}

fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|f| !f.is_empty())
}

/// Parses a decimal number of ASCII digits only (no sign), without overflow.
pub(super) fn parse_num(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_msg_num(digits: &[u8]) -> Option<u32> {
    let n = u32::try_from(parse_num(digits)?).ok()?;
    (n >= 1).then_some(n)
}

/// A unique id that RFC 1939 does not allow: longer than 70 characters or
/// holding a byte outside 0x21..=0x7E (a space, a control, 8-bit). Only
/// that message is affected: the rest of the listing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUidl {
    /// The id as the server sent it, escaped and cut to 80 characters (it is
    /// the server's text: fit for a log, never a key).
    pub shown: String,
    /// Why it is refused, in words.
    pub reason: &'static str,
}

/// Parses a UIDL listing line into its message number and its id, which
/// is `Err` when the id is not one RFC 1939 allows (the line still names a
/// message). The line itself is an error only when it names no message
/// (no number, no id at all).
pub fn parse_uidl_entry(line: &[u8]) -> Result<(u32, Result<String, BadUidl>), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "UIDL",
        line: excerpt(line),
    };
    let is_sep = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !is_sep(b)).unwrap_or(line.len());
    let line_ = line.get(start..).unwrap_or_default();
    let num_end = line_.iter().position(is_sep).unwrap_or(line_.len());
    let n = line_
        .get(..num_end)
        .and_then(parse_msg_num)
        .ok_or_else(bad)?;
    // The id is the rest of the line, without the separators around it, so
    // that an id holding a space is seen as one (bad) id.
    let rest = line_.get(num_end..).unwrap_or_default();
    let from = rest.iter().position(|b| !is_sep(b)).ok_or_else(bad)?;
    let to = rest
        .iter()
        .rposition(|b| !is_sep(b))
        .map_or(from, |p| p + 1);
    let uid = rest.get(from..to).ok_or_else(bad)?;
    let reason = if uid.len() > MAX_UIDL_LEN {
        Some("longer than 70 characters")
    } else if !uid.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        Some("holds a byte outside 0x21-0x7E")
    } else {
        None
    };
    let id = match (reason, std::str::from_utf8(uid)) {
        (None, Ok(s)) => Ok(s.to_owned()),
        (reason, _) => Err(BadUidl {
            shown: excerpt(uid),
            reason: reason.unwrap_or("holds a byte outside 0x21-0x7E"),
        }),
    };
    Ok((n, id))
}

/// Parses a UIDL listing line: `n unique-id`, the id 1 to 70 characters in
/// 0x21..=0x7E; a bad id is an error too (see [`parse_uidl_entry`] for the
/// form that keeps the message number).
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ProtoError> {
    match parse_uidl_entry(line)? {
        (n, Ok(uid)) => Ok((n, uid)),
        (_, Err(_)) => Err(ProtoError::BadListing {
            what: "UIDL",
            line: excerpt(line),
        }),
    }
}

/// Parses a LIST scan listing line: `n size` (anything after is ignored, as
/// RFC 1939 allows).
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "LIST",
        line: excerpt(line),
    };
    let mut f = fields(line);
    let n = f.next().and_then(parse_msg_num).ok_or_else(bad)?;
    let size = f.next().and_then(parse_num).ok_or_else(bad)?;
    Ok((n, size))
}

/// Parses the text of a `+OK` to STAT: `count size` (anything after is
/// ignored).
pub fn parse_stat(text: &[u8]) -> Result<(u32, u64), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "STAT",
        line: excerpt(text),
    };
    let mut f = fields(text);
    let count = f
        .next()
        .and_then(parse_num)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    let size = f.next().and_then(parse_num).ok_or_else(bad)?;
    Ok((count, size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listings() {
        assert_eq!(
            parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ"),
            Ok((1, "whqtswO00WBw418f9t5JxYwZ".into()))
        );
        assert_eq!(parse_uidl_line(b"12  abc "), Ok((12, "abc".into())));
        let uid70 = "x".repeat(70);
        assert_eq!(
            parse_uidl_line(format!("3 {uid70}").as_bytes()),
            Ok((3, uid70))
        );
        for bad in [
            &b""[..],
            b"1",
            b"0 abc",
            b"-1 abc",
            b"+1 abc",
            b"x abc",
            b"1 abc def",
            b"1 ab\xffc",
            b"99999999999 abc",
            b"1 \x7f",
        ] {
            assert!(parse_uidl_line(bad).is_err(), "{bad:?}");
        }
        let uid71 = format!("1 {}", "x".repeat(71));
        assert!(parse_uidl_line(uid71.as_bytes()).is_err());
        // The entry form keeps the message number of a bad id.
        let (n, id) = parse_uidl_entry(uid71.as_bytes()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(id.unwrap_err().reason, "longer than 70 characters");
        for (line, n) in [(&b"4 ab\xffc"[..], 4), (b"5 abc def", 5), (b"6 \x7f", 6)] {
            let (got, id) = parse_uidl_entry(line).unwrap();
            assert_eq!(got, n);
            assert!(id.is_err(), "{line:?}");
        }
        assert_eq!(
            parse_uidl_entry(b" 7\tok\t ").unwrap(),
            (7, Ok("ok".into()))
        );
        for bad in [&b""[..], b"1", b"1   ", b"x abc", b"0 abc"] {
            assert!(parse_uidl_entry(bad).is_err(), "{bad:?}");
        }

        assert_eq!(parse_list_line(b"2 200"), Ok((2, 200)));
        assert_eq!(parse_list_line(b"2 200 extra"), Ok((2, 200)));
        assert!(parse_list_line(b"2").is_err());
        assert!(parse_list_line(b"2 -5").is_err());
        assert!(parse_list_line(b"2 99999999999999999999999").is_err());
        assert_eq!(parse_stat(b"2 320"), Ok((2, 320)));
        assert_eq!(parse_stat(b"0 0 messages"), Ok((0, 0)));
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"two 320").is_err());

        assert_eq!(listing_line(b"."), None);
        assert_eq!(listing_line(b"..x"), Some(&b".x"[..]));
        assert_eq!(listing_line(b"1 2"), Some(&b"1 2"[..]));
    }
}
