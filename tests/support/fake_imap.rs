//! A scripted fake IMAP server, only for refusals a real Dovecot cannot be
//! made to give on demand: a plain `NO` (no response code) or `NO [LIMIT]`
//! for one particular message while the others are taken. (OVERQUOTA, BYE and
//! vanished mailboxes are tested against the real Dovecot.)
//!
//! It speaks just enough IMAP4rev1 for popferry: greeting with capabilities
//! (LITERAL+, UIDPLUS), LOGIN, CAPABILITY, STATUS, CREATE, LIST, SELECT /
//! EXAMINE, UID SEARCH (always empty), UID FETCH, NOOP, LOGOUT and APPEND with
//! synchronising or non-synchronising literals. Appended messages are kept in
//! memory ([`FakeImap::stored`]); an APPEND whose message contains a marker
//! from the [`FakeImap::refuse`] list is answered with that rule's text and
//! counted ([`FakeImap::attempts`]). Plain TCP on 127.0.0.1:0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const CAPS: &str = "IMAP4rev1 LITERAL+ UIDPLUS";

struct Refusal {
    marker: Vec<u8>,
    /// What follows the tag, e.g. `NO [LIMIT] Message too large`.
    answer: String,
    attempts: AtomicUsize,
}

#[derive(Default)]
struct State {
    stored: Mutex<Vec<Vec<u8>>>,
    refusals: Mutex<Vec<Arc<Refusal>>>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct FakeImap {
    port: u16,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl FakeImap {
    pub fn start() -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake IMAP: bind");
        listener
            .set_nonblocking(true)
            .expect("fake IMAP: non-blocking listener");
        let port = listener.local_addr().expect("fake IMAP: addr").port();
        let state = Arc::new(State::default());
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        st.connections.fetch_add(1, Ordering::SeqCst);
                        let s = st.clone();
                        std::thread::spawn(move || {
                            let _ = session(stream, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeImap {
            port,
            state,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers every APPEND of a message containing `marker` with
    /// `<tag> <answer>` (e.g. `NO [LIMIT] too large`) instead of storing it.
    pub fn refuse(&self, marker: &[u8], answer: &str) {
        self.state
            .refusals
            .lock()
            .expect("lock")
            .push(Arc::new(Refusal {
                marker: marker.to_vec(),
                answer: answer.to_string(),
                attempts: AtomicUsize::new(0),
            }));
    }

    /// How many APPENDs of messages containing `marker` were refused.
    pub fn attempts(&self, marker: &[u8]) -> usize {
        self.state
            .refusals
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.marker == marker)
            .map(|r| r.attempts.load(Ordering::SeqCst))
            .sum()
    }

    /// Every stored message, in APPEND order.
    pub fn stored(&self) -> Vec<Vec<u8>> {
        self.state.stored.lock().expect("lock").clone()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeImap {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `{n}`, `{n+}`, `~{n}` or `~{n+}` at the end of a line: (n, synchronising).
fn literal_at_end(line: &str) -> Option<(usize, bool)> {
    let body = line.strip_suffix('}')?;
    let open = body.rfind('{')?;
    let spec = &body[open + 1..];
    let (digits, sync) = match spec.strip_suffix('+') {
        Some(d) => (d, false),
        None => (spec, true),
    };
    Some((digits.parse().ok()?, sync))
}

/// The first quoted string or atom after `skip` words.
fn arg(line: &str, skip: usize) -> String {
    let rest = line.splitn(skip + 1, ' ').nth(skip).unwrap_or("");
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next().unwrap_or("").to_string()
    } else {
        rest.split(' ').next().unwrap_or("").to_string()
    }
}

fn session(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(format!("* OK [CAPABILITY {CAPS}] fake IMAP ready\r\n").as_bytes())?;
    let mut line = String::new();
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        line.clear();
        let mut raw = Vec::new();
        if r.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        line.push_str(String::from_utf8_lossy(&raw).trim_end());
        let tag = line.split(' ').next().unwrap_or("*").to_string();
        let cmd = line.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
        let sub = line.split(' ').nth(2).unwrap_or("").to_ascii_uppercase();
        let count = state.stored.lock().map(|s| s.len()).unwrap_or(0);
        let reply = match cmd.as_str() {
            "CAPABILITY" => format!("* CAPABILITY {CAPS}\r\n{tag} OK done\r\n"),
            "LOGIN" => format!("{tag} OK [CAPABILITY {CAPS}] logged in\r\n"),
            "NOOP" | "CREATE" => format!("{tag} OK done\r\n"),
            "LOGOUT" => {
                w.write_all(format!("* BYE bye\r\n{tag} OK done\r\n").as_bytes())?;
                return Ok(());
            }
            "STATUS" => {
                let mbox = arg(&line, 2);
                format!("* STATUS \"{mbox}\" (MESSAGES {count} UIDVALIDITY 1)\r\n{tag} OK done\r\n")
            }
            "LIST" => format!("* LIST () \"/\" \"INBOX\"\r\n{tag} OK done\r\n"),
            "SELECT" | "EXAMINE" => format!(
                "* {count} EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT {}] ok\r\n{tag} OK done\r\n",
                count + 1
            ),
            "UID" if sub == "SEARCH" => format!("* SEARCH\r\n{tag} OK done\r\n"),
            "UID" => format!("{tag} OK done\r\n"),
            "APPEND" => {
                let Some((n, sync)) = literal_at_end(&line) else {
                    w.write_all(format!("{tag} BAD no literal\r\n").as_bytes())?;
                    continue;
                };
                if sync {
                    w.write_all(b"+ go ahead\r\n")?;
                }
                let mut msg = vec![0u8; n];
                r.read_exact(&mut msg)?;
                let mut rest = Vec::new();
                r.read_until(b'\n', &mut rest)?;
                let refusal = state.refusals.lock().ok().and_then(|rs| {
                    rs.iter()
                        .find(|x| msg.windows(x.marker.len()).any(|w| w == x.marker))
                        .cloned()
                });
                match refusal {
                    Some(x) => {
                        x.attempts.fetch_add(1, Ordering::SeqCst);
                        format!("{tag} {}\r\n", x.answer)
                    }
                    None => {
                        let uid = {
                            let mut s = state.stored.lock().expect("lock");
                            s.push(msg);
                            s.len()
                        };
                        format!("{tag} OK [APPENDUID 1 {uid}] stored\r\n")
                    }
                }
            }
            _ => format!("{tag} BAD unknown command\r\n"),
        };
        w.write_all(reply.as_bytes())?;
    }
}
