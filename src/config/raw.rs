//! The configuration file exactly as written: serde types that mirror the
//! TOML, reject unknown keys (the error names the key and its line) and do
//! no validation beyond parsing. `load.rs` turns them into settings.
//!
//! Why each side has its own table type although they share most keys:
//! serde's unknown-key message lists the keys the table takes, and that list
//! must be the side's own (`mailbox` is no key of `[accounts.source]`).
//! `auth` stays a string here so that the loader, which knows the account,
//! can say which mechanisms that side takes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub ledger: RawLedger,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub accounts: Vec<toml::Spanned<RawAccount>>,
    /// `[account_template]`: the keys of an `[[accounts]]` table that the
    /// accounts kept in the ledger take (see `db_accounts.rs`).
    pub account_template: Option<toml::Table>,
}

/// `[ledger]`: a SQLite file (`path`) or a PostgreSQL database (`url`, a
/// secret form, as it may hold a password); exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub path: Option<PathBuf>,
    pub url: Option<RawSecret>,
    #[serde(default, with = "humantime_serde::option")]
    pub lease_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    #[serde(default, with = "humantime_serde::option")]
    pub poll_interval: Option<Duration>,
    pub max_concurrent_accounts: Option<usize>,
    pub listen: Option<String>,
    /// Needed to read the status page when `listen` is not loopback.
    pub status_token: Option<RawSecret>,
}

/// `[spool]`: where large messages wait in temporary files, and how many
/// bytes they may hold in all (per process).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub path: Option<PathBuf>,
    pub max_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub name: String,
    #[serde(default, with = "humantime_serde::option")]
    pub poll_interval: Option<Duration>,
    pub source: RawSource,
    pub target: RawTarget,
    #[serde(default)]
    pub policy: RawPolicy,
}

/// `[accounts.source]`, the POP3 side: the connection keys only, so that an
/// unknown key is reported with exactly the keys this side takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub host: String,
    pub port: Option<u16>,
    pub tls: Option<crate::net::TlsMode>,
    pub username: String,
    /// Not needed with an `oauth2` table (checked by the loader).
    pub password: Option<RawSecret>,
    /// Checked against the POP3 mechanisms by the loader, which names the
    /// account in its message.
    pub auth: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `sha256:…`, parsed by the loader (which names the account).
    pub tls_fingerprint: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub allow_plaintext_password: bool,
    /// `[accounts.source.oauth2]`, checked by the loader against `auth`.
    pub oauth2: Option<RawOAuth2>,
}

/// `[accounts.target]`, the IMAP side: the same connection keys as
/// [`RawSource`], plus the keys about where and how messages are appended.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub host: String,
    pub port: Option<u16>,
    pub tls: Option<crate::net::TlsMode>,
    pub username: String,
    /// Not needed with an `oauth2` table (checked by the loader).
    pub password: Option<RawSecret>,
    /// Checked against the IMAP mechanisms by the loader.
    pub auth: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `sha256:…`, parsed by the loader (which names the account).
    pub tls_fingerprint: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub allow_plaintext_password: bool,
    /// `[accounts.target.oauth2]`, checked by the loader against `auth`.
    pub oauth2: Option<RawOAuth2>,
    pub mailbox: Option<String>,
    pub flags: Option<Vec<String>>,
    pub internal_date: Option<RawInternalDate>,
    /// Sessions to append over without LITERAL+; checked by the loader.
    pub connections: Option<u64>,
    /// Upload budgets (the provider's daily cap, a rate); checked by the loader.
    pub max_upload_per_day: Option<ByteSize>,
    pub max_messages_per_minute: Option<u64>,
}

/// The connection keys of either side, borrowed, so that one function
/// validates both.
pub struct RawConnection<'a> {
    pub host: &'a str,
    pub port: Option<u16>,
    pub tls: Option<crate::net::TlsMode>,
    pub username: &'a str,
    pub password: Option<&'a RawSecret>,
    pub auth: Option<&'a str>,
    pub ca_file: Option<&'a PathBuf>,
    pub tls_fingerprint: Option<&'a str>,
    pub timeout: Option<Duration>,
    pub allow_plaintext_password: bool,
    pub oauth2: Option<&'a RawOAuth2>,
}

impl RawSource {
    pub fn connection(&self) -> RawConnection<'_> {
        RawConnection {
            host: &self.host,
            port: self.port,
            tls: self.tls,
            username: &self.username,
            password: self.password.as_ref(),
            auth: self.auth.as_deref(),
            ca_file: self.ca_file.as_ref(),
            tls_fingerprint: self.tls_fingerprint.as_deref(),
            timeout: self.timeout,
            allow_plaintext_password: self.allow_plaintext_password,
            oauth2: self.oauth2.as_ref(),
        }
    }
}

impl RawTarget {
    pub fn connection(&self) -> RawConnection<'_> {
        RawConnection {
            host: &self.host,
            port: self.port,
            tls: self.tls,
            username: &self.username,
            password: self.password.as_ref(),
            auth: self.auth.as_deref(),
            ca_file: self.ca_file.as_ref(),
            tls_fingerprint: self.tls_fingerprint.as_deref(),
            timeout: self.timeout,
            allow_plaintext_password: self.allow_plaintext_password,
            oauth2: self.oauth2.as_ref(),
        }
    }
}

/// `[accounts.<side>.oauth2]`: the same keys on both sides. `provider`
/// stays a string so that the loader's message lists the presets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub provider: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub auth_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<RawSecret>,
    pub refresh_token: Option<RawSecret>,
    pub scope: Option<String>,
    /// Only `{ command = "…" }` is accepted (checked by the loader).
    pub access_token: Option<RawSecret>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawInternalDate {
    Received,
    Date,
    Now,
}

/// A password: a plain string, or where to find it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    Plain(String),
    Source(RawSecretSource),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum RawSecretSource {
    Env(String),
    File(PathBuf),
    Command(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub delete: Option<String>,
    pub max_message_size: Option<ByteSize>,
    pub max_attempts: Option<u32>,
}

/// A size written as bytes (`1048576`) or with a unit (`"50MiB"`, `"10MB"`,
/// `"512k"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected a number such as \"50MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
                ));
            }
        };
        let bytes = num * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Str(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(ByteSize(n)),
            Either::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("50MiB"), Ok(ByteSize(50 << 20)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("1024"), Ok(ByteSize(1024)));
        assert_eq!(ByteSize::parse("1.5 KiB"), Ok(ByteSize(1536)));
        assert!(ByteSize::parse("ten").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
    }
}
