//! One POP3 connection: the stream, a fixed-size read buffer, deadlines.
//!
//! Why this layer: [`super::proto`] knows the bytes but does no I/O, and
//! [`super::client`] knows the conversation but should not care how bytes
//! arrive. Here every read and write runs under the server's timeout (a
//! server that stops answering must never hang a sync), end of stream
//! becomes a clean error, and the read buffer has a fixed size: status and
//! listing lines are bounded, and message data is decoded chunk by chunk
//! straight out of that buffer (guarantee 6: memory does not grow with a
//! message).
//!
//! Once a reply fails halfway (timeout, EOF, malformed line) or a message
//! body is abandoned, nobody knows where the server's next reply starts: the
//! connection is then *poisoned* and refuses every further command instead
//! of misreading message bytes as replies.

use std::time::Duration;

use secrecy::zeroize::Zeroizing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{Pop3Error, Pop3ErrorKind};
use super::proto::{self, Command, DotDecoder, ProtoError, Status};
use crate::deadline;

/// Size of the read buffer; also the largest chunk of message data handed
/// out at once. Must exceed the longest bounded line.
const READ_BUF: usize = 64 * 1024;

const _: () = assert!(READ_BUF > proto::MAX_STATUS_LINE + 2);

/// The least throughput a reply must keep, in bytes a second: a reply of
/// `n` bytes may take the timeout plus `n / MIN_RATE` seconds of waiting on
/// the server in all, however it trickles (a byte just before each read's
/// deadline would otherwise hold a pass forever). 16 KiB/s: a 50 MB message
/// has about 53 minutes.
pub const MIN_RATE: u64 = 16 * 1024;

pub struct Connection<S> {
    stream: S,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Decoded message data of the last chunk.
    out: Vec<u8>,
    server: String,
    timeout: Duration,
    poisoned: bool,
    /// The reply being read (from its status line to its end): the time
    /// spent waiting for the server, and the bytes it sent. Time the caller
    /// spends between two reads (say the IMAP side's back-pressure) does
    /// not count against the server.
    reply_waited: Duration,
    reply_bytes: u64,
}

impl<S> Connection<S> {
    /// The server as `host:port`, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Marks the connection out of step; every later command fails.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Changes the deadline for every later read and write.
    #[cfg(test)]
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// An error of `kind` on this connection's server.
    pub fn error(&self, kind: Pop3ErrorKind) -> Pop3Error {
        Pop3Error::new(self.server.as_str(), kind)
    }

    /// Fails with [`Pop3ErrorKind::Poisoned`] once the connection is out of
    /// step.
    pub fn check(&self) -> Result<(), Pop3Error> {
        if self.poisoned {
            Err(self.error(Pop3ErrorKind::Poisoned))
        } else {
            Ok(())
        }
    }

    /// A malformed reply: the connection is out of step from here.
    fn protocol(&mut self, e: ProtoError) -> Pop3Error {
        self.poisoned = true;
        self.error(Pop3ErrorKind::Protocol {
            what: e.to_string(),
        })
    }

