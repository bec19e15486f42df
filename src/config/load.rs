//! Reading and validating the configuration file.
//!
//! Everything here fails before any server is contacted, so the command line
//! can map a [`ConfigError`] to exit status 2. Messages name the file, the
//! account and the key, and say what to do; they never quote the file's
//! lines, because a line may hold a password. Secrets are resolved here only
//! to check that they can be (see `secret.rs` for why they are kept as their
//! source).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use super::raw::{
    ByteSize, RawAccount, RawConfig, RawConnection, RawInternalDate, RawSecret, RawSecretSource,
};
use super::{
    Account, Config, Daemon, DeletePolicy, Endpoint, ImapAuth, InternalDate, Mechanism, Policy,
    Pop3Auth, SecretSource, ServerSettings, TargetSettings, TlsMode, UploadBudget,
};
use super::{DEFAULT_TARGET_CONNECTIONS, MAX_TARGET_CONNECTIONS};

const DEFAULT_POLL: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_SIZE: u64 = 50 << 20;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_CONCURRENCY: usize = 4;
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// A configuration that cannot be used; nothing was contacted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The account from environment variables (`env.rs`) is wrong; the
    /// message names the variable.
    #[error("environment variables: {message}")]
    Environment { message: String },
    /// A configuration file and account variables at the same time.
    #[error(
        "both a configuration file ({path}) and environment variables ({vars}) configure popferry: use one of them (unset the POPFERRY_SOURCE_*/POPFERRY_TARGET_* variables, or remove the file)",
        path = path.display()
    )]
    Conflict { path: PathBuf, vars: String },
}

/// Where the configuration is: the `-c` flag, then `$POPFERRY_CONFIG`, then
/// `./popferry.toml`, then `/etc/popferry/popferry.toml`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    locate(flag).unwrap_or_else(|| PathBuf::from("popferry.toml"))
}

/// [`resolve_path`], or `None` when no file is named and neither default
/// exists (then the environment may configure an account: `env.rs`).
pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("POPFERRY_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    ["popferry.toml", "/etc/popferry/popferry.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Reads and validates a configuration file. With `resolve_secrets` false
/// (for `status`, which contacts no server) passwords are not looked up;
/// either way the settings keep where each password comes from.
pub fn load_file(path: &Path, resolve_secrets: bool) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, path, resolve_secrets)
}

/// Parses and validates configuration text; `path` is used in messages and
/// to resolve relative paths.
pub fn load_str(text: &str, path: &Path, resolve_secrets: bool) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;
    let base = path.parent().unwrap_or(Path::new("."));

    let daemon_poll = raw.daemon.poll_interval.unwrap_or(DEFAULT_POLL);
    let listen = match &raw.daemon.listen {
        Some(s) => Some(s.parse().map_err(|_| {
            invalid(format!(
                "daemon.listen: {s:?} is not an address such as \"127.0.0.1:9925\""
            ))
        })?),
        None => None,
    };
    let max_concurrent_accounts = raw
        .daemon
        .max_concurrent_accounts
        .unwrap_or(DEFAULT_CONCURRENCY);
    if max_concurrent_accounts == 0 {
        return Err(invalid(
            "daemon.max_concurrent_accounts must be at least 1".into(),
        ));
    }
    let status_token = raw.daemon.status_token.as_ref().map(secret_source);
    if let Some(t) = &status_token
        && resolve_secrets
    {
        t.resolve_blocking()
            .map_err(|m| invalid(format!("daemon.status_token: {m}")))?;
    }
    // With an [account_template], the accounts may all be in the ledger.
    if raw.accounts.is_empty() && raw.account_template.is_none() {
        return Err(invalid(
            "no [[accounts]] defined: add at least one, or an [account_template] for accounts kept in the ledger (see config/popferry.example.toml)".into(),
        ));
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut accounts = Vec::with_capacity(raw.accounts.len());
    for spanned in raw.accounts {
        let line = line_of(text, spanned.span().start);
        let acc = spanned.into_inner();
        let name = acc.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid(format!(
                "account at line {line}: name must not be empty"
            )));
        }
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(invalid(format!(
                "account {name:?} at line {line} has the same name as the account at line {first}: names must be unique (they key the ledger)"
            )));
        }
        let account = account(acc, name, daemon_poll, base, resolve_secrets)
            .map_err(|m| invalid(format!("account at line {line}: {m}")))?;
        accounts.push(account);
    }

    let (ledger_path, ledger_url) = ledger_location(&raw.ledger, base, resolve_secrets)
        .map_err(|m| invalid(format!("[ledger] {m}")))?;
    let lease_ttl = raw.ledger.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
    if lease_ttl < MIN_LEASE_TTL {
        return Err(invalid(format!(
            "[ledger] lease_ttl must be at least {} (it is renewed every quarter of it)",
            humantime::format_duration(MIN_LEASE_TTL)
        )));
    }
    Ok(Config {
        ledger_path,
        ledger_url,
        lease_ttl,
        daemon: Daemon {
            poll_interval: daemon_poll,
            max_concurrent_accounts,
            listen,
            status_token,
        },
        spool: super::Spool {
            path: raw.spool.path.as_deref().map(|p| absolutize(base, p)),
            max_bytes: match raw.spool.max_bytes {
                Some(ByteSize(0)) => {
                    return Err(invalid("spool.max_bytes must be more than zero".into()));
                }
                Some(ByteSize(n)) => n,
                None => crate::spool::DEFAULT_MAX_BYTES,
            },
        },
        accounts,
        account_template: raw.account_template,
        source_path: path.to_owned(),
    })
}

