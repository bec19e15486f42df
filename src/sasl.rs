//! SASL client exchanges shared by POP3 (`AUTH`, RFC 5034) and IMAP
//! (`AUTHENTICATE`, RFC 3501/4959): PLAIN (RFC 4616), LOGIN, XOAUTH2
//! (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).
//!
//! Why one module: the mechanisms do not depend on the protocol that carries
//! them, and PLAIN used to be encoded twice. This module is sans-IO: it
//! builds the base64 responses, the protocol module writes them (after
//! `AUTH`/`AUTHENTICATE`, as an initial response where the server allows it,
//! SASL-IR) and feeds back each server challenge.
//!
//! An OAuth2 server that refuses a token says why in one last challenge, a
//! base64 JSON object (`{"status":"401","scope":"..."}`, RFC 7628 section
//! 3.2.2; XOAUTH2 alike); [`Exchange::respond`] acknowledges it as the
//! mechanism's document says and keeps what it said, decoded and bounded
//! ([`OAuthError`]), for the error message after the server's final refusal.
//!
//! Secrets (guarantee 7): every buffer that holds a password, a token or
//! their base64 is a [`Zeroizing`] buffer, wiped on drop; [`Exchange`]'s
//! `Debug` shows only the mechanism, and nothing here logs.

use std::collections::VecDeque;
use std::fmt;

use base64::Engine as _;
use secrecy::zeroize::Zeroizing;

/// The words of a refused OAuth2 login, the same on either side:
/// `protocol` ("POP3", "IMAP"), what was sent (`AUTH XOAUTH2`, say), the
/// server's text and the decoded error challenge. Never holds the token.
pub(crate) fn write_token_refused(
    f: &mut fmt::Formatter<'_>,
    protocol: &str,
    server: &str,
    sent: &str,
    text: &str,
    detail: Option<&str>,
) -> fmt::Result {
    write!(
        f,
        "{protocol} server {server} refused the OAuth2 access token ({sent}): {text}"
    )?;
    if let Some(detail) = detail {
        write!(f, " ({detail})")?;
    }
    write!(
        f,
        "; check the username, that the token is for this mailbox and its scope allows {protocol}"
    )
}

/// The words of a credential of the wrong kind for `auth` (a password for
/// an OAuth2 mechanism, or a token for a password one); `side` is the
/// configuration table ("source", "target").
pub(crate) fn write_wrong_credential(
    f: &mut fmt::Formatter<'_>,
    protocol: &str,
    server: &str,
    side: &str,
    auth: &str,
    got: &str,
) -> fmt::Result {
    write!(
        f,
        "{protocol} server {server}: auth = \"{auth}\" cannot log in with {got}; "
    )?;
    if got == "a password" {
        write!(
            f,
            "it needs an OAuth2 access token ([accounts.{side}.oauth2])"
        )
    } else {
        write!(f, "it needs a password")
    }
}

/// A SASL mechanism this client can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: `authzid NUL authcid NUL password` in one response.
    Plain,
    /// The obsolete but common LOGIN: the username, then the password, each
    /// in answer to a challenge.
    Login,
    /// Google's and Microsoft's `user=..^Aauth=Bearer ..^A^A`.
    XOAuth2,
    /// RFC 7628: a GS2 header, then `host`, `port` and `auth` key-values.
    OAuthBearer,
}

impl Mechanism {
    /// The name as written after `AUTH` / `AUTHENTICATE`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Whether the mechanism presents an OAuth2 bearer token.
    pub fn is_oauth(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }

    /// Whether the client speaks first (its first response may go with the
    /// command as an initial response). LOGIN waits for the server's prompt.
    pub fn client_first(self) -> bool {
        !matches!(self, Mechanism::Login)
    }
}

/// What to send in answer to a server challenge.
#[derive(PartialEq, Eq)]
pub enum Step {
    /// This base64 line (possibly empty), without CRLF.
    Respond(Zeroizing<String>),
    /// Cancel the exchange (write `*`): the mechanism has nothing more to
    /// say, so the server's challenge cannot be answered.
    Abort,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Respond(_) => f.write_str("Respond(<redacted>)"),
            Step::Abort => f.write_str("Abort"),
        }
    }
}

