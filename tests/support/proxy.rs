//! A fault-injecting TCP proxy for the tests: popferry talks to the proxy,
//! the proxy talks to a real server, and rules decide when the byte stream is
//! cut, reset, stalled or interrupted by injected bytes.
//!
//! Why it exists: guarantees 2 and 3 of DESIGN.md ("exactly once", "nothing
//! lost") must hold whatever moment a connection drops. A real Dovecot cannot
//! be asked to drop a connection in the middle of a RETR or between an APPEND
//! literal and its tagged OK; a proxy in front of it can, precisely and
//! repeatably, while the server stays real.
//!
//! Rules ([`Fault`]) watch one direction of the stream and fire at a byte
//! position given either as a count ([`Fault::after_bytes`]) or relative to
//! the n-th occurrence of a byte pattern ([`Fault::before`], [`Fault::after`],
//! [`Fault::after_line_of`]). Bytes before that position are forwarded, then
//! the [`Action`] happens. A rule fires once by default (so the next run goes
//! through cleanly), may be limited to the k-th accepted connection, and
//! [`Proxy::fired`] tells a test whether its fault really happened (a fault
//! that never fires would make a test prove nothing).
//!
//! The proxy sees ciphertext under TLS: use it with `tls = "none"` on loopback.
//! It listens on 127.0.0.1:0 and runs on its own thread with a tokio runtime;
//! dropping the [`Proxy`] stops it and closes every connection.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Which way the bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// popferry → server (commands, APPEND literals).
    ClientToServer,
    /// server → popferry (replies, RETR data).
    ServerToClient,
}

impl Dir {
    fn arrow(self) -> &'static str {
        match self {
            Dir::ClientToServer => "c->s",
            Dir::ServerToClient => "s->c",
        }
    }
}

/// What happens when a rule fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close both sockets (FIN).
    Close,
    /// Abort both sockets (SO_LINGER 0: RST).
    Reset,
    /// Stop forwarding this direction (the bytes are read and dropped), keep
    /// both sockets open; the other direction keeps flowing.
    Stall,
    /// Send these bytes to the client (e.g. `* BYE ...`), then close both.
    InjectToClientAndClose(Vec<u8>),
}

/// Where, relative to a pattern's n-th occurrence, a rule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Before its first byte.
    Start,
    /// This many bytes after its last byte.
    End(u64),
    /// Right after the line end (LF) that follows it.
    LineEnd,
}

#[derive(Clone, Debug)]
enum Trigger {
    Bytes(u64),
    Pattern {
        pattern: Vec<u8>,
        nth: usize,
        at: At,
    },
}

/// One fault rule. Build with [`Fault::new`] (or [`Fault::cut`],
/// [`Fault::reset`], [`Fault::stall`]) and one trigger.
#[derive(Clone, Debug)]
pub struct Fault {
    dir: Dir,
    trigger: Trigger,
    action: Action,
    connection: Option<usize>,
    times: Option<usize>,
}

impl Fault {
    pub fn new(dir: Dir, action: Action) -> Fault {
        Fault {
            dir,
            trigger: Trigger::Bytes(0),
            action,
            connection: None,
            times: Some(1),
        }
    }
    pub fn cut(dir: Dir) -> Fault {
        Fault::new(dir, Action::Close)
    }
    pub fn reset(dir: Dir) -> Fault {
        Fault::new(dir, Action::Reset)
    }
    pub fn stall(dir: Dir) -> Fault {
        Fault::new(dir, Action::Stall)
    }
    /// Fires once `n` bytes have passed in this direction (of one connection).
    pub fn after_bytes(mut self, n: u64) -> Fault {
        self.trigger = Trigger::Bytes(n);
        self
    }
    /// Fires just before the first byte of the (first) occurrence of `pattern`.
    pub fn before(mut self, pattern: &[u8]) -> Fault {
        self.trigger = Trigger::Pattern {
            pattern: pattern.to_vec(),
            nth: 1,
            at: At::Start,
        };
        self
    }
    /// Fires `extra` bytes after the end of the (first) occurrence of `pattern`.
    pub fn after(mut self, pattern: &[u8], extra: u64) -> Fault {
        self.trigger = Trigger::Pattern {
            pattern: pattern.to_vec(),
            nth: 1,
            at: At::End(extra),
        };
        self
    }
    /// Fires right after the end of the line that holds the (first) occurrence of `pattern`.
    pub fn after_line_of(mut self, pattern: &[u8]) -> Fault {
        self.trigger = Trigger::Pattern {
            pattern: pattern.to_vec(),
            nth: 1,
            at: At::LineEnd,
        };
        self
    }
    /// Uses the n-th (1-based) occurrence of the pattern within one connection.
    pub fn nth(mut self, n: usize) -> Fault {
        assert!(n >= 1, "occurrences count from 1");
        if let Trigger::Pattern { nth, .. } = &mut self.trigger {
            *nth = n;
        }
        self
    }
    /// Only on the k-th connection the proxy accepts (1-based, counted from its start).
    pub fn on_connection(mut self, k: usize) -> Fault {
        self.connection = Some(k);
        self
    }
    /// Fires at most `n` times in all (default 1).
    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }
    /// Fires on every connection where it matches.
    pub fn always(mut self) -> Fault {
        self.times = None;
        self
    }
}