/// A TOML error with its line, column and key, without the excerpt of the
/// file that toml's own message shows: the line could hold a password (a
/// misspelt `pasword = "..."` is an unknown key).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return format!("TOML parse error: {message}");
    };
    let line = line_of(text, span.start);
    let line_start = text
        .get(..span.start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let column = text
        .get(line_start..span.start)
        .map_or(1, |t| t.chars().count() + 1);
    // The key of that line (what is left of `=`), when it looks like one:
    // toml names it only in the excerpt.
    let key = text
        .get(line_start..)
        .and_then(|l| l.lines().next())
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
    match key {
        Some(key) => {
            format!("TOML parse error at line {line}, column {column}, key {key}: {message}")
        }
        None => format!("TOML parse error at line {line}, column {column}: {message}"),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

pub(super) fn account(
    acc: RawAccount,
    name: String,
    daemon_poll: Duration,
    base: &Path,
    resolve_secrets: bool,
) -> Result<Account, String> {
    let ctx = |side: &str, m: String| format!("{name:?}: {side}.{m}");
    let source = server::<Pop3Auth>(
        acc.source.connection(),
        (995, 110),
        base,
        &name,
        resolve_secrets,
    )
    .map_err(|m| ctx("source", m))?;
    let target_server = server::<ImapAuth>(
        acc.target.connection(),
        (993, 143),
        base,
        &name,
        resolve_secrets,
    )
    .map_err(|m| ctx("target", m))?;
    let flags = acc.target.flags.clone().unwrap_or_default();
    for f in &flags {
        validate_flag(f).map_err(|m| ctx("target", format!("flags: {m}")))?;
    }
    let mailbox = acc.target.mailbox.clone().unwrap_or_else(|| "INBOX".into());
    if mailbox.is_empty() || mailbox.contains(['\r', '\n', '\0']) {
        return Err(ctx(
            "target",
            format!("mailbox: {mailbox:?} is not a valid mailbox name"),
        ));
    }
    let internal_date = match acc
        .target
        .internal_date
        .unwrap_or(RawInternalDate::Received)
    {
        RawInternalDate::Received => InternalDate::Received,
        RawInternalDate::Date => InternalDate::Date,
        RawInternalDate::Now => InternalDate::Now,
    };
    let connections = match acc.target.connections {
        None => DEFAULT_TARGET_CONNECTIONS,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_TARGET_CONNECTIONS).contains(n))
            .ok_or_else(|| {
                ctx(
                    "target",
                    format!("connections: {n} is not between 1 and {MAX_TARGET_CONNECTIONS}"),
                )
            })?,
    };
    let budget = UploadBudget {
        bytes_per_day: match acc.target.max_upload_per_day {
            None => None,
            Some(ByteSize(0)) => {
                return Err(ctx(
                    "target",
                    "max_upload_per_day must be larger than zero (leave it out for no budget)"
                        .into(),
                ));
            }
            Some(ByteSize(n)) => Some(n),
        },
        messages_per_minute: match acc.target.max_messages_per_minute {
            None => None,
            Some(n) => Some(u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                ctx(
                    "target",
                    format!(
                        "max_messages_per_minute: {n} is not between 1 and {}",
                        u32::MAX
                    ),
                )
            })?),
        },
    };
    let delete = match acc.policy.delete.as_deref().map(str::trim) {
        None | Some("never") => DeletePolicy::Never,
        Some("after-sync") => DeletePolicy::AfterSync,
        Some(age) => DeletePolicy::OlderThan(humantime::parse_duration(age).map_err(|e| {
            ctx(
                "policy",
                format!("delete: {age:?} is not \"never\", \"after-sync\" or an age such as \"30d\" ({e})"),
            )
        })?),
    };
    let max_attempts = acc.policy.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 {
        return Err(ctx("policy", "max_attempts must be at least 1".into()));
    }
    let poll_interval = acc.poll_interval.unwrap_or(daemon_poll);
    if poll_interval.is_zero() {
        return Err(format!("{name:?}: poll_interval must be longer than zero"));
    }
    Ok(Account {
        name,
        poll_interval,
        source,
        target: TargetSettings {
            server: target_server,
            mailbox,
            flags,
            internal_date,
            connections,
            budget,
        },
        policy: Policy {
            delete,
            max_message_size: acc
                .policy
                .max_message_size
                .map_or(DEFAULT_MAX_SIZE, |ByteSize(n)| n),
            max_attempts,
        },
    })
}

