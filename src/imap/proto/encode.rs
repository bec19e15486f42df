//! Turning our values into IMAP command arguments, and server text back into
//! a response code and a bounded message.
//!
//! Why by hand: every argument we send comes from configuration or from a
//! message (mailbox names, flags, dates, Message-IDs), so each must be
//! checked and encoded exactly (a quoted string where that is safe, a literal
//! otherwise; modified UTF-7 for mailbox names) instead of being pasted into a
//! command line. Server text is untrusted: it is cut to a bounded, printable
//! form before it reaches an error or a log.

use base64::Engine as _;

/// At most this many characters of server text are kept in an error.
pub const MAX_TEXT: usize = 300;

/// A string argument: quoted when that is safe, else a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Already quoted, ready to send (`"INBOX"`).
    Quoted(String),
    /// Raw bytes to send as a literal.
    Literal(Vec<u8>),
}

/// A quoted string when every byte is printable ASCII other than `"` and
/// `\` (which some servers mishandle even escaped); a literal otherwise.
pub fn string_arg(value: &[u8]) -> Arg {
    if value
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        let mut s = String::with_capacity(value.len() + 2);
        s.push('"');
        s.extend(value.iter().map(|&b| char::from(b)));
        s.push('"');
        Arg::Quoted(s)
    } else {
        Arg::Literal(value.to_vec())
    }
}

/// Encodes a mailbox name given in UTF-8 as IMAP modified UTF-7 (RFC 3501
/// section 5.1.3): printable ASCII stays, `&` becomes `&-`, anything else is
/// base64 of UTF-16BE between `&` and `-`. Control characters are refused.
pub fn mailbox_utf7(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the mailbox name is empty".into());
    }
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(
            &base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(bytes)
                .replace('/', ","),
        );
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if ch.is_ascii_control() {
            return Err(format!(
                "the mailbox name {name:?} holds a control character"
            ));
        }
        if ch.is_ascii() {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    Ok(out)
}

/// The mailbox argument: modified UTF-7, then quoted (or a literal).
pub fn mailbox_arg(name: &str) -> Result<Arg, String> {
    Ok(string_arg(mailbox_utf7(name)?.as_bytes()))
}

/// ATOM-CHAR: any 7-bit CHAR except atom-specials.
pub(crate) fn is_atom_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

const SYSTEM_FLAGS: &[&str] = &["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// The flag list of an APPEND (`(\Seen $Label1)`), or `None` when empty.
/// System flags are written in their canonical case; `\Recent` cannot be set
/// by a client; keywords must be atoms.
pub fn flag_list(flags: &[String]) -> Result<Option<String>, String> {
    if flags.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(flags.len());
    for flag in flags {
        let flag = flag.trim();
        let (system, atom) = match flag.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, flag),
        };
        if atom.is_empty() || !atom.bytes().all(is_atom_char) {
            return Err(format!("{flag:?} is not a valid IMAP flag"));
        }
        if system {
            if atom.eq_ignore_ascii_case("Recent") {
                return Err("the \\Recent flag cannot be set by a client".into());
            }
            match SYSTEM_FLAGS.iter().find(|f| f.eq_ignore_ascii_case(flag)) {
                Some(canonical) => parts.push((*canonical).to_owned()),
                None => parts.push(flag.to_owned()),
            }
        } else {
            parts.push(flag.to_owned());
        }
    }
    Ok(Some(format!("({})", parts.join(" "))))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn digits(s: &str, min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Checks an INTERNALDATE ("dd-Mon-yyyy hh:mm:ss +zzzz"; a one-digit or
/// space-padded day and any month case are accepted) and returns it quoted
/// in canonical form, ready for APPEND.
pub fn internal_date_arg(date: &str) -> Result<String, String> {
    let bad = || format!("{date:?} is not an IMAP date-time (\"dd-Mon-yyyy hh:mm:ss +zzzz\")");
    let mut words = date.split_ascii_whitespace();
    let (Some(day_part), Some(time), Some(zone), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad());
    };
    let mut dmy = day_part.split('-');
    let (Some(d), Some(mon), Some(y), None) = (dmy.next(), dmy.next(), dmy.next(), dmy.next())
    else {
        return Err(bad());
    };
    let day = digits(d, 1, 2)
        .filter(|d| (1..=31).contains(d))
        .ok_or_else(bad)?;
    let month = MONTHS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(mon))
        .ok_or_else(bad)?;
    let year = digits(y, 4, 4).ok_or_else(bad)?;
    let mut hms = time.split(':');
    let (Some(h), Some(m), Some(s), None) = (hms.next(), hms.next(), hms.next(), hms.next()) else {
        return Err(bad());
    };
    let h = digits(h, 2, 2).filter(|v| *v <= 23).ok_or_else(bad)?;
    let m = digits(m, 2, 2).filter(|v| *v <= 59).ok_or_else(bad)?;
    let s = digits(s, 2, 2).filter(|v| *v <= 60).ok_or_else(bad)?;
    let (sign, zdigits) = match zone.as_bytes().first() {
        Some(b'+') => ('+', zone.get(1..)),
        Some(b'-') => ('-', zone.get(1..)),
        _ => return Err(bad()),
    };
    let z = zdigits.and_then(|z| digits(z, 4, 4)).ok_or_else(bad)?;
    if z % 100 > 59 {
        return Err(bad());
    }
    Ok(format!(
        "\"{day:02}-{month}-{year:04} {h:02}:{m:02}:{s:02} {sign}{z:04}\""
    ))
}

