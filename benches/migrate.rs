//! The migration benchmark (run on demand, not in CI): `scripts/bench.sh`.
//!
//! Why a bench binary and not a test: it moves ~117 MB several times and
//! reports rates, which are figures for BENCHMARKS.md, not pass/fail. It
//! reuses the test harness (`tests/support`) to start a private Dovecot
//! (POP3 source on Maildir, IMAP target on mdbox users), seeds it with the
//! shared seeder's mix, and measures in one run:
//!
//! 1. a raw pipelined baseline with no ledger (our POP3 `retr_pipelined` and
//!    IMAP `append_pipeline` primitives, RETR and APPEND overlapped): the
//!    practical limit of these servers on this machine;
//! 2. `popferry sync` (the release binary) on the same mailbox, with its peak
//!    RSS from `/usr/bin/time -v`;
//! 3. both again through a proxy that delays each direction by 20 ms (40 ms
//!    round trip), on a mailbox of the same mix (see `BENCH_LATENCY_N`);
//! 4. one 200 MB message alone through `popferry sync`: peak RSS.
//! 5. a 100,000-message account: the migration, then a later pass with
//!    nothing new (peak RSS of each: memory must not grow with history).
//! 6. a target that announces Gmail's capabilities (LITERAL-, no LITERAL+;
//!    a second Dovecot): a raw baseline over the same number of sessions
//!    (`BENCH_SESSIONS`, 4) with synchronising literals, then `popferry
//!    sync` (4 sessions, its default), on loopback and at 40 ms RTT, and
//!    `connections = 1` at 40 ms for reference (`BENCH_GMAIL_N` messages);
//! 7. a POP3 source without PIPELINING (a proxy removes it from CAPA) at
//!    40 ms RTT, `BENCH_GMAIL_N` messages.
//!
//! Knobs (environment): `BENCH_N` (10000), `BENCH_LATENCY_N` (10000),
//! `BENCH_DELAY_MS` (20), `BENCH_BIG_MB` (200), `BENCH_WINDOW` (256),
//! `BENCH_SEEDER` (default `../shared/peers/seed-pop3.py` next to the repo),
//! `BENCH_HISTORY_N` (100000), `BENCH_GMAIL_N` (1000), `BENCH_SESSIONS`
//! (4), `BENCH_SKIP` (comma list of: loopback, latency, gmail, nopipe, big,
//! history).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popferry::config::{Endpoint, ImapAuth, Mechanism, Pop3Auth, ServerSettings, TlsMode};
use popferry::imap;
use popferry::pop3;
use popferry::spool::Spool;
use support::{ConfigBuilder, Dovecot, User, popferry_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn skipped(what: &str) -> bool {
    std::env::var("BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == what)
}

fn seeder() -> PathBuf {
    std::env::var_os("BENCH_SEEDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/seed-pop3.py")
        })
}

fn seed(maildir: &Path, args: &[&str]) {
    let t = Instant::now();
    let st = Command::new("python3")
        .arg(seeder())
        .arg("--maildir")
        .arg(maildir)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("python3 and the seeder (set BENCH_SEEDER)");
    assert!(st.success(), "seeding failed");
    eprintln!(
        "bench: seeded {} {:?} in {:.1?}",
        maildir.display(),
        args,
        t.elapsed()
    );
}

fn settings<A: Mechanism>(host: &str, port: u16, user: &str, ca: &Path) -> ServerSettings<A> {
    ServerSettings {
        endpoint: Endpoint {
            host: host.into(),
            port,
            tls: TlsMode::Implicit,
            ca_file: Some(ca.to_path_buf()),
            tls_fingerprint: None,
            timeout: Duration::from_secs(120),
        },
        username: user.into(),
        password: support::PASSWORD.into(),
        auth: A::default(),
        allow_plaintext_password: false,
        oauth2: None,
    }
}

#[derive(Clone, Copy, Debug)]
struct Run {
    messages: u64,
    bytes: u64,
    secs: f64,
    /// Peak RSS in KiB (popferry runs only).
    rss_kib: Option<u64>,
}

