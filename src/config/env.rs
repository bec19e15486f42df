//! One account from environment variables alone (`docker run -e …`), used
//! when no configuration file is found.
//!
//! Why it builds a TOML document instead of settings: the variables are
//! written into the very document a configuration file would be (one key
//! per line, each line remembering its variable), and that document goes
//! through the same loader (`load.rs`). So every rule, default and check of
//! the file applies unchanged, and a key added to the file later works from
//! the environment as soon as it has a variable here. Only the wording of
//! errors differs: a message about a key (or a line of the document) is
//! turned into one about the variable, and no value is ever quoted that may
//! be a secret: `POPFERRY_*_PASSWORD` is read through `{ env = "…" }` at each
//! login and never enters the document, and a `postgres://` ledger URL is
//! only ever named by its variable.
//!
//! A configuration file and `POPFERRY_SOURCE_*`/`POPFERRY_TARGET_*`
//! variables together are an error naming both: silently preferring one
//! would sync an account the user did not mean. An empty variable counts as
//! unset (compose files often write `VAR:` or `VAR=`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Config;
use super::load::{ConfigError, load_file, load_str, locate};

/// The prefixes of the account's variables: any of them set makes the
/// environment a configuration (and conflicts with a file).
const ACCOUNT_PREFIXES: [&str; 2] = ["POPFERRY_SOURCE_", "POPFERRY_TARGET_"];

/// The default ledger when `POPFERRY_LEDGER` is unset: relative to the
/// working directory (the image's `/data` volume).
pub const DEFAULT_LEDGER: &str = "ledger.db";

/// How a variable's value is written into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A TOML string.
    Text,
    /// An integer when it reads as one, else a string (so that the loader
    /// refuses it in its own words).
    Number,
    /// Comma-separated: an array of strings.
    List,
    /// The password: `{ env = "<this variable>" }`, read at each login.
    SecretEnv,
    /// `{ file = "<value>" }`.
    SecretFile,
    /// `url` for `postgres://…` (a secret: never quoted), else `path`.
    Ledger,
}

/// One variable and the key it sets.
struct Var {
    name: &'static str,
    /// The table, as the file writes its header (`accounts.source`).
    table: &'static str,
    key: &'static str,
    kind: Kind,
}

const fn var(name: &'static str, table: &'static str, key: &'static str, kind: Kind) -> Var {
    Var {
        name,
        table,
        key,
        kind,
    }
}

/// Every variable, in document order (DESIGN.md's table). Tables: `ledger`,
/// `daemon`, `accounts` (the one `[[accounts]]`), its `source`, `target`
/// and `policy`.
#[rustfmt::skip]
const VARS: &[Var] = &[
    var("POPFERRY_LEDGER", "ledger", "path", Kind::Ledger),
    var("POPFERRY_POLL_INTERVAL", "daemon", "poll_interval", Kind::Text),
    var("POPFERRY_LISTEN", "daemon", "listen", Kind::Text),
    var("POPFERRY_ACCOUNT", "accounts", "name", Kind::Text),
    var("POPFERRY_SOURCE_HOST", "accounts.source", "host", Kind::Text),
    var("POPFERRY_SOURCE_PORT", "accounts.source", "port", Kind::Number),
    var("POPFERRY_SOURCE_TLS", "accounts.source", "tls", Kind::Text),
    var("POPFERRY_SOURCE_USERNAME", "accounts.source", "username", Kind::Text),
    var("POPFERRY_SOURCE_PASSWORD", "accounts.source", "password", Kind::SecretEnv),
    var("POPFERRY_SOURCE_PASSWORD_FILE", "accounts.source", "password", Kind::SecretFile),
    var("POPFERRY_SOURCE_AUTH", "accounts.source", "auth", Kind::Text),
    var("POPFERRY_SOURCE_CA_FILE", "accounts.source", "ca_file", Kind::Text),
    var("POPFERRY_SOURCE_TIMEOUT", "accounts.source", "timeout", Kind::Text),
    var("POPFERRY_TARGET_HOST", "accounts.target", "host", Kind::Text),
    var("POPFERRY_TARGET_PORT", "accounts.target", "port", Kind::Number),
    var("POPFERRY_TARGET_TLS", "accounts.target", "tls", Kind::Text),
    var("POPFERRY_TARGET_USERNAME", "accounts.target", "username", Kind::Text),
    var("POPFERRY_TARGET_PASSWORD", "accounts.target", "password", Kind::SecretEnv),
    var("POPFERRY_TARGET_PASSWORD_FILE", "accounts.target", "password", Kind::SecretFile),
    var("POPFERRY_TARGET_AUTH", "accounts.target", "auth", Kind::Text),
    var("POPFERRY_TARGET_CA_FILE", "accounts.target", "ca_file", Kind::Text),
    var("POPFERRY_TARGET_TIMEOUT", "accounts.target", "timeout", Kind::Text),
    var("POPFERRY_TARGET_MAILBOX", "accounts.target", "mailbox", Kind::Text),
    var("POPFERRY_TARGET_FLAGS", "accounts.target", "flags", Kind::List),
    var("POPFERRY_TARGET_CONNECTIONS", "accounts.target", "connections", Kind::Number),
    var("POPFERRY_TARGET_MAX_UPLOAD_PER_DAY", "accounts.target", "max_upload_per_day", Kind::Text),
    var("POPFERRY_TARGET_MAX_MESSAGES_PER_MINUTE", "accounts.target", "max_messages_per_minute", Kind::Number),
    var("POPFERRY_DELETE", "accounts.policy", "delete", Kind::Text),
    var("POPFERRY_MAX_MESSAGE_SIZE", "accounts.policy", "max_message_size", Kind::Text),
];

