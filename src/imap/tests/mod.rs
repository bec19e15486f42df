//! Unit tests of `imap`: the sans-IO protocol on scripted bytes
//! (`proto.rs`), and the connection, login, mailbox and lookup commands and
//! the APPEND pipeline against a scripted server on an in-memory duplex
//! (`conn.rs`, `pipeline.rs`). No network.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::caps::Capabilities;
use super::conn::Conn;
use crate::config::{ImapAuth, ServerSettings};
use crate::net::{Endpoint, TlsMode};

mod auth;
mod conn;
mod pipeline;
mod proto;

/// One step of a scripted server.
pub(super) enum Step {
    /// Expect exactly this line from the client (CRLF added here).
    Expect(&'static str),
    /// Expect exactly these bytes (a literal's content).
    ExpectBytes(Vec<u8>),
    /// Send this to the client.
    Send(&'static str),
    /// Send this many bytes of `x` (no CRLF).
    Flood(usize),
    /// Close the connection.
    Close,
}
pub(super) use Step::*;

pub(super) type Server = tokio::task::JoinHandle<Result<(), String>>;

/// Runs `script` as the server side; returns an error naming the first mismatch.
pub(super) fn fake(script: Vec<Step>) -> (DuplexStream, Server) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let handle = tokio::spawn(async move {
        let mut server = BufReader::new(server);
        for step in script {
            match step {
                Expect(want) => {
                    let mut got = Vec::new();
                    server
                        .read_until(b'\n', &mut got)
                        .await
                        .map_err(|e| e.to_string())?;
                    let want = format!("{want}\r\n");
                    if got != want.as_bytes() {
                        return Err(format!(
                            "expected {want:?}, got {:?}",
                            String::from_utf8_lossy(&got)
                        ));
                    }
                }
                ExpectBytes(want) => {
                    let mut got = vec![0u8; want.len()];
                    server
                        .read_exact(&mut got)
                        .await
                        .map_err(|e| e.to_string())?;
                    if got != want {
                        return Err(format!(
                            "literal differs: {:?}",
                            String::from_utf8_lossy(&got)
                        ));
                    }
                }
                Send(text) => {
                    server
                        .get_mut()
                        .write_all(text.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Flood(n) => {
                    let junk = vec![b'x'; n];
                    // The client may give up and hang up half-way.
                    let _ = server.get_mut().write_all(&junk).await;
                }
                Close => return Ok(()),
            }
        }
        // Keep the connection open until the client is done.
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        Ok(())
    });
    (client, handle)
}

pub(super) fn conn(stream: DuplexStream, caps: &[&str]) -> Conn<DuplexStream> {
    let mut c = Conn::new(stream, "imap.test:143".into(), Duration::from_secs(5));
    c.caps = Capabilities::from_names(caps);
    c
}

pub(super) fn settings(auth: ImapAuth, password: &str) -> ServerSettings<ImapAuth> {
    ServerSettings {
        endpoint: Endpoint {
            host: "imap.test".into(),
            port: 143,
            tls: TlsMode::None,
            ca_file: None,
            tls_fingerprint: None,
            timeout: Duration::from_secs(5),
        },
        username: "alice".into(),
        password: password.into(),
        auth,
        allow_plaintext_password: true,
        oauth2: None,
    }
}

pub(super) async fn finish(c: Conn<DuplexStream>, h: Server) {
    drop(c);
    h.await.expect("server task").expect("server script");
}
