//! Who may read the status page.
//!
//! Why a token only off loopback: on `127.0.0.1` only this machine's users
//! can connect, as they could run `popferry status`; on any other address
//! (`0.0.0.0:9925` in a container) anyone who reaches the port would read
//! account names, hosts and the servers' last words. There the page needs
//! `[daemon] status_token`, given as `Authorization: Bearer <token>` or
//! `?token=<token>`; without a token configured the page is off (404) while
//! `/healthz`, `/readyz` and `/metrics` stay open for probes, so a container
//! that sets only `listen` keeps its health checks. Loopback is judged by
//! the address the daemon binds, never by the peer's address (a reverse
//! proxy on the same machine connects from 127.0.0.1 for everyone).
//!
//! The comparison is constant-time over SHA-256 digests, so neither the
//! token's bytes nor its length leak through timing.

use std::net::SocketAddr;

use axum::http::{HeaderMap, Uri, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The page's rule for this daemon.
#[derive(Clone)]
pub enum Access {
    /// Bound to a loopback address: open.
    Open,
    /// Needs this token.
    Token(SecretString),
    /// Not loopback and no token configured: the page is not served.
    Off,
}

/// What one request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No token, or a wrong one: 401.
    Deny,
    /// The page is off: 404.
    Off,
}

impl Access {
    /// The rule for a daemon bound to `listen`, with the configured token.
    pub fn for_listen(listen: SocketAddr, token: Option<SecretString>) -> Access {
        match token {
            Some(t) => Access::Token(t),
            None if listen.ip().is_loopback() => Access::Open,
            None => Access::Off,
        }
    }

    /// Whether the request may read the page.
    pub fn decide(&self, uri: &Uri, headers: &HeaderMap) -> Decision {
        let expected = match self {
            Access::Open => return Decision::Allow,
            Access::Off => return Decision::Off,
            Access::Token(t) => t,
        };
        let given = bearer(headers).or_else(|| query_token(uri));
        match given {
            Some(given) if same(given.expose_secret(), expected.expose_secret()) => Decision::Allow,
            _ => Decision::Deny,
        }
    }

    /// For the start-up log line.
    pub fn describe(&self) -> &'static str {
        match self {
            Access::Open => "open (loopback address)",
            Access::Token(_) => "needs [daemon] status_token",
            Access::Off => {
                "off: not a loopback address and no [daemon] status_token (the probes stay open)"
            }
        }
    }
}

fn same(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// `Authorization: Bearer <token>` (the scheme's case ignored).
fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim()))
}

/// `?token=<token>` (percent-decoded).
fn query_token(uri: &Uri) -> Option<SecretString> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| SecretString::from(v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, auth: Option<&str>) -> (Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().expect("header"));
        }
        (uri.parse().expect("uri"), h)
    }

    fn decide(a: &Access, uri: &str, auth: Option<&str>) -> Decision {
        let (u, h) = req(uri, auth);
        a.decide(&u, &h)
    }

    #[test]
    fn loopback_is_open_and_other_addresses_need_the_token() {
        let lo: SocketAddr = "127.0.0.1:9925".parse().expect("addr");
        let lo6: SocketAddr = "[::1]:9925".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9925".parse().expect("addr");
        let lan: SocketAddr = "192.168.1.5:9925".parse().expect("addr");
        assert_eq!(
            decide(&Access::for_listen(lo, None), "/", None),
            Decision::Allow
        );
        assert_eq!(
            decide(&Access::for_listen(lo6, None), "/", None),
            Decision::Allow
        );
        assert_eq!(
            decide(&Access::for_listen(any, None), "/", None),
            Decision::Off
        );
        assert_eq!(
            decide(&Access::for_listen(lan, None), "/", None),
            Decision::Off
        );
        // A token set on loopback is required there too.
        let t = Access::for_listen(lo, Some(SecretString::from("s3cret-token")));
        assert_eq!(decide(&t, "/", None), Decision::Deny);
    }

    #[test]
    fn the_token_comes_as_bearer_or_query() {
        let any: SocketAddr = "0.0.0.0:9925".parse().expect("addr");
        let a = Access::for_listen(any, Some(SecretString::from("s3cret token/+")));
        assert_eq!(decide(&a, "/", None), Decision::Deny);
        assert_eq!(
            decide(&a, "/", Some("Bearer s3cret token/+")),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "/", Some("bearer s3cret token/+")),
            Decision::Allow
        );
        assert_eq!(decide(&a, "/", Some("Bearer s3cret")), Decision::Deny);
        assert_eq!(
            decide(&a, "/", Some("Basic s3cret token/+")),
            Decision::Deny
        );
        assert_eq!(
            decide(&a, "/?token=s3cret%20token%2F%2B", None),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "/?x=1&token=s3cret+token/%2B", None),
            Decision::Allow
        );
        assert_eq!(decide(&a, "/?token=s3cret", None), Decision::Deny);
        assert_eq!(decide(&a, "/?token=", None), Decision::Deny);
    }
}