/// The tables in document order, with the header the file would write.
const TABLES: [(&str, &str); 6] = [
    ("ledger", "[ledger]"),
    ("daemon", "[daemon]"),
    ("accounts", "[[accounts]]"),
    ("accounts.source", "[accounts.source]"),
    ("accounts.target", "[accounts.target]"),
    ("accounts.policy", "[accounts.policy]"),
];

/// The `POPFERRY_*` variables of this process (empty ones left out).
#[derive(Debug, Clone, Default)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// A snapshot of this process's `POPFERRY_*` variables. One of the
    /// account's that is not UTF-8 is an error naming it (never its value);
    /// others (`POPFERRY_CONFIG` may be any path) are left to their readers.
    pub fn from_process() -> Result<EnvVars, ConfigError> {
        let mut vars = BTreeMap::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str().filter(|k| k.starts_with("POPFERRY_")) else {
                continue;
            };
            let ours = VARS.iter().any(|v| v.name == k)
                || ACCOUNT_PREFIXES.iter().any(|p| k.starts_with(p));
            let v = match v.into_string() {
                Ok(v) => v,
                Err(_) if !ours => continue,
                Err(_) => {
                    return Err(ConfigError::Environment {
                        message: format!("{k} is not valid UTF-8"),
                    });
                }
            };
            if !v.is_empty() {
                vars.insert(k.to_owned(), v);
            }
        }
        Ok(EnvVars(vars))
    }

    /// Variables given as pairs (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> EnvVars {
        EnvVars(
            pairs
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The `POPFERRY_SOURCE_*`/`POPFERRY_TARGET_*` variables that are set.
    pub fn account_vars(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .filter(|k| ACCOUNT_PREFIXES.iter().any(|p| k.starts_with(p)))
            .collect()
    }
}

/// Loads the configuration the command line asks for: the file (`-c`,
/// `$POPFERRY_CONFIG`, `./popferry.toml`, `/etc/popferry/popferry.toml`),
/// or, when none of them is there, one account from the environment.
pub fn load(flag: Option<&Path>, resolve_secrets: bool) -> Result<Config, ConfigError> {
    let vars = EnvVars::from_process()?;
    let cwd = std::env::current_dir().map_err(|e| ConfigError::Environment {
        message: format!("cannot read the working directory: {e}"),
    })?;
    load_with(locate(flag), &vars, &cwd, resolve_secrets)
}

/// [`load`] with the file already located (`None`: none found) and the
/// variables given; `cwd` anchors relative paths in variables.
pub fn load_with(
    file: Option<PathBuf>,
    vars: &EnvVars,
    cwd: &Path,
    resolve_secrets: bool,
) -> Result<Config, ConfigError> {
    let account_vars = vars.account_vars();
    match file {
        Some(path) if !account_vars.is_empty() && path.exists() => Err(ConfigError::Conflict {
            path,
            vars: account_vars.join(", "),
        }),
        Some(path) => load_file(&path, resolve_secrets).map_err(|e| match e {
            ConfigError::Read { path, source } if !account_vars.is_empty() => {
                ConfigError::Environment {
                    message: format!(
                        "{} are set, but a configuration file was asked for ({}: {source}); the variables are used only without -c and $POPFERRY_CONFIG",
                        account_vars.join(", "),
                        path.display()
                    ),
                }
            }
            other => other,
        }),
        None if account_vars.is_empty() => Err(ConfigError::Read {
            path: PathBuf::from("popferry.toml"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no configuration file found (-c, $POPFERRY_CONFIG, ./popferry.toml, /etc/popferry/popferry.toml), and no POPFERRY_SOURCE_*/POPFERRY_TARGET_* variables set",
            ),
        }),
        None => from_env(vars, cwd, resolve_secrets),
    }
}

