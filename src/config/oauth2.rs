//! The `[accounts.source.oauth2]` / `[accounts.target.oauth2]` table: where
//! a side's OAuth2 access tokens come from.
//!
//! Why a table of its own, validated here: the token endpoint is a second
//! server per side, with its own trust rules (HTTPS, or plain HTTP only on
//! loopback) and its own secrets (the client secret, the refresh token), and
//! the provider presets (Microsoft, Google) fill in URLs and scopes that
//! users should not have to copy. The validated [`OAuth2Settings`] carry the
//! side's [`TokenSource`](crate::oauth::TokenSource), created here once per
//! load, so that the access-token cache lives as long as the settings do
//! (across the daemon's passes) and is left out of their equality (a reload
//! compares what the file says, not what was cached).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use oauth2::url::{Host, Url};

use super::SecretSource;
use super::load::secret_source;
use super::raw::{RawOAuth2, RawSecret, RawSecretSource};
use crate::oauth::TokenSource;

/// A provider whose endpoints and scopes are filled in for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Microsoft 365 and Outlook.com (the `common` tenant).
    Microsoft,
    /// Google Workspace and Gmail.
    Google,
}

impl Provider {
    pub const ALL: &'static [Provider] = &[Provider::Microsoft, Provider::Google];

    /// The value of `provider` in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Google => "google",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.iter().copied().find(|p| p.name() == name)
    }

    pub fn token_url(self) -> &'static str {
        match self {
            Provider::Microsoft => "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            Provider::Google => "https://oauth2.googleapis.com/token",
        }
    }

    pub fn device_url(self) -> &'static str {
        match self {
            Provider::Microsoft => {
                "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
            }
            Provider::Google => "https://oauth2.googleapis.com/device/code",
        }
    }

    pub fn auth_url(self) -> &'static str {
        match self {
            Provider::Microsoft => "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            Provider::Google => "https://accounts.google.com/o/oauth2/v2/auth",
        }
    }

    /// The scope for a side ("source": POP3, "target": IMAP).
    pub fn scope(self, side: &str) -> &'static str {
        match (self, side) {
            (Provider::Microsoft, "source") => {
                "https://outlook.office.com/POP.AccessAsUser.All offline_access"
            }
            (Provider::Microsoft, _) => {
                "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
            }
            (Provider::Google, _) => "https://mail.google.com/",
        }
    }

    /// How `popferry oauth login` signs in by default: Microsoft's device
    /// code suits a server without a browser; Google's desktop clients take
    /// the browser on a loopback redirect.
    pub fn default_flow(self) -> LoginFlow {
        match self {
            Provider::Microsoft => LoginFlow::DeviceCode,
            Provider::Google => LoginFlow::Browser,
        }
    }
}

/// The sign-in flows of `popferry oauth login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFlow {
    /// RFC 8628: the user opens a URL anywhere and types a code.
    DeviceCode,
    /// RFC 6749 authorization code with PKCE (RFC 7636), redirected to a
    /// listener on 127.0.0.1 (RFC 8252).
    Browser,
}

/// Where the access tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenGrant {
    /// `refresh_token = …`: exchanged at the token endpoint.
    Refresh(SecretSource),
    /// `access_token = { command = "…" }`: a helper prints a fresh token.
    Command(String),
}

/// Never shows a command's text (it may hold a secret, as a password
/// command's may); a refresh token's source redacts itself.
impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenGrant::Refresh(s) => f.debug_tuple("Refresh").field(s).finish(),
            TokenGrant::Command(_) => f.write_str("Command([REDACTED])"),
        }
    }
}

/// The validated `oauth2` table of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The preset it came from, if any (for `oauth login`'s default flow).
    pub provider: Option<Provider>,
    /// Required with a refresh token; `None` with the command form.
    pub token_url: Option<Url>,
    pub device_url: Option<Url>,
    pub auth_url: Option<Url>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    pub grant: TokenGrant,
    /// Space-separated, as sent.
    pub scope: Option<String>,
}

/// [`OAuth2Config`] with the side's token source (its cache).
#[derive(Clone)]
pub struct OAuth2Settings {
    pub config: OAuth2Config,
    pub tokens: Arc<TokenSource>,
}

impl OAuth2Settings {
    /// Builds the settings and a fresh (empty) token source for them.
    pub fn new(account: &str, side: &'static str, timeout: Duration, config: OAuth2Config) -> Self {
        let tokens = Arc::new(TokenSource::new(account, side, timeout, config.clone()));
        OAuth2Settings { config, tokens }
    }
}

