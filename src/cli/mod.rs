//! Subcommands: one file each, sharing configuration loading and the exit
//! status convention.

mod accounts;
mod check;
mod oauth;
mod run;
mod status;
mod sync;
pub mod telemetry;
mod verify;

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
    /// Configuration file [default: $POPFERRY_CONFIG, ./popferry.toml, /etc/popferry/popferry.toml;
    /// without any: one account from POPFERRY_* environment variables]
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
    ///
    /// Signals: SIGTERM or SIGINT stop at the next safe point (within 30 s);
    /// SIGHUP reloads the configuration (changed accounts restart, the others
    /// keep their schedule); SIGUSR1 makes every account due now ("check
    /// now", e.g. `kill -USR1 <pid>` or `docker kill -s USR1 <container>`).
    /// With [daemon] listen: /healthz, /readyz, /metrics and a status page at /
    /// (on a non-loopback address only with [daemon] status_token).
    Run,
    /// Validate the configuration, then log in to every server and report what it offers
    Check,
    /// What the ledger knows per account
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Compare the POP3 mailbox, the ledger and the target mailbox; change nothing without --repair
    Verify {
        /// Only this account (repeatable)
        #[arg(long = "account", value_name = "NAME")]
        accounts: Vec<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Copy again what is missing from the target (exactly once), clear stale rows, then sync and verify again
        #[arg(long)]
        repair: bool,
    },
    /// Accounts kept in the ledger beside the file's (fleets of thousands)
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// OAuth2: sign in and store the refresh token
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add (or replace) accounts from a CSV file: a header line, then one account a line
    ///
    /// Columns: name, source_host, source_username, source_password, target_host,
    /// target_username, target_password, and optionally mailbox and delete. Passwords
    /// are references only (env:NAME, file:/path, command:CMD). The other settings come
    /// from the configuration's [account_template]. One bad line and nothing is imported.
    Import {
        /// The CSV file
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
    },
    /// The accounts of the file and of the ledger
    List,
    /// Remove an account kept in the ledger (its history stays)
    Remove {
        /// The account
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Sign in to the provider of one side of an account and store the refresh token
    /// where its oauth2.refresh_token says (a file)
    Login {
        /// The account
        #[arg(long, value_name = "NAME")]
        account: String,
        /// The side to sign in for (needed when both sides use OAuth2)
        #[arg(long, value_enum)]
        side: Option<Side>,
        /// The sign-in flow [default: device for Microsoft, browser for Google]
        #[arg(long, value_enum)]
        flow: Option<Flow>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flow {
    /// A code to enter at the provider's page, on any device
    Device,
    /// A browser on this machine, redirected to 127.0.0.1 (PKCE)
    Browser,
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
    // `status` contacts no server; `oauth login` is how a missing refresh
    // token file comes to exist (and needs no mail server's password).
    let needs_secrets = !matches!(
        args.command,
        Command::Status { .. } | Command::Oauth { .. } | Command::Accounts { .. }
    );
    let mut cfg = match config::load(args.config.as_deref(), needs_secrets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("popferry: configuration error: {e}");
            return Outcome::Usage;
        }
    };
    // The accounts kept in the ledger join the file's (`accounts` keeps
    // them apart; `oauth login` is for the file's).
    if !matches!(
        args.command,
        Command::Accounts { .. } | Command::Oauth { .. }
    ) {
        match accounts::merge(&mut cfg, needs_secrets).await {
            Ok(()) => {}
            Err(accounts::MergeError::Config(e)) => {
                eprintln!("popferry: configuration error: {e}");
                return Outcome::Usage;
            }
            Err(accounts::MergeError::Ledger(e)) => {
                eprintln!("popferry: {e:#}");
                return Outcome::Failed;
            }
        }
    }
    if matches!(
        args.command,
        Command::Sync { .. } | Command::Run | Command::Verify { repair: true, .. }
    ) {
        // One budget per process, set before any pass; a spool folder that
        // cannot be used is a configuration error, found before any server
        // is contacted.
        let place = popferry::spool::configure(cfg.spool.path.clone(), cfg.spool.max_bytes);
        if let Err(e) = place.check() {
            eprintln!(
                "popferry: configuration error: {}: {e}",
                cfg.source_path.display()
            );
            return Outcome::Usage;
        }
    }
    match args.command {
        Command::Sync { accounts, dry_run } => sync::execute(&cfg, &accounts, dry_run).await,
        Command::Run => run::execute(cfg, args.config).await,
        Command::Check => check::execute(&cfg).await,
        Command::Status { json } => status::execute(&cfg, json).await,
        Command::Verify {
            accounts,
            json,
            repair,
        } => verify::execute(&cfg, &accounts, json, repair).await,
        Command::Accounts { command } => match command {
            AccountsCommand::Import { file } => accounts::import(&cfg, &file).await,
            AccountsCommand::List => accounts::list(&cfg).await,
            AccountsCommand::Remove { name } => accounts::remove(&cfg, &name).await,
        },
        Command::Oauth {
            command:
                OauthCommand::Login {
                    account,
                    side,
                    flow,
                },
        } => oauth::login(&cfg, &account, side, flow).await,
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

/// Opens the configured ledger: the SQLite file, or the PostgreSQL
/// database (its URL read from its source now; errors never show its
/// password).
pub async fn open_ledger(cfg: &Config) -> anyhow::Result<popferry::ledger::Ledger> {
    let ledger = match &cfg.ledger_url {
        None => popferry::ledger::Ledger::open(&cfg.ledger_path).await?,
        Some(source) => {
            let url = source.resolve().await.map_err(|m| {
                anyhow::anyhow!("Cannot read [ledger] url ({}): {m}", source.origin())
            })?;
            popferry::ledger::Ledger::connect(&url).await?
        }
    };
    Ok(ledger.with_lease_ttl(cfg.lease_ttl))
}

/// Whether the configured ledger may hold something: a SQLite file that
/// exists, or any PostgreSQL database (which `status` and a dry run then
/// read; connecting creates nothing but the tables).
pub fn ledger_may_exist(cfg: &Config) -> bool {
    cfg.ledger_url.is_some() || cfg.ledger_path.exists()
}
