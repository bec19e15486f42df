//! A tiny POP3 client for the harness (plain port, USER/PASS), independent of popferry.

use super::Dovecot;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    /// Connects to the plain POP3 port and reads the greeting.
    pub fn connect(d: &Dovecot) -> Pop3 {
        Pop3::connect_to(&d.host, d.pop3_port)
    }

    pub fn connect_to(host: &str, port: u16) -> Pop3 {
        let stream = TcpStream::connect((host, port))
            .unwrap_or_else(|e| panic!("POP3 connect {host}:{port}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        stream.set_write_timeout(Some(Duration::from_secs(60))).ok();
        let writer = stream.try_clone().expect("clone TcpStream");
        let mut p = Pop3 {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = p.read_line();
        assert!(
            greeting.starts_with(b"+OK"),
            "POP3 greeting: {}",
            String::from_utf8_lossy(&greeting)
        );
        p
    }

    /// Connects and logs in with USER/PASS (the user's password from the instance).
    pub fn login(d: &Dovecot, user: &str) -> Pop3 {
        let mut p = Pop3::connect(d);
        p.ok(&format!("USER {user}"));
        p.ok(&format!("PASS {}", d.password(user)));
        p
    }

    fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("POP3 read");
        assert!(!line.is_empty(), "POP3 server closed the connection");
        line
    }

    /// Sends one command; returns the status line (`+OK ...` or `-ERR ...`), CRLF stripped.
    pub fn command(&mut self, cmd: &str) -> String {
        self.writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .expect("POP3 write");
        let line = self.read_line();
        String::from_utf8_lossy(&line).trim_end().to_string()
    }

    /// Sends one command that must succeed; returns its status line.
    pub fn ok(&mut self, cmd: &str) -> String {
        let reply = self.command(cmd);
        let shown = if cmd.starts_with("PASS") {
            "PASS ***"
        } else {
            cmd
        };
        assert!(reply.starts_with("+OK"), "POP3 {shown}: {reply}");
        reply
    }

    /// Sends a command with a multi-line answer; returns the body, dot-unstuffed,
    /// without the final "." line (lines keep their CRLF).
    pub fn multiline(&mut self, cmd: &str) -> Vec<u8> {
        self.ok(cmd);
        let mut body = Vec::new();
        loop {
            let line = self.read_line();
            if line == b".\r\n" || line == b".\n" {
                return body;
            }
            let content = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            body.extend_from_slice(content);
        }
    }

    /// UIDL: unique ids in message-number order.
    pub fn uidl(&mut self) -> Vec<String> {
        let body = self.multiline("UIDL");
        String::from_utf8_lossy(&body)
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace();
                let _n = f.next();
                f.next().expect("UIDL line without uid").to_string()
            })
            .collect()
    }

    /// LIST: (message number, size).
    pub fn list(&mut self) -> Vec<(u32, u64)> {
        let body = self.multiline("LIST");
        String::from_utf8_lossy(&body)
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace();
                let n = f.next().and_then(|s| s.parse().ok()).expect("LIST number");
                let size = f.next().and_then(|s| s.parse().ok()).expect("LIST size");
                (n, size)
            })
            .collect()
    }

    /// RETR n, dot-unstuffed.
    pub fn retr(&mut self, n: u32) -> Vec<u8> {
        self.multiline(&format!("RETR {n}"))
    }

    pub fn dele(&mut self, n: u32) {
        self.ok(&format!("DELE {n}"));
    }

    /// QUIT (commits DELEs).
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
    }
}