impl fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Equal when the configuration says the same; the cache is left out.
impl PartialEq for OAuth2Settings {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Eq for OAuth2Settings {}

/// Checks one of the table's URLs: it must parse, and be HTTPS, or plain
/// HTTP to a loopback address (tests, local helpers).
pub(super) fn endpoint_url(key: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim())
        .map_err(|e| format!("oauth2.{key}: {value:?} is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if url.host().is_some_and(|h| is_loopback(&h)) => {}
        "http" => {
            return Err(format!(
                "oauth2.{key}: plain http:// would send the client secret and tokens unencrypted; use https:// (http:// is accepted only for a loopback address such as 127.0.0.1)"
            ));
        }
        other => {
            return Err(format!("oauth2.{key}: the scheme {other:?} is not https"));
        }
    }
    if url.host().is_none() {
        return Err(format!("oauth2.{key}: {value:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "oauth2.{key}: the URL must not hold a user name or password"
        ));
    }
    Ok(url)
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// Validates the `oauth2` table of one side (`side` is "source" or
/// "target"); messages start with the key, the caller adds the account and
/// side. With `resolve_secrets`, the client secret, the refresh token and
/// the access-token command are checked to yield a value (as passwords are),
/// so that a missing refresh token file is found before any server is
/// contacted.
pub(super) fn validate(
    raw: &RawOAuth2,
    account: &str,
    side: &'static str,
    timeout: Duration,
    resolve_secrets: bool,
) -> Result<OAuth2Settings, String> {
    let provider = match raw.provider.as_deref().map(str::trim) {
        None => None,
        Some(name) => Some(Provider::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
            format!(
                "oauth2.provider: {name:?} is not a known provider ({}); for another one give token_url (and device_url or auth_url for oauth login)",
                names.join(" or ")
            )
        })?),
    };
    let url =
        |key: &str, given: Option<&String>, preset: Option<&'static str>| match (given, preset) {
            (Some(v), _) => endpoint_url(key, v).map(Some),
            (None, Some(p)) => endpoint_url(key, p).map(Some),
            (None, None) => Ok(None),
        };
    let token_url = url(
        "token_url",
        raw.token_url.as_ref(),
        provider.map(Provider::token_url),
    )?;
    let device_url = url(
        "device_url",
        raw.device_url.as_ref(),
        provider.map(Provider::device_url),
    )?;
    let auth_url = url(
        "auth_url",
        raw.auth_url.as_ref(),
        provider.map(Provider::auth_url),
    )?;
    let client_id = raw
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let grant = match (&raw.refresh_token, &raw.access_token) {
        (Some(_), Some(_)) => {
            return Err(
                "oauth2: both refresh_token and access_token are set; keep exactly one (refresh_token to let popferry refresh tokens, access_token = { command = \"…\" } to use a helper of yours)".into(),
            );
        }
        (None, None) => {
            return Err(format!(
                "oauth2: neither refresh_token nor access_token is set; add refresh_token = {{ file = \"…\" }} and run `popferry oauth login --account {account} --side {side}`, or access_token = {{ command = \"…\" }}"
            ));
        }
        (Some(r), None) => TokenGrant::Refresh(secret_source(r)),
        (None, Some(RawSecret::Source(RawSecretSource::Command(cmd)))) => {
            TokenGrant::Command(cmd.clone())
        }
        (None, Some(_)) => {
            return Err(
                "oauth2.access_token: only the command form is accepted (access_token = { command = \"…\" }): an access token lives about an hour, so it must come from a helper".into(),
            );
        }
    };
    if let TokenGrant::Refresh(_) = grant {
        if token_url.is_none() {
            return Err(
                "oauth2: a refresh_token needs the token endpoint: set provider (microsoft or google) or token_url".into(),
            );
        }
        if client_id.is_none() {
            return Err(
                "oauth2.client_id: missing; a refresh token is exchanged with the client id of your app registration".into(),
            );
        }
    }
    let client_secret = raw.client_secret.as_ref().map(secret_source);
    let scope = raw
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .or_else(|| provider.map(|p| p.scope(side).to_owned()));
    if resolve_secrets {
        if let Some(s) = &client_secret {
            s.resolve_blocking()
                .map_err(|m| format!("oauth2.client_secret: {m}"))?;
        }
        match &grant {
            TokenGrant::Refresh(r) => r.resolve_blocking().map_err(|m| {
                format!(
                    "oauth2.refresh_token: {m}; run `popferry oauth login --account {account} --side {side}` to sign in and store one"
                )
            })?,
            TokenGrant::Command(cmd) => SecretSource::Command(cmd.clone())
                .resolve_blocking()
                .map_err(|m| format!("oauth2.access_token: {m}"))?,
        };
    }
    let config = OAuth2Config {
        provider,
        token_url,
        device_url,
        auth_url,
        client_id,
        client_secret,
        grant,
        scope,
    };
    Ok(OAuth2Settings::new(account, side, timeout, config))
}

#[cfg(test)]
#[path = "oauth2_tests.rs"]
mod tests;
