//! Client tests against an in-process scripted server (a `tokio::io::duplex`
//! pipe or a 127.0.0.1 listener): the conversation, error classification,
//! streaming and the poison rule. Wire-format tests live beside the code in
//! `proto`. This file is the scripted server; the tests are in the files
//! below, one per part of the conversation.

mod connect;
mod login;
mod oauth;
mod pipeline;
mod transaction;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use super::*;
use crate::config::{Pop3Auth, ServerSettings};
use crate::net::{Endpoint, TlsMode};

const PASSWORD: &str = "s3cr3t-pa55";

enum Step {
    /// The server sends these bytes.
    Send(Vec<u8>),
    /// The server sends these bytes one at a time.
    Trickle(Vec<u8>),
    /// The server expects this command line (without CRLF).
    Expect(String),
    /// The server expects the client to close the connection.
    Eof,
    /// The server never says anything again.
    Hang,
    /// The server sends these bytes one at a time, waiting this long
    /// before each (a trickle; use with paused time).
    Slowly(Vec<u8>, Duration),
}

fn s(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}
fn c(line: impl Into<String>) -> Step {
    Step::Expect(line.into())
}

async fn run_script<T>(io: T, steps: Vec<Step>) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(io);
    let mut r = BufReader::new(r);
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Send(b) => w
                .write_all(&b)
                .await
                .map_err(|e| format!("step {i}: {e}"))?,
            Step::Trickle(b) => {
                for byte in b {
                    w.write_all(&[byte]).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())?;
                    tokio::task::yield_now().await;
                }
            }
            Step::Expect(want) => {
                let mut got = Vec::new();
                r.read_until(b'\n', &mut got)
                    .await
                    .map_err(|e| format!("step {i}: {e}"))?;
                let want = format!("{want}\r\n");
                if got != want.as_bytes() {
                    return Err(format!(
                        "step {i}: expected {want:?}, got {:?}",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            Step::Eof => {
                let mut got = Vec::new();
                r.read_until(b'\n', &mut got)
                    .await
                    .map_err(|e| e.to_string())?;
                if !got.is_empty() {
                    return Err(format!(
                        "step {i}: expected EOF, got {:?}",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            Step::Hang => std::future::pending::<()>().await,
            Step::Slowly(b, every) => {
                for byte in b {
                    tokio::time::sleep(every).await;
                    w.write_all(&[byte]).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
    w.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A scripted server on one end of a pipe; the client gets the other end.
fn scripted(steps: Vec<Step>) -> (tokio::io::DuplexStream, JoinHandle<Result<(), String>>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let handle = tokio::spawn(run_script(server, steps));
    (client, handle)
}

fn settings(auth: Pop3Auth, allow_plaintext: bool) -> ServerSettings<Pop3Auth> {
    ServerSettings {
        endpoint: Endpoint {
            host: "pop.test".into(),
            port: 110,
            tls: TlsMode::None,
            ca_file: None,
            tls_fingerprint: None,
            timeout: Duration::from_secs(5),
        },
        username: "me".into(),
        password: PASSWORD.into(),
        auth,
        allow_plaintext_password: allow_plaintext,
        oauth2: None,
    }
}

/// Greeting, CAPA with USER, USER/PASS accepted.
fn user_login() -> Vec<Step> {
    vec![
        s("+OK POP3 ready\r\n"),
        c("CAPA"),
        s(
            "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n.\r\n",
        ),
        c("USER me"),
        s("+OK\r\n"),
        c(format!("PASS {PASSWORD}")),
        s("+OK Logged in.\r\n"),
    ]
}

fn with(mut a: Vec<Step>, b: Vec<Step>) -> Vec<Step> {
    a.extend(b);
    a
}

async fn session(
    steps: Vec<Step>,
) -> (
    Session<tokio::io::DuplexStream>,
    JoinHandle<Result<(), String>>,
) {
    let (io, server) = scripted(steps);
    let sess = Session::establish(io, false, &settings(Pop3Auth::Auto, true))
        .await
        .unwrap();
    (sess, server)
}

async fn listener_with(steps: Vec<Step>) -> (u16, JoinHandle<Result<(), String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.map_err(|e| e.to_string())?;
        run_script(sock, steps).await
    });
    (port, handle)
}

fn loopback(port: u16, tls: TlsMode) -> ServerSettings<Pop3Auth> {
    let mut set = settings(Pop3Auth::Auto, true);
    set.endpoint.host = "127.0.0.1".into();
    set.endpoint.port = port;
    set.endpoint.tls = tls;
    set
}
