//! Configuration: the TOML file as the user wrote it ([`raw`]) and the
//! validated settings every other module consumes (this file).
//!
//! Why the split (as ripgrep's low/high args): serde types mirror the file
//! and carry its spans for error messages; the validated types are what the
//! program can rely on (ports filled in, secrets resolved and wrapped in
//! [`SecretString`], policies parsed), so no other module re-checks input.

mod load;
pub mod raw;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use crate::net::{Endpoint, TlsMode};
pub use load::{ConfigError, load_file, load_str, resolve_path};

/// Which authentication to use on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// The strongest the server offers that we support.
    Auto,
    /// POP3 USER/PASS.
    User,
    /// POP3 APOP (needs a timestamp in the greeting).
    Apop,
    /// SASL PLAIN (POP3 AUTH PLAIN, IMAP AUTHENTICATE PLAIN).
    Plain,
    /// IMAP LOGIN.
    Login,
}

/// One server and how to log in to it.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub endpoint: Endpoint,
    pub username: String,
    pub password: SecretString,
    pub auth: AuthMechanism,
    /// Set when a password may cross a connection without TLS (always true
    /// for loopback hosts).
    pub allow_plaintext_password: bool,
}

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

#[derive(Debug, Clone)]
pub struct TargetSettings {
    pub server: ServerSettings,
    pub mailbox: String,
    pub flags: Vec<String>,
    pub internal_date: InternalDate,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub delete: DeletePolicy,
    pub max_message_size: u64,
    /// How many runs may fail to append a message before it is rejected.
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub poll_interval: Duration,
    pub source: ServerSettings,
    pub target: TargetSettings,
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub poll_interval: Duration,
    pub max_concurrent_accounts: usize,
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ledger_path: PathBuf,
    pub daemon: Daemon,
    pub accounts: Vec<Account>,
    /// The file this was read from, for messages.
    pub source_path: PathBuf,
}
