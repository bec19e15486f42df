//! The authentication mechanisms, one enum per protocol.
//!
//! Why one enum per protocol rather than one for both: a POP3 mechanism on
//! the IMAP side (or the reverse) is then not a value the settings can hold,
//! so it is refused when the configuration is loaded (exit status 2, before
//! any server is contacted) and neither client has a "wrong protocol" case
//! to handle at login. The [`Mechanism`] trait gives the loader and the
//! messages what both enums share: their names, the accepted values, and
//! which side of an account they belong to.

use std::fmt;

/// What the configuration loader and the messages need to know about a
/// protocol's mechanisms.
/// The default (`auto`) is what an absent `auth` key means.
pub trait Mechanism: Copy + Eq + Default + fmt::Debug + Send + Sync + 'static {
    /// The protocol, for messages: "POP3" or "IMAP".
    const PROTOCOL: &'static str;
    /// The account table it is configured in: "source" or "target".
    const SIDE: &'static str;
    /// Every mechanism, in the order the documentation lists them.
    const ALL: &'static [Self];

    /// The value of `auth` in the configuration file.
    fn name(self) -> &'static str;

    /// False for a mechanism that proves the password without sending it
    /// (APOP sends a digest), so that it may go over a connection without TLS.
    /// An OAuth2 mechanism sends its bearer token, which is as good as a
    /// password to whoever reads it: true, with the same TLS rules.
    fn sends_password(self) -> bool {
        true
    }

    /// True for a mechanism that presents an OAuth2 access token
    /// ([`Credential::Bearer`](super::Credential::Bearer)) rather than a
    /// password: XOAUTH2 and OAUTHBEARER.
    fn needs_bearer(self) -> bool {
        false
    }

    /// The mechanism named `name` (as written in the file), if this protocol
    /// has it.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// The accepted values, for messages: "auto, user, apop, plain, xoauth2
    /// or oauthbearer".
    fn accepted() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

/// How to log in to the POP3 server (`[accounts.source] auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pop3Auth {
    /// SASL PLAIN if offered, else USER/PASS, else APOP; APOP where the
    /// password may not cross a connection without TLS.
    #[default]
    Auto,
    /// USER/PASS.
    User,
    /// APOP (needs a timestamp in the greeting).
    Apop,
    /// AUTH PLAIN (RFC 5034).
    Plain,
    /// AUTH XOAUTH2 (Google's and Microsoft's), in two steps: the command,
    /// then the base64 response after the server's `+`.
    XOAuth2,
    /// AUTH OAUTHBEARER (RFC 7628), in two steps like XOAUTH2.
    OAuthBearer,
}

impl Mechanism for Pop3Auth {
    const PROTOCOL: &'static str = "POP3";
    const SIDE: &'static str = "source";
    const ALL: &'static [Pop3Auth] = &[
        Pop3Auth::Auto,
        Pop3Auth::User,
        Pop3Auth::Apop,
        Pop3Auth::Plain,
        Pop3Auth::XOAuth2,
        Pop3Auth::OAuthBearer,
    ];

    fn name(self) -> &'static str {
        match self {
            Pop3Auth::Auto => "auto",
            Pop3Auth::User => "user",
            Pop3Auth::Apop => "apop",
            Pop3Auth::Plain => "plain",
            Pop3Auth::XOAuth2 => "xoauth2",
            Pop3Auth::OAuthBearer => "oauthbearer",
        }
    }

    fn sends_password(self) -> bool {
        self != Pop3Auth::Apop
    }

    fn needs_bearer(self) -> bool {
        matches!(self, Pop3Auth::XOAuth2 | Pop3Auth::OAuthBearer)
    }
}

/// How to log in to the IMAP server (`[accounts.target] auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImapAuth {
    /// AUTHENTICATE PLAIN if offered, else LOGIN.
    #[default]
    Auto,
    /// LOGIN.
    Login,
    /// AUTHENTICATE PLAIN (RFC 4616).
    Plain,
    /// AUTHENTICATE XOAUTH2 (SASL-IR where offered).
    XOAuth2,
    /// AUTHENTICATE OAUTHBEARER (RFC 7628; SASL-IR where offered).
    OAuthBearer,
}

impl Mechanism for ImapAuth {
    const PROTOCOL: &'static str = "IMAP";
    const SIDE: &'static str = "target";
    const ALL: &'static [ImapAuth] = &[
        ImapAuth::Auto,
        ImapAuth::Login,
        ImapAuth::Plain,
        ImapAuth::XOAuth2,
        ImapAuth::OAuthBearer,
    ];

    fn name(self) -> &'static str {
        match self {
            ImapAuth::Auto => "auto",
            ImapAuth::Login => "login",
            ImapAuth::Plain => "plain",
            ImapAuth::XOAuth2 => "xoauth2",
            ImapAuth::OAuthBearer => "oauthbearer",
        }
    }

    fn needs_bearer(self) -> bool {
        matches!(self, ImapAuth::XOAuth2 | ImapAuth::OAuthBearer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_on_their_side() {
        for m in Pop3Auth::ALL {
            assert_eq!(Pop3Auth::from_name(m.name()), Some(*m));
        }
        for m in ImapAuth::ALL {
            assert_eq!(ImapAuth::from_name(m.name()), Some(*m));
        }
        assert_eq!(Pop3Auth::from_name("login"), None);
        assert_eq!(ImapAuth::from_name("apop"), None);
        assert_eq!(ImapAuth::from_name("user"), None);
        assert_eq!(Pop3Auth::from_name("Auto"), None, "names are lower case");
    }

    #[test]
    fn accepted_values_read_as_a_list() {
        assert_eq!(
            Pop3Auth::accepted(),
            "auto, user, apop, plain, xoauth2 or oauthbearer"
        );
        assert_eq!(
            ImapAuth::accepted(),
            "auto, login, plain, xoauth2 or oauthbearer"
        );
    }

    #[test]
    fn only_apop_keeps_the_password_off_the_wire() {
        let digest_only: Vec<&str> = Pop3Auth::ALL
            .iter()
            .filter(|m| !m.sends_password())
            .map(|m| m.name())
            .collect();
        assert_eq!(digest_only, ["apop"]);
        assert!(ImapAuth::ALL.iter().all(|m| m.sends_password()));
    }

    #[test]
    fn only_the_oauth2_mechanisms_need_a_bearer_token() {
        let bearer: Vec<&str> = Pop3Auth::ALL
            .iter()
            .filter(|m| m.needs_bearer())
            .map(|m| m.name())
            .collect();
        assert_eq!(bearer, ["xoauth2", "oauthbearer"]);
        let bearer: Vec<&str> = ImapAuth::ALL
            .iter()
            .filter(|m| m.needs_bearer())
            .map(|m| m.name())
            .collect();
        assert_eq!(bearer, ["xoauth2", "oauthbearer"]);
        // The token is a secret on the wire: TLS rules as for passwords.
        assert!(Pop3Auth::XOAuth2.sends_password() && ImapAuth::OAuthBearer.sends_password());
    }
}
