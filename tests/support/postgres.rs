//! A private PostgreSQL for the tests: one cluster per test binary, one
//! fresh database per test ([`database`]).
//!
//! Why so: `initdb` takes seconds, `CREATE DATABASE` milliseconds, and a
//! database per test keeps the tests as independent as a cluster per test
//! would. The cluster is `initdb`'d into a temporary folder, listens on
//! 127.0.0.1 on an ephemeral port (its unix socket in that folder), trusts
//! loopback connections, and runs without fsync (a test needs no
//! durability across a power cut). As root it runs as the `postgres` user
//! (initdb refuses root), otherwise as the current user.
//!
//! It is stopped by its PID (from `postmaster.pid`): by [`PgCluster`]'s
//! `Drop` for a cluster of one's own, and for the shared one by a guardian
//! shell that waits for this test process to end in any way (its stdin is
//! a pipe only this process holds: a panic, an exit or a SIGKILL close it).
//!
//! A missing PostgreSQL is a failing test that says how to install it.
//! Self-contained (std only): the library's unit tests include it too.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Quoted in every failure about a missing PostgreSQL.
pub const PG_INSTALL_HINT: &str = "sudo apt-get install -y postgresql";

/// The folder of `initdb`, `postgres`, `psql`: the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else `$PATH`'s.
pub fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb, \
             no initdb on PATH): install it with `{PG_INSTALL_HINT}`"
        )
    })
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)).wrapping_add(N.fetch_add(1, Ordering::Relaxed))
}

/// uid and gid of `postgres` from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    let text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .unwrap_or_else(|| {
            panic!(
                "running as root, the test PostgreSQL must run as the user `postgres`, \
                 which does not exist: install PostgreSQL with `{PG_INSTALL_HINT}`"
            )
        })
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command run as the cluster's owner.
fn as_owner(bin: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = owner {
        c.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    c.env("LC_ALL", "C").env_remove("PGDATA");
    c
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

/// A running private cluster; stopped (by PID) and removed when dropped.
pub struct PgCluster {
    base: PathBuf,
    port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// Held by the shared cluster only: its guardian stops the cluster
    /// when this process ends.
    guardian: Option<ChildStdin>,
}

impl PgCluster {
    /// initdb + start; panics (saying why, and how to install PostgreSQL)
    /// if it cannot.
    pub fn start() -> PgCluster {
        let bin = pg_bin_dir();
        let base = PathBuf::from(format!("/tmp/pf-pg-{:012x}", unique() & 0xffff_ffff_ffff));
        fs::create_dir(&base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).expect("chmod");
        let owner = is_root().then(postgres_ids);
        if let Some(ids) = owner {
            chown_tree(&base, ids);
        }
        let data = base.join("data");
        let out = as_owner(&bin.join("initdb"), owner)
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions", "-D"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; install PostgreSQL with `{PG_INSTALL_HINT}`",
                    bin.join("initdb").display()
                )
            });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut last = String::new();
        for _ in 0..5 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
                l.local_addr().expect("local_addr").port()
            };
            let log = fs::File::create(base.join("postgres.log")).expect("log file");
            if let Some(ids) = owner {
                chown_tree(&base.join("postgres.log"), ids);
            }
            let child = as_owner(&bin.join("postgres"), owner)
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&base)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .args([
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "log_min_messages=warning",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
            let mut c = PgCluster {
                base: base.clone(),
                port,
                bin: bin.clone(),
                child: Some(child),
                guardian: None,
            };
            match c.wait_ready() {
                Ok(()) => return c,
                Err(e) => {
                    last = e;
                    c.stop();
                }
            }
        }
        panic!("the test PostgreSQL did not start: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not ready within 60 s: {}", self.log_tail()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.base.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The postmaster's PID, from `postmaster.pid`.
    fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.base.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs one SQL statement as the superuser in database `db`.
    pub fn psql(&self, db: &str, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "30")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh, empty database of its own.
    pub fn database(&'static self) -> PgDatabase {
        let name = format!("t{:016x}", unique());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDatabase {
            cluster: self,
            url: format!("postgres://postgres@127.0.0.1:{}/{name}", self.port),
            name,
        }
    }

    /// Stops the server by its PID (fast shutdown, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL {} (port {}) log tail ---\n{}",
                self.base.display(),
                self.port,
                self.log_tail()
            );
        }
        self.stop();
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// The cluster shared by this test binary, started on first use; stopped
/// when the process ends, however it ends.
pub fn shared() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut c = PgCluster::start();
        let pid = c.pid().expect("postmaster.pid");
        // Reads until EOF (this process gone), then stops the server by
        // PID and removes its folder.
        let guardian = Command::new("sh")
            .arg("-c")
            .arg(
                "cat >/dev/null; kill -INT \"$0\" 2>/dev/null; \
                 i=0; while kill -0 \"$0\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                 kill -KILL \"$0\" 2>/dev/null; rm -rf \"$1\"",
            )
            .arg(pid.to_string())
            .arg(&c.base)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL guardian");
        let mut child = guardian;
        c.guardian = child.stdin.take();
        if let Some(g) = c.guardian.as_mut() {
            let _ = g.flush();
        }
        // The guardian is reaped by init once this process is gone.
        std::mem::forget(child);
        c
    })
}

/// A fresh database in the shared cluster.
pub fn database() -> PgDatabase {
    shared().database()
}

/// One test's database; dropped with it.
pub struct PgDatabase {
    cluster: &'static PgCluster,
    pub name: String,
    /// `postgres://postgres@127.0.0.1:PORT/NAME` (trust: no password).
    pub url: String,
}

impl PgDatabase {
    pub fn cluster(&self) -> &'static PgCluster {
        self.cluster
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = Command::new(self.cluster.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.cluster.port.to_string(),
                ])
                .args(["-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
