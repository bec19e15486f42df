//! A tiny IMAP client for the harness (plain port, LOGIN), independent of popferry.
//!
//! It reads responses with their literals (`{n}` and literal8 `~{n}`) and
//! parses FETCH items; that is all the tests need.

use super::{Dovecot, message_id, sha256_hex};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One message as stored in the target mailbox.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub uid: u32,
    /// e.g. `["\\Seen"]`; `\Recent` is not listed (EXAMINE).
    pub flags: Vec<String>,
    /// As the server shows it, e.g. `14-Nov-2023 10:00:00 +0000`: the harness runs Dovecot with
    /// TZ=UTC, and it shows every date converted to +0000 whatever offset the APPEND gave.
    pub internal_date: String,
    /// SHA-256 (hex) of [`Fetched::bytes`].
    pub sha256_hex: String,
    /// RFC822.SIZE.
    pub size: u64,
    pub message_id: Option<String>,
    /// The stored message. Dovecot shows a NUL as 0x80 under BODY[] and decodes
    /// base64 parts under BINARY[]; this is BINARY[] when it equals BODY[] except for
    /// NULs, else BODY[] (so a message with both a NUL and a base64 part shows 0x80).
    pub bytes: Vec<u8>,
}

/// One parsed value of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Atom(String),
    /// Quoted string or literal.
    Bytes(Vec<u8>),
    List(Vec<Val>),
    Nil,
}

impl Val {
    pub fn as_str(&self) -> String {
        match self {
            Val::Atom(s) => s.clone(),
            Val::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Val::List(_) | Val::Nil => String::new(),
        }
    }
}

/// The answer to one command.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Untagged responses, raw, literals inline (`* 3 EXISTS\r\n`).
    pub untagged: Vec<Vec<u8>>,
    /// The tagged status without the tag: `OK [APPENDUID 1 2] Append completed.`
    pub status: String,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.status.starts_with("OK")
    }
}

pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// Quotes an (ASCII) IMAP string.
pub fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// If `line` (CRLF stripped) ends with `{n}`, `{n+}`, `~{n}` or `~{n+}`: n.
fn trailing_literal(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Imap {
    pub fn connect(d: &Dovecot) -> Imap {
        Imap::connect_to(&d.host, d.imap_port)
    }

    pub fn connect_to(host: &str, port: u16) -> Imap {
        let stream = TcpStream::connect((host, port))
            .unwrap_or_else(|e| panic!("IMAP connect {host}:{port}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(120))).ok();
        stream
            .set_write_timeout(Some(Duration::from_secs(120)))
            .ok();
        let writer = stream.try_clone().expect("clone TcpStream");
        let mut c = Imap {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
        };
        let greeting = c.read_response();
        assert!(
            greeting.starts_with(b"* OK"),
            "IMAP greeting: {}",
            String::from_utf8_lossy(&greeting)
        );
        c
    }

    /// Connects and LOGINs with the user's password from the instance.
    pub fn login(d: &Dovecot, user: &str) -> Imap {
        let mut c = Imap::connect(d);
        let r = c.command(&format!(
            "LOGIN {} {}",
            quote(user),
            quote(d.password(user))
        ));
        assert!(r.is_ok(), "IMAP LOGIN {user}: {}", r.status);
        c
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("h{}", self.tag)
    }

    fn read_line(&mut self, into: &mut Vec<u8>) {
        let before = into.len();
        self.reader.read_until(b'\n', into).expect("IMAP read");
        assert!(into.len() > before, "IMAP server closed the connection");
    }

    /// One whole response: a line, plus every literal it announces and the lines after.
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            self.read_line(&mut buf);
            let line = buf[start..].strip_suffix(b"\r\n").unwrap_or(&buf[start..]);
            match trailing_literal(line) {
                Some(n) => {
                    let at = buf.len();
                    buf.resize(at + n, 0);
                    self.reader
                        .read_exact(&mut buf[at..])
                        .expect("IMAP read literal");
                }
                None => return buf,
            }
        }
    }

    /// Sends `cmd` (no literals in it) and collects the reply.
    pub fn command(&mut self, cmd: &str) -> Reply {
        let tag = self.next_tag();
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .expect("IMAP write");
        self.collect(&tag)
    }

    fn collect(&mut self, tag: &str) -> Reply {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response();
            if let Some(rest) = resp.strip_prefix(prefix.as_bytes()) {
                let status = String::from_utf8_lossy(rest).trim_end().to_string();
                return Reply { untagged, status };
            }
            untagged.push(resp);
        }
    }

    /// APPEND with a synchronising literal (a literal8 when the message holds a NUL).
    /// `date` is an IMAP date-time such as `14-Nov-2023 10:00:00 +0000`.
    /// Returns the reply; the UID is in [`append_uid`].
    pub fn append(
        &mut self,
        mailbox: &str,
        msg: &[u8],
        flags: &[&str],
        date: Option<&str>,
    ) -> Reply {
        let tag = self.next_tag();
        let mut head = format!("{tag} APPEND {} ({})", quote(mailbox), flags.join(" "));
        if let Some(date) = date {
            head.push_str(&format!(" \"{date}\""));
        }
        let tilde = if msg.contains(&0) { "~" } else { "" };
        head.push_str(&format!(" {tilde}{{{}}}\r\n", msg.len()));
        self.writer.write_all(head.as_bytes()).expect("IMAP write");
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response();
            if resp.starts_with(b"+") {
                break;
            }
            if let Some(rest) = resp.strip_prefix(prefix.as_bytes()) {
                let status = String::from_utf8_lossy(rest).trim_end().to_string();
                return Reply { untagged, status };
            }
            untagged.push(resp);
        }
        self.writer.write_all(msg).expect("IMAP write literal");
        self.writer.write_all(b"\r\n").expect("IMAP write");
        let mut reply = self.collect(&tag);
        untagged.append(&mut reply.untagged);
        reply.untagged = untagged;
        reply
    }

    /// Every message of the mailbox (EXAMINE; empty if the mailbox does not exist), by UID.
    pub fn fetch_all(&mut self, mailbox: &str) -> Vec<Fetched> {
        let r = self.command(&format!("EXAMINE {}", quote(mailbox)));
        if !r.is_ok() {
            assert!(
                r.status.contains("NONEXISTENT") || r.status.contains("doesn't exist"),
                "EXAMINE {mailbox}: {}",
                r.status
            );
            return Vec::new();
        }
        let exists = r.untagged.iter().any(|u| {
            let s = String::from_utf8_lossy(u);
            s.ends_with("EXISTS\r\n") && !s.starts_with("* 0 ")
        });
        if !exists {
            return Vec::new();
        }
        let r = self.command(
            "UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[] BINARY.PEEK[])",
        );
        assert!(r.is_ok(), "UID FETCH: {}", r.status);
        let mut out: Vec<Fetched> = r.untagged.iter().filter_map(|u| parse_fetch(u)).collect();
        out.sort_by_key(|f| f.uid);
        out
    }

    /// Mailbox names from `LIST "" "*"`.
    pub fn mailboxes(&mut self) -> Vec<String> {
        let r = self.command("LIST \"\" \"*\"");
        assert!(r.is_ok(), "LIST: {}", r.status);
        r.untagged
            .iter()
            .filter(|u| u.starts_with(b"* LIST "))
            .filter_map(|u| {
                let mut p = Parser { b: &u[7..], i: 0 };
                let _attrs = p.value()?;
                let _delim = p.value()?;
                Some(p.value()?.as_str())
            })
            .collect()
    }

    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }
}

/// The UID from `OK [APPENDUID <validity> <uid>]`.
pub fn append_uid(reply: &Reply) -> Option<u32> {
    let at = reply.status.find("[APPENDUID ")?;
    let rest = &reply.status[at + 11..];
    let mut f = rest.split([' ', ']']);
    let _validity = f.next()?;
    f.next()?.parse().ok()
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.i < self.b.len() && self.b[self.i] == b' ' {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<Val> {
        self.skip_spaces();
        let c = *self.b.get(self.i)?;
        match c {
            b'(' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    if *self.b.get(self.i)? == b')' {
                        self.i += 1;
                        return Some(Val::List(items));
                    }
                    items.push(self.value()?);
                }
            }
            b'"' => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    let c = *self.b.get(self.i)?;
                    self.i += 1;
                    match c {
                        b'\\' => {
                            s.push(*self.b.get(self.i)?);
                            self.i += 1;
                        }
                        b'"' => return Some(Val::Bytes(s)),
                        _ => s.push(c),
                    }
                }
            }
            b'{' | b'~' => {
                if c == b'~' {
                    self.i += 1;
                }
                let close = self.i + self.b[self.i..].iter().position(|&b| b == b'}')?;
                let spec = std::str::from_utf8(&self.b[self.i + 1..close]).ok()?;
                let n: usize = spec.trim_end_matches('+').parse().ok()?;
                let start = close + 1 + 2; // "}\r\n"
                let bytes = self.b.get(start..start + n)?.to_vec();
                self.i = start + n;
                Some(Val::Bytes(bytes))
            }
            _ => {
                let start = self.i;
                let mut depth = 0usize;
                while let Some(&c) = self.b.get(self.i) {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
                let atom = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
                Some(if atom.eq_ignore_ascii_case("NIL") {
                    Val::Nil
                } else {
                    Val::Atom(atom)
                })
            }
        }
    }
}