/// What an OAuth2 server's error challenge said, bounded and printable: the
/// server's text is untrusted, so each value is cut to
/// [`OAuthError::MAX_VALUE`] characters with control characters replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthError {
    /// `status`: an HTTP status (`"401"`, Google's XOAUTH2) or an RFC 6749
    /// error code (`"invalid_token"`, RFC 7628).
    pub status: Option<String>,
    /// `scope`: the scope the server would accept.
    pub scope: Option<String>,
}

impl OAuthError {
    /// Longest challenge decoded (base64 characters); a longer one is
    /// taken as saying nothing.
    pub const MAX_CHALLENGE: usize = 4096;
    /// Longest value kept, in characters.
    pub const MAX_VALUE: usize = 200;

    /// Decodes an error challenge (the base64 text after `+ `): `None` when
    /// it is not base64 of a JSON object, is too long, or names neither a
    /// status nor a scope.
    pub fn decode(challenge: &[u8]) -> Option<OAuthError> {
        let challenge = challenge.trim_ascii();
        if challenge.is_empty() || challenge.len() > Self::MAX_CHALLENGE {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(challenge)
            .ok()?;
        let serde_json::Value::Object(map) = serde_json::from_slice(&raw).ok()? else {
            return None;
        };
        let value = |key: &str| -> Option<String> {
            let text = match map.get(key)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let text: String = text
                .chars()
                .take(Self::MAX_VALUE)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            (!text.is_empty()).then_some(text)
        };
        let err = OAuthError {
            status: value("status"),
            scope: value("scope"),
        };
        (err.status.is_some() || err.scope.is_some()).then_some(err)
    }
}

impl fmt::Display for OAuthError {
    /// `status 401, scope "https://mail.google.com/"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(status) = &self.status {
            write!(f, "status {status}")?;
            sep = ", ";
        }
        if let Some(scope) = &self.scope {
            write!(f, "{sep}scope {scope:?}")?;
        }
        Ok(())
    }
}

/// One client side of a SASL exchange: the responses to send, in order.
pub struct Exchange {
    mechanism: Mechanism,
    /// Responses not sent yet, base64-encoded.
    responses: VecDeque<Zeroizing<String>>,
    /// Sent once when a challenge comes after the last response: an error
    /// report from an OAuth server (RFC 7628 3.2.3, and XOAUTH2 alike) must
    /// be acknowledged for the server to send its final NO.
    after_error: Option<Zeroizing<String>>,
    /// What the server's error challenge said, once one came.
    server_error: Option<OAuthError>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// base64 of `raw` into a zeroed-on-drop string (no reallocation, so no
/// copy of the secret is left behind).
fn b64(raw: &[u8]) -> Zeroizing<String> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let len = base64::encoded_len(raw.len(), true).unwrap_or(0);
    let mut out = Zeroizing::new(String::with_capacity(len));
    engine.encode_string(raw, &mut out);
    out
}

/// Concatenates `parts` into a zeroed-on-drop buffer of exactly that size.
fn concat(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len = parts
        .iter()
        .map(|p| p.len())
        .fold(0usize, usize::saturating_add);
    let mut raw = Zeroizing::new(Vec::with_capacity(len));
    for p in parts {
        raw.extend_from_slice(p);
    }
    raw
}

/// A GS2 `saslname` (RFC 5801): `,` and `=` escaped as `=2C` and `=3D`.
fn gs2_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

impl Exchange {
    /// PLAIN for `user` with `password`, no authorization identity.
    pub fn plain(user: &str, password: &str) -> Self {
        let raw = concat(&[b"\0", user.as_bytes(), b"\0", password.as_bytes()]);
        Exchange::new(Mechanism::Plain, vec![b64(&raw)], None)
    }

    /// LOGIN: the username, then the password, each after a prompt.
    pub fn login(user: &str, password: &str) -> Self {
        Exchange::new(
            Mechanism::Login,
            vec![b64(user.as_bytes()), b64(password.as_bytes())],
            None,
        )
    }

    /// XOAUTH2 for `user` with the OAuth2 access token `token`.
    pub fn xoauth2(user: &str, token: &str) -> Self {
        let raw = concat(&[
            b"user=",
            user.as_bytes(),
            b"\x01auth=Bearer ",
            token.as_bytes(),
            b"\x01\x01",
        ]);
        Exchange::new(Mechanism::XOAuth2, vec![b64(&raw)], Some(b64(b"")))
    }