impl Run {
    fn msg_rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn mb_rate(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.2} | {:.0} | {:.1} | {} |",
            self.messages,
            self.bytes as f64 / 1e6,
            self.secs,
            self.msg_rate(),
            self.mb_rate(),
            self.rss_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        )
    }
}

/// The raw pipelined baseline: RETR everything (window), spool, APPEND
/// pipelined; POP3 and IMAP overlap, joined by a small queue. No ledger.
async fn baseline(
    pop: ServerSettings<Pop3Auth>,
    imap_s: ServerSettings<ImapAuth>,
    mailbox: &str,
    window: usize,
) -> Run {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<popferry::spool::SpooledMessage>(window * 2);
    let fetch = tokio::spawn(async move {
        let mut s = pop3::connect(&pop).await.expect("POP3 login");
        let (list, _) = s.list_and_uidl().await.expect("LIST UIDL");
        let numbers: Vec<u32> = list.iter().map(|(n, _)| *n).collect();
        let mut bytes = 0u64;
        {
            let mut stream = s.retr_pipelined(&numbers, window);
            while let Some((_, body)) = stream.next_message().await.expect("RETR") {
                let mut body = body.expect("RETR +OK");
                let mut spool = Spool::new(popferry::spool::DEFAULT_MEMORY_THRESHOLD);
                while let Some(chunk) = body.next_chunk().await.expect("body") {
                    spool.write(chunk).await.expect("spool");
                }
                let msg = spool.finish().await.expect("spool");
                bytes += msg.len();
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        }
        let _ = s.quit().await;
        bytes
    });
    let mut session = imap::connect(&imap_s).await.expect("IMAP login");
    session.ensure_mailbox(mailbox).await.expect("mailbox");
    let mut count = 0u64;
    {
        let mut pipe = session
            .append_pipeline::<()>(mailbox, &[], window, 32 << 20)
            .expect("pipeline");
        while let Some(msg) = rx.recv().await {
            while pipe.is_full() {
                let (_, r) = pipe.next_result().await.expect("APPEND").expect("result");
                r.expect("APPEND OK");
                count += 1;
            }
            pipe.push((), &msg, None).await.expect("push");
        }
        while let Some((_, r)) = pipe.next_result().await.expect("APPEND") {
            r.expect("APPEND OK");
            count += 1;
        }
    }
    let bytes = fetch.await.expect("fetch task");
    let secs = started.elapsed().as_secs_f64();
    let _ = session.logout().await;
    Run {
        messages: count,
        bytes,
        secs,
        rss_kib: None,
    }
}

/// The raw baseline over `sessions` IMAP sessions: RETR everything
/// (window) into a shared queue, and each session takes the next message
/// and APPENDs it through its own pipeline (with synchronising literals
/// where the server lacks LITERAL+: the command line goes out behind the
/// APPENDs in flight, the literal waits for "+"). No ledger. This is the
/// honest comparison for popferry's lanes: the same primitives and the same
/// number of connections.
async fn baseline_sessions(
    pop: ServerSettings<Pop3Auth>,
    imap_s: ServerSettings<ImapAuth>,
    mailbox: &str,
    window: usize,
    sessions: usize,
) -> Run {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<popferry::spool::SpooledMessage>(window * 2);
    let fetch = tokio::spawn(async move {
        let mut s = pop3::connect(&pop).await.expect("POP3 login");
        let (list, _) = s.list_and_uidl().await.expect("LIST UIDL");
        let numbers: Vec<u32> = list.iter().map(|(n, _)| *n).collect();
        let mut bytes = 0u64;
        {
            let mut stream = s.retr_pipelined(&numbers, window);
            while let Some((_, body)) = stream.next_message().await.expect("RETR") {
                let mut body = body.expect("RETR +OK");
                let mut spool = Spool::new(popferry::spool::DEFAULT_MEMORY_THRESHOLD);
                while let Some(chunk) = body.next_chunk().await.expect("body") {
                    spool.write(chunk).await.expect("spool");
                }
                let msg = spool.finish().await.expect("spool");
                bytes += msg.len();
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        }
        let _ = s.quit().await;
        bytes
    });
    {
        let mut s = imap::connect(&imap_s).await.expect("IMAP login");
        s.ensure_mailbox(mailbox).await.expect("mailbox");
        let _ = s.logout().await;
    }
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut lanes = Vec::new();
    for _ in 0..sessions {
        let rx = rx.clone();
        let imap_s = imap_s.clone();
        let mailbox = mailbox.to_owned();
        lanes.push(tokio::spawn(async move {
            let mut session = imap::connect(&imap_s).await.expect("IMAP login");
            let mut count = 0u64;
            {
                let mut pipe = session
                    .append_pipeline::<()>(&mailbox, &[], 32, 4 << 20)
                    .expect("pipeline");
                loop {
                    while let Some((_, r)) = pipe.ready_result() {
                        r.expect("APPEND OK");
                        count += 1;
                    }
                    let next = rx.lock().await.recv().await;
                    let Some(msg) = next else { break };
                    while pipe.is_full() {
                        let (_, r) = pipe.next_result().await.expect("APPEND").expect("result");
                        r.expect("APPEND OK");
                        count += 1;
                    }
                    pipe.push((), &msg, None).await.expect("push");
                }
                while let Some((_, r)) = pipe.next_result().await.expect("APPEND") {
                    r.expect("APPEND OK");
                    count += 1;
                }
            }
            let _ = session.logout().await;
            count
        }));
    }
    let mut count = 0u64;
    for l in lanes {
        count += l.await.expect("lane");
    }
    let bytes = fetch.await.expect("fetch task");
    Run {
        messages: count,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        rss_kib: None,
    }
}

/// `popferry sync` under `/usr/bin/time -v`: wall time and peak RSS.
fn popferry_sync(config: &Path, expect_messages: u64, bytes: u64) -> Run {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(popferry_bin())
        .arg("-c")
        .arg(config)
        .arg("sync")
        .env_remove("POPFERRY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("/usr/bin/time (apt-get install time)");
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "popferry sync failed:\n{stdout}\n{}",
        stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let rss = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    eprintln!(
        "bench: popferry: {} (CPU: user {} s, system {} s, {} of a core)",
        stdout.trim(),
        field("User time (seconds):"),
        field("System time (seconds):"),
        field("Percent of CPU this job got:")
    );
    Run {
        messages: expect_messages,
        bytes,
        secs,
        rss_kib: rss,
    }
}

async fn mailbox_count(imap_s: &ServerSettings<ImapAuth>, mailbox: &str) -> u32 {
    let mut s = imap::connect(imap_s).await.expect("IMAP login");
    let st = s.ensure_mailbox(mailbox).await.expect("status");
    let _ = s.logout().await;
    st.exists
}

async fn pop3_total(pop: &ServerSettings<Pop3Auth>) -> (u64, u64) {
    let mut s = pop3::connect(pop).await.expect("POP3 login");
    let (n, size) = s.stat().await.expect("STAT");
    let _ = s.quit().await;
    (u64::from(n), size)
}

/// A TCP proxy on 127.0.0.1 that delays every chunk, each direction, by
/// `delay` (bandwidth is not limited: chunks are timestamped and released
/// in order, so pipelined traffic keeps flowing).
async fn latency_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed_copy(cr, sw, delay));
            tokio::spawn(delayed_copy(sr, cw, delay));
        }
    });
    port
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// A POP3 proxy that delays like [`latency_proxy`] and removes PIPELINING
/// from the server's CAPA answer: a POP3 source that does not pipeline
/// (popferry then sends one RETR at a time). Use it on the plain port with
/// `tls = "none"` (it must read the CAPA lines).
async fn no_pipelining_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed_copy(cr, sw, delay));
            tokio::spawn(delayed_copy_without_pipelining(sr, cw, delay));
        }
    });
    port
}