/// Validates one side's connection keys. `ports` are the protocol's default
/// ports with implicit TLS and without; `account` names the account (for
/// the OAuth2 token source's messages).
pub(super) fn server<A: Mechanism>(
    raw: RawConnection<'_>,
    ports: (u16, u16),
    base: &Path,
    account: &str,
    resolve_secrets: bool,
) -> Result<ServerSettings<A>, String> {
    let tls = raw.tls.unwrap_or(TlsMode::Implicit);
    let port = raw.port.unwrap_or(match tls {
        TlsMode::Implicit => ports.0,
        _ => ports.1,
    });
    let host = raw.host.trim().to_owned();
    if host.is_empty() {
        return Err("host: must not be empty".into());
    }
    let auth = match raw.auth {
        None => A::default(),
        Some(name) => A::from_name(name).ok_or_else(|| {
            format!(
                "auth: {name:?} is not a mechanism for {}; [accounts.{}] takes {}",
                A::PROTOCOL,
                A::SIDE,
                A::accepted()
            )
        })?,
    };
    let loopback = is_loopback(&host);
    if tls == TlsMode::None && auth.sends_password() && !loopback && !raw.allow_plaintext_password {
        return Err(format!(
            "tls: \"none\" would send the password for {host} unencrypted; use tls = \"implicit\" or \"starttls\", or set allow_plaintext_password = true on this side if you accept that"
        ));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err("timeout: must be longer than zero".into());
    }
    let ca_file = raw.ca_file.map(|p| absolutize(base, p));
    if let Some(p) = &ca_file
        && !p.is_file()
    {
        return Err(format!(
            "ca_file: {} does not exist or is not a file",
            p.display()
        ));
    }
    let tls_fingerprint = match raw.tls_fingerprint {
        None => None,
        Some(_) if tls == TlsMode::None => {
            return Err(
                "tls_fingerprint: set, but tls = \"none\": a fingerprint pins a TLS certificate"
                    .into(),
            );
        }
        Some(v) => Some(
            v.parse::<crate::net::CertFingerprint>()
                .map_err(|e| format!("tls_fingerprint: {e}"))?,
        ),
    };
    // With an oauth2 table the login presents a token: a password is not
    // needed (one given anyway is not used). The placeholder is never
    // resolved: `credential()` asks the table first.
    let password = match (raw.password, raw.oauth2.is_some()) {
        (Some(p), _) => secret_source(p),
        (None, true) => SecretSource::Literal(SecretString::from("")),
        (None, false) => {
            return Err(
                "password: missing (a string, { env = \"…\" }, { file = \"…\" } or { command = \"…\" }; with auth = \"xoauth2\" or \"oauthbearer\", an oauth2 table instead)"
                    .into(),
            );
        }
    };
    if resolve_secrets && raw.oauth2.is_none() {
        password
            .resolve_blocking()
            .map_err(|m| format!("password: {m}"))?;
    }
    let oauth2 = match raw.oauth2 {
        None => None,
        Some(_) if !auth.needs_bearer() => {
            return Err(format!(
                "oauth2: an oauth2 table is set, but auth = {:?} does not log in with a token; set auth = \"xoauth2\" or \"oauthbearer\" on this side, or remove the table",
                auth.name()
            ));
        }
        Some(t) => Some(super::oauth2::validate(
            t,
            account,
            A::SIDE,
            timeout,
            resolve_secrets,
        )?),
    };
    Ok(ServerSettings {
        endpoint: Endpoint {
            host,
            port,
            tls,
            ca_file,
            tls_fingerprint,
            timeout,
        },
        username: raw.username.to_owned(),
        password,
        auth,
        allow_plaintext_password: raw.allow_plaintext_password || loopback,
        oauth2,
    })
}

