//! What a server announced in its CAPA listing (RFC 2449).
//!
//! Why a type of its own: the client decides from it how to log in (SASL
//! PLAIN, USER, APOP), whether to pipeline, and how long the server wants
//! between two logins (LOGIN-DELAY). It is named `Capa` after the command,
//! so that it is never mistaken for the IMAP side's capabilities. A server
//! that answers CAPA with -ERR is "unknown", which is not the same as
//! "offers nothing": RFC 1939 servers still take USER/PASS.

use std::time::Duration;

use super::listing::parse_num;

/// The longest wait between two logins taken from a server's LOGIN-DELAY.
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a server announced in its CAPA listing (RFC 2449).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capa {
    lines: Vec<String>,
    /// False when the server answered CAPA with -ERR (an RFC 1939-only
    /// server): nothing is known, which is not the same as nothing offered.
    announced: bool,
}

impl Capa {
    /// The capabilities from the lines of a CAPA listing (already unstuffed).
    pub fn from_lines<I, L>(lines: I) -> Capa
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        Capa {
            lines: lines
                .into_iter()
                .map(|l| String::from_utf8_lossy(l.as_ref()).trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            announced: true,
        }
    }

    /// A server that does not support CAPA.
    pub fn unknown() -> Capa {
        Capa::default()
    }

    /// True when the server answered CAPA at all.
    pub fn announced(&self) -> bool {
        self.announced
    }

    /// The lines as the server sent them.
    pub fn raw(&self) -> &[String] {
        &self.lines
    }

    fn line(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let mut it = l.splitn(2, [' ', '\t']);
            let tag = it.next()?;
            tag.eq_ignore_ascii_case(name)
                .then(|| it.next().unwrap_or("").trim())
        })
    }

    /// True when a capability of this name (case-insensitive) was listed.
    pub fn has(&self, name: &str) -> bool {
        self.line(name).is_some()
    }

    /// The arguments of a capability (e.g. `SASL PLAIN LOGIN` → `["PLAIN", "LOGIN"]`).
    pub fn args(&self, name: &str) -> Vec<&str> {
        self.line(name)
            .map(|a| a.split_ascii_whitespace().collect())
            .unwrap_or_default()
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }

    /// True when UIDL was listed (RFC 2449); on a server that did not
    /// answer CAPA nothing is known (see [`Capa::announced`]).
    pub fn uidl(&self) -> bool {
        self.has("UIDL")
    }

    /// True when UTF8 (RFC 6856) was listed, with or without its `USER`
    /// argument.
    pub fn utf8(&self) -> bool {
        self.has("UTF8")
    }

    pub fn user(&self) -> bool {
        self.has("USER")
    }

    /// True when `mechanism` (case-insensitive) is among the SASL ones.
    pub fn sasl(&self, mechanism: &str) -> bool {
        self.args("SASL")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The least time the server wants between two logins (RFC 2449
    /// `LOGIN-DELAY <seconds>`), at most [`MAX_LOGIN_DELAY`]: a server may
    /// announce any number, up to 2^64-1 and beyond, and a wait of years is
    /// a wait of a day here. `None` when it announced none, or an argument
    /// that is not a number of seconds (a sign, a fraction, garbage).
    pub fn login_delay(&self) -> Option<Duration> {
        let arg = *self.args("LOGIN-DELAY").first()?;
        let digits = arg.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // All digits, but more than a u64 holds: longer than the cap anyway.
        let secs = parse_num(digits).unwrap_or(u64::MAX);
        Some(Duration::from_secs(secs).min(MAX_LOGIN_DELAY))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let c = Capa::from_lines([
            &b"TOP"[..],
            b"UIDL",
            b"RESP-CODES",
            b"PIPELINING",
            b"sasl PLAIN login",
            b"USER",
            b"STLS",
            b"IMPLEMENTATION Test server",
        ]);
        assert!(c.announced());
        assert!(c.pipelining() && c.user());
        assert!(c.has("top") && c.has("UIDL") && c.has("RESP-CODES") && c.has("STLS"));
        assert!(c.has("implementation"));
        assert!(!c.has("IMPL"));
        assert_eq!(c.args("SASL"), vec!["PLAIN", "login"]);
        assert_eq!(c.args("implementation"), vec!["Test", "server"]);
        assert!(c.sasl("plain") && c.sasl("LOGIN"));
        assert!(!c.sasl("CRAM-MD5"));
        assert_eq!(c.raw().len(), 8);
        assert_eq!(c.login_delay(), None);
        let u = Capa::unknown();
        assert!(!u.announced() && !u.has("USER") && u.args("SASL").is_empty());
        assert!(!u.pipelining() && !u.user() && !u.sasl("PLAIN"));
        assert_eq!(u.login_delay(), None);
    }

    fn delay(line: &str) -> Option<Duration> {
        Capa::from_lines([line]).login_delay()
    }

    #[test]
    fn login_delay_is_parsed_and_clamped() {
        assert_eq!(delay("LOGIN-DELAY 900"), Some(Duration::from_secs(900)));
        assert_eq!(delay("login-delay\t60"), Some(Duration::from_secs(60)));
        assert_eq!(delay("login-delay 60 USER"), Some(Duration::from_secs(60)));
        assert_eq!(delay("LOGIN-DELAY 0"), Some(Duration::ZERO));
        assert_eq!(delay("LOGIN-DELAY 86400"), Some(MAX_LOGIN_DELAY));
        assert_eq!(
            delay("LOGIN-DELAY 86399"),
            Some(Duration::from_secs(86_399))
        );
        assert_eq!(
            delay("LOGIN-DELAY 0000000000000000000000000030"),
            Some(MAX_LOGIN_DELAY)
        );
    }

    #[test]
    fn hostile_login_delays_neither_panic_nor_overflow() {
        for huge in [
            "18446744073709551615", // 2^64-1
            "18446744073709551616", // 2^64
            "9223372036854775808",  // 2^63
            "9223372036854775807",  // 2^63-1
            "99999999999999999999999999999999999999999999999999",
            "86401",
        ] {
            assert_eq!(
                delay(&format!("LOGIN-DELAY {huge}")),
                Some(MAX_LOGIN_DELAY),
                "{huge}"
            );
        }
        for bad in [
            "LOGIN-DELAY",
            "LOGIN-DELAY ",
            "LOGIN-DELAY -1",
            "LOGIN-DELAY -9223372036854775808",
            "LOGIN-DELAY +5",
            "LOGIN-DELAY 1.5",
            "LOGIN-DELAY 15m",
            "LOGIN-DELAY abc",
            "LOGIN-DELAY \u{0660}",
            "LOGIN-DELAY ١٢",
            "LOGIN-DELAYS 5",
        ] {
            assert_eq!(delay(bad), None, "{bad:?}");
        }
        let raw = Capa::from_lines([&b"LOGIN-DELAY \xff\xfe"[..]]);
        assert_eq!(raw.login_delay(), None);
    }
}
