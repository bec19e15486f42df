//! Test harness shared by the integration tests (`mod support;`).
//!
//! - [`Dovecot`]: a private Dovecot (POP3 + IMAP, plain/STARTTLS and implicit
//!   TLS) per call, on 127.0.0.1 and ephemeral ports, in its own short temp
//!   folder, with a generated CA; stopped and removed on drop.
//! - [`pop3::Pop3`] and [`imap::Imap`]: tiny raw clients written for the
//!   harness, so that popferry is never verified with its own code.
//! - [`corpus()`]: deterministic messages of every awkward kind.
//! - [`DovecotBuilder::oauth2`] and [`jwt`]: a Dovecot that also takes
//!   OAuth2 bearer tokens (XOAUTH2, OAUTHBEARER), HS256 JWTs it validates
//!   locally, and [`Dovecot::jwt`] to mint them.
//! - [`ConfigBuilder`] / [`write_config`] / [`popferry`]: a popferry
//!   configuration pointing at the Dovecot, and the binary under test.
//! - [`daemon::RunningDaemon`]: `popferry run` as a child, and an HTTP GET.
//! - [`postgres`]: a private PostgreSQL cluster per test binary, a database
//!   per test; [`ledger::Backend`] runs a test on either ledger.
//!
//! A missing `dovecot` (or PostgreSQL) is a failing test, never a skip.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod config;
pub mod corpus;
pub mod daemon;
pub mod fake_imap;
pub mod fake_pop3;
pub mod imap;
pub mod jwt;
pub mod ledger;
pub mod pop3;
pub mod postgres;
pub mod proxy;
pub mod token_endpoint;

pub use config::{
    ConfigBuilder, Password, Tls, describe_output, popferry, popferry_bin, popferry_command,
    popferry_with_timeout, write_config,
};
pub use corpus::{corpus, corpus_kind, corpus_small};
pub use imap::{Fetched, Imap, imap_append, imap_create, imap_fetch_all, imap_mailboxes};
pub use pop3::Pop3;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The command that installs what the harness needs, quoted in every panic about it.
pub const INSTALL_HINT: &str =
    "sudo apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d openssl";

/// The password every default user has.
pub const PASSWORD: &str = "secret";

const CONF_TEMPLATE: &str = include_str!("../fixtures/dovecot.conf.in");

/// Mail storage of one Dovecot user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `~/Maildir`; [`Dovecot::seed`] writes into it (POP3 sources).
    Maildir,
    /// `~/mdbox` (fast IMAP targets).
    Mdbox,
    /// `~/sdbox`.
    Sdbox,
}

/// One user of the test Dovecot.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub storage: Storage,
}

impl User {
    pub fn new(name: &str, password: &str, storage: Storage) -> User {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "user name {name:?}: use [A-Za-z0-9._-]"
        );
        assert!(
            !password.contains([':', ' ', '\n', '\r', '\t']),
            "password {password:?} must not contain ':' or whitespace (passwd-file)"
        );
        User {
            name: name.to_string(),
            password: password.to_string(),
            storage,
        }
    }
    /// A Maildir user with the password `secret`.
    pub fn maildir(name: &str) -> User {
        User::new(name, PASSWORD, Storage::Maildir)
    }
    /// An mdbox user with the password `secret`.
    pub fn mdbox(name: &str) -> User {
        User::new(name, PASSWORD, Storage::Mdbox)
    }
}

/// alice, bob, carol (Maildir: POP3 sources) and dave, erin (mdbox: IMAP targets), password `secret`.
pub fn default_users() -> Vec<User> {
    vec![
        User::maildir("alice"),
        User::maildir("bob"),
        User::maildir("carol"),
        User::mdbox("dave"),
        User::mdbox("erin"),
    ]
}

/// Which certificate the servers present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by [`Dovecot::ca_file`] for `localhost` and `127.0.0.1`.
    Good,
    /// Signed by [`Dovecot::ca_file`] but only for `wrong-name.invalid`.
    WrongName,
    /// Self-signed with `basicConstraints CA:TRUE`, made by a plain
    /// `openssl req -x509` (see `certs.rs`), for `mail.legacy.test` only.
    SelfSigned,
}

