//! HS256 JSON Web Tokens for the test Dovecot's `oauth2` passdb, which
//! validates them locally (`introspection_mode = local`) with the key the
//! harness wrote (see [`super::DovecotBuilder::oauth2`]).
//!
//! Why hand-written: the tests need only to *mint* a token, with one
//! algorithm; HMAC-SHA256 (RFC 2104) over `sha2` is a dozen lines and keeps
//! a JWT crate out of the tree. Dovecot checks the signature, `exp` (not
//! past), `iat` and `nbf` (not future) and reads the user from `sub`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// HMAC-SHA256 of `msg` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A token for `sub`, issued now and valid for `ttl_secs` (negative: it
/// expired that long ago, issued an hour before).
pub fn mint(key: &[u8], sub: &str, ttl_secs: i64) -> String {
    let now = now();
    let iat = if ttl_secs < 0 { now - 3600 } else { now - 5 };
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "sub": sub, "iat": iat, "exp": now + ttl_secs });
    let payload = b64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let sig = b64url(&hmac_sha256(key, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}
