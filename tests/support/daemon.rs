//! A `popferry run` child process for tests of its HTTP port and signals,
//! and a plain HTTP/1.1 client with headers (no client crate: what a probe
//! or a browser sends is a few lines).
//!
//! The daemon is killed (SIGKILL) on drop, and its log printed if the test
//! panicked.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::popferry_command;

/// How long any wait on the daemon may take before it is a failure.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A free port on 127.0.0.1 (bound, then released for the daemon to take).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

pub struct RunningDaemon {
    child: Option<Child>,
    log: PathBuf,
    /// Where to connect (127.0.0.1 and the port, whatever `listen` binds).
    pub addr: SocketAddr,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    /// Header lines as sent, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RunningDaemon {
    /// `popferry run -c config`, stderr to `log`; waits until `/healthz`
    /// answers on 127.0.0.1:`port`.
    pub fn start(config: &Path, port: u16, log: &Path) -> RunningDaemon {
        let stderr = fs::File::create(log).expect("create daemon log");
        let child = popferry_command()
            .arg("run")
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("POPFERRY_BACKOFF_BASE")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn popferry run");
        let mut d = RunningDaemon {
            child: Some(child),
            log: log.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        d.wait_for("/healthz to answer 200", |d| {
            d.try_get("/healthz", &[]).is_some_and(|a| a.code == 200)
        });
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `kill -s SIG pid` (the shell's builtin).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("kill -s \"$0\" \"$1\"")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid());
    }

    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Polls `cond` every 100 ms until it holds; fails after [`DEADLINE`]
    /// or if the daemon exits meanwhile.
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&RunningDaemon) -> bool) {
        let start = Instant::now();
        loop {
            if cond(self) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .expect("daemon running")
                .try_wait()
                .expect("try_wait")
            {
                panic!(
                    "the daemon exited ({status}) while waiting for {what}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "gave up after {DEADLINE:?} waiting for {what}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` with extra request headers; panics if nothing answers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.try_get(path, headers)
            .unwrap_or_else(|| panic!("GET {path} on {} failed", self.addr))
    }

    pub fn try_get(&self, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
        http_get(self.addr, path, headers)
    }

    /// SIGTERM, then a clean exit within 40 s.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let start = Instant::now();
        let child = self.child.as_mut().expect("daemon running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "exit {status}\n{}", self.log_text());
                self.child = None;
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "no exit 40 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- popferry daemon log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`, or None if nothing answered.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.into() };
    Some(Answer {
        code,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