/// Gmail's IMAP capabilities after login (issue 11), as Dovecot's
/// `imap_capability` setting.
pub const GMAIL_CAPABILITY: &str = "IMAP4rev1 UNSELECT IDLE NAMESPACE ID CHILDREN UIDPLUS ENABLE MOVE CONDSTORE ESEARCH LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584";

/// Options for [`Dovecot`]; `Dovecot::start()` is `Dovecot::builder().start()`.
#[derive(Clone, Debug)]
pub struct DovecotBuilder {
    users: Vec<User>,
    extra_config: String,
    server_cert: ServerCert,
    oauth2: bool,
}

impl DovecotBuilder {
    /// Replaces the default users.
    pub fn users(mut self, users: Vec<User>) -> Self {
        self.users = users;
        self
    }
    /// Adds one user to the list.
    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }
    /// Raw Dovecot settings appended to the generated config, e.g.
    /// `"pop3_lock_session = yes\n"` or `"protocol imap {\n imap_capability = -BINARY\n}\n"`.
    pub fn extra_config(mut self, text: &str) -> Self {
        self.extra_config.push_str(text);
        self.extra_config.push('\n');
        self
    }
    /// The IMAP side announces Gmail's capability set after login
    /// ([`GMAIL_CAPABILITY`]: LITERAL- but no LITERAL+, no MULTIAPPEND, no
    /// BINARY, APPENDLIMIT=35651584). Only the announcement changes: Dovecot
    /// itself still takes `{n+}`, so a client must decide from the
    /// capability, never from what the server happens to accept.
    pub fn gmail_shape(self) -> Self {
        self.extra_config(&format!(
            "protocol imap {{\n  imap_capability = {GMAIL_CAPABILITY}\n}}\n"
        ))
    }
    /// At most `n` logged-in IMAP sessions per user and address: the next
    /// login is refused (`* BYE Maximum number of connections ...`).
    pub fn max_imap_connections(self, n: u32) -> Self {
        self.extra_config(&format!(
            "protocol imap {{\n  mail_max_userip_connections = {n}\n}}\n"
        ))
    }
    pub fn server_cert(mut self, which: ServerCert) -> Self {
        self.server_cert = which;
        self
    }
    /// Also accept OAuth2 bearer tokens: `auth_mechanisms` gains `xoauth2
    /// oauthbearer`, served by an `oauth2` passdb that validates HS256 JWTs
    /// locally (no network) with a key of this instance, the user being the
    /// token's `sub`. Passwords keep working (the passwd-file passdb stays
    /// first). Mint tokens with [`Dovecot::jwt`].
    pub fn oauth2(mut self) -> Self {
        self.oauth2 = true;
        self
    }
    pub fn start(self) -> Dovecot {
        Dovecot::start_with(self)
    }
}

/// What [`Dovecot::seed`] wrote, as a POP3 client will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// SHA-256 (lower-case hex) of the CRLF-normalised bytes.
    pub sha256_hex: String,
    /// Length of the CRLF-normalised bytes (what POP3 LIST reports).
    pub size: u64,
    /// The Message-ID header value, trimmed (angle brackets kept), if any.
    pub message_id: Option<String>,
    /// The Maildir file as written (under `new/`; Dovecot may move it to `cur/`).
    pub file: PathBuf,
}

