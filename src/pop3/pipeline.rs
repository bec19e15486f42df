//! RFC 2449 PIPELINING: several commands written before their replies are
//! read, so that a mailbox is not fetched at one round trip per message.
//!
//! Why: over a real network a POP3 conversation is bound by round trips, not
//! by bandwidth (at 40 ms RTT one RETR at a time cannot pass 25 messages a
//! second however small they are). When the server announces PIPELINING we
//! send LIST and UIDL together, keep a bounded window of RETRs in flight and
//! send DELEs in a bounded sliding window; without the capability the very
//! same calls send one command and read its reply before the next, which is
//! what RFC 1939 servers expect.
//!
//! The bookkeeping (how many are in flight, which command a reply answers)
//! is the crate's one [`Window`]; this file only writes the commands and
//! reads the replies. Rules kept here:
//! - Replies are read strictly in the order the commands were sent; the
//!   dot-decoder stops exactly after a reply's terminating line, so bytes of
//!   the next reply already in the read buffer stay there for it.
//! - The window is bounded ([`MAX_WINDOW`]), and so are the bytes written
//!   ahead (a window of short TRANSACTION commands, never a secret): the
//!   server never has to buffer much, and neither side can deadlock on full
//!   socket buffers.
//! - A [`RetrStream`] dropped with replies still in flight, like a [`Body`]
//!   dropped before its end, poisons the session: nobody could tell where the
//!   next reply starts. [`RetrStream::drain`] reads them off instead, for a
//!   caller that stops early but wants to go on (DELE, QUIT).

use tokio::io::{AsyncRead, AsyncWrite};

use super::body::Body;
use super::client::{
    Session, UidlReply, err_reply, read_list_reply, read_uidl_entries, read_uidl_reply,
    unexpected_continue,
};
use super::connection::Connection;
use super::error::{Pop3Error, Pop3ErrorKind};
use super::proto::{Command, DotDecoder, Status, StatusKind};
use crate::net::MaybeTls;
use crate::window::{MAX_WINDOW, Window, WindowError};

/// The outcome of one command in a pipelined batch: `Err` is that command's
/// own `-ERR` (the session stays usable).
pub type Each<T> = Result<T, Pop3Error>;

/// The window refused what we asked of it: our bookkeeping is wrong (never
/// the server's doing), so nobody knows where the next reply starts.
fn out_of_step<S>(conn: &mut Connection<S>, e: WindowError) -> Pop3Error {
    conn.poison();
    conn.error(Pop3ErrorKind::Protocol {
        what: e.to_string(),
    })
}

/// Writes `cmds` in one write (a single command as itself).
async fn send_all<S>(conn: &mut Connection<S>, cmds: &[Command<'_>]) -> Result<(), Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match cmds {
        [one] => conn.send(one).await,
        many => conn.send_batch(many).await,
    }
}

/// Reads the status line that answers the oldest command in `window` and
/// takes that command off it (its answer is the unit: the caller reads what
/// follows the status line). Returns the command's key and the status.
async fn next_status<S, K>(
    conn: &mut Connection<S>,
    window: &mut Window<K, (), ()>,
    command: &'static str,
) -> Result<(K, Status), Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let st = conn.read_status(command).await?;
    window
        .complete_oldest(())
        .map_err(|e| out_of_step(conn, e))?;
    let (key, (), ()) = window
        .pop()
        .ok_or_else(|| out_of_step(conn, WindowError::NothingInFlight))?;
    Ok((key, st))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// True when commands are pipelined: the server announced PIPELINING
    /// (in its CAPA after STLS, if any) and [`Session::set_pipelining`] did not
    /// turn it off.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// Turns pipelining off (`false`) or back on (`true`, which only takes
    /// effect when the server announced PIPELINING).
    pub fn set_pipelining(&mut self, on: bool) {
        self.pipelining = on && self.capabilities().pipelining();
    }

    /// LIST and UIDL; written together when pipelining. The UIDL part is
    /// `None` when the server does not support UIDL, as with [`Session::uidl`].
    /// Both replies are always read, so a `-ERR` to one leaves the session in
    /// step.
    #[allow(clippy::type_complexity)]
    pub async fn list_and_uidl(
        &mut self,
    ) -> Result<(Vec<(u32, u64)>, Option<Vec<(u32, String)>>), Pop3Error> {
        if !self.pipelining {
            let list = self.list().await?;
            let uidl = self.uidl().await?;
            return Ok((list, uidl));
        }
        self.conn
            .send_batch(&[Command::List, Command::Uidl])
            .await?;
        let list = read_list_reply(&mut self.conn).await;
        // Read even after a -ERR to LIST; after a failure that poisoned the
        // session this returns at once and the LIST error is reported.
        let uidl = read_uidl_reply(&mut self.conn).await;
        Ok((list?, uidl?))
    }

    /// LIST and UIDL as [`Session::list_and_uidl`], with the UIDL reply
    /// as [`Session::uidl_entries`] gives it: a refusal and bad ids kept
    /// apart for the caller to judge.
    pub async fn list_and_uidl_entries(
        &mut self,
    ) -> Result<(Vec<(u32, u64)>, UidlReply), Pop3Error> {
        if !self.pipelining {
            let list = self.list().await?;
            let uidl = self.uidl_entries().await?;
            return Ok((list, uidl));
        }
        self.conn
            .send_batch(&[Command::List, Command::Uidl])
            .await?;
        let list = read_list_reply(&mut self.conn).await;
        let uidl = read_uidl_entries(&mut self.conn).await;
        Ok((list?, uidl?))
    }

    /// RETR of `numbers`, in that order, with up to `window` RETRs in flight
    /// (clamped to `1..=`[`MAX_WINDOW`]; 1 when the session does not
    /// pipeline). Drive it with [`RetrStream::next_message`].
    pub fn retr_pipelined(&mut self, numbers: &[u32], window: usize) -> RetrStream<'_, S> {
        let window = if self.pipelining { window } else { 1 };
        RetrStream {
            conn: &mut self.conn,
            numbers: numbers.to_vec(),
            next: 0,
            window: Window::new(window),
        }
    }

    /// DELE of every number in `numbers`, pipelined in a bounded sliding
    /// window when the server allows (else one at a time). Returns one
    /// outcome per number, in order: `Ok(())` for `+OK`, the `-ERR` as an
    /// error otherwise. The outer error means the session failed (timeout,
    /// dropped connection, malformed reply) and is poisoned: no DELE of this
    /// session may be counted on, and without QUIT none is committed.
    pub async fn dele_many(&mut self, numbers: &[u32]) -> Result<Vec<Each<()>>, Pop3Error> {
        let conn = &mut self.conn;
        let mut window: Window<u32, (), ()> =
            Window::new(if self.pipelining { MAX_WINDOW } else { 1 });
        let mut results = Vec::with_capacity(numbers.len());
        let mut next = 0usize;
        while results.len() < numbers.len() {
            let room = window.limit().saturating_sub(window.len());
            // Refill in batches of at least half a window (or when empty), so
            // that a long list costs few writes and few round trips.
            if next < numbers.len()
                && (window.is_empty() || room.saturating_mul(2) >= window.limit())
            {
                let end = next.saturating_add(room).min(numbers.len());
                let batch = numbers.get(next..end).unwrap_or_default();
                let cmds: Vec<Command<'_>> = batch.iter().map(|&n| Command::Dele(n)).collect();
                send_all(conn, &cmds).await?;
                for &n in batch {
                    window.push(n, (), 0).map_err(|e| out_of_step(conn, e))?;
                }
                next = end;
            }
            let (_, st) = next_status(conn, &mut window, "DELE").await?;
            results.push(match st.kind {
                StatusKind::Ok => Ok(()),
                StatusKind::Err => Err(err_reply(conn, "DELE", st, false)),
                StatusKind::Continue => return Err(unexpected_continue(conn, "DELE")),
            });
        }
        Ok(results)
    }
}