/// Splits a leading `[CODE ...]` off server text (for codes the parser does
/// not know, which it leaves in the text) and returns the upper-cased code
/// word and the rest.
pub fn split_code(text: &str) -> (Option<String>, &str) {
    let t = text.trim_start();
    if let Some(inner) = t.strip_prefix('[')
        && let Some(end) = inner.find(']')
    {
        let code = inner.get(..end).unwrap_or_default();
        let word = code.split_ascii_whitespace().next().unwrap_or_default();
        let rest = inner.get(end + 1..).unwrap_or_default().trim_start();
        if !word.is_empty() && word.bytes().all(is_atom_char) {
            return (Some(word.to_ascii_uppercase()), rest);
        }
    }
    (None, text)
}

/// Server text made safe to store and print: control characters replaced,
/// cut to [`MAX_TEXT`] characters.
pub fn bounded_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_TEXT).is_some() {
        out.push('…');
    }
    let trimmed = out.trim();
    if trimmed.is_empty() {
        "(no text)".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A UID set for UID FETCH: `1,5,9`.
pub fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_only_when_safe() {
        assert_eq!(string_arg(b"INBOX"), Arg::Quoted("\"INBOX\"".into()));
        assert_eq!(string_arg(b"a b"), Arg::Quoted("\"a b\"".into()));
        assert_eq!(string_arg(b""), Arg::Quoted("\"\"".into()));
        assert_eq!(string_arg(b"a\"b"), Arg::Literal(b"a\"b".to_vec()));
        assert_eq!(string_arg(b"a\\b"), Arg::Literal(b"a\\b".to_vec()));
        assert_eq!(string_arg(b"x\r\ny"), Arg::Literal(b"x\r\ny".to_vec()));
        assert_eq!(
            string_arg("pässword".as_bytes()),
            Arg::Literal("pässword".as_bytes().to_vec())
        );
    }

    #[test]
    fn message_ids_are_quoted_or_literal() {
        assert_eq!(
            string_arg(b"<1234.5678@example.com>"),
            Arg::Quoted("\"<1234.5678@example.com>\"".into())
        );
        assert!(matches!(
            string_arg(b"<\"odd\"@example.com>"),
            Arg::Literal(_)
        ));
        assert!(matches!(
            string_arg("<ü@example.com>".as_bytes()),
            Arg::Literal(_)
        ));
    }

    #[test]
    fn mailbox_names_use_modified_utf7() {
        assert_eq!(mailbox_utf7("INBOX").as_deref(), Ok("INBOX"));
        assert_eq!(mailbox_utf7("Tom & Jerry").as_deref(), Ok("Tom &- Jerry"));
        // RFC 3501 section 5.1.3 examples.
        assert_eq!(
            mailbox_utf7("~peter/mail/台北/日本語").as_deref(),
            Ok("~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        );
        assert_eq!(mailbox_utf7("Boîte").as_deref(), Ok("Bo&AO4-te"));
        assert!(mailbox_utf7("").is_err());
        assert!(mailbox_utf7("a\nb").is_err());
        assert_eq!(
            mailbox_arg("Archive/POP"),
            Ok(Arg::Quoted("\"Archive/POP\"".into()))
        );
        assert_eq!(mailbox_arg("a\"b"), Ok(Arg::Literal(b"a\"b".to_vec())));
    }

    #[test]
    fn flags_are_checked_and_canonical() {
        assert_eq!(flag_list(&[]), Ok(None));
        assert_eq!(
            flag_list(&["\\seen".into(), "$Label1".into(), "\\Flagged".into()]),
            Ok(Some("(\\Seen $Label1 \\Flagged)".into()))
        );
        assert!(flag_list(&["\\Recent".into()]).is_err());
        assert!(flag_list(&["two words".into()]).is_err());
        assert!(flag_list(&["(x".into()]).is_err());
        assert!(flag_list(&["\\".into()]).is_err());
        assert!(flag_list(&["".into()]).is_err());
        assert!(flag_list(&["\"q\"".into()]).is_err());
    }

    #[test]
    fn internal_dates_are_checked_and_normalised() {
        assert_eq!(
            internal_date_arg("17-Jul-1996 02:44:25 -0700").as_deref(),
            Ok("\"17-Jul-1996 02:44:25 -0700\"")
        );
        assert_eq!(
            internal_date_arg(" 5-jan-2024 10:00:00 +0100").as_deref(),
            Ok("\"05-Jan-2024 10:00:00 +0100\"")
        );
        assert_eq!(
            internal_date_arg("5-Jan-2024 23:59:60 +0000").as_deref(),
            Ok("\"05-Jan-2024 23:59:60 +0000\"")
        );
        for bad in [
            "",
            "17-Jul-1996",
            "32-Jul-1996 02:44:25 -0700",
            "17-Jux-1996 02:44:25 -0700",
            "17-Jul-96 02:44:25 -0700",
            "17-Jul-1996 24:00:00 -0700",
            "17-Jul-1996 02:44 -0700",
            "17-Jul-1996 02:44:25 0700",
            "17-Jul-1996 02:44:25 -07",
            "17-Jul-1996 02:44:25 -0760",
            "17-Jul-1996 02:44:25 -0700 x",
            "17-Jul-1996 02:44:25 \"-0700",
            "١٧-Jul-1996 02:44:25 -0700",
        ] {
            assert!(internal_date_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_codes_are_split_from_text() {
        assert_eq!(
            split_code("[OVERQUOTA] Quota exceeded (mailbox for user is full)"),
            (
                Some("OVERQUOTA".into()),
                "Quota exceeded (mailbox for user is full)"
            )
        );
        assert_eq!(
            split_code("[limit 50] too many"),
            (Some("LIMIT".into()), "too many")
        );
        assert_eq!(split_code("no code here"), (None, "no code here"));
        assert_eq!(split_code("[unterminated"), (None, "[unterminated"));
        assert_eq!(split_code("[] empty"), (None, "[] empty"));
        assert_eq!(split_code("[TOOBIG]"), (Some("TOOBIG".into()), ""));
    }

    #[test]
    fn server_text_is_bounded_and_printable() {
        assert_eq!(bounded_text("a\r\nb\u{7}"), "a  b");
        let long = "x".repeat(10_000);
        let b = bounded_text(&long);
        assert_eq!(b.chars().count(), MAX_TEXT + 1);
        assert_eq!(bounded_text("  "), "(no text)");
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[3, 1, 20]), "3,1,20");
        assert_eq!(uid_set(&[]), "");
    }
}