/// A private Dovecot instance. Stopped (and its folder removed) on drop;
/// set `POPFERRY_TEST_KEEP=1` to keep the folder for a post-mortem.
#[derive(Debug)]
pub struct Dovecot {
    /// The instance folder: `dovecot.conf`, `run/`, `state/`, `log/`, `etc/users`, `tls/`, `mail/<user>/`, `pf/`.
    pub base: PathBuf,
    /// Always `127.0.0.1`.
    pub host: String,
    /// POP3 with STLS.
    pub pop3_port: u16,
    /// POP3 over implicit TLS.
    pub pop3s_port: u16,
    /// IMAP with STARTTLS.
    pub imap_port: u16,
    /// IMAP over implicit TLS.
    pub imaps_port: u16,
    /// The CA that signed the server certificate: trust this one.
    pub ca_file: PathBuf,
    /// An unrelated CA: trusting only this one must fail verification.
    pub wrong_ca_file: PathBuf,
    /// The certificate the servers present (PEM).
    pub server_cert_file: PathBuf,
    /// A certificate for `wrong-name.invalid` signed by `ca_file` (served with `ServerCert::WrongName`).
    pub wrong_name_cert_file: PathBuf,
    /// Dovecot's log.
    pub log_file: PathBuf,
    /// The generated configuration.
    pub conf_file: PathBuf,
    pub users: Vec<User>,
    /// The HS256 key the `oauth2` passdb checks tokens with (with
    /// [`DovecotBuilder::oauth2`]).
    oauth2_key: Option<Vec<u8>>,
    stderr_file: PathBuf,
    greeting: String,
    /// Owner to give seeded files (uid, gid).
    mail_owner: (u32, u32),
    child: Option<Child>,
    seq: AtomicU64,
}

/// Where Dovecot's binary is, or a panic that says how to install it.
pub fn dovecot_bin() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/sbin/dovecot")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("dovecot")));
    }
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "dovecot is not installed, and popferry's tests need a real POP3/IMAP server.\n\
         Install it with:\n    {INSTALL_HINT}\n\
         (Debian/Ubuntu packages; the tests start their own private instances, the system service is not used.)"
    );
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Creates a fresh, short directory `/tmp/<prefix><8 hex>` with mode 0755.
pub(crate) fn short_temp_dir(prefix: &str) -> PathBuf {
    for _ in 0..100 {
        let dir = PathBuf::from(format!("/tmp/{prefix}{:08x}", random_u64() as u32));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .expect("chmod temp dir");
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create a temp dir under /tmp: {e}"),
        }
    }
    panic!("cannot find a free temp dir name under /tmp");
}

/// Looks a name up in /etc/passwd (field 2 = uid, 3 = gid) or /etc/group.
fn passwd_lookup(file: &str, pred: impl Fn(&[&str]) -> bool) -> Option<Vec<String>> {
    let text = fs::read_to_string(file).ok()?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && pred(f))
        .map(|f| f.iter().map(|s| s.to_string()).collect())
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let f = passwd_lookup("/etc/passwd", |f| f[0] == name)?;
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn name_of_uid(uid: u32) -> Option<String> {
    passwd_lookup("/etc/passwd", |f| f[2] == uid.to_string()).map(|f| f[0].clone())
}

fn name_of_gid(gid: u32) -> Option<String> {
    passwd_lookup("/etc/group", |f| f[2] == gid.to_string()).map(|f| f[0].clone())
}