    /// OAUTHBEARER (RFC 7628) for `user` at `host`:`port` with the access
    /// token `token`.
    pub fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> Self {
        let header = format!("n,a={},", gs2_name(user));
        let port = port.to_string();
        let raw = concat(&[
            header.as_bytes(),
            b"\x01host=",
            host.as_bytes(),
            b"\x01port=",
            port.as_bytes(),
            b"\x01auth=Bearer ",
            token.as_bytes(),
            b"\x01\x01",
        ]);
        Exchange::new(Mechanism::OAuthBearer, vec![b64(&raw)], Some(b64(b"\x01")))
    }

    fn new(
        mechanism: Mechanism,
        responses: Vec<Zeroizing<String>>,
        after_error: Option<Zeroizing<String>>,
    ) -> Self {
        Exchange {
            mechanism,
            responses: responses.into(),
            after_error,
            server_error: None,
        }
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The first response, to send with the command itself (SASL-IR, or
    /// POP3's `AUTH mech initial-response`): `None` for a mechanism that
    /// waits for a prompt (LOGIN) or when it was already taken. Taking it
    /// means the next challenge is answered with the next response.
    pub fn initial_response(&mut self) -> Option<Zeroizing<String>> {
        if !self.mechanism.client_first() {
            return None;
        }
        self.responses.pop_front()
    }

    /// The answer to one server challenge (`challenge` is the text after
    /// `+ `, base64; its content does not change what a client mechanism
    /// sends). Once every response was sent, a further challenge is an
    /// OAuth2 mechanism's error report: it is decoded (see
    /// [`Exchange::server_error`]) and answered once with the
    /// acknowledgement (XOAUTH2: an empty line; OAUTHBEARER: `%x01`, RFC
    /// 7628 section 3.2.3), then with [`Step::Abort`].
    pub fn respond(&mut self, challenge: &[u8]) -> Step {
        if let Some(next) = self.responses.pop_front() {
            return Step::Respond(next);
        }
        match self.after_error.take() {
            Some(ack) => {
                self.server_error = OAuthError::decode(challenge);
                Step::Respond(ack)
            }
            None => Step::Abort,
        }
    }

    /// What the server's OAuth2 error challenge said, if one came and could
    /// be decoded: for the message after the server's final refusal.
    pub fn server_error(&self) -> Option<&OAuthError> {
        self.server_error.as_ref()
    }

    /// Whether the server sent an error challenge after the last response
    /// (an OAuth2 server refusing the token says so this way).
    pub fn was_refused_with_challenge(&self) -> bool {
        self.after_error.is_none() && self.mechanism.is_oauth()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn respond(s: Step) -> String {
        match s {
            Step::Respond(r) => r.as_str().to_owned(),
            Step::Abort => "<abort>".to_owned(),
        }
    }

    #[test]
    fn plain_matches_rfc_4616() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf".
        let mut x = Exchange::plain("tim", "tanstaaftanstaaf");
        assert_eq!(x.mechanism().name(), "PLAIN");
        assert_eq!(
            x.initial_response().unwrap().as_str(),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        // Nothing more to say: a second challenge is cancelled.
        assert_eq!(x.respond(b""), Step::Abort);
    }

    #[test]
    fn plain_without_initial_response_answers_the_empty_challenge() {
        let mut x = Exchange::plain("tim", "tanstaaftanstaaf");
        assert_eq!(respond(x.respond(b"")), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert_eq!(x.respond(b""), Step::Abort);
        assert_eq!(x.initial_response(), None);
    }

    #[test]
    fn login_sends_user_then_password_after_prompts() {
        let mut x = Exchange::login("tim", "pw");
        assert_eq!(x.initial_response(), None, "LOGIN waits for a prompt");
        assert_eq!(respond(x.respond(b"VXNlcm5hbWU6")), "dGlt");
        assert_eq!(respond(x.respond(b"UGFzc3dvcmQ6")), "cHc=");
        assert_eq!(x.respond(b""), Step::Abort);
    }

    #[test]
    fn xoauth2_matches_googles_example() {
        // https://developers.google.com/gmail/imap/xoauth2-protocol
        let mut x = Exchange::xoauth2(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        );
        assert_eq!(
            x.initial_response().unwrap().as_str(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
        // An error challenge (base64 JSON) is acknowledged with an empty line,
        // then the exchange is over.
        assert_eq!(respond(x.respond(b"eyJzdGF0dXMiOiI0MDEifQ==")), "");
        assert_eq!(x.respond(b""), Step::Abort);
    }

    #[test]
    fn oauthbearer_matches_rfc_7628() {
        // RFC 7628 section 4.1.
        let mut x = Exchange::oauthbearer(
            "user@example.com",
            "server.example.com",
            143,
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
        );
        assert_eq!(
            x.initial_response().unwrap().as_str(),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
        // RFC 7628 3.2.3: after an error challenge the client sends ^A.
        assert_eq!(
            respond(x.respond(b"eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=")),
            "AQ=="
        );
        assert_eq!(x.respond(b""), Step::Abort);
    }

    #[test]
    fn oauthbearer_escapes_the_gs2_name() {
        let mut x = Exchange::oauthbearer("a,b=c", "h", 1, "t");
        let ir = x.initial_response().unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(ir.as_bytes())
            .unwrap();
        assert!(raw.starts_with(b"n,a=a=2Cb=3Dc,\x01host=h\x01port=1\x01"));
    }

    fn b64s(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_error_challenge_is_decoded_and_kept() {
        // Google's example error (XOAUTH2 protocol page) and RFC 7628 3.2.2.
        let google =
            b64s(r#"{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}"#);
        let mut x = Exchange::xoauth2("u", "t");
        assert!(x.initial_response().is_some());
        assert_eq!(x.server_error(), None);
        assert!(!x.was_refused_with_challenge());
        assert_eq!(respond(x.respond(google.as_bytes())), "");
        assert!(x.was_refused_with_challenge());
        let e = x.server_error().unwrap();
        assert_eq!(e.status.as_deref(), Some("401"));
        assert_eq!(
            e.to_string(),
            r#"status 401, scope "https://mail.google.com/""#
        );

        let rfc = b64s(
            r#"{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}"#,
        );
        let mut x = Exchange::oauthbearer("u", "h", 1, "t");
        assert!(x.initial_response().is_some());
        assert_eq!(respond(x.respond(rfc.as_bytes())), "AQ==");
        assert_eq!(
            x.server_error().unwrap().to_string(),
            r#"status invalid_token, scope "example_scope""#
        );
    }

    #[test]
    fn a_hostile_error_challenge_is_bounded_or_ignored() {
        assert_eq!(OAuthError::decode(b""), None);
        assert_eq!(OAuthError::decode(b"not base64!"), None);
        assert_eq!(OAuthError::decode(b64s("[1,2]").as_bytes()), None);
        assert_eq!(OAuthError::decode(b64s("{\"a\":1}").as_bytes()), None);
        assert_eq!(OAuthError::decode(b64s("{\"status\":").as_bytes()), None);
        // A number is shown as one; an object is not a status.
        let e = OAuthError::decode(b64s(r#"{"status":401,"scope":{"x":1}}"#).as_bytes()).unwrap();
        assert_eq!(e.to_string(), "status 401");
        // Control characters replaced, values cut.
        let long = format!(r#"{{"status":"a\r\nb","scope":"{}"}}"#, "s".repeat(5000));
        let e = OAuthError::decode(b64s(&long).as_bytes());
        assert_eq!(e, None, "a challenge over the limit says nothing");
        let long = format!(r#"{{"status":"a\r\nb","scope":"{}"}}"#, "s".repeat(1000));
        let e = OAuthError::decode(b64s(&long).as_bytes()).unwrap();
        assert_eq!(e.status.as_deref(), Some("a??b"));
        assert_eq!(
            e.scope.map(|s| s.chars().count()),
            Some(OAuthError::MAX_VALUE)
        );
        // A challenge that is not an error report leaves nothing behind.
        let mut x = Exchange::xoauth2("u", "t");
        assert!(x.initial_response().is_some());
        assert_eq!(respond(x.respond(b"garbage")), "");
        assert_eq!(x.server_error(), None);
        assert!(x.was_refused_with_challenge());
        // PLAIN has no error report.
        let mut x = Exchange::plain("u", "p");
        assert!(x.initial_response().is_some());
        assert_eq!(
            x.respond(b64s(r#"{"status":"401"}"#).as_bytes()),
            Step::Abort
        );
        assert_eq!(x.server_error(), None);
        assert!(!x.was_refused_with_challenge());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let mut x = Exchange::plain("tim", "tanstaaftanstaaf");
        let shown = format!("{x:?}");
        assert!(
            shown.contains("Plain") && !shown.contains("AHRp"),
            "{shown}"
        );
        let step = x.respond(b"");
        let shown = format!("{step:?}");
        assert_eq!(shown, "Respond(<redacted>)");
    }
}
