//! A scripted fake POP3 server, for what a real Dovecot cannot be made to do:
//! no UIDL, a UIDL listed twice, a UIDL that changes, [IN-USE] and
//! [LOGIN-DELAY] at login, a greeting that never comes, a listing that never
//! ends, a 10 MB line, LIST sizes that lie, garbage instead of replies, bare-LF
//! message data. DESIGN.md allows a fake server exactly for these.
//!
//! It serves messages from memory over plain TCP on 127.0.0.1:0 (one thread
//! per connection, blocking I/O), accepts any USER/PASS, commits DELE only at
//! QUIT like a real server, and records what it was asked ([`FakePop3::log`])
//! and how many connections it saw. Its behaviour is a [`Script`]: a normal
//! POP3 server by default, with replies overridden per command verb by a
//! [`Reply`]. Tests may change the script and the messages between runs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One message of the fake maildrop.
#[derive(Clone, Debug)]
pub struct FakeMessage {
    /// The bytes RETR serves (dot-stuffed on the wire, line ends as given).
    pub bytes: Vec<u8>,
    /// Its UIDL (`None`: the server lists `uid<internal id>`).
    pub uidl: Option<String>,
    /// The size LIST announces (`None`: the real one).
    pub list_size: Option<u64>,
    /// What RETR and TOP serve instead of `bytes` to a session that did not
    /// enable UTF8 (RFC 6856) before logging in, as Courier serves a
    /// "cannot display" notice for a message with 8-bit headers.
    pub downgraded: Option<Vec<u8>>,
    id: usize,
}

impl FakeMessage {
    pub fn new(bytes: &[u8], uidl: &str) -> FakeMessage {
        FakeMessage {
            bytes: bytes.to_vec(),
            uidl: Some(uidl.to_string()),
            list_size: None,
            downgraded: None,
            id: 0,
        }
    }
    pub fn list_size(mut self, size: u64) -> FakeMessage {
        self.list_size = Some(size);
        self
    }
    /// Served instead of the message unless the session sent UTF8.
    pub fn downgraded(mut self, notice: &[u8]) -> FakeMessage {
        self.downgraded = Some(notice.to_vec());
        self
    }
}

/// How the server answers one command (or greets).
#[derive(Clone, Debug)]
pub enum Reply {
    /// These bytes, then carry on.
    Raw(Vec<u8>),
    /// These bytes, then nothing ever again (the socket stays open until the
    /// client closes it).
    Silent(Vec<u8>),
    /// `head`, then `line` repeated until the client goes away.
    Endless { head: Vec<u8>, line: Vec<u8> },
    /// These bytes, then close the connection.
    Close(Vec<u8>),
    /// These bytes, `chunk` at a time with a pause of `every` before each
    /// (a server that trickles, each read just within the client's timeout),
    /// then carry on.
    Trickle {
        bytes: Vec<u8>,
        chunk: usize,
        every: Duration,
    },
}

impl Reply {
    pub fn raw(s: &str) -> Reply {
        Reply::Raw(s.as_bytes().to_vec())
    }
}

/// The server's behaviour.
#[derive(Clone, Debug)]
pub struct Script {
    /// `None`: `+OK fake POP3 server ready`.
    pub greeting: Option<Reply>,
    /// Lines of the CAPA reply (`None`: CAPA answers -ERR).
    pub capa: Option<Vec<String>>,
    /// Replies that replace the normal answer to a verb (`"PASS"`, `"UIDL"`, ...).
    pub overrides: Vec<(String, Reply)>,
    /// TOP is answered (else -ERR).
    pub top: bool,
    /// RETR and TOP data lines and the terminator end in a bare LF.
    pub lf_only_data: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: None,
            capa: Some(
                ["USER", "UIDL", "TOP", "RESP-CODES"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            overrides: Vec::new(),
            top: true,
            lf_only_data: false,
        }
    }
}

impl Script {
    /// Replaces the answer to `verb` (upper case) with `reply`.
    pub fn on(mut self, verb: &str, reply: Reply) -> Script {
        self.overrides.retain(|(v, _)| v != verb);
        self.overrides.push((verb.to_string(), reply));
        self
    }
    pub fn greeting(mut self, reply: Reply) -> Script {
        self.greeting = Some(reply);
        self
    }
}

#[derive(Default)]
struct State {
    script: Mutex<Script>,
    messages: Mutex<Vec<FakeMessage>>,
    next_id: AtomicUsize,
    connections: AtomicUsize,
    log: Mutex<Vec<String>>,
    stop: AtomicBool,
}