/// One account from the variables, validated as a file would be.
pub fn from_env(vars: &EnvVars, cwd: &Path, resolve_secrets: bool) -> Result<Config, ConfigError> {
    let env_error = |message: String| ConfigError::Environment { message };
    let doc = Document::build(vars).map_err(env_error)?;
    // The name only anchors relative paths (its folder) in the loader.
    let anchor = cwd.join("environment");
    let mut cfg = load_str(&doc.text, &anchor, resolve_secrets).map_err(|e| match e {
        ConfigError::Invalid { message, .. } => env_error(doc.name_variable(&message)),
        other => other,
    })?;
    cfg.source_path = PathBuf::from("environment variables (POPFERRY_*)");
    Ok(cfg)
}

/// The TOML document written from the variables, and which variable wrote
/// each of its lines.
struct Document {
    text: String,
    /// Per line (0-based): the variable that wrote it, or the table whose
    /// header it is.
    lines: Vec<Line>,
}

#[derive(Clone, Copy)]
enum Line {
    Header(&'static str),
    Key(&'static Var),
}

impl Document {
    fn build(vars: &EnvVars) -> Result<Document, String> {
        if let Some(v) = unknown_account_vars(vars).next() {
            return Err(format!(
                "{v} is not a variable popferry reads; {}",
                accepted_for(v)
            ));
        }
        let mut doc = Document {
            text: String::new(),
            lines: Vec::new(),
        };
        for (table, header) in TABLES {
            doc.push(header, Line::Header(table));
            let mut wrote_name = false;
            for v in VARS.iter().filter(|v| v.table == table) {
                let Some(value) = vars.get(v.name) else {
                    continue;
                };
                if v.kind == Kind::SecretFile
                    && let Some(other) = VARS
                        .iter()
                        .find(|o| o.kind == Kind::SecretEnv && o.table == v.table)
                    && vars.get(other.name).is_some()
                {
                    return Err(format!(
                        "{} and {} are both set: give the password one way",
                        other.name, v.name
                    ));
                }
                wrote_name |= v.key == "name";
                let line = entry(v, value);
                doc.push(&line, Line::Key(v));
            }
            // A file may leave the password out for an oauth2 table; the
            // environment has no oauth2 variables, so it needs one.
            if table == "accounts.source" || table == "accounts.target" {
                let forms: Vec<&str> = VARS
                    .iter()
                    .filter(|v| v.table == table && v.key == "password")
                    .map(|v| v.name)
                    .collect();
                if forms.iter().all(|n| vars.get(n).is_none()) {
                    return Err(format!("{} must be set", forms.join(" or ")));
                }
            }
            if table == "ledger" && vars.get("POPFERRY_LEDGER").is_none() {
                let v = VARS
                    .iter()
                    .find(|v| v.name == "POPFERRY_LEDGER")
                    .ok_or("the ledger variable is missing from the table")?;
                doc.push(&format!("path = \"{DEFAULT_LEDGER}\""), Line::Key(v));
            }
            if table == "accounts" && !wrote_name {
                let v = VARS
                    .iter()
                    .find(|v| v.name == "POPFERRY_ACCOUNT")
                    .ok_or("the account variable is missing from the table")?;
                doc.push("name = \"default\"", Line::Key(v));
            }
        }
        Ok(doc)
    }

    fn push(&mut self, line: &str, what: Line) {
        self.text.push_str(line);
        self.text.push('\n');
        self.lines.push(what);
    }

    /// Rewrites a loader message about the document so that it names the
    /// variable instead of a key or a line.
    fn name_variable(&self, message: &str) -> String {
        if let Some(line) = parse_error_line(message) {
            let detail = message
                .split_once(": ")
                .map_or(message, |(_, rest)| rest)
                .trim();
            match line.checked_sub(1).and_then(|i| self.lines.get(i)) {
                Some(Line::Key(v)) => return format!("{}: {}", v.name, detail),
                Some(Line::Header(table)) => {
                    if let Some(key) = missing_field(detail) {
                        let names: Vec<&str> = VARS
                            .iter()
                            .filter(|v| v.table == *table && v.key == key)
                            .map(|v| v.name)
                            .collect();
                        if !names.is_empty() {
                            return format!("{} must be set", names.join(" or "));
                        }
                    }
                    return format!("{}: {detail}", section_vars(table));
                }
                None => {}
            }
        }
        // A validation message: "account at line 7: \"default\": source.tls: …".
        // The earliest mention of a key the document holds names the variable.
        let found = self
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Key(v) => Some(*v),
                Line::Header(_) => None,
            })
            .flat_map(|v| needles(v).into_iter().map(move |n| (v, n)))
            .filter_map(|(v, n)| message.find(&n).map(|at| (at, v, n)))
            .min_by_key(|(at, _, _)| *at);
        match found {
            Some((at, v, needle)) => {
                let rest = message
                    .get(at + needle.len()..)
                    .unwrap_or_default()
                    .trim_start_matches([':', ' ']);
                format!("{}: {rest}", v.name)
            }
            None => message.to_owned(),
        }
    }
}

