//! Accounts kept in the ledger (`popferry accounts import FILE.csv`), for
//! fleets of thousands: each is a CSV line (name, both sides' host, user
//! and password reference, mailbox, delete policy), and everything else
//! comes from the file's `[account_template]`, a table with the keys of an
//! `[[accounts]]` table (ports, TLS, `ca_file`, timeouts, schedule,
//! flags, the rest of the policy). Without a template such an account takes
//! the defaults a file account takes.
//!
//! Why so: a row is turned into the very table a file account would be
//! (the template, then the row's values over it) and validated by the same
//! loader, so both kinds of account mean the same and fail the same way.
//! Passwords in the ledger are references only (`env:NAME`, `file:/path`,
//! `command:CMD`): a line with anything else is refused at import, naming
//! the line and never quoting the value. The file's accounts and the
//! ledger's are one set: a name in both is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize as _;

use super::raw::RawAccount;
use super::{Account, Config, ConfigError};
use crate::ledger::ImportedAccount;

/// The CSV header's columns: the first seven are required on every line,
/// `mailbox` and `delete` may be absent or empty (the template's, else
/// INBOX and never).
pub const COLUMNS: [&str; 9] = [
    "name",
    "source_host",
    "source_username",
    "source_password",
    "target_host",
    "target_username",
    "target_password",
    "mailbox",
    "delete",
];
const REQUIRED: usize = 7;