/// RETRs in flight on one session; yields each message in the order asked.
///
/// Each [`RetrStream::next_message`] tops the window up, then reads the
/// status line of the oldest RETR; its body must be read to its end (or the
/// session is poisoned) before the next message is asked for.
pub struct RetrStream<'a, S = MaybeTls> {
    conn: &'a mut Connection<S>,
    numbers: Vec<u32>,
    /// Index in `numbers` of the next RETR to write.
    next: usize,
    /// The RETRs written whose status line has not been read yet, keyed by
    /// message number.
    window: Window<u32, (), ()>,
}

impl<S> RetrStream<'_, S> {
    /// How many RETRs may be in flight at once.
    pub fn window(&self) -> usize {
        self.window.limit()
    }

    /// RETRs written whose status line has not been read yet.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.window.in_flight()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> RetrStream<'_, S> {
    /// Writes RETRs until the window is full (one write).
    async fn top_up(&mut self) -> Result<(), Pop3Error> {
        let room = self.window.limit().saturating_sub(self.window.len());
        let end = self.next.saturating_add(room).min(self.numbers.len());
        if end <= self.next {
            return Ok(());
        }
        let batch = self.numbers.get(self.next..end).unwrap_or_default();
        let cmds: Vec<Command<'_>> = batch.iter().map(|&n| Command::Retr(n)).collect();
        send_all(self.conn, &cmds).await?;
        for &n in batch {
            let conn = &mut *self.conn;
            self.window
                .push(n, (), 0)
                .map_err(|e| out_of_step(conn, e))?;
        }
        self.next = end;
        Ok(())
    }

    /// The next message: `None` once every number was answered. The inner
    /// result is `Err` when the server answered that RETR with `-ERR` (the
    /// stream and the session go on); the outer one when the session failed
    /// (it is then poisoned). The previous body must have been read to its
    /// end.
    pub async fn next_message(&mut self) -> Result<Option<(u32, Each<Body<'_, S>>)>, Pop3Error> {
        self.conn.check()?;
        if self.window.is_empty() && self.next >= self.numbers.len() {
            return Ok(None);
        }
        self.top_up().await?;
        let (number, st) = next_status(self.conn, &mut self.window, "RETR").await?;
        match st.kind {
            StatusKind::Ok => Ok(Some((number, Ok(Body::new(&mut *self.conn))))),
            StatusKind::Err => Ok(Some((number, Err(err_reply(self.conn, "RETR", st, false))))),
            StatusKind::Continue => Err(unexpected_continue(self.conn, "RETR")),
        }
    }

    /// Stops early: reads and discards the replies of the RETRs already in
    /// flight (at most a window of messages, chunk by chunk, nothing kept)
    /// and asks for no more, so that the session can go on (DELE, QUIT).
    pub async fn drain(&mut self) -> Result<(), Pop3Error> {
        self.conn.check()?;
        self.numbers.truncate(self.next);
        while self.window.in_flight() > 0 {
            let (_, st) = next_status(self.conn, &mut self.window, "RETR").await?;
            match st.kind {
                StatusKind::Ok => {
                    let mut dec = DotDecoder::new();
                    while self.conn.next_data(&mut dec).await?.is_some() {}
                }
                StatusKind::Err => {}
                StatusKind::Continue => return Err(unexpected_continue(self.conn, "RETR")),
            }
        }
        Ok(())
    }
}

impl<S> Drop for RetrStream<'_, S> {
    fn drop(&mut self) {
        if self.window.in_flight() > 0 {
            self.conn.poison();
        }
    }
}
