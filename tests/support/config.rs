//! popferry configurations pointing at a test [`Dovecot`], and running the binary under test.
//!
//! ```ignore
//! let d = Dovecot::start();
//! let cfg = ConfigBuilder::new(&d, "alice", "dave")
//!     .delete("after-sync")
//!     .flags(&["\\Seen"])
//!     .target_tls(Tls::Starttls)
//!     .write();
//! let out = popferry(&["sync", "-c", cfg.to_str().unwrap()], &[]);
//! ```

use super::Dovecot;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `tls = ...` of one side; the port follows it (implicit: the TLS port; otherwise the plain one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    Implicit,
    Starttls,
    None,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Implicit => "implicit",
            Tls::Starttls => "starttls",
            Tls::None => "none",
        }
    }
}

/// How a password is written in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// `password = "..."`
    Plain(String),
    /// `password = { env = "VAR" }` (pass the variable to [`popferry`] yourself)
    Env(String),
    /// `password = { file = "..." }`
    File(PathBuf),
    /// `password = { command = "..." }`
    Command(String),
}

/// One side (`[accounts.source]` or `[accounts.target]`). Fields left `None` are not written.
#[derive(Clone, Debug)]
pub struct Side {
    pub host: String,
    /// `None`: not written (popferry's default port, rarely what a test wants).
    pub port: Option<u16>,
    pub tls: Tls,
    pub username: String,
    pub password: Password,
    pub auth: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub allow_plaintext_password: Option<bool>,
    /// Raw `key = value` lines added to this side's table.
    pub extra: String,
}

/// One `[[accounts]]` entry.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub poll_interval: Option<String>,
    pub source: Side,
    pub target: Side,
    pub mailbox: Option<String>,
    pub flags: Option<Vec<String>>,
    pub internal_date: Option<String>,
    pub delete: Option<String>,
    pub max_message_size: Option<String>,
    /// Raw `key = value` lines added to `[accounts.policy]`.
    pub policy_extra: String,
}

/// Builds a popferry TOML file. Setter methods apply to the most recently added account.
/// Defaults: account named after the source user, implicit TLS on both sides trusting
/// `d.ca_file`, plain-string password from the instance, mailbox/flags/dates/policy
/// left to popferry's defaults, ledger at `<dir>/ledger.db`, file `<dir>/popferry.toml`,
/// where `<dir>` is the instance's scratch folder (removed with the Dovecot).
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    pub dir: PathBuf,
    pub file_name: String,
    pub ledger: PathBuf,
    /// `[ledger] url` instead of `path` (a PostgreSQL ledger): see
    /// [`Self::postgres`].
    pub ledger_url: Option<String>,
    /// `[ledger] lease_ttl`.
    pub lease_ttl: Option<String>,
    pub accounts: Vec<Account>,
    pub daemon_poll_interval: Option<String>,
    pub daemon_max_concurrent_accounts: Option<u32>,
    pub daemon_listen: Option<String>,
    /// Raw `key = value` lines added to `[daemon]`.
    pub daemon_extra: String,
    /// Raw TOML appended at the end; start it with a `[table]` header.
    pub extra_toml: String,
    ca_file: PathBuf,
    ports: [u16; 4],
    host: String,
}

