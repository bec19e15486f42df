//! What the sync engine reads from a message's header section: its
//! Message-ID, its arrival date, and the IMAP INTERNALDATE to append it
//! with. Pure functions over bytes: no I/O, easy to test.

use mail_parser::{DateTime, MessageParser};

use crate::config::InternalDate;

/// Facts taken from one header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Without angle brackets, as mail-parser returns it.
    pub message_id: Option<String>,
    /// Date of the topmost (most recent) Received header.
    pub received: Option<DateTime>,
    /// The Date header.
    pub date: Option<DateTime>,
    /// The SHA-256 (hex) of the header section itself, kept in the ledger:
    /// a message listed later under the same UIDL and size is the copied
    /// one only if its header section (TOP n 0) still has this digest.
    pub header_sha256: String,
}

impl HeaderFacts {
    /// Parses a header section (the bytes up to and including the blank line).
    /// Malformed input gives empty facts, never an error.
    pub fn parse(header: &[u8]) -> HeaderFacts {
        let header_sha256 = crate::spool::header_sha256(header);
        let Some(msg) = MessageParser::default().parse_headers(header) else {
            return HeaderFacts {
                header_sha256,
                ..HeaderFacts::default()
            };
        };
        HeaderFacts {
            header_sha256,
            message_id: msg
                .message_id()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 998)
                .map(str::to_owned),
            received: msg.received_all().find_map(|r| r.date()).filter(valid),
            date: msg.date().copied().filter(valid),
        }
    }

    /// When the message arrived: the topmost Received date, else Date.
    pub fn arrival(&self) -> Option<&DateTime> {
        self.received.as_ref().or(self.date.as_ref())
    }

    /// The INTERNALDATE argument for APPEND under the given policy, or None
    /// to let the server use the time of the APPEND.
    pub fn internal_date(&self, policy: InternalDate) -> Option<String> {
        let dt = match policy {
            InternalDate::Received => self.arrival(),
            InternalDate::Date => self.date.as_ref(),
            InternalDate::Now => None,
        }?;
        Some(imap_date_time(dt))
    }
}

fn valid(dt: &DateTime) -> bool {
    (1900..=9999).contains(&dt.year)
        && (1..=12).contains(&dt.month)
        && (1..=31).contains(&dt.day)
        && dt.hour < 24
        && dt.minute < 60
        && dt.second < 61
        && dt.tz_hour < 24
        && dt.tz_minute < 60
}

/// Formats an RFC 3501 date-time: `"dd-Mon-yyyy hh:mm:ss +zzzz"` (without
/// the quotes), keeping the original zone.
pub fn imap_date_time(dt: &DateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(usize::from(dt.month).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}",
        dt.day,
        month,
        dt.year,
        dt.hour,
        dt.minute,
        dt.second.min(59),
        if dt.tz_before_gmt { '-' } else { '+' },
        dt.tz_hour,
        dt.tz_minute
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &[u8] = b"Received: from a by b; Tue, 02 Jan 2024 10:00:00 +0100\r\n\
Received: from c by a; Mon, 01 Jan 2024 09:00:00 +0000\r\n\
Date: Sun, 31 Dec 2023 23:59:59 -0500\r\n\
Message-ID: <abc@example.net>\r\n\
Subject: hi\r\n\r\n";

    #[test]
    fn picks_topmost_received_then_date() {
        let f = HeaderFacts::parse(HDR);
        assert_eq!(f.message_id.as_deref(), Some("abc@example.net"));
        assert_eq!(
            f.internal_date(InternalDate::Received).as_deref(),
            Some("02-Jan-2024 10:00:00 +0100")
        );
        assert_eq!(
            f.internal_date(InternalDate::Date).as_deref(),
            Some("31-Dec-2023 23:59:59 -0500")
        );
        assert_eq!(f.internal_date(InternalDate::Now), None);
        let no_received = HeaderFacts::parse(b"Date: Sun, 31 Dec 2023 23:59:59 -0500\r\n\r\n");
        assert_eq!(
            no_received.internal_date(InternalDate::Received).as_deref(),
            Some("31-Dec-2023 23:59:59 -0500")
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        let f = HeaderFacts::parse(b"\xff\xfe\x00garbage");
        assert_eq!(f.internal_date(InternalDate::Received), None);
        let f = HeaderFacts::parse(b"");
        assert_eq!((f.message_id, f.received, f.date), (None, None, None));
        assert_eq!(f.header_sha256, crate::spool::header_sha256(b""));
    }
}