/// A CSV line that cannot be imported (1-based line number of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Splits CSV text (RFC 4180: commas, `"` quotes with `""` inside, CRLF or
/// LF) into records, each with the line it starts on. Blank lines are
/// skipped.
pub fn split_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, LineError> {
    let mut out = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
                any = true;
            }
            '"' => {
                return Err(LineError {
                    line,
                    message: "a quote inside a field that does not start with one (quote the whole field, and double the quotes inside)".into(),
                });
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if any || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    out.push((start, std::mem::take(&mut fields)));
                }
                was_quoted = false;
                any = false;
                line += 1;
                start = line;
            }
            c => {
                if was_quoted {
                    return Err(LineError {
                        line,
                        message: "text after a quoted field's closing quote".into(),
                    });
                }
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err(LineError {
            line: start,
            message: "a quoted field is not closed".into(),
        });
    }
    if any || !field.is_empty() {
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

/// The good lines of a CSV (with their line numbers), and the bad ones.
pub type Parsed = (Vec<(usize, ImportedAccount)>, Vec<LineError>);

/// Reads an accounts CSV: a header naming [`COLUMNS`] (any order; the
/// seven required ones present), then one account a line. Every line is
/// checked: the good lines, and an error for each bad one (none of the
/// lines' values quoted).
pub fn parse_csv(text: &str) -> Parsed {
    match parse(text) {
        Ok(parsed) => parsed,
        Err(e) => (Vec::new(), vec![e]),
    }
}

fn parse(text: &str) -> Result<Parsed, LineError> {
    let records = split_csv(text)?;
    let mut records = records.into_iter();
    let Some((header_line, header)) = records.next() else {
        return Err(LineError {
            line: 1,
            message: format!(
                "empty: the first line names the columns ({})",
                COLUMNS.join(",")
            ),
        });
    };
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        let Some(known) = COLUMNS.iter().find(|c| **c == h) else {
            return Err(LineError {
                line: header_line,
                message: format!(
                    "unknown column {h:?}: the columns are {}",
                    COLUMNS.join(", ")
                ),
            });
        };
        if index.insert(known, i).is_some() {
            return Err(LineError {
                line: header_line,
                message: format!("column {h:?} appears twice"),
            });
        }
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .take(REQUIRED)
        .filter(|c| !index.contains_key(**c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(LineError {
            line: header_line,
            message: format!("missing column(s): {}", missing.join(", ")),
        });
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (line, fields) in records {
        if fields.len() != header.len() {
            errors.push(LineError {
                line,
                message: format!("{} field(s), the header has {}", fields.len(), header.len()),
            });
            continue;
        }
        let get = |c: &str| -> String {
            index
                .get(c)
                .and_then(|i| fields.get(*i))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let optional = |c: &str| Some(get(c)).filter(|v| !v.is_empty());
        let empty: Vec<&str> = COLUMNS
            .iter()
            .take(REQUIRED)
            .filter(|c| get(c).is_empty())
            .copied()
            .collect();
        if !empty.is_empty() {
            errors.push(LineError {
                line,
                message: format!("empty {}", empty.join(", ")),
            });
            continue;
        }
        let account = ImportedAccount {
            name: get("name"),
            source_host: get("source_host"),
            source_username: get("source_username"),
            source_password: get("source_password"),
            target_host: get("target_host"),
            target_username: get("target_username"),
            target_password: get("target_password"),
            mailbox: optional("mailbox"),
            delete: optional("delete"),
        };
        let mut bad = false;
        for (column, value) in [
            ("source_password", &account.source_password),
            ("target_password", &account.target_password),
        ] {
            if let Err(m) = reference(value) {
                errors.push(LineError {
                    line,
                    message: format!("account {:?}: {column} {m}", account.name),
                });
                bad = true;
            }
        }
        if let Some(first) = seen.insert(account.name.clone(), line) {
            errors.push(LineError {
                line,
                message: format!(
                    "account {:?} is also on line {first}: names must be unique",
                    account.name
                ),
            });
            bad = true;
        }
        if !bad {
            out.push((line, account));
        }
    }
    Ok((out, errors))
}

/// A password reference as the TOML secret form it stands for
/// (`{ env = … }`, `{ file = … }`, `{ command = … }`). The error never
/// quotes the value (it may be a password written where a reference
/// belongs).
pub fn reference(value: &str) -> Result<toml::Value, String> {
    let refuse = || {
        "is not a password reference (env:NAME, file:/absolute/path or command:CMD): the ledger never stores a password itself"
            .to_owned()
    };
    let (kind, rest) = value.split_once(':').ok_or_else(refuse)?;
    let rest = rest.trim();
    let key = match kind.trim() {
        "env" => {
            let ok =
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err("env: needs a variable name (letters, digits, _)".into());
            }
            "env"
        }
        "file" => {
            if !Path::new(rest).is_absolute() {
                return Err("file: needs an absolute path (replicas may run elsewhere)".into());
            }
            "file"
        }
        "command" => {
            if rest.is_empty() {
                return Err("command: needs a command".into());
            }
            "command"
        }
        _ => return Err(refuse()),
    };
    let mut t = toml::Table::new();
    t.insert(key.into(), toml::Value::String(rest.to_owned()));
    Ok(toml::Value::Table(t))
}

/// The `[[accounts]]` table this row stands for: the template, with the
/// row's values over it.
fn table(row: &ImportedAccount, template: Option<&toml::Table>) -> Result<toml::Table, String> {
    let mut t = template.cloned().unwrap_or_default();
    if t.contains_key("name") {
        return Err("[account_template] has a name: each account's comes from its row".into());
    }
    t.insert("name".into(), row.name.clone().into());
    let sides = [
        (
            "source",
            &row.source_host,
            &row.source_username,
            &row.source_password,
        ),
        (
            "target",
            &row.target_host,
            &row.target_username,
            &row.target_password,
        ),
    ];
    for (side, host, username, password) in sides {
        let entry = t
            .entry(side)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(s) = entry else {
            return Err(format!("[account_template] {side} must be a table"));
        };
        s.insert("host".into(), host.clone().into());
        s.insert("username".into(), username.clone().into());
        s.insert(
            "password".into(),
            reference(password).map_err(|m| format!("{side}_password {m}"))?,
        );
        if side == "target"
            && let Some(m) = &row.mailbox
        {
            s.insert("mailbox".into(), m.clone().into());
        }
    }
    if let Some(d) = &row.delete {
        let entry = t
            .entry("policy")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(p) = entry else {
            return Err("[account_template] policy must be a table".into());
        };
        p.insert("delete".into(), d.clone().into());
    }
    Ok(t)
}

/// The account a row stands for, validated as a file account is (with
/// `resolve_secrets`, its password references must resolve now).
pub fn account(
    row: &ImportedAccount,
    cfg: &Config,
    resolve_secrets: bool,
) -> Result<Account, String> {
    let t = table(row, cfg.account_template.as_ref())?;
    let raw = RawAccount::deserialize(toml::Value::Table(t))
        .map_err(|e| format!("[account_template]: {}", e.message().trim_end()))?;
    let base = cfg.source_path.parent().unwrap_or(Path::new("."));
    super::load::account(
        raw,
        row.name.clone(),
        cfg.daemon.poll_interval,
        base,
        resolve_secrets,
    )
}

/// Adds the accounts kept in the ledger to the file's (one set: a name in
/// both is an error); then there must be at least one account.
pub fn merge(
    cfg: &mut Config,
    rows: &[ImportedAccount],
    resolve_secrets: bool,
) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: cfg.source_path.clone(),
        message,
    };
    let mut added = Vec::with_capacity(rows.len());
    for row in rows {
        if cfg.accounts.iter().any(|a| a.name == row.name) {
            return Err(invalid(format!(
                "account {:?} is both in this file and in the ledger: keep one (remove it from the file, or run `popferry accounts remove {}`)",
                row.name, row.name
            )));
        }
        added.push(
            account(row, cfg, resolve_secrets).map_err(|m| {
                invalid(format!("account {:?} (kept in the ledger): {m}", row.name))
            })?,
        );
    }
    cfg.accounts.extend(added);
    if cfg.accounts.is_empty() {
        return Err(invalid(
            "no accounts: none in the file, none in the ledger (add [[accounts]], or run `popferry accounts import FILE.csv`)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "db_accounts_tests.rs"]
mod tests;
