//! What an IMAP server says it can do, in the form the rest of popferry asks.
//!
//! Why our own type rather than the parser's: we need case-insensitive
//! lookups of a few extensions that decide how a message is sent (LITERAL+,
//! LITERAL-, BINARY, UIDPLUS, SASL-IR, ...) and a list that `popferry check`
//! can print; the set is refreshed after STARTTLS and after login, as RFC 3501
//! requires.

use std::collections::BTreeSet;

use imap_codec::imap_types::response::Capability;

/// The capability list, upper-cased (`AUTH=PLAIN`, `LITERAL+`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    names: BTreeSet<String>,
}

impl Capabilities {
    /// Builds the set from names as the server sent them.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Capabilities {
            names: names
                .into_iter()
                .map(|n| n.as_ref().to_ascii_uppercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// The set of a parsed CAPABILITY response or response code.
    pub(crate) fn from_parsed(caps: &[Capability<'_>]) -> Self {
        Self::from_names(caps.iter().map(ToString::to_string))
    }

    /// Whether the server advertises `name` (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(&name.to_ascii_uppercase())
    }

    /// Every capability, upper-cased and sorted (for `popferry check`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// RFC 4315: APPENDUID in the APPEND's OK.
    pub fn uidplus(&self) -> bool {
        self.has("UIDPLUS")
    }

    /// RFC 3516: literal8 (`~{n}`) keeps NUL bytes exact.
    pub fn binary(&self) -> bool {
        self.has("BINARY")
    }

    /// RFC 7888: non-synchronizing literals of any size.
    pub fn literal_plus(&self) -> bool {
        self.has("LITERAL+")
    }

    /// RFC 7888: non-synchronizing literals up to 4096 bytes.
    pub fn literal_minus(&self) -> bool {
        self.has("LITERAL-")
    }

    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    /// The server forbids the LOGIN command (usually before STARTTLS).
    pub fn login_disabled(&self) -> bool {
        self.has("LOGINDISABLED")
    }

    /// RFC 4959: the first SASL response may travel with AUTHENTICATE.
    pub fn sasl_ir(&self) -> bool {
        self.has("SASL-IR")
    }

    /// Whether SASL mechanism `mech` is offered (`auth("PLAIN")`).
    pub fn auth(&self, mech: &str) -> bool {
        self.has(&format!("AUTH={mech}"))
    }

    /// RFC 7889: the largest message the server takes (`APPENDLIMIT=n`);
    /// `None` when it announces none, or only per-mailbox limits (a bare
    /// `APPENDLIMIT`).
    pub fn append_limit(&self) -> Option<u64> {
        self.names
            .iter()
            .filter_map(|n| n.strip_prefix("APPENDLIMIT="))
            .find_map(|v| v.parse().ok())
    }

    /// Whether a literal of `len` bytes may be sent without waiting for the
    /// server's "+" (LITERAL+, or LITERAL- for at most 4096 bytes).
    pub fn non_sync_literal(&self, len: u64) -> bool {
        self.literal_plus() || (self.literal_minus() && len <= 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_case_insensitive() {
        let c =
            Capabilities::from_names(["IMAP4rev1", "literal+", "AUTH=plain", "UIDPLUS", "Binary"]);
        assert!(c.has("imap4REV1"));
        assert!(c.literal_plus() && c.uidplus() && c.binary() && c.auth("PLAIN"));
        assert!(!c.literal_minus() && !c.login_disabled());
        assert!(c.non_sync_literal(10_000_000));
    }

    #[test]
    fn append_limit_is_read_when_it_has_a_value() {
        let c = Capabilities::from_names(["IMAP4rev1", "appendlimit=35651584"]);
        assert_eq!(c.append_limit(), Some(35_651_584));
        assert_eq!(
            Capabilities::from_names(["APPENDLIMIT"]).append_limit(),
            None
        );
        assert_eq!(
            Capabilities::from_names(["APPENDLIMIT=x"]).append_limit(),
            None
        );
        assert_eq!(Capabilities::default().append_limit(), None);
    }

    #[test]
    fn literal_minus_is_limited_to_4096() {
        let c = Capabilities::from_names(["LITERAL-"]);
        assert!(c.non_sync_literal(4096));
        assert!(!c.non_sync_literal(4097));
        assert!(!Capabilities::default().non_sync_literal(1));
    }
}