fn side(
    d_host: &str,
    ports: [u16; 4],
    is_source: bool,
    user: &str,
    password: &str,
    ca: &Path,
) -> Side {
    let [_pop3, pop3s, _imap, imaps] = ports;
    Side {
        host: d_host.to_string(),
        port: Some(if is_source { pop3s } else { imaps }),
        tls: Tls::Implicit,
        username: user.to_string(),
        password: Password::Plain(password.to_string()),
        auth: None,
        ca_file: Some(ca.to_path_buf()),
        timeout: None,
        allow_plaintext_password: None,
        extra: String::new(),
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

impl ConfigBuilder {
    /// One account: POP3 `source_user` → IMAP `target_user` of `d`.
    pub fn new(d: &Dovecot, source_user: &str, target_user: &str) -> ConfigBuilder {
        let dir = d.scratch();
        let mut b = ConfigBuilder {
            ledger: dir.join("ledger.db"),
            ledger_url: None,
            lease_ttl: None,
            dir,
            file_name: "popferry.toml".to_string(),
            accounts: Vec::new(),
            daemon_poll_interval: None,
            daemon_max_concurrent_accounts: None,
            daemon_listen: None,
            daemon_extra: String::new(),
            extra_toml: String::new(),
            ca_file: d.ca_file.clone(),
            ports: [d.pop3_port, d.pop3s_port, d.imap_port, d.imaps_port],
            host: d.host.clone(),
        };
        b.push_account(d, source_user, source_user, target_user);
        b
    }

    fn push_account(&mut self, d: &Dovecot, name: &str, source_user: &str, target_user: &str) {
        self.accounts.push(Account {
            name: name.to_string(),
            poll_interval: None,
            source: side(
                &self.host,
                self.ports,
                true,
                source_user,
                d.password(source_user),
                &self.ca_file,
            ),
            target: side(
                &self.host,
                self.ports,
                false,
                target_user,
                d.password(target_user),
                &self.ca_file,
            ),
            mailbox: None,
            flags: None,
            internal_date: None,
            delete: None,
            max_message_size: None,
            policy_extra: String::new(),
        });
    }

    /// Adds another account; the setters then apply to it.
    pub fn add_account(
        mut self,
        d: &Dovecot,
        name: &str,
        source_user: &str,
        target_user: &str,
    ) -> Self {
        self.push_account(d, name, source_user, target_user);
        self
    }

    fn last(&mut self) -> &mut Account {
        self.accounts.last_mut().expect("at least one account")
    }

    fn set_tls(&mut self, source: bool, tls: Tls) {
        let [pop3, pop3s, imap, imaps] = self.ports;
        let ca = self.ca_file.clone();
        let a = self.last();
        let s = if source { &mut a.source } else { &mut a.target };
        s.tls = tls;
        s.port = Some(match (source, tls) {
            (true, Tls::Implicit) => pop3s,
            (true, _) => pop3,
            (false, Tls::Implicit) => imaps,
            (false, _) => imap,
        });
        s.ca_file = if tls == Tls::None {
            None
        } else {
            s.ca_file.clone().or(Some(ca))
        };
    }

    pub fn name(mut self, name: &str) -> Self {
        self.last().name = name.to_string();
        self
    }
    /// Both sides; sets the matching port.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.set_tls(true, tls);
        self.set_tls(false, tls);
        self
    }
    pub fn source_tls(mut self, tls: Tls) -> Self {
        self.set_tls(true, tls);
        self
    }
    pub fn target_tls(mut self, tls: Tls) -> Self {
        self.set_tls(false, tls);
        self
    }
    /// `ca_file` on both sides (`None`: not written, i.e. system roots only).
    pub fn ca_file(mut self, ca: Option<&Path>) -> Self {
        let a = self.last();
        a.source.ca_file = ca.map(Path::to_path_buf);
        a.target.ca_file = ca.map(Path::to_path_buf);
        self
    }
    pub fn source_ca_file(mut self, ca: Option<&Path>) -> Self {
        self.last().source.ca_file = ca.map(Path::to_path_buf);
        self
    }
    pub fn target_ca_file(mut self, ca: Option<&Path>) -> Self {
        self.last().target.ca_file = ca.map(Path::to_path_buf);
        self
    }
    pub fn source_host(mut self, host: &str) -> Self {
        self.last().source.host = host.to_string();
        self
    }
    pub fn target_host(mut self, host: &str) -> Self {
        self.last().target.host = host.to_string();
        self
    }
    /// Overrides the port (e.g. a fake server); `None` leaves it to popferry's default.
    pub fn source_port(mut self, port: Option<u16>) -> Self {
        self.last().source.port = port;
        self
    }
    pub fn target_port(mut self, port: Option<u16>) -> Self {
        self.last().target.port = port;
        self
    }
    pub fn source_username(mut self, user: &str) -> Self {
        self.last().source.username = user.to_string();
        self
    }
    pub fn target_username(mut self, user: &str) -> Self {
        self.last().target.username = user.to_string();
        self
    }
    pub fn password(mut self, p: Password) -> Self {
        let a = self.last();
        a.source.password = p.clone();
        a.target.password = p;
        self
    }
    pub fn source_password(mut self, p: Password) -> Self {
        self.last().source.password = p;
        self
    }
    pub fn target_password(mut self, p: Password) -> Self {
        self.last().target.password = p;
        self
    }
    pub fn source_auth(mut self, auth: &str) -> Self {
        self.last().source.auth = Some(auth.to_string());
        self
    }
    pub fn target_auth(mut self, auth: &str) -> Self {
        self.last().target.auth = Some(auth.to_string());
        self
    }
    /// `timeout` on both sides, e.g. "5s".
    pub fn timeout(mut self, t: &str) -> Self {
        let a = self.last();
        a.source.timeout = Some(t.to_string());
        a.target.timeout = Some(t.to_string());
        self
    }
    pub fn allow_plaintext_password(mut self, allow: bool) -> Self {
        let a = self.last();
        a.source.allow_plaintext_password = Some(allow);
        a.target.allow_plaintext_password = Some(allow);
        self
    }
    pub fn source_extra(mut self, lines: &str) -> Self {
        self.last().source.extra.push_str(lines);
        self
    }
    pub fn target_extra(mut self, lines: &str) -> Self {
        self.last().target.extra.push_str(lines);
        self
    }
    pub fn mailbox(mut self, mailbox: &str) -> Self {
        self.last().mailbox = Some(mailbox.to_string());
        self
    }
    /// e.g. `&["\\Seen"]`.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.last().flags = Some(flags.iter().map(|f| f.to_string()).collect());
        self
    }
    /// "received" | "date" | "now".
    pub fn internal_date(mut self, v: &str) -> Self {
        self.last().internal_date = Some(v.to_string());
        self
    }
    /// "never" | "after-sync" | an age such as "30d".
    pub fn delete(mut self, v: &str) -> Self {
        self.last().delete = Some(v.to_string());
        self
    }
    /// e.g. "5MiB", "10MB" or a byte count as text.
    pub fn max_message_size(mut self, v: &str) -> Self {
        self.last().max_message_size = Some(v.to_string());
        self
    }
    pub fn policy_extra(mut self, lines: &str) -> Self {
        self.last().policy_extra.push_str(lines);
        self
    }
    pub fn poll_interval(mut self, v: &str) -> Self {
        self.last().poll_interval = Some(v.to_string());
        self
    }
    pub fn ledger(mut self, path: &Path) -> Self {
        self.ledger = path.to_path_buf();
        self
    }
    /// The folder of the config file (the ledger path is set separately with [`Self::ledger`]).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = dir.to_path_buf();
        self
    }
    pub fn file_name(mut self, name: &str) -> Self {
        self.file_name = name.to_string();
        self
    }
    pub fn daemon_poll_interval(mut self, v: &str) -> Self {
        self.daemon_poll_interval = Some(v.to_string());
        self
    }
    pub fn max_concurrent_accounts(mut self, n: u32) -> Self {
        self.daemon_max_concurrent_accounts = Some(n);
        self
    }
    pub fn listen(mut self, addr: &str) -> Self {
        self.daemon_listen = Some(addr.to_string());
        self
    }
    /// Adds raw `key = value` lines (each ending in a newline) to `[daemon]`.
    pub fn daemon_extra(mut self, lines: &str) -> Self {
        self.daemon_extra.push_str(lines);
        self
    }

    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.ledger.clone()
    }

    /// A PostgreSQL ledger at `url` instead of the SQLite file.
    pub fn postgres(mut self, url: &str) -> Self {
        self.ledger_url = Some(url.to_string());
        self
    }

    /// `[ledger] lease_ttl`.
    pub fn lease_ttl(mut self, v: &str) -> Self {
        self.lease_ttl = Some(v.to_string());
        self
    }

    /// Where this configuration's ledger is, for `support::ledger`.
    pub fn ledger_at(&self) -> super::ledger::LedgerAt {
        match &self.ledger_url {
            Some(url) => super::ledger::LedgerAt::Postgres(url.clone()),
            None => super::ledger::LedgerAt::Sqlite(self.ledger.clone()),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut t = String::from("# written by popferry's test harness\n[ledger]\n");
        match &self.ledger_url {
            Some(url) => {
                let _ = writeln!(t, "url = {}", toml_str(url));
            }
            None => {
                let _ = writeln!(t, "path = {}", path_str(&self.ledger));
            }
        }
        if let Some(v) = &self.lease_ttl {
            let _ = writeln!(t, "lease_ttl = {}", toml_str(v));
        }
        if self.daemon_poll_interval.is_some()
            || self.daemon_max_concurrent_accounts.is_some()
            || self.daemon_listen.is_some()
            || !self.daemon_extra.is_empty()
        {
            t.push_str("\n[daemon]\n");
            if let Some(v) = &self.daemon_poll_interval {
                let _ = writeln!(t, "poll_interval = {}", toml_str(v));
            }
            if let Some(v) = self.daemon_max_concurrent_accounts {
                let _ = writeln!(t, "max_concurrent_accounts = {v}");
            }
            if let Some(v) = &self.daemon_listen {
                let _ = writeln!(t, "listen = {}", toml_str(v));
            }
            t.push_str(&self.daemon_extra);
        }
        for a in &self.accounts {
            t.push_str("\n[[accounts]]\n");
            let _ = writeln!(t, "name = {}", toml_str(&a.name));
            if let Some(v) = &a.poll_interval {
                let _ = writeln!(t, "poll_interval = {}", toml_str(v));
            }
            t.push_str("\n[accounts.source]\n");
            write_side(&mut t, &a.source);
            t.push_str("\n[accounts.target]\n");
            write_side(&mut t, &a.target);
            if let Some(v) = &a.mailbox {
                let _ = writeln!(t, "mailbox = {}", toml_str(v));
            }
            if let Some(flags) = &a.flags {
                let list: Vec<String> = flags.iter().map(|f| toml_str(f)).collect();
                let _ = writeln!(t, "flags = [{}]", list.join(", "));
            }
            if let Some(v) = &a.internal_date {
                let _ = writeln!(t, "internal_date = {}", toml_str(v));
            }
            if a.delete.is_some() || a.max_message_size.is_some() || !a.policy_extra.is_empty() {
                t.push_str("\n[accounts.policy]\n");
                if let Some(v) = &a.delete {
                    let _ = writeln!(t, "delete = {}", toml_str(v));
                }
                if let Some(v) = &a.max_message_size {
                    let _ = writeln!(t, "max_message_size = {}", toml_str(v));
                }
                t.push_str(&a.policy_extra);
            }
        }
        if !self.extra_toml.is_empty() {
            t.push('\n');
            t.push_str(&self.extra_toml);
        }
        t
    }

    /// Writes the file (creating its folder) and returns its path.
    pub fn write(&self) -> PathBuf {
        fs::create_dir_all(&self.dir).expect("create config dir");
        let path = self.config_path();
        fs::write(&path, self.to_toml()).expect("write popferry config");
        path
    }
}