/// `[ledger]`: the SQLite path (absolute), or the PostgreSQL URL's source.
/// A URL read now (with `resolve_secrets`) must be a `postgres://` one;
/// no message quotes it (it may hold a password).
fn ledger_location(
    raw: &super::raw::RawLedger,
    base: &Path,
    resolve_secrets: bool,
) -> Result<(PathBuf, Option<SecretSource>), String> {
    match (&raw.path, &raw.url) {
        (Some(_), Some(_)) => Err(
            "has both path (a SQLite file) and url (a PostgreSQL database): keep one of them"
                .into(),
        ),
        (None, None) => Err(
            "needs path (a SQLite file, e.g. \"/var/lib/popferry/ledger.db\") or url (a PostgreSQL database)"
                .into(),
        ),
        (Some(path), None) => Ok((absolutize(base, path), None)),
        (None, Some(url)) => {
            let source = secret_source(url);
            if resolve_secrets {
                use secrecy::ExposeSecret as _;
                let value = source.resolve_blocking().map_err(|m| {
                    format!("url ({}): {}", source.origin(), m.replace("password ", ""))
                })?;
                let v = value.expose_secret();
                if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                    return Err(format!(
                        "url ({}) must be a PostgreSQL URL such as postgres://popferry@db/popferry",
                        source.origin()
                    ));
                }
            }
            Ok((PathBuf::new(), Some(source)))
        }
    }
}

pub(super) fn secret_source(raw: &RawSecret) -> SecretSource {
    match raw {
        RawSecret::Plain(s) => SecretSource::Literal(SecretString::from(s.as_str())),
        RawSecret::Source(RawSecretSource::Env(var)) => SecretSource::Env(var.clone()),
        RawSecret::Source(RawSecretSource::File(path)) => SecretSource::File(path.clone()),
        RawSecret::Source(RawSecretSource::Command(cmd)) => SecretSource::Command(cmd.clone()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_flag(flag: &str) -> Result<(), String> {
    let body = flag.strip_prefix('\\').unwrap_or(flag);
    let ok_chars = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
    if !ok_chars {
        return Err(format!(
            "{flag:?} is not a valid IMAP flag (e.g. \"\\\\Seen\" or a keyword)"
        ));
    }
    if flag.eq_ignore_ascii_case("\\Recent") {
        return Err("\\Recent cannot be set by a client".into());
    }
    Ok(())
}
