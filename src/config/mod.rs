//! Configuration: the TOML file as the user wrote it ([`raw`]) and the
//! validated settings every other module consumes (this file).
//!
//! Why the split (as ripgrep's low/high args): serde types mirror the file
//! and carry its spans for error messages; the validated types are what the
//! program can rely on (ports filled in, an authentication mechanism of the
//! right protocol on each side, secrets checked, policies parsed), so no
//! other module re-checks input. Secrets are kept as their source and read
//! at each login through [`ServerSettings::credential`] (see `secret.rs`).

mod auth;
pub mod db_accounts;
pub mod env;
mod load;
mod oauth2;
pub mod raw;
mod secret;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::net::{Endpoint, TlsMode};
pub use auth::{ImapAuth, Mechanism, Pop3Auth};
pub use env::load;
pub use load::{ConfigError, load_file, load_str, locate, resolve_path};
pub use oauth2::{LoginFlow, OAuth2Config, OAuth2Settings, Provider, TokenGrant};
pub use secret::{Credential, CredentialError, SecretSource};

/// One server and how to log in to it; `A` is the protocol's
/// authentication mechanism ([`Pop3Auth`] or [`ImapAuth`]).
#[derive(Debug, Clone)]
pub struct ServerSettings<A> {
    pub endpoint: Endpoint,
    pub username: String,
    /// Where the password comes from; [`ServerSettings::credential`] reads
    /// it at each login.
    pub password: SecretSource,
    pub auth: A,
    /// Set when a password may cross a connection without TLS (always true
    /// for loopback hosts).
    pub allow_plaintext_password: bool,
    /// The `oauth2` table, for a mechanism that logs in with a bearer token;
    /// [`ServerSettings::credential`] then returns a token from its source.
    pub oauth2: Option<OAuth2Settings>,
}

/// The same when the configuration says the same (see [`Account`]'s
/// equality). Written out rather than derived because [`Endpoint`] has no
/// equality of its own; the destructuring makes a new field a compile error
/// here until it is compared.
impl<A: PartialEq> PartialEq for ServerSettings<A> {
    fn eq(&self, other: &Self) -> bool {
        let ServerSettings {
            endpoint:
                Endpoint {
                    host,
                    port,
                    tls,
                    ca_file,
                    tls_fingerprint,
                    timeout,
                },
            username,
            password,
            auth,
            allow_plaintext_password,
            oauth2,
        } = self;
        let o = &other.endpoint;
        *host == o.host
            && *port == o.port
            && *tls == o.tls
            && *ca_file == o.ca_file
            && *tls_fingerprint == o.tls_fingerprint
            && *timeout == o.timeout
            && *username == other.username
            && *password == other.password
            && *auth == other.auth
            && *allow_plaintext_password == other.allow_plaintext_password
            && *oauth2 == other.oauth2
    }
}

impl<A: Eq> Eq for ServerSettings<A> {}

/// How the INTERNALDATE of an appended message is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalDate {
    /// The date of the topmost Received header, else Date, else now.
    Received,
    /// The Date header, else now.
    Date,
    /// The moment of the APPEND (the server's choice).
    Now,
}

/// When messages are removed from the POP3 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePolicy {
    Never,
    AfterSync,
    /// Once appended and at least this old (by the time it was first copied).
    OlderThan(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    pub server: ServerSettings<ImapAuth>,
    pub mailbox: String,
    pub flags: Vec<String>,
    pub internal_date: InternalDate,
    /// Sessions to append over where the server lacks LITERAL+
    /// (`1..=`[`MAX_TARGET_CONNECTIONS`]); one session with LITERAL+.
    pub connections: usize,
    /// What may be appended per UTC day and per minute
    /// (`max_upload_per_day`, `max_messages_per_minute`).
    pub budget: UploadBudget,
}

/// A provider's upload limits, as configured: when one is spent, appending
/// pauses (the day's until the next UTC midnight, the minute's for the
/// rest of the minute) instead of running into the provider's refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadBudget {
    /// Bytes appended per UTC day.
    pub bytes_per_day: Option<u64>,
    /// Messages appended in any 60 seconds.
    pub messages_per_minute: Option<u32>,
}

/// `[accounts.target] connections` by default.
pub const DEFAULT_TARGET_CONNECTIONS: usize = 4;
/// Most sessions to the target of one account (Gmail allows 15 in all).
pub const MAX_TARGET_CONNECTIONS: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub delete: DeletePolicy,
    pub max_message_size: u64,
    /// How many runs may fail to append a message before it is rejected.
    pub max_attempts: u32,
}

/// One account. Two accounts are equal when the configuration says the
/// same about them: that is how a reload tells a changed account (its task
/// restarts) from an unchanged one (it keeps its schedule). Passwords compare
/// by their source ([`SecretSource`]), so a rotated password file is not a
/// change: the next login reads it anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub poll_interval: Duration,
    pub source: ServerSettings<Pop3Auth>,
    pub target: TargetSettings,
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub poll_interval: Duration,
    pub max_concurrent_accounts: usize,
    pub listen: Option<std::net::SocketAddr>,
    /// `[daemon] status_token`: what the status page asks for when
    /// `listen` is not a loopback address (see `daemon/access.rs`).
    pub status_token: Option<SecretSource>,
}

/// `[spool]`: the folder for temporary files (`None`: the system's temp
/// dir) and the bytes they may hold in all, per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite ledger's file (`[ledger] path`); empty with `url`.
    pub ledger_path: PathBuf,
    /// `[ledger] url`: a PostgreSQL ledger shared by replicas, where its
    /// URL comes from (it may hold a password: shown only through
    /// [`crate::ledger::redact_url`]).
    pub ledger_url: Option<SecretSource>,
    /// `[ledger] lease_ttl`: how long an account's lease lasts unless
    /// renewed (guarantee 9).
    pub lease_ttl: Duration,
    pub daemon: Daemon,
    pub spool: Spool,
    pub accounts: Vec<Account>,
    /// `[account_template]`: what the accounts kept in the ledger take
    /// beside their row (`db_accounts.rs`).
    pub account_template: Option<toml::Table>,
    /// The file this was read from, for messages.
    pub source_path: PathBuf,
}
