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

/// Parses a UIDL listing line: `n unique-id`, the id 1 to 70 characters in
/// 0x21..=0x7E.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ProtoError> {
    let bad = || ProtoError::BadListing {
        what: "UIDL",
        line: excerpt(line),
    };
    let mut f = fields(line);
    let n = f.next().and_then(parse_msg_num).ok_or_else(bad)?;
    let uid = f.next().ok_or_else(bad)?;
    if f.next().is_some()
        || uid.len() > MAX_UIDL_LEN
        || !uid.iter().all(|&b| (0x21..=0x7e).contains(&b))
    {
        return Err(bad());
    }
    let uid = std::str::from_utf8(uid).map_err(|_| bad())?;
    Ok((n, uid.to_owned()))
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