/// The document's line for a variable's value.
fn entry(v: &Var, value: &str) -> String {
    let string = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let value = match v.kind {
        Kind::Text => string(value),
        Kind::Number => value
            .trim()
            .parse::<i64>()
            .map_or_else(|_| string(value), |n| n.to_string()),
        Kind::List => {
            let items: Vec<toml::Value> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect();
            toml::Value::Array(items).to_string()
        }
        Kind::SecretEnv => format!("{{ env = {} }}", string(v.name)),
        Kind::SecretFile => format!("{{ file = {} }}", string(value)),
        // The URL may hold a password: the document reads it from the
        // variable, as `url = { env = "…" }` in a file would.
        Kind::Ledger if is_postgres(value) => {
            return format!("url = {{ env = {} }}", string(v.name));
        }
        Kind::Ledger => string(value),
    };
    format!("{} = {value}", v.key)
}

fn is_postgres(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with("postgres://") || v.starts_with("postgresql://")
}

/// `POPFERRY_SOURCE_*`/`POPFERRY_TARGET_*` variables that no key reads
/// (misspelt ones: a silently ignored `POPFERRY_SOURCE_PROT` would connect
/// to the default port).
fn unknown_account_vars(vars: &EnvVars) -> impl Iterator<Item = &str> {
    vars.account_vars()
        .into_iter()
        .filter(|k| !VARS.iter().any(|v| v.name == *k))
}

/// "POPFERRY_SOURCE_* takes: …" for a misspelt variable's message.
fn accepted_for(name: &str) -> String {
    let prefix = ACCOUNT_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
        .copied()
        .unwrap_or("POPFERRY_");
    let names: Vec<&str> = VARS
        .iter()
        .map(|v| v.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    format!("{prefix}* takes {}", names.join(", "))
}

/// The variables of a table, for a message about the table itself.
fn section_vars(table: &str) -> String {
    let names: Vec<&str> = VARS
        .iter()
        .filter(|v| v.table == table)
        .map(|v| v.name)
        .collect();
    names.join(", ")
}

/// How the loader names a key in its messages: `source.host` for
/// `[accounts.source] host`, `daemon.listen`, `ledger.path`; an account's
/// own keys as `: name ` (and the account's poll interval, which comes from
/// `POPFERRY_POLL_INTERVAL`, as `: poll_interval `).
fn needles(v: &Var) -> Vec<String> {
    let short = v.table.strip_prefix("accounts.").unwrap_or(v.table);
    let mut n = vec![format!("{short}.{}", v.key)];
    if v.table == "accounts" {
        n = vec![format!(": {} ", v.key)];
    }
    if v.table == "daemon" && v.key == "poll_interval" {
        n.push(": poll_interval ".into());
    }
    n
}

/// The line of a TOML parse error ("TOML parse error at line 7, …").
fn parse_error_line(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("TOML parse error at line ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The key of serde's "missing field `host`".
fn missing_field(detail: &str) -> Option<&str> {
    let rest = detail.split_once("missing field `")?.1;
    rest.split_once('`').map(|(k, _)| k)
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