/// Identifies a rule added to a [`Proxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultId(usize);

struct Rule {
    id: usize,
    fault: Fault,
    /// How many times it may still fire (usize::MAX: unlimited).
    remaining: AtomicUsize,
    fired: AtomicUsize,
}

impl Rule {
    /// Takes one firing, if any is left.
    fn claim(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| match r {
                0 => None,
                usize::MAX => Some(usize::MAX),
                r => Some(r - 1),
            })
            .is_ok()
    }
    fn armed(&self) -> bool {
        self.remaining.load(Ordering::SeqCst) > 0
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Arc<Rule>>>,
    next_rule: AtomicUsize,
    connections: AtomicUsize,
    events: Mutex<Vec<String>>,
}

impl Shared {
    fn event(&self, e: String) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }
}

/// A running proxy; see the module docs.
pub struct Proxy {
    port: u16,
    target_port: u16,
    shared: Arc<Shared>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to 127.0.0.1:`target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let port = std_listener.local_addr().expect("proxy: local addr").port();
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy: tokio runtime");
                rt.block_on(async move {
                    let listener =
                        TcpListener::from_std(std_listener).expect("proxy: tokio listener");
                    loop {
                        tokio::select! {
                            _ = st.cancelled() => break,
                            accepted = listener.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                let n = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                                let (s2, st2) = (s.clone(), st.clone());
                                tokio::spawn(async move {
                                    tokio::select! {
                                        _ = st2.cancelled() => {}
                                        _ = serve(client, target_port, n, s2) => {}
                                    }
                                });
                            }
                        }
                    }
                });
                // Dropping the runtime drops every connection task (and its sockets).
            })
            .expect("proxy: spawn thread");
        Proxy {
            port,
            target_port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// The port popferry should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds a rule; it applies to connections accepted from now on, and to
    /// the ones already open.
    pub fn add(&self, fault: Fault) -> FaultId {
        let id = self.shared.next_rule.fetch_add(1, Ordering::SeqCst);
        let remaining = fault.times.unwrap_or(usize::MAX);
        let rule = Arc::new(Rule {
            id,
            fault,
            remaining: AtomicUsize::new(remaining),
            fired: AtomicUsize::new(0),
        });
        self.shared
            .rules
            .lock()
            .expect("proxy rules lock")
            .push(rule);
        FaultId(id)
    }

    /// Removes every rule (connections go through cleanly from now on).
    pub fn clear(&self) {
        self.shared.rules.lock().expect("proxy rules lock").clear();
    }

    /// How many times the rule has fired.
    pub fn fired(&self, id: FaultId) -> usize {
        self.shared
            .rules
            .lock()
            .expect("proxy rules lock")
            .iter()
            .find(|r| r.id == id.0)
            .map_or(0, |r| r.fired.load(Ordering::SeqCst))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// What happened (connections, faults fired), for assertion messages.
    pub fn events(&self) -> String {
        self.shared
            .events
            .lock()
            .map(|v| v.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The state of one rule within one direction of one connection.
struct Watch {
    rule: Arc<Rule>,
    /// Occurrences seen so far.
    seen: usize,
    /// Absolute position from which a new occurrence may start.
    search_from: u64,
    /// Set once the n-th occurrence was found (for LineEnd: where it ended).
    found_end: Option<u64>,
    /// The absolute firing position, once known.
    pos: Option<u64>,
}

/// One direction of one connection.
struct Flow {
    dir: Dir,
    /// Bytes already forwarded (or dropped while stalled).
    done: u64,
    /// Not yet forwarded bytes, which start at absolute position `done`.
    pending: Vec<u8>,
    /// The last bytes before `done`, for patterns that straddle reads.
    tail: Vec<u8>,
    watches: Vec<Watch>,
    stalled: bool,
    eof: bool,
}

const TAIL: usize = 256;

impl Flow {
    fn new(dir: Dir) -> Flow {
        Flow {
            dir,
            done: 0,
            pending: Vec::new(),
            tail: Vec::new(),
            watches: Vec::new(),
            stalled: false,
            eof: false,
        }
    }

    /// Picks up rules added since the last look.
    fn refresh(&mut self, shared: &Shared, conn: usize) {
        let Ok(rules) = shared.rules.lock() else {
            return;
        };
        for r in rules.iter() {
            let f = &r.fault;
            if f.dir != self.dir || f.connection.is_some_and(|k| k != conn) {
                continue;
            }
            if self.watches.iter().any(|w| w.rule.id == r.id) {
                continue;
            }
            self.watches.push(Watch {
                rule: r.clone(),
                seen: 0,
                search_from: self.done,
                found_end: None,
                pos: None,
            });
        }
        // Rules removed by `clear` stop applying.
        self.watches
            .retain(|w| rules.iter().any(|r| Arc::ptr_eq(r, &w.rule)));
    }

    /// Updates every watch with the pending bytes; returns the earliest
    /// (position, rule) that can fire now.
    fn scan(&mut self) -> Option<(u64, Arc<Rule>)> {
        let base = self.done - self.tail.len() as u64;
        let mut window = self.tail.clone();
        window.extend_from_slice(&self.pending);
        let end = base + window.len() as u64;
        for w in &mut self.watches {
            if w.pos.is_some() {
                continue;
            }
            match &w.rule.fault.trigger {
                Trigger::Bytes(n) => w.pos = Some(*n),
                Trigger::Pattern { pattern, nth, at } => {
                    if w.found_end.is_none() {
                        let mut from = w.search_from.max(base);
                        while let Some(i) = find(&window[(from - base) as usize..], pattern) {
                            let start = from + i as u64;
                            w.seen += 1;
                            from = start + 1;
                            if w.seen == *nth {
                                let stop = start + pattern.len() as u64;
                                match at {
                                    At::Start => w.pos = Some(start),
                                    At::End(extra) => w.pos = Some(stop + extra),
                                    At::LineEnd => w.found_end = Some(stop),
                                }
                                break;
                            }
                        }
                        let next = end.saturating_sub(pattern.len().saturating_sub(1) as u64);
                        w.search_from = from.max(next.min(end));
                    }
                    if let (Some(stop), None) = (w.found_end, w.pos) {
                        let from = stop.max(base);
                        if let Some(i) = window[(from - base) as usize..]
                            .iter()
                            .position(|&b| b == b'\n')
                        {
                            w.pos = Some(from + i as u64 + 1);
                        }
                    }
                }
            }
        }
        let reachable = self.done + self.pending.len() as u64;
        self.watches
            .iter()
            .filter_map(|w| w.pos.map(|p| (p, w)))
            .filter(|(p, w)| *p <= reachable && w.rule.armed())
            .min_by_key(|(p, _)| *p)
            .map(|(p, w)| (p.max(self.done), w.rule.clone()))
    }

    /// How many pending bytes may be forwarded now without passing a
    /// position that could still become a "before the pattern" trigger.
    fn forwardable(&self) -> usize {
        let mut hold = 0usize;
        for w in &self.watches {
            if !w.rule.armed() || w.pos.is_some() {
                continue;
            }
            if let Trigger::Pattern {
                pattern,
                at: At::Start,
                ..
            } = &w.rule.fault.trigger
            {
                // The longest suffix of pending that is a proper prefix of the pattern.
                let max = pattern.len().saturating_sub(1).min(self.pending.len());
                for k in (1..=max).rev() {
                    if self.pending[self.pending.len() - k..] == pattern[..k] {
                        hold = hold.max(k);
                        break;
                    }
                }
            }
        }
        self.pending.len() - hold
    }

    /// Marks `n` pending bytes as gone (forwarded or dropped).
    fn consume(&mut self, n: usize) {
        let gone: Vec<u8> = self.pending.drain(..n).collect();
        self.tail.extend_from_slice(&gone);
        if self.tail.len() > TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
        self.done += n as u64;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Step {
    Continue,
    Close,
    Reset,
}

/// Forwards what `flow` allows to `dst`, applying a rule that fires.
/// `dst` receives this direction's bytes, `src` is the other socket.
async fn pump(
    flow: &mut Flow,
    dst: &mut TcpStream,
    src: &mut TcpStream,
    shared: &Shared,
    conn: usize,
    flush_all: bool,
) -> Step {
    loop {
        if flow.stalled {
            let n = flow.pending.len();
            flow.consume(n);
            return Step::Continue;
        }
        if let Some((pos, rule)) = flow.scan()
            && rule.claim()
        {
            let upto = (pos - flow.done) as usize;
            if upto > 0 && dst.write_all(&flow.pending[..upto]).await.is_err() {
                return Step::Close;
            }
            flow.consume(upto);
            rule.fired.fetch_add(1, Ordering::SeqCst);
            shared.event(format!(
                "conn {conn}: {} {:?} at byte {pos}",
                flow.dir.arrow(),
                rule.fault.action
            ));
            match &rule.fault.action {
                Action::Close => return Step::Close,
                Action::Reset => return Step::Reset,
                Action::Stall => {
                    flow.stalled = true;
                    continue;
                }
                Action::InjectToClientAndClose(bytes) => {
                    let client = match flow.dir {
                        Dir::ClientToServer => src,
                        Dir::ServerToClient => dst,
                    };
                    let _ = client.write_all(bytes).await;
                    let _ = client.flush().await;
                    return Step::Close;
                }
            }
        }
        let n = if flush_all {
            flow.pending.len()
        } else {
            flow.forwardable()
        };
        if n > 0 && dst.write_all(&flow.pending[..n]).await.is_err() {
            return Step::Close;
        }
        flow.consume(n);
        return Step::Continue;
    }
}

async fn serve(mut client: TcpStream, target_port: u16, conn: usize, shared: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        shared.event(format!("conn {conn}: cannot connect to port {target_port}"));
        return;
    };
    shared.event(format!("conn {conn}: open"));
    let mut up = Flow::new(Dir::ClientToServer);
    let mut down = Flow::new(Dir::ServerToClient);
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    let hold_timeout = Duration::from_millis(100);
    let step = loop {
        if up.eof && down.eof {
            break Step::Close;
        }
        up.refresh(&shared, conn);
        down.refresh(&shared, conn);
        // Rules may fire on bytes already held (e.g. a rule added later).
        let holding = !up.pending.is_empty() || !down.pending.is_empty();
        enum Got {
            Client(std::io::Result<usize>),
            Server(std::io::Result<usize>),
            Idle,
        }
        let got = tokio::select! {
            r = client.read(&mut cbuf), if !up.eof => Got::Client(r),
            r = server.read(&mut sbuf), if !down.eof => Got::Server(r),
            _ = tokio::time::sleep(hold_timeout), if holding => Got::Idle,
        };
        let step = match got {
            Got::Client(Ok(0)) | Got::Client(Err(_)) => {
                up.eof = true;
                let s = pump(&mut up, &mut server, &mut client, &shared, conn, true).await;
                if !up.stalled {
                    let _ = server.shutdown().await;
                }
                // The client is gone: a stalled flow has nothing left to wait for.
                if up.stalled || down.stalled {
                    break Step::Close;
                }
                s
            }
            Got::Server(Ok(0)) | Got::Server(Err(_)) => {
                down.eof = true;
                let s = pump(&mut down, &mut client, &mut server, &shared, conn, true).await;
                if !down.stalled {
                    let _ = client.shutdown().await;
                }
                s
            }
            Got::Client(Ok(n)) => {
                up.pending.extend_from_slice(&cbuf[..n]);
                pump(&mut up, &mut server, &mut client, &shared, conn, false).await
            }
            Got::Server(Ok(n)) => {
                down.pending.extend_from_slice(&sbuf[..n]);
                pump(&mut down, &mut client, &mut server, &shared, conn, false).await
            }
            Got::Idle => {
                let a = pump(&mut up, &mut server, &mut client, &shared, conn, true).await;
                if !matches!(a, Step::Continue) {
                    a
                } else {
                    pump(&mut down, &mut client, &mut server, &shared, conn, true).await
                }
            }
        };
        match step {
            Step::Continue => {}
            other => break other,
        }
    };
    if matches!(step, Step::Reset) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    shared.event(format!("conn {conn}: closed"));
}