    /// Gives the stream back, e.g. to start TLS after STLS. Refuses when the
    /// server sent bytes beyond the last reply: they were sent in the clear
    /// and must not be taken as if they came over TLS (the STARTTLS command
    /// injection class of bugs).
    pub fn into_inner(self) -> Result<S, Pop3Error> {
        if self.start != self.end || self.poisoned {
            return Err(Pop3Error::new(
                self.server,
                Pop3ErrorKind::Protocol {
                    what: "unexpected bytes after the STLS reply, before TLS started".into(),
                },
            ));
        }
        Ok(self.stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    pub fn new(stream: S, server: String, timeout: Duration) -> Connection<S> {
        Connection {
            stream,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::new(),
            server,
            timeout,
            poisoned: false,
            reply_waited: Duration::ZERO,
            reply_bytes: 0,
        }
    }

    /// How long the next read may wait: the timeout, or less when the reply
    /// is near the end of its allowance (timeout + bytes / [`MIN_RATE`]).
    fn read_limit(&self) -> Duration {
        let earned = Duration::from_secs_f64(self.reply_bytes as f64 / MIN_RATE as f64);
        let allowance = self.timeout.saturating_add(earned);
        allowance
            .saturating_sub(self.reply_waited)
            .min(self.timeout)
    }

    /// Sends one command. Secret-bearing commands are logged by name only
    /// and their encoded bytes are wiped afterwards.
    pub async fn send(&mut self, cmd: &Command<'_>) -> Result<(), Pop3Error> {
        self.check()?;
        let mut line = Zeroizing::new(Vec::with_capacity(64));
        cmd.encode(&mut line)
            .map_err(|e| self.cannot_encode(cmd, &e))?;
        // The Debug form of a command redacts secrets.
        tracing::debug!(server = %self.server, "C: {cmd:?}");
        self.write_all(&line).await
    }

    /// Sends several commands in one write (RFC 2449 PIPELINING): the caller
    /// has checked that the server pipelines and bounds how many go at once.
    /// Secret-bearing commands are refused here: only TRANSACTION commands
    /// are ever pipelined.
    pub async fn send_batch(&mut self, cmds: &[Command<'_>]) -> Result<(), Pop3Error> {
        self.check()?;
        let mut out = Vec::with_capacity(cmds.len().saturating_mul(16));
        for cmd in cmds {
            if cmd.is_sensitive() {
                return Err(self.error(Pop3ErrorKind::Unsupported {
                    what: format!("{} is never pipelined", cmd.name()),
                }));
            }
            cmd.encode(&mut out)
                .map_err(|e| self.cannot_encode(cmd, &e))?;
            tracing::debug!(server = %self.server, "C: {cmd:?} (pipelined)");
        }
        self.write_all(&out).await
    }

    fn cannot_encode(&self, cmd: &Command<'_>, e: &ProtoError) -> Pop3Error {
        self.error(Pop3ErrorKind::Unsupported {
            what: format!("cannot send {}: {e}", cmd.name()),
        })
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), Pop3Error> {
        const WHAT: &str = "sending a command";
        let (stream, server, timeout) = (&mut self.stream, self.server.as_str(), self.timeout);
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        let written = deadline::within(
            timeout,
            async {
                write.await.map_err(|source| {
                    Pop3Error::new(server, Pop3ErrorKind::Io { what: WHAT, source })
                })
            },
            || {
                Pop3Error::new(
                    server,
                    Pop3ErrorKind::Timeout {
                        what: WHAT,
                        timeout,
                    },
                )
            },
        )
        .await;
        if written.is_err() {
            self.poisoned = true;
        }
        written
    }

    /// Reads more bytes into the buffer, under the timeout. End of stream is
    /// [`Pop3Error::Closed`].
    async fn fill(&mut self, what: &'static str) -> Result<(), Pop3Error> {
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end >= self.buf.len() && self.start > 0 {
            if self.buf.get(self.start..self.end).is_none() {
                // Cannot happen: start <= end <= buf.len() always holds.
                return Err(self.buffer_broken("read buffer out of step"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end = self.end.saturating_sub(self.start);
            self.start = 0;
        }
        if self.end >= self.buf.len() {
            // Cannot happen: every bounded line fits in the buffer.
            return Err(self.buffer_broken("read buffer full"));
        }
        let limit = self.read_limit();
        let (waited, bytes) = (self.reply_waited, self.reply_bytes);
        let (stream, server, timeout) = (&mut self.stream, self.server.as_str(), self.timeout);
        let space = self.buf.get_mut(self.end..).unwrap_or_default();
        let read = async {
            match stream.read(space).await {
                Ok(0) => Err(Pop3Error::new(server, Pop3ErrorKind::Closed { what })),
                Ok(n) => Ok(n),
                Err(source) => Err(Pop3Error::new(server, Pop3ErrorKind::Io { what, source })),
            }
        };
        let elapsed = || {
            if limit < timeout {
                Pop3Error::new(
                    server,
                    Pop3ErrorKind::TooSlow {
                        what,
                        bytes,
                        waited: waited.saturating_add(limit),
                        min_rate: MIN_RATE,
                    },
                )
            } else {
                Pop3Error::new(server, Pop3ErrorKind::Timeout { what, timeout })
            }
        };
        let started = tokio::time::Instant::now();
        let result = deadline::within(limit, read, elapsed).await;
        self.reply_waited = self.reply_waited.saturating_add(started.elapsed());
        match result {
            Ok(n) => {
                self.end = self.end.saturating_add(n).min(self.buf.len());
                self.reply_bytes = self.reply_bytes.saturating_add(n as u64);
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The read buffer's bookkeeping went wrong (a bug, not the server's
    /// doing); the connection cannot be trusted any more.
    fn buffer_broken(&mut self, what: &str) -> Pop3Error {
        self.poisoned = true;
        self.error(Pop3ErrorKind::Protocol { what: what.into() })
    }

    /// Reads one line of at most `max` bytes (line end excluded, removed).
    async fn read_line(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, Pop3Error> {
        loop {
            let pending = self.buf.get(self.start..self.end).unwrap_or_default();
            match proto::find_line(pending, max) {
                Ok(Some(n)) => {
                    let line = pending
                        .get(..n)
                        .map(proto::strip_line_end)
                        .unwrap_or_default()
                        .to_vec();
                    self.start = self.start.saturating_add(n);
                    return Ok(line);
                }
                Ok(None) => self.fill(what).await?,
                Err(e) => return Err(self.protocol(e)),
            }
        }
    }

    /// Reads and parses one status line; `command` names what it answers.
    pub async fn read_status(&mut self, command: &'static str) -> Result<Status, Pop3Error> {
        self.check()?;
        let what = match command {
            "greeting" => "waiting for the greeting",
            _ => "waiting for a reply",
        };
        // A new reply: its allowance starts now.
        self.reply_waited = Duration::ZERO;
        self.reply_bytes = 0;
        let line = self.read_line(proto::MAX_STATUS_LINE, what).await?;
        tracing::trace!(server = %self.server, "S: {}", line.escape_ascii());
        proto::parse_status(&line).map_err(|e| self.protocol(e))
    }

    /// Reads one line of a multi-line listing (LIST, UIDL, CAPA), unstuffed;
    /// `None` after the terminating "." line.
    pub async fn read_listing_line(&mut self) -> Result<Option<Vec<u8>>, Pop3Error> {
        self.check()?;
        let line = self
            .read_line(proto::MAX_LISTING_LINE, "reading a listing")
            .await?;
        tracing::trace!(server = %self.server, "S: {}", line.escape_ascii());
        Ok(proto::listing_line(&line).map(<[u8]>::to_vec))
    }

    /// The next chunk of decoded multi-line data, `None` after the end.
    /// Each chunk is at most the size of the read buffer.
    pub async fn next_data(&mut self, dec: &mut DotDecoder) -> Result<Option<&[u8]>, Pop3Error> {
        self.check()?;
        self.out.clear();
        loop {
            if dec.is_done() {
                return Ok(None);
            }
            if self.start < self.end {
                let input = self.buf.get(self.start..self.end).unwrap_or_default();
                let n = dec.decode(input, &mut self.out);
                self.start = self.start.saturating_add(n);
                if !self.out.is_empty() {
                    break;
                }
                continue;
            }
            self.fill("reading a message").await?;
        }
        tracing::trace!(server = %self.server, "S: <{} bytes of data>", self.out.len());
        Ok(Some(&self.out))
    }

    /// Closes the stream politely; errors are irrelevant at this point.
    pub async fn shutdown(&mut self) {
        let _ = deadline::within_or_none(self.timeout, self.stream.shutdown()).await;
    }
}