/// Parses `* n FETCH (...)` into a [`Fetched`] (None for other responses or FETCHes without a body).
fn parse_fetch(resp: &[u8]) -> Option<Fetched> {
    let rest = resp.strip_prefix(b"* ")?;
    let mut p = Parser { b: rest, i: 0 };
    let _seq = p.value()?;
    if !p.value()?.as_str().eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let Val::List(items) = p.value()? else {
        return None;
    };
    let (mut uid, mut flags, mut date, mut size, mut body, mut binary) =
        (None, Vec::new(), String::new(), 0u64, None, None);
    for pair in items.chunks(2) {
        let [name, value] = pair else { break };
        match name.as_str().to_ascii_uppercase().as_str() {
            "UID" => uid = value.as_str().parse().ok(),
            "FLAGS" => {
                if let Val::List(fl) = value {
                    flags = fl
                        .iter()
                        .map(Val::as_str)
                        .filter(|f| f != "\\Recent")
                        .collect();
                }
            }
            "INTERNALDATE" => date = value.as_str(),
            "RFC822.SIZE" => size = value.as_str().parse().ok()?,
            "BODY[]" => {
                if let Val::Bytes(b) = value {
                    body = Some(b.clone());
                }
            }
            "BINARY[]" => {
                if let Val::Bytes(b) = value {
                    binary = Some(b.clone());
                }
            }
            _ => {}
        }
    }
    let body = body?;
    let bytes = match binary {
        Some(bin)
            if bin.len() == body.len()
                && bin
                    .iter()
                    .zip(&body)
                    .all(|(a, b)| a == b || (*a == 0 && *b == 0x80)) =>
        {
            bin
        }
        _ => body,
    };
    Some(Fetched {
        uid: uid?,
        flags,
        internal_date: date,
        sha256_hex: sha256_hex(&bytes),
        size,
        message_id: message_id(&bytes),
        bytes,
    })
}

/// Every message in `mailbox` of `user` (raw client, plain port); empty if the mailbox does not exist.
pub fn imap_fetch_all(d: &Dovecot, user: &str, mailbox: &str) -> Vec<Fetched> {
    let mut c = Imap::login(d, user);
    let all = c.fetch_all(mailbox);
    c.logout();
    all
}

/// APPENDs one message; returns its UID (panics on NO/BAD).
pub fn imap_append(
    d: &Dovecot,
    user: &str,
    mailbox: &str,
    msg: &[u8],
    flags: &[&str],
    date: Option<&str>,
) -> u32 {
    let mut c = Imap::login(d, user);
    let r = c.append(mailbox, msg, flags, date);
    assert!(r.is_ok(), "APPEND to {mailbox}: {}", r.status);
    c.logout();
    append_uid(&r).expect("no APPENDUID in the APPEND reply")
}

/// CREATEs a mailbox (an existing one is fine).
pub fn imap_create(d: &Dovecot, user: &str, mailbox: &str) {
    let mut c = Imap::login(d, user);
    let r = c.command(&format!("CREATE {}", quote(mailbox)));
    assert!(
        r.is_ok() || r.status.contains("ALREADYEXISTS"),
        "CREATE {mailbox}: {}",
        r.status
    );
    c.logout();
}

/// The user's mailbox names.
pub fn imap_mailboxes(d: &Dovecot, user: &str) -> Vec<String> {
    let mut c = Imap::login(d, user);
    let all = c.mailboxes();
    c.logout();
    all
}