pub struct FakePop3 {
    port: u16,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl FakePop3 {
    /// Starts serving `messages` with `script` on 127.0.0.1:0.
    pub fn start(script: Script, messages: Vec<FakeMessage>) -> FakePop3 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake POP3: bind");
        listener
            .set_nonblocking(true)
            .expect("fake POP3: non-blocking listener");
        let port = listener.local_addr().expect("fake POP3: addr").port();
        let state = Arc::new(State::default());
        *state.script.lock().expect("lock") = script;
        let mut fake = FakePop3 {
            port,
            state: state.clone(),
            thread: None,
        };
        fake.set_messages(messages);
        let thread = std::thread::spawn(move || {
            while !state.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        state.connections.fetch_add(1, Ordering::SeqCst);
                        let st = state.clone();
                        std::thread::spawn(move || {
                            let _ = session(stream, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        fake.thread = Some(thread);
        fake
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the maildrop.
    pub fn set_messages(&self, messages: Vec<FakeMessage>) {
        let mut m = self.state.messages.lock().expect("lock");
        *m = messages
            .into_iter()
            .map(|mut msg| {
                msg.id = self.state.next_id.fetch_add(1, Ordering::SeqCst) + 1;
                msg
            })
            .collect();
    }

    /// Changes the messages in place (e.g. a UIDL), keeping their identity.
    pub fn edit_messages(&self, f: impl FnOnce(&mut Vec<FakeMessage>)) {
        f(&mut self.state.messages.lock().expect("lock"));
    }

    /// The maildrop now (after committed deletions).
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.state.messages.lock().expect("lock").clone()
    }

    pub fn set_script(&self, script: Script) {
        *self.state.script.lock().expect("lock") = script;
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every command line received (PASS shown without its argument).
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().expect("lock").clone()
    }

    /// How many received commands start with `verb`.
    pub fn count(&self, verb: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.split(' ').next() == Some(verb))
            .count()
    }
}

impl Drop for FakePop3 {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Dot-stuffs `msg` and ends it with the terminator (`eol` line ends added
/// where the message lacks a final one).
fn multiline(msg: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_start = true;
    for &b in msg {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !at_start {
        out.extend_from_slice(eol);
    }
    out.push(b'.');
    out.extend_from_slice(eol);
    out
}

fn header_part(msg: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < msg.len() {
        let end = msg[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |p| i + p + 1);
        let line = &msg[i..end];
        if line == b"\r\n" || line == b"\n" {
            return &msg[..end];
        }
        i = end;
    }
    msg
}

/// Plays a [`Reply`]; `Ok(false)` when the session is over.
fn play(stream: &mut TcpStream, reply: &Reply, state: &State) -> std::io::Result<bool> {
    match reply {
        Reply::Raw(b) => {
            stream.write_all(b)?;
            Ok(true)
        }
        Reply::Close(b) => {
            stream.write_all(b)?;
            Ok(false)
        }
        Reply::Trickle {
            bytes,
            chunk,
            every,
        } => {
            for piece in bytes.chunks((*chunk).max(1)) {
                if state.stop.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                std::thread::sleep(*every);
                stream.write_all(piece)?;
                stream.flush()?;
            }
            Ok(true)
        }
        Reply::Silent(b) => {
            stream.write_all(b)?;
            // Wait for the client to give up (or the server to stop).
            let mut sink = [0u8; 4096];
            while !state.stop.load(Ordering::SeqCst) {
                match stream.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            Ok(false)
        }
        Reply::Endless { head, line } => {
            stream.write_all(head)?;
            let chunk: Vec<u8> = line
                .iter()
                .copied()
                .cycle()
                .take(line.len() * (64 * 1024 / line.len().max(1)).max(1))
                .collect();
            while !state.stop.load(Ordering::SeqCst) {
                stream.write_all(&chunk)?;
            }
            Ok(false)
        }
    }
}

fn session(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let script = state.script.lock().map(|s| s.clone()).unwrap_or_default();
    // The maildrop as this session sees it (like a lock taken at login).
    let snapshot = state.messages.lock().map(|m| m.clone()).unwrap_or_default();
    let mut deleted: Vec<usize> = Vec::new();
    // RFC 6856: UTF8 is valid in the AUTHORIZATION state only.
    let mut logged_in = false;
    let mut utf8 = false;
    let announces_utf8 = script
        .capa
        .as_ref()
        .is_some_and(|c| c.iter().any(|l| l.split(' ').next() == Some("UTF8")));
    let greeting = script
        .greeting
        .clone()
        .unwrap_or_else(|| Reply::raw("+OK fake POP3 server ready\r\n"));
    if !play(&mut stream, &greeting, state)? {
        return Ok(());
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let eol: &[u8] = if script.lf_only_data { b"\n" } else { b"\r\n" };
    let mut line = Vec::new();
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                // Keep any partial line; wait for the rest.
                continue;
            }
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        line.clear();
        let mut words = text.split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg1 = words.next().and_then(|s| s.parse::<usize>().ok());
        let arg2 = words.next().and_then(|s| s.parse::<usize>().ok());
        let shown = if verb == "PASS" {
            "PASS ***".to_string()
        } else {
            text.clone()
        };
        if let Ok(mut log) = state.log.lock() {
            log.push(shown);
        }
        if let Some((_, reply)) = script.overrides.iter().find(|(v, _)| *v == verb) {
            if !play(&mut stream, reply, state)? {
                return Ok(());
            }
            if verb == "PASS" {
                logged_in = true;
            }
            continue;
        }
        let served = |m: &FakeMessage| -> Vec<u8> {
            match &m.downgraded {
                Some(notice) if !utf8 => notice.clone(),
                _ => m.bytes.clone(),
            }
        };
        let live = |n: Option<usize>| -> Option<&FakeMessage> {
            let n = n?;
            let m = snapshot.get(n.checked_sub(1)?)?;
            (!deleted.contains(&n)).then_some(m)
        };
        let mut out: Vec<u8> = Vec::new();
        match verb.as_str() {
            "CAPA" => match &script.capa {
                Some(lines) => {
                    out.extend_from_slice(b"+OK capabilities\r\n");
                    for l in lines {
                        out.extend_from_slice(l.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b".\r\n");
                }
                None => out.extend_from_slice(b"-ERR unknown command\r\n"),
            },
            "USER" | "NOOP" => out.extend_from_slice(b"+OK\r\n"),
            "PASS" => {
                logged_in = true;
                out.extend_from_slice(b"+OK\r\n");
            }
            "UTF8" if announces_utf8 && !logged_in => {
                utf8 = true;
                out.extend_from_slice(b"+OK UTF8 enabled\r\n");
            }
            "RSET" => {
                deleted.clear();
                out.extend_from_slice(b"+OK\r\n");
            }
            "STAT" => {
                let (n, size) = snapshot
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !deleted.contains(&(i + 1)))
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.bytes.len()));
                out.extend_from_slice(format!("+OK {n} {size}\r\n").as_bytes());
            }
            "LIST" | "UIDL" if arg1.is_none() => {
                out.extend_from_slice(b"+OK\r\n");
                for (i, m) in snapshot.iter().enumerate() {
                    if deleted.contains(&(i + 1)) {
                        continue;
                    }
                    let value = if verb == "LIST" {
                        m.list_size.unwrap_or(m.bytes.len() as u64).to_string()
                    } else {
                        m.uidl.clone().unwrap_or_else(|| format!("uid{}", m.id))
                    };
                    out.extend_from_slice(format!("{} {value}\r\n", i + 1).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            "LIST" | "UIDL" => match live(arg1) {
                Some(m) => {
                    let value = if verb == "LIST" {
                        m.list_size.unwrap_or(m.bytes.len() as u64).to_string()
                    } else {
                        m.uidl.clone().unwrap_or_else(|| format!("uid{}", m.id))
                    };
                    out.extend_from_slice(
                        format!("+OK {} {value}\r\n", arg1.unwrap_or(0)).as_bytes(),
                    );
                }
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "RETR" => match live(arg1) {
                Some(m) => {
                    let bytes = served(m);
                    out.extend_from_slice(format!("+OK {} octets", bytes.len()).as_bytes());
                    out.extend_from_slice(eol);
                    out.extend_from_slice(&multiline(&bytes, eol));
                }
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "TOP" if script.top => match (live(arg1), arg2) {
                (Some(m), Some(0)) => {
                    out.extend_from_slice(b"+OK");
                    out.extend_from_slice(eol);
                    out.extend_from_slice(&multiline(header_part(&served(m)), eol));
                }
                (Some(m), Some(_)) => {
                    // More lines than the tests need: the whole message.
                    out.extend_from_slice(b"+OK");
                    out.extend_from_slice(eol);
                    out.extend_from_slice(&multiline(&served(m), eol));
                }
                _ => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "DELE" => match live(arg1) {
                Some(_) => {
                    deleted.push(arg1.unwrap_or(0));
                    out.extend_from_slice(b"+OK marked\r\n");
                }
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "QUIT" => {
                let gone: Vec<usize> = deleted
                    .iter()
                    .filter_map(|n| snapshot.get(n - 1).map(|m| m.id))
                    .collect();
                if let Ok(mut all) = state.messages.lock() {
                    all.retain(|m| !gone.contains(&m.id));
                }
                stream.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        stream.write_all(&out)?;
    }
}

/// Numbered fake messages from corpus kinds, UIDLs `u1`, `u2`, ...
pub fn numbered(kinds: &[&str]) -> Vec<FakeMessage> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| FakeMessage::new(&super::corpus::corpus_kind(k), &format!("u{}", i + 1)))
        .collect()
}

/// A config for account `name`: POP3 from the fake (plain, loopback), IMAP
/// into the real Dovecot's `dave` (plain port), timeout 2s.
pub fn config(d: &super::Dovecot, fake: &FakePop3, name: &str) -> super::ConfigBuilder {
    super::ConfigBuilder::new(d, "alice", "dave")
        .name(name)
        .source_tls(super::Tls::None)
        .source_port(Some(fake.port()))
        .target_tls(super::Tls::None)
        .timeout("2s")
}