fn write_side(t: &mut String, s: &Side) {
    let _ = writeln!(t, "host = {}", toml_str(&s.host));
    if let Some(p) = s.port {
        let _ = writeln!(t, "port = {p}");
    }
    let _ = writeln!(t, "tls = {}", toml_str(s.tls.as_str()));
    let _ = writeln!(t, "username = {}", toml_str(&s.username));
    let _ = match &s.password {
        Password::Plain(p) => writeln!(t, "password = {}", toml_str(p)),
        Password::Env(v) => writeln!(t, "password = {{ env = {} }}", toml_str(v)),
        Password::File(f) => writeln!(t, "password = {{ file = {} }}", path_str(f)),
        Password::Command(c) => writeln!(t, "password = {{ command = {} }}", toml_str(c)),
    };
    if let Some(v) = &s.auth {
        let _ = writeln!(t, "auth = {}", toml_str(v));
    }
    if let Some(v) = &s.ca_file {
        let _ = writeln!(t, "ca_file = {}", path_str(v));
    }
    if let Some(v) = &s.timeout {
        let _ = writeln!(t, "timeout = {}", toml_str(v));
    }
    if let Some(v) = s.allow_plaintext_password {
        let _ = writeln!(t, "allow_plaintext_password = {v}");
    }
    t.push_str(&s.extra);
}

