//! Reading, validating and resolving the configuration file.
//!
//! Everything here fails before any server is contacted, so the command line
//! can map a [`ConfigError`] to exit status 2. Messages name the file, the
//! account and the key, and say what to do.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use super::raw::{
    ByteSize, RawAccount, RawAuth, RawConfig, RawInternalDate, RawSecret, RawSecretSource,
    RawServer,
};
use super::{
    Account, AuthMechanism, Config, Daemon, DeletePolicy, Endpoint, InternalDate, Policy,
    ServerSettings, TargetSettings, TlsMode,
};

const DEFAULT_POLL: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_SIZE: u64 = 50 << 20;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_CONCURRENCY: usize = 4;

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
}

/// Where the configuration is: the `-c` flag, then `$POPFERRY_CONFIG`, then
/// `./popferry.toml`, then `/etc/popferry/popferry.toml`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("POPFERRY_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("popferry.toml");
    let system = PathBuf::from("/etc/popferry/popferry.toml");
    if !local.exists() && system.exists() {
        system
    } else {
        local
    }
}

/// Reads and validates a configuration file. With `resolve_secrets` false
/// (for `status`, which contacts no server) passwords are not looked up.
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
    let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
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
    if raw.accounts.is_empty() {
        return Err(invalid(
            "no [[accounts]] defined: add at least one (see config/popferry.example.toml)".into(),
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

    Ok(Config {
        ledger_path: absolutize(base, &raw.ledger.path),
        daemon: Daemon {
            poll_interval: daemon_poll,
            max_concurrent_accounts,
            listen,
        },
        accounts,
        source_path: path.to_owned(),
    })
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

fn account(
    acc: RawAccount,
    name: String,
    daemon_poll: Duration,
    base: &Path,
    resolve_secrets: bool,
) -> Result<Account, String> {
    let ctx = |side: &str, m: String| format!("{name:?}: {side}.{m}");
    for (key, set) in [
        ("mailbox", acc.source.mailbox.is_some()),
        ("flags", acc.source.flags.is_some()),
        ("internal_date", acc.source.internal_date.is_some()),
    ] {
        if set {
            return Err(ctx(
                "source",
                format!("{key}: only the [accounts.target] side takes this key"),
            ));
        }
    }
    let source =
        server(&acc.source, Side::Source, base, resolve_secrets).map_err(|m| ctx("source", m))?;
    let target_server =
        server(&acc.target, Side::Target, base, resolve_secrets).map_err(|m| ctx("target", m))?;
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

fn server(
    raw: &RawServer,
    side: Side,
    base: &Path,
    resolve_secrets: bool,
) -> Result<ServerSettings, String> {
    let tls = raw.tls.unwrap_or(TlsMode::Implicit);
    let port = raw.port.unwrap_or(match (side, tls) {
        (Side::Source, TlsMode::Implicit) => 995,
        (Side::Source, _) => 110,
        (Side::Target, TlsMode::Implicit) => 993,
        (Side::Target, _) => 143,
    });
    let host = raw.host.trim().to_owned();
    if host.is_empty() {
        return Err("host: must not be empty".into());
    }
    let auth = match (side, raw.auth.unwrap_or(RawAuth::Auto)) {
        (_, RawAuth::Auto) => AuthMechanism::Auto,
        (_, RawAuth::Plain) => AuthMechanism::Plain,
        (Side::Source, RawAuth::User) => AuthMechanism::User,
        (Side::Source, RawAuth::Apop) => AuthMechanism::Apop,
        (Side::Target, RawAuth::Login) => AuthMechanism::Login,
        (Side::Source, RawAuth::Login) => {
            return Err("auth: the POP3 side takes auto, user, apop or plain".into());
        }
        (Side::Target, _) => return Err("auth: the IMAP side takes auto, login or plain".into()),
    };
    let loopback = is_loopback(&host);
    // APOP sends a digest, not the password; every other method sends it.
    let sends_password = auth != AuthMechanism::Apop;
    if tls == TlsMode::None && sends_password && !loopback && !raw.allow_plaintext_password {
        return Err(format!(
            "tls: \"none\" would send the password for {host} unencrypted; use tls = \"implicit\" or \"starttls\", or set allow_plaintext_password = true on this side if you accept that"
        ));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err("timeout: must be longer than zero".into());
    }
    let ca_file = raw.ca_file.as_ref().map(|p| absolutize(base, p));
    if let Some(p) = &ca_file
        && !p.is_file()
    {
        return Err(format!(
            "ca_file: {} does not exist or is not a file",
            p.display()
        ));
    }
    let password = if resolve_secrets {
        resolve_secret(&raw.password).map_err(|m| format!("password: {m}"))?
    } else {
        SecretString::from(String::new())
    };
    Ok(ServerSettings {
        endpoint: Endpoint {
            host,
            port,
            tls,
            ca_file,
            timeout,
        },
        username: raw.username.clone(),
        password,
        auth,
        allow_plaintext_password: raw.allow_plaintext_password || loopback,
    })
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

fn resolve_secret(raw: &RawSecret) -> Result<SecretString, String> {
    let value = match raw {
        RawSecret::Plain(s) => s.clone(),
        RawSecret::Source(RawSecretSource::Env(var)) => std::env::var(var)
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
        RawSecret::Source(RawSecretSource::File(path)) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
            s.trim_end_matches(['\r', '\n']).to_owned()
        }
        RawSecret::Source(RawSecretSource::Command(cmd)) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run password command: {e}"))?;
            if !out.status.success() {
                // stderr only: stdout might hold part of a secret.
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "password command failed ({}): {}",
                    out.status,
                    err.trim().chars().take(300).collect::<String>()
                ));
            }
            String::from_utf8(out.stdout)
                .map_err(|_| "password command printed non-UTF-8 output".to_string())?
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        }
    };
    if value.is_empty() {
        return Err("is empty".into());
    }
    Ok(SecretString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ledger]
path = "ledger.db"

[[accounts]]
name = "legacy"

[accounts.source]
host = "pop.example.net"
username = "me"
password = "pw"

[accounts.target]
host = "imap.example.com"
username = "me"
password = "pw2"
flags = ["\\Seen"]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_str(text, Path::new("/etc/popferry/test.toml"), true)
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../config/popferry.example.toml");
        let c = load_str(text, Path::new("/etc/popferry/popferry.toml"), false).expect("example");
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].policy.max_attempts, 3);
    }

    #[test]
    fn defaults_are_filled_in() {
        let c = load(GOOD).expect("valid");
        let a = &c.accounts[0];
        assert_eq!(a.source.endpoint.port, 995);
        assert_eq!(a.target.server.endpoint.port, 993);
        assert_eq!(a.target.mailbox, "INBOX");
        assert_eq!(a.policy.delete, DeletePolicy::Never);
        assert_eq!(a.policy.max_message_size, 50 << 20);
        assert_eq!(a.poll_interval, Duration::from_secs(300));
        assert_eq!(c.ledger_path, PathBuf::from("/etc/popferry/ledger.db"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = GOOD.replace(
            "username = \"me\"\npassword = \"pw\"",
            "username = \"me\"\npasword = \"pw\"",
        );
        let e = load(&text).expect_err("typo").to_string();
        assert!(e.contains("pasword"), "{e}");
        assert!(e.contains("line 11"), "{e}");
    }

    #[test]
    fn duplicate_account_names_point_at_both() {
        let second = GOOD
            .split_once("[[accounts]]")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let text = format!("{GOOD}\n[[accounts]]{second}");
        let e = load(&text).expect_err("duplicate").to_string();
        assert!(e.contains("same name") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn plaintext_password_refused_off_loopback() {
        let text = GOOD.replace(
            "host = \"pop.example.net\"",
            "host = \"pop.example.net\"\ntls = \"none\"",
        );
        let e = load(&text).expect_err("plaintext").to_string();
        assert!(e.contains("allow_plaintext_password"), "{e}");
        let ok = GOOD.replace(
            "host = \"pop.example.net\"",
            "host = \"127.0.0.1\"\ntls = \"none\"",
        );
        assert_eq!(
            load(&ok).expect("loopback").accounts[0]
                .source
                .endpoint
                .port,
            110
        );
    }

    #[test]
    fn missing_env_var_is_named() {
        let text = GOOD.replace(
            "password = \"pw\"",
            "password = { env = \"POPFERRY_TEST_SURELY_UNSET\" }",
        );
        let e = load(&text).expect_err("env").to_string();
        assert!(
            e.contains("POPFERRY_TEST_SURELY_UNSET") && e.contains("source.password"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_and_delete_policy_are_reported() {
        let text = GOOD.replace(
            "name = \"legacy\"",
            "name = \"legacy\"\npoll_interval = \"5 fortnights\"",
        );
        assert!(
            load(&text)
                .expect_err("duration")
                .to_string()
                .contains("poll_interval")
        );
        let text = format!("{GOOD}\n[accounts.policy]\ndelete = \"sometimes\"\n");
        assert!(
            load(&text)
                .expect_err("delete")
                .to_string()
                .contains("policy.delete")
        );
    }

    #[test]
    fn password_command_and_age_policy() {
        let text = GOOD.replace(
            "password = \"pw\"",
            "password = { command = \"printf 's3cret\\\\n'\" }",
        );
        let text =
            format!("{text}\n[accounts.policy]\ndelete = \"30d\"\nmax_message_size = \"10MB\"\n");
        let c = load(&text).expect("valid");
        use secrecy::ExposeSecret;
        assert_eq!(c.accounts[0].source.password.expose_secret(), "s3cret");
        assert_eq!(
            c.accounts[0].policy.delete,
            DeletePolicy::OlderThan(Duration::from_secs(30 * 86400))
        );
        assert_eq!(c.accounts[0].policy.max_message_size, 10_000_000);
    }
}
