//! Subcommands: one file each, sharing configuration loading and the exit
//! status convention.

mod check;
mod run;
mod status;
mod sync;
pub mod telemetry;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use popferry::config::{self, Config};

#[derive(Debug, Parser)]
#[command(
    name = "popferry",
    version,
    about = "Copy POP3 mailboxes into IMAP, byte for byte, exactly once"
)]
pub struct Args {
    /// Configuration file [default: $POPFERRY_CONFIG, ./popferry.toml, /etc/popferry/popferry.toml]
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG), e.g. "debug"
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over the accounts, then exit
    Sync {
        /// Only this account (repeatable)
        #[arg(long = "account", value_name = "NAME")]
        accounts: Vec<String>,
        /// Connect and list, report what would be copied and deleted, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Run as a daemon: every account on its schedule until SIGTERM/SIGINT
    Run,
    /// Validate the configuration, then log in to every server and report what it offers
    Check,
    /// What the ledger knows per account
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything went well.
    Ok,
    /// The command ran, but something failed.
    Failed,
    /// The command line or the configuration is wrong; nothing was contacted.
    Usage,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Usage => 2,
        }
    }
}

pub async fn execute(args: Args) -> Outcome {
    let path = config::resolve_path(args.config.as_deref());
    let needs_secrets = !matches!(args.command, Command::Status { .. });
    let cfg = match config::load_file(&path, needs_secrets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("popferry: configuration error: {e}");
            return Outcome::Usage;
        }
    };
    if matches!(args.command, Command::Sync { .. } | Command::Run) {
        // One budget per process, set before any pass; a spool folder that
        // cannot be used is a configuration error, found before any server
        // is contacted.
        let place = popferry::spool::configure(cfg.spool.path.clone(), cfg.spool.max_bytes);
        if let Err(e) = place.check() {
            eprintln!("popferry: configuration error: {}: {e}", path.display());
            return Outcome::Usage;
        }
    }
    match args.command {
        Command::Sync { accounts, dry_run } => sync::execute(&cfg, &accounts, dry_run).await,
        Command::Run => run::execute(cfg, path).await,
        Command::Check => check::execute(&cfg).await,
        Command::Status { json } => status::execute(&cfg, json).await,
    }
}

/// Selects the named accounts, or all; an unknown name is a usage error.
pub fn select_accounts<'a>(
    cfg: &'a Config,
    names: &[String],
) -> Result<Vec<&'a config::Account>, String> {
    if names.is_empty() {
        return Ok(cfg.accounts.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.accounts.iter().find(|a| &a.name == n).ok_or_else(|| {
                let known: Vec<&str> = cfg.accounts.iter().map(|a| a.name.as_str()).collect();
                format!(
                    "no account named {n:?} in {} (known: {})",
                    cfg.source_path.display(),
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Formats a unix time for people (UTC, RFC 3339). Total: a time before
/// 1970 or after 9999 (a ledger row from a hostile LOGIN-DELAY, say) is
/// shown as its number instead of panicking.
pub fn when(t: Option<i64>) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let at = u64::try_from(t)
        .ok()
        .filter(|s| *s <= LAST_RFC3339_SECOND)
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
    match at {
        Some(at) => {
            use std::fmt::Write;
            let mut out = String::new();
            match write!(out, "{}", humantime::format_rfc3339_seconds(at)) {
                Ok(()) => out,
                Err(_) => format!("unix time {t}"),
            }
        }
        None => format!("unix time {t} (out of range)"),
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    /// Any unix time prints (issue 9, case 5: a next run past year 9999
    /// panicked `popferry status`).
    #[test]
    fn when_is_total() {
        assert_eq!(when(None), "never");
        assert_eq!(when(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(when(Some(253_402_300_799)), "9999-12-31T23:59:59Z");
        for t in [i64::MAX, i64::MIN, -1, 253_402_300_800, 260_000_000_000] {
            let s = when(Some(t));
            assert!(s.contains(&t.to_string()), "{t}: {s}");
        }
    }
}