/// Writes the default config (one account `source_user` → `target_user`) and returns its path.
pub fn write_config(d: &Dovecot, source_user: &str, target_user: &str) -> PathBuf {
    ConfigBuilder::new(d, source_user, target_user).write()
}

/// The binary under test.
pub fn popferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_popferry")
}

/// A `Command` for the binary under test, without inherited `POPFERRY_CONFIG`; add args, env, spawn.
pub fn popferry_command() -> Command {
    let mut c = Command::new(popferry_bin());
    c.env_remove("POPFERRY_CONFIG").stdin(Stdio::null());
    c
}

/// How long [`popferry`] lets a run take: `POPFERRY_TEST_TIMEOUT_SECS`, default 300.
fn default_timeout() -> Duration {
    let secs = std::env::var("POPFERRY_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Runs popferry to completion with `args` and extra `env`; panics if it takes longer than
/// `POPFERRY_TEST_TIMEOUT_SECS` (default 300).
pub fn popferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    popferry_with_timeout(args, env, default_timeout())
}

/// [`popferry`] with an explicit time limit (killed and panics when exceeded).
pub fn popferry_with_timeout(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = popferry_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(cmd, limit)
}

/// Runs a prepared popferry `Command` (see [`popferry_command`]: a working
/// directory, an environment of its own) to completion, stdout and stderr
/// captured; killed and panics after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", popferry_bin()));
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for popferry") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "popferry {args:?} did not finish within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Exit status, stdout and stderr as text, for assertion messages.
pub fn describe_output(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