/// [`delayed_copy`] of the server's side, line by line until the end of
/// the first multi-line answer (CAPA: popferry asks for it first, and once
/// without STLS), dropping its PIPELINING line; then chunks as they come.
async fn delayed_copy_without_pipelining(
    from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::AsyncBufReadExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut from = tokio::io::BufReader::new(from);
        for _ in 0..200 {
            let mut line = Vec::new();
            match from.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == b".\r\n";
            if !line.eq_ignore_ascii_case(b"PIPELINING\r\n") {
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, line)).await.is_err() {
                    return;
                }
            }
            if end {
                break;
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

fn write_config(
    d: &Dovecot,
    src: &str,
    dst: &str,
    tag: &str,
    ports: Option<(u16, u16)>,
    max: &str,
) -> PathBuf {
    let mut b = config_builder(d, src, dst, tag, max);
    if let Some((p, i)) = ports {
        b = b.source_port(Some(p)).target_port(Some(i));
    }
    b.write()
}

fn config_builder(d: &Dovecot, src: &str, dst: &str, tag: &str, max: &str) -> ConfigBuilder {
    let dir = d.base.join(format!("bench-{tag}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    ConfigBuilder::new(d, src, dst)
        .dir(&dir)
        .ledger(&dir.join("ledger.db"))
        .max_message_size(max)
}

fn main() {
    let n = env_num("BENCH_N", 10_000);
    let latency_n = env_num("BENCH_LATENCY_N", 10_000);
    let delay = Duration::from_millis(env_num("BENCH_DELAY_MS", 20));
    let big_mb = env_num("BENCH_BIG_MB", 200);
    let window = env_num("BENCH_WINDOW", 256) as usize;
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and must not start a 5-minute benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "migrate: a benchmark; run it with scripts/bench.sh (cargo bench --bench migrate)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let users = vec![
        User::maildir("alice"),
        User::maildir("bob"),
        User::maildir("frank"),
        User::mdbox("base1"),
        User::mdbox("sync1"),
        User::mdbox("base2"),
        User::mdbox("sync2"),
        User::mdbox("big1"),
        User::maildir("gina"),
        User::mdbox("hist1"),
        User::maildir("hank"),
        User::mdbox("nopipe1"),
    ];
    let d = Dovecot::builder().users(users).start();
    let ca = d.ca_file.clone();
    let host = d.host.clone();
    let pop = |u: &str, port: u16| settings(&host, port, u, &ca);
    let imap_at = |u: &str, port: u16| settings(&host, port, u, &ca);
    let mut rows: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let mut loopback_sync: Option<Run> = None;
    if !skipped("loopback") {
        seed(&d.maildir("alice"), &["-n", &n.to_string(), "--seed", "1"]);
        let (count, bytes) = rt.block_on(pop3_total(&pop("alice", d.pop3s_port)));
        let base = rt.block_on(baseline(
            pop("alice", d.pop3s_port),
            imap_at("base1", d.imaps_port),
            "INBOX",
            window,
        ));
        assert_eq!(base.messages, count, "baseline copied everything");
        rows.push(base.row("raw pipelined baseline, loopback"));
        let cfg = write_config(&d, "alice", "sync1", "loop", None, "50MiB");
        let run = popferry_sync(&cfg, count, bytes);
        let landed = rt.block_on(mailbox_count(&imap_at("sync1", d.imaps_port), "INBOX"));
        assert_eq!(u64::from(landed), count, "popferry copied everything");
        rows.push(run.row("popferry sync, loopback"));
        notes.push(format!(
            "loopback: popferry / baseline = {:.2} (target >= 0.90)",
            run.msg_rate() / base.msg_rate()
        ));
        loopback_sync = Some(run);
    }

    if !skipped("latency") {
        seed(
            &d.maildir("bob"),
            &["-n", &latency_n.to_string(), "--seed", "1"],
        );
        let (count, bytes) = rt.block_on(pop3_total(&pop("bob", d.pop3s_port)));
        let (pp, ip) = rt.block_on(async {
            (
                latency_proxy(d.pop3s_port, delay).await,
                latency_proxy(d.imaps_port, delay).await,
            )
        });
        let base = rt.block_on(baseline(
            pop("bob", pp),
            imap_at("base2", ip),
            "INBOX",
            window,
        ));
        assert_eq!(base.messages, count);
        let rtt = delay.as_millis() * 2;
        rows.push(base.row(&format!("raw pipelined baseline, {rtt} ms RTT")));
        let cfg = write_config(&d, "bob", "sync2", "lat", Some((pp, ip)), "50MiB");
        let run = popferry_sync(&cfg, count, bytes);
        let landed = rt.block_on(mailbox_count(&imap_at("sync2", d.imaps_port), "INBOX"));
        assert_eq!(u64::from(landed), count);
        rows.push(run.row(&format!("popferry sync, {rtt} ms RTT")));
        if let Some(lo) = loopback_sync {
            notes.push(format!(
                "{rtt} ms RTT: popferry / its loopback rate = {:.3} (target >= 0.80)",
                run.msg_rate() / lo.msg_rate()
            ));
        }
        notes.push(format!(
            "{rtt} ms RTT: baseline / loopback-class limit: baseline ran at {:.0} msg/s",
            base.msg_rate()
        ));
    }

    let gmail_n = env_num("BENCH_GMAIL_N", 1000);
    let sessions = env_num("BENCH_SESSIONS", 4) as usize;
    if !skipped("gmail") {
        // Issue 11: a target that announces Gmail's capabilities (LITERAL-,
        // no LITERAL+): popferry appends over 4 sessions (the default).
        let g = Dovecot::builder()
            .gmail_shape()
            .users(vec![
                User::maildir("gsrc"),
                User::mdbox("gbase0"),
                User::mdbox("gsync0"),
                User::mdbox("gbase40"),
                User::mdbox("gsync40"),
                User::mdbox("gone40"),
            ])
            .start();
        seed(
            &g.maildir("gsrc"),
            &["-n", &gmail_n.to_string(), "--seed", "1"],
        );
        let gca = g.ca_file.clone();
        let gpop = |port: u16| settings::<Pop3Auth>(&g.host, port, "gsrc", &gca);
        let gimap = |u: &str, port: u16| settings::<ImapAuth>(&g.host, port, u, &gca);
        let (count, bytes) = rt.block_on(pop3_total(&gpop(g.pop3s_port)));
        let landed = |u: &str| {
            let n = rt.block_on(mailbox_count(&gimap(u, g.imaps_port), "INBOX"));
            assert_eq!(u64::from(n), count, "{u}: every message, once");
        };

        let base = rt.block_on(baseline_sessions(
            gpop(g.pop3s_port),
            gimap("gbase0", g.imaps_port),
            "INBOX",
            window,
            sessions,
        ));
        assert_eq!(base.messages, count);
        landed("gbase0");
        rows.push(base.row(&format!(
            "raw baseline, Gmail-shaped target, {sessions} sessions, loopback"
        )));
        let cfg = write_config(&g, "gsrc", "gsync0", "gm0", None, "50MiB");
        let run = popferry_sync(&cfg, count, bytes);
        landed("gsync0");
        rows.push(run.row("popferry sync, Gmail-shaped target, loopback"));
        notes.push(format!(
            "Gmail shape, loopback: popferry / same-session-count baseline = {:.2}",
            run.msg_rate() / base.msg_rate()
        ));
        if let Some(lo) = loopback_sync {
            notes.push(format!(
                "Gmail shape, loopback: popferry / its LITERAL+ loopback rate = {:.2} (target >= 0.80)",
                run.msg_rate() / lo.msg_rate()
            ));
        }

        let (pp, ip) = rt.block_on(async {
            (
                latency_proxy(g.pop3s_port, delay).await,
                latency_proxy(g.imaps_port, delay).await,
            )
        });
        let rtt = delay.as_millis() * 2;
        let base = rt.block_on(baseline_sessions(
            gpop(pp),
            gimap("gbase40", ip),
            "INBOX",
            window,
            sessions,
        ));
        assert_eq!(base.messages, count);
        landed("gbase40");
        rows.push(base.row(&format!(
            "raw baseline, Gmail-shaped target, {sessions} sessions, {rtt} ms RTT"
        )));
        let cfg = write_config(&g, "gsrc", "gsync40", "gm40", Some((pp, ip)), "50MiB");
        let run = popferry_sync(&cfg, count, bytes);
        landed("gsync40");
        rows.push(run.row(&format!("popferry sync, Gmail-shaped target, {rtt} ms RTT")));
        notes.push(format!(
            "Gmail shape, {rtt} ms RTT: popferry {:.1} msg/s (target >= 80), / same-session-count baseline = {:.2} (target >= 0.80)",
            run.msg_rate(),
            run.msg_rate() / base.msg_rate()
        ));
        let cfg = config_builder(&g, "gsrc", "gone40", "gm40one", "50MiB")
            .source_port(Some(pp))
            .target_port(Some(ip))
            .target_extra("connections = 1")
            .write();
        let one = popferry_sync(&cfg, count, bytes);
        landed("gone40");
        rows.push(one.row(&format!(
            "popferry sync, Gmail-shaped target, connections = 1, {rtt} ms RTT"
        )));
        drop(g);
    }

    if !skipped("nopipe") {
        // Issue 11: a POP3 source without PIPELINING (a proxy removes it
        // from CAPA), 40 ms RTT; the target has LITERAL+. One RETR per
        // round trip is the bound.
        seed(
            &d.maildir("hank"),
            &["-n", &gmail_n.to_string(), "--seed", "1"],
        );
        let (count, bytes) = rt.block_on(pop3_total(&pop("hank", d.pop3s_port)));
        let (pp, ip) = rt.block_on(async {
            (
                no_pipelining_proxy(d.pop3_port, delay).await,
                latency_proxy(d.imaps_port, delay).await,
            )
        });
        let rtt = delay.as_millis() * 2;
        let cfg = config_builder(&d, "hank", "nopipe1", "nopipe", "50MiB")
            .source_tls(support::Tls::None)
            .source_port(Some(pp))
            .target_port(Some(ip))
            .write();
        let run = popferry_sync(&cfg, count, bytes);
        let landed = rt.block_on(mailbox_count(&imap_at("nopipe1", d.imaps_port), "INBOX"));
        assert_eq!(u64::from(landed), count);
        rows.push(run.row(&format!(
            "popferry sync, POP3 without PIPELINING, {rtt} ms RTT"
        )));
        let bound = 1000.0 / rtt as f64;
        notes.push(format!(
            "POP3 without PIPELINING, {rtt} ms RTT: {:.1} msg/s = {:.2} x one message per round trip (target >= 0.90)",
            run.msg_rate(),
            run.msg_rate() / bound
        ));
    }

    if !skipped("big") {
        let size = big_mb * 1024 * 1024;
        seed(
            &d.maildir("frank"),
            &[
                "-n",
                "1",
                "--big-count",
                "1",
                "--big-size",
                &size.to_string(),
                "--seed",
                "2",
            ],
        );
        let (count, bytes) = rt.block_on(pop3_total(&pop("frank", d.pop3s_port)));
        let cfg = write_config(&d, "frank", "big1", "big", None, "1GiB");
        let run = popferry_sync(&cfg, count, bytes);
        rows.push(run.row(&format!("popferry sync, one {big_mb} MiB message")));
    }

    if !skipped("history") {
        // Issue 9 case 10: memory must not grow with an account's history.
        let hist_n = env_num("BENCH_HISTORY_N", 100_000);
        seed(
            &d.maildir("gina"),
            &["-n", &hist_n.to_string(), "--seed", "3"],
        );
        let (count, bytes) = rt.block_on(pop3_total(&pop("gina", d.pop3s_port)));
        let cfg = write_config(&d, "gina", "hist1", "hist", None, "50MiB");
        let first = popferry_sync(&cfg, count, bytes);
        rows.push(first.row(&format!("popferry sync, {count} messages, the migration")));
        let idle = popferry_sync(&cfg, count, bytes);
        rows.push(idle.row(&format!(
            "popferry sync, {count} messages, a later pass with nothing new"
        )));
        let landed = rt.block_on(mailbox_count(&imap_at("hist1", d.imaps_port), "INBOX"));
        assert_eq!(u64::from(landed), count, "copied once");
    }

    println!();
    println!("| run | messages | MB | seconds | msg/s | MB/s | peak RSS MiB |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("- {n}");
    }
    drop(d);
}