fn id_output(arg: &str) -> Option<String> {
    let out = Command::new("id").arg(arg).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Picks 4 distinct free ports on 127.0.0.1 (bound together, then released).
fn free_ports() -> [u16; 4] {
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect();
    [ports[0], ports[1], ports[2], ports[3]]
}

/// Every LF not preceded by CR becomes CRLF; everything else (a lone CR too) is kept.
pub fn crlf_normalise(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The header section of a message (up to, not including, the first empty line).
pub fn header_section(msg: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < msg.len() {
        let end = msg[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |p| start + p + 1);
        let line = &msg[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &msg[..start];
        }
        start = end;
    }
    msg
}

/// The first value of header `name` (case-insensitive), unfolded and trimmed.
pub fn header_value(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header_section(msg)).into_owned();
    let mut found: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim_end().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found.map(|v| v.trim().to_string())
}

/// The Message-ID header value (angle brackets kept), if the message has one.
pub fn message_id(msg: &[u8]) -> Option<String> {
    header_value(msg, "Message-ID").filter(|v| !v.is_empty())
}

impl Dovecot {
    /// Starts a Dovecot with the default users (see [`default_users`]).
    pub fn start() -> Dovecot {
        Dovecot::builder().start()
    }

    pub fn builder() -> DovecotBuilder {
        DovecotBuilder {
            users: default_users(),
            extra_config: String::new(),
            server_cert: ServerCert::Good,
            oauth2: false,
        }
    }

    fn start_with(opts: DovecotBuilder) -> Dovecot {
        let bin = dovecot_bin();
        let base = short_temp_dir("pf");
        assert!(
            base.as_os_str().len() <= 40,
            "base dir too long: {}",
            base.display()
        );
        let meta = fs::metadata(&base).expect("stat base dir");
        let (my_uid, my_gid) = (meta.uid(), meta.gid());
        let root = my_uid == 0;
        for sub in ["run", "state", "log", "etc", "tls", "mail", "pf"] {
            fs::create_dir(base.join(sub)).expect("create instance subdir");
        }

        // Who owns the mail, who runs the internal processes.
        let (mail_owner, internal_user, internal_group, login_user, overrides) = if root {
            for u in ["dovecot", "dovenull"] {
                assert!(
                    user_ids(u).is_some(),
                    "system user {u:?} is missing: the dovecot-core package creates it. Install with:\n    {INSTALL_HINT}"
                );
            }
            let owner = user_ids("mail").unwrap_or((0, 0));
            (
                owner,
                "dovecot".to_string(),
                "dovecot".to_string(),
                "dovenull".to_string(),
                String::new(),
            )
        } else {
            let user = name_of_uid(my_uid)
                .or_else(|| id_output("-un"))
                .expect("cannot find the current user's name");
            let group = name_of_gid(my_gid)
                .or_else(|| id_output("-gn"))
                .expect("cannot find the current group's name");
            let mut o =
                String::from("# Running as an ordinary user: no chroot, no user switching.\n");
            for s in ["imap-login", "pop3-login", "anvil"] {
                o.push_str(&format!("service {s} {{\n  chroot =\n}}\n"));
            }
            for s in ["auth", "auth-worker", "stats", "imap-hibernate"] {
                o.push_str(&format!("service {s} {{\n  user = {user}\n}}\n"));
            }
            ((my_uid, my_gid), user.clone(), group, user, o)
        };

        // TLS material.
        let tls = base.join("tls");
        certs::install(&tls);
        let (cert_src, key_src) = match opts.server_cert {
            ServerCert::Good => ("localhost.pem", "localhost.key"),
            ServerCert::WrongName => ("wrong-name.pem", "wrong-name.key"),
            ServerCert::SelfSigned => ("self-signed.pem", "self-signed.key"),
        };
        fs::copy(tls.join(cert_src), tls.join("server.pem")).expect("copy server cert");
        fs::copy(tls.join(key_src), tls.join("server.key")).expect("copy server key");

        // Users and their mail folders.
        let mut users_file = String::new();
        let mail = base.join("mail");
        for u in &opts.users {
            let home = mail.join(&u.name);
            let location = match u.storage {
                Storage::Maildir => {
                    for d in ["cur", "new", "tmp"] {
                        fs::create_dir_all(home.join("Maildir").join(d)).expect("create Maildir");
                    }
                    "maildir:~/Maildir"
                }
                Storage::Mdbox => {
                    fs::create_dir_all(&home).expect("create home");
                    "mdbox:~/mdbox"
                }
                Storage::Sdbox => {
                    fs::create_dir_all(&home).expect("create home");
                    "sdbox:~/sdbox"
                }
            };
            users_file.push_str(&format!(
                "{}:{{PLAIN}}{}:{}:{}::{}::userdb_mail={}\n",
                u.name,
                u.password,
                mail_owner.0,
                mail_owner.1,
                home.display(),
                location
            ));
            if root {
                chown_tree(&home, mail_owner);
            }
        }
        if root {
            chown_tree(&mail, mail_owner);
            // Only the top dir: chown_tree above already did the homes.
        }
        let users_path = base.join("etc/users");
        fs::write(&users_path, users_file).expect("write users file");

        // OAuth2: Dovecot 2.3 looks the key up in the dict as
        // `shared/<azp>/<alg>/<kid>`, so `keys/default/HS256/default` for a
        // token without `azp` and `kid`; the file holds the key in base64.
        let mut extra_config = opts.extra_config.clone();
        let oauth2_key = opts.oauth2.then(|| {
            let key: Vec<u8> = (0..4).flat_map(|_| random_u64().to_le_bytes()).collect();
            let dir = base.join("etc/keys/default/HS256");
            fs::create_dir_all(&dir).expect("create oauth2 key dir");
            fs::write(
                dir.join("default"),
                base64::engine::general_purpose::STANDARD.encode(&key),
            )
            .expect("write oauth2 key");
            let ext = base.join("etc/dovecot-oauth2.conf.ext");
            fs::write(
                &ext,
                format!(
                    "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={}/\nusername_attribute = sub\n",
                    base.join("etc/keys").display()
                ),
            )
            .expect("write dovecot-oauth2.conf.ext");
            extra_config.push_str(&format!(
                "auth_mechanisms = plain login cram-md5 apop xoauth2 oauthbearer\npassdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                ext.display()
            ));
            key
        });

        let greeting = format!("popferry-test-{:016x}", random_u64());
        let conf_file = base.join("dovecot.conf");
        let log_file = base.join("log/dovecot.log");
        let stderr_file = base.join("log/stderr.log");

        let mut d = Dovecot {
            host: "127.0.0.1".to_string(),
            pop3_port: 0,
            pop3s_port: 0,
            imap_port: 0,
            imaps_port: 0,
            ca_file: tls.join("ca.pem"),
            wrong_ca_file: tls.join("wrong-ca.pem"),
            server_cert_file: tls.join("server.pem"),
            wrong_name_cert_file: tls.join("wrong-name.pem"),
            log_file,
            conf_file,
            users: opts.users.clone(),
            oauth2_key,
            stderr_file,
            greeting,
            mail_owner,
            child: None,
            seq: AtomicU64::new(0),
            base,
        };

        let mut last_error = String::new();
        for _attempt in 0..6 {
            let [p1, p2, p3, p4] = free_ports();
            d.pop3_port = p1;
            d.pop3s_port = p2;
            d.imap_port = p3;
            d.imaps_port = p4;
            let conf = CONF_TEMPLATE
                .replace("@BASE@", &d.base.display().to_string())
                .replace("@INSTANCE@", &d.instance_name())
                .replace("@GREETING@", &d.greeting)
                .replace("@INTERNAL_USER@", &internal_user)
                .replace("@INTERNAL_GROUP@", &internal_group)
                .replace("@LOGIN_USER@", &login_user)
                .replace("@MAIL_UID@", &mail_owner.0.to_string())
                .replace("@MAIL_GID@", &mail_owner.1.to_string())
                .replace("@POP3_PORT@", &p1.to_string())
                .replace("@POP3S_PORT@", &p2.to_string())
                .replace("@IMAP_PORT@", &p3.to_string())
                .replace("@IMAPS_PORT@", &p4.to_string())
                .replace("@SERVICE_OVERRIDES@", &overrides)
                .replace("@EXTRA@", &extra_config);
            fs::write(&d.conf_file, conf).expect("write dovecot.conf");
            match d.spawn(&bin) {
                Ok(()) => return d,
                Err((retry, msg)) => {
                    last_error = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        let tail = d.log_tail();
        panic!("could not start dovecot: {last_error}\n--- dovecot log ---\n{tail}");
    }

    /// Starts the master with the current config; Err((port clash?, message)).
    fn spawn(&mut self, bin: &Path) -> Result<(), (bool, String)> {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_file)
            .expect("open stderr log");
        let stdout = stderr.try_clone().expect("dup stderr log");
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf_file)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| (false, format!("cannot run {}: {e}", bin.display())))?;
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(20);
        let ports = [
            (self.pop3_port, Some("+OK")),
            (self.imap_port, Some("* OK")),
            (self.pop3s_port, None),
            (self.imaps_port, None),
        ];
        let mut ready = [false; 4];
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log_tail();
                let clash = log.contains("Address already in use");
                return Err((clash, format!("dovecot exited during start-up ({status})")));
            }
            for (i, (port, greeting)) in ports.iter().enumerate() {
                if !ready[i] {
                    match self.probe(*port, *greeting) {
                        Probe::Ready => ready[i] = true,
                        Probe::NotYet => {}
                        Probe::Foreign(line) => {
                            self.stop();
                            return Err((true, format!("port {port} answered {line:?}: not ours")));
                        }
                    }
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err((
                    false,
                    format!("ports not ready after 20 s (ready: {ready:?})"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects; for plain ports checks that our own greeting answers (not someone else's server).
    fn probe(&self, port: u16, prefix: Option<&str>) -> Probe {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return Probe::NotYet;
        };
        let Some(prefix) = prefix else {
            return Probe::Ready;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_err() || line.is_empty() {
            return Probe::NotYet;
        }
        if line.starts_with(prefix) && line.contains(&self.greeting) {
            let quit: &[u8] = if prefix == "+OK" {
                b"QUIT\r\n"
            } else {
                b"x LOGOUT\r\n"
            };
            let _ = (&s).write_all(quit);
            Probe::Ready
        } else {
            Probe::Foreign(line.trim_end().to_string())
        }
    }

    /// Stops the server: SIGTERM to the master, up to 250 ms for it to go, then SIGKILL to
    /// whatever of this instance is left (Dovecot's log process otherwise lingers for seconds).
    /// The data stays; [`Dovecot::restart`] brings it back on the same ports.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if !signal("TERM", &[pid]) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_millis(250);
        while Instant::now() < deadline && process_alive(pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut left = self.instance_processes();
        if process_alive(pid) {
            left.push(pid);
        }
        if !left.is_empty() && !signal("KILL", &left) {
            let _ = child.kill();
        }
        let _ = child.wait();
        // Wait for the listeners to be closed (a dying process may still hold one briefly).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && (!self.instance_processes().is_empty()
                || TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], self.imap_port)),
                    Duration::from_millis(200),
                )
                .is_ok())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The instance name, which Dovecot puts in every process title of this instance.
    fn instance_name(&self) -> String {
        let dir = self
            .base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("{}-dovecot", dir.unwrap_or_default())
    }

    /// Pids of live (non-zombie) processes whose command line names this instance.
    fn instance_processes(&self) -> Vec<u32> {
        let name = self.instance_name();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&name))
                    && process_alive(*pid)
            })
            .collect()
    }

    /// Starts the server again after [`Dovecot::stop`], same ports, same mail.
    pub fn restart(&mut self) {
        self.stop();
        let bin = dovecot_bin();
        if let Err((_, msg)) = self.spawn(&bin) {
            panic!(
                "dovecot restart failed: {msg}\n--- dovecot log ---\n{}",
                self.log_tail()
            );
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The master's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn user(&self, name: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no Dovecot user {name:?} in this instance"))
    }

    pub fn password(&self, user: &str) -> &str {
        &self.user(user).password
    }

    /// An OAuth2 access token (an HS256 JWT) this instance accepts for
    /// `user`, valid for `ttl_secs` (negative: expired that long ago).
    /// Needs [`DovecotBuilder::oauth2`].
    /// A token endpoint's minting function for this Dovecot: JWTs it
    /// accepts, for the subject asked and the lifetime the endpoint gives.
    pub fn jwt_mint(&self) -> token_endpoint::Mint {
        let key = self
            .oauth2_key
            .clone()
            .expect("start the Dovecot with .oauth2() to mint tokens");
        std::sync::Arc::new(move |sub: &str, lifetime: u64| {
            jwt::mint(&key, sub, i64::try_from(lifetime).unwrap_or(i64::MAX))
        })
    }

    pub fn jwt(&self, user: &str, ttl_secs: i64) -> String {
        let key = self
            .oauth2_key
            .as_deref()
            .expect("start the Dovecot with .oauth2() to mint tokens");
        jwt::mint(key, user, ttl_secs)
    }

    /// The user's Maildir (`<base>/mail/<user>/Maildir`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.base.join("mail").join(user).join("Maildir")
    }

    /// The user's home (`<base>/mail/<user>`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.base.join("mail").join(user)
    }

    /// A folder for test files (configs, ledgers) that lives as long as this instance.
    pub fn scratch(&self) -> PathBuf {
        self.base.join("pf")
    }

    /// Writes each message, bytes as given, into the user's Maildir `new/`, in order:
    /// POP3 message numbers follow the order (also across calls).
    pub fn seed(&self, user: &str, messages: &[Vec<u8>]) -> Vec<Seeded> {
        assert_eq!(
            self.user(user).storage,
            Storage::Maildir,
            "seed() writes Maildir files: {user} is not a Maildir user"
        );
        let maildir = self.maildir(user);
        let root = fs::metadata(&self.base)
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let pid = std::process::id();
        let mut out = Vec::with_capacity(messages.len());
        for msg in messages {
            let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            // Dovecot orders new files by the "<secs>.M<usecs>" prefix of their names.
            let secs = 1_600_000_000 + n * 60;
            let name = format!("{secs}.M{:06}P{pid}Q{n}.popferry-test", n % 1_000_000);
            let tmp = maildir.join("tmp").join(&name);
            let dest = maildir.join("new").join(&name);
            {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
                f.write_all(msg).expect("write message");
                f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
                    .expect("set mtime");
            }
            if root {
                std::os::unix::fs::chown(&tmp, Some(self.mail_owner.0), Some(self.mail_owner.1))
                    .expect("chown seeded file");
            }
            fs::rename(&tmp, &dest).expect("rename into new/");
            let norm = crlf_normalise(msg);
            out.push(Seeded {
                sha256_hex: sha256_hex(&norm),
                size: norm.len() as u64,
                message_id: message_id(&norm),
                file: dest,
            });
        }
        out
    }

    /// UIDLs in POP3 message-number order (raw POP3 client, plain port, USER/PASS).
    pub fn pop3_uidls(&self, user: &str) -> Vec<String> {
        let mut p = Pop3::login(self, user);
        let uidls = p.uidl();
        p.quit();
        uidls
    }

    /// Every message as RETR delivers it (dot-unstuffed), in message-number order.
    pub fn pop3_retr_all(&self, user: &str) -> Vec<Vec<u8>> {
        let mut p = Pop3::login(self, user);
        let count = p.list().len() as u32;
        let all = (1..=count).map(|n| p.retr(n)).collect();
        p.quit();
        all
    }

    /// The last lines of Dovecot's log (and of its stderr, if any).
    pub fn log_tail(&self) -> String {
        let mut out = tail_lines(&self.log_file, 60);
        let err = tail_lines(&self.stderr_file, 20);
        if !err.trim().is_empty() {
            out.push_str("--- dovecot stderr ---\n");
            out.push_str(&err);
        }
        out
    }
}

/// Alive and not a zombie (Linux /proc; elsewhere: assumed alive until reaped).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// `kill -s SIG pid...` through `sh` (its builtin kill: no procps needed); false if not sent.
fn signal(sig: &str, pids: &[u32]) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("kill -s \"$0\" -- \"$@\"")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

enum Probe {
    Ready,
    NotYet,
    Foreign(String),
}

fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
    s.push('\n');
    s
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), (uid, gid));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Dovecot {} (pop3 {} pop3s {} imap {} imaps {}) log tail ---\n{}",
                self.base.display(),
                self.pop3_port,
                self.pop3s_port,
                self.imap_port,
                self.imaps_port,
                self.log_tail()
            );
        }
        self.stop();
        if std::env::var_os("POPFERRY_TEST_KEEP").is_some_and(|v| v != "0") {
            eprintln!(
                "POPFERRY_TEST_KEEP: Dovecot folder kept at {}",
                self.base.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}
